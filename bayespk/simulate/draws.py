"""Fits that are not posteriors: population parameters given as draws, or drawn from the spec's priors.

Everything that simulates from a fit (:func:`~bayespk.simulate.simulation.simulate_regimens`,
dose tables) reads the posterior's population-level draws: typical values,
omegas, covariate coefficients, residual SDs. :func:`fit_from_draws` builds a
:class:`~bayespk.fit.Fit` whose posterior holds draws the caller gives (fixed
"true" values for a simulation study, draws from another analysis), and
:func:`prior_fit` one whose posterior holds draws from the spec's priors, for a
prior predictive check of the exposures a model implies before there are data
to fit (e.g. an adult model with allometry and maturation extrapolated to
children).

Such fits are marked: ``fit.run_info["draws_from"]`` is ``"given"`` or
``"prior"`` (a sampled fit has no such key), and ``fit.run_info["note"]`` says
that the draws are not a posterior. They hold no per-subject effects
(etas): simulations draw new subjects.
"""

from __future__ import annotations

import json
from collections.abc import Mapping

import numpy as np
import pandas as pd
import xarray as xr

from bayespk.errors import SpecError
from bayespk.sampling import quiet_pymc

__all__ = ["fit_from_draws", "population_variables", "prior_fit"]

SUBJECT_DIMS = ("ID", "occasion", "obs", "pd_obs")  # dims of per-subject (per-occasion) variables, not population ones
NOT_A_POSTERIOR = {
    "given": "population parameters given as draws (fit_from_draws), not sampled from a posterior",
    "prior": "population parameters drawn from the spec's priors (prior_fit), not from a posterior",
}


def population_variables(model) -> dict[str, tuple[int, ...]]:
    """The population-level free variables of a model and the shape of one draw of each.

    Parameters
    ----------
    model : PopulationModel

    Returns
    -------
    dict
        ``{name: shape}`` in the model's order: typical values, omegas,
        covariate coefficients (categorical ones: one value per level), treatment
        multipliers, residual SDs, assay scale factors, the LKJ factor of
        correlated etas. Per-subject variables (``z_*``, IOV ``z_iov_*``) are
        left out: simulations draw them.
    """
    pm_model = _built(model)
    dims = pm_model.named_vars_to_dims
    return {rv.name: tuple(int(s) for s in rv.shape.eval()) for rv in pm_model.free_RVs
            if not set(dims.get(rv.name) or ()) & set(SUBJECT_DIMS)}


def fit_from_draws(spec, data=None, draws: Mapping | None = None, *, covariates=None):
    """A Fit whose posterior holds the given population-level draws.

    Parameters
    ----------
    spec : Spec, dict or path
        The model.
    data : Dataset, DataFrame or path, optional
        Data the model is built on (its covariate columns and, for categorical
        covariates, their levels); default the spec's ``[data] path``, or, with
        ``covariates``, placeholder subjects that carry those covariate rows.
    draws : mapping
        ``{name: array}`` for every population-level variable of the model
        (:func:`population_variables`; e.g. ``CL``, ``V``, ``omega_CL``,
        ``CL_WT``, ``sigma_prop``), each an array of ``n`` draws (shape
        ``(n,)``, or ``(n, k)`` for a variable with ``k`` values per draw such as
        a categorical effect), the same ``n`` for every name. Missing, unknown,
        non-finite or out-of-support values (e.g. a negative omega) are
        refused, naming the variable.
    covariates : DataFrame or dict, optional
        Covariate rows (e.g. :func:`~bayespk.simulate.population.pediatric_population`)
        for the placeholder data when ``data`` is not given.

    Returns
    -------
    Fit
        One chain of ``n`` draws; ``fit.run_info["draws_from"] == "given"``.

    Examples
    --------
    A "truth" object: the same values in every draw, no IIV.

    >>> truth = fit_from_draws(spec, data, {"CL": np.full(200, 3.0), "V": np.full(200, 30.0),
    ...                                     "sigma_prop": np.full(200, 0.1)})  # doctest: +SKIP
    """
    from bayespk.model.population import PopulationModel

    if not isinstance(draws, Mapping) or not draws:
        raise SpecError("fit_from_draws: draws must be a non-empty mapping {variable name: array of draws}")
    model = _model(PopulationModel, spec, data, covariates)
    expected = population_variables(model)
    names = [str(k) for k in draws]
    unknown = [k for k in names if k not in expected]
    missing = [k for k in expected if k not in names]
    if unknown:
        raise SpecError(f"fit_from_draws: {', '.join(map(repr, unknown))} {'is' if len(unknown) == 1 else 'are'} not "
                        f"a population-level variable of this model; its variables are {', '.join(expected)}")
    if missing:
        raise SpecError(f"fit_from_draws: no draws for {', '.join(missing)} (the model's population-level variables "
                        f"are {', '.join(expected)}; give every one, e.g. omega_CL = 0 is not allowed but a small "
                        "value is, and a fixed value as np.full(n, value))")
    values, n = {}, None
    for key in draws:  # in the caller's order, so errors name their first variable as the reference
        name, v = str(key), draws[key]
        try:
            x = np.asarray(v, dtype=float)
        except (TypeError, ValueError):
            raise SpecError(f"fit_from_draws: {name}: the draws are not numbers") from None
        shape = expected[name]
        if x.ndim == 0:
            raise SpecError(f"fit_from_draws: {name}: give an array of draws (e.g. np.full(n, {float(x):g})), not "
                            "one number")
        if x.shape[1:] != shape:
            want = "(n,)" if not shape else f"(n, {', '.join(map(str, shape))})"
            raise SpecError(f"fit_from_draws: {name}: draws of shape {x.shape}, expected {want}")
        if n is None:
            n, first = x.shape[0], name
        elif x.shape[0] != n:
            raise SpecError(f"fit_from_draws: {name} has {x.shape[0]} draws but {first} has {n}; every variable "
                            "needs the same number of draws")
        if not np.isfinite(x).all():
            bad = int(np.flatnonzero(~np.isfinite(x.reshape(n, -1)).any(axis=1))[0])
            raise SpecError(f"fit_from_draws: {name}: draw {bad} is not finite ({x[bad]})")
        values[name] = x
    if n < 1:
        raise SpecError("fit_from_draws: the draws are empty (0 draws)")
    _check_support(model, values)
    return _make_fit(model, {k: values[k] for k in expected}, "given", {})


