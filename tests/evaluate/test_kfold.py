"""K-fold cross-validation by subject: the split, the held-out density against closed forms, the workload."""

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from scipy import stats

from bayespk.errors import BayesPKError
from bayespk.evaluate.kfold import KFoldResult, _heldout_density, compare_kfold, folds, kfold, load_kfold
from bayespk.model import PopulationModel
from bayespk.simulate.study import study_design

DOSE = 100.0
SPEC = {
    "name": "kfold_1cmt_iv",
    "model": {"structure": "1cmt_iv"},
    "parameters": {
        "CL": {"typical": {"dist": "LogNormal", "mu": float(np.log(2.0)), "sigma": 0.3}, "iiv": False},
        "V": {"typical": {"dist": "LogNormal", "mu": float(np.log(20.0)), "sigma": 0.3},
              "iiv": {"dist": "HalfNormal", "sigma": 0.3}},
    },
    "error": {"model": "proportional", "sigma_prop": {"dist": "HalfNormal", "sigma": 0.2}},
}  # fmt: skip


def _design(n, times, seed=3):
    d = study_design(n, dose=DOSE, times=np.asarray(times, float), route="iv", seed=seed)
    rng = np.random.default_rng(seed)
    obs = d.EVID == 0
    t = d.loc[obs, "TIME"].to_numpy()
    d.loc[obs, "DV"] = DOSE / 20.0 * np.exp(-0.1 * t) * np.exp(rng.normal(0, 0.2, obs.sum()))
    return d


def _posterior(**values):
    return xr.Dataset({k: (("chain", "draw"), np.full((1, 1), v)) for k, v in values.items()})


def test_folds_are_balanced_reproducible_and_stratified():
    ids = pd.Series(np.arange(1, 24))
    f = folds(ids, 5, seed=1)
    assert sorted(f.value_counts()) == [4, 4, 5, 5, 5]
    assert f.equals(folds(ids, 5, seed=1)) and not f.equals(folds(ids, 5, seed=2))
    strata = pd.Series(np.where(ids <= 10, "low", "high"))
    fs = folds(ids, 5, seed=1, strata=strata)
    low = fs[(ids <= 10).to_numpy()]
    assert sorted(low.value_counts()) == [2, 2, 2, 2, 2]  # each fold gets 2 of the 10 'low' subjects
    assert len(folds(ids, 23)) == 23 and folds(ids, 23).nunique() == 23  # leave-one-subject-out
    with pytest.raises(BayesPKError, match="k = 30 folds is more than the 23 subjects"):
        folds(ids, 30)
    with pytest.raises(BayesPKError, match="k: expected at least 2 folds"):
        folds(ids, 1)


def test_heldout_density_without_iiv_is_the_likelihood_at_the_typical_values():
    d = _design(4, [0.5, 2, 6, 12])
    model = PopulationModel(SPEC, d)
    post = _posterior(CL=2.5, V=18.0, omega_V=1e-8, sigma_prop=0.15)
    elpd = _heldout_density(model, post, n_draws=1, n_eta=3, seed=0)
    obs = d[d.EVID == 0]
    pred = DOSE / 18.0 * np.exp(-2.5 / 18.0 * obs.TIME)
    expected = stats.norm.logpdf(obs.DV, pred, 0.15 * pred)
    assert np.allclose(elpd, pd.Series(expected).groupby(obs.ID.to_numpy()).sum().to_numpy(), rtol=1e-7)


def test_heldout_density_integrates_the_random_effect():
    """One observation per subject, IIV on V: the Monte Carlo density against Gauss-Hermite quadrature."""
    d = _design(3, [4.0])
    model = PopulationModel(SPEC, d)
    post = _posterior(CL=2.0, V=20.0, omega_V=0.4, sigma_prop=0.1)
    elpd = _heldout_density(model, post, n_draws=1, n_eta=20000, seed=1)
    x, w = np.polynomial.hermite_e.hermegauss(80)
    obs = d[d.EVID == 0]
    for j, (_, r) in enumerate(obs.iterrows()):
        v = 20.0 * np.exp(0.4 * x)
        pred = DOSE / v * np.exp(-2.0 / v * r.TIME)
        dens = np.sum(w * stats.norm.pdf(r.DV, pred, 0.1 * pred)) / np.sqrt(2 * np.pi)
        # Monte Carlo error: the density of an informative observation comes from ~10% of the etas drawn,
        # a relative SE of ~2% at 20,000 draws; 3 SE
        assert elpd[j] == pytest.approx(np.log(dens), abs=0.06)


