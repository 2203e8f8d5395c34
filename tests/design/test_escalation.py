"""Dose-escalation designs (bayespk.design): BOIN, mTPI-2, 3+3, next dose, MTD selection, operating
characteristics.

Reference values are typed in below with their source beside them. Where the source is "R BOIN 2.7.2", the
numbers are the output of the R package BOIN 2.7.2 (Yuan & Liu; CRAN; R source as in the CRAN mirror
github.com/cran/BOIN, commit 6c3a0c2, "version 2.7.2"), run with R 4.2.2: ``get.boundary`` (boundary tables),
``select.mtd`` (MTD selection) and ``get.oc`` (operating characteristics). The mTPI-2 table is the output of
``get_decision_mtpi2`` of the R package FIND (github.com/oliviazhang0416/FIND), which implements Guo et al.
(2017, Contemp Clin Trials 58:23) with the Beta(1, 1) prior and the 0.95 elimination rule.
"""

import math
import subprocess
import sys

import numpy as np
import pytest
from scipy.optimize import brentq

from bayespk.cli import main
from bayespk.design import (
    Boin,
    DesignError,
    Mtpi2,
    ThreePlusThree,
    boin_boundaries,
    make_design,
    mtpi2_table,
    next_dose,
    operating_characteristics,
    pava,
    select_mtd,
    simulate_trials,
)
from bayespk.design.escalation import boin_lambdas
from bayespk.design.simulation import _combine, binomial_se_pct, check_scenario

# ---------------------------------------------------------------- BOIN boundaries
# R BOIN 2.7.2: get.boundary(target = T, ncohort = 10, cohortsize = 3)$full_boundary_tab, n = 1..30
# (rows: escalate if # of DLT <=, de-escalate if # of DLT >=, eliminate if # of DLT >=), and
# format($lambda_e, digits = 15), format($lambda_d, digits = 15).
BOIN_R = {  # target: (lambda_e, lambda_d, table); NA: no number of DLTs eliminates
    0.20: (0.157242286700307, 0.238462438817315, """
        escalate    0  0 0 0 0 0 1 1 1 1 1 1 2 2 2 2 2 2 2 3 3 3 3 3 3 4 4 4  4  4
        deescalate  1  1 1 1 2 2 2 2 3 3 3 3 4 4 4 4 5 5 5 5 6 6 6 6 6 7 7 7  7  8
        eliminate  NA NA 2 3 3 3 4 4 4 5 5 5 5 6 6 6 7 7 7 7 8 8 8 8 9 9 9 9 10 10"""),
    0.25: (0.196800870555487, 0.29839215237546, """
        escalate    0  0 0 0 0 1 1 1 1 1 2 2 2 2 2 3 3 3 3 3 4 4  4  4  4  5  5  5  5  5
        deescalate  1  1 1 2 2 2 3 3 3 3 4 4 4 5 5 5 6 6 6 6 7 7  7  8  8  8  9  9  9  9
        eliminate  NA NA 3 3 3 4 4 4 5 5 6 6 6 7 7 7 8 8 8 9 9 9 10 10 10 11 11 11 12 12"""),
    0.30: (0.236490685236468, 0.35851946464093, """
        escalate    0  0 0 0 1 1 1 1 2 2 2 2 3 3 3 3 4 4 4  4  4  5  5  5  5  6  6  6  6  7
        deescalate  1  1 2 2 2 3 3 3 4 4 4 5 5 6 6 6 7 7 7  8  8  8  9  9  9 10 10 11 11 11
        eliminate  NA NA 3 3 4 4 5 5 5 6 6 7 7 8 8 8 9 9 9 10 10 11 11 11 12 12 12 13 13 14"""),
    0.33: (0.260376743677795, 0.394715868291007, """
        escalate    0  0 0 1 1 1 1 2 2 2 2 3 3 3 3 4 4  4  4  5  5  5  5  6  6  6  7  7  7  7
        deescalate  1  1 2 2 2 3 3 4 4 4 5 5 6 6 6 7 7  8  8  8  9  9 10 10 10 11 11 12 12 12
        eliminate  NA NA 3 3 4 4 5 5 6 6 7 7 8 8 8 9 9 10 10 11 11 11 12 12 13 13 13 14 14 15"""),
}


