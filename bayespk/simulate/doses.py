"""Dose selection from a fit: target attainment, safety and outcome probabilities per candidate dose.

:func:`dose_table` is the one dose table of bayespk. For each candidate dose
(and band of a covariate, e.g. weight bands) it gives, with central credible
intervals over posterior draws:

* ``p_target``: the probability that a new patient attains the exposure
  target (:class:`~bayespk.simulate.exposure.Target`, e.g. ``"AUC_ss>=60"``);
* ``p_exceed``: the probability that a new patient's exposure falls in the
  unsafe region (``safety``, e.g. ``"Cmax_ss>=30"``);
* for fitted exposure-response models (``outcomes``), the probability of each
  outcome (response, adverse event grade >= k, survival at t), through
  :func:`bayespk.response.doses.outcome_probabilities`;

and the dose chosen in each band by a stated rule (``DoseTable.rule`` says it
in words).

How the exposures are simulated
-------------------------------
*PK models* (built-in closed-form structures and models written as
equations, ODE or algebraic): the regimen template is copied with each
candidate dose (``Regimen(..., per="WT")`` for mg/kg) and all of them are
simulated by :func:`~bayespk.simulate.simulation.simulate_regimens` in one call:
``n_draws`` posterior draws, each with new etas for every virtual patient;
the same patients, etas and draws under every dose (common random numbers, so
the curves over dose are smooth and monotone where exposure is). Exposure
metrics and target attainment come from :mod:`bayespk.simulate.exposure`.

When only steady-state concentrations and AUCs are used and the model is
known to be linear in the dose (the built-in structures), the unit dose is
simulated once and scaled by each candidate (``scale_ss``), exactly as
``simulate_regimens`` computes them for such structures. A model written as
equations is not known to be linear (Michaelis-Menten elimination, target
binding, a response model: exposure need not be proportional to the dose),
so for it this shortcut is turned off whatever ``scale_ss`` says and every
candidate dose is simulated, its steady state included
(``DoseTable.info["scaled_from_unit_dose"]`` is False and
``info["scale_ss_off"]`` says why).

*CAR-T (cellular-kinetics) fits* do not take dosing records: the infused cell
dose does not drive the kinetics. They are routed through
:func:`bayespk.evaluate.cellkinetics.virtual_exposures` behind the same
interface (closed-form CK structures ``cart_piecewise``, ``cart_lag``): virtual
patients with new etas per posterior draw, metrics ``Cmax`` and ``AUC``
(= AUC0-28, days 0 to 28). The candidate dose enters only through a covariate
of the model on the column ``dose_column`` (default ``DOSE``); when the model
has none, the exposures do not depend on the dose and the table says so
(``DoseTable.info["dose_effect"]`` is False). Bands (``by``) are then values
of a covariate (``bins`` a list of values: every virtual patient of a band has
that value), not bins of a resampled population.

Probabilities
-------------
Per posterior draw, the fraction of the band's virtual patients meeting the
condition; ``p_*`` is the fraction pooled over draws and patients (the
predictive probability for a new patient of the band: parameter uncertainty
and between-patient variability), ``p_*_lower``/``p_*_upper`` the central
``ci`` interval of the per-draw fractions (parameter uncertainty only).
Outcome probabilities are averaged over the band's patients per draw; their
mean and interval are over draws.

Criteria (``criterion``)
------------------------
* ``"target_with_safety"`` (default): the highest ``p_target`` among doses with
  ``p_exceed <= max_risk`` (and P(adverse) <= ``max_risk`` when ``adverse``
  names an outcome); ties: the lowest dose.
* ``"utility"``: the highest ``p_target - penalty * p_exceed`` (minus
  ``penalty * P(adverse)`` with ``adverse``).
* ``"response_with_safety"``: the highest P(response) (the ``response``
  outcome) among doses with ``p_exceed <= max_risk`` and/or P(adverse) <=
  ``max_risk``.
* a callable taking a table row (a Series) and returning a score (higher is
  better; every dose eligible).
* ``None``: no dose is chosen (a table only).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from bayespk.errors import BayesPKError, SpecError
from bayespk.simulate.exposure import Target, _check_ci, _groups, exposure_summary, target_attainment

__all__ = ["CK_METRICS", "CRITERIA", "DoseTable", "dose_table"]

CRITERIA = ("target_with_safety", "utility", "response_with_safety")
CK_METRICS = {"Cmax": "Cmax", "AUC": "AUC0_28"}  # metric of the table -> virtual_exposures metric


@dataclass
class DoseTable:
    """Per candidate dose and band: P(target), P(exceed), outcome probabilities, score; the chosen doses.

    Attributes
    ----------
    table : DataFrame
        One row per dose and band: ``dose, by, stratum, n_subjects``;
        ``p_target, p_target_lower, p_target_upper`` (with a target);
        ``p_exceed, p_exceed_lower, p_exceed_upper`` (with a safety limit);
        ``<metric>_median, <metric>_lower, <metric>_upper`` (the exposure
        metrics of the target, safety limit and outcomes: median and central
        ``ci`` prediction interval over patients and draws); per outcome
        ``<label>, <label>_lower, <label>_upper`` (mean and interval over
        draws); ``score, eligible, best``. The rows with ``stratum == "all"``
        are the whole virtual population.
    outcomes : DataFrame
        The outcome probabilities in long form: ``dose, by, stratum, outcome,
        mean, lower, median, upper, n_draws, n_virtual``.
    chosen : DataFrame
        One row per band: ``by, stratum, dose`` (NaN: no dose qualifies), ``score``.
    rule : str
        The criterion in words.
    """

    table: pd.DataFrame
    outcomes: pd.DataFrame
    chosen: pd.DataFrame
    rule: str
    criterion: str | None
    target: Target | None
    safety: Target | None
    max_risk: float
    label: str = ""
    simulation: Any = None
    info: dict = field(default_factory=dict)

    @property
    def best_dose(self) -> float | None:
        """The dose chosen for the whole virtual population (None when no dose qualifies or no criterion)."""
        return self.dose_for("all")

    def dose_for(self, stratum: str) -> float | None:
        """The dose chosen for one band (a ``stratum`` label of ``chosen``)."""
        row = self.chosen[self.chosen.stratum == str(stratum)]
        if row.empty:
            raise SpecError(f"stratum {stratum!r}: not in this table; strata are {', '.join(self.chosen.stratum)}")
        d = row.dose.iloc[0]
        return None if pd.isna(d) else float(d)

    def plot(self, **kwargs):
        """See :func:`bayespk.simulate.plots.plot_dose_table`."""
        from bayespk.simulate.plots import plot_dose_table

        return plot_dose_table(self, **kwargs)

    def __repr__(self) -> str:
        parts = []
        for _, r in self.chosen.iterrows():
            where = "all" if r.stratum == "all" else f"{r.by} {r.stratum}"
            parts.append(f"{where}: {'none qualifies' if pd.isna(r.dose) else format(r.dose, 'g')}")
        n_doses = self.table.dose.nunique()
        return (f"DoseTable({self.label or 'doses'}: {n_doses} doses; {self.rule}; chosen "
                f"{'; '.join(parts) if self.criterion else '-'})")


# ---------------------------------------------------------------------- input checks
def _doses(doses) -> np.ndarray:
    try:
        arr = np.atleast_1d(np.asarray(doses, dtype=float))
    except (TypeError, ValueError):
        raise SpecError(f"doses: expected numbers, got {doses!r}") from None
    if arr.ndim != 1 or arr.size == 0:
        raise SpecError("doses: give at least one candidate dose")
    bad = ~np.isfinite(arr) | (arr <= 0)
    if bad.any():
        raise SpecError(f"doses: every dose must be a finite number > 0, got {arr[bad][0]:g}")
    u, counts = np.unique(arr, return_counts=True)
    if (counts > 1).any():
        raise SpecError(f"doses: dose {u[counts > 1][0]:g} is given twice")
    return np.sort(arr)


def _target(t, key: str) -> Target | None:
    if t is None:
        return None
    if not isinstance(t, (str, Target)):
        raise SpecError(f"{key}: expected a Target or text like 'AUC_ss>=60', got {type(t).__name__}")
    try:
        return Target.parse(t)
    except SpecError as e:
        raise SpecError(f"{key}: {e}") from None


def _label_of(outcomes: Mapping, name: str, value) -> str | None:
    if value is None:
        return None
    if value not in outcomes:
        raise SpecError(f"{name}={value!r}: not among the outcomes ({', '.join(map(repr, outcomes)) or 'none'})")
    return str(value)


def _check_criterion(criterion, target, safety, outcomes, response, adverse) -> None:
    if criterion is None or callable(criterion):
        return
    if criterion not in CRITERIA:
        raise SpecError(f"criterion {criterion!r}: expected one of {', '.join(CRITERIA)}, a callable or None")
    if criterion in ("target_with_safety", "utility") and target is None:
        raise SpecError(f"criterion {criterion!r} needs a target (target='AUC_ss>=60', say)")
    if criterion == "target_with_safety" and safety is None and adverse is None:
        raise SpecError("criterion 'target_with_safety' needs a safety limit (safety='Cmax_ss>=30', say) or an "
                        "adverse-event outcome (adverse=label)")
    if criterion == "response_with_safety":
        if response is None:
            raise SpecError("criterion 'response_with_safety' needs an exposure-response model: outcomes={label: "
                            "fit} (response=label picks one; default the first)")
        if safety is None and adverse is None:
            raise SpecError("criterion 'response_with_safety' needs a safety limit (safety=...) or an "
                            "adverse-event outcome (adverse=label)")


def _rule(criterion, target, safety, max_risk, penalty, response, adverse) -> str:
    if criterion is None:
        return "no dose chosen (criterion=None)"
    if callable(criterion):
        name = getattr(criterion, "__name__", "of the callable")
        return f"the dose with the highest score {name} (ties: lowest dose)"
    limits = []
    if safety is not None:
        limits.append(f"P({safety.label}) <= {max_risk:g}")
    if adverse is not None:
        limits.append(f"{_p(adverse)} <= {max_risk:g}")
    among = f" among doses with {' and '.join(limits)}" if limits else ""
    if criterion == "target_with_safety":
        return f"the dose with the highest P({target.label}){among} (ties: lowest dose)"
    if criterion == "utility":
        pen = "".join(f" - {penalty:g} {_p(x)}" for x in ([f"P({safety.label})"] if safety else [])
                      + ([adverse] if adverse else []))
        return f"the dose with the highest P({target.label}){pen} (ties: lowest dose)"
    return f"the dose with the highest {_p(response)}{among} (ties: lowest dose)"


def _p(label: str) -> str:
    """An outcome label as a probability in words: ``"P(CRS>=3)"`` stays, ``"response"`` -> ``"P(response)"``."""
    return label if label.startswith("P(") else f"P({label})"


# ---------------------------------------------------------------------- simulations
LINEAR_SS = ("AUC_ss", "Cmax_ss", "Cmin_ss", "Ctrough_ss")  # proportional to the dose under linear kinetics


def _pk_simulation(fit, doses, regimen, metrics, *, population, n_subjects, covariates, n_draws, seed, simulate,
                   scale_ss):
    from bayespk.simulate.regimen import Regimen
    from bayespk.simulate.result import RegimenSimulation
    from bayespk.simulate.simulation import simulate_regimens

    if regimen is None:
        raise SpecError("regimen: give the regimen template whose dose is replaced by each candidate, e.g. "
                        "Regimen('q12', dose=1, ii=12, n=10, per='WT') or '1q12x10,per=WT'")
    template = Regimen.parse(regimen) if isinstance(regimen, str) else regimen
    if not isinstance(template, Regimen):
        raise SpecError(f"regimen: expected a Regimen or regimen text, got {type(regimen).__name__}")
    kw = dict(simulate or {})
    bad = set(kw) & {"population", "n_subjects", "covariates", "n_draws", "seed", "regimens"}
    if bad:
        raise SpecError(f"simulate: {sorted(bad)[0]!r} is an argument of dose_table itself; give it there")
    kw.setdefault("progress", False)
    kw.setdefault("keep_concentrations", False)
    if population == "virtual":
        kw.update(n_subjects=n_subjects, covariates=covariates)
    elif covariates is not None:
        raise SpecError("covariates describe a virtual population; use population='virtual'")
    linear = _known_linear(fit)
    scaled = bool(scale_ss) and all(m in LINEAR_SS for m in metrics) and linear
    if scaled:  # one unit-dose regimen; its steady state scaled by each dose, as simulate_regimens does itself
        unit = dataclasses.replace(template, dose=1.0, label="unit")
        sim = simulate_regimens(fit, [unit], population=population, n_draws=n_draws, seed=seed, **kw)
        values = {f"{d:g}": {m: d * sim.values("unit", m) for m in metrics} for d in doses}
        out = RegimenSimulation.from_arrays(values, subjects=sim.subjects,
                                            regimens=[dataclasses.replace(template, dose=float(d), label=f"{d:g}")
                                                      for d in doses])
        out.info = {**sim.info, "scaled_from_unit_dose": True}
        return out, {"route": "simulate_regimens", "regimen": template, "scaled_from_unit_dose": True}
    regs = [dataclasses.replace(template, dose=float(d), label=f"{d:g}") for d in doses]
    sim = simulate_regimens(fit, regs, population=population, n_draws=n_draws, seed=seed, **kw)
    info = {"route": "simulate_regimens", "regimen": template, "scaled_from_unit_dose": False}
    if scale_ss and not linear:
        info["scale_ss_off"] = ("the model is written as equations, so not known to be linear in the dose: every "
                                "candidate dose simulated")
    return sim, info


def _known_linear(fit) -> bool:
    """Whether exposure is known to be proportional to the dose: the built-in closed-form PK structures
    (linear kinetics). A model written as equations (ODE or algebraic) is not known to be."""
    return getattr(getattr(fit, "model", None), "user", None) is None


def _ck_simulation(fit, doses, *, n_subjects, covariates, by, bins, n_draws, seed, dose_column):
    from bayespk.evaluate.cellkinetics import virtual_exposures
    from bayespk.simulate.result import RegimenSimulation

    if covariates is not None and not isinstance(covariates, Mapping):
        raise SpecError("covariates: for a CAR-T fit, a dict {column: value} of covariates fixed in every virtual "
                        "patient (the others are resampled from the fitted patients)")
    covs = {str(k).upper(): v for k, v in (covariates or {}).items()}
    columns = {c.column.upper() for c in fit.spec.covariates}
    dose_col = str(dose_column).upper() if dose_column else None
    dose_effect = dose_col in columns
    if by is None:
        bands = [(None, None)]
    else:
        col = str(by).upper()
        if col not in columns:
            raise SpecError(f"by={by!r}: for a CAR-T fit, bands are values of a model covariate "
                            f"({', '.join(sorted(columns)) or 'none'})")
        if not isinstance(bins, (list, tuple, np.ndarray)) or not 1 <= len(bins) <= 6:
            raise SpecError(f"bins: for a CAR-T fit, give 1 to 6 values of {col} that define the bands, e.g. "
                            "bins=[5, 20, 80]")
        bands = [(col, float(v)) for v in bins]
    values: dict[str, dict[str, list]] = {f"{d:g}": {"AUC": [], "Cmax": []} for d in doses}
    band_col = []
    for col, v in bands:
        over = dict(covs)
        if col is not None:
            over[col] = v
        for d in doses:
            if dose_effect:
                over[dose_col] = float(d)
            for name, ck in CK_METRICS.items():
                try:
                    x = virtual_exposures(fit, over or None, n=int(n_subjects), metric=ck, draws=n_draws, seed=seed)
                except BayesPKError as e:
                    raise SpecError(f"dose_table (CAR-T): {e}") from None
                values[f"{d:g}"][name].append(np.asarray(x, float).T)  # (patients, draws)
        band_col.append(np.full(int(n_subjects), np.nan if v is None else v))
    arrays = {lb: {m: np.concatenate(parts, axis=0) for m, parts in ms.items()} for lb, ms in values.items()}
    subjects = pd.DataFrame({"source_id": np.nan}, index=range(len(bands) * int(n_subjects)))
    if by is not None:
        subjects[bands[0][0]] = np.concatenate(band_col)
    sim = RegimenSimulation.from_arrays(arrays, subjects=subjects)
    sim.info.update(population="virtual", n_subjects=sim.n_subjects, n_draws=sim.n_draws, seed=seed,
                    route="virtual_exposures")
    return sim, {"route": "virtual_exposures", "dose_effect": dose_effect, "dose_column": dose_col,
                 "bins": [v for _, v in bands] if by is not None else None}


# ---------------------------------------------------------------------- the table
def dose_table(
    fit,
    doses,
    regimen=None,
    target=None,
    *,
    safety=None,
    population: str = "virtual",
    n_subjects: int | None = 200,
    covariates=None,
    by: str | None = None,
    bins=4,
    outcomes: Mapping | None = None,
    outcome_metric: str | None = None,
    outcome_covariates: Mapping | None = None,
    response: str | None = None,
    adverse: str | None = None,
    criterion: str | Callable[[pd.Series], float] | None = "target_with_safety",
    max_risk: float = 0.1,
    penalty: float = 1.0,
    n_draws: int = 200,
    ci: float = 0.9,
    seed: int = 0,
    label: str = "",
    simulate: Mapping | None = None,
    scale_ss: bool = True,
    dose_column: str = "DOSE",
) -> DoseTable:
    """Probability of target attainment, of exceeding a safety limit and of outcomes, per candidate dose.

    Parameters
    ----------
    fit : Fit
        A fitted PK model (built-in structure or a model written as equations) or a CAR-T fit (see the
        module notes).
    doses : array-like
        Candidate doses (> 0): the maintenance dose of the regimen (per unit of
        ``regimen.per``, e.g. mg/kg with ``per="WT"``). CAR-T: the cell dose.
    regimen : Regimen or text
        The regimen template; its ``dose`` and ``label`` are replaced by each
        candidate. Not used for CAR-T fits.
    target : Target or text, optional
        The exposure target, e.g. ``"AUC_ss>=60"`` or ``"Cmin_ss in [5, 20]"``
        (metrics of :data:`~bayespk.simulate.exposure.METRICS`; CAR-T: ``Cmax``, ``AUC``).
    safety : Target or text, optional
        The unsafe region, e.g. ``"Cmax_ss>=30"``: ``p_exceed`` is the
        probability of falling in it.
    population : {"virtual", "fitted"}
        Virtual patients (``n_subjects``, ``covariates``), or the fitted subjects' covariates.
    n_subjects : int
        Virtual patients (per band for CAR-T).
    covariates : dict or DataFrame, optional
        Covariates of the virtual population (see
        :func:`~bayespk.simulate.population.virtual_subjects`), e.g.
        ``{"WT": ("uniform", 13, 30)}`` or a table of covariate rows. CAR-T:
        ``{column: value}`` fixed in every virtual patient.
    by, bins
        Bands with their own chosen dose: a covariate column, and ``bins``
        (int: equal-count bins, or a list of edges; see
        :func:`~bayespk.simulate.exposure.strata`). CAR-T: ``bins`` lists
        covariate values, one band each.
    outcomes : mapping, optional
        Label -> fitted exposure-response model, as in
        :func:`~bayespk.response.doses.outcome_probabilities`: a binary
        ``ResponseFit``, ``(ordinal_fit, k)`` for P(grade >= k), ``(tte_fit, t)``
        for S(t).
    outcome_metric : str, optional
        The simulated metric the E-R models take as exposure (default the
        target's metric), in the units the models were fitted in.
    outcome_covariates : mapping, optional
        Values of the E-R models' covariates: ``{name: scalar, array over the
        virtual patients, or callable(subjects DataFrame) -> array}``; a
        covariate not given is read from the subjects' column of that name.
    response, adverse : str, optional
        Outcome labels used by the criteria: ``response`` (default the first
        outcome) for ``"response_with_safety"``; ``adverse`` is held to
        ``max_risk`` (or penalised in ``"utility"``).
    criterion : str, callable or None
        See the module notes.
    max_risk : float
        Largest acceptable P(exceed) (and P(adverse)), in [0, 1].
    penalty : float
        Weight of P(exceed) in ``"utility"``.
    n_draws : int
        Posterior draws simulated.
    ci : float
        Central credible interval.
    seed : int
    label : str
        Name of the table (e.g. the prior used) in plots and side-by-side comparisons.
    simulate : mapping, optional
        More keywords for :func:`~bayespk.simulate.simulation.simulate_regimens`
        (e.g. ``threshold`` for T_above targets, ``resolution``, ``ss_method``).
    scale_ss : bool
        When every metric used is a steady-state concentration or AUC
        (``AUC_ss, Cmax_ss, Cmin_ss, Ctrough_ss``), simulate the unit dose once
        and scale it by each candidate (exact under linear kinetics, which
        ``simulate_regimens`` assumes for the steady state of the built-in
        structures too; one simulation instead of one per dose). Only used for
        models known to be linear (the built-in structures): for a model
        written as equations every dose is simulated regardless (see the
        module notes). False: simulate every dose.
    dose_column : str
        CAR-T only: the covariate column through which the cell dose acts.

    Returns
    -------
    DoseTable

    Examples
    --------
    >>> from bayespk.simulate import Regimen, dose_table
    >>> tab = dose_table(fit, [2, 4, 8, 16], Regimen("q12", dose=1, ii=12, n=10, per="WT"),
    ...                  "AUC_ss>=60", safety="AUC_ss>=180", covariates={"WT": ("uniform", 13, 30)},
    ...                  by="WT", bins=[13, 20, 30])                         # doctest: +SKIP
    >>> tab.best_dose, tab.chosen, tab.rule                                  # doctest: +SKIP
    """
    doses = _doses(doses)
    if isinstance(max_risk, bool) or not isinstance(max_risk, (int, float, np.number)) or not 0 <= max_risk <= 1:
        raise SpecError(f"max_risk must lie in [0, 1], got {max_risk!r}")
    if isinstance(penalty, bool) or not isinstance(penalty, (int, float, np.number)) or not np.isfinite(penalty):
        raise SpecError(f"penalty must be a number, got {penalty!r}")
    _check_ci(ci)
    if population not in ("virtual", "fitted"):
        raise SpecError(f"population={population!r}: expected 'virtual' or 'fitted'")
    target, safety = _target(target, "target"), _target(safety, "safety")
    models = {}
    if outcomes is not None:
        from bayespk.response.doses import resolve_outcomes

        models = resolve_outcomes(outcomes)
    response = _label_of(models, "response", response)
    if response is None and models:
        response = next(iter(models))
    adverse = _label_of(models, "adverse", adverse)
    _check_criterion(criterion, target, safety, models, response, adverse)
    if target is None and safety is None and not models:
        raise SpecError("dose_table needs a target, a safety limit or outcomes to tabulate")
    if models and outcome_metric is None and target is None:
        raise SpecError("outcome_metric: give the simulated metric the exposure-response models take "
                        "(there is no target whose metric could be used)")
    o_metric = _target_metric(outcome_metric or (target.metric if target else None))
    metrics = list(dict.fromkeys([t.metric for t in (target, safety) if t is not None]
                                 + ([o_metric] if models else [])))
    ck = bool(getattr(getattr(fit, "model", None), "cell_kinetics", False))
    if ck:
        for key, t in (("target", target), ("safety", safety)):
            if t is not None and t.metric not in CK_METRICS:
                raise SpecError(f"{key}: metric {t.metric} is not available for a CAR-T fit (metrics: "
                                f"{', '.join(CK_METRICS)})")
        if models and o_metric not in CK_METRICS:
            raise SpecError(f"outcome_metric: {o_metric} is not available for a CAR-T fit (metrics: "
                            f"{', '.join(CK_METRICS)})")
        if population != "virtual":
            raise SpecError("population: a CAR-T dose table uses virtual patients (population='virtual')")
        sim, info = _ck_simulation(fit, doses, n_subjects=n_subjects or 200, covariates=covariates, by=by,
                                   bins=bins, n_draws=n_draws, seed=seed, dose_column=dose_column)
        # CAR-T bands are levels (every patient of a band has the value): strata() keeps up to 6 levels as such
        by_, bins_ = (str(by).upper() if by is not None else None), 6
    else:
        sim, info = _pk_simulation(fit, doses, regimen, metrics, population=population, n_subjects=n_subjects,
                                   covariates=covariates, n_draws=n_draws, seed=seed, simulate=simulate,
                                   scale_ss=scale_ss)
        by_, bins_ = by, bins
    for key, t in (("target", target), ("safety", safety)):
        if t is not None:
            try:
                sim.check_metric(t.metric)
            except SpecError as e:
                raise SpecError(f"{key}: {e}") from None
    labels = [f"{d:g}" for d in doses]
    groups = _groups(sim, by_, bins_)
    rows = {(lb, st): {"dose": d, "by": col, "stratum": st, "n_subjects": int(mask.sum())}
            for d, lb in zip(doses, labels) for col, st, mask in groups}
    for key, t in (("p_target", target), ("p_exceed", safety)):
        if t is None:
            continue
        att = target_attainment(sim, t, by=by_, bins=bins_, ci=ci)
        for _, r in att.iterrows():
            rows[r.regimen, r.stratum].update({key: r.probability, f"{key}_lower": r.lower,
                                               f"{key}_upper": r.upper})
    summ = exposure_summary(sim, metrics, by=by_, bins=bins_, ci=ci)
    for _, r in summ.iterrows():
        rows[r.regimen, r.stratum].update({f"{r.metric}_median": r["median"], f"{r.metric}_lower": r.pi_lower,
                                           f"{r.metric}_upper": r.pi_upper})
    long = []
    if models:
        from bayespk.response.doses import outcome_probabilities

        for d, lb in zip(doses, labels):
            x = sim.values(lb, o_metric)  # (subjects, draws)
            for col, st, mask in groups:
                covs = _er_covariates(models, outcome_covariates, sim.subjects, mask)
                where = f"dose {d:g}" + ("" if st == "all" else f", {col} {st}")
                out = outcome_probabilities(outcomes, x[mask].T, covs, ci=ci, seed=seed, where=where)
                for _, o in out.iterrows():
                    rows[lb, st].update({o.outcome: o["mean"], f"{o.outcome}_lower": o.lower,
                                         f"{o.outcome}_upper": o.upper})
                long.append(out.assign(dose=d, by=col, stratum=st))
    table = pd.DataFrame(list(rows.values()))
    table = _score(table, criterion, max_risk, penalty, response, adverse)
    chosen = _choose(table, criterion)
    table["best"] = [not pd.isna(c) and d == c for d, c in
                     zip(table.dose, table.stratum.map(dict(zip(chosen.stratum, chosen.dose))))]
    out_cols = ["dose", "by", "stratum", "outcome", "mean", "lower", "median", "upper", "n_draws", "n_virtual"]
    outcomes_long = pd.concat(long, ignore_index=True)[out_cols] if long else pd.DataFrame(columns=out_cols)
    rule = _rule(criterion, target, safety, max_risk, penalty, response, adverse)
    if ck and not info["dose_effect"]:
        rule += (f"; the CAR-T model has no covariate on {info['dose_column']}, so exposures (and every "
                 "probability) do not depend on the dose")
    crit_name = None if criterion is None else criterion if isinstance(criterion, str) else getattr(
        criterion, "__name__", "custom")
    info.update(n_draws=sim.n_draws, n_subjects=sim.n_subjects, ci=ci, seed=seed, outcome_metric=o_metric,
                response=response, adverse=adverse, penalty=penalty, by=by_)
    return DoseTable(table=table, outcomes=outcomes_long, chosen=chosen, rule=rule, criterion=crit_name,
                     target=target, safety=safety, max_risk=float(max_risk),
                     label=str(label), simulation=sim,
                     info=info)


def _target_metric(name):
    if name is None:
        return None
    from bayespk.simulate.exposure import metric_name

    return metric_name(name, "outcome_metric")


def _er_covariates(models, given, subjects: pd.DataFrame, mask) -> dict:
    needs = list(dict.fromkeys(c for fit, _ in models.values() for c in fit.covariates))
    given = dict(given or {})
    out = {}
    cols = {str(c).upper(): c for c in subjects.columns}
    for c in needs:
        if c in given:
            v = given[c]
            v = v(subjects) if callable(v) else v
            arr = np.asarray(v, float)
            if arr.ndim == 0:
                out[c] = float(arr)
                continue
            if arr.shape != (len(subjects),):
                raise SpecError(f"outcome_covariates[{c!r}]: expected a number or {len(subjects)} values (one per "
                                f"virtual patient), got shape {arr.shape}")
            out[c] = arr[mask]
        elif c.upper() in cols:
            out[c] = pd.to_numeric(subjects[cols[c.upper()]], errors="coerce").to_numpy(float)[mask]
        else:
            raise SpecError(f"outcome_covariates: the exposure-response model needs covariate {c!r}; give "
                            f"outcome_covariates={{{c!r}: value or callable(subjects)}} (subject columns: "
                            f"{', '.join(c for c in subjects.columns if c != 'source_id') or 'none'})")
    return out


def _score(table: pd.DataFrame, criterion, max_risk, penalty, response, adverse) -> pd.DataFrame:
    table = table.copy()
    if criterion is None:
        table["score"] = np.nan
        table["eligible"] = False
        return table
    if callable(criterion):
        table["score"] = [float(criterion(r)) for _, r in table.iterrows()]
        table["eligible"] = True
        return table
    zero = pd.Series(0.0, index=table.index)
    p_exceed = table["p_exceed"] if "p_exceed" in table else zero
    p_adverse = table[adverse] if adverse else zero
    if criterion == "utility":
        table["score"] = table.p_target - penalty * p_exceed - penalty * p_adverse
        table["eligible"] = True
        return table
    table["score"] = table.p_target if criterion == "target_with_safety" else table[response]
    table["eligible"] = (p_exceed <= max_risk) & (p_adverse <= max_risk)
    return table


def _choose(table: pd.DataFrame, criterion) -> pd.DataFrame:
    rows = []
    for (col, st), g in table.groupby(["by", "stratum"], sort=False):
        cand = g[g.eligible & g.score.notna()] if criterion is not None else g.iloc[:0]
        if len(cand):
            top = cand.score.max()
            best = cand[np.isclose(cand.score, top, rtol=0, atol=1e-12)]
            rows.append({"by": col, "stratum": st, "dose": float(best.dose.min()), "score": float(top)})
        else:
            rows.append({"by": col, "stratum": st, "dose": np.nan, "score": np.nan})
    return pd.DataFrame(rows, columns=["by", "stratum", "dose", "score"])
