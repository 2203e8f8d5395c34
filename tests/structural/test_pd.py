"""PD models (bayespk.structural.pd): direct effects, effect compartment, indirect response I-IV.

The ODE models are driven by the multiple-dose one-compartment oral concentration
(100 mg q12h x 4, CL 2.5 L/h, V 30 L, KA 1/h), computed for the integrator by the
library (``closed_form_drivers`` + ``one_compartment``) and for the reference by
its formula written out here; the reference is ``scipy.integrate.solve_ivp``
(DOP853, rtol 1e-12, atol 1e-14), restarted at every dose.
"""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from scipy.integrate import solve_ivp

from bayespk.structural.compartments import one_compartment
from bayespk.structural.ode import PK_ODES, OdeGrid, closed_form_drivers, integrate
from bayespk.structural.pd import PD_MODELS, coupled, emax, hill_fraction, imax, linear, sigmoid_emax

DOSES = np.array([0.0, 12.0, 24.0, 36.0])
AMT, CL, V, KA = 100.0, 2.5, 30.0, 1.0
OBS = np.array([0.5, 1.0, 2.0, 4.0, 8.0, 12.0, 13.0, 24.0, 30.0, 36.5, 47.9])
ODE_PARAMS = {
    "idr1": {"R0": 10.0, "KOUT": 0.3, "IMAX": 0.8, "IC50": 1.0},
    "idr2": {"R0": 10.0, "KOUT": 0.3, "IMAX": 0.8, "IC50": 1.0},
    "idr3": {"R0": 10.0, "KOUT": 0.3, "EMAX": 2.0, "EC50": 1.5},
    "idr4": {"R0": 10.0, "KOUT": 0.3, "EMAX": 2.0, "EC50": 1.5},
    "effect_emax": {"KE0": 0.7, "E0": 5.0, "EMAX": 10.0, "EC50": 1.5, "GAMMA": 2.0},
}


def conc(t):
    """C(t) = sum over doses given at or before t of AMT KA / (V (KA - k)) (exp(-k dt) - exp(-KA dt))."""
    dt = np.asarray(t, float)[..., None] - DOSES
    k = CL / V
    c = AMT * KA / (V * (KA - k)) * (np.exp(-k * dt) - np.exp(-KA * dt))
    return np.where(dt >= 0, c, 0.0).sum(-1)


def reference(name: str) -> np.ndarray:
    """Observed output at OBS by solve_ivp (scalar right-hand side written from the equations)."""
    p = ODE_PARAMS[name]
    kin = p.get("R0", 0.0) * p.get("KOUT", 0.0)

    def f(t, y):
        c = conc(t)
        if name == "effect_emax":
            return [p["KE0"] * (c - y[0])]
        inh = 1 - p["IMAX"] * c / (p["IC50"] + c) if name in ("idr1", "idr2") else 0.0
        stim = 1 + p["EMAX"] * c / (p["EC50"] + c) if name in ("idr3", "idr4") else 0.0
        return [
            {
                "idr1": kin * inh - p["KOUT"] * y[0],
                "idr2": kin - p["KOUT"] * inh * y[0],
                "idr3": kin * stim - p["KOUT"] * y[0],
                "idr4": kin - p["KOUT"] * stim * y[0],
            }[name]
        ]

    y = [0.0] if name == "effect_emax" else [p["R0"]]
    out = []
    for a, b in zip(DOSES, np.r_[DOSES[1:], 48.0]):  # restart at every dose: smooth in between
        t_eval = np.r_[OBS[(OBS > a) & (OBS < b)], b]
        sol = solve_ivp(f, (a, b), y, method="DOP853", t_eval=t_eval, rtol=1e-12, atol=1e-14)
        assert sol.success, sol.message
        out.extend(sol.y[0, np.isin(t_eval, OBS)])
        y = sol.y[:, -1]
    e = np.array(out)
    if name == "effect_emax":
        return sigmoid_emax(e, p["E0"], p["EMAX"], p["EC50"], p["GAMMA"])
    return e


