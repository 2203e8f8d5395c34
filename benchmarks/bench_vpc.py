"""VPC benchmark for bayespk: seconds and memory for 500 replicates of the phenobarbital study.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_vpc.py                  # 500 replicates, 3 repeats
    .venv/bin/python benchmarks/bench_vpc.py --n-rep 1000 --repeats 5

The bundled ``models/phenobarbital_1cmt_iv.toml`` (59 neonates, 155 observations, repeated IV
doses) is fitted once (2 chains x 500 draws after 500 tuning steps by default, so 1000 posterior
draws: 500 replicates use distinct draws). Then, each in a warm-up call and ``--repeats`` timed
calls (different seeds):

* ``simulate_replicates(fit, n_rep)``: building the prediction model and drawing the replicates
  (new subjects, one posterior draw each);
* ``bpk.vpc(fit, n_rep=n_rep)``: the whole VPC (replicates, binning, percentiles, figure);
* ``bpk.vpc(fit, n_rep=n_rep, pred_corr=True)``: the prediction-corrected VPC;
* ``vpc(fit, replicates=reps)``: a VPC from replicates already simulated (binning, percentiles,
  figure only).

Reported: the warm-up (first) call (for ``simulate_replicates`` the first compile of the prediction
model in the process), the median, min and max of the timed calls, and the peak RSS
of this process during each operation (psutil, sampled every 10 ms) with its rise over the RSS
just before. Results go to ``benchmarks/results/vpc.json`` and ``vpc.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import shlex
import statistics
import subprocess
import sys
import threading
import time
import warnings
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
SPEC = ROOT / "models" / "phenobarbital_1cmt_iv.toml"
PACKAGES = ("bayespk", "pymc", "pytensor", "nutpie", "arviz", "numpy", "pandas", "xarray", "matplotlib")


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled in a thread)."""

    def __init__(self, interval: float = 0.01):
        import psutil

        self._proc = psutil.Process()
        self.interval = interval
        self.before = self.peak = self._proc.memory_info().rss
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            self.peak = max(self.peak, self._proc.memory_info().rss)
            self._stop.wait(self.interval)

    def __enter__(self):
        self.before = self.peak = self._proc.memory_info().rss
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._proc.memory_info().rss)


def _environment(argv: list[str]) -> dict:
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None

    def git(*a):
        try:
            out = subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=10)
            return out.stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return ""

    dirty = git("status", "--porcelain", "--untracked-files=all", "--", "bayespk", "models")
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "date": _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds"),
        "command": shlex.join([".venv/bin/python", "benchmarks/bench_vpc.py", *argv]),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "versions": versions,
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_uncommitted_library_changes": dirty.splitlines() if dirty else [],
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
    }


def _time(fn, label: str, seed: int) -> dict:
    import matplotlib.pyplot as plt

    with PeakRSS() as mem:
        t0 = time.perf_counter()
        out = fn(seed)
        seconds = time.perf_counter() - t0
    plt.close("all")
    print(f"  {label:<28} seed {seed}: {seconds:7.2f} s, peak RSS {mem.peak / 2**20:7.0f} MB "
          f"(+{(mem.peak - mem.before) / 2**20:.0f})", flush=True)
    return {"seconds": seconds, "peak_rss_mb": mem.peak / 2**20,
            "rss_rise_mb": (mem.peak - mem.before) / 2**20, "result": out}


