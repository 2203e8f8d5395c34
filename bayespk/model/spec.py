"""Model specifications: the model as data (TOML file or Python objects).

A :class:`Spec` says which dataset, which structural model, the parameters
with their priors and inter-individual variability (IIV), covariate effects,
the residual error model and the sampler settings. It is parsed strictly:
an unknown or misspelt key is an error naming the key, never ignored.

The spec a fit ran with is stored *resolved*: every default filled in and the
data path made absolute, so ``spec.toml`` in a run directory reproduces the
run exactly. See the README for the format and the defaults.
"""

from __future__ import annotations

import math
import re
import tomllib
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np
import pytensor.tensor as pt
import tomli_w

from bayespk.errors import SpecError
from bayespk.model.joint_prior import JointPrior, bounds_of
from bayespk.model.priors import MixturePrior, Prior, finite_number
from bayespk.structural import OPTIONAL_PARAMETERS, STRUCTURES
from bayespk.structural.cart import CELL_KINETICS
from bayespk.structural.cart_ode import CELL_KINETICS_ODE
from bayespk.structural.pd import PD_MODELS

__all__ = [
    "Spec",
    "ParameterSpec",
    "CovariateSpec",
    "CovariateShrinkage",
    "TreatmentSpec",
    "ErrorSpec",
    "SamplerSpec",
    "DataSpec",
    "ERROR_MODELS",
    "EFFECTS",
    "DEFAULT_IIV",
]

ERROR_MODELS = {
    "additive": ("sigma_add",),
    "proportional": ("sigma_prop",),
    "combined": ("sigma_add", "sigma_prop"),
    "lognormal": ("sigma_log",),
}
EFFECTS = ("power", "exponential", "linear", "categorical")
BLQ_METHODS = ("M3", "M4", "drop")
DISTRIBUTIONS = ("normal", "student_t")
DEFAULT_NU = Prior("Gamma", alpha=2.0, beta=0.1)
DEFAULT_IOV = Prior("HalfNormal", sigma=0.3)
DEFAULT_LKJ_ETA = 2.0
DEFAULT_ODE_STEP = 0.25
SAMPLERS = ("nutpie", "pymc")
MAX_TREEDEPTH = 20  # [sampler] max_treedepth: at most 2**20 - 1 leapfrog steps per draw
BACKENDS = ("auto", "numba", "jax")  # how nutpie compiles the log-density
ADAPTATIONS = ("diag", "low_rank")  # nutpie mass-matrix adaptation
LOG_LIKELIHOOD = ("auto", "float32", "float64", "none")  # what a fit stores of the pointwise log-likelihood
CENTERING = ("none", "auto")  # how the etas of parameters without `centered` are parameterised
DEFAULT_IIV = Prior("HalfNormal", sigma=0.5)
DEFAULT_SIGMA_RELATIVE = Prior("HalfNormal", sigma=0.5)
DEFAULT_TYPICAL_LOG_SD = 1.0
DEFAULT_MULTIPLIER = Prior("LogNormal", mu=0.0, sigma=0.7)
DEFAULT_ASSAY_SCALE = Prior("LogNormal", mu=0.0, sigma=3.0)
QUANTITY_UNITS = ("time", "amount", "conc", "volume", "effect")  # keys of [data] units other than data columns


def _check_keys(d: dict, allowed: tuple[str, ...], where: str) -> None:
    if not isinstance(d, dict):
        raise SpecError(f"{where}: expected a table, got {d!r}")
    for k in d:
        if k not in allowed:
            raise SpecError(f"{where}: unknown key {k!r}; allowed keys: {', '.join(allowed)}")


def _iiv_block(d: dict, parameters: dict) -> tuple[tuple[str, ...], float]:
    """The ``[iiv]`` table: parameters whose etas are correlated (LKJ prior on their correlation)."""
    _check_keys(d, ("correlated", "lkj_eta"), "[iiv]")
    correlated = d.get("correlated", [])
    if not isinstance(correlated, list) or not all(isinstance(p, str) for p in correlated):
        raise SpecError("[iiv] correlated: expected a list of parameter names, e.g. [\"CL\", \"V\"]")
    for p in correlated:
        if p not in parameters:
            raise SpecError(f"[iiv] correlated: {p!r} is not a parameter of the model ({', '.join(parameters)})")
        if parameters[p].iiv is None:
            raise SpecError(f"[iiv] correlated: {p} has no IIV (iiv = false), so it cannot be correlated")
        if parameters[p].centered:
            raise SpecError(f"[iiv] correlated: {p} has centered = {parameters[p].centered:g}; correlated etas "
                            "are built from standardized ones (non-centered), so drop one of the two")
    if len(set(correlated)) != len(correlated):
        raise SpecError("[iiv] correlated: a parameter is listed twice")
    if len(correlated) == 1:
        raise SpecError("[iiv] correlated: needs at least two parameters")
    eta = _number(d.get("lkj_eta", DEFAULT_LKJ_ETA), "[iiv] lkj_eta")
    if eta <= 0:
        raise SpecError(f"[iiv] lkj_eta: the LKJ shape must be > 0, got {eta:g}")
    return tuple(correlated), eta


def _treatments(raw, structure: str, covariates) -> tuple:
    """The ``[[treatments]]`` list: time-varying multipliers of the CAR-T expansion rate."""
    if not isinstance(raw, list):
        raise SpecError("treatments: use [[treatments]] tables (a list)")
    out = tuple(TreatmentSpec.from_dict(t, i) for i, t in enumerate(raw))
    if out and structure not in CELL_KINETICS:
        raise SpecError(f"[[treatments]]: treatment multipliers act on the expansion rate of a CAR-T structure "
                        f"({', '.join(CELL_KINETICS)}), not {structure}; use [[covariates]] for time-varying "
                        "covariates of a PK model")
    seen = set()
    for i, t in enumerate(out):
        if t.column in seen:
            raise SpecError(f"[[treatments]] #{i + 1}: column {t.column} is given twice")
        seen.add(t.column)
    return out


def _tumor(raw, structure: str):
    """``[model] tumor = { column = "TB", reference = 20 }``: the baseline tumor burden of a mechanistic
    CAR-T model, B0 = column / reference (None: B0 = 1 for everyone)."""
    if raw is None:
        return None
    if structure not in CELL_KINETICS_ODE:
        raise SpecError(f"[model] tumor: only used by the mechanistic CAR-T structure "
                        f"({', '.join(CELL_KINETICS_ODE)}); use [[covariates]] with {structure}")
    if not isinstance(raw, dict) or not isinstance(raw.get("column"), str):
        raise SpecError("[model] tumor: expected { column = \"TB\", reference = 20 } (reference: the burden "
                        "of a typical patient, in the column's units)")
    _check_keys(raw, ("column", "reference"), "[model] tumor")
    ref = _number(raw.get("reference", 1.0), "[model] tumor reference")
    if ref <= 0:
        raise SpecError(f"[model] tumor reference: must be > 0, got {ref:g}")
    return raw["column"].upper(), ref


def _pd_block(model: dict, d: dict, base_dir: Path | None) -> dict:
    """PD keys of ``[model]`` and the ``[pd_error]`` table (empty without a PD model)."""
    pd = model.get("pd")
    if pd is None:
        for k in ("pd_observations", "pk_fit", "ode_step"):
            if k in model:
                raise SpecError(f"[model] {k}: only used with a PD model ([model] pd = one of {', '.join(PD_MODELS)})")
        if "pd_error" in d:
            raise SpecError("[pd_error]: only used with a PD model ([model] pd = ...)")
        return {}
    if not isinstance(pd, str) or pd not in PD_MODELS:
        raise SpecError(f"[model] pd: {pd!r} is not one of {', '.join(PD_MODELS)}")
    column, value = _pd_observations(model)
    pk_fit = model.get("pk_fit")
    if pk_fit is not None:
        if not isinstance(pk_fit, str):
            raise SpecError("[model] pk_fit: expected the path of a PK fit (fit.nc or its run directory)")
        p = Path(pk_fit).expanduser()
        pk_fit = str((base_dir / p).resolve() if not p.is_absolute() and base_dir is not None else p)
    step = _number(model.get("ode_step", DEFAULT_ODE_STEP), "[model] ode_step")
    if step <= 0:
        raise SpecError(f"[model] ode_step: the largest ODE step must be > 0, got {step:g}")
    pd_error = ErrorSpec.from_dict(d.get("pd_error", {"model": "additive"}), prefix="pd_")
    return {"pd": pd, "pd_observations": (column.upper(), value), "pd_error": pd_error, "pk_fit": pk_fit,
            "ode_step": step}


