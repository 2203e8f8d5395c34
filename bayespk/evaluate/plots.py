"""Plots that read a Fit (its DataTree and spec) and nothing else."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from bayespk.data.nonmem import plot_text

__all__ = ["individual_curves", "plot_individual"]


def individual_curves(fit, *, n_grid: int = 120, interval: float = 0.9, draws: int = 200,
                      ids=None) -> pd.DataFrame:
    """Posterior median and interval of each subject's concentration curve on a time grid.

    Returns a tidy DataFrame: ``ID, TIME, median, lower, upper, PRED`` (PRED is
    the median typical-subject prediction given the subject's covariates).
    """
    records = fit.tree["records"].to_dataset().to_dataframe()
    t_max = float(records.TIME.max())
    grid = np.unique(np.r_[np.linspace(0.0, t_max, n_grid), records.TIME[records.EVID.isin([1, 4])].to_numpy()])
    if fit.model.cell_kinetics and t_max > 28.0:  # CAR-T: resolve the first month, then months to years
        grid = np.unique(np.r_[np.linspace(0.0, 28.0, n_grid), np.geomspace(28.0, t_max, n_grid // 2)])
    pred = fit.predict(grid=grid, draws=draws, ids=ids)
    lo, hi = (1 - interval) / 2, 1 - (1 - interval) / 2
    ipred = pred["IPRED"].stack(sample=("chain", "draw"))
    q = ipred.quantile([lo, 0.5, hi], dim="sample").values
    out = pd.DataFrame({
        "ID": pred["ID"].values, "TIME": pred["TIME"].values,
        "median": q[1], "lower": q[0], "upper": q[2],
        "PRED": pred["PRED"].stack(sample=("chain", "draw")).median("sample").values,
    })  # fmt: skip
    last = records.groupby("ID").TIME.max()
    return out[out.TIME <= out.ID.map(last)].reset_index(drop=True)


def plot_individual(fit, ids=None, *, ncols: int = 4, log: bool = False, interval: float = 0.9,
                    n_grid: int = 120, draws: int = 200, xlabel: str | None = None, ylabel: str | None = None):
    """Individual fits: observations, posterior median and interval of each subject's curve.

    Doses are marked as ticks on the time axis; BLQ observations as open
    markers at the LLOQ. ``xlabel`` / ``ylabel`` default to "time" and
    "concentration" with the units of the spec's ``[data] units``. Returns
    ``(figure, curves)`` with the tidy curves of :func:`individual_curves`.
    """
    import matplotlib.pyplot as plt

    from bayespk.units import axis_label

    curves = individual_curves(fit, n_grid=n_grid, interval=interval, draws=draws, ids=ids)
    const = fit.tree["constant_data"].to_dataset()
    obs = pd.DataFrame({"ID": const["SUBJECT"].values, "TIME": const["TIME"].values,
                        "DV": fit.tree["observed_data"]["DV"].values, "CENS": const["CENS"].values})
    if fit.spec.error.by is not None:  # curves are in the reference assay's units: show its observations
        obs = obs[fit.model._assay_codes("DV", fit.model.design) == 0]
    records = fit.tree["records"].to_dataset().to_dataframe()
    doses = records[records.EVID.isin([1, 4])]
    ids = list(pd.unique(curves.ID)) if ids is None else list(ids)
    nrows = math.ceil(len(ids) / ncols)
    fig, axes = plt.subplots(nrows, ncols, figsize=(3.2 * ncols, 2.6 * nrows), sharex=True, squeeze=False)
    for ax, sid in zip(axes.flat, ids):
        c = curves[curves.ID == sid]
        ax.fill_between(c.TIME, c.lower, c.upper, color="C0", alpha=0.25, lw=0,
                        label=f"{interval:.0%} interval")
        ax.plot(c.TIME, c["median"], color="C0", lw=1.5, label="individual (median)")
        ax.plot(c.TIME, c.PRED, color="0.4", lw=1, ls="--", label="population")
        o = obs[obs.ID == sid]
        ax.plot(o.TIME[o.CENS == 0], o.DV[o.CENS == 0], "o", color="k", ms=3.5, label="observed")
        if (o.CENS != 0).any():
            ax.plot(o.TIME[o.CENS != 0], o.DV[o.CENS != 0], "o", mfc="none", color="C3", ms=4, label="BLQ")
        for t in doses.TIME[doses.ID == sid]:
            ax.axvline(t, ymax=0.06, color="C2", lw=1.5)
        ax.set_title(f"ID {plot_text(sid)}", fontsize=9)
        if log:
            ax.set_yscale("log")
    for ax in list(axes.flat)[len(ids):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7, loc="best")
    fig.supxlabel(axis_label(fit.spec, "time") if xlabel is None else xlabel)
    fig.supylabel(axis_label(fit.spec, "conc") if ylabel is None else ylabel)
    fig.suptitle(f"{fit.spec.name}: individual fits (doses marked on the time axis)", fontsize=10)
    fig.tight_layout()
    return fig, curves
