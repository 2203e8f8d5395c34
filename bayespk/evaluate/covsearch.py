"""Covariate search by K-fold cross-validation: forward addition, then backward elimination.

The stepwise covariate modelling of NONMEM practice (forward inclusion,
backward elimination), judged by how well each model predicts new subjects
(K-fold elpd by subject, :mod:`bayespk.evaluate.kfold`) instead of likelihood
ratio tests. Every model is cross-validated on the same folds (same data and
seed), so two models are compared by the paired per-subject differences of
their elpd, with standard error ``dse``:

- forward: each remaining candidate is added to the current model in turn;
  the best one is kept if it improves elpd by more than ``threshold_se`` x its
  ``dse`` (default 1); repeat until no candidate does;
- backward: each relation added is removed in turn; the one whose removal
  costs least is dropped if the loss is at most ``threshold_se`` x ``dse``;
  repeat until every removal costs more.

The table lists every model tried, its elpd and the difference against the
model it was compared with, and what was decided and why. Cross-validations
are kept under ``OUT/models/``, so a rerun resumes. A model with a failed fold
(a fit that could not start, say) cannot be compared on the same subjects: a
candidate so affected is listed as not evaluated and not added, a relation
whose removal is so affected is kept, and the search goes on; rerunning
retries the failed folds. Only a failure of the base model stops the search.

``method="horseshoe"`` is the Bayesian alternative: one fit of the full model
with every candidate under a regularized horseshoe prior (Piironen & Vehtari
2017; ``[covariate_shrinkage]``, :class:`~bayespk.model.spec.CovariateShrinkage`).
For each relation the table gives the coefficient (median, 90% CrI), the ratio
of the parameter across the covariate's 5th-95th percentile range of the
subjects (categorical: each level against the reference), the posterior
probability that this ratio lies outside a no-effect band (default 0.8-1.25,
the usual bioequivalence-style clinical-relevance band) and the shrinkage
factor kappa. A relation is kept when that probability exceeds
``inclusion`` (default 0.5: more likely clinically relevant than not); a
categorical relation is kept when one of its levels is.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from bayespk.errors import BayesPKError

__all__ = ["covariate_search", "CovariateSearch"]


METHODS = ("stepwise", "horseshoe")
HORSESHOE_COLUMNS = ["step", "relation", "contrast", "coef_median", "coef_lower", "coef_upper", "ratio_median",
                     "ratio_lower", "ratio_upper", "p_outside", "kappa", "decision"]


@dataclass
class CovariateSearch:
    """The relations kept, the final spec and the table of every step (``method="horseshoe"``: one row per
    relation, per level for a categorical one; ``fit``: the full model's fit)."""

    selected: list[str]
    spec: dict
    steps: pd.DataFrame
    method: str = "stepwise"
    fit: object = None


def _name(c: dict) -> str:
    return f"{c['parameter']}_{c['column']}"


def covariate_search(spec, candidates: list[dict], data=None, *, out: str | Path, method: str = "stepwise",
                     k: int = 5, seed: int = 0, threshold_se: float = 1.0, backward: bool = True, chains: int = 2,
                     draws: int = 500, tune: int = 500, draws_used: int = 100, n_eta: int = 300, client=None,
                     scheduler: str | None = None, workers: int | None = None, progress=None,
                     shrinkage: dict | None = None, band: tuple[float, float] = (0.8, 1.25), inclusion: float = 0.5,
                     interval: float = 0.9, target_accept: float = 0.95) -> CovariateSearch:
    """Select among ``candidates``: stepwise by K-fold elpd, or by one horseshoe fit (see the module docstring).

    Parameters
    ----------
    spec : Spec, dict or path
        The base model (its own ``[[covariates]]`` are always kept).
    candidates : list of dict
        Candidate relations as ``[[covariates]]`` tables: ``parameter``, ``column``, ``effect`` and optionally
        ``reference`` and ``coefficient`` (under the horseshoe the coefficient prior is replaced).
    out : path
        Folder for ``steps.csv``; stepwise: one k-fold folder per model under ``models/``.
    method : {"stepwise", "horseshoe"}
        Forward addition / backward elimination by K-fold elpd, or the full model under a regularized horseshoe.
    threshold_se : float
        Stepwise: a relation is added when it improves elpd by more than this many SEs of the paired difference,
        and dropped when removing it costs at most that.
    k, seed, chains, draws, tune, draws_used, n_eta, client, scheduler, workers, progress
        As for :func:`bayespk.evaluate.kfold.kfold` (horseshoe: ``seed, chains, draws, tune`` of its one fit,
        run in this process; ``k, draws_used, n_eta`` and the runner are not used).
    shrinkage : dict, optional
        Horseshoe: keys of ``[covariate_shrinkage]`` (``expected``, ``slab_scale``, ``slab_df``, ``global_df``,
        ``noise_sd``); ``relations`` are the candidates.
    band : (float, float)
        Horseshoe: the no-effect band of the parameter ratio (default 0.8-1.25).
    inclusion : float
        Horseshoe: a relation is kept when P(ratio outside ``band``) > ``inclusion`` (default 0.5).
    interval : float
        Horseshoe: credible level of the intervals (default 0.9).
    target_accept : float
        Horseshoe: NUTS target acceptance (the horseshoe's funnels need a high one; default 0.95).
    """
    from bayespk.model.population import PopulationModel

    if method not in METHODS:
        raise BayesPKError(f"method: {method!r} is not one of {', '.join(METHODS)}")
    base_model = PopulationModel(spec, data)
    base = base_model.spec.to_dict()
    cands = _check_candidates(base_model, base, candidates)
    out = Path(out)
    if method == "horseshoe":
        return _horseshoe_search(base, cands, base_model.data, out=out, seed=seed, chains=chains, draws=draws,
                                 tune=tune, shrinkage=shrinkage, band=band, inclusion=inclusion, interval=interval,
                                 target_accept=target_accept, progress=progress)
    return _stepwise(base, cands, base_model.data, out=out, k=k, seed=seed, threshold_se=threshold_se,
                     backward=backward, chains=chains, draws=draws, tune=tune, draws_used=draws_used, n_eta=n_eta,
                     client=client, scheduler=scheduler, workers=workers, progress=progress)


def _check_candidates(base_model, base: dict, candidates: list[dict]) -> dict[str, dict]:
    """The candidates by relation name, each checked against the data and the base model."""
    from bayespk.model.spec import Spec

    columns = set(base_model.data.table.columns)
    seen = {_name(c) for c in base.get("covariates", [])}
    cands = {}
    for i, c in enumerate(candidates):
        where = f"candidate {i + 1}"
        if not isinstance(c, dict) or not {"parameter", "column", "effect"} <= set(c):
            raise BayesPKError(f"{where}: expected a table with parameter, column and effect, got {c!r}")
        if c["column"] not in columns:
            raise BayesPKError(f"{where} ({_name(c)}): no column {c['column']!r} in the data")
        if c["parameter"] not in base["parameters"]:
            raise BayesPKError(f"{where} ({_name(c)}): no parameter {c['parameter']!r} in the model "
                               f"(parameters: {', '.join(base['parameters'])})")
        if _name(c) in seen or _name(c) in cands:
            raise BayesPKError(f"{where}: {_name(c)} is already in the model or listed twice")
        Spec.from_dict(base | {"covariates": [*base.get("covariates", []), c]})  # refused now if malformed
        cands[_name(c)] = c
    if not cands:
        raise BayesPKError("covariate search: give at least one candidate relation")
    return cands


def _stepwise(base: dict, cands: dict, data, *, out: Path, k, seed, threshold_se, backward, chains, draws, tune,
              draws_used, n_eta, client, scheduler, workers, progress) -> CovariateSearch:
    from bayespk.evaluate.kfold import compare_kfold, kfold

    runner = {"client": client, "scheduler": scheduler, "workers": workers, "progress": progress}
    settings = {"k": k, "seed": seed, "chains": chains, "draws": draws, "tune": tune, "draws_used": draws_used,
                "n_eta": n_eta}
    results: dict[frozenset, object] = {}

    def evaluate(chosen: frozenset):
        if chosen not in results:
            label = "+".join(sorted(chosen)) or "base"
            s = base | {"covariates": [*base.get("covariates", []), *(cands[n] for n in sorted(chosen))]}
            folder = out / "models" / re.sub(r"[^A-Za-z0-9_.+-]", "_", label)
            try:
                results[chosen] = kfold(s, data, out=folder, **settings, **runner)
            except BayesPKError as e:  # every fold failed
                if "every fold failed" not in str(e):
                    raise
                results[chosen] = e
        return results[chosen]

    def versus(a: frozenset, b: frozenset) -> tuple[float, float]:
        """elpd(a) - elpd(b) and its SE (paired by subject)."""
        t = compare_kfold({"a": evaluate(a), "b": evaluate(b)})
        diff = float(t.loc["a", "elpd_kfold"] - t.loc["b", "elpd_kfold"])
        return diff, float(t.loc["b" if diff >= 0 else "a", "dse"])

    def complete(chosen: frozenset) -> str | None:
        """None when every fold of the model finished, else why not (its k-fold could not be compared)."""
        result = evaluate(chosen)
        if isinstance(result, BayesPKError):
            return f"{k} of {k} folds failed ({str(result).removeprefix('k-fold: every fold failed; ')}); " \
                   "rerunning the search retries them"
        failed = result.failed
        if not failed:
            return None
        key, error = next(iter(sorted(failed.items())))
        return (f"{len(failed)} of {k} folds failed (first: {key}: {error}); rerunning the search retries "
                "them")

    rows = []
    current = frozenset()
    broken = complete(current)
    if broken:
        raise BayesPKError(f"covariate search: the base model's k-fold is incomplete: {broken}")
    while True:  # forward
        remaining = [n for n in cands if n not in current]
        if not remaining:
            break
        # a candidate whose cross-validation is incomplete cannot be judged: listed, never added
        skipped = {n: why for n in remaining if (why := complete(current | {n}))}
        trials = {n: versus(current | {n}, current) for n in remaining if n not in skipped}
        for n in remaining:
            d, se = trials.get(n, (np.nan, np.nan))
            rows.append({"step": "forward", "model": "+".join(sorted(current | {n})), "relation": n,
                         "elpd": evaluate(current | {n}).elpd if n in trials else np.nan, "elpd_change": d,
                         "se": se, "decision": f"not added: not evaluated, {skipped[n]}" if n in skipped else ""})
        if not trials:
            break
        best = max(trials, key=lambda n: trials[n][0])
        d, se = trials[best]
        step_rows = [r for r in rows[-len(remaining):] if r["relation"] in trials]
        for r in step_rows:
            r["decision"] = "not added: " + ("another relation improved more" if r["relation"] != best
                                             else f"gain {d:.2f} <= {threshold_se:g} x SE {se:.2f}")
        if d > threshold_se * se:
            next(r for r in step_rows if r["relation"] == best)["decision"] = \
                f"added: gain {d:.2f} > {threshold_se:g} x SE {se:.2f}"
            current = current | {best}
        else:
            break
    while backward and current:  # backward
        # a reduced model whose cross-validation is incomplete cannot be judged: its relation is kept
        skipped = {n: why for n in current if (why := complete(current - {n}))}
        for n, why in skipped.items():
            rows.append({"step": "backward", "model": "+".join(sorted(current - {n})) or "base", "relation": n,
                         "elpd": np.nan, "elpd_change": np.nan, "se": np.nan,
                         "decision": f"kept: removal not evaluated, {why}"})
        trials = {n: versus(current, current - {n}) for n in current if n not in skipped}
        if not trials:
            break
        for n, (d, se) in trials.items():
            rows.append({"step": "backward", "model": "+".join(sorted(current - {n})) or "base", "relation": n,
                         "elpd": evaluate(current - {n}).elpd, "elpd_change": -d, "se": se, "decision": ""})
        weakest = min(trials, key=lambda n: trials[n][0])
        d, se = trials[weakest]
        step_rows = rows[-len(trials):]
        for r in step_rows:
            loss = trials[r["relation"]][0]
            r["decision"] = (f"kept: removing it loses {loss:.2f} > {threshold_se:g} x SE "
                             f"{trials[r['relation']][1]:.2f}"
                             if r["relation"] != weakest or d > threshold_se * se else
                             f"dropped: removing it loses {d:.2f} <= {threshold_se:g} x SE {se:.2f}")
        if d <= threshold_se * se:
            current = current - {weakest}
        else:
            break
    final = base | {"covariates": [*base.get("covariates", []), *(cands[n] for n in sorted(current))]}
    steps = pd.DataFrame(rows, columns=["step", "model", "relation", "elpd", "elpd_change", "se", "decision"])
    out.mkdir(parents=True, exist_ok=True)
    steps.to_csv(out / "steps.csv", index=False)
    return CovariateSearch(selected=sorted(current), spec=final, steps=steps, method="stepwise")


def _horseshoe_search(base: dict, cands: dict, data, *, out: Path, seed, chains, draws, tune, shrinkage, band,
                      inclusion, interval, target_accept, progress) -> CovariateSearch:
    """One fit of the full model with every candidate under the regularized horseshoe; a row per relation."""
    from bayespk.data.nonmem import id_label
    from bayespk.fit import fit
    from bayespk.model.population import PopulationModel

    try:
        lo_band, hi_band = (float(x) for x in band)
    except (TypeError, ValueError):
        raise BayesPKError(f"band: expected (lower, upper) with 0 < lower < 1 < upper, got {band!r}") from None
    if not 0 < lo_band < 1 < hi_band:
        raise BayesPKError(f"band: expected (lower, upper) with 0 < lower < 1 < upper, got {band!r}")
    if not 0 <= inclusion < 1:
        raise BayesPKError(f"inclusion: expected a probability in [0, 1), got {inclusion!r}")
    if not 0 < interval < 1:
        raise BayesPKError(f"interval: expected a credible level in (0, 1), got {interval!r}")
    extra = dict(shrinkage or {})
    if "relations" in extra or "prior" in extra:
        raise BayesPKError("shrinkage: the relations shrunk are the candidates, and the prior is the horseshoe; "
                           "give only expected, slab_scale, slab_df, global_df, noise_sd")
    block = {"prior": "horseshoe", "relations": list(cands), **extra}
    full = base | {"covariates": [*base.get("covariates", []), *cands.values()], "covariate_shrinkage": block}
    model = PopulationModel(full, data)
    result = fit(model, chains=chains, draws=draws, tune=tune, seed=seed, target_accept=target_accept,
                 progress=bool(progress))
    post = result.posterior.stack(sample=("chain", "draw"))
    q = [0.5, (1 - interval) / 2, 1 - (1 - interval) / 2]
    rows, selected = [], []
    for c in model.spec.covariates:
        if c.name not in cands:
            continue
        info = model._covariates[c.name]
        kappa = float(np.median(post[f"hs_kappa_{c.name}"].values))
        theta = post[c.name].transpose("sample", ...).values
        if c.effect == "categorical":
            contrasts = [(f"{c.column} = {id_label(level)} vs {id_label(c.reference)}", theta[:, j], theta[:, j])
                         for j, level in enumerate(info["levels"])]
        else:
            x05, x95 = np.quantile(info["values"], [0.05, 0.95])
            log_ratio = c.log_factor(x95, theta) - c.log_factor(x05, theta)
            contrasts = [(f"{c.column} {x95:.3g} vs {x05:.3g} (95th vs 5th percentile)", theta, log_ratio)]
        kept = False
        for label, coef, log_ratio in contrasts:
            ratio = np.exp(log_ratio)
            p_out = float(np.mean((ratio < lo_band) | (ratio > hi_band)))
            keep = p_out > inclusion
            kept |= keep
            rows.append({"step": "horseshoe", "relation": c.name, "contrast": label,
                         **dict(zip(("coef_median", "coef_lower", "coef_upper"), np.quantile(coef, q))),
                         **dict(zip(("ratio_median", "ratio_lower", "ratio_upper"), np.quantile(ratio, q))),
                         "p_outside": p_out, "kappa": kappa,
                         "decision": f"{'kept' if keep else 'dropped'}: P(outside {lo_band:g}-{hi_band:g}) = "
                                     f"{p_out:.2f} {'>' if keep else '<='} {inclusion:g}"})
        if kept:
            selected.append(c.name)
    steps = pd.DataFrame(rows, columns=HORSESHOE_COLUMNS)
    final = base | {"covariates": [*base.get("covariates", []), *(cands[n] for n in selected)]}
    out.mkdir(parents=True, exist_ok=True)
    steps.to_csv(out / "steps.csv", index=False)
    return CovariateSearch(selected=sorted(selected), spec=final, steps=steps, method="horseshoe", fit=result)
