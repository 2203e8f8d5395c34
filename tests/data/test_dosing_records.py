"""NONMEM dose records in closed form against an independent ODE reference.

Every structure and record type (bolus, infusion, depot dose, ADDL, SS=1/SS=2,
constant steady-state infusion, EVID 2/3/4, RATE=-1/-2 with R1/D1, TLAG, F,
mixed routes) goes through the real user path: a DataFrame and a Spec become a
:class:`PopulationModel`, whose ``IPRED`` is compiled with pytensor.

The reference knows nothing of the closed forms: it integrates the compartment
amounts, ``dx/dt = A x + rate * e_central``, with ``scipy.integrate.solve_ivp``
(DOP853, rtol 1e-12) piecewise between events, processing the records in NONMEM
order with every dose given explicitly (ADDL repeats, lagged arrivals and
infusion ends are queued events; a reset empties the amounts and the queue).
A steady state is the state left by a long train of earlier doses given to an
empty system: one dosing interval is integrated with solve_ivp (from an empty
system with the dose, and from each unit state without), and that interval is
then applied dose after dose, as many times as it takes the slowest eigenvalue
to leave less than exp(-40) behind (55 intervals of 12 h for one compartment,
about 100 for two, about 1600 for three with V3 = 200). The most recent doses,
whose infusions or lagged arrivals may outlast an interval, are given explicitly.

The model functions are compiled once per (structure, dataset): every case is a
subject of one of two datasets per structure, ``base`` (no optional parameters)
and ``optional`` (D1 and R1; with a depot also TLAG and F), and the compiled
function is evaluated at whatever parameter values a test needs.
"""

from __future__ import annotations

import functools
import heapq
import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import pandas as pd
import pytensor
import pytest
from scipy.integrate import solve_ivp

from bayespk.model.population import PopulationModel
from bayespk.model.spec import Spec

RTOL = 1e-6  # required agreement with the reference
ATOL_REL = 1e-12  # absolute tolerance, relative to the largest concentration of the case (exact zeros)

PARAMS = {  # 1cmt: CL/V = 0.0625 is exactly exp(log CL) / exp(log V), so KA = CL/V is a true tie
    "1cmt_iv": {"CL": 2.0, "V": 32.0},
    "1cmt_oral": {"CL": 2.0, "V": 32.0, "KA": 0.9},
    "2cmt_iv": {"CL": 4.0, "V1": 25.0, "Q": 6.0, "V2": 60.0},
    "2cmt_oral": {"CL": 4.0, "V1": 25.0, "Q": 6.0, "V2": 60.0, "KA": 1.2},
    "3cmt_iv": {"CL": 3.0, "V1": 20.0, "Q": 5.0, "V2": 50.0, "Q3": 0.5, "V3": 200.0},
    "3cmt_oral": {"CL": 3.0, "V1": 20.0, "Q": 5.0, "V2": 50.0, "Q3": 0.5, "V3": 200.0, "KA": 0.5},
}
STRUCTURES = list(PARAMS)
ORAL = [s for s in STRUCTURES if s.endswith("oral")]
OPTIONAL = {"D1": 3.0, "R1": 40.0, "TLAG": 0.75, "F": 0.6}


def parameters(structure: str, kind: str) -> dict:
    """Parameter values of a (structure, dataset kind); TLAG and F only with a depot."""
    p = dict(PARAMS[structure])
    if kind == "optional":
        p |= {k: v for k, v in OPTIONAL.items() if "KA" in p or k in ("D1", "R1")}
    return p


# ---------------------------------------------------------------------------------- reference ODE


@dataclass(frozen=True)
class System:
    """dx/dt = A x (+ infusion rate into ``central``); amounts, not concentrations."""

    A: np.ndarray
    central: int
    depot: int | None
    v1: float

    @property
    def slowest(self) -> float:
        return float(np.min(-np.linalg.eigvals(self.A).real))


