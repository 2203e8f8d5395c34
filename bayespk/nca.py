"""Non-compartmental analysis (NCA) of observed concentrations, and model-based exposures beside it.

:func:`nca` computes, per subject, Cmax, Tmax, Clast, Tlast, AUC0-t (AUClast),
AUC0-inf, the terminal slope lambda_z (with the points it used), t1/2,
CL/F and Vz/F from a NONMEM-style dataset. :func:`exposure_table` computes
Cmax, Tmax and the AUCs of a fitted model's predictions per subject (posterior
median and interval), and :func:`compare_exposures` sets the two side by side.

Conventions (those of PKNCA and Phoenix WinNonlin, unless said otherwise)
-------------------------------------------------------------------------
Dose and interval
    Each subject is analysed as a single dose: its first dose (or, with
    ``dose_time``, its last dose at or before that time; ADDL repeats count as
    doses). Observations from that dose's time up to and including the time of
    the next dose (an observation at the next dose's time is taken as its
    pre-dose trough) enter the analysis; later ones are ignored. For a subject
    with one dose this is the whole profile. For a multiple-dose subject the
    result describes the first dosing interval only: AUC0-inf is the single-dose
    extrapolation ``AUClast + Clast/lambda_z``, meaningful only when the
    interval reaches the terminal phase (few repeated-dose designs do; see
    ``interval_end`` and ``lambda_z_n_points``). Several dose records at the
    same time are summed into one dose. All times reported (Tmax, Tlast, the
    lambda_z points) are times after the analysed dose.
Concentration at the dose time
    An observation at the dose time is used as observed (Theoph's pre-dose
    values are not zero). Without one: 0 for an extravascular dose or an
    infusion that is the subject's first dose; for an IV bolus, the log-linear
    back-extrapolation of the first two observations when they decline and are
    both positive, else the first positive observation (WinNonlin's rule). The
    value used is reported as ``C0``; it enters AUC but not Cmax/Tmax.
    ``route="auto"`` decides the route per subject from the dose record: RATE
    > 0 is an infusion; a dose into the compartment that is observed (CMT equal
    on dose and observations) is an IV bolus; a dose into another compartment,
    or a missing CMT, is extravascular. Give ``route`` to override.
BLQ (CENS = 1 / BLQ = 1)
    ``"zero-before-tmax-drop-after"`` (default): a BLQ value before Tmax (of the
    quantified values) counts as 0, one after Tmax is dropped (so Tlast is the
    last quantified time and a BLQ value between quantified ones is bridged).
    ``"zero"``: every BLQ value counts as 0. ``"drop"``: every BLQ value is
    dropped. A right-censored value (CENS = -1) is used at its limit (DV).
    Observations with MDV = 1 are not used.
AUC
    ``"linear-up-log-down"`` (default): the log trapezoid on a segment where the
    concentration falls and both ends are > 0, else the linear trapezoid
    (exact for an exponential decline). ``"linear"``: linear trapezoids only.
    AUC0_t (AUClast) runs from the dose time to Tlast, the time of the last
    concentration > 0. AUC0_inf = AUC0_t + Clast / lambda_z with the observed
    Clast; AUC_pct_extrap = 100 (AUC0_inf - AUC0_t) / AUC0_inf.
    ``AUC_extrap_over_20`` is True where AUC_pct_extrap > 20 (usual NCA
    practice, e.g. EMA/FDA bioequivalence guidance): AUC0_inf, and CL_over_F
    and Vz_over_F from it, then rest mostly on the extrapolation and are
    unreliable; ``note`` says so. The values are still reported.
lambda_z
    ``"auto"``: log-linear least-squares fits to the last n positive
    concentrations after Tmax (Tmax itself excluded, zeros excluded), for every
    n >= ``min_points``; among the fits with lambda_z > 0 whose adjusted R^2 is
    within ``adj_r2_tol`` of the best adjusted R^2 of all fits, the one with the
    most points (PKNCA; WinNonlin's "best fit"). No such fit: NaN, with the
    reason. An int n: the last n such points. A mapping {ID: (t_first, t_last)}:
    the positive concentrations with time after dose in that closed range
    (manual selection, Tmax allowed; at least 2 points; subjects not in the
    mapping get "auto"). None: not estimated.
Derived
    t_half = ln 2 / lambda_z; CL_over_F = dose / AUC0_inf; Vz_over_F = dose /
    (lambda_z AUC0_inf). For an IV dose F = 1, so these are CL and Vz.
    lambda_z_span_ratio = (lambda_z_t_last - lambda_z_t_first) / t_half (PKNCA
    flags < 2). Quantities that cannot be computed are NaN and ``reason`` says
    why; it is empty when everything was computed.
"""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from bayespk.data.nonmem import Dataset, read_nonmem
from bayespk.data.nonmem import id_label as _label
from bayespk.errors import BayesPKError, DataError

