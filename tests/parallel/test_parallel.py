"""The Dask runner for workloads of many tasks: persisted results, resume, failures, clusters, bad input."""

import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest
from conftest import interruptible

from bayespk.errors import BayesPKError
from bayespk.parallel import run_tasks


def test_failure_is_recorded_and_a_rerun_skips_finished_tasks(tmp_path):
    def square(p):
        if p == 3:
            raise ValueError("three is refused")
        return {"square": p * p, "pid": os.getpid()}

    tasks = {f"t{i}": i for i in range(6)}
    lines = []
    first = run_tasks(square, tasks, tmp_path, identity={"kind": "squares"}, workers=2, progress=lines.append)
    assert first.failed == {"t3": "ValueError: three is refused"}
    assert {k: v["square"] for k, v in first.done.items()} == {f"t{i}": i * i for i in range(6) if i != 3}
    assert len({v["pid"] for v in first.done.values()} - {os.getpid()}) >= 1  # ran in worker processes
    rec = json.loads((tmp_path / "tasks" / "t3.json").read_text())
    assert rec["status"] == "failed" and "three is refused" in rec["traceback"]
    assert lines and lines[-1].startswith("workload: 6/6 tasks, 5 done, 1 failed, done in")
    before = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "tasks").glob("*.json") if p.name != "t3.json"}

    def fixed(p):
        return {"square": p * p, "pid": os.getpid()}

    second = run_tasks(fixed, tasks, tmp_path, identity={"kind": "squares"}, workers=1, progress=False)
    assert second.skipped == 5 and not second.failed
    assert second.done["t3"]["square"] == 9
    after = {p.name: p.stat().st_mtime_ns for p in (tmp_path / "tasks").glob("*.json") if p.name != "t3.json"}
    assert after == before  # finished tasks were not run again


def test_a_folder_of_another_workload_is_refused(tmp_path):
    run_tasks(lambda p: {"v": p}, {"a": 1}, tmp_path, identity={"kind": "x", "n": 1}, workers=1, progress=False)
    with pytest.raises(BayesPKError, match="another workload.*differs in n"):
        run_tasks(lambda p: {"v": p}, {"a": 1}, tmp_path, identity={"kind": "x", "n": 2}, workers=1,
                  progress=False)


