"""Borrowing prior information for small and rare-disease studies.

* :mod:`~bayespk.borrowing.map_prior`: meta-analytic-predictive (MAP) priors
  from historical studies (binomial, normal with known SE, Poisson), fitted
  with NUTS (Neuenschwander et al. 2010; Schmidli et al. 2014).
* :mod:`~bayespk.borrowing.mixtures`: beta / normal / gamma mixtures, EM
  fitting with automatic number of components, robustification.
* :mod:`~bayespk.borrowing.ess`: effective sample size by moment matching,
  Morita et al. (2008) and ELIR (Neuenschwander et al. 2020).
* :mod:`~bayespk.borrowing.update`: analytic posterior updating of mixture
  priors, decision rules, operating characteristics.
* :mod:`~bayespk.borrowing.schemes`: power prior (Ibrahim & Chen 2000),
  commensurate prior (Hobbs et al. 2011), EXNEX (Neuenschwander et al. 2016).
* :mod:`~bayespk.borrowing.pk_priors`: robust MAP priors on log typical PK
  values for a new population (allometry, maturation), ESS in patients.
* :mod:`~bayespk.borrowing.dose`: probability of target attainment / of
  exceeding a safety limit per candidate dose, and the best dose.
* :mod:`~bayespk.borrowing.prior_file`: prior files (JSON) usable in a model
  spec as ``typical = { file = "PRIOR.json" }``.

See ``bayespk/borrowing/README.md`` for the methods, the CLI and measured numbers.

Examples
--------
>>> import bayespk.borrowing as bb
>>> prior = bb.BetaMixture([1.0], a=[11], b=[32]).robustify(0.2)
>>> post = prior.posterior(r=1, n=6)
>>> round(bb.ess(bb.BetaMixture([1.0], [11], [32])), 6)
43.0
"""

from bayespk.borrowing.datasets import ankylosing_spondylitis
from bayespk.borrowing.dose import (
    DoseTable,
    EmaxResponse,
    PKDraws,
    Regimen,
    Target,
    dose_table,
    steady_state_exposure,
)
from bayespk.borrowing.ess import ess, ess_table
from bayespk.borrowing.map_prior import MAPFit, fit_map, validate_historical
from bayespk.borrowing.mixtures import (
    BetaMixture,
    GammaMixture,
    Mixture,
    NormalMixture,
    fit_mixture,
    mixture_from_dict,
)
from bayespk.borrowing.pk_priors import (
    PKPrior,
    borrowing_report,
    historical_from_fit,
    pk_map_prior,
    scale_estimates,
    sigmoid_maturation,
)
from bayespk.borrowing.plots import plot_densities, plot_dose_curves, plot_forest
from bayespk.borrowing.prior_file import prior_document, read_prior, write_prior
from bayespk.borrowing.schemes import SchemeFit, commensurate_prior, exnex, power_prior, power_prior_conjugate
from bayespk.borrowing.update import (
    Decision1S,
    Decision2S,
    log_marginal,
    oc_one_sample,
    oc_two_sample,
    posterior,
    prob_difference,
    prob_exceed,
)

__all__ = [
    "BetaMixture",
    "Decision1S",
    "Decision2S",
    "DoseTable",
    "EmaxResponse",
    "GammaMixture",
    "MAPFit",
    "Mixture",
    "NormalMixture",
    "PKDraws",
    "PKPrior",
    "Regimen",
    "SchemeFit",
    "Target",
    "ankylosing_spondylitis",
    "borrowing_report",
    "commensurate_prior",
    "dose_table",
    "ess",
    "ess_table",
    "exnex",
    "fit_map",
    "fit_mixture",
    "historical_from_fit",
    "log_marginal",
    "mixture_from_dict",
    "oc_one_sample",
    "oc_two_sample",
    "pk_map_prior",
    "plot_densities",
    "plot_dose_curves",
    "plot_forest",
    "posterior",
    "power_prior",
    "power_prior_conjugate",
    "prior_document",
    "prob_difference",
    "prob_exceed",
    "read_prior",
    "scale_estimates",
    "sigmoid_maturation",
    "steady_state_exposure",
    "validate_historical",
    "write_prior",
]  # fmt: skip
