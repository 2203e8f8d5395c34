"""Covariate search under a regularized horseshoe (Piironen & Vehtari 2017): the prior against a direct
computation, the spec block (round trip, bad input), and the search on a simulated study with one true effect
(WT on CL, exponent 0.75) and three null covariates."""

import math
import tomllib

import numpy as np
import pymc as pm
import pytest
from scipy import stats

from bayespk.errors import BayesPKError, SpecError
from bayespk.model import PopulationModel
from bayespk.model.describe import prior_table
from bayespk.model.spec import Spec
from bayespk.simulate.study import simulate_observations, study_design

DOSE = 100.0
SPEC = {
    "name": "horseshoe_1cmt_iv",
    "model": {"structure": "1cmt_iv"},
    "parameters": {
        "CL": {"typical": {"dist": "LogNormal", "mu": float(np.log(2.0)), "sigma": 0.5},
               "iiv": {"dist": "HalfNormal", "sigma": 0.3}},
        "V": {"typical": {"dist": "LogNormal", "mu": float(np.log(20.0)), "sigma": 0.5},
              "iiv": {"dist": "HalfNormal", "sigma": 0.3}},
    },
    "error": {"model": "proportional", "sigma_prop": {"dist": "HalfNormal", "sigma": 0.2}},
}  # fmt: skip
CANDIDATES = [{"parameter": "CL", "column": "WT", "effect": "power", "reference": 70.0},
              {"parameter": "CL", "column": "AGE", "effect": "power", "reference": 50.0},
              {"parameter": "V", "column": "SEX", "effect": "categorical"},
              {"parameter": "CL", "column": "NOISE", "effect": "exponential", "reference": 0.0}]
TRUTH = {"CL": 2.0, "V": 20.0, "omega_CL": 0.2, "omega_V": 0.15, "CL_WT": 0.75, "sigma_prop": 0.1}


def covariate_study(seed: int = 1, n: int = 40, effects: dict | None = None):
    """``n`` subjects, 100 mg IV, 4 samples; CL = 2 (WT/70)^0.75 exp(eta); AGE, SEX and NOISE have no effect
    (``effects``: the true relations and coefficients instead, e.g. ``{"CL_WT": 0.75, "V_SEX": [0.3]}``)."""
    effects = {"CL_WT": 0.75} if effects is None else effects
    rng = np.random.default_rng(seed)
    covariates = {"WT": lambda r, k: np.round(np.exp(rng.normal(np.log(70), 0.3, k)), 1),
                  "AGE": lambda r, k: np.round(rng.uniform(20, 80, k)),
                  "SEX": lambda r, k: rng.integers(0, 2, k).astype(float),
                  "NOISE": lambda r, k: np.round(rng.normal(0, 1, k), 2)}
    design = study_design(n, dose=DOSE, times=np.array([0.5, 2, 6, 12]), route="iv", seed=seed,
                          covariates=covariates)
    true = [c for c in CANDIDATES if f"{c['parameter']}_{c['column']}" in effects]
    truth_spec = Spec.from_dict({**SPEC, "covariates": true})
    d = simulate_observations(truth_spec, design, {k: v for k, v in TRUTH.items() if k != "CL_WT"} | effects,
                              seed=seed + 1)
    return d.drop(columns=[c for c in d.columns if c.startswith("ETA_")])


def _spec(**block):
    return {**SPEC, "covariates": CANDIDATES, "covariate_shrinkage": block}