__all__ = ["EXPOSURES", "NCA_COLUMNS", "compare_exposures", "exposure_table", "nca"]

BLQ_RULES = ("zero-before-tmax-drop-after", "zero", "drop")
AUC_METHODS = ("linear-up-log-down", "linear")
ROUTES = ("auto", "extravascular", "iv-bolus", "iv-infusion")
NCA_COLUMNS = [
    "ID", "dose", "dose_time", "interval_end", "route", "n_obs", "C0",
    "Cmax", "Tmax", "Clast", "Tlast", "AUC0_t", "AUC0_inf", "AUC_pct_extrap", "AUC_extrap_over_20",
    "lambda_z", "lambda_z_n_points", "lambda_z_t_first", "lambda_z_t_last", "lambda_z_r2",
    "lambda_z_adj_r2", "lambda_z_span_ratio", "t_half", "CL_over_F", "Vz_over_F", "reason", "note",
]  # fmt: skip
EXPOSURES = ("Cmax", "Tmax", "AUC0_t", "AUC0_inf")
MAX_PCT_EXTRAP = 20.0  # AUC_pct_extrap above this flags AUC0_inf as unreliable


# ---------------------------------------------------------------------- observed NCA
def nca(
    data,
    *,
    dose_time: float | None = None,
    lambda_z="auto",
    min_points: int = 3,
    adj_r2_tol: float = 1e-4,
    blq: str = "zero-before-tmax-drop-after",
    auc_method: str = "linear-up-log-down",
    route: str = "auto",
) -> pd.DataFrame:
    """Non-compartmental analysis of each subject's observed profile after a single dose.

    Parameters
    ----------
    data : Dataset, DataFrame or path
        A NONMEM-style dataset (see :func:`~bayespk.data.nonmem.read_nonmem`).
    dose_time : float, optional
        Analyse each subject's last dose at or before this time (default: its first dose).
    lambda_z : "auto", int, mapping or None
        Terminal-slope point selection (see the module notes): ``"auto"`` (best
        adjusted R^2, most points within ``adj_r2_tol``), the last n points,
        ``{ID: (t_first, t_last)}`` in time after dose, or None (not estimated).
    min_points : int
        Fewest points of an automatic lambda_z fit (>= 3).
    adj_r2_tol : float
        Adjusted-R^2 tolerance within which the fit with more points is preferred.
    blq : {"zero-before-tmax-drop-after", "zero", "drop"}
    auc_method : {"linear-up-log-down", "linear"}
    route : {"auto", "extravascular", "iv-bolus", "iv-infusion"}
        How the concentration at the dose time is filled in when not observed.

    Returns
    -------
    pandas.DataFrame
        One row per subject, columns :data:`NCA_COLUMNS`: ``ID, dose, dose_time,
        interval_end`` (time of the next dose, NaN for none), ``route, n_obs``
        (observations used), ``C0, Cmax, Tmax, Clast, Tlast, AUC0_t`` (AUClast),
        ``AUC0_inf, AUC_pct_extrap, AUC_extrap_over_20`` (True where
        AUC_pct_extrap > 20: AUC0_inf unreliable), ``lambda_z, lambda_z_n_points,
        lambda_z_t_first, lambda_z_t_last, lambda_z_r2, lambda_z_adj_r2,
        lambda_z_span_ratio, t_half, CL_over_F, Vz_over_F, reason`` (why a
        value is NaN), ``note`` (a warning on values computed, e.g. the
        extrapolated fraction). ``ID`` is the dataset's ID, as written.

    Examples
    --------
    >>> import bayespk as bpk
    >>> from bayespk.nca import nca
    >>> t = nca(bpk.datasets.load("theophylline"))
    >>> round(float(t.set_index("ID").loc[1, "AUC0_inf"]), 2)
    214.92
    """
    rows = _analyse(
        data,
        dose_time=dose_time,
        lambda_z=lambda_z,
        min_points=min_points,
        adj_r2_tol=adj_r2_tol,
        blq=blq,
        auc_method=auc_method,
        route=route,
    )
    table = pd.DataFrame([{k: r[k] for k in NCA_COLUMNS} for r in rows], columns=NCA_COLUMNS)
    table["AUC_extrap_over_20"] = table["AUC_extrap_over_20"].astype(bool)
    if rows and all(isinstance(r["ID"], (int, np.integer)) for r in rows):
        table["ID"] = table["ID"].astype(np.int64)  # never through float: IDs as written
    return table


