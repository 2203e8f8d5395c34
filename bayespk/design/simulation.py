"""Operating characteristics of a dose-escalation design by simulating trials.

For a scenario (the true DLT probability of each dose) :func:`operating_characteristics`
simulates ``trials`` trials of ``cohorts`` cohorts of ``cohort_size`` patients
and reports, per dose, the percentage of trials selecting it as the MTD, the
mean number of patients treated and of DLTs; and overall the percentage of
trials stopped without a selection, the percentage selecting a dose above the
target (overdose selection), the percentage of trials treating more than 60%
(80%) of the maximum sample size at doses above the target (R BOIN's
``overdose60``/``overdose80``), the mean number of patients, DLTs and cohorts
(trial length).

BOIN and mTPI-2 trials follow R BOIN's ``get.oc``: start at ``start_dose``;
after each cohort but the last, eliminate the current dose and every higher
one if the design says so (stop the trial if it is the lowest), escalate
unless the next dose is eliminated, or de-escalate; at the end select the MTD
with :func:`~bayespk.design.escalation.select_mtd`. 3+3 trials follow the 3+3
rule until it declares the MTD (or ``cohorts`` cohorts are used).

The trials are split into a few tasks of many trials each and run through
:func:`bayespk.parallel.run_tasks` (a local Dask cluster by default, or a
running scheduler's address); each task has its own random stream spawned
from ``seed``, so a result depends only on the settings, the seed and the
number of tasks.
"""

from __future__ import annotations

import csv
import math
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bayespk.design.escalation import DesignError, ThreePlusThree, _check_count, make_design, select_mtd

__all__ = [
    "OperatingCharacteristics",
    "check_scenario",
    "operating_characteristics",
    "run_trial_tasks",
    "simulate_trials",
]

CODES = {"E": 0, "S": 1, "D": 2, "DU": 3}


def check_scenario(scenario, allow_non_monotone: bool = False) -> np.ndarray:
    """The scenario's true DLT probabilities as an array; refuses values outside [0, 1] and, unless
    ``allow_non_monotone``, a probability lower than that of a lower dose."""
    try:
        p = np.asarray([float(v) for v in scenario], dtype=float)
    except (TypeError, ValueError):
        raise DesignError(
            f"scenario = {scenario!r}: expected one DLT probability per dose, lowest dose first"
        ) from None
    if p.size == 0:
        raise DesignError("scenario: no dose; give one true DLT probability per dose, lowest dose first")
    bad = np.flatnonzero(~np.isfinite(p) | (p < 0) | (p > 1))
    if bad.size:
        i = int(bad[0])
        raise DesignError(f"scenario: dose {i + 1} has DLT probability {p[i]:g}, outside [0, 1]")
    down = np.flatnonzero(np.diff(p) < 0)
    if down.size and not allow_non_monotone:
        i = int(down[0])
        raise DesignError(
            f"scenario: DLT probability falls from {p[i]:g} at dose {i + 1} to {p[i + 1]:g} at dose "
            f"{i + 2}; the designs assume toxicity rises with dose (allow it with "
            "allow_non_monotone / --allow-non-monotone)"
        )
    return p


def _decision_codes(design, n_max: int) -> np.ndarray:
    """``codes[n, y]``: the design's decision (0 E, 1 S, 2 D, 3 DU) for n = 1..n_max."""
    codes = np.full((n_max + 1, n_max + 1), -1, dtype=np.int8)
    for n in range(1, n_max + 1):
        for y in range(n + 1):
            codes[n, y] = CODES[design.decision(n, y)]
    return codes


def _interval_trial(
    rng, p, codes, cohort_size, cohorts, start, design
) -> tuple[np.ndarray, np.ndarray, int | None, int]:
    """One BOIN / mTPI-2 trial: (patients per dose, DLTs per dose, selected 0-based dose or None, cohorts)."""
    J = p.size
    n = np.zeros(J, dtype=int)
    y = np.zeros(J, dtype=int)
    d, lowest_eliminated = start, J
    for i in range(cohorts):
        y[d] += rng.binomial(cohort_size, p[d])
        n[d] += cohort_size
        if i == cohorts - 1:
            break  # the last cohort: no further dose decision (R BOIN get.oc)
        code = codes[n[d], y[d]]
        if code == 3:
            lowest_eliminated = min(lowest_eliminated, d)
            if d == 0:
                return n, y, None, i + 1
        if code == 0 and d < J - 1:
            if d + 1 < lowest_eliminated:
                d += 1
        elif code >= 2 and d > 0:
            d -= 1
    mtd = select_mtd(design.target, n, y, design.cutoff_eli)
    return n, y, None if mtd is None else mtd - 1, cohorts


