"""Regimen simulation for dose selection: dose records, exact predictions, exposure metrics,
target attainment, overlap, virtual populations and the ``bayespk simulate`` command.

Exact checks use "fixed" fits: a Fit whose posterior holds the same parameter values in
every draw and no IIV (omega = 0), so every simulated subject has the typical parameters
and the curves can be written down by hand. One tiny real fit (12 simulated subjects,
2 chains x 100 draws) serves the population, covariate and CLI tests.
"""

from __future__ import annotations

import io
import json
import math
import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import xarray as xr

import bayespk as bpk
from bayespk.cli import EXIT_USER_ERROR, main
from bayespk.errors import SpecError
from bayespk.fit import Fit
from bayespk.simulate import (
    Regimen,
    RegimenSimulation,
    Step,
    Target,
    interval_metrics,
    overlap_coefficient,
    prob_greater,
    read_regimen_file,
    simulate_regimens,
    steady_state_profile,
    virtual_subjects,
)
from bayespk.simulate.study import simulate_observations, study_design
from bayespk.structural import STRUCTURES


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


# ---------------------------------------------------------------------- dose records
def test_rows_loading_titration_infusion():
    r = Regimen("L", dose=400, ii=12, n=14, loading=(800, 800, 600))
    rows = r.rows("1cmt_oral")
    assert rows[["TIME", "AMT", "II", "ADDL", "CMT"]].values.tolist() == [
        [0.0, 800.0, 12.0, 1.0, 1.0],  # two equal loading doses: one record with ADDL=1
        [24.0, 600.0, 0.0, 0.0, 1.0],
        [36.0, 400.0, 12.0, 13.0, 1.0],  # maintenance: one record, ADDL 13
    ]
    assert (rows.EVID == 1).all() and (rows.MDV == 1).all() and (rows.RATE == 0).all()
    assert r.last_interval == (36.0 + 13 * 12, 36.0 + 14 * 12)

    t = Regimen("T", dose=400, ii=24, n=14, titration=(Step(100, 24, 7), Step(200, 24, 7)))
    rows = t.rows("1cmt_oral")
    assert rows[["TIME", "AMT", "II", "ADDL"]].values.tolist() == [
        [0.0, 100.0, 24.0, 6.0], [168.0, 200.0, 24.0, 6.0], [336.0, 400.0, 24.0, 13.0]]
    times, amts = t.dose_times()
    assert len(times) == 28 and times[-1] == 336 + 13 * 24 and amts.sum() == 700 + 1400 + 5600
    gap = Regimen("G", dose=50, ii=12, n=2, titration=[{"dose": 10, "ii": 12, "n": 2, "start": 48}])
    assert gap.rows("1cmt_iv").TIME.tolist() == [48.0, 72.0]

    inf = Regimen("I", dose=500, ii=8, n=3, tinf=0.5, loading=1000)
    rows = inf.rows("1cmt_oral")  # infusions go to the central compartment by default
    assert rows.RATE.tolist() == [2000.0, 1000.0] and (rows.CMT == 2).all()
    assert Regimen("P", dose=5, ii=12, n=2).rows("1cmt_iv").CMT.tolist() == [1.0]
    assert Regimen("C", dose=5, ii=12, n=2, route="central").rows("1cmt_oral").CMT.tolist() == [2.0]
    assert Regimen("S", dose=5, ii=12).rows("1cmt_iv")[["II", "ADDL"]].values.tolist() == [[0.0, 0.0]]
    assert Regimen("W", dose=5, ii=12, n=2, per="wt").rows("1cmt_iv", scale=2.5).AMT.tolist() == [12.5]


def test_regimen_errors_name_the_key():
    with pytest.raises(SpecError, match="route=depot, but structure 1cmt_iv has no depot"):
        Regimen("x", dose=1, ii=12, route="depot").rows("1cmt_iv")
    with pytest.raises(SpecError, match="into the central compartment"):
        Regimen("x", dose=1, ii=12, tinf=1, route="depot")
    with pytest.raises(SpecError, match="dose=-1"):
        Regimen("x", dose=-1, ii=12)
    with pytest.raises(SpecError, match="n=2.5 must be a whole number"):
        Regimen("x", dose=1, ii=12, n=2.5)
    with pytest.raises(SpecError, match="titration step 2 starts at 10"):
        Regimen("x", dose=1, ii=12, titration=[Step(1, 12, 2), Step(1, 12, 1, start=10)])
    with pytest.raises(SpecError, match="tinf=13 is longer than the dosing interval"):
        Regimen("x", dose=1, ii=12, tinf=13)


