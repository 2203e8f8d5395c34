"""Fit benchmarks for bayespk: wall time, compile time, sampling efficiency, memory.

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_fit.py            # full run (several minutes)
    .venv/bin/python benchmarks/bench_fit.py --quick    # smoke run: 2 chains x 300 draws, 300 tune
    .venv/bin/python benchmarks/bench_fit.py --cases theophylline_nutpie --cold-cache
    .venv/bin/python benchmarks/bench_fit.py --cases idr_pkpd_nutpie   # ~35 min on 2 busy cores

A run of some cases merges into an existing ``fit.json``: their results are
replaced, the other cases' kept with the run record they came from (``--fresh``:
this run's cases only).

Every case runs in a fresh Python subprocess (this file with ``--case NAME``),
so nothing compiled by an earlier case is reused in memory, and the peak RSS
is that case's alone. The worker prints one ``BENCH_RESULT_JSON:`` line that
the driver reads back. Results go to ``benchmarks/results/fit.json`` and
``benchmarks/results/fit.md``; see ``benchmarks/README.md`` for how to read them.

Cases
-----
theophylline_nutpie   bundled theophylline spec (12 subjects), nutpie (the default sampler)
theophylline_pymc     the same model and seed with PyMC's own NUTS (``sampler="pymc"``)
sim500_nutpie         500 simulated subjects, 1-cmt oral, IIV on CL/V/KA, power WT effect
                      on CL (estimated), proportional error, 8 samples each; nutpie.
                      Also reports whether each population parameter's 90% interval
                      (q5..q95) covers the value it was simulated at.
sim200_2cmt_addl_nutpie
                      200 simulated subjects, 2-cmt IV, 250 mg as 1-h infusions every 12 h
                      for 14 doses given as ONE record per subject (ADDL=13, II=12, not
                      expanded rows); 7 samples per subject at jittered times, 3 after the
                      first dose and 4 around the last (steady state); IIV on CL/V1/V2,
                      power WT effect on CL (estimated), proportional error; nutpie;
                      90% coverage of the truth as for sim500.
idr_pkpd_nutpie       50 simulated subjects, 4 oral dose levels q24h x 3 (ADDL=2): 1-cmt oral
                      PK driving an indirect-response model type I (inhibition of
                      production; the PD ODE is integrated by bayespk's RK4,
                      bayespk/structural/ode.py), PK and PD fitted simultaneously; the PD
                      data are simulated here with scipy's solve_ivp; nutpie; 90% coverage.
idr_pkpd_ode_nutpie   the same study, priors and seed, the model written as equations with two
                      outputs (one ODE for depot, central and response, diffrax Tsit5 at
                      rtol 1e-4, nutpie's JAX backend): the RK4 path against the diffrax one.
"""

from __future__ import annotations

import argparse
import datetime as _dt
import hashlib
import itertools
import json
import math
import os
import platform
import resource
import shlex
import subprocess
import sys
import tempfile
import threading
import time
import warnings
from dataclasses import replace
from importlib import metadata
from pathlib import Path

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
RESULTS = HERE / "results"
MARKER = "BENCH_RESULT_JSON:"

FULL = {"chains": 4, "draws": 1000, "tune": 1000}
QUICK = {"chains": 2, "draws": 300, "tune": 300}

THEOPHYLLINE_SPEC = ROOT / "models" / "theophylline_1cmt_oral.toml"
THEOPHYLLINE_SEED = 20261122  # the seed in the bundled spec; both samplers use it

# ---------------------------------------------------------------- simulated study
SIM_SUBJECTS = 500
SIM_TIMES = [0.5, 1.0, 2.0, 4.0, 6.0, 8.0, 12.0, 24.0]
SIM_DOSE = 320.0  # mg, single oral dose
SIM_WT_REF = 70.0
SIM_DESIGN_SEED = 11
SIM_OBS_SEED = 12
SIM_FIT_SEED = 13
# Priors are centred on round guesses, deliberately not on the truth.
SIM_SPEC = {
    "name": "sim500_1cmt_oral_wt",
    "description": "500 simulated subjects, 1-cmt oral, IIV on CL/V/KA, power WT on CL, proportional error",
    "model": {"structure": "1cmt_oral"},
    "parameters": {
        "CL": {"guess": 2.0, "iiv": {"dist": "HalfNormal", "sigma": 0.5}},
        "V": {"guess": 25.0, "iiv": {"dist": "HalfNormal", "sigma": 0.5}},
        "KA": {"guess": 1.0, "iiv": {"dist": "HalfNormal", "sigma": 0.5}},
    },
    "covariates": [{"parameter": "CL", "column": "WT", "effect": "power", "reference": SIM_WT_REF}],
    "error": {"model": "proportional", "sigma_prop": {"dist": "HalfNormal", "sigma": 0.5}},
}
SIM_TRUTH = {
    "CL": 2.5, "V": 30.0, "KA": 1.2,
    "omega_CL": 0.3, "omega_V": 0.2, "omega_KA": 0.4,
    "CL_WT": 0.75,
    "sigma_prop": 0.15,
}  # fmt: skip

# ------------------------------------- simulated 2-cmt multiple-dose study (ADDL/II records)
ADDL_SUBJECTS = 200
ADDL_DOSE = 250.0  # mg per 1-h infusion
ADDL_INFUSION_H = 1.0
ADDL_N_DOSES, ADDL_II = 14, 12.0  # q12h for 7 days: ONE dose record per subject, ADDL = 13, II = 12
ADDL_LAST_DOSE = (ADDL_N_DOSES - 1) * ADDL_II  # 156 h
# Sampling windows (h after the first dose); each subject draws one time uniformly in each window.
# First interval: during/end of infusion, distribution phase, before the 2nd dose. Steady state
# (the terminal half-life is ~12 h, so after 13 doses the profile is within ~0.1% of steady state):
# trough before the last dose, just after its infusion, mid-interval, and one washout sample.
ADDL_WINDOWS = [(0.5, 1.0), (2.0, 4.0), (8.0, 11.75),
                (ADDL_LAST_DOSE - 0.5, ADDL_LAST_DOSE - 0.05), (ADDL_LAST_DOSE + 1.0, ADDL_LAST_DOSE + 2.0),
                (ADDL_LAST_DOSE + 4.0, ADDL_LAST_DOSE + 8.0), (ADDL_LAST_DOSE + 12.0, ADDL_LAST_DOSE + 24.0)]
