"""Generate the malformed-input corpus in tests/data/malformed/ (deterministic; the output is checked in).

    python tests/data/make_malformed.py [OUT_DIR]      # default: tests/data/malformed next to this file

Writes ``data/`` (datasets), ``specs/`` (model specs) and ``cases.json``: one
entry per case with the command line (``{dir}`` is the corpus folder, ``{out}``
a run directory that must not be created), the expected exit status and either
the fragment the error message must contain (malformed cases, exit 2) or
``"valid"`` with the file's separator (control cases, exit 0: the test counts
their rows and subjects with the csv module and compares with what bayespk
read). tests/test_malformed_corpus.py runs every case through the CLI in
process and checks that this script still produces exactly the checked-in files.

Every malformed case is refused before anything is sampled: fit cases fail
while the spec, the data or the options are checked.
"""

from __future__ import annotations

import json
import shutil
import sys
from pathlib import Path

HEADER = "ID,TIME,AMT,DV,EVID,MDV,CMT,WT,SEX"
COLUMNS = HEADER.split(",")
TIMES = (0.5, 1, 2, 4, 8, 12)


def subject(sid, wt=70, sex="M", amt=100, conc=(9.1, 8.2, 6.6, 4.4, 1.9, 0.8), cmt=(1, 1)) -> list[str]:
    """One subject: a dose at TIME 0 into CMT cmt[0], then observations (CMT cmt[1]) at TIMES."""
    rows = [f"{sid},0,{amt},.,1,1,{cmt[0]},{wt},{sex}"]
    rows += [f"{sid},{t:g},.,{c:g},0,0,{cmt[1]},{wt},{sex}" for t, c in zip(TIMES, conc)]
    return rows


BASE = subject(1) + subject(2, 82, "F", conc=(7.4, 7.0, 5.9, 4.2, 2.1, 1.0)) + subject(3, 61, "F", 150)
ORAL = subject(1, cmt=(1, 2)) + subject(2, 82, "F", cmt=(1, 2)) + subject(3, 61, "F", 150, cmt=(1, 2))


def text(rows, header=HEADER, sep=",", end="\n") -> str:
    lines = [header, *rows]
    return end.join(line.replace(",", sep) for line in lines) + end


def edit(rows, row: int, column: str, value, header=HEADER) -> list[str]:
    """``rows`` with the field ``column`` of data row ``row`` (1-based) set to ``value``."""
    out = list(rows)
    fields = out[row - 1].split(",")
    fields[header.split(",").index(column)] = str(value)
    out[row - 1] = ",".join(fields)
    return out


def add_column(rows, name, values, header=HEADER) -> tuple[list[str], str]:
    """``rows`` and ``header`` with one more column; ``values`` is one value, or one per row."""
    values = [values] * len(rows) if not isinstance(values, list) else values
    return [f"{r},{v}" for r, v in zip(rows, values)], f"{header},{name}"


def drop_column(rows, name, header=HEADER) -> tuple[list[str], str]:
    k = header.split(",").index(name)
    keep = lambda line: ",".join(f for i, f in enumerate(line.split(",")) if i != k)  # noqa: E731
    return [keep(r) for r in rows], keep(header)


SPEC = """\
[data]
path = "../data/{data}"
{data_extra}
[model]
structure = "{structure}"
{model_extra}
[parameters.CL]
{cl}

[parameters.V]
guess = 20.0
{parameters_extra}
[error]
model = "proportional"
{error_extra}
[sampler]
chains = 1
draws = 5
tune = 5
{extra}"""


def spec(data="valid_base.csv", structure="1cmt_iv", cl="guess = 5.0", data_extra="", model_extra="",
         parameters_extra="", error_extra="", extra="") -> str:
    return SPEC.format(data=data, structure=structure, cl=cl, data_extra=data_extra, model_extra=model_extra,
                       parameters_extra=parameters_extra, error_extra=error_extra, extra=extra)


def covariate(column="WT", effect="power", reference="70", parameter="CL", more="") -> str:
    ref = f"\nreference = {reference}" if reference is not None else ""
    return f'[[covariates]]\nparameter = "{parameter}"\ncolumn = "{column}"\neffect = "{effect}"{ref}\n{more}'


FIT = ("--out", "{out}", "--draws", "5", "--tune", "5", "--chains", "1")
HUGE = "1" + "0" * 400  # a 401-digit integer: valid TOML, too large for a float


class Corpus:
    """Collects files and cases, then writes them."""

    def __init__(self):
        self.files: dict[str, bytes] = {}
        self.cases: list[dict] = []

    def file(self, rel: str, content: str | bytes) -> str:
        data = content.encode() if isinstance(content, str) else content
        if self.files.get(rel, data) != data:
            raise ValueError(f"{rel} written twice with different contents")
        self.files[rel] = data
        return "{dir}/" + rel

    def case(self, name: str, argv, expect: str) -> None:
        if any(c["name"] == name for c in self.cases):
            raise ValueError(f"case {name} defined twice")
        self.cases.append({"name": name, "argv": [str(a) for a in argv], "exit": 2, "expect": expect})

    def valid(self, name: str, rel: str, content, delimiter: str = ",") -> None:
        path = self.file(rel, content)
        self.cases.append({"name": name, "argv": ["data", path], "exit": 0,
                           "valid": {"file": rel, "delimiter": delimiter}})

    def data(self, name: str, content, expect: str, *options, command="data", ext="csv") -> None:
        """A dataset case: ``bayespk data FILE`` (or ``nca``) must refuse it."""
        self.case(f"{command}/{name}", [command, self.file(f"data/{name}.{ext}", content), *options], expect)

    def fit(self, name: str, spec_text: str, expect: str, *options, data: dict | None = None) -> None:
        """A spec case: ``bayespk fit SPEC --out {out} ...`` must refuse it before sampling."""
        for rel, content in (data or {}).items():
            self.file(f"data/{rel}", content)
        self.case(f"fit/{name}", ["fit", self.file(f"specs/{name}.toml", spec_text), *FIT, *options], expect)

    def write(self, out: Path) -> None:
        if out.exists():
            shutil.rmtree(out)
        for rel, data in sorted(self.files.items()):
            p = out / rel
            p.parent.mkdir(parents=True, exist_ok=True)
            p.write_bytes(data)
        doc = {"about": "generated by tests/data/make_malformed.py; run by tests/test_malformed_corpus.py",
               "n_cases": len(self.cases), "cases": self.cases}
        (out / "cases.json").write_text(json.dumps(doc, indent=1, ensure_ascii=True) + "\n")


