"""The library's modules import one another without a circle, and only downwards through the layers.

Every ``import`` of a ``bayespk`` module counts, at module level or inside a
function: an import moved into a function to dodge a circle is still a circle
(imports under ``if TYPE_CHECKING:``, for annotations only, do not count).

The layers, bottom up (README, section Design): math and infrastructure,
data, spec, model, inference, workflows, command line. A module may import
from its own layer and the ones below.
"""

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[2] / "bayespk"


def _module_name(path: Path) -> str:
    parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path, modules: set[str]) -> set[str]:
    """The bayespk modules that ``path`` imports (``from bayespk.x import name`` counts ``bayespk.x.name``
    where that is a module, else ``bayespk.x``)."""
    tree = ast.parse(path.read_text(), filename=str(path))
    package = _module_name(path) if path.name == "__init__.py" else _module_name(path).rpartition(".")[0]
    found = set()
    for node in _walk(tree):
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package.split(".")[: len(package.split(".")) - node.level + 1] + ([base] if base
                                                                                                 else []))
            names = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base for a in node.names]
        else:
            continue
        for name in names:
            while name and name not in modules:  # `import bayespk.x.y` of a name inside module bayespk.x
                name = name.rpartition(".")[0]
            if name.startswith("bayespk") and name != "bayespk":  # the root package holds only lazy names
                found.add(name)
    return found


def _walk(node: ast.AST):
    """Every node under ``node``, except the bodies of ``if TYPE_CHECKING:`` (annotations only)."""
    yield node
    for child in ast.iter_child_nodes(node):
        if isinstance(child, ast.If) and _type_checking(child.test):
            for other in child.orelse:
                yield from _walk(other)
            continue
        yield from _walk(child)


def _type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


#: (layer, module-name prefixes), bottom up; the first prefix that matches a module decides its layer
LAYERS = [
    ("command line", ("bayespk.cli", "bayespk.cli_common", "bayespk.nca_cli", "bayespk.borrowing.cli",
                      "bayespk.design.cli", "bayespk.parallel.cli", "bayespk.simulate.cli")),
    ("workflows", ("bayespk.evaluate", "bayespk.borrowing", "bayespk.response", "bayespk.simulate",
                   "bayespk.design", "bayespk.parallel", "bayespk.nca")),
    ("inference", ("bayespk.sampling", "bayespk.diagnostics", "bayespk.fit")),
    ("model", ("bayespk.model", "bayespk.units")),
    ("spec", ("bayespk.model.spec", "bayespk.model.expressions", "bayespk.model.priors", "bayespk.model.user",
              "bayespk.model.joint_prior", "bayespk.model.prior_from")),
    ("data", ("bayespk.data", "bayespk.rundir")),
    ("math", ("bayespk.structural", "bayespk.errors", "bayespk.progress", "bayespk.compile_cache")),
]


def layer(module: str) -> int:
    """The layer of ``module`` (0 = math ... 6 = command line): its longest matching prefix decides."""
    best = None
    for rank, (_, prefixes) in enumerate(reversed(LAYERS)):
        for prefix in prefixes:
            if module == prefix or module.startswith(prefix + "."):
                if best is None or len(prefix) > best[1]:
                    best = (rank, len(prefix))
    if best is None:
        raise KeyError(f"{module}: in no layer of tests/project/test_import_graph.py LAYERS")
    return best[0]


def import_graph() -> dict[str, set[str]]:
    paths = sorted(PACKAGE.rglob("*.py"))
    modules = {_module_name(p) for p in paths}
    return {_module_name(p): _imports(p, modules) - {_module_name(p)} for p in paths}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan), each sorted."""
    index, low, stack, on_stack, out = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return out


def test_the_graph_is_read():
    graph = import_graph()
    assert "bayespk.model.population" in graph["bayespk.fit"]
    assert "bayespk.borrowing.mixtures" in graph["bayespk.borrowing.ess"]
    # a function-level import counts
    assert "bayespk.nca_cli" in graph["bayespk.cli"]
    # an import for annotations only does not
    assert "bayespk.data.schedule" not in graph["bayespk.structural.diffeq"]


def test_a_circle_is_found():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert circles(graph) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_no_module_imports_itself_back():
    found = circles(import_graph())
    assert not found, "import circles (a module reaches itself through these): " + "; ".join(
        " <-> ".join(c) for c in found)


def test_imports_run_downwards_through_the_layers():
    graph = import_graph()
    names = [name for name, _ in reversed(LAYERS)]
    upward = [f"{a} ({names[layer(a)]}) imports {b} ({names[layer(b)]})"
              for a, bs in sorted(graph.items()) for b in sorted(bs) if layer(b) > layer(a)]
    assert not upward, "imports against the layers:\n" + "\n".join(upward)


def test_layers_of_some_modules():
    assert layer("bayespk.model.spec") < layer("bayespk.model.population") < layer("bayespk.fit")
    assert layer("bayespk.simulate.cli") > layer("bayespk.simulate.regimen") > layer("bayespk.fit")
    assert layer("bayespk.structural.diffeq") < layer("bayespk.data.schedule")
