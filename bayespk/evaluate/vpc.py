"""Visual predictive checks: plain, prediction-corrected and censored.

For each time bin the observed percentiles (default 5th, 50th, 95th) are set
against the distribution of the same percentiles over replicates of the study
simulated with new subjects (:func:`~bayespk.evaluate.simulation.simulate_replicates`):
its median and a 90% interval.

* Prediction correction (Bergstrand et al. 2011, AAPS J 13:143):
  ``pcY = lb + (Y - lb) * (PRED_bin - lb) / (PRED - lb)``, with ``PRED`` the
  typical-subject prediction (median over posterior draws) and ``PRED_bin``
  its median in the bin; on a log scale ``pcY = Y + PRED_bin - PRED``.
  Applied alike to observed and simulated values (and to the LLOQ).
  **Rule for PRED at or below the lower bound**: the correction is undefined
  there (division by ``PRED - lb <= 0``), so an observation with
  ``PRED <= lb`` (or an undefined PRED; on a log scale: a PRED that is not
  finite) is **excluded** from the prediction-corrected VPC, the observation
  and its simulated values in every replicate alike, and counted: the figure
  states how many, ``VPC.settings["n_excluded"]`` gives the count and
  ``VPC.excluded`` the rows. Typical case, ``lb = 0``: a sample at or before
  the first dose (or within an absorption lag), where ``PRED = 0``. Only when
  nothing is left is the pcVPC refused. The plain VPC keeps every observation.
* Censoring: with BLQ data the fraction below LLOQ per bin is compared
  (observed vs simulated), and an observed or simulated percentile that falls
  below the LLOQ is not drawn as a value (it is only known to be below it).
  Every panel of data with an LLOQ (censored rows, or an LLOQ column, even
  when no observation is censored) draws it as a labelled horizontal line.
* x axis (``x=``): ``"TIME"`` (default), ``"TAD"`` or any numeric column of
  the dataset; binning (auto, a number, edges) is done on that x.
  **TAD** (time after dose) is the model design's
  (:meth:`~bayespk.data.design.Design.last_dose`, the rule of the closed forms
  and of algebraic models' ``TAD``), as NONMEM orders the records: the time since the most recent dose
  given at or before the observation, ADDL repeats included (a dose record at the observation's
  TIME counts when it comes before the observation in the file, an ADDL
  repeat falling on the observation's TIME comes after it, so a trough sample
  taken at the time of a repeat has TAD = II; a reset, EVID 3, EVID 4 or
  SS=1, clears every earlier dose and its pending repeats). **Before the
  first dose, and after a reset until the next dose, TAD is the time itself.** A dataset column named TAD
  is not read for ``x="TAD"``.
* **Data support** (``dv_floor=``): concentrations are never negative, so
  with ``dv_floor="auto"`` (default) and every quantified observation >= 0
  (and the DV not log-transformed) each simulated value below 0 is read as 0
  before percentiles are taken: the percentiles are those of ``max(sim, 0)``,
  which is the same as clipping each simulated percentile at 0, so an
  additive error model no longer draws a negative 5th percentile. A number
  sets another floor (applied to observed and simulated values alike),
  ``None`` none. On a **log y axis** a value of 0 (or below) cannot be drawn:
  such band edges and percentile lines are drawn at the bottom of the axis
  (the LLOQ when the data have one, else half the smallest positive value
  shown) and marked with a downward triangle; the table keeps the values.
* Strata: panel titles are ``COLUMN = value`` (values written exactly:
  ``APGRLOW = 0``, not ``0.0``), or the labels given in ``strat_labels``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bayespk.data.nonmem import plot_text
from bayespk.errors import BayesPKError
from bayespk.evaluate.simulation import observation_table, prior_replicates, simulate_replicates
from bayespk.units import axis_label

__all__ = ["VPC", "vpc", "bin_edges", "prediction_correct"]

LOW, HIGH = -1e300, 1e300  # stand-ins for left- / right-censored values when taking percentiles
EXCLUDED_COLUMNS = ["strat", "ID", "TIME", "ROW", "DV", "PRED"]  # VPC.excluded
X_LABELS = {"TIME": "time", "TAD": "time after dose"}  # axis labels of x; any other column: its name


@dataclass
class VPC:
    """A VPC: the figure, the tidy per-bin table and the observation points.

    Unpacks as ``figure, table = vpc(fit)``.
    """

    figure: Any  # matplotlib Figure
    table: pd.DataFrame
    points: pd.DataFrame
    settings: dict = field(default_factory=dict)
    excluded: pd.DataFrame = field(default_factory=lambda: pd.DataFrame(columns=EXCLUDED_COLUMNS))

    def __iter__(self):
        yield self.figure
        yield self.table


def bin_edges(times: np.ndarray, bins="auto", binning: str = "kmeans") -> np.ndarray:
    """Bin edges for a set of observation times.

    Parameters
    ----------
    times : array
    bins : "auto", int or array
        ``"auto"``: one bin per distinct time when there are at most 10
        (a nominal design), else ``clip(round(1.5 n^(1/3)), 4, 12)`` bins.
        An int gives the number of bins; an array the edges themselves.
    binning : {"kmeans", "quantile"}
        k-means on time (natural breaks, like Jenks) or equal-count bins.

    Examples
    --------
    >>> bin_edges(np.array([1, 1, 2, 2, 8, 8]))
    array([1. , 1.5, 5. , 8. ])
    """
    t = np.sort(np.asarray(times, dtype=float))
    if len(t) == 0:
        raise BayesPKError("no observations to bin")
    if not isinstance(bins, (str, int, np.integer)):
        edges = np.asarray(bins, dtype=float)
        if edges.ndim != 1 or len(edges) < 2 or np.any(np.diff(edges) <= 0):
            raise BayesPKError("explicit bin edges must be an increasing list of at least two times")
        if t[0] < edges[0] or t[-1] > edges[-1]:
            raise BayesPKError(f"bin edges [{edges[0]:g}, {edges[-1]:g}] do not cover the observation times "
                               f"[{t[0]:g}, {t[-1]:g}]")
        return edges
    uniq = np.unique(t)
    if bins == "auto":
        if len(uniq) <= 10:
            return np.r_[uniq[0], (uniq[1:] + uniq[:-1]) / 2, uniq[-1]] if len(uniq) > 1 else np.r_[t[0], t[0]]
        k = int(np.clip(round(1.5 * len(t) ** (1 / 3)), 4, 12))
    elif isinstance(bins, str):
        raise BayesPKError(f"bins must be 'auto', a number or a list of edges, got {bins!r}")
    else:
        k = int(bins)
        if k < 1:
            raise BayesPKError(f"bins must be >= 1, got {k}")
    k = min(k, len(uniq))
    if binning == "quantile":
        inner = np.unique(np.quantile(t, np.linspace(0, 1, k + 1)[1:-1]))
        inner = inner[(inner > t[0]) & (inner < t[-1])]  # ties at the ends would give empty bins
    elif binning == "kmeans":
        centers = _kmeans_1d(t, k)
        inner = (centers[1:] + centers[:-1]) / 2
    else:
        raise BayesPKError(f"binning must be 'kmeans' or 'quantile', got {binning!r}")
    return np.r_[t[0], inner, t[-1]]


def _kmeans_1d(x: np.ndarray, k: int, iterations: int = 100) -> np.ndarray:
    """Lloyd's algorithm in one dimension, started at quantiles (deterministic)."""
    centers = np.unique(np.quantile(x, (np.arange(k) + 0.5) / k))
    for _ in range(iterations):
        assign = np.argmin(np.abs(x[:, None] - centers[None, :]), axis=1)
        new = np.array([x[assign == j].mean() for j in range(len(centers)) if np.any(assign == j)])
        if len(new) == len(centers) and np.allclose(new, centers):
            break
        centers = np.unique(new)
    return np.sort(centers)


