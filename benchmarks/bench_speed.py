"""Speed of bayespk's model against the same model written by hand in PyMC and in Stan (issue #18).

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_speed.py          # N = 12 and 200, 3 repeats, 2 chains x 1000 after 1000
    .venv/bin/python benchmarks/bench_speed.py --n 12 --repeats 1 --draws 200 --tune 200   # smoke run
    .venv/bin/python benchmarks/bench_speed.py --no-stan
    .venv/bin/python benchmarks/bench_speed.py --stan-recompile   # time Stan's C++ compile too (1-2 min)

One model, three ways: a one-compartment oral population PK model with IIV
(log-normal) on KA, CL and V, log-normal residual error, one oral dose per
subject:

(a) ``bayespk``: the bundled theophylline spec (``models/theophylline_1cmt_oral.toml``)
    with ``[error] model = "lognormal"``, built by ``PopulationModel.build()``;
(b) ``pymc-hand``: the same model in a few lines of PyMC (:func:`hand_model`:
    non-centred ``eta = omega * z``, ``C = Dose KA / (V (KA - k)) (exp(-k t) - exp(-KA t))``,
    LogNormal likelihood), its priors read from the same spec object;
(c) ``stan``: the same model in Stan (:data:`STAN_PROGRAM`, priors passed as data
    from the spec), through PyStan 3 / httpstan (``pip install -e .[bench]``; skipped
    with a note when ``stan`` cannot be imported, or with ``--no-stan``).

(a) and (b) are sampled by nutpie on its numba backend; all three with the same
chains, draws, tuning steps, target acceptance (the spec's, 0.9) and starting
policy (typical values at their prior's support point, every ``z`` at 0, the
omegas and sigma jittered: bayespk's own policy in ``fit()``).

Data, the same for all three: N = 12 is the real theophylline study
(``bayespk/data/datasets/theophylline.csv``, doses in mg/kg into the depot,
CMT 1; the pre-dose samples at TIME 0, a prediction of exactly 0 that log-normal
error cannot fit, are left out: 10 samples per subject, 120 in all); any other N
is a study simulated from the model at :data:`SIM_TRUTH` (a fixed seed) with
the theophylline design: 320 mg / WT (WT log-normal around 70 kg) by mouth,
10 samples per subject at the nominal theophylline times.

Before timing anything the script checks that (a) and (b) (and Stan) define
the same posterior: at a few common points the log densities differ by one
constant and the gradients agree; it stops with an error when they do not.

Measured, per N, with the models interleaved in each repeat (a, b, c, a, b, c, ...):

* compile s: ``nutpie.compile_pymc_model`` (PyTensor graph to numba), or ``stan.build``
  (C++; marked when httpstan's cache had the model);
* logp+grad us: one log-density + gradient evaluation. nutpie: the compiled C callback
  its sampler calls, called from a numba loop (no Python in between), median over
  batches of calls. Stan: Stan's own clock per leapfrog step while sampling (median over
  chains): httpstan's in-process ``log_prob_grad`` rebuilds the model from the data on
  every call, which costs more than the gradient (its per-call time is in speed.json);
* sampling s: the sampling call (tuning + draws, all chains in parallel), compile excluded
  (Stan: pystan's wall time, and Stan's own elapsed time beside it);
  us/grad in sampling: sampling s / leapfrog steps (warm-up included) of the average chain;
* min ESS bulk over the population parameters (typical values, omegas, sigma_log;
  ArviZ, rank-normalized), ESS/s = min ESS bulk / sampling s; divergences;
* #Switch / #Exp / #Expm1: scalar ops in the compiled log-density + gradient graph
  nutpie runs (:func:`_common.scalar_op_counts`).

Results: ``benchmarks/results/speed.md`` and ``speed.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import math
import os
import re
import shlex
import statistics
import sys
import time
import warnings
from dataclasses import dataclass, replace
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import scalar_op_counts  # noqa: E402
from bench_fit import (  # noqa: E402
    RESULTS,
    ROOT,
    THEOPHYLLINE_SEED,
    THEOPHYLLINE_SPEC,
    _environment,
    _f,
    _run_lines,
    _source_hash,
    write_results,
)

THEOPHYLLINE_CSV = ROOT / "bayespk" / "data" / "datasets" / "theophylline.csv"
PARAMS = ("CL", "V", "KA")
SIGMA_LOG_PRIOR = {"dist": "HalfNormal", "sigma": 0.5}  # bayespk's default for sigma_log, written out

# Simulated studies (any N other than 12): the theophylline design, values near the published
# nlme fit (Pinheiro & Bates 2000: CL 0.040 L/h/kg, k 0.088 /h, KA 1.57 /h).
SIM_TIMES = (0.25, 0.5, 1.0, 2.0, 3.5, 5.0, 7.0, 9.0, 12.0, 24.0)  # nominal Theoph times, h
SIM_DOSE_MG = 320.0  # mg by mouth; AMT = 320 / WT mg/kg, as in the theophylline data
SIM_TRUTH = {
    "CL": 0.04, "V": 0.46, "KA": 1.5,
    "omega_CL": 0.25, "omega_V": 0.15, "omega_KA": 0.5,
    "sigma_log": 0.15,
}  # fmt: skip
SIM_DESIGN_SEED = 41
SIM_OBS_SEED = 42
SEED = THEOPHYLLINE_SEED  # sampling seed (the spec's), for all three

MODELS = ("bayespk", "pymc-hand", "stan")
EXTRA_PACKAGES = ("pystan", "httpstan")

# (c) The model in Stan. Priors: LogNormal typical values, HalfNormal omegas and sigma_log, their
# parameters passed as data from the spec. Parameter names and transforms (log for every positive
# parameter) are those of the PyMC models, so the posteriors and the unconstrained spaces are the same.
STAN_PROGRAM = """
data {
  int<lower=1> N;                        // subjects
  int<lower=1> M;                        // observations
  array[M] int<lower=1, upper=N> id;     // subject of each observation
  vector<lower=0>[M] time;               // time since the dose
  vector<lower=0>[M] dose;               // the subject's dose
  vector<lower=0>[M] dv;                 // concentration
  vector[3] tv_mu;                       // LogNormal priors of CL, V, KA
  vector<lower=0>[3] tv_sigma;
  vector<lower=0>[3] omega_sigma;        // HalfNormal priors of omega_CL, omega_V, omega_KA
  real<lower=0> sigma_log_sigma;         // HalfNormal prior of sigma_log
}
transformed data {
  vector[M] minus_time = -time;
}
parameters {
  real<lower=0> CL;
  real<lower=0> V;
  real<lower=0> KA;
  real<lower=0> omega_CL;
  real<lower=0> omega_V;
  real<lower=0> omega_KA;
  vector[N] z_CL;
  vector[N] z_V;
  vector[N] z_KA;
  real<lower=0> sigma_log;
}
model {
  vector[N] cl = CL * exp(omega_CL * z_CL);
  vector[N] v = V * exp(omega_V * z_V);
  vector[N] ka = KA * exp(omega_KA * z_KA);
  vector[N] k = cl ./ v;
  vector[N] a = ka ./ (v .* (ka - k));   // per subject, then per observation:
  vector[M] c = dose .* a[id] .* (exp(k[id] .* minus_time) - exp(ka[id] .* minus_time));
  CL ~ lognormal(tv_mu[1], tv_sigma[1]);
  V ~ lognormal(tv_mu[2], tv_sigma[2]);
  KA ~ lognormal(tv_mu[3], tv_sigma[3]);
  omega_CL ~ normal(0, omega_sigma[1]);
  omega_V ~ normal(0, omega_sigma[2]);
  omega_KA ~ normal(0, omega_sigma[3]);
  z_CL ~ std_normal();
  z_V ~ std_normal();
  z_KA ~ std_normal();
  sigma_log ~ normal(0, sigma_log_sigma);
  dv ~ lognormal(log(c), sigma_log);
}
"""
# Stan's unconstrained vector, in declaration order (name, is log-transformed)
STAN_LAYOUT = (*((p, True) for p in PARAMS), *((f"omega_{p}", True) for p in PARAMS),
               *((f"z_{p}", False) for p in PARAMS), ("sigma_log", True))


# ====================================================================== the model and the data
def speed_spec():
    """The theophylline spec with log-normal residual error (sigma_log ~ HalfNormal(0.5))."""
    from bayespk.model.spec import ErrorSpec, Spec

    spec = Spec.from_toml(THEOPHYLLINE_SPEC)
    return replace(spec, name="theophylline_1cmt_oral_lognormal",
                   error=ErrorSpec.from_dict({"model": "lognormal", "sigma_log": SIGMA_LOG_PRIOR}))


def dataset(n: int, spec):
    """NONMEM-style DataFrame: N = 12 the theophylline data without the pre-dose samples, else simulated."""
    import numpy as np
    import pandas as pd

    if n == 12:
        d = pd.read_csv(THEOPHYLLINE_CSV, na_values=".")
        predose = (d.EVID == 0) & (d.TIME <= 0)
        return d[~predose].reset_index(drop=True)
    from bayespk.simulate.study import simulate_observations, study_design

    design = study_design(
        n, dose=lambda c: round(SIM_DOSE_MG / c.WT, 3), times=np.array(SIM_TIMES), route="oral",
        covariates={"WT": lambda rng, k: np.round(np.clip(rng.lognormal(np.log(70.0), 0.15, k), 40, 140), 1)},
        seed=SIM_DESIGN_SEED,
    )  # fmt: skip
    return simulate_observations(spec, design, SIM_TRUTH, seed=SIM_OBS_SEED)


@dataclass(frozen=True)
class Observations:
    """The data as the hand-written models see them: one row per observation."""

    ids: list  # subject IDs, in order of first appearance
    subject: object  # (M,) int, index into ids
    time: object  # (M,) time since the subject's dose
    dose: object  # (M,) the subject's dose
    dv: object  # (M,)

    @classmethod
    def from_frame(cls, d) -> "Observations":
        import numpy as np

        doses = d[d.EVID == 1]
        repeated = "ADDL" in doses.columns and (doses.ADDL.fillna(0) > 0).any()
        if doses.ID.duplicated().any() or repeated or (doses.CMT != 1).any():
            raise ValueError("the hand-written models take one oral dose (CMT 1) per subject")
        obs = d[(d.EVID == 0) & (d.MDV == 0)]
        ids = list(dict.fromkeys(obs.ID))
        index = {i: k for k, i in enumerate(ids)}
        t_dose = doses.set_index("ID").TIME
        amt = doses.set_index("ID").AMT
        t = obs.TIME.to_numpy(float) - t_dose.reindex(obs.ID).to_numpy(float)
        if not (t > 0).all():
            raise ValueError("every observation must follow its subject's dose")
        return cls(ids=ids, subject=np.array([index[i] for i in obs.ID]), time=t,
                   dose=amt.reindex(obs.ID).to_numpy(float), dv=obs.DV.to_numpy(float))


def hand_model(spec, obs: Observations):
    """(b) The model by hand in PyMC; every prior is the spec's (``Prior.dist`` and ``.params``)."""
    import pymc as pm
    import pytensor.tensor as pt

    def prior(name, p):
        return getattr(pm, p.dist)(name, **p.params)

    with pm.Model(coords={"ID": obs.ids}) as model:
        ind = {}
        for p in PARAMS:
            typical = prior(p, spec.parameters[p].typical)
            omega = prior(f"omega_{p}", spec.parameters[p].iiv)
            z = pm.Normal(f"z_{p}", 0.0, 1.0, dims="ID")
            ind[p] = (typical * pt.exp(omega * z))[obs.subject]  # eta = omega * z
        cl, v, ka = ind["CL"], ind["V"], ind["KA"]
        k = cl / v  # F = 1: the spec has no bioavailability parameter
        c = obs.dose * ka / (v * (ka - k)) * (pt.exp(-k * obs.time) - pt.exp(-ka * obs.time))
        sigma = prior("sigma_log", spec.error.priors["sigma_log"])
        pm.LogNormal("DV", mu=pt.log(c), sigma=sigma, observed=obs.dv)
    return model


