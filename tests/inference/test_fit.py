"""Fitting, the run directory contract, save/load, seeds and convergence checks (short chains)."""

import json
import sys
import tomllib
import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import MODELS

import bayespk as bpk
from bayespk.cli import main
from bayespk.diagnostics import REPORTED_COLUMNS, SUMMARY_COLUMNS

THEO = MODELS / "theophylline_1cmt_oral.toml"
SHORT = dict(draws=150, tune=200, chains=2, seed=7, progress=False)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run") / "theo"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(["fit", str(THEO), "--out", str(out), "--draws", "150", "--tune", "200", "--chains", "2",
                   "--seed", "7", "--quiet"])
    assert rc == 0
    return out


def test_cli_writes_the_run_directory_contract(run_dir, capsys):
    assert sorted(p.name for p in run_dir.iterdir()) == ["diagnostics.json", "fit.nc", "spec.toml", "summary.csv"]
    table = pd.read_csv(run_dir / "summary.csv")
    assert list(table.columns) == SUMMARY_COLUMNS + REPORTED_COLUMNS
    assert list(table.parameter) == ["CL", "V", "KA", "omega_CL", "omega_V", "omega_KA", "sigma_add"]
    # typical values on the natural scale: CL ~ 0.04 L/h/kg, not log(CL) ~ -3.2
    cl = table.set_index("parameter").loc["CL"]
    assert 0.02 < cl["median"] < 0.08
    assert cl.q5 < cl["median"] < cl.q95
    diag = json.loads((run_dir / "diagnostics.json").read_text())
    for key in ("divergences", "max_r_hat", "min_ess_bulk", "min_ess_tail", "min_bfmi", "sampler", "seed",
                "wall_seconds", "versions"):
        assert key in diag
    assert diag["seed"] == 7 and diag["sampler"] == "nutpie" and diag["chains"] == 2
    spec = tomllib.loads((run_dir / "spec.toml").read_text())
    assert spec["sampler"]["draws"] == 150
    assert spec["data"]["path"].endswith("theophylline.csv") and spec["data"]["path"].startswith("/")


def test_run_spec_reproduces_the_model(run_dir):
    fit = bpk.load(run_dir)
    spec = bpk.Spec.from_toml(run_dir / "spec.toml")
    assert spec == fit.spec
    assert fit.spec.error.priors["sigma_add"] == bpk.Prior("HalfNormal", sigma=2.0)


def test_save_load_round_trip_is_exact(run_dir, tmp_path):
    fit = bpk.load(run_dir)
    path = fit.save(tmp_path / "copy.nc")
    again = bpk.load(path)
    assert again.spec == fit.spec
    for group in ("posterior", "sample_stats", "observed_data", "constant_data", "log_likelihood", "records"):
        xr.testing.assert_identical(again.tree[group].to_dataset(), fit.tree[group].to_dataset())
    pd.testing.assert_frame_equal(again.summary(), fit.summary())
    assert again.tree.attrs == fit.tree.attrs


def test_fit_holds_the_expected_groups(run_dir):
    fit = bpk.load(run_dir)
    for group in ("posterior", "sample_stats", "observed_data", "constant_data", "log_likelihood"):
        assert group in fit.tree.children
    assert fit.tree["log_likelihood"]["DV"].shape == (2, 150, 132)
    assert fit.posterior["eta_CL"].dims == ("chain", "draw", "ID")
    np.testing.assert_array_equal(fit.tree["observed_data"]["DV"].values,
                                  bpk.datasets.load("theophylline").observations.DV.to_numpy())


