"""A disk cache of nutpie's compiled log-density, so a new process skips compilation.

:func:`compile_nutpie` is a drop-in replacement for ``nutpie.compile_pymc_model``
(numba backend). nutpie compiles a model in two steps, both repeated in every
new process:

1. PyTensor: the log-density + gradient graph and the "expand" graph (the
   deterministics) are built, rewritten and turned into numba functions
   (PyTensor's own numba cache, under ``pytensor.config.base_compiledir``/numba,
   serves the per-op pieces across processes);
2. numba: two C callbacks (``numba.cfunc``) wrapping those functions, which the
   Rust sampler calls. numba compiles them again in every process, whatever
   PyTensor's cache holds: nutpie's callbacks are closures over a numba
   dispatcher whose pickle differs from process to process, so numba's own
   ``cache=True`` never finds its entry again (it writes a new one each time).

This module stores the compiled callbacks themselves (numba's object code and
what nutpie needs besides: shapes, names, the layout of shared data) in one file
per model, keyed by a hash of the model's log-density graph (every op and its
parameters, every constant's bytes, types with static shapes, the values of
shared variables), the names and shapes of the variables, the PyTensor/numba
settings that change the generated code, the CPU numba targets and the versions
of Python, numpy, PyTensor, PyMC, numba, llvmlite and nutpie. On a hit neither
PyTensor's rewriting nor numba runs: the callbacks are linked from the stored
object code in milliseconds.

Data: bayespk's models hold the data as graph constants, so other data (even
of the same shape) is another graph and another entry. Shared variables
(``pm.Data``; a :class:`~bayespk.model.population.PopulationModel` built with
``observations_as_data=True`` holds its observations so) are keyed by shape
and type only where the shape of every sampled variable is known without them
(static, or from the model's coords): nutpie reads them through a pointer at
run time, so one entry serves every data set of that shape (the replicates of a
simulation-based calibration, the folds of a cross-validation), and a hit is
linked with the model's current values. Otherwise they are keyed by value.

Cache location: ``cache_dir`` if given, else ``$BAYESPK_CACHE_DIR``, else
``$XDG_CACHE_HOME/bayespk`` (default ``~/.cache/bayespk``); entries are in its
``nutpie/`` folder. ``BAYESPK_CACHE_DIR=off`` (or ``0``, ``false``, ``none``,
``disable``) or ``cache_dir=False`` compiles without the cache. Entries are
written to a temporary file and renamed into place, so concurrent processes
never see half a file; each carries a SHA-256 checksum, and an entry that
cannot be read or fails its checks is ignored (logged) and rebuilt. At most
:data:`MAX_ENTRIES` entries are kept (least recently used go first). The
entries are pickles, read only from your own cache folder, as numba's and
PyTensor's caches are.

:data:`stats` counts ``hit``, ``miss``, ``stored``, ``corrupt``, ``uncacheable``
and ``disabled`` compiles in this process; :data:`last` describes the latest
(``status``, ``key``, ``path``, ``seconds``).
"""

from __future__ import annotations

import hashlib
import logging
import os
import pickle
import sys
import tempfile
import time
from collections import Counter
from dataclasses import fields
from math import prod
from pathlib import Path

import numpy as np

__all__ = ["MAX_ENTRIES", "cache_dir_from_env", "clear", "compile_nutpie", "last", "stats"]

log = logging.getLogger(__name__)

FORMAT = 2  # bump when the entry layout or the key recipe changes
MAGIC = b"BAYESPK-NUTPIE\x00"
MAX_ENTRIES = 200
OFF = {"off", "0", "false", "no", "none", "disable", "disabled"}
SUBDIR = "nutpie"

stats: Counter = Counter()
last: dict = {}


class _Uncacheable(Exception):
    """The model cannot be cached (it is compiled the ordinary way)."""


# ====================================================================== public
def cache_dir_from_env() -> Path | None:
    """The cache folder ``$BAYESPK_CACHE_DIR`` names (default ``~/.cache/bayespk``); None when it says off."""
    value = os.environ.get("BAYESPK_CACHE_DIR")
    if value is not None:
        if value.strip().lower() in OFF or not value.strip():
            return None
        return Path(value).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base).expanduser() / "bayespk"


