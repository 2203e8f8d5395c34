"""NCA: exact checks on analytic profiles, conventions, Theoph against WinNonlin, model exposures, CLI."""

import math
import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import MODELS

import bayespk as bpk
from bayespk.cli import main
from bayespk.errors import BayesPKError, DataError
from bayespk.nca import NCA_COLUMNS, compare_exposures, exposure_table, nca

K, C0, DOSE = 0.2, 10.0, 100.0


def frame(subjects) -> pd.DataFrame:
    """NONMEM records from {ID: (doses, observations)}; doses are (time, amt[, cmt, addl, ii]),
    observations (time, conc[, cmt]) with conc None for BLQ (LLOQ 0.1)."""
    rows = []
    for sid, (doses, obs) in subjects.items():
        recs = []
        for d in doses:
            t, amt, cmt, addl, ii = tuple(d) + (1, 0, 0)[len(d) - 2 :]
            recs.append(
                {
                    "ID": sid,
                    "TIME": t,
                    "AMT": amt,
                    "DV": np.nan,
                    "EVID": 1,
                    "MDV": 1,
                    "CMT": cmt,
                    "ADDL": addl,
                    "II": ii,
                    "CENS": 0,
                    "LLOQ": np.nan,
                    "_order": 0,
                }
            )
        for o in obs:
            t, c, cmt = (*o, 1) if len(o) == 2 else o
            recs.append(
                {
                    "ID": sid,
                    "TIME": t,
                    "AMT": np.nan,
                    "DV": np.nan if c is None else c,
                    "EVID": 0,
                    "MDV": 0,
                    "CMT": cmt,
                    "ADDL": 0,
                    "II": 0,
                    "CENS": int(c is None),
                    "LLOQ": 0.1 if c is None else np.nan,
                    "_order": 1,
                }
            )
        rows += sorted(recs, key=lambda r: (r["TIME"], r["_order"]))
    return pd.DataFrame(rows).drop(columns="_order")


def one(table: pd.DataFrame, sid=1) -> pd.Series:
    return table.set_index("ID").loc[sid]


def auc_rule(t, c, log_down=True):
    """Independent AUC: log trapezoid where C falls and both > 0, else linear."""
    total = 0.0
    for t1, t2, c1, c2 in zip(t[:-1], t[1:], c[:-1], c[1:]):
        if log_down and c2 < c1 and c2 > 0:
            total += (t2 - t1) * (c1 - c2) / math.log(c1 / c2)
        else:
            total += (t2 - t1) * (c1 + c2) / 2
    return total


# ---------------------------------------------------------------- analytic profiles
def test_mono_exponential_iv_bolus_is_exact():
    t = np.arange(0, 24.01, 0.5)
    table = nca(frame({1: ([(0, DOSE)], [(ti, C0 * math.exp(-K * ti)) for ti in t])}))
    assert list(table.columns) == NCA_COLUMNS
    r = one(table)
    assert r.route == "iv-bolus" and r.reason == "" and r.n_obs == len(t)
    assert r.Cmax == C0 and r.Tmax == 0 and r.C0 == C0
    assert r.Tlast == 24 and r.Clast == pytest.approx(C0 * math.exp(-K * 24), rel=1e-14)
    assert abs(r.lambda_z - K) < 1e-10
    # every fit is exact (adjusted R^2 = 1 to rounding): the most points, all after Tmax = 0
    assert r.lambda_z_n_points == len(t) - 1 and r.lambda_z_t_first == 0.5 and r.lambda_z_t_last == 24
    assert r.lambda_z_adj_r2 == pytest.approx(1, abs=1e-12)
    assert abs(r.t_half - math.log(2) / K) < 1e-9
    # log-down trapezoids are exact for exponential segments
    assert abs(r.AUC0_t - C0 / K * (1 - math.exp(-K * 24))) < 1e-10
    assert abs(r.AUC0_inf - C0 / K) < 1e-10
    assert r.AUC_pct_extrap == pytest.approx(100 * math.exp(-K * 24), rel=1e-9)
    assert r.CL_over_F == pytest.approx(DOSE / 50, rel=1e-12)
    assert r.Vz_over_F == pytest.approx(DOSE / (K * 50), rel=1e-12)
    # linear trapezoids overestimate a convex decline
    lin = one(nca(frame({1: ([(0, DOSE)], [(ti, C0 * math.exp(-K * ti)) for ti in t])}), auc_method="linear"))
    assert lin.AUC0_t > r.AUC0_t + 1e-3
    assert abs(lin.AUC0_t - np.trapezoid(C0 * np.exp(-K * t), t)) < 1e-10


