"""``bayespk prior ...``: build, robustify and inspect prior files from the command line.

::

    bayespk prior map --family binomial --data HIST.csv [--tau-prior "HalfNormal(sigma=1)"] --out PRIOR.json
    bayespk prior robustify PRIOR.json --weight 0.2 [--mean 0.5] --out ROBUST.json
    bayespk prior show PRIOR.json

HIST.csv columns: binomial ``study,n,r``; normal ``study,y,se`` (optionally
``n``; ``y_se`` or ``y.se``, RBesT's names, are read as ``se``);
poisson ``study,y,exposure``; plus covariate columns named with
``--covariate COL=VALUE`` (VALUE: the new study's value). User errors raise
:class:`~bayespk.errors.BayesPKError` subclasses, which ``bayespk`` prints as
one paragraph and exits with status 2.
"""

from __future__ import annotations

import argparse
import re
import sys
import warnings
from pathlib import Path

__all__ = ["add_parser", "parse_prior", "run"]


def parse_prior(text: str, option: str = "--tau-prior"):
    """Parse ``"HalfNormal(sigma=1)"``, ``"HalfNormal(1)"`` or ``"Normal(0, 2)"`` into a :class:`~bayespk.Prior`.

    Positional values fill the distribution's parameters in order.

    Examples
    --------
    >>> parse_prior("HalfNormal(0.5)")
    Prior('HalfNormal', sigma=0.5)
    >>> parse_prior("Normal(mu=0, sigma=2)")
    Prior('Normal', mu=0, sigma=2)
    """
    from bayespk.errors import SpecError
    from bayespk.model.priors import ALLOWED, Prior

    m = re.fullmatch(r"\s*([A-Za-z]+)\s*\((.*)\)\s*", text or "")
    if not m:
        raise SpecError(f"{option}: expected a distribution like HalfNormal(sigma=1) or HalfNormal(1), got {text!r}")
    dist, body = m.group(1), m.group(2).strip()
    if dist not in ALLOWED:
        raise SpecError(f"{option}: unknown distribution {dist!r}; use one of {', '.join(ALLOWED)}")
    names = ALLOWED[dist][0] + ALLOWED[dist][1]
    params: dict[str, float] = {}
    parts = [p.strip() for p in body.split(",")] if body else []
    for i, part in enumerate(parts):
        key, _, val = part.rpartition("=")
        key = key.strip()
        if not key:
            if i >= len(names):
                raise SpecError(f"{option}: {dist} takes {len(names)} parameter(s) ({', '.join(names)}), got {text!r}")
            key = names[i]
        try:
            params[key] = float(val)
        except ValueError:
            raise SpecError(f"{option}: {key} = {val.strip()!r} is not a number") from None
    return Prior(dist, where=option, **params)


