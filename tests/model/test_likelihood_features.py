"""Likelihood features: M3/M4 censoring, Student-t residuals, IOV, correlated IIV (LKJ),
time-varying covariates. Each is checked against an independent computation
(scipy densities, numerical integration, closed forms by hand)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytensor
import pytest
import scipy.stats as st
from scipy.integrate import quad

from bayespk.errors import DataError, SpecError
from bayespk.model.population import PopulationModel
from bayespk.model.spec import Spec

CL, V = 2.0, 20.0
K = CL / V
TIMES = (1.0, 4.0, 24.0)


def rows(n_subjects=2, blq_last=True, extra=None):
    out = []
    for i in range(1, n_subjects + 1):
        out.append(dict(ID=i, TIME=0.0, AMT=100.0, DV=None, EVID=1, MDV=1) | (extra(i, 0.0) if extra else {}))
        for t, dv in zip(TIMES, (5.0, 3.0, 0.2)):
            blq = int(t == TIMES[-1] and blq_last)
            out.append(dict(ID=i, TIME=t, AMT=None, DV=dv if not blq else None, EVID=0, MDV=0, BLQ=blq,
                            LLOQ=0.5 if blq_last else 0.1)
                       | (extra(i, t) if extra else {}))
    return pd.DataFrame(out)


def spec(error=None, parameters=None, **more) -> Spec:
    params = {"CL": {"guess": CL, "iiv": False}, "V": {"guess": V, "iiv": False}} | (parameters or {})
    return Spec.from_dict({"model": {"structure": "1cmt_iv"}, "parameters": params,
                           "error": {"model": "additive", "sigma_add": {"dist": "HalfNormal", "sigma": 1.0}}
                           | (error or {})} | more)


def compiled(model, outputs, inputs):
    """A function of the named free variables' values (on their transformed scale) giving ``outputs``."""
    pm_model = model if not isinstance(model, PopulationModel) else model.build()
    outs = pm_model.replace_rvs_by_values([pm_model[o] if isinstance(o, str) else o for o in outputs])
    values = [pm_model.rvs_to_values[pm_model[name]] for name in inputs]
    return pytensor.function(values, outs, on_unused_input="ignore")


def pointwise_loglik(model: PopulationModel, sd: float):
    pm_model = model.build()
    logp = pm_model.logp(vars=pm_model.observed_RVs, sum=False)[0]
    f = compiled(pm_model, [logp], ["CL", "V", "sigma_add"] + (["nu"] if "nu" in pm_model.named_vars else []))
    return lambda nu=None: f(np.log(CL), np.log(V), np.log(sd), *([np.log(nu)] if nu else []))[0]


F = 100 / V * np.exp(-K * np.array(TIMES))


def test_m3_matches_scipy():
    got = pointwise_loglik(PopulationModel(spec({"blq": "M3"}), rows()), 0.8)()
    want = np.r_[st.norm.logpdf([5.0, 3.0], F[:2], 0.8), st.norm.logcdf(0.5, F[2], 0.8)]
    np.testing.assert_allclose(got, np.tile(want, 2), rtol=1e-8)


def test_m4_matches_numerical_integration():
    got = pointwise_loglik(PopulationModel(spec({"blq": "M4"}), rows()), 0.8)()
    p_blq = quad(lambda y: st.norm.pdf(y, F[2], 0.8), 0.0, 0.5, epsabs=1e-14, epsrel=1e-12)[0]
    above_zero = st.norm.sf(0.0, F, 0.8)
    want = np.r_[st.norm.logpdf([5.0, 3.0], F[:2], 0.8) - np.log(above_zero[:2]), np.log(p_blq / above_zero[2])]
    np.testing.assert_allclose(got, np.tile(want, 2), rtol=1e-8)
    # M4 differs from M3 where P(Y < 0) is not negligible
    m3 = pointwise_loglik(PopulationModel(spec({"blq": "M3"}), rows()), 0.8)()
    assert abs(got[2] - m3[2]) > 0.1


def test_student_t_matches_scipy_and_has_default_nu_prior():
    model = PopulationModel(spec({"distribution": "student_t"}), rows(blq_last=False))
    assert model.spec.error.priors["nu"].dist == "Gamma"
    assert "nu" in model.spec.population_parameters
    pm_model = model.build()
    logp = pm_model.logp(vars=pm_model.observed_RVs, sum=False)[0]
    f = compiled(pm_model, [logp], ["CL", "V", "sigma_add", "nu"])
    d = rows(blq_last=False)
    obs = d[(d.EVID == 0)]
    dv = obs.DV.to_numpy(float)
    mask = ~np.isnan(dv)
    got = f(np.log(CL), np.log(V), np.log(0.8), np.log(4.0))[0]
    want = st.t.logpdf(dv[mask], 4.0, np.tile(F, 2)[mask], 0.8)
    np.testing.assert_allclose(got, want, rtol=1e-10)


def test_student_t_refused_with_lognormal_error():
    with pytest.raises(SpecError, match=r"student_t is available for additive, proportional and combined"):
        spec({"model": "lognormal", "distribution": "student_t"})