def clear(cache_dir: str | os.PathLike | None = None) -> int:
    """Delete the models cached in ``cache_dir`` (default as :func:`compile_nutpie`); returns how many."""
    folder = _folder(cache_dir)
    if folder is None or not folder.is_dir():
        return 0
    n = 0
    for f in folder.glob("*.nbp"):
        f.unlink(missing_ok=True)
        n += 1
    return n


def compile_nutpie(pm_model, *, jitter_rvs=None, initial_points=None, cache_dir=None):
    """``nutpie.compile_pymc_model(pm_model, jitter_rvs=..., initial_points=...)``, served from a disk cache.

    Parameters
    ----------
    pm_model : pymc.Model
    jitter_rvs, initial_points
        As for ``nutpie.compile_pymc_model`` (they set the starting points,
        which are not cached: any values may be given with a cached model).
    cache_dir : path, False or None
        Cache folder; None: ``$BAYESPK_CACHE_DIR`` (default ``~/.cache/bayespk``);
        False or ``"off"``: no cache, exactly ``nutpie.compile_pymc_model``.

    Returns
    -------
    nutpie.compile_pymc.CompiledPyMCModel
        The same object nutpie returns. On a cache hit its ``logp_func`` and
        ``expand_func`` (the PyTensor functions, which sampling does not use)
        are compiled when first used.
    """
    # nutpie's own, also where nutpie.compile_pymc_model is patched (as benchmarks/bench_compile.py does)
    from nutpie.compile_pymc import compile_pymc_model

    t0 = time.perf_counter()
    folder = _folder(cache_dir)
    if folder is None:
        return _done("disabled", t0, None, None,
                     compile_pymc_model(pm_model, jitter_rvs=jitter_rvs, initial_points=initial_points))
    try:
        _check_supported()
        key, graph = _model_key(pm_model)
    except Exception as e:  # noqa: BLE001 - _Uncacheable, or a model nutpie will explain better
        log.debug("compiling without the cache: %s: %s", type(e).__name__, e)
        return _done("uncacheable", t0, None, None,
                     compile_pymc_model(pm_model, jitter_rvs=jitter_rvs, initial_points=initial_points))
    path = folder / f"{key[:40]}.nbp"
    entry = _read_entry(path, key)
    if entry is not None:
        try:
            compiled = _from_entry(pm_model, entry, graph, jitter_rvs, initial_points)
        except Exception as e:  # noqa: BLE001 - a stored entry that does not fit is rebuilt, never an error
            log.warning("bayespk compile cache: ignoring %s (%s: %s); recompiling", path, type(e).__name__, e)
            stats["corrupt"] += 1
        else:
            _touch(path)
            return _done("hit", t0, key, path, compiled)
    try:
        compiled, entry = _compile(pm_model, graph, jitter_rvs, initial_points)
    except Exception as e:  # noqa: BLE001 - nutpie's internals changed, or the model does not compile:
        log.debug("compiling without the cache: %s: %s", type(e).__name__, e)  # nutpie's own says which
        return _done("uncacheable", t0, key, None,
                     compile_pymc_model(pm_model, jitter_rvs=jitter_rvs, initial_points=initial_points))
    status = "miss"
    if entry is not None and _write_entry(path, key, entry):
        stats["stored"] += 1
        _prune(folder)
    elif entry is None:
        status = "uncacheable"
    return _done(status, t0, key, path, compiled)


def _done(status, t0, key, path, compiled):
    stats[status] += 1
    last.clear()
    last.update(status=status, key=key, path=None if path is None else str(path),
                seconds=round(time.perf_counter() - t0, 3))
    log.debug("nutpie compile: %s in %.2f s (%s)", status, last["seconds"], path)
    return compiled


def _folder(cache_dir) -> Path | None:
    if cache_dir is False:
        return None
    if cache_dir is None:
        base = cache_dir_from_env()
    elif str(cache_dir).strip().lower() in OFF:
        return None
    else:
        base = Path(cache_dir).expanduser()
    return None if base is None else base / SUBDIR


