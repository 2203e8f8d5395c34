"""Validate an exposure-response dataset and line its exposures up with its subjects.

:func:`prepare` checks the outcome table (one row per subject) and the
exposures before anything is compiled or sampled, and refuses bad input with a
:class:`~bayespk.errors.DataError` naming the row, ID, column and rule. Row
numbers count the outcome table's rows from 1.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr

from bayespk.errors import DataError, SpecError

__all__ = ["KINDS", "Prepared", "exposure_draws", "prepare"]

KINDS = ("binary", "ordinal", "tte")


@dataclass
class Prepared:
    """A validated exposure-response dataset.

    Attributes
    ----------
    kind : {"binary", "ordinal", "tte"}
    ids : ndarray
        Subject IDs in the outcome table's order.
    log_exposure : ndarray, shape (n_draws, n_subjects)
        log10 exposure; one row for point exposures.
    y : ndarray or None
        Response (0/1) or grade (integer) per subject.
    time, event : ndarray or None
        Time to event (> 0) and event indicator (1 event, 0 right-censored).
    Z : ndarray, shape (n_subjects, n_covariates)
    covariates : list of str
    notes : list of str
        What was noticed but not refused (e.g. exposures of subjects without outcomes).
    max_grade : int
        ordinal: the highest possible grade.
    """

    kind: str
    ids: np.ndarray
    log_exposure: np.ndarray
    y: np.ndarray | None
    time: np.ndarray | None
    event: np.ndarray | None
    Z: np.ndarray
    covariates: list[str]
    notes: list[str] = field(default_factory=list)
    max_grade: int = 4


def prepare(
    data: pd.DataFrame,
    exposure,
    *,
    kind: str,
    outcome: str | None = None,
    time: str | None = None,
    event: str | None = None,
    covariates: Sequence[str] = (),
    exposure_ids=None,
    id_column: str = "ID",
    max_grade: int = 4,
) -> Prepared:
    """Validate the outcome table and the exposures; see :func:`bayespk.response.fit_response`.

    Raises
    ------
    DataError
        A column is missing, an ID repeats, an outcome or covariate is missing
        or breaks its rule (0/1 response, integer grade in 0..max_grade, time
        > 0, event 0/1), a subject has no exposure, or an exposure is not a
        finite number > 0.
    SpecError
        An option is malformed (unknown kind, outcome column not named).
    """
    if kind not in KINDS:
        raise SpecError(f"kind={kind!r}: expected one of {', '.join(KINDS)}")
    if not isinstance(data, pd.DataFrame):
        raise SpecError(
            f"data must be a pandas DataFrame with one row per subject, got {type(data).__name__}"
        )
    if isinstance(covariates, str):
        covariates = [covariates]
    covariates = list(covariates)
    if kind == "tte":
        if time is None or event is None:
            raise SpecError("kind='tte' needs time= and event= (the time and event indicator columns)")
        needed = [time, event]
    else:
        if outcome is None:
            raise SpecError(
                f"kind={kind!r} needs outcome= (the column holding the "
                f"{'response (0/1)' if kind == 'binary' else 'grade'})"
            )
        needed = [outcome]
    for col in [id_column, *needed, *covariates]:
        if col not in data.columns:
            raise DataError(
                f"column {col}: not in the outcome table (columns: {', '.join(map(str, data.columns))})"
            )
    if len(set(covariates)) != len(covariates) or set(covariates) & set(needed):
        raise SpecError(f"covariates {covariates}: each column once, and not an outcome column")
    table = data.reset_index(drop=True)
    if len(table) < 2:
        raise DataError(
            f"the outcome table has {len(table)} row(s); an exposure-response model needs subjects"
        )
    sid = table[id_column]
    for k in range(len(table)):
        if pd.isna(sid.iloc[k]):
            raise DataError(f"row {k + 1}, column {id_column}: missing subject ID")
    dup = sid.duplicated()
    if dup.any():
        k = int(np.flatnonzero(dup.to_numpy())[0])
        first = int(np.flatnonzero((sid == sid.iloc[k]).to_numpy())[0])
        raise DataError(
            f"row {k + 1}, column {id_column}: ID {_label(sid.iloc[k])} appears again (first at row "
            f"{first + 1}); give one row per subject"
        )
    ids = sid.to_numpy()

    def numbers(col: str) -> np.ndarray:
        raw = table[col]
        num = pd.to_numeric(raw, errors="coerce").to_numpy(float)
        for k in range(len(table)):
            if pd.isna(raw.iloc[k]):
                raise DataError(
                    f"{_where(k, ids, col)}: missing value; every subject needs one "
                    "(drop subjects without an assessment from the table, and say so)"
                )
            if not np.isfinite(num[k]):
                raise DataError(f"{_where(k, ids, col)}: {raw.iloc[k]!r} is not a finite number")
        return num

    y = t = ev = None
    notes: list[str] = []
    if kind == "binary":
        y = numbers(outcome)
        bad = np.flatnonzero(~np.isin(y, (0.0, 1.0)))
        if bad.size:
            raise DataError(
                f"{_where(bad[0], ids, outcome)}: {y[bad[0]]:g} is not 0 or 1; code a response as 1 "
                "and no response as 0"
            )
        if np.unique(y).size < 2:
            raise DataError(
                f"column {outcome}: every subject has {y[0]:g}; a response model needs both "
                "responders and non-responders"
            )
        y = y.astype("int64")
    elif kind == "ordinal":
        if isinstance(max_grade, bool) or not isinstance(max_grade, (int, np.integer)) or max_grade < 1:
            raise SpecError(f"max_grade must be a whole number >= 1, got {max_grade!r}")
        y = numbers(outcome)
        for k in range(len(y)):
            if y[k] != np.round(y[k]):
                raise DataError(
                    f"{_where(k, ids, outcome)}: grade {y[k]:g} is not an integer; grades are "
                    f"0, 1, ..., {max_grade}"
                )
            if not 0 <= y[k] <= max_grade:
                raise DataError(f"{_where(k, ids, outcome)}: grade {y[k]:g} is outside 0-{max_grade}")
        y = y.astype("int64")
        if np.unique(y).size < 2:
            raise DataError(
                f"column {outcome}: every subject has grade {y[0]}; an ordinal model needs at least "
                "two different grades"
            )
    else:
        t = numbers(time)
        bad = np.flatnonzero(t <= 0)
        if bad.size:
            raise DataError(
                f"{_where(bad[0], ids, time)}: time {t[bad[0]]:g} is not > 0; times to event are "
                "counted from the infusion and must be positive (an event on day 0 is an error in "
                "the data, or give it a small positive time and say so)"
            )
        ev = numbers(event)
        bad = np.flatnonzero(~np.isin(ev, (0.0, 1.0)))
        if bad.size:
            raise DataError(f"{_where(bad[0], ids, event)}: {ev[bad[0]]:g} is not 0 (censored) or 1 (event)")
        if ev.sum() == 0:
            raise DataError(f"column {event}: no subject has an event; the hazard cannot be estimated")
        ev = ev.astype("int64")
    Z = np.column_stack([numbers(c) for c in covariates]) if covariates else np.zeros((len(table), 0))
    for j, c in enumerate(covariates):
        if np.ptp(Z[:, j]) == 0:
            raise DataError(
                f"column {c}: every subject has {Z[0, j]:g}; a constant covariate has no effect to "
                "estimate (drop it)"
            )
    log_x, more = exposure_draws(exposure, ids, table=table, exposure_ids=exposure_ids)
    notes += more
    return Prepared(kind, ids, log_x, y, t, ev, Z, covariates, notes, max_grade)


def exposure_draws(
    exposure, ids: np.ndarray, *, table: pd.DataFrame | None = None, exposure_ids=None
) -> tuple[np.ndarray, list[str]]:
    """log10 exposures of the subjects ``ids`` as an array (n_draws, n_subjects), and notes.

    Parameters
    ----------
    exposure : str, Series, mapping, ndarray or DataArray
        A column of ``table`` (point values); a Series indexed by ID or a
        mapping {ID: value} (point values); an array of shape (n_subjects,) or
        (n_draws, n_subjects) whose last axis follows ``exposure_ids``; or a
        DataArray with dims ("ID",), ("draw", "ID") or ("chain", "draw", "ID")
        (chain and draw are stacked).
    ids : ndarray
        The subjects whose exposures are wanted, in order.
    table : DataFrame, optional
        The outcome table (for a column name).
    exposure_ids : sequence, optional
        The ID of each position on an array's last axis (required for arrays).
    """
    notes: list[str] = []
    if isinstance(exposure, str):
        if table is None or exposure not in table.columns:
            raise DataError(f"exposure={exposure!r}: no such column in the outcome table")
        raw = table[exposure]
        values = pd.to_numeric(raw, errors="coerce").to_numpy(float)
        for k in range(len(values)):
            if not np.isfinite(values[k]):
                raise DataError(
                    f"{_where(k, ids, exposure)}: exposure {raw.iloc[k]!r} is not a finite number"
                )
        return _log10(values[None, :], ids, draws=False), notes
    if isinstance(exposure, xr.DataArray):
        da = exposure
        id_dim = next((d for d in da.dims if str(d).upper() == "ID"), None)
        if id_dim is None:
            raise SpecError(
                f"exposure DataArray has dims {da.dims}; expected ('draw', 'ID') (or ('ID',), or "
                "('chain', 'draw', 'ID'))"
            )
        other = [d for d in da.dims if d != id_dim]
        if set(other) - {"chain", "draw", "sample"}:
            raise SpecError(
                f"exposure DataArray has dims {da.dims}; the dims other than ID must be chain/draw"
            )
        src_ids = np.asarray(da[id_dim].values) if id_dim in da.coords else None
        if src_ids is None:
            raise SpecError(
                "exposure DataArray has no ID coordinate; label the subjects (da.assign_coords(ID=...))"
            )
        arr = (
            da.transpose(*other, id_dim).values.reshape(-1, da.sizes[id_dim]) if other else da.values[None, :]
        )
        draws = bool(other)
    elif isinstance(exposure, pd.Series):
        src_ids, arr, draws = exposure.index.to_numpy(), exposure.to_numpy(float)[None, :], False
    elif isinstance(exposure, Mapping):
        src_ids, arr, draws = (
            np.array(list(exposure)),
            np.array(list(exposure.values()), float)[None, :],
            False,
        )
    else:
        try:
            arr = np.asarray(exposure, dtype=float)
        except (TypeError, ValueError):
            raise SpecError(
                f"exposure of type {type(exposure).__name__}: expected a column name, a Series or "
                "mapping {ID: value}, an array (n_draws, n_subjects) with exposure_ids, or a "
                "DataArray with dims (draw, ID)"
            ) from None
        if arr.ndim not in (1, 2):
            raise SpecError(
                f"exposure array has shape {arr.shape}; expected (n_subjects,) or (n_draws, n_subjects)"
            )
        draws = arr.ndim == 2
        arr = np.atleast_2d(arr)
        if exposure_ids is None:
            raise SpecError(
                "exposure is an array: give exposure_ids, the ID of each column (the order of the CK "
                "fit's subjects)"
            )
        src_ids = np.asarray(exposure_ids)
        if src_ids.ndim != 1 or len(src_ids) != arr.shape[1]:
            raise SpecError(
                f"exposure_ids has {src_ids.size} IDs but the exposure array has {arr.shape[1]} "
                "subjects (columns)"
            )
    src = pd.Index(src_ids)
    if src.has_duplicates:
        raise DataError(f"exposure: ID {_label(src[src.duplicated()][0])} appears twice among the exposures")
    pos = src.get_indexer(pd.Index(ids))
    missing = [ids[k] for k in np.flatnonzero(pos < 0)]
    if missing:
        shown = ", ".join(_label(m) for m in missing[:10]) + (", ..." if len(missing) > 10 else "")
        raise DataError(
            f"exposure: no exposure for ID {shown} ({len(missing)} of the {len(ids)} subjects in the "
            "outcome table); give every subject an exposure, or drop those subjects from the table "
            "(IDs are matched by value: 7 and '7' differ)"
        )
    extra = len(src) - len(set(pos))
    if extra:
        notes.append(f"{extra} subject(s) with an exposure but no row in the outcome table were not used")
    return _log10(arr[:, pos], ids, draws=draws), notes


def _log10(arr: np.ndarray, ids: np.ndarray, *, draws: bool) -> np.ndarray:
    bad = ~np.isfinite(arr) | (arr <= 0)
    if bad.any():
        d, k = (int(v[0]) for v in np.nonzero(bad))
        at = f" (draw {d})" if draws else ""
        raise DataError(
            f"exposure of ID {_label(ids[k])}{at}: {arr[d, k]:g} is not a finite number > 0; the "
            "models use log10 exposure, so every exposure must be positive (check units, and "
            "impute exposures below the LLOQ explicitly)"
        )
    return np.log10(arr)


def _label(v) -> str:
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def _where(k: int, ids: np.ndarray, col: str) -> str:
    return f"row {k + 1} (ID {_label(ids[k])}), column {col}"
