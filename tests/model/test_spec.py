"""Spec parsing: strict keys, priors, parameters, covariates, round trips."""

from __future__ import annotations

import copy
import math
from pathlib import Path

import pytest

from bayespk.errors import SpecError
from bayespk.model.priors import ALLOWED, Prior
from bayespk.model.spec import DEFAULT_IIV, CovariateSpec, ErrorSpec, SamplerSpec, Spec

MODELS = Path(__file__).resolve().parents[2] / "models"
BUNDLED_SPECS = sorted(MODELS.glob("*.toml"))

HALF_NORMAL = {"dist": "HalfNormal", "sigma": 1}
BASE = {
    "model": {"structure": "1cmt_iv"},
    "parameters": {
        "CL": {"typical": {"dist": "LogNormal", "mu": -3.0, "sigma": 1.0}},
        "V": {"guess": 10.0},
    },
}


def spec_with(**changes) -> dict:
    """A deep copy of BASE with top-level keys replaced (None removes the key)."""
    d = copy.deepcopy(BASE)
    for k, v in changes.items():
        if v is None:
            d.pop(k, None)
        else:
            d[k] = v
    return d


def param(name: str, **entry) -> dict:
    d = copy.deepcopy(BASE)
    d["parameters"][name] = entry
    return d


def test_base_spec_defaults():
    s = Spec.from_dict(BASE)
    assert s.structure == "1cmt_iv"
    assert list(s.parameters) == ["CL", "V"]
    assert s.parameters["CL"].typical == Prior("LogNormal", mu=-3.0, sigma=1.0)
    assert s.parameters["V"].typical == Prior("LogNormal", mu=round(math.log(10.0), 6), sigma=1.0)
    assert s.parameters["CL"].iiv == DEFAULT_IIV
    assert s.error == ErrorSpec()
    assert s.error.model == "proportional" and s.error.blq == "M3"
    assert s.sampler == SamplerSpec()
    assert s.data.path is None
    assert s.name == "model"


# --------------------------------------------------------------------------- unknown keys


def test_unknown_top_level_key():
    with pytest.raises(SpecError, match=r"^spec: unknown key 'paramters'; allowed keys: name, description, "
                                        r"data"):
        Spec.from_dict(spec_with(paramters={}))


def test_unknown_key_in_parameter():
    with pytest.raises(SpecError, match=r"^\[parameters\.CL\]: unknown key 'iiV'; allowed keys: typical, "
                                        r"guess, iiv"):
        Spec.from_dict(param("CL", guess=1.0, iiV=False))


def test_unknown_key_in_error():
    with pytest.raises(SpecError, match=r"^\[error\]: unknown key 'sigma'; allowed keys: model, blq"):
        Spec.from_dict(spec_with(error={"model": "additive", "sigma": {"dist": "HalfNormal", "sigma": 1}}))


def test_unknown_key_in_sampler():
    with pytest.raises(SpecError, match=r"^\[sampler\]: unknown key 'n_draws'; allowed keys: name, chains, "
                                        r"draws"):
        Spec.from_dict(spec_with(sampler={"n_draws": 100}))


def test_unknown_key_in_covariate():
    cov = {"parameter": "CL", "column": "WT", "effect": "power", "reference": 70, "ref": 70}
    with pytest.raises(SpecError, match=r"^\[\[covariates\]\] #1: unknown key 'ref'; allowed keys: "
                                        r"parameter"):
        Spec.from_dict(spec_with(covariates=[cov]))


def test_unknown_key_in_model():
    with pytest.raises(SpecError, match=r"^\[model\]: unknown key 'structur'"):
        Spec.from_dict(spec_with(model={"structure": "1cmt_iv", "structur": "x"}))


def test_unknown_key_in_data():
    with pytest.raises(SpecError, match=r"^\[data\]: unknown key 'file'; allowed keys: path, aliases"):
        Spec.from_dict(spec_with(data={"file": "x.csv"}))


def test_section_not_a_table():
    with pytest.raises(SpecError, match=r"^\[sampler\]: expected a table, got 5"):
        Spec.from_dict(spec_with(sampler=5))


# --------------------------------------------------------------------------- structure and parameters