def valid_cases(c: Corpus) -> None:
    c.valid("valid/base", "data/valid_base.csv", text(BASE))
    c.file("data/valid_oral.csv", text(ORAL))
    c.valid("valid/semicolon", "data/valid_semicolon.csv", text(BASE, HEADER.replace(",", ";"), ";"), ";")
    c.valid("valid/tab", "data/valid_tab.tsv", text(BASE, HEADER.replace(",", "\t"), "\t"), "\t")
    c.valid("valid/whitespace_dat", "data/valid_whitespace.dat", text(BASE, HEADER.replace(",", " "), " "), " ")
    c.valid("valid/whitespace_txt", "data/valid_whitespace.txt",
            text(BASE, HEADER.replace(",", "  "), "  "), " ")
    c.valid("valid/bom", "data/valid_bom.csv", b"\xef\xbb\xbf" + text(BASE).encode())
    c.valid("valid/crlf", "data/valid_crlf.csv", text(BASE, end="\r\n"))
    c.valid("valid/trailing_comma", "data/valid_trailing_comma.csv", text([r + "," for r in BASE]))
    c.valid("valid/trailing_comma_header_too", "data/valid_trailing_comma_all.csv",
            text([r + "," for r in BASE], HEADER + ","))
    c.valid("valid/quoted", "data/valid_quoted.csv",
            text([r.replace(",M", ',"M, male"').replace(",F", ',"F, female"') for r in BASE]))
    big = [r.replace(f"{k},", f"1001002003004005{k},", 1) for k in (1, 2, 3) for r in subject(k)]
    c.valid("valid/ids_17_digits", "data/valid_ids_17_digits.csv", text(big))
    zero = [r.replace(f"{k},", f"00{k},", 1) for k in (1, 2, 3) for r in subject(k)]
    c.valid("valid/ids_leading_zeros", "data/valid_ids_leading_zeros.csv", text(zero))
    c.valid("valid/blank_lines", "data/valid_blank_lines.csv", text(BASE[:7] + [""] + BASE[7:] + [""]))
    rows, header = add_column(BASE, "C", ["C" if k == 3 else "." for k in range(len(BASE))])
    c.valid("valid/commented_rows", "data/valid_commented_rows.csv", text(rows, header))
    c.valid("valid/predose_negative_time", "data/valid_negative_time.csv",
            text(["1,-0.5,.,.,0,1,1,70,M", *BASE]))
    rows, header = add_column(edit(BASE, 7, "DV", "0.5"), "CENS", ["1" if k == 6 else "0" for k in range(21)])
    c.valid("valid/cens_dv_is_lloq", "data/valid_cens.csv", text(rows, header))
    rows, header = add_column(edit(BASE, 7, "DV", "."), "BLQ", ["1" if k == 6 else "0" for k in range(21)])
    rows, header = add_column(rows, "LLOQ", "0.5", header)
    c.valid("valid/blq_with_lloq", "data/valid_blq_lloq.csv", text(rows, header))
    c.valid("valid/largest_value", "data/valid_1e100.csv", text(edit(BASE, 2, "WT", "1e100")))


def file_cases(c: Corpus) -> None:
    c.data("empty_file", "", "the file is empty")
    c.data("whitespace_only", "\n   \n\t\n", "the file is empty")
    c.data("header_only", HEADER + "\n", "the dataset has no data rows")
    c.data("bom_header_only", b"\xef\xbb\xbf" + (HEADER + "\n").encode(), "the dataset has no data rows")
    c.data("bom_missing_id", b"\xef\xbb\xbf" + text(edit(BASE, 1, "ID", ".")).encode(),
           "row 1, column ID: missing ID (every row needs one)")
    c.data("latin1", text(BASE).replace(",M\n", ",M\u00e4nnlich\n").encode("latin-1"), "not UTF-8 text")
    c.data("utf16", text(BASE).encode("utf-16"), "not UTF-8 text")
    c.data("nul_bytes", text(BASE).replace("\n", "\x00\n", 1), "holds NUL bytes")
    c.data("all_rows_commented", text(*add_column(BASE, "C", "C")), "the dataset has no data rows")
    c.data("row_column_reserved", text(*add_column(BASE, "ROW", "1")), "column ROW is reserved")
    c.data("no_observations", text([r if r.split(",")[4] == "1" else r.replace(",0,0,1,", ",0,1,1,")
                                    for r in BASE]), "no observation records (EVID 0, MDV 0) to fit")
    for col in ("ID", "TIME", "AMT", "DV"):
        c.data(f"missing_column_{col}", text(*drop_column(BASE, col)), f"column {col} is required but absent")


