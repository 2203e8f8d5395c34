"""Simulation-based calibration and simulation-estimation on the Dask runner.

The statistics are checked on ranks with a known distribution; the workloads
on a small one-compartment IV study (10 subjects x 6 samples) whose priors are
proper and moderately informative, as SBC needs.
"""

import json

import numpy as np
import pandas as pd
import pytest

from bayespk.data.nonmem import read_nonmem
from bayespk.errors import BayesPKError, SpecError
from bayespk.evaluate.sbc import SBCResult, _limits, _replicate_table, _simulate, load_sbc, sbc, simulation_estimation
from bayespk.model import PopulationModel
from bayespk.simulate.study import study_design

SPEC = {
    "name": "sbc_1cmt_iv",
    "model": {"structure": "1cmt_iv"},
    "parameters": {
        "CL": {"typical": {"dist": "LogNormal", "mu": float(np.log(2.0)), "sigma": 0.3},
               "iiv": {"dist": "HalfNormal", "sigma": 0.3}},
        "V": {"typical": {"dist": "LogNormal", "mu": float(np.log(20.0)), "sigma": 0.3},
              "iiv": {"dist": "HalfNormal", "sigma": 0.3}},
    },
    "error": {"model": "proportional", "sigma_prop": {"dist": "HalfNormal", "sigma": 0.2}},
}  # fmt: skip


@pytest.fixture(scope="module")
def design():
    d = study_design(10, dose=100.0, times=np.array([0.25, 1, 2, 4, 8, 12]), route="iv", seed=3)
    d["DV"] = np.where(d.EVID == 0, 1.0, np.nan)  # placeholder observations: SBC uses the design only
    return d


def _ranks(rng, n, L, skew=0.0):
    u = rng.uniform(size=n) ** (1 + skew)
    return np.minimum((u * (L + 1)).astype(int), L)


def test_rank_tests_pass_uniform_ranks_and_fail_skewed_ones():
    rng = np.random.default_rng(1)
    L = 99
    ranks = pd.DataFrame({"uniform": _ranks(rng, 400, L), "skewed": _ranks(rng, 400, L, skew=1.0),
                          "too_narrow": np.where(rng.uniform(size=400) < 0.5, rng.integers(0, 10, 400),
                                                 rng.integers(90, 100, 400))})
    result = SBCResult(ranks=ranks, L=L, failed={}, fits=pd.DataFrame())
    t = result.tests().set_index("parameter")
    assert t.loc["uniform", "passes"] and t.loc["uniform", "chi2_p"] > 0.01
    assert not t.loc["skewed", "passes"] and t.loc["skewed", "ecdf_outside_band"]
    assert not t.loc["too_narrow", "passes"] and t.loc["too_narrow", "chi2_p"] < 1e-6
    assert list(result.failing().parameter) == ["skewed", "too_narrow"]
    fig = result.plot()
    assert [ax.get_title() for ax in fig.axes[:3]] == ["uniform", "skewed", "too_narrow"]


def test_replicates_are_censored_below_the_data_lloq(design):
    d = design.copy()
    d["LLOQ"] = np.where(d.EVID == 0, 0.5, np.nan)
    spec = SPEC | {"error": SPEC["error"] | {"blq": "M3"}}
    model = PopulationModel(spec, d)
    limit = _limits(model)
    assert np.allclose(limit, 0.5)
    dv = np.linspace(0.1, 3.0, model.design.n_obs)
    table = _replicate_table(model, dv, limit)
    obs = table[table.EVID == 0]
    assert ((obs.CENS == 1) == (dv < 0.5)).all()
    assert np.allclose(obs.DV, np.where(dv < 0.5, 0.5, dv))
    back = read_nonmem(table)
    assert back.summary.n_blq == int((dv < 0.5).sum())


def test_simulated_truths_are_prior_draws_and_fixed_values_are_kept(design):
    model = PopulationModel(SPEC, design)
    truths, dv = _simulate(model, None, 300, seed=1)
    assert list(truths.columns) == ["CL", "V", "omega_CL", "omega_V", "sigma_prop"]
    assert dv.shape == (300, model.design.n_obs)
    # LogNormal(log 2, 0.3): the median of 300 draws within 3 standard errors
    assert abs(np.median(np.log(truths.CL)) - np.log(2.0)) < 3 * 0.3 * 1.25 / np.sqrt(300)
    fixed = {"CL": 2.0, "V": 20.0, "omega_CL": 0.2, "omega_V": 0.2, "sigma_prop": 0.1}
    truths, dv = _simulate(model, fixed, 5, seed=1)
    assert (truths.CL == 2.0).all() and dv.shape == (5, model.design.n_obs)


