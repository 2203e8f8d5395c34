"""User-written model equations: a small, safe arithmetic grammar.

Spec files hold equations as strings, e.g. ``central = "KA*depot - VMAX*C/(KM + C)"``.
They are parsed and checked here, never passed to ``eval``. The grammar:

- numbers: ``2``, ``0.75``, ``1e-3``; names: ``CL``, ``V1``, ``depot``, ``t`` (letters, digits and ``_``,
  not starting with ``_``); parentheses.
- arithmetic: ``+ - * /`` and power, written ``^`` or ``**`` (``WT^0.75``); unary ``-`` and ``+``.
  Power binds tighter than unary minus and is right-associative: ``-x^2`` is ``-(x^2)``, ``x^y^z`` is
  ``x^(y^z)``.
- one comparison ``< <= > >= == !=`` (``a < b < c`` is refused: nest ``where`` instead).
- functions: ``exp(x)  log(x)  sqrt(x)  abs(x)  pow(x, y)  min(x, y)  max(x, y)  where(cond, a, b)``
  (``where`` gives ``a`` where ``cond`` holds, else ``b``; e.g. ``where(t < TLAG, 0, A*exp(-k*t))``).

Nothing else is accepted: no strings, attributes, indexing, keywords, ``and``/``or``/``not``, ``%``,
``//``, if-expressions, other functions, comments or non-ASCII characters. Line breaks count as spaces.
An error names the spec key, the expression, the column (1-based) and the rule.
"""

from __future__ import annotations

import ast
import math
from dataclasses import dataclass, field
from functools import cache
from typing import NoReturn

from bayespk.errors import SpecError

__all__ = ["FUNCTIONS", "Expression", "parse", "evaluation_order"]