def stan_data(spec, obs: Observations) -> dict:
    """The Stan program's data: observations and the spec's priors (LogNormal / HalfNormal only)."""

    def params(p, dist, *keys):
        if p.dist != dist:
            raise ValueError(f"STAN_PROGRAM takes a {dist} prior here, the spec has {p!r}")
        return [p.params[k] for k in keys]

    tv = [params(spec.parameters[p].typical, "LogNormal", "mu", "sigma") for p in PARAMS]
    return {
        "N": len(obs.ids), "M": len(obs.dv), "id": [int(s) + 1 for s in obs.subject],
        "time": obs.time.tolist(), "dose": obs.dose.tolist(), "dv": obs.dv.tolist(),
        "tv_mu": [m for m, _ in tv], "tv_sigma": [s for _, s in tv],
        "omega_sigma": [params(spec.parameters[p].iiv, "HalfNormal", "sigma")[0] for p in PARAMS],
        "sigma_log_sigma": params(spec.error.priors["sigma_log"], "HalfNormal", "sigma")[0],
    }  # fmt: skip


def jittered(model) -> set:
    """bayespk's starting policy (``bayespk.fit._jittered``): jitter omegas and sigma only."""
    return {rv for rv in model.free_RVs if rv.name.startswith(("omega_", "sigma_"))}


