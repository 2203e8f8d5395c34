"""Visual predictive checks (SCIENCE.md section 4): binning, prediction correction, percentiles and
intervals on hand-made replicates, then numeric calibration on simulated studies: a correctly
specified model passes, a misspecified one (one compartment fitted to two-compartment data) fails,
the censored VPC compares BLQ fractions, stratification and the prior predictive check.

The hand-made tests build a PopulationModel (no fit) and pass ``replicates`` so every input of the
VPC is known exactly. The simulation tests share three short fits (module-scoped fixtures); the
whole file takes ~35 s on 2 cores with a warm compile cache, so they are not marked slow.
"""

import warnings

import matplotlib.pyplot as plt
import numpy as np
import pandas as pd
import pytest
import xarray as xr
from conftest import MODELS, ROOT, tiny_fit

import bayespk as bpk
from bayespk.evaluate.simulation import observation_table, simulate_replicates
from bayespk.evaluate.vpc import VPC, bin_edges, prediction_correct, vpc
from bayespk.simulate import simulate_observations, study_design

PI_NAMES = ("p5", "p50", "p95")


@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close("all")


def inside_fraction(table: pd.DataFrame, names=PI_NAMES) -> np.ndarray:
    """(percentile, bin) matrix: 1 where the observed percentile lies in the simulated interval.

    Cells where the observed percentile is NaN (below the LLOQ) are left out (NaN)."""
    out = []
    for n in names:
        obs, lo, hi = table[f"obs_{n}"], table[f"sim_{n}_lo"], table[f"sim_{n}_hi"]
        out.append(np.where(obs.isna(), np.nan, ((obs >= lo) & (obs <= hi)).astype(float)))
    return np.array(out)


# ====================================================================== bin edges
NOMINAL = np.array([0.5, 1, 2, 4, 8, 12, 24])


def _bin_of(edges, t):
    return np.clip(np.searchsorted(edges, t, side="right") - 1, 0, len(edges) - 2)


def test_auto_bins_one_per_nominal_time():
    t = np.tile(NOMINAL, 20)
    edges = bin_edges(t)  # auto, <= 10 distinct times
    np.testing.assert_allclose(edges, [0.5, 0.75, 1.5, 3, 6, 10, 18, 24])
    b = _bin_of(edges, t)
    for j, nominal in enumerate(NOMINAL):
        assert set(t[b == j]) == {nominal}
    np.testing.assert_allclose(bin_edges(np.array([1, 1, 2, 2, 8, 8])), [1, 1.5, 5, 8])  # the docstring


def test_auto_bins_for_a_scattered_design():
    t = np.random.default_rng(0).uniform(0, 24, 200)
    edges = bin_edges(t)
    # clip(round(1.5 * 200^(1/3)), 4, 12) = 9 bins
    assert len(edges) == 10
    assert edges[0] == t.min() and edges[-1] == t.max() and np.all(np.diff(edges) > 0)


def test_kmeans_bins_separate_clusters():
    rng = np.random.default_rng(1)
    centers = np.array([1.0, 6.0, 24.0])
    t = np.concatenate([c + rng.uniform(-0.3, 0.3, 30) for c in centers])
    edges = bin_edges(t, 3, "kmeans")
    assert len(edges) == 4
    b = _bin_of(edges, t)
    for j, c in enumerate(centers):
        assert np.all(np.abs(t[b == j] - c) <= 0.3) and (b == j).sum() == 30
    # inner edges are midpoints of the cluster means
    means = np.array([t[b == j].mean() for j in range(3)])
    np.testing.assert_allclose(edges[1:-1], (means[1:] + means[:-1]) / 2)


def test_quantile_bins_have_equal_counts():
    t = np.random.default_rng(2).exponential(6, 120)
    edges = bin_edges(t, 4, "quantile")
    assert len(edges) == 5
    np.testing.assert_allclose(edges[1:-1], np.quantile(t, [0.25, 0.5, 0.75]))
    counts = np.bincount(_bin_of(edges, t), minlength=4)
    assert counts.tolist() == [30, 30, 30, 30]


def test_int_bins_capped_at_the_number_of_distinct_times():
    assert len(bin_edges(np.tile([1.0, 2.0, 3.0], 5), 8, "quantile")) - 1 <= 3


def test_quantile_bins_are_strictly_increasing_with_ties_at_the_first_time():
    t = np.r_[np.full(40, 1.0), np.linspace(2, 24, 60)]  # sparse design: 40% sampled at t = 1
    edges = bin_edges(t, 4, "quantile")
    assert np.all(np.diff(edges) > 0), edges


def test_explicit_edges():
    t = np.tile(NOMINAL, 3)
    np.testing.assert_array_equal(bin_edges(t, [0, 3, 30]), [0, 3, 30])
    np.testing.assert_array_equal(bin_edges(t, np.array([0.5, 24.0])), [0.5, 24])
    with pytest.raises(bpk.BayesPKError, match="increasing"):
        bin_edges(t, [0, 5, 5, 30])
    with pytest.raises(bpk.BayesPKError, match="increasing"):
        bin_edges(t, [30, 3, 0])
    with pytest.raises(bpk.BayesPKError, match="increasing"):
        bin_edges(t, [0])
    with pytest.raises(bpk.BayesPKError, match="do not cover"):
        bin_edges(t, [0, 3, 12])  # 24 h outside
    with pytest.raises(bpk.BayesPKError, match="do not cover"):
        bin_edges(t, [1, 3, 30])  # 0.5 h outside


def test_bin_argument_errors():
    t = np.tile(NOMINAL, 3)
    with pytest.raises(bpk.BayesPKError, match="binning"):
        bin_edges(t, 3, "jenks")
    with pytest.raises(bpk.BayesPKError, match="bins"):
        bin_edges(t, "many")
    with pytest.raises(bpk.BayesPKError, match=">= 1"):
        bin_edges(t, 0)
    with pytest.raises(bpk.BayesPKError, match="no observations"):
        bin_edges(np.array([]))


# ====================================================================== hand-made replicates
IV_SPEC = bpk.Spec.from_dict({
    "model": {"structure": "1cmt_iv"},
    "parameters": {"CL": {"guess": 4.0}, "V": {"guess": 40.0}},
    "error": {"model": "proportional"},
})  # fmt: skip


def _dataset(profiles: dict, extra: dict | None = None) -> pd.DataFrame:
    """{ID: [(time, dv), ...]} -> NONMEM rows: 100 mg IV bolus at 0, then the observations."""
    rows = []
    for sid, obs in profiles.items():
        cov = (extra or {}).get(sid, {})
        rows.append(dict(ID=sid, TIME=0.0, AMT=100.0, DV=np.nan, EVID=1, MDV=1, CMT=1, **cov))
        rows += [dict(ID=sid, TIME=t, AMT=np.nan, DV=y, EVID=0, MDV=0, CMT=1, **cov) for t, y in obs]
    return pd.DataFrame(rows)


def _replicates(dv_sim, pred=None) -> xr.Dataset:
    dv_sim = np.asarray(dv_sim, float)
    pred = np.ones(dv_sim.shape[1]) if pred is None else np.asarray(pred, float)
    pred = np.broadcast_to(pred, dv_sim.shape)
    return xr.Dataset({"DV_sim": (("rep", "obs"), dv_sim), "IPRED": (("rep", "obs"), dv_sim.copy()),
                       "PRED": (("rep", "obs"), np.array(pred))})


