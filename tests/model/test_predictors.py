"""One model mechanism: every kind of model is built through a Predictor (bayespk.model.predictors)."""

import ast
from pathlib import Path

import pytest

import bayespk as bpk
from bayespk.fit import backend
from bayespk.model import predictors

ROOT = Path(__file__).resolve().parents[2]
MODELS = ROOT / "models"


@pytest.mark.parametrize("name, kind, outputs, cell_kinetics, auto_backend", [
    ("theophylline_1cmt_oral", predictors.ClosedForm, ("DV",), False, "numba"),
    ("cart_tisagenlecleucel_like", predictors.PiecewiseCellKinetics, ("DV",), True, "numba"),
    ("cart_mechanistic", predictors.MechanisticCellKinetics, ("DV",), True, "numba"),
    ("indomethacin_biexp_nlme", predictors.Algebraic, ("DV",), False, "numba"),
    ("transit_oral", predictors.ODESystem, ("DV",), False, "jax"),
    ("irm_oral", predictors.ODESystem, ("DV", "DV_PD"), False, "jax"),
    ("pkpd_emax_simulated", predictors.WithPD, ("DV", "DV_PD"), False, "numba"),
])
def test_each_bundled_model_gets_its_kind(name, kind, outputs, cell_kinetics, auto_backend):
    model = bpk.PopulationModel(MODELS / f"{name}.toml")
    p = model.predictor
    assert type(p) is kind
    assert p.outputs == outputs and model.has_pd == (len(outputs) == 2)
    assert model.cell_kinetics is cell_kinetics
    # the nutpie backend of `backend = "auto"`: JAX where the solver is JAX
    assert model.spec.sampler.backend == "auto" and backend(model.spec, model) == auto_backend


def test_points_are_where_a_kind_needs_parameters():
    ode = bpk.PopulationModel(MODELS / "transit_oral.toml")
    (records,) = ode.predictor.points  # every record of every subject
    assert records.records.shape[0] == ode.data.summary.n_subjects
    assert records.obs_record.size == records.records.size
    mech = bpk.PopulationModel(MODELS / "cart_mechanistic.toml")
    (subjects,) = mech.predictor.points  # each patient at the infusion
    assert subjects.n_obs == mech.data.summary.n_subjects
    assert bpk.PopulationModel(MODELS / "theophylline_1cmt_oral.toml").predictor.points == []


def test_the_builder_has_no_branch_per_model_kind():
    """population.py names no structural kind: the kinds live in predictors.py, chosen once by predictor()."""
    source = (ROOT / "bayespk" / "model" / "population.py").read_text()
    tree = ast.parse(source)
    imported = {a.name for node in ast.walk(tree) if isinstance(node, ast.ImportFrom)
                for a in node.names if (node.module or "").startswith("bayespk.structural")}
    assert imported <= {"STRUCTURES", "PD_MODELS", "take"}, imported
    kinds = {"ODEModel", "AlgebraicModel", "CellKinetics", "CellKineticsODE", "ClosedForm", "ODESystem",
             "PiecewiseCellKinetics", "MechanisticCellKinetics", "Algebraic", "WithPD"}
    named = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)} & kinds
    assert not named, f"population.py refers to model kinds: {sorted(named)}"