ADDL_DESIGN_SEED = 21
ADDL_OBS_SEED = 22
ADDL_FIT_SEED = 23
ADDL_SPEC = {
    "name": "sim200_2cmt_iv_addl_wt",
    "description": "200 simulated subjects, 2-cmt IV infusion q12h x 14 (ADDL/II), IIV on CL/V1/V2, "
                   "power WT on CL, proportional error",
    "model": {"structure": "2cmt_iv"},
    "parameters": {
        "CL": {"guess": 4.0, "iiv": {"dist": "HalfNormal", "sigma": 0.5}},
        "V1": {"guess": 15.0, "iiv": {"dist": "HalfNormal", "sigma": 0.5}},
        "Q": {"guess": 8.0, "iiv": False},
        "V2": {"guess": 40.0, "iiv": {"dist": "HalfNormal", "sigma": 0.5}},
    },
    "covariates": [{"parameter": "CL", "column": "WT", "effect": "power", "reference": SIM_WT_REF}],
    "error": {"model": "proportional", "sigma_prop": {"dist": "HalfNormal", "sigma": 0.5}},
}
ADDL_TRUTH = {
    "CL": 5.0, "V1": 20.0, "Q": 10.0, "V2": 50.0,
    "omega_CL": 0.3, "omega_V1": 0.25, "omega_V2": 0.3,
    "CL_WT": 0.75,
    "sigma_prop": 0.15,
}  # fmt: skip

# ------------------------------------------------ simulated PK/PD study, indirect response I
IDR_SUBJECTS = 50
IDR_DOSES = (25.0, 75.0, 225.0, 675.0)  # mg by mouth, subject i gets IDR_DOSES[(i - 1) % 4]; Cmax ~0.4-10 x IC50
IDR_N_DOSES, IDR_II = 3, 24.0  # once daily for 3 days: one record, ADDL = 2, II = 24
IDR_PK_TIMES = (1.0, 3.0, 6.0, 12.0, 23.5, 49.0, 54.0, 71.5)
IDR_PD_TIMES = (0.0, 2.0, 4.0, 8.0, 12.0, 23.5, 36.0, 50.0, 54.0, 60.0, 66.0, 72.0)  # 0: baseline
# RK4 step 0.5 h instead of the default 0.25 h: a log-density + gradient costs ~7 ms instead of ~20
# on this study (quiet machine, 96 h design: 10 vs 26 ms). At the simulated values the RK4 response is
# then within 0.32 (median 7e-4; max relative 0.6%, at 2 h after 675 mg) of the solve_ivp one used to
# simulate, against a PD error SD of 5. The observations stop at 72 h (the ODE runs from 0 to the last
# PD observation).
IDR_ODE_STEP = 0.5
IDR_SEED = 31
IDR_FIT_SEED = 33
IDR_SPEC = {
    "name": "idr1_pkpd_simulated",
    "description": "50 simulated subjects, 1-cmt oral PK driving an indirect response model I "
                   "(inhibition of production), PK and PD fitted simultaneously",
    "model": {"structure": "1cmt_oral", "pd": "idr1", "pd_observations": {"column": "DVID", "value": 2},
              "ode_step": IDR_ODE_STEP},
    "parameters": {
        "CL": {"guess": 4.0}, "V": {"guess": 40.0}, "KA": {"guess": 0.7},
        "R0": {"guess": 80.0}, "KOUT": {"guess": 0.1},
        "IMAX": {"typical": {"dist": "Beta", "alpha": 2, "beta": 2}, "iiv": False},
        "IC50": {"guess": 2.0},
    },
    "error": {"model": "proportional", "sigma_prop": {"dist": "HalfNormal", "sigma": 0.5}},
    "pd_error": {"model": "additive", "sigma_add": {"dist": "HalfNormal", "sigma": 20.0}},
}  # fmt: skip
IDR_TRUTH = {
    "CL": 5.0, "V": 50.0, "KA": 1.0,
    "R0": 100.0, "KOUT": 0.2, "IMAX": 0.9, "IC50": 1.0,
    "omega_CL": 0.3, "omega_V": 0.2, "omega_KA": 0.3,
    "omega_R0": 0.15, "omega_KOUT": 0.25, "omega_IC50": 0.4,
    "sigma_prop": 0.15,
    "pd_sigma_add": 5.0,
}  # fmt: skip

CART_PIECEWISE_SPEC = ROOT / "models" / "cart_tisagenlecleucel_like.toml"
CART_MECHANISTIC_SPEC = ROOT / "models" / "cart_mechanistic.toml"

