"""Dataset validation: every rule of bayespk.data.nonmem (and the model-level data checks).

Each malformed dataset is small and written to ``tmp_path`` (or given as a DataFrame);
the error must name the row (1-based, data rows after the header), the column and the rule.
"""

from __future__ import annotations

import re
import textwrap

import numpy as np
import pandas as pd
import pytest

from bayespk.data import bundled
from bayespk.data.nonmem import NONMEM_COLUMNS, Dataset, DataSummary, read_nonmem
from bayespk.errors import DataError, SpecError
from bayespk.model.population import PopulationModel
from bayespk.model.spec import Spec

HEADER = "ID,TIME,AMT,DV,EVID,MDV"
# rows 1-5: a valid two-subject IV dataset (row 1 = first data row)
VALID = """\
1,0,100,.,1,1
1,1,.,5.0,0,0
1,2,.,3.0,0,0
2,0,100,.,1,1
2,1,.,4.0,0,0
"""


def csv(tmp_path, body: str, header: str = HEADER, name: str = "data.csv"):
    """Write a CSV (header + dedented body) and return its path."""
    p = tmp_path / name
    p.write_text(header + "\n" + textwrap.dedent(body))
    return p


def bad(tmp_path, body: str, match: str, header: str = HEADER) -> DataError:
    p = csv(tmp_path, body, header)
    with pytest.raises(DataError, match=match) as e:
        read_nonmem(p)
    return e.value


def test_valid_base_dataset_reads(tmp_path):
    ds = read_nonmem(csv(tmp_path, VALID))
    assert isinstance(ds, Dataset)
    assert ds.summary.n_subjects == 2
    assert ds.summary.n_observations == 3
    assert ds.summary.n_dose_records == 2
    assert ds.summary.n_rows == 5
    assert list(ds.table.ROW) == [1, 2, 3, 4, 5]


# --------------------------------------------------------------------------- per-value rules


def test_non_numeric_value_in_nonmem_column(tmp_path):
    body = VALID.replace("1,2,.,3.0,0,0", "1,2,.,high,0,0")
    bad(tmp_path, body, r"row 3, column DV: 'high' is not a number")


def test_non_numeric_time(tmp_path):
    body = VALID.replace("1,1,.,5.0,0,0", "1,1h,.,5.0,0,0")
    bad(tmp_path, body, r"row 2, column TIME: '1h' is not a number")


def test_missing_id(tmp_path):
    body = VALID.replace("1,2,.,3.0,0,0", ".,2,.,3.0,0,0")
    bad(tmp_path, body, r"row 3, column ID: missing ID \(every row needs one\)")


def test_missing_time(tmp_path):
    body = VALID.replace("1,2,.,3.0,0,0", "1,,.,3.0,0,0")
    bad(tmp_path, body, r"row 3, column TIME: missing TIME")


def test_time_decreasing_within_id(tmp_path):
    body = """\
    1,0,100,.,1,1
    1,2,.,5.0,0,0
    1,1,.,3.0,0,0
    """
    bad(tmp_path, body, r"row 3, column TIME: TIME 1 decreases within ID 1 \(previous row has TIME 2\)")


def test_time_may_decrease_between_ids(tmp_path):
    ds = read_nonmem(csv(tmp_path, VALID))  # ID 2 restarts at TIME 0
    assert ds.summary.n_subjects == 2


def test_id_non_contiguous(tmp_path):
    body = VALID + "1,3,.,2.0,0,0\n"
    bad(tmp_path, body, r"row 6, column ID: ID 1 appears again after other IDs; a subject's rows must be "
                        r"contiguous")


def test_dose_without_amt(tmp_path):
    body = VALID.replace("2,0,100,.,1,1", "2,0,.,.,1,1")
    bad(tmp_path, body, r"row 4, column AMT: dose record \(EVID 1\) needs AMT > 0, got missing")


@pytest.mark.parametrize("amt", ["0", "-5"])
def test_dose_with_amt_not_positive(tmp_path, amt):
    body = VALID.replace("2,0,100,.,1,1", f"2,0,{amt},.,1,1")
    bad(tmp_path, body, rf"row 4, column AMT: dose record \(EVID 1\) needs AMT > 0, got {amt}\b")


def test_observation_with_amt(tmp_path):
    body = VALID.replace("1,1,.,5.0,0,0", "1,1,50,5.0,0,0")
    bad(tmp_path, body, r"row 2, column AMT: non-dose record \(EVID 0\) has AMT=50; dose records need EVID 1 or 4")


