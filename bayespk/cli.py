"""The ``bayespk`` command line.

``bayespk fit SPEC --out RUN_DIR``   fit a model spec, write the run directory
``bayespk data CSV``                 validate a dataset and print its summary
``bayespk summary RUN_DIR``          print a run's parameter table and diagnostics
``bayespk vpc RUN_DIR --out DIR``    VPC / pcVPC (vpc.png, vpc.csv)
``bayespk report RUN_DIR``           self-contained report.html
``bayespk compare RUN_DIR ...``      PSIS-LOO comparison table
``bayespk prior map|robustify|show`` MAP / robust prior files (see bayespk/borrowing/README.md)
``bayespk nca CSV [--out FILE]``     non-compartmental analysis of the observed data
``bayespk simulate RUN_DIR --regimen SPEC ... --out DIR``  regimen simulation: exposure, target attainment

User errors (bad data, bad spec, missing files) print one paragraph to stderr
and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from pathlib import Path

__all__ = ["main"]

EXIT_USER_ERROR = 2


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bayespk", description="Bayesian population PK/PD modeling.")
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fit", help="fit a model spec and write a run directory")
    f.add_argument("spec", help="model spec (TOML), e.g. models/theophylline_1cmt_oral.toml")
    f.add_argument("--out", required=True, help="run directory to write")
    f.add_argument("--data", help="dataset CSV (overrides the spec's [data] path)")
    f.add_argument("--sampler", choices=["nutpie", "pymc"])
    f.add_argument("--draws", type=int)
    f.add_argument("--tune", type=int)
    f.add_argument("--chains", type=int)
    f.add_argument("--seed", type=int)
    f.add_argument("--target-accept", type=float)
    f.add_argument("--quiet", action="store_true", help="no progress bar")

    d = sub.add_parser("data", help="validate a NONMEM-style dataset and print its summary")
    d.add_argument("csv")
    d.add_argument("--alias", action="append", default=[], metavar="NAME=COLUMN",
                   help="declare a column rename, e.g. --alias conc=DV (repeatable)")

    s = sub.add_parser("summary", help="print a run directory's parameter table and diagnostics")
    s.add_argument("run_dir")

    v = sub.add_parser("vpc", help="visual predictive check of a run: writes vpc.png and vpc.csv")
    v.add_argument("run_dir")
    v.add_argument("--out", required=True, help="folder for vpc.png and vpc.csv")
    v.add_argument("--pred-corr", action="store_true", help="prediction-corrected VPC (Bergstrand 2011)")
    v.add_argument("--strat", help="stratify by a dataset column, or DOSE (first dose amount)")
    v.add_argument("--n-rep", type=int, default=200, help="replicates of the study (default 200)")
    v.add_argument("--bins", default="auto", help="auto, a number of bins, or comma-separated edges")
    v.add_argument("--binning", choices=["kmeans", "quantile"], default="kmeans")
    v.add_argument("--log-y", action="store_true", help="log y axis")
    v.add_argument("--seed", type=int, default=0)

    r = sub.add_parser("report", help="write a self-contained HTML report of a run")
    r.add_argument("run_dir")
    r.add_argument("--out", help="report file (default RUN_DIR/report.html)")
    r.add_argument("--n-rep", type=int, default=200, help="VPC replicates (default 200)")
    r.add_argument("--n-sim", type=int, default=500, help="NPDE simulations (default 500)")
    r.add_argument("--seed", type=int, default=0)

    c = sub.add_parser("compare", help="compare runs of the same data by PSIS-LOO")
    c.add_argument("run_dirs", nargs="+")
    c.add_argument("--by", choices=["obs", "subject"], default="obs",
                   help="leave out one observation (default) or one subject at a time")
    c.add_argument("--out", help="write the table as CSV")

    from bayespk.borrowing.cli import add_parser as add_prior_parser

    add_prior_parser(sub)  # bayespk prior map | robustify | show

    from bayespk.nca import add_parser as add_nca_parser

    add_nca_parser(sub)  # bayespk nca CSV

    from bayespk.simulate.cli import add_parser as add_simulate_parser

    add_simulate_parser(sub)  # bayespk simulate RUN_DIR --regimen SPEC ... --out DIR
    return p


def main(argv: list[str] | None = None) -> int:
    from bayespk.errors import BayesPKError

    args = _parser().parse_args(argv)
    try:
        commands = {"fit": _fit, "data": _data, "summary": _summary, "vpc": _vpc, "report": _report,
                    "compare": _compare, "prior": _prior, "nca": _nca, "simulate": _simulate}
        return commands[args.command](args)
    except BayesPKError as e:
        print(f"bayespk {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        print(f"bayespk {args.command}: error: {e.strerror}: {e.filename}", file=sys.stderr)
        return EXIT_USER_ERROR


def _prior(args) -> int:
    from bayespk.borrowing.cli import run

    return run(args)


def _nca(args) -> int:
    from bayespk.nca import cli

    return cli(args)


def _simulate(args) -> int:
    from bayespk.simulate.cli import run

    return run(args)


def _fit(args) -> int:
    from bayespk.errors import ConvergenceWarning, SpecError
    from bayespk.fit import fit
    from bayespk.model import PopulationModel, Spec

    spec = Spec.from_toml(args.spec)
    if args.data:
        spec = spec.with_data(args.data)
    model = PopulationModel(spec)
    print(f"{model}\n{model.data.summary}\n", flush=True)
    for k in ("draws", "tune", "chains"):
        v = getattr(args, k)
        if v is not None and v < 1:
            raise SpecError(f"--{k} must be >= 1, got {v}")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        result = fit(model, sampler=args.sampler, draws=args.draws, tune=args.tune, chains=args.chains,
                     seed=args.seed, target_accept=args.target_accept, progress=not args.quiet)
    run = result.write_run(args.out)
    _print_run(result.summary(), result.diagnostics())
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            print(f"\nWARNING: {w.message}", file=sys.stderr)
    print(f"\nwrote {run}/ (spec.toml, fit.nc, summary.csv, diagnostics.json)")
    return 0


def parse_aliases(items: list[str]) -> dict[str, str]:
    """``--alias NAME=COLUMN`` options as a dict for :func:`bayespk.read_nonmem`."""
    from bayespk.errors import DataError

    aliases = {}
    for a in items:
        if "=" not in a:
            raise DataError(f"--alias {a!r}: expected NAME=COLUMN, e.g. conc=DV")
        k, v = a.split("=", 1)
        aliases[k] = v
    return aliases


def _data(args) -> int:
    from bayespk.data.nonmem import read_nonmem

    ds = read_nonmem(Path(args.csv), aliases=parse_aliases(args.alias))
    print(f"{args.csv}: valid\n{ds.summary}")
    return 0


def _summary(args) -> int:
    import pandas as pd

    from bayespk.errors import BayesPKError

    run = Path(args.run_dir)
    if not (run / "summary.csv").is_file():
        raise BayesPKError(f"{run}: not a run directory (no summary.csv)")
    diag = json.loads((run / "diagnostics.json").read_text())
    _print_run(pd.read_csv(run / "summary.csv"), diag)
    return 0


def _load_run(run_dir: str):
    from bayespk.errors import BayesPKError
    from bayespk.fit import load

    run = Path(run_dir)
    if not (run / "fit.nc").is_file():
        raise BayesPKError(f"{run}: not a run directory (no fit.nc); create one with `bayespk fit SPEC --out {run}`")
    return load(run)


def _positive(name: str, value: int) -> None:
    from bayespk.errors import SpecError

    if value < 1:
        raise SpecError(f"--{name} must be >= 1, got {value}")


def _vpc(args) -> int:
    from bayespk.errors import BayesPKError

    _positive("n-rep", args.n_rep)
    bins: object = args.bins
    if bins != "auto":
        try:
            parts = [float(x) for x in str(bins).split(",")]
        except ValueError:
            raise BayesPKError(f"--bins {bins!r}: expected auto, a number, or comma-separated edges") from None
        bins = int(parts[0]) if len(parts) == 1 else parts
    fit = _load_run(args.run_dir)
    print(f"simulating {args.n_rep} replicates of the study with new subjects ...", flush=True)
    result = fit.vpc(n_rep=args.n_rep, pred_corr=args.pred_corr, strat=args.strat, bins=bins,
                     binning=args.binning, log_y=args.log_y, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result.figure.savefig(out / "vpc.png", dpi=110, bbox_inches="tight")
    result.table.to_csv(out / "vpc.csv", index=False)
    print(f"wrote {out / 'vpc.png'} and {out / 'vpc.csv'} ({len(result.table)} bins)")
    return 0


def _report(args) -> int:
    from bayespk.evaluate.report import write_report

    _positive("n-rep", args.n_rep)
    _positive("n-sim", args.n_sim)
    fit = _load_run(args.run_dir)
    out = Path(args.out) if args.out else Path(args.run_dir) / "report.html"
    path = write_report(fit, out, n_rep=args.n_rep, n_sim=args.n_sim, seed=args.seed,
                        progress=lambda msg: print(f"  {msg} ...", flush=True))
    print(f"wrote {path}")
    return 0


def _compare(args) -> int:
    import pandas as pd

    from bayespk.evaluate.compare import compare

    fits = {Path(d).name or str(d): _load_run(d) for d in args.run_dirs}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        table = compare(fits, by=args.by)
    with pd.option_context("display.float_format", "{:.2f}".format, "display.width", 120):
        print(table.to_string())
    if (table.n_bad_k > 0).any():
        print("\nnote: Pareto k > 0.7 for some points (n_bad_k); those LOO terms are unreliable", file=sys.stderr)
    if args.out:
        table.to_csv(args.out)
    return 0


def _print_run(table, diag: dict) -> None:
    import pandas as pd

    with pd.option_context("display.float_format", "{:.4g}".format, "display.width", 120):
        print(table.to_string(index=False))
    print(
        f"\n{diag['chains']} chains x {diag['draws']} draws ({diag.get('sampler')}, seed {diag.get('seed')}, "
        f"{diag.get('wall_seconds', float('nan')):.1f} s incl. {diag.get('compile_seconds', float('nan')):.1f} s "
        f"compile): divergences {diag['divergences']}, max R-hat {diag['max_r_hat']:.3f}, "
        f"min ESS bulk {diag['min_ess_bulk']:.0f} / tail {diag['min_ess_tail']:.0f}, min E-BFMI {diag['min_bfmi']:.2f}"
    )
    print("convergence: " + ("OK" if not diag.get("problems") else "POOR - " + "; ".join(diag["problems"])))


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
