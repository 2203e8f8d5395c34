"""Workloads of many fits on Dask: SBC scaling over workers, and K-fold CV beside PSIS-LOO.

    .venv/bin/python benchmarks/bench_workloads.py              # both parts (~15 min on 2 cores)
    .venv/bin/python benchmarks/bench_workloads.py --part sbc   # 40-replicate SBC: 1, 2 workers, 4-process cluster
    .venv/bin/python benchmarks/bench_workloads.py --part kfold # phenobarbital with/without Apgar: K-fold and LOO

SBC scaling: the same 40-replicate simulation-based calibration (the small
one-compartment IV study of tests/evaluate/test_sbc.py, 2 chains x 200 draws after 200
per replicate) on a LocalCluster of 1 and of 2 worker processes, and on a
cluster of 4 single-threaded worker processes started as separate processes
(``dask scheduler`` / ``dask worker``) and reached by its address, the path
to a real cluster. The compiled model is in the disk cache before the timed
runs (one replicate is fitted first), so every mode measures the fits and the
scheduling, not the one compilation. On this 2-core machine the 4-process
cluster cannot be faster than 2 workers; it shows the path works.

K-fold: phenobarbital (59 infants) with and without the Apgar effect on V,
5 folds by subject, elpd with SE, the paired difference, beside PSIS-LOO by
subject of the full fits.

Results: benchmarks/results/workloads.md and .json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
sys.path.insert(0, str(ROOT / "tests"))

SBC_N = 40
SBC_SETTINGS = {"chains": 2, "draws": 200, "tune": 200, "thin_to": 49}
PHENO = ROOT / "models" / "phenobarbital_1cmt_iv.toml"


def _load() -> str:
    return " / ".join(f"{x:.2f}" for x in os.getloadavg())


def _sbc_inputs():
    from test_sbc import SPEC

    from bayespk.simulate.study import study_design

    d = study_design(10, dose=100.0, times=np.array([0.25, 1, 2, 4, 8, 12]), route="iv", seed=3)
    d["DV"] = np.where(d.EVID == 0, 1.0, np.nan)
    return SPEC, d


def _start_cluster(n: int):
    """A scheduler and ``n`` single-threaded worker processes, each its own OS process."""
    dask = [sys.executable, "-m", "distributed.cli.dask_scheduler"]
    sched_file = Path(tempfile.mkdtemp()) / "scheduler.json"
    procs = [subprocess.Popen([*dask, "--scheduler-file", str(sched_file), "--no-dashboard", "--port", "0"],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)]
    deadline = time.time() + 60
    while not sched_file.exists() and time.time() < deadline:
        time.sleep(0.2)
    address = json.loads(sched_file.read_text())["address"]
    for _ in range(n):
        procs.append(subprocess.Popen([sys.executable, "-m", "distributed.cli.dask_worker", address, "--nworkers", "1",
                                       "--nthreads", "1", "--no-dashboard"], stdout=subprocess.DEVNULL,
                                      stderr=subprocess.DEVNULL))
    from distributed import Client

    with Client(address, timeout="60s") as c:
        c.wait_for_workers(n, timeout=120)
    return address, procs


def part_sbc() -> dict:
    from bayespk.evaluate.sbc import sbc

    spec, design = _sbc_inputs()
    tmp = Path(tempfile.mkdtemp())
    s = dict(SBC_SETTINGS)
    sbc(spec, design, n=2, out=tmp / "warm", workers=1, progress=False, **s)  # fills the compile cache
    rows = []
    for mode in ("1 worker", "2 workers", "4-process cluster by address"):
        before = _load()
        t0 = time.perf_counter()
        if mode == "4-process cluster by address":
            address, procs = _start_cluster(4)
            started = time.perf_counter() - t0
            t0 = time.perf_counter()
            try:
                r = sbc(spec, design, n=SBC_N, out=tmp / "c4", scheduler=address, progress=False, **s)
            finally:
                for p in procs:
                    p.terminate()
        else:
            started = None
            r = sbc(spec, design, n=SBC_N, out=tmp / mode.split()[0], workers=int(mode[0]), progress=False, **s)
        wall = time.perf_counter() - t0
        t = r.tests()
        rows.append({"mode": mode, "wall_s": round(wall, 1), "cluster_start_s": None if started is None else
                     round(started, 1), "replicates": len(r.ranks), "failed": len(r.failed),
                     "parameters_passing": int(t.passes.sum()), "parameters": len(t),
                     "load_before": before, "load_after": _load()})
        print(rows[-1], flush=True)
    base = rows[0]["wall_s"]
    for row in rows:
        row["speedup_vs_1"] = round(base / row["wall_s"], 2)
    shutil.rmtree(tmp, ignore_errors=True)
    return {"sbc": rows}


def part_kfold() -> dict:
    import warnings

    from bayespk.evaluate.compare import loo as psis_loo
    from bayespk.evaluate.kfold import compare_kfold, kfold
    from bayespk.fit import fit
    from bayespk.model import PopulationModel
    from bayespk.model.spec import Spec

    full = Spec.from_toml(PHENO)
    d = full.to_dict()
    d["covariates"] = [c for c in d.get("covariates", []) if c.get("column") != "APGRLOW"]
    no_apgar = Spec.from_dict(d)
    tmp = Path(tempfile.mkdtemp())
    settings = {"chains": 2, "draws": 500, "tune": 500}
    out = {}
    t0 = time.perf_counter()
    for name, spec in (("with Apgar", full), ("without Apgar", no_apgar)):
        out[name] = kfold(spec, k=5, seed=1, out=tmp / name.replace(" ", "_"), workers=2, progress=False,
                          **settings)
    kfold_wall = time.perf_counter() - t0
    table = compare_kfold(out)
    loo = {}
    for name, spec in (("with Apgar", full), ("without Apgar", no_apgar)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            f = fit(PopulationModel(spec), progress=False, seed=1, **settings)
            lo = psis_loo(f, by="subject")
        k = np.asarray(lo.pareto_k).ravel()
        loo[name] = {"elpd_loo": float(lo.elpd), "se": float(lo.se), "pareto_k_over_0.7": int((k > 0.7).sum())}
    shutil.rmtree(tmp, ignore_errors=True)
    return {"kfold": {"table": table.reset_index().to_dict(orient="records"), "wall_s": round(kfold_wall, 1),
                      "settings": settings | {"k": 5, "seed": 1}}, "loo_by_subject": loo}


def markdown(res: dict) -> str:
    lines = ["# Workloads on Dask", "", f"- date: {res['date']}", f"- command: `{res['command']}`",
             f"- machine: {os.cpu_count()} CPUs", ""]
    if "sbc" in res:
        lines += [f"## SBC, {SBC_N} replicates ({SBC_SETTINGS['chains']} chain x {SBC_SETTINGS['draws']} draws "
                  f"after {SBC_SETTINGS['tune']}, ranks of {SBC_SETTINGS['thin_to']} draws)", "",
                  "| mode | wall s | speed-up vs 1 worker | cluster start s | replicates | failed | parameters passing "
                  "| load average before / after |", "|---|--:|--:|--:|--:|--:|--:|---|"]
        for r in res["sbc"]:
            lines.append(f"| {r['mode']} | {r['wall_s']} | {r['speedup_vs_1']} | {r['cluster_start_s'] or ''} | "
                         f"{r['replicates']} | {r['failed']} | {r['parameters_passing']}/{r['parameters']} | "
                         f"{r['load_before']} -> {r['load_after']} |")
        lines.append("")
    if "kfold" in res:
        lines += ["## Phenobarbital: 5-fold CV by subject beside PSIS-LOO by subject", "",
                  "| model | elpd k-fold | SE | difference from best | SE of difference | elpd LOO (subject) | SE | "
                  "Pareto k > 0.7 |", "|---|--:|--:|--:|--:|--:|--:|--:|"]
        for r in res["kfold"]["table"]:
            lo = res["loo_by_subject"][r["model"]]
            lines.append(f"| {r['model']} | {r['elpd_kfold']:.1f} | {r['se']:.1f} | {r['elpd_diff']:.1f} | "
                         f"{r['dse']:.1f} | {lo['elpd_loo']:.1f} | {lo['se']:.1f} | {lo['pareto_k_over_0.7']} |")
        lines += ["", f"k-fold wall time (both models, 2 workers): {res['kfold']['wall_s']} s", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--part", choices=["sbc", "kfold", "all"], default="all", help="which part to run (default: all)")
    args = ap.parse_args(argv)
    import datetime as dt

    res = {"date": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
           "command": "python benchmarks/bench_workloads.py " + " ".join(argv or sys.argv[1:])}
    path = RESULTS / "workloads.json"
    if path.is_file():
        res = {**json.loads(path.read_text()), **res}
    if args.part in ("sbc", "all"):
        res.update(part_sbc())
    if args.part in ("kfold", "all"):
        res.update(part_kfold())
    RESULTS.mkdir(exist_ok=True)
    path.write_text(json.dumps(res, indent=1))
    (RESULTS / "workloads.md").write_text(markdown(res))
    print(markdown(res))
    return 0


if __name__ == "__main__":
    sys.exit(main())
