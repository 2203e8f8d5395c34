"""Bayesian logistic regression model (BLRM) with escalation with overdose control (EWOC).

The single-agent model of Neuenschwander, Branson & Gsponer (2008, Stat Med 27:2420)::

    logit(pi_d) = log(alpha) + beta * log(d / d_ref),   beta = exp(log beta) > 0

with a prior on ``theta = (log alpha, log beta)`` that is a bivariate normal (means, SDs, correlation) or a
mixture of bivariate normals (:class:`BVNMixture`), so that a meta-analytic-predictive (MAP) prior, its
robustified version (a wide bivariate normal with a stated weight) or any other mixture can enter. ``alpha``
is the odds of a DLT at ``d_ref``; ``beta`` the slope on the log-dose scale.

* :func:`blrm_posterior` samples the posterior with PyMC + nutpie (:mod:`bayespk.sampling`). The model is
  compiled once per (number of dose levels, number of prior components): data and prior parameters are
  ``pm.Data`` containers, updated with ``compiled.with_data`` (and the compiled log-density is kept on disk
  by :func:`bayespk.compile_cache.compile_nutpie`), so a new cohort or another prior of the same shape does
  not compile again.
* :func:`ewoc_decision` turns the posterior into the next dose: among doses with ``P(pi_d >= 0.33) < 0.25``
  (overdose control; Neuenschwander et al. 2008; Babb et al. 1998 for EWOC) and not above the stated
  escalation step (default: at most doubling the reference dose of the step, the highest dose given so far),
  the one with the largest ``P(0.16 <= pi_d < 0.33)`` (the usual rule; ``rule="highest"``: the highest such
  dose). The interval probabilities are returned per dose.
* :func:`blrm_map_prior` turns historical dose-toxicity data (several studies) into a MAP prior for
  ``theta`` (Neuenschwander et al. 2016, Pharm Stat 15:123; the OncoBayes2 MAP vignette): a hierarchical BLRM
  ``theta_j ~ BVN(mu, diag(tau) R diag(tau))`` over studies, exchangeable, with a prior on the between-study
  SDs ``tau`` and a uniform prior on their correlation (LKJ(1) for 2 x 2); the MAP prior is the predictive of
  ``theta_new`` and is summarised by a :class:`BVNMixture` fitted by EM (:func:`fit_bvn_mixture`), which
  :meth:`BVNMixture.robustify` can robustify. With ``p_exch`` the studies are EXNEX instead (Neuenschwander et
  al. 2016): each is exchangeable with probability ``p_exch``, else it has its own weakly-informative prior, so
  a study that does not fit is down-weighted rather than widening ``tau``.

Intervals: under-dosing ``[0, 0.16)``, target ``[0.16, 0.33)``, over-dosing ``[0.33, 1]``
(Neuenschwander et al. 2008). Nothing here imports PyMC at module level.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from scipy.special import expit, logsumexp

from bayespk import sampling
from bayespk.design.escalation import DesignError

__all__ = [
    "INTERVALS",
    "BLRMMapPrior",
    "BLRMPosterior",
    "BVNMixture",
    "EwocDecision",
    "blrm_map_prior",
    "blrm_posterior",
    "check_doses",
    "ewoc_decision",
    "fit_bvn_mixture",
    "read_blrm_prior",
    "write_blrm_prior",
]

INTERVALS = (0.16, 0.33)  # under-dosing [0, 0.16), target [0.16, 0.33), over-dosing [0.33, 1]
_FORMAT = "bayespk-blrm-prior"


# ====================================================================== checks
def _finite(name: str, value) -> float:
    try:
        x = float(value)
    except (TypeError, ValueError):
        raise DesignError(f"{name} = {value!r}: expected a finite number") from None
    if isinstance(value, bool) or not math.isfinite(x):
        raise DesignError(f"{name} = {value!r}: expected a finite number")
    return x


def check_doses(doses, d_ref) -> tuple[np.ndarray, float]:
    """``(doses, d_ref)`` checked: doses positive and strictly increasing, ``d_ref > 0``."""
    d = [_finite(f"doses[{i + 1}]", v) for i, v in enumerate(np.atleast_1d(np.asarray(doses, dtype=object)))]
    if not d:
        raise DesignError("doses: give at least one dose")
    for i, v in enumerate(d):
        if v <= 0:
            raise DesignError(f"doses[{i + 1}] = {v:g}: doses must be positive")
        if i and v <= d[i - 1]:
            raise DesignError(
                f"doses[{i + 1}] = {v:g}: doses must be strictly increasing (after {d[i - 1]:g})"
            )
    d_ref = _finite("d_ref", d_ref)
    if d_ref <= 0:
        raise DesignError(f"d_ref = {d_ref:g}: the reference dose must be positive")
    return np.asarray(d, dtype=float), d_ref


def _check_counts(n_doses: int, n_treated, n_dlt) -> tuple[np.ndarray, np.ndarray]:
    n_treated, n_dlt = list(n_treated), list(n_dlt)
    if len(n_treated) != len(n_dlt):
        raise DesignError(f"treated has {len(n_treated)} value(s) and dlt {len(n_dlt)}: one of each per dose")
    if len(n_treated) > n_doses:
        raise DesignError(
            f"treated/dlt: {len(n_treated)} values for {n_doses} doses; give at most one per dose "
            "(doses after the last value count as untreated)"
        )
    n, y = [], []
    for i, (a, b) in enumerate(zip(n_treated, n_dlt)):
        for key, v, out in ((f"treated[dose {i + 1}]", a, n), (f"dlt[dose {i + 1}]", b, y)):
            x = _finite(key, v)
            if not x.is_integer() or x < 0:
                raise DesignError(f"{key} = {v!r}: expected a whole number >= 0")
            out.append(int(x))
        if y[-1] > n[-1]:
            raise DesignError(
                f"dose {i + 1}: {y[-1]} DLTs in {n[-1]} patients treated: more DLTs than patients"
            )
    pad = n_doses - len(n)
    return np.asarray(n + [0] * pad, dtype="int64"), np.asarray(y + [0] * pad, dtype="int64")


# ====================================================================== prior
@dataclass(frozen=True)
class BVNMixture:
    """A mixture of bivariate normal distributions on ``theta = (log alpha, log beta)``.

    ``weights`` (K,), ``means`` (K, 2), ``sds`` (K, 2), ``corr`` (K,). Checked on construction: weights >= 0
    summing to 1, SDs > 0, correlations in (-1, 1); errors name the key (``prior.sds[1][2]``, ...).

    Examples
    --------
    >>> p = BVNMixture.single((math.log(0.25 / 0.75), 0.0), (2.0, 1.0), 0.0)
    >>> p.n_components, p.mean().round(3).tolist()
    (1, [-1.099, 0.0])
    """

    weights: np.ndarray
    means: np.ndarray
    sds: np.ndarray
    corr: np.ndarray
    info: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        w = np.atleast_1d(np.asarray(self.weights, dtype=float))
        k = w.size
        m = np.asarray(self.means, dtype=float).reshape(-1, 2) if np.size(self.means) else np.zeros((0, 2))
        s = np.asarray(self.sds, dtype=float).reshape(-1, 2) if np.size(self.sds) else np.zeros((0, 2))
        r = np.atleast_1d(np.asarray(self.corr, dtype=float))
        if k == 0:
            raise DesignError("prior.weights: the mixture needs at least one component")
        for key, arr, shape in (("means", m, (k, 2)), ("sds", s, (k, 2)), ("corr", r, (k,))):
            if arr.shape != shape:
                raise DesignError(
                    f"prior.{key}: expected {'K pairs' if len(shape) == 2 else 'K values'} for "
                    f"K = {k} components (weights), got shape {arr.shape}"
                )
        for key, arr in (("weights", w), ("means", m), ("sds", s), ("corr", r)):
            bad = ~np.isfinite(arr)
            if bad.any():
                raise DesignError(f"prior.{key}: {arr[bad].ravel()[0]} is not a finite number")
        for i in range(k):
            if w[i] < 0:
                raise DesignError(f"prior.weights[{i + 1}] = {w[i]:g}: weights must be >= 0")
            for j, what in enumerate(("log alpha", "log beta")):
                if s[i, j] <= 0:
                    raise DesignError(
                        f"prior.sds[{i + 1}][{j + 1}] = {s[i, j]:g}: the SD of {what} must be > 0"
                    )
            if not -1.0 < r[i] < 1.0:
                raise DesignError(f"prior.corr[{i + 1}] = {r[i]:g}: the correlation must lie in (-1, 1)")
        if abs(w.sum() - 1.0) > 1e-6:
            raise DesignError(f"prior.weights: they sum to {w.sum():.6g}, not 1")
        object.__setattr__(self, "weights", w / w.sum())
        object.__setattr__(self, "means", m)
        object.__setattr__(self, "sds", s)
        object.__setattr__(self, "corr", r)

    # -------------------------------------------------------------- construction
    @classmethod
    def single(cls, mean, sd, corr: float = 0.0) -> BVNMixture:
        """One bivariate normal: ``mean = (m_log_alpha, m_log_beta)``, ``sd = (s1, s2)``, correlation."""
        return cls([1.0], [mean], [sd], [corr])

    @classmethod
    def from_covariances(cls, weights, means, covs) -> BVNMixture:
        covs = np.asarray(covs, dtype=float).reshape(-1, 2, 2)
        s = np.sqrt(np.stack([covs[:, 0, 0], covs[:, 1, 1]], axis=1))
        r = covs[:, 0, 1] / (s[:, 0] * s[:, 1])
        return cls(weights, means, s, r)

    # -------------------------------------------------------------- properties
    @property
    def n_components(self) -> int:
        return int(self.weights.size)

    def covariances(self) -> np.ndarray:
        """(K, 2, 2) covariance matrices."""
        s, r = self.sds, self.corr
        c = np.empty((self.n_components, 2, 2))
        c[:, 0, 0], c[:, 1, 1] = s[:, 0] ** 2, s[:, 1] ** 2
        c[:, 0, 1] = c[:, 1, 0] = r * s[:, 0] * s[:, 1]
        return c

    def mean(self) -> np.ndarray:
        return self.weights @ self.means

    def cov(self) -> np.ndarray:
        """Covariance of the mixture (law of total variance)."""
        mu = self.mean()
        d = self.means - mu
        return np.einsum("k,kij->ij", self.weights, self.covariances() + d[:, :, None] * d[:, None, :])

    def sd(self) -> np.ndarray:
        return np.sqrt(np.diag(self.cov()))

    def component_logpdf(self, x) -> np.ndarray:
        """(N, K) log densities of each component (without the weights) at points ``x`` (N, 2)."""
        x = np.asarray(x, dtype=float).reshape(-1, 2)
        z = (x[:, None, :] - self.means[None]) / self.sds[None]
        r = self.corr[None]
        q = (z[..., 0] ** 2 - 2 * r * z[..., 0] * z[..., 1] + z[..., 1] ** 2) / (1 - r**2)
        return -math.log(2 * math.pi) - np.log(self.sds).sum(axis=1)[None] - 0.5 * np.log1p(-(r**2)) - 0.5 * q

    def logpdf(self, x) -> np.ndarray:
        return logsumexp(self.component_logpdf(x) + np.log(self.weights)[None], axis=1)

    def sample(self, size: int, seed=None) -> np.ndarray:
        rng = np.random.default_rng(seed)
        k = rng.choice(self.n_components, size=size, p=self.weights)
        chol = np.linalg.cholesky(self.covariances())
        z = rng.standard_normal((size, 2))
        return self.means[k] + np.einsum("nij,nj->ni", chol[k], z)

    # -------------------------------------------------------------- robustification
    def robustify(self, weight: float, mean=None, sd=(2.0, 1.0), corr: float = 0.0) -> BVNMixture:
        """Add a wide bivariate normal with weight ``weight`` (the others scaled by ``1 - weight``).

        Default wide component: centred at the mixture mean, SDs 2 (log alpha) and 1 (log beta), no
        correlation: the weakly-informative prior of the OncoBayes2 single-agent example (SD 2 on the log-odds
        at the reference dose, SD 1 on the log-slope).
        """
        weight = _finite("weight", weight)
        if not 0.0 <= weight < 1.0:
            raise DesignError(f"weight = {weight:g}: the robust weight must lie in [0, 1)")
        m = (
            self.mean()
            if mean is None
            else np.asarray([_finite(f"mean[{i + 1}]", v) for i, v in enumerate(mean)])
        )
        vague = BVNMixture.single(m, sd, corr)  # checks sd and corr
        out = BVNMixture(
            np.append(self.weights * (1 - weight), weight),
            np.vstack([self.means, vague.means]),
            np.vstack([self.sds, vague.sds]),
            np.append(self.corr, vague.corr),
            info={
                **self.info,
                "robust": {
                    "weight": weight,
                    "mean": m.tolist(),
                    "sd": list(map(float, sd)),
                    "corr": float(corr),
                },
            },
        )
        return out

    # -------------------------------------------------------------- files
    def to_dict(self) -> dict:
        d = {
            "format": _FORMAT,
            "version": 1,
            "parameters": ["log_alpha", "log_beta"],
            "weights": self.weights.tolist(),
            "means": self.means.tolist(),
            "sds": self.sds.tolist(),
            "corr": self.corr.tolist(),
            "summary": {
                "mean": self.mean().tolist(),
                "sd": self.sd().tolist(),
                "corr": float(self.cov()[0, 1] / np.prod(self.sd())),
            },
        }
        if self.info:
            d["info"] = self.info
        return d

    @classmethod
    def from_dict(cls, d: dict, where: str = "prior") -> BVNMixture:
        """From :meth:`to_dict`'s layout, or the short form
        ``{"mean": [m1, m2], "sd": [s1, s2], "corr": r}``."""
        if not isinstance(d, dict):
            raise DesignError(f"{where}: expected a JSON object, got {type(d).__name__}")
        if "weights" in d:
            missing = [k for k in ("means", "sds", "corr") if k not in d]
            if missing:
                raise DesignError(
                    f"{where}: missing key(s) {', '.join(missing)} (a mixture needs weights, means, "
                    "sds, corr)"
                )
            return cls(d["weights"], d["means"], d["sds"], d["corr"], info=dict(d.get("info", {})))
        missing = [k for k in ("mean", "sd") if k not in d]
        if missing:
            raise DesignError(
                f"{where}: missing key(s) {', '.join(missing)}; give mean, sd (and corr) of "
                "(log alpha, log beta), or weights, means, sds, corr of a mixture"
            )
        for key in ("mean", "sd"):
            if not isinstance(d[key], (list, tuple)) or len(d[key]) != 2:
                raise DesignError(f"{where}: {key} must be a pair [log alpha, log beta], got {d[key]!r}")
        return cls.single(d["mean"], d["sd"], d.get("corr", 0.0))

    def __repr__(self) -> str:
        rows = ", ".join(
            f"{w:.3f} x BVN(({m[0]:.3f}, {m[1]:.3f}), sd ({s[0]:.3f}, {s[1]:.3f}), r {r:.3f})"
            for w, m, s, r in zip(self.weights, self.means, self.sds, self.corr)
        )
        return f"BVNMixture({rows})"


def write_blrm_prior(path, prior: BVNMixture) -> Path:
    path = Path(path)
    path.write_text(json.dumps(prior.to_dict(), indent=1) + "\n", encoding="utf-8")
    return path


def read_blrm_prior(path) -> BVNMixture:
    """A BLRM prior file (JSON; see :meth:`BVNMixture.from_dict`). Errors name the file and the key."""
    path = Path(path)
    if not path.is_file():
        raise DesignError(f"--prior {path}: no such file")
    try:
        d = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DesignError(f"--prior {path}: not a JSON file ({e})") from None
    if isinstance(d, dict) and d.get("format", _FORMAT) != _FORMAT:
        raise DesignError(f"--prior {path}: format {d.get('format')!r}, expected {_FORMAT!r}")
    return BVNMixture.from_dict(d, where=f"--prior {path}")


# ====================================================================== mixture fitting (EM)
def _em(x, k, resp, max_iter=500, tol=1e-8):
    n = len(x)
    ll_old = -np.inf
    floor = 1e-4 * np.cov(x.T)
    for _ in range(max_iter):
        nk = resp.sum(axis=0) + 1e-300
        w = nk / n
        mu = (resp.T @ x) / nk[:, None]
        d = x[:, None, :] - mu[None]
        cov = np.einsum("nk,nki,nkj->kij", resp, d, d) / nk[:, None, None] + floor[None]
        try:
            mix = BVNMixture.from_covariances(w, mu, cov)
        except DesignError:
            return None, -np.inf
        lp = mix.component_logpdf(x) + np.log(np.maximum(w, 1e-300))[None]
        ll_i = logsumexp(lp, axis=1)
        ll = float(ll_i.sum())
        resp = np.exp(lp - ll_i[:, None])
        if ll - ll_old < tol * abs(ll):
            break
        ll_old = ll
    return mix, ll


def fit_bvn_mixture(
    draws, n_components: int | None = None, max_components: int = 4, seed: int = 0, penalty: float = 6.0
) -> BVNMixture:
    """A mixture of bivariate normals fitted by EM to ``draws`` (N, 2).

    ``n_components`` fixed, or chosen among 1..max_components by ``-2 log L + penalty x (parameters)`` with
    ``penalty = 6`` (the criterion of RBesT's ``automixfit``, which OncoBayes2 uses for its MAP priors). Two
    starts per K: a split of the draws sorted by their first principal component, and a random soft
    assignment; components with fewer than max(5, 0.5%) of the draws are not kept.
    """
    x = np.asarray(draws, dtype=float).reshape(-1, 2)
    if len(x) < 20:
        raise DesignError(f"draws: {len(x)} rows; at least 20 are needed to fit a mixture")
    rng = np.random.default_rng(seed)
    ks = [int(n_components)] if n_components else list(range(1, int(max_components) + 1))
    best = None
    pc = (x - x.mean(0)) @ np.linalg.eigh(np.cov(x.T))[1][:, -1]
    order = np.argsort(pc)
    for k in ks:
        fits = []
        starts = []
        r1 = np.zeros((len(x), k))
        r1[order, np.minimum(np.arange(len(x)) * k // len(x), k - 1)] = 1.0
        starts.append(r1)
        if k > 1:
            r2 = rng.dirichlet(np.ones(k), size=len(x))
            starts.append(r2)
        for r in starts:
            mix, ll = _em(x, k, r)
            if mix is None or (k > 1 and mix.weights.min() * len(x) < max(5, 0.005 * len(x))):
                continue
            fits.append((ll, mix))
        if not fits:
            continue
        ll, mix = max(fits, key=lambda t: t[0])
        crit = -2 * ll + penalty * (6 * k - 1)
        if best is None or crit < best[0]:
            best = (crit, mix, ll)
    if best is None:
        raise DesignError("draws: no mixture could be fitted")
    _, mix, ll = best
    return BVNMixture(mix.weights, mix.means, mix.sds, mix.corr, info={"loglik": ll, "draws": len(x)})


# ====================================================================== single-trial posterior
def _bvn_mixture_logp(theta, logw, m, s, rho):
    """PyTensor log density (up to a constant) at ``theta`` (2,) of the BVN mixture with log weights ``logw``
    (K,), means ``m`` (K, 2), SDs ``s`` (K, 2) and correlations ``rho`` (K,)."""
    import pymc as pm
    import pytensor.tensor as pt

    z0 = (theta[0] - m[:, 0]) / s[:, 0]
    z1 = (theta[1] - m[:, 1]) / s[:, 1]
    q = (z0**2 - 2 * rho * z0 * z1 + z1**2) / (1 - rho**2)
    lp = logw - pt.log(s[:, 0]) - pt.log(s[:, 1]) - 0.5 * pt.log1p(-(rho**2)) - 0.5 * q
    return pm.math.logsumexp(lp)


def _build_blrm_model(n_doses: int, k: int):
    import pymc as pm
    import pytensor.tensor as pt

    with pm.Model() as model:
        x = pm.Data("x", np.zeros(n_doses))
        n = pm.Data("n", np.zeros(n_doses, dtype="int64"))
        r = pm.Data("r", np.zeros(n_doses, dtype="int64"))
        logw = pm.Data("log_w", np.zeros(k))
        m = pm.Data("m", np.zeros((k, 2)))
        s = pm.Data("s", np.ones((k, 2)))
        rho = pm.Data("rho", np.zeros(k))
        theta = pm.Flat("theta", shape=2)  # (log alpha, log beta); the prior is the potential below
        pm.Potential("prior", _bvn_mixture_logp(theta, logw, m, s, rho))
        pm.Binomial("dlt", n=n, logit_p=theta[0] + pt.exp(theta[1]) * x, observed=r)
    return model


@dataclass
class BLRMPosterior:
    """The BLRM posterior: ``theta`` draws (chains, draws, 2) of (log alpha, log beta), the doses and data.

    :meth:`table` gives per dose the interval probabilities and the posterior mean, SD and quantiles of
    ``pi_d``.
    """

    doses: np.ndarray
    d_ref: float
    n: np.ndarray
    r: np.ndarray
    prior: BVNMixture
    theta: np.ndarray
    settings: dict = field(default_factory=dict)

    @property
    def draws(self) -> np.ndarray:
        """(N, 2) draws of (log alpha, log beta), chains stacked."""
        return self.theta.reshape(-1, 2)

    def pi(self, doses=None) -> np.ndarray:
        """(chains, draws, doses) draws of ``pi_d``."""
        d = self.doses if doses is None else np.asarray(doses, dtype=float)
        x = np.log(d / self.d_ref)
        return expit(self.theta[..., 0:1] + np.exp(self.theta[..., 1:2]) * x)

    def interval_probs(self, intervals=INTERVALS) -> np.ndarray:
        """(doses, 3): P(pi_d < a), P(a <= pi_d < b), P(pi_d >= b) for ``intervals = (a, b)``."""
        p = self.pi().reshape(-1, len(self.doses))
        a, b = intervals
        under = (p < a).mean(0)
        over = (p >= b).mean(0)
        return np.stack([under, 1 - under - over, over], axis=1)

    def table(self, intervals=INTERVALS, probs=(0.025, 0.5, 0.975)):
        import pandas as pd

        p = self.pi().reshape(-1, len(self.doses))
        ip = self.interval_probs(intervals)
        a, b = intervals
        out = pd.DataFrame(
            {
                "dose": self.doses,
                "treated": self.n,
                "dlt": self.r,
                f"P(<{a:g})": ip[:, 0],
                f"P({a:g}-{b:g})": ip[:, 1],
                f"P(>={b:g})": ip[:, 2],
                "mean": p.mean(0),
                "sd": p.std(0, ddof=1),
            }
        )
        for q, v in zip(probs, np.quantile(p, probs, axis=0)):
            out[f"q{100 * q:g}"] = v
        return out

    def diagnostics(self) -> dict:
        return dict(self.settings)


def blrm_posterior(
    doses,
    d_ref: float,
    n_treated=(),
    n_dlt=(),
    prior: BVNMixture | dict | None = None,
    *,
    draws: int = 2000,
    tune: int = 1000,
    chains: int = 4,
    seed: int = 0,
    target_accept: float = 0.9,
) -> BLRMPosterior:
    """Posterior of the single-agent BLRM for cohort data, by NUTS (nutpie).

    Parameters
    ----------
    doses : sequence of float
        The dose levels, positive and strictly increasing.
    d_ref : float
        Reference dose (``alpha`` is the odds of a DLT at ``d_ref``).
    n_treated, n_dlt : sequence of int
        Patients and DLTs at each dose, lowest first; doses after the last value are untreated.
    prior : BVNMixture or dict
        Prior of ``(log alpha, log beta)``. Default: the OncoBayes2 single-agent example's weakly-informative
        prior, ``BVN((logit 0.5, log 1), diag(2^2, 1^2))``.
    draws, tune, chains, seed, target_accept
        nutpie settings.

    Examples
    --------
    >>> post = blrm_posterior([1, 2.5, 5, 10, 25], 25, [3, 4, 5, 4, 2], [0, 0, 0, 0, 2])  # doctest: +SKIP
    >>> post.table()  # doctest: +SKIP
    """

    d, d_ref = check_doses(doses, d_ref)
    n, r = _check_counts(len(d), n_treated, n_dlt)
    if prior is None:
        prior = BVNMixture.single((0.0, 0.0), (2.0, 1.0), 0.0)
    elif isinstance(prior, dict):
        prior = BVNMixture.from_dict(prior)
    for name, v in (("draws", draws), ("tune", tune), ("chains", chains)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise DesignError(f"{name} = {v!r}: expected a whole number >= 1")
    t0 = time.perf_counter()
    compiled = sampling.compile_model(key=("blrm", len(d), prior.n_components),
                                      build=lambda: _build_blrm_model(len(d), prior.n_components))
    t1 = time.perf_counter()
    compiled = compiled.with_data(
        x=np.log(d / d_ref),
        n=n,
        r=r,
        log_w=np.log(np.maximum(prior.weights, 1e-300)),
        m=prior.means,
        s=prior.sds,
        rho=prior.corr,
    )
    tree = sampling.sample(compiled, draws=draws, tune=tune, chains=chains, seed=seed, target_accept=target_accept)
    theta = np.asarray(tree.posterior["theta"].values)
    stats = tree.sample_stats
    settings = {
        "draws": draws,
        "tune": tune,
        "chains": chains,
        "seed": seed,
        "target_accept": target_accept,
        "divergences": int(stats["diverging"].values.sum()) if "diverging" in stats else 0,
        "compile_seconds": round(t1 - t0, 3),
        "wall_seconds": round(time.perf_counter() - t0, 3),
    }
    return BLRMPosterior(d, d_ref, n, r, prior, theta, settings)


# ====================================================================== EWOC decision
@dataclass(frozen=True)
class EwocDecision:
    """The next dose under escalation with overdose control.

    ``dose`` (the dose value; None: no dose is acceptable, stop), ``level`` (1-based), ``eligible`` (per
    dose: passes overdose control and the escalation step), ``table`` (a DataFrame of interval probabilities
    and pi_d summaries per dose), ``reason``.
    """

    dose: float | None
    level: int | None
    eligible: tuple[bool, ...]
    reason: str
    table: Any
    ewoc: float
    max_step: float | None
    rule: str

    def __str__(self) -> str:
        head = (
            "stop: no dose is acceptable"
            if self.dose is None
            else f"next dose {self.dose:g} (level {self.level})"
        )
        return f"{head}: {self.reason}"


def ewoc_decision(
    posterior: BLRMPosterior,
    *,
    ewoc: float = 0.25,
    max_step: float | None = 2.0,
    current: float | None = None,
    rule: str = "target",
    intervals=INTERVALS,
) -> EwocDecision:
    """The next dose by escalation with overdose control.

    A dose is eligible when ``P(pi_d >= intervals[1]) < ewoc`` (overdose control) and ``d <= max_step x
    d_step`` (``d_step``: ``current`` if given, else the highest dose given so far; no step limit before any
    patient is treated and ``current`` is not given; ``max_step=None``: none). Among eligible doses,
    ``rule="target"`` picks the largest ``P(intervals[0] <= pi_d < intervals[1])`` (ties: the higher dose),
    ``rule="highest"`` the highest eligible dose.
    """
    ewoc = _finite("ewoc", ewoc)
    if not 0.0 < ewoc < 1.0:
        raise DesignError(f"ewoc = {ewoc:g}: the overdose-control bound must lie in (0, 1)")
    if max_step is not None:
        max_step = _finite("max_step", max_step)
        if max_step < 1.0:
            raise DesignError(
                f"max_step = {max_step:g}: the escalation step is a dose ratio >= 1 (2 = at most doubling)"
            )
    if rule not in ("target", "highest"):
        raise DesignError(f"rule = {rule!r}: expected 'target' or 'highest'")
    d = posterior.doses
    if current is not None:
        current = _finite("current", current)
        if not np.any(np.isclose(d, current)):
            raise DesignError(
                f"current = {current:g}: not one of the doses ({', '.join(f'{v:g}' for v in d)})"
            )
    tab = posterior.table(intervals)
    ip = posterior.interval_probs(intervals)
    safe = ip[:, 2] < ewoc
    treated = posterior.n > 0
    d_step = current if current is not None else (float(d[treated].max()) if treated.any() else None)
    if max_step is None or d_step is None:
        step_ok = np.ones(len(d), dtype=bool)
    else:
        step_ok = d <= max_step * d_step * (1 + 1e-12)
    elig = safe & step_ok
    tab["ewoc_ok"] = safe
    tab["step_ok"] = step_ok
    tab["eligible"] = elig
    a, b = intervals
    if not elig.any():
        reason = (
            f"every dose has P(pi >= {b:g}) >= {ewoc:g}"
            if not safe.any()
            else f"no dose within the escalation step passes overdose control (P(pi >= {b:g}) < {ewoc:g})"
        )
        return EwocDecision(None, None, tuple(bool(v) for v in elig), reason, tab, ewoc, max_step, rule)
    idx = np.flatnonzero(elig)
    if rule == "target":
        i = int(idx[np.flatnonzero(ip[idx, 1] == ip[idx, 1].max())[-1]])
        reason = (
            f"largest P({a:g} <= pi < {b:g}) = {ip[i, 1]:.3f} among doses with P(pi >= {b:g}) < {ewoc:g}"
            + (f" and <= {max_step:g} x {d_step:g}" if max_step is not None and d_step is not None else "")
            + f" (P(pi >= {b:g}) = {ip[i, 2]:.3f})"
        )
    else:
        i = int(idx[-1])
        reason = f"highest dose with P(pi >= {b:g}) = {ip[i, 2]:.3f} < {ewoc:g}" + (
            f" and <= {max_step:g} x {d_step:g}" if max_step is not None and d_step is not None else ""
        )
    return EwocDecision(float(d[i]), i + 1, tuple(bool(v) for v in elig), reason, tab, ewoc, max_step, rule)


# ====================================================================== MAP prior from historical data
def _tau_default(which: str):
    from bayespk.model.priors import Prior

    # OncoBayes2 MAP vignette, heterogeneity table: "moderate" tau_alpha = 0.25, tau_beta = 0.125 (medians of
    # log-normal priors), log-SD log(2)/1.96 as in its "substantial" example.
    median = 0.25 if which == "alpha" else 0.125
    return Prior("LogNormal", mu=math.log(median), sigma=math.log(2) / 1.96)


def _check_history(data, d_ref):
    import pandas as pd

    if not isinstance(data, pd.DataFrame):
        path = Path(data)
        if not path.is_file():
            raise DesignError(f"{path}: no such file")
        data = pd.read_csv(path, skipinitialspace=True)
        where = str(path)
    else:
        where = "historical data"
    data = data.rename(columns=lambda c: str(c).strip().lower())
    missing = [c for c in ("study", "dose", "n", "r") if c not in data.columns]
    if missing:
        raise DesignError(f"{where}: missing column(s) {', '.join(missing)}; needs study, dose, n, r")
    if len(data) == 0:
        raise DesignError(f"{where}: no rows")
    d_ref = _finite("d_ref", d_ref)
    if d_ref <= 0:
        raise DesignError(f"d_ref = {d_ref:g}: the reference dose must be positive")
    out = pd.DataFrame({"study": data["study"].astype(str)})
    for col in ("dose", "n", "r"):
        v = pd.to_numeric(data[col], errors="coerce")
        bad = v.isna() | ~np.isfinite(v.astype(float))
        if bad.any():
            i = int(np.argmax(bad.to_numpy()))
            raise DesignError(
                f"{where}: row {i + 1}, column {col}: {data[col].iloc[i]!r} is not a finite number"
            )
        out[col] = v.astype(float)
    for i, row in out.iterrows():
        if row.dose <= 0:
            raise DesignError(f"{where}: row {i + 1}, column dose: {row.dose:g} must be positive")
        for col in ("n", "r"):
            if not float(row[col]).is_integer() or row[col] < 0:
                raise DesignError(
                    f"{where}: row {i + 1}, column {col}: {row[col]:g} is not a whole number >= 0"
                )
        if row.r > row.n:
            raise DesignError(f"{where}: row {i + 1}, column r: {row.r:g} DLTs > n = {row.n:g} patients")
    out["n"] = out.n.astype("int64")
    out["r"] = out.r.astype("int64")
    return out, d_ref


def _build_map_model(n_rows: int, n_studies: int, tau_a, tau_b, exnex: bool = False):
    import pymc as pm
    import pytensor.tensor as pt

    with pm.Model() as model:
        x = pm.Data("x", np.zeros(n_rows))
        n = pm.Data("n", np.zeros(n_rows, dtype="int64"))
        r = pm.Data("r", np.zeros(n_rows, dtype="int64"))
        study = pm.Data("study", np.zeros(n_rows, dtype="int64"))
        mu_m = pm.Data("mu_m", np.zeros(2))
        mu_chol = pm.Data("mu_chol", np.eye(2))
        mu_z = pm.Normal("mu_z", 0.0, 1.0, shape=2)
        mu = pm.Deterministic("mu", mu_m + pt.dot(mu_chol, mu_z))
        ta = tau_a.create("tau_alpha")
        tb = tau_b.create("tau_beta")
        rho = pm.Uniform("rho", -1.0, 1.0)  # LKJ(1) on a 2 x 2 correlation matrix: uniform correlation
        z = pm.Normal("z", 0.0, 1.0, shape=(n_studies, 2))
        la = mu[0] + ta * z[:, 0]
        lb = mu[1] + tb * (rho * z[:, 0] + pt.sqrt(1 - rho**2) * z[:, 1])
        pm.Deterministic("theta_study", pt.stack([la, lb], axis=1))
        if not exnex:
            pm.Binomial("dlt", n=n, logit_p=la[study] + pt.exp(lb[study]) * x, observed=r)
            return model
        # EXNEX (Neuenschwander et al. 2016): study j is exchangeable (theta_study) with probability p_exch[j],
        # else it has its own parameters theta_nex[j] ~ the non-exchangeable prior; the binary choice is
        # summed out per study (the binomial coefficient, common to both, is left out).
        p_exch = pm.Data("p_exch", np.full(n_studies, 0.5))
        onehot = pm.Data("onehot", np.zeros((n_studies, n_rows)))
        nex_m = pm.Data("nex_m", np.zeros(2))
        nex_chol = pm.Data("nex_chol", np.eye(2))
        z_nex = pm.Normal("z_nex", 0.0, 1.0, shape=(n_studies, 2))
        theta_nex = pm.Deterministic("theta_nex", nex_m[None, :] + pt.dot(z_nex, nex_chol.T))

        def row_loglik(a, b):
            eta = a[study] + pt.exp(b[study]) * x
            return r * -pm.math.log1pexp(-eta) + (n - r) * -pm.math.log1pexp(eta)

        ll_ex = pt.dot(onehot, row_loglik(la, lb)) + pt.log(p_exch)
        ll_nex = pt.dot(onehot, row_loglik(theta_nex[:, 0], theta_nex[:, 1])) + pt.log1p(-p_exch)
        pm.Potential("likelihood", pm.math.logaddexp(ll_ex, ll_nex).sum())
        pm.Deterministic("w_exch", pm.math.sigmoid(ll_ex - ll_nex))  # P(study j exchangeable | parameters)
    return model


@dataclass
class BLRMMapPrior:
    """A fitted hierarchical BLRM over historical studies and its MAP prior for a new study.

    ``sample``: (N, 2) draws of ``theta_new = (log alpha, log beta)``; :meth:`mixture` summarises them as a
    :class:`BVNMixture` (robustify it with :meth:`BVNMixture.robustify`).
    """

    data: Any
    d_ref: float
    posterior: Any
    sample: np.ndarray
    settings: dict
    _mixture: BVNMixture | None = None

    def mixture(self, n_components: int | None = None, max_components: int = 4, seed: int = 0) -> BVNMixture:
        if n_components is None and max_components == 4 and self._mixture is not None:
            return self._mixture
        mix = fit_bvn_mixture(self.sample, n_components, max_components, seed)
        mix.info.update(
            {
                "source": "MAP (hierarchical BLRM)",
                "d_ref": self.d_ref,
                "studies": sorted(set(self.data.study)),
            }
        )
        if n_components is None and max_components == 4:
            self._mixture = mix
        return mix

    def summary(self) -> dict:
        post = self.posterior
        out = {
            "map_mean": self.sample.mean(0).tolist(),
            "map_sd": self.sample.std(0, ddof=1).tolist(),
            "map_corr": float(np.corrcoef(self.sample.T)[0, 1]),
        }
        for v in ("tau_alpha", "tau_beta", "rho"):
            out[f"{v}_mean"] = float(post[v].values.mean())
        out["mu_mean"] = post["mu"].values.reshape(-1, 2).mean(0).tolist()
        if "w_exch" in post:
            studies = sorted(set(self.data.study))
            w = post["w_exch"].values.reshape(-1, len(studies)).mean(0)
            out["p_exch_posterior"] = dict(zip(studies, w.tolist()))
        return out


def blrm_map_prior(
    data,
    d_ref: float,
    *,
    mu_prior: BVNMixture | None = None,
    tau_alpha=None,
    tau_beta=None,
    p_exch=None,
    nex_prior: BVNMixture | dict | None = None,
    draws: int = 2000,
    tune: int = 1000,
    chains: int = 4,
    seed: int = 0,
    target_accept: float = 0.95,
) -> BLRMMapPrior:
    """MAP prior of ``(log alpha, log beta)`` from historical dose-toxicity data.

    The hierarchical BLRM (Neuenschwander et al. 2016; as OncoBayes2's ``blrm_exnex`` with full
    exchangeability and ``sample_map = TRUE``): for study ``j`` and dose ``d``,
    ``r_jd ~ Binomial(n_jd, pi_jd)``, ``logit(pi_jd) = log alpha_j + beta_j log(d / d_ref)``,
    ``(log alpha_j, log beta_j) ~ BVN(mu, diag(tau) R diag(tau))``, ``mu ~ mu_prior`` (one bivariate normal),
    ``tau_alpha``, ``tau_beta`` with their own priors (:class:`bayespk.Prior`, positive; default log-normal
    with medians 0.25 and 0.125, "moderate" heterogeneity of the OncoBayes2 MAP vignette, log-SD
    log(2)/1.96), correlation uniform on (-1, 1). Study effects are non-centred. The MAP prior is the
    predictive ``theta_new = mu + diag(tau) L_R z``, ``z ~ N(0, I)``, one draw per posterior draw.

    Parameters
    ----------
    data : DataFrame or CSV path
        Columns ``study, dose, n, r`` (one row per study and dose).
    d_ref : float
        Reference dose of the new study's model.
    mu_prior : BVNMixture (one component)
        Prior of ``mu``; default ``BVN((logit 0.5, 0), diag(2^2, 1^2))``.
    p_exch : float or sequence of float, optional
        EXNEX (Neuenschwander, Wandel, Roychoudhury & Bailey 2016, Pharm Stat 15:123; OncoBayes2's
        ``prior_EX_prob``): each historical study is exchangeable with probability ``p_exch`` (one value, or
        one per study in sorted study order), else its ``theta_j`` has its own non-exchangeable prior
        ``nex_prior``; the exchangeability indicator is summed out. Only the exchangeable part (``mu``,
        ``tau``, ``rho``) makes the MAP prior, so a study that does not fit is down-weighted instead of
        widening ``tau``. ``summary()`` then reports each study's posterior probability of exchangeability.
        Default None: full exchangeability (the model above).
    nex_prior : BVNMixture (one component), optional
        The non-exchangeable prior of a study's ``theta_j``; default ``BVN((logit 0.5, 0), diag(2^2, 1^2))``,
        weakly informative.
    """
    from bayespk.model.priors import Prior

    hist, d_ref = _check_history(data, d_ref)
    mu_prior = BVNMixture.single((0.0, 0.0), (2.0, 1.0), 0.0) if mu_prior is None else mu_prior
    if isinstance(mu_prior, dict):
        mu_prior = BVNMixture.from_dict(mu_prior, "mu_prior")
    if mu_prior.n_components != 1:
        raise DesignError("mu_prior: give one bivariate normal (a mixture is not supported for mu)")
    taus = []
    for name, p, which in (("tau_alpha", tau_alpha, "alpha"), ("tau_beta", tau_beta, "beta")):
        p = _tau_default(which) if p is None else (Prior.from_dict(p, name) if isinstance(p, dict) else p)
        if not isinstance(p, Prior) or p.support != "positive":
            raise DesignError(
                f"{name}: the between-study SD needs a positive prior (LogNormal, HalfNormal, ...), got {p!r}"
            )
        taus.append(p)
    studies = sorted(set(hist.study))
    idx = hist.study.map({s: i for i, s in enumerate(studies)}).to_numpy("int64")
    exnex = p_exch is not None
    extra = {}
    if exnex:
        pe = np.atleast_1d(np.asarray([_finite("p_exch", v) for v in np.atleast_1d(p_exch)], dtype=float))
        if pe.size == 1:
            pe = np.full(len(studies), pe[0])
        if pe.size != len(studies):
            raise DesignError(
                f"p_exch: {pe.size} values for {len(studies)} studies; give one, or one per study "
                f"({', '.join(studies)})"
            )
        for s_name, v in zip(studies, pe):
            if not 0.0 < v <= 1.0:
                raise DesignError(f"p_exch[{s_name}] = {v:g}: a probability in (0, 1] is needed")
        nex = BVNMixture.single((0.0, 0.0), (2.0, 1.0), 0.0) if nex_prior is None else nex_prior
        if isinstance(nex, dict):
            nex = BVNMixture.from_dict(nex, "nex_prior")
        if nex.n_components != 1:
            raise DesignError("nex_prior: give one bivariate normal (a mixture is not supported)")
        onehot = np.zeros((len(studies), len(hist)))
        onehot[idx, np.arange(len(hist))] = 1.0
        extra = dict(p_exch=np.minimum(pe, 1 - 1e-12), onehot=onehot, nex_m=nex.means[0],
                     nex_chol=np.linalg.cholesky(nex.covariances()[0]))
    key = ("blrm map", len(hist), len(studies), taus[0], taus[1]) + (("exnex",) if exnex else ())
    t0 = time.perf_counter()
    compiled = sampling.compile_model(
        key=key, build=lambda: _build_map_model(len(hist), len(studies), taus[0], taus[1], exnex)
    ).with_data(
        x=np.log(hist.dose.to_numpy(float) / d_ref),
        n=hist.n.to_numpy("int64"),
        r=hist.r.to_numpy("int64"),
        study=idx,
        mu_m=mu_prior.means[0],
        mu_chol=np.linalg.cholesky(mu_prior.covariances()[0]),
        **extra,
    )
    tree = sampling.sample(compiled, draws=draws, tune=tune, chains=chains, seed=seed, target_accept=target_accept)
    post = tree.posterior
    rng = np.random.default_rng([seed, 7])
    mu = post["mu"].values.reshape(-1, 2)
    ta = post["tau_alpha"].values.ravel()
    tb = post["tau_beta"].values.ravel()
    rho = post["rho"].values.ravel()
    z = rng.standard_normal((len(mu), 2))
    sample = np.stack(
        [mu[:, 0] + ta * z[:, 0], mu[:, 1] + tb * (rho * z[:, 0] + np.sqrt(1 - rho**2) * z[:, 1])], axis=1
    )
    stats = tree.sample_stats
    settings = {
        "draws": draws,
        "tune": tune,
        "chains": chains,
        "seed": seed,
        "target_accept": target_accept,
        "divergences": int(stats["diverging"].values.sum()) if "diverging" in stats else 0,
        "wall_seconds": round(time.perf_counter() - t0, 3),
    }
    names = ["mu", "tau_alpha", "tau_beta", "rho", "theta_study"] + (["w_exch", "theta_nex"] if exnex else [])
    keep = post.to_dataset()[names]
    if exnex:
        settings["p_exch"] = dict(zip(studies, extra["p_exch"].tolist()))
    return BLRMMapPrior(hist, d_ref, keep, sample, settings)
