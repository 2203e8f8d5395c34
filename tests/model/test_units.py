"""Units: ``[data] units`` in the spec, derived parameter units, the reported scale of the parameter
table (%CV, factors, RSE, shrinkage) and axis labels with units.

One tiny fit of the bundled phenobarbital model (which declares its units and has a categorical
Apgar effect) serves the tests of the table and the figures.
"""

import tomllib
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest
from conftest import MODELS, tiny_fit

import bayespk as bpk
from bayespk.diagnostics import REPORTED_COLUMNS, SUMMARY_COLUMNS, format_parameter_table, shrinkage
from bayespk.errors import SpecError
from bayespk.evaluate.simulation import simulate_replicates
from bayespk.fit import Fit
from bayespk.model.spec import Spec
from bayespk.units import axis_label, parameter_units, reported_scale

UNITS = {"time": "h", "amount": "mg", "conc": "mg/L", "WT": "kg"}


def _spec(structure="1cmt_oral", params=("CL", "V", "KA"), units=UNITS, **extra) -> Spec:
    d = {"model": {"structure": structure}, "parameters": {p: {"guess": 1.0} for p in params},
         "data": {"units": units}} | extra
    return Spec.from_dict(d)


# ------------------------------------------------------------------ spec
def test_units_round_trip_through_toml():
    spec = _spec(parameters={"CL": {"guess": 5.0, "unit": "mL/min"}, "V": {"guess": 50.0}, "KA": {"guess": 1.0}})
    assert spec.data.units == UNITS
    assert spec.parameters["CL"].unit == "mL/min" and spec.parameters["V"].unit is None
    again = Spec.from_dict(tomllib.loads(spec.to_toml()))
    assert again == spec
    assert again.data.units == UNITS and again.parameters["CL"].unit == "mL/min"


def test_bundled_spec_keeps_its_units_when_resolved():
    model = bpk.PopulationModel(MODELS / "theophylline_1cmt_oral.toml")
    assert model.spec.data.units["volume"] == "L/kg"
    assert Spec.from_dict(tomllib.loads(model.spec.to_toml())).data.units == model.spec.data.units


@pytest.mark.parametrize("units, message", [
    ({"time": 1}, "[data] units time: expected a unit as a non-empty string"),
    ({"conc": "  "}, "[data] units conc: expected a unit as a non-empty string"),
    ({"dose": "mg"}, "[data] units: unknown key 'dose'; allowed: the quantities time, amount, conc, volume, effect"),
    ({"TIME": "h"}, "[data] units TIME: give the unit of TIME as time = \"...\""),
    ({"WT": "kg", "Wt": "lb"}, "[data] units: 'Wt' is given twice"),
    ("mg", "[data] units: expected a table"),
])
def test_bad_units_are_refused(units, message):
    with pytest.raises(SpecError) as e:
        _spec(units=units)
    assert message in str(e.value)


def test_parameter_unit_must_be_a_string():
    with pytest.raises(SpecError, match=r"\[parameters.CL\] unit: expected a string"):
        _spec(units={}, parameters={"CL": {"guess": 1.0, "unit": 3}, "V": {"guess": 1.0}, "KA": {"guess": 1.0}})


def test_unit_of_a_column_not_in_the_dataset_is_refused():
    spec = _spec(units={"time": "h", "WT": "kg", "HEIGHT": "cm"})
    spec.data.check_unit_columns(["ID", "TIME", "AMT", "DV", "WT", "height"])  # quantities and columns pass
    with pytest.raises(SpecError, match=r"\[data\] units: 'HEIGHT' is not a column of the dataset"):
        spec.data.check_unit_columns(["ID", "TIME", "AMT", "DV", "WT"])


# ------------------------------------------------------------------ derived units
def test_pk_units_are_derived_from_amount_and_conc():
    spec = _spec("2cmt_oral", ("CL", "V1", "Q", "V2", "KA", "TLAG", "F"),
                 covariates=[{"parameter": "CL", "column": "WT", "effect": "exponential", "reference": 70},
                             {"parameter": "V1", "column": "WT", "effect": "power", "reference": 70}],
                 error={"model": "combined"})
    u = parameter_units(spec)
    assert (u["CL"], u["Q"], u["V1"], u["V2"], u["KA"], u["TLAG"], u["F"]) == ("L/h", "L/h", "L", "L", "1/h", "h", "")
    assert (u["CL_WT"], u["V1_WT"], u["omega_CL"], u["sigma_add"], u["sigma_prop"]) == ("1/kg", "", "", "mg/L", "")
    assert reported_scale(spec, "omega_CL") == "%CV" and reported_scale(spec, "sigma_prop") == "%"


