"""Models that users write: ODE models (diffrax) against the closed forms, stiff solving, the spec
and Python doors, algebraic predictions, custom covariate relations, and refused definitions."""

import warnings

import jax
import numpy as np
import pandas as pd
import pymc as pm
import pytest
from conftest import MODELS
from scipy.integrate import solve_ivp

import bayespk as bpk
from bayespk.cli import main
from bayespk.data.design import Design
from bayespk.data.nonmem import read_nonmem
from bayespk.data.schedule import Schedule
from bayespk.errors import DataError, SpecError
from bayespk.structural import STRUCTURES
from bayespk.structural.diffeq import ODEModel, Solver, solve_outputs

jax.config.update("jax_enable_x64", True)
TIGHT = Solver(rtol=1e-10, atol=1e-12, max_steps=100_000, ss_intervals=200, ss_rtol=1e-9)


def _ode_at_observations(model: ODEModel, data, per_subject: dict, records: bool = True):
    """ODE predictions at the data's observations, parameters constant per subject."""
    d = Design.from_dataset(data, None)
    sched = Schedule.build(data, d.subject_ids, model.dose_state, model.default_cmt, d.obs_subject, d.obs_time,
                           d.obs_record.astype(float))
    names = tuple(n for n in model.parameters if n in per_subject)
    n_s, n_r = sched.records.shape
    values = np.stack([np.repeat(np.asarray(per_subject[n], float)[:, None], n_r, 1) for n in names], -1)
    pred, ok = jax.jit(lambda v: solve_outputs(model, sched, names, v, np.zeros((n_s, n_r, 0))))(values)
    return np.asarray(pred), bool(ok), d


def _oral_1cmt(**solver):
    return ODEModel(states=("depot", "central"),
                    rhs=lambda t, y, p: {"depot": -p["KA"] * y["depot"],
                                         "central": p["KA"] * y["depot"] - p["CL"] / p["V"] * y["central"]},
                    output=lambda t, y, p: y["central"] / p["V"],
                    parameters=("KA", "CL", "V", "F1", "ALAG1", "D2"), solver=Solver(**solver) if solver else TIGHT)


def _dosing_cases() -> pd.DataFrame:
    """Subjects exercising every dose record type of a depot + central model."""
    rows = []

    def subject(i, doses, obs):
        for d in doses:
            rows.append({"ID": i, "EVID": 1, "MDV": 1, "DV": ".", "RATE": 0, "II": 0, "ADDL": 0, "SS": 0} | d)
        for t in obs:
            rows.append({"ID": i, "TIME": t, "AMT": ".", "EVID": 0, "MDV": 0, "DV": 1.0, "CMT": 2, "RATE": 0,
                         "II": 0, "ADDL": 0, "SS": 0})

    grid = [0.5, 1, 2, 4, 8, 12, 24, 25, 30, 48, 50, 60]
    subject(1, [{"TIME": 0, "AMT": 100, "CMT": 1, "II": 12, "ADDL": 4}], grid)  # oral ADDL train
    subject(2, [{"TIME": 0, "AMT": 100, "CMT": 2, "RATE": 50}, {"TIME": 24, "AMT": 80, "CMT": 2, "RATE": 20}], grid)
    subject(3, [{"TIME": 0, "AMT": 100, "CMT": 1, "II": 12, "SS": 1},
                {"TIME": 12, "AMT": 100, "CMT": 1, "II": 12, "ADDL": 2}], grid)  # steady state, then more doses
    subject(4, [{"TIME": 0, "AMT": 100, "CMT": 1}, {"TIME": 24, "AMT": 50, "CMT": 1, "EVID": 4}], grid)  # reset
    subject(5, [{"TIME": 0, "AMT": 100, "CMT": 2, "RATE": -2}, {"TIME": 24, "AMT": 60, "CMT": 1}], grid)  # D1
    subject(6, [{"TIME": 0, "AMT": 100, "CMT": 2, "RATE": 40, "II": 24, "SS": 1}], grid)  # infusion at SS
    t = pd.DataFrame(rows)
    t["_order"] = t.EVID.eq(0)  # doses before observations at the same time
    return t.sort_values(["ID", "TIME", "_order"], kind="stable").drop(columns="_order")


