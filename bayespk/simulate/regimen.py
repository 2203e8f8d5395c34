"""Dosing regimens simulated from a fit, for dose selection.

A :class:`Regimen` describes a dosing schedule (maintenance dose every II,
optional loading doses and titration steps, bolus/oral or zero-order infusion)
and writes it as NONMEM dose records (:meth:`Regimen.rows`, with ADDL/II for
repeats). :func:`simulate_regimens` simulates each regimen for the fitted
subjects or for a virtual population, with parameter uncertainty from the
posterior, and computes exposure metrics per subject and draw
(:mod:`bayespk.simulate.exposure`). The populations (fitted subjects, virtual
ones, children) come from :mod:`bayespk.simulate.population`; a fit whose
draws are given or drawn from the priors (:mod:`bayespk.simulate.draws`) is
simulated like a sampled one.

How the simulation runs
-----------------------
The model code is reused, not re-implemented: for each regimen (and chunk of
subjects) a NONMEM-style dataset is built (the regimen's dose records, one
placeholder observation per subject, the covariate columns),
``PopulationModel(fit.spec, data).build_prediction(grid=times)`` gives the
prediction model, and posterior draws are pushed through it with
``pm.sample_posterior_predictive`` (as :mod:`bayespk.evaluate.simulation`
does for a VPC). Replicate ``d`` uses posterior draw ``d`` (drawn without
replacement while there are enough) for every subject, so the spread over
replicates is parameter uncertainty and the spread over subjects within a
replicate is between-subject variability.

Etas are supplied, not left to PyMC: new etas are standard normal ``z`` per
subject (``eta = omega * z`` is computed by the model), drawn once per
simulated subject and shared by all regimens (common random numbers: a
subject is the same person under every regimen, so regimen differences are
not blurred by different random subjects), and by the single-dose run used
for steady state. With ``etas="posterior"`` (fitted subjects only) each draw
uses the subjects' own posterior etas of that draw.

Steady state (``*_ss`` metrics) is one dosing interval after a NONMEM
steady-state record (SS=1, II) of the maintenance dose, evaluated by the model
layer's closed form; where the data layer does not read SS records, the curve
of one maintenance dose is folded by superposition with a geometric tail
(:func:`~bayespk.simulate.exposure.steady_state_profile`). Both assume linear
kinetics: one unit-dose curve per subject is scaled by each regimen's dose.

Models written as equations
---------------------------
ODE systems and algebraic predictions (:mod:`bayespk.model.user`) are
simulated through the same prediction model. Their doses go into the model's
dose states (:class:`UserDosing`: ``route`` names a dose state; infusions
need an ODE model). Nothing linear is assumed: each regimen, and its steady
state, is simulated at its own doses, and the steady state is by default that
of explicit repeated dosing, checked for convergence (``ss_method="explicit"``;
``"record"`` uses the ODE solver's SS=1 iteration; the superposition
``"fold"`` is refused). See :func:`simulate_regimens`, Notes.
"""

from __future__ import annotations

import dataclasses
import functools
import math
import re
import sys
import time
import tomllib
import warnings
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
import xarray as xr

from bayespk.errors import BayesPKError, SpecError
from bayespk.progress import Progress, printer
from bayespk.sampling import quiet_pymc
from bayespk.simulate.exposure import (
    METRICS,
    exposure_overlap,
    exposure_summary,
    interval_metrics,
    metric_name,
    steady_state_profile,
    target_attainment,
)
from bayespk.simulate.population import _effects, _num, fitted_subjects, virtual_subjects

__all__ = [
    "Regimen",
    "RegimenSimulation",
    "Step",
    "UserDosing",
    "read_regimen_file",
    "simulate_regimens",
]

ROUTES = ("depot", "central")
REGIMEN_KEYS = ("label", "dose", "ii", "n", "loading", "loading_ii", "tinf", "route", "per", "titration")
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_SHORT = re.compile(rf"\s*({_NUM})\s*q\s*({_NUM})\s*(?:x\s*(\d+))?\s*(?:@\s*({_NUM}))?\s*", re.IGNORECASE)
MAX_VALUES_PER_CALL = 25_000_000  # concentrations per sample_posterior_predictive call (200 MB)
SS_METHODS = ("auto", "record", "fold", "explicit")
SS_RTOL = 1e-3  # ss_method="explicit": AUC still to come at steady state, relative to the last interval's
SS_EXPLICIT_INTERVALS = 24  # ss_method="explicit": maintenance doses simulated at first
SS_EXPLICIT_RAISES = 2  # ... raised fourfold at most this often where steady state is not reached


# ---------------------------------------------------------------------- regimens
@dataclass(frozen=True)
class Step:
    """A titration step: ``n`` doses of ``dose`` every ``ii``, from ``start`` (default: when the previous part ends)."""

    dose: float
    ii: float
    n: int = 1
    start: float | None = None


def _count(v, where: str) -> int:
    x = _num(v, where)
    if x < 1 or not float(x).is_integer():
        raise SpecError(f"{where}={v!r} must be a whole number >= 1")
    return int(x)


