"""The user-written models of the library (models/*.toml with [model.ode] or a prediction).

Fast: every spec parses and builds; the bundled simulated CSV files are exactly
what ``models/data/make_user_models.py`` writes, from the truth stated here;
at that truth the specs' ODE solutions (diffrax) match the generator's (scipy).

Slow (short chains, 2 x 300 draws after 300 tuning steps, fixed seed; on 2
cores about 45 s for mm_2cmt_iv, 80-90 s for mm_1cmt_oral, 120 s for
transit_oral, 150-300 s for irm_oral and 5-10 s for indomethacin, most of it
nutpie's first warm-up iterations and the XLA compilation):

* each simulated ODE model recovers its truth: every population typical value
  inside its 90% posterior interval, no divergences (irm_oral: a PK/PD model
  with two outputs, each with its own error model, BLQ concentrations under M3);
* the algebraic indomethacin model reproduces the published nlme fit.
"""

import importlib.util
import re

import numpy as np
import pytest
from conftest import MODELS

import bayespk as bpk

GENERATOR = MODELS / "data" / "make_user_models.py"
SIMULATED = ("mm_1cmt_oral", "mm_2cmt_iv", "transit_oral", "irm_oral")
LIBRARY = (*SIMULATED, "indomethacin_biexp_nlme")

# the truth of models/data/make_user_models.py (checked against it below)
TRUTH = {
    "mm_1cmt_oral": {"KA": 1.0, "V": 50.0, "CL": 2.0, "VMAX": 10.0, "KM": 2.0},
    "mm_2cmt_iv": {"V1": 20.0, "Q": 10.0, "V2": 40.0, "VMAX": 40.0, "KM": 4.0},
    "transit_oral": {"MTT": 1.0, "KA": 0.5, "CL": 5.0, "V": 50.0},
    "irm_oral": {"KA": 1.0, "CL": 4.0, "V": 40.0, "R0": 100.0, "KOUT": 0.1, "IC50": 1.0},
}
OMEGA = {
    "mm_1cmt_oral": {"KA": 0.3, "V": 0.2, "CL": 0.3},
    "mm_2cmt_iv": {"V1": 0.2, "VMAX": 0.25},
    "transit_oral": {"MTT": 0.3, "CL": 0.3, "V": 0.2},
    "irm_oral": {"KA": 0.3, "CL": 0.3, "V": 0.2, "R0": 0.2, "IC50": 0.3},
}
SIGMA_PROP = 0.1
SIGMA_PD = 5.0  # irm_oral: additive error of the response
LLOQ = 0.05  # irm_oral: concentrations below it are BLQ
SHORT = {"draws": 300, "tune": 300, "chains": 2, "seed": 1}

# Pinheiro and Bates (2000), section 6.2: the nlme fit fm1Indom.nlme (SSbiexp, pdDiag random effects on
# A1, lrc1, A2, lrc2, additive error) and the pooled nls fit fm1Indom.nls of the same function
NLME = {"A1": 2.828, "alpha": np.exp(0.773), "A2": 0.461, "beta": np.exp(-1.344)}
NLME_SIGMA = 0.0815
NLS = {"A1": 2.773, "alpha": np.exp(0.886), "A2": 0.607, "beta": np.exp(-1.092)}


def _generator():
    spec = importlib.util.spec_from_file_location("make_user_models", GENERATOR)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_generator_truth_is_the_tests_truth():
    g = _generator()
    assert g.TRUTH == TRUTH
    assert g.OMEGA == OMEGA
    assert g.SIGMA_PROP == SIGMA_PROP
    assert (g.SIGMA_PD, g.LLOQ) == (SIGMA_PD, LLOQ)


@pytest.mark.parametrize("name", SIMULATED)
def test_specs_match_the_simulation(name):
    """Same parameters as the truth, IIV exactly where it was simulated, proportional error, and the
    description states every typical value."""
    spec = bpk.PopulationModel(MODELS / f"{name}.toml").spec
    assert set(spec.parameters) == set(TRUTH[name])
    assert {p for p, s in spec.parameters.items() if s.iiv is not None} == set(OMEGA[name])
    assert spec.error.model == "proportional"
    text = " ".join(spec.description.split())
    for p, v in TRUTH[name].items():
        assert re.search(rf"\b{p} {v:g}\b", text), (name, p, v)


def test_bundled_csv_files_are_what_the_generator_writes(tmp_path):
    written = _generator().main(tmp_path)
    assert sorted(p.name for p in written) == sorted(f"{n}.csv" for n in SIMULATED)
    for path in written:
        assert path.read_bytes() == (MODELS / "data" / path.name).read_bytes(), path.name


