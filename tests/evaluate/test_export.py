"""``bayespk export RUN_DIR --format nonmem``: sdtab, patab and run.ext of a fit (bayespk.evaluate.export)."""

import warnings

import numpy as np
import pandas as pd
import pytest
from conftest import MODELS, tiny_fit

import bayespk as bpk
from bayespk.cli import main
from bayespk.evaluate.export import ESTIMATE, SDTAB_COLUMNS, SE, export_nonmem
from bayespk.evaluate.gof import gof_table

THEO = MODELS / "theophylline_1cmt_oral.toml"
DRAWS = 40  # = every draw of the tiny fit (2 chains x 20): PRED/IPRED medians over all of them
QUICK = ["--draws", str(DRAWS), "--n-sim", "30"]


def read_nm(path) -> pd.DataFrame:
    """A NONMEM table as the README says to read it: skip the TABLE NO. line, whitespace, header."""
    return pd.read_csv(path, sep=r"\s+", skiprows=1)


@pytest.fixture(scope="module")
def theo_run(tmp_path_factory):
    """A tiny fit of the bundled theophylline model (as tests/evaluate/test_report.py's fixture)."""
    return tiny_fit(THEO, tmp_path_factory.mktemp("theo") / "theophylline")


@pytest.fixture(scope="module")
def exported(theo_run):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["export", str(theo_run), "--format", "nonmem", *QUICK]) == 0
    return theo_run / "nonmem"


def test_files_and_layout(exported):
    names = {p.name for p in exported.iterdir()}
    assert names == {"sdtab", "sdtab.csv", "patab", "patab.csv", "run.ext", "ext_names.csv"}
    for name in ("sdtab", "patab", "run.ext"):
        assert (exported / name).read_text().startswith("TABLE NO.")
    sd = read_nm(exported / "sdtab")
    assert list(sd.columns) == SDTAB_COLUMNS
    csv = pd.read_csv(exported / "sdtab.csv")
    assert list(csv.columns) == SDTAB_COLUMNS and len(csv) == len(sd)
    num = [c for c in SDTAB_COLUMNS if c != "ID"]
    np.testing.assert_allclose(sd[num].to_numpy(float), csv[num].to_numpy(float), rtol=1e-8, equal_nan=True)
    assert (sd.MDV == 0).all() and (sd.DVID == 1).all() and (sd.CENS == 0).all()


def test_sdtab_values_against_the_fit(theo_run, exported):
    fit = bpk.load(theo_run)
    sd = pd.read_csv(exported / "sdtab.csv")
    const = fit.tree["constant_data"]
    assert len(sd) == const.sizes["obs"]
    assert sd.ID.tolist() == list(const["SUBJECT"].values)
    np.testing.assert_array_equal(sd.TIME, const["TIME"].values)
    np.testing.assert_array_equal(sd.DV, fit.tree["observed_data"]["DV"].values)
    pred = fit.predict(draws=DRAWS)
    np.testing.assert_allclose(sd.PRED, pred["PRED"].median(("chain", "draw")).values, rtol=1e-12)
    np.testing.assert_allclose(sd.IPRED, pred["IPRED"].median(("chain", "draw")).values, rtol=1e-12)
    np.testing.assert_allclose(sd.RES, sd.DV - sd.PRED, rtol=1e-12)
    # IWRES by hand: additive error, SD = posterior median of sigma_add
    assert fit.spec.error.model == "additive"
    sigma = float(fit.posterior["sigma_add"].median())
    i = 5
    assert sd.IWRES[i] == pytest.approx((sd.DV[i] - sd.IPRED[i]) / sigma, rel=1e-10)
    # single oral doses at TIME 0: TAD = TIME
    np.testing.assert_allclose(sd.TAD, sd.TIME)
    assert np.isfinite(sd.EPRED).all() and np.isfinite(sd.ECWRES).all() and np.isfinite(sd.NPDE).all()
    assert abs(sd.NPDE.mean()) < 1.0


def test_patab_etas_parameters_covariates(theo_run, exported):
    fit = bpk.load(theo_run)
    pa = read_nm(exported / "patab")
    ids = list(fit.tree["constant_data"]["ID"].values)
    assert pa.ID.tolist() == ids
    assert list(pa.columns) == ["ID", "ETA_CL", "ETA_V", "ETA_KA", "CL", "V", "KA", "WT"]
    for p in ("CL", "V", "KA"):
        np.testing.assert_allclose(pa[f"ETA_{p}"], fit.posterior[f"eta_{p}"].mean(("chain", "draw")).values,
                                   rtol=1e-7)
        ind = fit.individual_parameters(draws=DRAWS)[p].median(("chain", "draw"))
        np.testing.assert_allclose(pa[p], ind.values, rtol=1e-7)
    records = fit.tree["records"].to_dataset().to_dataframe()
    np.testing.assert_allclose(pa.WT, records.groupby("ID").WT.first().reindex(ids).values)