@dataclass(frozen=True)
class Regimen:
    """A dosing regimen.

    Parameters
    ----------
    label : str
        Name used in tables and plots.
    dose : float
        Maintenance dose amount (per unit of ``per`` when given).
    ii : float
        Dosing interval. For a single dose (``n=1``) the length of the interval
        analysed after it.
    n : int
        Number of maintenance doses.
    loading : tuple of float
        Loading doses given before the maintenance doses (or titration), one
        every ``loading_ii`` (default ``ii``) from time 0.
    loading_ii : float, optional
    tinf : float
        Infusion duration of every dose (0: bolus, or oral into the depot).
    route : {"depot", "central"}, optional
        Where doses go: default the depot when the model structure has one and
        ``tinf`` is 0, else the central compartment.
    titration : tuple of Step
        Steps given after the loading doses and before the maintenance doses,
        e.g. ``(Step(100, 24, 7), Step(200, 24, 7))``; maintenance starts when
        the last step ends (its start + n * ii).
    per : str, optional
        Dose amounts are per unit of this subject covariate (e.g. ``"WT"``: mg/kg).

    Examples
    --------
    >>> r = Regimen("load", dose=400, ii=12, n=14, loading=(800,))
    >>> r.rows()[["TIME", "AMT", "II", "ADDL"]].values.tolist()
    [[0.0, 800.0, 0.0, 0.0], [12.0, 400.0, 12.0, 13.0]]
    >>> Regimen.parse("400q12x14,loading=800,label=load") == r
    True
    """

    label: str
    dose: float
    ii: float
    n: int = 1
    loading: tuple[float, ...] = ()
    loading_ii: float | None = None
    tinf: float = 0.0
    route: str | None = None
    titration: tuple[Step, ...] = ()
    per: str | None = None

    def __post_init__(self):
        where = f"regimen {self.label!r}:"
        if not isinstance(self.label, str) or not self.label.strip():
            raise SpecError(f"regimen label must be a non-empty text, got {self.label!r}")
        def set_(k, v):
            object.__setattr__(self, k, v)

        set_("dose", _num(self.dose, f"{where} dose", positive=True))
        set_("ii", _num(self.ii, f"{where} ii", positive=True))
        set_("n", _count(self.n, f"{where} n"))
        loading = self.loading
        if loading is None:
            loading = ()
        elif isinstance(loading, (int, float, str)):
            loading = (loading,)
        set_("loading", tuple(_num(a, f"{where} loading", positive=True) for a in loading))
        if self.loading_ii is not None:
            set_("loading_ii", _num(self.loading_ii, f"{where} loading_ii", positive=True))
        set_("tinf", _num(self.tinf, f"{where} tinf", nonneg=True))
        if self.route is not None:
            route = str(self.route).lower()
            if route not in ROUTES:
                raise SpecError(f"{where} route={self.route!r}: expected depot or central")
            set_("route", route)
        if self.route == "depot" and self.tinf > 0:
            raise SpecError(f"{where} an infusion (tinf={self.tinf:g}) goes into the central compartment, "
                            "not the depot; use route=central")
        steps = []
        for k, s in enumerate(self.titration or (), start=1):
            w = f"{where} titration step {k}"
            if isinstance(s, str):
                s = _parse_step(s, w)
            elif isinstance(s, Mapping):
                bad = set(s) - {"dose", "ii", "n", "start"}
                if bad:
                    raise SpecError(f"{w}: unknown key {min(bad)!r}; keys are dose, ii, n, start")
                if "dose" not in s or "ii" not in s:
                    raise SpecError(f"{w}: needs dose and ii")
                s = Step(s["dose"], s["ii"], s.get("n", 1), s.get("start"))
            elif isinstance(s, (tuple, list)):
                s = Step(*s)
            if not isinstance(s, Step):
                raise SpecError(f"{w}: expected a Step, a table (dose, ii, n, start) or text like 100q24x7")
            steps.append(Step(_num(s.dose, f"{w} dose", positive=True), _num(s.ii, f"{w} ii", positive=True),
                              _count(s.n, f"{w} n"),
                              None if s.start is None else _num(s.start, f"{w} start", nonneg=True)))
        set_("titration", tuple(steps))
        if self.per is not None:
            set_("per", str(self.per).strip().upper())
        intervals = [self.ii] + [s.ii for s in steps] + ([self.loading_ii or self.ii] if self.loading else [])
        if self.tinf > min(intervals):
            raise SpecError(f"{where} tinf={self.tinf:g} is longer than the dosing interval {min(intervals):g}; "
                            "overlapping infusions are not supported")
        self.segments()  # checks the titration times

    # -------------------------------------------------------------- schedule
    def segments(self) -> list[tuple[float, float, float, int]]:
        """The schedule as ``(time, amount, ii, n)`` runs of equal doses: loading, titration, maintenance."""
        out = []
        t = 0.0
        lii = self.loading_ii or self.ii
        k = 0
        while k < len(self.loading):
            j = k
            while j + 1 < len(self.loading) and self.loading[j + 1] == self.loading[k]:
                j += 1
            out.append((t, self.loading[k], lii, j - k + 1))
            t += (j - k + 1) * lii
            k = j + 1
        for i, s in enumerate(self.titration, start=1):
            start = t if s.start is None else s.start
            if start < t - 1e-9:
                raise SpecError(f"regimen {self.label!r}: titration step {i} starts at {start:g}, before the "
                                f"previous part of the schedule ends ({t:g})")
            out.append((start, s.dose, s.ii, s.n))
            t = start + s.n * s.ii
        out.append((t, self.dose, self.ii, self.n))
        return out

    def dose_times(self) -> tuple[np.ndarray, np.ndarray]:
        """Time and amount of every dose (repeats expanded)."""
        times, amts = [], []
        for t, a, ii, n in self.segments():
            times.append(t + ii * np.arange(n))
            amts.append(np.full(n, a))
        return np.concatenate(times), np.concatenate(amts)

    @property
    def last_dose_time(self) -> float:
        t, _, ii, n = self.segments()[-1]
        return t + (n - 1) * ii

    @property
    def last_interval(self) -> tuple[float, float]:
        """The last dosing interval: from the last dose to one II later."""
        return self.last_dose_time, self.last_dose_time + self.ii

    @property
    def dose_rate(self) -> float:
        """Maintenance dose per unit time (dose / II): the order of dose levels."""
        return self.dose / self.ii

    def cmt(self, structure=None) -> float:
        """The dose compartment (NONMEM CMT) for a model structure (name or Structure); NaN: its default.

        For a model written as equations (``structure`` the :class:`UserDosing` of the model) see
        :meth:`UserDosing.cmt`.
        """
        if isinstance(structure, UserDosing):
            return structure.cmt(self)
        s = _structure(structure)
        if s is None:
            if self.route is None and self.tinf == 0:
                return float("nan")
            raise SpecError(f"regimen {self.label!r}: give the model structure to place "
                            f"route={self.route or 'central'}")
        route = self.route or ("depot" if s.depot_cmt and self.tinf == 0 else "central")
        if route == "depot":
            if not s.depot_cmt:
                raise SpecError(f"regimen {self.label!r}: route=depot, but structure {s.name} has no depot "
                                f"({s.description}); use route=central")
            return float(s.depot_cmt)
        return float(s.central_cmt)

    def rows(self, structure=None, *, id=1, scale: float = 1.0) -> pd.DataFrame:
        """NONMEM dose records: ``ID, TIME, EVID, AMT, RATE, CMT, II, ADDL, MDV, DV``.

        One record per run of equal doses (ADDL/II for the repeats, never a
        record per dose); ``RATE = AMT / tinf`` for infusions. ``scale``
        multiplies every amount (e.g. the subject's weight when ``per="WT"``).
        """
        cmt = self.cmt(structure)
        out = []
        for t, a, ii, n in self.segments():
            amt = a * scale
            out.append({"ID": id, "TIME": t, "EVID": 1, "AMT": amt,
                        "RATE": amt / self.tinf if self.tinf > 0 else 0.0, "CMT": cmt,
                        "II": ii if n > 1 else 0.0, "ADDL": n - 1, "MDV": 1, "DV": np.nan})
        return pd.DataFrame(out, columns=["ID", "TIME", "EVID", "AMT", "RATE", "CMT", "II", "ADDL", "MDV", "DV"])

    # -------------------------------------------------------------- text forms
    @classmethod
    def parse(cls, text: str) -> Regimen:
        """A regimen from compact text.

        ``"400q12x14"`` (dose 400 every 12 for 14 doses) optionally followed by
        ``,KEY=VALUE`` items, or only ``KEY=VALUE`` items. Keys: ``label, dose,
        ii, n, loading`` (amounts joined by ``+``: ``loading=800+600``),
        ``loading_ii, tinf, route`` (depot or central), ``per`` (a covariate:
        amounts per unit of it) and ``titration`` (steps joined by ``>``, each
        ``DOSEqIIxN`` with an optional ``@START``: ``titration=100q24x7>200q24x7``).

        Examples
        --------
        >>> Regimen.parse("label=high,dose=400,ii=12,n=14,tinf=0.5").tinf
        0.5
        """
        where = f"regimen {text!r}"
        if not isinstance(text, str) or not text.strip():
            raise SpecError("regimen: empty text; expected e.g. 400q12x14 or dose=400,ii=12,n=14")
        values: dict = {}
        given: set = set()
        short = None
        for k, item in enumerate(p.strip() for p in text.split(",")):
            if not item:
                continue
            if "=" not in item:
                m = _SHORT.fullmatch(item)
                if k == 0 and m and m[4] is None:
                    short = item
                    values.update(dose=m[1], ii=m[2], n=m[3] or 1)
                    given |= {"dose", "ii"} | ({"n"} if m[3] else set())
                    continue
                raise SpecError(f"{where}: {item!r} is not KEY=VALUE (keys: {', '.join(REGIMEN_KEYS)}); only the "
                                "first item may be the short form DOSEqII or DOSEqIIxN, e.g. 400q12x14")
            key, value = (s.strip() for s in item.split("=", 1))
            key = key.lower()
            if key not in REGIMEN_KEYS:
                raise SpecError(f"{where}: unknown key {key!r}; keys are {', '.join(REGIMEN_KEYS)}")
            if key in given:
                raise SpecError(f"{where}: key {key!r} given twice" + (" (also in the short form)" if short else ""))
            given.add(key)
            if key == "loading":
                value = [v for v in value.replace("/", "+").split("+") if v.strip()]
                if not value:
                    raise SpecError(f"{where}: loading= needs amounts, e.g. loading=800 or loading=800+600")
            elif key == "titration":
                value = [_parse_step(s, f"{where}: titration step {i}")
                         for i, s in enumerate(value.split(">"), start=1)]
            values[key] = value
        for key in ("dose", "ii"):
            if key not in values:
                raise SpecError(f"{where}: missing key {key!r} (give {key}=..., or start with the short form "
                                "DOSEqIIxN, e.g. 400q12x14)")
        label = values.pop("label", None) or short or _default_label(values)
        return cls(label=label, **{k: _typed(k, v, where) for k, v in values.items()})

    @classmethod
    def from_dict(cls, d: Mapping, where: str = "regimen") -> Regimen:
        """A regimen from a table (a TOML ``[[regimen]]`` entry) with the keys of :meth:`parse`."""
        d = {str(k).lower(): v for k, v in d.items()}
        bad = [k for k in d if k not in REGIMEN_KEYS]
        if bad:
            raise SpecError(f"{where}: unknown key {bad[0]!r}; keys are {', '.join(REGIMEN_KEYS)}")
        for key in ("dose", "ii"):
            if key not in d:
                raise SpecError(f"{where}: missing key {key!r}")
        label = d.pop("label", None) or _default_label(d)
        return cls(label=str(label), **{k: _typed(k, v, f"{where} {label!r}") for k, v in d.items()})