def test_predictions_after_load(run_dir):
    fit = bpk.load(run_dir)
    pred = fit.predict(draws=20)
    assert pred["IPRED"].sizes["obs"] == 132
    # individual predictions track the data better than the population ones
    dv = fit.tree["observed_data"]["DV"].values
    ipred = pred["IPRED"].median(("chain", "draw")).values
    pred_ = pred["PRED"].median(("chain", "draw")).values
    assert np.mean((dv - ipred) ** 2) < np.mean((dv - pred_) ** 2)
    fig, curves = bpk.plot_individual(fit, ids=[1, 2], draws=20, n_grid=30)
    assert set(curves.ID) == {1, 2}  # only the subjects asked for
    assert (curves.lower <= curves["median"] + 1e-12).all() and (curves["median"] <= curves.upper + 1e-12).all()


def test_same_seed_same_posterior_and_pymc_sampler():
    model = bpk.PopulationModel(MODELS / "phenobarbital_1cmt_iv.toml")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        a = bpk.fit(model, **(SHORT | {"draws": 50, "tune": 100}))
        b = bpk.fit(model, **(SHORT | {"draws": 50, "tune": 100}))
        c = bpk.fit(model, **(SHORT | {"draws": 50, "tune": 100, "sampler": "pymc"}))
        d = bpk.fit(model, **(SHORT | {"draws": 50, "tune": 100, "adaptation": "low_rank"}))
    np.testing.assert_array_equal(a.posterior["CL"].values, b.posterior["CL"].values)
    assert d.spec.sampler.adaptation == "low_rank" and a.spec.sampler.adaptation == "diag"
    assert not np.array_equal(a.posterior["CL"].values, d.posterior["CL"].values)  # another adaptation ran
    assert abs(float(d.posterior["CL"].median()) / float(a.posterior["CL"].median()) - 1) < 0.1
    assert c.run_info["sampler"] == "pymc"
    assert c.posterior["CL"].shape == (2, 50)
    assert "DV" in c.tree["log_likelihood"]
    # both samplers land on the same typical CL (0.0046 L/h/kg)
    assert abs(float(c.posterior["CL"].median()) / float(a.posterior["CL"].median()) - 1) < 0.1


@pytest.mark.filterwarnings("ignore::bayespk.errors.ConvergenceWarning")
@pytest.mark.parametrize("sampler", ["nutpie", "pymc"])
def test_max_treedepth_caps_every_trajectory_and_is_counted(sampler):
    model = bpk.PopulationModel(THEO)
    fit = bpk.fit(model, draws=30, tune=30, chains=1, seed=3, progress=False, sampler=sampler, max_treedepth=2)
    stats = fit.tree["sample_stats"]
    depth = stats["depth" if sampler == "nutpie" else "tree_depth"].values
    assert depth.max() <= 2 and fit.spec.sampler.max_treedepth == 2
    hits = fit.diagnostics()["treedepth_hits"]
    assert 0 < hits <= 30 and hits == int((depth == 2).sum())  # 3 leapfrog steps are too few for this posterior


def test_poor_convergence_is_warned():
    model = bpk.PopulationModel(THEO)
    with pytest.warns(bpk.ConvergenceWarning, match="ESS"):
        fit = bpk.fit(model, draws=15, tune=15, chains=2, seed=1, progress=False)
    assert fit.diagnostics()["problems"]


