"""The restricted expression grammar of spec equations (bayespk.model.expressions)."""

from __future__ import annotations

import builtins
import dataclasses

import numpy as np
import pytest

from bayespk.errors import SpecError
from bayespk.model.expressions import FUNCTIONS, Expression, evaluation_order, parse

KEY = "[model.ode] central"
N = 50


def _namespace(seed=0):
    rng = np.random.default_rng(seed)
    ns = {n: rng.uniform(0.5, 1.5, N) for n in ("x", "y", "z", "KA", "VMAX", "KM", "C", "depot", "WT",
                                                 "TM50", "A1", "alpha")}
    ns["HILL"] = rng.uniform(1.0, 4.0, N)
    ns["PMA"] = rng.uniform(20.0, 60.0, N)
    ns["TM50"] = rng.uniform(30.0, 50.0, N)
    ns["t"] = rng.uniform(0.0, 3.0, N)
    ns["TLAG"] = rng.uniform(0.5, 2.0, N)
    return ns


# (expression, independent numpy implementation)
CASES = [
    ("2*x^2", lambda x, **_: 2 * x**2),
    ("-x^2", lambda x, **_: -(x**2)),
    ("x^y^z", lambda x, y, z, **_: x ** (y**z)),
    ("x^-y + x**2 - y", lambda x, y, **_: x ** (-y) + x**2 - y),
    ("x - y - z + x / y / z", lambda x, y, z, **_: (x - y) - z + (x / y) / z),
    ("KA*depot - VMAX*C/(KM + C)", lambda KA, depot, VMAX, C, KM, **_: KA * depot - VMAX * C / (KM + C)),
    ("WT^0.75 * PMA^HILL/(TM50^HILL + PMA^HILL)",
     lambda WT, PMA, HILL, TM50, **_: WT**0.75 * PMA**HILL / (TM50**HILL + PMA**HILL)),
    ("where(t < TLAG, 0, A1*exp(-alpha*t))",
     lambda t, TLAG, A1, alpha, **_: np.where(t < TLAG, 0.0, A1 * np.exp(-alpha * t))),
    ("min(x, y) + max(x, 2*y) - abs(x - 2*y)",
     lambda x, y, **_: np.minimum(x, y) + np.maximum(x, 2 * y) - np.abs(x - 2 * y)),
    ("sqrt(x) * log(y) + pow(x, 1.5e-1) - +1e-3", lambda x, y, **_: np.sqrt(x) * np.log(y) + x**0.15 - 0.001),
    ("(x >= y) * 2.5 + (x != y) - (x == x)", lambda x, y, **_: (x >= y) * 2.5 + 1.0 - 1.0),
    ("where(x <= y, 1, -1) * where(x > 1, 1, 0)",
     lambda x, y, **_: np.where(x <= y, 1.0, -1.0) * np.where(x > 1, 1.0, 0.0)),
]


@pytest.mark.parametrize("src, ref", CASES, ids=[c[0] for c in CASES])
def test_numpy_matches_independent_lambda(src, ref):
    ns = _namespace()
    got = parse(src, KEY).evaluate(ns)
    np.testing.assert_allclose(got, ref(**ns), rtol=1e-12)


def test_precedence_of_caret_is_that_of_power():
    ns = {"x": np.array([2.0, 3.0]), "y": np.array([3.0, 2.0]), "z": np.array([2.0, 2.0])}
    np.testing.assert_allclose(parse("2*x^2", KEY).evaluate(ns), [8.0, 18.0])
    np.testing.assert_allclose(parse("-x^2", KEY).evaluate(ns), [-4.0, -9.0])
    np.testing.assert_allclose(parse("x^y^z", KEY).evaluate(ns), [2.0**9, 3.0**4])  # right-assoc
    np.testing.assert_allclose(parse("(x^y)^z", KEY).evaluate(ns), [64.0, 81.0])


