"""One dose record's concentration contribution, for every linear model and record type.

Every linear mammillary model (one, two, three compartments) has a central
concentration after a unit bolus of the form ``1/V1 * sum_i A_i exp(-lambda_i t)``
(the macro constants of :mod:`bayespk.structural.multicompartment`; one
compartment is ``lambda = CL/V``, ``A = 1``). Everything below is written once
for that form, per exponential, and summed: nothing here depends on the number
of compartments.

A NONMEM dose record gives doses at ``t0 + j*II`` for ``j = 0..ADDL`` (``ADDL``
additional doses), and with ``SS`` an infinite train of earlier doses
``j = -1, -2, ...`` as well (steady state). Its contribution at an observation
is computed without expanding the doses: with ``x`` the time since the most
recent dose of the record that has started and ``n`` the number of the
record's doses before that one (``n = inf`` at steady state), the earlier doses
form a geometric series in ``exp(-lambda II)``:

    S_n(lambda) = sum_{j=0}^{n-1} exp(-lambda j II) = expm1(-lambda n II) / expm1(-lambda II)

(``1 / -expm1(-lambda II)`` at steady state), so per exponential:

* bolus ``amt``:      ``amt [exp(-lambda x) + exp(-lambda (x + II)) S_n]``
* infusion at rate ``R`` for ``D = amt/R <= II`` (the most recent one may be running):
  ``R/lambda [exp(-lambda max(x-D, 0)) (1 - exp(-lambda min(x, D)))
  + (1 - exp(-lambda D)) exp(-lambda (x + II - D)) S_n]``
* depot (first-order absorption ``KA``):
  ``amt KA [E(lambda, KA; x) + (H(lambda) - H(KA)) / (KA - lambda)]`` with
  ``E`` the single-dose difference quotient of the one-compartment module and
  ``H(mu) = exp(-mu (x + II)) S_n(mu)``. Where ``|KA - lambda|`` is below
  ``1e-4`` of their mean, the quotient is replaced by ``-H'`` at the midpoint
  (error ~ (1e-4 lambda x)^2 / 24, far below 1e-6), using
  ``H'/H = -(x + II) + n II/expm1(mu n II) - II/expm1(mu II)``.
* constant infusion at steady state (``SS`` with ``AMT = 0``, ``RATE > 0``):
  ``R / lambda``.

:func:`record_timing` finds ``x`` and ``n`` from the time since the record
(``dt``), ``II``, ``ADDL``, ``SS`` and an absorption lag. NONMEM's ordering at
equal times is kept: an additional dose falling exactly at an observation's
time is given after that observation (``strict``), while prediction-grid
points see it.

All functions work on numpy arrays and pytensor tensors alike, and every
branch is evaluated with safe arguments so no NaN reaches a gradient.
"""

from __future__ import annotations

import numpy as np

from bayespk.structural._xp import _ns

__all__ = ["record_timing", "dose_record", "select"]

_TIE = 1e-4  # relative |KA - lambda| below which the divided difference uses the derivative


def record_timing(dt, ii, addl, ss, strict, lag=None):
    """Time since the most recent started dose of each record, and how many came before it.

    Parameters
    ----------
    dt : array
        Time from the record (its first dose) to the observation; >= 0 where the
        record precedes the observation.
    ii, addl : array
        Dosing interval and number of additional doses (0 for a single dose).
    ss : array of bool
        Steady-state record (an infinite train of earlier doses).
    strict : array of bool
        True for observations (an additional dose at the observation's time comes
        after it), False for prediction-grid points.
    lag : array, optional
        Absorption lag time of each dose (0 where none).

    Returns
    -------
    x, n_prev, active
        ``x`` in ``[0, II]``; ``n_prev`` the number of earlier doses of the record
        (ignored at steady state); ``active`` False where no dose of the record
        has been given yet (its contribution is 0).
    """
    xp = _ns(dt, lag)
    xl = dt if lag is None else dt - lag
    has_ii = ii > 0
    ii_safe = xp.where(has_ii, ii, 1.0)
    ratio = xl / ii_safe
    k = xp.where(strict, xp.ceil(ratio) - 1.0, xp.floor(ratio))
    k = xp.where(has_ii, xp.minimum(xp.maximum(k, 0.0), addl), 0.0)
    # before the record's first (lagged) dose only a steady-state train contributes:
    # its most recent dose is the last one before t0 + lag
    k = xp.where(xl >= 0, k, xp.where(has_ii, xp.floor(ratio), 0.0))
    active = (xl >= 0) | ss
    x = xp.where(active, xl - k * ii_safe, 0.0)
    return x, k, active


