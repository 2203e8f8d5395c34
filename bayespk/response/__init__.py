"""Exposure-response (E-R) models for CAR-T studies.

Response (binary), CRS/ICANS grade (ordinal 0-4) and duration of response /
PFS (Weibull proportional hazards) against log10 exposure and baseline
covariates, with exposure uncertainty from the cellular-kinetics fit carried
in by multiple imputation over its posterior draws (a "cut": outcomes do not
feed back into the exposures). See :mod:`bayespk.response.models`.

>>> from bayespk.response import fit_response, dose_table
>>> resp = fit_response(df, cmax_draws, exposure_ids=ids, kind="binary", outcome="RESP",
...                     covariates=["LOGTB"])                                    # doctest: +SKIP
>>> resp.summary(); resp.curve([1e3, 1e4, 1e5]); fig = resp.plot()              # doctest: +SKIP
"""

from bayespk.response.doses import dose_table
from bayespk.response.models import ResponseFit, fit_response
from bayespk.response.plots import plot_dose_table, plot_response

__all__ = ["ResponseFit", "dose_table", "fit_response", "plot_dose_table", "plot_response"]