def _three_plus_three_trial(
    rng, p, cohort_size, cohorts, start
) -> tuple[np.ndarray, np.ndarray, int | None, int]:
    """One 3+3 trial: (patients per dose, DLTs per dose, MTD 0-based or None, cohorts used)."""
    J = p.size
    n = np.zeros(J, dtype=int)
    y = np.zeros(J, dtype=int)
    d, toxic_from = start, J
    for i in range(cohorts):
        y[d] += rng.binomial(cohort_size, p[d])
        n[d] += cohort_size
        if n[d] == 3:
            step = "E" if y[d] == 0 else ("S" if y[d] == 1 else "X")
        else:
            step = "E" if y[d] <= 1 else "X"
        if step == "S":
            continue
        if step == "E":
            if d == J - 1 or d + 1 >= toxic_from:
                if n[d] < 6:
                    continue  # confirm the highest allowed dose with 6 patients
                return n, y, d, i + 1
            d += 1
            continue
        toxic_from = min(toxic_from, d)
        if d == 0:
            return n, y, None, i + 1
        if n[d - 1] >= 6:
            return n, y, d - 1, i + 1
        d -= 1
    ok = [j for j in range(min(toxic_from, J)) if (n[j] == 3 and y[j] == 0) or (n[j] >= 6 and y[j] <= 1)]
    return n, y, (max(ok) if ok else None), cohorts


def tally(sums: dict, n, y, selected: int | None, cohorts_used: int) -> None:
    """Add one simulated trial to a task's running sums: the dose (index) selected or none, patients and DLTs
    per dose, cohorts used. Every design's simulation keeps these sums the same way."""
    sums["trials"] += 1
    if selected is None:
        sums["none"] += 1
    else:
        sums["selected"][selected] += 1
    for j in range(len(sums["patients"])):
        sums["patients"][j] += int(n[j])
        sums["dlts"][j] += int(y[j])
    sums["cohorts"] += cohorts_used


def simulate_trials(
    design, scenario, trials: int, cohort_size: int = 3, cohorts: int = 10, start_dose: int = 1, seed=0
) -> dict:
    """Simulate ``trials`` trials in this process; the sums that :func:`operating_characteristics` combines.

    ``seed``: an int or a :class:`numpy.random.SeedSequence`.
    """
    p = np.asarray(scenario, dtype=float)
    rng = np.random.default_rng(seed)
    J = p.size
    start = start_dose - 1
    npts = cohort_size * cohorts
    codes = None if isinstance(design, ThreePlusThree) else _decision_codes(design, npts)
    over = p > design.target
    sums = {
        "trials": 0,
        "selected": [0] * J,
        "none": 0,
        "patients": [0] * J,
        "dlts": [0] * J,
        "cohorts": 0,
        "overdose60": 0,
        "overdose80": 0,
    }
    for _ in range(trials):
        if codes is None:
            n, y, mtd, used = _three_plus_three_trial(rng, p, cohort_size, cohorts, start)
        else:
            n, y, mtd, used = _interval_trial(rng, p, codes, cohort_size, cohorts, start, design)
        tally(sums, n, y, mtd, used)
        at_over = int(n[over].sum())
        sums["overdose60"] += at_over > 0.6 * npts
        sums["overdose80"] += at_over > 0.8 * npts
    return sums


def _task(payload: dict) -> dict:
    """One task of :func:`operating_characteristics` (run on a Dask worker)."""
    design = make_design(payload["design"], payload["target"], **payload["options"])
    seed = np.random.SeedSequence(payload["seed"], spawn_key=(payload["index"],))
    return simulate_trials(
        design,
        payload["scenario"],
        payload["trials"],
        payload["cohort_size"],
        payload["cohorts"],
        payload["start_dose"],
        seed,
    )


