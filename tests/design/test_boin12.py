"""BOIN12 (bayespk.design.boin12): desirability, admissibility, next dose, OBD selection, simulation, CLI.

Published reference: Table 3 of Lin R, Zhou Y, Yan F, Li D, Yuan Y (2020), "BOIN12: Bayesian optimal interval
phase I/II trial design for utility-based dose finding in immunotherapy and targeted therapies", JCO Precision
Oncology 4:1393-1402 (phi_T = 0.35, phi_E = 0.25, utilities 100 / 60 / 40 / 0, c_T = 0.95, c_E = 0.9, n = 0, 3,
6, 9): the rank-based desirability scores below, as checked by the R package escalation
(github.com/brockk/escalation, tests/testthat/test_boin12_rds.R, "Recreate Table 3"). The hand-worked decisions
use scipy's Beta distribution directly.
"""

import json
import math
import re

import numpy as np
import pytest
from scipy import stats

from bayespk.cli import main
from bayespk.design import (
    Boin12,
    DesignError,
    Utility,
    boin12_next_dose,
    boin12_operating_characteristics,
    rds_table,
    select_obd,
    simulate_boin12_trials,
)
from bayespk.design.boin12 import _combine
from bayespk.design.simulation import binomial_se_pct

PAPER = Boin12(0.35, 0.25)  # the paper's Table 3 setting

# (n, DLTs, responses): RDS of Table 3 (None: not admissible, "E" in the paper)
TABLE3 = {
    (0, 0, 0): 60,
    (3, 0, 3): 91,
    (6, 1, 5): 87,
    (6, 5, 1): None,
    (9, 0, 8): 99,
    (9, 2, 3): 32.5,
    (9, 5, 5): 32.5,
    (9, 3, 1): 7,
    (9, 4, 0): None,
    (9, 6, 9): None,
}


def test_benchmark_utility_of_the_paper():
    # u_bar = 100 * 0.25 * 0.65 + 60 * 0.25 * 0.35 + 40 * 0.75 * 0.65 + 0 = 41; u_b = 41 + (100 - 41) / 2
    assert PAPER.benchmark == pytest.approx(70.5)
    assert PAPER.desirability(0, 0, 0) == pytest.approx(1 - 0.705)


@pytest.mark.parametrize("key", sorted(TABLE3))
def test_rank_based_desirability_scores_equal_table_3(key):
    rows = {(r["n"], r["dlt"], r["eff"]): r for r in rds_table(PAPER, (0, 3, 6, 9))}
    assert rows[key]["rds"] == TABLE3[key]
    assert rows[key]["admissible"] == (TABLE3[key] is not None)


def test_desirability_is_the_beta_tail_of_the_quasi_events():
    # 9 patients, 2 DLTs, 3 responses: x = (40 * 9 + 60 * 3 - 40 * 2) / 100 = 4.6 quasi-events
    p = stats.beta.sf(0.705, 1 + 4.6, 1 + 9 - 4.6)
    assert PAPER.desirability(9, 2, 3) == pytest.approx(p, rel=1e-12)
    # the same with the joint counts (1 patient with both): 60 * 1 + 100 * 2 + 0 * 1 + 40 * 5 = 460
    assert PAPER.desirability(9, 2, 3, n_both=1) == pytest.approx(p, rel=1e-12)


def test_non_additive_utility_needs_the_joint_counts():
    d = Boin12(0.3, 0.2, Utility(100, 50, 30, 0))  # 50 + 30 != 100 + 0
    assert not d.utility.marginal
    with pytest.raises(DesignError, match="n_both: required"):
        d.desirability(3, 1, 1)
    # x = (50 * 1 + 100 * 0 + 0 * 0 + 30 * 2) / 100 = 1.1 with one patient having both outcomes
    assert d.desirability(3, 1, 1, n_both=1) == pytest.approx(stats.beta.sf(d.benchmark / 100, 2.1, 2.9))
    r = boin12_next_dose(d, 3, [3], [1], [1], current=1, n_both=[1])
    assert r.desirability[0] == pytest.approx(stats.beta.sf(d.benchmark / 100, 2.1, 2.9))


# ---------------------------------------------------------------- hand-worked decisions
def test_good_first_cohort_stays_while_the_untried_dose_scores_lower():
    # 0/3 DLTs, 2/3 responses: 0 <= 3 lambda_e, candidates 1, 2; dose 1: P(Beta(3.4, 1.6) > 0.705) = 0.501,
    # dose 2 (untried) 0.295 -> stay
    r = boin12_next_dose(PAPER, 4, [3], [0], [2], current=1)
    assert (r.action, r.dose) == ("stay", 1)
    assert r.desirability[0] == pytest.approx(stats.beta.sf(0.705, 3.4, 1.6))


