"""Two-drug combination BLRM (bayespk.design.blrm_combination; Neuenschwander et al. 2015).

Checks: (1) with the interaction prior tight at 0 and data on monotherapy doses only, the posterior factorises,
so the combination's mean DLT probability must equal 1 - (1 - E pi_1)(1 - E pi_2) from two separate
single-agent posteriors (bayespk.design.blrm.blrm_posterior) within Monte Carlo error; (2) combination data far
more toxic than independence predicts move eta's posterior above 0; (3) EWOC on the dose grid; (4) bad input
refused with the row named; (5) the importance-sampling posterior (combination_is_posterior) against NUTS on
the same data, with and without its adaptive stage; (6) the one-level no-skipping rule and overdose control on
hand-made data; (7) operating characteristics by simulation select the one target combination of a scenario
most often; (8) `bayespk design next|simulate --design blrm-combination`. Every NUTS data set has 7 rows (the
first has an empty combination row), so one compiled model serves every fit.
"""

import json
import math
import re

import arviz as az
import numpy as np
import pytest

from bayespk.cli import main
from bayespk.design import DesignError
from bayespk.design.blrm import BVNMixture, blrm_posterior
from bayespk.design.blrm_combination import (
    CombinationData,
    check_combination_scenario,
    combination_ewoc,
    combination_is_posterior,
    combination_operating_characteristics,
    combination_posterior,
    grid_counts,
    level_step_ok,
)

D_REF = (4.0, 20.0)
PRIOR = BVNMixture.single((math.log(0.2 / 0.8), 0.0), (2.0, 1.0), 0.0)
MONO = [(1, 0, 3, 0), (2, 0, 3, 0), (4, 0, 6, 1), (0, 10, 3, 0), (0, 20, 6, 1), (0, 40, 3, 1)]


@pytest.fixture(scope="module")
def no_interaction():
    rows = MONO + [(4, 20, 0, 0)]  # an empty combination row (no patient): no information
    return combination_posterior(rows, D_REF, PRIOR, PRIOR, eta_prior=(0.0, 0.01), draws=1000, chains=2, seed=1)


def mcse_mean(x, chains=2):
    return float(az.mcse(np.asarray(x).reshape(chains, -1), method="mean"))


def test_no_interaction_equals_independent_single_agent_posteriors(no_interaction):
    post = no_interaction
    assert post.settings["divergences"] == 0
    a = blrm_posterior([1, 2, 4], D_REF[0], [3, 3, 6], [0, 0, 1], PRIOR, draws=1000, chains=2, seed=2)
    b = blrm_posterior([10, 20, 40], D_REF[1], [3, 6, 3], [0, 1, 1], PRIOR, draws=1000, chains=2, seed=3)
    for d1, d2 in ((4, 20), (2, 40), (8, 10)):
        p = post.pi(d1, d2)
        p1, p2 = a.pi([d1]).reshape(2, -1), b.pi([d2]).reshape(2, -1)
        expected = 1 - (1 - p1.mean()) * (1 - p2.mean())
        se = math.sqrt(mcse_mean(p) ** 2 + mcse_mean(p1) ** 2 + mcse_mean(p2) ** 2)
        assert abs(p.mean() - expected) <= 4.5 * se + 1e-3, (d1, d2, p.mean(), expected, se)
        # and the draws of pi_12 are those of 1 - (1 - pi_1)(1 - pi_2) from the model's own theta draws
        q1 = 1 / (1 + np.exp(-(post.theta1[:, 0] + np.exp(post.theta1[:, 1]) * math.log(d1 / D_REF[0]))))
        q2 = 1 / (1 + np.exp(-(post.theta2[:, 0] + np.exp(post.theta2[:, 1]) * math.log(d2 / D_REF[1]))))
        assert np.allclose(p, 1 - (1 - q1) * (1 - q2), atol=0.01 * 3)  # |eta| < ~0.03 x d1 d2 / refs
    # monotherapy: pi_12(d1, 0) is drug 1's own curve
    assert np.allclose(post.pi(2, 0), 1 / (1 + np.exp(-(post.theta1[:, 0] + np.exp(post.theta1[:, 1])
                                                          * math.log(2 / 4)))))
    assert abs(post.eta.mean()) < 0.01 and post.eta.std() < 0.02


def test_observed_synergy_moves_eta_positive():
    # independence predicts ~0.28 at (4, 20); 7 DLTs in 9 patients there
    rows = MONO + [(4, 20, 9, 7)]
    post = combination_posterior(rows, D_REF, PRIOR, PRIOR, draws=1000, chains=2, seed=4)
    assert post.settings["divergences"] == 0
    assert post.eta.mean() > 0.5 and (post.eta > 0).mean() > 0.95
    assert post.pi(4, 20).mean() > 0.5