def test_iv_bolus_back_extrapolates_c0_and_stays_exact():
    t = np.arange(1, 24.01, 1.0)  # no sample at the dose time
    r = one(nca(frame({1: ([(0, DOSE)], [(ti, C0 * math.exp(-K * ti)) for ti in t])})))
    assert r.route == "iv-bolus" and abs(r.C0 - C0) < 1e-12
    assert r.Tmax == 1  # C0 enters AUC, not Cmax
    assert abs(r.AUC0_t - C0 / K * (1 - math.exp(-K * 24))) < 1e-10
    # the same data declared extravascular starts from 0 at the dose time (linear first segment)
    ev = one(
        nca(frame({1: ([(0, DOSE)], [(ti, C0 * math.exp(-K * ti)) for ti in t])}), route="extravascular")
    )
    assert ev.C0 == 0
    assert ev.AUC0_t == pytest.approx(
        r.AUC0_t - (C0 / K * (1 - math.exp(-K))) + C0 * math.exp(-K) / 2, rel=1e-12
    )


def test_linear_up_log_down_segments():
    t = [0, 1, 2, 4, 6, 8, 12, 16]
    c = [0, 4, 8, 6, 6.5, 3, 1.5, 0.75]  # the rise after a fall (4 h -> 6 h) is linear
    r = one(nca(frame({1: ([(0, DOSE, 1)], [(ti, ci, 2) for ti, ci in zip(t, c)])})))
    assert r.route == "extravascular" and r.Cmax == 8 and r.Tmax == 2
    assert r.AUC0_t == pytest.approx(auc_rule(t, c), rel=1e-13)
    up = (0 + 4) / 2 + (4 + 8) / 2 + 2 * (6 + 6.5) / 2
    down = (
        2 * 2 / math.log(8 / 6) + 2 * 3.5 / math.log(6.5 / 3) + 4 * 1.5 / math.log(2) + 4 * 0.75 / math.log(2)
    )
    expected = up + down
    assert r.AUC0_t == pytest.approx(expected, rel=1e-13)
    lin = one(nca(frame({1: ([(0, DOSE, 1)], [(ti, ci, 2) for ti, ci in zip(t, c)])}), auc_method="linear"))
    assert lin.AUC0_t == pytest.approx(np.trapezoid(c, t), rel=1e-13)
    # the last three points halve every 4 h exactly: lambda_z = ln2/4 from them
    assert r.lambda_z_n_points == 3 and r.lambda_z == pytest.approx(math.log(2) / 4, rel=1e-12)
    assert r.AUC0_inf == pytest.approx(r.AUC0_t + 0.75 / (math.log(2) / 4), rel=1e-13)


def _terminal(eps):
    t = [0, 1, 2, 4, 6, 8, 10]
    c = [0, 12] + [C0 * math.exp(-K * ti) for ti in t[2:]]
    c[2] *= 1 + eps  # perturb the first point after Tmax: fits with more points lose a little adjusted R^2
    return frame({1: ([(0, DOSE, 1)], [(ti, ci, 2) for ti, ci in zip(t, c)])})


def test_lambda_z_prefers_more_points_within_tolerance():
    data = _terminal(1e-3)
    # last 3 and 4 points are exact (adj R^2 = 1); with the perturbed point 1 - adj R^2 is ~1e-6 < 1e-4
    r = one(nca(data))
    assert r.lambda_z_n_points == 5 and r.lambda_z_t_first == 2 and r.lambda_z_adj_r2 < 1 - 1e-9
    assert r.lambda_z_adj_r2 > 1 - 1e-4
    # without tolerance the exact fits win, and among the exact ones (a tie) the one with more points
    exact = one(nca(data, adj_r2_tol=0))
    assert exact.lambda_z_n_points == 4 and abs(exact.lambda_z - K) < 1e-10
    # a larger perturbation falls outside the tolerance
    assert one(nca(_terminal(0.2))).lambda_z_n_points == 4
    # fixed choices: the last n points, or a time window (manual selection)
    assert one(nca(data, lambda_z=3)).lambda_z_n_points == 3
    manual = one(nca(data, lambda_z={1: (4, 10)}))
    assert manual.lambda_z_n_points == 4 and manual.lambda_z_t_first == 4 and abs(manual.lambda_z - K) < 1e-10
    none = one(nca(data, lambda_z=None))
    assert math.isnan(none.lambda_z) and math.isnan(none.AUC0_inf) and not math.isnan(none.AUC0_t)


