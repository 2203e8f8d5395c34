"""The model equations and prior table of bayespk.model.describe: every name and form comes from the spec."""

import pytest
from conftest import MODELS

from bayespk.model.describe import equations, prior_table
from bayespk.model.spec import Spec

PK = {"CL": {"guess": 5.0}, "V": {"guess": 50.0}}


def _spec(structure="1cmt_iv", parameters=None, **extra) -> Spec:
    return Spec.from_dict({"model": {"structure": structure} if isinstance(structure, str) else structure,
                           "parameters": parameters or dict(PK), **extra})


def _block(spec, block: str) -> list[str]:
    return [text for b, text in equations(spec) if b == block]


def _all(spec) -> str:
    return "\n".join(text for _, text in equations(spec))


@pytest.mark.parametrize("structure, expected", [
    ("1cmt_iv", ["dA_central/dt = −CL/V·A_central", "C = A_central/V"]),
    ("1cmt_oral", ["dA_depot/dt = −KA·A_depot", "dA_central/dt = KA·A_depot − CL/V·A_central", "C = A_central/V"]),
    ("2cmt_iv", ["dA_central/dt = −CL/V1·A_central − Q/V1·A_central + Q/V2·A_periph1",
                 "dA_periph1/dt = Q/V1·A_central − Q/V2·A_periph1", "C = A_central/V1"]),
    ("3cmt_oral", ["dA_depot/dt = −KA·A_depot",
                   "dA_central/dt = KA·A_depot − CL/V1·A_central − Q/V1·A_central + Q/V2·A_periph1 "
                   "− Q3/V1·A_central + Q3/V3·A_periph2",
                   "dA_periph2/dt = Q3/V1·A_central − Q3/V3·A_periph2"]),
])  # fmt: skip
def test_builtin_structures_are_their_ode_systems(structure, expected):
    from bayespk.structural import STRUCTURES

    spec = _spec(structure, {p: {"guess": 1.0} for p in STRUCTURES[structure].parameters})
    lines = _block(spec, "Structural model")
    for line in expected:
        assert line in lines
    for p in STRUCTURES[structure].parameters:  # one individual-parameter line per parameter
        assert any(line.startswith(f"{p}_i = {p}·") for line in _block(spec, "Individual parameters"))


def test_optional_dosing_parameters_are_described():
    spec = _spec("1cmt_oral", {**PK, "KA": {"guess": 1.0}, "F": {"guess": 0.5}, "TLAG": {"guess": 0.2}})
    text = _all(spec)
    assert "F·AMT" in text and "TLAG after their TIME" in text
    assert "F·AMT" not in _all(_spec("1cmt_oral", {**PK, "KA": {"guess": 1.0}}))


def test_covariate_effects_appear_in_their_form_with_their_reference():
    covariates = [
        {"parameter": "CL", "column": "WT", "effect": "power", "reference": 70},
        {"parameter": "CL", "column": "AGE", "effect": "exponential", "reference": 40},
        {"parameter": "V", "column": "CRCL", "effect": "linear", "reference": 90, "coefficient": 0.01},
        {"parameter": "V", "column": "SEX", "effect": "categorical", "reference": 1},
    ]
    lines = _block(_spec(covariates=covariates), "Individual parameters")
    assert "CL_i = CL·(WT_i/70)^CL_WT·exp(CL_AGE·(AGE_i − 40))·exp(η_CL,i)" in lines
    assert "V_i = V·(1 + 0.01·(CRCL_i − 90))·exp(V_SEX[SEX_i])·exp(η_V,i)" in lines  # fixed: the number
    assert any("V_SEX[1] = 0 (reference level of SEX)" in line for line in lines)
    # without the covariates: no trace of them
    plain = _block(_spec(), "Individual parameters")
    assert plain == ["CL_i = CL·exp(η_CL,i)", "V_i = V·exp(η_V,i)"]
    # another reference value changes the line
    other = _block(_spec(covariates=[{**covariates[0], "reference": 1.5}]), "Individual parameters")
    assert other[0] == "CL_i = CL·(WT_i/1.5)^CL_WT·exp(η_CL,i)"