def parse_table(text: str) -> dict[str, list]:
    """``{row name: values}`` of a table typed as R prints it (NA as None)."""
    rows = {}
    for line in text.strip().splitlines():
        name, *values = line.split()
        rows[name] = [None if v == "NA" else int(v) for v in values]
    return rows


@pytest.mark.parametrize("target", sorted(BOIN_R))
def test_boin_boundaries_equal_r_boin_get_boundary(target):
    lambda_e, lambda_d, table = BOIN_R[target]
    ref = parse_table(table)
    b = boin_boundaries(target, n_max=30)
    assert b.lambda_e == pytest.approx(lambda_e, abs=1e-14)
    assert b.lambda_d == pytest.approx(lambda_d, abs=1e-14)
    assert list(b.n) == list(range(1, 31))
    assert list(b.escalate) == ref["escalate"]
    assert list(b.deescalate) == ref["deescalate"]
    assert list(b.eliminate) == ref["eliminate"]


def test_boin_boundary_tab_by_cohort_matches_r():
    # R BOIN 2.7.2: get.boundary(target = 0.3, ncohort = 10, cohortsize = 3)$boundary_tab
    rows = boin_boundaries(0.3, n_max=30).rows(cohort_size=3)
    assert [r["n"] for r in rows] == [3, 6, 9, 12, 15, 18, 21, 24, 27, 30]
    assert [r["escalate_if_dlt_le"] for r in rows] == [0, 1, 2, 2, 3, 4, 4, 5, 6, 7]
    assert [r["deescalate_if_dlt_ge"] for r in rows] == [2, 3, 4, 5, 6, 7, 8, 9, 10, 11]
    assert [r["eliminate_if_dlt_ge"] for r in rows] == [3, 4, 5, 7, 8, 9, 10, 11, 12, 14]


def test_boin_integer_lambda_d_times_n_rounds_up_as_r_boin_2_7_2():
    # p_tox chosen so that lambda_d = 0.4 to machine precision: lambda_d * 5 = 1.9999999999999998 and
    # lambda_d * 10 = 4.0. R BOIN 2.7.2 (round(lambda_d n) + 1 when |round - lambda_d n| < 1e-12), run with
    # get.boundary(0.3, 10, 1, p.tox = 0.5059405275001106): de-escalate if # of DLT >= 1 1 2 2 3 3 3 4 4 5.
    p_tox = brentq(lambda pt: boin_lambdas(0.3, 0.18, pt)[1] - 0.4, 0.34, 0.6, xtol=1e-17)
    assert math.ceil(boin_lambdas(0.3, 0.18, p_tox)[1] * 5) == 2  # a plain ceiling would say 2
    b = boin_boundaries(0.3, p_tox=p_tox, n_max=10)
    assert list(b.deescalate) == [1, 1, 2, 2, 3, 3, 3, 4, 4, 5]


def test_boin_decisions_follow_the_table():
    d = Boin(0.3, n_max=12)
    assert [d.decision(3, y) for y in range(4)] == ["E", "S", "D", "DU"]
    assert [d.decision(6, y) for y in range(7)] == ["E", "E", "S", "D", "DU", "DU", "DU"]


# ---------------------------------------------------------------- mTPI-2
# FIND::get_decision_mtpi2(pT = 0.3, EI = c(0.25, 0.35), npts = 12)$tab (Guo et al. 2017 rule,
# eps1 = eps2 = 0.05), decisions for y = 0..n DLTs, n = 3..12. The n = 6 row shows Guo et al.'s motivating
# case: 3/6 is D under mTPI-2 (mTPI, Ji et al. 2010, said S).
MTPI2_FIND_03 = {
    3: "E S D DU",
    4: "E S D DU DU",
    5: "E E D D DU DU",
    6: "E E S D DU DU DU",
    7: "E E S D D DU DU DU",
    8: "E E S D D DU DU DU DU",
    9: "E E E S D DU DU DU DU DU",
    10: "E E E S D D DU DU DU DU DU",
    11: "E E E S D D DU DU DU DU DU DU",
    12: "E E E S S D D DU DU DU DU DU DU",
}
# FIND::get_decision_mtpi2(pT = 0.25, EI = c(0.2, 0.3), npts = 12)$tab, n = 3..6
# (the FIND package's own example)
MTPI2_FIND_025 = {3: "E D D DU", 4: "E S D DU DU", 5: "E S D DU DU DU", 6: "E E D D DU DU DU"}


