"""Whole-model priors from an earlier run ([prior_from] -> [joint_prior]): construction, spec round trip,
borrowing that narrows the posterior, a robust prior that yields to conflicting data, SBC, bad input."""

import math
import tomllib

import numpy as np
import pandas as pd
import pymc as pm
import pytest
from scipy import stats

import bayespk as bpk
from bayespk.errors import SpecError
from bayespk.evaluate.sbc import sbc
from bayespk.model.joint_prior import JOINT_NAME, JointPrior, from_unconstrained, to_unconstrained
from bayespk.model.prior_from import whole_model_prior
from bayespk.model.spec import Spec
from bayespk.simulate import simulate_observations, study_design

SPEC = {
    "model": {"structure": "1cmt_iv"},
    "parameters": {"CL": {"typical": {"dist": "LogNormal", "mu": 1.0, "sigma": 1.0},
                          "iiv": {"dist": "HalfNormal", "sigma": 0.5}},
                   "V": {"typical": {"dist": "LogNormal", "mu": 3.0, "sigma": 1.0},
                         "iiv": {"dist": "HalfNormal", "sigma": 0.5}}},
    "error": {"model": "proportional", "sigma_prop": {"dist": "HalfNormal", "sigma": 0.5}},
    "sampler": {"chains": 2, "draws": 500, "tune": 500, "seed": 3},
}
TRUTH = {"CL": 3.0, "V": 20.0, "omega_CL": 0.3, "omega_V": 0.25, "sigma_prop": 0.15}
TIMES = np.array([0.25, 1, 2, 4, 8, 12, 24])


def _study(n, truth, seed):
    design = study_design(n, dose=100.0, times=TIMES, route="iv", seed=seed)
    return simulate_observations(Spec.from_dict(SPEC), design, truth, seed=seed)


def _fit(spec, data):
    return bpk.fit(bpk.PopulationModel(spec, data), progress=False)


@pytest.fixture(scope="module")
def adult(tmp_path_factory):
    """An earlier ("adult") run of 30 subjects, saved as a run directory."""
    folder = tmp_path_factory.mktemp("adult")
    fit = _fit(Spec.from_dict(SPEC), _study(30, TRUTH, seed=1))
    fit.save(folder / "run")
    return fit, folder / "run"


# ---------------------------------------------------------------------- construction
def test_transforms_invert_on_every_support():
    x = np.array([0.2, 0.5, 0.9])
    for lo, hi in ((0.0, math.inf), (0.0, 1.0), (-math.inf, math.inf), (0.1, 2.0), (-math.inf, 1.0)):
        np.testing.assert_allclose(from_unconstrained(to_unconstrained(x, lo, hi), lo, hi), x, rtol=1e-12)


def test_from_draws_keeps_the_correlation_tempers_and_sets_the_wide_component():
    rng = np.random.default_rng(0)
    cov = np.array([[0.04, 0.03], [0.03, 0.09]])
    u = rng.multivariate_normal([np.log(3.0), 0.5], cov, size=20000)
    draws = {"CL": np.exp(u[:, 0]), "CL_WT": u[:, 1]}
    bounds = {"CL": (0.0, math.inf), "CL_WT": (-math.inf, math.inf)}
    jp = JointPrior.from_draws(draws, bounds, weight=0.5, robust=0.2, n_subjects=25)
    np.testing.assert_allclose(jp.mean, [np.log(3.0), 0.5], atol=0.01)
    np.testing.assert_allclose(np.asarray(jp.cov), cov / 0.5, rtol=0.05)  # tempered: covariance / a0
    np.testing.assert_allclose(jp.robust_sd, 5 * np.sqrt(np.diag(cov)), rtol=0.05)  # sqrt(N) x posterior SD
    assert jp.source["effective_subjects"] == 12.5


def test_the_model_density_is_the_robust_mixture():
    jp = JointPrior(("CL", "V"), (0.0, 0.0), (math.inf, math.inf), (1.0, 3.0), ((0.04, 0.01), (0.01, 0.09)),
                    robust=0.25, robust_sd=(1.0, 1.5))
    with pm.Model():
        jp.create()
        logp = pm.modelcontext(None).compile_logp()
    u = np.array([1.3, 2.4])
    expected = np.log(0.75 * stats.multivariate_normal([1, 3], np.asarray(jp.cov)).pdf(u)
                      + 0.25 * stats.multivariate_normal([1, 3], np.diag([1.0, 2.25])).pdf(u))
    assert logp({JOINT_NAME: u}) == pytest.approx(expected, rel=1e-9)


def test_from_estimates_gives_log_normal_marginals_with_the_published_cv():
    jp = JointPrior.from_estimates({"CL": (3.0, 0.6), "CL_WT": (0.75, 0.1)},
                                   {"CL": (0.0, math.inf), "CL_WT": (-math.inf, math.inf)})
    assert jp.mean[0] == pytest.approx(math.log(3.0))
    assert jp.sd()[0] == pytest.approx(math.sqrt(math.log(1 + 0.2 ** 2)))
    assert jp.sd()[1] == pytest.approx(0.1)


