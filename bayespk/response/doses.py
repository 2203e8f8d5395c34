"""The dose x tumor-burden table of outcome probabilities (e.g. P(response) and P(CRS >= 3)).

For each dose and tumor burden, the cellular-kinetics side supplies posterior
exposures of virtual patients, ``exposure_at(dose, tumor_burden)`` -> array
(n_draws, n_virtual). Each exposure draw is paired with one sample of each E-R
posterior (the same pairing in every cell, so curves over dose are smooth), the
outcome probability is averaged over the virtual patients within that draw,
and the mean and 90% interval are taken over draws. Both the CK and the E-R
uncertainty are therefore in the interval; the spread between virtual patients
is not (it is averaged: the table is about the population at that dose).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from bayespk.errors import DataError, SpecError
from bayespk.response.models import ResponseFit

__all__ = ["DOSE_TABLE_COLUMNS", "dose_table"]

DOSE_TABLE_COLUMNS = [
    "dose",
    "tumor_burden",
    "outcome",
    "mean",
    "q5",
    "median",
    "q95",
    "n_draws",
    "n_virtual",
]


def dose_table(
    outcomes: Mapping[str, ResponseFit | tuple[ResponseFit, float]],
    exposure_at: Callable[[float, float], np.ndarray],
    doses: Sequence[float],
    tumor_burdens: Sequence[float],
    *,
    covariates_at: Callable[[float, float], Mapping[str, float | np.ndarray]] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Posterior probability of each outcome at each dose and tumor burden.

    Parameters
    ----------
    outcomes : mapping
        Label -> fitted model: a binary :class:`ResponseFit` (P(response)), a
        tuple ``(ordinal_fit, k)`` (P(grade >= k)) or ``(tte_fit, t)``
        (survival S(t)); e.g. ``{"P(response)": resp, "P(CRS>=3)": (crs, 3)}``.
    exposure_at : callable
        ``exposure_at(dose, tumor_burden)`` -> exposures (> 0) of virtual
        patients, shape (n_draws, n_virtual) (posterior draws) or (n_virtual,)
        (one value each), in the units the E-R models were fitted in.
    doses, tumor_burdens : sequence of float
    covariates_at : callable, optional
        ``covariates_at(dose, tumor_burden)`` -> {covariate: scalar or array
        (n_virtual,)} for the models' covariates (e.g. ``{"LOGTB":
        np.log10(tumor_burden)}``). Required when a model has covariates: they
        are never silently set to their reference.
    seed : int
        Seed of the pairing of exposure draws with E-R samples.

    Returns
    -------
    DataFrame
        Columns ``dose, tumor_burden, outcome, mean, q5, median, q95,
        n_draws, n_virtual``, one row per dose x tumor burden x outcome.

    Examples
    --------
    >>> def exposure_at(dose, tb):                                   # doctest: +SKIP
    ...     rng = np.random.default_rng(0)
    ...     return dose * tb ** 0.3 * np.exp(rng.normal(0, 0.8, (200, 100)))
    >>> dose_table({"P(response)": resp, "P(CRS>=3)": (crs, 3)}, exposure_at,
    ...            doses=[50, 100, 200], tumor_burdens=[1, 10],
    ...            covariates_at=lambda d, tb: {"LOGTB": np.log10(tb)})  # doctest: +SKIP
    """
    if not isinstance(outcomes, Mapping) or not outcomes:
        raise SpecError("outcomes must be a non-empty mapping {label: fit or (fit, grade/time)}")
    if not callable(exposure_at):
        raise SpecError(
            "exposure_at must be a callable exposure_at(dose, tumor_burden) -> array (n_draws, n_virtual)"
        )
    models = {label: _resolve(label, spec) for label, spec in outcomes.items()}
    needs = sorted({c for fit, _ in models.values() for c in fit.covariates})
    if needs and covariates_at is None:
        raise SpecError(
            f"the models have covariates {needs}: give covariates_at(dose, tumor_burden) -> "
            "{covariate: value}, e.g. the log10 tumor burden"
        )
    doses, burdens = _values("doses", doses), _values("tumor_burdens", tumor_burdens)
    pairing: dict = {}
    rows = []
    for dose in doses:
        for tb in burdens:
            lx = _log_exposures(exposure_at(dose, tb), dose, tb)
            n_d, n_v = lx.shape
            covs = dict(covariates_at(dose, tb)) if covariates_at is not None else {}
            for label, (fit, what) in models.items():
                missing = [c for c in fit.covariates if c not in covs]
                if missing:
                    raise SpecError(
                        f"covariates_at({dose:g}, {tb:g}) gives no value for {missing} (needed by {label!r})"
                    )
                key = (label, n_d)
                if key not in pairing:
                    pairing[key] = fit._sample_index(n_d, np.random.default_rng([seed, len(pairing)]))
                p = fit.probability(lx, {c: covs[c] for c in fit.covariates}, samples=pairing[key], **what)
                per_draw = p.mean(axis=1)
                q5, q50, q95 = np.quantile(per_draw, [0.05, 0.5, 0.95])
                rows.append(
                    {
                        "dose": dose,
                        "tumor_burden": tb,
                        "outcome": label,
                        "mean": float(per_draw.mean()),
                        "q5": q5,
                        "median": q50,
                        "q95": q95,
                        "n_draws": n_d,
                        "n_virtual": n_v,
                    }
                )
    return pd.DataFrame(rows, columns=DOSE_TABLE_COLUMNS)


def _resolve(label: str, spec) -> tuple[ResponseFit, dict]:
    fit, arg = spec if isinstance(spec, tuple) else (spec, None)
    if not isinstance(fit, ResponseFit):
        raise SpecError(
            f"outcomes[{label!r}]: expected a ResponseFit or (ResponseFit, grade/time), got "
            f"{type(fit).__name__}"
        )
    if fit.kind == "binary":
        if arg is not None:
            raise SpecError(f"outcomes[{label!r}]: a binary model takes no grade/time")
        return fit, {}
    if fit.kind == "ordinal":
        if arg is None:
            raise SpecError(f"outcomes[{label!r}]: give (fit, k) for P(grade >= k), k in {fit.thresholds}")
        fit._threshold_index(arg)  # refuses a k that cannot be estimated
        return fit, {"grade": int(arg)}
    if arg is None:
        raise SpecError(f"outcomes[{label!r}]: give (fit, t) for the survival probability at time t")
    return fit, {"time": float(arg)}


def _values(name: str, v) -> list[float]:
    arr = np.atleast_1d(np.asarray(v, float))
    if arr.ndim != 1 or arr.size == 0 or not np.all(np.isfinite(arr)):
        raise SpecError(f"{name}: give a non-empty list of numbers")
    return [float(x) for x in arr]


def _log_exposures(e, dose: float, tb: float) -> np.ndarray:
    try:
        arr = np.asarray(e, dtype=float)
    except (TypeError, ValueError):
        raise DataError(
            f"exposure_at({dose:g}, {tb:g}) returned {type(e).__name__}, not an array of numbers"
        ) from None
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.size == 0:
        raise DataError(
            f"exposure_at({dose:g}, {tb:g}) returned shape {arr.shape}; expected (n_draws, n_virtual)"
        )
    bad = ~np.isfinite(arr) | (arr <= 0)
    if bad.any():
        d, v = (int(i[0]) for i in np.nonzero(bad))
        raise DataError(
            f"exposure_at({dose:g}, {tb:g})[{d}, {v}] = {arr[d, v]:g}: exposures must be finite and "
            "> 0 (the models use log10 exposure)"
        )
    return np.log10(arr)
