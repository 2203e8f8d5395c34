"""Whole-model priors from an earlier fit or from published estimates: ``[prior_from]`` in a spec.

::

    [prior_from]
    run = "runs/adult"          # an earlier bayespk run (directory or fit.nc), or
    # estimates = "published.csv"  # columns parameter, estimate, and se or rse (%); n_subjects = N
    weight = 0.8                # power-prior weight a0 in (0, 1]; or subjects = k (a0 = k / N)
    robust = 0.2                # weight of the wide (one-subject) component, in [0, 1)
    parameters = ["CL", "V", "omega_CL", "omega_V"]   # default: every one the two models share

The earlier posterior of the named population parameters becomes a
multivariate normal on their unconstrained scale (correlations kept),
tempered and robustified (:class:`~bayespk.model.joint_prior.JointPrior`).
The resolved spec stores that prior inline as ``[joint_prior]`` (with the
source as provenance), so a run reproduces without the earlier run.
Parameters the prior does not cover keep the priors the spec gives them
(e.g. a maturation function's TM50 and Hill in a pediatric model).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from bayespk.errors import SpecError
from bayespk.model.joint_prior import JointPrior
from bayespk.rundir import RunDirError, read_fit_tree

__all__ = ["PRIOR_FROM_KEYS", "resolve_prior_from", "whole_model_prior"]

PRIOR_FROM_KEYS = ("run", "estimates", "weight", "subjects", "robust", "robust_sd", "parameters", "n_subjects")
W = "[prior_from]"


def resolve_prior_from(d: dict, spec, base_dir: Path | None = None) -> JointPrior:
    """The joint prior a spec's ``[prior_from]`` table describes, for the model of ``spec``."""
    if not isinstance(d, dict):
        raise SpecError(f"{W}: expected a table such as {{ run = \"runs/adult\", weight = 0.8, robust = 0.2 }}")
    extra = [k for k in d if k not in PRIOR_FROM_KEYS]
    if extra:
        raise SpecError(f"{W}: unknown key {extra[0]!r}; allowed: {', '.join(PRIOR_FROM_KEYS)}")
    sources = [k for k in ("run", "estimates") if k in d]
    if len(sources) != 1:
        raise SpecError(f"{W}: give one source, run = \"RUN_DIR\" (an earlier bayespk run) or estimates = "
                        "\"FILE.csv\" (published estimates)")
    key = sources[0]
    if not isinstance(d[key], str):
        raise SpecError(f"{W} {key}: expected a path string, got {d[key]!r}")
    path = Path(d[key]).expanduser()
    if not path.is_absolute() and base_dir is not None:
        path = (base_dir / path).resolve()
    params = d.get("parameters")
    if params is not None and (not isinstance(params, list) or not all(isinstance(p, str) for p in params)):
        raise SpecError(f"{W} parameters: expected a list of parameter names, got {params!r}")
    kw = {k: d[k] for k in ("weight", "subjects", "robust", "robust_sd", "n_subjects") if k in d}
    if key == "run":
        if not path.exists():
            raise SpecError(f"{W} run: {path} does not exist (a run directory written by `bayespk fit`)")
        try:
            tree = read_fit_tree(path)
        except RunDirError as e:
            raise SpecError(f"{W} run: {e}") from None
        return whole_model_prior(tree, spec, parameters=params, info={"run": str(path)}, **kw)
    if not path.is_file():
        raise SpecError(f"{W} estimates: {path} does not exist")
    try:
        table = pd.read_csv(path)
    except (ValueError, pd.errors.ParserError, UnicodeDecodeError) as e:
        raise SpecError(f"{W} estimates: {path} is not a readable CSV file ({e})") from None
    return whole_model_prior(table, spec, parameters=params, info={"estimates": str(path)}, **kw)