def add_parser(subparsers) -> argparse.ArgumentParser:
    """Register ``prior`` and its subcommands on the main parser's subparsers."""
    p = subparsers.add_parser("prior", help="MAP / robust priors from historical data; prior files",
                              description="Build, robustify and inspect prior files (bayespk.borrowing).")
    sub = p.add_subparsers(dest="prior_command", required=True)

    m = sub.add_parser("map", help="meta-analytic-predictive prior from historical studies",
                       description="Fit the random-effects MAP model (NUTS), approximate the predictive by a "
                                   "conjugate mixture and write a prior file with its summary and ESS.")
    m.add_argument("--family", required=True, choices=["binomial", "normal", "poisson"],
                   help="likelihood of the historical studies: binomial (responders r of n), normal (estimate y "
                        "with standard error se) or poisson (count y over exposure)")
    m.add_argument("--data", required=True, help="CSV: binomial study,n,r; normal study,y,se[,n] (se, y_se or y.se); "
                                                 "poisson study,y,exposure")
    m.add_argument("--out", required=True, help="prior file (JSON) to write")
    m.add_argument("--tau-prior", help="prior of the between-study SD on the link scale, e.g. "
                                       "'HalfNormal(sigma=1)' (default: HalfNormal(1) binomial/poisson, "
                                       "HalfNormal(sigma/2) normal)")
    m.add_argument("--beta-prior", help="prior of the intercept on the link scale, e.g. 'Normal(0, 2)' (default: "
                                        "Normal(0, 2) binomial, Normal(log pooled rate, 2) poisson, Normal(mean of "
                                        "y, 10 sigma) normal)")
    m.add_argument("--sigma", type=float, help="normal: SD of one observation (default: pooled from n and se)")
    m.add_argument("--log", action="store_true",
                   help="normal: y are estimates of a positive parameter with SE se; model log(y) with SE "
                        "se/y (delta method) and write a prior on the log scale, usable as a spec's typical prior")
    m.add_argument("--parameter", help="name of what the prior is for (recorded in the file), e.g. CL (default: "
                                       "none recorded)")
    m.add_argument("--covariate", action="append", default=[], metavar="COL=VALUE",
                   help="study-level covariate column and the new study's value (repeatable; default: none)")
    m.add_argument("--max-components", type=int, default=4,
                   help="most components of the mixture that approximates the MAP prior (default %(default)s)")
    m.add_argument("--criterion", choices=["AIC", "BIC"], default="AIC",
                   help="how the number of mixture components is chosen (default %(default)s)")
    m.add_argument("--draws", type=int, default=2000, help="NUTS draws per chain (default %(default)s)")
    m.add_argument("--tune", type=int, default=1000, help="NUTS tuning steps per chain (default %(default)s)")
    m.add_argument("--chains", type=int, default=4, help="NUTS chains (default %(default)s)")
    m.add_argument("--seed", type=int, help="random seed (default: drawn and recorded in the file)")

    r = sub.add_parser("robustify", help="add a vague component to a prior file")
    r.add_argument("prior", help="prior file (JSON)")
    r.add_argument("--weight", type=float, required=True, help="weight of the vague component, in (0, 1)")
    r.add_argument("--mean", type=float, help="its mean (default 1/2 for beta, the prior mean otherwise)")
    r.add_argument("--n", type=float, help="observations it is worth (default 1: unit information)")
    r.add_argument("--sd", type=float, help="normal only: its SD, instead of sigma/sqrt(n)")
    r.add_argument("--out", required=True, help="robustified prior file (JSON) to write")

    s = sub.add_parser("show", help="print a prior file's components, summary and ESS")
    s.add_argument("prior", help="prior file (JSON) written by `bayespk prior map` or `robustify`")
    return p


def run(args) -> int:
    """Run ``bayespk prior <subcommand>``; user errors propagate as BayesPKError."""
    return {"map": _map, "robustify": _robustify, "show": _show}[args.prior_command](args)


def _print_prior(mix, doc: dict) -> None:
    import pandas as pd

    with pd.option_context("display.float_format", "{:.4g}".format, "display.width", 120):
        print(f"{doc['family']} mixture on the {doc['scale']} scale"
              + (f" (prior for {doc['parameter']})" if doc.get("parameter") else "") + ":")
        print(mix.components.to_string())
    summ = ", ".join(f"{k} {v:.4g}" for k, v in doc["summary"].items())
    print(f"summary: {summ}")
    if doc.get("summary_natural"):
        print("natural scale: " + ", ".join(f"{k} {v:.4g}" for k, v in doc["summary_natural"].items()))
    ess = ", ".join(f"{k} {v:.1f}" if v is not None else f"{k} n/a" for k, v in doc["ess"].items())
    print(f"ESS ({doc['ess_unit']}): {ess}")
    for k, note in doc.get("ess_notes", {}).items():
        print(f"  ({k}: {note})")


