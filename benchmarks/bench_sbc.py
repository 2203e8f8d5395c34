"""Simulation-based calibration on every model family, and a mis-specified fit that fails it (issue #15).

    .venv/bin/python benchmarks/bench_sbc.py --workers 1                    # every family, then the BLQ pair
    .venv/bin/python benchmarks/bench_sbc.py --family pkpd_direct_emax      # one family (results are merged)
    .venv/bin/python benchmarks/bench_sbc.py --family blq_m3 blq_m1 --n 40  # the BLQ pair only

The families and their designs are those of tests/evaluate/test_sbc_families.py (proper, moderately informative
priors; small designs): a closed-form one-compartment oral popPK model (12 subjects x 7 samples), the
user-written Michaelis-Menten ODE model of models/mm_1cmt_oral.toml (6 subjects, 2 per dose level), CAR-T
piecewise kinetics (Stein 2019; qPCR samples of 15 patients, M3 censoring below 35 copies/ug) and a
direct-effect Emax PK/PD model (12 subjects, PK and PD at 6 times). The BLQ pair simulates a
one-compartment IV study with an LLOQ that censors about 40% of the samples (M3) and fits it twice: with
the M3 likelihood (calibrated) and with the BLQ rows discarded (``[error] blq = "drop"``, M1), which must
fail.

For every population parameter: the chi-square test of the ranks over 10 bins (passes at p > 0.01) and
whether the ECDF of the fractional ranks leaves the simultaneous 95% band (Säilynoja et al. 2022).
Replicates run on the Dask runner; their results are kept in ``--work`` (default a folder in the
temporary directory), so an interrupted run resumes where it stopped, and ``--collect`` reports what it
finished (its "wall" is then the sum of the fits' seconds).

Results: benchmarks/results/sbc.md and .json (merged over runs), ECDF figures under
benchmarks/results/sbc/<family>.png.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
FIGURES = RESULTS / "sbc"
sys.path.insert(0, str(ROOT / "tests"))

# replicates and sampler settings per family: 100 replicates where a fit takes seconds, 50 for CAR-T (the
# verdict is weaker: a chi-square over 10 bins with 5 expected per bin); the ODE fits take 1-4 min each on
# one core, so one chain of 200 draws ranked among 20 (a run stopped early is reported with --collect)
RUNS = {
    "closed_form_1cmt_oral": {"n": 100, "chains": 2, "draws": 400, "tune": 400, "thin_to": 49},
    "pkpd_direct_emax": {"n": 100, "chains": 2, "draws": 400, "tune": 400, "thin_to": 49},
    "ode_michaelis_menten": {"n": 50, "chains": 1, "draws": 200, "tune": 200, "thin_to": 19},
    "cart_piecewise": {"n": 50, "chains": 2, "draws": 400, "tune": 500, "thin_to": 49},
    "blq_m3": {"n": 40, "chains": 2, "draws": 400, "tune": 400, "thin_to": 49},
    "blq_m1": {"n": 40, "chains": 2, "draws": 400, "tune": 400, "thin_to": 49},
}

def _inputs(family: str):
    """``(simulating spec, design, fitting spec or None)``."""
    import test_sbc_families as f

    if family == "blq_m3":
        return f.BLQ_M3, f.blq_design(), None
    if family == "blq_m1":
        return f.BLQ_M3, f.blq_design(), f.BLQ_M1
    spec, design = f.FAMILIES[family]
    return spec, design(), None


def run_family(family: str, work: Path, workers: int, n: int | None = None, seed: int = 2026,
               collect: bool = False) -> dict:
    """SBC of one family (or, ``collect``, the replicates an interrupted run of it finished)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from bayespk.evaluate.sbc import load_sbc, sbc

    settings = dict(RUNS[family])
    if n is not None:
        settings["n"] = n
    spec, design, fit_spec = _inputs(family)
    load = os.getloadavg()
    t0 = time.perf_counter()
    inputs = json.dumps([spec, fit_spec], sort_keys=True) + design.to_csv(index=False)
    key = hashlib.sha256(inputs.encode()).hexdigest()[:8]  # another spec or design: another folder
    folder = work / f"{family}-n{settings['n']}-{settings['chains']}x{settings['draws']}-seed{seed}-{key}"
    if collect:  # what an interrupted run finished (the runner wrote each replicate as it arrived)
        r = load_sbc(folder)
        records = [json.loads(p.read_text(encoding="utf-8")) for p in (folder / "tasks").glob("*.json")]
        wall = sum(rec.get("seconds", 0.0) for rec in records)
    else:
        r = sbc(spec, design, out=folder, seed=seed, fit_spec=fit_spec, workers=workers, progress=False,
                **settings)
        wall = time.perf_counter() - t0
    tests = r.tests()
    FIGURES.mkdir(parents=True, exist_ok=True)
    figure = FIGURES / (f"{family}.png" if seed == 2026 else f"{family}_seed{seed}.png")
    fig = r.plot()
    fig.suptitle(f"{family}: {len(r.ranks)} replicates, ranks among {r.L} draws")
    fig.savefig(figure, dpi=100)
    plt.close(fig)
    return {
        "family": family, "settings": settings, "seed": seed, "replicates_done": len(r.ranks),
        "partial": bool(len(r.ranks) + len(r.failed) < settings["n"]),
        "replicates_failed": len(r.failed), "wall_s": round(wall, 1), "workers": workers,
        "load_before": [round(x, 2) for x in load],
        "divergent_fits": int((r.fits.divergences > 0).sum()) if "divergences" in r.fits else None,
        "median_min_ess_bulk": float(r.fits.min_ess_bulk.median()) if "min_ess_bulk" in r.fits else None,
        "all_pass": bool(tests.passes.all()), "all_chi2_p_above_0.01": bool((tests.chi2_p > 0.01).all()),
        "notes": r.notes(), "figure": str(figure.relative_to(ROOT)),
        "parameters": [{k: (round(v, 4) if isinstance(v, float) else v) for k, v in row.items()}
                       for row in tests.to_dict("records")],
    }


