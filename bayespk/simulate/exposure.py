"""Exposure metrics of simulated concentration curves, target attainment and exposure overlap.

Everything here is numpy on arrays (no PyMC): :mod:`bayespk.simulate.simulation`
produces the curves, this module turns them into numbers and tables.

Metrics (per simulated subject and posterior draw)
--------------------------------------------------
Over an interval ``[start, end]`` (by default the last dosing interval of a
regimen), on a time grid that holds ``start``, ``end`` and every dose and
infusion-end time inside:

============  ==============================================================
Cmax, Tmax    largest concentration on the grid, and its time after ``start``
Cmin          smallest concentration on the grid
Ctrough       concentration at ``end`` (just before the next dose)
AUC           linear trapezoids on the grid
T_above       time with concentration >= ``threshold`` (crossings located by
              linear interpolation between grid points)
f_above       T_above / (end - start)
============  ==============================================================

The same quantities with the suffix ``_ss`` (``Cmax_ss``, ``Cmin_ss``,
``Ctrough_ss``, ``AUC_ss``, ``T_above_ss``, ``f_above_ss``) describe one
dosing interval at steady state of the maintenance dose; see
:func:`steady_state_profile`. For a linear model ``AUC_ss = F * dose / CL``.

Target attainment and overlap
-----------------------------
A :class:`Target` is a condition on one metric (``"Cmin>=10"``,
``"AUC in [300, 600]"``). :func:`target_attainment` gives, per regimen (and
covariate stratum), the fraction of subjects attaining it in each posterior
draw: its median and central credible interval over draws, and the overall
probability (all subjects and draws pooled). :func:`exposure_overlap` compares
the exposure distributions of neighbouring regimens: the overlap coefficient
(OVL, the area shared by the two densities, estimated by Gaussian kernel
density on the log scale) and P(metric under the higher regimen > metric under
the lower one) for two random subjects, each per posterior draw with its
credible interval and pooled over draws.
"""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayespk.errors import SpecError

__all__ = [
    "METRICS",
    "Target",
    "exposure_overlap",
    "exposure_summary",
    "interval_metrics",
    "overlap_coefficient",
    "prob_greater",
    "steady_state_profile",
    "strata",
    "target_attainment",
    "time_above",
]

INTERVAL_METRICS = ("Cmax", "Tmax", "Cmin", "Ctrough", "AUC", "T_above", "f_above")
SS_METRICS = ("Cmax_ss", "Cmin_ss", "Ctrough_ss", "AUC_ss", "T_above_ss", "f_above_ss")
METRICS = INTERVAL_METRICS + SS_METRICS
CONCENTRATION_METRICS = ("Cmax", "Cmin", "Ctrough", "Cmax_ss", "Cmin_ss", "Ctrough_ss")


def metric_name(name: str, where: str = "metric") -> str:
    """The canonical spelling of a metric name (case and underscores ignored: ``aucss`` -> ``AUC_ss``)."""
    key = str(name).replace("_", "").lower()
    for m in METRICS:
        if m.replace("_", "").lower() == key:
            return m
    raise SpecError(f"{where} {name!r}: unknown metric; metrics are {', '.join(METRICS)}")


# ---------------------------------------------------------------------- metrics on a grid
def time_above(times, conc, threshold: float) -> np.ndarray:
    """Time with ``conc >= threshold`` over the grid (last axis), crossings by linear interpolation."""
    t = np.asarray(times, float)
    c = np.asarray(conc, float)
    c1, c2 = c[..., :-1], c[..., 1:]
    a1, a2 = c1 >= threshold, c2 >= threshold
    frac = np.where(a1 & a2, 1.0, 0.0)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(a1 & ~a2, (c1 - threshold) / (c1 - c2), frac)
        frac = np.where(~a1 & a2, (c2 - threshold) / (c2 - c1), frac)
    return (np.clip(frac, 0.0, 1.0) * np.diff(t)).sum(axis=-1)


