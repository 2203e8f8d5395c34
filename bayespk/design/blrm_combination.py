"""Two-drug combination BLRM with escalation with overdose control.

The model of Neuenschwander, Matano, Tang, Roychoudhury, Wandel & Bailey (2015), "A Bayesian industry approach
to phase I combination trials in oncology", in *Statistical Methods in Drug Combination Studies* (Zhao & Yang,
eds.), CRC Press (as OncoBayes2's ``blrm_exnex`` for two drugs, one stratum, full exchangeability off):

* each drug ``i`` alone follows a single-agent BLRM,
  ``logit(pi_i(d_i)) = log(alpha_i) + beta_i log(d_i / d_i_ref)`` (``pi_i = 0`` when ``d_i = 0``), with a
  bivariate-normal (mixture) prior on ``(log alpha_i, log beta_i)`` (:class:`~bayespk.design.blrm.BVNMixture`);
* without interaction the combination DLT probability is
  ``pi_0(d_1, d_2) = 1 - (1 - pi_1(d_1)) (1 - pi_2(d_2))`` (independent toxicities);
* the interaction acts on the odds scale:
  ``odds(pi_12) = odds(pi_0) exp(eta d_1 / d_1_ref * d_2 / d_2_ref)``, with ``eta ~ Normal(eta_mean, eta_sd)``;
  ``eta > 0`` is synergistic (more toxic than independence), ``eta < 0`` antagonistic.

:func:`combination_posterior` samples it with PyMC + nutpie through :func:`bayespk.sampling.compile_model` and
:func:`bayespk.sampling.sample` (one compiled model per number of data rows and prior components; data
and prior parameters are ``pm.Data``). :func:`combination_ewoc` applies escalation with overdose control on a
grid of dose combinations: eligible combinations have ``P(pi_12 >= 0.33) < ewoc`` (0.25) and, with
``max_step``, each drug's dose at most ``max_step`` times the highest dose of that drug given so far; the
recommendation is the eligible combination with the largest ``P(0.16 <= pi_12 < 0.33)``. With
``step="level"`` the step is instead the no-skipping rule on the grid (:func:`level_step_ok`): at most one level
above a combination already given, in one drug only (``bayespk design next --design blrm-combination``).

:func:`combination_is_posterior` computes the same posterior by importance sampling (prior draws weighted by
the binomial likelihood, adaptive multivariate-t stages when the effective sample size falls below a floor), in
milliseconds; :func:`combination_operating_characteristics` uses it after every simulated cohort to give the
operating characteristics of a combination trial on a scenario (a table of true DLT probabilities), through
the Dask runner of the other designs (:func:`bayespk.design.simulation.run_trial_tasks`).
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit, log_expit

from bayespk import sampling
from bayespk.design.blrm import INTERVALS, BVNMixture, _bvn_mixture_logp, _finite
from bayespk.design.escalation import DesignError, _check_count
from bayespk.design.simulation import _check_settings, run_trial_tasks, tally

__all__ = [
    "CombinationData",
    "CombinationDecision",
    "CombinationOperatingCharacteristics",
    "CombinationPosterior",
    "check_combination_scenario",
    "check_grid",
    "combination_ewoc",
    "combination_is_posterior",
    "combination_operating_characteristics",
    "combination_posterior",
    "grid_counts",
    "level_step_ok",
    "read_combination_scenario",
    "simulate_combination_trials",
]


@dataclass(frozen=True)
class CombinationData:
    """Cohort data of a combination trial, one row per (dose of drug 1, dose of drug 2): ``d1``, ``d2`` (0: the
    drug is not given), ``n`` patients, ``r`` DLTs. Checked on construction (errors name the row)."""

    d1: np.ndarray
    d2: np.ndarray
    n: np.ndarray
    r: np.ndarray

    @classmethod
    def from_rows(cls, rows) -> CombinationData:
        """From ``[(d1, d2, n, r), ...]`` or a DataFrame with columns ``d1, d2, n, r``."""
        if hasattr(rows, "to_dict"):
            missing = [c for c in ("d1", "d2", "n", "r") if c not in rows.columns]
            if missing:
                raise DesignError(f"combination data: missing column(s) {', '.join(missing)}; needs d1, d2, n, r")
            rows = rows[["d1", "d2", "n", "r"]].itertuples(index=False, name=None)
        out = [[], [], [], []]
        for i, row in enumerate(rows):
            row = tuple(row)
            if len(row) != 4:
                raise DesignError(f"combination data row {i + 1}: expected (d1, d2, n, r), got {row!r}")
            d1, d2 = (_finite(f"row {i + 1} {k}", v) for k, v in zip(("d1", "d2"), row[:2]))
            n, r = (_finite(f"row {i + 1} {k}", v) for k, v in zip(("n", "r"), row[2:]))
            for k, v in (("d1", d1), ("d2", d2)):
                if v < 0:
                    raise DesignError(f"combination data row {i + 1}: {k} = {v:g}; doses must be >= 0")
            if d1 == 0 and d2 == 0:
                raise DesignError(f"combination data row {i + 1}: d1 = d2 = 0; a patient must get at least one drug")
            for k, v in (("n", n), ("r", r)):
                if not v.is_integer() or v < 0:
                    raise DesignError(f"combination data row {i + 1}: {k} = {v:g} is not a whole number >= 0")
            if r > n:
                raise DesignError(f"combination data row {i + 1}: r = {r:g} DLTs > n = {n:g} patients")
            for lst, v in zip(out, (d1, d2, n, r)):
                lst.append(v)
        if not out[0]:
            raise DesignError("combination data: no rows")
        return cls(np.asarray(out[0]), np.asarray(out[1]), np.asarray(out[2], dtype="int64"),
                   np.asarray(out[3], dtype="int64"))


def _prior(p, name):
    if p is None:
        return BVNMixture.single((math.log(0.2 / 0.8), 0.0), (2.0, 1.0), 0.0)
    if isinstance(p, dict):
        return BVNMixture.from_dict(p, name)
    if not isinstance(p, BVNMixture):
        raise DesignError(f"{name}: expected a BVNMixture or its dict, got {type(p).__name__}")
    return p


def _build_combination_model(rows: int, k1: int, k2: int):
    import pymc as pm
    import pytensor.tensor as pt


    with pm.Model() as model:
        x1 = pm.Data("x1", np.zeros(rows))  # log(d1 / d1_ref), 0 where d1 = 0 (masked)
        x2 = pm.Data("x2", np.zeros(rows))
        on1 = pm.Data("on1", np.ones(rows))  # 1 where the drug is given
        on2 = pm.Data("on2", np.ones(rows))
        inter = pm.Data("inter", np.zeros(rows))  # d1 / d1_ref * d2 / d2_ref
        n = pm.Data("n", np.zeros(rows, dtype="int64"))
        r = pm.Data("r", np.zeros(rows, dtype="int64"))
        priors = []
        for i, k in ((1, k1), (2, k2)):
            priors.append(
                (
                    pm.Data(f"log_w{i}", np.zeros(k)),
                    pm.Data(f"m{i}", np.zeros((k, 2))),
                    pm.Data(f"s{i}", np.ones((k, 2))),
                    pm.Data(f"rho{i}", np.zeros(k)),
                )
            )
        eta_m = pm.Data("eta_m", 0.0)
        eta_s = pm.Data("eta_s", 1.0)
        theta1 = pm.Flat("theta1", shape=2)
        theta2 = pm.Flat("theta2", shape=2)
        pm.Potential("prior1", _bvn_mixture_logp(theta1, *priors[0]))
        pm.Potential("prior2", _bvn_mixture_logp(theta2, *priors[1]))
        eta = pm.Normal("eta", eta_m, eta_s)
        e1 = theta1[0] + pt.exp(theta1[1]) * x1
        e2 = theta2[0] + pt.exp(theta2[1]) * x2
        log_q0 = -(on1 * pm.math.log1pexp(e1) + on2 * pm.math.log1pexp(e2))  # log(1 - pi_0)
        logit_p0 = pt.log(-pt.expm1(log_q0)) - log_q0
        pm.Binomial("dlt", n=n, logit_p=logit_p0 + eta * inter, observed=r)
    return model


def _combination_pi(theta1, theta2, eta, d1, d2, ref1, ref2) -> np.ndarray:
    """(N,) draws of pi_12 at (d1, d2) from draws theta1, theta2 (N, 2) and eta (N,)."""
    log_q0 = np.zeros(len(eta))
    for th, d, ref in ((theta1, d1, ref1), (theta2, d2, ref2)):
        if d > 0:
            log_q0 = log_q0 + log_expit(-(th[:, 0] + np.exp(th[:, 1]) * math.log(d / ref)))
    if d1 == 0 and d2 == 0:
        return np.zeros(len(eta))
    logit_p0 = np.log(-np.expm1(log_q0)) - log_q0
    return expit(logit_p0 + eta * (d1 / ref1) * (d2 / ref2))


@dataclass
class CombinationPosterior:
    """Posterior draws (chains stacked) of ``theta1``, ``theta2`` ((N, 2): log alpha, log beta of each drug)
    and ``eta`` (N,); ``weights`` (N,) normalised importance weights of the draws (None: equally weighted
    NUTS draws; :func:`combination_is_posterior`)."""

    data: CombinationData
    d_ref: tuple[float, float]
    priors: tuple[BVNMixture, BVNMixture]
    eta_prior: tuple[float, float]
    theta1: np.ndarray
    theta2: np.ndarray
    eta: np.ndarray
    settings: dict = field(default_factory=dict)
    weights: np.ndarray | None = None

    def pi(self, d1: float, d2: float) -> np.ndarray:
        """(N,) draws of the DLT probability of the combination (d1, d2) (0: the drug is not given)."""
        d1, d2 = _finite("d1", d1), _finite("d2", d2)
        if d1 < 0 or d2 < 0:
            raise DesignError(f"(d1, d2) = ({d1:g}, {d2:g}): doses must be >= 0")
        return _combination_pi(self.theta1, self.theta2, self.eta, d1, d2, *self.d_ref)

    def table(self, doses1, doses2, intervals=INTERVALS):
        """Per combination of ``doses1 x doses2``: interval probabilities, mean and quantiles of pi_12."""
        import pandas as pd

        a, b = intervals
        w = self.weights
        rows = []
        for d1 in doses1:
            for d2 in doses2:
                p = self.pi(d1, d2)
                if w is None:
                    under, over, mean = float((p < a).mean()), float((p >= b).mean()), float(p.mean())
                    q = np.quantile(p, [0.025, 0.5, 0.975])
                else:
                    under, over, mean = float(w @ (p < a)), float(w @ (p >= b)), float(w @ p)
                    q = _weighted_quantiles(p, w, (0.025, 0.5, 0.975))
                rows.append({"d1": float(d1), "d2": float(d2), f"P(<{a:g})": under,
                             f"P({a:g}-{b:g})": 1 - under - over, f"P(>={b:g})": over, "mean": mean,
                             "q2.5": q[0], "q50": q[1], "q97.5": q[2]})
        return pd.DataFrame(rows)


def combination_posterior(
    data,
    d_ref: tuple[float, float],
    prior1: BVNMixture | dict | None = None,
    prior2: BVNMixture | dict | None = None,
    eta_prior: tuple[float, float] = (0.0, 1.121),
    *,
    draws: int = 1000,
    tune: int = 1000,
    chains: int = 4,
    seed: int = 0,
    target_accept: float = 0.9,
) -> CombinationPosterior:
    """Posterior of the two-drug combination BLRM by NUTS (nutpie).

    Parameters
    ----------
    data : CombinationData, rows ``(d1, d2, n, r)`` or a DataFrame with those columns
        Monotherapy rows have the other drug's dose 0.
    d_ref : (float, float)
        Reference doses of drug 1 and drug 2.
    prior1, prior2 : BVNMixture or dict, optional
        Priors of (log alpha_i, log beta_i); default BVN((logit 0.2, 0), (2, 1)).
    eta_prior : (mean, sd)
        Normal prior of the interaction; default (0, 1.121), the OncoBayes2 combination example's (a 95%
        interval of the odds multiplier at the reference doses of about 1/9 to 9).
    draws, tune, chains, seed, target_accept
        nutpie settings.
    """
    data, ref, p1, p2, (em, es) = _check_model(data, d_ref, prior1, prior2, eta_prior)
    for name, v in (("draws", draws), ("tune", tune), ("chains", chains)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise DesignError(f"{name} = {v!r}: expected a whole number >= 1")
    rows = len(data.n)
    t0 = time.perf_counter()
    compiled = sampling.compile_model(key=("blrm combination", rows, p1.n_components, p2.n_components),
                                      build=lambda: _build_combination_model(rows, p1.n_components, p2.n_components))
    on1, on2 = (data.d1 > 0).astype(float), (data.d2 > 0).astype(float)
    x1 = np.where(on1 > 0, np.log(np.where(on1 > 0, data.d1, 1.0) / ref[0]), 0.0)
    x2 = np.where(on2 > 0, np.log(np.where(on2 > 0, data.d2, 1.0) / ref[1]), 0.0)
    values = dict(x1=x1, x2=x2, on1=on1, on2=on2, inter=data.d1 / ref[0] * data.d2 / ref[1], n=data.n, r=data.r,
                  eta_m=np.asarray(em), eta_s=np.asarray(es))
    for i, p in ((1, p1), (2, p2)):
        values.update({f"log_w{i}": np.log(np.maximum(p.weights, 1e-300)), f"m{i}": p.means, f"s{i}": p.sds,
                       f"rho{i}": p.corr})
    tree = sampling.sample(compiled, data=values, draws=draws, tune=tune, chains=chains, seed=seed,
                           target_accept=target_accept)
    post = tree.posterior
    stats = tree.sample_stats
    settings = {"draws": draws, "tune": tune, "chains": chains, "seed": seed, "target_accept": target_accept,
                "divergences": int(stats["diverging"].values.sum()) if "diverging" in stats else 0,
                "wall_seconds": round(time.perf_counter() - t0, 3)}
    return CombinationPosterior(data, ref, (p1, p2), (em, es), post["theta1"].values.reshape(-1, 2),
                                post["theta2"].values.reshape(-1, 2), post["eta"].values.ravel(), settings)


@dataclass(frozen=True)
class CombinationDecision:
    """EWOC on a combination grid: ``dose`` ((d1, d2) or None: stop), ``reason``, ``table`` (per combination:
    interval probabilities, ``ewoc_ok``, ``step_ok``, ``eligible``)."""

    dose: tuple[float, float] | None
    reason: str
    table: Any

    def __str__(self) -> str:
        head = "stop: no combination is acceptable" if self.dose is None else (
            f"next combination d1 = {self.dose[0]:g}, d2 = {self.dose[1]:g}")
        return f"{head}: {self.reason}"


def combination_ewoc(
    posterior: CombinationPosterior, doses1, doses2, *, ewoc: float = 0.25, max_step: float | None = 2.0,
    step: str = "ratio", intervals=INTERVALS,
) -> CombinationDecision:
    """Escalation with overdose control on the grid ``doses1 x doses2``.

    Eligible combinations have ``P(pi_12 >= 0.33) < ewoc`` and pass the escalation step; the recommendation is
    the eligible combination with the largest ``P(0.16 <= pi_12 < 0.33)`` (ties: the later one in the order
    ``doses1`` then ``doses2``, i.e. the higher dose of drug 1).

    ``step="ratio"``: each drug's dose at most ``max_step`` times the highest dose of that drug given so far
    (None: no limit). ``step="level"``: at most one level above a combination of the grid already given, in one
    drug only (:func:`level_step_ok`; the rule of :func:`combination_operating_characteristics`); every data
    row's doses must then be on the grids (or 0: monotherapy co-data, which does not count as given).
    """
    ewoc = _finite("ewoc", ewoc)
    if not 0 < ewoc < 1:
        raise DesignError(f"ewoc = {ewoc:g}: the overdose-control bound must lie in (0, 1)")
    if step not in ("ratio", "level"):
        raise DesignError(f"step = {step!r}: expected 'ratio' (dose multiple) or 'level' (one grid level)")
    if step == "ratio" and max_step is not None and _finite("max_step", max_step) < 1:
        raise DesignError(f"max_step = {max_step:g}: the escalation step is a dose ratio >= 1")
    if step == "level":
        doses1, doses2 = check_grid("doses1", doses1), check_grid("doses2", doses2)
    tab = posterior.table(doses1, doses2, intervals)
    a, b = intervals
    tab["ewoc_ok"] = tab[f"P(>={b:g})"] < ewoc
    data = posterior.data
    if step == "level":
        given = grid_counts(data, doses1, doses2)[0] > 0
        tab["step_ok"] = level_step_ok(given).ravel()
        rule = "at most one level above a combination given, in one drug only"
    elif max_step is None:
        tab["step_ok"] = True
        rule = ""
    else:
        top = [float(np.max(np.where(data.n > 0, d, 0.0))) for d in (data.d1, data.d2)]
        tab["step_ok"] = [(d1 <= max_step * top[0] * (1 + 1e-12) or d1 == 0)
                          and (d2 <= max_step * top[1] * (1 + 1e-12) or d2 == 0)
                          for d1, d2 in zip(tab.d1, tab.d2)]
        rule = f"each dose <= {max_step:g} x the highest given"
    tab["eligible"] = tab.ewoc_ok & tab.step_ok
    if not tab.eligible.any():
        return CombinationDecision(None, f"no combination within the step has P(pi >= {b:g}) < {ewoc:g}", tab)
    ok = tab[tab.eligible]
    col = f"P({a:g}-{b:g})"
    i = ok.index[np.flatnonzero(ok[col].to_numpy() == ok[col].max())[-1]]
    row = tab.loc[i]
    reason = (f"largest P({a:g} <= pi < {b:g}) = {row[col]:.3f} among combinations with P(pi >= {b:g}) < {ewoc:g}"
              + (f" and {rule}" if rule else "")
              + f" (P(pi >= {b:g}) = {row[f'P(>={b:g})']:.3f})")
    return CombinationDecision((float(row.d1), float(row.d2)), reason, tab)


# ====================================================================== grids, data on the grid, the step rule
def _weighted_quantiles(x: np.ndarray, w: np.ndarray, probs) -> np.ndarray:
    order = np.argsort(x)
    cw = np.cumsum(w[order])
    idx = np.minimum(np.searchsorted(cw, np.asarray(probs) * cw[-1]), x.size - 1)
    return x[order][idx]


def check_grid(name: str, doses) -> np.ndarray:
    """The dose grid of one drug: positive and strictly increasing (errors name ``name[i]``)."""
    try:
        values = list(np.atleast_1d(np.asarray(doses, dtype=object)))
    except TypeError:
        raise DesignError(f"{name} = {doses!r}: expected the doses of the drug, lowest first") from None
    d = [_finite(f"{name}[{i + 1}]", v) for i, v in enumerate(values)]
    if not d:
        raise DesignError(f"{name}: give at least one dose")
    for i, v in enumerate(d):
        if v <= 0:
            raise DesignError(f"{name}[{i + 1}] = {v:g}: doses must be positive (0, the drug not given, is not "
                              "a level of the combination grid)")
        if i and v <= d[i - 1]:
            raise DesignError(f"{name}[{i + 1}] = {v:g}: doses must be strictly increasing (after {d[i - 1]:g})")
    return np.asarray(d, dtype=float)


def _level(v: float, grid: np.ndarray) -> int | None:
    hit = np.flatnonzero(np.isclose(grid, v, rtol=1e-9, atol=0.0))
    return int(hit[0]) if hit.size else None


def grid_counts(data, doses1, doses2) -> tuple[np.ndarray, np.ndarray]:
    """Patients and DLTs per combination of the grid, ``(n, r)`` each ``(len(doses1), len(doses2))``.

    Rows with both doses > 0 must lie on the grids (the error names the row and the key); monotherapy rows
    (one dose 0) are co-data for the model and are not combinations of the grid, so they may be at any dose.
    """
    data = data if isinstance(data, CombinationData) else CombinationData.from_rows(data)
    g1, g2 = check_grid("doses1", doses1), check_grid("doses2", doses2)
    n = np.zeros((g1.size, g2.size), dtype="int64")
    r = np.zeros_like(n)
    for k, (d1, d2, nk, rk) in enumerate(zip(data.d1, data.d2, data.n, data.r)):
        if d1 == 0 or d2 == 0:
            continue
        i, j = _level(d1, g1), _level(d2, g2)
        for key, v, lev, g in (("d1", d1, i, g1), ("d2", d2, j, g2)):
            if lev is None:
                raise DesignError(f"combination data row {k + 1}: {key} = {v:g} is not a dose of the grid of drug "
                                  f"{key[1]} ({', '.join(f'{x:g}' for x in g)}) nor 0 (the drug not given)")
        n[i, j] += nk
        r[i, j] += rk
    return n, r


def level_step_ok(given) -> np.ndarray:
    """Combinations (I, J) allowed by the no-skipping rule: at most one level above a combination already given
    (``given``, (I, J) booleans), in one drug only, i.e. ``(i', j')`` with ``max(i' - i, 0) + max(j' - j, 0)
    <= 1`` for some given ``(i, j)``. With nothing given, only the lowest combination."""
    given = np.asarray(given, dtype=bool)
    ok = np.zeros_like(given)
    if not given.any():
        ok[0, 0] = True
        return ok
    for i, j in zip(*np.nonzero(given)):
        ok[: i + 2, : j + 1] = True
        ok[: i + 1, : j + 2] = True
    return ok


def _pick_pair(ip: np.ndarray, allowed: np.ndarray, ewoc: float) -> int | None:
    """Among ``allowed`` combinations (flat index) with P(overdose) < ewoc, the one with the largest P(target)
    (ties: the last); None if none."""
    ok = np.flatnonzero(allowed & (ip[:, 2] < ewoc))
    if ok.size == 0:
        return None
    return int(ok[np.flatnonzero(ip[ok, 1] == ip[ok, 1].max())[-1]])


# ====================================================================== importance-sampling posterior
def _logit_pi_matrix(z: np.ndarray, d1: np.ndarray, d2: np.ndarray, ref) -> np.ndarray:
    """(M, C) logit pi_12 at the C combinations (d1, d2) for parameter draws z (M, 5): log alpha_1, log beta_1,
    log alpha_2, log beta_2, eta."""
    log_q0 = np.zeros((z.shape[0], d1.size))
    for k, (d, rf) in enumerate(((d1, ref[0]), (d2, ref[1]))):
        on = d > 0
        x = np.log(np.where(on, d, rf) / rf)
        e = z[:, 2 * k, None] + np.exp(z[:, 2 * k + 1, None]) * x[None]
        log_q0 += np.where(on[None], log_expit(-e), 0.0)
    logit0 = np.log(np.maximum(-np.expm1(log_q0), 1e-300)) - log_q0
    return logit0 + z[:, 4, None] * (d1 / ref[0] * d2 / ref[1])[None]


class _ISEngine:
    """Importance sampling of the combination BLRM posterior for data at fixed combinations ``(d1, d2)``.

    Stage 0: ``draws`` draws of the 5 parameters from the prior, weighted by the binomial likelihood (their
    log pi, log(1 - pi) at the combinations are computed once, so each new data set costs two matrix-vector
    products). If the effective sample size ``ESS = 1 / sum(w^2)`` is below ``min_ess`` (the likelihood is
    concentrated where few prior draws fall), up to ``stages`` adaptive stages follow: a multivariate-t
    proposal (``nu = 4`` degrees of freedom) with the weighted mean and covariance of the current weighted
    sample, ``draws`` fresh draws weighted by prior x likelihood / proposal; the stage with the largest ESS is
    kept (``low_ess`` reports when even that is below ``min_ess``).
    """

    def __init__(self, d1, d2, ref, prior1, prior2, eta_prior, draws, min_ess, rng, stages=3, nu=4.0):
        self.d1, self.d2, self.ref = np.asarray(d1, float), np.asarray(d2, float), ref
        self.priors, self.eta_prior = (prior1, prior2), eta_prior
        self.min_ess, self.stages, self.nu = min_ess, stages, nu
        em, es = eta_prior
        self.z = np.column_stack([prior1.sample(draws, rng), prior2.sample(draws, rng), rng.normal(em, es, draws)])
        self.lp, self.lq, self.pi = self._at(self.z)
        self.under, self.over = (self.pi < INTERVALS[0]).astype(float), (self.pi >= INTERVALS[1]).astype(float)
        t = rng.standard_normal((draws, 5)) / np.sqrt(rng.chisquare(nu, draws) / nu)[:, None]
        self.t = t
        p = 5
        self.log_t = (math.lgamma((nu + p) / 2) - math.lgamma(nu / 2) - p / 2 * math.log(nu * math.pi)
                      - (nu + p) / 2 * np.log1p((t**2).sum(axis=1) / nu))

    def _at(self, z):
        lg = _logit_pi_matrix(z, self.d1, self.d2, self.ref)
        return log_expit(lg), log_expit(-lg), expit(lg)

    def log_prior(self, z) -> np.ndarray:
        em, es = self.eta_prior
        return (self.priors[0].logpdf(z[:, :2]) + self.priors[1].logpdf(z[:, 2:4])
                - 0.5 * ((z[:, 4] - em) / es) ** 2 - math.log(es * math.sqrt(2 * math.pi)))

    @staticmethod
    def _normalise(lw):
        w = np.exp(lw - lw.max())
        w /= w.sum()
        return w, float(1.0 / (w @ w))

    def fit(self, n, r):
        """``(z, weights, pi at the combinations, ESS, stage used)`` for counts ``n``, ``r`` per combination."""
        n, r = np.asarray(n, float), np.asarray(r, float)
        w, ess = self._normalise(self.lp @ r + self.lq @ (n - r))
        best = (self.z, w, self.pi, ess, 0)
        z = self.z
        for stage in range(1, self.stages + 1):
            if best[3] >= self.min_ess:
                break
            mu = w @ z
            dz = z - mu
            cov = (dz * w[:, None]).T @ dz + 1e-10 * np.eye(5)
            try:
                chol = np.linalg.cholesky(cov)
            except np.linalg.LinAlgError:
                break
            z = mu + self.t @ chol.T
            log_q = self.log_t - np.log(np.diag(chol)).sum()
            lp, lq, pi = self._at(z)
            w, ess = self._normalise(self.log_prior(z) + lp @ r + lq @ (n - r) - log_q)
            if ess > best[3]:
                best = (z, w, pi, ess, stage)
        return best

    def interval_probs(self, n, r, intervals=INTERVALS):
        """(C, 3) P(pi < a), P(a <= pi < b), P(pi >= b) per combination, the ESS and the stage used."""
        _, w, pi, ess, stage = self.fit(n, r)
        a, b = intervals
        if stage == 0 and intervals == INTERVALS:
            under, over = w @ self.under, w @ self.over
        else:
            under, over = w @ (pi < a), w @ (pi >= b)
        return np.stack([under, 1 - under - over, over], axis=1), ess, stage


def _check_model(data, d_ref, prior1, prior2, eta_prior):
    data = data if isinstance(data, CombinationData) else CombinationData.from_rows(data)
    if len(d_ref) != 2:
        raise DesignError(f"d_ref: expected the reference doses of the two drugs, got {d_ref!r}")
    ref = tuple(_finite(f"d_ref[{i + 1}]", v) for i, v in enumerate(d_ref))
    for i, v in enumerate(ref):
        if v <= 0:
            raise DesignError(f"d_ref[{i + 1}] = {v:g}: reference doses must be positive")
    p1, p2 = _prior(prior1, "prior1"), _prior(prior2, "prior2")
    if len(eta_prior) != 2:
        raise DesignError(f"eta_prior: expected (mean, sd), got {eta_prior!r}")
    em, es = _finite("eta_prior mean", eta_prior[0]), _finite("eta_prior sd", eta_prior[1])
    if es <= 0:
        raise DesignError(f"eta_prior sd = {es:g}: must be > 0")
    return data, ref, p1, p2, (em, es)


def _check_is(draws, min_ess) -> tuple[int, int]:

    draws = _check_count("draws", draws, 1000)
    min_ess = _check_count("min_ess", min_ess, 10)
    if min_ess >= draws:
        raise DesignError(f"min_ess = {min_ess}: must be below draws = {draws}")
    return draws, min_ess


def combination_is_posterior(
    data,
    d_ref: tuple[float, float],
    prior1: BVNMixture | dict | None = None,
    prior2: BVNMixture | dict | None = None,
    eta_prior: tuple[float, float] = (0.0, 1.121),
    *,
    draws: int = 20000,
    min_ess: int = 1000,
    seed: int = 0,
) -> CombinationPosterior:
    """Posterior of the combination BLRM by importance sampling (no PyMC; milliseconds): prior draws weighted by
    the likelihood, with adaptive multivariate-t stages when the effective sample size is below ``min_ess``
    (:class:`_ISEngine`). The fast counterpart of :func:`combination_posterior` (same arguments), used by
    :func:`combination_operating_characteristics` after every simulated cohort. ``settings`` has ``ess``,
    ``stage`` (0: prior draws sufficed) and ``low_ess`` (True when the ESS stayed below ``min_ess``)."""
    data, ref, p1, p2, eta = _check_model(data, d_ref, prior1, prior2, eta_prior)
    draws, min_ess = _check_is(draws, min_ess)
    t0 = time.perf_counter()
    eng = _ISEngine(data.d1, data.d2, ref, p1, p2, eta, draws, min_ess, np.random.default_rng(seed))
    z, w, _, ess, stage = eng.fit(data.n, data.r)
    settings = {"method": "importance sampling", "draws": draws, "min_ess": min_ess, "seed": seed,
                "ess": round(ess, 1), "stage": stage, "low_ess": ess < min_ess,
                "wall_seconds": round(time.perf_counter() - t0, 3)}
    return CombinationPosterior(data, ref, (p1, p2), eta, z[:, :2].copy(), z[:, 2:4].copy(), z[:, 4].copy(),
                                settings, w)


# ====================================================================== operating characteristics
def check_combination_scenario(scenario, shape: tuple[int, int], allow_non_monotone: bool = False) -> np.ndarray:
    """The true DLT probability per combination as an (I, J) array (rows: doses of drug 1, columns: doses of
    drug 2, lowest first); refuses another shape, values outside [0, 1] and, unless ``allow_non_monotone``, a
    probability that falls when either drug's dose rises (errors name the cell)."""
    try:
        p = np.asarray([[float(v) for v in row] for row in scenario], dtype=float)
    except (TypeError, ValueError):
        raise DesignError("scenario: expected a table of true DLT probabilities, one row per dose of drug 1 and "
                          "one column per dose of drug 2") from None
    if p.ndim != 2 or p.shape != tuple(shape):
        got = "x".join(map(str, p.shape)) if p.ndim == 2 else "a ragged table"
        raise DesignError(f"scenario: {got} for {shape[0]} doses of drug 1 (rows) x {shape[1]} doses of drug 2 "
                          "(columns)")
    bad = np.argwhere(~np.isfinite(p) | (p < 0) | (p > 1))
    if bad.size:
        i, j = bad[0]
        raise DesignError(f"scenario[d1 level {i + 1}, d2 level {j + 1}] = {p[i, j]:g}: outside [0, 1]")
    if not allow_non_monotone:
        for axis, drug in ((0, 1), (1, 2)):
            down = np.argwhere(np.diff(p, axis=axis) < 0)
            if down.size:
                i, j = down[0]
                i2, j2 = (i + 1, j) if axis == 0 else (i, j + 1)
                raise DesignError(
                    f"scenario: DLT probability falls from {p[i, j]:g} at (d1 level {i + 1}, d2 level {j + 1}) "
                    f"to {p[i2, j2]:g} at (d1 level {i2 + 1}, d2 level {j2 + 1}) as drug {drug}'s dose rises (allow "
                    "it with allow_non_monotone / --allow-non-monotone)")
    return p