def _typed(key: str, value, where: str):
    if key in ("dose", "ii", "loading_ii", "tinf"):
        return _num(value, f"{where}: {key}")
    if key == "n":
        return _count(value, f"{where}: n")
    return value


def _parse_step(text: str, where: str) -> Step:
    m = _SHORT.fullmatch(str(text))
    if not m:
        raise SpecError(f"{where}: {text!r} is not DOSEqII[xN][@START], e.g. 100q24x7 or 200q24x7@168")
    return Step(float(m[1]), float(m[2]), int(m[3] or 1), None if m[4] is None else float(m[4]))


def _default_label(v: Mapping) -> str:
    label = f"{float(v['dose']):g}q{float(v['ii']):g}x{int(float(v.get('n', 1)))}"
    loading = v.get("loading")
    if loading not in (None, (), []):
        amounts = loading if isinstance(loading, (list, tuple)) else [loading]
        label = "L" + "+".join(f"{float(a):g}" for a in amounts) + ">" + label
    return label


def _structure(structure):
    from bayespk.structural import STRUCTURES

    if structure is None or not isinstance(structure, str):
        return structure
    if structure not in STRUCTURES:
        raise SpecError(f"structure {structure!r}: expected one of {', '.join(STRUCTURES)}")
    return STRUCTURES[structure]


@dataclass(frozen=True)
class UserDosing:
    """Where a regimen's doses go in a model written as equations (:mod:`bayespk.model.user`).

    The built-in structures have a depot and a central compartment; a model
    written as equations has its own states and its ``[model] doses`` mapping
    (CMT -> state; default CMT ``k`` enters the ``k``-th state). A regimen's
    ``route`` names one of those dose states:

    * ``route`` unset: a bolus (or oral dose) goes into the model's default
      dose compartment (the lowest CMT of the mapping, as for a data record
      without CMT); an infusion (``tinf > 0``) into the state named
      ``central`` when that is a dose state, else the default one;
    * ``route="depot"`` / ``"central"``: the CMT whose state has that name;
      refused (naming the dose states) when the model has no such dose state.

    An algebraic model (``prediction = ...``) sees a dose only as ``DOSE`` and
    ``TAD``: it takes bolus doses without a route.

    Parameters
    ----------
    name : str
        The model's name (for messages).
    kind : {"ode", "algebraic"}
    doses : tuple of (int, str)
        The ODE model's ``(CMT, state)`` pairs (empty for an algebraic model).
    """

    name: str
    kind: str
    doses: tuple[tuple[int, str], ...] = ()

    @classmethod
    def of(cls, user, name: str) -> UserDosing:
        """The dosing of a user model (:class:`~bayespk.structural.diffeq.ODEModel` or ``AlgebraicModel``)."""
        from bayespk.structural.diffeq import ODEModel

        if isinstance(user, ODEModel):
            return cls(str(name), "ode", tuple(sorted((int(c), str(st)) for c, st in user.doses.items())))
        return cls(str(name), "algebraic")

    @property
    def default_cmt(self) -> int:
        return min(c for c, _ in self.doses)

    def _states(self) -> str:
        return ", ".join(f"CMT {c} = {st}" for c, st in self.doses)

    def cmt(self, regimen: Regimen) -> float:
        """The CMT of the regimen's doses (NaN for an algebraic model: any record is a dose)."""
        where = f"regimen {regimen.label!r}"
        if self.kind == "algebraic":
            if regimen.route is not None:
                raise SpecError(f"{where}: route={regimen.route}, but the model {self.name} is an algebraic "
                                "prediction (prediction = ...) without compartments; leave route unset")
            if regimen.tinf > 0:
                raise SpecError(f"{where}: tinf={regimen.tinf:g}, but the algebraic prediction of {self.name} sees "
                                "a dose only as DOSE and TAD, not as an infusion; give bolus doses (tinf=0) or write "
                                "the model as an ODE system")
            return float("nan")
        first = {}
        for c, st in self.doses:
            first.setdefault(st, c)
        if regimen.route is None:
            if regimen.tinf > 0 and "central" in first:
                return float(first["central"])
            return float(self.default_cmt)
        if regimen.route not in first:
            raise SpecError(f"{where}: route={regimen.route}, but the model {self.name} written as equations has no "
                            f"dose state named {regimen.route!r} (its doses: {self._states()}); leave route unset "
                            f"for its default dose compartment (CMT {self.default_cmt}), or map a CMT to a state "
                            f"named {regimen.route} in [model] doses")
        return float(first[regimen.route])


def read_regimen_file(path: str | Path) -> dict:
    """Regimens (and optionally virtual-population covariates) from a TOML file.

    ::

        [[regimen]]
        label = "titrate"
        dose = 400
        ii = 24
        n = 14
        titration = [{ dose = 100, ii = 24, n = 7 }, { dose = 200, ii = 24, n = 7 }]

        [[regimen]]
        label = "load"
        dose = 400
        ii = 24
        n = 14
        loading = [800]

        [covariates]              # optional: see bayespk.simulate.population.virtual_subjects
        WT = ["lognormal", 70, 0.25]

    Returns ``{"regimens": [Regimen, ...], "covariates": dict or None}``.
    """
    path = Path(path)
    if not path.is_file():
        raise SpecError(f"{path}: no such regimen file")
    try:
        doc = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as e:
        raise SpecError(f"{path}: not valid TOML ({e})") from None
    bad = [k for k in doc if k not in ("regimen", "covariates")]
    if bad:
        raise SpecError(f"{path}: unknown table {bad[0]!r}; expected [[regimen]] entries and an optional [covariates]")
    entries = doc.get("regimen")
    if not isinstance(entries, list) or not entries:
        raise SpecError(f"{path}: no [[regimen]] entries")
    regimens = [Regimen.from_dict(e, f"{path}: regimen {i}") for i, e in enumerate(entries, start=1)]
    covs = doc.get("covariates")
    if covs is not None and not isinstance(covs, dict):
        raise SpecError(f"{path}: [covariates] must be a table of column = specification")
    return {"regimens": regimens, "covariates": covs}


def _as_regimens(regimens) -> list[Regimen]:
    if isinstance(regimens, (Regimen, str)):
        regimens = [regimens]
    out = [Regimen.parse(r) if isinstance(r, str) else r for r in regimens]
    if not out:
        raise SpecError("no regimens to simulate")
    for r in out:
        if not isinstance(r, Regimen):
            raise SpecError(f"expected Regimen objects or regimen text, got {type(r).__name__}")
    labels = [r.label for r in out]
    dup = next((lb for lb in labels if labels.count(lb) > 1), None)
    if dup is not None:
        raise SpecError(f"two regimens have the label {dup!r}; give each a distinct label")
    return out


