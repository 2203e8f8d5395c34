"""Conjugate mixtures: distribution functions against numerical integration, serialisation, EM fitting, robustify."""

import math

import numpy as np
import pytest
from scipy import integrate

from bayespk.borrowing import BetaMixture, GammaMixture, NormalMixture, fit_mixture, mixture_from_dict
from bayespk.errors import DataError, SpecError

MIXTURES = {
    "beta": BetaMixture([0.5, 0.3, 0.2], a=[20, 3, 1], b=[60, 5, 1]),
    "normal": NormalMixture([0.7, 0.3], m=[0.0, 1.5], s=[0.3, 1.0], sigma=2.0),
    "gamma": GammaMixture([0.6, 0.4], a=[30, 2], b=[10, 1]),
}


def _integrate(mix, f):
    lo, hi = mix.support
    lo = lo if math.isfinite(lo) else -50.0
    hi = hi if math.isfinite(hi) else 200.0
    return integrate.quad(lambda t: f(t) * mix.pdf(t), lo, hi, limit=400, points=None if hi - lo > 100 else
                          sorted(set(np.clip(mix.components["mean"].to_numpy(), lo, hi))))[0]


@pytest.mark.parametrize("family", MIXTURES)
def test_density_moments_and_quantiles_match_integration(family):
    mix = MIXTURES[family]
    assert _integrate(mix, lambda t: 1.0) == pytest.approx(1.0, abs=1e-7)
    assert _integrate(mix, lambda t: t) == pytest.approx(mix.mean(), rel=1e-6)
    assert _integrate(mix, lambda t: (t - mix.mean()) ** 2) == pytest.approx(mix.var(), rel=1e-5)
    q = mix.quantile([0.025, 0.3, 0.5, 0.975])
    np.testing.assert_allclose(mix.cdf(q), [0.025, 0.3, 0.5, 0.975], atol=1e-10)
    np.testing.assert_allclose(mix.cdf(q) + mix.sf(q), 1.0, atol=1e-12)
    lo = mix.support[0] if math.isfinite(mix.support[0]) else -50.0
    assert integrate.quad(mix.pdf, lo, q[1], limit=400)[0] == pytest.approx(0.3, abs=1e-6)
    draws = mix.sample(40_000, seed=1)
    assert draws.mean() == pytest.approx(mix.mean(), abs=4 * mix.sd() / 200)
    np.testing.assert_allclose(mix.logpdf(q), np.log(mix.pdf(q)))


@pytest.mark.parametrize("family", MIXTURES)
def test_dict_round_trip(family):
    mix = MIXTURES[family]
    again = mixture_from_dict(mix.to_dict())
    assert again == mix and type(again) is type(mix)
    if family == "normal":
        assert again.sigma == 2.0


def test_information_is_minus_second_derivative_of_log_density():
    for mix in MIXTURES.values():
        x = mix.quantile([0.1, 0.4, 0.6, 0.9])
        h = 1e-4 * mix.sd()
        numeric = -(mix.logpdf(x + h) - 2 * mix.logpdf(x) + mix.logpdf(x - h)) / h**2
        np.testing.assert_allclose(mix.information(x), numeric, rtol=1e-4)


@pytest.mark.parametrize("bad, match", [
    ({"weights": [0.5, 0.4], "a": [1, 2], "b": [1, 2]}, "sum to 1"),
    ({"weights": [1.0], "a": [-1], "b": [2]}, "a > 0"),
    ({"weights": [0.5, 0.5], "a": [1], "b": [2, 3]}, "same length"),
    ({"weights": [1.0], "a": [float("nan")], "b": [2]}, "finite"),
])  # fmt: skip
def test_invalid_mixtures_are_refused(bad, match):
    with pytest.raises(SpecError, match=match):
        BetaMixture(**bad)


def test_from_dict_names_the_problem():
    with pytest.raises(SpecError, match="family must be one of"):
        mixture_from_dict({"family": "cauchy", "weights": [1]})
    with pytest.raises(SpecError, match="missing b"):
        mixture_from_dict({"family": "beta", "weights": [1], "a": [1]})
    with pytest.raises(SpecError, match="unknown key"):
        mixture_from_dict({"family": "beta", "weights": [1], "a": [1], "b": [1], "c": [1]})


@pytest.mark.parametrize("truth", [
    BetaMixture([0.65, 0.35], a=[40, 5], b=[80, 5]),
    NormalMixture([0.5, 0.5], m=[0.0, 3.0], s=[1.0, 0.5]),
    GammaMixture([0.7, 0.3], a=[25, 3], b=[10, 1]),
], ids=["beta", "normal", "gamma"])  # fmt: skip
def test_fit_mixture_recovers_a_known_mixture(truth):
    fit = fit_mixture(truth.sample(6000, seed=3), truth.family)
    assert fit.n_components == 2, fit.info["fit"]
    order = np.argsort(fit.components["mean"].to_numpy())
    ref = np.argsort(truth.components["mean"].to_numpy())
    np.testing.assert_allclose(fit.weights[order], truth.weights[ref], atol=0.04)
    np.testing.assert_allclose(fit.components["mean"].to_numpy()[order], truth.components["mean"].to_numpy()[ref],
                               rtol=0.05, atol=0.05)
    np.testing.assert_allclose(fit.components["sd"].to_numpy()[order], truth.components["sd"].to_numpy()[ref],
                               rtol=0.1)
    assert fit.mean() == pytest.approx(truth.mean(), rel=0.02, abs=0.01)


def test_fit_mixture_one_component_is_the_mle():
    truth = BetaMixture([1.0], [12.0], [30.0])
    fit = fit_mixture(truth.sample(20_000, seed=5), "beta")
    assert fit.n_components == 1
    assert fit.a[0] == pytest.approx(12.0, rel=0.05) and fit.b[0] == pytest.approx(30.0, rel=0.05)


def test_fit_mixture_rejects_bad_samples():
    with pytest.raises(DataError, match="outside"):
        fit_mixture(np.r_[np.full(20, 0.3), 1.5], "beta")
    with pytest.raises(DataError, match="not a finite"):
        fit_mixture(np.r_[np.linspace(0, 1, 20), np.nan], "normal")
    with pytest.raises(SpecError, match="family"):
        fit_mixture(np.linspace(0, 1, 20), "student")


def test_robustify_adds_the_documented_vague_component():
    beta = BetaMixture([1.0], [11], [32]).robustify(0.2)
    np.testing.assert_allclose(beta.weights, [0.8, 0.2])
    assert (beta.a[-1], beta.b[-1]) == (1.0, 1.0)  # Beta(1, 1) for mean 1/2, n = 1
    norm = NormalMixture([1.0], [2.0], [0.1], sigma=3.0).robustify(0.3, mean=0.0)
    assert (norm.m[-1], norm.s[-1], norm.sigma) == (0.0, 3.0, 3.0)  # unit information N(mean, sigma)
    assert NormalMixture([1.0], [2.0], [0.1], sigma=3.0).robustify(0.3, sd=1.0).s[-1] == 1.0
    gam = GammaMixture([1.0], [20], [10]).robustify(0.1)
    assert gam.a[-1] == pytest.approx(2.0) and gam.b[-1] == 1.0  # Gamma(mean * n, n), mean = prior mean 2
    for bad in (0.0, 1.0, 1.5):
        with pytest.raises(SpecError, match="between 0 and 1"):
            BetaMixture([1.0], [11], [32]).robustify(bad)
    with pytest.raises(SpecError, match="reference sigma"):
        NormalMixture([1.0], [0.0], [1.0]).robustify(0.2)