# Six observations in two bins (t = 1 h and t = 4 h), in observation order s1 t1, s1 t4, s2 t1, ...
PC_DV = np.array([3.0, 0.8, 6.0, 2.0, 4.0, 2.4])
PC_PRED = np.array([2.0, 1.0, 4.0, 1.5, 5.0, 3.0])  # bin t=1: 2, 4, 5 (median 4); t=4: 1, 1.5, 3 (median 1.5)
PC_PRED_BIN = np.array([4.0, 1.5, 4.0, 1.5, 4.0, 1.5])
# Bergstrand, lb = 0: pcDV = DV * PRED_bin / PRED
PC_LB0 = np.array([3 * 4 / 2, 0.8 * 1.5 / 1, 6 * 4 / 4, 2 * 1.5 / 1.5, 4 * 4 / 5, 2.4 * 1.5 / 3])
PC_LB0_HAND = np.array([6.0, 1.2, 6.0, 2.0, 3.2, 1.2])
# lb = 0.5: pcDV = 0.5 + (DV - 0.5) (PRED_bin - 0.5) / (PRED - 0.5)
PC_LB05_HAND = np.array([0.5 + 2.5 * 3.5 / 1.5, 0.5 + 0.3 * 1.0 / 0.5, 6.0, 2.0, 0.5 + 3.5 * 3.5 / 4.5,
                         0.5 + 1.9 * 1.0 / 2.5])  # = 6.3333, 1.1, 6, 2, 3.2222, 1.26
# log-scale DV: pcDV = DV + PRED_bin - PRED
PC_LOG_HAND = np.array([5.0, 1.3, 6.0, 2.0, 3.0, 0.9])


@pytest.fixture(scope="module")
def pc_model():
    data = _dataset({1: [(1.0, 3.0), (4.0, 0.8)], 2: [(1.0, 6.0), (4.0, 2.0)], 3: [(1.0, 4.0), (4.0, 2.4)]})
    return bpk.PopulationModel(IV_SPEC, data)


def test_prediction_correct_by_hand():
    np.testing.assert_allclose(PC_LB0, PC_LB0_HAND)
    np.testing.assert_allclose(prediction_correct(PC_DV, PC_PRED, PC_PRED_BIN), PC_LB0_HAND)
    np.testing.assert_allclose(prediction_correct(PC_DV, PC_PRED, PC_PRED_BIN, lower_bound=0.5), PC_LB05_HAND)
    np.testing.assert_allclose(PC_LB05_HAND[[0, 1, 4, 5]], [6.333333333, 1.1, 3.222222222, 1.26])
    np.testing.assert_allclose(prediction_correct(PC_DV, PC_PRED, PC_PRED_BIN, log_dv=True), PC_LOG_HAND)
    # observations at the median prediction are unchanged
    np.testing.assert_allclose(prediction_correct(PC_DV, PC_PRED_BIN, PC_PRED_BIN), PC_DV)


def test_pcvpc_points_match_the_hand_computation(pc_model):
    obs = observation_table(pc_model)
    np.testing.assert_array_equal(obs.DV, PC_DV)
    np.testing.assert_array_equal(obs.TIME, [1, 4, 1, 4, 1, 4])
    # simulated values: copies of the observations, so the simulated bands are the corrected data's
    # percentiles
    reps = _replicates(np.tile(PC_DV, (20, 1)), PC_PRED)
    for kwargs, expected in [({}, PC_LB0_HAND), ({"lower_bound": 0.5}, PC_LB05_HAND),
                             ({"log_dv": True}, PC_LOG_HAND)]:
        result = vpc(pc_model, pred_corr=True, replicates=reps, **kwargs)
        assert isinstance(result, VPC) and result.settings["pred_corr"]
        np.testing.assert_allclose(result.points.DV, expected, err_msg=str(kwargs))
        np.testing.assert_array_equal(result.points.bin, [0, 1, 0, 1, 0, 1])
        t = result.table.set_index("bin")
        for j in (0, 1):
            in_bin = expected[j::2]
            for p, name in zip((0.05, 0.5, 0.95), PI_NAMES):
                q = np.quantile(in_bin, p)
                assert t.loc[j, f"obs_{name}"] == pytest.approx(q)
                for stat in ("median", "lo", "hi"):
                    assert t.loc[j, f"sim_{name}_{stat}"] == pytest.approx(q)
    # without correction the points are the raw DV
    np.testing.assert_allclose(vpc(pc_model, replicates=reps).points.DV, PC_DV)


def test_pcvpc_uses_the_median_pred_over_replicates(pc_model):
    """PRED varies over replicates (posterior draws): the correction uses its median per observation."""
    factors = np.array([0.5, 0.8, 1.0, 1.25, 3.0])[:, None]  # median 1, mean 1.31
    pred = PC_PRED[None, :] * factors
    reps = _replicates(np.tile(PC_DV, (5, 1)), pred)
    np.testing.assert_allclose(vpc(pc_model, pred_corr=True, replicates=reps).points.DV, PC_LB0_HAND)


def test_pcvpc_excludes_and_counts_pred_at_or_below_the_lower_bound(pc_model):
    """The stated rule (issue 16): an observation with PRED <= lb has no correction; it is left out of the
    pcVPC, observed and simulated alike, and counted. Here lb = 1 and s1 at t = 4 has PRED exactly 1."""
    sim = np.tile(PC_DV, (20, 1))
    sim[:, 1] = 1e6  # the excluded observation's simulated values: they would dominate bin t = 4's bands
    result = vpc(pc_model, pred_corr=True, lower_bound=1.0, replicates=_replicates(sim, PC_PRED))
    # kept: bin t=1 PRED 2, 4, 5 (median 4); bin t=4 PRED 1.5, 3 (median 2.25, without the excluded 1)
    # pcDV = 1 + (DV - 1) (PRED_bin - 1) / (PRED - 1)
    by_hand = np.array([1 + 2 * 3 / 1, 1 + 5 * 3 / 3, 1 + 1 * 1.25 / 0.5, 1 + 3 * 3 / 4, 1 + 1.4 * 1.25 / 2])
    np.testing.assert_allclose(by_hand, [7.0, 6.0, 3.5, 3.25, 1.875])
    np.testing.assert_allclose(result.points.DV, by_hand)  # s1 t1, s2 t1, s2 t4, s3 t1, s3 t4
    np.testing.assert_array_equal(result.points.bin, [0, 0, 1, 0, 1])
    t = result.table.set_index("bin")
    assert t.n_obs.tolist() == [3, 2]
    for j, kept in ((0, by_hand[[0, 1, 3]]), (1, by_hand[[2, 4]])):
        for p, name in zip((0.05, 0.5, 0.95), PI_NAMES):
            assert t.loc[j, f"obs_{name}"] == pytest.approx(np.quantile(kept, p))
            assert t.loc[j, f"sim_{name}_hi"] == pytest.approx(np.quantile(kept, p))  # no 1e6 in the bands
    assert result.settings["n_excluded"] == 1 and result.settings["lower_bound"] == 1.0
    assert result.excluded[["ID", "TIME", "DV", "PRED"]].values.tolist() == [[1, 4.0, 0.8, 1.0]]
    note = "1 of 6 observations with PRED <= 1 excluded from the prediction correction"
    assert result.settings["exclusion_note"] == note
    assert note in result.figure._suptitle.get_text()
    # the default lb = 0 excludes nothing here; the plain VPC never excludes
    for kwargs in ({"pred_corr": True}, {"lower_bound": 1.0}):
        other = vpc(pc_model, replicates=_replicates(sim, PC_PRED), **kwargs)
        assert other.settings["n_excluded"] == 0 and other.excluded.empty and len(other.points) == 6
        assert "excluded" not in other.figure._suptitle.get_text()