def test_mtpi2_table_target_03():
    t = mtpi2_table(0.3, 0.05, 0.05, n_max=12)
    for n, row in MTPI2_FIND_03.items():
        assert " ".join(t.decisions[n]) == row, f"n = {n}"


def test_mtpi2_table_target_025():
    t = mtpi2_table(0.25, 0.05, 0.05, n_max=6)
    for n, row in MTPI2_FIND_025.items():
        assert " ".join(t.decisions[n]) == row, f"n = {n}"


def test_mtpi2_intervals_have_the_equivalence_width():
    t = mtpi2_table(0.3, n_max=3)
    widths = [b - a for a, b in t.intervals]
    assert t.intervals[0][0] == 0 and t.intervals[-1][1] == 1
    assert np.allclose(widths[1:-1], 0.1)
    assert any(a == pytest.approx(0.25) and b == pytest.approx(0.35) for a, b in t.intervals)


# ---------------------------------------------------------------- next dose


def test_next_dose_brief_example_de_escalates_with_reason():
    r = next_dose(Boin(0.3), 5, [3, 3, 3], [0, 1, 2], current=3)
    assert (r.action, r.dose, r.decision, r.eliminated) == ("de-escalate", 2, "D", ())
    assert "lambda_d = 0.359" in r.reason and "2 DLTs in 3 patients" in r.reason


def test_next_dose_never_re_escalates_to_an_eliminated_dose():
    # dose 3 had 3/3 (eliminated: it and above); dose 2 now 0/6 would escalate, but dose 3 is eliminated
    r = next_dose(Boin(0.3), 5, [3, 6, 3], [0, 0, 3], current=2)
    assert r.action == "stay" and r.dose == 2 and r.eliminated == (3, 4, 5)
    assert "eliminated" in r.reason


def test_next_dose_eliminates_and_stops_at_the_lowest_dose():
    r = next_dose(Boin(0.3), 4, [3], [3], current=1)
    assert r.action == "stop" and r.dose is None and r.eliminated == (1, 2, 3, 4)
    r = next_dose(Mtpi2(0.3), 4, [3, 3], [0, 3], current=2)
    assert (r.action, r.dose, r.decision, r.eliminated) == ("de-escalate", 1, "DU", (2, 3, 4))


def test_next_dose_edges_stay():
    assert next_dose(Boin(0.3), 3, [3, 3, 3], [0, 0, 0], current=3).action == "stay"  # E at the highest dose
    # D at the lowest dose (2/3 is not eliminated)
    assert next_dose(Boin(0.3), 3, [3], [2], current=1).action == "stay"


def test_next_dose_three_plus_three():
    d = ThreePlusThree()
    assert next_dose(d, 4, [3], [0], 1).dose == 2
    assert next_dose(d, 4, [3, 3], [0, 1], 2).action == "stay"
    r = next_dose(d, 4, [3, 6], [0, 2], 2)  # dose 2 exceeds the MTD, dose 1 has only 3: treat 3 more there
    assert (r.action, r.dose) == ("de-escalate", 1)
    r = next_dose(d, 4, [6, 6], [1, 2], 2)
    assert r.action == "stop" and "MTD = dose 1" in r.reason
    with pytest.raises(DesignError, match="3 or 6"):
        next_dose(d, 4, [4], [0], 1)


@pytest.mark.parametrize("args, words", [
    ((5, [3, 3], [0, 4], 2), "dose 2: 4 DLTs in 3 patients"),
    ((5, [3, 3], [0, 1], 6), "current = 6: not a dose level"),
    ((5, [3, 3], [0], 1), "treated has 2 value"),
    ((2, [3, 3, 3], [0, 0, 0], 1), "3 values for doses = 2"),
    ((5, [3, 0], [0, 0], 2), "current = 2: no patient treated"),
])
def test_next_dose_refuses_bad_data(args, words):
    with pytest.raises(DesignError, match=words):
        next_dose(Boin(0.3), *args)