def field_cases(c: Corpus) -> None:
    c.data("row_too_short", text(BASE[:2] + [BASE[2].rsplit(",", 1)[0]] + BASE[3:]),
           "row 3 (line 4): 8 fields, but the header names 9 columns")
    c.data("row_too_long", text(BASE[:4] + [BASE[4] + ",7"] + BASE[5:]),
           "row 5 (line 6): 10 fields, but the header names 9 columns")
    c.data("several_rows_wrong", text([r + ",1" if k % 5 == 0 else r for k, r in enumerate(BASE)]),
           "row 6 (line 7): 10 fields")
    c.data("trailing_comma_some_rows", text([r + "," if k < 3 else r for k, r in enumerate(BASE)]),
           "(it ends with an empty field: a trailing separator?)")
    c.data("extra_value_every_row", text([r + ",5" for r in BASE]),
           "every data row has one more field (10) than the header (line 1) names (9)")
    c.data("header_trailing_comma_only", text(BASE, HEADER + ","),
           "column 10 has no name in the header; every column needs one (the header line ends with a separator?)")
    c.data("unnamed_column", text([r + ",1" for r in BASE], "ID,TIME,,AMT,DV,EVID,MDV,CMT,WT,SEX"),
           "line 1: column 3 has no name in the header")
    c.data("duplicate_column", text(*add_column(BASE, "DV", "1")), "column 'DV' appears more than once")
    c.data("duplicate_column_case", text(*add_column(BASE, "dv", "1")), "columns 'DV' and 'dv' both mean DV")
    c.data("duplicate_via_alias", text(*add_column(BASE, "conc", "1")), "columns 'DV' and 'conc' both mean DV",
           "--alias", "conc=DV")
    c.data("alias_without_equals", text(BASE), "--alias 'conc': expected NAME=COLUMN", "--alias", "conc")
    c.data("alias_names_no_column", text(BASE), "alias 'CONC' names no column", "--alias", "conc=DV")
    c.data("unclosed_quote", text(BASE[:3] + ['1,2,.,"6.6,0,0,1,70,M'] + BASE[4:]),
           "not a readable CSV: line 5")
    c.data("quote_inside_value", text(BASE[:3] + ['1,2,.,"6.6"x,0,0,1,70,M'] + BASE[4:]),
           "not a readable CSV: line 5")
    c.data("rows_semicolon_header_comma", text([r.replace(",", ";") for r in BASE]),
           "(this row seems semicolon-separated, the header comma-separated)")
    c.data("rows_comma_header_semicolon", text(BASE, HEADER.replace(",", ";")),
           "(this row seems comma-separated, the header semicolon-separated)")
    c.data("rows_tab_header_comma", text([r.replace(",", "\t") for r in BASE]),
           "(this row seems tab-separated, the header comma-separated)")
    c.data("pipe_separated", text(BASE, HEADER.replace(",", "|"), "|"),
           "was read as the single column 'ID|TIME|AMT|DV|EVID|MDV|CMT|WT|SEX'")
    c.data("whitespace_missing_value", text(BASE[:1] + [BASE[1].replace(",.,", ",,")] + BASE[2:], sep=" "),
           "(in a whitespace-separated file a missing value must be written, e.g. '.')", ext="dat")
    c.data("decimal_comma", text(BASE, sep=";").replace(";9.1;", ";9,1;"),
           "row 2, column DV: '9,1' is not a number (decimal comma? write 9.1)")


BAD_NUMBERS = {"TIME": (2, "1h"), "AMT": (1, "100mg"), "DV": (2, "<LOQ"), "EVID": (2, "obs"), "MDV": (2, "no"),
               "CMT": (2, "central"), "RATE": (1, "fast"), "II": (1, "q12h"), "ADDL": (1, "two"), "SS": (1, "yes"),
               "BLQ": (2, "Y"), "CENS": (2, "left"), "LLOQ": (2, "low")}


def value_cases(c: Corpus) -> None:
    for col, (row, value) in BAD_NUMBERS.items():
        rows, header = (BASE, HEADER) if col in COLUMNS else add_column(BASE, col, "0" if col != "LLOQ" else ".")
        c.data(f"not_a_number_{col}", text(edit(rows, row, col, value, header), header),
               f"row {row}, column {col}: '{value}' is not a number")
    c.data("missing_id", text(edit(BASE, 3, "ID", ".")), "row 3, column ID: missing ID")
    c.data("missing_time", text(edit(BASE, 3, "TIME", "")), "row 3, column TIME: missing TIME")
    c.data("missing_evid", text(edit(BASE, 3, "EVID", "NA")), "row 3, column EVID: missing EVID")
    c.data("missing_mdv", text(edit(BASE, 3, "MDV", ".")), "row 3, column MDV: missing MDV")
    c.data("negative_amt", text(edit(BASE, 1, "AMT", "-100")),
           "row 1, column AMT: dose record (EVID 1) needs AMT > 0, got -100")
    c.data("zero_amt", text(edit(BASE, 8, "AMT", "0")), "row 8, column AMT: dose record (EVID 1) needs AMT > 0, got 0")
    c.data("negative_dv", text(edit(BASE, 4, "DV", "-2")), "row 4, column DV: negative concentration -2")
    c.data("observation_without_dv", text(edit(BASE, 4, "DV", ".")),
           "row 4, column DV: observation record (EVID 0, MDV 0) has no DV")
    c.data("time_decreasing", text(edit(BASE, 4, "TIME", "0.75")),
           "row 4, column TIME: TIME 0.75 decreases within ID 1 (previous row has TIME 1)")
    c.data("negative_time_decreasing", text(edit(BASE, 2, "TIME", "-1")),
           "row 2, column TIME: TIME -1 decreases within ID 1 (previous row has TIME 0)")
    c.data("ids_not_contiguous", text(BASE + ["1,24,.,0.1,0,0,1,70,M"]),
           "row 22, column ID: ID 1 appears again after other IDs")
    c.data("text_ids_not_contiguous", text([r.replace("1,", "S1,", 1) if r.startswith("1,") else r
                                            for r in BASE + ["1,24,.,0.1,0,0,1,70,M"]]),
           "row 22, column ID: ID S1 appears again after other IDs")
    c.data("id_two_spellings", text([r.replace("2,", "02,", 1) if k == 10 else r for k, r in enumerate(BASE)]),
           "ID '02' is the same number as ID '2' (row 8) written differently")
    c.data("id_decimal_spelling", text([r.replace("3,", "3.0,", 1) if k >= 17 else r for k, r in enumerate(BASE)]),
           "ID '3.0' is the same number as ID '3' (row 15) written differently")
    # EVID / MDV
    c.data("evid_unknown", text(edit(BASE, 3, "EVID", "5")), "row 3, column EVID: unknown EVID 5")
    c.data("mdv_not_0_or_1", text(edit(BASE, 3, "MDV", "2")), "row 3, column MDV: MDV must be 0 or 1, got 2")
    c.data("dose_with_mdv_0", text(edit(BASE, 1, "MDV", "0")),
           "row 1, column MDV: dose record (EVID 1) must have MDV=1")
    c.data("observation_with_amt", text(edit(BASE, 3, "AMT", "50")),
           "row 3, column AMT: non-dose record (EVID 0) has AMT=50")
    c.data("other_event_with_dv", text(edit(BASE, 3, "EVID", "2")),
           "row 3, column DV: DV given on a non-observation record with MDV=0")
    c.data("reset_with_amt", text(edit(edit(BASE, 8, "EVID", "3"), 8, "MDV", "1")),
           "row 8, column AMT: non-dose record (EVID 3) has AMT=100")
    c.data("reset_dose_without_amt", text(edit(BASE, 3, "EVID", "4")), "row 3, column AMT: dose record (EVID 4) needs")
    # CMT
    for value in ("0", "1.5", "-1"):
        c.data(f"cmt_{value.replace('.', '_').replace('-', 'minus')}", text(edit(BASE, 2, "CMT", value)),
               f"row 2, column CMT: CMT must be a positive whole number, got {value}")
    # dosing records
    rows, header = add_column(BASE, "II", "0")
    rows, header = add_column(rows, "ADDL", "0", header)
    rows, header = add_column(rows, "SS", "0", header)
    rows, header = add_column(rows, "RATE", "0", header)

    def dosing(name, changes, expect):
        r = rows
        for row, col, value in changes:
            r = edit(r, row, col, value, header)
        c.data(name, text(r, header), expect)

    dosing("addl_without_ii", [(1, "ADDL", "3")], "row 1, column II: ADDL=3 needs II > 0")
    dosing("ii_without_addl", [(1, "II", "12")], "row 1, column ADDL: II=12 without ADDL or SS")
    dosing("ss_without_ii", [(1, "SS", "1")], "row 1, column II: steady-state dose (SS=1) needs the dosing interval")
    dosing("ss_invalid", [(1, "SS", "3"), (1, "II", "12")], "row 1, column SS: SS must be 0, 1 or 2, got 3")
    dosing("ss_on_observation", [(2, "SS", "1")], "row 2, column SS: SS=1 on a non-dose record")
    dosing("addl_negative", [(1, "ADDL", "-1"), (1, "II", "12")], "row 1, column ADDL: ADDL must be a whole number")
    dosing("addl_fraction", [(1, "ADDL", "1.5"), (1, "II", "12")], "ADDL must be a whole number >= 0, got 1.5")
    dosing("ii_negative", [(1, "II", "-12")], "row 1, column II: II must be >= 0, got -12")
    dosing("ii_addl_on_observation", [(2, "II", "12"), (2, "ADDL", "1")],
           "row 2, column ADDL: II/ADDL given on a non-dose record")
    dosing("rate_on_observation", [(2, "RATE", "10")], "row 2, column RATE: RATE=10 on a non-dose record")
    dosing("rate_invalid", [(1, "RATE", "-3")], "row 1, column RATE: RATE must be 0 (bolus), > 0 (infusion), -1 or -2")
    dosing("infusion_longer_than_ii", [(1, "RATE", "5"), (1, "II", "12"), (1, "ADDL", "2")],
           "infusion of 20 h (AMT/RATE) is longer than II=12")
    dosing("constant_infusion_with_ii", [(1, "AMT", "0"), (1, "RATE", "5"), (1, "SS", "1"), (1, "II", "12")],
           "a constant infusion at steady state (SS=1, AMT=0, RATE > 0) must have II=0")
    dosing("ss2_without_amt", [(1, "AMT", "0"), (1, "RATE", "5"), (1, "SS", "2"), (1, "II", "12")],
           "row 1, column AMT: dose record (EVID 1) needs AMT > 0, got 0")


