"""The numeric layout a structural model is evaluated on.

A :class:`Design` turns a validated :class:`~bayespk.data.nonmem.Dataset` into
plain arrays: one entry per observation, and for superposition an
``(observation x dose slot)`` layout holding, for every observation, the time
since each of its subject's doses, the dose amount, rate and route, and a mask
of the doses given before it. The model layer gathers individual parameters to
this layout and sums dose contributions in one vectorized expression.

Ordering at equal times follows NONMEM: a dose record placed before an
observation record with the same TIME is seen by it; ADDL repeats that fall on
an observation time are given after that observation.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

from bayespk.data.nonmem import Dataset
from bayespk.errors import DataError
from bayespk.structural import Structure

__all__ = ["Design"]


@dataclass
class Design:
    """Arrays for evaluating one structure on one dataset.

    ``n_obs`` observations, ``n_slots`` = most doses any subject received.
    """

    subject_ids: np.ndarray  # (n_subjects,)
    obs_subject: np.ndarray  # (n_obs,) int index into subject_ids
    obs_time: np.ndarray  # (n_obs,)
    obs_dv: np.ndarray  # (n_obs,) NaN for prediction points
    obs_row: np.ndarray  # (n_obs,) source row numbers (0 for prediction points)
    obs_cens: np.ndarray  # (n_obs,) 0 none, 1 left-censored (BLQ), -1 right-censored
    obs_limit: np.ndarray  # (n_obs,) LLOQ for left-, limit for right-censored rows, else NaN
    dt: np.ndarray  # (n_obs, n_slots) time since dose, 0 where masked
    amt: np.ndarray  # (n_obs, n_slots)
    rate: np.ndarray  # (n_obs, n_slots)
    into_depot: np.ndarray  # (n_obs, n_slots) bool
    mask: np.ndarray  # (n_obs, n_slots) bool: dose given before the observation

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
        structure: Structure,
        grid: np.ndarray | None = None,
        grid_subjects=None,
    ) -> "Design":
        """Build the layout for ``structure``.

        Parameters
        ----------
        data : Dataset
        structure : Structure
        grid : array, optional
            Evaluate at these times for every subject instead of at the
            observations (for individual-prediction curves).
        grid_subjects : list, optional
            With ``grid``: only these subjects' curves (all subjects keep their index).
        """
        t = data.table
        doses = _dose_events(t, structure)
        ids = data.subject_ids
        index = {i: k for k, i in enumerate(ids)}

        if grid is None:
            obs = t[(t.EVID == 0) & (t.MDV == 0)]
            _check_obs_cmt(obs, structure)
            obs_id = obs.ID.to_numpy()
            obs_time = obs.TIME.to_numpy(float)
            obs_order = obs.index.to_numpy(float)
            obs_dv = obs.DV.to_numpy(float)
            obs_row = obs.ROW.to_numpy(int)
            cens = obs.CENS.to_numpy(int)
            lloq = obs.LLOQ.where(obs.LLOQ.notna(), obs.DV).to_numpy(float)
            limit = np.where(cens == 1, lloq, np.where(cens == -1, obs_dv, np.nan))
        else:
            grid = np.asarray(grid, dtype=float)
            shown = ids if grid_subjects is None else [i for i in ids if i in set(grid_subjects)]
            obs_id = np.repeat(shown, len(grid))
            obs_time = np.tile(grid, len(shown))
            obs_order = np.full(len(obs_time), np.inf)  # after every dose record at that time
            obs_dv = np.full(len(obs_time), np.nan)
            obs_row = np.zeros(len(obs_time), int)
            cens = np.zeros(len(obs_time), int)
            limit = np.full(len(obs_time), np.nan)

        obs_subject = np.array([index[i] for i in obs_id], dtype=int)
        per_subject = [doses[doses.ID == i] for i in ids]
        n_slots = max(1, max(len(d) for d in per_subject))
        n_obs = len(obs_time)
        shape = (n_obs, n_slots)
        d_time = np.zeros((len(ids), n_slots))
        d_order = np.full((len(ids), n_slots), np.inf)
        d_amt = np.zeros((len(ids), n_slots))
        d_rate = np.zeros((len(ids), n_slots))
        d_depot = np.zeros((len(ids), n_slots), bool)
        d_valid = np.zeros((len(ids), n_slots), bool)
        for k, d in enumerate(per_subject):
            n = len(d)
            d_time[k, :n] = d.TIME
            d_order[k, :n] = d.ORDER
            d_amt[k, :n] = d.AMT
            d_rate[k, :n] = d.RATE
            d_depot[k, :n] = d.DEPOT
            d_valid[k, :n] = True

        s = obs_subject
        td = d_time[s]
        before = (td < obs_time[:, None]) | ((td == obs_time[:, None]) & (d_order[s] < obs_order[:, None]))
        mask = d_valid[s] & before
        dt = np.where(mask, obs_time[:, None] - td, 0.0)
        assert dt.shape == shape
        return cls(
            subject_ids=np.asarray(ids),
            obs_subject=obs_subject,
            obs_time=obs_time,
            obs_dv=obs_dv,
            obs_row=obs_row,
            obs_cens=cens,
            obs_limit=limit,
            dt=dt,
            amt=d_amt[s],
            rate=d_rate[s],
            into_depot=d_depot[s],
            mask=mask,
        )

    def first_dose_time(self) -> np.ndarray:
        """Per observation: True when no dose precedes it (prediction is exactly 0)."""
        return ~self.mask.any(axis=1)


def _dose_events(t: pd.DataFrame, structure: Structure) -> pd.DataFrame:
    """Dose records expanded by ADDL, with route resolved from CMT."""
    d = t[t.EVID == 1].copy()
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
    inf_depot = d.DEPOT & (d.RATE > 0)
    if inf_depot.any():
        r = d[inf_depot].iloc[0]
        raise DataError(
            f"row {int(r.ROW)}, column RATE: zero-order input into the absorption depot "
            f"(CMT {structure.depot_cmt}) is not supported; give infusions into CMT {structure.central_cmt}"
        )
    d["ORDER"] = d.index.astype(float)
    reps = d.ADDL.astype(int).to_numpy() + 1
    out = d.loc[d.index.repeat(reps)].copy()
    k = np.concatenate([np.arange(n) for n in reps]) if len(reps) else np.array([], int)
    out["TIME"] = out.TIME.to_numpy() + k * out.II.to_numpy()
    # an ADDL repeat at an observation's time comes after that observation (NONMEM);
    # prediction-grid points (order inf) still see it
    out["ORDER"] = np.where(k > 0, np.finfo(float).max, out.ORDER.to_numpy())
    return out.sort_values(["ID", "TIME", "ORDER"], kind="stable")


def _check_obs_cmt(obs: pd.DataFrame, structure: Structure) -> None:
    bad = obs.CMT.notna() & (obs.CMT != structure.central_cmt)
    if bad.any():
        r = obs[bad].iloc[0]
        raise DataError(
            f"row {int(r.ROW)}, column CMT: observation in CMT {r.CMT:g}, but structure "
            f"{structure.name} observes the central compartment, CMT {structure.central_cmt} "
            f"({structure.description})"
        )
