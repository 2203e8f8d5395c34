"""Run directories written by an earlier release (tests/fixtures/runs, bayespk at f4c7602) load and work today.

The model is rebuilt from the stored spec and records with today's code, so these tests fail when a change
to the spec format, the model's variable names or the Fit container breaks the runs users already have.
"""

import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

import bayespk as bpk
from bayespk.cli import main

RUNS = Path(__file__).resolve().parents[1] / "fixtures" / "runs"
NAMES = ["theophylline", "pkpd_emax_simulated", "indomethacin_biexp_nlme"]


@pytest.fixture(autouse=True)
def _quiet():
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # 2 x 20 draws: convergence warnings
        yield


@pytest.mark.parametrize("name", NAMES)
def test_an_old_run_loads_and_gives_its_stored_summary(name):
    run = RUNS / name
    fit = bpk.load(run)
    stored = pd.read_csv(run / "summary.csv").set_index("parameter")
    now = fit.summary().set_index("parameter")
    assert list(now.index) == list(stored.index)
    for column in ("mean", "sd", "q5", "median", "q95"):
        np.testing.assert_allclose(now[column], stored[column], rtol=1e-12, err_msg=column)
    assert fit.diagnostics()["divergences"] >= 0
    assert not Path(fit.spec.data.path).exists()  # the records travel in fit.nc


@pytest.mark.parametrize("name", NAMES)
def test_an_old_run_predicts_and_is_checked(name):
    fit = bpk.load(RUNS / name)
    pred = fit.predict(draws=10)
    n_obs = fit.model.design.n_obs
    assert pred["IPRED"].shape[-1] == n_obs and np.isfinite(pred["IPRED"].values).all()
    table = bpk.gof(fit, draws=10).table
    np.testing.assert_allclose(table.DV.to_numpy(), fit.tree["observed_data"]["DV"].values)
    assert np.isfinite(float(bpk.loo(fit).elpd))
    if fit.model.has_pd:
        pd_table = bpk.gof(fit, draws=10, pd_obs=True).table
        assert len(pd_table) == fit.model.pd_design.n_obs and np.isfinite(pd_table.IPRED).all()


def test_an_old_run_through_the_command_line(tmp_path, capsys):
    assert main(["summary", str(RUNS / "theophylline")]) == 0
    assert "CL" in capsys.readouterr().out
    assert main(["vpc", str(RUNS / "theophylline"), "--out", str(tmp_path / "vpc"), "--n-rep", "5"]) == 0
    assert (tmp_path / "vpc" / "vpc.png").stat().st_size > 0


def test_methods_that_became_functions_say_what_to_use():
    """Code written for the earlier release calls methods that are functions now: the error names the function."""
    import bayespk.borrowing as bb

    fit = bpk.load(RUNS / "theophylline")
    for call, use in ((lambda: fit.vpc(n_rep=5), r"bpk\.vpc\(fit"), (lambda: fit.loo(), r"bpk\.loo\(fit"),
                      (lambda: fit.plot_eta_covariates(), r"bpk\.eta_covariates\(fit"),
                      (lambda: fit.model.fit(), r"bpk\.fit\(model"),
                      (lambda: fit.model.prior_predictive(), r"bpk\.vpc\(model"),
                      (lambda: bb.BetaMixture([1.0], [2.0], [3.0]).posterior(r=1, n=2), r"bb\.posterior\(prior"),
                      (lambda: bb.BetaMixture([1.0], [2.0], [3.0]).ess(), r"bb\.ess\(prior")):
        with pytest.raises(AttributeError, match=r"is gone: use " + use):
            call()
    assert not hasattr(fit, "vpc")
    assert fit.summary().shape[0] == len(fit.population_parameters)  # what a Fit still answers
