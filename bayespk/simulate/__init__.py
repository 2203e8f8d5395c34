"""Simulation: virtual studies with known truth, and dosing regimens from a posterior for dose selection."""

from bayespk.simulate.exposure import (
    METRICS,
    Target,
    exposure_overlap,
    exposure_summary,
    interval_metrics,
    overlap_coefficient,
    prob_greater,
    steady_state_profile,
    target_attainment,
)
from bayespk.simulate.plots import plot_regimens
from bayespk.simulate.regimen import (
    Regimen,
    RegimenSimulation,
    Step,
    read_regimen_file,
    simulate_regimens,
    virtual_subjects,
)
from bayespk.simulate.study import simulate_observations, study_design

__all__ = [
    "METRICS", "Regimen", "RegimenSimulation", "Step", "Target", "exposure_overlap", "exposure_summary",
    "interval_metrics", "overlap_coefficient", "plot_regimens", "prob_greater", "read_regimen_file",
    "simulate_observations", "simulate_regimens", "steady_state_profile", "study_design", "target_attainment",
    "virtual_subjects",
]  # fmt: skip