def test_negative_concentration(tmp_path):
    body = VALID.replace("1,2,.,3.0,0,0", "1,2,.,-3.0,0,0")
    bad(tmp_path, body, r"row 3, column DV: negative concentration -3")


def test_observation_without_dv(tmp_path):
    body = VALID.replace("1,2,.,3.0,0,0", "1,2,.,.,0,0")
    bad(tmp_path, body, r"row 3, column DV: observation record \(EVID 0, MDV 0\) has no DV; set MDV=1")


def test_unknown_evid(tmp_path):
    body = VALID.replace("1,2,.,3.0,0,0", "1,2,.,3.0,7,0")
    bad(tmp_path, body, r"row 3, column EVID: unknown EVID 7 \(0 observation, 1 dose")


def test_reset_record_with_amount_refused(tmp_path):
    body = VALID.replace("1,2,.,3.0,0,0", "1,2,50,.,3,1")
    bad(tmp_path, body, r"row 3, column AMT: non-dose record \(EVID 3\) has AMT=50; dose records need EVID 1 or 4")


def test_reset_and_dose_needs_amount(tmp_path):
    body = VALID.replace("1,2,.,3.0,0,0", "1,2,.,.,4,1")
    bad(tmp_path, body, r"row 3, column AMT: dose record \(EVID 4\) needs AMT > 0")


def test_missing_evid_value(tmp_path):
    body = VALID.replace("1,2,.,3.0,0,0", "1,2,.,3.0,.,0")
    bad(tmp_path, body, r"row 3, column EVID: missing EVID")


def test_invalid_mdv(tmp_path):
    body = VALID.replace("1,2,.,3.0,0,0", "1,2,.,3.0,0,2")
    bad(tmp_path, body, r"row 3, column MDV: MDV must be 0 or 1, got 2")


def test_dose_record_with_mdv_0(tmp_path):
    body = VALID.replace("2,0,100,.,1,1", "2,0,100,.,1,0")
    bad(tmp_path, body, r"row 4, column MDV: dose record \(EVID 1\) must have MDV=1")


def test_dv_on_other_event_with_mdv_0(tmp_path):
    body = VALID.replace("1,2,.,3.0,0,0", "1,2,.,3.0,2,0")
    bad(tmp_path, body, r"row 3, column DV: DV given on a non-observation record with MDV=0; set MDV=1")


# --------------------------------------------------------------------------- dosing fields

DOSING = "ID,TIME,AMT,DV,EVID,MDV,RATE,II,ADDL,SS"
DOSING_VALID = """\
1,0,100,.,1,1,0,12,2,0
1,1,.,5.0,0,0,.,.,.,.
1,30,.,3.0,0,0,.,.,.,.
"""


def test_addl_dosing_valid(tmp_path):
    ds = read_nonmem(csv(tmp_path, DOSING_VALID, DOSING))
    assert ds.summary.n_dose_records == 1
    assert ds.summary.n_doses == 3  # 1 + ADDL 2


def test_rate_on_non_dose_row(tmp_path):
    body = DOSING_VALID.replace("1,1,.,5.0,0,0,.,.,.,.", "1,1,.,5.0,0,0,10,.,.,.")
    bad(tmp_path, body, r"row 2, column RATE: RATE=10 on a non-dose record", DOSING)


def test_invalid_rate(tmp_path):
    body = DOSING_VALID.replace("1,0,100,.,1,1,0,12,2,0", "1,0,100,.,1,1,-3,12,2,0")
    bad(tmp_path, body, r"row 1, column RATE: RATE must be 0 \(bolus\), > 0 \(infusion\), -1 or -2, got "
                        r"-3", DOSING)


@pytest.mark.parametrize("rate, param", [(-1, "R1"), (-2, "D1")])
def test_modeled_rate_needs_its_parameter(tmp_path, rate, param):
    body = DOSING_VALID.replace("1,0,100,.,1,1,0,12,2,0", f"1,0,100,.,1,1,{rate},12,2,0")
    with pytest.raises(SpecError, match=rf"row 1, column RATE: RATE = {rate} \(modeled .*\) needs parameter "
                                        rf"{param} in \[parameters.{param}\]"):
        PopulationModel(iv_spec(), csv(tmp_path, body, DOSING))
    spec = Spec.from_dict(dict(IV, parameters=IV["parameters"] | {param: {"guess": 2.0}}))
    with pytest.raises(SpecError, match=rf"\[parameters.{param}\]: no dose record has RATE = {rate}"):
        PopulationModel(spec, csv(tmp_path, DOSING_VALID, DOSING))


