"""Exposure-response models for CAR-T studies: response, CRS/ICANS grade, and time to event.

:func:`fit_response` fits one outcome per subject against that subject's
exposure (e.g. Cmax or AUC0-28 from the cellular-kinetics fit) and optional
baseline covariates (e.g. log10 tumor burden), and returns a
:class:`ResponseFit`.

Models
------
Exposure enters as **log10** exposure, so every exposure coefficient is per
10-fold change in exposure. Exposure and covariates are centred at a reference
(by default the geometric mean exposure and the covariate means, or the
``reference`` given), and the linear predictor is
``eta = b_exposure * (log10 E - log10 E_ref) + sum_j b_j * (z_j - z_ref_j)``.

``kind="binary"`` (e.g. month-3 response)
    Logistic regression: ``logit P(y = 1) = intercept + eta``; ``intercept``
    is the log-odds at the reference; ``OR_10fold = exp(b_exposure)``.
``kind="ordinal"`` (CRS or ICANS grade 0-4)
    Cumulative logit (proportional odds): ``P(grade >= k) = logistic(eta -
    cutpoint_ge{k})`` with ordered cutpoints, so ``-cutpoint_ge{k}`` is the
    log-odds of grade >= k at the reference; ``OR_10fold`` is the cumulative
    odds ratio per 10-fold exposure.
``kind="tte"`` (duration of response, PFS)
    Weibull proportional hazards with right censoring: hazard
    ``h(t) = (shape / scale) (t / scale)^(shape - 1) exp(eta)``, survival
    ``S(t) = exp(-(t / scale)^shape exp(eta))``; ``scale`` (in the data's
    time unit) and ``shape`` are those of the reference subject;
    ``HR_10fold = exp(b_exposure)`` is the hazard ratio per 10-fold exposure.

Priors are weakly informative and scaled to the data (as rstanarm's
autoscale): every coefficient ~ Normal(0, 2.5 / SD of its predictor), the
binary intercept and each ordinal cutpoint ~ Normal(0, 2.5); for the Weibull
model log(shape) ~ Normal(0, 1) and log(scale / t_med) ~ Normal(0, 2.5),
where t_med is the median observed time. SDs use the subjects' mean log10
exposures, so the prior is the same in every imputation.

Grades that never occur
-----------------------
The ordinal model has one category per grade that occurs in the data (at
least two are required), and a cutpoint between neighbouring ones. A grade
that never occurs *between* observed grades is collapsed: the model puts no
probability on it, so ``P(grade >= 3) = P(grade >= 4)`` when no subject had
grade 3 (a note says so). ``P(grade >= k)`` is estimable only for ``k`` above
the lowest and up to the highest observed grade; asking for another ``k``
(e.g. ``P(grade >= 4)`` in a study without grade 4) raises a
:class:`~bayespk.errors.SpecError` instead of returning a prior-driven number.

Exposure uncertainty: multiple imputation with a cut
----------------------------------------------------
Exposure may be given as one value per subject or as posterior draws per
subject from the cellular-kinetics (CK) fit. With draws, K of them (default
20) are picked at random, the E-R model is fitted once per picked draw, and
the K posteriors are pooled by concatenating their samples (multiple
imputation; the pooled spread holds both the within- and the between-draw
variation). The PyMC model is compiled once, with the exposure in a
``pm.Data`` container, and each imputation only swaps the data and re-samples
(nutpie's ``with_data``); compiled models are cached per model shape.

This is a "cut": outcomes never feed back into the exposure estimates. A
joint CK + E-R model would let the outcomes pull the exposures, and in CAR-T
studies that feedback runs the wrong way: tocilizumab and corticosteroids are
given *because of* CRS, and may blunt expansion, so a joint fit would adjust
each patient's exposure to fit their CRS grade. The cut keeps the CK fit's
exposures as measured and the E-R fit conditional on them.

What the cut does not do: when each subject's exposure is uncertain
independently of the others, fitting at draws is fitting at a noisy regressor,
which biases the slope toward zero (regression dilution); the pooled interval
is then about as wide as, not wider than, the interval at the posterior-mean
exposure, around a flatter slope. The pooled interval widens when the
uncertainty is shared across subjects (population parameters of the CK fit
moving all exposures together, e.g. the spread of exposures between
subjects), which is what a plug-in of posterior means ignores. Compare both
(pass the posterior means as point exposures) when exposures are imprecise.
"""