def test_ext_rows_are_posterior_medians_and_sds(theo_run, exported):
    fit = bpk.load(theo_run)
    ext = read_nm(exported / "run.ext")
    assert ext.ITERATION.tolist() == [ESTIMATE, SE]
    names = pd.read_csv(exported / "ext_names.csv")
    assert list(ext.columns[1:]) == names.column.tolist()
    assert ext.columns[-1] == "OBJ"
    est, se = ext.iloc[0], ext.iloc[1]
    post = fit.posterior
    m = dict(zip(names.parameter, names.column))
    assert [m[p] for p in ("CL", "V", "KA")] == ["THETA1", "THETA2", "THETA3"]
    for p in ("CL", "V", "KA"):
        assert est[m[p]] == pytest.approx(float(post[p].median()), rel=1e-7)
        assert se[m[p]] == pytest.approx(float(post[p].std(ddof=1)), rel=1e-7)
    assert m["omega_CL"] == "OMEGA(1,1)" and m["sigma_add"] == "SIGMA(1,1)"
    assert est["OMEGA(1,1)"] == pytest.approx(float(np.median(post["omega_CL"].values ** 2)), rel=1e-7)
    assert est["OMEGA(2,1)"] == 0
    assert est["SIGMA(1,1)"] == pytest.approx(float(np.median(post["sigma_add"].values ** 2)), rel=1e-7)
    assert se["SIGMA(1,1)"] == pytest.approx(float(np.std(post["sigma_add"].values ** 2, ddof=1)), rel=1e-7)
    ll = fit.log_likelihood()["DV"].sum("obs")
    assert est["OBJ"] == pytest.approx(float((-2 * ll).median()), rel=1e-6)


def test_text_ids_stay_exact_and_no_npde(tmp_path):
    """IDs read as text ("001", and one with a space) come out as written; --no-npde drops the column."""
    data = pd.read_csv(bpk.datasets.path("theophylline"), dtype={"ID": str})
    keep = {"1": "001", "2": "002", "3": "S 3"}
    data = data[data.ID.isin(keep)].assign(ID=lambda d: d.ID.map(keep))
    csv = tmp_path / "theo3.csv"
    data.to_csv(csv, index=False)
    spec = bpk.Spec.from_toml(THEO).with_data(str(csv))
    model = bpk.PopulationModel(spec)
    assert list(model.design.subject_ids) == ["001", "002", "S 3"]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        fit = bpk.fit(model, draws=10, tune=10, chains=1, seed=2, progress=False)
        run = fit.write_run(tmp_path / "run")
        assert main(["export", str(run), "--out", str(tmp_path / "x"), "--no-npde", "--draws", "10",
                     "--n-sim", "20"]) == 0
    sd = pd.read_csv(tmp_path / "x" / "sdtab", sep=r"\s+", skiprows=1, dtype={"ID": str})
    assert "NPDE" not in sd.columns
    assert sd.ID.unique().tolist() == ["001", "002", "S 3"]
    assert '"S 3"' in (tmp_path / "x" / "sdtab").read_text()
    pa = pd.read_csv(tmp_path / "x" / "patab.csv", dtype={"ID": str})
    assert pa.ID.tolist() == ["001", "002", "S 3"]


def test_tad_counts_addl_repeats(tmp_path):
    rows = [  # ID, TIME, AMT, DV, EVID, MDV, CMT, II, ADDL, WT
        (1, 0, 100, ".", 1, 1, 1, 12, 2, 70),  # doses at 0, 12, 24
        (1, 6, ".", 1.0, 0, 0, 2, 0, 0, 70),
        (1, 18, ".", 1.0, 0, 0, 2, 0, 0, 70),
        (1, 30, ".", 1.0, 0, 0, 2, 0, 0, 70),
        (1, 32, 100, ".", 1, 1, 1, 0, 0, 70),
        (1, 40, ".", 1.0, 0, 0, 2, 0, 0, 70),
        (2, 5, 100, ".", 1, 1, 1, 0, 0, 60),
        (2, 7.5, ".", 1.0, 0, 0, 2, 0, 0, 60),
    ]
    csv = tmp_path / "addl.csv"
    pd.DataFrame(rows, columns=["ID", "TIME", "AMT", "DV", "EVID", "MDV", "CMT", "II", "ADDL", "WT"]).to_csv(
        csv, index=False)
    model = bpk.PopulationModel(bpk.Spec.from_toml(THEO).with_data(str(csv)))
    np.testing.assert_allclose(model.design.last_dose()[0], [6, 6, 6, 8, 2.5])


