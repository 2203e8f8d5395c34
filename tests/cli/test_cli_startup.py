"""Commands that need no model (`prior show`, `data`, `summary`) start fast: they import no PyMC, PyTensor,
ArviZ, nutpie, JAX or matplotlib (measured: about 1 s on the 2-core machine, against about 3-7 s before)."""

import ast
import subprocess
import sys
from pathlib import Path

import pytest
from conftest import MODELS, tiny_fit

REPO = Path(__file__).resolve().parents[2]
HEAVY = {"pymc", "pytensor", "arviz", "nutpie", "jax", "matplotlib"}

SCRIPT = """
import sys
from bayespk.cli import main
rc = main({argv!r})
print("HEAVY=" + repr(sorted(m for m in sys.modules if m.split('.')[0] in {heavy!r})))
sys.exit(rc)
"""


def run_light(*argv) -> tuple[subprocess.CompletedProcess, list[str]]:
    """Run ``bayespk ARGV`` in a fresh interpreter; returns the process and the heavy modules it loaded."""
    code = SCRIPT.format(argv=[str(a) for a in argv], heavy=HEAVY)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=120)
    assert r.returncode == 0, r.stderr
    line = [s for s in r.stdout.splitlines() if s.startswith("HEAVY=")][-1]
    return r, ast.literal_eval(line.removeprefix("HEAVY="))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return tiny_fit(MODELS / "theophylline_1cmt_oral.toml", tmp_path_factory.mktemp("startup") / "theo")


def test_data_imports_no_model_libraries():
    r, heavy = run_light("data", REPO / "bayespk" / "data" / "datasets" / "theophylline.csv")
    assert "valid" in r.stdout and "12 subjects" in r.stdout
    assert heavy == []


def test_summary_imports_no_model_libraries(run_dir):
    r, heavy = run_light("summary", run_dir)
    assert "CL" in r.stdout and "convergence:" in r.stdout
    assert heavy == []


def test_prior_show_imports_no_model_libraries(tmp_path):
    from bayespk.borrowing.mixtures import BetaMixture
    from bayespk.borrowing.prior_file import write_prior

    path = write_prior(tmp_path / "p.json", BetaMixture([0.8, 0.2], [11, 1], [32, 1]), parameter="response")
    r, heavy = run_light("prior", "show", path)
    assert "beta mixture" in r.stdout and "ESS" in r.stdout
    assert heavy == []

