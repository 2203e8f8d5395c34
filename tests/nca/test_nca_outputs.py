"""NCA outputs: IDs exactly as in the data, and the AUC%extrap > 20% flag."""

from __future__ import annotations

import csv

import numpy as np
import pytest

import bayespk as bpk
from bayespk.cli import main
from bayespk.nca import NCA_COLUMNS, nca

PROFILE = [(0, None, 100), (0.5, 4.0, None), (1, 6.0, None), (2, 5.0, None), (4, 3.5, None), (8, 1.8, None),
           (12, 0.9, None)]


def _write(path, ids):
    lines = ["ID,TIME,AMT,DV"]
    for sid in ids:
        for t, dv, amt in PROFILE:
            lines.append(f"{sid},{t},{'.' if amt is None else amt},{'.' if dv is None else dv}")
    path.write_text("\n".join(lines) + "\n")


def test_extrapolation_flag_theophylline():
    t = nca(bpk.datasets.load("theophylline"))
    assert t.AUC_extrap_over_20.dtype == bool
    assert (t.AUC_extrap_over_20 == (t.AUC_pct_extrap > 20)).all()
    first = t.set_index("ID").loc[1]
    assert first.AUC_pct_extrap == pytest.approx(31.494, abs=1e-3) and first.AUC_extrap_over_20
    assert "AUC_pct_extrap 31.5% > 20%" in first.note and "unreliable" in first.note
    assert (t.note[~t.AUC_extrap_over_20] == "").all()
    assert first.reason == ""  # everything was computed: the flag is a note, not a reason


def test_no_lambda_z_is_not_flagged(tmp_path):
    p = tmp_path / "d.csv"
    _write(p, [1])
    t = nca(p, lambda_z=None)
    assert np.isnan(t.AUC_pct_extrap.iloc[0]) and not t.AUC_extrap_over_20.iloc[0] and t.note.iloc[0] == ""


@pytest.mark.parametrize("ids", [["1", "2", "10"], ["007", "012"], ["S-01", "S-02"],
                                 ["10010020030040051", "10010020030040052"]])
def test_cli_writes_ids_as_in_the_data(tmp_path, capsys, ids):
    data, out = tmp_path / "d.csv", tmp_path / "nca.csv"
    _write(data, ids)
    assert main(["nca", str(data), "--out", str(out)]) == 0
    with open(out, newline="") as f:
        rows = list(csv.DictReader(f))
    assert list(rows[0]) == NCA_COLUMNS
    assert [r["ID"] for r in rows] == ids
    printed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in printed[1:1 + len(ids)]] == ids
    table = nca(data)
    assert [bpk.data.nonmem.id_label(i) for i in table.ID] == ids


def test_cli_prints_the_extrapolation_note(tmp_path, capsys):
    assert main(["nca", str(bpk.datasets.path("theophylline"))]) == 0
    err = capsys.readouterr().err
    assert "ID 1: AUC_pct_extrap 31.5% > 20%" in err
