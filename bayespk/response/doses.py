"""Outcome probabilities from exposure-response (E-R) fits, given simulated exposures.

The exposure side (a PK regimen simulation, or the virtual patients of a
cellular-kinetics fit) supplies posterior exposures of virtual patients, an
array (n_draws, n_virtual). Each exposure draw is paired with one sample of
each E-R posterior (the pairing depends only on the seed, the outcome's
position and the number of draws, so it is the same at every dose and curves
over dose are smooth), the outcome probability is averaged over the virtual
patients within that draw, and the mean and central credible interval are
taken over draws. Both the exposure and the E-R uncertainty are therefore in
the interval; the spread between virtual patients is not (it is averaged: the
numbers are about the population at that dose).

* :func:`outcome_probabilities`: one exposure array -> one row per outcome.
  :func:`bayespk.simulate.doses.dose_table` calls it for every dose and band.
* :func:`outcome_table`: the same over a grid of doses x tumor burdens, for
  exposures supplied by a callable ``exposure_at(dose, tumor_burden)``.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

import numpy as np
import pandas as pd

from bayespk.errors import DataError, SpecError
from bayespk.response.models import ResponseFit

__all__ = ["OUTCOME_COLUMNS", "OUTCOME_TABLE_COLUMNS", "outcome_probabilities", "outcome_table", "resolve_outcomes"]

OUTCOME_COLUMNS = ["outcome", "mean", "lower", "median", "upper", "n_draws", "n_virtual"]
OUTCOME_TABLE_COLUMNS = ["dose", "tumor_burden", "outcome", "mean", "q5", "median", "q95", "n_draws", "n_virtual"]


def resolve_outcomes(outcomes) -> dict[str, tuple[ResponseFit, dict]]:
    """Check ``{label: fit or (fit, grade/time)}``: label -> (fit, keywords of :meth:`ResponseFit.probability`)."""
    if not isinstance(outcomes, Mapping) or not outcomes:
        raise SpecError("outcomes must be a non-empty mapping {label: fit or (fit, grade/time)}")
    return {str(label): _resolve(str(label), spec) for label, spec in outcomes.items()}


def outcome_probabilities(
    outcomes: Mapping[str, ResponseFit | tuple[ResponseFit, float]],
    exposures,
    covariates: Mapping[str, float | np.ndarray] | None = None,
    *,
    ci: float = 0.9,
    seed: int = 0,
    where: str = "exposures",
) -> pd.DataFrame:
    """Posterior probability of each outcome for one set of simulated exposures.

    Parameters
    ----------
    outcomes : mapping
        Label -> fitted model: a binary :class:`ResponseFit` (P(response)), a
        tuple ``(ordinal_fit, k)`` (P(grade >= k)) or ``(tte_fit, t)``
        (survival S(t)); e.g. ``{"P(response)": resp, "P(CRS>=3)": (crs, 3)}``.
    exposures : array
        Exposures (> 0) of virtual patients, shape (n_draws, n_virtual)
        (posterior draws) or (n_virtual,), in the units the E-R models were
        fitted in.
    covariates : mapping, optional
        {covariate: scalar or array (n_virtual,)} for the models' covariates.
        Required when a model has covariates: they are never silently set to
        their reference.
    ci : float
        Central credible interval over draws.
    seed : int
        Seed of the pairing of exposure draws with E-R samples.
    where : str
        How errors name the exposures (e.g. ``"dose 10, WT [20, 30)"``).

    Returns
    -------
    DataFrame
        ``outcome, mean, lower, median, upper, n_draws, n_virtual``: one row
        per outcome; mean and quantiles over draws of the probability averaged
        over the virtual patients.
    """
    if not 0 < ci < 1:
        raise SpecError(f"ci must be between 0 and 1, got {ci!r}")
    models = resolve_outcomes(outcomes)
    lx = _log_exposures(exposures, where)
    n_d, n_v = lx.shape
    covs = dict(covariates or {})
    rows = []
    lo = (1 - ci) / 2
    for i, (label, (fit, what)) in enumerate(models.items()):
        missing = [c for c in fit.covariates if c not in covs]
        if missing:
            raise SpecError(f"outcomes[{label!r}]: no value for covariate(s) {missing} at {where}; the E-R "
                            "model needs them")
        samples = fit._sample_index(n_d, np.random.default_rng([seed, i, n_d]))
        p = fit.probability(lx, {c: covs[c] for c in fit.covariates}, samples=samples, **what)
        per_draw = p.mean(axis=1)
        q = np.quantile(per_draw, [lo, 0.5, 1 - lo])
        rows.append({"outcome": label, "mean": float(per_draw.mean()), "lower": q[0], "median": q[1],
                     "upper": q[2], "n_draws": n_d, "n_virtual": n_v})
    return pd.DataFrame(rows, columns=OUTCOME_COLUMNS)


def outcome_table(
    outcomes: Mapping[str, ResponseFit | tuple[ResponseFit, float]],
    exposure_at: Callable[[float, float], np.ndarray],
    doses: Sequence[float],
    tumor_burdens: Sequence[float],
    *,
    covariates_at: Callable[[float, float], Mapping[str, float | np.ndarray]] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """Posterior probability of each outcome at each dose and tumor burden, from an exposure callable.

    The dose-selection entry point is :func:`bayespk.simulate.doses.dose_table`
    (it simulates the exposures from a fit); this is the lower-level grid for
    exposures that come from elsewhere.

    Parameters
    ----------
    outcomes : mapping
        As in :func:`outcome_probabilities`.
    exposure_at : callable
        ``exposure_at(dose, tumor_burden)`` -> exposures (> 0) of virtual
        patients, shape (n_draws, n_virtual) or (n_virtual,).
    doses, tumor_burdens : sequence of float
    covariates_at : callable, optional
        ``covariates_at(dose, tumor_burden)`` -> {covariate: scalar or array
        (n_virtual,)} for the models' covariates (e.g. ``{"LOGTB":
        np.log10(tumor_burden)}``). Required when a model has covariates.
    seed : int
        Seed of the pairing of exposure draws with E-R samples.

    Returns
    -------
    DataFrame
        Columns ``dose, tumor_burden, outcome, mean, q5, median, q95,
        n_draws, n_virtual``, one row per dose x tumor burden x outcome (90%
        intervals).

    Examples
    --------
    >>> def exposure_at(dose, tb):                                   # doctest: +SKIP
    ...     rng = np.random.default_rng(0)
    ...     return dose * tb ** 0.3 * np.exp(rng.normal(0, 0.8, (200, 100)))
    >>> outcome_table({"P(response)": resp, "P(CRS>=3)": (crs, 3)}, exposure_at,
    ...               doses=[50, 100, 200], tumor_burdens=[1, 10],
    ...               covariates_at=lambda d, tb: {"LOGTB": np.log10(tb)})  # doctest: +SKIP
    """
    models = resolve_outcomes(outcomes)
    if not callable(exposure_at):
        raise SpecError(
            "exposure_at must be a callable exposure_at(dose, tumor_burden) -> array (n_draws, n_virtual)"
        )
    needs = sorted({c for fit, _ in models.values() for c in fit.covariates})
    if needs and covariates_at is None:
        raise SpecError(
            f"the models have covariates {needs}: give covariates_at(dose, tumor_burden) -> "
            "{covariate: value}, e.g. the log10 tumor burden"
        )
    doses, burdens = _values("doses", doses), _values("tumor_burdens", tumor_burdens)
    parts = []
    for dose in doses:
        for tb in burdens:
            where = f"exposure_at({dose:g}, {tb:g})"
            covs = dict(covariates_at(dose, tb)) if covariates_at is not None else {}
            part = outcome_probabilities(outcomes, exposure_at(dose, tb), covs, ci=0.9, seed=seed, where=where)
            parts.append(part.assign(dose=dose, tumor_burden=tb).rename(columns={"lower": "q5", "upper": "q95"}))
    return pd.concat(parts, ignore_index=True)[OUTCOME_TABLE_COLUMNS]


def _resolve(label: str, spec) -> tuple[ResponseFit, dict]:
    fit, arg = spec if isinstance(spec, tuple) else (spec, None)
    if fit is None:
        raise SpecError(f"outcomes[{label!r}]: no fitted model given (expected a ResponseFit or "
                        "(ResponseFit, grade/time))")
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


def _log_exposures(e, where: str) -> np.ndarray:
    try:
        arr = np.asarray(e, dtype=float)
    except (TypeError, ValueError):
        raise DataError(f"{where} returned {type(e).__name__}, not an array of numbers") from None
    if arr.ndim == 1:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.size == 0:
        raise DataError(f"{where} returned shape {arr.shape}; expected (n_draws, n_virtual)")
    bad = ~np.isfinite(arr) | (arr <= 0)
    if bad.any():
        d, v = (int(i[0]) for i in np.nonzero(bad))
        raise DataError(
            f"{where}[{d}, {v}] = {arr[d, v]:g}: exposures must be finite and > 0 (the models use log10 exposure)"
        )
    return np.log10(arr)
