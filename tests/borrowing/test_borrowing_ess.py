"""Effective sample size: exact for conjugate priors (SCIENCE.md section 6), ELIR predictively consistent."""

import warnings

import numpy as np
import pytest
from scipy import optimize, special, stats

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


# ----------------------------------------------------------------- Morita as RBesT computes it
# RBesT's ess(mix, method = "morita") (R/mixess.R; the same closed form from RBesT 1.5-3 to 1.8-2),
# re-implemented here from RBesT's R source with scipy only (no bayespk code), for unrounded comparisons:
# mode as RBesT's mixmode (the highest of the optima of the log density over each component's central 99%
# interval), mixInfo at the mode, flattened prior with s = 100, E_Y1[i_F] over the prior predictive of one
# observation (Poisson: summed over the predictive pmf's central 1 - eps range, eps = 1e-4).
def rbest_morita(family, w, p1, p2, sigma=None, s=100.0, eps=1e-4):
    w, p1, p2 = (np.asarray(v, dtype=float) for v in (w, p1, p2))
    comp = {"beta": lambda: stats.beta(p1, p2), "normal": lambda: stats.norm(p1, p2),
            "gamma": lambda: stats.gamma(p1, scale=1 / p2)}[family]()

    def dens(x):
        return float(np.sum(w * comp.pdf(x)))

    lo, hi = comp.ppf(0.005), comp.ppf(0.995)
    optima = [optimize.minimize_scalar(lambda x: -np.log(dens(x)), bounds=(lo_k, hi_k), method="bounded",
                                       options={"xatol": 1e-12}).x for lo_k, hi_k in zip(lo, hi)]
    t = max(optima, key=dens)
    if family == "beta":
        g, h = (p1 - 1) / t - (p2 - 1) / (1 - t), -(p1 - 1) / t**2 - (p2 - 1) / (1 - t) ** 2
    elif family == "normal":
        g, h = -(t - p1) / p2**2, -1 / p2**2
    else:
        g, h = (p1 - 1) / t - p2, -(p1 - 1) / t**2
    r = w * comp.pdf(t) / dens(t)
    info_prior = np.sum(r * g) ** 2 - np.sum(r * (h + g**2))  # mixInfo: -d2/dx2 log p
    if family == "beta":
        a0, b0 = t / s, (1 - t) / s
        info0 = (a0 - 1) / t**2 + (b0 - 1) / (1 - t) ** 2
        p1_pred = np.sum(w * p1 / (p1 + p2))  # P(Y1 = 1)
        e_info = p1_pred / t**2 + (1 - p1_pred) / (1 - t) ** 2
    elif family == "normal":
        info0 = 1 / (s * np.max(p2**2))
        e_info = 1 / sigma**2
    else:
        info0 = (t / s - 1) / t**2  # gammaInfo(t, t/s, 1/s)
        y = np.arange(0, 100_000)
        pmf = np.sum(w[:, None] * stats.nbinom.pmf(y[None, :], p1[:, None], (p2 / (p2 + 1))[:, None]), axis=0)
        cdf = np.cumsum(pmf)
        y_lo, y_hi = np.searchsorted(cdf, eps / 2), np.searchsorted(cdf, 1 - eps / 2)
        keep = slice(y_lo, y_hi + 1)
        e_info = np.sum(pmf[keep] * y[keep] / t**2)
    return (info_prior - info0) / e_info


# RBesT introduction vignette (AS data, gMAP + automixfit), mixture and ESS as printed in its rendered output
# (inst/doc/introduction.html of the CRAN releases named): weights, a, b; round(ess()) for elir, moment,
# morita; round(ess(robustify(map, weight = 0.2, mean = 1/2))) (elir).
RBEST_AS = {
    "1.8-2": ([0.6167463, 0.3832537], [19.1916387, 3.5278745], [57.7779318, 9.3735980], 37, 26, 63, 26),
    "1.6-3": ([0.6591782, 0.3408218], [16.5925203, 3.1555842], [49.8328476, 8.3667384], 35, 25, 56, 24),
    "1.5-4": ([0.6437757, 0.3562243], [15.8121938, 3.3397943], [48.8203279, 8.7624392], 33, 24, 53, 23),
    "1.5-3": ([0.6634249, 0.3365751], [15.7057195, 3.1967161], [48.5413411, 8.1000498], 34, 24, 53, 24),
}