def prediction_correct(y, pred, pred_bin, *, lower_bound: float = 0.0, log_dv: bool = False):
    """Bergstrand prediction correction of values ``y`` with predictions ``pred``.

    Examples
    --------
    >>> prediction_correct(np.array([10.0]), np.array([5.0]), np.array([2.5]))
    array([5.])
    """
    y = np.asarray(y, dtype=float)
    if log_dv:
        return y + pred_bin - pred
    return lower_bound + (y - lower_bound) * (pred_bin - lower_bound) / (pred - lower_bound)


def _percentiles(values: np.ndarray, probs, threshold: float) -> np.ndarray:
    """Percentiles along the last axis; those below ``threshold`` (censored) become NaN."""
    q = np.quantile(values, probs, axis=-1)
    q = np.moveaxis(np.atleast_1d(q), 0, -1)
    q = np.where((q <= LOW / 2) | (q >= HIGH / 2), np.nan, q)
    if np.isfinite(threshold):
        q = np.where(q < threshold, np.nan, q)
    return q


def _x_values(source, obs: pd.DataFrame, x: str, pd_obs: bool = False) -> np.ndarray:
    """The x value of every observation: TIME, the computed TAD, or a numeric dataset column."""
    if not isinstance(x, str) or not x.strip():
        raise BayesPKError(f"x must be 'TIME', 'TAD' or a column name, got {x!r}")
    name = x.strip().upper()
    if name == "TIME":
        return obs.TIME.to_numpy(float)
    if name == "TAD":
        model = getattr(source, "model", source)  # a Fit or a PopulationModel
        design = model.pd_design if pd_obs else model.design
        return obs.ROW.map(pd.Series(design.last_dose()[0], index=design.obs_row)).to_numpy(float)
    usable = [c for c in obs.columns if c not in ("ROW", "LIMIT", "DV", "CENS", "ID")]
    if name not in obs.columns or name not in usable:
        raise BayesPKError(f"x: no column {x!r}; use TIME, TAD (time after dose) or a numeric dataset column "
                           f"({', '.join(c for c in usable if c != 'TIME')})")
    values = pd.to_numeric(obs[name], errors="coerce").to_numpy(float)
    bad = ~np.isfinite(values)
    if bad.any():
        k = int(np.argmax(bad))
        raise BayesPKError(f"x: column {name} must be a finite number on every observation; row "
                           f"{int(obs.ROW.iloc[k])} has {obs[name].iloc[k]!r}")
    return values


