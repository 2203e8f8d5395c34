"""Sampling a PopulationModel, and the Fit that holds the result.

A :class:`Fit` is an ArviZ DataTree (groups ``posterior``, ``sample_stats``,
``observed_data``, ``constant_data``, ``log_likelihood`` and ``records`` — the
validated dataset itself) plus the resolved :class:`~bayespk.model.spec.Spec`.
Everything downstream (tables, plots, predictions) reads only these, so a fit
saved with :meth:`Fit.save` and read back with :func:`load` behaves the same.
"""

from __future__ import annotations

import copy
import json
import os
import platform
import signal
import sys
import threading
import time
import warnings
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass, replace
from functools import cached_property
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pymc as pm
import xarray as xr

from bayespk import compile_cache, sampling
from bayespk.data.nonmem import id_label
from bayespk.diagnostics import check_convergence, convergence, shrinkage, summary_table
from bayespk.errors import BayesPKError, DataError, Moved
from bayespk.model.population import PopulationModel
from bayespk.model.spec import Spec
from bayespk.progress import Progress, is_terminal
from bayespk.rundir import (
    CHECKSUM_ATTR,
    SPEC_ATTR,
    RunDirError,
    RunWriter,
    read_fit_tree,
    sha256_file,
    sha256_json,
    tree_checksum,
)

__all__ = ["Fit", "SamplingInterrupted", "fit", "load"]

FORMAT_VERSION = 1
WAIT_SECONDS = 0.25  # how often the wait for nutpie's sampler returns to Python (and so sees Ctrl-C)
STATS_PER_DRAW = 20  # sample_stats values per draw, for the size estimate of fit.nc


class SamplingInterrupted(KeyboardInterrupt):
    """Sampling was stopped by SIGINT (Ctrl-C) or SIGTERM before it finished; nothing was kept.

    Attributes
    ----------
    signal : str
        ``"SIGINT"`` or ``"SIGTERM"``.
    phase : str
        ``"tuning"`` (no posterior draw yet) or ``"draws"``.
    completed : list of int or None
        Posterior draws completed per chain (None where the sampler does not say).
    requested : int
        Draws per chain that were asked for.
    """

    def __init__(self, signal_name: str, phase: str, completed: list[int] | None, requested: int):
        self.signal, self.phase, self.completed, self.requested = signal_name, phase, completed, requested
        done = (f" ({', '.join(map(str, completed))} of {requested} draws completed per chain)"
                if completed and any(completed) else "")
        super().__init__(f"interrupted by {signal_name} during {phase}{done}")


def fit(
    model: PopulationModel,
    *,
    sampler: str | None = None,
    draws: int | None = None,
    tune: int | None = None,
    chains: int | None = None,
    seed: int | None = None,
    target_accept: float | None = None,
    adaptation: str | None = None,
    backend: str | None = None,
    max_treedepth: int | None = None,
    progress: bool = True,
    keep_partial: bool = False,
    allow_changed_data: bool = False,
    notify: Callable[[str], None] | None = None,
    preflight: Callable[[int, str], None] | None = None,
) -> "Fit":
    """Sample the posterior of ``model`` and check convergence.

    Options left as ``None`` come from the spec's ``[sampler]`` table. When no
    seed is given anywhere, one is drawn and recorded, so every run can be
    repeated exactly.

    Parameters
    ----------
    model : PopulationModel
    sampler : {"nutpie", "pymc"}
        nutpie (default; Rust NUTS on a numba-compiled log-density) or PyMC's NUTS.
    draws, tune, chains : int
    seed : int
    target_accept : float
    adaptation : {"diag", "low_rank"}
        nutpie's mass-matrix adaptation (``[sampler] adaptation``).
    backend : {"auto", "numba", "jax"}
        how nutpie compiles the log-density (``[sampler] backend``; auto: JAX for ODE models).
    max_treedepth : int
        NUTS tree-depth limit (``[sampler] max_treedepth``, default 10).
    progress : bool
        Show progress: the sampler's progress bar; with ``notify``, also the
        compilation and its duration and, when stdout or stderr is not a
        terminal (a log, a pipe), plain progress lines instead of the bar, at
        most every ``$BAYESPK_PROGRESS_SECONDS`` (default 10; see
        :mod:`bayespk.progress`).
    keep_partial : bool
        On Ctrl-C (SIGINT) or SIGTERM during sampling, return the draws
        completed so far, every chain cut to the same length, as a Fit marked
        ``interrupted`` (its diagnostics say so; PyMC's sampler itself keeps
        the chains that give the most draws in all). Default: raise
        :class:`SamplingInterrupted` and keep nothing.
    allow_changed_data : bool
        Fit even when the spec records a ``[data] sha256`` (it comes from a
        run directory) that the data file no longer matches; both hashes are
        recorded.
    notify : callable, optional
        Called with one-line messages: when sampling starts, and the progress
        messages described under ``progress``.
    preflight : callable, optional
        Called as ``preflight(nbytes, what)`` with the estimated size of the
        run before compiling and sampling (the CLI checks free space with it).

    Returns
    -------
    Fit
        With convergence already checked: a :class:`~bayespk.errors.ConvergenceWarning`
        is emitted when divergences, R-hat, ESS or E-BFMI are poor.

    Raises
    ------
    SamplingInterrupted
        Interrupted during sampling (with ``keep_partial``: before any draw).
    bayespk.errors.DataError
        The data file changed since the run whose spec this is, or a subject
        cannot be fitted (observations but no dose before them).
    bayespk.errors.BayesPKError
        The sampler cannot start (the log-density is not finite at the
        starting values); the message names the observations.
    """
    spec = model.spec.with_sampler(name=sampler, draws=draws, tune=tune, chains=chains, seed=seed,
                                   target_accept=target_accept, adaptation=adaptation, backend=backend,
                                   max_treedepth=max_treedepth)
    if spec.sampler.seed is None:
        spec = spec.with_sampler(seed=int(np.random.SeedSequence().entropy % (2**31)))
    data_sha256, recorded = _data_provenance(model, spec, allow_changed_data)
    spec = replace(spec, data=replace(spec.data, sha256=data_sha256))
    _check_subjects_dosed(model)
    spec.data.check_unit_columns(model.data.table.columns)  # units declared for columns the data do not have
    s = spec.sampler
    pm_model = model.build()
    if preflight is not None:
        preflight(*_size_estimate(pm_model, model, s.draws, s.chains))
    t0 = time.perf_counter()
    with _interrupt_guard() as caught:
        sampled = _sample(pm_model, model, spec, progress, notify, caught)
    wall = time.perf_counter() - t0
    if sampled.centering:  # the weights the warm-up chose: in the run's spec, so a refit reproduces the run
        spec = spec.with_centering(sampled.centering)
        model = copy.copy(model)
        model.spec = model.spec.with_centering(sampled.centering)
    tree, info = _finish_sampling(sampled, s, keep_partial)
    if info.get("interrupted"):
        spec = spec.with_sampler(draws=info["draws_kept"])
    stored = _log_likelihood_dtype(s.log_likelihood, tree, model)
    if stored is not None:
        tree["log_likelihood"] = xr.DataTree(_log_likelihood(tree, pm_model).astype(stored))
    _add_data_groups(tree, model)
    info = {
        "sampler": s.name,
        "seed": s.seed,
        "wall_seconds": round(wall, 3),
        "compile_seconds": round(sampled.compile_seconds, 3),
        **({"centering_chosen": sampled.centering} if sampled.centering else {}),
        **({"compile_cache": compile_cache.last.get("status")} if s.name == "nutpie" else {}),
        **info,
        "data_path": spec.data.path,
        "data_sha256": data_sha256,
        **({"data_sha256_recorded": recorded, "data_changed": True}
           if recorded not in (None, data_sha256) else {}),
        "spec_sha256": sha256_json(spec.to_dict()),
        "versions": _versions(),
    }
    tree.attrs.update({
        SPEC_ATTR: json.dumps(spec.to_dict()),
        "bayespk_run": json.dumps(info),
        "bayespk_data_summary": json.dumps(model.data.summary.to_dict()),
        "bayespk_format": FORMAT_VERSION,
    })  # fmt: skip
    result = Fit(tree, spec, model=model)
    check_convergence(result.diagnostics(), warn=True)
    return result


