"""Structural (pure math) models: closed-form compartment solutions.

:data:`STRUCTURES` is the registry the model layer reads: for each structure
name, the parameters it needs, its compartment numbering (NONMEM ``CMT``) and
the function giving one dose's concentration contribution.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

from bayespk.structural.compartments import (
    bolus,
    first_order_absorption,
    infusion,
    one_compartment,
    superpose,
)
from bayespk.structural.multicompartment import (
    three_compartment,
    three_compartment_macro,
    two_compartment,
    two_compartment_macro,
)


@dataclass(frozen=True)
class Structure:
    """A structural model: its parameters, compartments and dose-response function."""

    name: str
    parameters: tuple[str, ...]
    central_cmt: int
    depot_cmt: int | None
    description: str
    contribution: Callable

    def dose_contribution(self, dt, amt, rate, into_depot, params: dict):
        """One dose's concentration contribution, with ``params`` keyed by parameter name."""
        args = [params[p] for p in self.parameters]
        return self.contribution(dt, amt, rate, into_depot, *args)


STRUCTURES: dict[str, Structure] = {
    s.name: s
    for s in (
        Structure(
            "1cmt_iv",
            ("CL", "V"),
            central_cmt=1,
            depot_cmt=None,
            description="one compartment (NONMEM ADVAN1): IV bolus doses, or zero-order "
            "infusions where RATE > 0; CMT 1 = central",
            contribution=one_compartment,
        ),
        Structure(
            "1cmt_oral",
            ("CL", "V", "KA"),
            central_cmt=2,
            depot_cmt=1,
            description="one compartment with first-order absorption (NONMEM ADVAN2): "
            "CMT 1 = depot, CMT 2 = central (IV bolus/infusion doses may go there)",
            contribution=one_compartment,
        ),
        Structure(
            "2cmt_iv",
            ("CL", "V1", "Q", "V2"),
            central_cmt=1,
            depot_cmt=None,
            description="two compartments (NONMEM ADVAN3): IV bolus doses, or zero-order "
            "infusions where RATE > 0; CMT 1 = central, CMT 2 = peripheral",
            contribution=two_compartment,
        ),
        Structure(
            "2cmt_oral",
            ("CL", "V1", "Q", "V2", "KA"),
            central_cmt=2,
            depot_cmt=1,
            description="two compartments with first-order absorption (NONMEM ADVAN4): "
            "CMT 1 = depot, CMT 2 = central (IV bolus/infusion doses may go there), "
            "CMT 3 = peripheral",
            contribution=two_compartment,
        ),
        Structure(
            "3cmt_iv",
            ("CL", "V1", "Q", "V2", "Q3", "V3"),
            central_cmt=1,
            depot_cmt=None,
            description="three compartments (NONMEM ADVAN11): IV bolus doses, or zero-order "
            "infusions where RATE > 0; CMT 1 = central, CMT 2 and 3 = peripheral",
            contribution=three_compartment,
        ),
        Structure(
            "3cmt_oral",
            ("CL", "V1", "Q", "V2", "Q3", "V3", "KA"),
            central_cmt=2,
            depot_cmt=1,
            description="three compartments with first-order absorption (NONMEM ADVAN12): "
            "CMT 1 = depot, CMT 2 = central (IV bolus/infusion doses may go there), "
            "CMT 3 and 4 = peripheral",
            contribution=three_compartment,
        ),
    )
}

__all__ = [
    "STRUCTURES",
    "Structure",
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