def _analyse(data, *, dose_time, lambda_z, min_points, adj_r2_tol, blq, auc_method, route) -> list[dict]:
    """One dict per subject: the NCA_COLUMNS plus ``_t_first`` (first observation used, absolute time)."""
    if blq not in BLQ_RULES:
        raise BayesPKError(f"blq={blq!r}: expected one of {', '.join(BLQ_RULES)}")
    if auc_method not in AUC_METHODS:
        raise BayesPKError(f"auc_method={auc_method!r}: expected one of {', '.join(AUC_METHODS)}")
    if route not in ROUTES:
        raise BayesPKError(f"route={route!r}: expected one of {', '.join(ROUTES)}")
    if isinstance(min_points, bool) or not isinstance(min_points, (int, np.integer)) or min_points < 3:
        raise BayesPKError(
            f"min_points must be a whole number >= 3 (adjusted R^2 needs 3 points), got {min_points!r}"
        )
    if not (isinstance(adj_r2_tol, (int, float)) and adj_r2_tol >= 0):
        raise BayesPKError(f"adj_r2_tol must be a number >= 0, got {adj_r2_tol!r}")
    if dose_time is not None and (isinstance(dose_time, bool) or not isinstance(dose_time, (int, float, np.number))
                                  or not math.isfinite(dose_time)):
        raise BayesPKError(f"dose_time must be a finite number (a time in the data's units), got {dose_time!r}")
    if not (
        lambda_z is None
        or lambda_z == "auto"
        or isinstance(lambda_z, Mapping)
        or (isinstance(lambda_z, (int, np.integer)) and not isinstance(lambda_z, bool) and lambda_z >= 2)
    ):
        raise BayesPKError(
            f"lambda_z={lambda_z!r}: expected 'auto', a number of points >= 2, "
            "a mapping {ID: (t_first, t_last)} or None"
        )
    ds = _dataset(data)
    t = ds.table
    obs_all = t[(t.EVID == 0) & (t.MDV == 0)]
    doses_all = _expand_doses(ds.doses)
    rows = []
    for sid in ds.subject_ids:
        choice = lambda_z
        if isinstance(lambda_z, Mapping):
            choice = lambda_z.get(sid, "auto")
            if choice != "auto":
                try:
                    lo, hi = (float(x) for x in choice)
                except (TypeError, ValueError):
                    raise BayesPKError(
                        f"lambda_z[{_label(sid)}] = {choice!r}: expected (t_first, t_last)"
                    ) from None
                choice = (lo, hi)
        rows.append(
            _subject(
                sid,
                obs_all[obs_all.ID == sid],
                doses_all[doses_all.ID == sid],
                dose_time=dose_time,
                lambda_z=choice,
                min_points=min_points,
                adj_r2_tol=adj_r2_tol,
                blq=blq,
                auc_method=auc_method,
                route=route,
            )
        )
    return rows