def test_volume_units_stay_empty_when_not_derivable():
    u = parameter_units(_spec(units={"time": "h", "amount": "mg/kg", "conc": "mg/L"}))
    assert (u["CL"], u["V"], u["KA"]) == ("", "", "1/h")  # mg/kg over mg/L: no volume without volume = ...
    u = parameter_units(_spec(units={"time": "h", "amount": "mg/kg", "conc": "mg/L", "volume": "L/kg"}))
    assert (u["CL"], u["V"]) == ("L/kg/h", "L/kg")


def test_pd_units_distinguish_direct_and_indirect_models():
    units = UNITS | {"effect": "%"}
    direct = _spec(params=("CL", "V", "KA", "E0", "EMAX", "EC50"), units=units, model={"structure": "1cmt_oral",
                                                                                       "pd": "emax"})
    idr = _spec(params=("CL", "V", "KA", "R0", "KOUT", "EMAX", "EC50"), units=units,
                model={"structure": "1cmt_oral", "pd": "idr3"})
    d, i = parameter_units(direct), parameter_units(idr)
    assert (d["E0"], d["EMAX"], d["EC50"], d["pd_sigma_add"]) == ("%", "%", "mg/L", "%")
    assert (i["R0"], i["KOUT"], i["EMAX"], i["EC50"]) == ("%", "1/h", "", "mg/L")  # EMAX: a stimulation factor


def test_cart_units_and_logit_omegas():
    spec = Spec.from_toml(MODELS / "cart_tisagenlecleucel_like.toml")
    u = parameter_units(spec)
    assert (u["CMAX"], u["TMAX"], u["ALPHA"], u["FB"], u["FX"]) == ("copies/ug", "d", "1/d", "", "")
    assert reported_scale(spec, "omega_FB") == "value"  # logit-normal IIV: no %CV
    assert reported_scale(spec, "omega_CMAX") == "%CV"


def test_models_written_as_equations_have_units_only_where_given():
    spec = Spec.from_toml(MODELS / "mm_1cmt_oral.toml")
    assert parameter_units(spec)["VMAX"] == ""
    d = spec.to_dict()
    d["parameters"]["VMAX"]["unit"] = "mg/h"
    assert parameter_units(Spec.from_dict(d))["VMAX"] == "mg/h"


def test_axis_labels():
    spec = _spec()
    assert axis_label(spec, "time") == "time (h)"
    assert axis_label(spec, "tad") == "time after dose (h)"
    assert axis_label(spec, "conc") == "concentration (mg/L)"
    assert axis_label(spec, "WT") == "WT (kg)"
    assert axis_label(spec, "conc", "PRED (posterior median)") == "PRED (posterior median, mg/L)"
    assert axis_label(_spec(units={}), "tad") == "time after dose"
    assert axis_label(spec, "AGE") == "AGE"


# ------------------------------------------------------------------ parameter table of a fit
@pytest.fixture(scope="module")
def pheno(tmp_path_factory):
    run = tiny_fit(MODELS / "phenobarbital_1cmt_iv.toml", tmp_path_factory.mktemp("units") / "run")
    return run, bpk.load(run)


def test_summary_csv_has_units_and_reported_scales(pheno):
    run, fit = pheno
    table = pd.read_csv(run / "summary.csv", keep_default_na=False, na_values=[""])
    assert list(table.columns) == SUMMARY_COLUMNS + REPORTED_COLUMNS
    t = table.set_index("parameter")
    assert t.loc["CL", "unit"] == "L/kg/h" and t.loc["V", "unit"] == "L/kg"
    post = fit.posterior
    # omega: %CV of log-normal IIV, from the transformed draws
    omega = post["omega_CL"].values.ravel()
    cv = 100 * np.sqrt(np.exp(omega ** 2) - 1)
    assert t.loc["omega_CL", "reported_as"] == "%CV"
    assert t.loc["omega_CL", ["reported_q5", "reported_median", "reported_q95"]].to_numpy(float) == pytest.approx(
        np.quantile(cv, [0.05, 0.5, 0.95]), rel=1e-9)
    # categorical effect: a factor exp(theta)
    theta = post["V_APGRLOW"].values.reshape(-1)
    row = next(p for p in t.index if p.startswith("V_APGRLOW"))
    assert t.loc[row, "reported_as"] == "factor"
    assert t.loc[row, "reported_median"] == pytest.approx(np.median(np.exp(theta)), rel=1e-9)
    # sigma_prop in %, typical values as they are
    assert t.loc["sigma_prop", "reported_as"] == "%"
    assert t.loc["sigma_prop", "reported_median"] == pytest.approx(100 * t.loc["sigma_prop", "median"], rel=1e-9)
    assert t.loc["CL", "reported_as"] == "value" and t.loc["CL", "reported_median"] == t.loc["CL", "median"]
    # relative uncertainty and shrinkage
    cl = post["CL"].values.ravel()
    assert t.loc["CL", "rse_percent"] == pytest.approx(100 * np.std(cl, ddof=1) / np.median(cl), rel=1e-9)
    shr = shrinkage(fit).set_index("parameter")
    assert t.loc["omega_V", "shrinkage_percent"] == pytest.approx(100 * shr.loc["V", "shrinkage"], rel=1e-9)
    assert np.isnan(t.loc["CL", "shrinkage_percent"])