# ====================================================================== the key
def _check_supported() -> None:
    """The nutpie and numba internals this module rebuilds are there (else: compile without the cache)."""
    try:
        import nutpie.compile_pymc as ncp
        from numba.core.ccallback import CFunc
        from numba.core.compiler import CompileResult
    except ImportError as e:
        raise _Uncacheable(f"cannot import nutpie/numba internals ({e})") from None
    needed = ["_make_functions", "_make_c_logp_func", "_make_c_expand_func", "make_user_data",
              "_prepare_dims_and_coords", "_wrap_with_lock", "_rv_dict_to_flat_array_wrapper",
              "CompiledPyMCModel"]
    missing = [n for n in needed if not hasattr(ncp, n)]
    if missing or not hasattr(CompileResult, "_rebuild") or not hasattr(CompileResult, "_reduce"):
        raise _Uncacheable(f"nutpie/numba internals changed (missing {missing or 'CompileResult._rebuild'})")
    names = {f.name for f in fields(ncp.CompiledPyMCModel)}
    want = {"compiled_logp_func", "compiled_expand_func", "initial_point_func", "shared_data",
            "shared_var_keys", "user_data", "n_expanded", "shape_info", "logp_func", "expand_func", "_n_dim",
            "_shapes", "_coords", "dims", "reparameterized_names"}
    if not want <= names or not hasattr(CFunc, "compile"):
        raise _Uncacheable(f"nutpie's CompiledPyMCModel changed (fields {sorted(want - names)} missing)")


class _Graph:
    """What the key was computed from, kept to rebuild the model on a hit."""

    def __init__(self, free_names, free_shapes, remaining_names, shared):
        self.free_names = free_names  # value variables of the free RVs, in order
        self.free_shapes = free_shapes
        self.remaining_names = remaining_names  # the other traced variables (deterministics, ...)
        self.shared = shared  # name -> SharedVariable in the graphs


def _model_key(model) -> tuple[str, _Graph]:
    """SHA-256 of everything that determines nutpie's compiled callbacks for ``model``."""
    from pytensor.compile.sharedvalue import SharedVariable

    value_vars = [model.rvs_to_values[rv] for rv in model.free_RVs]
    free_names = [v.name for v in value_vars]
    remaining = [v for v in model.unobserved_value_vars if v.name not in set(free_names)]
    logp = model.logp()
    h = hashlib.sha256()
    h.update(repr(_environment()).encode())
    h.update(repr(("free", free_names, [_type_key(v.type) for v in value_vars], "remaining",
                   [v.name for v in remaining], "check_bounds", bool(model.check_bounds))).encode())
    shared: dict[str, SharedVariable] = {}
    known = _known_shapes(model, value_vars)
    h.update(repr(("free shapes", known)).encode())
    _hash_graph(h, [logp, *remaining], value_vars, shared, shared_by_value=known is None)
    free_shapes = [tuple(int(s) for s in v.type.shape) if all(s is not None for s in v.type.shape) else None
                   for v in value_vars]
    return h.hexdigest(), _Graph(free_names, free_shapes, [v.name for v in remaining], shared)


def _known_shapes(model, value_vars) -> list[tuple[int, ...]] | None:
    """The shape of every sampled variable, from its static type or its dims' coords; None if one is unknown
    (then it may depend on the values of shared variables, which are keyed by value)."""
    shapes = []
    for rv, v in zip(model.free_RVs, value_vars):
        if all(s is not None for s in v.type.shape):
            shapes.append(tuple(int(s) for s in v.type.shape))
            continue
        dims = model.named_vars_to_dims.get(rv.name) or ()
        coords = [model.coords.get(d) for d in dims]
        if (model.rvs_to_transforms.get(rv) is not None or len(dims) != v.type.ndim
                or any(c is None for c in coords)):
            return None
        shapes.append(tuple(len(c) for c in coords))
    return shapes


def _environment() -> tuple:
    """Versions, settings and CPU that change the compiled code."""
    from importlib import metadata

    import numba
    import pytensor
    from numba.core import registry

    versions = []
    for pkg in ("numpy", "pytensor", "pymc", "numba", "llvmlite", "nutpie"):
        try:
            versions.append((pkg, metadata.version(pkg)))
        except metadata.PackageNotFoundError:
            versions.append((pkg, None))
    cfg = pytensor.config
    flags = tuple((k, str(getattr(cfg, k, None))) for k in (
        "floatX", "cast_policy", "mode", "linker", "optimizer", "optimizer_excluding", "optimizer_including",
        "optimizer_requiring", "numba__fastmath"))
    nb = tuple((k, str(getattr(numba.config, k, None))) for k in ("OPT", "BOUNDSCHECK", "DEBUGINFO_DEFAULT",
                                                                 "CPU_NAME", "CPU_FEATURES"))
    return (FORMAT, sys.version, sys.implementation.cache_tag, tuple(versions), flags, nb,
            registry.cpu_target.target_context.codegen().magic_tuple())