def test_poor_efficacy_escalates_to_the_untried_dose():
    # 0/3 DLTs, 0/3 responses: x = 1.2, P(Beta(2.2, 2.8) > 0.705) = 0.06 < 0.295 -> escalate
    r = boin12_next_dose(PAPER, 4, [3], [0], [0], current=1)
    assert (r.action, r.dose) == ("escalate", 2)
    assert r.desirability[0] == pytest.approx(stats.beta.sf(0.705, 2.2, 2.8)) and r.desirability[0] < 0.295


def test_dlt_rate_above_lambda_d_de_escalates():
    # 2/3 DLTs >= 3 lambda_d (lambda_d = 0.419 for target 0.35) -> the dose below, whatever the efficacy
    r = boin12_next_dose(PAPER, 4, [3, 3], [0, 2], [0, 3], current=2)
    assert (r.action, r.dose) == ("de-escalate", 1)
    assert "lambda_d" in r.reason


def test_between_boundaries_with_n_star_patients_does_not_escalate():
    # target 0.35: at n = 6 escalate if # DLT <= 1, de-escalate if >= 3; 2/6 is between and n >= n_star = 6:
    # candidates doses 1 and 2 only, even though dose 3 (untried) would score 0.295
    r = boin12_next_dose(PAPER, 4, [3, 6], [0, 2], [0, 0], current=2)
    x1, x2 = 1.2, (40 * 6 - 40 * 2) / 100
    s1, s2 = stats.beta.sf(0.705, 1 + x1, 4 - x1), stats.beta.sf(0.705, 1 + x2, 7 - x2)
    assert s1 > s2 and max(s1, s2) < 0.295
    assert (r.action, r.dose) == ("de-escalate", 1)
    # with 3 patients (n < n_star) 1/3 is between the boundaries and escalation stays a candidate
    r = boin12_next_dose(PAPER, 4, [3, 3], [0, 1], [0, 0], current=2)
    assert (r.action, r.dose) == ("escalate", 3)


def test_exploration_rule_after_n_explore_patients():
    # 9 patients at dose 2 with 1 DLT and 6 responses: dose 2 scores far above dose 3's prior 0.295, yet dose 3
    # is untried and n >= 9, DLT rate < lambda_d -> explore dose 3
    r = boin12_next_dose(PAPER, 4, [3, 9], [0, 1], [1, 6], current=2)
    assert r.desirability[1] > 0.295
    assert (r.action, r.dose) == ("escalate", 3) and "explore untried dose 3" in r.reason
    r = boin12_next_dose(Boin12(0.35, 0.25, n_explore=12), 4, [3, 9], [0, 1], [1, 6], current=2)
    assert (r.action, r.dose) == ("stay", 2)


def test_toxicity_and_futility_eliminate():
    # 3/3 DLTs at dose 1: P(p > 0.35 | 3/3) = 1 - 0.35^4 = 0.985 > 0.95 -> every dose eliminated, stop
    r = boin12_next_dose(PAPER, 3, [3], [3], [3], current=1)
    assert r.action == "stop" and r.dose is None and r.eliminated == (1, 2, 3) and r.obd is None
    # 0/9 responses at dose 1: P(p_eff < 0.25 | 0/9) = 1 - 0.75^10 = 0.944 > 0.9 -> dose 1 futile, dose 2 next
    assert stats.beta.cdf(0.25, 1, 10) > 0.9
    r = boin12_next_dose(PAPER, 3, [9], [0], [0], current=1)
    assert r.eliminated == (1,) and r.desirability[0] == 0 and (r.action, r.dose) == ("escalate", 2)
    # futile dose 2 with a tolerable dose 1 and a toxic dose 3: back to dose 1
    r = boin12_next_dose(PAPER, 3, [3, 9, 3], [0, 1, 3], [2, 0, 2], current=2)
    assert r.eliminated == (2, 3) and (r.action, r.dose) == ("de-escalate", 1)


def test_n_earlystop_stops_and_selects():
    d = Boin12(0.35, 0.25, n_earlystop=9)
    r = boin12_next_dose(d, 3, [3, 9], [0, 2], [1, 5], current=2)
    assert r.action == "stop" and "n_earlystop" in r.reason and r.obd == 2


