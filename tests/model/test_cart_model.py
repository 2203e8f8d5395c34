"""CAR-T models: spec, data rules, the likelihood's pieces, the virtual cohort and CK metrics."""

from pathlib import Path

import numpy as np
import pandas as pd
import pymc as pm
import pytest
from scipy import stats

import bayespk as bpk
from bayespk.errors import DataError, SpecError
from bayespk.model.spec import Spec
from bayespk.simulate.cohort import simulate_cart_cohort
from bayespk.structural.cart import ck_level

MODELS = Path(__file__).resolve().parents[2] / "models"
SPEC = {
    "model": {"structure": "cart_piecewise"},
    "parameters": {
        "CMAX": {"guess": 20000.0}, "FX": {"guess": 3000.0}, "TMAX": {"guess": 9.0},
        "ALPHA": {"guess": 0.15}, "FB": {"typical": {"dist": "Beta", "alpha": 1.0, "beta": 50.0}},
        "BETA": {"guess": 0.003},
    },
    "treatments": [{"column": "TOCI"}, {"column": "CORT", "multiplier": 1.0}],
    "error": {"model": "lognormal", "by": "ASSAY"},
}


@pytest.fixture(scope="module")
def cohort():
    return simulate_cart_cohort(30, seed=5)


def _spec(**changes) -> Spec:
    d = {k: (v.copy() if isinstance(v, dict) else v) for k, v in SPEC.items()}
    d.update(changes)
    return Spec.from_dict(d)


def test_spec_round_trip_and_names():
    spec = _spec()
    assert [t.name for t in spec.treatments] == ["rho_TOCI", "rho_CORT"]
    assert spec.treatments[1].fixed
    names = spec.population_parameters
    assert "rho_TOCI" in names and "rho_CORT" not in names and "scale_ASSAY" in names
    again = Spec.from_dict(spec.to_dict())
    assert again.to_dict() == spec.to_dict()


@pytest.mark.parametrize("change, message", [
    ({"model": {"structure": "1cmt_iv"}, "parameters": {"CL": {"guess": 1.0}, "V": {"guess": 1.0}}},
     "treatment multipliers act on the expansion rate"),
    ({"treatments": [{"column": "TOCI"}, {"column": "toci"}]}, "column TOCI is given twice"),
    ({"treatments": [{"column": "TOCI", "multiplier": -1}]}, "must be > 0"),
    ({"treatments": [{"column": "TOCI", "multiplier": {"dist": "Normal", "mu": 1, "sigma": 1}}]}, "positive prior"),
    ({"treatments": [{"col": "TOCI"}]}, "col"),
    ({"error": {"model": "lognormal", "scale": 2.0}}, "only used with by"),
    ({"error": {"model": "lognormal", "by": "ASSAY", "scale": 0}}, "must be > 0"),
])
def test_spec_refuses(change, message):
    with pytest.raises(SpecError, match=message):
        _spec(**change)


def test_model_builds_with_assays_and_logit_fb(cohort):
    model = bpk.PopulationModel(_spec(), cohort.data)
    assert model.coords["ASSAY"] == ["1", "2"] and model.coords["ASSAY_scaled"] == ["2"]
    m = model.build()
    names = {v.name for v in m.free_RVs}
    assert {"rho_TOCI", "scale_ASSAY", "sigma_log", "FB"} <= names and "rho_CORT" not in names
    assert m["sigma_log"].eval().shape == (2,)
    # FB stays in (0, 1) for any eta: individual FB is logistic(logit(FB) + eta)
    pred = model.build_individual()
    fb = pm.do(pred, {"FB": 0.5, "z_FB": np.full(30, 5.0), "omega_FB": 3.0})["FB_i"].eval()
    np.testing.assert_allclose(fb, 1 / (1 + np.exp(-15.0)), rtol=1e-12)  # log-normal would give 0.5 e^15
    assert np.all(fb < 1)


def test_likelihood_matches_hand_computation(cohort):
    """log p(DV) at fixed values = lognormal density / cdf with each assay's sigma and scale."""
    data = cohort.data
    model = bpk.PopulationModel(_spec(), data)
    m = model.build()
    values = {"CMAX": 20000.0, "FX": 3000.0, "TMAX": 9.0, "ALPHA": 0.15, "FB": 0.01, "BETA": 0.003,
              "rho_TOCI": 0.7, "scale_ASSAY": np.array([0.005]), "sigma_log": np.array([0.5, 0.3])}
    names = ("CMAX", "FX", "TMAX", "ALPHA", "FB", "BETA")
    fixed = pm.do(m, values | {f"z_{p}": np.zeros(30) for p in names} | {f"omega_{p}": 0.5 for p in names})
    got = float(fixed.compile_logp(vars=[fixed["DV"]], sum=True)({}))
    obs = data[data.EVID == 0]
    toci = data[data.TOCI > 0].groupby("ID").TIME.min()
    total = 0.0
    for _, r in obs.iterrows():
        onset = toci.get(r.ID, 1e9)
        f = ck_level(np.array([r.TIME]), 20000.0, 3000.0, 9.0, 0.15, 0.01, 0.003, onsets=[np.array([onset])],
                     multipliers=[0.7])[0]
        sd = 0.5 if r.ASSAY == 1 else 0.3
        f = f * (0.005 if r.ASSAY == 2 else 1.0)
        if r.BLQ == 1:
            total += stats.norm.logcdf(np.log(r.LLOQ), np.log(f), sd)
        else:
            total += stats.lognorm.logpdf(r.DV, sd, scale=f)
    assert got == pytest.approx(total, rel=1e-8)