#: ``[sampler] log_likelihood = "auto"`` stores the pointwise log-likelihood (float32) up to this many
#: values (chains x draws x observations; 50 MB) and leaves larger ones to be computed when asked for.
#: Measured on the 2-core machine: 9.0 million values (204 subjects x 11 samples, 4 x 1000 draws) take
#: 2.3 s to compute and 72 MB as float64; 1000 subjects (36 million values) took 36 s and 290 MB, always
#: stored, before this option existed.
LOG_LIKELIHOOD_AUTO_MAX = 12_500_000


def _log_likelihood_dtype(option: str, tree: xr.DataTree, model: PopulationModel):
    """The dtype in which a fit stores its pointwise log-likelihood, or None (computed on demand)."""
    if option == "none":
        return None
    if option == "auto":
        post = tree["posterior"]
        n = post.sizes["chain"] * post.sizes["draw"] * (model.design.n_obs
                                                          + (model.pd_design.n_obs if model.has_pd else 0))
        return np.float32 if n <= LOG_LIKELIHOOD_AUTO_MAX else None
    return np.dtype(option).type


#: PyTensor mode that compiles the pointwise log-likelihood (see :func:`_log_likelihood`).
LOG_LIKELIHOOD_MODE = "JAX"


def _log_likelihood(tree: xr.DataTree, pm_model: pm.Model) -> xr.Dataset:
    """Pointwise log-likelihood of every observed variable at every posterior draw.

    As ``pm.compute_log_likelihood``, which (PyMC 6.4) fails on a model whose value variable keeps its
    transform's name after the transforms are removed (the LKJ correlation of ``[iiv] correlated``: value
    ``chol_corr_iiv_cholesky`` for the variable ``chol_corr_iiv``): the posterior is given to the
    elementwise log-density under the value variables' names.

    Compiled by JAX (``LOG_LIKELIHOOD_MODE``): measured on the theophylline fit with empty caches, XLA
    compiles this function in about 1 s where numba takes 4.7-5.2 s, and no process caches either of
    them usefully; each call costs about 50 us more (0.2-0.3 s over 4000 draws). The values agree with
    numba's to 1e-12 on every bundled model (tests/inference/test_fit.py).
    """
    from pymc.backends.arviz import apply_function_over_dataset, coords_and_dims_for_inferencedata
    from pymc.model.transform.conditioning import remove_value_transforms

    umodel = remove_value_transforms(pm_model)
    observed = list(umodel.observed_RVs)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        fn = umodel.compile_fn(inputs=umodel.value_vars, outs=umodel.logp(vars=observed, sum=False),
                               on_unused_input="ignore", mode=LOG_LIKELIHOOD_MODE)
    post = tree["posterior"].to_dataset()
    values = {rv.name: umodel.rvs_to_values[rv] for rv in umodel.free_RVs}
    inputs = xr.Dataset({v.name: post[name].astype(v.type.dtype, copy=False) for name, v in values.items()})
    coords, dims = coords_and_dims_for_inferencedata(umodel)
    return apply_function_over_dataset(fn, inputs, output_var_names=[rv.name for rv in observed],
                                       sample_dims=["chain", "draw"], dims=dims, coords=coords, progressbar=False)


# ------------------------------------------------------------------ provenance and checks before sampling
def _data_provenance(model: PopulationModel, spec: Spec, allow_changed: bool) -> tuple[str | None, str | None]:
    """SHA-256 of the data file the model read (None for data given as a table), and the one the spec recorded.

    A spec written into a run directory records the hash of its data file; a
    spec that carries one is refused when the file's bytes changed, unless
    ``allow_changed``.
    """
    path = spec.data.path
    if path is None or model.data.source != path or not Path(path).is_file():
        return None, None
    current = sha256_file(path)
    recorded = spec.data.sha256
    if recorded is not None and recorded != current and not allow_changed:
        raise DataError(
            f"{path}: the data file changed since the run that wrote this spec: the spec records sha256 "
            f"{recorded}, the file now has sha256 {current}. Restore the original file, or refit on the new "
            "data with --allow-changed-data (Python: allow_changed_data=True), which records both hashes"
        )
    return current, recorded


