"""Dose-escalation designs and their operating characteristics.

* :mod:`bayespk.design.escalation`: BOIN, mTPI-2 (keyboard) and 3+3 decision
  rules and tables, the next-dose decision for observed cohort data, and MTD
  selection by isotonic regression.
* :mod:`bayespk.design.boin12`: BOIN12 (Lin et al. 2020), the phase I/II utility-based design for the
  optimal biological dose: desirability scores, admissibility, next dose, OBD selection, simulation.
* :mod:`bayespk.design.simulation`: operating characteristics by simulating
  trials on user scenarios, run through the Dask runner
  (:func:`bayespk.parallel.run_tasks`).
* :mod:`bayespk.design.blrm`: the Bayesian logistic regression model (BLRM, Neuenschwander et al. 2008)
  with escalation with overdose control, bivariate-normal (mixture) priors, and MAP priors from historical
  dose-toxicity data (PyMC + nutpie, imported when a posterior is computed).
* :mod:`bayespk.design.blrm_simulation`: operating characteristics of BLRM + EWOC escalation by simulation
  (grid posterior), through the Dask runner.
* :mod:`bayespk.design.blrm_combination`: the two-drug combination BLRM (Neuenschwander et al. 2015) with
  EWOC on a grid of dose combinations, its importance-sampling posterior, and operating characteristics of a
  combination trial by simulation through the Dask runner.
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
from bayespk.design.blrm_combination import (
    CombinationData,
    CombinationOperatingCharacteristics,
    CombinationPosterior,
    combination_ewoc,
    combination_is_posterior,
    combination_operating_characteristics,
    combination_posterior,
    simulate_combination_trials,
)
from bayespk.design.blrm_simulation import (
    BLRMGridPosterior,
    BLRMOperatingCharacteristics,
    blrm_grid_posterior,
    blrm_operating_characteristics,
    simulate_blrm_trials,
)
from bayespk.design.boin12 import (
    Boin12,
    Boin12Decision,
    Boin12OperatingCharacteristics,
    Utility,
    boin12_next_dose,
    boin12_operating_characteristics,
    rds_table,
    select_obd,
    simulate_boin12_trials,
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
    "BLRMGridPosterior",
    "BLRMOperatingCharacteristics",
    "CombinationData",
    "CombinationOperatingCharacteristics",
    "CombinationPosterior",
    "blrm_grid_posterior",
    "blrm_operating_characteristics",
    "combination_ewoc",
    "combination_is_posterior",
    "combination_operating_characteristics",
    "combination_posterior",
    "simulate_combination_trials",
    "simulate_blrm_trials",
    "BLRMMapPrior",
    "BLRMPosterior",
    "BVNMixture",
    "Boin",
    "Boin12",
    "Boin12Decision",
    "Boin12OperatingCharacteristics",
    "BoinBoundaries",
    "DesignError",
    "EwocDecision",
    "Mtpi2",
    "Mtpi2Table",
    "NextDose",
    "OperatingCharacteristics",
    "ThreePlusThree",
    "blrm_map_prior",
    "boin12_next_dose",
    "boin12_operating_characteristics",
    "blrm_posterior",
    "boin_boundaries",
    "ewoc_decision",
    "fit_bvn_mixture",
    "make_design",
    "mtpi2_table",
    "next_dose",
    "operating_characteristics",
    "pava",
    "rds_table",
    "read_blrm_prior",
    "select_mtd",
    "select_obd",
    "simulate_boin12_trials",
    "simulate_trials",
    "Utility",
    "write_blrm_prior",
]