@pytest.mark.parametrize("target", [0.0, 1.0, -0.2, 1.5])
def test_target_outside_unit_interval_refused(target):
    with pytest.raises(DesignError, match=r"target .*\(0, 1\)"):
        boin_boundaries(target)
    with pytest.raises(DesignError, match=r"target .*\(0, 1\)"):
        make_design("mtpi2", target)


# ---------------------------------------------------------------- MTD selection
# R BOIN 2.7.2: select.mtd(target = 0.3, npts = n, ntox = y)$MTD (99: none, here None); the first case is
# its documented example.
SELECT_R = [
    ([3, 3, 15, 9, 0], [0, 0, 4, 4, 0], 3),
    ([3, 6, 12, 6, 0], [0, 1, 4, 3, 0], 3),
    ([3, 3, 3, 0, 0], [0, 0, 3, 0, 0], 2),
    ([3, 0, 0], [3, 0, 0], None),
    ([6, 9, 6, 3], [0, 2, 2, 2], 3),
    ([3, 3, 6, 9, 3], [0, 0, 1, 3, 2], 4),
    ([3, 6, 9, 6, 3], [1, 1, 2, 4, 1], 3),
]


@pytest.mark.parametrize("n, y, mtd", SELECT_R)
def test_select_mtd_equals_r_boin(n, y, mtd):
    assert select_mtd(0.3, n, y) == mtd


def test_pava_pools_adjacent_violators():
    assert pava([0.1, 0.3, 0.2, 0.4]).tolist() == pytest.approx([0.1, 0.25, 0.25, 0.4])
    assert pava([0.5, 0.1], [3, 1]).tolist() == pytest.approx([0.4, 0.4])
    assert pava([0.1, 0.2, 0.3]).tolist() == pytest.approx([0.1, 0.2, 0.3])


# ---------------------------------------------------------------- operating characteristics
# R BOIN 2.7.2: get.oc(target = 0.3, p.true = c(0.05, 0.15, 0.3, 0.45, 0.6), ncohort = 10, cohortsize = 3,
# ntrial = 20000, seed = 6) (the scenario of the package's get.oc example): $selpercent, $npatients
# ($percentstop 0.025, $totaln 30).
R_OC_SELECT = [1.04, 23.25, 55.05, 19.2, 1.43]
R_OC_PATIENTS = [4.147, 9.169, 11.131, 4.764, 0.782]
R_OC_TRIALS = 20000
SCENARIO = [0.05, 0.15, 0.3, 0.45, 0.6]


def test_boin_operating_characteristics_agree_with_r_boin_get_oc():
    """Through the Dask runner (1 local worker). Tolerance: 4 standard errors of the difference of two
    binomial percentages (ours from 4000 trials, R's from 20000): about 3 percentage points at 55%, 0.7 at
    1%."""
    trials = 4000
    oc = operating_characteristics(Boin(0.3, n_max=30), SCENARIO, trials=trials, cohort_size=3, cohorts=10,
                                   seed=1, tasks=4, workers=1, progress=False)
    assert oc.trials == trials
    for j, (ours, ref) in enumerate(zip(oc.select_pct, R_OC_SELECT)):
        q = ref / 100
        tol = 4 * 100 * math.sqrt(q * (1 - q) * (1 / trials + 1 / R_OC_TRIALS)) + 0.1
        assert abs(ours - ref) <= tol, f"dose {j + 1}: {ours:.2f}% vs R BOIN {ref}% (tolerance {tol:.2f})"
    # mean patients per dose: SD per trial at most ~6 patients, so 4 SE of the difference is below 0.45
    assert np.allclose(oc.patients, R_OC_PATIENTS, atol=0.45)
    assert oc.mean_patients == pytest.approx(30.0, abs=0.05)  # R: 30 (a trial stopped early treats fewer)
    assert oc.stopped_pct <= 0.2  # R: 0.025%