def ode_system(p: dict) -> System:
    """Depot -> central (KA); central <-> peripherals (Q/V); elimination CL/V1."""
    oral = "KA" in p
    v1 = p["V"] if "V" in p else p["V1"]
    peripherals = [(p[q], p[v]) for q, v in (("Q", "V2"), ("Q3", "V3")) if q in p]
    n = int(oral) + 1 + len(peripherals)
    c = int(oral)
    a = np.zeros((n, n))
    a[c, c] = -p["CL"] / v1
    for k, (q, v) in enumerate(peripherals, start=c + 1):
        a[c, c] -= q / v1
        a[k, c] += q / v1
        a[c, k] += q / v
        a[k, k] -= q / v
    if oral:
        a[0, 0] = -p["KA"]
        a[c, 0] = p["KA"]
    return System(a, c, 0 if oral else None, v1)


class Simulation:
    """Amounts advanced event by event; queued events are (time, seq, compartment, amount),
    a bolus into a compartment or, with compartment None, a change of the infusion rate."""

    def __init__(self, system: System, t0: float = 0.0, x0=None):
        self.sys = system
        self.t = t0
        self.x = np.zeros(len(system.A)) if x0 is None else np.array(x0, float)
        self.rate = 0.0
        self.queue: list = []
        self._seq = itertools.count()

    def at(self, time: float, cmt: int | None, amount: float) -> None:
        if time == self.t:
            self._apply(cmt, amount)
        else:
            assert time > self.t
            heapq.heappush(self.queue, (time, next(self._seq), cmt, amount))

    def advance(self, time: float, inclusive: bool = False) -> None:
        """To ``time``; queued events at exactly ``time`` wait unless ``inclusive`` (NONMEM:
        an additional dose at an observation's time comes after the observation)."""
        while self.queue and (self.queue[0][0] < time or (inclusive and self.queue[0][0] == time)):
            t, _, cmt, amount = heapq.heappop(self.queue)
            self._flow(t)
            self._apply(cmt, amount)
        self._flow(time)

    def add(self, other: Simulation) -> None:
        """Superpose another simulation at the same time (amounts, infusions, pending events)."""
        assert other.t == self.t
        self.x = self.x + other.x
        self.rate += other.rate
        for time, _, cmt, amount in other.queue:
            heapq.heappush(self.queue, (time, next(self._seq), cmt, amount))

    def reset(self) -> None:
        self.x[:] = 0.0
        self.rate = 0.0
        self.queue.clear()

    @property
    def concentration(self) -> float:
        return self.x[self.sys.central] / self.sys.v1

    def _apply(self, cmt, amount) -> None:
        if cmt is None:
            self.rate += amount
        else:
            self.x[cmt] += amount

    def _flow(self, time: float) -> None:
        if time > self.t:
            a, c, rate = self.sys.A, self.sys.central, self.rate

            def rhs(_, x):
                dx = a @ x
                dx[c] += rate
                return dx

            sol = solve_ivp(rhs, (self.t, time), self.x, method="DOP853", rtol=1e-12, atol=1e-15)
            assert sol.success
            self.x = sol.y[:, -1]
        self.t = time


def steady_state(system: System, give: Callable[[Simulation, float], None], period: float,
                 t0: float) -> Simulation:
    """The doses at ``t0 - period``, ``t0 - 2 period``, ... of a train started in an empty system
    long enough ago (remainder < exp(-40)): a Simulation at ``t0`` with their amounts, and their
    infusions still running and lagged arrivals still due (when those outlast ``period``).

    The most recent doses, whose events may reach past ``t0``, are given explicitly; each earlier
    one is complete by then, and their sum follows one dosing interval (integrated from every
    unit state) applied once per earlier dose."""
    one = Simulation(system)
    give(one, 0.0)
    m = max(1, math.ceil(max((e[0] for e in one.queue), default=0.0) / period))  # doses >= m: complete
    one.advance(m * period, inclusive=True)
    columns = []
    for e in np.eye(len(system.A)):
        free = Simulation(system, x0=e)
        free.advance(period, inclusive=True)
        columns.append(free.x)
    step = np.column_stack(columns)  # one interval without a dose
    older = np.zeros(len(system.A))
    for _ in range(math.ceil(40.0 / (system.slowest * period)) + 1):
        older = step @ older + one.x
    recent = Simulation(system, t0=t0 - (m - 1) * period)
    for j in range(m - 1, 0, -1):
        give(recent, t0 - j * period)
    recent.advance(t0)
    recent.x = recent.x + older
    return recent


