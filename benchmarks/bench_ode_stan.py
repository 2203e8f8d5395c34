"""bayespk against Stan on a user-written ODE population model (2-cmt Michaelis-Menten, infusions; issue #13).

Usage (from the repository root)::

    .venv/bin/python benchmarks/bench_ode_stan.py      # 100 subjects, 2 chains x 1000 after 1000 (1.5-3.5 h)
    .venv/bin/python benchmarks/bench_ode_stan.py --repeats 3
    .venv/bin/python benchmarks/bench_ode_stan.py --methods bayespk stan-rk45
    .venv/bin/python benchmarks/bench_ode_stan.py --smoke --stan-cached --out /tmp/ode_stan   # ~4-5 min
    .venv/bin/python benchmarks/bench_ode_stan.py --stan-cached    # reuse httpstan's compiled programs

One model, three ways, on the same data and priors:

* ``bayespk``: the bundled spec ``models/mm_2cmt_iv.toml`` (states central and
  peripheral; ``dcentral/dt = -Q (C - peripheral/V2) - VMAX C / (KM + C)``, ``C =
  central/V1``; 1-h IV infusions into central; IIV on V1 and VMAX, centred etas as
  the spec says, ``centered = true``; proportional error), fitted by
  ``bpk.fit(PopulationModel(spec, data=csv), ...)``: the ODE solved by diffrax
  (Tsit5, the spec's ``[model.solver]`` rtol 1e-4 / atol 1e-7, at most 4096 steps
  between nodes) inside the PyMC graph (``pytensor.wrap_jax``), sampled by
  nutpie's JAX backend with the spec's low-rank mass-matrix adaptation. The
  fit stores no pointwise log-likelihood (``[sampler] log_likelihood =
  "none"``; Stan computes none either), otherwise it is ``fit()`` as a user
  calls it;
* ``stan-rk45`` and ``stan-bdf``: the same model in Stan (:data:`STAN_TEMPLATE`)
  through PyStan 3 / httpstan, solved by ``ode_rk45_tol`` (Dormand-Prince 5(4),
  forward sensitivities) or ``ode_bdf_tol`` (CVODES BDF) with the spec's rtol and
  atol and ``max_num_steps`` = the spec's ``max_steps`` (both limits count the steps
  between two output times / nodes). The infusion is a piecewise right-hand side:
  solved from 0 to the end of the infusion (AMT / RATE) with the rate, then on
  from there without. Same parameterisation as bayespk's
  (``PopulationModel.individual_parameters`` / ``_etas``): typical values with the
  spec's LogNormal priors, HalfNormal omegas, ``P_i = P exp(eta_P_i)`` with
  ``eta ~ Normal(0, omega)`` sampled directly where the spec says ``centered``
  (else ``eta = omega z``, ``z ~ N(0, 1)``), ``DV ~ Normal(C, sigma_prop C)`` with
  the spec's HalfNormal prior; every prior and tolerance is passed as data from
  the parsed spec, so they cannot drift, and the script stops when the spec's
  equations are not the ones the Stan program implements.

Data: ``models/data/make_user_models.py`` (imported by path) simulates ``--n``
subjects exactly as it does the bundled ``mm_2cmt_iv.csv`` (its 24 subjects are
the first 24 of any larger N: doses 50/200/800 mg in turn, 10 samples each over
0.5-48 h; its fixed seed), written to a temporary CSV for bayespk; Stan gets the
same rows as arrays.

All methods: the same chains, draws, tuning steps, target acceptance (the
spec's, 0.9), seed (the spec's), and starting policy (bayespk's: typical values
at their prior's support point, etas at (bayespk: near) 0, omegas and sigma
jittered; for Stan ``bayespk.fit._start_points``, what bayespk gives PyMC's
sampler). Mass matrix: nutpie low-rank (the spec's), Stan diagonal (its default).

Before timing, the script checks that bayespk and Stan define the same
posterior (:func:`check_same_posterior`, as ``bench_speed.py`` does): at 3
common points on the unconstrained scale (the simulation truth with the
subjects' own etas, and two small moves from it) the log densities differ by
one constant (Stan's ``~`` drops normalising constants) and the gradients agree:

* to 1e-6 (relative) with every ODE solved tightly (rtol 1e-10, atol 1e-12,
  both sides): the models are the same;
* at the spec's tolerances, for each Stan solver: gradients to ``--check-grad``
  (default 5e-2, relative to the gradient's largest entry) and logp differences
  constant to ``--check-logp`` (default 5e-3) per observation (at 100 subjects,
  1000 observations, the spread over three points was 2.6, above 1e-3 x 1000
  and below 5e-3 x 1000, with gradients within 0.02). At rtol 1e-4 the
  solvers' own errors are of that order: against a tight solve, bayespk's
  gradient is off by up to ~1% near the truth (where the gradient is small),
  ``ode_bdf_tol``'s by ~0.7%, ``ode_rk45_tol``'s (whose error control includes
  the sensitivities) by ~0.05%; these errors are reported too.

It stops with an error when either fails.

Measured per method, interleaved in every repeat (bayespk, stan-rk45, stan-bdf, bayespk, ...):

* compile s: bayespk the ``nutpie.compile_pymc_model`` step of ``fit()`` (PyTensor to
  JAX; XLA compiles the function in the first draws, inside sampling s, and that
  JIT is reported separately, from a second compiled copy: jit s); Stan the C++
  compile of the program (``stan.build``), timed once per run before the repeats
  with httpstan's cache emptied first (``--stan-cached``: the cache is kept, and
  the figure is only a lookup, marked *cached*);
* wall s: bayespk the whole ``PopulationModel(...)`` + ``fit()`` call (reading the data,
  building, compiling, sampling, diagnostics); Stan the C++ compile + ``stan.build``
  + ``sample()``;
* sampling s: tuning + draws, chains in parallel (bayespk: ``fit()``'s wall_seconds -
  compile_seconds; Stan: pystan's ``sample()`` wall time, and in brackets Stan's own
  clock, the slowest chain);
* min ESS bulk over the population parameters (typical values, omegas, sigma_prop;
  ArviZ, rank-normalised); ESS/s on sampling s and on wall s; divergences; leapfrog
  steps per draw (after tuning, average chain);
* logp+grad us: one log-density + gradient evaluation. bayespk: the function
  nutpie's JAX backend calls from Rust for every leapfrog step (the Python
  callable of ``nutpie.compile_pymc_model(..., backend="jax",
  gradient_backend="pytensor")``, as ``fit()`` compiles it), called directly at the
  simulation truth, median over calls (its logp is checked against the
  same-posterior check's). Stan: Stan's own clock per leapfrog step after tuning
  (median over chains; as in ``bench_speed.py``), and beside it a direct httpstan
  ``log_prob_grad`` call at the simulation truth, which also rebuilds the model from
  the data on every call (its ``log_prob`` costs as much).

Estimated duration on the 2-core development machine (from smoke runs and
direct logp+grad timings at N = 100: bayespk 5.3 ms, Stan rk45 10.6 ms, bdf
41 ms per call; the leapfrog steps per draw after full tuning are the main
unknown), repeats 1, Stan compiled cold: bayespk ~7-12 min, stan-rk45 ~15-35
min (+2.5 min C++ compile), stan-bdf ~1-3 h (+2 min), the check ~1 min:
1.5-3.5 h in all, each further repeat as much again less the compiles.

Results: ``benchmarks/results/ode_stan.md`` and ``ode_stan.json`` (``--out`` elsewhere).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib.util
import io
import json
import math
import os
import re
import shlex
import statistics
import sys
import tempfile
import time
import warnings
from dataclasses import dataclass, replace
from functools import partial
from importlib import metadata
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_fit import RESULTS, ROOT, _environment, _f, _run_lines, _source_hash, write_results  # noqa: E402
from bench_speed import (  # noqa: E402
    EXTRA_PACKAGES,
    _capture_stan_outputs,
    _ess_min,
    _forget_stan_fits,
    _means,
    _median_call_us,
    _stan_available,
    time_stan_logp_grad,
)

SPEC_PATH = ROOT / "models" / "mm_2cmt_iv.toml"
GENERATOR = ROOT / "models" / "data" / "make_user_models.py"
MODEL = "mm_2cmt_iv"  # the generator's name for it
METHODS = ("bayespk", "stan-rk45", "stan-bdf")
STAN_SOLVER = {"stan-rk45": "ode_rk45_tol", "stan-bdf": "ode_bdf_tol"}
TIGHT = {"rtol": 1e-10, "atol": 1e-12}  # the tolerances of the exact same-posterior check
CHECK = {"tight": 1e-6, "grad": 5e-2, "logp_per_obs": 5e-3}  # limits of check_same_posterior (see there)
SMOKE = {"n": 8, "draws": 50, "tune": 50, "chains": 2, "repeats": 1, "logp_seconds": 0.5}

# The model in Stan. STRUCTURAL: the order of tv (and the arguments of the right-hand side).
STRUCTURAL = ("V1", "Q", "V2", "VMAX", "KM")
# The [model] tables of the spec this program implements (checked before anything runs).
EQUATIONS = {
    "states": ["central", "peripheral"],
    "ode": {"central": "-Q*(C - peripheral/V2) - VMAX*C/(KM + C)", "peripheral": "Q*(C - peripheral/V2)"},
    "derived": {"C": "central/V1"},
    "output": "C",
}
STAN_TEMPLATE = """
functions {
  // [model.ode] of models/mm_2cmt_iv.toml, plus a zero-order input into central
  vector mm_2cmt(real t, vector y, real rate, real V1, real Q, real V2, real VMAX, real KM) {
    vector[2] dydt;
    real C = y[1] / V1;
    real flow = Q * (C - y[2] / V2);
    dydt[1] = rate - flow - VMAX * C / (KM + C);
    dydt[2] = flow;
    return dydt;
  }
}
data {
  int<lower=1> N;                          // subjects
  int<lower=1> M;                          // observations
  vector<lower=0>[M] dv;
  vector<lower=0>[N] rate;                 // infusion rate into central (amount / h) ...
  vector<lower=0>[N] tinf;                 // ... from the dose (time 0) to tinf = AMT / RATE
  int<lower=1> T1;                         // output times up to tinf, stacked by subject (each ends at tinf)
  array[T1] real t1;
  array[N] int<lower=1> start1;
  array[N] int<lower=1> len1;
  int<lower=0> T2;                         // output times after tinf, stacked by subject
  array[T2] real t2;
  array[N] int<lower=1> start2;
  array[N] int<lower=0> len2;
  array[M] int<lower=1, upper=T1 + T2> pos;  // each observation's place in [t1, t2]
  vector[5] tv_mu;                         // LogNormal priors of V1, Q, V2, VMAX, KM
  vector<lower=0>[5] tv_sigma;
  int<lower=0, upper=5> K;                 // parameters with IIV ...
  array[K] int<lower=1, upper=5> iiv;      // ... which (index into tv) ...
  array[K] int<lower=0, upper=1> centered; // ... and whether eta is sampled directly (else eta = omega z)
  vector<lower=0>[K] omega_sigma;          // HalfNormal priors of the omegas
  real<lower=0> sigma_prop_sigma;          // HalfNormal prior of sigma_prop
  real<lower=0> rtol;
  real<lower=0> atol;
  int<lower=1> max_num_steps;
}
parameters {
  vector<lower=0>[5] tv;
  vector<lower=0>[K] omega;
  array[K] vector[N] eta_raw;              // eta (centered) or z (non-centred)
  real<lower=0> sigma_prop;
}
model {
  matrix[N, 5] log_par = rep_matrix(log(tv)', N);
  for (k in 1:K) {
    if (centered[k] == 1) {
      eta_raw[k] ~ normal(0, omega[k]);
      log_par[:, iiv[k]] += eta_raw[k];
    } else {
      eta_raw[k] ~ std_normal();
      log_par[:, iiv[k]] += omega[k] * eta_raw[k];
    }
  }
  matrix[N, 5] par = exp(log_par);
  vector[T1 + T2] conc;
  for (i in 1:N) {
    int a = start1[i];
    int b = start1[i] + len1[i] - 1;
    array[len1[i]] vector[2] y1 = @ODE@(mm_2cmt, rep_vector(0, 2), 0, t1[a:b], rtol, atol, max_num_steps,
                                        rate[i], par[i, 1], par[i, 2], par[i, 3], par[i, 4], par[i, 5]);
    for (j in 1:len1[i]) conc[a + j - 1] = y1[j][1] / par[i, 1];
    if (len2[i] > 0) {
      int c = start2[i];
      int d = start2[i] + len2[i] - 1;
      array[len2[i]] vector[2] y2 = @ODE@(mm_2cmt, y1[len1[i]], tinf[i], t2[c:d], rtol, atol, max_num_steps,
                                          0.0, par[i, 1], par[i, 2], par[i, 3], par[i, 4], par[i, 5]);
      for (j in 1:len2[i]) conc[T1 + c + j - 1] = y2[j][1] / par[i, 1];
    }
  }
  tv ~ lognormal(tv_mu, tv_sigma);
  omega ~ normal(0, omega_sigma);
  sigma_prop ~ normal(0, sigma_prop_sigma);
  {
    vector[M] c = conc[pos];
    dv ~ normal(c, sigma_prop * c);
  }
}
"""


def stan_program(method: str) -> str:
    return STAN_TEMPLATE.replace("@ODE@", STAN_SOLVER[method])


# ====================================================================== data and spec
def generator():
    """``models/data/make_user_models.py`` as a module (imported by path)."""
    spec = importlib.util.spec_from_file_location("_make_user_models", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def simulate_csv(n: int, path: Path) -> dict:
    """Write ``n`` subjects simulated exactly as the generator does mm_2cmt_iv to ``path``; the truth.

    The truth includes each subject's simulated etas, drawn again from the generator's random stream in
    the order its ``simulate`` draws them (they only place the check points near the posterior: should the
    generator change, the points move, not the check).
    """
    import numpy as np

    gen = generator()
    gen.N_SUBJECTS[MODEL] = n  # the generator's subject count, read by simulate()
    path.write_text(gen.simulate(MODEL), newline="\n")
    omega = dict(gen.OMEGA[MODEL])
    rng = np.random.default_rng([gen.SEED, gen.STREAM[MODEL]])
    etas: dict = {k: [] for k in omega}
    for _ in range(n):
        for k, w in omega.items():
            etas[k].append(float(rng.normal(0.0, w)))
        rng.normal(size=len(gen.TIMES[MODEL]))  # the residuals
    return {"typical": dict(gen.TRUTH[MODEL]), "omega": omega, "sigma_prop": gen.SIGMA_PROP, "eta": etas,
            "seed": [gen.SEED, gen.STREAM[MODEL]]}


def load_spec():
    """The parsed spec, checked against what the Stan program implements."""
    from bayespk.model.spec import Spec

    spec = Spec.from_toml(SPEC_PATH)
    raw = spec.user.raw if spec.user is not None else {}
    problems = [f"[model] {k} is {raw.get(k)!r}, the Stan program implements {v!r}"
                for k, v in EQUATIONS.items() if raw.get(k) != v]
    if set(spec.parameters) != set(STRUCTURAL):
        problems.append(f"parameters {list(spec.parameters)}, the Stan program has {list(STRUCTURAL)}")
    for name, p in spec.parameters.items():
        if p.typical.dist != "LogNormal" or (p.iiv is not None and p.iiv.dist != "HalfNormal"):
            problems.append(f"{name}: priors {p.typical!r}, {p.iiv!r}; the Stan program takes LogNormal / "
                            "HalfNormal")
        if p.iov is not None or p.relation is not None:
            problems.append(f"{name}: IOV or a relation, which the Stan program does not have")
    if spec.covariates or spec.correlated:
        problems.append("covariates or correlated IIV, which the Stan program does not have")
    err = spec.error
    if (err.model != "proportional" or err.by is not None or err.student_t
            or err.priors["sigma_prop"].dist != "HalfNormal"):
        problems.append(f"[error] {err!r}; the Stan program has proportional normal error, HalfNormal prior")
    if problems:
        raise SystemExit(f"{SPEC_PATH.relative_to(ROOT)} no longer matches the Stan program:\n  "
                         + "\n  ".join(problems))
    return spec


def with_tolerances(spec, rtol: float, atol: float):
    """The spec with other ODE solver tolerances (for the exact same-posterior check)."""
    user = spec.user
    model = replace(user.model, solver=replace(user.model.solver, rtol=rtol, atol=atol))
    return replace(spec, user=replace(user, model=model))


@dataclass(frozen=True)
class StanRows:
    """The data rows as the Stan program sees them."""

    ids: list  # subject IDs, in order of first appearance
    data: dict  # the program's data block, without priors and tolerances


def stan_rows(csv: Path) -> StanRows:
    import pandas as pd

    d = pd.read_csv(csv, na_values=".")
    doses = d[d.EVID == 1]
    if doses.ID.duplicated().any() or (doses.CMT != 1).any() or not (doses.RATE > 0).all():
        raise ValueError("the Stan program takes one infusion (RATE > 0) into CMT 1 per subject")
    obs = d[(d.EVID == 0) & (d.MDV == 0)]
    ids = list(dict.fromkeys(obs.ID))
    dose = doses.set_index("ID").reindex(ids)
    t_dose, tinf = dose.TIME.to_numpy(float), (dose.AMT / dose.RATE).to_numpy(float)
    subject = {i: k for k, i in enumerate(ids)}
    rel = obs.TIME.to_numpy(float) - t_dose[[subject[i] for i in obs.ID]]
    if not (rel > 0).all():
        raise ValueError("every observation must follow its subject's dose")
    t1, t2, start1, len1, start2, len2 = [], [], [], [], [], []
    place: dict = {}  # (ID, time since dose) -> 1-based place in [t1, t2] (t2 offset by T1 below)
    for k, i in enumerate(ids):
        t = rel[(obs.ID == i).to_numpy()]
        during = sorted({*t[t <= tinf[k]].tolist(), float(tinf[k])})  # ends at the end of the infusion
        after = sorted(set(t[t > tinf[k]].tolist()))
        start1.append(len(t1) + 1)
        len1.append(len(during))
        start2.append(len(t2) + 1 if after else 1)
        len2.append(len(after))
        place |= {(i, x): (1, len(t1) + j + 1) for j, x in enumerate(during)}
        place |= {(i, x): (2, len(t2) + j + 1) for j, x in enumerate(after)}
        t1 += during
        t2 += after
    pos = [j if part == 1 else len(t1) + j
           for part, j in (place[(i, x)] for i, x in zip(obs.ID, rel.tolist()))]
    return StanRows(ids=ids, data={
        "N": len(ids), "M": len(obs), "dv": obs.DV.to_numpy(float).tolist(),
        "rate": dose.RATE.to_numpy(float).tolist(), "tinf": tinf.tolist(),
        "T1": len(t1), "t1": t1, "start1": start1, "len1": len1,
        "T2": len(t2), "t2": t2, "start2": start2, "len2": len2,
        "pos": pos,
    })  # fmt: skip


def iiv_names(spec) -> list[str]:
    return [p for p in STRUCTURAL if spec.parameters[p].iiv is not None]


def stan_data(spec, rows: StanRows, rtol: float | None = None, atol: float | None = None) -> dict:
    """The program's data: the rows, and the spec's priors and solver settings."""
    solver = spec.user.model.solver
    iiv = iiv_names(spec)
    return rows.data | {
        "tv_mu": [spec.parameters[p].typical.params["mu"] for p in STRUCTURAL],
        "tv_sigma": [spec.parameters[p].typical.params["sigma"] for p in STRUCTURAL],
        "K": len(iiv), "iiv": [STRUCTURAL.index(p) + 1 for p in iiv],
        "centered": [int(bool(spec.parameters[p].centered)) for p in iiv],
        "omega_sigma": [spec.parameters[p].iiv.params["sigma"] for p in iiv],
        "sigma_prop_sigma": spec.error.priors["sigma_prop"].params["sigma"],
        "rtol": solver.rtol if rtol is None else rtol, "atol": solver.atol if atol is None else atol,
        "max_num_steps": solver.max_steps,
    }  # fmt: skip


def eta_value_name(spec, p: str) -> str:
    """bayespk's sampled per-subject variable of parameter p: eta_P (centred) or z_P."""
    return f"eta_{p}" if spec.parameters[p].centered else f"z_{p}"


def stan_layout(spec) -> list[tuple[str, str]]:
    """Stan's unconstrained vector in declaration order: (PyMC value-variable name, Stan name) per block."""
    iiv = iiv_names(spec)
    return [*((f"{p}_log__", f"tv.{k + 1}") for k, p in enumerate(STRUCTURAL)),
            *((f"omega_{p}_log__", f"omega.{k + 1}") for k, p in enumerate(iiv)),
            *((eta_value_name(spec, p), f"eta_raw.{k + 1}") for k, p in enumerate(iiv)),
            ("sigma_prop_log__", "sigma_prop")]


def to_stan_vector(spec, point: dict) -> list[float]:
    import numpy as np

    return np.concatenate([np.atleast_1d(point[n]) for n, _ in stan_layout(spec)]).tolist()


def stan_inits(spec, start_points: list[dict]) -> list[dict]:
    """bayespk's constrained starting points (by RV name) as Stan inits."""
    import numpy as np

    iiv = iiv_names(spec)
    out = []
    for s in start_points:
        out.append({
            "tv": [float(s[p]) for p in STRUCTURAL],
            "omega": [float(s[f"omega_{p}"]) for p in iiv],
            "eta_raw": [np.asarray(s[eta_value_name(spec, p)], float).tolist() for p in iiv],
            "sigma_prop": float(s["sigma_prop"]),
        })  # fmt: skip
    return out


def stan_posterior(spec, fit, chains: int, tune: int, draws: int):
    """pystan's draws (warm-up saved) as (chains, draws) arrays by bayespk's names; and the stats."""
    import numpy as np
    import xarray as xr

    def by_chain(x):  # a scalar's draws as (1, (tune + draws) * chains), the chain varying fastest
        return np.asarray(x).reshape(tune + draws, chains).T

    iiv = iiv_names(spec)
    tv, omega = np.asarray(fit["tv"]), np.atleast_2d(np.asarray(fit["omega"]))
    series = {p: tv[k] for k, p in enumerate(STRUCTURAL)}
    series |= {f"omega_{p}": omega[k] for k, p in enumerate(iiv)}
    series["sigma_prop"] = np.asarray(fit["sigma_prop"])
    post = xr.Dataset({n: (("chain", "draw"), by_chain(v)[:, tune:]) for n, v in series.items()})
    return post, by_chain(fit["n_leapfrog__"]), by_chain(fit["divergent__"])


# ====================================================================== same posterior?
def common_points(spec, truth: dict, n_subjects: int, k: int = 3, seed: int = 0) -> list[dict]:
    """Points on the unconstrained scale by PyMC value-variable name: the simulation truth (the subjects'
    own etas), then small random moves from it, so that the points lie where the posterior has its mass
    (far from it, where residuals are tens of SDs, the ODE solvers' errors are magnified)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    out = []
    for j in range(k):
        move = 0.0 if j == 0 else 1.0
        pt_ = {f"{p}_log__": math.log(truth["typical"][p]) + 0.05 * move * rng.standard_normal()
               for p in STRUCTURAL}
        for p in iiv_names(spec):
            omega = truth["omega"].get(p, 0.2) * math.exp(0.1 * move * rng.standard_normal())
            eta = np.zeros(n_subjects) if p not in truth["omega"] else np.asarray(truth["eta"][p], float)
            eta = eta + 0.05 * move * rng.standard_normal(n_subjects)
            pt_[f"omega_{p}_log__"] = math.log(omega)
            pt_[eta_value_name(spec, p)] = eta if spec.parameters[p].centered else eta / omega
        pt_["sigma_prop_log__"] = math.log(truth["sigma_prop"]) + 0.1 * move * rng.standard_normal()
        out.append({k_: np.asarray(v, dtype=float) for k_, v in pt_.items()})
    return out


def _split(grad, order: list[str], point: dict) -> dict:
    """A flat gradient as {value-variable name: array}."""
    import numpy as np

    sizes = [np.size(point[n]) for n in order]
    return dict(zip(order, np.split(np.asarray(grad, float), np.cumsum(sizes)[:-1])))


def evaluate_bayespk(pm_model, points: list[dict]) -> list[tuple[float, dict]]:
    """bayespk's log density and gradient at each point: the function nutpie's JAX backend samples
    (:func:`nutpie_logp_grad`), as ``fit()`` compiles it."""
    fn, compiled, _ = nutpie_logp_grad(pm_model)
    names = [v.name for v in compiled._variables][:len(points[0])]
    out = []
    for p in points:
        logp, grad = fn(_point_vector(compiled, p))
        out.append((float(logp), _split(grad, names, p)))
    return out


def evaluate_stan(module, data: dict, spec, points: list[dict]) -> list[tuple[float, dict]]:
    """Stan's log density (Jacobian included) and gradient at each point, by PyMC's variable names."""
    layout = [n for n, _ in stan_layout(spec)]
    out = []
    for p in points:
        x = to_stan_vector(spec, p)
        grad = module.log_prob_grad(data, x, True)
        out.append((float(module.log_prob(data, x, True)), _split(grad, layout, p)))
    return out


def agreement(a: list, b: list) -> dict:
    """How two evaluations differ: logp(a) - logp(b) per point, their spread (a constant difference is
    a normalisation convention), and the largest gradient difference relative to the largest entry of a's
    gradient at that point (at least 1)."""
    import numpy as np

    diffs = [la - lb for (la, _), (lb, _) in zip(a, b)]
    grad = []
    for (_, ga), (_, gb) in zip(a, b):
        if sorted(ga) != sorted(gb):
            raise RuntimeError(f"different free variables: {sorted(ga)} vs {sorted(gb)}")
        scale = max(1.0, max(float(np.max(np.abs(v))) for v in ga.values()))
        grad.append(max(float(np.max(np.abs(ga[n] - gb[n]))) for n in ga) / scale)
    return {"logp_diff": diffs, "spread": max(diffs) - min(diffs), "grad_rel_diff": max(grad),
            "logp": [la for la, _ in a]}


def check_same_posterior(spec, csv: Path, rows: StanRows, truth: dict, modules: dict, check: dict) -> dict:
    """bayespk and each Stan program (``modules``: {label: httpstan module}) define the same posterior.

    As ``bench_speed.check_same_posterior``: at 3 common points (:func:`common_points`) the log densities
    differ by one constant (Stan's ``~`` drops normalising constants) and the gradients agree:

    * ``exact``: every ODE solved tightly (:data:`TIGHT`, both sides): logp differences constant to
      ``check["tight"]`` x |logp| and gradients to ``check["tight"]`` (relative): the same model;
    * ``spec``: at the spec's tolerances: logp differences constant to ``check["logp_per_obs"]`` per
      observation, gradients to ``check["grad"]``: the solvers' errors are small.

    Also returned (not checked): each method's error at the spec's tolerances against its own tight solve
    (``error``: logp differences and relative gradient differences). Raises RuntimeError on a failure.
    """
    from bayespk.model.population import PopulationModel

    points = common_points(spec, truth, len(rows.ids))
    evals = {}
    for tol_name, sp, tol in (("tight", with_tolerances(spec, **TIGHT), TIGHT), ("spec", spec, {})):
        pop = PopulationModel(sp, data=csv)
        if list(pop.design.subject_ids) != list(rows.ids):
            raise RuntimeError("bayespk orders the subjects differently from the Stan data")
        evals[("bayespk", tol_name)] = evaluate_bayespk(pop.build(), points)
        for m, module in modules.items():
            evals[(m, tol_name)] = evaluate_stan(module, stan_data(spec, rows, **tol), spec, points)
    m_obs = rows.data["M"]
    out = {"points": len(points), "tight": TIGHT, "limits": check, "exact": {}, "spec": {}, "error": {}}
    problems = []
    for m in modules:
        exact = agreement(evals[("bayespk", "tight")], evals[(m, "tight")])
        at_spec = agreement(evals[("bayespk", "spec")], evals[(m, "spec")])
        out["exact"][m], out["spec"][m] = exact, at_spec
        scale = max(1.0, *(abs(x) for x in exact["logp"]))
        if not (exact["spread"] <= check["tight"] * scale and exact["grad_rel_diff"] <= check["tight"]):
            problems.append(f"bayespk and {m}, ODEs solved tightly: logp differences {exact['logp_diff']} "
                            f"(spread {exact['spread']:.3g}, allowed {check['tight'] * scale:.3g}), relative "
                            f"gradient difference {exact['grad_rel_diff']:.3g} (allowed {check['tight']:g})")
        allowed = check["logp_per_obs"] * m_obs
        if not (at_spec["spread"] <= allowed and at_spec["grad_rel_diff"] <= check["grad"]):
            problems.append(f"bayespk and {m} at the spec's ODE tolerances: logp differences "
                            f"{at_spec['logp_diff']} "
                            f"(spread {at_spec['spread']:.3g}, allowed {check['logp_per_obs'] * m_obs:.3g}), "
                            f"relative gradient difference {at_spec['grad_rel_diff']:.3g} "
                            f"(allowed {check['grad']:g})")
    for m in ("bayespk", *modules):
        out["error"][m] = agreement(evals[(m, "spec")], evals[(m, "tight")])
    out["bayespk_logp"] = [la for la, _ in evals[("bayespk", "spec")]]  # to check the timed function against
    if problems:
        raise RuntimeError("bayespk and Stan do not define the same posterior:\n  " + "\n  ".join(problems))
    return out


# ====================================================================== runs
def _stan_model_name(program: str) -> str:
    import httpstan.models

    return httpstan.models.calculate_model_name(program)


def stan_build(program: str, data: dict, seed: int):
    """``stan.build`` (quiet): the posterior, seconds, whether httpstan's cache had the program."""
    import httpstan.cache
    import stan

    cached = httpstan.cache.model_directory(_stan_model_name(program)).exists()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        t0 = time.perf_counter()
        posterior = stan.build(program, data=data, random_seed=seed)
        seconds = time.perf_counter() - t0
    return posterior, seconds, cached


def _point_vector(compiled, point: dict):
    """A point by value-variable name as the flat vector of a nutpie-compiled model. Its order is that of
    the model nutpie compiled, which for the JAX backend is a frozen copy (``freeze_dims_and_data``) whose
    free variables need not be in the original model's order."""
    import numpy as np

    parts, size = [], 0
    for var in compiled._variables:  # the free (unconstrained) variables first, then the expanded ones
        if size >= compiled.n_dim:
            break
        v = np.atleast_1d(np.asarray(point[var.name], float)).ravel()
        parts.append(v)
        size += v.size
    x = np.concatenate(parts)
    if x.size != compiled.n_dim:
        raise RuntimeError(f"point of size {x.size}, nutpie's model has {compiled.n_dim} dimensions")
    return x


def nutpie_logp_grad(pm_model):
    """The log-density + gradient function nutpie's JAX backend calls for every leapfrog step (a Python
    callable, ``x -> (logp, grad)``), compiled as ``bayespk.fit`` compiles it; with the compiled model and
    the seconds ``nutpie.compile_pymc_model`` took. XLA compiles the function on its first call."""
    import nutpie

    t0 = time.perf_counter()
    compiled = nutpie.compile_pymc_model(pm_model, backend="jax", gradient_backend="pytensor")
    compile_s = time.perf_counter() - t0
    return partial(compiled._make_logp_func(), **compiled._shared_data), compiled, compile_s


def time_bayespk_logp_grad(pm_model, point: dict, seconds: float) -> dict:
    """nutpie's JAX-backend log-density + gradient (:func:`nutpie_logp_grad`): compile s, first call
    (XLA JIT) s, median us per call."""
    fn, compiled, compile_s = nutpie_logp_grad(pm_model)
    x = _point_vector(compiled, point)
    t0 = time.perf_counter()
    logp, _ = fn(x)
    first_s = time.perf_counter() - t0
    us, calls = _median_call_us(lambda: fn(x), seconds)
    return {"us": us, "calls": calls, "compile_s": compile_s, "first_call_s": first_s,
            "jit_s": max(first_s - us * 1e-6, 0.0), "logp": float(logp)}


def run_bayespk(csv: Path, settings: dict, point: dict, logp_seconds: float,
                expected_logp: float | None) -> dict:
    from bayespk.fit import fit as bayespk_fit
    from bayespk.model.population import PopulationModel

    spec = load_spec()
    load = os.getloadavg()[0]
    t0 = time.perf_counter()
    pop = PopulationModel(SPEC_PATH, data=csv)
    pop.spec = pop.spec.with_sampler(log_likelihood="none")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning on short smoke chains
        fit = bayespk_fit(pop, draws=settings["draws"], tune=settings["tune"], chains=settings["chains"],
                          seed=settings["seed"], target_accept=settings["target_accept"], progress=False)
    wall_s = time.perf_counter() - t0
    diag = fit.diagnostics()
    compile_s = diag["compile_seconds"]
    sampling_s = diag["wall_seconds"] - compile_s
    post = fit.posterior
    stats = fit.tree["sample_stats"].to_dataset()
    ess, worst = _ess_min(post, spec.population_parameters)
    steps = stats["n_steps"].values
    timing = time_bayespk_logp_grad(pop.build(), point, logp_seconds)
    if expected_logp is not None and abs(timing["logp"] - expected_logp) > 1e-6 * max(1, abs(expected_logp)):
        raise RuntimeError(f"the timed bayespk function gives logp {timing['logp']} at the first check "
                           f"point, the check {expected_logp}")
    return {
        "method": "bayespk", "compile_s": compile_s, "compile_cached": False, "jit_s": timing["jit_s"],
        "wall_s": wall_s, "sampling_s": sampling_s, "stan_internal_s": None,
        "min_ess_bulk": ess, "min_ess_bulk_parameter": worst,
        "ess_per_s": ess / sampling_s, "ess_per_wall_s": ess / wall_s,
        "min_ess_bulk_all_free": diag["min_ess_bulk"], "max_r_hat_all_free": diag["max_r_hat"],
        "divergences": int(stats["diverging"].sum()), "steps_per_draw": float(steps.mean()),
        "leapfrog_steps_draws": int(steps.sum()), "logp_grad_us": timing["us"],
        "logp_grad_from": "direct_calls",
        "logp_grad": timing, "logp_grad_direct_us": timing["us"],
        "posterior_mean": _means(post, spec.population_parameters),
        "loadavg_before": round(load, 2), "loadavg_after": round(os.getloadavg()[0], 2),
    }  # fmt: skip


def stan_phase_seconds(outputs: list) -> list[dict]:
    """Per chain, Stan's "Elapsed Time" lines: {"Warm-up": s, "Sampling": s, "Total": s}."""
    out = []
    for raw in outputs:
        times = {}
        for line in raw.splitlines():
            if b'"logger"' in line and b"seconds (" in line:
                for value in json.loads(line)["values"]:
                    m = re.search(r"([0-9.eE+-]+) seconds \((Warm-up|Sampling|Total)\)", str(value))
                    if m:
                        times[m.group(2)] = float(m.group(1))
        if times:
            out.append(times)
    return out


def run_stan(method: str, rows: StanRows, settings: dict, inits: list, point: dict, logp_seconds: float,
             cold_compile_s: float | None) -> dict:
    import httpstan.models

    spec = load_spec()
    load = os.getloadavg()[0]
    chains, draws, tune = settings["chains"], settings["draws"], settings["tune"]
    program = stan_program(method)
    posterior, build_s, cached = stan_build(program, stan_data(spec, rows), settings["seed"])
    _forget_stan_fits(posterior.model_name)  # else a seeded fit run before comes back from httpstan's cache
    outputs: list = []
    with _capture_stan_outputs(outputs), contextlib.redirect_stderr(io.StringIO()) as messages:
        t0 = time.perf_counter()
        fit = posterior.sample(num_chains=chains, num_samples=draws, num_warmup=tune, save_warmup=True,
                               delta=settings["target_accept"], init=inits)
        sampling_s = time.perf_counter() - t0
    post, leapfrog, divergent = stan_posterior(spec, fit, chains, tune, draws)
    ess, worst = _ess_min(post, spec.population_parameters)
    # cold: stan.build with the C++ compile, timed before the repeats; else this build (a cache lookup)
    compile_s = cold_compile_s if cold_compile_s is not None else build_s
    wall_s = compile_s + sampling_s
    phases = stan_phase_seconds(outputs)  # Stan's own clock per chain
    ok = len(phases) == chains and all("Sampling" in p and "Total" in p for p in phases)
    warm_steps, draw_steps = leapfrog[:, :tune].sum(axis=1), leapfrog[:, tune:].sum(axis=1)
    module = httpstan.models.import_services_extension_module(posterior.model_name)
    direct = time_stan_logp_grad(module, posterior.data, to_stan_vector(spec, point), logp_seconds)
    return {
        "method": method, "compile_s": compile_s, "compile_cached": cold_compile_s is None and cached,
        "build_s": build_s, "jit_s": None, "wall_s": wall_s, "sampling_s": sampling_s,
        "stan_phase_s": phases, "stan_internal_s": max(p["Total"] for p in phases) if ok else None,
        "min_ess_bulk": ess, "min_ess_bulk_parameter": worst,
        "ess_per_s": ess / sampling_s, "ess_per_wall_s": ess / wall_s,
        "divergences": int(divergent[:, tune:].sum()), "steps_per_draw": float(leapfrog[:, tune:].mean()),
        "leapfrog_steps": int(leapfrog.sum()),
        # the gradient as Stan's sampler sees it after tuning: Stan's clock per leapfrog step (median, chains)
        "logp_grad_us": (statistics.median(p["Sampling"] / n * 1e6 for p, n in zip(phases, draw_steps))
                         if ok else None),
        "logp_grad_from": "stan_clock_per_leapfrog_after_tuning",
        "us_per_grad_warmup": (
            statistics.median(p["Warm-up"] / max(n, 1) * 1e6 for p, n in zip(phases, warm_steps))
            if ok and all("Warm-up" in p for p in phases) else None),
        "logp_grad_direct": direct, "logp_grad_direct_us": direct["us"],
        "stan_messages": messages.getvalue().count("Informational Message"),
        "posterior_mean": _means(post, spec.population_parameters),
        "loadavg_before": round(load, 2), "loadavg_after": round(os.getloadavg()[0], 2),
    }  # fmt: skip


# ====================================================================== report
MEDIAN_KEYS = ("compile_s", "jit_s", "wall_s", "sampling_s", "stan_internal_s", "min_ess_bulk", "ess_per_s",
               "ess_per_wall_s", "logp_grad_us", "logp_grad_direct_us", "us_per_grad_warmup",
               "steps_per_draw", "divergences")


def summarize(runs: list[dict]) -> dict:
    """Median over repeats of each number."""
    out = {}
    for k in MEDIAN_KEYS:
        vals = [r[k] for r in runs if r.get(k) is not None]
        out[k] = statistics.median(vals) if vals else None
    out["method"] = runs[0]["method"]
    out["logp_grad_from"] = runs[0]["logp_grad_from"]
    out["compile_cached"] = all(r["compile_cached"] for r in runs)
    out["repeats"] = len(runs)
    out["posterior_mean"] = {p: statistics.median(r["posterior_mean"][p] for r in runs)
                             for p in runs[0]["posterior_mean"]}
    return out


def check_lines(check: dict) -> list[str]:
    """The same-posterior check in words (console and markdown)."""
    def logp(a):
        return ", ".join(f"{d:.6g}" for d in a["logp_diff"])

    t, lim = check["tight"], check["limits"]
    lines = []
    for m, a in check["exact"].items():
        lines.append(f"bayespk - {m}, every ODE solved at rtol {t['rtol']:g}, atol {t['atol']:g}: "
                     f"logp {logp(a)} (spread {a['spread']:.2g}), gradients equal to "
                     f"{a['grad_rel_diff']:.2g} (limit {lim['tight']:g})")
    for m, a in check["spec"].items():
        lines.append(f"bayespk - {m} at the spec's tolerances: logp {logp(a)} (spread {a['spread']:.2g}), "
                     f"gradients equal to {a['grad_rel_diff']:.2g} (limit {lim['grad']:g})")
    lines.append("error at the spec's tolerances against the same program solved tightly: " + "; ".join(
        f"{m} logp {', '.join(f'{d:.2g}' for d in a['logp_diff'])}, gradient {a['grad_rel_diff']:.2g}"
        for m, a in check["error"].items()))
    return lines


NOTES = (
    "compile s: bayespk the `nutpie.compile_pymc_model` step of `fit()` (PyTensor to JAX); Stan the C++ "
    "compile of its program, timed once per run with httpstan's cache emptied first (*cached*: the cache "
    "was kept, `--stan-cached`, and the figure is only its lookup).",
    "jit s: bayespk only: XLA's compile of the log-density + gradient, which happens in the first draws "
    "(inside sampling s); measured on a second compiled copy (first call - a steady call).",
    "wall s: bayespk the whole `PopulationModel(spec, data=csv)` + `fit()` call (read, build, compile, "
    "sample, diagnostics; no pointwise log-likelihood); Stan the C++ compile + `stan.build` + `sample()`.",
    "sampling s: tuning + draws, chains in parallel (bayespk: `fit()`'s wall_seconds - compile_seconds, "
    "the XLA JIT included; Stan: pystan's `sample()`, in brackets Stan's own clock, the slowest chain).",
    "min ESS bulk: smallest bulk ESS over the population parameters (typical values, omegas, sigma_prop; "
    "ArviZ, rank-normalised). ESS/s: on sampling s; ESS/wall s: on wall s.",
    "logp+grad us: one log-density + gradient evaluation. bayespk: the Python callable nutpie's JAX "
    "backend calls for each leapfrog step, called directly at the simulation truth (median). \u2020 Stan: "
    "Stan's own clock per leapfrog step after tuning (median over chains; NUTS bookkeeping included); in "
    "brackets a direct httpstan `log_prob_grad` call at the simulation truth, which also rebuilds the "
    "model from the data every call (its `log_prob` costs as much).",
    "grads/draw: leapfrog steps per draw after tuning (average over chains). nutpie adapts a low-rank "
    "mass matrix (the spec's `adaptation`), Stan a diagonal one.",
)


def markdown(report: dict) -> str:
    s, env = report["settings"], report["environment"]
    run = {"quick": s["smoke"], "cold_cache": False, "settings": s, "environment": env}
    title = "# bayespk vs Stan: 2-cmt Michaelis-Menten ODE population model (mm_2cmt_iv)"
    lines = [title + (" -- SMOKE RUN (numbers mean little)" if s["smoke"] else ""), ""]
    lines += _run_lines(run)
    lines += [f"- data: {report['n_subjects']} subjects, {report['n_observations']} observations, "
              f"simulated by `models/data/make_user_models.py` (seed {report['truth']['seed']}); "
              f"repeats: {s['repeats']} (methods interleaved; medians over repeats); target_accept "
              f"{s['target_accept']}, seed {s['seed']}; ODE rtol {s['rtol']:g}, atol {s['atol']:g}, "
              f"max steps {s['max_steps']}",
              f"- load average (1 min) during the run: {report['load_min']:.2f} to {report['load_max']:.2f} "
              f"on {env['cpu_count']} CPUs"]
    if report.get("stan_compile"):
        lines.append("- Stan C++ compile (httpstan cache emptied first): " + ", ".join(
            f"{m} {v:.1f} s" for m, v in report["stan_compile"].items()))
    lines += ["", ("| method | compile s | jit s | wall s | sampling s | min ESS bulk | ESS/s | ESS/wall s "
                   "| logp+grad us | grads/draw | divergences |"),
              "|---|--:|--:|--:|--:|--:|--:|--:|--:|--:|--:|"]
    for r in report["summary"]:
        stan_clock = r.get("stan_internal_s")
        sampling = _f(r["sampling_s"], 1) + (f" (Stan: {_f(stan_clock, 1)})" if stan_clock else "")
        grad = _f(r["logp_grad_us"], 0)
        if r["logp_grad_from"] != "direct_calls":
            grad += f"\u2020 (call: {_f(r['logp_grad_direct_us'], 0)})"
        compile_s = _f(r["compile_s"], 1) + (" (cached)" if r["compile_cached"] else "")
        lines.append(f"| {r['method']} | {compile_s} | {_f(r['jit_s'], 1, '-')} | {_f(r['wall_s'], 1)} "
                     f"| {sampling} | {_f(r['min_ess_bulk'], 0)} | {_f(r['ess_per_s'], 2)} "
                     f"| {_f(r['ess_per_wall_s'], 2)} | {grad} | {_f(r['steps_per_draw'], 1)} "
                     f"| {r['divergences']:g} |")
    if report.get("goal"):
        g = report["goal"]
        lines += ["", f"Goal (issue #13), bayespk's ESS/s at least Stan's: bayespk {g['bayespk']:.3g} ESS/s, "
                      f"best Stan ({g['best_stan']}) {g['stan']:.3g} ESS/s: ratio {g['ratio']:.2f} "
                      f"({'met' if g['ratio'] >= 1 else 'not met'}); on wall time incl. compile "
                      f"{g['ratio_wall']:.2f}."]
    params = list(report["summary"][0]["posterior_mean"])
    truth = report["truth"]
    tv = {**truth["typical"], **{f"omega_{k}": v for k, v in truth["omega"].items()},
          "sigma_prop": truth["sigma_prop"]}
    lines += ["", "Posterior means (medians over repeats) against the simulation truth:", "",
              "| | " + " | ".join(params) + " |", "|---|" + "--:|" * len(params),
              "| truth | " + " | ".join(f"{tv.get(p, float('nan')):.4g}" for p in params) + " |"]
    for r in report["summary"]:
        means = r["posterior_mean"]
        lines.append(f"| {r['method']} | " + " | ".join(f"{means[p]:.4g}" for p in params) + " |")
    lines += ["", *(f"- {note}" for note in NOTES)]
    if report.get("check"):
        lines += ["", "Same posterior, checked before timing (at 3 points near the simulation truth, on the "
                      "unconstrained scale):", ""]
        lines += [f"- {x}" for x in check_lines(report["check"])]
    return "\n".join(lines) + "\n"


# ====================================================================== driver
def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--n", type=int, default=100, help="subjects (default 100)")
    ap.add_argument("--chains", type=int, default=2)
    ap.add_argument("--draws", type=int, default=1000)
    ap.add_argument("--tune", type=int, default=1000)
    ap.add_argument("--repeats", type=int, default=1, help="repeats of every measurement (default 1)")
    ap.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS))
    ap.add_argument("--logp-seconds", type=float, default=2.0,
                    help="seconds spent timing logp+grad calls per method and repeat (default 2)")
    ap.add_argument("--check-grad", type=float, default=CHECK["grad"],
                    help="same-posterior check at the spec's ODE tolerances: largest gradient difference "
                         "allowed, "
                         f"relative to the largest gradient entry (default {CHECK['grad']:g})")
    ap.add_argument("--check-logp", type=float, default=CHECK["logp_per_obs"],
                    help="... and the spread of the logp differences allowed, per observation "
                         f"(default {CHECK['logp_per_obs']:g})")
    ap.add_argument("--stan-cached", action="store_true",
                    help="keep httpstan's compiled programs (compile s is then only the cache lookup)")
    ap.add_argument("--smoke", action="store_true",
                    help="smoke run: --n 8 --draws 50 --tune 50 --chains 2 --repeats 1 --logp-seconds 0.5")
    ap.add_argument("--out", type=Path, default=RESULTS, help="results folder (default benchmarks/results)")
    args = ap.parse_args(argv)
    if args.smoke:
        for k, v in SMOKE.items():
            setattr(args, k, v)

    warnings.filterwarnings("ignore", category=FutureWarning)
    from bayespk.fit import _start_points
    from bayespk.model.population import PopulationModel

    methods = [m for m in METHODS if m in args.methods]
    stan_methods = [m for m in methods if m != "bayespk"]
    if stan_methods:
        ok, note = _stan_available()
        if not ok:
            print(f"error: Stan {note}", file=sys.stderr)
            return 2
    spec = load_spec()
    solver = spec.user.model.solver
    settings = {"n": args.n, "chains": args.chains, "draws": args.draws, "tune": args.tune,
                "repeats": args.repeats, "methods": methods, "target_accept": spec.sampler.target_accept,
                "seed": spec.sampler.seed, "rtol": solver.rtol, "atol": solver.atol,
                "max_steps": solver.max_steps,
                "ode_method_bayespk": solver.method, "adaptation_bayespk": spec.sampler.adaptation,
                "smoke": args.smoke, "stan_cached": args.stan_cached}
    env = _environment(argv)
    env["command"] = shlex.join([os.path.relpath(sys.executable, ROOT) if sys.executable.startswith(str(ROOT))
                                 else sys.executable, os.path.relpath(__file__, ROOT), *argv])
    for pkg in (*EXTRA_PACKAGES, "jax", "diffrax"):
        try:
            env["versions"][pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            env["versions"][pkg] = None
    source_before = _source_hash()
    loads = [os.getloadavg()[0]]

    with tempfile.TemporaryDirectory(prefix="bench_ode_stan_") as tmp:
        csv = Path(tmp) / f"{MODEL}_n{args.n}.csv"
        truth = simulate_csv(args.n, csv)
        rows = stan_rows(csv)
        print(f"{MODEL}: {len(rows.ids)} subjects, {rows.data['M']} observations; methods "
              f"{', '.join(methods)}", flush=True)

        # Stan: compile each program once up front (timed; the cache emptied first unless --stan-cached)
        stan_compile, modules = {}, {}
        for m in stan_methods:
            import httpstan.cache
            import httpstan.models

            name = _stan_model_name(stan_program(m))
            if not args.stan_cached and httpstan.cache.model_directory(name).exists():
                httpstan.cache.delete_model_directory(name)
            what = "cache" if args.stan_cached else "C++ compile, a few minutes"
            print(f"  stan.build {m} ({what}) ...", flush=True)
            posterior, seconds, cached = stan_build(stan_program(m), stan_data(spec, rows), settings["seed"])
            if not cached:
                stan_compile[m] = seconds
            print(f"  {m}: {seconds:.1f} s{' (cached)' if cached else ''}", flush=True)
            modules[m] = httpstan.models.import_services_extension_module(posterior.model_name)

        check = None
        if modules:
            limits = CHECK | {"grad": args.check_grad, "logp_per_obs": args.check_logp}
            print("  checking that bayespk and Stan define the same posterior ...", flush=True)
            t0 = time.perf_counter()
            try:
                check = check_same_posterior(spec, csv, rows, truth, modules, limits)
            except RuntimeError as e:
                print(f"FAILED: {e}", file=sys.stderr, flush=True)
                return 2
            check["seconds"] = time.perf_counter() - t0
            for line in check_lines(check):
                print(f"  {line}", flush=True)
        else:
            print("  (no Stan method: the same-posterior check is skipped)", flush=True)

        point = common_points(spec, truth, len(rows.ids))[0]
        inits = None
        if stan_methods:
            pm_model = PopulationModel(SPEC_PATH, data=csv).build()
            inits = stan_inits(spec, _start_points(pm_model, spec, args.chains, settings["seed"]))
        runs: dict[str, list] = {m: [] for m in methods}
        for rep in range(args.repeats):
            for m in methods:
                if m == "bayespk":
                    r = run_bayespk(csv, settings, point, args.logp_seconds,
                                    check["bayespk_logp"][0] if check else None)
                else:
                    r = run_stan(m, rows, settings, inits, point, args.logp_seconds, stan_compile.get(m))
                r["repeat"] = rep
                runs[m].append(r)
                loads.append(os.getloadavg()[0])
                print(f"  [{rep + 1}/{args.repeats}] {m:9s} compile {r['compile_s']:6.1f} s, wall "
                      f"{r['wall_s']:7.1f} s, sampling {r['sampling_s']:7.1f} s, min ESS "
                      f"{r['min_ess_bulk']:6.0f} ({r['min_ess_bulk_parameter']}), "
                      f"ESS/s {r['ess_per_s']:7.2f}, logp+grad {_f(r['logp_grad_us'], 0)} us, "
                      f"{r['steps_per_draw']:5.1f} grads/draw, "
                      f"{r['divergences']} div, load {r['loadavg_after']:.2f}", flush=True)

    summary = [summarize(v) for v in runs.values()]
    goal = None
    by = {r["method"]: r for r in summary}
    if "bayespk" in by and stan_methods:
        best = max(stan_methods, key=lambda m: by[m]["ess_per_s"])
        best_wall = max(by[m]["ess_per_wall_s"] for m in stan_methods)
        goal = {"bayespk": by["bayespk"]["ess_per_s"], "stan": by[best]["ess_per_s"], "best_stan": best,
                "ratio": by["bayespk"]["ess_per_s"] / by[best]["ess_per_s"],
                "ratio_wall": by["bayespk"]["ess_per_wall_s"] / best_wall}
    env["source_hash"] = source_before
    env["source_changed_during_run"] = _source_hash() != source_before
    report = {"settings": settings, "environment": env, "n_subjects": len(rows.ids),
              "n_observations": rows.data["M"], "truth": truth, "stan_compile": stan_compile, "check": check,
              "load_min": min(loads), "load_max": max(loads), "goal": goal, "summary": summary, "runs": runs,
              "stan_program": STAN_TEMPLATE}
    write_results(args.out, "ode_stan", report, markdown(report))
    return 0


if __name__ == "__main__":
    sys.exit(main())