def _check_subjects_dosed(model: PopulationModel) -> None:
    """Refuse subjects none of whose observations follows a dose: their predictions are 0 whatever the
    parameters, so the data say nothing about them and the sampler cannot start (zero gradient)."""
    d = model.design
    if model.cell_kinetics or model.pk_fit is not None or not d.n_obs:
        return
    n = len(d.subject_ids)
    dosed = np.zeros(n, dtype=bool)
    np.logical_or.at(dosed, d.obs_subject, ~d.first_dose_time())
    counts = np.bincount(d.obs_subject, minlength=n)
    bad = np.flatnonzero((counts > 0) & ~dosed)
    if not len(bad):
        return
    t = model.data.table
    with_doses = set(t.ID[t.EVID.isin([1, 4])])
    ids = [d.subject_ids[i] for i in bad]
    first = ids[0]
    why = ("comes before the subject's first dose" if first in with_doses
           else "has no dose record (EVID 1 or 4) before it: the subject has none")
    others = (f" (also ID {', '.join(id_label(i) for i in ids[1:6])}{', ...' if len(ids) > 6 else ''})"
              if len(ids) > 1 else "")
    raise DataError(
        f"ID {id_label(first)}: each of its {counts[bad[0]]} observations {why}{others}, so the model predicts 0 "
        "for all of them whatever the parameters and the data say nothing about the subject; add the subject's "
        "dose records, or leave it out (C column, or MDV=1 on its observations)"
    )


def _size_estimate(pm_model: pm.Model, model: PopulationModel, draws: int, chains: int) -> tuple[int, str]:
    """Bytes ``fit.nc`` will take (with a 25% margin), and how that was counted."""
    dims = pm_model.named_vars_to_dims

    def size(var) -> int:
        if dims.get(var.name):
            return int(np.prod([len(pm_model.coords[d]) for d in dims[var.name]]))
        return int(np.prod([1 if n is None else n for n in var.type.shape]))

    posterior = sum(size(v) for v in [*pm_model.free_RVs, *pm_model.deterministics])
    loglik = sum(size(v) for v in pm_model.observed_RVs)
    per_draw = posterior + loglik + STATS_PER_DRAW
    fixed = int(model.data.table.memory_usage(deep=True).sum()) * 2 + (1 << 20)
    nbytes = int(1.25 * (8 * draws * chains * per_draw + fixed))
    what = (f"fit.nc ({chains} chains x {draws} draws x {per_draw} values (posterior {posterior}, "
            f"log-likelihood {loglik}, sampler statistics) x 8 bytes, + 25%)")
    return nbytes, what


# ------------------------------------------------------------------ sampling
@dataclass
class _Sampled:
    tree: xr.DataTree | None  # None: interrupted before any draw could be returned
    compile_seconds: float
    signal: str | None  # the signal that stopped sampling, None when it finished
    centering: dict | None = None  # centring weights chosen by the warm-up ([sampler] centering = "auto")


@contextmanager
def _interrupt_guard():
    """While sampling, record SIGINT before raising KeyboardInterrupt (PyMC's sampler swallows it).

    Yields the list the signal names are appended to. The CLI forwards
    SIGTERM to the SIGINT handler, so both stop sampling the same way. Outside
    the main thread (no signal handlers there) nothing is installed.
    """
    caught: list[str] = []
    if threading.current_thread() is not threading.main_thread():
        yield caught
        return

    def handler(signum, frame):
        caught.append(signal.Signals(signum).name)
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGINT, handler)
    try:
        yield caught
    finally:
        signal.signal(signal.SIGINT, previous)


def _signal_name(caught: list[str], e: KeyboardInterrupt) -> str:
    """The signal that stopped sampling: the guard's record, else the forwarded one (``KeyboardInterrupt("SIGTERM")``
    from the CLI), else SIGINT."""
    return caught[0] if caught else (str(e) if str(e).startswith("SIG") else "SIGINT")


def _sample(pm_model, model, spec, progress, notify, caught) -> _Sampled:
    """Compile and sample, announcing both through ``notify``.

    With ``notify`` and ``progress``, compilation is announced with its
    duration; on a terminal the sampler draws its own progress bar, otherwise
    (a log, a pipe) ``notify`` gets a plain progress line at most every
    ``$BAYESPK_PROGRESS_SECONDS`` (see :mod:`bayespk.progress`). Without
    ``notify`` (the library), the sampler's bar only, as ``progress`` says.
    """
    s = spec.sampler
    say = notify or (lambda msg: None)
    message = (f"sampling {s.chains} chain{'s' if s.chains > 1 else ''} x {s.draws} draws after {s.tune} tuning "
               f"steps ({s.name}, seed {s.seed}) ...")
    lines = bool(progress and notify is not None and not is_terminal())
    ticker = Progress("sampling", s.chains * (s.tune + s.draws), unit="draws", say=say, live=False,
                      enabled=lines)
    announce = progress and notify is not None
    if s.name == "nutpie":
        if announce:
            say("compiling the model (nutpie) ...")
        return _sample_nutpie(pm_model, model, spec, progress and not lines, lambda: say(message), caught,
                              ticker=ticker, say=say if announce else None)
    say(message)
    if announce:
        say("compiling the model (PyMC) ...")
    return _sample_pymc(pm_model, model, spec, progress and not lines, caught, ticker=ticker,
                        say=say if announce else None)


def _divergence_detail(divergences: int, tuning: bool) -> str:
    return ("tuning, " if tuning else "") + f"{divergences} divergence{'s' if divergences != 1 else ''}"