def test_horseshoe_prior_follows_the_scale_rule_and_the_standardized_form():
    d = covariate_study(seed=1)
    block = {"expected": 1.5, "slab_scale": 0.8, "slab_df": 5, "global_df": 3, "noise_sd": 0.4}
    model = PopulationModel(_spec(**block), d)
    n = d.ID.nunique()
    tau0 = 1.5 / (4 - 1.5) * 0.4 / math.sqrt(n)  # Piironen & Vehtari (2017) eq. 3.12, D = 4 relations
    assert model.spec.covariate_shrinkage.tau0(n) == pytest.approx(tau0)
    m = model.build()
    # densities of the global scale and the slab against scipy (half-t: twice the t density on x > 0)
    point = {"hs_tau_log__": np.log(0.07), "hs_c2_log__": np.log(0.5)}
    logp = m.compile_logp(vars=[m["hs_tau"], m["hs_c2"]], jacobian=False, sum=False)
    start = m.initial_point() | point
    lt, lc = (float(x) for x in logp(start))
    assert lt == pytest.approx(math.log(2) + stats.t.logpdf(0.07, df=3, scale=tau0))
    assert lc == pytest.approx(stats.invgamma.logpdf(0.5, a=5 / 2, scale=5 * 0.8 ** 2 / 2))
    # the coefficient keeps its name and is z tau lambda~ / sd (sd of log(WT/70) across subjects)
    wt = d.groupby("ID").WT.first().to_numpy()
    sd = np.std(np.log(wt / 70.0), ddof=1)
    assert model.covariate_scale(model.spec.covariates[0]) == pytest.approx(sd)
    names = ["CL_WT", "hs_z_CL_WT", "hs_tau", "hs_lambda_CL_WT", "hs_c2", "hs_kappa_CL_WT", "V_SEX", "hs_z_V_SEX",
             "hs_lambda_V_SEX"]
    draws = dict(zip(names, pm.draw([m[k] for k in names], draws=200, random_seed=3)))
    tau, c2 = draws["hs_tau"], draws["hs_c2"]
    lam2 = c2 * draws["hs_lambda_CL_WT"] ** 2 / (c2 + tau ** 2 * draws["hs_lambda_CL_WT"] ** 2)
    np.testing.assert_allclose(draws["CL_WT"], draws["hs_z_CL_WT"] * tau * np.sqrt(lam2) / sd, rtol=1e-8)
    np.testing.assert_allclose(draws["hs_kappa_CL_WT"], 1 / (1 + n * tau ** 2 * lam2 / 0.4 ** 2), rtol=1e-8)
    # the regularized local scale never exceeds the slab: |beta_std| <= |z| c
    assert np.all(np.abs(draws["CL_WT"] * sd) <= np.abs(draws["hs_z_CL_WT"]) * np.sqrt(c2) + 1e-12)
    lam2_sex = c2 * draws["hs_lambda_V_SEX"] ** 2 / (c2 + tau ** 2 * draws["hs_lambda_V_SEX"] ** 2)
    np.testing.assert_allclose(draws["V_SEX"][:, 0], draws["hs_z_V_SEX"][:, 0] * tau * np.sqrt(lam2_sex), rtol=1e-8)
    assert {"CL_WT", "V_SEX"} <= set(model.spec.population_parameters)  # SBC and reports find the names
    for name in ("CL_WT", "CL_AGE", "V_SEX", "CL_NOISE"):
        assert name in m.named_vars and m[name] in m.deterministics


def test_spec_block_round_trips_and_shows_in_the_prior_table():
    s = Spec.from_dict(_spec(expected=2, slab_scale=0.5))
    hs = s.covariate_shrinkage
    assert hs.relations == ("CL_WT", "CL_AGE", "V_SEX", "CL_NOISE")  # default: every estimated relation
    assert (hs.expected, hs.slab_scale, hs.slab_df, hs.global_df, hs.noise_sd) == (2.0, 0.5, 4.0, 1.0, 1.0)
    assert Spec.from_dict(s.to_dict()) == s
    assert Spec.from_dict(tomllib.loads(s.to_toml())) == s
    some = Spec.from_dict(_spec(relations=["CL_AGE", "CL_NOISE"]))
    assert some.covariate_shrinkage.relations == ("CL_AGE", "CL_NOISE")
    table = prior_table(some).set_index("parameter")
    assert table.loc["CL_AGE", "distribution"] == "regularized horseshoe"
    assert "per SD of log(AGE/50)" in table.loc["CL_AGE", "arguments"]
    assert "per SD of NOISE" in table.loc["CL_NOISE", "arguments"]
    assert table.loc["CL_WT", "distribution"] == "Normal"  # not shrunk: its own prior
    assert table.loc["hs_tau", "distribution"] == "HalfCauchy" and "1/(2 − 1)" in table.loc["hs_tau", "arguments"]
    assert table.loc["hs_c2", "arguments"].startswith("alpha=2, beta=2")
    assert "covariate_shrinkage" not in Spec.from_dict({**SPEC, "covariates": CANDIDATES}).to_dict()


