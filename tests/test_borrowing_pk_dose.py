"""PK priors for a new population (allometry, maturation, ESS in patients) and dose selection."""

import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from bayespk.borrowing import (
    EmaxResponse,
    PKDraws,
    Regimen,
    Target,
    dose_table,
    historical_from_fit,
    pk_map_prior,
    scale_estimates,
    sigmoid_maturation,
    steady_state_exposure,
)
from bayespk.errors import ConvergenceWarning, DataError, SpecError
from bayespk.model.spec import Spec
from bayespk.structural.compartments import one_compartment

HIST = pd.DataFrame({
    "study": ["A", "B", "C", "adult fit"], "parameter": "CL", "estimate": [5.0, 5.6, 4.6, 5.2],
    "se": [0.08, 0.10, 0.12, 0.06], "weight": [70, 75, 68, 70], "omega": 0.3,
})  # fmt: skip


def test_scale_estimates_applies_allometry_and_maturation():
    s = scale_estimates(HIST, "CL", weight=20.0)
    np.testing.assert_allclose(s.y, np.log(HIST.estimate) + 0.75 * np.log(20.0 / HIST.weight))
    np.testing.assert_allclose(s.se, HIST.se)
    mat = sigmoid_maturation(47.7, 3.4)
    s2 = scale_estimates(HIST, "CL", weight=20.0, maturation=mat, age=60.0)
    np.testing.assert_allclose(s2.y - s.y, np.log(mat(60.0)))  # adults (no age column) count as mature
    v = scale_estimates(HIST.assign(parameter="V"), "V", weight=20.0)
    np.testing.assert_allclose(v.y, np.log(HIST.estimate) + np.log(20.0 / HIST.weight))
    with pytest.raises(SpecError, match="exponent"):
        scale_estimates(HIST.assign(parameter="KA"), "KA", weight=20.0)
    with pytest.raises(DataError, match="column se"):
        scale_estimates(HIST.assign(se="big"), "CL", weight=20.0)
    with pytest.raises(DataError, match="no row for parameter"):
        scale_estimates(HIST, "V", weight=20.0)


def test_pk_map_prior_is_centred_on_the_scaled_history_and_counts_patients():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        prior = pk_map_prior(HIST, "CL", weight=20.0, seed=3, draws=1000, tune=500, chains=2)
    target = np.exp(np.mean(scale_estimates(HIST, "CL", weight=20.0).y))
    summary = prior.summary()
    assert summary.loc["MAP", "median"] == pytest.approx(target, rel=0.1)
    assert summary.loc["robust MAP", "97.5%"] > summary.loc["MAP", "97.5%"]
    ess = prior.ess()
    # ESS in patients: omega^2 / var(log CL) for the MAP; robustification lowers it
    assert ess.loc["moment", "MAP"] == pytest.approx(0.3**2 / prior.mixture.var(), rel=1e-6)
    assert 0 < ess.loc["elir", "robust MAP"] < ess.loc["elir", "MAP"]
    assert prior.robust.weights[-1] == pytest.approx(0.2) and prior.robust.s[-1] == 1.0
    mp = prior.model_prior()
    assert mp.support == "positive" and mp.weights == tuple(prior.robust.weights)


def test_historical_from_fit_reads_log_typical_values():
    rng = np.random.default_rng(0)
    cl = np.exp(rng.normal(np.log(5.0), 0.05, size=(2, 500)))
    post = xr.Dataset({"CL": (("chain", "draw"), cl), "omega_CL": (("chain", "draw"), np.full((2, 500), 0.3)),
                       "V": (("chain", "draw"), np.full((2, 500), 50.0)), "z_CL": (("chain", "draw", "ID"),
                                                                                   np.zeros((2, 500, 12)))})
    spec = Spec.from_dict({"model": {"structure": "1cmt_iv"},
                           "parameters": {"CL": {"guess": 5.0}, "V": {"guess": 50.0}},
                           "covariates": [{"parameter": "CL", "column": "WT", "effect": "power", "reference": 70,
                                           "coefficient": 0.75}]})

    class FakeFit:
        posterior = post

    FakeFit.spec = spec
    h = historical_from_fit(FakeFit(), ("CL",))
    assert h.loc[0, "weight"] == 70.0 and h.loc[0, "n"] == 12 and h.loc[0, "omega"] == pytest.approx(0.3)
    assert h.loc[0, "estimate"] == pytest.approx(5.0, rel=0.01) and h.loc[0, "se"] == pytest.approx(0.05, rel=0.1)
    with pytest.raises(SpecError, match="weight="):
        historical_from_fit(FakeFit(), ("V",))