from __future__ import annotations

import time as _time
import warnings
from collections.abc import Mapping, Sequence

import numpy as np
import pandas as pd
import pymc as pm
import xarray as xr
from scipy.special import expit

from bayespk import sampling
from bayespk.diagnostics import check_convergence, convergence
from bayespk.errors import ConvergenceWarning, DataError, SpecError
from bayespk.response.data import Prepared, prepare

__all__ = ["CURVE_COLUMNS", "SUMMARY_COLUMNS", "ResponseFit", "fit_response"]

SUMMARY_COLUMNS = ["parameter", "mean", "sd", "q5", "median", "q95", "r_hat", "ess_bulk", "frac_between"]
CURVE_COLUMNS = ["exposure", "quantity", "mean", "q5", "median", "q95"]
PRIOR_SCALE = 2.5


def fit_response(
    data: pd.DataFrame,
    exposure,
    *,
    kind: str,
    outcome: str | None = None,
    time: str | None = None,
    event: str | None = None,
    covariates: Sequence[str] = (),
    exposure_ids=None,
    id_column: str = "ID",
    exposure_name: str = "exposure",
    reference: Mapping[str, float] | None = None,
    max_grade: int = 4,
    n_imputations: int = 20,
    draws: int = 500,
    tune: int = 500,
    chains: int = 2,
    seed: int | None = None,
    target_accept: float = 0.9,
    progress: bool = False,
) -> ResponseFit:
    """Fit an exposure-response model, carrying exposure uncertainty by multiple imputation.

    Parameters
    ----------
    data : DataFrame
        One row per subject: ``id_column``, the outcome column(s) and the covariates.
    exposure : str, Series, mapping, ndarray or DataArray
        Point exposures (a column of ``data``, a Series indexed by ID, a
        mapping {ID: value}, or a 1-d array with ``exposure_ids``), or
        posterior draws: an array (n_draws, n_subjects) whose columns follow
        ``exposure_ids``, or a DataArray with dims (draw, ID) (a chain dim is
        stacked with draw). Every subject in ``data`` needs one; exposures
        must be > 0 (the model uses log10).
    kind : {"binary", "ordinal", "tte"}
    outcome : str
        binary: the 0/1 response column; ordinal: the grade column (integers 0..max_grade).
    time, event : str
        tte: the time column (> 0) and the event column (1 event, 0 right-censored).
    covariates : sequence of str
        Numeric baseline covariates, entered linearly (transform first, e.g. log10 tumor burden).
    exposure_ids : sequence, optional
        The ID of each column of an exposure array.
    id_column : str
    exposure_name : str
        Label of the exposure in tables and plots (e.g. "Cmax").
    reference : mapping, optional
        Reference values: ``{"exposure": value, covariate: value}``; defaults
        are the geometric mean exposure and the covariate means.
    max_grade : int
        Highest possible grade (ordinal).
    n_imputations : int
        Exposure draws to fit at (K); all draws when fewer. Point exposures: one fit.
    draws, tune, chains : int
        Per imputation; the pooled posterior has ``K * chains * draws`` samples.
    seed : int, optional
        Drawn and recorded in ``settings`` when not given.
    target_accept : float
    progress : bool

    Returns
    -------
    ResponseFit
        Convergence is checked in every imputation; a
        :class:`~bayespk.errors.ConvergenceWarning` names the worst.

    Raises
    ------
    DataError, SpecError
        On bad input, before anything is compiled or sampled.

    Examples
    --------
    >>> import numpy as np, pandas as pd
    >>> from bayespk.response import fit_response
    >>> rng = np.random.default_rng(1)
    >>> cmax = 10 ** rng.normal(4, 0.5, 100)
    >>> resp = rng.binomial(1, 1 / (1 + np.exp(-1.5 * (np.log10(cmax) - 4))))
    >>> df = pd.DataFrame({"ID": np.arange(100), "RESP": resp, "CMAX": cmax})
    >>> fit = fit_response(df, "CMAX", kind="binary", outcome="RESP", exposure_name="Cmax")  # doctest: +SKIP
    >>> fit.summary()                                                                         # doctest: +SKIP
    """
    prep = prepare(
        data,
        exposure,
        kind=kind,
        outcome=outcome,
        time=time,
        event=event,
        covariates=covariates,
        exposure_ids=exposure_ids,
        id_column=id_column,
        max_grade=max_grade,
    )
    for name, v, lo in (
        ("n_imputations", n_imputations, 1),
        ("draws", draws, 1),
        ("tune", tune, 0),
        ("chains", chains, 1),
    ):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < lo:
            raise SpecError(f"{name} must be a whole number >= {lo}, got {v!r}")
    if not 0 < target_accept < 1:
        raise SpecError(f"target_accept must be in (0, 1), got {target_accept!r}")
    if seed is None:
        seed = int(np.random.SeedSequence().entropy % (2**31))
    design = _design(prep, reference, outcome if kind != "tte" else time)
    rng = np.random.default_rng(seed)
    n_draws = prep.log_exposure.shape[0]
    k = min(n_imputations, n_draws)
    picked = np.sort(rng.choice(n_draws, size=k, replace=False)) if n_draws > 1 else np.array([0])
    notes = list(prep.notes)
    if 1 < n_draws < n_imputations:
        notes.append(f"only {n_draws} exposure draws: fitted at each of them (n_imputations={n_imputations})")
    seeds = rng.integers(0, 2**31 - 1, size=k)

    t0 = _time.perf_counter()
    compiled = sampling.compile_model(key=("exposure-response", design["key"]), build=lambda: _build(design))
    t_compile = _time.perf_counter() - t0
    posts, diags = [], []
    for i, d in enumerate(picked):
        values = dict(design["data"], x=prep.log_exposure[d] - design["x_ref"])
        tree = sampling.sample(compiled, data=values, draws=draws, tune=tune, chains=chains, seed=int(seeds[i]),
                               target_accept=target_accept, progress=progress)
        diags.append(convergence(tree, design["free"]))
        post = tree["posterior"].to_dataset()[design["free"]]
        posts.append(post.assign_coords(chain=np.arange(i * chains, (i + 1) * chains)))
    wall = _time.perf_counter() - t0
    diagnostics = _pooled_diagnostics(posts, diags)
    if diagnostics["problems"]:
        warnings.warn(
            f"exposure-response fit ({kind}, {k} imputation(s)): convergence check failed:\n  "
            + "\n  ".join(diagnostics["problems"]),
            ConvergenceWarning,
            stacklevel=2,
        )
    posterior = _natural(xr.concat(posts, dim="chain"), design)
    posterior = posterior.assign_coords(
        imputation=("chain", np.repeat(np.arange(k), chains)),
        exposure_draw=("chain", np.repeat(picked, chains)),
    )
    settings = {
        "kind": kind,
        "n_imputations": int(k),
        "exposure_draws_available": int(n_draws),
        "draws": draws,
        "tune": tune,
        "chains": chains,
        "seed": int(seed),
        "target_accept": target_accept,
        "wall_seconds": round(wall, 3),
        "compile_seconds": round(t_compile, 3),
    }
    observed = pd.DataFrame({"ID": prep.ids, "exposure": 10 ** prep.log_exposure.mean(axis=0)})
    if kind == "tte":
        observed[time], observed[event] = prep.time, prep.event
    else:
        observed[outcome] = prep.y
    for j, c in enumerate(prep.covariates):
        observed[c] = prep.Z[:, j]
    return ResponseFit(
        kind=kind,
        outcome=outcome if kind != "tte" else time,
        event=event,
        exposure_name=exposure_name,
        covariates=prep.covariates,
        reference=design["reference"],
        posterior=posterior,
        observed=observed,
        levels=design.get("levels"),
        notes=notes + design["notes"],
        diagnostics=diagnostics,
        settings=settings,
    )