# ====================================================================== same posterior?
def common_points(n_subjects: int, k: int = 3, seed: int = 0) -> list[dict]:
    """Points on the unconstrained scale, by value-variable name (``CL_log__``, ``z_CL``...)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for j in range(k):
        pt_ = {f"{p}_log__": math.log(SIM_TRUTH[p]) + 0.3 * j * rng.standard_normal() for p in PARAMS}
        pt_ |= {f"omega_{p}_log__": math.log(0.3) + 0.3 * rng.standard_normal() for p in PARAMS}
        pt_ |= {f"z_{p}": rng.standard_normal(n_subjects) for p in PARAMS}
        pt_["sigma_log_log__"] = math.log(0.2) + 0.3 * rng.standard_normal()
        out.append({k_: np.asarray(v, dtype=float) for k_, v in pt_.items()})
    return out


def _stan_value_names() -> list[str]:
    """The PyMC value-variable name of each block of Stan's unconstrained vector."""
    return [f"{n}_log__" if log else n for n, log in STAN_LAYOUT]


def to_stan_vector(point: dict) -> list[float]:
    import numpy as np

    return np.concatenate([np.atleast_1d(point[n]) for n in _stan_value_names()]).tolist()


def check_same_posterior(model_a, model_b, n_subjects: int, stan_module=None, stan_data_=None) -> dict:
    """logp of (a) - (b) (and Stan) is one constant over several points, and the gradients agree.

    Raises RuntimeError when not. Stan's ``~`` statements drop constant terms, so its
    log density differs from PyMC's by a constant too; its gradient is compared after
    reordering to PyMC's variables.
    """
    import numpy as np

    points = common_points(n_subjects)
    fa, fb = model_a.compile_logp(), model_b.compile_logp()
    ga, gb = model_a.compile_dlogp(), model_b.compile_dlogp()
    names_a = [model_a.rvs_to_values[rv].name for rv in model_a.free_RVs]
    names_b = [model_b.rvs_to_values[rv].name for rv in model_b.free_RVs]
    if sorted(names_a) != sorted(names_b):
        raise RuntimeError(f"(a) and (b) have different free variables: {names_a} vs {names_b}")

    def by_name(grad, names, point):  # a flat gradient split into the variables
        sizes = [np.size(point[n]) for n in names]
        return dict(zip(names, np.split(np.asarray(grad), np.cumsum(sizes)[:-1])))

    def rel_diff(d1, d2):  # largest relative difference of two gradients
        return max(float(np.max(np.abs(d1[n] - d2[n]) / (1 + np.abs(d1[n])))) for n in d1)

    rows = []
    for point in points:
        la, lb = float(fa(point)), float(fb(point))
        da = by_name(ga(point), names_a, point)
        row = {"logp_a": la, "logp_b": lb, "diff_ab": la - lb,
               "max_grad_rel_diff_ab": rel_diff(da, by_name(gb(point), names_b, point))}
        if stan_module is not None:
            x = to_stan_vector(point)
            ls = float(stan_module.log_prob(stan_data_, x, True))
            ds = by_name(stan_module.log_prob_grad(stan_data_, x, True), _stan_value_names(), point)
            row |= {"logp_stan": ls, "diff_a_stan": la - ls, "max_grad_rel_diff_a_stan": rel_diff(da, ds)}
        rows.append(row)
    scale = max(1.0, *(abs(r["logp_a"]) for r in rows))
    problems = []
    for key, grad_key, what in (("diff_ab", "max_grad_rel_diff_ab", "(a) bayespk and (b) PyMC by hand"),
                                ("diff_a_stan", "max_grad_rel_diff_a_stan", "(a) bayespk and (c) Stan")):
        if key not in rows[0]:
            continue
        diffs = [r[key] for r in rows]
        spread = max(diffs) - min(diffs)
        worst_grad = max(r[grad_key] for r in rows)
        if not (spread <= 1e-8 * scale and worst_grad <= 1e-7):
            problems.append(f"{what} differ: logp differences {diffs} (spread {spread:.3g}), "
                            f"largest relative gradient difference {worst_grad:.3g}")
    if problems:
        raise RuntimeError("the models do not define the same posterior:\n  " + "\n  ".join(problems))
    return {"points": rows, "ok": True}


