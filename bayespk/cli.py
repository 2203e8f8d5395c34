"""The ``bayespk`` command line.

``bayespk fit SPEC --out RUN_DIR``   fit a model spec, write the run directory
``bayespk data CSV``                 validate a dataset and print its summary
``bayespk summary RUN_DIR``          print a run's parameter table and diagnostics
``bayespk vpc RUN_DIR --out DIR``    VPC / pcVPC (vpc.png, vpc.csv; --pred-corr --lower-bound X)
``bayespk report RUN_DIR``           self-contained report.html (--no-pred-corr, --lower-bound X)
``bayespk compare RUN_DIR ...``      PSIS-LOO comparison table
``bayespk prior map|robustify|show`` MAP / robust prior files (see bayespk/borrowing/README.md)
``bayespk nca CSV [--out FILE]``     non-compartmental analysis of the observed data
``bayespk simulate RUN_DIR --regimen SPEC ... --out DIR``  regimen simulation: exposure, target attainment
``bayespk export RUN_DIR --format nonmem [--out DIR]``  sdtab, patab, run.ext for xpose / R
``bayespk sbc|kfold|covsearch|simest SPEC --out DIR``  workloads of many fits on Dask (see bayespk/parallel/cli.py)
``bayespk design boundaries|next|simulate ...``  dose-escalation designs (see bayespk/design/cli.py)

Exit status: 0 success; 1 internal error (a bug in bayespk; ``--debug`` shows
the traceback); 2 user error (bad data, spec, options, files; one paragraph on
stderr, no traceback, nothing sampled; ``report`` instead writes a failure
box in place of a section that fails this way, warns on stderr and exits 0); 3 ``fit --keep-partial`` interrupted and
wrote the draws it had, marked interrupted; 130 interrupted (Ctrl-C, SIGTERM),
nothing written.

Progress of long steps (compilation, sampling, simulations): a live display on
a terminal; otherwise plain lines at most every
``$BAYESPK_PROGRESS_SECONDS`` (default 10), e.g. ``sampling: 1200/8000 draws
(15%), 0 divergences, 14 s elapsed, ETA 80 s`` (see :mod:`bayespk.progress`);
``fit --quiet`` and ``simulate --quiet`` print none.
"""

from __future__ import annotations

import argparse
import signal
import sys
import threading
import warnings
from pathlib import Path

from bayespk.cli_common import SEED_HELP, SEED_MAX, check_range, load_run, parse_aliases
from bayespk.parallel.cli import COMMANDS as WORKLOADS
from bayespk.progress import step

__all__ = ["main"]

EXIT_INTERNAL_ERROR = 1
EXIT_USER_ERROR = 2
EXIT_PARTIAL = 3
EXIT_INTERRUPTED = 130
LOWER_BOUND_HELP = ("lower bound lb of the prediction correction, pcDV = lb + (DV - lb) (PRED_bin - lb) / (PRED - lb), "
                    "in DV units (default %(default)s, for concentrations)")
RUN_DIR_HELP = "run directory written by `bayespk fit SPEC --out RUN_DIR`"
FIT_BOUNDS = {"draws": (1, 10**7), "tune": (1, 10**7), "chains": (1, 64), "seed": (0, SEED_MAX)}


