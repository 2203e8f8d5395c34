"""Mixtures of conjugate distributions: beta, normal and gamma.

A prior that is a weighted sum of conjugate components keeps the analytic
convenience of a conjugate prior: updated with binomial, normal (known
standard error) or Poisson data, each component updates in closed form and the
weights are re-weighted by each component's marginal likelihood (see
:mod:`bayespk.borrowing.update`). Any smooth unimodal or multimodal prior on a
rate, a mean or a probability can be approximated this way to good accuracy
with a handful of components, which is how a meta-analytic-predictive (MAP)
prior, known only as an MCMC sample, becomes a prior that can be written down,
reported and used (Schmidli et al. 2014, Biometrics 70:1023).

* :class:`BetaMixture`: Beta(a, b) components, a prior for a probability
  (binomial data: r responders of n);
* :class:`NormalMixture`: Normal(m, s) components and a reference sigma (the
  SD of one observation), a prior for a mean (normal data with known SE);
* :class:`GammaMixture`: Gamma(shape a, **rate** b) components, a prior for a
  Poisson rate (events over an exposure).

:func:`fit_mixture` approximates a sample by expectation-maximisation (EM)
with weighted maximum-likelihood M-steps and chooses the number of components
by a penalised likelihood criterion; :meth:`Mixture.robustify` adds a vague
component (Schmidli et al. 2014).

Examples
--------
>>> m = BetaMixture([0.8, 0.2], a=[12, 1], b=[36, 1])
>>> round(m.mean(), 4)
0.3
>>> BetaMixture.from_dict(m.to_dict()) == m
True
"""

from __future__ import annotations

import math
from typing import Any, ClassVar

import numpy as np
import pandas as pd
from scipy import optimize, special, stats

from bayespk.errors import DataError, Moved, SpecError

__all__ = [
    "FAMILIES",
    "BetaMixture",
    "GammaMixture",
    "Mixture",
    "NormalMixture",
    "fit_mixture",
    "mixture_from_dict",
]

FAMILIES = ("beta", "normal", "gamma")