def test_parse_compact_text():
    r = Regimen.parse("400q12x14,loading=800+600,tinf=0.5,route=central,per=WT")
    assert (r.label, r.dose, r.ii, r.n, r.loading, r.tinf, r.route, r.per) == \
        ("400q12x14", 400, 12, 14, (800, 600), 0.5, "central", "WT")
    r = Regimen.parse("label=t, dose=400, ii=24, n=7, titration=100q24x7>200q24x7@200")
    assert r.titration == (Step(100, 24, 7), Step(200, 24, 7, 200.0))
    assert Regimen.parse("dose=5,ii=8").label == "5q8x1"
    assert Regimen.parse("5q8x3,loading=10").label == "5q8x3"
    for text, match in [("400q12x14,dos=3", "unknown key 'dos'"), ("label=a,ii=12", "missing key 'dose'"),
                        ("400q12x14,dose=3", "key 'dose' given twice"), ("400q12,n=abc", "n='abc' is not a number"),
                        ("400q12,route=iv", "route='iv'"), ("400q12,titration=100x7", "titration step 1"),
                        ("400q12,800", "is not KEY=VALUE")]:
        with pytest.raises(SpecError, match=match):
            Regimen.parse(text)


def test_regimen_file(tmp_path):
    p = tmp_path / "reg.toml"
    p.write_text("""
[[regimen]]
label = "titrate"
dose = 400
ii = 24
n = 14
titration = [{ dose = 100, ii = 24, n = 7 }, { dose = 200, ii = 24, n = 7 }]

[[regimen]]
dose = 400
ii = 24
n = 14
loading = [800]

[covariates]
WT = ["lognormal", 70, 0.25]
""")
    doc = read_regimen_file(p)
    a, b = doc["regimens"]
    assert a.titration == (Step(100, 24, 7), Step(200, 24, 7)) and a.last_interval == (336 + 13 * 24, 336 + 14 * 24)
    assert b.label == "L800>400q24x14" and b.loading == (800,)
    assert doc["covariates"] == {"WT": ["lognormal", 70, 0.25]}
    p.write_text("[[regimen]]\ndose = 4\nii = 12\nfrequency = 2\n")
    with pytest.raises(SpecError, match="unknown key 'frequency'"):
        read_regimen_file(p)


# ---------------------------------------------------------------------- metrics on known curves
def test_interval_metrics_on_a_known_curve():
    t = np.linspace(0, 10, 2001)
    c = 10 * np.exp(-0.1 * t)
    m = interval_metrics(t, c, 0, 10, threshold=5)
    assert m["Cmax"] == 10 and m["Tmax"] == 0 and m["Cmin"] == pytest.approx(10 * math.exp(-1))
    assert m["Ctrough"] == m["Cmin"]
    assert m["AUC"] == pytest.approx(100 * (1 - math.exp(-1)), rel=1e-6)
    assert m["T_above"] == pytest.approx(math.log(2) / 0.1, abs=1e-6)  # crossing by interpolation
    assert m["f_above"] == pytest.approx(math.log(2))
    # a sub-interval, a peak inside it, and curves stacked along leading axes
    tri = np.minimum(t, 10 - t)  # peak 5 at t = 5
    m = interval_metrics(t, np.stack([tri, 2 * tri]), 2, 8, threshold=4)
    np.testing.assert_allclose(m["Cmax"], [5, 10])
    np.testing.assert_allclose(m["Tmax"], [3, 3])
    np.testing.assert_allclose(m["Cmin"], [2, 4])
    np.testing.assert_allclose(m["AUC"], [21, 42])
    np.testing.assert_allclose(m["T_above"], [2, 6], atol=1e-9)  # |t - 5| <= 1, and |t - 5| <= 3
    assert np.isnan(interval_metrics(t, c, 0, 10)["T_above"])


