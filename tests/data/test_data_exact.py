"""Exact data (issue #12): IDs as written, every field accounted for, separators, BLQ/LLOQ, no tracebacks.

Each test states the rule it checks; the malformed-input corpus
(tests/cli/test_malformed_corpus.py) checks the CLI messages of many more inputs.
"""

from __future__ import annotations

import csv as csv_module
import math
import re

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest

import bayespk as bpk
from bayespk.cli import main
from bayespk.data import bundled
from bayespk.data.nonmem import id_label, plot_text, read_nonmem
from bayespk.errors import DataError, SpecError
from bayespk.model.population import PopulationModel
from bayespk.model.priors import MixturePrior, Prior
from bayespk.model.spec import Spec

HEADER = "ID,TIME,AMT,DV,EVID,MDV"
BIG_IDS = [10010020030040051 + k for k in range(12)]  # 17 digits: above 2**53, so float64 would merge them


def profile_rows(sid, amt=100.0, conc=(8.0, 6.0, 4.0, 2.5, 1.5)) -> list[str]:
    """One IV subject: a dose at 0 and observations at 1, 2, 4, 8, 12 h (text rows without a header)."""
    rows = [f"{sid},0,{amt:g},.,1,1"]
    rows += [f"{sid},{t:g},.,{c:g},0,0" for t, c in zip((1, 2, 4, 8, 12), conc)]
    return rows


def write(tmp_path, lines, name="data.csv", header=HEADER) -> str:
    p = tmp_path / name
    p.write_text("\n".join([header, *lines]) + "\n")
    return p


def big_id_file(tmp_path):
    return write(tmp_path, [r for sid in BIG_IDS for r in profile_rows(sid)], "big_ids.csv")


IV = {"model": {"structure": "1cmt_iv"}, "parameters": {"CL": {"guess": 5.0}, "V": {"guess": 20.0}},
      "error": {"model": "proportional"}}


def run_cli(capsys, *argv) -> tuple[int, str, str]:
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


# --------------------------------------------------------------------------- IDs as written


def test_17_digit_ids_are_12_subjects_everywhere(tmp_path, capsys):
    path = big_id_file(tmp_path)
    ds = read_nonmem(path)
    assert ds.summary.n_subjects == 12
    assert ds.table.ID.dtype == np.int64
    assert list(ds.subject_ids) == BIG_IDS  # exact, never through float64

    rc, out, err = run_cli(capsys, "data", path)
    assert rc == 0 and "72 rows, 12 subjects" in out

    rc, out, err = run_cli(capsys, "nca", path, "--out", tmp_path / "nca.csv")
    assert rc == 0, err
    for sid in BIG_IDS:
        assert str(sid) in out
    assert "e+" not in out and "E+" not in out
    with open(tmp_path / "nca.csv", newline="") as f:
        written = [r["ID"] for r in csv_module.DictReader(f)]
    assert written == [str(s) for s in BIG_IDS]

    model = PopulationModel(Spec.from_dict(IV), ds)
    assert model.design.n_subjects == 12
    assert list(model.design.subject_ids) == BIG_IDS
    assert model.coords["ID"].tolist() == BIG_IDS


def test_nca_writes_integer_ids_as_integers(tmp_path, capsys):
    rc, _, _ = run_cli(capsys, "nca", bundled.path("theophylline"), "--out", tmp_path / "nca.csv")
    assert rc == 0
    with open(tmp_path / "nca.csv", newline="") as f:
        ids = [r["ID"] for r in csv_module.DictReader(f)]
    assert ids == [str(i) for i in range(1, 13)]  # "1", not "1.0"


