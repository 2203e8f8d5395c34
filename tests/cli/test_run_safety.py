"""Nothing lost, nothing silent: run directories written whole under a lock, interrupts, provenance,
verified fit files, and no traceback for user errors (issue #12).

Real sampling is kept to a few tiny theophylline fits; wherever the sampler itself is not what is
tested, it is replaced (by a fit loaded from the module's run, or by a function that fails the test if
sampling starts).
"""

from __future__ import annotations

import errno
import importlib
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import tomllib
import warnings
from pathlib import Path

import numpy as np
import pytest
import xarray as xr
from conftest import MODELS, interruptible

import bayespk as bpk
from bayespk.cli import main
from bayespk.rundir import RunDirError, RunWriter, sha256_file, sha256_json

REPO = Path(__file__).resolve().parents[2]
THEO = MODELS / "theophylline_1cmt_oral.toml"
THEO_CSV = bpk.datasets.path("theophylline")
TINY = ["--draws", "20", "--tune", "20", "--chains", "2", "--seed", "1", "--quiet"]
FIT_MODULE = importlib.import_module("bayespk.fit")  # the module (the attribute bayespk.fit is the function)


# --------------------------------------------------------------------------- helpers and fixtures
def theo_spec(folder: Path, csv: Path | None = None, error: str | None = None) -> Path:
    """The theophylline spec reading ``csv`` (default: a copy of the bundled data in ``folder``)."""
    folder.mkdir(parents=True, exist_ok=True)
    if csv is None:
        csv = folder / "theophylline.csv"
        shutil.copy(THEO_CSV, csv)
    text = THEO.read_text()
    replacements = {'path = "../bayespk/data/datasets/theophylline.csv"': f'path = "{csv}"'}
    if error is not None:
        replacements['model = "additive"\nsigma_add = { dist = "HalfNormal", sigma = 2.0 }           # mg/L'] = \
            f'model = "{error}"'
    for old, new in replacements.items():
        assert old in text, f"{THEO} changed: {old!r} not found"
        text = text.replace(old, new)
    spec = folder / "spec.toml"
    spec.write_text(text)
    return spec


def run_main(capsys, *argv) -> tuple[int, str, str]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_refused(rc: int, err: str, command: str, *needles: str) -> None:
    assert rc == 2, err
    assert err.startswith(f"bayespk {command}: error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, f"{n!r} not in {err!r}"


def leftovers(parent: Path, name: str) -> list[str]:
    """Lock files and temporary directories of run ``name`` left in ``parent``."""
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}.") or p.name == f"{name}.lock")


@pytest.fixture(scope="module")
def run(tmp_path_factory) -> Path:
    """A real tiny run written by the CLI, from a spec reading a copy of the theophylline data."""
    base = tmp_path_factory.mktemp("safety")
    spec = theo_spec(base / "spec")
    out = base / "runs" / "theo"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["fit", str(spec), "--out", str(out), *TINY]) == 0
    return out


@pytest.fixture
def no_sampling(monkeypatch):
    """Fail the test if ``bayespk.fit.fit`` gets as far as sampling (checks before it still run)."""

    def refuse(*args, **kwargs):
        raise AssertionError("sampling started; the input should have been refused first")

    monkeypatch.setattr(FIT_MODULE, "_sample", refuse)


@pytest.fixture
def fake_fit(monkeypatch, run):
    """``bayespk fit`` without sampling: ``fit`` returns the module's run (checks in the CLI still run)."""

    def fake(model, **kwargs):
        return bpk.load(run)

    monkeypatch.setattr(FIT_MODULE, "fit", fake)


def copy_run(run: Path, to: Path) -> Path:
    shutil.copytree(run, to)
    return to