def test_ode_agrees_with_closed_form_for_every_dose_record_type():
    data = read_nonmem(_dosing_cases())
    n = len(data.subject_ids)
    rng = np.random.default_rng(3)
    p = {"KA": rng.uniform(0.6, 1.5, n), "CL": rng.uniform(2, 5, n), "V": rng.uniform(20, 40, n),
         "F1": rng.uniform(0.5, 0.9, n), "ALAG1": rng.uniform(0.2, 0.7, n), "D2": rng.uniform(1, 3, n)}
    pred, ok, d = _ode_at_observations(_oral_1cmt(), data, p)
    assert ok
    closed = {"KA": "KA", "CL": "CL", "V": "V", "F": "F1", "TLAG": "ALAG1", "D1": "D2"}
    d = Design.from_dataset(data, STRUCTURES["1cmt_oral"])
    cf = d.concentrations(STRUCTURES["1cmt_oral"], {k: p[v][d.obs_subject] for k, v in closed.items()})
    assert np.mean(cf > 0.05) > 0.8  # the comparison is on concentrations that matter
    np.testing.assert_allclose(pred, cf, rtol=1e-6, atol=1e-9)


@pytest.mark.parametrize("dataset, structure", [("theophylline", "1cmt_oral"), ("indomethacin", "2cmt_iv")])
def test_ode_agrees_with_closed_form_on_bundled_data(dataset, structure):
    data = read_nonmem(bpk.datasets.path(dataset))
    n = len(data.subject_ids)
    rng = np.random.default_rng(0)
    if structure == "1cmt_oral":
        model = _oral_1cmt()
        p = {"KA": rng.uniform(1, 2, n), "CL": rng.uniform(0.03, 0.05, n), "V": rng.uniform(0.4, 0.5, n),
             "F1": np.ones(n), "ALAG1": np.zeros(n), "D2": np.ones(n)}
    else:
        model = ODEModel(states=("central", "peripheral"),
                         rhs=lambda t, y, q: {"central": -q["CL"] / q["V1"] * y["central"]
                                              - q["Q"] / q["V1"] * y["central"] + q["Q"] / q["V2"] * y["peripheral"],
                                              "peripheral": q["Q"] / q["V1"] * y["central"]
                                              - q["Q"] / q["V2"] * y["peripheral"]},
                         output=lambda t, y, q: y["central"] / q["V1"], parameters=("CL", "V1", "Q", "V2"),
                         solver=TIGHT)
        p = {"CL": rng.uniform(6, 10, n), "V1": rng.uniform(6, 9, n), "Q": rng.uniform(5, 7, n),
             "V2": rng.uniform(10, 14, n)}
    pred, ok, d = _ode_at_observations(model, data, p)
    d = Design.from_dataset(data, STRUCTURES[structure])
    cf = d.concentrations(STRUCTURES[structure], {k: v[d.obs_subject] for k, v in p.items() if k in STRUCTURES[
        structure].parameters})
    assert ok
    np.testing.assert_allclose(pred, cf, rtol=1e-6, atol=1e-9)


def _binding_data():
    rows = [{"ID": 1, "TIME": 0, "AMT": 10, "EVID": 1, "MDV": 1, "DV": ".", "CMT": 1}]
    rows += [{"ID": 1, "TIME": t, "AMT": ".", "EVID": 0, "MDV": 0, "DV": 1.0, "CMT": 1} for t in (1, 5, 10, 24)]
    return read_nonmem(pd.DataFrame(rows))


def _binding_model(method):
    """Drug-target binding with fast association (kon * R0 ~ 1e5 /h): stiff."""
    return ODEModel(
        states=("L", "R", "P"),
        rhs=lambda t, y, p: {"L": -p["KEL"] * y["L"] - p["KON"] * y["L"] * y["R"] + p["KOFF"] * y["P"],
                             "R": p["KSYN"] - p["KDEG"] * y["R"] - p["KON"] * y["L"] * y["R"] + p["KOFF"] * y["P"],
                             "P": p["KON"] * y["L"] * y["R"] - p["KOFF"] * y["P"] - p["KINT"] * y["P"]},
        output=lambda t, y, p: y["L"], parameters=("KEL", "KON", "KOFF", "KSYN", "KDEG", "KINT"),
        initial=lambda p: {"R": p["KSYN"] / p["KDEG"]}, solver=Solver(method=method, rtol=1e-6, atol=1e-9))


