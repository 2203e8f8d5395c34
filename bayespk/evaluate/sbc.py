"""Simulation-based calibration and simulation-estimation studies, run on Dask.

Simulation-based calibration (SBC; Talts et al. 2018, arXiv:1804.06788;
Modrák et al. 2023, Bayesian Analysis, doi:10.1214/23-BA1404) checks the
model and the sampler together: draw the population parameters from the
prior, simulate a data set on the spec's design (doses, sampling times,
covariates and LLOQs of its data), fit it, and count how many of ``L``
posterior draws lie below the drawn value. If the posterior is computed
correctly the rank is uniform on ``0..L`` for every parameter. The ECDF of
the ranks (as fractions) is compared with the uniform with simultaneous 95%
bands (Säilynoja et al. 2022, Statistics and Computing 32:32; computed by
``arviz_stats``), and a chi-square test over ``bins`` equal rank bins is
reported beside it. A U-shaped or skewed histogram, or an ECDF difference
leaving the band, shows a posterior too narrow, too wide or biased.

A simulation-estimation study uses one fixed truth instead of prior draws:
bias, relative RMSE and coverage of the 90% intervals per parameter, for a
design (sampling times, group sizes) before the study is run.

Replicates are simulated with the resolved spec (every prior explicit, so
the data-dependent defaults do not move with the replicate), observations
below the data's LLOQ are censored as in the data, and each replicate is
fitted with ``observations_as_data=True`` so the model is compiled once and
reused for every replicate (:mod:`bayespk.parallel.runner`). With ``[error]
blq = "drop"`` (M1) the values below the LLOQ are flagged as well, and the fit
discards them.

Models with PD observations (a built-in PD model such as the direct Emax, or
the ``pd_output`` of a model written as equations) simulate both outputs from
one draw: the PK observations (DV) and the PD observations (DV_PD, the rows
named by ``[model] pd_observations``) come from the same individual
parameters, each with its own residual error; every population parameter of
both parts is ranked. A sequential PK/PD spec (``[model] pk_fit``) is refused:
its PK parameters are fixed at another fit's medians, not drawn from a prior.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bayespk.errors import BayesPKError, SpecError
from bayespk.sampling import quiet_pymc

__all__ = ["sbc", "simulation_estimation", "SBCResult", "SimEstResult", "load_sbc"]

DEFAULT_SETTINGS = {"chains": 2, "draws": 500, "tune": 500}
DEFAULT_L = 99  # posterior draws kept per replicate: ranks 0..99, 100 possible values


# ====================================================================== replicates
def _model(spec, data):
    from bayespk.model.population import PopulationModel
    from bayespk.model.spec import Spec

    if not isinstance(spec, Spec):
        spec = Spec.from_dict(spec) if isinstance(spec, dict) else Spec.from_toml(spec)
    if spec.pk_fit is not None:
        raise SpecError("sbc: [model] pk_fit (sequential PK/PD) fixes the PK parameters at another fit's medians, "
                        "so they are not drawn from their prior; calibrate the joint model (remove pk_fit)")
    return PopulationModel(spec, data)


def _outputs(model) -> list[tuple[str, object, object]]:
    """``(name, design, error model)`` of each simulated output: ``DV`` (PK, when the design has PK
    observations) and ``DV_PD`` (models with PD observations), in the order of the columns of :func:`_simulate`."""
    out = [("DV", model.design, model.spec.error)] if model.design.n_obs or not model.has_pd else []
    if model.has_pd:
        out.append(("DV_PD", model.pd_design, model.spec.pd_error))
    return out


def _limits(model) -> np.ndarray:
    """The LLOQ of every simulated observation (the columns of :func:`_simulate`): the LLOQ column, else the
    censored rows' limit, else the spec's ``[data] lloq`` (PK only), else NaN (never censored)."""
    t = model.data.table.set_index("ROW")
    parts = []
    for name, d, _ in _outputs(model):
        limit = np.full(d.n_obs, np.nan)
        if "LLOQ" in t.columns:
            limit = t.loc[d.obs_row, "LLOQ"].to_numpy(float)
        cens_limits = d.obs_limit[(d.obs_cens == 1) & np.isfinite(d.obs_limit)]
        lloq = model.spec.data.lloq if name == "DV" else None
        study = float(pd.Series(cens_limits).mode().iloc[0]) if len(cens_limits) else (
            lloq if lloq is not None else np.nan)
        parts.append(np.where(np.isfinite(limit), limit, study))
    return np.concatenate(parts)


def _replicate_table(model, dv: np.ndarray, limit: np.ndarray) -> pd.DataFrame:
    """The data's records with the observations replaced by ``dv`` (the columns of :func:`_simulate`: PK
    observations, then PD observations), censored below ``limit`` where that output's error model handles
    BLQ rows (M3, M4). With ``blq = "drop"`` (M1) they are flagged too, and the fit then discards them."""
    t = model.data.table.copy()
    start = 0
    for _, d, err in _outputs(model):
        stop = start + d.n_obs
        y, lim = dv[start:stop], limit[start:stop]
        start = stop
        pos = pd.Index(t.ROW).get_indexer(d.obs_row)
        censor = np.isfinite(lim) & (y < lim) & (err.blq in ("M3", "M4", "drop"))
        t.loc[t.index[pos], "DV"] = np.where(censor, lim, y)
        if censor.any() and "CENS" not in t.columns:
            t["CENS"] = 0
        if "CENS" in t.columns:
            t.loc[t.index[pos], "CENS"] = censor.astype(int)
        if "BLQ" in t.columns:
            t.loc[t.index[pos], "BLQ"] = censor.astype(int)
        if censor.any():
            if "LLOQ" not in t.columns:
                t["LLOQ"] = np.nan
            t.loc[t.index[pos[censor]], "LLOQ"] = lim[censor]
    if start != len(dv):
        raise BayesPKError(f"sbc: {len(dv)} simulated observations for a design of {start}")
    return t.drop(columns="ROW")


def _uncensored(model):
    """The model on a copy of its data with every censoring flag cleared (observations drawn from it are
    not clipped at their limits; :func:`_replicate_table` censors them afterwards)."""
    from bayespk.data.nonmem import read_nonmem
    from bayespk.model.population import PopulationModel

    t = model.data.table.drop(columns="ROW").copy()
    for col in ("CENS", "BLQ"):
        if col in t.columns:
            t[col] = 0
    return PopulationModel(model.spec, read_nonmem(t, negative_dv=True))


def _simulation_graph(model):
    """``(pm_model, variables)``: a graph drawing new observations and the names of its simulated outputs.

    Without PD: :meth:`PopulationModel.build_prediction` (``DV_sim``, uncensored). With PD observations
    (built-in PD model or a ``pd_output``): the likelihood graph of the model on uncensored data, whose
    observed ``DV`` and ``DV_PD`` are drawn jointly from the same individual parameters.
    """
    if not model.has_pd:
        return model.build_prediction(simulate=True)[0], ["DV_sim"]
    sim = _uncensored(model)
    return sim.build(), [name for name, _, _ in _outputs(model)]


def _simulate(model, values: pd.DataFrame | None, n: int, seed: int) -> tuple[pd.DataFrame, np.ndarray]:
    """``(truths, dv)``: population parameters (one row per replicate) and the simulated observations
    (n x observations; with PD, the PK observations then the PD ones), from the prior (``values`` None) or at
    fixed values."""
    import pymc as pm
    import xarray as xr


    names = model.spec.population_parameters
    pm_model, outputs = _simulation_graph(model)
    with quiet_pymc():
        if values is None:
            prior = pm.sample_prior_predictive(draws=n, model=pm_model, var_names=[*names, *outputs],
                                               random_seed=seed)
            ds = prior["prior"].to_dataset()
            if "prior_predictive" in prior.children:  # observed variables (PD models) land there
                ds = ds.assign(prior["prior_predictive"].to_dataset())
        else:
            post = xr.Dataset({k: (("chain", "draw"), np.full((1, n), float(values[k]))) for k in values},
                              coords={"chain": [0], "draw": np.arange(n)})
            ds = pm.sample_posterior_predictive(xr.DataTree(children={"posterior": xr.DataTree(post)}),
                                                model=pm_model, var_names=outputs, random_seed=seed,
                                                progressbar=False)["posterior_predictive"].to_dataset()
            ds = ds.assign(post)
    flat = ds.stack(rep=("chain", "draw"))
    truths = {}
    for name in names:
        if name not in flat:
            continue
        v = flat[name]
        extra = [dim for dim in v.dims if dim != "rep"]
        if extra:
            v = v.stack(item=extra).transpose("rep", "item")
            for j, lab in enumerate(v["item"].values):
                truths[f"{name}[{','.join(map(str, np.atleast_1d(lab)))}]"] = v.values[:, j]
        else:
            truths[name] = v.values
    dv = np.concatenate([np.asarray(flat[o].transpose("rep", ...).values, dtype=float) for o in outputs], axis=1)
    return pd.DataFrame(truths), dv


def _task(payload: dict) -> dict:
    """Fit one replicate (on a worker): ranks of the truth among ``L`` thinned draws, interval, convergence."""
    from bayespk.data.nonmem import read_nonmem
    from bayespk.fit import fit
    from bayespk.model.population import PopulationModel
    from bayespk.model.spec import Spec

    spec = Spec.from_dict(payload["spec"])
    model = PopulationModel(spec, read_nonmem(payload["table"], negative_dv=True), observations_as_data=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = fit(model, progress=False, seed=payload["seed"], **payload["settings"])
    diag = f.diagnostics()
    post = f.posterior
    L = payload["L"]
    out = {"ranks": {}, "median": {}, "q5": {}, "q95": {},
           "divergences": int(diag["divergences"]), "max_r_hat": float(diag["max_r_hat"]),
           "min_ess_bulk": float(diag["min_ess_bulk"]), "compile_cache": diag.get("compile_cache")}
    for label, truth in payload["truth"].items():
        name, _, level = label.partition("[")
        v = post[name]
        if level:
            extra = [d for d in v.dims if d not in ("chain", "draw")]
            v = v.stack(item=extra)
            labels = [",".join(map(str, np.atleast_1d(x))) for x in v["item"].values]
            v = v.isel(item=labels.index(level.rstrip("]")))
        draws = np.asarray(v.transpose("chain", "draw").values)  # chains x draws
        per_chain = -(-L // draws.shape[0])
        step = max(1, draws.shape[1] // per_chain)
        kept = draws[:, ::step][:, :per_chain].ravel()[:L]
        out["ranks"][label] = int((kept < truth).sum())
        all_draws = draws.ravel()
        out["median"][label] = float(np.median(all_draws))
        out["q5"][label], out["q95"][label] = (float(q) for q in np.quantile(all_draws, [0.05, 0.95]))
    return out


def _settings(chains, draws, tune, L) -> dict:
    s = {"chains": chains, "draws": draws, "tune": tune}
    for k, v in s.items():
        if not isinstance(v, int) or v < 1:
            raise BayesPKError(f"{k}: expected a positive integer, got {v!r}")
    if not isinstance(L, int) or L < 1:
        raise BayesPKError(f"thin_to: expected a positive integer, got {L!r}")
    if L > chains * draws:
        raise BayesPKError(f"thin_to = {L} is more than the {chains} x {draws} draws of each fit")
    return s


def _resolved(model) -> dict:
    d = model.spec.to_dict()
    d.get("data", {}).pop("sha256", None)
    return d


def _run(kind, spec, data, truth, n, out, seed, chains, draws, tune, L, fit_spec=None, **runner) -> tuple:
    from bayespk.parallel.runner import run_tasks

    if not isinstance(n, int) or isinstance(n, bool) or n < 1:
        raise BayesPKError(f"n: expected a positive number of replicates, got {n!r}")
    settings = _settings(chains, draws, tune, L)
    model = _model(spec, data)
    fit_model = model if fit_spec is None else _model(fit_spec, model.data)
    resolved = _resolved(fit_model)
    truths, dv = _simulate(model, truth, n, seed)
    if fit_spec is not None:
        fitted = set(fit_model.spec.population_parameters)
        truths = truths[[c for c in truths.columns if c.partition("[")[0] in fitted]]
        if truths.empty:
            raise BayesPKError("fit_spec: no population parameter in common with the simulating spec")
    limit = _limits(model)
    tasks = {}
    for i in range(n):
        tasks[f"rep{i:04d}"] = {
            "spec": resolved, "table": _replicate_table(model, dv[i], limit), "seed": seed + 1 + i,
            "settings": settings, "L": L, "truth": {k: float(truths[k].iloc[i]) for k in truths},
        }
    identity = {"kind": kind, "spec": _resolved(model), "fit_spec": resolved, "n": n, "seed": seed,
                "settings": settings, "L": L,
                "truth": None if truth is None else {k: float(v) for k, v in truth.items()}}
    work = run_tasks(_task, tasks, out, identity=identity, name=kind, **runner)
    keys = [k for k in tasks if k in work.done]
    rows = pd.DataFrame([{"replicate": k, **{f"{s}:{p}": work.done[k][s][p] for s in ("ranks", "median", "q5",
                                                                                        "q95")
                                             for p in work.done[k]["ranks"]},
                          "divergences": work.done[k]["divergences"], "max_r_hat": work.done[k]["max_r_hat"],
                          "min_ess_bulk": work.done[k]["min_ess_bulk"]}
                         for k in keys])
    truth_table = pd.DataFrame({k: truths[k].to_numpy() for k in truths}, index=list(tasks))
    return work, rows, truth_table, L


# ====================================================================== SBC
@dataclass
class SBCResult:
    """Ranks of every population parameter over the replicates, their tests and the ECDF plot."""

    ranks: pd.DataFrame  # replicates x parameters, 0..L
    L: int
    failed: dict
    fits: pd.DataFrame  # per replicate: divergences, max R-hat
    out: Path | None = None

    def tests(self, bins: int = 10, prob: float = 0.95) -> pd.DataFrame:
        """Per parameter: chi-square test over ``bins`` rank bins and whether the rank ECDF leaves the
        simultaneous ``prob`` band; ``passes`` = chi-square p > 0.01 and inside the band."""
        from scipy import stats

        rows = []
        for p in self.ranks.columns:
            r = self.ranks[p].to_numpy()
            counts = np.bincount(np.minimum(r * bins // (self.L + 1), bins - 1), minlength=bins)
            chi2, pval = stats.chisquare(counts)
            x, ecdf, lo, hi = self._ecdf(p, prob)
            outside = bool(((ecdf < lo - 1e-12) | (ecdf > hi + 1e-12)).any())
            rows.append({"parameter": p, "n": len(r), "mean_rank_fraction": float(np.mean(r) / self.L),
                         "chi2": float(chi2), "chi2_p": float(pval), "ecdf_outside_band": outside,
                         "passes": bool(pval > 0.01 and not outside)})
        return pd.DataFrame(rows)

    def notes(self) -> list[str]:
        """What makes the ranks less trustworthy: failed replicates, divergences, too few effective draws."""
        out = []
        if self.failed:
            out.append(f"{len(self.failed)} replicates failed (see failed.json); the ranks leave them out")
        if "divergences" in self.fits and (self.fits.divergences > 0).any():
            out.append(f"{int((self.fits.divergences > 0).sum())} of {len(self.fits)} fits had divergences")
        if "min_ess_bulk" in self.fits and float(self.fits.min_ess_bulk.median()) < self.L:
            out.append(f"median of the fits' smallest bulk ESS {self.fits.min_ess_bulk.median():.0f} < the {self.L} "
                       "draws ranked: autocorrelated draws bend the rank distribution; draw more or lower thin_to")
        return out

    def failing(self, **kwargs) -> pd.DataFrame:
        """The parameters that fail (see :meth:`tests`)."""
        t = self.tests(**kwargs)
        return t[~t.passes].reset_index(drop=True)

    def _ecdf(self, p: str, prob: float):
        from arviz_stats.ecdf_utils import ecdf_pit

        rng = np.random.default_rng(0)
        r = self.ranks[p].to_numpy()
        u = (r + rng.uniform(size=r.size)) / (self.L + 1)  # ranks 0..L as fractions, ties broken at random
        return ecdf_pit(u, prob, 1000, rng=np.random.default_rng(214))

    def plot(self, prob: float = 0.95, ncols: int = 4):
        """ECDF of the rank fractions minus the uniform CDF, with the simultaneous ``prob`` band, per parameter."""
        import matplotlib.pyplot as plt

        names = list(self.ranks.columns)
        nrows = -(-len(names) // ncols)
        fig, axes = plt.subplots(nrows, min(ncols, len(names)), figsize=(3.2 * min(ncols, len(names)), 2.6 * nrows),
                                 squeeze=False, sharex=True)
        for ax, p in zip(axes.ravel(), names):
            x, ecdf, lo, hi = self._ecdf(p, prob)
            ax.fill_between(x, lo - x, hi - x, color="0.85", step="post", label=f"{prob:.0%} simultaneous band")
            ax.step(x, ecdf - x, where="post", color="C3" if ((ecdf < lo) | (ecdf > hi)).any() else "C0")
            ax.axhline(0, color="0.4", lw=0.6)
            ax.set_title(p, fontsize=9)
        for ax in axes.ravel()[len(names):]:
            ax.set_visible(False)
        for ax in axes[-1]:
            ax.set_xlabel("fractional rank of the truth")
        for ax in axes[:, 0]:
            ax.set_ylabel("ECDF - uniform")
        fig.suptitle(f"Simulation-based calibration: {len(self.ranks)} replicates, {self.L} draws each")
        fig.tight_layout()
        return fig


def sbc(spec, data=None, *, n: int = 100, out: str | Path, seed: int = 0, chains: int = 2, draws: int = 500,
        tune: int = 500, thin_to: int = DEFAULT_L, fit_spec=None, client=None, scheduler: str | None = None,
        workers: int | None = None, progress=None) -> SBCResult:
    """Simulation-based calibration of ``spec`` on its data's design (see the module docstring).

    Parameters
    ----------
    spec : Spec, dict or path
    data : Dataset, DataFrame or path, optional
        The design (doses, times, covariates, LLOQs); default the spec's data. Its DV values are not used.
    n : int
        Replicates.
    out : path
        Output folder (``tasks/`` per replicate; rerunning resumes).
    seed : int
    chains, draws, tune : int
        Sampler settings of each fit.
    thin_to : int
        Posterior draws kept per fit for the rank (evenly thinned; ranks 0..thin_to).
    fit_spec : Spec, dict or path, optional
        Fit the replicates with this spec instead (a deliberately different
        model or prior: SBC should then fail); ranks of the parameters both have.
    client, scheduler, workers, progress
        As for :func:`bayespk.parallel.run_tasks`.
    """
    if isinstance(n, int) and n == 1:
        raise BayesPKError("n: SBC needs at least 2 replicates (ranks are compared across replicates; 100 or more "
                           "give a verdict)")
    work, rows, truths, L = _run("sbc", spec, data, None, n, out, seed, chains, draws, tune, thin_to,
                                 fit_spec=fit_spec, client=client, scheduler=scheduler, workers=workers,
                                 progress=progress)
    result = _sbc_result(rows, L, work.failed, Path(out))
    _write_sbc(result, Path(out))
    return result


def _sbc_result(rows: pd.DataFrame, L: int, failed: dict, out: Path | None) -> SBCResult:
    if rows.empty:
        raise BayesPKError(f"sbc: every replicate failed; first error: {next(iter(failed.values()), '?')}")
    ranks = rows.set_index("replicate")[[c for c in rows.columns if c.startswith("ranks:")]]
    ranks.columns = [c.removeprefix("ranks:") for c in ranks.columns]
    return SBCResult(ranks=ranks.astype(int), L=L, failed=failed,
                     fits=rows.set_index("replicate")[[c for c in ("divergences", "max_r_hat", "min_ess_bulk")
                                                       if c in rows.columns]], out=out)


def _write_sbc(result: SBCResult, out: Path) -> None:
    import matplotlib.pyplot as plt

    result.ranks.to_csv(out / "ranks.csv")
    result.tests().to_csv(out / "tests.csv", index=False)
    fig = result.plot()
    fig.savefig(out / "sbc_ecdf.png", dpi=110)
    plt.close(fig)
    (out / "failed.json").write_text(json.dumps(result.failed, indent=1), encoding="utf-8")


def load_sbc(out: str | Path) -> SBCResult:
    """The SBC result of a finished (or partly finished) workload folder."""
    out = Path(out)
    ident = json.loads((out / "workload.json").read_text(encoding="utf-8"))
    if ident.get("kind") != "sbc":
        raise BayesPKError(f"{out}: not an SBC workload ({ident.get('kind')})")
    recs = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((out / "tasks").glob("*.json"))]
    done = [r for r in recs if r["status"] == "done"]
    rows = pd.DataFrame([{"replicate": r["key"], **{f"ranks:{p}": v for p, v in r["result"]["ranks"].items()},
                          "divergences": r["result"]["divergences"], "max_r_hat": r["result"]["max_r_hat"],
                          "min_ess_bulk": r["result"]["min_ess_bulk"]}
                         for r in done])
    return _sbc_result(rows, ident["L"], {r["key"]: r["error"] for r in recs if r["status"] == "failed"}, out)


# ====================================================================== simulation-estimation
@dataclass
class SimEstResult:
    """Estimates of every replicate against the truth: bias, precision and coverage per parameter."""

    estimates: pd.DataFrame  # per replicate and parameter: median, q5, q95
    truth: dict
    failed: dict

    def summary(self) -> pd.DataFrame:
        """Per parameter: truth, mean of the posterior medians, relative bias %, relative RMSE %, coverage
        of the 90% intervals, and replicates."""
        rows = []
        for p, t in self.truth.items():
            med = self.estimates[f"median:{p}"].to_numpy()
            inside = (self.estimates[f"q5:{p}"] <= t) & (t <= self.estimates[f"q95:{p}"])
            scale = abs(t) if t != 0 else 1.0
            rows.append({"parameter": p, "truth": t, "mean_median": float(np.mean(med)),
                         "rel_bias_percent": float(100 * np.mean(med - t) / scale),
                         "rel_rmse_percent": float(100 * np.sqrt(np.mean((med - t) ** 2)) / scale),
                         "coverage_90": float(np.mean(inside)), "n": len(med)})
        return pd.DataFrame(rows)


def simulation_estimation(spec, truth: dict, data=None, *, n: int = 50, out: str | Path, seed: int = 0,
                          chains: int = 2, draws: int = 500, tune: int = 500, client=None,
                          scheduler: str | None = None, workers: int | None = None, progress=None) -> SimEstResult:
    """Simulate ``n`` studies on the data's design at ``truth`` (every population parameter by name), fit
    each, and report bias, precision and coverage (see :meth:`SimEstResult.summary`)."""
    model = _model(spec, data)
    names = model.spec.population_parameters
    missing = [p for p in names if p not in truth]
    unknown = [p for p in truth if p not in names]
    if missing or unknown:
        raise BayesPKError("truth: " + "; ".join(
            ([f"missing {', '.join(missing)}"] if missing else []) + ([f"unknown {', '.join(unknown)}"]
                                                                       if unknown else []))
            + f" (the population parameters are {', '.join(names)})")
    work, rows, truths, _ = _run("simulation-estimation", spec, data, truth, n, out, seed, chains, draws, tune,
                                 min(DEFAULT_L, chains * draws), client=client, scheduler=scheduler,
                                 workers=workers, progress=progress)
    if rows.empty:
        raise BayesPKError(f"every replicate failed; first error: {next(iter(work.failed.values()), '?')}")
    result = SimEstResult(estimates=rows.set_index("replicate"), truth={p: float(truth[p]) for p in names},
                          failed=work.failed)
    result.summary().to_csv(Path(out) / "summary.csv", index=False)
    return result
