"""BOIN12: Bayesian optimal interval phase I/II design for the optimal biological dose (OBD).

Lin R, Zhou Y, Yan F, Li D, Yuan Y (2020). "BOIN12: Bayesian optimal interval phase I/II trial design for
utility-based dose finding in immunotherapy and targeted therapies." JCO Precision Oncology 4:1393-1402.

Each patient has a binary toxicity (DLT) and a binary efficacy outcome. The four outcomes carry utilities
(:class:`Utility`; default, as the paper and its software: 100 for efficacy without toxicity, 60 for efficacy
with toxicity, 40 for neither, 0 for toxicity without efficacy). At a dose with ``n`` patients the utility
"quasi-events" are ``x = sum of the patients' utilities / 100``; with a Beta(1, 1) prior the standardised
utility ``u`` of the dose has posterior Beta(1 + x, 1 + n - x) (quasi-binomial). The desirability score of
the dose is ``P(u > u_b | data)``, with the benchmark ``u_b = u_bar + (100 - u_bar) / 2`` where ``u_bar`` is
the utility of a dose with toxicity ``target`` and efficacy ``eff_min`` (independent outcomes): the highest
undesirable utility. An untried dose has the prior score ``1 - u_b / 100``. The rank-based desirability
score (RDS, the paper's Table 3; :func:`rds_table`) ranks these probabilities; decisions compare the
probabilities, which order the doses as the ranks do.

Admissibility (with at least 3 patients on the dose, Beta(1, 1) priors): a dose with
``P(p_tox > target | data) > cutoff_tox`` (0.95) is eliminated with every higher dose; a dose with
``P(p_eff < eff_min | data) > cutoff_eff`` (0.9) is eliminated (futility). Eliminated doses are never given
again; the trial stops when the lowest dose is eliminated for toxicity or every dose is eliminated.

Next dose, at the current dose ``d`` with ``n_d`` patients and observed DLT rate ``y_d / n_d`` (BOIN
boundaries ``lambda_e``, ``lambda_d`` of Liu & Yuan 2015 for ``target``, from
:func:`~bayespk.design.escalation.boin_boundaries`):

1. ``y_d >= n_d lambda_d`` (BOIN's de-escalation boundary): de-escalate to the highest admissible dose
   below ``d``; if there is none, stay at ``d`` (stop if ``d`` is eliminated).
2. otherwise the candidates are ``d``, the highest admissible dose below it and, if ``y_d <= n_d lambda_e``
   or ``n_d < n_star`` (6), the lowest admissible dose above it; the candidate with the largest desirability
   score is chosen (ties: the higher dose, as the BOIN12 Shiny application; the authors' simulation code
   breaks ties at random); an eliminated choice stops the trial.
3. dose exploration: if ``n_d >= n_explore`` (9), ``y_d < n_d lambda_d`` and the lowest admissible dose
   above ``d`` is untried, escalate to it (the paper's supplementary rule against being stuck at a
   sub-optimal dose).
4. optionally (``n_earlystop``) the trial stops when the current dose has that many patients.

These steps follow the authors' simulation code (``get.oc.obd``, as ported in the R package phase12designs,
``oc_boin12``) and the R package escalation (``get_boin12``). At the end (:func:`select_obd`) the MTD is
selected as BOIN's ``select.mtd`` (isotonic regression of the DLT rates, dose closest to ``target``); the
utility of every admissible treated dose up to the MTD is estimated from the isotonic DLT rate and the
efficacy rate ``(y_eff + 0.05) / (n + 0.1)``, and the dose with the largest estimated utility is the OBD (the
authors' code also smooths the efficacy rates by unimodal regression; this module does not).

:func:`boin12_operating_characteristics` simulates trials on a scenario of ``(p_tox, p_eff)`` per dose
(independent outcomes) through :func:`~bayespk.design.simulation.run_trial_tasks` (the Dask runner).
"""

from __future__ import annotations

import csv
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

import numpy as np
from scipy import stats

from bayespk.design.escalation import (
    DesignError,
    _check_count,
    _check_cutoff,
    _check_target,
    boin_boundaries,
    pava,
    select_mtd,
)
from bayespk.design.simulation import _check_settings, check_scenario, run_trial_tasks, tally

__all__ = [
    "Boin12",
    "Boin12Decision",
    "Boin12OperatingCharacteristics",
    "Utility",
    "boin12_next_dose",
    "boin12_operating_characteristics",
    "rds_table",
    "select_obd",
    "simulate_boin12_trials",
]


