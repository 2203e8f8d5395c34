"""Replicates of the observed study, simulated from a fit (or from the prior).

A replicate keeps the observed design (doses, sampling times, covariates) and
draws **new subjects**: one posterior draw of the population parameters per
replicate, new etas from the population distribution, then residual error.
This is what a VPC and NPDE compare the data with (Bergstrand et al. 2011, AAPS J
13:143; Brendel et al. 2006, Pharm Res 23:2036);
predictions for the fitted subjects' own etas are a different check
(:meth:`bayespk.fit.Fit.predict`).
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pymc as pm
import xarray as xr

from bayespk.errors import BayesPKError
from bayespk.sampling import quiet_pymc

__all__ = ["simulate_replicates", "prior_replicates", "observation_table"]


def simulate_replicates(fit, n_rep: int = 200, *, seed: int = 0, new_subjects: bool = True,
                        pd: bool = False) -> xr.Dataset:
    """Simulate ``n_rep`` replicates of the observed study.

    Parameters
    ----------
    fit : Fit
    n_rep : int
        Number of replicates; each uses one posterior draw (drawn without
        replacement while there are enough draws).
    seed : int
    new_subjects : bool
        True (VPC/NPDE): new etas for every replicate. False: keep each draw's
        fitted etas (posterior predictive of the observed subjects).
    pd : bool
        The PD observations (a PK/PD model's ``DV_PD``, with ``[pd_error]``) instead of the concentrations.

    Returns
    -------
    xarray.Dataset
        ``DV_sim`` (uncensored simulated observations), ``IPRED`` and ``PRED``
        with dims ``(rep, obs)``.
    """
    post = fit.posterior.stack(sample=("chain", "draw"))
    n = post.sizes["sample"]
    rng = np.random.default_rng(seed)
    idx = rng.choice(n, size=n_rep, replace=n_rep > n)
    drop = [v for v in post.data_vars if new_subjects and (v.startswith("z_") or v.startswith("eta_"))]
    draws = post.drop_vars(drop).isel(sample=idx).drop_vars(["sample", "chain", "draw"])
    draws = draws.rename({"sample": "draw"}).expand_dims(chain=[0]).assign_coords(draw=np.arange(n_rep))
    pm_model, _ = fit.model.build_prediction(simulate=True, pd=pd)
    with quiet_pymc():
        out = pm.sample_posterior_predictive(
            xr.DataTree(children={"posterior": xr.DataTree(draws)}), model=pm_model,
            var_names=["DV_sim", "IPRED", "PRED"], random_seed=seed, progressbar=False,
        )
    return _as_replicates(out["posterior_predictive"].to_dataset())


def prior_replicates(model, n_rep: int = 200, *, seed: int = 0, pd: bool = False) -> xr.Dataset:
    """Prior predictive replicates of a study (before fitting): same layout as :func:`simulate_replicates`."""
    pm_model, _ = model.build_prediction(simulate=True, pd=pd)
    with quiet_pymc():
        out = pm.sample_prior_predictive(draws=n_rep, model=pm_model, var_names=["DV_sim", "IPRED", "PRED"],
                                         random_seed=seed)
    return _as_replicates(out["prior"].to_dataset())


def _as_replicates(ds: xr.Dataset) -> xr.Dataset:
    ds = ds.stack(rep=("chain", "draw")).transpose("rep", "obs")
    return ds.drop_vars(["rep", "chain", "draw"], errors="ignore").assign_coords(rep=np.arange(ds.sizes["rep"]))


def observation_table(source, pd_obs: bool = False) -> pd.DataFrame:
    """One row per observation in the likelihood: ID, TIME, ROW, DV, CENS, LIMIT, every record
    column (LLOQ, covariates...) and DOSE (the subject's first dose amount).

    ``source`` is a Fit (read from its DataTree) or a PopulationModel (before fitting).
    ``pd_obs``: the PD observations of a PK/PD model (``DV`` holds their values), from its design.
    """
    if pd_obs:
        model = getattr(source, "model", source)
        if not model.has_pd:
            raise BayesPKError(f"{model.spec.name}: no PD observations (the model has no PD part)")
        d = model.pd_design
        obs = pd.DataFrame({"ID": d.subject_ids[d.obs_subject], "TIME": d.obs_time, "ROW": d.obs_row,
                            "DV": d.obs_dv, "CENS": d.obs_cens, "LIMIT": d.obs_limit})
        records = (source.tree["records"].to_dataset().to_dataframe() if hasattr(source, "tree")
                   else model.data.table)
    elif hasattr(source, "tree"):
        const = source.tree["constant_data"].to_dataset()
        obs = pd.DataFrame({
            "ID": const["SUBJECT"].values, "TIME": const["TIME"].values, "ROW": const["ROW"].values,
            "DV": source.tree["observed_data"]["DV"].values, "CENS": const["CENS"].values,
            "LIMIT": const["LIMIT"].values,
        })  # fmt: skip
        records = source.tree["records"].to_dataset().to_dataframe()
    else:
        d = source.design
        obs = pd.DataFrame({"ID": d.subject_ids[d.obs_subject], "TIME": d.obs_time, "ROW": d.obs_row,
                            "DV": d.obs_dv, "CENS": d.obs_cens, "LIMIT": d.obs_limit})
        records = source.data.table
    records = records.set_index("ROW")
    extra = records.drop(columns=[c for c in ("ID", "TIME", "DV", "CENS") if c in records.columns])
    obs = obs.join(extra, on="ROW")
    first_dose = records[records.EVID.isin([1, 4])].groupby("ID").AMT.first()
    obs["DOSE"] = obs.ID.map(first_dose)
    return obs