def test_nu_without_student_t_refused():
    with pytest.raises(SpecError, match=r"\[error\] nu: degrees of freedom are only used with"):
        spec({"nu": {"dist": "Gamma", "alpha": 2, "beta": 0.1}})


# ----------------------------------------------------------------------------- IOV

def iov_rows():
    """Two subjects, two occasions each, a dose starting each occasion (72 h apart: washout)."""
    out = []
    for i in (1, 2):
        for occ, t0 in ((1, 0.0), (2, 72.0)):
            out.append(dict(ID=i, TIME=t0, AMT=100.0, DV=None, EVID=1, MDV=1, OCC=occ))
            out += [dict(ID=i, TIME=t0 + t, AMT=None, DV=1.0, EVID=0, MDV=0, OCC=occ) for t in (1.0, 6.0)]
    return pd.DataFrame(out)


def test_iov_gives_each_occasion_its_parameter():
    s = spec(parameters={"CL": {"guess": CL, "iiv": False, "iov": {"dist": "HalfNormal", "sigma": 0.3}}})
    model = PopulationModel(s, iov_rows())
    assert model.coords["occasion"] == ["1:1", "1:2", "2:1", "2:2"]
    assert "omega_iov_CL" in model.spec.population_parameters
    pm_model, _ = model.build_prediction()
    f = compiled(pm_model, ["IPRED"], ["CL", "V", "omega_iov_CL", "z_iov_CL"])
    z = np.array([0.5, -1.0, 0.0, 2.0])
    omega = 0.3
    (ipred,) = f(np.log(CL), np.log(V), np.log(omega), z)
    occ_of_obs = np.repeat([0, 1, 2, 3], 2)
    cl = CL * np.exp(omega * z[occ_of_obs])
    t_after = np.tile([1.0, 6.0], 4)
    # 72 h washout: the first occasion's dose has decayed to e^-7.2 ~ 7e-4 of its start, evaluated
    # with the second occasion's CL (module doc of population.py); include it exactly
    carry = np.where(np.tile([0, 0, 1, 1], 2) == 1, 100 / V * np.exp(-cl / V * (72.0 + t_after)), 0.0)
    want = 100 / V * np.exp(-cl / V * t_after) + carry
    np.testing.assert_allclose(ipred, want, rtol=1e-12)


def test_iov_needs_occ_column():
    s = spec(parameters={"CL": {"guess": CL, "iov": True}})
    with pytest.raises(DataError, match=r"column OCC: inter-occasion variability on CL uses covariate OCC, but "
                                        r"the dataset .* has no such column"):
        PopulationModel(s, rows())


def test_iov_with_a_single_occasion_per_subject_refused():
    d = iov_rows()
    d["OCC"] = 1
    with pytest.raises(DataError, match=r"column OCC: every subject has a single occasion"):
        PopulationModel(spec(parameters={"CL": {"guess": CL, "iov": True}}), d)


# ----------------------------------------------------------------------------- correlated IIV

def test_lkj_correlates_etas_as_specified():
    s = spec(parameters={"CL": {"guess": CL}, "V": {"guess": V}}, iiv={"correlated": ["CL", "V"], "lkj_eta": 2})
    model = PopulationModel(s, rows())
    assert "corr_CL_V" in model.spec.population_parameters
    assert Spec.from_dict(model.spec.to_dict()).correlated == ("CL", "V")
    pm_model = model.build()
    f = compiled(pm_model, ["eta_CL", "eta_V", "corr_CL_V"], ["omega_CL", "omega_V", "z_CL", "z_V",
                                                               "chol_corr_iiv"])
    chol_value = pm_model.rvs_to_values[pm_model["chol_corr_iiv"]]
    # pick a correlation of 0.6 on the unconstrained scale by searching the transform
    rho = 0.6
    transform = pm_model.rvs_to_transforms[pm_model["chol_corr_iiv"]]
    L = np.linalg.cholesky(np.array([[1.0, rho], [rho, 1.0]]))
    u = transform.forward(pytensor.tensor.as_tensor(L)).eval()
    assert chol_value.ndim == u.ndim
    z_cl, z_v = np.array([1.0, -0.5]), np.array([0.3, 2.0])
    eta_cl, eta_v, corr = f(np.log(0.3), np.log(0.2), z_cl, z_v, u)
    assert corr == pytest.approx(rho, rel=1e-10)
    zz = np.stack([z_cl, z_v], axis=1) @ L.T
    np.testing.assert_allclose(eta_cl, 0.3 * zz[:, 0], rtol=1e-10)
    np.testing.assert_allclose(eta_v, 0.2 * zz[:, 1], rtol=1e-10)


@pytest.mark.parametrize("block, match", [
    ({"correlated": ["CL"]}, r"needs at least two parameters"),
    ({"correlated": ["CL", "KA"]}, r"'KA' is not a parameter of the model"),
    ({"correlated": ["CL", "V"], "lkj_eta": 0}, r"lkj_eta: the LKJ shape must be > 0"),
    ({"correlated": ["CL", "V"], "shape": 1}, r"\[iiv\]: unknown key 'shape'"),
])
def test_iiv_block_errors(block, match):
    with pytest.raises(SpecError, match=match):
        spec(parameters={"CL": {"guess": CL}, "V": {"guess": V}}, iiv=block)