def test_error_messages_print_17_digit_ids_exactly(tmp_path):
    """Rows read as a Series of one dtype would print 1.001002003004005e+16 or a neighbouring ID."""
    sid = BIG_IDS[1]
    again = [*profile_rows(BIG_IDS[0]), *profile_rows(sid), f"{BIG_IDS[0]},20,.,1,0,0"]
    with pytest.raises(DataError, match=rf"ID {BIG_IDS[0]} appears again after other IDs"):
        read_nonmem(write(tmp_path, again))
    rows = [r + ",70" for r in profile_rows(BIG_IDS[0])] + [r + ",0" for r in profile_rows(sid)]
    ds = read_nonmem(write(tmp_path, rows, header=HEADER + ",WT"))
    spec = Spec.from_dict(IV | {"covariates": [{"parameter": "CL", "column": "WT", "effect": "power",
                                                 "reference": 70}]})
    with pytest.raises(DataError, match=rf"row 7, column WT \(ID {sid}\): value 0 is not > 0"):
        PopulationModel(spec, ds)
    rows = [r + ",70" for r in profile_rows(BIG_IDS[0])] + [r + ",." for r in profile_rows(sid)]
    ds = read_nonmem(write(tmp_path, rows, header=HEADER + ",WT"))
    with pytest.raises(DataError, match=rf"row 7, column WT: missing value for ID {sid} "):
        PopulationModel(spec, ds)


def test_ids_beyond_64_bits_are_kept_as_text(tmp_path):
    ids = ["123456789012345678901", "123456789012345678902"]
    ds = read_nonmem(write(tmp_path, [r for sid in ids for r in profile_rows(sid)]))
    assert list(ds.subject_ids) == ids
    assert "subject IDs kept as text" in str(ds.summary)


def test_leading_zero_ids_are_kept_as_text(tmp_path):
    ds = read_nonmem(write(tmp_path, [r for sid in ("007", "008", "S-9") for r in profile_rows(sid)]))
    assert list(ds.subject_ids) == ["007", "008", "S-9"]
    assert ds.summary.n_subjects == 3
    assert "note: subject IDs kept as text, as written (not all plain whole numbers within 64 bits, e.g. '007')" \
        in str(ds.summary)
    again = read_nonmem(ds.table)  # a table fed back keeps its text IDs
    assert list(again.subject_ids) == ["007", "008", "S-9"]
    ds.to_csv(tmp_path / "out.csv")
    assert list(read_nonmem(tmp_path / "out.csv").subject_ids) == ["007", "008", "S-9"]


@pytest.mark.parametrize("first,second", [("7", "007"), ("1", "1.0"), ("5", "+5"), ("2", "2e0")])
def test_two_spellings_of_one_number_are_refused(tmp_path, first, second):
    rows = [*profile_rows(first), *profile_rows(second)]
    with pytest.raises(DataError, match=rf"row 7, column ID: ID '{re.escape(second)}' is the same number as ID "
                                        rf"'{first}' \(row 1\) written differently"):
        read_nonmem(write(tmp_path, rows))


def test_dataframe_ids(tmp_path):
    df = pd.DataFrame({"ID": [1.0, 1.0, 2.0, 2.0], "TIME": [0, 1, 0, 1], "AMT": [100, None, 100, None],
                       "DV": [None, 5.0, None, 4.0]})
    assert read_nonmem(df).table.ID.dtype == np.int64
    df["ID"] = pd.Series([1, 1, 2.0, 2.0], dtype=object)  # cells of mixed types, as from a list of dicts
    assert list(read_nonmem(df).subject_ids) == [1, 2]
    df["ID"] = np.array(BIG_IDS[:2]).repeat(2)
    ds = read_nonmem(df)
    assert list(ds.subject_ids) == BIG_IDS[:2]
    assert list(read_nonmem(ds.table).subject_ids) == BIG_IDS[:2]


def test_id_label_and_plot_text():
    assert id_label(7.0) == "7" and id_label(np.int64(BIG_IDS[0])) == str(BIG_IDS[0]) and id_label("007") == "007"
    assert id_label(1.5) == "1.5"
    assert plot_text("$x^$") == r"\$x^\$"
    fig, ax = plt.subplots()
    ax.set_title(plot_text("$x^$"))  # unescaped, this is invalid math text and drawing fails
    fig.canvas.draw()
    plt.close(fig)


# --------------------------------------------------------------------------- fields and separators