def test_missing_model_section():
    with pytest.raises(SpecError, match=r"^\[model\] is required, with structure = one of 1cmt_iv, "
                                        r"1cmt_oral"):
        Spec.from_dict(spec_with(model=None))


def test_unknown_structure():
    with pytest.raises(SpecError, match=r"^\[model\] structure: '4cmt_iv' is not one of 1cmt_iv, 1cmt_oral, "
                                        r"2cmt_iv"):
        Spec.from_dict(spec_with(model={"structure": "4cmt_iv"}))


@pytest.mark.parametrize("value", [["1cmt_iv"], {"a": 1}, 3])
def test_structure_of_wrong_type(value):
    with pytest.raises(SpecError, match=r"^\[model\] structure: .* is not one of 1cmt_iv, 1cmt_oral"):
        Spec.from_dict(spec_with(model={"structure": value}))


def test_missing_parameter_for_structure():
    d = spec_with(model={"structure": "1cmt_oral"})
    with pytest.raises(SpecError, match=r"^\[parameters\]: structure 1cmt_oral needs CL, V, KA; missing KA"):
        Spec.from_dict(d)


def test_extra_parameter():
    d = copy.deepcopy(BASE)
    d["parameters"]["KA"] = {"guess": 1.0}
    with pytest.raises(SpecError, match=r"^\[parameters\]: unknown key 'KA'; allowed keys: CL, V"):
        Spec.from_dict(d)


def test_parameter_needs_typical_or_guess():
    with pytest.raises(SpecError, match=r"^\[parameters\.V\]: needs 'typical' \(a prior"):
        Spec.from_dict(param("V", iiv=False))


def test_both_typical_and_guess():
    with pytest.raises(SpecError, match=r"^\[parameters\.V\]: give either 'typical' \(a prior\) or 'guess' "
                                        r"\(a value\), not both"):
        Spec.from_dict(param("V", guess=1.0, typical={"dist": "LogNormal", "mu": 0, "sigma": 1}))


@pytest.mark.parametrize("guess", [0, -1.5])
def test_guess_not_positive(guess):
    with pytest.raises(SpecError, match=rf"^\[parameters\.V\] guess: must be > 0 \(typical values are "
                                        rf"positive\), "
                                        rf"got {guess:g}"):
        Spec.from_dict(param("V", guess=guess))


@pytest.mark.parametrize("guess", ["1.0", True, math.inf])
def test_guess_not_a_number(guess):
    with pytest.raises(SpecError, match=r"^\[parameters\.V\] guess: expected a finite number"):
        Spec.from_dict(param("V", guess=guess))


@pytest.mark.parametrize("prior", [
    {"dist": "Normal", "mu": 0, "sigma": 1},
    {"dist": "Uniform", "lower": 0, "upper": 10},
    {"dist": "Beta", "alpha": 1, "beta": 1},
])
def test_typical_prior_must_be_positive(prior):
    with pytest.raises(SpecError, match=rf"^\[parameters\.V\] typical: the typical value of V must be "
                                        rf"positive; "
                                        rf"use a positive distribution such as LogNormal, not "
                                        rf"{prior['dist']}"):
        Spec.from_dict(param("V", typical=prior))


def test_iiv_false_gives_no_iiv():
    s = Spec.from_dict(param("V", guess=1.0, iiv=False))
    assert s.parameters["V"].iiv is None
    assert s.parameters["CL"].iiv == DEFAULT_IIV
    assert s.to_dict()["parameters"]["V"]["iiv"] is False


def test_iiv_true_gives_default():
    assert Spec.from_dict(param("V", guess=1.0, iiv=True)).parameters["V"].iiv == DEFAULT_IIV


def test_iiv_custom_prior():
    s = Spec.from_dict(param("V", guess=1.0, iiv={"dist": "HalfCauchy", "beta": 0.3}))
    assert s.parameters["V"].iiv == Prior("HalfCauchy", beta=0.3)


def test_iiv_prior_must_be_positive():
    with pytest.raises(SpecError, match=r"^\[parameters\.V\] iiv: omega is an SD and needs a positive prior, "
                                        r"not Normal"):
        Spec.from_dict(param("V", guess=1.0, iiv={"dist": "Normal", "mu": 0, "sigma": 1}))


