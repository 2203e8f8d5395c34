"""Closed-form solutions of linear one-compartment PK models.

Every function here is pure math over arrays: it works on numpy arrays and on
pytensor tensors alike (the namespace is picked from the arguments), so the same
code evaluates a prediction in a test, a simulation and inside a PyMC model.
Nothing in this module knows about PyMC model building or files.

The building block is the concentration contributed by **one dose** a time
``dt >= 0`` after it was given. Multiple doses are handled by superposition:
:func:`superpose` sums the contributions of every dose over an
``(observation x dose)`` layout prepared by :mod:`bayespk.data.design`.

Notation: ``k = CL / V`` (elimination rate constant), ``ka`` first-order
absorption rate constant, ``D = amt / rate`` infusion duration.

* IV bolus:         C(dt) = amt / V * exp(-k dt)
* zero-order infusion (rate R for D hours, written for all dt >= 0 at once):
                    C(dt) = R / (k V) * (exp(-k max(dt - D, 0)) - exp(-k dt))
* first-order absorption (dose into the depot):
                    C(dt) = amt * ka / V * (exp(-k dt) - exp(-ka dt)) / (ka - k)

The absorption term is evaluated in the form
``exp(-min(k, ka) dt) * dt * phi(|ka - k| dt)`` with ``phi(x) = (1 - exp(-x)) / x``,
which is exact, never overflows (its argument is never negative) and tends
smoothly to the ``ka == k`` limit ``ka * amt / V * dt * exp(-k dt)``.
"""

from __future__ import annotations

from bayespk.structural._xp import _ns, _phi
from bayespk.structural.dosing import dose_record

__all__ = [
    "bolus",
    "infusion",
    "first_order_absorption",
    "one_compartment",
    "one_compartment_macro",
    "superpose",
]


def bolus(dt, amt, cl, v):
    """Concentration ``dt`` after an IV bolus of ``amt`` into a one-compartment model."""
    xp = _ns(dt, amt, cl, v)
    k = cl / v
    return amt / v * xp.exp(-k * dt)


def infusion(dt, amt, rate, cl, v):
    """Concentration ``dt`` after the start of a zero-order infusion of ``amt`` at ``rate``.

    Valid during (``dt < amt/rate``) and after the infusion. ``rate`` must be > 0.
    """
    xp = _ns(dt, amt, rate, cl, v)
    k = cl / v
    duration = amt / rate
    return rate / cl * (xp.exp(-k * xp.maximum(dt - duration, 0.0)) - xp.exp(-k * dt))


def first_order_absorption(dt, amt, cl, v, ka):
    """Concentration ``dt`` after a dose into a depot absorbed at first-order rate ``ka``."""
    xp = _ns(dt, amt, cl, v, ka)
    k = cl / v
    gap = xp.abs(ka - k)
    # min(k, ka) written as (k + ka - |ka - k|) / 2: same value, but its gradient at
    # ka == k is 1/2 to each argument whatever subgradient abs takes at 0, so the
    # kinks of exp(-lo dt) and phi(gap dt) cancel and the gradient there is exact
    # (xp.minimum sends the whole tie gradient to one argument: wrong by a factor).
    lo = (k + ka - gap) / 2.0
    return amt * ka / v * dt * xp.exp(-lo * dt) * _phi(gap * dt, xp)


def one_compartment(dt, amt, rate, into_depot, cl, v, ka=None):
    """Contribution of each dose, choosing bolus / infusion / absorption per dose.

    Parameters
    ----------
    dt : array
        Time since the dose (>= 0; entries of doses given after the observation
        are masked out by :func:`superpose`, whatever their value here).
    amt, rate : array
        Dose amount and infusion rate (0 for a bolus).
    into_depot : array of bool
        True where the dose goes into the absorption depot (needs ``ka``).
    cl, v, ka : array or tensor
        Individual parameters broadcast to the shape of ``dt``.

    Examples
    --------
    >>> import numpy as np
    >>> c = one_compartment(np.array([1.0]), np.array([100.0]), np.array([0.0]),
    ...                     np.array([False]), 2.0, 10.0)
    >>> round(float(c[0]), 4)  # 100/10 * exp(-0.2)
    8.1873
    """
    lambdas, coefs = one_compartment_macro(cl, v)
    zero = 0.0 * dt
    return dose_record(dt, amt, rate, into_depot, zero, zero, zero > 0, lambdas, coefs, v, ka)


def one_compartment_macro(cl, v):
    """The one compartment as a sum of exponentials: ``lambda = CL/V``, ``A = 1``."""
    return (cl / v,), (1.0 + 0.0 * cl,)


def superpose(contributions, mask):
    """Sum dose contributions over the dose axis, counting only doses in ``mask``.

    ``contributions`` and ``mask`` have shape ``(n_obs, n_dose_slots)``; the mask
    is True where the slot holds a dose of the same subject given at or before
    the observation time.
    """
    xp = _ns(contributions)
    return xp.sum(xp.where(mask, contributions, 0.0), axis=-1)
