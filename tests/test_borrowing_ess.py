"""Effective sample size: exact for conjugate priors (SCIENCE.md section 6), ELIR predictively consistent."""

import numpy as np
import pytest
from scipy import special, stats

from bayespk.borrowing import BetaMixture, GammaMixture, NormalMixture, ess, ess_table, posterior
from bayespk.errors import SpecError

METHODS = ("moment", "morita", "elir")


@pytest.mark.parametrize("a, b", [(5, 15), (11, 32), (2.5, 40), (1.5, 1.2), (60, 3)])
@pytest.mark.parametrize("method", METHODS)
def test_beta_prior_has_ess_a_plus_b(a, b, method):
    assert ess(BetaMixture([1.0], [a], [b]), method) == pytest.approx(a + b, rel=1e-8)


@pytest.mark.parametrize("s, sigma", [(0.25, 1.0), (0.1, 0.3), (2.0, 10.0)])
@pytest.mark.parametrize("method", METHODS)
def test_normal_prior_has_ess_sigma2_over_s2(s, sigma, method):
    prior = NormalMixture([1.0], [1.3], [s], sigma=sigma)
    assert ess(prior, method) == pytest.approx(sigma**2 / s**2, rel=1e-8)


@pytest.mark.parametrize("a, b", [(4, 2.5), (30, 10), (1.5, 0.2)])
@pytest.mark.parametrize("method", METHODS)
def test_gamma_prior_has_ess_equal_to_its_rate(a, b, method):
    # Gamma(a, b) with rate b is worth b units of exposure of Poisson data
    assert ess(GammaMixture([1.0], [a], [b]), method) == pytest.approx(b, rel=1e-8)


def test_moment_ess_of_a_mixture_is_that_of_the_matching_beta():
    mix = BetaMixture([0.8, 0.2], [10, 1], [2, 1])
    m, v = mix.mean(), mix.var()
    assert ess(mix, "moment") == pytest.approx(m * (1 - m) / v - 1)


def test_elir_is_predictively_consistent_for_a_beta_mixture():
    """Neuenschwander et al. (2020): E over the prior predictive of ESS(posterior after N) = ESS(prior) + N."""
    prior = BetaMixture([0.2, 0.8], [1, 10], [1, 2])
    n = 10
    expected = 0.0
    for r in range(n + 1):
        pmf = np.exp(special.logsumexp(np.log(prior.weights) + special.betaln(prior.a + r, prior.b + n - r)
                                       - special.betaln(prior.a, prior.b)) + np.log(special.comb(n, r)))
        expected += pmf * ess(posterior(prior, r=r, n=n), "elir")
    assert expected - n == pytest.approx(ess(prior, "elir"), rel=1e-6)
    # the other two are not predictively consistent for this mixture
    assert abs(expected - n - ess(prior, "moment")) > 1.0


def test_elir_is_predictively_consistent_for_a_gamma_mixture():
    prior = GammaMixture([0.3, 0.7], [20, 50], [4, 10])
    exposure = 3.0
    y = np.arange(0, 200)
    lm = (np.log(prior.weights)[:, None] + special.gammaln(prior.a[:, None] + y) - special.gammaln(prior.a[:, None])
          - special.gammaln(y + 1) + prior.a[:, None] * np.log(prior.b[:, None])
          - (prior.a[:, None] + y) * np.log(prior.b[:, None] + exposure) + y * np.log(exposure))
    pmf = np.exp(special.logsumexp(lm, axis=0))
    assert pmf.sum() == pytest.approx(1.0, abs=1e-10)
    keep = pmf > 1e-12
    expected = sum(p * ess(posterior(prior, y=int(k), exposure=exposure), "elir") for p, k in zip(pmf[keep], y[keep]))
    assert expected - exposure == pytest.approx(ess(prior, "elir"), rel=1e-5)


def test_elir_of_a_normal_mixture_matches_monte_carlo():
    prior = NormalMixture([0.5, 0.5], [0.0, 1.0], [0.3, 0.6], sigma=2.0)
    x = prior.sample(400_000, seed=2)
    mc = 4.0 * prior.information(x)
    assert ess(prior, "elir") == pytest.approx(mc.mean(), abs=4 * mc.std() / np.sqrt(x.size))


def test_morita_is_larger_than_elir_for_a_peaked_mixture():
    mix = BetaMixture([0.6, 0.3, 0.1], [35, 7, 2.3], [105, 21, 5.2])
    t = ess_table(mix)
    assert t["moment"] < t["elir"] < t["morita"]


def test_robustification_lowers_the_ess():
    prior = BetaMixture([1.0], [11], [32])
    for method in METHODS:
        assert ess(prior.robustify(0.2), method) < ess(prior, method)


def test_ess_of_a_scipy_distribution():
    # a normal given as a scipy distribution agrees with the mixture; a Student-t prior is worth less
    assert ess(stats.norm(0, 0.5), "elir", likelihood="normal", sigma=1.0) == pytest.approx(4.0, rel=1e-6)
    assert ess(stats.norm(0, 0.5), "morita", likelihood="normal", sigma=1.0) == pytest.approx(4.0, rel=1e-4)
    assert ess(stats.beta(3, 7), "elir", likelihood="binomial") == pytest.approx(10.0, rel=1e-5)
    assert ess(stats.t(5, 0, 0.5), "elir", likelihood="normal", sigma=1.0) < 4.0


def test_ess_errors_are_explained():
    with pytest.raises(SpecError, match="reference sigma"):
        ess(NormalMixture([1.0], [0.0], [1.0]))
    with pytest.raises(SpecError, match="diverges"):
        ess(BetaMixture([1.0], [0.5], [3.0]), "elir")
    with pytest.raises(SpecError, match="method"):
        ess(BetaMixture([1.0], [2], [3]), "effective")
    with pytest.raises(SpecError, match="likelihood"):
        ess(stats.norm(0, 1))
