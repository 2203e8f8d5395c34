"""The PyMC model against hand computations: individual parameters, covariates,
residual error models and the M3 censored likelihood."""

import numpy as np
import pandas as pd
import pymc as pm
import pytest
from conftest import MODELS
from scipy import stats

import bayespk as bpk
from bayespk.model.spec import Spec
from bayespk.structural.compartments import one_compartment


def _data(cens=False):
    """Two IV subjects with weights and a sex covariate; optionally one BLQ row."""
    rows = []
    for sid, wt, sex in [(1, 60.0, "F"), (2, 90.0, "M")]:
        rows.append(dict(ID=sid, TIME=0, AMT=100, DV=".", EVID=1, MDV=1, WT=wt, SEX=sex, BLQ=0, LLOQ="."))
        for t, dv in [(1, 4.0), (4, 2.5), (12, 0.8)]:
            blq = int(cens and sid == 2 and t == 12)
            rows.append(dict(ID=sid, TIME=t, AMT=".", DV=0.5 if blq else dv, EVID=0, MDV=0, WT=wt, SEX=sex,
                             BLQ=blq, LLOQ=0.5 if blq else "."))
    return bpk.read_nonmem(pd.DataFrame(rows))


def _spec(error="proportional", covariates=(), iiv=True):
    return Spec.from_dict({
        "model": {"structure": "1cmt_iv"},
        "parameters": {"CL": {"guess": 5.0, "iiv": iiv}, "V": {"guess": 20.0, "iiv": iiv}},
        "covariates": list(covariates),
        "error": {"model": error},
    })  # fmt: skip


def _conc(cl, v, t, amt=100.0):
    return one_compartment(np.asarray(t, float), amt, 0.0, False, cl, v)


POINT = {"CL": 4.0, "V": 25.0, "omega_CL": 0.3, "omega_V": 0.2, "sigma_add": 0.3, "sigma_prop": 0.15,
         "sigma_log": 0.2}


def _logp_obs(model, point):
    """Log-likelihood of the observations at ``point`` (all z = 0 unless given)."""
    pm_model = model.build()
    ip = pm_model.initial_point()
    values = {}
    for rv in pm_model.free_RVs:
        name = rv.name
        value_var = pm_model.rvs_to_values[rv]
        if name in point:
            v = np.asarray(point[name], float)
        else:
            v = np.zeros_like(ip[value_var.name])
            values[value_var.name] = v
            continue
        transform = pm_model.rvs_to_transforms[rv]
        values[value_var.name] = transform.forward(v).eval() if transform is not None else v
    logp = pm_model.compile_logp(vars=[pm_model["DV"]], sum=False)(values)
    return np.asarray(logp[0])


@pytest.mark.parametrize("error", ["additive", "proportional", "combined", "lognormal"])
def test_residual_error_likelihoods_match_scipy(error):
    ds = _data()
    model = bpk.PopulationModel(_spec(error), ds)
    got = _logp_obs(model, POINT)
    obs = ds.observations
    f = _conc(POINT["CL"], POINT["V"], obs.TIME)
    y = obs.DV.to_numpy()
    if error == "additive":
        want = stats.norm.logpdf(y, f, POINT["sigma_add"])
    elif error == "proportional":
        want = stats.norm.logpdf(y, f, POINT["sigma_prop"] * f)
    elif error == "combined":
        want = stats.norm.logpdf(y, f, np.sqrt(POINT["sigma_add"] ** 2 + (POINT["sigma_prop"] * f) ** 2))
    else:
        want = stats.lognorm.logpdf(y, s=POINT["sigma_log"], scale=f)
    np.testing.assert_allclose(got, want, rtol=1e-9)


@pytest.mark.parametrize("error", ["additive", "proportional", "lognormal"])
def test_blq_rows_enter_as_m3_censored(error):
    ds = _data(cens=True)
    model = bpk.PopulationModel(_spec(error), ds)
    got = _logp_obs(model, POINT)
    obs = ds.observations
    f = _conc(POINT["CL"], POINT["V"], obs.TIME)
    blq = obs.BLQ.to_numpy() == 1
    assert blq.sum() == 1
    if error == "additive":
        want_cens = stats.norm.logcdf(0.5, f[blq], POINT["sigma_add"])
    elif error == "proportional":
        want_cens = stats.norm.logcdf(0.5, f[blq], POINT["sigma_prop"] * f[blq])
    else:
        want_cens = stats.lognorm.logcdf(0.5, s=POINT["sigma_log"], scale=f[blq])
    np.testing.assert_allclose(got[blq], want_cens, rtol=1e-7)  # logcdf is computed via erfcx
    # BLQ data contribute a probability, never a density at the LLOQ value
    assert np.all(got[blq] < 0)


