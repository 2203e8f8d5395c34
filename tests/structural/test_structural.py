"""Closed-form one-compartment solutions checked against a numerical ODE solution.

The reference is an independent one: the linear ODE system (amounts)

    d(depot)/dt   = -ka * depot
    d(central)/dt =  ka * depot - k * central + (sum of running infusion rates)
                     [- sum_j Q_j/V1 * central + Q_j/V_j * peripheral_j]
    d(peripheral_j)/dt = Q_j/V1 * central - Q_j/V_j * peripheral_j     [multi-compartment]

integrated with scipy (LSODA, tight tolerances) piecewise between events, bolus
amounts added to the state at their dose time, infusion starts/ends as
breakpoints. Concentration = central / V (V1). The same helper is the reference
of the two- and three-compartment tests (test_multicompartment.py). Multiple-dose data go through the real
data path (``read_nonmem`` -> ``Design.from_dataset`` -> ``dose_contribution`` ->
``superpose``, in ``Design.concentrations``), while the ODE reference expands ADDL and orders same-time records
itself, following the NONMEM convention.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytensor
import pytensor.tensor as pt
import pytest
from scipy.integrate import solve_ivp

from bayespk.data.design import Design
from bayespk.data.nonmem import read_nonmem
from bayespk.structural import (
    STRUCTURES,
    bolus,
    first_order_absorption,
    infusion,
    one_compartment,
)

RTOL = 1e-6  # closed form vs ODE
ATOL = 1e-12  # absolute floor for concentrations near zero
DEPOT, CENTRAL, PERIPHERAL_1, PERIPHERAL_2 = 0, 1, 2, 3  # state indices of the ODE reference
# NONMEM compartment numbering: ADVAN1 CMT 1 = central; ADVAN2 CMT 1 = depot, CMT 2 = central;
# ADVAN3/11 central first, then peripherals; ADVAN4/12 depot, central, peripherals
CMT_STATE = {
    "1cmt_iv": {1: CENTRAL},
    "1cmt_oral": {1: DEPOT, 2: CENTRAL},
    "2cmt_iv": {1: CENTRAL, 2: PERIPHERAL_1},
    "2cmt_oral": {1: DEPOT, 2: CENTRAL, 3: PERIPHERAL_1},
    "3cmt_iv": {1: CENTRAL, 2: PERIPHERAL_1, 3: PERIPHERAL_2},
    "3cmt_oral": {1: DEPOT, 2: CENTRAL, 3: PERIPHERAL_1, 4: PERIPHERAL_2},
}
DEFAULT_DOSE_CMT = {name: 1 for name in CMT_STATE}


# ----------------------------------------------------------------------------- helpers


def rate_matrix(structure: str, params: dict) -> tuple[np.ndarray, float]:
    """The ODE system matrix ``K`` (d amounts/dt = K @ amounts + input) and the central volume."""
    cl = params["CL"]
    v = params["V"] if "V" in params else params["V1"]
    ka = params["KA"] if structure.endswith("_oral") else 0.0
    m = np.zeros((4, 4))
    m[DEPOT, DEPOT] = -ka
    m[CENTRAL, DEPOT] = ka
    m[CENTRAL, CENTRAL] = -cl / v
    n_peripheral = int(structure[0]) - 1
    for q_name, v_name, state in (("Q", "V2", PERIPHERAL_1), ("Q3", "V3", PERIPHERAL_2))[:n_peripheral]:
        q, vp = params[q_name], params[v_name]
        m[CENTRAL, CENTRAL] -= q / v
        m[state, CENTRAL] += q / v
        m[state, state] -= q / vp
        m[CENTRAL, state] += q / vp
    return m, v


def _rhs(t, y, m, r_in):
    dy = m @ y
    dy[CENTRAL] += r_in
    return dy


def _jac(t, y, m, r_in):
    return m


def ode_reference(structure: str, params: dict, events: list) -> np.ndarray:
    """Concentrations at the ``obs`` events, by numerical integration of the ODE.

    ``events`` are processed in the order given (so ties at equal times are
    resolved by the caller): ``("dose", t, amt, rate, cmt)`` or ``("obs", t)``.
    ``cmt`` is a NONMEM compartment number of ``structure``; ``rate > 0`` is a
    zero-order infusion of ``amt`` over ``amt / rate``.
    """
    m, v = rate_matrix(structure, params)
    y = np.zeros(4)
    t_now = events[0][1]
    running: list[tuple[float, float]] = []  # (end time, rate) of infusions
    out = []
    for ev in events:
        t_ev = ev[1]
        assert t_ev >= t_now, "events must be in time order"
        cuts = sorted({t_now, t_ev} | {end for end, _ in running if t_now < end < t_ev})
        for a, b in zip(cuts[:-1], cuts[1:]):
            r_in = sum(r for end, r in running if end > a)  # constant on (a, b)
            sol = solve_ivp(_rhs, (a, b), y, method="LSODA", jac=_jac, args=(m, r_in),
                            rtol=1e-11, atol=1e-13)
            assert sol.success, sol.message
            y = sol.y[:, -1].copy()
        t_now = t_ev
        running = [(end, r) for end, r in running if end > t_now]
        if ev[0] == "obs":
            out.append(y[CENTRAL] / v)
        else:
            _, t, amt, rate, cmt = ev
            state = CMT_STATE[structure][cmt]
            if rate > 0:
                assert state == CENTRAL
                running.append((t + amt / rate, rate))
            else:
                y[state] += amt
    return np.array(out)


def single_dose_events(times, amt, rate=0.0, cmt=1) -> list:
    """One dose at time 0 followed by observations at ``times`` (>= 0)."""
    return [("dose", 0.0, amt, rate, cmt)] + [("obs", float(t)) for t in times]


def assert_conc_close(actual, expected):
    actual = np.asarray(actual, dtype=float)
    assert np.all(np.isfinite(actual)), actual
    np.testing.assert_allclose(actual, expected, rtol=RTOL, atol=ATOL)


def _nan_to_missing(x):
    return "." if pd.isna(x) else x


def nonmem_events(df: pd.DataFrame, structure: str) -> dict:
    """Per subject (in order of appearance), the event sequence the ODE reference runs.

    NONMEM order: records with equal TIME are processed in row order; ADDL repeats
    come after every record with the same TIME (so after an observation there).
    """
    out = {}
    for sid, g in df.groupby("ID", sort=False):
        items = []
        for pos, r in enumerate(g.itertuples(index=False)):
            if r.EVID == 1:
                addl = 0 if pd.isna(r.ADDL) else int(r.ADDL)
                ii = 0.0 if pd.isna(r.II) else float(r.II)
                rate = 0.0 if pd.isna(r.RATE) else float(r.RATE)
                cmt = DEFAULT_DOSE_CMT[structure] if pd.isna(r.CMT) else int(r.CMT)
                for j in range(addl + 1):
                    t = float(r.TIME) + j * ii
                    items.append(((t, j > 0, pos), ("dose", t, float(r.AMT), rate, cmt)))
            elif r.EVID == 0 and r.MDV == 0:
                items.append(((float(r.TIME), False, pos), ("obs", float(r.TIME))))
        items.sort(key=lambda it: it[0])
        out[sid] = [ev for _, ev in items]
    return out


def nonmem_frame(rows: list[dict]) -> pd.DataFrame:
    """A NONMEM-style DataFrame; absent fields are '.'/NaN, DV 1.0 on observations."""
    cols = ["ID", "TIME", "AMT", "DV", "EVID", "MDV", "CMT", "RATE", "II", "ADDL"]
    full = []
    for r in rows:
        r = dict(r)
        if r["EVID"] == 0:
            r.setdefault("DV", 1.0)
            r.setdefault("MDV", 0)
        else:
            r.setdefault("MDV", 1)
        full.append({c: r.get(c, np.nan) for c in cols})
    return pd.DataFrame(full, columns=cols)


def design_predictions(df, structure_name, params_by_id, as_tensor=False):
    """Predictions at the observations through read_nonmem -> Design -> superpose."""
    structure = STRUCTURES[structure_name]
    design = Design.from_dataset(read_nonmem(df), structure)
    params = {}
    for p in structure.parameters:
        per_subject = np.array([params_by_id[sid][p] for sid in design.subject_ids], dtype=float)
        gathered = per_subject[design.obs_subject][:, None]
        params[p] = pt.as_tensor(gathered) if as_tensor else gathered
    pred = design.concentrations(structure, params)
    if as_tensor:
        pred = pred.eval()
    return design, np.asarray(pred)


def ode_predictions(df, structure_name, params_by_id) -> np.ndarray:
    events = nonmem_events(df, structure_name)
    return np.concatenate(
        [ode_reference(structure_name, params_by_id[sid], ev) for sid, ev in events.items()]
    )


# ----------------------------------------------------------------------------- 1. IV bolus

TIMES = np.array([0.0, 0.01, 0.25, 0.5, 1.0, 2.0, 3.7, 6.0, 12.0, 24.0, 48.0])


@pytest.mark.parametrize("cl, v", [(2.0, 10.0), (0.3, 45.0), (15.0, 3.0), (1.0, 1.0)])
def test_bolus_single_dose_matches_ode(cl, v):
    amt = 100.0
    ref = ode_reference("1cmt_iv", {"CL": cl, "V": v}, single_dose_events(TIMES, amt))
    assert_conc_close(bolus(TIMES, amt, cl, v), ref)
    assert_conc_close(one_compartment(TIMES, np.full_like(TIMES, amt), np.zeros_like(TIMES),
                                      np.zeros(TIMES.shape, bool), cl, v), ref)
    assert bolus(0.0, amt, cl, v) == amt / v


# ----------------------------------------------------------------------------- 2. infusion


@pytest.mark.parametrize(
    "amt, rate, cl, v",
    [(100.0, 50.0, 2.0, 10.0),  # 2 h
     (100.0, 30.0, 0.7, 25.0),  # 3.333... h, not a round end time
     (500.0, 1000.0, 12.0, 4.0),  # 0.5 h, fast elimination
     (80.0, 2.0, 1.0, 20.0)],  # 40 h, still running at most times
)  # fmt: skip
def test_infusion_during_and_after_matches_ode(amt, rate, cl, v):
    dur = amt / rate
    times = np.sort(np.r_[TIMES, dur, 0.5 * dur, dur * (1 - 1e-9), dur * (1 + 1e-9), dur + 1.0])
    assert np.any(times == dur) and np.any(times < dur) and np.any(times > dur)
    ref = ode_reference("1cmt_iv", {"CL": cl, "V": v}, single_dose_events(times, amt, rate))
    assert_conc_close(infusion(times, amt, rate, cl, v), ref)
    n = len(times)
    got = one_compartment(times, np.full(n, amt), np.full(n, rate), np.zeros(n, bool), cl, v)
    assert_conc_close(got, ref)
    # trivially derivable: nothing at the start; the peak at the end is rate/CL * (1 - exp(-k dur))
    assert infusion(0.0, amt, rate, cl, v) == 0.0
    peak = rate / cl * -np.expm1(-cl / v * dur)
    np.testing.assert_allclose(infusion(dur, amt, rate, cl, v), peak, rtol=1e-14)


def test_infusion_into_oral_central_matches_ode():
    """1cmt_oral: an infusion into CMT 2 is the same as in 1cmt_iv (ka is irrelevant)."""
    p = {"CL": 2.0, "V": 10.0, "KA": 1.3}
    ref = ode_reference("1cmt_oral", p, single_dose_events(TIMES, 100.0, 40.0, cmt=2))
    n = len(TIMES)
    got = one_compartment(TIMES, np.full(n, 100.0), np.full(n, 40.0), np.zeros(n, bool), 2.0, 10.0, 1.3)
    assert_conc_close(got, ref)


# ----------------------------------------------------------------------------- 3. first-order absorption

K = 2.0 / 10.0  # CL / V below, computed exactly as the library does
ABS_TIMES = np.r_[0.0, 1e-4, np.linspace(0.05, 4.0, 12), 6.0, 9.5, 24.0, 48.0, 96.0]


@pytest.mark.parametrize(
    "ka",
    [1.5,  # ka > k
     0.05,  # ka < k: flip-flop
     K,  # ka == k exactly
     K * (1 + 1e-9), K * (1 - 1e-9),  # |ka - k| dt below the series threshold everywhere
     K * (1 + 1e-7), K * (1 + 1e-5)],  # crossing / above the series threshold within the time range
    ids=["ka>k", "flip-flop", "ka==k", "ka=k(1+1e-9)", "ka=k(1-1e-9)", "ka=k(1+1e-7)", "ka=k(1+1e-5)"],
)  # fmt: skip
def test_first_order_absorption_matches_ode(ka):
    cl, v, amt = 2.0, 10.0, 100.0
    assert cl / v == K
    ref = ode_reference("1cmt_oral", {"CL": cl, "V": v, "KA": ka}, single_dose_events(ABS_TIMES, amt, cmt=1))
    got = first_order_absorption(ABS_TIMES, amt, cl, v, ka)
    assert_conc_close(got, ref)
    n = len(ABS_TIMES)
    got = one_compartment(ABS_TIMES, np.full(n, amt), np.zeros(n), np.ones(n, bool), cl, v, ka)
    assert_conc_close(got, ref)
    assert first_order_absorption(0.0, amt, cl, v, ka) == 0.0


def test_absorption_limit_is_smooth_at_ka_equal_k():
    """Across ka == k the closed form is continuous: the limit is amt*ka/V * dt * exp(-k dt)."""
    cl, v, amt = 2.0, 10.0, 100.0
    t = ABS_TIMES[1:]
    limit = amt * K / v * t * np.exp(-K * t)
    np.testing.assert_allclose(first_order_absorption(t, amt, cl, v, K), limit, rtol=1e-14)
    for rel in (1e-12, 1e-9, 1e-7, 1e-6):
        for ka in (K * (1 + rel), K * (1 - rel)):
            got = first_order_absorption(t, amt, cl, v, ka)
            assert np.all(np.isfinite(got))
            # first-order deviation from the limit is (ka - k) * d/dka, bounded by |ka-k| * (1 + ka t^2/2)/ka
            np.testing.assert_allclose(got, limit, rtol=3 * rel * (1 + K * t.max() ** 2), atol=0)
    # away from the tie the textbook formula (fine there) agrees
    for ka in (1.5, 0.05):
        textbook = amt * ka / v * (np.exp(-K * t) - np.exp(-ka * t)) / (ka - K)
        np.testing.assert_allclose(first_order_absorption(t, amt, cl, v, ka), textbook, rtol=1e-10)


# ----------------------------------------------------------------------------- 4. multiple doses, data path

# IDs deliberately not sorted; TIMEs of ties are exactly representable.
IV_ROWS = [
    # subject 11: irregular boluses; obs at 3.7 listed after the dose at 3.7 (sees it)
    dict(ID=11, TIME=0.0, AMT=100.0, EVID=1, CMT=1),
    dict(ID=11, TIME=0.5, EVID=0), dict(ID=11, TIME=1.0, EVID=0), dict(ID=11, TIME=2.0, EVID=0),
    dict(ID=11, TIME=3.7, AMT=50.0, EVID=1, CMT=1),
    dict(ID=11, TIME=3.7, EVID=0),
    dict(ID=11, TIME=5.0, EVID=0),
    dict(ID=11, TIME=6.0, EVID=2),  # other event: ignored
    dict(ID=11, TIME=7.0, EVID=0, MDV=1),  # not an observation used
    dict(ID=11, TIME=8.0, EVID=0),
    # subject 3: ADDL repeats; obs exactly at repeat times (repeat comes after them)
    dict(ID=3, TIME=0.0, AMT=80.0, EVID=1, ADDL=3, II=6.0),  # CMT missing: default central
    dict(ID=3, TIME=6.0, EVID=0), dict(ID=3, TIME=7.0, EVID=0), dict(ID=3, TIME=12.0, EVID=0),
    dict(ID=3, TIME=13.0, EVID=0), dict(ID=3, TIME=20.0, EVID=0), dict(ID=3, TIME=30.0, EVID=0),
    # subject 7: infusion, obs during, exactly at its end, after; a bolus listed after an obs;
    # an infusion with ADDL repeats
    dict(ID=7, TIME=1.0, AMT=120.0, EVID=1, CMT=1, RATE=40.0),  # runs 1 -> 4
    dict(ID=7, TIME=2.0, EVID=0), dict(ID=7, TIME=4.0, EVID=0),
    dict(ID=7, TIME=5.0, EVID=0),
    dict(ID=7, TIME=5.0, AMT=30.0, EVID=1, CMT=1),  # after the obs at 5: not seen by it
    dict(ID=7, TIME=6.0, EVID=0), dict(ID=7, TIME=10.0, EVID=0),
    dict(ID=7, TIME=12.0, AMT=60.0, EVID=1, CMT=1, RATE=30.0, ADDL=2, II=8.0),  # 12, 20, 28; 2 h each
    dict(ID=7, TIME=13.0, EVID=0), dict(ID=7, TIME=14.0, EVID=0), dict(ID=7, TIME=20.0, EVID=0),
    dict(ID=7, TIME=21.0, EVID=0), dict(ID=7, TIME=29.5, EVID=0), dict(ID=7, TIME=36.0, EVID=0),
]  # fmt: skip
IV_PARAMS = {11: {"CL": 2.0, "V": 10.0}, 3: {"CL": 0.5, "V": 20.0}, 7: {"CL": 4.0, "V": 30.0}}

ORAL_ROWS = [
    # subject 2 (ka > k): depot doses with ADDL, obs at a repeat time; an IV bolus into CMT 2
    dict(ID=2, TIME=0.0, AMT=200.0, EVID=1, CMT=1, ADDL=2, II=12.0),
    dict(ID=2, TIME=1.0, EVID=0, CMT=2), dict(ID=2, TIME=3.0, EVID=0),
    dict(ID=2, TIME=12.0, EVID=0), dict(ID=2, TIME=12.5, EVID=0), dict(ID=2, TIME=24.5, EVID=0),
    dict(ID=2, TIME=30.0, AMT=50.0, EVID=1, CMT=2),
    dict(ID=2, TIME=30.0, EVID=0, CMT=2),  # sees the IV bolus given at the same time
    dict(ID=2, TIME=31.0, EVID=0), dict(ID=2, TIME=40.0, EVID=0),
    # subject 9 (flip-flop): infusion into central, depot dose during it (CMT missing: depot)
    dict(ID=9, TIME=0.0, AMT=100.0, EVID=1, CMT=2, RATE=25.0),  # 0 -> 4
    dict(ID=9, TIME=1.0, EVID=0), dict(ID=9, TIME=2.3, EVID=0),
    dict(ID=9, TIME=2.3, AMT=150.0, EVID=1),
    dict(ID=9, TIME=4.0, EVID=0), dict(ID=9, TIME=6.0, EVID=0), dict(ID=9, TIME=10.0, EVID=0),
    dict(ID=9, TIME=10.0, AMT=40.0, EVID=1, CMT=2),  # after the obs at 10
    dict(ID=9, TIME=10.25, EVID=0), dict(ID=9, TIME=30.0, EVID=0),
    # subject 4 (ka == k exactly): irregular depot and central doses
    dict(ID=4, TIME=0.0, AMT=100.0, EVID=1, CMT=1),
    dict(ID=4, TIME=0.0, EVID=0),
    dict(ID=4, TIME=2.0, EVID=0),
    dict(ID=4, TIME=5.5, AMT=100.0, EVID=1, CMT=1),
    dict(ID=4, TIME=5.5, EVID=0), dict(ID=4, TIME=6.0, EVID=0),
    dict(ID=4, TIME=7.25, AMT=60.0, EVID=1, CMT=2, RATE=120.0),  # 0.5 h infusion into central
    dict(ID=4, TIME=7.5, EVID=0), dict(ID=4, TIME=7.75, EVID=0), dict(ID=4, TIME=9.0, EVID=0),
    dict(ID=4, TIME=9.0, AMT=80.0, EVID=1, CMT=1, ADDL=1, II=3.0),
    dict(ID=4, TIME=12.0, EVID=0), dict(ID=4, TIME=20.0, EVID=0),
]  # fmt: skip
ORAL_PARAMS = {
    2: {"CL": 3.0, "V": 30.0, "KA": 1.2},
    9: {"CL": 6.0, "V": 20.0, "KA": 0.08},
    4: {"CL": 2.0, "V": 10.0, "KA": 2.0 / 10.0},  # ka == CL/V exactly
}

DATA_CASES = {"1cmt_iv": (IV_ROWS, IV_PARAMS), "1cmt_oral": (ORAL_ROWS, ORAL_PARAMS)}


@pytest.mark.parametrize("structure", list(DATA_CASES))
def test_multiple_doses_through_data_path_match_ode(structure):
    rows, params = DATA_CASES[structure]
    df = nonmem_frame(rows)
    design, pred = design_predictions(df, structure, params)
    ref = ode_predictions(df, structure, params)
    used = df[(df.EVID == 0) & (df.MDV == 0)]
    np.testing.assert_array_equal(design.obs_time, used.TIME.to_numpy(float))
    assert len(pred) == len(ref) == len(used)
    assert_conc_close(pred, ref)


def test_missing_values_as_dot_strings_give_the_same_design():
    """'.' and NaN both mean missing in a DataFrame source."""
    df = nonmem_frame(ORAL_ROWS)
    dotted = df.astype(object).map(_nan_to_missing)
    _, a = design_predictions(df, "1cmt_oral", ORAL_PARAMS)
    _, b = design_predictions(dotted, "1cmt_oral", ORAL_PARAMS)
    np.testing.assert_array_equal(a, b)


def test_same_time_dose_and_observation_ordering():
    """NONMEM: a dose record before an observation record at the same TIME is seen by it,
    one after it is not; an ADDL repeat at an observation's TIME comes after it."""
    cl, v = 2.0, 10.0
    k = cl / v
    rows = [
        dict(ID=1, TIME=0.0, AMT=100.0, EVID=1, CMT=1, ADDL=1, II=10.0),  # repeat at 10
        dict(ID=1, TIME=10.0, EVID=0),  # before the repeat
        dict(ID=1, TIME=20.0, AMT=50.0, EVID=1, CMT=1),
        dict(ID=1, TIME=20.0, EVID=0),  # after the dose record
        dict(ID=1, TIME=30.0, EVID=0),  # before the dose record below
        dict(ID=1, TIME=30.0, AMT=70.0, EVID=1, CMT=1),
        dict(ID=1, TIME=31.0, EVID=0),
    ]
    df = nonmem_frame(rows)
    design, pred = design_predictions(df, "1cmt_iv", {1: {"CL": cl, "V": v}})
    # slots are dose records (ADDL repeats are summed in closed form): t=0 (+repeat at 10), t=20, t=30
    np.testing.assert_array_equal(
        design.mask,
        [[True, False, False],
         [True, True, False],
         [True, True, False],
         [True, True, True]],
    )  # fmt: skip
    e = lambda t: np.exp(-k * t)  # noqa: E731
    expected = [
        100 / v * e(10),
        100 / v * (e(20) + e(10)) + 50 / v,
        100 / v * (e(30) + e(20)) + 50 / v * e(10),
        100 / v * (e(31) + e(21)) + 50 / v * e(11) + 70 / v * e(1),
    ]
    np.testing.assert_allclose(pred, expected, rtol=1e-13)
    assert_conc_close(pred, ode_predictions(df, "1cmt_iv", {1: {"CL": cl, "V": v}}))