def _resolve_floor(dv_floor, obs: pd.DataFrame, log_dv: bool):
    """The support floor of the DV (module docstring): a number, or None for none."""
    if dv_floor is None:
        return None
    if isinstance(dv_floor, str):
        if dv_floor != "auto":
            raise BayesPKError(f"dv_floor must be 'auto', a number or None, got {dv_floor!r}")
        quantified = obs.DV.to_numpy(float)[(obs.CENS.to_numpy() == 0)]
        quantified = quantified[np.isfinite(quantified)]
        return None if log_dv or (quantified < 0).any() else 0.0
    value = float(dv_floor)
    if not np.isfinite(value):
        raise BayesPKError(f"dv_floor must be a finite number, 'auto' or None, got {dv_floor!r}")
    return value


def _same_level(key, level) -> bool:
    """Whether a key of ``strat_labels`` names the stratum ``level`` (0, 0.0 and "0" name 0.0)."""
    if isinstance(key, str):
        key = key.strip()
        if key == plot_text(level) or key == str(level):
            return True
        try:
            key = float(key)
        except ValueError:
            return False
    try:
        return bool(key == level) or float(key) == float(level)
    except (TypeError, ValueError):
        return False


def strat_titles(levels, strat: str | None, labels: dict | None = None) -> dict:
    """Panel title of every stratum level: ``labels``' text for it, else ``COLUMN = value`` (exact)."""
    if labels and strat is None:
        raise BayesPKError("strat_labels needs strat (the column whose levels they name)")
    titles, unused = {}, dict(labels or {})
    for level in levels:
        key = next((k for k in unused if _same_level(k, level)), None)
        if key is not None:
            titles[level] = plot_text(str(unused.pop(key)))
        else:
            titles[level] = f"{plot_text(strat)} = {plot_text(level)}" if strat else ""
    if unused:
        raise BayesPKError(f"strat_labels: {', '.join(map(repr, unused))} {'is' if len(unused) == 1 else 'are'} "
                           f"not a value of {strat} (its values: {', '.join(plot_text(v) for v in levels)})")
    return titles


