"""`bayespk prior map` reads RBesT's name of the standard error (``y_se``/``y.se``, its crohn example) as ``se``."""

import json

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