def test_relation_iov_no_iiv_and_correlated_etas():
    params = {"CL": {"guess": 5.0, "relation": "CL * (WT/70)^0.75 * PMA^HILL/(TM50^HILL + PMA^HILL)",
                     "iov": True},
              "V": {"guess": 50.0},
              "TM50": {"guess": 47.7, "iiv": False}, "HILL": {"guess": 3.4, "iiv": False}}
    spec = _spec(parameters=params)
    ind = _block(spec, "Individual parameters")
    assert "CL_i = (CL * (WT/70)^0.75 * PMA^HILL/(TM50^HILL + PMA^HILL))·exp(η_CL,i + κ_CL,i,k)" in ind
    assert "TM50_i = TM50" in ind
    var = _block(spec, "Inter-individual variability")
    assert "κ_CL,i,k ~ N(0, omega_iov_CL²)   (k: occasion, the OCC column)" in var
    assert any(line.startswith("no IIV: TM50, HILL") for line in var)
    corr = _spec(iiv={"correlated": ["CL", "V"], "lkj_eta": 3})
    var = _block(corr, "Inter-individual variability")
    assert var[0].startswith("(η_CL,i, η_V,i) ~ MVN(0, Ω)") and "omega_CL, omega_V" in var[0]
    assert "R ~ LKJ(η = 3); correlations reported as corr_CL_V" in var
    assert not any(line.startswith("η_CL,i ~ N") for line in var)


@pytest.mark.parametrize("error, residual, blq", [
    ({"model": "additive"}, "ε_ij ~ N(0, sigma_add²)", "Φ((LLOQ − f_ij)/sigma_add)"),
    ({"model": "proportional", "blq": "M4"}, "ε_ij ~ N(0, (sigma_prop·f_ij)²)", "M4: every observation"),
    ({"model": "combined", "blq": "drop"}, "ε_ij ~ N(0, sigma_add² + (sigma_prop·f_ij)²)", "drop: BLQ"),
    ({"model": "lognormal"}, "ln DV_ij = ln f_ij + ε_ij,   ε_ij ~ N(0, sigma_log²)",
     "Φ((ln LLOQ − ln f_ij)/sigma_log)"),
    ({"model": "proportional", "distribution": "student_t"}, "ε_ij ~ t_nu(0, (sigma_prop·f_ij))", "M3"),
])  # fmt: skip
def test_error_model_and_blq_method_change_their_lines(error, residual, blq):
    spec = _spec(error=error)
    assert any(residual in line for line in _block(spec, "Residual error"))
    assert any(blq in line for line in _block(spec, "Observations below the LLOQ"))
    others = [e for e in ("additive", "proportional", "combined", "lognormal") if e != error["model"]]
    for other in others:  # each error model gives a different residual line
        assert _block(_spec(error={"model": other}), "Residual error")[0] != _block(spec, "Residual error")[0]


def test_assay_specific_error():
    spec = _spec(error={"model": "lognormal", "by": "ASSAY", "reference": 1, "scale": 0.004})
    lines = _block(spec, "Residual error")
    assert "f_ij = 0.004[ASSAY_ij]·C(t_ij), 0.004[1] = 1 (reference assay); lognormal error parameters per level " \
           "of ASSAY" in lines


