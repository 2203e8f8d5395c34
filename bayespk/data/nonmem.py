"""Read and validate NONMEM-style datasets.

A dataset is a CSV with one record per row. Column names are case-insensitive;
``.``, an empty cell and ``NA`` mean missing. The columns bayespk understands:

========  ==================================================================
ID        subject identifier (whole number or text, kept as written); a
          subject's rows must be contiguous
TIME      time of the record; must not decrease within a subject
AMT       dose amount (dose records only)
DV        observed value (observation records only)
EVID      0 observation, 1 dose, 2 other event, 3 reset (the system is
          emptied; additional doses of earlier records are cancelled), 4 reset
          and dose. Derived from AMT when absent (AMT > 0 -> 1, else 0).
MDV       1 = DV missing/ignored. Derived from EVID when absent.
CMT       compartment of the dose / observation; the structure's default
          when absent or missing
RATE      0 bolus, > 0 zero-order infusion rate, -1 modeled rate (parameter
          R1), -2 modeled duration (parameter D1)
II, ADDL  ADDL additional doses every II after this one
SS        steady state: 1 = the dose is the last of an infinite train every
          II, after a reset; 2 = the same, added to what is already there;
          SS=1 with AMT=0 and RATE > 0 is a constant infusion at steady state
BLQ       1 = below the limit of quantification (needs LLOQ)
CENS      nlmixr2 style: 1 left-censored (DV is the LLOQ unless an LLOQ
          column says otherwise), -1 right-censored (DV is the limit)
LLOQ      lower limit of quantification
C         rows whose C column is ``C`` are commented out (NONMEM IGNORE=C);
          they are counted in the summary, never dropped silently
========  ==================================================================

Every other column is a covariate (numeric when all its values are numbers,
text otherwise). Validation happens here, before any model is built; a
violation raises :class:`~bayespk.errors.DataError` naming the row (1-based,
counting data rows after the header), the column and the rule.

Exact reading
-------------
Separators
    Taken from the header line: comma when it has a comma, else tab, else
    semicolon, else runs of whitespace (NONMEM ``.dat``/``.txt`` files, any
    extension). Runs of spaces and tabs are taken instead when they split the
    header and the first 200 data lines into one number of fields (> 1) and
    the header's separator does not, or (tab, semicolon) into more fields:
    tabs and spaces mixed. A separator other than a plain comma is said in the
    summary's notes, with how it was decided.
Comment rows (NONMEM ``IGNORE=#`` / ``IGNORE=@``)
    A header line starting with ``#`` or ``@`` (``#ID,TIME,AMT,DV``) is read
    without that character. A later line whose first non-blank character is
    ``#`` or ``@`` is a comment row: skipped (its fields are not read), but
    numbered like any row, counted in the summary (excluded: "commented out
    (row starts with # or @)") and listed in its ``excluded_rows`` (ROW, no
    ID or TIME), as rows commented out by a ``C`` column are.
Row filters (``[data] ignore`` / ``[data] accept``; NONMEM ``IGNORE=(...)`` / ``ACCEPT=(...)``)
    Each condition is ``COLUMN.OP.VALUE`` with OP one of ``EQ NE GT GE LT LE``
    (``EQN``/``NEN`` too) or ``== != > >= < <=`` (``=`` is ``==``), e.g.
    ``"DV.EQ.0"``, ``"TIME > 24"``. COLUMN is a column of the file as written
    (case-insensitive) or its ``aliases`` name; VALUE is a number, and the
    comparison is numeric (``1`` equals ``1.0``). ``ignore`` drops the rows
    where any condition holds; ``accept`` keeps only the rows where any
    condition holds; not both at once (NONMEM forbids it too). As in NONMEM,
    conditions apply to every data row, dose and other-event rows included
    (``TIME.GT.24`` also drops doses after 24; the note says how many dose
    records went). Unlike NONMEM, which reads ``.`` as 0, a missing value
    matches no condition, so ``DV.EQ.0`` keeps dose rows whose DV is ``.``.
    Filters apply after comment rows and the ``C`` column, before validation
    (dropped rows are not validated). The rows dropped are counted in the
    summary's ``excluded`` per key, and a note gives each condition's
    matches. A condition that does not parse, names no column, or meets a
    text value in its column is refused, naming the key and the condition.
    Double quotes are honoured (a quoted field may hold the separator). Every
    data row must have one field per header name, else the row and line are
    named; the one exception is an empty field after the last column on every
    data row (a trailing separator), which is dropped and said in the summary.
IDs
    Kept exactly as written: 64-bit integers when every ID is a plain whole
    number (``7``, ``-3``, ``10010020030040051``; never through float), else
    every ID is kept as its text (``S-01``, ``007``). Two spellings of one
    number (``7`` and ``007``, ``1`` and ``1.0``) are refused rather than merged
    or split.
Numbers
    Values must be finite with magnitude at most 1e100 (in NONMEM columns and
    numeric covariates alike).
BLQ and LLOQ
    A BLQ=1 row takes its limit from the LLOQ column, else from ``lloq``
    (a spec's ``[data] lloq``); DV is never read as the limit of a BLQ row. A
    CENS=1 row without either takes DV as the limit (nlmixr2), also when a
    BLQ column flags it too (as in ``Dataset.table``, which holds both). The
    limit of a censored row must be > 0.
"""

from __future__ import annotations

import csv
import re
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from pathlib import Path

import numpy as np
import pandas as pd

from bayespk.errors import DataError

__all__ = ["Dataset", "DataSummary", "read_nonmem", "NONMEM_COLUMNS", "id_label", "plot_text"]

NONMEM_COLUMNS = (
    "ID", "TIME", "AMT", "DV", "EVID", "MDV", "CMT", "RATE", "II", "ADDL", "SS",
    "BLQ", "CENS", "LLOQ",
)  # fmt: skip
MISSING = {".", "", "NA", "NaN", "nan"}
MAX_LISTED = 10
MAX_ABS = 1e100  # larger magnitudes are refused: they are typos or unit errors, and overflow downstream
SEPARATORS = {",": "comma", "\t": "tab", ";": "semicolon", None: "whitespace"}
_INT_ID = re.compile(r"0|-?[1-9][0-9]*")
_NUMBER = re.compile(r"[+-]?([0-9]+\.?[0-9]*|\.[0-9]+)([eE][+-]?[0-9]+)?")
_DECIMAL_COMMA = re.compile(r"[+-]?[0-9]+,[0-9]+")
_WS_FIELD = re.compile(r'"([^"]*)"|(\S+)')