def test_data_rules(cohort):
    d = cohort.data
    second = d[(d.ID == 1) & (d.EVID == 1)].assign(TIME=30.0)
    two = pd.concat([d, second]).sort_values(["ID", "TIME"], kind="stable")
    with pytest.raises(DataError, match="second dose record for ID 1"):
        bpk.PopulationModel(_spec(), two)
    with pytest.raises(DataError, match="column TOCI"):
        bpk.PopulationModel(_spec(), d.drop(columns="TOCI"))
    with pytest.raises(DataError, match="column ASSAY: observation without an assay"):
        k = d.index[d.EVID == 0][3]
        bpk.PopulationModel(_spec(), d.assign(ASSAY=d.ASSAY.where(d.index != k))).build()
    with pytest.raises(SpecError, match="reference: level 7"):
        bpk.PopulationModel(_spec(error={"model": "lognormal", "by": "ASSAY", "reference": 7}), d)


def test_onsets_are_first_administrations(cohort):
    model = bpk.PopulationModel(_spec(), cohort.data)
    pats = cohort.patients.set_index("ID").reindex(model.design.subject_ids)
    on = model.predictor.onsets
    np.testing.assert_allclose(np.where(on[:, 0] < 1e8, on[:, 0], np.nan), pats.TOCI_DAY.to_numpy())
    np.testing.assert_allclose(np.where(on[:, 1] < 1e8, on[:, 1], np.nan), pats.CORT_DAY.to_numpy())


def test_cohort_design_follows_the_clinic():
    c = simulate_cart_cohort(300, seed=11)
    p = c.patients
    # tocilizumab exactly for CRS >= 2, at CRS onset; corticosteroids for CRS >= 3 or ICANS >= 2
    assert (p.TOCI_DAY.notna() == (p.CRS >= 2)).all()
    np.testing.assert_array_equal(p.TOCI_DAY.dropna(), p.CRS_DAY[p.CRS >= 2])
    assert (p.CORT_DAY.notna() == ((p.CRS >= 3) | (p.ICANS >= 2))).all()
    # CRS rises with expansion and tumor burden (the reverse-causation set-up)
    hi = p.CMAX_I > p.CMAX_I.median()
    assert p.CRS[hi].mean() > p.CRS[~hi].mean() + 0.3
    # about 30% of qPCR samples after day 90 are BLQ with the default LLOQ
    assert 0.2 < c.blq_fraction() < 0.4
    # no sample after dropout or progression
    d = c.data.merge(p[["ID", "DROPOUT", "PFS", "PFS_EVENT"]], on="ID")
    stop = np.minimum(d.DROPOUT, np.where(d.PFS_EVENT == 1, d.PFS, np.inf))
    assert (d.TIME[d.EVID == 0] <= stop[d.EVID == 0]).all()
    # BLQ rows hold the LLOQ as DV, quantified rows are at or above it
    obs = c.data[c.data.EVID == 0]
    assert (obs.DV[obs.BLQ == 1] == obs.LLOQ[obs.BLQ == 1]).all()
    assert (obs.DV[obs.BLQ == 0] >= obs.LLOQ[obs.BLQ == 0]).all()
    # the records are a valid NONMEM dataset
    ds = bpk.read_nonmem(c.data)
    assert ds.summary.n_subjects == 300


def test_cohort_truth_keys_match_a_spec():
    c = simulate_cart_cohort(5, seed=0)
    spec = Spec.from_toml(MODELS / "cart_tisagenlecleucel_like.toml")
    model = bpk.PopulationModel(spec, c.data)
    wanted = set()
    for n in model.spec.population_parameters:
        wanted |= {f"{n}[1]", f"{n}[2]"} if n == "sigma_log" else ({f"{n}[2]"} if n.startswith("scale_") else {n})
    assert wanted == set(c.truth)


def test_cohort_refuses_bad_settings():
    with pytest.raises(SpecError, match="missing TLAG, TEXP"):
        simulate_cart_cohort(5, structure="cart_lag")
    with pytest.raises(SpecError, match="effects"):
        simulate_cart_cohort(5, effects={("CL", "TB"): ("power", 20.0, 0.3)})


def test_lag_spec_builds_with_its_own_tlag():
    """cart_lag's TLAG is a structural parameter, not the depot lag of PK structures."""
    model = bpk.PopulationModel(MODELS / "cart_lisocabtagene_like.toml")
    m = model.build()
    assert {"TLAG", "TEXP"} <= {v.name for v in m.free_RVs}
    assert np.isfinite(m.compile_logp()(m.initial_point()))