def simulate(name: str, max_step: float) -> np.ndarray:
    """The library path: grid, drivers from the closed form, integrate, output at OBS."""
    m = PD_MODELS[name]
    g = OdeGrid.build([np.concatenate([OBS, DOSES])], max_step)
    one = np.ones((1, len(DOSES)))
    c = closed_form_drivers(
        g,
        DOSES[None],
        AMT * one,
        0 * one,
        one > 0,
        one > 0,
        one_compartment,
        (np.array([CL]), np.array([V]), np.array([KA])),
    )
    p = {k: np.array([v]) for k, v in ODE_PARAMS[name].items()}
    y = integrate(m.rhs, m.initial(p), g.h, c, p)
    i = g.index(0, OBS)
    return m.output(y[0, i], conc(OBS), {k: v[0] for k, v in p.items()})


def simulate_coupled(name: str, pd_params: dict, max_step: float) -> np.ndarray:
    """PK integrated as well: one ODE, doses as jumps into the depot, no drivers."""
    m = coupled(PD_MODELS[name], PK_ODES["1cmt_oral"])
    g = OdeGrid.build([np.concatenate([OBS, DOSES])], max_step)
    jumps = np.zeros((1, g.n_steps + 1, m.n_states))
    jumps[..., 0] = g.scatter(0, DOSES, AMT)
    p = {k: np.array([v]) for k, v in {**pd_params, "CL": CL, "V": V, "KA": KA}.items()}
    y = integrate(m.rhs, m.initial(p), g.h, params=p, jumps=jumps)
    return m.output(y[0, g.index(0, OBS)], None, {k: v[0] for k, v in p.items()})


@pytest.fixture(scope="module")
def references():
    return {name: reference(name) for name in ODE_PARAMS}


def test_reference_concentration_matches_library_closed_form():
    g = OdeGrid.build([np.concatenate([OBS, DOSES])], 0.5)
    one = np.ones((1, len(DOSES)))
    c = closed_form_drivers(
        g,
        DOSES[None],
        AMT * one,
        0 * one,
        one > 0,
        one > 0,
        one_compartment,
        (np.array([CL]), np.array([V]), np.array([KA])),
    )
    np.testing.assert_allclose(c, conc(g.driver_times), rtol=1e-12, atol=1e-15)


def test_closed_form_drivers_take_left_limit_at_step_end():
    """A bolus at a node counts at the start of the next step, not at the end of the previous one."""
    g = OdeGrid.build([np.array([2.0, 4.0])], max_step=1.0)
    c = closed_form_drivers(
        g,
        np.array([[0.0, 2.0]]),
        np.array([[10.0, 10.0]]),
        np.zeros((1, 2)),
        np.zeros((1, 2), bool),
        np.ones((1, 2), bool),
        one_compartment,
        (np.array([1.0]), np.array([1.0])),
    )
    k = 1.0
    np.testing.assert_allclose(
        c[0, 1], 10 * np.exp(-k * np.array([1.0, 1.5, 2.0]))
    )  # step 1 -> 2: left limit
    np.testing.assert_allclose(c[0, 2, 0], 10 * np.exp(-2 * k) + 10)  # step 2 -> 3 starts after the bolus


@pytest.mark.parametrize("name", list(ODE_PARAMS))
def test_ode_models_match_solve_ivp(name, references):
    """max_step 0.125 h (387 steps over 48 h) keeps every model within 1e-5 relative (measured <= 4.4e-6)."""
    got = simulate(name, 0.125)
    np.testing.assert_allclose(got, references[name], rtol=1e-5)


@pytest.mark.parametrize("name", list(ODE_PARAMS))
def test_coupled_pk_pd_ode_matches_solve_ivp(name, references):
    """PK in the ODE as well: same accuracy at the same max_step."""
    m = coupled(PD_MODELS[name], PK_ODES["1cmt_oral"])
    assert m.parameters == ("CL", "V", "KA", *PD_MODELS[name].parameters) and m.n_states == 3
    np.testing.assert_allclose(simulate_coupled(name, ODE_PARAMS[name], 0.125), references[name], rtol=1e-5)