# --------------------------------------------------------------------------- run directory contract
def test_run_directory_is_whole_and_records_provenance(run):
    assert sorted(p.name for p in run.iterdir()) == ["diagnostics.json", "fit.nc", "spec.toml", "summary.csv"]
    assert leftovers(run.parent, run.name) == []  # no lock file, no temporary directory
    data = Path(tomllib.loads((run / "spec.toml").read_text())["data"]["path"])
    diag = json.loads((run / "diagnostics.json").read_text())
    assert diag["interrupted"] is False
    assert diag["data_sha256"] == sha256_file(data)
    spec = bpk.Spec.from_toml(run / "spec.toml")
    assert spec.data.sha256 == diag["data_sha256"]  # the resolved spec carries the hash it is checked against
    assert diag["spec_sha256"] == sha256_json(spec.to_dict())
    assert {"pymc", "nutpie", "arviz", "numpy"} <= set(diag["versions"])
    fit = bpk.load(run)  # verifies the checksum
    assert fit.tree.attrs["bayespk_checksum"]
    assert json.loads(fit.tree.attrs["bayespk_run"])["data_sha256"] == diag["data_sha256"]


def test_existing_run_is_refused_before_sampling(run, capsys, no_sampling):
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    rc, _, err = run_main(capsys, "fit", THEO, "--out", run, *TINY)
    assert_refused(rc, err, "fit", f"{run}: already exists", "--overwrite")
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before
    assert leftovers(run.parent, run.name) == []


def test_overwrite_refuses_a_directory_that_is_not_a_run(tmp_path, capsys, no_sampling):
    target = tmp_path / "notes"
    target.mkdir()
    (target / "thesis.tex").write_text("precious")
    rc, _, err = run_main(capsys, "fit", THEO, "--out", target, "--overwrite", *TINY)
    assert_refused(rc, err, "fit", "is not a run directory", "--overwrite replaces only run directories")
    assert (target / "thesis.tex").read_text() == "precious"


def test_second_writer_is_refused_with_the_other_pid(tmp_path, capsys, no_sampling):
    target = tmp_path / "theo"
    with RunWriter(target):  # another writer holds the lock (flock: a second open file conflicts, same pid or not)
        rc, _, err = run_main(capsys, "fit", THEO, "--out", target, *TINY)
    assert_refused(rc, err, "fit", str(target), f"pid {os.getpid()}", "is writing this run directory")
    assert not target.exists()
    assert leftovers(tmp_path, "theo") == []  # the holder removed its lock when it finished


def test_stale_lock_and_temporary_directory_of_a_dead_writer_are_cleared(tmp_path, capsys, fake_fit):
    dead = subprocess.Popen(["true"])
    dead.wait()
    target = tmp_path / "theo"
    (tmp_path / "theo.lock").write_text(f"{dead.pid}\n")  # left by a killed writer: no flock held
    (tmp_path / f".theo.tmp-{dead.pid}").mkdir()
    (tmp_path / f".theo.tmp-{dead.pid}" / "fit.nc").write_text("half")
    rc, out, err = run_main(capsys, "fit", THEO, "--out", target, *TINY)
    assert rc == 0, err
    assert sorted(p.name for p in target.iterdir()) == ["diagnostics.json", "fit.nc", "spec.toml", "summary.csv"]
    assert leftovers(tmp_path, "theo") == []


def test_free_space_is_checked_before_sampling(tmp_path, capsys, no_sampling):
    # 64 chains x 10^7 draws x ~230 values x 8 bytes is about 1.3 TiB
    rc, _, err = run_main(capsys, "fit", THEO, "--out", tmp_path / "big", "--draws", "10000000", "--chains", "64",
                          "--quiet")
    assert_refused(rc, err, "fit", f"{tmp_path / 'big'}: ", "free in", "fit.nc (64 chains x 10000000 draws",
                   "needs about", "TiB")
    assert list(tmp_path.iterdir()) == []  # no run, no temporary directory, no lock