def _sample_nutpie(pm_model, model, spec, progress, started, caught, ticker: Progress | None = None,
                   say=None) -> _Sampled:
    """nutpie in the background, waited for in short steps so Ctrl-C / SIGTERM stop it cleanly.

    ``progress``: nutpie's own bar; ``ticker`` gets the draws done and divergences at each wait step
    (from nutpie's progress callback); ``say`` announces the compilation time.
    """
    s = spec.sampler
    t0 = time.perf_counter()
    # CAR-T patients who leave before a phase carry no information on its parameters (see _eta_starts)
    jax = backend(spec, model) == "jax"
    # nutpie's JAX backend does not jitter a start where a gradient is exactly 0 (omegas at z = 0)
    starts = _eta_starts(pm_model, s.seed) if model.cell_kinetics or jax else None
    # the JAX backend: XLA compiles it in the first draws, no disk cache
    compiled = sampling.compile_model(pm_model, backend="jax" if jax else "numba",
                                      jitter_rvs=_jittered(pm_model, spec), initial_points=starts)
    t_compile = time.perf_counter() - t0
    if say is not None:
        cached = f", compile cache {compile_cache.last['status']}" if not jax and compile_cache.last else ""
        say(f"compiling the model: done in {t_compile:.1f} s{cached}"
            + (" (JAX compiles again during the first draws)" if jax else ""))

    def short_run(chains: int, tune: int, draws: int, seed: int) -> xr.Dataset:
        return sampling.sample(compiled, draws=draws, tune=tune, chains=chains, seed=seed,
                               target_accept=s.target_accept, adaptation=s.adaptation,
                               maxdepth=s.max_treedepth)["posterior"].to_dataset()

    try:
        weights = _choose_centering(short_run, pm_model, model, s, say)
    except KeyboardInterrupt as e:
        return _Sampled(None, t_compile, _signal_name(caught, e))
    except RuntimeError as e:
        if "initializ" in str(e) or "initial point" in str(e):
            raise _start_failure(pm_model, model, spec, e, starts, nutpie=True) from None
        raise
    if caught:  # Ctrl-C that the warm-up's sampler absorbed
        return _Sampled(None, t_compile, caught[0])
    if weights:
        compiled = compiled.with_data(**{f"centering_{n}": np.asarray(w) for n, w in weights.items()})
    started()
    if ticker is not None:
        ticker.start()
    chains: list = []  # the latest per-chain progress from nutpie's callback thread

    def follow() -> None:
        if ticker is not None and chains:
            latest = list(chains[-1])
            ticker.update(sum(c.finished_draws for c in latest),
                          _divergence_detail(sum(c.divergences for c in latest), any(c.tuning for c in latest)))

    background = sampling.start(compiled, draws=s.draws, tune=s.tune, chains=s.chains, seed=s.seed,
                                target_accept=s.target_accept, maxdepth=s.max_treedepth, progress=progress,
                                adaptation=s.adaptation,
                                **({"progress_callback": chains.append, "progress_rate": int(1000 * WAIT_SECONDS)}
                                   if ticker is not None and ticker.enabled else {}))
    try:
        while True:
            try:
                tree = background.wait(timeout=WAIT_SECONDS)
            except TimeoutError:
                follow()
                del chains[:-1]
                continue
            if ticker is not None:
                div = int(tree["sample_stats"]["diverging"].sum()) if "sample_stats" in tree else 0
                ticker.done_units = ticker.total
                ticker.finish(_divergence_detail(div, False) + " after tuning")
            return _Sampled(tree, t_compile, None, weights)
    except KeyboardInterrupt as e:
        return _Sampled(background.abort(), t_compile, _signal_name(caught, e), weights)
    except RuntimeError as e:
        background.cancel()
        if "initializ" in str(e) or "initial point" in str(e):
            raise _start_failure(pm_model, model, spec, e, starts, nutpie=True) from None
        raise


def backend(spec, model) -> str:
    """The nutpie backend a fit uses: the spec's, or for ``auto`` JAX where an ODE model is solved by diffrax."""
    if spec.sampler.backend != "auto":
        return spec.sampler.backend
    return model.predictor.backend


def _sample_pymc(pm_model, model, spec, progress, caught, ticker: Progress | None = None, say=None) -> _Sampled:
    """PyMC's NUTS; it ends early on KeyboardInterrupt and returns what it has, which ``caught`` tells apart.

    ``progress``: PyMC's own bar; ``ticker`` counts every draw (tuning included) and divergence through
    PyMC's per-draw callback; ``say`` announces when compilation and initialization are done (the first draw).
    """
    from pymc.exceptions import SamplingError

    s = spec.sampler
    t0 = time.perf_counter()
    seen = {"draws": 0, "divergences": 0, "compile": float("nan")}

    def callback(trace, draw) -> None:
        if seen["draws"] == 0:
            seen["compile"] = time.perf_counter() - t0
            if say is not None:
                say(f"compiling the model: done in {seen['compile']:.1f} s (with PyMC's initialization)")
            if ticker is not None:
                ticker.start()
        seen["draws"] += 1
        seen["divergences"] += int(any(st.get("diverging", False) for st in draw.stats))
        if ticker is not None:
            ticker.update(seen["draws"], _divergence_detail(seen["divergences"], draw.tuning))

    def short_run(chains: int, tune: int, draws: int, seed: int) -> xr.Dataset:
        with pm_model, sampling.quiet_pymc():
            return pm.sample(draws=draws, tune=tune, chains=chains, cores=min(chains, 2), random_seed=seed,
                             target_accept=s.target_accept, max_treedepth=s.max_treedepth, progressbar=False,
                             compute_convergence_checks=False,
                             nuts_sampler="pymc", init="adapt_diag",
                             initvals=_start_points(pm_model, spec, chains, seed))["posterior"].to_dataset()

    try:
        weights = _choose_centering(short_run, pm_model, model, s, say)
        if caught:  # Ctrl-C during the warm-up's draws: PyMC returned what it had instead of raising
            return _Sampled(None, float("nan"), caught[0])
        with pm_model:
            tree = pm.sample(draws=s.draws, tune=s.tune, chains=s.chains, cores=min(s.chains, 2),
                             random_seed=s.seed, target_accept=s.target_accept, max_treedepth=s.max_treedepth,
                             progressbar=progress,
                             compute_convergence_checks=False, nuts_sampler="pymc", init="adapt_diag",
                             initvals=_start_points(pm_model, spec, s.chains, s.seed), callback=callback)
    except KeyboardInterrupt as e:
        return _Sampled(None, float("nan"), _signal_name(caught, e))
    except SamplingError as e:
        raise _start_failure(pm_model, model, spec, e, None, nutpie=False) from None
    except ValueError:
        if caught:  # interrupted during tuning: "Not enough samples to build a trace"
            return _Sampled(None, float("nan"), caught[0])
        raise
    if ticker is not None and not caught:
        ticker.finish(_divergence_detail(int(tree["sample_stats"]["diverging"].sum()), False) + " after tuning")
    return _Sampled(tree, seen["compile"], caught[0] if caught else None, weights)