# ====================================================================== timing
def time_nutpie_logp_grad(compiled, x, seconds: float = 1.0) -> dict:
    """Microseconds per call of nutpie's compiled log-density + gradient (the C callback its sampler
    calls), from a numba loop; median over batches."""
    import numba
    import numpy as np

    fn = compiled.compiled_logp_func.ctypes

    @numba.njit
    def calls(n, x, g, lp, ud):
        rc = 0
        for _ in range(n):
            rc |= fn(x.size, x.ctypes, g.ctypes, lp.ctypes, ud.ctypes)
        return rc

    x = np.ascontiguousarray(x, dtype=np.float64)
    g, lp, ud = np.zeros_like(x), np.zeros(()), compiled.user_data
    if calls(1, x, g, lp, ud) != 0:  # also compiles the loop
        raise RuntimeError("nutpie's logp function returned an error at the timing point")
    batch = 1
    while True:
        t0 = time.perf_counter()
        calls(batch, x, g, lp, ud)
        if time.perf_counter() - t0 > 2e-3 or batch >= 1 << 20:
            break
        batch *= 2
    per_call = []
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end or len(per_call) < 5:
        t0 = time.perf_counter()
        calls(batch, x, g, lp, ud)
        per_call.append((time.perf_counter() - t0) / batch)
    return {"us": statistics.median(per_call) * 1e6, "batch": batch, "batches": len(per_call),
            "logp": float(lp)}


def _median_call_us(f, seconds: float) -> tuple[float, int]:
    f()
    times = []
    t_end = time.perf_counter() + seconds
    while time.perf_counter() < t_end or len(times) < 5:
        t0 = time.perf_counter()
        f()
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e6, len(times)