def _vpc_axes_options(p: argparse.ArgumentParser) -> None:
    """``--strat``, ``--strat-labels`` and ``--x``: the VPC's strata and x axis (``vpc``, and ``report`` for its
    VPC and pcVPC)."""
    p.add_argument("--strat", help="stratify by a dataset column, or DOSE (first dose amount) (default: no strata)")
    p.add_argument("--strat-labels", metavar="'V=LABEL;V=LABEL'",
                   help="panel titles of the strata, e.g. --strat-labels '0=APGR >= 5;1=APGR < 5' (split on ';', "
                        "then on the first '='; default titles: COLUMN = value)")
    p.add_argument("--x", default="TIME", metavar="TIME|TAD|COLUMN",
                   help="x axis, binned: TIME (default), TAD (time after the most recent dose, ADDL repeats "
                        "included, computed from the dose records; the time itself before the first dose) or "
                        "any numeric dataset column")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="bayespk", description="Bayesian population PK/PD modeling.")
    p.add_argument("--debug", action="store_true",
                   help="show the Python traceback of any error (for developers)")
    sub = p.add_subparsers(dest="command", required=True)

    f = sub.add_parser("fit", help="fit a model spec and write a run directory")
    f.add_argument("spec", help="model spec (TOML), e.g. models/theophylline_1cmt_oral.toml")
    f.add_argument("--out", required=True, help="run directory to write (refused if it exists, see --overwrite)")
    f.add_argument("--data", help="dataset CSV (default: the spec's [data] path)")
    f.add_argument("--sampler", choices=["nutpie", "pymc"],
                   help="NUTS implementation: nutpie (Rust, compiled log-density) or pymc (default: the spec's "
                        "[sampler] name, else nutpie)")
    f.add_argument("--draws", type=int,
                   help="draws per chain, 1 to 10^7 (default: the spec's [sampler] draws, else 1000)")
    f.add_argument("--tune", type=int,
                   help="tuning steps per chain, 1 to 10^7 (default: the spec's [sampler] tune, else 1000)")
    f.add_argument("--chains", type=int, help="chains, 1 to 64 (default: the spec's [sampler] chains, else 4)")
    f.add_argument("--seed", type=int,
                   help=f"random seed, 0 to {SEED_MAX} (default: the spec's [sampler] seed, else drawn and recorded)")
    f.add_argument("--target-accept", type=float,
                   help="NUTS target acceptance rate, in (0, 1); higher: smaller steps, fewer divergences (default: "
                        "the spec's [sampler] target_accept, else 0.9)")
    f.add_argument("--max-treedepth", type=int,
                   help="NUTS tree-depth limit (at most 2^depth - 1 leapfrog steps per draw); lower makes "
                        "quick looks at expensive (ODE) models cheaper (default: the spec's [sampler] max_treedepth, "
                        "else 10)")
    f.add_argument("--quiet", action="store_true",
                   help="no progress: no compilation messages, progress bar or periodic progress lines (those are "
                        "printed every $BAYESPK_PROGRESS_SECONDS, default 10, when the output is not a terminal)")
    f.add_argument("--overwrite", action="store_true",
                   help="replace an existing run directory whole (report.html, vpc/ and all else in it included)")
    f.add_argument("--keep-partial", action="store_true",
                   help="on Ctrl-C / SIGTERM during sampling, write the draws completed so far (every chain cut "
                        "to the same length), marked interrupted, and exit with status 3")
    f.add_argument("--allow-changed-data", action="store_true",
                   help="fit a spec from a run directory even though its data file changed (both SHA-256 "
                        "hashes are recorded)")

    d = sub.add_parser("data", help="validate a NONMEM-style dataset and print its summary")
    d.add_argument("csv", help="NONMEM-style dataset (CSV)")
    d.add_argument("--alias", action="append", default=[], metavar="NAME=COLUMN",
                   help="declare a column rename, e.g. --alias conc=DV (repeatable; default: none)")
    d.add_argument("--lloq", type=float,
                   help="LLOQ of BLQ rows without an LLOQ value, in concentration units (as a spec's [data] lloq; "
                        "default: none)")

    s = sub.add_parser("summary", help="print a run directory's parameter table and diagnostics")
    s.add_argument("run_dir", help=RUN_DIR_HELP)

    v = sub.add_parser("vpc", help="visual predictive check of a run: writes vpc.png and vpc.csv")
    v.add_argument("run_dir", help=RUN_DIR_HELP)
    v.add_argument("--out", required=True, help="folder for vpc.png and vpc.csv")
    v.add_argument("--pred-corr", action=argparse.BooleanOptionalAction, default=False,
                   help="prediction-corrected VPC (Bergstrand 2011); observations with PRED <= --lower-bound are "
                        "left out of it, counted on the figure and listed in vpc_excluded.csv (default "
                        "--no-pred-corr: the plain VPC)")
    v.add_argument("--lower-bound", type=float, default=0.0, metavar="X", help=LOWER_BOUND_HELP)
    _vpc_axes_options(v)
    v.add_argument("--n-rep", type=int, default=200, help="replicates of the study (default %(default)s)")
    v.add_argument("--pd", action="store_true",
                   help="a PK/PD run: the VPC of the PD observations (simulated with [pd_error]) instead of the "
                        "concentrations")
    v.add_argument("--bins", default="auto",
                   help="auto, a number of bins, or comma-separated edges (on --x) (default %(default)s)")
    v.add_argument("--binning", choices=["kmeans", "quantile"], default="kmeans",
                   help="how automatic bins are placed: kmeans (clusters of observation times) or quantile (equal "
                        "counts) (default %(default)s)")
    v.add_argument("--log-y", action="store_true",
                   help="log y axis (simulated values below 0 are read as 0; values at 0 are drawn at the "
                        "bottom of the axis, marked)")
    v.add_argument("--seed", type=int, default=0, help=SEED_HELP)

    r = sub.add_parser("report", help="write a self-contained HTML report of a run")
    r.add_argument("run_dir", help=RUN_DIR_HELP)
    r.add_argument("--out", help="report file (default RUN_DIR/report.html)")
    r.add_argument("--n-rep", type=int, default=200, help="VPC replicates (default %(default)s)")
    r.add_argument("--n-sim", type=int, default=500, help="NPDE simulations (default %(default)s)")
    r.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    r.add_argument("--pred-corr", action=argparse.BooleanOptionalAction, default=True,
                   help="include the prediction-corrected VPC; observations with PRED <= --lower-bound are left "
                        "out of it and counted (default --pred-corr; --no-pred-corr omits it)")
    r.add_argument("--lower-bound", type=float, default=0.0, metavar="X", help=LOWER_BOUND_HELP)
    _vpc_axes_options(r)

    c = sub.add_parser("compare", help="compare runs of the same data by PSIS-LOO, or k-fold folders by their elpd")
    c.add_argument("run_dirs", nargs="+", help="two or more run directories fitted to the same data, or two or more "
                                               "folders written by `bayespk kfold` on the same data, k and seed")
    c.add_argument("--by", choices=["obs", "subject"], default="obs",
                   help="leave out one observation (obs) or one subject at a time (default %(default)s)")
    c.add_argument("--out", help="write the table as CSV to this file (default: print only)")

    from bayespk.borrowing.cli import add_parser as add_prior_parser

    add_prior_parser(sub)  # bayespk prior map | robustify | show

    from bayespk.nca_cli import add_parser as add_nca_parser

    add_nca_parser(sub)  # bayespk nca CSV

    from bayespk.simulate.cli import add_parser as add_simulate_parser

    add_simulate_parser(sub)  # bayespk simulate RUN_DIR --regimen SPEC ... --out DIR

    from bayespk.parallel.cli import add_parser as add_workload_parser

    add_workload_parser(sub)  # bayespk sbc | kfold | covsearch | simest SPEC --out DIR

    from bayespk.design.cli import add_parser as add_design_parser

    add_design_parser(sub)  # bayespk design boundaries | next | simulate

    e = sub.add_parser("export",
                       help="export a run as NONMEM-style tables (sdtab, patab, run.ext) for xpose / R")
    e.add_argument("run_dir", help=RUN_DIR_HELP)
    e.add_argument("--format", default="nonmem", help="table format; nonmem is the only one (default %(default)s)")
    e.add_argument("--out", help="folder for the files (default RUN_DIR/nonmem)")
    e.add_argument("--draws", type=int, default=400,
                   help="posterior draws for PRED, IPRED and the individual parameters (default %(default)s)")
    e.add_argument("--n-sim", type=int, default=500,
                   help="replicates of the study simulated for EPRED, ECWRES and NPDE (default %(default)s)")
    e.add_argument("--npde", action=argparse.BooleanOptionalAction, default=True,
                   help="include the NPDE column (default --npde)")
    e.add_argument("--seed", type=int, default=0, help=SEED_HELP)
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``bayespk ARGS``; returns the exit status (see the module docstring)."""
    args = _parser().parse_args(argv)
    commands = {"fit": _fit, "data": _data, "summary": _summary, "vpc": _vpc, "report": _report,
                "compare": _compare, "prior": _prior, "nca": _nca, "simulate": _simulate,
                "export": _export, "design": _design, **{c: _workload for c in WORKLOADS}}
    with _sigterm_as_interrupt():
        try:
            return commands[args.command](args)
        except (Exception, KeyboardInterrupt) as e:
            if args.debug:
                raise
            return _failure(args.command, e)


def _failure(command: str, e: BaseException) -> int:
    """Print one paragraph for an exception that ended ``command``; returns the exit status."""
    from bayespk.errors import BayesPKError

    if isinstance(e, KeyboardInterrupt):
        print(f"bayespk {command}: interrupted{' by ' + str(e) if str(e) else ''}; stopped", file=sys.stderr)
        return EXIT_INTERRUPTED
    if isinstance(e, BayesPKError):
        print(f"bayespk {command}: error: {e}", file=sys.stderr)
        return EXIT_USER_ERROR
    if isinstance(e, OSError) and (e.strerror or e.filename):  # the file system said no: not a bug
        where = f": {e.filename}" if e.filename else ""
        print(f"bayespk {command}: error: {e.strerror or e}{where}", file=sys.stderr)
        return EXIT_USER_ERROR
    print(f"bayespk {command}: internal error (a bug in bayespk): {type(e).__name__}: {e}; rerun with --debug "
          "for the traceback", file=sys.stderr)
    return EXIT_INTERNAL_ERROR


class _sigterm_as_interrupt:
    """While a command runs, SIGTERM stops it like Ctrl-C: it goes to the SIGINT handler (which raises
    KeyboardInterrupt), so temporary files are removed and the exit status is 130."""

    def __enter__(self):
        self.previous = None
        if threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGTERM, _forward_to_sigint)
        return self

    def __exit__(self, *exc):
        if self.previous is not None:
            signal.signal(signal.SIGTERM, self.previous)


def _forward_to_sigint(signum, frame):
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler) and handler is not signal.default_int_handler:
        handler(signum, frame)  # e.g. the sampling guard of bayespk.fit, which records the signal
    raise KeyboardInterrupt("SIGTERM")





def _prior(args) -> int:
    from bayespk.borrowing.cli import run

    return run(args)


def _nca(args) -> int:
    from bayespk.nca_cli import cli

    return cli(args)


def _workload(args) -> int:
    from bayespk.parallel.cli import run

    return run(args.command, args)


def _design(args) -> int:
    from bayespk.design.cli import run

    return run(args)


def _simulate(args) -> int:
    from bayespk.simulate.cli import run

    return run(args)


def _fit(args) -> int:
    """``bayespk fit``: every check before sampling, then sample, then write the run directory whole.

    Order: options, spec, data (read and validated), the run directory (lock;
    an existing one refused without --overwrite), its free space; then
    compile and sample; then write into a temporary directory renamed into
    place. An interrupt leaves nothing behind (or, with --keep-partial, a run
    marked interrupted).
    """
    from bayespk.errors import ConvergenceWarning
    from bayespk.fit import SamplingInterrupted, fit
    from bayespk.model import PopulationModel, Spec
    from bayespk.model.spec import MAX_TREEDEPTH
    from bayespk.rundir import RunWriter

    for option, (low, high) in (FIT_BOUNDS | {"max-treedepth": (1, MAX_TREEDEPTH)}).items():
        check_range(option, getattr(args, option.replace("-", "_")), low, high)
    spec = Spec.from_toml(args.spec)
    if args.data:
        spec = _with_data(spec, args.data)
    model = PopulationModel(spec)
    print(f"{model}\n{model.data.summary}\n", flush=True)
    out = Path(args.out)
    try:
        with RunWriter(out, overwrite=args.overwrite, option="--overwrite") as writer:
            with warnings.catch_warnings(record=True) as caught:
                warnings.simplefilter("always", ConvergenceWarning)
                result = fit(model, sampler=args.sampler, draws=args.draws, tune=args.tune, chains=args.chains,
                             seed=args.seed, target_accept=args.target_accept, max_treedepth=args.max_treedepth,
                             progress=not args.quiet,
                             keep_partial=args.keep_partial, allow_changed_data=args.allow_changed_data,
                             notify=lambda msg: print(msg, flush=True), preflight=writer.preflight)
            run = result.write_into(writer)
    except KeyboardInterrupt as e:
        where = f"{out} left as it was" if out.exists() else f"{out} not created"
        what = str(e) if isinstance(e, SamplingInterrupted) else f"interrupted{' by ' + str(e) if str(e) else ''}"
        print(f"bayespk fit: {what}; nothing written ({where})", file=sys.stderr)
        return EXIT_INTERRUPTED
    diag = result.diagnostics()
    _print_run(result.summary(), diag)
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            print(f"\nWARNING: {w.message}", file=sys.stderr)
    print(f"\nwrote {run}/ (spec.toml, fit.nc, summary.csv, diagnostics.json)")
    if diag.get("interrupted"):
        print(f"bayespk fit: interrupted by {diag['signal']} during draws; wrote the first {diag['draws_kept']} "
              f"draws of each chain (completed per chain: {', '.join(map(str, diag['draws_completed']))} of "
              f"{diag['draws_requested']}) to {run}, marked \"interrupted\": true in diagnostics.json; the run "
              "is incomplete: refit to completion before relying on it", file=sys.stderr)
        return EXIT_PARTIAL
    return 0


def _with_data(spec, data: str):
    """The spec reading ``data`` (--data); a data hash recorded for another file no longer applies."""
    from dataclasses import replace

    new = spec.with_data(data)
    if spec.data.sha256 is not None and new.data.path != spec.data.path:
        print(f"note: --data {data} replaces the spec's dataset {spec.data.path}; the SHA-256 the spec recorded "
              "for that file is not checked", file=sys.stderr)
        new = replace(new, data=replace(new.data, sha256=None))
    return new





def _data(args) -> int:
    from bayespk.data.nonmem import read_nonmem

    ds = read_nonmem(Path(args.csv), aliases=parse_aliases(args.alias), lloq=args.lloq)
    print(f"{args.csv}: valid\n{ds.summary}")
    return 0


def _summary(args) -> int:
    """``bayespk summary``: the run's table and diagnostics, after checking fit.nc is intact."""
    import pandas as pd

    from bayespk.errors import BayesPKError
    from bayespk.rundir import read_diagnostics

    run = Path(args.run_dir)
    if not (run / "summary.csv").is_file():
        raise BayesPKError(f"{run}: not a run directory (no summary.csv)")
    diag = read_diagnostics(run)
    try:
        table = pd.read_csv(run / "summary.csv")
    except (ValueError, UnicodeDecodeError) as e:
        raise BayesPKError(f"{run / 'summary.csv'}: not a readable table ({e}); refit") from None
    load_run(run, model=False)  # refuses a missing, corrupted or foreign fit.nc
    _print_run(table, diag)
    return 0





