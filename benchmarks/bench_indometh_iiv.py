"""Indomethacin (fm1Indom, issue #13): which random effects move the typical values away from nlme's.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_indometh_iiv.py            # 5 variants, the spec's sampler (4 x 1000)

The bundled ``models/indomethacin_biexp_nlme.toml`` (the published bi-exponential
model written as an algebraic user model, additive error) is fitted with its
IIV changed and nothing else: all four parameters with log-normal IIV (as
bundled: the published random-effects structure, log-normal where nlme's
random effects on A1 and A2 are additive normal), all but beta (nlme's lrc2 SD
is about 0), tighter omega priors, IIV on A1 and alpha only, and none (pooled).
Each row gives the posterior medians of the typical values and their
difference from fm1Indom.nlme (Pinheiro & Bates 2000, section 6.2: A1 2.828,
alpha exp(0.773), A2 0.461, beta exp(-1.344)); the issue asks for all four
within 15% with the published model.

Results: ``benchmarks/results/indometh_iiv.md`` and ``indometh_iiv.json``.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
import tomllib
import warnings
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parent.parent
SPEC = ROOT / "models" / "indomethacin_biexp_nlme.toml"
RESULTS = ROOT / "benchmarks" / "results"
NLME = {"A1": 2.828, "alpha": float(np.exp(0.773)), "A2": 0.461, "beta": float(np.exp(-1.344))}
PARAMS = ("A1", "alpha", "A2", "beta")


def _iiv(off=(), prior=None):
    def change(d):
        for p in PARAMS:
            if p in off:
                d["parameters"][p]["iiv"] = False
            elif prior is not None:
                d["parameters"][p]["iiv"] = prior
    return change


VARIANTS = {
    "all four, as bundled (published structure, log-normal)": _iiv(),
    "all but beta (nlme's lrc2 SD ~ 0)": _iiv(off=("beta",)),
    "all four, HalfNormal(0.25) omega priors": _iiv(prior={"dist": "HalfNormal", "sigma": 0.25}),
    "A1 and alpha only": _iiv(off=("A2", "beta")),
    "none (pooled)": _iiv(off=PARAMS),
}


def run_variant(base: dict, change) -> dict:
    import bayespk as bpk

    d = copy.deepcopy(base)
    change(d)
    t0 = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = bpk.fit(bpk.PopulationModel(d), progress=False)
    post = fit.posterior
    diag = fit.diagnostics()
    return {"median": {p: float(post[p].median()) for p in PARAMS},
            "omega": {p: float(post[f"omega_{p}"].median()) for p in PARAMS if f"omega_{p}" in post},
            "divergences": int(diag["divergences"]), "max_r_hat": float(diag["max_r_hat"]),
            "wall_s": round(time.perf_counter() - t0, 1)}


def main(argv: list[str]) -> int:
    argparse.ArgumentParser(description=__doc__.splitlines()[0]).parse_args(argv)
    base = tomllib.loads(SPEC.read_text())
    base["data"]["path"] = str((SPEC.parent / base["data"]["path"]).resolve())
    rows = {}
    for name, change in VARIANTS.items():
        rows[name] = run_variant(base, change)
        print(name, rows[name], flush=True)
    lines = ["# Indomethacin fm1Indom: typical values by IIV structure",
             "", "`.venv/bin/python benchmarks/bench_indometh_iiv.py` (posterior medians; difference from "
             "fm1Indom.nlme in brackets)", "",
             "| IIV | A1 | alpha | A2 | beta | omega_A2 | divergences | max R-hat |",
             "|---|---|---|---|---|---|---|---|"]
    for name, r in rows.items():
        cells = [f"{r['median'][p]:.3f} ({100 * (r['median'][p] / NLME[p] - 1):+.0f}%)" for p in PARAMS]
        omega = f"{r['omega']['A2']:.2f}" if "A2" in r["omega"] else "-"
        lines.append(f"| {name} | " + " | ".join(cells)
                     + f" | {omega} | {r['divergences']} | {r['max_r_hat']:.3f} |")
    lines.append(f"| fm1Indom.nlme | {NLME['A1']:.3f} | {NLME['alpha']:.3f} | {NLME['A2']:.3f} | "
                 f"{NLME['beta']:.3f} | 0.111 mg/L (additive) | | |")
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "indometh_iiv.md").write_text("\n".join(lines) + "\n")
    (RESULTS / "indometh_iiv.json").write_text(json.dumps({"nlme": NLME, "variants": rows}, indent=1) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
