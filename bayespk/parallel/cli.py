"""``bayespk sbc | kfold | simest | covsearch``: workloads of many fits on Dask, from the command line.

Each writes its results into ``--out`` as tasks finish; rerunning the same
command resumes (finished tasks are skipped). ``--scheduler tcp://HOST:PORT``
sends the work to a running Dask cluster; otherwise a local cluster of
``--workers`` processes (default one per core) is started and stopped.
``bayespk compare DIR1 DIR2`` compares k-fold folders (see :mod:`bayespk.evaluate.kfold`).
"""

from __future__ import annotations

import json
from pathlib import Path

from bayespk.errors import BayesPKError

__all__ = ["add_parser", "run"]

COMMANDS = ("sbc", "kfold", "simest", "covsearch")


def _common(p, replicate_word: str) -> None:
    p.add_argument("spec", help="model spec (TOML)")
    p.add_argument("--out", required=True, help="output folder (rerunning the same command into it resumes)")
    p.add_argument("--data", help="dataset whose design is used (default: the spec's [data] path)")
    p.add_argument("--chains", type=int, default=2, help=f"chains of each {replicate_word} fit (default %(default)s)")
    p.add_argument("--draws", type=int, default=500,
                   help=f"draws per chain of each {replicate_word} fit (default %(default)s)")
    p.add_argument("--tune", type=int, default=500,
                   help=f"tuning steps per chain of each {replicate_word} fit (default %(default)s)")
    p.add_argument("--seed", type=int, default=0, help="random seed of the workload (default %(default)s)")
    p.add_argument("--workers", type=int,
                   help="worker processes of the local Dask cluster (default: one per core)")
    p.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                   help="address of a running Dask scheduler to send the work to (default: a local cluster)")
    p.add_argument("--quiet", action="store_true", help="no progress lines")


def add_parser(sub) -> None:
    s = sub.add_parser("sbc", help="simulation-based calibration of a spec on its data's design (Dask)",
                       description="Draw population parameters from the priors, simulate data sets on the spec's "
                                   "design, fit each and test the ranks of the truth for uniformity. Writes "
                                   "ranks.csv, tests.csv, sbc_ecdf.png and tasks/ to --out.")
    _common(s, "replicate")
    s.add_argument("--n", type=int, default=100, help="replicates (default %(default)s; 200 or more for a verdict)")
    s.add_argument("--thin-to", type=int, default=99,
                   help="posterior draws per fit the rank counts (ranks 0..N; default %(default)s)")
    s.add_argument("--fit-spec", help="fit the replicates with this spec instead (a deliberately different model "
                                      "or prior; default: the same spec)")

    k = sub.add_parser("kfold", help="K-fold cross-validation by subject (Dask)",
                       description="Fit the model K times, each time without one fold of subjects, and score the "
                                   "held-out subjects as new patients. Writes elpd.csv, elpd_subjects.csv and "
                                   "tasks/ to --out; `bayespk compare DIR1 DIR2` compares such folders.")
    _common(k, "fold")
    _kfold_options(k)
    k.add_argument("--stratify", metavar="COLUMN", help="balance the folds over this column's levels (default: no)")

    c = sub.add_parser("covsearch", help="covariate search: stepwise by K-fold elpd (Dask), or one fit of the full "
                                         "model under a regularized horseshoe",
                       description="--method stepwise (default): add candidate covariate relations one at a time "
                                   "while K-fold elpd improves by more than --threshold-se SEs, then drop those whose "
                                   "removal costs less; writes steps.csv and one k-fold folder per model under "
                                   "--out/models. --method horseshoe: fit the model with every candidate under a "
                                   "regularized horseshoe prior (Piironen & Vehtari 2017) once, in this process, and "
                                   "keep a relation when the posterior probability that the parameter ratio across "
                                   "the covariate's 5th-95th percentile (a level vs the reference) lies outside "
                                   "--band exceeds --inclusion; writes steps.csv.")
    _common(c, "fold")
    _kfold_options(c)
    c.add_argument("--candidate", action="append", required=True, metavar="PARAM:COLUMN:EFFECT[:REFERENCE]",
                   help="a candidate relation, e.g. CL:WT:power:70 or V:SEX:categorical (repeatable)")
    c.add_argument("--threshold-se", type=float, default=1.0,
                   help="add (drop) a relation when it improves elpd by more (costs at most) this many SEs of the "
                        "paired difference (default %(default)s)")
    c.add_argument("--no-backward", action="store_true", help="forward addition only (default: both steps)")
    c.add_argument("--method", choices=("stepwise", "horseshoe"), default="stepwise",
                   help="stepwise by K-fold elpd, or the full model under a regularized horseshoe (default "
                        "%(default)s)")
    c.add_argument("--band", default="0.8,1.25", metavar="LOWER,UPPER",
                   help="horseshoe: no-effect band of the parameter ratio (default %(default)s)")
    c.add_argument("--inclusion", type=float, default=0.5,
                   help="horseshoe: keep a relation when P(ratio outside --band) exceeds this (default %(default)s)")
    c.add_argument("--expected", type=float, default=1.0,
                   help="horseshoe: prior guess of how many candidates have an effect, in (0, number of "
                        "candidates); sets the global scale tau0 (default %(default)s)")
    c.add_argument("--slab-scale", type=float, default=1.0,
                   help="horseshoe: slab scale, the size of a large effect per SD of the covariate on the log "
                        "parameter (default %(default)s)")
    c.add_argument("--target-accept", type=float, default=0.95,
                   help="horseshoe: NUTS target acceptance (default %(default)s)")

    e = sub.add_parser("simest", help="simulation-estimation study at a known truth (Dask)",
                       description="Simulate N studies on the data's design at the given population parameters, "
                                   "fit each, and report bias, relative RMSE and 90%% interval coverage per "
                                   "parameter. Writes summary.csv and tasks/ to --out.")
    _common(e, "replicate")
    e.add_argument("--truth", required=True, metavar="FILE.json|NAME=VALUE,...",
                   help="every population parameter: a JSON file of name: value, or NAME=VALUE items joined by "
                        "commas")
    e.add_argument("--n", type=int, default=50, help="simulated studies (default %(default)s)")


