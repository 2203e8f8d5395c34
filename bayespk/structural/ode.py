"""Fixed-step numerical integration (classical RK4), vectorized across subjects.

The one ODE solver of the project, for what has no closed form: PD models driven
by a concentration (effect compartment, indirect response), and linear PK whose
parameters change over time (time-varying covariates). Like the rest of
:mod:`bayespk.structural` it is pure math over arrays: :func:`integrate` runs on
numpy arrays (a Python loop over steps) and on pytensor tensors (one
``pytensor.scan`` over steps, differentiable, compiles with the C and the numba
backends), with the right-hand side written once for both.

Time grid (:class:`OdeGrid`, numpy, built once from the data)
    Per subject, the sorted union of the *required* times (``t0``, observation,
    dose, infusion start/stop and covariate-change times), every gap cut into
    ``ceil(gap / max_step)`` equal steps. Subjects are padded to a common number
    of steps with zero-length steps at the end (a zero-length step changes
    nothing). Every event lies on a node, so within a step the solution is smooth
    and RK4 keeps its fourth order; events act only at nodes:

    * a bolus is a *jump* added to the state at a node, before stepping from it;
    * a zero-order input (infusion) is a constant *input* rate over a step;
    * a time-varying parameter is constant over a step (a *per-step* parameter).

RK4 step from node ``t_i`` (state after its jump) over ``h_i``, with
``f(y, d) = rhs(y, d, params_i) + u_i``:

    k1 = f(y,            d(t_i))          d(t) = driver (e.g. plasma concentration)
    k2 = f(y + h/2 k1,   d(t_i + h/2))
    k3 = f(y + h/2 k2,   d(t_i + h/2))
    k4 = f(y + h k3,     d(t_{i+1}))
    y(t_{i+1}) = y + h/6 (k1 + 2 k2 + 2 k3 + k4)   (then the jump at t_{i+1} is added)

The global error is O(max_step^4): halving ``max_step`` divides it by ~16
(measured in ``tests/structural/test_ode.py``). Drivers are given, not computed: the caller
evaluates them at :attr:`OdeGrid.driver_times` (step start, midpoint, end),
typically from a closed-form concentration (:func:`closed_form_drivers`). A
driver at a step's end is the limit *from the left* (a bolus given at that node
belongs to the next step), at its start the limit from the right.

The right-hand side is ``rhs(y, driver, params) -> dy/dt``: ``y`` is a tuple
with one ``(n_subjects,)`` array per state and the result a sequence of the
same length, ``driver`` is ``(n_subjects, ...)`` (``None`` without drivers) and
``params`` a dict of ``(n_subjects,)`` values. Written with arithmetic (or
:func:`~bayespk.structural.compartments._ns` where a function is needed), one
definition serves numpy and pytensor. States are kept apart (not an
``(n_subjects, n_states)`` matrix) because indexing and stacking inside the
loop cost more than the arithmetic, gradient included. Time enters only
through the drivers (pass ``t`` itself as a driver if a right-hand side needs it).

Linear PK in amounts (:data:`PK_ODES`, keyed like
:data:`~bayespk.structural.STRUCTURES`, states in NONMEM ``CMT`` order: depot
first when there is one, then central, then peripherals):

    dA_depot/dt = -KA A_depot
    dA_c/dt     =  KA A_depot - CL/V1 A_c - sum_j (Q_j/V1 A_c - Q_j/V_j A_j)
    dA_j/dt     =  Q_j/V1 A_c - Q_j/V_j A_j          (j: (Q, V2), (Q3, V3))

(``V`` instead of ``V1`` for one compartment); concentration = ``A_c / V1``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from bayespk.structural.compartments import _ns, superpose

__all__ = ["PK_ODES", "LinearPK", "OdeGrid", "closed_form_drivers", "integrate", "linear_pk"]


@dataclass(frozen=True)
class OdeGrid:
    """Integration nodes of every subject, padded to a common number of steps.

    Build it with :meth:`build`. ``nodes[s, i]`` is the time of node ``i`` of
    subject ``s``; node ``n_real[s]`` is its last required time, the nodes after
    it repeat that time (zero-length padding steps).
    """

    nodes: np.ndarray  # (n_subjects, n_steps + 1)
    n_real: np.ndarray  # (n_subjects,) real (non-padding) steps per subject
    max_step: float

    @classmethod
    def build(cls, required_times: Sequence, max_step: float, t0: float = 0.0) -> OdeGrid:
        """Grid through every required time of every subject, no step above ``max_step``.

        ``required_times``: one 1-D array per subject (any order, duplicates
        allowed, all ``>= t0``); ``t0`` (the start of integration, where the
        initial state holds) is always a node. ``max_step`` may be ``inf`` (nodes
        at the required times only).
        """
        max_step = float(max_step)
        if not max_step > 0:  # also catches NaN
            raise ValueError(f"max_step must be > 0 (got {max_step})")
        if not np.isfinite(t0):
            raise ValueError(f"t0 must be finite (got {t0})")
        if len(required_times) == 0:
            raise ValueError("required_times is empty: give one array of times per subject")
        grids = []
        for s, times in enumerate(required_times):
            times = np.asarray(times, dtype=float).ravel()
            if not np.all(np.isfinite(times)):
                raise ValueError(
                    f"subject {s}: required times must be finite (got {times[~np.isfinite(times)][:5]})"
                )
            if np.any(times < t0):
                raise ValueError(
                    f"subject {s}: required times before t0 = {t0} ({np.sort(times[times < t0])[:5]}): the "
                    "integration starts at t0"
                )
            knots = np.unique(np.concatenate([[t0], times]))
            gaps = np.diff(knots)
            # ceil with a little slack, so that a gap of exactly k * max_step gives k steps
            n_sub = np.maximum(np.ceil(gaps / max_step * (1.0 - 1e-12)), 1).astype(int)
            pieces = [a + (b - a) * np.arange(n) / n for a, b, n in zip(knots[:-1], knots[1:], n_sub)]
            grids.append(np.concatenate([*pieces, knots[-1:]]))  # required times kept exactly
        n_real = np.array([len(g) - 1 for g in grids])
        nodes = np.array([np.pad(g, (0, n_real.max() - len(g) + 1), mode="edge") for g in grids])
        return cls(nodes=nodes, n_real=n_real, max_step=max_step)

    @property
    def n_subjects(self) -> int:
        return self.nodes.shape[0]

    @property
    def n_steps(self) -> int:
        return self.nodes.shape[1] - 1

    @property
    def h(self) -> np.ndarray:
        """Step lengths ``(n_subjects, n_steps)`` (0 for padding steps)."""
        return np.diff(self.nodes, axis=1)

    @property
    def driver_times(self) -> np.ndarray:
        """Times ``(n_subjects, n_steps, 3)`` where RK4 needs the drivers: step start, midpoint, end.

        The end column is to be evaluated as the limit from the left (see the
        module docstring); :func:`closed_form_drivers` does so for closed-form PK.
        """
        start, end = self.nodes[:, :-1], self.nodes[:, 1:]
        return np.stack([start, start + (end - start) / 2.0, end], axis=-1)

    def index(self, subject, times) -> np.ndarray:
        """Node indices of ``times`` (exact matches; the first node with that time).

        ``subject`` is one subject index or an integer array broadcasting with
        ``times`` (e.g. the subject of every observation), so that
        ``states[subject, grid.index(subject, times)]`` gathers states.
        """
        times = np.asarray(times, dtype=float)
        subject, times = np.broadcast_arrays(np.asarray(subject), times)
        if not np.issubdtype(subject.dtype, np.integer) or np.any(
            (subject < 0) | (subject >= self.n_subjects)
        ):
            raise ValueError(f"subject indices must be integers in [0, {self.n_subjects})")
        out = np.empty(times.shape, dtype=int)
        for s in np.unique(subject):
            sel = subject == s
            real = self.nodes[s, : self.n_real[s] + 1]  # strictly increasing
            i = np.minimum(np.searchsorted(real, times[sel]), len(real) - 1)
            missing = real[i] != times[sel]
            if np.any(missing):
                raise ValueError(
                    f"subject {s}: times {times[sel][missing][:5]} are not nodes of the ODE grid; "
                    "pass every time you need states at to OdeGrid.build(required_times=...)"
                )
            out[sel] = i
        return out

    def scatter(self, subject, times, values) -> np.ndarray:
        """``(n_subjects, n_steps + 1)`` array with ``values`` summed at the nodes of ``times``.

        For bolus doses: ``jumps[..., cmt] = grid.scatter(dose_subject, dose_time, amt)``.
        """
        subject, times, values = np.broadcast_arrays(
            np.asarray(subject), np.asarray(times, float), np.asarray(values, float)
        )
        out = np.zeros(self.nodes.shape)
        np.add.at(out, (subject, self.index(subject, times)), values)
        return out

    def step_rates(self, subject, start, stop, rate) -> np.ndarray:
        """``(n_subjects, n_steps)`` input rate per step: ``rate`` summed over the steps in [start, stop).

        For zero-order infusions (``stop = start + amt / rate``); ``start`` and
        ``stop`` must be nodes (required times).
        """
        subject, start, stop, rate = np.broadcast_arrays(
            np.asarray(subject), np.asarray(start, float), np.asarray(stop, float), np.asarray(rate, float)
        )
        i0, i1 = self.index(subject, start), self.index(subject, stop)
        if np.any(i1 < i0):
            raise ValueError("step_rates: an input stops before it starts")
        out = np.zeros((self.n_subjects, self.n_steps))
        steps = np.arange(self.n_steps)
        for s, a, b, r in zip(subject.ravel(), i0.ravel(), i1.ravel(), rate.ravel()):
            out[s] += np.where((steps >= a) & (steps < b), r, 0.0)
        return out


def closed_form_drivers(grid, dose_time, amt, rate, into_depot, dose_valid, contribution, params):
    """Concentration at ``grid.driver_times`` by superposing closed-form dose contributions.

    ``grid`` an :class:`OdeGrid` (``S`` subjects, ``N`` steps); dose
    arrays ``(S, D)`` (``dose_valid`` False on padding slots); ``contribution``
    a one-dose function such as
    :func:`~bayespk.structural.compartments.one_compartment` and ``params`` its
    parameter values after ``into_depot`` (each ``(S,)``, numpy or tensor).
    Start and midpoint count the doses given at or before the time, the end
    only those strictly before it (limit from the left). Returns ``(S, N, 3)``.

    Step ends are the next steps' starts, so contributions are evaluated once
    at the nodes and once at the midpoints (``(2N + 1) D`` per subject, not
    ``3 N D``); the left limit at a node drops the doses given at that node.
    """
    n = grid.n_steps
    times = np.concatenate([grid.nodes, grid.driver_times[:, :, 1]], axis=1)  # nodes, then midpoints
    dt = times[..., None] - np.asarray(dose_time, float)[:, None, :]  # (S, 2N + 1, D)
    valid = np.asarray(dose_valid, bool)[:, None, :]
    dose = [np.broadcast_to(np.asarray(a)[:, None, :], dt.shape) for a in (amt, rate, into_depot)]
    per_dose = [p[:, None, None] if getattr(p, "ndim", 0) else p for p in params]
    # dt >= 0 everywhere (masked entries too): no overflow, so no NaN in gradients
    contrib = contribution(np.maximum(dt, 0.0), *dose, *per_dose)
    right = superpose(contrib, valid & (dt >= 0))  # at or before: nodes then midpoints
    left = superpose(contrib[:, 1 : n + 1], valid & (dt[:, 1 : n + 1] > 0))  # strictly before, step ends
    xp = _ns(right)
    return xp.stack([right[:, :n], right[:, n + 1 :], left], axis=-1)


def _rk4_step(rhs, y, h, drv, params, inp, jump):
    """One RK4 step from the states ``y`` (a list of ``(S,)`` arrays) over ``h``, then the jumps."""

    def f(state, d):
        dy = rhs(state, d, params)
        return [a + b for a, b in zip(dy, inp)] if inp else list(dy)

    def axpy(a, k):  # y + a k, state by state
        return [yi + a * ki for yi, ki in zip(y, k)]

    d0, dm, d1 = drv
    k1 = f(y, d0)
    k2 = f(axpy(h / 2.0, k1), dm)
    k3 = f(axpy(h / 2.0, k2), dm)
    k4 = f(axpy(h, k3), d1)
    y_new = [yi + h / 6.0 * (a + 2.0 * b + 2.0 * c + d) for yi, a, b, c, d in zip(y, k1, k2, k3, k4)]
    return [yi if j is None else yi + j for yi, j in zip(y_new, jump)]


def integrate(rhs: Callable, y0, grid_h, drivers=None, params=None, jumps=None, inputs=None):
    """States at every node, ``(n_subjects, n_steps + 1, n_states)``, by RK4 (jumps included).

    Parameters
    ----------
    rhs : callable
        ``rhs(y, driver, params)`` -> ``dy/dt``: ``y`` is a tuple with one
        ``(n_subjects,)`` array per state, the result a sequence of the same
        length (see the module docstring).
    y0 : array or tensor (n_subjects, n_states)
        State at the first node, before its jump.
    grid_h : ndarray (n_subjects, n_steps)
        Step lengths, :attr:`OdeGrid.h`.
    drivers : array or tensor (n_subjects, n_steps, 3, ...), optional
        Exogenous values at step start, midpoint and end; ``rhs`` receives
        ``driver[:, i, k]`` of shape ``(n_subjects, ...)``.
    params : dict, optional
        Name -> per-subject ``(n_subjects,)`` (or scalar) values, or per-step
        ``(n_subjects, n_steps)`` values (piecewise constant, e.g. a
        time-varying covariate effect; value ``[s, i]`` holds on step ``i``).
    jumps : array or tensor (n_subjects, n_steps + 1, n_states), optional
        Added to the state at each node before stepping from it (bolus doses).
    inputs : array or tensor (n_subjects, n_steps, n_states), optional
        Constant input rate on each step, added to ``dy/dt`` (infusions).

    With any pytensor argument the result is a pytensor tensor built with one
    ``pytensor.scan`` (one recurrent ``(n_subjects,)`` output per state: no
    indexing or stacking inside the loop, which keeps its gradient cheap);
    otherwise a numpy array. States whose numpy ``jumps`` / ``inputs`` are all
    zero get none inside the loop.
    """
    params = dict(params or {})
    h = np.asarray(grid_h, dtype=float)
    if h.ndim != 2 or np.any(h < 0) or not np.all(np.isfinite(h)):
        raise ValueError("grid_h must be an (n_subjects, n_steps) array of finite steps >= 0 (OdeGrid.h)")
    n_sub, n_steps = h.shape
    for name, arr, lead in (
        ("y0", y0, (n_sub,)),
        ("drivers", drivers, (n_sub, n_steps, 3)),
        ("jumps", jumps, (n_sub, n_steps + 1)),
        ("inputs", inputs, (n_sub, n_steps)),
    ):
        _check_shape(name, arr, lead, ndim=None if name == "drivers" else len(lead) + 1)
    per_step = {}
    for name, v in params.items():
        ndim = getattr(v, "ndim", np.ndim(v))
        if ndim == 2:
            _check_shape(f"params[{name!r}]", v, (n_sub, n_steps), ndim=2)
            per_step[name] = v if hasattr(v, "ndim") else np.asarray(v, float)
        elif ndim > 2:
            raise ValueError(
                f"params[{name!r}] must be per subject (n_subjects,) or per step "
                f"(n_subjects, n_steps); got {ndim} dimensions"
            )
    fixed = {k: v for k, v in params.items() if k not in per_step}
    xp = _ns(y0, drivers, jumps, inputs, *params.values())
    if xp is np:
        y0, drivers, jumps, inputs = (
            None if a is None else np.asarray(a, float) for a in (y0, drivers, jumps, inputs)
        )
    n_states = _n_states(y0)

    def by_state(arr):
        """Per-state slices of jumps / inputs; None for a state with nothing in it (numpy zeros)."""
        if arr is None:
            return [None] * n_states
        return [
            None if isinstance(arr, np.ndarray) and not arr[..., i].any() else arr[..., i]
            for i in range(n_states)
        ]

    jump_s, input_s = by_state(jumps), by_state(inputs)
    start = [y0[:, i] if jump_s[i] is None else y0[:, i] + jump_s[i][:, 0] for i in range(n_states)]
    has_input = any(u is not None for u in input_s)

    if xp is np:
        y, out = start, [np.stack(start, axis=-1)]
        for i in range(n_steps):
            step_params = {**fixed, **{k: v[:, i] for k, v in per_step.items()}}
            drv = [None] * 3 if drivers is None else [drivers[:, i, k] for k in range(3)]
            inp = [0.0 if u is None else u[:, i] for u in input_s] if has_input else None
            jump = [None if j is None else j[:, i + 1] for j in jump_s]
            y = _rk4_step(rhs, y, h[:, i], drv, step_params, inp, jump)
            out.append(np.stack(y, axis=-1))
        return np.stack(out, axis=1)

    import pytensor
    import pytensor.tensor as pt

    # scan iterates over the leading axis: every sequence gets the step axis first
    seqs = {"h": pt.as_tensor_variable(h.T)}
    if drivers is not None:
        d = pt.as_tensor_variable(drivers)
        seqs.update({f"d{k}": pt.moveaxis(d[:, :, k], 1, 0) for k in range(3)})
    for prefix, parts, first in (("u", input_s, 0), ("j", jump_s, 1)):
        for i, a in enumerate(parts):
            if a is not None:
                seqs[f"{prefix}{i}"] = pt.as_tensor_variable(a)[:, first:].T
    for k, v in per_step.items():
        seqs["p:" + k] = pt.as_tensor_variable(v).T
    consts = {k: pt.as_tensor_variable(v) for k, v in fixed.items()}
    seq_names, const_names = list(seqs), list(consts)

    def step(*args):
        s = dict(zip(seq_names, args[: len(seq_names)]))
        y = list(args[len(seq_names) : len(seq_names) + n_states])
        c = dict(zip(const_names, args[len(seq_names) + n_states :]))
        step_params = {**c, **{k[2:]: v for k, v in s.items() if k.startswith("p:")}}
        inp = [s.get(f"u{i}", 0.0) for i in range(n_states)] if has_input else None
        y_new = _rk4_step(
            rhs,
            y,
            s["h"],
            [s.get(f"d{k}") for k in range(3)],
            step_params,
            inp,
            [s.get(f"j{i}") for i in range(n_states)],
        )
        return [fixed_shape(a) for a in y_new]

    def fixed_shape(a):
        # every state (S,) with S static, inside and outside the loop: with S == 1 a state
        # would otherwise be broadcastable in one place and not in the other, which scan
        # (and its gradient) refuses
        return pt.specify_shape(pt.as_tensor_variable(a).astype("float64"), (n_sub,))

    start = [fixed_shape(a) for a in start]
    ys = pytensor.scan(
        step,
        sequences=list(seqs.values()),
        outputs_info=start,
        non_sequences=list(consts.values()),
        n_steps=n_steps,
        return_list=True,
        return_updates=False,
    )
    return pt.stack([pt.concatenate([a[None], b], axis=0).T for a, b in zip(start, ys)], axis=-1)


def _n_states(y0) -> int:
    """Number of states: the second dimension of ``y0``, which must be known to build the loop."""
    n = (getattr(getattr(y0, "type", None), "shape", None) or np.shape(y0))[1]
    if n is None:
        raise ValueError(
            "y0 must have a static number of states (second dimension) to build the scan; "
            "build it with pt.stack([...], axis=-1) or give a numpy array"
        )
    return int(n)


def _check_shape(name, arr, lead, ndim=None):
    """Refuse an array whose known dimensions do not match the grid (``ndim`` None: any trailing axes)."""
    if arr is None:
        return
    shape = tuple(getattr(getattr(arr, "type", None), "shape", None) or np.shape(arr))
    if (
        len(shape) < len(lead)
        or (ndim is not None and len(shape) != ndim)
        or any(got is not None and got != want for got, want in zip(shape, lead))
    ):
        want = ", ".join(map(str, lead)) + (", ..." if ndim is None else ", n_states" * (ndim - len(lead)))
        raise ValueError(
            f"{name} has shape {tuple('?' if d is None else d for d in shape)}; expected "
            f"({want}) (n_subjects, n_steps as in grid_h)"
        )


@dataclass(frozen=True)
class LinearPK:
    """A linear mammillary PK model as an ODE in amounts (see the module docstring).

    States ``[depot,] central, peripheral...`` (NONMEM ``CMT`` order: state
    ``i`` is ``CMT i + 1``); ``parameters`` as in
    :data:`bayespk.structural.STRUCTURES`; any of them may be per step.
    """

    name: str
    parameters: tuple[str, ...]
    n_states: int
    central: int  # state index of the central compartment
    volume: str  # parameter giving the central volume
    rhs: Callable

    def concentration(self, y, params):
        """Central concentration from states ``y`` (``(..., n_states)``, as :func:`integrate` returns)."""
        return y[..., self.central] / params[self.volume]


def linear_pk(n_peripheral: int, depot: bool) -> LinearPK:
    """The mammillary model with ``n_peripheral`` (0, 1, 2) peripheral compartments, with or without depot."""
    if n_peripheral not in (0, 1, 2):
        raise ValueError(f"n_peripheral must be 0, 1 or 2 (got {n_peripheral})")
    peripherals = [("Q", "V2"), ("Q3", "V3")][:n_peripheral]
    c = 1 if depot else 0  # index of the central compartment
    volume = "V1" if n_peripheral else "V"

    def rhs(y, driver, p):
        a_c = y[c]
        d_central = -p["CL"] / p[volume] * a_c
        d = []
        if depot:
            absorbed = p["KA"] * y[0]
            d.append(-absorbed)
            d_central = d_central + absorbed
        d_peripheral = []
        for j, (q, v) in enumerate(peripherals):
            flow = p[q] / p[volume] * a_c - p[q] / p[v] * y[c + 1 + j]  # net central -> peripheral j
            d_central = d_central - flow
            d_peripheral.append(flow)
        return [*d, d_central, *d_peripheral]

    return LinearPK(
        name=f"{n_peripheral + 1}cmt_{'oral' if depot else 'iv'}",
        parameters=("CL", volume, *(x for pair in peripherals for x in pair), *(("KA",) if depot else ())),
        n_states=c + 1 + n_peripheral,
        central=c,
        volume=volume,
        rhs=rhs,
    )


#: Linear PK ODEs keyed like :data:`bayespk.structural.STRUCTURES`.
PK_ODES: dict[str, LinearPK] = {m.name: m for m in (linear_pk(n, d) for n in range(3) for d in (False, True))}
