"""Mechanistic CAR-T kinetics ODE (bayespk.structural.cart_ode): accuracy, behaviour, pytensor, typical curve.

The reference solution is scipy's LSODA (rtol 1e-10) of the same equations
written independently here in the natural states (N, E, M, B), not in the
log states the module integrates: it checks the transformation as well as RK4.
"""

from __future__ import annotations

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from scipy.integrate import solve_ivp

from bayespk.structural.cart_ode import (
    CELL_KINETICS_ODE,
    CONSTANTS,
    COVARIATE_DEFAULTS,
    TYPICAL_KIMMEL,
    ck_ode_level,
    ck_ode_nodes,
    kimmel_rhs,
)
from bayespk.structural.ode import OdeGrid, integrate

MODEL = CELL_KINETICS_ODE["cart_kimmel"]
DAYS = np.array([0.04, 1, 4, 7, 10, 14, 21, 28, 60, 90, 180, 365, 730.0])

# three subjects: typical; fast (deep lymphodepletion, large tumor, up to ~3/day
# expansion); slow (weak lymphodepletion, small tumor, late peak)
SETS = {
    "C0": [5.0, 20.0, 2.0],
    "RHO": [0.5, 0.7, 0.35],
    "KC": [5e4, 2e4, 2e5],
    "ALPHA": [0.15, 0.25, 0.1],
    "FM": [0.01, 0.03, 0.005],
    "BETA": [0.003, 0.01, 0.001],
    "KILL": [1.5e-4, 5e-5, 4e-4],
    "B50": [0.05, 0.2, 0.01],
}
RAW = {k: np.array(v) for k, v in SETS.items()}  # the Gompertz coefficient RHO, as in the equations
# the model's parameters: the net expansion rate GX of a reference patient (B0 = 1, N0 = 0.05) instead of RHO
PARAMS = {k: v for k, v in RAW.items() if k != "RHO"} | {
    "GX": RAW["RHO"] * np.log(1 / 0.05) / (1 + RAW["B50"]) - RAW["ALPHA"]}
COVARIATES = {"N0": np.array([0.05, 0.01, 0.2]), "B0": np.array([1.0, 5.0, 0.2])}


def reference_levels(params, covariates, times):
    """E + M at ``times`` by LSODA on the untransformed equations, all subjects in one system."""
    p = {k: np.asarray(v, float) for k, v in params.items()}
    s = len(p["C0"])

    def f(t, z):
        n, e, m, b = z.reshape(4, s)
        phi = n + (e + m) / p["KC"]
        growth = np.log(1.0 / phi)
        stim = b / (b + p["B50"])
        return np.concatenate(
            [
                CONSTANTS["RN"] * n * growth,
                p["RHO"] * stim * growth * e - p["ALPHA"] * e,
                p["FM"] * p["ALPHA"] * e - p["BETA"] * m,
                CONSTANTS["RB"] * b - p["KILL"] * e * b,
            ]
        )

    z0 = np.concatenate([covariates["N0"], p["C0"], np.zeros(s), covariates["B0"]])
    sol = solve_ivp(f, (0.0, times[-1]), z0, method="LSODA", rtol=1e-10, atol=1e-20, t_eval=times)
    assert sol.success
    _, e, m, _ = sol.y.reshape(4, s, -1)
    return e + m


@pytest.fixture(scope="module")
def reference():
    return reference_levels(RAW, COVARIATES, DAYS)


def rel_err(a, b):
    return np.max(np.abs(a / b - 1.0), axis=1)


# ---------------------------------------------------------------------------------------- accuracy


def test_rk4_matches_lsoda_uniform_grid(reference):
    """A uniform max_step of 0.125 day reaches 1e-6 for all three sets; 0.5 day does not (~2e-4)."""
    y0 = MODEL.initial(PARAMS, COVARIATES)
    for max_step, tol in ((0.125, 1e-6), (0.5, None)):
        grid = OdeGrid.build([DAYS] * 3, max_step=max_step)
        ys = integrate(MODEL.rhs, y0, grid.h, params=PARAMS)
        level = MODEL.output(ys[:, grid.index(0, DAYS), :], PARAMS)
        err = rel_err(level, reference)
        if tol is None:
            assert err.max() > 1e-5  # the finer step is needed
        else:
            assert np.all(err < tol), err