def test_ewoc_on_the_combination_grid(no_interaction):
    dec = combination_ewoc(no_interaction, [1, 2, 4, 8], [10, 20, 40], ewoc=0.25, max_step=2)
    tab = dec.table
    assert len(tab) == 12
    assert (tab.eligible == (tab["P(>=0.33)"] < 0.25) & tab.step_ok).all()
    assert tab[(tab.d1 == 8)].step_ok.all()  # 8 = 2 x 4: within the step and tab[(tab.d2 == 40)].step_ok.all()
    assert dec.dose is not None
    row = tab[(tab.d1 == dec.dose[0]) & (tab.d2 == dec.dose[1])].iloc[0]
    assert row.eligible and row["P(0.16-0.33)"] == tab[tab.eligible]["P(0.16-0.33)"].max()
    tight = combination_ewoc(no_interaction, [1, 2, 4, 8, 16], [10, 20, 40], max_step=1.5)
    assert not tight.table[tight.table.d1 == 8].step_ok.any()  # 8 > 1.5 x 4
    assert "P(pi >= 0.33)" in str(dec)


@pytest.mark.parametrize("rows, words", [
    ([(0, 0, 3, 0)], "row 1: d1 = d2 = 0"),
    ([(1, 0, 3, 0), (2, 0, 3, 4)], "row 2: r = 4 DLTs > n = 3 patients"),
    ([(-1, 0, 3, 0)], "row 1: d1 = -1"),
    ([(1, 0, 2.5, 0)], "row 1: n = 2.5 is not a whole number"),
    ([(1, 0, 3)], "row 1: expected (d1, d2, n, r)"),
    ([], "no rows"),
])
def test_bad_combination_data_refused(rows, words):
    with pytest.raises(DesignError, match=re.escape(words)):
        CombinationData.from_rows(rows)


@pytest.mark.parametrize("kwargs, words", [
    (dict(eta_prior=(0, 0)), "eta_prior sd = 0"),
    (dict(d_ref=(4, -1)), "d_ref[2] = -1"),
    (dict(prior1={"mean": [0, 0], "sd": [-1, 1]}), "sds[1][1] = -1"),
])
def test_bad_settings_refused(kwargs, words):
    args = dict(data=MONO, d_ref=D_REF)
    args.update(kwargs)
    with pytest.raises(DesignError, match=re.escape(words)):
        combination_posterior(**args)


# ---------------------------------------------------------------- importance sampling vs NUTS
LARGE = [(1, 0, 30, 2), (4, 0, 30, 8), (0, 10, 30, 3), (0, 40, 30, 12), (2, 20, 30, 9), (4, 20, 30, 15),
         (1, 10, 30, 4)]  # 210 patients: prior draws alone give ESS < 1000, the adaptive stage is needed


def _indicator_se(x, chains=2):
    x = np.asarray(x, dtype=float)
    return float(az.mcse(x.reshape(chains, -1), method="mean")) if x.std() > 0 else 0.0


@pytest.mark.parametrize("rows, stage", [(MONO + [(2, 20, 6, 2)], 0), (LARGE, 1)])
def test_importance_sampling_agrees_with_nuts(rows, stage):
    nuts = combination_posterior(rows, D_REF, PRIOR, PRIOR, draws=1000, chains=2, seed=5)
    assert nuts.settings["divergences"] == 0
    isp = combination_is_posterior(rows, D_REF, PRIOR, PRIOR, draws=20000, min_ess=1000, seed=6)
    st = isp.settings
    assert st["stage"] == stage and st["ess"] >= 1000 and not st["low_ess"]
    assert isp.weights is not None and abs(isp.weights.sum() - 1) < 1e-9
    for d1, d2 in ((1, 10), (2, 20), (4, 20), (2, 40)):
        a, b = nuts.pi(d1, d2), isp.pi(d1, d2)
        w = isp.weights
        for name, fa, fb in (("mean", a, b), ("P(>=0.33)", a >= 0.33, b >= 0.33), ("P(<0.16)", a < 0.16, b < 0.16)):
            va, vb = float(np.mean(fa)), float(w @ fb)
            var_b = float(w**2 @ (np.asarray(fb, float) - vb) ** 2)  # delta-method variance of the IS estimate
            se = math.sqrt(_indicator_se(fa) ** 2 + var_b)
            assert abs(va - vb) <= 4 * se + 0.005, (rows[-1], d1, d2, name, va, vb, se)