def _geometric(lam, ii, n, ss, xp):
    """S_n(lambda) (module doc), with safe arguments in every branch that is built."""
    denom = -xp.expm1(-lam * ii)
    n_safe = select(ss, lambda: 1.0, lambda: n, xp)
    return select(ss, lambda: 1.0 / denom, lambda: -xp.expm1(-lam * n_safe * ii) / denom, xp)


def _over_expm1(mu, a, xp):
    """a / expm1(mu a), written so that it neither overflows nor has a NaN gradient."""
    return a * xp.exp(-mu * a) / -xp.expm1(-mu * a)


def _train_divided_difference(lam, ka, y, ii, n, ss, xp):
    """(H(lam) - H(ka)) / (ka - lam) with H(mu) = exp(-mu y) S_n(mu) (module doc)."""
    mid = (lam + ka) / 2.0
    delta = ka - lam
    tie = xp.abs(delta) <= _TIE * mid
    delta_safe = xp.where(tie, 1.0, delta)
    exact = (xp.exp(-lam * y) * _geometric(lam, ii, n, ss, xp)
             - xp.exp(-ka * y) * _geometric(ka, ii, n, ss, xp)) / delta_safe
    single = ss | (n <= 0)
    n_safe = select(single, lambda: 1.0, lambda: n, xp)
    tail = select(single, lambda: 0.0, lambda: _over_expm1(mid, n_safe * ii, xp), xp)
    log_slope = -y + tail - _over_expm1(mid, ii, xp)
    derivative = -xp.exp(-mid * y) * _geometric(mid, ii, n, ss, xp) * log_slope
    return xp.where(tie, derivative, exact)


def dose_record(x, amt, rate, into_depot, ii, n_prev, ss, lambdas, coefs, v1, ka=None, infusion=None):
    """Central concentration from one dose record (all its doses), given the macro constants.

    Parameters
    ----------
    x, n_prev : array
        From :func:`record_timing`.
    amt, rate : array
        Dose amount (already multiplied by bioavailability) and infusion rate
        (0 for a bolus or a depot dose; with ``amt == 0`` and ``ss`` a constant
        infusion at steady state).
    into_depot : array of bool
        Dose into the absorption depot (needs ``ka``).
    ii : array
        Dosing interval (0 when the record has a single dose).
    ss : array of bool
        Steady-state record.
    lambdas, coefs : sequences of arrays
        Macro constants (eigenvalues and unit-bolus coefficients).
    v1 : array
        Central volume.
    ka : array, optional
        First-order absorption rate constant.
    infusion : array of bool, optional
        Which records are zero-order inputs, when ``rate`` is a tensor (a
        modeled rate or duration); by default ``rate > 0``.

    Notes
    -----
    Every choice between record types (bolus, infusion, constant infusion,
    depot, a train of earlier doses, steady state) is made on data. Where the
    data are numpy arrays (always, inside a model: they come from the design),
    only the branches that some record uses are built, so the graph of a
    single-route study holds only that route's expression.
    """
    xp = _ns(x, amt, rate, ii, v1, ka, *lambdas, *coefs)
    if xp is np:  # branches not taken may overflow or divide by zero; their values are discarded
        with np.errstate(all="ignore"):
            return _dose_record(x, amt, rate, into_depot, ii, n_prev, ss, lambdas, coefs, v1, ka, infusion, xp)
    return _dose_record(x, amt, rate, into_depot, ii, n_prev, ss, lambdas, coefs, v1, ka, infusion, xp)