def test_stiff_method_solves_what_the_explicit_one_cannot():
    data = _binding_data()
    p = {"KEL": [0.1], "KON": [1e4], "KOFF": [1.0], "KSYN": [1.0], "KDEG": [0.1], "KINT": [0.05]}
    explicit, ok_explicit, _ = _ode_at_observations(_binding_model("tsit5"), data, p)
    stiff, ok_stiff, d = _ode_at_observations(_binding_model("kvaerno5"), data, p)
    assert not ok_explicit  # 4096 steps are not enough at this tolerance
    assert ok_stiff

    def f(t, y):
        L, R, P = y
        return [-0.1 * L - 1e4 * L * R + P, 1 - 0.1 * R - 1e4 * L * R + P, 1e4 * L * R - P - 0.05 * P]

    ref = solve_ivp(f, (0, 24), [10, 10, 0], method="Radau", rtol=1e-10, atol=1e-13, t_eval=d.obs_time)
    np.testing.assert_allclose(stiff, ref.y[0], rtol=1e-4)


MM_SPEC = {
    "name": "mm",
    "model": {"states": ["depot", "central"], "output": "C",
              "ode": {"depot": "-KA*depot", "central": "KA*depot - VMAX*C/(KM + C)"}, "derived": {"C": "central/V"}},
    "parameters": {"KA": {"guess": 1.5}, "VMAX": {"guess": 0.5}, "KM": {"guess": 5.0, "iiv": False},
                   "V": {"guess": 0.5}},
    "error": {"model": "additive"},
}


def _theoph():
    return read_nonmem(bpk.datasets.path("theophylline"))


def _logp_and_grad(model, seed=0):
    """Log-density and gradient at a point near the initial one (one JAX function: one compilation)."""
    import pytensor
    import pytensor.tensor as pt

    pm_model = model.build()
    point = pm_model.initial_point()
    rng = np.random.default_rng(seed)
    point = {k: v + rng.normal(0, 0.2, np.shape(v)) for k, v in point.items()}
    logp = pm_model.logp()
    grad = pt.concatenate([g.ravel() for g in pytensor.grad(logp, pm_model.value_vars)])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        f = pm_model.compile_fn([logp, grad], inputs=pm_model.value_vars, mode="JAX", point_fn=False)
    value, g = f(*[point[v.name] for v in pm_model.value_vars])
    return float(value), np.asarray(g)


def test_spec_and_python_doors_give_identical_log_densities():
    python = ODEModel(
        states=("depot", "central"),
        rhs=lambda t, y, p: {"depot": -p["KA"] * y["depot"],
                             "central": p["KA"] * y["depot"]
                             - p["VMAX"] * (y["central"] / p["V"]) / (p["KM"] + y["central"] / p["V"])},
        output=lambda t, y, p: y["central"] / p["V"], parameters=("KA", "VMAX", "KM", "V"))
    from_spec = bpk.PopulationModel(MM_SPEC, _theoph())
    from_python = bpk.PopulationModel({k: v for k, v in MM_SPEC.items() if k != "model"}, _theoph(),
                                      structural=python)
    (la, ga), (lb, gb) = _logp_and_grad(from_spec), _logp_and_grad(from_python)
    assert np.isfinite(la)
    assert la == lb
    np.testing.assert_allclose(ga, gb, rtol=1e-12, atol=1e-14)  # the same up to the order of operations
    # a fit of a Python model stores its name only: reading the spec back needs the model again
    with pytest.raises(SpecError, match="written in Python"):
        bpk.Spec.from_dict(from_python.spec.to_dict())