def test_short_and_long_rows_are_refused_with_row_and_line(tmp_path):
    rows = profile_rows(1)
    rows[1] = "1,1,.,8,0"  # 5 fields
    rows[3] = "1,4,.,4,0,0,9"  # 7 fields
    p = write(tmp_path, ["", *rows])  # a blank line: rows are numbered without it, lines with it
    with pytest.raises(DataError) as e:
        read_nonmem(p)
    msg = str(e.value)
    assert "row 2 (line 4): 5 fields, but the header names 6 columns" in msg
    assert "row 4 (line 6): 7 fields, but the header names 6 columns" in msg


def test_trailing_separator_on_every_data_row_is_dropped_and_said(tmp_path):
    plain = read_nonmem(write(tmp_path, profile_rows(1), "plain.csv"))
    ds = read_nonmem(write(tmp_path, [r + "," for r in profile_rows(1)]))
    pd.testing.assert_frame_equal(ds.table, plain.table)
    assert "every data row ends with an extra empty field (a trailing ','); it was ignored" in str(ds.summary)
    both = read_nonmem(write(tmp_path, [r + "," for r in profile_rows(1)], header=HEADER + ","))
    pd.testing.assert_frame_equal(both.table, plain.table)
    assert "every line ends with a separator" in str(both.summary)


def test_trailing_separator_on_some_rows_is_a_field_count_error(tmp_path):
    rows = profile_rows(1)
    rows[2] += ","
    with pytest.raises(DataError, match=r"row 3 \(line 4\): 7 fields, but the header names 6 columns \(it ends "
                                        r"with an empty field: a trailing separator\?\)") as e:
        read_nonmem(write(tmp_path, rows))
    assert "TIME" not in str(e.value)


def test_extra_values_on_every_row_are_diagnosed(tmp_path):
    with pytest.raises(DataError, match=r"every data row has one more field \(7\) than the header \(line 1\) "
                                        r"names \(6\)"):
        read_nonmem(write(tmp_path, [r + ",5" for r in profile_rows(1)]))


@pytest.mark.parametrize("sep,name,suffix", [(";", "semicolon", ".csv"), ("\t", "tab", ".tsv"),
                                             ("   ", "whitespace", ".dat"), (" ", "whitespace", ".txt")])
def test_separators_read_from_the_header(tmp_path, sep, name, suffix):
    rows = [r + ",SEX A" if r.startswith("1") else r for r in profile_rows(1)]
    plain = read_nonmem(write(tmp_path, [r.replace(",SEX A", ",A") for r in rows], "plain.csv", HEADER + ",SEX"))
    text_rows = [r.replace(",SEX A", ',"A"').replace(",", sep) for r in rows]
    ds = read_nonmem(write(tmp_path, text_rows, "data" + suffix, (HEADER + ",SEX").replace(",", sep)))
    pd.testing.assert_frame_equal(ds.table, plain.table)
    assert f"read as {name}-separated (from the header line)" in str(ds.summary)


def test_quoted_separator_inside_a_value(tmp_path):
    rows = [r + ',"A, then B"' for r in profile_rows(1)]
    ds = read_nonmem(write(tmp_path, rows, header=HEADER + ",ARM"))
    assert set(ds.table.ARM) == {"A, then B"}


def test_wrong_separator_on_the_data_rows(tmp_path):
    rows = [r.replace(",", ";") for r in profile_rows(1)]
    with pytest.raises(DataError, match=r"row 1 \(line 2\): 1 field, but the header names 6 columns \(this row "
                                        r"seems semicolon-separated, the header comma-separated\)"):
        read_nonmem(write(tmp_path, rows))


def test_unknown_separator_is_explained(tmp_path):
    with pytest.raises(DataError, match=r"read as the single column 'ID\|TIME\|AMT\|DV\|EVID\|MDV'"):
        read_nonmem(write(tmp_path, [r.replace(",", "|") for r in profile_rows(1)],
                          header=HEADER.replace(",", "|")))