@pytest.mark.parametrize("kwargs, words", [
    (dict(n_treated=[3], n_tox=[4], n_eff=[0]), "dose 1: 4 DLTs in 3 patients treated"),
    (dict(n_treated=[3, 3], n_tox=[0, 0], n_eff=[1, 5]), "dose 2: 5 efficacy responses in 3 patients"),
    (dict(n_treated=[3], n_tox=[-1], n_eff=[0]), "dlt[dose 1] = -1"),
    (dict(n_treated=[3, 3], n_tox=[0], n_eff=[1, 1]), "one value of each per dose"),
    (dict(n_treated=[3], n_tox=[2], n_eff=[2], n_both=[3]), "both = 3 does not fit"),
])
def test_bad_data_refused(kwargs, words):
    with pytest.raises(DesignError, match=re.escape(words)):
        boin12_next_dose(PAPER, 3, current=1, **kwargs)


@pytest.mark.parametrize("build, words", [
    (lambda: Boin12(1.2, 0.25), "target = 1.2"),
    (lambda: Boin12(0.3, -0.1), "eff_min = -0.1"),
    (lambda: Boin12(0.3, 0.2, Utility(100, 120, 40, 0)), "utility.eff_tox = 120"),
    (lambda: Boin12(0.3, 0.2, Utility(100, 60, -5, 0)), "utility.no_eff_no_tox = -5"),
    (lambda: Utility.from_sequence([100, 60, 40]), "expected 4 values"),
    (lambda: Boin12(0.3, 0.2, cutoff_eff=1.2), "cutoff_eff = 1.2"),
])
def test_bad_settings_refused(build, words):
    with pytest.raises(DesignError, match=re.escape(words)):
        build()


def test_current_dose_must_be_treated():
    with pytest.raises(DesignError, match="current = 2: no patient treated"):
        boin12_next_dose(PAPER, 3, [3], [0], [1], current=2)