def test_steady_state_fold_is_exact_for_one_compartment():
    tau, m, K, k, ka, V = 12.0, 120, 6, 0.1, 1.3, 30.0
    s = np.arange((K + 1) * m + 1) * tau / m
    bolus = 100 / V * np.exp(-k * s)
    css, ok = steady_state_profile(bolus, m, K)
    np.testing.assert_allclose(css, 100 / V * np.exp(-k * s[: m + 1]) / (1 - np.exp(-k * tau)), rtol=1e-12)
    assert ok
    oral = 100 * ka / (V * (ka - k)) * (np.exp(-k * s) - np.exp(-ka * s))
    css, _ = steady_state_profile(oral, m, K)
    exact = 100 * ka / (V * (ka - k)) * (np.exp(-k * s[: m + 1]) / (1 - np.exp(-k * tau))
                                         - np.exp(-ka * s[: m + 1]) / (1 - np.exp(-ka * tau)))
    np.testing.assert_allclose(css, exact, rtol=1e-7)
    rising = np.linspace(0, 1, (K + 1) * m + 1)  # never declines: no steady state
    assert not steady_state_profile(rising, m, K)[1]


# ---------------------------------------------------------------------- exact simulations
def fixed_fit(structure: str, values: dict, n_draws: int = 3, covariates=(), data_cov=None) -> Fit:
    """A Fit whose posterior is ``values`` in every draw (no IIV), on a one-subject dataset."""
    params = {p: {"guess": 1.0, "iiv": False} for p in STRUCTURES[structure].parameters}
    spec = bpk.Spec.from_dict({"model": {"structure": structure}, "parameters": params,
                               "covariates": list(covariates), "error": {"model": "proportional"}})
    rows = pd.DataFrame([dict(ID=1, TIME=0.0, AMT=100.0, DV=np.nan, EVID=1, MDV=1, **(data_cov or {})),
                         dict(ID=1, TIME=1.0, AMT=np.nan, DV=1.0, EVID=0, MDV=0, **(data_cov or {}))])
    model = bpk.PopulationModel(spec, rows)
    post = xr.Dataset({k: (("chain", "draw"), np.full((1, n_draws), v)) for k, v in values.items()},
                      coords={"chain": [0], "draw": np.arange(n_draws)})
    records = model.data.table.reset_index(drop=True).rename_axis("row")
    tree = xr.DataTree(children={"posterior": xr.DataTree(post),
                                 "records": xr.DataTree(xr.Dataset.from_dataframe(records))})
    return Fit(tree, model.spec)


def one_cmt(t, doses, cl, v, ka=None, tinf=0.0):
    """By hand: superposed one-compartment curves for doses [(time, amount)]."""
    k = cl / v
    c = np.zeros_like(t)
    for td, a in doses:
        dt = t - td
        on = dt >= 0
        if ka is not None:
            c += np.where(on, a * ka / (v * (ka - k)) * (np.exp(-k * dt) - np.exp(-ka * dt)), 0)
        elif tinf > 0:
            rate = a / tinf
            c += np.where(on, rate / cl * (np.exp(-k * np.maximum(dt - tinf, 0)) - np.exp(-k * dt)), 0)
        else:
            c += np.where(on, a / v * np.exp(-k * dt), 0)
    return c


