"""Units of the population parameters and axis labels, from the spec's ``[data] units``.

The spec declares the units of the data (``[data] units = { time = "h", amount
= "mg", conc = "mg/L", WT = "kg" }``); the unit of every population parameter
follows from its role in a built-in structure:

=============================================  =====================================
parameters                                     unit
=============================================  =====================================
CL, Q, Q3 (clearances)                         volume/time
V, V1, V2, V3 (volumes)                        volume
KA, KE0, KOUT, ALPHA, BETA, GX, RN, RB (rates)  1/time
TLAG, D1, TMAX, TEXP (times)                   time
R1 (zero-order input rate)                     amount/time
F, FB, FM, N0, FX, GAMMA, B50, IMAX            "" (fractions, folds, exponents)
EC50, IC50, CMAX, C0, KC (levels)              conc
E0, R0, direct-model EMAX                      effect
SLOPE                                          effect/conc
KILL (CAR-T tumour kill)                       1/(conc*time)
=============================================  =====================================

``volume`` is the ``volume`` key if given, else derived when ``conc`` is
``"<amount>/<X>"`` (amount ``mg``, conc ``mg/L``: volume ``L``); otherwise the
volume-based units (clearances, volumes) are left empty. A unit that is not
determined (an undeclared quantity, a parameter of a model written as equations,
the EMAX of an indirect-response model, which is a stimulation factor) is left
empty, never guessed; ``[parameters.X] unit = "..."`` sets it.

Omegas and correlations are unitless; the omegas of log-normal IIV are reported
as %CV (``100 sqrt(exp(omega^2) - 1)``), categorical covariate effects as factors
(``exp(theta)``). ``sigma_add`` is in conc units (effect units for the PD error),
``sigma_prop`` and ``sigma_log`` are unitless (reported in %).

Examples
--------
>>> from bayespk.model.spec import Spec
>>> spec = Spec.from_dict({"model": {"structure": "1cmt_oral"},
...                        "data": {"units": {"time": "h", "amount": "mg", "conc": "mg/L"}},
...                        "parameters": {"CL": {"guess": 5}, "V": {"guess": 50}, "KA": {"guess": 1}}})
>>> parameter_units(spec)["CL"], parameter_units(spec)["KA"]
('L/h', '1/h')
>>> axis_label(spec, "tad")
'time after dose (h)'
"""

from __future__ import annotations

import numpy as np

from bayespk.model.spec import QUANTITY_UNITS as QUANTITIES

__all__ = ["QUANTITIES", "volume_unit", "parameter_units", "reported_scale", "to_reported", "axis_label", "with_unit",
           "per"]

#: Dimension of each built-in parameter name (see the module docstring).
_CLEARANCE = ("CL", "Q", "Q3")
_VOLUME = ("V", "V1", "V2", "V3")
_RATE = ("KA", "KE0", "KOUT", "ALPHA", "BETA", "GX", "RN", "RB")
_TIME = ("TLAG", "D1", "TMAX", "TEXP")
_UNITLESS = ("F", "FB", "FM", "N0", "FX", "GAMMA", "B50", "IMAX")
_LEVEL = ("EC50", "IC50", "CMAX", "C0", "KC")
_EFFECT = ("E0", "R0")
_WORDS = {"time": "time", "tad": "time after dose", "conc": "concentration", "effect": "effect", "amount": "dose"}
_COLUMN_QUANTITY = {"TIME": "time", "TAD": "time", "AMT": "amount"}
_REPORTED = {
    "value": lambda x: x,
    "%CV": lambda x: 100.0 * np.sqrt(np.expm1(np.square(x))),  # log-normal: CV = sqrt(exp(omega^2) - 1)
    "factor": np.exp,
    "%": lambda x: 100.0 * x,
}


def per(a: str, b: str) -> str:
    """``a/b`` (``b`` in parentheses when compound); ``""`` when either is unknown."""
    if not a or not b:
        return ""
    return f"{a}/({b})" if any(c in b for c in "/* ") else f"{a}/{b}"


def _units(spec) -> dict[str, str]:
    return dict(getattr(getattr(spec, "data", None), "units", None) or {})


def volume_unit(units: dict[str, str]) -> str:
    """The volume unit: ``units["volume"]``, else ``X`` when conc is ``"<amount>/<X>"``, else ``""``."""
    if units.get("volume"):
        return units["volume"]
    amount, conc = units.get("amount", ""), units.get("conc", "")
    if amount and conc.startswith(amount + "/") and len(conc) > len(amount) + 1:
        return conc[len(amount) + 1:]
    return ""