def test_addl_without_ii(tmp_path):
    body = DOSING_VALID.replace("1,0,100,.,1,1,0,12,2,0", "1,0,100,.,1,1,0,.,2,0")
    bad(tmp_path, body, r"row 1, column II: ADDL=2 needs II > 0", DOSING)


def test_ii_without_addl(tmp_path):
    body = DOSING_VALID.replace("1,0,100,.,1,1,0,12,2,0", "1,0,100,.,1,1,0,12,0,0")
    bad(tmp_path, body, r"row 1, column ADDL: II=12 without ADDL or SS", DOSING)


@pytest.mark.parametrize("addl", ["-1", "1.5"])
def test_addl_negative_or_not_whole(tmp_path, addl):
    body = DOSING_VALID.replace("1,0,100,.,1,1,0,12,2,0", f"1,0,100,.,1,1,0,12,{addl},0")
    bad(tmp_path, body, rf"row 1, column ADDL: ADDL must be a whole number >= 0, got "
                        rf"{re.escape(addl)}\b", DOSING)


def test_negative_ii(tmp_path):
    body = DOSING_VALID.replace("1,0,100,.,1,1,0,12,2,0", "1,0,100,.,1,1,0,-12,2,0")
    bad(tmp_path, body, r"row 1, column II: II must be >= 0, got -12", DOSING)


def test_ii_addl_on_non_dose_row(tmp_path):
    body = DOSING_VALID.replace("1,1,.,5.0,0,0,.,.,.,.", "1,1,.,5.0,0,0,.,12,1,.")
    bad(tmp_path, body, r"row 2, column ADDL: II/ADDL given on a non-dose record", DOSING)


def test_steady_state_needs_ii(tmp_path):
    body = DOSING_VALID.replace("1,0,100,.,1,1,0,12,2,0", "1,0,100,.,1,1,0,0,0,1")
    bad(tmp_path, body, r"row 1, column II: steady-state dose \(SS=1\) needs the dosing interval II > 0", DOSING)


def test_steady_state_on_observation_refused(tmp_path):
    body = DOSING_VALID.replace("1,1,.,5.0,0,0,.,.,.,.", "1,1,.,5.0,0,0,.,.,.,1")
    bad(tmp_path, body, r"row 2, column SS: SS=1 on a non-dose record", DOSING)


def test_repeated_infusion_longer_than_interval_refused(tmp_path):
    body = DOSING_VALID.replace("1,0,100,.,1,1,0,12,2,0", "1,0,100,.,1,1,5,12,2,0")
    bad(tmp_path, body, r"row 1, column RATE: infusion of 20 h \(AMT/RATE\) is longer than II=12", DOSING)


def test_constant_steady_state_infusion_accepted(tmp_path):
    body = DOSING_VALID.replace("1,0,100,.,1,1,0,12,2,0", "1,0,0,.,1,1,5,0,0,1")
    ds = read_nonmem(csv(tmp_path, body, DOSING))
    assert ds.summary.n_dose_records >= 1


def test_ss_invalid_value(tmp_path):
    body = DOSING_VALID.replace("1,0,100,.,1,1,0,12,2,0", "1,0,100,.,1,1,0,12,2,3")
    bad(tmp_path, body, r"row 1, column SS: SS must be 0, 1 or 2, got 3", DOSING)


@pytest.mark.parametrize("cmt", ["0", "-1", "1.5"])
def test_invalid_cmt(tmp_path, cmt):
    body = """\
    1,0,100,.,1,1,1
    1,1,.,5.0,0,0,{cmt}
    """.format(cmt=cmt)
    bad(tmp_path, body, rf"row 2, column CMT: CMT must be a positive whole number, got {re.escape(cmt)}\b",
        HEADER + ",CMT")


# --------------------------------------------------------------------------- censoring

CENS_HEADER = HEADER + ",BLQ,LLOQ"


def test_blq_without_lloq(tmp_path):
    body = """\
    1,0,100,.,1,1,0,.
    1,1,.,5.0,0,0,0,.
    1,2,.,.,0,0,1,.
    """
    bad(tmp_path, body, r"row 3, column LLOQ: BLQ record needs an LLOQ value", CENS_HEADER)


def test_blq_with_lloq_is_censored(tmp_path):
    body = """\
    1,0,100,.,1,1,0,.
    1,1,.,5.0,0,0,0,0.1
    1,2,.,.,0,0,1,0.1
    """
    ds = read_nonmem(csv(tmp_path, body, CENS_HEADER))
    assert ds.summary.n_blq == 1
    assert ds.summary.n_observations == 2
    assert list(ds.table.CENS) == [0, 0, 1]