def time_stan_logp_grad(module, data: dict, x: list[float], seconds: float = 1.0) -> dict:
    """httpstan's in-process ``log_prob_grad`` and ``log_prob`` per call (for the record: both rebuild the
    model from the data on every call, which costs more than the gradient, so the table takes Stan's
    gradient from its sampling clock instead)."""
    full, n_full = _median_call_us(lambda: module.log_prob_grad(data, x, True), seconds)
    lp, n_lp = _median_call_us(lambda: module.log_prob(data, x, True), seconds / 2)
    return {"us": full, "us_log_prob_grad_call": full, "us_log_prob_call": lp,
            "calls": n_full, "calls_log_prob": n_lp}


def _ess_min(ds, names) -> tuple[float, str]:
    import arviz as az

    ess = az.ess(ds[list(names)], method="bulk")
    vals = {n: float(ess[n]) for n in names}
    worst = min(vals, key=vals.get)
    return vals[worst], worst


def _means(post, names) -> dict:
    return {n: float(post[n].mean()) for n in names}


def _point_vector(compiled, point: dict):
    """A point by value-variable name as nutpie's flat vector."""
    import numpy as np

    names, slices, shapes = compiled.shape_info
    x = np.empty(compiled.n_dim)
    for name, sl in zip(names, slices):
        if sl.stop <= compiled.n_dim:
            x[sl] = np.asarray(point[name], dtype=float).reshape(-1)
    return x


def run_nutpie(label: str, model, spec, settings: dict, point: dict, logp_seconds: float) -> dict:
    import nutpie

    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    compiled = nutpie.compile_pymc_model(model, jitter_rvs=jittered(model))
    compile_s = time.perf_counter() - t0
    counts = scalar_op_counts(compiled.logp_func)
    timing = time_nutpie_logp_grad(compiled, _point_vector(compiled, point), logp_seconds)
    t0 = time.perf_counter()
    tree = nutpie.sample(compiled, draws=settings["draws"], tune=settings["tune"], chains=settings["chains"],
                         seed=SEED, target_accept=spec.sampler.target_accept, progress_bar=False,
                         save_warmup=True)  # warm-up kept for its leapfrog steps
    sampling_s = time.perf_counter() - t0
    stats = tree["sample_stats"].to_dataset()
    warm = tree["warmup_sample_stats"].to_dataset()
    assert stats.sizes["draw"] == settings["draws"] and warm.sizes["draw"] == settings["tune"]
    steps = int(stats["n_steps"].sum()) + int(warm["n_steps"].sum())
    post = tree["posterior"].to_dataset()
    ess, worst = _ess_min(post, spec.population_parameters)
    divergences = int(stats["diverging"].sum())
    return _result(label, compile_s, False, sampling_s, steps, divergences, ess, worst, timing, counts, settings,
                   load) | {"posterior_mean": _means(post, spec.population_parameters)}


def run_stan(spec, obs: Observations, settings: dict, point: dict, logp_seconds: float, init_model) -> dict:
    import httpstan.models
    import numpy as np
    import xarray as xr
    from pymc.initial_point import make_initial_point_fn

    load = os.getloadavg()[0]
    posterior, compile_s, cached = stan_build(stan_data(spec, obs))
    module = httpstan.models.import_services_extension_module(posterior.model_name)
    timing = time_stan_logp_grad(module, posterior.data, to_stan_vector(point), logp_seconds)
    # starting points: the hand-written PyMC model's, by the same policy (constrained values)
    fn = make_initial_point_fn(model=init_model, jitter_rvs=jittered(init_model), return_transformed=False)
    names = {rv.name for rv in init_model.free_RVs}
    chains, draws, tune = settings["chains"], settings["draws"], settings["tune"]
    inits = [{k: (v.tolist() if np.ndim(v) else float(v)) for k, v in fn(SEED + c).items() if k in names}
             for c in range(chains)]
    _forget_stan_fits(posterior.model_name)  # else a seeded fit run before comes back from httpstan's cache
    outputs: list = []
    with _capture_stan_outputs(outputs), contextlib.redirect_stderr(io.StringIO()) as messages:
        t0 = time.perf_counter()
        fit = posterior.sample(num_chains=chains, num_samples=draws, num_warmup=tune, save_warmup=True,
                               delta=spec.sampler.target_accept, init=inits)
        sampling_s = time.perf_counter() - t0

    def by_chain(name):  # pystan: a scalar's draws as (1, (tune + draws) * chains), the chain varying fastest
        return np.asarray(fit[name]).reshape(tune + draws, chains).T

    post = xr.Dataset({n: (("chain", "draw"), by_chain(n)[:, tune:]) for n in spec.population_parameters})
    chain_steps = by_chain("n_leapfrog__").sum(axis=1)
    ess, worst = _ess_min(post, spec.population_parameters)
    out = _result("stan", compile_s, cached, sampling_s, int(chain_steps.sum()),
                  int(by_chain("divergent__")[:, tune:].sum()), ess, worst, timing,
                  {"Switch": None, "Exp": None, "Expm1": None}, settings, load)
    elapsed = _stan_elapsed(outputs)  # Stan's own clock per chain: warm-up + sampling
    if len(elapsed) == chains:
        per_step = [t / s * 1e6 for t, s in zip(elapsed, chain_steps)]
        out |= {"stan_elapsed_s": elapsed, "stan_internal_s": max(elapsed),
                "ess_per_s_stan_internal": ess / max(elapsed),
                # the gradient as Stan's sampler sees it (the per-call API rebuilds the model every call)
                "logp_grad_us": statistics.median(per_step), "logp_grad_from": "stan_clock_per_leapfrog"}
    out["stan_messages"] = messages.getvalue().count("Informational Message")
    out["posterior_mean"] = _means(post, spec.population_parameters)
    return out


