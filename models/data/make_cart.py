"""Generate ``cart_simulated.csv`` (+ ``cart_simulated_patients.csv``): a CAR-T study with known truth.

100 patients from :func:`bayespk.simulate.cohort.simulate_cart_cohort` with its
defaults (seed 2026): tisagenlecleucel-like piecewise kinetics (Stein et al.
2019 typical values), tumor burden (TB, blasts %) and fludarabine AUC (FLUAUC)
raising CMAX (power 0.35 and 0.8), tocilizumab at CRS grade >= 2 and
corticosteroids at CRS >= 3 / ICANS >= 2 with no effect on expansion (1.0),
qPCR (ASSAY 1, LLOQ 35 copies/ug, log SD 0.56) to two years and flow cytometry
(ASSAY 2, CAR+ cells/uL = 0.004 x copies/ug, LLOQ 0.5, log SD 0.35) to day 28.
The patient table holds CRS/ICANS grades, month-3 response and PFS.

``cart_lag_simulated.csv``: 80 patients with lisocabtagene-like kinetics (the lag
model of Ogasawara et al. 2021: flat for TLAG 3.27 d, expansion over TEXP 6.0 d,
i.e. Tmax 9.3 d, FX 250 (doubling time 0.755 d), contraction half-life 5 d,
persistence half-life 352 d, FB 0.02, CMAX 20000 copies/ug), same covariate,
treatment and assay settings, seed 2027. Run from the repository root:

    .venv/bin/python models/data/make_cart.py
"""

from pathlib import Path

from bayespk.simulate.cohort import simulate_cart_cohort

HERE = Path(__file__).resolve().parent

LAG_TYPICAL = {"CMAX": 20000.0, "FX": 250.0, "TLAG": 3.27, "TEXP": 6.0, "ALPHA": 0.1386, "FB": 0.02,
               "BETA": 0.00197}
LAG_OMEGA = {"CMAX": 0.9, "FX": 0.4, "TLAG": 0.3, "TEXP": 0.25, "ALPHA": 0.4, "FB": 0.6, "BETA": 0.4}

if __name__ == "__main__":
    cohort = simulate_cart_cohort(100, seed=2026)
    cohort.data.to_csv(HERE / "cart_simulated.csv", index=False, na_rep=".")
    cohort.patients.to_csv(HERE / "cart_simulated_patients.csv", index=False, na_rep=".", float_format="%.6g")
    print(f"{len(cohort.data)} records, {cohort.data.ID.nunique()} patients; "
          f"qPCR BLQ after day 90: {cohort.blq_fraction():.0%}")
    lag = simulate_cart_cohort(80, structure="cart_lag", typical=LAG_TYPICAL, omega=LAG_OMEGA, seed=2027)
    lag.data.to_csv(HERE / "cart_lag_simulated.csv", index=False, na_rep=".")
    print(f"lag model: {len(lag.data)} records; qPCR BLQ after day 90: {lag.blq_fraction():.0%}")
