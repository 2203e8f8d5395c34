"""Compile once (issue #18): the theophylline ``bayespk fit`` as a whole process, cold and warm caches.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_compile.py                 # 3 repeats, 4 chains x 1000 after 1000
    .venv/bin/python benchmarks/bench_compile.py --repeats 1 --draws 100 --tune 100   # smoke run
    .venv/bin/python benchmarks/bench_compile.py --via patched   # before bayespk/fit.py calls compile_nutpie

Each run is the command a user types::

    .venv/bin/bayespk fit models/theophylline_1cmt_oral.toml --out TMP/run --draws 1000 --tune 1000 --quiet

timed from start to exit (interpreter start, imports, model, compile, sampling,
log-likelihood, writing the run directory), with a fresh ``--out`` each time.
Every repeat gives each variant a fresh temporary cache folder ``C`` and points
all three caches into it: ``PYTENSOR_FLAGS=base_compiledir=C/pytensor`` (PyTensor's
C and numba caches), ``NUMBA_CACHE_DIR=C/numba`` and ``BAYESPK_CACHE_DIR=C/bayespk``;
it runs the command twice, **cold** (empty caches: a first run after installing)
and **warm** (the same caches again: every later run). Variants:

* ``cached``: bayespk's compile cache on (:mod:`bayespk.compile_cache`);
* ``nutpie``: the cache off (``BAYESPK_CACHE_DIR=off``): ``nutpie.compile_pymc_model``
  as before, only PyTensor's caches serve a new process.

Variants and the cold/warm pairs are interleaved in each repeat (their order
alternates from one repeat to the next); the table gives min and median over
repeats. ``compile s`` is the fit's own ``compile_seconds`` (diagnostics.json),
``sampling s`` its ``wall_seconds`` less ``compile_seconds`` (sampling only). ``--via patched`` runs the
same command through ``python -c`` with ``nutpie.compile_pymc_model`` replaced by
:func:`bayespk.compile_cache.compile_nutpie`, for measuring before
``bayespk/fit.py`` calls it (with ``--via cli``, the default, a ``cached`` run that
writes no cache entry is flagged: fit.py does not use the cache). Also timed, as
separate processes: ``import bayespk.cli, bayespk.fit, nutpie`` (what the fit
command imports before it starts work).

Results: ``benchmarks/results/compile.md`` and ``compile.json`` (every command's
output: ``results/logs/compile.log``); the 1-minute
load average before and after each run is recorded (the machine is shared:
numbers from a loaded machine are slower, see the load column).
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_fit import RESULTS, ROOT, THEOPHYLLINE_SPEC, _environment, _f, _run_lines, write_results  # noqa: E402

VARIANTS = ("cached", "nutpie")
PHASES = ("cold", "warm")
TARGETS = {"warm": 8.0, "cold": 15.0}  # issue #18: whole process, seconds
BAYESPK = ROOT / ".venv" / "bin" / "bayespk"
PATCHED = ("import sys, nutpie, bayespk.compile_cache as c; "
           "nutpie.compile_pymc_model = lambda m, **k: c.compile_nutpie(m, **k); "
           "from bayespk.cli import main; sys.exit(main(sys.argv[1:]))")
IMPORTS = "import bayespk.cli, bayespk.fit, nutpie"


def _command(via: str, out: Path, draws: int, tune: int, chains: int | None) -> list[str]:
    args = ["fit", str(THEOPHYLLINE_SPEC), "--out", str(out), "--draws", str(draws), "--tune", str(tune), "--quiet"]
    if chains is not None:
        args += ["--chains", str(chains)]
    if via == "cli":
        exe = str(BAYESPK) if BAYESPK.exists() else None
        return [exe, *args] if exe else [sys.executable, "-m", "bayespk.cli", *args]
    return [sys.executable, "-c", PATCHED, *args]


def _env(cache: Path, variant: str) -> dict:
    env = dict(os.environ)
    flags = [f for f in env.get("PYTENSOR_FLAGS", "").split(",")
             if f and not f.startswith(("base_compiledir", "compiledir"))]
    env["PYTENSOR_FLAGS"] = ",".join([*flags, f"base_compiledir={cache / 'pytensor'}"])
    env["NUMBA_CACHE_DIR"] = str(cache / "numba")
    env["BAYESPK_CACHE_DIR"] = str(cache / "bayespk") if variant == "cached" else "off"
    return env


def run_once(variant: str, phase: str, cache: Path, work: Path, args, log) -> dict:
    out = work / f"run-{variant}-{phase}-{time.monotonic_ns()}"
    cmd = _command(args.via, out, args.draws, args.tune, args.chains)
    load_before = os.getloadavg()[0]
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(cache, variant), capture_output=True, text=True,
                          timeout=args.timeout, check=False)
    process_s = time.perf_counter() - t0
    log.write(f"$ {shlex.join(cmd)}\n--- rc {proc.returncode}, {process_s:.2f} s\n{proc.stdout[-2000:]}\n"
              f"--- stderr\n{proc.stderr[-3000:]}\n\n")
    r = {"variant": variant, "phase": phase, "process_s": round(process_s, 2), "rc": proc.returncode,
         "load_before": round(load_before, 2), "load_after": round(os.getloadavg()[0], 2)}
    diag = out / "diagnostics.json"
    if proc.returncode == 0 and diag.is_file():
        d = json.loads(diag.read_text())
        r["compile_s"] = d.get("compile_seconds")
        if d.get("wall_seconds") is not None and d.get("compile_seconds") is not None:
            r["sampling_s"] = round(d["wall_seconds"] - d["compile_seconds"], 3)  # fit.py's wall includes compile
    entries = list((cache / "bayespk" / "nutpie").glob("*.nbp"))
    r["cache_entries"] = len(entries)
    r["cache_entry_kib"] = round(sum(p.stat().st_size for p in entries) / 1024) if entries else 0
    return r


def _log_path(out: Path) -> Path:
    (out / "logs").mkdir(parents=True, exist_ok=True)
    return out / "logs" / "compile.log"


def time_imports(repeats: int) -> list[float]:
    out = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        subprocess.run([sys.executable, "-c", IMPORTS], cwd=ROOT, check=True, capture_output=True)
        out.append(round(time.perf_counter() - t0, 2))
    return out


def summarize(runs: list[dict]) -> list[dict]:
    rows = []
    for variant in VARIANTS:
        for phase in PHASES:
            rs = [r for r in runs if r["variant"] == variant and r["phase"] == phase and r["rc"] == 0]
            if not rs:
                continue

            def stat(k, rs=rs):
                xs = [r[k] for r in rs if r.get(k) is not None]
                return (min(xs), statistics.median(xs)) if xs else (None, None)

            row = {"variant": variant, "phase": phase, "n": len(rs)}
            for k in ("process_s", "compile_s", "sampling_s", "load_before"):
                row[f"{k}_min"], row[f"{k}_median"] = stat(k)
            row["cache_entries"] = max(r["cache_entries"] for r in rs)
            row["cache_entry_kib"] = max(r["cache_entry_kib"] for r in rs)
            rows.append(row)
    return rows


def markdown(report: dict) -> str:
    s = report["settings"]
    run = {"quick": False, "cold_cache": False, "settings": s, "environment": report["environment"]}
    lines = ["# bayespk compile once: the theophylline fit as a whole process, cold and warm caches", ""]
    lines += [line for line in _run_lines(run) if not line.startswith("- settings:")]
    lines += [
        f"- command: `bayespk fit {os.path.relpath(THEOPHYLLINE_SPEC, ROOT)} --out TMP --draws {s['draws']} "
        f"--tune {s['tune']} --quiet`{' (chains ' + str(s['chains']) + ')' if s['chains'] else ''} "
        f"({'through python -c with nutpie.compile_pymc_model patched' if s['via'] == 'patched' else 'as installed'})",
        f"- repeats: {s['repeats']}, variants and phases interleaved; per repeat a fresh cache folder "
        "(PyTensor base_compiledir, NUMBA_CACHE_DIR, BAYESPK_CACHE_DIR): cold = first run, warm = second",
        f"- targets (issue #18): warm <= {TARGETS['warm']:.0f} s, cold <= {TARGETS['cold']:.0f} s, whole process",
        "",
        "| variant | cache | process s min | process s median | compile s min | compile s median "
        "| sampling s median | load (1 min) median | cache entry KiB |",
        "|---|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for r in report["summary"]:
        lines.append(
            f"| {r['variant']} | {r['phase']} | {_f(r['process_s_min'])} | {_f(r['process_s_median'])} "
            f"| {_f(r['compile_s_min'], 2)} | {_f(r['compile_s_median'], 2)} | {_f(r['sampling_s_median'])} "
            f"| {_f(r['load_before_median'], 2)} | {r['cache_entry_kib'] or '-'} |")
    imp = report.get("imports_s")
    if imp:
        lines += ["", f"`{IMPORTS}` alone (a new process each): min {min(imp):.2f} s, median "
                      f"{statistics.median(imp):.2f} s ({len(imp)} runs)."]
    lines += ["", "Every run (in order):", "", "| # | variant | cache | process s | compile s | sampling s "
              "| load before | load after | rc |", "|---:|---|---|---:|---:|---:|---:|---:|---:|"]
    for i, r in enumerate(report["runs"], 1):
        lines.append(f"| {i} | {r['variant']} | {r['phase']} | {_f(r['process_s'], 2)} | {_f(r.get('compile_s'), 2)} "
                     f"| {_f(r.get('sampling_s'), 2)} | {r['load_before']:.2f} | {r['load_after']:.2f} | {r['rc']} |")
    if report.get("warnings"):
        lines += ["", *[f"**{w}**" for w in report["warnings"]]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--tune", type=int, default=1000)
    ap.add_argument("--chains", type=int, help="default: the spec's (4)")
    ap.add_argument("--via", choices=["cli", "patched"], default="cli",
                    help="cli: the installed bayespk command (default); patched: python -c with "
                         "nutpie.compile_pymc_model replaced by bayespk.compile_cache.compile_nutpie")
    ap.add_argument("--variants", nargs="+", choices=VARIANTS, default=list(VARIANTS))
    ap.add_argument("--import-repeats", type=int, default=3, help="timings of the imports alone (0: none)")
    ap.add_argument("--timeout", type=float, default=600)
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    args = ap.parse_args(argv)

    env = _environment(argv)
    env["command"] = shlex.join([os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT))
                                 else sys.executable, os.path.relpath(__file__, ROOT), *argv])
    settings = {"repeats": args.repeats, "draws": args.draws, "tune": args.tune, "chains": args.chains,
                "via": args.via, "variants": args.variants}
    args.out.mkdir(parents=True, exist_ok=True)
    runs, warnings = [], []
    with tempfile.TemporaryDirectory(prefix="bayespk-bench-compile-") as tmp, \
            open(_log_path(args.out), "w") as log:
        work = Path(tmp)
        for rep in range(args.repeats):
            order = args.variants if rep % 2 == 0 else args.variants[::-1]
            for variant in order:
                cache = work / f"cache-{variant}-{rep}"
                cache.mkdir()
                for phase in PHASES:
                    print(f"  repeat {rep + 1}/{args.repeats} {variant:7s} {phase} ...", end=" ", flush=True)
                    r = run_once(variant, phase, cache, work, args, log)
                    r["repeat"] = rep + 1
                    runs.append(r)
                    print(f"{r['process_s']:.1f} s (compile {_f(r.get('compile_s'), 2)} s, rc {r['rc']}, "
                          f"load {r['load_before']:.1f})", flush=True)
        imports = time_imports(args.import_repeats) if args.import_repeats else []
    if any(r["rc"] != 0 for r in runs):
        warnings.append(f"{sum(r['rc'] != 0 for r in runs)} run(s) failed: see {_log_path(args.out)}")
    if any(r["variant"] == "cached" and r["cache_entries"] == 0 and r["rc"] == 0 for r in runs):
        warnings.append("the cached variant wrote no cache entry: bayespk/fit.py does not call "
                        "bayespk.compile_cache.compile_nutpie yet (use --via patched)")
    report = {"settings": settings, "environment": env, "summary": summarize(runs), "runs": runs,
              "imports_s": imports, "targets_s": TARGETS, "warnings": warnings}
    write_results(args.out, "compile", report, markdown(report))
    print(f"(log: {_log_path(args.out)})")
    return 1 if any(r["rc"] != 0 for r in runs) else 0


if __name__ == "__main__":
    sys.exit(main())
