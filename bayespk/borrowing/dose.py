"""Dose selection from a PK posterior: probability of target attainment and of exceeding a safety limit.

For each candidate dose, steady-state exposures of a one-compartment model are
computed in closed form for every posterior draw and virtual patient:

* ``auc``: AUC over one dosing interval at steady state, ``F * Dose / CL``;
* ``cavg``: ``auc / interval``;
* ``cmax`` and ``cmin`` (trough) at steady state, with ``k = CL / V``:

  - IV bolus: ``Cmax = Dose / V / (1 - exp(-k tau))``, ``Cmin = Cmax exp(-k tau)``;
  - zero-order infusion of duration T: ``Cmax = Dose/T / CL (1 - exp(-k T)) / (1 - exp(-k tau))``,
    ``Cmin = Cmax exp(-k (tau - T))``;
  - first-order absorption: ``C(t) = F Dose ka / (V (ka - k)) [exp(-k t)/(1 - exp(-k tau))
    - exp(-ka t)/(1 - exp(-ka tau))]``, at ``t_max = log(ka (1 - exp(-k tau)) /
    (k (1 - exp(-ka tau)))) / (ka - k)`` and at ``t = tau`` (trough).

(These are the steady-state limits of the superposition sums computed by
:mod:`bayespk.structural.compartments`; the tests check them against it.)

The probability of target attainment (PTA) at ``level="patient"`` is over
parameter uncertainty *and* between-patient variability (a new patient's eta
drawn from N(0, omega) for every posterior draw): the chance that a patient
given this dose reaches the target. At ``level="typical"`` it is the
posterior probability that the typical patient does.

A stated criterion picks the dose:

* ``"target_with_safety"`` (default): the highest P(target) among doses with
  P(exceed) <= ``max_risk`` (ties: the lowest dose);
* ``"utility"``: the highest ``P(target) - penalty * P(exceed)``;
* ``"response_with_safety"``: with an exposure-response model, the highest
  expected response among doses with P(exceed) <= ``max_risk``;
* or a callable taking the table row (a Series) and returning a score.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bayespk.errors import DataError, SpecError

__all__ = [
    "CRITERIA",
    "METRICS",
    "DoseTable",
    "EmaxResponse",
    "PKDraws",
    "Regimen",
    "Target",
    "dose_table",
    "steady_state_exposure",
]

METRICS = ("auc", "cavg", "cmax", "cmin")
CRITERIA = ("target_with_safety", "utility", "response_with_safety")


@dataclass(frozen=True)
class Regimen:
    """A repeated dosing regimen at steady state.

    Parameters
    ----------
    interval : float
        Dosing interval tau (time units of the model, e.g. h).
    route : {"iv", "infusion", "oral"}
    infusion_duration : float, optional
        Required for ``"infusion"`` (<= interval).
    bioavailability : float
        F (oral); 1 for IV.
    per_kg : bool
        Doses are per kg of body weight (multiplied by each patient's ``WT``).
    """

    interval: float
    route: str = "iv"
    infusion_duration: float | None = None
    bioavailability: float = 1.0
    per_kg: bool = False

    def __post_init__(self):
        if not (self.interval > 0 and math.isfinite(self.interval)):
            raise SpecError(f"regimen: interval must be > 0, got {self.interval!r}")
        if self.route not in ("iv", "infusion", "oral"):
            raise SpecError(f"regimen: route must be 'iv', 'infusion' or 'oral', got {self.route!r}")
        if self.route == "infusion":
            t = self.infusion_duration
            if t is None or not 0 < t <= self.interval:
                raise SpecError(f"regimen: an infusion needs 0 < infusion_duration <= interval, got {t!r}")
        if not 0 < self.bioavailability <= 1:
            raise SpecError(f"regimen: bioavailability must lie in (0, 1], got {self.bioavailability!r}")


@dataclass(frozen=True)
class Target:
    """An exposure target: ``lower <= metric`` (and ``<= upper`` when given).

    Examples
    --------
    >>> Target("auc", lower=400).hit(np.array([300.0, 500.0])).tolist()
    [False, True]
    """

    metric: str
    lower: float | None = None
    upper: float | None = None

    def __post_init__(self):
        if self.metric not in METRICS:
            raise SpecError(f"target: metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if self.lower is None and self.upper is None:
            raise SpecError("target: give lower and/or upper")
        if self.lower is not None and self.upper is not None and self.lower >= self.upper:
            raise SpecError(f"target: lower ({self.lower:g}) must be below upper ({self.upper:g})")

    def hit(self, x: np.ndarray) -> np.ndarray:
        ok = np.ones(np.shape(x), bool)
        if self.lower is not None:
            ok &= x >= self.lower
        if self.upper is not None:
            ok &= x <= self.upper
        return ok

    def __str__(self) -> str:
        if self.upper is None:
            return f"{self.metric} >= {self.lower:g}"
        if self.lower is None:
            return f"{self.metric} <= {self.upper:g}"
        return f"{self.lower:g} <= {self.metric} <= {self.upper:g}"


@dataclass(frozen=True)
class EmaxResponse:
    """Exposure-response: ``P(response) = e0 + emax * C^hill / (ec50^hill + C^hill)`` with C = ``metric``."""

    metric: str
    e0: float
    emax: float
    ec50: float
    hill: float = 1.0

    def __post_init__(self):
        if self.metric not in METRICS:
            raise SpecError(f"exposure-response: metric must be one of {', '.join(METRICS)}, got {self.metric!r}")
        if not (self.ec50 > 0 and self.hill > 0):
            raise SpecError("exposure-response: ec50 and hill must be > 0")
        if not (0 <= self.e0 <= 1 and 0 <= self.e0 + self.emax <= 1):
            raise SpecError("exposure-response: e0 and e0 + emax must be probabilities in [0, 1]")

    def __call__(self, c: np.ndarray) -> np.ndarray:
        c = np.maximum(np.asarray(c, float), 0.0)
        return self.e0 + self.emax * c**self.hill / (self.ec50**self.hill + c**self.hill)


# ---------------------------------------------------------------------- exposures
def steady_state_exposure(dose, regimen: Regimen, cl, v, ka=None) -> dict[str, np.ndarray]:
    """Steady-state exposures (``auc``, ``cavg``, ``cmax``, ``cmin``) of a one-compartment model.

    All arguments broadcast. ``ka`` is needed for oral dosing.

    Examples
    --------
    >>> e = steady_state_exposure(100.0, Regimen(12.0), cl=5.0, v=50.0)
    >>> round(float(e["auc"]), 6), round(float(e["cmax"]), 4)
    (20.0, 2.862)
    """
    dose, cl, v = (np.asarray(a, float) for a in (dose, cl, v))
    tau = regimen.interval
    f = regimen.bioavailability if regimen.route == "oral" else 1.0
    k = cl / v
    auc = f * dose / cl
    acc_k = -np.expm1(-k * tau)  # 1 - exp(-k tau)
    if regimen.route == "iv":
        cmax = dose / v / acc_k
        cmin = cmax * np.exp(-k * tau)
    elif regimen.route == "infusion":
        t_inf = regimen.infusion_duration
        cmax = dose / t_inf / cl * (-np.expm1(-k * t_inf)) / acc_k
        cmin = cmax * np.exp(-k * (tau - t_inf))
    else:
        if ka is None:
            raise SpecError("oral dosing needs ka")
        ka = np.asarray(ka, float)
        ka = np.where(np.abs(ka - k) < 1e-9 * k, k * (1 + 1e-6), ka)  # ka == k: nudge (limit is continuous)
        acc_a = -np.expm1(-ka * tau)
        tmax = np.log(ka * acc_k / (k * acc_a)) / (ka - k)

        def conc(t):
            return f * dose * ka / (v * (ka - k)) * (np.exp(-k * t) / acc_k - np.exp(-ka * t) / acc_a)

        cmax = conc(tmax)
        cmin = conc(tau)
    return {"auc": auc, "cavg": auc / tau, "cmax": cmax, "cmin": cmin}


# ---------------------------------------------------------------------- posterior draws
@dataclass
class PKDraws:
    """Draws of population PK parameters, and how covariates scale them.

    Attributes
    ----------
    typical : dict
        ``{"CL": (n,), "V": (n,), ["KA": (n,)]}`` typical values at the covariate references.
    omega : dict
        IIV SDs (log scale) per parameter, ``(n,)`` arrays (missing: no IIV).
    covariate_effects : list of callables
        Each ``f(draw_index_array, population DataFrame) -> dict param -> log-factor (n, m)``.
    label : str
    """

    typical: dict[str, np.ndarray]
    omega: dict[str, np.ndarray] = field(default_factory=dict)
    covariate_effects: list[Callable] = field(default_factory=list)
    covariates: tuple[str, ...] = ()
    reference: dict[str, float] = field(default_factory=dict)
    label: str = ""

    @property
    def n(self) -> int:
        return int(next(iter(self.typical.values())).size)

    @classmethod
    def from_arrays(cls, label: str = "", **arrays: np.ndarray) -> PKDraws:
        """From arrays named like a fit's posterior: ``CL=..., V=..., omega_CL=...``."""
        typical = {k: np.asarray(v, float).ravel() for k, v in arrays.items() if not k.startswith("omega_")}
        omega = {k[6:]: np.asarray(v, float).ravel() for k, v in arrays.items() if k.startswith("omega_")}
        sizes = {v.size for v in list(typical.values()) + list(omega.values())}
        if len(sizes) != 1:
            raise SpecError(f"PKDraws: every array needs the same number of draws, got sizes {sorted(sizes)}")
        return cls(typical=typical, omega=omega, label=label)

    @classmethod
    def from_fit(cls, fit, n: int | None = 1000, seed: int = 0, label: str = "") -> PKDraws:
        """Population parameters (typical values, omegas, covariate coefficients) of a fitted model.

        Covariate effects of the spec (power, exponential, linear; categorical
        is not supported here) are applied to a virtual population's columns.
        """
        post = fit.posterior
        flat = {k: post[k].values.reshape(-1, *post[k].shape[2:]) for k in post.data_vars
                if k in fit.spec.parameters or k.startswith("omega_")
                or any(k == c.name for c in fit.spec.covariates)}
        total = next(iter(flat.values())).shape[0]
        idx = np.arange(total)
        if n is not None and n < total:
            idx = np.sort(np.random.default_rng(seed).choice(total, size=n, replace=False))
        typical = {p: flat[p][idx] for p in fit.spec.parameters}
        omega = {p: flat[f"omega_{p}"][idx] for p, ps in fit.spec.parameters.items() if ps.iiv is not None}
        effects = []
        refs = {}
        cols = []
        for c in fit.spec.covariates:
            if c.effect == "categorical":
                raise SpecError(f"dose: categorical covariate effects ({c.name}) are not supported; give a "
                                "population whose level is the reference, or PKDraws.from_arrays")
            theta = np.full(idx.size, c.coefficient) if c.fixed else flat[c.name][idx]
            refs[c.column] = c.reference
            cols.append(c.column)
            effects.append(_effect(c.parameter, c.column, c.effect, float(c.reference), theta))
        return cls(typical=typical, omega=omega, covariate_effects=effects, covariates=tuple(dict.fromkeys(cols)),
                   reference=refs, label=label or getattr(fit.spec, "name", ""))

    def with_covariate(self, parameter: str, column: str, *, reference: float, coefficient: float,
                       effect: str = "power") -> PKDraws:
        """A copy with a fixed covariate effect added (power, exponential or linear, as in a spec).

        Examples
        --------
        >>> d = PKDraws.from_arrays(CL=[2.0], V=[20.0]).with_covariate("CL", "WT", reference=20, coefficient=0.75)
        >>> round(float(d.individual(pd.DataFrame({"WT": [40.0]}), "typical", None)["CL"][0, 0]), 4)
        3.3636
        """
        if parameter not in self.typical:
            raise SpecError(f"with_covariate: no parameter {parameter!r} (have {', '.join(self.typical)})")
        if effect not in ("power", "exponential", "linear"):
            raise SpecError(f"with_covariate: effect must be power, exponential or linear, got {effect!r}")
        eff = _effect(parameter, column, effect, float(reference), np.full(self.n, float(coefficient)))
        return PKDraws(typical=self.typical, omega=self.omega, covariate_effects=[*self.covariate_effects, eff],
                       covariates=tuple(dict.fromkeys((*self.covariates, column))),
                       reference={**self.reference, column: float(reference)}, label=self.label)

    def individual(self, population: pd.DataFrame, level: str, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Individual parameters, shape (draws, patients)."""
        m = len(population)
        out = {p: np.log(v)[:, None] * np.ones((1, m)) for p, v in self.typical.items()}
        for eff in self.covariate_effects:
            for p, lf in eff(population).items():
                out[p] = out[p] + lf
        if level == "patient":
            for p, om in self.omega.items():
                out[p] = out[p] + om[:, None] * rng.standard_normal((self.n, m))
        return {p: np.exp(v) for p, v in out.items()}


def _effect(param: str, column: str, effect: str, reference: float, theta: np.ndarray) -> Callable:
    def f(population: pd.DataFrame) -> dict[str, np.ndarray]:
        if column not in population:
            raise DataError(f"dose: the population needs column {column} (a covariate of {param})")
        x = population[column].to_numpy(float)[None, :]
        t = theta[:, None]
        if effect == "power":
            if np.any(x <= 0):
                raise DataError(f"dose: column {column} must be > 0 for a power effect")
            return {param: t * np.log(x / reference)}
        if effect == "exponential":
            return {param: t * (x - reference)}
        factor = 1 + t * (x - reference)
        if np.any(factor <= 0):
            raise DataError(f"dose: the linear effect of {column} on {param} is <= 0 for some patients")
        return {param: np.log(factor)}

    return f


# ---------------------------------------------------------------------- dose table
@dataclass
class DoseTable:
    """Per candidate dose: P(target), P(exceed), exposure quantiles, (expected response), score; and the best dose."""

    table: pd.DataFrame
    best_dose: float | None
    criterion: str
    target: Target
    safety: Target | None
    label: str = ""

    def __repr__(self) -> str:
        best = "none qualifies" if self.best_dose is None else f"{self.best_dose:g}"
        return (f"DoseTable({self.label or 'doses'}: target {self.target}, safety "
                f"{self.safety if self.safety else '-'}, criterion {self.criterion}; best dose {best})")


def dose_table(
    draws: PKDraws | Any,
    doses,
    regimen: Regimen,
    target: Target,
    *,
    safety: Target | None = None,
    population: pd.DataFrame | Mapping[str, Any] | None = None,
    level: str = "patient",
    criterion: str | Callable[[pd.Series], float] = "target_with_safety",
    max_risk: float = 0.1,
    penalty: float = 1.0,
    response: EmaxResponse | None = None,
    n_draws: int = 1000,
    seed: int = 0,
    label: str = "",
) -> DoseTable:
    """Probability of reaching the target and of exceeding a safety limit for candidate doses.

    Parameters
    ----------
    draws : PKDraws or Fit
        Posterior population parameters (a Fit is read with :meth:`PKDraws.from_fit`).
    doses : array-like
        Candidate doses (per kg when ``regimen.per_kg``).
    regimen : Regimen
    target : Target
        E.g. ``Target("auc", lower=400)``.
    safety : Target, optional
        The unsafe region, e.g. ``Target("cmax", lower=30)``: ``P(exceed)`` is
        the probability of falling in it.
    population : DataFrame or dict, optional
        Virtual patients' covariates (e.g. ``{"WT": [18, 22, 25]}``); default:
        one patient at the covariate references.
    level : {"patient", "typical"}
        Include between-patient variability (default) or not.
    criterion : str or callable
        See the module docstring.
    max_risk, penalty : float
        Parameters of the criteria.
    response : EmaxResponse, optional
        Adds the expected probability of response per dose.

    Returns
    -------
    DoseTable
        ``table`` columns: ``dose, p_target, p_exceed`` (if safety),
        ``<metric>_q05, <metric>_median, <metric>_q95`` for the target (and
        safety) metric, ``expected_response`` (if response), ``score``,
        ``eligible``; ``best_dose``.
    """
    if not isinstance(draws, PKDraws):
        draws = PKDraws.from_fit(draws, n=n_draws, seed=seed)
    if level not in ("patient", "typical"):
        raise SpecError(f"level must be 'patient' or 'typical', got {level!r}")
    crit_name = criterion if isinstance(criterion, str) else getattr(criterion, "__name__", "custom")
    if isinstance(criterion, str) and criterion not in CRITERIA:
        raise SpecError(f"criterion must be one of {', '.join(CRITERIA)} or a callable, got {criterion!r}")
    if criterion == "response_with_safety" and response is None:
        raise SpecError("criterion 'response_with_safety' needs an exposure-response model (response=...)")
    if isinstance(criterion, str) and criterion.endswith("with_safety") and safety is None:
        raise SpecError(f"criterion {criterion!r} needs a safety limit (safety=Target(...))")
    if not 0 <= max_risk <= 1:
        raise SpecError(f"max_risk must lie in [0, 1], got {max_risk!r}")
    doses = np.atleast_1d(np.asarray(doses, dtype=float))
    if doses.size == 0 or np.any(~np.isfinite(doses)) or np.any(doses <= 0):
        raise SpecError("doses must be positive numbers")
    if population is None:
        population = pd.DataFrame({c: [draws.reference[c]] for c in draws.covariates}, index=[0]) \
            if draws.covariates else pd.DataFrame(index=[0])
    population = pd.DataFrame(population)
    if len(population) == 0:
        raise DataError("population: no patients")
    for p in ("CL", "V"):
        if p not in draws.typical:
            raise SpecError(f"dose: the PK draws need {p} (one-compartment model)")
    if regimen.route == "oral" and "KA" not in draws.typical:
        raise SpecError("dose: oral dosing needs KA in the PK draws")
    if regimen.per_kg and "WT" not in population:
        raise DataError("dose: per-kg dosing needs a WT column in the population")
    rng = np.random.default_rng(seed)
    ind = draws.individual(population, level, rng)
    wt = population["WT"].to_numpy(float)[None, :] if regimen.per_kg else 1.0
    rows = []
    for d in doses:
        e = steady_state_exposure(d * wt, regimen, ind["CL"], ind["V"], ind.get("KA"))
        x = e[target.metric]
        row: dict[str, Any] = {"dose": d, "p_target": float(target.hit(x).mean())}
        q = np.quantile(x, [0.05, 0.5, 0.95])
        row.update({f"{target.metric}_q05": q[0], f"{target.metric}_median": q[1], f"{target.metric}_q95": q[2]})
        if safety is not None:
            s = e[safety.metric]
            row["p_exceed"] = float(safety.hit(s).mean())
            if safety.metric != target.metric:
                qs = np.quantile(s, [0.05, 0.5, 0.95])
                row.update({f"{safety.metric}_q05": qs[0], f"{safety.metric}_median": qs[1],
                            f"{safety.metric}_q95": qs[2]})
        if response is not None:
            row["expected_response"] = float(response(e[response.metric]).mean())
        rows.append(row)
    table = pd.DataFrame(rows)
    if callable(criterion):
        table["score"] = [float(criterion(r)) for _, r in table.iterrows()]
        table["eligible"] = True
    elif criterion == "utility":
        table["score"] = table.p_target - penalty * table.get("p_exceed", 0.0)
        table["eligible"] = True
    else:
        table["score"] = table.p_target if criterion == "target_with_safety" else table.expected_response
        table["eligible"] = table.p_exceed <= max_risk
    cand = table[table.eligible]
    best = None
    if len(cand):
        top = cand.score.max()
        best = float(cand[np.isclose(cand.score, top, rtol=0, atol=1e-12)].dose.min())
    table["best"] = table.dose == best
    return DoseTable(table=table, best_dose=best, criterion=crit_name, target=target, safety=safety,
                     label=label or draws.label)