def test_rk4_matches_lsoda_graded_grid(reference):
    """0.125-day steps to day 60, then up to 2 days: 1e-6 in ~800 steps instead of ~5800."""
    level = ck_ode_level(DAYS, PARAMS, COVARIATES)  # defaults: fine_step 0.125, fine_until 60, max_step 2
    assert np.all(rel_err(level, reference) < 1e-6), rel_err(level, reference)
    grid = OdeGrid.build([np.concatenate([DAYS, ck_ode_nodes(730.0)])], max_step=2.0)
    assert grid.n_steps < 900
    log_level = ck_ode_level(DAYS, PARAMS, COVARIATES, log=True)
    np.testing.assert_allclose(log_level, np.log(level), rtol=0, atol=1e-12)


def test_rhs_finite_at_extreme_states():
    """The Gompertz log stays finite when the occupied space underflows to 0."""
    p = {k: np.array([v]) for k, v in TYPICAL_KIMMEL.items()}
    for y in (
        (np.array([-800.0]), np.array([-800.0]), np.array([0.0]), np.array([-800.0])),
        (np.array([0.0]), np.array([30.0]), np.array([1e12]), np.array([50.0])),
    ):
        assert all(np.all(np.isfinite(d)) for d in kimmel_rhs(y, None, p))


# --------------------------------------------------------------------------------------- behaviour


def peak(params=TYPICAL_KIMMEL, covariates=None):
    t = np.concatenate([np.arange(0.0, 60.0, 0.05), [365.0, 730.0]])
    level = ck_ode_level(t, params, covariates)
    i = np.argmax(level, axis=1)
    return t[i], level[np.arange(level.shape[0]), i]


def test_deeper_lymphodepletion_gives_a_higher_peak():
    _, cmax = peak(covariates={"N0": np.array([0.01, 0.02, 0.05, 0.1, 0.2])})
    assert np.all(np.diff(cmax) < 0), cmax
    assert cmax[0] > 2 * cmax[-1]


def test_larger_tumor_gives_a_higher_peak():
    _, cmax = peak(covariates={"B0": np.array([0.1, 0.3, 1.0, 3.0, 10.0])})
    assert np.all(np.diff(cmax) > 0), cmax
    assert cmax[-1] > 2 * cmax[0]


def test_no_tumor_no_expansion():
    c0 = TYPICAL_KIMMEL["C0"]
    tmax, cmax = peak(covariates={"B0": np.array([1e-6, 1.0])})
    assert cmax[0] < 1.01 * c0 and tmax[0] < 0.1  # contraction only
    assert cmax[1] > 1000 * c0


def test_tail_is_memory_after_one_year():
    """At day 365 the effector share of the level is negligible, for all three parameter sets."""
    for params, cov in ((PARAMS, COVARIATES), (TYPICAL_KIMMEL, None)):
        p = {k: np.atleast_1d(v) for k, v in params.items()}
        grid = OdeGrid.build([np.concatenate([DAYS, ck_ode_nodes(730.0)])] * len(p["C0"]), max_step=2.0)
        ys = integrate(MODEL.rhs, MODEL.initial(p, cov), grid.h, params=p)
        y = ys[:, grid.index(0, 365.0), :]
        effector, memory = np.exp(y[:, 1]), y[:, 2]
        assert np.all(effector < 1e-6 * memory), effector / memory