def _hash_graph(h, outputs, inputs, shared: dict, shared_by_value: bool = True) -> None:
    """Feed ``h`` a canonical description of the graph from ``inputs`` to ``outputs`` (shared variables by
    value, or by shape and dtype only)."""
    from pytensor.compile.sharedvalue import SharedVariable
    from pytensor.graph.basic import Constant
    from pytensor.graph.traversal import io_toposort

    ids: dict = {}
    position = {v: i for i, v in enumerate(inputs)}

    def ref(var) -> int:
        if var in ids:
            return ids[var]
        if var.owner is not None:  # pragma: no cover - io_toposort visits owners first
            raise _Uncacheable("graph visited out of order")
        if var in position:
            desc = ("input", position[var], _type_key(var.type))
        elif isinstance(var, SharedVariable):
            name = var.name
            if not name or (name in shared and shared[name] is not var):
                raise _Uncacheable(f"shared variable without a unique name ({name!r})")
            shared[name] = var
            value = var.get_value(borrow=True)
            desc = ("shared", name, _type_key(var.type),
                    _data_key(value) if shared_by_value else (np.shape(value), str(np.asarray(value).dtype)))
        elif isinstance(var, Constant):
            desc = ("constant", _type_key(var.type), _data_key(var.data))
        else:
            raise _Uncacheable(f"the graph has a free input {var}, neither a value variable nor shared")
        ids[var] = len(ids)
        h.update(repr(desc).encode())
        return ids[var]

    for node in io_toposort([], outputs):
        args = [ref(i) for i in node.inputs]
        h.update(repr(("apply", _op_key(node.op), args, [_type_key(o.type) for o in node.outputs])).encode())
        for o in node.outputs:
            ids[o] = len(ids)
    h.update(repr(("outputs", [ref(o) for o in outputs])).encode())


def _type_key(t) -> str:
    return f"{type(t).__module__}.{type(t).__qualname__}:{t!r}"


def _op_key(op) -> str:
    name = f"{type(op).__module__}.{type(op).__qualname__}"
    props = getattr(op, "__props__", None)
    if props is None:
        return f"{name}:pickle:{_pickle_hash(op)}"
    return f"{name}({', '.join(f'{p}={_value_key(getattr(op, p, None))}' for p in props)})"


def _value_key(v) -> str:
    from pytensor.graph.fg import FunctionGraph

    if v is None or isinstance(v, (bool, int, float, str, bytes, complex)):
        return repr(v)
    if isinstance(v, (np.generic, np.dtype)):
        return f"{type(v).__name__}:{v!r}"
    if isinstance(v, (tuple, list)):
        return f"{type(v).__name__}({', '.join(_value_key(x) for x in v)})"
    if isinstance(v, (set, frozenset)):  # element order varies with hash randomisation
        return f"set({', '.join(sorted(_value_key(x) for x in v))})"
    if isinstance(v, dict):
        return f"dict({', '.join(sorted(f'{_value_key(k)}: {_value_key(x)}' for k, x in v.items()))})"
    if isinstance(v, np.ndarray):
        return _data_key(v)
    if isinstance(v, type):
        return f"type:{v.__module__}.{v.__qualname__}"
    if isinstance(v, FunctionGraph):
        sub = hashlib.sha256()
        _hash_graph(sub, list(v.outputs), list(v.inputs), {})
        return f"fgraph:{sub.hexdigest()}"
    if hasattr(v, "__props__"):  # e.g. the scalar op of an Elemwise
        return _op_key(v)
    return f"{type(v).__module__}.{type(v).__qualname__}:pickle:{_pickle_hash(v)}"