def test_decimal_comma_is_hinted(tmp_path):
    rows = [r.replace(",", ";") for r in profile_rows(1)]
    rows[1] = "1;1;.;8,5;0;0"
    with pytest.raises(DataError, match=r"row 2, column DV: '8,5' is not a number \(decimal comma\? write 8\.5\)"):
        read_nonmem(write(tmp_path, rows, header=HEADER.replace(",", ";")))


def test_unclosed_quote_and_unnamed_column(tmp_path):
    rows = profile_rows(1)
    rows[2] = '1,2,.,"6,0,0'
    with pytest.raises(DataError, match=r"not a readable CSV: line 4: .*quote"):
        read_nonmem(write(tmp_path, rows))
    with pytest.raises(DataError, match=r"line 1: column 3 has no name in the header"):
        read_nonmem(write(tmp_path, [r + ",1" for r in profile_rows(1)], header="ID,TIME,,AMT,DV,EVID,MDV"))


def test_crlf_and_bom(tmp_path):
    p = tmp_path / "win.csv"
    p.write_bytes(b"\xef\xbb\xbf" + ("\r\n".join([HEADER, *profile_rows(1)]) + "\r\n").encode())
    ds = read_nonmem(p)
    assert ds.summary.n_rows == 6 and ds.summary.notes == []


# --------------------------------------------------------------------------- BLQ and LLOQ


def blq_rows(flag="BLQ", dv="0", lloq=None) -> tuple[list[str], str]:
    rows = [r + ",0" + ("" if lloq is None else ",.") for r in profile_rows(1)]
    rows[-1] = f"1,12,.,{dv},0,0,1" + ("" if lloq is None else f",{lloq}")
    return rows, HEADER + f",{flag}" + ("" if lloq is None else ",LLOQ")


def test_blq_without_lloq_is_refused_not_censored_at_zero(tmp_path):
    rows, header = blq_rows("BLQ", dv="0")
    with pytest.raises(DataError, match=r"row 6, column LLOQ: BLQ record needs an LLOQ value: give it in an LLOQ "
                                        r"column, or as \[data\] lloq = <number> in the spec"):
        read_nonmem(write(tmp_path, rows, header=header))


def test_lloq_from_the_spec(tmp_path):
    rows, header = blq_rows("BLQ", dv="0")
    p = write(tmp_path, rows, header=header)
    ds = read_nonmem(p, lloq=0.2)
    assert ds.table.LLOQ.iloc[-1] == 0.2 and ds.summary.n_blq == 1
    assert "LLOQ 0.2 ([data] lloq) used for 1 censored row without an LLOQ value" in str(ds.summary)
    spec = Spec.from_dict(IV | {"data": {"path": str(p), "lloq": 0.2}})
    assert spec.to_dict()["data"]["lloq"] == 0.2
    model = PopulationModel(spec)
    assert model.design.obs_limit[-1] == 0.2 and model.design.obs_cens[-1] == 1


def test_lloq_column_comes_before_the_spec_value(tmp_path):
    rows, header = blq_rows("BLQ", dv=".", lloq="0.5")
    ds = read_nonmem(write(tmp_path, rows, header=header), lloq=0.2)
    assert ds.table.LLOQ.iloc[-1] == 0.5 and ds.summary.notes == []


def test_cens_keeps_dv_as_the_lloq_but_not_zero(tmp_path):
    rows, header = blq_rows("CENS", dv="0.3")
    ds = read_nonmem(write(tmp_path, rows, header=header))
    assert PopulationModel(Spec.from_dict(IV), ds).design.obs_limit[-1] == 0.3
    rows, header = blq_rows("CENS", dv="0")
    with pytest.raises(DataError, match=r"row 6, column DV: CENS=1 without an LLOQ takes DV as the LLOQ, which must "
                                        r"be > 0, got 0"):
        read_nonmem(write(tmp_path, rows, header=header))
    rows, header = blq_rows("BLQ", dv=".", lloq="0")
    with pytest.raises(DataError, match=r"row 6, column LLOQ: the LLOQ of a censored row must be > 0, got 0"):
        read_nonmem(write(tmp_path, rows, header=header))