def test_bad_settings_are_refused_before_any_fit(design, tmp_path):
    with pytest.raises(BayesPKError, match="n: expected a positive number of replicates, got 0"):
        sbc(SPEC, design, n=0, out=tmp_path)
    with pytest.raises(BayesPKError, match="thin_to = 500 is more than the 1 x 100 draws"):
        sbc(SPEC, design, n=2, out=tmp_path, chains=1, draws=100, thin_to=500)
    with pytest.raises(BayesPKError, match="truth: missing omega_V, sigma_prop; unknown KA"):
        simulation_estimation(SPEC, {"CL": 2.0, "V": 20.0, "omega_CL": 0.2, "KA": 1.0}, design, n=2, out=tmp_path)
    pkpd = {**SPEC, "model": {"structure": "1cmt_iv", "pd": "emax"},
            "parameters": {**SPEC["parameters"], "E0": {"guess": 10.0}, "EMAX": {"guess": 50.0},
                           "EC50": {"guess": 2.0}}}
    d = design.copy()
    d["DVID"] = 1
    d.loc[d.EVID == 0, "DVID"] = np.tile([1, 2], int((d.EVID == 0).sum()) // 2 + 1)[: int((d.EVID == 0).sum())]
    # PK/PD models are calibrated (tests/evaluate/test_sbc_families.py); a sequential PK/PD spec is not
    sequential = {**pkpd, "model": {**pkpd["model"], "pk_fit": str(tmp_path / "pk_fit")}}
    with pytest.raises(SpecError, match=r"pk_fit \(sequential PK/PD\) fixes the PK parameters"):
        sbc(sequential, d, n=2, out=tmp_path)


@pytest.mark.slow
def test_sbc_workload_reuses_the_compiled_model_and_resumes(design, tmp_path):
    r = sbc(SPEC, design, n=4, out=tmp_path, chains=1, draws=60, tune=60, thin_to=29, workers=1, progress=False)
    assert r.ranks.shape == (4, 5) and r.ranks.to_numpy().min() >= 0 and r.ranks.to_numpy().max() <= 29
    status = [json.loads(p.read_text())["result"]["compile_cache"] for p in sorted((tmp_path / "tasks").glob("*"))]
    assert status.count("hit") >= 3  # the model was compiled once, then linked for every other replicate
    for name in ("ranks.csv", "tests.csv", "sbc_ecdf.png", "workload.json"):
        assert (tmp_path / name).is_file()
    again = sbc(SPEC, design, n=4, out=tmp_path, chains=1, draws=60, tune=60, thin_to=29, workers=1, progress=False)
    pd.testing.assert_frame_equal(again.ranks, r.ranks)
    pd.testing.assert_frame_equal(load_sbc(tmp_path).ranks, r.ranks)


@pytest.mark.slow
def test_sbc_passes_the_right_model_and_fails_a_wrong_prior(design, tmp_path):
    """30 replicates: every parameter's ranks are uniform under the model that simulated them; fitting with a
    prior on CL centred 2x too high (and tight) is caught."""
    kw = dict(n=30, chains=2, draws=150, tune=200, thin_to=49, workers=2, progress=False)
    right = sbc(SPEC, design, out=tmp_path / "right", seed=5, **kw)
    assert right.tests().passes.all(), right.tests()
    wrong_spec = json.loads(json.dumps(SPEC))
    wrong_spec["parameters"]["CL"]["typical"] = {"dist": "LogNormal", "mu": float(np.log(4.0)), "sigma": 0.1}
    wrong = sbc(SPEC, design, out=tmp_path / "wrong", seed=5, fit_spec=wrong_spec, **kw)
    assert "CL" in set(wrong.failing().parameter)


@pytest.mark.slow
def test_simulation_estimation_recovers_the_truth(design, tmp_path):
    truth = {"CL": 2.0, "V": 20.0, "omega_CL": 0.25, "omega_V": 0.2, "sigma_prop": 0.1}
    r = simulation_estimation(SPEC, truth, design, n=6, out=tmp_path, chains=2, draws=150, tune=200, workers=2,
                              progress=False)
    s = r.summary().set_index("parameter")
    assert abs(s.loc["CL", "rel_bias_percent"]) < 10 and abs(s.loc["V", "rel_bias_percent"]) < 10
    assert s.loc["CL", "coverage_90"] >= 4 / 6
    assert (tmp_path / "summary.csv").is_file()