def interval_metrics(times, conc, start: float, end: float, threshold: float | None = None,
                     suffix: str = "") -> dict[str, np.ndarray]:
    """Exposure metrics of curves ``conc`` (..., time) over ``[start, end]``.

    ``times`` is an increasing grid; only its points inside the interval are
    used (it should contain ``start`` and ``end``). Returns a dict with the keys of
    ``INTERVAL_METRICS`` (plus ``suffix``); ``T_above``/``f_above`` are NaN
    without a ``threshold``.

    Examples
    --------
    >>> t = np.linspace(0, 10, 10001)
    >>> m = interval_metrics(t, 10 * np.exp(-0.1 * t), 0, 10, threshold=5)
    >>> round(float(m["AUC"]), 4), round(float(m["T_above"]), 4)
    (63.2121, 6.9315)
    """
    t = np.asarray(times, float)
    c = np.asarray(conc, float)
    tol = 1e-9 * max(1.0, abs(end))
    i0, i1 = np.searchsorted(t, start - tol, side="left"), np.searchsorted(t, end + tol, side="right")
    if i1 - i0 < 2:
        raise SpecError(f"interval [{start:g}, {end:g}] holds fewer than 2 grid points")
    tt, cc = t[i0:i1], c[..., i0:i1]  # the grid is sorted: the interval is one slice
    i = np.argmax(cc, axis=-1)
    out = {
        "Cmax": np.take_along_axis(cc, i[..., None], axis=-1)[..., 0],
        "Tmax": tt[i] - start,
        "Cmin": cc.min(axis=-1),
        "Ctrough": cc[..., -1],
        "AUC": np.trapezoid(cc, tt, axis=-1),
    }
    if threshold is None:
        out["T_above"] = np.full(cc.shape[:-1], np.nan)
        out["f_above"] = np.full(cc.shape[:-1], np.nan)
    else:
        out["T_above"] = time_above(tt, cc, threshold)
        out["f_above"] = out["T_above"] / (tt[-1] - tt[0])
    if suffix:
        out = {f"{k}{suffix}": v for k, v in out.items() if f"{k}{suffix}" in METRICS}
    return out