def _pd_observations(model: dict) -> tuple[str, float]:
    """``[model] pd_observations``: the column and value that mark the PD (second output's) observations."""
    obs = model.get("pd_observations", {"column": "DVID", "value": 2})
    if not isinstance(obs, dict):
        raise SpecError("[model] pd_observations: expected a table such as { column = \"DVID\", value = 2 }")
    _check_keys(obs, ("column", "value"), "[model] pd_observations")
    column = obs.get("column", "DVID")
    if not isinstance(column, str):
        raise SpecError("[model] pd_observations column: expected a column name such as \"DVID\" or \"CMT\"")
    return column.upper(), _number(obs.get("value", 2), "[model] pd_observations value")


def _covariates(raw, parameters: dict, of: str) -> tuple:
    """The ``[[covariates]]`` tables: each on a parameter of the model, one effect per column and parameter."""
    if not isinstance(raw, list):
        raise SpecError("covariates: use [[covariates]] tables (a list)")
    covariates = tuple(CovariateSpec.from_dict(c, i) for i, c in enumerate(raw))
    seen = set()
    for i, c in enumerate(covariates):
        if c.parameter not in parameters:
            raise SpecError(f"[[covariates]] #{i + 1} parameter: {c.parameter!r} is not a parameter "
                            f"{of} ({', '.join(parameters)})")
        if c.name in seen:
            raise SpecError(f"[[covariates]] #{i + 1}: a second effect of {c.column} on {c.parameter}")
        seen.add(c.name)
    return covariates


def _relation_only(params_raw) -> tuple[str, ...]:
    """Parameters that only a covariate relation uses (e.g. TM50 and HILL of a maturation function)."""
    if not isinstance(params_raw, dict):
        return ()
    used = set()
    for d in params_raw.values():
        if isinstance(d, dict) and isinstance(d.get("relation"), str):
            used |= set(re.findall(r"[A-Za-z][A-Za-z0-9_]*", d["relation"]))
    return tuple(p for p in params_raw if p in used and not (isinstance(params_raw[p], dict)
                                                             and "relation" in params_raw[p]))


def _number(v: Any, where: str) -> float:
    return finite_number(v, where)


def _units(d: Any) -> dict[str, str]:
    """``[data] units``: lower-case keys name a quantity (:data:`QUANTITY_UNITS`), other keys a data column."""
    if not isinstance(d, dict):
        raise SpecError("[data] units: expected a table such as { time = \"h\", amount = \"mg\", conc = \"mg/L\", "
                        "WT = \"kg\" }")
    out = {}
    for key, unit in d.items():
        if not isinstance(unit, str) or not unit.strip():
            raise SpecError(f"[data] units {key}: expected a unit as a non-empty string (e.g. \"mg/L\"), got {unit!r}")
        if key.islower():
            if key not in QUANTITY_UNITS:
                raise SpecError(f"[data] units: unknown key {key!r}; allowed: the quantities "
                                f"{', '.join(QUANTITY_UNITS)}, or a data column in upper case (e.g. WT)")
            name = key
        else:
            name = _column(key, f"[data] units {key}")
            if name in ("TIME", "AMT", "DV"):
                word = {"TIME": "time", "AMT": "amount", "DV": "conc"}[name]
                raise SpecError(f"[data] units {key}: give the unit of {name} as {word} = \"...\"")
        if name in out:
            raise SpecError(f"[data] units: {key!r} is given twice")
        out[name] = unit.strip()
    return out


def _column(v: Any, where: str) -> str:
    """A dataset column named in the spec (upper case), refusing names a fit cannot store.

    Columns become variable names in the model and in ``fit.nc`` (e.g.
    ``CL_WT`` for a covariate effect); netCDF uses ``/`` to separate groups,
    so a column with ``/`` must be renamed through ``[data] aliases``.
    """
    if not isinstance(v, str) or not v.strip():
        raise SpecError(f"{where}: expected a column name, got {v!r}")
    if "/" in v:
        fixed = "_".join(x for x in v.strip().upper().replace("/", "_").split("_") if x) or "X"
        raise SpecError(f"{where}: column {v!r} has a '/', which cannot be part of a variable name in fit.nc "
                        f"(netCDF uses it between groups); rename the column: [data] aliases = {{ \"{v}\" = "
                        f"\"{fixed}\" }} and {where.rsplit(' ', 1)[-1]} = \"{fixed}\"")
    return v.strip().upper()


@dataclass(frozen=True)
class DataSpec:
    """Where the dataset is, declared column renames, and the SHA-256 of the file a run used.

    ``sha256`` is written by ``bayespk fit`` into a run's ``spec.toml``; a spec
    that carries it is refused when the file's bytes no longer match.
    ``lloq`` is the limit of censored rows (BLQ=1 or CENS=1) without an LLOQ
    value of their own; the data summary says how many rows used it.
    ``ignore`` / ``accept`` are row filters with NONMEM's ``IGNORE=(...)`` /
    ``ACCEPT=(...)`` meaning, e.g. ``ignore = ["DV.EQ.0", "TIME.GT.24"]`` (see
    :func:`~bayespk.data.nonmem.read_nonmem`); the data summary counts the rows dropped.
    ``units`` declares the units of the data: the quantities ``time``,
    ``amount``, ``conc`` (and ``volume``, ``effect`` for PD outputs) and any data
    column (``WT = "kg"``); parameter units are derived from them
    (:mod:`bayespk.units`). Column keys are checked against the dataset by
    :meth:`check_unit_columns`.
    """

    path: str | None = None
    aliases: dict[str, str] = field(default_factory=dict)
    sha256: str | None = None
    lloq: float | None = None  # LLOQ of censored rows (BLQ=1 / CENS=1) that have no LLOQ value of their own
    ignore: tuple[str, ...] = ()  # NONMEM IGNORE=(...): drop rows where any condition holds
    accept: tuple[str, ...] = ()  # NONMEM ACCEPT=(...): keep only rows where any condition holds
    units: dict[str, str] = field(default_factory=dict)  # quantity or column -> unit, e.g. {"time": "h", "WT": "kg"}

    @property
    def filters(self) -> dict[str, list[str]]:
        """``ignore`` and ``accept`` as keywords of :func:`~bayespk.data.nonmem.read_nonmem`."""
        return {"ignore": list(self.ignore), "accept": list(self.accept)}

    @classmethod
    def from_dict(cls, d: dict, base_dir: Path | None) -> "DataSpec":
        _check_keys(d, ("path", "aliases", "sha256", "lloq", "ignore", "accept", "units"), "[data]")
        path = d.get("path")
        if path is not None:
            if not isinstance(path, str):
                raise SpecError(f"[data] path: expected a string, got {path!r}")
            p = Path(path).expanduser()
            if not p.is_absolute() and base_dir is not None:
                p = (base_dir / p).resolve()
            path = str(p)
        aliases = d.get("aliases", {})
        if not isinstance(aliases, dict) or not all(isinstance(v, str) for v in aliases.values()):
            raise SpecError("[data] aliases: expected a table of column = \"NONMEM name\"")
        sha256 = d.get("sha256")
        if sha256 is not None and not (isinstance(sha256, str) and re.fullmatch(r"[0-9a-f]{64}", sha256)):
            raise SpecError(f"[data] sha256: expected 64 lower-case hex digits (written by bayespk fit), "
                            f"got {sha256!r}")
        lloq = d.get("lloq")
        if lloq is not None:
            lloq = _number(lloq, "[data] lloq")
            if lloq <= 0:
                raise SpecError(f"[data] lloq: the limit of quantification must be > 0, got {lloq:g}")
        from bayespk.data.nonmem import filter_expressions
        from bayespk.errors import DataError

        filters = {}
        for key in ("ignore", "accept"):
            exprs = d.get(key, [])
            try:
                filter_expressions(exprs, f"[data] {key}")
            except DataError as e:
                raise SpecError(str(e)) from None
            filters[key] = (exprs,) if isinstance(exprs, str) else tuple(exprs)
        if filters["ignore"] and filters["accept"]:
            raise SpecError("[data] ignore and [data] accept cannot both be given (as NONMEM's IGNORE=(...) and "
                            "ACCEPT=(...)); give one of them")
        return cls(path=path, aliases=dict(aliases), sha256=sha256, lloq=lloq, units=_units(d.get("units", {})),
                   **filters)

    def check_unit_columns(self, columns) -> None:
        """Refuse a column key of ``units`` that is not a column of the dataset (``columns``)."""
        known = {str(c).upper() for c in columns}
        for key in self.units:
            if key not in QUANTITY_UNITS and key not in known:
                raise SpecError(f"[data] units: {key!r} is not a column of the dataset ({', '.join(map(str, columns))})"
                                f"; give units of data columns (e.g. WT = \"kg\") or of the quantities "
                                f"{', '.join(QUANTITY_UNITS)}")

    def to_dict(self) -> dict:
        out: dict[str, Any] = {}
        if self.path is not None:
            out["path"] = self.path
        if self.aliases:
            out["aliases"] = dict(self.aliases)
        if self.sha256 is not None:
            out["sha256"] = self.sha256
        if self.lloq is not None:
            out["lloq"] = self.lloq
        if self.ignore:
            out["ignore"] = list(self.ignore)
        if self.accept:
            out["accept"] = list(self.accept)
        if self.units:
            out["units"] = dict(self.units)
        return out


