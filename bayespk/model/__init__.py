"""Model layer: priors, specs, and the PopulationModel that builds a ``pm.Model``."""

from bayespk.model.population import PopulationModel
from bayespk.model.priors import Prior
from bayespk.model.spec import CovariateSpec, DataSpec, ErrorSpec, ParameterSpec, SamplerSpec, Spec

__all__ = ["CovariateSpec", "DataSpec", "ErrorSpec", "ParameterSpec", "PopulationModel", "Prior",
           "SamplerSpec", "Spec"]
