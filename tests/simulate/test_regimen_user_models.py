"""Regimen simulation and dose tables for models written as equations (ODE systems, algebraic predictions).

References, none computed with the simulator under test:

* a linear one-compartment oral model written as ODEs is the built-in ``1cmt_oral``
  structure (closed form) with the same parameter values: every exposure metric of every
  regimen (loading doses, titration, mg/kg, infusions) and of its steady state agrees;
* a Michaelis-Menten model (elimination ``VMAX * C / (KM + C)``) dosed far below KM is the
  linear model with ``CL = VMAX / KM``; dosed at a constant rate ``R < VMAX`` its steady
  state is ``Css = KM * R / (VMAX - R)`` (the Michaelis-Menten steady-state relation
  ``R = VMAX * Css / (KM + Css)`` used to individualise phenytoin doses: Ludden et al.,
  Clin Pharmacol Ther 1977;21:287-293); at ``R > VMAX`` there is no steady state;
* a dose table of the linear ODE twin with IIV on CL chooses the dose that the closed-form
  probabilities ``P(AUC_ss >= A) = Phi((log(dose / CL) - log A) / omega_CL)`` choose.

Fits hold fixed population values in every draw (``bayespk.simulate.draws.fit_from_draws``), so
nothing is sampled.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.stats import norm

import bayespk as bpk
from bayespk.errors import SpecError
from bayespk.simulate import Regimen, Step, dose_table, simulate_regimens
from bayespk.simulate.draws import fit_from_draws
from bayespk.simulate.regimen import UserDosing

pytestmark = pytest.mark.slow  # each ODE prediction compiles its solver (1-2 min per test on 2 cores)

ERROR = {"error": {"model": "proportional"}}
KA, V, CL = 1.3, 30.0, 2.0
VMAX, KM = 10.0, 2.0  # CL = VMAX / KM = 5 L/h in the linear range
TIGHT = {"rtol": 1e-9, "atol": 1e-12}  # exact references: the ODE solver to near machine precision
SS = 1.5e-3  # steady state by explicit dosing stops within SS_RTOL = 0.1% of it (simulate_regimens, Notes)


def _fixed(values: dict, n: int) -> dict:
    return {k: np.full(n, float(v)) for k, v in values.items()}


def _params(names, iiv=()):
    return {p: {"guess": 1.0, "iiv": {"dist": "HalfNormal", "sigma": 0.5} if p in iiv else False} for p in names}


def linear_specs(iiv=()):
    """The built-in 1cmt_oral and its twin written as ODEs (same parameter names)."""
    params = _params(("CL", "V", "KA"), iiv)
    builtin = {"name": "builtin", "model": {"structure": "1cmt_oral"}, "parameters": params} | ERROR
    ode = {"name": "linear_ode", "model": {
        "states": ["depot", "central"], "output": "central/V", "solver": TIGHT,
        "ode": {"depot": "-KA*depot", "central": "KA*depot - CL/V*central"}}, "parameters": params} | ERROR
    return bpk.Spec.from_dict(builtin), bpk.Spec.from_dict(ode)


def mm_spec(states=("depot", "central")):
    ode = {"depot": "-KA*depot", "central": "KA*depot - VMAX*C/(KM + C)"}
    return bpk.Spec.from_dict({"name": "mm_oral", "model": {
        "states": list(states), "output": "C", "derived": {"C": "central/V"}, "solver": TIGHT, "ode": ode},
        "parameters": _params(("KA", "V", "VMAX", "KM"))} | ERROR)


@pytest.fixture(scope="module")
def twins():
    """(built-in, ODE twin) fits: CL with IIV (omega 0.3), the same values in every draw."""
    b, o = linear_specs(iiv=("CL",))
    truth = _fixed({"CL": CL, "V": V, "KA": KA, "omega_CL": 0.3, "sigma_prop": 0.1}, 3)
    return fit_from_draws(b, None, truth), fit_from_draws(o, None, truth)


@pytest.fixture(scope="module")
def mm_fits():
    """(Michaelis-Menten ODE, built-in linear with CL = VMAX/KM) fits, no IIV."""
    b, _ = linear_specs()
    mm = fit_from_draws(mm_spec(), None, _fixed({"KA": KA, "V": V, "VMAX": VMAX, "KM": KM, "sigma_prop": 0.1}, 2))
    lin = fit_from_draws(b, None, _fixed({"CL": VMAX / KM, "V": V, "KA": KA, "sigma_prop": 0.1}, 2))
    return mm, lin


METRICS = ("Cmax", "Cmin", "Ctrough", "AUC", "Cmax_ss", "Cmin_ss", "Ctrough_ss", "AUC_ss")


# ---------------------------------------------------------------------- (a) the linear twin
def test_linear_ode_twin_agrees_with_the_builtin_structure(twins):
    builtin, ode = twins
    regs = [Regimen("load", dose=100, ii=12, n=5, loading=(250,)),
            Regimen("titrate", dose=4, ii=24, n=3, titration=(Step(1, 24, 2), Step(2, 24, 2)), per="WT"),
            Regimen("infusion", dose=100, ii=12, n=3, tinf=1.0)]
    covs = pd.DataFrame({"WT": [50.0, 80.0, 65.0]})
    kw = dict(population="virtual", covariates=covs, n_draws=3, threshold=2.0, progress=False)
    ref = simulate_regimens(builtin, regs, **kw)
    sim = simulate_regimens(ode, regs, **kw)
    assert ref.info["ss_method"] == "record" and sim.info["ss_method"] == "explicit"
    assert sim.info["model"] == "written as equations (ode)" and sim.info["ss_not_reached"] == 0
    assert sim.info["solver_failed"] == 0
    for r in regs:
        # same subjects (common random numbers: the same etas under both models), every curve and metric
        np.testing.assert_allclose(sim.concentrations[r.label].values, ref.concentrations[r.label].values,
                                   rtol=1e-6, atol=1e-9, err_msg=r.label)
        for m in METRICS + ("T_above",):
            np.testing.assert_allclose(sim.values(r.label, m), ref.values(r.label, m),
                                       rtol=SS if m.endswith("_ss") else 1e-6, err_msg=f"{r.label} {m}")
    # IIV on CL: subjects differ; at steady state AUC over one interval = dose / CL_i (F = 1)
    cl_i = 100 / ref.values("load", "AUC_ss")
    assert np.ptp(cl_i) > 0.1
    np.testing.assert_allclose(sim.values("load", "AUC_ss"), 100 / cl_i, rtol=SS)
    # mg/kg: the maintenance dose is 4 mg/kg; AUC_ss = 4 * WT / CL_i
    np.testing.assert_allclose(sim.values("titrate", "AUC_ss"), 4 * covs.WT.to_numpy()[:, None] / cl_i, rtol=SS)
    # the solver's SS=1 record (ss_method="record") is exact here
    rec = simulate_regimens(ode, regs[0], ss_method="record", **kw)
    np.testing.assert_allclose(rec.values("load", "AUC_ss"), 100 / cl_i, rtol=1e-7)
    # the infusion went into the central compartment (CMT 2 of the ODE), as for the built-in structure
    assert regs[2].rows(UserDosing.of(ode.model.user, "linear_ode")).CMT.tolist() == [2.0]


# ---------------------------------------------------------------------- (b) Michaelis-Menten
def test_michaelis_menten_linear_range_nonlinearity_and_steady_state(mm_fits):
    mm, lin = mm_fits
    tiny, big = Regimen("tiny", dose=0.01, ii=12, n=5), Regimen("big", dose=60, ii=12, n=5)
    long = Regimen("long", dose=60, ii=12, n=60)  # an explicit long dosing run: its last interval
    kw = dict(population="virtual", n_subjects=1, n_draws=2, progress=False)
    sim = simulate_regimens(mm, [tiny, big, long], **kw)
    ref = simulate_regimens(lin, [tiny, big], **kw)
    assert sim.info["ss_method"] == "explicit" and sim.info["ss_not_reached"] == 0
    assert sim.info["prediction_groups"] == [["tiny", "big"], ["long"]]  # one solver per grid: the doses share it
    # far below KM (C about 3e-4 mg/L against KM 2 mg/L): the linear model with CL = VMAX / KM
    for m in METRICS:
        np.testing.assert_allclose(sim.values("tiny", m), ref.values("tiny", m), rtol=1e-3, err_msg=m)
    # 60 mg every 12 h (half of VMAX): exposure rises more than in proportion to the dose
    for m in ("AUC", "AUC_ss", "Cmin_ss"):
        assert (sim.values("big", m) / 60 > 1.5 * sim.values("tiny", m) / 0.01).all(), m
        assert (sim.values("big", m) > 1.5 * ref.values("big", m)).all(), m  # linear extrapolation falls short
    # the steady state is that of an explicit long run (60 doses: its last interval)
    for m in ("AUC", "Cmax", "Cmin", "Ctrough"):
        np.testing.assert_allclose(sim.values("long", f"{m}_ss"), sim.values("long", m), rtol=SS, err_msg=m)
        np.testing.assert_allclose(sim.values("big", f"{m}_ss"), sim.values("long", m), rtol=SS, err_msg=m)


def test_michaelis_menten_constant_rate_steady_state(mm_fits):
    """Back-to-back infusions at R = 5 mg/h: Css = KM R / (VMAX - R) = 2 mg/L, AUC over 12 h = 24 mg h/L."""
    mm, _ = mm_fits
    rate = Regimen("rate", dose=60, ii=12, n=3, tinf=12)
    css = KM * 5.0 / (VMAX - 5.0)
    kw = dict(population="virtual", n_subjects=1, n_draws=2, progress=False)
    for method, rtol in (("explicit", SS), ("record", 1e-6)):  # record: the solver's SS=1 iteration, converged
        sim = simulate_regimens(mm, rate, ss_method=method, **kw)
        assert sim.info["ss_method"] == method and sim.info["ss_not_reached"] == 0
        np.testing.assert_allclose(sim.values("rate", "AUC_ss"), 12 * css, rtol=rtol, err_msg=method)
        for m in ("Cmax_ss", "Cmin_ss"):
            np.testing.assert_allclose(sim.values("rate", m), css, rtol=rtol, err_msg=f"{method} {m}")
    assert (sim.values("rate", "Cmax") < css).all()  # after 3 infusions the concentration is still rising


def test_michaelis_menten_above_vmax_has_no_steady_state(mm_fits):
    mm, _ = mm_fits
    fast = Regimen("fast", dose=150, ii=12, n=3, tinf=12)  # 12.5 mg/h > VMAX: the amount grows without bound
    with pytest.warns(RuntimeWarning, match=r"steady state not reached for 2 of 2 .*raise ss_intervals"):
        sim = simulate_regimens(mm, fast, population="virtual", n_subjects=1, n_draws=2, ss_intervals=3,
                                progress=False)
    assert sim.info["ss_not_reached"] == 2 and sim.info["ss_doses"] == {"fast": 48}  # 3, 12, 48 doses tried
    assert np.isnan(sim.metrics["AUC_ss"].values).all()
    assert np.isfinite(sim.values("fast", "AUC")).all()  # the regimen itself is simulated
    assert "AUC_ss" not in sim.metric_names


# ---------------------------------------------------------------------- (c) dose table
def test_dose_table_of_the_ode_twin_picks_the_closed_form_dose(twins):
    builtin, ode = twins
    doses = [50.0, 100.0, 150.0, 200.0]
    omega, target, limit = 0.3, 40.0, 120.0
    # closed form: AUC_ss = dose / CL_i, log CL_i ~ N(log CL, omega)
    p_target = norm.cdf((np.log(np.array(doses) / CL) - np.log(target)) / omega)
    p_exceed = norm.cdf((np.log(np.array(doses) / CL) - np.log(limit)) / omega)
    eligible = p_exceed <= 0.1
    truth = doses[int(np.argmax(np.where(eligible, p_target, -1)))]
    assert truth == 150.0 and p_exceed[3] > 0.2  # the top dose is too risky, 150 mg is the best safe one
    kw = dict(n_subjects=200, n_draws=3, max_risk=0.1)
    tab = dose_table(ode, doses, "1q12x3", f"AUC_ss>={target:g}", safety=f"AUC_ss>={limit:g}", **kw)
    ref = dose_table(builtin, doses, "1q12x3", f"AUC_ss>={target:g}", safety=f"AUC_ss>={limit:g}", **kw)
    assert tab.best_dose == truth == ref.best_dose
    # the unit-dose shortcut is off for a model written as equations (not known to be linear), on for the built-in
    assert tab.info["scaled_from_unit_dose"] is False and "not known to be linear" in tab.info["scale_ss_off"]
    assert ref.info["scaled_from_unit_dose"] is True
    all_ = tab.table[tab.table.stratum == "all"].sort_values("dose")
    np.testing.assert_allclose(all_.p_target, p_target, atol=0.08)  # 200 patients x 3 draws
    np.testing.assert_allclose(all_.p_exceed, p_exceed, atol=0.08)
    # the same patients (common random numbers) under both models: the same probabilities
    ref_all = ref.table[ref.table.stratum == "all"].sort_values("dose")
    np.testing.assert_allclose(all_.p_target, ref_all.p_target, atol=1e-9)
    np.testing.assert_allclose(all_.p_exceed, ref_all.p_exceed, atol=1e-9)


# ---------------------------------------------------------------------- algebraic models
def test_algebraic_prediction_regimen():
    params = _params(("CL", "V", "KA"))
    spec = bpk.Spec.from_dict({"name": "algebraic", "model": {
        "prediction": "DOSE*KA/(V*KA - CL)*(exp(-CL/V*TAD) - exp(-KA*TAD))"}, "parameters": params} | ERROR)
    b, _ = linear_specs()
    values = _fixed({"CL": CL, "V": V, "KA": KA, "sigma_prop": 0.1}, 2)
    alg, ref = fit_from_draws(spec, None, values), fit_from_draws(b, None, values)
    r = Regimen("single", dose=100, ii=24)
    kw = dict(population="virtual", n_subjects=1, n_draws=2, progress=False)
    sim, exact = simulate_regimens(alg, r, **kw), simulate_regimens(ref, r, **kw)
    for m in ("Cmax", "Tmax", "Cmin", "AUC"):
        np.testing.assert_allclose(sim.values("single", m), exact.values("single", m), rtol=1e-9, err_msg=m)
    # the prediction sees the last dose only (DOSE, TAD): its "steady state" is the single-dose interval
    assert sim.info["ss_method"] == "explicit"
    np.testing.assert_allclose(sim.values("single", "AUC_ss"), sim.values("single", "AUC"), rtol=1e-3)  # grids
    with pytest.raises(SpecError, match=r"regimen 'inf': tinf=1, but the algebraic prediction of algebraic sees a "
                                        r"dose only as DOSE and TAD"):
        simulate_regimens(alg, Regimen("inf", dose=100, ii=24, tinf=1), **kw)
    with pytest.raises(SpecError, match=r"route=depot, but the model algebraic is an algebraic prediction"):
        simulate_regimens(alg, Regimen("d", dose=100, ii=24, route="depot"), **kw)
    with pytest.raises(SpecError, match=r"ss_method='record': the algebraic prediction of algebraic has no states"):
        simulate_regimens(alg, r, ss_method="record", **kw)


# ---------------------------------------------------------------------- (d) refusals
def test_refusals_name_the_option(mm_fits):
    mm, _ = mm_fits
    kw = dict(population="virtual", n_subjects=1, n_draws=1, progress=False)
    with pytest.raises(SpecError, match=r"ss_method='fold' folds the curve of one dose by linear superposition, "
                                        r"which the model mm_oral .*use ss_method='explicit'"):
        simulate_regimens(mm, "60q12x3", ss_method="fold", **kw)
    with pytest.raises(SpecError, match=r"ss_intervals=2: ss_method='explicit' needs at least 3"):
        simulate_regimens(mm, "60q12x3", ss_intervals=2, **kw)
    iv = fit_from_draws(mm_spec(states=("central", "depot")), None,
                        _fixed({"KA": KA, "V": V, "VMAX": VMAX, "KM": KM, "sigma_prop": 0.1}, 1))
    # a model whose dose states have other names: route names them, or is left unset
    renamed = bpk.Spec.from_dict({"name": "gut_model", "model": {
        "states": ["gut", "blood"], "output": "blood/V", "doses": {"1": "gut"},
        "ode": {"gut": "-KA*gut", "blood": "KA*gut - CL/V*blood"}}, "parameters": _params(("CL", "V", "KA"))}
        | ERROR)
    gut = fit_from_draws(renamed, None, _fixed({"CL": CL, "V": V, "KA": KA, "sigma_prop": 0.1}, 1))
    with pytest.raises(SpecError, match=r"regimen 'c': route=central, but the model gut_model written as equations "
                                        r"has no dose state named 'central' \(its doses: CMT 1 = gut\); leave route "
                                        r"unset for its default dose compartment \(CMT 1\)"):
        simulate_regimens(gut, Regimen("c", dose=10, ii=12, route="central"), **kw)
    dosing = UserDosing.of(iv.model.user, "mm_iv")
    assert Regimen("x", dose=1, ii=12).cmt(dosing) == 1.0  # the default dose compartment: CMT 1 = central
    assert Regimen("x", dose=1, ii=12, route="depot").cmt(dosing) == 2.0
    assert Regimen("x", dose=1, ii=12, tinf=1).cmt(dosing) == 1.0  # an infusion: the state named central
    g = UserDosing.of(gut.model.user, "gut_model")
    assert Regimen("x", dose=1, ii=12, tinf=1).cmt(g) == 1.0  # no central dose state: the default one
