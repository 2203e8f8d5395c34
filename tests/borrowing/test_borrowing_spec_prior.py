"""A prior file as a spec's typical-value prior: parsing, round trip through a run, and a tiny fit end to end."""

import json
import tomllib
import warnings
from pathlib import Path

import numpy as np
import pymc as pm
import pytest

import bayespk as bpk
from bayespk.borrowing import BetaMixture, GammaMixture, NormalMixture, write_prior
from bayespk.errors import SpecError
from bayespk.model.priors import MixturePrior
from bayespk.simulate import simulate_observations, study_design

SPEC = """
[model]
structure = "1cmt_iv"

[parameters.CL]
typical = {typical}
iiv = {{ dist = "HalfNormal", sigma = 0.5 }}

[parameters.V]
typical = {{ dist = "LogNormal", mu = 3.0, sigma = 1.0 }}
iiv = {{ dist = "HalfNormal", sigma = 0.5 }}

[error]
model = "proportional"
"""

CL_PRIOR = NormalMixture([0.8, 0.2], m=[np.log(2.0), np.log(2.0)], s=[0.15, 1.0], sigma=0.3)


def write_spec(folder: Path, typical: str) -> Path:
    p = folder / "spec.toml"
    p.write_text(SPEC.format(typical=typical))
    return p


def test_spec_reads_a_prior_file_relative_to_the_spec(tmp_path):
    (tmp_path / "priors").mkdir()
    write_prior(tmp_path / "priors" / "cl.json", CL_PRIOR, scale="log", parameter="CL")
    spec = bpk.Spec.from_toml(write_spec(tmp_path, '{ file = "priors/cl.json" }'))
    prior = spec.parameters["CL"].typical
    assert isinstance(prior, MixturePrior) and prior.support == "positive"
    assert prior.file == str((tmp_path / "priors" / "cl.json").resolve())
    assert prior.weights == (0.8, 0.2) and prior.p2 == (0.15, 1.0)
    # the resolved spec keeps the path and the components inline, and reads back without the file
    (tmp_path / "priors" / "cl.json").unlink()
    again = bpk.Spec.from_dict(tomllib.loads(spec.to_toml()))
    assert again == spec


def test_mixture_prior_creates_a_positive_variable_with_the_log_mixture_density():
    prior = MixturePrior("normal", "log", (0.7, 0.3), (0.0, 0.5), (0.2, 1.0))
    with pm.Model() as m:
        prior.create("CL")
    assert m["CL"].name == "CL" and "CL_log__" in m.initial_point()
    x = 1.3
    logp = m.compile_logp(jacobian=False)({"CL_log__": np.log(x)})
    ref = np.log(0.7 * np.exp(-0.5 * (np.log(x) / 0.2) ** 2) / 0.2 + 0.3 * np.exp(-0.5 * (np.log(x) - 0.5) ** 2))
    ref += -0.5 * np.log(2 * np.pi) - np.log(x)  # the density of CL is that of log CL divided by CL
    assert logp == pytest.approx(ref)
    gamma = MixturePrior("gamma", "natural", (1.0,), (4.0,), (2.0,))
    assert gamma.support == "positive"


@pytest.mark.parametrize("mixture, scale, match", [
    (BetaMixture([1.0], [11], [32]), "natural", "must be positive"),
    (NormalMixture([1.0], [0.5], [0.2], sigma=1.0), "natural", "must be positive"),
])  # fmt: skip
def test_priors_without_positive_support_are_refused_for_a_typical_value(tmp_path, mixture, scale, match):
    write_prior(tmp_path / "p.json", mixture, scale=scale)
    with pytest.raises(SpecError, match=match):
        bpk.Spec.from_toml(write_spec(tmp_path, '{ file = "p.json" }'))


def test_prior_file_errors_name_the_problem(tmp_path):
    with pytest.raises(SpecError, match=r"\[parameters.CL\] typical.*does not exist"):
        bpk.Spec.from_toml(write_spec(tmp_path, '{ file = "missing.json" }'))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(SpecError, match="not valid JSON"):
        bpk.Spec.from_toml(write_spec(tmp_path, '{ file = "bad.json" }'))
    (tmp_path / "other.json").write_text(json.dumps({"hello": 1}))
    with pytest.raises(SpecError, match="not a bayespk prior file"):
        bpk.Spec.from_toml(write_spec(tmp_path, '{ file = "other.json" }'))
    with pytest.raises(SpecError, match="unknown key 'mu'"):
        bpk.Spec.from_toml(write_spec(tmp_path, '{ file = "p.json", mu = 1 }'))
    write_prior(tmp_path / "g.json", GammaMixture([0.5, 0.5], [4, 2], [2, 1]))
    assert bpk.Spec.from_toml(write_spec(tmp_path, '{ file = "g.json" }')).parameters["CL"].typical.family == "gamma"