class ResponseFit:
    """A fitted exposure-response model: pooled posterior, observed data and settings.

    Attributes
    ----------
    kind : {"binary", "ordinal", "tte"}
    outcome : str
        The outcome column (the time column for tte); ``event`` the event column.
    exposure_name : str
    covariates : list of str
    reference : dict
        ``{"exposure": E_ref, covariate: z_ref}``, the centring values.
    posterior : xarray.Dataset
        Pooled draws with dims (chain, draw); ``chain`` runs over imputations x
        chains, with coordinates ``imputation`` and ``exposure_draw`` (the
        exposure draw that imputation used).
    observed : DataFrame
        ID, exposure (the point value, or the geometric mean of all the
        subject's exposure draws), outcome column(s) and covariates.
    levels : list of int or None
        ordinal: the grades that occur, in order.
    notes : list of str
    diagnostics : dict
        Divergences, R-hat, ESS and E-BFMI over the imputations (see
        ``diagnostics["rules"]``), and ``problems``.
    settings : dict
    """

    def __init__(
        self,
        *,
        kind,
        outcome,
        event,
        exposure_name,
        covariates,
        reference,
        posterior,
        observed,
        levels,
        notes,
        diagnostics,
        settings,
    ):
        self.kind = kind
        self.outcome = outcome
        self.event = event
        self.exposure_name = exposure_name
        self.covariates = list(covariates)
        self.reference = dict(reference)
        self.posterior = posterior
        self.observed = observed
        self.levels = levels
        self.notes = list(notes)
        self.diagnostics = diagnostics
        self.settings = settings

    # ----------------------------------------------------------- parameters
    @property
    def thresholds(self) -> list[int]:
        """ordinal: the k for which P(grade >= k) can be estimated (lowest observed < k <= highest)."""
        if self.kind != "ordinal":
            return []
        return list(range(self.levels[0] + 1, self.levels[-1] + 1))

    def _draws(self, name: str) -> np.ndarray:
        """Pooled samples of a posterior variable, flattened over (chain, draw) first."""
        v = self.posterior[name]
        extra = [d for d in v.dims if d not in ("chain", "draw")]
        return v.transpose("chain", "draw", *extra).values.reshape(-1, *[v.sizes[d] for d in extra])

    def _parameters(self) -> list[tuple[str, xr.DataArray]]:
        p = self.posterior
        out = []
        if self.kind == "binary":
            out.append(("intercept", p["intercept"]))
        if self.kind == "ordinal":
            out += [(f"cutpoint_ge{int(k)}", p["cutpoints"].sel(threshold=k)) for k in p["threshold"].values]
        if self.kind == "tte":
            out += [("shape", p["shape"]), ("scale", p["scale"])]
        out.append(("b_exposure", p["b_exposure"]))
        out += [(f"b_{c}", p["b_cov"].sel(covariate=c)) for c in self.covariates]
        ratio = "HR_10fold" if self.kind == "tte" else "OR_10fold"
        out.append((ratio, np.exp(p["b_exposure"])))
        return out

    def summary(self) -> pd.DataFrame:
        """Pooled posterior summary of the parameters.

        Returns
        -------
        DataFrame
            Columns ``parameter, mean, sd, q5, median, q95, r_hat, ess_bulk,
            frac_between``: ``r_hat`` is the worst within-imputation R-hat,
            ``ess_bulk`` the bulk ESS summed over imputations, and
            ``frac_between`` the share of the pooled variance that lies between
            imputations (exposure uncertainty; 0 with point exposures).
            Parameters: ``intercept`` (binary), ``cutpoint_ge{k}`` (ordinal),
            ``shape, scale`` (tte), ``b_exposure`` (per 10-fold exposure),
            ``b_<covariate>``, and ``OR_10fold`` or ``HR_10fold``.
        """
        import arviz as az

        imp = self.posterior["imputation"].values
        rows = []
        for name, da in self._parameters():
            v = da.values.ravel()
            q5, q50, q95 = np.quantile(v, [0.05, 0.5, 0.95])
            rhat, ess, means = [], 0.0, []
            for i in np.unique(imp):
                part = da.isel(chain=np.flatnonzero(imp == i))
                with warnings.catch_warnings():  # a constant parameter has no R-hat
                    warnings.simplefilter("ignore", RuntimeWarning)
                    rhat.append(float(az.rhat(part)))
                    ess += float(az.ess(part, method="bulk"))
                means.append(float(part.mean()))
            total = float(np.var(v))
            between = float(np.var(means)) if len(means) > 1 else 0.0
            rows.append(
                {
                    "parameter": name,
                    "mean": float(v.mean()),
                    "sd": float(v.std(ddof=1)),
                    "q5": q5,
                    "median": q50,
                    "q95": q95,
                    "r_hat": float(np.mean(rhat)),
                    "ess_bulk": ess,
                    "frac_between": between / total if total > 0 else 0.0,
                }
            )
        return pd.DataFrame(rows, columns=SUMMARY_COLUMNS)

    # ----------------------------------------------------------- predictions
    def _covariate_matrix(self, covariates: Mapping | None, n: int) -> np.ndarray:
        """Centred covariate values (n, p): scalars or length-n arrays, missing ones at their reference."""
        covariates = dict(covariates or {})
        unknown = set(covariates) - set(self.covariates)
        if unknown:
            raise SpecError(
                f"covariates {sorted(unknown)}: not in this model (it has: "
                f"{', '.join(self.covariates) or 'none'})"
            )
        cols = []
        for c in self.covariates:
            v = np.broadcast_to(np.asarray(covariates.get(c, self.reference[c]), float), (n,))
            if not np.all(np.isfinite(v)):
                raise SpecError(f"covariate {c}: values must be finite numbers")
            cols.append(v - self.reference[c])
        return np.column_stack(cols) if cols else np.zeros((n, 0))

    def _sample_index(self, n: int | None, rng: np.random.Generator) -> np.ndarray:
        total = self.posterior.sizes["chain"] * self.posterior.sizes["draw"]
        if n is None:
            return np.arange(total)
        return rng.choice(total, size=n, replace=n > total)

    def probability(
        self,
        log10_exposure: np.ndarray,
        covariates: Mapping | None = None,
        *,
        grade: int | None = None,
        time: float | None = None,
        samples: np.ndarray | None = None,
    ) -> np.ndarray:
        """Per-sample predicted probabilities at given log10 exposures.

        Parameters
        ----------
        log10_exposure : array, shape (n,) or (n_samples, n)
            A 2-d array pairs row i with posterior sample ``samples[i]``.
        covariates : mapping, optional
            {covariate: scalar or array (n,)}; missing ones are at their reference.
        grade : int
            ordinal: return P(grade >= ``grade``).
        time : float
            tte: return the survival probability S(time).
        samples : array of int, optional
            Indices into the pooled samples (default: all).

        Returns
        -------
        ndarray, shape (n_samples, n)
            binary: P(response); ordinal: P(grade >= k); tte: S(t).
        """
        lx = np.asarray(log10_exposure, float)
        n = lx.shape[-1]
        idx = (
            np.arange(self.posterior.sizes["chain"] * self.posterior.sizes["draw"])
            if samples is None
            else samples
        )
        if lx.ndim == 2 and lx.shape[0] != len(idx):
            raise SpecError(
                f"log10_exposure has {lx.shape[0]} rows but {len(idx)} posterior samples were asked for"
            )
        Zc = self._covariate_matrix(covariates, n)
        eta = self._draws("b_exposure")[idx, None] * (lx - np.log10(self.reference["exposure"]))
        if self.covariates:
            eta = eta + self._draws("b_cov")[idx] @ Zc.T
        if self.kind == "binary":
            return expit(self._draws("intercept")[idx, None] + eta)
        if self.kind == "ordinal":
            j = self._threshold_index(grade)
            return expit(eta - self._draws("cutpoints")[idx, j][:, None])
        if time is None or not np.isfinite(time) or time < 0:
            raise SpecError(f"time={time!r}: a tte model predicts survival at a time >= 0")
        shape, scale = self._draws("shape")[idx, None], self._draws("scale")[idx, None]
        return np.exp(-((time / scale) ** shape) * np.exp(eta))

    def _threshold_index(self, grade) -> int:
        if grade is None or grade not in self.thresholds:
            msg = (
                f"grade={grade!r}: P(grade >= k) can be estimated for k in {self.thresholds} only (grades "
                f"observed: {self.levels})"
            )
            if grade is not None and self.levels and grade > self.levels[-1]:
                msg += f"; no subject had grade {self.levels[-1] + 1} or higher"
            raise SpecError(msg)
        return int(np.searchsorted(self.levels, grade)) - 1

    def _quantities(self, grades, times) -> list[tuple[str, dict]]:
        if self.kind == "binary":
            if grades is not None or times is not None:
                raise SpecError("grades= and times= apply to ordinal and tte models")
            return [(f"P({self.outcome}=1)", {})]
        if self.kind == "ordinal":
            if times is not None:
                raise SpecError("times= applies to tte models")
            ks = self.thresholds if grades is None else list(np.atleast_1d(grades))
            return [(f"P({self.outcome}>={int(k)})", {"grade": int(k)}) for k in ks]
        if grades is not None:
            raise SpecError("grades= applies to ordinal models")
        ts = [float(np.median(self.observed[self.outcome]))] if times is None else list(np.atleast_1d(times))
        return [(f"S({t:g})", {"time": float(t)}) for t in ts]

    def curve(
        self,
        exposure_grid=None,
        covariates: Mapping | None = None,
        *,
        grades=None,
        times=None,
        n_samples: int | None = 4000,
        seed: int = 0,
    ) -> pd.DataFrame:
        """Probability against exposure with 90% credible bands.

        Parameters
        ----------
        exposure_grid : array, optional
            Exposures (natural units, > 0); default 50 points log-spaced over
            the observed range.
        covariates : mapping, optional
            {covariate: value}; missing ones are at their reference.
        grades : int or list, optional
            ordinal: the k of P(grade >= k) (default: every estimable k).
        times : float or list, optional
            tte: times of the survival probability (default: the median observed time).
        n_samples : int or None
            Posterior samples used (None: all).
        seed : int

        Returns
        -------
        DataFrame
            Columns ``exposure, quantity, mean, q5, median, q95`` plus ``grade``
            (ordinal) or ``time`` (tte); ``quantity`` reads e.g.
            ``P(RESP=1)``, ``P(CRS>=3)`` or ``S(180)``.
        """
        grid = self._grid(exposure_grid)
        idx = self._sample_index(n_samples, np.random.default_rng(seed))
        rows = []
        for label, what in self._quantities(grades, times):
            p = self.probability(np.log10(grid), covariates, samples=idx, **what)
            q5, q50, q95 = np.quantile(p, [0.05, 0.5, 0.95], axis=0)
            rows.append(
                pd.DataFrame(
                    {
                        "exposure": grid,
                        "quantity": label,
                        **what,
                        "mean": p.mean(axis=0),
                        "q5": q5,
                        "median": q50,
                        "q95": q95,
                    }
                )
            )
        return pd.concat(rows, ignore_index=True)

    def hazard_ratio(self, exposure_grid=None, reference: float | None = None) -> pd.DataFrame:
        """tte: hazard ratio of each exposure against ``reference`` (default: the fit's reference exposure).

        Returns
        -------
        DataFrame
            Columns ``exposure, mean, q5, median, q95``.
        """
        if self.kind != "tte":
            raise SpecError(f"hazard_ratio is for tte models; this one is {self.kind}")
        grid = self._grid(exposure_grid)
        ref = self.reference["exposure"] if reference is None else reference
        if not (np.isfinite(ref) and ref > 0):
            raise SpecError(f"reference={reference!r}: must be an exposure > 0")
        hr = np.exp(self._draws("b_exposure")[:, None] * (np.log10(grid) - np.log10(ref)))
        q5, q50, q95 = np.quantile(hr, [0.05, 0.5, 0.95], axis=0)
        return pd.DataFrame({"exposure": grid, "mean": hr.mean(axis=0), "q5": q5, "median": q50, "q95": q95})

    def _grid(self, exposure_grid) -> np.ndarray:
        if exposure_grid is None:
            e = self.observed["exposure"]
            return np.geomspace(e.min(), e.max(), 50)
        grid = np.atleast_1d(np.asarray(exposure_grid, float))
        if grid.ndim != 1 or not np.all(np.isfinite(grid) & (grid > 0)):
            raise SpecError(
                "exposure_grid: exposures must be finite numbers > 0 (the models use log10 exposure)"
            )
        return grid

    def plot(self, **kwargs):
        """Probability vs exposure with bands and binned observations; see :func:`plot_response`."""
        from bayespk.response.plots import plot_response

        return plot_response(self, **kwargs)

    def __repr__(self) -> str:
        s = self.settings
        return (
            f"ResponseFit({self.kind}, {self.outcome!r} ~ log10 {self.exposure_name}"
            f"{' + ' + ' + '.join(self.covariates) if self.covariates else ''}; {s['n_imputations']} "
            f"imputation(s) x {s['chains']} chains x {s['draws']} draws)"
        )