def whole_model_prior(source, spec, *, parameters: Sequence[str] | None = None, weight: float | None = None,
                      subjects: float | None = None, robust: float = 0.0,
                      robust_sd: float | Mapping[str, float] | None = None, n_subjects: int | None = None,
                      info: dict | None = None) -> JointPrior:
    """A joint prior for the population parameters of ``spec`` from an earlier fit or published estimates.

    Parameters
    ----------
    source : Fit, DataTree, str/Path or DataFrame
        An earlier fit (or its run directory), or a table of published estimates with columns
        ``parameter``, ``estimate`` and ``se`` (or ``rse``, percent).
    spec : Spec
        The new model (its priors' supports set each parameter's scale).
    parameters : list of str, optional
        The parameters to borrow (default: every scalar population parameter both models have).
    weight : float
        Power-prior weight a0 in (0, 1] (default 1: the earlier posterior as it is).
    subjects : float, optional
        Instead of ``weight``: the effective number of subjects the prior is worth (a0 = subjects / N).
    robust : float
        Weight of the wide component, in [0, 1).
    robust_sd : float or mapping, optional
        SD(s) of the wide component on the unconstrained scale (default: one subject's information).
    n_subjects : int, optional
        Subjects of the earlier study (read from a fit; needed for published estimates with ``subjects`` or
        a default ``robust_sd``).
    info : dict, optional
        Provenance stored with the prior (e.g. the run's path).

    Returns
    -------
    JointPrior
        Use it with ``spec.with_joint_prior(prior)``, or write ``[prior_from]`` in the spec.
    """
    info = dict(info or {})
    bounds = spec.population_bounds()
    if isinstance(source, (str, Path)):
        info.setdefault("run", str(source))
        try:
            source = read_fit_tree(source)
        except RunDirError as e:
            raise SpecError(f"{W} run: {e}") from None
    if isinstance(source, pd.DataFrame):
        return _from_table(source, bounds, parameters, weight, subjects, robust, robust_sd, n_subjects, info)
    posterior = _posterior(source)
    available = [n for n in bounds if n in posterior.data_vars]
    names = _names(parameters, bounds, available, "the earlier run")
    draws = {}
    for n in names:
        v = posterior[n]
        extra = [d for d in v.dims if d not in ("chain", "draw")]
        if extra:
            raise SpecError(f"{W} parameters: {n} has dims {extra} in the earlier run, not one value per draw")
        draws[n] = v.values.ravel()
    n_earlier = int(posterior.sizes["ID"]) if "ID" in posterior.sizes else n_subjects
    weight = _weight(weight, subjects, n_earlier)
    info |= {"parameters": list(names), "draws": int(len(next(iter(draws.values()))))}
    return JointPrior.from_draws(draws, bounds, weight=weight, robust=robust, n_subjects=n_earlier,
                                 robust_sd=robust_sd, source=info)


def _posterior(source):
    tree = getattr(source, "tree", source)  # a Fit holds its DataTree as .tree
    try:
        return tree["posterior"].to_dataset()
    except (KeyError, TypeError, AttributeError):
        raise SpecError(f"{W}: the earlier fit has no posterior group") from None


def _names(parameters, bounds, available, what: str) -> tuple[str, ...]:
    if parameters is None:
        if not available:
            raise SpecError(f"{W}: {what} has none of this model's population parameters ({', '.join(bounds)}); "
                            "is it a fit of a related model?")
        return tuple(available)
    unknown = [p for p in parameters if p not in bounds]
    if unknown:
        raise SpecError(f"{W} parameters: {', '.join(unknown)} not a scalar population parameter of the new model "
                        f"(it has {', '.join(bounds)})")
    absent = [p for p in parameters if p not in available]
    if absent:
        raise SpecError(f"{W} parameters: {', '.join(absent)} not in {what} (it has "
                        f"{', '.join(available) or 'none of them'})")
    if not parameters:
        raise SpecError(f"{W} parameters: the list is empty")
    return tuple(dict.fromkeys(parameters))


def _weight(weight, subjects, n_earlier) -> float:
    if weight is not None and subjects is not None:
        raise SpecError(f"{W}: give weight (a0) or subjects (an effective sample size), not both")
    if subjects is None:
        return 1.0 if weight is None else weight
    if isinstance(subjects, bool) or not isinstance(subjects, (int, float)) or not math.isfinite(subjects) \
            or subjects <= 0:
        raise SpecError(f"{W} subjects: the effective number of subjects must be a number > 0, got {subjects!r}")
    if n_earlier is None:
        raise SpecError(f"{W} subjects: needs the earlier study's number of subjects (n_subjects)")
    if subjects > n_earlier:
        raise SpecError(f"{W} subjects: {subjects:g} is more than the {n_earlier} subjects of the earlier study")
    return subjects / n_earlier


def _from_table(table: pd.DataFrame, bounds, parameters, weight, subjects, robust, robust_sd, n_subjects,
                info) -> JointPrior:
    cols = {c.lower(): c for c in table.columns}
    for need in ("parameter", "estimate"):
        if need not in cols:
            raise SpecError(f"{W} estimates: needs a column {need!r} (columns: parameter, estimate, se or rse)")
    if ("se" in cols) == ("rse" in cols):
        raise SpecError(f"{W} estimates: needs one of the columns se (standard error) or rse (relative, %)")
    est = {}
    for i, row in table.iterrows():
        name = str(row[cols["parameter"]]).strip()
        where = f"{W} estimates row {i + 2} ({name})"
        e = pd.to_numeric(row[cols["estimate"]], errors="coerce")
        if not np.isfinite(e):
            raise SpecError(f"{where}: estimate is not a number ({row[cols['estimate']]!r})")
        if "se" in cols:
            s = pd.to_numeric(row[cols["se"]], errors="coerce")
        else:
            s = pd.to_numeric(row[cols["rse"]], errors="coerce") / 100 * abs(e)
        if not (np.isfinite(s) and s > 0):
            raise SpecError(f"{where}: the standard error must be a number > 0")
        if name in est:
            raise SpecError(f"{where}: {name} appears twice")
        est[name] = (float(e), float(s))
    names = _names(parameters, bounds, [n for n in bounds if n in est], "the estimates table")
    weight = _weight(weight, subjects, n_subjects)
    info |= {"parameters": list(names)}
    return JointPrior.from_estimates({n: est[n] for n in names}, bounds, weight=weight, robust=robust,
                                     n_subjects=n_subjects, robust_sd=robust_sd, source=info)
