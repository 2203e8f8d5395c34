"""Parameter recovery of the library models written as equations (issue 13).

Criterion (issue 13): each library model recovers its simulated truth, the 90%
posterior intervals (q5..q95) covering at least 80% of the population
parameters over 3 seeds (simulated data sets), with no divergences at the
default sampler settings.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_recovery.py            # the study: 4 models x 3 seeds, specs' settings
    .venv/bin/python benchmarks/bench_recovery.py --models mm_2cmt_iv irm_oral --seeds 2
    .venv/bin/python benchmarks/bench_recovery.py --smoke --models mm_2cmt_iv   # check the script (~2 min)
    .venv/bin/python benchmarks/bench_recovery.py --report-only  # re-write recovery.md from recovery.json

Models: the specs in ``models/`` whose data are simulated with known truth by
``models/data/make_user_models.py`` (``TRUTH``, ``OMEGA``, ``SIGMA_PROP``,
``SIGMA_PD``): ``mm_1cmt_oral``, ``mm_2cmt_iv``, ``transit_oral`` and
``irm_oral`` (a PK/PD model with two outputs: concentrations, DVID 1, error
model ``[error]``; responses, DVID 2, ``[pd_error]``).

Seeds: seed k is the data set the generator writes from the random stream
``default_rng([SEED, STREAM[model] + 100 * (k - 1)])`` (``simulate(model, stream)``):
seed 1 is the bundled data set (``models/data/<model>.csv``, stream
``STREAM[model]``), seeds 2 and 3 use streams ``STREAM + 100`` and
``STREAM + 200`` (the same design and truth, new subjects and residuals). Each
data set is written to a temporary CSV and the spec is fitted to it with
``bpk.fit(bpk.PopulationModel(spec, data=csv), progress=False, ...)`` at the spec's
``[sampler]`` settings (chains, draws, tune, seed, target_accept, adaptation,
backend) unless ``--chains/--draws/--tune`` are given; every data set is
fitted with the spec's sampler seed.

For every population parameter (``model.spec.population_parameters``: typical
values, omegas ``omega_<P>``, residual SDs ``sigma_prop`` and ``pd_sigma_add``)
the truth, posterior median and 90% interval are recorded, and whether the
interval holds the truth. Truths: typical values from ``TRUTH``, omegas from
``OMEGA`` (0 for a parameter simulated without IIV), ``sigma_prop`` =
``SIGMA_PROP``, ``pd_sigma_add`` = ``SIGMA_PD``; a parameter the generator has
no value for (e.g. a covariate coefficient or another error model's SD) is
listed without truth and left out of the coverage. Also recorded per fit:
divergences, max R-hat, min bulk/tail ESS and E-BFMI over all free variables
(``fit.diagnostics()``), compile and wall seconds.

A model passes when all its fits ran, the intervals cover >= 80% of its
(parameter, seed) pairs, and no fit has a divergence; the study passes when
every model does. R-hat and ESS are reported, not judged (bayespk's own
convergence problems are listed under the tables). ``--smoke`` (2 chains x 100
draws after 100 tuning steps, 1 seed unless ``--seeds``) only checks that the
script runs; it writes to a temporary folder unless ``--out`` is given, so it
does not replace the study's results.

Every fit runs in a fresh Python subprocess (this file with ``--worker``), so a
crash or timeout of one is recorded and the others go on; each fit's output is
in ``results/logs/recovery_<model>_seed<k>.log``. Results:
``benchmarks/results/recovery.json`` and ``recovery.md``, re-written after every
fit (a stopped run keeps what it finished; ``complete`` says whether it ended).
Exit status: 0 when the criterion is met, 1 when a fit failed to run, 2 when
all ran but the criterion is not met.
"""

from __future__ import annotations

import argparse
import hashlib
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_fit import RESULTS, ROOT, _environment, _f, _json_default, _source_hash, write_results  # noqa: E402