def _data_key(data) -> str:
    if isinstance(data, np.ndarray) or isinstance(data, np.generic):
        a = np.ascontiguousarray(data)
        if a.dtype.hasobject:
            return f"objarray:{_pickle_hash(a)}"
        return f"array:{a.dtype.str}:{a.shape}:{hashlib.sha256(a.tobytes()).hexdigest()}"
    return _value_key(data)


def _pickle_hash(obj) -> str:
    try:
        return hashlib.sha256(pickle.dumps(obj, protocol=4)).hexdigest()
    except Exception as e:  # noqa: BLE001
        raise _Uncacheable(f"cannot describe {type(obj).__name__} ({e})") from None


# ====================================================================== compile (miss)
def _initial_point_fn(model, jitter_rvs, initial_points):
    """nutpie's initial point function, exactly as ``compile_pymc_model`` makes it (before flattening)."""
    import nutpie.compile_pymc as ncp
    from pymc.initial_point import make_initial_point_fn

    if jitter_rvs is None:
        jitter_rvs = set(model.free_RVs)
    fn = make_initial_point_fn(model=model, overrides=initial_points, default_strategy="support_point",
                               jitter_rvs=jitter_rvs, return_transformed=True)
    return ncp._wrap_with_lock(fn)


class _Capture:
    """Stands in for a CFunc's numba cache: serves a stored CompileResult, or keeps the one compiled."""

    def __init__(self, cres=None):
        self.cres = cres

    def load_overload(self, sig, target_context):
        return self.cres

    def save_overload(self, sig, cres):
        self.cres = cres


def _cfunc(pyfunc, sig, cres=None):
    """A numba CFunc of ``pyfunc``: compiled (``cres`` None) or linked from a stored CompileResult."""
    from numba.core import sigutils
    from numba.core.ccallback import CFunc

    args, ret = sigutils.normalize_signature(sig)
    cf = CFunc(pyfunc, (args, ret), locals={}, options={})
    cf._cache = _Capture(cres)
    cf.compile()
    return cf, cf._cache.cres


def _compile(model, graph: _Graph, jitter_rvs, initial_points):
    """What ``nutpie.compile_pymc_model`` does (numba backend), keeping the compile results to store.

    Mirrors ``nutpie.compile_pymc._compile_pymc_model_numba`` except for the
    keys of shared variables, which are their names (nutpie draws random ones)
    so that the record layout compiled into the callbacks is the same in every
    process.
    """
    import nutpie.compile_pymc as ncp

    ipf = _initial_point_fn(model, jitter_rvs, initial_points)
    made = ncp._make_functions(model, mode="NUMBA", compute_grad=True, join_expanded=True,
                               pymc_initial_point_fn=ipf)
    n_dim, n_expanded, logp_fn_pt, expand_fn_pt, initial_point_fn, shape_info, reparameterized = made
    # shared variables in nutpie's order (by identity, as nutpie), keyed by position instead of nutpie's uuid4
    logp_vars, expand_vars = list(logp_fn_pt.get_shared()), list(expand_fn_pt.get_shared())
    ordered = list({id(v): v for v in [*logp_vars, *expand_vars]}.values())
    shared_var_keys, shared_data, user_data = _shared_layout(ordered)
    logp_raw, logp_sig = ncp._make_c_logp_func(n_dim, logp_fn_pt.vm.jit_fn, user_data,
                                               [shared_var_keys[v] for v in logp_vars], shared_data)
    logp_cf, logp_cres = _cfunc(logp_raw, logp_sig)
    expand_raw, expand_sig = ncp._make_c_expand_func(n_dim, n_expanded, expand_fn_pt.vm.jit_fn, user_data,
                                                     [shared_var_keys[v] for v in expand_vars], shared_data)
    expand_cf, expand_cres = _cfunc(expand_raw, expand_sig)
    # a stored entry finds its shared variables again by name: they must be the graph's, one per name
    cacheable = all(v.name is not None and graph.shared.get(v.name) is v for v in ordered)
    compiled = _assemble(model, n_dim, n_expanded, shape_info, reparameterized, initial_point_fn, logp_cf,
                         expand_cf, shared_var_keys, shared_data, user_data, logp_fn_pt, expand_fn_pt)
    entry = None
    blockers = [c for c in (logp_cres, expand_cres) if c is None or c.lifted or c.library.has_dynamic_globals]
    if not cacheable:
        log.debug("not cached: the compiled functions use shared variables missing from the model's graph")
    elif blockers:
        log.debug("not cached: numba cannot serialise the callbacks (dynamic globals or lifted code)")
    else:
        names, _, shapes = shape_info
        entry = {
            "n_dim": int(n_dim), "n_expanded": int(n_expanded),
            "names": list(names), "shapes": [tuple(int(s) for s in shape) for shape in shapes],
            "reparameterized": list(reparameterized),
            "shared_order": [v.name for v in ordered],
            "logp_sig": logp_sig, "expand_sig": expand_sig,
            "logp": logp_cres._reduce(), "expand": expand_cres._reduce(),
        }
    return compiled, entry