@dataclass(frozen=True)
class ParameterSpec:
    """A structural parameter: prior of its typical value, and its IIV (or none).

    The individual value is ``typical * covariate effects * exp(eta + kappa)``
    with ``eta ~ Normal(0, omega)`` per subject (non-centered); ``iiv`` is the
    prior of omega, the SD of eta on the log scale (``None``: no IIV). ``iov``
    is the prior of the SD of ``kappa ~ Normal(0, omega_iov)``, drawn per
    subject and occasion (the dataset's ``OCC`` column); ``None``: no IOV.

    ``centered``: the centring weight ``w`` in [0, 1] of the etas (``true``
    is 1, ``false`` 0): the sampler draws ``z ~ Normal(0, omega**w)`` per
    subject and ``eta = omega**(1 - w) * z`` (Papaspiliopoulos, Roberts and
    Skold 2007, Stat Sci 22:59), so ``w = 0`` is the standardized
    (non-centered) form ``z = eta / omega`` and ``w = 1`` samples the etas
    themselves; every ``w`` gives the same model. Centred etas suit parameters
    the individual data determine well (low shrinkage, e.g. CL and V with
    rich sampling), where the non-centered form ties every ``z`` to omega and
    mixes slowly; non-centered suits sparse data. ``None`` (not given): as
    ``[sampler] centering`` says (0 by default; ``"auto"``: from a short
    warm-up run, see :mod:`bayespk.fit`). Not with ``[iiv] correlated``
    (always non-centered).
    """

    name: str
    typical: Prior | MixturePrior
    iiv: Prior | None = DEFAULT_IIV
    iov: Prior | None = None
    centered: float | None = None
    relation: Any = None  # Expression: the covariate-adjusted typical value (a custom covariate model)
    unit: str | None = None  # overrides the unit derived from [data] units (bayespk.units)

    @classmethod
    def from_dict(cls, name: str, d: dict, base_dir: Path | None = None) -> "ParameterSpec":
        where = f"[parameters.{name}]"
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", name):
            raise SpecError(f"{where}: {name!r} is not a parameter name (letters, digits and _, starting with a "
                            "letter)")
        if not isinstance(d, dict):
            raise SpecError(f"{where}: expected a table such as {{ guess = 1.0 }}, got {d!r}")
        _check_keys(d, ("typical", "guess", "iiv", "iov", "centered", "relation", "unit"), where)
        if "typical" in d and "guess" in d:
            raise SpecError(f"{where}: give either 'typical' (a prior) or 'guess' (a value), not both")
        if "typical" in d and isinstance(d["typical"], dict) and "file" in d["typical"]:
            typical = MixturePrior.from_dict(d["typical"], f"{where} typical", base_dir)  # a prior file
        elif "typical" in d:
            typical = Prior.from_dict(d["typical"], f"{where} typical")
        elif "guess" in d:
            guess = _number(d["guess"], f"{where} guess")
            if guess <= 0:
                raise SpecError(f"{where} guess: must be > 0 (typical values are positive), got {guess:g}")
            typical = Prior("LogNormal", mu=round(math.log(guess), 6), sigma=DEFAULT_TYPICAL_LOG_SD)
        else:
            raise SpecError(
                f"{where}: needs 'typical' (a prior, e.g. {{ dist = \"LogNormal\", mu = -3, sigma = 1 }}) "
                "or 'guess' (a typical value; the prior is then LogNormal(log(guess), 1))"
            )
        bounded = name in ("F", "IMAX", "FB", "FM", "N0")  # bioavailability, maximal inhibition, CAR-T fractions
        allowed = ("positive", "unit") if bounded else ("positive",)
        if typical.support not in allowed:
            raise SpecError(f"{where} typical: the typical value of {name} must be positive; "
                            f"use a positive distribution such as LogNormal"
                            f"{' or Beta' if bounded else ''}, not {typical.dist}")
        if name == "IMAX" and typical.support != "unit":
            raise SpecError(f"{where} typical: IMAX must stay <= 1; give it a prior on [0, 1] such as "
                            f"{{ dist = \"Beta\", alpha = 2, beta = 2 }}, not {typical.dist}")
        iiv_raw = d.get("iiv", name != "IMAX")
        if iiv_raw is True:
            iiv = DEFAULT_IIV
        elif iiv_raw is False:
            iiv = None
        else:
            iiv = Prior.from_dict(iiv_raw, f"{where} iiv")
            if iiv.support != "positive":
                raise SpecError(f"{where} iiv: omega is an SD and needs a positive prior, not {iiv.dist}")
        iov_raw = d.get("iov", False)
        if iov_raw is True:
            iov = DEFAULT_IOV
        elif iov_raw is False:
            iov = None
        else:
            iov = Prior.from_dict(iov_raw, f"{where} iov")
            if iov.support != "positive":
                raise SpecError(f"{where} iov: the IOV SD needs a positive prior, not {iov.dist}")
        if name == "IMAX" and (iiv is not None or iov is not None):
            raise SpecError(f"{where}: IMAX must stay <= 1 for every subject; give it iiv = false (and no iov) "
                            "and a prior on [0, 1] such as Beta")
        centered = d.get("centered")
        if centered is not None:
            if not isinstance(centered, (bool, int, float)) or not 0 <= centered <= 1:
                raise SpecError(f"{where} centered: expected true, false or a centring weight in [0, 1], got "
                                f"{centered!r}")
            centered = float(centered)
            if centered and iiv is None:
                raise SpecError(f"{where} centered = {d['centered']!r}: {name} has no IIV (iiv = false), so there "
                                "are no etas to centre")
        relation = None
        if "relation" in d:
            from bayespk.model.expressions import parse

            relation = parse(d["relation"], f"{where} relation")
        unit = d.get("unit")
        if unit is not None and not isinstance(unit, str):
            raise SpecError(f"{where} unit: expected a string such as \"L/h\" (\"\" for unitless), got {unit!r}")
        return cls(name=name, typical=typical, iiv=iiv, iov=iov, centered=centered, relation=relation,
                   unit=unit if unit is None else unit.strip())

    def to_dict(self) -> dict:
        out = {"typical": self.typical.to_dict(), "iiv": self.iiv.to_dict() if self.iiv else False}
        if self.iov is not None:
            out["iov"] = self.iov.to_dict()
        if self.centered is not None:
            out["centered"] = bool(self.centered) if self.centered in (0.0, 1.0) else self.centered
        if self.relation is not None:
            out["relation"] = self.relation.source
        if self.unit is not None:
            out["unit"] = self.unit
        return out