# --------------------------------------------------------------------------- priors


def test_unknown_distribution():
    with pytest.raises(SpecError, match=r"^\[parameters\.CL\] typical: unknown distribution 'Lognormal'; "
                                        r"use one "
                                        r"of Normal, "):
        Spec.from_dict(param("CL", typical={"dist": "Lognormal", "mu": 0, "sigma": 1}))


def test_distribution_of_wrong_type():
    with pytest.raises(SpecError, match=r"^\[parameters\.CL\] typical: unknown distribution \['LogNormal'\]"):
        Spec.from_dict(param("CL", typical={"dist": ["LogNormal"], "mu": 0, "sigma": 1}))


def test_distribution_missing_parameter():
    with pytest.raises(SpecError, match=r"^\[parameters\.CL\] typical: LogNormal takes parameters mu, sigma; "
                                        r"missing sigma"):
        Spec.from_dict(param("CL", typical={"dist": "LogNormal", "mu": 0}))


def test_distribution_unknown_parameter():
    with pytest.raises(SpecError, match=r"^\[parameters\.CL\] typical: LogNormal takes parameters mu, sigma; "
                                        r"unknown sd"):
        Spec.from_dict(param("CL", typical={"dist": "LogNormal", "mu": 0, "sigma": 1, "sd": 1}))


@pytest.mark.parametrize("sigma", [0, -1])
def test_non_positive_sigma(sigma):
    with pytest.raises(SpecError, match=rf"^\[parameters\.CL\] typical: parameter sigma of LogNormal must "
                                        rf"be > 0, "
                                        rf"got {sigma}"):
        Spec.from_dict(param("CL", typical={"dist": "LogNormal", "mu": 0, "sigma": sigma}))


def test_prior_parameter_not_a_number():
    with pytest.raises(SpecError, match=r"^\[parameters\.CL\] typical: parameter mu must be a number, got "
                                        r"'0'"):
        Spec.from_dict(param("CL", typical={"dist": "LogNormal", "mu": "0", "sigma": 1}))


def test_prior_not_a_table():
    with pytest.raises(SpecError, match=r"^\[parameters\.CL\] typical: a prior is a table like"):
        Spec.from_dict(param("CL", typical=0.5))


def test_prior_lower_above_upper():
    with pytest.raises(SpecError, match=r"lower \(2\) must be below upper \(1\)"):
        Prior("TruncatedNormal", mu=0, sigma=1, lower=2, upper=1)


def test_prior_non_finite_parameter():
    with pytest.raises(SpecError, match=r"parameter mu of Normal must be a finite number, got nan"):
        Prior("Normal", mu=math.nan, sigma=1)


@pytest.mark.parametrize("dist", sorted(ALLOWED))
def test_prior_dict_round_trip(dist):
    required, optional, _ = ALLOWED[dist]
    values = {"mu": 0.5, "sigma": 2.0, "nu": 3.0, "beta": 1.5, "lam": 0.7, "alpha": 2.5, "lower": -1.0,
              "upper": 4.0}
    p = Prior(dist, **{k: values[k] for k in required + optional})
    d = p.to_dict()
    assert d["dist"] == dist
    assert Prior.from_dict(d) == p
    assert hash(Prior.from_dict(d)) == hash(p)
    assert Prior.from_dict(p) is p


def test_prior_to_dict():
    assert Prior("LogNormal", mu=-3, sigma=1).to_dict() == {"dist": "LogNormal", "mu": -3.0, "sigma": 1.0}


# --------------------------------------------------------------------------- error, sampler


def test_unknown_error_model():
    with pytest.raises(SpecError, match=r"^\[error\] model: 'exponential' is not one of additive, "
                                        r"proportional"):
        Spec.from_dict(spec_with(error={"model": "exponential"}))


def test_error_model_of_wrong_type():
    with pytest.raises(SpecError, match=r"^\[error\] model: \['additive'\] is not one of additive"):
        Spec.from_dict(spec_with(error={"model": ["additive"]}))


def test_unknown_blq_method():
    with pytest.raises(SpecError, match=r"^\[error\] blq: 'M1' is not one of M3, M4, drop"):
        Spec.from_dict(spec_with(error={"blq": "M1"}))