def run(args) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    t_import = time.perf_counter()
    import bayespk as bpk
    from bayespk.evaluate.simulation import simulate_replicates
    from bayespk.evaluate.vpc import vpc

    import_s = time.perf_counter() - t_import
    n = args.n_rep
    print(f"fitting {SPEC.name}: {args.chains} chains x {args.draws} draws, {args.tune} tune", flush=True)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = bpk.PopulationModel(bpk.Spec.from_toml(SPEC))
        fit = bpk.fit(model, draws=args.draws, tune=args.tune, chains=args.chains, seed=args.seed, progress=False)
    fit_s = time.perf_counter() - t0
    diag = fit.diagnostics()
    keep = {}

    def simulate(s):
        keep["reps"] = simulate_replicates(fit, n, seed=s)
        return keep["reps"]

    # in this order: the first simulate_replicates call is the first prediction-model compile of the process
    operations = {
        f"simulate_replicates(fit, {n})": simulate,
        f"bpk.vpc(fit, n_rep={n})": lambda s: bpk.vpc(fit, n_rep=n, seed=s),
        f"bpk.vpc(fit, n_rep={n}, pred_corr=True)": lambda s: bpk.vpc(fit, n_rep=n, pred_corr=True, seed=s),
        "vpc(fit, replicates=reps)": lambda s: vpc(fit, replicates=keep["reps"]),
    }
    results = []
    for label, fn in operations.items():
        first = _time(fn, label + " (first)", 0)
        timed = [_time(fn, label, 1 + r) for r in range(args.repeats)]
        secs = [t["seconds"] for t in timed]
        row = {
            "operation": label,
            "first_s": first["seconds"],
            "median_s": statistics.median(secs),
            "min_s": min(secs),
            "max_s": max(secs),
            "seconds": secs,
            "peak_rss_mb": max(t["peak_rss_mb"] for t in [first, *timed]),
            "max_rss_rise_mb": max(t["rss_rise_mb"] for t in [first, *timed]),
        }
        res = timed[-1]["result"]
        if hasattr(res, "table"):
            row["table_rows"] = int(len(res.table))
        results.append(row)
    return {
        "settings": {"spec": str(SPEC.relative_to(ROOT)), "n_rep": n, "repeats": args.repeats,
                     "chains": args.chains, "draws": args.draws, "tune": args.tune, "seed": args.seed},
        "data": {"subjects": int(fit.posterior.sizes["ID"]),
                 "observations": int(fit.tree["observed_data"]["DV"].size)},
        "fit": {"seconds": round(fit_s, 2), "posterior_draws": args.chains * args.draws,
                "max_r_hat": diag["max_r_hat"], "divergences": diag["divergences"]},
        "import_s": import_s,
        "process_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "results": results,
    }


def markdown(report: dict) -> str:
    env, s, d = report["environment"], report["settings"], report["data"]
    changed = env["git_uncommitted_library_changes"]
    lines = [
        "# bayespk VPC benchmark",
        "",
        f"- date: {env['date']}",
        f"- command: `{env['command']}`",
        f"- study: `{s['spec']}`, {d['subjects']} subjects, {d['observations']} observations; "
        f"fit {s['chains']} chains x {s['draws']} draws ({s['tune']} tune, seed {s['seed']}) in "
        f"{report['fit']['seconds']:.1f} s, max R-hat {report['fit']['max_r_hat']:.3f}",
        f"- {s['n_rep']} replicates; each operation: one first (warm-up) call, then {s['repeats']} timed "
        "calls with different seeds; the first `simulate_replicates` call is the process's first "
        "prediction-model compile",
        f"- python {env['python']} on {env['platform']}; CPUs: {env['cpu_count']}, {env['cpu_model']}; "
        f"load average before/after {env['loadavg_before'][0]:.2f} / {env['loadavg_after'][0]:.2f}",
        "- versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v),
        f"- git: {env['git_commit']}"
        + (" with uncommitted changes in " + ", ".join(c.split()[-1] for c in changed) if changed else ""),
        "",
        f"| operation | first call s | median s ({s['repeats']} repeats) | min s | max s | peak RSS MB "
        "| RSS rise MB |",
        "|---|--:|--:|--:|--:|--:|--:|",
    ]
    for r in report["results"]:
        lines.append(f"| `{r['operation']}` | {r['first_s']:.2f} | {r['median_s']:.2f} | {r['min_s']:.2f} "
                     f"| {r['max_s']:.2f} | {r['peak_rss_mb']:.0f} | {r['max_rss_rise_mb']:.0f} |")
    lines += [
        "",
        f"Peak RSS: this process's resident memory at its highest during the operation (it includes the "
        "fitted model and everything imported; process high-water mark "
        f"{report['process_max_rss_mb']:.0f} MB). "
        "RSS rise: the largest increase over the RSS just before a call. `simulate_replicates` rebuilds and "
        "compiles the prediction model on every call (PyTensor's on-disk cache makes later calls cheaper); "
        "`vpc(fit, replicates=reps)` is the VPC without simulation: binning, percentiles and the figure.",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n-rep", type=int, default=500, help="replicates per VPC (default 500)")
    ap.add_argument("--repeats", type=int, default=3, help="timed calls per operation (default 3)")
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--tune", type=int, default=500)
    ap.add_argument("--seed", type=int, default=20261122)
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    args = ap.parse_args(argv)
    env = _environment(argv)
    report = run(args)
    env["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    report = {"environment": env, **report}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "vpc.json").write_text(json.dumps(report, indent=2) + "\n")
    md = markdown(report)
    (args.out / "vpc.md").write_text(md)
    print()
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