@dataclass
class DataSummary:
    """Counts of what the dataset holds and what was excluded, by reason."""

    n_rows: int
    n_subjects: int
    n_observations: int
    n_dose_records: int
    n_doses: int  # including ADDL repeats
    n_blq: int
    n_other_events: int
    excluded: dict[str, int] = field(default_factory=dict)
    covariates: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # how the file was read, where it was not plain
    # rows dropped while reading (comment rows, C column, [data] ignore / accept): ROW, ID, TIME as in the file
    # (empty for comment rows, whose fields are not read), and why; the first MAX_DROPPED_LISTED
    excluded_rows: list[dict] = field(default_factory=list)

    def __str__(self) -> str:
        lines = [
            f"{self.n_rows} rows, {self.n_subjects} subjects",
            f"{self.n_observations} observations used ({self.n_blq} below LLOQ, censored)",
            f"{self.n_dose_records} dose records ({self.n_doses} doses with ADDL repeats)",
        ]
        if self.n_other_events:
            lines.append(f"{self.n_other_events} other-event records (EVID 2)")
        for reason, n in self.excluded.items():
            lines.append(f"{n} rows excluded: {reason}")
        lines.append("covariates: " + (", ".join(self.covariates) or "none"))
        lines += [f"note: {n}" for n in self.notes]
        return "\n".join(lines)

    def to_dict(self) -> dict:
        return {
            "n_rows": self.n_rows,
            "n_subjects": self.n_subjects,
            "n_observations": self.n_observations,
            "n_dose_records": self.n_dose_records,
            "n_doses": self.n_doses,
            "n_blq": self.n_blq,
            "n_other_events": self.n_other_events,
            "excluded": dict(self.excluded),
            "covariates": list(self.covariates),
            "notes": list(self.notes),
            "excluded_rows": [dict(r) for r in self.excluded_rows],
        }


@dataclass
class Dataset:
    """A validated NONMEM-style dataset.

    Attributes
    ----------
    table : pandas.DataFrame
        All records, with canonical upper-case columns (every NONMEM column
        filled in: EVID, MDV, CMT, RATE, II, ADDL, SS, BLQ, LLOQ, CENS), the
        covariates, and ``ROW`` (1-based row number in the source).
        Commented-out rows are not in the table but counted in ``summary``.
    covariates : list of str
        Covariate column names (upper case).
    summary : DataSummary
    source : str
        Where the data came from (a path or ``"<DataFrame>"``).
    """

    table: pd.DataFrame
    covariates: list[str]
    summary: DataSummary
    source: str = "<DataFrame>"

    @property
    def observations(self) -> pd.DataFrame:
        """Observation records that enter the likelihood (EVID 0, MDV 0)."""
        t = self.table
        return t[(t.EVID == 0) & (t.MDV == 0)]

    @property
    def doses(self) -> pd.DataFrame:
        """Dose records (EVID 1)."""
        return self.table[self.table.EVID.isin([1, 4])]

    @property
    def subject_ids(self) -> np.ndarray:
        """Subject IDs in order of first appearance."""
        return pd.unique(self.table.ID)

    def covariate_values(self, column: str, needed_for: str) -> pd.Series:
        """A covariate's value on every record (aligned with ``table``).

        Values may change between a subject's records (time-varying
        covariates); a missing value takes the subject's last value before it
        (last observation carried forward). Refuses a column that is absent or
        missing on a subject's first record, naming the row.
        """
        col = column.upper()
        if col not in self.table.columns:
            raise DataError(
                f"column {col}: {needed_for} uses covariate {col}, but the dataset "
                f"({self.source}) has no such column; columns are: "
                + ", ".join(self.table.columns.drop("ROW"))
            )
        t = self.table
        filled = t.groupby("ID", sort=False)[col].ffill()
        missing = filled.isna()
        if missing.any():
            k = int(np.argmax(missing.to_numpy()))
            raise DataError(
                f"row {int(t.ROW.iloc[k])}, column {col}: missing value for ID {id_label(t.ID.iloc[k])} with no "
                "earlier value to carry "
                f"forward; {needed_for} needs {col} from each subject's first record on "
                f"({int(missing.sum())} rows without a value)"
            )
        return filled

    def subject_covariate(self, column: str, needed_for: str) -> pd.Series:
        """One value per subject, indexed by ID: the value on its first record (the baseline)."""
        values = self.covariate_values(column, needed_for)
        return values.groupby(self.table.ID, sort=False).first()

    def is_time_varying(self, column: str) -> bool:
        """Whether a column's value changes within any subject (after carrying values forward)."""
        values = self.table.groupby("ID", sort=False)[column.upper()].ffill()
        first = values.groupby(self.table.ID, sort=False).transform("first")
        return bool((values != first).any())

    def to_csv(self, path: str | Path) -> None:
        """Write the records back as a NONMEM-style CSV (``.`` for missing)."""
        self.table.drop(columns="ROW").to_csv(path, index=False, na_rep=".")


def id_label(x) -> str:
    """A subject ID (or a covariate level) as text: ``7`` for 7, 7.0 or ``np.int64(7)``; text unchanged.

    Never exponent notation: a 17-digit ID is printed with all its digits.
    """
    if isinstance(x, (float, np.floating)) and float(x).is_integer() and abs(x) < 2**63:
        return str(int(x))
    return str(x)


def plot_text(x) -> str:
    """``id_label(x)`` with ``$`` escaped, for matplotlib titles, tick labels and legends.

    A level such as ``$x^$`` would otherwise be parsed as math text, and an
    invalid one makes drawing the figure fail.
    """
    return id_label(x).replace("$", r"\$")


class _Problems:
    """Collects rule violations so one error reports all of them (the first ten)."""

    def __init__(self, source: str):
        self.source = source
        self.items: list[str] = []

    def add(self, rows, column: str | None, rule: str) -> None:
        for r in np.atleast_1d(rows)[: MAX_LISTED + 1]:
            where = f"row {int(r)}" + (f", column {column}" if column else "")
            self.items.append(f"{where}: {rule}")

    def add_mask(self, table: pd.DataFrame, mask, column: str | None, rule) -> None:
        """Add one problem per row where ``mask`` is True; ``rule`` may be a callable(row)."""
        bad = table[np.asarray(mask, dtype=bool)]
        for _, r in bad.head(MAX_LISTED + 1).iterrows():
            text = rule(r) if callable(rule) else rule
            self.add(r.ROW, column, text)

    def raise_if_any(self) -> None:
        if not self.items:
            return
        shown = self.items[:MAX_LISTED]
        more = len(self.items) - len(shown)
        msg = f"{self.source}: " + shown[0]
        if len(shown) > 1:
            msg += "\n" + "\n".join("  " + s for s in shown[1:])
        if more > 0:
            msg += f"\n  ... and more problems of these kinds ({len(self.items)}+ in all)"
        raise DataError(msg)