def _dataset(data) -> Dataset:
    if isinstance(data, Dataset):
        return data
    if isinstance(data, pd.DataFrame):
        return read_nonmem(data.drop(columns=[c for c in data.columns if str(c).upper() == "ROW"]))
    if isinstance(data, (str, Path)):
        return read_nonmem(Path(data))
    raise BayesPKError(f"nca needs a Dataset, a DataFrame or a CSV path, got {type(data).__name__}")


def _expand_doses(doses: pd.DataFrame) -> pd.DataFrame:
    """One row per administered dose (ADDL repeats expanded): ID, TIME, AMT, RATE, CMT."""
    n = doses.ADDL.to_numpy(dtype=int) + 1  # column by column: a row as a Series would turn IDs into floats
    k = np.concatenate([np.arange(m) for m in n]) if len(n) else np.zeros(0, int)
    out = pd.DataFrame({c: np.repeat(doses[c].to_numpy(), n) for c in ("ID", "TIME", "AMT", "RATE", "CMT")})
    out["TIME"] = out.TIME.to_numpy(dtype=float) + np.repeat(doses.II.to_numpy(dtype=float), n) * k
    return out.sort_values(["ID", "TIME"], kind="stable")


def _empty(sid) -> dict:
    row = dict.fromkeys(NCA_COLUMNS, np.nan)
    row.update(ID=sid, route="", n_obs=0, lambda_z_n_points=0, reason="", note="", AUC_extrap_over_20=False,
               _t_first=np.nan)
    return row