@pytest.fixture
def read_only_dir(tmp_path, monkeypatch):
    """A directory nothing can be created in: chmod 0o555, and for root (whom permissions do not stop) the
    file system calls that create entries in it fail with EACCES, as the kernel does for other users."""
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    if os.geteuid() == 0:
        inside = str(folder) + os.sep

        def deny(real):
            def call(path, *args, **kwargs):
                if os.fspath(path).startswith(inside):
                    raise PermissionError(errno.EACCES, os.strerror(errno.EACCES), os.fspath(path))
                return real(path, *args, **kwargs)

            return call

        monkeypatch.setattr(os, "open", deny(os.open))
        monkeypatch.setattr(os, "mkdir", deny(os.mkdir))
    yield folder
    folder.chmod(0o755)


def test_read_only_location_is_refused_before_sampling(read_only_dir, capsys, no_sampling):
    target = read_only_dir / "theo"
    rc, _, err = run_main(capsys, "fit", THEO, "--out", target, *TINY)
    assert_refused(rc, err, "fit", f"{target}: ", "Permission denied", "writable")
    assert list(read_only_dir.iterdir()) == []


def enospc_writer(monkeypatch):
    """``to_netcdf`` writes half a file, then the disk is full."""

    def full(self, path, *args, **kwargs):
        Path(path).write_bytes(b"\x89HDF\r\n" + b"\0" * 1000)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(xr.DataTree, "to_netcdf", full)


def test_disk_full_while_writing_leaves_nothing(tmp_path, capsys, fake_fit, monkeypatch):
    enospc_writer(monkeypatch)
    target = tmp_path / "theo"
    rc, _, err = run_main(capsys, "fit", THEO, "--out", target, *TINY)
    assert_refused(rc, err, "fit", f"{target}: writing failed", "No space left on device", "nothing was written")
    assert list(tmp_path.iterdir()) == []


def test_disk_full_while_replacing_keeps_the_old_run(tmp_path, run, monkeypatch):
    old = copy_run(run, tmp_path / "theo")
    before = {p.name: p.read_bytes() for p in old.iterdir()}
    fit = bpk.load(run)
    enospc_writer(monkeypatch)
    with pytest.raises(RunDirError, match="No space left on device"):
        fit.write_run(old, overwrite=True)
    assert {p.name: p.read_bytes() for p in old.iterdir()} == before
    assert leftovers(tmp_path, "theo") == []


def test_write_run_from_python_refuses_and_overwrites_whole(tmp_path, run):
    fit = bpk.load(run)
    target = fit.write_run(tmp_path / "theo")
    (target / "report.html").write_text("stale")
    (target / "vpc").mkdir()
    with pytest.raises(RunDirError, match="already exists.*overwrite=True"):
        fit.write_run(target)
    fit.write_run(target, overwrite=True)
    assert sorted(p.name for p in target.iterdir()) == ["diagnostics.json", "fit.nc", "spec.toml", "summary.csv"]
    assert bpk.load(target).summary().equals(fit.summary())
    assert leftovers(tmp_path, "theo") == []


# --------------------------------------------------------------------------- provenance: the data changed
def test_refit_from_a_run_refuses_changed_data_then_records_both_hashes(run, tmp_path, capsys, monkeypatch):
    # the run's spec, reading its own copy of the data, which then changes
    csv = tmp_path / "theophylline.csv"
    shutil.copy(Path(tomllib.loads((run / "spec.toml").read_text())["data"]["path"]), csv)
    spec = tmp_path / "spec.toml"
    spec.write_text(
        "\n".join(f'path = "{csv}"' if line.startswith("path = ") else line
                  for line in (run / "spec.toml").read_text().splitlines())
    )
    old = sha256_file(csv)
    csv.write_text(csv.read_text().replace("1,0.25,.,2.84,", "1,0.25,.,2.94,"))
    new = sha256_file(csv)

    with monkeypatch.context() as m:
        m.setattr(FIT_MODULE, "_sample", lambda *a, **k: pytest.fail("sampled changed data"))
        rc, _, err = run_main(capsys, "fit", spec, "--out", tmp_path / "again", *TINY)
    assert_refused(rc, err, "fit", str(csv), "data file changed", old, new, "--allow-changed-data")
    assert not (tmp_path / "again").exists()

    # --allow-changed-data --overwrite onto a run with a report and a VPC: replaced whole
    target = copy_run(run, tmp_path / "replaced")
    (target / "report.html").write_text("stale")
    (target / "vpc").mkdir()
    (target / "vpc" / "vpc.png").write_bytes(b"stale")
    rc, _, err = run_main(capsys, "fit", spec, "--out", target, "--allow-changed-data", "--overwrite", *TINY)
    assert rc == 0, err
    assert sorted(p.name for p in target.iterdir()) == ["diagnostics.json", "fit.nc", "spec.toml", "summary.csv"]
    diag = json.loads((target / "diagnostics.json").read_text())
    assert (diag["data_sha256"], diag["data_sha256_recorded"], diag["data_changed"]) == (new, old, True)
    assert bpk.Spec.from_toml(target / "spec.toml").data.sha256 == new
    assert leftovers(tmp_path, "replaced") == []


