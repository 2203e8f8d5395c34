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
    )
}

__all__ = [
    "STRUCTURES",
    "Structure",
    "bolus",
    "infusion",
    "first_order_absorption",
    "one_compartment",
    "superpose",
]