# ------------------------------------------------------------------ utility
@dataclass(frozen=True)
class Utility:
    """Utilities (0..100) of the four outcomes of a patient.

    ``eff_no_tox`` (efficacy, no toxicity; the paper's u1 = 100), ``eff_tox`` (efficacy and toxicity; 60),
    ``no_eff_no_tox`` (neither; 40), ``no_eff_tox`` (toxicity, no efficacy; u4 = 0).
    """

    eff_no_tox: float = 100.0
    eff_tox: float = 60.0
    no_eff_no_tox: float = 40.0
    no_eff_tox: float = 0.0

    def __post_init__(self):
        for key in ("eff_no_tox", "eff_tox", "no_eff_no_tox", "no_eff_tox"):
            v = getattr(self, key)
            try:
                x = float(v)
            except (TypeError, ValueError):
                raise DesignError(f"utility.{key} = {v!r}: expected a number in [0, 100]") from None
            if isinstance(v, bool) or not (0.0 <= x <= 100.0):
                raise DesignError(f"utility.{key} = {v!r}: the utility table must lie in [0, 100]")
            object.__setattr__(self, key, x)

    @classmethod
    def from_sequence(cls, values, where: str = "utility") -> Utility:
        """From ``(eff_no_tox, eff_tox, no_eff_no_tox, no_eff_tox)``."""
        values = list(values)
        if len(values) != 4:
            raise DesignError(
                f"{where}: expected 4 values (efficacy without toxicity, efficacy with toxicity, neither, "
                f"toxicity without efficacy), got {len(values)}"
            )
        return cls(*values)

    @property
    def marginal(self) -> bool:
        """Whether the quasi-events depend on the marginal counts only: ``u11 + u00 == u01 + u10``."""
        return abs(self.eff_tox + self.no_eff_no_tox - self.eff_no_tox - self.no_eff_tox) < 1e-9

    def value(self, p_tox, p_eff):
        """Mean utility of a dose with toxicity ``p_tox`` and efficacy ``p_eff`` (independent outcomes)."""
        p_tox, p_eff = np.asarray(p_tox, dtype=float), np.asarray(p_eff, dtype=float)
        return (
            self.eff_no_tox * p_eff * (1 - p_tox)
            + self.eff_tox * p_eff * p_tox
            + self.no_eff_no_tox * (1 - p_eff) * (1 - p_tox)
            + self.no_eff_tox * (1 - p_eff) * p_tox
        )

    def quasi_events(self, n: int, n_tox: int, n_eff: int, n_both: int | None = None) -> float:
        """``x``: the sum of the patients' utilities / 100 (``n_both``: patients with both outcomes, needed
        unless :attr:`marginal`)."""
        if n_both is None:
            if not self.marginal:
                raise DesignError(
                    "n_both: required with this utility table (eff_tox + no_eff_no_tox != eff_no_tox + "
                    "no_eff_tox, so the utility depends on how toxicity and efficacy co-occur); give the "
                    "number of patients with both a DLT and efficacy at each dose"
                )
            # u11 y11 + u01 y01 + u00 y00 + u10 y10 with u11 + u00 = u01 + u10: linear in the margins
            total = (
                self.no_eff_no_tox * n
                + (self.eff_no_tox - self.no_eff_no_tox) * n_eff
                + (self.no_eff_tox - self.no_eff_no_tox) * n_tox
            )
        else:
            y01, y10 = n_eff - n_both, n_tox - n_both
            y00 = n - n_eff - n_tox + n_both
            total = (
                self.eff_tox * n_both + self.eff_no_tox * y01 + self.no_eff_tox * y10 + self.no_eff_no_tox * y00
            )
        return round(total, 9) / 100.0


# ------------------------------------------------------------------ design
@cache
def _p_eff_below(eff_min: float, n: int, y: int) -> float:
    """``P(p_eff < eff_min | y of n)`` under Beta(1, 1)."""
    return float(stats.beta.cdf(eff_min, y + 1, n - y + 1))


@cache
def _p_tox_above(target: float, n: int, y: int) -> float:
    return float(stats.beta.sf(target, y + 1, n - y + 1))


@cache
def _p_utility_above(benchmark: float, n: int, x: float) -> float:
    """``P(u > benchmark / 100)`` under Beta(1 + x, 1 + n - x)."""
    return float(stats.beta.sf(benchmark / 100.0, 1.0 + x, 1.0 + n - x))