def stan_build(data: dict):
    """``stan.build`` (quiet): the posterior, seconds, whether httpstan's cache had the model."""
    import stan

    cached = _stan_cached()
    if not cached:
        print("  compiling the Stan program (C++, 1-2 minutes) ...", flush=True)
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        t0 = time.perf_counter()
        posterior = stan.build(STAN_PROGRAM, data=data, random_seed=SEED)
        seconds = time.perf_counter() - t0
    return posterior, seconds, cached


def _stan_cached() -> bool:
    """Whether httpstan's cache has STAN_PROGRAM compiled already."""
    import httpstan.cache
    import httpstan.models

    return httpstan.cache.model_directory(httpstan.models.calculate_model_name(STAN_PROGRAM)).exists()


def _forget_stan_fits(model_name: str) -> None:
    """Delete the cached fits of STAN_PROGRAM (httpstan returns a seeded fit from its cache)."""
    import httpstan.cache

    for f in (httpstan.cache.model_directory(model_name) / "fits").glob("*.jsonlines.gz"):
        f.unlink()


@contextlib.contextmanager
def _capture_stan_outputs(outputs: list):
    """Keep the raw Stan output messages pystan builds its Fit from (they hold Stan's timings)."""
    import stan.fit

    original = stan.fit.Fit

    class Fit(original):
        def __init__(self, stan_outputs, *args, **kwargs):
            outputs.extend(stan_outputs)
            super().__init__(stan_outputs, *args, **kwargs)

    stan.fit.Fit = Fit
    try:
        yield outputs
    finally:
        stan.fit.Fit = original


def _stan_elapsed(outputs: list) -> list[float]:
    """Per chain, Stan's "Elapsed Time ... seconds (Total)" (warm-up + sampling)."""
    totals = []
    for out in outputs:
        for line in out.splitlines():
            if b'"logger"' in line and b"(Total)" in line:
                m = re.search(r"([0-9.eE+-]+) seconds \(Total\)", json.loads(line)["values"][0])
                if m:
                    totals.append(float(m.group(1)))
    return totals


def _result(label, compile_s, cached, sampling_s, steps, divergences, ess, worst, timing, counts, settings,
            load) -> dict:
    return {
        "model": label, "compile_s": compile_s, "compile_cached": cached, "sampling_s": sampling_s,
        "leapfrog_steps": steps,  # warm-up and draws, all chains
        "us_per_grad_sampling": sampling_s / (steps / settings["chains"]) * 1e6,
        "divergences": divergences, "min_ess_bulk": ess, "min_ess_bulk_parameter": worst,
        "ess_per_s": ess / sampling_s, "logp_grad_us": timing["us"], "logp_grad_from": "direct_calls",
        "logp_grad": timing, "n_switch": counts["Switch"], "n_exp": counts["Exp"], "n_expm1": counts["Expm1"],
        "loadavg_before": round(load, 2), "loadavg_after": round(os.getloadavg()[0], 2),
    }  # fmt: skip


# ====================================================================== driver
def _stan_available() -> tuple[bool, str]:
    try:
        import httpstan.models  # noqa: F401
        import stan  # noqa: F401
    except ImportError as e:
        return False, f"pystan is not importable ({e}); install it with `pip install -e .[bench]`"
    return True, ""


MEDIAN_KEYS = ("compile_s", "sampling_s", "min_ess_bulk", "ess_per_s", "logp_grad_us", "us_per_grad_sampling",
               "divergences", "leapfrog_steps")


STAN_KEYS = ("stan_internal_s", "ess_per_s_stan_internal")


