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
are kept under ``OUT/models/``, so a rerun resumes.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bayespk.errors import BayesPKError

__all__ = ["covariate_search", "CovariateSearch"]


@dataclass
class CovariateSearch:
    """The relations kept, the final spec and the table of every step."""

    selected: list[str]
    spec: dict
    steps: pd.DataFrame


def _name(c: dict) -> str:
    return f"{c['parameter']}_{c['column']}"


def covariate_search(spec, candidates: list[dict], data=None, *, out: str | Path, k: int = 5, seed: int = 0,
                     threshold_se: float = 1.0, backward: bool = True, chains: int = 2, draws: int = 500,
                     tune: int = 500, draws_used: int = 100, n_eta: int = 300, client=None,
                     scheduler: str | None = None, workers: int | None = None, progress=None) -> CovariateSearch:
    """Forward addition / backward elimination of ``candidates`` judged by K-fold elpd (see the module docstring).

    Parameters
    ----------
    spec : Spec, dict or path
        The base model (its own ``[[covariates]]`` are always kept).
    candidates : list of dict
        Candidate relations as ``[[covariates]]`` tables: ``parameter``, ``column``, ``effect`` and optionally
        ``reference`` and ``coefficient``.
    out : path
        Folder; one k-fold folder per model under ``models/``.
    threshold_se : float
        A relation is added when it improves elpd by more than this many SEs of the paired difference, and
        dropped when removing it costs at most that.
    k, seed, chains, draws, tune, draws_used, n_eta, client, scheduler, workers, progress
        As for :func:`bayespk.evaluate.kfold.kfold`.
    """
    from bayespk.evaluate.kfold import compare_kfold, kfold
    from bayespk.model.population import PopulationModel
    from bayespk.model.spec import Spec

    base_model = PopulationModel(spec, data)
    base = base_model.spec.to_dict()
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
    out = Path(out)
    data = base_model.data
    runner = {"client": client, "scheduler": scheduler, "workers": workers, "progress": progress}
    settings = {"k": k, "seed": seed, "chains": chains, "draws": draws, "tune": tune, "draws_used": draws_used,
                "n_eta": n_eta}
    results: dict[frozenset, object] = {}

    def evaluate(chosen: frozenset):
        if chosen not in results:
            label = "+".join(sorted(chosen)) or "base"
            s = base | {"covariates": [*base.get("covariates", []), *(cands[n] for n in sorted(chosen))]}
            folder = out / "models" / re.sub(r"[^A-Za-z0-9_.+-]", "_", label)
            results[chosen] = kfold(s, data, out=folder, **settings, **runner)
        return results[chosen]

    def versus(a: frozenset, b: frozenset) -> tuple[float, float]:
        """elpd(a) - elpd(b) and its SE (paired by subject)."""
        t = compare_kfold({"a": evaluate(a), "b": evaluate(b)})
        diff = float(t.loc["a", "elpd_kfold"] - t.loc["b", "elpd_kfold"])
        return diff, float(t.loc["b" if diff >= 0 else "a", "dse"])

    rows = []
    current = frozenset()
    evaluate(current)
    while True:  # forward
        remaining = [n for n in cands if n not in current]
        if not remaining:
            break
        trials = {n: versus(current | {n}, current) for n in remaining}
        for n, (d, se) in trials.items():
            rows.append({"step": "forward", "model": "+".join(sorted(current | {n})), "relation": n,
                         "elpd": evaluate(current | {n}).elpd, "elpd_change": d, "se": se,
                         "decision": ""})
        best = max(trials, key=lambda n: trials[n][0])
        d, se = trials[best]
        step_rows = rows[-len(trials):]
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
        trials = {n: versus(current, current - {n}) for n in current}
        for n, (d, se) in trials.items():
            rows.append({"step": "backward", "model": "+".join(sorted(current - {n})) or "base", "relation": n,
                         "elpd": evaluate(current - {n}).elpd, "elpd_change": -d, "se": se, "decision": ""})
        weakest = min(trials, key=lambda n: trials[n][0])
        d, se = trials[weakest]
        step_rows = rows[-len(trials):]
        for r in step_rows:
            loss = trials[r["relation"]][0]
            r["decision"] = (f"kept: removing it loses {loss:.2f} > {threshold_se:g} x SE {trials[r['relation']][1]:.2f}"
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
    return CovariateSearch(selected=sorted(current), spec=final, steps=steps)
