"""CAR-T closed forms against an ODE with step changes in the expansion rate."""

import numpy as np
import pytensor
import pytensor.tensor as pt
import pytest
from scipy.integrate import solve_ivp

from bayespk.structural.cart import CELL_KINETICS, NO_ONSET, ck_level, expansion_integral

STEIN = dict(CMAX=24000.0, FX=3900.0, TMAX=9.3, ALPHA=0.16, FB=0.0079, BETA=0.0032)  # SCIENCE.md section 5


def ode_level(times, CMAX, FX, TMAX, ALPHA, FB, BETA, TLAG=0.0, onsets=(), multipliers=()):
    """dC/dt = rho(t) C during expansion (rho switching at each onset), then two declining pools.

    Integrated piece by piece between the break points with solve_ivp (rtol 1e-12).
    """
    rho = np.log(FX) / TMAX
    peak = TLAG + TMAX

    def factor(s):
        return np.prod([m for o, m in zip(onsets, multipliers) if s >= o]) if onsets else 1.0

    breaks = sorted({TLAG, peak, *[o for o in onsets if TLAG < o < peak]})
    out = np.empty(len(times))
    for i, t in enumerate(times):
        y = np.log(CMAX / FX)  # log C, flat until the lag ends
        a = TLAG
        for b in breaks[1:]:
            end = min(b, t)
            if end > a:
                f = factor(a)  # constant on [a, end)
                sol = solve_ivp(lambda s, v: [rho * f], (a, end), [y], rtol=1e-12, atol=1e-14)
                y = sol.y[0, -1]
            a = b
            if b >= t:
                break
        c_peak = np.exp(y)
        if t <= peak:
            out[i] = c_peak
            continue
        sol = solve_ivp(lambda s, v: [-ALPHA * v[0], -BETA * v[1]], (peak, t), [(1 - FB) * c_peak, FB * c_peak],
                        rtol=1e-12, atol=1e-20)
        out[i] = sol.y[:, -1].sum()
    return out


TIMES = np.array([0.0, 0.5, 2.0, 4.0, 6.1, 9.29, 9.3, 9.31, 12.0, 28.0, 90.0, 365.0, 730.0])


def test_stein_no_treatment_reaches_cmax_at_tmax():
    c = ck_level(TIMES, **STEIN)
    assert c[0] == pytest.approx(STEIN["CMAX"] / STEIN["FX"], rel=1e-12)
    assert c[6] == pytest.approx(STEIN["CMAX"], rel=1e-12)
    assert np.argmax(c) == 6
    np.testing.assert_allclose(c, ode_level(TIMES, **STEIN), rtol=1e-9)


@pytest.mark.parametrize("onsets, multipliers", [
    ((3.0,), (1.2,)),  # tocilizumab on day 3 (Stein's estimate 1.2)
    ((3.0,), (0.5,)),  # a strong dampening
    ((4.0, 6.5), (0.6, 0.8)),  # tocilizumab then corticosteroids
    ((6.5, 4.0), (0.8, 0.6)),  # the same, given in the other order
    ((-1.0,), (0.7,)),  # started before the infusion: acts from the start
    ((20.0,), (0.3,)),  # after the peak: no effect
    ((2.0, 2.0, 5.0), (0.9, 0.7, 1.5)),  # three treatments, two on the same day
])
def test_time_varying_multiplier_is_exact(onsets, multipliers):
    closed = ck_level(TIMES, **STEIN, onsets=[np.full(len(TIMES), o) for o in onsets], multipliers=multipliers)
    np.testing.assert_allclose(closed, ode_level(TIMES, **STEIN, onsets=onsets, multipliers=multipliers), rtol=1e-9)


def test_lag_variant_against_ode():
    p = dict(CMAX=5000.0, FX=250.0, TMAX=6.0, ALPHA=0.14, FB=0.02, BETA=0.002, TLAG=3.27)  # Ogasawara 2021 means
    for onsets, mult in [((), ()), ((5.0,), (0.6,)), ((1.0,), (0.6,))]:
        closed = ck_level(TIMES, **p, onsets=[np.full(len(TIMES), o) for o in onsets], multipliers=mult)
        np.testing.assert_allclose(closed, ode_level(TIMES, **p, onsets=onsets, multipliers=mult), rtol=1e-9)
    flat = ck_level(np.array([0.0, 1.0, 3.27]), **p)
    np.testing.assert_allclose(flat, p["CMAX"] / p["FX"], rtol=1e-12)
    assert ck_level(np.array([9.27]), **p)[0] == pytest.approx(p["CMAX"], rel=1e-12)


def test_before_infusion_is_zero_and_no_onset_has_no_effect():
    t = np.array([-5.0, -0.1, 10.0])
    c = ck_level(t, **STEIN, onsets=[np.full(3, NO_ONSET)], multipliers=[0.2])
    np.testing.assert_array_equal(c[:2], 0.0)
    assert c[2] == pytest.approx(ck_level(np.array([10.0]), **STEIN)[0], rel=1e-12)


def test_expansion_integral_subsets():
    # factor 1 on [0,2), 0.5 on [2,5), 0.5*3 on [5, 8]: integral 2 + 1.5 + 4.5
    u = expansion_integral(np.array(8.0), 0.0, [np.array(2.0), np.array(5.0)], [0.5, 3.0])
    assert float(u) == pytest.approx(8.0)


def test_pytensor_gradient_is_finite_and_matches_numpy():
    names = list(STEIN)
    x = pt.dvector("x")
    m = pt.dscalar("m")
    t = np.linspace(0.0, 400.0, 81)
    onset = np.full(len(t), 4.0)
    level = ck_level(t, *[x[i] for i in range(6)], onsets=[onset], multipliers=[m])
    fn = pytensor.function([x, m], [level, pytensor.grad(pt.sum(pt.log(level[1:])), [x, m])[0]])
    values, grad = fn(np.array([STEIN[n] for n in names]), 0.8)
    np.testing.assert_allclose(values, ck_level(t, **STEIN, onsets=[onset], multipliers=[0.8]), rtol=1e-10)
    assert np.all(np.isfinite(grad))


def test_registry_describes_both_structures():
    assert CELL_KINETICS["cart_piecewise"].parameters == ("CMAX", "FX", "TMAX", "ALPHA", "FB", "BETA")
    lag = CELL_KINETICS["cart_lag"]
    assert lag.peak_time({"TLAG": 3.0, "TEXP": 6.0}) == 9.0
    p = dict(CMAX=5000.0, FX=250.0, TEXP=6.0, ALPHA=0.14, FB=0.02, BETA=0.002, TLAG=3.0)
    assert lag.level(np.array([9.0]), p)[0] == pytest.approx(5000.0)