CASES = {
    "theophylline_nutpie": {"dataset": "theophylline", "sampler": "nutpie"},
    "theophylline_pymc": {"dataset": "theophylline", "sampler": "pymc"},
    # the JAX path (nutpie's JAX backend; the path for a GPU) on the same closed-form model
    "theophylline_jax": {"dataset": "theophylline", "sampler": "nutpie", "backend": "jax"},
    # the same model written by the user as an ODE (diffrax Tsit5, JAX backend)
    "theophylline_ode_nutpie": {"dataset": "theophylline_ode", "sampler": "nutpie"},
    "sim500_jax": {"dataset": "sim500", "sampler": "nutpie", "backend": "jax"},
    # user-written Michaelis-Menten model (models/mm_1cmt_oral.toml, simulated, known truth)
    "mm_1cmt_oral_nutpie": {"dataset": "mm_1cmt_oral", "sampler": "nutpie"},
    "sim500_nutpie": {"dataset": "sim500", "sampler": "nutpie"},
    "sim1000_nutpie": {"dataset": "sim1000", "sampler": "nutpie"},
    # the same studies with centring weights chosen by a warm-up run ([sampler] centering = "auto"; the
    # default is standardized etas), and with CL, V and KA centred ([parameters.P] centered = true)
    "sim500_autocentred_nutpie": {"dataset": "sim500", "sampler": "nutpie", "centering": "auto"},
    "sim500_centered_nutpie": {"dataset": "sim500", "sampler": "nutpie", "centered": ("CL", "V", "KA")},
    "sim1000_autocentred_nutpie": {"dataset": "sim1000", "sampler": "nutpie", "centering": "auto"},
    "sim1000_centered_nutpie": {"dataset": "sim1000", "sampler": "nutpie", "centered": ("CL", "V", "KA")},
    "theophylline_autocentred_nutpie": {"dataset": "theophylline", "sampler": "nutpie", "centering": "auto"},
    "sim200_2cmt_addl_nutpie": {"dataset": "sim200_2cmt_addl", "sampler": "nutpie"},
    "idr_pkpd_nutpie": {"dataset": "idr_pkpd", "sampler": "nutpie"},
    # the same study and priors, the model written as equations with two outputs (diffrax, JAX backend)
    "idr_pkpd_ode_nutpie": {"dataset": "idr_pkpd_ode", "sampler": "nutpie"},
    "cart_piecewise_nutpie": {"dataset": "cart_piecewise", "sampler": "nutpie"},
    "cart_piecewise_autocentred_nutpie": {"dataset": "cart_piecewise", "sampler": "nutpie", "centering": "auto"},
    # ODE model at ~6 ms per gradient: its own (shorter) run, not FULL; --quick still shortens it
    "cart_mechanistic_nutpie": {"dataset": "cart_mechanistic", "sampler": "nutpie",
                                "settings": {"chains": 4, "draws": 400, "tune": 400}},
}

PACKAGES = ("bayespk", "pymc", "pytensor", "nutpie", "numba", "arviz", "numpy", "pandas", "xarray", "scipy")


# ====================================================================== worker
class _TreeRSS:
    """Peak of the summed RSS of this process and all its descendants, sampled in a thread.

    ``ru_maxrss`` of this process misses PyMC's sampler processes (they are
    children of a forkserver), so this catches them. Shared pages are counted
    once per process, so it over-counts somewhat for forked workers.
    """

    def __init__(self, interval: float = 0.1):
        self.interval = interval
        self.peak = 0
        self.peak_processes = 1
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        try:
            import psutil
        except ImportError:  # pragma: no cover - psutil comes with the test extras
            return
        me = psutil.Process()
        while not self._stop.is_set():
            total, n = 0, 0
            try:
                procs = [me, *me.children(recursive=True)]
            except psutil.Error:
                procs = [me]
            for p in procs:
                try:
                    total += p.memory_info().rss
                    n += 1
                except psutil.Error:
                    pass
            if total > self.peak:
                self.peak, self.peak_processes = total, n
            self._stop.wait(self.interval)

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()


def _maxrss_mb(who) -> float:
    kb = resource.getrusage(who).ru_maxrss  # kilobytes on Linux (bytes on macOS)
    return kb / 1024 / (1024 if sys.platform == "darwin" else 1)


def _sim_dataset(n_subjects: int = SIM_SUBJECTS):
    """The simulated 1-cmt oral study (500 subjects by default): design, then DV drawn at SIM_TRUTH."""
    import numpy as np

    from bayespk.model.spec import Spec
    from bayespk.simulate.study import simulate_observations, study_design

    spec = Spec.from_dict(SIM_SPEC)
    design = study_design(
        n_subjects, dose=SIM_DOSE, times=np.array(SIM_TIMES), route="oral",
        covariates={"WT": lambda rng, n: np.round(np.clip(rng.lognormal(np.log(SIM_WT_REF), 0.2, n), 40, 140), 1)},
        seed=SIM_DESIGN_SEED,
    )  # fmt: skip
    data = simulate_observations(spec, design, SIM_TRUTH, seed=SIM_OBS_SEED)
    return spec, data


def _addl_dataset():
    """The 200-subject 2-cmt study: one dose record per subject (ADDL/II), jittered sparse
    sampling times, DV drawn from the model at ADDL_TRUTH."""
    import numpy as np

    from bayespk.model.spec import Spec
    from bayespk.simulate.study import simulate_observations, study_design

    spec = Spec.from_dict(ADDL_SPEC)
    nominal = np.array([(lo + hi) / 2 for lo, hi in ADDL_WINDOWS])
    design = study_design(
        ADDL_SUBJECTS, dose=ADDL_DOSE, times=nominal, route="iv", n_doses=ADDL_N_DOSES, interval=ADDL_II,
        infusion_duration=ADDL_INFUSION_H,
        covariates={"WT": lambda rng, n: np.round(np.clip(rng.lognormal(np.log(SIM_WT_REF), 0.2, n), 40, 140), 1)},
        seed=ADDL_DESIGN_SEED,
    )  # fmt: skip
    # individual sampling times: one uniform draw per window (the windows do not overlap, so the
    # rows stay sorted); the same generator for every run
    rng = np.random.default_rng(ADDL_DESIGN_SEED + 1000)
    obs = design.EVID == 0
    lo = np.tile([w[0] for w in ADDL_WINDOWS], ADDL_SUBJECTS)
    hi = np.tile([w[1] for w in ADDL_WINDOWS], ADDL_SUBJECTS)
    assert obs.sum() == len(lo)
    design.loc[obs, "TIME"] = np.round(rng.uniform(lo, hi), 2)
    data = simulate_observations(spec, design, ADDL_TRUTH, seed=ADDL_OBS_SEED)
    return spec, data