#: The warm-up run that chooses the centring weights of the etas under ``[sampler] centering = "auto"``:
#: chains, tuning steps and draws, each at most the fit's own.
CENTERING_WARMUP = {"chains": 2, "tune": 100, "draws": 50}


def _choose_centering(short_run, pm_model, model: PopulationModel, s, say=None) -> dict[str, float]:
    """The centring weights of the parameters whose weight the spec leaves to the fit (``{}``: none).

    A short run of the standardized model (:data:`CENTERING_WARMUP`) gives each
    subject's posterior mean eta; the weight of parameter ``P`` estimates the
    share of an eta's posterior precision its subject's data give,
    ``(1 - shrinkage_P)**2`` (:func:`centering_weights`; for a normal model
    ``var(E[eta_i | y]) / omega**2 = omega**2 / (omega**2 + se**2)``). With that weight
    the sampled ``z`` is a posteriori nearly independent of omega for a normal
    model (Papaspiliopoulos, Roberts and Skold 2007, Stat Sci 22:59): close
    to 1 (centred) where the data pin each eta down, close to 0
    (non-centered) where the population carries it. The weights are set on
    the compiled model (shared data, no new compilation) and on ``pm_model``.
    """
    auto = [n for n, w in model.centering_weights().items() if w is None]
    if not auto:
        return {}
    chains, tune, draws = (min(CENTERING_WARMUP["chains"], s.chains), min(CENTERING_WARMUP["tune"], s.tune),
                           min(CENTERING_WARMUP["draws"], s.draws))
    if say is not None:
        say(f"choosing the centring of the etas: warm-up of {chains} chain{'s' if chains > 1 else ''} x "
            f"{draws} draws after {tune} tuning steps ...")
    post = short_run(chains, tune, draws, (s.seed + 7919) % 2**31)
    weights = centering_weights(post, auto)
    pm.set_data({f"centering_{n}": w for n, w in weights.items()}, model=pm_model)
    if say is not None:
        say("centring weights (0: standardized etas, 1: centred): "
            + ", ".join(f"{n} {w:.2f}" for n, w in weights.items()))
    return weights


def centering_weights(posterior: xr.Dataset, names) -> dict[str, float]:
    """``(1 - shrinkage_P)**2 = (SD_i(E[eta_P,i | y]) / median(omega_P))**2`` per parameter ``P`` of
    ``names`` (the eta shrinkage of :func:`bayespk.diagnostics.shrinkage`), in [0, 1], 2 decimals.

    ``posterior`` holds ``eta_P`` (chain, draw, ID) and ``omega_P``; a
    parameter whose draws are not all finite, or with fewer than 2 subjects, gets 0 (standardized).
    """
    out = {}
    for n in names:
        eta = np.asarray(posterior[f"eta_{n}"].mean(("chain", "draw")).values, dtype=float).ravel()
        omega = float(np.median(np.asarray(posterior[f"omega_{n}"].values, dtype=float)))
        ok = eta.size > 1 and np.all(np.isfinite(eta)) and np.isfinite(omega) and omega > 0
        share = (float(np.std(eta, ddof=1)) / omega) ** 2 if ok else 0.0
        out[n] = round(min(1.0, max(0.0, share)), 2)
    return out


def _finish_sampling(sampled: _Sampled, s, keep_partial: bool) -> tuple[xr.DataTree, dict]:
    """The cleaned tree and the run information about an interruption (or raise SamplingInterrupted)."""
    if sampled.signal is None:
        return _clean_tree(sampled.tree), {"interrupted": False}
    completed = _completed_draws(sampled.tree) if sampled.tree is not None else None
    kept = min(completed) if completed else 0
    if not keep_partial or kept == 0:
        raise SamplingInterrupted(sampled.signal, "draws" if kept else "tuning", completed, s.draws)
    tree = _clean_tree(sampled.tree, draws=kept)
    return tree, {"interrupted": True, "signal": sampled.signal, "draws_requested": s.draws,
                  "draws_completed": completed, "draws_kept": kept}


def _completed_draws(tree: xr.DataTree) -> list[int]:
    """Posterior draws each chain completed: the leading draws where every value is finite.

    An interrupted nutpie run pads chains that finished fewer draws with NaN
    (integer statistics with 0), so the posterior is what tells them apart.
    """
    post = tree["posterior"].to_dataset()
    n_chains, n_draws = post.sizes["chain"], post.sizes["draw"]
    done = np.full(n_chains, n_draws)
    for var in post.data_vars.values():
        if var.dtype.kind == "f" and var.size:
            values = var.transpose("chain", "draw", ...).values.reshape(n_chains, n_draws, -1)
            finite = np.isfinite(values).all(axis=2)
            done = np.minimum(done, finite.cumprod(axis=1).sum(axis=1))
    return [int(n) for n in done]