def reference(p: dict, rows: list[dict]) -> np.ndarray:
    """Concentrations at the observation rows of one subject, NONMEM semantics, doses explicit."""
    system = ode_system(p)
    sim = Simulation(system, t0=rows[0]["TIME"])
    out = []
    for r in rows:
        t = r["TIME"]
        sim.advance(t)
        if r["EVID"] == 0:
            out.append(sim.concentration)
        elif r["EVID"] == 3:
            sim.reset()
        elif r["EVID"] in (1, 4):
            give, constant = _dose(system, p, r)
            if r["EVID"] == 4 or r["SS"] == 1:
                sim.reset()
            if r["SS"]:
                sim.add(steady_state(system, give, r["II"] if r["II"] > 0 else 24.0, t))
            for j in range(1 if constant else r["ADDL"] + 1):
                give(sim, t + j * r["II"])
    return np.array(out)


def _dose(system: System, p: dict, r: dict):
    """(give(sim, time), constant): one dose of record ``r``, with TLAG/F on depot doses,
    RATE -1/-2 through R1/D1; a constant infusion (SS, AMT 0) never stops."""
    amt = r["AMT"] or 0.0
    if r["CMT"] == 1 and system.depot is not None:
        lag, f = p.get("TLAG", 0.0), p.get("F", 1.0)
        return (lambda sim, time: sim.at(time + lag, system.depot, f * amt)), False
    rate = {-1: p.get("R1"), -2: amt / p["D1"] if "D1" in p else None}.get(r["RATE"], r["RATE"])
    if rate == 0:
        return (lambda sim, time: sim.at(time, system.central, amt)), False
    if amt == 0:
        return (lambda sim, time: sim.at(time, None, rate)), True

    def infuse(sim, time):
        sim.at(time, None, rate)
        sim.at(time + amt / rate, None, -rate)

    return infuse, False


# ---------------------------------------------------------------------------------- cases


@dataclass(frozen=True)
class Routes:
    central: int
    depot: int | None

    @property
    def default(self) -> int:
        return self.depot or self.central


def record(t, evid, amt=None, cmt=None, dv=None, rate=0.0, ii=0.0, addl=0, ss=0):
    return {"TIME": t, "AMT": amt, "DV": dv, "EVID": evid, "MDV": int(evid != 0), "CMT": cmt,
            "RATE": rate, "II": ii, "ADDL": addl, "SS": ss}


def dose(t, amt, cmt, rate=0.0, ii=0.0, addl=0, ss=0, evid=1):
    return record(t, evid, amt, cmt, rate=rate, ii=ii, addl=addl, ss=ss)


def obs(c: Routes, *times):
    return [record(t, 0, cmt=c.central, dv=1.0) for t in times]


def event(t, evid):
    """EVID 2 (other event) or 3 (reset)."""
    return record(t, evid)


@dataclass(frozen=True)
class Case:
    kind: str  # dataset: "base" or "optional"
    oral_only: bool
    rows: Callable[[Routes], list]
    ode: bool = True  # compared with the reference (False: checked otherwise)


