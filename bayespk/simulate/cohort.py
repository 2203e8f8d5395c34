"""Virtual CAR-T cohorts with known truth: cellular kinetics, CRS/ICANS, treatments, response.

:func:`simulate_cart_cohort` draws a study the way one is run: baseline
covariates (tumor burden, fludarabine exposure, dose, weight, age), each
patient's kinetics from the piecewise model of
:mod:`bayespk.structural.cart` with log-normal IIV (logit-normal for ``FB``)
and covariate effects, cytokine release syndrome (CRS) and ICANS grades that
rise with the patient's expansion and tumor burden, tocilizumab given at the
onset of CRS grade >= 2 and corticosteroids for CRS grade >= 3 or ICANS grade
>= 2 (so, as in real studies, treatment follows high expansion), their
multipliers on the expansion rate from the first administration, a realistic
sampling schedule with qPCR and flow cytometry assays, each with its LLOQ and
log-normal error, dropout, month-3 response and progression-free survival.

It returns the NONMEM-style dataset (days; one infusion record at TIME 0,
``EVID 2`` records with ``TOCI = 1`` / ``CORT = 1`` at administrations,
``ASSAY`` 1 = qPCR copies/ug, 2 = flow CAR+ cells/uL, ``BLQ``/``LLOQ``), a
per-patient table of outcomes and true values, and the population truth under
the names a spec uses (``CMAX``, ``omega_CMAX``, ``CMAX_TB``, ``rho_TOCI``,
``sigma_log[1]``...). The kinetics are evaluated by the same closed form the
model fits.

Defaults: typical kinetics of tisagenlecleucel in pediatric and young-adult
B-ALL (Stein et al. 2019, CPT Pharmacometrics Syst Pharmacol 8:285, as re-encoded in
nlmixr2lib);
covariate effects, outcome models and assay settings are illustrative.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from bayespk.errors import SpecError
from bayespk.model.spec import CovariateSpec
from bayespk.structural.cart import CELL_KINETICS, NO_ONSET

__all__ = ["CartCohort", "simulate_cart_cohort", "SCHEDULE_DAYS", "FLOW_DAYS"]

#: qPCR sampling days (infusion day 0 at 1 h, then to two years).
SCHEDULE_DAYS = (0.04, 1, 4, 7, 10, 14, 21, 28, 60, 90, 180, 270, 365, 545, 730)
#: Flow cytometry days (CAR+ cells are countable in blood during expansion only).
FLOW_DAYS = (7, 10, 14, 21, 28)

TYPICAL = {"CMAX": 24000.0, "FX": 3900.0, "TMAX": 9.3, "ALPHA": 0.16, "FB": 0.0079, "BETA": 0.0032}
OMEGA = {"CMAX": 0.9, "FX": 0.4, "TMAX": 0.25, "ALPHA": 0.4, "FB": 0.6, "BETA": 0.4}
#: (parameter, column) -> (effect, reference, coefficient); the spec's [[covariates]] in miniature.
EFFECTS = {("CMAX", "TB"): ("power", 20.0, 0.35), ("CMAX", "FLUAUC"): ("power", 14.0, 0.8)}


@dataclass
class CartCohort:
    """A simulated CAR-T study.

    ``data``: NONMEM-style records; ``patients``: one row per patient with
    covariates, true individual parameters (``CMAX_I``, ``FX_I``...), true
    exposures with the treatment effects (``CMAX_TRUE``, ``TMAX_TRUE``,
    ``AUC28_TRUE``, from day 0 to 28), CRS/ICANS grades and onset days, treatment
    days, response (``RESP``), ``PFS`` (days) and ``PFS_EVENT``;
    ``truth``: population values keyed as in a spec's posterior.
    """

    data: pd.DataFrame
    patients: pd.DataFrame
    truth: dict[str, float] = field(default_factory=dict)

    def blq_fraction(self, after: float = 90.0, assay: int = 1) -> float:
        """Share of the assay's samples taken after day ``after`` that are BLQ."""
        d = self.data
        rows = (d.EVID == 0) & (d.TIME > after) & (d.ASSAY == assay)
        return float(d.BLQ[rows].mean())