def read_nonmem(
    source: str | Path | pd.DataFrame,
    *,
    aliases: dict[str, str] | None = None,
    lloq: float | None = None,
    ignore: list[str] | tuple[str, ...] | str | None = None,
    accept: list[str] | tuple[str, ...] | str | None = None,
    negative_dv: bool = False,
) -> Dataset:
    """Read and validate a NONMEM-style dataset.

    Parameters
    ----------
    source : path or DataFrame
        A comma-, tab-, semicolon- or whitespace-separated text file (the
        separator is taken from the header line), or a DataFrame with the same
        columns.
    aliases : dict, optional
        Declared renames, e.g. ``{"conc": "DV", "subject": "ID"}`` (case-insensitive).
        Nothing is renamed unless declared here.
    lloq : float, optional
        The LLOQ of censored rows (BLQ=1 or CENS=1) that have no LLOQ value of
        their own (a spec's ``[data] lloq``); said in the summary when used.
    ignore, accept : list of str, optional
        Row filters with NONMEM's ``IGNORE=(...)`` / ``ACCEPT=(...)`` meaning (a
        spec's ``[data] ignore`` / ``[data] accept``), e.g. ``["DV.EQ.0",
        "TIME.GT.24"]``: ``ignore`` drops the rows where any condition holds,
        ``accept`` keeps only the rows where any condition holds (not both).
        See "Row filters" in the module notes.
    negative_dv : bool
        Accept negative DV values. Measured concentrations never are; this is
        for data simulated from an additive error model (the replicates of a
        simulation-based calibration), which the fit must take as they are.

    Returns
    -------
    Dataset

    Raises
    ------
    DataError
        On any rule violation, naming row, column and rule.

    Examples
    --------
    >>> import bayespk as bpk
    >>> ds = bpk.read_nonmem(bpk.datasets.path("theophylline"))
    >>> ds.summary.n_subjects, ds.summary.n_observations
    (12, 132)
    """
    label = str(source) if not isinstance(source, pd.DataFrame) else "<DataFrame>"
    lloq = _check_lloq_option(lloq, label)
    notes: list[str] = []
    excluded: dict[str, int] = {}
    dropped: list[dict] = []
    raw = _read_raw(source, label, notes, excluded, dropped)
    n_rows = len(raw) + sum(excluded.values())
    file_columns = [str(c).strip().upper() for c in raw.columns if c != "ROW"]
    raw = _rename(raw, aliases or {}, label)
    names = dict(zip(file_columns, [c for c in raw.columns if c != "ROW"]))  # file's name -> canonical
    problems = _Problems(label)

    if "C" in raw.columns:
        commented = raw["C"].str.strip().str.upper().str.startswith("C")
        if commented.any():
            excluded["commented out (C column)"] = int(commented.sum())
            _list_dropped(raw[commented], "commented out (C column)", dropped)
        raw = raw[~commented].drop(columns="C")
    raw = _apply_filters(raw, ignore, accept, names, label, excluded, notes, dropped)

    for col in ("ID", "TIME", "AMT", "DV"):
        if col not in raw.columns:
            names = [c for c in raw.columns if c != "ROW"]
            hint = ""
            if len(names) == 1 and any(ch in names[0] for ch in "|:/ "):
                hint = (f" The header was read as the single column {names[0]!r}: bayespk reads comma-, tab-, "
                        "semicolon- and whitespace-separated files.")
            raise DataError(
                f"{label}: column {col} is required but absent; columns are: "
                + ", ".join(names)
                + ". Declare a rename with aliases={'yourname': '" + col + "'}." + hint
            )
    if len(raw) == 0:
        why = " left after [data] ignore/accept" if ignore or accept else ""
        raise DataError(f"{label}: the dataset has no data rows{why}")

    table = pd.DataFrame({"ROW": raw["ROW"].to_numpy()}, index=raw.index)
    for col in raw.columns:
        if col == "ROW":
            continue
        text = raw[col].str.strip()
        missing = text.isin(MISSING)
        if col == "ID":
            table[col] = _subject_ids(raw, text, missing, problems, notes)
            continue
        values = pd.to_numeric(text.where(~missing), errors="coerce")
        bad = values.isna() & ~missing
        if col in NONMEM_COLUMNS:
            problems.add_mask(raw, bad, col, lambda r, c=col: _not_a_number(r[c]))
            table[col] = values.astype(float)
        elif bad.any():
            table[col] = text.where(~missing).astype(object)  # a text (categorical) covariate
        else:
            table[col] = values.astype(float)
    problems.raise_if_any()
    _check_magnitudes(table, problems)
    problems.raise_if_any()

    blq_only = "BLQ" in table.columns and "CENS" not in table.columns  # BLQ=1 rows then need an LLOQ
    table = _fill_defaults(table, problems)
    problems.raise_if_any()
    if lloq is not None:
        table, n = _apply_lloq(table, lloq)
        if n:
            notes.append(f"LLOQ {lloq:g} ([data] lloq) used for {n} censored row{'s' * (n != 1)} without an "
                         "LLOQ value")
    _check_rules(table, problems, blq_only, negative_dv)
    problems.raise_if_any()

    mdv_obs = (table.EVID == 0) & (table.MDV == 1)
    if mdv_obs.any():
        excluded["observation records with MDV=1 (not in the likelihood)"] = int(mdv_obs.sum())
    covariates = [c for c in table.columns if c not in NONMEM_COLUMNS and c != "ROW"]
    obs = (table.EVID == 0) & (table.MDV == 0)
    doses = table.EVID.isin([1, 4])
    summary = DataSummary(
        n_rows=n_rows,
        n_subjects=int(table.ID.nunique()),
        n_observations=int(obs.sum()),
        n_dose_records=int(doses.sum()),
        n_doses=int((1 + table.ADDL[doses]).sum()),
        n_blq=int((obs & (table.CENS != 0)).sum()),
        n_other_events=int((table.EVID == 2).sum()),
        excluded=excluded,
        covariates=covariates,
        notes=notes,
        excluded_rows=dropped,
    )
    if summary.n_observations == 0:
        raise DataError(f"{label}: no observation records (EVID 0, MDV 0) to fit")
    return Dataset(table=table.reset_index(drop=True), covariates=covariates, summary=summary,
                   source=label)