@pytest.mark.parametrize("pd, expected", [
    ("emax", "E = E0 + EMAX·C/(EC50 + C)"),
    ("effect_emax", "dCe/dt = KE0·(C − Ce),  Ce(0) = 0"),
    ("idr1", "dR/dt = KIN·(1 − IMAX·C/(IC50 + C)) − KOUT·R"),
    ("idr4", "dR/dt = KIN − KOUT·(1 + EMAX·C/(EC50 + C))·R"),
])
def test_pd_models(pd, expected):
    from bayespk.structural.pd import PD_MODELS

    params = {**PK, **{p: ({"typical": {"dist": "Beta", "alpha": 2, "beta": 2}, "iiv": False} if p == "IMAX"
                           else {"guess": 1.0}) for p in PD_MODELS[pd].parameters}}
    spec = _spec({"structure": "1cmt_iv", "pd": pd, "pd_observations": {"column": "DVID", "value": 3}},
                 params, pd_error={"model": "additive"})
    lines = _block(spec, "PD model")
    assert expected in lines
    assert any("rows with DVID = 3" in line for line in lines)
    assert ("KIN = R0·KOUT,  R(0) = R0" in lines) == pd.startswith("idr")
    residual = _block(spec, "Residual error")
    assert "PD observations: DV_ij = g_ij + ε_ij,   ε_ij ~ N(0, pd_sigma_add²)" in residual
    assert f"PD observations: g_ij = {'R' if pd.startswith('idr') else 'E'}(t_ij): subject i's prediction at its " \
           "j-th observation time" in residual


CART = {"CMAX": {"guess": 2e4}, "FX": {"guess": 1000.0}, "ALPHA": {"guess": 0.15},
        "FB": {"typical": {"dist": "Beta", "alpha": 1, "beta": 50}}, "BETA": {"guess": 0.003}}


def test_cart_models_with_treatments_and_logit_fractions():
    spec = _spec("cart_piecewise", {**CART, "TMAX": {"guess": 9.0}},
                 treatments=[{"column": "TOCI"}, {"column": "CORT", "multiplier": 1.0}])
    lines = _block(spec, "Structural model")
    assert lines[0] == "t < TMAX:  dC/dt = ρ(t)·C,  C(0) = CMAX/FX,  ρ = ln(FX)/TMAX"
    assert "ρ(t) = ρ·rho_TOCI^[t ≥ s_TOCI]·1^[t ≥ s_CORT]" in lines[2]  # estimated: its name; fixed: its value
    assert "logit(FB_i) = logit(FB) + η_FB,i" in _block(spec, "Individual parameters")
    lag = _spec("cart_lag", {**CART, "TLAG": {"guess": 3.0}, "TEXP": {"guess": 6.0}})
    lines = _block(lag, "Structural model")
    assert lines[0] == "t < TLAG:  C(t) = CMAX/FX" and "T_peak = TLAG + TEXP" in lines[1]
    assert not any("ρ(t)" in line for line in lines)  # no treatments


def test_mechanistic_cart_model_names_its_tumor_column_and_constants():
    spec = Spec.from_toml(MODELS / "cart_mechanistic.toml")
    lines = _block(spec, "Structural model")
    assert "dE/dt = RHO·S·ln(1/φ)·E − ALPHA·E,   RHO = (GX + ALPHA)/(S_ref·ln(1/N_ref))" in lines
    assert "B0 = TB/20" in lines and "fixed: RN = 0.05, RB = 0, B50 = 0.05" in lines
    assert "logit(N0_i) = logit(N0) + N0_FLUAUC·ln(FLUAUC_i/14)" in _block(spec, "Individual parameters")


