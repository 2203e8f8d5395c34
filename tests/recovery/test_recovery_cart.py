"""Recovery of a CAR-T study with known truth (slow).

100 simulated patients (bayespk.simulate.cohort defaults, seed 7): Stein-type
kinetics, tumor burden and fludarabine AUC acting on CMAX, tocilizumab at
CRS >= 2 (true multiplier 1.0) and corticosteroids, qPCR to two years (~30%
BLQ after day 90) and flow cytometry to day 28. The bundled spec
``models/cart_tisagenlecleucel_like.toml`` is fitted to it.
"""

from pathlib import Path

import numpy as np
import pytest
from scipy.integrate import quad

import bayespk as bpk
from bayespk.evaluate.cellkinetics import compare_ck
from bayespk.simulate.cohort import simulate_cart_cohort
from bayespk.structural.cart import CELL_KINETICS

pytestmark = pytest.mark.slow
MODELS = Path(__file__).resolve().parents[2] / "models"


@pytest.fixture(scope="module")
def study():
    cohort = simulate_cart_cohort(100, seed=7)
    model = bpk.PopulationModel(MODELS / "cart_tisagenlecleucel_like.toml", cohort.data)
    fit = bpk.fit(model, chains=4, draws=800, tune=1000, seed=7, progress=False)
    return cohort, fit


def test_design_has_thirty_percent_blq_late(study):
    cohort, _ = study
    assert 0.2 < cohort.blq_fraction(after=90.0) < 0.4


def _cohort_values(cohort) -> dict:
    """The typical values and CMAX effects realized in this cohort's 100 patients.

    Least squares of the true individual log CMAX on log TB and log FLUAUC, and the
    geometric means (FB: the mean logit) of the other true individual parameters: what
    the data can recover at best, apart from the sampling of the patients.
    """
    p = cohort.patients
    x = np.c_[np.ones(len(p)), np.log(p.TB / 20.0), np.log(p.FLUAUC / 14.0)]
    b = np.linalg.lstsq(x, np.log(p.CMAX_I), rcond=None)[0]
    out = {"CMAX": np.exp(b[0]), "CMAX_TB": b[1], "CMAX_FLUAUC": b[2]}
    for name in ("FX", "TMAX", "ALPHA", "BETA"):
        out[name] = float(np.exp(np.log(p[f"{name}_I"]).mean()))
    logit = np.log(p.FB_I / (1 - p.FB_I)).mean()
    out["FB"] = float(1 / (1 + np.exp(-logit)))
    return out


def test_typical_values_effects_and_assays_are_recovered(study):
    """90% intervals cover the cohort's realized values.

    Seed 7 (chosen before the first run) drew patients whose CMAX etas happen to rise
    with tumor burden: least squares on the true individual values gives CMAX 17990 and
    CMAX_TB 0.52 against the population's 24000 and 0.35 (about 2 SD of that estimate
    over seeds 1-5: 25660, 21690, 28250, 23440, 23230), and the posterior follows the
    cohort, as it should. The population values are therefore not tested at a fixed
    level here; the notebook and the benchmark fit (seed 2026) cover 18 of 19.
    """
    cohort, fit = study
    s = fit.summary().set_index("parameter")
    realized = _cohort_values(cohort)
    fixed = {"sigma_log[1]", "sigma_log[2]", "scale_ASSAY[2]", "rho_TOCI"}  # no sampling of patients in them
    outside = [f"{n}: {v:g} not in 90% [{s.q5[n]:g}, {s.q95[n]:g}]" for n, v in
               (realized | {k: cohort.truth[k] for k in fixed}).items() if not s.q5[n] <= v <= s.q95[n]]
    assert not outside, outside
    # a tocilizumab effect of 1.0 is not detected as different from 1 (checked above: 1 in the 90% interval)
    assert fit.diagnostics()["divergences"] <= 10


def test_ck_metrics_cover_true_exposures_beside_nca(study):
    cohort, fit = study
    table = compare_ck(fit, draws=200).merge(cohort.patients, on="ID")
    for metric, truth in (("Cmax", "CMAX_TRUE"), ("AUC0_28", "AUC28_TRUE")):
        inside = (table[f"{metric}_lower"] <= table[truth]) & (table[truth] <= table[f"{metric}_upper"])
        assert inside.mean() >= 0.8, (metric, inside.mean())
    # model-based and observed (NCA) peaks agree on the log scale
    ok = table.nca_Cmax > 0
    r = np.corrcoef(np.log(table.Cmax_median[ok]), np.log(table.nca_Cmax[ok]))[0, 1]
    assert r > 0.7  # NCA Cmax is one noisy sample (log SD 0.56) at sparse days


def test_auc_matches_quadrature():
    """The log-trapezoid AUC0-28 of ck_metrics' grid equals adaptive quadrature of the closed form."""
    from bayespk.evaluate.cellkinetics import _log_trapezoid

    kin = CELL_KINETICS["cart_piecewise"]
    p = dict(CMAX=24000.0, FX=3900.0, TMAX=9.3, ALPHA=0.16, FB=0.0079, BETA=0.0032)
    on, m = [np.array([4.0])], [0.6]
    grid = np.unique(np.r_[np.linspace(0, 28, 561), 4.0, 9.3])
    c = kin.level(grid, p, [np.full(len(grid), 4.0)], m)
    exact = sum(quad(lambda t: kin.level(np.array([t]), p, on, m)[0], a, b, epsabs=0, epsrel=1e-12)[0]
                for a, b in ((0, 4), (4, 9.3), (9.3, 28)))
    assert _log_trapezoid(grid, c[None, :])[0] == pytest.approx(exact, rel=1e-5)
