"""``bayespk nca CSV [--out FILE]``: non-compartmental analysis from the command line (:mod:`bayespk.nca`)."""

from __future__ import annotations

import sys
from pathlib import Path

import pandas as pd

from bayespk.cli_common import parse_aliases
from bayespk.data.nonmem import Dataset, filter_expressions, read_nonmem
from bayespk.data.nonmem import id_label as _label
from bayespk.errors import DataError
from bayespk.nca import AUC_METHODS, BLQ_RULES, ROUTES, nca

__all__ = ["add_parser", "cli"]


def add_parser(sub) -> None:
    """``bayespk nca CSV [--out FILE]``: the subcommand's arguments."""
    n = sub.add_parser("nca", help="non-compartmental analysis of a dataset's observed concentrations")
    n.add_argument("csv", help="NONMEM-style dataset (CSV)")
    n.add_argument("--out", help="write the per-subject table as CSV to this file (default: print only)")
    n.add_argument("--alias", action="append", default=[], metavar="NAME=COLUMN",
                   help="declare a column rename, e.g. --alias conc=DV (repeatable; default: none)")
    rows = n.add_mutually_exclusive_group()
    rows.add_argument("--ignore", action="append", metavar="EXPR",
                      help="drop the rows where the condition holds, as a spec's [data] ignore (NONMEM "
                           "IGNORE=(...)), e.g. --ignore DV.EQ.0 --ignore 'TIME > 24' (repeatable: a row matching "
                           "any is dropped; dose rows too; default: none)")
    rows.add_argument("--accept", action="append", metavar="EXPR",
                      help="keep only the rows where the condition holds, as a spec's [data] accept (NONMEM "
                           "ACCEPT=(...)), e.g. --accept ID.LE.6 (repeatable: a row matching any is kept; dose "
                           "rows too; not with --ignore; default: none)")
    n.add_argument("--lloq", type=float,
                   help="LLOQ of BLQ rows without an LLOQ value, in concentration units (as a spec's [data] lloq; "
                        "default: none)")
    n.add_argument("--dose-time", type=float,
                   help="analyse the last dose at or before this time, in the data's time units (default: the "
                        "first dose)")
    n.add_argument("--blq", choices=BLQ_RULES, default=BLQ_RULES[0],
                   help="BLQ observations: zero-before-tmax-drop-after (0 before Tmax, left out after), zero (all "
                        "0) or drop (all left out) (default %(default)s)")
    n.add_argument("--auc-method", choices=AUC_METHODS, default=AUC_METHODS[0],
                   help="AUC trapezoids: linear-up-log-down (log trapezoid where the concentration falls) or "
                        "linear (default %(default)s)")
    n.add_argument("--route", choices=ROUTES, default="auto",
                   help="dosing route, which sets how the concentration at the dose time is filled in when not "
                        "observed; auto: from the dose records (default %(default)s)")
    n.add_argument("--min-points", type=int, default=3,
                   help="fewest points of the automatic lambda_z fit, >= 3 (default %(default)s)")
    n.add_argument("--adj-r2-tol", type=float, default=1e-4,
                   help="adjusted-R^2 tolerance of the lambda_z fit: among fits within it of the best, the one with "
                        "the most points is used (default %(default)s)")


FILTER_OPTIONS = {"[data] ignore/accept": "--ignore/--accept", "[data] ignore": "--ignore",
                  "[data] accept": "--accept"}  # the spec's keys in the reader's messages -> nca's options


def _read_filtered(csv, aliases: dict, lloq, ignore: list[str] | None, accept: list[str] | None) -> Dataset:
    """The dataset of ``bayespk nca``, with ``--ignore`` / ``--accept`` applied as a spec's ``[data] ignore`` /
    ``accept`` (:func:`~bayespk.data.nonmem.read_nonmem`); prints on stderr how many rows each option dropped.

    Errors and notes of the filters name the options (``--ignore``), not the spec's keys.
    """
    for key, exprs in (("--ignore", ignore), ("--accept", accept)):
        filter_expressions(exprs, key)  # a condition that does not parse: refused naming the option
    try:
        ds = read_nonmem(Path(csv), aliases=aliases, lloq=lloq, ignore=ignore, accept=accept)
    except DataError as e:
        if not (ignore or accept):
            raise
        raise DataError(_as_options(str(e))) from None
    for note in ds.summary.notes:
        if note.startswith(tuple(FILTER_OPTIONS)):  # "[data] ignore: rows matching ...; 5 rows dropped, ..."
            print(f"note: {_as_options(note)}", file=sys.stderr)
    return ds


def _as_options(text: str) -> str:
    """A message of the data reader with the spec's filter keys named as nca's options."""
    for key, option in FILTER_OPTIONS.items():
        text = text.replace(key, option)
    return text


def cli(args) -> int:
    """Run ``bayespk nca``: print the table (and write it with ``--out``)."""
    ds = _read_filtered(args.csv, parse_aliases(args.alias), args.lloq, args.ignore, args.accept)
    table = nca(
        ds,
        dose_time=args.dose_time,
        min_points=args.min_points,
        adj_r2_tol=args.adj_r2_tol,
        blq=args.blq,
        auc_method=args.auc_method,
        route=args.route,
    )
    shown = [
        "ID",
        "dose",
        "route",
        "Cmax",
        "Tmax",
        "Tlast",
        "AUC0_t",
        "AUC0_inf",
        "AUC_pct_extrap",
        "AUC_extrap_over_20",
        "lambda_z",
        "lambda_z_n_points",
        "t_half",
        "CL_over_F",
    ]
    with pd.option_context(
        "display.float_format", "{:.4g}".format, "display.width", 160, "display.max_rows", 500
    ):
        print(table[shown].assign(ID=table.ID.map(_label)).to_string(index=False))
    for _, r in table.iterrows():
        for text in (r.reason, r.note):
            if text:
                print(f"ID {_label(r.ID)}: {text}", file=sys.stderr)
    if args.out:
        out = Path(args.out)
        out.parent.mkdir(parents=True, exist_ok=True)
        table.assign(ID=table.ID.map(_label)).to_csv(out, index=False)  # IDs exactly as in the data
        print(f"wrote {out} ({len(table)} subject{'s' * (len(table) != 1)})")
    return 0