def test_pcvpc_refuses_when_every_pred_is_at_or_below_the_lower_bound(pc_model):
    reps = _replicates(np.tile(PC_DV, (5, 1)), PC_PRED)
    with pytest.raises(bpk.BayesPKError, match=r"PRED > lower bound 5 .* all 6 observations have PRED <= 5: "
                                               r"nothing is left to plot; lower the lower bound"):
        vpc(pc_model, pred_corr=True, lower_bound=5.0, replicates=reps)  # the largest PRED is exactly 5
    with pytest.raises(bpk.BayesPKError, match=r"all 6 observations have PRED <= 0 \(PRED 0: no drug yet, e\.g\. "
                                               r"at or before the first dose\)"):
        vpc(pc_model, pred_corr=True, replicates=_replicates(np.tile(PC_DV, (5, 1)), np.zeros(6)))
    with pytest.raises(bpk.BayesPKError, match="lower_bound must be a finite number"):
        vpc(pc_model, pred_corr=True, lower_bound=float("nan"), replicates=reps)


@pytest.fixture(scope="module")
def eight_subjects():
    rng = np.random.default_rng(4)
    dv = np.round(rng.lognormal(0, 0.5, (8, 2)) * [5.0, 1.0], 3)
    data = _dataset({i + 1: [(1.0, dv[i, 0]), (4.0, dv[i, 1])] for i in range(8)})
    return bpk.PopulationModel(IV_SPEC, data), dv


def test_constant_simulations_give_bands_equal_to_them(eight_subjects):
    model, _ = eight_subjects
    sim = np.tile([7.0, 2.0], 8)  # every replicate: 7 at t = 1, 2 at t = 4
    table = vpc(model, replicates=_replicates(np.tile(sim, (30, 1)))).table
    assert table.n_obs.tolist() == [8, 8]
    for name in PI_NAMES:
        for stat in ("median", "lo", "hi"):
            np.testing.assert_allclose(table[f"sim_{name}_{stat}"], [7.0, 2.0])


def test_observed_and_simulated_percentiles_by_hand(eight_subjects):
    model, dv = eight_subjects
    rng = np.random.default_rng(5)
    sim = rng.lognormal(0, 0.5, (200, 16)) * np.tile([5.0, 1.0], 8)
    for ci, pi in [(0.9, (0.05, 0.5, 0.95)), (0.5, (0.1, 0.5, 0.9))]:
        result = vpc(model, replicates=_replicates(sim), ci=ci, pi=pi)
        table = result.table
        assert result.settings["n_rep"] == 200 and result.settings["kind"] == "prior"
        for j in (0, 1):
            row = table[table.bin == j].iloc[0]
            assert row.t_lo == [1.0, 2.5][j] and row.t_hi == [2.5, 4.0][j] and row.t_mid == [1.0, 4.0][j]
            sim_bin = sim[:, j::2]
            for p in pi:
                name = f"p{100 * p:g}"
                assert row[f"obs_{name}"] == pytest.approx(np.quantile(dv[:, j], p))
                per_rep = np.quantile(sim_bin, p, axis=1)
                assert row[f"sim_{name}_median"] == pytest.approx(np.median(per_rep))
                assert row[f"sim_{name}_lo"] == pytest.approx(np.quantile(per_rep, (1 - ci) / 2))
                assert row[f"sim_{name}_hi"] == pytest.approx(np.quantile(per_rep, 1 - (1 - ci) / 2))
                assert row[f"sim_{name}_lo"] <= row[f"sim_{name}_median"] <= row[f"sim_{name}_hi"]
        assert "obs_frac_blq" not in table.columns  # no BLQ data, no LLOQ


def test_vpc_argument_errors(eight_subjects):
    model, _ = eight_subjects
    reps = _replicates(np.ones((5, 16)))
    for bad in (dict(ci=1.0), dict(ci=0.0), dict(pi=(0.05, 1.0)), dict(pi=(0.0, 0.5))):
        with pytest.raises(bpk.BayesPKError, match="probabilities"):
            vpc(model, replicates=reps, **bad)
    with pytest.raises(bpk.BayesPKError, match="strat"):
        vpc(model, replicates=reps, strat="AGE")


def test_explicit_edges_in_vpc(eight_subjects):
    model, _ = eight_subjects
    result = vpc(model, replicates=_replicates(np.ones((5, 16))), bins=[0.0, 2.0, 5.0])
    assert result.table.t_lo.tolist() == [0.0, 2.0] and result.table.t_hi.tolist() == [2.0, 5.0]
    assert result.settings["bins"] == [0.0, 2.0, 5.0]


def test_numpy_integer_bins(eight_subjects):
    model, _ = eight_subjects
    result = vpc(model, replicates=_replicates(np.ones((5, 16))), bins=np.int64(2))
    assert len(result.table) == 2


def test_censored_percentiles_by_hand():
    """10 subjects at t = 2 h with 3 BLQ (LLOQ 1): obs p5 unknown (NaN), p50 drawn; BLQ fractions counted."""
    dv = [0.5, 0.6, 0.7, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0, 5.0]  # the first three are BLQ (true values < LLOQ)
    data = _dataset({i + 1: [(2.0, max(y, 1.0))] for i, y in enumerate(dv)})  # BLQ rows: DV = LLOQ
    data["LLOQ"] = np.where(data.EVID == 0, 1.0, np.nan)
    data["BLQ"] = 0
    data.loc[data.EVID == 0, "BLQ"] = [1, 1, 1, 0, 0, 0, 0, 0, 0, 0]
    model = bpk.PopulationModel(IV_SPEC, data)
    # replicate r has r of its 10 values below the LLOQ (r = 0..9), the rest well above
    sim = np.array([[0.5] * r + [3.0] * (10 - r) for r in range(10)])
    result = vpc(model, replicates=_replicates(sim))
    row = result.table.iloc[0]
    assert row.obs_frac_blq == pytest.approx(0.3)
    frac = np.arange(10) / 10
    assert row.sim_frac_blq_median == pytest.approx(np.median(frac))
    assert row.sim_frac_blq_lo == pytest.approx(np.quantile(frac, 0.05))
    assert row.sim_frac_blq_hi == pytest.approx(np.quantile(frac, 0.95))
    assert np.isnan(row.obs_p5)  # below the LLOQ: not drawn
    quantified = np.array(dv[3:])
    # the median sits between the 5th and 6th of 10 sorted values, both quantified
    assert row.obs_p50 == pytest.approx(np.median(np.r_[[-1, -1, -1], quantified]))
    assert row.obs_p95 == pytest.approx(np.quantile(np.r_[[-1, -1, -1], quantified], 0.95))
    assert result.points.BLQ.sum() == 3 and result.points.DV.isna().sum() == 3
    assert (result.points.LLOQ == 1.0).all()
    assert len(result.figure.axes) == 2  # VPC panel + BLQ-fraction panel


def test_bins_are_computed_per_stratum():
    """Group A sampled at 1 and 4 h, group B at 2 and 8 h: each stratum gets its own nominal bins."""
    profiles = {i: [(1.0, 5.0 + i), (4.0, 2.0 + i / 10)] for i in (1, 2, 3)}
    profiles |= {i: [(2.0, 4.0 + i), (8.0, 1.0 + i / 10)] for i in (4, 5, 6, 7)}
    extra = {i: {"GRP": "A" if i <= 3 else "B"} for i in profiles}
    model = bpk.PopulationModel(IV_SPEC, _dataset(profiles, extra))
    result = vpc(model, replicates=_replicates(np.ones((4, 14))), strat="GRP")
    t = result.table
    assert list(pd.unique(t.strat)) == ["A", "B"]
    a, b = t[t.strat == "A"], t[t.strat == "B"]
    assert a.t_mid.tolist() == [1.0, 4.0] and a.t_lo.tolist() == [1.0, 2.5] and a.n_obs.tolist() == [3, 3]
    assert b.t_mid.tolist() == [2.0, 8.0] and b.t_lo.tolist() == [2.0, 5.0] and b.n_obs.tolist() == [4, 4]
    assert len(result.figure.axes) == 2  # one panel per stratum
    assert sorted(ax.get_title() for ax in result.figure.axes) == ["GRP = A", "GRP = B"]


