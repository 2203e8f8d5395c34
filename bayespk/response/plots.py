"""Figures of exposure-response fits (dose tables: :func:`bayespk.simulate.plots.plot_dose_table`).

Bands are 90% credible intervals (q5-q95). Observed proportions are shown per
exposure quantile bin (default quartiles of the subjects' exposures: their
point value, or the geometric mean of the draws the fit used) at the bin's
geometric mean exposure, with 90% Jeffreys intervals (Beta(y + 1/2, n - y +
1/2) quantiles). The model curves are at the covariates' reference values (or
those given), while the binned observations are marginal over covariates.
"""

from __future__ import annotations

from collections.abc import Mapping

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
from scipy import stats

from bayespk.data.nonmem import plot_text
from bayespk.errors import SpecError

__all__ = ["binned_observations", "kaplan_meier", "plot_response"]


def plot_response(
    fit,
    *,
    exposure_grid=None,
    covariates: Mapping | None = None,
    grades=None,
    times=None,
    bins: int = 4,
    figsize=None,
):
    """Outcome probability against exposure with 90% bands and observed proportions in exposure bins.

    Parameters
    ----------
    fit : ResponseFit
    exposure_grid : array, optional
        Exposures of the curve (default: log-spaced over the observed range).
    covariates : mapping, optional
        Covariate values of the curve (default: their references).
    grades : int or list, optional
        ordinal: panels P(grade >= k) (default: every estimable k).
    times : array, optional
        tte: time grid of the survival curves (default: 0 to the last observed time).
    bins : int
        Exposure quantile bins of the observations (4: quartiles).
    figsize : tuple, optional

    Returns
    -------
    matplotlib.figure.Figure
        binary/ordinal: one panel per probability, log exposure axis; tte:
        Kaplan-Meier curves per exposure bin with the model's survival curve
        at each bin's geometric mean exposure.
    """
    if not isinstance(bins, int) or bins < 1:
        raise SpecError(f"bins must be a whole number >= 1, got {bins!r}")
    if fit.kind == "tte":
        return _plot_tte(fit, covariates=covariates, times=times, bins=bins, figsize=figsize)
    curve = fit.curve(exposure_grid, covariates, grades=grades)
    labels = list(dict.fromkeys(curve["quantity"]))
    fig, axes = plt.subplots(
        1, len(labels), figsize=figsize or (4.2 * len(labels), 3.6), squeeze=False, sharey=True
    )
    for ax, label in zip(axes[0], labels):
        c = curve[curve["quantity"] == label]
        ax.fill_between(c["exposure"], c["q5"], c["q95"], alpha=0.25, color="C0", label="90% credible band")
        ax.plot(c["exposure"], c["median"], color="C0", label="posterior median")
        grade = int(c["grade"].iloc[0]) if "grade" in c else None
        obs = binned_observations(fit, grade=grade, bins=bins)
        ax.errorbar(
            obs["exposure"],
            obs["proportion"],
            yerr=[obs["proportion"] - obs["lo"], obs["hi"] - obs["proportion"]],
            fmt="o",
            color="k",
            capsize=3,
            label=f"observed ({bins} exposure bins, 90% CI)",
        )
        ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel(plot_text(fit.exposure_name))
        ax.set_title(plot_text(label))
    axes[0][0].set_ylabel("probability")
    axes[0][0].legend(fontsize="small", loc="best")
    fig.tight_layout()
    return fig


def binned_observations(fit, *, grade: int | None = None, bins: int = 4) -> pd.DataFrame:
    """Observed proportion (response, or grade >= ``grade``) per exposure quantile bin.

    Returns
    -------
    DataFrame
        Columns ``bin, exposure`` (geometric mean), ``n, events, proportion,
        lo, hi`` (90% Jeffreys interval).
    """
    obs = fit.observed
    y = obs[fit.outcome].to_numpy()
    hit = (y >= grade) if grade is not None else (y == 1)
    lx = np.log10(obs["exposure"].to_numpy())
    b = pd.qcut(lx, bins, labels=False, duplicates="drop")
    rows = []
    for i in np.unique(b):
        m = b == i
        n, k = int(m.sum()), int(hit[m].sum())
        lo = stats.beta.ppf(0.05, k + 0.5, n - k + 0.5) if k > 0 else 0.0
        hi = stats.beta.ppf(0.95, k + 0.5, n - k + 0.5) if k < n else 1.0
        rows.append(
            {
                "bin": int(i),
                "exposure": float(10 ** lx[m].mean()),
                "n": n,
                "events": k,
                "proportion": k / n,
                "lo": float(lo),
                "hi": float(hi),
            }
        )
    return pd.DataFrame(rows)


def kaplan_meier(time: np.ndarray, event: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Kaplan-Meier step function: (times starting at 0, survival just after each time)."""
    time, event = np.asarray(time, float), np.asarray(event, int)
    ts = np.unique(time[event == 1])
    s, out = 1.0, [1.0]
    for t in ts:
        at_risk = np.sum(time >= t)
        s *= 1.0 - np.sum((time == t) & (event == 1)) / at_risk
        out.append(s)
    return np.concatenate([[0.0], ts]), np.array(out)


def _plot_tte(fit, *, covariates, times, bins, figsize):
    obs = fit.observed
    t, ev = obs[fit.outcome].to_numpy(float), obs[fit.event].to_numpy(int)
    grid = np.linspace(0.0, t.max(), 60) if times is None else np.asarray(times, float)
    lx = np.log10(obs["exposure"].to_numpy())
    b = pd.qcut(lx, bins, labels=False, duplicates="drop")
    fig, ax = plt.subplots(figsize=figsize or (6.0, 4.0))
    idx = fit._sample_index(
        min(2000, fit.posterior.sizes["chain"] * fit.posterior.sizes["draw"]), np.random.default_rng(0)
    )
    for n, i in enumerate(np.unique(b)):
        m = b == i
        color = f"C{n}"
        e_bin = float(10 ** lx[m].mean())
        kt, ks = kaplan_meier(t[m], ev[m])
        ax.step(
            kt,
            ks,
            where="post",
            color=color,
            lw=1.2,
            label=plot_text(f"KM, bin {n + 1} ({fit.exposure_name} ~ {e_bin:.3g})"),
        )
        s = np.column_stack(
            [
                fit.probability(np.array([np.log10(e_bin)]), covariates, time=tt, samples=idx)[:, 0]
                for tt in grid
            ]
        )
        q5, q50, q95 = np.quantile(s, [0.05, 0.5, 0.95], axis=0)
        ax.fill_between(grid, q5, q95, color=color, alpha=0.15)
        ax.plot(grid, q50, color=color, ls="--")
    ax.set_xlabel(plot_text(fit.outcome))
    ax.set_ylabel("survival probability")
    ax.set_ylim(-0.02, 1.02)
    ax.set_title(plot_text(f"Weibull PH by {fit.exposure_name} bin (dashed: model, 90% band)"))
    ax.legend(fontsize="small")
    fig.tight_layout()
    return fig