def test_export_function_returns_paths(theo_run, tmp_path):
    fit = bpk.load(theo_run)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        written = export_nonmem(fit, tmp_path / "e", draws=10, n_sim=10, npde=False)
    assert set(written) == {"sdtab", "sdtab.csv", "patab", "patab.csv", "run.ext", "ext_names.csv"}
    assert all(p.is_file() for p in written.values())


@pytest.mark.parametrize("args, message", [
    (["export", "NO_SUCH_RUN"], "not a run directory"),
    (["export", "{run}", "--format", "monolix"], "unknown export format"),
    (["export", "{run}", "--draws", "0"], "--draws must be >= 1"),
    (["export", "{run}", "--n-sim", "1"], "--n-sim must be >= 2"),
])
def test_cli_user_errors_exit_2(theo_run, capsys, args, message):
    rc = main([a.format(run=theo_run) for a in args])
    out, err = capsys.readouterr()
    assert rc == 2
    assert err.startswith("bayespk export: error:") and message in err and "Traceback" not in err


def test_ext_correlated_omegas_and_combined_error():
    """OMEGA(2,1) = omega_CL omega_V corr_CL_V per draw; two SIGMAs with a zero covariance between them."""
    from bayespk.evaluate.export import ext_table

    d = bpk.Spec.from_toml(THEO).to_dict()
    d["iiv"] = {"correlated": ["CL", "V"]}
    d["error"] = {"model": "combined"}
    model = bpk.PopulationModel(bpk.Spec.from_dict(d))
    # prior draws stand in for a posterior (ext_table reads only the posterior and the spec)
    import pymc as pm
    import xarray as xr

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        prior = pm.sample_prior_predictive(draws=30, model=model.build(), random_seed=3)["prior"].to_dataset()
    fit = bpk.Fit(xr.DataTree(children={"posterior": xr.DataTree(prior)}), model.spec, model=model)
    ext, names = ext_table(fit)
    m = dict(zip(names.column, names.parameter))
    assert (m["SIGMA(1,1)"], m["SIGMA(2,2)"], m["OMEGA(2,1)"]) == ("sigma_add", "sigma_prop", "corr_CL_V")
    post = fit.posterior
    cov = (post["omega_CL"] * post["omega_V"] * post["corr_CL_V"]).values
    assert ext["OMEGA(2,1)"][0] == pytest.approx(float(np.median(cov)), rel=1e-10)
    assert ext["SIGMA(2,1)"].tolist() == [0, 0] and ext["OMEGA(3,1)"].tolist() == [0, 0]
    assert ext["SIGMA(2,2)"][0] == pytest.approx(float(np.median(post["sigma_prop"].values ** 2)), rel=1e-10)


def test_pkpd_fit_exports_both_outputs_in_data_order(tmp_path):
    """A PK/PD fit: the PD observations are sdtab rows too (DVID 2, their own PRED/IPRED and [pd_error]
    residuals), PK and PD rows in the order of the data's records."""
    run = tiny_fit(MODELS / "pkpd_emax_simulated.toml", tmp_path / "pkpd")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["export", str(run), "--format", "nonmem", *QUICK]) == 0
    sd = read_nm(run / "nonmem" / "sdtab")
    fit = bpk.load(run)
    records = fit.model.data.table
    observed = records[(records.EVID == 0) & (records.MDV == 0)]
    assert len(sd) == fit.model.design.n_obs + fit.model.pd_design.n_obs == len(observed)
    # one row per observation record, in the data's order
    np.testing.assert_array_equal(sd.ID, observed.ID.to_numpy())
    np.testing.assert_array_equal(sd.TIME, observed.TIME.to_numpy(float))
    np.testing.assert_array_equal(sd.DVID, observed.DVID.to_numpy(int))
    np.testing.assert_allclose(sd.DV, observed.DV.to_numpy(float), rtol=1e-8)
    assert set(sd.DVID) == {1, 2}
    for dvid, pd_obs in ((1, False), (2, True)):
        rows = sd[sd.DVID == dvid]
        want = gof_table(fit, draws=DRAWS, pd_obs=pd_obs)
        np.testing.assert_allclose(rows.PRED, want.PRED, rtol=1e-7)
        np.testing.assert_allclose(rows.IPRED, want.IPRED, rtol=1e-7)
        np.testing.assert_allclose(rows.IWRES, want.IWRES, rtol=1e-6)
        assert np.isfinite(rows.EPRED).all() and np.isfinite(rows.NPDE).all()
    # the PD rows' scale is the effect's, not the concentration's
    assert sd[sd.DVID == 2].EPRED.median() > 5 * sd[sd.DVID == 1].EPRED.median()