def read_combination_scenario(path) -> list[list[float]]:
    """A scenario CSV: one row per dose of drug 1 (lowest first), one column per dose of drug 2, numbers only
    (blank lines and lines starting with ``#`` are skipped). Errors name the file, row and column."""
    import csv

    path = Path(path)
    if not path.is_file():
        raise DesignError(f"--scenario-file {path}: no such file")
    rows = []
    with path.open(newline="", encoding="utf-8") as f:
        for k, row in enumerate(csv.reader(f)):
            if not row or not "".join(row).strip() or row[0].lstrip().startswith("#"):
                continue
            vals = []
            for c, cell in enumerate(row):
                try:
                    vals.append(float(cell))
                except ValueError:
                    raise DesignError(f"--scenario-file {path}: line {k + 1}, column {c + 1}: {cell!r} is not a "
                                      "number (the file is the table of true DLT probabilities, no header)") from None
            if rows and len(vals) != len(rows[0]):
                raise DesignError(f"--scenario-file {path}: line {k + 1} has {len(vals)} values, the first row "
                                  f"{len(rows[0])}")
            rows.append(vals)
    if not rows:
        raise DesignError(f"--scenario-file {path}: no rows")
    return rows


def _combination_trial(rng, eng, p, cohort_size, cohorts, start, ewoc, counters):
    n1, n2 = p.shape
    flat = p.ravel()
    n = np.zeros(n1 * n2, dtype="int64")
    r = np.zeros(n1 * n2, dtype="int64")
    k = start
    for c in range(cohorts):
        r[k] += rng.binomial(cohort_size, flat[k])
        n[k] += cohort_size
        ip, ess, stage = eng.interval_probs(n, r)
        counters["decisions"] += 1
        counters["fallback"] += stage > 0
        counters["low_ess"] += ess < eng.min_ess
        if c == cohorts - 1:
            return n, r, _pick_pair(ip, n > 0, ewoc), c + 1
        nxt = _pick_pair(ip, level_step_ok((n > 0).reshape(n1, n2)).ravel(), ewoc)
        if nxt is None:
            return n, r, None, c + 1
        k = nxt
    return n, r, None, cohorts  # not reached