def test_oral_regimen_matches_closed_form_and_auc_ss():
    cl, v, ka = 2.0, 30.0, 1.3
    fit = fixed_fit("1cmt_oral", {"CL": cl, "V": v, "KA": ka, "sigma_prop": 0.1})
    r = Regimen("load", dose=100, ii=12, n=5, loading=(250,))
    sim = simulate_regimens(fit, [r], population="virtual", n_subjects=2, n_draws=3, threshold=3.0,
                            progress=False)
    conc = sim.concentrations["load"]
    times, amts = r.dose_times()
    by_hand = one_cmt(conc.time.values, list(zip(times, amts)), cl, v, ka)
    np.testing.assert_allclose(conc.values, np.broadcast_to(by_hand, conc.shape), rtol=1e-9, atol=1e-12)
    # metrics: the last interval [60, 72] on a grid of 0.1
    assert sim.info["intervals"]["load"] == [60.0, 72.0] and sim.grid_step("load", "AUC") == pytest.approx(0.1)
    t_fine = np.linspace(60, 72, 120001)
    c_fine = one_cmt(t_fine, list(zip(times, amts)), cl, v, ka)
    m = {k: sim.values("load", k) for k in ("Cmax", "Cmin", "Ctrough", "AUC", "T_above")}
    np.testing.assert_allclose(m["Cmax"], c_fine.max(), rtol=2e-4)
    np.testing.assert_allclose(m["Cmin"], c_fine.min(), rtol=1e-9)
    np.testing.assert_allclose(m["Ctrough"], c_fine[-1], rtol=1e-9)
    np.testing.assert_allclose(m["AUC"], np.trapezoid(c_fine, t_fine), rtol=1e-4)
    np.testing.assert_allclose(m["T_above"], (c_fine >= 3).mean() * 12, atol=2e-3)
    # steady state of the maintenance dose: AUC over one interval = F * dose / CL (F = 1 here)
    assert sim.info["ss_method"] == "record"  # an SS=1 record through the model layer
    np.testing.assert_allclose(sim.values("load", "AUC_ss"), 100 / cl, rtol=1e-4)
    k = cl / v
    trough_ss = 100 * ka / (v * (ka - k)) * (np.exp(-k * 12) / (1 - np.exp(-k * 12))
                                              - np.exp(-ka * 12) / (1 - np.exp(-ka * 12)))
    np.testing.assert_allclose(sim.values("load", "Ctrough_ss"), trough_ss, rtol=1e-7)
    # the superposition fold of a single-dose curve gives the same steady state
    fold = simulate_regimens(fit, [r], population="virtual", n_subjects=2, n_draws=3, threshold=3.0,
                             ss_method="fold", progress=False)
    for name in ("AUC_ss", "Cmax_ss", "Cmin_ss", "Ctrough_ss", "T_above_ss"):
        np.testing.assert_allclose(fold.values("load", name), sim.values("load", name), rtol=1e-7, err_msg=name)


def test_infusion_and_per_weight_dosing():
    cl, v = 0.5, 10.0
    fit = fixed_fit("1cmt_iv", {"CL": cl, "V": v, "sigma_prop": 0.1},
                    covariates=[{"parameter": "CL", "column": "WT", "effect": "power", "reference": 1.0,
                                 "coefficient": 0.0}], data_cov={"WT": 1.0})
    r = Regimen("inf", dose=10, ii=24, n=3, tinf=2.0, per="WT")
    sim = simulate_regimens(fit, r, population="virtual", n_subjects=3, covariates={"WT": [1.0, 2.0, 4.0]},
                            n_draws=2, progress=False)
    conc = sim.concentrations["inf"]
    for i, wt in enumerate([1.0, 2.0, 4.0]):  # CL does not depend on WT (exponent 0): dose scales the curve
        by_hand = one_cmt(conc.time.values, [(0, 10 * wt), (24, 10 * wt), (48, 10 * wt)], cl, v, tinf=2.0)
        np.testing.assert_allclose(conc.values[i], np.broadcast_to(by_hand, conc.shape[1:]), rtol=1e-9,
                                   atol=1e-12)
    np.testing.assert_allclose(sim.values("inf", "AUC_ss")[:, 0], [20, 40, 80], rtol=1e-4)  # dose * WT / CL
    np.testing.assert_allclose(sim.values("inf", "Cmax")[:, 0],  # end of the last infusion, on the grid
                               [one_cmt(np.array([50.0]), [(0, a), (24, a), (48, a)], cl, v, tinf=2)[0]
                                for a in (10, 20, 40)], rtol=1e-9)


# ---------------------------------------------------------------------- attainment and overlap
def constructed():
    """Two regimens x 8 subjects x 4 draws with known attainment; WT 1..8."""
    base = np.arange(8)[:, None] + np.arange(4)[None, :]  # subject i, draw d: i + d
    return RegimenSimulation.from_arrays(
        {"lo": {"Cmin": base.astype(float), "AUC": 10.0 + base}, "hi": {"Cmin": base + 100.0, "AUC": 14.0 + base}},
        subjects=pd.DataFrame({"source_id": np.nan, "WT": np.arange(1.0, 9.0), "SEX": ["F", "M"] * 4}))


