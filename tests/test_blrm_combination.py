"""Two-drug combination BLRM (bayespk.design.blrm_combination; Neuenschwander et al. 2015).

Checks: (1) with the interaction prior tight at 0 and data on monotherapy doses only, the posterior factorises,
so the combination's mean DLT probability must equal 1 - (1 - E pi_1)(1 - E pi_2) from two separate
single-agent posteriors (bayespk.design.blrm.blrm_posterior) within Monte Carlo error; (2) combination data far
more toxic than independence predicts move eta's posterior above 0; (3) EWOC on the dose grid; (4) bad input
refused with the row named. Both data sets have 7 rows (the first has an empty combination row), so one
compiled model serves every fit.
"""

import math
import re

import arviz as az
import numpy as np
import pytest

from bayespk.design import DesignError
from bayespk.design.blrm import BVNMixture, blrm_posterior
from bayespk.design.blrm_combination import CombinationData, combination_ewoc, combination_posterior

D_REF = (4.0, 20.0)
PRIOR = BVNMixture.single((math.log(0.2 / 0.8), 0.0), (2.0, 1.0), 0.0)
MONO = [(1, 0, 3, 0), (2, 0, 3, 0), (4, 0, 6, 1), (0, 10, 3, 0), (0, 20, 6, 1), (0, 40, 3, 1)]


@pytest.fixture(scope="module")
def no_interaction():
    rows = MONO + [(4, 20, 0, 0)]  # an empty combination row (no patient): no information
    return combination_posterior(rows, D_REF, PRIOR, PRIOR, eta_prior=(0.0, 0.01), draws=1000, chains=2, seed=1)


def mcse_mean(x, chains=2):
    return float(az.mcse(np.asarray(x).reshape(chains, -1), method="mean"))


def test_no_interaction_equals_independent_single_agent_posteriors(no_interaction):
    post = no_interaction
    assert post.settings["divergences"] == 0
    a = blrm_posterior([1, 2, 4], D_REF[0], [3, 3, 6], [0, 0, 1], PRIOR, draws=1000, chains=2, seed=2)
    b = blrm_posterior([10, 20, 40], D_REF[1], [3, 6, 3], [0, 1, 1], PRIOR, draws=1000, chains=2, seed=3)
    for d1, d2 in ((4, 20), (2, 40), (8, 10)):
        p = post.pi(d1, d2)
        p1, p2 = a.pi([d1]).reshape(2, -1), b.pi([d2]).reshape(2, -1)
        expected = 1 - (1 - p1.mean()) * (1 - p2.mean())
        se = math.sqrt(mcse_mean(p) ** 2 + mcse_mean(p1) ** 2 + mcse_mean(p2) ** 2)
        assert abs(p.mean() - expected) <= 4.5 * se + 1e-3, (d1, d2, p.mean(), expected, se)
        # and the draws of pi_12 are those of 1 - (1 - pi_1)(1 - pi_2) from the model's own theta draws
        q1 = 1 / (1 + np.exp(-(post.theta1[:, 0] + np.exp(post.theta1[:, 1]) * math.log(d1 / D_REF[0]))))
        q2 = 1 / (1 + np.exp(-(post.theta2[:, 0] + np.exp(post.theta2[:, 1]) * math.log(d2 / D_REF[1]))))
        assert np.allclose(p, 1 - (1 - q1) * (1 - q2), atol=0.01 * 3)  # |eta| < ~0.03 x d1 d2 / refs
    # monotherapy: pi_12(d1, 0) is drug 1's own curve
    assert np.allclose(post.pi(2, 0), 1 / (1 + np.exp(-(post.theta1[:, 0] + np.exp(post.theta1[:, 1])
                                                          * math.log(2 / 4)))))
    assert abs(post.eta.mean()) < 0.01 and post.eta.std() < 0.02


def test_observed_synergy_moves_eta_positive():
    # independence predicts ~0.28 at (4, 20); 7 DLTs in 9 patients there
    rows = MONO + [(4, 20, 9, 7)]
    post = combination_posterior(rows, D_REF, PRIOR, PRIOR, draws=1000, chains=2, seed=4)
    assert post.settings["divergences"] == 0
    assert post.eta.mean() > 0.5 and (post.eta > 0).mean() > 0.95
    assert post.pi(4, 20).mean() > 0.5


def test_ewoc_on_the_combination_grid(no_interaction):
    dec = combination_ewoc(no_interaction, [1, 2, 4, 8], [10, 20, 40], ewoc=0.25, max_step=2)
    tab = dec.table
    assert len(tab) == 12
    assert (tab.eligible == (tab["P(>=0.33)"] < 0.25) & tab.step_ok).all()
    assert tab[(tab.d1 == 8)].step_ok.all()  # 8 = 2 x 4: within the step and tab[(tab.d2 == 40)].step_ok.all()
    assert dec.dose is not None
    row = tab[(tab.d1 == dec.dose[0]) & (tab.d2 == dec.dose[1])].iloc[0]
    assert row.eligible and row["P(0.16-0.33)"] == tab[tab.eligible]["P(0.16-0.33)"].max()
    tight = combination_ewoc(no_interaction, [1, 2, 4, 8, 16], [10, 20, 40], max_step=1.5)
    assert not tight.table[tight.table.d1 == 8].step_ok.any()  # 8 > 1.5 x 4
    assert "P(pi >= 0.33)" in str(dec)


@pytest.mark.parametrize("rows, words", [
    ([(0, 0, 3, 0)], "row 1: d1 = d2 = 0"),
    ([(1, 0, 3, 0), (2, 0, 3, 4)], "row 2: r = 4 DLTs > n = 3 patients"),
    ([(-1, 0, 3, 0)], "row 1: d1 = -1"),
    ([(1, 0, 2.5, 0)], "row 1: n = 2.5 is not a whole number"),
    ([(1, 0, 3)], "row 1: expected (d1, d2, n, r)"),
    ([], "no rows"),
])
def test_bad_combination_data_refused(rows, words):
    with pytest.raises(DesignError, match=re.escape(words)):
        CombinationData.from_rows(rows)


@pytest.mark.parametrize("kwargs, words", [
    (dict(eta_prior=(0, 0)), "eta_prior sd = 0"),
    (dict(d_ref=(4, -1)), "d_ref[2] = -1"),
    (dict(prior1={"mean": [0, 0], "sd": [-1, 1]}), "sds[1][1] = -1"),
])
def test_bad_settings_refused(kwargs, words):
    args = dict(data=MONO, d_ref=D_REF)
    args.update(kwargs)
    with pytest.raises(DesignError, match=re.escape(words)):
        combination_posterior(**args)
