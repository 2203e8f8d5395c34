"""Centring weights of the etas: one model, any weight (``[parameters.P] centered``), chosen by a warm-up run
under ``[sampler] centering = "auto"`` (default "none": standardized etas)."""

import warnings

import numpy as np
import pymc as pm
import pytest
import xarray as xr
from conftest import MODELS

import bayespk as bpk
from bayespk.fit import Fit, centering_weights
from bayespk.model import PopulationModel, Spec

THEO = MODELS / "theophylline_1cmt_oral.toml"


def _weighted(weights: dict, centering: str = "auto") -> Spec:
    d = Spec.from_toml(THEO).to_dict()
    for p, w in weights.items():
        d["parameters"][p]["centered"] = w
    d.setdefault("sampler", {})["centering"] = centering
    return Spec.from_dict(d)


def _eta_space_logp(pm_model, point: dict, weights: dict) -> float:
    """log p(omega, eta, ...) at ``point`` (given with etas), from a model sampling z = eta / omega**(1-w).

    z ~ N(0, omega**w) and eta = omega**(1-w) z, so log p(.., eta) = log p_w(.., z) - n (1-w) log omega.
    """
    moved, jacobian = dict(point), 0.0
    for p, w in weights.items():
        omega = np.exp(point[f"omega_{p}_log__"])
        eta = moved.pop(f"eta_{p}")
        moved[f"z_{p}"] = eta / omega ** (1 - w)
        jacobian += eta.size * (1 - w) * np.log(omega)
    return float(pm_model.compile_logp()(moved)) - jacobian


@pytest.mark.parametrize("w", [0.0, 0.37, 1.0])
def test_every_weight_is_the_same_model(w):
    """The joint density of omegas and etas does not depend on the weight (a reparameterisation only)."""
    weights = {"CL": w, "V": w, "KA": 0.0}
    model = PopulationModel(_weighted(weights)).build()
    if w == 1.0:  # the centred etas are sampled directly; eta is then z itself
        assert model["eta_CL"] is not None and {"z_CL", "z_V", "z_KA"} <= {rv.name for rv in model.free_RVs}
    rng = np.random.default_rng(3)
    base = {k: v + rng.normal(0.0, 0.3, np.shape(v)) for k, v in PopulationModel(THEO).build().initial_point().items()}
    point = {k: v for k, v in base.items() if not k.startswith("z_")}
    for p in ("CL", "V", "KA"):
        point[f"eta_{p}"] = np.exp(base[f"omega_{p}_log__"]) * base[f"z_{p}"]
    reference = _eta_space_logp(PopulationModel(_weighted({}, "none")).build(), point, {"CL": 0.0, "V": 0.0,
                                                                                       "KA": 0.0})
    np.testing.assert_allclose(_eta_space_logp(model, point, weights), reference, rtol=1e-10)
    # the weights left to the fit are shared data: setting them gives the same density, no new graph
    auto = PopulationModel(_weighted({})).build()
    pm.set_data({"centering_CL": w, "centering_V": w}, model=auto)
    np.testing.assert_allclose(_eta_space_logp(auto, point, weights), reference, rtol=1e-10)


def test_standardized_etas_by_default():
    model = PopulationModel(THEO)
    assert model.spec.sampler.centering == "none"
    assert model.centering_weights() == {"CL": 0.0, "V": 0.0, "KA": 0.0}
    built = model.build()
    assert not any(name.startswith("centering_") for name in built.named_vars)
    for p in ("CL", "V", "KA"):  # z ~ N(0, 1), eta = omega z: the graph of the standardized model
        mu, sigma = built[f"z_{p}"].owner.op.dist_params(built[f"z_{p}"].owner)
        assert np.all(mu.eval() == 0.0) and np.all(sigma.eval() == 1.0)
    assert PopulationModel(_weighted({"KA": 0.3})).centering_weights() == {"CL": None, "V": None, "KA": 0.3}


def test_weights_from_draws_are_one_minus_shrinkage_squared():
    rng = np.random.default_rng(0)
    n = 400
    # subject means spread 0.8 x omega (shrinkage 20%: weight 0.64); a second parameter with none left (0)
    eta_a = 0.8 * 0.5 * rng.standard_normal(n)
    eta_a = (eta_a - eta_a.mean()) / eta_a.std(ddof=1) * 0.4
    draws = np.broadcast_to(eta_a, (2, 50, n)) + 0.0
    post = xr.Dataset({"eta_A": (("chain", "draw", "ID"), draws),
                       "omega_A": (("chain", "draw"), np.full((2, 50), 0.5)),
                       "eta_B": (("chain", "draw", "ID"), rng.standard_normal((2, 50, n)) * 0.3),
                       "omega_B": (("chain", "draw"), np.full((2, 50), 0.3))})
    w = centering_weights(post, ["A", "B"])
    assert w["A"] == pytest.approx(0.64, abs=0.005)
    assert w["B"] < 0.05  # per-draw noise averages out: the subjects' means are ~0
    post["omega_A"][:] = np.nan
    assert centering_weights(post, ["A"]) == {"A": 0.0}


