"""Dose selection through the regimen simulator (bayespk.simulate.doses.dose_table).

The known truth is a one-compartment IV model dosed per kg every 12 h, CL and V
allometric in weight around a 20 kg child (exponents 0.75 and 1, fixed), with
log-normal IIV on CL (omega 0.3). At steady state AUC over one interval is
``dose * WT / CL_i``, so the probability that a patient of weight WT attains
``AUC_ss >= A`` is, in closed form,

    Phi((log(dose * WT / (CL * (WT / 20)^0.75)) - log A) / omega_CL),

which the tests evaluate at the simulated patients' own weights (so the only
Monte Carlo error left is that of the simulated etas).

"Truth" fits hold the true population values in every posterior draw; they
are built here (a Fit from fixed draws on a one-subject dataset, as in
tests/simulate/test_regimen.py) because ``bayespk.simulate.draws.fit_from_draws`` is
not available yet. The replicate test fits simulated studies (slow).
"""

from __future__ import annotations

import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from matplotlib.figure import Figure
from mock_fits import mock_fit
from scipy.special import expit
from scipy.stats import norm

import bayespk as bpk
from bayespk.errors import SpecError
from bayespk.fit import Fit
from bayespk.simulate import DoseTable, Regimen, Target, dose_table, plot_dose_table
from bayespk.simulate.study import simulate_observations, study_design

TRUTH = {"CL": 2.0, "V": 20.0, "omega_CL": 0.3, "omega_V": 0.25, "sigma_prop": 0.1}
SPEC = {
    "model": {"structure": "1cmt_iv"},
    "parameters": {
        "CL": {"typical": {"dist": "LogNormal", "mu": 0.7, "sigma": 1.0}, "iiv": {"dist": "HalfNormal", "sigma": 0.5}},
        "V": {"typical": {"dist": "LogNormal", "mu": 3.0, "sigma": 1.0}, "iiv": {"dist": "HalfNormal", "sigma": 0.5}},
    },
    "covariates": [
        {"parameter": "CL", "column": "WT", "effect": "power", "reference": 20, "coefficient": 0.75},
        {"parameter": "V", "column": "WT", "effect": "power", "reference": 20, "coefficient": 1.0},
    ],
    "error": {"model": "proportional"},
}
REGIMEN = Regimen("q12", dose=1.0, ii=12.0, n=3, per="WT")  # mg/kg every 12 h; the dose is replaced
WEIGHTS = {"WT": ("uniform", 13, 30)}


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def draws_fit(spec: dict, draws: dict, data_cov: dict | None = None) -> Fit:
    """A Fit whose posterior holds ``draws`` (one chain), on a one-subject dataset."""
    rows = pd.DataFrame([dict(ID=1, TIME=0.0, AMT=100.0, DV=np.nan, EVID=1, MDV=1, **(data_cov or {})),
                         dict(ID=1, TIME=1.0, AMT=np.nan, DV=1.0, EVID=0, MDV=0, **(data_cov or {}))])
    model = bpk.PopulationModel(bpk.Spec.from_dict(spec), rows)
    n = len(next(iter(draws.values())))
    post = xr.Dataset({k: (("chain", "draw"), np.asarray(v, float)[None]) for k, v in draws.items()},
                      coords={"chain": [0], "draw": np.arange(n)})
    records = model.data.table.reset_index(drop=True).rename_axis("row")
    tree = xr.DataTree(children={"posterior": xr.DataTree(post),
                                 "records": xr.DataTree(xr.Dataset.from_dataframe(records))})
    return Fit(tree, model.spec)


def truth_fit(n_draws: int = 100) -> Fit:
    return draws_fit(SPEC, {k: np.full(n_draws, v) for k, v in TRUTH.items()}, {"WT": 20.0})


def true_attainment(dose: float, wt: np.ndarray, level: float) -> float:
    """P(AUC_ss >= level) for patients of weights ``wt`` (averaged), from the true parameters."""
    cl = TRUTH["CL"] * (wt / 20.0) ** 0.75
    return float(norm.cdf((np.log(dose * wt / cl) - np.log(level)) / TRUTH["omega_CL"]).mean())


def true_choice(doses, wt, target=60.0, unsafe=180.0, max_risk=0.1) -> float:
    """The dose the truth picks: highest P(target) among doses with P(unsafe) <= max_risk (ties: lowest)."""
    ok = [(true_attainment(d, wt, target), -d) for d in doses if true_attainment(d, wt, unsafe) <= max_risk]
    return -max(ok)[1]