def _check_lloq_option(lloq, label: str) -> float | None:
    if lloq is None:
        return None
    if isinstance(lloq, bool) or not isinstance(lloq, (int, float, np.number)):
        raise DataError(f"{label}: lloq ([data] lloq, --lloq) must be a number > 0, got {lloq!r}")
    try:
        value = float(lloq)
    except OverflowError:
        value = float("inf")
    if not (np.isfinite(value) and 0 < value <= MAX_ABS):
        raise DataError(f"{label}: lloq ([data] lloq, --lloq) must be a finite number > 0, got {lloq!r}")
    return value


def _not_a_number(value: str) -> str:
    """The rule for a value that does not parse as a number, with a hint for decimal commas."""
    v = str(value).strip()
    if _DECIMAL_COMMA.fullmatch(v):
        return f"'{v}' is not a number (decimal comma? write {v.replace(',', '.')})"
    return f"'{v}' is not a number"


def _subject_ids(raw: pd.DataFrame, text: pd.Series, missing: pd.Series, problems: _Problems,
                 notes: list[str]) -> pd.Series:
    """The ID column, exactly as written: int64 when every ID is a plain whole number, else text.

    Never through float (a 17-digit ID keeps every digit). Text IDs that are
    two spellings of one number (``7`` and ``007``) are refused: they would be
    two subjects where the writer may have meant one.
    """
    problems.add_mask(raw, missing, "ID", "missing ID (every row needs one)")
    if missing.any():
        return text.astype(object)
    if text.map(lambda v: bool(_INT_ID.fullmatch(v))).all():
        values = [int(v) for v in text]
        if min(values) >= -(2**63) and max(values) < 2**63:
            return pd.Series(np.array(values, dtype=np.int64), index=text.index)
    first_row = dict(zip(text[::-1], raw.ROW[::-1]))  # each ID -> its first row
    spellings: dict[Decimal, str] = {}
    for v in first_row:
        if not _NUMBER.fullmatch(v):
            continue
        try:
            number = Decimal(v)
        except InvalidOperation:  # pragma: no cover - _NUMBER only matches what Decimal reads
            continue
        other = spellings.setdefault(number, v)
        if other != v:
            a, b = sorted((v, other), key=lambda x: first_row[x])
            problems.add(first_row[b], "ID",
                         f"ID '{b}' is the same number as ID '{a}' (row {first_row[a]}) written differently; IDs "
                         "that are not all plain whole numbers are kept as text, so these would be two subjects: "
                         "write each subject's ID one way")
    odd = next((v for v in text if not _INT_ID.fullmatch(v)), None) or max(text, key=len)
    notes.append(f"subject IDs kept as text, as written (not all plain whole numbers within 64 bits, e.g. {odd!r})")
    return pd.Series([str(v) for v in text], index=text.index, dtype=object)


def _check_magnitudes(table: pd.DataFrame, problems: _Problems) -> None:
    """Refuse non-finite values and magnitudes above MAX_ABS in every numeric column."""
    for col in table.columns:
        if col in ("ROW", "ID") or table[col].dtype == object:
            continue
        x = table[col].to_numpy(dtype=float)
        problems.add_mask(table, np.isinf(x), col, "value is infinite")
        huge = np.isfinite(x) & (np.abs(np.nan_to_num(x)) > MAX_ABS)
        problems.add_mask(table, huge, col,
                          lambda r, c=col: f"value {r[c]:g} is too large (|value| > 1e100); check it and its "
                                           "units")


_FILTER = re.compile(
    r"\s*(?P<col>[^\s=!<>.]+?)\s*(?P<op>\.(?:EQN?|NEN?|GT|GE|LT|LE)\.|==|!=|>=|<=|=|>|<)\s*(?P<value>[^\s=!<>]+)\s*",
    re.IGNORECASE,
)
_FILTER_OPS = {".EQ.": "==", ".EQN.": "==", "=": "==", "==": "==", ".NE.": "!=", ".NEN.": "!=", "!=": "!=",
               ".GT.": ">", ">": ">", ".GE.": ">=", ">=": ">=", ".LT.": "<", "<": "<", ".LE.": "<=", "<=": "<="}
FILTER_SYNTAX = ("COLUMN.OP.VALUE with OP one of EQ, NE, GT, GE, LT, LE (or ==, !=, >, >=, <, <=) and a number, "
                 "e.g. \"DV.EQ.0\" or \"TIME > 24\"")


def filter_expressions(exprs, key: str) -> list[tuple[str, str, str, float]]:
    """Parse a ``[data] ignore`` / ``accept`` list: (expression, column, operator, value) per condition.

    ``exprs`` is a list of strings (a single string is one condition). Raises
    :class:`DataError` naming the key and the expression that does not parse.
    """
    if exprs is None:
        return []
    if isinstance(exprs, str):
        exprs = [exprs]
    if not isinstance(exprs, (list, tuple)) or not all(isinstance(e, str) for e in exprs):
        raise DataError(f"{key}: expected a list of conditions such as [\"DV.EQ.0\"], got {exprs!r}")
    out = []
    for e in exprs:
        m = _FILTER.fullmatch(e)
        if m is None:
            raise DataError(f"{key}: {e!r} is not a condition; expected {FILTER_SYNTAX}")
        value = m["value"]
        try:
            number = float(value)
        except ValueError:
            number = float("nan")
        if not (_NUMBER.fullmatch(value) and np.isfinite(number)):
            raise DataError(f"{key}: {e!r}: the value {value!r} is not a number (comparisons are numeric); "
                            f"expected {FILTER_SYNTAX}")
        out.append((e.strip(), m["col"].upper(), _FILTER_OPS[m["op"].upper()], number))
    return out


MAX_DROPPED_LISTED = 1000  # rows dropped on reading that the summary lists one by one


