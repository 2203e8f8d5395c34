"""NONMEM dataset variants: ``#``/``@`` headers and comment rows, whitespace separation, [data] ignore/accept."""

from __future__ import annotations

import tomllib
from pathlib import Path

import pandas as pd
import pytest

from bayespk.data.nonmem import read_nonmem
from bayespk.errors import DataError, SpecError
from bayespk.model.spec import DataSpec, Spec

DATA = Path(__file__).resolve().parents[1] / "fixtures"
PLAIN = DATA / "nonmem_plain.csv"
VARIANTS = {
    # file: (comment rows, words the notes must hold)
    "nonmem_hash_header.csv": (2, ["starts with '#'", "2 comment rows"]),
    "nonmem_at_header.csv": (1, ["starts with '@'", "whitespace-separated", "1 comment row"]),
    "nonmem_whitespace.dat": (0, ["whitespace-separated", "the header line has a tab"]),
    "nonmem_whitespace.txt": (0, ["whitespace-separated (from the header line)"]),
}
BASE = {
    "model": {"structure": "1cmt_iv"},
    "parameters": {"CL": {"guess": 1.0}, "V": {"guess": 10.0}},
}


def _values(ds) -> pd.DataFrame:
    return ds.table.drop(columns="ROW")


def test_plain_file_ids_as_written():
    ds = read_nonmem(PLAIN)
    assert list(ds.subject_ids) == ["007", "012"]
    assert ds.summary.n_rows == 10 and ds.summary.excluded == {}


@pytest.mark.parametrize("name", sorted(VARIANTS))
def test_variant_reads_as_the_plain_csv(name):
    n_comment, words = VARIANTS[name]
    plain = read_nonmem(PLAIN)
    ds = read_nonmem(DATA / name)
    pd.testing.assert_frame_equal(_values(ds), _values(plain), check_exact=True)
    assert list(ds.subject_ids) == ["007", "012"]  # kept as written, text
    assert ds.table.ID.tolist() == plain.table.ID.tolist()
    assert ds.covariates == ["WT"]
    assert ds.summary.n_rows == 10 + n_comment
    assert ds.summary.excluded == ({"commented out (row starts with # or @)": n_comment} if n_comment else {})
    notes = " | ".join(ds.summary.notes)
    for w in words:
        assert w in notes, (w, notes)
    for k in ("n_subjects", "n_observations", "n_dose_records", "n_doses"):
        assert getattr(ds.summary, k) == getattr(plain.summary, k)


def test_comment_rows_are_numbered_like_rows():
    ds = read_nonmem(DATA / "nonmem_hash_header.csv")
    # row 3 is '#007,0.75,...' and row 8 is the free-text comment: both skipped, both numbered
    assert ds.table.ROW.tolist() == [1, 2, 4, 5, 6, 7, 9, 10, 11, 12]
    assert 0.75 not in ds.table.TIME.tolist()


def test_comment_rows_are_listed_with_their_row_and_reason():
    """As the rows a C column comments out: ROW (numbered like any row) and why; their fields are not read."""
    ds = read_nonmem(DATA / "nonmem_hash_header.csv")
    assert ds.summary.excluded_rows == [
        {"ROW": row, "ID": "", "TIME": "", "reason": "commented out (row starts with # or @)"} for row in (3, 8)]
    assert ds.summary.to_dict()["excluded_rows"] == ds.summary.excluded_rows  # stored with the fit
    assert read_nonmem(PLAIN).summary.excluded_rows == []