def _shared_layout(ordered):
    """nutpie's ``shared_var_keys``, ``shared_data`` and ``user_data`` for the shared variables ``ordered``.

    The keys name the fields of the record the compiled callbacks read the
    data pointers from, so they must be the same in every process: ``shared0``,
    ``shared1``, ... in nutpie's order (nutpie draws random ones).
    """
    import nutpie.compile_pymc as ncp

    shared_var_keys, shared_data = {}, {}
    for i, var in enumerate(ordered):
        key = f"shared{i}"
        value = np.array(var.get_value(), order="C", copy=True)
        value.flags.writeable = False
        shared_data[key] = value
        shared_var_keys[var] = key
    return shared_var_keys, shared_data, ncp.make_user_data(shared_var_keys, shared_data)


def _assemble(model, n_dim, n_expanded, shape_info, reparameterized, initial_point_fn, logp_cf, expand_cf,
              shared_var_keys, shared_data, user_data, logp_func, expand_func):
    import nutpie.compile_pymc as ncp

    dims, coords = ncp._prepare_dims_and_coords(model, shape_info, reparameterized)
    return ncp.CompiledPyMCModel(
        _n_dim=n_dim, dims=dims, _coords=coords,
        _shapes={name: tuple(shape) for name, _, shape in zip(*shape_info)},
        compiled_logp_func=logp_cf, compiled_expand_func=expand_cf, initial_point_func=initial_point_fn,
        shared_data=shared_data, shared_var_keys=shared_var_keys, user_data=user_data, n_expanded=n_expanded,
        shape_info=shape_info, logp_func=logp_func, expand_func=expand_func,
        reparameterized_names=reparameterized,
    )  # fmt: skip


# ====================================================================== load (hit)
def _from_entry(model, entry: dict, graph: _Graph, jitter_rvs, initial_points):
    """The CompiledPyMCModel of a stored entry, for ``model`` (whose key matched)."""
    import nutpie.compile_pymc as ncp
    from numba.core import registry
    from numba.core.compiler import CompileResult

    names, shapes, n_dim = entry["names"], [tuple(s) for s in entry["shapes"]], entry["n_dim"]
    k = len(graph.free_names)
    if names[:k] != graph.free_names or names[k:] != graph.remaining_names:
        raise ValueError("the stored variable names are not the model's")
    if any(s is not None and s != shapes[i] for i, s in enumerate(graph.free_shapes)):
        raise ValueError("the stored shapes are not the model's")
    sizes = [prod(s) for s in shapes]
    if sum(sizes[:k]) != n_dim or sum(sizes) != entry["n_expanded"]:
        raise ValueError("the stored sizes do not add up")
    slices, start = [], 0
    for n in sizes:
        slices.append(slice(start, start + n))
        start += n
    shape_info = (list(names), slices, shapes)
    order = entry["shared_order"]
    if any(n not in graph.shared for n in order):
        raise ValueError("the stored shared variables are not the model's")
    shared_var_keys, shared_data, user_data = _shared_layout([graph.shared[n] for n in order])
    ctx = registry.cpu_target.target_context
    ctx.refresh()
    logp_cres = CompileResult._rebuild(ctx, *entry["logp"])
    expand_cres = CompileResult._rebuild(ctx, *entry["expand"])
    logp_cf, _ = _cfunc(_not_callable("logp_numba"), entry["logp_sig"], logp_cres)
    expand_cf, _ = _cfunc(_not_callable("expand_numba"), entry["expand_sig"], expand_cres)
    ipf = ncp._rv_dict_to_flat_array_wrapper(_initial_point_fn(model, jitter_rvs, initial_points),
                                             names=names[:k], shapes=shapes[:k])
    functions = _LazyFunctions(model)
    return _assemble(model, n_dim, entry["n_expanded"], shape_info, entry["reparameterized"], ipf, logp_cf,
                     expand_cf, shared_var_keys, shared_data, user_data, _LazyFunction(functions, 0),
                     _LazyFunction(functions, 1))