# ---------------------------------------------------------------- differential check against escalation's logic
# 60 random data sets (4 doses, no dose eliminated: where the R package escalation and the authors' code agree) and
# the next dose given by a base-R transcription of the decision logic of the R package escalation
# (github.com/brockk/escalation, R/boin12_logic.R: boin12_admissible, boin12_pbenchmark, boin12_next_dose; lambda_e
# and lambda_d from BOIN::get.boundary's formulas), run with Rscript (R 4.x) for phi_T = 0.35, phi_E = 0.25,
# utilities 100 / 60 / 40 / 0. Columns: treated, DLTs, responses (per dose, ";"-separated), current dose, next dose.
# (300 such cases agreed; 60 are kept here, 10 per kind of move and per n_max >= 9 or not.)
ESCALATION_R_CASES = [
    ("12;6;3;3", "0;0;0;0", "4;0;0;2", 2, 1),
    ("3;9;6;6", "0;1;0;0", "0;4;2;2", 1, 2),
    ("9;3;12;3", "2;1;3;1", "7;0;8;1", 2, 1),
    ("3;9;6;0", "0;4;4;0", "3;5;5;0", 3, 2),
    ("3;9;6;3", "0;4;1;1", "0;3;0;0", 1, 1),
    ("0;3;12;6", "0;2;2;2", "0;2;5;3", 2, 1),
    ("3;6;0;0", "0;3;0;0", "1;1;0;0", 1, 1),
    ("3;12;3;12", "1;4;1;6", "2;6;3;9", 1, 1),
    ("3;6;9;6", "0;1;0;1", "3;6;9;5", 3, 3),
    ("0;3;3;0", "0;0;0;0", "0;0;2;0", 2, 3),
    ("0;6;6;3", "0;4;4;1", "0;1;1;1", 3, 2),
    ("3;3;12;3", "0;0;2;1", "1;2;7;2", 1, 2),
    ("0;3;3;3", "0;0;0;0", "0;1;3;3", 2, 3),
    ("0;0;12;3", "0;0;4;1", "0;0;4;2", 4, 4),
    ("6;3;6;6", "3;0;3;4", "5;2;3;3", 2, 2),
    ("6;6;6;3", "0;2;1;0", "2;3;2;2", 3, 4),
    ("12;3;0;6", "2;1;0;0", "9;0;0;5", 4, 4),
    ("0;3;3;6", "0;0;1;0", "0;2;3;5", 4, 4),
    ("9;3;0;6", "1;0;0;1", "4;1;0;4", 4, 4),
    ("9;0;3;0", "2;0;2;0", "2;0;1;0", 3, 2),
    ("12;0;3;3", "0;0;0;0", "5;0;1;1", 4, 4),
    ("3;3;3;12", "0;0;0;0", "1;0;2;4", 1, 1),
    ("3;6;6;3", "2;2;2;1", "1;4;2;2", 2, 2),
    ("3;6;3;3", "2;4;1;2", "0;2;2;1", 4, 3),
    ("3;6;6;3", "0;0;4;0", "1;1;2;2", 2, 1),
    ("9;3;0;9", "1;2;0;2", "5;2;0;6", 2, 1),
    ("9;9;3;6", "1;1;1;2", "2;5;2;3", 3, 2),
    ("0;6;0;6", "0;1;0;1", "0;3;0;3", 2, 3),
    ("3;12;0;3", "0;1;0;0", "0;4;0;2", 1, 2),
    ("3;12;6;6", "1;4;3;3", "3;8;3;5", 2, 1),
    ("3;0;0;12", "0;0;0;0", "0;0;0;1", 1, 2),
    ("3;6;0;6", "1;0;0;3", "2;3;0;0", 1, 2),
    ("6;6;3;12", "2;0;2;5", "2;3;2;3", 4, 3),
    ("0;0;0;3", "0;0;0;1", "0;0;0;1", 4, 3),
    ("9;3;0;6", "2;1;0;0", "1;2;0;1", 2, 2),
    ("6;0;9;3", "0;0;0;0", "4;0;5;1", 4, 3),
    ("0;3;3;0", "0;1;1;0", "0;2;3;0", 2, 3),
    ("3;3;6;3", "1;1;1;1", "1;0;1;1", 1, 1),
    ("3;0;3;3", "0;0;2;2", "0;0;1;1", 4, 3),
    ("12;6;0;9", "0;2;0;1", "8;3;0;6", 1, 1),
    ("0;0;0;3", "0;0;0;0", "0;0;0;1", 4, 3),
    ("3;0;3;6", "1;0;0;2", "2;0;1;3", 1, 1),
    ("0;0;3;6", "0;0;0;0", "0;0;0;3", 4, 4),
    ("3;3;3;6", "1;2;1;2", "3;0;0;3", 4, 4),
    ("6;3;6;0", "1;0;2;0", "3;2;2;0", 2, 2),
    ("3;6;6;3", "0;1;0;0", "0;0;0;1", 1, 1),
    ("3;0;0;6", "1;0;0;0", "0;0;0;0", 1, 2),
    ("3;0;6;3", "2;0;1;2", "0;0;0;3", 3, 4),
    ("3;0;0;3", "0;0;0;1", "1;0;0;2", 1, 2),
    ("0;9;9;6", "0;0;0;0", "0;5;6;1", 2, 3),
    ("0;0;3;0", "0;0;1;0", "0;0;0;0", 3, 4),
    ("6;0;3;3", "0;0;1;0", "4;0;1;1", 3, 2),
    ("3;3;3;3", "0;2;2;1", "2;1;2;0", 4, 3),
    ("12;9;12;0", "4;0;4;0", "7;4;9;0", 3, 4),
    ("6;0;3;6", "1;0;1;1", "0;0;1;0", 3, 2),
    ("9;0;3;3", "0;0;0;2", "2;0;2;0", 1, 2),
    ("3;0;3;3", "1;0;0;2", "2;0;3;2", 4, 3),
    ("3;0;9;0", "1;0;0;0", "0;0;5;0", 1, 2),
    ("6;9;0;0", "3;2;0;0", "3;4;0;0", 2, 3),
    ("3;12;0;3", "0;0;0;0", "1;7;0;2", 1, 2),
]


@pytest.mark.parametrize("n, yt, ye, current, expected", ESCALATION_R_CASES)
def test_next_dose_agrees_with_the_r_package_escalation(n, yt, ye, current, expected):
    def ints(s):
        return [int(v) for v in s.split(";")]

    r = boin12_next_dose(PAPER, 4, ints(n), ints(yt), ints(ye), current)
    assert r.dose == expected, r.reason


