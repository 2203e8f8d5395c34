"""Goodness of fit, shrinkage, eta-covariate screening, prior vs posterior, PSIS-LOO and model comparison.

One short fit of the bundled phenobarbital model (59 neonates, 155 observations, repeated IV
bolus doses) serves most tests; a second fit of the same data without the Apgar covariate
and a tiny theophylline fit (different data) serve the comparison tests.
"""

import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import MODELS, ROOT

import bayespk as bpk
from bayespk.diagnostics import shrinkage
from bayespk.evaluate import compare as compare_module
from bayespk.evaluate.gof import eta_covariates, gof_table
from bayespk.fit import Fit

PHENO = MODELS / "phenobarbital_1cmt_iv.toml"
THEO = MODELS / "theophylline_1cmt_oral.toml"
PHENO_CSV = ROOT / "bayespk" / "data" / "datasets" / "phenobarbital.csv"
SHORT = dict(draws=200, tune=300, chains=2, seed=1, progress=False)


def _quiet_fit(spec, data=None, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short chains: convergence warnings are expected
        return bpk.fit(bpk.PopulationModel(spec, data), **(SHORT | kwargs))


@pytest.fixture(scope="module")
def pheno():
    return _quiet_fit(bpk.Spec.from_toml(PHENO))


@pytest.fixture(scope="module")
def pheno_no_apgar():
    d = bpk.Spec.from_toml(PHENO).to_dict()
    d["name"] = "phenobarbital_no_apgar"
    d["covariates"] = [c for c in d["covariates"] if c["column"] != "APGRLOW"]
    return _quiet_fit(bpk.Spec.from_dict(d))


@pytest.fixture(scope="module")
def gof_result(pheno):
    return bpk.gof(pheno)


# ------------------------------------------------------------------ goodness of fit
def test_gof_returns_figure_and_one_row_per_observation(pheno, gof_result):
    import matplotlib.figure

    fig, table = gof_result
    assert isinstance(fig, matplotlib.figure.Figure)
    assert len(fig.axes) == 4
    assert list(table.columns) == ["ID", "TIME", "DV", "CENS", "PRED", "IPRED", "IWRES"]
    dv = pheno.tree["observed_data"]["DV"].values
    assert len(table) == len(dv) == 155
    np.testing.assert_array_equal(table.DV.to_numpy(), dv)
    assert (table.CENS == 0).all()
    assert np.isfinite(table[["PRED", "IPRED", "IWRES"]].to_numpy()).all()
    assert (table.PRED > 0).all() and (table.IPRED > 0).all()


def _one_cmt_bolus(doses: pd.DataFrame, ids, times, cl, v) -> np.ndarray:
    """Superposed 1-cmt IV bolus by hand: sum over past doses of AMT/V exp(-CL/V (t - t_dose)).

    ``cl``, ``v``: (draws, n_subjects) arrays in the order of ``np.unique(ids)``; returns (draws, n_obs).
    """
    subjects = np.unique(ids)
    out = np.zeros((cl.shape[0], len(times)))
    for k, (sid, t) in enumerate(zip(ids, times)):
        j = np.searchsorted(subjects, sid)
        dd = doses[(doses.ID == sid) & (doses.TIME <= t)]
        dt = t - dd.TIME.to_numpy()
        amt = dd.AMT.to_numpy()
        k_el = (cl[:, j] / v[:, j])[:, None]
        out[:, k] = (amt[None, :] / v[:, j, None] * np.exp(-k_el * dt[None, :])).sum(1)
    return out


def test_gof_pred_and_ipred_match_a_hand_computation(pheno, gof_result):
    """PRED (eta = 0, with WT and Apgar effects) and IPRED (own etas), posterior medians, by hand."""
    table = gof_result.table
    raw = pd.read_csv(PHENO_CSV, na_values=".")
    doses = raw[raw.EVID == 1]
    subj = raw.groupby("ID").first()
    post = pheno.posterior.stack(sample=("chain", "draw")).transpose("sample", ...)
    assert post.sizes["sample"] == 400  # gof uses predict(draws=400): every draw of this fit
    assert list(post["eta_CL"]["ID"].values) == list(subj.index)
    wt = subj.WT.to_numpy()[None, :]
    apgar = post["V_APGRLOW"].values.reshape(-1, 1) * subj.APGRLOW.to_numpy()[None, :]
    cl_pop = post["CL"].values[:, None] * wt
    v_pop = post["V"].values[:, None] * wt * np.exp(apgar)
    ids, times = table.ID.to_numpy(), table.TIME.to_numpy()
    pred = np.median(_one_cmt_bolus(doses, ids, times, cl_pop, v_pop), axis=0)
    ipred = np.median(_one_cmt_bolus(doses, ids, times, cl_pop * np.exp(post["eta_CL"].values),
                                     v_pop * np.exp(post["eta_V"].values)), axis=0)
    np.testing.assert_allclose(table.PRED, pred, rtol=1e-6)
    np.testing.assert_allclose(table.IPRED, ipred, rtol=1e-6)


def test_iwres_proportional_by_hand(pheno, gof_result):
    table = gof_result.table
    sigma = float(np.median(pheno.posterior["sigma_prop"].values))
    expected = (table.DV - table.IPRED) / (sigma * table.IPRED)
    np.testing.assert_allclose(table.IWRES, expected, rtol=1e-10)
    # a reasonable model: IWRES roughly standard
    assert abs(table.IWRES.mean()) < 0.5 and 0.5 < table.IWRES.std() < 1.5


def test_gof_table_function_equals_the_method(pheno, gof_result):
    pd.testing.assert_frame_equal(gof_table(pheno), gof_result.table)


# ------------------------------------------------------------------ shrinkage
def test_shrinkage_matches_the_formula(pheno, gof_result):
    sh = bpk.shrinkage(pheno)
    assert list(sh.parameter) == ["CL", "V"]
    post = pheno.posterior
    for _, row in sh.iterrows():
        eta_mean = post[f"eta_{row.parameter}"].mean(("chain", "draw")).values
        assert len(eta_mean) == 59
        omega = float(np.median(post[f"omega_{row.parameter}"].values))
        expected = 1 - np.std(eta_mean, ddof=1) / omega
        assert row.shrinkage == pytest.approx(expected, rel=1e-10)
        assert row.omega == pytest.approx(omega)
        assert 0 < row.shrinkage < 1
    pd.testing.assert_frame_equal(shrinkage(pheno), sh)
    pd.testing.assert_frame_equal(gof_result.shrinkage, sh)
    # 1-3 samples per infant: CL (informed by few late samples) shrinks more than V
    s = sh.set_index("parameter").shrinkage
    assert s["CL"] > s["V"]


# ------------------------------------------------------------------ eta vs covariates
def test_eta_covariates_one_row_per_subject(pheno):
    fig, table = bpk.eta_covariates(pheno)
    assert len(table) == 59 and table.ID.is_unique
    for col in ("ID", "WT", "APGR", "APGRLOW", "eta_CL", "eta_V"):
        assert col in table.columns
    post_mean = pheno.posterior["eta_CL"].mean(("chain", "draw")).to_series()
    np.testing.assert_allclose(table.set_index("ID").eta_CL, post_mean.reindex(table.ID).to_numpy())
    raw = pd.read_csv(PHENO_CSV, na_values=".").groupby("ID").WT.first()
    np.testing.assert_array_equal(table.set_index("ID").WT, raw.reindex(table.ID).to_numpy())
    assert len(fig.axes) == 2 * 3  # 2 etas x 3 covariates
    _, only_wt = eta_covariates(pheno, ["WT"])
    assert list(only_wt.columns) == ["ID", "WT", "eta_CL", "eta_V"]


# ------------------------------------------------------------------ prior vs posterior
def test_prior_posterior_narrows_the_typical_values(pheno):
    fig, table = bpk.prior_posterior(pheno, draws=1000)
    t = table.set_index("parameter")
    assert set(pheno.spec.population_parameters) <= {p.split("[")[0] for p in t.index}
    for p in ("CL", "V"):
        assert 0 < t.loc[p, "sd_ratio"] < 0.2, t.loc[p]
        assert t.loc[p, "post_q5"] <= t.loc[p, "post_median"] <= t.loc[p, "post_q95"]
    assert t.loc["CL", "post_median"] == pytest.approx(float(np.median(pheno.posterior["CL"].values)))
    # prior of CL: LogNormal(-5.3, 1), median exp(-5.3); 1000 draws give the median to ~4%
    assert t.loc["CL", "prior_median"] == pytest.approx(np.exp(-5.3), rel=0.15)
    assert (t.sd_ratio < 1).all()


# ------------------------------------------------------------------ LOO
def test_loo_is_finite_and_warns_about_high_pareto_k(pheno):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = bpk.loo(pheno)
    assert np.isfinite(result.elpd) and np.isfinite(result.se) and result.se > 0
    k = np.asarray(result.pareto_k).ravel()
    assert k.size == 155
    n_bad = int((k > 0.7).sum())
    messages = [str(w.message) for w in caught
                if issubclass(w.category, UserWarning) and "Pareto k" in str(w.message)]
    if n_bad:
        assert len(messages) == 1 and f"{n_bad} of 155 Pareto k values > 0.7" in messages[0]
    else:
        assert not messages


def test_loo_warning_path_forced(pheno, monkeypatch):
    """With the threshold lowered every point is 'bad': the warning must come, whatever this fit's k."""
    monkeypatch.setattr(compare_module, "LOO_K_THRESHOLD", -np.inf)
    with pytest.warns(UserWarning, match=r"155 of 155 Pareto k values"):
        bpk.loo(pheno)


def test_loo_by_subject(pheno):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        by_subject = bpk.loo(pheno, by="subject")
        by_obs = bpk.loo(pheno)
    assert np.asarray(by_subject.pareto_k).size == 59
    assert np.isfinite(by_subject.elpd)
    assert by_subject.elpd < by_obs.elpd  # predicting whole new profiles is harder
    with pytest.raises(bpk.BayesPKError, match="by must be"):
        bpk.loo(pheno, by="visit")


# ------------------------------------------------------------------ compare
def test_compare_two_models_of_the_same_data(pheno, pheno_no_apgar):
    table = bpk.compare({"apgar": pheno, "no_apgar": pheno_no_apgar})
    assert set(table.index) == {"apgar", "no_apgar"}
    for col in ("elpd", "se", "p_loo", "elpd_diff", "dse", "weight", "n_bad_k"):
        assert col in table.columns
    assert table.elpd_diff.iloc[0] == 0
    assert table.elpd.iloc[0] == table.elpd.max()
    # ArviZ >= 1 convention (as R's loo): elpd_diff = elpd - elpd of the best, so <= 0
    np.testing.assert_allclose(table.elpd_diff, table.elpd - table.elpd.iloc[0], atol=1e-9)
    assert (table.elpd_diff <= 0).all() and (table.dse >= 0).all()
    assert table.weight.sum() == pytest.approx(1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        own = bpk.loo(pheno)
    assert table.loc["apgar", "elpd"] == pytest.approx(own.elpd)
    assert table.loc["apgar", "n_bad_k"] == int((np.asarray(own.pareto_k) > 0.7).sum())


def test_compare_needs_two_fits(pheno):
    with pytest.raises(bpk.BayesPKError, match="at least two"):
        bpk.compare({"one": pheno})


def test_compare_refuses_fits_of_different_data(pheno):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        theo = bpk.fit(bpk.PopulationModel(THEO), draws=100, tune=150, chains=2, seed=2, progress=False)
    with pytest.raises(bpk.BayesPKError, match="same data"):
        bpk.compare({"pheno": pheno, "theo": theo})


def _same_layout_other_dv(fit: Fit) -> Fit:
    """The same fit, but with every observed DV doubled: a fit of *different data* with the same count."""
    tree = fit.tree.copy(deep=True)
    obs = tree["observed_data"].to_dataset()
    tree["observed_data"] = obs.assign(DV=obs["DV"] * 2.0)
    return Fit(tree, fit.spec)


def test_compare_refuses_different_data_with_the_same_number_of_observations(pheno, pheno_no_apgar):
    other = _same_layout_other_dv(pheno_no_apgar)
    dv_other, dv = other.tree["observed_data"]["DV"].values, pheno.tree["observed_data"]["DV"].values
    assert dv_other.shape == dv.shape and not np.array_equal(dv_other, dv)
    with pytest.raises(bpk.BayesPKError):
        bpk.compare({"pheno": pheno, "other": other})


class _StubPKPDFit:
    """Just what LOO reads from a PK/PD fit: two log-likelihood arrays (DV on ``obs``, DV_PD on ``pd_obs``)."""

    def __init__(self, seed=0):
        import xarray as xr

        rng = np.random.default_rng(seed)
        self.spec = type("S", (), {"name": "stub_pkpd"})()
        self.ll = xr.Dataset({
            "DV": (("chain", "draw", "obs"), rng.normal(-1.0, 0.3, (2, 100, 5))),
            "DV_PD": (("chain", "draw", "pd_obs"), rng.normal(-2.0, 0.3, (2, 100, 4))),
        })  # fmt: skip
        self.tree = xr.DataTree(children={
            "posterior": xr.DataTree(xr.Dataset({"CL": (("chain", "draw"), rng.normal(size=(2, 100)))})),
            "constant_data": xr.DataTree(xr.Dataset({
                "SUBJECT": ("obs", [1, 1, 2, 2, 3]), "ROW": ("obs", [1, 3, 6, 8, 11]),
                "PD_SUBJECT": ("pd_obs", [1, 2, 2, 4]), "PD_ROW": ("pd_obs", [2, 7, 9, 14])})),
        })  # fmt: skip

    def log_likelihood(self):
        return self.ll


def test_loo_of_a_pkpd_fit_uses_both_log_likelihoods():
    """PK/PD: every observation of either kind is one point; a subject's point sums both kinds (ID 4 has only
    PD observations, ID 3 only PK). Checked against ArviZ on the arrays built by hand."""
    import arviz as az
    import xarray as xr

    fit = _StubPKPDFit()
    dv, dv_pd = fit.ll["DV"].values, fit.ll["DV_PD"].values

    def az_loo(points, dim):
        tree = xr.DataTree(children={"posterior": fit.tree["posterior"], "log_likelihood": xr.DataTree(
            xr.Dataset({"ll": (("chain", "draw", dim), points)}))})
        return az.loo(tree, pointwise=True)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        by_obs, by_subject = bpk.loo(fit), bpk.loo(fit, by="subject")
        want_obs = az_loo(np.concatenate([dv, dv_pd], axis=-1), "obs")
        per_subject = np.stack([dv[..., :2].sum(-1) + dv_pd[..., :1].sum(-1), dv[..., 2:4].sum(-1)
                                + dv_pd[..., 1:3].sum(-1), dv[..., 4], dv_pd[..., 3]], axis=-1)
        want_subject = az_loo(per_subject, "ID_loo")
    assert np.asarray(by_obs.pareto_k).size == 9 and np.asarray(by_subject.pareto_k).size == 4
    assert by_obs.elpd == pytest.approx(want_obs.elpd) and by_obs.se == pytest.approx(want_obs.se)
    assert by_subject.elpd == pytest.approx(want_subject.elpd)
    np.testing.assert_allclose(np.asarray(by_subject.elpd_i), np.asarray(want_subject.elpd_i))
    # a PD point with the same log-likelihood in every draw: exactly that value (ArviZ alone cannot smooth it)
    fit.ll["DV_PD"][..., 2] = -0.5
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert np.asarray(bpk.loo(fit).elpd_i)[5 + 2] == pytest.approx(-0.5, rel=1e-12)


def test_loo_of_a_chain_stuck_in_the_tail_is_a_user_error():
    """The largest importance ratios of a point all equal (60 of 200 draws at one value, the rest varying):
    ArviZ cannot fit the tail; a user error that says what to do, not an internal error."""

    fit = _StubPKPDFit()
    fit.ll["DV"][..., 0] = np.where(np.arange(100) < 30, -5.0, np.linspace(-1.0, -0.5, 100))
    with pytest.raises(bpk.BayesPKError, match=r"stub_pkpd: PSIS-LOO cannot be computed: the largest importance "
                                               r"ratios of some observation are identical across draws"):
        bpk.loo(fit)