@pytest.mark.parametrize("route, kw", [("iv", {}), ("infusion", {"infusion_duration": 2.0}), ("oral", {})])
def test_steady_state_exposures_match_superposition(route, kw):
    cl, v, ka, tau, dose, n = 3.0, 40.0, 0.8, 12.0, 100.0, 200
    t = np.linspace(0, tau, 4001) + (n - 1) * tau
    dt = t[:, None] - np.arange(n)[None, :] * tau
    shape = dt.shape
    rate = np.full(shape, dose / kw["infusion_duration"]) if route == "infusion" else np.zeros(shape)
    c = one_compartment(np.maximum(dt, 0), np.full(shape, dose), rate, np.full(shape, route == "oral"), cl, v,
                        ka if route == "oral" else None)
    c = np.where(dt >= 0, c, 0.0).sum(axis=1)
    e = steady_state_exposure(dose, Regimen(tau, route, **kw), cl, v, ka)
    assert e["auc"] == pytest.approx(np.trapezoid(c, t), rel=1e-6)
    assert e["cmax"] == pytest.approx(c.max(), rel=1e-4)
    assert e["cmin"] == pytest.approx(c.min(), rel=1e-6)
    assert e["cavg"] == pytest.approx(e["auc"] / tau)


def test_dose_table_probabilities_are_monotone_and_the_criterion_is_applied():
    rng = np.random.default_rng(1)
    draws = PKDraws.from_arrays(CL=np.exp(rng.normal(np.log(2.0), 0.1, 2000)),
                                V=np.exp(rng.normal(np.log(20.0), 0.1, 2000)), omega_CL=np.full(2000, 0.3),
                                omega_V=np.full(2000, 0.2))
    doses = [50, 100, 200, 400, 800]
    tab = dose_table(draws, doses, Regimen(12.0), Target("auc", lower=80), safety=Target("cmax", lower=25),
                     max_risk=0.1, seed=2)
    t = tab.table
    assert np.all(np.diff(t.p_target) >= 0) and np.all(np.diff(t.p_exceed) >= 0)
    ok = t[t.p_exceed <= 0.1]
    assert tab.best_dose == ok.loc[ok.p_target.idxmax(), "dose"]
    assert t.loc[t.dose == tab.best_dose, "best"].all()
    # the typical patient at the median parameters: AUC = dose / CL
    assert t.loc[t.dose == 200, "auc_median"].iloc[0] == pytest.approx(100.0, rel=0.05)
    util = dose_table(draws, doses, Regimen(12.0), Target("auc", lower=80), safety=Target("cmax", lower=25),
                      criterion="utility", penalty=2.0, seed=2)
    assert util.best_dose == util.table.loc[(util.table.p_target - 2 * util.table.p_exceed).idxmax(), "dose"]
    er = dose_table(draws, doses, Regimen(12.0), Target("auc", lower=80), safety=Target("cmax", lower=25),
                    criterion="response_with_safety", response=EmaxResponse("auc", 0.1, 0.6, 60.0), seed=2)
    assert np.all(np.diff(er.table.expected_response) > 0)
    typical = dose_table(draws, doses, Regimen(12.0), Target("auc", lower=80), level="typical", criterion="utility",
                         seed=2)
    # without between-patient variability the probability curve is steeper
    assert typical.table.p_target.iloc[-1] >= tab.table.p_target.iloc[-1]
    with pytest.raises(SpecError, match="safety"):
        dose_table(draws, doses, Regimen(12.0), Target("auc", lower=80))
    with pytest.raises(SpecError, match="KA"):
        dose_table(draws, doses, Regimen(12.0, "oral"), Target("auc", lower=80), criterion="utility")


def test_dose_table_applies_covariate_effects_from_a_fit_spec():
    spec = Spec.from_dict({"model": {"structure": "1cmt_iv"},
                           "parameters": {"CL": {"guess": 5.0}, "V": {"guess": 50.0}},
                           "covariates": [{"parameter": "CL", "column": "WT", "effect": "power", "reference": 20,
                                           "coefficient": 0.75}]})
    post = xr.Dataset({k: (("chain", "draw"), np.full((1, 400), v)) for k, v in
                       {"CL": 2.0, "V": 20.0, "omega_CL": 1e-6, "omega_V": 1e-6}.items()})

    class FakeFit:
        posterior = post

    FakeFit.spec = spec
    draws = PKDraws.from_fit(FakeFit(), n=None)
    tab = dose_table(draws, [100.0], Regimen(24.0, per_kg=True), Target("auc", lower=1.0),
                     population=pd.DataFrame({"WT": [10.0, 40.0]}), criterion="utility").table
    # AUC = dose * WT / (CL * (WT/20)^0.75): 10 kg -> 500 / 2^-0.75... median over the two patients
    auc = 100 * np.array([10, 40]) / (2.0 * (np.array([10, 40]) / 20) ** 0.75)
    assert tab.auc_median.iloc[0] == pytest.approx(np.median(auc), rel=1e-3)