def _positive(name: str, value: int, high: int = 10**6) -> None:
    check_range(name, value, 1, high)


def _finite(option: str, value: float) -> None:
    """Refuse ``--option nan`` or ``inf``."""
    import math

    from bayespk.errors import SpecError

    if not math.isfinite(value):
        raise SpecError(f"--{option} must be a finite number, got {value}")


def _strat_labels(text: str | None) -> dict | None:
    """``'0=APGR >= 5;1=APGR < 5'`` -> {"0": "APGR >= 5", "1": "APGR < 5"} (split on ';', then the first '=')."""
    from bayespk.errors import BayesPKError

    if text is None:
        return None
    labels = {}
    for part in (p.strip() for p in text.split(";")):
        if not part:
            continue
        value, eq, label = part.partition("=")
        if not eq or not value.strip() or not label.strip():
            raise BayesPKError(f"--strat-labels {text!r}: expected VALUE=LABEL pairs separated by ';', "
                               f"e.g. '0=APGR >= 5;1=APGR < 5' (got {part!r})")
        labels[value.strip()] = label.strip()
    return labels


def _vpc(args) -> int:
    from bayespk.errors import BayesPKError

    _positive("n-rep", args.n_rep)
    check_range("seed", args.seed, 0, SEED_MAX)
    _finite("lower-bound", args.lower_bound)
    bins: object = args.bins
    if bins != "auto":
        try:
            parts = [float(x) for x in str(bins).split(",")]
        except ValueError:
            raise BayesPKError(f"--bins {bins!r}: expected auto, a number, or comma-separated edges") from None
        bins = int(parts[0]) if len(parts) == 1 else parts
    from bayespk.evaluate.vpc import vpc

    labels = _strat_labels(args.strat_labels)
    fit = load_run(args.run_dir)
    with step(f"VPC: simulating {args.n_rep} replicates of the study with new subjects"):
        result = vpc(fit, n_rep=args.n_rep, pred_corr=args.pred_corr, lower_bound=args.lower_bound,
                     strat=args.strat, strat_labels=labels, x=args.x, bins=bins, binning=args.binning,
                     log_y=args.log_y, seed=args.seed, pd_obs=args.pd)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    result.figure.savefig(out / "vpc.png", dpi=110, bbox_inches="tight")
    result.table.to_csv(out / "vpc.csv", index=False)
    written = [out / "vpc.png", out / "vpc.csv"]
    if args.pred_corr:  # the observations left out of the prediction correction (header only when none)
        result.excluded.to_csv(out / "vpc_excluded.csv", index=False)
        written.append(out / "vpc_excluded.csv")
        if result.settings["n_excluded"]:
            print(f"note: {result.settings['exclusion_note']}; listed in {out / 'vpc_excluded.csv'}",
                  file=sys.stderr)
    print(f"wrote {', '.join(map(str, written[:-1]))} and {written[-1]} ({len(result.table)} bins)")
    return 0