def censoring_cases(c: Corpus) -> None:
    def flagged(flag: str, row: int, dv, lloq=None, flag_value="1"):
        rows, header = add_column(edit(BASE, row, "DV", dv), flag,
                                  [flag_value if k == row - 1 else "0" for k in range(len(BASE))])
        if lloq is not None:
            rows, header = add_column(rows, "LLOQ", [lloq if k == row - 1 else "." for k in range(len(BASE))],
                                      header)
        return text(rows, header)

    c.data("blq_dv_zero_no_lloq_column", flagged("BLQ", 7, "0"),
           "row 7, column LLOQ: BLQ record needs an LLOQ value: give it in an LLOQ column, or as [data] lloq")
    c.data("blq_dv_missing_lloq_missing", flagged("BLQ", 7, ".", "."), "row 7, column LLOQ: BLQ record needs an")
    c.data("blq_lloq_zero", flagged("BLQ", 7, ".", "0"),
           "row 7, column LLOQ: the LLOQ of a censored row must be > 0, got 0")
    c.data("blq_not_0_or_1", flagged("BLQ", 7, ".", "0.5", "2"), "row 7, column BLQ: BLQ must be 0 or 1, got 2")
    c.data("cens_invalid", flagged("CENS", 7, "0.5", None, "2"), "row 7, column CENS: CENS must be -1, 0 or 1")
    c.data("cens_dv_zero_no_lloq", flagged("CENS", 7, "0"),
           "row 7, column DV: CENS=1 without an LLOQ takes DV as the LLOQ, which must be > 0, got 0")
    c.data("cens_no_dv_no_lloq", flagged("CENS", 7, "."), "row 7, column LLOQ: BLQ record needs an LLOQ value")
    c.data("right_censored_without_dv", flagged("CENS", 7, ".", None, "-1"),
           "row 7, column DV: right-censored record (CENS=-1) needs DV as the limit")
    c.data("cens_on_dose", flagged("CENS", 1, ".", None, "1"),
           "row 1, column CENS: BLQ/CENS flag on a non-observation record")
    rows, header = add_column(BASE, "BLQ", ["1" if k == 6 else "0" for k in range(21)])
    rows, header = add_column(rows, "CENS", "0", header)
    rows, header = add_column(rows, "LLOQ", "0.5", header)
    c.data("blq_cens_contradict", text(rows, header), "row 7, column CENS: CENS=0 contradicts BLQ=1")
    rows, header = add_column(edit(BASE, 7, "DV", "0"), "BLQ", ["1" if k == 6 else "0" for k in range(21)])
    rows, header = add_column(rows, "CENS", ["1" if k == 6 else "0" for k in range(21)], header)
    c.data("blq_and_cens_dv_zero", text(rows, header),
           "row 7, column DV: CENS=1 without an LLOQ takes DV as the LLOQ, which must be > 0, got 0")
    c.data("lloq_negative", text(*add_column(BASE, "LLOQ", "-0.1")), "row 1, column LLOQ: LLOQ must be >= 0")
    c.data("dv_below_lloq_not_flagged", text(*add_column(BASE, "LLOQ", "1")),
           "row 7, column DV: DV 0.8 is below LLOQ 1 but the row is not flagged BLQ/CENS")
    c.data("lloq_option_negative", flagged("BLQ", 7, "0"), "lloq ([data] lloq, --lloq) must be a finite number > 0",
           "--lloq", "-1")
    c.data("lloq_option_nan", flagged("BLQ", 7, "0"), "lloq ([data] lloq, --lloq) must be a finite number > 0",
           "--lloq", "nan")


