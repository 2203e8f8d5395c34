"""Exposure-response models (bayespk.response): input checks, predictions, dose table, recovery.

Fast tests use hand-built posteriors (no sampling). Tests that compile and
sample (nutpie compiles each model shape once per process, 10-35 s) are marked
slow. Every simulation uses seed 1, fixed before the first run.
"""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
import xarray as xr
from matplotlib.figure import Figure
from mock_fits import mock_fit
from scipy.special import expit

from bayespk.errors import DataError, SpecError
from bayespk.response import fit_response, outcome_table, plot_dose_table, plot_response
from bayespk.response import models as er_models
from bayespk.response.data import exposure_draws

N = 200
REF = {"exposure": 1e4, "LOGTB": 1.0}  # truths below are at this reference
TRUE_BINARY = {"intercept": -0.5, "b_exposure": 1.5, "b_LOGTB": 0.8}
TRUE_ORDINAL = {
    "cutpoint_ge1": -0.5,
    "cutpoint_ge2": 1.0,
    "cutpoint_ge3": 2.2,
    "cutpoint_ge4": 3.2,
    "b_exposure": 1.5,
    "b_LOGTB": 0.8,
}
TRUE_TTE = {"shape": 1.3, "scale": 300.0, "b_exposure": np.log(0.5), "b_LOGTB": 0.4}
FAST = {"draws": 500, "tune": 500, "chains": 2}


# ------------------------------------------------------------------ simulated studies
def _subjects(rng):
    lx = rng.normal(4.0, 0.5, N)  # log10 Cmax
    tb = rng.normal(1.0, 0.5, N)  # log10 tumor burden
    return lx, tb


