"""Rule-based and model-assisted dose-escalation designs: BOIN, mTPI-2 (keyboard) and 3+3.

Each design turns the data at the current dose (``n`` patients treated,
``y`` of them with a dose-limiting toxicity, DLT) into a decision:

``E``   escalate to the next higher dose;
``S``   stay at the current dose;
``D``   de-escalate to the next lower dose;
``DU``  de-escalate, and the current dose and every higher dose are
        unacceptably toxic (eliminated; never given again).

* BOIN (Liu & Yuan 2015, J R Stat Soc C 64:507): escalate if ``y/n <=
  lambda_e``, de-escalate if ``y/n >= lambda_d``; eliminate when
  ``P(p > target | y, n) > cutoff_eli`` under a Beta(1, 1) prior and ``n >= 3``.
  The boundaries and their rounding follow the R package BOIN 2.7.2
  (``get.boundary``): ``b_e = floor(lambda_e n)``, ``b_d = ceiling(lambda_d n)``
  (``round(lambda_d n) + 1`` when ``lambda_d n`` is an integer within 1e-12),
  ``b_d`` lowered to the elimination boundary where that is smaller.
* mTPI-2 (Guo et al. 2017, Contemp Clin Trials 58:23; the keyboard design
  of Yan et al. 2017, Clin Cancer Res 23:3994, rests on the same intervals):
  the equivalence interval ``[target - eps1, target + eps2]`` and intervals
  of the same width below and above it (the outermost cut at 0 and 1, kept
  with their own width, as R FIND's ``get_decision_mtpi2``); the interval
  with the largest unit probability mass (posterior probability / width)
  under Beta(1 + y, 1 + n - y) says E (below), S (the equivalence interval)
  or D (above). Elimination as BOIN's (``n >= 3``).
* 3+3: cohorts of 3; 0/3 escalate, 1/3 add 3 at the same dose, >= 2/3
  de-escalate (dose exceeds the MTD); at 6 patients <= 1/6 escalate, >= 2/6
  de-escalate (dose exceeds the MTD).

:func:`next_dose` applies a design to the data of every dose of a trial,
including the elimination of doses and the rule that an eliminated dose is
never given again; :func:`select_mtd` selects the MTD at the end by isotonic
regression (pool-adjacent-violators) as BOIN's ``select.mtd``. Operating
characteristics by simulation are in :mod:`bayespk.design.simulation`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from functools import cache

import numpy as np
from scipy import stats

from bayespk.errors import BayesPKError

__all__ = [
    "DESIGNS",
    "Boin",
    "BoinBoundaries",
    "DesignError",
    "Mtpi2",
    "Mtpi2Table",
    "NextDose",
    "ThreePlusThree",
    "boin_boundaries",
    "make_design",
    "mtpi2_table",
    "next_dose",
    "pava",
    "select_mtd",
]

DESIGNS = ("boin", "mtpi2", "3+3")
DECISION_WORDS = {"E": "escalate", "S": "stay", "D": "de-escalate", "DU": "de-escalate and eliminate"}


class DesignError(BayesPKError, ValueError):
    """A design setting or trial data breaks a rule; the message names the key, the value and the rule."""


# ------------------------------------------------------------------ checks


def _check_target(target: float) -> float:
    try:
        target = float(target)
    except (TypeError, ValueError):
        raise DesignError(f"target: expected a DLT probability in (0, 1), got {target!r}") from None
    if not 0.0 < target < 1.0:
        raise DesignError(f"target = {target:g}: the target DLT probability must lie in (0, 1)")
    return target


def _check_count(name: str, value, low: int = 0) -> int:
    if isinstance(value, bool) or not float(value).is_integer() or int(value) < low:
        raise DesignError(f"{name} = {value!r}: expected a whole number >= {low}")
    return int(value)


def _check_cutoff(cutoff_eli: float) -> float:
    cutoff_eli = float(cutoff_eli)
    if not 0.5 <= cutoff_eli < 1.0:
        raise DesignError(f"cutoff_eli = {cutoff_eli:g}: the elimination cutoff must lie in [0.5, 1)")
    return cutoff_eli


@cache
def _p_above(target: float, n: int, y: int) -> float:
    """``P(p > target | y of n)`` under Beta(1, 1): ``1 - pbeta(target, y + 1, n - y + 1)``, as BOIN."""
    return 1.0 - float(stats.beta.cdf(target, y + 1, n - y + 1))


@cache
def elimination_boundary(target: float, n: int, cutoff_eli: float = 0.95, min_n: int = 3) -> int | None:
    """Smallest number of DLTs in ``n`` patients that eliminates a dose (None: none does, or n < min_n)."""
    if n < min_n:
        return None
    for y in range(1, n + 1):
        if _p_above(target, n, y) > cutoff_eli:
            return y
    return None


# ------------------------------------------------------------------ BOIN


@dataclass(frozen=True)
class BoinBoundaries:
    """BOIN's boundaries: ``lambda_e``, ``lambda_d`` and, by patients treated ``n`` (1..n_max), the number
    of DLTs at or below which to escalate (``escalate``), at or above which to de-escalate (``deescalate``)
    and to eliminate the dose (``eliminate``; None where no number of DLTs does, as R's NA)."""

    target: float
    p_saf: float
    p_tox: float
    cutoff_eli: float
    lambda_e: float
    lambda_d: float
    n: tuple[int, ...]
    escalate: tuple[int, ...]
    deescalate: tuple[int, ...]
    eliminate: tuple[int | None, ...]

    def rows(self, cohort_size: int = 1) -> list[dict]:
        """One dict per ``n`` that is a multiple of ``cohort_size`` (``boundary_tab`` of R BOIN)."""
        return [
            {"n": n, "escalate_if_dlt_le": e, "deescalate_if_dlt_ge": d, "eliminate_if_dlt_ge": x}
            for n, e, d, x in zip(self.n, self.escalate, self.deescalate, self.eliminate)
            if n % cohort_size == 0
        ]

    def decision(self, n: int, y: int) -> str:
        """``E``, ``S``, ``D`` or ``DU`` for ``y`` DLTs in ``n`` patients at the current dose."""
        _check_data(n, y)
        if n > self.n[-1]:
            raise DesignError(
                f"n = {n}: beyond the table (n_max = {self.n[-1]}); build it with a larger n_max"
            )
        i = n - 1
        if self.eliminate[i] is not None and y >= self.eliminate[i]:
            return "DU"
        if y <= self.escalate[i]:
            return "E"
        if y >= self.deescalate[i]:
            return "D"
        return "S"


def boin_lambdas(target: float, p_saf: float, p_tox: float) -> tuple[float, float]:
    """``(lambda_e, lambda_d)`` of Liu & Yuan (2015): the local BOIN design with equal prior weights."""
    lambda_e = math.log((1 - p_saf) / (1 - target)) / math.log(target * (1 - p_saf) / (p_saf * (1 - target)))
    lambda_d = math.log((1 - target) / (1 - p_tox)) / math.log(p_tox * (1 - target) / (target * (1 - p_tox)))
    return lambda_e, lambda_d


def boin_boundaries(
    target: float,
    p_saf: float | None = None,
    p_tox: float | None = None,
    n_max: int = 30,
    cutoff_eli: float = 0.95,
) -> BoinBoundaries:
    """BOIN escalation, de-escalation and elimination boundaries for ``n = 1..n_max`` patients at a dose.

    Parameters
    ----------
    target : float
        Target DLT probability, in (0, 1).
    p_saf, p_tox : float, optional
        Highest DLT probability deemed sub-therapeutic (default ``0.6 * target``) and lowest deemed
        overly toxic (default ``1.4 * target``); ``p_saf < target < p_tox``.
    n_max : int
        Largest number of patients at one dose in the table (R BOIN: ``ncohort * cohortsize``).
    cutoff_eli : float
        Eliminate a dose when ``P(p > target | data) > cutoff_eli`` (with ``n >= 3``).

    Returns
    -------
    BoinBoundaries

    Examples
    --------
    >>> b = boin_boundaries(0.3, n_max=12)
    >>> round(b.lambda_e, 3), round(b.lambda_d, 3)
    (0.236, 0.359)
    >>> b.escalate[2], b.deescalate[2], b.eliminate[2]  # n = 3
    (0, 2, 3)
    """
    target = _check_target(target)
    p_saf = 0.6 * target if p_saf is None else float(p_saf)
    p_tox = 1.4 * target if p_tox is None else float(p_tox)
    if not 0.0 < p_saf < target:
        raise DesignError(f"p_saf = {p_saf:g}: must lie in (0, target = {target:g})")
    if not target < p_tox < 1.0:
        raise DesignError(f"p_tox = {p_tox:g}: must lie in (target = {target:g}, 1)")
    n_max = _check_count("n_max", n_max, 1)
    cutoff_eli = _check_cutoff(cutoff_eli)
    lambda_e, lambda_d = boin_lambdas(target, p_saf, p_tox)
    ns = tuple(range(1, n_max + 1))
    esc = tuple(math.floor(lambda_e * n) for n in ns)
    deesc = []
    for n in (
        ns
    ):  # R BOIN 2.7.2: an integer lambda_d * n means "more than", as the rule is y/n >= lambda_d on a grid
        x = lambda_d * n
        deesc.append(round(x) + 1 if abs(round(x) - x) < 1e-12 else math.ceil(x))
    elim = tuple(elimination_boundary(target, n, cutoff_eli) for n in ns)
    deesc = tuple(d if e is None else min(d, e) for d, e in zip(deesc, elim))
    return BoinBoundaries(target, p_saf, p_tox, cutoff_eli, lambda_e, lambda_d, ns, esc, deesc, elim)


# ------------------------------------------------------------------ mTPI-2


@dataclass(frozen=True)
class Mtpi2Table:
    """mTPI-2 decisions ``decisions[n][y]`` (``E``, ``S``, ``D``, ``DU``) for ``n = 1..n_max`` and ``y = 0..n``
    (``decisions[0]`` is a placeholder), with the intervals used."""

    target: float
    eps1: float
    eps2: float
    cutoff_eli: float
    intervals: tuple[tuple[float, float], ...]
    decisions: tuple[tuple[str, ...], ...]

    def decision(self, n: int, y: int) -> str:
        _check_data(n, y)
        if n == 0:
            raise DesignError("n = 0: no patient treated at the current dose; nothing to decide")
        if n >= len(self.decisions):
            raise DesignError(
                f"n = {n}: beyond the table (n_max = {len(self.decisions) - 1}); build it with a larger n_max"
            )
        return self.decisions[n][y]

    def rows(self, cohort_size: int = 1) -> list[dict]:
        """The table as boundaries (escalate if # DLT <=, de-escalate if >=, eliminate if >=) by ``n``."""
        out = []
        for n in range(1, len(self.decisions)):
            if n % cohort_size:
                continue
            row = self.decisions[n]
            e = [y for y, d in enumerate(row) if d == "E"]
            dd = [y for y, d in enumerate(row) if d in ("D", "DU")]
            du = [y for y, d in enumerate(row) if d == "DU"]
            out.append(
                {
                    "n": n,
                    "escalate_if_dlt_le": max(e) if e else None,
                    "deescalate_if_dlt_ge": min(dd) if dd else None,
                    "eliminate_if_dlt_ge": min(du) if du else None,
                }
            )
        return out


def mtpi2_intervals(target: float, eps1: float, eps2: float) -> tuple[tuple[float, float], ...]:
    """The equivalence interval and the intervals of its width below and above it, cut at 0 and 1."""
    low, high = target - eps1, target + eps2
    width = eps1 + eps2
    below, above = [], []
    edge = low
    while edge > 1e-12:
        below.append((max(edge - width, 0.0), edge))
        edge -= width
    edge = high
    while edge < 1 - 1e-12:
        above.append((edge, min(edge + width, 1.0)))
        edge += width
    return tuple(reversed(below)) + ((low, high),) + tuple(above)


def mtpi2_decision(
    target: float, n: int, y: int, intervals, cutoff_eli: float = 0.95, min_n_eliminate: int = 3
) -> str:
    """mTPI-2 decision for ``y`` DLTs in ``n`` patients (see :func:`mtpi2_table`)."""
    if n >= min_n_eliminate and _p_above(target, n, y) > cutoff_eli:
        return "DU"
    lo = np.array([a for a, _ in intervals])
    hi = np.array([b for _, b in intervals])
    post = stats.beta(1 + y, 1 + n - y)
    upm = (post.cdf(hi) - post.cdf(lo)) / (hi - lo)
    k = int(np.argmax(upm))  # the first of equal masses, as R's which.max
    eq = next(i for i, (a, b) in enumerate(intervals) if a < target < b)
    return "E" if k < eq else ("D" if k > eq else "S")


def mtpi2_table(
    target: float,
    eps1: float = 0.05,
    eps2: float = 0.05,
    n_max: int = 12,
    cutoff_eli: float = 0.95,
    min_n_eliminate: int = 3,
) -> Mtpi2Table:
    """mTPI-2 decision table (E / S / D / DU) for ``n = 1..n_max`` patients and ``y = 0..n`` DLTs.

    Parameters
    ----------
    target : float
        Target DLT probability, in (0, 1).
    eps1, eps2 : float
        Equivalence interval ``[target - eps1, target + eps2]``; ``0 < eps1 < target``, ``eps2 < 1 - target``.
    n_max : int
        Largest number of patients at one dose in the table.
    cutoff_eli : float
        ``DU`` (eliminate) when ``P(p > target | data) > cutoff_eli`` and ``n >= min_n_eliminate``.

    Examples
    --------
    >>> t = mtpi2_table(0.3, n_max=6)
    >>> " ".join(t.decisions[6])  # Guo et al. (2017): 3/6 de-escalates under mTPI-2 (mTPI stayed)
    'E E S D DU DU DU'
    """
    target = _check_target(target)
    eps1, eps2 = float(eps1), float(eps2)
    if not 0.0 < eps1 < target:
        raise DesignError(f"eps1 = {eps1:g}: must lie in (0, target = {target:g})")
    if not 0.0 < eps2 < 1.0 - target:
        raise DesignError(f"eps2 = {eps2:g}: must lie in (0, 1 - target = {1 - target:g})")
    n_max = _check_count("n_max", n_max, 1)
    cutoff_eli = _check_cutoff(cutoff_eli)
    intervals = mtpi2_intervals(target, eps1, eps2)
    rows = [("",)] + [
        tuple(mtpi2_decision(target, n, y, intervals, cutoff_eli, min_n_eliminate) for y in range(n + 1))
        for n in range(1, n_max + 1)
    ]
    return Mtpi2Table(target, eps1, eps2, cutoff_eli, intervals, tuple(rows))


# ------------------------------------------------------------------ designs


def _check_data(n: int, y: int) -> None:
    if n < 0 or y < 0:
        raise DesignError(f"n = {n}, DLTs = {y}: counts cannot be negative")
    if y > n:
        raise DesignError(f"DLTs = {y} > patients treated = {n}: more DLTs than patients")


@dataclass(frozen=True)
class Boin:
    """The BOIN design (see :func:`boin_boundaries`)."""

    target: float
    p_saf: float | None = None
    p_tox: float | None = None
    cutoff_eli: float = 0.95
    n_max: int = 100
    name: str = field(default="boin", init=False)

    def __post_init__(self):
        object.__setattr__(
            self, "table", boin_boundaries(self.target, self.p_saf, self.p_tox, self.n_max, self.cutoff_eli)
        )

    def decision(self, n: int, y: int) -> str:
        return self.table.decision(n, y)

    def eliminated(self, n: int, y: int) -> bool:
        """Whether ``y`` DLTs of ``n`` eliminate the dose (and every higher one)."""
        return n >= 3 and _p_above(self.target, n, y) > self.cutoff_eli

    def reason(self, n: int, y: int, decision: str) -> str:
        t, i = self.table, n - 1
        rate = f"{y} DLT{'s' if y != 1 else ''} in {n} patient{'s' if n != 1 else ''} (rate {y / n:.2f})"
        if decision == "DU":
            return (
                f"{rate}: P(p > {self.target:g} | data) = {_p_above(self.target, n, y):.3f} > "
                f"{self.cutoff_eli:g} (eliminate if # of DLT >= {t.eliminate[i]} at n = {n})"
            )
        if decision == "E":
            return (
                f"{rate} <= lambda_e = {t.lambda_e:.3f} (escalate if # of DLT <= {t.escalate[i]} at n = {n})"
            )
        if decision == "D":
            rule = f"de-escalate if # of DLT >= {t.deescalate[i]} at n = {n}"
            return f"{rate} >= lambda_d = {t.lambda_d:.3f} ({rule})"
        return f"{rate} between lambda_e = {t.lambda_e:.3f} and lambda_d = {t.lambda_d:.3f}"


@dataclass(frozen=True)
class Mtpi2:
    """The mTPI-2 (keyboard) design (see :func:`mtpi2_table`)."""

    target: float
    eps1: float = 0.05
    eps2: float = 0.05
    cutoff_eli: float = 0.95
    n_max: int = 100
    name: str = field(default="mtpi2", init=False)

    def __post_init__(self):
        object.__setattr__(
            self, "table", mtpi2_table(self.target, self.eps1, self.eps2, self.n_max, self.cutoff_eli)
        )

    def decision(self, n: int, y: int) -> str:
        return self.table.decision(n, y)

    def eliminated(self, n: int, y: int) -> bool:
        return n >= 3 and _p_above(self.target, n, y) > self.cutoff_eli

    def reason(self, n: int, y: int, decision: str) -> str:
        rate = f"{y} DLT{'s' if y != 1 else ''} in {n} patient{'s' if n != 1 else ''} (rate {y / n:.2f})"
        if decision == "DU":
            return (
                f"{rate}: P(p > {self.target:g} | data) = {_p_above(self.target, n, y):.3f} > "
                f"{self.cutoff_eli:g}"
            )
        where = {"E": "below", "S": "is", "D": "above"}[decision]
        lo, hi = self.target - self.eps1, self.target + self.eps2
        return (
            f"{rate}: the interval of largest unit probability mass under Beta({1 + y}, {1 + n - y}) {where} "
            f"{'' if decision == 'S' else 'the '}equivalence interval [{lo:g}, {hi:g}]"
        )


@dataclass(frozen=True)
class ThreePlusThree:
    """The 3+3 rule: decisions only at 3 and 6 patients on a dose (``target`` is not used by the rule)."""

    target: float = 1 / 3
    name: str = field(default="3+3", init=False)

    def decision(self, n: int, y: int) -> str:
        _check_data(n, y)
        if n == 3:
            return "E" if y == 0 else ("S" if y == 1 else "DU")
        if n == 6:
            return "E" if y <= 1 else "DU"
        raise DesignError(f"n = {n}: the 3+3 rule decides after 3 or 6 patients on a dose, not {n}")

    def eliminated(self, n: int, y: int) -> bool:
        return n >= 3 and y >= 2

    def reason(self, n: int, y: int, decision: str) -> str:
        rate = f"{y}/{n} DLTs"
        return {
            "E": f"{rate}: escalate (3+3: 0/3 or <= 1/6)",
            "S": f"{rate}: treat 3 more at this dose (3+3: 1/3)",
            "DU": f"{rate}: the dose exceeds the MTD (3+3: >= 2/3 or >= 2/6)",
        }[decision]


def make_design(design: str, target: float, **options):
    """A design by name: ``boin``, ``mtpi2`` or ``3+3`` (options: ``p_saf``, ``p_tox``, ``eps1``, ``eps2``,
    ``cutoff_eli``, ``n_max``; None values are left at their defaults)."""
    options = {k: v for k, v in options.items() if v is not None}
    key = str(design).lower().replace("-", "").replace("_", "")
    if key == "boin":
        return Boin(
            target, **{k: options[k] for k in ("p_saf", "p_tox", "cutoff_eli", "n_max") if k in options}
        )
    if key in ("mtpi2", "keyboard"):
        return Mtpi2(
            target, **{k: options[k] for k in ("eps1", "eps2", "cutoff_eli", "n_max") if k in options}
        )
    if key in ("3+3", "33", "threeplusthree"):
        _check_target(target)
        return ThreePlusThree(target)
    raise DesignError(f"design = {design!r}: unknown; expected one of {', '.join(DESIGNS)}")


# ------------------------------------------------------------------ next dose


@dataclass(frozen=True)
class NextDose:
    """The decision for the next cohort: ``action`` (escalate, stay, de-escalate, stop), ``dose`` (1-based
    level; None when the trial stops), ``reason``, and ``eliminated`` (levels never to be given again)."""

    action: str
    dose: int | None
    current: int
    reason: str
    decision: str
    eliminated: tuple[int, ...]

    def __str__(self) -> str:
        where = f"dose {self.dose}" if self.dose is not None else "no dose"
        head = {
            "escalate": f"escalate to {where}",
            "de-escalate": f"de-escalate to {where}",
            "stay": f"stay at {where}",
            "stop": "stop the trial",
        }[self.action]
        tail = f"; eliminated: dose {', '.join(map(str, self.eliminated))}" if self.eliminated else ""
        return f"{head}: {self.reason}{tail}"


def _counts(doses: int, n_treated, n_dlt) -> tuple[list[int], list[int]]:
    doses = _check_count("doses", doses, 1)
    n_treated, n_dlt = list(n_treated), list(n_dlt)
    if len(n_treated) != len(n_dlt):
        raise DesignError(
            f"treated has {len(n_treated)} value(s) and dlt {len(n_dlt)}: one of each per dose level"
        )
    if len(n_treated) > doses:
        raise DesignError(
            f"treated/dlt: {len(n_treated)} values for doses = {doses} levels; give at most one per "
            "level (levels above the last value count as untreated)"
        )
    n = [_check_count(f"treated[dose {i + 1}]", v) for i, v in enumerate(n_treated)]
    y = [_check_count(f"dlt[dose {i + 1}]", v) for i, v in enumerate(n_dlt)]
    for i, (a, b) in enumerate(zip(n, y)):
        if b > a:
            raise DesignError(f"dose {i + 1}: {b} DLTs in {a} patients treated: more DLTs than patients")
    pad = doses - len(n)
    return n + [0] * pad, y + [0] * pad


def eliminated_levels(design, n, y) -> tuple[int, ...]:
    """1-based levels eliminated by the data: the lowest dose that meets the design's elimination rule and
    every dose above it."""
    for i, (a, b) in enumerate(zip(n, y)):
        if design.eliminated(a, b):
            return tuple(range(i + 1, len(n) + 1))
    return ()


def next_dose(design, doses: int, n_treated, n_dlt, current: int) -> NextDose:
    """The next dose for observed cohort data.

    Parameters
    ----------
    design : Boin, Mtpi2 or ThreePlusThree
        The design (see :func:`make_design`).
    doses : int
        Number of dose levels (1..doses).
    n_treated, n_dlt : sequence of int
        Patients treated and DLTs observed at each level, lowest first; levels above the last value are
        untreated.
    current : int
        The level (1-based) the last cohort was treated at.

    Returns
    -------
    NextDose

    Examples
    --------
    >>> print(next_dose(Boin(0.3), 5, [3, 3, 3], [0, 1, 2], current=3))  # doctest: +NORMALIZE_WHITESPACE
    de-escalate to dose 2: 2 DLTs in 3 patients (rate 0.67) >= lambda_d = 0.359
    (de-escalate if # of DLT >= 2 at n = 3)
    """
    n, y = _counts(doses, n_treated, n_dlt)
    current = _check_count("current", current, 1)
    if current > len(n):
        raise DesignError(f"current = {current}: not a dose level of the design (levels 1..{len(n)})")
    if n[current - 1] == 0:
        raise DesignError(
            f"current = {current}: no patient treated at that level (treated = {n[current - 1]}); "
            "give the level the last cohort received"
        )
    gone = eliminated_levels(design, n, y)
    d = current
    decision = design.decision(n[d - 1], y[d - 1])
    reason = design.reason(n[d - 1], y[d - 1], decision)
    if isinstance(design, ThreePlusThree):
        return _next_three_plus_three(n, y, d, decision, reason, gone)
    if d in gone and decision != "DU":  # eliminated by a lower dose's data
        decision, reason = "DU", f"dose {d} is eliminated by the data at dose {gone[0]}"
    if decision == "DU":
        if d == 1:
            return NextDose(
                "stop", None, d, reason + "; the lowest dose is eliminated: no dose is safe", decision, gone
            )
        return NextDose("de-escalate", d - 1, d, reason, decision, gone)
    if decision == "E":
        if d == len(n):
            return NextDose("stay", d, d, reason + "; already at the highest dose", decision, gone)
        if d + 1 in gone:
            return NextDose(
                "stay", d, d, reason + f"; dose {d + 1} is eliminated (never given again)", decision, gone
            )
        return NextDose("escalate", d + 1, d, reason, decision, gone)
    if decision == "D":
        if d == 1:
            return NextDose("stay", d, d, reason + "; already at the lowest dose", decision, gone)
        return NextDose("de-escalate", d - 1, d, reason, decision, gone)
    return NextDose("stay", d, d, reason, decision, gone)


def _next_three_plus_three(n, y, d, decision, reason, gone) -> NextDose:
    """3+3: the MTD is declared once the dose below one that exceeds it has 6 patients with <= 1 DLT."""
    top = len(n)
    if decision == "S":
        return NextDose("stay", d, d, reason, decision, gone)
    if decision == "E":
        if d == top or d + 1 in gone:
            if n[d - 1] < 6:
                return NextDose(
                    "stay",
                    d,
                    d,
                    reason + f"; dose {d} is the highest allowed: treat 3 more to confirm it",
                    decision,
                    gone,
                )
            return NextDose("stop", None, d, reason + f"; MTD = dose {d}", decision, gone)
        return NextDose("escalate", d + 1, d, reason, decision, gone)
    if d == 1:
        return NextDose(
            "stop", None, d, reason + "; the lowest dose exceeds the MTD: no dose is safe", decision, gone
        )
    if n[d - 2] >= 6:
        return NextDose("stop", None, d, reason + f"; MTD = dose {d - 1}", decision, gone)
    return NextDose("de-escalate", d - 1, d, reason + f"; treat 3 more at dose {d - 1}", decision, gone)


# ------------------------------------------------------------------ MTD selection


def pava(x, w=None) -> np.ndarray:
    """Isotonic (non-decreasing) weighted least-squares fit of ``x`` by pool-adjacent-violators.

    Pools the first violating pair repeatedly, as the ``pava`` inside R BOIN's ``select.mtd``.

    Examples
    --------
    >>> pava([0.1, 0.3, 0.2, 0.4]).round(3).tolist()
    [0.1, 0.25, 0.25, 0.4]
    """
    x = np.asarray(x, dtype=float).copy()
    w = np.ones_like(x) if w is None else np.asarray(w, dtype=float)
    level = np.arange(len(x))
    while True:
        viol = np.flatnonzero(np.diff(x) < 0)
        if viol.size == 0:
            return x
        i = viol[0]
        pool = (level == level[i]) | (level == level[i + 1])
        x[pool] = np.sum(x[pool] * w[pool]) / np.sum(w[pool])
        level[pool] = level[i]


def select_mtd(
    target: float,
    n_treated,
    n_dlt,
    cutoff_eli: float = 0.95,
    bound_mtd: bool = False,
    p_tox: float | None = None,
) -> int | None:
    """The MTD (1-based level) at the end of a trial, as R BOIN's ``select.mtd``; None if none is selected.

    Doses meeting the elimination rule (``n >= 3``, ``P(p > target) > cutoff_eli``) and those above are
    excluded; if the lowest is excluded, none is selected. Among the treated, non-eliminated doses, the
    estimates ``(y + 0.05) / (n + 0.1)`` are made non-decreasing by weighted PAVA (weights 1 / their
    variance); the dose whose estimate is closest to ``target`` is selected (ties: a 1e-10 ramp favours the
    lower dose when the pooled estimate is above the target, the higher when below). ``bound_mtd``: only
    doses whose estimate is at most ``lambda_d`` qualify.

    Examples
    --------
    >>> select_mtd(0.3, [3, 3, 15, 9, 0], [0, 0, 4, 4, 0])  # R BOIN's select.mtd example
    3
    """
    target = _check_target(target)
    n = np.asarray([_check_count("treated", v) for v in n_treated], dtype=float)
    y = np.asarray([_check_count("dlt", v) for v in n_dlt], dtype=float)
    if n.shape != y.shape:
        raise DesignError(f"treated has {n.size} value(s) and dlt {y.size}: one of each per dose level")
    if np.any(y > n):
        i = int(np.flatnonzero(y > n)[0])
        raise DesignError(
            f"dose {i + 1}: {int(y[i])} DLTs in {int(n[i])} patients treated: more DLTs than patients"
        )
    elim = np.zeros(n.size, dtype=bool)
    for i in range(n.size):
        if n[i] >= 3 and _p_above(target, int(n[i]), int(y[i])) > cutoff_eli:
            elim[i:] = True
            break
    if elim[0] or n[~elim].sum() == 0:
        return None
    adm = np.flatnonzero((n != 0) & ~elim)
    ya, na = y[adm], n[adm]
    phat = (ya + 0.05) / (na + 0.1)
    var = (ya + 0.05) * (na - ya + 0.05) / ((na + 0.1) ** 2 * (na + 0.1 + 1))
    phat = pava(phat, 1 / var) + np.arange(1, len(phat) + 1) * 1e-10
    if bound_mtd:
        lambda_d = boin_lambdas(target, 0.6 * target, 1.4 * target if p_tox is None else p_tox)[1]
        keep = phat <= lambda_d
        if not keep.any():
            return None
        phat, adm = phat[keep], adm[keep]
    return int(adm[int(np.argmin(np.abs(phat - target)))]) + 1