def test_error_sigma_not_of_model():
    with pytest.raises(SpecError, match=r"^\[error\] sigma_add: not a parameter of the proportional error "
                                        r"model "
                                        r"\(which has sigma_prop\)"):
        Spec.from_dict(spec_with(error={"model": "proportional", "sigma_add": HALF_NORMAL}))


def test_error_sigma_prior_must_be_positive():
    with pytest.raises(SpecError, match=r"^\[error\] sigma_prop: an SD needs a positive prior, not Normal"):
        Spec.from_dict(spec_with(error={"sigma_prop": {"dist": "Normal", "mu": 0, "sigma": 1}}))


def test_error_combined():
    s = Spec.from_dict(spec_with(error={"model": "combined", "sigma_add": HALF_NORMAL}))
    assert s.error.names == ("sigma_add", "sigma_prop")
    assert set(s.error.priors) == {"sigma_add"}


@pytest.mark.parametrize("key,value", [
    ("chains", 0), ("draws", -5), ("tune", 1.5), ("seed", -1), ("draws", True),
])
def test_sampler_bad_counts(key, value):
    with pytest.raises(SpecError, match=rf"^\[sampler\] {key}: expected a whole number >= "):
        Spec.from_dict(spec_with(sampler={key: value}))


@pytest.mark.parametrize("value", [0.3, 1.0])
def test_sampler_target_accept_range(value):
    with pytest.raises(SpecError, match=r"^\[sampler\] target_accept: must be in \[0\.5, 1\)"):
        Spec.from_dict(spec_with(sampler={"target_accept": value}))


def test_sampler_adaptation():
    s = Spec.from_dict(spec_with(sampler={"adaptation": "low_rank"}))
    assert s.sampler.adaptation == "low_rank" and Spec.from_dict(s.to_dict()) == s
    assert Spec.from_dict(spec_with()).sampler.adaptation == "diag"
    with pytest.raises(SpecError, match=r"^\[sampler\] adaptation: 'dense' is not one of diag, low_rank"):
        Spec.from_dict(spec_with(sampler={"adaptation": "dense"}))
    with pytest.raises(SpecError, match=r"^\[sampler\] adaptation = 'low_rank' needs name = \"nutpie\""):
        Spec.from_dict(spec_with(sampler={"adaptation": "low_rank", "name": "pymc"}))


def test_sampler_max_treedepth():
    s = Spec.from_dict(spec_with(sampler={"max_treedepth": 6}))
    assert s.sampler.max_treedepth == 6 and Spec.from_dict(s.to_dict()) == s
    assert Spec.from_dict(spec_with()).sampler.max_treedepth == 10
    assert "max_treedepth" not in Spec.from_dict(spec_with()).to_dict()["sampler"]  # the default is not written
    for bad in (0, 21, 2.5, True):
        with pytest.raises(SpecError, match=r"^\[sampler\] max_treedepth: expected a whole number"):
            Spec.from_dict(spec_with(sampler={"max_treedepth": bad}))
    with pytest.raises(SpecError, match=r"max_treedepth: expected a whole number from 1 to 20, got 25"):
        Spec.from_dict(BASE).with_sampler(max_treedepth=25)


def test_sampler_unknown_name():
    with pytest.raises(SpecError, match=r"^\[sampler\] name: 'stan' is not one of nutpie, pymc"):
        Spec.from_dict(spec_with(sampler={"name": "stan"}))


def test_with_sampler_overrides_and_validates():
    s = Spec.from_dict(BASE)
    s2 = s.with_sampler(draws=10, chains=None, name="pymc")
    assert (s2.sampler.draws, s2.sampler.chains, s2.sampler.name) == (10, 4, "pymc")
    with pytest.raises(SpecError, match=r"\[sampler\] name: 'stan'"):
        s.with_sampler(name="stan")


# --------------------------------------------------------------------------- covariates


def cov(**kw) -> dict:
    entry = {"parameter": "CL", "column": "wt", "effect": "power", "reference": 70} | kw
    return spec_with(covariates=[entry])


