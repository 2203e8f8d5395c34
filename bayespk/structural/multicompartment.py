"""Closed-form solutions of linear two- and three-compartment PK models.

Mammillary models: a central compartment (volume ``V1``) with first-order
elimination ``CL``, exchanging with one peripheral compartment (``Q``, ``V2``)
or two (``Q``, ``V2`` and ``Q3``, ``V3``); optionally a depot absorbed at
first-order rate ``KA`` into the central compartment (NONMEM ADVAN3/4 and
ADVAN11/12). Like :mod:`bayespk.structural.compartments`, everything here is
pure math over arrays and works on numpy arrays and pytensor tensors alike.

Micro constants: ``k10 = CL/V1``, ``k12 = Q/V1``, ``k21 = Q/V2``,
``k13 = Q3/V1``, ``k31 = Q3/V3``. The central concentration after a unit bolus
into the central compartment is a sum of exponentials (the macro constants)

    C(t) = 1/V1 * sum_i A_i exp(-lambda_i t),
    A_i  = prod_j (k_j1 - lambda_i) / prod_{m != i} (lambda_m - lambda_i)

(``j`` over the peripheral compartments; the ``A_i`` are positive and sum to 1),
where the ``lambda_i`` are the roots of the characteristic polynomial:

* two compartments: ``lambda^2 - (k10 + k12 + k21) lambda + k10 k21``; with
  ``d = k10 + k12 - k21`` and ``r = sqrt(d^2 + 4 k12 k21) = alpha - beta``:
  ``alpha = (k10 + k12 + k21 + r) / 2``, ``beta = k10 k21 / alpha``,
  ``A_alpha = (d + r) / (2 r)``, ``A_beta = (r - d) / (2 r)``;
* three compartments: ``lambda^3 - a2 lambda^2 + a1 lambda - a0`` with
  ``a2 = k10 + k12 + k13 + k21 + k31``,
  ``a1 = k10 k21 + k10 k31 + k21 k31 + k13 k21 + k12 k31``, ``a0 = k10 k21 k31``,
  solved with the trigonometric formula for three real roots (as in the ADVAN
  style solutions of Abuhelwa, Foster and Upton (2015), J Pharmacol Toxicol
  Methods 73:42): ``p = a1 - a2^2/3``, ``q = -2 a2^3/27 + a1 a2/3 - a0``,
  ``s = sqrt(-p/3)``, ``phi = arccos(-q / (2 s^3)) / 3`` and
  ``lambda_k = a2/3 + 2 s cos(phi - 2 pi k/3)``. Only the largest root is taken
  from it; the other two solve ``x^2 - S x + P`` with ``P = a0 / lambda_0`` and
  ``S = (a1 - P) / lambda_0`` (Vieta).

Per route, for one dose (``dt`` = time since the dose):

* IV bolus ``amt``:           ``amt/V1 * sum_i A_i exp(-lambda_i dt)``
* infusion at ``rate`` for ``D = amt/rate`` (during and after at once):
  ``rate/V1 * sum_i A_i/lambda_i * (exp(-lambda_i max(dt - D, 0)) - exp(-lambda_i dt))``
* dose ``amt`` into the depot:
  ``amt KA/V1 * sum_i A_i (exp(-lambda_i dt) - exp(-KA dt)) / (KA - lambda_i)``

Numerical care: every term of every sum is non-negative, so nothing cancels
between terms. No root is found by subtracting nearly equal numbers: the
smallest comes from the product of the roots (``beta = k10 k21 / alpha``;
``P / lambda_1``), ``alpha - beta`` is ``r``; ``A_alpha``, ``A_beta`` use the
algebraically equal form ``2 k12 k21 / (r (r -+ d))`` where ``d +- r`` would
cancel. The trigonometric formula alone loses half the digits of the two smaller
roots when both are small next to the largest (its arccos argument is then near
1), common in three-compartment PK; the Vieta step keeps them to ~1e-15
relative over rate constants spanning 1e-5..1e5. The absorption
difference quotient is evaluated as ``dt exp(-min(KA, lambda) dt) phi(|KA - lambda| dt)``
with ``phi(x) = (1 - exp(-x)) / x`` (as in the one-compartment model), exact,
and smooth through ``KA == lambda_i``, gradient included.
"""

from __future__ import annotations

import numpy as np

from bayespk.structural._xp import _ns
from bayespk.structural.dosing import dose_record

__all__ = [
    "three_compartment",
    "three_compartment_macro",
    "two_compartment",
    "two_compartment_macro",
]

_SQRT3 = float(np.sqrt(3.0))