def _small_fit(spec: Spec, seed: int = 5):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bpk.fit(PopulationModel(spec), draws=300, tune=300, chains=2, seed=seed, progress=False)


@pytest.mark.slow
def test_warm_up_chooses_and_records_the_weights(tmp_path):
    fit = _small_fit(_weighted({}))
    chosen = fit.run_info["centering_chosen"]
    assert set(chosen) == {"CL", "V", "KA"}
    # 11 samples per subject determine each KA (shrinkage ~1%): close to centred
    assert chosen["KA"] >= 0.8 and all(0.0 <= w <= 1.0 for w in chosen.values())
    assert {p: fit.spec.parameters[p].centered for p in chosen} == chosen
    assert fit.diagnostics()["divergences"] == 0
    assert 0.03 < fit.summary().set_index("parameter").loc["CL", "median"] < 0.05  # nlme: 0.040 L/h/kg
    # the run's spec carries the weights: a refit from it runs no warm-up and samples the same model
    fit.write_run(tmp_path / "run")
    again = Spec.from_toml(tmp_path / "run" / "spec.toml")
    assert {p: again.parameters[p].centered for p in chosen} == chosen
    assert PopulationModel(again, fit.model.data).centering_weights() == chosen


@pytest.mark.slow
def test_new_etas_in_regimen_simulation_do_not_depend_on_the_weight():
    """The same posterior written with standardized (w = 0) or centred (w = 1) CL etas: identical simulations."""
    plain = _small_fit(_weighted({}, "none"))
    tree = plain.tree.copy()
    post = tree["posterior"].to_dataset()
    post["z_CL"] = post["eta_CL"]  # w = 1: z is eta itself
    tree["posterior"] = xr.DataTree(post)
    centred = Fit(tree, plain.spec.with_centering({"CL": 1.0}))
    kw = {"n_draws": 20, "progress": False, "seed": 3}
    a = bpk.simulate_regimens(plain, ["320q12x4"], **kw)
    b = bpk.simulate_regimens(centred, ["320q12x4"], **kw)
    np.testing.assert_allclose(b.values("320q12x4", "Cmax"), a.values("320q12x4", "Cmax"), rtol=1e-10)
    own = {"etas": "posterior", **kw}
    np.testing.assert_allclose(bpk.simulate_regimens(centred, ["320q12x4"], **own).values("320q12x4", "AUC"),
                               bpk.simulate_regimens(plain, ["320q12x4"], **own).values("320q12x4", "AUC"),
                               rtol=1e-10)


def test_weights_round_trip_and_are_checked():
    spec = _weighted({"CL": 0.5, "V": True, "KA": False})
    assert Spec.from_dict(spec.to_dict()) == spec
    assert spec.to_dict()["parameters"]["V"]["centered"] is True
    assert "centering" not in Spec.from_toml(THEO).to_dict()["sampler"]
    assert Spec.from_dict(spec.to_dict()).sampler.centering == "auto"
    d = Spec.from_toml(THEO).to_dict()
    for bad in ("yes", 1.5, -0.1, float("nan")):
        d["parameters"]["CL"]["centered"] = bad
        with pytest.raises(bpk.SpecError, match=r"\[parameters.CL\] centered: expected true, false or a centring"):
            Spec.from_dict(d)
    d["parameters"]["CL"].update(centered=True, iiv=False)
    with pytest.raises(bpk.SpecError, match="no IIV"):
        Spec.from_dict(d)
    d = Spec.from_toml(THEO).to_dict()
    d["parameters"]["CL"]["centered"] = 0.5
    d["iiv"] = {"correlated": ["CL", "V"]}
    with pytest.raises(bpk.SpecError, match="centered = 0.5; correlated etas"):
        Spec.from_dict(d)
    d = Spec.from_toml(THEO).to_dict()
    d["sampler"]["centering"] = "always"
    with pytest.raises(bpk.SpecError, match=r"\[sampler\] centering: 'always' is not one of none, auto"):
        Spec.from_dict(d)