def summarize(runs: list[dict]) -> dict:
    """Median over repeats of each number; op counts are the same in every repeat."""
    out = {k: statistics.median(r[k] for r in runs) for k in MEDIAN_KEYS}
    for k in STAN_KEYS:
        vals = [r[k] for r in runs if r.get(k) is not None]
        out[k] = statistics.median(vals) if vals else None
    first = runs[0]
    out |= {k: first[k] for k in ("model", "n_switch", "n_exp", "n_expm1", "logp_grad_from")}
    out["compile_cached"] = all(r["compile_cached"] for r in runs)
    out["repeats"] = len(runs)
    return out


def markdown(report: dict) -> str:
    s = report["settings"]
    run = {"quick": False, "cold_cache": False, "settings": s, "environment": report["environment"]}
    lines = ["# bayespk speed: the bayespk model against the same model by hand in PyMC and in Stan", ""]
    lines += _run_lines(run)
    lines += [f"- repeats: {s['repeats']} (the models interleaved in each; the table gives medians over repeats); "
              f"target_accept {s['target_accept']}, seed {s['seed']}",
              f"- load average (1 min) during the run: {report['load_min']:.2f} to {report['load_max']:.2f} "
              f"on {report['environment']['cpu_count']} CPUs"]
    if report.get("stan_note"):
        lines.append(f"- Stan: {report['stan_note']}")
    if report.get("stan_compile"):
        lines.append(f"- Stan: the C++ compile of the program took {report['stan_compile']['seconds']:.1f} s in this "
                     "run (before the repeats, which then found it in httpstan's cache)")
    lines += ["", ("| N | model | compile s | sampling s | min ESS bulk | ESS/s | logp+grad us | #Switch | #Exp "
                   "| #Expm1 | us/grad in sampling | divergences |"),
              "|--:|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for block in report["results"]:
        for r in block["summary"]:
            comp = _f(r["compile_s"], 1) + (" (cached)" if r["compile_cached"] else "")

            def stan(x, nd):  # Stan's own clock beside pystan's wall time
                return f" (Stan: {_f(x, nd)})" if x is not None else ""

            dagger = "\u2020" if r["logp_grad_from"] != "direct_calls" else ""
            lines.append(
                f"| {block['n_subjects']} | {r['model']} | {comp} "
                f"| {_f(r['sampling_s'], 2)}{stan(r.get('stan_internal_s'), 2)} "
                f"| {_f(r['min_ess_bulk'], 0)} | {_f(r['ess_per_s'], 1)}{stan(r.get('ess_per_s_stan_internal'), 1)} "
                f"| {_f(r['logp_grad_us'], 1)}{dagger} "
                f"| {_f(r['n_switch'], 0, '-')} | {_f(r['n_exp'], 0, '-')} | {_f(r['n_expm1'], 0, '-')} "
                f"| {_f(r['us_per_grad_sampling'], 1)} | {r['divergences']:g} |")
    checks = "; ".join(
        f"N = {b['n_subjects']}: " + ", ".join(f"{p['diff_ab']:.3g}" for p in b["check"]["points"])
        for b in report["results"])
    lines += [
        "",
        "- N: subjects (12: the theophylline data, 120 observations; otherwise simulated, 10 observations each).",
        "- compile s: `nutpie.compile_pymc_model` (PyTensor graph to numba) or `stan.build` (C++; *cached*: "
        "httpstan had the model compiled already, and the figure is only the lookup).",
        "- sampling s: tuning + draws, chains in parallel, compile excluded. For Stan the wall time of pystan's "
        "`sample()`, which also forks the chain processes and sends every draw through httpstan as JSON; "
        "in brackets Stan's own clock (slowest chain, warm-up + sampling), and ESS/s on it.",
        "- min ESS bulk: smallest bulk ESS over the population parameters (CL, V, KA, the omegas, sigma_log); "
        "ESS/s: min ESS bulk / sampling s.",
        "- logp+grad us: one log-density + gradient evaluation. nutpie: the compiled callback its sampler calls, "
        "called from a numba loop (median over batches). \u2020 Stan: Stan's clock per leapfrog step while "
        "sampling (median over chains; the NUTS bookkeeping is in it): httpstan's in-process `log_prob_grad` "
        "rebuilds the model from the data on every call, which costs more than the gradient (in speed.json).",
        "- #Switch, #Exp, #Expm1: scalar ops in the compiled log-density + gradient graph nutpie runs, those "
        "fused into Composites included (`benchmarks/_common.py: scalar_op_counts`).",
        "- us/grad in sampling: sampling s / leapfrog steps (warm-up included) of the average chain.",
        "",
        f"Same posterior: log density (a) bayespk - (b) PyMC by hand at 3 common points: {checks}; the gradients "
        "agree" + (" (and Stan's, its log density off by a constant)" if "diff_a_stan" in
                   report["results"][0]["check"]["points"][0] else "") + ".",
    ]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, nargs="+", default=[12, 200],
                    help="numbers of subjects: 12 is the theophylline data, others simulated (default 12 200)")
    ap.add_argument("--repeats", type=int, default=3, help="repeats of every measurement (default 3)")
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--tune", type=int, default=1000)
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--logp-seconds", type=float, default=1.0,
                    help="seconds spent timing logp+grad calls per model and repeat (default 1)")
    ap.add_argument("--no-stan", action="store_true", help="skip the Stan model")
    ap.add_argument("--stan-recompile", action="store_true",
                    help="drop the Stan model from httpstan's cache first, so that its C++ compile is timed")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    args = ap.parse_args(argv)

    warnings.filterwarnings("ignore", category=FutureWarning)
    from bayespk.model.population import PopulationModel

    use_stan, stan_note = (False, "skipped (--no-stan)") if args.no_stan else _stan_available()
    if not use_stan:
        print(f"note: Stan {stan_note}", flush=True)
    elif args.stan_recompile:
        import httpstan.cache
        import httpstan.models

        httpstan.cache.delete_model_directory(httpstan.models.calculate_model_name(STAN_PROGRAM))
    settings = {"chains": args.chains, "draws": args.draws, "tune": args.tune, "repeats": args.repeats,
                "target_accept": None, "seed": SEED}
    env = _environment(argv)
    env["command"] = shlex.join([os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT))
                                 else sys.executable, os.path.relpath(__file__, ROOT), *argv])
    for pkg in EXTRA_PACKAGES:
        try:
            env["versions"][pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            env["versions"][pkg] = None
    source_before = _source_hash()
    spec = speed_spec()
    settings["target_accept"] = spec.sampler.target_accept
    loads = [os.getloadavg()[0]]
    stan_compile = None  # the C++ compile, when this run had to do it
    blocks = []
    for n in args.n:
        t0 = time.perf_counter()
        data = dataset(n, spec)
        obs = Observations.from_frame(data)
        pop = PopulationModel(spec, data)
        model_a = pop.build()
        model_b = hand_model(pop.spec, obs)
        build_s = time.perf_counter() - t0
        print(f"N = {n}: {len(obs.ids)} subjects, {len(obs.dv)} observations", flush=True)
        module = sdata = None
        if use_stan:  # build once up front (C++ compile, 1-2 min the first time) for the check
            import httpstan.models

            posterior, seconds, cached = stan_build(stan_data(pop.spec, obs))
            if not cached:
                stan_compile = {"seconds": seconds, "n_subjects": len(obs.ids)}
            module = httpstan.models.import_services_extension_module(posterior.model_name)
            sdata = posterior.data
        try:
            check = check_same_posterior(model_a, model_b, len(obs.ids), module, sdata)
        except RuntimeError as e:
            print(f"FAILED (N = {n}): {e}", file=sys.stderr, flush=True)
            return 2
        stan_diffs = ", ".join(f"{r['diff_a_stan']:.9g}" for r in check["points"]) if use_stan else ""
        print("  same posterior: logp (a) - (b) = " + ", ".join(f"{r['diff_ab']:.9g}" for r in check["points"])
              + (f"; (a) - Stan = {stan_diffs}" if use_stan else "") + " at 3 points; gradients equal", flush=True)
        point = common_points(len(obs.ids))[0]
        runs: dict[str, list] = {m: [] for m in MODELS if use_stan or m != "stan"}
        for rep in range(args.repeats):
            for label in runs:
                if label == "stan":
                    r = run_stan(pop.spec, obs, settings, point, args.logp_seconds, model_b)
                else:
                    r = run_nutpie(label, model_a if label == "bayespk" else model_b, pop.spec, settings, point,
                                   args.logp_seconds)
                r["repeat"] = rep
                runs[label].append(r)
                loads.append(os.getloadavg()[0])
                print(f"  [{rep + 1}/{args.repeats}] {label:9s} compile {r['compile_s']:6.1f} s, sampling "
                      f"{r['sampling_s']:6.2f} s, min ESS {r['min_ess_bulk']:6.0f} ({r['min_ess_bulk_parameter']}), "
                      f"logp+grad {r['logp_grad_us']:8.1f} us, {r['us_per_grad_sampling']:7.1f} us/grad in sampling, "
                      f"{r['divergences']} div, load {r['loadavg_after']:.2f}", flush=True)
        blocks.append({"n_subjects": len(obs.ids), "n_observations": int(len(obs.dv)),
                       "data": "theophylline" if n == 12 else f"simulated (seed {SIM_OBS_SEED})",
                       "build_s": build_s, "check": check, "runs": runs,
                       "summary": [summarize(v) for v in runs.values()]})
    env["source_hash"] = source_before
    env["source_changed_during_run"] = _source_hash() != source_before
    report = {"settings": settings, "environment": env, "stan_note": stan_note if not use_stan else "",
              "stan_compile": stan_compile, "sim_truth": SIM_TRUTH, "stan_program": STAN_PROGRAM,
              "load_min": min(loads), "load_max": max(loads), "results": blocks}
    write_results(args.out, "speed", report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