def _subject(sid, obs, doses, *, dose_time, lambda_z, min_points, adj_r2_tol, blq, auc_method, route) -> dict:
    row = _empty(sid)
    reasons: list[str] = []

    def done(why: str | None = None) -> dict:
        if why:
            reasons.append(why)
        row["reason"] = "; ".join(reasons)
        return row

    if doses.empty:
        return done("no dose record")
    first_dose = float(doses.TIME.iloc[0])
    if dose_time is None:
        t_dose = first_dose
    else:
        before = doses.TIME[doses.TIME <= dose_time]
        if before.empty:
            return done(f"no dose at or before dose_time {dose_time:g}")
        t_dose = float(before.iloc[-1])
    at = doses[doses.TIME == t_dose]
    later = doses.TIME[doses.TIME > t_dose]
    t_end = float(later.iloc[0]) if not later.empty else np.nan
    row.update(dose=float(at.AMT.sum()), dose_time=t_dose, interval_end=t_end)

    obs_cmt = obs.CMT.dropna()
    if route == "auto":
        dose_cmt = at.CMT.iloc[0]
        if (at.RATE > 0).any():
            use_route = "iv-infusion"
        elif pd.notna(dose_cmt) and len(obs_cmt) and (obs_cmt == dose_cmt).all():
            use_route = "iv-bolus"
        else:
            use_route = "extravascular"
    else:
        use_route = route
    row["route"] = use_route

    keep = obs.TIME >= t_dose
    if not math.isnan(t_end):
        keep &= obs.TIME <= t_end
    o = obs[keep]
    if o.empty:
        span = f"[{t_dose:g}, {t_end:g}]" if not math.isnan(t_end) else f"at or after {t_dose:g}"
        return done(f"no observation in the analysed interval (TIME {span})")
    row["_t_first"] = float(o.TIME.iloc[0])
    tad = o.TIME.to_numpy(float) - t_dose
    dup = np.r_[False, np.diff(tad) == 0]
    if dup.any():
        r = o.iloc[int(np.argmax(dup))]
        raise DataError(
            f"row {int(r.ROW)}, column TIME: ID {_label(sid)} has two observations at TIME {r.TIME:g}; "
            "NCA needs one concentration per time (average or drop replicates first)"
        )
    cens = o.CENS.to_numpy()
    conc = np.where(cens == 1, np.nan, o.DV.to_numpy(float))  # BLQ: decided below
    quant = cens != 1
    if not quant.any() or not (conc[quant] > 0).any():
        return done("no quantifiable concentration after the dose")
    tmax_q = tad[quant][int(np.argmax(conc[quant]))]
    if blq == "zero":
        use = np.ones(len(tad), bool)
        conc = np.where(quant, conc, 0.0)
    elif blq == "drop":
        use = quant
    else:
        use = quant | (tad < tmax_q)
        conc = np.where(quant, conc, 0.0)
    tad, conc = tad[use], conc[use]
    row["n_obs"] = len(tad)

    i_max = int(np.argmax(conc))  # first occurrence
    cmax, tmax = float(conc[i_max]), float(tad[i_max])
    pos = np.flatnonzero(conc > 0)
    i_last = int(pos[-1])
    row.update(Cmax=cmax, Tmax=tmax, Clast=float(conc[i_last]), Tlast=float(tad[i_last]))

    # concentration at the dose time
    if tad[0] == 0:
        c0 = float(conc[0])
    elif use_route == "iv-bolus":
        c0 = _back_extrapolate(tad, conc)
    elif t_dose == first_dose:
        c0 = 0.0
    else:
        c0 = np.nan
    row["C0"] = c0
    if math.isnan(c0):
        reasons.append("AUC: no observation at the dose time of a later dose (C0 unknown)")
        auc_t = np.nan
    else:
        tt, cc = (tad, conc) if tad[0] == 0 else (np.r_[0.0, tad], np.r_[c0, conc])
        upto = tt <= row["Tlast"]
        auc_t = float(_auc_segments(tt[upto], cc[upto], auc_method).sum())
    row["AUC0_t"] = auc_t

    # terminal slope
    if lambda_z is None:
        return done("lambda_z not requested")
    fit = _lambda_z(tad, conc, tmax, row["Tlast"], lambda_z, min_points, adj_r2_tol, reasons)
    if fit is None:
        return done()
    lz, n, t1, t2, r2, adj = fit
    row.update(
        lambda_z=lz,
        lambda_z_n_points=n,
        lambda_z_t_first=t1,
        lambda_z_t_last=t2,
        lambda_z_r2=r2,
        lambda_z_adj_r2=adj,
        t_half=math.log(2) / lz,
    )
    row["lambda_z_span_ratio"] = (t2 - t1) / row["t_half"]
    auc_inf = auc_t + row["Clast"] / lz
    row["AUC0_inf"] = auc_inf
    if np.isfinite(auc_inf) and auc_inf > 0:
        row["AUC_pct_extrap"] = 100.0 * (auc_inf - auc_t) / auc_inf
        if row["AUC_pct_extrap"] > MAX_PCT_EXTRAP:
            row["AUC_extrap_over_20"] = True
            row["note"] = (f"AUC_pct_extrap {row['AUC_pct_extrap']:.1f}% > {MAX_PCT_EXTRAP:g}%: AUC0_inf (and "
                           "CL_over_F, Vz_over_F) rest mostly on the extrapolation, unreliable")
        row["CL_over_F"] = row["dose"] / auc_inf
        row["Vz_over_F"] = row["dose"] / (lz * auc_inf)
    return done()


def _back_extrapolate(tad: np.ndarray, conc: np.ndarray) -> float:
    """C at an IV bolus's dose time: log-linear from the first two values if they fall, else the first > 0."""
    if len(conc) >= 2 and conc[0] > conc[1] > 0:
        slope = (math.log(conc[1]) - math.log(conc[0])) / (tad[1] - tad[0])
        return float(math.exp(math.log(conc[0]) - slope * tad[0]))
    positive = conc[conc > 0]
    return float(positive[0]) if len(positive) else np.nan


