"""Parameter recovery for the dosing and model features beyond the one-compartment oral model:
a two-compartment IV infusion study with BLQ data (M3 vs dropping the BLQ rows), an oral study
with an absorption lag and inter-occasion variability, and a direct Emax PK/PD study fitted
simultaneously and sequentially.

Every study is simulated with known truth: the concentrations come from bayespk's own
prediction path (``build_prediction`` with the typical values, omegas and standardized etas
fixed at known values drawn here with numpy), the PD response and the residual errors are
added with numpy. The checks are those of tests/recovery/test_recovery.py: 90% central posterior
intervals of the population parameters cover the truth (at most one miss in a group; none for
EMAX and EC50 of the sequential PD fit) and every truth lies inside its 99% interval. Convergence
is checked with the library's criteria (no divergences, R-hat <= 1.01 over every free variable)
plus a bulk ESS of at least 300 for every population parameter.
"""

from __future__ import annotations

import time

import arviz as az
import numpy as np
import pandas as pd
import pymc as pm
import pytest

import bayespk as bpk
from bayespk.model.population import PopulationModel

pytestmark = pytest.mark.slow

MAX_R_HAT = 1.01
MIN_ESS_BULK = 300


# ----------------------------------------------------------------------------- helpers

def true_predictions(spec: bpk.Spec, data: pd.DataFrame, values: dict) -> tuple[np.ndarray, np.ndarray]:
    """Row positions in ``data`` of the observations and their predictions (IPRED) with every
    free variable of the prediction model fixed: typical values, omegas, ``z_<P>`` / ``z_iov_<P>``."""
    model = PopulationModel(spec, data)
    pm_model, design = model.build_prediction()
    missing = {rv.name for rv in pm_model.free_RVs} - set(values)
    assert not missing, f"no true value for {missing}"
    fixed = pm.do(pm_model, {pm_model[k]: np.asarray(v, dtype=float) for k, v in values.items()})
    ipred = np.asarray(pm.draw(fixed["IPRED"]), dtype=float)
    rows = pd.Index(model.data.table.ROW).get_indexer(design.obs_row)
    assert (rows >= 0).all() and np.isfinite(ipred).all()
    return rows, ipred


def draws(fit, name: str) -> np.ndarray:
    return fit.posterior[name].values.reshape(-1)


def check_sampling(fit, label: str, extra: tuple[str, ...] = ()) -> None:
    """No divergences; R-hat of every free variable (etas too) <= 1.01; bulk ESS of the population
    parameters >= 300. ``extra``: free variables that Fit.diagnostics() does not cover."""
    diag = fit.diagnostics()
    table = fit.summary()
    print(f"{label}: {diag['wall_seconds']:.0f} s incl. compile {diag['compile_seconds']:.0f} s, "
          f"{diag['divergences']} divergences, max R-hat {diag['max_r_hat']:.4f} "
          f"({diag['max_r_hat_parameter']}), "
          f"min bulk ESS of the population parameters {table.ess_bulk.min():.0f} "
          f"({table.parameter[table.ess_bulk.idxmin()]})")
    assert diag["divergences"] == 0, f"{label}: {diag['divergences']} divergences"
    assert diag["max_r_hat"] <= MAX_R_HAT, \
        f"{label}: R-hat {diag['max_r_hat']:.4f} ({diag['max_r_hat_parameter']})"
    for name in extra:
        r_hat = float(az.rhat(fit.posterior[[name]])[name].max())
        assert r_hat <= MAX_R_HAT, f"{label}: R-hat {r_hat:.4f} ({name})"
    assert (table.r_hat <= MAX_R_HAT).all(), f"{label}:\n{table.to_string()}"
    assert (table.ess_bulk >= MIN_ESS_BULK).all(), f"{label}:\n{table.to_string()}"