# ====================================================================== simulated studies
ORAL_SPEC = bpk.Spec.from_dict({
    "name": "sim_1cmt_oral",
    "model": {"structure": "1cmt_oral"},
    "parameters": {"CL": {"guess": 4.0}, "V": {"guess": 40.0}, "KA": {"guess": 1.0}},
    "error": {"model": "proportional"},
})  # fmt: skip
ORAL_TRUTH = {"CL": 5.0, "V": 50.0, "KA": 1.2, "omega_CL": 0.3, "omega_V": 0.2, "omega_KA": 0.4,
              "sigma_prop": 0.15}
TIMES = [0.5, 1, 2, 4, 8, 12, 24]
SHORT = dict(draws=300, tune=400, chains=2, seed=1, progress=False)
N_REP = 200


def _fit(spec, data):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # short chains: convergence warnings are expected
        return bpk.fit(bpk.PopulationModel(spec, data), **SHORT)


@pytest.fixture(scope="module")
def calibrated_data():
    """48 subjects, two dose groups (100 / 300 mg, GRP 0/1 alternating), a SEX covariate, 7 samples each."""
    design = study_design(
        48, dose=lambda c: 100.0 if c.GRP == 0 else 300.0, times=TIMES, route="oral", seed=2,
        covariates={"GRP": lambda r, n: np.arange(n) % 2, "SEX": lambda r, n: r.integers(0, 2, n)},
    )  # fmt: skip
    return simulate_observations(ORAL_SPEC, design, ORAL_TRUTH, seed=102)


@pytest.fixture(scope="module")
def calibrated_fit(calibrated_data):
    return _fit(ORAL_SPEC, calibrated_data)


@pytest.fixture(scope="module")
def calibrated_reps(calibrated_fit):
    return simulate_replicates(calibrated_fit, N_REP, seed=3)


@pytest.fixture(scope="module")
def calibrated_vpc(calibrated_fit, calibrated_reps):
    return vpc(calibrated_fit, replicates=calibrated_reps)


# Two-compartment IV bolus truth: a pronounced distribution phase that one compartment cannot follow.
TWO_CMT = dict(CL=3.0, V1=10.0, Q=15.0, V2=50.0, omega_CL=0.3, omega_V1=0.2, sigma_prop=0.1)
TWO_CMT_TIMES = [0.1, 0.25, 0.5, 1, 2, 4, 8, 24]


def two_cmt_iv_bolus(t, dose, cl, v1, q, v2):
    """C(t) = Dose/V1 (A exp(-alpha t) + B exp(-beta t)), from the micro-constants k10, k12, k21."""
    k10, k12, k21 = cl / v1, q / v1, q / v2
    s = k10 + k12 + k21
    alpha = (s + np.sqrt(s * s - 4 * k10 * k21)) / 2
    beta = k10 * k21 / alpha
    a = (alpha - k21) / (alpha - beta)
    b = (k21 - beta) / (alpha - beta)
    return dose / v1 * (a * np.exp(-alpha * t) + b * np.exp(-beta * t))


def test_two_cmt_closed_form():
    # alpha + beta = k10 + k12 + k21, alpha beta = k10 k21, A + B = 1 (C(0) = Dose/V1)
    assert two_cmt_iv_bolus(0.0, 100.0, 3.0, 10.0, 15.0, 50.0) == pytest.approx(10.0)
    t = np.array([0.1, 1.0, 24.0])
    # typical values: alpha = 2.0562, beta = 0.04377, A = 0.8727 (by hand from k10 .3, k12 1.5, k21 .3)
    expected = 10 * (0.872678 * np.exp(-2.056231 * t) + 0.127322 * np.exp(-0.0437694 * t))
    np.testing.assert_allclose(two_cmt_iv_bolus(t, 100.0, 3.0, 10.0, 15.0, 50.0), expected, rtol=1e-5)
    # it solves the amounts' ODEs dA1/dt = -(k10 + k12) A1 + k21 A2, dA2/dt = k12 A1 - k21 A2
    # (fine Euler steps)
    k10, k12, k21 = 0.3, 1.5, 0.3
    a1, a2, dt = 100.0, 0.0, 1e-4
    for _ in range(int(round(1.0 / dt))):
        a1, a2 = a1 + dt * (-(k10 + k12) * a1 + k21 * a2), a2 + dt * (k12 * a1 - k21 * a2)
    assert a1 / 10 == pytest.approx(two_cmt_iv_bolus(1.0, 100.0, 3.0, 10.0, 15.0, 50.0), rel=1e-3)


@pytest.fixture(scope="module")
def misspecified_fit():
    design = study_design(48, dose=100.0, times=TWO_CMT_TIMES, route="iv", seed=5)
    rng = np.random.default_rng(6)
    n = design.ID.nunique()
    eta_cl, eta_v1 = rng.normal(0, TWO_CMT["omega_CL"], n), rng.normal(0, TWO_CMT["omega_V1"], n)
    subject = design.ID.to_numpy().astype(int) - 1
    conc = two_cmt_iv_bolus(design.TIME.to_numpy(), 100.0, TWO_CMT["CL"] * np.exp(eta_cl[subject]),
                            TWO_CMT["V1"] * np.exp(eta_v1[subject]), TWO_CMT["Q"], TWO_CMT["V2"])
    obs = design.EVID == 0
    design.loc[obs, "DV"] = (conc * (1 + TWO_CMT["sigma_prop"] * rng.standard_normal(len(conc))))[obs]
    spec = bpk.Spec.from_dict({"name": "1cmt_on_2cmt_data", "model": {"structure": "1cmt_iv"},
                               "parameters": {"CL": {"guess": 4.0}, "V": {"guess": 40.0}},
                               "error": {"model": "proportional"}})
    return _fit(spec, design)


@pytest.fixture(scope="module")
def misspecified_vpc(misspecified_fit):
    return bpk.vpc(misspecified_fit, n_rep=N_REP, seed=3)


BLQ_LLOQ = 0.13


@pytest.fixture(scope="module")
def blq_data():
    design = study_design(48, dose=100.0, times=TIMES, route="oral", seed=11)
    return simulate_observations(ORAL_SPEC, design, ORAL_TRUTH, seed=12, lloq=BLQ_LLOQ)


@pytest.fixture(scope="module")
def blq_vpc(blq_data):
    return bpk.vpc(_fit(ORAL_SPEC, blq_data), n_rep=N_REP, seed=3)


# ---------------------------------------------------------------- calibration vs misspecification
def test_calibrated_model_passes_the_vpc(calibrated_vpc):
    """Correctly specified model: each observed percentile lies in its 90% band in ~90% of cells.

    21 cells (7 bins x 3 percentiles), correlated; seeds 1-4 of this design gave 0.95-1.0.
    A calibrated model passes 0.75 comfortably."""
    table = calibrated_vpc.table
    assert len(table) == 7 and table.n_obs.tolist() == [48] * 7
    frac = np.nanmean(inside_fraction(table))
    assert frac >= 0.75, table
    assert np.nanmean(inside_fraction(table)[1]) >= 6 / 7  # the median is the best-determined percentile
    for name in PI_NAMES:
        assert (table[f"sim_{name}_lo"] <= table[f"sim_{name}_median"]).all()
        assert (table[f"sim_{name}_median"] <= table[f"sim_{name}_hi"]).all()
    assert (table.sim_p5_median < table.sim_p50_median).all()
    assert (table.sim_p50_median < table.sim_p95_median).all()