@pytest.mark.parametrize("version", RBEST_AS)
def test_ess_of_rbest_as_map_prior_as_rbest_prints_it(version):
    w, a, b, elir, moment, morita, robust = RBEST_AS[version]
    mix = BetaMixture(w, a, b)
    assert abs(ess(mix, "elir") - elir) <= 0.5
    assert abs(ess(mix, "moment") - moment) <= 0.5
    assert abs(ess(mix, "morita", s=100) - morita) <= 0.5  # RBesT's s = 100
    assert abs(ess(mix, "morita") - morita) <= 0.5        # the default, s -> inf, higher by about 0.01
    assert abs(ess(mix.robustify(0.2, 0.5), "elir") - robust) <= 0.5


@pytest.mark.parametrize("version", RBEST_AS)
def test_morita_of_rbest_as_map_prior_equals_rbest_algorithm(version):
    w, a, b = RBEST_AS[version][:3]
    mix = BetaMixture(w, a, b)
    expected = rbest_morita("beta", w, a, b)
    assert ess(mix, "morita", s=100) == pytest.approx(expected, rel=1e-7)
    # s = inf (the default) differs from RBesT's s = 100 by 1 / (s t (1 - t) E[i_F]) only
    t, m = mix.mode(), mix.mean()
    offset = 1 / (100 * t * (1 - t) * (m / t**2 + (1 - m) / (1 - t) ** 2))
    assert ess(mix, "morita") - ess(mix, "morita", s=100) == pytest.approx(offset, rel=1e-9)
    assert 0 < offset < 0.02
    if version == "1.8-2":
        assert expected == pytest.approx(62.6734, abs=1e-4)


@pytest.mark.parametrize("w, a, b", [
    ([1.0], [5.0], [15.0]),                              # RBesT's ess() example: a + b = 20
    ([0.2, 0.8], [1.0, 10.0], [1.0, 2.0]),               # RBesT's ess() example bmix (uniform + informative)
    ([0.6, 0.3, 0.1], [35.0, 7.0, 2.3], [105.0, 21.0, 5.2]),
])
def test_morita_of_beta_mixtures_equals_rbest_algorithm(w, a, b):
    assert ess(BetaMixture(w, a, b), "morita", s=100) == pytest.approx(rbest_morita("beta", w, a, b), rel=1e-7)


@pytest.mark.parametrize("w, a, b", [
    ([0.3, 0.7], [20.0, 50.0], [4.0, 10.0]),             # RBesT's ess() example gmix (Poisson likelihood)
    ([1.0], [30.0], [10.0]),
    ([0.4, 0.6], [8.0, 40.0], [2.0, 10.0]),
])
def test_morita_of_gamma_mixtures_equals_rbest_algorithm(w, a, b):
    # RBesT truncates E_Y1[Y1] to the predictive's central 1 - 1e-4 range; here it is exact (the prior mean)
    assert ess(GammaMixture(w, a, b), "morita", s=100) == pytest.approx(rbest_morita("gamma", w, a, b), rel=2e-4)


def test_morita_closed_form_for_conjugate_priors():
    # Beta(a, b): a + b; N(m, s) with sampling SD sigma: sigma^2 / s^2 (the s -> inf limit, the default, is exact)
    a, b = 11.0, 32.0
    assert ess(BetaMixture([1.0], [a], [b]), "morita") == pytest.approx(a + b, rel=1e-12)
    assert ess(NormalMixture([1.0], [-50.0], [8.8], sigma=88.0), "morita") == pytest.approx(100.0, rel=1e-12)
    # RBesT's s = 100 is lower by 1 / (s t (1 - t) E[i_F]) (beta, t the mode) and by ESS / s (normal)
    t, m = (a - 1) / (a + b - 2), a / (a + b)
    offset = 1 / (100 * t * (1 - t) * (m / t**2 + (1 - m) / (1 - t) ** 2))
    assert ess(BetaMixture([1.0], [a], [b]), "morita", s=100) == pytest.approx(a + b - offset, rel=1e-12)
    assert ess(BetaMixture([1.0], [a], [b]), "morita", s=100) == pytest.approx(rbest_morita("beta", [1], [a], [b]))
    assert ess(NormalMixture([1.0], [-50.0], [8.8], sigma=88.0), "morita", s=100) == pytest.approx(99.0, rel=1e-12)


def test_morita_warns_for_a_multimodal_prior_only():
    with pytest.warns(UserWarning, match="several modes"):
        ess(GammaMixture([0.5, 0.5], [4.0, 40.0], [2.5, 10.0]), "morita")  # modes near 1.2 and 3.9
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        # a uniform component flat where the other has no mass: one mode (rounding noise is no mode), as in RBesT
        ess(BetaMixture([0.2, 0.8], [1.0, 10.0], [1.0, 2.0]), "morita")
        ess(BetaMixture(*RBEST_AS["1.8-2"][:3]).robustify(0.2, 0.5), "morita")
