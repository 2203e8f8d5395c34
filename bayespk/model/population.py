"""The hierarchical population model: a Spec and a Dataset become a ``pm.Model``.

For every structural parameter ``P``::

    P_ij = P * prod_c effect_c(x_c(t_j)) * exp(eta_P_i + kappa_P_i,occ(j))
    eta_P_i = omega_P**(1 - w_P) * z_P_i,  z_P_i ~ N(0, omega_P**w_P)
    kappa_P_ik = omega_iov_P * z_iov_P_ik,  z_iov_P_ik ~ N(0, 1)

with the centring weight ``w_P`` in [0, 1] (``[parameters.P] centered``; 0:
non-centered, 1: the etas themselves are sampled; every weight gives the same
model). A weight the spec leaves open under ``[sampler] centering = "auto"``
is a shared variable ``centering_<P>`` (0 until the fit's warm-up sets it), so
changing it needs no new compilation. Etas of the parameters listed in the spec's ``[iiv]
correlated`` are correlated: ``eta_i = diag(omega) L z_i`` with ``L`` the
Cholesky factor of a correlation matrix with an LKJ prior.

Covariates and occasions are read from the record in effect at each
observation (last observation carried forward), so time-varying covariates
and inter-occasion variability give each observation its own parameters.
Predictions are the closed forms of :mod:`bayespk.structural` summed over the
subject's dose records, every record evaluated with the parameters in effect
at the observation. This is exact while parameters stay constant from a dose
to the observations it reaches (baseline covariates; occasions separated by
washout, or each starting with its own dose once earlier doses have washed
out); where a parameter changes while earlier doses are still present, the
carry-over of those doses is computed with the new value. The residual error
and BLQ handling follow :class:`~bayespk.model.spec.ErrorSpec`.

Names in the model (and so in the posterior) are the spec's: ``CL``, ``V``,
``KA`` (typical values, natural scale), ``omega_<P>``, ``eta_<P>`` (dims
``ID``), ``omega_iov_<P>``, ``kappa_<P>`` (dims ``occasion``), ``corr_<P>_<Q>``,
``<P>_<COL>`` (covariate coefficients), ``sigma_add`` / ``sigma_prop`` /
``sigma_log``, ``nu`` (Student-t), and the observed ``DV`` (dims ``obs``).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import pandas as pd
import pymc as pm
import pytensor.tensor as pt
import xarray as xr

from bayespk.data.design import Design
from bayespk.data.nonmem import NONMEM_COLUMNS, Dataset, id_label, read_nonmem
from bayespk.errors import DataError, Moved, SpecError
from bayespk.model.joint_prior import JOINT_DIM, JOINT_NAME
from bayespk.model.likelihood import error_distribution, likelihood_distribution, observe
from bayespk.model.predictors import predictor
from bayespk.model.priors import Prior
from bayespk.model.spec import DEFAULT_NU, ERROR_MODELS, CovariateSpec, Spec
from bayespk.rundir import read_fit_tree
from bayespk.structural import STRUCTURES
from bayespk.structural._xp import take
from bayespk.structural.pd import PD_MODELS

__all__ = ["PopulationModel"]


class PopulationModel:
    """A hierarchical population PK model ready to build and fit.

    Parameters
    ----------
    spec : Spec or path
        The model specification (a :class:`Spec`, or a TOML file path).
    data : Dataset, DataFrame or path, optional
        The data; defaults to the spec's ``[data] path``.
    observations_as_data : bool
        Hold the observed values and censoring limits as shared data
        (``pm.Data``) rather than graph constants, so models that differ only
        in them (replicates of a simulation-based calibration, folds of a
        cross-validation) share one compiled log-density (see
        :mod:`bayespk.compile_cache`). Off by default: constants let PyTensor
        fold work on the observations (e.g. ``log(DV)``) into the graph.

    Examples
    --------
    >>> import bayespk as bpk
    >>> model = bpk.PopulationModel("models/theophylline_1cmt_oral.toml")  # doctest: +SKIP
    >>> fit = bpk.fit(model, draws=500)  # doctest: +SKIP
    """

    # fitting and checking are functions that take a model: reading one of these says which
    fit = Moved("bpk.fit(model, ...)")
    prior_predictive = Moved("bpk.vpc(model, ...), the prior predictive check")

    def __init__(self, spec: Spec | dict | str | Path, data: Dataset | pd.DataFrame | str | Path | None = None,
                 pk_fit=None, structural=None, observations_as_data: bool = False):
        self.observations_as_data = bool(observations_as_data)
        if isinstance(spec, Spec):
            if structural is not None:
                spec = Spec.from_dict(spec.to_dict() | {"model": {}}, structural=structural)
        elif isinstance(spec, dict):
            spec = Spec.from_dict(spec, structural=structural)
        else:
            spec = Spec.from_toml(spec, structural=structural)
        self.spec = spec
        if data is None:
            if self.spec.data.path is None:
                raise SpecError("no data: give data=... or a [data] path in the spec")
            data = self.spec.data.path
        if not isinstance(data, Dataset):
            data = read_nonmem(data, aliases=self.spec.data.aliases, lloq=self.spec.data.lloq,
                               **self.spec.data.filters)
            if self.spec.data.path is None and isinstance(data.source, str) and data.source != "<DataFrame>":
                self.spec = self.spec.with_data(data.source)
        _check_column_names(data)
        self.data = data
        self.user = self.spec.user.model if self.spec.user is not None else None
        self.structure = STRUCTURES[self.spec.structure] if self.user is None else None
        self.pd = PD_MODELS[self.spec.pd] if self.spec.pd else None
        # observations of a second kind (PD), with their own error model: a built-in PD model or a pd_output
        self.has_pd = self.pd is not None or getattr(self.user, "pd_output", None) is not None
        self._pd_rows = self._pd_observation_rows()
        self.design = self._design(grid=None)
        self._pd_setup(pk_fit)
        self._covariates = self._covariate_design()
        self._occasions = self._occasion_design()
        self._assays = {name: self._assay_design(err) for name, err in (("DV", self.spec.error),
                                                                          ("DV_PD", self.spec.pd_error))
                        if err is not None and err.by is not None}
        self._columns = self._user_columns()
        self.predictor = predictor(self)  # the structural part, whatever the kind (checks the data against it)
        self.spec = self._resolve(self.spec)
        self._check_error_model()

    # ------------------------------------------------------------------ setup
    def _design(self, grid, grid_subjects=None, pd: bool = False) -> Design:
        rows = None if self._pd_rows is None else (self._pd_rows if pd else ~self._pd_rows)
        design = Design.from_dataset(self.data, self.structure, grid=grid, grid_subjects=grid_subjects, rows=rows)
        err = self.spec.pd_error if pd else self.spec.error
        if grid is None and err.blq == "drop":
            keep = design.obs_cens == 0
            design = _subset(design, keep)
        return design

    @property
    def cell_kinetics(self) -> bool:
        """A CAR-T cellular-kinetics model (time counts from the cell infusion)."""
        return self.predictor.cell_kinetics

    # ------------------------------------------------------------------ PD
    @property
    def pk_parameters(self) -> list[str]:
        return [p for p in self.spec.parameters if p not in self.spec.pd_parameters]

    def _pd_observation_rows(self):
        """Boolean mask of the PD observation records (None without a PD model)."""
        if not self.has_pd:
            return None
        column, value = self.spec.pd_observations
        t = self.data.table
        what = f"the PD model {self.spec.pd}" if self.pd is not None else "the model's pd_output"
        if column not in t.columns:
            raise DataError(f"column {column}: {what} reads its observations from rows with {column} = {value:g}, "
                            f"but the dataset has no {column} column ([model] pd_observations names the column "
                            "and value)")
        rows = ((t.EVID == 0) & (t.MDV == 0) & (t[column] == value)).to_numpy()
        if not rows.any():
            raise DataError(f"column {column}: no observation record has {column} = {value:g}, so {what} has "
                            "nothing to fit")
        return rows

    def _pd_setup(self, pk_fit) -> None:
        """PD observations and the sequential PK fit."""
        self.pd_design = self.pk_fit = None
        if not self.has_pd:
            return
        self.pd_design = self._design(grid=None, pd=True)
        if pk_fit is None and self.spec.pk_fit is not None:  # a fit.nc file or a run directory
            pk_fit = read_fit_tree(self.spec.pk_fit)
        self.pk_fit = pk_fit

    def _covariate_design(self) -> dict[str, dict]:
        """Per covariate effect: values on every record, per-subject baseline (and levels if categorical)."""
        out = {}
        for c in self.spec.covariates:
            needed = f"the {c.effect} effect of {c.column} on {c.parameter}"
            records = self.data.covariate_values(c.column, needed_for=needed)
            baseline = records.groupby(self.data.table.ID, sort=False).first().reindex(self.design.subject_ids)
            info = {"values": baseline.to_numpy(), "time_varying": self.data.is_time_varying(c.column)}
            if c.effect == "categorical":
                levels = sorted(records.unique(), key=lambda v: (isinstance(v, str), v))
                ref = c.reference if c.reference is not None else levels[0]
                if ref not in levels:
                    raise SpecError(f"covariate {c.name}: reference level {ref!r} does not occur in column "
                                    f"{c.column} (levels: {', '.join(map(str, levels))})")
                others = [lv for lv in levels if lv != ref]
                if not others:
                    raise DataError(f"column {c.column}: every subject has level {ref!r}; a categorical "
                                    f"effect on {c.parameter} cannot be estimated")
                out[c.name] = info | {"records": records.to_numpy(), "reference": ref, "levels": others}
            else:
                if records.dtype == object:
                    k = int(np.argmax(pd.to_numeric(records, errors="coerce").isna().to_numpy()))
                    raise DataError(f"{self._record(k, c.column)}: value {records.iloc[k]!r} is not a number; a "
                                    f"{c.effect} effect needs a numeric covariate")
                x = records.to_numpy(float)
                if c.effect == "power" and (x <= 0).any():
                    k = int(np.argmax(x <= 0))
                    raise DataError(f"{self._record(k, c.column)}: value {x[k]:g} is not > 0; a power effect of "
                                    f"{c.column} on {c.parameter} needs positive values")
                out[c.name] = info | {"records": x, "values": baseline.to_numpy(float)}
        return out

    def _occasion_design(self) -> dict | None:
        """Occasion index of every record (subject x OCC value), when any parameter has IOV."""
        with_iov = [p for p, ps in self.spec.parameters.items() if ps.iov is not None]
        if not with_iov:
            return None
        t = self.data.table
        occ = self.data.covariate_values("OCC", needed_for=f"inter-occasion variability on {', '.join(with_iov)}")
        if pd.to_numeric(occ, errors="coerce").isna().any():
            k = int(np.argmax(pd.to_numeric(occ, errors="coerce").isna().to_numpy()))
            raise DataError(f"{self._record(k, 'OCC')}: occasion {occ.iloc[k]!r} is not a number")
        pairs = pd.MultiIndex.from_arrays([t.ID.to_numpy(), occ.to_numpy(float)])
        codes, uniques = pd.factorize(pairs)
        labels = [f"{id_label(i)}:{id_label(o)}" for i, o in uniques]
        per_subject = pd.Series(occ.to_numpy(float)).groupby(t.ID.to_numpy()).nunique()
        if (per_subject <= 1).all():
            raise DataError("column OCC: every subject has a single occasion, so inter-occasion variability "
                            f"on {', '.join(with_iov)} cannot be told apart from IIV")
        return {"records": codes, "labels": labels}

    # ------------------------------------------------------------------ user-written models
    def _user_columns(self) -> dict[str, np.ndarray]:
        """Values on every record of the data columns that equations and relations read.

        A name the equations use that is neither a parameter nor a model quantity must be a numeric
        column of the data; else the equation is named with the position of the unknown name.
        """
        spec = self.spec
        exprs = [(p.relation, f"the relation of {name}") for name, p in spec.parameters.items()
                 if p.relation is not None]
        if spec.user is not None:
            exprs += [(e, "the model") for e in spec.user.expressions]
        # covariates: the data's own columns, not NONMEM's record fields
        columns = set(self.data.table.columns) - set(NONMEM_COLUMNS) - {"ROW", "BLQ", "CENS", "LLOQ", "C"}
        for name in spec.user.covariates if spec.user is not None and not spec.user.expressions else ():
            if name not in columns:
                raise DataError(f"model {self.user.name}: reads {name!r}, which is neither a parameter of the "
                                f"spec ({', '.join(spec.parameters)}) nor a column of the data")
            exprs.append((_Column(name), f"the model {self.user.name}"))
        # the model's own quantities; algebraic models (and relations of built-in structures) know the last dose
        quantities = set(spec.parameters) | set(getattr(self.user, "quantities", ("TAD", "DOSE"))) | {"t"}
        quantities |= set((spec.user.raw.get("derived") or {}) if spec.user is not None else ())
        out = {}
        for expr, what in exprs:
            for name in sorted(expr.names - quantities):
                if name not in columns:
                    expr.check_names(quantities | (columns - {"ROW"}))  # names the position
                if name in out:
                    continue
                values = self.data.covariate_values(name, needed_for=f"{what} ({expr.key})")
                x = pd.to_numeric(values, errors="coerce")
                if x.isna().any():
                    k = int(np.argmax(x.isna().to_numpy()))
                    raise DataError(f"{self._record(k, name)}: value {values.iloc[k]!r} is not a number, which "
                                    f"{expr.key} = \"{expr.source}\" needs")
                out[name] = x.to_numpy(float)
        return out

    def _assay_design(self, err) -> dict:
        """Level code of every record's assay (column ``err.by``), its labels and reference."""
        t = self.data.table
        col = err.by
        if col not in t.columns:
            raise DataError(f"column {col}: [{err.prefix}error] by = \"{col}\" gives each assay its own error "
                            "model, but the dataset has no such column")
        values = t[col]
        levels = sorted(values.dropna().unique(), key=lambda v: (isinstance(v, str), v))
        ref = err.reference if err.reference is not None else (levels[0] if levels else None)
        if ref not in levels:
            raise SpecError(f"[{err.prefix}error] reference: level {ref!r} does not occur in column {col} "
                            f"(levels: {', '.join(map(id_label, levels))})")
        order = [ref] + [v for v in levels if v != ref]
        codes = values.map({v: k for k, v in enumerate(order)}).fillna(-1).to_numpy(int)
        return {"records": codes, "labels": [id_label(v) for v in order], "column": col}

    def _assay_codes(self, name: str, d: Design) -> np.ndarray | None:
        """Assay code per observation of design ``d`` (``None`` without assays); refuses a missing assay."""
        info = self._assays.get(name)
        if info is None:
            return None
        codes = info["records"][d.obs_record]
        missing = (codes < 0) & d.obs_strict
        if missing.any():
            k = int(np.argmax(missing))
            raise DataError(f"row {d.obs_row[k]}, column {info['column']}: observation without an assay; every "
                            f"observation needs one of {', '.join(info['labels'])}")
        return np.where(d.obs_strict, codes, 0)  # prediction points: the reference assay

    def _record(self, position: int, column: str) -> str:
        """'row R, column C (ID i)' of the record at ``position`` in the table, for error messages."""
        t = self.data.table  # column by column: a row as a Series may turn IDs into floats
        return f"row {int(t.ROW.iloc[position])}, column {column} (ID {id_label(t.ID.iloc[position])})"

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
        spec = replace(spec, covariates=tuple(covs), error=_default_error_priors(spec.error, self.design))
        if spec.pd_error is not None:
            spec = replace(spec, pd_error=_default_error_priors(spec.pd_error, self.pd_design))
        return spec

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
                coords[f"{c.column}_level"] = [id_label(v) for v in self._covariates[c.name]["levels"]]
        if self._occasions is not None:
            coords["occasion"] = self._occasions["labels"]
        if self.has_pd:
            coords["pd_obs"] = np.arange(self.pd_design.n_obs)
        if self.spec.joint_prior is not None:
            coords[JOINT_DIM] = list(self.spec.joint_prior.names)
        for info in self._assays.values():
            coords[info["column"]] = info["labels"]
            coords[f"{info['column']}_scaled"] = info["labels"][1:]  # the levels with a scale factor
        return coords

    def _population_rv(self, prior, name: str):
        """The scalar population parameter ``name`` in the current model: from its own prior, or, when the
        spec's joint prior (``[prior_from]``) covers it, a deterministic of the joint vector (created once)."""
        joint = self.spec.joint_prior
        if joint is None or name not in joint.names:
            return prior.create(name)
        model = pm.modelcontext(None)
        vector = model.named_vars[JOINT_NAME] if JOINT_NAME in model.named_vars else joint.create()
        return pm.Deterministic(name, joint.parameter(vector, name))

    def individual_parameters(self, *designs: Design) -> list[tuple[dict, dict]]:
        """Create typical values, IIV, IOV and covariate effects in the current model.

        Returns, for each design, per-observation tensors of the individual
        parameters and of the population parameters (covariate effects,
        eta = kappa = 0). The random variables are created once and shared.
        Fractions of a CAR-T structure (``FB``) vary on the logit scale:
        ``logit(FB_i) = logit(FB) + covariate effects + eta``. Treatment
        multipliers (key ``rho_<COL>``) and the assay scale factors (key
        ``_scale_DV`` / ``_scale_DV_PD``: one per assay, 1 for the reference)
        are added to both dicts.
        """
        etas = self._etas()
        log_pop, kappas, typicals = {}, {}, {}
        first = self._first_records()
        unit = self.predictor.unit_parameters
        shared = self._shared_factors()

        def typical(name):  # created once, in spec order unless a relation needs another one first
            if name not in typicals:
                typicals[name] = self._population_rv(self.spec.parameters[name].typical, name)
            return typicals[name]

        for name, p in self.spec.parameters.items():
            covs = [c for c in self.spec.covariates if c.parameter == name]
            # per record where a covariate or an occasion changes within a subject, else per subject
            per_record = p.iov is not None or any(self._covariates[c.name]["time_varying"] for c in covs)
            if p.relation is not None:
                per_record |= any(self.data.is_time_varying(n) for n in p.relation.names if n in self._columns)
            rows = slice(None) if per_record else first
            if p.relation is not None:  # the typical value for each subject's (record's) covariates
                ns = {n: typical(n) for n in p.relation.names if n in self.spec.parameters}
                ns |= {n: self._columns[n][rows] for n in p.relation.names if n in self._columns}
                adjusted = p.relation.evaluate(ns, "pytensor")
                pm.Potential(f"{name}_relation_positive", pt.switch(pt.all(adjusted > 0), 0.0, -np.inf))
                link = pt.log(adjusted)
            else:
                link = pt.log(typical(name)) - pt.log1p(-typical(name)) if name in unit else pt.log(typical(name))
            n = len(self.data.table) if per_record else len(first)
            log_pop[name] = (per_record, pt.broadcast_to(sum((self._log_effect(c, rows) for c in covs), link), (n,)))
            if p.iov is not None:
                omega = self._population_rv(p.iov, f"omega_iov_{name}")
                z = pm.Normal(f"z_iov_{name}", 0.0, 1.0, dims="occasion")
                kappas[name] = pm.Deterministic(f"kappa_{name}", omega * z, dims="occasion")
        out = []
        for design in designs:
            s, rec = design.obs_subject, design.obs_record
            individual, population = {}, {}
            for name in self.spec.parameters:
                inverse = pt.sigmoid if name in unit else pt.exp
                per_record, pop = log_pop[name]
                if per_record:
                    ind = take(pop, rec) + (take(etas[name], s) if name in etas else 0.0)
                    if name in kappas:
                        ind = ind + take(kappas[name], self._occasions["records"][rec])
                    individual[name], population[name] = inverse(ind), inverse(take(pop, rec))
                else:  # transform once per subject, then gather
                    individual[name] = take(inverse(pop + etas[name]) if name in etas else inverse(pop), s)
                    population[name] = take(inverse(pop), s)
            out.append((individual | shared, population | shared))
        return out

    def _first_records(self) -> np.ndarray:
        """Position in the table of each subject's first record, in the order of ``design.subject_ids``."""
        ids = self.data.table.ID.to_numpy()
        first = pd.Series(np.arange(len(ids))).groupby(ids, sort=False).first()
        return first.reindex(self.design.subject_ids).to_numpy(int)

    def _shared_factors(self) -> dict:
        """Treatment multipliers of the expansion rate and assay scale factors (created in the model)."""
        out = {}
        for tr in self.spec.treatments:
            out[tr.name] = pt.as_tensor(tr.multiplier) if tr.fixed else self._population_rv(tr.multiplier, tr.name)
        for name, info in self._assays.items():
            err = self.spec.error if name == "DV" else self.spec.pd_error
            n = len(info["labels"]) - 1
            if n == 0:
                factor = pt.ones(1)
            elif isinstance(err.scale, float):
                factor = pt.concatenate([pt.ones(1), pt.as_tensor(np.full(n, err.scale))])
            else:
                dim = f"{info['column']}_scaled"
                factor = pt.concatenate([pt.ones(1), err.scale.create(err.scale_name, dims=dim)])
            out[f"_scale_{name}"] = factor
        return out

    def centering_weights(self) -> dict:
        """The centring weight of each parameter with IIV: a number, or ``None`` where the fit chooses it
        (``[sampler] centering = "auto"``); correlated etas are always standardized (0)."""
        auto = self.spec.sampler.centering == "auto"
        return {name: (0.0 if name in self.spec.correlated else
                       p.centered if p.centered is not None else (None if auto else 0.0))
                for name, p in self.spec.parameters.items() if p.iiv is not None}

    def _etas(self) -> dict:
        """Per-subject etas (dims ID): ``eta = omega**(1-w) * z`` with ``z ~ N(0, omega**w)`` (see the module
        docstring), correlated through an LKJ prior where the spec says so."""
        params = self.spec.parameters
        omegas = {name: self._population_rv(p.iiv, f"omega_{name}") for name, p in params.items() if p.iiv is not None}
        weights = {name: pm.Data(f"centering_{name}", 0.0) if w is None else w
                   for name, w in self.centering_weights().items()}
        centered = {}
        for name, w in weights.items():
            if isinstance(w, float) and w == 0.0:
                continue
            z = pm.Normal(f"z_{name}", 0.0, omegas[name] if isinstance(w, float) and w == 1.0 else omegas[name] ** w,
                          dims="ID")
            centered[name] = pm.Deterministic(
                f"eta_{name}", z if isinstance(w, float) and w == 1.0 else omegas[name] ** (1.0 - w) * z, dims="ID")
        z = {name: pm.Normal(f"z_{name}", 0.0, 1.0, dims="ID") for name in omegas if name not in centered}
        corr = self.spec.correlated
        if corr:
            chol = pm.LKJCorr("chol_corr_iiv", n=len(corr), eta=self.spec.lkj_eta)
            mixed = pt.dot(pt.stack([z[n] for n in corr], axis=1), chol.T)
            z = z | {n: mixed[:, k] for k, n in enumerate(corr)}
            r = pt.dot(chol, chol.T)
            for i, a in enumerate(corr):
                for j in range(i + 1, len(corr)):
                    pm.Deterministic(f"corr_{a}_{corr[j]}", r[i, j])
        return centered | {name: pm.Deterministic(f"eta_{name}", omegas[name] * z[name], dims="ID") for name in z}

    def covariate_scale(self, c: CovariateSpec) -> float:
        """The SD across subjects (baseline values) that standardizes relation ``c`` under
        ``[covariate_shrinkage]``: of ``log(x / reference)`` for a power effect, of ``x`` for exponential and
        linear effects, 1 for a categorical effect (per level)."""
        if c.effect == "categorical":
            return 1.0
        x = np.asarray(self._covariates[c.name]["values"], float)
        sd = float(np.std(np.log(x / c.reference) if c.effect == "power" else x, ddof=1)) if len(x) > 1 else 0.0
        if not sd > 0:
            raise DataError(f"column {c.column}: every subject has the same value, so the {c.effect} effect "
                            f"{c.name} cannot be standardized for [covariate_shrinkage]")
        return sd

    def _shrunk_coefficient(self, c: CovariateSpec):
        """The coefficient of relation ``c`` under the regularized horseshoe of ``[covariate_shrinkage]``
        (:class:`~bayespk.model.spec.CovariateShrinkage`): ``theta = z tau lambda~ / sd`` (non-centred), kept
        as the deterministic ``<P>_<COL>``; global ``hs_tau`` and slab ``hs_c2`` are created once."""
        hs = self.spec.covariate_shrinkage
        model = pm.modelcontext(None)
        n = len(self.design.subject_ids)
        if "hs_tau" not in model.named_vars:
            pm.HalfStudentT("hs_tau", nu=hs.global_df, sigma=hs.tau0(n))  # nu = 1: half-Cauchy
            pm.InverseGamma("hs_c2", alpha=hs.slab_df / 2.0, beta=hs.slab_df * hs.slab_scale ** 2 / 2.0)
        tau, c2 = model["hs_tau"], model["hs_c2"]
        lam = pm.HalfCauchy(f"hs_lambda_{c.name}", beta=1.0)
        lam2 = c2 * lam ** 2 / (c2 + tau ** 2 * lam ** 2)  # regularized local scale, squared
        dims = f"{c.column}_level" if c.effect == "categorical" else None
        z = pm.Normal(f"hs_z_{c.name}", 0.0, 1.0, dims=dims)
        pm.Deterministic(f"hs_kappa_{c.name}", 1.0 / (1.0 + n * tau ** 2 * lam2 / hs.noise_sd ** 2))
        return pm.Deterministic(c.name, z * tau * pt.sqrt(lam2) / self.covariate_scale(c), dims=dims)

    def _log_effect(self, c: CovariateSpec, rows=slice(None)):
        """log of the covariate factor on the records ``rows`` (default all; creates the coefficient's prior,
        the regularized horseshoe for the relations ``[covariate_shrinkage]`` names)."""
        info = self._covariates[c.name]
        x = info["records"][rows]
        hs = self.spec.covariate_shrinkage
        shrunk = hs is not None and c.name in hs.relations
        if c.effect == "categorical":
            levels = info["levels"]
            theta = (pt.as_tensor(np.full(len(levels), c.coefficient)) if c.fixed
                     else self._shrunk_coefficient(c) if shrunk
                     else c.coefficient.create(c.name, dims=f"{c.column}_level"))
            index = np.array([levels.index(v) + 1 if v in levels else 0 for v in x])
            return pt.concatenate([pt.zeros(1), theta])[index]
        theta = (c.coefficient if c.fixed else self._shrunk_coefficient(c) if shrunk
                 else self._population_rv(c.coefficient, c.name))
        if c.effect == "linear":  # the factor must stay positive for every subject
            factor = 1.0 + theta * (x - c.reference)
            pm.Potential(f"{c.name}_positive", pt.switch(pt.all(factor > 0), 0.0, -np.inf))
        return c.log_factor(x, pt.as_tensor(theta))

    def _in_assay_units(self, f, params: dict, design: Design, name: str = "DV"):
        """Predictions ``f`` in each observation's assay units (times its assay's scale factor)."""
        codes = self._assay_codes(name, design)
        return f if codes is None else f * params[f"_scale_{name}"][codes]

    def build(self) -> pm.Model:
        """The PyMC model with the likelihood of the observations (PK, and PD when present).

        With a PK fit (sequential PK/PD) the PK parameters are fixed at their
        posterior medians (individual PK parameters: the IPP approach of Zhang
        et al. 2003, J Pharmacokinet Pharmacodyn 30:387) and only the PD
        observations enter the likelihood.
        """
        sequential = self.pd is not None and self.pk_fit is not None
        outputs = {"DV": (self.design, self.spec.error, "obs")}
        if self.has_pd:
            outputs["DV_PD"] = (self.pd_design, self.spec.pd_error, "pd_obs")
        designs = {name: o[0] for name, o in outputs.items()}
        if not self.design.n_obs or sequential:  # no PK likelihood
            outputs.pop("DV")
        with pm.Model(coords=self.coords) as model:
            params = self.individual_parameters(*designs.values(), *self.predictor.points)
            at = {name: params[k][0] for k, name in enumerate(designs)}
            points = [p[0] for p in params[len(designs):]]
            self._modeled_infusions_end_in_time(at["DV"])
            predicted = self.predictor.predict_outputs(at, points, {name: designs[name] for name in outputs})
            for name, (d, err, dims) in outputs.items():
                f = self._in_assay_units(predicted[name], at[name], d, name)
                self._likelihood(f, d, err, name, dims)
        if sequential:
            model = pm.do(model, self._pk_posterior_medians(model))
        return model

    def _modeled_infusions_end_in_time(self, individual: dict) -> None:
        """Repeated (ADDL/SS) records with a modeled duration or rate must end before their next dose.

        The closed form assumes it (as the data rules do for RATE > 0); a
        potential restricts D1 / AMT/R1 to at most II for those records.
        """
        t = self.data.table
        repeated = t.EVID.isin([1, 4]) & (t.II > 0)
        for name, flag in (("D1", -2), ("R1", -1)):
            rows = (repeated & (t.RATE == flag)).to_numpy()
            if name not in individual or not rows.any() or self.design.n_obs == 0:
                continue
            d = self.design
            # per observation, its subject's shortest II and largest AMT among those records (NaN: none)
            ii = t.II.where(rows).groupby(t.ID, sort=False).transform("min").to_numpy()[d.obs_record]
            amt = t.AMT.where(rows).groupby(t.ID, sort=False).transform("max").to_numpy()[d.obs_record]
            keep = np.isfinite(ii)
            if not keep.any():
                continue
            value = individual[name]
            duration = value[keep] if name == "D1" else amt[keep] / value[keep]
            pm.Potential(f"{name}_ends_before_next_dose",
                         pt.switch(pt.all(duration <= ii[keep]), 0.0, -np.inf))

    def _pk_posterior_medians(self, model: pm.Model) -> dict:
        """Posterior medians of the PK fit's free variables that this model shares (sequential PK/PD)."""
        post = self.pk_fit.posterior  # a Fit's Dataset, or the posterior node of a stored fit's DataTree
        if isinstance(post, xr.DataTree):
            post = post.to_dataset()
        pd_names = set(self.spec.pd_parameters)
        fixed = {}
        for rv in model.free_RVs:
            own = rv.name.removeprefix("omega_").removeprefix("z_").removeprefix("eta_")
            if rv.name in post and own not in pd_names:
                values = post[rv.name].median(("chain", "draw")).values
                if values.shape != tuple(rv.shape.eval()):
                    raise SpecError(f"[model] pk_fit: {rv.name} has shape {values.shape} in the PK fit but "
                                    f"{tuple(rv.shape.eval())} here; fit PK and PD to the same subjects")
                fixed[rv.name] = values
        missing = [p for p in self.pk_parameters if p not in fixed]
        if missing:
            raise SpecError(f"[model] pk_fit: the PK fit has no {', '.join(missing)}; it must be a fit of the same "
                            f"structure ({self.spec.structure})")
        return fixed

    def build_prediction(self, grid: np.ndarray | None = None, *, simulate: bool = False,
                         grid_subjects=None, pd: bool = False) -> tuple[pm.Model, Design]:
        """A model without likelihood giving ``IPRED`` (individual) and ``PRED`` (typical subject).

        Free variables have the same names as in :meth:`build`, so posterior
        draws can be pushed through it with ``pm.sample_posterior_predictive``.
        ``grid`` evaluates every subject at these times instead of at its observations.
        ``simulate=True`` adds ``DV_sim``: a new observation drawn from the residual
        error model around ``IPRED``, uncensored (for VPC, NPDE, prior predictive checks).
        ``pd=True``: the PD observations (with ``[pd_error]``): the ``pd_output`` of a
        model written as equations, or the response of a built-in PD model (at its
        observations only, not on a ``grid``). A sequential PK/PD model (``pk_fit``)
        holds its PK parameters at the PK fit's posterior medians, as when fitted.
        """
        if pd and not self.has_pd:
            raise SpecError("predictions of the PD observations (pd=True) need a PD model: [model] pd, or a "
                            "pd_output of a model written as equations")
        if pd and grid is not None and not self.predictor.pd_on_grid:
            raise SpecError(f"predictions of the PD model {self.spec.pd} on a time grid are not available; pd=True "
                            "evaluates it at the PD observations (grid=None)")
        d = (self._design(grid=grid, grid_subjects=grid_subjects, pd=pd) if grid is not None
             else self.pd_design if pd else self.design)
        name, err = ("DV_PD", self.spec.pd_error) if pd else ("DV", self.spec.error)
        with pm.Model(coords=self.coords | {"obs": np.arange(d.n_obs)}) as model:
            ((individual, population), *at_points) = self.individual_parameters(d, *self.predictor.points)
            ipred = self.predictor.predict(individual, [p[0] for p in at_points], d, name)
            pred = self.predictor.predict(population, [p[1] for p in at_points], d, name)
            ipred = self._in_assay_units(ipred, individual, d, name)
            pm.Deterministic("IPRED", ipred, dims="obs")
            pm.Deterministic("PRED", self._in_assay_units(pred, population, d, name), dims="obs")
            if simulate:
                model.register_rv(self._residual(ipred, err, d, name), name="DV_sim", dims=("obs",))
        if self.pd is not None and self.pk_fit is not None and grid_subjects is None:
            model = pm.do(model, self._pk_posterior_medians(model))
        return model, d

    def build_individual(self) -> pm.Model:
        """A model without likelihood giving each subject's parameters (dims ``ID``) as deterministics.

        Covariates are taken from each subject's first record (baseline).
        Treatment multipliers and assay factors are in it under their own names.
        """
        t = self.data.table
        first = t.groupby("ID", sort=False).TIME.min().reindex(self.design.subject_ids).to_numpy(float)
        d = Design.at(self.data, self.structure, self.design.subject_ids, first)
        with pm.Model(coords=self.coords) as model:
            ((individual, _),) = self.individual_parameters(d)
            for name in self.spec.parameters:
                pm.Deterministic(f"{name}_i", individual[name], dims="ID")
        return model

    def _residual(self, f, err=None, design: Design | None = None, name: str = "DV"):
        """The residual error distribution around predictions ``f`` (creates the sigma priors).

        With ``[error] by`` each assay has its own error parameters (dims: the
        assay column), indexed per observation of ``design``.
        """
        err = err or self.spec.error
        return error_distribution(err, f, self._error_parameters(err, design, name))

    def _error_parameters(self, err, design: Design | None, name: str) -> dict:
        """The error parameters of ``err`` by base name (creates their priors); per observation with ``by``."""
        if err.by is None:
            return {k: self._population_rv(err.priors[k], err.prefix + k) for k in err.base_names}
        codes = self._assay_codes(name, design)
        return {k: err.priors[k].create(err.prefix + k, dims=err.by)[codes] for k in err.base_names}

    def _likelihood(self, f, d: Design, err, name: str, dims: str):
        cens = d.obs_cens
        if not self.observations_as_data:  # the censored rows are known now: each row's own branch only
            y = np.where(cens != 0, d.obs_limit, d.obs_dv)
            return observe(name, err, f, self._error_parameters(err, d, name), y, cens, dims)
        dist = likelihood_distribution(err, f, self._error_parameters(err, d, name))

        def shared(key, v):
            return pm.Data(f"{name}_{key}", v, dims=dims)

        if (cens == 0).all():
            return _observe(dist, shared("observed", d.obs_dv), name, dims)
        # pm.Censored: a value equal to `lower` means "at or below lower" (BLQ, M3: P(Y < LLOQ);
        # M4: P(0 < Y < LLOQ) / P(Y > 0) through the truncation of likelihood_distribution);
        # a value equal to `upper` means "at or above upper" (right-censored, CENS = -1).
        lower = np.where(cens == 1, d.obs_limit, -np.inf)
        upper = np.where(cens == -1, d.obs_limit, np.inf)
        y = np.where(cens != 0, d.obs_limit, d.obs_dv)
        return pm.Censored(name, dist, lower=shared("lower", lower), upper=shared("upper", upper),
                           observed=shared("observed", y), dims=dims)

    def __repr__(self) -> str:
        s = self.data.summary
        return (f"PopulationModel({self.spec.name!r}: {self.spec.structure}, {s.n_subjects} subjects, "
                f"{self.design.n_obs} observations, {self.spec.error.model} error)")


