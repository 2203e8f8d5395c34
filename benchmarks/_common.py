"""Helpers shared by the benchmark scripts, importable by tests (``from benchmarks._common import ...``).

:func:`scalar_op_counts` counts the scalar operations of a compiled
log-density + gradient graph (``bench_speed.py`` reports ``Switch`` and ``Exp``
for the bayespk model and the same model written by hand in PyMC).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

__all__ = ["SCALAR_OPS", "logp_dlogp_fgraph", "scalar_op_counts"]

SCALAR_OPS = ("Switch", "Exp", "Expm1")


def logp_dlogp_fgraph(model, mode: str = "NUMBA"):
    """The rewritten graph of ``[logp, dlogp]`` of a PyMC model, as nutpie compiles it.

    The same steps as ``nutpie.compile_pymc_model`` (nutpie's ``_make_functions``):
    ``model.logp()`` rewritten with ``canonicalize`` and ``stabilize`` (plus
    ``local_remove_check_parameter`` when ``model.check_bounds`` is False), its
    gradient with respect to every free variable's value variable, compiled by
    ``pymc.pytensorf.compile`` with the graph rewrites of PyTensor mode ``mode``.
    The function is linked with the Python linker, so nothing is JIT-compiled
    (fast): the graph is the one the ``mode`` linker would compile. Unlike nutpie
    the inputs are the value variables themselves rather than slices of one
    joined vector, which adds no scalar operations.

    Returns a ``pytensor.graph.fg.FunctionGraph``.
    """
    import pytensor.tensor as pt
    from pymc.pytensorf import compile as compile_pymc
    from pytensor.compile.mode import Mode, get_mode
    from pytensor.graph import rewrite_graph

    logp = model.logp()
    rewrites = ["canonicalize", "stabilize"]
    if not model.check_bounds:
        rewrites.append("local_remove_check_parameter")
    logp = rewrite_graph(logp, include=rewrites)
    values = [model.rvs_to_values[rv] for rv in model.free_RVs]
    grad = pt.concatenate([pt.as_tensor(g).ravel() for g in pt.grad(logp, values)])
    lazy = Mode(linker="py", optimizer=get_mode(mode).provided_optimizer)
    with model:
        fn = compile_pymc(values, [logp, grad], mode=lazy, on_unused_input="ignore")
    return fn.maker.fgraph


def scalar_op_counts(graph, names: Iterable[str] = SCALAR_OPS) -> dict[str, int]:
    """How many times each scalar operation in ``names`` occurs in a compiled graph.

    Parameters
    ----------
    graph : pymc.Model, pytensor Function or FunctionGraph
        A compiled function (e.g. ``nutpie.compile_pymc_model(model).logp_func``, the
        log-density + gradient function nutpie runs) or its ``maker.fgraph``; a PyMC
        model is first turned into its log-density + gradient graph by
        :func:`logp_dlogp_fgraph` (NUMBA-mode rewrites, as nutpie).
    names : iterable of str
        Class names of PyTensor scalar ops (``pytensor.scalar``), default
        ``("Switch", "Exp", "Expm1")``.

    Returns
    -------
    dict
        ``{name: count}`` for every name asked for (0 when absent). Every ``Elemwise``
        node whose scalar op is one of them counts once, and so does every such op
        inside a fused ``Composite`` (recursively, also in nested composites and in
        the inner graphs of ops that have one, e.g. ``OpFromGraph``, ``Scan``). A
        count is of graph nodes, not of element-wise evaluations: one ``Exp`` node
        on a vector of 2,000 observations counts 1.

    Examples
    --------
    >>> import pytensor, pytensor.tensor as pt
    >>> x = pt.dvector("x")
    >>> f = pytensor.function([x], pt.switch(x > 0, pt.exp(x), pt.expm1(x)).sum())
    >>> c = scalar_op_counts(f)
    >>> (c["Switch"], c["Exp"], c["Expm1"])
    (1, 1, 1)
    """
    from pytensor.graph.fg import FunctionGraph

    names = tuple(names)
    if isinstance(graph, FunctionGraph):
        fgraph = graph
    elif hasattr(graph, "maker"):
        fgraph = graph.maker.fgraph
    elif hasattr(graph, "logp") and hasattr(graph, "free_RVs"):
        fgraph = logp_dlogp_fgraph(graph)
    else:
        raise TypeError("expected a pymc.Model, a pytensor Function or a FunctionGraph, "
                        f"got {type(graph).__name__}")
    counts: Counter = Counter()
    _count_nodes(fgraph.toposort(), counts)
    return {n: int(counts[n]) for n in names}


def _count_nodes(nodes, counts: Counter) -> None:
    from pytensor.scalar.basic import Composite
    from pytensor.tensor.elemwise import Elemwise

    for node in nodes:
        op = node.op
        if isinstance(op, Elemwise):
            op = op.scalar_op
        counts[type(op).__name__] += 1
        if isinstance(op, Composite):
            _count_nodes(op.fgraph.toposort(), counts)
        else:
            inner = getattr(op, "fgraph", None)
            if inner is not None and hasattr(inner, "toposort"):
                _count_nodes(inner.toposort(), counts)
