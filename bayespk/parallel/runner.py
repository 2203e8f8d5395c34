"""One runner for workloads of many independent tasks (fits, simulations) on Dask.

:func:`run_tasks` sends each task to a ``dask.distributed`` cluster: a
:class:`~distributed.LocalCluster` of one single-threaded worker process per
core by default, or an existing cluster given by ``client=`` or by its
scheduler address (``scheduler="tcp://host:8786"``; refused with a clear
message when it does not answer within ``connect_timeout`` seconds).

Every finished task is written to ``OUT/tasks/<key>.json`` as it arrives
(written to a temporary file and renamed, so never half a file). Rerunning the
same workload into the same folder skips the tasks already done, so an
interrupted workload resumes where it stopped; tasks that failed are tried
again. A task that raises is recorded with its error and does not stop the
others. ``OUT/workload.json`` holds what identifies the workload (its kind and
settings): a folder holding another workload's results is refused rather
than mixed.

Models compile once: a task that fits a model builds it with
``observations_as_data=True``, so the compiled log-density is keyed by the
model's structure and shapes, not by the observed values
(:mod:`bayespk.compile_cache`), and every replicate after the first one on a
machine links the stored callbacks instead of compiling.
"""

from __future__ import annotations

import json
import logging
import os
import time
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from bayespk.errors import BayesPKError
from bayespk.progress import Progress

__all__ = ["run_tasks", "Workload", "TASKS_DIR"]

TASKS_DIR = "tasks"
IDENTITY_FILE = "workload.json"


@dataclass
class Workload:
    """What a workload produced: ``done`` maps task keys to their results, ``failed`` to their errors."""

    out: Path
    done: dict[str, dict] = field(default_factory=dict)
    failed: dict[str, str] = field(default_factory=dict)
    skipped: int = 0  # finished in an earlier run of the same workload
    seconds: float = 0.0
    workers: int = 0

    def __repr__(self) -> str:
        return (f"Workload({self.out}: {len(self.done)} done ({self.skipped} from an earlier run), "
                f"{len(self.failed)} failed, {self.seconds:.1f} s on {self.workers} workers)")


def _call(fn: Callable, key: str, payload) -> dict:
    """Run one task on a worker; an exception becomes a recorded failure, not a lost worker."""
    t0 = time.perf_counter()
    try:
        value = fn(payload)
    except Exception as e:  # noqa: BLE001 - recorded with the task; the others go on
        return {"key": key, "status": "failed", "error": f"{type(e).__name__}: {e}",
                "traceback": traceback.format_exc(), "seconds": time.perf_counter() - t0}
    return {"key": key, "status": "done", "result": value, "seconds": time.perf_counter() - t0,
            "worker": os.getpid()}


def _write_json(path: Path, obj) -> None:
    partial = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        partial.write_text(json.dumps(obj, indent=1, allow_nan=True, default=_json_default), encoding="utf-8")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _json_default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.ndarray):
        return o.tolist()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _check_identity(out: Path, identity: dict) -> None:
    """Refuse a folder that holds another workload's results; record this one's identity."""
    path = out / IDENTITY_FILE
    if path.is_file():
        try:
            before = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as e:
            raise BayesPKError(f"{path}: unreadable ({e}); remove the folder or choose another --out") from None
        if before != json.loads(json.dumps(identity, default=_json_default)):
            changed = sorted(k for k in set(before) | set(identity) if before.get(k) != identity.get(k))
            raise BayesPKError(f"{out}: holds the results of another workload (differs in {', '.join(changed)}); "
                               "rerun with the same settings to resume it, or choose another --out")
    elif (out / TASKS_DIR).is_dir() and any((out / TASKS_DIR).glob("*.json")):
        raise BayesPKError(f"{out}: holds task results but no {IDENTITY_FILE}; choose another --out")
    else:
        _write_json(path, identity)


