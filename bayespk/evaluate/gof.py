"""Goodness-of-fit diagnostics of a fit: predictions vs observations, residuals,
eta shrinkage, eta-covariate relations, prior vs posterior.

Predictions are posterior medians: ``PRED`` (typical subject, eta = 0, with the
subject's covariates) and ``IPRED`` (the subject's own etas). ``IWRES`` is
``(DV - IPRED) / SD`` with the residual SD of the error model at the posterior
median. Shrinkage follows Savic & Karlsson (2009, AAPS J 11:558):
``1 - SD(posterior mean eta_i) / omega``.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import pymc as pm

from bayespk.data.nonmem import plot_text
from bayespk.diagnostics import shrinkage
from bayespk.evaluate.simulation import observation_table
from bayespk.sampling import quiet_pymc

__all__ = ["GOF", "gof", "gof_table", "eta_covariates", "prior_posterior", "covariate_effects"]


@dataclass
class GOF:
    """Goodness-of-fit figure and per-observation table; unpacks as ``figure, table``."""

    figure: object
    table: pd.DataFrame
    shrinkage: pd.DataFrame = field(default_factory=pd.DataFrame)

    def __iter__(self):
        yield self.figure
        yield self.table


def gof_table(fit, draws: int = 400, pd_obs: bool = False) -> pd.DataFrame:
    """Per observation: ID, TIME, DV, CENS, PRED, IPRED (posterior medians) and IWRES.

    ``pd_obs``: the PD observations of a PK/PD model, with the residuals of its ``[pd_error]``.
    """
    obs = observation_table(fit, pd_obs)
    pred = fit.predict(draws=draws, pd=pd_obs)
    obs["PRED"] = pred["PRED"].median(("chain", "draw")).values
    obs["IPRED"] = pred["IPRED"].median(("chain", "draw")).values
    post = fit.posterior
    err = fit.spec.pd_error if pd_obs else fit.spec.error
    med = {k: post[err.prefix + k].median(("chain", "draw")).values for k in err.base_names}
    if err.by is not None:  # one error model per assay: each observation's own parameters
        design = fit.model.pd_design if pd_obs else fit.model.design
        codes = fit.model._assay_codes("DV_PD" if pd_obs else "DV", design)
        med = {n: v[codes] for n, v in med.items()}
    f = obs.IPRED.to_numpy()
    if err.model == "lognormal":
        resid = (np.log(np.maximum(obs.DV, 1e-300)) - np.log(np.maximum(f, 1e-300))) / med["sigma_log"]
    else:
        sd = {"additive": lambda: med["sigma_add"] + 0 * f,
              "proportional": lambda: med["sigma_prop"] * f,
              "combined": lambda: np.sqrt(med["sigma_add"] ** 2 + (med["sigma_prop"] * f) ** 2)}[err.model]()
        with np.errstate(divide="ignore", invalid="ignore"):
            resid = (obs.DV - f) / sd
    obs["IWRES"] = np.where(obs.CENS == 0, resid, np.nan)  # censored values have no residual
    return obs[["ID", "TIME", "DV", "CENS", "PRED", "IPRED", "IWRES"]]


def gof(fit, *, log: bool = False, draws: int = 400, pd_obs: bool = False) -> GOF:
    """The four standard panels: DV vs PRED, DV vs IPRED, IWRES vs TIME, IWRES vs IPRED (``pd_obs``: of the
    PD observations of a PK/PD model)."""
    import matplotlib.pyplot as plt

    from bayespk.units import axis_label

    table = gof_table(fit, draws=draws, pd_obs=pd_obs)
    quantity = "effect" if pd_obs else "conc"
    ok = table.CENS == 0
    fig, axes = plt.subplots(2, 2, figsize=(9, 8))
    for ax, col in zip(axes[0], ("PRED", "IPRED")):
        ax.plot(table[col][ok], table.DV[ok], "o", ms=3, alpha=0.6, color="C0")
        if (~ok).any():
            ax.plot(table[col][~ok], table.DV[~ok], "v", ms=4, color="C3", label="BLQ (at LLOQ)")
            ax.legend(fontsize=7)
        lim = [np.nanmin([table[col].min(), table.DV.min()]), np.nanmax([table[col].max(), table.DV.max()])]
        ax.plot(lim, lim, "k-", lw=0.8)
        _trend(ax, table[col][ok], table.DV[ok])
        ax.set_xlabel(axis_label(fit.spec, quantity, f"{col} (posterior median)"))
        ax.set_ylabel(axis_label(fit.spec, quantity, "DV"))
        if log:
            ax.set_xscale("log")
            ax.set_yscale("log")
    for ax, col in zip(axes[1], ("TIME", "IPRED")):
        ax.plot(table[col][ok], table.IWRES[ok], "o", ms=3, alpha=0.6, color="C0")
        for yv in (0, -1.96, 1.96):
            ax.axhline(yv, color="k", lw=0.8 if yv == 0 else 0.6, ls="-" if yv == 0 else "--")
        _trend(ax, table[col][ok], table.IWRES[ok])
        ax.set_xlabel(axis_label(fit.spec, "time" if col == "TIME" else quantity, col))
        ax.set_ylabel("IWRES")
    fig.suptitle(f"{fit.spec.name}: goodness of fit{' of the PD observations' if pd_obs else ''} (red: running "
                 "median)", fontsize=10)
    fig.tight_layout()
    return GOF(fig, table, shrinkage(fit))


def _trend(ax, x, y, n: int = 8) -> None:
    """Running median in ``n`` equal-count bins, drawn in red."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    keep = np.isfinite(x) & np.isfinite(y)
    x, y = x[keep], y[keep]
    if len(x) < 2 * n:
        return
    order = np.argsort(x)
    chunks = np.array_split(order, n)
    ax.plot([np.median(x[c]) for c in chunks], [np.median(y[c]) for c in chunks], color="C3", lw=1.5)