def test_dv_below_lloq_not_flagged(tmp_path):
    body = """\
    1,0,100,.,1,1,0,.
    1,1,.,5.0,0,0,0,0.1
    1,2,.,0.05,0,0,0,0.1
    """
    bad(tmp_path, body, r"row 3, column DV: DV 0.05 is below LLOQ 0.1 but the row is not flagged BLQ/CENS",
        CENS_HEADER)


def test_blq_value_not_0_or_1(tmp_path):
    body = """\
    1,0,100,.,1,1,0,.
    1,1,.,5.0,0,0,2,0.1
    """
    bad(tmp_path, body, r"row 2, column BLQ: BLQ must be 0 or 1, got 2", CENS_HEADER)


@pytest.mark.parametrize("blq,cens", [(1, 0), (0, 1), (1, -1)])
def test_cens_blq_contradiction(tmp_path, blq, cens):
    body = f"""\
    1,0,100,.,1,1,0,0,.
    1,1,.,5.0,0,0,{blq},{cens},0.1
    """
    bad(tmp_path, body, rf"row 2, column CENS: CENS={cens} contradicts BLQ={blq}", HEADER + ",BLQ,CENS,LLOQ")


def test_cens_invalid_value(tmp_path):
    body = """\
    1,0,100,.,1,1,0
    1,1,.,5.0,0,0,2
    """
    bad(tmp_path, body, r"row 2, column CENS: CENS must be -1, 0 or 1, got 2", HEADER + ",CENS")


def test_cens_on_dose_record(tmp_path):
    body = """\
    1,0,100,.,1,1,1
    1,1,.,5.0,0,0,0
    """
    bad(tmp_path, body, r"row 1, column CENS: BLQ/CENS flag on a non-observation record", HEADER + ",CENS")


def test_cens_without_blq_column_dv_holds_lloq(tmp_path):
    body = """\
    1,0,100,.,1,1,0
    1,1,.,5.0,0,0,0
    1,2,.,0.1,0,0,1
    """
    ds = read_nonmem(csv(tmp_path, body, HEADER + ",CENS"))
    assert ds.summary.n_blq == 1
    assert list(ds.table.BLQ) == [0, 0, 1]


def test_right_censored_needs_dv(tmp_path):
    body = """\
    1,0,100,.,1,1,0
    1,1,.,5.0,0,0,0
    1,2,.,.,0,0,-1
    """
    bad(tmp_path, body, r"row 3, column DV: right-censored record \(CENS=-1\) needs DV as the limit",
        HEADER + ",CENS")


def test_negative_lloq(tmp_path):
    body = """\
    1,0,100,.,1,1,0,.
    1,1,.,5.0,0,0,0,-0.1
    """
    bad(tmp_path, body, r"row 2, column LLOQ: LLOQ must be >= 0, got -0.1", CENS_HEADER)


# --------------------------------------------------------------------------- file-level rules


def test_duplicate_columns_differing_in_case(tmp_path):
    bad(tmp_path, VALID.replace("\n", ",1\n"), r"columns 'DV' and 'dv' both mean DV", HEADER + ",dv")


def test_duplicate_columns_same_name(tmp_path):
    # pandas would silently rename the second one to 'DV.1' and treat it as a covariate
    bad(tmp_path, VALID.replace("\n", ",1\n"), r"data\.csv: column 'DV' appears more than once in the header",
        HEADER + ",DV")


def test_duplicate_columns_via_alias(tmp_path):
    p = csv(tmp_path, VALID.replace("\n", ",1\n"), HEADER + ",conc")
    with pytest.raises(DataError, match=r"columns 'DV' and 'conc' both mean DV"):
        read_nonmem(p, aliases={"conc": "DV"})


@pytest.mark.parametrize("value", ["inf", "-inf", "Infinity"])
def test_infinite_value(tmp_path, value):
    body = VALID.replace("1,2,.,3.0,0,0", f"1,2,.,{value},0,0")
    bad(tmp_path, body, r"row 3, column DV: value is infinite")


def test_infinite_value_in_dataframe():
    df = pd.DataFrame({"ID": [1, 1], "TIME": [0.0, np.inf], "AMT": [100, None], "DV": [None, 5.0]})
    with pytest.raises(DataError, match=r"<DataFrame>: row 2, column TIME: value is infinite"):
        read_nonmem(df)


def test_empty_file(tmp_path):
    p = tmp_path / "empty.csv"
    p.write_text("")
    with pytest.raises(DataError, match=r"empty\.csv: the file is empty"):
        read_nonmem(p)


def test_whitespace_only_file(tmp_path):
    p = tmp_path / "blank.csv"
    p.write_text("\n  \n")
    with pytest.raises(DataError, match=r"the file is empty"):
        read_nonmem(p)


