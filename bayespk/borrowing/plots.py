"""Plots for borrowing: MAP forest plot, prior/posterior densities.

Dose tables (with and without borrowing) are drawn by :func:`bayespk.simulate.plots.plot_dose_table`.

Each function draws on a matplotlib Axes (a new figure when none is given)
and returns it; the numbers plotted come from the objects passed in.
"""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from bayespk.borrowing.map_prior import MAPFit
from bayespk.borrowing.mixtures import Mixture
from bayespk.data.nonmem import plot_text

__all__ = ["plot_densities", "plot_forest"]


def _axes(ax, figsize=(6, 4)):
    import matplotlib.pyplot as plt

    if ax is None:
        _, ax = plt.subplots(figsize=figsize)
    return ax


def plot_forest(fit: MAPFit, ax=None, mixture: Mixture | None = None):
    """Observed study estimates (with exact 95% intervals for binomial data), the model's shrinkage
    estimates, and the MAP prior (95% interval) at the bottom."""
    ax = _axes(ax, (6, 0.45 * (len(fit.data) + 2) + 1))
    st = fit.study_table()
    d = fit.data
    y = np.arange(len(st))[::-1] + 2
    if fit.family == "binomial":
        from scipy import stats

        lo = stats.beta.ppf(0.025, d.r, d.n - d.r + 1)
        hi = stats.beta.ppf(0.975, d.r + 1, d.n - d.r)
        lo = np.where(d.r == 0, 0.0, lo)
        hi = np.where(d.r == d.n, 1.0, hi)
    elif fit.family == "normal":
        lo, hi = d.y - 1.96 * d.se, d.y + 1.96 * d.se
    else:
        from scipy import stats

        lo = stats.gamma.ppf(0.025, np.maximum(d.y, 1e-9)) / d.exposure
        hi = stats.gamma.ppf(0.975, d.y + 1) / d.exposure
    ax.errorbar(st.observed, y + 0.15, xerr=[st.observed - lo, hi - st.observed], fmt="s", color="0.5",
                ms=4, capsize=2, label="observed (95% CI)")
    ax.errorbar(st.shrunk_mean, y - 0.15, xerr=[st.shrunk_mean - st["shrunk_q2.5"], st["shrunk_q97.5"] -
                                              st.shrunk_mean], fmt="o", color="C0", ms=4, capsize=2,
                label="model (shrinkage, 95% CrI)")
    q = np.quantile(fit.sample, [0.025, 0.5, 0.975]) if mixture is None else mixture.quantile([0.025, 0.5, 0.975])
    ax.errorbar([q[1]], [0.8], xerr=[[q[1] - q[0]], [q[2] - q[1]]], fmt="D", color="C3", ms=6, capsize=3,
                label="MAP prior (95%)")
    ax.set_yticks(list(y) + [0.8], [plot_text(v) for v in st.study] + ["MAP (new study)"])
    ax.axvline(q[1], color="C3", lw=0.6, ls=":")
    ax.set_xlabel({"binomial": "response rate", "normal": "mean", "poisson": "event rate"}[fit.family])
    ax.legend(loc="best", fontsize=8)
    return ax


def plot_densities(mixtures: Mapping[str, Mixture], ax=None, *, sample: np.ndarray | None = None,
                   log_scale: bool = False, grid: np.ndarray | None = None, styles: Mapping[str, dict] | None = None):
    """Densities of mixtures (priors, posteriors); ``log_scale`` draws a mixture on log(x) as a density of x.

    ``sample`` adds a histogram (e.g. the MAP MCMC sample the mixture approximates).
    """
    ax = _axes(ax)
    mixes = list(mixtures.values())
    if grid is None:
        lo = min(float(m.quantile(0.001)) for m in mixes)
        hi = max(float(m.quantile(0.999)) for m in mixes)
        grid = np.linspace(lo, hi, 600)
        if mixes[0].family == "beta":
            grid = np.clip(grid, 1e-6, 1 - 1e-6)
    if sample is not None:
        s = np.exp(sample) if log_scale else sample
        ax.hist(s, bins=80, density=True, color="0.85", label="MCMC sample")
    for label, m in mixtures.items():
        kw = dict((styles or {}).get(label, {}))
        if log_scale:
            x = np.exp(grid)
            ax.plot(x, m.pdf(grid) / x, label=label, **kw)
        else:
            ax.plot(grid, m.pdf(grid), label=label, **kw)
    ax.set_ylabel("density")
    ax.legend(fontsize=8)
    return ax