def _finished(out: Path) -> dict[str, dict]:
    """Results of tasks done in an earlier run (failures are tried again)."""
    done = {}
    for p in sorted((out / TASKS_DIR).glob("*.json")):
        try:
            rec = json.loads(p.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            continue  # unreadable: the task is run again
        if rec.get("status") == "done":
            done[rec["key"]] = rec
    return done


def _client(client, scheduler: str | None, workers: int | None, connect_timeout: float):
    """``(client, owned)``: the given client, one connected to ``scheduler``, or a new LocalCluster's."""
    from distributed import Client, LocalCluster

    if client is not None:
        return client, False
    if scheduler is not None:
        try:
            return Client(scheduler, timeout=f"{connect_timeout}s"), True
        except (OSError, TimeoutError, ValueError) as e:
            raise BayesPKError(f"scheduler {scheduler}: no Dask scheduler answered within {connect_timeout:g} s "
                               f"({type(e).__name__}: {e}); check the address and that the scheduler runs") from None
    n = workers or os.cpu_count() or 1
    if n < 1:
        raise BayesPKError(f"workers: expected at least 1, got {n}")
    cluster = LocalCluster(n_workers=n, threads_per_worker=1, processes=True, dashboard_address=None,
                           silence_logs=logging.ERROR)
    return Client(cluster), True


def run_tasks(fn: Callable, tasks: Mapping[str, object], out: str | Path, *, identity: dict, name: str = "workload",
              client=None, scheduler: str | None = None, workers: int | None = None,
              connect_timeout: float = 10.0, progress: Callable[[str], None] | bool | None = None) -> Workload:
    """Run ``fn(payload)`` for every ``key: payload`` of ``tasks`` on Dask, persisting each result.

    Parameters
    ----------
    fn : callable
        A module-level function (it is sent to the workers) returning a JSON-serialisable dict.
    tasks : mapping
        Task key (used as a file name: letters, digits, ``-_.``) to payload.
    out : path
        Output folder; ``tasks/<key>.json`` per task and ``workload.json``.
    identity : dict
        What identifies the workload (kind, settings); a folder holding another is refused.
    name : str
        Shown in progress lines.
    client : distributed.Client, optional
        An existing client; else ``scheduler``'s, else a new LocalCluster's.
    scheduler : str, optional
        Address of a running Dask scheduler (``tcp://host:8786``).
    workers : int, optional
        Worker processes of the LocalCluster (default: one per core).
    connect_timeout : float
        Seconds to wait for ``scheduler``.
    progress : callable, bool or None
        Called with each progress line; False: silent; None: :class:`bayespk.progress.Progress` lines on
        stdout (a live line on a terminal): tasks finished, failed, running, ETA.

    Returns
    -------
    Workload
    """
    import re

    bad = [k for k in tasks if not re.fullmatch(r"[A-Za-z0-9_.-]+", str(k))]
    if bad:
        raise BayesPKError(f"task key {bad[0]!r}: only letters, digits and -_. (it names a file)")
    if workers is not None and workers < 1:
        raise BayesPKError(f"workers: expected at least 1, got {workers}")
    out = Path(out)
    (out / TASKS_DIR).mkdir(parents=True, exist_ok=True)
    _check_identity(out, identity)
    result = Workload(out=out)
    earlier = _finished(out)
    for key in tasks:
        if key in earlier:
            result.done[key] = earlier[key]["result"]
            result.skipped += 1
    todo = {k: v for k, v in tasks.items() if k not in result.done}
    bar = Progress(name, len(tasks), unit="tasks", say=progress if callable(progress) else None,
                   live=False if callable(progress) else None, enabled=progress is not False)
    t0 = time.perf_counter()

    def show(running: int, final: bool = False) -> None:
        finished = len(result.done) + len(result.failed)
        detail = f"{len(result.failed)} failed, {running} running" + (
            f", {result.skipped} from an earlier run" if result.skipped else "")
        bar.update(finished, detail, force=final)
        if final:
            bar.finish(f"{len(result.done)} done, {len(result.failed)} failed")

    if not todo:
        show(0, final=True)
        return result
    from distributed import as_completed

    dask_client, owned = _client(client, scheduler, workers, connect_timeout)
    try:
        result.workers = len(dask_client.scheduler_info(n_workers=-1).get("workers", {})) \
            if _takes_n_workers(dask_client) else len(dask_client.scheduler_info().get("workers", {}))
        futures = [dask_client.submit(_call, fn, key, payload, pure=False, key=f"{name}-{key}-{os.getpid()}")
                   for key, payload in todo.items()]
        running = len(futures)
        try:
            for future in as_completed(futures):
                rec = future.result()
                running -= 1
                _write_json(out / TASKS_DIR / f"{rec['key']}.json", rec)
                if rec["status"] == "done":
                    result.done[rec["key"]] = rec["result"]
                    result.failed.pop(rec["key"], None)
                else:
                    result.failed[rec["key"]] = rec["error"]
                show(running)
        except KeyboardInterrupt:
            dask_client.cancel(futures)
            raise
    finally:
        if owned:
            cluster = getattr(dask_client, "cluster", None)
            dask_client.close()
            if cluster is not None:
                cluster.close()
    result.seconds = time.perf_counter() - t0
    show(0, final=True)
    return result


def _takes_n_workers(client) -> bool:
    import inspect

    try:
        return "n_workers" in inspect.signature(client.scheduler_info).parameters
    except (TypeError, ValueError):
        return False