class Mixture:
    """A finite mixture ``sum_k w_k f(x | p1_k, p2_k)`` of one conjugate family.

    Use the subclasses :class:`BetaMixture`, :class:`NormalMixture` and
    :class:`GammaMixture`. Every method works on scalars and arrays.

    Attributes
    ----------
    weights : ndarray
        Component weights (sum to 1).
    info : dict
        Free-form notes (e.g. how the mixture was fitted); not part of equality.
    """

    family: ClassVar[str] = ""
    likelihood: ClassVar[str] = ""
    param_names: ClassVar[tuple[str, str]] = ("", "")
    support: ClassVar[tuple[float, float]] = (-math.inf, math.inf)

    def __init__(self, weights, p1, p2, *, where: str = "mixture"):
        w = np.atleast_1d(np.asarray(weights, dtype=float))
        p1 = np.atleast_1d(np.asarray(p1, dtype=float))
        p2 = np.atleast_1d(np.asarray(p2, dtype=float))
        n1, n2 = self.param_names
        if w.ndim != 1 or p1.shape != w.shape or p2.shape != w.shape:
            raise SpecError(f"{where}: weights, {n1} and {n2} must be lists of the same length, got "
                            f"{w.size}, {p1.size} and {p2.size} values")
        if w.size == 0:
            raise SpecError(f"{where}: a mixture needs at least one component")
        for name, v in (("weights", w), (n1, p1), (n2, p2)):
            if not np.all(np.isfinite(v)):
                raise SpecError(f"{where}: {name} must be finite numbers, got {v.tolist()}")
        if np.any(w < 0):
            raise SpecError(f"{where}: weights must be >= 0, got {w.tolist()}")
        if abs(w.sum() - 1.0) > 1e-6:
            raise SpecError(f"{where}: weights must sum to 1, got {w.sum():.6g} ({w.tolist()})")
        self._check_params(p1, p2, where)
        self.weights = w / w.sum()
        self._p1 = p1
        self._p2 = p2
        self.info: dict[str, Any] = {}

    # ------------------------------------------------------------ family hooks
    def _check_params(self, p1: np.ndarray, p2: np.ndarray, where: str) -> None:
        n1, n2 = self.param_names
        if np.any(p1 <= 0) or np.any(p2 <= 0):
            raise SpecError(f"{where}: {self.family} components need {n1} > 0 and {n2} > 0, "
                            f"got {n1}={p1.tolist()}, {n2}={p2.tolist()}")

    def _components(self):
        """scipy distribution with one row per component (broadcast against x[None, :])."""
        raise NotImplementedError

    def _component_grad_hess(self, x: np.ndarray, xm: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """First and second derivatives of each component's log density at x, shape (K, N)."""
        raise NotImplementedError

    def _component_modes(self) -> np.ndarray:
        raise NotImplementedError

    def _vague(self, mean: float, n: float) -> Mixture:
        raise NotImplementedError

    def _replace(self, weights, p1, p2) -> Mixture:
        """Same family and reference settings, new components."""
        return type(self)(weights, p1, p2)

    # ------------------------------------------------------------ basics
    @property
    def n_components(self) -> int:
        return int(self.weights.size)

    def __len__(self) -> int:
        return self.n_components

    @property
    def params(self) -> dict[str, np.ndarray]:
        """Component parameters by name, e.g. ``{"a": ..., "b": ...}``."""
        return {self.param_names[0]: self._p1.copy(), self.param_names[1]: self._p2.copy()}

    @property
    def components(self) -> pd.DataFrame:
        """One row per component: weight, the two parameters, mean and sd."""
        c = self._components()
        return pd.DataFrame({
            "weight": self.weights,
            self.param_names[0]: self._p1,
            self.param_names[1]: self._p2,
            "mean": np.ravel(c.mean()),
            "sd": np.ravel(c.std()),
        }, index=pd.RangeIndex(1, self.n_components + 1, name="component"))  # fmt: skip

    def _eval(self, x) -> tuple[np.ndarray, bool]:
        arr = np.asarray(x, dtype=float)
        return np.atleast_1d(arr).ravel(), arr.ndim == 0

    def _component_logpdf(self, x: np.ndarray, xm: np.ndarray | None = None) -> np.ndarray:
        with np.errstate(divide="ignore", invalid="ignore"):
            return self._components().logpdf(x[None, :])

    # ------------------------------------------------------------ distribution
    def logpdf(self, x):
        """Log density of the mixture."""
        xs, scalar = self._eval(x)
        with np.errstate(divide="ignore"):
            lw = np.log(self.weights)[:, None]
        out = special.logsumexp(lw + self._component_logpdf(xs), axis=0)
        return float(out[0]) if scalar else out.reshape(np.shape(x))

    def pdf(self, x):
        """Density of the mixture."""
        return np.exp(self.logpdf(x))

    def cdf(self, x):
        """Cumulative distribution function P(X <= x)."""
        xs, scalar = self._eval(x)
        out = (self.weights[:, None] * self._components().cdf(xs[None, :])).sum(axis=0)
        return float(out[0]) if scalar else out.reshape(np.shape(x))

    def sf(self, x):
        """Survival function P(X > x) (accurate in the upper tail)."""
        xs, scalar = self._eval(x)
        out = (self.weights[:, None] * self._components().sf(xs[None, :])).sum(axis=0)
        return float(out[0]) if scalar else out.reshape(np.shape(x))

    def quantile(self, q):
        """Quantile function (inverse of :meth:`cdf`), by bisection to machine precision."""
        qs, scalar = self._eval(q)
        if np.any((qs < 0) | (qs > 1)):
            raise SpecError(f"quantile: probabilities must lie in [0, 1], got {qs.tolist()}")
        comp = self._components()
        lo = np.full(qs.shape, float(np.min(comp.ppf(np.full((self.n_components, 1), 1e-15)))))
        hi = np.full(qs.shape, float(np.max(comp.ppf(np.full((self.n_components, 1), 1 - 1e-15)))))
        lo = np.maximum(lo, self.support[0])
        hi = np.minimum(hi, self.support[1])
        for _ in range(200):
            mid = 0.5 * (lo + hi)
            below = self.cdf(mid) < qs
            lo = np.where(below, mid, lo)
            hi = np.where(below, hi, mid)
            if np.all(hi - lo <= 1e-14 * np.maximum(1.0, np.abs(mid))):
                break
        out = 0.5 * (lo + hi)
        out = np.where(qs == 0, self.support[0], np.where(qs == 1, self.support[1], out))
        return float(out[0]) if scalar else out.reshape(np.shape(q))

    ppf = quantile

    def mean(self) -> float:
        return float(np.sum(self.weights * np.ravel(self._components().mean())))

    def var(self) -> float:
        c = self._components()
        m_k, v_k = np.ravel(c.mean()), np.ravel(c.var())
        m = float(np.sum(self.weights * m_k))
        return float(np.sum(self.weights * (v_k + m_k**2)) - m**2)

    def sd(self) -> float:
        return math.sqrt(max(self.var(), 0.0))

    def sample(self, size: int, seed: int | np.random.Generator | None = None) -> np.ndarray:
        """Random draws: a component per draw by weight, then a draw from it."""
        rng = np.random.default_rng(seed)
        k = rng.choice(self.n_components, size=size, p=self.weights)
        c = self._components()
        draws = c.rvs(size=(self.n_components, size), random_state=rng)
        return draws[k, np.arange(size)]

    def mode(self) -> float:
        """The highest mode (found from every component's mode, then refined)."""
        starts = np.concatenate([self._component_modes(), [self.mean()]])
        starts = np.clip(starts, *self._interior())
        best = starts[np.argmax(self.logpdf(starts))]
        lo, hi = self._interior()
        span = max(self.sd(), 1e-12)
        a, b = max(lo, best - span), min(hi, best + span)
        res = optimize.minimize_scalar(lambda t: -self.logpdf(t), bounds=(a, b), method="bounded",
                                       options={"xatol": 1e-12 * max(1.0, abs(best))})
        return float(res.x) if -res.fun >= self.logpdf(best) else float(best)

    def n_modes(self, n_grid: int = 4000) -> int:
        """Number of local maxima of the density on a fine grid over its 0.01%-99.99% range."""
        x = np.linspace(*self.quantile([1e-4, 1 - 1e-4]), n_grid)
        lp = self.logpdf(x)
        inner = (lp[1:-1] > lp[:-2]) & (lp[1:-1] >= lp[2:])
        return int(inner.sum()) or 1

    def _interior(self) -> tuple[float, float]:
        lo, hi = self.support
        lo = lo if math.isfinite(lo) else float(np.min(self._components().ppf(np.full((self.n_components, 1), 1e-12))))
        hi = hi if math.isfinite(hi) else float(np.max(self._components().ppf(np.full((self.n_components, 1),
                                                                                        1 - 1e-12))))
        eps = 1e-12 * max(1.0, abs(hi - lo))
        return lo + eps, hi - eps

    def summary(self, probs: tuple[float, ...] = (0.025, 0.5, 0.975)) -> dict[str, float]:
        """Mean, sd and quantiles, e.g. ``{"mean": .., "sd": .., "2.5%": .., "50%": .., "97.5%": ..}``."""
        out = {"mean": self.mean(), "sd": self.sd()}
        for p, q in zip(probs, np.atleast_1d(self.quantile(list(probs)))):
            out[f"{100 * p:g}%"] = float(q)
        return out

    # ------------------------------------------------------------ information
    def information(self, x):
        """Local information ``-d^2/dx^2 log p(x)`` of the mixture density.

        With responsibilities ``r_k(x) = w_k f_k(x) / p(x)``, component log-density
        derivatives ``g_k`` and ``h_k``::

            -d2 log p = sum_k r_k (-h_k) - [sum_k r_k g_k^2 - (sum_k r_k g_k)^2]

        (the second term, a variance of the ``g_k`` under ``r``, is what makes a
        mixture less informative than its components where they disagree).
        """
        xs, scalar = self._eval(x)
        out = self._information(xs, None)
        return float(out[0]) if scalar else out.reshape(np.shape(x))

    def _information(self, xs: np.ndarray, xm: np.ndarray | None) -> np.ndarray:
        """:meth:`information` on a flat array (``xm``: 1 - x computed accurately, beta only)."""
        with np.errstate(divide="ignore"):
            lw = np.log(self.weights)[:, None] + self._component_logpdf(xs, xm)
        r = np.exp(lw - special.logsumexp(lw, axis=0))
        g, h = self._component_grad_hess(xs, xm)
        g = np.where(r > 0, g, 0.0)
        h = np.where(r > 0, h, 0.0)
        mean_g = (r * g).sum(axis=0)
        return -(r * h).sum(axis=0) - ((r * g**2).sum(axis=0) - mean_g**2)

    # ------------------------------------------------------------ robustify
    def robustify(self, weight: float, mean: float | None = None, n: float | None = None) -> Mixture:
        """Add a vague component of weight ``weight`` (others scaled by ``1 - weight``).

        A robust mixture prior lets the data discount the informative part when
        they conflict with it: the posterior weight of the vague component grows
        with the conflict (Schmidli et al. 2014, Biometrics 70:1023).

        Parameters
        ----------
        weight : float
            Prior weight of the vague component, in (0, 1). Typical: 0.1-0.5.
        mean : float, optional
            Its mean; should be the null value of the question at hand.
            Default: 1/2 for beta, the mixture mean for normal and gamma.
        n : float, optional
            How many observations it is worth (default 1: unit information).
            Beta: ``Beta(mean (n+1), (1 - mean)(n+1))``, so the default is the
            uniform Beta(1, 1) for mean 1/2; normal: ``N(mean, sigma / sqrt(n))``
            with the reference sigma; gamma: ``Gamma(shape = mean n, rate = n)``.

        Examples
        --------
        >>> BetaMixture([1], [11], [32]).robustify(0.2).components[["weight", "a", "b"]].round(2).values.tolist()
        [[0.8, 11.0, 32.0], [0.2, 1.0, 1.0]]
        """
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < 1:
            raise SpecError(f"robustify: weight must be a number strictly between 0 and 1, got {weight!r}")
        if n is not None and not (isinstance(n, (int, float)) and n > 0 and math.isfinite(n)):
            raise SpecError(f"robustify: n must be a positive number, got {n!r}")
        if mean is None:
            mean = 0.5 if self.family == "beta" else self.mean()
        if not math.isfinite(float(mean)):
            raise SpecError(f"robustify: mean must be a finite number, got {mean!r}")
        vague = self._vague(float(mean), 1.0 if n is None else float(n))
        out = self._replace(np.concatenate([self.weights * (1 - weight), [weight]]),
                            np.concatenate([self._p1, vague._p1]), np.concatenate([self._p2, vague._p2]))
        out.info = {"robust": {"weight": float(weight), "mean": float(mean), "n": 1.0 if n is None else float(n)}}
        return out

    # the functions of bayespk.borrowing (as bb) that took over these methods: reading one says which
    posterior = Moved("bb.posterior(prior, r=..., n=...)")
    ess = Moved("bb.ess(prior, method=...)")

    # ------------------------------------------------------------ serialisation
    def to_dict(self) -> dict[str, Any]:
        """``{"family": .., "weights": [..], <p1>: [..], <p2>: [..]}`` (plus ``sigma`` for normal)."""
        return {
            "family": self.family,
            "weights": [float(v) for v in self.weights],
            self.param_names[0]: [float(v) for v in self._p1],
            self.param_names[1]: [float(v) for v in self._p2],
        }

    @classmethod
    def from_dict(cls, d: dict, where: str = "mixture") -> Mixture:
        """Rebuild a mixture written by :meth:`to_dict` (dispatches on ``family``)."""
        return mixture_from_dict(d, where=where)

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Mixture) or type(other) is not type(self):
            return NotImplemented
        return (np.array_equal(self.weights, other.weights) and np.array_equal(self._p1, other._p1)
                and np.array_equal(self._p2, other._p2) and self._extra_eq(other))

    def _extra_eq(self, other: Mixture) -> bool:
        return True

    __hash__ = None  # type: ignore[assignment]

    def __repr__(self) -> str:
        parts = ", ".join(f"{w:.3g}*{self.family.capitalize()}({a:.4g}, {b:.4g})"
                          for w, a, b in zip(self.weights, self._p1, self._p2))
        return f"{type(self).__name__}({parts})"