def test_header_only_file(tmp_path):
    with pytest.raises(DataError, match=r"the dataset has no data rows"):
        read_nonmem(csv(tmp_path, ""))


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.csv: no such file"):
        read_nonmem(tmp_path / "nope.csv")


def test_not_utf8_file(tmp_path):
    p = tmp_path / "latin1.csv"
    p.write_bytes(("ID,TIME,AMT,DV,DOSE_\u00b5g\n1,0,100,.,1\n1,1,.,5,1\n").encode("latin-1"))
    with pytest.raises(DataError, match=r"latin1\.csv: not UTF-8 text"):
        read_nonmem(p)


def test_no_observations(tmp_path):
    body = """\
    1,0,100,.,1,1
    1,1,.,5.0,0,1
    """
    bad(tmp_path, body, r"no observation records \(EVID 0, MDV 0\) to fit")


@pytest.mark.parametrize("col", ["ID", "TIME", "AMT", "DV"])
def test_missing_required_column(tmp_path, col):
    names = HEADER.split(",")
    keep = [i for i, n in enumerate(names) if n != col]
    header = ",".join(names[i] for i in keep)
    body = "".join(",".join(line.split(",")[i] for i in keep) + "\n" for line in VALID.splitlines())
    err = bad(tmp_path, body, rf"column {col} is required but absent; columns are: ", header)
    assert f"aliases={{'yourname': '{col}'}}" in str(err)


def test_alias_naming_no_column(tmp_path):
    with pytest.raises(DataError, match=r"alias 'CONCENTRATION' names no column of the dataset"):
        read_nonmem(csv(tmp_path, VALID), aliases={"concentration": "DV"})


def test_unreadable_csv(tmp_path):
    body = VALID + '1,3,.,"2.0,0,0\n'
    with pytest.raises(DataError, match=r"not a readable CSV|is not a number"):
        read_nonmem(csv(tmp_path, body))


def test_several_problems_in_one_message(tmp_path):
    body = """\
    1,0,100,.,1,1
    1,1,.,-5.0,0,0
    1,2,.,3.0,9,0
    1,3,20,3.0,0,0
    """
    err = bad(tmp_path, body, r"row 2, column DV: negative concentration -5")
    msg = str(err)
    assert "row 3, column EVID: unknown EVID 9" in msg
    assert "row 4, column AMT: non-dose record (EVID 0) has AMT=20" in msg
    assert msg.count("\n") >= 2  # one problem per line


def test_many_problems_are_truncated(tmp_path):
    body = "1,0,100,.,1,1\n" + "".join(f"1,{t},.,-1,0,0\n" for t in range(1, 30))
    err = bad(tmp_path, body, r"row 2, column DV: negative concentration -1")
    msg = str(err)
    assert msg.count("negative concentration") == 10
    assert "and more problems of these kinds" in msg


# --------------------------------------------------------------------------- positive behaviour


def test_column_names_case_insensitive(tmp_path):
    ds = read_nonmem(csv(tmp_path, VALID.replace("\n", ",70\n"), "id,Time,amt,dV,evid,Mdv,wt"))
    assert {"ID", "TIME", "AMT", "DV", "EVID", "MDV", "WT"} <= set(ds.table.columns)
    assert ds.covariates == ["WT"]
    assert ds.summary.n_observations == 3


def test_header_whitespace_ignored(tmp_path):
    ds = read_nonmem(csv(tmp_path, VALID, "ID, TIME, AMT, DV, EVID, MDV"))
    assert ds.summary.n_observations == 3


@pytest.mark.parametrize("missing", [".", "", "NA"])
def test_missing_markers(tmp_path, missing):
    body = VALID.replace("1,0,100,.,1,1", f"1,0,100,{missing},1,1").replace(
        "1,1,.,5.0,0,0", f"1,1,{missing},5.0,0,0")
    ds = read_nonmem(csv(tmp_path, body))
    assert np.isnan(ds.table.DV.iloc[0])
    assert np.isnan(ds.table.AMT.iloc[1])
    assert ds.summary.n_observations == 3


def test_dataframe_none_is_missing():
    df = pd.DataFrame({"ID": [1, 1], "TIME": [0, 1], "AMT": [100, None], "DV": [None, 5.0]})
    ds = read_nonmem(df)
    assert ds.source == "<DataFrame>"
    assert list(ds.table.EVID) == [1, 0]
    assert ds.summary.n_observations == 1