def eta_covariates(fit, covariates: list[str] | None = None):
    """Posterior-mean etas against every covariate (for covariate screening).

    Numeric covariates get scatter plots with a running median; text or
    few-level covariates get box plots. Returns ``(figure, table)`` with one
    row per subject: ID, the etas and the covariates.
    """
    import matplotlib.pyplot as plt

    from bayespk.units import axis_label

    records = fit.tree["records"].to_dataset().to_dataframe()
    names = covariates or [c for c in fit.model.data.covariates if not c.startswith("ETA_")]
    subj = records.groupby("ID", sort=False)[names].first() if names else pd.DataFrame(index=records.ID.unique())
    etas = [p for p, ps in fit.spec.parameters.items() if ps.iiv is not None]
    post = fit.posterior
    table = subj.copy()
    for p in etas:
        table[f"eta_{p}"] = pd.Series(post[f"eta_{p}"].mean(("chain", "draw")).values,
                                      index=post[f"eta_{p}"]["ID"].values).reindex(table.index).values
    table = table.reset_index()
    if not etas or not names:
        import matplotlib.pyplot as plt

        return plt.figure(), table
    fig, axes = plt.subplots(len(etas), len(names), figsize=(3 * len(names), 2.6 * len(etas)), squeeze=False)
    for i, p in enumerate(etas):
        for j, c in enumerate(names):
            ax = axes[i, j]
            x, y = table[c], table[f"eta_{p}"]
            numeric = pd.api.types.is_numeric_dtype(x) and x.nunique() > 5
            if numeric:
                ax.plot(x, y, "o", ms=3, alpha=0.7)
                _trend(ax, x, y, n=5)
            else:
                levels = sorted(x.dropna().unique(), key=str)
                ax.boxplot([y[x == lv] for lv in levels],
                           tick_labels=[f"{lv:g}" if isinstance(lv, float) else plot_text(lv) for lv in levels])
            ax.axhline(0, color="k", lw=0.7)
            if i == len(etas) - 1:
                ax.set_xlabel(axis_label(fit.spec, c))
            if j == 0:
                ax.set_ylabel(f"eta_{p}")
    fig.suptitle(f"{fit.spec.name}: posterior-mean etas vs covariates", fontsize=10)
    fig.tight_layout()
    return fig, table