def _kfold_options(p) -> None:
    p.add_argument("--k", type=int, default=5,
                   help="folds, 2 to the number of subjects (= leave-one-subject-out) (default %(default)s)")
    p.add_argument("--draws-used", type=int, default=100,
                   help="posterior draws per fold used for the held-out density (default %(default)s)")
    p.add_argument("--n-eta", type=int, default=500,
                   help="new etas per posterior draw integrating each held-out subject's random effects "
                        "(default %(default)s)")


def _candidate(text: str) -> dict:
    parts = [x.strip() for x in text.split(":")]
    if len(parts) not in (3, 4) or not all(parts):
        raise BayesPKError(f"--candidate {text!r}: expected PARAMETER:COLUMN:EFFECT[:REFERENCE], e.g. CL:WT:power:70")
    c = {"parameter": parts[0], "column": parts[1], "effect": parts[2]}
    if len(parts) == 4:
        try:
            c["reference"] = float(parts[3])
        except ValueError:
            c["reference"] = parts[3]
    return c


def _truth(text: str) -> dict:
    p = Path(text)
    if p.suffix == ".json" or p.is_file():
        try:
            values = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise BayesPKError(f"--truth {text}: not a readable JSON file ({e})") from None
    else:
        values = {}
        for item in filter(None, (x.strip() for x in text.split(","))):
            name, sep, value = item.partition("=")
            if not sep:
                raise BayesPKError(f"--truth: {item!r} is not NAME=VALUE")
            values[name.strip()] = value.strip()
    out = {}
    for k, v in values.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            raise BayesPKError(f"--truth: {k} = {v!r} is not a number") from None
    return out


def run(command: str, args) -> int:
    from bayespk.data.nonmem import read_nonmem
    from bayespk.model.spec import Spec

    spec = Spec.from_toml(args.spec)
    data = None
    if args.data:
        data = read_nonmem(args.data, aliases=spec.data.aliases, lloq=spec.data.lloq, **spec.data.filters)
    runner = {"workers": args.workers, "scheduler": args.scheduler, "progress": False if args.quiet else None}
    common = {"out": args.out, "seed": args.seed, "chains": args.chains, "draws": args.draws, "tune": args.tune}
    if command == "sbc":
        from bayespk.evaluate.sbc import sbc

        fit_spec = Spec.from_toml(args.fit_spec) if args.fit_spec else None
        r = sbc(spec, data, n=args.n, thin_to=args.thin_to, fit_spec=fit_spec, **common, **runner)
        tests = r.tests()
        print(tests.to_string(index=False, float_format=lambda x: f"{x:.3g}"))
        failing = list(tests.parameter[~tests.passes])
        for note in r.notes():
            print(f"note: {note}")
        print(f"\n{len(r.ranks)} replicates ({len(r.failed)} failed fits); "
              + (f"FAILING: {', '.join(failing)}" if failing else "every parameter's ranks are uniform")
              + f"\nwrote {Path(args.out) / 'tests.csv'}, ranks.csv, sbc_ecdf.png")
    elif command == "kfold":
        from bayespk.evaluate.kfold import kfold

        r = kfold(spec, data, k=args.k, stratify=args.stratify, draws_used=args.draws_used, n_eta=args.n_eta,
                  **common, **runner)
        print(r.table().to_string(float_format=lambda x: f"{x:.2f}"))
        print(f"\nelpd (k-fold, {args.k} folds) {r.elpd:.2f}, SE {r.se:.2f}"
              + (f"; {len(r.failed)} folds failed: rerun to retry them" if r.failed else "")
              + f"\nwrote {Path(args.out) / 'elpd.csv'}, elpd_subjects.csv")
    elif command == "covsearch":
        from bayespk.evaluate.covsearch import covariate_search

        try:
            band = tuple(float(x) for x in args.band.split(","))
        except ValueError:
            band = ()
        if len(band) != 2:
            raise BayesPKError(f"--band {args.band!r}: expected LOWER,UPPER, e.g. 0.8,1.25")
        r = covariate_search(spec, [_candidate(c) for c in args.candidate], data, k=args.k, method=args.method,
                             threshold_se=args.threshold_se, backward=not args.no_backward,
                             draws_used=args.draws_used, n_eta=args.n_eta, band=band, inclusion=args.inclusion,
                             shrinkage={"expected": args.expected, "slab_scale": args.slab_scale},
                             target_accept=args.target_accept, **common, **runner)
        print(r.steps.to_string(index=False, float_format=lambda x: f"{x:.2f}"))
        print(f"\nselected: {', '.join(r.selected) or 'none'}\nwrote {Path(args.out) / 'steps.csv'}")
    else:
        from bayespk.evaluate.sbc import simulation_estimation

        r = simulation_estimation(spec, _truth(args.truth), data, n=args.n, **common, **runner)
        print(r.summary().to_string(index=False, float_format=lambda x: f"{x:.3g}"))
        print(f"\nwrote {Path(args.out) / 'summary.csv'}")
    return 0