def test_coupled_direct_model_is_the_direct_function_of_the_integrated_concentration():
    m = coupled(PD_MODELS["emax"], PK_ODES["1cmt_oral"])
    assert m.needs_ode and m.n_states == 2 and m.upper == {}
    got = simulate_coupled("emax", {"E0": 2.0, "EMAX": 5.0, "EC50": 1.5}, 0.125)
    np.testing.assert_allclose(got, emax(conc(OBS), 2.0, 5.0, 1.5), rtol=1e-6)


@pytest.mark.parametrize("name", ["idr1", "effect_emax"])
def test_fourth_order_convergence_against_solve_ivp(name, references):
    errors = [np.max(np.abs(simulate(name, h) / references[name] - 1)) for h in (0.0625, 0.03125)]
    assert 14.0 < errors[0] / errors[1] < 18.0, errors  # measured 15.6 (idr1), 16.5 (effect_emax)


@pytest.mark.parametrize("name", list(ODE_PARAMS))
def test_baseline_is_steady_without_drug(name):
    """No drug: R stays at R0 (KIN = R0 KOUT), Ce at 0."""
    m = PD_MODELS[name]
    p = {k: np.array([v, 2 * v]) for k, v in ODE_PARAMS[name].items()}
    y0 = m.initial(p)
    assert y0.shape == (2, 1)
    np.testing.assert_allclose(m.rhs(tuple(y0.T), np.zeros(2), p), 0.0, atol=1e-14)


def test_registry():
    assert set(PD_MODELS) == {
        "linear",
        "emax",
        "sigmoid_emax",
        "imax",
        "effect_emax",
        "idr1",
        "idr2",
        "idr3",
        "idr4",
    }
    for name, m in PD_MODELS.items():
        assert m.name == name and m.needs_ode == (name in ODE_PARAMS)
        assert (m.rhs is None) == (m.initial is None) == (not m.needs_ode)
        assert set(m.upper) <= set(m.parameters)
    assert PD_MODELS["idr2"].parameters == ("R0", "KOUT", "IMAX", "IC50") and PD_MODELS["idr2"].upper == {
        "IMAX": 1
    }
    assert PD_MODELS["idr3"].parameters == ("R0", "KOUT", "EMAX", "EC50")


# ------------------------------------------------------------------------------------ direct effects


def test_direct_effects_hand_computed():
    c = np.array([0.0, 1.0, 2.0, 4.0])
    np.testing.assert_allclose(linear(c, 3.0, 0.5), [3.0, 3.5, 4.0, 5.0])
    np.testing.assert_allclose(emax(c, 1.0, 10.0, 2.0), [1.0, 1 + 10 / 3, 6.0, 1 + 40 / 6])
    np.testing.assert_allclose(sigmoid_emax(c, 1.0, 10.0, 2.0, 3.0), [1.0, 1 + 10 / 9, 6.0, 1 + 640 / 72])
    np.testing.assert_allclose(
        imax(c, 8.0, 0.5, 2.0, 2.0), [8.0, 8 * (1 - 0.5 / 5), 6.0, 8 * (1 - 0.5 * 16 / 20)]
    )
    np.testing.assert_allclose(sigmoid_emax(c, 1.0, 10.0, 2.0, 1.0), emax(c, 1.0, 10.0, 2.0), rtol=1e-15)
    assert hill_fraction(1e3, 1.0, 200.0) == 1.0 and hill_fraction(1e-3, 1.0, 200.0) == 0.0  # no overflow
    registry = {
        k: PD_MODELS[k].output(None, c, p)
        for k, p in [
            ("linear", {"E0": 3.0, "SLOPE": 0.5}),
            ("imax", {"E0": 8.0, "IMAX": 0.5, "IC50": 2.0, "GAMMA": 2.0}),
        ]
    }
    np.testing.assert_allclose(registry["linear"], linear(c, 3.0, 0.5))
    np.testing.assert_allclose(registry["imax"], imax(c, 8.0, 0.5, 2.0, 2.0))