def test_blq_before_tmax_is_zero_after_tmax_is_dropped():
    obs = [(0.5, None), (1, 2.0), (2, 8.0), (4, 4.0), (6, None), (8, 1.0), (12, 0.5), (16, None), (24, None)]
    data = frame({1: ([(0, DOSE, 1)], [(t, c, 2) for t, c in obs])})
    r = one(nca(data))
    assert r.n_obs == 6 and r.Tlast == 12 and r.Clast == 0.5 and r.Cmax == 8
    # (0, 0) added at the dose time, BLQ at 0.5 as 0, BLQ at 6 bridged, trailing BLQ dropped
    assert r.AUC0_t == pytest.approx(auc_rule([0, 0.5, 1, 2, 4, 8, 12], [0, 0, 2, 8, 4, 1, 0.5]), rel=1e-13)
    assert r.lambda_z_n_points == 3 and r.lambda_z_t_first == 4  # 4, 8, 12 after Tmax
    zero = one(nca(data, blq="zero"))  # the BLQ at 6 is 0: linear down to it and up again
    assert zero.n_obs == 9 and zero.Tlast == 12
    assert zero.AUC0_t == pytest.approx(
        auc_rule([0, 0.5, 1, 2, 4, 6, 8, 12], [0, 0, 2, 8, 4, 0, 1, 0.5]), rel=1e-13
    )
    drop = one(nca(data, blq="drop"))
    assert drop.n_obs == 5
    assert drop.AUC0_t == pytest.approx(auc_rule([0, 1, 2, 4, 8, 12], [0, 2, 8, 4, 1, 0.5]), rel=1e-13)


def test_too_few_points_after_tmax_and_other_reasons():
    data = frame({
        1: ([(0, DOSE, 1)], [(1, 2.0, 2), (2, 5.0, 2), (4, 4.0, 2), (8, 2.0, 2)]),  # 2 points after Tmax
        2: ([(0, DOSE, 1)], [(1, None, 2), (2, None, 2)]),  # nothing quantified
        3: ([], [(1, 3.0, 2)]),  # no dose
        4: ([(0, DOSE, 1)], [(1, 2.0, 2), (2, 5.0, 2), (4, 6.0, 2), (8, 7.0, 2)]),  # still rising
    })  # fmt: skip
    t = nca(data).set_index("ID")
    r = t.loc[1]
    assert r.AUC0_t == pytest.approx(auc_rule([0, 1, 2, 4, 8], [0, 2, 5, 4, 2]), rel=1e-13)
    for col in ("lambda_z", "t_half", "AUC0_inf", "AUC_pct_extrap", "CL_over_F", "Vz_over_F"):
        assert math.isnan(r[col])
    assert r.lambda_z_n_points == 0 and "2 positive concentrations after Tmax, 3 needed" in r.reason
    assert "no quantifiable concentration" in t.loc[2].reason and math.isnan(t.loc[2].Cmax)
    assert t.loc[3].reason == "no dose record"
    assert t.loc[4].Tmax == 8 and "0 positive concentrations after Tmax" in t.loc[4].reason
    assert t.reason.ne("").all()


def test_multiple_doses_analyse_the_first_interval():
    obs = [(0.5, 2.0), (1, 4.0), (4, 3.0), (8, 2.0), (12, 1.5), (13, 5.0), (20, 3.0)]
    data = frame(
        {1: ([(0, DOSE, 1, 1, 12)], [(t, c, 2) for t, c in obs])}
    )  # ADDL=1, II=12: doses at 0 and 12
    r = one(nca(data))
    assert r.interval_end == 12 and r.n_obs == 5 and r.Tlast == 12  # the trough at 12 belongs to the interval
    assert r.AUC0_t == pytest.approx(auc_rule([0, 0.5, 1, 4, 8, 12], [0, 2, 4, 3, 2, 1.5]), rel=1e-13)
    second = one(nca(data, dose_time=12))
    assert second.dose_time == 12 and math.isnan(second.interval_end)
    assert second.C0 == 1.5 and second.Cmax == 5 and second.Tmax == 1  # times after that dose
    # the bundled repeated-dose dataset: each subject analysed over its first interval (3 have one dose)
    pheno = nca(bpk.datasets.load("phenobarbital"))
    assert len(pheno) == 59 and (pheno.route == "iv-bolus").all() and pheno.interval_end.isna().sum() == 3
    assert (pheno.reason != "").all()  # too sparse for a terminal slope within the first interval


def test_bad_input_is_refused():
    data = frame({1: ([(0, DOSE, 1)], [(1, 2.0, 2), (2, 5.0, 2), (4, 4.0, 2)])})
    dup = pd.concat([data, data.iloc[[2]]]).sort_values(["ID", "TIME"], kind="stable")
    with pytest.raises(DataError, match="two observations at TIME 2"):
        nca(dup)
    for bad in (
        {"min_points": 2},
        {"blq": "half"},
        {"auc_method": "log"},
        {"route": "oral"},
        {"lambda_z": "best"},
        {"lambda_z": {1: "x"}},
        {"adj_r2_tol": -1},
    ):
        with pytest.raises(BayesPKError):
            nca(data, **bad)