def _report(args) -> int:
    from bayespk.errors import BayesPKError
    from bayespk.evaluate.report import write_report

    _positive("n-rep", args.n_rep)
    _positive("n-sim", args.n_sim)
    check_range("seed", args.seed, 0, SEED_MAX)
    _finite("lower-bound", args.lower_bound)
    labels = _strat_labels(args.strat_labels)  # refused before anything is loaded, as `bayespk vpc`
    if labels and not args.strat:
        raise BayesPKError("--strat-labels needs --strat (the column whose values they name)")
    fit = load_run(args.run_dir)
    out = Path(args.out) if args.out else Path(args.run_dir) / "report.html"
    failed = []

    def warn(title: str, message: str) -> None:  # a section that failed on the data: the report goes on
        failed.append(title)
        print(f"bayespk report: warning: section {title!r} failed: {message}", file=sys.stderr, flush=True)

    path = write_report(fit, out, n_rep=args.n_rep, n_sim=args.n_sim, seed=args.seed, pred_corr=args.pred_corr,
                        lower_bound=args.lower_bound, x=args.x, strat=args.strat, strat_labels=labels,
                        progress=lambda msg: print(f"  {msg} ...", flush=True), warn=warn)
    print(f"wrote {path}" + (f" ({len(failed)} section{'s' if len(failed) != 1 else ''} failed: "
                             f"{', '.join(failed)}; see the report)" if failed else ""))
    return 0


