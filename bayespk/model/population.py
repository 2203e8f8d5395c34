"""The hierarchical population model: a Spec and a Dataset become a ``pm.Model``.

For every structural parameter ``P`` with IIV::

    P_i = P * prod_c effect_c(x_ic) * exp(eta_P_i),    eta_P_i = omega_P * z_P_i,  z ~ N(0, 1)

(non-centered). Predictions are the closed forms of :mod:`bayespk.structural`
summed over each subject's doses; the residual error and BLQ handling follow
:class:`~bayespk.model.spec.ErrorSpec`.

Names in the model (and so in the posterior) are the spec's: ``CL``, ``V``,
``KA`` (typical values, natural scale), ``omega_<P>``, ``eta_<P>`` (dims
``ID``), ``<P>_<COL>`` (covariate coefficients), ``sigma_add`` /
``sigma_prop`` / ``sigma_log``, and the observed ``DV`` (dims ``obs``).
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt

from bayespk.data.design import Design
from bayespk.data.nonmem import Dataset, read_nonmem
from bayespk.errors import DataError, SpecError
from bayespk.model.priors import Prior
from bayespk.model.spec import ERROR_MODELS, CovariateSpec, ErrorSpec, Spec
from bayespk.structural import STRUCTURES, superpose

__all__ = ["PopulationModel"]


class PopulationModel:
    """A hierarchical population PK model ready to build and fit.

    Parameters
    ----------
    spec : Spec or path
        The model specification (a :class:`Spec`, or a TOML file path).
    data : Dataset, DataFrame or path, optional
        The data; defaults to the spec's ``[data] path``.

    Examples
    --------
    >>> import bayespk as bpk
    >>> model = bpk.PopulationModel("models/theophylline_1cmt_oral.toml")  # doctest: +SKIP
    >>> fit = model.fit(draws=500)  # doctest: +SKIP
    """

    def __init__(self, spec: Spec | str | Path, data: Dataset | pd.DataFrame | str | Path | None = None):
        self.spec = spec if isinstance(spec, Spec) else Spec.from_toml(spec)
        if data is None:
            if self.spec.data.path is None:
                raise SpecError("no data: give data=... or a [data] path in the spec")
            data = self.spec.data.path
        if not isinstance(data, Dataset):
            data = read_nonmem(data, aliases=self.spec.data.aliases)
            if self.spec.data.path is None and isinstance(data.source, str) and data.source != "<DataFrame>":
                self.spec = self.spec.with_data(data.source)
        self.data = data
        self.structure = STRUCTURES[self.spec.structure]
        self.design = self._design(grid=None)
        self._covariates = self._covariate_design()
        self.spec = self._resolve(self.spec)
        self._check_error_model()

    # ------------------------------------------------------------------ setup
    def _design(self, grid, grid_subjects=None) -> Design:
        design = Design.from_dataset(self.data, self.structure, grid=grid, grid_subjects=grid_subjects)
        if grid is None and self.spec.error.blq == "drop":
            keep = design.obs_cens == 0
            design = _subset(design, keep)
        return design

    def _covariate_design(self) -> dict[str, dict]:
        """Per covariate effect: subject values (and levels for categorical)."""
        out = {}
        for c in self.spec.covariates:
            values = self.data.subject_covariate(c.column, needed_for=f"the {c.effect} effect of {c.column} on "
                                                                      f"{c.parameter}")
            values = values.reindex(self.design.subject_ids)
            if c.effect == "categorical":
                levels = sorted(values.unique(), key=lambda v: (isinstance(v, str), v))
                ref = c.reference if c.reference is not None else levels[0]
                if ref not in levels:
                    raise SpecError(f"covariate {c.name}: reference level {ref!r} does not occur in column "
                                    f"{c.column} (levels: {', '.join(map(str, levels))})")
                others = [lv for lv in levels if lv != ref]
                if not others:
                    raise DataError(f"column {c.column}: every subject has level {ref!r}; a categorical "
                                    f"effect on {c.parameter} cannot be estimated")
                out[c.name] = {"values": values.to_numpy(), "reference": ref, "levels": others}
            else:
                if values.dtype == object:
                    bad = values[pd.to_numeric(values, errors="coerce").isna()]
                    raise DataError(f"{self._where(bad.index[0], c.column)}: value {bad.iloc[0]!r} is not a "
                                    f"number; a {c.effect} effect needs a numeric covariate")
                x = values.to_numpy(float)
                if c.effect == "power" and (x <= 0).any():
                    i = values.index[np.argmax(x <= 0)]
                    raise DataError(f"{self._where(i, c.column)}: value {values[i]:g} is not > 0; a power "
                                    f"effect of {c.column} on {c.parameter} needs positive values")
                out[c.name] = {"values": x}
        return out

    def _where(self, subject, column: str) -> str:
        """'row R, column C' of a subject's first record, for error messages."""
        t = self.data.table
        row = int(t.ROW[t.ID == subject].iloc[0])
        return f"row {row}, column {column} (ID {_label(subject)})"

    def _resolve(self, spec: Spec) -> Spec:
        """Fill data-dependent defaults so the stored spec reproduces the run."""
        covs = []
        for c in spec.covariates:
            if c.coefficient is None:
                c = replace(c, coefficient=c.default_prior())
            if c.effect == "categorical" and c.reference is None:
                ref = self._covariates[c.name]["reference"]
                c = replace(c, reference=float(ref) if not isinstance(ref, str) else ref)
            covs.append(c)
        priors = dict(spec.error.priors)
        dv = self.design.obs_dv[self.design.obs_cens == 0]
        for name in ERROR_MODELS[spec.error.model]:
            if name in priors:
                continue
            if name == "sigma_add":
                scale = float(np.nanstd(dv)) if len(dv) > 1 and np.nanstd(dv) > 0 else 1.0
                priors[name] = Prior("HalfNormal", sigma=float(f"{scale:.3g}"))
            else:
                priors[name] = Prior("HalfNormal", sigma=0.5)
        return replace(spec, covariates=tuple(covs), error=ErrorSpec(spec.error.model, priors, spec.error.blq))

    def _check_error_model(self) -> None:
        d = self.design
        model = self.spec.error.model
        if model in ("proportional", "lognormal"):
            undosed = d.first_dose_time() & (d.obs_cens == 0)
            if undosed.any():
                k = int(np.argmax(undosed))
                raise DataError(
                    f"row {d.obs_row[k]}: observation at TIME {d.obs_time[k]:g} has no dose before it, so "
                    f"its prediction is 0, which {model} error cannot fit; use additive or combined error, "
                    f"or set MDV=1 on pre-dose rows ({int(undosed.sum())} such rows)"
                )
        if model == "lognormal":
            bad = (d.obs_cens == 0) & (d.obs_dv <= 0)
            if bad.any():
                k = int(np.argmax(bad))
                raise DataError(f"row {d.obs_row[k]}, column DV: {d.obs_dv[k]:g} is not > 0, which lognormal "
                                f"error needs; flag it BLQ or use additive/combined error")

    # ------------------------------------------------------------------ build
    @property
    def coords(self) -> dict:
        coords = {"ID": self.design.subject_ids, "obs": np.arange(self.design.n_obs)}
        for c in self.spec.covariates:
            if c.effect == "categorical":
                coords[f"{c.column}_level"] = [_label(v) for v in self._covariates[c.name]["levels"]]
        return coords

    def individual_parameters(self) -> tuple[dict, dict]:
        """Create typical values, IIV and covariate effects in the current model.

        Returns per-subject tensors of the individual parameters and of the
        population parameters (covariate effects, eta = 0).
        """
        individual, population = {}, {}
        ones = np.ones(self.design.n_subjects)
        for name, p in self.spec.parameters.items():
            log_pop = pt.log(p.typical.create(name)) * ones
            for c in self.spec.covariates:
                if c.parameter == name:
                    log_pop = log_pop + self._log_effect(c)
            log_ind = log_pop
            if p.iiv is not None:
                omega = p.iiv.create(f"omega_{name}")
                z = pm.Normal(f"z_{name}", 0.0, 1.0, dims="ID")
                log_ind = log_pop + pm.Deterministic(f"eta_{name}", omega * z, dims="ID")
            individual[name] = pt.exp(log_ind)
            population[name] = pt.exp(log_pop)
        return individual, population

    def _log_effect(self, c: CovariateSpec):
        """log of the covariate factor per subject (creates the coefficient's prior)."""
        info = self._covariates[c.name]
        x = info["values"]
        if c.effect == "categorical":
            levels = info["levels"]
            theta = (pt.as_tensor(np.full(len(levels), c.coefficient)) if c.fixed
                     else c.coefficient.create(c.name, dims=f"{c.column}_level"))
            index = np.array([levels.index(v) + 1 if v in levels else 0 for v in x])
            return pt.concatenate([pt.zeros(1), theta])[index]
        theta = c.coefficient if c.fixed else c.coefficient.create(c.name)
        if c.effect == "power":
            return theta * np.log(x / c.reference)
        if c.effect == "exponential":
            return theta * (x - c.reference)
        factor = 1.0 + theta * (x - c.reference)  # linear: must stay positive for every subject
        pm.Potential(f"{c.name}_positive", pt.switch(pt.all(factor > 0), 0.0, -np.inf))
        return pt.log(pt.maximum(factor, 1e-300))

    def predict(self, params: dict, design: Design):
        """Concentrations at the design's observations from per-subject parameters."""
        s = design.obs_subject
        gathered = {k: v[s][:, None] for k, v in params.items()}
        contrib = self.structure.dose_contribution(design.dt, design.amt, design.rate, design.into_depot, gathered)
        return superpose(contrib, design.mask)

    def build(self) -> pm.Model:
        """The PyMC model with the likelihood of the observations."""
        with pm.Model(coords=self.coords) as model:
            individual, _ = self.individual_parameters()
            self._likelihood(self.predict(individual, self.design), self.design)
        return model

    def build_prediction(self, grid: np.ndarray | None = None, *, simulate: bool = False,
                         grid_subjects=None) -> tuple[pm.Model, Design]:
        """A model without likelihood giving ``IPRED`` (individual) and ``PRED`` (typical subject).

        Free variables have the same names as in :meth:`build`, so posterior
        draws can be pushed through it with ``pm.sample_posterior_predictive``.
        ``grid`` evaluates every subject at these times instead of at its observations.
        ``simulate=True`` adds ``DV_sim``: a new observation drawn from the residual
        error model around ``IPRED``, uncensored (for VPC, NPDE, prior predictive checks).
        """
        d = self._design(grid=grid, grid_subjects=grid_subjects) if grid is not None else self.design
        with pm.Model(coords=self.coords | {"obs": np.arange(d.n_obs)}) as model:
            individual, population = self.individual_parameters()
            ipred = pm.Deterministic("IPRED", self.predict(individual, d), dims="obs")
            pm.Deterministic("PRED", self.predict(population, d), dims="obs")
            if simulate:
                model.register_rv(self._residual(ipred), name="DV_sim", dims=("obs",))
        return model, d

    def _residual(self, f):
        """The residual error distribution around predictions ``f`` (creates the sigma priors)."""
        err = self.spec.error
        sig = {name: err.priors[name].create(name) for name in err.names}
        if err.model == "lognormal":
            return pm.LogNormal.dist(mu=pt.log(pt.maximum(f, 1e-300)), sigma=sig["sigma_log"])
        if err.model == "additive":
            sd = sig["sigma_add"] * pt.ones_like(f)
        elif err.model == "proportional":
            sd = sig["sigma_prop"] * f
        else:
            sd = pt.sqrt(sig["sigma_add"] ** 2 + (sig["sigma_prop"] * f) ** 2)
        return pm.Normal.dist(mu=f, sigma=sd)

    def _likelihood(self, f, d: Design):
        dist = self._residual(f)
        cens = d.obs_cens
        if (cens == 0).all():
            return _observe(dist, d.obs_dv)
        # pm.Censored: a value equal to `lower` means "at or below lower" (BLQ, M3: P(Y < LLOQ));
        # a value equal to `upper` means "at or above upper" (right-censored, CENS = -1).
        lower = np.where(cens == 1, d.obs_limit, -np.inf)
        upper = np.where(cens == -1, d.obs_limit, np.inf)
        y = np.where(cens != 0, d.obs_limit, d.obs_dv)
        return pm.Censored("DV", dist, lower=lower, upper=upper, observed=y, dims="obs")

    # ------------------------------------------------------------------ fit
    def prior_predictive(self, **kwargs):
        """Prior predictive check before fitting: a VPC with replicates drawn from the priors.

        Takes the options of :func:`bayespk.evaluate.vpc.vpc`; returns a VPC
        (unpacks as ``figure, table``).
        """
        from bayespk.evaluate.vpc import vpc

        return vpc(self, **kwargs)

    def fit(self, **sampler):
        """Sample the posterior; see :func:`bayespk.fit.fit` for the options."""
        from bayespk.fit import fit

        return fit(self, **sampler)

    def __repr__(self) -> str:
        s = self.data.summary
        return (f"PopulationModel({self.spec.name!r}: {self.spec.structure}, {s.n_subjects} subjects, "
                f"{self.design.n_obs} observations, {self.spec.error.model} error)")


def _label(v) -> str:
    """A level as text: 1.0 -> "1", "male" -> "male"."""
    return str(int(v)) if isinstance(v, float) and v.is_integer() else str(v)


def _observe(dist, y):
    """Register ``dist`` as the observed ``DV`` in the current model."""
    model = pm.modelcontext(None)
    rv = model.register_rv(dist, name="DV", observed=y, dims=("obs",))
    return rv


def _subset(d: Design, keep: np.ndarray) -> Design:
    fields = {k: getattr(d, k) for k in d.__dataclass_fields__}
    for k, v in fields.items():
        if k != "subject_ids":
            fields[k] = v[keep]
    return Design(**fields)
