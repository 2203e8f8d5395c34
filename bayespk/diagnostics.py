"""Parameter table and convergence diagnostics, read from a fit's DataTree.

Thresholds follow Vehtari et al. (2021, Bayesian Analysis 16:667): R-hat
above 1.01 or bulk/tail ESS below 100 per chain (400 for 4 chains) means the
draws cannot be trusted yet; any divergent transition signals a geometry the
sampler did not explore; E-BFMI below 0.3 flags poor energy exploration.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import xarray as xr

from bayespk.errors import ConvergenceWarning

__all__ = ["summary_table", "format_parameter_table", "convergence", "check_convergence", "shrinkage",
           "SUMMARY_COLUMNS", "REPORTED_COLUMNS", "RHAT_MAX", "ESS_PER_CHAIN"]

SUMMARY_COLUMNS = ["parameter", "mean", "sd", "q5", "median", "q95", "r_hat", "ess_bulk", "ess_tail"]
#: Appended to SUMMARY_COLUMNS: the unit, the relative uncertainty and the scale a pharmacometrician reads
REPORTED_COLUMNS = ["unit", "rse_percent", "reported_as", "reported_median", "reported_q5", "reported_q95",
                    "shrinkage_percent"]
RHAT_MAX = 1.01
ESS_PER_CHAIN = 100
BFMI_MIN = 0.3


def _scalar_names(posterior: xr.Dataset, names: list[str]) -> list[str]:
    return [n for n in names if n in posterior.data_vars]


def summary_table(posterior: xr.Dataset, names: list[str], spec=None, shrinkage: pd.DataFrame | None = None
                  ) -> pd.DataFrame:
    """One row per population parameter (vector parameters get ``name[level]`` rows).

    Columns: ``parameter, mean, sd, q5, median, q95, r_hat, ess_bulk, ess_tail``
    (:data:`SUMMARY_COLUMNS`), then :data:`REPORTED_COLUMNS`: ``unit`` (derived
    from the ``spec``'s ``[data] units``, :mod:`bayespk.units`; empty without),
    ``rse_percent`` (100 posterior SD / abs(median)), ``reported_as`` (``value``,
    ``%CV`` for the omegas of log-normal IIV, ``factor`` for categorical effects,
    ``%`` for ``sigma_prop``; all ``value`` without a spec), ``reported_median``,
    ``reported_q5``, ``reported_q95`` (quantiles of the transformed draws) and
    ``shrinkage_percent`` on the omega rows (from ``shrinkage``, the table of
    :func:`shrinkage`).
    """
    from bayespk.units import parameter_units, reported_scale, to_reported

    units = parameter_units(spec) if spec is not None else {}
    shrunk = {} if shrinkage is None or shrinkage.empty else dict(zip(
        "omega_" + shrinkage["parameter"], 100.0 * shrinkage["shrinkage"]))
    rows = []
    ds = posterior[_scalar_names(posterior, names)]
    import arviz as az

    diags = {"r_hat": az.rhat(ds), "ess_bulk": az.ess(ds, method="bulk"), "ess_tail": az.ess(ds, method="tail")}
    for name in ds.data_vars:
        extra = [d for d in ds[name].dims if d not in ("chain", "draw")]
        arrays = {"draws": ds[name], **{k: v[name] for k, v in diags.items()}}
        if extra:
            arrays = {k: v.stack(item=extra) for k, v in arrays.items()}
            labels = [f"{name}[{','.join(map(str, np.atleast_1d(v)))}]" for v in arrays["draws"]["item"].values]
            entries = [(lab, {k: v.isel(item=i) for k, v in arrays.items()}) for i, lab in enumerate(labels)]
        else:
            entries = [(name, arrays)]
        scale = reported_scale(spec, name)
        for label, a in entries:
            values = np.asarray(a["draws"]).ravel()
            q5, q50, q95 = np.quantile(values, [0.05, 0.5, 0.95])
            sd = float(np.std(values, ddof=1))
            r5, r50, r95 = np.quantile(to_reported(values, scale), [0.05, 0.5, 0.95])
            rows.append({
                "parameter": label, "mean": float(np.mean(values)), "sd": sd,
                "q5": q5, "median": q50, "q95": q95,
                **{k: float(a[k]) for k in diags},
                "unit": units.get(name, ""), "rse_percent": 100.0 * sd / abs(q50) if q50 != 0 else np.nan,
                "reported_as": scale, "reported_median": r50, "reported_q5": r5, "reported_q95": r95,
                "shrinkage_percent": shrunk.get(label, np.nan),
            })  # fmt: skip
    return pd.DataFrame(rows, columns=SUMMARY_COLUMNS + REPORTED_COLUMNS)


def format_parameter_table(table: pd.DataFrame) -> str:
    """The parameter table as a pharmacometrician reads it, as text.

    One line per parameter: unit (or the reported scale: ``%CV``, ``factor``,
    ``%``), estimate [90% CrI] on the reported scale, RSE %, shrinkage %, R-hat
    and bulk ESS. ``table`` is :func:`summary_table`'s, or a ``summary.csv``
    read back; one of an older run without the :data:`REPORTED_COLUMNS` is shown
    with its median [q5, q95] and an RSE computed from its sd.

    Examples
    --------
    >>> t = pd.DataFrame({"parameter": ["CL"], "mean": [5.1], "sd": [0.5], "q5": [4.3], "median": [5.0],
    ...                   "q95": [5.9], "r_hat": [1.001], "ess_bulk": [812.0], "ess_tail": [700.0]})
    >>> print(format_parameter_table(t))  # doctest: +NORMALIZE_WHITESPACE
    parameter unit estimate [90% CrI]  RSE% shrinkage% R-hat ESS bulk
    CL             5 [4.3, 5.9]        10.0          -     1.001   812
    """
    def col(name, default):
        return table[name] if name in table.columns else pd.Series(default, index=table.index)

    def num(v, fmt="{:.4g}"):
        return "-" if v is None or not np.isfinite(v) else fmt.format(v)

    scale = col("reported_as", "value").fillna("value").astype(str)
    unit = col("unit", "").fillna("").astype(str)
    rse = col("rse_percent", np.nan).astype(float)
    rse = rse.where(rse.notna(), 100.0 * table["sd"] / table["median"].abs().replace(0.0, np.nan))
    med, lo, hi = (col(f"reported_{q}", np.nan).astype(float).fillna(table[q]) for q in ("median", "q5", "q95"))
    header = ["parameter", "unit", "estimate [90% CrI]", "RSE%", "shrinkage%", "R-hat", "ESS bulk"]
    lines = [[str(p), u if s == "value" else s, f"{num(m)} [{num(a)}, {num(b)}]", num(r, "{:.1f}"),
              num(sh, "{:.1f}"), num(rh, "{:.3f}"), num(e, "{:.0f}")]
             for p, u, s, m, a, b, r, sh, rh, e in zip(table["parameter"], unit, scale, med, lo, hi, rse,
                                                       col("shrinkage_percent", np.nan).astype(float),
                                                       col("r_hat", np.nan).astype(float),
                                                       col("ess_bulk", np.nan).astype(float))]
    widths = [max(len(r[i]) for r in [header, *lines]) for i in range(len(header))]
    left = (0, 1, 2)  # text columns left-aligned, numbers right-aligned

    def fmt(row):
        return " ".join(v.ljust(w) if i in left else v.rjust(w) for i, (v, w) in enumerate(zip(row, widths)))

    return "\n".join(fmt(r).rstrip() for r in [header, *lines])


def convergence(tree: xr.DataTree, free_names: list[str]) -> dict:
    """Divergences, draws that hit the tree-depth limit, worst R-hat/ESS over all free variables (etas
    included), E-BFMI."""
    post = tree["posterior"].to_dataset()[_scalar_names(tree["posterior"].to_dataset(), free_names)]
    stats = tree["sample_stats"].to_dataset()
    n_chains = post.sizes["chain"]
    n_draws = post.sizes["draw"]
    import arviz as az

    rhat = az.rhat(post)
    ess_b = az.ess(post, method="bulk")
    ess_t = az.ess(post, method="tail")

    def worst(ds, fn):
        vals = {k: float(fn(ds[k].values)) for k in ds.data_vars}
        key = (max if fn is np.nanmax else min)(vals, key=vals.get)
        return vals[key], key

    max_rhat, rhat_at = worst(rhat, np.nanmax)
    min_bulk, bulk_at = worst(ess_b, np.nanmin)
    min_tail, tail_at = worst(ess_t, np.nanmin)
    div = int(stats["diverging"].sum()) if "diverging" in stats else 0
    hit = next((stats[k] for k in ("maxdepth_reached", "reached_max_treedepth") if k in stats), None)  # nutpie, PyMC
    energy = stats["energy"].values if "energy" in stats else None
    if energy is not None:
        var = np.var(energy, axis=1)
        with np.errstate(divide="ignore", invalid="ignore"):
            bfmi = np.where(var > 0, np.square(np.diff(energy, axis=1)).mean(axis=1) / var, 0.0)
        min_bfmi = float(np.min(bfmi))  # a chain that never moved has E-BFMI 0
    else:
        min_bfmi = float("nan")
    return {
        "chains": n_chains,
        "draws": n_draws,
        "divergences": div,
        "treedepth_hits": int(hit.sum()) if hit is not None else 0,  # draws whose trajectory max_treedepth cut
        "max_r_hat": max_rhat,
        "max_r_hat_parameter": rhat_at,
        "min_ess_bulk": min_bulk,
        "min_ess_bulk_parameter": bulk_at,
        "min_ess_tail": min_tail,
        "min_ess_tail_parameter": tail_at,
        "min_bfmi": min_bfmi,
    }


def check_convergence(diag: dict, warn: bool = True) -> list[str]:
    """Problems found in ``diag`` (from :func:`convergence`), warned as ConvergenceWarning."""
    problems = []
    ess_min = ESS_PER_CHAIN * diag["chains"]
    if diag["divergences"] > 0:
        problems.append(f"{diag['divergences']} divergent transitions; raise target_accept or reparameterize")
    if not diag["max_r_hat"] <= RHAT_MAX:
        problems.append(f"R-hat {diag['max_r_hat']:.3f} > {RHAT_MAX} (worst: {diag['max_r_hat_parameter']}); "
                        "run longer chains")
    if not diag["min_ess_bulk"] >= ess_min:
        problems.append(f"bulk ESS {diag['min_ess_bulk']:.0f} < {ess_min} (worst: "
                        f"{diag['min_ess_bulk_parameter']}); draw more samples")
    if not diag["min_ess_tail"] >= ess_min:
        problems.append(f"tail ESS {diag['min_ess_tail']:.0f} < {ess_min} (worst: "
                        f"{diag['min_ess_tail_parameter']}); draw more samples")
    if diag["min_bfmi"] < BFMI_MIN:
        problems.append(f"E-BFMI {diag['min_bfmi']:.2f} < {BFMI_MIN}; the posterior has hard-to-explore tails")
    if warn and problems:
        warnings.warn("convergence check failed:\n  " + "\n  ".join(problems), ConvergenceWarning, stacklevel=3)
    return problems


def shrinkage(fit) -> pd.DataFrame:
    """Eta shrinkage per parameter with IIV: ``1 - SD(E[eta_i]) / median(omega)`` (parameters whose omega
    was not sampled, such as the PK of a sequential PK/PD fit, fixed at an earlier fit, have none)."""
    rows = []
    post = fit.posterior
    for p, ps in fit.spec.parameters.items():
        if ps.iiv is None or f"omega_{p}" not in post or f"eta_{p}" not in post:
            continue
        eta_mean = post[f"eta_{p}"].mean(("chain", "draw")).values
        omega = float(post[f"omega_{p}"].median())
        rows.append({"parameter": p, "omega": omega, "sd_eta_mean": float(np.std(eta_mean, ddof=1)),
                     "shrinkage": 1 - float(np.std(eta_mean, ddof=1)) / omega})
    return pd.DataFrame(rows)
