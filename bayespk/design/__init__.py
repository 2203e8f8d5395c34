"""Dose-escalation designs and their operating characteristics.

* :mod:`bayespk.design.escalation`: BOIN, mTPI-2 (keyboard) and 3+3 decision
  rules and tables, the next-dose decision for observed cohort data, and MTD
  selection by isotonic regression.
* :mod:`bayespk.design.simulation`: operating characteristics by simulating
  trials on user scenarios, run through the Dask runner
  (:func:`bayespk.parallel.run_tasks`).
* :mod:`bayespk.design.blrm`: the Bayesian logistic regression model (BLRM, Neuenschwander et al. 2008)
  with escalation with overdose control, bivariate-normal (mixture) priors, and MAP priors from historical
  dose-toxicity data (PyMC + nutpie, imported when a posterior is computed).
* ``bayespk design boundaries | next | simulate`` (:mod:`bayespk.design.cli`).

Only numpy and scipy are imported here (no PyMC).
"""

from bayespk.design.blrm import (
    BLRMMapPrior,
    BLRMPosterior,
    BVNMixture,
    EwocDecision,
    blrm_map_prior,
    blrm_posterior,
    ewoc_decision,
    fit_bvn_mixture,
    read_blrm_prior,
    write_blrm_prior,
)
from bayespk.design.escalation import (
    DESIGNS,
    Boin,
    BoinBoundaries,
    DesignError,
    Mtpi2,
    Mtpi2Table,
    NextDose,
    ThreePlusThree,
    boin_boundaries,
    make_design,
    mtpi2_table,
    next_dose,
    pava,
    select_mtd,
)
from bayespk.design.simulation import OperatingCharacteristics, operating_characteristics, simulate_trials

__all__ = [
    "DESIGNS",
    "BLRMMapPrior",
    "BLRMPosterior",
    "BVNMixture",
    "Boin",
    "BoinBoundaries",
    "DesignError",
    "EwocDecision",
    "Mtpi2",
    "Mtpi2Table",
    "NextDose",
    "OperatingCharacteristics",
    "ThreePlusThree",
    "blrm_map_prior",
    "blrm_posterior",
    "boin_boundaries",
    "ewoc_decision",
    "fit_bvn_mixture",
    "make_design",
    "mtpi2_table",
    "next_dose",
    "operating_characteristics",
    "pava",
    "read_blrm_prior",
    "select_mtd",
    "simulate_trials",
    "write_blrm_prior",
]
