"""Extrapolation to children: fits from given draws and from the priors, virtual pediatric populations, and a
prior predictive check of the exposures an adult model with allometry and maturation implies for children.

References used below:
- maturation of glomerular filtration: TM50 = 47.7 weeks PMA, Hill = 3.4 (Rhodin et al. 2009, Pediatr Nephrol
  24:67), in the form CL * (WT/70)^0.75 * PMA^HILL / (TM50^HILL + PMA^HILL) (Anderson & Holford 2008, Annu Rev
  Pharmacol Toxicol 48:303);
- weight for age: CDC 2000 growth charts, LMS parameters and smoothed percentiles (data files wtageinf.csv and
  wtage.csv; Kuczmarski et al. 2002, Vital Health Stat 11(246)); LMS method: Cole 1990, Eur J Clin Nutr 44:45.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import pandas as pd
import pytest

import bayespk as bpk
from bayespk.borrowing.pk_priors import sigmoid_maturation
from bayespk.errors import SpecError
from bayespk.simulate.draws import fit_from_draws, population_variables, prior_fit
from bayespk.simulate.population import growth_reference, lms_quantile, pediatric_population
from bayespk.simulate.simulation import simulate_regimens

TM50, HILL = 47.7, 3.4  # Rhodin et al. 2009


def pediatric_spec(iiv: bool = False, allometry=0.75) -> dict:
    """Adult CL 6 L/h and V 50 L (70 kg) with allometry on CL (in the relation) and V, and GFR maturation on PMA."""
    omega = {"dist": "HalfNormal", "sigma": 0.3} if iiv else False
    return {
        "model": {"structure": "1cmt_iv"},
        "parameters": {
            "CL": {"typical": {"dist": "LogNormal", "mu": math.log(6.0), "sigma": 0.2}, "iiv": omega,
                   "relation": f"CL * (WT/70)^{allometry} * PMA^HILL/(TM50^HILL + PMA^HILL)"},
            "V": {"typical": {"dist": "LogNormal", "mu": math.log(50.0), "sigma": 0.2}, "iiv": omega},
            "TM50": {"typical": {"dist": "LogNormal", "mu": math.log(TM50), "sigma": 0.1}, "iiv": False},
            "HILL": {"typical": {"dist": "LogNormal", "mu": math.log(HILL), "sigma": 0.1}, "iiv": False},
        },
        "covariates": [{"parameter": "V", "column": "WT", "effect": "power", "reference": 70, "coefficient": 1.0}],
        "error": {"model": "proportional"},
    }


@pytest.fixture(scope="module")
def kids():
    return pediatric_population(40, age=(0, 4), seed=2)


# ---------------------------------------------------------------------- (a) prior draws reproduce the priors
def test_prior_fit_draws_reproduce_the_priors(kids):
    spec = pediatric_spec(iiv=True)
    spec["covariates"].append({"parameter": "CL", "column": "AGE", "effect": "exponential", "reference": 1.0,
                               "coefficient": {"dist": "Normal", "mu": 0.1, "sigma": 0.05}})
    n = 4000
    fit = prior_fit(spec, n_draws=n, seed=4, covariates=kids)
    assert fit.run_info["draws_from"] == "prior" and "not from a posterior" in fit.run_info["note"]
    post = fit.posterior
    assert post.sizes["chain"] == 1 and post.sizes["draw"] == n
    assert set(post.data_vars) == set(population_variables(fit.model))
    assert not any(v.startswith("z_") for v in post.data_vars)  # no per-subject effects

    def within(sample, mean, sd, k=4.0):  # mean and SD within k Monte Carlo SEs
        sample = np.asarray(sample).ravel()
        assert abs(sample.mean() - mean) < k * sd / math.sqrt(n), (sample.mean(), mean)
        assert abs(sample.std() - sd) < k * sd / math.sqrt(2 * n), (sample.std(), sd)

    within(np.log(post.CL), math.log(6.0), 0.2)
    within(np.log(post.V), math.log(50.0), 0.2)
    within(np.log(post.TM50), math.log(TM50), 0.1)
    within(np.log(post.HILL), math.log(HILL), 0.1)
    within(post.CL_AGE, 0.1, 0.05)
    half = 0.3 * math.sqrt(1 - 2 / math.pi)  # HalfNormal(0.3): mean 0.3 sqrt(2/pi)
    within(post.omega_CL, 0.3 * math.sqrt(2 / math.pi), half)
    assert (post.sigma_prop > 0).all()
    # the same seed gives the same draws; another seed others
    again = prior_fit(spec, n_draws=n, seed=4, covariates=kids).posterior
    np.testing.assert_array_equal(again.CL.values, post.CL.values)
    assert not np.array_equal(prior_fit(spec, n_draws=n, seed=5, covariates=kids).posterior.CL.values,
                              post.CL.values)


# ---------------------------------------------------------------------- (b) fixed values: exposures by hand
def test_fixed_values_reproduce_closed_form_exposures(kids):
    n = 3
    truth = fit_from_draws(pediatric_spec(), None, {"CL": np.full(n, 6.0), "V": np.full(n, 50.0),
                                                    "TM50": np.full(n, TM50), "HILL": np.full(n, HILL),
                                                    "sigma_prop": np.full(n, 0.1)}, covariates=kids)
    assert truth.run_info["draws_from"] == "given"
    dose, tau = 100.0, 12.0
    sim = simulate_regimens(truth, f"{dose:g}q{tau:g}x10", population="virtual", covariates=kids, n_draws=n,
                            resolution=400, progress=False)
    wt, pma = sim.subjects.WT.to_numpy(), sim.subjects.PMA.to_numpy()
    np.testing.assert_allclose(wt, kids.WT) and np.testing.assert_allclose(pma, kids.PMA)
    cl = 6.0 * (wt / 70) ** 0.75 * sigmoid_maturation(TM50, HILL)(pma)  # by hand
    v = 50.0 * wt / 70
    label = sim.labels[0]
    auc_ss = sim.values(label, "AUC_ss")
    np.testing.assert_allclose(auc_ss, np.repeat((dose / cl)[:, None], n, axis=1), rtol=2e-4)  # AUC_ss = dose/CL
    k = cl / v
    cmax_ss = dose / v / (1 - np.exp(-k * tau))  # bolus: the peak just after the dose
    np.testing.assert_allclose(sim.values(label, "Cmax_ss"), np.repeat(cmax_ss[:, None], n, axis=1), rtol=1e-6)
    # a newborn's clearance is a small fraction of the allometric one (maturation 0.23 at PMA 40 weeks)
    assert sigmoid_maturation(TM50, HILL)(40.0) == pytest.approx(40**3.4 / (47.7**3.4 + 40**3.4))


def test_centring_left_to_the_sampler_is_standardized(kids):
    """``[sampler] centering = "auto"``: a sampled fit records the weights its warm-up chose; a fit from draws has
    no warm-up and uses the standardized etas (w = 0), which simulate_regimens draws as z ~ N(0, 1)."""
    spec = pediatric_spec(iiv=True) | {"sampler": {"centering": "auto"}}
    n = 2
    fit = fit_from_draws(spec, None, {"CL": np.full(n, 6.0), "V": np.full(n, 50.0), "omega_CL": np.full(n, 0.3),
                                      "omega_V": np.full(n, 0.1), "TM50": np.full(n, TM50), "HILL": np.full(n, HILL),
                                      "sigma_prop": np.full(n, 0.1)}, covariates=kids)
    assert {p: fit.spec.parameters[p].centered for p in ("CL", "V")} == {"CL": 0.0, "V": 0.0}
    sim = simulate_regimens(fit, "100q12x5", population="virtual", covariates=kids, n_draws=n, progress=False)
    auc = sim.values("100q12x5", "AUC_ss")
    cl = 6.0 * (kids.WT.to_numpy() / 70) ** 0.75 * sigmoid_maturation(TM50, HILL)(kids.PMA.to_numpy())
    eta = np.log(100 / auc / cl[:, None])  # each child's CL eta, recovered from its AUC_ss = dose / CL_i
    assert np.isfinite(eta).all() and 0.15 < eta.std() < 0.5  # omega_CL 0.3


# ---------------------------------------------------------------------- the prior predictive check for children
def test_prior_predictive_exposures_by_age_band():
    children = pediatric_population(300, age=(0, 12), seed=3)
    fit = prior_fit(pediatric_spec(iiv=True), n_draws=200, seed=1, covariates=children.iloc[:20])
    sim = simulate_regimens(fit, "100q12x10", population="virtual", covariates=children, n_draws=100, seed=2,
                            progress=False)
    auc = sim.values(sim.labels[0], "AUC_ss")
    assert auc.shape == (300, 100) and np.isfinite(auc).all() and (auc > 0).all()
    table = sim.summary(["AUC_ss"], by="AGE", bins=[0, 1, 2, 6, 12])
    table = table[table.by == "AGE"]
    assert list(table.stratum.astype(str)) == ["[0, 1)", "[1, 2)", "[2, 6)", "[6, 12]"]
    med = table["median"].to_numpy()
    assert (np.diff(med) < 0).all()  # a fixed dose: exposure falls with age (size and maturation)
    # the youngest band: far above the adult AUC_ss of dose/CL = 16.7 (immature clearance, small size)
    assert med[0] > 2 * 100 / 6.0
    assert sim.info["n_posterior_draws"] == 200


# ---------------------------------------------------------------------- (c) pediatric populations
@pytest.mark.parametrize("sex", [1, 2])
def test_lms_reproduces_the_published_cdc_percentiles(sex):
    ref = growth_reference()
    rows = ref[ref.SEX == sex]
    assert rows.AGEMOS.min() == 0 and rows.AGEMOS.max() == 240 and len(rows) == 25 + 218  # infant file below 24 months
    assert (np.diff(rows.AGEMOS) > 0).all()
    for p, z in (("P5", -1.6448536269514722), ("P50", 0.0), ("P95", 1.6448536269514722),
                 ("P3", -1.8807936081512509), ("P97", 1.8807936081512509)):
        np.testing.assert_allclose(lms_quantile(z, rows.L, rows.M, rows.S), rows[p], rtol=1e-6)
    # published medians (CDC files): boys 3.530203168 kg at birth, 70.59761453 kg at 20 years; girls 3.39918645 kg
    first, last = rows.iloc[0], rows.iloc[-1]
    assert (first.M, last.M) == ((3.530203168, 70.59761453) if sex == 1 else (3.39918645, 58.21897289))


@pytest.mark.parametrize("months,sex", [(0.5, 1), (12.5, 2), (24.5, 1), (120.5, 2), (200.5, 1)])
def test_pediatric_weights_match_the_cdc_table(months, sex):
    ref = growth_reference()
    row = ref[(ref.SEX == sex) & np.isclose(ref.AGEMOS, months)].iloc[0]
    n = 20_000
    kids = pediatric_population(n, age=(months, months), unit="months", sex="male" if sex == 1 else "female",
                                seed=7, z_limit=None)
    assert (kids.AGE == months).all() and (kids.SEX == sex).all()
    wt = np.sort(kids.WT.to_numpy())
    # sample quantiles within 4 Monte Carlo SEs (SE of the q-quantile: sqrt(q(1-q)/n) / density)
    for q, published in ((0.05, row.P5), (0.5, row.M), (0.95, row.P95)):
        sample = np.quantile(wt, q)
        eps = 0.01 * published
        density = (np.mean(np.abs(wt - published) < eps)) / (2 * eps)
        se = math.sqrt(q * (1 - q) / n) / density
        assert abs(sample - published) < 4 * se, (q, sample, published, se)
    assert np.mean(wt > row.M) == pytest.approx(0.5, abs=4 * 0.5 / math.sqrt(n))


def test_pediatric_population_joint_draws():
    kids = pediatric_population(6000, age=(0, 18), seed=1)
    assert list(kids.columns) == ["AGE", "PMA", "SEX", "WT", "WT_Z"] and kids.attrs["age_unit"] == "years"
    assert kids.AGE.between(0, 18).all() and set(kids.SEX) == {1, 2}
    assert abs((kids.SEX == 2).mean() - 0.5) < 4 * 0.5 / math.sqrt(6000)
    np.testing.assert_allclose(kids.PMA, 40 + kids.AGE * 365.25 / 7)  # term birth: PMA = 40 weeks + age
    assert kids.WT_Z.abs().max() <= 3.0  # z truncated at 3 by default
    bands = kids.groupby(pd.cut(kids.AGE, np.arange(0, 19, 2))).WT.median()
    assert (np.diff(bands.to_numpy()) > 0).all()  # weight increases with age
    # preterm: PMA from the gestational age at birth; months and weeks as units
    pre = pediatric_population(10, age=(0, 4), unit="weeks", ga=28, seed=0)
    np.testing.assert_allclose(pre.PMA, 28 + pre.AGE)
    m = pediatric_population(10, age=(6, 6), unit="months", seed=0)
    np.testing.assert_allclose(m.PMA, 40 + 6 * 30.4375 / 7)
    assert set(pediatric_population(50, age=(1, 2), sex=0.0, seed=0).SEX) == {1}
    # reproducible
    pd.testing.assert_frame_equal(pediatric_population(50, seed=9), pediatric_population(50, seed=9))


def test_user_weight_for_age_table():
    table = pd.DataFrame({"age": [0.0, 10.0], "median": [4.0, 30.0], "cv": [0.2, 0.2]})
    kids = pediatric_population(20_000, age=(5, 5), weight_for_age=table, seed=3, z_limit=None)
    assert kids.attrs["weight_for_age"] == "weight_for_age table given"
    assert np.median(kids.WT) == pytest.approx(17.0, rel=0.01)  # linear between the rows: 4 + (30 - 4) / 2
    assert np.std(np.log(kids.WT)) == pytest.approx(math.sqrt(math.log1p(0.04)), rel=0.02)
    by_sex = pd.DataFrame({"AGE": [0, 10, 0, 10], "SEX": ["male", "male", "female", "female"],
                           "L": [1, 1, 1, 1], "M": [4, 30, 4, 20], "S": [0.1] * 4})
    k2 = pediatric_population(4000, age=(10, 10), weight_for_age=by_sex, seed=1)
    assert k2[k2.SEX == 1].WT.median() == pytest.approx(30, rel=0.02)
    assert k2[k2.SEX == 2].WT.median() == pytest.approx(20, rel=0.02)
    with pytest.raises(SpecError, match=r"age=\(5, 12\) years is outside the weight_for_age table \(0 to 10"):
        pediatric_population(5, age=(5, 12), weight_for_age=table)
    with pytest.raises(SpecError, match="needs columns MEDIAN and CV, or L, M and S"):
        pediatric_population(5, weight_for_age=table.drop(columns="cv"))
    with pytest.raises(SpecError, match="column CV, row 2"):
        pediatric_population(5, age=(1, 2), weight_for_age=table.assign(cv=[0.2, -1]))
    with pytest.raises(SpecError, match="AGE must increase"):
        pediatric_population(5, age=(1, 2), weight_for_age=table.assign(age=[10.0, 0.0]))
    with pytest.raises(SpecError, match="column SEX has only male rows"):
        pediatric_population(5, age=(1, 2), weight_for_age=by_sex.iloc[:2])


@pytest.mark.parametrize("kwargs,message", [
    ({"n": 0}, "n must be a whole number >= 1"),
    ({"n": 2.5}, "n must be a whole number >= 1"),
    ({"n": True}, "n must be a whole number >= 1"),
    ({"age": (5, 2)}, r"age=\(5, 2\): low is above high"),
    ({"age": (-1, 2)}, r"age \(years\)=-1 must be >= 0"),
    ({"age": (1, float("nan"))}, r"age \(years\)=nan must be >= 0"),
    ({"age": 3}, r"age must be \(low, high\)"),
    ({"age": (1, 25)}, "end at 20 years"),
    ({"age": (1, 300), "unit": "months"}, r"end at 20 years \(240 months\)"),
    ({"unit": "decades"}, "unit='decades'"),
    ({"sex": "x"}, "sex='x'"),
    ({"sex": 1.5}, "a probability of female must be in"),
    ({"ga": 50}, "between 20 and 45 weeks"),
    ({"ga": [30, 31]}, "ga has 2 values for 10 children"),
    ({"weight_for_age": {"AGE": [1]}}, "weight_for_age must be a DataFrame"),
])
def test_pediatric_population_refuses_bad_input(kwargs, message):
    args = {"n": 10, "age": (0, 5)} | kwargs
    with pytest.raises(SpecError, match=message):
        pediatric_population(args.pop("n"), **args)


# ---------------------------------------------------------------------- (d) bad draws refused
def test_fit_from_draws_refuses_bad_draws(kids, tmp_path):
    spec = pediatric_spec(iiv=True)
    good = {"CL": np.full(5, 6.0), "V": np.full(5, 50.0), "omega_CL": np.full(5, 0.2), "omega_V": np.full(5, 0.2),
            "TM50": np.full(5, TM50), "HILL": np.full(5, HILL), "sigma_prop": np.full(5, 0.1)}
    fit = fit_from_draws(spec, None, good, covariates=kids)
    assert fit.posterior.sizes["draw"] == 5 and fit.posterior.omega_CL.values.tolist() == [[0.2] * 5]
    # saved and read back: still marked, and the summary reads the given values
    back = bpk.load(fit.save(tmp_path / "fit.nc"))
    assert back.run_info["draws_from"] == "given"
    assert back.summary().set_index("parameter")["median"].to_dict() == pytest.approx(
        {k: v[0] for k, v in good.items()})

    def refused(draws, message):
        with pytest.raises(SpecError, match=message):
            fit_from_draws(spec, None, draws, covariates=kids)

    refused({k: v for k, v in good.items() if k != "omega_V"}, r"no draws for omega_V \(the model's population")
    refused(good | {"CL_WT": np.zeros(5)}, "'CL_WT' is not a population-level variable of this model")
    refused(good | {"V": np.full(4, 50.0)}, "V has 4 draws but CL has 5")
    refused(good | {"HILL": np.array([3.4, np.nan, 3.4, 3.4, 3.4])}, "HILL: draw 1 is not finite")
    refused(good | {"TM50": np.full(5, np.inf)}, "TM50: draw 0 is not finite")
    refused(good | {"omega_CL": np.array([0.2, 0.2, -0.1, 0.2, 0.2])},
            r"omega_CL: draw 2 \(-0.1\) is outside the support of its prior \(HalfNormal")
    refused(good | {"CL": np.full((5, 2), 6.0)}, r"CL: draws of shape \(5, 2\), expected \(n,\)")
    refused(good | {"V": 50.0}, "V: give an array of draws")
    refused(good | {"V": ["a"] * 5}, "V: the draws are not numbers")
    refused({}, "non-empty mapping")
    with pytest.raises(SpecError, match="n_draws must be a whole number >= 1"):
        prior_fit(spec, n_draws=0, covariates=kids)


# ---------------------------------------------------------------------- (e) allometric exponent: estimated or fixed
def test_allometric_exponent_estimated_or_fixed(kids):
    fixed = {"model": {"structure": "1cmt_iv"},
             "parameters": {"CL": {"typical": {"dist": "LogNormal", "mu": math.log(6.0), "sigma": 0.2},
                                   "iiv": False},
                            "V": {"typical": {"dist": "LogNormal", "mu": math.log(50.0), "sigma": 0.2},
                                  "iiv": False}},
             "covariates": [{"parameter": "CL", "column": "WT", "effect": "power", "reference": 70,
                             "coefficient": 0.75}],
             "error": {"model": "proportional"}}
    estimated = fixed | {"covariates": [fixed["covariates"][0] | {
        "coefficient": {"dist": "Normal", "mu": 0.75, "sigma": 0.1}}]}
    kids = kids[["WT"]]
    assert "CL_WT" not in population_variables(fit_from_draws(
        fixed, None, {"CL": [6.0], "V": [50.0], "sigma_prop": [0.1]}, covariates=kids).model)
    prior = prior_fit(estimated, n_draws=4000, seed=0, covariates=kids).posterior.CL_WT.values.ravel()
    assert abs(prior.mean() - 0.75) < 4 * 0.1 / math.sqrt(4000) and abs(prior.std() - 0.1) < 0.01
    # the same exponent in every draw: the estimated form gives the fixed form's exposures
    n = 2
    common = {"CL": np.full(n, 6.0), "V": np.full(n, 50.0), "sigma_prop": np.full(n, 0.1)}
    a = fit_from_draws(fixed, None, common, covariates=kids)
    b = fit_from_draws(estimated, None, common | {"CL_WT": np.full(n, 0.75)}, covariates=kids)
    runs = [simulate_regimens(f, "100q12x5", population="virtual", covariates=kids, n_draws=n, progress=False)
            for f in (a, b)]
    np.testing.assert_allclose(runs[0].values("100q12x5", "AUC_ss"), runs[1].values("100q12x5", "AUC_ss"))
    np.testing.assert_allclose(runs[0].values("100q12x5", "AUC_ss")[:, 0],
                               100 / (6.0 * (kids.WT.to_numpy() / 70) ** 0.75), rtol=2e-4)


def test_estimated_exponent_fits_simulated_children():
    """A small fit: children simulated with exponent 1.0, fitted with the prior N(0.75, 0.1) on it; the data pull
    the exponent up from the prior mean and narrow it."""
    from bayespk.simulate.study import simulate_observations, study_design

    spec = bpk.Spec.from_dict({
        "model": {"structure": "1cmt_iv"},
        "parameters": {"CL": {"typical": {"dist": "LogNormal", "mu": math.log(5.0), "sigma": 0.5},
                              "iiv": {"dist": "HalfNormal", "sigma": 0.3}},
                       "V": {"typical": {"dist": "LogNormal", "mu": math.log(40.0), "sigma": 0.5}, "iiv": False}},
        "covariates": [{"parameter": "CL", "column": "WT", "effect": "power", "reference": 70,
                        "coefficient": {"dist": "Normal", "mu": 0.75, "sigma": 0.1}}],
        "error": {"model": "proportional"},
        "sampler": {"chains": 2, "draws": 200, "tune": 200, "seed": 11},
    })
    children = pediatric_population(24, age=(1, 16), seed=4)
    design = study_design(24, dose=100.0, times=[0.5, 2, 6, 12], route="iv",
                          covariates={"WT": lambda r, n: children.WT.to_numpy()[:n]}, seed=4)
    data = simulate_observations(spec, design, {"CL": 5.0, "V": 40.0, "omega_CL": 0.15, "CL_WT": 1.0,
                                                "sigma_prop": 0.1}, seed=4)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bpk.ConvergenceWarning)
        fit = bpk.fit(bpk.PopulationModel(spec, data.drop(columns=[c for c in data if c.startswith("ETA_")])),
            progress=False)
    exponent = fit.posterior.CL_WT.values.ravel()
    assert np.median(exponent) > 0.8 and exponent.std() < 0.085
    assert float(np.exp(np.log(fit.posterior.CL).mean())) == pytest.approx(5.0, rel=0.25)
    assert "draws_from" not in fit.run_info  # a sampled fit