def test_covariate_parsed():
    (c,) = Spec.from_dict(cov()).covariates
    assert c == CovariateSpec("CL", "WT", "power", 70.0, None)
    assert c.name == "CL_WT"
    assert c.default_prior() == Prior("Normal", mu=0, sigma=1)


def test_covariate_on_unknown_parameter():
    with pytest.raises(SpecError, match=r"^\[\[covariates\]\] #1 parameter: 'KA' is not a parameter of "
                                        r"1cmt_iv "
                                        r"\(CL, V\)"):
        Spec.from_dict(cov(parameter="KA"))


@pytest.mark.parametrize("effect", ["power", "exponential", "linear"])
def test_covariate_missing_reference(effect):
    d = cov(effect=effect)
    del d["covariates"][0]["reference"]
    with pytest.raises(SpecError, match=rf"^\[\[covariates\]\] #1 reference: a {effect} effect needs a "
                                        rf"reference "
                                        r"value \(e\.g\. the median WT\)"):
        Spec.from_dict(d)


@pytest.mark.parametrize("ref", [0, -70])
def test_power_reference_not_positive(ref):
    with pytest.raises(SpecError, match=r"^\[\[covariates\]\] #1 reference: a power effect needs a "
                                        r"reference > 0"):
        Spec.from_dict(cov(reference=ref))


def test_covariate_unknown_effect():
    with pytest.raises(SpecError, match=r"^\[\[covariates\]\] #1 effect: 'allometric' is not one of power"):
        Spec.from_dict(cov(effect="allometric"))


def test_covariate_required_field():
    d = cov()
    del d["covariates"][0]["column"]
    with pytest.raises(SpecError, match=r"^\[\[covariates\]\] #1: 'column' is required \(a string\)"):
        Spec.from_dict(d)


def test_covariate_duplicate_effect():
    d = cov()
    d["covariates"].append(dict(d["covariates"][0], effect="linear"))
    with pytest.raises(SpecError, match=r"^\[\[covariates\]\] #2: a second effect of WT on CL"):
        Spec.from_dict(d)


def test_covariates_must_be_a_list():
    with pytest.raises(SpecError, match=r"^covariates: use \[\[covariates\]\] tables"):
        Spec.from_dict(spec_with(covariates={"parameter": "CL"}))


def test_covariate_fixed_and_prior_coefficient():
    (c,) = Spec.from_dict(cov(coefficient=0.75)).covariates
    assert c.fixed and c.coefficient == 0.75
    (c,) = Spec.from_dict(cov(coefficient={"dist": "Normal", "mu": 0.75, "sigma": 0.1})).covariates
    assert not c.fixed and c.coefficient == Prior("Normal", mu=0.75, sigma=0.1)


def test_categorical_covariate_reference_optional():
    (c,) = Spec.from_dict(cov(column="sex", effect="categorical", reference=None)).covariates
    assert c.reference is None
    (c,) = Spec.from_dict(cov(column="sex", effect="categorical", reference=1)).covariates
    assert c.reference == 1.0
    (c,) = Spec.from_dict(cov(column="sex", effect="categorical", reference="F")).covariates
    assert c.reference == "F"


def test_exponential_default_prior_scaled_by_reference():
    (c,) = Spec.from_dict(cov(effect="exponential", reference=50)).covariates
    assert c.default_prior() == Prior("Normal", mu=0, sigma=0.02)


# --------------------------------------------------------------------------- TOML files and round trips


def test_bad_toml_syntax(tmp_path):
    p = tmp_path / "bad.toml"
    p.write_text('[model]\nstructure = "1cmt_iv\n')
    with pytest.raises(SpecError, match=r"bad\.toml: not valid TOML \("):
        Spec.from_toml(p)


def test_toml_not_utf8(tmp_path):
    p = tmp_path / "latin1.toml"
    p.write_bytes('description = "\u00b5g/L"\n'.encode("latin-1"))
    with pytest.raises(SpecError, match=r"latin1\.toml: not valid TOML \(not UTF-8 text"):
        Spec.from_toml(p)


def test_missing_spec_file(tmp_path):
    with pytest.raises(SpecError, match=r"nope\.toml: no such spec file"):
        Spec.from_toml(tmp_path / "nope.toml")