def test_existing_cluster_by_scheduler_address(tmp_path):
    from distributed import LocalCluster

    with LocalCluster(n_workers=1, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        r = run_tasks(lambda p: {"pid": os.getpid(), "v": p + 1}, {"a": 1, "b": 2}, tmp_path,
                      identity={"kind": "y"}, scheduler=cluster.scheduler_address, progress=False)
        assert {k: v["v"] for k, v in r.done.items()} == {"a": 2, "b": 3}
        assert r.workers == 1
        assert all(v["pid"] != os.getpid() for v in r.done.values())


def test_bad_input_is_refused(tmp_path):
    t0 = time.perf_counter()
    with pytest.raises(BayesPKError, match="scheduler tcp://127.0.0.1:9: no Dask scheduler answered within 2 s"):
        run_tasks(lambda p: p, {"a": 1}, tmp_path / "s", identity={"kind": "z"}, scheduler="tcp://127.0.0.1:9",
                  connect_timeout=2, progress=False)
    assert time.perf_counter() - t0 < 30
    with pytest.raises(BayesPKError, match="workers: expected at least 1, got 0"):
        run_tasks(lambda p: p, {"a": 1}, tmp_path / "w", identity={"kind": "z"}, workers=0)
    with pytest.raises(BayesPKError, match="task key 'a/b'"):
        run_tasks(lambda p: p, {"a/b": 1}, tmp_path / "k", identity={"kind": "z"}, workers=1)


SCRIPT = textwrap.dedent("""
    import sys, time
    from bayespk.parallel import run_tasks

    def slow(p):
        time.sleep(2.0)  # 7 tasks still to run when the test interrupts: about 14 s, room on a loaded machine
        return {"v": p}

    if __name__ == "__main__":
        r = run_tasks(slow, {f"t{i:02d}": i for i in range(10)}, sys.argv[1], identity={"kind": "slow"}, workers=1,
                      progress=False)
        print(f"done {len(r.done)} skipped {r.skipped} failed {len(r.failed)}", flush=True)
""")


def test_interrupted_workload_resumes_where_it_stopped(tmp_path):
    script = tmp_path / "work.py"
    script.write_text(SCRIPT)
    out = tmp_path / "out"
    proc = subprocess.Popen([sys.executable, str(script), str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=interruptible)
    deadline = time.time() + 120
    while time.time() < deadline and len(list((out / "tasks").glob("t*.json"))) < 3:
        time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=60)
    finished = sorted(p.name for p in (out / "tasks").glob("t*.json"))
    assert proc.returncode != 0, (finished, stdout, stderr[-2000:])
    assert 3 <= len(finished) < 10
    again = subprocess.run([sys.executable, str(script), str(out)], capture_output=True, text=True, timeout=180)
    assert again.returncode == 0, again.stderr
    assert f"done 10 skipped {len(finished)} failed 0" in again.stdout


# ----------------------------------------------------------------------------- command line
PHENO = __import__("conftest").MODELS / "phenobarbital_1cmt_iv.toml"


@pytest.mark.parametrize("argv, message", [
    (["kfold", str(PHENO), "--k", "500"], "k = 500 folds is more than the 59 subjects"),
    (["covsearch", str(PHENO), "--candidate", "CL:NOPE:power:1"], "no column 'NOPE' in the data"),
    (["covsearch", str(PHENO), "--candidate", "CL-WT"], "expected PARAMETER:COLUMN:EFFECT[:REFERENCE]"),
    (["sbc", str(PHENO), "--n", "0"], "n: expected a positive number of replicates, got 0"),
    (["simest", str(PHENO), "--truth", "CL=abc"], "--truth: CL = 'abc' is not a number"),
    (["sbc", str(PHENO), "--n", "2", "--scheduler", "tcp://127.0.0.1:9"], "no Dask scheduler answered"),
])  # fmt: skip
def test_cli_refuses_bad_workloads(argv, message, tmp_path, capsys):
    from bayespk.cli import main

    assert main([*argv, "--out", str(tmp_path / "w")]) == 2
    assert message in capsys.readouterr().err


def _kfold_folder(path, elpd: dict, folds: dict):
    (path / "tasks").mkdir(parents=True)
    (path / "workload.json").write_text(json.dumps({"kind": "kfold", "k": 2}))
    for f in sorted(set(folds.values())):
        rec = {"key": f"fold{f:03d}", "status": "done", "result": {
            "fold": f, "elpd": {i: elpd[i] for i in elpd if folds[i] == f}, "divergences": 0, "max_r_hat": 1.0}}
        (path / "tasks" / f"fold{f:03d}.json").write_text(json.dumps(rec))


def test_cli_compare_reads_kfold_folders(tmp_path, capsys):
    from bayespk.cli import main

    folds = {"1": 0, "2": 0, "3": 1, "4": 1}
    _kfold_folder(tmp_path / "good", {"1": -5.0, "2": -6.0, "3": -5.5, "4": -4.0}, folds)
    _kfold_folder(tmp_path / "bad", {"1": -7.0, "2": -6.5, "3": -8.0, "4": -6.0}, folds)
    assert main(["compare", str(tmp_path / "bad"), str(tmp_path / "good"), "--out", str(tmp_path / "c.csv")]) == 0
    out = capsys.readouterr().out
    assert out.index("good") < out.index("bad")  # best first
    import pandas as pd

    table = pd.read_csv(tmp_path / "c.csv", index_col=0)
    assert table.loc["good", "elpd_kfold"] == pytest.approx(-20.5)
    assert table.loc["bad", "elpd_diff"] == pytest.approx(7.0)
    diffs = [2.0, 0.5, 2.5, 2.0]
    import numpy as np

    assert table.loc["bad", "dse"] == pytest.approx(np.sqrt(4 * np.var(diffs, ddof=1)))