def test_cens_data_round_trip(tmp_path):
    """Dataset.table holds BLQ and CENS: CENS=1 rows keep DV as their limit when read back (fit.nc records)."""
    rows, header = blq_rows("CENS", dv="0.3")
    ds = read_nonmem(write(tmp_path, rows, header=header))
    again = read_nonmem(ds.table)
    pd.testing.assert_frame_equal(again.table, ds.table)
    ds.to_csv(tmp_path / "out.csv")
    assert read_nonmem(tmp_path / "out.csv").summary.n_blq == 1


@pytest.mark.parametrize("value,match", [(-1, "must be > 0"), (0, "must be > 0"), ("0.1", "expected a finite number"),
                                         (math.inf, "expected a finite number")])
def test_spec_lloq_validated(value, match):
    with pytest.raises(SpecError, match=rf"^\[data\] lloq: .*{match}"):
        Spec.from_dict(IV | {"data": {"lloq": value}})


def test_lloq_option_validated(tmp_path):
    rows, header = blq_rows("BLQ", dv="0")
    with pytest.raises(DataError, match=r"lloq \(\[data\] lloq, --lloq\) must be a finite number > 0, got -1"):
        read_nonmem(write(tmp_path, rows, header=header), lloq=-1)


# --------------------------------------------------------------------------- numbers


@pytest.mark.parametrize("row,value,column", [(2, "1e308", "DV"), (1, "1e308", "AMT"), (3, "1e308", "TIME"),
                                              (1, "-1e101", "WT"), (2, "inf", "WT")])
def test_absurd_values_are_refused(tmp_path, row, value, column):
    rows = [r + ",70" for r in profile_rows(1)]
    fields = rows[row - 1].split(",")
    fields[(HEADER + ",WT").split(",").index(column)] = value
    rows[row - 1] = ",".join(fields)
    rule = "value is infinite" if value == "inf" else f"value {float(value):g} is too large"
    with pytest.raises(DataError, match=re.escape(f"row {row}, column {column}: {rule}")):
        read_nonmem(write(tmp_path, rows, header=HEADER + ",WT"))


def test_1e100_is_the_largest_value_read(tmp_path):
    rows = [r + ",1e100" for r in profile_rows(1)]
    assert read_nonmem(write(tmp_path, rows, header=HEADER + ",BIG")).table.BIG.max() == 1e100


HUGE = 10**400  # valid TOML; float(HUGE) overflows


@pytest.mark.parametrize("value,got", [(HUGE, "a 401-digit integer"), (math.inf, "inf"), (math.nan, "nan")])
def test_prior_parameters_must_be_finite(value, got):
    d = IV | {"parameters": {"CL": {"typical": {"dist": "LogNormal", "mu": 0, "sigma": value}},
                             "V": {"guess": 1.0}}}
    with pytest.raises(SpecError, match=rf"^\[parameters\.CL\] typical sigma: parameter sigma of LogNormal must be "
                                        rf"a finite number, got {got}"):
        Spec.from_dict(d)


@pytest.mark.parametrize("where,table", [
    (r"\[parameters\.CL\] guess", {"parameters": {"CL": {"guess": HUGE}, "V": {"guess": 1.0}}}),
    (r"\[\[covariates\]\] #1 reference", {"covariates": [{"parameter": "CL", "column": "WT", "effect": "power",
                                                          "reference": HUGE}]}),
    (r"\[\[covariates\]\] #1 reference", {"covariates": [{"parameter": "CL", "column": "SEX",
                                                          "effect": "categorical", "reference": HUGE}]}),
    (r"\[error\] reference", {"error": {"model": "additive", "by": "ASSAY", "reference": HUGE}}),
])
def test_huge_integers_in_a_spec(where, table):
    with pytest.raises(SpecError, match=rf"^{where}: expected a finite number, got a 401-digit integer"):
        Spec.from_dict(IV | table)


