"""The structural part of a population model: one interface for every kind of model.

A :class:`Predictor` turns individual parameters into predictions of a model's
outputs: ``DV`` (concentrations; CAR-T: cellular levels) and, where the model
has a second output, ``DV_PD`` (the PD response).
:class:`~bayespk.model.population.PopulationModel` builds, predicts and
simulates every model through this interface, whatever its kind:

* ``points``: the designs, besides the observations, at which the predictor
  needs individual parameters (a model written as an ODE system: every record
  of every subject; the mechanistic CAR-T model: each subject at its infusion;
  a PD model with states: its driver points and each subject at baseline).
  The population model evaluates the parameters there (covariates, IIV, IOV)
  and hands them back in the same order.
* ``predict(at, points, design, output)``: one output at the points of
  ``design`` (the observations, or a time grid), from the parameters ``at``
  per point of ``design`` and those at ``points``.
* ``predict_outputs(at, points, designs)``: every output a fit observes at
  once (an ODE system is solved once for both outputs; a failed solve rejects
  the proposal instead of stopping the sampler).

The kinds: :class:`ClosedForm` (the linear compartment models of
:mod:`bayespk.structural`), :class:`PiecewiseCellKinetics` and
:class:`MechanisticCellKinetics` (CAR-T), :class:`Algebraic` and
:class:`ODESystem` (models written as equations in a spec or in Python), and
:class:`WithPD`, a built-in PD model (:mod:`bayespk.structural.pd`) on top of a
PK predictor. :func:`predictor` chooses one, once, when the model is set up;
each kind checks the dataset against its own rules then (one infusion per
CAR-T patient, dose compartments of an ODE system, ...).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt

from bayespk.data.design import Design
from bayespk.data.nonmem import id_label
from bayespk.data.schedule import Schedule
from bayespk.errors import DataError, SpecError
from bayespk.structural.cart import NO_ONSET, CellKinetics
from bayespk.structural.cart_ode import FIT_GRID, CellKineticsODE, ck_ode_nodes
from bayespk.structural.diffeq import ODEModel, ode_predictions
from bayespk.structural.ode import OdeGrid, integrate

__all__ = ["Algebraic", "ClosedForm", "MechanisticCellKinetics", "ODESystem", "PiecewiseCellKinetics", "Predictor",
           "WithPD", "predictor"]


class Predictor:
    """Predictions of a population model's outputs from individual parameters (see the module docstring)."""

    #: the outputs it predicts
    outputs: tuple[str, ...] = ("DV",)
    #: parameters that are fractions (logit-normal IIV, kept in (0, 1))
    unit_parameters: tuple[str, ...] = ()
    #: whether the second output can be predicted at any time (on a grid), not only at its observations
    pd_on_grid: bool = True
    #: the nutpie backend a fit uses where the spec says ``backend = "auto"``
    backend: str = "numba"
    #: a CAR-T cellular-kinetics model (time counts from the cell infusion)
    cell_kinetics: bool = False

    def __init__(self) -> None:
        self.points: list = []

    def predict(self, at: dict, points: list[dict], design: Design, output: str = "DV"):
        """``output`` at the points of ``design`` from parameters ``at`` (per point of ``design``) and
        ``points`` (per point of each of :attr:`points`)."""
        raise NotImplementedError

    def predict_outputs(self, at: dict[str, dict], points: list[dict], designs: dict[str, Design]) -> dict:
        """Every output in ``designs`` (name -> design) at once; ``at`` holds the parameters per output."""
        return {name: self.predict(at[name], points, d, name) for name, d in designs.items()}


# ---------------------------------------------------------------------- built-in structures
class _BuiltIn(Predictor):
    """A structure of the registry: its optional dosing parameters and the records that need them."""

    def __init__(self, model) -> None:
        super().__init__()
        self.structure = model.structure
        self.unit_parameters = tuple(getattr(self.structure, "unit_parameters", ()))
        _check_dosing_parameters(model)


