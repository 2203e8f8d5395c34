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

from bayespk.data.nonmem import id_label
from bayespk.errors import BayesPKError
from bayespk.fit import Fit, load

__all__ = ["loo", "compare", "data_difference", "LOO_K_THRESHOLD"]

LOO_K_THRESHOLD = 0.7
LOO_MIN_DRAWS = 25  # ArviZ fits a Pareto tail to at least 5 of them (20% of the draws)


def _loglik_tree(fit, by: str) -> xr.DataTree:
    """The pointwise log-likelihood as ArviZ wants it: one array, one point per observation (``by="obs"``)
    or per subject (``by="subject"``, summed over the subject's observations).

    A PK/PD fit has two arrays, ``DV`` (dim ``obs``) and ``DV_PD`` (dim ``pd_obs``): each observation of
    either kind is one point (concentrations first), and a subject's point sums both kinds.
    """
    if by not in ("obs", "subject"):
        raise BayesPKError(f"by must be 'obs' or 'subject', got {by!r}")
    ll = fit.log_likelihood()
    const = fit.tree["constant_data"]
    if len(ll.data_vars) == 1:  # PK only: as it always was
        if by == "subject":
            ll = ll.assign_coords(subject=("obs", const["SUBJECT"].values)).groupby("subject").sum()
            ll = ll.rename(subject="ID_loo")
    else:
        parts = []
        for da in ll.data_vars.values():
            dim = next(d for d in da.dims if d not in ("chain", "draw"))
            prefix = {"obs": "", "pd_obs": "PD_"}[dim]
            if by == "obs":
                parts.append(da.drop_vars(dim, errors="ignore").rename({dim: "obs"}).assign_coords(
                    ROW=("obs", const[f"{prefix}ROW"].values)))
            else:
                parts.append(da.assign_coords(subject=(dim, const[f"{prefix}SUBJECT"].values))
                             .groupby("subject").sum().rename(subject="ID_loo"))
        if by == "obs":
            joint = xr.concat(parts, dim="obs")
            joint = joint.assign_coords(obs=np.arange(joint.sizes["obs"]))
        else:
            joint = sum(xr.align(*parts, join="outer", fill_value=0.0))
        ll = xr.Dataset({"+".join(ll.data_vars): joint})
    return xr.DataTree(children={"posterior": fit.tree["posterior"], "log_likelihood": xr.DataTree(ll)})


def _az_loo(tree: xr.DataTree, fit, by: str):
    """``az.loo`` of a log-likelihood tree, pointwise.

    A point whose log-likelihood is the same in every draw (e.g. a BLQ observation with probability 1 of
    being below the LLOQ in every draw) needs no importance sampling: its leave-one-out density is that
    value exactly. ArviZ cannot fit a Pareto tail to it ("All tail values are the same"), so such points
    get uniform weights and Pareto k 0, the others ArviZ's own PSIS weights. Any other failure of the tail
    fit (a chain stuck at one value) becomes a user error that says so.
    """
    ll = next(iter(tree["log_likelihood"].to_dataset().data_vars.values()))
    spread = (ll.max(("chain", "draw")) - ll.min(("chain", "draw"))).values
    const = spread < np.finfo(float).tiny
    try:
        if not const.any():
            return az.loo(tree, pointwise=True)
        n_samples = ll.sizes["chain"] * ll.sizes["draw"]
        log_weights = xr.full_like(ll, -np.log(n_samples), dtype=float)  # uniform, normalised as ArviZ's
        pareto_k = xr.zeros_like(ll.isel(chain=0, draw=0, drop=True), dtype=float)
        if not const.all():
            rest = az.loo(xr.DataTree(children={"posterior": tree["posterior"], "log_likelihood": xr.DataTree(
                xr.Dataset({ll.name: ll[..., ~const]}))}), pointwise=True)
            log_weights.values[..., ~const] = rest.log_weights.transpose(*ll.dims).values
            pareto_k.values[~const] = rest.pareto_k.values
        return az.loo(tree, pointwise=True, log_weights=log_weights, pareto_k=pareto_k)
    except ValueError as e:
        if "tail values are the same" not in str(e):
            raise
        raise BayesPKError(f"{fit.spec.name}: PSIS-LOO cannot be computed: the largest importance ratios of "
                           f"some {'observation' if by == 'obs' else 'subject'} are identical across draws (a "
                           f"chain stuck at one value?); check convergence and refit with more draws "
                           f"(ArviZ: {e})") from None


def loo(fit, *, by: str = "obs"):
    """PSIS-LOO of a fit: an ArviZ ELPD object (``elpd``, ``se``, ``p``, ``pareto_k``).

    Warns (UserWarning) with the count of Pareto k values above 0.7.
    """
    post = fit.tree["posterior"]
    n_draws = int(post.sizes["chain"] * post.sizes["draw"])
    if n_draws < LOO_MIN_DRAWS:
        raise BayesPKError(f"{fit.spec.name}: PSIS-LOO needs at least {LOO_MIN_DRAWS} posterior draws in all "
                           f"(chains x draws) to fit the Pareto tails; this fit has {n_draws}: refit with more draws")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = _az_loo(_loglik_tree(fit, by), fit, by)
    k = np.asarray(result.pareto_k).ravel()
    bad = int((k > LOO_K_THRESHOLD).sum())
    if bad:
        warnings.warn(f"{fit.spec.name}: {bad} of {k.size} Pareto k values > {LOO_K_THRESHOLD} "
                      f"(leave-one-{'observation' if by == 'obs' else 'subject'}-out estimate unreliable there)",
                      UserWarning, stacklevel=2)
    return result