def _compare(args) -> int:
    import pandas as pd

    from bayespk.evaluate.compare import compare

    kinds = [_workload_kind(d) for d in args.run_dirs]
    if any(k == "kfold" for k in kinds):
        from bayespk.errors import BayesPKError
        from bayespk.evaluate.kfold import compare_kfold

        if not all(k == "kfold" for k in kinds):
            raise BayesPKError("compare: give either run directories or k-fold folders (bayespk kfold), not both")
        table = compare_kfold({Path(d).name or str(d): d for d in args.run_dirs})
        with pd.option_context("display.float_format", "{:.2f}".format, "display.width", 120):
            print(table.to_string())
        if args.out:
            table.to_csv(args.out)
        return 0

    fits = {Path(d).name or str(d): load_run(d) for d in args.run_dirs}
    with warnings.catch_warnings(), step(f"PSIS-LOO of {len(fits)} runs (by {args.by})"):
        warnings.simplefilter("ignore")
        table = compare(fits, by=args.by)
    with pd.option_context("display.float_format", "{:.2f}".format, "display.width", 120):
        print(table.to_string())
    if (table.n_bad_k > 0).any():
        print("\nnote: Pareto k > 0.7 for some points (n_bad_k); those LOO terms are unreliable", file=sys.stderr)
    if args.out:
        table.to_csv(args.out)
    return 0