def _idr_dataset():
    """The 50-subject PK/PD study, simulated with numpy/scipy at IDR_TRUTH (not with bayespk).

    PK: 1-cmt oral closed form, superposed over the three daily doses; log-normal IIV; proportional
    error. PD: indirect response I, dR/dt = KOUT R0 (1 - IMAX C/(IC50 + C)) - KOUT R, R(0) = R0,
    integrated by solve_ivp (DOP853, tight tolerances, restarted at every dose so the kink in C'
    is a segment boundary) on the true individual concentrations; additive error. PK rows DVID 1,
    PD rows DVID 2 (both CMT 2)."""
    import numpy as np
    import pandas as pd
    from scipy.integrate import solve_ivp

    from bayespk.model.spec import Spec

    t = IDR_TRUTH
    rng = np.random.default_rng(IDR_SEED)
    dose_times = np.arange(IDR_N_DOSES) * IDR_II

    def conc(tt, amt, cl, v, ka):
        k = cl / v
        tt = np.asarray(tt, dtype=float)
        out = np.zeros_like(tt)
        for td in dose_times:
            dt = tt - td
            out += np.where(dt > 0, amt * ka / (v * (ka - k)) * (np.exp(-k * np.maximum(dt, 0))
                                                                 - np.exp(-ka * np.maximum(dt, 0))), 0.0)
        return out

    rows = []
    for i in range(1, IDR_SUBJECTS + 1):
        amt = IDR_DOSES[(i - 1) % len(IDR_DOSES)]
        p = {k: t[k] * np.exp(t.get(f"omega_{k}", 0.0) * rng.standard_normal())
             for k in ("CL", "V", "KA", "R0", "KOUT", "IMAX", "IC50")}

        def rhs(tt, y, p=p, amt=amt):
            c = conc(tt, amt, p["CL"], p["V"], p["KA"])
            return [p["KOUT"] * p["R0"] * (1 - p["IMAX"] * c / (p["IC50"] + c)) - p["KOUT"] * y[0]]

        pd_t = np.array(IDR_PD_TIMES)
        r, y0 = np.empty(len(pd_t)), [p["R0"]]
        bounds = [*dose_times, max(pd_t[-1], dose_times[-1])]
        for k, (a, b) in enumerate(itertools.pairwise(bounds)):  # one segment per dosing interval
            last = k == len(bounds) - 2
            sel = (pd_t >= a) & ((pd_t <= b) if last else (pd_t < b))
            t_eval = np.unique(np.append(pd_t[sel], b))
            sol = solve_ivp(rhs, (a, b), y0, method="DOP853", rtol=1e-10, atol=1e-10, t_eval=t_eval)
            r[sel] = sol.y[0, np.searchsorted(t_eval, pd_t[sel])]
            y0 = [sol.y[0, -1]]
        pk_t = np.array(IDR_PK_TIMES)
        c = conc(pk_t, amt, p["CL"], p["V"], p["KA"])
        c_obs = c * (1.0 + t["sigma_prop"] * rng.standard_normal(len(c)))
        r_obs = r + t["pd_sigma_add"] * rng.standard_normal(len(r))
        rows.append({"ID": i, "TIME": 0.0, "AMT": amt, "DV": np.nan, "EVID": 1, "MDV": 1, "CMT": 1,
                     "ADDL": IDR_N_DOSES - 1, "II": IDR_II, "DVID": 1, "DOSE": amt})
        obs = [(tt, dv, 1) for tt, dv in zip(pk_t, c_obs)] + [(tt, dv, 2) for tt, dv in zip(pd_t, r_obs)]
        for tt, dv, dvid in sorted(obs, key=lambda o: (o[0], o[2])):
            rows.append({"ID": i, "TIME": float(tt), "AMT": np.nan, "DV": float(dv), "EVID": 0, "MDV": 0,
                         "CMT": 2, "ADDL": 0, "II": 0.0, "DVID": dvid, "DOSE": amt})
    data = pd.DataFrame(rows)
    if (data.DV[data.EVID == 0] <= 0).any():
        raise RuntimeError("simulated a non-positive observation; change IDR_SEED")
    return Spec.from_dict(IDR_SPEC), data


def _dataset(name: str):
    """``(spec, data, truth, seed)`` of a dataset; data None: the spec's own file."""
    from bayespk.model.spec import Spec

    if name == "theophylline":
        return Spec.from_toml(THEOPHYLLINE_SPEC), None, None, THEOPHYLLINE_SEED
    if name == "theophylline_ode":  # the bundled model, its structure written as an ODE by the user
        d = Spec.from_toml(THEOPHYLLINE_SPEC).to_dict()
        d["model"] = {"states": ["depot", "central"], "output": "central/V",
                      "ode": {"depot": "-KA*depot", "central": "KA*depot - CL/V*central"}}
        return Spec.from_dict(d), None, None, THEOPHYLLINE_SEED
    if name == "mm_1cmt_oral":
        spec = Spec.from_toml(ROOT / "models" / "mm_1cmt_oral.toml")
        return spec, None, None, spec.sampler.seed
    if name == "sim500":
        return (*_sim_dataset(), SIM_TRUTH, SIM_FIT_SEED)
    if name == "sim1000":  # the same design and truth, twice the subjects
        return (*_sim_dataset(1000), SIM_TRUTH, SIM_FIT_SEED)
    if name == "sim200_2cmt_addl":
        return (*_addl_dataset(), ADDL_TRUTH, ADDL_FIT_SEED)
    if name == "idr_pkpd":
        return (*_idr_dataset(), IDR_TRUTH, IDR_FIT_SEED)
    if name == "idr_pkpd_ode":  # the same model written as equations: one ODE for PK and response
        spec, data = _idr_dataset()
        d = spec.to_dict()
        d["model"] = {"states": ["depot", "central", "R"], "output": "C", "pd_output": "R",
                      "pd_observations": d["model"]["pd_observations"],
                      "ode": {"depot": "-KA*depot", "central": "KA*depot - CL*C",
                              "R": "R0*KOUT*(1 - IMAX*C/(IC50 + C)) - KOUT*R"},
                      "derived": {"C": "central/V"}, "initial": {"R": "R0"},
                      "solver": {"rtol": 1e-4, "atol": 1e-6}}
        return Spec.from_dict(d), data, IDR_TRUTH, IDR_FIT_SEED
    if name == "cart_piecewise":  # 100 simulated CAR-T patients (models/data/make_cart.py), known truth
        from bayespk.simulate.cohort import simulate_cart_cohort

        spec = Spec.from_toml(CART_PIECEWISE_SPEC)
        truth = simulate_cart_cohort(1, seed=0).truth  # population values (the cohort is seed 2026)
        return spec, None, truth, spec.sampler.seed
    if name == "cart_mechanistic":  # the same study, mechanistic ODE model (no truth: data are piecewise)
        spec = Spec.from_toml(CART_MECHANISTIC_SPEC)
        return spec, None, None, spec.sampler.seed
    raise ValueError(name)