def simulate_combination_trials(
    doses1, doses2, d_ref, scenario, prior1, prior2, eta_prior, trials: int, cohort_size: int = 3,
    cohorts: int = 10, start=(1, 1), ewoc: float = 0.25, draws: int = 20000, min_ess: int = 1000, seed=0,
) -> dict:
    """Simulate ``trials`` combination trials in this process (rules of
    :func:`combination_operating_characteristics`); the sums it combines. ``seed``: int or SeedSequence."""
    g1, g2 = check_grid("doses1", doses1), check_grid("doses2", doses2)
    p = np.asarray(scenario, dtype=float).reshape(g1.size, g2.size)
    rng = np.random.default_rng(seed)
    D1, D2 = (a.ravel() for a in np.meshgrid(g1, g2, indexing="ij"))
    eng = _ISEngine(D1, D2, tuple(d_ref), _prior(prior1, "prior1"), _prior(prior2, "prior2"), tuple(eta_prior),
                    draws, min_ess, rng)
    C = p.size
    sums = {"trials": 0, "selected": [0] * C, "none": 0, "patients": [0] * C, "dlts": [0] * C, "cohorts": 0,
            "decisions": 0, "fallback": 0, "low_ess": 0}
    start_k = (start[0] - 1) * g2.size + (start[1] - 1)
    for _ in range(trials):
        n, r, sel, used = _combination_trial(rng, eng, p, cohort_size, cohorts, start_k, ewoc, sums)
        tally(sums, n, r, sel, used)
    return sums