# ---------------------------------------------------------------------- result
@dataclass
class RegimenSimulation:
    """Exposure metrics of simulated regimens: per regimen, subject and posterior draw.

    Attributes
    ----------
    metrics : xarray.Dataset
        One variable per metric (:data:`~bayespk.simulate.exposure.METRICS`),
        dims ``(regimen, subject, draw)``.
    subjects : DataFrame
        One row per simulated subject (``subject`` 0..n-1): ``source_id`` (the
        fitted subject it is, or was resampled from; NaN when drawn) and the
        covariate columns.
    regimens : list of Regimen
    profiles : DataFrame
        Concentration bands per regimen: ``regimen, time, median, lower, upper``
        (over subjects and draws pooled; ``info["band"]`` interval).
    concentrations : dict or None
        With ``keep_concentrations``: per regimen label an xarray DataArray
        (subject, draw, time) of every simulated curve.
    info : dict
        Settings and measurements: population, etas, n_subjects, n_draws,
        ``posterior_draws`` (the draws used, as positions in the posterior
        stacked over chain and draw), seed, intervals and grid steps per
        regimen, threshold, wall seconds, throughput (subject-regimens per second).
    """

    metrics: xr.Dataset
    subjects: pd.DataFrame
    regimens: list = field(default_factory=list)
    profiles: pd.DataFrame | None = None
    concentrations: dict | None = None
    info: dict = field(default_factory=dict)

    @classmethod
    def from_arrays(cls, values: Mapping[str, Mapping[str, np.ndarray]], subjects: pd.DataFrame | None = None,
                    regimens=None) -> RegimenSimulation:
        """Build from ``{regimen label: {metric: array (subjects, draws)}}`` (for tests and own analyses)."""
        labels = list(values)
        names = list(dict.fromkeys(m for v in values.values() for m in v))
        shape = np.shape(next(iter(values[labels[0]].values())))
        data = {}
        for m in names:
            canon = metric_name(m)
            data[canon] = (("regimen", "subject", "draw"),
                           np.stack([np.asarray(values[r].get(m, np.full(shape, np.nan)), float) for r in labels]))
        ds = xr.Dataset(data, coords={"regimen": labels, "subject": np.arange(shape[0]), "draw": np.arange(shape[1])})
        if subjects is None:
            subjects = pd.DataFrame({"source_id": np.full(shape[0], np.nan)})
        return cls(ds, subjects.reset_index(drop=True), list(regimens or []))

    # -------------------------------------------------------------- access
    @property
    def labels(self) -> list[str]:
        return [str(x) for x in self.metrics.regimen.values]

    @property
    def n_subjects(self) -> int:
        return self.metrics.sizes["subject"]

    @property
    def n_draws(self) -> int:
        return self.metrics.sizes["draw"]

    @property
    def metric_names(self) -> list[str]:
        """Metrics with at least one value (T_above needs a threshold, *_ss a steady state)."""
        return [m for m in METRICS if m in self.metrics and np.isfinite(self.metrics[m].values).any()]

    def check_metric(self, name: str) -> str:
        m = metric_name(name)
        if m not in self.metric_names:
            why = " (give a threshold)" if m.startswith(("T_above", "f_above")) else ""
            raise SpecError(f"metric {m} was not computed in this simulation{why}; available: "
                            f"{', '.join(self.metric_names)}")
        return m

    def values(self, regimen: str, metric: str) -> np.ndarray:
        """(subjects, draws) array of one metric under one regimen."""
        if regimen not in self.labels:
            raise SpecError(f"regimen {regimen!r}: not simulated; regimens are {', '.join(self.labels)}")
        return self.metrics[self.check_metric(metric)].sel(regimen=regimen).values

    def grid_step(self, regimen: str, metric: str) -> float:
        steps = self.info.get("grid_step", {}).get(regimen)
        if not steps:
            return np.nan
        return steps["ss" if metric.endswith("_ss") else "interval"]

    def ordered_labels(self, order=None) -> list[str]:
        """Regimen labels by maintenance dose rate (dose / II, then dose), or in the given order."""
        if order is not None:
            order = list(order)
            unknown = [o for o in order if o not in self.labels]
            if unknown:
                raise SpecError(f"order: regimen {unknown[0]!r} was not simulated; regimens are "
                                f"{', '.join(self.labels)}")
            return order
        if len(self.regimens) == len(self.labels):
            by_label = {r.label: r for r in self.regimens}
            return sorted(self.labels, key=lambda lb: (by_label[lb].dose_rate, by_label[lb].dose))
        return self.labels

    def to_frame(self) -> pd.DataFrame:
        """Long table: one row per regimen, subject and draw, a column per metric, and the covariates."""
        df = self.metrics[self.metric_names].to_dataframe().reset_index()
        return df.merge(self.subjects.rename_axis("subject").reset_index(), on="subject", how="left")

    # -------------------------------------------------------------- tables and plots
    def summary(self, metrics=None, *, by=None, bins=4, ci=0.9) -> pd.DataFrame:
        """Exposure per regimen and stratum; see :func:`~bayespk.simulate.exposure.exposure_summary`."""
        return exposure_summary(self, metrics, by=by, bins=bins, ci=ci)

    def attainment(self, targets, *, by=None, bins=4, ci=0.9) -> pd.DataFrame:
        """Target attainment; see :func:`~bayespk.simulate.exposure.target_attainment`."""
        return target_attainment(self, targets, by=by, bins=bins, ci=ci)

    def overlap(self, metrics=("AUC", "Cmax", "Cmin"), *, order=None, ci=0.9) -> pd.DataFrame:
        """Overlap of neighbouring regimens; see :func:`~bayespk.simulate.exposure.exposure_overlap`."""
        metrics = [m for m in ([metrics] if isinstance(metrics, str) else metrics)]
        return exposure_overlap(self, metrics, order=order, ci=ci)

    def plot(self, targets=None, **kwargs):
        """Concentration bands and target attainment; see :func:`bayespk.simulate.plots.plot_regimens`."""
        from bayespk.simulate.plots import plot_regimens

        return plot_regimens(self, targets, **kwargs)

    def __repr__(self) -> str:
        return (f"RegimenSimulation({len(self.labels)} regimens x {self.n_subjects} subjects x {self.n_draws} draws: "
                f"{', '.join(self.labels)})")