def test_oc_tolerance_tells_scenarios_apart():
    """The same comparison on another scenario fails: the test above can fail."""
    d = Boin(0.3, n_max=30)
    p = np.array([0.05, 0.1, 0.15, 0.3, 0.45])
    oc = _combine([simulate_trials(d, p, 2000, 3, 10, 1, 3)], d, p, 3, 10, 0)
    q = R_OC_SELECT[2] / 100
    tol = 4 * 100 * math.sqrt(q * (1 - q) * (1 / 2000 + 1 / R_OC_TRIALS))
    assert abs(oc.select_pct[2] - R_OC_SELECT[2]) > tol


def test_three_plus_three_selection_matches_its_exact_probability():
    """Two doses, the second always toxic: 3+3 selects dose 1 with probability
    q^3 (q^3 + 3 p q^2) + 3 p q^2 q^3 (0/3 then <= 1 of 3 more after the return from dose 2; or 1/3 then
    0/3), q = 1 - p."""
    p1, trials = 0.2, 6000
    q = 1 - p1
    exact = 100 * (q ** 3 * (q ** 3 + 3 * p1 * q ** 2) + 3 * p1 * q ** 2 * q ** 3)
    d = ThreePlusThree()
    p = np.array([p1, 1.0])
    oc = _combine([simulate_trials(d, p, trials, 3, 10, 1, 5)], d, p, 3, 10, 0)
    assert abs(oc.select_pct[0] - exact) <= 4 * binomial_se_pct(exact, trials)
    assert oc.select_pct[1] == 0


@pytest.mark.parametrize("scenario, words", [
    ([0.1, 0.3, 0.2], "falls from 0.3 at dose 2 to 0.2 at dose 3"),
    ([0.1, 1.2], "dose 2 has DLT probability 1.2, outside"),
    ([-0.1, 0.2], "dose 1 has DLT probability -0.1"),
    ([], "no dose"),
])
def test_bad_scenarios_refused(scenario, words):
    with pytest.raises(DesignError, match=words):
        check_scenario(scenario)


def test_non_monotone_scenario_allowed_on_request():
    assert check_scenario([0.1, 0.3, 0.2], allow_non_monotone=True).tolist() == [0.1, 0.3, 0.2]


# ---------------------------------------------------------------- CLI