@dataclass(frozen=True)
class Boin12:
    """The BOIN12 design (see the module text).

    Parameters
    ----------
    target : float
        Highest acceptable DLT probability ``phi_T`` (the BOIN target), in (0, 1).
    eff_min : float
        Lowest acceptable efficacy probability ``phi_E``, in (0, 1).
    utility : Utility
        Utility table (default 100 / 60 / 40 / 0, the paper's).
    cutoff_tox, cutoff_eff : float
        Eliminate when ``P(p_tox > target) > cutoff_tox`` (0.95) or ``P(p_eff < eff_min) > cutoff_eff`` (0.9).
    n_star : int
        With the DLT rate between the BOIN boundaries, escalation stays a candidate while fewer than ``n_star``
        patients are on the dose (6).
    n_explore : int
        Explore the next untried dose once ``n_explore`` patients are on the current one (9).
    n_earlystop : int, optional
        Stop the trial when the current dose has this many patients (default: never).
    p_saf, p_tox : float, optional
        BOIN's sub-therapeutic and overly toxic DLT probabilities (default 0.6 and 1.4 x target).
    n_max : int
        Largest number of patients at one dose for the BOIN table.
    """

    target: float
    eff_min: float
    utility: Utility = field(default_factory=Utility)
    cutoff_tox: float = 0.95
    cutoff_eff: float = 0.9
    n_star: int = 6
    n_explore: int = 9
    n_earlystop: int | None = None
    p_saf: float | None = None
    p_tox: float | None = None
    n_max: int = 100
    name: str = field(default="boin12", init=False)

    def __post_init__(self):
        object.__setattr__(self, "target", _check_target(self.target))
        try:
            eff_min = float(self.eff_min)
        except (TypeError, ValueError):
            raise DesignError(f"eff_min = {self.eff_min!r}: expected an efficacy probability in (0, 1)") from None
        if not 0.0 < eff_min < 1.0:
            raise DesignError(f"eff_min = {eff_min:g}: the lowest acceptable efficacy must lie in (0, 1)")
        object.__setattr__(self, "eff_min", eff_min)
        if not isinstance(self.utility, Utility):
            u = self.utility
            object.__setattr__(
                self, "utility", Utility(**u) if isinstance(u, dict) else Utility.from_sequence(u)
            )
        object.__setattr__(self, "cutoff_tox", _check_cutoff(self.cutoff_tox))
        c = float(self.cutoff_eff)
        if not 0.5 <= c < 1.0:
            raise DesignError(f"cutoff_eff = {c:g}: the futility cutoff must lie in [0.5, 1)")
        object.__setattr__(self, "cutoff_eff", c)
        object.__setattr__(self, "n_star", _check_count("n_star", self.n_star, 1))
        object.__setattr__(self, "n_explore", _check_count("n_explore", self.n_explore, 1))
        if self.n_earlystop is not None:
            object.__setattr__(self, "n_earlystop", _check_count("n_earlystop", self.n_earlystop, 1))
        object.__setattr__(
            self, "table", boin_boundaries(self.target, self.p_saf, self.p_tox, self.n_max, self.cutoff_tox)
        )

    @property
    def benchmark(self) -> float:
        """``u_b``: halfway between the highest undesirable utility ``u_bar`` and 100."""
        u_bar = float(self.utility.value(self.target, self.eff_min))
        return u_bar + (100.0 - u_bar) / 2

    def toxic(self, n: int, y_tox: int) -> bool:
        """Safety rule: ``n >= 3`` and ``P(p_tox > target | data) > cutoff_tox``."""
        return n >= 3 and _p_tox_above(self.target, n, y_tox) > self.cutoff_tox

    def futile(self, n: int, y_eff: int) -> bool:
        """Futility rule: ``n >= 3`` and ``P(p_eff < eff_min | data) > cutoff_eff``."""
        return n >= 3 and _p_eff_below(self.eff_min, n, y_eff) > self.cutoff_eff

    def desirability(self, n: int, y_tox: int, y_eff: int, n_both: int | None = None) -> float:
        """``P(u > u_b | data)`` (the prior value ``1 - u_b / 100`` when ``n = 0``)."""
        x = self.utility.quasi_events(n, y_tox, y_eff, n_both) if n else 0.0
        return _p_utility_above(round(self.benchmark, 9), int(n), x)

    def boundaries(self, n: int) -> tuple[int, int]:
        """(escalate if # DLT <=, de-escalate if # DLT >=) at ``n`` patients (BOIN)."""
        if n > self.table.n[-1]:
            raise DesignError(f"n = {n}: beyond the BOIN table (n_max = {self.table.n[-1]}); raise n_max")
        return self.table.escalate[n - 1], self.table.deescalate[n - 1]


