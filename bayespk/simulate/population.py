"""Populations to simulate: the fitted subjects, virtual ones from covariate distributions, and children.

:func:`fitted_subjects` and :func:`virtual_subjects` give the covariate rows
:func:`~bayespk.simulate.simulation.simulate_regimens` simulates.
:func:`pediatric_population` draws children: age uniform in a range,
postmenstrual age (PMA) from postnatal age and gestational age at birth, sex,
and body weight for age and sex by the LMS method (Cole 1990, Eur J Clin Nutr
44:45) from the CDC 2000 growth charts (Kuczmarski et al. 2002, Vital Health
Stat 11(246); the tables are in ``bayespk/simulate/growth``), or from a
weight-for-age table the user gives.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import pandas as pd

from bayespk.errors import SpecError

__all__ = ["fitted_subjects", "growth_reference", "lms_quantile", "pediatric_population", "virtual_subjects"]

DISTRIBUTIONS = ("normal", "lognormal", "uniform", "bernoulli", "categorical", "resample")


def _num(v, where: str, *, positive=False, nonneg=False) -> float:
    try:
        x = float(v)
    except (TypeError, ValueError):
        raise SpecError(f"{where}={v!r} is not a number") from None
    if not math.isfinite(x) or (positive and x <= 0) or (nonneg and x < 0):
        raise SpecError(f"{where}={v!r} must be {'> 0' if positive else '>= 0' if nonneg else 'finite'}")
    return x


# ---------------------------------------------------------------------- fitted and virtual subjects
def fitted_subjects(data) -> pd.DataFrame:
    """One row per fitted subject: ``source_id`` and the first value of every covariate column.

    A covariate that changes within a subject enters simulations at its first (baseline) value.
    """
    t = data.table
    cols = [c for c in data.covariates if c in t.columns]
    first = t.groupby("ID", sort=False)[cols].first() if cols else pd.DataFrame(index=pd.unique(t.ID))
    first = first.reindex(pd.unique(t.ID))
    return first.rename_axis("source_id").reset_index()


def _effects(spec) -> dict[str, list]:
    out: dict[str, list] = {}
    for c in spec.covariates:
        out.setdefault(c.column.upper(), []).append(c)
    return out


def virtual_subjects(base: pd.DataFrame, n: int | None, covariates, rng: np.random.Generator,
                     effects: Mapping[str, list] | None = None) -> pd.DataFrame:
    """Covariates of a virtual population.

    Parameters
    ----------
    base : DataFrame
        The fitted subjects (:func:`fitted_subjects`), resampled from.
    n : int or None
        Number of virtual subjects (None: the rows of a ``covariates`` DataFrame).
    covariates : None, dict or DataFrame
        None: whole covariate rows of fitted subjects, drawn with replacement
        (keeps the correlation between covariates). A DataFrame: the covariate
        rows to use (all of them, or ``n`` drawn with replacement). A dict
        ``{column: specification}``: the columns given are drawn as specified,
        the others resampled as rows from the fitted subjects. A specification
        is a constant (``3.5``, ``"male"``), a list of ``n`` values, or
        a tuple/list starting with a distribution name:

        ==================================  ====================================
        ``("normal", mean, sd)``            normal
        ``("lognormal", median, cv)``       log-normal; ``cv`` as a fraction
                                            (0.3 = 30%): sigma = sqrt(log(1 + cv^2))
        (either) ``..., lower, upper)``     truncated to [lower, upper] (None: open)
        ``("uniform", low, high)``          uniform
        ``("bernoulli", p)``                1 with probability p, else 0
        ``("categorical", {level: p})``     levels with probabilities (sum 1)
        ``("resample",)``                   the fitted subjects' values, drawn
                                            with replacement on their own
        ==================================  ====================================
    effects : dict, optional
        Covariate effects of the model by column: used to check values
        (numeric, > 0 for power effects, levels seen in the fit for categorical).

    Errors name the column.
    """
    effects = effects or {}
    base_cols = [c for c in base.columns if c != "source_id"]
    if isinstance(covariates, pd.DataFrame):
        df = covariates.copy()
        df.columns = [str(c).strip().upper() for c in df.columns]
        missing = [c for c in effects if c not in df.columns]
        if missing:
            raise SpecError(f"covariates: column {missing[0]} is missing from the covariate table; the model "
                            f"uses {', '.join(effects)}")
        if len(df) == 0:
            raise SpecError("covariates: the covariate table has no rows")
        if n is not None:
            df = df.iloc[rng.integers(0, len(df), n)]
        df = df.reset_index(drop=True)
        if "SOURCE_ID" in df.columns:
            df = df.rename(columns={"SOURCE_ID": "source_id"})
        if "source_id" not in df.columns:
            df.insert(0, "source_id", np.nan)
    else:
        if n is None:
            raise SpecError("a virtual population needs n_subjects (or a DataFrame of covariate rows)")
        if covariates is not None and not isinstance(covariates, Mapping):
            raise SpecError(f"covariates must be a dict of column -> specification or a DataFrame, "
                            f"got {type(covariates).__name__}")
        df = base.iloc[rng.integers(0, len(base), n)].reset_index(drop=True)
        for col, spec in (covariates or {}).items():
            col = str(col).strip().upper()
            if col not in effects and col not in base_cols:
                raise SpecError(f"covariates: column {col} is neither used by the model "
                                f"({', '.join(effects) or 'no covariates'}) nor in the fitted data "
                                f"({', '.join(base_cols) or 'no covariates'})")
            df[col] = _draw(col, spec, n, rng, base)
    for col, cs in effects.items():
        _check_column(col, df[col], cs, base)
    return df


def _draw(col: str, spec, n: int, rng: np.random.Generator, base: pd.DataFrame):
    where = f"covariates: column {col}"
    if isinstance(spec, (int, float, str, np.number)) and not isinstance(spec, bool):
        return np.full(n, spec, dtype=object if isinstance(spec, str) else float)
    if isinstance(spec, (pd.Series, np.ndarray)):
        spec = list(spec)
    if not isinstance(spec, (list, tuple)) or not spec:
        raise SpecError(f"{where}: expected a value, a list of {n} values or (distribution, parameters...), "
                        f"got {spec!r}")
    name = spec[0]
    if not (isinstance(name, str) and name.lower() in DISTRIBUTIONS):
        if isinstance(name, str) and len(spec) <= 6 and len(spec) != n:
            raise SpecError(f"{where}: unknown distribution {name!r}; expected one of {', '.join(DISTRIBUTIONS)}")
        if len(spec) != n:
            raise SpecError(f"{where}: {len(spec)} values given for {n} subjects")
        return np.asarray(spec)
    name, args = name.lower(), list(spec[1:])
    usage = {"normal": "('normal', mean, sd[, lower, upper])",
             "lognormal": "('lognormal', median, cv[, lower, upper])", "uniform": "('uniform', low, high)",
             "bernoulli": "('bernoulli', p)", "categorical": "('categorical', {level: p, ...})",
             "resample": "('resample',)"}[name]
    nargs = {"normal": (2, 4), "lognormal": (2, 4), "uniform": (2, 2), "bernoulli": (1, 1), "categorical": (1, 1),
             "resample": (0, 0)}[name]
    if not nargs[0] <= len(args) <= nargs[1] or len(args) == 3:
        raise SpecError(f"{where}: {name} takes {usage}, got {spec!r}")
    if name == "resample":
        if col not in base.columns:
            raise SpecError(f"{where}: 'resample' needs the column in the fitted data")
        return base[col].to_numpy()[rng.integers(0, len(base), n)]
    if name == "categorical":
        probs = args[0]
        if not isinstance(probs, Mapping) or not probs:
            raise SpecError(f"{where}: categorical takes {usage}")
        levels = [_level_value(k) for k in probs]
        p = np.array([_num(v, f"{where}: probability of level {k}", nonneg=True) for k, v in probs.items()])
        if abs(p.sum() - 1) > 1e-6:
            raise SpecError(f"{where}: categorical probabilities sum to {p.sum():g}, not 1")
        out = np.empty(n, dtype=object)
        out[:] = [levels[i] for i in rng.choice(len(levels), size=n, p=p / p.sum())]
        return out if any(isinstance(v, str) for v in levels) else out.astype(float)
    vals = [_num(a, f"{where}: {name} parameter") if a is not None else None for a in args]
    if name == "bernoulli":
        if not 0 <= vals[0] <= 1:
            raise SpecError(f"{where}: bernoulli probability must be in [0, 1], got {vals[0]:g}")
        return (rng.random(n) < vals[0]).astype(float)
    if name == "uniform":
        lo, hi = vals
        if not lo < hi:
            raise SpecError(f"{where}: uniform needs low < high, got {lo:g}, {hi:g}")
        return rng.uniform(lo, hi, n)
    center, spread = vals[0], vals[1]
    lower, upper = (vals[2], vals[3]) if len(vals) == 4 else (None, None)
    if spread is None or spread <= 0:
        raise SpecError(f"{where}: {name} needs a {'cv' if name == 'lognormal' else 'sd'} > 0, got {spread}")
    if lower is not None and upper is not None and lower >= upper:
        raise SpecError(f"{where}: lower bound {lower:g} is not below upper bound {upper:g}")
    if name == "lognormal":
        if center is None or center <= 0:
            raise SpecError(f"{where}: lognormal needs a median > 0, got {center}")
        if lower is not None and lower <= 0:
            lower = None
        mu, sigma = math.log(center), math.sqrt(math.log1p(spread**2))
        lo = -np.inf if lower is None else math.log(lower)
        hi = np.inf if upper is None else math.log(upper)
        return np.exp(_truncnorm(mu, sigma, lo, hi, n, rng, where))
    lo = -np.inf if lower is None else lower
    hi = np.inf if upper is None else upper
    return _truncnorm(center, spread, lo, hi, n, rng, where)


def _truncnorm(mu, sigma, lo, hi, n, rng, where):
    if not (np.isfinite(lo) or np.isfinite(hi)):
        return rng.normal(mu, sigma, n)
    from scipy.stats import truncnorm

    a, b = (lo - mu) / sigma, (hi - mu) / sigma
    if truncnorm.cdf(b, a, b) <= 0 or (truncnorm.sf(a, a, b) <= 0):  # pragma: no cover - defensive
        raise SpecError(f"{where}: the bounds leave no probability")
    return truncnorm.rvs(a, b, loc=mu, scale=sigma, size=n, random_state=rng)


def _level_value(k):
    if isinstance(k, str):
        try:
            return float(k)
        except ValueError:
            return k
    return float(k)


def _check_column(col: str, values: pd.Series, effects: list, base: pd.DataFrame) -> None:
    where = f"covariates: column {col}"
    if values.isna().any():
        raise SpecError(f"{where}: missing values (the model uses {col})")
    for c in effects:
        use = f"the {c.effect} effect of {col} on {c.parameter}"
        if c.effect == "categorical":
            seen = {_key(v) for v in base[col].dropna()} if col in base.columns else set()
            new = [v for v in values.unique() if _key(v) not in seen]
            if new:
                levels = ", ".join(_show(v) for v in sorted(seen, key=lambda v: (isinstance(v, str), v)))
                raise SpecError(f"{where}: level {_show(new[0])} does not occur in the fitted data, so {use} is "
                                f"unknown for it (levels: {levels})")
            continue
        x = pd.to_numeric(values, errors="coerce")
        if x.isna().any():
            raise SpecError(f"{where}: value {values[x.isna()].iloc[0]!r} is not a number; {use} needs numbers")
        if c.effect == "power" and (x <= 0).any():
            raise SpecError(f"{where}: value {x[x <= 0].iloc[0]:g} is not > 0; {use} needs positive values "
                            "(use a lognormal distribution or a lower bound > 0)")


def _show(v) -> str:
    k = _key(v)
    return repr(k) if isinstance(k, str) else f"{k:g}"


def _key(v):
    try:
        return float(v)
    except (TypeError, ValueError):
        return str(v)


# ---------------------------------------------------------------------- children
GROWTH_DIR = Path(__file__).with_name("growth")
#: Months per unit of age (a month as in the CDC tables: 30.4375 days).
AGE_UNITS = {"years": 12.0, "months": 1.0, "weeks": 7.0 / 30.4375, "days": 1.0 / 30.4375}
DAYS_PER_UNIT = {"years": 365.25, "months": 30.4375, "weeks": 7.0, "days": 1.0}
SEX_CODES = {"male": 1, "m": 1, "boy": 1, "1": 1, "female": 2, "f": 2, "girl": 2, "2": 2}
CDC_AGE_MONTHS = (0.0, 240.0)


@functools.lru_cache(maxsize=1)
def _cdc_weight_for_age() -> pd.DataFrame:
    infant = pd.read_csv(GROWTH_DIR / "cdc2000_wtageinf.csv")
    child = pd.read_csv(GROWTH_DIR / "cdc2000_wtage.csv")
    # the files overlap from 24 to 36 months with the same values; the 2-20 year file is used from 24 months
    both = pd.concat([infant[infant.Agemos < 24], child], ignore_index=True)
    both = both.rename(columns={"Sex": "SEX", "Agemos": "AGEMOS"})
    return both.sort_values(["SEX", "AGEMOS"], kind="stable").reset_index(drop=True)


def growth_reference() -> pd.DataFrame:
    """The CDC 2000 weight-for-age reference used by :func:`pediatric_population` (a copy).

    One row per sex (``SEX``: 1 male, 2 female) and age (``AGEMOS``, months,
    birth to 240): the LMS parameters ``L`` (Box-Cox power), ``M`` (median,
    kg) and ``S`` (coefficient of variation), and the published smoothed
    percentiles ``P3``...``P97`` (kg). From the CDC/NCHS data files
    ``wtageinf.csv`` (birth to 36 months; used below 24 months) and
    ``wtage.csv`` (24 to 240 months); Kuczmarski et al. 2002, Vital Health
    Stat 11(246). See ``bayespk/simulate/growth/README.md``.
    """
    return _cdc_weight_for_age().copy()


def lms_quantile(z, L, M, S) -> np.ndarray:
    """The value at standard normal deviate ``z`` of an LMS distribution (Cole 1990, Eur J Clin Nutr 44:45).

    ``M * (1 + L*S*z)**(1/L)``, and ``M * exp(S*z)`` where ``L`` is 0 (then the
    distribution is log-normal with median ``M`` and log-scale SD ``S``).
    """
    z, L, M, S = np.broadcast_arrays(*(np.asarray(a, float) for a in (z, L, M, S)))
    base = 1.0 + L * S * z
    small = np.abs(L) < 1e-8
    with np.errstate(invalid="ignore", divide="ignore"):
        out = np.where(small, M * np.exp(S * z), M * np.abs(base) ** (1.0 / np.where(small, 1.0, L)))
    return np.where(small | (base > 0), out, np.nan)


def pediatric_population(n: int, age=(0.0, 18.0), *, unit: str = "years", seed: int = 0, sex=None,
                         ga=40.0, weight_for_age: pd.DataFrame | None = None, z_limit: float | None = 3.0
                         ) -> pd.DataFrame:
    """Covariates of virtual children: age, postmenstrual age, sex and body weight drawn jointly.

    Age is uniform in ``age``; weight given age and sex is drawn by the LMS
    method: ``WT = M(a) * (1 + L(a) S(a) z)**(1/L(a))`` with ``z`` standard
    normal (Cole 1990, Eur J Clin Nutr 44:45), where ``L`` (skewness), ``M``
    (median) and ``S`` (coefficient of variation) are interpolated linearly in
    age between the rows of the reference. The default reference is the CDC
    2000 weight-for-age charts (:func:`growth_reference`; birth to 20 years,
    US children born at term). Each child's weight is at the same percentile
    of the reference as its ``z``, so the skewness of weight for age is the
    reference's.

    Parameters
    ----------
    n : int
        Number of children (>= 1).
    age : (low, high)
        Range of postnatal age in ``unit`` (low may equal high: one age).
    unit : {"years", "months", "weeks", "days"}
        Unit of ``age`` and of the ``AGE`` column (a month is 30.4375 days, as in the CDC tables).
    seed : int
    sex : None, "male", "female", 1, 2 or a float
        None: male or female with probability 1/2 each; a float: the probability
        of female.
    ga : float or array of n floats
        Gestational age at birth in weeks (default 40, term): ``PMA = ga +
        postnatal age in weeks``. The CDC charts describe term-born children;
        give ``weight_for_age`` for preterm infants.
    weight_for_age : DataFrame, optional
        Another reference instead of the CDC charts: columns ``AGE`` (in
        ``unit``) and either ``MEDIAN`` and ``CV`` (weight log-normal around
        the median, ``sigma = sqrt(log(1 + CV**2))``) or ``L``, ``M``, ``S``;
        optionally ``SEX`` (1 or "male", 2 or "female") for one curve per sex.
        Ages outside the table are refused, not extrapolated.
    z_limit : float or None
        ``z`` is drawn truncated to [-z_limit, z_limit] (default 3: no child
        beyond the 0.13th/99.87th percentile of the reference, where the LMS
        curves are extrapolations of the data); None: not truncated.

    Returns
    -------
    DataFrame
        Columns ``AGE`` (in ``unit``), ``PMA`` (weeks), ``SEX`` (1 male, 2
        female), ``WT`` (kg), ``WT_Z`` (the standard normal deviate drawn);
        ``attrs`` say the unit and the reference.

    Examples
    --------
    >>> kids = pediatric_population(500, age=(2, 6), seed=1)
    >>> list(kids.columns)
    ['AGE', 'PMA', 'SEX', 'WT', 'WT_Z']
    >>> bool(kids.WT.between(8, 40).all())
    True
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise SpecError(f"pediatric_population: n must be a whole number >= 1, got {n!r}")
    n = int(n)
    if unit not in AGE_UNITS:
        raise SpecError(f"pediatric_population: unit={unit!r}; expected one of {', '.join(AGE_UNITS)}")
    if not isinstance(age, (tuple, list, np.ndarray)) or len(age) != 2:
        raise SpecError(f"pediatric_population: age must be (low, high) in {unit}, got {age!r}")
    lo, hi = (_num(a, f"pediatric_population: age ({unit})", nonneg=True) for a in age)
    if lo > hi:
        raise SpecError(f"pediatric_population: age=({lo:g}, {hi:g}): low is above high")
    rng = np.random.default_rng(seed)
    if weight_for_age is None:
        table, source = _cdc_weight_for_age(), "CDC 2000 weight-for-age (LMS)"
        span = tuple(a / AGE_UNITS[unit] for a in CDC_AGE_MONTHS)
        if hi > span[1] + 1e-9:
            raise SpecError(f"pediatric_population: age up to {hi:g} {unit}, but the CDC 2000 weight-for-age charts "
                            f"end at 20 years ({span[1]:g} {unit}); give weight_for_age= for older subjects")
        ages_of_table = table.AGEMOS.to_numpy() / AGE_UNITS[unit]
        table = table.assign(AGE=ages_of_table)
    else:
        table, source = _user_reference(weight_for_age, unit), "weight_for_age table given"
        span = (float(table.AGE.min()), float(table.AGE.max()))
        if lo < span[0] - 1e-9 or hi > span[1] + 1e-9:
            raise SpecError(f"pediatric_population: age=({lo:g}, {hi:g}) {unit} is outside the weight_for_age table "
                            f"({span[0]:g} to {span[1]:g} {unit}); the table is not extrapolated")
    ages = np.full(n, lo) if lo == hi else rng.uniform(lo, hi, n)
    sexes = _sexes(sex, n, rng)
    if z_limit is None:
        z = rng.standard_normal(n)
    else:
        z_limit = _num(z_limit, "pediatric_population: z_limit", positive=True)
        z = _truncnorm(0.0, 1.0, -z_limit, z_limit, n, rng, "pediatric_population: z_limit")
    wt = np.empty(n)
    for s in (1, 2):
        rows = table[table.SEX == s] if "SEX" in table.columns else table
        pick = sexes == s
        if not pick.any():
            continue
        a = rows.AGE.to_numpy(float)
        L, M, S = (np.interp(ages[pick], a, rows[c].to_numpy(float)) for c in ("L", "M", "S"))
        wt[pick] = lms_quantile(z[pick], L, M, S)
    if not np.isfinite(wt).all():
        raise SpecError("pediatric_population: the LMS curve has no value at some drawn percentiles (1 + L*S*z <= 0); "
                        "lower z_limit")
    if isinstance(ga, (list, tuple, np.ndarray, pd.Series)):
        ga = np.asarray(ga, float)
        if ga.shape != (n,):
            raise SpecError(f"pediatric_population: ga has {ga.size} values for {n} children")
    else:
        ga = np.full(n, _num(ga, "pediatric_population: ga (weeks)", positive=True))
    if not np.isfinite(ga).all() or ((ga < 20) | (ga > 45)).any():
        raise SpecError("pediatric_population: ga (gestational age at birth) must be between 20 and 45 weeks")
    pma = ga + ages * DAYS_PER_UNIT[unit] / 7.0
    out = pd.DataFrame({"AGE": ages, "PMA": pma, "SEX": sexes, "WT": wt, "WT_Z": z})
    out.attrs.update({"age_unit": unit, "weight_for_age": source, "sex_codes": "1 male, 2 female"})
    return out


