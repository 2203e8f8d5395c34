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
* whole-model priors from an earlier run or published estimates (every population parameter, jointly):
  :func:`~bayespk.model.prior_from.whole_model_prior`, or ``[prior_from]`` in a spec.
* dose selection with and without borrowing: :func:`bayespk.simulate.dose_table`
  on each fit (the regimen simulator; one table per prior).
* :mod:`~bayespk.borrowing.prior_file`: prior files (JSON) usable in a model
  spec as ``typical = { file = "PRIOR.json" }``.

See ``bayespk/borrowing/README.md`` for the methods, the CLI and measured numbers.

Examples
--------
>>> import bayespk.borrowing as bb
>>> prior = bb.BetaMixture([1.0], a=[11], b=[32]).robustify(0.2)
>>> post = bb.posterior(prior, r=1, n=6)
>>> round(bb.ess(bb.BetaMixture([1.0], [11], [32])), 6)
43.0
"""

from bayespk import _lazy_package

_lazy_package(__name__, {  # imported on first use (PEP 562): `bayespk prior show` needs no PyMC
    "ankylosing_spondylitis": "bayespk.borrowing.datasets:ankylosing_spondylitis",
    "crohn": "bayespk.borrowing.datasets:crohn",
    "whole_model_prior": "bayespk.model.prior_from:whole_model_prior",
    "ess": "bayespk.borrowing.ess:ess",
    "ess_table": "bayespk.borrowing.ess:ess_table",
    "MAPFit": "bayespk.borrowing.map_prior:MAPFit",
    "fit_map": "bayespk.borrowing.map_prior:fit_map",
    "validate_historical": "bayespk.borrowing.map_prior:validate_historical",
    "BetaMixture": "bayespk.borrowing.mixtures:BetaMixture",
    "GammaMixture": "bayespk.borrowing.mixtures:GammaMixture",
    "Mixture": "bayespk.borrowing.mixtures:Mixture",
    "NormalMixture": "bayespk.borrowing.mixtures:NormalMixture",
    "fit_mixture": "bayespk.borrowing.mixtures:fit_mixture",
    "mixture_from_dict": "bayespk.borrowing.mixtures:mixture_from_dict",
    "PKPrior": "bayespk.borrowing.pk_priors:PKPrior",
    "borrowing_report": "bayespk.borrowing.pk_priors:borrowing_report",
    "historical_from_fit": "bayespk.borrowing.pk_priors:historical_from_fit",
    "pk_map_prior": "bayespk.borrowing.pk_priors:pk_map_prior",
    "scale_estimates": "bayespk.borrowing.pk_priors:scale_estimates",
    "sigmoid_maturation": "bayespk.borrowing.pk_priors:sigmoid_maturation",
    "plot_densities": "bayespk.borrowing.plots:plot_densities",
    "plot_forest": "bayespk.borrowing.plots:plot_forest",
    "prior_document": "bayespk.borrowing.prior_file:prior_document",
    "read_prior": "bayespk.borrowing.prior_file:read_prior",
    "write_prior": "bayespk.borrowing.prior_file:write_prior",
    "SchemeFit": "bayespk.borrowing.schemes:SchemeFit",
    "commensurate_prior": "bayespk.borrowing.schemes:commensurate_prior",
    "exnex": "bayespk.borrowing.schemes:exnex",
    "power_prior": "bayespk.borrowing.schemes:power_prior",
    "power_prior_conjugate": "bayespk.borrowing.schemes:power_prior_conjugate",
    "Decision1S": "bayespk.borrowing.update:Decision1S",
    "Decision2S": "bayespk.borrowing.update:Decision2S",
    "log_marginal": "bayespk.borrowing.update:log_marginal",
    "oc_one_sample": "bayespk.borrowing.update:oc_one_sample",
    "oc_two_sample": "bayespk.borrowing.update:oc_two_sample",
    "posterior": "bayespk.borrowing.update:posterior",
    "prob_difference": "bayespk.borrowing.update:prob_difference",
    "prob_exceed": "bayespk.borrowing.update:prob_exceed",
})

__all__ = [
    "BetaMixture",
    "Decision1S",
    "Decision2S",
    "GammaMixture",
    "MAPFit",
    "Mixture",
    "NormalMixture",
    "PKPrior",
    "SchemeFit",
    "ankylosing_spondylitis",
    "crohn",
    "borrowing_report",
    "commensurate_prior",
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
    "validate_historical",
    "whole_model_prior",
    "write_prior",
]  # fmt: skip
