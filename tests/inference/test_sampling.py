"""The sampling door (bayespk.sampling): the one place that compiles and samples with nutpie."""

import re
from pathlib import Path

import numpy as np
import pymc as pm
import pytest

from bayespk import sampling

PACKAGE = Path(__file__).resolve().parents[2] / "bayespk"


def normal_mean_model():
    """y_i ~ N(mu, 1), mu ~ N(0, 10): the posterior of mu is N(sum(y) / (n + 0.01), 1 / (n + 0.01))."""
    with pm.Model() as model:
        y = pm.Data("y", np.zeros(20))
        mu = pm.Normal("mu", 0.0, 10.0)
        pm.Normal("obs", mu, 1.0, observed=y)
    return model


def test_one_compilation_per_key_and_data_set_at_sampling():
    built = []

    def build():
        built.append(1)
        return normal_mean_model()

    key = ("test_sampling", "normal mean")
    a = sampling.compile_model(key=key, build=build)
    b = sampling.compile_model(key=key, build=build)
    assert a is b and len(built) == 1

    for centre in (-3.0, 5.0):
        y = centre + np.random.default_rng(1).standard_normal(20)
        tree = sampling.sample(a, data={"y": y}, draws=400, tune=300, chains=2, seed=4)
        mu = tree["posterior"]["mu"].values
        assert mu.shape == (2, 400)
        post_mean, post_sd = y.sum() / 20.01, (1 / 20.01) ** 0.5
        assert abs(mu.mean() - post_mean) < 0.05  # MCSE of ~800 draws is about 0.01
        assert mu.std() == pytest.approx(post_sd, rel=0.15)
    assert set(tree.children) == {"posterior", "sample_stats"}  # no warm-up draws, no other groups


def test_defaults_and_seeds():
    compiled = sampling.compile_model(normal_mean_model())
    tree = sampling.sample(compiled, tune=100, seed=3)
    assert tree["posterior"].sizes["chain"] == sampling.DEFAULTS["chains"]
    assert tree["posterior"].sizes["draw"] == sampling.DEFAULTS["draws"]
    again = sampling.sample(compiled, tune=100, seed=3)
    np.testing.assert_array_equal(tree["posterior"]["mu"].values, again["posterior"]["mu"].values)
    other = sampling.sample(compiled, tune=100, seed=4)
    assert not np.array_equal(tree["posterior"]["mu"].values, other["posterior"]["mu"].values)
    assert isinstance(sampling.new_seed(None), int) and sampling.new_seed(7) == 7


def test_unknown_option_and_backend_refused():
    compiled = sampling.compile_model(normal_mean_model())
    with pytest.raises(TypeError, match="unknown sampler option.*target_acept"):
        sampling.sample(compiled, target_acept=0.9)
    with pytest.raises(ValueError, match="backend must be"):
        sampling.compile_model(normal_mean_model(), backend="stan")


def test_no_other_module_calls_nutpie():
    """Only bayespk/sampling.py samples or compiles with nutpie (compile_cache.py is the disk cache it uses)."""
    calls = re.compile(r"nutpie\.(sample|compile_pymc_model)\(|import nutpie\b")
    found = [str(p.relative_to(PACKAGE)) for p in sorted(PACKAGE.rglob("*.py"))
             if p.name not in ("sampling.py", "compile_cache.py") and calls.search(p.read_text())]
    assert found == []
