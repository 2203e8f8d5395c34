"""Simulation: virtual studies with known truth (and, later, regimens from a posterior)."""

from bayespk.simulate.study import simulate_observations, study_design

__all__ = ["simulate_observations", "study_design"]