# ---------------------------------------------------------------- OBD selection
def test_obd_is_the_best_utility_at_or_below_the_mtd():
    # DLT rates 0/6, 1/9, 2/9, 4/6: MTD (closest to 0.35 after PAVA) = dose 3; responses 1/6, 6/9, 5/9, 5/6:
    # dose 4 has the best efficacy but is above the MTD; dose 2 has the best estimated utility at or below it
    n, yt, ye = [6, 9, 9, 6], [0, 1, 2, 4], [1, 6, 5, 5]
    assert select_obd(PAPER, n, yt, ye) == 2
    pt = (np.array(yt) + 0.05) / (np.array(n) + 0.1)
    pe = (np.array(ye) + 0.05) / (np.array(n) + 0.1)
    u = 60 * pe + 40 * (1 - pt)  # utility with u11 + u00 = 100 (monotone rates: PAVA changes nothing)
    assert int(np.argmax(u[:3])) + 1 == 2
    # no dose tolerable: none selected
    assert select_obd(PAPER, [3, 0], [3, 0], [1, 0]) is None


# ---------------------------------------------------------------- simulation
def exact_two_cohort_selection(design, pt, pe, m=3):
    """Exact selection probabilities of a 2-cohort trial (cohorts of m, start at dose 1) by enumerating the
    outcomes (independent toxicity and efficacy), using the public next-dose and OBD functions."""
    J = len(pt)
    out = np.zeros(J + 1)  # last: no selection

    def outcomes(p_t, p_e):
        for a in range(m + 1):  # both
            for b in range(m + 1 - a):  # tox only
                for c in range(m + 1 - a - b):  # eff only
                    k = m - a - b - c
                    pr = math.factorial(m) / (math.factorial(a) * math.factorial(b) * math.factorial(c)
                                              * math.factorial(k))
                    pr *= (p_t * p_e) ** a * (p_t * (1 - p_e)) ** b * ((1 - p_t) * p_e) ** c
                    pr *= ((1 - p_t) * (1 - p_e)) ** k
                    yield pr, a + b, a + c

    for p1, t1, e1 in outcomes(pt[0], pe[0]):
        n, yt, ye = [m] + [0] * (J - 1), [t1] + [0] * (J - 1), [e1] + [0] * (J - 1)
        r = boin12_next_dose(design, J, n, yt, ye, current=1)
        if r.action == "stop":
            out[J] += p1
            continue
        d = r.dose - 1
        for p2, t2, e2 in outcomes(pt[d], pe[d]):
            n2, yt2, ye2 = list(n), list(yt), list(ye)
            n2[d] += m
            yt2[d] += t2
            ye2[d] += e2
            r2 = boin12_next_dose(design, J, n2, yt2, ye2, current=d + 1)
            obd = None if r2.action == "stop" else select_obd(design, n2, yt2, ye2)
            out[J if obd is None else obd - 1] += p1 * p2
    return 100 * out


def test_simulated_selection_matches_exact_enumeration_of_short_trials():
    pt, pe = [0.1, 0.3, 0.6], [0.2, 0.5, 0.6]
    exact = exact_two_cohort_selection(PAPER, pt, pe)
    assert exact.sum() == pytest.approx(100)
    trials = 6000
    sums = simulate_boin12_trials(PAPER, pt, pe, trials, cohort_size=3, cohorts=2, seed=3)
    sim = 100 * np.append(sums["selected"], sums["none"]) / trials
    for j, (a, b) in enumerate(zip(sim, exact)):
        assert abs(a - b) <= 4 * binomial_se_pct(b, trials) + 0.05, (j, a, b)


def test_operating_characteristics_through_the_runner_pick_the_obd():
    """Scenario: toxicity 0.05, 0.10, 0.20, 0.45, 0.60, efficacy 0.10, 0.35, 0.60, 0.62, 0.65; target 0.35,
    eff_min 0.25. True utilities (60 p_E + 40 (1 - p_T)): 44, 57, 68, 59.2, 55; the OBD is dose 3. Stated
    tolerance: with 1200 trials the OBD is selected in at least 45% of trials (its selection SE is ~1.4
    points) and more often than any other dose; doses above the target are selected in less than 20%."""
    pt, pe = [0.05, 0.10, 0.20, 0.45, 0.60], [0.10, 0.35, 0.60, 0.62, 0.65]
    oc = boin12_operating_characteristics(PAPER, pt, pe, trials=1200, cohorts=10, seed=2, tasks=2, workers=1,
                                          progress=False)
    assert oc.true_obd == 3 and oc.trials == 1200
    assert oc.true_utility == pytest.approx([44.0, 57.0, 68.0, 59.2, 55.0])
    assert oc.obd_select_pct >= 45 and int(np.argmax(oc.select_pct)) == 2
    assert oc.overdose_select_pct < 20
    assert sum(oc.select_pct) + oc.stopped_pct == pytest.approx(100)
    assert oc.mean_patients == pytest.approx(30, abs=0.5)
    # the same sums combined in-process give the same table (the runner adds nothing)
    again = _combine([simulate_boin12_trials(PAPER, pt, pe, 600, 3, 10, 1, np.random.SeedSequence(2, spawn_key=(i,)))
                      for i in range(2)], PAPER, np.array(pt), np.array(pe), 3, 10, 0)
    assert again.select_pct == pytest.approx(oc.select_pct)