def test_comment_rows_need_no_matching_fields(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("ID,TIME,AMT,DV\n1,0,100,.\n# free text, with \"quotes and, commas\n1,1,.,5\n@ note\n")
    ds = read_nonmem(p)
    assert ds.summary.n_rows == 4 and ds.summary.excluded == {"commented out (row starts with # or @)": 2}
    assert "column ID" not in str(ds.summary)


def test_whitespace_file_with_csv_extension_and_tabs(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("ID TIME\tAMT   DV\n1 0\t100   .\n1 1\t.     5.5\n")
    ds = read_nonmem(p)
    assert ds.table.DV.tolist()[1] == 5.5 and ds.table.AMT.tolist()[0] == 100.0
    assert any("whitespace-separated" in n for n in ds.summary.notes)


def test_tab_separated_with_spaces_in_values_stays_tab(tmp_path):
    p = tmp_path / "d.tsv"
    p.write_text("ID\tTIME\tAMT\tDV\tSITE\n1\t0\t100\t.\tNew York\n1\t1\t.\t5\tNew York\n")
    ds = read_nonmem(p)
    assert ds.table.SITE.tolist() == ["New York", "New York"]
    assert any("tab-separated (from the header line)" in n for n in ds.summary.notes)


def test_plain_comma_file_has_no_separator_note():
    assert not any("separated" in n for n in read_nonmem(PLAIN).summary.notes)


# ---------------------------------------------------------------------- [data] ignore / accept
def test_ignore_hand_count():
    ds = read_nonmem(PLAIN, ignore=["DV.EQ.0", "TIME.GT.24"])
    # DV.EQ.0: 007 at 0 (the dose row, DV written 0) and 007 at 1 (DV 0.0); 012's dose has DV '.': no match.
    # TIME.GT.24: 007 at 36, 012 at 30.
    t = ds.table
    assert list(zip(t.ID, t.TIME)) == [("007", 0.5), ("007", 2.0), ("007", 24.0), ("012", 0.0), ("012", 1.0),
                                       ("012", 4.0)]
    assert ds.summary.n_rows == 10
    assert ds.summary.excluded == {"[data] ignore (DV.EQ.0, TIME.GT.24)": 4}
    note = next(n for n in ds.summary.notes if n.startswith("[data] ignore"))
    assert "DV.EQ.0 2" in note and "TIME.GT.24 2" in note and "4 rows dropped, 1 of them dose records" in note
    assert ds.summary.n_dose_records == 1  # 007's dose went, as NONMEM's IGNORE=(DV.EQ.0) would drop it
    assert "4 rows excluded: [data] ignore (DV.EQ.0, TIME.GT.24)" in str(ds.summary)


def test_accept_hand_count():
    ds = read_nonmem(PLAIN, accept=["TIME.LE.4"])
    assert ds.table.TIME.tolist() == [0.0, 0.5, 1.0, 2.0, 0.0, 1.0, 4.0]
    assert ds.summary.excluded == {"[data] accept (TIME.LE.4)": 3}
    ds = read_nonmem(PLAIN, accept=["TIME.LT.1", "ID.EQ.12"])  # any condition keeps the row; 012 == 12
    assert list(zip(ds.table.ID, ds.table.TIME)) == [("007", 0.0), ("007", 0.5), ("012", 0.0), ("012", 1.0),
                                                     ("012", 4.0), ("012", 30.0)]
    assert ds.summary.excluded == {"[data] accept (TIME.LT.1, ID.EQ.12)": 4}


@pytest.mark.parametrize("expr, n", [
    ("DV == 0", 2), ("dv.eq.0", 2), ("DV=0", 2), ("DV.EQN.0", 2), ("DV.NE.0", 7), ("DV != 0", 7),
    ("DV.GT.4.1", 3), ("DV > 4.1", 3), ("DV.GE.4.1", 4), ("DV>=4.1", 4), ("DV.LT.1", 3), ("DV<1", 3),
    ("DV.LE.1.5", 4), ("DV <= 1.5", 4), ("WT.GT.80", 4), ("TIME.GE.1e1", 3),
])  # fmt: skip
def test_operators(expr, n):
    # DV: 0 (dose), 4.1, 0.0, 6.25, 1.5, 0.8, . (dose), 9.9, 7.3, 2.2; '.' matches nothing, not even .NE.
    ds = read_nonmem(PLAIN, ignore=[expr])
    assert ds.summary.n_rows - len(ds.table) == n
    assert ds.summary.excluded == {f"[data] ignore ({expr})": n}


def test_filters_use_file_names_or_aliases(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("subject,TIME,AMT,conc\n1,0,100,.\n1,1,.,5\n1,2,.,0\n")
    for name in ("conc", "CONC", "DV"):
        ds = read_nonmem(p, aliases={"conc": "DV", "subject": "ID"}, ignore=[f"{name}.EQ.0"])
        assert ds.table.TIME.tolist() == [0.0, 1.0]


def test_ignore_with_c_and_comment_rows(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("C,ID,TIME,AMT,DV\n.,1,0,100,.\nC,1,1,.,0\n#,1,1.5,.,3\n.,1,2,.,0\n.,1,3,.,2\n")
    ds = read_nonmem(p, ignore="DV.EQ.0")  # one string is one condition
    assert ds.summary.n_rows == 5
    assert ds.summary.excluded == {"commented out (row starts with # or @)": 1, "commented out (C column)": 1,
                                   "[data] ignore (DV.EQ.0)": 1}
    assert ds.table.TIME.tolist() == [0.0, 3.0]
    assert [(r["ROW"], r["reason"]) for r in ds.summary.excluded_rows] == [
        (3, "commented out (row starts with # or @)"), (2, "commented out (C column)"),
        (4, "[data] ignore (DV.EQ.0)")]  # in the order they were dropped; the report sorts them by ROW


@pytest.mark.parametrize("kw, match", [
    ({"ignore": ["DV EQ 0"]}, r"\[data\] ignore: 'DV EQ 0' is not a condition"),
    ({"ignore": ["DV.XX.0"]}, r"\[data\] ignore: 'DV.XX.0' is not a condition"),
    ({"accept": ["TIME.GT."]}, r"\[data\] accept: 'TIME.GT.' is not a condition"),
    ({"ignore": ["DV.EQ.abc"]}, r"\[data\] ignore: 'DV.EQ.abc': the value 'abc' is not a number"),
    ({"ignore": ["DOSE.GT.1"]}, r"\[data\] ignore: 'DOSE.GT.1' names column DOSE, which the dataset does not have"),
    ({"ignore": [3]}, r"\[data\] ignore: expected a list of conditions"),
    ({"ignore": ["DV.EQ.0"], "accept": ["TIME.LT.5"]}, r"cannot both be given"),
])  # fmt: skip
def test_refusals(kw, match):
    with pytest.raises(DataError, match=match):
        read_nonmem(PLAIN, **kw)


def test_text_column_refused(tmp_path):
    p = tmp_path / "d.csv"
    p.write_text("ID,TIME,AMT,DV,SEX\n1,0,100,.,F\n1,1,.,5,F\n")
    with pytest.raises(DataError, match=r"\[data\] ignore: 'SEX.EQ.1': column SEX holds 'F' \(row 1\), not a number"):
        read_nonmem(p, ignore=["SEX.EQ.1"])


def test_everything_filtered_out():
    with pytest.raises(DataError, match="no data rows left after"):
        read_nonmem(PLAIN, ignore=["TIME.GE.0"])


# ---------------------------------------------------------------------- the spec
def test_dataspec_round_trip():
    d = {"path": "/x/d.csv", "ignore": ["DV.EQ.0", "TIME.GT.24"]}
    spec = DataSpec.from_dict(d, None)
    assert spec.ignore == ("DV.EQ.0", "TIME.GT.24") and spec.accept == ()
    assert spec.to_dict() == d
    assert DataSpec.from_dict(spec.to_dict(), None) == spec
    assert spec.filters == {"ignore": ["DV.EQ.0", "TIME.GT.24"], "accept": []}
    acc = DataSpec.from_dict({"accept": ["TIME <= 4"]}, None)
    assert acc.to_dict() == {"accept": ["TIME <= 4"]}
    assert DataSpec.from_dict({}, None).to_dict() == {}


def test_spec_toml_round_trip():
    spec = Spec.from_dict(BASE | {"data": {"path": str(PLAIN), "ignore": ["DV.EQ.0"]}})
    again = Spec.from_dict(tomllib.loads(spec.to_toml()))
    assert again.data.ignore == ("DV.EQ.0",) and again.data == spec.data
    ds = read_nonmem(again.data.path, aliases=again.data.aliases, lloq=again.data.lloq, **again.data.filters)
    assert ds.summary.excluded == {"[data] ignore (DV.EQ.0)": 2}


@pytest.mark.parametrize("data, match", [
    ({"ignore": ["DV EQ 0"]}, r"^\[data\] ignore: 'DV EQ 0' is not a condition"),
    ({"accept": "TIME.GT.x"}, r"^\[data\] accept: 'TIME.GT.x': the value 'x' is not a number"),
    ({"ignore": [1]}, r"^\[data\] ignore: expected a list"),
    ({"ignore": ["DV.EQ.0"], "accept": ["TIME.LT.5"]}, r"^\[data\] ignore and \[data\] accept cannot both"),
])  # fmt: skip
def test_spec_refusals(data, match):
    with pytest.raises(SpecError, match=match):
        DataSpec.from_dict(data, None)


def test_population_model_reads_the_spec_filters():
    from bayespk.model.population import PopulationModel

    m = PopulationModel(BASE | {"data": {"path": str(PLAIN), "accept": ["TIME.LE.4"]}})
    assert m.data.summary.excluded == {"[data] accept (TIME.LE.4)": 3} and len(m.data.table) == 7
    assert m.spec.data.accept == ("TIME.LE.4",)