def coverage(fit, truth: dict, label: str, max_misses: int = 1) -> list[str]:
    """90% intervals cover the truth (at most ``max_misses`` misses); 99% intervals all do."""
    lines, misses, outside99 = [], [], []
    for name, true in truth.items():
        x = draws(fit, name)
        lo, med, hi = np.quantile(x, [0.05, 0.5, 0.95])
        lo99, hi99 = np.quantile(x, [0.005, 0.995])
        inside = lo <= true <= hi
        lines.append(f"{label} {name:>13}: truth {true:<7g} median {med:<9.4g} 90% [{lo:.4g}, {hi:.4g}]"
                     f"{'' if inside else '  MISS'}")
        if not inside:
            misses.append(name)
        if not lo99 <= true <= hi99:
            outside99.append(name)
    report = "\n".join(lines)
    print(report)
    assert len(misses) <= max_misses, f"{label}: 90% intervals miss {misses}\n{report}"
    assert not outside99, f"{label}: truth outside the 99% interval of {outside99}\n{report}"
    return lines


# ----------------------------------------------------------------------------- 1. 2-cmt IV infusion, BLQ

INFUSION_TRUTH = {"CL": 5.0, "V1": 20.0, "Q": 10.0, "V2": 50.0, "omega_CL": 0.3, "omega_V1": 0.2,
                  "sigma_prop": 0.25}
INFUSION_TIMES = (0.5, 2.0, 11.9, 25.0, 48.0, 56.0, 64.0, 72.0)  # 11.9: trough before the 2nd dose
INFUSION_LLOQ = 0.8  # mg/L: about 20% of the samples, nearly all in the terminal phase


def infusion_spec(blq: str) -> bpk.Spec:
    return bpk.Spec.from_dict({
        "model": {"structure": "2cmt_iv"},
        "parameters": {"CL": {"guess": 4.0}, "V1": {"guess": 15.0}, "Q": {"guess": 8.0, "iiv": False},
                       "V2": {"guess": 40.0, "iiv": False}},
        "error": {"model": "proportional", "blq": blq},
    })  # fmt: skip