def test_importance_sampling_floor_and_settings():
    few = combination_is_posterior(LARGE, D_REF, PRIOR, PRIOR, draws=2000, min_ess=1000, seed=1)
    assert few.settings["stage"] >= 1  # 2000 prior draws: the adaptive stage must run
    none = combination_is_posterior([(1, 10, 0, 0)], D_REF, PRIOR, PRIOR, draws=2000, min_ess=100, seed=1)
    assert none.settings["ess"] == pytest.approx(2000) and none.settings["stage"] == 0  # no data: the prior
    with pytest.raises(DesignError, match=re.escape("min_ess = 3000: must be below draws = 2000")):
        combination_is_posterior(LARGE, D_REF, draws=2000, min_ess=3000)
    with pytest.raises(DesignError, match="draws = 10"):
        combination_is_posterior(LARGE, D_REF, draws=10)


# ---------------------------------------------------------------- decision rules on the grid
def test_level_step_rule():
    given = np.zeros((3, 3), dtype=bool)
    assert level_step_ok(given).tolist() == [[True, False, False], [False, False, False], [False, False, False]]
    given[0, 0] = True
    assert level_step_ok(given).tolist() == [[True, True, False], [True, False, False], [False, False, False]]
    given[1, 0] = given[0, 1] = True  # no diagonal step, no skipping of a level
    assert level_step_ok(given).tolist() == [[True, True, True], [True, True, False], [True, False, False]]


G1, G2 = [1, 2, 4], [10, 20, 40]


def test_decision_no_skipping_and_overdose_control():
    # only (1, 10) given, no DLT: the candidates are (1, 10), (2, 10), (1, 20), whatever the model says above
    post = combination_is_posterior([(1, 10, 3, 0)], D_REF, PRIOR, PRIOR, seed=2)
    dec = combination_ewoc(post, G1, G2, step="level")
    tab = dec.table
    assert tab.step_ok.tolist() == [True, True, False, True, False, False, False, False, False]
    assert dec.dose in {(1.0, 10.0), (2.0, 10.0), (1.0, 20.0)} and "one level above" in dec.reason
    best = tab[tab.eligible]["P(0.16-0.33)"].max()
    assert tab[(tab.d1 == dec.dose[0]) & (tab.d2 == dec.dose[1])]["P(0.16-0.33)"].iloc[0] == best
    # 3 DLTs of 6 at (2, 10): it has the largest P(target) of the combinations within the step, but P(overdose)
    # >= 0.25, so overdose control moves the recommendation to the best combination that passes it
    post = combination_is_posterior([(1, 10, 6, 0), (2, 10, 6, 3)], D_REF, PRIOR, PRIOR, seed=2)
    dec = combination_ewoc(post, G1, G2, step="level")
    tab = dec.table
    within = tab[tab.step_ok]
    top = within.loc[within["P(0.16-0.33)"].idxmax()]
    assert (top.d1, top.d2) == (2, 10) and not top.ewoc_ok
    assert (tab.eligible == tab.ewoc_ok & tab.step_ok).all()
    ok = tab[tab.eligible]
    best = ok.loc[ok["P(0.16-0.33)"].idxmax()]
    assert dec.dose == (best.d1, best.d2) and dec.dose != (2.0, 10.0)
    # 4 DLTs of 6 at (2, 10) after 0 of 3 at (1, 10): no combination passes overdose control, stop
    post = combination_is_posterior([(1, 10, 3, 0), (2, 10, 6, 4)], D_REF, PRIOR, PRIOR, seed=2)
    assert combination_ewoc(post, G1, G2, step="level").dose is None
    # 5 DLTs of 6 at the lowest combination: no combination is acceptable, stop
    post = combination_is_posterior([(1, 10, 6, 5)], D_REF, PRIOR, PRIOR, seed=2)
    dec = combination_ewoc(post, G1, G2, step="level")
    assert dec.dose is None and str(dec).startswith("stop")


def test_data_off_the_grid_refused():
    n, r = grid_counts([(1, 10, 3, 0), (3, 0, 3, 1), (2, 20, 6, 2), (2, 20, 3, 1)], G1, G2)
    assert n[1, 1] == 9 and r[1, 1] == 3 and n.sum() == 12  # the monotherapy row is co-data, off the grid
    with pytest.raises(DesignError, match=re.escape("row 2: d2 = 30 is not a dose of the grid of drug 2")):
        grid_counts([(1, 10, 3, 0), (2, 30, 3, 0)], G1, G2)


# ---------------------------------------------------------------- operating characteristics
CENTRE = [[0.02, 0.05, 0.08], [0.05, 0.25, 0.55], [0.08, 0.55, 0.75]]  # one target combination: (2, 20)


