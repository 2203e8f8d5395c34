"""K-fold cross-validation by subject, run on Dask.

PSIS-LOO is unreliable where subjects have few observations (each is
influential for its own eta: 15-46 Pareto k > 0.7 on phenobarbital). K-fold
by subject asks the question a population model is for, how well it predicts
a new patient: the subjects are split into ``k`` folds (at random, or
balanced over the levels of a column with ``stratify``); for each fold the
model is fitted to the other subjects and the held-out subjects' data are
scored by their posterior predictive density as *new* subjects,

    p(y_j | data_-j) = E_theta[ integral p(y_j | theta, eta) p(eta | theta) d eta ],

estimated by plain Monte Carlo: for each of ``draws_used`` thinned posterior
draws theta_s, ``n_eta`` new etas (and occasion kappas) are drawn from the
population distribution N(0, Omega_s), and

    elpd_j = log( 1/(S M) sum_s sum_m p(y_j | theta_s, eta_sm) ).

(No importance weighting: with M = 500 the Monte Carlo error of elpd_j is
small against the differences that matter between models, and the estimate
of the density itself is unbiased.) The model's elpd is the sum over
subjects, with standard error ``sqrt(n var(elpd_j))``; two models compared on
the same folds get the SE of their paired per-subject differences
(:func:`compare_kfold`). ``k`` equal to the number of subjects is
leave-one-subject-out.

Every fold is fitted with the spec resolved on the full data (data-dependent
default priors fixed once), so the folds differ only in their data.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bayespk.errors import BayesPKError

__all__ = ["kfold", "KFoldResult", "compare_kfold", "load_kfold", "folds"]


def folds(subjects: pd.Series, k: int, seed: int = 0, strata: pd.Series | None = None) -> pd.Series:
    """Fold number (0..k-1) per subject: a random split, balanced over ``strata`` levels when given."""
    n = len(subjects)
    if not isinstance(k, int) or isinstance(k, bool) or k < 2:
        raise BayesPKError(f"k: expected at least 2 folds, got {k!r}")
    if k > n:
        raise BayesPKError(f"k = {k} folds is more than the {n} subjects (k = {n} is leave-one-subject-out)")
    rng = np.random.default_rng(seed)
    order = rng.permutation(n)
    if strata is not None:
        levels = pd.Series(np.asarray(strata)[order]).astype(str)
        order = order[np.argsort(levels.to_numpy(), kind="stable")]  # random within each level, levels in turn
    fold = np.empty(n, dtype=int)
    fold[order] = np.arange(n) % k
    return pd.Series(fold, index=pd.Index(subjects, name="ID"), name="fold")


def _heldout_density(model, posterior, n_draws: int, n_eta: int, seed: int) -> np.ndarray:
    """elpd of each subject of ``model`` (its data are the held-out subjects) as a new subject."""
    from pymc.pytensorf import compile as compile_pymc
    from pytensor.graph import clone_replace
    from scipy.special import logsumexp

    pm_model = model.build()
    terms = pm_model.logp(vars=pm_model.observed_RVs, sum=False)
    repl, inputs, names = {}, [], []
    for rv in pm_model.free_RVs:
        value = pm_model.rvs_to_values[rv]
        natural = value.type(name=rv.name)
        tr = pm_model.rvs_to_transforms.get(rv)
        repl[value] = tr.forward(natural, *rv.owner.inputs) if tr is not None else natural
        inputs.append(natural)
        names.append(rv.name)
    terms = clone_replace(terms, repl)
    # compiled as PyMC compiles log-densities: a failed parameter check gives -inf, not an error (a new
    # subject's eta drawn far in the tail can drive a prediction, and with it a proportional error SD, to 0)
    f = compile_pymc(inputs, terms, on_unused_input="ignore")
    designs = [model.design] + ([model.pd_design] if len(terms) > 1 else [])
    subj = [d.obs_subject for d in designs]
    n_subj = len(model.design.subject_ids)

    post = posterior.stack(sample=("chain", "draw"))
    rng = np.random.default_rng(seed)
    pick = rng.choice(post.sizes["sample"], size=min(n_draws, post.sizes["sample"]), replace=False)
    start = pm_model.initial_point()
    shapes = {rv.name: tuple(int(s) for s in start[pm_model.rvs_to_values[rv].name].shape)
              for rv in pm_model.free_RVs}
    weights = {f"z_{n}": w or 0.0 for n, w in model.centering_weights().items()}  # None: shared, still 0
    ll = np.empty((len(pick), n_eta, n_subj))
    for a, s in enumerate(pick):
        fixed = {}
        for name in names:
            if name.startswith("z_"):
                continue
            if name not in post:
                raise BayesPKError(f"k-fold: the fitted posterior has no {name}")
            fixed[name] = np.asarray(post[name].isel(sample=s).values, dtype=float).reshape(shapes[name])
        for m in range(n_eta):
            args = []
            for name in names:
                if name.startswith("z_"):  # z ~ N(0, omega**w), w the centring weight (0 for z_iov_)
                    w = weights.get(name, 0.0)
                    scale = float(post[f"omega_{name[2:]}"].isel(sample=s)) ** w if w else 1.0
                    args.append(scale * rng.standard_normal(shapes[name]))
                else:
                    args.append(fixed[name])
            out = f(*args)
            total = np.zeros(n_subj)
            for t, idx in zip(out, subj):
                np.add.at(total, idx, np.asarray(t, dtype=float))
            ll[a, m] = total
    flat = ll.reshape(-1, n_subj)
    return logsumexp(flat, axis=0) - np.log(flat.shape[0])


def _task(payload: dict) -> dict:
    """Fit the training subjects of one fold and score the held-out ones (on a worker)."""
    from bayespk.data.nonmem import id_label, read_nonmem
    from bayespk.fit import fit
    from bayespk.model.population import PopulationModel
    from bayespk.model.spec import Spec

    spec = Spec.from_dict(payload["spec"])
    records = payload["records"]
    held = records.ID.isin(payload["held"])
    train = PopulationModel(spec, read_nonmem(records[~held]))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = fit(train, progress=False, seed=payload["seed"], **payload["settings"])
    # the held-out subjects are scored in a model of every subject, so covariate levels, references and
    # shapes are the full data's (a fold may hold one level of a categorical covariate only)
    everyone = PopulationModel(spec, read_nonmem(records))
    try:
        elpd = _heldout_density(everyone, f.posterior, payload["draws_used"], payload["n_eta"], payload["seed"])
    except ValueError as e:  # a categorical level the training subjects lack: another number of levels
        raise BayesPKError(f"fold {payload['fold']}: the posterior of its training subjects does not fit the model "
                           f"of all subjects ({e}); a covariate level is missing from the training subjects: "
                           "stratify the folds on that column") from None
    keep = np.isin(everyone.design.subject_ids, np.asarray(payload["held"], dtype=object))
    diag = f.diagnostics()
    return {"fold": payload["fold"],
            "elpd": {id_label(i): float(v) for i, v, k in zip(everyone.design.subject_ids, elpd, keep) if k},
            "divergences": int(diag["divergences"]), "max_r_hat": float(diag["max_r_hat"])}


@dataclass
class KFoldResult:
    """Per-subject elpd of a K-fold cross-validation and its total."""

    pointwise: pd.DataFrame  # ID, fold, elpd
    k: int
    failed: dict
    fits: pd.DataFrame  # per fold: divergences, max R-hat

    @property
    def elpd(self) -> float:
        return float(self.pointwise.elpd.sum())

    @property
    def se(self) -> float:
        return float(np.sqrt(len(self.pointwise) * self.pointwise.elpd.var(ddof=1)))

    def table(self) -> pd.DataFrame:
        """elpd and SE overall and per fold."""
        per = self.pointwise.groupby("fold").elpd.agg(["sum", "size"]).rename(columns={"sum": "elpd",
                                                                                       "size": "subjects"})
        return pd.concat([per, pd.DataFrame({"elpd": [self.elpd], "subjects": [len(self.pointwise)]},
                                            index=pd.Index(["all"], name="fold"))])

    def __repr__(self) -> str:
        return (f"KFoldResult(k={self.k}: elpd {self.elpd:.1f} (SE {self.se:.1f}) over {len(self.pointwise)} "
                f"subjects, {len(self.failed)} failed folds)")


def kfold(spec, data=None, *, k: int = 5, out: str | Path, stratify: str | None = None, seed: int = 0,
          chains: int = 2, draws: int = 500, tune: int = 500, draws_used: int = 100, n_eta: int = 500,
          client=None, scheduler: str | None = None, workers: int | None = None, progress=None) -> KFoldResult:
    """K-fold cross-validation by subject (see the module docstring).

    Parameters
    ----------
    spec : Spec, dict or path
    data : Dataset, DataFrame or path, optional
        Default: the spec's data.
    k : int
        Folds (2..number of subjects; the number of subjects: leave-one-subject-out).
    out : path
        Output folder (``tasks/`` per fold; rerunning resumes).
    stratify : str, optional
        A column (its value at each subject's first record): folds are balanced over its levels.
    seed : int
        The split and the samplers' seeds (the same seed gives the same folds for another model).
    chains, draws, tune : int
        Sampler settings of each fold's fit.
    draws_used, n_eta : int
        Posterior draws and new etas per draw in each held-out subject's density.
    client, scheduler, workers, progress
        As for :func:`bayespk.parallel.run_tasks`.
    """
    from bayespk.data.nonmem import id_label
    from bayespk.model.population import PopulationModel
    from bayespk.parallel.runner import run_tasks

    model = PopulationModel(spec, data)
    t = model.data.table
    first = t.groupby("ID", sort=False).head(1).set_index("ID")
    if stratify is not None and stratify not in t.columns:
        raise BayesPKError(f"stratify: no column {stratify!r} in the data (columns: {', '.join(t.columns)})")
    for name, v in (("draws_used", draws_used), ("n_eta", n_eta), ("chains", chains), ("draws", draws),
                    ("tune", tune)):
        if not isinstance(v, int) or isinstance(v, bool) or v < 1:
            raise BayesPKError(f"{name}: expected a positive integer, got {v!r}")
    split = folds(pd.Series(first.index), k, seed, None if stratify is None else first[stratify])
    resolved = model.spec.to_dict()
    resolved.get("data", {}).pop("sha256", None)
    records = t.drop(columns="ROW")
    settings = {"chains": chains, "draws": draws, "tune": tune}
    tasks = {}
    for j in range(k):
        tasks[f"fold{j:03d}"] = {"spec": resolved, "records": records, "held": list(split.index[split == j]),
                                 "fold": j,
                                 "seed": seed + 1 + j, "settings": settings, "draws_used": draws_used,
                                 "n_eta": n_eta}
    identity = {"kind": "kfold", "spec": resolved, "k": k, "seed": seed, "stratify": stratify,
                "settings": settings, "draws_used": draws_used, "n_eta": n_eta,
                "folds": {id_label(i): int(f) for i, f in split.items()}}
    work = run_tasks(_task, tasks, out, identity=identity, name="kfold", client=client, scheduler=scheduler,
                     workers=workers, progress=progress)
    result = _result(work.done, k, work.failed)
    _write(result, Path(out))
    return result


def _result(done: dict, k: int, failed: dict) -> KFoldResult:
    if not done:
        raise BayesPKError(f"k-fold: every fold failed; first error: {next(iter(failed.values()), '?')}")
    rows = [{"ID": i, "fold": r["fold"], "elpd": v} for r in done.values() for i, v in r["elpd"].items()]
    fits = pd.DataFrame([{"fold": r["fold"], "divergences": r["divergences"], "max_r_hat": r["max_r_hat"]}
                         for r in done.values()]).set_index("fold").sort_index()
    return KFoldResult(pointwise=pd.DataFrame(rows).sort_values(["fold", "ID"]).reset_index(drop=True), k=k,
                       failed=failed, fits=fits)


def _write(result: KFoldResult, out: Path) -> None:
    result.pointwise.to_csv(out / "elpd_subjects.csv", index=False)
    result.table().to_csv(out / "elpd.csv")
    (out / "failed.json").write_text(json.dumps(result.failed, indent=1), encoding="utf-8")


def load_kfold(out: str | Path) -> KFoldResult:
    """The K-fold result of a workload folder (finished folds only)."""
    out = Path(out)
    try:
        ident = json.loads((out / "workload.json").read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BayesPKError(f"{out}: not a k-fold folder ({e})") from None
    if ident.get("kind") != "kfold":
        raise BayesPKError(f"{out}: not a k-fold folder (a {ident.get('kind')} workload)")
    recs = [json.loads(p.read_text(encoding="utf-8")) for p in sorted((out / "tasks").glob("*.json"))]
    result = _result({r["key"]: r["result"] for r in recs if r["status"] == "done"}, ident["k"],
                     {r["key"]: r["error"] for r in recs if r["status"] == "failed"})
    result.identity = ident
    return result


def compare_kfold(results: dict) -> pd.DataFrame:
    """Models ranked by K-fold elpd, with the SE of each one's paired per-subject difference from the best.

    ``results``: name -> :class:`KFoldResult` (or a k-fold output folder). The models must have been
    cross-validated on the same subjects and folds (same data, ``k``, ``seed`` and ``stratify``).
    """
    if len(results) < 2:
        raise BayesPKError("compare_kfold: give at least two models")
    res = {n: load_kfold(r) if not isinstance(r, KFoldResult) else r for n, r in results.items()}
    split = {n: r.pointwise.set_index("ID").fold for n, r in res.items()}
    first_name, first = next(iter(split.items()))
    for n, s in split.items():
        if not s.sort_index().equals(first.sort_index()):
            raise BayesPKError(f"compare_kfold: {n} and {first_name} were not cross-validated on the same subjects "
                               "and folds (use the same data, k, seed and stratify, and let every fold finish)")
    elpd = pd.DataFrame({n: r.pointwise.set_index("ID").elpd for n, r in res.items()})
    order = elpd.sum().sort_values(ascending=False).index
    best = order[0]
    rows = []
    for n in order:
        diff = elpd[best] - elpd[n]
        rows.append({"model": n, "elpd_kfold": float(elpd[n].sum()),
                     "se": float(np.sqrt(len(elpd) * elpd[n].var(ddof=1))),
                     "elpd_diff": float(diff.sum()), "dse": float(np.sqrt(len(diff) * diff.var(ddof=1)))})
    return pd.DataFrame(rows).set_index("model")
