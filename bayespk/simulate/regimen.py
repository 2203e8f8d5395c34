"""Dosing regimens: the :class:`Regimen` type, its short form and file parser, and the dosing of models
written as equations (:class:`UserDosing`).

A :class:`Regimen` describes a dosing schedule (maintenance dose every II,
optional loading doses and titration steps, bolus/oral or zero-order infusion)
and writes it as NONMEM dose records (:meth:`Regimen.rows`, with ADDL/II for
repeats). :func:`bayespk.simulate.simulation.simulate_regimens` simulates
regimens from a fit; :class:`bayespk.simulate.result.RegimenSimulation` holds
what it finds.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bayespk.errors import SpecError
from bayespk.simulate.population import _num

__all__ = ["Regimen", "Step", "UserDosing", "read_regimen_file"]

ROUTES = ("depot", "central")
REGIMEN_KEYS = ("label", "dose", "ii", "n", "loading", "loading_ii", "tinf", "route", "per", "titration")
_NUM = r"[-+]?(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?"
_SHORT = re.compile(rf"\s*({_NUM})\s*q\s*({_NUM})\s*(?:x\s*(\d+))?\s*(?:@\s*({_NUM}))?\s*", re.IGNORECASE)


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


