"""The compiled model graph is specialised to its data (issue: speed).

Only the dose-record branches that the data use are built, so the log-density
and gradient of a single-route study hold what the same model written by hand
holds. The counts are of scalar operations in the compiled (NUMBA-mode) graph
that nutpie runs, from ``benchmarks/_common.py``.
"""

import sys

import numpy as np
import pymc as pm
import pytensor.tensor as pt
from conftest import MODELS, ROOT

from bayespk.model import PopulationModel

sys.path.insert(0, str(ROOT / "benchmarks"))
from _common import scalar_op_counts  # noqa: E402

# the bounded absorption tie guard of dosing._single_absorption: its condition's
# selects in the value and the gradient (the hand-written form divides by ka - k)
TIE_GUARD_SWITCHES = 10


def _hand_written(model: PopulationModel) -> pm.Model:
    """The theophylline model in plain PyMC: same priors, per-subject parameters, one oral dose each."""
    d, t = model.design, model.data.table
    dose = t[t.EVID == 1].set_index("ID").AMT.reindex(d.subject_ids).to_numpy(float)
    s, time = d.obs_subject, d.dt[:, 0]
    priors = {p: model.spec.parameters[p] for p in ("CL", "V", "KA")}
    with pm.Model(coords={"ID": d.subject_ids}) as hand:
        ind = {}
        for p, ps in priors.items():
            typical = pm.LogNormal(p, ps.typical.params["mu"], ps.typical.params["sigma"])
            omega = pm.HalfNormal(f"omega_{p}", ps.iiv.params["sigma"])
            z = pm.Normal(f"z_{p}", 0.0, 1.0, dims="ID")
            ind[p] = (typical * pt.exp(omega * z))[s]
        k = ind["CL"] / ind["V"]
        ka = ind["KA"]
        conc = dose[s] * ka / (ind["V"] * (ka - k)) * (pt.exp(-k * time) - pt.exp(-ka * time))
        sigma = pm.HalfNormal("sigma_add", model.spec.error.priors["sigma_add"].params["sigma"])
        pm.Normal("DV", conc, sigma, observed=d.obs_dv)
    return hand


def test_single_oral_dose_graph_at_the_hand_written_level():
    model = PopulationModel(MODELS / "theophylline_1cmt_oral.toml")
    ours, hand = scalar_op_counts(model.build()), scalar_op_counts(_hand_written(model))
    assert ours["Exp"] == hand["Exp"], (ours, hand)
    assert ours["Expm1"] == hand["Expm1"] == 0, (ours, hand)
    assert ours["Switch"] <= hand["Switch"] + TIE_GUARD_SWITCHES, (ours, hand)


def test_hand_written_twin_has_the_same_density():
    """The comparison above is between the same posterior (else the counts say nothing)."""
    model = PopulationModel(MODELS / "theophylline_1cmt_oral.toml")
    ours, hand = model.build(), _hand_written(model)
    rng = np.random.default_rng(1)
    start = hand.initial_point()
    point = {k: v + rng.normal(0.0, 0.3, size=np.shape(v)) for k, v in start.items()}
    a, b = ours.compile_logp()(point), hand.compile_logp()(point)
    np.testing.assert_allclose(a, b, rtol=1e-10)


def test_multiple_iv_bolus_graph_has_no_infusion_or_train_terms():
    """Phenobarbital: repeated IV boluses, no ADDL/SS, no infusions: one exponential per dose pair."""
    model = PopulationModel(MODELS / "phenobarbital_1cmt_iv.toml")
    counts = scalar_op_counts(model.build())
    assert counts["Expm1"] == 0, counts


def test_prediction_grid_is_gathered_without_a_python_loop_per_point():
    """Gathering parameters to the points of a large prediction grid takes a few operations, not one Python
    call per point: ``tensor[numpy index]`` inspects every index element in Python (pytensor's
    ``includes_bool``; 17 s for 500 subjects x 1000 points), a constant index does not (1.4 s)."""
    import cProfile
    import pstats

    import pandas as pd

    import bayespk as bpk
    from bayespk.data import read_nonmem

    spec = bpk.Spec.from_toml(MODELS / "theophylline_1cmt_oral.toml")
    rows = [r for i in range(1, 101) for r in (
        dict(ID=i, TIME=0.0, AMT=320.0, DV=0.0, EVID=1, MDV=1, CMT=1, WT=70.0),
        dict(ID=i, TIME=1.0, AMT=0.0, DV=1.0, EVID=0, MDV=0, CMT=2, WT=70.0))]
    grid = np.linspace(0.0, 24.0, 500)
    model = PopulationModel(spec, read_nonmem(pd.DataFrame(rows)))
    profile = cProfile.Profile()
    profile.enable()
    _, design = model.build_prediction(grid=grid)
    profile.disable()
    assert design.n_obs == 100 * 500
    calls = sum(stat[1] for (_, _, func), stat in pstats.Stats(profile).stats.items() if func == "includes_bool")
    assert calls < 1000, calls  # 50 000 points; with numpy indices: 600 015 calls