def _start_failure(pm_model, model, spec, error: Exception, starts: dict | None, nutpie: bool) -> BayesPKError:
    """Why the sampler could not start, in model terms: which observations have an impossible likelihood
    at the starting values, or which subjects' parameters the log-density does not depend on."""
    point = pm_model.initial_point(random_seed=spec.sampler.seed)
    point.update({k: v for k, v in (starts or {}).items() if k in point})
    terms = pm_model.logp(vars=pm_model.observed_RVs, sum=False)
    checks, pm_model.check_bounds = pm_model.check_bounds, False  # a failed parameter check (sigma > 0) would
    try:                                                            # make every term -inf, not just the culprits
        fn = pm_model.compile_fn(terms, inputs=pm_model.value_vars, on_unused_input="ignore")
    finally:
        pm_model.check_bounds = checks
    values = fn(point)
    for rv, logp in zip(pm_model.observed_RVs, values):
        bad = ~np.isfinite(np.asarray(logp))
        if bad.any():
            return BayesPKError(_infeasible_observations(model, rv.name, np.flatnonzero(bad)))
    names = _zero_gradient(pm_model, point, model) if nutpie else []
    if names:
        return BayesPKError(
            f"the sampler cannot start: the log-density does not change with {', '.join(names[:5])}"
            f"{' and others' if len(names) > 5 else ''} at the starting values (the data say nothing about "
            "them); give those subjects data that depend on the parameter, remove its IIV, or use "
            "--sampler pymc"
        )
    first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    return BayesPKError(f"the sampler cannot start ({first}); the log-density is finite at the starting "
                        "values, so check the priors against the data with a prior predictive check "
                        "(bpk.vpc(model), before fitting)")


def _infeasible_observations(model: PopulationModel, name: str, idx: np.ndarray) -> str:
    """One paragraph on observations whose log-likelihood is not finite at the starting values."""
    pd_obs = name == "DV_PD"
    d = model.pd_design if pd_obs else model.design
    err = model.spec.pd_error if pd_obs else model.spec.error
    k = int(idx[0])
    where = (f"row {d.obs_row[k]} (ID {id_label(d.subject_ids[d.obs_subject[k]])}, TIME {d.obs_time[k]:g}, "
             f"DV {d.obs_dv[k]:g})")
    rows = ", ".join(str(r) for r in d.obs_row[idx[1:6]])
    more = (f"; also row{'s' if len(idx) > 2 else ''} {rows}{', ...' if len(idx) > 6 else ''}"
            if len(idx) > 1 else "")
    if err.model in ("proportional", "lognormal"):
        why = (f"with {err.model} error the residual SD scales with the prediction, and the prediction is 0 there "
               "(an observation at the time of an oral dose, before anything is absorbed, or before the first "
               "dose), so the observed value is impossible. Set MDV=1 on such rows, or use combined error")
    else:
        why = ("the prediction is not finite there at the starting values; check the priors of the typical "
               "values")
    return (f"the sampler cannot start: the log-likelihood of {name} is not finite at {len(idx)} observation"
            f"{'s' if len(idx) > 1 else ''}, first {where}{more}: {why}")


def _zero_gradient(pm_model, point: dict, model: PopulationModel) -> list[str]:
    """Standardized etas (``z_P[ID]``) whose gradient is exactly 0 at ``point``: nutpie refuses to start there."""
    from pymc.blocking import DictToArrayBijection

    grad = pm_model.compile_dlogp()(point)
    names = []
    offset = 0
    for name, shape, *_ in DictToArrayBijection.map(point).point_map_info:
        size = int(np.prod(shape))
        if name.startswith(ETA_PREFIXES) and len(shape) == 1 and shape[0] == len(model.design.subject_ids):
            zero = np.flatnonzero(grad[offset:offset + size] == 0)
            names += [f"{name}[ID {id_label(model.design.subject_ids[i])}]" for i in zero]
        offset += size
    return names