# ---------------------------------------------------------------------- simulation
def simulate_regimens(
    fit,
    regimens,
    *,
    population: str = "fitted",
    n_subjects: int | None = None,
    covariates=None,
    etas: str = "new",
    n_draws: int = 200,
    times=None,
    interval=None,
    threshold: float | None = None,
    resolution: int = 120,
    ss_method: str = "auto",
    ss_intervals: int | None = None,
    band: float = 0.9,
    chunk_size: int = 1000,
    keep_concentrations: bool | None = None,
    seed: int = 0,
    progress=True,
) -> RegimenSimulation:
    """Simulate dosing regimens from a fit and compute exposure metrics.

    Parameters
    ----------
    fit : Fit
    regimens : Regimen, text, or a list of them
        Text in the compact form of :meth:`Regimen.parse` (``"400q12x14,loading=800"``).
    population : {"fitted", "virtual"}
        The fitted subjects (their covariates), or ``n_subjects`` virtual ones.
    n_subjects : int
        Size of the virtual population.
    covariates : dict or DataFrame, optional
        Covariates of the virtual population (see
        :func:`~bayespk.simulate.population.virtual_subjects`; for children
        :func:`~bayespk.simulate.population.pediatric_population`);
        default: covariate rows of the fitted subjects drawn with replacement.
    etas : {"new", "posterior"}
        New etas (new subjects with these covariates; default), or, for the
        fitted population, the subjects' own posterior etas of each draw.
    n_draws : int
        Replicates; each uses one posterior draw (without replacement while
        the posterior has enough).
    times : array, optional
        Times at which the concentration bands are given (default 150 points
        from 0 to the end of the analysed interval). The metric grid is added.
    interval : (start, end) or {label: (start, end)}, optional
        Interval of the interval metrics (absolute times); default each
        regimen's last dosing interval.
    threshold : float, optional
        Concentration for the time-above-threshold metrics.
    resolution : int
        Grid steps per analysed interval (and per dosing interval at steady
        state): the grid step is interval / resolution.
    ss_method : {"auto", "record", "fold", "explicit"}
        How the steady-state (``*_ss``) metrics are computed. ``"record"``: one
        NONMEM steady-state dose record (SS=1, II) of the maintenance dose,
        evaluated over one interval (built-in structures: the exact closed
        form of the model layer; a model written as ODEs: the solver repeats
        the interval ``[model.solver] ss_intervals`` times and fails where the
        trough still changes by more than ``ss_rtol``, see below).
        ``"fold"``: the curve of one maintenance dose over ``ss_intervals + 1``
        intervals, folded by superposition with a geometric tail (see
        :func:`~bayespk.simulate.exposure.steady_state_profile`).
        ``"explicit"``: the maintenance dose given ``ss_intervals`` times in a
        row and the last interval read, checked for steady state (see Notes).
        ``"auto"``: built-in structures ``"record"`` when the data layer
        accepts SS=1 records, else ``"fold"``; models written as equations
        ``"explicit"``. ``"record"`` and ``"fold"`` on a built-in (linear)
        structure simulate the unit dose and scale it by each regimen's dose;
        ``"fold"`` is refused for models written as equations (superposition
        needs linear kinetics, which e.g. Michaelis-Menten elimination breaks),
        and they are simulated at each regimen's own dose.
    ss_intervals : int, optional
        ``"fold"``: dosing intervals read directly before the geometric tail
        (default 6). ``"explicit"``: maintenance doses simulated at first
        (default 24), raised fourfold (twice at most) where steady state is not
        reached.
    band : float
        Central interval of the concentration bands.
    chunk_size : int
        Subjects per prediction model (memory and compile trade-off).
    keep_concentrations : bool, optional
        Keep every simulated curve (``RegimenSimulation.concentrations``);
        default only when that is at most 10 million values.
    seed : int
    progress : bool or callable
        Progress per chunk and regimen (done/total, ETA) on stderr: live on a
        terminal, else a line at most every ``$BAYESPK_PROGRESS_SECONDS``
        (default 10) and the last one (see :mod:`bayespk.progress`); or every
        line passed to the callable.

    Returns
    -------
    RegimenSimulation

    Notes
    -----
    *Models written as equations* (``[model] states``/``[model.ode]`` or
    ``prediction``): regimens are written as dose records as for the built-in
    structures, their CMT from the model's dose states (:class:`UserDosing`),
    and pushed through the model's own prediction (the ODE solver, or the
    algebraic prediction with its ``TAD`` and ``DOSE``). Nothing assumes
    linear kinetics: every regimen and its steady state are simulated at the
    regimen's own doses.

    *Steady state by explicit dosing* (``"explicit"``): ``K`` maintenance doses
    (``K = ss_intervals``) from an empty system; the ``*_ss`` metrics are those
    of the last interval. With ``A1, A2, A3`` the AUCs of the last three
    intervals (each from its dose to one grid step before the next),
    ``d = A3 - A2`` and ``q = d / (A2 - A1)``, the AUC still to come
    if the approach is geometric (as it is for any system near a stable steady
    state) is ``|d| q / (1 - q)`` (``|d|`` when ``q < 0``; unbounded when
    ``q >= 1``). Steady state counts as reached when that and ``|d|`` are at
    most 0.1% of ``A3`` (:data:`SS_RTOL`; the ``*_ss`` metrics are then within
    about 0.1% of the true steady state), or ``|d|`` is at most 1e-6 of ``A3``
    (the solver's own noise; with ``K <= 1000`` such a small change means the
    system is within 0.1% of steady state). Where it is not reached, ``K`` is
    raised fourfold (twice at most: 24, 96, 384 doses by default); subject-draws
    still not at steady state get NaN ``*_ss`` metrics, are counted in
    ``info["ss_not_reached"]`` and a warning is printed (e.g. a Michaelis-Menten
    model dosed faster than VMAX has no steady state).

    *Solver failures* (ODE models): a solve that fails (step limit, a
    steady-state record whose iteration does not converge) gives no
    prediction for any subject of that call and draw; those subject-draws get
    NaN metrics and are counted in ``info["solver_failed"]`` (``ss_method="record"``:
    in ``info["ss_not_reached"]``).
    """
    from bayespk.data.nonmem import read_nonmem
    from bayespk.structural import STRUCTURES

    t_start = time.perf_counter()
    if fit.model.cell_kinetics:
        raise SpecError(f"simulate_regimens: {fit.spec.structure} is a CAR-T structure, where the cell dose does "
                        "not drive the kinetics through dosing records; simulate CAR-T patients with "
                        "bayespk.simulate.cohort.simulate_cart_cohort or from the fit's individual parameters")
    user = fit.model.user
    regs = _as_regimens(regimens)
    say = _progress(progress)
    if population not in ("fitted", "virtual"):
        raise SpecError(f"population={population!r}: expected 'fitted' or 'virtual'")
    if etas not in ("new", "posterior"):
        raise SpecError(f"etas={etas!r}: expected 'new' or 'posterior'")
    if population == "virtual" and etas == "posterior":
        raise SpecError("etas='posterior' needs population='fitted' (virtual subjects have no posterior etas)")
    if population == "fitted" and (n_subjects is not None or covariates is not None):
        raise SpecError("n_subjects and covariates describe a virtual population; use population='virtual'")
    if population == "virtual" and n_subjects is None and not isinstance(covariates, pd.DataFrame):
        raise SpecError("population='virtual' needs n_subjects")
    if n_subjects is not None and (isinstance(n_subjects, bool) or int(n_subjects) != n_subjects or n_subjects < 1):
        raise SpecError(f"n_subjects must be a whole number >= 1, got {n_subjects!r}")
    for name, v, lo in (("n_draws", n_draws, 1), ("resolution", resolution, 4), ("ss_intervals", ss_intervals, 2),
                        ("chunk_size", chunk_size, 1)):
        if name == "ss_intervals" and v is None:
            continue
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise SpecError(f"{name} must be a whole number >= {lo}, got {v!r}")
    if threshold is not None:
        threshold = _num(threshold, "threshold", nonneg=True)
    if times is not None:
        try:
            times = np.asarray(times, float)
        except (TypeError, ValueError):
            raise SpecError("times must be numbers (the times of the concentration bands)") from None
        if times.ndim != 1 or len(times) < 2 or not np.isfinite(times).all() or (times < 0).any():
            raise SpecError("times must be at least 2 finite times >= 0")
    if ss_method not in SS_METHODS:
        raise SpecError(f"ss_method={ss_method!r}: expected 'auto', 'record', 'fold' or 'explicit'")
    if not 0 < band < 1:
        raise SpecError(f"band must be between 0 and 1, got {band}")

    if user is None:
        structure = STRUCTURES[fit.spec.structure]
    else:
        structure = UserDosing.of(user, getattr(user, "name", None) or fit.spec.name or fit.spec.structure)
    for r in regs:
        r.cmt(structure)
    iov = [p for p, ps in fit.spec.parameters.items() if getattr(ps, "iov", None) is not None]
    if iov:
        raise SpecError(f"simulate_regimens does not handle inter-occasion variability yet (IOV on "
                        f"{', '.join(iov)}): what an occasion is in a simulated regimen is not defined")
    if user is not None:
        if ss_method == "fold":
            raise SpecError(f"ss_method='fold' folds the curve of one dose by linear superposition, which the model "
                            f"{structure.name} written as equations need not obey (e.g. Michaelis-Menten "
                            "elimination); use ss_method='explicit' (the default for such models) or 'record'")
        if ss_method == "record" and structure.kind == "algebraic":
            raise SpecError(f"ss_method='record': the algebraic prediction of {structure.name} has no states to "
                            "bring to steady state with an SS=1 record; use ss_method='explicit' (the default)")
        if ss_method == "auto":
            ss_method = "explicit"
    elif ss_method == "auto":
        ss_method = "record" if _accepts_ss_records(structure) else "fold"
    if ss_intervals is None:
        ss_intervals = SS_EXPLICIT_INTERVALS if ss_method == "explicit" else 6
    if ss_method == "explicit" and ss_intervals < 3:
        raise SpecError(f"ss_intervals={ss_intervals}: ss_method='explicit' needs at least 3 maintenance doses "
                        "(the last three intervals are compared)")
    per_regimen_ss = user is not None or ss_method == "explicit"  # each regimen at its own dose, no scaling
    rng = np.random.default_rng(seed)
    data = fit.model.data
    base = fitted_subjects(data)
    effects = _effects(fit.spec)
    for col in fit.model._columns:  # data columns a covariate relation reads (e.g. PMA of a maturation function)
        effects.setdefault(col, [])
    if population == "fitted":
        subjects = base.copy()
    else:
        subjects = virtual_subjects(base, None if n_subjects is None else int(n_subjects), covariates, rng, effects)
    subjects = subjects.reset_index(drop=True).rename_axis("subject")
    for r in regs:
        if r.per is not None:
            if r.per not in subjects.columns:
                raise SpecError(f"regimen {r.label!r}: per={r.per}, but the subjects have no column {r.per}")
            x = pd.to_numeric(subjects[r.per], errors="coerce")
            if x.isna().any() or (x <= 0).any():
                raise SpecError(f"regimen {r.label!r}: per={r.per} needs positive numbers in column {r.per}")
    N = len(subjects)
    intervals = _intervals(regs, interval)

    # posterior draws: population parameters; per-subject variables are supplied below
    post = fit.posterior.stack(sample=("chain", "draw"))
    n_avail = post.sizes["sample"]
    idx = rng.choice(n_avail, size=n_draws, replace=n_draws > n_avail)
    subject_vars = [v for v in post.data_vars if "ID" in post[v].dims]
    pop = post.drop_vars(subject_vars).isel(sample=idx)
    pop = pop.drop_vars([c for c in ("sample", "chain", "draw", "ID") if c in pop.coords])
    pop = pop.rename({"sample": "draw"}).expand_dims(chain=[0]).assign_coords(draw=np.arange(n_draws))
    own = None
    if etas == "posterior":
        ids = list(post["ID"].values)
        cols = [ids.index(s) for s in subjects.source_id]
        own = {v: post[v].isel(sample=idx).transpose("sample", "ID").values[:, cols] for v in subject_vars}
    z_store: dict[str, np.ndarray] = {}
    z_rng = np.random.default_rng(rng.integers(2**63))

    # grids
    m = int(resolution)
    plans = {}
    for r in regs:
        a, b = intervals[r.label]
        dt, _ = r.dose_times()
        b_eff = b - 1e-7 * (b - a) if np.any(np.isclose(dt, b, rtol=0, atol=1e-9 * max(1.0, b))) else b
        metric_grid = np.linspace(a, b_eff, m + 1)
        shown = np.linspace(0.0, b, 150) if times is None else times
        ends = dt + r.tinf if r.tinf > 0 else np.array([])
        key = [p for p in np.r_[dt, ends] if 0 <= p <= b and not np.isclose(p, b_eff)]
        grid = np.unique(np.r_[shown, metric_grid, key])
        plans[r.label] = {"grid": grid, "window": (a, b_eff)}
    # steady state: one single-dose curve per (II, infusion duration, compartment), scaled by each dose
    # (linear built-in structures); else each regimen's own maintenance dose
    ss_keys: dict[tuple, list[int]] = {}
    for ri, r in enumerate(regs):
        if not per_regimen_ss:
            ss_keys.setdefault((r.ii, r.tinf, r.cmt(structure)), []).append(ri)
    by_ii: dict[float, list] = {}
    for k in ss_keys:
        by_ii.setdefault(k[0], []).append(k)
    # one prediction model (for an ODE: one compiled solver) per group of regimens that share a grid: built-in
    # structures one per regimen (as always); models written as equations every regimen with the same grid
    # (e.g. the candidate doses of a dose table), and their steady states by II
    if user is None:
        reg_groups = [[ri] for ri in range(len(regs))]
    else:
        same_grid: dict[bytes, list[int]] = {}
        for ri, r in enumerate(regs):
            same_grid.setdefault(plans[r.label]["grid"].tobytes(), []).append(ri)
        reg_groups = list(same_grid.values())
    same_ii: dict[float, list[int]] = {}
    for ri, r in enumerate(regs):
        if per_regimen_ss:
            same_ii.setdefault(r.ii, []).append(ri)
    ss_groups = list(same_ii.values())
    check_solver = user is not None and structure.kind == "ode"

    values_total = sum(N * n_draws * len(p["grid"]) for p in plans.values())
    keep = keep_concentrations if keep_concentrations is not None else values_total <= 10_000_000
    k_band = min(n_draws, max(1, math.ceil(20_000 / N)))

    R = len(regs)
    metrics = {name: np.full((R, N, n_draws), np.nan) for name in METRICS}
    band_curves = {r.label: [] for r in regs}
    kept = {r.label: np.full((N, n_draws, len(plans[r.label]["grid"])), np.nan) for r in regs} if keep else None
    needed_cols = list(effects)
    padding = _padding_subjects(base, effects)
    chunks = [np.arange(s, min(s + chunk_size, N)) for s in range(0, N, chunk_size)]
    n_tasks = len(chunks) * (len(reg_groups) + len(by_ii) + len(ss_groups))
    ticker = _ticker(progress, n_tasks)
    done_tasks = 0
    ss_failed = 0
    solver_failed = 0
    ss_doses: dict[str, int] = {}
    n_calls = 0

    def scale_of(r, sub):
        return np.ones(len(sub)) if r.per is None else sub[r.per].to_numpy(float)

    def count():
        nonlocal n_calls
        n_calls += 1

    def run(df_rows, grid, z_index):
        """IPRED per draw chunk: yields (d0, d1, conc (draws, IDs, grid))."""
        return _predict(fit.spec, read_nonmem(df_rows), grid, pop, z_index, z_store, z_rng, own, N, n_draws, count)

    for chunk in chunks:
        sub = subjects.iloc[chunk]
        n_c = len(chunk)
        for group in reg_groups:
            t0 = time.perf_counter()
            frames = [(regs[ri].rows(structure), scale_of(regs[ri], sub)) for ri in group]
            df = _synthetic_multi(frames, sub[needed_cols], padding, needed_cols)
            z_index = np.r_[np.tile(chunk, len(group)), np.full(len(padding), -1)]
            grid = plans[regs[group[0]].label]["grid"]  # the same for every regimen of the group
            for d0, d1, conc in run(df, grid, z_index):
                failed = 0
                if check_solver:
                    conc, failed = _solver_failures(conc, conc)
                for j, ri in enumerate(group):
                    r = regs[ri]
                    a, b_eff = plans[r.label]["window"]
                    c = conc[:, j * n_c:(j + 1) * n_c, :]  # (d, subjects, time)
                    solver_failed += failed * n_c
                    res = interval_metrics(grid, c, a, b_eff, threshold)
                    for name, v in res.items():
                        metrics[name][ri, chunk, d0:d1] = v.T
                    if d0 < k_band:  # a copy: a view would keep the whole prediction array alive
                        band_curves[r.label].append(c[: k_band - d0].copy())
                    if keep:
                        kept[r.label][chunk, d0:d1] = np.transpose(c, (1, 0, 2))
            done_tasks += 1
            what = f"regimen {regs[group[0]].label!r}" if len(group) == 1 else f"{len(group)} regimens"
            ticker.update(done_tasks, _line(what, chunk, n_draws, time.perf_counter() - t0),
                          force=done_tasks == n_tasks)
        for ii, keys in by_ii.items():
            t0 = time.perf_counter()
            frames = []
            for _, tinf, cmt in keys:  # one unit dose per subject and key; scaled to each regimen below
                route = "depot" if cmt == structure.depot_cmt else "central"
                unit = Regimen("unit", dose=1.0, ii=ii, tinf=tinf, route=route).rows(structure)
                if ss_method == "record":
                    unit["SS"], unit["II"] = 1, ii
                frames.append((unit, np.ones(n_c)))
            df = _synthetic_multi(frames, sub[needed_cols], padding, needed_cols)
            z_index = np.r_[np.tile(chunk, len(keys)), np.full(len(padding), -1)]
            n_points = m + 1 if ss_method == "record" else (ss_intervals + 1) * m + 1
            grid = np.arange(n_points) * (ii / m)
            t_ss = grid[: m + 1]
            for d0, d1, conc in run(df, grid, z_index):
                for j, key in enumerate(keys):
                    c = conc[:, j * n_c:(j + 1) * n_c, :]
                    if ss_method == "fold":
                        c, ok = steady_state_profile(c, m, ss_intervals)
                        ss_failed += int((~ok).sum())
                    for ri in ss_keys[key]:
                        amount = regs[ri].dose * scale_of(regs[ri], sub)
                        res = interval_metrics(t_ss, c * amount[None, :, None], 0.0, ii, threshold, suffix="_ss")
                        for name, v in res.items():
                            metrics[name][ri, chunk, d0:d1] = v.T
            done_tasks += 1
            ticker.update(done_tasks, _line(f"steady state (II {ii:g})", chunk, n_draws,
                                            time.perf_counter() - t0), force=done_tasks == n_tasks)
        for group in ss_groups:  # steady state at each regimen's own maintenance dose (any kinetics)
            t0 = time.perf_counter()
            K = int(ss_intervals)
            todo = np.ones((len(group), n_c, n_draws), bool)  # subject-draws whose steady state is still to be found
            for _ in range(SS_EXPLICIT_RAISES + 1 if ss_method == "explicit" else 1):
                frames, grid, (a, b) = [], None, (None, None)
                for ri in group:
                    rows, grid, (a, b) = _ss_schedule(regs[ri], structure, ss_method, K, m)  # one grid per II
                    frames.append((rows, scale_of(regs[ri], sub)))
                df = _synthetic_multi(frames, sub[needed_cols], padding, needed_cols)
                z_index = np.r_[np.tile(chunk, len(group)), np.full(len(padding), -1)]
                for d0, d1, conc in run(df, grid, z_index):
                    if check_solver:
                        conc, _ = _solver_failures(conc, conc)
                    for j, ri in enumerate(group):
                        c = conc[:, j * n_c:(j + 1) * n_c, :]
                        reached = ~np.isnan(c).any(axis=-1)
                        if ss_method == "explicit":
                            reached &= _explicit_ss_reached(c, m)
                        res = interval_metrics(grid, c, a, b, threshold, suffix="_ss")
                        mask = todo[j, :, d0:d1] & reached.T  # (subjects, draws) found in this attempt
                        for name, v in res.items():
                            metrics[name][ri, chunk, d0:d1] = np.where(mask, v.T, metrics[name][ri, chunk, d0:d1])
                        todo[j, :, d0:d1] &= ~reached.T
                for ri in group:
                    ss_doses[regs[ri].label] = max(ss_doses.get(regs[ri].label, 0), K)
                if not todo.any():
                    break
                K *= 4
            ss_failed += int(todo.sum())
            done_tasks += 1
            what = f"{regs[group[0]].label!r}" if len(group) == 1 else f"{len(group)} regimens"
            ticker.update(done_tasks, _line(f"steady state of {what}", chunk, n_draws,
                                            time.perf_counter() - t0), force=done_tasks == n_tasks)

    # profiles (bands over subjects and draws)
    lo = (1 - band) / 2
    prof = []
    for r in regs:
        curves = np.concatenate([np.transpose(c, (1, 0, 2)).reshape(-1, c.shape[-1])
                                 for c in band_curves[r.label]], axis=0)
        q = np.quantile(curves, [0.5, lo, 1 - lo], axis=0)
        prof.append(pd.DataFrame({"regimen": r.label, "time": plans[r.label]["grid"], "median": q[0],
                                  "lower": q[1], "upper": q[2]}))
    profiles = pd.concat(prof, ignore_index=True)

    wall = time.perf_counter() - t_start
    ds = xr.Dataset({name: (("regimen", "subject", "draw"), v) for name, v in metrics.items()},
                    coords={"regimen": [r.label for r in regs], "subject": np.arange(N), "draw": np.arange(n_draws)})
    concentrations = None
    if keep:
        concentrations = {r.label: xr.DataArray(kept[r.label], dims=("subject", "draw", "time"),
                                                coords={"time": plans[r.label]["grid"]}, name="concentration")
                          for r in regs}
    info = {
        "population": population, "etas": etas, "n_subjects": N, "n_draws": n_draws,
        "n_posterior_draws": int(n_avail), "posterior_draws": [int(i) for i in idx], "seed": seed,
        "threshold": threshold, "resolution": m,
        "ss_method": ss_method, "ss_intervals": int(ss_intervals) if ss_method == "fold" else None, "band": band,
        "intervals": {lb: list(v) for lb, v in intervals.items()},
        "grid_step": {r.label: {"interval": (intervals[r.label][1] - intervals[r.label][0]) / m, "ss": r.ii / m}
                      for r in regs},
        "grid_points": {r.label: len(plans[r.label]["grid"]) for r in regs},
        "ss_not_reached": ss_failed,
        "ss_doses": ss_doses if ss_method == "explicit" else None,
        "prediction_groups": [[regs[ri].label for ri in g] for g in reg_groups],
        "solver_failed": solver_failed,
        "model": "built-in" if user is None else f"written as equations ({structure.kind})",
        "wall_seconds": wall,
        "prediction_calls": n_calls,
        "subject_regimens_per_second": N * R / wall,
        "subject_regimen_draws_per_second": N * R * n_draws / wall,
    }
    ticker.finish(summary=False)
    if ss_failed and ss_method == "fold":
        say(f"simulate: steady state not computed for {ss_failed} subject-draws (the single-dose curve still "
            f"rises after {ss_intervals} intervals; raise ss_intervals)")
    elif ss_failed:
        why = (f"after up to {max(ss_doses.values())} maintenance doses the AUC of the last interval still moves "
               f"by more than {SS_RTOL:.1%} (see simulate_regimens, Notes); raise ss_intervals, or check that the "
               "dose rate has a steady state (e.g. below VMAX)") if ss_method == "explicit" else \
            ("the ODE solver's steady-state iteration did not converge ([model.solver] ss_intervals, ss_rtol); "
             "use ss_method='explicit'")
        warnings.warn(f"simulate_regimens: steady state not reached for {ss_failed} of {N * R * n_draws} "
                      f"subject-regimen-draws; their *_ss metrics are NaN: {why}", RuntimeWarning, stacklevel=2)
        say(f"simulate: steady state not reached for {ss_failed} subject-regimen-draws ({why})")
    if solver_failed:
        warnings.warn(f"simulate_regimens: the ODE solver failed for {solver_failed} subject-regimen-draws "
                      "(step limit or non-finite states; [model.solver] max_steps, method); their metrics are NaN",
                      RuntimeWarning, stacklevel=2)
    say(f"simulate: {N} subjects x {R} regimens x {n_draws} draws in {wall:.1f} s "
        f"({info['subject_regimens_per_second']:.1f} subject-regimens/s, "
        f"{info['subject_regimen_draws_per_second']:.0f} subject-regimen-draws/s)")
    return RegimenSimulation(ds, subjects, regs, profiles, concentrations, info)


