"""``bayespk nca --ignore EXPR / --accept EXPR``: NONMEM row filters, as a spec's ``[data] ignore / accept``."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

import bayespk as bpk
from bayespk.cli import main
from bayespk.nca import NCA_COLUMNS, nca

THEO = bpk.datasets.path("theophylline")
TEXT = ["route", "reason", "note"]
NUMBERS = [c for c in NCA_COLUMNS if c not in ["ID", *TEXT]]


def _theoph() -> pd.DataFrame:
    return pd.read_csv(THEO, na_values=".")


def _cli_table(capsys, tmp_path, *options) -> tuple[pd.DataFrame, str]:
    out = tmp_path / "nca.csv"
    assert main(["nca", str(THEO), "--out", str(out), *options]) == 0
    err = capsys.readouterr().err
    return pd.read_csv(out, keep_default_na=False, na_values={c: [""] for c in NUMBERS}), err


def _assert_same_nca(got: pd.DataFrame, expected: pd.DataFrame) -> None:
    assert got.ID.tolist() == expected.ID.tolist()
    np.testing.assert_allclose(got[NUMBERS].to_numpy(float), expected[NUMBERS].to_numpy(float), rtol=1e-12,
                               equal_nan=True)
    assert got[TEXT].values.tolist() == expected[TEXT].values.tolist()


def test_ignore_gives_the_nca_of_the_remaining_rows(tmp_path, capsys):
    """``--ignore TIME.GT.12 --ignore DV.EQ.0``: every row after 12 h or with DV 0 dropped (a row matching either),
    and the NCA is that of the frame without those rows; stderr says how many rows went."""
    data = _theoph()
    drop = (data.TIME > 12) | (data.DV == 0)
    got, err = _cli_table(capsys, tmp_path, "--ignore", "TIME.GT.12", "--ignore", "DV.EQ.0")
    _assert_same_nca(got, nca(data[~drop]))
    full = nca(data)
    assert (got.Tlast <= 12).all() and (got.AUC0_t < full.AUC0_t).all()  # the filter changed every subject
    n_late, n_zero = int((data.TIME > 12).sum()), int((data.DV == 0).sum())
    assert n_late > 0 and n_zero > 0
    assert (f"note: --ignore: rows matching TIME.GT.12 {n_late}, DV.EQ.0 {n_zero}; {int(drop.sum())} rows "
            "dropped, 0 of them dose records\n") in err


def test_accept_keeps_only_the_matching_rows(tmp_path, capsys):
    """``--accept ID.LE.3 --accept 'ID == 9'``: subjects 1, 2, 3 and 9 only, each analysed as before."""
    data = _theoph()
    keep = (data.ID <= 3) | (data.ID == 9)
    got, err = _cli_table(capsys, tmp_path, "--accept", "ID.LE.3", "--accept", "ID == 9")
    assert got.ID.tolist() == [1, 2, 3, 9]
    _assert_same_nca(got, nca(data[keep]))
    _assert_same_nca(got, nca(data)[lambda t: t.ID.isin([1, 2, 3, 9])].reset_index(drop=True))
    assert (f"rows matching ID.LE.3 {int((data.ID <= 3).sum())}, ID == 9 {int((data.ID == 9).sum())}; "
            f"{int((~keep).sum())} rows not accepted, dropped, {int(((~keep) & (data.EVID == 1)).sum())} of them "
            "dose records") in err


def test_no_filter_prints_no_note(tmp_path, capsys):
    got, err = _cli_table(capsys, tmp_path)
    _assert_same_nca(got, nca(_theoph()))
    assert "--ignore" not in err and "--accept" not in err


@pytest.mark.parametrize("options, message", [
    (["--ignore", "TIME.GT"], "--ignore: 'TIME.GT' is not a condition; expected COLUMN.OP.VALUE"),
    (["--accept", "ID.EQ.one"], "--accept: 'ID.EQ.one': the value 'one' is not a number"),
    (["--ignore", "DV.EQ.0", "--ignore", "NOPE.GT.1"],
     "--ignore: 'NOPE.GT.1' names column NOPE, which the dataset does not have"),
    (["--accept", "ID.GT.100"], "the dataset has no data rows left after --ignore/--accept"),
])
def test_malformed_or_empty_filters_exit_2_naming_the_expression(capsys, options, message):
    assert main(["nca", str(THEO), *options]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bayespk nca: error: ") and message in err, err
    assert "Traceback" not in err and "[data]" not in err and err.count("\n") == 1


def test_ignore_and_accept_together_are_refused(capsys):
    with pytest.raises(SystemExit) as e:  # argparse: the two options exclude each other (as in NONMEM)
        main(["nca", str(THEO), "--ignore", "DV.EQ.0", "--accept", "ID.EQ.1"])
    assert e.value.code == 2
    assert "--accept: not allowed with argument --ignore" in capsys.readouterr().err
