"""Mechanistic CAR-T cellular kinetics as an ODE: homeostatic space, tumor antigen, memory.

Pure math over arrays (numpy or pytensor, the right-hand side written once),
integrated by the project's solver :func:`bayespk.structural.ode.integrate`.
A parsimonious descendant of Kimmel, Locke and Altrock (2021, Proc R Soc B
288:20210229: Gompertz competition of normal T cells and CAR-T cells for
homeostatic space after lymphodepletion, tumor killed by CAR-T cells), cut
down to what CAR-T level data (qPCR, copies/ug gDNA, days 0-730) and baseline
covariates can inform, with an effector/memory split so that the long,
slowly declining tail of the piecewise model (Stein et al. 2019,
:mod:`bayespk.structural.cart`) is produced by the mechanism.

States (time ``t`` in days since the infusion)

* ``N``: normal (non-CAR) T cells, in units of their normal (homeostatic)
  level: ``N = 1`` is a replete compartment. Lymphodepletion leaves ``N(0) =
  N0`` (a covariate, the residual fraction, e.g. ALC after lymphodepletion /
  normal ALC).
* ``E``: effector CAR-T cells, copies/ug (the observation scale).
* ``M``: memory-like CAR-T cells, copies/ug.
* ``B``: tumor burden, in units of a reference burden (e.g. the population
  median baseline burden): ``B(0) = B0`` (a covariate, 1 for a typical
  patient). The scale of ``B`` is arbitrary (killing is proportional to
  ``B``), so only ``B0 / B50`` matters.

Equations::

    phi    = N + (E + M) / KC                               occupied homeostatic space
    S      = B / (B + B50)                                  antigen stimulation
    dN/dt  = RN N ln(1 / phi)                               Gompertz reconstitution of normal T cells
    dE/dt  = RHO S ln(1 / phi) E - ALPHA E                  antigen-driven Gompertz expansion, contraction
    RHO    = (GX + ALPHA) / (S_ref ln(1 / N_ref))           from the net expansion rate GX (below)
    dM/dt  = FM ALPHA E - BETA M                            a fraction FM of contracting effectors persist
    dB/dt  = RB B - KILL E B                                tumor killed by effectors (mass action)

    N(0) = N0,  E(0) = C0,  M(0) = 0,  B(0) = B0;   observed level  C = E + M  (copies/ug)

The expansion coefficient ``RHO`` is not estimated as such: ``GX`` is, the
net expansion rate ``d ln E/dt`` at the infusion of a *reference* patient
(``B0 = 1``, so ``S_ref = 1 / (1 + B50)``, and ``N0 = N_ref = 0.05``, the
default of :data:`COVARIATE_DEFAULTS`). On CK data alone ``RHO`` and ``ALPHA``
of a patient are seen mostly through their difference during expansion: with
``(RHO, ALPHA)`` the posterior of each patient is a thin ridge (100 of them
on 100 patients, posterior correlations such that NUTS needed ~1000
leapfrog steps per draw), with ``(GX, ALPHA)`` expansion and contraction
are nearly separate directions. A patient's own ``N0`` and ``B0`` still act
through ``ln(1/phi)`` and ``S``: the reference only fixes the scale.

Expansion needs both antigen (``S``) and free homeostatic space (``phi <
1``), Gompertz as in Kimmel: deeper lymphodepletion (lower ``N0``) raises
``ln(1/phi)`` and with it the expansion rate; a larger tumor stimulates longer
(more CAR-T exposure is needed to clear it), so the peak is higher; expansion
stops when the tumor is cleared (``S -> 0``) or the space refills (normal
T cells recovering, CAR-T cells filling it): ``phi -> 1``. Without tumor
(``B0 -> 0``) the infused cells only contract. After the peak effectors
decline at ``ALPHA`` (contraction half-life ``ln 2 / ALPHA``); a fraction
``FM`` of the effectors leaving (at ``ALPHA``, before and after the peak)
become memory cells, which decline at ``BETA``: the tail extrapolated back
to the peak is about ``FM (1 + ALPHA / expansion rate)`` of it (the ``FB`` of
the piecewise model, ~1.5 FM at the typical values), and one year after the
infusion the level is memory cells. Once ``N`` has recovered, ``phi > 1`` and
``ln(1/phi) < 0``: CAR-T effectors meeting antigen are then squeezed out
(the competition of Kimmel et al.), the memory pool is not (its decline is
``BETA`` alone).

Estimated parameters (all positive; ``FM`` in (0, 1), logit-normal IIV like
``FB`` of the piecewise model; the others log-normal); typical values
:data:`TYPICAL_KIMMEL` give a tisagenlecleucel-like curve:

======  ======================  ================================================  ========
name    unit                    meaning                                           typical
======  ======================  ================================================  ========
C0      copies/ug               level right after the infusion (all effectors)    5
GX      1/day                   net expansion rate at t = 0, reference patient    1.28
KC      copies/ug               CAR-T level that alone fills the T-cell space     5e4
ALPHA   1/day                   effector contraction rate                         0.15
FM      (0, 1)                  fraction of contracting effectors becoming memory 0.01
BETA    1/day                   memory decline rate                               0.003
KILL    1/((copies/ug) day)     tumor kill rate per effector level                1.5e-4
======  ======================  ================================================  ========

Fixed (:data:`CONSTANTS`, overridden by a value of the same name in the
parameter dict, so a spec may estimate them as ``[parameters.B50]`` etc.):
``RN = 0.05 /day`` (normal T-cell reconstitution, weeks to months after
fludarabine/cyclophosphamide: ``N`` from 0.05 to ~0.2 in two weeks, ~0.85 in
two months), ``RB = 0 /day`` (no tumor growth over the kinetic window: the
model describes the cells, not relapse), ``B50 = 0.05`` (burden giving
half-maximal stimulation, in reference burdens: the tumor stops driving
expansion once ~95% of it is killed). Covariates (:data:`COVARIATE_DEFAULTS`):
``N0 = 0.05``, ``B0 = 1``. What CK data inform well: ``C0``, the expansion
rate, ``ALPHA``, ``FM``, ``BETA``; the peak (height and time) is set jointly
by ``KILL``, ``B50`` and ``KC``, which are separated only through the
covariates ``B0`` and ``N0`` varying between subjects. Estimated together on
100 patients of qPCR data, ``KILL`` and ``B50`` correlate at -0.97 and the
product of ``RHO`` and ``ln(1/N0)`` (the initial expansion rate) is all the
data see of either, which is why B50 is fixed and N0 needs an informative
prior (``models/cart_mechanistic.toml``).

Numerics: ``N``, ``E`` and ``B`` are integrated as logarithms (``y = (ln N,
ln E, M, ln B)``): they grow and shrink exponentially over orders of
magnitude, which RK4 follows far more accurately in the log (and they stay
positive); ``M`` is linear in itself and starts at 0, so it stays as is.
``phi`` is kept above a tiny positive number before its log. A dose record is
*not* a jump: the infusion enters through ``C0`` (the data layer's CMT 1 dose
row at ``t = 0`` only marks the start, as for the piecewise model).

Step size (``tests/structural/test_cart_ode.py``, against LSODA at rtol 1e-10, days
0.04-730, three parameter sets up to ~3/day expansion): a uniform
``max_step`` of 0.125 day keeps the levels within 1e-6 (relative); 0.25 day
gives ~1e-5, 0.5 day ~2e-4. The graded grid of :func:`ck_ode_nodes` (0.125
day to day 60, then ``max_step`` 2 days) reaches the same 1e-6 in ~800 steps
instead of ~5800; the gradient of the summed log levels of 100 subjects to
day 730 (pytensor C backend, compiled once) then costs ~50-90 ms, against
~0.5-0.75 s on the uniform grid (2 shared CPU cores).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

import numpy as np

from bayespk.structural._xp import _ns

__all__ = [
    "CELL_KINETICS_ODE",
    "FIT_GRID",
    "CONSTANTS",
    "COVARIATE_DEFAULTS",
    "TYPICAL_KIMMEL",
    "CellKineticsODE",
    "ck_ode_level",
    "ck_ode_nodes",
    "kimmel_initial",
    "kimmel_level",
    "kimmel_log_level",
    "kimmel_rhs",
]

#: Lower bound of quantities whose log is taken (homeostatic occupancy, levels).
TINY = 1e-300

#: Fixed values, overridden by a parameter of the same name (a spec may estimate them): normal T-cell
#: reconstitution and tumor growth rates (1/day), burden of half-maximal stimulation (reference burden).
CONSTANTS: dict[str, float] = {"RN": 0.05, "RB": 0.0, "B50": 0.05}

#: Baseline covariates: residual normal T cells after lymphodepletion (fraction of
#: normal), baseline tumor burden (units of the reference burden).
COVARIATE_DEFAULTS: dict[str, float] = {"N0": 0.05, "B0": 1.0}

#: Typical values giving a tisagenlecleucel-like curve (see the module docstring).
TYPICAL_KIMMEL: dict[str, float] = {
    "C0": 5.0,
    "GX": 0.5 * math.log(20.0) / 1.05 - 0.15,  # RHO = 0.5 at the reference (S_ref = 1 / 1.05, N_ref = 0.05)
    "KC": 5.0e4,
    "ALPHA": 0.15,
    "FM": 0.01,
    "BETA": 0.003,
    "KILL": 1.5e-4,
}


def _sigmoid(x, xp):
    if xp is np:
        from scipy.special import expit

        return expit(x)
    return xp.sigmoid(x)


def _constant(p, name):
    return p[name] if name in p else CONSTANTS[name]


def expansion_coefficient(p):
    """``RHO = (GX + ALPHA) / (S_ref ln(1 / N_ref))``: the Gompertz coefficient from the net rate ``GX``."""
    b50 = _constant(p, "B50")
    return (p["GX"] + p["ALPHA"]) * (1.0 + b50) / math.log(1.0 / COVARIATE_DEFAULTS["N0"])


def kimmel_rhs(y, driver, p):
    """``d/dt (ln N, ln E, M, ln B)`` (see the module docstring); ``driver`` is unused (``None``)."""
    log_n, log_e, m, log_b = y
    xp = _ns(*y, *p.values())
    rho = expansion_coefficient(p)
    n, e = xp.exp(log_n), xp.exp(log_e)
    phi = xp.maximum(n + (e + m) / p["KC"], TINY)
    free_space = -xp.log(phi)  # ln(1 / phi): > 0 while the space is not full
    stimulation = _sigmoid(log_b - xp.log(_constant(p, "B50")), xp)  # B / (B + B50)
    return [
        _constant(p, "RN") * free_space,
        rho * stimulation * free_space - p["ALPHA"],
        p["FM"] * p["ALPHA"] * e - p["BETA"] * m,
        _constant(p, "RB") - p["KILL"] * e,
    ]


def kimmel_initial(p, covariates: Mapping | None = None):
    """``(n_subjects, 4)`` initial states ``(ln N0, ln C0, 0, ln B0)``.

    ``covariates``: optional ``"N0"`` and ``"B0"`` (per-subject arrays or
    scalars, numpy or tensors); missing ones take :data:`COVARIATE_DEFAULTS`.
    ``C0``, ``N0`` and ``B0`` broadcast to one value per subject.
    """
    cov = {**COVARIATE_DEFAULTS, **dict(covariates or {})}
    c0, n0, b0 = p["C0"], cov["N0"], cov["B0"]
    xp = _ns(c0, n0, b0)
    if xp is np:
        c0, n0, b0 = np.broadcast_arrays(*(np.atleast_1d(np.asarray(v, float)) for v in (c0, n0, b0)))
        return np.stack([np.log(n0), np.log(c0), np.zeros_like(c0), np.log(b0)], axis=-1)
    zero = (xp.as_tensor_variable(c0) + n0 + b0) * 0.0  # (n_subjects,)
    return xp.stack([xp.log(n0) + zero, xp.log(c0) + zero, zero, xp.log(b0) + zero], axis=-1)


def kimmel_level(y, p=None):
    """Observed CAR-T level ``E + M`` (copies/ug) from states ``(..., 4)`` as :func:`integrate` returns them."""
    xp = _ns(y)
    return xp.exp(y[..., 1]) + y[..., 2]


def kimmel_log_level(y, p=None):
    """``ln(E + M)`` (for a log-normal likelihood), finite even where the level underflows."""
    xp = _ns(y)
    return xp.log(xp.maximum(kimmel_level(y, p), TINY))


@dataclass(frozen=True)
class CellKineticsODE:
    """A cellular-kinetics ODE model as data (like :class:`~bayespk.structural.pd.PDModel`).

    ``rhs(y, driver, params)`` has the :func:`~bayespk.structural.ode.integrate`
    signature (``y`` a tuple of ``(n_subjects,)`` states, no driver needed);
    ``initial(params, covariates=None) -> (n_subjects, n_states)`` is ``y0``;
    ``output(y, params)`` the observed level (copies/ug) and
    ``log_output(y, params)`` its log, from states ``(..., n_states)``. Shares
    ``central_cmt`` / ``depot_cmt`` with :class:`~bayespk.structural.cart.CellKinetics`
    (the infusion record and the levels are CMT 1). ``constants``: fixed values
    the right-hand side reads unless the parameter dict overrides them;
    ``covariates``: baseline covariates :attr:`initial` reads, with defaults.
    """

    name: str
    parameters: tuple[str, ...]
    states: tuple[str, ...]
    description: str
    rhs: Callable
    initial: Callable
    output: Callable
    log_output: Callable
    typical: dict[str, float] = field(default_factory=dict)
    constants: dict[str, float] = field(default_factory=dict)
    covariates: dict[str, float] = field(default_factory=dict)
    unit_parameters: tuple[str, ...] = ()  # fractions: logit-normal IIV, kept in (0, 1)
    central_cmt: int = 1
    depot_cmt: int | None = None

    @property
    def n_states(self) -> int:
        return len(self.states)

    @property
    def needs_ode(self) -> bool:
        return True

    @property
    def optional_parameters(self) -> tuple[str, ...]:
        """Inputs a spec may estimate instead: the covariate ``N0`` and the :attr:`constants`."""
        return tuple(k for k in self.covariates if k in self.unit_parameters) + tuple(self.constants)


CELL_KINETICS_ODE: dict[str, CellKineticsODE] = {
    m.name: m
    for m in (
        CellKineticsODE(
            name="cart_kimmel",
            parameters=("C0", "GX", "KC", "ALPHA", "FM", "BETA", "KILL"),
            states=("log_N", "log_E", "M", "log_B"),
            description="CAR-T mechanistic kinetics (after Kimmel 2021): Gompertz competition with normal "
            "T cells (N0 after lymphodepletion) for homeostatic space KC, antigen-driven expansion "
            "(net rate GX at t = 0 for a reference patient) B/(B + B50) stopped as the tumor is killed (KILL), "
            "effector contraction ALPHA with a "
            "fraction FM persisting as memory declining at BETA; level E + M from C0 at t = 0",
            rhs=kimmel_rhs,
            initial=kimmel_initial,
            output=kimmel_level,
            log_output=kimmel_log_level,
            typical=TYPICAL_KIMMEL,
            constants=CONSTANTS,
            covariates=COVARIATE_DEFAULTS,
            unit_parameters=("FM", "N0"),
        ),
    )
}


#: Grid the population model integrates on: 0.5-day steps to day 42 (expansion, peak, contraction),
#: then steps of at most 16 days (persistence). On the 100-patient study of models/cart_mechanistic.toml
#: the log-likelihood is within 0.05 of a 0.125/2-day grid's at the posterior mode (~2e-4 relative
#: in the levels), at a third of the cost of 0.25/4 days (5.8 against 17 ms per gradient).
FIT_GRID = {"fine_step": 0.5, "fine_until": 42.0, "max_step": 16.0}


def ck_ode_nodes(t_end: float, fine_until: float = 60.0, fine_step: float = 0.125) -> np.ndarray:
    """Extra grid nodes every ``fine_step`` days from 0 to ``min(fine_until, t_end)``.

    Give them with the observation times to
    :meth:`~bayespk.structural.ode.OdeGrid.build` and a larger ``max_step``
    (2 days) for the slow memory phase: a graded grid, fine where the kinetics
    are fast (expansion, peak, contraction). With the defaults the levels are
    within 1e-6 (relative) of a tight reference solution for the parameter
    sets of ``tests/structural/test_cart_ode.py``, in ~800 steps to day 730 instead of
    ~5800 with a uniform ``max_step = 0.125``.

    Examples
    --------
    >>> ck_ode_nodes(730.0, fine_until=1.0, fine_step=0.25)
    array([0.  , 0.25, 0.5 , 0.75, 1.  ])
    """
    stop = min(float(fine_until), float(t_end))
    n = int(np.floor(stop / fine_step + 1e-9))
    return np.arange(n + 1) * float(fine_step)


def _length(v):
    """Leading length of a per-subject value (1 for a scalar; None if a tensor's is unknown)."""
    shape = tuple(v.type.shape) if hasattr(v, "type") else np.shape(v)
    return shape[0] if shape else 1


def ck_ode_level(
    times,
    params,
    covariates=None,
    model="cart_kimmel",
    max_step=2.0,
    fine_step=0.125,
    fine_until=60.0,
    log=False,
):
    """Levels (copies/ug) at ``times`` days after the infusion, ``(n_subjects, n_times)``.

    Convenience for simulation and checks: integrates from ``t = 0`` on the
    graded grid through ``times`` and :func:`ck_ode_nodes` (``fine_until = 0``
    for a uniform grid of ``max_step``), then gathers the output (its log with
    ``log=True``). ``params``: name -> per-subject values (numpy arrays or
    scalars, or pytensor tensors with a static length); ``covariates`` as in
    :func:`kimmel_initial`. ``times`` are the same for every subject.

    Examples
    --------
    >>> level = ck_ode_level([0.0, 10.0, 365.0], TYPICAL_KIMMEL)
    >>> bool(level[0, 1] > 1000 * level[0, 0] > level[0, 2] > level[0, 0])
    True
    """
    from bayespk.structural.ode import OdeGrid, integrate

    m = CELL_KINETICS_ODE[model] if isinstance(model, str) else model
    times = np.asarray(times, float).ravel()
    xp = _ns(*params.values(), *(covariates or {}).values())
    if xp is np:
        params = {k: np.atleast_1d(np.asarray(v, float)) for k, v in params.items()}
    lengths = [_length(v) for v in (*params.values(), *(covariates or {}).values())]
    if any(n is None for n in lengths):
        raise ValueError("ck_ode_level needs per-subject parameters of a known (static) length")
    n_sub = max(lengths)
    if xp is np:
        params = {k: np.broadcast_to(v, (n_sub,)) for k, v in params.items()}
    required = (
        np.concatenate([times, ck_ode_nodes(times.max(), fine_until, fine_step)]) if fine_until > 0 else times
    )
    grid = OdeGrid.build([required] * n_sub, max_step=max_step)
    ys = integrate(m.rhs, m.initial(params, covariates), grid.h, params=params)
    states = ys[:, grid.index(0, times), :]  # one grid for all subjects
    return m.log_output(states, params) if log else m.output(states, params)