CASES: dict[str, Case] = {
    "bolus": Case("base", False, lambda c: [
        *obs(c, 0.0), dose(0.0, 100.0, c.central), *obs(c, 0.0, 0.5, 2.0, 8.0, 24.0, 72.0)]),
    "infusion": Case("base", False, lambda c: [
        dose(0.0, 120.0, c.central, rate=40.0), *obs(c, 1.0, 3.0, 4.0, 12.0, 48.0)]),
    "depot": Case("base", True, lambda c: [
        dose(0.0, 100.0, c.depot), *obs(c, 0.0, 0.25, 1.0, 3.0, 12.0, 48.0)]),
    # 100 doses q12h (the last at 1188); observations at dose times see the trough
    "addl_long": Case("base", False, lambda c: [
        dose(0.0, 100.0, c.default, ii=12.0, addl=99),
        *obs(c, 12.0, 13.0, 600.0, 603.5, 1000.2, 1188.0, 1189.0, 1200.0, 1300.0)]),
    "addl_long_central": Case("base", True, lambda c: [
        dose(0.0, 100.0, c.central, ii=12.0, addl=99), *obs(c, 12.0, 13.0, 600.0, 1188.0, 1189.0, 1300.0)]),
    "infusion_addl": Case("base", False, lambda c: [
        dose(0.0, 200.0, c.central, rate=100.0, ii=8.0, addl=10),
        *obs(c, 1.0, 8.0, 9.0, 41.0, 80.0, 81.5, 100.0)]),
    "equal_time_order": Case("base", False, lambda c: [
        *obs(c, 0.0), dose(0.0, 100.0, c.central, ii=12.0, addl=2), *obs(c, 0.0, 12.0, 24.0, 30.0, 36.0),
        dose(36.0, 50.0, c.central), *obs(c, 36.0, 40.0)]),
    "ss1_bolus": Case("base", False, lambda c: [
        dose(0.0, 500.0, c.central), *obs(c, 10.0, 24.0), dose(24.0, 100.0, c.central, ii=12.0, ss=1),
        *obs(c, 24.0, 25.0, 30.0, 36.0, 60.0)]),
    "ss1_infusion": Case("base", False, lambda c: [
        dose(0.0, 100.0, c.central, rate=25.0, ii=12.0, ss=1), *obs(c, 0.0, 2.0, 4.0, 6.0, 12.0, 30.0)]),
    "ss1_depot": Case("base", True, lambda c: [
        dose(0.0, 100.0, c.depot, ii=12.0, ss=1), *obs(c, 0.0, 0.5, 3.0, 11.9, 24.0)]),
    "ss2": Case("base", False, lambda c: [
        dose(0.0, 300.0, c.default), *obs(c, 5.0), dose(10.0, 100.0, c.default, ii=24.0, ss=2),
        *obs(c, 10.0, 11.0, 20.0, 34.0, 50.0), dose(60.0, 50.0, c.central, rate=25.0, ii=12.0, ss=2),
        *obs(c, 61.0, 70.0)]),
    "ss_addl": Case("base", False, lambda c: [
        dose(0.0, 100.0, c.default, ii=12.0, addl=5, ss=1), *obs(c, 1.0, 12.0, 30.0, 60.0, 61.0, 100.0)]),
    "ss_addl_infusion": Case("base", False, lambda c: [
        dose(0.0, 100.0, c.central, rate=50.0, ii=12.0, addl=3, ss=1), *obs(c, 1.0, 12.0, 36.0, 37.0, 60.0)]),
    "ss_constant_infusion": Case("base", False, lambda c: [
        dose(0.0, 0.0, c.central, rate=5.0, ss=1), *obs(c, 0.0, 10.0, 50.0), dose(50.0, 100.0, c.central),
        *obs(c, 51.0, 100.0), event(120.0, 3), *obs(c, 121.0)]),
    "evid3_reset": Case("base", False, lambda c: [
        dose(0.0, 100.0, c.default, ii=12.0, addl=10), *obs(c, 30.0, 40.0), event(40.0, 3),
        *obs(c, 40.0, 41.0), dose(50.0, 100.0, c.default), *obs(c, 52.0, 60.0, 70.0)]),
    "evid3_during_infusion": Case("base", False, lambda c: [
        dose(0.0, 100.0, c.central, rate=10.0, ii=12.0, addl=3), *obs(c, 5.0), event(5.0, 3),
        *obs(c, 6.0, 13.0), dose(14.0, 50.0, c.default), *obs(c, 15.0, 30.0)]),
    "evid4_reset_dose": Case("base", False, lambda c: [
        dose(0.0, 100.0, c.central, rate=50.0, ii=12.0, addl=3), *obs(c, 13.0),
        dose(20.0, 50.0, c.default, evid=4), *obs(c, 20.0, 24.0, 30.0)]),
    "evid2_rows": Case("base", False, lambda c: [
        event(0.0, 2), dose(1.0, 100.0, c.default, ii=12.0, addl=2), event(13.0, 2), *obs(c, 13.5),
        event(25.0, 2), *obs(c, 25.0, 40.0)]),
    "mixed_routes": Case("base", True, lambda c: [
        dose(0.0, 100.0, c.depot, ii=12.0, addl=4), *obs(c, 1.0), dose(6.0, 50.0, c.central),
        *obs(c, 7.0, 12.0), dose(30.0, 80.0, c.central, rate=20.0), *obs(c, 31.0, 40.0, 70.0)]),
    # steady state vs 401 explicit doses ending at the same time (closed form vs closed form)
    "ss_train": Case("base", False, lambda c: [
        dose(9600.0, 100.0, c.default, ii=24.0, ss=1), *obs(c, 9600.5, 9606.0, 9623.5)], ode=False),
    "addl_train": Case("base", False, lambda c: [
        dose(0.0, 100.0, c.default, ii=24.0, addl=400), *obs(c, 9600.5, 9606.0, 9623.5)], ode=False),
    # optional parameters (no observation at an infusion's end, 3 h / 2.5 h: a kink in D1 and R1)
    "rate_m2_D1": Case("optional", False, lambda c: [
        dose(0.0, 100.0, c.central, rate=-2, ii=12.0, addl=3), *obs(c, 1.0, 3.2, 4.0, 13.0, 40.0, 60.0),
        dose(80.0, 100.0, c.central, rate=-2, ii=12.0, ss=1), *obs(c, 80.0, 81.0, 85.0, 92.0)]),
    "rate_m1_R1": Case("optional", False, lambda c: [
        dose(0.0, 100.0, c.central, rate=-1, ii=12.0, addl=3), *obs(c, 1.0, 2.7, 4.0, 13.0, 40.0, 60.0),
        dose(80.0, 100.0, c.central, rate=-1, ii=12.0, ss=1), *obs(c, 80.0, 81.0, 85.0, 92.0)]),
    # TLAG 0.75: observations between a dose time and its lagged arrival; a reset cancels a pending arrival
    "tlag_addl": Case("optional", True, lambda c: [
        dose(0.0, 100.0, c.depot, ii=12.0, addl=5), *obs(c, 0.5, 12.0, 12.3, 13.0, 60.5, 61.0, 80.0)]),
    "tlag_ss": Case("optional", True, lambda c: [
        dose(0.0, 100.0, c.depot, ii=12.0, ss=1), *obs(c, 0.0, 0.3, 2.0, 11.0, 12.3, 30.0)]),
    "tlag_ss_addl": Case("optional", True, lambda c: [
        dose(0.0, 100.0, c.depot, ii=12.0, addl=2, ss=1), *obs(c, 0.3, 12.3, 24.5, 36.5, 50.0),
        dose(60.0, 80.0, c.depot, ii=8.0, ss=2), *obs(c, 60.2, 61.0, 70.0)]),
    "tlag_reset": Case("optional", True, lambda c: [
        dose(0.0, 100.0, c.depot), *obs(c, 0.5), event(0.5, 3), *obs(c, 0.6, 2.0), dose(3.0, 100.0, c.depot),
        *obs(c, 3.5, 5.0)]),
    "f_mixed_routes": Case("optional", True, lambda c: [
        dose(0.0, 100.0, c.depot), *obs(c, 1.0), dose(2.0, 50.0, c.central), *obs(c, 3.0),
        dose(4.0, 100.0, c.central, rate=50.0), *obs(c, 5.0, 24.0)]),
}


