import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"


def tiny_fit(spec: Path, out: Path, draws: int = 20, tune: int = 20, seed: int = 1) -> Path:
    """``bayespk fit SPEC --out OUT`` with 2 short chains (for tests of what reads a run directory)."""
    import warnings

    from bayespk.cli import main

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["fit", str(spec), "--out", str(out), "--draws", str(draws), "--tune", str(tune),
                     "--chains", "2", "--seed", str(seed), "--quiet"]) == 0
    return out


@pytest.fixture(autouse=True)
def _run_in_tmp_cwd(tmp_path, monkeypatch):
    """Tests never write into the repository."""
    monkeypatch.chdir(tmp_path)


def pytest_configure(config):
    os.environ.setdefault("PYTENSOR_FLAGS", "")


def interruptible() -> None:
    """``preexec_fn`` of a child process that a test interrupts with SIGINT: Ctrl-C's default action.

    A shell without job control starts background commands with SIGINT ignored (``make test &``,
    ``nohup ... &``), and an ignored signal stays ignored through ``exec``: Python then installs no
    KeyboardInterrupt handler and the child would never see the test's Ctrl-C.
    """
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)