def test_target_attainment_known_answers():
    sim = constructed()
    tab = sim.attainment(["Cmin>=5", "AUC in [12, 14]"], by="WT", bins=[0, 4.5, 9])
    row = tab[(tab.regimen == "lo") & (tab.target == "Cmin>=5") & (tab.stratum == "all")].iloc[0]
    per_draw = np.array([3, 4, 5, 6]) / 8  # draw d: subjects with i + d >= 5
    assert row.probability == pytest.approx(per_draw.mean())
    assert row["median"] == pytest.approx(np.median(per_draw))
    assert (row.lower, row.upper) == pytest.approx(tuple(np.quantile(per_draw, [0.05, 0.95])))
    hi = tab[(tab.regimen == "hi") & (tab.target == "Cmin>=5")]
    assert (hi.probability == 1).all()
    strat = tab[(tab.regimen == "lo") & (tab.target == "Cmin>=5") & (tab.by == "WT")]
    assert strat.stratum.tolist() == ["[0, 4.5)", "[4.5, 9]"]
    assert strat.n_subjects.tolist() == [4, 4]
    # WT 1-4 are subjects 0-3: i + d >= 5 for (2, 3), (3, 2), (3, 3): 3 of 16; WT 5-8: all but (4, 0): 15 of 16
    np.testing.assert_allclose(strat.probability, [3 / 16, 15 / 16])
    auc = tab[(tab.regimen == "lo") & (tab.target == "12<=AUC<=14") & (tab.stratum == "all")].iloc[0]
    i_plus_d = np.add.outer(np.arange(8), np.arange(4))
    assert auc.probability == pytest.approx(np.mean((i_plus_d >= 2) & (i_plus_d <= 4)))  # AUC = 10 + i + d
    by_sex = sim.attainment("Cmin>=5", by="sex")  # column names are case-insensitive; text -> levels
    assert by_sex[by_sex.regimen == "lo"].stratum.tolist() == ["all", "F", "M"]
    quartiles = sim.attainment("Cmin>=5", by="WT")  # continuous: 4 equal-count bins by default
    assert (quartiles[quartiles.by == "WT"].n_subjects == 2).all()
    with pytest.raises(SpecError, match="T_above was not computed"):
        sim.attainment("T_above>=2")
    with pytest.raises(SpecError, match="no such subject column"):
        sim.attainment("Cmin>=5", by="AGE")


def test_targets_parse():
    assert Target.parse("Cmin>=10") == Target("Cmin", lower=10)
    assert Target.parse("cmax < 50").label == "Cmax<50"
    assert Target.parse("AUC in [300, 600]") == Target("AUC", 300, 600)
    assert Target.parse("300<AUCss<=600") == Target("AUC_ss", 300, 600, lower_strict=True)
    np.testing.assert_array_equal(Target.parse("AUC in [1, 2]").met([0.5, 1, 2, 3, np.nan]), [0, 1, 1, 0, np.nan])
    with pytest.raises(SpecError, match="unknown metric; metrics are"):
        Target.parse("Cavg>=3")
    with pytest.raises(SpecError, match="expected METRIC>=X"):
        Target.parse("Cmin=>3")