class ClosedForm(_BuiltIn):
    """A linear compartment model: closed forms summed over each subject's dose records."""

    def __init__(self, model) -> None:
        super().__init__(model)
        used = self.structure.parameters + self.structure.optional_parameters  # not relation-only parameters
        self.names = [k for k in model.pk_parameters if k in used]

    def predict(self, at, points, design, output="DV"):
        return design.concentrations(self.structure, {k: at[k] for k in self.names})


class PiecewiseCellKinetics(_BuiltIn):
    """CAR-T cellular kinetics in closed form (expansion, contraction, persistence), from the infusion."""

    cell_kinetics = True

    def __init__(self, model) -> None:
        super().__init__(model)
        self.treatments = list(model.spec.treatments)
        self.infusion, self.onsets = _cell_infusions(model)

    def predict(self, at, points, design, output="DV"):
        t = np.where(design.mask[:, 0], design.dt[:, 0], -1.0)  # days since the infusion; < 0 before it
        onsets = self.onsets[design.obs_subject]
        multipliers = [at[tr.name] for tr in self.treatments]
        return self.structure.level(t, at, list(onsets.T), multipliers)


class MechanisticCellKinetics(_BuiltIn):
    """The mechanistic CAR-T model (ODE of effector and memory cells, tumor burden): per-subject parameters
    at the infusion, states integrated from it."""

    cell_kinetics = True

    def __init__(self, model) -> None:
        super().__init__(model)
        self.infusion, _ = _cell_infusions(model)
        ids = model.design.subject_ids
        self.points = [Design.at(model.data, self.structure, ids, self.infusion)]
        self.tumor = _tumor_burden(model, ids)

    def predict(self, at, points, design, output="DV"):
        s, p = self.structure, points[0]
        t_rel = design.obs_time - self.infusion[design.obs_subject]
        t_end = max(float(t_rel.max()), 0.0)
        fine = ck_ode_nodes(t_end, FIT_GRID["fine_until"], FIT_GRID["fine_step"])
        required = [np.r_[t_rel[(design.obs_subject == k) & (t_rel >= 0)], fine] for k in range(design.n_subjects)]
        grid = OdeGrid.build(required, max_step=FIT_GRID["max_step"], t0=0.0)
        node = grid.index(design.obs_subject, np.maximum(t_rel, 0.0))
        rates = {k: v for k, v in p.items() if k in s.parameters or k in s.constants}
        covariates = {"B0": self.tumor} | ({"N0": p["N0"]} if "N0" in p else {})
        states = integrate(s.rhs, s.initial(rates, covariates), grid.h, None, rates)
        return pt.where(t_rel >= 0, s.output(states[design.obs_subject, node]), 0.0)


# ---------------------------------------------------------------------- models written as equations
class Algebraic(Predictor):
    """A closed-form prediction written as an equation (or a Python function) of parameters, covariates,
    ``t``, ``TAD`` and ``DOSE``."""

    def __init__(self, model) -> None:
        super().__init__()
        self.user = model.user
        self.columns = model._columns

    def predict(self, at, points, design, output="DV"):
        ns = dict(at)
        for name, x in self.columns.items():
            ns[name] = x[design.obs_record]
        ns["t"] = design.obs_time
        ns["TAD"], ns["DOSE"] = design.last_dose()  # t itself and 0 before any dose
        return self.user.evaluate(ns) * pt.ones(design.n_obs)


@dataclass
class _Points:
    """Points to evaluate individual parameters at: subject and record of each (every record of a subject)."""

    obs_subject: np.ndarray
    obs_record: np.ndarray
    records: np.ndarray  # (n_subjects, n_records) positions in the table


