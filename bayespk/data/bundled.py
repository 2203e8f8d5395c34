"""Real datasets shipped with bayespk (see ``datasets/README.md`` for sources)."""

from __future__ import annotations

from importlib import resources
from pathlib import Path

from bayespk.data.nonmem import Dataset, read_nonmem
from bayespk.errors import DataError

__all__ = ["names", "path", "load"]


def names() -> list[str]:
    """Names of the bundled datasets."""
    folder = resources.files("bayespk.data") / "datasets"
    return sorted(p.name[:-4] for p in folder.iterdir() if p.name.endswith(".csv"))


def path(name: str) -> Path:
    """Path of a bundled dataset's CSV file, e.g. ``path("theophylline")``."""
    if name not in names():
        raise DataError(f"no bundled dataset {name!r}; available: {', '.join(names())}")
    return Path(str(resources.files("bayespk.data") / "datasets" / f"{name}.csv"))


def load(name: str) -> Dataset:
    """Read and validate a bundled dataset.

    Examples
    --------
    >>> from bayespk import datasets
    >>> datasets.load("phenobarbital").summary.n_subjects
    59
    """
    return read_nonmem(path(name))
