"""Priors as small serializable objects.

A :class:`Prior` names a PyMC distribution and its parameters. It round-trips
through a dict (and so through a TOML spec or JSON): ``{"dist": "LogNormal",
"mu": -3.2, "sigma": 1.0}``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import pymc as pm

from bayespk.errors import SpecError

__all__ = ["Prior", "ALLOWED"]

# distribution -> (required parameters, optional parameters, support)
ALLOWED: dict[str, tuple[tuple[str, ...], tuple[str, ...], str]] = {
    "Normal": (("mu", "sigma"), (), "real"),
    "StudentT": (("nu", "mu", "sigma"), (), "real"),
    "LogNormal": (("mu", "sigma"), (), "positive"),
    "HalfNormal": (("sigma",), (), "positive"),
    "HalfCauchy": (("beta",), (), "positive"),
    "HalfStudentT": (("nu", "sigma"), (), "positive"),
    "Exponential": (("lam",), (), "positive"),
    "Gamma": (("alpha", "beta"), (), "positive"),
    "InverseGamma": (("alpha", "beta"), (), "positive"),
    "Uniform": (("lower", "upper"), (), "interval"),
    "Beta": (("alpha", "beta"), (), "unit"),
    "TruncatedNormal": (("mu", "sigma"), ("lower", "upper"), "interval"),
}


@dataclass(frozen=True)
class Prior:
    """A prior distribution: a PyMC distribution name and its parameters.

    Examples
    --------
    >>> p = Prior("LogNormal", mu=-3.2, sigma=1.0)
    >>> Prior.from_dict(p.to_dict()) == p
    True
    >>> p.to_dict()
    {'dist': 'LogNormal', 'mu': -3.2, 'sigma': 1.0}
    """

    dist: str
    params: dict[str, float] = field(default_factory=dict)

    def __init__(self, dist: str, /, where: str = "prior", **params: float):
        object.__setattr__(self, "dist", dist)
        object.__setattr__(self, "params", {k: float(v) for k, v in params.items()})
        self.validate(where)

    def __hash__(self) -> int:
        return hash((self.dist, tuple(sorted(self.params.items()))))

    @property
    def support(self) -> str:
        return ALLOWED[self.dist][2]

    def validate(self, where: str = "prior") -> None:
        if not isinstance(self.dist, str) or self.dist not in ALLOWED:
            raise SpecError(f"{where}: unknown distribution {self.dist!r}; use one of {', '.join(ALLOWED)}")
        required, optional, _ = ALLOWED[self.dist]
        missing = [p for p in required if p not in self.params]
        extra = [p for p in self.params if p not in required + optional]
        if missing or extra:
            raise SpecError(
                f"{where}: {self.dist} takes parameters {', '.join(required + optional)}; "
                + (f"missing {', '.join(missing)}" if missing else f"unknown {', '.join(extra)}")
            )
        for k, v in self.params.items():
            if not math.isfinite(v):
                raise SpecError(f"{where}: parameter {k} of {self.dist} must be a finite number, got {v}")
        for k in ("sigma", "beta", "lam", "alpha", "nu"):
            if k in self.params and self.params[k] <= 0:
                raise SpecError(f"{where}: parameter {k} of {self.dist} must be > 0, got {self.params[k]:g}")
        lo, hi = self.params.get("lower"), self.params.get("upper")
        if lo is not None and hi is not None and lo >= hi:
            raise SpecError(f"{where}: lower ({lo:g}) must be below upper ({hi:g})")

    def create(self, name: str, **kwargs):
        """Create the PyMC random variable inside the current model context."""
        return getattr(pm, self.dist)(name, **self.params, **kwargs)

    def to_dict(self) -> dict:
        return {"dist": self.dist, **self.params}

    @classmethod
    def from_dict(cls, d: dict, where: str = "prior") -> "Prior":
        if isinstance(d, Prior):
            return d
        if not isinstance(d, dict) or "dist" not in d:
            raise SpecError(f"{where}: a prior is a table like {{ dist = \"Normal\", mu = 0, sigma = 1 }}, got {d!r}")
        params = {k: v for k, v in d.items() if k != "dist"}
        for k, v in params.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise SpecError(f"{where}: parameter {k} must be a number, got {v!r}")
        return cls(d["dist"], where=where, **params)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v:g}" for k, v in self.params.items())
        return f"Prior({self.dist!r}, {args})"