def steady_state_profile(single, m: int, n_intervals: int) -> tuple[np.ndarray, np.ndarray]:
    """One dosing interval at steady state, folded from the curve of a single dose.

    ``single`` (..., (n_intervals + 1) * m + 1) is the concentration after one
    dose given at time 0, on the grid ``i * tau / m``. By superposition (linear
    kinetics), the steady-state concentration a time ``s`` in ``[0, tau]``
    after a dose is ``sum_k C1(s + k tau)`` over all earlier doses ``k >= 0``.
    The terms ``k = 0 .. n_intervals`` are read from the grid; the rest are a
    geometric series with the ratio ``r = C1(s + K tau) / C1(s + (K - 1) tau)``
    of the last two terms (``K = n_intervals``): ``C1(s + K tau) r / (1 - r)``.
    This is exact when the single-dose curve declines mono-exponentially after
    ``K`` intervals (any one-compartment model once absorption is over), and a
    good approximation for multi-compartment models in their terminal phase.

    Returns
    -------
    conc_ss : array (..., m + 1)
        Steady-state curve on ``j * tau / m``, ``j = 0 .. m`` (``j = m`` is the trough).
    ok : bool array (...)
        False where the curve was still rising after ``K`` intervals (no
        geometric tail; ``conc_ss`` is NaN there).
    """
    c = np.asarray(single, float)
    K = int(n_intervals)
    if c.shape[-1] != (K + 1) * m + 1:
        raise ValueError(f"single-dose curve has {c.shape[-1]} points; expected {(K + 1) * m + 1}")
    def window(k):
        return c[..., k * m:k * m + m + 1]

    out = np.zeros(c.shape[:-1] + (m + 1,))
    for k in range(K + 1):
        out += window(k)
    last, prev = window(K), window(K - 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(prev > 0, last / prev, 0.0)
        tail = np.where(last > 0, last * r / (1.0 - r), 0.0)
    bad = (last > 0) & ~((r >= 0) & (r < 1))
    out += np.where(bad, 0.0, tail)
    ok = ~bad.any(axis=-1)
    out = np.where(ok[..., None], out, np.nan)
    return out, ok


# ---------------------------------------------------------------------- targets
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_NAME = r"[A-Za-z][A-Za-z_]*"


@dataclass(frozen=True)
class Target:
    """A condition on one exposure metric: ``lower <= metric <= upper`` (either bound optional).

    Build one with :meth:`parse`: ``"Cmin>=10"``, ``"Cmax<50"``,
    ``"AUC in [300, 600]"`` or ``"300<=AUC<=600"``.
    """

    metric: str
    lower: float | None = None
    upper: float | None = None
    lower_strict: bool = False
    upper_strict: bool = False

    def __post_init__(self):
        object.__setattr__(self, "metric", metric_name(self.metric, "target metric"))
        if self.lower is None and self.upper is None:
            raise SpecError(f"target on {self.metric}: give a lower or an upper bound")
        if self.lower is not None and self.upper is not None and self.lower > self.upper:
            raise SpecError(f"target on {self.metric}: lower bound {self.lower:g} is above upper {self.upper:g}")

    @classmethod
    def parse(cls, text: str | Target) -> Target:
        """A target from text: ``METRIC>=X``, ``METRIC<X``, ``A<=METRIC<=B`` or ``METRIC in [A, B]``."""
        if isinstance(text, Target):
            return text
        s = str(text).strip()
        m = re.fullmatch(rf"({_NAME})\s+in\s+\[\s*({_NUM})\s*,\s*({_NUM})\s*\]", s)
        if m:
            return cls(m[1], float(m[2]), float(m[3]))
        m = re.fullmatch(rf"({_NUM})\s*(<=|<)\s*({_NAME})\s*(<=|<)\s*({_NUM})", s)
        if m:
            return cls(m[3], float(m[1]), float(m[5]), m[2] == "<", m[4] == "<")
        m = re.fullmatch(rf"({_NAME})\s*(>=|>|<=|<)\s*({_NUM})", s)
        if m:
            v = float(m[3])
            if m[2].startswith(">"):
                return cls(m[1], lower=v, lower_strict=m[2] == ">")
            return cls(m[1], upper=v, upper_strict=m[2] == "<")
        raise SpecError(f"target {s!r}: expected METRIC>=X, METRIC<X, A<=METRIC<=B or 'METRIC in [A, B]', "
                        f"e.g. 'Cmin>=10' (metrics: {', '.join(METRICS)})")

    @property
    def label(self) -> str:
        if self.lower is not None and self.upper is not None:
            lo = "<" if self.lower_strict else "<="
            hi = "<" if self.upper_strict else "<="
            return f"{self.lower:g}{lo}{self.metric}{hi}{self.upper:g}"
        if self.lower is not None:
            return f"{self.metric}{'>' if self.lower_strict else '>='}{self.lower:g}"
        return f"{self.metric}{'<' if self.upper_strict else '<='}{self.upper:g}"

    def met(self, values) -> np.ndarray:
        """1.0 where ``values`` meet the target, 0.0 where not, NaN where the value is NaN."""
        v = np.asarray(values, float)
        ok = np.ones(v.shape, bool)
        if self.lower is not None:
            ok &= (v > self.lower) if self.lower_strict else (v >= self.lower)
        if self.upper is not None:
            ok &= (v < self.upper) if self.upper_strict else (v <= self.upper)
        return np.where(np.isnan(v), np.nan, ok.astype(float))

    def __str__(self) -> str:
        return self.label


# ---------------------------------------------------------------------- strata
def strata(values: pd.Series, bins=4, max_levels: int = 6) -> pd.Series:
    """Stratum label of each subject for one covariate column.

    Text columns, and numeric columns with at most ``max_levels`` distinct
    values, are stratified by level. Other numeric columns are binned: ``bins``
    an int gives that many equal-count (quantile) bins, a sequence gives the
    edges. Labels are ``"[a, b)"`` (the last bin closed, ``"[a, b]"``).
    """
    name = values.name
    if values.isna().any():
        raise SpecError(f"stratify by {name}: the column has missing values")
    numeric = pd.api.types.is_numeric_dtype(values)
    if not numeric or values.nunique() <= max_levels and not _is_edges(bins):
        return values.map(_level).astype(str)
    x = values.to_numpy(float)
    if _is_edges(bins):
        edges = np.asarray(bins, float)
        if len(edges) < 2 or np.any(np.diff(edges) <= 0):
            raise SpecError(f"stratify by {name}: bin edges must be increasing, got {list(bins)}")
        outside = (x < edges[0]) | (x > edges[-1])
        if outside.any():
            raise SpecError(f"stratify by {name}: value {x[outside][0]:g} lies outside the bin edges "
                            f"[{edges[0]:g}, {edges[-1]:g}]")
    else:
        if isinstance(bins, bool) or not isinstance(bins, (int, np.integer)) or bins < 1:
            raise SpecError(f"stratify by {name}: bins must be a whole number >= 1 or a list of edges, got {bins!r}")
        edges = np.unique(np.quantile(x, np.linspace(0, 1, int(bins) + 1)))
        if len(edges) < 2:
            edges = np.array([x.min(), x.max() + 1e-12])
    k = np.clip(np.searchsorted(edges, x, side="right") - 1, 0, len(edges) - 2)
    labels = [f"[{edges[i]:.3g}, {edges[i + 1]:.3g}{']' if i == len(edges) - 2 else ')'}"
              for i in range(len(edges) - 1)]
    return pd.Series(pd.Categorical.from_codes(k, labels), index=values.index, name=name).astype(str)


def _is_edges(bins) -> bool:
    return isinstance(bins, (list, tuple, np.ndarray))


def _level(v) -> str:
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def _groups(sim, by, bins):
    """[(by, stratum, subject mask)], the whole population first."""
    out = [("", "all", np.ones(sim.n_subjects, bool))]
    if by is None:
        return out
    cols = {c.upper(): c for c in sim.subjects.columns}
    if str(by).upper() not in cols:
        raise SpecError(f"stratify by {by}: no such subject column; columns are "
                        f"{', '.join(c for c in sim.subjects.columns if c != 'source_id') or 'none'}")
    col = cols[str(by).upper()]
    labels = strata(sim.subjects[col], bins)
    order = list(dict.fromkeys(sorted(labels.unique(), key=_sort_key)))
    return out + [(col, s, (labels == s).to_numpy()) for s in order]


def _sort_key(label: str):
    m = re.match(rf"\[({_NUM})", label)
    if m:
        return (0, float(m[1]), "")
    try:
        return (0, float(label), "")
    except ValueError:
        return (1, 0.0, label)


def _quantiles(x, ci):
    lo = (1 - ci) / 2
    return np.nanquantile(x, [0.5, lo, 1 - lo]) if np.isfinite(x).any() else np.full(3, np.nan)


def _check_ci(ci: float) -> None:
    if not 0 < ci < 1:
        raise SpecError(f"ci must be between 0 and 1, got {ci}")


# ---------------------------------------------------------------------- tables
def exposure_summary(sim, metrics=None, *, by: str | None = None, bins=4, ci: float = 0.9) -> pd.DataFrame:
    """Exposure metrics per regimen (and stratum of ``by``): a tidy table.

    Columns: ``regimen, by, stratum, metric, n_subjects, median, pi_lower,
    pi_upper`` (median and central ``ci`` prediction interval over subjects
    and posterior draws pooled), ``mean``, ``median_ci_lower,
    median_ci_upper`` (credible interval over draws of the median subject's
    exposure), ``grid_step`` (time step of the grid the metric was computed
    on). The first rows of each regimen are the whole population
    (``by=""``, ``stratum="all"``).
    """
    _check_ci(ci)
    names = [metric_name(m) for m in (metrics or sim.metric_names)]
    lo = (1 - ci) / 2
    rows = []
    for r in sim.labels:
        for col, stratum, mask in _groups(sim, by, bins):
            for m in names:
                v = sim.values(r, m)[mask]  # (subjects, draws)
                if not np.isfinite(v).any():
                    continue
                med, pil, piu = np.nanquantile(v, [0.5, lo, 1 - lo])
                per_draw = np.nanmedian(v, axis=0)
                _, cil, ciu = _quantiles(per_draw, ci)
                rows.append({"regimen": r, "by": col, "stratum": stratum, "metric": m,
                             "n_subjects": int(mask.sum()), "median": med, "pi_lower": pil, "pi_upper": piu,
                             "mean": float(np.nanmean(v)), "median_ci_lower": cil, "median_ci_upper": ciu,
                             "grid_step": sim.grid_step(r, m)})
    return pd.DataFrame(rows, columns=["regimen", "by", "stratum", "metric", "n_subjects", "median", "pi_lower",
                                       "pi_upper", "mean", "median_ci_lower", "median_ci_upper", "grid_step"])


def target_attainment(sim, targets, *, by: str | None = None, bins=4, ci: float = 0.9) -> pd.DataFrame:
    """Probability of meeting each target, per regimen and stratum, with credible intervals.

    For each posterior draw, the fraction of subjects (of the stratum) whose
    metric meets the target; ``median``, ``lower``, ``upper`` summarise that
    fraction over draws (central ``ci`` interval), ``probability`` is the
    fraction over all subjects and draws (the predictive probability that a
    new subject attains the target). Subjects whose metric is NaN are left out.

    Returns
    -------
    DataFrame
        ``regimen, target, metric, by, stratum, n_subjects, probability, median, lower, upper``.
    """
    _check_ci(ci)
    targets = [Target.parse(t) for t in ([targets] if isinstance(targets, (str, Target)) else targets)]
    if not targets:
        raise SpecError("target_attainment needs at least one target, e.g. 'Cmin>=10'")
    for t in targets:
        sim.check_metric(t.metric)
    rows = []
    for r in sim.labels:
        for t in targets:
            hit = t.met(sim.values(r, t.metric))  # (subjects, draws)
            for col, stratum, mask in _groups(sim, by, bins):
                h = hit[mask]
                with np.errstate(invalid="ignore"):
                    per_draw = np.nanmean(h, axis=0) if h.size else np.array([np.nan])
                med, lo, hi = _quantiles(per_draw, ci)
                rows.append({"regimen": r, "target": t.label, "metric": t.metric, "by": col, "stratum": stratum,
                             "n_subjects": int(mask.sum()),
                             "probability": float(np.nanmean(h)) if np.isfinite(h).any() else np.nan,
                             "median": med, "lower": lo, "upper": hi})
    return pd.DataFrame(rows, columns=["regimen", "target", "metric", "by", "stratum", "n_subjects",
                                       "probability", "median", "lower", "upper"])


# ---------------------------------------------------------------------- overlap
def _bandwidth(x: np.ndarray) -> float:
    """Silverman's rule of thumb."""
    n = len(x)
    sd = x.std(ddof=1) if n > 1 else 0.0
    iqr = np.subtract(*np.quantile(x, [0.75, 0.25])) / 1.34
    s = min(sd, iqr) if iqr > 0 else sd
    return 0.9 * s * n ** (-0.2)


def _density(x: np.ndarray, lo: float, dx: float, size: int, h: float) -> np.ndarray:
    """Gaussian kernel density of ``x`` on the grid ``lo + i dx`` (linear binning, then smoothing)."""
    from scipy.ndimage import gaussian_filter1d

    pos = (x - lo) / dx
    i = np.clip(np.floor(pos).astype(int), 0, size - 2)
    w = np.clip(pos - i, 0.0, 1.0)
    counts = np.bincount(i, 1 - w, size) + np.bincount(i + 1, w, size)
    f = gaussian_filter1d(counts, sigma=max(h / dx, 1e-9), mode="constant", truncate=5.0) if h > 0 else counts
    return f / (f.sum() * dx)


def _ovl_1d(a: np.ndarray, b: np.ndarray, size: int) -> float:
    a, b = a[np.isfinite(a)], b[np.isfinite(b)]
    if len(a) == 0 or len(b) == 0:
        return np.nan
    ha, hb = _bandwidth(a), _bandwidth(b)
    lo = min(a.min(), b.min()) - 5 * max(ha, hb)
    hi = max(a.max(), b.max()) + 5 * max(ha, hb)
    if hi - lo <= 0:
        lo, hi = lo - 1.0, hi + 1.0
    dx = (hi - lo) / (size - 1)
    fa, fb = _density(a, lo, dx, size, ha), _density(b, lo, dx, size, hb)
    return float(np.minimum(fa, fb).sum() * dx)


def overlap_coefficient(a, b, *, log: bool = True, grid_size: int = 1024) -> np.ndarray:
    """Overlap coefficient OVL = integral of min(f_a, f_b) of two samples (Gaussian KDE, Silverman bandwidth).

    ``a`` and ``b`` are (n,) samples, or (draws, n) arrays giving one OVL per
    draw (row). ``log=True`` compares the distributions of log values (values
    <= 0 are then left out). 1: identical distributions, 0: disjoint.
    """
    a, b = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))
    if a.shape[0] != b.shape[0]:
        raise ValueError("a and b need the same number of draws (rows)")
    if log:
        with np.errstate(divide="ignore", invalid="ignore"):
            a, b = np.where(a > 0, np.log(a), np.nan), np.where(b > 0, np.log(b), np.nan)
    return np.array([_ovl_1d(a[d], b[d], grid_size) for d in range(a.shape[0])])


