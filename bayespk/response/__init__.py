"""Exposure-response (E-R) models for CAR-T studies.

Response (binary), CRS/ICANS grade (ordinal 0-4) and duration of response /
PFS (Weibull proportional hazards) against log10 exposure and baseline
covariates, with exposure uncertainty from the cellular-kinetics fit carried
in by multiple imputation over its posterior draws (a "cut": outcomes do not
feed back into the exposures). See :mod:`bayespk.response.models`.

Dose selection with fitted E-R models is :func:`bayespk.simulate.dose_table`
(``outcomes={label: fit}``); :func:`outcome_probabilities` and
:func:`outcome_table` are its lower-level pieces for exposures from elsewhere.

>>> from bayespk.response import fit_response
>>> resp = fit_response(df, cmax_draws, exposure_ids=ids, kind="binary", outcome="RESP",
...                     covariates=["LOGTB"])                                    # doctest: +SKIP
>>> resp.summary(); resp.curve([1e3, 1e4, 1e5]); fig = resp.plot()              # doctest: +SKIP
"""

from bayespk.response.doses import outcome_probabilities, outcome_table
from bayespk.response.models import ResponseFit, fit_response
from bayespk.response.plots import plot_response
from bayespk.simulate.plots import plot_dose_table

__all__ = ["ResponseFit", "fit_response", "outcome_probabilities", "outcome_table", "plot_dose_table",
           "plot_response"]