def run_case(name: str, chains: int, draws: int, tune: int, runs: Path | None = None) -> dict:
    """Fit one case in this process and return its metrics (called in the subprocess).

    ``runs``: also write the fit's run directory to ``runs / name`` (for ``bayespk compare``).
    """
    cfg = CASES[name]
    t_import = time.perf_counter()
    import numpy as np

    from bayespk.errors import ConvergenceWarning
    from bayespk.fit import fit
    from bayespk.model.population import PopulationModel

    import_s = time.perf_counter() - t_import
    out: dict = {"case": name, "sampler": cfg["sampler"], "dataset": cfg["dataset"],
                 "chains": chains, "draws": draws, "tune": tune}
    with _TreeRSS() as tree_rss:
        t0 = time.perf_counter()
        spec, data, truth, seed = _dataset(cfg["dataset"])
        if cfg.get("centered"):
            spec = replace(spec, parameters={p: replace(ps, centered=float(p in cfg["centered"]))
                                             for p, ps in spec.parameters.items()})
        if cfg.get("centering"):
            spec = spec.with_sampler(centering=cfg["centering"])
        t_data = time.perf_counter()
        model = PopulationModel(spec, data)
        t_model = time.perf_counter()
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always", ConvergenceWarning)
            result = fit(model, sampler=cfg["sampler"], chains=chains, draws=draws, tune=tune, seed=seed,
                         progress=False, backend=cfg.get("backend"))
        t_fit = time.perf_counter()
        diag = result.diagnostics()
        summary = result.summary()
        t_end = time.perf_counter()
    if runs is not None:
        result.write_run(runs / name, overwrite=True)  # a benchmark rerun replaces its run

    wall = float(diag["wall_seconds"])
    compile_s = float(diag["compile_seconds"])
    compile_known = math.isfinite(compile_s)
    sampling = wall - compile_s if compile_known else wall
    pop = summary.set_index("parameter")
    min_pop = float(pop["ess_bulk"].min())
    min_all = float(diag["min_ess_bulk"])
    s = model.data.summary
    n_pd_obs = int(model.pd_design.n_obs) if getattr(model, "pd_design", None) is not None else 0
    out.update({
        "subjects": int(model.design.n_subjects),
        "observations": int(model.design.n_obs) + n_pd_obs,  # PK + PD rows in the likelihood
        "observations_pd": n_pd_obs,
        "seed": int(result.spec.sampler.seed),
        "target_accept": float(result.spec.sampler.target_accept),
        "n_population_parameters": len(result.population_parameters),
        "n_free_scalars": int(sum(np.prod([result.posterior[v].sizes[d] for d in result.posterior[v].dims
                                           if d not in ("chain", "draw")], dtype=int)
                                  for v in result.free_parameters if v in result.posterior)),
        # timings (seconds)
        "wall_s": wall,  # fit(): compile + sampling (bayespk's own wall_seconds)
        "compile_s": compile_s if compile_known else None,  # nutpie only; PyMC compiles inside pm.sample
        "sampling_s": sampling,
        "sampling_includes_compile": not compile_known,
        "import_s": round(import_s, 3),
        "data_s": round(t_data - t0, 3),  # reading the spec, or simulating the study
        "model_s": round(t_model - t_data, 3),  # PopulationModel(): design and validation
        "fit_call_s": round(t_fit - t_model, 3),  # fit() end to end: build, compile, sample, log-lik, checks
        "post_s": round(t_end - t_fit, 3),  # diagnostics() + summary()
        # efficiency
        "min_ess_bulk_pop": min_pop,
        "min_ess_bulk_pop_parameter": str(pop["ess_bulk"].idxmin()),
        "min_ess_bulk_all": min_all,
        "min_ess_bulk_all_parameter": diag["min_ess_bulk_parameter"],
        "min_ess_tail_all": float(diag["min_ess_tail"]),
        "ess_per_s_wall_pop": min_pop / wall,
        "ess_per_s_sampling_pop": min_pop / sampling,
        "ess_per_s_wall_all": min_all / wall,
        "ess_per_s_sampling_all": min_all / sampling,
        # convergence
        "divergences": int(diag["divergences"]),
        "max_r_hat": float(diag["max_r_hat"]),
        "max_r_hat_parameter": diag["max_r_hat_parameter"],
        "min_bfmi": float(diag["min_bfmi"]),
        "convergence_problems": list(diag["problems"]),
        "convergence_warnings": len([w for w in caught if issubclass(w.category, ConvergenceWarning)]),
        # centring weights the warm-up chose ([sampler] centering = "auto"; its time is in wall_s)
        "centering_chosen": diag.get("centering_chosen"),
        # memory (MB)
        "peak_rss_mb": _maxrss_mb(resource.RUSAGE_SELF),
        "peak_rss_children_mb": _maxrss_mb(resource.RUSAGE_CHILDREN),
        "peak_rss_tree_mb": tree_rss.peak / 2**20,
        "peak_rss_tree_processes": tree_rss.peak_processes,
        "summary": summary.to_dict(orient="records"),
        "n_subjects_in_data": int(s.n_subjects),
    })  # fmt: skip
    # per chain: population parameter means and sampler statistics (to spot a stuck chain)
    post, stats = result.posterior, result.tree["sample_stats"].to_dataset()
    out["per_chain"] = {
        "mean": {p: [round(float(x), 5) for x in post[p].mean("draw").values]
                 for p in result.population_parameters if p in post and post[p].ndim == 2},
        **{k: [float(f"{float(x):.4g}") for x in stats[k].astype(float).mean("draw").values]
           for k in ("step_size", "n_steps", "depth", "tree_depth", "maxdepth_reached", "diverging",
                     "mean_tree_accept", "acceptance_rate") if k in stats},
    }
    if truth is not None:
        cover = {}
        for p, v in truth.items():
            row = pop.loc[p]
            cover[p] = {"truth": v, "q5": float(row["q5"]), "median": float(row["median"]), "q95": float(row["q95"]),
                        "covered": bool(row["q5"] <= v <= row["q95"])}
        out["coverage90"] = cover
        out["coverage90_hits"] = sum(c["covered"] for c in cover.values())
        out["coverage90_total"] = len(cover)
    return out