def _factor(effect: str, x: np.ndarray, ref: float, theta: float) -> np.ndarray:
    if effect not in ("power", "exponential", "linear"):
        raise SpecError(f"effects: {effect!r} is not power, exponential or linear")
    return np.exp(CovariateSpec("", "", effect, ref, theta).log_factor(x, theta))


def _ordinal(rng, latent: np.ndarray, cutpoints) -> np.ndarray:
    """Cumulative-logit grades: P(grade >= k) = logistic(latent - c_k)."""
    u = rng.logistic(size=len(latent))
    return (latent[:, None] + u[:, None] > np.asarray(cutpoints)[None, :]).sum(axis=1)


def simulate_cart_cohort(
    n: int = 100,
    *,
    structure: str = "cart_piecewise",
    typical: dict | None = None,
    omega: dict | None = None,
    effects: dict | None = None,
    toci_effect: float = 1.0,
    cort_effect: float = 1.0,
    sigma_qpcr: float = 0.56,
    sigma_flow: float = 0.35,
    flow_scale: float = 0.004,
    lloq_qpcr: float = 35.0,
    lloq_flow: float = 0.5,
    schedule=SCHEDULE_DAYS,
    flow_days=FLOW_DAYS,
    dropout_per_year: float = 0.25,
    crs_slope: float = 1.2,
    crs_tb_slope: float = 0.6,
    crs_cutpoints=(-1.0, 0.8, 2.2, 3.6),
    icans_slope: float = 1.0,
    icans_cutpoints=(0.6, 1.8, 3.0, 4.4),
    response_intercept: float = 0.9,
    response_slope: float = 1.0,
    pfs_shape: float = 0.9,
    pfs_median: float = 300.0,
    pfs_hr_per_10fold: float = 0.5,
    seed: int = 0,
) -> CartCohort:
    """Simulate a CAR-T cellular-kinetics study with known truth.

    Parameters
    ----------
    n : int
        Number of patients.
    structure : {"cart_piecewise", "cart_lag"}
        The kinetics; ``cart_lag`` needs ``TLAG`` and ``TEXP`` in ``typical``
        (and ``omega``) instead of ``TMAX``.
    typical, omega : dict
        Typical values and IIV SDs (log scale; logit scale for ``FB``) of the
        structure's parameters; default: Stein et al. (2019) values and
        moderate IIV.
    effects : dict
        ``{(parameter, column): (effect, reference, coefficient)}`` with
        ``effect`` power or exponential, for the covariates ``TB`` (tumor
        burden, bone-marrow blasts %), ``FLUAUC`` (fludarabine AUC, mg*h/L),
        ``DOSE`` (1e6 CAR+ cells/kg), ``WT``, ``AGE``. Default: tumor burden
        and fludarabine exposure raise ``CMAX``.
    toci_effect, cort_effect : float
        Multipliers of the expansion rate from the first tocilizumab /
        corticosteroid administration (1 = no effect, as estimated by Stein).
    sigma_qpcr, sigma_flow : float
        Log-scale residual SDs of the two assays.
    flow_scale : float
        CAR+ cells/uL per transgene copy/ug (flow = scale x qPCR level).
    lloq_qpcr, lloq_flow : float
        Limits of quantification; values below are flagged ``BLQ = 1``.
    schedule, flow_days : sequence of float
        Sampling days of qPCR and of flow cytometry.
    dropout_per_year : float
        Rate of leaving the study (exponential; no samples after it).
    crs_slope, crs_tb_slope, crs_cutpoints : float, float, 4 floats
        CRS grade: cumulative logit on ``log(Cmax / typical CMAX)`` and
        ``log(TB / 20)``; onset day log-normal around day 3.
    icans_slope, icans_cutpoints
        ICANS grade on ``log(Cmax / typical CMAX)``; onset around day 6.
    response_intercept, response_slope : float
        Month-3 response: logit P = intercept + slope * log(AUC0-28 / median).
    pfs_shape, pfs_median, pfs_hr_per_10fold : float
        Weibull progression-free survival (days) with proportional hazards,
        HR per 10-fold AUC0-28; censored at dropout or the last sample day.
    seed : int
    """
    rng = np.random.default_rng(seed)
    if structure not in CELL_KINETICS:
        raise SpecError(f"structure: {structure!r} is not one of {', '.join(CELL_KINETICS)}")
    kin = CELL_KINETICS[structure]
    typical = dict(TYPICAL if typical is None else typical)
    omega = dict(OMEGA if omega is None else omega)
    effects = dict(EFFECTS if effects is None else effects)
    missing = [p for p in kin.parameters if p not in typical or p not in omega]
    if missing:
        raise SpecError(f"typical/omega: {structure} needs values for {', '.join(kin.parameters)}; "
                        f"missing {', '.join(missing)}")

    # baseline covariates
    cov = pd.DataFrame({
        "ID": np.arange(1, n + 1),
        "TB": np.clip(rng.lognormal(np.log(20.0), 1.0, n), 0.5, 99.0).round(1),
        "FLUAUC": np.clip(rng.normal(14.0, 4.0, n), 4.0, 30.0).round(2),
        "DOSE": np.clip(rng.lognormal(np.log(1.5), 0.6, n), 0.2, 5.0).round(2),
        "WT": np.clip(rng.normal(55.0, 20.0, n), 12.0, 120.0).round(1),
        "AGE": rng.integers(3, 26, n),
    })  # fmt: skip
    for (p, col), _ in effects.items():
        if p not in kin.parameters or col not in cov.columns:
            raise SpecError(f"effects: ({p!r}, {col!r}) needs a parameter of {structure} and one of the "
                            f"columns {', '.join(cov.columns[1:])}")

    # individual parameters
    params = {}
    for p in kin.parameters:
        z = omega[p] * rng.standard_normal(n)
        if p in kin.unit_parameters:
            logit = np.log(typical[p]) - np.log1p(-typical[p])
            link = logit + sum(np.log(_factor(e, cov[c].to_numpy(float), ref, th))
                               for (q, c), (e, ref, th) in effects.items() if q == p)
            params[p] = 1.0 / (1.0 + np.exp(-(link + z)))
        else:
            factor = np.prod([_factor(e, cov[c].to_numpy(float), ref, th)
                              for (q, c), (e, ref, th) in effects.items() if q == p], axis=0)
            params[p] = typical[p] * factor * np.exp(z)
    peak = kin.peak_time(params)

    # safety events: driven by the untreated expansion (treatment follows them)
    log_cmax = np.log(params["CMAX"] / typical["CMAX"])
    crs = _ordinal(rng, crs_slope * log_cmax + crs_tb_slope * np.log(cov.TB.to_numpy() / 20.0), crs_cutpoints)
    icans = _ordinal(rng, icans_slope * log_cmax, icans_cutpoints)
    crs_day = np.where(crs > 0, np.round(np.clip(rng.lognormal(np.log(3.0), 0.4, n), 0.5, 12.0), 1), np.nan)
    icans_day = np.where(icans > 0, np.round(np.clip(rng.lognormal(np.log(6.0), 0.3, n), 1.0, 20.0), 1), np.nan)
    toci_day = np.where(crs >= 2, crs_day, np.nan)
    cort_candidates = np.vstack([np.where(crs >= 3, crs_day + 1.0, np.inf), np.where(icans >= 2, icans_day, np.inf)])
    cort_day = np.min(cort_candidates, axis=0)
    cort_day = np.where(np.isfinite(cort_day), cort_day, np.nan)
    onsets = [np.where(np.isnan(d), NO_ONSET, d) for d in (toci_day, cort_day)]

    def level(t, i):
        p = {k: v[i] for k, v in params.items()}
        return kin.level(np.asarray(t, float), p, [o[i] * np.ones_like(t) for o in onsets],
                         [toci_effect, cort_effect])

    # dropout and outcomes
    last_day = float(max(schedule))
    dropout = rng.exponential(365.0 / dropout_per_year, n) if dropout_per_year > 0 else np.full(n, np.inf)
    grid = np.linspace(0.0, 28.0, 561)
    true_curves = np.array([level(grid, i) for i in range(n)])
    auc28 = np.trapezoid(true_curves, grid, axis=1)
    cmax_true = true_curves.max(axis=1)
    tmax_true = grid[true_curves.argmax(axis=1)]
    log_auc = np.log(auc28 / np.median(auc28))
    resp = rng.random(n) < 1.0 / (1.0 + np.exp(-(response_intercept + response_slope * log_auc)))
    beta_10 = np.log(pfs_hr_per_10fold) / np.log(10.0)
    scale = pfs_median / np.log(2.0) ** (1.0 / pfs_shape)
    hazard_mult = np.exp(beta_10 * np.log(auc28 / np.median(auc28)))
    pfs_time = scale * (rng.exponential(size=n) / hazard_mult) ** (1.0 / pfs_shape)
    censor = np.minimum(dropout, last_day)
    pfs_event = (pfs_time <= censor).astype(int)
    pfs = np.round(np.minimum(pfs_time, censor), 1)
    pfs = np.maximum(pfs, 0.1)

    # records
    rows = []
    for i in range(n):
        base = cov.iloc[i].to_dict()
        ident = int(base.pop("ID"))
        amt = round(float(base["DOSE"] * base["WT"]), 3)  # 1e6 cells
        rows.append({"ID": ident, "TIME": 0.0, "AMT": amt, "DV": np.nan, "EVID": 1, "MDV": 1, "CMT": 1,
                     "ASSAY": np.nan, "BLQ": 0, "LLOQ": np.nan, "TOCI": 0, "CORT": 0, **base})
        stop = min(dropout[i], pfs[i] if pfs_event[i] else np.inf)
        for col, day in (("TOCI", toci_day[i]), ("CORT", cort_day[i])):
            if not np.isnan(day):
                rows.append({"ID": ident, "TIME": float(day), "AMT": np.nan, "DV": np.nan, "EVID": 2, "MDV": 1,
                             "CMT": 1, "ASSAY": np.nan, "BLQ": 0, "LLOQ": np.nan, "TOCI": int(col == "TOCI"),
                             "CORT": int(col == "CORT"), **base})
        samples = [(float(d), 1) for d in schedule if d <= stop] + [(float(d), 2) for d in flow_days if d <= stop]
        for day, assay in samples:
            f = level(np.array([day]), i)[0] * (flow_scale if assay == 2 else 1.0)
            sd, lloq = (sigma_flow, lloq_flow) if assay == 2 else (sigma_qpcr, lloq_qpcr)
            y = float(np.exp(np.log(f) + sd * rng.standard_normal()))
            blq = y < lloq
            rows.append({"ID": ident, "TIME": day, "AMT": np.nan, "DV": lloq if blq else float(f"{y:.5g}"),
                         "EVID": 0, "MDV": 0, "CMT": 1, "ASSAY": assay, "BLQ": int(blq), "LLOQ": lloq,
                         "TOCI": 0, "CORT": 0, **base})
    data = pd.DataFrame(rows)
    data = data.sort_values(["ID", "TIME", "EVID"], ascending=[True, True, False], kind="stable")
    data = data.reset_index(drop=True)

    patients = cov.assign(
        **{f"{p}_I": v for p, v in params.items()},
        CMAX_TRUE=cmax_true, TMAX_TRUE=tmax_true, AUC28_TRUE=auc28, PEAK_TIME=peak,
        CRS=crs, CRS_DAY=crs_day, ICANS=icans, ICANS_DAY=icans_day, TOCI_DAY=toci_day, CORT_DAY=cort_day,
        RESP=resp.astype(int), PFS=pfs, PFS_EVENT=pfs_event, DROPOUT=np.round(np.minimum(dropout, 1e6), 1),
    )  # fmt: skip
    truth = dict(typical)
    truth |= {f"omega_{p}": v for p, v in omega.items() if p in kin.parameters}
    truth |= {f"{p}_{c}": th for (p, c), (_, _, th) in effects.items()}
    truth |= {"rho_TOCI": toci_effect, "rho_CORT": cort_effect, "sigma_log[1]": sigma_qpcr,
              "sigma_log[2]": sigma_flow, "scale_ASSAY[2]": flow_scale}
    return CartCohort(data=data, patients=patients, truth=truth)
