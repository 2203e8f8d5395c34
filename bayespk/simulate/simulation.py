"""Dosing regimens simulated from a fit, for dose selection.

A :class:`~bayespk.simulate.regimen.Regimen` describes a dosing schedule (maintenance dose every II,
optional loading doses and titration steps, bolus/oral or zero-order infusion)
and writes it as NONMEM dose records (:meth:`~bayespk.simulate.regimen.Regimen.rows`, with ADDL/II for
repeats). :func:`simulate_regimens` simulates each regimen for the fitted
subjects or for a virtual population, with parameter uncertainty from the
posterior, and computes exposure metrics per subject and draw
(:mod:`bayespk.simulate.exposure`), returned as a
:class:`~bayespk.simulate.result.RegimenSimulation`. The populations (fitted subjects, virtual
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
dose states (:class:`~bayespk.simulate.regimen.UserDosing`: ``route`` names a dose state; infusions
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
import sys
import time
import warnings
from collections.abc import Mapping

import numpy as np
import pandas as pd
import xarray as xr

from bayespk.errors import BayesPKError, SpecError
from bayespk.progress import Progress, printer
from bayespk.sampling import quiet_pymc
from bayespk.simulate.exposure import (
    METRICS,
    interval_metrics,
    steady_state_profile,
)
from bayespk.simulate.population import _effects, _num, fitted_subjects, virtual_subjects
from bayespk.simulate.regimen import Regimen, UserDosing, _as_regimens
from bayespk.simulate.result import RegimenSimulation

__all__ = ["simulate_regimens"]

MAX_VALUES_PER_CALL = 25_000_000  # concentrations per sample_posterior_predictive call (200 MB)
SS_METHODS = ("auto", "record", "fold", "explicit")
SS_RTOL = 1e-3  # ss_method="explicit": AUC still to come at steady state, relative to the last interval's
SS_EXPLICIT_INTERVALS = 24  # ss_method="explicit": maintenance doses simulated at first
SS_EXPLICIT_RAISES = 2  # ... raised fourfold at most this often where steady state is not reached



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

