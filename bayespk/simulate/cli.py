"""``bayespk simulate RUN_DIR --regimen SPEC ... --out DIR``: regimen simulation from the command line."""

from __future__ import annotations

import json
import re
from pathlib import Path

from bayespk.errors import SpecError

__all__ = ["add_parser", "parse_covariate", "run"]

REGIMEN_HELP = (
    "a regimen: the short form DOSEqIIxN (400q12x14) and/or KEY=VALUE items joined by commas; keys: label, "
    "dose, ii, n, loading (800 or 800+600), loading_ii, tinf (infusion hours), route (depot|central), per "
    "(a covariate: dose per unit of it), titration (100q24x7>200q24x7). Repeatable (default: none; at least "
    "one --regimen or --regimens)."
)


def add_parser(sub) -> None:
    s = sub.add_parser("simulate", help="simulate dosing regimens from a run: exposure, target attainment, overlap",
                       description="Simulate dosing regimens from a fitted run (parameter uncertainty from the "
                                   "posterior) and write exposure.csv, attainment.csv, overlap.csv, regimens.png "
                                   "and simulation.json to --out.")
    s.add_argument("run_dir", help="run directory written by `bayespk fit SPEC --out RUN_DIR`")
    s.add_argument("--regimen", action="append", default=[], metavar="SPEC", help=REGIMEN_HELP)
    s.add_argument("--regimens", metavar="FILE.toml",
                   help="regimens as [[regimen]] tables (titration = [{dose, ii, n, start}, ...]) and an "
                        "optional [covariates] table for the virtual population")
    s.add_argument("--population", choices=["fitted", "virtual"],
                   help="fitted subjects (default), or a virtual population (default with --n-subjects)")
    s.add_argument("--n-subjects", type=int, help="virtual population size (default 1000)")
    s.add_argument("--covariate", action="append", default=[], metavar="COL=SPEC",
                   help="virtual covariate: a value (WT=3.5) or a distribution: normal(mean,sd[,lower,upper]), "
                        "lognormal(median,cv[,lower,upper]), uniform(low,high), bernoulli(p), "
                        "categorical(level:p,...), resample. Other columns are resampled from the fitted "
                        "subjects. Repeatable (default: none).")
    s.add_argument("--etas", choices=["new", "posterior"], default="new",
                   help="new etas, or for the fitted subjects their posterior etas (default %(default)s)")
    s.add_argument("--target", action="append", default=[], metavar="COND",
                   help="target condition, e.g. 'Cmin>=10', 'AUC in [300,600]', 'f_above>=0.5', in the "
                        "model's concentration and time units. Repeatable (default: none).")
    s.add_argument("--threshold", type=float,
                   help="concentration for time above threshold (T_above, f_above), in the model's concentration "
                        "units (default: none)")
    s.add_argument("--interval", metavar="START,END",
                   help="interval of the metrics, absolute times (default: each regimen's last dosing interval)")
    s.add_argument("--strat", metavar="COL",
                   help="stratify attainment and exposure tables by a covariate (default: not stratified)")
    s.add_argument("--bins", default="4", help="bins of a continuous --strat column: a number (equal-count) "
                                                "or comma-separated edges (default %(default)s)")
    s.add_argument("--overlap-metrics", default="AUC,Cmax,Cmin", metavar="M1,M2",
                   help="metrics compared between neighbouring regimens (default %(default)s)")
    s.add_argument("--n-draws", type=int, default=200, help="posterior draws (replicates; default %(default)s)")
    s.add_argument("--resolution", type=int, default=120,
                   help="grid steps per analysed interval (default %(default)s)")
    s.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    s.add_argument("--log-y", action="store_true", help="log concentration axis")
    s.add_argument("--quiet", action="store_true",
                   help="no progress (a line per chunk at most every $BAYESPK_PROGRESS_SECONDS, default 10, when "
                        "the output is not a terminal)")
    s.add_argument("--out", required=True, help="folder for the outputs")


def parse_covariate(text: str) -> tuple[str, object]:
    """``COL=SPEC`` from the command line as ``(column, specification)`` for ``virtual_subjects``."""
    if "=" not in text:
        raise SpecError(f"--covariate {text!r}: expected COL=SPEC, e.g. WT=lognormal(70,0.25)")
    col, spec = (s.strip() for s in text.split("=", 1))
    if not col:
        raise SpecError(f"--covariate {text!r}: no column name before '='")
    m = re.fullmatch(r"([A-Za-z_]+)\s*(?:\((.*)\))?", spec)
    if m and m[1].lower() in ("normal", "lognormal", "uniform", "bernoulli", "categorical", "resample"):
        name, args = m[1].lower(), (m[2] or "").strip()
        if name == "categorical":
            probs = {}
            for item in filter(None, (a.strip() for a in args.split(","))):
                if ":" not in item:
                    raise SpecError(f"--covariate {text!r}: categorical levels are LEVEL:P, "
                                    "e.g. categorical(0:0.8,1:0.2)")
                level, p = (s.strip() for s in item.split(":", 1))
                probs[level] = _float(p, text)
            return col, ("categorical", probs)
        values = [None if a.strip().lower() in ("", "none") else _float(a, text) for a in args.split(",")] \
            if args else []
        return col, (name, *values)
    try:
        return col, float(spec)
    except ValueError:
        if m and spec[:1].isalpha() and "(" in spec:
            raise SpecError(f"--covariate {text!r}: unknown distribution {m[1]!r}; expected normal, lognormal, "
                            "uniform, bernoulli, categorical or resample") from None
        return col, spec


def _float(v: str, text: str) -> float:
    try:
        return float(v)
    except ValueError:
        raise SpecError(f"--covariate {text!r}: {v.strip()!r} is not a number") from None


