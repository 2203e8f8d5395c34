"""The one door to the sampler: every posterior in bayespk is drawn through this module.

Population fits (:func:`bayespk.fit.fit`), MAP priors and their calibration,
borrowing schemes, exposure-response models and the BLRM dose-escalation
models all compile and sample here, so the sampler's defaults, its logging and
the caches of compiled models are in one place:

* :func:`compile_model`: nutpie's compiled model. The numba backend (default)
  goes through the disk cache of :mod:`bayespk.compile_cache` (a new process
  skips compilation); ``key`` also keeps the compiled model in this process, so
  models that differ only in their shared data (``pm.Data``: replicates, folds,
  imputations, a trial's cohorts) compile once and are sampled with
  ``data=``. ``backend="jax"``: nutpie's JAX backend (XLA compiles during the
  first draws; the path a GPU runs).
* :func:`sample`: draws with the library's defaults (:data:`DEFAULTS`), no
  warm-up draws kept, the ``posterior`` and ``sample_stats`` groups returned as a
  DataTree; :func:`start` is the same in the background (nutpie's
  non-blocking sampler, which :func:`bayespk.fit.fit` waits on in short steps
  so Ctrl-C stops it cleanly).
* :func:`new_seed`: a fresh seed where the caller gave none.
* :func:`quiet_pymc`: PyMC's informational log lines and warnings silenced.

PyMC's own NUTS (``sampler = "pymc"`` in a spec) stays with
:func:`bayespk.fit.fit`, the only caller that offers it.
"""

from __future__ import annotations

import logging
import warnings
from collections.abc import Callable, Hashable, Mapping
from contextlib import contextmanager
from typing import Any

import numpy as np
import xarray as xr

from bayespk.compile_cache import compile_nutpie

__all__ = ["DEFAULTS", "compile_model", "new_seed", "quiet_pymc", "sample", "start"]

#: The sampler's settings where a caller gives none (a spec's ``[sampler]`` table states its own).
DEFAULTS: dict[str, Any] = {"draws": 1000, "tune": 1000, "chains": 4, "target_accept": 0.8}

_COMPILED: dict[Hashable, Any] = {}  # key -> compiled model, for this process


@contextmanager
def quiet_pymc():
    """Silence PyMC's informational "Sampling: [...]" log lines and warnings."""
    logger = logging.getLogger("pymc")
    level = logger.level
    logger.setLevel(logging.WARNING)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        logger.setLevel(level)


def new_seed(seed: int | None = None) -> int:
    """``seed`` as an int, or a fresh one from the operating system's entropy."""
    return int(np.random.default_rng().integers(2**31)) if seed is None else int(seed)


def compile_model(model=None, *, key: Hashable | None = None, build: Callable[[], Any] | None = None,
                  backend: str = "numba", jitter_rvs=None, initial_points=None):
    """nutpie's compiled model of the PyMC ``model`` (or of ``build()``).

    ``key``: keep the compiled model for this process under ``key``; a later
    call with the same key returns it without building or compiling
    (``build`` is then called only on the first). The numba backend also
    stores it on disk (:func:`bayespk.compile_cache.compile_nutpie`).
    """
    if key is not None and key in _COMPILED:
        return _COMPILED[key]
    if model is None:
        if build is None:
            raise TypeError("compile_model needs a model or a build function")
        model = build()
    with quiet_pymc():
        if backend == "numba":
            compiled = compile_nutpie(model, jitter_rvs=jitter_rvs, initial_points=initial_points)
        elif backend == "jax":
            import nutpie

            # the gradient is PyTensor's, compiled to JAX: jax.grad of the censored-normal log-CDF (BLQ rows) is
            # NaN in the tails, where PyTensor's symbolic gradient is not
            compiled = nutpie.compile_pymc_model(model, backend="jax", gradient_backend="pytensor",
                                                 jitter_rvs=jitter_rvs, initial_points=initial_points)
        else:
            raise ValueError(f"backend must be 'numba' or 'jax', got {backend!r}")
    if key is not None:
        _COMPILED[key] = compiled
    return compiled


def _options(compiled, data: Mapping | None, settings: dict) -> tuple[Any, dict]:
    unknown = set(settings) - set(DEFAULTS) - {"seed", "progress", "adaptation", "maxdepth", "progress_callback",
                                                "progress_rate"}
    if unknown:
        raise TypeError(f"unknown sampler option(s): {', '.join(sorted(unknown))}")
    options = {**DEFAULTS, **{k: v for k, v in settings.items() if v is not None}}
    options["seed"] = new_seed(options.get("seed"))
    options["progress_bar"] = bool(options.pop("progress", False))
    if data:
        compiled = compiled.with_data(**{k: np.asarray(v) for k, v in data.items()})
    return compiled, {**options, "save_warmup": False}


def sample(compiled, *, data: Mapping | None = None, **settings) -> xr.DataTree:
    """Posterior draws of ``compiled`` (from :func:`compile_model`): ``posterior`` and ``sample_stats``.

    ``data``: new values of the model's shared data. ``settings``: ``draws``,
    ``tune``, ``chains``, ``target_accept`` (defaults :data:`DEFAULTS`),
    ``seed`` (default :func:`new_seed`), ``progress`` (nutpie's bar, default
    off), ``adaptation`` and ``maxdepth``. Warm-up draws are not kept;
    variables nutpie stores as Python objects (none of the model's) are dropped.
    """
    import nutpie

    compiled, options = _options(compiled, data, settings)
    tree = nutpie.sample(compiled, **options)
    keep = {}
    for group in ("posterior", "sample_stats"):
        ds = tree[group].to_dataset()
        keep[group] = xr.DataTree(ds.drop_vars([v for v in ds.data_vars if ds[v].dtype == object]))
    return xr.DataTree(children=keep)


def start(compiled, *, data: Mapping | None = None, **settings):
    """:func:`sample` in the background: nutpie's sampler object (``wait``, ``abort``), not yet a DataTree.

    Takes also ``progress_callback`` and ``progress_rate`` (nutpie's).
    """
    import nutpie

    compiled, options = _options(compiled, data, settings)
    return nutpie.sample(compiled, blocking=False, **options)