def test_overlap_known_answers():
    rng = np.random.default_rng(0)
    a = rng.lognormal(0, 0.5, (3, 2000))
    np.testing.assert_allclose(overlap_coefficient(a, a), 1.0, atol=1e-9)  # the same sample
    same = overlap_coefficient(a, rng.lognormal(0, 0.5, (3, 2000)))  # same distribution, other sample
    assert (same > 0.93).all()
    np.testing.assert_allclose(prob_greater(a, rng.lognormal(0, 0.5, (3, 2000))), 0.5, atol=0.03)
    far = a * 1e3  # disjoint on the log scale
    np.testing.assert_allclose(overlap_coefficient(a, far), 0.0, atol=1e-6)
    np.testing.assert_array_equal(prob_greater(far, a), 1.0)
    np.testing.assert_array_equal(prob_greater(a, far), 0.0)
    # two normals one SD apart: OVL = 2 Phi(-1/2) = 0.617, P(X > Y) = Phi(1/sqrt(2)) = 0.760
    x, y = rng.normal(1, 1, (1, 20000)), rng.normal(0, 1, (1, 20000))
    assert overlap_coefficient(x, y, log=False)[0] == pytest.approx(0.617, abs=0.02)
    assert prob_greater(x, y)[0] == pytest.approx(0.760, abs=0.01)
    np.testing.assert_array_equal(prob_greater([[1, 2]], [[1, 2]]), 0.5)  # ties count half

    sim = constructed()
    tab = sim.overlap(["Cmin", "AUC"])
    cmin = tab[tab.metric == "Cmin"].iloc[0]
    assert (cmin.low, cmin.high) == ("lo", "hi") and cmin.ovl < 1e-3 and cmin.p_high_gt_low == 1
    auc = tab[tab.metric == "AUC"].iloc[0]  # per draw: lo 10..17 + d, hi 14..21 + d
    assert 0.2 < auc.ovl_median < 0.8 and auc.ovl_lower <= auc.ovl_median <= auc.ovl_upper
    assert auc.p_high_gt_low == auc.p_median == (54 + 4 / 2) / 64  # pairs with i - j < 4, ties (i - j = 4) half
    assert sim.overlap("Cmin", order=["hi", "lo"]).p_high_gt_low.iloc[0] == 0


# ---------------------------------------------------------------------- virtual populations
BASE = pd.DataFrame({"source_id": [1, 2, 3, 4], "WT": [50.0, 60.0, 70.0, 80.0], "SEX": [0.0, 1.0, 0.0, 1.0],
                     "RACE": ["a", "b", "a", "c"]})


class _Effect:
    def __init__(self, effect, parameter="CL"):
        self.effect, self.parameter = effect, parameter


EFFECTS = {"WT": [_Effect("power")], "SEX": [_Effect("categorical", "V")]}


def test_virtual_covariates_distributions():
    rng = np.random.default_rng(1)
    df = virtual_subjects(BASE, 4000, {"WT": ("lognormal", 70, 0.3), "SEX": ("bernoulli", 0.25),
                                       "RACE": ("categorical", {"a": 0.5, "c": 0.5})}, rng, EFFECTS)
    assert np.median(df.WT) == pytest.approx(70, rel=0.03)
    assert np.std(np.log(df.WT)) == pytest.approx(math.sqrt(math.log1p(0.09)), rel=0.05)
    assert df.SEX.mean() == pytest.approx(0.25, abs=0.03) and set(df.RACE) == {"a", "c"}
    df = virtual_subjects(BASE, 500, {"wt": ("normal", 70, 30, 40, 90)}, rng, EFFECTS)  # truncated
    assert df.WT.between(40, 90).all()
    df = virtual_subjects(BASE, 300, None, rng, EFFECTS)  # whole rows resampled
    assert set(df.source_id) <= {1, 2, 3, 4}
    assert (df.WT == BASE.set_index("source_id").WT[df.source_id].to_numpy()).all()
    table = virtual_subjects(BASE, None, pd.DataFrame({"wt": [55.0, 65.0], "sex": [1.0, 0.0]}), rng, EFFECTS)
    assert table.WT.tolist() == [55.0, 65.0]


@pytest.mark.parametrize("spec, match", [
    ({"WT": ("lognormal", 70)}, "column WT: lognormal takes"),
    ({"WT": ("gamma", 2, 3)}, "column WT: unknown distribution 'gamma'"),
    ({"WT": ("normal", 70, -1)}, "column WT: normal needs a sd > 0"),
    ({"WT": ("normal", 10, 30)}, "column WT: value .* is not > 0; the power effect of WT on CL"),
    ({"WT": "heavy"}, "column WT: value 'heavy' is not a number"),
    ({"SEX": ("bernoulli", 1.5)}, "column SEX: bernoulli probability must be in"),
    ({"SEX": 2}, r"column SEX: level 2 does not occur in the fitted data.*\(levels: 0, 1\)"),
    ({"RACE": ("categorical", {"a": 0.5, "b": 0.6})}, "column RACE: categorical probabilities sum to 1.1"),
    ({"AGE": 30}, "column AGE is neither used by the model"),
    ({"WT": [1.0, 2.0]}, "column WT: 2 values given for 10 subjects"),
])  # fmt: skip
def test_virtual_covariate_errors_name_the_column(spec, match):
    with pytest.raises(SpecError, match=match):
        virtual_subjects(BASE, 10, spec, np.random.default_rng(0), EFFECTS)