@pytest.mark.parametrize("gamma", [0.5, 1.0, 2.5])
def test_direct_effects_at_zero_concentration_have_finite_gradients(gamma):
    c, ec50, g = pt.dvector("c"), pt.dscalar("ec50"), pt.dscalar("gamma")
    e = (
        sigmoid_emax(c, 1.0, 10.0, ec50, g).sum()
        + imax(c, 5.0, 0.7, ec50, g).sum()
        + emax(c, 1.0, 10.0, ec50).sum()
    )
    f = pytensor.function([c, ec50, g], [e, *pytensor.grad(e, [c, ec50, g])])
    value, dc, dec50, dg = f(np.array([0.0, 0.0, 1.0]), 2.0, gamma)
    assert all(np.all(np.isfinite(x)) for x in (value, dc, dec50, dg))
    hill = 1 / (1 + 2**gamma)  # at C = 1, EC50 = 2
    assert value == pytest.approx((3 + 10 * hill) + (15 - 5 * 0.7 * hill) + (3 + 10 / 3), rel=1e-14)
    # d/dEC50 and d/dGAMMA at C = 0 are exactly 0 (E = E0 there whatever EC50, GAMMA)
    f0 = pytensor.function([c, ec50, g], pytensor.grad(e, [ec50, g]))
    np.testing.assert_array_equal(f0(np.zeros(2), 2.0, gamma), [0.0, 0.0])
    # at C = 1: compare the gradient with finite differences
    h = 1e-6
    val = pytensor.function([c, ec50, g], e)
    fd = [
        (val(np.ones(1), 2.0 + h, gamma) - val(np.ones(1), 2.0 - h, gamma)) / (2 * h),
        (val(np.ones(1), 2.0, gamma + h) - val(np.ones(1), 2.0, gamma - h)) / (2 * h),
    ]
    np.testing.assert_allclose(f0(np.ones(1), 2.0, gamma), fd, rtol=1e-6)


# ------------------------------------------------------------------------- through PyMC-like graphs


def test_idr_gradient_through_pk_drivers_and_pd_parameters():
    """log CL (via the concentration drivers) and log IC50, KOUT (via the ODE): scan gradient vs FD, C and numba."""
    m = PD_MODELS["idr1"]
    times = [np.concatenate([OBS, DOSES]), np.concatenate([OBS[::2] + 0.25, DOSES])]
    g = OdeGrid.build(times, max_step=0.5)
    d = np.tile(DOSES, (2, 1))
    one = np.ones_like(d)
    subj = np.repeat([0, 1], [len(OBS), len(OBS[::2])])
    idx = g.index(subj, np.concatenate([OBS, OBS[::2] + 0.25]))

    def output(theta, xp):
        cl, ic50, kout = (xp.exp(theta[i]) * np.array([1.0, 1.3]) for i in range(3))
        c = closed_form_drivers(
            g, d, AMT * one, 0 * one, one > 0, one > 0, one_compartment, (cl, np.full(2, V), np.full(2, KA))
        )
        p = {"R0": np.array([10.0, 12.0]), "KOUT": kout, "IMAX": np.array([0.8, 0.6]), "IC50": ic50}
        y = integrate(m.rhs, m.initial(p), g.h, c, p)
        return (y[subj, idx, 0] ** 2).sum()

    theta0 = np.log([CL, 1.0, 0.3])
    x = pt.dvector("theta")
    out = output(x, pt)
    eps = 1e-6
    fd = [(output(theta0 + eps * e, np) - output(theta0 - eps * e, np)) / (2 * eps) for e in np.eye(3)]
    for mode in (None, "NUMBA"):
        value, grad = pytensor.function([x], [out, pytensor.grad(out, x)], mode=mode)(theta0)
        assert value == pytest.approx(output(theta0, np), rel=1e-12)
        np.testing.assert_allclose(grad, fd, rtol=1e-6)