@functools.lru_cache(maxsize=8)
def _accepts_ss_records(structure) -> bool:
    """Whether the data layer reads a steady-state dose record (SS=1) for this structure."""
    from bayespk.data.design import Design
    from bayespk.data.nonmem import read_nonmem
    from bayespk.errors import DataError

    rows = Regimen("unit", dose=1.0, ii=12.0, route="central").rows(structure)
    rows["SS"], rows["II"] = 1, 12.0
    obs = {"ID": 1, "TIME": 0.0, "EVID": 0, "MDV": 0, "DV": 1.0}
    try:
        data = read_nonmem(pd.concat([rows, pd.DataFrame([obs])], ignore_index=True))
        Design.from_dataset(data, structure, grid=np.array([0.0, 6.0]))
    except (DataError, TypeError, ValueError):
        return False
    return True


def _ss_schedule(r: Regimen, structure, method: str, K: int, m: int):
    """Dose records, grid and interval of the steady state of ``r``'s maintenance dose at its own amount.

    ``"record"``: one SS=1 record at time 0; the grid covers ``[0, II]``.
    ``"explicit"``: ``K`` doses every II from time 0 (the last three as records of their own, so that a grid point
    at a dose time sees the dose, as at the start of a regimen's interval); the grid covers the last three
    intervals and the metrics are read over the last one.
    """
    one = dataclasses.replace(r, label="ss", n=1, loading=(), loading_ii=None, titration=()).rows(structure)
    step = r.ii / m
    if method == "record":
        one["SS"], one["II"] = 1, r.ii
        grid = np.arange(m + 1) * step
        return one, grid, (grid[0], grid[-1])
    parts = []
    if K > 3:
        first = one.copy()
        first["ADDL"], first["II"] = K - 4, (r.ii if K > 4 else 0.0)
        parts.append(first)
    for j in range(K - 3, K):
        rec = one.copy()
        rec["TIME"] = j * r.ii
        parts.append(rec)
    grid = (K - 3) * r.ii + np.arange(3 * m + 1) * step
    return pd.concat(parts, ignore_index=True), grid, (grid[2 * m], grid[3 * m])


