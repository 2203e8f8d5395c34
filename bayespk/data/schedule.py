"""The event schedule an ODE model is integrated over: NONMEM records as padded numpy arrays.

Per subject, every event becomes a *node*: each record of the table (doses,
resets, observations, covariate changes), each ADDL repeat, the end of every
infusion, and every extra prediction point. Nodes are ordered by time and, at
equal times, by record order, as in NONMEM: a record placed before an
observation with the same TIME is seen by it, ADDL repeats falling on an
observation time come after it, a reset (EVID 3/4, SS=1) comes just before
its own dose. The solver (:mod:`bayespk.structural.diffeq`) applies each
node's action (reset, bolus, infusion start or stop) and integrates to the
next node; an observation reads the state at its node.

Dose times can depend on parameters (a lag time ``ALAG<cmt>`` moves a dose;
``F<cmt>``, a modeled rate ``R1`` or duration ``D1`` move an infusion's end),
so the arrays hold each node's *base* time and what may move it; the solver
computes the times and sorts the nodes itself. The static order below breaks
ties.

Arrays are ``(n_subjects, n_nodes)``, padded at the end with inert nodes at the
subject's last time.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayespk.data.nonmem import Dataset
from bayespk.errors import DataError
from bayespk.structural.events import (
    BOLUS,
    INFUSION_END,
    INFUSION_START,
    POINT,
    RECORD,
)

__all__ = ["Schedule"]

_LATE = 1e15  # order of ADDL repeats: after every record at the same time


@dataclass(frozen=True)
class Schedule:
    """Nodes of every subject (see the module docstring), built by :meth:`build`."""

    time: np.ndarray  # (S, K) base time
    order: np.ndarray  # (S, K) tie-break rank at equal times (static)
    kind: np.ndarray  # (S, K) RECORD / BOLUS / INFUSION_START / INFUSION_END / POINT
    state: np.ndarray  # (S, K) state a dose enters (-1: none)
    cmt: np.ndarray  # (S, K) the dose's CMT (0: none)
    amt: np.ndarray  # (S, K) dose amount
    rate: np.ndarray  # (S, K) infusion rate (RATE > 0) or code -1 / -2
    pair: np.ndarray  # (S, K) end node: index of its start node; start node: its end node (else -1)
    reset: np.ndarray  # (S, K) bool: the system is reset here (EVID 3/4, SS=1 before its dose)
    ss: np.ndarray  # (S, K) 0, 1 or 2 on a steady-state dose
    ii: np.ndarray  # (S, K) interval of a steady-state dose
    source: np.ndarray  # (S, K) slot (0..R-1) of the record a node comes from (a dose: its dose record)
    record: np.ndarray  # (S, K) slot (0..R-1) of the table record a node is, -1 for other nodes (the record
    #                     in effect there is the last record before it in time: time-varying parameters)
    records: np.ndarray  # (S, R) position in the table of each subject's records, padded with the last
    obs_subject: np.ndarray  # (n_obs,)
    obs_node: np.ndarray  # (n_obs,) node index (before sorting) of each observation

    @property
    def n_subjects(self) -> int:
        return self.time.shape[0]

    @property
    def n_nodes(self) -> int:
        return self.time.shape[1]

    @classmethod
    def build(cls, data: Dataset, subject_ids, dose_state: dict[int, int], default_cmt: int,
              obs_subject: np.ndarray, obs_time: np.ndarray, obs_order: np.ndarray,
              what: str = "the ODE model") -> "Schedule":
        """Nodes for observations ``(obs_subject, obs_time)``; ``obs_order`` is the table position of an
        observation record, ``+inf`` for a prediction point (it sees every record at its time).

        ``dose_state`` maps a dose's CMT to the index of the state it enters;
        ``default_cmt`` is used where CMT is missing.
        """
        t = data.table
        obs_subject = np.asarray(obs_subject, int)
        obs_time = np.asarray(obs_time, float)
        obs_order = np.asarray(obs_order, float)
        _check_doses(t, dose_state, default_cmt, what)
        ids = list(subject_ids)
        per_subject, obs_node = [], np.zeros(len(obs_time), int)
        horizon = np.full(len(ids), -np.inf)
        np.maximum.at(horizon, obs_subject, obs_time)
        positions = t.groupby("ID", sort=False).indices
        n_records = []
        for s, i in enumerate(ids):
            rows = t.iloc[positions[i]]
            nodes, obs_at = _subject_nodes(rows, dose_state, default_cmt, horizon[s],
                                           obs_time[obs_subject == s], obs_order[obs_subject == s])
            obs_node[obs_subject == s] = obs_at
            per_subject.append(nodes)
            n_records.append(len(rows))
        width = max(len(n["time"]) for n in per_subject)
        r_width = max(n_records)
        fields = {k: np.zeros((len(ids), width), dtype=v.dtype) for k, v in per_subject[0].items()}
        records = np.zeros((len(ids), r_width), int)
        for s, nodes in enumerate(per_subject):
            n = len(nodes["time"])
            for k, v in nodes.items():
                fields[k][s, :n] = v
            pad = slice(n, width)  # inert nodes at the last time, after everything
            fields["time"][s, pad] = nodes["time"].max()
            fields["order"][s, pad] = 2 * _LATE + np.arange(width - n)
            fields["kind"][s, pad] = RECORD
            fields["state"][s, pad] = -1
            fields["pair"][s, pad] = -1
            fields["record"][s, pad] = -1
            fields["source"][s, pad] = 0
            pos = positions[ids[s]]
            records[s, :len(pos)] = pos
            records[s, len(pos):] = pos[-1]
        return cls(**fields, records=records, obs_subject=obs_subject, obs_node=obs_node)


def _check_doses(t: pd.DataFrame, dose_state: dict[int, int], default_cmt: int, what: str) -> None:
    doses = t[t.EVID.isin([1, 4])]
    cmt = doses.CMT.fillna(default_cmt)
    bad = ~cmt.isin(list(dose_state))
    if bad.any():
        r = doses[bad].iloc[0]
        raise DataError(f"row {int(r.ROW)}, column CMT: dose into CMT {r.CMT:g}, but {what} takes doses into "
                        f"CMT {', '.join(f'{c} (state {s + 1})' for c, s in sorted(dose_state.items()))}")
    ss_inf = doses[(doses.SS > 0) & (doses.AMT.fillna(0) == 0) & (doses.RATE > 0)]
    if len(ss_inf):
        raise DataError(f"row {int(ss_inf.ROW.iloc[0])}, column SS: a constant infusion at steady state (AMT = 0, "
                        f"RATE > 0) is not supported by {what}; give the infusion from its start instead")
    ss_modeled = doses[(doses.SS > 0) & (doses.RATE < 0)]
    if len(ss_modeled):
        raise DataError(f"row {int(ss_modeled.ROW.iloc[0])}, column SS: steady state with a modeled rate or "
                        f"duration (RATE < 0) is not supported by {what}")


def _subject_nodes(rows: pd.DataFrame, dose_state, default_cmt, horizon, obs_time, obs_order):
    """One subject's nodes (unsorted) and the node of each of its observations."""
    nodes: list[tuple] = []  # (time, order, kind, state, cmt, amt, rate, pair, reset, ss, ii, record, source)
    node_of_position = {}
    for slot, (pos, r) in enumerate(zip(rows.index.to_numpy(), rows.itertuples(index=False))):
        evid = int(r.EVID)
        reset = evid in (3, 4) or (evid in (1, 4) and r.SS == 1)
        node_of_position[pos] = len(nodes)
        order = float(pos)
        if reset:  # the reset comes just before the record's own dose
            nodes.append((r.TIME, order - 0.5, RECORD, -1, 0, 0.0, 0.0, -1, True, 0, 0.0, slot, slot))
        if evid not in (1, 4):
            nodes.append((r.TIME, order, RECORD, -1, 0, 0.0, 0.0, -1, False, 0, 0.0, slot, slot))
            continue
        cmt = int(r.CMT) if pd.notna(r.CMT) else int(default_cmt)
        state = dose_state[cmt]
        amt = 0.0 if pd.isna(r.AMT) else float(r.AMT)
        rate = float(r.RATE)
        ss = int(r.SS)
        ii = float(r.II)
        times = r.TIME + ii * np.arange(int(r.ADDL) + 1)
        times = times[times <= horizon]
        if len(times) == 0:
            nodes.append((r.TIME, order, RECORD, -1, 0, 0.0, 0.0, -1, False, 0, 0.0, slot, slot))
            continue
        for k, when in enumerate(times):
            o = order if k == 0 else _LATE + order + k / (len(times) + 1)
            this_ss = ss if k == 0 else 0
            rec = slot if k == 0 else -1  # an ADDL repeat: the record in effect at its time
            if rate == 0:
                nodes.append((when, o, BOLUS, state, cmt, amt, 0.0, -1, False, this_ss, ii, rec, slot))
            else:
                start = len(nodes)
                nodes.append((when, o, INFUSION_START, state, cmt, amt, rate, start + 1, False, this_ss, ii, rec, slot))
                # end: base time is the start's (the solver adds the duration); ends before records at its time
                nodes.append((when, o + 1e-9, INFUSION_END, state, cmt, amt, rate, start, False, 0, 0.0, -1, slot))
    obs_at = np.zeros(len(obs_time), int)
    for j, (when, order) in enumerate(zip(obs_time, obs_order)):
        if np.isfinite(order) and int(order) in node_of_position:
            k = node_of_position[int(order)]
            obs_at[j] = k + (1 if nodes[k][8] else 0)  # skip a reset node placed before it
            continue
        obs_at[j] = len(nodes)
        before = int(np.searchsorted(rows.TIME.to_numpy(float), when, side="right")) - 1
        nodes.append((when, 3 * _LATE if order > 0 else -1.0, POINT, -1, 0, 0.0, 0.0, -1, False, 0, 0.0, -1,
                      max(before, 0)))
    cols = list(zip(*nodes))
    names = ("time", "order", "kind", "state", "cmt", "amt", "rate", "pair", "reset", "ss", "ii", "record", "source")
    types = (float, float, int, int, int, float, float, int, bool, int, float, int, int)
    return {k: np.asarray(c, dtype=ty) for k, c, ty in zip(names, cols, types)}, obs_at