def _workload_kind(folder) -> str | None:
    """The kind of workload a folder holds (``kfold``, ``sbc``...), None for anything else."""
    import json

    try:
        return json.loads((Path(folder) / "workload.json").read_text(encoding="utf-8")).get("kind")
    except (OSError, ValueError, AttributeError):
        return None


def _export(args) -> int:
    """``bayespk export``: NONMEM-style tables of a run (see :mod:`bayespk.evaluate.export`)."""
    from bayespk.errors import BayesPKError
    from bayespk.evaluate.export import EXPORT_FORMATS, export_nonmem

    if args.format not in EXPORT_FORMATS:
        raise BayesPKError(f"--format {args.format!r}: unknown export format; expected one of "
                           f"{', '.join(EXPORT_FORMATS)}")
    _positive("draws", args.draws, 10**7)
    check_range("n-sim", args.n_sim, 2, 10**6)
    check_range("seed", args.seed, 0, SEED_MAX)
    fit = load_run(args.run_dir)
    out = Path(args.out) if args.out else Path(args.run_dir) / "nonmem"
    what = f"tables from {args.draws} draws" + (f", NPDE from {args.n_sim} simulations" if args.npde else "")
    with warnings.catch_warnings(), step(f"export: {what}"):
        warnings.simplefilter("ignore")
        written = export_nonmem(fit, out, draws=args.draws, n_sim=args.n_sim, npde=args.npde, seed=args.seed)
    print(f"wrote {', '.join(p.name for p in written.values())} in {out}")
    return 0


