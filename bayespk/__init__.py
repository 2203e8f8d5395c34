"""bayespk: Bayesian population PK/PD modeling on PyMC.

>>> import bayespk as bpk
>>> ds = bpk.read_nonmem(bpk.datasets.path("theophylline"))
>>> model = bpk.PopulationModel("models/theophylline_1cmt_oral.toml", ds)  # doctest: +SKIP
>>> fit = model.fit()                                                      # doctest: +SKIP
>>> fit.summary()                                                          # doctest: +SKIP
"""

from importlib.metadata import PackageNotFoundError, version

from bayespk.data import bundled as datasets
from bayespk.data.nonmem import Dataset, read_nonmem
from bayespk.errors import BayesPKError, ConvergenceWarning, DataError, SpecError
from bayespk.evaluate.compare import compare
from bayespk.fit import Fit, fit, load
from bayespk.model import PopulationModel, Prior, Spec
from bayespk.model.user import AlgebraicModel
from bayespk.structural.diffeq import ODEModel, Solver
from bayespk.simulate.regimen import Regimen, simulate_regimens

try:
    __version__ = version("bayespk")
except PackageNotFoundError:  # pragma: no cover
    __version__ = "0+unknown"

__all__ = [
    "AlgebraicModel", "BayesPKError", "ConvergenceWarning", "DataError", "Dataset", "Fit", "ODEModel",
    "PopulationModel", "Prior", "Regimen", "Solver", "Spec", "SpecError", "compare", "datasets", "fit", "load",
    "read_nonmem", "simulate_regimens",
]  # fmt: skip