def test_models_written_as_equations_show_their_own_text():
    ode = {"states": ["depot", "central", "R"], "output": "C", "pd_output": "R", "doses": {"1": "depot"},
           "ode": {"depot": "-KA*depot", "central": "KA*depot - CL*C", "R": "KIN - KOUT*(1 + C)*R"},
           "derived": {"C": "central/V", "KIN": "R0*KOUT"}, "initial": {"R": "R0"}}
    params = {p: {"guess": 1.0} for p in ("KA", "CL", "V", "R0", "KOUT")}
    spec = _spec(ode, params, pd_error={"model": "additive"})
    lines = _block(spec, "Structural model")
    for line in ("ddepot/dt = -KA*depot", "dcentral/dt = KA*depot - CL*C", "dR/dt = KIN - KOUT*(1 + C)*R",
                 "C = central/V", "KIN = R0*KOUT", "R(0) = R0", "depot(0), central(0) = 0", "doses: CMT 1 → depot",
                 "output (DV) = C", "PD output (rows with DVID = 2) = R"):
        assert line in lines
    assert "PD observations: g_ij = R(t_ij): subject i's prediction at its j-th observation time" in _all(spec)
    algebraic = _spec({"prediction": "A1*exp(-alpha*t)"}, {"A1": {"guess": 2.0}, "alpha": {"guess": 1.0}})
    assert _block(algebraic, "Structural model")[0] == "f(t) = A1*exp(-alpha*t)"
    assert "f_ij = f(t_ij): subject i's prediction at its j-th observation time" in _all(algebraic)


def test_a_model_given_in_python():
    from bayespk.structural.diffeq import ODEModel

    model = ODEModel(states=("central",), rhs=lambda t, y, p: {"central": -p["CL"] / p["V"] * y["central"]},
                     output=lambda t, y, p: y["central"] / p["V"], parameters=("CL", "V"), name="my_1cmt")
    spec = Spec.from_dict({"parameters": dict(PK)}, structural=model)
    assert _block(spec, "Structural model") == ["written in Python (my_1cmt); states central; reads CL, V"]


def test_prior_table_sources():
    spec = _spec(parameters={"CL": {"typical": {"dist": "LogNormal", "mu": 1.6, "sigma": 0.5}, "iov": True},
                             "V": {"guess": 50.0, "iiv": {"dist": "HalfNormal", "sigma": 0.2}}},
                 covariates=[{"parameter": "CL", "column": "WT", "effect": "power", "reference": 70,
                              "coefficient": 0.75},
                             {"parameter": "V", "column": "AGE", "effect": "linear", "reference": 40}],
                 error={"model": "proportional", "sigma_prop": {"dist": "HalfNormal", "sigma": 0.3}})
    t = prior_table(spec).set_index("parameter")
    assert t.loc["CL"].tolist() == ["LogNormal", "mu=1.6, sigma=0.5", "spec"]
    assert t.loc["V"].tolist() == ["LogNormal", "mu=3.91202, sigma=1", "spec"]  # guess 50: LogNormal(ln 50, 1)
    assert t.loc["omega_CL"].tolist() == ["HalfNormal", "sigma=0.5", "bayespk default"]
    assert t.loc["omega_V"].tolist() == ["HalfNormal", "sigma=0.2", "spec"]
    assert t.loc["omega_iov_CL"].tolist() == ["HalfNormal", "sigma=0.3", "bayespk default"]
    assert t.loc["CL_WT"].tolist() == ["fixed", "0.75", "spec"]
    assert t.loc["V_AGE"].tolist() == ["Normal", "mu=0, sigma=0.025", "bayespk default"]
    assert t.loc["sigma_prop"].tolist() == ["HalfNormal", "sigma=0.3", "spec"]


@pytest.mark.parametrize("path", sorted(MODELS.glob("*.toml")), ids=lambda p: p.stem)
def test_every_bundled_model_is_described(path):
    spec = Spec.from_toml(path)
    text = _all(spec)
    blocks = {b for b, _ in equations(spec)}
    assert {"Structural model", "Individual parameters", "Residual error", "Observations below the LLOQ"} <= blocks
    for p, ps in spec.parameters.items():
        assert f"{p}_i = " in text or f"logit({p}_i)" in text
        if ps.iiv is not None:
            assert f"omega_{p}" in text
    for c in spec.covariates:
        assert c.column in text and (c.fixed or c.name in text)
    table = prior_table(spec)
    named = set(table.parameter)
    assert set(spec.parameters) <= named
    assert {n for n in spec.population_parameters if not n.startswith("corr_")} <= named
