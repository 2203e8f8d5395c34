"""bayespk: Bayesian population PK/PD modeling on PyMC.

>>> import bayespk as bpk
>>> ds = bpk.read_nonmem(bpk.datasets.path("theophylline"))
>>> model = bpk.PopulationModel("models/theophylline_1cmt_oral.toml", ds)  # doctest: +SKIP
>>> fit = bpk.fit(model)                                                   # doctest: +SKIP
>>> fit.summary()                                                          # doctest: +SKIP

The names below are imported on first use (PEP 562), so ``import bayespk``
and the commands that need no model (``bayespk data``, ``summary``,
``prior show``) do not load PyMC.
"""

import sys
import types
from importlib import import_module
from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("bayespk")
except PackageNotFoundError:  # pragma: no cover
    __version__ = "0+unknown"


def _resolve(target: str):
    """``"package.module:name"`` -> that object; ``"package.module"`` -> the module."""
    module, _, attr = target.partition(":")
    value = import_module(module)
    return getattr(value, attr) if attr else value


class _LazyPackage(types.ModuleType):
    """A package whose public names are imported on first use and then kept (PEP 562).

    ``_lazy`` maps each name to ``"module:attribute"`` (or ``"module"``).
    Importing a submodule of the same name as a public function (``bayespk.fit``,
    ``bayespk.borrowing.ess``) does not hide the function: the import system sets the
    submodule as an attribute of its package, and that is caught here.
    """

    def __getattr__(self, name: str):
        target = self.__dict__.get("_lazy", {}).get(name)
        if target is None:
            raise AttributeError(f"module {self.__name__!r} has no attribute {name!r}")
        value = _resolve(target)
        super().__setattr__(name, value)
        return value

    def __setattr__(self, name: str, value) -> None:
        target = self.__dict__.get("_lazy", {}).get(name, "")
        if isinstance(value, types.ModuleType) and ":" in target:
            value = _resolve(target)
        super().__setattr__(name, value)

    def __dir__(self) -> list[str]:
        return sorted(set(self.__dict__) | set(self.__dict__.get("_lazy", {})))


def _lazy_package(name: str, exports: dict[str, str]) -> None:
    """Make the package ``name`` (call it in its ``__init__``) import ``exports`` (name -> "module:attr") lazily."""
    module = sys.modules[name]
    module.__dict__["_lazy"] = dict(exports)
    module.__class__ = _LazyPackage


_lazy_package(__name__, {
    "AlgebraicModel": "bayespk.model.user:AlgebraicModel",
    "BayesPKError": "bayespk.errors:BayesPKError",
    "ConvergenceWarning": "bayespk.errors:ConvergenceWarning",
    "DataError": "bayespk.errors:DataError",
    "Dataset": "bayespk.data.nonmem:Dataset",
    "Fit": "bayespk.fit:Fit",
    "ODEModel": "bayespk.structural.diffeq:ODEModel",
    "PopulationModel": "bayespk.model:PopulationModel",
    "Prior": "bayespk.model:Prior",
    "Regimen": "bayespk.simulate.regimen:Regimen",
    "Solver": "bayespk.structural.diffeq:Solver",
    "Spec": "bayespk.model:Spec",
    "SpecError": "bayespk.errors:SpecError",
    "Target": "bayespk.simulate.exposure:Target",
    "compare": "bayespk.evaluate.compare:compare",
    "covariate_effects": "bayespk.evaluate.gof:covariate_effects",
    "datasets": "bayespk.data.bundled",
    "dose_table": "bayespk.simulate.doses:dose_table",
    "eta_covariates": "bayespk.evaluate.gof:eta_covariates",
    "fit": "bayespk.fit:fit",
    "gof": "bayespk.evaluate.gof:gof",
    "load": "bayespk.fit:load",
    "loo": "bayespk.evaluate.compare:loo",
    "npde": "bayespk.evaluate.npde:npde",
    "plot_individual": "bayespk.evaluate.plots:plot_individual",
    "prior_posterior": "bayespk.evaluate.gof:prior_posterior",
    "read_nonmem": "bayespk.data.nonmem:read_nonmem",
    "shrinkage": "bayespk.diagnostics:shrinkage",
    "simulate_regimens": "bayespk.simulate.simulation:simulate_regimens",
    "vpc": "bayespk.evaluate.vpc:vpc",
    # subpackages, reachable as attributes without an import of their own (``bpk.data.nonmem``), as before
    **{sub: f"bayespk.{sub}" for sub in ("borrowing", "data", "evaluate", "model", "parallel", "response", "simulate",
                                         "structural")},
})  # fmt: skip

__all__ = [
    "AlgebraicModel", "BayesPKError", "ConvergenceWarning", "DataError", "Dataset", "Fit", "ODEModel",
    "PopulationModel", "Prior", "Regimen", "Solver", "Spec", "SpecError", "Target", "compare", "covariate_effects",
    "datasets", "dose_table", "eta_covariates", "fit", "gof", "load", "loo", "npde", "plot_individual",
    "prior_posterior", "read_nonmem", "shrinkage", "simulate_regimens", "vpc",
]  # fmt: skip