def _structural_unit(name: str, spec, units: dict[str, str]) -> str:
    """Unit of a structural (or PD) parameter of a built-in model; ``""`` when not determined."""
    if spec.user is not None:
        return ""  # a model written as equations: its parameters have no known dimension
    time, amount, conc, effect = (units.get(k, "") for k in ("time", "amount", "conc", "effect"))
    volume = volume_unit(units)
    pd = name in spec.pd_parameters
    if name in ("EMAX",):  # direct models: a maximal effect; indirect response: a stimulation factor
        return effect if pd and not spec.pd.startswith("idr") else ""
    if name == "SLOPE":
        return per(effect, conc)
    if name == "KILL":
        return per("1", f"{conc}*{time}") if conc and time else ""
    if name == "R1":
        return per(amount, time)
    for names, unit in ((_CLEARANCE, per(volume, time)), (_VOLUME, volume), (_RATE, per("1", time)),
                        (_TIME, time), (_UNITLESS, ""), (_LEVEL, conc), (_EFFECT, effect)):
        if name in names:
            return unit
    return ""  # e.g. a parameter only a covariate relation uses (TM50, HILL)


def parameter_units(spec) -> dict[str, str]:
    """Unit of every population parameter of ``spec`` (keys of :attr:`Spec.population_parameters`).

    ``""`` where unitless or not determined (see the module docstring).
    """
    units = _units(spec)
    out: dict[str, str] = {}
    for name, p in spec.parameters.items():
        out[name] = p.unit if getattr(p, "unit", None) is not None else _structural_unit(name, spec, units)
    for name in spec.population_parameters:
        if name in out:
            continue
        out[name] = ""
    for c in spec.covariates:
        if c.effect in ("exponential", "linear"):
            out[c.name] = per("1", units.get(c.column, ""))
    for err, unit in ((spec.error, units.get("conc", "")), (spec.pd_error, units.get("effect", ""))):
        if err is not None and "sigma_add" in err.base_names:
            # one error model per assay: each level's sigma_add is in its own assay's units
            out[err.prefix + "sigma_add"] = unit if err.by is None else ""
    return out


def reported_scale(spec, name: str) -> str:
    """How a population parameter is reported: ``"value"``, ``"%CV"``, ``"factor"`` or ``"%"``.

    Omegas of log-normal IIV/IOV and ``sigma_log``: %CV; categorical covariate
    effects: factor (``exp(theta)``); ``sigma_prop``: %. The omegas of fractions
    with logit-normal IIV (``FB``, ``FM`` of the CAR-T models) stay values.
    """
    if spec is None:
        return "value"
    from bayespk.structural import STRUCTURES

    logit = getattr(STRUCTURES.get(spec.structure), "unit_parameters", ()) if spec.user is None else ()
    base = name.split("[", 1)[0]
    for prefix in ("omega_iov_", "omega_"):
        if base.startswith(prefix):
            return "value" if base[len(prefix):] in logit else "%CV"
    if any(c.effect == "categorical" and c.name == base for c in spec.covariates):
        return "factor"
    for err in (spec.error, spec.pd_error):
        if err is not None and base == err.prefix + "sigma_log":
            return "%CV"
        if err is not None and base == err.prefix + "sigma_prop":
            return "%"
    return "value"


def to_reported(values, scale: str) -> np.ndarray:
    """Draws on the reported scale (see :func:`reported_scale`)."""
    return _REPORTED[scale](np.asarray(values, float))


def with_unit(word: str, unit: str) -> str:
    """``"word (unit)"``; a word ending in ``)`` gets the unit inside: ``"PRED (median, mg/L)"``."""
    if not unit:
        return word
    if word.endswith(")"):
        return f"{word[:-1]}, {unit})"
    return f"{word} ({unit})"


def axis_label(spec, quantity: str, word: str | None = None) -> str:
    """Axis label of a quantity with its unit when the spec declares it.

    ``quantity``: ``"time"``, ``"tad"`` (time after dose), ``"conc"``,
    ``"effect"``, ``"amount"`` (lower case) or a data column (``"WT"``; ``TIME``
    and ``TAD`` take the time unit). ``word`` replaces the default word (the
    quantity's name, or the column's), e.g. ``"DV"`` on a concentration axis.
    Without a declared unit the label is the bare word.

    >>> axis_label(None, "conc")
    'concentration'
    """
    units = _units(spec)
    if quantity in _WORDS:  # a quantity
        unit, default = units.get("time" if quantity == "tad" else quantity, ""), _WORDS[quantity]
    else:  # a data column (TIME, TAD and AMT have the units of time and amount)
        from bayespk.data.nonmem import plot_text

        column = quantity.strip().upper()
        unit, default = units.get(_COLUMN_QUANTITY.get(column, column), ""), plot_text(quantity)
    return with_unit(default if word is None else word, unit)