def _list_dropped(rows: pd.DataFrame, reason: str, dropped: list[dict]) -> None:
    """Add ``rows`` (raw text) to the list of rows dropped on reading, up to MAX_DROPPED_LISTED in all."""
    for _, r in rows.head(max(0, MAX_DROPPED_LISTED - len(dropped))).iterrows():
        dropped.append({"ROW": int(r["ROW"]), "ID": str(r.get("ID", "")).strip(),
                        "TIME": str(r.get("TIME", "")).strip(), "reason": reason})


def _apply_filters(raw: pd.DataFrame, ignore, accept, names: dict[str, str], label: str,
                   excluded: dict[str, int], notes: list[str], dropped: list[dict] | None = None) -> pd.DataFrame:
    """Drop the rows ``[data] ignore`` matches, or keep only those ``[data] accept`` matches.

    Conditions are numeric comparisons of a column's value on each row (dose
    rows included); a missing value ('.', empty, NA) matches no condition.
    Dropped rows are counted in ``excluded`` and described in ``notes``.
    """
    conds = {"[data] ignore": filter_expressions(ignore, "[data] ignore"),
             "[data] accept": filter_expressions(accept, "[data] accept")}
    if conds["[data] ignore"] and conds["[data] accept"]:
        raise DataError(f"{label}: [data] ignore and [data] accept cannot both be given (as NONMEM's IGNORE=(...) "
                        "and ACCEPT=(...)); give one of them")
    for key, parsed in conds.items():
        if not parsed:
            continue
        hits = []
        for expr, col, op, value in parsed:
            column = names.get(col, col if col in raw.columns else None)
            if column is None or column not in raw.columns:
                raise DataError(f"{label}: {key}: {expr!r} names column {col}, which the dataset does not have; "
                                "columns are: " + ", ".join(names))
            text = raw[column].str.strip()
            missing = text.isin(MISSING)
            values = pd.to_numeric(text.where(~missing), errors="coerce")
            bad = values.isna() & ~missing
            if bad.any():
                k = int(np.argmax(bad.to_numpy()))
                raise DataError(f"{label}: {key}: {expr!r}: column {col} holds {text.iloc[k]!r} (row "
                                f"{int(raw.ROW.iloc[k])}), not a number; the comparisons are numeric")
            x = values.to_numpy(dtype=float)
            with np.errstate(invalid="ignore"):
                hit = {"==": x == value, "!=": x != value, ">": x > value, ">=": x >= value, "<": x < value,
                       "<=": x <= value}[op] & ~missing.to_numpy()
            hits.append(hit)
        any_hit = np.logical_or.reduce(hits)
        drop = any_hit if key == "[data] ignore" else ~any_hit
        n = int(drop.sum())
        listed = ", ".join(e for e, *_ in parsed)
        if n:
            excluded[f"{key} ({listed})"] = n
            if dropped is not None:
                _list_dropped(raw[drop], f"{key} ({listed})", dropped)
        amt = pd.to_numeric(raw["AMT"].str.strip(), errors="coerce") if "AMT" in raw.columns else None
        evid = pd.to_numeric(raw["EVID"].str.strip(), errors="coerce") if "EVID" in raw.columns else None
        dose = np.zeros(len(raw), dtype=bool)
        if evid is not None:
            dose |= evid.isin([1, 4]).to_numpy()
        elif amt is not None:
            dose |= (amt > 0).to_numpy()
        each = ", ".join(f"{e} {int(h.sum())}" for (e, *_), h in zip(parsed, hits))
        verb = "dropped" if key == "[data] ignore" else "not accepted, dropped"
        notes.append(f"{key}: rows matching {each}; {n} row{'s' * (n != 1)} {verb}, "
                     f"{int((drop & dose).sum())} of them dose records")
        raw = raw[~drop]
    return raw


def _apply_lloq(t: pd.DataFrame, lloq: float) -> tuple[pd.DataFrame, int]:
    """Fill ``lloq`` into the LLOQ of left-censored observation rows that have none."""
    fill = (t.EVID == 0) & (t.CENS == 1) & t.LLOQ.isna()
    if not fill.any():
        return t, 0
    t = t.copy()
    t.loc[fill, "LLOQ"] = lloq
    return t, int(fill.sum())


COMMENT_ROWS = "commented out (row starts with # or @)"


def _read_raw(source, label: str, notes: list[str], excluded: dict[str, int] | None = None,
              dropped: list[dict] | None = None) -> pd.DataFrame:
    rows = None
    if isinstance(source, pd.DataFrame):
        if "ROW" in source.columns:  # a Dataset.table fed back in keeps its source row numbers
            rows = pd.to_numeric(source["ROW"], errors="coerce").to_numpy()
            if np.isnan(rows).any() or len(np.unique(rows)) != len(rows):
                raise DataError(f"{label}: column ROW is reserved for source row numbers (whole, unique)")
            source = source.drop(columns="ROW")
        names = [str(c).strip().upper() for c in source.columns]
        dup = next((c for c, n in zip(source.columns, names) if names.count(n) > 1), None)
        if dup is not None:
            raise DataError(f"{label}: column {dup!r} appears more than once (names are case-insensitive)")
        raw = pd.DataFrame({c: _as_text(source[c]) for c in source.columns}, index=source.index)
    else:
        path = Path(source)
        if path.is_dir():
            raise DataError(f"{label}: is a directory, not a data file")
        if not path.is_file():
            raise DataError(f"{label}: no such file")
        try:
            text = path.read_bytes().decode("utf-8-sig")
        except UnicodeDecodeError as e:
            raise DataError(f"{label}: not UTF-8 text ({e}); save the file as UTF-8 CSV") from None
        if "\x00" in text:
            raise DataError(f"{label}: not a text file (it holds NUL bytes; UTF-16 or binary?); save it as UTF-8 CSV")
        if not text.strip():
            raise DataError(f"{label}: the file is empty")
        header, records, numbers, comments = _split_records(text, label, notes)
        if comments and excluded is not None:
            excluded[COMMENT_ROWS] = len(comments)
        if dropped is not None:  # listed as the other rows dropped on reading; their fields are not read
            dropped += [{"ROW": row, "ID": "", "TIME": "", "reason": COMMENT_ROWS}
                        for row in comments[:max(0, MAX_DROPPED_LISTED - len(dropped))]]
        rows = np.asarray(numbers, dtype=float)
        raw = pd.DataFrame(records, columns=header, dtype=object) if records else pd.DataFrame(
            {h: pd.Series(dtype=object) for h in header})
    raw = raw.reset_index(drop=True)
    if "ROW" in raw.columns:
        raise DataError(f"{label}: column ROW is reserved (bayespk numbers the rows); rename it")
    raw.insert(0, "ROW", rows.astype(int) if rows is not None and len(rows) == len(raw)
               else np.arange(1, len(raw) + 1))
    return raw