FUNCTIONS: frozenset[str] = frozenset({"exp", "log", "sqrt", "abs", "pow", "min", "max", "where"})
_FN_LIST = ", ".join(sorted(FUNCTIONS))
_ARITY = {"exp": 1, "log": 1, "sqrt": 1, "abs": 1, "pow": 2, "min": 2, "max": 2, "where": 3}
_BINOPS = {ast.Add: "add", ast.Sub: "sub", ast.Mult: "mul", ast.Div: "div", ast.Pow: "pow"}
_CMPOPS = {ast.Lt: "lt", ast.LtE: "le", ast.Gt: "gt", ast.GtE: "ge", ast.Eq: "eq", ast.NotEq: "ne"}
_REFUSED = {  # node type -> (what, hint)
    ast.Attribute: ("attribute access", ""),
    ast.Subscript: ("indexing", ""),
    ast.Lambda: ("lambda", ""),
    ast.IfExp: ("an if-expression", "use where(cond, a, b)"),
    ast.BoolOp: ("'and'/'or'", "use where(cond, a, b)"),
    ast.NamedExpr: ("assignment (:=)", ""),
    ast.Starred: ("a starred argument", ""),
    ast.JoinedStr: ("an f-string", ""),
    ast.List: ("a list", ""), ast.Tuple: ("a tuple", ""), ast.Set: ("a set", ""), ast.Dict: ("a dict", ""),
    ast.ListComp: ("a comprehension", ""), ast.SetComp: ("a comprehension", ""),
    ast.DictComp: ("a comprehension", ""), ast.GeneratorExp: ("a comprehension", ""),
}
_OPWORDS = {ast.Mod: "%", ast.FloorDiv: "//", ast.MatMult: "@", ast.BitAnd: "&", ast.BitOr: "|",
            ast.BitXor: "^", ast.LShift: "<<", ast.RShift: ">>", ast.Not: "not", ast.Invert: "~",
            ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in"}


def _one_line(source: str) -> str:  # line breaks and tabs as spaces: same length, so same columns
    return "".join(" " if c in "\t\n\r" else c for c in source)


def _fail(key: str, text: str, rule: str, col: int, hint: str = "") -> SpecError:
    return SpecError(f'{key} = "{text}": {rule} at column {col}' + (f"; {hint}" if hint else ""))


class _Checker:
    """Turns a Python ``ast`` (of the ``^``-replaced text) into a tuple tree, refusing all else."""

    def __init__(self, key: str, text: str, code: str, orig: list[int]):
        self.key, self.text, self.code, self.orig = key, text, code, orig
        self.refs: list[tuple[str, int]] = []

    def col(self, offset: int) -> int:  # offset in the parsed code -> 1-based column in the user's text
        return self.orig[min(max(offset, 0), len(self.code))] + 1

    def between(self, a: ast.AST, end: int) -> int:  # column of the first token after `a`, before `end`
        i = a.end_col_offset
        while i < end and self.code[i] in " )(":
            i += 1
        return self.col(i)

    def fail(self, rule: str, col: int, hint: str = "") -> NoReturn:
        raise _fail(self.key, self.text, rule, col, hint)

    def walk(self, node: ast.AST) -> tuple:
        here = self.col(node.col_offset)
        if isinstance(node, ast.Constant):
            v = node.value
            if isinstance(v, bool) or v is None or v is Ellipsis:
                shown = "..." if v is Ellipsis else v
                self.fail(f"'{shown}' is not allowed", here, "use numbers, names and comparisons")
            if isinstance(v, (str, bytes)):
                self.fail("text is not allowed", here, "use numbers and names")
            if not isinstance(v, (int, float)):
                self.fail(f"the number {v!r} is not allowed", here)
            try:
                v = float(v)
            except OverflowError:
                v = math.inf
            if not math.isfinite(v):
                self.fail("number too large", here)
            return ("c", v)
        if isinstance(node, ast.Name):
            if node.id.startswith("_"):
                self.fail(f"name '{node.id}' is not allowed (names may not start with '_')", here)
            if node.id in FUNCTIONS:
                self.fail(f"function '{node.id}' used as a name", here, f"call it: {node.id}(...)")
            self.refs.append((node.id, here))
            return ("n", node.id, here)
        if isinstance(node, ast.BinOp):
            if type(node.op) not in _BINOPS:
                op = _OPWORDS.get(type(node.op), "?")
                col = self.between(node.left, node.right.col_offset)
                self.fail(f"operator '{op}' is not allowed", col, "use + - * / ^ and functions " + _FN_LIST)
            return ("b", _BINOPS[type(node.op)], self.walk(node.left), self.walk(node.right))
        if isinstance(node, ast.UnaryOp):
            if isinstance(node.op, ast.USub):
                return ("u", "neg", self.walk(node.operand))
            if isinstance(node.op, ast.UAdd):
                return self.walk(node.operand)
            self.fail(f"operator '{_OPWORDS.get(type(node.op), '?')}' is not allowed", here)
        if isinstance(node, ast.Compare):
            if len(node.ops) > 1:
                col = self.between(node.comparators[0], node.comparators[1].col_offset)
                self.fail("chained comparison is not allowed", col, "compare two values; nest where(c, a, b)")
            if type(node.ops[0]) not in _CMPOPS:
                self.fail(f"operator '{_OPWORDS.get(type(node.ops[0]), '?')}' is not allowed",
                          self.between(node.left, node.comparators[0].col_offset), "use < <= > >= == !=")
            return ("b", _CMPOPS[type(node.ops[0])], self.walk(node.left), self.walk(node.comparators[0]))
        if isinstance(node, ast.Call):
            return self.call(node, here)
        what, hint = _REFUSED.get(type(node), (f"'{type(node).__name__}'", ""))
        if isinstance(node, (ast.Attribute, ast.Subscript)):
            here = self.between(node.value, node.end_col_offset)  # at the '.' or '['
            self.walk(node.value)
        elif isinstance(node, ast.BoolOp):
            here = self.between(node.values[0], node.values[1].col_offset)
        elif isinstance(node, ast.IfExp):
            here = self.between(node.body, node.test.col_offset)
        self.fail(f"{what} is not allowed", here, hint)

    def call(self, node: ast.Call, here: int) -> tuple:
        if not isinstance(node.func, ast.Name):
            self.walk(node.func)  # refuses it, naming what it is
            self.fail("only the listed functions may be called", here, "allowed functions: " + _FN_LIST)
        name = node.func.id
        if name not in FUNCTIONS:
            self.fail(f"unknown function '{name}'", here, "allowed functions: " + _FN_LIST)
        if node.keywords:
            kw = node.keywords[0]
            self.fail(f"keyword argument in {name}() is not allowed", self.col(kw.col_offset),
                      "pass arguments by position")
        for a in node.args:
            if isinstance(a, ast.Starred):
                self.fail("a starred argument is not allowed", self.col(a.col_offset))
        n = _ARITY[name]
        if len(node.args) != n:
            self.fail(f"{name}() takes {n} argument{'s' if n > 1 else ''}, got {len(node.args)}", here)
        return ("f", name, tuple(self.walk(a) for a in node.args))


def _eval(node: tuple, ns: dict, ops: dict):
    tag = node[0]
    if tag == "c":
        return node[1]
    if tag == "n":
        return ns[node[1]]
    if tag == "b":
        return ops[node[1]](_eval(node[2], ns, ops), _eval(node[3], ns, ops))
    if tag == "u":
        return ops["neg"](_eval(node[2], ns, ops))
    return ops[node[1]](*[_eval(a, ns, ops) for a in node[2]])


@cache
def _backend(name: str) -> dict:
    if name == "numpy":
        import numpy as m
        cmp = (m.less, m.less_equal, m.greater, m.greater_equal, m.equal, m.not_equal)
        ops = (m.add, m.subtract, m.multiply, m.divide, m.power, m.negative)
        fns = (m.exp, m.log, m.sqrt, m.abs, m.minimum, m.maximum, m.where)
    elif name == "pytensor":
        import pytensor.tensor as m
        cmp = (m.lt, m.le, m.gt, m.ge, m.eq, m.neq)
        ops = (m.add, m.sub, m.mul, m.true_div, m.power, m.neg)
        fns = (m.exp, m.log, m.sqrt, m.abs, m.minimum, m.maximum, m.switch)
    elif name == "jax":
        try:
            import jax.numpy as m
        except ImportError as e:
            raise ImportError("the 'jax' backend needs jax installed (pip install jax)") from e
        cmp = (m.less, m.less_equal, m.greater, m.greater_equal, m.equal, m.not_equal)
        ops = (m.add, m.subtract, m.multiply, m.divide, m.power, m.negative)
        fns = (m.exp, m.log, m.sqrt, m.abs, m.minimum, m.maximum, m.where)
    else:
        raise ValueError(f"unknown backend {name!r}; expected 'numpy', 'pytensor' or 'jax'")
    table = dict(zip(("lt", "le", "gt", "ge", "eq", "ne"), cmp))
    table.update(zip(("add", "sub", "mul", "div", "pow", "neg"), ops))
    table.update(zip(("exp", "log", "sqrt", "abs", "min", "max", "where"), fns))
    return table


@dataclass(frozen=True)
class Expression:
    """A checked equation; build it with :func:`parse`."""

    source: str
    key: str
    names: frozenset[str]
    _tree: tuple = field(repr=False, compare=False)
    _refs: tuple[tuple[str, int], ...] = field(repr=False, compare=False)  # (name, column), in text order

    def _error(self, rule: str, col: int, hint: str = "") -> SpecError:
        return _fail(self.key, _one_line(self.source), rule, col, hint)

    def check_names(self, known) -> None:
        """SpecError for the first name (in reading order) that is not in ``known``."""
        known = frozenset(known)
        for name, col in self._refs:
            if name not in known:
                raise self._error(f"unknown name '{name}'", col,
                                  "known names: " + (", ".join(sorted(known)) or "(none)"))

    def evaluate(self, namespace: dict, backend: str = "numpy"):
        """Value of the expression with names taken from ``namespace``, built with ``backend``'s ops."""
        ops = _backend(backend)
        for name, col in self._refs:
            if name not in namespace:
                raise self._error(f"name '{name}' has no value", col,
                                  "available: " + (", ".join(sorted(map(str, namespace))) or "(none)"))
        try:
            return _eval(self._tree, namespace, ops)
        except RecursionError:
            raise self._error("expression is too deeply nested", 1) from None


def parse(source, key: str, known=None) -> Expression:
    """Parse and check ``source`` (the value of spec key ``key``); with ``known``, also check its names."""
    if not isinstance(source, str):
        raise SpecError(f"{key} = {source!r}: expected an expression in quotes, got {type(source).__name__}")
    text = _one_line(source)
    if not text.strip():
        raise _fail(key, text, "empty expression", 1, "write an equation, e.g. \"CL/V * central\"")
    for i, c in enumerate(text):
        if not (" " <= c <= "~") or c == "#":
            what = "comment ('#')" if c == "#" else f"character {c!r}"
            raise _fail(key, text, f"{what} is not allowed", i + 1, "use ASCII names, numbers and operators")
    code, orig = [], []
    for i, c in enumerate(text):
        code.append("**" if c == "^" else c)
        orig.extend((i, i) if c == "^" else (i,))
    code = "".join(code)
    orig.append(len(text))
    try:
        tree = ast.parse(code, mode="eval").body
    except SyntaxError as e:
        if not e.offset or e.offset < 1 or (e.lineno or 1) > 1:
            col = len(text.rstrip()) + 1
            rule = "expression ends early" if e.msg == "invalid syntax" else f"syntax error ({e.msg})"
        else:
            col, rule = orig[min(e.offset - 1, len(code))] + 1, f"syntax error ({e.msg})"
        raise _fail(key, text, rule, col) from None
    except (RecursionError, MemoryError, ValueError):
        raise _fail(key, text, "expression is too deeply nested or too long", 1) from None
    checker = _Checker(key, text, code, orig)
    try:
        body = checker.walk(tree)
    except RecursionError:
        raise _fail(key, text, "expression is too deeply nested", 1) from None
    expr = Expression(source, key, frozenset(n for n, _ in checker.refs), body, tuple(checker.refs))
    if known is not None:
        expr.check_names(known)
    return expr


def evaluation_order(derived: dict[str, Expression], known) -> list[str]:
    """Names of ``derived`` ordered so that each comes after the derived quantities it uses.

    Refuses a derived name that shadows a known name or a function, an unknown name, and a cycle.
    """
    known = frozenset(known)
    for name, expr in derived.items():
        if not (isinstance(name, str) and name.isascii() and name.isidentifier()) or name.startswith("_"):
            raise SpecError(f"{expr.key}: derived quantity name {name!r} is not a valid name "
                            "(letters, digits and '_', not starting with '_' or a digit)")
        clash = "a known name" if name in known else "a function" if name in FUNCTIONS else ""
        if clash:
            raise SpecError(f"{expr.key}: derived quantity '{name}' shadows {clash}; choose another name")
    allowed = known | frozenset(derived)
    for expr in derived.values():
        expr.check_names(allowed)
    order: list[str] = []
    state: dict[str, int] = {}  # 1 = in progress, 2 = done
    path: list[str] = []

    def visit(name: str) -> None:
        state[name] = 1
        path.append(name)
        for ref, col in derived[name]._refs:
            if ref not in derived or state.get(ref) == 2:
                continue
            if state.get(ref) == 1:
                cycle = " -> ".join(path[path.index(ref):] + [ref])
                raise derived[name]._error(f"derived quantities form a cycle {cycle} (reference to "
                                           f"'{ref}')", col, "a quantity may not depend on itself")
            visit(ref)
        path.pop()
        state[name] = 2
        order.append(name)

    for name in derived:
        if name not in state:
            visit(name)
    return order
