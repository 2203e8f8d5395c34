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

:func:`combination_posterior` samples it with PyMC + nutpie through :func:`bayespk.design.blrm._compiled` and
:func:`bayespk.design.blrm._sample` (one compiled model per number of data rows and prior components; data
and prior parameters are ``pm.Data``). :func:`combination_ewoc` applies escalation with overdose control on a
grid of dose combinations: eligible combinations have ``P(pi_12 >= 0.33) < ewoc`` (0.25) and, with
``max_step``, each drug's dose at most ``max_step`` times the highest dose of that drug given so far; the
recommendation is the eligible combination with the largest ``P(0.16 <= pi_12 < 0.33)``.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from scipy.special import expit, log_expit

from bayespk.design.blrm import INTERVALS, BVNMixture, _compiled, _finite, _sample
from bayespk.design.escalation import DesignError

__all__ = [
    "CombinationData",
    "CombinationDecision",
    "CombinationPosterior",
    "combination_ewoc",
    "combination_posterior",
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

    from bayespk.design.blrm import _bvn_mixture_logp

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
    and ``eta`` (N,)."""

    data: CombinationData
    d_ref: tuple[float, float]
    priors: tuple[BVNMixture, BVNMixture]
    eta_prior: tuple[float, float]
    theta1: np.ndarray
    theta2: np.ndarray
    eta: np.ndarray
    settings: dict = field(default_factory=dict)

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
        rows = []
        for d1 in doses1:
            for d2 in doses2:
                p = self.pi(d1, d2)
                under, over = float((p < a).mean()), float((p >= b).mean())
                q = np.quantile(p, [0.025, 0.5, 0.975])
                rows.append({"d1": float(d1), "d2": float(d2), f"P(<{a:g})": under,
                             f"P({a:g}-{b:g})": 1 - under - over, f"P(>={b:g})": over, "mean": float(p.mean()),
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
    for name, v in (("draws", draws), ("tune", tune), ("chains", chains)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise DesignError(f"{name} = {v!r}: expected a whole number >= 1")
    rows = len(data.n)
    t0 = time.perf_counter()
    compiled = _compiled(("combination", rows, p1.n_components, p2.n_components),
                         lambda: _build_combination_model(rows, p1.n_components, p2.n_components))
    on1, on2 = (data.d1 > 0).astype(float), (data.d2 > 0).astype(float)
    x1 = np.where(on1 > 0, np.log(np.where(on1 > 0, data.d1, 1.0) / ref[0]), 0.0)
    x2 = np.where(on2 > 0, np.log(np.where(on2 > 0, data.d2, 1.0) / ref[1]), 0.0)
    values = dict(x1=x1, x2=x2, on1=on1, on2=on2, inter=data.d1 / ref[0] * data.d2 / ref[1], n=data.n, r=data.r,
                  eta_m=np.asarray(em), eta_s=np.asarray(es))
    for i, p in ((1, p1), (2, p2)):
        values.update({f"log_w{i}": np.log(np.maximum(p.weights, 1e-300)), f"m{i}": p.means, f"s{i}": p.sds,
                       f"rho{i}": p.corr})
    tree = _sample(compiled.with_data(**values), draws, tune, chains, seed, target_accept)
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
    intervals=INTERVALS,
) -> CombinationDecision:
    """Escalation with overdose control on the grid ``doses1 x doses2`` (see the module text). ``max_step``:
    each drug's dose at most this multiple of the highest dose of that drug given so far (None: no limit)."""
    ewoc = _finite("ewoc", ewoc)
    if not 0 < ewoc < 1:
        raise DesignError(f"ewoc = {ewoc:g}: the overdose-control bound must lie in (0, 1)")
    if max_step is not None and _finite("max_step", max_step) < 1:
        raise DesignError(f"max_step = {max_step:g}: the escalation step is a dose ratio >= 1")
    tab = posterior.table(doses1, doses2, intervals)
    a, b = intervals
    tab["ewoc_ok"] = tab[f"P(>={b:g})"] < ewoc
    given = posterior.data.n > 0
    top = [float(np.max(np.where(given, d, 0.0))) for d in (posterior.data.d1, posterior.data.d2)]
    if max_step is None:
        tab["step_ok"] = True
    else:
        tab["step_ok"] = [(d1 <= max_step * top[0] * (1 + 1e-12) or d1 == 0)
                          and (d2 <= max_step * top[1] * (1 + 1e-12) or d2 == 0)
                          for d1, d2 in zip(tab.d1, tab.d2)]
    tab["eligible"] = tab.ewoc_ok & tab.step_ok
    if not tab.eligible.any():
        return CombinationDecision(None, f"no combination within the step has P(pi >= {b:g}) < {ewoc:g}", tab)
    ok = tab[tab.eligible]
    col = f"P({a:g}-{b:g})"
    i = ok.index[np.flatnonzero(ok[col].to_numpy() == ok[col].max())[-1]]
    row = tab.loc[i]
    reason = (f"largest P({a:g} <= pi < {b:g}) = {row[col]:.3f} among combinations with P(pi >= {b:g}) < {ewoc:g}"
              + (f" and each dose <= {max_step:g} x the highest given" if max_step is not None else "")
              + f" (P(pi >= {b:g}) = {row[f'P(>={b:g})']:.3f})")
    return CombinationDecision((float(row.d1), float(row.d2)), reason, tab)