def test_calibrated_pcvpc_and_reproducibility(calibrated_fit, calibrated_reps, calibrated_vpc):
    pc = vpc(calibrated_fit, replicates=calibrated_reps, pred_corr=True)
    assert pc.table.shape == calibrated_vpc.table.shape
    assert np.nanmean(inside_fraction(pc.table)) >= 0.75, pc.table
    # two dose groups: prediction correction normalises the 300 mg profiles to the bin's median PRED,
    # so the pc observed spread is smaller than the raw one (dose explains much of the raw variability)
    raw_width = (calibrated_vpc.table.obs_p95 - calibrated_vpc.table.obs_p5) / calibrated_vpc.table.obs_p50
    pc_width = (pc.table.obs_p95 - pc.table.obs_p5) / pc.table.obs_p50
    assert (pc_width < raw_width).all()
    # bpk.vpc(fit, n_rep, seed) is vpc() of simulate_replicates(fit, n_rep, seed)
    again = bpk.vpc(calibrated_fit, n_rep=N_REP, seed=3)
    pd.testing.assert_frame_equal(again.table, calibrated_vpc.table)
    assert again.settings["kind"] == "posterior" and again.settings["n_rep"] == N_REP
    fig, table = again  # unpacks as figure, table
    assert table is again.table


def test_replicates_layout(calibrated_fit, calibrated_reps, calibrated_data):
    n_obs = int((calibrated_data.EVID == 0).sum())
    assert set(calibrated_reps.data_vars) == {"DV_sim", "IPRED", "PRED"}
    for v in ("DV_sim", "IPRED", "PRED"):
        assert calibrated_reps[v].dims == ("rep", "obs") and calibrated_reps[v].shape == (N_REP, n_obs)
    # new subjects: IPRED differs from PRED; DV_sim scatters around IPRED with the proportional error
    ipred, dv = calibrated_reps["IPRED"].values, calibrated_reps["DV_sim"].values
    assert np.std(np.log(ipred / calibrated_reps["PRED"].values)) > 0.2
    ratio = dv / ipred - 1
    assert 0.12 < np.std(ratio) < 0.18  # sigma_prop ~ 0.15
    # the replicates are not the fitted subjects: their etas are drawn anew
    fitted = calibrated_fit.predict(draws=None)["IPRED"].median(("chain", "draw")).values
    assert np.median(np.abs(np.log(np.median(ipred, axis=0) / fitted))) > 0.05


def test_misspecified_model_fails_the_vpc(calibrated_vpc, misspecified_vpc):
    """One compartment fitted to biexponential data: the VPC shows it numerically."""
    calibrated = np.nanmean(inside_fraction(calibrated_vpc.table))
    table = misspecified_vpc.table
    misspecified = np.nanmean(inside_fraction(table))
    print(f"inside fraction: calibrated {calibrated:.2f}, misspecified {misspecified:.2f}")
    assert len(table) == len(TWO_CMT_TIMES)
    assert misspecified < 0.6, table
    assert calibrated - misspecified > 0.3
    # the distribution phase: early observed medians lie above the simulated band
    early = table[table.t_mid <= 0.25]
    assert len(early) == 2
    assert (early.obs_p50 > early.sim_p50_hi).all(), early


# ---------------------------------------------------------------- censoring
def test_censored_vpc(blq_data, blq_vpc):
    obs = blq_data[blq_data.EVID == 0]
    late = obs[obs.TIME == 24]
    assert 0.2 <= late.BLQ.mean() <= 0.3 and obs[obs.TIME < 24].BLQ.sum() == 0  # the design of this test
    table = blq_vpc.table
    for col in ("obs_frac_blq", "sim_frac_blq_median", "sim_frac_blq_lo", "sim_frac_blq_hi"):
        assert col in table.columns
    last = table.iloc[-1]
    assert last.t_mid == 24 and last.obs_frac_blq == pytest.approx(late.BLQ.mean())
    assert last.sim_frac_blq_lo <= last.obs_frac_blq <= last.sim_frac_blq_hi
    assert last.sim_frac_blq_lo > 0.05  # the model predicts BLQ values there
    assert (table.obs_frac_blq >= table.sim_frac_blq_lo).all()
    assert (table.obs_frac_blq <= table.sim_frac_blq_hi).all()
    assert (table.obs_frac_blq.iloc[:-1] == 0).all()
    # observed percentiles below the LLOQ are not drawn: > 5% BLQ in the last bin -> p5 unknown
    assert np.isnan(last.obs_p5) and np.isnan(last.sim_p5_median)
    assert last.obs_p50 >= BLQ_LLOQ and last.obs_p95 >= BLQ_LLOQ
    assert table.obs_p5.iloc[:-1].notna().all()
    assert np.nanmean(inside_fraction(table)) >= 0.75, table
    pts = blq_vpc.points
    assert pts.BLQ.sum() == int(obs.BLQ.sum())
    assert pts.DV[pts.BLQ].isna().all() and pts.DV[~pts.BLQ].notna().all()
    assert np.allclose(pts.LLOQ, BLQ_LLOQ)
    assert len(blq_vpc.figure.axes) == 2


def test_simulated_blq_data_can_be_fitted():
    """Regression: simulate_observations(lloq=...) left CENS = 0 next to BLQ = 1 (DataError when fitted)."""
    design = study_design(6, dose=100.0, times=TIMES, route="oral", seed=11)
    data = simulate_observations(ORAL_SPEC, design, ORAL_TRUTH, seed=12, lloq=0.5)
    assert data.BLQ.sum() > 0
    np.testing.assert_array_equal(data.CENS, data.BLQ)
    model = bpk.PopulationModel(ORAL_SPEC, data)
    assert model.design.obs_cens.sum() == data.BLQ.sum()


# ---------------------------------------------------------------- stratification
def test_stratified_by_dose(calibrated_fit, calibrated_reps):
    result = vpc(calibrated_fit, replicates=calibrated_reps, strat="dose", log_y=True)
    t = result.table
    assert sorted(pd.unique(t.strat)) == [100.0, 300.0]
    for level in (100.0, 300.0):
        s = t[t.strat == level]
        assert s.bin.tolist() == list(range(7)) and (s.n_obs == 24).all()
    assert t.n_obs.sum() == 48 * 7
    assert len(result.figure.axes) == 2 and all(ax.get_yscale() == "log" for ax in result.figure.axes)
    # linear kinetics: the simulated median profile of the 300 mg group is ~3x the 100 mg one
    ratio = t[t.strat == 300.0].sim_p50_median.to_numpy() / t[t.strat == 100.0].sim_p50_median.to_numpy()
    assert np.all((ratio > 2.4) & (ratio < 3.6)), ratio
    assert np.nanmean(inside_fraction(t)) >= 0.75, t


def test_stratified_by_covariate(calibrated_fit, calibrated_reps, calibrated_data):
    result = vpc(calibrated_fit, replicates=calibrated_reps, strat="SEX")
    t = result.table
    n_sex = calibrated_data.groupby("ID").SEX.first().value_counts()
    assert sorted(pd.unique(t.strat)) == [0, 1]
    for level in (0, 1):
        assert (t[t.strat == level].n_obs == n_sex[level]).all()
    assert len(result.figure.axes) == 2 and result.figure.axes[0].get_yscale() == "linear"
    assert result.settings["strat"] == "SEX"
    with pytest.raises(bpk.BayesPKError, match="strat: no column 'AGE'"):
        vpc(calibrated_fit, replicates=calibrated_reps, strat="AGE")