def test_mdv1_observations_excluded_but_counted(tmp_path):
    body = VALID.replace("1,2,.,3.0,0,0", "1,2,.,.,0,1") + "2,2,.,2.0,0,1\n"
    ds = read_nonmem(csv(tmp_path, body))
    assert ds.summary.n_observations == 2
    assert ds.summary.excluded == {"observation records with MDV=1 (not in the likelihood)": 2}
    assert len(ds.observations) == 2
    assert set(ds.observations.ROW) == {2, 5}
    assert "2 rows excluded: observation records with MDV=1" in str(ds.summary)


def test_commented_rows_counted(tmp_path):
    body = """\
    1,0,100,.,1,1,.
    1,1,.,5.0,0,0,.
    1,2,.,garbage,0,0,C
    2,0,100,.,1,1,
    2,1,.,4.0,0,0,c
    2,2,.,3.0,0,0,.
    """
    ds = read_nonmem(csv(tmp_path, body, HEADER + ",C"))
    assert ds.summary.excluded == {"commented out (C column)": 2}
    assert ds.summary.n_rows == 6
    assert ds.summary.n_observations == 2
    assert "C" not in ds.table.columns and "C" not in ds.covariates
    assert list(ds.table.ROW) == [1, 2, 4, 6]  # source row numbers are kept
    assert "2 rows excluded: commented out (C column)" in str(ds.summary)


def test_aliases_rename(tmp_path):
    p = csv(tmp_path, VALID.replace("\n", ",70\n"), "subject,t,dose,conc,EVID,MDV,weight")
    ds = read_nonmem(p, aliases={"subject": "ID", "T": "time", "Dose": "AMT", "conc": "DV"})
    assert ds.summary.n_subjects == 2
    assert ds.summary.n_observations == 3
    assert ds.covariates == ["WEIGHT"]
    assert {"ID", "TIME", "AMT", "DV"} <= set(ds.table.columns)


def test_text_covariate_stays_text(tmp_path):
    body = "".join(line + ("," + ("male" if line.startswith("1") else "female")) + "\n"
                   for line in VALID.splitlines())
    ds = read_nonmem(csv(tmp_path, body, HEADER + ",SEX"))
    assert ds.covariates == ["SEX"]
    assert ds.table.SEX.dtype == object  # Python strings, whatever pandas' default string dtype
    assert not pd.api.types.is_numeric_dtype(ds.table.SEX)
    assert list(ds.table.SEX) == ["male"] * 3 + ["female"] * 2
    assert ds.subject_covariate("SEX", "test").to_dict() == {1.0: "male", 2.0: "female"}


def test_text_covariate_with_missing_value(tmp_path):
    body = "".join(line + "," + v + "\n" for line, v in zip(VALID.splitlines(), ["a", ".", "a", "b", "b"]))
    ds = read_nonmem(csv(tmp_path, body, HEADER + ",GRP"))
    assert ds.table.GRP.isna().tolist() == [False, True, False, False, False]


def test_utf8_bom_is_ignored(tmp_path):
    p = tmp_path / "bom.csv"
    p.write_bytes(b"\xef\xbb\xbf" + (HEADER + "\n" + VALID).encode())
    assert read_nonmem(p).summary.n_observations == 3


def test_numeric_covariate_is_float(tmp_path):
    ds = read_nonmem(csv(tmp_path, VALID.replace("\n", ",70\n"), HEADER + ",WT"))
    assert ds.table.WT.dtype == float


def test_evid_mdv_derived_when_absent(tmp_path):
    body = """\
    1,0,100,.
    1,1,.,5.0
    1,2,0,3.0
    """
    ds = read_nonmem(csv(tmp_path, body, "ID,TIME,AMT,DV"))
    assert list(ds.table.EVID) == [1, 0, 0]
    assert list(ds.table.MDV) == [1, 0, 0]
    assert ds.summary.n_observations == 2
    assert ds.summary.n_dose_records == 1


def test_defaults_filled(tmp_path):
    ds = read_nonmem(csv(tmp_path, VALID))
    for col in NONMEM_COLUMNS:
        assert col in ds.table.columns
    assert (ds.table[["RATE", "II", "ADDL", "SS", "BLQ", "CENS"]] == 0).all().all()
    assert ds.table.CMT.isna().all() and ds.table.LLOQ.isna().all()


def test_evid2_counted(tmp_path):
    body = VALID.replace("1,2,.,3.0,0,0", "1,2,.,.,2,1")
    ds = read_nonmem(csv(tmp_path, body))
    assert ds.summary.n_other_events == 1
    assert "1 other-event records (EVID 2)" in str(ds.summary)


