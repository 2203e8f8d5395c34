"""Generate ``pkpd_emax_simulated.csv``: a PK/PD study simulated with known truth.

40 subjects in 4 dose groups (25, 75, 225, 675 mg) given once daily for 3 days
(ADDL=2, II=24) by mouth. One-compartment oral PK (CL 5 L/h, V 50 L, KA 1 /h;
IIV 30%, 20%, 30%; proportional error 15%) drives a direct Emax response
(E0 20, EMAX 80, EC50 3 mg/L; IIV 10% on E0, 30% on EC50; additive error 4).
PK rows have DVID 1, PD rows DVID 2 (same sampling times). Run from the repo root:

    .venv/bin/python models/data/make_pkpd_emax.py
"""

from pathlib import Path

import numpy as np
import pandas as pd

TRUTH = {"CL": 5.0, "V": 50.0, "KA": 1.0, "E0": 20.0, "EMAX": 80.0, "EC50": 3.0}
OMEGA = {"CL": 0.3, "V": 0.2, "KA": 0.3, "E0": 0.1, "EC50": 0.3}
SIGMA_PROP, SIGMA_PD = 0.15, 4.0
TIMES = [0.5, 1, 2, 4, 8, 24, 48.5, 50, 52, 56, 72]


def concentration(t, dose_times, amt, cl, v, ka):
    k = cl / v
    out = np.zeros_like(t, dtype=float)
    for td in dose_times:
        dt = t - td
        out += np.where(dt > 0, amt * ka / (v * (ka - k)) * (np.exp(-k * dt) - np.exp(-ka * dt)), 0.0)
    return out


def main(seed: int = 20261122) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    rows = []
    for i in range(40):
        amt = (25.0, 75.0, 225.0, 675.0)[i % 4]
        p = {k: v * np.exp(rng.normal(0.0, OMEGA.get(k, 0.0))) for k, v in TRUTH.items()}
        rows.append(dict(ID=i + 1, TIME=0.0, AMT=amt, DV=".", EVID=1, MDV=1, CMT=1, ADDL=2, II=24, DVID=0, DOSE=amt))
        t = np.array(TIMES, float)
        c = concentration(t, (0.0, 24.0, 48.0), amt, p["CL"], p["V"], p["KA"])
        e = p["E0"] + p["EMAX"] * c / (p["EC50"] + c)
        c_obs = c * (1.0 + SIGMA_PROP * rng.normal(size=len(t)))
        e_obs = e + SIGMA_PD * rng.normal(size=len(t))
        for tt, co, eo in zip(t, c_obs, e_obs):
            rows.append(dict(ID=i + 1, TIME=tt, AMT=".", DV=round(max(co, 1e-3), 4), EVID=0, MDV=0, CMT=2, ADDL=0,
                             II=0, DVID=1, DOSE=amt))
            rows.append(dict(ID=i + 1, TIME=tt, AMT=".", DV=round(eo, 3), EVID=0, MDV=0, CMT=2, ADDL=0, II=0,
                             DVID=2, DOSE=amt))
    return pd.DataFrame(rows)


if __name__ == "__main__":
    out = Path(__file__).with_name("pkpd_emax_simulated.csv")
    main().to_csv(out, index=False)
    print(f"wrote {out}")