def vpc(
    source,
    *,
    n_rep: int = 200,
    bins="auto",
    binning: str = "kmeans",
    pi: tuple[float, ...] = (0.05, 0.5, 0.95),
    ci: float = 0.9,
    pred_corr: bool = False,
    log_dv: bool = False,
    lower_bound: float = 0.0,
    strat: str | None = None,
    strat_labels: dict | None = None,
    x: str = "TIME",
    dv_floor="auto",
    log_y: bool = False,
    seed: int = 0,
    replicates=None,
    pd_obs: bool = False,
) -> VPC:
    """Visual predictive check of a fit, or prior predictive check of a model.

    Parameters
    ----------
    source : Fit or PopulationModel
        A Fit gives a VPC (replicates from the posterior, new subjects). A
        PopulationModel (not yet fitted) gives a prior predictive check: the
        same plot with replicates drawn from the priors.
    n_rep : int
        Simulated replicates of the study (new subjects, one posterior or prior draw each).
    bins, binning
        See :func:`bin_edges`; binning is done per stratum, on ``x``.
    pi : tuple of float
        Percentiles of the data compared (as probabilities).
    ci : float
        Width of the interval of each simulated percentile across replicates.
    pred_corr : bool
        Prediction-corrected VPC (Bergstrand 2011).
    log_dv : bool
        The DV is on a log scale: prediction correction becomes additive.
    lower_bound : float
        ``lb`` of the prediction correction (0 for concentrations). Observations
        with ``PRED <= lower_bound`` are excluded from the pcVPC and counted
        (see the module docstring); refused only when that leaves none.
    strat : str, optional
        Stratify by a column of the dataset (covariate) or ``"DOSE"`` (the
        subject's first dose amount).
    strat_labels : dict, optional
        Panel titles by stratum value, e.g. ``{0: "APGR >= 5", 1: "APGR < 5"}``
        (keys ``0``, ``0.0`` and ``"0"`` all name the value 0); a value not
        named keeps the default title ``COLUMN = value``.
    x : str
        The x axis and what is binned: ``"TIME"`` (default), ``"TAD"`` (time
        after the most recent dose, computed from the dose records, ADDL
        included; the time itself before the first dose) or any numeric
        column of the dataset.
    dv_floor : "auto", float or None
        Support of the DV: simulated values below it are read as it (module
        docstring). ``"auto"``: 0 when every quantified observation is >= 0
        and ``log_dv`` is False, else none.
    log_y : bool
        Log y axis (values at or below 0 are drawn at the bottom of the axis
        and marked).
    seed : int
    replicates : xarray.Dataset, optional
        Reuse replicates from :func:`simulate_replicates` (of the same observations: ``pd`` as ``pd_obs``).
    pd_obs : bool
        The PD observations of a PK/PD model (``DV_PD``, simulated with its ``[pd_error]``) instead of the
        concentrations: the response over time (or TAD, or a column).

    Returns
    -------
    VPC
        ``figure``, ``table`` (one row per stratum and bin: bin limits
        ``t_lo``, ``t_hi`` and ``t_mid`` on the x axis, n, observed and
        simulated percentiles, fraction below LLOQ), ``points`` (the
        observations as plotted; ``x`` holds their x value, ``TIME`` their
        time), ``settings`` (the options, ``x``, ``dv_floor`` as applied,
        ``strat_titles``, ``x_label`` and ``y_label`` (the axis labels, with the
        units of the spec's ``[data] units``),
        and ``n_excluded``: observations left out of the prediction
        correction, 0 without it) and ``excluded`` (those observations: strat,
        ID, TIME, dataset ROW, DV, PRED).
    """
    if not 0 < ci < 1 or not all(0 < p < 1 for p in pi):
        raise BayesPKError("ci and every pi must be probabilities strictly between 0 and 1")
    fitted = hasattr(source, "tree")
    obs = observation_table(source, pd_obs)
    if strat is not None and strat.upper() not in obs.columns:
        raise BayesPKError(f"strat: no column {strat!r}; use a dataset column "
                           f"({', '.join(c for c in obs.columns if c not in ('ROW', 'LIMIT'))})")
    xs = _x_values(source, obs, x, pd_obs)
    x_name = x.strip().upper()
    floor = _resolve_floor(dv_floor, obs, log_dv)
    strata = obs[strat.upper()].to_numpy() if strat else np.zeros(len(obs))
    titles = strat_titles(pd.unique(strata), strat, strat_labels)
    if replicates is not None:
        reps = replicates
    elif fitted:
        reps = simulate_replicates(source, n_rep, seed=seed, pd=pd_obs)
    else:
        reps = prior_replicates(source, n_rep, seed=seed, pd=pd_obs)
    sim = reps["DV_sim"].values  # (rep, obs)
    pred = np.median(reps["PRED"].values, axis=0)
    excluded = np.zeros(len(obs), dtype=bool)
    if pred_corr:
        if not np.isfinite(lower_bound):
            raise BayesPKError(f"lower_bound must be a finite number, got {lower_bound!r}")
        # the stated rule: no correction is defined where PRED <= lb (log scale: PRED not finite)
        excluded = ~np.isfinite(pred) if log_dv else ~(pred > lower_bound)
        if excluded.all() and log_dv:
            raise BayesPKError(f"prediction correction on the log scale needs a finite PRED, and all {len(obs)} "
                               "observations have none: nothing is left to plot; use the plain VPC (no pred_corr, "
                               "--no-pred-corr)")
        if excluded.all():
            raise BayesPKError(
                f"prediction correction needs PRED > lower bound {lower_bound:g} for an observation to be "
                f"corrected, and all {len(obs)} observations have PRED <= {lower_bound:g}"
                f"{_PRED0 if np.all(pred[excluded] == 0) else ''}: nothing is left to plot; lower the lower "
                "bound (lower_bound=, --lower-bound) or use the plain VPC (no pred_corr, --no-pred-corr)")
    lloq = np.where(obs.CENS == 1, obs.LIMIT, obs.LLOQ if "LLOQ" in obs else np.nan).astype(float)
    censored = (obs.CENS.to_numpy() != 0).any() or np.isfinite(lloq).any()
    y = np.where(obs.CENS == 1, LOW, np.where(obs.CENS == -1, HIGH, obs.DV)).astype(float)
    if floor is not None:  # the data's support: a value below the floor is read as the floor
        sim = np.maximum(sim, floor)
        y = np.where(obs.CENS.to_numpy() == 0, np.maximum(y, floor), y)
    sim = np.where(np.isfinite(lloq)[None, :] & (sim < lloq[None, :]), LOW, sim)

    levels = pd.unique(strata)
    rows, points = [], []
    lo_q, hi_q = (1 - ci) / 2, 1 - (1 - ci) / 2
    for level in levels:
        in_s = (strata == level) & ~excluded
        if not in_s.any():
            continue  # every observation of this stratum excluded (counted in n_excluded)
        t = xs[in_s]
        edges = bin_edges(t, bins, binning)
        b = np.clip(np.searchsorted(edges, t, side="right") - 1, 0, len(edges) - 2)
        y_s, sim_s, pred_s, lloq_s = y[in_s], sim[:, in_s], pred[in_s], lloq[in_s]
        if pred_corr:
            pred_bin = np.array([np.median(pred_s[b == j]) for j in b])

            def corr(v, pred_s=pred_s, pred_bin=pred_bin):  # censored stand-ins stay as they are
                return np.where(np.abs(v) >= HIGH / 2, v, prediction_correct(
                    v, pred_s, pred_bin, lower_bound=lower_bound, log_dv=log_dv))

            y_s, sim_s, lloq_s = corr(y_s), corr(sim_s), corr(lloq_s)
        points.append(pd.DataFrame({
            "strat": level, "ID": obs.ID.to_numpy()[in_s], "TIME": obs.TIME.to_numpy(float)[in_s], "x": t,
            "bin": b,
            "DV": np.where(np.abs(y_s) >= HIGH / 2, np.nan, y_s), "BLQ": obs.CENS.to_numpy()[in_s] == 1,
            "LLOQ": lloq_s,
        }))  # fmt: skip
        for j in range(len(edges) - 1):
            m = b == j
            if not m.any():
                continue
            threshold = np.nanmedian(lloq_s[m]) if np.isfinite(lloq_s[m]).any() else -np.inf
            row = {"strat": level, "bin": j, "t_lo": edges[j], "t_hi": edges[j + 1],
                   "t_mid": float(np.median(t[m])), "n_obs": int(m.sum())}
            obs_q = _percentiles(y_s[m], pi, threshold)
            sim_q = _percentiles(sim_s[:, m], pi, threshold)  # (rep, n_pi)
            for k, p in enumerate(pi):
                name = f"p{100 * p:g}"
                col = sim_q[:, k]
                ok = np.isfinite(col)
                enough = ok.mean() >= 0.5
                row[f"obs_{name}"] = obs_q[k]
                row[f"sim_{name}_median"] = np.median(col[ok]) if enough else np.nan
                row[f"sim_{name}_lo"] = np.quantile(col[ok], lo_q) if enough else np.nan
                row[f"sim_{name}_hi"] = np.quantile(col[ok], hi_q) if enough else np.nan
            if censored:
                frac_sim = (sim_s[:, m] <= LOW / 2).mean(axis=1)
                row["obs_frac_blq"] = float((y_s[m] <= LOW / 2).mean())
                row["sim_frac_blq_median"] = float(np.median(frac_sim))
                row["sim_frac_blq_lo"] = float(np.quantile(frac_sim, lo_q))
                row["sim_frac_blq_hi"] = float(np.quantile(frac_sim, hi_q))
            rows.append(row)
    table = pd.DataFrame(rows)
    points = pd.concat(points, ignore_index=True)
    settings = dict(n_rep=int(reps.sizes["rep"]), pi=tuple(pi), ci=ci, pred_corr=pred_corr, log_dv=log_dv,
                    strat=strat,
                    bins=bins if isinstance(bins, str) else int(bins) if np.ndim(bins) == 0 else list(bins),
                    binning=binning, x=x_name, dv_floor=floor, strat_titles=titles,
                    kind="posterior" if fitted else "prior",
                    lower_bound=float(lower_bound), n_excluded=int(excluded.sum()), n_obs=len(obs),
                    x_label=axis_label(source.spec, x_name, X_LABELS.get(x_name, plot_text(x_name))),
                    y_label=axis_label(source.spec, *(("effect", "PD response") if pd_obs else ("conc", "DV"))),
                    pd_obs=pd_obs)
    dropped = pd.DataFrame({"strat": strata[excluded], "ID": obs.ID.to_numpy()[excluded],
                            "TIME": obs.TIME.to_numpy()[excluded], "ROW": obs.ROW.to_numpy()[excluded],
                            "DV": obs.DV.to_numpy()[excluded], "PRED": pred[excluded]}, columns=EXCLUDED_COLUMNS)
    settings["exclusion_note"] = exclusion_note(settings, dropped.PRED.to_numpy())
    fig = plot_vpc(table, points, settings, log_y=log_y, title=source.spec.name)
    return VPC(fig, table, points, settings, dropped)