def magnitude_cases(c: Corpus) -> None:
    for name, row, col, value, expect in [
        ("dv_inf", 2, "DV", "inf", "value is infinite"), ("time_minus_inf", 2, "TIME", "-inf", "value is infinite"),
        ("amt_infinity", 1, "AMT", "Infinity", "value is infinite"),
        ("dv_1e999", 2, "DV", "1e999", "value is infinite"),
        ("dv_1e308", 2, "DV", "1e308", "value 1e+308 is too large (|value| > 1e100)"),
        ("amt_1e308", 1, "AMT", "1e308", "value 1e+308 is too large"),
        ("time_1e308", 3, "TIME", "1e308", "value 1e+308 is too large"),
        ("wt_1e308", 2, "WT", "1e308", "value 1e+308 is too large"),
        ("wt_minus_1e200", 2, "WT", "-1e200", "value -1e+200 is too large"),
        ("wt_inf", 2, "WT", "inf", "value is infinite"),
    ]:
        c.data(name, text(edit(BASE, row, col, value)), f"row {row}, column {col}: {expect}")
    rows, header = add_column(BASE, "RATE", "0")
    c.data("rate_1e308", text(edit(rows, 1, "RATE", "1e308", header), header), "row 1, column RATE: value 1e+308")
    rows, header = add_column(BASE, "II", "0")
    c.data("ii_1e101", text(edit(rows, 1, "II", "1e101", header), header), "row 1, column II: value 1e+101")


def nca_cases(c: Corpus) -> None:
    base = "{dir}/data/valid_base.csv"
    c.data("dv_1e308", text(edit(BASE, 2, "DV", "1e308")), "row 2, column DV: value 1e+308 is too large",
           command="nca")
    c.data("blq_without_lloq", text(*add_column(edit(BASE, 7, "DV", "0"), "BLQ",
                                                ["1" if k == 6 else "0" for k in range(21)])),
           "row 7, column LLOQ: BLQ record needs an LLOQ value", command="nca")
    c.data("row_too_short", text(BASE[:2] + [BASE[2].rsplit(",", 1)[0]] + BASE[3:]),
           "row 3 (line 4): 8 fields", command="nca")
    c.data("two_observations_same_time", text(BASE[:3] + [BASE[2]] + BASE[3:]),
           "row 4, column TIME: ID 1 has two observations at TIME 1", command="nca")
    for name, options, expect in [
        ("min_points_2", ("--min-points", "2"), "min_points must be a whole number >= 3"),
        ("adj_r2_tol_negative", ("--adj-r2-tol", "-1"), "adj_r2_tol must be a number >= 0"),
        ("adj_r2_tol_nan", ("--adj-r2-tol", "nan"), "adj_r2_tol must be a number >= 0"),
        ("dose_time_nan", ("--dose-time", "nan"), "dose_time must be a finite number"),
        ("dose_time_not_a_number", ("--dose-time", "abc"), "argument --dose-time: invalid float value: 'abc'"),
        ("blq_rule_unknown", ("--blq", "half"), "argument --blq: invalid choice: 'half'"),
        ("route_unknown", ("--route", "oral"), "argument --route: invalid choice: 'oral'"),
        ("lloq_zero", ("--lloq", "0"), "lloq ([data] lloq, --lloq) must be a finite number > 0"),
    ]:
        c.case(f"nca/{name}", ["nca", base, *options], expect)
    c.case("nca/missing_file", ["nca", "{dir}/data/does_not_exist.csv"], "does_not_exist.csv: no such file")
    c.case("nca/directory", ["nca", "{dir}/data"], "is a directory, not a data file")