def test_correlated_parameter_without_iiv_refused():
    with pytest.raises(SpecError, match=r"V has no IIV \(iiv = false\), so it cannot be correlated"):
        spec(parameters={"CL": {"guess": CL}}, iiv={"correlated": ["CL", "V"]})


# ----------------------------------------------------------------------------- time-varying covariates

def test_time_varying_covariate_applies_at_each_observation():
    def weight(i, t):
        return {"WT": 70.0 if t < 4 else 90.0} if i == 1 else {"WT": 60.0}

    d = rows(blq_last=False, extra=weight)
    s = spec(covariates=[{"parameter": "CL", "column": "WT", "effect": "power", "reference": 70,
                          "coefficient": 0.75}])
    model = PopulationModel(s, d)
    assert model._covariates["CL_WT"]["time_varying"]
    pm_model, _ = model.build_prediction()
    (ipred,) = compiled(pm_model, ["IPRED"], ["CL", "V"])(np.log(CL), np.log(V))
    wt = np.array([70, 90, 90, 60, 60, 60.0])
    cl = CL * (wt / 70) ** 0.75
    want = 100 / V * np.exp(-cl / V * np.tile(TIMES, 2))
    np.testing.assert_allclose(ipred, want, rtol=1e-12)


def censored_rows():
    """Two subjects: observed, BLQ (left-censored at 0.5) and right-censored (CENS = -1 at 4.0) rows."""
    d = rows(blq_last=True)
    d["CENS"] = d["BLQ"].fillna(0)
    d.loc[(d.ID == 2) & (d.TIME == 1.0), ["CENS", "DV"]] = [-1, 4.0]
    return d


@pytest.mark.parametrize("error", [
    {"blq": "M3"},
    {"blq": "M4"},
    {"model": "proportional", "sigma_prop": {"dist": "HalfNormal", "sigma": 0.5}},
    {"model": "combined", "sigma_prop": {"dist": "HalfNormal", "sigma": 0.5}},
    {"distribution": "student_t"},
    {"model": "lognormal", "sigma_log": {"dist": "HalfNormal", "sigma": 0.5}},
])
def test_censored_rows_computed_apart_equal_pm_censored(error):
    """The likelihood built for the fit (each row's own branch: density, log-CDF, log-survival) against
    pm.Censored, which the model uses when its observations are shared data: the same value on every row and
    the same gradient, at random points."""
    d = censored_rows()
    s = spec().to_dict()
    s["error"] = {"model": "additive", "sigma_add": {"dist": "HalfNormal", "sigma": 1.0}, "blq": "M3"} | error
    if error.get("model") in ("proportional", "lognormal"):
        del s["error"]["sigma_add"]
    s = Spec.from_dict(s)
    split = PopulationModel(s, d).build()
    whole = PopulationModel(s, d, observations_as_data=True).build()
    assert type(split["DV"].owner.op).__name__ != type(whole["DV"].owner.op).__name__
    fns = [m.compile_fn([*m.logp(vars=m.observed_RVs, sum=False), m.dlogp()], mode="FAST_COMPILE")
           for m in (split, whole)]
    rng = np.random.default_rng(3)
    for _ in range(3):
        point = {k: v + 0.3 * rng.standard_normal(np.shape(v)) for k, v in split.initial_point().items()}
        (a, ga), (b, gb) = (f(point) for f in fns)
        np.testing.assert_allclose(a, b, rtol=1e-8, atol=1e-12)  # M4: the truncation term rounds apart
        np.testing.assert_allclose(ga, gb, rtol=1e-8, atol=1e-10)


def test_log_cdf_is_computed_on_the_censored_rows_only():
    """Graph shape: every erfc/erfcx (the normal log-CDF and log-survival) of the fit's likelihood runs over the
    censored rows only (3 of 6 here), not over every observation as pm.Censored's switch does."""
    from pytensor.graph.traversal import ancestors
    from pytensor.scalar.math import Erfc, Erfcx
    from pytensor.tensor.elemwise import Elemwise

    pm_model = PopulationModel(spec({"blq": "M3"}), censored_rows()).build()
    logp = pm_model.logp(vars=pm_model.observed_RVs, sum=False)[0]
    nodes = [v for v in ancestors([logp]) if v.owner is not None and isinstance(v.owner.op, Elemwise)
             and isinstance(v.owner.op.scalar_op, Erfc | Erfcx)]
    assert nodes
    values = pm_model.value_vars
    shapes = pytensor.function(values, [v.shape[0] for v in nodes], on_unused_input="ignore")(
        *[pm_model.initial_point()[v.name] for v in values])
    assert sorted(set(int(s) for s in shapes)) in ([1], [2], [1, 2])  # 2 BLQ rows (left), 1 right-censored row
