"""The malformed-input corpus (tests/fixtures/malformed, from tests/fixtures/make_malformed.py) through the CLI.

Every malformed case must exit with status 2, print its expected fragment on
stderr, print no traceback, sample nothing and leave no run directory. Every
valid control case must exit 0 with the row and subject counts of the raw
file, counted here independently with the csv module: nothing dropped or
merged silently.
"""

from __future__ import annotations

import csv
import filecmp
import importlib.util
import json
from pathlib import Path

import pytest

from bayespk.cli import main
from bayespk.data.nonmem import read_nonmem

CORPUS = Path(__file__).resolve().parents[1] / "fixtures" / "malformed"
GENERATOR = Path(__file__).resolve().parents[1] / "fixtures" / "make_malformed.py"
CASES = json.loads((CORPUS / "cases.json").read_text())["cases"]


def _generator():
    spec = importlib.util.spec_from_file_location("make_malformed", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(autouse=True)
def no_sampling(monkeypatch):
    """Fail the case if anything gets as far as compiling or sampling a model."""
    import nutpie
    import pymc

    def refuse(*args, **kwargs):
        raise AssertionError("the CLI started sampling; a malformed input must be refused before")

    for module, name in ((nutpie, "compile_pymc_model"), (nutpie, "sample"), (pymc, "sample")):
        monkeypatch.setattr(module, name, refuse)


def run(capsys, argv: list[str], out: Path) -> tuple[int, str, str]:
    argv = [a.replace("{dir}", str(CORPUS)).replace("{out}", str(out)) for a in argv]
    try:
        rc = main(argv)
    except SystemExit as e:  # argparse usage errors
        rc = e.code
    stdout, stderr = capsys.readouterr()
    return rc, stdout, stderr


def test_the_corpus_is_what_the_generator_writes(tmp_path):
    _generator().main([str(tmp_path / "malformed")])
    comparison = filecmp.dircmp(tmp_path / "malformed", CORPUS)

    def differences(d, prefix=""):
        out = [prefix + n for n in d.left_only + d.right_only + d.diff_files + d.funny_files]
        for name, sub in d.subdirs.items():
            out += differences(sub, f"{prefix}{name}/")
        return out

    assert differences(comparison) == [], "regenerate: python tests/fixtures/make_malformed.py"
    for a in sorted(p for p in (tmp_path / "malformed").rglob("*") if p.is_file()):  # shallow dircmp: bytes too
        assert a.read_bytes() == (CORPUS / a.relative_to(tmp_path / "malformed")).read_bytes(), a


def test_the_corpus_is_large_named_uniquely_and_counted_in_the_readme():
    malformed = [c for c in CASES if c["exit"] == 2]
    assert len(malformed) >= 150
    assert len({c["name"] for c in CASES}) == len(CASES)
    assert all(c["expect"] for c in malformed)
    readme = " ".join((CORPUS.parents[2] / "README.md").read_text().split())
    assert f"corpus of {len(CASES)} cases ({len(malformed)} malformed, {len(CASES) - len(malformed)} valid" in readme


@pytest.mark.parametrize("case", [c for c in CASES if c["exit"] == 2], ids=lambda c: c["name"])
def test_malformed_case_is_refused(case, capsys, tmp_path):
    out = tmp_path / "run"
    rc, stdout, stderr = run(capsys, case["argv"], out)
    assert rc == 2, (rc, stdout, stderr)
    assert case["expect"] in stderr, stderr
    assert "Traceback" not in stderr
    assert not out.exists(), "a refused command left a run directory"


def raw_counts(path: Path, delimiter: str) -> tuple[int, int]:
    """Data rows (non-blank records after the header) and distinct ID texts, by the csv module alone."""
    with open(path, newline="", encoding="utf-8-sig") as f:
        records = [r for r in csv.reader(f, delimiter=delimiter, skipinitialspace=delimiter == " ")
                   if any(field.strip() for field in r)]
    header = [h.strip().upper() for h in records[0]]
    k = header.index("ID")
    return len(records) - 1, len({r[k].strip() for r in records[1:]})


@pytest.mark.parametrize("case", [c for c in CASES if c["exit"] == 0], ids=lambda c: c["name"])
def test_valid_case_keeps_every_row_and_subject(case, capsys, tmp_path):
    rc, stdout, stderr = run(capsys, case["argv"], tmp_path / "run")
    assert rc == 0, stderr
    path = CORPUS / case["valid"]["file"]
    rows, subjects = raw_counts(path, case["valid"]["delimiter"])
    assert f"{rows} rows, {subjects} subjects" in stdout
    summary = read_nonmem(path).summary
    assert (summary.n_rows, summary.n_subjects) == (rows, subjects)