def _as_text(column: pd.Series) -> pd.Series:
    """A DataFrame column as the text a file would hold: whole floats without ``.0`` (IDs), missing as ``.``."""
    if pd.api.types.is_float_dtype(column):
        out = column.astype(str).to_numpy(dtype=object)
        v = column.to_numpy(dtype=float)
        whole = np.isfinite(v) & (np.floor(v) == v) & (np.abs(v) < 2**63)
        out[whole] = v[whole].astype(np.int64).astype(str)
    elif column.dtype == object:  # mixed cells, e.g. IDs 1 and 2.0 from a list of dicts
        out = np.array([id_label(v) for v in column], dtype=object)
    else:
        out = column.astype(str).to_numpy(dtype=object)
    out[column.isna().to_numpy()] = "."
    return pd.Series(out, index=column.index, dtype=object)


def _separator(header_line: str) -> str | None:
    """The separator the header line uses: comma, else tab, else semicolon, else whitespace (None)."""
    for sep in (",", "\t", ";"):
        if sep in header_line:
            return sep
    return None if len(header_line.split()) > 1 else ","


def _n_fields(line: str, sep: str | None) -> int | None:
    """How many fields ``line`` splits into with ``sep`` (None: runs of whitespace); None if unreadable."""
    if sep is None:
        return len(_WS_FIELD.findall(line))
    try:
        return len(next(csv.reader([line], delimiter=sep, skipinitialspace=True, strict=True)))
    except (csv.Error, StopIteration):
        return None


def _detect_separator(header_line: str, sample: list[str]) -> tuple[str | None, str]:
    """The separator, and how it was decided: the header's (comma, else tab, else semicolon, else
    whitespace), unless runs of whitespace split the header and every sampled data line into one
    consistent number of fields (> 1) where the header's separator does not, or into more fields
    (tabs and spaces mixed, as NONMEM ``.dat`` files often are)."""
    sep = _separator(header_line)
    if sep is None:
        return None, "from the header line"
    lines = [header_line, *sample]
    own = {_n_fields(line, sep) for line in lines}
    ws = {_n_fields(line, None) for line in lines}
    own_ok, ws_ok = len(own) == 1 and None not in own, len(ws) == 1 and min(ws) > 1
    if ws_ok and (not own_ok or (sep != "," and min(ws) > min(own))):
        return None, (f"the header line has a {SEPARATORS[sep]}, but every line splits into {min(ws)} fields "
                      "at runs of spaces and tabs")
    return sep, "from the header line"


def _split_records(text: str, label: str, notes: list[str]) -> tuple[list[str], list[list[str]], list[int],
                                                                     list[int]]:
    """Header names, data rows (fields stripped), their row numbers and the row numbers of the comment rows.

    Blank lines are skipped (rows are numbered without them). A header line
    starting with ``#`` or ``@`` (NONMEM ``IGNORE=#`` / ``IGNORE=@``) is read
    without that character; a later line starting with ``#`` or ``@`` is a
    comment row: skipped, numbered, and its number returned. A row with a
    different number of fields than the header is refused naming its row and
    line, except an empty trailing field on every data row (a separator at the
    end of each line), which is dropped and noted.
    """
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    first = next(i for i, line in enumerate(lines) if line.strip())
    head = lines[first].strip()
    if head[0] in "#@":
        notes.append(f"the header line starts with {head[0]!r} (NONMEM IGNORE={head[0]}); read without it")
        head = head[1:].strip()
        if not head:
            raise DataError(f"{label}: line {first + 1}: the header line holds only {lines[first].strip()!r}")
    numbers: list[int] = []  # row number of each kept data line
    kept: list[tuple[int, str]] = [(first + 1, head)]  # (line number, text)
    comments: list[int] = []  # row number of each comment row
    row = 0
    for i, line in enumerate(lines[first + 1:], start=first + 2):
        stripped = line.strip()
        if not stripped:
            continue
        row += 1
        if stripped[0] in "#@":
            comments.append(row)
            continue
        numbers.append(row)
        kept.append((i, line))
    if comments:
        notes.append(f"{len(comments)} comment row{'s' * (len(comments) != 1)} (starting with # or @, NONMEM "
                     "IGNORE=#/@) skipped")
    sep, how = _detect_separator(head, [line for _, line in kept[1:201]])
    parsed: list[tuple[int, list[str]]] = []  # (line number, fields)
    if sep is None:
        for i, line in kept:
            parsed.append((i, [a if b == "" else b for a, b in _WS_FIELD.findall(line)]))
    else:
        for i, line in kept:
            try:
                fields = next(csv.reader([line], delimiter=sep, skipinitialspace=True, strict=True), [])
            except csv.Error as e:
                raise DataError(f"{label}: not a readable CSV: line {i}: {e} (a quote opened on this "
                                "line is not closed, or a quote stands inside an unquoted value)") from None
            parsed.append((i, [f.strip() for f in fields]))
    (header_line, header), data = parsed[0], parsed[1:]
    header = [h.strip() for h in header]
    n = len(header)
    name = SEPARATORS[sep]
    shown = "','" if sep == "," else name
    if sep != "," or how != "from the header line":
        notes.append(f"read as {name}-separated ({how})")
    counts = [len(f) for _, f in data]
    if data and header[-1] == "" and all(c == n and f[-1] == "" for c, (_, f) in zip(counts, data)):
        header, data = header[:-1], [(i, f[:-1]) for i, f in data]
        counts, n = [c - 1 for c in counts], n - 1
        notes.append(f"every line ends with a separator ({shown}); the empty last column was ignored")
    elif data and all(c == n + 1 and f[-1] == "" for c, (_, f) in zip(counts, data)):
        data = [(i, f[:-1]) for i, f in data]
        counts = [n] * len(data)
        notes.append(f"every data row ends with an extra empty field (a trailing {shown}); it was ignored")
    elif data and all(c == n + 1 for c in counts):
        raise DataError(f"{label}: every data row has one more field ({n + 1}) than the header (line {header_line}) "
                        f"names ({n}), and the extra fields hold values: is a column name missing from the header, "
                        f"or does every row hold an unquoted {shown} inside a value?")
    unnamed = [k + 1 for k, h in enumerate(header) if h == ""]
    if unnamed:
        trailing = " (the header line ends with a separator?)" if unnamed == [n] else ""
        raise DataError(f"{label}: line {header_line}: column {unnamed[0]} has no name in the header; every column "
                        f"needs one{trailing}")
    dup = next((h for h in header if header.count(h) > 1), None)
    if dup is not None:
        raise DataError(f"{label}: column {dup!r} appears more than once in the header")
    problems = _Problems(label)
    for row, (line, fields), count in zip(numbers, data, counts):
        if count != n:
            problems.items.append(f"row {row} (line {line}): {count} field{'s' * (count != 1)}, but the header "
                                  f"names {n} columns"
                                  + _field_hint(fields, sep, n))
    problems.raise_if_any()
    return header, [f for _, f in data], numbers, comments


