"""The CLI: user errors exit 2 with 'bayespk <cmd>: error: ...' on stderr and no traceback.

Nothing here samples: ``bayespk fit`` must refuse bad data or a bad spec before any
sampling starts (the in-process tests replace the sampler with one that fails the test).
"""

from __future__ import annotations

import importlib
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from bayespk.cli import EXIT_USER_ERROR, main
from bayespk.data import bundled

REPO = Path(__file__).resolve().parents[2]

GOOD_CSV = """\
ID,TIME,AMT,DV,EVID,MDV
1,0,100,.,1,1
1,1,.,5.0,0,0
1,2,.,3.0,0,0
2,0,100,.,1,1
2,1,.,4.0,0,0
"""
# row 3 has a negative concentration
BAD_CSV = GOOD_CSV.replace("1,2,.,3.0,0,0", "1,2,.,-3.0,0,0")

SPEC = """\
[data]
path = "{data}"

[model]
structure = "1cmt_iv"

[parameters.CL]
guess = 1.0

[parameters.V]
guess = 10.0

[error]
model = "additive"

[sampler]
chains = 1
draws = 10
tune = 10
{extra}
"""


@pytest.fixture(autouse=True)
def no_sampling(monkeypatch):
    """Fail the test if the CLI ever gets as far as sampling."""
    fit_module = importlib.import_module("bayespk.fit")  # the module (the attribute bayespk.fit is the function)

    def refuse(*args, **kwargs):
        raise AssertionError("the CLI started sampling; it should have refused the input first")

    monkeypatch.setattr(fit_module, "fit", refuse)


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text))
    return path


def spec_file(tmp_path: Path, data: str | Path, extra: str = "", name: str = "spec.toml") -> Path:
    return write(tmp_path / name, SPEC.format(data=Path(data).as_posix(), extra=extra))


