"""`bayespk prior map` reads RBesT's name of the standard error (``y_se``/``y.se``, its crohn example) as ``se``."""

import json
import warnings

import numpy as np
import pandas as pd
import pytest

from bayespk.borrowing.map_prior import validate_historical
from bayespk.cli import main
from bayespk.errors import DataError

# Shaped like RBesT's crohn example (placebo CDAI change from baseline, y_se = 88 / sqrt(n)); values illustrative.
N = np.array([20, 18, 33, 40])
CROHN = pd.DataFrame({"study": ["Gasparini", "Gasparini 2", "Hueber", "Sandborn"], "n": N,
                      "y": [-59.0, -52.0, -38.0, -49.0], "y_se": 88 / np.sqrt(N)})


@pytest.mark.parametrize("name", ["y_se", "y.se", "Y_SE"])
def test_y_se_is_read_as_se(name):
    out = validate_historical(CROHN.rename(columns={"y_se": name}), "normal")
    assert list(out.columns) == ["study", "y", "se", "n"]
    np.testing.assert_array_equal(out.se.to_numpy(), CROHN.y_se.to_numpy())
    assert out.study.tolist() == CROHN.study.tolist() and out.n.tolist() == N.tolist()


def test_se_and_y_se_together_refused():
    with pytest.raises(DataError, match="columns se and y_se both given"):
        validate_historical(CROHN.assign(se=1.0), "normal")


def test_missing_se_names_the_alias():
    with pytest.raises(DataError, match=r"missing column\(s\) se; .*se may be named y_se or y.se"):
        validate_historical(CROHN.drop(columns="y_se"), "normal")


def test_cli_prior_map_on_crohn(tmp_path):
    csv = tmp_path / "crohn.csv"
    CROHN.to_csv(csv, index=False)
    assert csv.read_text().splitlines()[0] == "study,n,y,y_se"
    out = tmp_path / "map.json"
    rc = main(["prior", "map", "--family", "normal", "--data", str(csv), "--tau-prior", "HalfNormal(sigma=44)",
               "--draws", "300", "--tune", "300", "--chains", "2", "--seed", "1", "--out", str(out)])
    assert rc == 0
    doc = json.loads(out.read_text())
    assert doc["source"]["n_studies"] == 4
    assert -70 < doc["summary"]["mean"] < -30


# ------------------------------------------------------------ ESS of RBesT's crohn MAP prior
# RBesT's normal-endpoint vignette (introduction_normal; crohn data, sigma 88, gMAP with tau ~ HalfNormal(0, 44),
# beta ~ N(0, 88), automixfit), mixture and ESS as printed in its rendered output (inst/doc/introduction_normal.html
# of the CRAN releases named; Morita in closed form since 1.5-3): weights, means, SDs; round(ess()) for elir,
# morita, moment; round(ess(robustify(map, weight = 0.2, mean = -50))) (elir).
RBEST_CROHN = {
    "1.7-2": ([0.4436779, 0.4436210, 0.1127011], [-52.0391043, -47.6848303, -49.9125720],
              [19.1739545, 7.8776093, 42.0115693], 40, 92, 20, 29),
    "1.7-1": ([0.4452686, 0.4401715, 0.1145599], [-52.0269894, -47.6641245, -49.9426095],
              [19.0634089, 7.8437271, 41.8509641], 40, 92, 20, 29),
    "1.7-0": ([0.64809468, 0.28699434, 0.06491098], [-47.37713685, -51.26304658, -68.78804534],
              [9.36876807, 30.45398192, 6.12245218], 39, 78, 22, 28),
    "1.6-4": ([0.59162717, 0.32138768, 0.08698515], [-50.65313147, -46.70524503, -53.26339142],
              [18.18086139, 6.79055597, 43.46350095], 38, 106, 20, 28),
    "1.6-3": ([0.5098301, 0.4169405, 0.0732294], [-50.3713496, -47.0181258, -57.2307772],
              [19.2743997, 7.7637077, 45.7483878], 39, 91, 21, 28),
    "1.5-4": ([0.5075897, 0.3880092, 0.1044011], [-51.0311517, -47.3338574, -51.9806241],
              [18.9514430, 7.0759890, 42.0485031], 41, 108, 20, 30),
    "1.5-3": ([0.3450238, 0.3304501, 0.2238776, 0.1006485], [-46.0922976, -57.1189870, -53.5474204, -33.5582472],
              [6.7830507, 12.3283282, 34.2780050, 10.2729225], 38, 107, 20, 27),
}


def rbest_morita_normal(w, m, s, sigma, flat=100.0):
    """RBesT's ess.normMix(method = "morita") (R/mixess.R) re-implemented with scipy only (no bayespk code)."""
    from scipy import optimize, stats

    w, m, s = (np.asarray(v, dtype=float) for v in (w, m, s))

    def dens(x):
        return float(np.sum(w * stats.norm.pdf(x, m, s)))

    # mixmode: the highest optimum of the log density over each component's central 99% interval
    optima = [optimize.minimize_scalar(lambda x: -np.log(dens(x)), bounds=(lo, hi), method="bounded",
                                       options={"xatol": 1e-10}).x
              for lo, hi in zip(stats.norm.ppf(0.005, m, s), stats.norm.ppf(0.995, m, s))]
    t = max(optima, key=dens)
    r = w * stats.norm.pdf(t, m, s) / dens(t)
    g, h = -(t - m) / s**2, -1 / s**2
    info = np.sum(r * g) ** 2 - np.sum(r * (h + g**2))
    return (info - 1 / (flat * np.max(s**2))) * sigma**2


@pytest.mark.parametrize("version", RBEST_CROHN)
def test_ess_of_rbest_crohn_map_prior_as_rbest_prints_it(version):
    from bayespk.borrowing import NormalMixture, ess

    w, m, s, elir, morita, moment, robust = RBEST_CROHN[version]
    mix = NormalMixture(w, m, s, sigma=88.0)
    assert abs(ess(mix, "elir") - elir) <= 0.5
    assert abs(ess(mix, "moment") - moment) <= 0.5
    # RBesT prints "Detected multiple modes" for 1.7-0: its mixmode takes the end of the search interval of the
    # narrow component at -68.8 (where the density still rises) for a mode. The density has one mode (its
    # derivative changes sign once), and bayespk does not warn; the ESS is taken at the same point.
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        value, value_100 = ess(mix, "morita"), ess(mix, "morita", s=100)
    # RBesT's s = 100 rounds to the printed value; the default (s -> inf) is higher by sigma^2 / (100 max s_k^2)
    assert abs(value_100 - morita) <= 0.5
    assert value - value_100 == pytest.approx(88.0**2 / (100 * max(s) ** 2), rel=1e-6)
    assert value_100 == pytest.approx(rbest_morita_normal(w, m, s, 88.0), rel=1e-6)
    assert abs(ess(mix.robustify(0.2, -50.0), "elir") - robust) <= 0.5
