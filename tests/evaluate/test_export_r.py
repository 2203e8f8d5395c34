"""The README's R example, examples/read_nonmem_export.R, reads what ``bayespk export`` writes (base R only):
the same rows, columns, IDs (text IDs exactly) and values as the Python side. Skipped when Rscript is absent
(.ci/run installs r-base-core where it can)."""

from __future__ import annotations

import shutil
import subprocess
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import MODELS, ROOT

import bayespk as bpk
from bayespk.cli import main
from bayespk.evaluate.export import ESTIMATE, write_nonmem_table

RSCRIPT = shutil.which("Rscript")
EXAMPLE = ROOT / "examples" / "read_nonmem_export.R"
THEO = MODELS / "theophylline_1cmt_oral.toml"
IDS = {"1": "001", "2": "002", "3": "S 3"}  # leading zeros and a space: what a careless reader changes

pytestmark = pytest.mark.skipif(RSCRIPT is None, reason="Rscript not installed (CI installs r-base-core)")


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    """A tiny fit of three theophylline subjects with text IDs, exported with NPDE."""
    tmp = tmp_path_factory.mktemp("export_r")
    data = pd.read_csv(bpk.datasets.path("theophylline"), dtype={"ID": str})
    data = data[data.ID.isin(IDS)].assign(ID=lambda d: d.ID.map(IDS))
    data.to_csv(tmp / "theo3.csv", index=False)
    model = bpk.PopulationModel(bpk.Spec.from_toml(THEO).with_data(str(tmp / "theo3.csv")))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        run = bpk.fit(model, draws=10, tune=10, chains=1, seed=2, progress=False).write_run(tmp / "run")
        assert main(["export", str(run), "--draws", "10", "--n-sim", "20"]) == 0
    return run


def _rscript(folder) -> subprocess.CompletedProcess:
    return subprocess.run([RSCRIPT, "--vanilla", str(EXAMPLE), str(folder)], capture_output=True, text=True,
                          timeout=120)


def _printed(stdout: str) -> dict[str, list[str]]:
    """The script's ``name<TAB>value<TAB>value...`` lines."""
    return {name: values for name, *values in (line.split("\t") for line in stdout.splitlines())}


def _read(path, **kwargs) -> pd.DataFrame:
    """A NONMEM table read as the README says (the tests' reading of the same file)."""
    return pd.read_csv(path, sep=r"\s+", skiprows=1, **kwargs)


def test_r_reads_sdtab_patab_and_ext_as_python_does(exported):
    res = _rscript(exported / "nonmem")
    assert res.returncode == 0, res.stderr
    got = _printed(res.stdout)
    sd = _read(exported / "nonmem" / "sdtab", dtype={"ID": str})
    pa = _read(exported / "nonmem" / "patab", dtype={"ID": str})
    ext = _read(exported / "nonmem" / "run.ext")
    assert got["sdtab_rows"] == [str(len(sd))] and len(sd) == len(pd.read_csv(exported / "nonmem" / "sdtab.csv"))
    assert got["sdtab_columns"] == list(sd.columns) and "NPDE" in sd.columns
    assert got["sdtab_ids"] == list(sd.ID.unique()) == ["001", "002", "S 3"]  # exactly as in the data
    assert float(got["sdtab_DV_sum"][0]) == pytest.approx(sd.DV.sum(), rel=1e-12)
    assert got["patab_rows"] == [str(len(pa))] == ["3"] and got["patab_ids"] == list(pa.ID)
    assert got["patab_columns"] == list(pa.columns)
    assert got["ext_rows"] == [str(len(ext))] and got["ext_columns"] == list(ext.columns)
    assert "OMEGA(1,1)" in got["ext_columns"]  # check.names = FALSE: names as NONMEM writes them
    estimate = ext[ext.ITERATION == ESTIMATE].iloc[0]
    thetas = [c for c in ext.columns if c.startswith("THETA")]
    np.testing.assert_allclose([float(v) for v in got["ext_theta_median"]], estimate[thetas].to_numpy(float),
                               rtol=1e-12)
    assert float(got["ext_OBJ_median"][0]) == pytest.approx(estimate.OBJ, rel=1e-12)


def test_r_example_takes_the_run_directory_too(exported):
    res = _rscript(exported)  # RUN_DIR: the script reads RUN_DIR/nonmem
    assert res.returncode == 0, res.stderr
    assert _printed(res.stdout)["patab_ids"] == ["001", "002", "S 3"]


def test_r_example_stops_naming_a_missing_column(exported, tmp_path):
    folder = tmp_path / "nonmem"
    shutil.copytree(exported / "nonmem", folder)
    sd = _read(folder / "sdtab", dtype={"ID": str})
    write_nonmem_table(sd.drop(columns=["IWRES", "PRED"]), folder / "sdtab")
    res = _rscript(folder)
    assert res.returncode != 0
    assert f"{folder / 'sdtab'}: required columns missing: PRED, IWRES" in res.stderr, res.stderr
    res = _rscript(tmp_path / "nowhere")
    assert res.returncode != 0 and "sdtab: no such file; write it with `bayespk export" in res.stderr