# ----------------------------------------------------------------------------- long schedule

LONG_ROWS = (
    [dict(ID=1, TIME=0.0, AMT=250.0, EVID=1, CMT=1, ADDL=19, II=12.0)]  # oral, 20 doses
    + [dict(ID=1, TIME=t, EVID=0)
       for t in (0.5, 2.0, 11.9, 12.0, 60.0, 61.0, 120.0, 150.25, 228.0, 229.5, 240.0, 300.0)]
    + [dict(ID=5, TIME=0.0, AMT=90.0, EVID=1, CMT=2, RATE=60.0, ADDL=19, II=8.0)]  # 20 infusions of 1.5 h
    + [dict(ID=5, TIME=t, EVID=0)
       for t in (0.75, 1.5, 8.0, 9.5, 40.0, 41.0, 152.0, 153.5, 155.0, 160.0, 200.0)]
    + [dict(ID=6, TIME=0.0, AMT=100.0, EVID=1, CMT=1, ADDL=19, II=24.0)]  # ka == k, 20 doses
    + [dict(ID=6, TIME=t, EVID=0) for t in (3.0, 24.0, 100.0, 456.0, 457.0, 480.0, 500.0)]
)  # fmt: skip
LONG_PARAMS = {
    1: {"CL": 3.0, "V": 40.0, "KA": 0.9},
    5: {"CL": 5.0, "V": 25.0, "KA": 1.0},
    6: {"CL": 1.5, "V": 15.0, "KA": 1.5 / 15.0},
}