def test_comparisons_are_booleans():
    ns = _namespace()
    for src, ref in [("x < y", np.less), ("x <= y", np.less_equal), ("x > y", np.greater),
                     ("x >= y", np.greater_equal), ("x == y", np.equal), ("x != y", np.not_equal)]:
        got = parse(src, KEY).evaluate(ns)
        assert got.dtype == bool
        np.testing.assert_array_equal(got, ref(ns["x"], ns["y"]))


@pytest.mark.parametrize("src, ref", CASES, ids=[c[0] for c in CASES])
def test_pytensor_and_jax_match_numpy(src, ref):
    import pytensor
    import pytensor.tensor as pt

    ns = _namespace(1)
    expr = parse(src, KEY)
    want = expr.evaluate(ns)
    names = sorted(expr.names)
    sym = {n: pt.dvector(n) for n in names}
    out = expr.evaluate(sym, backend="pytensor")
    assert isinstance(out, pt.TensorVariable)
    f = pytensor.function([sym[n] for n in names], out, mode="FAST_COMPILE")
    np.testing.assert_allclose(f(*[ns[n] for n in names]), want, rtol=1e-12)

    jax = pytest.importorskip("jax")
    jnp = jax.numpy
    args = {n: jnp.asarray(ns[n]) for n in names}
    np.testing.assert_allclose(np.asarray(expr.evaluate(args, backend="jax")), want, rtol=2e-5, atol=1e-6)
    jitted = jax.jit(lambda a: expr.evaluate(a, backend="jax"))
    np.testing.assert_allclose(np.asarray(jitted(args)), want, rtol=2e-5, atol=1e-6)


@pytest.mark.parametrize("src, wrt", [
    ("WT^0.75 * PMA^HILL/(TM50^HILL + PMA^HILL)", "HILL"),
    ("WT^0.75 * PMA^HILL/(TM50^HILL + PMA^HILL)", "TM50"),
    ("where(t < TLAG, 0, A1*exp(-alpha*t))", "alpha"),
    ("max(x, 1.2) * sqrt(x) + log(pow(x, 2)) - abs(x - 1)", "x"),
])
def test_pytensor_gradient_matches_finite_difference(src, wrt):
    import pytensor
    import pytensor.tensor as pt

    expr = parse(src, KEY)
    ns = {n: float(v[3]) for n, v in _namespace(2).items() if n in expr.names}
    ns["t"], ns["TLAG"] = 2.0, 1.0  # away from the kink of where()
    names = sorted(expr.names)
    sym = {n: pt.dscalar(n) for n in names}
    grad = pytensor.function([sym[n] for n in names], pytensor.grad(expr.evaluate(sym, "pytensor"), sym[wrt]),
                             mode="FAST_COMPILE")
    h = 1e-6
    fd = (expr.evaluate({**ns, wrt: ns[wrt] + h}) - expr.evaluate({**ns, wrt: ns[wrt] - h})) / (2 * h)
    assert abs(fd) > 1e-3
    np.testing.assert_allclose(grad(*[ns[n] for n in names]), fd, rtol=1e-6)


# (source, rule words in the message, column)
BAD = [
    ("__import__('os').system('x')", "unknown function '__import__'", 1),
    ("eval('1')", "unknown function 'eval'", 1),
    ("x.real", "attribute access is not allowed", 2),
    ("x[0]", "indexing is not allowed", 2),
    ("'a'", "text is not allowed", 1),
    ('b"a"', "text is not allowed", 1),
    ('""', "text is not allowed", 1),
    ('f"{x}"', "f-string is not allowed", 1),
    ("lambda: 1", "lambda is not allowed", 1),
    ("a if b else c", "if-expression is not allowed", 3),
    ("a and b", "'and'/'or' is not allowed", 3),
    ("not a", "'not' is not allowed", 1),
    ("sin(x)", "unknown function 'sin'", 1),
    ("exp(x, y)", "exp() takes 1 argument, got 2", 1),
    ("where(a, b)", "where() takes 3 arguments, got 2", 1),
    ("exp(x=1)", "keyword argument", 5),
    ("max(*a)", "starred argument is not allowed", 5),
    ("a < b < c", "chained comparison", 7),
    ("a % b", "operator '%' is not allowed", 3),
    ("a // b", "operator '//' is not allowed", 3),
    ("a @ b", "operator '@' is not allowed", 3),
    ("a & b", "operator '&' is not allowed", 3),
    ("a is b", "operator 'is' is not allowed", 3),
    ("_x + 1", "may not start with '_'", 1),
    ("(y := 1)", "assignment (:=) is not allowed", 2),
    ("[x for x in y]", "comprehension is not allowed", 1),
    ("(a, b)", "tuple is not allowed", 1),
    ("True + 1", "'True' is not allowed", 1),
    ("exp + 1", "function 'exp' used as a name", 1),
    ("a # comment", "comment ('#') is not allowed", 3),
    ("a + \u03b2", "character '\u03b2' is not allowed", 5),
    ("1e999 * a", "number too large", 1),
    ("", "empty expression", 1),
    ("   ", "empty expression", 1),
    ("1 +", "expression ends early", 4),
    ("a b", "syntax error", 3),
    ("(a + b", "syntax error ('(' was never closed)", 1),
]


@pytest.mark.parametrize("src, rule, col", BAD, ids=[b[0] or "<empty>" for b in BAD])
def test_refused_constructs(src, rule, col):
    with pytest.raises(SpecError) as err:
        parse(src, KEY)
    msg = str(err.value)
    assert "\n" not in msg
    assert msg.startswith(f'{KEY} = "{src}": ')
    assert rule in msg
    assert f"at column {col}" in msg


def test_allowed_functions_are_listed():
    msg = str(pytest.raises(SpecError, parse, "sin(x)", KEY).value)
    assert "allowed functions: abs, exp, log, max, min, pow, sqrt, where" in msg
    assert FUNCTIONS == {"exp", "log", "sqrt", "abs", "pow", "min", "max", "where"}


def test_non_string_input_refused():
    for bad in (3, 1.5, None, ["a"]):
        with pytest.raises(SpecError, match=r"^\[model.ode\] central = .*: expected an expression in quotes"):
            parse(bad, KEY)


def test_unknown_name_column_example():
    src = "KA*depot - VMAX*Cx/(KM + C)"
    with pytest.raises(SpecError) as err:
        parse(src, KEY, known=["KA", "depot", "VMAX", "KM", "C", "t"])
    assert str(err.value) == (f'{KEY} = "{src}": unknown name \'Cx\' at column 17; '
                              "known names: C, KA, KM, VMAX, depot, t")


def test_columns_refer_to_original_text_after_caret_replacement():
    src = "WT^0.75 * PMA^HILL/(TM50^HILL + PMAx^HILL)"
    with pytest.raises(SpecError, match=r"unknown name 'PMAx' at column 33;") as err:
        parse(src, "[k]", known=["WT", "PMA", "HILL", "TM50"])
    assert src.index("PMAx") + 1 == 33
    assert f'"{src}"' in str(err.value)
    # refused constructs and syntax errors after '^' too
    with pytest.raises(SpecError, match="unknown function 'zz' at column 9"):
        parse("x ^ y ^ zz(1)", KEY)
    with pytest.raises(SpecError, match="operator '%' is not allowed at column 7"):
        parse("a^b^c % d", KEY)
    with pytest.raises(SpecError, match=r"syntax error \(invalid syntax\) at column 5"):
        parse("a^b^^c", KEY)
    # line breaks count as one column each
    with pytest.raises(SpecError, match="unknown name 'q' at column 9"):
        parse("a^2 +\n  q", KEY, known=["a"])


def test_expression_object():
    e = parse("KA*depot - VMAX*C/(KM + C) + exp(-t)", KEY, known=["KA", "depot", "VMAX", "C", "KM", "t"])
    assert isinstance(e, Expression)
    assert e.source == "KA*depot - VMAX*C/(KM + C) + exp(-t)" and e.key == KEY
    assert e.names == {"KA", "depot", "VMAX", "C", "KM", "t"}
    with pytest.raises(dataclasses.FrozenInstanceError):
        e.source = "1"
    assert parse("3", KEY).evaluate({}) == 3.0 and isinstance(parse("3", KEY)._tree[1], float)
    e.check_names(["KA", "depot", "VMAX", "C", "KM", "t", "extra"])
    with pytest.raises(SpecError, match="unknown name 'KA' at column 1"):
        e.check_names([])


def test_missing_name_at_evaluation_and_bad_backend():
    e = parse("a + b*2", KEY)
    with pytest.raises(SpecError, match=r"name 'b' has no value at column 5; available: a"):
        e.evaluate({"a": 1.0})
    with pytest.raises(ValueError, match="unknown backend"):
        e.evaluate({"a": 1.0, "b": 2.0}, backend="torch")


def test_never_uses_eval_or_exec(monkeypatch):
    def boom(*a, **k):
        raise AssertionError("eval/exec called")

    monkeypatch.setattr(builtins, "eval", boom)
    monkeypatch.setattr(builtins, "exec", boom)
    e = parse("where(t < TLAG, 0, A1*exp(-alpha*t))", KEY)
    assert e.evaluate({"t": 2.0, "TLAG": 1.0, "A1": 3.0, "alpha": 0.5}) == pytest.approx(3.0 * np.exp(-1.0))
    with pytest.raises(SpecError):
        parse("__import__('os').system('echo hacked')", KEY)


def _derived(**srcs):
    return {k: parse(v, f"[model.derived] {k}") for k, v in srcs.items()}


def test_evaluation_order_chain():
    d = _derived(E="D * 2 + C", D="C + k", C="CL / V")
    order = evaluation_order(d, known=["CL", "V", "k"])
    assert order == ["C", "D", "E"]
    ns = {"CL": 2.0, "V": 4.0, "k": 1.0}
    for name in order:
        ns[name] = d[name].evaluate(ns)
    assert ns["E"] == pytest.approx((0.5 + 1.0) * 2 + 0.5)
    # independent quantities keep the written order
    assert evaluation_order(_derived(B="k", A="k"), known=["k"]) == ["B", "A"]
    # a diamond
    assert evaluation_order(_derived(D="B + C", B="A", C="A*2", A="k"), ["k"]) == ["A", "B", "C", "D"]


def test_evaluation_order_refuses_cycles():
    with pytest.raises(SpecError, match=r"cycle C -> D -> C") as err:
        evaluation_order(_derived(C="D + 1", D="k * C"), known=["k"])
    assert "[model.derived] " in str(err.value)
    with pytest.raises(SpecError, match=r"cycle A -> B -> E -> A"):
        evaluation_order(_derived(A="B", B="k + E", E="A^2"), known=["k"])
    with pytest.raises(SpecError, match=r'\[model.derived\] S = "S \+ 1": .*cycle S -> S'):
        evaluation_order(_derived(S="S + 1"), known=[])


def test_evaluation_order_refuses_shadowing_and_unknown_names():
    with pytest.raises(SpecError, match=r"\[model.derived\] CL: derived quantity 'CL' shadows a known name"):
        evaluation_order(_derived(CL="V * 2"), known=["CL", "V"])
    with pytest.raises(SpecError, match=r"derived quantity 'exp' shadows a function"):
        evaluation_order({"exp": parse("V", "[model.derived] exp")}, known=["V"])
    with pytest.raises(SpecError, match=r"unknown name 'W' at column 5; known names: C, V, k"):
        evaluation_order(_derived(C="V + W", k="1"), known=["V"])