def spec_cases(c: Corpus) -> None:
    good = spec()
    f = c.fit
    f("bad_toml_syntax", "[model\nstructure = 1\n", "not valid TOML")
    c.fit("not_utf8", good.replace('"1cmt_iv"', '"1cmt_iv" # \u00e4').encode("latin-1"), "not valid TOML (not UTF-8")
    f("empty_spec", "", "[model] is required, with structure = one of")
    f("unknown_top_level_key", "priors = 1\n" + good, "spec: unknown key 'priors'")
    f("unknown_model_key", spec(model_extra="integrator = \"lsoda\""), "[model]: unknown key 'integrator'")
    f("structure_and_equations", spec(model_extra="solver = { method = \"kvaerno5\" }"),
      "[model] solver: give either structure = a built-in model or the model's equations")
    f("unknown_structure", spec(structure="1cmt_ivv"), "[model] structure: '1cmt_ivv' is not one of")
    f("structure_not_a_string", good.replace('structure = "1cmt_iv"', "structure = 1"),
      "[model] structure: 1 is not one of")
    f("missing_parameter", good.replace("[parameters.V]\nguess = 20.0", ""),
      "[parameters]: structure 1cmt_iv needs CL, V; missing V")
    f("unknown_parameter", spec(parameters_extra="[parameters.Q]\nguess = 1.0\n"), "[parameters]: unknown key 'Q'")
    f("parameters_not_a_table", "parameters = 1\n" + good.replace("[parameters.CL]\nguess = 5.0", "").replace(
        "[parameters.V]\nguess = 20.0", ""),
      "[parameters]: expected a table, got 1")
    f("lag_on_iv", spec(parameters_extra="[parameters.TLAG]\nguess = 0.5\n"),
      "[parameters] TLAG: the absorption lag time of doses into the depot needs a structure with an absorption")
    f("no_prior", spec(cl="iiv = false"), "[parameters.CL]: needs 'typical' (a prior")
    f("typical_and_guess", spec(cl='guess = 5.0\ntypical = { dist = "LogNormal", mu = 1, sigma = 1 }'),
      "[parameters.CL]: give either 'typical' (a prior) or 'guess'")
    for name, value, expect in [("guess_negative", "-5", "guess: must be > 0"),
                                ("guess_zero", "0", "guess: must be > 0 (typical values are positive), got 0"),
                                ("guess_text", '"5"', "guess: expected a finite number, got '5'"),
                                ("guess_huge", HUGE, "guess: expected a finite number, got a 401-digit integer"),
                                ("guess_nan", "nan", "guess: expected a finite number, got nan"),
                                ("guess_inf", "inf", "guess: expected a finite number, got inf")]:
        f(name, spec(cl=f"guess = {value}"), f"[parameters.CL] {expect}")

    def typical(name, prior, expect, key="typical"):
        f(name, spec(cl=f"{key} = {prior}" + ("\nguess = 5.0" if key != "typical" else "")), expect)

    typical("dist_unknown", '{ dist = "LogNormale", mu = 1, sigma = 1 }', "unknown distribution 'LogNormale'")
    typical("dist_lowercase", '{ dist = "lognormal", mu = 1, sigma = 1 }', "unknown distribution 'lognormal'")
    typical("dist_missing", "{ mu = 1, sigma = 1 }", "a prior is a table like")
    typical("prior_not_a_table", "0.5", "[parameters.CL] typical: a prior is a table like")
    typical("prior_missing_parameter", '{ dist = "LogNormal", mu = 1 }',
            "LogNormal takes parameters mu, sigma; missing")
    typical("prior_unknown_parameter", '{ dist = "LogNormal", mu = 1, sigma = 1, tau = 2 }', "unknown tau")
    typical("sigma_negative", '{ dist = "LogNormal", mu = 1, sigma = -1 }',
            "parameter sigma of LogNormal must be > 0, got -1")
    typical("sigma_zero", '{ dist = "LogNormal", mu = 1, sigma = 0 }', "must be > 0, got 0")
    for name, value, got in [("inf", "inf", "inf"), ("nan", "nan", "nan"), ("huge", HUGE, "a 401-digit integer")]:
        typical(f"sigma_{name}", f'{{ dist = "LogNormal", mu = 1, sigma = {value} }}',
                f"[parameters.CL] typical sigma: parameter sigma of LogNormal must be a finite number, got {got}")
    typical("mu_text", '{ dist = "LogNormal", mu = "one", sigma = 1 }', "parameter mu must be a number, got 'one'")
    typical("mu_negative_huge", f'{{ dist = "LogNormal", mu = -{HUGE}, sigma = 1 }}',
            "typical mu: parameter mu of LogNormal must be a finite number, got a 401-digit integer")
    typical("typical_not_positive", '{ dist = "Normal", mu = 1, sigma = 1 }',
            "the typical value of CL must be positive; use a positive distribution")
    typical("uniform_bounds_reversed", '{ dist = "Uniform", lower = 10, upper = 1 }',
            "lower (10) must be below upper (1)")
    typical("prior_file_missing", '{ file = "no_such_prior.json" }', "no_such_prior.json does not exist")
    typical("iiv_not_positive", '{ dist = "Normal", mu = 0, sigma = 1 }',
            "[parameters.CL] iiv: omega is an SD and needs a positive prior", key="iiv")
    typical("iiv_sigma_negative", '{ dist = "HalfNormal", sigma = -0.5 }', "must be > 0, got -0.5", key="iiv")
    typical("iov_not_positive", '{ dist = "Normal", mu = 0, sigma = 1 }', "the IOV SD needs a positive prior",
            key="iov")


def spec_data_cases(c: Corpus) -> None:
    f = c.fit
    f("data_unknown_key", spec(data_extra='file = "x.csv"'), "[data]: unknown key 'file'")
    f("data_path_not_a_string", spec().replace('path = "../data/valid_base.csv"', "path = 3"),
      "[data] path: expected a string, got 3")
    f("data_path_missing", spec().replace('[data]\npath = "../data/valid_base.csv"\n', ""),
      "no data: give data=... or a [data] path in the spec")
    f("data_file_missing", spec(data="does_not_exist.csv"), "does_not_exist.csv: no such file")
    f("data_path_is_directory", spec().replace('"../data/valid_base.csv"', '"../data"'),
      "is a directory, not a data file")
    f("data_aliases_not_a_table", spec(data_extra='aliases = "conc=DV"'), "[data] aliases: expected a table")
    f("data_alias_names_no_column", spec(data_extra="aliases = { conc = \"DV\" }"), "alias 'CONC' names no column")
    f("data_lloq_negative", spec(data_extra="lloq = -0.1"), "[data] lloq: the limit of quantification must be > 0")
    f("data_lloq_text", spec(data_extra='lloq = "0.1"'), "[data] lloq: expected a finite number, got '0.1'")
    f("data_lloq_inf", spec(data_extra="lloq = inf"), "[data] lloq: expected a finite number, got inf")
    f("data_malformed", spec(data="not_a_number_DV.csv"), "row 2, column DV: '<LOQ' is not a number")
    f("data_blq_without_lloq", spec(data="blq_dv_zero_no_lloq_column.csv"), "BLQ record needs an LLOQ value")
    f("name_not_a_string", "name = 3\n" + spec(), "name and description must be strings")


