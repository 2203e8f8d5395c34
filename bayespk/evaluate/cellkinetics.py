"""CAR-T cellular-kinetic (CK) metrics per patient: from the posterior, and from NCA of the data.

:func:`ck_metrics` evaluates each patient's fitted kinetics for every
(thinned) posterior draw and summarizes, with credible intervals:

``Cmax``, ``Tmax``
    Peak level and its time (the peak is at the end of expansion,
    ``TLAG + TMAX``; treatment multipliers change its height, not its time).
``AUC0_28``
    Area under the level from the infusion to day ``auc_end`` (28), by
    log-trapezoids on a grid holding every break point (exact on the
    exponential expansion segments; the contraction is resolved at 0.05 d).
``t_double``
    Doubling time during expansion without treatment, ``ln 2 / rho``.
``t_half_alpha``, ``t_half_beta``
    Half-lives of the contraction (effector) and persistence (memory) phases.
``Tlast``
    Persistence: the day (since the infusion) on which the predicted level,
    after its peak, falls below ``lloq`` (default: the median LLOQ of the
    reference assay); ``peak + horizon`` when it stays above it that long.

:func:`ck_nca` computes Cmax, Tmax, AUC0-28 (linear-up/log-down, BLQ before
Tmax as 0, after it dropped), Tlast (last quantified sample) and the terminal
half-life of the observed reference-assay levels with :func:`bayespk.nca.nca`;
:func:`compare_ck` sets both side by side.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from bayespk.errors import BayesPKError
from bayespk.structural.cart import CellKinetics

__all__ = ["ck_metrics", "ck_metric_draws", "ck_nca", "compare_ck", "virtual_exposures", "CK_METRICS"]

CK_METRICS = ("Cmax", "Tmax", "AUC0_28", "t_double", "t_half_alpha", "t_half_beta", "Tlast")


def _check(fit) -> CellKinetics:
    structure = fit.model.structure
    if not isinstance(structure, CellKinetics):
        raise BayesPKError(f"CK metrics need a closed-form CAR-T structure (cart_piecewise, cart_lag), not "
                           f"{structure.name}")
    return structure


def _reference_rows(fit) -> pd.Series:
    """Observation records of the reference assay (all observations without ``[error] by``)."""
    t = fit.model.data.table
    obs = (t.EVID == 0) & (t.MDV == 0)
    err = fit.spec.error
    if err.by is None:
        return obs
    info = fit.model._assays["DV"]
    return obs & (pd.Series(info["records"], index=t.index) == 0)


def ck_metrics(fit, *, draws: int | None = 200, auc_end: float = 28.0, lloq: float | None = None,
               horizon: float = 1825.0, interval: float = 0.9, seed: int = 0) -> pd.DataFrame:
    """Per-patient CK metrics from the posterior: median and ``interval`` credible bounds.

    Returns one row per patient with columns ``<metric>_median``,
    ``<metric>_lower``, ``<metric>_upper`` for each of :data:`CK_METRICS`.
    Levels are in the reference assay's units.
    """
    draws_ = ck_metric_draws(fit, draws=draws, auc_end=auc_end, lloq=lloq, horizon=horizon, seed=seed)
    lo, hi = (1 - interval) / 2, 1 - (1 - interval) / 2
    rows = {"ID": draws_.ID.values}
    for m in CK_METRICS:
        q = np.nanquantile(draws_[m].values, [0.5, lo, hi], axis=0)
        rows |= {f"{m}_median": q[0], f"{m}_lower": q[1], f"{m}_upper": q[2]}
    return pd.DataFrame(rows)


def ck_metric_draws(fit, *, draws: int | None = 200, auc_end: float = 28.0, lloq: float | None = None,
                    horizon: float = 1825.0, seed: int = 0) -> xr.Dataset:
    """Every metric of :data:`CK_METRICS` per posterior draw and patient: dims (draw, ID).

    The exposure input of exposure-response fits, e.g.
    ``fit_response(outcomes, ck_metric_draws(fit)["AUC0_28"], kind="binary", ...)``.
    """
    structure = _check(fit)
    ind = fit.individual_parameters(draws=draws, seed=seed)
    stacked = ind.stack(sample=("chain", "draw")).transpose("sample", "ID")
    p = {k: stacked[k].values for k in fit.spec.parameters}  # (S, N)
    post = fit._thinned(draws).stack(sample=("chain", "draw"))
    mult = [np.full(p["CMAX"].shape, tr.multiplier) if tr.fixed
            else np.broadcast_to(post[tr.name].values[:, None], p["CMAX"].shape) for tr in fit.spec.treatments]
    if lloq is None:
        limits = fit.model.data.table.LLOQ[_reference_rows(fit)].dropna()
        lloq = float(limits.median()) if len(limits) else np.nan
    out = _metrics(structure, p, fit.model.predictor.onsets, mult, auc_end=auc_end, lloq=lloq, horizon=horizon)
    coords = {"draw": np.arange(p["CMAX"].shape[0]), "ID": ind.ID.values}
    return xr.Dataset({m: (("draw", "ID"), v) for m, v in out.items()}, coords=coords)


def _metrics(structure: CellKinetics, p: dict, onsets: np.ndarray, mult: list, *, auc_end: float, lloq: float,
             horizon: float, which=CK_METRICS) -> dict:
    """Metric arrays (samples x patients) from individual parameters ``p`` (samples x patients),
    treatment onsets (patients x treatments) and multipliers (samples x patients each)."""
    lag = p.get("TLAG", np.zeros_like(p["CMAX"]))
    duration = p["TEXP"] if "TEXP" in p else p["TMAX"]
    peak = lag + duration
    n_s, n_id = p["CMAX"].shape
    base = np.linspace(0.0, auc_end, int(round(auc_end / 0.05)) + 1)
    out = {m: np.full((n_s, n_id), np.nan) for m in which}
    long_t = np.geomspace(1e-3, horizon, 600)
    for j in range(n_id):
        on = [np.full(n_s, o) for o in onsets[j]]
        pj = {k: v[:, j] for k, v in p.items()}
        mj = [m[:, j] for m in mult]
        if "AUC0_28" in which:
            breaks = np.concatenate([peak[:, j], lag[:, j], *on])
            grid = np.unique(np.concatenate([base, breaks[(breaks > 0) & (breaks < auc_end)]]))
            c = structure.level(grid[None, :], {k: v[:, None] for k, v in pj.items()}, [o[:, None] for o in on],
                                [m[:, None] for m in mj])
            out["AUC0_28"][:, j] = _log_trapezoid(grid, c)
        cpk = structure.level(peak[:, j], pj, on, mj)
        c0 = structure.level(np.zeros(n_s), pj, on, mj)
        if "Cmax" in which:
            out["Cmax"][:, j] = np.maximum(cpk, c0)
        if "Tmax" in which:
            out["Tmax"][:, j] = np.where(cpk >= c0, peak[:, j], 0.0)
        if "t_double" in which:
            out["t_double"][:, j] = np.log(2.0) * duration[:, j] / np.log(pj["FX"])
        if "t_half_alpha" in which:
            out["t_half_alpha"][:, j] = np.log(2.0) / pj["ALPHA"]
        if "t_half_beta" in which:
            out["t_half_beta"][:, j] = np.log(2.0) / pj["BETA"]
        if "Tlast" in which and np.isfinite(lloq):
            tt = peak[:, j][:, None] + long_t[None, :]
            cl = structure.level(tt, {k: v[:, None] for k, v in pj.items()}, [o[:, None] for o in on],
                                 [m[:, None] for m in mj])
            below = cl < lloq
            first = np.argmax(below, axis=1)
            out["Tlast"][:, j] = np.where(below.any(axis=1), tt[np.arange(n_s), first], tt[:, -1])
    return out


def virtual_exposures(fit, covariates=None, *, n: int = 200, metric: str = "AUC0_28", draws: int | None = 200,
                      auc_end: float = 28.0, seed: int = 0) -> np.ndarray:
    """Exposure of ``n`` new (virtual) patients per posterior draw, without treatments.

    Baseline covariates are resampled from the fitted patients; ``covariates``
    (a dict of column -> value) overrides some, e.g. ``{"TB": 50}``. Each
    posterior draw gives typical values, covariate coefficients and omegas;
    every virtual patient gets new etas (correlated through the fit's LKJ
    factor where the spec says so). ``metric``: ``"AUC0_28"`` or ``"Cmax"``.
    Returns an array (draws x n), the input of exposure-response tables.
    """
    structure = _check(fit)
    if metric not in ("AUC0_28", "Cmax"):
        raise BayesPKError(f"metric={metric!r}: expected 'AUC0_28' or 'Cmax'")
    rng = np.random.default_rng(seed)
    spec, model = fit.spec, fit.model
    post = fit._thinned(draws).stack(sample=("chain", "draw"))
    n_s = post.sizes["sample"]
    rows = rng.integers(0, model.design.n_subjects, n)
    values = {}
    for c in spec.covariates:
        if c.effect == "categorical":
            raise BayesPKError(f"virtual_exposures: categorical covariate {c.column} is not supported yet")
        base = model._covariates[c.name]["values"][rows]
        if covariates is not None and c.column in covariates:
            base = np.full(n, float(covariates[c.column]))
        values[c.name] = base
    unknown = set(covariates or {}) - {c.column for c in spec.covariates}
    if unknown:
        raise BayesPKError(f"covariates: {', '.join(sorted(unknown))} not in the model's covariates "
                           f"({', '.join(c.column for c in spec.covariates) or 'none'})")
    z = {name: rng.standard_normal((n_s, n)) for name, ps in spec.parameters.items() if ps.iiv is not None}
    if spec.correlated:
        chol = post["chol_corr_iiv"].transpose("sample", ...).values  # (S, k, k)
        stacked = np.einsum("sij,snj->sni", chol, np.stack([z[k] for k in spec.correlated], axis=-1))
        z |= {k: stacked[..., i] for i, k in enumerate(spec.correlated)}
    p = {}
    for name in spec.parameters:
        typical = post[name].values[:, None]
        link = np.log(typical) - np.log1p(-typical) if name in structure.unit_parameters else np.log(typical)
        for c in spec.covariates:
            if c.parameter == name:
                theta = c.coefficient if c.fixed else post[c.name].values[:, None]
                link = link + c.log_factor(values[c.name][None, :], theta)
        if name in z:
            link = link + post[f"omega_{name}"].values[:, None] * z[name]
        p[name] = 1.0 / (1.0 + np.exp(-link)) if name in structure.unit_parameters else np.exp(link)
    p = {k: np.broadcast_to(v, (n_s, n)) for k, v in p.items()}
    out = _metrics(structure, p, np.zeros((n, 0)), [], auc_end=auc_end, lloq=np.nan, horizon=auc_end,
                   which=(metric,))
    return out[metric]


def _log_trapezoid(t: np.ndarray, c: np.ndarray) -> np.ndarray:
    """Area under ``c`` (samples x times) by log-trapezoids (linear where a value is 0 or equal)."""
    dt = np.diff(t)
    a, b = c[:, :-1], c[:, 1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        log_seg = (b - a) / (np.log(b) - np.log(a)) * dt
    linear = (a + b) / 2 * dt
    use_log = (a > 0) & (b > 0) & (np.abs(b - a) > 1e-12 * np.maximum(a, b))
    return np.where(use_log, log_seg, linear).sum(axis=1)


def ck_nca(fit, *, auc_end: float = 28.0) -> pd.DataFrame:
    """NCA of each patient's observed reference-assay levels (see the module notes).

    Columns: ``ID, Cmax, Tmax, AUC0_28, Tlast, t_half, n_obs``; AUC0_28 is
    NaN when the patient has no sample at or after day ``auc_end``.
    """
    from bayespk.nca import nca

    _check(fit)
    t = fit.model.data.table
    keep = _reference_rows(fit) | t.EVID.isin([1, 4])
    data = t[keep].drop(columns="ROW")
    full = nca(data, route="extravascular").set_index("ID")
    early = data[(data.TIME <= auc_end) | (data.EVID != 0)]
    first28 = nca(early, route="extravascular", lambda_z=None).set_index("ID")
    reaches = data[data.EVID == 0].groupby("ID").TIME.max() >= auc_end
    auc28 = first28.AUC0_t.where(reaches.reindex(first28.index, fill_value=False))
    return pd.DataFrame({
        "ID": full.index, "Cmax": full.Cmax.to_numpy(), "Tmax": full.Tmax.to_numpy(),
        "AUC0_28": auc28.reindex(full.index).to_numpy(), "Tlast": full.Tlast.to_numpy(),
        "t_half": full.t_half.to_numpy(), "n_obs": full.n_obs.to_numpy(),
    })  # fmt: skip


def compare_ck(fit, **kwargs) -> pd.DataFrame:
    """Model-based metrics (median and interval) beside the NCA ones, one row per patient.

    NCA columns are prefixed ``nca_``; keyword arguments go to :func:`ck_metrics`.
    """
    model = ck_metrics(fit, **kwargs)
    observed = ck_nca(fit, auc_end=kwargs.get("auc_end", 28.0)).add_prefix("nca_").rename(columns={"nca_ID": "ID"})
    return model.merge(observed, on="ID", how="left")