# ---------------------------------------------------------------- prior predictive check
def test_prior_predictive_check(calibrated_data, calibrated_vpc):
    model = bpk.PopulationModel(ORAL_SPEC, calibrated_data)
    result = bpk.vpc(model, n_rep=50)
    assert result.settings["kind"] == "prior" and result.settings["n_rep"] == 50
    assert result.table.shape == calibrated_vpc.table.shape
    assert list(result.table.columns) == list(calibrated_vpc.table.columns)
    pd.testing.assert_frame_equal(result.table[["bin", "t_lo", "t_hi", "n_obs", "obs_p50"]],
                                  calibrated_vpc.table[["bin", "t_lo", "t_hi", "n_obs", "obs_p50"]])
    assert "prior predictive" in result.figure.get_suptitle()
    # priors are much wider than the posterior
    prior_width = (result.table.sim_p50_hi - result.table.sim_p50_lo).median()
    post_width = (calibrated_vpc.table.sim_p50_hi - calibrated_vpc.table.sim_p50_lo).median()
    assert prior_width > 3 * post_width


# ====================================================================== issue 16.3: x axis, LLOQ, support, labels
def _multiple_dose_data() -> pd.DataFrame:
    """Three subjects, 100 mg IV doses with ADDL repeats; the hand-computed TAD of each observation in TAD_HAND.

    1: dose at 0 with II 12, ADDL 3 (doses 0, 12, 24, 36) and an extra dose record at 40.
    2: an observation before the first dose, then a dose at 1 (II 24, ADDL 1: 1, 25) followed by an
       observation at the same time 1 (the dose record comes first in the file: it is seen).
    3: dose at 0 with II 24, ADDL 5, a reset (EVID 3) at 30 clears the doses (and cancels the repeats at 48,
       72, ...): no dose is in effect after it."""
    def dose(sid, t, ii=0.0, addl=0, evid=1):
        return dict(ID=sid, TIME=t, AMT=100.0 if evid != 3 else np.nan, DV=np.nan, EVID=evid, MDV=1, CMT=1,
                    II=ii, ADDL=addl)

    def ob(sid, t, y):
        return dict(ID=sid, TIME=t, AMT=np.nan, DV=y, EVID=0, MDV=0, CMT=1, II=0.0, ADDL=0)

    rows = [dose(1, 0.0, 12.0, 3), ob(1, 2.0, 4.0), ob(1, 12.0, 1.5), ob(1, 30.0, 3.0), ob(1, 38.0, 4.5),
            dose(1, 40.0), ob(1, 50.0, 3.5),
            ob(2, 0.5, 0.2), dose(2, 1.0, 24.0, 1), ob(2, 1.0, 5.0), ob(2, 30.0, 2.0),
            dose(3, 0.0, 24.0, 5), ob(3, 26.0, 4.0), dose(3, 30.0, evid=3), ob(3, 50.0, 0.5)]
    return pd.DataFrame(rows)


# observation order: s1 at 2, 12, 30, 38, 50; s2 at 0.5, 1, 30; s3 at 26, 50
TIME_HAND = np.array([2.0, 12.0, 30.0, 38.0, 50.0, 0.5, 1.0, 30.0, 26.0, 50.0])
TAD_HAND = np.array([
    2.0,   # 2 - 0
    12.0,  # the ADDL repeat at 12 comes after the observation at 12: last dose 0
    6.0,   # 30 - 24
    2.0,   # 38 - 36 (last repeat)
    10.0,  # 50 - 40 (extra dose record; the repeats ended at 36)
    0.5,   # before the first dose: the time itself
    0.0,   # dose record at 1 placed before the observation at 1
    5.0,   # 30 - 25 (the one repeat)
    2.0,   # 26 - 24
    50.0,  # the reset (EVID 3) at 30 clears every earlier dose: none in effect, so the time itself
])  # fmt: skip


# additive error: subject 2's pre-dose sample and subject 3's sample after the reset have prediction 0
IV_ADDITIVE = bpk.Spec.from_dict({
    "model": {"structure": "1cmt_iv"},
    "parameters": {"CL": {"guess": 4.0}, "V": {"guess": 40.0}},
    "error": {"model": "additive"},
})  # fmt: skip


@pytest.fixture(scope="module")
def multiple_dose_model():
    return bpk.PopulationModel(IV_ADDITIVE, _multiple_dose_data())


def test_time_after_dose_by_hand(multiple_dose_model):
    obs = observation_table(multiple_dose_model)
    np.testing.assert_array_equal(obs.TIME, TIME_HAND)
    design = multiple_dose_model.design
    tad = pd.Series(design.last_dose()[0], index=design.obs_row)
    np.testing.assert_allclose(obs.ROW.map(tad), TAD_HAND)
    assert len(tad) == len(TIME_HAND)  # observation records only
    # the VPC carries it: points.x is TAD, points.TIME the time
    result = vpc(multiple_dose_model, x="TAD", replicates=_replicates(np.tile(obs.DV, (5, 1))))
    np.testing.assert_allclose(result.points.x, TAD_HAND)
    np.testing.assert_allclose(result.points.TIME, TIME_HAND)
    assert result.settings["x"] == "TAD"
    assert result.figure.axes[0].get_xlabel() == "time after dose"
    # the default x is TIME, unchanged
    plain = vpc(multiple_dose_model, replicates=_replicates(np.tile(obs.DV, (5, 1))))
    np.testing.assert_allclose(plain.points.x, TIME_HAND)
    assert plain.settings["x"] == "TIME" and plain.figure.axes[0].get_xlabel() == "time"


def test_binning_on_tad(multiple_dose_model):
    obs = observation_table(multiple_dose_model)
    reps = _replicates(np.tile(obs.DV, (5, 1)))
    result = vpc(multiple_dose_model, x="tad", bins=[0.0, 3.0, 8.0, 60.0], replicates=reps)
    t = result.table
    assert t.t_lo.tolist() == [0.0, 3.0, 8.0] and t.t_hi.tolist() == [3.0, 8.0, 60.0]
    # TAD 0, 0.5, 2, 2, 2 | 5, 6 | 10, 12, 50 (on TIME the bins would hold 2, 0.5, 1 | none | the rest)
    assert t.n_obs.tolist() == [5, 2, 3]
    np.testing.assert_allclose(t.t_mid, [np.median([0, 0.5, 2, 2, 2]), 5.5, 12.0])
    expected_bin = np.searchsorted([3.0, 8.0], TAD_HAND, side="right")
    np.testing.assert_array_equal(result.points.bin, expected_bin)
    np.testing.assert_allclose(t.obs_p50, [np.median(obs.DV[expected_bin == j]) for j in range(3)])
    # vertical bin lines at the TAD edges
    edges = sorted({ln.get_xdata()[0] for ln in result.figure.axes[0].get_lines()
                    if len(set(ln.get_xdata())) == 1 and len(ln.get_xdata()) == 2})
    assert edges == [0.0, 3.0, 8.0, 60.0]
    # auto binning on TAD: at most 10 distinct values, one bin each
    auto = vpc(multiple_dose_model, x="TAD", replicates=reps).table
    assert auto.t_mid.tolist() == sorted(set(TAD_HAND))


def test_x_any_numeric_column_and_errors(multiple_dose_model):
    data = _multiple_dose_data()
    data["WT"] = data.ID.map({1: 60.0, 2: 75.5, 3: 90.0})
    data["SITE"] = data.ID.map({1: "a", 2: "b", 3: "c"})
    model = bpk.PopulationModel(IV_ADDITIVE, data)
    reps = _replicates(np.ones((5, 10)))
    result = vpc(model, x="WT", replicates=reps)
    assert result.table.t_mid.tolist() == [60.0, 75.5, 90.0] and result.table.n_obs.tolist() == [5, 3, 2]
    assert result.figure.axes[0].get_xlabel() == "WT"
    with pytest.raises(bpk.BayesPKError, match=r"x: no column 'NOPE'; use TIME, TAD"):
        vpc(model, x="NOPE", replicates=reps)
    with pytest.raises(bpk.BayesPKError, match=r"x: column SITE must be a finite number .* 'a'"):
        vpc(model, x="SITE", replicates=reps)