@dataclass
class OperatingCharacteristics:
    """What the simulation of a design on a scenario gave (percentages in %, means per trial)."""

    design: str
    target: float
    scenario: tuple[float, ...]
    trials: int
    cohort_size: int
    cohorts: int
    select_pct: tuple[float, ...]
    patients: tuple[float, ...]
    dlts: tuple[float, ...]
    stopped_pct: float
    overdose_select_pct: float
    overdose60_pct: float
    overdose80_pct: float
    mean_patients: float
    mean_dlts: float
    mean_cohorts: float
    seconds: float = 0.0

    def rows(self) -> list[dict]:
        """One row per dose: true DLT probability, % selected, mean patients, mean DLTs."""
        return [
            {"dose": j + 1, "p_true": p, "select_pct": s, "patients": n, "dlts": y}
            for j, (p, s, n, y) in enumerate(zip(self.scenario, self.select_pct, self.patients, self.dlts))
        ]

    def summary(self) -> dict:
        return {
            "design": self.design,
            "target": self.target,
            "trials": self.trials,
            "cohort_size": self.cohort_size,
            "cohorts": self.cohorts,
            "stopped_pct": self.stopped_pct,
            "overdose_select_pct": self.overdose_select_pct,
            "overdose60_pct": self.overdose60_pct,
            "overdose80_pct": self.overdose80_pct,
            "mean_patients": self.mean_patients,
            "mean_dlts": self.mean_dlts,
            "mean_cohorts": self.mean_cohorts,
        }

    def write_csv(self, path: str | Path) -> Path:
        """The per-dose table, then the summary lines (``dose`` = ``all``), as CSV."""
        path = Path(path)
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["dose", "p_true", "select_pct", "patients", "dlts"])
            for r in self.rows():
                w.writerow(
                    [
                        r["dose"],
                        f"{r['p_true']:g}",
                        f"{r['select_pct']:.2f}",
                        f"{r['patients']:.3f}",
                        f"{r['dlts']:.3f}",
                    ]
                )
            w.writerow(["none", "", f"{self.stopped_pct:.2f}", "", ""])
            w.writerow(["all", "", "", f"{self.mean_patients:.3f}", f"{self.mean_dlts:.3f}"])
        return path

    def __str__(self) -> str:
        lines = [
            (
                f"{self.design} design, target {self.target:g}: {self.trials} trials of up to {self.cohorts} "
                f"cohorts of {self.cohort_size}"
            ),
            f"{'dose':>5} {'p_true':>7} {'select %':>9} {'patients':>9} {'DLTs':>7}",
        ]
        for r in self.rows():
            lines.append(
                f"{r['dose']:>5} {r['p_true']:>7.3g} {r['select_pct']:>9.1f} {r['patients']:>9.2f} "
                f"{r['dlts']:>7.2f}"
            )
        lines += [
            f"no dose selected (stopped for toxicity): {self.stopped_pct:.1f}%",
            f"selected a dose above the target: {self.overdose_select_pct:.1f}%",
            (
                f"trials treating > 60% (80%) of patients above the target: {self.overdose60_pct:.1f}% "
                f"({self.overdose80_pct:.1f}%)"
            ),
            (
                f"mean per trial: {self.mean_patients:.1f} patients, {self.mean_dlts:.2f} DLTs, "
                f"{self.mean_cohorts:.2f} cohorts"
            ),
        ]
        return "\n".join(lines)


def _combine(parts: list[dict], design, p, cohort_size, cohorts, seconds) -> OperatingCharacteristics:
    T = sum(r["trials"] for r in parts)
    tot = {k: np.sum([r[k] for r in parts], axis=0) for k in ("selected", "patients", "dlts")}
    sel = 100 * tot["selected"] / T
    return OperatingCharacteristics(
        design=design.name,
        target=design.target,
        scenario=tuple(float(v) for v in p),
        trials=T,
        cohort_size=cohort_size,
        cohorts=cohorts,
        select_pct=tuple(float(v) for v in sel),
        patients=tuple(float(v) for v in tot["patients"] / T),
        dlts=tuple(float(v) for v in tot["dlts"] / T),
        stopped_pct=100 * sum(r["none"] for r in parts) / T,
        overdose_select_pct=float(sel[p > design.target].sum()),
        overdose60_pct=100 * sum(r["overdose60"] for r in parts) / T,
        overdose80_pct=100 * sum(r["overdose80"] for r in parts) / T,
        mean_patients=float(tot["patients"].sum() / T),
        mean_dlts=float(tot["dlts"].sum() / T),
        mean_cohorts=sum(r["cohorts"] for r in parts) / T,
        seconds=seconds,
    )