def prior_fit(spec, data=None, n_draws: int = 1000, seed: int = 0, *, covariates=None):
    """A Fit whose posterior holds draws from the spec's priors of the population-level variables.

    For a prior predictive check of exposures: push it through
    :func:`~bayespk.simulate.simulation.simulate_regimens` (e.g. with
    ``population="virtual"`` and children from
    :func:`~bayespk.simulate.population.pediatric_population`). No data are
    sampled or used beyond their covariates.

    Parameters
    ----------
    spec : Spec, dict or path
    data : Dataset, DataFrame or path, optional
        As for :func:`fit_from_draws`.
    n_draws : int
        Number of prior draws (>= 1).
    seed : int
    covariates : DataFrame or dict, optional
        As for :func:`fit_from_draws`.

    Returns
    -------
    Fit
        One chain of ``n_draws`` draws; ``fit.run_info["draws_from"] == "prior"``.

    Notes
    -----
    The draws are from the priors as written (``pm.sample_prior_predictive``):
    the potentials a model adds (a covariate relation or linear effect must stay
    positive for every subject of the data) do not act on them, so a draw may
    give a non-positive parameter for some covariates; simulations then give
    NaN for it.
    """
    import pymc as pm

    from bayespk.model.population import PopulationModel

    if isinstance(n_draws, bool) or not isinstance(n_draws, (int, np.integer)) or n_draws < 1:
        raise SpecError(f"prior_fit: n_draws must be a whole number >= 1, got {n_draws!r}")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise SpecError(f"prior_fit: seed must be a whole number, got {seed!r}")
    model = _model(PopulationModel, spec, data, covariates)
    expected = population_variables(model)
    with quiet_pymc():
        prior = pm.sample_prior_predictive(draws=int(n_draws), model=_built(model), var_names=list(expected),
                                           random_seed=int(seed))["prior"].to_dataset()
    values = {name: np.asarray(prior[name].values, float).reshape((int(n_draws),) + shape)
              for name, shape in expected.items()}
    return _make_fit(model, values, "prior", {"seed": int(seed)})


# ---------------------------------------------------------------------- helpers
def _model(PopulationModel, spec, data, covariates):
    """The PopulationModel of ``spec`` on ``data`` (or placeholder subjects), etas standardized where the spec
    leaves the centring to the sampler (``[sampler] centering = "auto"``)."""
    from bayespk.model.spec import Spec

    if data is None and covariates is not None:
        data = _placeholder(covariates)
    elif data is None:
        if not isinstance(spec, Spec):
            spec = Spec.from_dict(spec) if isinstance(spec, Mapping) else Spec.from_toml(spec)
        if spec.data.path is None:
            data = _placeholder(None)
    model = PopulationModel(spec, data)
    auto = {p: 0.0 for p, w in model.centering_weights().items() if w is None}
    if auto:  # a sampled fit records the weights its warm-up chose; here there is no warm-up
        model = PopulationModel(model.spec.with_centering(auto), model.data)
    return model