class ODESystem(Predictor):
    """An ODE system written as equations (or in Python), solved by diffrax with NONMEM dosing semantics;
    parameters per record (time-varying covariates), a second output from the same solution."""

    backend = "jax"  # the solver is JAX: the whole log-density compiles to XLA

    def __init__(self, model) -> None:
        super().__init__()
        self.user = model.user
        self.outputs = ("DV", "DV_PD") if self.user.pd_output is not None else ("DV",)
        self.data = model.data
        self.estimated = set(model.spec.parameters)
        self.columns = model._columns
        positions = model.data.table.groupby("ID", sort=False).indices
        ids = model.design.subject_ids
        width = max(len(positions[i]) for i in ids)
        records = np.array([np.pad(positions[i], (0, width - len(positions[i])), mode="edge") for i in ids])
        self.records = _Points(np.repeat(np.arange(len(ids)), width), records.ravel(), records)
        self.points = [self.records]
        self._schedules: dict[tuple, tuple] = {}
        self._ops: dict = {}  # the solver operation per schedule, reused by every graph built on it
        # dose CMTs and records checked now, before anything is built
        self.schedule(*(d for d in (model.design, model.pd_design) if d is not None))

    def schedule(self, *designs: Design) -> Schedule:
        """The event schedule through the points of ``designs`` (one after the other; built once)."""
        key = tuple(id(d) for d in designs)
        if key not in self._schedules:
            cat = lambda f: np.concatenate([f(d) for d in designs])  # noqa: E731
            order = cat(lambda d: np.where(d.obs_strict, d.obs_record.astype(float), np.inf))
            m = self.user
            sched = Schedule.build(self.data, designs[0].subject_ids, m.dose_state, m.default_cmt,
                                   cat(lambda d: d.obs_subject), cat(lambda d: d.obs_time), order,
                                   what=f"the ODE model (states {', '.join(m.states)})")
            self._schedules[key] = (designs, sched)  # the designs are kept so that their ids stay unique
        return self._schedules[key][1]

    def solve(self, params: dict, designs: list[Design], second: list[bool]):
        """Predictions at the points of ``designs`` (one after the other) from per-record parameters, and
        the solver's ok flag. One solution gives them all: the points of a design whose ``second`` is True
        get the model's ``pd_output``."""
        m = self.user
        sched = self.schedule(*designs)
        mask = np.concatenate([np.full(d.n_obs, bool(s)) for d, s in zip(designs, second)])
        names = tuple(n for n in m.parameters if n in self.estimated)
        records = self.records.records
        n_s, n_r = records.shape
        values = pt.stack([pt.as_tensor(params[n]) * pt.ones(n_s * n_r) for n in names], axis=-1)
        covs = [n for n in m.parameters if n not in self.estimated]
        cov = (np.stack([self.columns[c][records] for c in covs], axis=-1) if covs
               else np.zeros((n_s, n_r, 0)))
        return ode_predictions(m, sched, names, values.reshape((n_s, n_r, len(names))), cov,
                               mask if mask.any() else None, ops=self._ops)

    def predict(self, at, points, design, output="DV"):
        return self.solve(points[0], [design], [output == "DV_PD"])[0]

    def predict_outputs(self, at, points, designs):
        # one solution for every output (on the schedule checked when the model was set up)
        solved, ok = self.solve(points[0], list(designs.values()), [name == "DV_PD" for name in designs])
        # a failed solve (step limit, non-finite state) rejects the proposal instead of stopping
        pm.Potential("ode_solver_failed", pt.switch(ok > 0.5, 0.0, -np.inf))
        out, start = {}, 0
        for name, d in designs.items():
            out[name] = solved[start:start + d.n_obs]
            start += d.n_obs
        return out


