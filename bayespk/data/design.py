"""The numeric layout a structural model is evaluated on.

A :class:`Design` turns a validated :class:`~bayespk.data.nonmem.Dataset` into
plain arrays: one entry per observation, and an ``(observation x dose record)``
layout holding, for every observation, the time since each of its subject's
dose records, the record's amount, rate, route, II, ADDL and SS, and a mask of
the records that reach it. ADDL repeats and steady state are *not* expanded
into doses: :func:`bayespk.structural.dosing.dose_record` sums them in closed
form. The model layer gathers individual parameters to this layout and sums
record contributions in one vectorized expression.

Ordering at equal times follows NONMEM: a record placed before an observation
record with the same TIME is seen by it; ADDL repeats that fall on an
observation time are given after that observation (``obs_strict``). A reset
(EVID 3, EVID 4, or a dose with SS=1) empties the system: records before it
no longer reach observations after it, and their pending ADDL doses are
cancelled.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayespk.data.nonmem import Dataset
from bayespk.errors import DataError
from bayespk.structural import Structure, record_timing
from bayespk.structural._xp import _ns, take
from bayespk.structural.dosing import _is_tensor, select

__all__ = ["Design"]


@dataclass
class Design:
    """Arrays for evaluating one structure on one dataset.

    ``n_obs`` observations, ``n_slots`` = most dose records any subject has.
    """

    subject_ids: np.ndarray  # (n_subjects,)
    obs_subject: np.ndarray  # (n_obs,) int index into subject_ids
    obs_time: np.ndarray  # (n_obs,)
    obs_dv: np.ndarray  # (n_obs,) NaN for prediction points
    obs_row: np.ndarray  # (n_obs,) source row numbers (0 for prediction points)
    obs_record: np.ndarray  # (n_obs,) position in the table of the record in effect (covariates, OCC)
    obs_strict: np.ndarray  # (n_obs,) bool: an observation record (False for prediction-grid points)
    obs_cens: np.ndarray  # (n_obs,) 0 none, 1 left-censored (BLQ), -1 right-censored
    obs_limit: np.ndarray  # (n_obs,) LLOQ for left-, limit for right-censored rows, else NaN
    dt: np.ndarray  # (n_obs, n_slots) time since the dose record, 0 where masked
    amt: np.ndarray  # (n_obs, n_slots)
    rate: np.ndarray  # (n_obs, n_slots) 0 bolus, > 0 infusion, -1/-2 modeled rate/duration
    into_depot: np.ndarray  # (n_obs, n_slots) bool
    ii: np.ndarray  # (n_obs, n_slots)
    addl: np.ndarray  # (n_obs, n_slots)
    ss: np.ndarray  # (n_obs, n_slots) bool: steady-state record
    mask: np.ndarray  # (n_obs, n_slots) bool: record given before the observation, not reset since

    @property
    def n_obs(self) -> int:
        return len(self.obs_time)

    @property
    def n_subjects(self) -> int:
        return len(self.subject_ids)

    @classmethod
    def from_dataset(
        cls,
        data: Dataset,
        structure: Structure | None,
        grid: np.ndarray | None = None,
        grid_subjects=None,
        rows: np.ndarray | None = None,
    ) -> "Design":
        """Build the layout for ``structure``.

        Parameters
        ----------
        data : Dataset
        structure : Structure or None
            None for a user-written model (no route checks: the model maps CMT to its states).
        grid : array, optional
            Evaluate at these times for every subject instead of at the
            observations (for individual-prediction curves).
        grid_subjects : list, optional
            With ``grid``: only these subjects' curves (all subjects keep their index).
        rows : bool array over ``data.table``, optional
            Which observation records to use (default: all; PK/PD models split
            PK and PD observations with it). The CMT check applies to PK rows only.
        """
        t = data.table
        if grid is None:
            used = (t.EVID == 0) & (t.MDV == 0)
            obs = t[used & (True if rows is None else rows)]
            if structure is not None and (rows is None or not (~np.asarray(rows) & used).any()):
                _check_obs_cmt(obs, structure)
            cens = obs.CENS.to_numpy(int)
            lloq = obs.LLOQ.where(obs.LLOQ.notna(), obs.DV).to_numpy(float)
            obs_dv = obs.DV.to_numpy(float)
            limit = np.where(cens == 1, lloq, np.where(cens == -1, obs_dv, np.nan))
            return cls._build(data, structure, obs.ID.to_numpy(), obs.TIME.to_numpy(float),
                              obs.index.to_numpy(float), obs_dv, obs.ROW.to_numpy(int), cens, limit)
        grid = np.asarray(grid, dtype=float)
        ids = data.subject_ids
        shown = ids if grid_subjects is None else [i for i in ids if i in set(grid_subjects)]
        obs_id = np.repeat(shown, len(grid))
        return cls.at(data, structure, obs_id, np.tile(grid, len(shown)))

    @classmethod
    def at(cls, data: Dataset, structure: Structure, ids, times, left=None) -> "Design":
        """Prediction points: subject ``ids[k]`` at ``times[k]``.

        A point sees the records at its own time (``left`` False, the default),
        or is the limit from the left, before them (``left`` True: for ODE
        drivers at the end of a step).
        """
        times = np.asarray(times, dtype=float)
        left = np.zeros(len(times), bool) if left is None else np.asarray(left, bool)
        n = len(times)
        design = cls._build(data, structure, np.asarray(ids), times, np.where(left, -np.inf, np.inf),
                            np.full(n, np.nan), np.zeros(n, int), np.zeros(n, int), np.full(n, np.nan))
        design.obs_strict = left.copy()
        return design

    @classmethod
    def _build(cls, data, structure, obs_id, obs_time, obs_order, obs_dv, obs_row, cens, limit) -> "Design":
        t = data.table
        doses = _dose_events(t, structure)
        ids = data.subject_ids
        index = {i: k for k, i in enumerate(ids)}
        obs_subject = np.array([index[i] for i in obs_id], dtype=int)
        obs_record = _record_in_effect(t, obs_id, obs_time, obs_order)
        rec = _per_subject(doses, ids, ("TIME", "ORDER", "AMT", "RATE", "II", "ADDL", "SS", "DEPOT"))
        resets = _per_subject(_reset_events(t), ids, ("TIME", "ORDER"))

        s = obs_subject
        t_obs, o_obs = obs_time[:, None], obs_order[:, None]
        mask = rec["valid"][s] & _before(rec["TIME"][s], rec["ORDER"][s], t_obs, o_obs)
        # the last reset before each observation; records before it no longer count
        r_before = resets["valid"][s] & _before(resets["TIME"][s], resets["ORDER"][s], t_obs, o_obs)
        last = np.where(r_before.any(axis=1), r_before.shape[1] - 1 - np.argmax(r_before[:, ::-1], axis=1), -1)
        has_reset = last >= 0
        r_time = np.where(has_reset, resets["TIME"][s, np.maximum(last, 0)], -np.inf)[:, None]
        r_order = np.where(has_reset, resets["ORDER"][s, np.maximum(last, 0)], -np.inf)[:, None]
        mask &= ~_before(rec["TIME"][s], rec["ORDER"][s], r_time, r_order)
        dt = np.where(mask, obs_time[:, None] - rec["TIME"][s], 0.0)
        return cls(
            subject_ids=np.asarray(ids),
            obs_subject=obs_subject,
            obs_time=obs_time,
            obs_dv=obs_dv,
            obs_row=obs_row,
            obs_record=obs_record,
            obs_strict=np.isfinite(obs_order),
            obs_cens=cens,
            obs_limit=limit,
            dt=dt,
            amt=rec["AMT"][s],
            rate=rec["RATE"][s],
            into_depot=rec["DEPOT"][s].astype(bool),
            ii=rec["II"][s],
            addl=rec["ADDL"][s],
            ss=rec["SS"][s] > 0,
            mask=mask,
        )

    def concentrations(self, structure: Structure, params: dict):
        """Central concentration at every observation, from per-observation parameters.

        ``params`` maps parameter names to arrays or tensors of shape ``(n_obs,)``
        (or ``(n_obs, 1)``). Optional parameters: ``TLAG`` and ``F`` act on depot
        doses, ``D1``/``R1`` replace the duration/rate of records with RATE -2/-1.
        Works on numpy arrays and pytensor tensors alike.

        Only the (observation, dose record) pairs where the record reaches the
        observation are evaluated (:attr:`pairs`), and each record type's
        expression is built only where the data hold that type (see
        :func:`~bayespk.structural.dosing.select`); the pairs are then summed
        per observation.
        """
        o, k = self.pairs
        g = {name: take(v[:, 0] if v.ndim == 2 else v, o) for name, v in params.items()}
        xp = _ns(*g.values())
        depot = self.into_depot[o, k]
        rate = self.rate[o, k]
        amt = self.amt[o, k]
        lag = select(depot, lambda: g["TLAG"], lambda: 0.0, xp) if "TLAG" in g else None
        lag = None if lag is None or (not _is_tensor(lag) and not np.any(lag)) else lag
        ii, ss = self.ii[o, k], self.ss[o, k]
        x, n_prev, active = record_timing(self.dt[o, k], ii, self.addl[o, k], ss, self.obs_strict[o], lag)
        if "F" in g:
            amt = amt * select(depot, lambda: g["F"], lambda: 1.0, xp)
        infusion = rate != 0  # RATE > 0, or a modeled rate (-1) or duration (-2)
        if "D1" in g:
            rate = select(self.rate[o, k] == -2, lambda: amt / g["D1"], lambda: rate, xp)
        if "R1" in g:
            rate = select(self.rate[o, k] == -1, lambda: g["R1"], lambda: rate, xp)
        contrib = structure.dose_contribution(x, amt, rate, depot, g, ii, n_prev, ss, infusion=infusion)
        contrib = select(active, lambda: contrib, lambda: 0.0, xp)
        return _sum_per_observation(contrib, o, self.n_obs, xp)

    @property
    def pairs(self) -> tuple[np.ndarray, np.ndarray]:
        """Observation and slot index of every dose record that reaches an observation (``mask``)."""
        return np.nonzero(self.mask)

    def last_dose(self) -> tuple[np.ndarray, np.ndarray]:
        """Per observation: the time after the most recent dose given before it (NONMEM's TAD) and that dose's
        amount, ADDL repeats included by the closed forms' rule (:func:`~bayespk.structural.dosing.record_timing`:
        a dose record placed before the observation at the same TIME counts, an ADDL repeat falling on its TIME
        comes after it; a reset clears every earlier dose). Before any dose in effect (before the first, or after a
        reset until the next): TIME and 0. No lag times."""
        if not self.dt.shape[1]:
            return np.asarray(self.obs_time, float), np.zeros(self.n_obs)
        strict = np.broadcast_to(self.obs_strict[:, None], self.dt.shape)
        x, _, active = record_timing(self.dt, self.ii, self.addl, self.ss, strict)
        since = np.where(self.mask & active, x, np.inf)
        last = np.argmin(since, axis=1)
        dosed = np.isfinite(since).any(axis=1)
        rows = np.arange(self.n_obs)
        return (np.where(dosed, since[rows, last], self.obs_time).astype(float),
                np.where(dosed, self.amt[rows, last], 0.0).astype(float))

    def first_dose_time(self) -> np.ndarray:
        """Per observation: True when no dose precedes it (prediction is exactly 0)."""
        return ~self.mask.any(axis=1)


def _sum_per_observation(values, obs, n_obs: int, xp):
    """Sum per-pair values into their observations (0 where none); no sum where each has one pair."""
    if len(obs) == n_obs and np.array_equal(obs, np.arange(n_obs)):
        return values * np.ones(n_obs) if np.ndim(values) == 0 else values
    if xp is np:
        return np.bincount(obs, weights=np.broadcast_to(values, obs.shape), minlength=n_obs)
    return take(xp.zeros(n_obs), obs).inc(values * np.ones(len(obs)))


def _dose_events(t: pd.DataFrame, structure: Structure) -> pd.DataFrame:
    """Dose records (EVID 1 and 4), one per row (ADDL not expanded), route resolved from CMT.

    ``structure`` None (a user-written model): every record, no route (the model maps CMT to its states).
    """
    d = t[t.EVID.isin([1, 4])].copy()
    if structure is None:
        d["DEPOT"] = False
        d["ORDER"] = d.index.astype(float)
        d["AMT"] = d.AMT.fillna(0.0)
        return d
    default_cmt = structure.depot_cmt or structure.central_cmt
    cmt = d.CMT.fillna(default_cmt)
    allowed = {structure.central_cmt} | ({structure.depot_cmt} if structure.depot_cmt else set())
    bad = ~cmt.isin(allowed)
    if bad.any():
        r = d[bad].iloc[0]
        raise DataError(
            f"row {int(r.ROW)}, column CMT: dose into CMT {r.CMT:g}, but structure "
            f"{structure.name} has compartments {sorted(allowed)} ({structure.description})"
        )
    d["DEPOT"] = (cmt == structure.depot_cmt).to_numpy() if structure.depot_cmt else False
    inf_depot = d.DEPOT & (d.RATE != 0)
    if inf_depot.any():
        r = d[inf_depot].iloc[0]
        raise DataError(
            f"row {int(r.ROW)}, column RATE: zero-order input into the absorption depot "
            f"(CMT {structure.depot_cmt}) is not supported; give infusions into CMT {structure.central_cmt}"
        )
    d["ORDER"] = d.index.astype(float)
    d["AMT"] = d.AMT.fillna(0.0)
    return d


def _reset_events(t: pd.DataFrame) -> pd.DataFrame:
    """Resets: EVID 3 and 4, and SS=1 doses; an EVID 4 / SS=1 reset comes just before its own dose."""
    r = t[(t.EVID == 3) | (t.EVID == 4) | (t.EVID.isin([1, 4]) & (t.SS == 1))]
    return pd.DataFrame({"ID": r.ID, "TIME": r.TIME, "ORDER": r.index.astype(float) - 0.5})


def _per_subject(events: pd.DataFrame, ids, columns) -> dict[str, np.ndarray]:
    """Events as (n_subjects, most events) arrays of ``columns``, padded, with a ``valid`` mask."""
    groups = [events[events.ID == i] for i in ids]
    width = max(1, max(len(g) for g in groups))
    out = {c: np.zeros((len(ids), width)) for c in columns}
    out["valid"] = np.zeros((len(ids), width), bool)
    for k, g in enumerate(groups):
        n = len(g)
        for c in columns:
            out[c][k, :n] = g[c].to_numpy(float)
        out["valid"][k, :n] = True
    return out


def _before(t_a, o_a, t_b, o_b):
    """Event a comes before event b: earlier time, or same time and earlier record order."""
    return (t_a < t_b) | ((t_a == t_b) & (o_a < o_b))


def _record_in_effect(t: pd.DataFrame, obs_id, obs_time, obs_order) -> np.ndarray:
    """Per observation, the position of the last record of its subject at or before it (LOCF)."""
    out = np.empty(len(obs_id), int)
    for i in pd.unique(obs_id):
        rows = np.flatnonzero(t.ID.to_numpy() == i)
        which = np.flatnonzero(obs_id == i)
        times = t.TIME.to_numpy()[rows]
        # last record with (TIME, position) <= (obs time, obs order); the first record if none
        k = np.searchsorted(times, obs_time[which], side="right") - 1
        exact = np.isfinite(obs_order[which])
        k = np.where(exact, np.searchsorted(rows, obs_order[which], side="right") - 1, k)
        out[which] = rows[np.maximum(k, 0)]
    return out


def _check_obs_cmt(obs: pd.DataFrame, structure: Structure) -> None:
    bad = obs.CMT.notna() & (obs.CMT != structure.central_cmt)
    if bad.any():
        r = obs[bad].iloc[0]
        raise DataError(
            f"row {int(r.ROW)}, column CMT: observation in CMT {r.CMT:g}, but structure "
            f"{structure.name} observes the central compartment, CMT {structure.central_cmt} "
            f"({structure.description})"
        )
