"""Exposure-response fits built by hand (no sampling), shared by the response and dose-table tests."""

from __future__ import annotations

import numpy as np
import pandas as pd
import xarray as xr

from bayespk.response import ResponseFit


def mock_fit(kind: str, values: dict, *, levels=None, n=400, sd=0.0, seed=0, observed=None) -> ResponseFit:
    """A ResponseFit whose posterior holds ``values`` (+ N(0, sd) noise), 2 chains x n/2 draws."""
    rng = np.random.default_rng(seed)
    shape = (2, n // 2)

    def draws(v):
        return v + sd * rng.standard_normal(shape)

    post = {"b_exposure": (("chain", "draw"), draws(values["b_exposure"]))}
    covs = [c for c in values if c.startswith("b_") and c != "b_exposure"]
    if covs:
        post["b_cov"] = (("chain", "draw", "covariate"), np.stack([draws(values[c]) for c in covs], axis=-1))
    if kind == "binary":
        post["intercept"] = (("chain", "draw"), draws(values["intercept"]))
    elif kind == "ordinal":
        post["cutpoints"] = (
            ("chain", "draw", "threshold"),
            np.stack([draws(values[f"cutpoint_ge{k}"]) for k in levels[1:]], axis=-1),
        )
    else:
        post["shape"] = (("chain", "draw"), draws(values["shape"]))
        post["scale"] = (("chain", "draw"), draws(values["scale"]))
    coords = {"chain": [0, 1], "covariate": [c[2:] for c in covs]}
    if kind == "ordinal":
        coords["threshold"] = list(levels[1:])
    ds = xr.Dataset(post, coords=coords).assign_coords(imputation=("chain", [0, 0]))
    if observed is None:
        r = np.random.default_rng(seed + 1)
        e = 10 ** r.normal(4, 0.5, 60)
        observed = pd.DataFrame({"ID": np.arange(60), "exposure": e})
        if kind == "binary":
            observed["RESP"] = r.binomial(1, 0.5, 60)
        elif kind == "ordinal":
            observed["CRS"] = r.choice(levels, 60)
        else:
            observed["PFS"], observed["EVENT"] = r.uniform(10, 500, 60), r.binomial(1, 0.7, 60)
        for c in covs:
            observed[c[2:]] = r.normal(1, 0.5, 60)
    outcome = {"binary": "RESP", "ordinal": "CRS", "tte": "PFS"}[kind]
    return ResponseFit(
        kind=kind,
        outcome=outcome,
        event="EVENT" if kind == "tte" else None,
        exposure_name="Cmax",
        covariates=[c[2:] for c in covs],
        reference={"exposure": 1e4, **{c[2:]: 1.0 for c in covs}},
        posterior=ds,
        observed=observed,
        levels=levels,
        notes=[],
        diagnostics={},
        settings={"n_imputations": 1, "chains": 2, "draws": n // 2},
    )