def _field_hint(fields: list[str], sep: str | None, n: int) -> str:
    """Why a row may have the wrong number of fields: another separator, or a trailing one."""
    joined = (sep or " ").join(fields)
    for other, name in SEPARATORS.items():
        if other is not None and other != sep and joined.count(other) == n - 1:
            return f" (this row seems {name}-separated, the header {SEPARATORS[sep]}-separated)"
    if fields and fields[-1] == "" and len(fields) == n + 1:
        return " (it ends with an empty field: a trailing separator?)"
    if sep is None:
        return " (in a whitespace-separated file a missing value must be written, e.g. '.')"
    return ""


def _rename(raw: pd.DataFrame, aliases: dict[str, str], label: str) -> pd.DataFrame:
    alias = {k.strip().upper(): v.strip().upper() for k, v in aliases.items()}
    names = []
    for c in raw.columns:
        if c == "ROW":
            names.append(c)
            continue
        u = str(c).strip().upper()
        names.append(alias.get(u, u))
    seen: dict[str, int] = {}
    for i, n in enumerate(names):
        if n in seen:
            raise DataError(
                f"{label}: columns {raw.columns[seen[n]]!r} and {raw.columns[i]!r} both mean "
                f"{n} (names are case-insensitive, aliases applied)"
            )
        seen[n] = i
    for k in alias:
        if k not in {str(c).strip().upper() for c in raw.columns}:
            raise DataError(f"{label}: alias {k!r} names no column of the dataset")
    raw = raw.copy()
    raw.columns = names
    return raw


def _fill_defaults(t: pd.DataFrame, problems: _Problems) -> pd.DataFrame:
    t = t.copy()
    problems.add_mask(t, t.TIME.isna(), "TIME", "missing TIME")
    if "EVID" not in t.columns:
        t["EVID"] = np.where(t.AMT.fillna(0) > 0, 1.0, 0.0)
    else:
        problems.add_mask(t, t.EVID.isna(), "EVID", "missing EVID")
    if "MDV" not in t.columns:
        t["MDV"] = np.where(t.EVID == 0, 0.0, 1.0)
    else:
        problems.add_mask(t, t.MDV.isna(), "MDV", "missing MDV")
    for col in ("RATE", "II", "ADDL", "SS"):
        t[col] = t[col].fillna(0.0) if col in t.columns else 0.0
    t["CMT"] = t["CMT"] if "CMT" in t.columns else np.nan  # NaN: the structure's default
    for col in ("BLQ", "CENS"):
        if col in t.columns:
            t[col] = t[col].fillna(0.0)
    if "LLOQ" not in t.columns:
        t["LLOQ"] = np.nan
    # One censoring code: CENS (1 left, -1 right, 0 none); BLQ=1 means CENS=1.
    if "BLQ" in t.columns:
        problems.add_mask(t, ~t.BLQ.isin([0, 1]), "BLQ", lambda r: f"BLQ must be 0 or 1, got {r.BLQ:g}")
        blq_as_cens = t.BLQ.where(t.BLQ.isin([0, 1]), 0)
        if "CENS" in t.columns:
            clash = (t.CENS != blq_as_cens) & ~((t.CENS == -1) & (blq_as_cens == 0))
            problems.add_mask(t, clash, "CENS", lambda r: f"CENS={r.CENS:g} contradicts BLQ={r.BLQ:g}")
        else:
            t["CENS"] = blq_as_cens
    elif "CENS" not in t.columns:
        t["CENS"] = 0.0
    if "BLQ" not in t.columns:
        t["BLQ"] = (t.CENS == 1).astype(float)
    problems.add_mask(t, ~t.CENS.isin([-1, 0, 1]), "CENS", lambda r: f"CENS must be -1, 0 or 1, got {r.CENS:g}")
    return t