def _placeholder(covariates) -> pd.DataFrame:
    """Placeholder data: one subject per covariate row, a unit dose at 0 and one observation (DV 1) at 1."""
    if covariates is None:
        cov = pd.DataFrame(index=[0])
    elif isinstance(covariates, pd.DataFrame):
        cov = covariates.reset_index(drop=True)
    elif isinstance(covariates, Mapping):
        try:
            cov = pd.DataFrame({k: np.atleast_1d(v) for k, v in covariates.items()})
        except ValueError as e:
            raise SpecError(f"covariates: {e}") from None
    else:
        raise SpecError(f"covariates must be a DataFrame or a dict of columns, got {type(covariates).__name__}")
    if len(cov) == 0:
        raise SpecError("covariates: no rows")
    cov = cov.rename(columns=lambda c: str(c).strip().upper())
    reserved = [c for c in ("ID", "TIME", "AMT", "DV", "EVID", "MDV", "CMT", "RATE", "II", "ADDL", "SS")
                if c in cov.columns]
    cov = cov.drop(columns=reserved)
    n = len(cov)
    ids = np.arange(1, n + 1)
    dose = pd.DataFrame({"ID": ids, "TIME": 0.0, "AMT": 1.0, "DV": np.nan, "EVID": 1, "MDV": 1})
    obs = pd.DataFrame({"ID": ids, "TIME": 1.0, "AMT": np.nan, "DV": 1.0, "EVID": 0, "MDV": 0})
    rows = pd.concat([dose, obs], ignore_index=True).sort_values(["ID", "TIME"], kind="stable")
    rows = rows.reset_index(drop=True)
    for c in cov.columns:
        rows[c] = cov[c].to_numpy()[rows.ID.to_numpy() - 1]
    return rows


def _built(model):
    """The model's PyMC graph, built once per PopulationModel."""
    pm_model = model.__dict__.get("_draws_pm_model")
    if pm_model is None:
        pm_model = model.__dict__["_draws_pm_model"] = model.build()
    return pm_model


def _check_support(model, values: dict) -> None:
    """Refuse draws outside the support of their prior (where its log-density is -inf), naming the variable."""
    import pymc as pm
    import pytensor
    import pytensor.tensor as pt

    pm_model = _built(model)
    rvs = {rv.name: rv for rv in pm_model.free_RVs}
    for name, x in values.items():
        rv = rvs[name]
        v = pt.tensor(dtype="float64", shape=(None,) + x.shape[1:])
        if rv.ndim == 0:
            fn = pytensor.function([v], pm.logp(rv, v), on_unused_input="ignore")
            lp = np.asarray(fn(x))
        else:
            one = pt.tensor(dtype="float64", shape=x.shape[1:])
            f1 = pytensor.function([one], pm.logp(rv, one).sum(), on_unused_input="ignore")
            lp = np.array([f1(row) for row in x])
        bad = np.flatnonzero(~np.isfinite(lp.reshape(len(x), -1)).all(axis=1))
        if bad.size:
            prior = _prior_text(model.spec, name)
            raise SpecError(f"fit_from_draws: {name}: draw {int(bad[0])} ({x[bad[0]]}) is outside the support of "
                            f"its prior{prior}")


def _prior_text(spec, name: str) -> str:
    params = spec.parameters
    for p, ps in params.items():
        if name == p:
            return f" ({getattr(ps.typical, 'dist', 'a mixture')})"
        if name == f"omega_{p}" and ps.iiv is not None:
            return f" ({ps.iiv.dist}: omega is an SD > 0)"
    return ""


def _make_fit(model, values: dict[str, np.ndarray], source: str, extra: dict):
    from bayespk.fit import FORMAT_VERSION, SPEC_ATTR, Fit, _add_data_groups, _versions
    from bayespk.rundir import sha256_json

    pm_model = _built(model)
    dims = pm_model.named_vars_to_dims
    coords = model.coords
    n = len(next(iter(values.values())))
    data_vars, used = {}, {}
    for name, x in values.items():
        vdims = tuple(dims.get(name) or ())
        if len(vdims) != x.ndim - 1:  # a variable without named dims (the LKJ factor)
            vdims = tuple(f"{name}_dim_{k}" for k in range(x.ndim - 1))
        for d, size in zip(vdims, x.shape[1:]):
            used[d] = coords[d] if d in coords else np.arange(size)
        data_vars[name] = (("chain", "draw") + vdims, x[None])
    post = xr.Dataset(data_vars, coords={"chain": [0], "draw": np.arange(n)} | used)
    tree = xr.DataTree(children={"posterior": xr.DataTree(post)})
    _add_data_groups(tree, model)
    spec = model.spec
    info = {"draws_from": source, "note": NOT_A_POSTERIOR[source], "sampler": None, "n_draws": int(n), **extra,
            "data_path": spec.data.path, "spec_sha256": sha256_json(spec.to_dict()), "versions": _versions()}
    tree.attrs.update({
        SPEC_ATTR: json.dumps(spec.to_dict()),
        "bayespk_run": json.dumps(info),
        "bayespk_data_summary": json.dumps(model.data.summary.to_dict()),
        "bayespk_format": FORMAT_VERSION,
    })  # fmt: skip
    return Fit(tree, spec, model=model)