class Fit:
    """A fitted population model: the DataTree and the resolved spec.

    Attributes
    ----------
    tree : xarray.DataTree
    spec : Spec
    """

    # checks that were methods and are functions taking a fit: reading one says which
    vpc = Moved("bpk.vpc(fit, ...)")
    npde = Moved("bpk.npde(fit, ...)")
    gof = Moved("bpk.gof(fit, ...)")
    loo = Moved("bpk.loo(fit, ...)")
    plot_individual = Moved("bpk.plot_individual(fit, ...)")
    shrinkage = Moved("bpk.shrinkage(fit)")
    plot_eta_covariates = Moved("bpk.eta_covariates(fit, ...)")
    plot_covariate_effects = Moved("bpk.covariate_effects(fit, ...)")
    plot_prior_posterior = Moved("bpk.prior_posterior(fit, ...)")

    def __init__(self, tree: xr.DataTree, spec: Spec, model: PopulationModel | None = None):
        self.tree = tree
        self.spec = spec
        self._diagnostics: dict | None = None
        if model is not None:  # the model that was sampled: no need to rebuild it from the records
            self.__dict__["model"] = model

    # ----------------------------------------------------------- contents
    @property
    def posterior(self) -> xr.Dataset:
        return self.tree["posterior"].to_dataset()

    @property
    def population_parameters(self) -> list[str]:
        """Names of the population parameters in the order they are reported."""
        return self.spec.population_parameters

    @property
    def free_parameters(self) -> list[str]:
        """Population parameters and the standardized etas: every sampled quantity."""
        params = self.spec.parameters.items()
        post = self.tree["posterior"]
        return (self.population_parameters  # eta_P: the centred etas of runs before centring weights
                + [f"z_{p}" if f"z_{p}" in post or f"eta_{p}" not in post else f"eta_{p}"
                   for p, ps in params if ps.iiv is not None]
                + [f"z_iov_{p}" for p, ps in params if ps.iov is not None])

    def summary(self) -> pd.DataFrame:
        """Posterior summary of the population parameters (natural scale typical values).

        Columns: ``parameter, mean, sd, q5, median, q95, r_hat, ess_bulk, ess_tail``, then ``unit,
        rse_percent, reported_as, reported_median, reported_q5, reported_q95, shrinkage_percent`` (see
        :func:`~bayespk.diagnostics.summary_table`; units from the spec's ``[data] units``).
        """
        return summary_table(self.posterior, self.population_parameters, spec=self.spec, shrinkage=shrinkage(self))

    def diagnostics(self) -> dict:
        """Convergence diagnostics over all free variables, plus run information (computed once)."""
        if self._diagnostics is None:
            self._diagnostics = self._compute_diagnostics()
        return copy.deepcopy(self._diagnostics)

    def log_likelihood(self) -> xr.Dataset:
        """Pointwise log-likelihood (dims chain, draw, obs): stored in the fit, else computed now and kept.

        What a fit stores is set by ``[sampler] log_likelihood`` (see
        :class:`~bayespk.model.spec.SamplerSpec`).
        """
        if "log_likelihood" in self.tree:
            return self.tree["log_likelihood"].to_dataset()
        if "_log_likelihood" not in self.__dict__:
            self.__dict__["_log_likelihood"] = _log_likelihood(self.tree, self.model.build())
        return self.__dict__["_log_likelihood"]

    def _compute_diagnostics(self) -> dict:
        source = self.run_info.get("draws_from")
        if source is not None:  # fit_from_draws / prior_fit: not a posterior, nothing to diagnose
            return {**self.run_info, "problems": [f"not a posterior: {self.run_info.get('note', source)}"]}
        d = convergence(self.tree, self.free_parameters)
        d["problems"] = check_convergence(d, warn=False)
        d.update(self.run_info)
        if d.get("interrupted"):
            d["problems"].insert(0, f"interrupted by {d.get('signal', 'a signal')}: only the first "
                                    f"{d.get('draws_kept')} of {d.get('draws_requested')} draws per chain were "
                                    "completed and kept; refit to completion")
        return d

    @property
    def run_info(self) -> dict:
        return json.loads(self.tree.attrs.get("bayespk_run", "{}"))

    @cached_property
    def model(self) -> PopulationModel:
        """The PopulationModel rebuilt from the stored spec and records."""
        records = self.tree["records"].to_dataset().to_dataframe().reset_index(drop=True)
        from bayespk.data.nonmem import read_nonmem

        data = read_nonmem(records)
        data.source = self.spec.data.path or "<records>"
        return PopulationModel(self.spec, data)

    # ----------------------------------------------------------- predictions
    def predict(self, grid: np.ndarray | None = None, *, draws: int | None = 200, seed: int = 0,
                ids=None, pd: bool = False) -> xr.Dataset:
        """Individual (``IPRED``) and typical-subject (``PRED``) predictions per posterior draw.

        Parameters
        ----------
        grid : array, optional
            Times at which to evaluate every subject (default: the observations).
        draws : int or None
            Thin the posterior to about this many draws (None: all).
        ids : list, optional
            With ``grid``: only these subjects.
        pd : bool
            The PD observations and the ``pd_output`` of a model written as
            equations, instead of the concentrations.

        Returns
        -------
        xarray.Dataset
            ``IPRED`` and ``PRED`` with dims (chain, draw, obs) and coords
            ``ID`` and ``TIME`` on ``obs``.
        """
        post = self._thinned(draws)
        pm_model, design = self.model.build_prediction(grid=grid, grid_subjects=ids, pd=pd)
        with sampling.quiet_pymc():
            out = pm.sample_posterior_predictive(
                xr.DataTree(children={"posterior": xr.DataTree(post)}), model=pm_model,
                var_names=["IPRED", "PRED"], random_seed=seed, progressbar=False,
            )
        pp = out["posterior_predictive"].to_dataset()
        ids = design.subject_ids[design.obs_subject]
        return pp.assign_coords(ID=("obs", ids), TIME=("obs", design.obs_time))

    def individual_parameters(self, *, draws: int | None = 200, seed: int = 0) -> xr.Dataset:
        """Each subject's structural parameters per posterior draw (baseline covariates).

        Returns an ``xarray.Dataset`` with one variable per parameter (``CL``,
        ``CMAX``...), dims (chain, draw, ID).
        """
        post = self._thinned(draws)
        pm_model = self.model.build_individual()
        names = [f"{p}_i" for p in self.spec.parameters]
        with sampling.quiet_pymc():
            out = pm.sample_posterior_predictive(
                xr.DataTree(children={"posterior": xr.DataTree(post)}), model=pm_model,
                var_names=names, random_seed=seed, progressbar=False,
            )
        pp = out["posterior_predictive"].to_dataset()
        return pp.rename({f"{p}_i": p for p in self.spec.parameters})

    def _thinned(self, draws: int | None) -> xr.Dataset:
        """The posterior thinned to about ``draws`` draws (None: all)."""
        post = self.posterior
        if draws is not None:
            per_chain = -(-draws // post.sizes["chain"])
            post = post.isel(draw=slice(None, None, max(1, post.sizes["draw"] // per_chain)))
        return post

    # ----------------------------------------------------------- persistence
    def save(self, path: str | Path) -> Path:
        """Write the DataTree (with the spec in its attributes) to a netCDF file.

        The file carries a checksum of its arrays (attribute
        ``bayespk_checksum``) that :func:`load` verifies. It is written beside
        ``path`` and renamed into place, so ``path`` is never half written.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tree.attrs[CHECKSUM_ATTR] = tree_checksum(self.tree, skip_attrs=(CHECKSUM_ATTR,))
        partial = path.with_name(f".{path.name}.tmp-{os.getpid()}")
        try:
            self.tree.to_netcdf(partial, engine="h5netcdf")
            os.replace(partial, path)
        finally:
            partial.unlink(missing_ok=True)
        return path

    def write_run(self, run_dir: str | Path, *, overwrite: bool = False) -> Path:
        """Write a run directory: spec.toml, fit.nc, summary.csv, diagnostics.json.

        The directory is written whole or not at all (see
        :class:`bayespk.rundir.RunWriter`): into a temporary directory beside
        it, renamed into place when complete, under a lock that refuses a
        second writer.

        Parameters
        ----------
        run_dir : path
        overwrite : bool
            Replace an existing run directory whole; without it an existing
            directory is refused (:class:`bayespk.rundir.RunDirError`).
        """
        with RunWriter(run_dir, overwrite=overwrite) as writer:
            writer.preflight(int(1.25 * self.tree.nbytes) + (1 << 20), "the run")
            return self.write_into(writer)

    def write_into(self, writer: RunWriter) -> Path:
        """Write the run files through a :class:`~bayespk.rundir.RunWriter` the caller holds."""
        return writer.commit(self._write_files)

    def _write_files(self, folder: Path) -> None:
        self.spec.write(folder / "spec.toml")
        self.save(folder / "fit.nc")
        self.summary().to_csv(folder / "summary.csv", index=False)
        (folder / "diagnostics.json").write_text(json.dumps(self.diagnostics(), indent=2, default=_json_default))

    def __repr__(self) -> str:
        d = self.posterior.sizes
        return f"Fit({self.spec.name!r}, {d['chain']} chains x {d['draw']} draws)"


def load(path: str | Path, structural=None) -> Fit:
    """Read a fit written by :meth:`Fit.save` (a ``fit.nc`` file or a run directory).

    ``structural``: the model object of a fit whose model was written in Python
    (the spec stores only its name).

    The checksum the file carries is verified; a file that cannot be read, is
    not a bayespk fit, or whose arrays changed is refused with a
    :class:`~bayespk.rundir.RunDirError` naming it. Files written before
    checksums existed load without verification.
    """
    path = Path(path)
    tree = read_fit_tree(path)
    try:
        stored = json.loads(tree.attrs[SPEC_ATTR])
        if structural is not None:
            stored["model"] = {}
        spec = Spec.from_dict(stored, structural=structural)
    except ValueError as e:  # SpecError, JSONDecodeError
        raise RunDirError(f"{path}: the spec stored in the fit cannot be read ({e}); refit") from None
    return Fit(tree, spec)


# ------------------------------------------------------------------ helpers
#: Names of sampled per-subject effects: ``z_P`` (any centring weight), ``z_iov_P``, and ``eta_P`` (the centred
#: etas of runs made before centring weights).
ETA_PREFIXES = ("z_", "eta_")


def _jittered(pm_model: pm.Model, spec: Spec) -> set:
    """Free variables whose starting values are jittered (uniform +-1 on the unconstrained scale).

    Typical values start at their prior's support point and every subject at
    the typical subject (z = 0), without jitter: a factor of e on CL or KA, or
    +-1 on hundreds of etas at once, can put predictions orders of magnitude
    off, where proportional error makes the likelihood so steep that a chain's
    step size collapses and it never moves (seen with 50 and 500 simulated
    subjects). Omegas, covariate coefficients and residual SDs are jittered,
    so chains still start apart.
    """
    return {rv for rv in pm_model.free_RVs
            if rv.name not in spec.parameters and not rv.name.startswith(ETA_PREFIXES)}


def _eta_starts(pm_model: pm.Model, seed: int) -> dict:
    """Starting values of the standardized etas ``z_*``: N(0, 0.01), close to the typical subject.

    Exactly 0 would give a subject whose data say nothing about a parameter
    (e.g. a CAR-T patient who left before the contraction phase) a gradient of
    exactly 0 there, which nutpie refuses as an initial point.
    """
    rng = np.random.default_rng(seed)
    return {rv.name: 0.01 * rng.standard_normal(tuple(rv.shape.eval()))
            for rv in pm_model.free_RVs if rv.name.startswith(ETA_PREFIXES)}


def _start_points(pm_model: pm.Model, spec: Spec, chains: int, seed: int) -> list[dict]:
    """Per-chain starting points for PyMC's sampler, with the same policy as :func:`_jittered`."""
    from pymc.initial_point import make_initial_point_fn

    fn = make_initial_point_fn(model=pm_model, jitter_rvs=_jittered(pm_model, spec), return_transformed=False)
    names = {rv.name for rv in pm_model.free_RVs}
    return [{k: v for k, v in fn(seed + c).items() if k in names} for c in range(chains)]


def _clean_tree(tree: xr.DataTree, draws: int | None = None) -> xr.DataTree:
    """Keep posterior and sample_stats (the first ``draws`` of each chain); drop object-typed stats netCDF
    cannot hold."""
    keep = {}
    for g in ("posterior", "sample_stats"):
        ds = tree[g].to_dataset()
        ds = ds.drop_vars([v for v in ds.data_vars if ds[v].dtype == object])
        if draws is not None:
            ds = ds.isel(draw=slice(0, draws))
        keep[g] = xr.DataTree(ds)
    out = xr.DataTree(children=keep)
    out.attrs.update(tree.attrs)
    return out


def _add_data_groups(tree: xr.DataTree, model: PopulationModel) -> None:
    d = model.design
    obs = {"obs": np.arange(d.n_obs)}
    tree["observed_data"] = xr.DataTree(xr.Dataset({"DV": ("obs", d.obs_dv)}, coords=obs))
    const = xr.Dataset(
        {
            "SUBJECT": ("obs", d.subject_ids[d.obs_subject]),
            "TIME": ("obs", d.obs_time),
            "ROW": ("obs", d.obs_row),
            "CENS": ("obs", d.obs_cens),
            "LIMIT": ("obs", d.obs_limit),
        },
        coords=obs | {"ID": d.subject_ids},
    )
    if model.has_pd:
        p = model.pd_design
        tree["observed_data"]["DV_PD"] = xr.DataArray(p.obs_dv, dims="pd_obs", coords={"pd_obs": np.arange(p.n_obs)})
        const["PD_SUBJECT"] = ("pd_obs", p.subject_ids[p.obs_subject])
        const["PD_TIME"] = ("pd_obs", p.obs_time)
        const["PD_ROW"] = ("pd_obs", p.obs_row)
        const = const.assign_coords(pd_obs=np.arange(p.n_obs))
    for c in model.spec.covariates:
        if c.column not in const:
            const[c.column] = ("ID", np.asarray(model._covariates[c.name]["values"]))
    tree["constant_data"] = xr.DataTree(const)
    records = model.data.table.copy()
    tree["records"] = xr.DataTree(xr.Dataset.from_dataframe(records.reset_index(drop=True).rename_axis("row")))


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("bayespk", "pymc", "pytensor", "nutpie", "arviz", "numpy", "pandas", "xarray"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    out["platform"] = sys.platform
    return out


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    raise TypeError(type(o))