# ---------------------------------------------------------------- Theoph
# Phoenix WinNonlin 8, linear-up/log-down, Theoph (dose in mg there; AUC and lambda_z do not depend on it):
# https://github.com/asancpt/NonCompart-tests, Final_Parameters_Pivoted_Theoph_Log.csv
WINNONLIN = {  # ID: (lambda_z, n points, first point, AUClast, AUCINF_obs)
    1: (0.048456997, 3, 9.05, 147.2347485, 214.9236316),
    2: (0.104086444, 4, 7.03, 88.73127549, 97.37793463),
    3: (0.102444314, 3, 9.00, 95.87819779, 106.1276685),
}


def test_theophylline_matches_observed_maxima_and_winnonlin():
    ds = bpk.datasets.load("theophylline")
    table = nca(ds).set_index("ID")
    obs = ds.observations
    idx = obs.groupby("ID").DV.idxmax()
    assert np.array_equal(table.Cmax.to_numpy(), obs.DV[idx].to_numpy())
    assert np.array_equal(table.Tmax.to_numpy(), obs.TIME[idx].to_numpy())
    assert (table.route == "extravascular").all() and (table.reason == "").all()
    assert table.loc[1, "C0"] == 0.74  # the pre-dose value is used as observed
    for sid, (lz, n, t1, auclast, aucinf) in WINNONLIN.items():
        r = table.loc[sid]
        assert (
            r.lambda_z == pytest.approx(lz, rel=1e-7)
            and r.lambda_z_n_points == n
            and r.lambda_z_t_first == t1
        )
        assert r.AUC0_t == pytest.approx(auclast, rel=1e-8) and r.AUC0_inf == pytest.approx(aucinf, rel=1e-8)
    assert np.allclose(table.AUC0_inf, table.AUC0_t + table.Clast / table.lambda_z)
    assert np.allclose(table.CL_over_F, table.dose / table.AUC0_inf)
    assert (table.AUC0_inf > table.AUC0_t).all() and (table.lambda_z_adj_r2 > 0.98).all()


@pytest.fixture(scope="module")
def theo_fit():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        model = bpk.PopulationModel(MODELS / "theophylline_1cmt_oral.toml")
        return bpk.fit(model, draws=150, tune=200, chains=2, seed=7, progress=False)


def test_model_exposures_agree_with_nca(theo_fit):
    obs = nca(bpk.datasets.load("theophylline"))
    model = exposure_table(theo_fit)
    assert list(model.ID) == list(obs.ID) and (model.reason == "").all()
    for q in ("Cmax", "Tmax", "AUC0_t", "AUC0_inf"):
        assert (model[f"{q}_lower"] <= model[f"{q}_median"]).all() and (
            model[f"{q}_median"] <= model[f"{q}_upper"]
        ).all()
    side = compare_exposures(obs, model)
    assert list(side.columns) == [
        "ID",
        "quantity",
        "nca",
        "model_median",
        "model_lower",
        "model_upper",
        "ratio",
        "nca_in_interval",
    ]
    assert len(side) == 4 * 12
    by = {q: g for q, g in side.groupby("quantity")}
    assert ((by["Cmax"].ratio - 1).abs() < 0.2).sum() >= 10
    assert ((by["AUC0_t"].ratio - 1).abs() < 0.1).sum() >= 11
    assert ((by["AUC0_inf"].ratio - 1).abs() < 0.2).sum() >= 10
    assert by["AUC0_t"].nca_in_interval.sum() >= 10
    few = exposure_table(theo_fit, ids=[2, 5], prediction="PRED", draws=50)
    assert list(few.ID) == [2, 5] and few.Cmax_median.notna().all()
    with pytest.raises(BayesPKError):
        exposure_table(theo_fit, ids=[99])


# ---------------------------------------------------------------- CLI
def test_cli_nca(tmp_path, capsys):
    out = tmp_path / "res" / "nca.csv"
    assert main(["nca", str(bpk.datasets.path("theophylline")), "--out", str(out)]) == 0
    table = pd.read_csv(out, keep_default_na=False, na_values=[""])
    assert list(table.columns) == NCA_COLUMNS and len(table) == 12
    assert table.AUC0_inf.iloc[0] == pytest.approx(WINNONLIN[1][4], rel=1e-8)
    assert "AUC0_inf" in capsys.readouterr().out

    bad = tmp_path / "bad.csv"
    bad.write_text("ID,TIME,AMT\n1,0,100\n")
    assert main(["nca", str(bad)]) == 2
    assert main(["nca", str(tmp_path / "missing.csv")]) == 2
    assert main(["nca", str(bpk.datasets.path("theophylline")), "--min-points", "2"]) == 2
    err = capsys.readouterr().err
    assert "bayespk nca: error:" in err and "min_points" in err