def test_to_csv_round_trip(tmp_path):
    ds = read_nonmem(csv(tmp_path, VALID))
    out = tmp_path / "out.csv"
    ds.to_csv(out)
    again = read_nonmem(out)
    pd.testing.assert_frame_equal(again.table, ds.table)


def test_summary_to_dict():
    s = DataSummary(1, 1, 1, 1, 1, 0, 0, {"x": 1}, ["WT"])
    assert DataSummary(**s.to_dict()) == s


def test_bundled_theophylline():
    assert "theophylline" in bundled.names()
    ds = bundled.load("theophylline")
    s = ds.summary
    assert (s.n_subjects, s.n_observations, s.n_dose_records) == (12, 132, 12)
    assert s.n_rows == 144
    assert s.covariates == ["WT"]
    assert s.excluded == {}


def test_bundled_phenobarbital():
    ds = bundled.load("phenobarbital")
    s = ds.summary
    assert (s.n_subjects, s.n_observations, s.n_dose_records, s.n_rows) == (59, 155, 589, 744)
    assert s.covariates == ["WT", "APGR", "APGRLOW"]


def test_bundled_unknown_name():
    with pytest.raises(DataError, match=r"no bundled dataset 'nope'; available: .*theophylline"):
        bundled.path("nope")


# --------------------------------------------------------------------------- model-level data checks

IV = {"model": {"structure": "1cmt_iv"}, "parameters": {"CL": {"guess": 1.0}, "V": {"guess": 10.0}}}
ORAL = {"model": {"structure": "1cmt_oral"},
        "parameters": {"CL": {"guess": 1.0}, "V": {"guess": 10.0}, "KA": {"guess": 1.0}}}


def iv_spec(covariates=(), error="additive", structure=IV) -> Spec:
    d = dict(structure, error={"model": error}, covariates=list(covariates))
    return Spec.from_dict(d)


def cov_data(tmp_path, values, name="WT"):
    """VALID with one covariate column; ``values`` gives one text value per row."""
    body = "".join(f"{line},{v}\n" for line, v in zip(VALID.splitlines(), values))
    return csv(tmp_path, body, HEADER + "," + name)


def test_model_builds_on_valid_data(tmp_path):
    spec = iv_spec([{"parameter": "CL", "column": "wt", "effect": "power", "reference": 70}])
    m = PopulationModel(spec, cov_data(tmp_path, [70, 70, 70, 80, 80]))
    assert m.design.n_obs == 3 and m.design.n_subjects == 2
    assert m.spec.data.path == str((tmp_path / "data.csv").resolve())


def test_model_covariate_absent(tmp_path):
    spec = iv_spec([{"parameter": "CL", "column": "WT", "effect": "power", "reference": 70}])
    with pytest.raises(DataError, match=r"column WT: the power effect of WT on CL uses covariate WT, but the "
                                        r"dataset \(.*data\.csv\) has no such column"):
        PopulationModel(spec, csv(tmp_path, VALID))


def test_model_covariate_missing_on_a_first_record(tmp_path):
    spec = iv_spec([{"parameter": "CL", "column": "WT", "effect": "power", "reference": 70}])
    with pytest.raises(DataError, match=r"row 4, column WT: missing value for ID 2 with no earlier value to carry "
                                        r"forward; .* \(1 rows without a value\)"):
        PopulationModel(spec, cov_data(tmp_path, [70, 70, 70, ".", 80]))


def test_model_covariate_carried_forward_and_time_varying(tmp_path):
    spec = iv_spec([{"parameter": "CL", "column": "WT", "effect": "power", "reference": 70}])
    m = PopulationModel(spec, cov_data(tmp_path, [70, ".", 72, 80, 81]))
    info = m._covariates["CL_WT"]
    np.testing.assert_array_equal(info["records"], [70, 70, 72, 80, 81])
    np.testing.assert_array_equal(info["values"], [70, 80])  # baseline per subject
    assert info["time_varying"]


@pytest.mark.parametrize("value", [0, -3])
def test_model_power_effect_non_positive_covariate(tmp_path, value):
    spec = iv_spec([{"parameter": "CL", "column": "WT", "effect": "power", "reference": 70}])
    with pytest.raises(DataError, match=rf"row 4, column WT \(ID 2\): value {value} is not > 0; a power "
                                        r"effect of WT on CL needs positive values"):
        PopulationModel(spec, cov_data(tmp_path, [70, 70, 70, value, value]))


def test_model_numeric_effect_on_text_covariate(tmp_path):
    spec = iv_spec([{"parameter": "CL", "column": "WT", "effect": "linear", "reference": 70}])
    with pytest.raises(DataError, match=r"row 4, column WT \(ID 2\): value 'heavy' is not a number; a linear "
                                        r"effect needs a numeric covariate"):
        PopulationModel(spec, cov_data(tmp_path, [70, 70, 70, "heavy", "heavy"]))