def test_algebraic_and_ode_models_agree_with_the_builtin_structure():
    base = {"parameters": {"CL": {"guess": 0.04}, "V": {"guess": 0.45}, "KA": {"guess": 1.5}},
            "error": {"model": "additive"}}
    builtin = bpk.PopulationModel(base | {"model": {"structure": "1cmt_oral"}}, _theoph())
    algebraic = bpk.PopulationModel(base | {"model": {
        "prediction": "DOSE*KA/(V*KA - CL)*(exp(-CL/V*TAD) - exp(-KA*TAD))"}}, _theoph())
    ode = bpk.PopulationModel(base | {"model": {
        "states": ["depot", "central"], "output": "central/V", "solver": {"rtol": 1e-10, "atol": 1e-12},
        "ode": {"depot": "-KA*depot", "central": "KA*depot - CL/V*central"}}}, _theoph())
    ref, g_ref = _logp_and_grad(builtin)
    for other in (algebraic, ode):
        value, grad = _logp_and_grad(other)
        np.testing.assert_allclose(value, ref, rtol=1e-9)
        np.testing.assert_allclose(grad, g_ref, rtol=1e-6, atol=1e-8)


def test_solver_failure_rejects_the_proposal_instead_of_raising():
    spec = MM_SPEC | {"model": MM_SPEC["model"] | {"solver": {"max_steps": 2}}}
    value, _ = _logp_and_grad(bpk.PopulationModel(spec, _theoph()))
    assert value == -np.inf


def test_custom_relation_gives_each_subject_its_typical_value():
    t = _theoph().table.copy()
    t["PMA"] = 30.0 + 2.0 * t.ID.astype(float)  # a maturation covariate per subject (weeks)
    spec = {"model": {"structure": "1cmt_oral"},
            "parameters": {"CL": {"guess": 0.04, "iiv": False,
                                  "relation": "CL * (WT/70)^0.75 * PMA^HILL/(TM50^HILL + PMA^HILL)"},
                           "V": {"guess": 0.45}, "KA": {"guess": 1.5},
                           "HILL": {"guess": 3.0, "iiv": False}, "TM50": {"guess": 40.0, "iiv": False}},
            "error": {"model": "additive"}}
    model = bpk.PopulationModel(spec, read_nonmem(t))
    typical = {"CL": 0.05, "HILL": 3.0, "TM50": 40.0}
    ind = pm.do(model.build_individual(), typical)
    cl_i = ind["CL_i"].eval()
    first = t.groupby("ID", sort=False).first().reindex(model.design.subject_ids)
    expected = (typical["CL"] * (first.WT / 70) ** 0.75 * first.PMA ** typical["HILL"]
                / (typical["TM50"] ** typical["HILL"] + first.PMA ** typical["HILL"]))
    np.testing.assert_allclose(cl_i, expected.to_numpy(), rtol=1e-10)
    with pytest.raises(SpecError, match=r"must use CL itself"):
        bpk.Spec.from_dict(spec | {"parameters": spec["parameters"] | {
            "CL": {"guess": 0.04, "relation": "0.04 * PMA^HILL/(TM50^HILL + PMA^HILL)"}}})


def _write(tmp_path, model: dict, name="bad", data=None):
    import tomli_w

    path = tmp_path / f"{name}.toml"
    d = {"name": name, "data": {"path": data or str(bpk.datasets.path("theophylline"))}, "model": model,
         "parameters": MM_SPEC["parameters"], "error": {"model": "additive"}}
    path.write_text(tomli_w.dumps(d))
    return path


BAD_MODELS = [
    ({"ode": {"depot": "-KA*depot", "central": "KA*depot - VMAX*Cx/(KM + C)"}},
     r'\[model.ode\] central = "KA\*depot - VMAX\*Cx/\(KM \+ C\)": unknown name \'Cx\' at column 17'),
    ({"states": ["depot", "central", "periph"]}, r"state periph has no right-hand side"),
    ({"derived": {"C": "D/V", "D": "C*V"}}, r"cycle"),
    ({"ode": {"depot": "-KA*depot", "central": "__import__('os').system('true')"}}, r"__import__"),
    ({"ode": {"depot": "KA.real", "central": "-central"}}, r"attribute access"),
    ({"doses": {"1": "gut"}}, r"doses: CMT 1 enters 'gut', which is not a state"),
    ({"output": "C +"}, r"\[model\] output"),
]