def test_twenty_doses_via_addl_match_ode():
    df = nonmem_frame(LONG_ROWS)
    design, pred = design_predictions(df, "1cmt_oral", LONG_PARAMS)
    assert design.mask.shape[1] <= 3  # one slot per dose record: ADDL repeats are summed in closed form
    assert design.addl.max() == 19
    assert_conc_close(pred, ode_predictions(df, "1cmt_oral", LONG_PARAMS))


# ----------------------------------------------------------------------------- 5. pytensor


def test_pytensor_evaluation_equals_numpy():
    t = np.r_[0.0, 0.3, 1.0, 2.0, 2.5, 7.0, 30.0]
    amt, rate, cl, v = 100.0, 40.0, 2.0, 10.0
    cases = [
        (bolus, (t, amt, cl, v)),
        (infusion, (t, amt, rate, cl, v)),
        (first_order_absorption, (t, amt, cl, v, 1.5)),
        (first_order_absorption, (t, amt, cl, v, 0.05)),
        (first_order_absorption, (t, amt, cl, v, cl / v)),
        (first_order_absorption, (t, amt, cl, v, cl / v * (1 + 1e-9))),
    ]
    # float64 explicitly: pt.as_tensor(1.5) would be a float32 constant (pytensor autocasts
    # Python floats to the narrowest exact dtype)
    outs = [fn(*(pt.as_tensor(np.asarray(a, dtype="float64")) for a in args)) for fn, args in cases]
    assert all(isinstance(o, pt.TensorVariable) and o.dtype == "float64" for o in outs)
    values = pytensor.function([], outs)()
    for (fn, args), got in zip(cases, values):
        np.testing.assert_allclose(got, fn(*args), rtol=1e-12, atol=0, err_msg=fn.__name__)