@pytest.mark.parametrize("name", SIMULATED)
def test_spec_solves_the_generators_odes(name):
    """At the truth, the spec's typical-subject predictions (diffrax, the spec's tolerances) match the
    generator's (scipy LSODA, rtol 1e-10) at every observation: same equations, states, dosing
    compartment, infusion duration and units, so the stated truth is the spec's truth."""
    model = bpk.PopulationModel(MODELS / f"{name}.toml")
    pm_model, design = model.build_prediction()
    point = pm_model.initial_point()
    for p, v in TRUTH[name].items():
        rv = pm_model[p]
        point[pm_model.rvs_to_values[rv].name] = pm_model.rvs_to_transforms[rv].forward(np.float64(v)).eval()
    pred_graph = pm_model.replace_rvs_by_values([pm_model["PRED"]])
    fn = pm_model.compile_fn(pred_graph, inputs=pm_model.value_vars, on_unused_input="ignore",
                             mode="FAST_COMPILE")
    pred = np.asarray(fn(point)[0])
    g = _generator()
    table = model.data.table
    dose = table[table.EVID == 1].groupby("ID").AMT.first()
    ids = design.subject_ids[design.obs_subject]
    expected = np.empty_like(pred)
    for sid in np.unique(ids):
        at = ids == sid
        if name == "irm_oral":
            expected[at] = g.pkpd(TRUTH[name], float(dose[sid]), design.obs_time[at])[0]
        else:
            expected[at] = g.concentrations(name, TRUTH[name], float(dose[sid]), design.obs_time[at])
    np.testing.assert_allclose(pred, expected, rtol=1e-3)
    if model.has_pd:  # the second output (the response) at the PD observations
        pm_model, design = model.build_prediction(pd=True)
        fn = pm_model.compile_fn(pm_model.replace_rvs_by_values([pm_model["PRED"]]), inputs=pm_model.value_vars,
                                 on_unused_input="ignore", mode="FAST_COMPILE")
        pred = np.asarray(fn(point)[0])
        ids = design.subject_ids[design.obs_subject]
        expected = np.full_like(pred, np.nan)
        for sid in np.unique(ids):
            at = ids == sid
            expected[at] = g.pkpd(TRUTH[name], float(dose[sid]), design.obs_time[at])[1]
        assert pred.shape == (216,)  # 24 subjects x 9 responses
        np.testing.assert_allclose(pred, expected, rtol=1e-4)


@pytest.mark.parametrize("name", LIBRARY)
def test_spec_parses_and_builds(name):
    model = bpk.PopulationModel(MODELS / f"{name}.toml")
    pm_model = model.build()
    free = {rv.name for rv in pm_model.free_RVs}
    assert set(model.spec.parameters) <= free
    assert model.spec.structure == ("algebraic" if name.startswith("indomethacin") else "ode")


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::bayespk.errors.ConvergenceWarning")  # short chains: ESS < 200 expected
@pytest.mark.parametrize("name", SIMULATED)
def test_simulated_model_recovers_its_truth(name):
    fit = bpk.fit(bpk.PopulationModel(MODELS / f"{name}.toml"), progress=False, **SHORT)
    report = []
    for p, true in TRUTH[name].items():
        draws = fit.posterior[p].to_numpy().ravel()
        lo, hi = np.quantile(draws, [0.05, 0.95])
        report.append((p, true, round(float(np.median(draws)), 4), round(float(lo), 4), round(float(hi), 4)))
    print(name, "(parameter, truth, median, q5, q95):", report)
    missed = [r for r in report if not r[3] <= r[1] <= r[4]]
    assert not missed, f"truth outside the 90% interval: {missed}\nall: {report}"
    diag = fit.diagnostics()
    assert diag["divergences"] == 0, diag
    assert diag["max_r_hat"] < 1.1, diag  # the two chains found the same posterior


@pytest.mark.slow
def test_indomethacin_algebraic_model_matches_published_nlme_fit():
    """Posterior medians of the typical A1 and alpha within 15% of fm1Indom.nlme, and of all four within
    15% of the pooled fm1Indom.nls; the nlme A2 and beta inside their 90% intervals.

    A2 and beta are not held to 15% of the nlme estimates: the terminal phase is weakly determined
    (additive error SD 0.08 mg/L against terminal concentrations of 0.05-0.25 mg/L; approximate standard
    errors of 24% and 22%, tests/recovery/test_reference_indometh.py), and the posterior medians (about 0.58 and
    0.34) sit with the pooled nls fit (0.607, 0.336), 25-30% above nlme's Lindstrom-Bates estimates.
    """
    fit = bpk.fit(bpk.PopulationModel(MODELS / "indomethacin_biexp_nlme.toml"), progress=False)
    post = fit.posterior
    got = {k: float(np.median(post[k])) for k in NLME}
    report = {k: (round(got[k], 3), round(float(NLME[k]), 3), round(float(NLS[k]), 3)) for k in NLME}
    print("indomethacin (median, nlme, nls):", report)
    for k in ("A1", "alpha"):
        assert abs(got[k] / NLME[k] - 1) < 0.15, (k, report)
    for k in NLME:
        assert abs(got[k] / NLS[k] - 1) < 0.15, (k, report)
    for k in ("A2", "beta"):
        lo, hi = np.quantile(post[k].to_numpy(), [0.05, 0.95])
        assert lo <= NLME[k] <= hi, (k, lo, hi, report)
    assert abs(float(np.median(post["sigma_add"])) / NLME_SIGMA - 1) < 0.15, report
    assert got["alpha"] > 3 * got["beta"]  # the phases did not swap
    diag = fit.diagnostics()
    assert diag["divergences"] == 0, diag
    assert diag["max_r_hat"] <= 1.01, diag