def prob_greater(a, b) -> np.ndarray:
    """P(A > B) + P(A = B) / 2 for independent random draws A from ``a``, B from ``b``, per row.

    ``a`` (draws, n_a) and ``b`` (draws, n_b), or 1-d samples; NaN values are
    left out. The Mann-Whitney statistic U / (n_a n_b): 0.5 for identical
    distributions, 1 when every value of ``a`` exceeds every value of ``b``.
    """
    a, b = np.atleast_2d(np.asarray(a, float)), np.atleast_2d(np.asarray(b, float))
    out = np.full(a.shape[0], np.nan)
    for d in range(a.shape[0]):
        x, y = a[d][np.isfinite(a[d])], b[d][np.isfinite(b[d])]
        if len(x) == 0 or len(y) == 0:
            continue
        ys = np.sort(y)
        less = np.searchsorted(ys, x, side="left")
        leq = np.searchsorted(ys, x, side="right")
        out[d] = (less.sum() + 0.5 * (leq - less).sum()) / (len(x) * len(y))
    return out


def exposure_overlap(sim, metrics=("AUC", "Cmax", "Cmin"), *, order=None, ci: float = 0.9) -> pd.DataFrame:
    """How much the exposure distributions of neighbouring regimens overlap.

    Regimens are put in order of maintenance dose rate (dose / II, then dose),
    or in the given ``order`` of labels, and each neighbouring pair (low,
    high) is compared for each metric, per posterior draw over the simulated
    subjects: the overlap coefficient (``ovl``: 1 identical, 0 disjoint; on the
    log scale when all values are > 0, else on the natural scale, see
    ``scale``) and ``p_high_gt_low`` = P(metric under ``high`` > metric under
    ``low``) for two random subjects (0.5: no separation, 1: complete).

    Returns
    -------
    DataFrame
        ``low, high, metric, scale, ovl`` (the distributions pooled over
        draws), ``ovl_median, ovl_lower, ovl_upper`` (over draws),
        ``p_high_gt_low`` (pooled), ``p_median, p_lower, p_upper``.
    """
    _check_ci(ci)
    labels = sim.ordered_labels(order)
    names = [metric_name(m) for m in ([metrics] if isinstance(metrics, str) else metrics)]
    for m in names:
        sim.check_metric(m)
    rows = []
    for low, high in itertools.pairwise(labels):
        for m in names:
            a, b = sim.values(high, m).T, sim.values(low, m).T  # (draws, subjects)
            if not (np.isfinite(a).any() and np.isfinite(b).any()):
                continue
            fin = np.r_[a[np.isfinite(a)], b[np.isfinite(b)]]
            log = bool((fin > 0).all())
            ovl = overlap_coefficient(a, b, log=log)
            p = prob_greater(a, b)
            omed, olo, ohi = _quantiles(ovl, ci)
            pmed, plo, phi = _quantiles(p, ci)
            rows.append({"low": low, "high": high, "metric": m, "scale": "log" if log else "linear",
                         "ovl": float(overlap_coefficient(a.ravel(), b.ravel(), log=log)[0]),
                         "ovl_median": omed, "ovl_lower": olo, "ovl_upper": ohi,
                         "p_high_gt_low": float(np.nanmean(p)), "p_median": pmed, "p_lower": plo, "p_upper": phi})
    return pd.DataFrame(rows, columns=["low", "high", "metric", "scale", "ovl", "ovl_median", "ovl_lower",
                                       "ovl_upper", "p_high_gt_low", "p_median", "p_lower", "p_upper"])

