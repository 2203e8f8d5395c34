"""PK priors for a new population (allometry, maturation, ESS in patients).

Dose selection (formerly here, with its own one-compartment formulas) is tested in tests/simulate/test_dose_table.py.
"""

import warnings

import numpy as np
import pandas as pd
import pytest
import xarray as xr

from bayespk.borrowing import historical_from_fit, pk_map_prior, scale_estimates, sigmoid_maturation
from bayespk.errors import ConvergenceWarning, DataError, SpecError
from bayespk.model.spec import Spec

HIST = pd.DataFrame({
    "study": ["A", "B", "C", "adult fit"], "parameter": "CL", "estimate": [5.0, 5.6, 4.6, 5.2],
    "se": [0.08, 0.10, 0.12, 0.06], "weight": [70, 75, 68, 70], "omega": 0.3,
})  # fmt: skip


def test_scale_estimates_applies_allometry_and_maturation():
    s = scale_estimates(HIST, "CL", weight=20.0)
    np.testing.assert_allclose(s.y, np.log(HIST.estimate) + 0.75 * np.log(20.0 / HIST.weight))
    np.testing.assert_allclose(s.se, HIST.se)
    mat = sigmoid_maturation(47.7, 3.4)
    s2 = scale_estimates(HIST, "CL", weight=20.0, maturation=mat, age=60.0)
    np.testing.assert_allclose(s2.y - s.y, np.log(mat(60.0)))  # adults (no age column) count as mature
    v = scale_estimates(HIST.assign(parameter="V"), "V", weight=20.0)
    np.testing.assert_allclose(v.y, np.log(HIST.estimate) + np.log(20.0 / HIST.weight))
    with pytest.raises(SpecError, match="exponent"):
        scale_estimates(HIST.assign(parameter="KA"), "KA", weight=20.0)
    with pytest.raises(DataError, match="column se"):
        scale_estimates(HIST.assign(se="big"), "CL", weight=20.0)
    with pytest.raises(DataError, match="no row for parameter"):
        scale_estimates(HIST, "V", weight=20.0)


def test_pk_map_prior_is_centred_on_the_scaled_history_and_counts_patients():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        prior = pk_map_prior(HIST, "CL", weight=20.0, seed=3, draws=1000, tune=500, chains=2)
    target = np.exp(np.mean(scale_estimates(HIST, "CL", weight=20.0).y))
    summary = prior.summary()
    assert summary.loc["MAP", "median"] == pytest.approx(target, rel=0.1)
    assert summary.loc["robust MAP", "97.5%"] > summary.loc["MAP", "97.5%"]
    ess = prior.ess()
    # ESS in patients: omega^2 / var(log CL) for the MAP; robustification lowers it
    assert ess.loc["moment", "MAP"] == pytest.approx(0.3**2 / prior.mixture.var(), rel=1e-6)
    assert 0 < ess.loc["elir", "robust MAP"] < ess.loc["elir", "MAP"]
    assert prior.robust.weights[-1] == pytest.approx(0.2) and prior.robust.s[-1] == 1.0
    mp = prior.model_prior()
    assert mp.support == "positive" and mp.weights == tuple(prior.robust.weights)


def test_historical_from_fit_reads_log_typical_values():
    rng = np.random.default_rng(0)
    cl = np.exp(rng.normal(np.log(5.0), 0.05, size=(2, 500)))
    post = xr.Dataset({"CL": (("chain", "draw"), cl), "omega_CL": (("chain", "draw"), np.full((2, 500), 0.3)),
                       "V": (("chain", "draw"), np.full((2, 500), 50.0)), "z_CL": (("chain", "draw", "ID"),
                                                                                   np.zeros((2, 500, 12)))})
    spec = Spec.from_dict({"model": {"structure": "1cmt_iv"},
                           "parameters": {"CL": {"guess": 5.0}, "V": {"guess": 50.0}},
                           "covariates": [{"parameter": "CL", "column": "WT", "effect": "power", "reference": 70,
                                           "coefficient": 0.75}]})

    class FakeFit:
        posterior = post

    FakeFit.spec = spec
    h = historical_from_fit(FakeFit(), ("CL",))
    assert h.loc[0, "weight"] == 70.0 and h.loc[0, "n"] == 12 and h.loc[0, "omega"] == pytest.approx(0.3)
    assert h.loc[0, "estimate"] == pytest.approx(5.0, rel=0.01) and h.loc[0, "se"] == pytest.approx(0.05, rel=0.1)
    with pytest.raises(SpecError, match="weight="):
        historical_from_fit(FakeFit(), ("V",))