def _worker(args) -> None:
    res = run_case(args.case, args.chains, args.draws, args.tune, args.runs)
    sys.stdout.flush()
    print(MARKER + json.dumps(res, default=_json_default), flush=True)


def _json_default(o):
    import numpy as np

    if isinstance(o, np.integer):
        return int(o)
    if isinstance(o, np.floating):
        return float(o)
    if isinstance(o, np.bool_):
        return bool(o)
    raise TypeError(type(o))


# ====================================================================== driver
def _environment(argv: list[str]) -> dict:
    versions = {}
    for pkg in PACKAGES:
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    cpu_model = None
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    mem_gib = None
    try:
        mem_gib = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError):
        pass

    def git(*a):
        try:
            return subprocess.run(["git", *a], check=False, cwd=ROOT, capture_output=True, text=True,
                                  timeout=10).stdout.strip()
        except (OSError, subprocess.SubprocessError):
            return None

    dirty = git("status", "--porcelain", "--untracked-files=all", "--", "bayespk", "models")
    return {
        "date": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
        "command": shlex.join([os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT))
                               else sys.executable, os.path.relpath(__file__, ROOT), *argv]),
        "python": platform.python_version(),
        "implementation": platform.python_implementation(),
        "platform": platform.platform(),
        "cpu_count": os.cpu_count(),
        "cpu_affinity": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else None,
        "cpu_model": cpu_model,
        "memory_gib": mem_gib,
        "versions": versions,
        "git_commit": git("rev-parse", "--short", "HEAD"),
        "git_uncommitted_library_changes": dirty.splitlines() if dirty else [],
        "pytensor_flags": os.environ.get("PYTENSOR_FLAGS"),
    }


def _source_hash() -> str:
    """Hash of the library sources and bundled models, to notice edits made while the benchmark runs."""
    h = hashlib.sha256()
    for f in sorted([*(ROOT / "bayespk").rglob("*.py"), *(ROOT / "models").glob("*")]):
        if f.is_file():
            h.update(str(f.relative_to(ROOT)).encode())
            h.update(f.read_bytes())
    return h.hexdigest()[:16]