def _check_rules(t: pd.DataFrame, problems: _Problems, blq_only: bool = True, negative_dv: bool = False) -> None:
    """Record-level rules; ``blq_only``: the dataset flags censoring by BLQ alone (no CENS column), so
    its BLQ=1 rows need an LLOQ (with a CENS column, CENS=1 without an LLOQ reads DV as the limit)."""
    evid_ok = t.EVID.isin([0, 1, 2, 3, 4])
    problems.add_mask(
        t, ~evid_ok, "EVID",
        lambda r: f"unknown EVID {r.EVID:g} (0 observation, 1 dose, 2 other event, 3 reset, 4 reset and dose)",
    )  # fmt: skip
    problems.add_mask(t, ~t.MDV.isin([0, 1]), "MDV", lambda r: f"MDV must be 0 or 1, got {r.MDV:g}")

    dose = t.EVID.isin([1, 4])
    obs = t.EVID == 0
    used = obs & (t.MDV == 0)
    constant_ss = dose & (t.SS == 1) & (t.RATE > 0) & (t.AMT.fillna(0) == 0)
    problems.add_mask(t, dose & ~(t.AMT > 0) & ~constant_ss, "AMT",
                      lambda r: f"dose record (EVID {r.EVID:g}) needs AMT > 0, got "
                                f"{'missing' if pd.isna(r.AMT) else f'{r.AMT:g}'} (AMT=0 is only allowed for a "
                                f"constant infusion at steady state: SS=1, RATE > 0)")
    problems.add_mask(t, dose & (t.MDV != 1), "MDV", lambda r: f"dose record (EVID {r.EVID:g}) must have MDV=1")
    problems.add_mask(t, (t.EVID.isin([0, 2, 3])) & t.AMT.notna() & (t.AMT != 0), "AMT",
                      lambda r: f"non-dose record (EVID {r.EVID:g}) has AMT={r.AMT:g}; dose records need EVID 1 or 4")
    # censored rows are checked below (LLOQ for CENS=1, the limit in DV for CENS=-1)
    problems.add_mask(t, used & t.DV.isna() & (t.CENS == 0), "DV",
                      "observation record (EVID 0, MDV 0) has no DV; set MDV=1 to keep it out of the likelihood")
    problems.add_mask(t, used & (t.DV < 0) & (t.CENS == 0) & (not negative_dv), "DV",
                      lambda r: f"negative concentration {r.DV:g}")
    problems.add_mask(t, ~dose & t.DV.notna() & (t.MDV == 0) & ~obs, "DV",
                      "DV given on a non-observation record with MDV=0; set MDV=1")

    # dosing record fields
    problems.add_mask(t, ~dose & (t.RATE != 0), "RATE", lambda r: f"RATE={r.RATE:g} on a non-dose record")
    problems.add_mask(t, dose & (t.RATE < 0) & ~t.RATE.isin([-1, -2]), "RATE",
                      lambda r: f"RATE must be 0 (bolus), > 0 (infusion), -1 or -2, got {r.RATE:g}")
    problems.add_mask(t, (t.ADDL < 0) | (t.ADDL % 1 != 0), "ADDL",
                      lambda r: f"ADDL must be a whole number >= 0, got {r.ADDL:g}")
    problems.add_mask(t, t.II < 0, "II", lambda r: f"II must be >= 0, got {r.II:g}")
    problems.add_mask(t, ~dose & ((t.ADDL != 0) | (t.II != 0)), "ADDL",
                      "II/ADDL given on a non-dose record")
    problems.add_mask(t, dose & (t.ADDL > 0) & (t.II <= 0), "II", lambda r: f"ADDL={r.ADDL:g} needs II > 0")
    problems.add_mask(t, dose & (t.ADDL == 0) & (t.II > 0) & (t.SS == 0), "ADDL",
                      lambda r: f"II={r.II:g} without ADDL or SS (II > 0 requires ADDL > 0 for non-steady-state doses)")
    problems.add_mask(t, ~t.SS.isin([0, 1, 2]), "SS", lambda r: f"SS must be 0, 1 or 2, got {r.SS:g}")
    problems.add_mask(t, ~dose & (t.SS != 0), "SS", lambda r: f"SS={r.SS:g} on a non-dose record")
    problems.add_mask(t, dose & (t.SS != 0) & (t.II <= 0) & ~constant_ss, "II",
                      lambda r: f"steady-state dose (SS={r.SS:g}) needs the dosing interval II > 0")
    problems.add_mask(t, constant_ss & (t.II != 0), "II",
                      "a constant infusion at steady state (SS=1, AMT=0, RATE > 0) must have II=0")
    problems.add_mask(t, dose & (t.SS == 2) & (t.AMT.fillna(0) == 0), "AMT", "SS=2 needs AMT > 0")
    long_inf = dose & (t.RATE > 0) & (t.II > 0) & (t.AMT / t.RATE.where(t.RATE > 0) > t.II)
    problems.add_mask(t, long_inf, "RATE",
                      lambda r: f"infusion of {r.AMT / r.RATE:g} h (AMT/RATE) is longer than II={r.II:g}; "
                                "overlapping repeated infusions are not supported")
    cmt = t.CMT
    problems.add_mask(t, cmt.notna() & ((cmt < 1) | (cmt % 1 != 0)), "CMT",
                      lambda r: f"CMT must be a positive whole number, got {r.CMT:g}")

    # censoring
    problems.add_mask(t, (t.CENS != 0) & ~obs, "CENS", "BLQ/CENS flag on a non-observation record")
    left = used & (t.CENS == 1)
    blq = left & (t.BLQ == 1) if blq_only else left & False
    problems.add_mask(t, blq & t.LLOQ.isna(), "LLOQ",
                      "BLQ record needs an LLOQ value: give it in an LLOQ column, or as [data] lloq = <number> in "
                      "the spec (DV is not read as the limit of a BLQ=1 row; CENS=1 rows take DV as the limit)")
    cens_only = left & ~blq
    problems.add_mask(t, cens_only & t.LLOQ.isna() & t.DV.isna(), "LLOQ",
                      "BLQ record needs an LLOQ value (or DV holding the LLOQ with CENS=1)")
    problems.add_mask(t, t.LLOQ < 0, "LLOQ", lambda r: f"LLOQ must be >= 0, got {r.LLOQ:g}")
    problems.add_mask(t, left & (t.LLOQ <= 0), "LLOQ",
                      lambda r: f"the LLOQ of a censored row must be > 0, got {r.LLOQ:g}")
    problems.add_mask(t, cens_only & t.LLOQ.isna() & (t.DV <= 0), "DV",
                      lambda r: f"CENS=1 without an LLOQ takes DV as the LLOQ, which must be > 0, got {r.DV:g}; "
                                "give the LLOQ in an LLOQ column or as [data] lloq")
    under = used & (t.CENS == 0) & t.LLOQ.notna() & (t.DV < t.LLOQ)
    problems.add_mask(t, under, "DV",
                      lambda r: f"DV {r.DV:g} is below LLOQ {r.LLOQ:g} but the row is not flagged BLQ/CENS")
    problems.add_mask(t, used & (t.CENS == -1) & t.DV.isna(), "DV",
                      "right-censored record (CENS=-1) needs DV as the limit")
    if problems.items:
        return

    # per-subject ordering
    ids = t.ID.to_numpy()
    new_block = np.r_[True, ids[1:] != ids[:-1]]
    block_ids = ids[new_block]
    seen: set = set()
    rows = t.ROW.to_numpy()[new_block]
    for i, r in zip(block_ids, rows):
        if i in seen:
            problems.add(r, "ID", f"ID {id_label(i)} appears again after other IDs; a subject's rows must be "
                                  "contiguous")
        seen.add(i)
    same = np.r_[False, ids[1:] == ids[:-1]]
    times = t.TIME.to_numpy()
    back = same & (times < np.r_[np.inf, times[:-1]])
    for k in np.flatnonzero(back)[: MAX_LISTED + 1]:
        problems.add(
            t.ROW.iloc[k], "TIME",
            f"TIME {times[k]:g} decreases within ID {id_label(ids[k])} (previous row has TIME {times[k - 1]:g})",
        )  # fmt: skip