def run_cli(capsys, *argv):
    code = main(["design", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_boundaries_boin_prints_r_table(capsys):
    code, out, _ = run_cli(capsys, "boundaries", "--design", "boin", "--target", "0.3", "--cohort-size", "3",
                           "--n-max", "12")
    assert code == 0
    lines = {ln[:27].strip(): ln[27:].split() for ln in out.splitlines() if "#" in ln or "Number" in ln}
    # R BOIN 2.7.2, get.boundary(target = 0.3, ncohort = 4, cohortsize = 3)$boundary_tab
    assert lines["Escalate if # of DLT <="] == ["0", "1", "2", "2"]
    assert lines["Deescalate if # of DLT >="] == ["2", "3", "4", "5"]
    assert lines["Eliminate if # of DLT >="] == ["3", "4", "5", "7"]
    assert "lambda_e = 0.2365" in out and "lambda_d = 0.3585" in out


def test_cli_boundaries_mtpi2_prints_grid(capsys, tmp_path):
    code, out, _ = run_cli(capsys, "boundaries", "--design", "mtpi2", "--target", "0.3", "--cohort-size", "3",
                           "--n-max", "6", "--out", str(tmp_path / "t.csv"))
    assert code == 0 and "E/S/D/DU" not in out and "DU" in out
    assert (tmp_path / "t.csv").read_text().splitlines()[0] == \
        "n,escalate_if_dlt_le,deescalate_if_dlt_ge,eliminate_if_dlt_ge"


def test_cli_next_brief_example(capsys):
    code, out, _ = run_cli(capsys, "next", "--design", "boin", "--target", "0.3", "--doses", "5", "--treated",
                           "3,3,3", "--dlt", "0,1,2", "--current", "3")
    assert code == 0 and out.startswith("de-escalate to dose 2:")


def test_cli_simulate_writes_the_oc_table(capsys, tmp_path):
    out_dir = tmp_path / "oc"
    code, out, _ = run_cli(capsys, "simulate", "--design", "mtpi2", "--target", "0.3", "--scenario",
                           "0.05,0.1,0.3,0.45,0.6", "--trials", "200", "--tasks", "2", "--cohort-size", "3",
                           "--cohorts", "10", "--out", str(out_dir), "--workers", "1", "--quiet")
    assert code == 0, out
    rows = (out_dir / "oc.csv").read_text().splitlines()
    assert rows[0] == "dose,p_true,select_pct,patients,dlts" and len(rows) == 1 + 5 + 2
    assert sum(float(r.split(",")[2]) for r in rows[1:7]) == pytest.approx(100, abs=0.05)
    assert (out_dir / "workload.json").is_file() and len(list((out_dir / "tasks").glob("*.json"))) == 2
    assert "select %" in out
    # the same command again resumes (every task done: nothing rerun); other settings into the folder: refused
    table = (out_dir / "oc.csv").read_text()
    code, _, _ = run_cli(capsys, "simulate", "--design", "mtpi2", "--target", "0.3", "--scenario",
                         "0.05,0.1,0.3,0.45,0.6", "--trials", "200", "--tasks", "2", "--cohort-size", "3",
                         "--cohorts", "10", "--out", str(out_dir), "--workers", "1", "--quiet")
    assert code == 0 and (out_dir / "oc.csv").read_text() == table
    code, _, err = run_cli(capsys, "simulate", "--design", "mtpi2", "--target", "0.3", "--scenario",
                           "0.05,0.1,0.3,0.45,0.6", "--trials", "300", "--tasks", "2", "--out", str(out_dir),
                           "--workers", "1", "--quiet")
    assert code == 2 and "holds the results of another workload (differs in trials)" in err


@pytest.mark.parametrize("argv, words", [
    (["next", "--target", "1.5", "--doses", "3", "--treated", "3", "--dlt", "0", "--current", "1"],
     "target = 1.5"),
    (["next", "--target", "0.3", "--doses", "3", "--treated", "3,3", "--dlt", "0,4", "--current", "2"],
     "dose 2: 4 DLTs in 3 patients treated: more DLTs than patients"),
    (["next", "--target", "0.3", "--doses", "3", "--treated", "3", "--dlt", "0", "--current", "4"],
     "current = 4: not a dose level"),
    (["next", "--target", "0.3", "--doses", "3", "--treated", "3,3", "--dlt", "0", "--current", "1"],
     "treated has 2 value"),
    (["simulate", "--target", "0.3", "--scenario", "0.1,0.4,0.2", "--out", "unused"],
     "falls from 0.4 at dose 2"),
    (["simulate", "--target", "0.3", "--scenario", "0.1,1.4", "--out", "unused"], "outside [0, 1]"),
    (["boundaries", "--design", "mtpi2"], "--target: required"),
    (["simulate", "--target", "0.3", "--scenario", "0.1,0.2", "--seed", "-1", "--out", "unused"],
     "seed = -1: expected a whole number >= 0"),
    (["simulate", "--target", "0.3", "--scenario", "0.1,0.2", "--start-dose", "3", "--out", "unused"],
     "start_dose = 3: not a dose level"),
    (["boundaries", "--design", "mtpi2", "--target", "0.3", "--eps1", "0.4"], "eps1 = 0.4: must lie in"),
])
def test_cli_bad_input_exit_2_with_message(capsys, argv, words):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert words in err and "Traceback" not in err and err.startswith("bayespk design: error:")


def test_cli_design_imports_no_pymc():
    code = ("import sys; from bayespk.cli import main; "
            "main(['design', 'boundaries', '--target', '0.3']); "
            "heavy = sorted(m for m in sys.modules if m.split('.')[0] in {'pymc', 'pytensor'}); "
            "print('HEAVY=' + repr(heavy))")
    r = subprocess.run([sys.executable, "-c", code], check=False, capture_output=True, text=True, timeout=120)
    assert r.returncode == 0, r.stderr
    assert "HEAVY=[]" in r.stdout