# ------------------------------------------------------------------ data and decisions
def _check_counts(doses: int, n_treated, n_tox, n_eff, n_both=None):
    doses = _check_count("doses", doses, 1)
    cols = {"treated": list(n_treated), "dlt": list(n_tox), "eff": list(n_eff)}
    if n_both is not None:
        cols["both"] = list(n_both)
    lengths = {k: len(v) for k, v in cols.items()}
    if len(set(lengths.values())) != 1:
        raise DesignError(
            "treated/dlt/eff" + ("/both" if n_both is not None else "") + ": one value of each per dose, got "
            + ", ".join(f"{k} {v}" for k, v in lengths.items())
        )
    if lengths["treated"] > doses:
        raise DesignError(
            f"treated: {lengths['treated']} values for doses = {doses} levels; give at most one per level"
        )
    out = {k: [_check_count(f"{k}[dose {i + 1}]", x) for i, x in enumerate(v)] for k, v in cols.items()}
    for i, n in enumerate(out["treated"]):
        for k, what in (("dlt", "DLTs"), ("eff", "efficacy responses")):
            if out[k][i] > n:
                raise DesignError(f"dose {i + 1}: {out[k][i]} {what} in {n} patients treated: more than patients")
        if n_both is not None:
            b = out["both"][i]
            if b > min(out["dlt"][i], out["eff"][i]) or out["dlt"][i] + out["eff"][i] - b > n:
                raise DesignError(
                    f"dose {i + 1}: both = {b} does not fit {out['dlt'][i]} DLTs and {out['eff'][i]} "
                    f"responses in {n} patients (need max(0, dlt + eff - treated) <= both <= min(dlt, eff))"
                )
    pad = doses - lengths["treated"]
    arrays = tuple(np.asarray(v + [0] * pad, dtype=int) for v in out.values())
    return arrays if n_both is not None else arrays + (None,)


def _eliminated(design: Boin12, n, yt, ye):
    """(lowest dose eliminated for toxicity, 0-based, or J; boolean futility per dose)."""
    J = len(n)
    tox_from = next((j for j in range(J) if design.toxic(int(n[j]), int(yt[j]))), J)
    futile = np.array([design.futile(int(n[j]), int(ye[j])) for j in range(J)], dtype=bool)
    return tox_from, futile


def _scores(design: Boin12, n, yt, ye, yb, gone) -> np.ndarray:
    return np.array(
        [
            0.0
            if gone[j]
            else design.desirability(int(n[j]), int(yt[j]), int(ye[j]), None if yb is None else int(yb[j]))
            for j in range(len(n))
        ]
    )


def _decide(design: Boin12, n, yt, ye, yb, d: int):
    """The BOIN12 step at current dose ``d`` (0-based): (next 0-based dose or None, action, reason, scores,
    eliminated mask)."""
    J = len(n)
    tox_from, futile = _eliminated(design, n, yt, ye)
    gone = futile.copy()
    gone[tox_from:] = True
    scores = _scores(design, n, yt, ye, yb, gone)
    nd, yd = int(n[d]), int(yt[d])
    plural = ("s" if yd != 1 else "", "s" if ye[d] != 1 else "", "s" if nd != 1 else "")
    rate = f"{yd} DLT{plural[0]} and {int(ye[d])} response{plural[1]} in {nd} patient{plural[2]}"
    if tox_from == 0:
        return None, "stop", "the lowest dose is eliminated for toxicity: no dose is safe", scores, gone
    if gone.all():
        return None, "stop", "every dose is eliminated (toxicity or futility)", scores, gone
    if design.n_earlystop is not None and nd >= design.n_earlystop:
        why = f"{nd} patients at dose {d + 1} >= n_earlystop = {design.n_earlystop}: select the OBD"
        return None, "finish", why, scores, gone
    b_e, b_d = design.boundaries(nd)
    lower = next((j for j in range(d - 1, -1, -1) if not gone[j]), None)
    upper = next((j for j in range(d + 1, J) if not gone[j]), None)
    t = design.table
    if yd >= b_d:
        why = f"{rate}: DLT rate {yd / nd:.2f} >= lambda_d = {t.lambda_d:.3f} (de-escalate if # DLT >= {b_d})"
        if lower is not None:
            nxt = lower
        elif not gone[d]:
            nxt, why = d, why + "; no admissible lower dose"
        else:
            return None, "stop", why + f"; dose {d + 1} is eliminated and no lower dose is admissible", scores, gone
    else:
        cand = [j for j in (lower, d) if j is not None]
        esc = yd <= b_e or nd < design.n_star
        if esc and upper is not None:
            cand.append(upper)
        best = max(scores[j] for j in cand)
        nxt = max(j for j in cand if scores[j] == best)  # ties: the higher dose
        if yd <= b_e:
            where = f"<= lambda_e = {t.lambda_e:.3f} (escalate if # DLT <= {b_e})"
        else:
            where = f"between lambda_e = {t.lambda_e:.3f} and lambda_d = {t.lambda_d:.3f}"
            where += f", n < n_star = {design.n_star}" if nd < design.n_star else f", n >= n_star = {design.n_star}"
        why = (
            f"{rate}: DLT rate {yd / nd:.2f} {where}; the largest desirability P(u > u_b = {design.benchmark:g}) "
            f"among dose{'s' if len(cand) > 1 else ''} {', '.join(str(j + 1) for j in sorted(cand))} is "
            f"{scores[nxt]:.3f}, at dose {nxt + 1}"
        )
        if gone[nxt]:
            return None, "stop", why + "; that dose is eliminated: no admissible dose", scores, gone
    if upper is not None and nd >= design.n_explore and yd < b_d and n[upper] == 0 and nxt != upper:
        nxt = upper
        why += f"; explore untried dose {upper + 1} ({nd} >= n_explore = {design.n_explore} at dose {d + 1})"
    action = "escalate" if nxt > d else ("de-escalate" if nxt < d else "stay")
    return nxt, action, why, scores, gone