def _sexes(sex, n: int, rng: np.random.Generator) -> np.ndarray:
    if sex is None:
        return np.where(rng.random(n) < 0.5, 1, 2)
    if isinstance(sex, float) and not isinstance(sex, bool):
        if not 0.0 <= sex <= 1.0:
            raise SpecError(f"pediatric_population: sex={sex!r}: a probability of female must be in [0, 1]")
        return np.where(rng.random(n) < sex, 2, 1)
    code = SEX_CODES.get(str(sex).strip().lower())
    if code is None or isinstance(sex, bool):
        raise SpecError(f"pediatric_population: sex={sex!r}; expected None, 'male', 'female', 1, 2 or a probability "
                        "of female")
    return np.full(n, code)


def _user_reference(table, unit: str) -> pd.DataFrame:
    """A weight-for-age table given by the user as columns AGE, SEX (optional) and L, M, S."""
    where = "pediatric_population: weight_for_age"
    if not isinstance(table, pd.DataFrame):
        raise SpecError(f"{where} must be a DataFrame (columns AGE and MEDIAN, CV or L, M, S), got "
                        f"{type(table).__name__}")
    t = table.copy()
    t.columns = [str(c).strip().upper() for c in t.columns]
    if "AGE" not in t.columns:
        raise SpecError(f"{where}: no column AGE (age in {unit})")
    if {"MEDIAN", "CV"} <= set(t.columns):
        t = t.assign(L=0.0, M=t.MEDIAN, S=np.sqrt(np.log1p(pd.to_numeric(t.CV, errors="coerce") ** 2)))
        needed = ("AGE", "MEDIAN", "CV")
    elif {"L", "M", "S"} <= set(t.columns):
        needed = ("AGE", "L", "M", "S")
    else:
        raise SpecError(f"{where}: needs columns MEDIAN and CV, or L, M and S (has {', '.join(t.columns)})")
    for c in needed:
        x = pd.to_numeric(t[c], errors="coerce")
        bad = (x.isna() | ~np.isfinite(x) | ((x < 0) if c == "AGE" else (x <= 0) if c != "L" else False)).to_numpy()
        if bad.any():
            k = int(np.flatnonzero(bad)[0])
            want = "number >= 0" if c == "AGE" else "number" if c == "L" else "number > 0"
            raise SpecError(f"{where}: column {c}, row {k + 1}: {t[c].iloc[k]!r} is not a {want}")
        t[c] = x.astype(float)
    if "SEX" in t.columns:
        codes = [SEX_CODES.get(str(v).strip().lower().removesuffix(".0")) for v in t.SEX]
        if None in codes:
            raise SpecError(f"{where}: column SEX, value {t.SEX.iloc[codes.index(None)]!r}: expected 1/male or "
                            "2/female")
        t["SEX"] = codes
        groups = [g for _, g in t.groupby("SEX")]
        if set(t.SEX) != {1, 2}:
            raise SpecError(f"{where}: column SEX has only {'male' if 1 in set(t.SEX) else 'female'} rows; give both "
                            "sexes or no SEX column")
    else:
        groups = [t]
    for g in groups:
        if len(g) < 2 or not (np.diff(g.AGE.to_numpy()) > 0).all():
            per = " per sex" if len(groups) > 1 else ""
            raise SpecError(f"{where}: AGE must increase from row to row (at least 2 rows{per})")
    return t[["AGE", "L", "M", "S"] + (["SEX"] if "SEX" in t.columns else [])].reset_index(drop=True)
