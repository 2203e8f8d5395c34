"""Simulation: virtual studies with known truth, and dosing regimens from a posterior for dose selection."""

from bayespk import _lazy_package

_lazy_package(__name__, {  # imported on first use (PEP 562): building the CLI parser needs no PyMC
    "METRICS": "bayespk.simulate.exposure:METRICS",
    "Target": "bayespk.simulate.exposure:Target",
    "exposure_overlap": "bayespk.simulate.exposure:exposure_overlap",
    "exposure_summary": "bayespk.simulate.exposure:exposure_summary",
    "interval_metrics": "bayespk.simulate.exposure:interval_metrics",
    "overlap_coefficient": "bayespk.simulate.exposure:overlap_coefficient",
    "prob_greater": "bayespk.simulate.exposure:prob_greater",
    "steady_state_profile": "bayespk.simulate.exposure:steady_state_profile",
    "target_attainment": "bayespk.simulate.exposure:target_attainment",
    "plot_regimens": "bayespk.simulate.plots:plot_regimens",
    "Regimen": "bayespk.simulate.regimen:Regimen",
    "RegimenSimulation": "bayespk.simulate.regimen:RegimenSimulation",
    "Step": "bayespk.simulate.regimen:Step",
    "read_regimen_file": "bayespk.simulate.regimen:read_regimen_file",
    "simulate_regimens": "bayespk.simulate.regimen:simulate_regimens",
    "virtual_subjects": "bayespk.simulate.regimen:virtual_subjects",
    "simulate_observations": "bayespk.simulate.study:simulate_observations",
    "study_design": "bayespk.simulate.study:study_design",
})

__all__ = [
    "METRICS", "Regimen", "RegimenSimulation", "Step", "Target", "exposure_overlap", "exposure_summary",
    "interval_metrics", "overlap_coefficient", "plot_regimens", "prob_greater", "read_regimen_file",
    "simulate_observations", "simulate_regimens", "steady_state_profile", "study_design", "target_attainment",
    "virtual_subjects",
]  # fmt: skip
