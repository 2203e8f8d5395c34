"""Progress of long steps when the output is not a terminal: `bayespk fit ... | cat` prints compilation and
periodic sampling lines (bayespk.progress), `--quiet` prints none."""

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MODELS, tiny_fit

from bayespk.progress import Progress, interval, step

REPO = Path(__file__).resolve().parents[2]
SPEC = REPO / "models" / "theophylline_1cmt_oral.toml"
PERIODIC = re.compile(r"^sampling: \d+/\d+ draws \(\d+%\), (tuning, )?\d+ divergences?, \d+ s elapsed")


def fit_piped(out: Path, *options: str, seconds: str = "0.1") -> list[str]:
    """``bayespk fit SPEC --out OUT OPTIONS`` with stdout a pipe; its stdout lines."""
    env = dict(os.environ, BAYESPK_PROGRESS_SECONDS=seconds)
    r = subprocess.run([sys.executable, "-m", "bayespk.cli", "fit", str(SPEC), "--out", str(out), *options],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=REPO, env=env, timeout=300)
    assert r.returncode == 0, r.stderr
    return r.stdout.splitlines()


def first(lines: list[str], predicate) -> int:
    return next(i for i, line in enumerate(lines) if predicate(line))


def test_piped_fit_prints_compilation_and_periodic_sampling_lines(tmp_path):
    # 2 x 4000 draws: about 2 s of sampling (0.5 s at 2 x 1000 was too short to be sure of a periodic line,
    # which needs nutpie's progress callback between two 0.25-s waits)
    lines = fit_piped(tmp_path / "run", "--draws", "3000", "--tune", "1000", "--chains", "2", "--seed", "1")
    compiling = first(lines, lambda s: s == "compiling the model (nutpie) ...")
    compiled = first(lines, lambda s: s.startswith("compiling the model: done in "))
    started = first(lines, lambda s: s.startswith("sampling 2 chains x 3000 draws"))
    periodic = [i for i, s in enumerate(lines) if PERIODIC.match(s)]
    done = first(lines, lambda s: re.match(r"^sampling: 8000/8000 draws, \d+ divergences? after tuning, done in "
                                           r"[\d.]+ s$", s))
    table = first(lines, lambda s: s.startswith("parameter "))
    assert periodic, "\n".join(lines)
    assert compiling < compiled < started < periodic[0] <= periodic[-1] < done < table
    counts = [tuple(map(int, re.match(r"sampling: (\d+)/(\d+)", lines[i]).groups())) for i in periodic]
    assert all(("ETA" in lines[i]) == (0 < n < total) for i, (n, total) in zip(periodic, counts))


def test_quiet_fit_prints_no_progress(tmp_path):
    lines = fit_piped(tmp_path / "run", "--draws", "300", "--tune", "300", "--chains", "2", "--seed", "1",
                      "--quiet", seconds="0")
    assert not [s for s in lines if s.startswith(("compiling", "sampling:"))], "\n".join(lines)
    assert any(s.startswith("parameter ") for s in lines)


@pytest.mark.slow
def test_piped_fit_with_pymc_prints_progress(tmp_path):
    lines = fit_piped(tmp_path / "run", "--sampler", "pymc", "--draws", "50", "--tune", "50", "--chains", "1",
                      "--seed", "1", seconds="0")
    compiled = first(lines, lambda s: s.startswith("compiling the model: done in "))
    periodic = [i for i, s in enumerate(lines) if PERIODIC.match(s)]
    done = first(lines, lambda s: s.startswith("sampling: 100/100 draws"))
    assert periodic and compiled < periodic[0] < done


def test_plain_lines_at_most_every_interval(monkeypatch):
    monkeypatch.setenv("BAYESPK_PROGRESS_SECONDS", "3600")
    assert interval() == 3600
    lines = []
    p = Progress("simulate", total=10, unit="tasks", say=lines.append, live=False)
    for i in range(1, 11):
        p.update(i, f"chunk {i}")
    assert lines == []  # none due within the hour
    p.update(10, "last", force=True)
    p.finish()
    assert lines[0].startswith("simulate: 10/10 tasks (100%), last, 0 s elapsed")
    assert re.fullmatch(r"simulate: 10/10 tasks, done in [\d.]+ s", lines[1])
    monkeypatch.setenv("BAYESPK_PROGRESS_SECONDS", "not a number")
    assert interval() == 10


def test_eta_and_disabled():
    lines = []
    p = Progress("sampling", total=8000, unit="draws", say=lines.append, live=False, every=0)
    p.t0 -= 14  # 14 s elapsed
    p.update(1200, "0 divergences")
    assert lines == ["sampling: 1200/8000 draws (15%), 0 divergences, 14 s elapsed, ETA 79 s"]
    quiet = Progress("sampling", total=10, say=lines.append, live=False, every=0, enabled=False)
    quiet.update(5)
    quiet.finish()
    with step("compiling", say=lines.append, enabled=False):
        pass
    assert len(lines) == 1


def test_step_announces_and_times():
    lines = []
    with step("VPC: simulating 5 replicates", say=lines.append):
        pass
    assert lines[0] == "VPC: simulating 5 replicates ..."
    assert re.fullmatch(r"VPC: simulating 5 replicates: done in [\d.]+ s", lines[1])


def test_regimen_simulation_reports_tasks_with_eta(tmp_path):
    import bayespk as bpk

    run = tiny_fit(MODELS / "theophylline_1cmt_oral.toml", tmp_path / "theo")
    lines = []
    bpk.simulate_regimens(bpk.load(run), ["320q12x4", "640q24x2"], n_draws=4, chunk_size=6, progress=lines.append)
    tasks = [s for s in lines if s.startswith("simulate: ") and " tasks " in s]
    assert len(tasks) >= 4 and tasks[-1].startswith(f"simulate: {len(tasks)}/{len(tasks)} tasks (100%), ")
    assert re.match(r"simulate: 1/\d+ tasks \(\d+%\), regimen '.*', subjects 1-6, 4 draws in [\d.]+ s, "
                    r"\d+ s elapsed, ETA \d+ s$", tasks[0]), tasks[0]
