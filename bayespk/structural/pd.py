"""Pharmacodynamic (PD) models driven by a concentration ``C`` (or effect-site ``Ce``).

Pure math over arrays, numpy or pytensor alike (like the PK modules). Models
without states are direct functions of ``C``; the others are ODEs integrated by
:func:`bayespk.structural.ode.integrate` with ``C`` as the driver.

Direct effects (all parameters positive):

* linear:         E = E0 + SLOPE C
* Emax:           E = E0 + EMAX C / (EC50 + C)
* sigmoid Emax:   E = E0 + EMAX C^GAMMA / (EC50^GAMMA + C^GAMMA)
* inhibitory:     E = E0 (1 - IMAX C^GAMMA / (IC50^GAMMA + C^GAMMA))

The Hill fraction ``C^g / (C50^g + C^g)`` is evaluated as
``sigmoid(g (log C - log C50))``: no overflow of ``C50^g`` for large ``g``, and
at ``C = 0`` it is 0 with finite (zero) gradients (``log 0`` is kept out of the
graph, so no ``0 * inf`` NaN reaches the gradient).

Effect compartment (Sheiner et al. 1979, Clin Pharmacol Ther 25:358):
``dCe/dt = KE0 (C - Ce)``, ``Ce(0) = 0``, then the sigmoid Emax model on ``Ce``
(``effect_emax``; fix ``GAMMA = 1`` for the hyperbolic form).

Indirect response (turnover) models I-IV (Dayneka, Garg and Jusko 1993,
J Pharmacokinet Biopharm 21:457), parameterized by the baseline ``R0`` and
``KOUT`` (``KIN = R0 KOUT``, ``R(0) = R0``: at steady state without drug):

* I   (inhibition of production):   dR/dt = KIN (1 - IMAX C/(IC50 + C)) - KOUT R
* II  (inhibition of loss):         dR/dt = KIN - KOUT (1 - IMAX C/(IC50 + C)) R
* III (stimulation of production):  dR/dt = KIN (1 + EMAX C/(EC50 + C)) - KOUT R
* IV  (stimulation of loss):        dR/dt = KIN - KOUT (1 + EMAX C/(EC50 + C)) R

``IMAX`` must not exceed 1 (production or loss would turn negative); the
registry marks it (:attr:`PDModel.upper`) for whoever builds priors.

:data:`PD_MODELS` is the registry a model builder reads: per model its
parameters, number of states (0: direct, no ODE), initial state, right-hand
side and observed output. Every callable takes ``params``, a dict keyed by
parameter name of per-subject values (or values broadcasting with ``C``).

:func:`coupled` puts a PD model on top of a linear PK ODE
(:data:`~bayespk.structural.ode.PK_ODES`): one ODE whose states are the PK
amounts followed by the PD states, ``C = A_central / V`` computed inside. Use
it when the PK parameters change over time (no closed form), or to avoid the
closed-form drivers altogether: they cost ``(2N + 1) x doses`` evaluations per
subject, the coupled ODE a few more operations per step.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from bayespk.structural.compartments import _ns
from bayespk.structural.ode import LinearPK

__all__ = [
    "PD_MODELS",
    "PDModel",
    "coupled",
    "emax",
    "hill_fraction",
    "imax",
    "linear",
    "sigmoid_emax",
]


def _sigmoid(x, xp):
    if xp is np:
        from scipy.special import expit

        return expit(x)
    return xp.sigmoid(x)


def hill_fraction(c, c50, gamma):
    """``C^gamma / (C50^gamma + C^gamma)``, 0 at ``C <= 0`` with finite gradients (see module doc)."""
    xp = _ns(c, c50, gamma)
    positive = c > 0
    c_safe = xp.where(positive, c, 1.0)
    return xp.where(positive, _sigmoid(gamma * (xp.log(c_safe) - xp.log(c50)), xp), 0.0)


def linear(c, e0, slope):
    """E = E0 + SLOPE C."""
    return e0 + slope * c


def emax(c, e0, emax_, ec50):
    """E = E0 + EMAX C / (EC50 + C)."""
    return e0 + emax_ * c / (ec50 + c)


def sigmoid_emax(c, e0, emax_, ec50, gamma):
    """E = E0 + EMAX C^GAMMA / (EC50^GAMMA + C^GAMMA).

    Examples
    --------
    >>> round(float(sigmoid_emax(2.0, 1.0, 10.0, 2.0, 3.0)), 12)   # C = EC50: half of EMAX
    6.0
    """
    return e0 + emax_ * hill_fraction(c, ec50, gamma)


def imax(c, e0, imax_, ic50, gamma):
    """E = E0 (1 - IMAX C^GAMMA / (IC50^GAMMA + C^GAMMA))."""
    return e0 * (1.0 - imax_ * hill_fraction(c, ic50, gamma))


@dataclass(frozen=True)
class PDModel:
    """A PD model as data: what it needs and how to evaluate it.

    ``initial(params) -> (n_subjects, n_states)``; ``rhs(y, c, params) -> dy/dt``
    (the :func:`~bayespk.structural.ode.integrate` signature: ``y`` a tuple of
    ``(n_subjects,)`` states, ``C`` the driver, a list returned);
    ``output(y, c, params) -> E``, with ``y`` the states at the observation
    times (``(..., n_states)``, as :func:`~bayespk.structural.ode.integrate`
    returns them; ``None`` for direct models) and ``c`` the concentration there.
    """

    name: str
    parameters: tuple[str, ...]
    description: str
    output: Callable
    n_states: int = 0
    initial: Callable | None = None
    rhs: Callable | None = None
    upper: dict[str, float] = field(default_factory=dict)  # parameters bounded above as well

    @property
    def needs_ode(self) -> bool:
        return self.n_states > 0


def _drug_effect(c, p, stimulation: bool):
    """1 - IMAX C/(IC50 + C) (inhibition) or 1 + EMAX C/(EC50 + C) (stimulation)."""
    if stimulation:
        return 1.0 + p["EMAX"] * c / (p["EC50"] + c)
    return 1.0 - p["IMAX"] * c / (p["IC50"] + c)


def _idr_model(kind: int) -> PDModel:
    """Indirect response model I, II, III or IV (see the module docstring)."""
    stimulation = kind >= 3
    on_production = kind in (1, 3)

    def rhs(y, c, p):
        (r,) = y
        drug = _drug_effect(c, p, stimulation)
        kin = p["R0"] * p["KOUT"]
        production = kin * drug if on_production else kin
        loss = p["KOUT"] * r if on_production else p["KOUT"] * drug * r
        return [production - loss]

    def initial(p):
        return _ns(p["R0"]).stack([p["R0"] * 1.0], axis=-1)

    what = {
        1: "inhibition of production",
        2: "inhibition of loss",
        3: "stimulation of production",
        4: "stimulation of loss",
    }[kind]
    drug_params = ("EMAX", "EC50") if stimulation else ("IMAX", "IC50")
    return PDModel(
        name=f"idr{kind}",
        parameters=("R0", "KOUT", *drug_params),
        description=f"indirect response model {['I', 'II', 'III', 'IV'][kind - 1]} (Dayneka 1993): {what} "
        "of the response R, KIN = R0 KOUT, R(0) = R0",
        output=lambda y, c, p: y[..., 0],
        n_states=1,
        initial=initial,
        rhs=rhs,
        upper={} if stimulation else {"IMAX": 1.0},
    )


def _effect_rhs(y, c, p):
    """dCe/dt = KE0 (C - Ce)."""
    (ce,) = y
    return [p["KE0"] * (c - ce)]


PD_MODELS: dict[str, PDModel] = {
    m.name: m
    for m in (
        PDModel(
            "linear",
            ("E0", "SLOPE"),
            "direct linear effect: E = E0 + SLOPE C",
            output=lambda y, c, p: linear(c, p["E0"], p["SLOPE"]),
        ),
        PDModel(
            "emax",
            ("E0", "EMAX", "EC50"),
            "direct Emax: E = E0 + EMAX C / (EC50 + C)",
            output=lambda y, c, p: emax(c, p["E0"], p["EMAX"], p["EC50"]),
        ),
        PDModel(
            "sigmoid_emax",
            ("E0", "EMAX", "EC50", "GAMMA"),
            "direct sigmoid Emax: E = E0 + EMAX C^GAMMA / (EC50^GAMMA + C^GAMMA)",
            output=lambda y, c, p: sigmoid_emax(c, p["E0"], p["EMAX"], p["EC50"], p["GAMMA"]),
        ),
        PDModel(
            "imax",
            ("E0", "IMAX", "IC50", "GAMMA"),
            "direct inhibitory: E = E0 (1 - IMAX C^GAMMA / (IC50^GAMMA + C^GAMMA))",
            output=lambda y, c, p: imax(c, p["E0"], p["IMAX"], p["IC50"], p["GAMMA"]),
            upper={"IMAX": 1.0},
        ),
        PDModel(
            "effect_emax",
            ("KE0", "E0", "EMAX", "EC50", "GAMMA"),
            "effect compartment dCe/dt = KE0 (C - Ce), Ce(0) = 0, with sigmoid Emax on Ce "
            "(GAMMA = 1: hyperbolic Emax)",
            output=lambda y, c, p: sigmoid_emax(y[..., 0], p["E0"], p["EMAX"], p["EC50"], p["GAMMA"]),
            n_states=1,
            initial=lambda p: _ns(p["KE0"]).stack([p["KE0"] * 0.0], axis=-1),
            rhs=_effect_rhs,
        ),
        *(_idr_model(k) for k in (1, 2, 3, 4)),
    )
}


def coupled(pd: PDModel, pk: LinearPK) -> PDModel:
    """PD model ``pd`` driven by the concentration of the PK ODE ``pk``, as one ODE model.

    States: the ``pk.n_states`` amounts (doses as jumps / inputs into them),
    then the PD states (a direct model has none: its output is evaluated on
    the central concentration). Parameters: the PK ones, then the PD ones.
    ``integrate`` it without drivers.
    """
    n_pk = pk.n_states

    def concentration(y, p):
        return y[pk.central] / p[pk.volume]

    def rhs(y, driver, p):
        d_pk = pk.rhs(y[:n_pk], None, p)
        return [*d_pk, *pd.rhs(y[n_pk:], concentration(y, p), p)] if pd.needs_ode else d_pk

    def initial(p):
        xp = _ns(*p.values())
        v = p[pk.volume]
        zero = (v[:, 0] if v.ndim == 2 else v) * 0.0  # (n_subjects,), also for a per-step volume
        pd_states = [pd.initial(p)[:, i] for i in range(pd.n_states)] if pd.needs_ode else []
        return xp.stack([zero] * n_pk + pd_states, axis=-1)

    def output(y, c, p):
        return pd.output(y[..., n_pk:] if pd.needs_ode else None, pk.concentration(y, p), p)

    return PDModel(
        name=f"{pk.name}+{pd.name}",
        parameters=(*pk.parameters, *pd.parameters),
        description=f"{pk.name} PK ODE (amounts, states 0..{n_pk - 1}) driving {pd.name}: {pd.description}",
        output=output,
        n_states=n_pk + pd.n_states,
        initial=initial,
        rhs=rhs,
        upper=pd.upper,
    )