def test_typical_curve_is_tisagenlecleucel_like():
    """Peak ~ day 9-14 at ~1e4 copies/ug from 5, contraction t1/2 4-5.5 d, terminal t1/2 >= 200 d."""
    t = np.concatenate([np.arange(0.0, 60.0, 0.05), [60.0, 90.0, 180.0, 365.0, 730.0]])
    level = ck_ode_level(t, TYPICAL_KIMMEL)[0]
    i = int(np.argmax(level))
    tmax, cmax = t[i], level[i]
    assert level[0] == pytest.approx(5.0)
    assert 9.0 <= tmax <= 14.0 and 5e3 <= cmax <= 2e4, (tmax, cmax)

    def half_life(a, b):
        ia, ib = np.searchsorted(t, a), np.searchsorted(t, b)
        return np.log(2.0) * (t[ib] - t[ia]) / np.log(level[ia] / level[ib])

    assert 4.0 <= half_life(tmax + 3.0, tmax + 14.0) <= 5.5
    assert half_life(365.0, 730.0) >= 200.0
    assert 10.0 <= level[t == 365.0][0] <= 200.0  # persistence at one year


# ---------------------------------------------------------------------------------------- pytensor


def test_pytensor_matches_numpy_and_gradient_is_finite():
    names = MODEL.parameters + ("B50",)  # a constant given as a parameter overrides it
    grid = OdeGrid.build([np.concatenate([DAYS, ck_ode_nodes(730.0)])] * 3, max_step=2.0)
    idx = grid.index(0, DAYS)
    theta = pt.matrix("theta")  # log parameters (n_parameters, n_subjects)
    p = {k: pt.exp(theta[i]) for i, k in enumerate(names)}
    ys = integrate(MODEL.rhs, MODEL.initial(p, COVARIATES), grid.h, params=p)
    log_level = MODEL.log_output(ys[:, idx, :], p)
    total = log_level.sum()
    fn = pytensor.function([theta], [log_level, total, pytensor.grad(total, theta)])

    th = np.log(np.stack([PARAMS[k] for k in names]))
    got, _, grad = fn(th)
    ys_np = integrate(MODEL.rhs, MODEL.initial(PARAMS, COVARIATES), grid.h, params=PARAMS)
    np.testing.assert_allclose(got, MODEL.log_output(ys_np[:, idx, :], PARAMS), rtol=0, atol=1e-10)
    assert grad.shape == th.shape and np.all(np.isfinite(grad)) and np.all(grad != 0.0)

    # directional derivative against central differences of the numpy solution
    direction = np.random.default_rng(0).standard_normal(th.shape)
    eps = 1e-5

    def total_np(t):
        q = {k: np.exp(t[i]) for i, k in enumerate(names)}
        y = integrate(MODEL.rhs, MODEL.initial(q, COVARIATES), grid.h, params=q)
        return MODEL.log_output(y[:, idx, :], q).sum()

    fd = (total_np(th + eps * direction) - total_np(th - eps * direction)) / (2 * eps)
    assert np.sum(grad * direction) == pytest.approx(fd, rel=1e-5)


# ---------------------------------------------------------------------------------------- registry


def test_descriptor():
    assert MODEL.name == "cart_kimmel" and MODEL.central_cmt == 1 and MODEL.depot_cmt is None
    assert 6 <= len(MODEL.parameters) <= 8 and all(k.isupper() for k in MODEL.parameters)
    assert set(MODEL.parameters) == set(TYPICAL_KIMMEL) and MODEL.unit_parameters == ("FM", "N0")
    assert MODEL.optional_parameters == ("N0", "RN", "RB", "B50")
    assert 0 < TYPICAL_KIMMEL["FM"] < 1 and all(v > 0 for v in TYPICAL_KIMMEL.values())
    assert MODEL.n_states == 4 and MODEL.needs_ode and set(MODEL.covariates) == set(COVARIATE_DEFAULTS)
    y0 = MODEL.initial({"C0": np.array([5.0, 7.0])}, {"N0": 0.1})  # scalars broadcast per subject
    np.testing.assert_allclose(
        y0, [[np.log(0.1), np.log(5.0), 0.0, 0.0], [np.log(0.1), np.log(7.0), 0.0, 0.0]]
    )
    np.testing.assert_allclose(MODEL.output(y0, None), [5.0, 7.0])
