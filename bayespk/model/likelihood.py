"""Observed variables: the residual error distribution, and censored observations specialised to the data.

:func:`error_distribution` is the residual error model around predictions
``f`` (additive, proportional, combined, log-normal; Normal or Student-t).

:func:`observe` registers the observations of one output. Which rows are
censored is known from the data when the model is built (BLQ rows, M3/M4:
``P(Y < LLOQ)``; right-censored rows, ``CENS = -1``: ``P(Y > limit)``), so each
row's log-likelihood is computed only by the branch that applies to it: the
density on the observed rows, the log-CDF on the left-censored ones, the
log-survival on the right-censored ones. ``pm.Censored`` evaluates all three on
every row and selects one with ``switch``; the normal log-CDF (``erfc`` and
``erfcx`` with their gradients) then dominates the cost of a study with BLQ
data. Measured on the 100-patient CAR-T study (1475 observations, 243 BLQ; one
log-density + gradient, the compiled callback nutpie runs): 225-290 us with
``pm.Censored``, 110 us with this module's split; the fit of that study went
from 76 s to 36 s (README, "Speed").

The values are pm.Censored's, row by row (``tests/model/test_likelihood_features.py``
compares them). Where the censoring pattern is not fixed when the model is built
(observations held as ``pm.Data`` so that one compiled model serves many data
sets), ``pm.Censored`` is kept.
"""

from __future__ import annotations

import numpy as np
import pymc as pm
import pytensor.tensor as pt

__all__ = ["error_distribution", "likelihood_distribution", "observe"]


def error_distribution(err, f, sig: dict):
    """The residual error distribution of ``err`` (an :class:`~bayespk.model.spec.ErrorSpec`) around ``f``.

    ``sig``: the error parameters by base name (``sigma_add``, ``sigma_prop``, ``sigma_log``, ``nu``), scalars or
    one value per element of ``f``. New observations are drawn from it (not truncated, not censored).
    """
    if err.model == "lognormal":
        return pm.LogNormal.dist(mu=pt.log(pt.maximum(f, 1e-300)), sigma=sig["sigma_log"])
    if err.model == "additive":
        sd = sig["sigma_add"] * pt.ones_like(f)
    elif err.model == "proportional":
        sd = sig["sigma_prop"] * f
    else:
        sd = pt.sqrt(sig["sigma_add"] ** 2 + (sig["sigma_prop"] * f) ** 2)
    if err.student_t:
        return pm.StudentT.dist(nu=sig["nu"], mu=f, sigma=sd)
    return pm.Normal.dist(mu=f, sigma=sd)


def likelihood_distribution(err, f, sig: dict):
    """:func:`error_distribution`, truncated at 0 under ``blq = "M4"`` (Beal 2001: every observation conditioned
    on Y > 0; a log-normal error needs no truncation)."""
    dist = error_distribution(err, f, sig)
    if err.blq == "M4" and err.model != "lognormal":
        dist = pm.Truncated.dist(dist, lower=0.0)
    return dist


def observe(name: str, err, f, sig: dict, y: np.ndarray, cens: np.ndarray, dims: str):
    """Register observations ``y`` of predictions ``f`` as the observed variable ``name`` (dims ``dims``).

    ``cens``: per row 0 (observed), 1 (left-censored: ``y`` is the limit, the term is the log-CDF there) or -1
    (right-censored: the log-survival at ``y``). Each branch is computed on its own rows only.
    """
    cens = np.asarray(cens)
    keys = sorted(sig)
    rows = {kind: np.flatnonzero(cens == code) for kind, code in (("logp", 0), ("logcdf", 1), ("logccdf", -1))}

    def per_row(v, idx):
        return v[idx] if getattr(v, "ndim", 0) else v

    lower = np.where(cens == 1, y, -np.inf)
    upper = np.where(cens == -1, y, np.inf)

    def dist(f, *values_and_size):  # draws: as pm.Censored's, clipped at the limits
        values = dict(zip(keys, values_and_size[:-1]))
        return pm.Censored.dist(likelihood_distribution(err, f, values), lower=lower, upper=upper)

    def logp(value, f, *values):
        out = pt.zeros_like(value)
        for kind, idx in rows.items():
            if len(idx) == 0:
                continue
            part = likelihood_distribution(err, f[idx], {k: per_row(v, idx) for k, v in zip(keys, values)})
            term = getattr(pm, kind)(part, value[idx])
            out = term if len(idx) == len(cens) else pt.set_subtensor(out[idx], term)
        return out

    if len(rows["logp"]) == len(cens):  # nothing censored: the distribution itself
        model = pm.modelcontext(None)
        return model.register_rv(likelihood_distribution(err, f, sig), name=name, observed=y, dims=(dims,))
    return pm.CustomDist(name, f, *(sig[k] for k in keys), dist=dist, logp=logp, observed=y, dims=dims)
