"""Every notebook in notebooks/ runs from top to bottom without an error.

The notebooks run in fast mode (``BAYESPK_FAST=1``: short chains) with the
notebooks folder as working directory, as a reader would run them. The
executed copy is kept in memory only; the committed outputs are left alone.
"""

from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient

NOTEBOOKS = Path(__file__).resolve().parents[2] / "notebooks"
PATHS = sorted(NOTEBOOKS.glob("*.ipynb"))


@pytest.mark.parametrize("path", PATHS, ids=[p.name for p in PATHS])
def test_notebook_runs(path, monkeypatch):
    monkeypatch.setenv("BAYESPK_FAST", "1")  # inherited by the kernel process
    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(nb, timeout=900, kernel_name="python3", allow_errors=False,
                            resources={"metadata": {"path": str(NOTEBOOKS)}})
    client.execute()  # raises CellExecutionError naming the failing cell
