"""What the command-line modules share: the seed range, option range checks, ``--alias`` parsing and loading a
run directory. It imports no command module, so ``bayespk.cli`` and the commands it delegates to
(``bayespk.nca``, ``bayespk.simulate.cli``) import it, not each other."""

from __future__ import annotations

import sys
from pathlib import Path

__all__ = ["SEED_HELP", "SEED_MAX", "check_range", "load_run", "parse_aliases"]

SEED_MAX = 2**32 - 1
SEED_HELP = f"random seed, 0 to {SEED_MAX} (default %(default)s)"


def check_range(option: str, value, low: int, high: int) -> None:
    """Refuse ``--option value`` outside ``[low, high]`` (None: not given)."""
    from bayespk.errors import SpecError

    if value is None:
        return
    if value < low:
        raise SpecError(f"--{option} must be >= {low}, got {value}")
    if value > high:
        raise SpecError(f"--{option} must be <= {high}, got {value}")


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


def load_run(run_dir: str | Path, model: bool = True):
    """The Fit of a run directory, verified (checksum of fit.nc, diagnostics.json readable when present).

    An interrupted run (``fit --keep-partial``) loads, with a note on stderr.
    ``model=False``: only verify fit.nc, without importing PyMC (commands that
    print tables); returns its DataTree.
    """
    import json

    from bayespk.errors import BayesPKError
    from bayespk.rundir import read_diagnostics, read_fit_tree

    run = Path(run_dir)
    if not (run / "fit.nc").is_file():
        raise BayesPKError(f"{run}: not a run directory (no fit.nc); create one with `bayespk fit SPEC --out {run}`")
    if (run / "diagnostics.json").exists():
        read_diagnostics(run)
    if model:
        from bayespk.fit import load

        result = load(run)
        info = result.run_info
    else:
        result = read_fit_tree(run / "fit.nc")  # xarray only: no spec parsed, no model built
        info = json.loads(result.attrs.get("bayespk_run", "{}"))
    if info.get("interrupted"):
        print(f"note: {run} is an interrupted fit: only the first {info.get('draws_kept')} of "
              f"{info.get('draws_requested')} draws per chain; results are provisional", file=sys.stderr)
    return result