def test_heldout_density_of_a_prediction_that_underflows_is_zero_not_an_error():
    """A parameter draw whose predictions underflow to 0 (and with them the proportional error SD): the held-out
    density is 0 (elpd -inf) for every subject, as the model says; the SD > 0 parameter check is not raised."""
    d = _design(2, [0.5, 2])
    model = PopulationModel(SPEC, d)
    post = _posterior(CL=2000.0, V=1.0, omega_V=1e-8, sigma_prop=0.15)  # exp(-1000) underflows
    elpd = _heldout_density(model, post, n_draws=1, n_eta=3, seed=0)
    assert elpd.shape == (2,) and np.all(elpd == -np.inf)


def test_bad_input_is_refused(tmp_path):
    d = _design(6, [1, 4])
    with pytest.raises(BayesPKError, match="k = 8 folds is more than the 6 subjects"):
        kfold(SPEC, d, k=8, out=tmp_path)
    with pytest.raises(BayesPKError, match="stratify: no column 'SEX'"):
        kfold(SPEC, d, k=2, out=tmp_path, stratify="SEX")
    with pytest.raises(BayesPKError, match="n_eta: expected a positive integer"):
        kfold(SPEC, d, k=2, out=tmp_path, n_eta=0)


@pytest.mark.slow
def test_kfold_workload_and_comparison(tmp_path):
    d = _design(12, [0.5, 2, 6, 12])
    kw = dict(k=3, seed=2, chains=1, draws=100, tune=100, draws_used=20, n_eta=50, workers=2, progress=False)
    a = kfold(SPEC, d, out=tmp_path / "a", **kw)
    assert len(a.pointwise) == 12 and set(a.pointwise.fold) == {0, 1, 2} and np.isfinite(a.elpd)
    assert (tmp_path / "a" / "elpd_subjects.csv").is_file()
    again = load_kfold(tmp_path / "a")
    assert again.elpd == pytest.approx(a.elpd)
    # a model held by its prior to a volume 4x too small predicts every new subject worse
    wrong = {**SPEC, "parameters": {**SPEC["parameters"], "V": {
        "typical": {"dist": "LogNormal", "mu": float(np.log(5.0)), "sigma": 0.02}, "iiv": False}}}
    kfold(wrong, d, out=tmp_path / "b", **kw)
    table = compare_kfold({"right": a, "wrong": tmp_path / "b"})
    assert list(table.index) == ["right", "wrong"] and table.loc["wrong", "elpd_diff"] > 2 * table.loc["wrong", "dse"]
    moved = KFoldResult(pointwise=a.pointwise.assign(fold=(a.pointwise.fold + 1) % 3), k=3, failed={},
                        fits=a.fits)  # the same subjects in other folds (another seed)
    with pytest.raises(BayesPKError, match="not cross-validated on the same subjects and folds"):
        compare_kfold({"a": a, "c": moved})


def _covariate_study():
    from bayespk.model.spec import Spec
    from bayespk.simulate.study import simulate_observations

    rng = np.random.default_rng(4)
    design = study_design(16, dose=DOSE, times=np.array([0.5, 2, 6, 12]), route="iv", seed=4,
                          covariates={"WT": lambda r, n: np.round(np.exp(rng.normal(np.log(70), 0.45, n)), 1),
                                      "NOISE": lambda r, n: np.round(rng.normal(0, 1, n), 2)})
    truth_spec = Spec.from_dict({**SPEC, "covariates": [{"parameter": "CL", "column": "WT", "effect": "power",
                                                          "reference": 70.0}]})
    truth = {"CL": 2.0, "V": 20.0, "omega_V": 0.15, "CL_WT": 1.5, "sigma_prop": 0.1}
    return simulate_observations(truth_spec, design, truth, seed=5).drop(columns=["ETA_V"])


CANDIDATES = [{"parameter": "CL", "column": "WT", "effect": "power", "reference": 70.0},
              {"parameter": "CL", "column": "NOISE", "effect": "exponential", "reference": 0.0,
               "coefficient": {"dist": "Normal", "mu": 0.0, "sigma": 0.5}}]


