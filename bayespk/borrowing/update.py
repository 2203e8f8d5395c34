"""Analytic posterior updating of mixture priors, decision rules and operating characteristics.

Updating a conjugate mixture prior ``sum_k w_k f_k`` with data ``D``:

* each component updates to its conjugate posterior ``f_k(. | D)``;
* each weight is re-weighted by that component's marginal likelihood
  ``m_k(D) = integral of p(D | theta) f_k(theta) dtheta``:
  ``w_k' = w_k m_k(D) / sum_j w_j m_j(D)``.

================ ==================== ======================================= ==========================
prior            data                 component posterior                     marginal likelihood m_k
================ ==================== ======================================= ==========================
Beta(a, b)       r responders of n    Beta(a + r, b + n - r)                  beta-binomial
Normal(m, s)     mean y, SE se        N((m/s^2 + y/se^2) / P, 1/sqrt(P)),     N(y | m, sqrt(s^2 + se^2))
                                      P = 1/s^2 + 1/se^2
Gamma(a, b)      y events, exposure E Gamma(a + y, b + E)                     negative binomial
================ ==================== ======================================= ==========================

This re-weighting is what makes a robust prior robust: when the data conflict
with the informative components, their marginal likelihoods are small and the
vague component takes over (Schmidli et al. 2014, Biometrics 70:1023).

Decision rules follow the usual dual-criterion layout of RBesT: a one-sample
rule ``P(theta > q) > c`` and a two-sample rule ``P(theta_1 - theta_2 > delta) > c``
(or the lower tails). Operating characteristics (type I error, power) are
frequencies of success over data simulated at fixed true values.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
import pandas as pd
from scipy import special, stats

from bayespk.borrowing.mixtures import BetaMixture, GammaMixture, Mixture, NormalMixture
from bayespk.errors import DataError, SpecError

__all__ = [
    "Decision1S",
    "Decision2S",
    "log_marginal",
    "oc_one_sample",
    "oc_two_sample",
    "posterior",
    "prob_difference",
    "prob_exceed",
]


# ====================================================================== updating
def _check_binomial(r, n) -> tuple[int, int]:
    for name, v in (("r", r), ("n", n)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) and not (
                isinstance(v, (float, np.floating)) and float(v).is_integer()):
            raise DataError(f"binomial data: {name} must be a whole number, got {v!r}")
    r, n = int(r), int(n)
    if n < 0 or r < 0 or r > n:
        raise DataError(f"binomial data: need 0 <= r <= n, got r={r}, n={n}")
    return r, n


def _normal_data(prior: NormalMixture, m, se, n) -> tuple[float, float]:
    if m is None:
        raise DataError("normal data: give the observed mean m= (and se= or n=)")
    if se is None:
        if n is None:
            raise DataError("normal data: give the standard error se= of the mean, or n= with the prior's sigma")
        if prior.sigma is None:
            raise DataError("normal data: n= needs the reference sigma (SD of one observation) on the prior; "
                            "give se= instead, or create the mixture with sigma=...")
        if not n > 0:
            raise DataError(f"normal data: n must be > 0, got {n!r}")
        se = prior.sigma / math.sqrt(n)
    if not (math.isfinite(float(m)) and float(se) > 0):
        raise DataError(f"normal data: need a finite mean and se > 0, got m={m!r}, se={se!r}")
    return float(m), float(se)


def _poisson_data(y, exposure) -> tuple[int, float]:
    if isinstance(y, bool) or not float(y).is_integer() or y < 0:
        raise DataError(f"Poisson data: y (the number of events) must be a whole number >= 0, got {y!r}")
    if not (exposure > 0 and math.isfinite(exposure)):
        raise DataError(f"Poisson data: exposure must be > 0, got {exposure!r}")
    return int(y), float(exposure)


def _component_log_marginal(prior: Mixture, *, r=None, n=None, m=None, se=None, y=None, exposure=1.0):
    """Per component: (log marginal likelihood, posterior p1, posterior p2)."""
    p1, p2 = prior._p1, prior._p2
    if isinstance(prior, BetaMixture):
        r, n = _check_binomial(r, n)
        lm = (special.betaln(p1 + r, p2 + n - r) - special.betaln(p1, p2)
              + special.gammaln(n + 1) - special.gammaln(r + 1) - special.gammaln(n - r + 1))
        return lm, p1 + r, p2 + n - r
    if isinstance(prior, GammaMixture):
        y, exposure = _poisson_data(y, exposure)
        lm = (special.gammaln(p1 + y) - special.gammaln(p1) - special.gammaln(y + 1)
              + p1 * np.log(p2) - (p1 + y) * np.log(p2 + exposure) + y * math.log(exposure))
        return lm, p1 + y, p2 + exposure
    if isinstance(prior, NormalMixture):
        m, se = _normal_data(prior, m, se, n)
        lm = stats.norm.logpdf(m, p1, np.sqrt(p2**2 + se**2))
        prec = 1 / p2**2 + 1 / se**2
        return lm, (p1 / p2**2 + m / se**2) / prec, 1 / np.sqrt(prec)
    raise SpecError(f"posterior: unsupported prior {type(prior).__name__}")


def posterior(prior: Mixture, *, r: int | None = None, n: float | None = None, m: float | None = None,
              se: float | None = None, y: int | None = None, exposure: float = 1.0) -> Mixture:
    """The posterior of a conjugate mixture prior, analytically.

    Parameters
    ----------
    prior : BetaMixture, NormalMixture or GammaMixture
    r, n : int
        Beta prior: ``r`` responders out of ``n``.
    m, se, n : float
        Normal prior: observed mean ``m`` with standard error ``se``, or with
        ``n`` observations (then ``se = sigma / sqrt(n)``, sigma the prior's reference scale).
    y, exposure : int, float
        Gamma prior: ``y`` events over ``exposure`` (default 1).

    Returns
    -------
    Mixture
        Same family; weights updated by each component's marginal likelihood.
        ``info["weights_prior"]`` keeps the prior weights for comparison.

    Examples
    --------
    >>> prior = BetaMixture([0.8, 0.2], a=[11, 1], b=[32, 1])
    >>> post = posterior(prior, r=1, n=6)
    >>> post.a.tolist(), post.b.tolist()
    ([12.0, 2.0], [37.0, 6.0])
    """
    lm, q1, q2 = _component_log_marginal(prior, r=r, n=n, m=m, se=se, y=y, exposure=exposure)
    with np.errstate(divide="ignore"):
        lw = np.log(prior.weights) + lm
    w = np.exp(lw - special.logsumexp(lw))
    out = prior._replace(w / w.sum(), q1, q2)
    out.info = {"weights_prior": prior.weights.tolist()}
    return out


def log_marginal(prior: Mixture, **data) -> float:
    """Log prior-predictive probability (density for normal data) of the data.

    Small values relative to other possible outcomes flag prior-data conflict
    (Box 1980). Takes the same data keywords as :func:`posterior`.

    Examples
    --------
    >>> round(math.exp(log_marginal(BetaMixture([1.0], [1.0], [1.0]), r=3, n=10)), 6)  # uniform: 1/(n+1)
    0.090909
    """
    lm, _, _ = _component_log_marginal(prior, **data)
    with np.errstate(divide="ignore"):
        return float(special.logsumexp(np.log(prior.weights) + lm))


# ====================================================================== probabilities
def prob_exceed(dist: Mixture, q: float, lower_tail: bool = False) -> float:
    """``P(theta > q)`` (or ``P(theta <= q)`` with ``lower_tail``)."""
    return float(dist.cdf(q)) if lower_tail else float(dist.sf(q))


@lru_cache(maxsize=4)
def _gl_nodes(n: int) -> tuple[np.ndarray, np.ndarray]:
    x, w = np.polynomial.legendre.leggauss(n)
    return (x + 1) / 2, w / 2


def _outer_nodes(dist: Mixture, n_nodes: int) -> tuple[np.ndarray, np.ndarray]:
    """Quadrature nodes (K, n) and weights (K, n) for E_dist[g] = sum(weights * g(nodes)).

    Per component: Gauss-Legendre on mean +- 12 SD (clipped to the support)
    with the component density as weight; on the component's quantile scale
    instead when a shape parameter is below 1 (unbounded density at an edge).
    """
    u, wu = _gl_nodes(n_nodes)
    comps = dist._components()
    k = dist.n_components
    unbounded = isinstance(dist, (BetaMixture, GammaMixture)) and (
        np.any(dist._p1 < 1) or (isinstance(dist, BetaMixture) and np.any(dist._p2 < 1)))
    if unbounded:
        t = comps.ppf(np.broadcast_to(u, (k, u.size)))
        return t, dist.weights[:, None] * wu[None, :]
    m, sd = np.ravel(comps.mean()), np.ravel(comps.std())
    lo = np.maximum(m - 12 * sd, dist.support[0])
    hi = np.minimum(m + 12 * sd, dist.support[1])
    t = lo[:, None] + (hi - lo)[:, None] * u[None, :]
    w = dist.weights[:, None] * comps.pdf(t) * (hi - lo)[:, None] * wu[None, :]
    return t, w


def prob_difference(dist1: Mixture, dist2: Mixture, delta: float = 0.0, lower_tail: bool = False,
                    n_nodes: int = 400) -> float:
    """``P(theta_1 - theta_2 > delta)`` for independent mixtures (``<=`` with ``lower_tail``).

    Written as ``E[ P(theta_1 > theta_2 + delta | theta_2) ]`` (or the mirror
    image), with the expectation over the *narrower* of the two distributions
    by Gauss-Legendre quadrature per component (see :func:`_outer_nodes`), so
    the inner probability is smooth across the nodes.

    Examples
    --------
    >>> a = BetaMixture([1.0], [15], [10]); b = BetaMixture([1.0], [5], [20])
    >>> round(prob_difference(a, b, 0.0), 4)
    0.9987
    """
    if not isinstance(dist1, Mixture) or not isinstance(dist2, Mixture):
        raise SpecError("prob_difference: both arguments must be mixtures")
    if dist2.sd() <= dist1.sd():
        t, w = _outer_nodes(dist2, n_nodes)
        p = dist1.sf(t + delta)  # P(theta_1 > theta_2 + delta | theta_2)
    else:
        t, w = _outer_nodes(dist1, n_nodes)
        p = dist2.cdf(t - delta)  # P(theta_2 < theta_1 - delta | theta_1)
    upper = min(max(float(np.sum(w * p)), 0.0), 1.0)
    return 1.0 - upper if lower_tail else upper


# ====================================================================== decisions
@dataclass(frozen=True)
class Decision1S:
    """One-sample rule: success if ``P(theta > q) > c`` (``P(theta <= q) > c`` with ``lower_tail``).

    Examples
    --------
    >>> rule = Decision1S(0.9, 0.3)
    >>> rule(BetaMixture([1.0], [20], [20]))
    True
    """

    c: float
    q: float
    lower_tail: bool = False

    def __post_init__(self):
        if not 0 < self.c < 1:
            raise SpecError(f"decision: the probability threshold c must lie in (0, 1), got {self.c!r}")

    def probability(self, post: Mixture) -> float:
        return prob_exceed(post, self.q, self.lower_tail)

    def __call__(self, post: Mixture) -> bool:
        return self.probability(post) > self.c

    def __str__(self) -> str:
        return f"P(theta {'<=' if self.lower_tail else '>'} {self.q:g}) > {self.c:g}"


@dataclass(frozen=True)
class Decision2S:
    """Two-sample rule: success if ``P(theta_1 - theta_2 > delta) > c`` (``<=`` with ``lower_tail``).

    ``theta_1`` is usually the treatment, ``theta_2`` the control.

    Examples
    --------
    >>> rule = Decision2S(0.95, 0.0)
    >>> rule(BetaMixture([1.0], [15], [10]), BetaMixture([1.0], [5], [20]))
    True
    """

    c: float
    delta: float = 0.0
    lower_tail: bool = False

    def __post_init__(self):
        if not 0 < self.c < 1:
            raise SpecError(f"decision: the probability threshold c must lie in (0, 1), got {self.c!r}")

    def probability(self, post1: Mixture, post2: Mixture) -> float:
        return prob_difference(post1, post2, self.delta, self.lower_tail)

    def __call__(self, post1: Mixture, post2: Mixture) -> bool:
        return self.probability(post1, post2) > self.c

    def __str__(self) -> str:
        return f"P(theta_1 - theta_2 {'<=' if self.lower_tail else '>'} {self.delta:g}) > {self.c:g}"


# ====================================================================== operating characteristics
def _simulate(prior: Mixture, theta: float, n: float, size: int, rng, sigma: float | None):
    """Data of one arm: returns a list of keyword dicts for :func:`posterior` and a hashable key per draw."""
    if isinstance(prior, BetaMixture):
        if not 0 <= theta <= 1:
            raise SpecError(f"operating characteristics: a response rate must lie in [0, 1], got {theta:g}")
        r = rng.binomial(int(n), theta, size=size)
        return r, lambda v: {"r": int(v), "n": int(n)}
    if isinstance(prior, GammaMixture):
        if theta < 0:
            raise SpecError(f"operating characteristics: a Poisson rate must be >= 0, got {theta:g}")
        y = rng.poisson(theta * n, size=size)
        return y, lambda v: {"y": int(v), "exposure": float(n)}
    sig = sigma if sigma is not None else prior.sigma  # type: ignore[attr-defined]
    if sig is None:
        raise SpecError("operating characteristics: normal data need the sampling SD of one observation; give "
                        "sigma=... or a prior with a reference sigma")
    se = sig / math.sqrt(n)
    m = rng.normal(theta, se, size=size)
    return m, lambda v: {"m": float(v), "se": se}


def _exact_outcomes(prior: Mixture, theta: float, n: float):
    """All outcomes with their probabilities (binomial only)."""
    r = np.arange(int(n) + 1)
    return r, stats.binom.pmf(r, int(n), theta)


def oc_one_sample(prior: Mixture, n: float, decision: Decision1S, theta, *, n_sim: int = 2000, seed: int = 0,
                  sigma: float | None = None, exact: bool = False) -> pd.DataFrame:
    """Frequency of success of a one-arm trial at each true value of ``theta``.

    Parameters
    ----------
    prior : Mixture
    n : float
        Sample size (patients; exposure for Poisson data).
    decision : Decision1S
    theta : array-like
        True values.
    n_sim : int
        Simulated trials per true value.
    sigma : float, optional
        Sampling SD of one observation for normal data (default: the prior's sigma).
    exact : bool
        Binomial data only: sum over every outcome instead of simulating.

    Returns
    -------
    DataFrame
        Columns ``theta, p_success, mc_se`` (Monte Carlo standard error; 0 when exact).
    """
    rng = np.random.default_rng(seed)
    cache: dict = {}
    rows = []
    for th in np.atleast_1d(np.asarray(theta, dtype=float)):
        if exact:
            if not isinstance(prior, BetaMixture):
                raise SpecError("operating characteristics: exact=True is available for binomial data only")
            outcomes, probs = _exact_outcomes(prior, th, n)
            def to_kw(v):
                return {"r": int(v), "n": int(n)}
        else:
            outcomes, to_kw = _simulate(prior, th, n, n_sim, rng, sigma)
            probs = None
        hits = np.empty(len(outcomes))
        for i, v in enumerate(outcomes):
            key = (float(v),) if not isinstance(prior, NormalMixture) else None
            if key is not None and key in cache:
                hits[i] = cache[key]
                continue
            hits[i] = float(decision(posterior(prior, **to_kw(v))))
            if key is not None:
                cache[key] = hits[i]
        if probs is not None:
            rows.append({"theta": th, "p_success": float(np.sum(probs * hits)), "mc_se": 0.0})
        else:
            p = float(hits.mean())
            rows.append({"theta": th, "p_success": p, "mc_se": math.sqrt(max(p * (1 - p), 1e-12) / len(hits))})
    return pd.DataFrame(rows)


def oc_two_sample(prior1: Mixture, prior2: Mixture, n1: float, n2: float, decision: Decision2S, theta1,
                  theta2, *, n_sim: int = 2000, seed: int = 0, sigma1: float | None = None,
                  sigma2: float | None = None, exact: bool = False) -> pd.DataFrame:
    """Frequency of success of a two-arm trial at pairs of true values.

    Type I error: evaluate at ``theta1 == theta2`` (no difference); power: at
    ``theta1 = theta2 + effect``. Decisions are cached per distinct outcome,
    so binomial and Poisson designs cost little even with many simulations.

    Parameters
    ----------
    prior1, prior2 : Mixture
        Priors of arm 1 (e.g. treatment) and arm 2 (e.g. control, a MAP prior).
    n1, n2 : float
        Sample sizes (exposures for Poisson data).
    decision : Decision2S
    theta1, theta2 : array-like
        True values, broadcast against each other.
    n_sim : int
        Simulated trials per pair of true values.
    exact : bool
        Binomial data only: sum over every pair of outcomes.

    Returns
    -------
    DataFrame
        Columns ``theta1, theta2, p_success, mc_se``.

    Examples
    --------
    >>> u = BetaMixture([1.0], [1], [1])
    >>> oc = oc_two_sample(u, u, 20, 20, Decision2S(0.975), [0.3], [0.3], exact=True)
    >>> bool(oc.p_success.iloc[0] < 0.05)
    True
    """
    if type(prior1) is not type(prior2):
        raise SpecError("operating characteristics: both arms need priors of the same family")
    t1, t2 = np.broadcast_arrays(np.atleast_1d(np.asarray(theta1, float)), np.atleast_1d(np.asarray(theta2, float)))
    rng = np.random.default_rng(seed)
    cache: dict = {}
    discrete = not isinstance(prior1, NormalMixture)
    rows = []
    for a, b in zip(t1, t2):
        if exact:
            if not isinstance(prior1, BetaMixture):
                raise SpecError("operating characteristics: exact=True is available for binomial data only")
            o1, p1 = _exact_outcomes(prior1, a, n1)
            o2, p2 = _exact_outcomes(prior2, b, n2)
            keep1, keep2 = p1 > 1e-12, p2 > 1e-12
            o1, p1, o2, p2 = o1[keep1], p1[keep1], o2[keep2], p2[keep2]
            total = 0.0
            for v1, q1 in zip(o1, p1):
                post1 = posterior(prior1, r=int(v1), n=int(n1))
                for v2, q2 in zip(o2, p2):
                    key = (int(v1), int(v2))
                    if key not in cache:
                        cache[key] = float(decision(post1, posterior(prior2, r=int(v2), n=int(n2))))
                    total += q1 * q2 * cache[key]
            rows.append({"theta1": a, "theta2": b, "p_success": total, "mc_se": 0.0})
            continue
        d1, kw1 = _simulate(prior1, a, n1, n_sim, rng, sigma1)
        d2, kw2 = _simulate(prior2, b, n2, n_sim, rng, sigma2)
        hits = np.empty(n_sim)
        posts1: dict = {}
        for i, (v1, v2) in enumerate(zip(d1, d2)):
            key = (float(v1), float(v2)) if discrete else None
            if key is not None and key in cache:
                hits[i] = cache[key]
                continue
            if discrete:
                if v1 not in posts1:
                    posts1[v1] = posterior(prior1, **kw1(v1))
                post1 = posts1[v1]
            else:
                post1 = posterior(prior1, **kw1(v1))
            hits[i] = float(decision(post1, posterior(prior2, **kw2(v2))))
            if key is not None:
                cache[key] = hits[i]
        p = float(hits.mean())
        rows.append({"theta1": a, "theta2": b, "p_success": p,
                     "mc_se": math.sqrt(max(p * (1 - p), 1e-12) / n_sim)})
    return pd.DataFrame(rows)