def _combination_task(payload: dict) -> dict:
    """One task of :func:`combination_operating_characteristics` (run on a Dask worker)."""
    seed = np.random.SeedSequence(payload["seed"], spawn_key=(payload["index"],))
    return simulate_combination_trials(
        payload["doses1"], payload["doses2"], payload["d_ref"], payload["scenario"],
        BVNMixture.from_dict(payload["prior1"]), BVNMixture.from_dict(payload["prior2"]), payload["eta_prior"],
        payload["trials"], payload["cohort_size"], payload["cohorts"], tuple(payload["start"]), payload["ewoc"],
        payload["draws"], payload["min_ess"], seed,
    )


@dataclass
class CombinationOperatingCharacteristics:
    """What the simulation of combination BLRM + EWOC on a scenario gave (percentages in %, means per trial).

    2-D fields are ``[d1 level][d2 level]``. ``target_select_pct`` / ``overdose_select_pct``: the selected
    combination's true DLT probability in [0.16, 0.33) / >= 0.33; ``target_patients_pct`` /
    ``overdose_patients_pct``: the share of all patients treated at such combinations; ``mean_cohorts``: trial
    length in cohorts; ``fallback_pct`` / ``low_ess_pct``: decisions whose prior-draw ESS was below ``min_ess``
    / whose ESS stayed below it after the adaptive stages (a check on the posterior approximation)."""

    doses1: tuple[float, ...]
    doses2: tuple[float, ...]
    scenario: tuple[tuple[float, ...], ...]
    trials: int
    cohort_size: int
    cohorts: int
    ewoc: float
    start: tuple[int, int]
    select_pct: tuple[tuple[float, ...], ...]
    patients: tuple[tuple[float, ...], ...]
    dlts: tuple[tuple[float, ...], ...]
    stopped_pct: float
    target_select_pct: float
    overdose_select_pct: float
    target_patients_pct: float
    overdose_patients_pct: float
    mean_patients: float
    mean_dlts: float
    mean_cohorts: float
    draws: int
    min_ess: int
    fallback_pct: float
    low_ess_pct: float
    seconds: float = 0.0
    design: str = "blrm-combination"

    def rows(self) -> list[dict]:
        """One row per combination: d1, d2, true DLT probability, % selected, mean patients, mean DLTs."""
        return [{"d1": d1, "d2": d2, "p_true": self.scenario[i][j], "select_pct": self.select_pct[i][j],
                 "patients": self.patients[i][j], "dlts": self.dlts[i][j]}
                for i, d1 in enumerate(self.doses1) for j, d2 in enumerate(self.doses2)]

    def summary(self) -> dict:
        out = {k: getattr(self, k) for k in (
            "design", "trials", "cohort_size", "cohorts", "ewoc", "stopped_pct", "target_select_pct",
            "overdose_select_pct", "target_patients_pct", "overdose_patients_pct", "mean_patients", "mean_dlts",
            "mean_cohorts", "draws", "min_ess", "fallback_pct", "low_ess_pct")}
        out["start"] = list(self.start)
        return out

    def write_csv(self, path) -> Path:
        """One line per combination, then ``none`` (trials stopped without a selection)."""
        import csv

        path = Path(path)
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["d1", "d2", "p_true", "select_pct", "patients", "dlts"])
            for r in self.rows():
                w.writerow([f"{r['d1']:g}", f"{r['d2']:g}", f"{r['p_true']:g}", f"{r['select_pct']:.2f}",
                            f"{r['patients']:.3f}", f"{r['dlts']:.3f}"])
            w.writerow(["none", "", "", f"{self.stopped_pct:.2f}", "", ""])
        return path

    def _matrix(self, title, m, fmt) -> list[str]:
        lines = [f"{title} (rows d1, columns d2):", f"{'':>8} " + " ".join(f"{d:>8g}" for d in self.doses2)]
        lines += [f"{d1:>8g} " + " ".join(f"{v:>8{fmt}}" for v in row) for d1, row in zip(self.doses1, m)]
        return lines

    def __str__(self) -> str:
        lines = [f"combination BLRM + EWOC (P(pi >= 0.33) < {self.ewoc:g}, one level of one drug at a time, "
                 f"largest P(0.16 <= pi < 0.33)): {self.trials} trials of up to {self.cohorts} cohorts of "
                 f"{self.cohort_size}, start (d1 level {self.start[0]}, d2 level {self.start[1]})"]
        lines += self._matrix("true P(DLT)", self.scenario, ".3g")
        lines += self._matrix("selected %", self.select_pct, ".1f")
        lines += self._matrix("patients per trial", self.patients, ".2f")
        lines += [f"selected in the target interval [0.16, 0.33): {self.target_select_pct:.1f}%; in [0.33, 1]: "
                  f"{self.overdose_select_pct:.1f}%; stopped without a selection: {self.stopped_pct:.1f}%",
                  f"patients at target combinations: {self.target_patients_pct:.1f}%; at overdoses: "
                  f"{self.overdose_patients_pct:.1f}%",
                  f"mean per trial: {self.mean_patients:.1f} patients, {self.mean_dlts:.2f} DLTs, "
                  f"{self.mean_cohorts:.2f} cohorts",
                  f"posterior: importance sampling, {self.draws} draws; adaptive stage needed in "
                  f"{self.fallback_pct:.1f}% of decisions, ESS < {self.min_ess} after it in {self.low_ess_pct:.2f}%"]
        return "\n".join(lines)