class BetaMixture(Mixture):
    """Mixture of Beta(a, b) components: a prior for a probability (binomial data).

    Examples
    --------
    >>> m = BetaMixture([0.5, 0.5], a=[2, 8], b=[8, 2])
    >>> round(m.mean(), 3), round(m.cdf(0.5), 3)
    (0.5, 0.5)
    """

    family = "beta"
    likelihood = "binomial"
    param_names = ("a", "b")
    support = (0.0, 1.0)

    def __init__(self, weights, a, b, *, where: str = "beta mixture"):
        super().__init__(weights, a, b, where=where)

    @property
    def a(self) -> np.ndarray:
        return self._p1.copy()

    @property
    def b(self) -> np.ndarray:
        return self._p2.copy()

    def _components(self):
        return stats.beta(self._p1[:, None], self._p2[:, None])

    def _component_logpdf(self, x, xm=None):
        if xm is None:
            return super()._component_logpdf(x)
        a, b = self._p1[:, None], self._p2[:, None]
        with np.errstate(divide="ignore", invalid="ignore"):
            return (a - 1) * np.log(x)[None, :] + (b - 1) * np.log(xm)[None, :] - special.betaln(a, b)

    def _component_grad_hess(self, x, xm=None):
        a, b = self._p1[:, None], self._p2[:, None]
        xm = (1 - x) if xm is None else xm
        x = np.maximum(x, 1e-300)[None, :]
        xm = np.maximum(xm, 1e-300)[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            g = (a - 1) / x - (b - 1) / xm
            h = -(a - 1) / x**2 - (b - 1) / xm**2
        return g, h

    def _component_modes(self):
        a, b = self._p1, self._p2
        with np.errstate(divide="ignore", invalid="ignore"):
            m = np.where((a > 1) & (b > 1), (a - 1) / (a + b - 2), np.where(a <= 1, 1e-9, 1 - 1e-9))
        return m

    def _vague(self, mean, n):
        if not 0 < mean < 1:
            raise SpecError(f"robustify: the mean of a beta component must lie in (0, 1), got {mean:g}")
        return BetaMixture([1.0], [mean * (n + 1)], [(1 - mean) * (n + 1)])


class NormalMixture(Mixture):
    """Mixture of Normal(m, s) components: a prior for a mean (normal data, known SE).

    Parameters
    ----------
    weights, m, s : array-like
        Component weights, means and standard deviations.
    sigma : float, optional
        Reference scale: the standard deviation of *one observation* (one
        patient). It defines one unit of information, so the effective sample
        size of N(m, s) is ``sigma**2 / s**2``, and the unit-information vague
        component used by :meth:`robustify` is N(mean, sigma).

    Examples
    --------
    >>> from bayespk.borrowing.ess import ess
    >>> ess(NormalMixture([1.0], m=[0.0], s=[0.5], sigma=2.0), "moment")
    16.0
    """

    family = "normal"
    likelihood = "normal"
    param_names = ("m", "s")

    def __init__(self, weights, m, s, *, sigma: float | None = None, where: str = "normal mixture"):
        super().__init__(weights, m, s, where=where)
        if sigma is not None:
            if isinstance(sigma, bool) or not isinstance(sigma, (int, float, np.floating)) or not (
                    math.isfinite(sigma) and sigma > 0):
                raise SpecError(f"{where}: reference sigma must be a positive number, got {sigma!r}")
            sigma = float(sigma)
        self.sigma = sigma

    def _check_params(self, p1, p2, where):
        if np.any(p2 <= 0):
            raise SpecError(f"{where}: normal components need s > 0, got s={p2.tolist()}")

    @property
    def m(self) -> np.ndarray:
        return self._p1.copy()

    @property
    def s(self) -> np.ndarray:
        return self._p2.copy()

    def _components(self):
        return stats.norm(self._p1[:, None], self._p2[:, None])

    def _component_grad_hess(self, x, xm=None):
        m, s = self._p1[:, None], self._p2[:, None]
        g = -(x[None, :] - m) / s**2
        h = np.broadcast_to(-1.0 / s**2, g.shape)
        return g, h

    def _component_modes(self):
        return self._p1.copy()

    def _replace(self, weights, p1, p2):
        return NormalMixture(weights, p1, p2, sigma=self.sigma)

    def with_sigma(self, sigma: float) -> NormalMixture:
        """A copy with another reference scale."""
        out = NormalMixture(self.weights, self._p1, self._p2, sigma=sigma)
        out.info = dict(self.info)
        return out

    def _vague(self, mean, n):
        if self.sigma is None:
            raise SpecError("robustify: a normal mixture needs its reference sigma (the SD of one observation) "
                            "to build a unit-information component; give sigma=... when creating it, or use "
                            "robustify_normal(..., sd=...) for an explicit vague SD")
        return NormalMixture([1.0], [mean], [self.sigma / math.sqrt(n)], sigma=self.sigma)

    def robustify(self, weight: float, mean: float | None = None, n: float | None = None,
                  sd: float | None = None) -> NormalMixture:
        """Add a vague normal component; see :meth:`Mixture.robustify`.

        ``sd`` sets the vague component's SD directly (instead of ``sigma / sqrt(n)``).
        """
        if sd is None:
            return super().robustify(weight, mean, n)  # type: ignore[return-value]
        if n is not None:
            raise SpecError("robustify: give either n or sd for the vague component, not both")
        if not (isinstance(sd, (int, float)) and math.isfinite(sd) and sd > 0):
            raise SpecError(f"robustify: sd must be a positive number, got {sd!r}")
        if not isinstance(weight, (int, float)) or not 0 < weight < 1:
            raise SpecError(f"robustify: weight must be a number strictly between 0 and 1, got {weight!r}")
        mean = self.mean() if mean is None else float(mean)
        out = NormalMixture(np.concatenate([self.weights * (1 - weight), [weight]]),
                            np.concatenate([self._p1, [mean]]), np.concatenate([self._p2, [float(sd)]]),
                            sigma=self.sigma)
        out.info = {"robust": {"weight": float(weight), "mean": mean, "sd": float(sd)}}
        return out

    def to_dict(self):
        d = super().to_dict()
        if self.sigma is not None:
            d["sigma"] = self.sigma
        return d

    def _extra_eq(self, other):
        return self.sigma == other.sigma  # type: ignore[attr-defined]

    def __repr__(self):
        base = super().__repr__()
        return base[:-1] + (f"; sigma={self.sigma:.4g})" if self.sigma is not None else ")")


class GammaMixture(Mixture):
    """Mixture of Gamma(shape a, rate b) components: a prior for a Poisson rate.

    With counts observed over an exposure (patient-years, say), ``b`` is the
    prior's worth in units of exposure: the effective sample size of Gamma(a, b)
    is ``b``.

    Examples
    --------
    >>> g = GammaMixture([1.0], a=[4.0], b=[2.0])
    >>> from bayespk.borrowing.ess import ess
    >>> g.mean(), round(ess(g, "elir"), 6)
    (2.0, 2.0)
    """

    family = "gamma"
    likelihood = "poisson"
    param_names = ("a", "b")
    support = (0.0, math.inf)

    def __init__(self, weights, a, b, *, where: str = "gamma mixture"):
        super().__init__(weights, a, b, where=where)

    @property
    def a(self) -> np.ndarray:
        return self._p1.copy()

    @property
    def b(self) -> np.ndarray:
        return self._p2.copy()

    def _components(self):
        return stats.gamma(self._p1[:, None], scale=1.0 / self._p2[:, None])

    def _component_grad_hess(self, x, xm=None):
        a, b = self._p1[:, None], self._p2[:, None]
        x = np.maximum(x, 1e-300)[None, :]
        with np.errstate(divide="ignore", invalid="ignore"):
            g = (a - 1) / x - b
            h = -(a - 1) / x**2
        return g, h

    def _component_modes(self):
        a, b = self._p1, self._p2
        return np.where(a > 1, (a - 1) / b, 1e-9 / b)

    def _vague(self, mean, n):
        if mean <= 0:
            raise SpecError(f"robustify: the mean of a gamma component must be > 0, got {mean:g}")
        return GammaMixture([1.0], [mean * n], [n])


_CLASSES: dict[str, type[Mixture]] = {"beta": BetaMixture, "normal": NormalMixture, "gamma": GammaMixture}


def mixture_from_dict(d: dict, where: str = "mixture") -> Mixture:
    """Build a mixture from ``{"family": .., "weights": [..], ...}`` (the :meth:`Mixture.to_dict` form).

    Examples
    --------
    >>> mixture_from_dict({"family": "gamma", "weights": [1], "a": [2], "b": [1]})
    GammaMixture(1*Gamma(2, 1))
    """
    if not isinstance(d, dict):
        raise SpecError(f"{where}: expected a table with family, weights and component parameters, got {d!r}")
    family = d.get("family")
    if family not in _CLASSES:
        raise SpecError(f"{where}: family must be one of {', '.join(FAMILIES)}, got {family!r}")
    cls = _CLASSES[family]
    n1, n2 = cls.param_names
    allowed = {"family", "weights", n1, n2} | ({"sigma"} if family == "normal" else set())
    missing = [k for k in ("weights", n1, n2) if k not in d]
    if missing:
        raise SpecError(f"{where}: a {family} mixture needs keys weights, {n1}, {n2}; missing {', '.join(missing)}")
    extra = sorted(set(d) - allowed)
    if extra:
        raise SpecError(f"{where}: unknown key(s) {', '.join(extra)} for a {family} mixture "
                        f"(allowed: {', '.join(sorted(allowed))})")
    for k in ("weights", n1, n2):
        v = d[k]
        if not isinstance(v, (list, tuple, np.ndarray)) or not all(
                isinstance(x, (int, float, np.number)) and not isinstance(x, bool) for x in v):
            raise SpecError(f"{where}: {k} must be a list of numbers, got {v!r}")
    if family == "normal":
        return NormalMixture(d["weights"], d[n1], d[n2], sigma=d.get("sigma"), where=where)
    return cls(d["weights"], d[n1], d[n2], where=where)


# ====================================================================== fitting
def fit_mixture(
    sample,
    family: str,
    *,
    n_components: int | None = None,
    max_components: int = 4,
    criterion: str = "AIC",
    penalty: float | None = None,
    constrain_gt1: bool = True,
    sigma: float | None = None,
    seed: int = 0,
    max_iter: int = 500,
    tol: float = 1e-3,
    method: str = "ml",
    eps: float = 0.005,
    thresh: float = -math.inf,
) -> Mixture:
    """Approximate a sample (e.g. an MCMC sample of a MAP prior) by a conjugate mixture.

    Each candidate number of components K is fitted by EM: the E-step computes
    each draw's component responsibilities, the M-step maximises each
    component's weighted likelihood exactly (beta: Newton on the sufficient
    statistics mean log x, mean log(1 - x); gamma: Newton on the shape with the
    rate in closed form; normal: weighted mean and SD). Two starts per K
    (equal-count split of the sorted sample, and a random soft assignment);
    the better log-likelihood wins. EM stops when an iteration gains less
    than ``tol`` in log-likelihood, or after ``max_iter`` iterations.

    Parameters
    ----------
    sample : array-like
        Draws, in the family's support.
    family : {"beta", "normal", "gamma"}
    n_components : int, optional
        Fit exactly this many components. Default: choose K in
        ``1..max_components`` by ``criterion``.
    criterion : {"AIC", "BIC"}
        ``-2 loglik + penalty * (3K - 1)``. For "AIC" the default penalty is 6
        per parameter, not 2: the stiffer penalty suggested by Collett (2003)
        and used by RBesT's ``automixfit``, which keeps to a few components
        when extra ones only polish the fit to Monte Carlo noise. "BIC" uses
        ``log(len(sample))``.
    penalty : float, optional
        Override the penalty per parameter.
    constrain_gt1 : bool
        Keep beta a, b >= 1 and gamma shape >= 1. This keeps every component
        bounded at the ends of the support, so the ELIR effective sample size
        (whose integral diverges otherwise) is defined.
    sigma : float, optional
        Reference scale stored on a normal mixture (see :class:`NormalMixture`).
    seed : int
        Seed of the random starts (``method="ml"``).
    max_iter, tol
        EM iterations at most, and (``method="ml"``) the log-likelihood gain that stops EM.
    method : {"ml", "rbest"}
        ``"ml"`` (default): the EM described above, run to its maximum
        likelihood. ``"rbest"``: the EM of RBesT's ``automixfit`` (RBesT
        1.7-0 to 1.9-0: R/automixfit.R ``automixfit``, R/EM_bmm_ab.R
        ``EM_bmm_ab``, R/EM_mnmm.R ``EM_nmm``, R/EM_msmm.R ``EM_msmm``,
        R/EM_gmm.R ``EM_gmm``, R/knn.R ``knn``), ported from its R source:
        one deterministic k-means start from evenly spaced positions of the
        sample (normal: refined by a Student-t mixture EM), each weighted
        component log density floored at -30, no pruning, and RBesT's stopping
        rule (the mean absolute change of every parameter over the last 5
        M-steps below ``eps``; beta: of the logit weights only, as in RBesT).
        That rule stops EM before the maximum when components overlap, which
        lowers the log-likelihood of the larger K and makes AIC choose fewer
        components: on 4000 draws of the AS MAP prior it chooses 2
        components in most runs, as RBesT's vignette, where ``"ml"`` chooses
        3 or 4. The sample order matters for the start (RBesT's: chain after
        chain, as :func:`~bayespk.borrowing.map_prior.fit_map` stores it).
        Gamma shapes are kept >= 1 only with ``constrain_gt1`` (RBesT does
        not constrain them).
    eps : float
        ``method="rbest"``: RBesT's convergence threshold (its ``eps``).
    thresh : float
        ``method="rbest"``: RBesT's ``automixfit(thresh=)``: stop trying
        larger K once the criterion improves by less than ``thresh``
        (default -inf: try them all; 0 stops at the first K that is worse).

    Returns
    -------
    Mixture
        With ``info["fit"]``: the criterion value and log-likelihood of every K tried.

    Examples
    --------
    >>> truth = BetaMixture([0.6, 0.4], a=[30, 4], b=[70, 4])
    >>> fit = fit_mixture(truth.sample(4000, seed=1), "beta", n_components=2)
    >>> np.round(fit.weights, 1).tolist()
    [0.6, 0.4]
    """
    if family not in FAMILIES:
        raise SpecError(f"fit_mixture: family must be one of {', '.join(FAMILIES)}, got {family!r}")
    x = np.asarray(sample, dtype=float).ravel()
    if x.size < 10:
        raise DataError(f"fit_mixture: need at least 10 draws, got {x.size}")
    bad = ~np.isfinite(x)
    if bad.any():
        raise DataError(f"fit_mixture: draw {int(np.argmax(bad))} is not a finite number ({x[bad][0]!r})")
    if family == "beta":
        if np.any((x < 0) | (x > 1)):
            i = int(np.argmax((x < 0) | (x > 1)))
            raise DataError(f"fit_mixture: draw {i} = {x[i]:g} is outside [0, 1]; a beta mixture needs probabilities")
        x = np.clip(x, 1e-12, 1 - 1e-12)
    elif family == "gamma":
        if np.any(x < 0):
            i = int(np.argmax(x < 0))
            raise DataError(f"fit_mixture: draw {i} = {x[i]:g} is negative; a gamma mixture needs values >= 0")
        x = np.maximum(x, 1e-300)
    if np.std(x) == 0:
        raise DataError("fit_mixture: all draws are equal; there is no distribution to approximate")
    crit = criterion.upper()
    if crit not in ("AIC", "BIC"):
        raise SpecError(f"fit_mixture: criterion must be 'AIC' or 'BIC', got {criterion!r}")
    pen = penalty if penalty is not None else (6.0 if crit == "AIC" else math.log(x.size))
    if n_components is not None:
        if not isinstance(n_components, int) or n_components < 1:
            raise SpecError(f"fit_mixture: n_components must be a whole number >= 1, got {n_components!r}")
        ks = [n_components]
    else:
        if not isinstance(max_components, int) or max_components < 1:
            raise SpecError(f"fit_mixture: max_components must be a whole number >= 1, got {max_components!r}")
        ks = list(range(1, max_components + 1))
    if method not in ("ml", "rbest"):
        raise SpecError(f"fit_mixture: method must be 'ml' or 'rbest', got {method!r}")
    if not (isinstance(eps, (int, float)) and eps > 0):
        raise SpecError(f"fit_mixture: eps must be a positive number, got {eps!r}")
    rng = np.random.default_rng(seed)
    lower = 1.0 if constrain_gt1 else 1e-6
    results = []
    if method == "rbest":
        if x.size < 50 + max(ks):
            raise DataError(f"fit_mixture: method='rbest' needs at least {50 + max(ks)} draws (RBesT starts from "
                            f"means of 50 draws), got {x.size}")
        last = math.inf
        for k in ks:
            w, p1, p2, ll, n_iter = _rbest_em(x, family, k, lower, eps, max_iter)
            if not np.isfinite(ll):
                continue
            value = -2 * ll + pen * (3 * k - 1)
            results.append({"K": k, "requested": k, "loglik": ll, "criterion": value, "fit": (w, p1, p2),
                            "iterations": n_iter})
            if last - value < thresh:
                break
            last = value
    for k in (ks if method == "ml" else ()):
        best = None
        starts = ["quantile"] + (["random"] if k > 1 else [])
        for start in starts:
            w, p1, p2, ll = _em(x, family, k, start, rng, lower, max_iter, tol)
            if np.isfinite(ll) and (best is None or ll > best[3]):
                best = (w, p1, p2, ll)
        if best is None:
            continue
        w, p1, p2, ll = best
        n_par = 3 * len(w) - 1
        results.append({"K": len(w), "requested": k, "loglik": ll, "criterion": -2 * ll + pen * n_par,
                        "fit": (w, p1, p2)})
    if not results:
        raise DataError("fit_mixture: EM failed for every number of components; check the sample")
    chosen = min(results, key=lambda r: r["criterion"])
    w, p1, p2 = chosen["fit"]
    order = np.argsort(-w)
    w, p1, p2 = w[order], p1[order], p2[order]
    w = w / w.sum()
    mix = NormalMixture(w, p1, p2, sigma=sigma) if family == "normal" else _CLASSES[family](w, p1, p2)
    mix.info = {"fit": {
        "criterion": crit, "penalty_per_parameter": pen, "n_draws": int(x.size), "method": method,
        "candidates": [{"K": r["K"], "requested": r["requested"], "loglik": r["loglik"], crit: r["criterion"]}
                       | ({"iterations": r["iterations"]} if "iterations" in r else {}) for r in results],
        "chosen_K": int(chosen["K"]),
    }}  # fmt: skip
    return mix


def _logpdf_components(x, family, p1, p2, logx=None, log1mx=None):
    """Component log densities, shape (K, N), from the sufficient statistics."""
    a, b = p1[:, None], p2[:, None]
    if family == "beta":
        return (a - 1) * logx[None, :] + (b - 1) * log1mx[None, :] - special.betaln(a, b)
    if family == "gamma":
        return a * np.log(b) - special.gammaln(a) + (a - 1) * logx[None, :] - b * x[None, :]
    return -0.5 * ((x[None, :] - a) / b) ** 2 - np.log(b) - 0.5 * math.log(2 * math.pi)


def _moments_to_params(family, m, v, lower):
    """Component parameters matching a mean and variance (starting values)."""
    v = np.maximum(v, 1e-12)
    if family == "beta":
        m = np.clip(m, 1e-6, 1 - 1e-6)
        v = np.minimum(v, m * (1 - m) * 0.99)
        n = m * (1 - m) / v - 1
        return np.maximum(m * n, lower), np.maximum((1 - m) * n, lower)
    if family == "gamma":
        m = np.maximum(m, 1e-300)
        a = np.maximum(m**2 / v, lower)
        return a, a / m
    return m, np.sqrt(v)


def _floor_spread(family, p1, p2, sd_floor):
    """Keep every component's SD at least ``sd_floor`` (same mean): EM's degenerate spikes are excluded."""
    if family == "normal":
        return p1, np.maximum(p2, sd_floor)
    if family == "beta":
        m = p1 / (p1 + p2)
        n_max = m * (1 - m) / sd_floor**2 - 1  # Beta(m n, (1 - m) n) has variance m (1 - m) / (n + 1)
        scale = np.where(p1 + p2 > n_max, n_max / (p1 + p2), 1.0)
        return p1 * scale, p2 * scale
    mean = p1 / p2
    a_max = (mean / sd_floor) ** 2  # Gamma(a, a / mean) has SD mean / sqrt(a)
    a = np.minimum(p1, a_max)
    return a, a / mean


def _em(x, family, k, start, rng, lower, max_iter, tol):
    """EM for a K-component mixture; returns weights, parameters and the log-likelihood.

    Guards against EM's degenerate solutions: a component left with fewer than
    max(5, 0.5% of the draws) is dropped, and component SDs are kept above 1%
    of the sample SD (a spike on a few draws would otherwise have an unbounded
    likelihood). A start that still breaks down returns a log-likelihood of -inf.
    """
    n = x.size
    logx = np.log(x) if family != "normal" else None
    log1mx = np.log1p(-x) if family == "beta" else None
    tx = (logx - log1mx) if family == "beta" else (logx if family == "gamma" else x)
    if start == "quantile":
        ranks = np.argsort(np.argsort(tx))
        resp = np.zeros((k, n))
        resp[np.minimum(ranks * k // n, k - 1), np.arange(n)] = 1.0
    else:
        resp = rng.dirichlet(np.ones(k), size=n).T
    nk = resp.sum(axis=1) + 1e-12
    w = nk / n
    m = (resp @ x) / nk
    v = (resp * (x[None, :] - m[:, None]) ** 2).sum(axis=1) / nk
    p1, p2 = _moments_to_params(family, m, v, lower)
    sd_floor = 0.01 * float(np.std(x))
    min_count = max(5.0, 0.005 * n)
    p1, p2 = _floor_spread(family, p1, p2, sd_floor)
    ll_old = -np.inf
    failed = (np.empty(0), np.empty(0), np.empty(0), -np.inf)
    for _ in range(max_iter):
        with np.errstate(divide="ignore", invalid="ignore"):
            lw = np.log(w)[:, None] + _logpdf_components(x, family, p1, p2, logx, log1mx)
        if not np.all(np.isfinite(p1)) or not np.all(np.isfinite(p2)) or np.isnan(lw).any():
            return failed
        top = lw.max(axis=0)
        resp = np.exp(lw - top)
        tot = resp.sum(axis=0)
        ll = float((top + np.log(tot)).sum())
        resp /= tot
        nk = resp.sum(axis=1)
        keep = nk >= min_count
        if not keep.any():
            return failed
        if not keep.all():  # a component lost (almost) all its draws: drop it and carry on
            nk, p1, p2 = nk[keep], p1[keep], p2[keep]
            w = nk / nk.sum()
            ll_old = -np.inf
            continue
        w = nk / n
        if family == "normal":
            p1 = (resp @ x) / nk
            p2 = np.sqrt((resp * (x[None, :] - p1[:, None]) ** 2).sum(axis=1) / nk)
        elif family == "beta":
            p1, p2 = _beta_mle((resp @ logx) / nk, (resp @ log1mx) / nk, p1, p2, lower)
        else:
            xm = (resp @ x) / nk
            p1 = _gamma_shape_mle(np.log(xm) - (resp @ logx) / nk, lower)
            p2 = p1 / xm
        p1, p2 = _floor_spread(family, p1, p2, sd_floor)
        if ll - ll_old <= tol:
            break
        ll_old = ll
    with np.errstate(divide="ignore"):
        lw = np.log(w)[:, None] + _logpdf_components(x, family, p1, p2, logx, log1mx)
    ll = float(special.logsumexp(lw, axis=0).sum())
    return (w, p1.copy(), p2.copy(), ll) if np.isfinite(ll) else failed


def _beta_mle(s1, s2, a, b, lower, iters: int = 50):
    """Maximise ``(a-1) s1 + (b-1) s2 - log B(a, b)`` over ``a, b >= lower``, for every component at once.

    ``s1``, ``s2`` are the weighted means of log x and log(1 - x). The
    objective is concave (log B is convex), so projected Newton steps with
    backtracking converge to the constrained maximum.
    """
    s1, s2 = np.asarray(s1, float), np.asarray(s2, float)
    a = np.maximum(np.asarray(a, float), lower)
    b = np.maximum(np.asarray(b, float), lower)

    def f(a, b):
        return (a - 1) * s1 + (b - 1) * s2 - special.betaln(a, b)

    for _ in range(iters):
        dab = special.digamma(a + b)
        ga = s1 - special.digamma(a) + dab
        gb = s2 - special.digamma(b) + dab
        tab = special.polygamma(1, a + b)
        haa = special.polygamma(1, a) - tab  # minus the Hessian: [[haa, -tab], [-tab, hbb]], positive definite
        hbb = special.polygamma(1, b) - tab
        det = haa * hbb - tab**2
        da = (hbb * ga + tab * gb) / det
        db = (haa * gb + tab * ga) / det
        fix_a = (a <= lower) & (ga < 0)
        fix_b = (b <= lower) & (gb < 0)
        da = np.where(fix_a, 0.0, np.where(fix_b, ga / haa, da))
        db = np.where(fix_b, 0.0, np.where(fix_a, gb / hbb, db))
        f0 = f(a, b)
        t = np.ones_like(a)
        for _ in range(40):
            ok = f(np.maximum(a + t * da, lower), np.maximum(b + t * db, lower)) >= f0 - 1e-13 * np.abs(f0)
            if ok.all():
                break
            t = np.where(ok, t, t / 2)
        new_a, new_b = np.maximum(a + t * da, lower), np.maximum(b + t * db, lower)
        done = np.all(np.abs(new_a - a) <= 1e-10 * (1 + a)) and np.all(np.abs(new_b - b) <= 1e-10 * (1 + b))
        a, b = new_a, new_b
        if done:
            break
    return a, b


def _gamma_shape_mle(c, lower):
    """Solve ``log(a) - digamma(a) = c`` for the gamma shape, for every component at once.

    ``c = log(mean x) - mean(log x) >= 0`` (weighted); Newton on ``log a`` from
    Minka's closed-form starting value.
    """
    c = np.maximum(np.asarray(c, float), 1e-12)
    a = (3 - c + np.sqrt((c - 3) ** 2 + 24 * c)) / (12 * c)
    u = np.log(a)
    for _ in range(100):
        a = np.exp(u)
        step = (u - special.digamma(a) - c) / (1 - a * special.polygamma(1, a))
        u = u - step
        if np.all(np.abs(step) < 1e-12):
            break
    return np.maximum(np.exp(u), lower)


# ====================================================================== RBesT's EM (automixfit)
# A port of the EM that RBesT's ``automixfit`` / ``mixfit`` runs (RBesT 1.7-0 to 1.9-0; R/automixfit.R, R/mixfit.R,
# R/EM_bmm_ab.R ``EM_bmm_ab``, R/EM_mnmm.R ``EM_mnmm`` / ``EM_nmm``, R/EM_msmm.R ``EM_msmm``, R/EM_gmm.R ``EM_gmm``,
# R/knn.R ``knn``), written from the R source. What makes it choose other K than the exact-ML EM above:
#
# * deterministic k-means start: centres are means of 50 draws at evenly spaced positions of the sample (as it comes,
#   chain after chain), shifted by one position per component; the smallest cluster is moved to the centre of the
#   sample with the sample's variance (normal: a Student-t mixture EM, 250 iterations at most, refines the start);
# * the stopping rule: after at least 5 M-steps, every parameter's mean absolute change over the last 5 M-steps is
#   below ``eps`` (0.005) on the scale logit(w), log(a - 1), log(b - 1) (beta), m, log(s) (normal), log a, log b
#   (gamma). For beta mixtures RBesT records only logit(w) in its running buffer (the a, b rows of ``mixEstPar``
#   keep their starting values), so a beta fit stops as soon as the weights move by less than 0.005 per step on
#   the logit scale. EM far from its optimum moves slowly, so components 3 and 4 stop short of their maximum
#   likelihood, and AIC (penalty 6) then prefers 2 or 3 components where a converged EM has 3 or 4;
# * each draw's log density under each weighted component is floored at -30 (also in the log-likelihood used by AIC);
# * no pruning of small components and no floor on their spread (RBesT has none).

def _r_var(x: np.ndarray) -> float:
    return float(np.var(x, ddof=1)) if x.size > 1 else float("nan")


def _rbest_kmeans(x: np.ndarray, k: int, n_init: int = 50, max_iter: int = 50):
    """RBesT's ``knn`` (R/knn.R; k-means despite the name) from the start used by its EM functions.

    Start: component j's centre is the mean of ``x[floor(s + j)]`` over ``s = seq(1, N - K, length = 50)``
    (1-based, as R truncates a fractional index); Lloyd iterations stop when the within-cluster sum of squares
    falls by less than var(x) / 5, or after 50 iterations. Returns (centres, proportions, cluster of each draw).
    """
    n = x.size
    s = np.linspace(1.0, n - k, n_init)
    centres = np.array([x[np.floor(s + j).astype(int) - 1].mean() for j in range(k)])
    tol = _r_var(x) / 5
    j_old = math.inf
    cluster = np.zeros(n, dtype=int)
    counts = np.zeros(k)
    for _ in range(1, max_iter):
        cluster = np.argmin((x[:, None] - centres[None, :]) ** 2, axis=1)  # ties: the first, as R's rowRanks
        counts = np.bincount(cluster, minlength=k).astype(float)
        sums = np.bincount(cluster, weights=x, minlength=k)
        centres = sums / np.maximum(counts, 1.0)  # R: an empty cluster gets centre 0 (its sum over one)
        j_new = float(((x - centres[cluster]) ** 2).sum())
        if j_old - j_new < tol:
            break
        j_old = j_new
    return centres, counts / n, cluster


def _rbest_start(x: np.ndarray, family: str, k: int, lower: float):
    """Starting weights and component parameters of RBesT's ``EM_bmm_ab`` / ``EM_gmm`` / ``EM_msmm``."""
    centres, p, cluster = _rbest_kmeans(x, k)
    var_x = _r_var(x)
    cmin = int(np.argmin(p))
    centre = float(np.sum(p * centres))
    if family == "normal":
        sd_x = math.sqrt(var_x)
        m, sd = centres.copy(), np.full(k, sd_x)
        for j in range(k):
            if j != cmin and np.sum(cluster == j) > 10:
                sdj = math.sqrt(_r_var(x[cluster == j]))
                sd[j] = sdj if sdj > 0 else sd_x
        sd = np.maximum(sd, sd_x / 100)
        m[cmin], sd[cmin] = centre, sd_x
        return _rbest_t_em(x, p, m, sd)
    mu, var = np.full(k, x.mean()), np.full(k, 1.5 * var_x)
    for j in range(k):
        if np.sum(cluster == j) > 10:
            mu[j], var[j] = centres[j], _r_var(x[cluster == j])
    mu[cmin] = centre
    if family == "beta":
        with np.errstate(divide="ignore", invalid="ignore"):
            n_k = np.fmax(mu * (1 - mu) / var - 1, 1.0)  # R's pmax(.., 1, na.rm = TRUE)
            n_k[cmin] = np.fmax(mu[cmin] * (1 - mu[cmin]) / var_x - 1, 1.0)
        a, b = n_k * mu, n_k * (1 - mu)
        if lower >= 1:  # constrain_gt1: a = 1 + max(a - 1, 1e-8)
            a, b = 1 + np.maximum(a - 1, 1e-8), 1 + np.maximum(b - 1, 1e-8)
        return p, a, b
    var[cmin] = var_x
    b = mu / var
    return p, mu * b, b


def _rbest_t_em(x, p, m, sd, max_iter: int = 250, tol: float = 0.1):
    """RBesT's ``EM_msmm`` (R/EM_msmm.R), univariate: a Student-t mixture EM (Peel & McLachlan 2000, Stat Comput
    10:339) that starts RBesT's normal mixture EM. nu starts at 12 and is re-estimated per component in (0, 150);
    stops when the log-likelihood's central difference over two iterations is below 0.1. Returns w, m, sd."""
    n = x.size
    k = p.size
    var = sd**2
    nu = np.full(k, 12.0)
    trace: list[float] = []
    for it in range(max_iter):
        with np.errstate(divide="ignore"):
            lli = np.log(p)[None, :] + stats.t.logpdf(x[:, None], nu[None, :], m[None, :], np.sqrt(var)[None, :])
        lli = np.maximum(lli, -30.0)
        lnresp = special.logsumexp(lli, axis=1)
        trace.append(float(lnresp.sum()))
        if it > 1 and (trace[it] - trace[it - 2]) / 2 < tol:
            break
        lresp = lli - lnresp[:, None]
        resp = np.exp(lresp)
        maha = (x[:, None] - m[None, :]) ** 2 / var[None, :]
        lu = np.log(nu + 1)[None, :] - np.log(nu[None, :] + maha)
        lz = special.logsumexp(lresp, axis=0)
        p = np.exp(lz - math.log(n))
        p = p / p.sum()
        lw = lresp + lu
        var = np.maximum((np.exp(lw - lz[None, :]) * (x[:, None] - m[None, :]) ** 2).sum(axis=0),
                         np.finfo(float).eps)  # R uses the centres before their update here
        m = (np.exp(lw) * x[:, None]).sum(axis=0) / np.exp(special.logsumexp(lw, axis=0))
        c1 = 1 + (resp * (lu - np.exp(lu))).sum(axis=0) / np.exp(lz)
        for j in range(k):
            def score(v, c=c1[j]):
                return (math.log(v / 2) - special.digamma(v / 2) + c + special.digamma((v + 1) / 2)
                        - math.log((v + 1) / 2)) ** 2
            nu[j] = optimize.minimize_scalar(score, bounds=(1e-8, 150.0), method="bounded",
                                             options={"xatol": 1.2e-4}).x
    return p, m, np.sqrt(var)


def _rbest_em(x, family, k, lower, eps, max_iter, n_eps: int = 5):
    """EM as RBesT's ``EM_bmm_ab`` / ``EM_nmm`` / ``EM_gmm`` run it; returns w, p1, p2, loglik, iterations."""
    n = x.size
    w, p1, p2 = _rbest_start(x, family, k, lower)
    p1, p2 = np.asarray(p1, float), np.asarray(p2, float)
    logx = np.log(x) if family != "normal" else None
    log1mx = np.log1p(-x) if family == "beta" else None
    buffer = np.full((n_eps, 3, k), np.nan)  # parameters after the last n_eps M-steps (oldest first)
    failed = (np.empty(0), np.empty(0), np.empty(0), -np.inf, 0)
    it = 0
    ll = -np.inf
    while it < max_iter:
        with np.errstate(divide="ignore", invalid="ignore"):
            lli = np.log(w)[:, None] + _logpdf_components(x, family, p1, p2, logx, log1mx)
        if np.isnan(lli).any():
            return failed
        lli = np.maximum(lli, -30.0)
        lnresp = special.logsumexp(lli, axis=0)
        ll = float(lnresp.sum())
        if it >= n_eps:
            rows = slice(1, 3) if k == 1 else slice(0, 3)
            change = np.mean(np.abs(np.diff(buffer[:, rows, :], axis=0)), axis=0)
            if np.all(change < eps):  # NaN (a weight of 0 or 1) never converges, as in R
                break
        resp = np.exp(lli - lnresp[None, :])
        nk = resp.sum(axis=1)
        w = nk / n
        if family == "normal":
            p1 = (resp @ x) / nk
            p2 = np.sqrt(np.maximum((resp * (x[None, :] - p1[:, None]) ** 2).sum(axis=1) / nk, np.finfo(float).eps))
            par = (p1, np.log(p2))
        elif family == "beta":
            p1, p2 = _beta_mle((resp @ logx) / nk, (resp @ log1mx) / nk, p1, p2, lower)
            if lower >= 1:
                p1, p2 = 1 + np.maximum(p1 - 1, 1e-8), 1 + np.maximum(p2 - 1, 1e-8)
            par = (np.zeros(k), np.zeros(k))  # RBesT's buffer keeps the starting a, b: only the weights decide
        else:
            xm = (resp @ x) / nk
            p1 = _gamma_shape_mle(np.log(xm) - (resp @ logx) / nk, lower)
            p2 = p1 / xm
            par = (np.log(p1), np.log(p2))
        with np.errstate(divide="ignore"):
            logit_w = np.log(w) - np.log1p(-w) if k > 1 else np.zeros(1)
        buffer = np.roll(buffer, -1, axis=0)
        buffer[-1] = np.vstack([logit_w, par[0], par[1]])
        it += 1
    if not (np.all(np.isfinite(p1)) and np.all(np.isfinite(p2)) and np.isfinite(ll)):
        return failed
    return w, p1.copy(), p2.copy(), ll, it