@dataclass(frozen=True)
class CovariateSpec:
    """A covariate effect multiplying one parameter.

    ========== =============================== ==========================
    effect     factor on the parameter          default coefficient prior
    ========== =============================== ==========================
    power      (x / reference) ** theta         Normal(0, 1)
    exponential exp(theta * (x - reference))    Normal(0, 1/|reference|)
    linear     1 + theta * (x - reference)      Normal(0, 1/|reference|)
    categorical exp(theta[level]), 0 at the     Normal(0, 1) per level
               reference level
    ========== =============================== ==========================

    ``coefficient`` is a number (fixed) or a :class:`Prior`. For categorical
    effects ``reference`` is the reference level (default: the lowest).
    """

    parameter: str
    column: str
    effect: str
    reference: float | str | None = None
    coefficient: float | Prior | None = None

    @property
    def name(self) -> str:
        return f"{self.parameter}_{self.column}"

    @property
    def fixed(self) -> bool:
        return isinstance(self.coefficient, float)

    def log_factor(self, x, theta):
        """log of the factor of a numeric effect at covariate values ``x`` (numpy or pytensor).

        A linear factor is floored at 1e-300 (the model keeps it positive with a potential).
        """
        if self.effect == "power":
            return theta * np.log(np.asarray(x, float) / self.reference)
        if self.effect == "exponential":
            return theta * (x - self.reference)
        if self.effect == "linear":
            factor = 1.0 + theta * (x - self.reference)
            return (pt.log(pt.maximum(factor, 1e-300)) if type(factor).__module__.startswith("pytensor")
                    else np.log(np.maximum(factor, 1e-300)))
        raise SpecError(f"covariate {self.name}: a categorical effect has no numeric factor")

    def default_prior(self) -> Prior:
        if self.effect in ("exponential", "linear") and isinstance(self.reference, float) and self.reference:
            return Prior("Normal", mu=0.0, sigma=round(1.0 / abs(self.reference), 6))
        return Prior("Normal", mu=0.0, sigma=1.0)

    @classmethod
    def from_dict(cls, d: dict, i: int) -> "CovariateSpec":
        where = f"[[covariates]] #{i + 1}"
        _check_keys(d, ("parameter", "column", "effect", "reference", "coefficient"), where)
        for k in ("parameter", "column", "effect"):
            if k not in d or not isinstance(d[k], str):
                raise SpecError(f"{where}: '{k}' is required (a string)")
        column = _column(d["column"], f"{where} column")
        effect = d["effect"]
        if effect not in EFFECTS:
            raise SpecError(f"{where} effect: {effect!r} is not one of {', '.join(EFFECTS)}")
        ref = d.get("reference")
        if effect == "categorical":
            if isinstance(ref, bool) or (ref is not None and not isinstance(ref, (str, int, float))):
                raise SpecError(f"{where} reference: expected a level, got {ref!r}")
            ref = None if ref is None else (_number(ref, f"{where} reference") if not isinstance(ref, str) else ref)
        else:
            if ref is None:
                raise SpecError(f"{where} reference: a {effect} effect needs a reference value "
                                f"(e.g. the median {d['column'].upper()})")
            ref = _number(ref, f"{where} reference")
            if effect == "power" and ref <= 0:
                raise SpecError(f"{where} reference: a power effect needs a reference > 0, got {ref:g}")
        coef = d.get("coefficient")
        if coef is not None:
            coef = Prior.from_dict(coef, f"{where} coefficient") if isinstance(coef, dict) else _number(
                coef, f"{where} coefficient")
        return cls(parameter=d["parameter"], column=column, effect=effect, reference=ref, coefficient=coef)

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"parameter": self.parameter, "column": self.column, "effect": self.effect}
        if self.reference is not None:
            out["reference"] = self.reference
        if self.coefficient is not None:
            out["coefficient"] = self.coefficient.to_dict() if isinstance(self.coefficient, Prior) else self.coefficient
        return out


SHRINKAGE_PRIORS = ("horseshoe",)
SHRINKAGE_KEYS = ("prior", "relations", "expected", "slab_scale", "slab_df", "global_df", "noise_sd")


@dataclass(frozen=True)
class CovariateShrinkage:
    """``[covariate_shrinkage]``: a regularized horseshoe prior on covariate coefficients.

    The regularized horseshoe of Piironen & Vehtari (2017, Electron. J. Stat.
    11:5018, doi:10.1214/17-EJS1337SI) replaces the coefficient priors of the
    relations it names (default: every estimated ``[[covariates]]`` relation),
    so that one fit of the full model shrinks the effects the data do not
    support towards 0 and leaves the supported ones nearly free (a
    ``coefficient`` prior given for such a relation is not used).

    Each coefficient is shrunk on a standardized scale: ``beta_j`` is the
    change of the log parameter per SD across subjects of ``log(x/reference)``
    (power effects) or of ``x`` (exponential and linear effects; for linear
    the change of the factor), and per level against the reference for
    categorical effects (no scaling). The coefficient of the spec is then
    ``theta_j = beta_j / sd_j`` and keeps its name ``<P>_<COL>``.

    Non-centred form (P&V 2017, Appendix C.1)::

        beta_j = z_j · tau · lambda~_j,   lambda~_j² = c² lambda_j² / (c² + tau² lambda_j²)
        z_j ~ Normal(0, 1),   lambda_j ~ HalfCauchy(0, 1)
        tau ~ HalfStudentT(global_df, 0, tau0)       (global_df = 1: HalfCauchy)
        c² ~ InvGamma(slab_df / 2, slab_df · slab_scale² / 2)

    ``tau0 = expected / (D − expected) · noise_sd / sqrt(N)`` (P&V 2017, eq. 3.12),
    with D the number of relations shrunk, ``expected`` the prior guess of how
    many have an effect, N the number of subjects (covariate effects are
    informed by between-subject differences, so the subject is the unit) and
    ``noise_sd`` the pseudo-noise SD on the log-parameter scale (the
    between-subject SD the covariates explain part of; default 1, a wide
    choice that shrinks less than a typical IIV of 0.3 would). The levels of a
    categorical relation share its ``lambda_j`` (it counts once in D). The
    shrinkage factor of relation j is ``kappa_j = 1 / (1 + N tau² lambda~_j² /
    noise_sd²)`` (P&V 2017, eq. 2.5 with lambda~): near 1 shrunk to 0, near 0
    left to the data. The model gets ``hs_tau``, ``hs_c2``, ``hs_lambda_<rel>``,
    ``hs_z_<rel>`` and the deterministic ``hs_kappa_<rel>``.
    """

    relations: tuple[str, ...]
    expected: float = 1.0
    slab_scale: float = 1.0
    slab_df: float = 4.0
    global_df: float = 1.0
    noise_sd: float = 1.0
    prior: str = "horseshoe"

    def tau0(self, n_subjects: int) -> float:
        """The scale of the global shrinkage ``tau`` for ``n_subjects`` subjects (P&V 2017, eq. 3.12)."""
        d = len(self.relations)
        return self.expected / (d - self.expected) * self.noise_sd / math.sqrt(n_subjects)

    @classmethod
    def from_dict(cls, d: dict, covariates: tuple) -> "CovariateShrinkage":
        where = "[covariate_shrinkage]"
        _check_keys(d, SHRINKAGE_KEYS, where)
        prior = d.get("prior", "horseshoe")
        if prior not in SHRINKAGE_PRIORS:
            raise SpecError(f"{where} prior: {prior!r} is not one of {', '.join(SHRINKAGE_PRIORS)}")
        by_name = {c.name: c for c in covariates}
        if "relations" in d:
            rel = d["relations"]
            if not isinstance(rel, list) or not rel or not all(isinstance(r, str) for r in rel):
                raise SpecError(f"{where} relations: expected a non-empty list of relation names such as "
                                f"[\"CL_WT\"], got {rel!r}")
            for r in rel:
                if r not in by_name:
                    raise SpecError(f"{where} relations: {r!r} is not a [[covariates]] relation of the spec "
                                    f"(relations: {', '.join(by_name) or 'none'})")
                if by_name[r].fixed:
                    raise SpecError(f"{where} relations: {r} has a fixed coefficient ({by_name[r].coefficient:g}); "
                                    "only estimated coefficients can be shrunk")
            if len(set(rel)) < len(rel):
                raise SpecError(f"{where} relations: {next(r for r in rel if rel.count(r) > 1)} is listed twice")
            relations = tuple(rel)
        else:
            relations = tuple(c.name for c in covariates if not c.fixed)
            if not relations:
                raise SpecError(f"{where}: the spec has no [[covariates]] relation with an estimated coefficient "
                                "to shrink")
        kw = {}
        for key in ("expected", "slab_scale", "slab_df", "global_df", "noise_sd"):
            if key in d:
                kw[key] = _number(d[key], f"{where} {key}")
                if kw[key] <= 0:
                    raise SpecError(f"{where} {key}: must be > 0, got {kw[key]:g}")
        expected = kw.get("expected", 1.0)
        if not expected < len(relations):
            raise SpecError(f"{where} expected: the prior guess of the number of relations with an effect must lie "
                            f"in (0, D) with D = {len(relations)} relations shrunk, got {expected:g}")
        return cls(relations=relations, prior=prior, **kw)

    def to_dict(self) -> dict:
        return {"prior": self.prior, "relations": list(self.relations), "expected": self.expected,
                "slab_scale": self.slab_scale, "slab_df": self.slab_df, "global_df": self.global_df,
                "noise_sd": self.noise_sd}


