"""Read and validate NONMEM-style datasets.

A dataset is a CSV with one record per row. Column names are case-insensitive;
``.``, an empty cell and ``NA`` mean missing. The columns bayespk understands:

========  ==================================================================
ID        subject identifier (number); a subject's rows must be contiguous
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
"""

from __future__ import annotations

import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from bayespk.errors import DataError

__all__ = ["Dataset", "DataSummary", "read_nonmem", "NONMEM_COLUMNS"]

NONMEM_COLUMNS = (
    "ID", "TIME", "AMT", "DV", "EVID", "MDV", "CMT", "RATE", "II", "ADDL", "SS",
    "BLQ", "CENS", "LLOQ",
)  # fmt: skip
MISSING = {".", "", "NA", "NaN", "nan"}
MAX_LISTED = 10


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
            r = t[missing].iloc[0]
            raise DataError(
                f"row {int(r.ROW)}, column {col}: missing value for ID {_fmt(r.ID)} with no earlier value to carry "
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


def _fmt(x) -> str:
    return str(int(x)) if isinstance(x, float) and x.is_integer() else str(x)


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
) -> Dataset:
    """Read and validate a NONMEM-style dataset.

    Parameters
    ----------
    source : path or DataFrame
        A CSV file, or a DataFrame with the same columns.
    aliases : dict, optional
        Declared renames, e.g. ``{"conc": "DV", "subject": "ID"}`` (case-insensitive).
        Nothing is renamed unless declared here.

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
    raw = _read_raw(source, label)
    raw = _rename(raw, aliases or {}, label)
    problems = _Problems(label)

    excluded: dict[str, int] = {}
    if "C" in raw.columns:
        commented = raw["C"].str.strip().str.upper().str.startswith("C")
        if commented.any():
            excluded["commented out (C column)"] = int(commented.sum())
        raw = raw[~commented].drop(columns="C")

    for col in ("ID", "TIME", "AMT", "DV"):
        if col not in raw.columns:
            raise DataError(
                f"{label}: column {col} is required but absent; columns are: "
                + ", ".join(c for c in raw.columns if c != "ROW")
                + ". Declare a rename with aliases={'yourname': '" + col + "'}."
            )
    if len(raw) == 0:
        raise DataError(f"{label}: the dataset has no data rows")

    table = pd.DataFrame({"ROW": raw["ROW"].to_numpy()}, index=raw.index)
    for col in raw.columns:
        if col == "ROW":
            continue
        text = raw[col].str.strip()
        missing = text.isin(MISSING)
        values = pd.to_numeric(text.where(~missing), errors="coerce")
        bad = values.isna() & ~missing
        if col in NONMEM_COLUMNS:
            problems.add_mask(raw, bad, col, lambda r, c=col: f"'{r[c]}' is not a number")
            table[col] = values.astype(float)
        elif bad.any():
            table[col] = text.where(~missing).astype(object)  # a text (categorical) covariate
        else:
            table[col] = values.astype(float)
    problems.raise_if_any()

    for col in NONMEM_COLUMNS:
        if col in table.columns:
            inf = np.isinf(table[col].to_numpy(dtype=float))
            problems.add_mask(table, inf, col, "value is infinite")
    problems.raise_if_any()

    table = _fill_defaults(table, problems)
    problems.raise_if_any()
    _check_rules(table, problems)
    problems.raise_if_any()

    mdv_obs = (table.EVID == 0) & (table.MDV == 1)
    if mdv_obs.any():
        excluded["observation records with MDV=1 (not in the likelihood)"] = int(mdv_obs.sum())
    covariates = [c for c in table.columns if c not in NONMEM_COLUMNS and c != "ROW"]
    obs = (table.EVID == 0) & (table.MDV == 0)
    doses = table.EVID.isin([1, 4])
    summary = DataSummary(
        n_rows=len(raw) + sum(v for k, v in excluded.items() if k.startswith("commented")),
        n_subjects=int(table.ID.nunique()),
        n_observations=int(obs.sum()),
        n_dose_records=int(doses.sum()),
        n_doses=int((1 + table.ADDL[doses]).sum()),
        n_blq=int((obs & (table.CENS != 0)).sum()),
        n_other_events=int((table.EVID == 2).sum()),
        excluded=excluded,
        covariates=covariates,
    )
    if summary.n_observations == 0:
        raise DataError(f"{label}: no observation records (EVID 0, MDV 0) to fit")
    return Dataset(table=table.reset_index(drop=True), covariates=covariates, summary=summary,
                   source=label)


def _read_raw(source, label: str) -> pd.DataFrame:
    rows = None
    if isinstance(source, pd.DataFrame):
        if "ROW" in source.columns:  # a Dataset.table fed back in keeps its source row numbers
            rows = pd.to_numeric(source["ROW"], errors="coerce").to_numpy()
            if np.isnan(rows).any() or len(np.unique(rows)) != len(rows):
                raise DataError(f"{label}: column ROW is reserved for source row numbers (whole, unique)")
            source = source.drop(columns="ROW")
        raw = source.astype(str).where(source.notna(), ".")
    else:
        path = Path(source)
        if not path.is_file():
            raise DataError(f"{label}: no such file")
        try:
            text = path.read_text(encoding="utf-8")
        except UnicodeDecodeError as e:
            raise DataError(f"{label}: not UTF-8 text ({e}); save the file as UTF-8 CSV") from None
        if not text.strip():
            raise DataError(f"{label}: the file is empty")
        try:
            raw = pd.read_csv(io.StringIO(text), dtype=str, keep_default_na=False,
                              skipinitialspace=True)
            # read_csv renames a repeated name (DV, DV -> DV, DV.1): refuse it instead
            header = pd.read_csv(io.StringIO(text), header=None, nrows=1, dtype=str, keep_default_na=False,
                                 skipinitialspace=True).iloc[0].str.strip().tolist()
        except pd.errors.ParserError as e:
            raise DataError(f"{label}: not a readable CSV ({e})") from None
        dup = next((n for n in header if n and header.count(n) > 1), None)
        if dup is not None:
            raise DataError(f"{label}: column {dup!r} appears more than once in the header")
    raw = raw.reset_index(drop=True)
    if "ROW" in raw.columns:
        raise DataError(f"{label}: column ROW is reserved (bayespk numbers the rows); rename it")
    raw.insert(0, "ROW", rows.astype(int) if rows is not None else np.arange(1, len(raw) + 1))
    return raw


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
    problems.add_mask(t, t.ID.isna(), "ID", "missing ID (every row needs one)")
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


def _check_rules(t: pd.DataFrame, problems: _Problems) -> None:
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
    problems.add_mask(t, used & (t.DV < 0) & (t.CENS == 0), "DV",
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
    no_lloq = left & t.LLOQ.isna() & t.DV.isna()
    problems.add_mask(t, no_lloq, "LLOQ", "BLQ record needs an LLOQ value (or DV holding the LLOQ with CENS=1)")
    problems.add_mask(t, t.LLOQ < 0, "LLOQ", lambda r: f"LLOQ must be >= 0, got {r.LLOQ:g}")
    under = used & (t.CENS == 0) & t.LLOQ.notna() & (t.DV < t.LLOQ)
    problems.add_mask(t, under, "DV",
                      lambda r: f"DV {r.DV:g} is below LLOQ {r.LLOQ:g} but the row is not flagged BLQ/CENS")
    problems.add_mask(t, used & (t.CENS == -1) & t.DV.isna(), "DV", "right-censored record (CENS=-1) needs DV as the limit")
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
            problems.add(r, "ID", f"ID {_fmt(i)} appears again after other IDs; a subject's rows must be contiguous")
        seen.add(i)
    same = np.r_[False, ids[1:] == ids[:-1]]
    times = t.TIME.to_numpy()
    back = same & (times < np.r_[np.inf, times[:-1]])
    for k in np.flatnonzero(back)[: MAX_LISTED + 1]:
        problems.add(
            t.ROW.iloc[k], "TIME",
            f"TIME {times[k]:g} decreases within ID {_fmt(ids[k])} (previous row has TIME {times[k - 1]:g})",
        )  # fmt: skip