def test_lloq_line_when_no_observation_is_censored(eight_subjects):
    model, dv = eight_subjects
    data = model.data.table.drop(columns="ROW").copy()
    data["LLOQ"] = np.where(data.EVID == 0, 0.05, np.nan)  # an LLOQ column, every observation above it
    with_lloq = bpk.PopulationModel(IV_SPEC, data)
    assert observation_table(with_lloq).CENS.eq(0).all()
    for kwargs in ({}, {"log_y": True}, {"x": "TAD"}):
        result = vpc(with_lloq, replicates=_replicates(np.tile([7.0, 2.0], (10, 8))), **kwargs)
        lines = [ln for ln in result.figure.axes[0].get_lines() if ln.get_label().startswith("LLOQ")]
        assert len(lines) == 1, kwargs
        assert lines[0].get_label() == "LLOQ (0.05)"
        np.testing.assert_allclose(lines[0].get_ydata(), [0.05, 0.05])
        assert "LLOQ (0.05)" in [t.get_text() for t in result.figure.axes[0].get_legend().get_texts()]
        assert (result.table.obs_frac_blq == 0).all()
    # no LLOQ in the data: no line
    plain = vpc(model, replicates=_replicates(np.tile([7.0, 2.0], (10, 8))))
    assert not [ln for ln in plain.figure.axes[0].get_lines() if ln.get_label().startswith("LLOQ")]


def _band_y(ax) -> np.ndarray:
    """The y of every vertex of the filled bands of a panel."""
    return np.concatenate([p.vertices[:, 1] for c in ax.collections for p in c.get_paths()])


def test_no_negative_band_on_a_log_axis_with_additive_error(eight_subjects):
    """Additive error: simulated values scatter below 0. The support rule: percentiles of max(sim, 0)."""
    model, _ = eight_subjects
    rng = np.random.default_rng(7)
    sim = np.tile([5.0, 1.0], 8) + rng.normal(0.0, 1.5, (100, 16))  # additive sd 1.5: many values < 0 at t = 4
    assert np.median(np.quantile(sim[:, 1::2], 0.05, axis=1)) < 0  # the raw 5th percentile is negative at t = 4
    result = vpc(model, replicates=_replicates(sim), log_y=True)
    t = result.table
    assert result.settings["dv_floor"] == 0.0
    band = t[[c for c in t.columns if c.startswith("sim_")]].to_numpy(float)
    assert (band >= 0).all()
    late = t[t.bin == 1].iloc[0]
    assert late.sim_p5_lo == 0 and late.sim_p5_median == 0
    # the percentiles are those of max(sim, 0)
    per_rep = np.quantile(np.maximum(sim[:, 1::2], 0), 0.95, axis=1)
    assert late.sim_p95_median == pytest.approx(np.median(per_rep))
    ax = result.figure.axes[0]
    assert ax.get_yscale() == "log"
    y = _band_y(ax)
    assert (y[np.isfinite(y)] > 0).all()  # nothing at or below 0 is handed to the log axis
    for ln in ax.get_lines():
        if len(set(ln.get_xdata())) == 1 and len(ln.get_xdata()) == 2:
            continue  # a bin edge (axvline: y in axes coordinates)
        yd = np.asarray(ln.get_ydata(), float)
        assert (yd[np.isfinite(yd)] > 0).all(), ln.get_label()
    marked = [ln for ln in ax.get_lines() if ln.get_label() == "<= 0, drawn at the axis floor"]
    assert len(marked) == 1 and marked[0].get_xdata().tolist() == [4.0]
    floor = marked[0].get_ydata()[0]
    assert 0 < floor < t[[c for c in t.columns if c.startswith(("sim_", "obs_p"))]].where(lambda v: v > 0).min().min()
    # linear axis: the same clipped table, no markers; dv_floor=None keeps the raw negative percentiles
    lin = vpc(model, replicates=_replicates(sim))
    pd.testing.assert_frame_equal(lin.table, t)
    assert (_band_y(lin.figure.axes[0]) >= 0).all()
    raw = vpc(model, replicates=_replicates(sim), dv_floor=None).table
    assert raw.sim_p5_median.iloc[1] < 0 and raw.sim_p5_median.iloc[1] == pytest.approx(
        np.median(np.quantile(sim[:, 1::2], 0.05, axis=1)))
    # a log-transformed DV has no floor at 0 ("auto"); an explicit floor applies to observed and simulated
    logged = vpc(model, replicates=_replicates(sim), log_dv=True)
    assert logged.settings["dv_floor"] is None and logged.table.sim_p5_median.iloc[1] < 0
    floored = vpc(model, replicates=_replicates(sim), dv_floor=1.0).table
    assert (floored.filter(like="sim_").to_numpy() >= 1.0).all() and (floored.filter(like="obs_").to_numpy() >= 1).all()
    with pytest.raises(bpk.BayesPKError, match="dv_floor"):
        vpc(model, replicates=_replicates(sim), dv_floor="zero")


def test_strat_labels_in_titles():
    profiles = {i: [(1.0, 5.0 + i), (4.0, 2.0 + i / 10)] for i in range(1, 7)}
    extra = {i: {"APGRLOW": float(i > 3)} for i in profiles}  # read as 0.0 / 1.0
    model = bpk.PopulationModel(IV_SPEC, _dataset(profiles, extra))
    reps = _replicates(np.ones((4, 12)))
    default = vpc(model, replicates=reps, strat="APGRLOW")
    assert [ax.get_title() for ax in default.figure.axes] == ["APGRLOW = 0", "APGRLOW = 1"]  # not "0.0"
    for labels in ({0: "APGR >= 5", 1: "APGR < 5"}, {"0": "APGR >= 5", "1.0": "APGR < 5"},
                   {0.0: "APGR >= 5", 1: "APGR < 5"}):
        result = vpc(model, replicates=reps, strat="APGRLOW", strat_labels=labels)
        assert [ax.get_title() for ax in result.figure.axes] == ["APGR >= 5", "APGR < 5"], labels
        assert result.figure.get_suptitle() == default.figure.get_suptitle()  # the figure title is the model's
        assert sorted(result.settings["strat_titles"].values()) == ["APGR < 5", "APGR >= 5"]
    partial = vpc(model, replicates=reps, strat="APGRLOW", strat_labels={1: "APGR < 5"})
    assert [ax.get_title() for ax in partial.figure.axes] == ["APGRLOW = 0", "APGR < 5"]
    with pytest.raises(bpk.BayesPKError, match=r"strat_labels: 2 is not a value of APGRLOW \(its values: 0, 1\)"):
        vpc(model, replicates=reps, strat="APGRLOW", strat_labels={2: "x"})
    with pytest.raises(bpk.BayesPKError, match="strat_labels needs strat"):
        vpc(model, replicates=reps, strat_labels={0: "x"})
    # a non-integer value is written exactly
    extra = {i: {"WT": [1.25, 1234567.5][i > 3]} for i in profiles}
    wt = vpc(bpk.PopulationModel(IV_SPEC, _dataset(profiles, extra)), replicates=reps, strat="WT")
    assert [ax.get_title() for ax in wt.figure.axes] == ["WT = 1.25", "WT = 1234567.5"]


def test_cli_strat_labels_parsing():
    from bayespk.cli import _strat_labels

    assert _strat_labels("0=APGR >= 5;1=APGR < 5") == {"0": "APGR >= 5", "1": "APGR < 5"}
    assert _strat_labels(" 0 = low ; 1 = high ;") == {"0": "low", "1": "high"}
    assert _strat_labels(None) is None
    with pytest.raises(bpk.BayesPKError, match="VALUE=LABEL"):
        _strat_labels("0:low")