def routes(structure: str) -> Routes:
    return Routes(central=2, depot=1) if structure.endswith("oral") else Routes(central=1, depot=None)


def cases_of(structure: str, kind: str) -> list[str]:
    oral = structure.endswith("oral")
    return [n for n, c in CASES.items() if c.kind == kind and (oral or not c.oral_only)]


# ---------------------------------------------------------------------------------- closed form


@dataclass
class Compiled:
    names: list[str]
    rows: dict[str, list[dict]]  # per case, its rows
    slices: dict[str, slice]  # per case, its observations in IPRED
    inputs: list
    output: object
    value: Callable

    def __call__(self, p: dict) -> np.ndarray:
        return self.value(*[np.log(p[k]) for k in self.names])

    @functools.cached_property
    def gradient(self) -> Callable:
        """d sum(IPRED) / d log-parameters."""
        g = pytensor.grad(self.output.sum(), self.inputs)
        return pytensor.function(self.inputs, g, on_unused_input="ignore")


@functools.cache
def compiled(structure: str, kind: str) -> Compiled:
    p = parameters(structure, kind)
    rows, slices, start = {}, {}, 0
    frame = []
    for i, name in enumerate(cases_of(structure, kind), start=1):
        rows[name] = CASES[name].rows(routes(structure))
        frame += [{"ID": i} | r for r in rows[name]]
        n = sum(r["EVID"] == 0 for r in rows[name])
        slices[name] = slice(start, start + n)
        start += n
    spec = Spec.from_dict({"model": {"structure": structure},
                           "parameters": {k: {"guess": v, "iiv": False} for k, v in p.items()},
                           "error": {"model": "additive"}})
    model, _ = PopulationModel(spec, pd.DataFrame(frame)).build_prediction()
    (out,) = model.replace_rvs_by_values([model["IPRED"]])
    inputs = [model.rvs_to_values[model[k]] for k in p]
    value = pytensor.function(inputs, out, on_unused_input="ignore")
    return Compiled(list(p), rows, slices, inputs, out, value)


