"""Covariate search over 10 simulated replicates: how often each relation is selected, stepwise and horseshoe.

    .venv/bin/python benchmarks/bench_covsearch.py --workers 1                  # both methods, 10 replicates
    .venv/bin/python benchmarks/bench_covsearch.py --part horseshoe             # the horseshoe only
    .venv/bin/python benchmarks/bench_covsearch.py --part stepwise --stop-at 19:20   # no replicate started after
    .venv/bin/python benchmarks/bench_covsearch.py --part horseshoe --scenario two   # V_SEX true as well

The study is the one of tests/evaluate/test_covsearch_horseshoe.py: 40 subjects, 100 mg
IV, 4 samples each, CL = 2 (WT/70)^0.75 exp(eta_CL) (omega 0.2), V = 20
exp(eta_V) (omega 0.15), 10% proportional error; WT log-normal around 70 kg
(SD of log 0.3), and three covariates with no effect: AGE (uniform 20-80, power
on CL), SEX (0/1, categorical on V) and NOISE (standard normal, exponential on
CL). Replicate i is simulated with seed 100 + i (new covariates, etas and
residuals). ``--scenario two`` makes SEX a true effect as well: V of SEX = 1
is exp(0.3) = 1.35 times that of SEX = 0 (two true, two null relations).

- stepwise: forward addition / backward elimination by 3-fold elpd by subject
  (threshold 1 SE of the paired difference), 2 chains x 300 draws after 300
  per fold fit, 100 posterior draws x 200 new etas for the held-out density, on
  a LocalCluster of ``--workers`` single-threaded processes (default 1);
- horseshoe: one fit of the full model under the regularized horseshoe
  (defaults: expected = 1, slab_scale = 1, slab_df = 4, half-Cauchy global
  scale), 2 chains x 500 draws after 500, target_accept 0.95; a relation is
  kept when P(ratio over the 5th-95th percentile outside 0.8-1.25) > 0.5.

Per relation the results give how often it was selected (true-positive rate
for CL_WT, false-positive rate for the null ones), how often the selection was
exactly {CL_WT}, and the wall time per replicate. Each finished replicate is
saved at once (rerunning resumes); ``--stop-at HH:MM`` (UTC) starts no new
replicate after that time and the results say how many were run.

Results: benchmarks/results/covsearch.md and .json.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import os
import shutil
import sys
import tempfile
import time
import warnings
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
sys.path.insert(0, str(ROOT / "tests"))

N_REPLICATES = 10
SEED0 = 100
SCENARIOS = {"one": {"CL_WT": 0.75}, "two": {"CL_WT": 0.75, "V_SEX": [0.3]}}
KEYS = {("stepwise", "one"): "stepwise", ("horseshoe", "one"): "horseshoe",
        ("stepwise", "two"): "stepwise_two_true", ("horseshoe", "two"): "horseshoe_two_true"}
STEPWISE = {"k": 3, "chains": 2, "draws": 300, "tune": 300, "draws_used": 100, "n_eta": 200, "threshold_se": 1.0}
HORSESHOE = {"chains": 2, "draws": 500, "tune": 500, "target_accept": 0.95, "band": [0.8, 1.25], "inclusion": 0.5}


def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def _now() -> dt.datetime:
    return dt.datetime.now(dt.timezone.utc)


def _past(stop_at: str | None) -> bool:
    if not stop_at:
        return False
    h, m = (int(x) for x in stop_at.split(":"))
    now = _now()
    return (now.hour, now.minute) >= (h, m)


def _replicate(method: str, i: int, client, scenario: str) -> dict:
    from test_covsearch_horseshoe import CANDIDATES, SPEC, covariate_study

    from bayespk.evaluate.covsearch import covariate_search

    data = covariate_study(seed=SEED0 + i, effects=SCENARIOS[scenario])
    out = Path(tempfile.mkdtemp(prefix=f"covsearch_{method}_{i}_"))
    t0 = time.perf_counter()
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            if method == "horseshoe":
                kw = HORSESHOE | {"band": tuple(HORSESHOE["band"])}
                r = covariate_search(SPEC, CANDIDATES, data, out=out, method="horseshoe", seed=SEED0 + i, **kw)
            else:
                r = covariate_search(SPEC, CANDIDATES, data, out=out, method="stepwise", seed=SEED0 + i,
                                     client=client, progress=False, **STEPWISE)
    finally:
        wall = time.perf_counter() - t0
    row = {"replicate": i, "seed": SEED0 + i, "selected": r.selected, "wall_s": round(wall, 1),
           "steps": r.steps.round(4).to_dict(orient="records")}
    if method == "horseshoe":
        d = r.fit.diagnostics()
        row["diagnostics"] = {k: d[k] for k in ("divergences", "max_r_hat", "max_r_hat_parameter", "min_ess_bulk",
                                                "min_ess_bulk_parameter") if k in d}
    shutil.rmtree(out, ignore_errors=True)
    return row


def _rates(rows: list[dict], true: list[str]) -> dict:
    from test_covsearch_horseshoe import CANDIDATES

    n = len(rows)
    names = [f"{c['parameter']}_{c['column']}" for c in CANDIDATES]
    rate = {name: sum(name in r["selected"] for r in rows) / n if n else None for name in names}
    exact = sum(r["selected"] == sorted(true) for r in rows) / n if n else None
    walls = [r["wall_s"] for r in rows]
    return {"replicates": n, "selected_rate": rate, "exactly_true_rate": exact,
            "wall_s_mean": round(sum(walls) / n, 1) if n else None, "wall_s_total": round(sum(walls), 1)}


def run_part(method: str, res: dict, n: int, stop_at: str | None, workers: int, save, scenario: str = "one") -> None:
    true = sorted(SCENARIOS[scenario])
    part = res.setdefault(KEYS[method, scenario], {"settings": STEPWISE if method == "stepwise" else HORSESHOE,
                                                   "rows": [], "true": true})
    done = {r["replicate"] for r in part["rows"]}
    client = cluster = None
    try:
        for i in range(n):
            if i in done:
                continue
            if _past(stop_at):
                part["stopped"] = f"stopped at {_now():%H:%M} UTC (--stop-at {stop_at}) after {len(part['rows'])} " \
                                  "replicates"
                break
            if method == "stepwise" and client is None:
                from distributed import Client, LocalCluster

                cluster = LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                       dashboard_address=None)
                client = Client(cluster)
            before = _load()
            try:
                row = _replicate(method, i, client, scenario)
            except Exception as e:  # e.g. a failed fold: the stepwise search cannot compare its models
                part.setdefault("failed", []).append({"replicate": i, "error": f"{type(e).__name__}: {e}"})
                print(f"{method} replicate {i} failed: {e}", flush=True)
                save()
                continue
            row["load_before"], row["load_after"] = before, _load()
            part["rows"].append(row)
            part.pop("stopped", None)
            part.update(_rates(part["rows"], true))
            print(f"{method} replicate {i}: selected {row['selected']} in {row['wall_s']} s", flush=True)
            save()
    finally:
        if client is not None:
            client.close()
            cluster.close()


def markdown(res: dict) -> str:
    from test_covsearch_horseshoe import CANDIDATES

    names = [f"{c['parameter']}_{c['column']}" for c in CANDIDATES]
    commands = ", ".join(f"`{c}`" for c in res.get("commands", [res["command"]]))
    lines = ["# Covariate search: selection over simulated replicates", "",
             f"- date: {res['date']}", f"- commands: {commands}", f"- machine: {os.cpu_count()} CPUs "
             "(shared with other work; see the load averages in the .json)",
             "- study: 40 subjects, CL = 2 (WT/70)^0.75, candidates WT (power on CL), AGE (power on CL), SEX "
             "(categorical on V), NOISE (exponential on CL); AGE, SEX and NOISE without effect, except in the "
             "two-true scenario where V(SEX = 1) / V(SEX = 0) = exp(0.3); see the docstring of "
             "benchmarks/bench_covsearch.py", "",
             "Rates: share of replicates in which the relation was selected (true relations: true-positive rate; "
             "null relations: false-positive rate).", ""]
    lines += ["| method | true relations | replicates | " + " | ".join(f"{n} selected" for n in names)
              + " | exactly the true set | wall s per replicate (mean) |",
              "|---|---|--:|" + "--:|" * len(names) + "--:|--:|"]
    keys = [k for k in KEYS.values() if res.get(k, {}).get("rows")]
    for key in keys:
        p = res[key]
        cells = [f"{p['selected_rate'][n]:.0%} ({sum(n in r['selected'] for r in p['rows'])}/{p['replicates']})"
                 + (" (true)" if n in p.get("true", ["CL_WT"]) else "") for n in names]
        true = ", ".join(p.get("true", ["CL_WT"]))
        lines.append(f"| {key.split('_')[0]} | {true} | {p['replicates']} | " + " | ".join(cells)
                     + f" | {p['exactly_true_rate']:.0%} | {p['wall_s_mean']} |")
    lines.append("")
    for key in keys:
        p = res[key]
        method = key
        settings = ", ".join(f"{k}={v}" for k, v in p["settings"].items())
        lines += [f"## {method}", "", f"settings: {settings}", ""]
        if p.get("stopped"):
            lines += [f"**Not all {res['n']} replicates: {p['stopped']}.**", ""]
        for f in p.get("failed", []):
            lines += [f"Replicate {f['replicate']} failed: {f['error']}", ""]
        if key.startswith("horseshoe"):
            lines += ["| replicate | seed | selected | " + " | ".join(f"P(outside) {n}" for n in names)
                      + " | divergences | max R-hat | min bulk ESS | wall s |", "|--:|--:|---|" + "--:|" * len(names)
                      + "--:|--:|--:|--:|"]
            for r in p["rows"]:
                prob = {}
                for step in r["steps"]:  # a categorical relation: its largest level
                    prob[step["relation"]] = max(prob.get(step["relation"], 0.0), step["p_outside"])
                d = r.get("diagnostics", {})
                lines.append(f"| {r['replicate']} | {r['seed']} | {', '.join(r['selected']) or 'none'} | "
                             + " | ".join(f"{prob[n]:.2f}" for n in names)
                             + f" | {d.get('divergences', '')} | {d.get('max_r_hat', float('nan')):.3f} | "
                             f"{d.get('min_ess_bulk', float('nan')):.0f} | {r['wall_s']} |")
        else:
            lines += ["| replicate | seed | selected | wall s |", "|--:|--:|---|--:|"]
            for r in p["rows"]:
                lines.append(f"| {r['replicate']} | {r['seed']} | {', '.join(r['selected']) or 'none'} | "
                             f"{r['wall_s']} |")
        lines.append("")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=["stepwise", "horseshoe", "all"], default="all",
                    help="which method to run (default: all; the horseshoe first)")
    ap.add_argument("--replicates", type=int, default=N_REPLICATES, help="simulated replicates (default %(default)s)")
    ap.add_argument("--workers", type=int, default=1,
                    help="worker processes of the stepwise search's LocalCluster (default %(default)s)")
    ap.add_argument("--stop-at", metavar="HH:MM", help="start no replicate after this UTC time (default: none)")
    ap.add_argument("--scenario", choices=list(SCENARIOS), default="one",
                    help="one: WT on CL is the only true effect; two: SEX on V too (default %(default)s)")
    ap.add_argument("--results", default=str(RESULTS), metavar="DIR",
                    help="folder of covsearch.json/.md; an existing covsearch.json there is resumed and extended "
                         "(default: benchmarks/results)")
    args = ap.parse_args(argv)
    results = Path(args.results)
    path = results / "covsearch.json"
    res = json.loads(path.read_text()) if path.is_file() else {}
    if res.get("n") != args.replicates:
        res = {}
    res |= {"date": _now().isoformat(timespec="seconds"), "n": args.replicates,
            "command": "python benchmarks/bench_covsearch.py " + " ".join(argv if argv is not None else sys.argv[1:])}
    res.setdefault("commands", [])
    if res["command"] not in res["commands"]:
        res["commands"].append(res["command"])

    def save():
        results.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(res, indent=1))
        (results / "covsearch.md").write_text(markdown(res))

    for method in ("horseshoe", "stepwise"):
        if args.part in (method, "all"):
            run_part(method, res, args.replicates, args.stop_at, args.workers, save, args.scenario)
    save()
    print(markdown(res))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