def test_operating_characteristics_select_the_target_combination_most_often(tmp_path):
    oc = combination_operating_characteristics(
        G1, G2, D_REF, CENTRE, PRIOR, PRIOR, trials=30, cohorts=10, seed=3, tasks=1, workers=1, progress=False,
        out=tmp_path / "oc")
    sel = np.asarray(oc.select_pct)
    assert oc.trials == 30 and sel.shape == (3, 3)
    assert sel[1, 1] == sel.max() and sel[1, 1] >= 35
    assert oc.target_select_pct == pytest.approx(sel[1, 1])
    assert oc.overdose_select_pct == pytest.approx(sel[[1, 2, 2], [2, 1, 2]].sum())
    assert sel.sum() + oc.stopped_pct == pytest.approx(100)
    assert np.asarray(oc.patients).sum() == pytest.approx(oc.mean_patients)
    assert 3 <= oc.mean_cohorts <= 10 and oc.mean_patients == pytest.approx(3 * oc.mean_cohorts)
    assert oc.low_ess_pct < 5
    rows = (oc.write_csv(tmp_path / "oc.csv")).read_text().splitlines()
    assert rows[0] == "d1,d2,p_true,select_pct,patients,dlts" and len(rows) == 1 + 9 + 1
    assert "selected %" in str(oc)


@pytest.mark.parametrize("scenario, kwargs, words", [
    ([[0.1, 0.2]], {}, "scenario: 1x2 for 3 doses of drug 1 (rows) x 3 doses of drug 2 (columns)"),
    ([[0.1, 0.2, 1.2], [0.2, 0.3, 0.4], [0.3, 0.4, 0.5]], {}, "scenario[d1 level 1, d2 level 3] = 1.2"),
    ([[0.1, 0.2, 0.3], [0.2, 0.1, 0.4], [0.3, 0.4, 0.5]], {},
     "falls from 0.2 at (d1 level 1, d2 level 2) to 0.1 at (d1 level 2, d2 level 2) as drug 1's dose rises"),
])
def test_bad_scenario_refused(scenario, kwargs, words):
    with pytest.raises(DesignError, match=re.escape(words)):
        check_combination_scenario(scenario, (3, 3), **kwargs)


def test_non_monotone_scenario_allowed_on_request_and_bad_settings_refused():
    p = check_combination_scenario([[0.1, 0.2], [0.3, 0.1]], (2, 2), allow_non_monotone=True)
    assert p.shape == (2, 2)
    for kwargs, words in ((dict(start=(4, 1)), "start[1] = 4: drug 1 has levels 1..3"),
                          (dict(ewoc=1.0), "ewoc = 1"), (dict(trials=0), "trials = 0")):
        with pytest.raises(DesignError, match=re.escape(words)):
            combination_operating_characteristics(G1, G2, D_REF, CENTRE, **kwargs)


# ---------------------------------------------------------------- CLI
def run_cli(capsys, *argv):
    code = main(["design", *argv])
    out, err = capsys.readouterr()
    return code, out, err


NEXT = ["next", "--design", "blrm-combination", "--doses1", "1,2,4,8", "--doses2", "10,20,40", "--dref", "4,20"]


def test_cli_next_combination(capsys, tmp_path):
    data = tmp_path / "rows.csv"
    data.write_text("d1,d2,n,r\n" + "\n".join(",".join(map(str, r)) for r in MONO + [(1, 10, 3, 0)]) + "\n")
    code, out, err = run_cli(capsys, *NEXT, "--data", str(data), "--cohort", "2,10,3,0", "--method", "is")
    assert code == 0, err
    lines = out.splitlines()
    table = [ln.split() for ln in lines if ln.strip() and ln.split()[0] in {"1", "2", "4", "8"}]
    assert len(table) == 12 and table[0][:4] == ["1", "10", "3", "0"] and table[3][:4] == ["2", "10", "3", "0"]
    assert any(ln.startswith("rule: eligible pairs have P(pi >= 0.33) < 0.25") for ln in lines)
    assert lines[-1].startswith("next combination d1 = ") or lines[-1].startswith("stop")
    code, out, err = run_cli(capsys, *NEXT, "--data", str(data), "--cohort", "2,10,3,0", "--method", "is",
                             "--json", "--prior1-mean=-1,0", "--prior1-sd", "1,0.5", "--eta-prior", "0,0.5")
    assert code == 0, err
    d = json.loads(out)
    assert len(d["table"]) == 12 and d["eta_prior"] == [0.0, 0.5] and d["priors"][0]["means"] == [[-1.0, 0.0]]
    assert d["dose"] is None or tuple(d["dose"]) in {(1, 20), (2, 10), (2, 20), (4, 10), (1, 10)}
    row = next(r for r in d["table"] if (r["d1"], r["d2"]) == tuple(d["dose"] or (0, 0))) if d["dose"] else None
    assert row is None or (row["eligible"] and row["P(>=0.33)"] < 0.25)