@dataclass(frozen=True)
class Boin12Decision:
    """The BOIN12 decision: ``action`` (escalate, stay, de-escalate, stop), ``dose`` (1-based; None when the
    trial stops), ``reason``, ``desirability`` per dose (``P(u > u_b)``; 0 for eliminated doses),
    ``eliminated`` (1-based levels never given again) and ``obd`` (the OBD the data would select now)."""

    action: str
    dose: int | None
    current: int
    reason: str
    desirability: tuple[float, ...]
    eliminated: tuple[int, ...]
    benchmark: float
    obd: int | None

    def __str__(self) -> str:
        where = f"dose {self.dose}" if self.dose is not None else ""
        head = {
            "escalate": f"escalate to {where}",
            "de-escalate": f"de-escalate to {where}",
            "stay": f"stay at {where}",
            "stop": "stop the trial",
        }[self.action]
        tail = f"; eliminated: dose {', '.join(map(str, self.eliminated))}" if self.eliminated else ""
        return f"{head}: {self.reason}{tail}"

    def to_dict(self) -> dict:
        return {
            "action": self.action,
            "dose": self.dose,
            "current": self.current,
            "reason": self.reason,
            "desirability": list(self.desirability),
            "benchmark": self.benchmark,
            "eliminated": list(self.eliminated),
            "obd": self.obd,
        }


def boin12_next_dose(
    design: Boin12, doses: int, n_treated, n_tox, n_eff, current: int, n_both=None
) -> Boin12Decision:
    """The next dose for observed data under BOIN12.

    Parameters
    ----------
    design : Boin12
    doses : int
        Number of dose levels.
    n_treated, n_tox, n_eff : sequence of int
        Patients, patients with a DLT and patients with an efficacy response per dose, lowest first (levels
        after the last value are untried).
    current : int
        The level (1-based) of the last cohort.
    n_both : sequence of int, optional
        Patients with both a DLT and a response per dose (needed only when the utility table is not
        additive in the margins, see :attr:`Utility.marginal`).

    Returns
    -------
    Boin12Decision

    Examples
    --------
    >>> d = Boin12(0.35, 0.25)  # u_b = 70.5; an untried dose scores 1 - 0.705 = 0.295
    >>> r = boin12_next_dose(d, 4, [3], [0], [2], current=1)  # x = 2.4: P(u > 0.705) under Beta(3.4, 1.6)
    >>> r.action, r.dose, round(r.desirability[0], 3), round(r.desirability[1], 3)
    ('stay', 1, 0.501, 0.295)
    """
    if not isinstance(design, Boin12):
        raise DesignError(f"design: expected a Boin12 design, got {type(design).__name__}")
    n, yt, ye, yb = _check_counts(doses, n_treated, n_tox, n_eff, n_both)
    current = _check_count("current", current, 1)
    if current > len(n):
        raise DesignError(f"current = {current}: not a dose level of the design (levels 1..{len(n)})")
    if n[current - 1] == 0:
        raise DesignError(
            f"current = {current}: no patient treated at that level; give the level the last cohort received"
        )
    nxt, action, reason, scores, gone = _decide(design, n, yt, ye, yb, current - 1)
    return Boin12Decision(
        "stop" if action == "finish" else action,
        None if nxt is None else nxt + 1,
        current,
        reason,
        tuple(float(s) for s in scores),
        tuple(int(j) + 1 for j in np.flatnonzero(gone)),
        design.benchmark,
        select_obd(design, n, yt, ye),
    )


