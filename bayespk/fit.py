"""Sampling a PopulationModel, and the Fit that holds the result.

A :class:`Fit` is an ArviZ DataTree (groups ``posterior``, ``sample_stats``,
``observed_data``, ``constant_data``, ``log_likelihood`` and ``records`` — the
validated dataset itself) plus the resolved :class:`~bayespk.model.spec.Spec`.
Everything downstream (tables, plots, predictions) reads only these, so a fit
saved with :meth:`Fit.save` and read back with :func:`load` behaves the same.
"""

from __future__ import annotations

import json
import platform
import sys
import time
import warnings
from functools import cached_property
from importlib import metadata
from pathlib import Path

import numpy as np
import pandas as pd
import pymc as pm
import xarray as xr

from bayespk.errors import BayesPKError, SpecError
from bayespk.evaluate.diagnostics import check_convergence, convergence, summary_table
from bayespk.evaluate.simulation import quiet_pymc
from bayespk.model.population import PopulationModel
from bayespk.model.spec import Spec

__all__ = ["Fit", "fit", "load"]

SPEC_ATTR = "bayespk_spec"
FORMAT_VERSION = 1


def fit(
    model: PopulationModel,
    *,
    sampler: str | None = None,
    draws: int | None = None,
    tune: int | None = None,
    chains: int | None = None,
    seed: int | None = None,
    target_accept: float | None = None,
    adaptation: str | None = None,
    progress: bool = True,
) -> "Fit":
    """Sample the posterior of ``model`` and check convergence.

    Options left as ``None`` come from the spec's ``[sampler]`` table. When no
    seed is given anywhere, one is drawn and recorded, so every run can be
    repeated exactly.

    Parameters
    ----------
    model : PopulationModel
    sampler : {"nutpie", "pymc"}
        nutpie (default; Rust NUTS on a numba-compiled log-density) or PyMC's NUTS.
    draws, tune, chains : int
    seed : int
    target_accept : float
    adaptation : {"diag", "low_rank"}
        nutpie's mass-matrix adaptation (``[sampler] adaptation``).
    progress : bool
        Show a progress bar while sampling.

    Returns
    -------
    Fit
        With convergence already checked: a :class:`~bayespk.errors.ConvergenceWarning`
        is emitted when divergences, R-hat, ESS or E-BFMI are poor.
    """
    spec = model.spec.with_sampler(name=sampler, draws=draws, tune=tune, chains=chains, seed=seed,
                                   target_accept=target_accept, adaptation=adaptation)
    if spec.sampler.seed is None:
        spec = spec.with_sampler(seed=int(np.random.SeedSequence().entropy % (2**31)))
    s = spec.sampler
    pm_model = model.build()
    t0 = time.perf_counter()
    if s.name == "nutpie":
        try:
            import nutpie
        except ImportError:  # pragma: no cover - nutpie is a dependency
            raise SpecError("sampler 'nutpie' is not installed; pip install nutpie, or use sampler='pymc'") from None
        # CAR-T patients who leave before a phase carry no information on its parameters (see _eta_starts)
        starts = _eta_starts(pm_model, s.seed) if model.cell_kinetics else None
        compiled = nutpie.compile_pymc_model(pm_model, jitter_rvs=_jittered(pm_model, spec), initial_points=starts)
        t_compile = time.perf_counter() - t0
        tree = nutpie.sample(compiled, draws=s.draws, tune=s.tune, chains=s.chains, seed=s.seed,
                             target_accept=s.target_accept, progress_bar=progress, save_warmup=False,
                             adaptation=s.adaptation)
    else:
        t_compile = float("nan")
        with pm_model:
            tree = pm.sample(draws=s.draws, tune=s.tune, chains=s.chains, cores=min(s.chains, 2),
                             random_seed=s.seed, target_accept=s.target_accept, progressbar=progress,
                             compute_convergence_checks=False, nuts_sampler="pymc", init="adapt_diag",
                             initvals=_start_points(pm_model, spec, s.chains, s.seed))
    wall = time.perf_counter() - t0
    tree = _clean_tree(tree)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        pm.compute_log_likelihood(tree, model=pm_model, progressbar=False)
    _add_data_groups(tree, model)
    info = {
        "sampler": s.name,
        "seed": s.seed,
        "wall_seconds": round(wall, 3),
        "compile_seconds": round(t_compile, 3),
        "versions": _versions(),
    }
    tree.attrs.update({
        SPEC_ATTR: json.dumps(spec.to_dict()),
        "bayespk_run": json.dumps(info),
        "bayespk_data_summary": json.dumps(model.data.summary.to_dict()),
        "bayespk_format": FORMAT_VERSION,
    })  # fmt: skip
    result = Fit(tree, spec)
    check_convergence(result.diagnostics(), warn=True)
    return result