def _dose_record(x, amt, rate, into_depot, ii, n_prev, ss, lambdas, coefs, v1, ka, infusion, xp):
    ii = ii if _is_tensor(ii) else np.asarray(ii, dtype=float)
    ss = ss if _is_tensor(ss) else np.asarray(ss, dtype=bool)
    has_ii = ii > 0
    ii_safe = select(has_ii, lambda: ii, lambda: 1.0, xp)
    n = select(has_ii, lambda: n_prev, lambda: 0.0, xp)
    train = select(has_ii, lambda: ss | (n > 0), lambda: np.False_, xp)  # earlier doses of the record contribute
    is_infusion = rate > 0 if infusion is None else infusion
    constant = select(ss, lambda: is_infusion & (amt <= 0), lambda: np.False_, xp)  # SS infusion with AMT = 0
    depot = into_depot if ka is not None else False
    safe_rate = select(is_infusion, lambda: rate, lambda: 1.0, xp)
    total = 0.0
    for lam, a in zip(lambdas, coefs):
        def earlier(value):  # the train of earlier doses, where there is one
            return select(train, value, lambda: 0.0, xp)

        def bolus():
            return amt * (xp.exp(-lam * x) + earlier(lambda: xp.exp(-lam * (x + ii_safe))
                                                      * _geometric(lam, ii_safe, n, ss, xp)))

        def running():
            duration = amt / safe_rate
            gap_to_next = xp.maximum(x + ii_safe - duration, 0.0)
            return safe_rate / lam * (
                xp.exp(-lam * xp.maximum(x - duration, 0.0)) * -xp.expm1(-lam * xp.minimum(x, duration))
                + earlier(lambda: -xp.expm1(-lam * duration) * xp.exp(-lam * gap_to_next)
                          * _geometric(lam, ii_safe, n, ss, xp)))

        def absorbed():
            return amt * ka * (_single_absorption(lam, ka, x, xp) + earlier(
                lambda: _train_divided_difference(lam, ka, x + ii_safe, ii_safe, n, ss, xp)))

        def not_absorbed():
            return select(constant, lambda: safe_rate / lam,
                          lambda: select(is_infusion, running, bolus, xp), xp)

        total = total + a * select(depot, absorbed, not_absorbed, xp)
    return total / v1


def select(cond, then, otherwise, xp):
    """``where(cond, then(), otherwise())``, building only the branches the data use.

    ``then`` and ``otherwise`` are functions returning the branch values. When
    ``cond`` is known (a bool or numpy array: it comes from the data) and
    uniform, only the branch it selects is built; otherwise both are built and
    chosen elementwise.
    """
    if not _is_tensor(cond):
        c = np.asarray(cond, dtype=bool)
        if c.all():
            return then()
        if not c.any():
            return otherwise()
    a, b = then(), otherwise()
    if not (_is_tensor(cond) or _is_tensor(a) or _is_tensor(b)):
        return np.where(cond, a, b)
    return xp.where(cond, a, b)


def _single_absorption(lam, ka, dt, xp):
    """(exp(-lam dt) - exp(-ka dt)) / (ka - lam), exact through ka == lam.

    Written as the hand-written form, two exponentials and a division. Where
    ``|ka - lam|`` is below ``_TIE`` of ``ka + lam`` the division is replaced by
    the expansion around the tie, ``dt exp(-lam dt) (1 - u + 2u^2/3 - u^3/3)``
    with ``u = (ka - lam) dt / 2`` (``exp(-u) sinh(u)/u`` to third order; the
    next term is below ``u^4 / 5``), whose value and gradient are exact at the
    tie.
    """
    delta = ka - lam
    tie = xp.abs(delta) <= _TIE * (ka + lam)
    decay = xp.exp(-lam * dt)
    exact = (decay - xp.exp(-ka * dt)) / xp.where(tie, 1.0, delta)
    u = delta * dt / 2.0
    near = dt * decay * (1.0 - u + u * u * (2.0 / 3.0) - u * u * u / 3.0)
    return xp.where(tie, near, exact)


def _is_tensor(a) -> bool:
    return type(a).__module__.startswith("pytensor")
