"""Plots of simulated regimens: concentration bands and target attainment."""

from __future__ import annotations

import numpy as np

from bayespk.data.nonmem import plot_text
from bayespk.simulate.exposure import CONCENTRATION_METRICS, Target, target_attainment

__all__ = ["plot_regimens"]


def plot_regimens(sim, targets=None, *, by: str | None = None, bins=4, ci: float = 0.9, log_y: bool = False,
                  attainment=None, figsize=None):
    """Concentration-time bands per regimen and, with targets, the probability of attaining them.

    Left panel: per regimen the median concentration and its band (central
    ``sim.info["band"]`` interval over subjects and posterior draws), the
    analysed interval shaded when all regimens share it, horizontal lines at
    concentration targets (Cmin, Cmax, Ctrough and their steady-state forms)
    and at the time-above threshold. Right panel (with ``targets``): per
    regimen (by dose rate) and target, the median fraction of subjects
    attaining it with its ``ci`` credible interval over draws (bars) and the
    overall probability (open marker); with ``by``, one point per stratum.

    Parameters
    ----------
    sim : RegimenSimulation
    targets : str, Target or list, optional
    by, bins : stratification of the attainment panel (see ``target_attainment``)
    ci : float
    log_y : bool
        Log concentration axis.
    attainment : DataFrame, optional
        A table from ``target_attainment`` to draw instead of computing one.

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt

    targets = [Target.parse(t) for t in ([targets] if isinstance(targets, (str, Target)) else (targets or []))]
    if targets and attainment is None:
        attainment = target_attainment(sim, targets, by=by, bins=bins, ci=ci)
    panels = 2 if attainment is not None and len(attainment) else 1
    fig, axes = plt.subplots(1, panels, figsize=figsize or (6.5 * panels, 4.5), squeeze=False)
    ax = axes[0, 0]
    order = sim.ordered_labels()
    colors = {lb: plt.get_cmap("tab10")(i % 10) for i, lb in enumerate(order)}
    band = sim.info.get("band", 0.9)
    prof = sim.profiles
    if prof is not None:
        for lb in order:
            p = prof[prof.regimen == lb]
            ax.fill_between(p.time, p.lower, p.upper, color=colors[lb], alpha=0.2, linewidth=0)
            ax.plot(p.time, p["median"], color=colors[lb], lw=1.5, label=plot_text(lb))
    intervals = {tuple(v) for v in sim.info.get("intervals", {}).values()}
    if len(intervals) == 1:
        a, b = intervals.pop()
        ax.axvspan(a, b, color="0.9", zorder=0, label="analysed interval")
    threshold = sim.info.get("threshold")
    if threshold is not None:
        ax.axhline(threshold, color="0.3", ls=":", lw=1, label=f"threshold {threshold:g}")
    drawn = set()
    for t in targets:
        if t.metric not in CONCENTRATION_METRICS:
            continue
        for v in (t.lower, t.upper):
            if v is not None and v not in drawn:
                drawn.add(v)
                ax.axhline(v, color="k", ls="--", lw=1, label=plot_text(f"target {t.label}"))
    if log_y:
        ax.set_yscale("log")
    ax.set_xlabel("time")
    ax.set_ylabel("concentration")
    ax.set_title(f"median and {band:.0%} interval (subjects x posterior draws)", fontsize=10)
    ax.legend(fontsize=8, frameon=False)

    if panels == 2:
        ax2 = axes[0, 1]
        tab = attainment
        strat = tab[tab.stratum != "all"] if (tab.stratum != "all").any() else tab
        series = list(dict.fromkeys(zip(strat.target, strat.stratum)))
        width = 0.8 / max(1, len(series))
        x0 = {lb: i for i, lb in enumerate(order)}
        for k, (tg, st) in enumerate(series):
            rows = strat[(strat.target == tg) & (strat.stratum == st)]
            x = np.array([x0[r] for r in rows.regimen]) - 0.4 + width * (k + 0.5)
            label = plot_text(tg if st == "all" else f"{tg}, {rows.by.iloc[0]} {st}")
            err = np.vstack([rows["median"] - rows.lower, rows.upper - rows["median"]])
            line = ax2.errorbar(x, rows["median"], yerr=np.clip(err, 0, None), fmt="o", capsize=3, label=label)
            ax2.plot(x, rows.probability, "o", mfc="none", color=line[0].get_color(), ms=9)
        ax2.set_xticks(range(len(order)), [plot_text(lb) for lb in order],
                       rotation=30 if len(order) > 4 else 0)
        ax2.set_ylim(-0.03, 1.03)
        ax2.set_ylabel("P(target attained)")
        ax2.set_title(f"median and {ci:.0%} CrI over draws (open: overall)", fontsize=10)
        ax2.grid(axis="y", alpha=0.3)
        ax2.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig
