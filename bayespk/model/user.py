"""Models that users write in a spec: ODE systems and algebraic (closed-form) predictions.

In the ``[model]`` table, instead of a named ``structure``::

    [model]
    states = ["depot", "central"]            # in CMT order (a dose into CMT k enters state k)
    doses = { 1 = "depot" }                  # optional: CMT -> state
    output = "C"                             # what DV measures
    pd_output = "R"                          # optional: what the PD observations measure (a second output)
    pd_observations = { column = "DVID", value = 2 }   # which rows are PD observations (the default)
    [model.ode]                              # one right-hand side per state
    depot = "-KA*depot"
    central = "KA*depot - VMAX*C/(KM + C)"
    [model.derived]                          # optional: named intermediate quantities
    C = "central/V"
    [model.initial]                          # optional: initial values (default 0)
    [model.solver]                           # optional: method, rtol, atol, max_steps, ss_intervals, ss_rtol

or, for a prediction that needs no ODE (NONMEM ``$PRED``)::

    [model]
    prediction = "A1*exp(-alpha*t) + A2*exp(-beta*t)"

Names in the equations: the parameters of ``[parameters]`` (individual values),
the states, the derived quantities, ``t`` (time) and data columns (covariates,
read from the record in effect; checked against the data when the model is
built). Algebraic predictions can also use ``TAD`` (time after the last dose)
and ``DOSE`` (its amount). ``F<cmt>``, ``ALAG<cmt>``, ``R<cmt>`` and
``D<cmt>`` parameters act on doses into CMT ``<cmt>`` as in NONMEM. The grammar
is in :mod:`bayespk.model.expressions`.

With ``pd_output`` the model has two outputs: rows with ``pd_observations``
(default ``DVID = 2``) are compared with it, under their own residual error
model and BLQ rule (``[pd_error]``, default additive); every other observation
with ``output`` under ``[error]``. One ODE solution gives both.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import ClassVar

from bayespk.errors import SpecError
from bayespk.model.expressions import Expression, evaluation_order, parse
from bayespk.structural.diffeq import ODEModel, Solver

__all__ = ["AlgebraicModel", "UserModel", "USER_MODEL_KEYS", "python_model", "user_model"]

USER_MODEL_KEYS = ("states", "ode", "derived", "initial", "output", "pd_output", "doses", "solver", "prediction")
TIME = "t"
ALGEBRAIC_NAMES = ("t", "TAD", "DOSE")
_DOSING = re.compile(r"^(F|ALAG|R|D)(\d+)$")


@dataclass(frozen=True, eq=False)
class AlgebraicModel:
    """A closed-form prediction ``prediction(t, TAD, DOSE, parameters, covariates)`` (spec or Python).

    ``prediction`` is an :class:`~bayespk.model.expressions.Expression` or a
    callable ``f(p) -> tensor`` over a dict of per-observation tensors
    (parameters, covariates, ``t``, ``TAD``, ``DOSE``).
    """

    prediction: object
    parameters: tuple[str, ...]
    name: str = "algebraic"
    #: names of model quantities its equation may use besides parameters, covariates and ``t``
    quantities: ClassVar[tuple[str, ...]] = ("TAD", "DOSE")

    def evaluate(self, namespace: dict):
        if isinstance(self.prediction, Expression):
            return self.prediction.evaluate(namespace, "pytensor")
        return self.prediction(namespace)


@dataclass(frozen=True, eq=False)
class UserModel:
    """The ``[model]`` equations of a spec, parsed; :attr:`model` is the structural model they define.

    Two are equal when their equations are (models given in Python: when they are the same object).
    """

    raw: dict  # as written (stored back in spec.toml)
    model: ODEModel | AlgebraicModel
    names: frozenset[str]  # every free name the equations use (parameters, covariates, ...)
    covariates: tuple[str, ...] = field(default=())  # names that are neither parameters nor model quantities
    expressions: tuple[Expression, ...] = field(default=())  # every equation (to name one in an error)

    def __eq__(self, other) -> bool:
        if not isinstance(other, UserModel) or self.raw != other.raw:
            return False
        return "python" not in self.raw or self.model is other.model

    def __hash__(self) -> int:
        return hash(repr(sorted(self.raw.items())))

    @property
    def kind(self) -> str:
        return "ode" if isinstance(self.model, ODEModel) else "algebraic"


def user_model(raw: dict, parameters, name: str = "model", also_used=frozenset()) -> UserModel:
    """Parse the user-model keys of ``[model]`` (see the module docstring) for the given parameter names."""
    parameters = tuple(parameters)
    if "prediction" in raw:
        other = [k for k in raw if k in USER_MODEL_KEYS and k != "prediction"]
        if other == ["pd_output"]:
            raise SpecError("[model] pd_output: a second output needs the model written as an ODE system "
                            "(states with [model.ode]); an algebraic model has one prediction")
        if other:
            raise SpecError(f"[model] {other[0]}: an algebraic model (prediction = ...) has no states; "
                            "give either prediction or states with [model.ode]")
        text = raw["prediction"]
        expr = parse(text, "[model] prediction")
        names = expr.names
        covs = tuple(sorted(n for n in names if n not in parameters and n not in ALGEBRAIC_NAMES))
        _check_parameters_used(parameters, names | set(also_used), "the prediction")
        return UserModel(dict(raw), AlgebraicModel(expr, parameters=parameters, name=name), names, covs, (expr,))
    states = raw.get("states")
    if not isinstance(states, list) or not states or not all(isinstance(s, str) for s in states):
        raise SpecError("[model] states: expected a list of state names, e.g. [\"depot\", \"central\"] (or give "
                        "structure = one of the built-in structures, or prediction = an algebraic model)")
    for s in states:
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_]*", s):
            raise SpecError(f"[model] states: {s!r} is not a name (letters, digits, _; starting with a letter)")
        if s in parameters or s == TIME:
            raise SpecError(f"[model] states: {s!r} is also a parameter" if s in parameters
                            else "[model] states: 't' is time, not a state")
    ode = raw.get("ode")
    if not isinstance(ode, dict):
        raise SpecError("[model.ode]: expected one right-hand side per state, e.g. central = \"-CL/V*central\"")
    missing = [s for s in states if s not in ode]
    if missing:
        raise SpecError(f"[model.ode]: state {missing[0]} has no right-hand side (every state in [model] states "
                        f"needs one: {', '.join(states)})")
    extra = [k for k in ode if k not in states]
    if extra:
        raise SpecError(f"[model.ode] {extra[0]}: not a state ({', '.join(states)}); add it to [model] states")
    derived_raw = raw.get("derived", {})
    initial_raw = raw.get("initial", {})
    for table, d in (("derived", derived_raw), ("initial", initial_raw)):
        if not isinstance(d, dict):
            raise SpecError(f"[model.{table}]: expected a table of name = \"expression\"")
    for k in initial_raw:
        if k not in states:
            raise SpecError(f"[model.initial] {k}: not a state ({', '.join(states)})")
    for k in derived_raw:
        if k in states or k in parameters or k == TIME:
            raise SpecError(f"[model.derived] {k}: the name is already a {'state' if k in states else 'parameter'}"
                            if k != TIME else "[model.derived] t: 't' is time")
    if "output" not in raw:
        raise SpecError("[model] output: say what DV measures, e.g. output = \"central/V\" or the name of a "
                        "derived quantity")
    rhs = {s: parse(ode[s], f"[model.ode] {s}") for s in states}
    derived = {k: parse(v, f"[model.derived] {k}") for k, v in derived_raw.items()}
    initial = {k: parse(v, f"[model.initial] {k}") for k, v in initial_raw.items()}
    output = parse(raw["output"], "[model] output")
    pd_output = parse(raw["pd_output"], "[model] pd_output") if "pd_output" in raw else None
    outputs = (output,) if pd_output is None else (output, pd_output)
    used = set().union(*(e.names for e in (*rhs.values(), *derived.values(), *outputs)))
    # names that are neither parameters, states, derived nor t are data columns (checked against the data)
    covs = tuple(sorted(n for n in used | set().union(*(e.names for e in initial.values()), set())
                        if n not in parameters and n not in states and n not in derived and n != TIME))
    order = evaluation_order(derived, set(parameters) | set(states) | {TIME} | set(covs))
    for k, e in initial.items():
        bad = [n for n in e.names if n in states or n in derived or n == TIME]
        if bad:
            raise SpecError(f"[model.initial] {k} = \"{e.source}\": initial values may use parameters and "
                            f"covariates, not {bad[0]!r}")
    _check_parameters_used(parameters, used | set(also_used) | set().union(*(e.names for e in initial.values()),
                                                                            set()), "the equations", dosing=True)
    doses = _doses(raw.get("doses"), states)
    solver = _solver(raw.get("solver", {}))
    reads = tuple(p for p in parameters) + covs

    def quantities(t, y, p):
        ns = {**p, **y, TIME: t}
        for k in order:
            ns[k] = derived[k].evaluate(ns, "jax")
        return ns

    def rhs_fn(t, y, p):
        ns = quantities(t, y, p)
        return {s: rhs[s].evaluate(ns, "jax") for s in states}

    def output_fn(t, y, p):
        return output.evaluate(quantities(t, y, p), "jax")

    def pd_output_fn(t, y, p):
        return pd_output.evaluate(quantities(t, y, p), "jax")

    def initial_fn(p):
        return {k: e.evaluate(p, "jax") for k, e in initial.items()}

    model = ODEModel(states=tuple(states), rhs=rhs_fn, output=output_fn, parameters=reads,
                     initial=initial_fn if initial else None, doses=doses, solver=solver, name=name,
                     pd_output=pd_output_fn if pd_output is not None else None)
    expressions = (*rhs.values(), *derived.values(), *initial.values(), *outputs)
    return UserModel(dict(raw), model, frozenset(used), covs, expressions)


def python_model(model: ODEModel | AlgebraicModel, parameters, also_used=frozenset()) -> UserModel:
    """A model written in Python (the notebook door), checked against the spec's parameters.

    Names in ``model.parameters`` that are not parameters of the spec are data
    columns (covariates), checked when the model meets its data.
    """
    if not isinstance(model, (ODEModel, AlgebraicModel)):
        raise SpecError(f"structural: expected a bayespk.ODEModel or bayespk.AlgebraicModel, got "
                        f"{type(model).__name__}")
    parameters = tuple(parameters)
    reads = set(model.parameters)
    _check_parameters_used(parameters, reads | set(also_used), f"the model {model.name} (its parameters)",
                           dosing=isinstance(model, ODEModel))
    covs = tuple(n for n in model.parameters if n not in parameters and n not in ALGEBRAIC_NAMES)
    return UserModel({"python": model.name}, model, frozenset(reads), covs, ())


def _check_parameters_used(parameters, used, where: str, dosing: bool = False) -> None:
    for p in parameters:
        if p not in used and not (dosing and _DOSING.match(p)):
            raise SpecError(f"[parameters.{p}]: {p} is not used by {where}; remove it or use it "
                            f"(names used: {', '.join(sorted(used))})")


def _doses(raw, states) -> dict[int, str]:
    if raw is None:
        return {k + 1: s for k, s in enumerate(states)}
    if not isinstance(raw, dict) or not raw:
        raise SpecError("[model] doses: expected a table CMT = \"state\", e.g. doses = { 1 = \"depot\" }")
    out = {}
    for k, v in raw.items():
        if not str(k).isdigit() or int(k) < 1:
            raise SpecError(f"[model] doses: key {k!r} is not a CMT number (a whole number >= 1)")
        if v not in states:
            raise SpecError(f"[model] doses: CMT {k} enters {v!r}, which is not a state ({', '.join(states)})")
        out[int(k)] = v
    return out


def _solver(raw) -> Solver:
    if not isinstance(raw, dict):
        raise SpecError("[model.solver]: expected a table, e.g. { method = \"kvaerno5\", rtol = 1e-6 }")
    unknown = [k for k in raw if k not in Solver.__dataclass_fields__]
    if unknown:
        raise SpecError(f"[model.solver] {unknown[0]}: unknown key; allowed keys: "
                        f"{', '.join(Solver.__dataclass_fields__)}")
    return Solver(**raw)