@pytest.mark.parametrize("block, match", [
    ({"prior": "lasso"}, r"\[covariate_shrinkage\] prior: 'lasso' is not one of horseshoe"),
    ({"scale": 1}, r"\[covariate_shrinkage\]: unknown key 'scale'"),
    ({"relations": ["CL_HT"]}, r"relations: 'CL_HT' is not a \[\[covariates\]\] relation"),
    ({"relations": []}, r"relations: expected a non-empty list"),
    ({"relations": ["CL_WT", "CL_WT"]}, r"relations: CL_WT is listed twice"),
    ({"relations": ["CL_FIX"]}, r"relations: CL_FIX has a fixed coefficient \(0.5\)"),
    ({"expected": 0}, r"\[covariate_shrinkage\] expected: must be > 0, got 0"),
    ({"expected": 5}, r"\[covariate_shrinkage\] expected: .* in \(0, D\) with D = 4 relations shrunk, got 5"),
    ({"relations": ["CL_WT"]}, r"expected: .* D = 1 relations shrunk, got 1"),
    ({"slab_scale": -1}, r"\[covariate_shrinkage\] slab_scale: must be > 0, got -1"),
    ({"slab_df": 0}, r"\[covariate_shrinkage\] slab_df: must be > 0"),
    ({"global_df": "one"}, r"\[covariate_shrinkage\] global_df"),
    ({"noise_sd": 0.0}, r"\[covariate_shrinkage\] noise_sd: must be > 0"),
])  # fmt: skip
def test_bad_shrinkage_blocks_are_refused_naming_the_key(block, match):
    fixed = {"parameter": "CL", "column": "FIX", "effect": "exponential", "reference": 0.0, "coefficient": 0.5}
    with pytest.raises(SpecError, match=match):
        Spec.from_dict({**SPEC, "covariates": [*CANDIDATES, fixed], "covariate_shrinkage": block}
                       if block.get("relations") == ["CL_FIX"] else _spec(**block))


def test_nothing_to_shrink_and_bad_search_settings_are_refused(tmp_path):
    only_fixed = [{"parameter": "CL", "column": "WT", "effect": "power", "reference": 70.0, "coefficient": 0.75}]
    with pytest.raises(SpecError, match="no \\[\\[covariates\\]\\] relation with an estimated coefficient"):
        Spec.from_dict({**SPEC, "covariates": only_fixed, "covariate_shrinkage": {}})
    from bayespk.evaluate.covsearch import covariate_search

    d = covariate_study(seed=1, n=8)
    with pytest.raises(BayesPKError, match="method: 'lasso' is not one of stepwise, horseshoe"):
        covariate_search(SPEC, CANDIDATES, d, out=tmp_path, method="lasso")
    with pytest.raises(BayesPKError, match="band: expected \\(lower, upper\\) with 0 < lower < 1 < upper"):
        covariate_search(SPEC, CANDIDATES, d, out=tmp_path, method="horseshoe", band=(1.1, 1.25))
    with pytest.raises(BayesPKError, match="band: expected \\(lower, upper\\)"):
        covariate_search(SPEC, CANDIDATES, d, out=tmp_path, method="horseshoe", band=(0.8, 1.0, 1.25))
    with pytest.raises(BayesPKError, match="inclusion: expected a probability"):
        covariate_search(SPEC, CANDIDATES, d, out=tmp_path, method="horseshoe", inclusion=1.0)
    with pytest.raises(BayesPKError, match="shrinkage: the relations shrunk are the candidates"):
        covariate_search(SPEC, CANDIDATES, d, out=tmp_path, method="horseshoe", shrinkage={"relations": ["CL_WT"]})
    with pytest.raises(SpecError, match="\\[covariate_shrinkage\\] expected"):
        covariate_search(SPEC, CANDIDATES, d, out=tmp_path, method="horseshoe", shrinkage={"expected": 4})
    with pytest.raises(BayesPKError, match="candidate 1 \\(CL_HT\\): no column 'HT' in the data"):
        covariate_search(SPEC, [{"parameter": "CL", "column": "HT", "effect": "power", "reference": 1.0}], d,
                         out=tmp_path, method="horseshoe")
    constant = d.assign(WT=70.0)
    with pytest.raises(BayesPKError, match="column WT: every subject has the same value"):
        PopulationModel(_spec(), constant).build()