@pytest.mark.parametrize("structure", list(DATA_CASES))
def test_pytensor_data_path_equals_numpy(structure):
    rows, params = DATA_CASES[structure]
    df = nonmem_frame(rows)
    _, np_pred = design_predictions(df, structure, params)
    _, pt_pred = design_predictions(df, structure, params, as_tensor=True)
    np.testing.assert_allclose(pt_pred, np_pred, rtol=1e-12, atol=1e-15)


def _numpy_oral(t, amt, cl, v, ka):
    return first_order_absorption(t, amt, cl, v, ka).sum()


@pytest.fixture(scope="module")
def oral_grad_fn():
    """Compiled (value, d/dka, d/dCL, d/dV) of sum_t C(t) for a depot dose."""
    cl, v, ka = pt.dscalars("cl", "v", "ka")
    c = first_order_absorption(pt.as_tensor(GRAD_T), GRAD_AMT, cl, v, ka).sum()
    return pytensor.function([cl, v, ka], [c, *pytensor.grad(c, [ka, cl, v])])


GRAD_T = np.array([0.0, 0.5, 2.0, 5.0, 12.0])
GRAD_AMT = 100.0


@pytest.mark.parametrize(
    "ka_factor", [1.0, 1 + 1e-9, 1 - 1e-9, 7.5, 0.25], ids=["ka==k", "k(1+1e-9)", "k(1-1e-9)", "ka>k", "ka<k"]
)
def test_oral_gradient_finite_and_correct_at_ka_equal_k(oral_grad_fn, ka_factor):
    cl, v = 2.0, 10.0
    ka = cl / v * ka_factor
    value, d_ka, d_cl, d_v = oral_grad_fn(cl, v, ka)
    assert np.isfinite([value, d_ka, d_cl, d_v]).all()
    np.testing.assert_allclose(value, _numpy_oral(GRAD_T, GRAD_AMT, cl, v, ka), rtol=1e-12)

    def fd(f, x, h=1e-6):  # central difference, relative step
        return (f(x * (1 + h)) - f(x * (1 - h))) / (2 * x * h)

    np.testing.assert_allclose(d_ka, fd(lambda x: _numpy_oral(GRAD_T, GRAD_AMT, cl, v, x), ka), rtol=1e-6)
    np.testing.assert_allclose(d_cl, fd(lambda x: _numpy_oral(GRAD_T, GRAD_AMT, x, v, ka), cl), rtol=1e-6)
    np.testing.assert_allclose(d_v, fd(lambda x: _numpy_oral(GRAD_T, GRAD_AMT, cl, x, ka), v), rtol=1e-6)
    if ka_factor == 1.0:
        # trivially derivable at the tie: C = amt ka/V t e^{-kt}, dC/dka = amt/V t e^{-kt} (1 - ka t/2)
        k, t = cl / v, GRAD_T
        exact = (GRAD_AMT / v * t * np.exp(-k * t) * (1 - ka * t / 2)).sum()
        np.testing.assert_allclose(d_ka, exact, rtol=1e-12)


