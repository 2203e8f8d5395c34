import os
from pathlib import Path

import matplotlib
import pytest

matplotlib.use("Agg")

ROOT = Path(__file__).resolve().parents[1]
MODELS = ROOT / "models"


@pytest.fixture(autouse=True)
def _run_in_tmp_cwd(tmp_path, monkeypatch):
    """Tests never write into the repository."""
    monkeypatch.chdir(tmp_path)


def pytest_configure(config):
    os.environ.setdefault("PYTENSOR_FLAGS", "")
