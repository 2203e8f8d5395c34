"""Posterior updating of mixture priors vs numerical integration; robust priors under conflict; decisions and OC."""

import math

import numpy as np
import pytest
from scipy import integrate, stats

from bayespk.borrowing import (
    BetaMixture,
    Decision1S,
    Decision2S,
    GammaMixture,
    NormalMixture,
    log_marginal,
    oc_one_sample,
    oc_two_sample,
    posterior,
    prob_difference,
)
from bayespk.errors import DataError

CASES = [
    (BetaMixture([0.6, 0.3, 0.1], [20, 3, 1], [60, 5, 1]), {"r": 7, "n": 15}, lambda t: stats.binom.pmf(7, 15, t)),
    (NormalMixture([0.7, 0.3], [0.0, 1.5], [0.3, 1.0], sigma=2.0), {"m": 1.1, "se": 0.4},
     lambda t: stats.norm.pdf(1.1, t, 0.4)),
    (GammaMixture([0.6, 0.4], [30, 2], [10, 1]), {"y": 9, "exposure": 2.5}, lambda t: stats.poisson.pmf(9, 2.5 * t)),
]  # fmt: skip


def _bounds(mix):
    lo, hi = mix.support
    return (lo if math.isfinite(lo) else -30.0), (hi if math.isfinite(hi) else 100.0)


@pytest.mark.parametrize("prior, data, lik", CASES, ids=["beta", "normal", "gamma"])
def test_posterior_matches_numerical_integration(prior, data, lik):
    post = posterior(prior, **data)
    lo, hi = _bounds(prior)
    pts = sorted(set(np.clip(prior.components["mean"].to_numpy(), lo, hi)))

    def quad(f):
        return integrate.quad(lambda t: f(t) * prior.pdf(t) * lik(t), lo, hi, limit=400, points=pts)[0]

    evidence = quad(lambda t: 1.0)
    assert math.exp(log_marginal(prior, **data)) == pytest.approx(evidence, rel=1e-6)
    assert post.mean() == pytest.approx(quad(lambda t: t) / evidence, rel=1e-6)
    assert post.var() == pytest.approx(quad(lambda t: (t - post.mean()) ** 2) / evidence, rel=1e-5)
    x = prior.quantile([0.1, 0.5, 0.9])
    np.testing.assert_allclose(post.pdf(x), prior.pdf(x) * lik(x) / evidence, rtol=1e-6)
    q = post.quantile(0.3)
    mass = integrate.quad(lambda t: prior.pdf(t) * lik(t), lo, q, limit=400)[0]
    assert mass / evidence == pytest.approx(0.3, abs=1e-6)


def test_normal_update_with_n_uses_the_reference_sigma():
    prior = NormalMixture([1.0], [0.0], [1.0], sigma=2.0)
    assert posterior(prior, m=1.0, n=4) == posterior(prior, m=1.0, se=1.0)


def test_prob_difference_matches_double_integration():
    a = BetaMixture([0.7, 0.3], [15, 2], [10, 3])
    b = BetaMixture([0.5, 0.5], [5, 1], [20, 1])
    ref = integrate.dblquad(lambda y, x: a.pdf(x) * b.pdf(y), 0, 1, 0, lambda x: max(0.0, x - 0.1))[0]
    assert prob_difference(a, b, 0.1) == pytest.approx(ref, abs=1e-7)
    assert prob_difference(a, b, 0.1, lower_tail=True) == pytest.approx(1 - ref, abs=1e-7)
    n1, n2 = NormalMixture([0.6, 0.4], [0, 1], [0.1, 2]), NormalMixture([1.0], [0.2], [1.0])
    ref = integrate.quad(lambda t: n2.pdf(t) * n1.sf(t - 0.3), -20, 20, points=[0, 0.2])[0]
    assert prob_difference(n1, n2, -0.3) == pytest.approx(ref, abs=1e-7)