def test_toml_errors_name_the_file(tmp_path):
    p = tmp_path / "m.toml"
    p.write_text('[model]\nstructure = "1cmt_iv"\n[parameters.CL]\nguess = 1\n[parameters.V]\nguess = 1\n'
                 '[sampler]\nthin = 2\n')
    with pytest.raises(SpecError, match=r"m\.toml: \[sampler\]: unknown key 'thin'"):
        Spec.from_toml(p)


def test_toml_name_defaults_to_stem_and_data_relative_to_file(tmp_path):
    (tmp_path / "sub").mkdir()
    p = tmp_path / "sub" / "my_model.toml"
    p.write_text('[data]\npath = "../d.csv"\n[model]\nstructure = "1cmt_iv"\n'
                 '[parameters.CL]\nguess = 1\n[parameters.V]\nguess = 1\n')
    s = Spec.from_toml(p)
    assert s.name == "my_model"
    assert s.data.path == str((tmp_path / "d.csv").resolve())


def test_bundled_specs_exist():
    bundled = {p.stem for p in BUNDLED_SPECS}
    assert {"theophylline_1cmt_oral", "phenobarbital_1cmt_iv", "indomethacin_2cmt_iv"} <= bundled


@pytest.mark.parametrize("path", BUNDLED_SPECS, ids=lambda p: p.stem)
def test_bundled_spec_round_trip(path):
    spec = Spec.from_toml(path)
    # the data path is resolved relative to the spec file, to an absolute path
    assert Path(spec.data.path).is_absolute()
    assert Path(spec.data.path).is_file()
    assert Path(spec.data.path).parent.name in ("datasets", "data")  # bundled, or simulated example data
    assert Spec.from_dict(spec.to_dict()) == spec


@pytest.mark.parametrize("path", BUNDLED_SPECS, ids=lambda p: p.stem)
def test_bundled_spec_toml_round_trip(path, tmp_path):
    spec = Spec.from_toml(path)
    out = tmp_path / "elsewhere" / "spec.toml"
    out.parent.mkdir()
    spec.write(out)
    again = Spec.from_toml(out)  # absolute data path: independent of the new file's folder
    assert again == spec


def test_phenobarbital_spec_content():
    spec = Spec.from_toml(MODELS / "phenobarbital_1cmt_iv.toml")
    assert spec.structure == "1cmt_iv"
    assert [c.name for c in spec.covariates] == ["CL_WT", "V_WT", "V_APGRLOW"]
    assert spec.covariates[0].fixed and spec.covariates[0].coefficient == 1.0
    assert spec.covariates[2].reference == 0.0
    assert spec.error.model == "proportional"
    assert spec.sampler.seed == 20261122


def test_round_trip_with_everything():
    d = {
        "name": "x",
        "description": "d",
        "data": {"path": "/abs/data.csv", "aliases": {"conc": "DV"}},
        "model": {"structure": "1cmt_oral"},
        "parameters": {"CL": {"guess": 0.1, "iiv": False}, "V": {"guess": 1.0},
                       "KA": {"typical": {"dist": "Gamma", "alpha": 2, "beta": 1},
                              "iiv": {"dist": "HalfStudentT", "nu": 3, "sigma": 0.5}}},
        "covariates": [{"parameter": "CL", "column": "WT", "effect": "power", "reference": 70,
                        "coefficient": 0.75},
                       {"parameter": "V", "column": "SEX", "effect": "categorical"}],
        "error": {"model": "combined", "blq": "drop", "sigma_prop": {"dist": "HalfNormal", "sigma": 0.2}},
        "sampler": {"name": "pymc", "chains": 2, "draws": 50, "tune": 60, "seed": 3, "target_accept": 0.95},
    }
    s = Spec.from_dict(d)
    assert Spec.from_dict(s.to_dict()) == s
    assert Spec.from_dict(s.to_dict()).to_dict() == s.to_dict()
    assert s.data.aliases == {"conc": "DV"}
    assert s.parameters["CL"].iiv is None


def test_with_data_resolves(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    s = Spec.from_dict(BASE).with_data("d.csv")
    assert s.data.path == str(tmp_path.resolve() / "d.csv")