def two_compartment_macro(cl, v1, q, v2):
    """Eigenvalues ``(alpha, beta)`` (alpha > beta) and unit-bolus coefficients ``(A_alpha, A_beta)``.

    A bolus ``amt`` into the central compartment gives
    ``C(t) = amt/V1 * (A_alpha exp(-alpha t) + A_beta exp(-beta t))``, so the
    usual bi-exponential ``A exp(-alpha t) + B exp(-beta t)`` has
    ``A = amt/V1 * A_alpha``, ``B = amt/V1 * A_beta``.

    Examples
    --------
    >>> (alpha, beta), (a, b) = two_compartment_macro(7.0, 7.0, 6.0, 10.0)
    >>> round(float(alpha * beta), 12), round(float(a + b), 12)   # k10 k21, 1
    (0.6, 1.0)
    """
    xp = _ns(cl, v1, q, v2)
    k10 = cl / v1
    k12 = q / v1
    k21 = q / v2
    d = k10 + k12 - k21
    c = k12 * k21
    r = xp.sqrt(d * d + 4.0 * c)  # alpha - beta, > 0 for Q > 0
    alpha = (k10 + k12 + k21 + r) / 2.0
    beta = k10 * k21 / alpha
    # (d + r) / (2r) and (r - d) / (2r), each in the form free of cancellation
    a_alpha = xp.where(d >= 0, (d + r) / (2.0 * r), 2.0 * c / (r * (r - d)))
    a_beta = xp.where(d <= 0, (r - d) / (2.0 * r), 2.0 * c / (r * (r + d)))
    return (alpha, beta), (a_alpha, a_beta)


def three_compartment_macro(cl, v1, q, v2, q3, v3):
    """Eigenvalues ``(lambda_0 > lambda_1 > lambda_2)`` and unit-bolus coefficients.

    A bolus ``amt`` into the central compartment gives
    ``C(t) = amt/V1 * sum_i A_i exp(-lambda_i t)``.
    """
    xp = _ns(cl, v1, q, v2, q3, v3)
    k10 = cl / v1
    k12 = q / v1
    k21 = q / v2
    k13 = q3 / v1
    k31 = q3 / v3
    a2 = k10 + k12 + k13 + k21 + k31
    a1 = k10 * k21 + k10 * k31 + k21 * k31 + k13 * k21 + k12 * k31
    a0 = k10 * k21 * k31
    p = a1 - a2 * a2 / 3.0  # < 0 for three distinct real roots
    q_ = -2.0 * a2**3 / 27.0 + a1 * a2 / 3.0 - a0
    s2 = xp.maximum(-p / 3.0, 1e-300)
    s = xp.sqrt(s2)
    # arccos argument, kept strictly inside [-1, 1] (rounding; finite gradient)
    x = xp.clip(-q_ / (2.0 * s2 * s), -1.0 + 1e-15, 1.0 - 1e-15)
    phi = xp.arccos(x) / 3.0  # in [0, pi/3]; lambda_k = a2/3 + 2 s cos(phi - 2 pi k/3)
    # The largest root from the trigonometric formula: a sum of two positive terms, and
    # accurate even where the other two roots are tiny next to it (arccos argument near
    # 1, where the formula's other roots lose half the digits).
    lam0 = a2 / 3.0 + 2.0 * s * xp.cos(phi)
    # The other two from their product and sum (Vieta), each free of cancellation:
    # lam1 lam2 = a0 / lam0, lam1 + lam2 = (a1 - lam1 lam2) / lam0 (>= a1 / (2 lam0)).
    prod12 = a0 / lam0
    sum12 = (a1 - prod12) / lam0
    d12 = xp.sqrt(xp.maximum(sum12 * sum12 - 4.0 * prod12, 1e-300))  # lam1 - lam2
    lam1 = (sum12 + d12) / 2.0
    lam2 = prod12 / lam1
    d01 = lam0 - lam1
    d02 = lam0 - lam2
    a_0 = (k21 - lam0) * (k31 - lam0) / (d01 * d02)
    a_1 = (k21 - lam1) * (k31 - lam1) / (-d01 * d12)
    a_2 = (k21 - lam2) * (k31 - lam2) / (d02 * d12)
    return (lam0, lam1, lam2), (a_0, a_1, a_2)


def two_compartment(dt, amt, rate, into_depot, cl, v1, q, v2, ka=None):
    """Contribution of each dose in a two-compartment model (ADVAN3; ADVAN4 with ``ka``).

    Arguments as in :func:`~bayespk.structural.compartments.one_compartment`:
    per dose the bolus / infusion (``rate > 0``) / depot (``into_depot``,
    needs ``ka``) route is chosen.

    Examples
    --------
    >>> import numpy as np
    >>> c = two_compartment(np.array([0.0]), np.array([100.0]), np.array([0.0]),
    ...                     np.array([False]), 2.0, 10.0, 3.0, 20.0)
    >>> round(float(c[0]), 10)  # amt / V1 at the bolus
    10.0
    """
    lambdas, coefs = two_compartment_macro(cl, v1, q, v2)
    zero = 0.0 * dt
    return dose_record(dt, amt, rate, into_depot, zero, zero, zero > 0, lambdas, coefs, v1, ka)


def three_compartment(dt, amt, rate, into_depot, cl, v1, q, v2, q3, v3, ka=None):
    """Contribution of each dose in a three-compartment model (ADVAN11; ADVAN12 with ``ka``).

    Arguments as in :func:`two_compartment`, plus ``q3``, ``v3`` of the second
    peripheral compartment.
    """
    lambdas, coefs = three_compartment_macro(cl, v1, q, v2, q3, v3)
    zero = 0.0 * dt
    return dose_record(dt, amt, rate, into_depot, zero, zero, zero > 0, lambdas, coefs, v1, ka)