def _auc_segments(t: np.ndarray, c: np.ndarray, method: str) -> np.ndarray:
    """AUC of each segment between consecutive points (along the last axis)."""
    dt = np.diff(t, axis=-1)
    c1, c2 = c[..., :-1], c[..., 1:]
    linear = dt * (c1 + c2) / 2.0
    if method == "linear":
        return linear
    down = (c2 < c1) & (c2 > 0)
    with np.errstate(divide="ignore", invalid="ignore"):
        # (c1 - c2) / ln(c1/c2), with ln(c1/c2) = log1p((c1 - c2)/c2): accurate when c1 ~ c2
        log = dt * (c1 - c2) / np.log1p((c1 - c2) / c2)
    return np.where(down, log, linear)


def _regress(t: np.ndarray, y: np.ndarray) -> tuple[float, float, float]:
    """Least-squares slope of y on t, R^2 and adjusted R^2 (NaN for fewer than 3 points)."""
    n = len(t)
    tc, yc = t - t.mean(), y - y.mean()
    slope = float((tc * yc).sum() / (tc * tc).sum())
    ss_tot = float((yc * yc).sum())
    ss_res = float(((yc - slope * tc) ** 2).sum())
    r2 = 1.0 - ss_res / ss_tot if ss_tot > 0 else np.nan
    adj = 1.0 - (1.0 - r2) * (n - 1) / (n - 2) if n > 2 else np.nan
    return slope, r2, adj


def _lambda_z(tad, conc, tmax, tlast, choice, min_points, tol, reasons):
    """(lambda_z, n, t_first, t_last, r2, adj_r2) or None (with the reason appended)."""
    if isinstance(choice, tuple):
        lo, hi = choice
        sel = (tad >= lo) & (tad <= hi) & (conc > 0)
        if sel.sum() < 2:
            reasons.append(
                f"lambda_z: fewer than 2 positive concentrations in the chosen range [{lo:g}, {hi:g}]"
            )
            return None
        slope, r2, adj = _regress(tad[sel], np.log(conc[sel]))
        if not slope < 0:
            reasons.append("lambda_z: the chosen points do not decline")
            return None
        return -slope, int(sel.sum()), float(tad[sel][0]), float(tad[sel][-1]), r2, adj
    after = (tad > tmax) & (tad <= tlast) & (conc > 0)
    t, y = tad[after], np.log(conc[after])
    need = min_points if choice == "auto" else int(choice)
    if len(t) < need:
        reasons.append(
            f"lambda_z: {len(t)} positive concentration{'s' if len(t) != 1 else ''} after Tmax, {need} needed"
        )
        return None
    if choice != "auto":
        slope, r2, adj = _regress(t[-need:], y[-need:])
        if not slope < 0:
            reasons.append(f"lambda_z: the last {need} points do not decline")
            return None
        return -slope, need, float(t[-need]), float(t[-1]), r2, adj
    fits = []
    for n in range(min_points, len(t) + 1):
        slope, r2, adj = _regress(t[-n:], y[-n:])
        fits.append((n, -slope, r2, adj))
    adjs = np.array([f[3] for f in fits], dtype=float)
    if np.isnan(adjs).all():
        reasons.append("lambda_z: the terminal concentrations are all equal")
        return None
    best = np.nanmax(adjs)
    ok = [f for f in fits if f[1] > 0 and not math.isnan(f[3]) and f[3] >= best - tol]
    if not ok:
        reasons.append(
            "lambda_z: no declining terminal phase (the best-fitting terminal points do not decline)"
        )
        return None
    n, lz, r2, adj = max(ok, key=lambda f: f[0])
    return lz, n, float(t[-n]), float(t[-1]), r2, adj