def infusion_study(seed: int, n: int = 40) -> pd.DataFrame:
    """500 mg as 1-h infusions every 12 h, three doses (one record, ADDL=2); 8 samples over 72 h;
    proportional error; values below the LLOQ flagged BLQ=1 with DV missing."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(1, n + 1):
        rows.append(dict(ID=i, TIME=0.0, AMT=500.0, DV=np.nan, EVID=1, MDV=1, CMT=1, RATE=500.0, II=12.0,
                         ADDL=2))
        rows += [dict(ID=i, TIME=t, AMT=np.nan, DV=1.0, EVID=0, MDV=0, CMT=1, RATE=0.0, II=0.0, ADDL=0)
                 for t in INFUSION_TIMES]
    data = pd.DataFrame(rows)
    truth = {k: v for k, v in INFUSION_TRUTH.items() if k != "sigma_prop"}
    z = {"z_CL": rng.standard_normal(n), "z_V1": rng.standard_normal(n)}
    obs, ipred = true_predictions(infusion_spec("M3"), data, truth | z)
    dv = ipred * (1 + INFUSION_TRUTH["sigma_prop"] * rng.standard_normal(len(ipred)))
    blq = np.zeros(len(data), dtype=int)
    blq[obs] = dv < INFUSION_LLOQ
    data.loc[obs, "DV"] = dv
    data["BLQ"] = blq
    data["LLOQ"] = np.where(data.EVID == 0, INFUSION_LLOQ, np.nan)
    data.loc[blq == 1, "DV"] = np.nan
    return data


def terminal_half_life(cl, v1, q, v2):
    """ln 2 / beta, beta the smaller root of the two-compartment disposition."""
    k10, k12, k21 = cl / v1, q / v1, q / v2
    a = k10 + k12 + k21
    return np.log(2) / ((a - np.sqrt(a * a - 4 * k10 * k21)) / 2)


def test_2cmt_infusion_with_blq_m3_recovers_truth_and_dropping_blq_biases_terminal_phase():
    data = infusion_study(seed=1)
    obs = data[data.EVID == 0]
    frac_blq = obs.BLQ.mean()
    assert 0.15 <= frac_blq <= 0.25, frac_blq
    assert obs.BLQ[obs.TIME < 48].mean() < 0.05  # censoring is a terminal-phase matter here

    t0 = time.perf_counter()
    m3 = bpk.fit(bpk.PopulationModel(infusion_spec("M3"), data), seed=11, draws=2000, tune=2000, progress=False)
    check_sampling(m3, "M3")
    coverage(m3, {k: INFUSION_TRUTH[k] for k in ("CL", "V1", "Q", "V2", "sigma_prop")}, "M3")

    drop_model = bpk.PopulationModel(infusion_spec("drop"), data)
    assert drop_model.design.n_obs == int((obs.BLQ == 0).sum())
    drop = bpk.fit(drop_model, seed=11, draws=2000, tune=2000, progress=False)
    check_sampling(drop, "drop")
    print(f"BLQ fraction {frac_blq:.3f}; both fits {time.perf_counter() - t0:.0f} s")

    # Ignoring the BLQ rows keeps only the high values late after the last dose: the terminal
    # phase looks slower (V2 up, CL down), and the terminal half-life is overestimated.
    true_half = terminal_half_life(*(INFUSION_TRUTH[k] for k in ("CL", "V1", "Q", "V2")))
    half = {label: terminal_half_life(*(draws(f, k) for k in ("CL", "V1", "Q", "V2")))
            for label, f in (("M3", m3), ("drop", drop))}
    q = {label: np.quantile(h, [0.05, 0.5, 0.95]) for label, h in half.items()}
    report = "\n".join(f"{label} t1/2 beta: truth {true_half:.2f} h, median {v[1]:.2f}, "
                       f"90% [{v[0]:.2f}, {v[2]:.2f}]" for label, v in q.items())
    for k in ("CL", "V2"):
        report += f"\n{k}: truth {INFUSION_TRUTH[k]:g}, median M3 {np.median(draws(m3, k)):.4g}, " \
                  f"drop {np.median(draws(drop, k)):.4g}"
    print(report)
    assert q["M3"][0] <= true_half <= q["M3"][2], report
    assert abs(q["M3"][1] - true_half) < abs(q["drop"][1] - true_half), report
    assert true_half < q["drop"][0], report  # the truth lies below the drop fit's 90% interval
    assert np.median(draws(drop, "V2")) > np.median(draws(m3, "V2")), report
    assert np.median(draws(drop, "CL")) < np.median(draws(m3, "CL")), report


# ----------------------------------------------------------------------------- 2. oral, lag time, IOV

LAG_TRUTH = {"CL": 3.0, "V": 30.0, "KA": 1.5, "TLAG": 0.5, "omega_CL": 0.3, "omega_V": 0.2, "omega_KA": 0.3,
             "omega_iov_CL": 0.2, "sigma_prop": 0.15}
LAG_TIMES = (0.75, 1.25, 2.0, 3.0, 5.0, 8.0, 12.0, 24.0)  # after each occasion's dose
OCCASION_START = (0.0, 168.0, 336.0)  # a week apart: complete washout (t1/2 about 7 h)


def lag_spec() -> bpk.Spec:
    return bpk.Spec.from_dict({
        "model": {"structure": "1cmt_oral"},
        "parameters": {"CL": {"guess": 2.5, "iov": True}, "V": {"guess": 25.0}, "KA": {"guess": 1.0},
                       "TLAG": {"guess": 0.4, "iiv": False}},
        "error": {"model": "proportional"},
    })  # fmt: skip


def lag_study(seed: int, n: int = 30) -> pd.DataFrame:
    """300 mg orally on each of three occasions (OCC 1, 2, 3) a week apart, 8 samples per occasion."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(1, n + 1):
        for occ, start in enumerate(OCCASION_START, start=1):
            rows.append(dict(ID=i, TIME=start, AMT=300.0, DV=np.nan, EVID=1, MDV=1, CMT=1, OCC=occ))
            rows += [dict(ID=i, TIME=start + t, AMT=np.nan, DV=1.0, EVID=0, MDV=0, CMT=2, OCC=occ)
                     for t in LAG_TIMES]
    data = pd.DataFrame(rows)
    truth = {k: v for k, v in LAG_TRUTH.items() if k != "sigma_prop"}
    z = {f"z_{p}": rng.standard_normal(n) for p in ("CL", "V", "KA")}
    z["z_iov_CL"] = rng.standard_normal(n * len(OCCASION_START))  # occasions in order of appearance
    obs, ipred = true_predictions(lag_spec(), data, truth | z)
    data.loc[obs, "DV"] = ipred * (1 + LAG_TRUTH["sigma_prop"] * rng.standard_normal(len(ipred)))
    return data