def closed_form(structure: str, kind: str, p: dict) -> dict[str, np.ndarray]:
    m = compiled(structure, kind)
    ipred = m(p)
    return {name: ipred[s] for name, s in m.slices.items()}


def relative_error(actual, expected) -> float:
    """Largest |actual - expected| / |expected| over values above the absolute floor (values below
    it, exact zeros of undosed or reset subjects, must agree to the floor, else inf)."""
    expected = np.asarray(expected)
    floor = ATOL_REL * np.max(np.abs(expected))
    big = np.abs(expected) > floor
    err = np.abs(np.asarray(actual) - expected)
    if np.any(err[~big] > floor):
        return math.inf
    return float(np.max(err[big] / np.abs(expected[big]), initial=0.0))


def assert_matches_reference(actual, expected, what: str) -> float:
    err = relative_error(actual, expected)
    assert err <= RTOL, f"{what}: max relative error {err:.3g}\nclosed form {actual}\nreference   {expected}"
    return err


# ---------------------------------------------------------------------------------- tests

PAIRS = [(s, n) for s in STRUCTURES for n in CASES if n in cases_of(s, CASES[n].kind) and CASES[n].ode]


@pytest.mark.parametrize("structure, case", PAIRS, ids=[f"{s}-{n}" for s, n in PAIRS])
def test_record_matches_ode_reference(structure, case):
    kind = CASES[case].kind
    p = parameters(structure, kind)
    got = closed_form(structure, kind, p)[case]
    expected = reference(p, compiled(structure, kind).rows[case])
    assert np.all(np.isfinite(got))
    assert_matches_reference(got, expected, f"{structure} {case}")


