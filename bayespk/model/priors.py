"""Priors as small serializable objects.

A :class:`Prior` names a PyMC distribution and its parameters. It round-trips
through a dict (and so through a TOML spec or JSON): ``{"dist": "LogNormal",
"mu": -3.2, "sigma": 1.0}``.

A :class:`MixturePrior` is a mixture prior read from a prior file written by
:mod:`bayespk.borrowing` (e.g. a robust MAP prior on log CL); in a spec it is
``typical = { file = "PRIOR.json" }``.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pymc as pm

from bayespk.errors import SpecError

__all__ = ["Prior", "MixturePrior", "ALLOWED", "finite_number"]


def finite_number(v, where: str, what: str = "") -> float:
    """``v`` as a float, or a SpecError naming ``where`` (and ``what``) when it is not a finite number.

    Refuses booleans, text, NaN, infinities and integers too large for a float
    (TOML integers are unbounded: a 401-digit integer is valid TOML).
    """
    rule = f"{what}must be a finite number" if what else "expected a finite number"
    if isinstance(v, bool) or not isinstance(v, (int, float, np.integer, np.floating)):
        raise SpecError(f"{where}: expected a finite number, got {v!r}")
    try:
        x = float(v)
    except OverflowError:
        raise SpecError(f"{where}: {rule}, got a {len(str(abs(int(v))))}-digit integer (larger than any "
                        "float)") from None
    if not math.isfinite(x):
        raise SpecError(f"{where}: {rule}, got {x}")
    return x


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
        object.__setattr__(self, "params", {k: _parameter(v, dist, k, where) for k, v in params.items()})
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
            _parameter(v, self.dist, k, where)
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


def _parameter(v, dist, name: str, where: str) -> float:
    """A prior parameter as a float; the error names the table, the parameter and the rule."""
    return finite_number(v, f"{where} {name}", f"parameter {name} of {dist} ")


# (family, scale) -> (component parameter names, PyMC component, support)
MIXTURES: dict[tuple[str, str], tuple[tuple[str, str], str, str]] = {
    ("normal", "log"): (("m", "s"), "LogNormal", "positive"),
    ("gamma", "natural"): (("a", "b"), "Gamma", "positive"),
    ("normal", "natural"): (("m", "s"), "Normal", "real"),
    ("beta", "natural"): (("a", "b"), "Beta", "unit"),
}


@dataclass(frozen=True)
class MixturePrior:
    """A mixture prior from a prior file (see :mod:`bayespk.borrowing`).

    ``scale = "log"`` with normal components means the prior is on the log of
    the parameter: the variable is positive and ``log(x)`` has the normal
    mixture density (a mixture of log-normals). ``scale = "natural"`` means
    the components are the parameter's own distribution (gamma: shape ``a``,
    rate ``b``).

    In a spec, ``typical = { file = "PRIOR.json" }`` (path relative to the
    spec file) reads the file; the resolved spec stores the absolute path and
    the components inline, and a spec with inline components does not read
    the file again, so a stored run is reproducible without it.

    Examples
    --------
    >>> p = MixturePrior("normal", "log", (0.8, 0.2), (0.0, 0.0), (0.2, 1.0))
    >>> p.support, MixturePrior.from_dict(p.to_dict()) == p
    ('positive', True)
    """

    family: str
    scale: str
    weights: tuple[float, ...]
    p1: tuple[float, ...]
    p2: tuple[float, ...]
    file: str | None = None

    def __post_init__(self):
        for k in ("weights", "p1", "p2"):
            object.__setattr__(self, k, tuple(float(v) for v in getattr(self, k)))
        self.validate()

    @property
    def names(self) -> tuple[str, str]:
        return MIXTURES[(self.family, self.scale)][0]

    @property
    def support(self) -> str:
        return MIXTURES[(self.family, self.scale)][2]

    @property
    def dist(self) -> str:
        return f"a {self.family} mixture on the {self.scale} scale"

    def validate(self, where: str = "mixture prior") -> None:
        if (self.family, self.scale) not in MIXTURES:
            raise SpecError(f"{where}: a {self.family!r} mixture on the {self.scale!r} scale is not supported; use "
                            + ", ".join(f"{f} on the {s} scale" for f, s in MIXTURES))
        n1, n2 = self.names
        w, a, b = np.array(self.weights), np.array(self.p1), np.array(self.p2)
        if not (len(w) == len(a) == len(b) >= 1):
            raise SpecError(f"{where}: weights, {n1} and {n2} need the same number (>= 1) of values")
        if not (np.all(np.isfinite(w)) and np.all(np.isfinite(a)) and np.all(np.isfinite(b))):
            raise SpecError(f"{where}: weights and component parameters must be finite numbers")
        if np.any(w < 0) or abs(w.sum() - 1) > 1e-6:
            raise SpecError(f"{where}: weights must be >= 0 and sum to 1, got {list(self.weights)}")
        if np.any(b <= 0) or (self.family != "normal" and np.any(a <= 0)):
            raise SpecError(f"{where}: component parameters must be > 0 ({n1}={list(self.p1)}, {n2}={list(self.p2)})")

    def create(self, name: str, **kwargs):
        """The PyMC random variable ``name`` (on the parameter's own scale) in the current model."""
        _, comp, _ = MIXTURES[(self.family, self.scale)]
        a, b = np.array(self.p1), np.array(self.p2)
        args = {"LogNormal": ("mu", "sigma"), "Normal": ("mu", "sigma"), "Gamma": ("alpha", "beta"),
                "Beta": ("alpha", "beta")}[comp]
        if len(self.weights) == 1:
            return getattr(pm, comp)(name, **{args[0]: a[0], args[1]: b[0]}, **kwargs)
        dists = getattr(pm, comp).dist(**{args[0]: a, args[1]: b})
        return pm.Mixture(name, w=np.array(self.weights), comp_dists=dists, **kwargs)

    def to_dict(self) -> dict:
        n1, n2 = self.names
        out: dict = {} if self.file is None else {"file": self.file}
        out.update({"family": self.family, "scale": self.scale, "weights": list(self.weights),
                    n1: list(self.p1), n2: list(self.p2)})
        return out

    @classmethod
    def from_dict(cls, d: dict, where: str = "prior", base_dir: Path | None = None) -> "MixturePrior":
        """From ``{file = ...}`` (read the file) or from inline components (``file`` kept as provenance)."""
        if not isinstance(d, dict):
            raise SpecError(f"{where}: expected a table, got {d!r}")
        allowed = ("file", "family", "scale", "weights", "m", "s", "a", "b")
        extra = [k for k in d if k not in allowed]
        if extra:
            raise SpecError(f"{where}: unknown key {extra[0]!r} in a mixture prior; allowed: {', '.join(allowed)}")
        file = d.get("file")
        if file is not None:
            if not isinstance(file, str):
                raise SpecError(f"{where} file: expected a path string, got {file!r}")
            p = Path(file).expanduser()
            if not p.is_absolute() and base_dir is not None:
                p = (base_dir / p).resolve()
            file = str(p)
        if set(d) <= {"file"}:
            if file is None:
                raise SpecError(f"{where}: a mixture prior needs file = \"PRIOR.json\" or inline components")
            return cls.from_file(file, where)
        family, scale = d.get("family"), d.get("scale", "natural")
        if (family, scale) not in MIXTURES:
            raise SpecError(f"{where}: family/scale {family!r}/{scale!r} is not a supported mixture prior")
        n1, n2 = MIXTURES[(family, scale)][0]
        missing = [k for k in ("weights", n1, n2) if k not in d]
        if missing:
            raise SpecError(f"{where}: a {family} mixture prior needs {', '.join(('weights', n1, n2))}; "
                            f"missing {', '.join(missing)}")
        for k in ("weights", n1, n2):
            v = d[k]
            if not isinstance(v, (list, tuple)):
                raise SpecError(f"{where}: {k} must be a list of numbers, got {v!r}")
            for j, x in enumerate(v):
                finite_number(x, f"{where} {k}[{j}]")
        try:
            return cls(family, scale, tuple(d["weights"]), tuple(d[n1]), tuple(d[n2]), file)
        except SpecError as e:
            raise SpecError(f"{where}: {e}") from None

    @classmethod
    def from_file(cls, path: str | Path, where: str = "prior") -> "MixturePrior":
        """Read a prior file (JSON written by ``bayespk prior map`` / :func:`bayespk.borrowing.write_prior`)."""
        p = Path(path)
        if not p.is_file():
            raise SpecError(f"{where}: prior file {p} does not exist")
        try:
            doc = json.loads(p.read_text(encoding="utf-8"))
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise SpecError(f"{where}: prior file {p} is not valid JSON ({e})") from None
        if not isinstance(doc, dict) or doc.get("format") != "bayespk-prior":
            raise SpecError(f"{where}: {p} is not a bayespk prior file (no \"format\": \"bayespk-prior\")")
        inline = {k: doc[k] for k in ("family", "scale", "weights", "m", "s", "a", "b") if k in doc}
        return cls.from_dict({"file": str(p.resolve()), **inline}, f"{where} (file {p})")

    def __repr__(self) -> str:
        n1, n2 = self.names
        comps = ", ".join(f"{w:.3g}:({a:.4g}, {b:.4g})" for w, a, b in zip(self.weights, self.p1, self.p2))
        src = f", file={Path(self.file).name!r}" if self.file else ""
        return f"MixturePrior({self.family} on {self.scale} scale, {n1}/{n2} {comps}{src})"