# ---------------------------------------------------------------------- truth: closed form, bands, monotonicity
@pytest.fixture(scope="module")
def truth_table():
    doses = [4.0, 6.0, 8.0, 10.0, 11.0, 12.5, 14.0]
    return dose_table(truth_fit(), doses, REGIMEN, "AUC_ss>=60", safety="AUC_ss>=180", covariates=WEIGHTS,
                      n_subjects=240, n_draws=100, by="WT", bins=[13, 20, 30], seed=3, label="truth")


def test_truth_table_matches_the_closed_form(truth_table):
    tab = truth_table
    wt = tab.simulation.subjects.WT.to_numpy(float)
    light = wt < 20
    assert isinstance(tab, DoseTable) and tab.label == "truth"
    assert set(tab.table.stratum) == {"all", "[13, 20)", "[20, 30]"}
    # 240 patients x 100 draws: the Monte Carlo SE of a probability is at most 0.0032 (0.005 in a band of ~100
    # patients); 0.02 is 4 of those SEs in a band
    for _, r in tab.table.iterrows():
        w = wt if r.stratum == "all" else wt[light] if r.stratum == "[13, 20)" else wt[~light]
        assert r.p_target == pytest.approx(true_attainment(r.dose, w, 60.0), abs=0.02), (r.dose, r.stratum)
        assert r.p_exceed == pytest.approx(true_attainment(r.dose, w, 180.0), abs=0.02), (r.dose, r.stratum)
        assert r.p_target_lower <= r.p_target <= r.p_target_upper
        # the true parameters in every draw: the interval over draws is Monte Carlo spread only
        assert r.p_target_upper - r.p_target_lower < 0.2
    # AUC_ss = dose * WT / CL exactly (steady-state record of a linear model): the median patient at 20 kg
    med = tab.table[(tab.table.stratum == "all") & (tab.table.dose == 6.0)].AUC_ss_median.iloc[0]
    assert med == pytest.approx(6.0 * np.median(wt) ** 0.25 * 20**0.75 / TRUTH["CL"], rel=0.05)


def test_truth_table_is_monotone_in_dose_and_chooses_the_true_dose(truth_table):
    tab = truth_table
    wt = tab.simulation.subjects.WT.to_numpy(float)
    for _, g in tab.table.groupby("stratum"):
        g = g.sort_values("dose")
        assert np.all(np.diff(g.p_target) >= 0) and np.all(np.diff(g.p_exceed) >= 0)
        assert np.all(np.diff(g.AUC_ss_median) > 0)
    doses = sorted(tab.table.dose.unique())
    # The truth's choices (P(unsafe) at the chosen dose and the next one, for weights uniform on 13-30 kg):
    # all patients 11 mg/kg (0.058; 12.5: 0.124); weight bands get their own dose, because AUC rises with
    # WT^0.25 at a fixed mg/kg dose: below 20 kg 12.5 mg/kg (0.085; 14: 0.159), above 11 mg/kg (0.073; 12.5:
    # 0.151). The Monte Carlo SE of P(unsafe) in a band (~100 patients x 100 draws) is about 0.003, so every
    # margin is at least 5 SEs.
    assert tab.best_dose == true_choice(doses, wt) == 11.0
    assert tab.dose_for("[13, 20)") == true_choice(doses, wt[wt < 20]) == 12.5
    assert tab.dose_for("[20, 30]") == true_choice(doses, wt[wt >= 20]) == 11.0
    chosen = tab.table[tab.table.best]
    assert sorted(zip(chosen.stratum, chosen.dose)) == [("[13, 20)", 12.5), ("[20, 30]", 11.0), ("all", 11.0)]
    assert "P(AUC_ss>=60)" in tab.rule and "P(AUC_ss>=180) <= 0.1" in tab.rule
    assert "[13, 20): 12.5" in repr(tab)
    # other criteria on the same simulation's numbers
    util = dose_table(truth_fit(), doses, REGIMEN, "AUC_ss>=60", safety="AUC_ss>=180", covariates=WEIGHTS,
                      n_subjects=240, n_draws=100, seed=3, criterion="utility", penalty=2.0)
    t = util.table
    assert np.allclose(t.score, t.p_target - 2.0 * t.p_exceed)
    assert util.best_dose == float(t.dose[t.score.idxmax()])
    custom = dose_table(truth_fit(), doses, REGIMEN, "AUC_ss>=60", covariates=WEIGHTS, n_subjects=50,
                        n_draws=20, seed=3, criterion=lambda row: -abs(row.AUC_ss_median - 100))
    assert custom.best_dose == 10.0  # median AUC ~ 10 * 1.05 * 20^0.75 / 2
    none = dose_table(truth_fit(), doses, REGIMEN, "AUC_ss>=60", covariates=WEIGHTS, n_subjects=20, n_draws=5,
                      criterion=None)
    assert none.best_dose is None and not none.table.best.any()