def spec_covariate_cases(c: Corpus) -> None:
    f = c.fit
    f("covariate_unknown_parameter", spec(extra=covariate(parameter="KA")),
      "[[covariates]] #1 parameter: 'KA' is not a parameter of 1cmt_iv")
    f("covariate_unknown_column", spec(extra=covariate(column="HEIGHT")),
      "column HEIGHT: the power effect of HEIGHT on CL uses covariate HEIGHT, but the dataset")
    f("covariate_unknown_effect", spec(extra=covariate(effect="log")), "effect: 'log' is not one of")
    f("covariate_without_reference", spec(extra=covariate(reference=None)), "a power effect needs a reference value")
    f("covariate_reference_zero", spec(extra=covariate(reference="0")), "a power effect needs a reference > 0")
    f("covariate_reference_huge", spec(extra=covariate(reference=HUGE)),
      "[[covariates]] #1 reference: expected a finite number, got a 401-digit integer")
    f("covariate_missing_column_key", spec(extra='[[covariates]]\nparameter = "CL"\neffect = "power"\n'),
      "[[covariates]] #1: 'column' is required")
    f("covariate_twice", spec(extra=covariate() + "\n" + covariate()), "a second effect of WT on CL")
    f("covariates_not_a_list", spec(extra='[covariates]\nparameter = "CL"\n'), "covariates: use [[covariates]] tables")
    f("covariate_column_with_slash", spec(extra=covariate(column="WT/KG")),
      "column 'WT/KG' has a '/', which cannot be part of a variable name in fit.nc")
    rows, header = add_column(BASE, "CONC/ML", "1")
    f("data_column_with_slash", spec(data="column_with_slash.csv"),
      "column CONC/ML: a '/' cannot be part of a column name in a fit",
      data={"column_with_slash.csv": text(rows, header)})
    f("categorical_reference_absent", spec(extra=covariate("SEX", "categorical", '"X"')),
      "reference level 'X' does not occur in column SEX")
    f("categorical_single_level", spec(data="one_level.csv", extra=covariate("SEX", "categorical", None)),
      "column SEX: every subject has level 'M'", data={"one_level.csv": text([r.replace(",F", ",M") for r in BASE])})
    f("categorical_reference_huge", spec(extra=covariate("SEX", "categorical", HUGE)),
      "reference: expected a finite number, got a 401-digit integer")
    f("numeric_effect_on_text", spec(extra=covariate("SEX")), "value 'M' is not a number; a power effect needs a")
    f("power_effect_on_zero", spec(data="wt_zero.csv", extra=covariate()),
      "row 8, column WT (ID 2): value 0 is not > 0; a power effect",
      data={"wt_zero.csv": text(edit(BASE, 8, "WT", "0"))})
    f("covariate_missing_first_record", spec(data="wt_missing.csv", extra=covariate()),
      "row 8, column WT: missing value for ID 2 with no earlier value",
      data={"wt_missing.csv": text(edit(BASE, 8, "WT", "."))})
    f("coefficient_bad_prior", spec(extra=covariate(more='coefficient = { dist = "Normall", mu = 0, sigma = 1 }\n')),
      "[[covariates]] #1 coefficient: unknown distribution 'Normall'")
    f("coefficient_nan", spec(extra=covariate(more="coefficient = nan\n")),
      "[[covariates]] #1 coefficient: expected a finite number, got nan")


def spec_model_cases(c: Corpus) -> None:
    f = c.fit
    for name, extra, expect in [
        ("error_blq_unknown", 'blq = "M5"', "[error] blq: 'M5' is not one of"),
        ("error_distribution_unknown", 'distribution = "cauchy"', "[error] distribution: 'cauchy' is not one of"),
        ("error_sigma_add_for_proportional", 'sigma_add = { dist = "HalfNormal", sigma = 1 }',
         "[error] sigma_add: not a parameter of the proportional error model"),
        ("error_nu_without_student_t", 'nu = { dist = "Gamma", alpha = 2, beta = 0.1 }',
         "[error] nu: degrees of freedom are only used with distribution"),
        ("error_sigma_not_positive", 'sigma_prop = { dist = "Normal", mu = 0, sigma = 1 }',
         "[error] sigma_prop: an SD needs a positive prior"),
        ("error_unknown_key", "sigma = 0.1", "[error]: unknown key 'sigma'"),
        ("error_by_with_slash", 'by = "ASSAY/KIT"', "[error] by: column 'ASSAY/KIT' has a '/'"),
        ("error_by_column_absent", 'by = "ASSAY"', "column ASSAY: [error] by = \"ASSAY\" gives each assay"),
    ]:
        f(name, spec(error_extra=extra), expect)
    f("error_model_unknown", spec().replace('model = "proportional"', 'model = "prop"'),
      "[error] model: 'prop' is not one of")
    f("student_t_lognormal", spec(error_extra='distribution = "student_t"').replace(
        'model = "proportional"', 'model = "lognormal"'), "student_t is available for additive, proportional")
    for name, extra, expect in [
        ("sampler_unknown_key", "n_chains = 4", "[sampler]: unknown key 'n_chains'"),
        ("sampler_chains_zero", "chains = 0", "[sampler] chains: expected a whole number >= 1, got 0"),
        ("sampler_draws_fraction", "draws = 1.5", "[sampler] draws: expected a whole number >= 1, got 1.5"),
        ("sampler_name_unknown", 'name = "stan"', "[sampler] name: 'stan' is not one of nutpie, pymc"),
        ("sampler_target_accept", "target_accept = 1.5", "[sampler] target_accept: must be in [0.5, 1), got 1.5"),
        ("sampler_target_accept_nan", "target_accept = nan", "[sampler] target_accept: expected a finite number"),
        ("sampler_low_rank_pymc", 'name = "pymc"\nadaptation = "low_rank"', "needs name = \"nutpie\""),
        ("sampler_adaptation_unknown", 'adaptation = "dense"', "[sampler] adaptation: 'dense' is not one of"),
    ]:
        f(name, spec().replace("tune = 5\n", "").replace("chains = 1\n", "").replace("draws = 5\n", "") + extra + "\n",
          expect)
    f("iiv_correlated_unknown", spec(extra='[iiv]\ncorrelated = ["CL", "KA"]\n'),
      "[iiv] correlated: 'KA' is not a parameter of the model")
    f("iiv_correlated_single", spec(extra='[iiv]\ncorrelated = ["CL"]\n'), "[iiv] correlated: needs at least two")
    f("iiv_lkj_negative", spec(extra='[iiv]\ncorrelated = ["CL", "V"]\nlkj_eta = -1\n'),
      "[iiv] lkj_eta: the LKJ shape must be > 0, got -1")
    f("iiv_correlated_without_iiv", spec(cl="guess = 5.0\niiv = false", extra='[iiv]\ncorrelated = ["CL", "V"]\n'),
      "[iiv] correlated: CL has no IIV (iiv = false)")
    f("pd_unknown", spec(model_extra='pd = "hill"'), "[model] pd: 'hill' is not one of")
    f("pd_observations_without_pd", spec(model_extra='pd_observations = { column = "DVID", value = 2 }'),
      "[model] pd_observations: only used with a PD model")
    f("treatments_on_pk", spec(extra='[[treatments]]\ncolumn = "TOCI"\n'),
      "[[treatments]]: treatment multipliers act on the expansion rate of a CAR-T structure")
    f("tumor_on_pk", spec(model_extra='tumor = { column = "TB", reference = 20 }'),
      "[model] tumor: only used by the mechanistic CAR-T structure")
    f("d1_without_rate_records", spec(parameters_extra="[parameters.D1]\nguess = 1.0\n"),
      "[parameters.D1]: no dose record has RATE = -2")
    rows, header = add_column(BASE, "RATE", ["-1" if k == 0 else "0" for k in range(21)])
    f("rate_minus_1_without_r1", spec(data="rate_minus_1.csv"),
      "row 1, column RATE: RATE = -1 (modeled rate) needs parameter R1", data={"rate_minus_1.csv": text(rows, header)})
    f("cmt_not_in_structure", spec(data="cmt_3.csv"),
      "row 2, column CMT: observation in CMT 3, but structure 1cmt_iv observes the central compartment, CMT 1",
      data={"cmt_3.csv": text(edit(BASE, 2, "CMT", "3"))})
    f("observation_in_depot", spec(data="valid_base.csv", structure="1cmt_oral",
                                   parameters_extra="[parameters.KA]\nguess = 1.0\n"),
      "row 2, column CMT: observation in CMT 1, but structure 1cmt_oral observes the central compartment, CMT 2")
    f("observation_before_dose", spec(data="predose.csv"), "row 1: observation at TIME 0 has no dose before it",
      data={"predose.csv": text(["1,0,.,0.5,0,0,1,70,M", *BASE[1:]])})
    f("lognormal_dv_zero", spec(data="dv_zero.csv").replace('model = "proportional"', 'model = "lognormal"'),
      "row 4, column DV: 0 is not > 0, which lognormal error needs",
      data={"dv_zero.csv": text(edit(BASE, 4, "DV", "0"))})


