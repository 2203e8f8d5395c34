"""Indomethacin (R datasets::Indometh): the bundled two-compartment fit against the
published nlme bi-exponential fit (full-length chains, about 15 s).

Reference: Pinheiro & Bates (2000), Mixed-Effects Models in S and S-PLUS, section 6.2,
``fm1Indom.nlme`` (SSbiexp, diagonal random effects on A1, lrc1, A2, lrc2, additive
error, ML): fixed effects A1 2.828, lrc1 0.773, A2 0.461, lrc2 -1.344 (residual SD
0.0815, log-likelihood 54.59). These values were reproduced by re-running the
Lindstrom-Bates algorithm of nlme (PNLS + LME steps) on the bundled CSV in Python
(A1 2.8277, lrc1 0.7729, A2 0.4606, lrc2 -1.3459, random-effect SDs 0.571, 0.158,
0.111, ~0, residual SD 0.0815, log-likelihood 54.588), which also gives approximate
standard errors of 0.26 (A1, 9%), 0.11 (lrc1: alpha +-11%), 0.11 (A2, 24%) and 0.22
(lrc2: beta +-22%). For a 25 mg bolus C(t) = A1 exp(-alpha t) + A2 exp(-beta t) with
alpha = exp(lrc1), beta = exp(lrc2), so V1 = 25/(A1 + A2) and CL = 25/(A1/alpha + A2/beta).

Tolerances on posterior medians of the typical subject (eta = 0):

* CL and V1 within 20%: they are fixed by the AUC and the back-extrapolated C(0),
  which every reasonable fit of these data shares;
* A1 and alpha within 30% (about 2.5 reference standard errors);
* A2 and beta within 50% (about 2 reference standard errors): the nlme fit has
  additive error (SD 0.08 mg/L against terminal concentrations of 0.05-0.25 mg/L),
  so its terminal phase is weakly determined, while the combined error here weighs
  those points by their relative precision. beta is in addition checked against the
  data directly: the median of the six subjects' log-linear terminal slopes (3-8 h).
"""

import numpy as np
import pytest
from conftest import MODELS

import bayespk as bpk
from bayespk.data import bundled
from bayespk.structural import two_compartment_macro

pytestmark = pytest.mark.slow

DOSE = 25.0  # mg
NLME = {"A1": 2.828, "alpha": np.exp(0.773), "A2": 0.461, "beta": np.exp(-1.344)}  # fm1Indom.nlme
TOLERANCE = {"A1": 0.30, "alpha": 0.30, "A2": 0.50, "beta": 0.50, "CL": 0.20, "V1": 0.20}


def biexponential(cl, v1, q, v2, dose=DOSE):
    """(A1, alpha, A2, beta) of C(t) = A1 exp(-alpha t) + A2 exp(-beta t) after a bolus."""
    (alpha, beta), (a_alpha, a_beta) = two_compartment_macro(cl, v1, q, v2)
    return dose / v1 * a_alpha, alpha, dose / v1 * a_beta, beta


def test_biexponential_conversion_round_trips():
    """The reference's CL, V1 (and Q, V2) give back its A1, alpha, A2, beta."""
    a1, alpha, a2, beta = NLME["A1"], NLME["alpha"], NLME["A2"], NLME["beta"]
    v1 = DOSE / (a1 + a2)
    cl = DOSE / (a1 / alpha + a2 / beta)
    k21 = (a1 * beta + a2 * alpha) / (a1 + a2)
    k12 = alpha + beta - k21 - cl / v1
    got = biexponential(cl, v1, k12 * v1, k12 * v1 / k21)
    np.testing.assert_allclose(got, (a1, alpha, a2, beta), rtol=1e-12)


def _terminal_slopes():
    obs = bundled.load("indomethacin").observations
    late = obs[obs.TIME >= 3]
    return np.array([-np.polyfit(g.TIME, np.log(g.DV), 1)[0] for _, g in late.groupby("ID")])


def test_indomethacin_matches_published_nlme_fit():
    fit = bpk.fit(bpk.PopulationModel(MODELS / "indomethacin_2cmt_iv.toml"), progress=False)
    post = fit.posterior
    cl, v1, q, v2 = (post[p].to_numpy().ravel() for p in ("CL", "V1", "Q", "V2"))
    a1, alpha, a2, beta = biexponential(cl, v1, q, v2)
    got = {"A1": np.median(a1), "alpha": np.median(alpha), "A2": np.median(a2), "beta": np.median(beta),
           "CL": np.median(cl), "V1": np.median(v1)}
    ref = dict(NLME)
    ref["V1"] = DOSE / (NLME["A1"] + NLME["A2"])
    ref["CL"] = DOSE / (NLME["A1"] / NLME["alpha"] + NLME["A2"] / NLME["beta"])
    report = {k: (round(float(got[k]), 3), round(float(ref[k]), 3)) for k in ref}
    for k, tol in TOLERANCE.items():
        assert abs(got[k] / ref[k] - 1) < tol, (k, report)
    # the terminal rate agrees with the data's own terminal slopes (median 0.185 /h)
    assert abs(got["beta"] / np.median(_terminal_slopes()) - 1) < 0.2, report
    diag = fit.diagnostics()
    assert diag["max_r_hat"] <= 1.01, diag
    assert diag["divergences"] == 0, diag