def test_blq_drop_keeps_rows_out_of_likelihood():
    ds = _data(cens=True)
    spec = Spec.from_dict(_spec().to_dict() | {"error": {"model": "proportional", "blq": "drop"}})
    model = bpk.PopulationModel(spec, ds)
    assert model.design.n_obs == ds.summary.n_observations - 1
    assert ds.summary.n_blq == 1


COVARIATES = [
    ({"parameter": "CL", "column": "WT", "effect": "power", "reference": 70, "coefficient": 0.75},
     lambda wt, sex: (wt / 70) ** 0.75),
    ({"parameter": "CL", "column": "WT", "effect": "exponential", "reference": 70, "coefficient": 0.01},
     lambda wt, sex: np.exp(0.01 * (wt - 70))),
    ({"parameter": "CL", "column": "WT", "effect": "linear", "reference": 70, "coefficient": 0.02},
     lambda wt, sex: 1 + 0.02 * (wt - 70)),
    ({"parameter": "CL", "column": "SEX", "effect": "categorical", "reference": "F", "coefficient": 0.3},
     lambda wt, sex: np.where(sex == "M", np.exp(0.3), 1.0)),
]


@pytest.mark.parametrize("cov,factor", COVARIATES, ids=[c[0]["effect"] for c in COVARIATES])
def test_covariate_effects_scale_individual_parameters(cov, factor):
    ds = _data()
    model = bpk.PopulationModel(_spec(covariates=[cov], iiv=False), ds)
    pm_model, design = model.build_prediction()
    fixed = pm.do(pm_model, {"CL": 4.0, "V": 25.0})
    ipred, pred = pm.draw([fixed["IPRED"], fixed["PRED"]])
    subj = ds.table.groupby("ID").first()
    cl = 4.0 * factor(subj.WT.to_numpy(), subj.SEX.to_numpy())
    want = _conc(cl[design.obs_subject], 25.0, design.obs_time)
    np.testing.assert_allclose(ipred, want, rtol=1e-10)
    np.testing.assert_allclose(pred, want, rtol=1e-10)  # no IIV: individual == population


def test_estimated_covariate_and_iiv_enter_individual_parameters():
    ds = _data()
    cov = {"parameter": "CL", "column": "WT", "effect": "power", "reference": 70}
    model = bpk.PopulationModel(_spec(covariates=[cov]), ds)
    pm_model, design = model.build_prediction()
    z = np.array([0.5, -1.0])
    fixed = pm.do(pm_model, {"CL": 4.0, "V": 25.0, "CL_WT": 0.9, "omega_CL": 0.3, "omega_V": 0.2,
                             "z_CL": z, "z_V": np.zeros(2)})
    ipred, pred = pm.draw([fixed["IPRED"], fixed["PRED"]])
    wt = ds.table.groupby("ID").WT.first().to_numpy()
    cl_pop = 4.0 * (wt / 70) ** 0.9
    np.testing.assert_allclose(ipred, _conc((cl_pop * np.exp(0.3 * z))[design.obs_subject], 25.0,
                                            design.obs_time), rtol=1e-10)
    np.testing.assert_allclose(pred, _conc(cl_pop[design.obs_subject], 25.0, design.obs_time), rtol=1e-10)


def test_default_priors_are_resolved_into_the_spec():
    ds = _data()
    cov = {"parameter": "CL", "column": "WT", "effect": "exponential", "reference": 70}
    model = bpk.PopulationModel(_spec("combined", covariates=[cov]), ds)
    spec = model.spec
    assert spec.covariates[0].coefficient == bpk.Prior("Normal", mu=0.0, sigma=round(1 / 70, 6))
    sd = float(np.std(ds.observations.DV))
    assert spec.error.priors["sigma_add"].params["sigma"] == pytest.approx(sd, rel=1e-2)
    assert spec.error.priors["sigma_prop"] == bpk.Prior("HalfNormal", sigma=0.5)
    assert spec.parameters["CL"].iiv == bpk.Prior("HalfNormal", sigma=0.5)
    # the resolved spec rebuilds the same model
    again = bpk.PopulationModel(Spec.from_dict(spec.to_dict()), ds)
    assert again.spec == spec


@pytest.mark.parametrize("name", ["theophylline_1cmt_oral", "phenobarbital_1cmt_iv", "indomethacin_2cmt_iv"])
def test_bundled_models_have_finite_logp_and_gradient(name):
    model = bpk.PopulationModel(MODELS / f"{name}.toml")
    pm_model = model.build()
    ip = pm_model.initial_point()
    assert np.isfinite(pm_model.compile_logp()(ip))
    grad = pm_model.compile_dlogp()(ip)
    assert np.all(np.isfinite(grad))


def test_coords_name_subjects_and_categorical_levels():
    model = bpk.PopulationModel(MODELS / "phenobarbital_1cmt_iv.toml")
    coords = model.coords
    assert len(coords["ID"]) == 59
    assert coords["APGRLOW_level"] == ["1"]
    assert len(coords["obs"]) == 155