def test_covariate_search_refuses_bad_candidates(tmp_path):
    from bayespk.evaluate.covsearch import covariate_search

    d = _covariate_study()
    with pytest.raises(BayesPKError, match="candidate 1 \\(CL_AGE\\): no column 'AGE' in the data"):
        covariate_search(SPEC, [{"parameter": "CL", "column": "AGE", "effect": "power"}], d, out=tmp_path)
    with pytest.raises(BayesPKError, match="candidate 1 \\(KA_WT\\): no parameter 'KA'"):
        covariate_search(SPEC, [{"parameter": "KA", "column": "WT", "effect": "power"}], d, out=tmp_path)
    with pytest.raises(BayesPKError, match="candidate 2: CL_WT is already in the model or listed twice"):
        covariate_search(SPEC, [CANDIDATES[0], CANDIDATES[0]], d, out=tmp_path)


@pytest.mark.slow
def test_covariate_search_keeps_the_true_relation_and_not_the_null_one(tmp_path):
    from bayespk.evaluate.covsearch import covariate_search

    r = covariate_search(SPEC, CANDIDATES, _covariate_study(), out=tmp_path, k=4, seed=1, chains=1, draws=150,
                         tune=150, draws_used=30, n_eta=100, workers=2, progress=False)
    assert r.selected == ["CL_WT"], r.steps
    added = r.steps[(r.steps.step == "forward") & r.steps.decision.str.startswith("added")]
    assert list(added.relation) == ["CL_WT"]
    assert (tmp_path / "steps.csv").is_file()
    assert [c["column"] for c in r.spec["covariates"]] == ["WT"]


def test_covariate_search_goes_on_past_a_candidate_whose_folds_failed(tmp_path, monkeypatch):
    """A candidate model with a failed fold cannot be compared on the same subjects: it is listed as not
    evaluated and not added, and the search goes on (the cross-validations are stand-ins: per-subject elpd
    better by 1 with WT, by 0 on average with NOISE (+-0.3 per subject), a fold that failed whenever V_WT is in
    the model)."""
    import bayespk.evaluate.kfold as kfold_module
    from bayespk.evaluate.covsearch import covariate_search

    ids = np.arange(1, 17)
    fold = (ids - 1) % 4 + 1
    noise = 0.3 * np.cos(2.0 * ids)
    noise -= noise.mean()

    def fake_kfold(spec, data=None, *, out, k, **settings):
        columns = {(c["parameter"], c["column"]) for c in spec.get("covariates", [])}
        elpd = -10.0 + 1.0 * (("CL", "WT") in columns) + noise * (("CL", "NOISE") in columns) + 0.1 * np.sin(ids)
        keep = fold != 2 if ("V", "WT") in columns else np.ones(16, bool)
        failed = {} if keep.all() else {"fold2": "the sampler could not start"}
        pointwise = pd.DataFrame({"ID": ids[keep], "fold": fold[keep], "elpd": elpd[keep]})
        return KFoldResult(pointwise=pointwise, k=k, failed=failed, fits=pd.DataFrame())

    monkeypatch.setattr(kfold_module, "kfold", fake_kfold)
    broken = {"parameter": "V", "column": "WT", "effect": "power", "reference": 70.0}
    r = covariate_search(SPEC, [*CANDIDATES, broken], _covariate_study(), out=tmp_path, k=4, progress=False)
    assert r.selected == ["CL_WT"], r.steps
    skipped = r.steps[r.steps.relation == "V_WT"]
    assert len(skipped) == 2  # both forward steps list it
    assert skipped.decision.str.startswith("not added: not evaluated, 1 of 4 folds failed (first: fold2: the "
                                           "sampler could not start)").all()
    assert skipped.elpd.isna().all()
    null = r.steps[(r.steps.relation == "CL_NOISE")]
    assert null.decision.str.startswith("not added").all() and len(null) == 2
    assert (r.steps.step == "backward").any()  # it reached backward elimination

    def base_fails(spec, data=None, *, out, k, **settings):
        result = fake_kfold(spec, data, out=out, k=k)
        return fake_kfold({**spec, "covariates": [broken]}, data, out=out, k=k) if not spec.get("covariates") \
            else result

    monkeypatch.setattr(kfold_module, "kfold", base_fails)
    with pytest.raises(BayesPKError, match="the base model's k-fold is incomplete: 1 of 4 folds failed"):
        covariate_search(SPEC, CANDIDATES, _covariate_study(), out=tmp_path / "b", k=4, progress=False)