# ---------------------------------------------------------------------- spec
def test_prior_from_a_run_is_stored_inline_and_reproduces_without_the_run(adult, tmp_path):
    fit, run = adult
    spec_file = tmp_path / "child.toml"
    text = _toml(SPEC) + f'\n[prior_from]\nrun = "{run}"\nweight = 0.5\nrobust = 0.2\n'
    spec_file.write_text(text)
    spec = Spec.from_toml(spec_file)
    jp = spec.joint_prior
    assert set(jp.names) == {"CL", "V", "omega_CL", "omega_V", "sigma_prop"}
    assert jp.source["run"] == str(run) and jp.source["n_subjects"] == 30
    post = fit.posterior
    j = jp.names.index("CL")
    assert jp.mean[j] == pytest.approx(float(np.log(post["CL"]).mean()), rel=1e-9)
    assert math.sqrt(jp.cov[j][j]) == pytest.approx(float(np.log(post["CL"]).std()) / math.sqrt(0.5), rel=1e-2)
    # the earlier posterior's correlation (CL with V) is kept
    r = np.corrcoef(np.log(post["CL"].values.ravel()), np.log(post["V"].values.ravel()))[0, 1]
    k = jp.names.index("V")
    assert jp.cov[j][k] / math.sqrt(jp.cov[j][j] * jp.cov[k][k]) == pytest.approx(r, abs=1e-6)
    resolved = tomllib.loads(spec.to_toml())
    assert "prior_from" not in resolved and resolved["joint_prior"]["names"] == list(jp.names)
    assert Spec.from_dict(resolved).joint_prior == jp  # no run needed
    only = Spec.from_dict(_with(prior_from={"run": str(run), "parameters": ["CL", "V"]}))
    assert only.joint_prior.names == ("CL", "V")


def test_borrowing_narrows_the_posterior_and_a_robust_prior_yields_to_conflict(adult):
    fit, run = adult
    small = _study(8, TRUTH, seed=11)
    conflict = _study(8, TRUTH | {"CL": 3.0 * 3}, seed=12)
    plain = Spec.from_dict(SPEC)
    full = Spec.from_dict(_with(prior_from={"run": str(run)}))
    robust = Spec.from_dict(_with(prior_from={"run": str(run), "robust": 0.2}))

    def log_cl(spec, data):
        x = np.log(_fit(spec, data).posterior["CL"].values.ravel())
        return np.median(x), x.std()

    m0, s0 = log_cl(plain, small)
    m1, s1 = log_cl(full, small)
    assert s1 < 0.75 * s0  # the earlier 30 subjects add to the 8 new ones
    assert abs(m1 - math.log(3.0)) < 0.15
    c0, _ = log_cl(plain, conflict)
    c1, _ = log_cl(full, conflict)
    c2, _ = log_cl(robust, conflict)
    # the new data say CL ~ 9 (log 2.2); the non-robust prior holds it near the earlier 3, the robust one follows
    assert c1 < c0 - 0.3
    assert abs(c2 - c0) < 0.15 and abs(c2 - c0) < 0.5 * abs(c1 - c0)


@pytest.mark.slow
def test_sbc_of_a_model_with_a_joint_prior_is_calibrated(adult, tmp_path):
    _, run = adult
    spec = Spec.from_dict(_with(prior_from={"run": str(run), "weight": 0.3, "robust": 0.1}))
    design = study_design(8, dose=100.0, times=TIMES, route="iv", seed=5).assign(DV=1.0)
    res = sbc(spec, design, n=40, out=tmp_path / "sbc", chains=1, draws=200, tune=300, thin_to=19,
                  workers=2, progress=False)
    assert len(res.ranks) >= 38  # at most two replicates failed
    tests = res.tests(bins=4).set_index("parameter")
    for name in ("CL", "V", "omega_CL", "sigma_prop"):
        assert tests.loc[name, "chi2_p"] > 0.001, tests.loc[name]


# ---------------------------------------------------------------------- bad input
@pytest.mark.parametrize("table, message", [
    ({"weight": 1.5}, r"\[prior_from\] weight: the power-prior weight must be in \(0, 1\]"),
    ({"weight": 0}, r"weight: the power-prior weight must be in \(0, 1\]"),
    ({"robust": 1.0}, r"\[prior_from\] robust: the weight of the wide component must be in \[0, 1\)"),
    ({"parameters": ["CL", "KA"]}, r"parameters: KA not a scalar population parameter of the new model"),
    ({"subjects": 50}, r"subjects: 50 is more than the 30 subjects"),
    ({"subjects": 10, "weight": 0.5}, r"give weight \(a0\) or subjects"),
    ({"colour": 1}, r"\[prior_from\]: unknown key 'colour'"),
])
def test_bad_prior_from_tables_are_refused_naming_the_key(adult, table, message):
    _, run = adult
    with pytest.raises(SpecError, match=message):
        Spec.from_dict(_with(prior_from={"run": str(run)} | table))


