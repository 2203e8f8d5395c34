"""``bayespk design ...``: dose-escalation decision tables, next-dose decisions and operating characteristics.

::

    bayespk design boundaries --design boin|mtpi2|3+3 --target 0.3 [--cohort-size 3 --n-max 12]
    bayespk design next --design boin --target 0.3 --doses 5 --treated 3,3,3 --dlt 0,1,2 --current 3
    bayespk design next --design blrm --doses 1,2.5,5,10,15,20,25 --dref 25 --treated 3,4,5,4,0,0,2 \\
        --dlt 0,0,0,0,0,0,2 [--prior PRIOR.json | --prior-mean LA,LB --prior-sd S1,S2 --prior-corr R]
    bayespk design simulate --design boin --target 0.3 --scenario 0.05,0.1,0.3,0.45,0.6 --trials 2000 \\
        --cohort-size 3 --cohorts 10 --out DIR
    bayespk design simulate --design blrm --doses 1,2,4,8,16,32 --dref 16 --scenario 0.01,0.03,0.06,0.2,0.5,0.7 \\
        --trials 500 --out DIR [--prior FILE | --prior-mean LA,LB --prior-sd S1,S2] [--ewoc 0.25 --rule highest]
    bayespk design next --design blrm-combination --doses1 1,2,4,8 --doses2 10,20,40 --dref 4,20 \\
        --data rows.csv [--cohort 2,20,3,1 ...] [--prior1 FILE | --prior1-mean LA,LB --prior1-sd S1,S2] \\
        [--prior2 ...] [--eta-prior 0,1.121] [--ewoc 0.25] [--method nuts|is] [--json]
    bayespk design simulate --design blrm-combination --doses1 1,2,4 --doses2 10,20,40 --dref 4,20 \\
        --scenario-file P.csv --trials 200 --out DIR [--start-pair 1,1 --draws 20000 --min-ess 1000]
    bayespk design next --design boin12 --target 0.35 --eff-min 0.25 --doses 4 --treated 3,9 --dlt 0,1 \\
        --eff 1,6 --current 2 [--utility 100,60,40,0]
    bayespk design simulate --design boin12 --target 0.35 --eff-min 0.25 --scenario 0.05,0.1,0.2,0.45 \\
        --scenario-eff 0.1,0.35,0.6,0.62 --trials 2000 --out DIR

User errors raise :class:`~bayespk.design.escalation.DesignError`, which ``bayespk`` prints as one paragraph
and exits with status 2. Nothing here imports PyMC.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

__all__ = ["add_parser", "run"]

DESIGN_CHOICES = ("boin", "mtpi2", "3+3", "boin12", "blrm", "blrm-combination")


def _design_options(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--design",
        choices=DESIGN_CHOICES,
        default="boin",
        help="boin (Liu & Yuan 2015), mtpi2 (mTPI-2 / keyboard, Guo et al. 2017; Yan et al. 2017), 3+3, "
        "boin12 (phase I/II, toxicity and efficacy, optimal biological dose; Lin et al. 2020), or "
        "blrm (Bayesian logistic regression with escalation with overdose control, Neuenschwander et al. "
        "2008), or blrm-combination (two-drug BLRM, Neuenschwander et al. 2015; `next` and `simulate`) "
        "(default %(default)s)",
    )
    p.add_argument(
        "--target",
        type=float,
        help="target DLT probability, in (0, 1), e.g. 0.3 (required for boin and mtpi2; 3+3's rule does "
        "not use it, its simulation counts doses above it as overdoses: default 1/3)",
    )
    p.add_argument(
        "--p-saf",
        type=float,
        help="BOIN: highest DLT probability deemed sub-therapeutic (default: 0.6 x target)",
    )
    p.add_argument(
        "--p-tox", type=float, help="BOIN: lowest DLT probability deemed overly toxic (default: 1.4 x target)"
    )
    p.add_argument(
        "--eps1",
        type=float,
        default=0.05,
        help="mTPI-2: equivalence interval starts at target - eps1 (default %(default)s)",
    )
    p.add_argument(
        "--eps2",
        type=float,
        default=0.05,
        help="mTPI-2: equivalence interval ends at target + eps2 (default %(default)s)",
    )
    p.add_argument(
        "--cutoff-eli",
        type=float,
        default=0.95,
        help="eliminate a dose (and all higher) when P(DLT probability > target | data) exceeds this, "
        "with at least 3 patients on it (default %(default)s)",
    )
    g = p.add_argument_group("boin12 (phase I/II: toxicity and efficacy)")
    g.add_argument(
        "--eff-min",
        type=float,
        help="boin12: lowest acceptable efficacy probability phi_E, in (0, 1) (required with --design boin12)",
    )
    g.add_argument(
        "--utility",
        metavar="U01,U11,U00,U10",
        help="boin12: utilities (0..100) of efficacy without toxicity, efficacy with toxicity, neither, "
        "toxicity without efficacy (default 100,60,40,0 as Lin et al. 2020)",
    )
    g.add_argument(
        "--cutoff-eff",
        type=float,
        default=0.9,
        help="boin12: eliminate a dose when P(efficacy probability < eff-min | data) exceeds this, with at "
        "least 3 patients on it (default %(default)s)",
    )
    g.add_argument(
        "--n-star",
        type=int,
        default=6,
        help="boin12: with the DLT rate between the BOIN boundaries, escalation stays a candidate while fewer "
        "than this many patients are on the dose (default %(default)s)",
    )
    g.add_argument(
        "--n-explore",
        type=int,
        default=9,
        help="boin12: explore the next untried dose once this many patients are on the current one "
        "(default %(default)s)",
    )


def add_parser(sub) -> None:
    d = sub.add_parser(
        "design",
        help="dose-escalation designs: decision tables, next dose, operating "
        "characteristics (BOIN, mTPI-2, 3+3)",
        description="Dose-escalation designs (BOIN, mTPI-2 / keyboard, 3+3): the decision table, "
        "the next dose for observed cohort data, and operating characteristics by "
        "simulation (Dask).",
    )
    s = d.add_subparsers(dest="design_command", required=True)

    b = s.add_parser(
        "boundaries",
        help="print the decision table (escalate / stay / de-escalate / eliminate by patients treated)",
        description="Print the design's decision table by number of patients treated at the current "
        "dose, as R BOIN's get.boundary; for mtpi2 also the E/S/D/DU grid.",
    )
    _design_options(b)
    b.add_argument(
        "--cohort-size",
        type=int,
        default=3,
        help="show the columns n = cohort size, 2 x cohort size, ... (1: every n) (default %(default)s)",
    )
    b.add_argument(
        "--n-max",
        type=int,
        default=12,
        help="largest number of patients at one dose in the table (default %(default)s)",
    )
    b.add_argument("--out", help="also write the table as CSV to this file (default: print only)")

    n = s.add_parser(
        "next",
        help="the next dose for observed cohort data, with its reason",
        description="Apply the design to the data of every dose (patients treated and DLTs, lowest "
        "dose first; levels after the last value are untreated): elimination of doses, "
        "no re-escalation to an eliminated dose, and the decision at the current dose.",
    )
    _design_options(n)
    n.add_argument(
        "--doses",
        metavar="K | D1,D2,...",
        help="boin, mtpi2, 3+3: the number of dose levels; blrm: the doses themselves, positive and "
        "increasing, e.g. 1,2.5,5,10 (required; blrm-combination: --doses1, --doses2)",
    )
    n.add_argument(
        "--treated",
        metavar="N1,N2,...",
        help="patients treated at each dose, lowest first, e.g. 3,3,3 (required; blrm-combination: --data "
        "or --cohort)",
    )
    n.add_argument(
        "--dlt",
        metavar="Y1,Y2,...",
        help="DLTs observed at each dose, lowest first, e.g. 0,1,2 (required; blrm-combination: --data or "
        "--cohort)",
    )
    n.add_argument(
        "--eff",
        metavar="E1,E2,...",
        help="boin12: patients with an efficacy response at each dose, lowest first (required with --design "
        "boin12)",
    )
    n.add_argument(
        "--both",
        metavar="B1,B2,...",
        help="boin12: patients with both a DLT and a response at each dose (needed only when the utility "
        "table is not additive: U11 + U00 != U01 + U10)",
    )
    n.add_argument(
        "--current",
        help="boin, mtpi2, 3+3: the dose level (1-based) the last cohort was treated at (required); "
        "blrm: the "
        "dose the escalation step is measured from (default: the highest dose given so far)",
    )
    g = n.add_argument_group("blrm (Bayesian logistic regression model with overdose control)")
    g.add_argument(
        "--dref",
        metavar="D | D1,D2",
        help="blrm: reference dose d_ref of logit(pi) = log(alpha) + beta "
        "log(d / d_ref) (required with --design blrm); blrm-combination: the reference doses of drug 1 and "
        "drug 2",
    )
    g.add_argument(
        "--prior",
        metavar="FILE",
        help='blrm: prior of (log alpha, log beta) as JSON: {"mean": '
        '[m1, m2], "sd": [s1, s2], "corr": r} or a mixture {"weights", "means", "sds", '
        '"corr"} (default: mean (0, 0), SD (2, 1), corr 0, the OncoBayes2 single-agent example)',
    )
    g.add_argument(
        "--prior-mean",
        metavar="LA,LB",
        help="blrm: prior means of log alpha and log beta (instead of --prior)",
    )
    g.add_argument("--prior-sd", metavar="S1,S2", help="blrm: prior SDs of log alpha and log beta")
    g.add_argument(
        "--prior-corr", type=float, help="blrm: prior correlation of log alpha and log beta (default 0)"
    )
    g.add_argument(
        "--ewoc",
        type=float,
        default=0.25,
        help="blrm: overdose control, eligible doses have P(pi >= 0.33) below this (default %(default)s)",
    )
    g.add_argument(
        "--max-step",
        type=float,
        help="blrm: the next dose is at most this multiple "
        "of the highest dose given so far (or --current) (default 2: at most doubling); blrm-combination: "
        "each drug's dose at most this multiple of its highest dose given (default: instead at most one grid "
        "level above a combination given, in one drug only)",
    )
    g.add_argument(
        "--rule",
        choices=("target", "highest"),
        default="target",
        help="blrm: among eligible "
        "doses pick the largest P(0.16 <= pi < 0.33) (target) or the highest dose "
        "(default %(default)s)",
    )
    g.add_argument(
        "--draws",
        type=int,
        default=2000,
        help="blrm: posterior draws per chain (4 chains) (default %(default)s)",
    )
    g.add_argument("--seed", type=int, default=0, help="blrm: random seed (default %(default)s)")
    gc = n.add_argument_group("blrm-combination (two-drug BLRM with overdose control, Neuenschwander et al. 2015)")
    _combination_model_options(gc)
    gc.add_argument(
        "--data",
        metavar="FILE",
        help="blrm-combination: CSV with columns d1,d2,n,r: patients n and DLTs r per dose pair (0: the drug "
        "not given; monotherapy rows may be at doses off the grids)",
    )
    gc.add_argument(
        "--cohort",
        action="append",
        metavar="D1,D2,N,R",
        help="blrm-combination: one data row (repeat the option; after the rows of --data)",
    )
    gc.add_argument(
        "--method",
        choices=("nuts", "is"),
        default="nuts",
        help="blrm-combination: posterior by NUTS (4 chains x --draws) or importance sampling (20000 prior "
        "draws, adaptive stages while the ESS < 1000) (default %(default)s)",
    )
    n.add_argument("--json", action="store_true", help="print the decision as JSON (default: a sentence)")

    m = s.add_parser(
        "simulate",
        help="operating characteristics by simulating trials on a scenario (Dask)",
        description="Simulate trials of the design on a scenario of true DLT probabilities: P(select "
        "each dose), patients and DLTs per dose, overdosing, trial length. Writes oc.csv, "
        "summary.json and tasks/ to --out (rerunning the same command resumes).",
    )
    _design_options(m)
    m.add_argument(
        "--scenario",
        metavar="P1,P2,...",
        help="true DLT probability of each dose, lowest first, each in [0, 1] (required; blrm-combination: "
        "--scenario-file)",
    )
    m.add_argument(
        "--scenario-eff",
        metavar="E1,E2,...",
        help="boin12: true efficacy probability of each dose, lowest first, each in [0, 1] (required with "
        "--design boin12; may plateau or fall)",
    )
    m.add_argument(
        "--allow-non-monotone",
        action="store_true",
        help="accept a scenario whose DLT probability falls with dose (default: refused)",
    )
    m.add_argument("--trials", type=int, default=2000, help="simulated trials (default %(default)s)")
    m.add_argument("--cohort-size", type=int, default=3, help="patients per cohort (default %(default)s)")
    m.add_argument(
        "--cohorts",
        type=int,
        default=10,
        help="cohorts per trial; the maximum sample size is cohorts x cohort size (default %(default)s)",
    )
    m.add_argument(
        "--start-dose", type=int, default=1, help="dose level of the first cohort (default %(default)s)"
    )
    m.add_argument("--out", required=True, help="output folder (rerunning the same command into it resumes)")
    m.add_argument("--seed", type=int, default=0, help="random seed (default %(default)s)")
    m.add_argument(
        "--tasks",
        type=int,
        help="tasks the trials are split into (default: min(8, trials / 250), at least 1)",
    )
    m.add_argument(
        "--workers", type=int, help="worker processes of the local Dask cluster (default: one per core)"
    )
    m.add_argument(
        "--scheduler",
        metavar="tcp://HOST:PORT",
        help="address of a running Dask scheduler to send the work to (default: a local cluster)",
    )
    m.add_argument("--quiet", action="store_true", help="no progress lines")
    gb = m.add_argument_group("blrm (operating characteristics of BLRM + EWOC, grid posterior)")
    gb.add_argument(
        "--doses",
        metavar="D1,D2,...",
        help="blrm: the doses, positive and increasing, one per --scenario value (required with --design blrm)",
    )
    gb.add_argument(
        "--dref",
        metavar="D | D1,D2",
        help="blrm: reference dose d_ref (required with --design blrm); blrm-combination: those of drug 1 and "
        "drug 2",
    )
    gb.add_argument("--prior", metavar="FILE", help="blrm: prior file, as for `bayespk design next`")
    gb.add_argument("--prior-mean", metavar="LA,LB", help="blrm: prior means of log alpha and log beta")
    gb.add_argument("--prior-sd", metavar="S1,S2", help="blrm: prior SDs of log alpha and log beta")
    gb.add_argument("--prior-corr", type=float, help="blrm: prior correlation (default 0)")
    gb.add_argument(
        "--ewoc",
        type=float,
        default=0.25,
        help="blrm: eligible doses have P(pi >= 0.33) below this (default %(default)s)",
    )
    gb.add_argument(
        "--rule",
        choices=("highest", "target"),
        default="highest",
        help="blrm: the next dose is the highest eligible dose, at most one level above the highest given "
        "(highest), or the eligible one with the largest P(0.16 <= pi < 0.33) (target) (default %(default)s)",
    )
    gs = m.add_argument_group("blrm-combination (operating characteristics of a two-drug trial, importance "
                              "sampling posterior)")
    _combination_model_options(gs)
    gs.add_argument(
        "--scenario-file",
        metavar="P.csv",
        help="blrm-combination: true DLT probabilities, one CSV row per dose of drug 1 (lowest first), one "
        "column per dose of drug 2, no header (required with --design blrm-combination)",
    )
    gs.add_argument(
        "--start-pair",
        default="1,1",
        metavar="I,J",
        help="blrm-combination: levels (1-based) of drug 1 and drug 2 of the first cohort (default %(default)s)",
    )
    gs.add_argument(
        "--draws",
        type=int,
        default=20000,
        help="blrm-combination: prior draws of the importance sampler (default %(default)s)",
    )
    gs.add_argument(
        "--min-ess",
        type=int,
        default=1000,
        help="blrm-combination: effective sample size below which adaptive importance-sampling stages follow "
        "(default %(default)s)",
    )


def _combination_model_options(g) -> None:
    g.add_argument("--doses1", metavar="D1,D2,...", help="blrm-combination: dose grid of drug 1, positive, increasing")
    g.add_argument("--doses2", metavar="D1,D2,...", help="blrm-combination: dose grid of drug 2, positive, increasing")
    for k in (1, 2):
        g.add_argument(
            f"--prior{k}",
            metavar="FILE",
            help=f"blrm-combination: prior file of drug {k}'s (log alpha, log beta), as --prior of --design blrm "
            "(default: mean (logit 0.2, 0), SD (2, 1), corr 0)",
        )
        g.add_argument(f"--prior{k}-mean", metavar="LA,LB", help=f"blrm-combination: prior means, drug {k}")
        g.add_argument(f"--prior{k}-sd", metavar="S1,S2", help=f"blrm-combination: prior SDs, drug {k}")
        g.add_argument(f"--prior{k}-corr", type=float, help=f"blrm-combination: prior correlation, drug {k}")
    g.add_argument(
        "--eta-prior",
        metavar="MEAN,SD",
        help="blrm-combination: normal prior of the interaction eta (default 0,1.121)",
    )


COMBINATION_KEYS = ("doses1", "doses2", "prior1", "prior1_mean", "prior1_sd", "prior1_corr", "prior2",
                    "prior2_mean", "prior2_sd", "prior2_corr", "eta_prior", "data", "cohort", "scenario_file")


def _refuse_combination_options(args) -> None:
    from bayespk.design.escalation import DesignError

    for key in COMBINATION_KEYS:
        if getattr(args, key, None) is not None:
            raise DesignError(f"--{key.replace('_', '-')}: only for --design blrm-combination")
    if getattr(args, "method", "nuts") != "nuts":
        raise DesignError("--method: only for --design blrm-combination")


def _require(args, *keys) -> None:
    from bayespk.design.escalation import DesignError

    for key in keys:
        if getattr(args, key, None) is None:
            raise DesignError(f"--{key.replace('_', '-')}: required for --design {args.design}")


def _one_dref(args) -> float:
    from bayespk.design.escalation import DesignError

    v = _floats("--dref", args.dref)
    if len(v) != 1:
        raise DesignError(f"--dref {args.dref!r}: expected one reference dose for --design {args.design}")
    return v[0]


def _ints(option: str, text: str) -> list[int]:
    from bayespk.design.escalation import DesignError

    out = []
    for i, item in enumerate(x.strip() for x in str(text).split(",")):
        try:
            value = float(item)
        except ValueError:
            value = float("nan")
        if not value.is_integer() or value < 0:
            raise DesignError(f"{option} {text!r}: value {i + 1} ({item!r}) is not a whole number >= 0")
        out.append(int(value))
    return out


def _floats(option: str, text: str) -> list[float]:
    from bayespk.design.escalation import DesignError

    out = []
    for i, item in enumerate(x.strip() for x in str(text).split(",")):
        try:
            out.append(float(item))
        except ValueError:
            raise DesignError(f"{option} {text!r}: value {i + 1} ({item!r}) is not a number") from None
    return out


def _design(args, n_max: int):
    from bayespk.design.escalation import DesignError, make_design

    if args.design in ("blrm", "blrm-combination"):
        raise DesignError(
            f"--design {args.design}: `bayespk design {args.design_command}` is not available for the BLRM (a "
            f"model-based design); use `bayespk design next --design {args.design} ...` or `bayespk design "
            f"simulate --design {args.design} ...`"
        )

    if args.design == "boin12":
        return _boin12_design(args, n_max)
    if args.target is None:
        if args.design != "3+3":
            raise DesignError(
                f"--target: required for --design {args.design} (the target DLT probability, e.g. 0.3)"
            )
        args.target = 1 / 3
    return make_design(
        args.design,
        args.target,
        p_saf=args.p_saf,
        p_tox=args.p_tox,
        eps1=args.eps1,
        eps2=args.eps2,
        cutoff_eli=args.cutoff_eli,
        n_max=n_max,
    )


def _boin12_design(args, n_max: int):
    from bayespk.design.boin12 import Boin12, Utility
    from bayespk.design.escalation import DesignError

    for key in ("target", "eff_min"):
        if getattr(args, key) is None:
            what = "the highest acceptable DLT probability, e.g. 0.35" if key == "target" else (
                "the lowest acceptable efficacy probability, e.g. 0.25")
            raise DesignError(f"--{key.replace('_', '-')}: required for --design boin12 ({what})")
    utility = Utility() if args.utility is None else Utility.from_sequence(
        _floats("--utility", args.utility), "--utility")
    return Boin12(
        args.target,
        args.eff_min,
        utility,
        cutoff_tox=args.cutoff_eli,
        cutoff_eff=args.cutoff_eff,
        n_star=args.n_star,
        n_explore=args.n_explore,
        p_saf=args.p_saf,
        p_tox=args.p_tox,
        n_max=n_max,
    )


def _refuse_boin12_options(args) -> None:
    from bayespk.design.escalation import DesignError

    for key in ("eff_min", "utility", "eff", "both", "scenario_eff"):
        if getattr(args, key, None) is not None:
            raise DesignError(f"--{key.replace('_', '-')}: only for --design boin12")


def _simulation_options(args) -> dict:
    """The keywords every design's trial simulation takes from the command line (trials, cohorts, seed,
    output folder, Dask runner, progress)."""
    return {"trials": args.trials, "cohort_size": args.cohort_size, "cohorts": args.cohorts, "seed": args.seed,
            "out": args.out, "tasks": args.tasks, "scheduler": args.scheduler, "workers": args.workers,
            "progress": False if args.quiet else None}


def _fmt(v) -> str:
    return "NA" if v is None else str(v)


def _print_rows(rows: list[dict]) -> None:
    labels = [
        ("n", "Number of patients treated"),
        ("escalate_if_dlt_le", "Escalate if # of DLT <="),
        ("deescalate_if_dlt_ge", "Deescalate if # of DLT >="),
        ("eliminate_if_dlt_ge", "Eliminate if # of DLT >="),
    ]
    if "futile_if_eff_le" in rows[0]:
        labels.append(("futile_if_eff_le", "Futile if # of resp. <="))
    width = max(len(_fmt(r[k])) for r in rows for k, _ in labels)
    for key, label in labels:
        print(f"{label:<27}" + " ".join(f"{_fmt(r[key]):>{width}}" for r in rows))


def _write_rows(path: str, rows: list[dict]) -> None:
    import csv

    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=list(rows[0]))
        w.writeheader()
        for r in rows:
            w.writerow({k: ("" if v is None else v) for k, v in r.items()})


def _boundaries(args) -> int:
    from bayespk.design.escalation import DesignError, ThreePlusThree, _check_count

    _check_count("--cohort-size", args.cohort_size, 1)
    _check_count("--n-max", args.n_max, 1)
    if args.cohort_size > args.n_max:
        raise DesignError(
            f"--cohort-size {args.cohort_size} > --n-max {args.n_max}: the table would be empty"
        )
    design = _design(args, args.n_max)
    if isinstance(design, ThreePlusThree):
        print("3+3 rule (cohorts of 3; the target is not used):")
        rows = [
            {"n": 3, "escalate_if_dlt_le": 0, "deescalate_if_dlt_ge": 2, "eliminate_if_dlt_ge": 2},
            {"n": 6, "escalate_if_dlt_le": 1, "deescalate_if_dlt_ge": 2, "eliminate_if_dlt_ge": 2},
        ]
        _print_rows(rows)
        print(
            "1 DLT of 3: treat 3 more at the same dose. A dose with >= 2 DLTs exceeds the MTD and is not "
            "given again; the MTD is the highest dose below it with <= 1 DLT in 6 patients."
        )
    elif design.name == "boin12":
        t = design.table
        print(
            f"BOIN12, toxicity target {t.target:g} (lambda_e = {t.lambda_e:.4f}, lambda_d = {t.lambda_d:.4f}), "
            f"lowest efficacy {design.eff_min:g}, benchmark utility u_b = {design.benchmark:g}; eliminate when "
            f"P(p_tox > {t.target:g}) > {design.cutoff_tox:g} or P(p_eff < {design.eff_min:g}) > "
            f"{design.cutoff_eff:g}, n >= 3"
        )
        rows = t.rows(args.cohort_size)
        for r in rows:
            e = next((y for y in range(r["n"], -1, -1) if design.futile(r["n"], y)), None)
            r["futile_if_eff_le"] = e
        _print_rows(rows)
    elif design.name == "boin":
        t = design.table
        print(
            f"BOIN, target {t.target:g} (p_saf {t.p_saf:g}, p_tox {t.p_tox:g}): "
            f"lambda_e = {t.lambda_e:.4f}, lambda_d = {t.lambda_d:.4f}; "
            f"eliminate when P(p > {t.target:g} | data) > {t.cutoff_eli:g}, n >= 3"
        )
        rows = t.rows(args.cohort_size)
        _print_rows(rows)
    else:
        t = design.table
        lo, hi = t.target - t.eps1, t.target + t.eps2
        print(
            f"mTPI-2, target {t.target:g}, equivalence interval [{lo:g}, {hi:g}]; DU (eliminate) when "
            f"P(p > {t.target:g} | data) > {t.cutoff_eli:g}, n >= 3"
        )
        rows = t.rows(args.cohort_size)
        _print_rows(rows)
        ns = [r["n"] for r in rows]
        print("\nDecision by # of DLT (rows) and patients treated (columns):")
        print(f"{'DLT':>4} " + " ".join(f"{n:>3}" for n in ns))
        for y in range(max(ns) + 1):
            print(f"{y:>4} " + " ".join(f"{(t.decisions[n][y] if y <= n else ''):>3}" for n in ns))
    if args.out:
        _write_rows(args.out, rows)
        print(f"\nwrote {args.out}")
    return 0


def _next(args) -> int:
    from bayespk.design.escalation import DesignError, next_dose

    if args.design == "blrm-combination":
        return _next_combination(args)
    _refuse_combination_options(args)
    _require(args, "doses", "treated", "dlt")
    if args.design == "blrm":
        return _next_blrm(args)
    if args.design == "boin12":
        return _next_boin12(args)
    _refuse_boin12_options(args)
    for key in ("dref", "prior", "prior_mean", "prior_sd", "prior_corr", "max_step"):
        if getattr(args, key) is not None:
            raise DesignError(f"--{key.replace('_', '-')}: only for --design blrm")
    try:
        doses = int(args.doses)
    except ValueError:
        raise DesignError(
            f"--doses {args.doses!r}: expected the number of dose levels for --design {args.design} "
            "(a list of doses is for --design blrm)"
        ) from None
    if args.current is None:
        raise DesignError(
            f"--current: required for --design {args.design} (the dose level of the last cohort)"
        )
    try:
        current = int(args.current)
    except ValueError:
        raise DesignError(f"--current {args.current!r}: expected a dose level (a whole number)") from None
    n = _ints("--treated", args.treated)
    y = _ints("--dlt", args.dlt)
    design = _design(args, max(100, max(n, default=0)))
    result = next_dose(design, doses, n, y, current)
    if args.json:
        print(
            json.dumps(
                {
                    "action": result.action,
                    "dose": result.dose,
                    "current": result.current,
                    "decision": result.decision,
                    "reason": result.reason,
                    "eliminated": list(result.eliminated),
                },
                indent=1,
            )
        )
    else:
        print(result)
    return 0


def _next_boin12(args) -> int:
    from bayespk.design.boin12 import boin12_next_dose
    from bayespk.design.escalation import DesignError

    for key in ("dref", "prior", "prior_mean", "prior_sd", "prior_corr"):
        if getattr(args, key) is not None:
            raise DesignError(f"--{key.replace('_', '-')}: only for --design blrm")
    if args.eff is None:
        raise DesignError("--eff: required for --design boin12 (patients with an efficacy response per dose)")
    try:
        doses = int(args.doses)
    except ValueError:
        raise DesignError(f"--doses {args.doses!r}: expected the number of dose levels for --design boin12") from None
    if args.current is None:
        raise DesignError("--current: required for --design boin12 (the dose level of the last cohort)")
    try:
        current = int(args.current)
    except ValueError:
        raise DesignError(f"--current {args.current!r}: expected a dose level (a whole number)") from None
    n = _ints("--treated", args.treated)
    design = _design(args, max(100, max(n, default=0)))
    both = None if args.both is None else _ints("--both", args.both)
    r = boin12_next_dose(design, doses, n, _ints("--dlt", args.dlt), _ints("--eff", args.eff), current, both)
    if args.json:
        print(json.dumps(r.to_dict(), indent=1))
        return 0
    print(r)
    scores = ", ".join(
        f"{j + 1}: {'eliminated' if j + 1 in r.eliminated else f'{s:.3f}'}" for j, s in enumerate(r.desirability)
    )
    print(f"desirability P(u > u_b = {r.benchmark:g}) by dose: {scores}")
    print(f"OBD if the trial ended now: {'none' if r.obd is None else f'dose {r.obd}'}")
    return 0


def _blrm_prior(args, key: str = "prior"):
    """The prior of (log alpha, log beta) from ``--KEY FILE`` or ``--KEY-mean/-sd/-corr`` (None: not given)."""
    from bayespk.design.blrm import BVNMixture, read_blrm_prior
    from bayespk.design.escalation import DesignError

    opt = "--" + key
    path = getattr(args, key)
    mean, sds, corr = (getattr(args, f"{key}_{k}") for k in ("mean", "sd", "corr"))
    inline = [f"{opt}-{k}" for k, v in (("mean", mean), ("sd", sds), ("corr", corr)) if v is not None]
    if path and inline:
        raise DesignError(f"{opt} and {inline[0]}: give the prior one way, not both")
    if path:
        try:
            return read_blrm_prior(path)
        except DesignError as e:
            msg = str(e)
            if msg.startswith("--prior "):
                msg = opt + msg[len("--prior"):]
            else:
                msg = f"{opt} {path}: {msg}"
            raise DesignError(msg) from None
    if not inline:
        return None
    if mean is None or sds is None:
        raise DesignError(f"{opt}-mean and {opt}-sd: give both (means and SDs of log alpha and log beta)")
    m = _floats(f"{opt}-mean", mean)
    sd = _floats(f"{opt}-sd", sds)
    for name, v in ((f"{opt}-mean", m), (f"{opt}-sd", sd)):
        if len(v) != 2:
            raise DesignError(f"{name}: expected 2 values (log alpha, log beta), got {len(v)}")
    for i, v in enumerate(sd):
        if not v > 0:
            raise DesignError(f"{opt}-sd: value {i + 1} ({v:g}) must be > 0")
    r = 0.0 if corr is None else corr
    if not -1 < r < 1:
        raise DesignError(f"{opt}-corr {r:g}: the correlation must lie in (-1, 1)")
    return BVNMixture.single(m, sd, r)


def _next_blrm(args) -> int:
    from bayespk.design.escalation import DesignError

    if args.target is not None:
        raise DesignError(
            "--target: not used by --design blrm (its intervals are [0, 0.16), [0.16, 0.33), [0.33, 1])"
        )
    if args.dref is None:
        raise DesignError("--dref: required for --design blrm (the reference dose d_ref)")
    from bayespk.design.blrm import blrm_posterior, check_doses, ewoc_decision

    doses, d_ref = check_doses(_floats("--doses", args.doses), _one_dref(args))
    n = _ints("--treated", args.treated)
    y = _ints("--dlt", args.dlt)
    current = None
    if args.current is not None:
        current = _floats("--current", args.current)
        if len(current) != 1:
            raise DesignError(f"--current {args.current!r}: expected one dose")
        current = current[0]
    prior = _blrm_prior(args)
    from bayespk.design.escalation import _check_count

    _check_count("--draws", args.draws, 100)
    _check_count("--seed", args.seed, 0)
    post = blrm_posterior(doses, d_ref, n, y, prior, draws=args.draws, seed=args.seed)
    max_step = 2.0 if args.max_step is None else args.max_step
    dec = ewoc_decision(post, ewoc=args.ewoc, max_step=max_step, current=current, rule=args.rule)
    tab = dec.table
    if args.json:
        print(
            json.dumps(
                {
                    "dose": dec.dose,
                    "level": dec.level,
                    "reason": dec.reason,
                    "prior": post.prior.to_dict(),
                    "table": json.loads(tab.to_json(orient="records")),
                    "divergences": post.settings["divergences"],
                },
                indent=1,
            )
        )
        return 0
    print(
        f"BLRM (Neuenschwander et al. 2008), d_ref = {d_ref:g}; "
        f"prior of (log alpha, log beta): {post.prior!r}"
    )
    print(
        f"posterior: {post.settings['chains']} chains x {post.settings['draws']} draws, "
        f"{post.settings['divergences']} divergences\n"
    )
    head = (
        f"{'dose':>8} {'n':>3} {'DLT':>3} {'P(<0.16)':>9} {'P(0.16-0.33)':>12} {'P(>=0.33)':>9} "
        f"{'mean':>6} {'q2.5':>6} {'q50':>6} {'q97.5':>6}  eligible"
    )
    print(head)
    for _, row in tab.iterrows():
        v = row.to_numpy()
        ok = "yes" if row["eligible"] else ("no (overdose)" if not row["ewoc_ok"] else "no (step)")
        print(
            f"{v[0]:>8g} {int(v[1]):>3d} {int(v[2]):>3d} {v[3]:>9.3f} {v[4]:>12.3f} {v[5]:>9.3f} "
            f"{v[6]:>6.3f} "
            f"{v[8]:>6.3f} {v[9]:>6.3f} {v[10]:>6.3f}  {ok}"
        )
    print()
    print(dec)
    return 0


def _simulate(args) -> int:
    from bayespk.design.simulation import check_scenario, operating_characteristics

    if args.design == "blrm-combination":
        return _simulate_combination(args)
    _refuse_combination_options(args)
    _require(args, "scenario")
    if args.design == "boin12":
        return _simulate_boin12(args)
    if args.design == "blrm":
        return _simulate_blrm(args)
    _refuse_boin12_options(args)
    _refuse_blrm_simulation_options(args)

    p = check_scenario(_floats("--scenario", args.scenario), args.allow_non_monotone)
    from bayespk.design.escalation import _check_count

    _check_count("--cohort-size", args.cohort_size, 1)
    _check_count("--cohorts", args.cohorts, 1)
    design = _design(args, args.cohort_size * args.cohorts)
    oc = operating_characteristics(
        design,
        p,
        start_dose=args.start_dose,
        allow_non_monotone=args.allow_non_monotone,
        **_simulation_options(args),
    )
    out = Path(args.out)
    oc.write_csv(out / "oc.csv")
    (out / "summary.json").write_text(
        json.dumps(
            {
                **oc.summary(),
                "scenario": list(oc.scenario),
                "select_pct": list(oc.select_pct),
                "patients": list(oc.patients),
                "dlts": list(oc.dlts),
            },
            indent=1,
        ),
        encoding="utf-8",
    )
    print(oc)
    print(f"\nwrote {out / 'oc.csv'} and {out / 'summary.json'}")
    return 0


def _refuse_blrm_simulation_options(args) -> None:
    from bayespk.design.escalation import DesignError

    for key in ("doses", "dref", "prior", "prior_mean", "prior_sd", "prior_corr"):
        if getattr(args, key, None) is not None:
            raise DesignError(f"--{key.replace('_', '-')}: only for --design blrm")


def _simulate_blrm(args) -> int:
    from bayespk.design.blrm_simulation import blrm_operating_characteristics
    from bayespk.design.escalation import DesignError, _check_count

    _refuse_boin12_options(args)
    if args.target is not None:
        raise DesignError(
            "--target: not used by --design blrm (its intervals are [0, 0.16), [0.16, 0.33), [0.33, 1])"
        )
    for key in ("doses", "dref"):
        if getattr(args, key) is None:
            raise DesignError(f"--{key}: required for --design blrm")
    _check_count("--cohort-size", args.cohort_size, 1)
    _check_count("--cohorts", args.cohorts, 1)
    oc = blrm_operating_characteristics(
        _floats("--doses", args.doses),
        _one_dref(args),
        _floats("--scenario", args.scenario),
        _blrm_prior(args),
        start_dose=args.start_dose,
        ewoc=args.ewoc,
        rule=args.rule,
        **_simulation_options(args),
    )
    out = Path(args.out)
    oc.write_csv(out / "oc.csv")
    summary = {**oc.summary(), **{k: list(getattr(oc, k)) for k in ("doses", "scenario", "select_pct", "patients",
                                                                     "dlts")}}
    (out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print(oc)
    print(f"\nwrote {out / 'oc.csv'} and {out / 'summary.json'}")
    return 0


def _simulate_boin12(args) -> int:
    from bayespk.design.boin12 import boin12_operating_characteristics
    from bayespk.design.escalation import DesignError, _check_count

    if args.scenario_eff is None:
        raise DesignError("--scenario-eff: required for --design boin12 (the true efficacy probability per dose)")
    _check_count("--cohort-size", args.cohort_size, 1)
    _check_count("--cohorts", args.cohorts, 1)
    design = _design(args, max(100, args.cohort_size * args.cohorts))
    oc = boin12_operating_characteristics(
        design,
        _floats("--scenario", args.scenario),
        _floats("--scenario-eff", args.scenario_eff),
        start_dose=args.start_dose,
        **_simulation_options(args),
    )
    out = Path(args.out)
    oc.write_csv(out / "oc.csv")
    summary = {**oc.summary(), **{k: list(getattr(oc, k)) for k in (
        "p_tox", "p_eff", "true_utility", "select_pct", "patients", "dlts", "responses")}}
    (out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print(oc)
    print(f"\nwrote {out / 'oc.csv'} and {out / 'summary.json'}")
    return 0


def _combination_model(args):
    """Grids, reference doses, priors and eta prior of ``--design blrm-combination`` from the options."""
    from bayespk.design.blrm_combination import check_grid
    from bayespk.design.escalation import DesignError

    _refuse_boin12_options(args)
    if args.target is not None:
        raise DesignError(
            "--target: not used by --design blrm-combination (its intervals are [0, 0.16), [0.16, 0.33), [0.33, 1])"
        )
    for key in ("prior", "prior_mean", "prior_sd", "prior_corr"):
        if getattr(args, key, None) is not None:
            k = key.replace("_", "-")
            raise DesignError(f"--{k}: for --design blrm; blrm-combination has --{k.replace('prior', 'prior1')} "
                              f"and --{k.replace('prior', 'prior2')}")
    _require(args, "doses1", "doses2", "dref")
    g1 = check_grid("--doses1", _floats("--doses1", args.doses1))
    g2 = check_grid("--doses2", _floats("--doses2", args.doses2))
    ref = _floats("--dref", args.dref)
    if len(ref) != 2:
        raise DesignError(f"--dref {args.dref!r}: expected the reference doses of drug 1 and drug 2, e.g. 4,20")
    for i, v in enumerate(ref):
        if not v > 0:
            raise DesignError(f"--dref: value {i + 1} ({v:g}) must be > 0")
    eta = (0.0, 1.121)
    if args.eta_prior is not None:
        eta = _floats("--eta-prior", args.eta_prior)
        if len(eta) != 2:
            raise DesignError(f"--eta-prior {args.eta_prior!r}: expected MEAN,SD")
        if not eta[1] > 0:
            raise DesignError(f"--eta-prior: the SD ({eta[1]:g}) must be > 0")
    return g1, g2, tuple(ref), _blrm_prior(args, "prior1"), _blrm_prior(args, "prior2"), tuple(eta)


def _combination_rows(args):
    """Data rows of ``--data FILE`` then of each ``--cohort D1,D2,N,R``."""
    from bayespk.design.blrm_combination import CombinationData
    from bayespk.design.escalation import DesignError

    rows = []
    if args.data is not None:
        import pandas as pd

        path = Path(args.data)
        if not path.is_file():
            raise DesignError(f"--data {path}: no such file")
        try:
            frame = pd.read_csv(path, comment="#")
        except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
            raise DesignError(f"--data {path}: not a CSV file ({e})") from None
        frame.columns = [str(c).strip() for c in frame.columns]
        missing = [c for c in ("d1", "d2", "n", "r") if c not in frame.columns]
        if missing:
            raise DesignError(f"--data {path}: missing column(s) {', '.join(missing)}; needs d1, d2, n, r")
        rows += [tuple(r) for r in frame[["d1", "d2", "n", "r"]].itertuples(index=False, name=None)]
    for text in args.cohort or []:
        v = _floats("--cohort", text)
        if len(v) != 4:
            raise DesignError(f"--cohort {text!r}: expected D1,D2,N,R (4 values), got {len(v)}")
        rows.append(tuple(v))
    if not rows:
        raise DesignError("--data or --cohort: required for --design blrm-combination (patients and DLTs per dose "
                          "pair)")
    return CombinationData.from_rows(rows)


def _next_combination(args) -> int:
    from bayespk.design.blrm_combination import (
        combination_ewoc,
        combination_is_posterior,
        combination_posterior,
        grid_counts,
    )
    from bayespk.design.escalation import DesignError, _check_count

    for key in ("doses", "treated", "dlt", "current"):
        if getattr(args, key) is not None:
            raise DesignError(f"--{key}: not used by --design blrm-combination (give --doses1, --doses2 and "
                              "--data or --cohort)")
    g1, g2, ref, p1, p2, eta = _combination_model(args)
    data = _combination_rows(args)
    n, r = grid_counts(data, g1, g2)
    _check_count("--draws", args.draws, 100)
    _check_count("--seed", args.seed, 0)
    if args.method == "is":
        post = combination_is_posterior(data, ref, p1, p2, eta, seed=args.seed)
    else:
        post = combination_posterior(data, ref, p1, p2, eta, draws=args.draws, chains=4, seed=args.seed)
    step = "level" if args.max_step is None else "ratio"
    dec = combination_ewoc(post, g1, g2, ewoc=args.ewoc, max_step=args.max_step, step=step)
    tab = dec.table
    tab.insert(2, "n", n.ravel())
    tab.insert(3, "dlt", r.ravel())
    rule = (f"eligible pairs have P(pi >= 0.33) < {args.ewoc:g} and "
            + ("are at most one level above a pair given (d1 or d2, not both)" if step == "level" else
               f"each dose <= {args.max_step:g} x the highest dose of that drug given")
            + "; the next pair is the eligible one with the largest P(0.16 <= pi < 0.33)")
    if args.method == "is":
        fit = (f"importance sampling, {post.settings['draws']} draws, ESS {post.settings['ess']:.0f}"
               + (" (adaptive stage used)" if post.settings["stage"] else ""))
    else:
        fit = (f"NUTS, {post.settings['chains']} chains x {post.settings['draws']} draws, "
               f"{post.settings['divergences']} divergences")
    if args.json:
        print(json.dumps({
            "dose": None if dec.dose is None else list(dec.dose), "reason": dec.reason, "rule": rule,
            "method": args.method, "posterior": fit, "d_ref": list(ref),
            "priors": [post.priors[0].to_dict(), post.priors[1].to_dict()], "eta_prior": list(post.eta_prior),
            "table": json.loads(tab.to_json(orient="records")),
        }, indent=1))
        return 0
    print(f"combination BLRM (Neuenschwander et al. 2015), d_ref = ({ref[0]:g}, {ref[1]:g}); eta ~ "
          f"Normal({post.eta_prior[0]:g}, {post.eta_prior[1]:g})")
    print(f"prior drug 1: {post.priors[0]!r}\nprior drug 2: {post.priors[1]!r}")
    print(f"posterior: {fit}\n")
    print(f"{'d1':>8} {'d2':>8} {'n':>3} {'DLT':>3} {'P(<0.16)':>9} {'P(0.16-0.33)':>12} {'P(>=0.33)':>9} "
          f"{'mean':>6} {'q2.5':>6} {'q50':>6} {'q97.5':>6}  eligible")
    for _, row in tab.iterrows():
        ok = "yes" if row["eligible"] else ("no (overdose)" if not row["ewoc_ok"] else "no (step)")
        print(f"{row['d1']:>8g} {row['d2']:>8g} {int(row['n']):>3d} {int(row['dlt']):>3d} {row['P(<0.16)']:>9.3f} "
              f"{row['P(0.16-0.33)']:>12.3f} {row['P(>=0.33)']:>9.3f} {row['mean']:>6.3f} {row['q2.5']:>6.3f} "
              f"{row['q50']:>6.3f} {row['q97.5']:>6.3f}  {ok}")
    print(f"\nrule: {rule}")
    print(dec)
    return 0


def _simulate_combination(args) -> int:
    from bayespk.design.blrm_combination import combination_operating_characteristics, read_combination_scenario
    from bayespk.design.escalation import DesignError, _check_count

    for key in ("doses", "scenario"):
        if getattr(args, key) is not None:
            raise DesignError(f"--{key}: not used by --design blrm-combination (give --doses1, --doses2 and "
                              "--scenario-file)")
    g1, g2, ref, p1, p2, eta = _combination_model(args)
    _require(args, "scenario_file")
    scenario = read_combination_scenario(args.scenario_file)
    start = _ints("--start-pair", args.start_pair)
    if len(start) != 2:
        raise DesignError(f"--start-pair {args.start_pair!r}: expected I,J (levels of drug 1 and drug 2)")
    _check_count("--cohort-size", args.cohort_size, 1)
    _check_count("--cohorts", args.cohorts, 1)
    oc = combination_operating_characteristics(
        g1, g2, ref, scenario, p1, p2, eta, start=tuple(start), ewoc=args.ewoc, draws=args.draws,
        min_ess=args.min_ess, allow_non_monotone=args.allow_non_monotone, **_simulation_options(args),
    )
    out = Path(args.out)
    oc.write_csv(out / "oc.csv")
    summary = {**oc.summary(), **{k: [list(r) for r in getattr(oc, k)] for k in (
        "scenario", "select_pct", "patients", "dlts")}, "doses1": list(oc.doses1), "doses2": list(oc.doses2)}
    (out / "summary.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
    print(oc)
    print(f"\nwrote {out / 'oc.csv'} and {out / 'summary.json'}")
    return 0


def run(args) -> int:
    """Dispatch ``bayespk design SUBCOMMAND``."""
    return {"boundaries": _boundaries, "next": _next, "simulate": _simulate}[args.design_command](args)