def test_log_likelihood_on_demand_equals_the_stored_one(run_dir, tmp_path):
    """``[sampler] log_likelihood = "none"``: nothing stored, computed when LOO asks, same values."""
    stored = bpk.load(run_dir)
    assert stored.tree["log_likelihood"]["DV"].dtype == np.float32  # "auto" at this size: float32
    spec = stored.spec.with_sampler(log_likelihood="none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        lazy = bpk.fit(bpk.PopulationModel(spec), progress=False)
    assert "log_likelihood" not in lazy.tree
    lazy.save(tmp_path / "fit.nc")
    again = bpk.load(tmp_path / "fit.nc")
    assert "log_likelihood" not in again.tree
    # same seed and settings: the same draws, so the same pointwise log-likelihood (float32 rounding)
    np.testing.assert_allclose(again.log_likelihood()["DV"].values, stored.log_likelihood()["DV"].values,
                               rtol=1e-5, atol=1e-5)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert abs(float(bpk.loo(again).elpd) - float(bpk.loo(stored).elpd)) < 1e-2


def test_diagnostics_are_computed_once(run_dir, monkeypatch):
    fit = bpk.load(run_dir)
    calls = []
    fit_module = sys.modules["bayespk.fit"]  # the module (bayespk.fit is also the fit function)
    original = fit_module.convergence
    monkeypatch.setattr(fit_module, "convergence", lambda *a, **k: calls.append(1) or original(*a, **k))
    first = fit.diagnostics()
    first["max_r_hat"] = -1.0  # a caller's change does not reach the fit
    assert fit.diagnostics()["max_r_hat"] > 0
    assert len(calls) == 1


def test_log_likelihood_option_is_validated():
    with pytest.raises(bpk.SpecError, match="log_likelihood"):
        bpk.Spec.from_toml(THEO).with_sampler(log_likelihood="float16")


def test_jax_backend_samples_the_same_posterior_as_numba():
    """nutpie's JAX backend (the GPU path; the default for ODE models) on a closed-form model, on the CPU,
    with BLQ rows (censored M3): jax.grad of the normal log-CDF is NaN in its tails, so the gradient must be
    PyTensor's (every transition diverged before)."""
    t = pd.read_csv(bpk.datasets.path("theophylline"))
    low = (t.EVID == 0) & (pd.to_numeric(t.DV, errors="coerce") < 1.0)
    t["CENS"] = low.astype(int)  # nlmixr2 style: DV is the limit of a censored row
    t.loc[low, "DV"] = "1.0"
    model = bpk.PopulationModel(THEO, bpk.read_nonmem(t))
    assert (model.design.obs_cens == 1).sum() >= 10
    fits = {b: bpk.fit(model, chains=2, draws=300, tune=300, seed=5, backend=b, progress=False)
            for b in ("jax", "numba")}
    assert fits["jax"].spec.sampler.backend == "jax"
    for name in ("CL", "V", "KA", "sigma_add"):
        a, b = (float(f.posterior[name].median()) for f in fits.values())
        sd = float(fits["numba"].posterior[name].std())
        assert abs(a - b) < 0.5 * sd, (name, a, b, sd)  # the same posterior up to Monte Carlo error
    assert fits["jax"].diagnostics()["divergences"] == 0
    with pytest.raises(bpk.SpecError, match="backend"):
        bpk.fit(model, backend="cuda")


@pytest.mark.filterwarnings("ignore::bayespk.errors.ConvergenceWarning")
def test_correlated_iiv_fit_stores_its_pointwise_log_likelihood():
    """[iiv] correlated (an LKJ correlation, whose value variable keeps its transform's name): the fit stores
    the log-likelihood, equal at a draw to the model's own DV terms at that draw (pm.compute_log_likelihood
    fails on such a model in PyMC 6.4)."""
    d = bpk.Spec.from_toml(MODELS / "theophylline_1cmt_oral.toml").to_dict()
    d["iiv"] = {"correlated": ["CL", "V"]}
    model = bpk.PopulationModel(d)
    fit = bpk.fit(model, draws=20, tune=20, chains=1, progress=False)
    stored = fit.tree["log_likelihood"]["DV"].values
    pm_model = model.build()
    draw = fit.posterior.isel(chain=0, draw=7)
    point = {}
    for rv in pm_model.free_RVs:
        value, transform = pm_model.rvs_to_values[rv], pm_model.rvs_to_transforms.get(rv)
        x = draw[rv.name].values
        point[value.name] = x if transform is None else transform.forward(x, *rv.owner.inputs).eval()
    terms = pm_model.compile_fn(pm_model.logp(vars=[pm_model["DV"]], sum=False)[0], inputs=pm_model.value_vars,
                                on_unused_input="ignore")(point)
    assert stored.shape == (1, 20, model.design.n_obs)
    np.testing.assert_allclose(stored[0, 7], terms, rtol=1e-5)  # stored as float32