def _check_settings(design, p, trials, cohort_size, cohorts, start_dose, tasks, seed) -> int:

    _check_count("seed", seed, 0)
    trials = _check_count("trials", trials, 1)
    _check_count("cohort_size", cohort_size, 1)
    _check_count("cohorts", cohorts, 1)
    start_dose = _check_count("start_dose", start_dose, 1)
    if start_dose > p.size:
        raise DesignError(f"start_dose = {start_dose}: not a dose level of the scenario (levels 1..{p.size})")
    if isinstance(design, ThreePlusThree) and cohort_size != 3:
        raise DesignError(f"cohort_size = {cohort_size}: the 3+3 design treats cohorts of 3")
    if tasks is None:
        tasks = max(1, min(8, trials // 250))
    tasks = _check_count("tasks", tasks, 1)
    if tasks > trials:
        raise DesignError(f"tasks = {tasks}: more tasks than trials ({trials})")
    return tasks


def operating_characteristics(
    design,
    scenario,
    trials: int = 2000,
    cohort_size: int = 3,
    cohorts: int = 10,
    start_dose: int = 1,
    seed: int = 0,
    out: str | Path | None = None,
    tasks: int | None = None,
    allow_non_monotone: bool = False,
    client=None,
    scheduler: str | None = None,
    workers: int | None = None,
    progress=None,
) -> OperatingCharacteristics:
    """Simulate a design on a scenario and summarise its operating characteristics.

    Parameters
    ----------
    design : Boin, Mtpi2 or ThreePlusThree
        From :func:`~bayespk.design.escalation.make_design`.
    scenario : sequence of float
        True DLT probability of each dose, lowest first (non-decreasing unless ``allow_non_monotone``).
    trials, cohort_size, cohorts : int
        Simulated trials; patients per cohort; cohorts per trial (maximum sample size
        ``cohorts * cohort_size``).
    start_dose : int
        Level (1-based) of the first cohort.
    seed : int
        Seed of the random streams (one per task, spawned from it).
    out : path, optional
        Folder for the task results (``tasks/``, ``workload.json``; rerunning resumes); default: a temporary
        one.
    tasks : int, optional
        Number of tasks the trials are split into (default ``min(8, trials // 250)``, at least 1).
    client, scheduler, workers, progress
        As for :func:`bayespk.parallel.run_tasks` (default: a local cluster, one worker per core).

    Returns
    -------
    OperatingCharacteristics
    """
    p = check_scenario(scenario, allow_non_monotone)
    tasks = _check_settings(design, p, trials, cohort_size, cohorts, start_dose, tasks, seed)
    options = {
        k: getattr(design, k)
        for k in ("p_saf", "p_tox", "eps1", "eps2", "cutoff_eli")
        if getattr(design, k, None) is not None
    }
    options["n_max"] = cohort_size * cohorts if not isinstance(design, ThreePlusThree) else None
    base = {
        "design": design.name,
        "target": design.target,
        "options": options,
        "scenario": [float(v) for v in p],
        "cohort_size": cohort_size,
        "cohorts": cohorts,
        "start_dose": start_dose,
        "seed": seed,
    }
    parts, seconds = run_trial_tasks(
        _task, base, trials, tasks, out, "design-oc", client=client, scheduler=scheduler, workers=workers,
        progress=progress,
    )
    return _combine(parts, design, p, cohort_size, cohorts, seconds)


def run_trial_tasks(
    task, base: dict, trials: int, tasks: int, out, kind: str, *, client=None, scheduler=None, workers=None,
    progress=None,
) -> tuple[list[dict], float]:
    """Split ``trials`` into ``tasks`` payloads ``{**base, "index": i, "trials": k}`` and run ``task`` on each
    through :func:`bayespk.parallel.run_tasks` (in ``out``, or a temporary folder).

    ``base`` (with ``kind``, ``trials`` and ``tasks``) identifies the workload, so rerunning the same settings
    into ``out`` resumes and other settings are refused. Returns the task results in task order and the
    seconds the workload took. Used by every simulation of the designs (interval designs, BOIN12, BLRM).
    """
    from bayespk.parallel.runner import run_tasks

    split = [trials // tasks + (1 if i < trials % tasks else 0) for i in range(tasks)]
    payloads = {f"trials-{i:03d}": {**base, "index": i, "trials": k} for i, k in enumerate(split)}
    identity = {"kind": kind, **base, "trials": trials, "tasks": tasks}
    with tempfile.TemporaryDirectory(prefix="bayespk-oc-") as tmp:
        work = run_tasks(
            task,
            payloads,
            out if out is not None else tmp,
            identity=identity,
            name=kind,
            client=client,
            scheduler=scheduler,
            workers=workers,
            progress=progress,
        )
    if work.failed:
        key, err = next(iter(work.failed.items()))
        raise RuntimeError(f"{len(work.failed)} of {tasks} simulation tasks failed (first: {key}: {err})")
    return [work.done[k] for k in payloads], work.seconds


def binomial_se_pct(pct: float, trials: int) -> float:
    """Standard error, in percentage points, of a percentage estimated from ``trials`` trials."""
    q = pct / 100
    return 100 * math.sqrt(q * (1 - q) / trials)