def test_gradient_through_data_path_at_ka_equal_k():
    """d(sum of predictions)/d(per-subject KA, CL) through Design + superpose, subject 4 has ka == k."""
    structure = STRUCTURES["1cmt_oral"]
    df = nonmem_frame(ORAL_ROWS)
    design = Design.from_dataset(read_nonmem(df), structure)
    ids = list(design.subject_ids)
    base = {p: np.array([ORAL_PARAMS[i][p] for i in ids]) for p in structure.parameters}
    assert base["KA"][ids.index(4)] == base["CL"][ids.index(4)] / base["V"][ids.index(4)]
    vec = {p: pt.dvector(p) for p in structure.parameters}
    gathered = {p: vec[p][design.obs_subject][:, None] for p in structure.parameters}
    total = design.concentrations(structure, gathered).sum()
    grads = pytensor.grad(total, [vec["KA"], vec["CL"]])
    f = pytensor.function([vec[p] for p in structure.parameters], [total, *grads])
    value, g_ka, g_cl = f(*(base[p] for p in structure.parameters))
    assert np.isfinite(g_ka).all() and np.isfinite(g_cl).all()

    def total_np(p):
        g = {q: p[q][design.obs_subject][:, None] for q in structure.parameters}
        return design.concentrations(structure, g).sum()

    np.testing.assert_allclose(value, total_np(base), rtol=1e-12)
    h = 1e-6
    for name, grad in (("KA", g_ka), ("CL", g_cl)):
        fd = np.empty(len(ids))
        for s in range(len(ids)):
            up = {q: a.copy() for q, a in base.items()}
            dn = {q: a.copy() for q, a in base.items()}
            up[name][s] *= 1 + h
            dn[name][s] *= 1 - h
            fd[s] = (total_np(up) - total_np(dn)) / (2 * base[name][s] * h)
        np.testing.assert_allclose(grad, fd, rtol=1e-6, err_msg=name)