@pytest.mark.parametrize("extra, words", [
    (["--cohort", "3,10,3,0"], "row 1: d1 = 3 is not a dose of the grid of drug 1 (1, 2, 4, 8)"),
    (["--cohort", "1,10,3,4"], "row 1: r = 4 DLTs > n = 3 patients"),
    (["--cohort", "1,10,-3,0"], "row 1: n = -3 is not a whole number >= 0"),
    (["--cohort", "1,10,3"], "--cohort '1,10,3': expected D1,D2,N,R"),
    (["--cohort", "1,10,3,0", "--prior1-mean", "0,0", "--prior1-sd", "2,0"], "--prior1-sd: value 2 (0) must be > 0"),
    (["--cohort", "1,10,3,0", "--prior2-mean", "0,0", "--prior2-sd", "2,1", "--prior2-corr", "1"],
     "--prior2-corr 1: the correlation must lie in (-1, 1)"),
    (["--cohort", "1,10,3,0", "--eta-prior", "0,-1"], "--eta-prior: the SD (-1) must be > 0"),
    (["--cohort", "1,10,3,0", "--prior", "p.json"], "--prior: for --design blrm; blrm-combination has --prior1"),
    ([], "--data or --cohort: required for --design blrm-combination"),
    (["--cohort", "1,10,3,0", "--treated", "3"], "--treated: not used by --design blrm-combination"),
])
def test_cli_next_combination_refusals(capsys, extra, words):
    code, _, err = run_cli(capsys, *NEXT, "--method", "is", *extra)
    assert code == 2 and words in err and "Traceback" not in err, err


def test_cli_next_combination_bad_grid_and_prior_file(capsys, tmp_path):
    argv = [a if a != "4,20" else "4" for a in NEXT]
    code, _, err = run_cli(capsys, *argv, "--cohort", "1,10,3,0")
    assert code == 2 and "--dref '4': expected the reference doses of drug 1 and drug 2" in err
    argv = [a if a != "10,20,40" else "10,5" for a in NEXT]
    code, _, err = run_cli(capsys, *argv, "--cohort", "1,10,3,0")
    assert code == 2 and "--doses2[2] = 5: doses must be strictly increasing" in err
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps({"mean": [0, 0], "sd": [2, -1]}))
    code, _, err = run_cli(capsys, *NEXT, "--cohort", "1,10,3,0", "--prior2", str(bad))
    assert code == 2 and f"--prior2 {bad}" in err and "sds[1][2] = -1" in err


def test_cli_simulate_combination(capsys, tmp_path):
    scen = tmp_path / "P.csv"
    scen.write_text("# rows: drug 1; columns: drug 2\n" + "\n".join(",".join(map(str, r)) for r in CENTRE) + "\n")
    argv = ["simulate", "--design", "blrm-combination", "--doses1", "1,2,4", "--doses2", "10,20,40", "--dref", "4,20",
            "--scenario-file", str(scen), "--trials", "4", "--cohorts", "4", "--tasks", "1", "--workers", "1",
            "--quiet", "--out", str(tmp_path / "oc")]
    code, out, err = run_cli(capsys, *argv)
    assert code == 0, err
    summary = json.loads((tmp_path / "oc" / "summary.json").read_text())
    assert summary["design"] == "blrm-combination" and summary["trials"] == 4 and summary["scenario"] == CENTRE
    assert len((tmp_path / "oc" / "oc.csv").read_text().splitlines()) == 11 and "selected %" in out
    bad = tmp_path / "bad.csv"
    bad.write_text("0.1,0.2,0.3\n0.2,x,0.4\n0.3,0.4,0.5\n")
    code, _, err = run_cli(capsys, *[a if a != str(scen) else str(bad) for a in argv])
    assert code == 2 and "line 2, column 2: 'x' is not a number" in err
    code, _, err = run_cli(capsys, *[a if a != "1,2,4" else "1,2" for a in argv])
    assert code == 2 and "scenario: 3x3 for 2 doses of drug 1" in err
    code, _, err = run_cli(capsys, *argv, "--scenario", "0.1,0.2")
    assert code == 2 and "--scenario: not used by --design blrm-combination" in err