PHENO = MODELS / "phenobarbital_1cmt_iv.toml"


@pytest.fixture(scope="module")
def pheno_run(tmp_path_factory):
    """A tiny fit of the bundled phenobarbital model (multiple doses): 2 chains x 20 draws after 20 tune."""
    return tiny_fit(PHENO, tmp_path_factory.mktemp("pheno_tad") / "pheno")


def test_cli_vpc_x_tad(pheno_run, tmp_path, capsys):
    from bayespk.cli import main
    from bayespk.data.design import Design

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["vpc", str(pheno_run), "--out", str(tmp_path / "tad"), "--x", "TAD", "--n-rep", "20",
                     "--strat", "APGRLOW", "--strat-labels", "0=APGR >= 5;1=APGR < 5", "--log-y"]) == 0
        assert main(["vpc", str(pheno_run), "--out", str(tmp_path / "time"), "--n-rep", "20"]) == 0
    tad_table = pd.read_csv(tmp_path / "tad" / "vpc.csv")
    time_table = pd.read_csv(tmp_path / "time" / "vpc.csv")
    data = bpk.read_nonmem(str(ROOT / "bayespk/data/datasets/phenobarbital.csv"))
    design = Design.from_dataset(data, None)
    tad = pd.Series(design.last_dose()[0], index=design.obs_row)
    obs_time = data.table.set_index("ROW").TIME[tad.index]
    # bins span the TAD values (phenobarbital: maintenance doses about every 12 h, 87% of samples at
    # TAD <= 12.5 h; one washout sample, ROW 268, at 389.8 h, 258 h after its last dose), not the times
    assert tad_table.t_hi.max() == pytest.approx(tad.max()) and tad_table.t_lo.min() == pytest.approx(tad.min())
    assert time_table.t_hi.max() == pytest.approx(obs_time.max())
    assert (tad <= obs_time).all() and np.median(tad) < np.median(obs_time) / 5 and (tad <= 12.5).mean() > 0.8
    assert tad[268] == pytest.approx(389.8 - 131.8)  # ROW 268: the last dose record of its subject is at 131.8
    assert tad_table.n_obs.sum() == len(tad) and sorted(tad_table.strat.unique()) == [0, 1]
    assert (tad_table.filter(like="sim_").fillna(0) >= 0).all().all()
    assert (tmp_path / "tad" / "vpc.png").stat().st_size > 0
    capsys.readouterr()
    # user errors: exit status 2, one message, nothing simulated
    for argv, message in ((["--x", "NOPE"], "x: no column 'NOPE'; use TIME, TAD"),
                          (["--strat", "APGRLOW", "--strat-labels", "0:low"], "expected VALUE=LABEL pairs"),
                          (["--strat", "APGRLOW", "--strat-labels", "7=x"], "'7' is not a value of APGRLOW"),
                          (["--strat-labels", "0=x"], "strat_labels needs strat")):
        assert main(["vpc", str(pheno_run), "--out", str(tmp_path / "bad"), "--n-rep", "5", *argv]) == 2, argv
        assert message in capsys.readouterr().err, argv
    with pytest.raises(SystemExit):
        main(["vpc", "--help"])
    help_text = capsys.readouterr().out
    assert "--x TIME|TAD|COLUMN" in help_text and "--strat-labels" in help_text and "TAD (time after" in help_text


# ----------------------------------------------------------------------------- PD observations
PKPD_TRUTH = {"CL": 5.0, "V": 50.0, "KA": 1.0, "E0": 20.0, "EMAX": 80.0, "EC50": 3.0, "omega_CL": 0.3,
              "omega_V": 0.2, "omega_KA": 0.3, "omega_E0": 0.1, "omega_EC50": 0.3, "sigma_prop": 0.15,
              "pd_sigma_add": 4.0}  # models/data/make_pkpd_emax.py, which simulated the bundled study


def _inside_share(result) -> float:
    t = result.table
    return float(((t.obs_p50 >= t.sim_p50_lo) & (t.obs_p50 <= t.sim_p50_hi)).mean())


def test_vpc_of_the_pd_observations_at_the_truth_and_at_a_wrong_emax():
    """The bundled PK/PD study against its own truth: the observed median response lies in the simulated
    interval in most bins; with EMAX halved it does not (the PD observations, not the concentrations)."""
    from bayespk.errors import BayesPKError
    from bayespk.simulate.draws import fit_from_draws

    spec = MODELS / "pkpd_emax_simulated.toml"
    right = fit_from_draws(spec, None, {k: np.full(50, v) for k, v in PKPD_TRUTH.items()})
    wrong = fit_from_draws(spec, None, {k: np.full(50, v) for k, v in (PKPD_TRUTH | {"EMAX": 40.0}).items()})
    obs = observation_table(right, pd_obs=True)
    assert len(obs) == 440 and obs.DV.min() > 10  # the responses (E0 20 + effect), not concentrations
    good = vpc(right, pd_obs=True, n_rep=100, strat="DOSE", seed=1)
    bad = vpc(wrong, pd_obs=True, n_rep=100, strat="DOSE", seed=1)
    assert good.table.n_obs.sum() == 440 and good.settings["pd_obs"] is True
    assert "PD response" in good.settings["y_label"]
    assert _inside_share(good) >= 0.8, good.table
    assert _inside_share(bad) <= 0.5, bad.table
    pk = vpc(right, n_rep=20, seed=1)  # the default: the concentrations of the same subjects and times
    assert len(pk.points) == 440 and pk.points.DV.median() < 10 < good.points.DV.median()
    plt.close("all")
    pk_only = fit_from_draws(MODELS / "theophylline_1cmt_oral.toml", None,
                             {"CL": [2.8], "V": [32.0], "KA": [1.5], "omega_CL": [0.3], "omega_V": [0.2],
                              "omega_KA": [0.5], "sigma_add": [0.5]})
    with pytest.raises(BayesPKError, match="no PD observations"):
        vpc(pk_only, pd_obs=True, n_rep=5)


def test_npde_and_gof_of_the_pd_observations():
    """NPDE of the bundled PK/PD study's responses are N(0, 1) at its truth and not with EMAX halved; the GOF
    residuals of the PD observations use the [pd_error] (additive, SD 4)."""
    from bayespk.evaluate.gof import gof
    from bayespk.evaluate.npde import npde
    from bayespk.simulate.draws import fit_from_draws

    spec = MODELS / "pkpd_emax_simulated.toml"
    right = fit_from_draws(spec, None, {k: np.full(50, v) for k, v in PKPD_TRUTH.items()})
    wrong = fit_from_draws(spec, None, {k: np.full(50, v) for k, v in (PKPD_TRUTH | {"EMAX": 40.0}).items()})
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # subjects whose simulated covariance is singular
        good = npde(right, n_sim=200, seed=2, pd_obs=True)
        bad = npde(wrong, n_sim=200, seed=2, pd_obs=True)
    assert len(good.table) == 440 and good.table.DV.min() > 10 and good.settings["pd_obs"] is True
    assert good.tests.loc["global", "p_value"] > 0.01, good.tests
    assert bad.tests.loc["global", "p_value"] < 1e-6, bad.tests
    g = gof(right, draws=20, pd_obs=True)
    t = g.table
    assert len(t) == 440
    np.testing.assert_allclose(t.IWRES, (t.DV - t.IPRED) / PKPD_TRUTH["pd_sigma_add"], rtol=1e-10)
    assert "PD observations" in g.figure._suptitle.get_text()
    plt.close("all")
