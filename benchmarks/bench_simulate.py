"""Regimen-simulation benchmark for bayespk: subject-regimens per second.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_simulate.py                 # 3 regimens x 1000 subjects x 200 draws
    .venv/bin/python benchmarks/bench_simulate.py --run runs/pheno --n-subjects 2000

The bundled ``models/phenobarbital_1cmt_iv.toml`` (59 neonates; CL and V proportional to
weight, V larger with Apgar < 5) is fitted once (2 chains x 500 draws after 500 tuning steps by
default), or an existing run directory is loaded with ``--run``. Then
``simulate_regimens`` simulates three weight-based regimens (a 20 mg/kg loading dose, then
2, 3 or 4 mg/kg every 12 h for 14 doses) for a virtual population of 1000 neonates
(covariate rows resampled from the fitted subjects, new etas), 200 posterior draws each:
Cmax/Cmin/Ctrough/AUC over the last dosing interval, time above 15 mg/L, and the same at steady
state. Timed: the whole ``simulate_regimens`` call (building the prediction models,
``pm.sample_posterior_predictive``, the metrics), with its per-chunk breakdown, and the tables
afterwards (target attainment, overlap). Reported: wall seconds, subject-regimens per second
(one subject under one regimen, all its draws) and subject-regimen-draws per second, peak RSS.
Results go to ``benchmarks/results/simulate.json`` and ``simulate.md``.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import json
import os
import platform
import resource
import shlex
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
REGIMENS = [
    "label=2mg/kg,dose=2,ii=12,n=14,loading=20,per=WT",
    "label=3mg/kg,dose=3,ii=12,n=14,loading=20,per=WT",
    "label=4mg/kg,dose=4,ii=12,n=14,loading=20,per=WT",
]
TARGETS = ["Cmin>=15", "Cmax<=40", "Cmin_ss in [15, 40]"]


class PeakRSS:
    """Peak resident memory of this process while the block runs (sampled in a thread)."""

    def __init__(self, interval: float = 0.02):
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
            return subprocess.run(["git", *a], cwd=ROOT, capture_output=True, text=True, timeout=10,
                                  check=False).stdout.strip()
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
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": shlex.join([".venv/bin/python", "benchmarks/bench_simulate.py", *argv]),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_model": cpu_model,
        "versions": versions,
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_uncommitted_library_changes": dirty.splitlines() if dirty else [],
        "loadavg_before": [round(x, 2) for x in os.getloadavg()],
    }


def run(args) -> dict:
    import matplotlib

    matplotlib.use("Agg")
    import bayespk as bpk
    from bayespk.simulate import simulate_regimens

    if args.run:
        print(f"loading {args.run}", flush=True)
        fit = bpk.load(args.run)
        fit_info = {"run": str(args.run)}
    else:
        print(f"fitting {SPEC.name}: {args.chains} chains x {args.draws} draws, {args.tune} tune", flush=True)
        t0 = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            fit = bpk.fit(bpk.PopulationModel(bpk.Spec.from_toml(SPEC)), draws=args.draws, tune=args.tune,
                                                                     chains=args.chains, seed=args.seed,
                                                                     progress=False)
        diag = fit.diagnostics()
        fit_info = {"spec": str(SPEC.relative_to(ROOT)), "seconds": round(time.perf_counter() - t0, 2),
                    "chains": args.chains, "draws": args.draws, "tune": args.tune, "seed": args.seed,
                    "max_r_hat": diag["max_r_hat"], "divergences": diag["divergences"]}
    lines: list[str] = []

    def progress(msg: str) -> None:
        lines.append(f"{time.perf_counter() - t_sim:6.1f} s wall {time.process_time() - c_sim:6.1f} s cpu | {msg}")
        print(f"  {msg}", flush=True)

    print(f"simulating {len(REGIMENS)} regimens x {args.n_subjects} virtual subjects x {args.n_draws} draws",
          flush=True)
    with PeakRSS() as mem:
        t_sim, c_sim = time.perf_counter(), time.process_time()
        sim = simulate_regimens(fit, REGIMENS, population="virtual", n_subjects=args.n_subjects,
                                n_draws=args.n_draws, threshold=15.0, seed=args.sim_seed, progress=progress)
        sim_s = time.perf_counter() - t_sim
        sim_cpu = time.process_time() - c_sim
    t0 = time.perf_counter()
    attainment = sim.attainment(TARGETS, by="WT")
    overlap = sim.overlap()
    summary = sim.summary()
    tables_s = time.perf_counter() - t0
    n_units = args.n_subjects * len(REGIMENS)
    info = sim.info
    return {
        "settings": {"regimens": REGIMENS, "targets": TARGETS, "n_subjects": args.n_subjects,
                     "n_draws": args.n_draws, "population": "virtual (covariate rows resampled, new etas)",
                     "threshold": 15.0, "resolution": info["resolution"], "ss_method": info["ss_method"],
                     "ss_intervals": info["ss_intervals"],
                     "chunk_size": 1000, "seed": args.sim_seed},
        "fit": fit_info,
        "simulation": {
            "seconds": sim_s,
            "cpu_seconds": sim_cpu,
            "subject_regimens": n_units,
            "subject_regimens_per_second": n_units / sim_s,
            "subject_regimen_draws_per_second": n_units * args.n_draws / sim_s,
            "prediction_calls": info["prediction_calls"],
            "grid_points": info["grid_points"],
            "grid_step": info["grid_step"],
            "peak_rss_mb": mem.peak / 2**20,
            "rss_rise_mb": (mem.peak - mem.before) / 2**20,
            "progress": lines,
        },
        "tables_seconds": tables_s,
        "process_max_rss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "attainment": attainment[attainment.stratum == "all"].round(4).to_dict(orient="records"),
        "overlap": overlap.round(4).to_dict(orient="records"),
        "exposure": summary[summary.metric.isin(["Cmin", "Cmax", "AUC", "AUC_ss", "Cmin_ss"])]
        .round(4).to_dict(orient="records"),
    }


def markdown(report: dict) -> str:
    env, s, sim = report["environment"], report["settings"], report["simulation"]
    changed = env["git_uncommitted_library_changes"]
    f = report["fit"]
    fit_line = (f"loaded `{f['run']}`" if "run" in f else
                f"`{f['spec']}` fitted with {f['chains']} chains x {f['draws']} draws ({f['tune']} tune, seed "
                f"{f['seed']}) in {f['seconds']:.1f} s, max R-hat {f['max_r_hat']:.3f}")
    lines = [
        "# bayespk regimen-simulation benchmark",
        "",
        f"- date: {env['date']}",
        f"- command: `{env['command']}`",
        f"- fit: {fit_line}",
        f"- {len(s['regimens'])} regimens (" + "; ".join(f"`{r}`" for r in s["regimens"]) + ") x "
        f"{s['n_subjects']} virtual subjects x {s['n_draws']} posterior draws; metrics on a grid of "
        f"{next(iter(sim['grid_step'].values()))['interval']:g} h (interval / {s['resolution']}); steady state "
        + (f"folded from {s['ss_intervals']} intervals of a single dose" if s["ss_method"] == "fold"
           else "from an SS=1 dose record"),
        (f"- python {env['python']} on {env['platform']}; CPUs: {env['cpu_count']}, {env['cpu_model']}; "
         f"load average before/after {env['loadavg_before'][0]:.2f} / {env['loadavg_after'][0]:.2f}"),
        "- versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v),
        f"- git: {env['git_commit']}"
        + (" with uncommitted changes in " + ", ".join(c.split()[-1] for c in changed) if changed else ""),
        "",
        ("| subject-regimens | draws | wall s | CPU s | subject-regimens/s | subject-regimen-draws/s "
         "| prediction calls | peak RSS MB | RSS rise MB | tables s |"),
        "|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
        (f"| {sim['subject_regimens']} | {s['n_draws']} | {sim['seconds']:.1f} | {sim['cpu_seconds']:.1f} | "
         f"{sim['subject_regimens_per_second']:.1f} | {sim['subject_regimen_draws_per_second']:.0f} | "
         f"{sim['prediction_calls']} | {sim['peak_rss_mb']:.0f} | {sim['rss_rise_mb']:.0f} | "
         f"{report['tables_seconds']:.2f} |"),
        "",
        ("Wall s is the whole `simulate_regimens` call in a fresh process: building one prediction model per "
         "regimen and chunk of subjects (and one for the unit-dose curves behind the steady-state metrics), "
         "compiling and running `pm.sample_posterior_predictive` in calls of at most 25 million "
         "concentrations, and the metrics; CPU s is this process's CPU time over the same call (all threads): "
         "when it is well below wall s x cores used, other work was taking the CPU. Tables s: target "
         "attainment (by WT quartile), overlap and the exposure summary afterwards. Breakdown (wall and CPU "
         "time elapsed at the end of each step):"),
        "",
        "```",
        *sim["progress"],
        "```",
        "",
        "Target attainment (all subjects; median and 90% CrI over draws of the fraction attaining):",
        "",
        "| regimen | target | probability | median | lower | upper |",
        "|---|---|--:|--:|--:|--:|",
        *[f"| {a['regimen']} | {a['target']} | {a['probability']:.3f} | {a['median']:.3f} | {a['lower']:.3f} "
          f"| {a['upper']:.3f} |" for a in report["attainment"]],
        "",
        "Overlap of neighbouring regimens:",
        "",
        "| low | high | metric | OVL | OVL 90% CrI | P(high > low) |",
        "|---|---|---|--:|--:|--:|",
        *[f"| {o['low']} | {o['high']} | {o['metric']} | {o['ovl']:.3f} | {o['ovl_lower']:.3f}-{o['ovl_upper']:.3f} "
          f"| {o['p_high_gt_low']:.3f} |" for o in report["overlap"]],
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--run", type=Path, help="load this run directory instead of fitting")
    ap.add_argument("--n-subjects", type=int, default=1000)
    ap.add_argument("--n-draws", type=int, default=200)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--draws", type=int, default=500)
    ap.add_argument("--tune", type=int, default=500)
    ap.add_argument("--seed", type=int, default=20261122, help="fit seed")
    ap.add_argument("--sim-seed", type=int, default=0, help="simulation seed")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    args = ap.parse_args(argv)
    env = _environment(argv)
    report = run(args)
    env["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    report = {"environment": env, **report}
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "simulate.json").write_text(json.dumps(report, indent=2, default=float) + "\n")
    md = markdown(report)
    (args.out / "simulate.md").write_text(md)
    print()
    print(md)
    return 0


if __name__ == "__main__":
    sys.exit(main())