def test_horseshoe_search_keeps_weight_and_drops_the_null_covariates(tmp_path):
    from bayespk.evaluate.covsearch import covariate_search

    r = covariate_search(SPEC, CANDIDATES, covariate_study(seed=1), out=tmp_path, method="horseshoe", seed=2,
                         chains=1, draws=400, tune=400)
    steps = r.steps.set_index("relation")
    assert r.method == "horseshoe" and r.selected == ["CL_WT"], r.steps.to_string()
    assert list(steps.index) == ["CL_WT", "CL_AGE", "V_SEX", "CL_NOISE"]
    wt = steps.loc["CL_WT"]
    assert wt.coef_lower < 0.75 < wt.coef_upper  # the true exponent is in the 90% CrI
    assert wt.ratio_median > 1.25 and wt.p_outside > 0.5
    assert wt.decision == f"kept: P(outside 0.8-1.25) = {wt.p_outside:.2f} > 0.5"
    assert "95th vs 5th percentile" in wt.contrast
    for null in ("CL_AGE", "V_SEX", "CL_NOISE"):
        assert steps.loc[null, "decision"].startswith("dropped: P(outside 0.8-1.25) = ")
        assert steps.loc[null, "kappa"] > wt.kappa  # shrunk more than the real effect
    assert steps.loc["V_SEX", "contrast"] == "SEX = 1 vs 0"
    assert [c["column"] for c in r.spec["covariates"]] == ["WT"] and "covariate_shrinkage" not in r.spec
    assert (tmp_path / "steps.csv").read_text().startswith("step,relation,contrast,coef_median")
    assert r.fit.posterior["CL_WT"].size == 400


def test_cli_covsearch_horseshoe_writes_the_table(tmp_path, capsys):
    import pandas as pd

    from bayespk.cli import _parser, main

    args = _parser().parse_args(["covsearch", "m.toml", "--out", "o", "--candidate", "CL:WT:power:70",
                                 "--method", "horseshoe", "--band", "0.9,1.11", "--inclusion", "0.8"])
    assert (args.method, args.band, args.inclusion, args.expected, args.slab_scale) == \
        ("horseshoe", "0.9,1.11", 0.8, 1.0, 1.0)
    Spec.from_dict(SPEC).write(tmp_path / "m.toml")
    covariate_study(seed=1).to_csv(tmp_path / "d.csv", index=False)
    base = ["covsearch", str(tmp_path / "m.toml"), "--data", str(tmp_path / "d.csv"), "--out", str(tmp_path / "o"),
            "--method", "horseshoe", "--candidate", "CL:WT:power:70", "--candidate", "CL:AGE:power:50",
            "--candidate", "V:SEX:categorical", "--candidate", "CL:NOISE:exponential:0"]  # the model of the test above
    assert main([*base, "--band", "1.2"]) != 0
    assert "--band '1.2': expected LOWER,UPPER" in capsys.readouterr().err
    assert main([*base, "--chains", "1", "--draws", "300", "--tune", "300", "--quiet"]) == 0
    assert "selected: CL_WT" in capsys.readouterr().out
    steps = pd.read_csv(tmp_path / "o" / "steps.csv")
    assert list(steps.relation) == ["CL_WT", "CL_AGE", "V_SEX", "CL_NOISE"] and steps.decision[0].startswith("kept")
