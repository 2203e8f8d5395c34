"""Simulate studies with known truth, for parameter recovery, calibration and benchmarks.

Two steps, both returning NONMEM-style DataFrames:

1. :func:`study_design` lays out doses, sampling times and covariates for
   ``n`` subjects (``DV`` left as a placeholder).
2. :func:`simulate_observations` draws new etas and residual errors from a
   model spec at fixed population parameter values and writes ``DV`` (PK
   observations and, for a PK/PD spec, the PD observations).

The observations are drawn from the very PyMC model that a fit builds
(``pm.do`` fixes the population parameters), so simulation and estimation
cannot drift apart; the structural math is checked separately against an ODE
solver.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import replace

import numpy as np
import pandas as pd
import pymc as pm

from bayespk.errors import SpecError
from bayespk.model.population import PopulationModel
from bayespk.model.spec import Spec

__all__ = ["study_design", "simulate_observations"]


def study_design(
    n_subjects: int,
    *,
    dose: float | Callable[[pd.Series], float],
    times: np.ndarray,
    route: str = "oral",
    n_doses: int = 1,
    interval: float = 24.0,
    infusion_duration: float | None = None,
    covariates: Mapping[str, Callable[[np.random.Generator, int], np.ndarray]] | None = None,
    seed: int = 0,
) -> pd.DataFrame:
    """A NONMEM-style dataset layout: doses, sampling times and covariates.

    Parameters
    ----------
    n_subjects : int
    dose : float or callable
        Dose amount, or a function of the subject's covariate row (e.g.
        ``lambda c: 10 * c.WT`` for mg/kg dosing).
    times : array
        Sampling times after the first dose, the same for every subject.
    route : {"oral", "iv"}
        Oral doses go to CMT 1 (depot) and samples to CMT 2; IV doses and
        samples to CMT 1.
    n_doses, interval : int, float
        Regular dosing as one record with ADDL = n_doses - 1, II = interval.
    infusion_duration : float, optional
        Give IV doses as zero-order infusions of this duration.
    covariates : dict
        Column name -> ``f(rng, n)`` returning one value per subject.
    seed : int

    Returns
    -------
    pandas.DataFrame
        Columns ID, TIME, AMT, DV (placeholder 1.0), EVID, MDV, CMT, RATE, II,
        ADDL and the covariates.

    Examples
    --------
    >>> d = study_design(3, dose=100.0, times=[1, 2, 4], route="iv")
    >>> d.groupby("ID").size().tolist()
    [4, 4, 4]
    """
    if route not in ("oral", "iv"):
        raise SpecError(f"route must be 'oral' or 'iv', got {route!r}")
    rng = np.random.default_rng(seed)
    covs = pd.DataFrame({k: np.asarray(f(rng, n_subjects)) for k, f in (covariates or {}).items()},
                        index=range(n_subjects))
    dose_cmt, obs_cmt = (1, 2) if route == "oral" else (1, 1)
    rows = []
    for i in range(n_subjects):
        c = covs.iloc[i] if len(covs.columns) else pd.Series(dtype=float)
        amt = float(dose(c) if callable(dose) else dose)
        rate = amt / infusion_duration if (infusion_duration and route == "iv") else 0.0
        base = {k: c[k] for k in covs.columns}
        rows.append({"ID": i + 1, "TIME": 0.0, "AMT": amt, "DV": np.nan, "EVID": 1, "MDV": 1, "CMT": dose_cmt,
                     "RATE": rate, "II": interval if n_doses > 1 else 0.0, "ADDL": n_doses - 1, **base})
        for t in np.sort(np.asarray(times, dtype=float)):
            rows.append({"ID": i + 1, "TIME": t, "AMT": np.nan, "DV": 1.0, "EVID": 0, "MDV": 0, "CMT": obs_cmt,
                         "RATE": 0.0, "II": 0.0, "ADDL": 0, **base})
    return pd.DataFrame(rows)


def simulate_observations(
    spec: Spec,
    design: pd.DataFrame,
    truth: Mapping[str, float | np.ndarray],
    *,
    seed: int = 0,
    lloq: float | None = None,
) -> pd.DataFrame:
    """Fill ``DV`` with draws from the model at known population parameters.

    Parameters
    ----------
    spec : Spec
        The model (its data path is ignored; ``design`` is the data). With a
        PD model (``[model] pd``) the PD observation records (``[model]
        pd_observations``, e.g. DVID = 2) get a response drawn from the PD
        model and its ``[pd_error]``, driven by the same individual PK; the
        other observation records are concentrations. A ``pk_fit`` of the
        spec (sequential PK/PD) is ignored: the data are drawn from the joint
        model at ``truth``.
    design : DataFrame
        NONMEM-style layout, e.g. from :func:`study_design`.
    truth : dict
        A value for every population parameter of the spec: typical values
        (``CL``...), ``omega_<P>`` for each parameter with IIV, estimated
        covariate coefficients (``<P>_<COL>``) and the residual SDs (PK/PD:
        also the PD error's, ``pd_sigma_add``...).
    seed : int
    lloq : float, optional
        Flag simulated concentrations below it as BLQ (column BLQ = 1, LLOQ,
        DV = LLOQ). PD observations are never flagged (their LLOQ is NaN).

    Returns
    -------
    DataFrame
        ``design`` with simulated DV, and the true individual etas as columns
        ``ETA_<P>`` (constant within a subject) for checking recovery.
    """
    if spec.pk_fit is not None:  # sequential estimation is a fitting choice; simulate from the joint model
        spec = replace(spec, pk_fit=None)
    model = PopulationModel(spec, design)
    pm_model = model.build()
    needed = model.spec.population_parameters
    missing = [n for n in needed if n not in truth]
    extra = [n for n in truth if n not in needed]
    if missing or extra:
        raise SpecError("truth must give exactly the population parameters "
                        f"{', '.join(needed)}" + (f"; missing {', '.join(missing)}" if missing else "")
                        + (f"; unknown {', '.join(extra)}" if extra else ""))
    fixed = pm.do(pm_model, {pm_model[k]: np.asarray(v, dtype=float) for k, v in truth.items()})
    etas = [n for n in (f"eta_{p}" for p in spec.parameters) if n in fixed.named_vars]
    # observed variables: DV (PK, absent when every observation is PD) and DV_PD (PD model)
    observed = [(name, d) for name, d in (("DV", model.design), ("DV_PD", model.pd_design))
                if d is not None and name in fixed.named_vars]
    draws = pm.draw([*[fixed[name] for name, _ in observed], *[fixed[e] for e in etas]], random_seed=seed)
    draws = list(draws) if isinstance(draws, (list, tuple)) else [draws]
    values = dict(zip((name for name, _ in observed), draws))
    row_index = pd.Index(model.data.table.ROW)
    rows = {name: row_index.get_indexer(d.obs_row) for name, d in observed}
    out = model.data.table.drop(columns="ROW").copy()
    dv = np.asarray(values.get("DV", np.array([])), dtype=float)
    obs_rows = rows.get("DV", np.array([], dtype=int))
    if (dv < 0).any():
        raise SpecError(f"{int((dv < 0).sum())} simulated concentrations are negative (additive error larger "
                        "than the prediction); use proportional, combined or lognormal error, or an LLOQ")
    out.loc[obs_rows, "DV"] = dv
    if "DV_PD" in values:
        out.loc[rows["DV_PD"], "DV"] = np.asarray(values["DV_PD"], dtype=float)
    if lloq is not None:
        below = np.zeros(len(out), bool)
        below[obs_rows] = dv < lloq
        is_pd = np.zeros(len(out), bool)
        is_pd[rows.get("DV_PD", [])] = True
        out["LLOQ"] = np.where((out.EVID == 0) & ~is_pd, lloq, np.nan)
        out["BLQ"] = below.astype(int)
        out["CENS"] = below.astype(int)
        out.loc[below, "DV"] = lloq
    subject = {sid: k for k, sid in enumerate(model.design.subject_ids)}
    for name, eta in zip(etas, draws[len(observed):]):
        out[name.upper()] = [eta[subject[i]] for i in out.ID]
    return out
