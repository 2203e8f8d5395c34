"""Power prior, commensurate prior and EXNEX as PyMC models (short chains)."""

import warnings

import numpy as np
import pandas as pd
import pytest

from bayespk.borrowing import (
    BetaMixture,
    ankylosing_spondylitis,
    commensurate_prior,
    ess,
    exnex,
    posterior,
    power_prior,
    power_prior_conjugate,
)
from bayespk.errors import ConvergenceWarning, DataError, SpecError
from bayespk.model.priors import Prior

SHORT = {"draws": 600, "tune": 500, "chains": 2}


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        yield


def test_power_prior_by_nuts_matches_the_conjugate_result():
    """With a logit-scale initial prior close to flat, NUTS reproduces Beta(1 + a0 r0, 1 + a0 (n0 - r0)) updated."""
    hist = ankylosing_spondylitis()
    new = {"r": 1, "n": 6}
    fit = power_prior(hist, new, "binomial", 0.25, initial_prior=Prior("Normal", mu=0.0, sigma=1.6), seed=1, **SHORT)
    exact = posterior(power_prior_conjugate(hist, "binomial", 0.25), **new)
    assert fit.theta.mean() == pytest.approx(exact.mean(), abs=0.01)
    assert fit.theta.std() == pytest.approx(exact.sd(), rel=0.15)
    # a0 weights the history: ESS of the conjugate power prior = 2 + a0 * sum(n)
    assert ess(power_prior_conjugate(hist, "binomial", 0.25), "moment") == pytest.approx(2 + 0.25 * hist.n.sum())
    assert power_prior_conjugate(hist, "binomial", 0.0) == BetaMixture([1.0], [1.0], [1.0])
    with pytest.raises(SpecError, match="a0"):
        power_prior_conjugate(hist, "binomial", 1.5)
    with pytest.raises(DataError, match="missing n"):
        power_prior(hist, {"r": 1}, "binomial", 0.5, **SHORT)


def test_commensurate_prior_borrows_when_consistent_and_discounts_under_conflict():
    hist = ankylosing_spondylitis()
    same = commensurate_prior(hist, {"r": 6, "n": 24}, "binomial", seed=2, **SHORT)
    conflict = commensurate_prior(hist, {"r": 18, "n": 24}, "binomial", seed=3, **SHORT)
    alone = posterior(BetaMixture([1.0], [1], [1]), r=6, n=24)
    assert same.theta.std() < alone.sd()  # borrowing sharpened the estimate
    assert conflict.theta.mean() > 0.5  # the new data (75%) win over the history (~25%)
    s = same.summary()
    assert list(s.columns) == ["mean", "sd", "2.5%", "50%", "97.5%"]


def test_exnex_flags_the_outlying_stratum():
    strata = pd.DataFrame({"study": ["a", "b", "c", "d", "odd"], "n": [60, 60, 60, 60, 60],
                           "r": [15, 18, 14, 16, 45]})
    fit = exnex(strata, "binomial", seed=4, **SHORT)
    s = fit.summary()
    assert s.loc["odd", "p_exchangeable"] < 0.3 < s.loc[["a", "b", "c", "d"], "p_exchangeable"].min()
    assert s.loc["odd", "mean"] == pytest.approx(0.75, abs=0.08)  # not shrunk toward the others
    assert np.all(s["mean"].iloc[:4].between(0.2, 0.32))
    with pytest.raises(SpecError, match="p_exch"):
        exnex(strata, "binomial", p_exch=[0.5, 0.5], **SHORT)
