"""Joint priors of population parameters carried over from an earlier fit (whole-model priors).

A :class:`JointPrior` is a multivariate normal density on the *unconstrained*
scale of several population parameters at once (typical values, omegas,
covariate coefficients, residual SDs, PD/CK parameters), so the correlation
of the earlier posterior is kept. Each parameter's scale follows from the
support of the prior the new spec gives it:

============ ================================ ======================
support       unconstrained value u            parameter
============ ================================ ======================
positive      ``log(x)``                       ``exp(u)``
(0, 1)        ``logit(x)``                     ``sigmoid(u)``
[lo, hi]      ``logit((x - lo)/(hi - lo))``    ``lo + (hi - lo) sigmoid(u)``
real          ``x``                            ``u``
============ ================================ ======================

so an omega gets a log-normal marginal on its own scale, a fraction a
logit-normal one.

**Tempering** (a power prior, Ibrahim & Chen 2000): the earlier likelihood
raised to ``weight`` = a0 in (0, 1]; for the normal approximation of the
earlier posterior that divides its covariance by a0. ``weight`` = k / N states
an effective sample size of k of the earlier N subjects.

**Robustness** (as RBesT's robust MAP prior, Schmidli et al. 2014 Biometrics
70:1023): with ``robust`` = r > 0 the density is the mixture ``(1 - r)
MVN(m, S / a0) + r MVN(m, diag(s_u^2))``, where the wide component has, per
parameter, the spread of one subject's information: ``s_u = sqrt(N) sd`` (the
earlier posterior SD times the square root of its number of subjects), unless
``robust_sd`` states it. When new data conflict with the earlier ones, the
wide component takes over and the posterior follows the new data.

In a spec the prior is written inline (``[joint_prior]``) after it is resolved
from ``[prior_from]`` (see :mod:`bayespk.model.prior_from`), so a run
reproduces without the earlier run.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pymc as pm
import pytensor.tensor as pt

from bayespk.errors import SpecError
from bayespk.model.priors import finite_number

__all__ = ["JOINT_NAME", "JointPrior", "bounds_of"]

#: Name of the vector random variable (dims ``prior_from_parameter``) that holds the joint parameters.
JOINT_NAME = "prior_from"
JOINT_DIM = "prior_from_parameter"

_SUPPORT_BOUNDS = {"positive": (0.0, math.inf), "unit": (0.0, 1.0), "real": (-math.inf, math.inf)}


def bounds_of(prior) -> tuple[float, float]:
    """The support (lower, upper) of a :class:`~bayespk.model.priors.Prior` or mixture prior."""
    support = prior.support
    if support == "interval":
        lo = prior.params.get("lower", -math.inf)
        hi = prior.params.get("upper", math.inf)
        return float(lo), float(hi)
    return _SUPPORT_BOUNDS[support]


def to_unconstrained(x, lower: float, upper: float) -> np.ndarray:
    """Map values in (lower, upper) to the real line (see the module docstring)."""
    x = np.asarray(x, float)
    if math.isinf(lower) and math.isinf(upper):
        return x
    if math.isinf(upper):
        return np.log(x - lower)
    if math.isinf(lower):
        return -np.log(upper - x)
    p = (x - lower) / (upper - lower)
    return np.log(p) - np.log1p(-p)


def from_unconstrained(u, lower: float, upper: float):
    """The inverse of :func:`to_unconstrained` (numpy or PyTensor)."""
    lib = pt if type(u).__module__.startswith("pytensor") else np
    if math.isinf(lower) and math.isinf(upper):
        return u
    if math.isinf(upper):
        return lower + lib.exp(u)
    if math.isinf(lower):
        return upper - lib.exp(-u)
    sig = pt.sigmoid(u) if lib is pt else 1.0 / (1.0 + np.exp(-u))
    return lower + (upper - lower) * sig


@dataclass(frozen=True)
class JointPrior:
    """A (robust, tempered) multivariate normal prior on several population parameters.

    Parameters
    ----------
    names : tuple of str
        Population parameters as the model names them (``CL``, ``omega_CL``, ``CL_WT``, ``sigma_prop``...).
    lower, upper : tuple of float
        Support of each parameter (sets its unconstrained scale).
    mean : tuple of float
        Mean on the unconstrained scale.
    cov : tuple of tuples
        Covariance on the unconstrained scale (already tempered).
    robust : float
        Weight of the wide component, in [0, 1).
    robust_sd : tuple of float, optional
        SDs of the wide component (required when ``robust > 0``).
    source : dict
        Provenance (earlier run, weight, subjects...), written with the prior and not used to build it.
    """

    names: tuple[str, ...]
    lower: tuple[float, ...]
    upper: tuple[float, ...]
    mean: tuple[float, ...]
    cov: tuple[tuple[float, ...], ...]
    robust: float = 0.0
    robust_sd: tuple[float, ...] | None = None
    source: dict = field(default_factory=dict, compare=False)

    def __post_init__(self):
        self.validate()

    def __hash__(self) -> int:
        return hash((self.names, self.mean, self.cov, self.robust, self.robust_sd))

    # ------------------------------------------------------------------ checks
    def validate(self, where: str = "[joint_prior]") -> None:
        k = len(self.names)
        if k == 0:
            raise SpecError(f"{where}: names the parameters it covers; got none")
        if len(set(self.names)) != k:
            dup = next(n for n in self.names if self.names.count(n) > 1)
            raise SpecError(f"{where} names: {dup!r} appears twice")
        for key in ("lower", "upper", "mean"):
            if len(getattr(self, key)) != k:
                raise SpecError(f"{where} {key}: needs {k} values (one per name), got {len(getattr(self, key))}")
        for j, (lo, hi) in enumerate(zip(self.lower, self.upper)):
            if not lo < hi:
                raise SpecError(f"{where}: the support of {self.names[j]} is empty ({lo:g}, {hi:g})")
        cov = np.asarray(self.cov, float)
        if cov.shape != (k, k):
            raise SpecError(f"{where} cov: needs {k} x {k} values, got shape {cov.shape}")
        if not np.all(np.isfinite(cov)) or not np.all(np.isfinite(self.mean)):
            raise SpecError(f"{where}: mean and cov must be finite numbers")
        if not np.allclose(cov, cov.T, rtol=1e-8, atol=1e-12):
            raise SpecError(f"{where} cov: must be symmetric")
        try:
            np.linalg.cholesky(cov)
        except np.linalg.LinAlgError:
            raise SpecError(f"{where} cov: must be positive definite (a parameter is constant in the earlier "
                            "posterior, or two are perfectly correlated); leave such parameters out") from None
        if not 0.0 <= self.robust < 1.0:
            raise SpecError(f"{where} robust: the weight of the wide component must be in [0, 1), "
                            f"got {self.robust:g}")
        if self.robust > 0:
            if self.robust_sd is None or len(self.robust_sd) != k:
                raise SpecError(f"{where} robust_sd: a robust prior needs {k} SDs of its wide component")
            if not all(math.isfinite(s) and s > 0 for s in self.robust_sd):
                raise SpecError(f"{where} robust_sd: SDs must be finite and > 0, got {list(self.robust_sd)}")

    # ------------------------------------------------------------------ model
    def create(self):
        """The vector random variable :data:`JOINT_NAME` (dims ``prior_from_parameter``) in the current model."""
        mu, cov = np.asarray(self.mean), np.asarray(self.cov)
        model = pm.modelcontext(None)
        if JOINT_DIM not in model.coords:
            model.add_coord(JOINT_DIM, list(self.names))
        if self.robust == 0:
            return pm.MvNormal(JOINT_NAME, mu=mu, cov=cov, dims=JOINT_DIM)
        wide = np.diag(np.asarray(self.robust_sd) ** 2)
        return pm.Mixture(JOINT_NAME, w=np.array([1.0 - self.robust, self.robust]),
                          comp_dists=[pm.MvNormal.dist(mu=mu, cov=cov), pm.MvNormal.dist(mu=mu, cov=wide)],
                          dims=JOINT_DIM)

    def parameter(self, joint, name: str):
        """The parameter ``name`` (its own scale) from the vector random variable ``joint``."""
        j = self.names.index(name)
        return from_unconstrained(joint[j], self.lower[j], self.upper[j])

    def sd(self) -> np.ndarray:
        """Marginal SDs on the unconstrained scale (of the informative component)."""
        return np.sqrt(np.diag(np.asarray(self.cov)))

    # ------------------------------------------------------------------ build
    @classmethod
    def from_draws(cls, draws: Mapping[str, np.ndarray], bounds: Mapping[str, tuple[float, float]], *,
                   weight: float = 1.0, robust: float = 0.0, n_subjects: int | None = None,
                   robust_sd: float | Mapping[str, float] | None = None, source: dict | None = None,
                   where: str = "[prior_from]") -> "JointPrior":
        """The joint prior from posterior draws of the earlier fit (one array of draws per name).

        ``weight`` tempers (covariance / weight); the wide component's SDs are ``sqrt(n_subjects)`` times
        the posterior SDs unless ``robust_sd`` gives them (one number, or one per name).
        """
        weight, robust = _weights(weight, robust, where)
        names = tuple(draws)
        u = []
        for n in names:
            x = np.asarray(draws[n], float).ravel()
            lo, hi = bounds[n]
            if not np.all(np.isfinite(x)):
                raise SpecError(f"{where}: the earlier draws of {n} are not all finite")
            if np.any(x <= lo) or np.any(x >= hi):
                raise SpecError(f"{where}: the earlier draws of {n} leave the support ({lo:g}, {hi:g}) its prior "
                                "has in the new model")
            u.append(to_unconstrained(x, lo, hi))
        u = np.column_stack(u)
        if u.shape[0] < 2 * u.shape[1] + 2:
            raise SpecError(f"{where}: {u.shape[0]} draws are too few to estimate a {u.shape[1]}-parameter "
                            "covariance")
        mean = u.mean(axis=0)
        cov = np.atleast_2d(np.cov(u, rowvar=False))
        return cls._assemble(names, bounds, mean, cov, weight, robust, n_subjects, robust_sd, source or {}, where)

    @classmethod
    def from_estimates(cls, estimates: Mapping[str, tuple[float, float]], bounds: Mapping[str, tuple[float, float]],
                       *, weight: float = 1.0, robust: float = 0.0, n_subjects: int | None = None,
                       robust_sd: float | Mapping[str, float] | None = None, source: dict | None = None,
                       where: str = "[prior_from]") -> "JointPrior":
        """The joint prior from published estimates and standard errors (natural scale; independent).

        A positive parameter with estimate e and standard error s gets the log-scale SD
        ``sqrt(log(1 + (s/e)^2))`` (the log-normal with that mean and CV); a bounded one the delta-method SD.
        """
        weight, robust = _weights(weight, robust, where)
        names, mean, sd = tuple(estimates), [], []
        for n in names:
            e, s = estimates[n]
            lo, hi = bounds[n]
            if not lo < e < hi:
                raise SpecError(f"{where}: the estimate of {n} ({e:g}) is outside its support ({lo:g}, {hi:g})")
            if not (math.isfinite(s) and s > 0):
                raise SpecError(f"{where}: the standard error of {n} must be > 0, got {s!r}")
            mean.append(float(to_unconstrained(e, lo, hi)))
            if math.isinf(lo) and math.isinf(hi):
                sd.append(s)
            elif math.isinf(hi):
                sd.append(math.sqrt(math.log1p((s / (e - lo)) ** 2)))
            elif math.isinf(lo):
                sd.append(math.sqrt(math.log1p((s / (hi - e)) ** 2)))
            else:
                p = (e - lo) / (hi - lo)
                sd.append(s / (hi - lo) / (p * (1 - p)))
        cov = np.diag(np.square(sd))
        return cls._assemble(names, bounds, np.array(mean), cov, weight, robust, n_subjects, robust_sd,
                             source or {}, where)

    @classmethod
    def _assemble(cls, names, bounds, mean, cov, weight, robust, n_subjects, robust_sd, source, where):
        wide = None
        if robust > 0:
            if robust_sd is not None:
                if isinstance(robust_sd, Mapping):
                    missing = [n for n in names if n not in robust_sd]
                    if missing:
                        raise SpecError(f"{where} robust_sd: no SD for {', '.join(missing)}")
                    wide = tuple(finite_number(robust_sd[n], f"{where} robust_sd {n}") for n in names)
                else:
                    wide = (finite_number(robust_sd, f"{where} robust_sd"),) * len(names)
            elif n_subjects is None:
                raise SpecError(f"{where}: a robust prior needs robust_sd (the SD of its wide component on the "
                                "unconstrained scale) or the earlier study's number of subjects (n_subjects)")
            else:
                wide = tuple(float(v) for v in np.sqrt(n_subjects) * np.sqrt(np.diag(cov)))
        src = dict(source) | {"weight": weight, "robust": robust}
        if n_subjects is not None:
            src |= {"n_subjects": int(n_subjects), "effective_subjects": round(weight * n_subjects, 3)}
        return cls(names=names, lower=tuple(float(bounds[n][0]) for n in names),
                   upper=tuple(float(bounds[n][1]) for n in names), mean=tuple(float(v) for v in mean),
                   cov=tuple(tuple(float(v) for v in row) for row in cov / weight), robust=float(robust),
                   robust_sd=wide, source=src)

    # ------------------------------------------------------------------ spec
    def to_dict(self) -> dict:
        out: dict[str, Any] = {"names": list(self.names), "lower": [_num(v) for v in self.lower],
                               "upper": [_num(v) for v in self.upper], "mean": list(self.mean),
                               "cov": [list(r) for r in self.cov], "robust": self.robust}
        if self.robust_sd is not None:
            out["robust_sd"] = list(self.robust_sd)
        if self.source:
            out["source"] = {k: v for k, v in self.source.items() if v is not None}
        return out

    @classmethod
    def from_dict(cls, d: dict, where: str = "[joint_prior]") -> "JointPrior":
        if not isinstance(d, dict):
            raise SpecError(f"{where}: expected a table, got {d!r}")
        allowed = ("names", "lower", "upper", "mean", "cov", "robust", "robust_sd", "source")
        extra = [k for k in d if k not in allowed]
        if extra:
            raise SpecError(f"{where}: unknown key {extra[0]!r}; allowed: {', '.join(allowed)}")
        missing = [k for k in ("names", "lower", "upper", "mean", "cov") if k not in d]
        if missing:
            raise SpecError(f"{where}: missing {', '.join(missing)}")
        names = d["names"]
        if not isinstance(names, list) or not all(isinstance(n, str) for n in names):
            raise SpecError(f"{where} names: expected a list of parameter names, got {names!r}")

        def vec(key):
            v = d[key]
            if not isinstance(v, list):
                raise SpecError(f"{where} {key}: expected a list of numbers, got {v!r}")
            return tuple(_bound(x, f"{where} {key}[{j}]") if key in ("lower", "upper")
                         else finite_number(x, f"{where} {key}[{j}]") for j, x in enumerate(v))

        cov = d["cov"]
        if not isinstance(cov, list) or not all(isinstance(r, list) for r in cov):
            raise SpecError(f"{where} cov: expected a list of rows (lists of numbers)")
        cov = tuple(tuple(finite_number(x, f"{where} cov[{i}][{j}]") for j, x in enumerate(r))
                    for i, r in enumerate(cov))
        robust_sd = None if d.get("robust_sd") is None else vec("robust_sd")
        source = d.get("source", {})
        if not isinstance(source, dict):
            raise SpecError(f"{where} source: expected a table")
        return cls(tuple(names), vec("lower"), vec("upper"), vec("mean"), cov,
                   finite_number(d.get("robust", 0.0), f"{where} robust"), robust_sd, dict(source))


def _weights(weight, robust, where) -> tuple[float, float]:
    weight = finite_number(weight, f"{where} weight")
    if not 0.0 < weight <= 1.0:
        raise SpecError(f"{where} weight: the power-prior weight must be in (0, 1], got {weight:g}")
    robust = finite_number(robust, f"{where} robust")
    if not 0.0 <= robust < 1.0:
        raise SpecError(f"{where} robust: the weight of the wide component must be in [0, 1), got {robust:g}")
    return weight, robust


def _num(v: float):
    return v if math.isfinite(v) else ("inf" if v > 0 else "-inf")


def _bound(v, where: str) -> float:
    if v in ("inf", "-inf"):
        return float(v)
    return finite_number(v, where)
