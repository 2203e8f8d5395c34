"""Run directories written whole or not at all: lock, temporary directory, rename; hashes.

A run directory (``spec.toml``, ``fit.nc``, ``summary.csv``,
``diagnostics.json``) is written into a temporary directory beside the target
(``.NAME.tmp-<pid>``, same parent, so the same file system) and renamed into
place only when every file is complete: a reader never sees half a run, and a
failure (full disk, read-only file system, Ctrl-C) leaves the target as it was.

A lock file beside the target (``NAME.lock``, holding the writer's pid) is
held with ``flock`` for the whole fit, so a second writer of the same
directory is refused before it samples anything. The kernel releases the lock
when its process dies, so a lock file left behind by a killed process never
blocks anyone.

The hashes that make a run's provenance checkable live here too: the SHA-256
of a file's bytes, of a JSON document in canonical form (the resolved spec),
and of the arrays of a fit's DataTree (the checksum ``fit.nc`` carries).
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import xarray as xr

from bayespk.errors import BayesPKError

__all__ = ["CHECKSUM_ATTR", "RUN_FILES", "SPEC_ATTR", "RunDirError", "RunWriter", "human_bytes", "read_diagnostics",
           "read_fit_tree", "sha256_file", "sha256_json", "tree_checksum"]

#: Attributes of a fit's DataTree: the resolved spec (JSON) and the checksum of its arrays.
SPEC_ATTR = "bayespk_spec"
CHECKSUM_ATTR = "bayespk_checksum"
RUN_FILES = ("spec.toml", "fit.nc", "summary.csv", "diagnostics.json")
DIAGNOSTICS_KEYS = ("chains", "draws", "divergences", "max_r_hat", "min_ess_bulk", "min_ess_tail", "min_bfmi")


class RunDirError(BayesPKError):
    """A run directory cannot be written (exists, locked, no space, read-only) or read (corrupt)."""


# ------------------------------------------------------------------ hashes
def sha256_file(path: str | Path) -> str:
    """SHA-256 (hex) of a file's bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def sha256_json(obj) -> str:
    """SHA-256 (hex) of ``obj`` as canonical JSON (sorted keys, no spaces, UTF-8)."""
    text = json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=True)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def tree_checksum(tree: xr.DataTree, skip_attrs: tuple[str, ...] = ()) -> str:
    """SHA-256 over every array of ``tree`` and its root's text attributes, in a fixed order.

    Each group (by path), then each variable and coordinate (by name)
    contributes its name, dims, a dtype label, its shape and its bytes; text
    arrays are hashed element by element, so the value survives the netCDF
    round trip whatever string dtype it comes back with. Root attributes
    holding text (the spec, the run information) are included, except those
    named in ``skip_attrs`` (the checksum itself).
    """
    h = hashlib.sha256()
    for node in sorted(tree.subtree, key=lambda n: n.path):
        ds = node.to_dataset(inherit=False)
        for name in sorted(ds.variables, key=str):
            var = ds.variables[name]
            label, data = _canonical(np.asarray(var.values))
            h.update(f"{node.path}/{name}|{','.join(map(str, var.dims))}|{label}|{var.shape}\n".encode())
            h.update(data)
    for key in sorted(tree.attrs):
        value = tree.attrs[key]
        if key not in skip_attrs and isinstance(value, str):
            h.update(f"@{key}={value}\n".encode())
    return h.hexdigest()


def _canonical(values: np.ndarray) -> tuple[str, bytes]:
    """A dtype label and the bytes that represent ``values`` independently of how netCDF stored them."""
    if values.dtype.kind in "OUS":
        items = (v.decode() if isinstance(v, bytes) else str(v) for v in values.ravel())
        return "text", "\x1f".join(items).encode("utf-8", "surrogatepass")
    if values.dtype.kind == "b":
        return "bool", np.ascontiguousarray(values, dtype=np.uint8).tobytes()
    little = values.dtype.newbyteorder("<")
    return little.str, np.ascontiguousarray(values, dtype=little).tobytes()


def human_bytes(n: float) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"  # pragma: no cover


