"""Priors for the PK parameters of a new population from historical popPK results.

The recipe (Schmidli et al. 2014, Biometrics 70:1023, for the robust MAP prior):

1. Collect historical estimates of a typical value (CL, V, ...) with their
   uncertainty: several published studies (estimate and SE or RSE), and/or a
   fitted bayespk run on adults (:func:`historical_from_fit`).
2. Put every estimate on the log scale and **scale it to the new
   population**: allometrically by body weight,
   ``log P_new = log P_j + b log(WT_new / WT_j)`` with ``b = 0.75`` for
   clearances and ``1`` for volumes by default (West et al. 1997; Anderson &
   Holford 2008, Annu Rev Pharmacol Toxicol 48:303), and, for children, by a
   maturation function ``+ log mat(age_new) - log mat(age_j)``.
3. Fit the normal MAP model to the scaled log estimates (known SEs):
   between-study heterogeneity tau ~ HalfNormal(0.3) on the log scale by
   default (between-study CV up to about 60%), and approximate the predictive
   by a normal mixture on log P.
4. Robustify with a vague component (weight 0.2, SD 1 on the log scale, i.e.
   a factor of about e either way, by default).

**ESS in patients.** The reference SD is the between-patient SD omega of
log P (the IIV): one patient whose individual log P were known exactly
carries ``1 / omega^2`` of information about the log typical value, so a
prior with SD s on log P is worth ``omega^2 / s^2`` patients. Patients are
never observed that precisely, so this counts the prior in its most
favourable currency; it is the usual yardstick (e.g. for comparing with the
6 patients of a rare-disease study) rather than an exact equivalence.

**Prior-data conflict.** :func:`borrowing_report` compares fits with and
without borrowing: the posterior weight of the vague component (the mean
of its responsibility over posterior draws of log P, which equals its
posterior probability exactly), and the information borrowed
``omega^2 (1/V_borrow - 1/V_vague)`` in patients, from the posterior
variances of log P.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from bayespk.borrowing.map_prior import MAPFit, fit_map
from bayespk.borrowing.mixtures import NormalMixture
from bayespk.borrowing.prior_file import write_prior
from bayespk.errors import DataError, SpecError
from bayespk.model.priors import MixturePrior, Prior

__all__ = [
    "ALLOMETRIC_EXPONENTS",
    "PKPrior",
    "borrowing_report",
    "historical_from_fit",
    "pk_map_prior",
    "scale_estimates",
    "sigmoid_maturation",
]

ALLOMETRIC_EXPONENTS = {"CL": 0.75, "Q": 0.75, "CLD": 0.75, "V": 1.0, "V1": 1.0, "V2": 1.0, "VC": 1.0, "VP": 1.0}


def sigmoid_maturation(tm50: float, hill: float) -> Callable[[np.ndarray], np.ndarray]:
    """A sigmoid (Hill) maturation function ``age^hill / (tm50^hill + age^hill)``.

    ``age`` is postmenstrual age in weeks when ``tm50`` is, e.g. glomerular
    filtration: ``tm50 = 47.7`` weeks PMA, ``hill = 3.4`` (Rhodin et al. 2009,
    Pediatr Nephrol 24:67); see Anderson & Holford (2008) for the approach.

    Examples
    --------
    >>> f = sigmoid_maturation(47.7, 3.4)
    >>> round(float(f(47.7)), 3), round(float(f(40 + 52 * 2)), 3)
    (0.5, 0.977)
    """
    if not (tm50 > 0 and hill > 0):
        raise SpecError(f"maturation: tm50 and hill must be > 0, got {tm50!r}, {hill!r}")

    def mat(age):
        a = np.asarray(age, dtype=float)
        return a**hill / (tm50**hill + a**hill)

    mat.__doc__ = f"sigmoid maturation, TM50 {tm50:g}, Hill {hill:g}"
    return mat


def historical_from_fit(fit, parameters: tuple[str, ...] = ("CL", "V"), *, study: str = "bayespk fit",
                        weight_column: str = "WT", weight: float | None = None) -> pd.DataFrame:
    """Historical estimates from a fitted bayespk run (e.g. on adults).

    For each parameter: the posterior mean and SD of its log typical value,
    the reference weight it refers to (the ``reference`` of a power effect of
    ``weight_column`` on it in the spec, or ``weight``), the posterior mean of
    its IIV SD omega, and the number of subjects.

    Returns
    -------
    DataFrame
        Columns ``study, parameter, estimate, se, weight, omega, n`` (``se`` is
        the SE of log(estimate); ``estimate`` the posterior geometric mean).
    """
    post = fit.posterior
    n_subj = int(post.sizes.get("ID", 0)) or None
    rows = []
    for p in parameters:
        if p not in post:
            raise SpecError(f"historical_from_fit: the fit has no parameter {p!r} "
                            f"(it has {', '.join(fit.spec.parameters)})")
        logp = np.log(post[p].values.ravel())
        ref = weight
        for c in fit.spec.covariates:
            if c.parameter == p and c.column.upper() == weight_column.upper() and c.effect == "power":
                ref = float(c.reference)
        if ref is None:
            raise SpecError(f"historical_from_fit: the spec has no power effect of {weight_column} on {p}; give "
                            "weight= (the body weight the typical value refers to)")
        omega = float(post[f"omega_{p}"].values.mean()) if f"omega_{p}" in post else float("nan")
        rows.append({"study": study, "parameter": p, "estimate": float(np.exp(logp.mean())),
                     "se": float(logp.std(ddof=1)), "weight": ref, "omega": omega, "n": n_subj})
    return pd.DataFrame(rows)


def _validate_pk_history(hist: pd.DataFrame | str | Path, parameter: str) -> pd.DataFrame:
    if not isinstance(hist, pd.DataFrame):
        p = Path(hist)
        if not p.is_file():
            raise DataError(f"{p}: no such file")
        hist = pd.read_csv(p, skipinitialspace=True)
    h = hist.copy()
    h.columns = [str(c).strip().lower() for c in h.columns]
    if "rse" in h.columns and "se" not in h.columns:
        h["se"] = pd.to_numeric(h["rse"], errors="coerce") / 100.0  # RSE% of the estimate ~ SE of its log
    need = ("study", "parameter", "estimate", "se", "weight")
    missing = [c for c in need if c not in h.columns]
    if missing:
        raise DataError(f"historical PK estimates: missing column(s) {', '.join(missing)}; need study, parameter, "
                        "estimate (typical value), se (SE of log estimate; or rse in %), weight (reference body "
                        "weight of the estimate), optional age, omega, n")
    h["parameter"] = h["parameter"].astype(str).str.strip()
    h = h[h.parameter.str.upper() == parameter.upper()].reset_index(drop=True)
    if h.empty:
        raise DataError(f"historical PK estimates: no row for parameter {parameter!r}")
    for col in ("estimate", "se", "weight") + tuple(c for c in ("age", "omega", "n") if c in h.columns):
        v = pd.to_numeric(h[col], errors="coerce")
        bad = v.isna() if col in ("estimate", "se", "weight") else (v.isna() & h[col].notna())
        if bad.any():
            i = int(np.argmax(bad.to_numpy()))
            raise DataError(f"historical PK estimates: row {i + 1} ({parameter}), column {col}: "
                            f"{h[col].iloc[i]!r} is not a number")
        h[col] = v.astype(float)
        pos = h[col].dropna() <= 0
        if pos.any():
            i = int(pos[pos].index[0])
            raise DataError(f"historical PK estimates: row {i + 1} ({parameter}), column {col}: "
                            f"{h[col].iloc[i]:g} must be > 0")
    h["study"] = h["study"].astype(str)
    return h


def scale_estimates(hist: pd.DataFrame, parameter: str, *, weight: float, exponent: float | None = None,
                    maturation: Callable | None = None, age: float | None = None) -> pd.DataFrame:
    """Historical estimates of one parameter on the log scale, scaled to the new population.

    ``y_j = log(estimate_j) + exponent * log(weight / weight_j) + log mat(age) - log mat(age_j)``
    (maturation terms only with ``maturation``; a history without an ``age``
    column is taken as mature, ``mat = 1``). ``se`` stays the SE on the log scale.

    Returns
    -------
    DataFrame
        ``study, y, se`` (and ``n`` when given): input for the normal MAP model.
    """
    h = _validate_pk_history(hist, parameter)
    if not (isinstance(weight, (int, float)) and weight > 0):
        raise SpecError(f"weight (reference body weight of the new population) must be > 0, got {weight!r}")
    b = exponent if exponent is not None else ALLOMETRIC_EXPONENTS.get(parameter.upper())
    if b is None:
        raise SpecError(f"no default allometric exponent for {parameter!r}; give exponent= (0.75 for clearances, "
                        "1 for volumes, 0 for none)")
    y = np.log(h.estimate.to_numpy()) + b * np.log(weight / h.weight.to_numpy())
    if maturation is not None:
        if age is None:
            raise SpecError("maturation needs the age of the new population (age=...), in the function's units")
        hist_mat = (np.asarray(maturation(h.age.to_numpy()), float) if "age" in h.columns and h.age.notna().all()
                    else np.ones(len(h)))
        new_mat = float(np.asarray(maturation(age), float))
        if not (new_mat > 0 and np.all(hist_mat > 0)):
            raise SpecError("maturation: the function must be > 0 at every age")
        y = y + math.log(new_mat) - np.log(hist_mat)
    out = pd.DataFrame({"study": h.study, "y": y, "se": h.se.to_numpy()})
    if "n" in h.columns and h.n.notna().all():
        out["n"] = h.n.to_numpy()
    return out


@dataclass
class PKPrior:
    """A (robust) MAP prior on the log typical value of one PK parameter in a new population.

    Attributes
    ----------
    parameter : str
    weight, exponent : float
        Reference body weight of the new population and the allometric exponent used.
    omega : float
        Between-patient SD of log P: one patient's worth of information (ESS unit).
    map_fit : MAPFit
    mixture : NormalMixture
        The MAP prior on log P.
    robust : NormalMixture
        The robustified prior on log P.
    scaled : DataFrame
        The scaled historical log estimates.
    """

    parameter: str
    weight: float
    exponent: float
    omega: float
    map_fit: MAPFit
    mixture: NormalMixture
    robust: NormalMixture
    scaled: pd.DataFrame
    settings: dict[str, Any] = field(default_factory=dict)

    def ess(self) -> pd.DataFrame:
        """ESS in patients (moment, Morita, ELIR) of the MAP and the robust prior."""
        from bayespk.borrowing.prior_file import ess_all

        return pd.DataFrame({"MAP": ess_all(self.mixture)[0], "robust MAP": ess_all(self.robust)[0]})

    def summary(self) -> pd.DataFrame:
        """Median and 95% interval on the natural scale, for the MAP and the robust prior."""
        rows = {}
        for label, m in (("MAP", self.mixture), ("robust MAP", self.robust)):
            lo, med, hi = np.exp(m.quantile([0.025, 0.5, 0.975]))
            rows[label] = {"median": med, "2.5%": lo, "97.5%": hi, "sd(log)": m.sd()}
        return pd.DataFrame(rows).T

    def model_prior(self, robust: bool = True) -> MixturePrior:
        """The prior as a spec's ``typical`` prior (a :class:`~bayespk.model.priors.MixturePrior`)."""
        m = self.robust if robust else self.mixture
        return MixturePrior("normal", "log", tuple(m.weights), tuple(m.m), tuple(m.s))

    def write(self, path: str | Path, robust: bool = True) -> Path:
        """Write a prior file usable as ``typical = { file = "..." }`` in a spec."""
        m = self.robust if robust else self.mixture
        source = {"kind": "PK MAP prior", "parameter": self.parameter, "reference_weight": self.weight,
                  "allometric_exponent": self.exponent, "omega": self.omega,
                  "tau_prior": self.map_fit.tau_prior.to_dict(), "studies": self.scaled.study.tolist(),
                  "seed": self.map_fit.seed, **self.settings}
        return write_prior(path, m, scale="log", parameter=self.parameter, source=source)