def select_obd(design: Boin12, n_treated, n_tox, n_eff) -> int | None:
    """The OBD (1-based) at the end of a trial; None if no dose is selected.

    The MTD is BOIN's (:func:`~bayespk.design.escalation.select_mtd` with ``cutoff_tox``). Among treated doses
    at or below it that are not eliminated (toxicity or futility), the utility is estimated from the isotonic
    DLT rate (weighted PAVA of ``(y + 0.05) / (n + 0.1)``, as ``select_mtd``) and the efficacy rate
    ``(y_eff + 0.05) / (n + 0.1)``; the largest estimate is selected (ties: the lower dose).
    """
    n, yt, ye, _ = _check_counts(len(list(n_treated)) or 1, n_treated, n_tox, n_eff)
    if n.sum() == 0:
        return None
    mtd = select_mtd(design.target, n, yt, design.cutoff_tox)
    if mtd is None:
        return None
    tox_from, futile = _eliminated(design, n, yt, ye)
    treated = np.flatnonzero((n > 0) & (np.arange(len(n)) < tox_from))
    ya, na = yt[treated].astype(float), n[treated].astype(float)
    var = (ya + 0.05) * (na - ya + 0.05) / ((na + 0.1) ** 2 * (na + 0.1 + 1))
    p_tox = pava((ya + 0.05) / (na + 0.1), 1 / var)
    p_eff = (ye[treated] + 0.05) / (na + 0.1)
    u = design.utility.value(p_tox, p_eff)
    ok = (treated <= mtd - 1) & ~futile[treated]
    if not ok.any():
        return None
    best = np.flatnonzero(ok)[int(np.argmax(np.where(ok, u, -np.inf)[ok]))]
    return int(treated[best]) + 1


def rds_table(design: Boin12, sample_sizes=(0, 3, 6, 9)) -> list[dict]:
    """The rank-based desirability scores (the paper's Table 3) for every ``(n, DLTs, responses)`` with ``n`` in
    ``sample_sizes``: ``P(u > u_b)``, admissibility, and ``rds``, the rank of the probability among the
    admissible rows (average ranks for ties, as R's ``rank``; None for inadmissible rows)."""
    rows = []
    for n in sample_sizes:
        n = _check_count("sample_sizes", n, 0)
        for yt in range(n + 1):
            for ye in range(n + 1):
                ok = not design.toxic(n, yt) and not design.futile(n, ye)
                rows.append(
                    {"n": n, "dlt": yt, "eff": ye, "admissible": ok, "prob": design.desirability(n, yt, ye)}
                )
    adm = [r for r in rows if r["admissible"]]
    ranks = stats.rankdata([r["prob"] for r in adm])
    for r in rows:
        r["rds"] = None
    for r, k in zip(adm, ranks):
        r["rds"] = float(k)
    return rows


# ------------------------------------------------------------------ simulation
def _check_eff_scenario(p_tox, p_eff):

    try:
        pt = check_scenario(p_tox)
    except DesignError as e:
        raise DesignError(str(e).replace("scenario", "p_tox", 1)) from None
    try:
        pe = check_scenario(p_eff, allow_non_monotone=True)  # efficacy may plateau or fall
    except DesignError as e:
        msg = str(e).replace("DLT probability", "efficacy probability").replace("scenario", "p_eff", 1)
        raise DesignError(msg) from None
    if pe.size != pt.size:
        raise DesignError(f"p_eff has {pe.size} values and p_tox {pt.size}: one of each per dose")
    return pt, pe