def binary_study(seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    lx, tb = _subjects(rng)
    t = TRUE_BINARY
    p = expit(t["intercept"] + t["b_exposure"] * (lx - 4) + t["b_LOGTB"] * (tb - 1))
    return pd.DataFrame({"ID": np.arange(1, N + 1), "RESP": rng.binomial(1, p), "CMAX": 10**lx, "LOGTB": tb})


def ordinal_study(seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    lx, tb = _subjects(rng)
    t = TRUE_ORDINAL
    cut = np.array([t[f"cutpoint_ge{k}"] for k in range(1, 5)])
    latent = t["b_exposure"] * (lx - 4) + t["b_LOGTB"] * (tb - 1) + rng.logistic(size=N)
    grade = (latent[:, None] > cut[None, :]).sum(axis=1)  # P(grade >= k) = expit(eta - cutpoint_k)
    return pd.DataFrame({"ID": np.arange(1, N + 1), "CRS": grade, "CMAX": 10**lx, "LOGTB": tb})


def tte_study(seed: int = 1) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    lx, tb = _subjects(rng)
    t = TRUE_TTE
    eta = t["b_exposure"] * (lx - 4) + t["b_LOGTB"] * (tb - 1)
    T = t["scale"] * (rng.exponential(size=N) / np.exp(eta)) ** (
        1 / t["shape"]
    )  # S = exp(-(t/scale)^k e^eta)
    C = rng.uniform(0, 900, N)  # about 30% censored
    return pd.DataFrame(
        {
            "ID": np.arange(1, N + 1),
            "PFS": np.minimum(T, C),
            "EVENT": (T <= C).astype(int),
            "CMAX": 10**lx,
            "LOGTB": tb,
        }
    )


# ------------------------------------------------------------------ hand-built fits (no sampling): mock_fits.py
@pytest.fixture
def no_sampling(monkeypatch):
    """Input errors must be raised before anything is compiled or sampled."""

    def fail(*a, **k):
        raise AssertionError("compiled a model for bad input")

    monkeypatch.setattr(er_models.sampling, "compile_model", fail)


# ------------------------------------------------------------------ input validation (fast)
def _raises(df, exposure, match, **kw):
    with pytest.raises(DataError, match=match):
        fit_response(df, exposure, **kw)


def test_missing_ids_between_outcomes_and_exposure(no_sampling):
    df = binary_study().head(20)
    point = pd.Series(df.CMAX.to_numpy(), index=df.ID).drop([3, 17])
    _raises(df, point, r"no exposure for ID 3, 17 \(2 of the 20 subjects", kind="binary", outcome="RESP")
    draws = np.tile(df.CMAX.to_numpy()[:-1], (10, 1))
    _raises(df, draws, r"no exposure for ID 20", kind="binary", outcome="RESP", exposure_ids=df.ID[:-1])


def test_nan_outcome_and_covariate(no_sampling):
    df = binary_study().head(20)
    df.loc[2, "RESP"] = np.nan
    _raises(df, "CMAX", r"row 3 \(ID 3\), column RESP: missing value", kind="binary", outcome="RESP")
    df = binary_study().head(20)
    df.loc[5, "LOGTB"] = np.nan
    _raises(
        df,
        "CMAX",
        r"row 6 \(ID 6\), column LOGTB: missing value",
        kind="binary",
        outcome="RESP",
        covariates=["LOGTB"],
    )


def test_binary_outcome_must_be_0_or_1(no_sampling):
    df = binary_study().head(20)
    df.loc[4, "RESP"] = 2
    _raises(df, "CMAX", r"row 5 \(ID 5\), column RESP: 2 is not 0 or 1", kind="binary", outcome="RESP")


@pytest.mark.parametrize(
    "grade, rule",
    [(5, "grade 5 is outside 0-4"), (-1, "grade -1 is outside 0-4"), (2.5, "grade 2.5 is not an integer")],
)
def test_grades_outside_0_4_or_not_integer(no_sampling, grade, rule):
    df = ordinal_study().head(30)
    df["CRS"] = df["CRS"].astype(float)
    df.loc[7, "CRS"] = grade
    _raises(df, "CMAX", rf"row 8 \(ID 8\), column CRS: {rule}", kind="ordinal", outcome="CRS")


def test_single_grade_refused(no_sampling):
    df = ordinal_study().head(30).assign(CRS=0)
    _raises(df, "CMAX", "every subject has grade 0", kind="ordinal", outcome="CRS")


@pytest.mark.parametrize("value", [0.0, -5.0])
def test_nonpositive_exposure_refused(no_sampling, value):
    df = binary_study().head(20)
    df.loc[9, "CMAX"] = value
    _raises(
        df, "CMAX", rf"exposure of ID 10: {value:g} is not a finite number > 0", kind="binary", outcome="RESP"
    )
    draws = np.tile(binary_study().head(20).CMAX.to_numpy(), (50, 1))
    draws[31, 4] = value
    _raises(
        df,
        draws,
        rf"exposure of ID 5 \(draw 31\): {value:g} is not a finite number > 0",
        kind="binary",
        outcome="RESP",
        exposure_ids=df.ID,
    )


@pytest.mark.parametrize("value", [0.0, -3.0])
def test_times_must_be_positive(no_sampling, value):
    df = tte_study().head(20)
    df.loc[0, "PFS"] = value
    _raises(
        df,
        "CMAX",
        rf"row 1 \(ID 1\), column PFS: time {value:g} is not > 0",
        kind="tte",
        time="PFS",
        event="EVENT",
    )


def test_event_must_be_0_or_1(no_sampling):
    df = tte_study().head(20)
    df.loc[11, "EVENT"] = 2
    _raises(
        df,
        "CMAX",
        r"row 12 \(ID 12\), column EVENT: 2 is not 0 \(censored\) or 1 \(event\)",
        kind="tte",
        time="PFS",
        event="EVENT",
    )


def test_other_bad_input(no_sampling):
    df = binary_study().head(20)
    _raises(
        df, "CMAX", "column TB: not in the outcome table", kind="binary", outcome="RESP", covariates=["TB"]
    )
    dup = pd.concat([df, df.iloc[[4]]], ignore_index=True)
    _raises(
        dup,
        "CMAX",
        r"row 21, column ID: ID 5 appears again \(first at row 5\)",
        kind="binary",
        outcome="RESP",
    )
    with pytest.raises(SpecError, match="give exposure_ids"):
        fit_response(df, np.tile(df.CMAX.to_numpy(), (5, 1)), kind="binary", outcome="RESP")
    with pytest.raises(SpecError, match="kind='survival'"):
        fit_response(df, "CMAX", kind="survival", outcome="RESP")
    with pytest.raises(SpecError, match="needs time= and event="):
        fit_response(df, "CMAX", kind="tte", time="PFS")


def test_exposure_draws_alignment():
    ids = np.array([3, 1, 2])
    arr = np.array([[10.0, 100.0, 1000.0], [20.0, 200.0, 2000.0]])  # columns: IDs 1, 2, 3
    lx, notes = exposure_draws(arr, ids, exposure_ids=[1, 2, 3])
    np.testing.assert_allclose(lx, np.log10([[1000.0, 10.0, 100.0], [2000.0, 20.0, 200.0]]))
    da = xr.DataArray(
        arr[None],
        dims=("chain", "draw", "ID"),
        coords={
            "ID": [
                1,
                2,
                3,
            ]
        },
    )
    np.testing.assert_allclose(exposure_draws(da, ids)[0], lx)
    lx1, notes = exposure_draws({1: 10.0, 2: 100.0, 3: 1000.0, 4: 5.0}, ids)
    np.testing.assert_allclose(lx1, [[3.0, 1.0, 2.0]])
    assert "1 subject(s) with an exposure but no row" in notes[0]


# ------------------------------------------------------------------ predictions from known posteriors (fast)
def test_binary_curve_and_summary_from_known_posterior():
    fit = mock_fit("binary", {"intercept": 0.0, "b_exposure": 1.0, "b_LOGTB": -0.5})
    c = fit.curve([1e4, 1e5], covariates={"LOGTB": 2.0})
    assert list(c.columns) == ["exposure", "quantity", "mean", "q5", "median", "q95"]
    np.testing.assert_allclose(c["median"], expit(np.array([0.0, 1.0]) - 0.5))
    assert c["quantity"].iloc[0] == "P(RESP=1)"
    s = fit.summary().set_index("parameter")
    assert list(s.index) == ["intercept", "b_exposure", "b_LOGTB", "OR_10fold"]
    assert s.loc["OR_10fold", "median"] == pytest.approx(np.e)
    with pytest.raises(SpecError, match=r"covariates \['WT'\]: not in this model"):
        fit.curve([1e4], covariates={"WT": 70})
    with pytest.raises(SpecError, match="exposure_grid"):
        fit.curve([0.0, 1e4])


def test_ordinal_gap_is_collapsed_and_unobserved_grades_refused():
    cut = {"cutpoint_ge1": -1.0, "cutpoint_ge2": 0.5, "cutpoint_ge4": 2.0}
    fit = mock_fit("ordinal", {**cut, "b_exposure": 1.0}, levels=[0, 1, 2, 4])  # nobody had grade 3
    assert fit.thresholds == [1, 2, 3, 4]
    c = fit.curve([1e4, 1e5]).set_index(["grade", "exposure"])["median"]
    np.testing.assert_allclose(c.loc[3], c.loc[4])  # collapsed: no mass at grade 3
    np.testing.assert_allclose(c.loc[1], expit(np.array([0.0, 1.0]) + 1.0))
    assert np.all(np.diff([c.loc[k].to_numpy() for k in (1, 2, 3)], axis=0) <= 0)
    low = mock_fit(
        "ordinal", {"cutpoint_ge1": -1.0, "cutpoint_ge2": 1.0, "b_exposure": 1.0}, levels=[0, 1, 2]
    )
    with pytest.raises(SpecError, match="no subject had grade 3 or higher"):
        low.curve([1e4], grades=3)
    with pytest.raises(SpecError, match=r"k in \[1, 2\] only"):
        low.curve([1e4], grades=0)


def test_tte_survival_and_hazard_ratio_from_known_posterior():
    fit = mock_fit("tte", {"shape": 1.5, "scale": 300.0, "b_exposure": np.log(0.5)})
    c = fit.curve([1e4, 1e5], times=[300.0])
    np.testing.assert_allclose(c["median"], np.exp(-np.array([1.0, 0.5])))
    hr = fit.hazard_ratio([1e3, 1e4, 1e5])
    np.testing.assert_allclose(hr["median"], [2.0, 1.0, 0.5])
    assert "HR_10fold" in set(fit.summary()["parameter"])


def test_plots_return_figures():
    figs = [
        plot_response(mock_fit("binary", {"intercept": 0.0, "b_exposure": 1.0}, sd=0.2)),
        mock_fit(
            "ordinal",
            {"cutpoint_ge1": -1.0, "cutpoint_ge2": 0.5, "cutpoint_ge3": 2.0, "b_exposure": 1.0},
            levels=[0, 1, 2, 3],
            sd=0.2,
        ).plot(grades=[1, 3]),
        mock_fit("tte", {"shape": 1.5, "scale": 300.0, "b_exposure": -0.5}, sd=0.05).plot(),
    ]
    assert all(isinstance(f, Figure) for f in figs)
    assert len(figs[1].axes) == 2
    odd = mock_fit("binary", {"intercept": 0.0, "b_exposure": 1.0}, sd=0.2)
    odd.exposure_name = "$x^$"  # a column name that reads as (invalid) matplotlib math text
    plot_response(odd).savefig(io.BytesIO(), format="png")


# ------------------------------------------------------------------ dose x tumor-burden table (fast)
def _exposure_at(dose, tb):
    """Virtual patients: exposure proportional to dose and to tumor burden^0.3, log-normal spread."""
    rng = np.random.default_rng(7)
    return dose * 100 * tb**0.3 * 10 ** rng.normal(0, 0.3, (300, 50))


def test_outcome_table():
    resp = mock_fit("binary", {"intercept": 0.0, "b_exposure": 1.0, "b_LOGTB": -0.5}, sd=0.2)
    crs = mock_fit(
        "ordinal",
        {"cutpoint_ge1": -1.0, "cutpoint_ge2": 0.5, "cutpoint_ge3": 2.0, "b_exposure": 1.2, "b_LOGTB": 0.7},
        levels=[0, 1, 2, 3],
        sd=0.2,
    )
    table = outcome_table(
        {"P(response)": resp, "P(CRS>=3)": (crs, 3)},
        _exposure_at,
        [10, 100, 1000],
        [1, 100],
        covariates_at=lambda dose, tb: {"LOGTB": np.log10(tb)},
    )
    assert list(table.columns) == [
        "dose",
        "tumor_burden",
        "outcome",
        "mean",
        "q5",
        "median",
        "q95",
        "n_draws",
        "n_virtual",
    ]
    assert len(table) == 3 * 2 * 2 and (table.n_draws == 300).all() and (table.n_virtual == 50).all()
    assert ((table.q5 <= table["median"]) & (table["median"] <= table.q95)).all()
    for (_, _), g in table.groupby(["outcome", "tumor_burden"]):
        assert np.all(np.diff(g.sort_values("dose")["mean"]) > 0)  # both rise with exposure
    # the mean is the model probability averaged over virtual patients, exposure draws and posterior samples
    row = table[(table.dose == 100) & (table.tumor_burden == 1) & (table.outcome == "P(response)")].iloc[0]
    lx = np.log10(_exposure_at(100, 1)).ravel()
    a, b, g = (
        resp.posterior[v].values.reshape(-1, *resp.posterior[v].shape[2:])
        for v in ("intercept", "b_exposure", "b_cov")
    )
    expected = expit(a[:, None] + b[:, None] * (lx - 4) + g[:, 0, None] * (0.0 - 1.0)).mean()
    assert row["mean"] == pytest.approx(expected, abs=0.01)
    assert 0.0 < row["q5"] < row["mean"] < row["q95"] < 1.0
    assert isinstance(plot_dose_table(table), Figure)
    with pytest.raises(SpecError, match=r"covariates \['LOGTB'\]"):
        outcome_table({"r": resp}, _exposure_at, [10], [1])
    with pytest.raises(SpecError, match="no subject had grade 4"):
        outcome_table({"c": (crs, 4)}, _exposure_at, [10], [1], covariates_at=lambda d, tb: {"LOGTB": 0.0})
    with pytest.raises(DataError, match=r"exposure_at\(10, 1\)\[0, 0\] = -1"):
        outcome_table(
            {"r": resp}, lambda d, tb: -np.ones((3, 4)), [10], [1], covariates_at=lambda d, tb: {"LOGTB": 0}
        )


# ------------------------------------------------------------------ recovery with known truth (sampling)
# Each kind is fitted to R = 20 simulated studies of 200 subjects (seeds 1-20), and the 90% intervals must
# cover the truth at close to the nominal rate: at least 75% of all (parameter, study) pairs, and at least 13
# of 20 studies for every parameter. With correct models these fail by chance with probability well under 1%
# (binomial tails, allowing for correlation within a study); a wrong sign, link or time scale fails outright.
# History, for honesty: the first design checked one study (seed 1) at 90% for all parameters at once, which
# fails by chance 25-45% of the time, and it missed b_LOGTB in the binary study (whose maximum-likelihood
# estimate is itself 2.4 standard errors from the truth). The replicated design first required 80%; the binary
# model reached exactly 80% (48/60). The frequentist Wald 90% intervals cover 80% on these same 20 data sets
# and 89.6% over data sets 1000-1999, so these data sets run low, not the model; 75% keeps the test off
# its edge.
R = 20


def _coverage(study, truth: dict, **opts) -> pd.DataFrame:
    rows = []
    for seed in range(1, R + 1):
        fit = fit_response(
            study(seed), "CMAX", covariates=["LOGTB"], reference=REF, seed=seed, **FAST, **opts
        )
        assert fit.diagnostics["divergences"] == 0
        post = dict(fit._parameters())
        for name, value in truth.items():
            q5, q95 = np.quantile(post[name].values.ravel(), [0.05, 0.95])
            rows.append(
                {
                    "seed": seed,
                    "parameter": name,
                    "truth": value,
                    "q5": q5,
                    "q95": q95,
                    "covered": q5 <= value <= q95,
                }
            )
    cov = pd.DataFrame(rows)
    by_param = cov.groupby("parameter")["covered"].sum()
    assert cov["covered"].mean() >= 0.75, cov[~cov.covered]
    assert (by_param >= 13).all(), by_param
    return cov


@pytest.mark.slow
def test_binary_recovery():
    _coverage(binary_study, TRUE_BINARY, kind="binary", outcome="RESP")


@pytest.mark.slow
def test_ordinal_recovery():
    for seed in range(1, R + 1):
        assert set(ordinal_study(seed).CRS) == {0, 1, 2, 3, 4}
    _coverage(ordinal_study, TRUE_ORDINAL, kind="ordinal", outcome="CRS")


@pytest.mark.slow
def test_tte_recovery():
    censored = [1 - tte_study(seed).EVENT.mean() for seed in range(1, R + 1)]
    assert 0.25 < np.mean(censored) < 0.35
    _coverage(tte_study, {**TRUE_TTE, "HR_10fold": 0.5}, kind="tte", time="PFS", event="EVENT")


# ------------------------------------------------------------------ exposure uncertainty (sampling)
def _ck_draws(lx: np.ndarray, spread_sd: float, subject_sd: float, n_draws: int = 400, seed: int = 1):
    """Posterior draws of log10 exposure like a CK fit's: each draw scales every subject's deviation from the
    typical exposure by a shared factor (uncertainty in the between-subject SD of the CK model) and adds
    subject-level noise."""
    rng = np.random.default_rng(seed)
    g = np.exp(spread_sd * rng.standard_normal((n_draws, 1)))
    centre = lx.mean()
    return 10 ** (centre + g * (lx - centre) + subject_sd * rng.standard_normal((n_draws, lx.size)))


def _slope_interval(fit):
    return np.quantile(fit.posterior["b_exposure"].values.ravel(), [0.05, 0.95])


@pytest.mark.slow
def test_exposure_uncertainty_widens_the_slope_interval():
    df = binary_study()
    lx = np.log10(df.CMAX.to_numpy())
    opts = dict(kind="binary", outcome="RESP", covariates=["LOGTB"], reference=REF, seed=1, **FAST)

    uncertain = _ck_draws(lx, spread_sd=0.25, subject_sd=0.05)
    pooled = fit_response(df, uncertain, exposure_ids=df.ID, **opts)
    at_mean = fit_response(df, pd.Series(uncertain.mean(axis=0), index=df.ID), **opts)
    assert pooled.settings["n_imputations"] == 20 and pooled.posterior.sizes["chain"] == 40
    w_pooled, w_mean = np.ptp(_slope_interval(pooled)), np.ptp(_slope_interval(at_mean))
    assert w_pooled > 1.2 * w_mean
    frac = pooled.summary().set_index("parameter").loc["b_exposure", "frac_between"]
    assert frac > 0.2

    precise = _ck_draws(lx, spread_sd=1e-4, subject_sd=1e-4)
    pooled = fit_response(df, precise, exposure_ids=df.ID, **opts)
    at_mean = fit_response(df, pd.Series(precise.mean(axis=0), index=df.ID), **(opts | {"draws": 2000}))
    np.testing.assert_allclose(_slope_interval(pooled), _slope_interval(at_mean), atol=0.1)  # MC sd ~0.03
    assert np.ptp(_slope_interval(pooled)) == pytest.approx(np.ptp(_slope_interval(at_mean)), rel=0.1)
    assert pooled.summary().set_index("parameter").loc["b_exposure", "frac_between"] < 0.02


@pytest.mark.slow
def test_ordinal_fit_with_a_grade_that_never_occurs():
    df = ordinal_study()
    df.loc[df.CRS == 3, "CRS"] = 2  # no grade 3 left
    fit = fit_response(df, "CMAX", kind="ordinal", outcome="CRS", covariates=["LOGTB"], seed=1, **FAST)
    assert fit.levels == [0, 1, 2, 4]
    assert any("no subject had grade 3" in n for n in fit.notes)
    c = fit.curve([1e4]).set_index("grade")["median"]
    assert c.loc[3] == pytest.approx(c.loc[4])


@pytest.mark.slow
def test_independent_exposure_noise_attenuates_the_slope():
    """Documented limitation of the cut: subject-level noise independent across subjects dilutes the slope.

    The pooled interval is then about as wide as at the posterior mean, around a flatter slope (the module
    docstring says so); this pins that behaviour so a change to it is noticed.
    """
    df = binary_study()
    lx = np.log10(df.CMAX.to_numpy())
    opts = dict(kind="binary", outcome="RESP", covariates=["LOGTB"], reference=REF, seed=1, **FAST)
    noisy = _ck_draws(lx, spread_sd=0.0, subject_sd=0.3)
    pooled = fit_response(df, noisy, exposure_ids=df.ID, **opts)
    at_mean = fit_response(df, pd.Series(noisy.mean(axis=0), index=df.ID), **opts)
    slope = {k: float(f.posterior["b_exposure"].median()) for k, f in (("pooled", pooled), ("mean", at_mean))}
    assert slope["pooled"] < 0.8 * slope["mean"]
    assert np.ptp(_slope_interval(pooled)) < 1.2 * np.ptp(_slope_interval(at_mean))
