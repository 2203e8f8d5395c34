"""Normalised prediction distribution errors (NPDE).

NPDE compare each subject's observations with replicates of the study
simulated with **new subjects** on the observed design
(:func:`~bayespk.evaluate.simulation.simulate_replicates`). Under the model they are independent N(0, 1) draws.

Method (Brendel et al. 2006, Pharm Res 23:2036; Comets et al. 2008, CMPB
90:154; the R package ``npde``), for subject ``i`` with observations ``y_i``
(length ``n_i``) and the ``K x n_i`` matrix ``Y_i`` of the same
observations in ``K`` simulated replicates:

1. ``E_i`` = mean of ``Y_i`` over replicates, ``V_i`` = its empirical
   covariance (``ddof=1``).
2. Decorrelation (default, as in the ``npde`` package): ``V_i = L L'``
   (Cholesky, ``L`` lower triangular) and ``y* = L^-1 (y_i - E_i)``, and the
   same for every simulated vector. ``decorrelate="inverse"`` uses the
   symmetric inverse square root ``V_i^-1/2`` instead. The Cholesky result
   depends on the order of the observations (time order here): the first
   one is only standardised, each next one is conditioned on those before.
3. ``pde_ij`` = fraction of replicates with ``ysim*_kj < y*_ij``; 0 and 1
   become ``1/(2K)`` and ``1 - 1/(2K)`` (the package's ``ties=TRUE``).
   ``npde_ij = Phi^-1(pde_ij)``.

The prediction discrepancies ``pd_ij`` are the same fractions without
decorrelation (the marginal predictive CDF at the observation);
``decorrelate=False`` reports ``npde = Phi^-1(pd)`` (often called *npd*).

Censored observations (Nguyen et al. 2012, AAPS J 14:196; the ``npde``
package's ``cens.method="cdf"``):

* A BLQ observation (CENS = 1) has ``pd`` drawn uniformly in
  ``(0, p_LLOQ)``, where ``p_LLOQ`` is the fraction of the replicates below
  that observation's LLOQ. The observation is then imputed as the matching
  quantile of the simulated marginal: the ``floor(pd K) + 1``-th smallest
  simulated value, which lies below the LLOQ.
* Simulated values below an observation's LLOQ (for every row with an LLOQ,
  censored or not) are imputed the same way (their own uniform draw in
  ``(0, p_LLOQ)``), so that observed and simulated vectors are treated
  alike before decorrelation.
* Right-censored observations (CENS = -1) mirror this above their limit.

The imputation is random (``seed``). The package uses one LLOQ (the
smallest) for all rows; here each row uses its own.

A subject whose simulated covariance is singular or nearly so (e.g. a
prediction of exactly 0 before the first dose with proportional error, or
perfectly correlated replicates) is not decorrelated: its ``npde`` are the
marginal ``Phi^-1(pd)``. Such subjects are counted in
``settings["n_marginal"]`` and flagged in the table's ``decorrelated``
column.

Tests (as the package's ``gof.test``): mean = 0 (one-sample t-test),
variance = 1 (two-sided chi-square test of ``(n - 1) s^2`` on ``n - 1``
degrees of freedom, the package's "Fisher variance test"), normality
(Shapiro-Wilk), and a global test: 3 x the smallest of the three p-values
(Bonferroni), capped at 1.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
from scipy import stats

from bayespk.errors import BayesPKError
from bayespk.evaluate.simulation import observation_table, simulate_replicates

__all__ = ["NPDE", "npde", "npde_tests"]

DECORRELATION = {True: "cholesky", "cholesky": "cholesky", "inverse": "inverse", False: None, None: None}
SINGULAR_TOL = 1e-6  # smallest allowed diag of the Cholesky factor of the correlation matrix


@dataclass
class NPDE:
    """NPDE of a fit: the figure, the tidy per-observation table and the tests.

    Unpacks as ``figure, table = npde(fit)``.

    Attributes
    ----------
    figure : matplotlib Figure
        Histogram with the N(0, 1) density, QQ-plot against N(0, 1), npde vs
        time and npde vs PRED, with reference lines at 0 and +-1.96.
    table : DataFrame
        One row per observation in the likelihood, in the order of
        :func:`~bayespk.evaluate.simulation.observation_table`: ID, TIME, DV,
        PRED (typical-subject prediction, median over replicates), pd, npde,
        BLQ, then EPRED (mean of the replicates), p_LLOQ (fraction of the
        replicates below the row's LLOQ; NaN without one) and decorrelated
        (False where the subject fell back to the marginal pd).
    tests : DataFrame
        Index mean, variance, normality, global; columns method, estimate,
        statistic, p_value.
    settings : dict
    """

    figure: object
    table: pd.DataFrame
    tests: pd.DataFrame
    settings: dict = field(default_factory=dict)

    def __iter__(self):
        yield self.figure
        yield self.table

    def __repr__(self) -> str:
        p = self.tests.p_value
        return (f"NPDE({len(self.table)} observations, {self.settings.get('n_sim')} replicates; "
                f"mean p={p['mean']:.3g}, variance p={p['variance']:.3g}, "
                f"normality p={p['normality']:.3g}, global p={p['global']:.3g})")


# ----------------------------------------------------------------------------------------------------------
# pure computation


def _clip(p: np.ndarray, k: int) -> np.ndarray:
    """pd/pde of exactly 0 or 1 become 1/(2K) and 1 - 1/(2K) (npde ``ties=TRUE``)."""
    p = np.asarray(p, dtype=float)
    return np.where(p <= 0, 1 / (2 * k), np.where(p >= 1, 1 - 1 / (2 * k), p))


def _decorrelator(sim: np.ndarray, method: str) -> tuple[np.ndarray, np.ndarray] | None:
    """``(mean, W)`` with ``W (y - mean)`` decorrelated, or None when the covariance is (nearly) singular.

    ``sim`` is ``(K, n)``. Cholesky: ``W = L^-1`` with ``V = L L'``; inverse:
    ``W = V^-1/2`` (symmetric). Singularity is judged on the correlation
    matrix, so it does not depend on the scale of the data.
    """
    k, n = sim.shape
    if k <= n:
        return None
    mean = sim.mean(axis=0)
    dev = sim - mean
    cov = dev.T @ dev / (k - 1)
    sd = np.sqrt(np.diag(cov))
    scale = np.maximum(np.abs(mean), sd)
    if not np.all(np.isfinite(cov)) or np.any(sd <= 1e-12 * np.where(scale > 0, scale, 1.0)):
        return None
    corr = cov / np.outer(sd, sd)
    try:
        lc = np.linalg.cholesky(corr)
    except np.linalg.LinAlgError:
        return None
    if np.min(np.diag(lc)) < SINGULAR_TOL:
        return None
    if method == "cholesky":
        # V = D R D' = (D Lc)(D Lc)': W = (D Lc)^-1 = Lc^-1 D^-1
        w = np.linalg.solve(lc, np.diag(1 / sd))
    elif method == "inverse":
        vals, vecs = np.linalg.eigh(cov)  # the symmetric root of V itself (not of the correlation matrix)
        w = (vecs / np.sqrt(vals)) @ vecs.T
    else:  # pragma: no cover - guarded by the caller
        raise ValueError(method)
    return mean, w


def _npde_subject(y, sim, decorrelate: str | bool = "cholesky") -> tuple[np.ndarray, np.ndarray, bool]:
    """pd and npde of one subject's (complete, already imputed) observations.

    Parameters
    ----------
    y : array (n,)
        Observations.
    sim : array (K, n)
        The same observations in K simulated replicates.
    decorrelate : {"cholesky", "inverse", False}

    Returns
    -------
    pd, npde : arrays (n,)
        ``pd``: marginal fraction of replicates below the observation (0/1
        clipped to 1/(2K), 1 - 1/(2K)); ``npde``: normal quantile of the
        decorrelated fraction.
    decorrelated : bool
        False when the covariance was (nearly) singular or ``decorrelate`` is
        False: then ``npde = Phi^-1(pd)``.

    Examples
    --------
    >>> pd_, npde_, ok = _npde_subject([0.0], np.array([[-1.0], [1.0], [2.0], [3.0]]))
    >>> pd_, ok
    (array([0.25]), True)
    """
    y = np.asarray(y, dtype=float)
    sim = np.asarray(sim, dtype=float)
    k = sim.shape[0]
    pd_ = _clip((sim < y).mean(axis=0), k)
    method = DECORRELATION[decorrelate]
    pde = _decorrelated_pde(y, sim, method) if method else None
    if pde is None:
        return pd_, stats.norm.ppf(pd_), False
    return pd_, stats.norm.ppf(pde), True


def _decorrelated_pde(y: np.ndarray, sim: np.ndarray, method: str) -> np.ndarray | None:
    """Clipped pde of one subject (``y`` (n,), ``sim`` (K, n)), or None when it cannot be decorrelated."""
    dec = _decorrelator(sim, method)
    if dec is None:
        return None
    mean, w = dec
    y_star = w @ (y - mean)
    sim_star = (sim - mean) @ w.T
    return _clip((sim_star < y_star).mean(axis=0), sim.shape[0])


def _impute_censored(y, sim, cens, lower, upper, rng):
    """The ``cdf`` imputation of censored observations and of simulated values beyond the limits.

    Parameters
    ----------
    y : (N,) observations; sim : (K, N) replicates; cens : (N,) 0, 1 (BLQ), -1 (right-censored)
    lower : (N,) LLOQ of each row (NaN: none); upper : (N,) limit of right-censored rows (NaN: none)

    Returns
    -------
    y_imp : (N,), sim_imp : (K, N), pd : (N,) unclipped marginal pd with
    the censored rows' imputed pd, p_lloq : (N,) fraction of replicates
    below ``lower`` (NaN without an LLOQ).
    """
    k, n = sim.shape
    y_imp = np.asarray(y, dtype=float).copy()
    sim_imp = sim.copy()
    pd_ = (sim < y_imp).mean(axis=0)
    has_lo, has_hi = np.isfinite(lower), np.isfinite(upper)
    p_lloq = np.where(has_lo, (sim < np.where(has_lo, lower, -np.inf)).mean(axis=0), np.nan)
    if not (has_lo.any() or has_hi.any()):
        return y_imp, sim_imp, pd_, p_lloq
    srt = np.sort(sim, axis=0)
    cols = np.arange(n)

    def quantile_of(p, j):  # the floor(p K) + 1-th smallest value of column j
        return srt[np.clip(np.floor(p * k).astype(int), 0, k - 1), j]

    p_hi = np.where(has_hi, (sim < np.where(has_hi, upper, np.inf)).mean(axis=0), np.nan)
    # observations
    u = rng.uniform(size=n)
    blq = (cens == 1) & has_lo
    alq = (cens == -1) & has_hi
    pd_ = np.where(blq, u * np.nan_to_num(p_lloq), pd_)
    pd_ = np.where(alq, np.nan_to_num(p_hi) + u * (1 - np.nan_to_num(p_hi)), pd_)
    cen = blq | alq
    y_imp[cen] = quantile_of(pd_[cen], cols[cen])
    # simulated values beyond the limits, each with its own draw
    below = has_lo[None, :] & (sim < np.where(has_lo, lower, -np.inf)[None, :])
    above = has_hi[None, :] & (sim > np.where(has_hi, upper, np.inf)[None, :])
    ranges = ((below, np.zeros(n), np.nan_to_num(p_lloq)), (above, np.nan_to_num(p_hi), np.ones(n)))
    for mask, lo, hi in ranges:
        r, c = np.nonzero(mask)
        if len(c):
            p = lo[c] + rng.uniform(size=len(c)) * (hi[c] - lo[c])
            sim_imp[r, c] = quantile_of(p, c)
    return y_imp, sim_imp, pd_, p_lloq


def npde_tests(values) -> pd.DataFrame:
    """The ``npde`` package's tests of N(0, 1) on a vector of npde.

    Returns a DataFrame indexed by mean, variance, normality, global with
    columns method, estimate, statistic and p_value.

    Examples
    --------
    >>> t = npde_tests(np.random.default_rng(1).standard_normal(200))
    >>> list(t.index), bool(t.loc["global", "p_value"] > 0.01)
    (['mean', 'variance', 'normality', 'global'], True)
    """
    x = np.asarray(values, dtype=float)
    x = x[np.isfinite(x)]
    n = len(x)
    if n < 3:
        raise BayesPKError(f"the NPDE tests need at least 3 values, got {n}")
    t = stats.ttest_1samp(x, 0.0)
    var = float(np.var(x, ddof=1))
    chi = (n - 1) * var
    p_var = float(min(1.0, 2 * min(stats.chi2.cdf(chi, n - 1), stats.chi2.sf(chi, n - 1))))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # scipy warns that the p-value may be inaccurate for n > 5000
        sw = stats.shapiro(x)
    p = [float(t.pvalue), p_var, float(sw.pvalue)]
    glob = min(1.0, 3 * min(p))
    return pd.DataFrame(
        {"method": ["t-test", "Fisher variance test", "Shapiro-Wilk", "global (Bonferroni, 3 x min p)"],
         "estimate": [float(x.mean()), var, np.nan, np.nan],
         "statistic": [float(t.statistic), chi, float(sw.statistic), 3 * min(p)],
         "p_value": p + [glob]},
        index=pd.Index(["mean", "variance", "normality", "global"], name="test"),
    )  # fmt: skip


def _npde_core(ids, y, sim, *, cens=None, lower=None, upper=None, method="cholesky", rng=None):
    """pd and npde of every observation of a dataset, from its ``(K, N)`` replicates.

    Parameters
    ----------
    ids : (N,) subject of each observation (observations of a subject need not be contiguous; their
        order in the arrays is the order used by the Cholesky decorrelation)
    y : (N,) observations (for censored rows the value is ignored)
    sim : (K, N) uncensored simulated observations
    cens : (N,) 0, 1 (BLQ) or -1 (right-censored); lower : (N,) LLOQ (NaN: none);
    upper : (N,) limit of right-censored rows (NaN: none)
    method : "cholesky", "inverse" or None (no decorrelation)
    rng : numpy Generator for the imputation of censored values

    Returns
    -------
    pd, npde : (N,); decorrelated : (N,) bool; p_lloq : (N,); marginal : list of the subjects that
    could not be decorrelated
    """
    y = np.asarray(y, dtype=float)
    sim = np.asarray(sim, dtype=float)
    k, n = sim.shape
    cens = np.zeros(n, int) if cens is None else np.asarray(cens, int)
    lower = np.full(n, np.nan) if lower is None else np.asarray(lower, float)
    upper = np.full(n, np.nan) if upper is None else np.asarray(upper, float)
    rng = np.random.default_rng() if rng is None else rng
    y_imp, sim_imp, pd_raw, p_lloq = _impute_censored(y, sim, cens, lower, upper, rng)
    pd_ = _clip(pd_raw, k)
    npde_ = stats.norm.ppf(pd_)
    decorrelated = np.zeros(n, bool)
    marginal = []
    if method:
        codes, first = pd.factorize(np.asarray(ids))
        order = np.argsort(codes, kind="stable")
        bounds = np.r_[0, np.cumsum(np.bincount(codes, minlength=len(first)))]
        for s in range(len(first)):
            rows = order[bounds[s]:bounds[s + 1]]
            pde = _decorrelated_pde(y_imp[rows], sim_imp[:, rows], method)
            if pde is None:
                marginal.append(first[s].item() if isinstance(first[s], np.generic) else first[s])
                continue
            npde_[rows] = stats.norm.ppf(pde)
            decorrelated[rows] = True
    return pd_, npde_, decorrelated, p_lloq, marginal


# ----------------------------------------------------------------------------------------------------------
# from a fit


def npde(fit, *, n_sim: int = 1000, seed: int = 0, replicates=None, decorrelate: bool | str = True,
         pd_obs: bool = False) -> NPDE:
    """Normalised prediction distribution errors of a fit.

    Parameters
    ----------
    fit : Fit
    n_sim : int
        Replicates of the study simulated with new subjects (one posterior
        draw each); ignored when ``replicates`` is given. Values of
        ``pd``/``npde`` are resolved to ``1/n_sim``.
    seed : int
        Seeds the simulation and the imputation of censored values.
    replicates : xarray.Dataset, optional
        Reuse replicates from
        :func:`~bayespk.evaluate.simulation.simulate_replicates`.
    decorrelate : True, "cholesky", "inverse" or False
        True/"cholesky": inverse Cholesky factor (the ``npde`` package's
        default); "inverse": symmetric inverse square root of the covariance;
        False: no decorrelation (npde = Phi^-1(pd)).
    pd_obs : bool
        The PD observations of a PK/PD model (``DV_PD``, simulated with its ``[pd_error]``).

    Returns
    -------
    NPDE
        ``figure``, ``table`` (one row per observation), ``tests`` and
        ``settings``; unpacks as ``figure, table``.
    """
    if decorrelate not in DECORRELATION:
        raise BayesPKError(f"decorrelate must be True, False, 'cholesky' or 'inverse', got {decorrelate!r}")
    method = DECORRELATION[decorrelate]
    if replicates is None and (not isinstance(n_sim, (int, np.integer)) or n_sim < 2):
        raise BayesPKError(f"n_sim must be an integer >= 2, got {n_sim!r}")
    obs = observation_table(fit, pd_obs)
    reps = replicates if replicates is not None else simulate_replicates(fit, n_sim, seed=seed, pd=pd_obs)
    sim = np.asarray(reps["DV_sim"].values, dtype=float)  # (K, N)
    if sim.ndim != 2 or sim.shape[1] != len(obs):
        raise BayesPKError(f"replicates hold {sim.shape[-1]} observations, the fit {len(obs)}")
    k = sim.shape[0]
    pred = np.median(reps["PRED"].values, axis=0)

    cens = obs.CENS.to_numpy(int)
    limit = obs.LIMIT.to_numpy(float)
    lloq_col = obs.LLOQ.to_numpy(float) if "LLOQ" in obs else np.full(len(obs), np.nan)
    lower = np.where(cens == 1, limit, lloq_col)
    upper = np.where(cens == -1, limit, np.nan)
    rng = np.random.default_rng([seed, 20061])  # a stream apart from the simulation's
    pd_, npde_, decorrelated, p_lloq, marginal = _npde_core(
        obs.ID.to_numpy(), obs.DV.to_numpy(float), sim, cens=cens, lower=lower, upper=upper, method=method,
        rng=rng)

    table = pd.DataFrame({
        "ID": obs.ID.to_numpy(), "TIME": obs.TIME.to_numpy(float), "DV": obs.DV.to_numpy(float),
        "PRED": pred, "pd": pd_, "npde": npde_, "BLQ": cens == 1, "EPRED": sim.mean(axis=0),
        "p_LLOQ": p_lloq, "decorrelated": decorrelated,
    })  # fmt: skip
    tests = npde_tests(npde_)
    settings = dict(n_sim=k, seed=seed, decorrelate=method or False, n_subjects=int(obs.ID.nunique()),
                    n_obs=len(obs), n_blq=int((cens == 1).sum()), n_censored=int((cens != 0).sum()),
                    n_marginal=len(marginal) if method else 0, marginal_subjects=list(marginal))
    if marginal:
        warnings.warn(f"NPDE: {len(marginal)} subject(s) with a singular simulated covariance were not "
                      f"decorrelated (npde = Phi^-1(pd)): ID {', '.join(map(str, marginal[:10]))}"
                      + (" ..." if len(marginal) > 10 else ""), stacklevel=2)
    from bayespk.units import axis_label

    spec = getattr(fit, "spec", None)
    settings |= {"time_label": axis_label(spec, "time"),
                 "pred_label": axis_label(spec, "effect" if pd_obs else "conc", "PRED (typical subject)"),
                 "pd_obs": pd_obs}
    fig = plot_npde(table, tests, settings, title=getattr(spec, "name", "") or "")
    return NPDE(fig, table, tests, settings)


def _binned_mean(v: np.ndarray, x: np.ndarray) -> tuple[np.ndarray, np.ndarray] | None:
    """Trend guide: mean of ``x`` per distinct ``v`` (at most 10 of them) or per equal-count bin of ``v``."""
    ok = np.isfinite(v) & np.isfinite(x)
    v, x = v[ok], x[ok]
    if len(v) < 8:
        return None
    uniq = np.unique(v)
    if len(uniq) <= 10:
        b = np.searchsorted(uniq, v)
    else:
        nb = int(np.clip(len(v) // 15, 3, 10))
        inner = np.unique(np.quantile(v, np.linspace(0, 1, nb + 1)[1:-1]))
        b = np.searchsorted(inner, v, side="right")
    groups = [m for m in (b == j for j in np.unique(b)) if m.sum() >= 3]
    if len(groups) < 2:
        return None
    return np.array([np.median(v[m]) for m in groups]), np.array([np.mean(x[m]) for m in groups])


def plot_npde(table: pd.DataFrame, tests: pd.DataFrame, settings: dict, *, title: str = ""):
    """The four usual NPDE panels: histogram, QQ-plot, npde vs TIME and vs PRED."""
    import matplotlib.pyplot as plt

    x = table.npde.to_numpy(float)
    blq = table.BLQ.to_numpy(bool)
    fig, axes = plt.subplots(2, 2, figsize=(9.5, 7.5))
    ref = stats.norm.ppf(0.975)

    ax = axes[0, 0]
    lim = max(4.0, float(np.ceil(np.max(np.abs(x))))) if len(x) else 4.0
    ax.hist(x, bins=int(np.clip(np.sqrt(len(x)), 8, 40)), range=(-lim, lim), density=True, color="C0",
            alpha=0.6, edgecolor="white", label="npde")
    grid = np.linspace(-lim, lim, 200)
    ax.plot(grid, stats.norm.pdf(grid), color="k", lw=1.2, label="N(0, 1)")
    ax.set_xlabel("npde")
    ax.set_ylabel("density")
    ax.legend(fontsize=7)

    ax = axes[0, 1]
    srt = np.sort(x)
    theo = stats.norm.ppf((np.arange(1, len(x) + 1) - 0.5) / max(len(x), 1))
    ax.plot(theo, srt, "o", ms=2.5, color="C0")
    ax.plot([-lim, lim], [-lim, lim], color="k", lw=1)
    ax.set_xlabel("N(0, 1) quantiles")
    ax.set_ylabel("npde quantiles")

    for ax, col, label in ((axes[1, 0], "TIME", settings.get("time_label", "time")),
                           (axes[1, 1], "PRED", settings.get("pred_label", "PRED (typical subject)"))):
        v = table[col].to_numpy(float)
        ax.plot(v[~blq], x[~blq], "o", ms=2.5, color="C0", alpha=0.7, label="observed")
        if blq.any():
            ax.plot(v[blq], x[blq], "o", ms=3, mfc="none", color="C3", label="BLQ (imputed)")
        for y0, ls in ((0, "-"), (-ref, "--"), (ref, "--")):
            ax.axhline(y0, color="k", lw=0.8, ls=ls)
        trend = _binned_mean(v, x)
        if trend is not None:
            ax.plot(*trend, color="C3", lw=1.5, marker=".", label="binned mean")
        ax.set_xlabel(label)
        ax.set_ylabel("npde")
        ax.legend(fontsize=7)

    p = tests.p_value
    kind = {"cholesky": "Cholesky decorrelation", "inverse": "inverse-square-root decorrelation",
            False: "no decorrelation"}[settings.get("decorrelate", "cholesky")]
    fig.suptitle(f"{title + ': ' if title else ''}NPDE, {settings['n_sim']} replicates, {kind}\n"
                 f"mean {x.mean():.3f} (p={p['mean']:.2g}), variance {np.var(x, ddof=1):.3f} "
                 f"(p={p['variance']:.2g}), Shapiro-Wilk p={p['normality']:.2g}, global p={p['global']:.2g}",
                 fontsize=9)
    fig.tight_layout()
    return fig
