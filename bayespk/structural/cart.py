"""CAR-T cellular kinetics in closed form: expansion, contraction, persistence.

Piecewise model of Stein et al. (2019, CPT Pharmacometrics Syst Pharmacol
8:285) for tisagenlecleucel, with time ``t`` counted from the infusion::

    t < TMAX:   C(t) = CMAX / FX * exp(rho * t),   rho = ln(FX) / TMAX
    t >= TMAX:  C(t) = C(TMAX) * ((1 - FB) exp(-ALPHA (t - TMAX)) + FB exp(-BETA (t - TMAX)))

Effector cells contract at ``ALPHA``; a fraction ``FB`` persists as memory-like
cells declining at ``BETA``. The cell dose does not enter (it may act through
a covariate). The lag variant (Ogasawara et al. 2021, Clin Pharmacokinet, for
lisocabtagene maraleucel) keeps the level at ``CMAX / FX`` for ``TLAG`` days,
then expands for ``TEXP`` days, so the peak is at ``TLAG + TEXP``.

Time-varying treatments (tocilizumab, corticosteroids) multiply the expansion
rate from each patient's first administration: ``rho(t) = rho * prod_k
m_k^[t >= s_k]``. The log level at the end of expansion is then the integral
of a piecewise-constant rate, so the model stays exact in closed form
(:func:`expansion_integral`); without treatments it reaches ``CMAX`` at the
peak, with them ``CMAX * exp(integral - ln FX)``. The equivalent ODE (used in
the tests) is ``dC/dt = rho(t) C`` during expansion, then two pools
``dE/dt = -ALPHA E``, ``dM/dt = -BETA M`` started at ``(1 - FB) C`` and
``FB C``.

Functions work on numpy arrays and pytensor tensors alike.
"""

from __future__ import annotations

from dataclasses import dataclass
from itertools import combinations

import numpy as np

from bayespk.structural._xp import _ns
from bayespk.structural.dosing import _is_tensor, select

__all__ = ["CellKinetics", "CELL_KINETICS", "ck_level", "expansion_integral", "NO_ONSET"]

#: Onset time standing for "never given" (finite, so gradients stay clean).
NO_ONSET = 1e9


def expansion_integral(u, start, onsets, multipliers):
    """Integral of the relative expansion-rate factor from ``start`` to ``u`` (``u >= start``).

    The factor is ``prod_k m_k`` over the treatments already started
    (``s_k <= s``). Expanding the product over subsets ``S`` of treatments,
    ``prod_k (1 + (m_k - 1) [s >= s_k]) = sum_S prod_{k in S} (m_k - 1) [s >= max_{k in S} s_k]``,
    each term integrates to ``max(0, u - max(start, max_S s_k))``.

    ``onsets``: sequence of arrays (time of the first administration of each
    treatment, :data:`NO_ONSET` if never); ``multipliers``: matching scalars
    or arrays.
    """
    xp = _ns(u, start, *onsets, *multipliers)
    total = u - start
    k = len(onsets)
    for size in range(1, k + 1):
        for subset in combinations(range(k), size):
            if any(_never(onsets[j]) for j in subset):
                continue  # a treatment nobody received: its terms are 0
            coef = 1.0
            begin = start
            for j in subset:
                coef = coef * (multipliers[j] - 1.0)
                begin = xp.maximum(begin, onsets[j])
            total = total + coef * xp.maximum(u - begin, 0.0)
    return total


def _never(onset) -> bool:
    """True when ``onset`` is data saying the treatment is never given (:data:`NO_ONSET` everywhere)."""
    return not _is_tensor(onset) and bool(np.all(np.asarray(onset) >= NO_ONSET))


def ck_level(t, CMAX, FX, TMAX, ALPHA, FB, BETA, TLAG=0.0, onsets=(), multipliers=()):
    """Cellular level at ``t`` days after the infusion (0 before it).

    ``TMAX`` is the duration of expansion (the peak is at ``TLAG + TMAX``).
    ``FB`` is used as given (the model keeps it in (0, 1)).
    """
    xp = _ns(t, CMAX, FX, TMAX, ALPHA, FB, BETA, TLAG, *onsets, *multipliers)
    start = TLAG
    peak = TLAG + TMAX
    rho = xp.log(FX) / TMAX
    u = xp.minimum(xp.maximum(t, start), peak)
    log_c0 = xp.log(CMAX) - xp.log(FX)
    log_level = log_c0 + rho * expansion_integral(u, start, onsets, multipliers)
    tau = xp.maximum(t - peak, 0.0)
    decline = (1.0 - FB) * xp.exp(-ALPHA * tau) + FB * xp.exp(-BETA * tau)
    return select(t >= 0.0, lambda: xp.exp(log_level) * decline, lambda: 0.0, xp)


@dataclass(frozen=True)
class CellKinetics:
    """A cellular-kinetics structure: its parameters and how they map onto :func:`ck_level`.

    Shares the attributes of :class:`~bayespk.structural.Structure` that the
    data layer reads (``central_cmt``, ``depot_cmt``): the cell infusion is a
    dose record into CMT 1 at the start, and the levels are observed in CMT 1.
    """

    name: str
    parameters: tuple[str, ...]
    description: str
    central_cmt: int = 1
    depot_cmt: int | None = None
    unit_parameters: tuple[str, ...] = ("FB",)  # fractions: logit-normal IIV, kept in (0, 1)

    @property
    def optional_parameters(self) -> tuple[str, ...]:
        return ()

    def level(self, t, params: dict, onsets=(), multipliers=()):
        """Level at ``t`` (days since infusion) from a dict of parameter values."""
        duration = params["TEXP"] if "TEXP" in params else params["TMAX"]
        return ck_level(t, params["CMAX"], params["FX"], duration, params["ALPHA"], params["FB"], params["BETA"],
                        TLAG=params.get("TLAG", 0.0), onsets=onsets, multipliers=multipliers)

    def peak_time(self, params: dict):
        """Time of the peak after the infusion (without treatment effects it is also the Cmax time)."""
        return params["TLAG"] + params["TEXP"] if "TEXP" in params else params["TMAX"]


CELL_KINETICS: dict[str, CellKinetics] = {
    s.name: s
    for s in (
        CellKinetics(
            "cart_piecewise",
            ("CMAX", "FX", "TMAX", "ALPHA", "FB", "BETA"),
            "CAR-T piecewise kinetics (Stein 2019): exponential expansion by FX-fold to CMAX at "
            "TMAX days, then bi-exponential contraction (ALPHA) and persistence (fraction FB, BETA); "
            "CMT 1 = the cell infusion and the observed level",
        ),
        CellKinetics(
            "cart_lag",
            ("CMAX", "FX", "TLAG", "TEXP", "ALPHA", "FB", "BETA"),
            "CAR-T kinetics with a lag (Ogasawara 2021): flat for TLAG days, expansion by FX-fold "
            "over TEXP days to CMAX, then bi-exponential contraction (ALPHA) and persistence "
            "(fraction FB, BETA); CMT 1 = the cell infusion and the observed level",
        ),
    )
}