def test_format_parameter_table_new_and_old_summaries(pheno):
    run, fit = pheno
    text = format_parameter_table(pd.read_csv(run / "summary.csv"))
    header, *lines = text.splitlines()
    assert header.split()[:4] == ["parameter", "unit", "estimate", "[90%"]
    cl = next(line for line in lines if line.startswith("CL "))
    assert "L/kg/h" in cl
    omega = next(line for line in lines if line.startswith("omega_V "))
    assert "%CV" in omega and omega.split()[-3] != "-"  # shrinkage shown
    old = pd.read_csv(run / "summary.csv")[SUMMARY_COLUMNS]  # a run written before the new columns
    old_lines = format_parameter_table(old).splitlines()
    assert len(old_lines) == len(lines) + 1
    med = old.set_index("parameter").loc["CL", "median"]
    assert f"{med:.4g} [" in next(line for line in old_lines if line.startswith("CL "))


# ------------------------------------------------------------------ axis labels of the figures
def _without_units(fit) -> Fit:
    return Fit(fit.tree, replace(fit.spec, data=replace(fit.spec.data, units={})))


def test_vpc_axis_labels(pheno):
    _, fit = pheno
    reps = simulate_replicates(fit, 20, seed=1)
    for f, x, y in ((fit, "time (h)", "DV (ug/mL)"), (_without_units(fit), "time", "DV")):
        result = bpk.vpc(f, replicates=reps)
        assert any(a.get_xlabel() == x for a in result.figure.axes)
        assert result.figure.axes[0].get_ylabel() == y
    tad = bpk.vpc(fit, replicates=reps, x="TAD", pred_corr=True)
    assert tad.figure.axes[0].get_ylabel() == "prediction-corrected DV (ug/mL)"
    assert any(a.get_xlabel() == "time after dose (h)" for a in tad.figure.axes)
    wt = bpk.vpc(fit, replicates=reps, x="WT")
    assert any(a.get_xlabel() == "WT (kg)" for a in wt.figure.axes)


def test_gof_and_individual_axis_labels(pheno):
    _, fit = pheno
    fig, _ = bpk.gof(fit, draws=20)
    axes = fig.axes
    assert [a.get_xlabel() for a in axes] == ["PRED (posterior median, ug/mL)", "IPRED (posterior median, ug/mL)",
                                              "TIME (h)", "IPRED (ug/mL)"]
    assert axes[0].get_ylabel() == "DV (ug/mL)"
    fig, _ = bpk.gof(_without_units(fit), draws=20)
    assert [a.get_xlabel() for a in fig.axes] == ["PRED (posterior median)", "IPRED (posterior median)", "TIME",
                                                  "IPRED"]
    ids = list(fit.model.design.subject_ids[:2])
    fig, _ = bpk.plot_individual(fit, ids=ids, draws=10, n_grid=20)
    assert fig._supxlabel.get_text() == "time (h)" and fig._supylabel.get_text() == "concentration (ug/mL)"
    fig, _ = bpk.plot_individual(_without_units(fit), ids=ids, draws=10, n_grid=20)
    assert fig._supxlabel.get_text() == "time" and fig._supylabel.get_text() == "concentration"


def test_npde_and_prior_posterior_labels(pheno):
    _, fit = pheno
    reps = simulate_replicates(fit, 20, seed=1)
    result = bpk.npde(fit, replicates=reps)
    assert result.figure.axes[2].get_xlabel() == "time (h)"
    assert result.figure.axes[3].get_xlabel() == "PRED (typical subject, ug/mL)"
    fig, _ = bpk.prior_posterior(fit, draws=50)
    titles = [a.get_title() for a in fig.axes if a.get_visible()]
    assert "CL (L/kg/h)" in titles and "omega_CL" in titles