class Fit:
    """A fitted population model: the DataTree and the resolved spec.

    Attributes
    ----------
    tree : xarray.DataTree
    spec : Spec
    """

    def __init__(self, tree: xr.DataTree, spec: Spec):
        self.tree = tree
        self.spec = spec

    # ----------------------------------------------------------- contents
    @property
    def posterior(self) -> xr.Dataset:
        return self.tree["posterior"].to_dataset()

    @property
    def population_parameters(self) -> list[str]:
        """Names of the population parameters in the order they are reported."""
        return self.spec.population_parameters

    @property
    def free_parameters(self) -> list[str]:
        """Population parameters and the standardized etas: every sampled quantity."""
        params = self.spec.parameters.items()
        return (self.population_parameters + [f"z_{p}" for p, ps in params if ps.iiv is not None]
                + [f"z_iov_{p}" for p, ps in params if ps.iov is not None])

    def summary(self) -> pd.DataFrame:
        """Posterior summary of the population parameters (natural scale typical values).

        Columns: ``parameter, mean, sd, q5, median, q95, r_hat, ess_bulk, ess_tail``.
        """
        return summary_table(self.posterior, self.population_parameters)

    def diagnostics(self) -> dict:
        """Convergence diagnostics over all free variables, plus run information."""
        d = convergence(self.tree, self.free_parameters)
        d["problems"] = check_convergence(d, warn=False)
        d.update(self.run_info)
        return d

    @property
    def run_info(self) -> dict:
        return json.loads(self.tree.attrs.get("bayespk_run", "{}"))

    @cached_property
    def model(self) -> PopulationModel:
        """The PopulationModel rebuilt from the stored spec and records."""
        records = self.tree["records"].to_dataset().to_dataframe().reset_index(drop=True)
        from bayespk.data.nonmem import read_nonmem

        data = read_nonmem(records)
        data.source = self.spec.data.path or "<records>"
        return PopulationModel(self.spec, data)

    # ----------------------------------------------------------- predictions
    def predict(self, grid: np.ndarray | None = None, *, draws: int | None = 200, seed: int = 0,
                ids=None) -> xr.Dataset:
        """Individual (``IPRED``) and typical-subject (``PRED``) predictions per posterior draw.

        Parameters
        ----------
        grid : array, optional
            Times at which to evaluate every subject (default: the observations).
        draws : int or None
            Thin the posterior to about this many draws (None: all).
        ids : list, optional
            With ``grid``: only these subjects.

        Returns
        -------
        xarray.Dataset
            ``IPRED`` and ``PRED`` with dims (chain, draw, obs) and coords
            ``ID`` and ``TIME`` on ``obs``.
        """
        post = self._thinned(draws)
        pm_model, design = self.model.build_prediction(grid=grid, grid_subjects=ids)
        with quiet_pymc():
            out = pm.sample_posterior_predictive(
                xr.DataTree(children={"posterior": xr.DataTree(post)}), model=pm_model,
                var_names=["IPRED", "PRED"], random_seed=seed, progressbar=False,
            )
        pp = out["posterior_predictive"].to_dataset()
        ids = design.subject_ids[design.obs_subject]
        return pp.assign_coords(ID=("obs", ids), TIME=("obs", design.obs_time))

    def individual_parameters(self, *, draws: int | None = 200, seed: int = 0) -> xr.Dataset:
        """Each subject's structural parameters per posterior draw (baseline covariates).

        Returns an ``xarray.Dataset`` with one variable per parameter (``CL``,
        ``CMAX``...), dims (chain, draw, ID).
        """
        post = self._thinned(draws)
        pm_model = self.model.build_individual()
        names = [f"{p}_i" for p in self.spec.parameters]
        with quiet_pymc():
            out = pm.sample_posterior_predictive(
                xr.DataTree(children={"posterior": xr.DataTree(post)}), model=pm_model,
                var_names=names, random_seed=seed, progressbar=False,
            )
        pp = out["posterior_predictive"].to_dataset()
        return pp.rename({f"{p}_i": p for p in self.spec.parameters})

    def _thinned(self, draws: int | None) -> xr.Dataset:
        """The posterior thinned to about ``draws`` draws (None: all)."""
        post = self.posterior
        if draws is not None:
            per_chain = -(-draws // post.sizes["chain"])
            post = post.isel(draw=slice(None, None, max(1, post.sizes["draw"] // per_chain)))
        return post

    # ----------------------------------------------------------- evaluation
    def plot_individual(self, ids=None, **kwargs):
        """Observed points with the posterior median and interval of each subject's curve.

        Returns ``(figure, curves)``; see :func:`bayespk.evaluate.plots.plot_individual`.
        """
        from bayespk.evaluate.plots import plot_individual

        return plot_individual(self, ids=ids, **kwargs)

    def vpc(self, **kwargs):
        """Visual predictive check (``pred_corr=True``: pcVPC); see :func:`bayespk.evaluate.vpc.vpc`.

        Returns a VPC that unpacks as ``figure, table``.
        """
        from bayespk.evaluate.vpc import vpc

        return vpc(self, **kwargs)

    def npde(self, **kwargs):
        """Normalised prediction distribution errors; see :func:`bayespk.evaluate.npde.npde`."""
        from bayespk.evaluate.npde import npde

        return npde(self, **kwargs)

    def gof(self, **kwargs):
        """Goodness-of-fit panels and table; see :func:`bayespk.evaluate.gof.gof`."""
        from bayespk.evaluate.gof import gof

        return gof(self, **kwargs)

    def shrinkage(self) -> pd.DataFrame:
        """Eta shrinkage per parameter with IIV."""
        from bayespk.evaluate.gof import shrinkage

        return shrinkage(self)

    def plot_eta_covariates(self, covariates=None):
        """Posterior-mean etas against covariates; returns ``(figure, table)``."""
        from bayespk.evaluate.gof import eta_covariates

        return eta_covariates(self, covariates)

    def plot_covariate_effects(self, **kwargs):
        """Forest plot of covariate and treatment effects; returns ``(figure, table)``.

        See :func:`bayespk.evaluate.gof.covariate_effects`.
        """
        from bayespk.evaluate.gof import covariate_effects

        return covariate_effects(self, **kwargs)

    def plot_prior_posterior(self, **kwargs):
        """Prior vs posterior of every population parameter; returns ``(figure, table)``."""
        from bayespk.evaluate.gof import prior_posterior

        return prior_posterior(self, **kwargs)

    def loo(self, by: str = "obs"):
        """PSIS-LOO (ELPD with SE, Pareto k); see :func:`bayespk.evaluate.compare.loo`."""
        from bayespk.evaluate.compare import loo

        return loo(self, by=by)

    # ----------------------------------------------------------- persistence
    def save(self, path: str | Path) -> Path:
        """Write the DataTree (with the spec in its attributes) to a netCDF file."""
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        self.tree.to_netcdf(path, engine="h5netcdf")
        return path

    def write_run(self, run_dir: str | Path) -> Path:
        """Write a run directory: spec.toml, fit.nc, summary.csv, diagnostics.json."""
        run = Path(run_dir)
        run.mkdir(parents=True, exist_ok=True)
        self.spec.write(run / "spec.toml")
        self.save(run / "fit.nc")
        self.summary().to_csv(run / "summary.csv", index=False)
        (run / "diagnostics.json").write_text(json.dumps(self.diagnostics(), indent=2, default=_json_default))
        return run

    def __repr__(self) -> str:
        d = self.posterior.sizes
        return f"Fit({self.spec.name!r}, {d['chain']} chains x {d['draw']} draws)"


def load(path: str | Path) -> Fit:
    """Read a fit written by :meth:`Fit.save` (a ``fit.nc`` file or a run directory)."""
    path = Path(path)
    if path.is_dir():
        path = path / "fit.nc"
    if not path.is_file():
        raise BayesPKError(f"{path}: no such fit file")
    tree = xr.open_datatree(path, engine="h5netcdf").load()
    if SPEC_ATTR not in tree.attrs:
        raise BayesPKError(f"{path}: not a bayespk fit (no {SPEC_ATTR} attribute)")
    spec = Spec.from_dict(json.loads(tree.attrs[SPEC_ATTR]))
    return Fit(tree, spec)


# ------------------------------------------------------------------ helpers
def _jittered(pm_model: pm.Model, spec: Spec) -> set:
    """Free variables whose starting values are jittered (uniform +-1 on the unconstrained scale).

    Typical values start at their prior's support point and every subject at
    the typical subject (z = 0), without jitter: a factor of e on CL or KA, or
    +-1 on hundreds of etas at once, can put predictions orders of magnitude
    off, where proportional error makes the likelihood so steep that a chain's
    step size collapses and it never moves (seen with 50 and 500 simulated
    subjects). Omegas, covariate coefficients and residual SDs are jittered,
    so chains still start apart.
    """
    return {rv for rv in pm_model.free_RVs if rv.name not in spec.parameters and not rv.name.startswith("z_")}


def _eta_starts(pm_model: pm.Model, seed: int) -> dict:
    """Starting values of the standardized etas ``z_*``: N(0, 0.01), close to the typical subject.

    Exactly 0 would give a subject whose data say nothing about a parameter
    (e.g. a CAR-T patient who left before the contraction phase) a gradient of
    exactly 0 there, which nutpie refuses as an initial point.
    """
    rng = np.random.default_rng(seed)
    return {rv.name: 0.01 * rng.standard_normal(tuple(rv.shape.eval()))
            for rv in pm_model.free_RVs if rv.name.startswith("z_")}


def _start_points(pm_model: pm.Model, spec: Spec, chains: int, seed: int) -> list[dict]:
    """Per-chain starting points for PyMC's sampler, with the same policy as :func:`_jittered`."""
    from pymc.initial_point import make_initial_point_fn

    fn = make_initial_point_fn(model=pm_model, jitter_rvs=_jittered(pm_model, spec), return_transformed=False)
    names = {rv.name for rv in pm_model.free_RVs}
    return [{k: v for k, v in fn(seed + c).items() if k in names} for c in range(chains)]


def _clean_tree(tree: xr.DataTree) -> xr.DataTree:
    """Keep posterior and sample_stats; drop object-typed stats netCDF cannot hold."""
    keep = {}
    for g in ("posterior", "sample_stats"):
        ds = tree[g].to_dataset()
        ds = ds.drop_vars([v for v in ds.data_vars if ds[v].dtype == object])
        keep[g] = xr.DataTree(ds)
    out = xr.DataTree(children=keep)
    out.attrs.update(tree.attrs)
    return out


def _add_data_groups(tree: xr.DataTree, model: PopulationModel) -> None:
    d = model.design
    obs = {"obs": np.arange(d.n_obs)}
    tree["observed_data"] = xr.DataTree(xr.Dataset({"DV": ("obs", d.obs_dv)}, coords=obs))
    const = xr.Dataset(
        {
            "SUBJECT": ("obs", d.subject_ids[d.obs_subject]),
            "TIME": ("obs", d.obs_time),
            "ROW": ("obs", d.obs_row),
            "CENS": ("obs", d.obs_cens),
            "LIMIT": ("obs", d.obs_limit),
        },
        coords=obs | {"ID": d.subject_ids},
    )
    if model.pd is not None:
        p = model.pd_design
        tree["observed_data"]["DV_PD"] = xr.DataArray(p.obs_dv, dims="pd_obs", coords={"pd_obs": np.arange(p.n_obs)})
        const["PD_SUBJECT"] = ("pd_obs", p.subject_ids[p.obs_subject])
        const["PD_TIME"] = ("pd_obs", p.obs_time)
        const["PD_ROW"] = ("pd_obs", p.obs_row)
        const = const.assign_coords(pd_obs=np.arange(p.n_obs))
    for c in model.spec.covariates:
        if c.column not in const:
            const[c.column] = ("ID", np.asarray(model._covariates[c.name]["values"]))
    tree["constant_data"] = xr.DataTree(const)
    records = model.data.table.copy()
    tree["records"] = xr.DataTree(xr.Dataset.from_dataframe(records.reset_index(drop=True).rename_axis("row")))


def _versions() -> dict:
    out = {"python": platform.python_version()}
    for pkg in ("bayespk", "pymc", "pytensor", "nutpie", "arviz", "numpy", "pandas", "xarray"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = None
    out["platform"] = sys.platform
    return out


def _json_default(o):
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating,)):
        return float(o)
    raise TypeError(type(o))