@dataclass(frozen=True)
class TreatmentSpec:
    """A time-varying treatment multiplying the CAR-T expansion rate from its first administration.

    Records with ``column`` > 0 are administrations (an EVID 2 record at each
    one is enough); from the subject's first one on, the expansion rate is
    multiplied by ``multiplier`` (a number fixes it; a prior estimates it as
    ``rho_<COLUMN>``). Stein et al. (2019) modelled tocilizumab and
    corticosteroids this way.
    """

    column: str
    multiplier: float | Prior = DEFAULT_MULTIPLIER

    @property
    def name(self) -> str:
        return f"rho_{self.column}"

    @property
    def fixed(self) -> bool:
        return isinstance(self.multiplier, float)

    @classmethod
    def from_dict(cls, d: dict, i: int) -> "TreatmentSpec":
        where = f"[[treatments]] #{i + 1}"
        _check_keys(d, ("column", "multiplier"), where)
        if not isinstance(d.get("column"), str):
            raise SpecError(f"{where}: 'column' is required (the dataset column marking administrations)")
        column = _column(d["column"], f"{where} column")
        m = d.get("multiplier", DEFAULT_MULTIPLIER)
        if isinstance(m, dict):
            m = Prior.from_dict(m, f"{where} multiplier")
            if m.support != "positive":
                raise SpecError(f"{where} multiplier: a rate multiplier needs a positive prior such as "
                                f"LogNormal, not {m.dist}")
        elif not isinstance(m, Prior):
            m = _number(m, f"{where} multiplier")
            if m <= 0:
                raise SpecError(f"{where} multiplier: must be > 0, got {m:g}")
        return cls(column=column, multiplier=m)

    def to_dict(self) -> dict:
        m = self.multiplier
        return {"column": self.column, "multiplier": m if isinstance(m, float) else m.to_dict()}


@dataclass(frozen=True)
class ErrorSpec:
    """Residual error model and the treatment of BLQ observations.

    ``model``: additive ``y ~ N(f, sigma_add)``; proportional
    ``y ~ N(f, sigma_prop * f)``; combined ``y ~ N(f, sqrt(sigma_add^2 +
    (sigma_prop f)^2))``; lognormal ``log y ~ N(log f, sigma_log)``.
    ``blq``: ``"M3"`` (censored likelihood P(Y < LLOQ), the default),
    ``"M4"`` (every observation conditioned on Y > 0: BLQ rows contribute
    P(0 < Y < LLOQ) / P(Y > 0), others f(y) / P(Y > 0); the same as M3 under
    lognormal error) or ``"drop"`` (BLQ rows left out of the likelihood,
    counted in the summary).
    ``distribution``: ``"normal"`` or ``"student_t"`` (heavier tails for
    outliers, same scale parameters, degrees of freedom ``nu`` with prior
    ``nu``, default Gamma(2, 0.1)); Student-t is available for the additive,
    proportional and combined models.
    ``by``: a column (e.g. ``ASSAY``) whose levels are different assays of the
    same quantity: each level gets its own error parameters (dimension
    ``<BY>``), and the prediction for a level other than ``reference`` (default:
    the lowest) is multiplied by its factor ``scale_<BY>`` (prior ``scale``, or a
    number to fix it; default LogNormal(0, 3)), e.g. CAR+ cells/uL by flow
    cytometry against transgene copies/ug by qPCR.
    """

    model: str = "proportional"
    priors: dict[str, Prior] = field(default_factory=dict)
    blq: str = "M3"
    distribution: str = "normal"
    prefix: str = ""  # "pd_" for the PD observations of a PK/PD model
    by: str | None = None
    reference: float | str | None = None
    scale: float | Prior = DEFAULT_ASSAY_SCALE

    @property
    def scale_name(self) -> str:
        return f"{self.prefix}scale_{self.by}"

    @property
    def student_t(self) -> bool:
        return self.distribution == "student_t"

    @property
    def base_names(self) -> tuple[str, ...]:
        """Parameter names without the prefix (keys of ``priors``)."""
        return ERROR_MODELS[self.model] + (("nu",) if self.student_t else ())

    @property
    def names(self) -> tuple[str, ...]:
        """Names of the error parameters in the model and the posterior."""
        return tuple(self.prefix + n for n in self.base_names)

    @classmethod
    def from_dict(cls, d: dict, prefix: str = "") -> "ErrorSpec":
        table = f"[{prefix}error]"
        _check_keys(d, ("model", "blq", "distribution", "sigma_add", "sigma_prop", "sigma_log", "nu", "by",
                        "reference", "scale"), table)
        by_kw = _assay_keys(d, table)
        model = d.get("model", "proportional")
        if not isinstance(model, str) or model not in ERROR_MODELS:
            raise SpecError(f"{table} model: {model!r} is not one of {', '.join(ERROR_MODELS)}")
        blq = d.get("blq", "M3")
        if blq not in BLQ_METHODS:
            raise SpecError(f"{table} blq: {blq!r} is not one of {', '.join(BLQ_METHODS)}")
        distribution = d.get("distribution", "normal")
        if distribution not in DISTRIBUTIONS:
            raise SpecError(f"{table} distribution: {distribution!r} is not one of {', '.join(DISTRIBUTIONS)}")
        if distribution == "student_t" and model == "lognormal":
            raise SpecError(f"{table} distribution: student_t is available for additive, proportional and combined "
                            "error, not lognormal (use proportional error with student_t)")
        priors = {}
        if "nu" in d:
            if distribution != "student_t":
                raise SpecError(f"{table} nu: degrees of freedom are only used with distribution = \"student_t\"")
            priors["nu"] = Prior.from_dict(d["nu"], f"{table} nu")
            if priors["nu"].support != "positive":
                raise SpecError(f"{table} nu: degrees of freedom need a positive prior, not {priors['nu'].dist}")
        for k in ("sigma_add", "sigma_prop", "sigma_log"):
            if k in d:
                if k not in ERROR_MODELS[model]:
                    raise SpecError(f"{table} {k}: not a parameter of the {model} error model "
                                    f"(which has {', '.join(ERROR_MODELS[model])})")
                priors[k] = Prior.from_dict(d[k], f"{table} {k}")
                if priors[k].support != "positive":
                    raise SpecError(f"{table} {k}: an SD needs a positive prior, not {priors[k].dist}")
        return cls(model=model, priors=priors, blq=blq, distribution=distribution, prefix=prefix, **by_kw)

    def to_dict(self) -> dict:
        out = {"model": self.model, "blq": self.blq}
        if self.student_t:
            out["distribution"] = self.distribution
        if self.by is not None:
            out["by"] = self.by
            if self.reference is not None:
                out["reference"] = self.reference
            out["scale"] = self.scale if isinstance(self.scale, float) else self.scale.to_dict()
        return out | {k: p.to_dict() for k, p in self.priors.items()}


