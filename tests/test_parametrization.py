"""Centred and non-centred etas: the same posterior, two parametrisations (``[parameters.P] centered``)."""

import warnings

import numpy as np
import pytest

import bayespk as bpk
from bayespk.model import PopulationModel, Spec

from conftest import MODELS

THEO = MODELS / "theophylline_1cmt_oral.toml"


def _centred(names=("CL", "V")) -> Spec:
    d = Spec.from_toml(THEO).to_dict()
    for p in names:
        d["parameters"][p]["centered"] = True
    return Spec.from_dict(d)


def test_centred_density_is_the_non_centred_one_with_its_jacobian():
    """log p(eta | omega) = log N(z; 0, 1) - log omega per subject, with eta = omega z."""
    plain, centred = PopulationModel(THEO).build(), PopulationModel(_centred()).build()
    assert {"eta_CL", "eta_V", "z_KA"} <= {rv.name for rv in centred.free_RVs}
    assert "z_CL" not in {rv.name for rv in centred.free_RVs}
    rng = np.random.default_rng(3)
    point = {k: v + rng.normal(0.0, 0.3, np.shape(v)) for k, v in plain.initial_point().items()}
    moved = dict(point)
    n = len(point["z_CL"])
    jacobian = 0.0
    for p in ("CL", "V"):
        omega = np.exp(point[f"omega_{p}_log__"])
        moved[f"eta_{p}"] = omega * moved.pop(f"z_{p}")
        jacobian += n * np.log(omega)
    np.testing.assert_allclose(centred.compile_logp()(moved), plain.compile_logp()(point) - jacobian, rtol=1e-10)


def test_centred_fit_reports_its_etas_and_agrees():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = PopulationModel(_centred()).fit(draws=300, tune=400, chains=2, seed=5, progress=False)
    assert "eta_CL" in fit.free_parameters and "z_CL" not in fit.free_parameters
    assert fit.spec.parameters["CL"].centered and not fit.spec.parameters["KA"].centered
    assert fit.diagnostics()["divergences"] == 0
    cl = fit.summary().set_index("parameter").loc["CL"]
    assert 0.03 < cl["median"] < 0.05  # nlme: exp(-3.214) = 0.040 L/h/kg
    shrink = fit.shrinkage()
    assert set(shrink.parameter if "parameter" in shrink else shrink.index) >= {"CL", "V", "KA"}


def test_centred_round_trips_and_is_checked():
    spec = _centred(("CL",))
    assert Spec.from_dict(spec.to_dict()) == spec
    d = Spec.from_toml(THEO).to_dict()
    d["parameters"]["CL"]["centered"] = "yes"
    with pytest.raises(bpk.SpecError, match=r"\[parameters.CL\] centered: expected true or false"):
        Spec.from_dict(d)
    d["parameters"]["CL"].update(centered=True, iiv=False)
    with pytest.raises(bpk.SpecError, match="no IIV"):
        Spec.from_dict(d)
    d = Spec.from_toml(THEO).to_dict()
    d["parameters"]["CL"]["centered"] = True
    d["iiv"] = {"correlated": ["CL", "V"]}
    with pytest.raises(bpk.SpecError, match="centered = true; correlated etas"):
        Spec.from_dict(d)