def test_virtual_covariate_table_needs_model_columns():
    with pytest.raises(SpecError, match="column SEX is missing from the covariate table"):
        virtual_subjects(BASE, None, pd.DataFrame({"WT": [50.0]}), np.random.default_rng(0), EFFECTS)


# ---------------------------------------------------------------------- a tiny real fit
TINY_SPEC = {
    "model": {"structure": "1cmt_iv"},
    "parameters": {"CL": {"guess": 2.0}, "V": {"guess": 20.0}},
    "covariates": [{"parameter": "CL", "column": "WT", "effect": "power", "reference": 70, "coefficient": 0.75},
                   {"parameter": "V", "column": "SEX", "effect": "categorical", "reference": 0}],
    "error": {"model": "proportional"},
    "sampler": {"chains": 2, "draws": 100, "tune": 100, "seed": 3},
}


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    spec = bpk.Spec.from_dict(TINY_SPEC)
    rng = np.random.default_rng(5)
    design = study_design(12, dose=100.0, times=[0.5, 2, 6, 12], route="iv",
                          covariates={"WT": lambda r, n: rng.lognormal(np.log(70), 0.2, n),
                                      "SEX": lambda r, n: np.arange(n) % 2}, seed=5)
    data = simulate_observations(spec, design, {"CL": 2.0, "V": 20.0, "omega_CL": 0.3, "omega_V": 0.2,
                                                "V_SEX": [0.2], "sigma_prop": 0.1}, seed=5)
    with warnings.catch_warnings():  # 2 x 100 draws: a vehicle for the simulation, not a converged fit
        warnings.simplefilter("ignore", bpk.ConvergenceWarning)
        fit = bpk.fit(bpk.PopulationModel(spec, data.drop(columns=[c for c in data if c.startswith("ETA_")])),
            progress=False)
    run = tmp_path_factory.mktemp("run")
    fit.save(run / "fit.nc")
    return fit, run


def test_fitted_and_virtual_populations(tiny_run):
    fit, _ = tiny_run
    regs = ["50q12x6,label=low", "100q12x6,label=high"]
    own = simulate_regimens(fit, regs, etas="posterior", n_draws=20, progress=False, keep_concentrations=False)
    assert own.n_subjects == 12 and own.concentrations is None
    # own etas: AUC_ss = dose / CL_i exactly, CL_i = CL * (WT/70)^0.75 * exp(eta_CL) of each draw
    post = fit.posterior.stack(sample=("chain", "draw"))
    wt = own.subjects.WT.to_numpy()
    ids = list(post.ID.values)
    cols = [ids.index(s) for s in own.subjects.source_id]
    idx = np.array(own.info["posterior_draws"])  # the draws it used
    assert len(set(idx)) == 20
    cl_i = (post.CL.values[idx][None, :] * (wt[:, None] / 70) ** 0.75
            * np.exp(post.eta_CL.transpose("ID", "sample").values[cols][:, idx]))
    np.testing.assert_allclose(own.values("low", "AUC_ss"), 50 / cl_i, rtol=1e-3)
    np.testing.assert_allclose(own.values("high", "AUC"), 2 * own.values("low", "AUC"), rtol=1e-9)  # linear
    # new etas, shared by both regimens (common random numbers)
    new = simulate_regimens(fit, regs, n_draws=10, progress=False)
    np.testing.assert_allclose(new.values("high", "Cmax"), 2 * new.values("low", "Cmax"), rtol=1e-9)
    assert not np.allclose(new.values("low", "AUC_ss"), own.values("low", "AUC_ss")[:, :10])
    # a virtual population with one SEX level only (the other is padded in, then dropped)
    virt = simulate_regimens(fit, regs, population="virtual", n_subjects=30, n_draws=10, threshold=2.0,
                             covariates={"WT": ("lognormal", 70, 0.2), "SEX": 1}, progress=False)
    assert virt.n_subjects == 30 and (virt.subjects.SEX == 1).all()
    s = virt.summary(["AUC", "T_above"], by="WT", bins=2)
    assert set(s.stratum) == {"all", *s.stratum[s.by == "WT"]} and len(s[s.by == "WT"]) == 8
    assert np.isfinite(virt.values("low", "T_above")).all() and virt.profiles.regimen.nunique() == 2
    fig = virt.plot(["Cmin>=1", "AUC in [20, 60]"], by="SEX")
    assert len(fig.axes) == 2
    # a label that reads as matplotlib math text (invalid: "$x^$") is drawn as plain text
    odd = simulate_regimens(fit, ["50q12x6,label=$x^$"], n_draws=5, progress=False)
    odd.plot(["Cmin>=1"]).savefig(io.BytesIO(), format="png")
    long = virt.to_frame()
    assert len(long) == 2 * 30 * 10 and {"Cmax", "AUC_ss", "WT", "SEX"} <= set(long.columns)
    with pytest.raises(SpecError, match="use population='virtual'"):
        simulate_regimens(fit, regs, n_subjects=5, progress=False)
    with pytest.raises(SpecError, match="two regimens have the label 'low'"):
        simulate_regimens(fit, ["1q12,label=low", "2q12,label=low"], progress=False)