def test_unit_dose_scaling_equals_simulating_every_dose(truth_table):
    assert truth_table.info["scaled_from_unit_dose"]  # AUC_ss only: one simulation, scaled by each dose
    kw = dict(regimen=REGIMEN, target="AUC_ss>=60", safety="AUC_ss>=180", covariates=WEIGHTS, n_subjects=20,
              n_draws=8, seed=4)
    full = dose_table(truth_fit(), [6.0, 12.0], scale_ss=False, **kw)
    scaled = dose_table(truth_fit(), [6.0, 12.0], **kw)
    assert not full.info["scaled_from_unit_dose"] and scaled.info["scaled_from_unit_dose"]
    for lb in ("6", "12"):
        np.testing.assert_allclose(scaled.simulation.values(lb, "AUC_ss"), full.simulation.values(lb, "AUC_ss"),
                                   rtol=1e-9)
    cols = ["p_target", "p_exceed", "AUC_ss_median"]
    np.testing.assert_allclose(scaled.table[cols].to_numpy(float), full.table[cols].to_numpy(float), rtol=1e-9)
    # an interval metric is simulated per dose: Cmax over the last interval (3 doses of 12 h, bolus) grows with dose
    cmax = dose_table(truth_fit(), [6.0, 12.0], target="Cmax>=10", criterion=None, **{
        k: v for k, v in kw.items() if k not in ("target", "safety")})
    assert not cmax.info["scaled_from_unit_dose"]
    c6, c12 = (cmax.simulation.values(lb, "Cmax") for lb in ("6", "12"))
    np.testing.assert_allclose(c12, 2 * c6, rtol=1e-6)  # linear kinetics


def test_plot_dose_table(truth_table):
    assert isinstance(plot_dose_table(truth_table), Figure)  # one line per band
    fig = truth_table.plot()
    assert len(fig.axes) == 2
    fig = plot_dose_table({"truth": truth_table, "again": truth_table}, styles={"truth": {"color": "k"}})
    assert [ax.get_title() for ax in fig.axes] == ["P(AUC_ss>=60)", "P(AUC_ss>=180) (unsafe)"]
    with pytest.raises(SpecError, match="stratum"):
        plot_dose_table({"truth": truth_table}, stratum="nope")