def test_robust_prior_follows_conflicting_data_and_the_map_prior_does_not():
    """Prior-data conflict: 15 of 20 respond where the prior (Baeten et al.'s Beta(11, 32), ESS 43) expects 26%."""
    inform = BetaMixture([1.0], [11], [32])
    robust = inform.robustify(0.2, mean=0.5)
    data = {"r": 15, "n": 20}
    post_inf, post_rob = posterior(inform, **data), posterior(robust, **data)
    observed = 15 / 20
    assert abs(post_rob.mean() - observed) < 0.05            # follows the data
    assert abs(post_inf.mean() - observed) > 0.3             # held back by the prior: 26/63
    assert post_inf.mean() == pytest.approx(26 / 63)
    assert post_rob.weights[-1] > 0.95                       # the vague component took over
    # without conflict the two agree and the vague component's weight shrinks below its prior 0.2
    calm_inf, calm_rob = posterior(inform, r=5, n=20), posterior(robust, r=5, n=20)
    assert calm_rob.mean() == pytest.approx(calm_inf.mean(), abs=0.01)
    assert calm_rob.weights[-1] < 0.1


def test_decisions_and_errors():
    assert Decision1S(0.9, 0.3)(BetaMixture([1.0], [20], [20]))
    assert not Decision1S(0.9, 0.3, lower_tail=True)(BetaMixture([1.0], [20], [20]))
    assert "P(theta_1 - theta_2 > 0) > 0.95" == str(Decision2S(0.95))
    with pytest.raises(Exception, match="threshold"):
        Decision2S(1.5)
    with pytest.raises(DataError, match="r <= n"):
        posterior(BetaMixture([1.0], [1], [1]), r=7, n=5)
    with pytest.raises(DataError, match="se="):
        posterior(NormalMixture([1.0], [0.0], [1.0]), m=1.0, n=3)


def test_operating_characteristics_simulation_agrees_with_exact_enumeration():
    u = BetaMixture([1.0], [1], [1])
    rule = Decision2S(0.975)
    exact = oc_two_sample(u, u, 20, 20, rule, [0.3, 0.6], [0.3, 0.3], exact=True)
    sim = oc_two_sample(u, u, 20, 20, rule, [0.3, 0.6], [0.3, 0.3], n_sim=3000, seed=4)
    assert np.all(np.abs(sim.p_success - exact.p_success) < 4 * sim.mc_se + 1e-3)
    assert exact.p_success.iloc[0] < 0.05 < exact.p_success.iloc[1]
    one = oc_one_sample(u, 30, Decision1S(0.95, 0.3), [0.3, 0.6], exact=True)
    assert one.p_success.iloc[0] < 0.06 and one.p_success.iloc[1] > 0.9


def test_map_prior_adds_power_and_robustness_caps_type_one_error():
    """The RBesT AS design: 24 active vs 6 placebo, success if P(theta_t - theta_c > 0) > 0.95."""
    map_prior = BetaMixture([0.6, 0.3, 0.1], [35, 7, 2.3], [105, 21, 5.2])
    robust = map_prior.robustify(0.2, 0.5)
    treat = BetaMixture([1.0], [0.5], [1.0])
    uniform = BetaMixture([1.0], [1], [1])
    rule = Decision2S(0.95)
    kw = {"exact": True}
    power = {name: oc_two_sample(treat, prior, 24, 6, rule, [0.6], [0.25], **kw).p_success.iloc[0]
             for name, prior in (("map", map_prior), ("robust", robust), ("uniform", uniform))}
    assert power["map"] > power["robust"] > power["uniform"]
    # type I error when the true placebo rate is far above the MAP prior (0.5 vs ~0.26)
    t1 = {name: oc_two_sample(treat, prior, 24, 6, rule, [0.5], [0.5], **kw).p_success.iloc[0]
          for name, prior in (("map", map_prior), ("robust", robust))}
    assert t1["map"] > 0.2 and t1["robust"] < t1["map"]