def test_a_run_of_another_model_or_no_run_is_refused(adult, tmp_path):
    _, run = adult
    other = {"model": {"structure": "1cmt_oral"},
             "parameters": {"KA": {"guess": 1.0}, "CL": {"guess": 3.0}, "V": {"guess": 20.0}},
             "error": {"model": "additive"}}
    with pytest.raises(SpecError, match=r"parameters: KA not in the earlier run"):
        Spec.from_dict(other | {"prior_from": {"run": str(run), "parameters": ["KA", "CL"]}})
    with pytest.raises(SpecError, match=r"run: .*nowhere does not exist"):
        Spec.from_dict(_with(prior_from={"run": str(tmp_path / "nowhere")}))
    with pytest.raises(SpecError, match=r"give one \(a resolved spec"):
        Spec.from_dict(_with(prior_from={"run": str(run)}, joint_prior={}))
    text = tmp_path / "not_a_fit.nc"
    text.write_text("hello")
    with pytest.raises(SpecError, match="not a readable fit file"):
        Spec.from_dict(_with(prior_from={"run": str(text)}))


def test_a_joint_prior_table_that_does_not_fit_the_model_is_refused():
    good = {"names": ["CL", "V"], "lower": [0, 0], "upper": ["inf", "inf"], "mean": [1.0, 3.0],
            "cov": [[0.04, 0.0], [0.0, 0.09]]}
    assert Spec.from_dict(_with(joint_prior=good)).joint_prior.names == ("CL", "V")
    for change, message in (({"names": ["CL", "KA"]}, r"KA not a scalar population parameter of this model"),
                            ({"cov": [[0.04, 0.05], [0.05, 0.01]]}, "must be positive definite"),
                            ({"cov": [[0.04, 0.0]]}, r"cov: needs 2 x 2 values"),
                            ({"lower": [-1, 0]}, r"CL has support \(-1, inf\) in the joint prior but \(0, inf\)"),
                            ({"robust": 0.3}, r"robust_sd: a robust prior needs 2 SDs")):
        with pytest.raises(SpecError, match=message):
            Spec.from_dict(_with(joint_prior=good | change))


def test_published_estimates_as_the_source(tmp_path):
    table = pd.DataFrame({"parameter": ["CL", "V", "omega_CL"], "estimate": [3.0, 20.0, 0.3], "rse": [10, 8, 25]})
    table.to_csv(tmp_path / "published.csv", index=False)
    spec = Spec.from_dict(_with(prior_from={"estimates": "published.csv", "robust": 0.1, "n_subjects": 40}),
                          base_dir=tmp_path)
    jp = spec.joint_prior
    assert jp.names == ("CL", "omega_CL", "V")  # in the model's order
    assert jp.sd()[0] == pytest.approx(math.sqrt(math.log(1 + 0.1 ** 2)))
    np.testing.assert_allclose(jp.robust_sd, np.sqrt(40) * jp.sd())
    table.drop(columns="rse").to_csv(tmp_path / "bad.csv", index=False)
    with pytest.raises(SpecError, match="needs one of the columns se"):
        Spec.from_dict(_with(prior_from={"estimates": "bad.csv"}), base_dir=tmp_path)
    table.assign(rse=[10, -1, 25]).to_csv(tmp_path / "neg.csv", index=False)
    with pytest.raises(SpecError, match=r"estimates row 3 \(V\): the standard error must be a number > 0"):
        Spec.from_dict(_with(prior_from={"estimates": "neg.csv"}), base_dir=tmp_path)


def test_whole_model_prior_from_a_fit_object_in_python(adult):
    fit, _ = adult
    jp = whole_model_prior(fit, Spec.from_dict(SPEC), parameters=["CL", "omega_CL"], subjects=6)
    assert jp.source["weight"] == pytest.approx(6 / 30)
    spec = Spec.from_dict(SPEC).with_joint_prior(jp)
    with pytest.raises(SpecError, match="population parameter"):
        Spec.from_dict({**SPEC, "model": {"structure": "1cmt_oral"},
                        "parameters": {**SPEC["parameters"], "KA": {"guess": 1.0}}}).with_joint_prior(
            jp.__class__(("KAX",), (0.0,), (math.inf,), (0.0,), ((1.0,),)))
    assert spec.to_dict()["joint_prior"]["names"] == ["CL", "omega_CL"]


def _with(**tables) -> dict:
    return {**SPEC, **tables}


def _toml(d: dict) -> str:
    import tomli_w

    return tomli_w.dumps(d)


def test_the_prior_table_shows_the_joint_prior_for_the_parameters_it_covers():
    from bayespk.model.describe import prior_table

    good = {"names": ["CL", "omega_CL"], "lower": [0, 0], "upper": ["inf", "inf"], "mean": [1.0, -1.2],
            "cov": [[0.04, 0.0], [0.0, 0.09]], "source": {"run": "/x/runs/adult", "weight": 0.5}}
    table = prior_table(Spec.from_dict(_with(joint_prior=good))).set_index("parameter")
    assert table.loc["CL", "distribution"] == "joint normal on the log scale"
    assert table.loc["CL", "source"] == "joint prior from adult"
    assert "mean=1, sd=0.2, weight=0.5" in table.loc["CL", "arguments"]
    assert table.loc["V", "source"] == "spec"