_PRED0 = " (PRED 0: no drug yet, e.g. at or before the first dose)"


def exclusion_note(settings: dict, pred_excluded=None) -> str:
    """One sentence saying how many observations the prediction correction left out ("" if none)."""
    n = settings.get("n_excluded", 0)
    if not settings.get("pred_corr") or not n:
        return ""
    what = "a PRED that is not finite" if settings.get("log_dv") else f"PRED <= {settings['lower_bound']:g}"
    why = _PRED0 if pred_excluded is not None and len(pred_excluded) and np.all(pred_excluded == 0) else ""
    total = settings.get("n_obs")
    of = f" of {total}" if total else ""
    return (f"{n}{of} observation{'s' if (total or n) != 1 else ''} with {what} excluded from the prediction "
            f"correction{why}")


def _log_floor(table: pd.DataFrame, points: pd.DataFrame, names) -> float:
    """Bottom of a log y axis: the LLOQ when the data have one, else half the smallest positive value shown."""
    if points.LLOQ.notna().any():
        lloq = points.LLOQ.to_numpy(float)
        lloq = lloq[np.isfinite(lloq) & (lloq > 0)]
        if len(lloq):
            return float(lloq.min())
    values = [points.DV.to_numpy(float)] + [table[f"{w}_{n}{s}"].to_numpy(float) for n in names
                                            for w, s in (("sim", "_lo"), ("sim", "_median"), ("sim", "_hi"),
                                                         ("obs", ""))]
    v = np.concatenate(values)
    v = v[np.isfinite(v) & (v > 0)]
    return float(v.min()) / 2 if len(v) else 1e-3