# ------------------------------------------------------------------ model building
def _design(prep: Prepared, reference: Mapping | None, outcome: str) -> dict:
    """Centring, prior scales, data containers and the compile key of one fit."""
    reference = dict(reference or {})
    unknown = set(reference) - {"exposure", *prep.covariates}
    if unknown:
        raise SpecError(
            f"reference {sorted(unknown)}: expected keys 'exposure' and covariates {prep.covariates}"
        )
    for key, value in reference.items():
        if not isinstance(value, (int, float, np.integer, np.floating)) or not np.isfinite(value):
            raise SpecError(f"reference[{key!r}] = {value!r}: must be a finite number")
    subject_lx = prep.log_exposure.mean(axis=0)
    if "exposure" in reference:
        if not reference["exposure"] > 0:
            raise SpecError(f"reference exposure {reference['exposure']!r}: must be > 0")
        x_ref = float(np.log10(reference["exposure"]))
    else:
        x_ref = float(subject_lx.mean())
    sd_x = float(np.std(subject_lx, ddof=1))
    if not sd_x > 0:
        raise DataError(
            "exposure: every subject has the same exposure; the exposure effect cannot be estimated"
        )
    z_ref = np.array([float(reference.get(c, prep.Z[:, j].mean())) for j, c in enumerate(prep.covariates)])
    sd_z = prep.Z.std(axis=0, ddof=1) if prep.covariates else np.zeros(0)
    data = {"scale_b": PRIOR_SCALE / np.concatenate([[sd_x], sd_z])}
    if prep.covariates:
        data["Z"] = prep.Z - z_ref
    free = ["b_exposure"] + (["b_cov"] if prep.covariates else [])
    notes, levels, key_extra = [], None, 0
    t_med = None
    if prep.kind == "binary":
        data["y"] = prep.y
        free = ["intercept"] + free
    elif prep.kind == "ordinal":
        levels = [int(v) for v in np.unique(prep.y)]
        data["y"] = np.searchsorted(levels, prep.y).astype("int64")
        gaps = [g for g in range(levels[0], levels[-1] + 1) if g not in levels]
        for g in gaps:
            nxt = next(v for v in levels if v > g)
            notes.append(
                f"{outcome}: no subject had grade {g}; it is collapsed (no probability mass), so "
                f"P({outcome}>={g}) = P({outcome}>={nxt})"
            )
        if levels[0] > 0 or levels[-1] < prep.max_grade:
            notes.append(
                f"{outcome}: grades {levels[0]}-{levels[-1]} occur; P({outcome}>=k) is estimated for k "
                f"in {levels[0] + 1}-{levels[-1]} only"
            )
        free = ["cutpoints"] + free
        key_extra = len(levels)
    else:
        t_med = float(np.median(prep.time))
        data["t"] = prep.time / t_med
        data["event"] = prep.event
        free = ["log_shape", "log_scale"] + free
    return {
        "kind": prep.kind,
        "n_cov": len(prep.covariates),
        "key": (prep.kind, len(prep.covariates), key_extra),
        "data": data,
        "x_ref": x_ref,
        "free": free,
        "levels": levels,
        "notes": notes,
        "t_med": t_med,
        "covariates": prep.covariates,
        "n": len(prep.ids),
        "x0": subject_lx - x_ref,
        "reference": {"exposure": float(10**x_ref), **dict(zip(prep.covariates, map(float, z_ref)))},
    }