def test_huge_integer_in_a_mixture_prior():
    with pytest.raises(SpecError, match=r"weights\[0\]: expected a finite number, got a 401-digit integer"):
        MixturePrior.from_dict({"family": "normal", "scale": "log", "weights": [HUGE], "m": [0], "s": [1]})
    with pytest.raises(SpecError, match=r"parameter mu of Normal must be a finite number, got a 401-digit"):
        Prior("Normal", mu=HUGE, sigma=1)


# --------------------------------------------------------------------------- column names


def test_covariate_column_with_a_slash_is_refused_with_advice():
    spec = IV | {"covariates": [{"parameter": "CL", "column": "WT/KG", "effect": "power", "reference": 70}]}
    with pytest.raises(SpecError, match=r'\[\[covariates\]\] #1 column: column \'WT/KG\' has a \'/\'.*\[data\] '
                                        r'aliases = \{ "WT/KG" = "WT_KG" \} and column = "WT_KG"'):
        Spec.from_dict(spec)


def test_dataset_column_with_a_slash_is_refused_before_fitting(tmp_path):
    p = write(tmp_path, [r + ",70" for r in profile_rows(1)], header=HEADER + ",WT/KG")
    assert read_nonmem(p).covariates == ["WT/KG"]  # reading is fine; a fit could not store it
    with pytest.raises(DataError, match=r'column WT/KG: a \'/\' cannot be part of a column name in a fit.*'
                                        r'\[data\] aliases = \{ "WT/KG" = "WT_KG" \}'):
        PopulationModel(Spec.from_dict(IV), p)
    spec = Spec.from_dict(IV | {"data": {"aliases": {"WT/KG": "WT_KG"}}, "covariates": [
        {"parameter": "CL", "column": "WT_KG", "effect": "power", "reference": 70}]})
    assert PopulationModel(spec, p).spec.covariates[0].name == "CL_WT_KG"


@pytest.mark.parametrize("column", ["WT KG", "1WT"])
def test_covariate_columns_that_are_not_identifiers_work(tmp_path, column):
    rows = [r + ",70" for r in profile_rows(1)] + [r + ",80" for r in profile_rows(2)]
    p = write(tmp_path, rows, header=f"{HEADER},{column}")
    spec = Spec.from_dict(IV | {"covariates": [{"parameter": "CL", "column": column, "effect": "power",
                                                 "reference": 70}]})
    model = PopulationModel(spec, p)
    assert f"CL_{column}" in model.build().named_vars


# --------------------------------------------------------------------------- a fit, end to end


@pytest.mark.slow  # ~20 s: compiles and samples a tiny model
@pytest.mark.filterwarnings("ignore::UserWarning", "ignore::RuntimeWarning")  # 20 draws do not converge
def test_exact_ids_and_math_text_levels_survive_a_fit(tmp_path):
    """17-digit IDs and a level that is invalid matplotlib math text: fit, save, load, plot."""

    rows = [f"{r},{'$x^$' if k % 2 else 'b'}" for k, sid in enumerate(BIG_IDS[:4])
            for r in profile_rows(sid, conc=tuple(c * (1 + 0.1 * k) for c in (8.0, 6.0, 4.0, 2.5, 1.5)))]
    p = write(tmp_path, rows, header=HEADER + ",GRP")
    spec = Spec.from_dict(IV | {"covariates": [{"parameter": "CL", "column": "GRP", "effect": "categorical"}],
                                "sampler": {"name": "pymc", "chains": 1, "draws": 20, "tune": 20, "seed": 1}})
    fit = bpk.fit(PopulationModel(spec, p), progress=False)
    fit.write_run(tmp_path / "run")
    again = bpk.load(tmp_path / "run")
    assert again.posterior.ID.values.tolist() == BIG_IDS[:4]
    assert list(again.model.design.subject_ids) == BIG_IDS[:4]
    figures = [bpk.plot_individual(again)[0], bpk.eta_covariates(again)[0], bpk.covariate_effects(again)[0],
               bpk.vpc(again, n_rep=10, strat="GRP").figure]
    for fig in figures:
        fig.canvas.draw()
        plt.close(fig)
