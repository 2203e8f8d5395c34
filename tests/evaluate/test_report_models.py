"""`bayespk report` on a tiny fit of every bundled model (models/*.toml): exit 0, every section, no local path.

A fit of 1 chain x 30 draws and a report with 10 VPC replicates and 20 NPDE simulations take about 20 s
(theophylline, phenobarbital) to 1-3 min (the CAR-T models, PK/PD, the models written as ODEs, whose
predictions go through JAX; every prediction graph of a run shares one traced solver) on 2 cores. Every
bundled model is run, a new one included; all but theophylline are marked slow. Where Chromium is installed
(CI installs it) each report is also loaded in headless Chromium, which must decode every figure.
"""

import re
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import pytest
from conftest import MODELS, ROOT

from bayespk.cli import main
from bayespk.model.spec import Spec

SECTIONS = ("model", "data", "prior-table", "parameters", "convergence", "vpc", "pcvpc", "gof", "npde",
            "covariates", "priors", "loo")
# 1 chain, 30 draws after 20 tuning steps (PSIS-LOO needs 25 draws at least) of at most 31 leapfrog steps each:
# a run to report on, not a posterior to rely on (tree depth 10 took 200 s for the mechanistic CAR-T model)
FIT = ["--draws", "30", "--tune", "20", "--chains", "1", "--seed", "1", "--max-treedepth", "5", "--quiet"]
REPORT = ["--n-rep", "10", "--n-sim", "20"]


FAST = {"theophylline_1cmt_oral"}
FAMILIES = {"phenobarbital_1cmt_iv", "pkpd_emax_simulated", "cart_tisagenlecleucel_like", "mm_2cmt_iv"}


def _slow(path: Path) -> bool:
    return path.stem not in FAST


MODEL_FILES = [pytest.param(p, id=p.stem, marks=[pytest.mark.slow] if _slow(p) else [])
               for p in sorted(MODELS.glob("*.toml"))]


def test_every_family_is_bundled_and_reported():
    """One model of each family (closed form oral and iv, PK/PD, CAR-T, written as equations) stays bundled."""
    assert FAST | FAMILIES <= {p.stem for p in MODELS.glob("*.toml")}
    assert len(MODEL_FILES) >= 12


def _text_outside_images(html: str) -> str:
    """The report without its base64 figures (whose characters could spell anything)."""
    return re.sub(r'src="data:image/png;base64,[^"]*"', 'src=""', html)


@pytest.mark.parametrize("path", MODEL_FILES)
def test_report_of_every_bundled_model(path, tmp_path, capsys):
    run = tmp_path / path.stem
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["fit", str(path), "--out", str(run), *FIT]) == 0
        capsys.readouterr()
        rc = main(["report", str(run), *REPORT])
    out, err = capsys.readouterr()
    assert rc == 0, err
    html = (run / "report.html").read_text(encoding="utf-8")
    for anchor in SECTIONS:
        assert f'<section id="{anchor}">' in html, f"no section {anchor!r}"
    from bayespk.fit import load

    # a PK/PD model (built-in PD or a pd_output written as equations) has the checks of its PD observations
    assert ('<section id="pd">' in html) == load(run).model.has_pd
    assert "warning" not in err and 'class="section-failed"' not in html, err
    text = _text_outside_images(html)
    for local in {str(ROOT), str(Path.home()), str(tmp_path), tempfile.gettempdir(), str(MODELS / "data")}:
        assert local not in text, f"{local} in the report"
    spec = Spec.from_toml(path)
    assert Path(spec.data.path).name in text
    model = re.search(r'<section id="model">(.*?)</section>', html, re.S).group(1)
    assert all(p in model for p in spec.parameters)
    _renders_in_chromium(run / "report.html", tmp_path, html.count('<img alt="figure"'))


CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


def _renders_in_chromium(report: Path, tmp_path: Path, n_images: int) -> None:
    """Headless Chromium loads the report and decodes every embedded figure (skipped where it is absent;
    CI installs it)."""
    if CHROMIUM is None:
        return
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=5000", "--dump-dom"]
    dom = subprocess.run([*flags, report.as_uri()], capture_output=True, text=True, timeout=180)
    assert dom.returncode == 0, dom.stderr[-2000:]
    m = re.search(r'data-images="(\d+)/(\d+)"', dom.stdout)
    assert m, "the page's load handler did not run"
    assert int(m.group(1)) == int(m.group(2)) == n_images > 0, f"images decoded: {m.group(0)} of {n_images}"
