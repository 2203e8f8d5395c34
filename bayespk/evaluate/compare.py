"""Model comparison by PSIS-LOO (Vehtari, Gelman & Gabry 2017, Stat Comput 27:1413).

``by="obs"`` leaves out one observation at a time (the default); ``by="subject"``
leaves out whole subjects (log-likelihoods summed per subject), which asks how
well the model predicts a new subject's profile. Pareto k above 0.7 means the
importance-sampling estimate for that point is unreliable; with few samples
per subject, observations are influential for their own eta and high k values
are common: read such a comparison with care, or use K-fold CV.
"""

from __future__ import annotations

import warnings

import arviz as az
import numpy as np
import pandas as pd
import xarray as xr

from bayespk.errors import BayesPKError

__all__ = ["loo", "compare", "LOO_K_THRESHOLD"]

LOO_K_THRESHOLD = 0.7


def _loglik_tree(fit, by: str) -> xr.DataTree:
    ll = fit.log_likelihood()
    if by == "obs":
        pass
    elif by == "subject":
        subject = fit.tree["constant_data"]["SUBJECT"].values
        ll = ll.assign_coords(subject=("obs", subject)).groupby("subject").sum().rename(subject="ID_loo")
    else:
        raise BayesPKError(f"by must be 'obs' or 'subject', got {by!r}")
    return xr.DataTree(children={"posterior": fit.tree["posterior"], "log_likelihood": xr.DataTree(ll)})


def loo(fit, *, by: str = "obs"):
    """PSIS-LOO of a fit: an ArviZ ELPD object (``elpd``, ``se``, ``p``, ``pareto_k``).

    Warns (UserWarning) with the count of Pareto k values above 0.7.
    """
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = az.loo(_loglik_tree(fit, by), pointwise=True)
    k = np.asarray(result.pareto_k).ravel()
    bad = int((k > LOO_K_THRESHOLD).sum())
    if bad:
        warnings.warn(f"{fit.spec.name}: {bad} of {k.size} Pareto k values > {LOO_K_THRESHOLD} "
                      f"(leave-one-{'observation' if by == 'obs' else 'subject'}-out estimate unreliable there)",
                      UserWarning, stacklevel=2)
    return result


def compare(fits: dict, *, by: str = "obs") -> pd.DataFrame:
    """Compare fits of the same data by PSIS-LOO.

    Parameters
    ----------
    fits : dict
        Name -> Fit (or a run directory path).

    Returns
    -------
    DataFrame
        One row per model, best first: ``elpd``, ``se``, ``p_loo``,
        ``elpd_diff`` (0 for the best, negative for the others) and its SE ``dse``, stacking
        ``weight``, and ``n_bad_k`` (Pareto k > 0.7).
    """
    from bayespk.fit import Fit, load

    if len(fits) < 2:
        raise BayesPKError("compare needs at least two fits")
    loaded = {name: f if isinstance(f, Fit) else load(f) for name, f in fits.items()}
    first_name, first = next(iter(loaded.items()))
    for name, f in loaded.items():
        same = all(
            f.tree[g][v].shape == first.tree[g][v].shape
            and np.array_equal(f.tree[g][v].values, first.tree[g][v].values, equal_nan=True)
            for g, v in (("observed_data", "DV"), ("constant_data", "TIME"), ("constant_data", "SUBJECT"))
        )
        if not same:
            raise BayesPKError(f"fits {first_name!r} and {name!r} are not of the same observations (DV, TIME, "
                               "ID differ); LOO compares models of the same data")
    trees = {name: _loglik_tree(f, by) for name, f in loaded.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = az.compare(trees, round_to="none")
        bad = {name: int((np.asarray(az.loo(t, pointwise=True).pareto_k) > LOO_K_THRESHOLD).sum())
               for name, t in trees.items()}
    table = table.rename(columns={"p": "p_loo"})
    table["n_bad_k"] = pd.Series(bad)
    keep = [c for c in ("rank", "elpd", "se", "p_loo", "elpd_diff", "dse", "weight", "n_bad_k") if c in table]
    return table[keep]