# --------------------------------------------------------------------------- verified fit files
def flip_a_posterior_byte(path: Path) -> None:
    """Flip one byte in the middle of the stored posterior of CL (found by its bytes in the file)."""
    values = bpk.load(path.parent).posterior["CL"].values.astype("<f8").tobytes()
    blob = bytearray(path.read_bytes())
    at = blob.find(values)
    assert at > 0, "the CL array is not stored contiguously"
    blob[at + len(values) // 2] ^= 0x5A
    path.write_bytes(bytes(blob))


CORRUPTIONS = {
    "truncated": (lambda p: p.write_bytes(p.read_bytes()[: p.stat().st_size // 2]), "not a readable fit file"),
    "text": (lambda p: p.write_text("parameter,mean\nCL,0.04\n"), "not a readable fit file"),
    "foreign": (lambda p: xr.Dataset({"x": ("a", [1.0, 2.0])}).to_netcdf(p, engine="h5netcdf"),
                "not a bayespk fit"),
    "bit-flip": (flip_a_posterior_byte, "checksum mismatch (the file was modified or corrupted); refit"),
}
READERS = {
    "summary": lambda run, tmp: ["summary", run],
    "vpc": lambda run, tmp: ["vpc", run, "--out", tmp / "vpc", "--n-rep", "5"],
    "report": lambda run, tmp: ["report", run, "--n-rep", "5", "--n-sim", "5"],
    "simulate": lambda run, tmp: ["simulate", run, "--regimen", "4q24x1", "--n-draws", "5", "--out", tmp / "sim"],
}


@pytest.mark.parametrize("kind", CORRUPTIONS)
def test_corrupted_fit_file_is_refused_by_every_reader(kind, run, tmp_path, capsys):
    damaged = copy_run(run, tmp_path / "theo")
    corrupt, message = CORRUPTIONS[kind]
    corrupt(damaged / "fit.nc")
    for command, argv in READERS.items():
        rc, _, err = run_main(capsys, *argv(damaged, tmp_path))
        assert_refused(rc, err, command, f"{damaged / 'fit.nc'}: {message}")
    assert not (tmp_path / "vpc").exists() and not (tmp_path / "sim").exists()


def test_fit_file_without_checksum_still_loads(run, tmp_path):
    tree = bpk.load(run).tree.copy()
    del tree.attrs["bayespk_checksum"]
    tree.to_netcdf(tmp_path / "fit.nc", engine="h5netcdf")  # as written before checksums existed
    old = bpk.load(tmp_path / "fit.nc")
    assert "bayespk_checksum" not in old.tree.attrs
    assert old.summary().equals(bpk.load(run).summary())


@pytest.mark.parametrize("content", ["{not json", "[1, 2]"])
@pytest.mark.parametrize("command", ["summary", "report"])
def test_corrupt_diagnostics_json_is_refused_by_name(command, content, run, tmp_path, capsys):
    damaged = copy_run(run, tmp_path / "theo")
    (damaged / "diagnostics.json").write_text(content)
    rc, _, err = run_main(capsys, *READERS[command](damaged, tmp_path))
    assert_refused(rc, err, command, str(damaged / "diagnostics.json"))
    assert not (damaged / "report.html").exists()


# --------------------------------------------------------------------------- no traceback for user errors
@pytest.mark.parametrize("option, value, message", [
    ("--draws", str(2**64), "--draws must be <= 10000000, got 18446744073709551616"),
    ("--draws", "-5", "--draws must be >= 1, got -5"),
    ("--tune", "10000001", "--tune must be <= 10000000"),
    ("--chains", "65", "--chains must be <= 64, got 65"),
    ("--seed", "-5", "--seed must be >= 0, got -5"),
    ("--seed", str(2**32), "--seed must be <= 4294967295, got 4294967296"),
    ("--max-treedepth", "0", "--max-treedepth must be >= 1, got 0"),
    ("--max-treedepth", "21", "--max-treedepth must be <= 20, got 21"),
])
def test_sampler_options_out_of_range(option, value, message, tmp_path, capsys, no_sampling):
    rc, _, err = run_main(capsys, "fit", THEO, "--out", tmp_path / "run", option, value)
    assert_refused(rc, err, "fit", message)
    assert not (tmp_path / "run").exists()


def test_subject_with_observations_but_no_dose_is_named(tmp_path, capsys, no_sampling):
    csv = tmp_path / "nodose.csv"
    csv.write_text("".join(line for line in THEO_CSV.read_text().splitlines(keepends=True)
                           if not line.startswith("2,0.0,4.4,")))  # ID 2's dose record removed
    rc, _, err = run_main(capsys, "fit", theo_spec(tmp_path / "s", csv), "--out", tmp_path / "run", *TINY)
    assert_refused(rc, err, "fit", "ID 2: ", "no dose record", "predicts 0")
    assert not (tmp_path / "run").exists()


def test_impossible_likelihood_at_the_start_is_explained(tmp_path, capsys):
    # proportional error, and theophylline has an observation at the time of each oral dose: prediction 0
    spec = theo_spec(tmp_path / "s", THEO_CSV, error="proportional")
    rc, _, err = run_main(capsys, "fit", spec, "--out", tmp_path / "run", *TINY)
    assert_refused(rc, err, "fit", "the sampler cannot start", "12 observations", "row 2 (ID 1, TIME 0",
                   "proportional error", "prediction is 0")
    assert not (tmp_path / "run").exists()
    assert leftovers(tmp_path, "run") == []


def test_unexpected_exception_is_an_internal_error_unless_debug(monkeypatch, capsys):
    def broken(args):
        raise ZeroDivisionError("boom")

    monkeypatch.setattr(sys.modules["bayespk.cli"], "_data", broken)
    rc, _, err = run_main(capsys, "data", THEO_CSV)
    assert rc == 1
    assert err == ("bayespk data: internal error (a bug in bayespk): ZeroDivisionError: boom; rerun with --debug "
                   "for the traceback\n")
    with pytest.raises(ZeroDivisionError):
        main(["--debug", "data", str(THEO_CSV)])


# --------------------------------------------------------------------------- interrupts (real signals)
INTERRUPTS = {
    # name: (signal, seconds after "sampling ..." is printed, options)
    "tuning": (signal.SIGINT, 1.0, ["--tune", "1000000", "--draws", "10"]),
    "draws": (signal.SIGINT, 3.0, ["--tune", "20", "--draws", "1000000"]),
    "partial": (signal.SIGTERM, 3.0, ["--tune", "20", "--draws", "1000000", "--keep-partial"]),
    "pymc": (signal.SIGINT, 2.0, ["--tune", "1000000", "--draws", "10", "--sampler", "pymc"]),
}


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory) -> dict:
    """Each case of INTERRUPTS as a real `bayespk fit` process: (returncode, stdout, stderr, run directory).

    One process at a time (a sampling process would take the CPU from one still compiling), each started
    as soon as the previous one has been signalled.
    """
    base = tmp_path_factory.mktemp("interrupted")
    signalled = {}
    for name, (sig, delay, options) in INTERRUPTS.items():
        out = base / name / "theo"
        out.parent.mkdir()
        argv = [sys.executable, "-m", "bayespk.cli", "fit", str(THEO), "--out", str(out), "--chains", "2",
                "--quiet", *options]
        proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=base,
                                preexec_fn=interruptible)
        head = []
        for line in proc.stdout:  # the CLI prints this line just before the sampler starts
            head.append(line)
            if line.startswith("sampling "):
                break
        time.sleep(delay)
        proc.send_signal(sig)
        signalled[name] = (proc, head, out)
    results = {}
    for name, (proc, head, out) in signalled.items():
        stdout, stderr = proc.communicate(timeout=600)  # generous: compiling takes long on a loaded machine
        results[name] = (proc.returncode, "".join(head) + stdout, stderr, out)
    return results


@pytest.mark.parametrize("case", ["tuning", "draws", "pymc"])
def test_interrupt_writes_nothing(case, interrupted):
    rc, out, err, run = interrupted[case]
    phase = "draws" if case == "draws" else "tuning"
    assert rc == 130, err
    assert "sampling 2 chains" in out
    assert f"bayespk fit: interrupted by SIGINT during {phase}" in err
    assert f"nothing written ({run} not created)" in err
    assert "Traceback" not in err + out
    assert list(run.parent.iterdir()) == []  # no run, no temporary directory, no lock


def test_interrupt_with_keep_partial_writes_a_run_marked_interrupted(interrupted):
    rc, out, err, run = interrupted["partial"]
    assert rc == 3, err
    assert "Traceback" not in err + out
    assert "interrupted by SIGTERM during draws; wrote the first" in err
    assert leftovers(run.parent, run.name) == []
    diag = json.loads((run / "diagnostics.json").read_text())
    kept = diag["draws_kept"]
    assert diag["interrupted"] is True and diag["signal"] == "SIGTERM"
    assert 0 < kept == min(diag["draws_completed"]) < diag["draws_requested"] == 1000000
    assert diag["problems"][0].startswith("interrupted by SIGTERM")  # the convergence check never reads OK
    fit = bpk.load(run)
    assert fit.posterior.sizes["chain"] == 2 and fit.posterior.sizes["draw"] == kept
    for name, var in fit.posterior.data_vars.items():
        assert np.isfinite(var.values).all(), name  # trimmed, never NaN-padded
    assert fit.tree["log_likelihood"]["DV"].shape == (2, kept, 132)
    assert bpk.Spec.from_toml(run / "spec.toml").sampler.draws == kept


def test_ctrl_c_during_the_pymc_warm_up_stops_the_fit(monkeypatch):
    """PyMC's sampler swallows a KeyboardInterrupt during the centring warm-up's draws and returns what it
    has; the signal the guard recorded must still stop the fit before the main run starts."""
    spec = bpk.Spec.from_toml(THEO).with_sampler(name="pymc", centering="auto", tune=20, draws=10, chains=1)
    model = bpk.PopulationModel(spec)
    pm_model = model.build()
    caught: list[str] = []

    def warm_up_interrupted(short_run, *args, **kwargs):
        caught.append("SIGINT")  # what the guard's handler does before PyMC catches the KeyboardInterrupt
        return {"CL": 0.5}

    def main_run(*args, **kwargs):
        raise AssertionError("the main run started after Ctrl-C")

    monkeypatch.setattr(FIT_MODULE, "_choose_centering", warm_up_interrupted)
    monkeypatch.setattr(FIT_MODULE.pm, "sample", main_run)
    sampled = FIT_MODULE._sample_pymc(pm_model, model, spec, False, caught)
    assert sampled.tree is None and sampled.signal == "SIGINT"
    with pytest.raises(FIT_MODULE.SamplingInterrupted, match="interrupted by SIGINT during tuning"):
        FIT_MODULE._finish_sampling(sampled, spec.sampler, keep_partial=True)