# ---------------------------------------------------------------------- outcomes from an E-R fit
def test_outcomes_from_a_binary_exposure_response_fit():
    resp = mock_fit("binary", {"intercept": 0.0, "b_exposure": 3.0}, sd=0.1)
    resp.reference = {"exposure": 60.0}  # fitted on AUC_ss, centred at 60 mg*h/L
    tox = mock_fit("binary", {"intercept": -3.0, "b_exposure": 4.0, "b_LOGWT": 1.0}, sd=0.1, seed=1)
    tox.reference = {"exposure": 60.0, "LOGWT": np.log10(20.0)}
    doses = [4.0, 8.0, 12.0]
    tab = dose_table(truth_fit(50), doses, REGIMEN, "AUC_ss>=60", safety="AUC_ss>=180", covariates=WEIGHTS,
                     n_subjects=100, n_draws=50, seed=2,
                     outcomes={"P(response)": resp, "P(toxicity)": tox},
                     outcome_covariates={"LOGWT": lambda s: np.log10(s.WT.to_numpy(float))},
                     criterion="response_with_safety", adverse="P(toxicity)", max_risk=0.2)
    t = tab.table.set_index("dose")
    assert np.all(np.diff(t["P(response)"]) > 0) and np.all(np.diff(t["P(toxicity)"]) > 0)
    # by hand: the model probability at every simulated AUC, averaged over patients, draws and E-R samples
    sim = tab.simulation
    auc = sim.values("8", "AUC_ss")  # (patients, draws)
    a, b = (resp.posterior[v].values.ravel() for v in ("intercept", "b_exposure"))
    expected = expit(a.mean() + b.mean() * (np.log10(auc) - np.log10(60.0))).mean()
    assert t.loc[8.0, "P(response)"] == pytest.approx(expected, abs=0.01)
    assert t.loc[8.0, "P(response)_lower"] < t.loc[8.0, "P(response)"] < t.loc[8.0, "P(response)_upper"]
    long = tab.outcomes
    assert set(long.outcome) == {"P(response)", "P(toxicity)"} and len(long) == 2 * len(doses)
    # the rule: highest P(response) with P(AUC_ss>=180) <= 0.2 and P(toxicity) <= 0.2
    ok = (t.p_exceed <= 0.2) & (t["P(toxicity)"] <= 0.2)
    assert tab.best_dose == float(t.index[ok][np.argmax(t["P(response)"][ok])])
    assert "P(toxicity) <= 0.2" in tab.rule
    fig = plot_dose_table(tab)
    assert [ax.get_title() for ax in fig.axes][2:] == ["P(response)", "P(toxicity)"]
    # the covariate of an E-R model must come from somewhere
    with pytest.raises(SpecError, match="needs covariate 'LOGWT'"):
        dose_table(truth_fit(5), [4.0], REGIMEN, "AUC_ss>=60", covariates=WEIGHTS, n_subjects=5, n_draws=5,
                   outcomes={"P(toxicity)": tox}, criterion=None)


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("kwargs, match", [
    ({"doses": []}, "doses: give at least one"),
    ({"doses": [2.0, -1.0]}, "doses: every dose must be .* > 0, got -1"),
    ({"doses": [2.0, 2.0]}, "doses: dose 2 is given twice"),
    ({"max_risk": 1.5}, r"max_risk must lie in \[0, 1\], got 1.5"),
    ({"criterion": "best"}, "criterion 'best': expected one of"),
    ({"target": "FOO>=3"}, "target: target metric 'FOO': unknown metric"),
    ({"safety": "Cmax_ss>>3"}, "safety: target 'Cmax_ss>>3'"),
    ({"outcomes": {"P(response)": None}}, r"outcomes\['P\(response\)'\]: no fitted model given"),
    ({"outcomes": {"P(response)": "fit"}}, r"outcomes\['P\(response\)'\]: expected a ResponseFit"),
    ({"adverse": "P(AE)"}, r"adverse='P\(AE\)': not among the outcomes"),
    ({"safety": None}, "criterion 'target_with_safety' needs a safety limit"),
    ({"criterion": "response_with_safety"}, "needs an exposure-response model"),
    ({"ci": 1.2}, "ci must be between 0 and 1"),
    ({"regimen": None}, "regimen: give the regimen template"),
    ({"target": "T_above_ss>=6"}, r"target: metric T_above_ss was not computed .*give a threshold"),
])
def test_bad_input_is_refused_naming_the_key(kwargs, match):
    args = {"doses": [2.0, 4.0], "regimen": REGIMEN, "target": "AUC_ss>=60", "safety": "AUC_ss>=180",
            "covariates": WEIGHTS, "n_subjects": 4, "n_draws": 3, **kwargs}
    with pytest.raises(SpecError, match=match):
        dose_table(truth_fit(3), **args)


def test_target_objects_and_text_are_the_same():
    assert Target.parse("AUC_ss>=60") == Target("AUC_ss", lower=60.0)


# ---------------------------------------------------------------------- CAR-T fits: virtual_exposures route
CART = {
    "model": {"structure": "cart_piecewise"},
    "parameters": {p: {"guess": 1.0, "iiv": {"dist": "HalfNormal", "sigma": 0.5}}
                   for p in ("CMAX", "FX", "TMAX", "ALPHA", "FB", "BETA")},
    "error": {"model": "lognormal"},
}
CART_TRUTH = {"CMAX": 20000.0, "FX": 4000.0, "TMAX": 9.0, "ALPHA": 0.16, "FB": 0.008, "BETA": 0.003,
              "omega_CMAX": 0.8, "omega_FX": 0.1, "omega_TMAX": 0.1, "omega_ALPHA": 0.1, "omega_FB": 0.1,
              "omega_BETA": 0.1, "sigma_log": 0.5}


def cart_fit(dose_exponent: float | None, tb_exponent: float | None = None) -> Fit:
    covs = [{"parameter": "CMAX", "column": col, "effect": "power", "reference": ref, "coefficient": e}
            for col, ref, e in (("DOSE", 1.0, dose_exponent), ("TB", 20.0, tb_exponent)) if e is not None]
    return draws_fit({**CART, "covariates": covs}, {k: np.full(40, v) for k, v in CART_TRUTH.items()},
                     {"DOSE": 1.0, "TB": 20.0})


