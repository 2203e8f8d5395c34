"""PK/PD models through the population model: direct effects, ODE-based PD (IDR, effect
compartment) against scipy's solve_ivp, PD observations picked by DVID or CMT, sequential
fitting with the PK fixed, and the spec/data errors."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pymc as pm
import pytensor
import pytest
import xarray as xr
from scipy.integrate import solve_ivp

from bayespk.errors import DataError, SpecError
from bayespk.model.population import PopulationModel
from bayespk.model.spec import Spec

PK = {"CL": 2.0, "V": 20.0, "KA": 1.2}
TIMES = np.array([0.5, 1.0, 2.0, 4.0, 8.0, 12.5, 18.0, 30.0])


def conc(t):
    """1cmt oral, 100 mg at 0 and 12 h (ADDL=1, II=12)."""
    k, ka, v = PK["CL"] / PK["V"], PK["KA"], PK["V"]
    out = np.zeros_like(t)
    for td in (0.0, 12.0):
        dt = t - td
        out += np.where(dt > 0, 100 * ka / (v * (ka - k)) * (np.exp(-k * dt) - np.exp(-ka * dt)), 0.0)
    return out


def dataset(column="DVID", pd_value=2):
    rows = [dict(ID=1, TIME=0.0, AMT=100.0, DV=None, EVID=1, MDV=1, ADDL=1, II=12.0, CMT=1, **{column: 1})]
    for t in TIMES:
        rows.append(dict(ID=1, TIME=t, DV=1.0, EVID=0, MDV=0, CMT=2, **{column: 1}))
        rows.append(dict(ID=1, TIME=t, DV=10.0, EVID=0, MDV=0, CMT=2, **{column: pd_value}))
    d = pd.DataFrame(rows)
    if column == "CMT":  # PD rows marked by their own compartment number
        d.loc[d.CMT == pd_value, "CMT"] = pd_value
    return d


def spec(pd_model, pd_params, **model):
    params = {k: {"guess": v, "iiv": False} for k, v in PK.items()}
    params |= {k: ({"typical": {"dist": "Beta", "alpha": 2, "beta": 2}} if k == "IMAX" else {"guess": v, "iiv": False})
               for k, v in pd_params.items()}
    return Spec.from_dict({"model": {"structure": "1cmt_oral", "pd": pd_model, "ode_step": 0.05} | model,
                           "parameters": params, "error": {"model": "additive"}})


def pd_prediction(model: PopulationModel, values: dict) -> np.ndarray:
    """The PD response at the PD observations for typical-value parameters ``values``."""
    with pm.Model(coords=model.coords) as pmm:
        params = model.individual_parameters(model.pd_design, *model.predictor.points)
        e = model.predictor.predict(params[0][0], [p[0] for p in params[1:]], model.pd_design, "DV_PD")
    (e,) = pmm.replace_rvs_by_values([e])
    names = list(values)
    inputs = [pmm.rvs_to_values[pmm[n]] for n in names]
    transformed = [np.log(v) if pmm.rvs_to_transforms[pmm[n]] is not None and n != "IMAX" else v for n, v in
                   values.items()]
    if "IMAX" in values:  # Beta prior: logodds transform
        transformed[names.index("IMAX")] = np.log(values["IMAX"] / (1 - values["IMAX"]))
    return pytensor.function(inputs, e, on_unused_input="ignore")(*transformed)


def test_direct_emax_matches_formula():
    p = {"E0": 10.0, "EMAX": 50.0, "EC50": 2.0}
    m = PopulationModel(spec("emax", p), dataset())
    assert m.design.n_obs == len(TIMES) and m.pd_design.n_obs == len(TIMES)
    got = pd_prediction(m, PK | p)
    c = conc(TIMES)
    np.testing.assert_allclose(got, 10 + 50 * c / (2 + c), rtol=1e-12)


def test_pd_observations_by_cmt():
    p = {"E0": 10.0, "SLOPE": 3.0}
    d = dataset()
    d.loc[d.DVID == 2, "CMT"] = 3
    m = PopulationModel(spec("linear", p, pd_observations={"column": "CMT", "value": 3}), d.drop(columns="DVID"))
    np.testing.assert_allclose(pd_prediction(m, PK | p), 10 + 3 * conc(TIMES), rtol=1e-12)


def reference(rhs, y0):
    sol = solve_ivp(lambda t, y: rhs(t, y, conc(np.array([t]))[0]), (0.0, TIMES[-1]), y0, method="DOP853",
                    rtol=1e-12, atol=1e-14, t_eval=TIMES, max_step=0.05)
    return sol.y


@pytest.mark.parametrize("name, params, rhs, y0, out", [
    ("idr1", {"R0": 10.0, "KOUT": 0.3, "IMAX": 0.8, "IC50": 1.5},
     lambda t, y, c: [3.0 * (1 - 0.8 * c / (1.5 + c)) - 0.3 * y[0]], [10.0], lambda y: y[0]),
    ("idr2", {"R0": 10.0, "KOUT": 0.3, "IMAX": 0.8, "IC50": 1.5},
     lambda t, y, c: [3.0 - 0.3 * (1 - 0.8 * c / (1.5 + c)) * y[0]], [10.0], lambda y: y[0]),
    ("idr3", {"R0": 10.0, "KOUT": 0.3, "EMAX": 2.0, "EC50": 1.5},
     lambda t, y, c: [3.0 * (1 + 2.0 * c / (1.5 + c)) - 0.3 * y[0]], [10.0], lambda y: y[0]),
    ("idr4", {"R0": 10.0, "KOUT": 0.3, "EMAX": 2.0, "EC50": 1.5},
     lambda t, y, c: [3.0 - 0.3 * (1 + 2.0 * c / (1.5 + c)) * y[0]], [10.0], lambda y: y[0]),
    ("effect_emax", {"KE0": 0.4, "E0": 5.0, "EMAX": 20.0, "EC50": 1.0, "GAMMA": 2.0},
     lambda t, y, c: [0.4 * (c - y[0])], [0.0], lambda y: 5 + 20 * y[0] ** 2 / (1 + y[0] ** 2)),
])  # fmt: skip
def test_ode_pd_models_match_solve_ivp(name, params, rhs, y0, out):
    m = PopulationModel(spec(name, params), dataset())
    got = pd_prediction(m, PK | params)
    np.testing.assert_allclose(got, out(reference(rhs, y0)), rtol=1e-6)


def test_sequential_fixes_pk_at_posterior_medians():
    p = {"E0": 10.0, "EMAX": 50.0, "EC50": 2.0}
    s = spec("emax", p)
    draws = {k: (("chain", "draw"), np.full((1, 5), v) * np.linspace(0.9, 1.1, 5)) for k, v in PK.items()}
    fake_fit = type("FakeFit", (), {"posterior": xr.Dataset(draws)})()
    seq = PopulationModel(s, dataset(), pk_fit=fake_fit).build()
    assert {rv.name for rv in seq.free_RVs} == {"E0", "EMAX", "EC50", "pd_sigma_add"}
    assert [rv.name for rv in seq.observed_RVs] == ["DV_PD"]
    # the PD log-likelihood equals the simultaneous model's at the same PD values with PK at the medians
    sim = PopulationModel(s, dataset()).build()
    point = {"E0_log__": np.log(12.0), "EMAX_log__": np.log(40.0), "EC50_log__": np.log(1.5),
             "pd_sigma_add_log__": np.log(2.0)}
    full = point | {f"{k}_log__": np.log(v) for k, v in PK.items()} | {"sigma_add_log__": 0.0}
    a = seq.compile_logp(vars=seq.observed_RVs)(point)
    b = sim.compile_logp(vars=[sim["DV_PD"]])(full)
    assert a == pytest.approx(b, rel=1e-12)


def test_pk_fit_without_a_pk_parameter_refused():
    s = spec("emax", {"E0": 10.0, "EMAX": 50.0, "EC50": 2.0})
    fake_fit = type("FakeFit", (), {"posterior": xr.Dataset({"CL": (("chain", "draw"), np.ones((1, 3)))})})()
    with pytest.raises(SpecError, match=r"\[model\] pk_fit: the PK fit has no V, KA"):
        PopulationModel(s, dataset(), pk_fit=fake_fit).build()


def test_missing_pd_column_and_rows():
    s = spec("emax", {"E0": 10.0, "EMAX": 50.0, "EC50": 2.0})
    with pytest.raises(DataError, match=r"column DVID: the PD model emax reads its observations from rows with "
                                        r"DVID = 2, but the dataset has no DVID column"):
        PopulationModel(s, dataset().drop(columns="DVID"))
    with pytest.raises(DataError, match=r"column DVID: no observation record has DVID = 2"):
        PopulationModel(s, dataset(pd_value=5))


def test_pd_spec_errors():
    with pytest.raises(SpecError, match=r"\[model\] pd: 'emx' is not one of linear, emax"):
        spec("emx", {})
    with pytest.raises(SpecError, match=r"\[parameters\]: structure 1cmt_oral needs .*EC50; missing EC50"):
        spec("emax", {"E0": 1.0, "EMAX": 2.0})
    with pytest.raises(SpecError, match=r"IMAX must stay <= 1; give it a prior on \[0, 1\]"):
        Spec.from_dict({"model": {"structure": "1cmt_oral", "pd": "idr1"},
                        "parameters": {k: {"guess": 1.0} for k in ("CL", "V", "KA", "R0", "KOUT", "IMAX", "IC50")}})
    with pytest.raises(SpecError, match=r"\[model\] ode_step: only used with a PD model"):
        Spec.from_dict({"model": {"structure": "1cmt_iv", "ode_step": 0.1},
                        "parameters": {"CL": {"guess": 1.0}, "V": {"guess": 1.0}}})


def test_steady_state_refused_with_ode_pd():
    d = dataset()
    d.loc[0, "SS"] = 1
    d.loc[0, "ADDL"] = 0
    with pytest.raises(DataError, match=r"column SS: the PD model idr3 integrates its states from baseline"):
        PopulationModel(spec("idr3", {"R0": 10.0, "KOUT": 0.3, "EMAX": 2.0, "EC50": 1.5}), d)


def test_simulate_observations_draws_the_pd_rows():
    """simulate_observations fills the PD observation records (DV_PD) as well as the concentrations.

    Regression: the PD rows of a PK/PD spec kept their placeholder DV. Each row is checked against
    its own individual prediction (from the returned true etas), so PK and PD values landing on
    the wrong rows would show, and the residual spreads must match the PK and PD error models.
    """
    from dataclasses import replace

    from bayespk.simulate import simulate_observations

    n = 60
    rows = []
    for i in range(1, n + 1):
        rows.append(dict(ID=i, TIME=0.0, AMT=100.0, DV=np.nan, EVID=1, MDV=1, ADDL=1, II=12.0, CMT=1, DVID=1))
        for t in TIMES:
            rows.append(dict(ID=i, TIME=t, DV=1.0, EVID=0, MDV=0, CMT=2, DVID=1))
            rows.append(dict(ID=i, TIME=t, DV=1.0, EVID=0, MDV=0, CMT=2, DVID=2))  # placeholder
    design = pd.DataFrame(rows)
    params = {k: {"guess": v, "iiv": k == "CL"} for k, v in PK.items()}
    params |= {"E0": {"guess": 10.0}, "EMAX": {"guess": 50.0, "iiv": False}, "EC50": {"guess": 2.0, "iiv": False}}
    s = Spec.from_dict({"model": {"structure": "1cmt_oral", "pd": "emax"}, "parameters": params,
                        "error": {"model": "proportional"}, "pd_error": {"model": "additive"}})
    truth = PK | {"E0": 10.0, "EMAX": 50.0, "EC50": 2.0, "omega_CL": 0.3, "omega_E0": 0.2, "sigma_prop": 0.1,
                  "pd_sigma_add": 3.0}
    out = simulate_observations(s, design, truth, seed=4)

    obs = out[out.EVID == 0]
    pk, pdr = obs[obs.DVID == 1], obs[obs.DVID == 2]
    assert len(pdr) == n * len(TIMES) and (pdr.DV != 1.0).all()

    def individual_conc(r):
        cl, v, ka = PK["CL"] * np.exp(r.ETA_CL), PK["V"], PK["KA"]
        k = cl / v
        dts = r.TIME - np.array([0.0, 12.0])
        dts = dts[dts > 0]
        return float(np.sum(100 * ka / (v * (ka - k)) * (np.exp(-k * dts) - np.exp(-ka * dts))))

    c_pk = pk.apply(individual_conc, axis=1).to_numpy()
    c_pd = pdr.apply(individual_conc, axis=1).to_numpy()
    e = 10.0 * np.exp(pdr.ETA_E0.to_numpy()) + 50.0 * c_pd / (2.0 + c_pd)
    pd_res = pdr.DV.to_numpy() - e  # additive error, SD 3
    pk_res = pk.DV.to_numpy() / c_pk - 1  # proportional error, SD 0.1
    assert abs(pd_res.mean()) < 0.5 and pd_res.std() == pytest.approx(3.0, rel=0.1)
    assert abs(pk_res.mean()) < 0.02 and pk_res.std() == pytest.approx(0.1, rel=0.1)
    assert out.groupby("ID").ETA_E0.first().std() == pytest.approx(0.2, rel=0.3)

    # a sequential spec (pk_fit) simulates from the joint model; an LLOQ censors concentrations only
    same = simulate_observations(replace(s, pk_fit="/nonexistent/pk_fit.nc"), design, truth, seed=4)
    pd.testing.assert_frame_equal(same, out)
    blq = simulate_observations(s, design, truth, seed=4, lloq=0.5)
    is_pd = (blq.EVID == 0) & (blq.DVID == 2)
    assert blq.BLQ[~is_pd].sum() > 0 and (blq.BLQ[is_pd] == 0).all() and blq.LLOQ[is_pd].isna().all()
    np.testing.assert_array_equal(blq.DV[is_pd], out.DV[is_pd])
    PopulationModel(s, blq.drop(columns=[c for c in blq if c.startswith("ETA_")]))  # valid data


@pytest.mark.parametrize("name, params, expected", [
    ("emax", {"E0": 10.0, "EMAX": 50.0, "EC50": 2.0}, lambda: 10 + 50 * conc(TIMES) / (2 + conc(TIMES))),
    ("idr1", {"R0": 10.0, "KOUT": 0.3, "IMAX": 0.8, "IC50": 1.5},
     lambda: reference(lambda t, y, c: [3.0 * (1 - 0.8 * c / (1.5 + c)) - 0.3 * y[0]], [10.0])[0]),
])  # fmt: skip
def test_predictions_of_a_builtin_pd_model_at_its_observations(name, params, expected):
    """``Fit.predict(pd=True)`` (the prediction model of VPC, GOF and NPDE) of a built-in PD model: IPRED and
    PRED at the PD observations against the formula / solve_ivp; ``DV_sim`` scatters around them by [pd_error]."""
    from bayespk.simulate.draws import fit_from_draws

    s = Spec.from_dict(spec(name, params).to_dict() | {"pd_error": {"model": "additive"}})
    truth = {k: np.full(2, v) for k, v in (PK | params).items()} | {"sigma_add": np.full(2, 0.1),
                                                                    "pd_sigma_add": np.full(2, 0.5)}
    fit = fit_from_draws(s, dataset(), truth)
    out = fit.predict(pd=True, draws=None)
    assert out.sizes["obs"] == len(TIMES)
    np.testing.assert_allclose(out.TIME.values, TIMES)
    want = expected()
    np.testing.assert_allclose(out["IPRED"].values[0, 0], want, rtol=1e-6)
    np.testing.assert_allclose(out["PRED"].values[0, 1], want, rtol=1e-6)  # no IIV: the typical subject
    pmm, design = fit.model.build_prediction(simulate=True, pd=True)
    assert design.n_obs == len(TIMES)
    sim = pm.draw(pmm["DV_sim"], draws=400, random_seed=1, givens={pmm[k]: v[0] for k, v in truth.items()
                                                                  if k in pmm.named_vars})
    np.testing.assert_allclose(sim.mean(axis=0), want, atol=4 * 0.5 / np.sqrt(400))
    assert 0.4 < sim.std(axis=0).mean() < 0.6
    with pytest.raises(SpecError, match=f"PD model {name} on a time grid are not available"):
        fit.model.build_prediction(grid=np.linspace(0, 30, 5), pd=True)


def test_pd_predictions_of_a_sequential_model_hold_the_pk_at_the_pk_fit():
    p = {"E0": 10.0, "EMAX": 50.0, "EC50": 2.0}
    draws = {k: (("chain", "draw"), np.full((1, 5), v)) for k, v in PK.items()}
    fake_fit = type("FakeFit", (), {"posterior": xr.Dataset(draws)})()
    seq = PopulationModel(spec("emax", p), dataset(), pk_fit=fake_fit)
    pmm, _ = seq.build_prediction(pd=True)
    assert {rv.name for rv in pmm.free_RVs} == {"E0", "EMAX", "EC50"}  # the PK parameters are fixed
    ipred = pm.draw(pmm["IPRED"], givens={pmm[k]: v for k, v in p.items()})
    np.testing.assert_allclose(ipred, 10 + 50 * conc(TIMES) / (2 + conc(TIMES)), rtol=1e-12)
    with pytest.raises(SpecError, match=r"pd=True\) need a PD model"):
        PopulationModel(Spec.from_dict({"model": {"structure": "1cmt_oral"},
                                        "parameters": {k: {"guess": v, "iiv": False} for k, v in PK.items()},
                                        "error": {"model": "additive"}}), dataset()).build_prediction(pd=True)