def tie_ka(structure: str, which: int) -> float:
    """The ``which``-th smallest disposition eigenvalue (for 1cmt, CL/V exactly)."""
    p = PARAMS[structure]
    if structure == "1cmt_oral":
        return p["CL"] / p["V"]
    disposition = ode_system({k: v for k, v in p.items() if k != "KA"})
    return float(np.sort(-np.linalg.eigvals(disposition.A).real)[which])


TIE_CASES = {"base": ["addl_long", "ss1_depot", "ss2", "ss_addl", "mixed_routes", "evid2_rows"],
             "optional": ["tlag_addl", "tlag_ss", "tlag_ss_addl"]}
TIES = [("1cmt_oral", 0, 0.0), ("1cmt_oral", 0, 1e-7), ("1cmt_oral", 0, -1e-7), ("1cmt_oral", 0, 1e-4),
        ("1cmt_oral", 0, 3e-4), ("2cmt_oral", 0, 0.0), ("2cmt_oral", 1, 1e-7), ("3cmt_oral", 1, 0.0),
        ("3cmt_oral", 2, -1e-7)]


@pytest.mark.parametrize("structure, which, offset", TIES, ids=[f"{s}-lambda{w}-{o:g}" for s, w, o in TIES])
@pytest.mark.parametrize("kind", TIE_CASES)
def test_absorption_near_eigenvalue_matches_ode_reference(kind, structure, which, offset):
    """KA at (or within 1e-7, 1e-4, 3e-4 relative of) an eigenvalue, under ADDL, SS and TLAG. The
    ODE reference has no difficulty there and is run at the very same KA."""
    p = parameters(structure, kind) | {"KA": tie_ka(structure, which) * (1.0 + offset)}
    got = closed_form(structure, kind, p)
    rows = compiled(structure, kind).rows
    for case in TIE_CASES[kind]:
        assert_matches_reference(got[case], reference(p, rows[case]), f"{structure} {case} KA={p['KA']!r}")


@pytest.mark.parametrize("structure", ORAL)
def test_lag_longer_than_dosing_interval_matches_ode_reference(structure):
    """TLAG = 15 h with II = 12 and 8 h: arrivals of earlier doses (ADDL and steady state) still
    due after later dose times."""
    p = parameters(structure, "optional") | {"TLAG": 15.0}
    got = closed_form(structure, "optional", p)
    rows = compiled(structure, "optional").rows
    for case in ("tlag_addl", "tlag_ss", "tlag_ss_addl", "f_mixed_routes"):
        assert_matches_reference(got[case], reference(p, rows[case]), f"{structure} {case} TLAG=15")


@pytest.mark.parametrize("name, inside, outside", [("D1", 3.0, 15.0), ("R1", 40.0, 5.0)])
def test_modeled_infusion_longer_than_dosing_interval_is_excluded(name, inside, outside):
    """The closed form assumes each infusion of a repeated record ends before its next dose; for
    modeled durations (D1, AMT/R1) the likelihood model makes longer ones impossible (II = 12 h)."""
    flag = -2 if name == "D1" else -1
    rows = [dict(ID=1, TIME=0.0, AMT=100.0, DV=None, EVID=1, MDV=1, RATE=flag, II=12.0, ADDL=3)]
    rows += [dict(ID=1, TIME=t, DV=1.0, EVID=0, MDV=0) for t in (2.0, 13.0, 30.0)]
    spec = Spec.from_dict({"model": {"structure": "1cmt_iv"},
                           "parameters": {"CL": {"guess": 3.0, "iiv": False}, "V": {"guess": 30.0, "iiv": False},
                                          name: {"guess": inside, "iiv": False}},
                           "error": {"model": "additive"}})
    pm_model = PopulationModel(spec, pd.DataFrame(rows)).build()
    logp = pm_model.compile_logp()
    point = {"CL_log__": np.log(3.0), "V_log__": np.log(30.0), "sigma_add_log__": 0.0}
    assert np.isfinite(logp(point | {f"{name}_log__": np.log(inside)}))
    assert logp(point | {f"{name}_log__": np.log(outside)}) == -np.inf