# What "the same data" means: each kind of observation (PK DV on ``obs``, PD DV_PD on ``pd_obs``) as the fit
# stores it: (kind, group and variable of the values, of their ID, of their TIME)
OBSERVATION_KINDS = (
    ("PK observations (DV)", ("observed_data", "DV"), ("constant_data", "SUBJECT"), ("constant_data", "TIME")),
    ("PD observations (DV_PD)", ("observed_data", "DV_PD"), ("constant_data", "PD_SUBJECT"),
     ("constant_data", "PD_TIME")),
)


def _stored(fit, where: tuple[str, str]):
    """The values of ``group/variable`` in the fit's tree, None when absent."""
    group, name = where
    if group not in fit.tree.children or name not in fit.tree[group].data_vars:
        return None
    return np.asarray(fit.tree[group][name].values)


def data_difference(a, b, name_a: str = "a", name_b: str = "b") -> str | None:
    """What differs between the data two fits were fitted to (None: the same).

    Compared for the PK observations (``DV``) and, for PK/PD fits, the PD
    observations (``DV_PD``): their number, then their values, IDs and TIMEs
    in the fit's order. The answer names the kind of observation and the first
    one that differs (by ID and TIME, with both values).
    """
    for kind, dv, subject, time in OBSERVATION_KINDS:
        values = {n: [_stored(f, w) for w in (dv, subject, time)] for n, f in ((name_a, a), (name_b, b))}
        counts = {n: 0 if v[0] is None else v[0].size for n, v in values.items()}
        if counts[name_a] != counts[name_b]:
            return (f"{name_a!r} has {counts[name_a] or 'no'} {kind}, {name_b!r} "
                    f"{counts[name_b] or 'none'}")
        if counts[name_a] == 0:
            continue
        for what, x, y in zip(("value", "ID", "TIME"), values[name_a], values[name_b]):
            if x is None or y is None:
                missing = name_a if x is None else name_b
                return f"{missing!r} stores no {what} of its {kind}"
            differs = ~_equal(x, y)
            if differs.any():
                k = int(np.argmax(differs))
                ids, times = values[name_a][1], values[name_a][2]
                more = int(differs.sum()) - 1
                return (f"the {kind} differ in {what}: observation {k + 1} (ID {_shown(ids[k])}, TIME "
                        f"{_shown(times[k])}) has {what} {_shown(x[k])} in {name_a!r}, {_shown(y[k])} in {name_b!r}"
                        + (f" (and {more} more observation{'s' * (more != 1)})" if more else ""))
    return None


def _shown(v) -> str:
    """A stored value as the message shows it: numbers in full (``17.3``, ``nan``), IDs as in the data."""
    if isinstance(v, (float, np.floating)) and not float(v).is_integer():
        return repr(float(v))
    return id_label(v)


def _equal(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Elementwise equality, NaN equal to NaN (numbers) or plain ``==`` (IDs as text)."""
    if x.dtype.kind in "fc" and y.dtype.kind in "fc":
        return (x == y) | (np.isnan(x) & np.isnan(y))
    return x.astype(object) == y.astype(object)


def compare(fits: dict, *, by: str = "obs") -> pd.DataFrame:
    """Compare fits of the same data by PSIS-LOO.

    Parameters
    ----------
    fits : dict
        Name -> Fit (or a run directory path). All must be fitted to the same
        data: the same PK observations (DV) and, for PK/PD fits, the same PD
        observations (DV_PD), with the same IDs and TIMEs in the same order
        (:func:`data_difference`); otherwise a :class:`BayesPKError` names
        what differs.

    Returns
    -------
    DataFrame
        One row per model, best first: ``elpd``, ``se``, ``p_loo``,
        ``elpd_diff`` (0 for the best, negative for the others) and its SE ``dse``, stacking
        ``weight``, and ``n_bad_k`` (Pareto k > 0.7).
    """
    if len(fits) < 2:
        raise BayesPKError("compare needs at least two fits")
    loaded = {name: f if isinstance(f, Fit) else load(f) for name, f in fits.items()}
    first_name, first = next(iter(loaded.items()))
    for name, f in loaded.items():
        why = data_difference(first, f, first_name, name)
        if why is not None:
            raise BayesPKError(f"fits {first_name!r} and {name!r} are not of the same data: {why}; LOO compares "
                               "models of the same data")
    trees = {name: _loglik_tree(f, by) for name, f in loaded.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        loos = {name: _az_loo(t, loaded[name], by) for name, t in trees.items()}
        table = az.compare(loos, round_to="none")
    bad = {name: int((np.asarray(r.pareto_k) > LOO_K_THRESHOLD).sum()) for name, r in loos.items()}
    table = table.rename(columns={"p": "p_loo"})
    table["n_bad_k"] = pd.Series(bad)
    keep = [c for c in ("rank", "elpd", "se", "p_loo", "elpd_diff", "dse", "weight", "n_bad_k") if c in table]
    return table[keep]