def _map(args) -> int:
    import numpy as np
    import pandas as pd

    import bayespk
    from bayespk.borrowing.map_prior import fit_map, validate_historical
    from bayespk.borrowing.prior_file import prior_document, write_prior
    from bayespk.errors import ConvergenceWarning, DataError, SpecError

    for k in ("draws", "tune", "chains", "max_components"):
        v = getattr(args, k)
        if v < 1:
            raise SpecError(f"--{k.replace('_', '-')} must be >= 1, got {v}")
    tau = parse_prior(args.tau_prior, "--tau-prior") if args.tau_prior else None
    beta = parse_prior(args.beta_prior, "--beta-prior") if args.beta_prior else None
    covs: dict[str, float] = {}
    for c in args.covariate:
        if "=" not in c:
            raise SpecError(f"--covariate {c!r}: expected COL=VALUE (the new study's value of column COL)")
        k, v = c.split("=", 1)
        try:
            covs[k.strip().lower()] = float(v)
        except ValueError:
            raise SpecError(f"--covariate {c!r}: {v!r} is not a number") from None
    if args.log and args.family != "normal":
        raise SpecError("--log applies to --family normal (estimates of a positive parameter)")
    data = validate_historical(args.data, args.family, list(covs))
    scale = "natural"
    if args.log:
        bad = data.y <= 0
        if bad.any():
            i = int(np.argmax(bad.to_numpy()))
            raise DataError(f"{args.data}: row {i + 1}, column y (study {data.study.iloc[i]}): {data.y.iloc[i]:g} "
                            "must be > 0 with --log")
        data = data.assign(se=data.se / data.y, y=np.log(data.y))
        scale = "log"
    print(f"{args.data}: {len(data)} studies ({args.family}); fitting the MAP model ...", flush=True)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        fit = fit_map(data, args.family, tau_prior=tau, beta_prior=beta, covariates=list(covs),
                      new_covariates=covs or None, sigma=args.sigma, scale=scale, draws=args.draws,
                      tune=args.tune, chains=args.chains, seed=args.seed)
    mix = fit.mixture(max_components=args.max_components, criterion=args.criterion)
    summary = fit.summary()
    d = fit.diagnostics()
    source = {
        "kind": "MAP prior", "data": str(Path(args.data).resolve()), "family": args.family,
        "link": {"binomial": "logit", "normal": "identity", "poisson": "log"}[args.family],
        "log_transformed": bool(args.log), "tau_prior": fit.tau_prior.to_dict(), "beta_prior": fit.beta_prior.to_dict(),
        "covariates": covs, "sigma": fit.sigma, "n_studies": len(data),
        "tau": {k: float(summary.loc["tau", k]) for k in ("mean", "sd", "median")},
        "map_sample": {"mean": float(np.mean(fit.sample)), "sd": float(np.std(fit.sample, ddof=1)),
                       "n": int(fit.sample.size)},
        "mixture_fit": mix.info.get("fit", {}), "diagnostics": d, "bayespk": bayespk.__version__,
    }
    write_prior(args.out, mix, scale=scale, parameter=args.parameter, source=source)
    with pd.option_context("display.float_format", "{:.4g}".format, "display.width", 120):
        print(summary.to_string())
    print(f"\n{d['chains']} chains x {d['draws']} draws (seed {d['seed']}): divergences {d['divergences']}, "
          f"max R-hat {d['max_r_hat']:.3f}, min bulk ESS {d['min_ess_bulk']:.0f}")
    k = mix.info.get("fit", {}).get("chosen_K")
    print(f"\nmixture approximation ({k} component(s), by {args.criterion}):")
    _print_prior(mix, prior_document(mix, scale=scale, parameter=args.parameter))
    for w in caught:
        if issubclass(w.category, ConvergenceWarning):
            print(f"\nWARNING: {w.message}", file=sys.stderr)
    print(f"\nwrote {args.out}")
    return 0


def _robustify(args) -> int:
    from bayespk.borrowing.mixtures import NormalMixture
    from bayespk.borrowing.prior_file import prior_document, read_prior, write_prior
    from bayespk.errors import SpecError

    mix, doc = read_prior(args.prior)
    if args.sd is not None and not isinstance(mix, NormalMixture):
        raise SpecError("--sd applies to normal mixtures only; use --n for beta and gamma")
    if isinstance(mix, NormalMixture) and args.sd is not None:
        rob = mix.robustify(args.weight, args.mean, args.n, sd=args.sd)
    else:
        rob = mix.robustify(args.weight, args.mean, args.n)
    source = dict(doc.get("source") or {})
    source["robustified_from"] = str(Path(args.prior).resolve())
    write_prior(args.out, rob, scale=doc.get("scale", "natural"), parameter=doc.get("parameter"), source=source)
    _print_prior(rob, prior_document(rob, scale=doc.get("scale", "natural"), parameter=doc.get("parameter")))
    print(f"\nwrote {args.out}")
    return 0


def _show(args) -> int:
    from bayespk.borrowing.prior_file import read_prior

    mix, doc = read_prior(args.prior)
    _print_prior(mix, doc)
    return 0