def simulate_boin12_trials(
    design: Boin12, p_tox, p_eff, trials: int, cohort_size: int = 3, cohorts: int = 10, start_dose: int = 1,
    seed=0,
) -> dict:
    """Simulate ``trials`` BOIN12 trials in this process (independent toxicity and efficacy); the sums that
    :func:`boin12_operating_characteristics` combines. ``seed``: an int or a SeedSequence."""
    pt, pe = np.asarray(p_tox, dtype=float), np.asarray(p_eff, dtype=float)
    rng = np.random.default_rng(seed)
    J = pt.size
    sums = {"trials": 0, "selected": [0] * J, "none": 0, "patients": [0] * J, "dlts": [0] * J,
            "responses": [0] * J, "cohorts": 0}
    for _ in range(trials):
        n, yt, ye, yb = (np.zeros(J, dtype=int) for _ in range(4))
        d, used, stopped = start_dose - 1, 0, False
        for i in range(cohorts):
            tox = rng.random(cohort_size) < pt[d]
            eff = rng.random(cohort_size) < pe[d]
            n[d] += cohort_size
            yt[d] += int(tox.sum())
            ye[d] += int(eff.sum())
            yb[d] += int((tox & eff).sum())
            used = i + 1
            nxt, action, _, _, _ = _decide(design, n, yt, ye, None if design.utility.marginal else yb, d)
            if action in ("stop", "finish"):
                stopped = action == "stop"  # "finish": n_earlystop reached, the OBD is selected
                break
            d = nxt
        obd = None if stopped else select_obd(design, n, yt, ye)
        tally(sums, n, yt, None if obd is None else obd - 1, used)
        for j in range(J):
            sums["responses"][j] += int(ye[j])
    return sums


def _task(payload: dict) -> dict:
    """One task of :func:`boin12_operating_characteristics` (run on a Dask worker)."""
    o = payload["options"]
    design = Boin12(payload["target"], payload["eff_min"], Utility(**o["utility"]),
                    **{k: v for k, v in o.items() if k != "utility"})
    seed = np.random.SeedSequence(payload["seed"], spawn_key=(payload["index"],))
    return simulate_boin12_trials(design, payload["p_tox"], payload["p_eff"], payload["trials"],
                                  payload["cohort_size"], payload["cohorts"], payload["start_dose"], seed)


@dataclass
class Boin12OperatingCharacteristics:
    """What the simulation of BOIN12 on a scenario gave (percentages in %, means per trial). ``true_obd``:
    the dose of largest true utility among doses with ``p_tox <= target`` (1-based; None if none)."""

    target: float
    eff_min: float
    p_tox: tuple[float, ...]
    p_eff: tuple[float, ...]
    true_utility: tuple[float, ...]
    true_obd: int | None
    trials: int
    cohort_size: int
    cohorts: int
    select_pct: tuple[float, ...]
    patients: tuple[float, ...]
    dlts: tuple[float, ...]
    responses: tuple[float, ...]
    stopped_pct: float
    obd_select_pct: float
    overdose_select_pct: float
    mean_patients: float
    mean_cohorts: float
    seconds: float = 0.0
    design: str = "boin12"

    def rows(self) -> list[dict]:
        return [
            {"dose": j + 1, "p_tox": a, "p_eff": b, "utility": u, "select_pct": s, "patients": n, "dlts": y,
             "responses": e}
            for j, (a, b, u, s, n, y, e) in enumerate(zip(self.p_tox, self.p_eff, self.true_utility,
                                                          self.select_pct, self.patients, self.dlts,
                                                          self.responses))
        ]

    def summary(self) -> dict:
        return {k: getattr(self, k) for k in (
            "design", "target", "eff_min", "trials", "cohort_size", "cohorts", "true_obd", "obd_select_pct",
            "stopped_pct", "overdose_select_pct", "mean_patients", "mean_cohorts")}

    def write_csv(self, path) -> Path:
        path = Path(path)
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["dose", "p_tox", "p_eff", "utility", "select_pct", "patients", "dlts", "responses"])
            for r in self.rows():
                w.writerow([r["dose"], f"{r['p_tox']:g}", f"{r['p_eff']:g}", f"{r['utility']:.2f}",
                            f"{r['select_pct']:.2f}", f"{r['patients']:.3f}", f"{r['dlts']:.3f}",
                            f"{r['responses']:.3f}"])
            w.writerow(["none", "", "", "", f"{self.stopped_pct:.2f}", "", "", ""])
        return path

    def __str__(self) -> str:
        lines = [
            f"BOIN12, target toxicity {self.target:g}, lowest efficacy {self.eff_min:g}: {self.trials} trials of "
            f"up to {self.cohorts} cohorts of {self.cohort_size}",
            f"{'dose':>5} {'p_tox':>6} {'p_eff':>6} {'utility':>8} {'select %':>9} {'patients':>9} {'DLTs':>6} "
            f"{'resp.':>6}",
        ]
        for r in self.rows():
            mark = " <- OBD" if self.true_obd == r["dose"] else ""
            lines.append(f"{r['dose']:>5} {r['p_tox']:>6.3g} {r['p_eff']:>6.3g} {r['utility']:>8.1f} "
                         f"{r['select_pct']:>9.1f} {r['patients']:>9.2f} {r['dlts']:>6.2f} {r['responses']:>6.2f}"
                         f"{mark}")
        lines += [
            f"selected the true OBD: {self.obd_select_pct:.1f}%" if self.true_obd else "no dose has p_tox <= target",
            f"no dose selected (stopped): {self.stopped_pct:.1f}%",
            f"selected a dose above the target toxicity: {self.overdose_select_pct:.1f}%",
            f"mean per trial: {self.mean_patients:.1f} patients, {self.mean_cohorts:.2f} cohorts",
        ]
        return "\n".join(lines)