def _explicit_ss_reached(c: np.ndarray, m: int) -> np.ndarray:
    """Whether curves ``c`` (..., 3m + 1) over the last three dosing intervals are at steady state.

    See :func:`simulate_regimens`, Notes: the AUC still to come under a geometric approach, from the changes of
    the last three intervals' AUCs, within :data:`SS_RTOL` of the last one.
    """
    # each interval from its dose up to one grid step before the next dose: the point at a dose time shows the
    # dose (a bolus jumps there), the end of the last interval does not, so the full intervals would differ
    a = np.stack([np.trapezoid(c[..., k * m:(k + 1) * m], axis=-1) for k in range(3)])
    d1, d2 = a[1] - a[0], a[2] - a[1]
    scale = np.abs(a[2])
    with np.errstate(divide="ignore", invalid="ignore"):
        q = np.where(d1 != 0, d2 / np.where(d1 != 0, d1, 1.0), np.inf)
        rest = np.where(d2 == 0, 0.0, np.where(q < 0, np.abs(d2),
                                               np.where(q < 1, np.abs(d2) * q / (1 - q),
                                                        np.inf)))
        ok = (rest <= SS_RTOL * scale) & (np.abs(d2) <= SS_RTOL * scale)
        ok |= np.abs(d2) <= 1e-3 * SS_RTOL * scale
    return ok & np.isfinite(a).all(axis=0)