def _interval(text):
    if text is None:
        return None
    try:
        a, b = (float(x) for x in text.split(","))
    except ValueError:
        raise SpecError(f"--interval {text!r}: expected START,END, e.g. 156,168") from None
    return a, b


def _bins(text):
    try:
        parts = [float(x) for x in str(text).split(",")]
    except ValueError:
        raise SpecError(f"--bins {text!r}: expected a number of bins or comma-separated edges") from None
    if len(parts) == 1:
        if not parts[0].is_integer() or parts[0] < 1:
            raise SpecError(f"--bins {text!r}: a number of bins must be a whole number >= 1")
        return int(parts[0])
    return parts


def run(args) -> int:
    """Run ``bayespk simulate``."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    from bayespk.cli_common import SEED_MAX, check_range, load_run
    from bayespk.simulate.exposure import Target, metric_name
    from bayespk.simulate.regimen import Regimen, read_regimen_file
    from bayespk.simulate.simulation import simulate_regimens

    # everything the user typed is checked before the run is loaded
    regimens = [Regimen.parse(s) for s in args.regimen]
    covariates = {}
    if args.regimens:
        doc = read_regimen_file(args.regimens)
        regimens += doc["regimens"]
        covariates.update({str(k).upper(): v for k, v in (doc["covariates"] or {}).items()})
    if not regimens:
        raise SpecError("no regimen given; use --regimen SPEC (e.g. --regimen 400q12x14) or --regimens FILE.toml")
    for c in args.covariate:
        col, spec = parse_covariate(c)
        covariates[col.upper()] = spec
    targets = [Target.parse(t) for t in args.target]
    for t in targets:
        if t.metric.startswith(("T_above", "f_above")) and args.threshold is None:
            raise SpecError(f"target {t.label!r} uses {t.metric}, which needs --threshold")
    overlap_metrics = [metric_name(m.strip(), "--overlap-metrics") for m in args.overlap_metrics.split(",")
                       if m.strip()]
    interval = _interval(args.interval)
    bins = _bins(args.bins)
    population = args.population or ("virtual" if args.n_subjects is not None else "fitted")
    if population == "fitted" and (args.n_subjects is not None or covariates):
        raise SpecError("--n-subjects, --covariate and [covariates] describe a virtual population; "
                        "use --population virtual")
    n_subjects = (args.n_subjects if args.n_subjects is not None else 1000) if population == "virtual" else None
    if n_subjects is not None and n_subjects < 1:
        raise SpecError(f"--n-subjects must be >= 1, got {n_subjects}")
    check_range("n-draws", args.n_draws, 1, 10**6)
    check_range("resolution", args.resolution, 1, 10**5)
    check_range("seed", args.seed, 0, SEED_MAX)

    fit = load_run(args.run_dir)
    sim = simulate_regimens(
        fit, regimens, population=population, n_subjects=n_subjects, covariates=covariates or None,
        etas=args.etas, n_draws=args.n_draws, interval=interval, threshold=args.threshold,
        resolution=args.resolution, seed=args.seed, progress=not args.quiet,
    )
    summary = sim.summary(by=args.strat, bins=bins)  # checks --strat before anything is written
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    summary.to_csv(out / "exposure.csv", index=False)
    written.append("exposure.csv")
    attainment = None
    if targets:
        attainment = sim.attainment(targets, by=args.strat, bins=bins)
        attainment.to_csv(out / "attainment.csv", index=False)
        written.append("attainment.csv")
    overlap = None
    if len(sim.labels) > 1:
        overlap = sim.overlap([m for m in overlap_metrics if m in sim.metric_names])
        overlap.to_csv(out / "overlap.csv", index=False)
        written.append("overlap.csv")
    fig = sim.plot(targets, attainment=attainment, log_y=args.log_y)
    fig.savefig(out / "regimens.png", dpi=110, bbox_inches="tight")
    plt.close(fig)
    written.append("regimens.png")
    info = dict(sim.info, regimens=[_regimen_dict(r) for r in sim.regimens], targets=[t.label for t in targets],
                run_dir=str(args.run_dir))
    (out / "simulation.json").write_text(json.dumps(info, indent=2, default=_json_default))
    written.append("simulation.json")

    import pandas as pd

    with pd.option_context("display.float_format", "{:.3g}".format, "display.width", 160):
        key = summary[(summary.stratum == "all") & summary.metric.isin(["Cmax", "Cmin", "AUC", "AUC_ss"])]
        print(key[["regimen", "metric", "median", "pi_lower", "pi_upper"]].to_string(index=False))
        if attainment is not None:
            a = attainment[attainment.stratum == "all"]
            print("\n" + a[["regimen", "target", "probability", "median", "lower", "upper"]].to_string(index=False))
        if overlap is not None and len(overlap):
            print("\n" + overlap[["low", "high", "metric", "ovl", "p_high_gt_low"]].to_string(index=False))
    print(f"\n{sim.n_subjects} subjects x {len(sim.labels)} regimens x {sim.n_draws} draws in "
          f"{sim.info['wall_seconds']:.1f} s ({sim.info['subject_regimens_per_second']:.1f} subject-regimens/s); "
          f"metric grid step: " + ", ".join(f"{lb} {np.round(v['interval'], 6):g}"
                                            for lb, v in sim.info["grid_step"].items()))
    print(f"wrote {out}/ ({', '.join(written)})")
    return 0


def _regimen_dict(r) -> dict:
    return {"label": r.label, "dose": r.dose, "ii": r.ii, "n": r.n, "loading": list(r.loading),
            "loading_ii": r.loading_ii, "tinf": r.tinf, "route": r.route, "per": r.per,
            "titration": [{"dose": s.dose, "ii": s.ii, "n": s.n, "start": s.start} for s in r.titration]}


def _json_default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    raise TypeError(type(o))

