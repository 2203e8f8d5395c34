"""``compare`` refuses fits of different data: the PK observations (DV) and, for PK/PD fits, the PD observations
(DV_PD), by count, value, ID and TIME; the message names what differs. Fits built without sampling."""

from __future__ import annotations

import warnings
from types import SimpleNamespace

import numpy as np
import pytest
import xarray as xr

import bayespk as bpk
from bayespk.evaluate.compare import data_difference
from bayespk.fit import Fit

# a PK/PD study as the fit stores it: 5 concentrations (dim obs) and 4 effects (dim pd_obs)
PK = {"SUBJECT": [1, 1, 2, 2, 3], "TIME": [0.5, 2.0, 0.5, 2.0, 1.0], "DV": [4.1, 2.5, 3.9, 2.2, 3.0]}
PD = {"PD_SUBJECT": [1, 2, 2, 4], "PD_TIME": [1.0, 1.0, 6.0, 3.0], "DV_PD": [55.0, 61.0, 48.0, 70.5]}


class _StubFit(Fit):
    """A Fit whose pointwise log-likelihood is given (nothing sampled, no model built)."""

    def __init__(self, name: str, pk: dict = PK, pd: dict | None = PD, seed: int = 0):
        rng = np.random.default_rng(seed)
        ll = {"DV": (("chain", "draw", "obs"), rng.normal(-1.0, 0.3, (2, 100, len(pk["DV"]))))}
        observed = {"DV": ("obs", np.asarray(pk["DV"], float))}
        const = {"SUBJECT": ("obs", np.asarray(pk["SUBJECT"])), "TIME": ("obs", np.asarray(pk["TIME"], float)),
                 "ROW": ("obs", np.arange(len(pk["DV"])) + 1)}
        if pd is not None:
            ll["DV_PD"] = (("chain", "draw", "pd_obs"), rng.normal(-2.0, 0.3, (2, 100, len(pd["DV_PD"]))))
            observed["DV_PD"] = ("pd_obs", np.asarray(pd["DV_PD"], float))
            const |= {"PD_SUBJECT": ("pd_obs", np.asarray(pd["PD_SUBJECT"])),
                      "PD_TIME": ("pd_obs", np.asarray(pd["PD_TIME"], float)),
                      "PD_ROW": ("pd_obs", np.arange(len(pd["DV_PD"])) + 100)}
        tree = xr.DataTree(children={
            "posterior": xr.DataTree(xr.Dataset({"CL": (("chain", "draw"), rng.normal(size=(2, 100)))})),
            "observed_data": xr.DataTree(xr.Dataset(observed)),
            "constant_data": xr.DataTree(xr.Dataset(const)),
        })  # fmt: skip
        super().__init__(tree, SimpleNamespace(name=name))
        self._ll = xr.Dataset(ll)

    def log_likelihood(self):
        return self._ll


def _with(base: dict, **changes) -> dict:
    return {k: list(v) for k, v in base.items()} | changes


def _compare(a: Fit, b: Fit):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bpk.compare({"a": a, "b": b})


def test_pkpd_fits_of_the_same_data_are_compared():
    table = _compare(_StubFit("a", seed=1), _StubFit("b", seed=2))
    assert set(table.index) == {"a", "b"} and np.isfinite(table.elpd).all()
    assert data_difference(_StubFit("a"), _StubFit("b")) is None


@pytest.mark.parametrize("b_pd, message", [
    (_with(PD, DV_PD=[55.0, 61.0, 48.5, 70.5]),
     "the PD observations (DV_PD) differ in value: observation 3 (ID 2, TIME 6) has value 48 in 'a', 48.5 in 'b'"),
    (_with(PD, DV_PD=[56.0, 61.0, 48.0, 71.0]),
     "observation 1 (ID 1, TIME 1) has value 55 in 'a', 56 in 'b' (and 1 more observation)"),
    (_with(PD, PD_SUBJECT=[1, 2, 3, 4]),
     "the PD observations (DV_PD) differ in ID: observation 3 (ID 2, TIME 6) has ID 2 in 'a', 3 in 'b'"),
    (_with(PD, PD_TIME=[1.0, 1.0, 6.0, 3.5]),
     "the PD observations (DV_PD) differ in TIME: observation 4 (ID 4, TIME 3) has TIME 3 in 'a', 3.5 in 'b'"),
    ({k: v[:3] for k, v in PD.items()}, "'a' has 4 PD observations (DV_PD), 'b' 3"),
    (None, "'a' has 4 PD observations (DV_PD), 'b' none"),
])
def test_pkpd_fits_of_other_pd_data_are_refused_naming_what_differs(b_pd, message):
    """Same concentrations, other PD observations: refused (before, only DV was compared and these ran)."""
    with pytest.raises(bpk.BayesPKError) as e:
        _compare(_StubFit("a"), _StubFit("b", pd=b_pd))
    text = str(e.value)
    assert text.startswith("fits 'a' and 'b' are not of the same data: ") and message in text, text
    assert text.endswith("; LOO compares models of the same data")


def test_pk_only_fit_against_a_pkpd_fit_and_pk_differences():
    assert data_difference(_StubFit("a", pd=None), _StubFit("b")) == "'a' has no PD observations (DV_PD), 'b' 4"
    other_pk = _with(PK, DV=[4.1, 2.5, 3.9, 2.2, 3.25])
    assert data_difference(_StubFit("a"), _StubFit("b", pk=other_pk), "a", "b") == (
        "the PK observations (DV) differ in value: observation 5 (ID 3, TIME 1) has value 3 in 'a', 3.25 in 'b'")
    # PK-only fits of the same data: compared as before
    assert len(_compare(_StubFit("a", pd=None), _StubFit("b", pd=None, seed=3))) == 2


def test_text_ids_are_compared_as_written():
    a = _StubFit("a", pk=_with(PK, SUBJECT=["001", "001", "002", "002", "003"]), pd=None)
    b = _StubFit("b", pk=_with(PK, SUBJECT=["001", "001", "002", "002", "3"]), pd=None)
    assert data_difference(a, b, "a", "b") == (
        "the PK observations (DV) differ in ID: observation 5 (ID 003, TIME 1) has ID 003 in 'a', 3 in 'b'")