def _solver_failures(conc: np.ndarray, c: np.ndarray) -> tuple[np.ndarray, int]:
    """NaN for the draws where an ODE solve failed: the model then returns 0 at every point of the call
    (every subject and time of ``conc``, (draws, IDs, grid)); ``c`` is the part kept. Returns it and the count."""
    failed = ~np.any(conc != 0, axis=(1, 2))
    if failed.any():
        c = c.copy()
        c[failed] = np.nan
    return c, int(failed.sum())


def _intervals(regs: list[Regimen], interval) -> dict[str, tuple[float, float]]:
    out = {}
    for r in regs:
        iv = interval.get(r.label) if isinstance(interval, Mapping) else interval
        if isinstance(interval, Mapping):
            unknown = [k for k in interval if k not in {x.label for x in regs}]
            if unknown:
                raise SpecError(f"interval: regimen {unknown[0]!r} is not among the regimens")
        if iv is None:
            out[r.label] = r.last_interval
            continue
        try:
            a, b = (float(x) for x in iv)
        except (TypeError, ValueError):
            raise SpecError(f"interval {iv!r}: expected (start, end)") from None
        if not (0 <= a < b):
            raise SpecError(f"interval ({a:g}, {b:g}): needs 0 <= start < end")
        out[r.label] = (a, b)
    return out


def _padding_subjects(base: pd.DataFrame, effects: Mapping[str, list]) -> pd.DataFrame:
    """One fitted subject per level of each categorical covariate.

    They are appended to every simulated dataset (and their predictions
    dropped), so the model sees every level of the fit and its categorical
    coefficients line up with the posterior's.
    """
    rows = []
    for col, cs in effects.items():
        if any(c.effect == "categorical" for c in cs):
            for _, grp in base.groupby(col, sort=True):
                rows.append(grp.index[0])
    return base.loc[sorted(set(rows)), list(effects)].reset_index(drop=True) if rows else pd.DataFrame()


def _synthetic_multi(frames, covs: pd.DataFrame, padding: pd.DataFrame, cols: list[str]) -> pd.DataFrame:
    """NONMEM records: for each (dose template, per-subject scale), every subject of ``covs``; then the padding.

    Each subject gets the template's dose records (amounts and rates scaled)
    and one placeholder observation (DV 1) at its last dose record's time.
    """
    parts = []
    next_id = 1
    blocks = [(t, s, covs) for t, s in frames]
    if len(padding):
        blocks.append((frames[0][0], np.ones(len(padding)), padding))
    for template, scale, cv in blocks:
        n, k = len(cv), len(template)
        ids = np.arange(next_id, next_id + n)
        next_id += n
        dose = template.loc[np.tile(np.arange(k), n)].reset_index(drop=True)
        dose["ID"] = np.repeat(ids, k)
        s = np.repeat(np.asarray(scale, float), k)
        dose["AMT"] = dose["AMT"].to_numpy() * s
        dose["RATE"] = dose["RATE"].to_numpy() * s
        obs = pd.DataFrame({"ID": ids, "TIME": template.TIME.max(), "EVID": 0, "AMT": np.nan, "RATE": 0.0,
                            "CMT": np.nan, "II": 0.0, "ADDL": 0, "MDV": 0, "DV": 1.0})
        block = pd.concat([dose, obs], ignore_index=True)
        block["_order"] = np.r_[np.tile(np.arange(k), n), np.full(n, k)]
        cov_rows = cv.reset_index(drop=True)
        pos = block.ID.to_numpy() - ids[0]
        for c in cols:
            block[c] = cov_rows[c].to_numpy()[pos]
        parts.append(block.sort_values(["ID", "_order"], kind="stable").drop(columns="_order"))
    return pd.concat(parts, ignore_index=True)


def _predict(spec, ds, grid, pop: xr.Dataset, z_index: np.ndarray, z_store: dict, z_rng, own, n_total: int,
             n_draws: int, counter):
    """Push the posterior draws through the prediction model of dataset ``ds`` on ``grid``.

    ``z_index`` maps each ID of ``ds`` to its simulated subject (-1: padding,
    whose etas are 0). Yields ``(d0, d1, conc)``, conc (draws, IDs, grid).
    """
    import pymc as pm

    from bayespk.model.population import PopulationModel

    pmm, design = PopulationModel(spec, ds).build_prediction(grid=grid)
    n_ids, n_grid = len(design.subject_ids), len(grid)
    if design.n_obs != n_ids * n_grid or not np.array_equal(design.obs_time[:n_grid], grid):
        raise BayesPKError("internal: unexpected layout of the prediction grid")  # pragma: no cover
    per_subject = [rv for rv in pmm.free_RVs if "ID" in (pmm.named_vars_to_dims.get(rv.name) or ())]
    extra = {}
    for rv in per_subject:
        name = rv.name
        if own is not None:
            if name not in own:
                raise BayesPKError(f"etas='posterior': the posterior has no {name}")
            src = own[name]  # (draws, n_total)
        else:
            w = _centering_weight(spec, name)
            if name not in z_store:
                _check_eta_prior(pmm, rv, w)
                z_store[name] = z_rng.standard_normal((n_draws, n_total))
            src = z_store[name]
            if w:  # z ~ N(0, omega**w): eta = omega**(1-w) z ~ N(0, omega)
                src = src * (np.asarray(pop[f"omega_{name[2:]}"].values, dtype=float).reshape(-1)[:, None] ** w)
        vals = np.where(z_index[None, :] >= 0, src[:, np.maximum(z_index, 0)], 0.0)
        extra[name] = (("chain", "draw", "ID"), vals[None])
    draws = pop.assign(extra).assign_coords(ID=design.subject_ids) if extra else pop
    per_call = max(1, int(MAX_VALUES_PER_CALL // max(1, n_ids * n_grid)))
    for d0 in range(0, n_draws, per_call):
        d1 = min(n_draws, d0 + per_call)
        part = draws.isel(draw=slice(d0, d1))
        with quiet_pymc():
            out = pm.sample_posterior_predictive(
                xr.DataTree(children={"posterior": xr.DataTree(part)}), model=pmm, var_names=["IPRED"],
                random_seed=int(z_rng.integers(2**31)), progressbar=False,
            )
        counter()
        ipred = out["posterior_predictive"]["IPRED"].values[0]  # (draws, obs)
        yield d0, d1, ipred.reshape(d1 - d0, n_ids, n_grid)


def _centering_weight(spec, name: str) -> float:
    """The centring weight of the per-subject variable ``name`` (``z_P``: the spec's, 0 when not set; else 0)."""
    p = spec.parameters.get(name[2:]) if name.startswith("z_") else None
    return float(p.centered or 0.0) if p is not None and name[2:] not in spec.correlated else 0.0


def _check_eta_prior(pmm, rv, w: float) -> None:
    """New etas are drawn here as ``z ~ N(0, omega**w)`` per subject: refuse a per-subject variable that is
    not that (mean 0; with ``w = 0`` SD 1)."""
    from pytensor.graph.traversal import ancestors

    op = rv.owner.op
    ok = type(op).__name__ == "NormalRV"
    if ok:
        mu, sigma = op.dist_params(rv.owner)
        free = set(pmm.free_RVs) - {rv}
        ok = not any(a in free for a in ancestors([mu])) and bool(np.all(np.asarray(mu.eval()) == 0))
        if ok and not w:
            ok = not any(a in free for a in ancestors([sigma])) and bool(np.all(np.asarray(sigma.eval()) == 1))
    if not ok:
        raise BayesPKError(f"the model's per-subject variable {rv.name} is not z ~ N(0, omega**w) (w the "
                           "centring weight); simulate_regimens draws new etas that way")


def _progress(progress):
    if callable(progress):
        return progress
    if progress:
        return lambda msg: print(msg, file=sys.stderr, flush=True)
    return lambda msg: None


def _ticker(progress, total: int) -> Progress:
    """Progress of the simulation tasks (chunk x regimen): each line to a callable ``progress``; otherwise on
    stderr, live on a terminal, else a line at most every ``$BAYESPK_PROGRESS_SECONDS`` and the last one."""
    if callable(progress):
        return Progress("simulate", total, unit="tasks", say=progress, live=False, every=0)
    return Progress("simulate", total, unit="tasks", say=printer(sys.stderr), enabled=bool(progress))


def _line(what, chunk, n_draws, seconds) -> str:
    return f"{what}, subjects {chunk[0] + 1}-{chunk[-1] + 1}, {n_draws} draws in {seconds:.1f} s"