def test_fit_with_a_prior_file_end_to_end(tmp_path):
    write_prior(tmp_path / "cl.json", CL_PRIOR, scale="log", parameter="CL")
    spec = bpk.Spec.from_toml(write_spec(tmp_path, '{ file = "cl.json" }'))
    design = study_design(6, dose=100.0, times=[0.5, 2, 6, 12, 24], route="iv", seed=1)
    truth = {"CL": 2.2, "V": 20.0, "omega_CL": 0.3, "omega_V": 0.2, "sigma_prop": 0.1}
    data = simulate_observations(spec, design, truth, seed=2)
    data = data.drop(columns=[c for c in data.columns if c.startswith("ETA_")])
    model = bpk.PopulationModel(spec, data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bpk.ConvergenceWarning)
        fit = bpk.fit(model, draws=200, tune=300, chains=2, seed=3, progress=False)
    table = fit.summary().set_index("parameter")
    assert "CL" in table.index and 1.0 < table.loc["CL", "median"] < 4.0  # natural scale
    assert (fit.posterior["CL"].values > 0).all()
    run = fit.write_run(tmp_path / "run")
    stored = tomllib.loads((run / "spec.toml").read_text())["parameters"]["CL"]["typical"]
    assert stored["file"] == str((tmp_path / "cl.json").resolve()) and stored["scale"] == "log"
    assert stored["weights"] == [0.8, 0.2]
    reloaded = bpk.load(run)
    assert reloaded.spec == fit.spec


def test_under_conflict_the_robust_pk_prior_follows_the_data_and_the_plain_one_does_not(tmp_path):
    """Six patients whose clearance is 45% of what an informative prior (CL ~ 2, 8% SD) expects."""
    from bayespk.borrowing import borrowing_report

    inform = NormalMixture([1.0], m=[np.log(2.0)], s=[0.08], sigma=0.3)
    robust = inform.robustify(0.2, sd=1.0)
    write_prior(tmp_path / "inform.json", inform, scale="log")
    write_prior(tmp_path / "robust.json", robust, scale="log")
    specs = {}
    for label, typical in (("informative", '{ file = "inform.json" }'), ("robust", '{ file = "robust.json" }'),
                           ("vague", '{ dist = "LogNormal", mu = 0.7, sigma = 1.5 }')):
        folder = tmp_path / label
        folder.mkdir()
        (folder / "spec.toml").write_text(SPEC.format(typical=typical.replace('"inform', '"../inform')
                                                      .replace('"robust', '"../robust')))
        specs[label] = bpk.Spec.from_toml(folder / "spec.toml")
    design = study_design(6, dose=100.0, times=[0.5, 1, 2, 4, 8, 12], route="iv", seed=4)
    truth = {"CL": 0.9, "V": 20.0, "omega_CL": 0.3, "omega_V": 0.2, "sigma_prop": 0.1}
    data = simulate_observations(specs["vague"], design, truth, seed=32)
    data = data.drop(columns=[c for c in data.columns if c.startswith("ETA_")])
    fits = {}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", bpk.ConvergenceWarning)
        for label, spec in specs.items():
            fits[label] = bpk.fit(bpk.PopulationModel(spec, data), draws=300, tune=400, chains=2, seed=5,
                                  progress=False)
    report = borrowing_report(robust, fits, parameter="CL", reference="vague")
    med = report["median"]
    assert med["informative"] > 1.5                                  # held near the prior (2.0)
    assert abs(np.log(med["robust"] / med["vague"])) < 0.15          # follows the data like no borrowing
    assert abs(np.log(med["robust"] / 0.9)) < 0.35
    assert report.loc["robust", "posterior_weight_vague"] > 0.8      # the vague component took over
    assert np.isnan(report.loc["informative", "posterior_weight_vague"])