def run_main(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


def assert_user_error(rc: int, err: str, command: str, *needles: str) -> None:
    assert rc == EXIT_USER_ERROR == 2
    assert err.startswith(f"bayespk {command}: error: "), err
    assert "Traceback" not in err
    for n in needles:
        assert n in err, f"{n!r} not in {err!r}"


# --------------------------------------------------------------------------- bayespk data


def test_data_bundled_theophylline(capsys):
    path = bundled.path("theophylline")
    rc, out, err = run_main(capsys, "data", path)
    assert rc == 0
    assert err == ""
    assert out.startswith(f"{path}: valid\n")
    assert "144 rows, 12 subjects" in out
    assert "132 observations used (0 below LLOQ, censored)" in out
    assert "12 dose records (12 doses with ADDL repeats)" in out
    assert "covariates: WT" in out


def test_data_malformed(capsys, tmp_path):
    p = write(tmp_path / "bad.csv", BAD_CSV)
    rc, out, err = run_main(capsys, "data", p)
    assert_user_error(rc, err, "data", str(p), "row 3, column DV: negative concentration -3")
    assert out == ""


def test_data_missing_file(capsys, tmp_path):
    rc, _, err = run_main(capsys, "data", tmp_path / "nope.csv")
    assert_user_error(rc, err, "data", "nope.csv: no such file")


def test_data_not_utf8(capsys, tmp_path):
    p = tmp_path / "latin1.csv"
    p.write_bytes(GOOD_CSV.replace("MDV", "MDV,UNIT").replace(",0\n", ",0,\u00b5g\n").encode("latin-1"))
    rc, _, err = run_main(capsys, "data", p)
    assert_user_error(rc, err, "data", "not UTF-8 text")


def test_data_alias(capsys, tmp_path):
    p = write(tmp_path / "a.csv", GOOD_CSV.replace("DV", "conc"))
    rc, out, _ = run_main(capsys, "data", p, "--alias", "conc=DV")
    assert rc == 0
    assert "3 observations used" in out


def test_data_bad_alias_syntax(capsys, tmp_path):
    p = write(tmp_path / "a.csv", GOOD_CSV)
    rc, _, err = run_main(capsys, "data", p, "--alias", "conc")
    assert_user_error(rc, err, "data", "--alias 'conc': expected NAME=COLUMN")


def test_data_alias_names_no_column(capsys, tmp_path):
    p = write(tmp_path / "a.csv", GOOD_CSV)
    rc, _, err = run_main(capsys, "data", p, "--alias", "conc=DV")
    assert_user_error(rc, err, "data", "alias 'CONC' names no column of the dataset")


# --------------------------------------------------------------------------- bayespk fit


def test_fit_malformed_dataset_fails_before_sampling(capsys, tmp_path):
    data = write(tmp_path / "bad.csv", BAD_CSV)
    spec = spec_file(tmp_path, data)
    out_dir = tmp_path / "run"
    rc, out, err = run_main(capsys, "fit", spec, "--out", out_dir)
    assert_user_error(rc, err, "fit", str(data), "row 3, column DV: negative concentration -3")
    assert not out_dir.exists()


def test_fit_model_level_data_error_fails_before_sampling(capsys, tmp_path):
    data = write(tmp_path / "good.csv", GOOD_CSV)
    extra = '[[covariates]]\nparameter = "CL"\ncolumn = "WT"\neffect = "power"\nreference = 70\n'
    spec = spec_file(tmp_path, data, extra=extra)
    rc, _, err = run_main(capsys, "fit", spec, "--out", tmp_path / "run")
    assert_user_error(rc, err, "fit", "column WT: the power effect of WT on CL uses covariate WT",
                      "has no such column")
    assert not (tmp_path / "run").exists()


def test_fit_data_override_malformed(capsys, tmp_path):
    good = write(tmp_path / "good.csv", GOOD_CSV)
    bad = write(tmp_path / "bad.csv", BAD_CSV)
    rc, _, err = run_main(capsys, "fit", spec_file(tmp_path, good), "--out", tmp_path / "run", "--data", bad)
    assert_user_error(rc, err, "fit", "bad.csv", "negative concentration")


def test_fit_data_file_missing(capsys, tmp_path):
    spec = spec_file(tmp_path, tmp_path / "absent.csv")
    rc, _, err = run_main(capsys, "fit", spec, "--out", tmp_path / "run")
    assert_user_error(rc, err, "fit", "absent.csv: no such file")


def test_fit_spec_with_wrong_key(capsys, tmp_path):
    data = write(tmp_path / "good.csv", GOOD_CSV)
    spec = spec_file(tmp_path, data, extra="n_chains = 4\n")  # lands in [sampler]
    rc, _, err = run_main(capsys, "fit", spec, "--out", tmp_path / "run")
    assert_user_error(rc, err, "fit", str(spec), "[sampler]: unknown key 'n_chains'")


def test_fit_spec_with_wrong_top_level_key(capsys, tmp_path):
    data = write(tmp_path / "good.csv", GOOD_CSV)
    spec = write(tmp_path / "s.toml", "priors = 1\n" + SPEC.format(data=data.as_posix(), extra=""))
    rc, _, err = run_main(capsys, "fit", spec, "--out", tmp_path / "run")
    assert_user_error(rc, err, "fit", "spec: unknown key 'priors'")


def test_fit_spec_bad_toml(capsys, tmp_path):
    spec = write(tmp_path / "s.toml", "[model\nstructure = 1\n")
    rc, _, err = run_main(capsys, "fit", spec, "--out", tmp_path / "run")
    assert_user_error(rc, err, "fit", "not valid TOML")


def test_fit_spec_wrong_value_type(capsys, tmp_path):
    spec = write(tmp_path / "s.toml", '[model]\nstructure = ["1cmt_iv"]\n')
    rc, _, err = run_main(capsys, "fit", spec, "--out", tmp_path / "run")
    assert_user_error(rc, err, "fit", "[model] structure: ['1cmt_iv'] is not one of")


def test_fit_missing_spec_file(capsys, tmp_path):
    rc, _, err = run_main(capsys, "fit", tmp_path / "nope.toml", "--out", tmp_path / "run")
    assert_user_error(rc, err, "fit", "nope.toml: no such spec file")


def test_fit_bad_draws_fails_before_sampling(capsys, tmp_path):
    data = write(tmp_path / "good.csv", GOOD_CSV)
    rc, _, err = run_main(capsys, "fit", spec_file(tmp_path, data), "--out", tmp_path / "run", "--draws", "0")
    assert_user_error(rc, err, "fit", "--draws must be >= 1, got 0")


def test_fit_missing_out_is_usage_error(capsys, tmp_path):
    with pytest.raises(SystemExit) as e:
        main(["fit", str(tmp_path / "s.toml")])
    assert e.value.code == 2
    assert "--out" in capsys.readouterr().err


# --------------------------------------------------------------------------- bayespk summary


def test_summary_not_a_run_directory(capsys, tmp_path):
    rc, out, err = run_main(capsys, "summary", tmp_path)
    assert_user_error(rc, err, "summary", f"{tmp_path}: not a run directory (no summary.csv)")
    assert out == ""


def test_summary_missing_directory(capsys, tmp_path):
    rc, _, err = run_main(capsys, "summary", tmp_path / "nope")
    assert_user_error(rc, err, "summary", "not a run directory")


def test_summary_incomplete_run_directory(capsys, tmp_path):
    (tmp_path / "summary.csv").write_text("parameter,mean\nCL,1\n")
    rc, _, err = run_main(capsys, "summary", tmp_path)
    assert_user_error(rc, err, "summary", "diagnostics.json")


# --------------------------------------------------------------------------- as a real process


def run_cli(*argv, cwd=REPO) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "bayespk.cli", *map(str, argv)], capture_output=True,
                          text=True, cwd=cwd, timeout=120)


def test_subprocess_data_malformed(tmp_path):
    p = write(tmp_path / "bad.csv", BAD_CSV)
    r = run_cli("data", p)
    assert r.returncode == 2
    assert r.stderr.startswith("bayespk data: error: ")
    assert "row 3, column DV: negative concentration -3" in r.stderr
    assert "Traceback" not in r.stderr
    assert r.stdout == ""


def test_subprocess_fit_malformed_dataset(tmp_path):
    data = write(tmp_path / "bad.csv", BAD_CSV)
    spec = spec_file(tmp_path, data)
    r = run_cli("fit", spec, "--out", tmp_path / "run")
    assert r.returncode == 2
    assert r.stderr.startswith("bayespk fit: error: ")
    assert "row 3, column DV: negative concentration -3" in r.stderr
    assert "Traceback" not in r.stderr
    assert not (tmp_path / "run").exists()