def _build(design: dict) -> pm.Model:
    """The PyMC model of one E-R fit, every input in a ``pm.Data`` container."""
    d = design["data"]
    with pm.Model() as model:
        x = pm.Data("x", design["x0"])
        scale_b = pm.Data("scale_b", d["scale_b"])
        b_exposure = pm.Normal("b_exposure", 0.0, scale_b[0])
        eta = b_exposure * x
        if design["n_cov"]:
            Z = pm.Data("Z", d["Z"])
            b_cov = pm.Normal("b_cov", 0.0, scale_b[1:], shape=design["n_cov"])
            eta = eta + pm.math.dot(Z, b_cov)
        if design["kind"] == "binary":
            y = pm.Data("y", d["y"])
            intercept = pm.Normal("intercept", 0.0, PRIOR_SCALE)
            pm.Bernoulli("obs", logit_p=intercept + eta, observed=y)
        elif design["kind"] == "ordinal":
            y = pm.Data("y", d["y"])
            m = design["key"][2]
            cut = pm.Normal(
                "cutpoints",
                0.0,
                PRIOR_SCALE,
                shape=m - 1,
                transform=pm.distributions.transforms.ordered,
                initval=np.linspace(-1.0, 1.0, m - 1),
            )
            pm.OrderedLogistic("obs", eta=eta, cutpoints=cut, observed=y, compute_p=False)
        else:
            t = pm.Data("t", d["t"])
            event = pm.Data("event", d["event"])
            log_shape = pm.Normal("log_shape", 0.0, 1.0)
            log_scale = pm.Normal("log_scale", 0.0, PRIOR_SCALE)
            shape = pm.math.exp(log_shape)
            log_ratio = pm.math.log(t) - log_scale
            log_h = log_shape - log_scale + (shape - 1.0) * log_ratio + eta
            cum_h = pm.math.exp(shape * log_ratio + eta)
            pm.Potential("weibull_ph", pm.math.sum(event * log_h - cum_h))
    return model