def _markdown(results: dict) -> str:
    lines = ["# Simulation-based calibration by model family", "",
             "Produced by `benchmarks/bench_sbc.py` (families and designs: `tests/evaluate/test_sbc_families.py`). "
             "A parameter passes when the chi-square test of its ranks over 10 bins gives p > 0.01 and the ECDF "
             "of its fractional ranks stays inside the simultaneous 95% band.", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores (shared); Python {platform.python_version()}.",
             ""]
    lines += ["| family | replicates (failed) | chains x draws | wall (s, workers) | divergent fits | "
              "parameters passing | verdict |", "|---|---|---|---|---|---|---|"]
    for fam, r in results.items():
        s = r["settings"]
        npass = sum(p["passes"] for p in r["parameters"])
        verdict = "calibrated" if r["all_pass"] else "FAILS"
        partial = f" of {s['n']} (interrupted)" if r.get("partial") else ""
        lines.append(f"| {fam} | {r['replicates_done']}{partial} ({r['replicates_failed']}) "
                     f"| {s['chains']} x {s['draws']} | {r['wall_s']} ({r['workers']}) | {r['divergent_fits']} "
                     f"| {npass} / {len(r['parameters'])} | {verdict} |")
    for fam, r in results.items():
        lines += ["", f"## {fam}", "", f"![{fam}]({Path(r['figure']).relative_to('benchmarks/results')})", "",
                  "| parameter | mean rank fraction | chi-square p | ECDF outside band | passes |",
                  "|---|---|---|---|---|"]
        for p in r["parameters"]:
            lines.append(f"| {p['parameter']} | {p['mean_rank_fraction']:.3f} | {p['chi2_p']:.4f} | "
                         f"{'yes' if p['ecdf_outside_band'] else 'no'} | {'yes' if p['passes'] else 'NO'} |")
        if r["notes"]:
            lines += [""] + [f"- {n}" for n in r["notes"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--family", nargs="+", choices=list(RUNS), default=list(RUNS))
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--n", type=int, default=None, help="replicates (default: per family, see RUNS)")
    ap.add_argument("--work", type=Path, default=Path(tempfile.gettempdir()) / "bayespk_bench_sbc")
    ap.add_argument("--seed", type=int, default=2026, help="another seed is reported beside the default one")
    ap.add_argument("--collect", action="store_true",
                    help="report the replicates an interrupted run finished, without fitting more")
    args = ap.parse_args(argv)
    path = RESULTS / "sbc.json"
    results = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else {}
    for family in args.family:
        print(f"{family}: started {time.strftime('%H:%M:%S')}", flush=True)
        key = family if args.seed == 2026 else f"{family} (seed {args.seed})"
        results[key] = run_family(family, args.work, args.workers, args.n, seed=args.seed, collect=args.collect)
        r = results[key]
        print(f"{family}: {r['replicates_done']} replicates in {r['wall_s']} s, all pass: {r['all_pass']}",
              flush=True)
        ordered = dict(sorted(results.items(), key=lambda kv: (list(RUNS).index(kv[1]["family"]), kv[0])))
        path.write_text(json.dumps(ordered, indent=1), encoding="utf-8")
        (RESULTS / "sbc.md").write_text(_markdown(ordered), encoding="utf-8")


if __name__ == "__main__":
    main()
