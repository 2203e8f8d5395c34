"""The ``bayespk`` command line.

``bayespk fit SPEC --out RUN_DIR``   fit a model spec, write the run directory
``bayespk data CSV``                 validate a dataset and print its summary
``bayespk summary RUN_DIR``          print a run's parameter table and diagnostics

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
    return p


def main(argv: list[str] | None = None) -> int:
    from bayespk.errors import BayesPKError

    args = _parser().parse_args(argv)
    try:
        return {"fit": _fit, "data": _data, "summary": _summary}[args.command](args)
    except BayesPKError as e:
        print(f"bayespk {args.command}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    except (FileNotFoundError, IsADirectoryError, PermissionError) as e:
        print(f"bayespk {args.command}: error: {e.strerror}: {e.filename}", file=sys.stderr)
        return EXIT_USER_ERROR


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


def _data(args) -> int:
    from bayespk.errors import DataError
    from bayespk.data.nonmem import read_nonmem

    aliases = {}
    for a in args.alias:
        if "=" not in a:
            raise DataError(f"--alias {a!r}: expected NAME=COLUMN, e.g. conc=DV")
        k, v = a.split("=", 1)
        aliases[k] = v
    ds = read_nonmem(Path(args.csv), aliases=aliases)
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