def _natural(post: xr.Dataset, design: dict) -> xr.Dataset:
    """Name the vector dims and put Weibull parameters on the natural scale (time in data units)."""
    post = post.copy()
    if "b_cov" in post:
        post["b_cov"] = post["b_cov"].rename({post["b_cov"].dims[-1]: "covariate"})
        post = post.assign_coords(covariate=design["covariates"])
    if "cutpoints" in post:
        post["cutpoints"] = post["cutpoints"].rename({post["cutpoints"].dims[-1]: "threshold"})
        post = post.assign_coords(threshold=design["levels"][1:])
    if "log_shape" in post:
        post["shape"] = np.exp(post["log_shape"])
        post["scale"] = np.exp(post["log_scale"]) * design["t_med"]
        post = post.drop_vars(["log_shape", "log_scale"])
    return post.drop_dims([d for d in post.dims if d not in ("chain", "draw", "covariate", "threshold")])


def _pooled_diagnostics(posts: list[xr.Dataset], diags: list[dict]) -> dict:
    """Convergence over K imputations, checked with the project's thresholds.

    The worst R-hat of K separate short runs exceeds 1.01 by chance alone as K
    grows, so R-hat is each parameter's mean over the imputations (checked
    against 1.01), and any single imputation above 1.1 (a stuck chain) is
    flagged too. Bulk/tail ESS are summed over imputations (the pooled draws)
    and checked against 100 per pooled chain; divergences are summed; E-BFMI
    is the lowest chain's.
    """
    import arviz as az

    from bayespk.diagnostics import ESS_PER_CHAIN, RHAT_MAX

    def per_param(fn) -> dict[str, np.ndarray]:
        out = {}
        for post in posts:
            res = fn(post)
            for v in res.data_vars:
                vals = np.atleast_1d(res[v].values).ravel()
                for j, val in enumerate(vals):
                    out.setdefault(v if vals.size == 1 else f"{v}[{j}]", []).append(float(val))
        return {k: np.array(v) for k, v in out.items()}

    rhat = per_param(az.rhat)
    bulk = per_param(lambda p: az.ess(p, method="bulk"))
    tail = per_param(lambda p: az.ess(p, method="tail"))
    mean_rhat = {k: float(np.mean(v)) for k, v in rhat.items()}
    r_at = max(mean_rhat, key=mean_rhat.get)
    b_at = min(bulk, key=lambda k: bulk[k].sum())
    t_at = min(tail, key=lambda k: tail[k].sum())
    chains = diags[0]["chains"] * len(diags)
    out = {
        "imputations": len(diags),
        "chains": chains,
        "draws": diags[0]["draws"],
        "divergences": int(sum(d["divergences"] for d in diags)),
        "max_r_hat": mean_rhat[r_at],
        "max_r_hat_parameter": r_at,
        "worst_imputation_r_hat": max(d["max_r_hat"] for d in diags),
        "min_ess_bulk": float(bulk[b_at].sum()),
        "min_ess_bulk_parameter": b_at,
        "min_ess_tail": float(tail[t_at].sum()),
        "min_ess_tail_parameter": t_at,
        "min_bfmi": min(d["min_bfmi"] for d in diags),
    }
    problems = check_convergence(out, warn=False)
    if out["worst_imputation_r_hat"] > 1.1:
        problems.append(
            f"R-hat {out['worst_imputation_r_hat']:.3f} > 1.1 in one imputation (a chain did not "
            "mix); run longer chains"
        )
    out["problems"] = problems
    out["rules"] = (
        f"R-hat: mean over imputations <= {RHAT_MAX} and every imputation <= 1.1; ESS: summed over "
        f"imputations >= {ESS_PER_CHAIN} per pooled chain"
    )
    return out
