"""Plots of simulated regimens (concentration bands, target attainment) and of dose tables."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from bayespk.data.nonmem import plot_text
from bayespk.simulate.exposure import CONCENTRATION_METRICS, Target, target_attainment

__all__ = ["plot_dose_table", "plot_regimens"]


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


def plot_dose_table(tables, *, stratum: str | None = None, max_risk: float | None = None, styles=None,
                    figsize=None):
    """Probabilities against dose with credible bands: the one plot of dose tables.

    Panels: P(target) and P(exceed the safety limit) when the tables have them,
    then one panel per outcome. A star marks the chosen dose; a dashed line the
    largest acceptable risk.

    Parameters
    ----------
    tables : DoseTable, mapping of label -> DoseTable, or DataFrame
        One :class:`~bayespk.simulate.doses.DoseTable`: one line per band (or
        only ``stratum``). Several (e.g. with and without borrowing, the
        truth): one line per table, for ``stratum`` (default ``"all"``). A
        DataFrame from :func:`~bayespk.response.doses.outcome_table`: one panel
        per outcome, one line per tumor burden.
    stratum : str, optional
        The band to draw.
    max_risk : float, optional
        Default: the tables' ``max_risk``.
    styles : mapping, optional
        Label -> matplotlib line keywords (e.g. ``{"truth": {"color": "k", "ls": "--"}}``).

    Returns
    -------
    matplotlib.figure.Figure
    """
    import matplotlib.pyplot as plt
    import pandas as pd

    from bayespk.errors import SpecError

    if isinstance(tables, pd.DataFrame):
        return _plot_outcome_table(tables, figsize)
    if _is_dose_table(tables):
        one = tables
        strata = [stratum] if stratum is not None else list(dict.fromkeys(one.table.stratum))
        if len(strata) > 1:
            strata = [s for s in strata if s != "all"]
        by = one.info.get("by")
        series = [((one.label or "all") if s == "all" else f"{by} {s}" if by else s, one, s) for s in strata]
    elif isinstance(tables, Mapping) and tables and all(_is_dose_table(t) for t in tables.values()):
        series = [(str(lb), t, stratum or "all") for lb, t in tables.items()]
    else:
        raise SpecError("plot_dose_table: expected a DoseTable, a mapping of label -> DoseTable, or the DataFrame "
                        "of outcome_table")
    first = series[0][1]
    panels = []
    if any(t.target is not None for _, t, _ in series):
        panels.append(("p_target", f"P({first.target.label})" if first.target else "P(target)", False))
    if any(t.safety is not None for _, t, _ in series):
        panels.append(("p_exceed", f"P({first.safety.label}) (unsafe)" if first.safety else "P(exceed)", True))
    for _, t, _ in series:
        for o in dict.fromkeys(t.outcomes.outcome):
            if o not in [p[0] for p in panels]:
                panels.append((o, o, o == t.info.get("adverse")))
    risk = max_risk if max_risk is not None else first.max_risk
    fig, axes = plt.subplots(1, len(panels), figsize=figsize or (4.6 * len(panels), 3.9), squeeze=False)
    for i, (name, t, st) in enumerate(series):
        tab = t.table[t.table.stratum == st].sort_values("dose")
        if tab.empty:
            raise SpecError(f"plot_dose_table: stratum {st!r} is not in table {name!r}; strata are "
                            f"{', '.join(dict.fromkeys(t.table.stratum))}")
        kw = {"color": f"C{i}", "marker": "o", "ms": 4, **dict((styles or {}).get(name, {}))}
        best = t.chosen.set_index("stratum").dose.get(st, np.nan)
        for ax, (col, _, _) in zip(axes[0], panels):
            if col not in tab:
                continue
            lo, hi = (f"{col}_lower", f"{col}_upper")
            if lo in tab and hi in tab:
                ax.fill_between(tab.dose, tab[lo], tab[hi], color=kw["color"], alpha=0.12, linewidth=0)
            ax.plot(tab.dose, tab[col], label=plot_text(name), **kw)
            if not pd.isna(best):
                at = tab[tab.dose == best]
                ax.plot(at.dose, at[col], "*", color=kw["color"], ms=14, mec="k")
    for ax, (_, title, is_risk) in zip(axes[0], panels):
        if is_risk and risk is not None:
            ax.axhline(risk, color="k", lw=0.8, ls="--", label=f"max risk {risk:g}")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("dose")
        ax.set_ylabel("probability")
        ax.set_title(plot_text(title), fontsize=10)
        ax.legend(fontsize=8, frameon=False)
    fig.tight_layout()
    return fig


def _is_dose_table(x) -> bool:
    """A :class:`~bayespk.simulate.doses.DoseTable`, known by what it holds (``doses`` imports this module to
    draw itself, so this module does not import it)."""
    return all(hasattr(x, a) for a in ("table", "outcomes", "info", "max_risk", "target", "safety"))


def _plot_outcome_table(table, figsize=None):
    """Probability against dose with 90% bands, one panel per outcome and one line per tumor burden."""
    import matplotlib.pyplot as plt

    from bayespk.errors import SpecError

    need = {"dose", "tumor_burden", "outcome", "median", "q5", "q95"}
    if not need <= set(table.columns):
        raise SpecError(f"table lacks columns {sorted(need - set(table.columns))}; pass the output of outcome_table")
    outcomes = list(dict.fromkeys(table["outcome"]))
    fig, axes = plt.subplots(1, len(outcomes), figsize=figsize or (4.5 * len(outcomes), 3.8), squeeze=False)
    doses = table["dose"].to_numpy(float)
    log_x = doses.min() > 0 and doses.max() / doses.min() >= 10
    for ax, label in zip(axes[0], outcomes):
        part = table[table["outcome"] == label]
        for n, (tb, g) in enumerate(part.groupby("tumor_burden", sort=True)):
            g = g.sort_values("dose")
            ax.fill_between(g["dose"], g["q5"], g["q95"], color=f"C{n}", alpha=0.2)
            ax.plot(g["dose"], g["median"], "o-", color=f"C{n}", label=f"tumor burden {tb:g}")
        if log_x:
            ax.set_xscale("log")
        ax.set_ylim(-0.02, 1.02)
        ax.set_xlabel("dose")
        ax.set_ylabel("probability")
        ax.set_title(plot_text(label))
    axes[0][0].legend(fontsize="small")
    fig.tight_layout()
    return fig