def _print_run(table, diag: dict) -> None:
    from bayespk.diagnostics import format_parameter_table

    print(format_parameter_table(table))
    print(
        f"\n{diag['chains']} chains x {diag['draws']} draws ({diag.get('sampler')}, seed {diag.get('seed')}, "
        f"{diag.get('wall_seconds', float('nan')):.1f} s incl. {diag.get('compile_seconds', float('nan')):.1f} s "
        f"compile): divergences {diag['divergences']}, max R-hat {diag['max_r_hat']:.3f}, "
        f"min ESS bulk {diag['min_ess_bulk']:.0f} / tail {diag['min_ess_tail']:.0f}, min E-BFMI {diag['min_bfmi']:.2f}"
    )
    print("convergence: " + ("OK" if not diag.get("problems") else "POOR - " + "; ".join(diag["problems"])))


def entry() -> None:
    """The ``bayespk`` command: :func:`main`, then exit with its status.

    After an interrupted command has cleaned up and reported, a further
    Ctrl-C (or one still pending from the first) is ignored while the
    interpreter shuts down, so the status stays 130 instead of death by signal.
    """
    status = main()
    if status == EXIT_INTERRUPTED and threading.current_thread() is threading.main_thread():
        try:
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        except KeyboardInterrupt:  # pending: Python runs it when the handler changes
            signal.signal(signal.SIGINT, signal.SIG_IGN)
    sys.exit(status)


if __name__ == "__main__":  # pragma: no cover
    entry()