def _assay_keys(d: dict, table: str) -> dict:
    """``by`` / ``reference`` / ``scale`` of an error table (separate error models per assay)."""
    if "by" not in d:
        extra = [k for k in ("reference", "scale") if k in d]
        if extra:
            raise SpecError(f"{table} {extra[0]}: only used with by = \"<column>\" (one error model per assay)")
        return {}
    by = d["by"]
    if not isinstance(by, str) or not by:
        raise SpecError(f"{table} by: expected a column name such as \"ASSAY\", got {by!r}")
    _column(by, f"{table} by")
    ref = d.get("reference")
    if isinstance(ref, bool) or (ref is not None and not isinstance(ref, (str, int, float))):
        raise SpecError(f"{table} reference: expected a level of {by.upper()}, got {ref!r}")
    ref = _number(ref, f"{table} reference") if isinstance(ref, (int, float)) else ref
    scale = d.get("scale", DEFAULT_ASSAY_SCALE)
    if isinstance(scale, dict):
        scale = Prior.from_dict(scale, f"{table} scale")
        if scale.support != "positive":
            raise SpecError(f"{table} scale: a scale factor needs a positive prior such as LogNormal, not {scale.dist}")
    elif not isinstance(scale, Prior):
        scale = _number(scale, f"{table} scale")
        if scale <= 0:
            raise SpecError(f"{table} scale: must be > 0, got {scale:g}")
    return {"by": by.upper(), "reference": ref, "scale": scale}


@dataclass(frozen=True)
class SamplerSpec:
    """Sampler settings. ``name`` is ``nutpie`` (default) or ``pymc``.

    ``adaptation`` (nutpie only): ``"diag"`` (default) adapts a diagonal mass
    matrix; ``"low_rank"`` adds the few most correlated directions of the
    posterior (nutpie's low-rank modified mass matrix), for ridges such as the
    expansion-rate/contraction trade-off of the mechanistic CAR-T model.

    ``log_likelihood``: what the fit stores of the pointwise log-likelihood
    (the input of PSIS-LOO): ``"float32"`` or ``"float64"`` arrays in
    ``fit.nc``, or ``"none"`` (computed when ``loo``/``compare`` first ask for
    it). ``"auto"`` (default) stores float32 up to
    :data:`bayespk.fit.LOG_LIKELIHOOD_AUTO_MAX` values (chains x draws x
    observations) and nothing above.

    ``backend`` (nutpie only): how the log-density and its gradient are
    compiled: ``"numba"`` (CPU, cached on disk), ``"jax"`` (XLA; the path for a
    GPU, and for ODE models, whose diffrax solver is JAX), or ``"auto"``
    (default): ``jax`` for models with an ODE written by the user, else ``numba``.

    ``centering``: how the etas of parameters whose ``centered`` weight the
    spec does not give are parameterised. ``"none"`` (default): standardized
    (``centered = 0``). ``"auto"``: a short warm-up run of the standardized
    model estimates, per parameter, the share of each eta's posterior
    precision that the subject's own data give, ``(1 - eta shrinkage)**2``,
    and that share becomes the centring weight
    (:func:`bayespk.fit.centering_weights`,
    :data:`bayespk.fit.CENTERING_WARMUP`); the run's spec records the weights.
    Not the default: on the bundled CAR-T study it once left omega_TMAX
    unconverged (README, "Rich data").

    ``max_treedepth``: the NUTS trajectory stops after ``2**max_treedepth - 1``
    leapfrog steps (default 10, as in Stan and PyMC; 1 to 20). A lower limit
    makes exploratory and test fits of expensive models (ODEs) cheaper and
    their draws more correlated; the diagnostics count the draws that hit it.
    """

    name: str = "nutpie"
    chains: int = 4
    draws: int = 1000
    tune: int = 1000
    seed: int | None = None
    target_accept: float = 0.9
    adaptation: str = "diag"
    log_likelihood: str = "auto"
    backend: str = "auto"
    centering: str = "none"
    max_treedepth: int = 10

    @classmethod
    def from_dict(cls, d: dict) -> "SamplerSpec":
        _check_keys(d, ("name", "chains", "draws", "tune", "seed", "target_accept", "adaptation", "log_likelihood",
                        "backend", "centering", "max_treedepth"), "[sampler]")
        out = cls()
        kw: dict[str, Any] = {}
        for k in ("name", "adaptation", "log_likelihood", "backend", "centering"):
            if k in d:
                kw[k] = d[k]
        for k in ("chains", "draws", "tune", "seed", "max_treedepth"):
            if k in d:
                v = d[k]
                if isinstance(v, bool) or not isinstance(v, int) or v < (0 if k == "seed" else 1):
                    raise SpecError(f"[sampler] {k}: expected a whole number >= {0 if k == 'seed' else 1}, got {v!r}")
                kw[k] = v
        if "target_accept" in d:
            kw["target_accept"] = _number(d["target_accept"], "[sampler] target_accept")
        out = replace(out, **kw)
        out.validate()
        return out

    def validate(self) -> None:
        if self.name not in SAMPLERS:
            raise SpecError(f"[sampler] name: {self.name!r} is not one of {', '.join(SAMPLERS)}")
        if not 0.5 <= self.target_accept < 1:
            raise SpecError(f"[sampler] target_accept: must be in [0.5, 1), got {self.target_accept:g}")
        if self.adaptation not in ADAPTATIONS:
            raise SpecError(f"[sampler] adaptation: {self.adaptation!r} is not one of {', '.join(ADAPTATIONS)}")
        if self.log_likelihood not in LOG_LIKELIHOOD:
            raise SpecError(f"[sampler] log_likelihood: {self.log_likelihood!r} is not one of "
                            f"{', '.join(LOG_LIKELIHOOD)}")
        if self.backend not in BACKENDS:
            raise SpecError(f"[sampler] backend: {self.backend!r} is not one of {', '.join(BACKENDS)}")
        if self.centering not in CENTERING:
            raise SpecError(f"[sampler] centering: {self.centering!r} is not one of {', '.join(CENTERING)}")
        if isinstance(self.max_treedepth, bool) or not isinstance(self.max_treedepth, int) \
                or not 1 <= self.max_treedepth <= MAX_TREEDEPTH:
            raise SpecError(f"[sampler] max_treedepth: expected a whole number from 1 to {MAX_TREEDEPTH}, got "
                            f"{self.max_treedepth!r}")
        if self.backend != "auto" and self.name != "nutpie":
            raise SpecError(f"[sampler] backend = {self.backend!r} needs name = \"nutpie\"")
        if self.adaptation != "diag" and self.name != "nutpie":
            raise SpecError(f"[sampler] adaptation = {self.adaptation!r} needs name = \"nutpie\"; "
                            f"the pymc sampler adapts a diagonal mass matrix")

    def to_dict(self) -> dict:
        out = {"name": self.name, "chains": self.chains, "draws": self.draws, "tune": self.tune,
               "target_accept": self.target_accept}
        if self.seed is not None:
            out["seed"] = self.seed
        if self.adaptation != "diag":
            out["adaptation"] = self.adaptation
        if self.log_likelihood != "auto":
            out["log_likelihood"] = self.log_likelihood
        if self.backend != "auto":
            out["backend"] = self.backend
        if self.centering != "none":
            out["centering"] = self.centering
        if self.max_treedepth != 10:
            out["max_treedepth"] = self.max_treedepth
        return out