SS_TRAIN = {s: PARAMS[s] | ({"V3": 100.0} if "V3" in PARAMS[s] else {}) for s in STRUCTURES}


@pytest.mark.parametrize("structure", STRUCTURES)
def test_steady_state_equals_400_explicit_doses(structure):
    """SS=1 q24h against 401 ADDL doses ending at the same time (closed form both). For 3cmt V3 is
    100 here: with V3 = 200 the slowest eigenvalue (0.0021/h) leaves ~1e-9 after 9600 h."""
    p = SS_TRAIN[structure]
    assert math.exp(-ode_system(p).slowest * 9600.0) < 1e-12
    got = closed_form(structure, "base", p)
    np.testing.assert_allclose(got["addl_train"], got["ss_train"], rtol=1e-9, atol=0)


# compiling the gradient of the two- and three-compartment graphs takes 10-40 s each (2 cores)
GRADIENT_POINTS = [
    pytest.param(s, tie, marks=[pytest.mark.slow] if s != "1cmt_oral" else [],
                 id=f"{s}-{'generic' if tie is None else f'KA=lambda{tie}'}")
    for s, tie in [(s, None) for s in ORAL] + [("1cmt_oral", 0), ("2cmt_oral", 0), ("3cmt_oral", 1)]
]


@pytest.mark.parametrize("structure, tie", GRADIENT_POINTS)
def test_gradient_matches_finite_differences(structure, tie):
    """d sum(IPRED) / d log-parameters on the ADDL + SS + TLAG (+ D1, R1, F) dataset."""
    m = compiled(structure, "optional")
    p = parameters(structure, "optional")
    if tie is not None:
        p["KA"] = tie_ka(structure, tie)
    theta = np.log([p[k] for k in m.names])
    grad = np.array(m.gradient(*theta))
    assert np.all(np.isfinite(grad))
    h = 1e-5
    fd = np.empty_like(theta)
    for i in range(len(theta)):
        up, down = theta.copy(), theta.copy()
        up[i] += h
        down[i] -= h
        fd[i] = (m.value(*up).sum() - m.value(*down).sum()) / (2 * h)
    np.testing.assert_allclose(grad, fd, rtol=1e-5, atol=1e-9 * np.max(np.abs(fd)),
                               err_msg=f"{structure} d/dlog({', '.join(m.names)})")


LITERAL_TRAINS = {  # (record, parameters): a lagged depot dose; an infusion longer than II (D1 = 15)
    "tlag_depot": (dose(0.0, 100.0, 1, ii=12.0, ss=1), {}),
    "overlapping_infusion": (dose(0.0, 100.0, 2, rate=-2, ii=12.0, ss=1), {"D1": 15.0}),
}


@pytest.mark.slow
@pytest.mark.parametrize("train", LITERAL_TRAINS)
def test_steady_state_reference_equals_literal_dose_train(train):
    """The reference's steady state equals integrating each of 2000 earlier doses with solve_ivp
    (3cmt_oral, V3 = 200), running infusions and pending arrivals included."""
    record, extra = LITERAL_TRAINS[train]
    p = parameters("3cmt_oral", "optional") | extra
    system = ode_system(p)
    give, _ = _dose(system, p, record)
    literal = Simulation(system, t0=-12.0 * 2000)
    for j in range(2000, 0, -1):
        give(literal, -12.0 * j)
    literal.advance(0.0)
    shortcut = steady_state(system, give, 12.0, 0.0)
    np.testing.assert_allclose(literal.x, shortcut.x, rtol=1e-9)
    assert literal.rate == pytest.approx(shortcut.rate, rel=1e-12)
    events = [sorted((t, -1 if c is None else c, a) for t, _, c, a in sim.queue)
              for sim in (literal, shortcut)]
    np.testing.assert_allclose(*events, rtol=1e-12)