# ---------------------------------------------------------------------- model-based exposures
def exposure_table(
    fit,
    *,
    ids=None,
    prediction: str = "IPRED",
    draws: int | None = 200,
    interval: float = 0.9,
    n_grid: int = 400,
    seed: int = 0,
    **nca_options,
) -> pd.DataFrame:
    """Model-based Cmax, Tmax, AUC0_t and AUC0_inf per subject: posterior median and interval.

    The windows are those of :func:`nca` on the fit's own records (same
    ``nca_options``: ``dose_time``, ``blq``, ``route``, ...), so each quantity
    compares with its NCA counterpart: per posterior draw the prediction
    (``IPRED``, or ``PRED`` for the typical subject with the subject's
    covariates) is evaluated on a fine time grid (``n_grid`` points over the
    analysed windows, plus each subject's dose time, first observation and
    Tlast); Cmax/Tmax are the maximum and its time after dose between the
    subject's first observation and Tlast (the sampled window); AUC0_t runs from
    the dose time to the NCA Tlast; AUC0_inf (single-dose subjects only; NaN
    when a next dose follows) integrates the prediction to 4 x Tlast after the
    dose and adds C/k from the log-slope of its last two grid points. AUCs use
    ``auc_method`` (default linear-up/log-down) on the grid. Subjects whose NCA
    has no Tlast (no dose, nothing quantified) get NaN with the NCA reason.

    Returns
    -------
    pandas.DataFrame
        ``ID`` and, for each of Cmax, Tmax, AUC0_t, AUC0_inf, the columns
        ``<q>_median``, ``<q>_lower``, ``<q>_upper`` (the central ``interval``),
        then ``reason``.
    """
    if prediction not in ("IPRED", "PRED"):
        raise BayesPKError(f"prediction={prediction!r}: expected 'IPRED' or 'PRED'")
    if not 0 < interval < 1:
        raise BayesPKError(f"interval must be between 0 and 1, got {interval}")
    if n_grid < 10:
        raise BayesPKError(f"n_grid must be >= 10, got {n_grid}")
    options = {
        "dose_time": None,
        "lambda_z": None,
        "min_points": 3,
        "adj_r2_tol": 1e-4,
        "blq": "zero-before-tmax-drop-after",
        "auc_method": "linear-up-log-down",
        "route": "auto",
    } | nca_options
    rows = _analyse(_fit_records(fit), **options)
    if ids is not None:
        wanted = set(ids)
        rows = [r for r in rows if r["ID"] in wanted]
        missing = wanted - {r["ID"] for r in rows}
        if missing:
            raise BayesPKError(
                f"ids: no subject {', '.join(map(_label, sorted(missing, key=str)))} in the fit"
            )
    ok = [r for r in rows if not math.isnan(r["Tlast"]) and not math.isnan(r["AUC0_t"])]
    cols = [f"{q}_{s}" for q in EXPOSURES for s in ("median", "lower", "upper")]
    out = []
    if ok:
        starts = np.array([r["dose_time"] for r in ok])
        lasts = starts + np.array([r["Tlast"] for r in ok])
        tails = starts + 4 * (lasts - starts)
        single = np.array([math.isnan(r["interval_end"]) for r in ok])
        hi = lasts.max()
        tail_hi = tails[single].max() if single.any() else hi
        grid = np.unique(
            np.r_[
                np.linspace(starts.min(), hi, n_grid),
                np.linspace(hi, tail_hi, max(n_grid // 4, 2)),
                starts,
                lasts,
                tails[single],
                [r["_t_first"] for r in ok],
            ]
        )
        pred = fit.predict(grid=grid, draws=draws, seed=seed, ids=[r["ID"] for r in ok])
        values = pred[prediction].stack(sample=("chain", "draw")).transpose("obs", "sample").values
        pid, ptime = pred["ID"].values, pred["TIME"].values
    lo, hi_q = (1 - interval) / 2, 1 - (1 - interval) / 2
    by_id = {r["ID"]: i for i, r in enumerate(ok)}
    for r in rows:
        res = {"ID": r["ID"]} | dict.fromkeys(cols, np.nan)
        if r["ID"] not in by_id:
            res["reason"] = r["reason"] or "no AUC0_t from NCA"
            out.append(res)
            continue
        k = by_id[r["ID"]]
        sel = pid == r["ID"]
        tt, cc = ptime[sel], values[sel].T  # (sample, time)
        t0, t_first, t_last = r["dose_time"], r["_t_first"], r["dose_time"] + r["Tlast"]
        win = (tt >= t_first - 1e-9) & (tt <= t_last + 1e-9)
        i = np.argmax(cc[:, win], axis=1)
        per = {"Cmax": cc[:, win][np.arange(len(i)), i], "Tmax": tt[win][i] - t0}
        a = (tt >= t0) & (tt <= t_last + 1e-9)
        per["AUC0_t"] = _auc_segments(tt[a], cc[:, a], options["auc_method"]).sum(axis=1)
        if single[k]:
            b = (tt >= t0) & (tt <= tails[k] + 1e-9)
            tb, cb = tt[b], cc[:, b]
            with np.errstate(divide="ignore", invalid="ignore"):
                kz = -(np.log(cb[:, -1]) - np.log(cb[:, -2])) / (tb[-1] - tb[-2])
                tail = np.where(kz > 0, cb[:, -1] / kz, np.nan)
            per["AUC0_inf"] = _auc_segments(tb, cb, options["auc_method"]).sum(axis=1) + tail
        else:
            per["AUC0_inf"] = np.full(cc.shape[0], np.nan)
        for q, v in per.items():
            v = v[np.isfinite(v)]
            if len(v) * 2 >= cc.shape[0]:  # a majority of draws usable
                res[f"{q}_lower"], res[f"{q}_median"], res[f"{q}_upper"] = np.quantile(v, [lo, 0.5, hi_q])
        res["reason"] = "" if single[k] else "AUC0_inf: a next dose follows in the data"
        out.append(res)
    return pd.DataFrame(out, columns=["ID", *cols, "reason"])


def _fit_records(fit) -> Dataset:
    records = fit.tree["records"].to_dataset().to_dataframe().reset_index(drop=True)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        data = read_nonmem(records.drop(columns="ROW"))
    data.table["ROW"] = records["ROW"].to_numpy()
    return data


def compare_exposures(
    nca_table: pd.DataFrame, model_table: pd.DataFrame, quantities=EXPOSURES
) -> pd.DataFrame:
    """Observed (NCA) and model-based exposures side by side, one row per subject and quantity.

    Parameters
    ----------
    nca_table : DataFrame from :func:`nca`
    model_table : DataFrame from :func:`exposure_table`
    quantities : names among Cmax, Tmax, AUC0_t, AUC0_inf

    Returns
    -------
    pandas.DataFrame
        ``ID, quantity, nca, model_median, model_lower, model_upper, ratio``
        (model median / NCA) and ``nca_in_interval`` (the NCA value lies within
        the model's interval), ordered by quantity then subject; subjects in
        only one table are left out.
    """
    for q in quantities:
        if q not in EXPOSURES:
            raise BayesPKError(f"quantity {q!r}: expected among {', '.join(EXPOSURES)}")
        if q not in nca_table.columns or f"{q}_median" not in model_table.columns:
            raise BayesPKError(
                f"quantity {q}: the tables lack it (use the outputs of nca() and exposure_table())"
            )
    merged = nca_table.merge(model_table, on="ID", how="inner", suffixes=("", "_model"))
    parts = []
    for q in quantities:
        obs, med = merged[q].astype(float), merged[f"{q}_median"].astype(float)
        lower, upper = merged[f"{q}_lower"].astype(float), merged[f"{q}_upper"].astype(float)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = med / obs.where(obs != 0)
        parts.append(pd.DataFrame({
            "ID": merged.ID, "quantity": q, "nca": obs, "model_median": med, "model_lower": lower,
            "model_upper": upper, "ratio": ratio, "nca_in_interval": (obs >= lower) & (obs <= upper),
        }))  # fmt: skip
    return pd.concat(parts, ignore_index=True)