def _combine(parts, design: Boin12, pt, pe, cohort_size, cohorts, seconds) -> Boin12OperatingCharacteristics:
    T = sum(r["trials"] for r in parts)
    tot = {k: np.sum([r[k] for r in parts], axis=0) for k in ("selected", "patients", "dlts", "responses")}
    sel = 100 * tot["selected"] / T
    u = design.utility.value(pt, pe)
    ok = np.flatnonzero(pt <= design.target)
    true_obd = int(ok[np.argmax(u[ok])]) + 1 if ok.size else None
    return Boin12OperatingCharacteristics(
        target=design.target, eff_min=design.eff_min, p_tox=tuple(map(float, pt)), p_eff=tuple(map(float, pe)),
        true_utility=tuple(map(float, u)), true_obd=true_obd, trials=T, cohort_size=cohort_size, cohorts=cohorts,
        select_pct=tuple(map(float, sel)), patients=tuple(map(float, tot["patients"] / T)),
        dlts=tuple(map(float, tot["dlts"] / T)), responses=tuple(map(float, tot["responses"] / T)),
        stopped_pct=100 * sum(r["none"] for r in parts) / T,
        obd_select_pct=float(sel[true_obd - 1]) if true_obd else 0.0,
        overdose_select_pct=float(sel[pt > design.target].sum()),
        mean_patients=float(tot["patients"].sum() / T), mean_cohorts=sum(r["cohorts"] for r in parts) / T,
        seconds=seconds,
    )


def boin12_operating_characteristics(
    design: Boin12,
    p_tox,
    p_eff,
    trials: int = 2000,
    cohort_size: int = 3,
    cohorts: int = 10,
    start_dose: int = 1,
    seed: int = 0,
    out=None,
    tasks: int | None = None,
    client=None,
    scheduler: str | None = None,
    workers: int | None = None,
    progress=None,
) -> Boin12OperatingCharacteristics:
    """Simulate BOIN12 on a scenario and summarise its operating characteristics.

    Parameters
    ----------
    design : Boin12
    p_tox, p_eff : sequence of float
        True toxicity (non-decreasing) and efficacy probability of each dose, lowest first.
    trials, cohort_size, cohorts, start_dose, seed, out, tasks, client, scheduler, workers, progress
        As :func:`bayespk.design.simulation.operating_characteristics`.

    Returns
    -------
    Boin12OperatingCharacteristics
    """

    if not isinstance(design, Boin12):
        raise DesignError(f"design: expected a Boin12 design, got {type(design).__name__}")
    pt, pe = _check_eff_scenario(p_tox, p_eff)
    tasks = _check_settings(design, pt, trials, cohort_size, cohorts, start_dose, tasks, seed)
    if cohort_size * cohorts > design.n_max:
        design = Boin12(**{**_options(design), "utility": design.utility, "target": design.target,
                           "eff_min": design.eff_min, "n_max": cohort_size * cohorts})
    u = design.utility
    base = {
        "design": "boin12",
        "target": design.target,
        "eff_min": design.eff_min,
        "options": {**_options(design), "utility": {k: getattr(u, k) for k in
                                                    ("eff_no_tox", "eff_tox", "no_eff_no_tox", "no_eff_tox")}},
        "p_tox": [float(v) for v in pt],
        "p_eff": [float(v) for v in pe],
        "cohort_size": cohort_size,
        "cohorts": cohorts,
        "start_dose": start_dose,
        "seed": seed,
    }
    parts, seconds = run_trial_tasks(_task, base, trials, tasks, out, "boin12-oc", client=client,
                                     scheduler=scheduler, workers=workers, progress=progress)
    return _combine(parts, design, pt, pe, cohort_size, cohorts, seconds)


def _options(design: Boin12) -> dict:
    return {k: getattr(design, k) for k in ("cutoff_tox", "cutoff_eff", "n_star", "n_explore", "n_earlystop",
                                            "p_saf", "p_tox", "n_max")}
