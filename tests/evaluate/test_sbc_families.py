"""Simulation-based calibration on every model family (issue #15): closed-form popPK, a user-written ODE
model, CAR-T piecewise kinetics and a direct-effect Emax PK/PD (exposure-response) model, plus a
deliberately mis-specified fit (BLQ rows discarded, M1) that SBC must catch.

Each family is defined here on a small design with proper, moderately informative priors (SBC draws its
truths from the priors, so a vague prior makes extreme data sets that say nothing about calibration).
The fast tests run a few replicates with short chains and check the plumbing: every population parameter
gets ranks, the PD output is simulated from the Emax formula, bad input is refused. The verdicts
(chi-square p, ECDF band) need 50-100 replicates: ``benchmarks/bench_sbc.py`` runs them
(``benchmarks/results/sbc.md``); the BLQ pair runs here as a slow test.
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from bayespk.errors import DataError, SpecError
from bayespk.evaluate.sbc import _limits, _model, _replicate_table, _simulate, sbc, simulation_estimation
from bayespk.simulate.study import study_design

MODELS = Path(__file__).resolve().parents[2] / "models"


def _ln(median: float, sigma: float) -> dict:
    return {"dist": "LogNormal", "mu": float(np.log(median)), "sigma": sigma}


def _hn(sigma: float) -> dict:
    return {"dist": "HalfNormal", "sigma": sigma}


# ---------------------------------------------------------------------- closed-form popPK (1-cmt oral)
CLOSED_FORM = {
    "name": "sbc_1cmt_oral",
    "model": {"structure": "1cmt_oral"},
    "parameters": {
        "CL": {"typical": _ln(2.0, 0.3), "iiv": _hn(0.3)},
        "V": {"typical": _ln(20.0, 0.3), "iiv": _hn(0.3)},
        "KA": {"typical": _ln(1.0, 0.3), "iiv": False},
    },
    "error": {"model": "proportional", "sigma_prop": _hn(0.2)},
}


def closed_form_design(n: int = 12) -> pd.DataFrame:
    d = study_design(n, dose=100.0, times=np.array([0.5, 1, 2, 4, 8, 12, 24]), route="oral", seed=3)
    d["DV"] = np.where(d.EVID == 0, 1.0, np.nan)  # placeholders: SBC uses the design only
    return d


# ---------------------------------------------------------------------- user-written ODE (Michaelis-Menten)
def ode_spec() -> dict:
    """models/mm_1cmt_oral.toml with its equations and solver settings, priors narrowed to a log-SD of 0.3
    around the published truth (the file's log-SD 1 priors draw data sets from 1/7 to 7 times the truth), and
    IIV on CL only (non-centred): each ODE fit takes a minute or more on one core, so the model is kept to
    seven population parameters."""
    spec = tomllib.loads((MODELS / "mm_1cmt_oral.toml").read_text(encoding="utf-8"))
    spec.pop("data"), spec.pop("sampler")
    spec["name"] = "sbc_mm_1cmt_oral"
    truth = {"KA": 1.0, "V": 50.0, "CL": 2.0, "VMAX": 10.0, "KM": 2.0}
    for name, value in truth.items():
        spec["parameters"][name] = {"typical": _ln(value, 0.3), "iiv": _hn(0.3) if name == "CL" else False}
    spec["error"]["sigma_prop"] = _hn(0.2)
    return spec


def ode_design(per_dose: int = 2) -> pd.DataFrame:
    """The first ``per_dose`` subjects of each dose level (25, 200, 1000 mg) of models/data/mm_1cmt_oral.csv."""
    d = pd.read_csv(MODELS / "data" / "mm_1cmt_oral.csv", na_values=".")
    first = d[d.EVID == 1].groupby("AMT").ID.apply(lambda s: list(s)[:per_dose])
    keep = [i for ids in first for i in ids]
    d = d[d.ID.isin(keep)].reset_index(drop=True)
    d["DV"] = np.where(d.EVID == 0, 1.0, np.nan)
    return d


# ---------------------------------------------------------------------- CAR-T piecewise (Stein 2019)
CART = {
    "name": "sbc_cart_piecewise",
    "model": {"structure": "cart_piecewise"},
    "parameters": {  # centred on the tisagenlecleucel-like truth of models/cart_tisagenlecleucel_like.toml
        "CMAX": {"typical": _ln(24000.0, 0.5), "iiv": _hn(0.5)},
        "FX": {"typical": _ln(3900.0, 0.5), "iiv": False},
        "TMAX": {"typical": _ln(9.3, 0.15), "iiv": False},
        "ALPHA": {"typical": _ln(0.16, 0.3), "iiv": _hn(0.3)},
        "FB": {"typical": {"dist": "Beta", "alpha": 4.0, "beta": 500.0}, "iiv": False},
        "BETA": {"typical": _ln(0.0032, 0.3), "iiv": False},
    },
    "error": {"model": "lognormal", "blq": "M3", "sigma_log": _hn(0.5)},
}


def cart_design(n: int = 15) -> pd.DataFrame:
    """The qPCR samples (LLOQ 35 copies/ug) of the first ``n`` patients of models/data/cart_simulated.csv."""
    d = pd.read_csv(MODELS / "data" / "cart_simulated.csv", na_values=".")
    d = d[d.ID.isin(sorted(d.ID.unique())[:n]) & ((d.EVID == 1) | (d.ASSAY == 1))]
    d = d[["ID", "TIME", "AMT", "DV", "EVID", "MDV", "CMT", "LLOQ"]].reset_index(drop=True)
    d["DV"] = np.where(d.EVID == 0, 1000.0, np.nan)
    return d


# ---------------------------------------------------------------------- exposure-response: direct Emax PK/PD
PKPD = {
    "name": "sbc_pkpd_emax",
    "model": {"structure": "1cmt_oral", "pd": "emax", "pd_observations": {"column": "DVID", "value": 2}},
    "parameters": {  # centred on the truth of models/pkpd_emax_simulated.toml
        "CL": {"typical": _ln(5.0, 0.3), "iiv": _hn(0.3)},
        "V": {"typical": _ln(50.0, 0.3), "iiv": False},
        "KA": {"typical": _ln(1.0, 0.3), "iiv": False},
        "E0": {"typical": _ln(20.0, 0.2), "iiv": _hn(0.2)},
        "EMAX": {"typical": _ln(80.0, 0.3), "iiv": False},
        "EC50": {"typical": _ln(3.0, 0.4), "iiv": False},
    },
    "error": {"model": "proportional", "sigma_prop": _hn(0.2)},
    "pd_error": {"model": "additive", "sigma_add": _hn(5.0)},
}
PKPD_TIMES = np.array([0.5, 1, 2, 4, 8, 24])
PKPD_DOSES = np.array([10.0, 30.0, 100.0, 300.0])


def pkpd_design(n: int = 12) -> pd.DataFrame:
    """``n`` subjects at 10, 30, 100, 300 mg by mouth, PK (DVID 1) and PD (DVID 2) at the same times."""
    d = study_design(n, dose=100.0, times=PKPD_TIMES, route="oral", seed=3)
    doses = d.EVID == 1
    d.loc[doses, "AMT"] = PKPD_DOSES[(d.loc[doses, "ID"].to_numpy() - 1) % len(PKPD_DOSES)]
    d["DVID"] = np.where(d.EVID == 0, 1, 0)
    pd_rows = d[d.EVID == 0].assign(DVID=2)
    d = pd.concat([d, pd_rows]).sort_values(["ID", "TIME", "DVID"], kind="stable").reset_index(drop=True)
    d["DV"] = np.where(d.EVID == 0, 1.0, np.nan)
    return d


# ---------------------------------------------------------------------- BLQ mis-specification (M3 vs M1)
BLQ_LLOQ = 1.0
BLQ_M3 = {
    "name": "sbc_blq_m3",
    "model": {"structure": "1cmt_iv"},
    "parameters": {
        "CL": {"typical": _ln(2.0, 0.3), "iiv": _hn(0.3)},
        "V": {"typical": _ln(20.0, 0.3), "iiv": _hn(0.3)},
    },
    "error": {"model": "proportional", "blq": "M3", "sigma_prop": _hn(0.3)},
}
BLQ_M1 = {**BLQ_M3, "name": "sbc_blq_m1_drop", "error": {**BLQ_M3["error"], "blq": "drop"}}


def blq_design(n: int = 20) -> pd.DataFrame:
    """100 mg IV, 8 samples to 24 h against an LLOQ of 1 mg/L: at the prior median (CL 2, V 20,
    C(t) = 5 exp(-0.1 t)) the sample at 16 h sits at the LLOQ and those at 20 and 24 h below it; over the
    prior about a third of the observations are BLQ. The late samples near the LLOQ are where dropping the
    BLQ rows (M1) selects the high values: at CL 2, V 20 and 20 subjects the M1 posterior median of CL lies
    about 2 posterior SDs below the truth (4 test fits), the M3 one within 1."""
    d = study_design(n, dose=100.0, times=np.array([0.5, 2, 4, 8, 12, 16, 20, 24]), route="iv", seed=4)
    d["DV"] = np.where(d.EVID == 0, 1.0, np.nan)
    d["LLOQ"] = np.where(d.EVID == 0, BLQ_LLOQ, np.nan)
    return d


FAMILIES = {
    "closed_form_1cmt_oral": (CLOSED_FORM, closed_form_design),
    "ode_michaelis_menten": (ode_spec(), ode_design),
    "cart_piecewise": (CART, cart_design),
    "pkpd_direct_emax": (PKPD, pkpd_design),
}


# ====================================================================== fast tests
@pytest.mark.parametrize("family", list(FAMILIES))
def test_every_population_parameter_is_drawn_and_simulated(family):
    """Prior draws of every population parameter, one simulated value per observation (PK and PD)."""
    spec, design = FAMILIES[family]
    model = _model(spec, design())
    truths, dv = _simulate(model, None, 8, seed=2)
    assert list(truths.columns) == model.spec.population_parameters
    n_obs = model.design.n_obs + (model.pd_design.n_obs if model.has_pd else 0)
    assert dv.shape == (8, n_obs) and np.isfinite(dv).all()
    assert _limits(model).shape == (n_obs,)


@pytest.mark.parametrize("family", ["cart_piecewise", "pkpd_direct_emax"])
def test_fast_sbc_ranks_every_population_parameter(family, tmp_path):
    """Three replicates with short chains through the Dask runner: ranks 0..L for every population
    parameter (the verdicts need the full runs of benchmarks/bench_sbc.py). The closed form runs so in
    tests/evaluate/test_sbc.py; the ODE family's fits take minutes, so its replicates are checked above and its
    calibration in the benchmark only."""
    spec, design = FAMILIES[family]
    n, draws, tune, L = 3, 60, 80, 19
    r = sbc(spec, design(), n=n, out=tmp_path, seed=1, chains=1, draws=draws, tune=tune, thin_to=L, workers=1,
            progress=False)
    names = _model(spec, design()).spec.population_parameters
    assert not r.failed, r.failed
    assert list(r.ranks.columns) == names and len(r.ranks) == n
    assert r.ranks.to_numpy().min() >= 0 and r.ranks.to_numpy().max() <= L
    assert set(r.tests().parameter) == set(names)
    assert (tmp_path / "sbc_ecdf.png").is_file()


def _one_cmt_oral(t, dose, cl, v, ka):
    k = cl / v
    return dose * ka / (v * (ka - k)) * (np.exp(-k * t) - np.exp(-ka * t))


def test_pd_output_follows_the_emax_formula_at_fixed_values():
    """With negligible IIV and residual error the simulated PD rows equal E0 + EMAX C / (EC50 + C), C from
    the one-compartment oral solution written out by hand; the PK rows equal C."""
    truth = {"CL": 4.0, "V": 40.0, "KA": 1.5, "E0": 15.0, "EMAX": 90.0, "EC50": 2.5, "omega_CL": 1e-8,
             "omega_E0": 1e-8, "sigma_prop": 1e-8, "pd_sigma_add": 1e-8}
    d = pkpd_design(8)
    model = _model(PKPD, d)
    assert set(truth) == set(model.spec.population_parameters)
    truths, dv = _simulate(model, truth, 2, seed=0)
    n_pk = model.design.n_obs
    dose = d[d.EVID == 1].set_index("ID").AMT
    t_pk = model.design.obs_time
    c_pk = _one_cmt_oral(t_pk, dose.loc[model.design.subject_ids[model.design.obs_subject]].to_numpy(), 4.0, 40.0,
                         1.5)
    p = model.pd_design
    c_pd = _one_cmt_oral(p.obs_time, dose.loc[model.design.subject_ids[p.obs_subject]].to_numpy(), 4.0, 40.0, 1.5)
    emax = 15.0 + 90.0 * c_pd / (2.5 + c_pd)
    np.testing.assert_allclose(dv[:, :n_pk], np.tile(c_pk, (2, 1)), rtol=1e-5)
    np.testing.assert_allclose(dv[:, n_pk:], np.tile(emax, (2, 1)), rtol=1e-5)
    # the replicate table puts them back on the right rows: PK on DVID 1, PD on DVID 2
    table = _replicate_table(model, dv[0], _limits(model))
    obs = table[table.EVID == 0]
    np.testing.assert_allclose(obs[obs.DVID == 2].sort_values(["ID", "TIME"]).DV.to_numpy(),
                               pd.Series(emax, index=pd.MultiIndex.from_arrays(
                                   [model.design.subject_ids[p.obs_subject], p.obs_time])).sort_index().to_numpy(),
                               rtol=1e-5)
    assert (obs.DV[obs.DVID == 1] < 20).all() and (obs.DV[obs.DVID == 2] >= 15.0 - 1e-6).all()


def test_pd_prior_draws_share_the_individual_pk():
    """PK and PD of one replicate come from the same draw: with no residual error the PD rows are the
    Emax function of that replicate's PK rows (no hidden second draw of the PK parameters)."""
    spec = {**PKPD, "error": {"model": "proportional", "sigma_prop": {"dist": "HalfNormal", "sigma": 1e-9}},
            "pd_error": {"model": "additive", "sigma_add": {"dist": "HalfNormal", "sigma": 1e-9}}}
    model = _model(spec, pkpd_design(8))
    truths, dv = _simulate(model, None, 20, seed=4)
    n_pk = model.design.n_obs
    # PK and PD rows are at the same subjects and times in the same order
    assert (model.design.obs_time == model.pd_design.obs_time).all()
    c, e = dv[:, :n_pk], dv[:, n_pk:]
    s = model.design.obs_subject
    for i in range(len(truths)):
        row = truths.iloc[i]
        # E0 varies between subjects (IIV), so compare within a subject, where it cancels:
        # E(t1) - E(t2) = EMAX (C1 / (EC50 + C1) - C2 / (EC50 + C2))
        for k in np.unique(s)[:3]:
            j = np.flatnonzero(s == k)
            drug = row.EMAX * c[i, j] / (row.EC50 + c[i, j])
            np.testing.assert_allclose(np.diff(e[i, j]), np.diff(drug), rtol=1e-4, atol=1e-6)


def test_pd_model_without_pd_rows_is_refused(tmp_path):
    d = pkpd_design(4)
    d = d[d.DVID != 2].reset_index(drop=True)
    with pytest.raises(DataError, match="no observation record has DVID = 2"):
        sbc(PKPD, d, n=2, out=tmp_path)
    with pytest.raises(DataError, match="the dataset has no DVID column"):
        sbc(PKPD, d.drop(columns="DVID"), n=2, out=tmp_path)
    with pytest.raises(DataError, match="no observation record has DVID = 2"):
        simulation_estimation(PKPD, {}, d, n=2, out=tmp_path)


def test_sequential_pkpd_spec_is_refused(tmp_path):
    spec = {**PKPD, "model": {**PKPD["model"], "pk_fit": str(tmp_path / "pk_fit")}}
    with pytest.raises(SpecError, match=r"\[model\] pk_fit \(sequential PK/PD\)"):
        sbc(spec, pkpd_design(4), n=2, out=tmp_path)


def test_blq_replicates_are_flagged_for_both_fits():
    """The design puts a fair share of the observations below the LLOQ; simulated values below it become
    censored rows (DV = LLOQ, CENS = 1) that M3 fits as P(Y < LLOQ) and M1 (``blq = "drop"``) discards."""
    model = _model(BLQ_M3, blq_design())
    truths, dv = _simulate(model, None, 200, seed=3)
    share = float((dv < BLQ_LLOQ).mean())
    assert 0.25 < share < 0.6, share
    table = _replicate_table(model, dv[0], _limits(model))
    obs = table[table.EVID == 0]
    assert ((obs.CENS == 1) == (dv[0] < BLQ_LLOQ)).all() and np.allclose(obs.DV[obs.CENS == 1], BLQ_LLOQ)
    m1 = _model(BLQ_M1, table)
    assert m1.design.n_obs == int((dv[0] >= BLQ_LLOQ).sum())


# ====================================================================== slow: the BLQ mis-specification
@pytest.mark.slow
def test_sbc_catches_a_fit_that_drops_blq_rows(tmp_path):
    """24 replicates simulated with M3 censoring (about a third BLQ): the M3 fit is calibrated, the M1 fit
    (BLQ rows discarded) is not: keeping only the late concentrations above the LLOQ selects the high ones,
    so CL is underestimated (Beal 2001, J Pharmacokinet Pharmacodyn 28:481; Ahn et al. 2008, J Pharmacokinet
    Pharmacodyn 35:401). The M1 fits compile once per number of kept rows (about 5 min on one core in all)."""
    kw = dict(n=24, seed=11, chains=1, draws=400, tune=300, thin_to=39, workers=1, progress=False)
    right = sbc(BLQ_M3, blq_design(), out=tmp_path / "m3", **kw)
    wrong = sbc(BLQ_M3, blq_design(), out=tmp_path / "m1", fit_spec=BLQ_M1, **kw)
    t_right, t_wrong = right.tests().set_index("parameter"), wrong.tests().set_index("parameter")
    assert (t_right.chi2_p > 0.01).all(), t_right
    assert t_wrong.loc["CL", "chi2_p"] < 0.01 and t_wrong.loc["CL", "ecdf_outside_band"], t_wrong
    assert t_wrong.loc["CL", "mean_rank_fraction"] > 0.7  # the truth above most posterior draws: CL too low