def _default_error_priors(err, design: Design):
    """``err`` with a prior for every error parameter: HalfNormal(SD of the observations) for an
    additive SD, HalfNormal(0.5) for relative SDs, Gamma(2, 0.1) for Student-t degrees of freedom."""
    priors = dict(err.priors)
    if err.student_t and "nu" not in priors:
        priors["nu"] = DEFAULT_NU
    dv = design.obs_dv[design.obs_cens == 0]
    for name in ERROR_MODELS[err.model]:
        if name in priors:
            continue
        if name == "sigma_add":
            scale = float(np.nanstd(dv)) if len(dv) > 1 and np.nanstd(dv) > 0 else 1.0
            priors[name] = Prior("HalfNormal", sigma=float(f"{scale:.3g}"))
        else:
            priors[name] = Prior("HalfNormal", sigma=0.5)
    return replace(err, priors=priors)


def _check_column_names(data: Dataset) -> None:
    """Refuse dataset columns a fit cannot store: ``fit.nc`` keeps the records by column name, and
    netCDF reads ``/`` in a name as a group separator (the fit would fail after sampling)."""
    bad = [c for c in data.table.columns if "/" in str(c)]
    if bad:
        fixed = bad[0].replace("/", "_")
        raise DataError(f"{data.source}: column {bad[0]}: a '/' cannot be part of a column name in a fit (fit.nc "
                        f"stores the records by column name, and netCDF uses '/' between groups); rename it in "
                        f"the file, or declare [data] aliases = {{ \"{bad[0]}\" = \"{fixed}\" }} in the spec")


def _observe(dist, y, name: str = "DV", dims: str = "obs"):
    """Register ``dist`` as the observed ``name`` in the current model."""
    model = pm.modelcontext(None)
    return model.register_rv(dist, name=name, observed=y, dims=(dims,))


@dataclass(frozen=True)
class _Column:
    """A data column a Python model reads (for the checks of :meth:`PopulationModel._user_columns`)."""

    name: str

    @property
    def names(self):
        return frozenset({self.name})

    @property
    def key(self):
        return "the model"

    @property
    def source(self):
        return self.name


def _subset(d: Design, keep: np.ndarray) -> Design:
    fields = {k: getattr(d, k) for k in d.__dataclass_fields__}
    for k, v in fields.items():
        if k != "subject_ids":
            fields[k] = v[keep]
    return Design(**fields)
