"""Operating characteristics of BLRM + EWOC dose escalation by simulation, with a grid posterior.

Simulating many trials with a NUTS posterior after every cohort is too slow, so each simulated decision
uses the posterior of ``theta = (log alpha, log beta)`` computed on a fixed grid (:func:`blrm_grid_posterior`):
a ``points x points`` grid centred on the prior mean (of the mixture), spanning ``+- half_width`` prior SDs
(the mixture's marginal SDs) on each axis; the weight of a grid point is its prior density (the
:class:`~bayespk.design.blrm.BVNMixture`) times the binomial likelihood of the data, normalised (midpoint-rule
quadrature; equivalently, importance sampling with a uniform proposal over the grid). Interval probabilities
``P(pi_d < 0.16)``, ``P(0.16 <= pi_d < 0.33)``, ``P(pi_d >= 0.33)`` and the mean of ``pi_d`` are weighted sums
over the grid. The discretisation error is below 0.01 in these probabilities for the default 241 x 241 grid
and +-6 prior SDs while the posterior SDs are at least ~1/5 of the prior SDs (30 patients on a BVN((0, 0),
(2, 1)) prior); the test suite checks the grid against the NUTS posterior of
:func:`~bayespk.design.blrm.blrm_posterior` within Monte Carlo error.

Trial rules of :func:`blrm_operating_characteristics` (one simulated trial):

1. cohorts of ``cohort_size`` patients, the first at ``start_dose`` (default: the lowest dose);
2. after each cohort the grid posterior of all data so far gives ``P(pi_d >= 0.33)`` per dose; a dose is
   eligible when it is below ``ewoc`` (0.25) and it is at most one level above the highest level given so far
   (no untried level is skipped);
3. the next cohort gets the highest eligible dose (``rule="highest"``) or the eligible dose with the largest
   ``P(0.16 <= pi_d < 0.33)`` (``rule="target"``); if no dose is eligible the trial stops without an MTD;
4. after ``cohorts`` cohorts (the maximum sample size) the MTD is the dose the same rule picks among the doses
   given in the trial.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy.special import expit, log_expit

from bayespk.design.blrm import INTERVALS, BVNMixture, _check_counts, _finite, check_doses
from bayespk.design.escalation import DesignError, _check_count
from bayespk.design.simulation import _check_settings, check_scenario, run_trial_tasks, tally

__all__ = [
    "BLRMGridPosterior",
    "BLRMOperatingCharacteristics",
    "blrm_grid_posterior",
    "blrm_operating_characteristics",
    "simulate_blrm_trials",
]


class _Grid:
    """The grid of (log alpha, log beta), the prior log density on it and log pi_d, log(1 - pi_d) per dose."""

    def __init__(self, doses, d_ref, prior: BVNMixture, points: int, half_width: float):
        self.doses, self.d_ref = doses, d_ref
        centre, sd = prior.mean(), prior.sd()
        axes = [centre[k] + np.linspace(-half_width, half_width, points) * sd[k] for k in range(2)]
        la, lb = (a.ravel() for a in np.meshgrid(*axes, indexing="ij"))
        self.theta = np.stack([la, lb], axis=1)
        self.log_prior = prior.logpdf(self.theta)
        eta = la[:, None] + np.exp(lb)[:, None] * np.log(doses / d_ref)[None]
        self.pi = expit(eta)
        self.log_p, self.log_q = log_expit(eta), log_expit(-eta)

    def weights(self, n, r) -> np.ndarray:
        lw = self.log_prior + self.log_p @ r + self.log_q @ (n - r)
        w = np.exp(lw - lw.max())
        return w / w.sum()

    def interval_probs(self, w, intervals=INTERVALS) -> np.ndarray:
        a, b = intervals
        under = w @ (self.pi < a)
        over = w @ (self.pi >= b)
        return np.stack([under, 1 - under - over, over], axis=1)


@dataclass
class BLRMGridPosterior:
    """The BLRM posterior on a grid: ``theta`` (G, 2) grid points, ``weights`` (G,) posterior weights."""

    doses: np.ndarray
    d_ref: float
    n: np.ndarray
    r: np.ndarray
    prior: BVNMixture
    theta: np.ndarray
    weights: np.ndarray
    _grid: _Grid

    def interval_probs(self, intervals=INTERVALS) -> np.ndarray:
        """(doses, 3): P(pi_d < a), P(a <= pi_d < b), P(pi_d >= b)."""
        return self._grid.interval_probs(self.weights, intervals)

    def mean_pi(self) -> np.ndarray:
        """Posterior mean of pi_d per dose."""
        return self.weights @ self._grid.pi

    def mean_theta(self) -> np.ndarray:
        return self.weights @ self.theta


def _check_grid(points, half_width) -> tuple[int, float]:
    points = _check_count("points", points, 11)
    half_width = _finite("half_width", half_width)
    if half_width < 3:
        raise DesignError(f"half_width = {half_width:g}: the grid must span at least +-3 prior SDs")
    return points, half_width


def _prior(prior) -> BVNMixture:
    if prior is None:
        return BVNMixture.single((0.0, 0.0), (2.0, 1.0), 0.0)
    if isinstance(prior, dict):
        return BVNMixture.from_dict(prior)
    if not isinstance(prior, BVNMixture):
        raise DesignError(f"prior: expected a BVNMixture or its dict, got {type(prior).__name__}")
    return prior


def blrm_grid_posterior(
    doses, d_ref: float, n_treated=(), n_dlt=(), prior=None, *, points: int = 241, half_width: float = 6.0
) -> BLRMGridPosterior:
    """Posterior of the single-agent BLRM on a grid (see the module text); the fast counterpart of
    :func:`~bayespk.design.blrm.blrm_posterior` (same arguments, default prior BVN((0, 0), (2, 1)))."""
    d, d_ref = check_doses(doses, d_ref)
    n, r = _check_counts(len(d), n_treated, n_dlt)
    prior = _prior(prior)
    points, half_width = _check_grid(points, half_width)
    grid = _Grid(d, d_ref, prior, points, half_width)
    return BLRMGridPosterior(d, d_ref, n, r, prior, grid.theta, grid.weights(n, r), grid)


def _pick(ip, allowed, ewoc, rule) -> int | None:
    """The dose (0-based) the rule picks among ``allowed`` doses passing overdose control; None if none."""
    ok = np.flatnonzero(allowed & (ip[:, 2] < ewoc))
    if ok.size == 0:
        return None
    if rule == "highest":
        return int(ok[-1])
    best = ip[ok, 1].max()
    return int(ok[np.flatnonzero(ip[ok, 1] == best)[-1]])


def _trial(rng, grid, p, cohort_size, cohorts, start, ewoc, rule):
    J = p.size
    n = np.zeros(J, dtype=int)
    r = np.zeros(J, dtype=int)
    d, top = start, start
    for i in range(cohorts):
        r[d] += rng.binomial(cohort_size, p[d])
        n[d] += cohort_size
        top = max(top, d)
        ip = grid.interval_probs(grid.weights(n, r))
        if i == cohorts - 1:
            return n, r, _pick(ip, n > 0, ewoc, rule), i + 1
        nxt = _pick(ip, np.arange(J) <= top + 1, ewoc, rule)
        if nxt is None:
            return n, r, None, i + 1
        d = nxt
    return n, r, None, cohorts  # not reached


def simulate_blrm_trials(
    doses, d_ref, scenario, prior, trials: int, cohort_size: int = 3, cohorts: int = 10, start_dose: int = 1,
    ewoc: float = 0.25, rule: str = "highest", seed=0, points: int = 241, half_width: float = 6.0,
) -> dict:
    """Simulate ``trials`` BLRM + EWOC trials in this process; the sums that
    :func:`blrm_operating_characteristics` combines."""
    d, d_ref = check_doses(doses, d_ref)
    grid = _Grid(d, d_ref, _prior(prior), *_check_grid(points, half_width))
    p = np.asarray(scenario, dtype=float)
    rng = np.random.default_rng(seed)
    J = p.size
    sums = {"trials": 0, "selected": [0] * J, "none": 0, "patients": [0] * J, "dlts": [0] * J, "cohorts": 0}
    for _ in range(trials):
        n, r, mtd, used = _trial(rng, grid, p, cohort_size, cohorts, start_dose - 1, ewoc, rule)
        tally(sums, n, r, mtd, used)
    return sums


def _task(payload: dict) -> dict:
    """One task of :func:`blrm_operating_characteristics` (run on a Dask worker)."""
    seed = np.random.SeedSequence(payload["seed"], spawn_key=(payload["index"],))
    return simulate_blrm_trials(
        payload["doses"], payload["d_ref"], payload["scenario"], BVNMixture.from_dict(payload["prior"]),
        payload["trials"], payload["cohort_size"], payload["cohorts"], payload["start_dose"], payload["ewoc"],
        payload["rule"], seed, payload["points"], payload["half_width"],
    )


@dataclass
class BLRMOperatingCharacteristics:
    """What the simulation of BLRM + EWOC on a scenario gave (percentages in %, means per trial).
    ``target_select_pct``: MTD selected in the target interval [0.16, 0.33); ``overdose_select_pct``: true
    DLT probability >= 0.33."""

    doses: tuple[float, ...]
    scenario: tuple[float, ...]
    trials: int
    cohort_size: int
    cohorts: int
    ewoc: float
    rule: str
    select_pct: tuple[float, ...]
    patients: tuple[float, ...]
    dlts: tuple[float, ...]
    stopped_pct: float
    target_select_pct: float
    overdose_select_pct: float
    mean_patients: float
    mean_dlts: float
    seconds: float = 0.0
    design: str = "blrm"

    def rows(self) -> list[dict]:
        return [
            {"dose": d, "p_true": p, "select_pct": s, "patients": n, "dlts": y}
            for d, p, s, n, y in zip(self.doses, self.scenario, self.select_pct, self.patients, self.dlts)
        ]

    def summary(self) -> dict:
        return {k: getattr(self, k) for k in (
            "design", "trials", "cohort_size", "cohorts", "ewoc", "rule", "stopped_pct", "target_select_pct",
            "overdose_select_pct", "mean_patients", "mean_dlts")}

    def write_csv(self, path) -> Path:
        path = Path(path)
        with path.open("w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["dose", "p_true", "select_pct", "patients", "dlts"])
            for r in self.rows():
                w.writerow([f"{r['dose']:g}", f"{r['p_true']:g}", f"{r['select_pct']:.2f}", f"{r['patients']:.3f}",
                            f"{r['dlts']:.3f}"])
            w.writerow(["none", "", f"{self.stopped_pct:.2f}", "", ""])
        return path

    def __str__(self) -> str:
        lines = [f"BLRM + EWOC (P(pi >= 0.33) < {self.ewoc:g}, rule {self.rule}): {self.trials} trials of "
                 f"{self.cohorts} cohorts of {self.cohort_size}",
                 f"{'dose':>8} {'p_true':>7} {'select %':>9} {'patients':>9} {'DLTs':>7}"]
        for r in self.rows():
            lines.append(f"{r['dose']:>8g} {r['p_true']:>7.3g} {r['select_pct']:>9.1f} {r['patients']:>9.2f} "
                         f"{r['dlts']:>7.2f}")
        lines += [f"MTD in the target interval [0.16, 0.33): {self.target_select_pct:.1f}%; in [0.33, 1]: "
                  f"{self.overdose_select_pct:.1f}%; stopped without an MTD: {self.stopped_pct:.1f}%",
                  f"mean per trial: {self.mean_patients:.1f} patients, {self.mean_dlts:.2f} DLTs"]
        return "\n".join(lines)


def blrm_operating_characteristics(
    doses,
    d_ref: float,
    scenario,
    prior=None,
    *,
    trials: int = 500,
    cohort_size: int = 3,
    cohorts: int = 10,
    start_dose: int = 1,
    ewoc: float = 0.25,
    rule: str = "highest",
    seed: int = 0,
    points: int = 241,
    half_width: float = 6.0,
    out=None,
    tasks: int | None = None,
    client=None,
    scheduler: str | None = None,
    workers: int | None = None,
    progress=None,
) -> BLRMOperatingCharacteristics:
    """Simulate BLRM + EWOC trials on a scenario (rules in the module text) through the Dask runner.

    Parameters
    ----------
    doses, d_ref : the dose levels and the reference dose of the model.
    scenario : sequence of float
        True DLT probability per dose (non-decreasing).
    prior : BVNMixture or dict, optional
        Prior of (log alpha, log beta); default BVN((0, 0), (2, 1)).
    trials, cohort_size, cohorts, start_dose, seed, out, tasks, client, scheduler, workers, progress
        As :func:`bayespk.design.simulation.operating_characteristics` (default tasks: ``min(8, trials // 50)``).
    ewoc : float
        Overdose control bound on ``P(pi_d >= 0.33)``.
    rule : {"highest", "target"}
    points, half_width : the grid (see :func:`blrm_grid_posterior`).
    """

    d, d_ref = check_doses(doses, d_ref)
    p = check_scenario(scenario)
    if p.size != d.size:
        raise DesignError(f"scenario has {p.size} values for {d.size} doses: one true DLT probability per dose")
    prior = _prior(prior)
    ewoc = _finite("ewoc", ewoc)
    if not 0 < ewoc < 1:
        raise DesignError(f"ewoc = {ewoc:g}: the overdose-control bound must lie in (0, 1)")
    if rule not in ("highest", "target"):
        raise DesignError(f"rule = {rule!r}: expected 'highest' or 'target'")
    points, half_width = _check_grid(points, half_width)
    if tasks is None:
        tasks = max(1, min(8, int(trials) // 50))
    tasks = _check_settings(None, p, trials, cohort_size, cohorts, start_dose, tasks, seed)
    base = {
        "design": "blrm", "doses": d.tolist(), "d_ref": d_ref, "scenario": p.tolist(), "prior": prior.to_dict(),
        "cohort_size": cohort_size, "cohorts": cohorts, "start_dose": start_dose, "ewoc": ewoc, "rule": rule,
        "points": points, "half_width": half_width, "seed": seed,
    }
    parts, seconds = run_trial_tasks(_task, base, trials, tasks, out, "blrm-oc", client=client, scheduler=scheduler,
                                     workers=workers, progress=progress)
    T = sum(r["trials"] for r in parts)
    tot = {k: np.sum([r[k] for r in parts], axis=0) for k in ("selected", "patients", "dlts")}
    sel = 100 * tot["selected"] / T
    a, b = INTERVALS
    return BLRMOperatingCharacteristics(
        doses=tuple(map(float, d)), scenario=tuple(map(float, p)), trials=T, cohort_size=cohort_size,
        cohorts=cohorts, ewoc=ewoc, rule=rule, select_pct=tuple(map(float, sel)),
        patients=tuple(map(float, tot["patients"] / T)), dlts=tuple(map(float, tot["dlts"] / T)),
        stopped_pct=100 * sum(r["none"] for r in parts) / T,
        target_select_pct=float(sel[(p >= a) & (p < b)].sum()), overdose_select_pct=float(sel[p >= b].sum()),
        mean_patients=float(tot["patients"].sum() / T), mean_dlts=float(tot["dlts"].sum() / T), seconds=seconds,
    )