def pk_map_prior(
    hist: pd.DataFrame | str | Path,
    parameter: str,
    *,
    weight: float,
    omega: float | None = None,
    exponent: float | None = None,
    maturation: Callable | None = None,
    age: float | None = None,
    tau_prior: Prior | None = None,
    robust_weight: float = 0.2,
    vague_sd: float = 1.0,
    draws: int = 2000,
    tune: int = 1000,
    chains: int = 4,
    seed: int | None = None,
    progress: bool = False,
) -> PKPrior:
    """Build a robust MAP prior on log(typical value) of ``parameter`` for a new population.

    Parameters
    ----------
    hist : DataFrame or CSV path
        Historical estimates: ``study, parameter, estimate, se, weight`` and
        optional ``age, omega, n`` (see :func:`scale_estimates`); e.g. from
        :func:`historical_from_fit` and/or the literature. ``se`` is the SE of
        the log estimate (an ``rse`` column in % is accepted instead).
    parameter : str
    weight : float
        Reference body weight of the new population (use it as the
        ``reference`` of the WT effect in the new model's spec).
    omega : float, optional
        IIV SD of log P (the ESS unit); default: mean of the ``omega`` column.
    exponent : float, optional
        Allometric exponent (default 0.75 for CL/Q, 1 for V).
    maturation, age : callable, float, optional
        Maturation function and the new population's age (same units).
    tau_prior : Prior, optional
        Between-study SD of log P; default HalfNormal(0.3).
    robust_weight, vague_sd : float
        Weight and SD (log scale) of the vague component, centred on the MAP mean.

    Examples
    --------
    >>> hist = pd.DataFrame({"study": ["A", "B", "C"], "parameter": "CL", "estimate": [5.0, 5.6, 4.6],
    ...                      "se": [0.08, 0.1, 0.12], "weight": 70, "omega": 0.3})
    >>> prior = pk_map_prior(hist, "CL", weight=20, seed=1)  # doctest: +SKIP
    >>> prior.summary()                                       # doctest: +SKIP
    """
    scaled = scale_estimates(hist, parameter, weight=weight, exponent=exponent, maturation=maturation, age=age)
    h = _validate_pk_history(hist, parameter)
    if omega is None:
        if "omega" not in h.columns or h.omega.isna().all():
            raise SpecError("omega (the IIV SD of log P, which defines one patient's information) is needed: give "
                            "omega=... or an omega column")
        omega = float(h.omega.mean())
    if not (omega > 0 and math.isfinite(omega)):
        raise SpecError(f"omega must be a positive number, got {omega!r}")
    if not 0 < robust_weight < 1:
        raise SpecError(f"robust_weight must lie strictly between 0 and 1, got {robust_weight!r}")
    b = exponent if exponent is not None else ALLOMETRIC_EXPONENTS[parameter.upper()]
    tau_p = tau_prior if tau_prior is not None else Prior("HalfNormal", sigma=0.3)
    map_fit = fit_map(scaled.drop(columns=[c for c in ("n",) if c in scaled.columns]), "normal", tau_prior=tau_p,
                      sigma=omega, scale="log", draws=draws, tune=tune, chains=chains, seed=seed, progress=progress)
    mix = map_fit.mixture()
    robust = mix.robustify(robust_weight, mean=mix.mean(), sd=vague_sd)
    settings = {"robust_weight": robust_weight, "vague_sd": vague_sd}
    if maturation is not None:
        settings["maturation"] = getattr(maturation, "__doc__", None) or repr(maturation)
        settings["age"] = age
    return PKPrior(parameter=parameter, weight=float(weight), exponent=float(b), omega=float(omega),
                   map_fit=map_fit, mixture=mix, robust=robust, scaled=scaled, settings=settings)