def _not_callable(name):
    def stored(*args):
        raise TypeError(f"{name} comes from the bayespk compile cache: call it by its .address or .ctypes")

    stored.__name__ = stored.__qualname__ = name
    return stored


class _LazyFunctions:
    """nutpie's PyTensor logp and expand functions of a model, compiled when first asked for."""

    def __init__(self, model):
        self._model, self._functions = model, None

    def get(self, i: int):
        if self._functions is None:
            import nutpie.compile_pymc as ncp
            from pymc.initial_point import make_initial_point_fn

            ipf = make_initial_point_fn(model=self._model, return_transformed=True)
            out = ncp._make_functions(self._model, mode="NUMBA", compute_grad=True, join_expanded=True,
                                      pymc_initial_point_fn=ipf)
            self._functions = (out[2], out[3])
        return self._functions[i]


class _LazyFunction:
    """Stands for ``logp_func`` / ``expand_func`` of a cached model; compiles them on first use."""

    def __init__(self, functions: _LazyFunctions, i: int):
        self._lazy_functions, self._lazy_index = functions, i

    def __getattr__(self, name):
        if name.startswith("_lazy_"):
            raise AttributeError(name)
        return getattr(self._lazy_functions.get(self._lazy_index), name)

    def __call__(self, *args, **kwargs):
        return self._lazy_functions.get(self._lazy_index)(*args, **kwargs)

    def __repr__(self):
        return f"<{'logp' if self._lazy_index == 0 else 'expand'} function of a cached nutpie model (lazy)>"


# ====================================================================== files
def _read_entry(path: Path, key: str) -> dict | None:
    try:
        raw = path.read_bytes()
    except FileNotFoundError:
        return None
    except OSError as e:
        log.debug("cannot read %s: %s", path, e)
        return None
    try:
        if not raw.startswith(MAGIC):
            raise ValueError("not a bayespk compile cache entry")
        digest, body = raw[len(MAGIC):len(MAGIC) + 32], raw[len(MAGIC) + 32:]
        if hashlib.sha256(body).digest() != digest:
            raise ValueError("checksum mismatch (truncated or corrupted)")
        entry = pickle.loads(body)
        if not isinstance(entry, dict) or entry.get("key") != key or entry.get("format") != FORMAT:
            raise ValueError("stored for another model or format")
        return entry
    except Exception as e:  # noqa: BLE001 - any unreadable entry is rebuilt
        log.warning("bayespk compile cache: ignoring %s (%s); recompiling", path, e)
        stats["corrupt"] += 1
        return None


def _write_entry(path: Path, key: str, entry: dict) -> bool:
    from numba.core.serialize import dumps

    try:
        body = dumps({"format": FORMAT, "key": key, **entry})
    except Exception as e:  # noqa: BLE001
        log.debug("not cached: cannot serialise the compiled model (%s)", e)
        return False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(MAGIC + hashlib.sha256(body).digest() + body)
            os.replace(tmp, path)  # atomic: readers see the old entry or the new one, never half of it
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    except OSError as e:
        log.debug("not cached: cannot write %s (%s)", path, e)
        return False
    return True


def _touch(path: Path) -> None:
    try:
        os.utime(path)
    except OSError:
        pass


def _prune(folder: Path) -> None:
    """Keep the :data:`MAX_ENTRIES` most recently used entries; drop stale temporary files."""
    try:
        entries = sorted(folder.glob("*.nbp"), key=lambda p: p.stat().st_mtime, reverse=True)
        for p in entries[MAX_ENTRIES:]:
            p.unlink(missing_ok=True)
        now = time.time()
        for p in folder.glob(".*.tmp"):
            if now - p.stat().st_mtime > 3600:
                p.unlink(missing_ok=True)
    except OSError:
        pass