def test_model_categorical_reference_absent(tmp_path):
    spec = iv_spec([{"parameter": "V", "column": "SEX", "effect": "categorical", "reference": "other"}])
    with pytest.raises(SpecError, match=r"covariate V_SEX: reference level 'other' does not occur in column "
                                        r"SEX "
                                        r"\(levels: female, male\)"):
        PopulationModel(spec, cov_data(tmp_path, ["male"] * 3 + ["female"] * 2, "SEX"))


def test_model_categorical_single_level(tmp_path):
    spec = iv_spec([{"parameter": "V", "column": "SEX", "effect": "categorical"}])
    with pytest.raises(DataError, match=r"column SEX: every subject has level 'male'"):
        PopulationModel(spec, cov_data(tmp_path, ["male"] * 5, "SEX"))


def test_model_categorical_default_reference_resolved(tmp_path):
    spec = iv_spec([{"parameter": "V", "column": "SEX", "effect": "categorical"}])
    m = PopulationModel(spec, cov_data(tmp_path, ["male"] * 3 + ["female"] * 2, "SEX"))
    (c,) = m.spec.covariates
    assert c.reference == "female"  # lowest level
    assert c.coefficient is not None


def test_model_dose_into_unknown_cmt(tmp_path):
    body = """\
    1,0,100,.,1,1,2
    1,1,.,5.0,0,0,1
    """
    with pytest.raises(DataError, match=r"row 1, column CMT: dose into CMT 2, but structure 1cmt_iv has "
                                        r"compartments \[1\]"):
        PopulationModel(iv_spec(), csv(tmp_path, body, HEADER + ",CMT"))


def test_model_observation_in_depot(tmp_path):
    body = """\
    1,0,100,.,1,1,1
    1,1,.,5.0,0,0,2
    1,2,.,3.0,0,0,1
    """
    with pytest.raises(DataError, match=r"row 3, column CMT: observation in CMT 1, but structure 1cmt_oral "
                                        r"observes the central compartment, CMT 2"):
        PopulationModel(iv_spec(structure=ORAL), csv(tmp_path, body, HEADER + ",CMT"))


def test_model_infusion_into_depot(tmp_path):
    body = """\
    1,0,100,.,1,1,1,10
    1,1,.,5.0,0,0,2,0
    """
    with pytest.raises(DataError, match=r"row 1, column RATE: zero-order input into the absorption depot"):
        PopulationModel(iv_spec(structure=ORAL), csv(tmp_path, body, HEADER + ",CMT,RATE"))


@pytest.mark.parametrize("error", ["proportional", "lognormal"])
def test_model_observation_before_first_dose(tmp_path, error):
    body = """\
    1,0,.,0.5,0,0
    1,0,100,.,1,1
    1,1,.,5.0,0,0
    """
    with pytest.raises(DataError, match=rf"row 1: observation at TIME 0 has no dose before it, so its "
                                        rf"prediction "
                                        rf"is 0, which {error} error cannot fit.*\(1 such rows\)"):
        PopulationModel(iv_spec(error=error), csv(tmp_path, body))


def test_model_predose_observation_fine_with_additive(tmp_path):
    body = """\
    1,0,.,0.5,0,0
    1,0,100,.,1,1
    1,1,.,5.0,0,0
    """
    m = PopulationModel(iv_spec(error="additive"), csv(tmp_path, body))
    assert m.design.n_obs == 2
    assert list(m.design.first_dose_time()) == [True, False]


@pytest.mark.parametrize("dv", ["0", "0.0"])
def test_model_lognormal_dv_not_positive(tmp_path, dv):
    body = VALID.replace("1,2,.,3.0,0,0", f"1,2,.,{dv},0,0")
    with pytest.raises(DataError, match=r"row 3, column DV: 0 is not > 0, which lognormal error needs"):
        PopulationModel(iv_spec(error="lognormal"), csv(tmp_path, body))


def test_model_data_from_spec_aliases(tmp_path):
    p = csv(tmp_path, VALID, "subject,TIME,AMT,conc,EVID,MDV")
    spec = Spec.from_dict(dict(IV, data={"path": str(p), "aliases": {"subject": "ID", "conc": "DV"}}))
    m = PopulationModel(spec)
    assert m.design.n_obs == 3


def test_model_without_data(tmp_path):
    with pytest.raises(SpecError, match=r"no data: give data=\.\.\. or a \[data\] path in the spec"):
        PopulationModel(iv_spec())