@dataclass(frozen=True)
class Spec:
    """A complete model specification.

    Examples
    --------
    >>> from bayespk.model.spec import Spec
    >>> spec = Spec.from_dict({
    ...     "model": {"structure": "1cmt_iv"},
    ...     "parameters": {"CL": {"guess": 0.005}, "V": {"guess": 1.0}},
    ...     "error": {"model": "proportional"},
    ... })
    >>> spec.parameters["CL"].typical
    Prior('LogNormal', mu=-5.29832, sigma=1)
    """

    structure: str
    parameters: dict[str, ParameterSpec]
    covariates: tuple[CovariateSpec, ...] = ()
    error: ErrorSpec = field(default_factory=ErrorSpec)
    sampler: SamplerSpec = field(default_factory=SamplerSpec)
    data: DataSpec = field(default_factory=DataSpec)
    name: str = "model"
    description: str = ""
    correlated: tuple[str, ...] = ()
    lkj_eta: float = DEFAULT_LKJ_ETA
    pd: str | None = None
    pd_observations: tuple[str, float] = ("DVID", 2.0)
    pd_error: ErrorSpec | None = None
    pk_fit: str | None = None
    ode_step: float = DEFAULT_ODE_STEP
    treatments: tuple[TreatmentSpec, ...] = ()
    tumor: tuple[str, float] | None = None  # mechanistic CAR-T: baseline tumor column and reference
    user: Any = None  # UserModel: equations written in the spec ([model] states/ode/... or prediction)
    joint_prior: Any = None  # JointPrior: whole-model prior from an earlier fit ([prior_from] / [joint_prior])
    covariate_shrinkage: CovariateShrinkage | None = None  # [covariate_shrinkage]: regularized horseshoe

    @property
    def pd_parameters(self) -> tuple[str, ...]:
        return PD_MODELS[self.pd].parameters if self.pd else ()

    @classmethod
    def from_toml(cls, path: str | Path, structural=None) -> "Spec":
        """Read a TOML spec file; relative data paths are taken from the file's folder.

        ``structural``: a model written in Python (:class:`~bayespk.structural.diffeq.ODEModel` or
        :class:`~bayespk.model.user.AlgebraicModel`), for a spec without ``[model]`` equations.
        """
        p = Path(path)
        if p.is_dir():
            raise SpecError(f"{path}: is a directory, not a spec file")
        if not p.is_file():
            raise SpecError(f"{path}: no such spec file")
        try:
            d = tomllib.loads(p.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as e:
            raise SpecError(f"{path}: not valid TOML ({e})") from None
        except UnicodeDecodeError as e:
            raise SpecError(f"{path}: not valid TOML (not UTF-8 text: {e})") from None
        d.setdefault("name", p.stem)
        try:
            return cls.from_dict(d, base_dir=p.parent.resolve(), structural=structural)
        except SpecError as e:
            raise SpecError(f"{path}: {e}") from None

    @classmethod
    def from_dict(cls, d: dict, base_dir: Path | None = None, structural=None) -> "Spec":
        _check_keys(d, ("name", "description", "data", "model", "parameters", "iiv", "covariates", "error",
                        "pd_error", "sampler", "treatments", "prior_from", "joint_prior", "covariate_shrinkage"),
                    "spec")
        if "prior_from" in d and "joint_prior" in d:
            raise SpecError("[prior_from] and [joint_prior]: give one (a resolved spec stores [joint_prior], the "
                            "prior [prior_from] made)")
        spec = cls._from_dict({k: v for k, v in d.items()
                               if k not in ("prior_from", "joint_prior", "covariate_shrinkage")}, base_dir, structural)
        if "covariate_shrinkage" in d:
            spec = replace(spec, covariate_shrinkage=CovariateShrinkage.from_dict(d["covariate_shrinkage"],
                                                                                  spec.covariates))
        if "joint_prior" in d:
            spec = spec.with_joint_prior(JointPrior.from_dict(d["joint_prior"]))
        elif "prior_from" in d:
            from bayespk.model.prior_from import resolve_prior_from

            spec = spec.with_joint_prior(resolve_prior_from(d["prior_from"], spec, base_dir))
        shrunk = spec.covariate_shrinkage.relations if spec.covariate_shrinkage is not None else ()
        both = [n for n in shrunk if spec.joint_prior is not None and n in spec.joint_prior.names]
        if both:
            raise SpecError(f"[covariate_shrinkage] relations: {', '.join(both)} also take their prior from the joint "
                            "prior; give each coefficient one prior (leave it out of one of them)")
        return spec

    @classmethod
    def _from_dict(cls, d: dict, base_dir: Path | None, structural) -> "Spec":
        model = d.get("model")
        if structural is not None:
            if model not in (None, {}) and not set(model) <= {"python", "pd_observations"}:
                k = next(k for k in model if k not in ("python", "pd_observations"))
                raise SpecError(f"[model] {k}: the model is given in Python (structural=...); leave [model] "
                                "out of the spec (except pd_observations, for a model with a pd_output)")
            return cls._user_model(d, model or {}, base_dir, structural)
        if isinstance(model, dict) and "python" in model:
            raise SpecError(f"[model] python = {model['python']!r}: this model was written in Python; give it "
                            "again, e.g. bpk.load(run, structural=model) or PopulationModel(spec, structural=model)")
        if model is None:
            raise SpecError("[model] is required, with structure = one of " + ", ".join(STRUCTURES))
        from bayespk.model.user import USER_MODEL_KEYS

        _check_keys(model, ("structure", "pd", "pd_observations", "pk_fit", "ode_step", "tumor") + USER_MODEL_KEYS,
                    "[model]")
        if any(k in model for k in USER_MODEL_KEYS) or "structure" not in model:
            return cls._user_model(d, model, base_dir)
        structure = model.get("structure")
        if not isinstance(structure, str) or structure not in STRUCTURES:
            raise SpecError(f"[model] structure: {structure!r} is not one of {', '.join(STRUCTURES)}")
        pd_kw = _pd_block(model, d, base_dir)
        needed = STRUCTURES[structure].parameters + (PD_MODELS[pd_kw["pd"]].parameters if pd_kw else ())
        optional = STRUCTURES[structure].optional_parameters
        params_raw = d.get("parameters", {})
        if isinstance(params_raw, dict):
            for k in params_raw:
                if k in OPTIONAL_PARAMETERS and k not in optional and k not in needed:
                    raise SpecError(f"[parameters] {k}: the {OPTIONAL_PARAMETERS[k][0]} needs a structure with an "
                                    f"absorption depot; {structure} has none")
        _check_keys(params_raw, needed + optional + _relation_only(params_raw), "[parameters]")
        missing = [p for p in needed if p not in params_raw]
        if missing:
            raise SpecError(f"[parameters]: structure {structure} needs {', '.join(needed)}; "
                            f"missing {', '.join(missing)}")
        names = needed + tuple(p for p in optional if p in params_raw) + _relation_only(params_raw)
        parameters = {p: ParameterSpec.from_dict(p, params_raw[p], base_dir) for p in names}
        cls._check_relations(parameters, None)
        correlated, lkj_eta = _iiv_block(d.get("iiv", {}), parameters)
        covariates = _covariates(d.get("covariates", []), parameters, f"of {structure}")
        treatments = _treatments(d.get("treatments", []), structure, covariates)
        tumor = _tumor(model.get("tumor"), structure)
        name = d.get("name", "model")
        description = d.get("description", "")
        if not isinstance(name, str) or not isinstance(description, str):
            raise SpecError("name and description must be strings")
        return cls(
            structure=structure,
            parameters=parameters,
            covariates=covariates,
            error=ErrorSpec.from_dict(d.get("error", {})),
            sampler=SamplerSpec.from_dict(d.get("sampler", {})),
            data=DataSpec.from_dict(d.get("data", {}), base_dir),
            name=name,
            description=description,
            correlated=correlated,
            lkj_eta=lkj_eta,
            treatments=treatments,
            tumor=tumor,
            **pd_kw,
        )

    @classmethod
    def _user_model(cls, d: dict, model: dict, base_dir: Path | None, structural=None) -> "Spec":
        """A spec whose [model] gives equations (:mod:`bayespk.model.user`) instead of a structure, or
        whose model is given in Python (``structural``)."""
        from bayespk.model.user import USER_MODEL_KEYS, python_model, user_model

        if structural is None and "structure" in model:
            k = next(k for k in USER_MODEL_KEYS if k in model)
            raise SpecError(f"[model] {k}: give either structure = a built-in model or the model's equations "
                            "(states with [model.ode], or prediction), not both")
        elif structural is None and not any(k in model for k in ("states", "prediction")):
            raise SpecError("[model]: needs structure = one of " + ", ".join(STRUCTURES) + ", or the model's "
                            "equations: states = [...] with [model.ode], or prediction = \"...\" (see the "
                            "README, Writing your own model)")
        for k in ("pd", "pk_fit", "ode_step", "tumor"):
            if k in model:
                raise SpecError(f"[model] {k}: not used by a model written as equations (write the PD part as "
                                "equations too, with pd_output)")
        if "treatments" in d:
            raise SpecError("treatments: not used by a model written as equations")
        two = ("pd_output" in model) if structural is None else getattr(structural, "pd_output", None) is not None
        for k, present in (("[model] pd_observations", "pd_observations" in model), ("[pd_error]", "pd_error" in d)):
            if present and not two:
                raise SpecError(f"{k}: only used by a model with a second output (pd_output = \"...\", the "
                                "quantity the PD observations measure)")
        pd_kw = {}
        if two:
            pd_kw = {"pd_observations": _pd_observations(model),
                     "pd_error": ErrorSpec.from_dict(d.get("pd_error", {"model": "additive"}), prefix="pd_")}
        params_raw = d.get("parameters", {})
        if not isinstance(params_raw, dict) or not params_raw:
            raise SpecError("[parameters]: a model written as equations needs its parameters, e.g. "
                            "[parameters.CL] guess = 5")
        parameters = {p: ParameterSpec.from_dict(p, v, base_dir) for p, v in params_raw.items()}
        name = d.get("name", "model")
        in_relations = set().union(*(p.relation.names for p in parameters.values() if p.relation is not None))
        if structural is not None:
            user = python_model(structural, parameters, also_used=in_relations)
        else:
            user = user_model({k: v for k, v in model.items() if k in USER_MODEL_KEYS}, parameters, name=name,
                              also_used=in_relations)
        cls._check_relations(parameters, user)
        correlated, lkj_eta = _iiv_block(d.get("iiv", {}), parameters)
        covariates = _covariates(d.get("covariates", []), parameters, "of the model")
        description = d.get("description", "")
        if not isinstance(name, str) or not isinstance(description, str):
            raise SpecError("name and description must be strings")
        return cls(structure=user.kind, parameters=parameters, covariates=covariates,
                   error=ErrorSpec.from_dict(d.get("error", {})), sampler=SamplerSpec.from_dict(d.get("sampler", {})),
                   data=DataSpec.from_dict(d.get("data", {}), base_dir), name=name, description=description,
                   correlated=correlated, lkj_eta=lkj_eta, user=user, **pd_kw)

    @staticmethod
    def _check_relations(parameters: dict, user) -> None:
        for name, p in parameters.items():
            if p.relation is None:
                continue
            if name not in p.relation.names:
                raise SpecError(f"[parameters.{name}] relation = \"{p.relation.source}\": the relation gives the "
                                f"typical {name} for a subject's covariates and must use {name} itself (its "
                                f"typical value), e.g. \"{name} * (WT/70)^0.75\"")
            states = getattr(user.model, "states", ()) if user is not None else ()
            bad = [n for n in p.relation.names if n in states or n in ("t", "TAD", "DOSE")]
            if bad:
                raise SpecError(f"[parameters.{name}] relation = \"{p.relation.source}\": {bad[0]!r} is not "
                                "available in a covariate relation (parameters and data columns are)")

    @property
    def population_parameters(self) -> list[str]:
        """Sampled population parameters in report order: typical values, omegas,
        estimated covariate coefficients, residual SDs."""
        names = list(self.parameters)
        names += [f"omega_{p}" for p, ps in self.parameters.items() if ps.iiv is not None]
        names += [f"omega_iov_{p}" for p, ps in self.parameters.items() if ps.iov is not None]
        names += [f"corr_{a}_{b}" for i, a in enumerate(self.correlated) for b in self.correlated[i + 1:]]
        names += [c.name for c in self.covariates if not isinstance(c.coefficient, float)]
        names += [t.name for t in self.treatments if not t.fixed]
        for err in (self.error, self.pd_error):
            if err is not None:
                names += list(err.names)
                if err.by is not None and not isinstance(err.scale, float):
                    names.append(err.scale_name)
        return names

    def to_dict(self) -> dict:
        out: dict[str, Any] = {"name": self.name}
        if self.description:
            out["description"] = self.description
        data = self.data.to_dict()
        if data:
            out["data"] = data
        out["model"] = dict(self.user.raw) if self.user is not None else {"structure": self.structure}
        if self.user is not None and self.pd_error is not None:
            out["model"]["pd_observations"] = {"column": self.pd_observations[0], "value": self.pd_observations[1]}
        if self.tumor is not None:
            out["model"]["tumor"] = {"column": self.tumor[0], "reference": self.tumor[1]}
        if self.pd:
            out["model"] |= {"pd": self.pd, "pd_observations": {"column": self.pd_observations[0],
                                                               "value": self.pd_observations[1]},
                             "ode_step": self.ode_step}
            if self.pk_fit:
                out["model"]["pk_fit"] = self.pk_fit
        out["parameters"] = {k: p.to_dict() for k, p in self.parameters.items()}
        if self.correlated:
            out["iiv"] = {"correlated": list(self.correlated), "lkj_eta": self.lkj_eta}
        if self.covariates:
            out["covariates"] = [c.to_dict() for c in self.covariates]
        if self.treatments:
            out["treatments"] = [t.to_dict() for t in self.treatments]
        out["error"] = self.error.to_dict()
        if self.pd_error is not None:
            out["pd_error"] = self.pd_error.to_dict()
        out["sampler"] = self.sampler.to_dict()
        if self.joint_prior is not None:
            out["joint_prior"] = self.joint_prior.to_dict()
        if self.covariate_shrinkage is not None:
            out["covariate_shrinkage"] = self.covariate_shrinkage.to_dict()
        return out

    def to_toml(self) -> str:
        return tomli_w.dumps(self.to_dict())

    def write(self, path: str | Path) -> None:
        Path(path).write_text(self.to_toml())

    def with_sampler(self, **overrides: Any) -> "Spec":
        """A copy with sampler settings replaced (``None`` values are ignored)."""
        kw = {k: v for k, v in overrides.items() if v is not None}
        sampler = replace(self.sampler, **kw)
        sampler.validate()
        return replace(self, sampler=sampler)

    def with_centering(self, weights: dict[str, float]) -> "Spec":
        """A copy whose parameters ``weights`` names have those centring weights (``centered``)."""
        params = {n: replace(p, centered=float(weights[n])) if n in weights else p for n, p in self.parameters.items()}
        return replace(self, parameters=params)

    def population_bounds(self) -> dict[str, tuple[float, float]]:
        """The scalar population parameters a joint prior can cover, with their support: typical values,
        omegas (IIV and IOV), estimated numeric covariate coefficients, treatment multipliers and residual
        error parameters (not those per assay). Correlations of the etas are not covered (LKJ prior)."""
        positive = (0.0, math.inf)
        out = {}
        for name, p in self.parameters.items():
            out[name] = bounds_of(p.typical)
            if p.iiv is not None:
                out[f"omega_{name}"] = positive
            if p.iov is not None:
                out[f"omega_iov_{name}"] = positive
        for c in self.covariates:
            if isinstance(c.coefficient, Prior) and c.effect != "categorical":
                out[c.name] = bounds_of(c.coefficient)
        for t in self.treatments:
            if not t.fixed:
                out[t.name] = positive
        for err in (self.error, self.pd_error):
            if err is not None and err.by is None:
                out |= {n: positive for n in err.names}
        return out

    def with_joint_prior(self, prior: "JointPrior | None") -> "Spec":
        """A copy whose population parameters ``prior.names`` take their prior from ``prior`` (jointly)."""
        if prior is None:
            return replace(self, joint_prior=None)
        bounds = self.population_bounds()
        unknown = [n for n in prior.names if n not in bounds]
        if unknown:
            raise SpecError(f"[joint_prior] names: {', '.join(unknown)} not a scalar population parameter of this "
                            f"model (it has {', '.join(bounds)})")
        for j, n in enumerate(prior.names):
            if (prior.lower[j], prior.upper[j]) != bounds[n]:
                raise SpecError(f"[joint_prior]: {n} has support ({prior.lower[j]:g}, {prior.upper[j]:g}) in the "
                                f"joint prior but ({bounds[n][0]:g}, {bounds[n][1]:g}) in this model")
        if self.pk_fit is not None:
            raise SpecError("[joint_prior]: not with [model] pk_fit (sequential PK/PD fixes the PK parameters)")
        return replace(self, joint_prior=prior)

    def with_data(self, path: str | Path) -> "Spec":
        return replace(self, data=replace(self.data, path=str(Path(path).resolve())))
