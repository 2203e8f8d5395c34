"""The RK4 integrator (bayespk.structural.ode): grid, accuracy, order, vectorization, pytensor.

References are exact: linear PK in amounts is solved with the matrix exponential
(an input rate ``u`` by the augmented system ``d/dt [A; 1] = [[M, u], [0, 0]] [A; 1]``),
piecewise between events; nothing here uses closed-form PK from the library.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from scipy.linalg import expm

from bayespk.structural import STRUCTURES, Structure
from bayespk.structural.ode import PK_ODES, OdeGrid, integrate, linear_pk

# ------------------------------------------------------------------------------------------- grid


def test_grid_nodes_steps_padding_and_index():
    g = OdeGrid.build([np.array([2.0, 0.5, 2.0, 5.0]), np.array([1.0])], max_step=1.0)
    np.testing.assert_array_equal(g.nodes[0], [0.0, 0.5, 1.25, 2.0, 3.0, 4.0, 5.0])
    np.testing.assert_array_equal(g.nodes[1], [0.0, 1.0, 1.0, 1.0, 1.0, 1.0, 1.0])  # padded
    np.testing.assert_array_equal(g.n_real, [6, 1])
    assert g.h.shape == (2, 6) and g.h.max() <= 1.0 and np.all(g.h[1, 1:] == 0.0)
    dt = g.driver_times
    assert dt.shape == (2, 6, 3)
    np.testing.assert_array_equal(dt[0, 1], [0.5, 0.875, 1.25])
    np.testing.assert_array_equal(g.index(0, [5.0, 0.0, 2.0]), [6, 0, 3])
    np.testing.assert_array_equal(g.index(1, 1.0), 1)  # first node with that time, not a padding one
    np.testing.assert_array_equal(g.index(np.array([0, 1, 0]), np.array([0.5, 1.0, 1.25])), [1, 1, 2])


def test_grid_exact_multiples_and_t0():
    g = OdeGrid.build([np.array([12.0])], max_step=0.5, t0=-1.0)
    assert g.n_steps == 26 and g.nodes[0, 0] == -1.0 and g.nodes[0, 2] == 0.0  # 0.0 = t0 + 2 * 0.5
    assert OdeGrid.build([np.array([3.0])], max_step=np.inf).n_steps == 1


def test_grid_scatter_and_step_rates():
    g = OdeGrid.build([np.array([0.0, 1.0, 2.0, 4.0]), np.array([3.0])], max_step=1.0)
    jumps = g.scatter([0, 0, 1], [1.0, 1.0, 3.0], [5.0, 2.0, 4.0])
    assert jumps.shape == (2, 5) and jumps[0, 1] == 7.0 and jumps[1, 3] == 4.0 and jumps.sum() == 11.0
    rates = g.step_rates([0, 0], [1.0, 0.0], [4.0, 2.0], [3.0, 1.0])  # two overlapping inputs
    np.testing.assert_array_equal(rates[0], [1.0, 4.0, 3.0, 3.0])
    assert not rates[1].any()


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"required_times": [np.array([1.0])], "max_step": -0.1}, "max_step must be > 0"),
        ({"required_times": [np.array([1.0])], "max_step": 0.0}, "max_step must be > 0"),
        ({"required_times": [np.array([1.0])], "max_step": np.nan}, "max_step must be > 0"),
        ({"required_times": [np.array([1.0, np.nan])], "max_step": 1.0}, "must be finite"),
        (
            {"required_times": [np.array([1.0]), np.array([-2.0])], "max_step": 1.0},
            "subject 1: required times before t0",
        ),
        ({"required_times": [], "max_step": 1.0}, "empty"),
    ],
)
def test_grid_refuses_bad_input(kwargs, message):
    with pytest.raises(ValueError, match=message):
        OdeGrid.build(**kwargs)


def test_index_refuses_times_not_on_grid():
    g = OdeGrid.build([np.array([1.0, 2.0])], max_step=0.3)
    with pytest.raises(ValueError, match=r"subject 0: times \[1.6\].*not nodes of the ODE grid"):
        g.index(0, [1.0, 1.6])
    with pytest.raises(ValueError, match="not nodes"):
        g.index(0, 99.0)
    with pytest.raises(ValueError, match="subject indices"):
        g.index(3, 1.0)


def test_integrate_refuses_mismatched_shapes():
    g = OdeGrid.build([np.array([1.0]), np.array([2.0])], max_step=0.5)
    rhs = PK_ODES["1cmt_iv"].rhs
    p = {"CL": np.ones(2), "V": np.ones(2)}
    with pytest.raises(ValueError, match=r"y0 has shape \(3, 1\); expected \(2, n_states\)"):
        integrate(rhs, np.zeros((3, 1)), g.h, params=p)
    with pytest.raises(ValueError, match="jumps has shape"):
        integrate(rhs, np.zeros((2, 1)), g.h, params=p, jumps=np.zeros((2, g.n_steps, 1)))
    with pytest.raises(ValueError, match="params\\['CL'\\] has shape"):
        integrate(rhs, np.zeros((2, 1)), g.h, params={**p, "CL": np.ones((2, g.n_steps + 1))})
    with pytest.raises(ValueError, match="grid_h"):
        integrate(rhs, np.zeros((2, 1)), -g.h, params=p)
    with pytest.raises(ValueError, match="n_peripheral"):
        linear_pk(3, depot=False)
    y0 = pt.dmatrix("y0")  # number of states unknown: cannot build the loop
    with pytest.raises(ValueError, match="static number of states"):
        integrate(rhs, y0, g.h, params=p)


# ------------------------------------------------------------------- linear PK vs matrix exponential


def rate_matrix(structure: str, p: dict) -> np.ndarray:
    """dA/dt = M A for the states of PK_ODES[structure] (depot first, central, peripherals)."""
    n_per = int(structure[0]) - 1
    depot = structure.endswith("oral")
    c = int(depot)
    n = c + 1 + n_per
    m = np.zeros((n, n))
    v1 = p["V1"] if n_per else p["V"]
    m[c, c] = -p["CL"] / v1
    if depot:
        m[0, 0], m[c, 0] = -p["KA"], p["KA"]
    for j, (q, v) in enumerate([("Q", "V2"), ("Q3", "V3")][:n_per]):
        m[c, c] -= p[q] / v1
        m[c, c + 1 + j] += p[q] / p[v]
        m[c + 1 + j, c] += p[q] / v1
        m[c + 1 + j, c + 1 + j] -= p[q] / p[v]
    return m


def exact_linear(m, y0, knots, jumps, rates):
    """States at ``knots``: jump at each knot, then a constant input ``rates[i]`` until the next."""
    n = len(y0)
    y, out = np.asarray(y0, float).copy(), []
    for i, t in enumerate(knots):
        y = y + jumps[i]
        out.append(y.copy())
        if i + 1 < len(knots):
            aug = np.zeros((n + 1, n + 1))
            aug[:n, :n], aug[:n, n] = m, rates[i]
            y = (expm(aug * (knots[i + 1] - t)) @ np.append(y, 1.0))[:n]
    return np.array(out)


PK_PARAMS = {"CL": 2.0, "V": 15.0, "V1": 15.0, "Q": 3.0, "V2": 25.0, "Q3": 0.7, "V3": 60.0, "KA": 1.3}


def test_pk_odes_agree_with_closed_form_registry():
    assert set(PK_ODES) == {n for n, s in STRUCTURES.items() if isinstance(s, Structure)}  # linear PK only
    for name, m in PK_ODES.items():
        s = STRUCTURES[name]
        assert m.parameters == s.parameters and m.central == s.central_cmt - 1 and m.name == name
        assert m.n_states == int(name[0]) + (s.depot_cmt is not None)
        if s.depot_cmt is not None:
            assert s.depot_cmt == 1  # the depot is state 0


@pytest.mark.parametrize("structure", list(PK_ODES))
def test_linear_pk_with_bolus_infusion_and_depot_matches_matrix_exponential(structure):
    """Bolus (depot when oral) at 0 and 12 h as jumps, a 2 h infusion into the central at 5 h as an input."""
    depot = structure.endswith("oral")
    central = int(depot)
    n = central + int(structure[0])
    knots = np.array([0.0, 0.5, 1.0, 2.0, 5.0, 6.0, 7.0, 9.0, 12.0, 12.5, 16.0, 24.0])
    g = OdeGrid.build([knots], max_step=0.025)
    jumps = np.zeros((1, g.n_steps + 1, n))
    jumps[..., 0] = g.scatter(0, [0.0, 12.0], [100.0, 80.0])  # depot or central
    inputs = np.zeros((1, g.n_steps, n))
    inputs[..., central] = g.step_rates(0, 5.0, 7.0, 30.0)
    p = {k: np.array([v]) for k, v in PK_PARAMS.items()}
    y = integrate(PK_ODES[structure].rhs, np.zeros((1, n)), g.h, params=p, jumps=jumps, inputs=inputs)
    ref_jumps = np.zeros((len(knots), n))
    ref_jumps[0, 0], ref_jumps[8, 0] = 100.0, 80.0
    ref_rates = np.zeros((len(knots), n))
    ref_rates[(knots >= 5.0) & (knots < 7.0), central] = 30.0
    ref = exact_linear(rate_matrix(structure, PK_PARAMS), np.zeros(n), knots, ref_jumps, ref_rates)
    got = y[0, g.index(0, knots)]
    np.testing.assert_allclose(got, ref, rtol=1e-7, atol=1e-9 * ref.max())


# --------------------------------------------------------- time-varying parameter, order, padding

V, CL1, CL2, T_SWITCH, DOSE = 10.0, 2.0, 5.0, 5.0, 100.0
TV_TIMES = np.array([0.5, 1.0, 3.0, T_SWITCH, 6.0, 8.0, 12.0])


def exact_switch(t):
    """A(t) of a bolus DOSE at 0 with CL = CL1 before T_SWITCH and CL2 after."""
    a_switch = DOSE * np.exp(-CL1 / V * T_SWITCH)
    return np.where(t <= T_SWITCH, DOSE * np.exp(-CL1 / V * t), a_switch * np.exp(-CL2 / V * (t - T_SWITCH)))


def switch_problem(max_step: float, times=TV_TIMES):
    """Grid, y0, per-step params and jumps of the CL-switch problem (one subject)."""
    g = OdeGrid.build([times], max_step)
    cl = np.where(g.nodes[:, :-1] < T_SWITCH, CL1, CL2)  # value on each step, from its start
    jumps = g.scatter(0, 0.0, DOSE)[..., None]
    return g, np.zeros((1, 1)), {"CL": cl, "V": np.array([V])}, jumps


def switch_error(max_step: float) -> float:
    g, y0, p, jumps = switch_problem(max_step)
    y = integrate(PK_ODES["1cmt_iv"].rhs, y0, g.h, params=p, jumps=jumps)[0, g.index(0, TV_TIMES), 0]
    return float(np.max(np.abs(y / exact_switch(TV_TIMES) - 1.0)))


def test_time_varying_clearance_matches_exact_piecewise_solution():
    assert switch_error(0.05) < 2e-8  # measured 1.2e-8 (0.1: 1.9e-7); one step off at T: ~3e-2


def test_fourth_order_convergence():
    errors = [switch_error(h) for h in (0.4, 0.2, 0.1)]
    ratios = [a / b for a, b in itertools.pairwise(errors)]
    assert all(15.0 < r < 17.0 for r in ratios), (errors, ratios)


def test_vectorized_subjects_equal_separate_calls_and_padding_changes_nothing():
    """Three subjects with different grids and per-step CL in one call = one call each."""
    time_sets = [TV_TIMES, np.array([0.25, T_SWITCH, 30.0]), np.array([T_SWITCH, 7.3])]
    problems = [switch_problem(0.3, t) for t in time_sets]
    g = OdeGrid.build(time_sets, 0.3)
    assert len({p[0].n_steps for p in problems}) == 3 and g.n_steps == max(p[0].n_steps for p in problems)
    cl = np.where(g.nodes[:, :-1] < T_SWITCH, CL1, CL2)
    jumps = g.scatter([0, 1, 2], 0.0, DOSE)[..., None]
    y = integrate(
        PK_ODES["1cmt_iv"].rhs, np.zeros((3, 1)), g.h, params={"CL": cl, "V": np.full(3, V)}, jumps=jumps
    )
    for s, (gs, y0, p, js) in enumerate(problems):
        alone = integrate(PK_ODES["1cmt_iv"].rhs, y0, gs.h, params=p, jumps=js)[0]
        n = gs.n_steps
        np.testing.assert_allclose(y[s, : n + 1], alone, rtol=1e-14)  # same nodes, same states
        np.testing.assert_array_equal(y[s, n:], np.broadcast_to(y[s, n], y[s, n:].shape))  # padding: frozen


# -------------------------------------------------------------------------------- pytensor path


def _pk_problem():
    """Two subjects, 2-cmt oral, per-step CL, per-subject others, jumps and inputs: every feature."""
    times = [np.array([0.0, 1.0, 4.0, 6.0, 10.0]), np.array([0.0, 2.0, 3.0, 8.0])]
    g = OdeGrid.build(times, max_step=0.5)
    jumps = np.zeros((2, g.n_steps + 1, 3))
    jumps[..., 0] = g.scatter([0, 1], [0.0, 0.0], [100.0, 60.0])
    inputs = np.zeros((2, g.n_steps, 3))
    inputs[..., 1] = g.step_rates([0, 1], [4.0, 2.0], [6.0, 3.0], [20.0, 40.0])
    wt_effect = np.where(g.nodes[:, :-1] < 4.0, 1.0, 1.3)  # per-step multiplier of CL
    base = {
        "V1": np.array([12.0, 20.0]),
        "Q": np.array([2.0, 4.0]),
        "V2": np.array([30.0, 25.0]),
        "KA": np.array([1.1, 0.6]),
    }
    return g, jumps, inputs, wt_effect, base


def test_pytensor_scan_equals_numpy_and_its_gradient_matches_finite_differences():
    g, jumps, inputs, wt_effect, base = _pk_problem()
    rhs = PK_ODES["2cmt_oral"].rhs

    def states(log_cl, xp_params):
        cl = xp_params(log_cl)[:, None] * wt_effect
        return integrate(rhs, np.zeros((2, 3)), g.h, params={**base, "CL": cl}, jumps=jumps, inputs=inputs)

    log_cl0 = np.log(np.array([2.0, 3.0]))
    y_np = states(log_cl0, np.exp)
    x = pt.dvector("log_cl")
    y_pt = states(x, pt.exp)
    objective = (y_pt[:, :, 1] ** 2).sum()  # any smooth scalar of the states
    f = pytensor.function([x], [y_pt, objective, pytensor.grad(objective, x)])
    y_val, _, grad = f(log_cl0)
    np.testing.assert_allclose(y_val, y_np, rtol=1e-10, atol=1e-12)

    def obj_np(v):
        return float((states(v, np.exp)[:, :, 1] ** 2).sum())

    eps = 1e-6
    fd = [(obj_np(log_cl0 + eps * e) - obj_np(log_cl0 - eps * e)) / (2 * eps) for e in np.eye(2)]
    np.testing.assert_allclose(grad, fd, rtol=1e-6)

    # nutpie compiles with numba: the same graph must compile and agree there
    f_numba = pytensor.function([x], [y_pt, pytensor.grad(objective, x)], mode="NUMBA")
    y_nb, grad_nb = f_numba(log_cl0)
    np.testing.assert_allclose(y_nb, y_np, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(grad_nb, grad, rtol=1e-10)


def test_single_subject_scan_and_gradient():
    """S == 1 makes states broadcastable in one place and not in another unless the loop pins their shape."""
    g, y0, p, jumps = switch_problem(0.5)
    log_v = pt.dscalar("log_v")
    y = integrate(PK_ODES["1cmt_iv"].rhs, y0, g.h, params={**p, "V": pt.exp(log_v)[None]}, jumps=jumps)
    f = pytensor.function([log_v], [y, pytensor.grad(y.sum(), log_v)])
    value, grad = f(np.log(V))
    np.testing.assert_allclose(
        value, integrate(PK_ODES["1cmt_iv"].rhs, y0, g.h, params=p, jumps=jumps), rtol=1e-12
    )

    def total(lv):
        return integrate(
            PK_ODES["1cmt_iv"].rhs, y0, g.h, params={**p, "V": np.array([np.exp(lv)])}, jumps=jumps
        ).sum()

    assert grad == pytest.approx((total(np.log(V) + 1e-6) - total(np.log(V) - 1e-6)) / 2e-6, rel=1e-6)
