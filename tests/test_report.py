"""The evaluation CLI (vpc, report, compare) on a run directory, and the HTML report in a real browser."""

import re
import shutil
import subprocess
import warnings

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest

from bayespk.cli import main

from conftest import MODELS

PHENO = MODELS / "phenobarbital_1cmt_iv.toml"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "pheno"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["fit", str(PHENO), "--out", str(out), "--draws", "150", "--tune", "200", "--chains", "2",
                     "--seed", "3", "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def report(run_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["report", str(run_dir), "--n-rep", "50", "--n-sim", "100"]) == 0
    return run_dir / "report.html"


def test_cli_vpc_writes_png_and_csv(run_dir, tmp_path):
    assert main(["vpc", str(run_dir), "--out", str(tmp_path), "--pred-corr", "--strat", "APGRLOW",
                 "--n-rep", "40", "--bins", "4"]) == 0
    table = pd.read_csv(tmp_path / "vpc.csv")
    assert set(table.strat) == {0.0, 1.0}
    assert {"obs_p50", "sim_p50_lo", "sim_p50_hi", "sim_p5_median", "obs_p95"} <= set(table.columns)
    img = mpimg.imread(tmp_path / "vpc.png")
    assert img.shape[0] > 200 and img.shape[1] > 400


def test_cli_vpc_refuses_bad_options(run_dir, tmp_path, capsys):
    assert main(["vpc", str(run_dir), "--out", str(tmp_path), "--strat", "NOPE"]) == 2
    assert "strat: no column 'NOPE'" in capsys.readouterr().err
    assert main(["vpc", str(run_dir), "--out", str(tmp_path), "--n-rep", "0"]) == 2
    assert main(["vpc", str(run_dir), "--out", str(tmp_path), "--bins", "a,b"]) == 2
    assert main(["vpc", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_report_is_self_contained(report):
    text = report.read_text()
    for section in ("parameters", "convergence", "vpc", "gof", "npde", "priors", "loo"):
        assert f'id="{section}"' in text
    images = re.findall(r'<img alt="figure" src="data:image/png;base64,', text)
    assert len(images) == 7  # VPC, pcVPC, GOF, individual fits, NPDE, etas, priors
    assert not re.search(r'(src|href)="(https?:)?//', text)  # nothing fetched from elsewhere
    assert "CL" in text and "omega_V" in text


def test_cli_compare_two_runs(run_dir, tmp_path, capsys):
    other = tmp_path / "pheno_no_apgar"
    spec = PHENO.read_text().split("[[covariates]]")
    # keep the two weight effects, drop the Apgar effect
    no_apgar = spec[0] + "[[covariates]]" + spec[1] + "[[covariates]]" + spec[2].split("[error]")[0] \
        + "[error]" + spec[3].split("[error]")[1]
    (tmp_path / "spec.toml").write_text(no_apgar.replace('path = "../', f'path = "{MODELS.parent}/'))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["fit", str(tmp_path / "spec.toml"), "--out", str(other), "--draws", "150", "--tune", "200",
                     "--chains", "2", "--seed", "3", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["compare", str(run_dir), str(other), "--out", str(tmp_path / "cmp.csv")]) == 0
    table = pd.read_csv(tmp_path / "cmp.csv", index_col=0)
    assert set(table.index) == {"pheno", "pheno_no_apgar"}
    assert table.elpd_diff.max() == 0 and (table.elpd_diff <= 0).all() and np.isfinite(table.elpd).all()
    assert table.elpd.iloc[0] == table.elpd.max()  # best first


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (CI installs it)")
def test_report_renders_in_headless_chromium(report, tmp_path):
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(flags + ["--virtual-time-budget=5000", "--dump-dom", report.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    m = re.search(r'data-images="(\d+)/(\d+)"', dom.stdout)
    assert m, "the page's load handler did not run"
    assert m.group(1) == m.group(2) and int(m.group(2)) == 7, f"images decoded: {m.group(0)}"

    shot = tmp_path / "report.png"
    res = subprocess.run(flags + ["--window-size=1280,3000", f"--screenshot={shot}", report.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    img = mpimg.imread(shot)[..., :3]
    # The VPC's shaded bands: matplotlib C0 (blue) and C3 (red) at alpha 0.25 over white.
    blue = np.array([0.12, 0.47, 0.71]) * 0.25 + 0.75
    red = np.array([0.84, 0.15, 0.16]) * 0.25 + 0.75
    near = lambda c: (np.abs(img - c).max(axis=-1) < 0.04).sum()  # noqa: E731
    assert near(blue) > 2000 and near(red) > 1000, (near(blue), near(red))