def borrowing_report(prior: PKPrior | NormalMixture, fits: dict[str, Any], *, reference: str | None = None,
                     parameter: str | None = None, omega: float | None = None) -> pd.DataFrame:
    """How much each fit borrowed, and where its posterior of the typical value went.

    Parameters
    ----------
    prior : PKPrior or NormalMixture
        The robust prior (a :class:`PKPrior`, or its robust mixture on log P
        with the vague component last, together with ``parameter``).
    fits : dict of label -> Fit
        Fits of the new data with different priors on the parameter.
    reference : str, optional
        The label of a fit with a vague prior (no borrowing); enables the
        ``borrowed_patients`` column.
    parameter, omega : str, float
        With a NormalMixture: the parameter name and the IIV SD of its log
        (default: the mixture's reference sigma).

    Returns
    -------
    DataFrame
        One row per fit: posterior median and 95% interval of the parameter,
        posterior SD of its log, the posterior weight of the robust
        component (for fits whose prior is the robust mixture: the mean of
        its responsibility over the posterior draws), and ``borrowed_patients
        = omega^2 (1/V_fit - 1/V_reference)``.
    """
    if isinstance(prior, PKPrior):
        p, rob, om = prior.parameter, prior.robust, prior.omega
    elif isinstance(prior, NormalMixture):
        if parameter is None:
            raise SpecError("borrowing_report: with a NormalMixture, give parameter= (e.g. 'CL')")
        p, rob = parameter, prior
        om = omega if omega is not None else prior.sigma
        if om is None:
            raise SpecError("borrowing_report: give omega= (the IIV SD of the log parameter)")
    else:
        raise SpecError(f"borrowing_report: expected a PKPrior or NormalMixture, got {type(prior).__name__}")
    out = {}
    ref_var = None
    if reference is not None:
        if reference not in fits:
            raise SpecError(f"borrowing_report: reference {reference!r} is not among the fits ({', '.join(fits)})")
        ref_var = float(np.var(np.log(fits[reference].posterior[p].values.ravel()), ddof=1))
    for label, f in fits.items():
        x = np.log(f.posterior[p].values.ravel())
        lo, med, hi = np.exp(np.quantile(x, [0.025, 0.5, 0.975]))
        row = {"median": med, "2.5%": lo, "97.5%": hi, "sd(log)": float(np.std(x, ddof=1))}
        typical = f.spec.parameters[p].typical
        if isinstance(typical, MixturePrior) and typical.family == "normal" and typical.scale == "log" \
                and len(typical.weights) == rob.n_components and np.allclose(typical.weights, rob.weights) \
                and np.allclose(typical.p1, rob.m) and np.allclose(typical.p2, rob.s):
            comp = rob._component_logpdf(x)
            lw = np.log(rob.weights)[:, None] + comp
            resp = np.exp(lw - np.logaddexp.reduce(lw, axis=0))
            row["posterior_weight_vague"] = float(resp[-1].mean())
        else:
            row["posterior_weight_vague"] = float("nan")
        if ref_var is not None:
            row["borrowed_patients"] = om**2 * (1 / np.var(x, ddof=1) - 1 / ref_var)
        out[label] = row
    return pd.DataFrame(out).T
