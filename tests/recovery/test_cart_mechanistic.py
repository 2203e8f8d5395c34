"""The mechanistic CAR-T model in the population model: spec, data, likelihood against an independent path."""

from pathlib import Path

import numpy as np
import pandas as pd
import pymc as pm
import pytest
from scipy import stats

import bayespk as bpk
from bayespk.errors import DataError, SpecError
from bayespk.model.spec import Spec
from bayespk.simulate.cohort import simulate_cart_cohort
from bayespk.structural.cart_ode import ck_ode_level

MODELS = Path(__file__).resolve().parents[2] / "models"
VALUES = {"C0": 5.0, "GX": 0.5 * np.log(20.0) / 1.05 - 0.15, "KC": 5e4, "ALPHA": 0.15, "FM": 0.01,
          "BETA": 0.003, "KILL": 1.5e-4, "N0": 0.05}


@pytest.fixture(scope="module")
def cohort():
    return simulate_cart_cohort(12, seed=3)


@pytest.fixture(scope="module")
def spec():
    return Spec.from_toml(MODELS / "cart_mechanistic.toml")


def test_spec_keys(spec):
    assert spec.tumor == ("TB", 20.0) and "N0" in spec.parameters
    assert Spec.from_dict(spec.to_dict()).to_dict() == spec.to_dict()
    d = spec.to_dict()
    with pytest.raises(SpecError, match="tumor: only used by the mechanistic"):
        Spec.from_dict({**d, "covariates": [], "model": {"structure": "cart_piecewise", "tumor": {"column": "TB"}},
                        "parameters": {p: {"guess": 1.0} for p in ("CMAX", "FX", "TMAX", "ALPHA", "FB", "BETA")}})
    with pytest.raises(SpecError, match="reference: must be > 0"):
        Spec.from_dict({**d, "model": {"structure": "cart_kimmel", "tumor": {"column": "TB", "reference": 0}}})
    with pytest.raises(SpecError, match="treatment multipliers act on the expansion rate"):
        Spec.from_dict({**d, "treatments": [{"column": "TOCI"}]})


def test_likelihood_equals_direct_integration(cohort, spec):
    """log p(DV) at fixed values = lognormal / censored terms of levels integrated independently."""
    data = cohort.data
    model = bpk.PopulationModel(spec, data)
    m = model.build()
    names = [p for p, ps in spec.parameters.items() if ps.iiv is not None]
    fixed = {**VALUES, "N0_FLUAUC": -0.5, "scale_ASSAY": np.array([0.004]), "sigma_log": np.array([0.5, 0.3])}
    fixed |= {f"z_{p}": np.zeros(12) for p in names} | {f"omega_{p}": 0.5 for p in names}
    m = pm.do(m, fixed)
    got = float(m.compile_logp(vars=[m["DV"]], sum=True)({}))
    pats = cohort.patients.set_index("ID")
    total = 0.0
    for sid, rows in data[data.EVID == 0].groupby("ID"):
        n0 = VALUES["N0"] / (1 - VALUES["N0"]) * (pats.FLUAUC[sid] / 14.0) ** -0.5  # logit-scale covariate effect
        cov = {"N0": n0 / (1 + n0), "B0": pats.TB[sid] / 20.0}
        times = np.unique(rows.TIME.to_numpy())
        level = dict(zip(times, ck_ode_level(times, VALUES, cov, fine_step=0.05, max_step=0.5)[0]))
        for _, r in rows.iterrows():
            f = level[r.TIME] * (0.004 if r.ASSAY == 2 else 1.0)
            sd = 0.3 if r.ASSAY == 2 else 0.5
            total += (stats.norm.logcdf(np.log(r.LLOQ), np.log(f), sd) if r.BLQ == 1
                      else stats.lognorm.logpdf(r.DV, sd, scale=f))
    assert got == pytest.approx(total, rel=1e-5)


def test_fixed_constant_may_be_estimated(cohort, spec):
    """[parameters.B50] estimates the constant B50: at its fixed value the likelihood is the spec's own."""
    d = spec.to_dict()
    d["parameters"]["B50"] = {"typical": {"dist": "LogNormal", "mu": -3.0, "sigma": 1.0}, "iiv": False}
    names = [p for p, ps in spec.parameters.items() if ps.iiv is not None]
    fixed = {**VALUES, "N0_FLUAUC": -0.5, "scale_ASSAY": np.array([0.004]), "sigma_log": np.array([0.5, 0.3])}
    fixed |= {f"z_{p}": np.zeros(12) for p in names} | {f"omega_{p}": 0.5 for p in names}

    def loglik(s, values):
        m = pm.do(bpk.PopulationModel(s, cohort.data).build(), values)
        return float(m.compile_logp(vars=[m["DV"]], sum=True)({}))

    estimated = Spec.from_dict(d)
    assert "B50" in estimated.parameters and "B50" not in spec.parameters
    base = loglik(spec, fixed)
    assert loglik(estimated, fixed | {"B50": 0.05}) == pytest.approx(base, rel=1e-12)
    assert abs(loglik(estimated, fixed | {"B50": 0.5}) - base) > 1.0  # and it acts
    with pytest.raises(SpecError, match="unknown key|RB0"):
        Spec.from_dict({**d, "parameters": {**d["parameters"], "RB0": {"guess": 0.01}}})


def test_tumor_column_is_checked(cohort, spec):
    with pytest.raises(DataError, match="column TB"):
        bpk.PopulationModel(spec, cohort.data.assign(TB=0.0))
    with pytest.raises(DataError, match="second dose record"):
        d = cohort.data
        again = pd.concat([d, d[(d.ID == 1) & (d.EVID == 1)].assign(TIME=50.0)])
        bpk.PopulationModel(spec, again.sort_values(["ID", "TIME"], kind="stable"))


@pytest.mark.slow  # ~2.5 min: compiling the RK4 scan for nutpie dominates
def test_fit_runs_and_predicts(cohort, spec):
    """A short fit of 12 patients: sampling, IPRED on a grid, VPC replicates all go through the ODE."""
    fit = bpk.fit(bpk.PopulationModel(spec, cohort.data), chains=1, draws=30, tune=30, seed=1, progress=False)
    pred = fit.predict(grid=np.array([0.0, 5.0, 10.0, 100.0]), draws=10)
    ipred = pred["IPRED"].values
    assert np.all(np.isfinite(ipred)) and np.all(ipred > 0)
    assert np.isfinite(float(bpk.loo(fit).elpd))  # pointwise log-likelihood of every observation is stored