def test_oral_lag_time_and_inter_occasion_variability_recovered():
    data = lag_study(seed=2)
    model = bpk.PopulationModel(lag_spec(), data)
    assert len(model.coords["occasion"]) == 30 * len(OCCASION_START)
    fit = bpk.fit(model, seed=12, draws=1000, tune=1000, progress=False)
    check_sampling(fit, "lag/IOV", extra=("z_iov_CL",))  # the occasion effects are not in diagnostics()
    checked = ("CL", "V", "KA", "TLAG", "omega_CL", "omega_iov_CL")
    coverage(fit, {k: LAG_TRUTH[k] for k in checked}, "lag/IOV")
    # both sources of variability are found: neither SD is pushed to zero
    assert np.quantile(draws(fit, "omega_iov_CL"), 0.05) > 0.1
    assert np.quantile(draws(fit, "omega_CL"), 0.05) > 0.05


# ----------------------------------------------------------------------------- 3. Emax PK/PD

PKPD_PK_TRUTH = {"CL": 2.0, "V": 20.0, "KA": 1.0, "omega_CL": 0.3, "omega_V": 0.2, "omega_KA": 0.3,
                 "sigma_prop": 0.15}
PKPD_PD_TRUTH = {"E0": 10.0, "EMAX": 40.0, "EC50": 2.0, "omega_E0": 0.2, "omega_EC50": 0.3,
                 "pd_sigma_add": 2.0}
PKPD_DOSES = (20.0, 60.0, 200.0, 600.0)  # Cmax about 0.4, 1.2, 4 and 12 times EC50
PKPD_TIMES = (0.5, 1.0, 2.0, 4.0, 8.0, 12.0, 24.0)
PK_PARAMETERS = {"CL": {"guess": 1.5}, "V": {"guess": 15.0}, "KA": {"guess": 0.7}}


def pk_spec() -> bpk.Spec:
    return bpk.Spec.from_dict({"model": {"structure": "1cmt_oral"}, "parameters": PK_PARAMETERS,
                               "error": {"model": "proportional"}})


def pkpd_spec() -> bpk.Spec:
    pd_parameters = {"E0": {"guess": 8.0}, "EMAX": {"guess": 30.0, "iiv": False}, "EC50": {"guess": 3.0}}
    return bpk.Spec.from_dict({
        "model": {"structure": "1cmt_oral", "pd": "emax", "pd_observations": {"column": "DVID", "value": 2}},
        "parameters": PK_PARAMETERS | pd_parameters,
        "error": {"model": "proportional"},
        "pd_error": {"model": "additive"},
    })  # fmt: skip