def option_cases(c: Corpus) -> None:
    good = c.file("specs/valid.toml", spec())
    base = "{dir}/data/valid_base.csv"
    out = ("--out", "{out}")
    for name, options, expect in [
        ("draws_zero", ("--draws", "0"), "--draws must be >= 1, got 0"),
        ("tune_zero", ("--tune", "0"), "--tune must be >= 1, got 0"),
        ("chains_negative", ("--chains", "-1"), "--chains must be >= 1, got -1"),
        ("draws_not_a_number", ("--draws", "many"), "argument --draws: invalid int value: 'many'"),
        ("chains_fraction", ("--chains", "1.5"), "argument --chains: invalid int value: '1.5'"),
        ("sampler_unknown", ("--sampler", "stan"), "argument --sampler: invalid choice: 'stan'"),
        ("target_accept_too_high", ("--target-accept", "2"), "[sampler] target_accept: must be in [0.5, 1), got 2"),
        ("data_override_missing", ("--data", "{dir}/data/does_not_exist.csv"), "does_not_exist.csv: no such file"),
        ("data_override_directory", ("--data", "{dir}/data"), "is a directory, not a data file"),
        ("data_override_malformed", ("--data", "{dir}/data/row_too_long.csv"), "row 5 (line 6): 10 fields"),
    ]:
        c.case(f"options/fit_{name}", ["fit", good, *out, *options], expect)
    c.case("options/fit_spec_missing", ["fit", "{dir}/specs/does_not_exist.toml", *out],
           "does_not_exist.toml: no such spec file")
    c.case("options/fit_spec_is_directory", ["fit", "{dir}/specs", *out], "specs: is a directory, not a spec file")
    c.case("options/fit_without_out", ["fit", good], "the following arguments are required: --out")
    c.case("options/data_missing_file", ["data", "{dir}/data/does_not_exist.csv"], "does_not_exist.csv: no such file")
    c.case("options/data_directory", ["data", "{dir}/data"], "is a directory, not a data file")
    c.case("options/data_lloq_not_a_number", ["data", base, "--lloq", "low"], "argument --lloq: invalid float value")
    c.case("options/unknown_command", ["fitt", good], "invalid choice: 'fitt'")
    c.case("options/vpc_bins_garbage", ["vpc", "{dir}/no_run", "--out", "{out}", "--bins", "garbage"],
           "--bins 'garbage': expected auto, a number, or comma-separated edges")
    c.case("options/vpc_n_rep_zero", ["vpc", "{dir}/no_run", "--out", "{out}", "--n-rep", "0"],
           "--n-rep must be >= 1, got 0")
    c.case("options/report_n_sim_zero", ["report", "{dir}/no_run", "--n-sim", "0"], "--n-sim must be >= 1, got 0")
    c.case("options/summary_not_a_run", ["summary", "{dir}/data"], "not a run directory (no summary.csv)")
    c.case("options/compare_not_a_run", ["compare", "{dir}/data"], "not a run directory (no fit.nc)")


def build() -> Corpus:
    c = Corpus()
    # byte-exact files (CRLF, BOM, Latin-1, UTF-16, NUL): git must not normalise them
    c.file(".gitattributes", "* -text\n")
    for part in (valid_cases, file_cases, field_cases, value_cases, censoring_cases, magnitude_cases, nca_cases,
                 spec_cases, spec_data_cases, spec_covariate_cases, spec_model_cases, option_cases):
        part(c)
    return c


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    out = Path(argv[0]) if argv else Path(__file__).resolve().parent / "malformed"
    corpus = build()
    corpus.write(out)
    n_valid = sum(1 for case in corpus.cases if case["exit"] == 0)
    print(f"wrote {out}: {len(corpus.cases)} cases ({len(corpus.cases) - n_valid} malformed, {n_valid} valid), "
          f"{len(corpus.files)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