MARKER = "RECOVERY_RESULT_JSON:"
GENERATOR = ROOT / "models" / "data" / "make_user_models.py"
MODELS = ("mm_1cmt_oral", "mm_2cmt_iv", "transit_oral", "irm_oral")
STREAM_STEP = 100  # seed k uses stream STREAM[model] + STREAM_STEP * (k - 1)
COVERAGE_MIN = 0.80  # issue 13: 90% intervals cover >= 80% of the population parameters
LEVEL = 0.90  # q5..q95
SMOKE = {"chains": 2, "draws": 100, "tune": 100}


def generator():
    """``models/data/make_user_models.py`` as a module (it is not part of a package)."""
    spec = importlib.util.spec_from_file_location("make_user_models", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stream_of(gen, model: str, seed: int) -> int:
    """The generator's random stream of data set ``seed`` (1, 2, ...) of ``model``; seed 1 is the bundled one."""
    return gen.STREAM[model] + STREAM_STEP * (seed - 1)


def truth_of(gen, model: str, parameter: str) -> float | None:
    """The simulated value of a population parameter, or None when the generator has none."""
    truth, omega = gen.TRUTH[model], gen.OMEGA[model]
    if parameter in truth:
        return float(truth[parameter])
    if parameter.startswith("omega_") and parameter[len("omega_"):] in truth:
        return float(omega.get(parameter[len("omega_"):], 0.0))  # "parameters not listed have none"
    residual = {"sigma_prop": gen.SIGMA_PROP}
    if model == "irm_oral":
        residual["pd_sigma_add"] = gen.SIGMA_PD
    return float(residual[parameter]) if parameter in residual else None


# ====================================================================== worker (one fit)
def run_fit(model: str, seed: int, chains: int | None, draws: int | None, tune: int | None) -> dict:
    """Simulate data set ``seed`` of ``model``, fit the spec to it and return the record (in the subprocess)."""
    t_import = time.perf_counter()
    import bayespk as bpk
    from bayespk.errors import ConvergenceWarning

    import_s = time.perf_counter() - t_import
    gen = generator()
    stream = stream_of(gen, model, seed)
    spec_path = ROOT / "models" / f"{model}.toml"
    bundled = ROOT / "models" / "data" / f"{model}.csv"
    t0 = time.perf_counter()
    text = gen.simulate(model, stream)
    simulate_s = time.perf_counter() - t0
    out: dict = {
        "model": model, "seed": seed, "stream": stream,
        "spec_sha256": hashlib.sha256(spec_path.read_bytes()).hexdigest(),
        "data_sha256": hashlib.sha256(text.encode()).hexdigest(),
        "bundled_data": stream == gen.STREAM[model],
        "import_s": round(import_s, 3), "simulate_s": round(simulate_s, 3),
    }  # fmt: skip
    if out["bundled_data"]:  # the generator's default stream must reproduce the bundled file
        out["same_as_bundled_csv"] = bundled.is_file() and bundled.read_bytes() == text.encode()
    with tempfile.TemporaryDirectory(prefix="bayespk-recovery-") as tmp:
        csv = Path(tmp) / f"{model}_stream{stream}.csv"
        csv.write_text(text, newline="\n")
        pop_model = bpk.PopulationModel(spec_path, data=csv)
        spec = pop_model.spec
        n_pd = int(pop_model.pd_design.n_obs) if pop_model.has_pd else 0
        out.update({"subjects": int(pop_model.design.n_subjects),
                    "observations": int(pop_model.design.n_obs) + n_pd, "observations_pd": n_pd})
        t1 = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            fit = bpk.fit(pop_model, progress=False, seed=spec.sampler.seed, draws=draws, tune=tune, chains=chains)
        fit_call_s = time.perf_counter() - t1
        diag = fit.diagnostics()
        summary = fit.summary().set_index("parameter")
    s = fit.spec.sampler
    out["settings"] = {"chains": s.chains, "draws": s.draws, "tune": s.tune, "seed": s.seed,
                       "target_accept": s.target_accept, "adaptation": s.adaptation, "backend": s.backend}
    params = []
    for p in spec.population_parameters:
        row = summary.loc[p] if p in summary.index else None
        truth = truth_of(gen, model, p)
        rec = {"parameter": p, "truth": truth}
        if row is not None:
            rec.update({"q5": float(row["q5"]), "median": float(row["median"]), "q95": float(row["q95"]),
                        "r_hat": float(row["r_hat"]), "ess_bulk": float(row["ess_bulk"])})
        rec["covered"] = (None if truth is None or row is None
                          else bool(rec["q5"] <= truth <= rec["q95"]))
        params.append(rec)
    judged = [r for r in params if r["covered"] is not None]
    out.update({
        "parameters": params,
        "covered": sum(r["covered"] for r in judged),
        "judged": len(judged),
        "divergences": int(diag["divergences"]),
        "max_r_hat": float(diag["max_r_hat"]),
        "max_r_hat_parameter": diag["max_r_hat_parameter"],
        "min_ess_bulk": float(diag["min_ess_bulk"]),
        "min_ess_bulk_parameter": diag["min_ess_bulk_parameter"],
        "min_ess_tail": float(diag["min_ess_tail"]),
        "min_bfmi": float(diag["min_bfmi"]),
        "wall_s": float(diag["wall_seconds"]),  # bayespk's: compile + sampling
        "compile_s": float(diag["compile_seconds"]),
        "fit_call_s": round(fit_call_s, 3),  # fit() end to end: build, compile, sample, log-likelihood, checks
        "convergence_problems": list(diag["problems"]),
        "convergence_warnings": len([w for w in caught if issubclass(w.category, ConvergenceWarning)]),
    })  # fmt: skip
    return out


def _worker(args) -> int:
    try:
        res = run_fit(args.worker, args.seed_index, args.chains, args.draws, args.tune)
    except Exception as e:  # recorded by the driver as a failed fit
        traceback.print_exc()
        res = {"model": args.worker, "seed": args.seed_index, "error": f"{type(e).__name__}: {e}"}
    sys.stdout.flush()
    print(MARKER + json.dumps(res, default=_json_default), flush=True)
    return 0


# ====================================================================== driver
def _run_subprocess(model: str, seed: int, stream: int, settings: dict, timeout: float, log_dir: Path) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--worker", model, "--seed-index", str(seed)]
    for k in ("chains", "draws", "tune"):
        if settings[k] is not None:
            cmd += [f"--{k}", str(settings[k])]
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, check=False, cwd=ROOT, capture_output=True, text=True, timeout=timeout)
        rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
        rc = None
        stdout = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        stderr = ((e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or ""))
                  + f"\nTIMEOUT after {timeout}s")
    process_s = time.perf_counter() - t0
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / f"recovery_{model}_seed{seed}.log").write_text(
        f"$ {shlex.join(cmd)}\n--- stdout\n{stdout}\n--- stderr\n{stderr}")
    res = None
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            res = json.loads(line[len(MARKER):])
    if res is None:
        res = {"model": model, "seed": seed,
               "error": "timeout" if rc is None else f"worker exit code {rc}"}
    res["stream"] = stream
    if "error" in res:
        res["stderr_tail"] = stderr[-3000:]
    res["process_s"] = round(process_s, 2)  # whole subprocess: interpreter start, imports, simulation, fit
    res["loadavg_before"] = [round(x, 2) for x in load_before]
    res["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    return res


def evaluate(report: dict) -> dict:
    """Per-model verdicts ``{model: {...}}`` and ``overall`` from the fits in ``report``."""
    verdicts = {}
    n_seeds = report["seeds"]
    for model in report["models"]:
        fits = [r for r in report["results"] if r["model"] == model]
        done = [r for r in fits if "error" not in r]
        covered = sum(r["covered"] for r in done)
        judged = sum(r["judged"] for r in done)
        coverage = covered / judged if judged else None
        divergences = sum(r["divergences"] for r in done)
        missed = sorted({(p["parameter"]) for r in done for p in r["parameters"] if p["covered"] is False})
        reasons = []
        if len(fits) > len(done):
            reasons.append(f"{len(fits) - len(done)} of {n_seeds} fits failed")
        if len(fits) < n_seeds:
            reasons.append(f"{n_seeds - len(fits)} of {n_seeds} fits not run (yet)")
        if coverage is None or coverage < COVERAGE_MIN - 1e-12:
            reasons.append("coverage " + ("n/a" if coverage is None else f"{coverage:.0%}") + f" < {COVERAGE_MIN:.0%}")
        if divergences:
            reasons.append(f"{divergences} divergences")
        verdicts[model] = {
            "fits": len(fits), "fits_ok": len(done), "covered": covered, "judged": judged, "coverage": coverage,
            "divergences": divergences, "missed_parameters": missed,
            "max_r_hat": max((r["max_r_hat"] for r in done), default=None),
            "min_ess_bulk": min((r["min_ess_bulk"] for r in done), default=None),
            "mean_wall_s": sum(r["wall_s"] for r in done) / len(done) if done else None,
            "pass": not reasons, "reasons": reasons,
        }  # fmt: skip
    return {"models": verdicts, "pass": bool(verdicts) and all(v["pass"] for v in verdicts.values())}


def _settings_text(report: dict) -> str:
    s = report["settings"]
    if all(s[k] is None for k in ("chains", "draws", "tune")):
        return "each spec's `[sampler]` settings (the defaults)"
    parts = [f"{s[k]} {k}" if s[k] is not None else f"{k} from the spec" for k in ("chains", "draws", "tune")]
    return ", ".join(parts) + " (other sampler options from each spec)"


def _interval(p: dict) -> str:
    if "median" not in p:
        return "n/a"
    cell = f"{p['median']:.3g} [{p['q5']:.3g}, {p['q95']:.3g}]"
    return f"**{cell}**" if p["covered"] is False else cell


def markdown(report: dict) -> str:
    env, ev, n_seeds = report["environment"], report["evaluation"], report["seeds"]
    defaults = all(report["settings"][k] is None for k in ("chains", "draws", "tune"))
    title = "# bayespk parameter recovery (issue 13)"
    if report["smoke"]:
        title += ": SMOKE RUN (a check of the script, not the study)"
    elif not report.get("complete", True):
        title += ": INCOMPLETE (the run stopped or is still running)"
    verdict = "PASS" if ev["pass"] else "FAIL"
    n_pass = sum(v["pass"] for v in ev["models"].values())
    lines = [
        title, "",
        (f"Criterion: each model's {LEVEL:.0%} posterior intervals (q5..q95) cover >= {COVERAGE_MIN:.0%} of its "
         f"population parameters over {n_seeds} seed{'s' if n_seeds > 1 else ''} (pooled over the "
         "(parameter, seed) pairs), no divergences, every fit completed."
         + ("" if defaults else " **The sampler settings are not the specs' defaults**, so the divergence part "
            "of the criterion (stated at the default settings) is not tested here.")),
        "",
        f"**Overall: {verdict}** ({n_pass} of {len(ev['models'])} models pass).",
        "",
        f"- date: {env['date']}",
        f"- command: `{env['command']}`",
        f"- settings: {_settings_text(report)}; every data set fitted with the spec's sampler seed",
        (f"- data: `models/data/make_user_models.py`, `simulate(model, stream)`; seed k = stream "
         f"`STREAM[model] + {STREAM_STEP} * (k - 1)` (seed 1: the bundled data set)"),
        (f"- python {env['python']} on {env['platform']}; CPUs: {env['cpu_count']} (affinity "
         f"{env['cpu_affinity']}), {env['cpu_model']}; memory {env['memory_gib']} GiB"),
        "- versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v),
        f"- git: {env['git_commit']}"
        + (f" with uncommitted changes in {', '.join(c.split()[-1] for c in env['git_uncommitted_library_changes'])}"
           if env["git_uncommitted_library_changes"] else ""),
    ]
    if env.get("source_changed_during_run"):
        lines.append("- **warning: bayespk/ or models/ changed while the benchmark ran; fits may have run "
                     "different code or specs** (each fit records its spec's sha256)")
    lines += [
        "", "## Per model", "",
        ("| model | fits ok | settings (chains x draws, tune) | coverage (90%) | divergences | max R-hat "
         "| min ESS bulk | mean wall s per fit | result |"),
        "|---|--:|---|--:|--:|--:|--:|--:|---|",
    ]
    for model, v in ev["models"].items():
        ok = [r for r in report["results"] if r["model"] == model and "error" not in r]
        sets = sorted({f"{r['settings']['chains']} x {r['settings']['draws']}, {r['settings']['tune']}" for r in ok})
        cov = "n/a" if v["coverage"] is None else f"{v['covered']}/{v['judged']} ({v['coverage']:.0%})"
        res = "pass" if v["pass"] else "**FAIL**: " + "; ".join(v["reasons"])
        lines.append(f"| {model} | {v['fits_ok']}/{n_seeds} | {'; '.join(sets) or 'n/a'} | {cov} | {v['divergences']} "
                     f"| {_f(v['max_r_hat'], 3)} | {_f(v['min_ess_bulk'], 0)} | {_f(v['mean_wall_s'])} | {res} |")
    lines += [
        "", "## Fits", "",
        ("| model | seed | stream | subjects | observations | covered | divergences | max R-hat (at) "
         "| min ESS bulk (at) | min E-BFMI | compile s | wall s | process s |"),
        "|---|--:|--:|--:|--:|--:|--:|---|---|--:|--:|--:|--:|",
    ]
    for r in report["results"]:
        if "error" in r:
            lines.append(f"| {r['model']} | {r['seed']} | {r['stream']} | FAILED: {r['error'][:200]} |"
                         + " |" * 8 + f" {_f(r.get('process_s'))} |")
            continue
        obs = f"{r['observations']}" + (f" ({r['observations'] - r['observations_pd']} PK + "
                                        f"{r['observations_pd']} PD)" if r["observations_pd"] else "")
        lines.append(
            f"| {r['model']} | {r['seed']} | {r['stream']} | {r['subjects']} | {obs} | {r['covered']}/{r['judged']} "
            f"| {r['divergences']} | {r['max_r_hat']:.3f} ({r['max_r_hat_parameter']}) "
            f"| {r['min_ess_bulk']:.0f} ({r['min_ess_bulk_parameter']}) | {_f(r['min_bfmi'], 2)} "
            f"| {_f(r['compile_s'])} | {_f(r['wall_s'])} | {_f(r['process_s'])} |")
    lines += ["", "Wall s: bayespk's `wall_seconds` (compile + sampling); process s: the whole fit subprocess "
              "(interpreter start, imports, simulation, fit, summaries). The ESS and R-hat are over all free "
              "variables, etas included."]
    for model in report["models"]:
        fits = {r["seed"]: r for r in report["results"] if r["model"] == model and "error" not in r}
        if not fits:
            continue
        seeds = sorted(fits)
        lines += ["", f"## {model}: truth vs posterior median [q5, q95]", "",
                  "| parameter | truth | " + " | ".join(f"seed {k}" for k in seeds) + " | covered |",
                  "|---|--:|" + "---|" * len(seeds) + "--:|"]
        names = list(dict.fromkeys(p["parameter"] for k in seeds for p in fits[k]["parameters"]))
        for name in names:
            cells, hits, n, truth = [], 0, 0, None
            for k in seeds:
                p = next((q for q in fits[k]["parameters"] if q["parameter"] == name), None)
                cells.append("n/a" if p is None else _interval(p))
                if p is not None:
                    truth = p["truth"] if p["truth"] is not None else truth
                    if p["covered"] is not None:
                        hits, n = hits + p["covered"], n + 1
            lines.append(f"| {name} | {'no value' if truth is None else f'{truth:g}'} | " + " | ".join(cells)
                         + f" | {f'{hits}/{n}' if n else 'n/a'} |")
        lines.append("")
        lines.append("Bold: the interval misses the truth. Each fit's spec sha256: "
                     + ", ".join(f"seed {k} `{fits[k]['spec_sha256'][:12]}`" for k in seeds) + ".")
        bad = [k for k in seeds if fits[k].get("same_as_bundled_csv") is False]
        if bad:
            lines.append(f"**Warning: the generator's seed-1 data set differs from the bundled "
                         f"`models/data/{model}.csv`.**")
    problems = [(r["model"], r["seed"], p) for r in report["results"] if "error" not in r
                for p in r["convergence_problems"]]
    if problems:
        lines += ["", "## Convergence problems reported by bayespk", ""]
        lines += [f"- {m} seed {k}: {p}" for m, k, p in problems]
    for r in report["results"]:
        if "error" in r:
            lines += ["", f"{r['model']} seed {r['seed']} failed ({r['error'][:300]}); stderr tail:", "", "```",
                      r.get("stderr_tail", "")[-1500:], "```"]
    return "\n".join(lines) + "\n"


def _write(out: Path, report: dict, final: bool) -> None:
    report["evaluation"] = evaluate(report)
    md = markdown(report)
    if final:
        write_results(out, "recovery", report, md)
    else:  # after each fit, quietly
        out.mkdir(parents=True, exist_ok=True)
        (out / "recovery.json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
        (out / "recovery.md").write_text(md)


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS), help="models to fit (default: all)")
    ap.add_argument("--seeds", type=int, help="data sets per model, seeds 1..N (default 3; --smoke: 1)")
    ap.add_argument("--chains", type=int, help="default: the spec's")
    ap.add_argument("--draws", type=int, help="default: the spec's")
    ap.add_argument("--tune", type=int, help="default: the spec's")
    ap.add_argument("--smoke", action="store_true",
                    help=f"check the script: {SMOKE['chains']} chains x {SMOKE['draws']} draws, {SMOKE['tune']} tune "
                         "(unless given), 1 seed, results to a temporary folder unless --out")
    ap.add_argument("--timeout", type=float, default=7200, help="seconds per fit (default 7200)")
    ap.add_argument("--out", type=Path, help="results folder (default benchmarks/results)")
    ap.add_argument("--report-only", action="store_true",
                    help="re-write recovery.md from an existing recovery.json in --out (no fitting)")
    ap.add_argument("--worker", choices=MODELS, help=argparse.SUPPRESS)  # internal: one fit
    ap.add_argument("--seed-index", type=int, help=argparse.SUPPRESS)
    args = ap.parse_args(argv)

    if args.worker:
        return _worker(args)
    out = args.out or (Path(tempfile.gettempdir()) / "bayespk-recovery-smoke" if args.smoke else RESULTS)
    if args.report_only:
        report = json.loads((out / "recovery.json").read_text())
        _write(out, report, final=True)
        return 0
    seeds = args.seeds if args.seeds is not None else (1 if args.smoke else 3)
    if seeds < 1:
        ap.error("--seeds must be >= 1")
    settings = {k: getattr(args, k) if getattr(args, k) is not None else (SMOKE[k] if args.smoke else None)
                for k in ("chains", "draws", "tune")}
    env = _environment(argv)
    env["command"] = shlex.join([os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT))
                                 else sys.executable, os.path.relpath(__file__, ROOT), *argv])
    gen = generator()
    report = {"smoke": args.smoke, "complete": False, "models": args.models, "seeds": seeds,
              "streams": {m: [stream_of(gen, m, k) for k in range(1, seeds + 1)] for m in args.models},
              "settings": settings, "coverage_min": COVERAGE_MIN, "level": LEVEL, "environment": env,
              "results": []}  # fmt: skip
    print(f"bayespk recovery: {', '.join(args.models)} x {seeds} seed(s); {_settings_text(report)}; "
          f"results in {out}", flush=True)
    source_before = _source_hash()
    for seed in range(1, seeds + 1):  # every model's seed 1 first: a stopped run still covers all models
        for model in args.models:
            stream = stream_of(gen, model, seed)
            print(f"  {model} seed {seed} (stream {stream}) ...", end=" ", flush=True)
            r = _run_subprocess(model, seed, stream, settings, args.timeout, out / "logs")
            report["results"].append(r)
            print(f"FAILED: {r['error'][:200]} (see {out / 'logs'})" if "error" in r else
                  f"{r['covered']}/{r['judged']} covered, {r['divergences']} divergences, max R-hat "
                  f"{r['max_r_hat']:.3f}, {r['wall_s']:.0f} s fit wall ({r['process_s']:.0f} s process)", flush=True)
            _write(out, report, final=False)
    env["source_hash"] = source_before
    env["source_changed_during_run"] = _source_hash() != source_before
    report["complete"] = True
    _write(out, report, final=True)
    if any("error" in r for r in report["results"]):
        return 1
    return 0 if report["evaluation"]["pass"] else 2


if __name__ == "__main__":
    sys.exit(main())