def pkpd_study(seed: int, n: int = 30) -> tuple[pd.DataFrame, np.ndarray]:
    """One oral dose per subject, four dose levels; PK (DVID 1) at 7 times, PD (DVID 2) at baseline
    and the same 7 times. E = E0_i + EMAX C / (EC50_i + C) + additive error, computed here.
    Returns the data and the true concentrations at the PD observations."""
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(1, n + 1):
        rows.append(dict(ID=i, TIME=0.0, AMT=PKPD_DOSES[(i - 1) % len(PKPD_DOSES)], DV=np.nan, EVID=1, MDV=1,
                         CMT=1, DVID=1))
        rows.append(dict(ID=i, TIME=0.0, AMT=np.nan, DV=1.0, EVID=0, MDV=0, CMT=2, DVID=2))
        for t in PKPD_TIMES:
            rows.append(dict(ID=i, TIME=t, AMT=np.nan, DV=1.0, EVID=0, MDV=0, CMT=2, DVID=1))
            rows.append(dict(ID=i, TIME=t, AMT=np.nan, DV=1.0, EVID=0, MDV=0, CMT=2, DVID=2))
    data = pd.DataFrame(rows)
    pk_rows = data[data.DVID == 1].reset_index(drop=True)
    truth = {k: v for k, v in PKPD_PK_TRUTH.items() if k != "sigma_prop"}
    z = {f"z_{p}": rng.standard_normal(n) for p in ("CL", "V", "KA")}
    obs, conc = true_predictions(pk_spec(), pk_rows, truth | z)
    pk_obs = (data.EVID == 0) & (data.DVID == 1)
    data.loc[pk_obs, "DV"] = conc * (1 + PKPD_PK_TRUTH["sigma_prop"] * rng.standard_normal(len(conc)))
    # PD at the true individual concentrations (0 at baseline)
    c_at = dict(zip(zip(pk_rows.ID.to_numpy()[obs], pk_rows.TIME.to_numpy()[obs]), conc))
    pd_obs = (data.EVID == 0) & (data.DVID == 2)
    c = np.array([c_at.get((i, t), 0.0) for i, t in zip(data.ID[pd_obs], data.TIME[pd_obs])])
    k = data.ID[pd_obs].to_numpy() - 1
    t = PKPD_PD_TRUTH
    e0 = t["E0"] * np.exp(t["omega_E0"] * rng.standard_normal(n))
    ec50 = t["EC50"] * np.exp(t["omega_EC50"] * rng.standard_normal(n))
    effect = e0[k] + t["EMAX"] * c / (ec50[k] + c)
    data.loc[pd_obs, "DV"] = effect + t["pd_sigma_add"] * rng.standard_normal(len(effect))
    return data, c


def test_emax_pkpd_simultaneous_and_sequential_recover_truth():
    data, c = pkpd_study(seed=3)
    ec50 = PKPD_PD_TRUTH["EC50"]
    assert 0.3 < (c[c > 0] < ec50).mean() < 0.7 and np.quantile(c, 0.9) > 4 * ec50  # the curve is spanned
    pd_truth = {k: PKPD_PD_TRUTH[k] for k in ("E0", "EMAX", "EC50")}
    pk_truth = {k: PKPD_PK_TRUTH[k] for k in ("CL", "V", "KA")}

    simultaneous = bpk.fit(bpk.PopulationModel(pkpd_spec(), data), seed=13, draws=2000, tune=1000, progress=False)
    check_sampling(simultaneous, "PK/PD simultaneous")
    coverage(simultaneous, pd_truth | pk_truth, "simultaneous")

    pk_fit = bpk.fit(bpk.PopulationModel(pk_spec(), data[data.DVID == 1]), seed=13, draws=2000, tune=1000,
                                                                      progress=False)
    check_sampling(pk_fit, "PK alone")
    coverage(pk_fit, pk_truth, "PK alone")
    sequential = bpk.fit(bpk.PopulationModel(pkpd_spec(), data, pk_fit=pk_fit), seed=13, draws=1000, tune=1000,
                                                                            progress=False)
    check_sampling(sequential, "PD sequential")
    assert "CL" not in sequential.posterior  # the PK is fixed at the PK fit's posterior medians
    coverage(sequential, {k: PKPD_PD_TRUTH[k] for k in ("EMAX", "EC50")}, "sequential", max_misses=0)