# ------------------------------------------------------------------ reading
def read_diagnostics(run: str | Path) -> dict:
    """``RUN/diagnostics.json`` as a dict, refused by name when absent, not JSON, or not bayespk's."""
    path = Path(run) / "diagnostics.json"
    if not path.is_file():
        raise RunDirError(f"{path}: no such file; {run} is not a complete run directory (written by "
                          "`bayespk fit SPEC --out RUN_DIR`)")
    try:
        diag = json.loads(path.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as e:
        raise RunDirError(f"{path}: not valid JSON ({e}); the file was modified or truncated; refit, or restore "
                          "the run directory") from None
    missing = [k for k in DIAGNOSTICS_KEYS if not isinstance(diag, dict) or k not in diag]
    if missing:
        raise RunDirError(f"{path}: not a bayespk diagnostics file (no {', '.join(missing)}); refit, or restore "
                          "the run directory")
    return diag


# ------------------------------------------------------------------ writing
class RunWriter:
    """Write one run directory whole or not at all, holding its lock.

    Use as a context manager: entering takes the lock and checks the target
    (an existing one is refused unless ``overwrite``); :meth:`preflight`
    checks, before sampling, that the parent is writable and has room;
    :meth:`commit` writes the files into the temporary directory and renames
    it into place. Leaving removes the temporary directory (whatever
    happened) and the lock.

    Parameters
    ----------
    target : path
        The run directory to create (its parent is created if needed).
    overwrite : bool
        Replace an existing run directory whole (no stale report or VPC left).
    option : str
        How the user asks for ``overwrite`` (``"--overwrite"`` on the command
        line, ``"overwrite=True"`` from Python), for messages.
    """

    def __init__(self, target: str | Path, *, overwrite: bool = False, option: str = "overwrite=True"):
        self.target = Path(target)
        if self.target.name in ("", ".", ".."):
            raise RunDirError(f"{target}: name a new directory for the run, e.g. runs/theophylline")
        self.overwrite = overwrite
        self.option = option
        self.parent = self.target.parent
        self.lock_path = self.parent / f"{self.target.name}.lock"
        self.temp = self.parent / f".{self.target.name}.tmp-{os.getpid()}"
        self._old = self.parent / f".{self.target.name}.old-{os.getpid()}"
        self._fd: int | None = None

    # ----------------------------------------------------------- lock
    def __enter__(self) -> "RunWriter":
        try:
            self.parent.mkdir(parents=True, exist_ok=True)
            self._lock()
        except OSError as e:
            raise self._os_error(e, "cannot create the lock file beside it") from None
        try:
            self._check_target()
            self._remove_leftovers()
        except BaseException:
            self._unlock()
            raise
        return self

    def __exit__(self, *exc) -> None:
        shutil.rmtree(self.temp, ignore_errors=True)
        self._unlock()

    def _lock(self) -> None:
        while True:
            fd = os.open(self.lock_path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                pid = os.read(fd, 32).decode(errors="replace").strip() or "unknown"
                os.close(fd)
                raise RunDirError(
                    f"{self.target}: another bayespk process (pid {pid}) is writing this run directory "
                    f"(lock file {self.lock_path}); wait for it to finish, or write to another directory"
                ) from None
            if _same_file(fd, self.lock_path):
                break
            os.close(fd)  # the previous holder removed the file between our open and flock: take a new one
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()}\n".encode())
        self._fd = fd

    def _unlock(self) -> None:
        if self._fd is None:
            return
        try:
            self.lock_path.unlink(missing_ok=True)
        finally:
            os.close(self._fd)
            self._fd = None

    def _check_target(self) -> None:
        t = self.target
        if not (t.exists() or t.is_symlink()):
            return
        if not t.is_dir() or t.is_symlink():
            raise RunDirError(f"{t}: exists and is not a directory; not replacing it. Choose another output")
        if not self.overwrite:
            raise RunDirError(f"{t}: already exists; a run directory is never overwritten silently. Use "
                              f"{self.option} to replace it whole (report.html, vpc/ and everything else in it "
                              "included), or write to another directory")
        if any(t.iterdir()) and not any((t / f).exists() for f in RUN_FILES):
            raise RunDirError(f"{t}: exists and is not a run directory (none of {', '.join(RUN_FILES)} in it); "
                              f"{self.option} replaces only run directories. Remove it yourself, or write to "
                              "another directory")

    def _remove_leftovers(self) -> None:
        """Temporary directories of writers of this target that died (we hold the lock, so none is alive)."""
        for pattern in (f".{self.target.name}.tmp-*", f".{self.target.name}.old-*"):
            for p in self.parent.glob(pattern):
                shutil.rmtree(p, ignore_errors=True)

    # ----------------------------------------------------------- checks and writing
    def preflight(self, nbytes: int, what: str = "the run") -> None:
        """Create the temporary directory (proves the parent writable) and check for ``nbytes`` of room."""
        self._make_temp()
        free = shutil.disk_usage(self.temp).free
        if free < nbytes:
            shutil.rmtree(self.temp, ignore_errors=True)
            raise RunDirError(f"{self.target}: {human_bytes(free)} free in {self.parent.resolve()}, but {what} "
                              f"needs about {human_bytes(nbytes)}; free some space, write elsewhere, or sample "
                              "fewer draws or chains")

    def commit(self, write: Callable[[Path], None]) -> Path:
        """Write the files with ``write(folder)`` and rename the folder into place; returns the target."""
        self._check_target()  # again: something may have appeared there while the fit ran
        self._make_temp()
        moved = False
        try:
            write(self.temp)
            _fsync_tree(self.temp)
            if self.target.exists():
                os.rename(self.target, self._old)
                moved = True
            os.rename(self.temp, self.target)
            _fsync_dir(self.parent)
        except BaseException as e:
            shutil.rmtree(self.temp, ignore_errors=True)
            if moved and not self.target.exists():
                os.rename(self._old, self.target)  # put the previous run back
            if isinstance(e, OSError):
                raise self._os_error(e, "writing failed; nothing was written (the partial files were removed)") \
                    from None
            raise
        if moved:
            shutil.rmtree(self._old, ignore_errors=True)
        return self.target

    def _make_temp(self) -> None:
        try:
            self.temp.mkdir(exist_ok=True)
        except OSError as e:
            raise self._os_error(e, "cannot create the run directory there") from None

    def _os_error(self, e: OSError, what: str) -> RunDirError:
        reason = e.strerror or str(e)
        where = e.filename or self.parent
        return RunDirError(f"{self.target}: {what}: {reason} ({where}); check that the location is writable and "
                           "has free space, or write elsewhere")


def _same_file(fd: int, path: Path) -> bool:
    try:
        return os.fstat(fd).st_ino == os.stat(path).st_ino
    except FileNotFoundError:
        return False


def _fsync_tree(folder: Path) -> None:
    """Flush every file of ``folder`` to disk, so a rename never publishes data still in a cache."""
    for p in folder.rglob("*"):
        if p.is_file():
            fd = os.open(p, os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    _fsync_dir(folder)


def _fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_fit_tree(path: str | Path) -> xr.DataTree:
    """The DataTree of a fit (a ``fit.nc`` file or a run directory), fully in memory, its checksum verified.

    A missing file, a file that is not readable netCDF, one not written by bayespk (no spec attribute) or
    one whose arrays changed is refused with a :class:`RunDirError` naming it. Files written before
    checksums existed load without verification.
    """
    path = Path(path)
    if path.is_dir():
        path = path / "fit.nc"
    if not path.is_file():
        raise BayesPKError(f"{path}: no such fit file")
    try:
        with xr.open_datatree(path, engine="h5netcdf") as stored:
            tree = stored.load()
    except (OSError, ValueError, KeyError, TypeError, RuntimeError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise RunDirError(f"{path}: not a readable fit file ({type(e).__name__}{': ' + first if first else ''}); "
                          "it is truncated, corrupted or not netCDF; refit") from None
    if SPEC_ATTR not in tree.attrs:
        raise RunDirError(f"{path}: not a bayespk fit (no {SPEC_ATTR} attribute): a netCDF file written by "
                          "something else; refit with `bayespk fit SPEC --out RUN_DIR`")
    expected = tree.attrs.get(CHECKSUM_ATTR)
    if expected is not None and tree_checksum(tree, skip_attrs=(CHECKSUM_ATTR,)) != expected:
        raise RunDirError(f"{path}: checksum mismatch (the file was modified or corrupted); refit")
    return tree
