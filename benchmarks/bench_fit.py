"""Fit benchmarks for bayespk: wall time, compile time, sampling efficiency, memory.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_fit.py            # full run (several minutes)
    .venv/bin/python benchmarks/bench_fit.py --quick    # smoke run: 2 chains x 300 draws, 300 tune
    .venv/bin/python benchmarks/bench_fit.py --cases theophylline_nutpie --cold-cache

Every case runs in a fresh Python subprocess (this file with ``--case NAME``),
so nothing compiled by an earlier case is reused in memory, and the peak RSS
is that case's alone. The worker prints one ``BENCH_RESULT_JSON:`` line that
the driver reads back. Results go to ``benchmarks/results/fit.json`` and
``benchmarks/results/fit.md``; see ``benchmarks/README.md`` for how to read them.

Cases
-----
theophylline_nutpie   bundled theophylline spec (12 subjects), nutpie (the default sampler)
theophylline_pymc     the same model and seed with PyMC's own NUTS (``sampler="pymc"``)
sim500_nutpie         500 simulated subjects, 1-cmt oral, IIV on CL/V/KA, power WT effect
                      on CL (estimated), proportional error, 8 samples each; nutpie.
                      Also reports whether each population parameter's 90% interval
                      (q5..q95) covers the value it was simulated at.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import json
import math
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
MARKER = "BENCH_RESULT_JSON:"

FULL = {"chains": 4, "draws": 1000, "tune": 1000}
QUICK = {"chains": 2, "draws": 300, "tune": 300}

THEOPHYLLINE_SPEC = ROOT / "models" / "theophylline_1cmt_oral.toml"
THEOPHYLLINE_SEED = 20261122  # the seed in the bundled spec; both samplers use it

# ---------------------------------------------------------------- simulated study
SIM_SUBJECTS = 500
SIM_TIMES = [0.5, 1.0, 2.0, 4.0, 6.0, 8.0, 12.0, 24.0]
SIM_DOSE = 320.0  # mg, single oral dose
SIM_WT_REF = 70.0
SIM_DESIGN_SEED = 11
SIM_OBS_SEED = 12
SIM_FIT_SEED = 13
# Priors are centred on round guesses, deliberately not on the truth.
SIM_SPEC = {
    "name": "sim500_1cmt_oral_wt",
    "description": "500 simulated subjects, 1-cmt oral, IIV on CL/V/KA, power WT on CL, proportional error",
    "model": {"structure": "1cmt_oral"},
    "parameters": {
        "CL": {"guess": 2.0, "iiv": {"dist": "HalfNormal", "sigma": 0.5}},
        "V": {"guess": 25.0, "iiv": {"dist": "HalfNormal", "sigma": 0.5}},
        "KA": {"guess": 1.0, "iiv": {"dist": "HalfNormal", "sigma": 0.5}},
    },
    "covariates": [{"parameter": "CL", "column": "WT", "effect": "power", "reference": SIM_WT_REF}],
    "error": {"model": "proportional", "sigma_prop": {"dist": "HalfNormal", "sigma": 0.5}},
}
SIM_TRUTH = {
    "CL": 2.5, "V": 30.0, "KA": 1.2,
    "omega_CL": 0.3, "omega_V": 0.2, "omega_KA": 0.4,
    "CL_WT": 0.75,
    "sigma_prop": 0.15,
}  # fmt: skip

CASES = {
    "theophylline_nutpie": {"dataset": "theophylline", "sampler": "nutpie"},
    "theophylline_pymc": {"dataset": "theophylline", "sampler": "pymc"},
    "sim500_nutpie": {"dataset": "sim500", "sampler": "nutpie"},
}

PACKAGES = ("bayespk", "pymc", "pytensor", "nutpie", "numba", "arviz", "numpy", "pandas", "xarray", "scipy")


# ====================================================================== worker
class _TreeRSS:
    """Peak of the summed RSS of this process and all its descendants, sampled in a thread.

    ``ru_maxrss`` of this process misses PyMC's sampler processes (they are
    children of a forkserver), so this catches them. Shared pages are counted
    once per process, so it over-counts somewhat for forked workers.
    """

    def __init__(self, interval: float = 0.1):
        self.interval = interval
        self.peak = 0
        self.peak_processes = 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            import psutil
        except ImportError:  # pragma: no cover - psutil comes with the test extras
            return
        me = psutil.Process()
        while not self._stop.is_set():
            total, n = 0, 0
            try:
                procs = [me, *me.children(recursive=True)]
            except psutil.Error:
                procs = [me]
            for p in procs:
                try:
                    total += p.memory_info().rss
                    n += 1
                except psutil.Error:
                    pass
            if total > self.peak:
                self.peak, self.peak_processes = total, n
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _maxrss_mb(who) -> float:
    kb = resource.getrusage(who).ru_maxrss  # kilobytes on Linux (bytes on macOS)
    return kb / 1024 / (1024 if sys.platform == "darwin" else 1)


def _sim_dataset():
    """The 500-subject dataset: design, then DV drawn from the model at SIM_TRUTH."""
    import numpy as np

    from bayespk.model.spec import Spec
    from bayespk.simulate.study import simulate_observations, study_design

    spec = Spec.from_dict(SIM_SPEC)
    design = study_design(
        SIM_SUBJECTS, dose=SIM_DOSE, times=np.array(SIM_TIMES), route="oral",
        covariates={"WT": lambda rng, n: np.round(np.clip(rng.lognormal(np.log(SIM_WT_REF), 0.2, n), 40, 140), 1)},
        seed=SIM_DESIGN_SEED,
    )  # fmt: skip
    data = simulate_observations(spec, design, SIM_TRUTH, seed=SIM_OBS_SEED)
    return spec, data


def run_case(name: str, chains: int, draws: int, tune: int) -> dict:
    """Fit one case in this process and return its metrics (called in the subprocess)."""
    cfg = CASES[name]
    t_import = time.perf_counter()
    import numpy as np

    from bayespk.errors import ConvergenceWarning
    from bayespk.fit import fit
    from bayespk.model.population import PopulationModel
    from bayespk.model.spec import Spec

    import_s = time.perf_counter() - t_import
    out: dict = {"case": name, "sampler": cfg["sampler"], "dataset": cfg["dataset"],
                 "chains": chains, "draws": draws, "tune": tune}
    with _TreeRSS() as tree_rss:
        t0 = time.perf_counter()
        if cfg["dataset"] == "theophylline":
            spec, data, truth, seed = Spec.from_toml(THEOPHYLLINE_SPEC), None, None, THEOPHYLLINE_SEED
        else:
            spec, data = _sim_dataset()
            truth, seed = SIM_TRUTH, SIM_FIT_SEED
        t_data = time.perf_counter()
        model = PopulationModel(spec, data)
        t_model = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            result = fit(model, sampler=cfg["sampler"], chains=chains, draws=draws, tune=tune, seed=seed,
                         progress=False)
        t_fit = time.perf_counter()
        diag = result.diagnostics()
        summary = result.summary()
        t_end = time.perf_counter()

    wall = float(diag["wall_seconds"])
    compile_s = float(diag["compile_seconds"])
    compile_known = math.isfinite(compile_s)
    sampling = wall - compile_s if compile_known else wall
    pop = summary.set_index("parameter")
    min_pop = float(pop["ess_bulk"].min())
    min_all = float(diag["min_ess_bulk"])
    s = model.data.summary
    out.update({
        "subjects": int(model.design.n_subjects),
        "observations": int(model.design.n_obs),
        "seed": int(result.spec.sampler.seed),
        "target_accept": float(result.spec.sampler.target_accept),
        "n_population_parameters": len(result.population_parameters),
        "n_free_scalars": int(sum(np.prod([result.posterior[v].sizes[d] for d in result.posterior[v].dims
                                           if d not in ("chain", "draw")], dtype=int)
                                  for v in result.free_parameters if v in result.posterior)),
        # timings (seconds)
        "wall_s": wall,  # fit(): compile + sampling (bayespk's own wall_seconds)
        "compile_s": compile_s if compile_known else None,  # nutpie only; PyMC compiles inside pm.sample
        "sampling_s": sampling,
        "sampling_includes_compile": not compile_known,
        "import_s": round(import_s, 3),
        "data_s": round(t_data - t0, 3),  # reading the spec, or simulating the study
        "model_s": round(t_model - t_data, 3),  # PopulationModel(): design and validation
        "fit_call_s": round(t_fit - t_model, 3),  # fit() end to end: build, compile, sample, log-lik, checks
        "post_s": round(t_end - t_fit, 3),  # diagnostics() + summary()
        # efficiency
        "min_ess_bulk_pop": min_pop,
        "min_ess_bulk_pop_parameter": str(pop["ess_bulk"].idxmin()),
        "min_ess_bulk_all": min_all,
        "min_ess_bulk_all_parameter": diag["min_ess_bulk_parameter"],
        "min_ess_tail_all": float(diag["min_ess_tail"]),
        "ess_per_s_wall_pop": min_pop / wall,
        "ess_per_s_sampling_pop": min_pop / sampling,
        "ess_per_s_wall_all": min_all / wall,
        "ess_per_s_sampling_all": min_all / sampling,
        # convergence
        "divergences": int(diag["divergences"]),
        "max_r_hat": float(diag["max_r_hat"]),
        "max_r_hat_parameter": diag["max_r_hat_parameter"],
        "min_bfmi": float(diag["min_bfmi"]),
        "convergence_problems": list(diag["problems"]),
        "convergence_warnings": len([w for w in caught if issubclass(w.category, ConvergenceWarning)]),
        # memory (MB)
        "peak_rss_mb": _maxrss_mb(resource.RUSAGE_SELF),
        "peak_rss_children_mb": _maxrss_mb(resource.RUSAGE_CHILDREN),
        "peak_rss_tree_mb": tree_rss.peak / 2**20,
        "peak_rss_tree_processes": tree_rss.peak_processes,
        "summary": summary.to_dict(orient="records"),
        "n_subjects_in_data": int(s.n_subjects),
    })  # fmt: skip
    # per chain: population parameter means and sampler statistics (to spot a stuck chain)
    post, stats = result.posterior, result.tree["sample_stats"].to_dataset()
    out["per_chain"] = {
        "mean": {p: [round(float(x), 5) for x in post[p].mean("draw").values]
                 for p in result.population_parameters if p in post and post[p].ndim == 2},
        **{k: [float(f"{float(x):.4g}") for x in stats[k].astype(float).mean("draw").values]
           for k in ("step_size", "n_steps", "depth", "tree_depth", "maxdepth_reached", "diverging",
                     "mean_tree_accept", "acceptance_rate") if k in stats},
    }
    if truth is not None:
        cover = {}
        for p, v in truth.items():
            row = pop.loc[p]
            cover[p] = {"truth": v, "q5": float(row["q5"]), "median": float(row["median"]), "q95": float(row["q95"]),
                        "covered": bool(row["q5"] <= v <= row["q95"])}
        out["coverage90"] = cover
        out["coverage90_hits"] = sum(c["covered"] for c in cover.values())
        out["coverage90_total"] = len(cover)
    return out


def _worker(args) -> None:
    res = run_case(args.case, args.chains, args.draws, args.tune)
    sys.stdout.flush()
    print(MARKER + json.dumps(res, default=_json_default), flush=True)


def _json_default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    raise TypeError(type(o))


# ====================================================================== driver
def _environment(argv: list[str]) -> dict:
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass

    def git(*a):
        try:
            return subprocess.run(["git", *a], check=False, cwd=ROOT, capture_output=True, text=True, timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    dirty = git("status", "--porcelain", "--untracked-files=all", "--", "bayespk", "models")
    return {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": shlex.join([os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT))
                               else sys.executable, os.path.relpath(__file__, ROOT), *argv]),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model,
        "memory_gib": mem_gib,
        "versions": versions,
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_uncommitted_library_changes": dirty.splitlines() if dirty else [],
        "pytensor_flags": os.environ.get("PYTENSOR_FLAGS"),
    }


def _source_hash() -> str:
    """Hash of the library sources and bundled models, to notice edits made while the benchmark runs."""
    h = hashlib.sha256()
    for f in sorted([*(ROOT / "bayespk").rglob("*.py"), *(ROOT / "models").glob("*")]):
        if f.is_file():
            h.update(str(f.relative_to(ROOT)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _run_subprocess(name: str, settings: dict, cold_cache: bool, timeout: float, log_dir: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--case", name,
           "--chains", str(settings["chains"]), "--draws", str(settings["draws"]), "--tune", str(settings["tune"])]
    env = dict(os.environ)
    tmp = None
    if cold_cache:
        tmp = tempfile.TemporaryDirectory(prefix="bayespk-bench-compiledir-")
        flags = [f for f in env.get("PYTENSOR_FLAGS", "").split(",") if f and not f.startswith("base_compiledir")]
        env["PYTENSOR_FLAGS"] = ",".join([*flags, f"base_compiledir={tmp.name}"])
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
        rc = None
        stdout = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        stderr = (e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or "")) + f"\nTIMEOUT after {timeout}s"
    finally:
        if tmp is not None:
            tmp.cleanup()
    process_s = time.perf_counter() - t0
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / f"{name}.log").write_text(f"$ {shlex.join(cmd)}\n--- stdout\n{stdout}\n--- stderr\n{stderr}")
    res = None
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            res = json.loads(line[len(MARKER):])
    if res is None:
        return {"case": name, "sampler": CASES[name]["sampler"], "error": f"worker exit code {rc}",
                "stderr_tail": stderr[-3000:], "process_s": round(process_s, 2)}
    res["process_s"] = round(process_s, 2)  # whole subprocess: interpreter start, imports, everything
    res["loadavg_before"] = [round(x, 2) for x in load_before]
    res["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    res["cold_cache"] = cold_cache
    return res


def _f(x, nd=1, dash="n/a"):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return dash
    return f"{x:,.{nd}f}"


def markdown(report: dict) -> str:
    env, res = report["environment"], report["results"]
    s = report["settings"]
    lines = [
        f"# bayespk fit benchmark ({'quick' if report['quick'] else 'full'})",
        "",
        f"- date: {env['date']}",
        f"- command: `{env['command']}`",
        (f"- settings: {s['chains']} chains x {s['draws']} draws, {s['tune']} tune; "
        f"compile cache: {'cold (fresh PyTensor compiledir per case)' if report['cold_cache'] else 'warm (user PyTensor compiledir)'}"),
        (f"- python {env['python']} on {env['platform']}; CPUs: {env['cpu_count']} "
        f"(affinity {env['cpu_affinity']}), {env['cpu_model']}; memory {env['memory_gib']} GiB"),
        "- versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v),
        f"- git: {env['git_commit']}"
        + (f" with uncommitted changes in {', '.join(c.split()[-1] for c in env['git_uncommitted_library_changes'])}"
           if env["git_uncommitted_library_changes"] else ""),
    ]
    if env.get("source_changed_during_run"):
        lines.append("- **warning: bayespk/ or models/ changed while the benchmark ran; cases may have run "
                     "different code**")
    lines += [
        "",
        ("| case | sampler | subjects | observations | wall s (incl compile) | compile s | sampling s "
        "| min ESS bulk (pop) | ESS/s (slowest, wall) | divergences | max R-hat | peak RSS MB |"),
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in res:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['sampler']} | FAILED: {r['error']} |" + " |" * 9)
            continue
        samp = _f(r["sampling_s"]) + ("\\*" if r["sampling_includes_compile"] else "")
        lines.append(
            f"| {r['case']} | {r['sampler']} | {r['subjects']} | {r['observations']} | {_f(r['wall_s'])} "
            f"| {_f(r['compile_s'])} | {samp} | {_f(r['min_ess_bulk_pop'], 0)} | {_f(r['ess_per_s_wall_pop'], 2)} "
            f"| {r['divergences']} | {_f(r['max_r_hat'], 3)} | {_f(r['peak_rss_mb'], 0)} |"
        )
    lines += [
        "",
        "\\* PyMC compiles inside `pm.sample`, so its compile time is not separable and is included in sampling s.",
        "",
        ("More metrics (ESS over *all* free parameters includes the standardized etas `z_*`; "
        "peak RSS (tree) sums all processes, including PyMC's sampler processes):"),
        "",
        ("| case | min ESS bulk (all) | at | ESS/s all (wall) | ESS/s pop (sampling) | ESS/s all (sampling) "
        "| min ESS tail (all) | min E-BFMI | fit() end-to-end s | peak RSS tree MB | load avg before/after |"),
        "|---|--:|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in res:
        if "error" in r:
            continue
        lines.append(
            f"| {r['case']} | {_f(r['min_ess_bulk_all'], 0)} | {r['min_ess_bulk_all_parameter']} "
            f"| {_f(r['ess_per_s_wall_all'], 2)} | {_f(r['ess_per_s_sampling_pop'], 2)} "
            f"| {_f(r['ess_per_s_sampling_all'], 2)} | {_f(r['min_ess_tail_all'], 0)} | {_f(r['min_bfmi'], 2)} "
            f"| {_f(r['fit_call_s'])} | {_f(r['peak_rss_tree_mb'], 0)} "
            f"| {r['loadavg_before'][0]:.2f} / {r['loadavg_after'][0]:.2f} |"
        )
    for r in res:
        if "coverage90" in r:
            lines += ["", f"Truth vs posterior, {r['case']} (90% interval q5..q95): "
                          f"{r['coverage90_hits']}/{r['coverage90_total']} population parameters covered"
                          + ("" if r["max_r_hat"] <= 1.01 else
                             f" (not meaningful: the chains did not converge, max R-hat {r['max_r_hat']:.2f})"),
                      "",
                      "| parameter | truth | q5 | median | q95 | covered |", "|---|--:|--:|--:|--:|---|"]
            for p, c in r["coverage90"].items():
                lines.append(f"| {p} | {c['truth']:g} | {c['q5']:.4g} | {c['median']:.4g} | {c['q95']:.4g} "
                             f"| {'yes' if c['covered'] else '**no**'} |")
    for r in res:
        pc = r.get("per_chain", {})
        if "n_steps" in pc and len(pc["n_steps"]) > 1:
            med = sorted(pc["n_steps"])[len(pc["n_steps"]) // 2]
            slow = [i for i, n in enumerate(pc["n_steps"]) if n > 4 * med]
            if slow:
                lines += ["", (f"{r['case']}: chain(s) {', '.join(map(str, slow))} look stuck: mean leapfrog steps "
                              f"per draw {', '.join(f'{n:.0f}' for n in pc['n_steps'])} by chain, step size "
                              f"{', '.join(f'{x:.3g}' for x in pc.get('step_size', []))}; per-chain means are in fit.json")]
    problems = [(r["case"], p) for r in res if "error" not in r for p in r["convergence_problems"]]
    if problems:
        lines += ["", "Convergence problems reported by bayespk:", ""]
        lines += [f"- {c}: {p}" for c, p in problems]
    failed = [r for r in res if "error" in r]
    for r in failed:
        lines += ["", f"{r['case']} failed ({r['error']}); stderr tail:", "", "```", r["stderr_tail"][-1500:], "```"]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 chains x 300 draws, 300 tune")
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES), help="cases to run")
    ap.add_argument("--cold-cache", action="store_true",
                    help="give each case an empty PyTensor compiledir (first-ever-run compile time)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per case (default 3600)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    # worker mode (internal)
    ap.add_argument("--case", choices=list(CASES), help=argparse.SUPPRESS)
    ap.add_argument("--chains", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--draws", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--tune", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--report-only", action="store_true",
                    help="re-write fit.md from an existing fit.json in --out (no fitting)")
    args = ap.parse_args(argv)

    if args.report_only:
        report = json.loads((args.out / "fit.json").read_text())
        md = markdown(report)
        (args.out / "fit.md").write_text(md)
        print(md)
        return 0
    if args.case:
        _worker(args)
        return 0

    settings = QUICK if args.quick else FULL
    env = _environment(argv)
    print(f"bayespk fit benchmark: {', '.join(args.cases)}; {settings['chains']} chains x {settings['draws']} draws, "
          f"{settings['tune']} tune", flush=True)
    source_before = _source_hash()
    results = []
    for name in args.cases:
        print(f"  {name} ...", end=" ", flush=True)
        r = _run_subprocess(name, settings, args.cold_cache, args.timeout, args.out / "logs")
        results.append(r)
        print("FAILED (see log)" if "error" in r else
              f"{r['wall_s']:.1f} s fit wall, min ESS (pop) {r['min_ess_bulk_pop']:.0f}", flush=True)
    env["source_hash"] = source_before
    env["source_changed_during_run"] = _source_hash() != source_before
    report = {"quick": args.quick, "cold_cache": args.cold_cache, "settings": settings, "environment": env,
              "results": results}
    md = markdown(report)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "fit.json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    (args.out / "fit.md").write_text(md)
    print()
    print(md)
    print(f"wrote {args.out / 'fit.json'} and {args.out / 'fit.md'}")
    return 1 if any("error" in r for r in results) else 0


if __name__ == "__main__":
    sys.exit(main())