def test_cart_fits_go_through_virtual_exposures():
    fit = cart_fit(1.0)  # CMAX proportional to the cell dose
    tab = dose_table(fit, [0.5, 1.0, 2.0], target="Cmax>=20000", n_subjects=300, n_draws=40, criterion=None,
                     seed=1)
    assert tab.info["route"] == "virtual_exposures" and tab.info["dose_effect"]
    sim = tab.simulation
    np.testing.assert_allclose(sim.values("2", "Cmax"), 2 * sim.values("1", "Cmax"), rtol=1e-6)
    # Cmax = CMAX_i (the peak of the piecewise curve): P(Cmax >= 20000) = Phi(log(dose) / omega_CMAX)
    for _, r in tab.table.iterrows():
        assert r.p_target == pytest.approx(norm.cdf(np.log(r.dose) / 0.8), abs=0.03), r.dose
    flat = dose_table(cart_fit(None), [0.5, 2.0], target="Cmax>=20000", n_subjects=50, n_draws=10,
                      criterion=None)
    assert not flat.info["dose_effect"] and "do not depend on the dose" in flat.rule
    assert flat.table.p_target.nunique() == 1
    with pytest.raises(SpecError, match="target: metric AUC_ss is not available for a CAR-T fit"):
        dose_table(fit, [1.0], target="AUC_ss>=1", criterion=None)
    # bands are values of a covariate: CMAX ~ (TB / 20)^0.5, the same virtual patients in every band
    banded = dose_table(cart_fit(1.0, 0.5), [1.0], target="Cmax>=20000", by="TB", bins=[5, 80], n_subjects=30,
                        n_draws=10, criterion=None)
    assert list(banded.table.stratum) == ["all", "5", "80"]
    tb = banded.simulation.subjects.TB.to_numpy()
    c = banded.simulation.values("1", "Cmax")
    np.testing.assert_allclose(c[tb == 80], 4 * c[tb == 5], rtol=1e-6)
    with pytest.raises(SpecError, match="bins: for a CAR-T fit, give 1 to 6 values of TB"):
        dose_table(cart_fit(1.0, 0.5), [1.0], target="Cmax>=1", by="TB", bins=4, criterion=None)


# ---------------------------------------------------------------------- known truth, fitted replicates (slow)
@pytest.mark.slow
def test_fitted_replicates_choose_the_true_dose_and_attainment():
    """Three studies of 60 children (13-30 kg, 8 mg/kg IV, 4 samples) simulated from the truth and fitted
    (2 x 300 draws). The doses step by 1.5-fold so that the truth's choice is not on a knife edge: at 10 mg/kg
    P(AUC_ss >= 180) is 0.03, at 15 mg/kg 0.29. Tolerance on P(target) per dose: 0.15. With 60 children the
    SE of log CL is about 0.3 / sqrt(60) = 0.04, which moves P(target) by at most 0.05 (the normal density at
    its steepest, divided by the predictive SD 0.3); 0.15 is three such SEs. The chosen dose must be the
    truth's in at least 2 of the 3 replicates."""
    doses = [4.5, 6.75, 10.0, 15.0]
    hits, errors = 0, []
    for rep in range(3):
        design = study_design(60, dose=lambda c: 8.0 * c.WT, times=[0.5, 2.0, 6.0, 12.0], route="iv",
                              covariates={"WT": lambda rng, n: rng.uniform(13, 30, n)}, seed=100 + rep)
        sim = simulate_observations(bpk.Spec.from_dict(SPEC), design, TRUTH, seed=200 + rep)
        data = sim.drop(columns=[c for c in sim.columns if c.startswith("ETA_")])
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", bpk.ConvergenceWarning)
            fit = bpk.fit(bpk.PopulationModel(bpk.Spec.from_dict(SPEC), data), draws=300, tune=300, chains=2, seed=rep,
                                                                          progress=False)
        tab = dose_table(fit, doses, REGIMEN, "AUC_ss>=60", safety="AUC_ss>=180", covariates=WEIGHTS,
                         n_subjects=200, n_draws=150, seed=rep)
        wt = tab.simulation.subjects.WT.to_numpy(float)
        hits += tab.best_dose == true_choice(doses, wt)
        for _, r in tab.table.iterrows():
            errors.append(r.p_target - true_attainment(r.dose, wt, 60.0))
    assert hits >= 2, hits
    assert np.max(np.abs(errors)) <= 0.15, np.round(errors, 3)