# ---------------------------------------------------------------------- a built-in PD model on a PK predictor
class WithPD(Predictor):
    """A PD model of :mod:`bayespk.structural.pd` driven by a PK predictor's concentrations: direct, or
    with states integrated on a grid through the PD observations, doses and infusion ends."""

    outputs = ("DV", "DV_PD")
    pd_on_grid = False  # the PD states are integrated on the observations' grid

    def __init__(self, model, pk: Predictor) -> None:
        super().__init__()
        self.pk, self.pd = pk, model.pd
        self.unit_parameters, self.backend, self.cell_kinetics = pk.unit_parameters, pk.backend, pk.cell_kinetics
        self.pd_parameters = list(model.spec.pd_parameters)
        self.pd_design = model.pd_design
        self.ode = _pd_grid(model) if self.pd.needs_ode else None
        self.points = pk.points + ([self.ode["drivers"], self.ode["subjects"]] if self.ode else [])

    def predict(self, at, points, design, output="DV"):
        n = len(self.pk.points)
        c = self.pk.predict(at, points[:n], design)
        if output == "DV":
            return c
        if design is not self.pd_design:
            raise SpecError(f"the PD model {self.pd.name} is evaluated at its observations only")
        if self.ode is None:
            return self.pd.output(None, c, {k: at[k] for k in self.pd_parameters})
        drivers, subjects = points[n:]
        grid = self.ode["grid"]
        driver = self.pk.predict(drivers, points[:n], self.ode["drivers"]).reshape((grid.n_subjects, grid.n_steps, 3))
        p = {k: subjects[k] for k in self.pd_parameters}
        states = integrate(self.pd.rhs, self.pd.initial(p), grid.h, driver, p)
        y = states[design.obs_subject, self.ode["node"]]
        return self.pd.output(y, c, {k: v[design.obs_subject] for k, v in p.items()})


def predictor(model) -> Predictor:
    """The predictor of a :class:`~bayespk.model.population.PopulationModel` (set up: design, PD design,
    data columns of the equations); checks the data against the kind's rules."""
    if isinstance(model.user, ODEModel):
        return ODESystem(model)
    if model.user is not None:
        return Algebraic(model)
    kinds = ((CellKineticsODE, MechanisticCellKinetics), (CellKinetics, PiecewiseCellKinetics))
    pk = next((kind for structure, kind in kinds if isinstance(model.structure, structure)), ClosedForm)(model)
    return WithPD(model, pk) if model.pd is not None else pk


# ---------------------------------------------------------------------- setup and checks of each kind
def _check_dosing_parameters(model) -> None:
    """Optional dosing parameters and the records that need them must come together."""
    t = model.data.table
    spec, structure = model.spec, model.structure
    doses = t[t.EVID.isin([1, 4])]
    depot = model.design.into_depot.any() if model.design.n_obs else False
    needs = {"D1": (doses.RATE == -2, "RATE = -2 (modeled duration)"),
             "R1": (doses.RATE == -1, "RATE = -1 (modeled rate)")}
    for name, (rows, what) in needs.items():
        if rows.any() and name not in spec.parameters:
            raise SpecError(f"row {int(doses.ROW[rows].iloc[0])}, column RATE: {what} needs parameter {name} "
                            f"in [parameters.{name}]")
        if name in spec.parameters and not rows.any():
            raise SpecError(f"[parameters.{name}]: no dose record has {what}, so {name} cannot be estimated")
    for name in ("TLAG", "F"):
        if name in spec.parameters and not depot and name not in structure.parameters:
            raise SpecError(f"[parameters.{name}]: no dose goes into the depot (CMT "
                            f"{structure.depot_cmt}), so {name} cannot be estimated")