@pytest.mark.parametrize("change, message", BAD_MODELS)
def test_malformed_model_definitions_are_refused_before_sampling(tmp_path, capsys, change, message):
    path = _write(tmp_path, MM_SPEC["model"] | change)
    assert main(["fit", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert pytest.importorskip("re").search(message, err), err
    assert "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_dose_into_a_cmt_the_model_does_not_map_is_refused(tmp_path):
    t = _theoph().table.copy()
    t.loc[t.EVID == 1, "CMT"] = 3
    with pytest.raises(DataError, match=r"row 1, column CMT: dose into CMT 3, but the ODE model"):
        bpk.PopulationModel(MM_SPEC, read_nonmem(t))


def test_unused_parameter_and_unknown_column_are_refused():
    spec = MM_SPEC | {"parameters": MM_SPEC["parameters"] | {"Q": {"guess": 1.0}}}
    with pytest.raises(SpecError, match=r"\[parameters.Q\]: Q is not used"):
        bpk.Spec.from_dict(spec)
    spec = MM_SPEC | {"model": MM_SPEC["model"] | {"derived": {"C": "central/(V*WT2)"}}}
    with pytest.raises(SpecError,
                       match=r"\[model.derived\] C = \"central/\(V\*WT2\)\": unknown name 'WT2' at column 12"):
        bpk.PopulationModel(spec, _theoph())


def test_parameters_change_at_the_record_where_a_covariate_changes():
    """Time-varying parameters: each interval is integrated with the record in effect (LOCF), ADDL repeats
    included; checked against scipy integrating the same pieces."""
    rows = [{"ID": 1, "TIME": 0, "AMT": 100, "EVID": 1, "MDV": 1, "DV": ".", "CMT": 1, "II": 12, "ADDL": 3}]
    rows += [{"ID": 1, "TIME": t, "AMT": ".", "EVID": 0, "MDV": 0, "DV": 1.0, "CMT": 2, "II": 0, "ADDL": 0}
             for t in (2, 6, 11, 14, 20, 26, 30, 40, 47)]
    rows.insert(4, {"ID": 1, "TIME": 12, "AMT": ".", "EVID": 2, "MDV": 1, "DV": ".", "CMT": ".", "II": 0,
                    "ADDL": 0})  # the covariate changes here (between the observations at 11 and 14)
    data = read_nonmem(pd.DataFrame(rows))
    model = _oral_1cmt()
    d = Design.from_dataset(data, None)
    sched = Schedule.build(data, d.subject_ids, model.dose_state, model.default_cmt, d.obs_subject, d.obs_time,
                           d.obs_record.astype(float))
    cl = np.where(data.table.TIME.to_numpy() < 12, 3.0, 1.5)  # per record: CL halves from the record at 12 h
    values = np.stack([np.full(len(cl), 1.0), cl, np.full(len(cl), 30.0), np.ones(len(cl)), np.zeros(len(cl)),
                       np.ones(len(cl))], -1)[None]
    names = ("KA", "CL", "V", "F1", "ALAG1", "D2")
    pred, ok = jax.jit(lambda v: solve_outputs(model, sched, names, v, np.zeros((1, len(cl), 0))))(values)
    assert bool(ok)

    def f(t, y, k):
        return [-1.0 * y[0], 1.0 * y[0] - k / 30.0 * y[1]]

    y, t0, ref = np.zeros(2), 0.0, {}
    for t1 in (12, 24, 36, 48):  # doses at 0, 12, 24, 36; CL 3 before 12 h, 1.5 after
        y[0] += 100
        sol = solve_ivp(f, (t0, t1), y, args=(3.0 if t1 <= 12 else 1.5,), rtol=1e-11, atol=1e-12,
                        dense_output=True)
        for t in d.obs_time[(d.obs_time >= t0) & (d.obs_time < t1)]:
            ref[t] = sol.sol(t)[1] / 30.0
        y, t0 = sol.y[:, -1].copy(), t1
    np.testing.assert_allclose(np.asarray(pred), [ref[t] for t in d.obs_time], rtol=1e-6)


# ----------------------------------------------------------------- two outputs (PK and PD)
IRM_PARAMETERS = {"KA": {"guess": 1.0}, "CL": {"guess": 4.0}, "V": {"guess": 40.0}, "R0": {"guess": 100.0},
                  "KOUT": {"guess": 0.1, "iiv": False}, "IC50": {"guess": 1.0},
                  "IMAX": {"typical": {"dist": "Beta", "alpha": 8, "beta": 2}}}
IRM_ERRORS = {"error": {"model": "proportional", "blq": "M3"}, "pd_error": {"model": "additive"}}
IRM_MODEL = {"states": ["depot", "central", "R"], "output": "C", "pd_output": "R",
             "pd_observations": {"column": "DVID", "value": 2},
             "ode": {"depot": "-KA*depot", "central": "KA*depot - CL*C", "R": "KIN*(1 - IMAX*C/(IC50 + C)) - KOUT*R"},
             "derived": {"C": "central/V", "KIN": "R0*KOUT"}, "initial": {"R": "R0"},
             "solver": {"rtol": 1e-10, "atol": 1e-10}}


def _irm_data(n_subjects: int = 6):
    t = pd.read_csv(MODELS / "data" / "irm_oral.csv", dtype=str, keep_default_na=False)
    return read_nonmem(t[t.ID.astype(int) <= n_subjects])


def _point_logps(model):
    pm_model = model.build()
    point = pm_model.initial_point()
    return pm_model.point_logps(point, round_vals=14)


def test_two_outputs_agree_with_the_builtin_pkpd_model():
    """A PK/PD model written as equations (two outputs: concentrations with BLQ under M3 and proportional error,
    responses with additive error) gives the log-density of the built-in 1cmt_oral + idr1 model, term by
    term; its Python twin gives the same to the last digit."""
    data = _irm_data()
    builtin = bpk.PopulationModel({"model": {"structure": "1cmt_oral", "pd": "idr1", "ode_step": 0.01,
                                             "pd_observations": {"column": "DVID", "value": 2}},
                                   "parameters": IRM_PARAMETERS} | IRM_ERRORS, data)
    user = bpk.PopulationModel({"model": IRM_MODEL, "parameters": IRM_PARAMETERS} | IRM_ERRORS, data)
    assert user.design.n_obs == builtin.design.n_obs == 48 and user.pd_design.n_obs == builtin.pd_design.n_obs == 54
    assert (user.design.obs_cens == 1).sum() > 0  # BLQ concentrations in the likelihood
    ref, got = _point_logps(builtin), _point_logps(user)
    assert np.isfinite(got["DV"]) and np.isfinite(got["DV_PD"])
    np.testing.assert_allclose(got["DV"], ref["DV"], rtol=1e-9)
    np.testing.assert_allclose(got["DV_PD"], ref["DV_PD"], rtol=1e-7)  # RK4 (step 0.01 h) against diffrax
    assert {k for k in got if k != "ode_solver_failed"} == set(ref)

    def rhs(t, y, p):
        c = y["central"] / p["V"]
        return {"depot": -p["KA"] * y["depot"], "central": p["KA"] * y["depot"] - p["CL"] * c,
                "R": p["R0"] * p["KOUT"] * (1 - p["IMAX"] * c / (p["IC50"] + c)) - p["KOUT"] * y["R"]}

    python = ODEModel(states=("depot", "central", "R"), rhs=rhs, output=lambda t, y, p: y["central"] / p["V"],
                      pd_output=lambda t, y, p: y["R"], initial=lambda p: {"R": p["R0"]},
                      parameters=tuple(IRM_PARAMETERS), solver=Solver(rtol=1e-10, atol=1e-10))
    twin = bpk.PopulationModel({"model": {"pd_observations": {"column": "DVID", "value": 2}},
                                "parameters": IRM_PARAMETERS} | IRM_ERRORS, data, structural=python)
    twin_logps = _point_logps(twin)
    assert twin_logps["DV"] == got["DV"] and twin_logps["DV_PD"] == got["DV_PD"]
    # the resolved spec reads back with the same two outputs
    again = bpk.Spec.from_dict(user.spec.to_dict())
    assert again.pd_observations == ("DVID", 2.0) and again.pd_error == user.spec.pd_error
    assert again.user == user.spec.user


def test_pd_predictions_of_a_two_output_model_are_its_pd_output():
    user = bpk.PopulationModel({"model": IRM_MODEL, "parameters": IRM_PARAMETERS} | IRM_ERRORS, _irm_data(2))
    pm_model, design = user.build_prediction(pd=True)
    assert design is user.pd_design
    pred = pm.draw(pm.do(pm_model, {"KA": 1.0, "CL": 4.0, "V": 40.0, "R0": 100.0, "KOUT": 0.1, "IC50": 1.0,
                                    "IMAX": 1.0})["PRED"], random_seed=1)
    first = design.obs_subject == 0  # subject 1: 50 mg
    t = design.obs_time[first]

    def f(t, y):
        c = y[1] / 40.0
        return [-y[0], y[0] - 4.0 * c, 10.0 * (1 - c / (1.0 + c)) - 0.1 * y[2]]

    expected = solve_ivp(f, (0, t[-1]), [50.0, 0.0, 100.0], t_eval=t, rtol=1e-11, atol=1e-11).y[2]
    np.testing.assert_allclose(pred[first], expected, rtol=1e-6)
    with pytest.raises(SpecError, match="pd=True"):
        bpk.PopulationModel(MM_SPEC, _theoph()).build_prediction(pd=True)


@pytest.mark.parametrize("change, error, message", [
    ({"model": {k: v for k, v in IRM_MODEL.items() if k != "pd_output"}}, SpecError,
     r"\[model\] pd_observations: only used by a model with a second output"),
    ({"model": {"prediction": "DOSE/V*exp(-CL/V*t)", "pd_output": "R0"}}, SpecError,
     r"\[model\] pd_output: a second output needs the model written as an ODE system"),
    ({"model": IRM_MODEL | {"pd_observations": {"column": "DVID", "value": 3}}}, DataError,
     r"column DVID: no observation record has DVID = 3, so the model's pd_output has nothing to fit"),
    ({"model": IRM_MODEL | {"pd_observations": {"column": "YTYPE", "value": 2}}}, DataError,
     r"column YTYPE: the model's pd_output reads its observations from rows with YTYPE = 2"),
    ({"model": IRM_MODEL | {"pd_output": "R + Q"}}, SpecError, r"\[model\] pd_output = \"R \+ Q\": unknown name 'Q'"),
])
def test_malformed_second_outputs_are_refused(change, error, message):
    spec = {"model": IRM_MODEL, "parameters": IRM_PARAMETERS} | IRM_ERRORS | change
    if "prediction" in spec["model"]:
        spec["parameters"] = {k: IRM_PARAMETERS[k] for k in ("CL", "V", "R0")}
    with pytest.raises(error, match=message):
        bpk.PopulationModel(spec, _irm_data(2))
    without = {"model": {k: v for k, v in IRM_MODEL.items() if k not in ("pd_output", "pd_observations")},
               "parameters": IRM_PARAMETERS} | IRM_ERRORS
    with pytest.raises(SpecError, match=r"\[pd_error\]: only used by a model with a second output"):
        bpk.Spec.from_dict(without)


def test_prediction_graphs_reuse_the_solver_operation():
    """Every prediction graph of a model on the same schedule holds one JAX operation, so the solver is traced
    and compiled once for a report's VPC, pcVPC, NPDE and GOF, not once per graph; the values are unchanged."""
    from pytensor.graph.traversal import ancestors

    def solver_ops(pm_model):
        return {v.owner.op for v in ancestors([pm_model["IPRED"], pm_model["PRED"]])
                if v.owner is not None and type(v.owner.op).__name__ == "JAXOp"}

    model = bpk.PopulationModel(MM_SPEC, _theoph())
    first, _ = model.build_prediction(simulate=True)
    second, _ = model.build_prediction()
    ops = solver_ops(first)
    assert len(ops) == 1 and solver_ops(second) == ops  # IPRED and PRED, both graphs: one operation
    values = {"KA": 1.5, "VMAX": 0.5, "KM": 5.0, "V": 0.5, "omega_KA": 0.3, "omega_VMAX": 0.3, "omega_V": 0.3}
    draw = lambda m: pm.draw(pm.do(m, values)["PRED"], random_seed=1)  # noqa: E731
    fresh, _ = bpk.PopulationModel(MM_SPEC, _theoph()).build_prediction()
    np.testing.assert_array_equal(draw(second), draw(fresh))
    assert solver_ops(fresh).isdisjoint(ops)  # another model (its own schedule) has its own