def _run_subprocess(name: str, settings: dict, cold_cache: bool, timeout: float, log_dir: Path,
                    runs: Path | None = None) -> dict:
    cmd = [sys.executable, str(Path(__file__).resolve()), "--case", name,
           "--chains", str(settings["chains"]), "--draws", str(settings["draws"]), "--tune", str(settings["tune"])]
    if runs is not None:
        cmd += ["--runs", str(runs.resolve())]
    env = dict(os.environ)
    tmp = None
    if cold_cache:
        tmp = tempfile.TemporaryDirectory(prefix="bayespk-bench-compiledir-")
        flags = [f for f in env.get("PYTENSOR_FLAGS", "").split(",") if f and not f.startswith("base_compiledir")]
        env["PYTENSOR_FLAGS"] = ",".join([*flags, f"base_compiledir={tmp.name}"])
    load_before = os.getloadavg()
    t0 = time.perf_counter()
    try:
        proc = subprocess.run(cmd, check=False, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
        rc, stdout, stderr = proc.returncode, proc.stdout, proc.stderr
    except subprocess.TimeoutExpired as e:
        rc = None
        stdout = e.stdout.decode() if isinstance(e.stdout, bytes) else (e.stdout or "")
        stderr = ((e.stderr.decode() if isinstance(e.stderr, bytes) else (e.stderr or ""))
                  + f"\nTIMEOUT after {timeout}s")
    finally:
        if tmp is not None:
            tmp.cleanup()
    process_s = time.perf_counter() - t0
    log_dir.mkdir(parents=True, exist_ok=True)
    (log_dir / f"{name}.log").write_text(f"$ {shlex.join(cmd)}\n--- stdout\n{stdout}\n--- stderr\n{stderr}")
    res = None
    for line in stdout.splitlines():
        if line.startswith(MARKER):
            res = json.loads(line[len(MARKER):])
    if res is None:
        return {"case": name, "sampler": CASES[name]["sampler"], "error": f"worker exit code {rc}",
                "stderr_tail": stderr[-3000:], "process_s": round(process_s, 2)}
    res["process_s"] = round(process_s, 2)  # whole subprocess: interpreter start, imports, everything
    res["loadavg_before"] = [round(x, 2) for x in load_before]
    res["loadavg_after"] = [round(x, 2) for x in os.getloadavg()]
    res["cold_cache"] = cold_cache
    return res


def _obs(r: dict) -> str:
    n_pd = r.get("observations_pd", 0)
    return f"{r['observations']}" + (f" ({r['observations'] - n_pd} PK + {n_pd} PD)" if n_pd else "")


def _f(x, nd=1, dash="n/a"):
    if x is None or (isinstance(x, float) and not math.isfinite(x)):
        return dash
    return f"{x:,.{nd}f}"


def _run_of(report: dict, r: dict) -> dict:
    """The run (settings and environment) a result came from; results written before per-case run
    records existed take the report's own."""
    return r.get("run") or {k: report.get(k) for k in ("quick", "cold_cache", "settings", "environment")}


def _run_lines(run: dict, indent: str = "") -> list[str]:
    env, s = run["environment"], run["settings"]
    lines = [
        f"{indent}- date: {env['date']}",
        f"{indent}- command: `{env['command']}`",
        (f"{indent}- settings: {s['chains']} chains x {s['draws']} draws, {s['tune']} tune; "
        "compile cache: " + ("cold (fresh PyTensor compiledir per case)" if run["cold_cache"]
                             else "warm (user PyTensor compiledir)")),
        (f"{indent}- python {env['python']} on {env['platform']}; CPUs: {env['cpu_count']} "
        f"(affinity {env['cpu_affinity']}), {env['cpu_model']}; memory {env['memory_gib']} GiB"),
        f"{indent}- versions: " + ", ".join(f"{k} {v}" for k, v in env["versions"].items() if v),
        f"{indent}- git: {env['git_commit']}"
        + (f" with uncommitted changes in {', '.join(c.split()[-1] for c in env['git_uncommitted_library_changes'])}"
           if env["git_uncommitted_library_changes"] else ""),
    ]
    if env.get("source_changed_during_run"):
        lines.append(f"{indent}- **warning: bayespk/ or models/ changed while the benchmark ran; cases may have run "
                     "different code**")
    return lines


def markdown(report: dict) -> str:
    res = report["results"]
    runs: dict[tuple, dict] = {}  # distinct runs, in the order of the cases
    cases_of: dict[tuple, list[str]] = {}
    for r in res:
        run = _run_of(report, r)
        key = (run["environment"]["date"], run["environment"]["command"])
        runs.setdefault(key, run)
        cases_of.setdefault(key, []).append(r["case"])
    kinds = {"quick" if run["quick"] else "full" for run in runs.values()}
    lines = [f"# bayespk fit benchmark ({kinds.pop() if len(kinds) == 1 else 'quick and full runs mixed'})", ""]
    if len(runs) == 1:
        lines += _run_lines(next(iter(runs.values())))
    else:
        lines.append(f"The cases below come from {len(runs)} runs (a run of some cases replaces only their "
                     "results):")
        for key, run in runs.items():
            lines += ["", f"Run of {', '.join(f'`{c}`' for c in cases_of[key])}:", ""]
            lines += _run_lines(run)
    lines += [
        "",
        ("| case | sampler | subjects | observations | wall s (incl compile) | compile s | sampling s "
        "| min ESS bulk (pop) | ESS/s (slowest, wall) | divergences | max R-hat | peak RSS MB |"),
        "|---|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for r in res:
        if "error" in r:
            lines.append(f"| {r['case']} | {r['sampler']} | FAILED: {r['error']} |" + " |" * 9)
            continue
        samp = _f(r["sampling_s"]) + ("\\*" if r["sampling_includes_compile"] else "")
        lines.append(
            f"| {r['case']} | {r['sampler']} | {r['subjects']} | {_obs(r)} | {_f(r['wall_s'])} "
            f"| {_f(r['compile_s'])} | {samp} | {_f(r['min_ess_bulk_pop'], 0)} | {_f(r['ess_per_s_wall_pop'], 2)} "
            f"| {r['divergences']} | {_f(r['max_r_hat'], 3)} | {_f(r['peak_rss_mb'], 0)} |"
        )
    lines += [
        "",
        "\\* PyMC compiles inside `pm.sample`, so its compile time is not separable and is included in sampling s.",
        "",
        ("More metrics (ESS over *all* free parameters includes the standardized etas `z_*`; "
        "peak RSS (tree) sums all processes, including PyMC's sampler processes):"),
        "",
        ("| case | min ESS bulk (all) | at | ESS/s all (wall) | ESS/s pop (sampling) | ESS/s all (sampling) "
        "| min ESS tail (all) | min E-BFMI | fit() end-to-end s | peak RSS tree MB | load avg before/after |"),
        "|---|--:|---|--:|--:|--:|--:|--:|--:|--:|---|",
    ]
    for r in res:
        if "error" in r:
            continue
        lines.append(
            f"| {r['case']} | {_f(r['min_ess_bulk_all'], 0)} | {r['min_ess_bulk_all_parameter']} "
            f"| {_f(r['ess_per_s_wall_all'], 2)} | {_f(r['ess_per_s_sampling_pop'], 2)} "
            f"| {_f(r['ess_per_s_sampling_all'], 2)} | {_f(r['min_ess_tail_all'], 0)} | {_f(r['min_bfmi'], 2)} "
            f"| {_f(r['fit_call_s'])} | {_f(r['peak_rss_tree_mb'], 0)} "
            f"| {r['loadavg_before'][0]:.2f} / {r['loadavg_after'][0]:.2f} |"
        )
    for r in res:
        if "coverage90" in r:
            lines += ["", f"Truth vs posterior, {r['case']} (90% interval q5..q95): "
                          f"{r['coverage90_hits']}/{r['coverage90_total']} population parameters covered"
                          + ("" if r["max_r_hat"] <= 1.01 else
                             f" (not meaningful: the chains did not converge, max R-hat {r['max_r_hat']:.3f})"),
                      "",
                      "| parameter | truth | q5 | median | q95 | covered |", "|---|--:|--:|--:|--:|---|"]
            for p, c in r["coverage90"].items():
                lines.append(f"| {p} | {c['truth']:g} | {c['q5']:.4g} | {c['median']:.4g} | {c['q95']:.4g} "
                             f"| {'yes' if c['covered'] else '**no**'} |")
    for r in res:
        pc = r.get("per_chain", {})
        if "n_steps" in pc and len(pc["n_steps"]) > 1:
            med = sorted(pc["n_steps"])[len(pc["n_steps"]) // 2]
            slow = [i for i, n in enumerate(pc["n_steps"]) if n > 4 * med]
            if slow:
                lines += ["", (f"{r['case']}: chain(s) {', '.join(map(str, slow))} look stuck: mean leapfrog steps "
                              f"per draw {', '.join(f'{n:.0f}' for n in pc['n_steps'])} by chain, step size "
                              f"{', '.join(f'{x:.3g}' for x in pc.get('step_size', []))}; "
                              "per-chain means are in fit.json")]
    problems = [(r["case"], p) for r in res if "error" not in r for p in r["convergence_problems"]]
    if problems:
        lines += ["", "Convergence problems reported by bayespk:", ""]
        lines += [f"- {c}: {p}" for c, p in problems]
    failed = [r for r in res if "error" in r]
    for r in failed:
        lines += ["", f"{r['case']} failed ({r['error']}); stderr tail:", "", "```", r["stderr_tail"][-1500:], "```"]
    return "\n".join(lines) + "\n"


def _previous_results(path: Path, exclude: set[str]) -> list[dict]:
    """Results in an earlier ``fit.json`` of the cases not run now, each with its ``run`` record."""
    if not path.exists():
        return []
    try:
        old = json.loads(path.read_text())
        kept = [r | {"run": _run_of(old, r)} for r in old["results"] if r["case"] not in exclude]
    except (OSError, ValueError, KeyError, TypeError) as e:
        print(f"warning: could not read {path} ({e}); it is replaced by this run's results", file=sys.stderr)
        return []
    return kept


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="smoke run: 2 chains x 300 draws, 300 tune")
    ap.add_argument("--cases", nargs="+", choices=list(CASES), default=list(CASES), help="cases to run")
    ap.add_argument("--cold-cache", action="store_true",
                    help="give each case an empty PyTensor compiledir (first-ever-run compile time)")
    ap.add_argument("--timeout", type=float, default=3600, help="seconds per case (default 3600)")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    ap.add_argument("--runs", type=Path, help="also write each case's run directory under RUNS "
                    "(e.g. to compare the CAR-T models with bayespk compare)")
    ap.add_argument("--fresh", action="store_true",
                    help="write only this run's cases (default: keep the other cases' results in --out/fit.json)")
    # worker mode (internal)
    ap.add_argument("--case", choices=list(CASES), help=argparse.SUPPRESS)
    ap.add_argument("--chains", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--draws", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--tune", type=int, help=argparse.SUPPRESS)
    ap.add_argument("--report-only", action="store_true",
                    help="re-write fit.md from an existing fit.json in --out (no fitting)")
    args = ap.parse_args(argv)

    if args.report_only:
        report = json.loads((args.out / "fit.json").read_text())
        md = markdown(report)
        (args.out / "fit.md").write_text(md)
        print(md)
        return 0
    if args.case:
        _worker(args)
        return 0

    settings = QUICK if args.quick else FULL
    env = _environment(argv)
    print(f"bayespk fit benchmark: {', '.join(args.cases)}; {settings['chains']} chains x {settings['draws']} draws, "
          f"{settings['tune']} tune", flush=True)
    source_before = _source_hash()
    results = []
    for name in args.cases:
        print(f"  {name} ...", end=" ", flush=True)
        own = settings if args.quick else CASES[name].get("settings", settings)
        r = _run_subprocess(name, own, args.cold_cache, args.timeout, args.out / "logs", args.runs)
        results.append(r)
        print("FAILED (see log)" if "error" in r else
              f"{r['wall_s']:.1f} s fit wall, min ESS (pop) {r['min_ess_bulk_pop']:.0f}", flush=True)
    env["source_hash"] = source_before
    env["source_changed_during_run"] = _source_hash() != source_before
    run = {"quick": args.quick, "cold_cache": args.cold_cache, "settings": settings, "environment": env}
    for r in results:
        r["run"] = run
    kept = [] if args.fresh else _previous_results(args.out / "fit.json", exclude=set(args.cases))
    if kept:
        print(f"kept the results of {', '.join(r['case'] for r in kept)} from {args.out / 'fit.json'} "
              "(--fresh drops them)")
    order = {c: i for i, c in enumerate(CASES)}
    merged = sorted([*kept, *results], key=lambda r: order.get(r["case"], len(order)))
    # top-level quick/settings/environment: this (the latest) run; each result has its own under "run"
    report = {**run, "results": merged}
    write_results(args.out, "fit", report, markdown(report))
    return 1 if any("error" in r for r in results) else 0


def write_results(out: Path, name: str, report: dict, md: str) -> None:
    """Write ``out/name.json`` and ``out/name.md`` and print the markdown (every benchmark script)."""
    out.mkdir(parents=True, exist_ok=True)
    (out / f"{name}.json").write_text(json.dumps(report, indent=2, default=_json_default) + "\n")
    (out / f"{name}.md").write_text(md)
    print()
    print(md)
    print(f"wrote {out / f'{name}.json'} and {out / f'{name}.md'}")


if __name__ == "__main__":
    sys.exit(main())
