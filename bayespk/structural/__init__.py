"""Structural (pure math) models: closed-form compartment solutions and CAR-T kinetics.

:data:`STRUCTURES` is the registry the model layer reads: for each structure
name, the parameters it needs, its compartment numbering (NONMEM ``CMT``) and
the function giving one dose's concentration contribution (linear PK), or the
cellular level since the infusion (:class:`~bayespk.structural.cart.CellKinetics`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from bayespk.structural.cart import CELL_KINETICS, CellKinetics
from bayespk.structural.cart_ode import CELL_KINETICS_ODE, CellKineticsODE
from bayespk.structural.compartments import (
    bolus,
    first_order_absorption,
    infusion,
    one_compartment,
    one_compartment_macro,
    superpose,
)
from bayespk.structural.dosing import dose_record, record_timing
from bayespk.structural.multicompartment import (
    three_compartment,
    three_compartment_macro,
    two_compartment,
    two_compartment_macro,
)

#: Optional parameters any structure may add (NONMEM's ALAG1/F1 of the depot, D1/R1 of a
#: zero-order input into the central compartment): name -> (meaning, needs a depot).
OPTIONAL_PARAMETERS: dict[str, tuple[str, bool]] = {
    "TLAG": ("absorption lag time of doses into the depot", True),
    "F": ("bioavailability of doses into the depot (multiplies AMT)", True),
    "D1": ("duration of zero-order input for dose records with RATE = -2", False),
    "R1": ("rate of zero-order input for dose records with RATE = -1", False),
}


@dataclass(frozen=True)
class Structure:
    """A linear structural model: its parameters, compartments and macro constants.

    ``macro`` maps the disposition parameters (all but ``KA``) to the eigenvalues
    and unit-bolus coefficients of the central concentration; the dose records
    are then evaluated by :func:`bayespk.structural.dosing.dose_record`.
    """

    name: str
    parameters: tuple[str, ...]
    central_cmt: int
    depot_cmt: int | None
    description: str
    macro: Callable

    @property
    def optional_parameters(self) -> tuple[str, ...]:
        """Optional parameters this structure accepts (see :data:`OPTIONAL_PARAMETERS`)."""
        return tuple(p for p, (_, depot) in OPTIONAL_PARAMETERS.items() if self.depot_cmt or not depot)

    def dose_contribution(self, x, amt, rate, into_depot, params: dict, ii=0.0, n_prev=0.0, ss=False,
                          infusion=None):
        """Concentration from dose records, with ``params`` keyed by parameter name.

        Without ``ii``/``n_prev``/``ss``: one dose given ``x`` ago. With them: a
        whole record (see :func:`~bayespk.structural.dosing.dose_record`, which
        also explains ``infusion``).
        """
        disposition = [params[p] for p in self.parameters if p != "KA"]
        lambdas, coefs = self.macro(*disposition)
        return dose_record(x, amt, rate, into_depot, ii, n_prev, ss, lambdas, coefs, disposition[1],
                           params.get("KA"), infusion=infusion)


STRUCTURES: dict[str, Structure | CellKinetics | CellKineticsODE] = {
    s.name: s
    for s in (
        Structure(
            "1cmt_iv",
            ("CL", "V"),
            central_cmt=1,
            depot_cmt=None,
            description="one compartment (NONMEM ADVAN1): IV bolus doses, or zero-order "
            "infusions where RATE > 0; CMT 1 = central",
            macro=one_compartment_macro,
        ),
        Structure(
            "1cmt_oral",
            ("CL", "V", "KA"),
            central_cmt=2,
            depot_cmt=1,
            description="one compartment with first-order absorption (NONMEM ADVAN2): "
            "CMT 1 = depot, CMT 2 = central (IV bolus/infusion doses may go there)",
            macro=one_compartment_macro,
        ),
        Structure(
            "2cmt_iv",
            ("CL", "V1", "Q", "V2"),
            central_cmt=1,
            depot_cmt=None,
            description="two compartments (NONMEM ADVAN3): IV bolus doses, or zero-order "
            "infusions where RATE > 0; CMT 1 = central, CMT 2 = peripheral",
            macro=two_compartment_macro,
        ),
        Structure(
            "2cmt_oral",
            ("CL", "V1", "Q", "V2", "KA"),
            central_cmt=2,
            depot_cmt=1,
            description="two compartments with first-order absorption (NONMEM ADVAN4): "
            "CMT 1 = depot, CMT 2 = central (IV bolus/infusion doses may go there), "
            "CMT 3 = peripheral",
            macro=two_compartment_macro,
        ),
        Structure(
            "3cmt_iv",
            ("CL", "V1", "Q", "V2", "Q3", "V3"),
            central_cmt=1,
            depot_cmt=None,
            description="three compartments (NONMEM ADVAN11): IV bolus doses, or zero-order "
            "infusions where RATE > 0; CMT 1 = central, CMT 2 and 3 = peripheral",
            macro=three_compartment_macro,
        ),
        Structure(
            "3cmt_oral",
            ("CL", "V1", "Q", "V2", "Q3", "V3", "KA"),
            central_cmt=2,
            depot_cmt=1,
            description="three compartments with first-order absorption (NONMEM ADVAN12): "
            "CMT 1 = depot, CMT 2 = central (IV bolus/infusion doses may go there), "
            "CMT 3 and 4 = peripheral",
            macro=three_compartment_macro,
        ),
    )
} | CELL_KINETICS | CELL_KINETICS_ODE

__all__ = [
    "CellKinetics",
    "CellKineticsODE",
    "OPTIONAL_PARAMETERS",
    "STRUCTURES",
    "Structure",
    "dose_record",
    "record_timing",
    "bolus",
    "infusion",
    "first_order_absorption",
    "one_compartment",
    "two_compartment",
    "two_compartment_macro",
    "three_compartment",
    "three_compartment_macro",
    "superpose",
]