def combination_operating_characteristics(
    doses1,
    doses2,
    d_ref: tuple[float, float],
    scenario,
    prior1: BVNMixture | dict | None = None,
    prior2: BVNMixture | dict | None = None,
    eta_prior: tuple[float, float] = (0.0, 1.121),
    *,
    trials: int = 200,
    cohort_size: int = 3,
    cohorts: int = 10,
    start: tuple[int, int] = (1, 1),
    ewoc: float = 0.25,
    draws: int = 20000,
    min_ess: int = 1000,
    allow_non_monotone: bool = False,
    seed: int = 0,
    out=None,
    tasks: int | None = None,
    client=None,
    scheduler: str | None = None,
    workers: int | None = None,
    progress=None,
) -> CombinationOperatingCharacteristics:
    """Simulate combination BLRM + EWOC trials on a scenario through the Dask runner.

    Trial rules (one simulated trial):

    1. cohorts of ``cohort_size`` patients, the first at the combination ``start`` (1-based levels of drug 1
       and drug 2);
    2. after each cohort the posterior of all data so far (:func:`combination_is_posterior`'s importance
       sampling, ``draws`` prior draws per task, adaptive stages when the ESS < ``min_ess``) gives
       ``P(pi >= 0.33)`` and ``P(0.16 <= pi < 0.33)`` per combination; eligible combinations have
       ``P(pi >= 0.33) < ewoc`` and are at most one level above a combination given so far, in one drug only
       (:func:`level_step_ok`: no skipping, no diagonal step); the next cohort gets the eligible combination with
       the largest ``P(0.16 <= pi < 0.33)``; with none eligible the trial stops without a selection;
    3. after ``cohorts`` cohorts the selected combination is the one the same rule picks among the combinations
       given.

    Parameters
    ----------
    doses1, doses2 : the dose grids of drug 1 and drug 2 (positive, increasing).
    d_ref : reference doses of the two drugs.
    scenario : (len(doses1), len(doses2)) array-like
        True DLT probability per combination (rows: drug 1); non-decreasing in each drug unless
        ``allow_non_monotone``.
    prior1, prior2, eta_prior : as :func:`combination_posterior`.
    trials, cohort_size, cohorts, seed, out, tasks, client, scheduler, workers, progress
        As :func:`bayespk.design.simulation.operating_characteristics` (default tasks: ``min(8, trials // 25)``,
        at least 1; each task draws its own prior sample).
    ewoc : float
        Overdose-control bound on ``P(pi >= 0.33)``.
    draws, min_ess : importance sampling (see :class:`_ISEngine`).
    """

    g1, g2 = check_grid("doses1", doses1), check_grid("doses2", doses2)
    _, ref, p1, p2, eta = _check_model([(1.0, 0.0, 0, 0)], d_ref, prior1, prior2, eta_prior)
    p = check_combination_scenario(scenario, (g1.size, g2.size), allow_non_monotone)
    ewoc = _finite("ewoc", ewoc)
    if not 0 < ewoc < 1:
        raise DesignError(f"ewoc = {ewoc:g}: the overdose-control bound must lie in (0, 1)")
    draws, min_ess = _check_is(draws, min_ess)
    if len(tuple(start)) != 2:
        raise DesignError(f"start = {start!r}: expected (level of drug 1, level of drug 2)")
    start = (_check_count("start[1] (level of drug 1)", start[0], 1), _check_count("start[2] (level of drug 2)",
                                                                                    start[1], 1))
    for k, (s, g) in enumerate(zip(start, (g1, g2))):
        if s > g.size:
            raise DesignError(f"start[{k + 1}] = {s}: drug {k + 1} has levels 1..{g.size}")
    if tasks is None:
        tasks = max(1, min(8, int(trials) // 25))
    tasks = _check_settings(None, p.ravel(), trials, cohort_size, cohorts, 1, tasks, seed)
    base = {"design": "blrm-combination", "doses1": g1.tolist(), "doses2": g2.tolist(), "d_ref": list(ref),
            "scenario": p.tolist(), "prior1": p1.to_dict(), "prior2": p2.to_dict(), "eta_prior": list(eta),
            "cohort_size": cohort_size, "cohorts": cohorts, "start": list(start), "ewoc": ewoc, "draws": draws,
            "min_ess": min_ess, "seed": seed}
    parts, seconds = run_trial_tasks(_combination_task, base, trials, tasks, out, "blrm-combination-oc",
                                     client=client, scheduler=scheduler, workers=workers, progress=progress)
    T = sum(x["trials"] for x in parts)
    tot = {k: np.sum([x[k] for x in parts], axis=0) for k in ("selected", "patients", "dlts")}
    cnt = {k: sum(x[k] for x in parts) for k in ("none", "cohorts", "decisions", "fallback", "low_ess")}
    a, b = INTERVALS
    flat = p.ravel()
    target, over = (flat >= a) & (flat < b), flat >= b
    sel = 100 * tot["selected"] / T
    npat = max(int(tot["patients"].sum()), 1)

    def grid(v):
        return tuple(tuple(float(x) for x in row) for row in np.asarray(v, float).reshape(p.shape))

    return CombinationOperatingCharacteristics(
        doses1=tuple(map(float, g1)), doses2=tuple(map(float, g2)), scenario=grid(p), trials=T,
        cohort_size=cohort_size, cohorts=cohorts, ewoc=ewoc, start=start, select_pct=grid(sel),
        patients=grid(tot["patients"] / T), dlts=grid(tot["dlts"] / T), stopped_pct=100 * cnt["none"] / T,
        target_select_pct=float(sel[target].sum()), overdose_select_pct=float(sel[over].sum()),
        target_patients_pct=100 * float(tot["patients"][target].sum()) / npat,
        overdose_patients_pct=100 * float(tot["patients"][over].sum()) / npat,
        mean_patients=float(tot["patients"].sum() / T), mean_dlts=float(tot["dlts"].sum() / T),
        mean_cohorts=cnt["cohorts"] / T, draws=draws, min_ess=min_ess,
        fallback_pct=100 * cnt["fallback"] / max(cnt["decisions"], 1),
        low_ess_pct=100 * cnt["low_ess"] / max(cnt["decisions"], 1), seconds=seconds,
    )