def prior_posterior(fit, draws: int = 2000, seed: int = 0):
    """Prior and posterior densities of every population parameter.

    Returns ``(figure, table)``; the table has prior and posterior median and
    90% interval per parameter, and the posterior/prior SD ratio (how much the
    data narrowed the prior).
    """
    import matplotlib.pyplot as plt

    from bayespk.units import parameter_units, with_unit

    names = fit.spec.population_parameters
    units = parameter_units(fit.spec)
    with quiet_pymc():
        prior = pm.sample_prior_predictive(draws=draws, model=fit.model.build(), var_names=names,
                                           random_seed=seed)["prior"].to_dataset()
    post = fit.posterior
    rows, panels = [], []
    for n in names:
        pr = prior[n].values.reshape(draws, -1)
        po = post[n].values.reshape(-1, pr.shape[1])
        for k in range(pr.shape[1]):
            label = n if pr.shape[1] == 1 else f"{n}[{k}]"
            a, b = pr[:, k], po[:, k]
            rows.append({"parameter": label,
                         "prior_median": np.median(a), "prior_q5": np.quantile(a, 0.05),
                         "prior_q95": np.quantile(a, 0.95),
                         "post_median": np.median(b), "post_q5": np.quantile(b, 0.05), "post_q95": np.quantile(b, 0.95),
                         "sd_ratio": np.std(b) / np.std(a)})  # fmt: skip
            panels.append((with_unit(label, units.get(n, "")), a, b))
    ncols = 4
    nrows = -(-len(panels) // ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.4 * nrows), squeeze=False)
    for ax, (label, a, b) in zip(axes.flat, panels):
        positive = (a > 0).all() and (b > 0).all()
        lo, hi = np.quantile(np.r_[a, b], [0.005, 0.995])
        bins = np.geomspace(lo, hi, 60) if positive and lo > 0 else np.linspace(lo, hi, 60)
        ax.hist(a, bins=bins, density=True, alpha=0.4, color="0.5", label="prior")
        ax.hist(b, bins=bins, density=True, alpha=0.6, color="C0", label="posterior")
        if positive and lo > 0:
            ax.set_xscale("log")
        ax.set_title(label, fontsize=9)
        ax.set_yticks([])
    for ax in list(axes.flat)[len(panels):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    fig.suptitle(f"{fit.spec.name}: prior vs posterior", fontsize=10)
    fig.tight_layout()
    return fig, pd.DataFrame(rows)


def covariate_effects(fit, *, interval: float = 0.9, quantiles=(0.05, 0.95)):
    """Forest plot of covariate and treatment effects as fold changes of their parameter.

    A numeric covariate is shown at the ``quantiles`` of its baseline values
    in the data (against its reference value), a categorical one at each
    level, a treatment multiplier (CAR-T ``[[treatments]]``) as it is. Lines
    are ``interval`` credible intervals of the factor; the grey band marks
    0.8-1.25. Returns ``(figure, table)`` with columns ``parameter, effect,
    label, median, lower, upper``.
    """
    import matplotlib.pyplot as plt

    post = fit.posterior.stack(sample=("chain", "draw"))
    lo, hi = (1 - interval) / 2, 1 - (1 - interval) / 2
    rows = []

    def add(parameter, effect, label, factor):
        q = np.quantile(np.asarray(factor, float), [0.5, lo, hi])
        rows.append({"parameter": parameter, "effect": effect, "label": label,
                     "median": q[0], "lower": q[1], "upper": q[2]})

    for c in fit.spec.covariates:
        info = fit.model._covariates[c.name]
        theta = np.full(post.sizes["sample"], c.coefficient) if c.fixed else None
        if c.effect == "categorical":
            draws = theta if theta is not None else post[c.name].transpose("sample", ...).values
            for k, level in enumerate(info["levels"]):
                value = draws if draws.ndim == 1 else draws[:, k]
                add(c.parameter, c.name, f"{c.column} = {level} (vs {c.reference})", np.exp(value))
            continue
        theta = theta if theta is not None else post[c.name].values
        for x in np.quantile(info["values"], quantiles):
            add(c.parameter, c.name, f"{c.column} = {x:.3g} (vs {c.reference:g})", np.exp(c.log_factor(x, theta)))
    for tr in fit.spec.treatments:
        add("rho", tr.name, f"{tr.column} given (expansion rate)",
            np.full(post.sizes["sample"], tr.multiplier) if tr.fixed else post[tr.name].values)
    table = pd.DataFrame(rows, columns=["parameter", "effect", "label", "median", "lower", "upper"])
    fig, ax = plt.subplots(figsize=(7, 0.45 * max(len(table), 2) + 1.2))
    y = np.arange(len(table))[::-1]
    ax.axvspan(0.8, 1.25, color="0.9", zorder=0)
    ax.axvline(1.0, color="0.4", lw=1)
    ax.hlines(y, table.lower, table.upper, color="C0", lw=2)
    ax.plot(table["median"], y, "o", color="C0")
    ax.set_yticks(y, [plot_text(f"{p}: {lab}") for p, lab in zip(table.parameter, table.label)])
    ax.set_xscale("log")
    ticks = [t for t in (0.1, 0.2, 0.5, 0.8, 1.0, 1.25, 2.0, 5.0, 10.0)
             if table.lower.min() / 1.5 <= t <= table.upper.max() * 1.5] if len(table) else [1.0]
    ax.set_xticks(ticks, [f"{t:g}" for t in ticks])
    ax.xaxis.set_minor_formatter(plt.NullFormatter())
    ax.set_xlabel(f"fold change of the parameter (median, {interval:.0%} CrI)")
    ax.set_title("Covariate and treatment effects")
    fig.tight_layout()
    return fig, table
