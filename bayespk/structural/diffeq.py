"""ODE models solved by diffrax (JAX), with NONMEM dosing, linked into the PyMC graph.

An :class:`ODEModel` is a right-hand side over named states, an output (what
an observation measures) and optionally initial conditions; it is written
once, either as Python callables over ``jax.numpy`` (the notebook door) or
from equations in a spec (:mod:`bayespk.model.user`, which builds the same
object). The model is solved per subject, vectorized across subjects with
``jax.vmap``, over the nodes of a :class:`~bayespk.data.schedule.Schedule`:

* at each node, in NONMEM order: a reset (EVID 3/4, SS=1) returns the states
  to their initial values (SS: to the steady-state trough, below), a bolus
  adds ``F<cmt> * AMT`` to its state, an infusion start or end changes the
  zero-order input of its state;
* between nodes the states are integrated by diffrax with adaptive steps
  (``PIDController(rtol, atol)``), an explicit method by default (Tsit5) or a
  stiff one (Kvaerno5), with the parameters of the record in effect;
* ``ALAG<cmt>`` delays doses into CMT ``<cmt>``; an infusion lasts
  ``F * AMT / RATE`` (``RATE = -1``: ``F * AMT / R<cmt>``; ``RATE = -2``:
  ``D<cmt>``), so node times depend on parameters and are sorted in the solve;
* steady state (SS=1, SS=2 adds to the current state) is reached by repeating
  the dosing interval ``ss_intervals`` times from the initial state; where the
  last interval still changes the trough by more than ``ss_rtol`` the proposal
  is rejected.

A solver failure (step limit reached, non-finite state) never raises: the
predictions come back with a flag that the model turns into a log-density of
``-inf``, a rejected proposal.

Parameters are passed per record, ``(n_subjects, n_records)`` each (the
parameters of a subject's records, constant between records); the output is
evaluated at every observation with the parameters in effect there.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from bayespk.errors import SpecError
from bayespk.structural.events import BOLUS, INFUSION_END, INFUSION_START, MODELED_DURATION, MODELED_RATE

if TYPE_CHECKING:  # the solver reads a schedule; bayespk.data builds it
    from bayespk.data.schedule import Schedule

__all__ = ["ODEModel", "Solver", "SOLVERS", "ode_predictions", "solve_outputs"]

SOLVERS = {"tsit5": "explicit Runge-Kutta 5(4), Tsitouras (non-stiff; the default)",
           "dopri5": "explicit Runge-Kutta 5(4), Dormand-Prince (non-stiff)",
           "kvaerno5": "implicit ESDIRK 5(4), Kvaerno (stiff systems: fast binding, TMDD)"}


@dataclass(frozen=True)
class Solver:
    """Solver settings: method (see :data:`SOLVERS`), tolerances, step limit, steady-state iteration."""

    method: str = "tsit5"
    rtol: float = 1e-6
    atol: float = 1e-9
    max_steps: int = 4096
    ss_intervals: int = 60
    ss_rtol: float = 1e-4

    def __post_init__(self):
        if self.method not in SOLVERS:
            raise SpecError(f"[model.solver] method: {self.method!r} is not one of {', '.join(SOLVERS)}")
        for k in ("rtol", "atol", "ss_rtol"):
            v = getattr(self, k)
            if not (isinstance(v, (int, float)) and 0 < v < 1):
                raise SpecError(f"[model.solver] {k}: a tolerance in (0, 1), got {v!r}")
        for k in ("max_steps", "ss_intervals"):
            v = getattr(self, k)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                raise SpecError(f"[model.solver] {k}: a whole number >= 1, got {v!r}")


@dataclass(frozen=True, eq=False)
class ODEModel:
    """A user-written ODE model.

    Parameters
    ----------
    states : sequence of str
        State names, in CMT order (a dose into CMT ``k`` enters the ``k``-th
        state unless ``doses`` says otherwise).
    rhs : callable
        ``rhs(t, y, p) -> dict``: ``y`` maps state names and ``p`` parameter
        (and covariate) names to scalars (``jax.numpy``); returns ``dy/dt`` per
        state (every state).
    output : callable
        ``output(t, y, p) -> scalar``: the model prediction an observation is
        compared with (e.g. ``y["central"] / p["V"]``).
    parameters : sequence of str
        Names ``rhs``/``output``/``initial`` read from ``p``: individual
        parameters of the spec and covariate columns of the data.
    initial : callable, optional
        ``initial(p) -> dict`` of initial values (missing states start at 0).
    doses : mapping, optional
        ``{CMT: state name}``.
    solver : Solver, optional
    name : str
    pd_output : callable, optional
        ``pd_output(t, y, p) -> scalar``: a second output, what the PD
        observations measure (``[model] pd_observations`` marks their rows;
        ``[pd_error]`` is their residual error model).
    """

    states: tuple[str, ...]
    rhs: Callable
    output: Callable
    parameters: tuple[str, ...]
    initial: Callable | None = None
    doses: Mapping[int, str] | None = None
    solver: Solver = field(default_factory=Solver)
    name: str = "ode"
    description: str = ""
    pd_output: Callable | None = None

    def __post_init__(self):
        object.__setattr__(self, "states", tuple(self.states))
        object.__setattr__(self, "parameters", tuple(self.parameters))
        if not self.states or len(set(self.states)) != len(self.states):
            raise SpecError(f"ODE model {self.name}: states must be distinct names, got {list(self.states)}")
        doses = dict(self.doses) if self.doses is not None else {k + 1: s for k, s in enumerate(self.states)}
        for cmt, state in doses.items():
            if state not in self.states:
                raise SpecError(f"ODE model {self.name}: doses: CMT {cmt} enters {state!r}, which is not a state "
                                f"({', '.join(self.states)})")
            if not isinstance(cmt, (int, np.integer)) or cmt < 1:
                raise SpecError(f"ODE model {self.name}: doses: CMT {cmt!r} is not a whole number >= 1")
        object.__setattr__(self, "doses", doses)

    @property
    def quantities(self) -> tuple[str, ...]:
        """Names of model quantities its equations may use besides parameters, covariates and ``t``."""
        return self.states

    @property
    def dose_state(self) -> dict[int, int]:
        """CMT -> index of the state it enters."""
        return {int(c): self.states.index(s) for c, s in self.doses.items()}

    @property
    def default_cmt(self) -> int:
        return min(self.doses)


def _diffrax_solver(method: str):
    import diffrax as dfx

    return {"tsit5": dfx.Tsit5, "dopri5": dfx.Dopri5, "kvaerno5": dfx.Kvaerno5}[method]()


def solve_outputs(model: ODEModel, schedule: Schedule, names: tuple[str, ...], values,
                  covariates: np.ndarray, second: np.ndarray | None = None):
    """Predictions at the schedule's observations (JAX).

    ``values``: ``(n_subjects, n_records, len(names))`` parameters per record
    (a JAX array); ``covariates``: ``(n_subjects, n_records, n_cov)`` numpy
    values of the covariate columns in ``model.parameters`` that are not in
    ``names``. Returns ``(predictions (n_obs,), ok)`` with ``ok`` False when
    any solve failed. ``second``: True for the observations of the model's
    ``pd_output`` (default: none).
    """
    import diffrax as dfx
    import jax
    import jax.numpy as jnp

    cov_names = tuple(n for n in model.parameters if n not in names)
    if covariates.shape[-1] != len(cov_names):
        raise ValueError(f"ODE model {model.name}: {len(cov_names)} covariate columns ({', '.join(cov_names)}) "
                         f"expected, got {covariates.shape[-1]}")
    all_names = tuple(names) + cov_names
    n_states = len(model.states)
    sv = model.solver
    solver = _diffrax_solver(sv.method)
    controller = dfx.PIDController(rtol=sv.rtol, atol=sv.atol)
    dose_params = {cmt: {p: all_names.index(f"{p}{cmt}") for p in ("F", "ALAG", "R", "D")
                         if f"{p}{cmt}" in all_names} for cmt in model.doses}

    def as_dict(p):
        return {n: p[k] for k, n in enumerate(all_names)}

    def rhs(t, y, args):
        p, r = args
        d = model.rhs(t, dict(zip(model.states, y)), as_dict(p))
        missing = [s for s in model.states if s not in d]
        if missing:
            raise SpecError(f"ODE model {model.name}: rhs returns no derivative for {', '.join(missing)}")
        return jnp.stack([jnp.asarray(d[s], dtype=y.dtype) for s in model.states]) + r

    term = dfx.ODETerm(rhs)

    def initial(p):
        if model.initial is None:
            return jnp.zeros(n_states)
        d = model.initial(as_dict(p))
        return jnp.stack([jnp.asarray(d.get(s, 0.0), dtype=float) * jnp.ones(()) for s in model.states])

    def advance(y, t0, t1, p, r):
        sol = dfx.diffeqsolve(term, solver, t0, t1, None, y, (p, r), stepsize_controller=controller,
                              saveat=dfx.SaveAt(t1=True), max_steps=sv.max_steps, throw=False)
        return sol.ys[-1], sol.result == dfx.RESULTS.successful

    # static arrays, per subject
    st = schedule
    cmt = st.cmt
    f_index = np.full(cmt.shape, -1)
    lag_index = np.full(cmt.shape, -1)
    rate_index = np.full(cmt.shape, -1)
    for c, idx in dose_params.items():
        at = cmt == c
        f_index[at] = idx.get("F", -1)
        lag_index[at] = idx.get("ALAG", -1)
        code = np.where(st.rate == MODELED_RATE, idx.get("R", -1), np.where(st.rate == MODELED_DURATION,
                                                                               idx.get("D", -1), -1))
        rate_index[at] = code[at]
    kind = st.kind
    is_dose = np.isin(kind, (BOLUS, INFUSION_START, INFUSION_END))
    has_ss = bool((st.ss > 0).any())
    n_ss = int((st.ss > 0).sum(axis=1).max()) if has_ss else 0
    ss_nodes = np.zeros((st.n_subjects, max(n_ss, 1)), int)
    ss_valid = np.zeros((st.n_subjects, max(n_ss, 1)), bool)  # padding slots do not count
    ss_slot = np.full(kind.shape, -1)
    for s in range(st.n_subjects):
        where = np.flatnonzero(st.ss[s] > 0)
        ss_nodes[s, :len(where)] = where
        ss_valid[s, :len(where)] = True
        ss_slot[s, where] = np.arange(len(where))
    static = dict(time=st.time, order=st.order, kind=kind, state=st.state, amt=st.amt, rate=st.rate,
                  pair=st.pair, reset=st.reset, ss=st.ss, ii=st.ii, record=st.record, source=st.source,
                  f_index=f_index,
                  lag_index=lag_index, rate_index=rate_index, is_dose=is_dose, ss_nodes=ss_nodes, ss_valid=ss_valid,
                  ss_slot=ss_slot, cov=covariates)
    static = {k: jnp.asarray(v) for k, v in static.items()}

    def per_node(x, index, default):
        return jnp.where(index >= 0, x[jnp.maximum(index, 0)], default)

    def one_subject(values, a):
        p_rec = jnp.concatenate([values, a["cov"]], axis=-1)  # (R, n_all)
        # the record in effect at every node (rows are in time order): filled in after sorting
        p_node = p_rec[a["source"]]  # (K, n_all): the record a node comes from (a dose: its dose record)
        rows = jnp.arange(p_node.shape[0])
        f = jnp.where(a["f_index"] >= 0, p_node[rows, jnp.maximum(a["f_index"], 0)], 1.0)
        lag = jnp.where((a["lag_index"] >= 0) & a["is_dose"], p_node[rows, jnp.maximum(a["lag_index"], 0)], 0.0)
        modeled = p_node[rows, jnp.maximum(a["rate_index"], 0)]
        amount = f * a["amt"]
        fixed = a["rate"] > 0
        duration = jnp.where(fixed, amount / jnp.where(fixed, a["rate"], 1.0),
                             jnp.where(a["rate"] == MODELED_RATE, amount / modeled, modeled))
        rate = jnp.where(fixed, a["rate"], jnp.where(a["rate"] == MODELED_RATE, modeled, amount / modeled))
        start = a["kind"] == INFUSION_START
        end = a["kind"] == INFUSION_END
        pair = jnp.maximum(a["pair"], 0)
        lag_end = jnp.where(end, lag[pair], lag)  # an end node inherits its start's lag ...
        time = a["time"] + jnp.where(end, lag_end + duration[pair], lag)  # ... and ends after its duration
        order = jnp.lexsort((a["order"], time))
        t_sorted = time[order]
        rec_sorted = jax.lax.cummax(a["record"][order])
        p_seg = p_rec[jnp.maximum(rec_sorted, 0)]  # (K, n_all) parameters in effect from each node on
        onehot = jax.nn.one_hot(jnp.maximum(a["state"], 0), n_states)
        bolus = jnp.where((a["kind"] == BOLUS)[:, None], amount[:, None] * onehot, 0.0)[order]
        d_rate = (jnp.where(start, rate, 0.0) - jnp.where(end, rate[pair], 0.0))[:, None] * onehot
        d_rate = d_rate[order]
        reset = a["reset"][order]
        y0 = initial(p_rec[0])
        ok0 = True
        if has_ss:
            troughs, ok_ss = _steady_state(a, p_node, amount, rate, duration, onehot)
            trough_sorted = troughs[jnp.maximum(a["ss_slot"], 0)][order]
            ss_sorted = a["ss"][order]
            ok0 = ok_ss
        t_next = jnp.concatenate([t_sorted[1:], t_sorted[-1:]])

        def step(carry, x):
            y, r, ok = carry
            if has_ss:
                t_k, t_n, p, b, dr, rs, ssk, trough = x
                y = jnp.where(ssk == 1, trough, jnp.where(rs, initial(p), y))
                y = jnp.where(ssk == 2, y + trough, y)
            else:
                t_k, t_n, p, b, dr, rs = x
                y = jnp.where(rs, initial(p), y)
            r = jnp.where(rs, 0.0, r) + dr
            y = y + b
            y_next, good = advance(y, t_k, t_n, p, r)
            return (y_next, r, ok & good), y

        xs = (t_sorted, t_next, p_seg, bolus, d_rate, reset)
        if has_ss:
            xs = xs + (ss_sorted, trough_sorted)
        (_, _, ok), y_sorted = jax.lax.scan(step, (y0, jnp.zeros(n_states), ok0), xs)
        inverse = jnp.argsort(order)
        return y_sorted[inverse], p_seg[inverse], t_sorted[inverse], ok

    def _steady_state(a, p_node, amount, rate, duration, onehot):
        """Pre-dose state at steady state for each SS node of a subject (slots of ``ss_nodes``)."""
        def trough(k):
            p = p_node[k]
            b = jnp.where(a["kind"][k] == BOLUS, amount[k], 0.0) * onehot[k]
            r = jnp.where(a["kind"][k] == INFUSION_START, rate[k], 0.0) * onehot[k]
            dur = jnp.where(a["kind"][k] == INFUSION_START, duration[k], 0.0)
            ii = a["ii"][k]

            def interval(_, carry):
                y, prev, ok = carry
                y1, g1 = advance(y + b, 0.0, dur, p, r)
                y2, g2 = advance(y1, dur, ii, p, jnp.zeros(n_states))
                return y2, y, ok & g1 & g2 & (dur <= ii)

            y_init = initial(p)
            y, prev, ok = jax.lax.fori_loop(0, sv.ss_intervals, interval, (y_init, y_init, True))
            change = jnp.max(jnp.abs(y - prev) / (jnp.abs(y) + sv.atol))
            return y, ok & (change <= sv.ss_rtol)

        ys, oks = jax.vmap(trough)(a["ss_nodes"])
        return ys, jnp.all(oks | ~a["ss_valid"])

    obs_s = jnp.asarray(schedule.obs_subject)
    obs_n = jnp.asarray(schedule.obs_node)

    def predict(values):
        if schedule.n_subjects == 1:
            # XLA compiles the solver vmapped over a batch of one about 9 times slower than over two (58 s
            # against 6.2 s for a Michaelis-Menten model with 5 doses, 2 cores): solve the subject twice
            values = jnp.concatenate([values, values])
            a = {k: jnp.concatenate([x, x]) for k, x in static.items()}
        else:
            a = static
        y, p, t, ok = jax.vmap(one_subject)(values, a)
        y_obs, p_obs, t_obs = y[obs_s, obs_n], p[obs_s, obs_n], t[obs_s, obs_n]
        def output(f):
            out = jax.vmap(lambda tt, yy, pp: f(tt, dict(zip(model.states, yy)), as_dict(pp)))(t_obs, y_obs, p_obs)
            return jnp.broadcast_to(jnp.asarray(out, dtype=float), obs_s.shape)

        out = output(model.output)
        if second is not None and np.any(second):
            out = jnp.where(jnp.asarray(second), output(model.pd_output), out)
        good = jnp.all(ok) & jnp.all(jnp.isfinite(out))
        return jnp.where(good, out, 0.0), good

    return predict(values)


def ode_predictions(model: ODEModel, schedule: Schedule, names: tuple[str, ...], values, covariates: np.ndarray,
                    second: np.ndarray | None = None, ops: dict | None = None):
    """:func:`solve_outputs` as a PyTensor operation (``pytensor.wrap_jax``): ``values`` is a
    ``(n_subjects, n_records, len(names))`` tensor. Returns ``(predictions, ok)``, ``ok`` 1.0 or 0.0.

    ``ops``: a dict the caller keeps (with ``schedule``) to reuse the operation, and so JAX's traced and
    compiled solver, in every graph built on the same schedule, parameters and covariates (the fit, then
    the predictions and simulations of a VPC, pcVPC, NPDE and GOF); without it each call traces anew.
    """
    import jax
    import pytensor.tensor as pt
    from pytensor import wrap_jax

    jax.config.update("jax_enable_x64", True)
    shape = (schedule.n_subjects, covariates.shape[1], len(names))
    x = pt.specify_shape(pt.as_tensor(values, dtype="float64"), shape)
    key = (id(schedule), names, covariates.shape, covariates.tobytes(),
           None if second is None else np.asarray(second).tobytes())
    if ops is not None and key in ops:
        return tuple(ops[key](x))

    @wrap_jax
    def solve(v):
        pred, ok = solve_outputs(model, schedule, names, v, covariates, second=second)
        return pred, ok.astype(v.dtype)

    pred, ok = solve(x)
    if ops is not None:
        ops[key] = pred.owner.op
    return pred, ok