def plot_vpc(table: pd.DataFrame, points: pd.DataFrame, settings: dict, *, log_y: bool = False, title: str = ""):
    """Draw a VPC from its table and points (one column of panels per stratum)."""
    import matplotlib.pyplot as plt

    levels = list(pd.unique(table.strat))
    censored = "obs_frac_blq" in table.columns
    nrows = 2 if censored else 1
    fig, axes = plt.subplots(nrows, len(levels), figsize=(max(7.0, 5.2 * len(levels)), 4.2 + 1.8 * censored),
                             squeeze=False, sharex="col", gridspec_kw={"height_ratios": [3, 1][:nrows]})
    pi = settings["pi"]
    names = [f"p{100 * p:g}" for p in pi]
    mid = min(range(len(pi)), key=lambda k: abs(pi[k] - 0.5))
    ci = settings["ci"]
    x_name = settings.get("x", "TIME")
    titles = settings.get("strat_titles") or {}
    floor = _log_floor(table, points, names) if log_y else None
    clipped_label = True
    for c, level in enumerate(levels):
        ax = axes[0, c]
        tb = table[table.strat == level]
        pt_ = points[points.strat == level]
        x = tb.t_mid.to_numpy()
        shown = (lambda v: v) if floor is None else (lambda v: np.where(np.asarray(v, float) <= 0, floor, v))
        ax.plot(pt_.x if "x" in pt_ else pt_.TIME, shown(pt_.DV), "o", color="0.55", ms=2.5, alpha=0.6,
                label="observed", zorder=1)
        for k, name in enumerate(names):
            color = "C3" if k == mid else "C0"
            outer = f"simulated {names[0]}, {names[-1]}" if len(names) > 1 else f"simulated {name}"
            label = f"simulated {name} ({ci:.0%} CI)" if k == mid else (f"{outer} ({ci:.0%} CI)" if k == 0 else None)
            ax.fill_between(x, shown(tb[f"sim_{name}_lo"]), shown(tb[f"sim_{name}_hi"]), color=color, alpha=0.25,
                            lw=0, label=label, zorder=2)
            ax.plot(x, shown(tb[f"sim_{name}_median"]), color=color, lw=0.8, ls=":", zorder=3)
            ax.plot(x, shown(tb[f"obs_{name}"]), color="C3" if k == mid else "navy", lw=1.8,
                    ls="-" if k == mid else "--", marker=".", zorder=4,
                    label=f"observed {name}" if k == mid else ("observed outer percentiles" if k == 0 else None))
            if floor is not None:  # values at or below 0 on a log axis: drawn at the floor, marked
                low = np.zeros(len(tb), bool)
                for col in (f"sim_{name}_lo", f"sim_{name}_median", f"obs_{name}"):
                    low |= tb[col].to_numpy(float) <= 0
                if low.any():
                    ax.plot(x[low], np.full(low.sum(), floor), "v", color=color, ms=5, zorder=5,
                            label="<= 0, drawn at the axis floor" if clipped_label else None)
                    clipped_label = False
        if pt_.LLOQ.notna().any():
            value = float(np.nanmedian(pt_.LLOQ))
            ax.axhline(value, color="k", lw=0.8, ls="-.", label=f"LLOQ ({value:.4g})", zorder=4)
        for e in np.r_[tb.t_lo.to_numpy(), tb.t_hi.to_numpy()[-1:]]:
            ax.axvline(e, color="0.85", lw=0.6, zorder=0)
        if log_y:
            ax.set_yscale("log")
        kind = "prediction-corrected " if settings["pred_corr"] else ""
        ax.set_ylabel(f"{kind}{settings.get('y_label', 'DV')}")
        panel = titles.get(level)
        if panel is None:
            panel = f"{plot_text(settings['strat'])} = {plot_text(level)}" if settings["strat"] else ""
        ax.set_title(panel, fontsize=9)
        if censored:
            bx = axes[1, c]
            bx.fill_between(x, tb.sim_frac_blq_lo, tb.sim_frac_blq_hi, color="C2", alpha=0.3, lw=0,
                            label=f"simulated ({ci:.0%} CI)")
            bx.plot(x, tb.sim_frac_blq_median, color="C2", lw=0.8, ls=":")
            bx.plot(x, tb.obs_frac_blq, color="k", marker=".", lw=1.5, label="observed")
            bx.set_ylabel("fraction < LLOQ")
            bx.set_ylim(-0.02, 1.02)
            bx.legend(fontsize=7)
        axes[-1, c].set_xlabel(settings.get("x_label") or X_LABELS.get(x_name, plot_text(x_name)))
    axes[0, 0].legend(fontsize=7, loc="best")
    kind = "prediction-corrected VPC" if settings["pred_corr"] else "VPC"
    if settings.get("kind") == "prior":
        kind = f"prior predictive check ({kind})"
    note = settings.get("exclusion_note") or exclusion_note(settings)
    fig.suptitle(f"{title}: {kind}, {settings['n_rep']} replicates with new subjects"
                 + (f"\n{note}" if note else ""), fontsize=10)
    fig.tight_layout()
    return fig