@pytest.mark.parametrize("pt, pe, words", [
    ([0.1, 0.3], [0.2, 1.3], "p_eff: dose 2 has efficacy probability 1.3"),
    ([0.1, 0.3, 0.2], [0.2, 0.3, 0.4], "p_tox: DLT probability falls"),
    ([0.1, 0.3], [0.2], "p_eff has 1 values and p_tox 2"),
])
def test_bad_scenarios_refused(pt, pe, words):
    with pytest.raises(DesignError, match=re.escape(words)):
        boin12_operating_characteristics(PAPER, pt, pe, trials=10)


# ---------------------------------------------------------------- CLI
def run_cli(capsys, *argv):
    code = main(["design", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_next_boin12(capsys):
    code, out, _ = run_cli(capsys, "next", "--design", "boin12", "--target", "0.35", "--eff-min", "0.25",
                           "--doses", "4", "--treated", "3,9", "--dlt", "0,1", "--eff", "1,6", "--current", "2",
                           "--json")
    assert code == 0
    r = json.loads(out)
    assert (r["action"], r["dose"]) == ("escalate", 3) and r["benchmark"] == pytest.approx(70.5)
    code, out, _ = run_cli(capsys, "next", "--design", "boin12", "--target", "0.35", "--eff-min", "0.25",
                           "--doses", "4", "--treated", "3", "--dlt", "0", "--eff", "2", "--current", "1")
    assert code == 0 and out.startswith("stay at dose 1") and "desirability" in out


def test_cli_simulate_boin12(capsys, tmp_path):
    out_dir = tmp_path / "oc"
    code, out, _ = run_cli(capsys, "simulate", "--design", "boin12", "--target", "0.35", "--eff-min", "0.25",
                           "--scenario", "0.05,0.1,0.2,0.45", "--scenario-eff", "0.1,0.35,0.6,0.62",
                           "--trials", "100", "--tasks", "1", "--out", str(out_dir), "--workers", "1", "--quiet")
    assert code == 0, out
    rows = (out_dir / "oc.csv").read_text().splitlines()
    assert rows[0].startswith("dose,p_tox,p_eff,utility,select_pct") and len(rows) == 1 + 4 + 1
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["true_obd"] == 3 and summary["design"] == "boin12"


@pytest.mark.parametrize("argv, words", [
    (["next", "--design", "boin12", "--target", "0.35", "--doses", "3", "--treated", "3", "--dlt", "0",
      "--eff", "1", "--current", "1"], "--eff-min: required"),
    (["next", "--design", "boin12", "--target", "0.35", "--eff-min", "0.25", "--doses", "3", "--treated", "3",
      "--dlt", "0", "--current", "1"], "--eff: required"),
    (["next", "--design", "boin12", "--target", "0.35", "--eff-min", "0.25", "--doses", "3", "--treated", "3",
      "--dlt", "0", "--eff", "4", "--current", "1"], "dose 1: 4 efficacy responses in 3 patients"),
    (["next", "--design", "boin12", "--target", "0.35", "--eff-min", "0.25", "--utility", "100,60,40,101",
      "--doses", "3", "--treated", "3", "--dlt", "0", "--eff", "1", "--current", "1"], "utility.no_eff_tox = 101"),
    (["simulate", "--design", "boin12", "--target", "0.35", "--eff-min", "0.25", "--scenario", "0.1,0.2",
      "--out", "unused"], "--scenario-eff: required"),
    (["next", "--design", "boin", "--target", "0.3", "--doses", "3", "--treated", "3", "--dlt", "0", "--eff",
      "1", "--current", "1"], "--eff: only for --design boin12"),
])
def test_cli_boin12_bad_input_exit_2(capsys, argv, words):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2
    assert words in err and "Traceback" not in err