def test_cli_end_to_end(tiny_run, tmp_path, capsys):
    _, run = tiny_run
    out = tmp_path / "sim"
    rc = main(["simulate", str(run), "--regimen", "50q12x6,label=low", "--regimen", "100q12x6,label=high,loading=200",
               "--population", "virtual", "--n-subjects", "40", "--covariate", "WT=lognormal(70,0.25)",
               "--target", "Cmin>=1", "--target", "AUC in [20,60]", "--threshold", "2", "--strat", "WT",
               "--n-draws", "10", "--quiet", "--out", str(out)])
    assert rc == 0
    for name in ("exposure.csv", "attainment.csv", "overlap.csv", "regimens.png", "simulation.json"):
        assert (out / name).is_file(), name
    att = pd.read_csv(out / "attainment.csv")
    assert set(att.regimen) == {"low", "high"} and set(att.target) == {"Cmin>=1", "20<=AUC<=60"}
    assert (att.by.fillna("") == "WT").sum() == 2 * 2 * 4  # 2 regimens x 2 targets x 4 WT quartiles
    ovl = pd.read_csv(out / "overlap.csv")
    assert ovl[["low", "high"]].drop_duplicates().values.tolist() == [["low", "high"]]
    exp = pd.read_csv(out / "exposure.csv")
    assert {"AUC_ss", "T_above", "f_above"} <= set(exp.metric) and (exp.grid_step > 0).all()
    info = json.loads((out / "simulation.json").read_text())
    assert info["n_subjects"] == 40 and info["regimens"][1]["loading"] == [200.0]
    assert "subject-regimens/s" in capsys.readouterr().out


@pytest.mark.parametrize("args, match", [
    (["--regimen", "50q12x6,dos=3"], "unknown key 'dos'"),
    (["--regimen", "label=a,ii=12"], "missing key 'dose'"),
    (["--regimen", "50q12", "--target", "Cmin=>3"], "target 'Cmin=>3'"),
    (["--regimen", "50q12", "--target", "T_above>=3"], "needs --threshold"),
    (["--regimen", "50q12", "--covariate", "WT=gamma(1,2)"], "unknown distribution 'gamma'"),
    (["--regimen", "50q12", "--n-subjects", "5", "--covariate", "WT"], "expected COL=SPEC"),
    (["--regimen", "50q12", "--interval", "3"], "--interval '3'"),
    ([], "no regimen given"),
])  # fmt: skip
def test_cli_user_errors_exit_2(tmp_path, capsys, args, match):
    rc = main(["simulate", str(tmp_path / "no_run"), *args, "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert rc == EXIT_USER_ERROR, err
    assert err.startswith("bayespk simulate: error: ") and match in err and "Traceback" not in err


def test_cli_missing_run_exits_2(tmp_path, capsys):
    rc = main(["simulate", str(tmp_path / "nowhere"), "--regimen", "50q12", "--out", str(tmp_path / "o")])
    assert rc == EXIT_USER_ERROR and "not a run directory" in capsys.readouterr().err