def _cell_infusions(model) -> tuple[np.ndarray, np.ndarray]:
    """CAR-T structures: per subject, the infusion time and the time of each treatment's first
    administration after it (``NO_ONSET`` if never given); checks the one-infusion layout."""
    t = model.data.table
    name = model.structure.name
    doses = t[t.EVID.isin([1, 4])]
    again = doses.duplicated("ID")
    if again.any():
        r = doses[again].iloc[0]
        raise DataError(f"row {int(r.ROW)}: a second dose record for ID {id_label(doses.ID[again].iloc[0])}; "
                        f"{name} models the kinetics after one cell infusion (the first dose "
                        "record), so give each patient exactly one")
    repeated = (doses.ADDL > 0) | (doses.SS > 0)
    if repeated.any():
        r = doses[repeated].iloc[0]
        raise DataError(f"row {int(r.ROW)}, column {'ADDL' if r.ADDL > 0 else 'SS'}: a cell infusion is a single "
                        f"dose; {name} does not use ADDL or SS")
    infusion = doses.set_index("ID").TIME.reindex(model.design.subject_ids)
    if infusion.isna().any():
        raise DataError(f"ID {id_label(infusion.index[infusion.isna()][0])}: no dose record; "
                        f"{name} counts time from the cell infusion (EVID 1 record)")
    onsets = np.full((len(infusion), len(model.spec.treatments)), NO_ONSET)
    for k, tr in enumerate(model.spec.treatments):
        if tr.column not in t.columns:
            raise DataError(f"column {tr.column}: [[treatments]] reads administrations from rows with "
                            f"{tr.column} > 0, but the dataset has no such column")
        x = pd.to_numeric(t[tr.column], errors="coerce")
        bad = t[tr.column].notna() & x.isna()
        if bad.any():
            r = t[bad].iloc[0]
            raise DataError(f"row {int(r.ROW)}, column {tr.column}: {r[tr.column]!r} is not a number "
                            "(> 0 marks an administration)")
        first = t.TIME[x > 0].groupby(t.ID[x > 0]).min()
        onsets[:, k] = (first.reindex(infusion.index) - infusion).fillna(NO_ONSET).to_numpy(float)
    return infusion.to_numpy(float), onsets


def _tumor_burden(model, ids) -> np.ndarray:
    """Mechanistic CAR-T: B0 per subject, baseline tumor burden over its reference (1 without ``[model] tumor``)."""
    if model.spec.tumor is None:
        return np.ones(len(ids))
    column, reference = model.spec.tumor
    tb = model.data.subject_covariate(column, needed_for="[model] tumor").reindex(ids)
    x = pd.to_numeric(tb, errors="coerce").to_numpy(float)
    if not np.all(x > 0):
        k = int(np.argmax(~(x > 0)))
        raise DataError(f"column {column}: baseline tumor burden {tb.iloc[k]!r} of ID {id_label(ids[k])} is not "
                        "a number > 0 ([model] tumor gives B0 = burden / reference)")
    return x / reference


def _pd_grid(model) -> dict:
    """A PD model with states: the grid through every PD observation, dose and infusion end; the driver
    points (step start, midpoint, end) and each subject at baseline."""
    t = model.data.table
    if (t.SS[t.EVID.isin([1, 4])] > 0).any():
        raise DataError(f"column SS: the PD model {model.spec.pd} integrates its states from baseline at the first "
                        "record, so steady-state dose records cannot be used with it; give the doses explicitly "
                        "(ADDL)")
    d, ids = model.pd_design, model.design.subject_ids
    t0 = float(t.TIME.min())
    required = []
    for k, i in enumerate(ids):
        obs = d.obs_time[d.obs_subject == k]
        doses = t[(t.ID == i) & t.EVID.isin([1, 4])]
        until = obs.max() if len(obs) else t0
        times = [obs]
        for _, r in doses.iterrows():
            starts = r.TIME + r.II * np.arange(int(r.ADDL) + 1)
            starts = starts[starts <= until]
            times.append(starts)
            if r.RATE > 0 and r.AMT > 0:
                ends = starts + r.AMT / r.RATE
                times.append(ends[ends <= until])
        required.append(np.concatenate(times))
    grid = OdeGrid.build(required, max_step=model.spec.ode_step, t0=t0)
    at = grid.driver_times  # (S, N, 3): step start, midpoint, end (limit from the left)
    ids_flat = np.repeat(ids, at.shape[1] * 3)
    left = np.tile([False, False, True], at.shape[0] * at.shape[1])
    drivers = Design.at(model.data, model.structure, ids_flat, at.reshape(-1), left=left)
    subjects = Design.at(model.data, model.structure, ids, np.full(len(ids), t0))
    node = grid.index(d.obs_subject, d.obs_time)
    return {"grid": grid, "drivers": drivers, "subjects": subjects, "node": node}
