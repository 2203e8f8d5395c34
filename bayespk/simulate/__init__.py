"""Simulation: virtual studies with known truth, dosing regimens from a posterior (or the prior), virtual and
pediatric populations, and dose selection (dose_table)."""

from bayespk import _lazy_package

_lazy_package(__name__, {  # imported on first use (PEP 562): building the CLI parser needs no PyMC
    "DoseTable": "bayespk.simulate.doses:DoseTable",
    "dose_table": "bayespk.simulate.doses:dose_table",
    "METRICS": "bayespk.simulate.exposure:METRICS",
    "Target": "bayespk.simulate.exposure:Target",
    "exposure_overlap": "bayespk.simulate.exposure:exposure_overlap",
    "exposure_summary": "bayespk.simulate.exposure:exposure_summary",
    "interval_metrics": "bayespk.simulate.exposure:interval_metrics",
    "overlap_coefficient": "bayespk.simulate.exposure:overlap_coefficient",
    "prob_greater": "bayespk.simulate.exposure:prob_greater",
    "steady_state_profile": "bayespk.simulate.exposure:steady_state_profile",
    "target_attainment": "bayespk.simulate.exposure:target_attainment",
    "plot_dose_table": "bayespk.simulate.plots:plot_dose_table",
    "plot_regimens": "bayespk.simulate.plots:plot_regimens",
    "Regimen": "bayespk.simulate.regimen:Regimen",
    "RegimenSimulation": "bayespk.simulate.result:RegimenSimulation",
    "Step": "bayespk.simulate.regimen:Step",
    "read_regimen_file": "bayespk.simulate.regimen:read_regimen_file",
    "simulate_regimens": "bayespk.simulate.simulation:simulate_regimens",
    "fit_from_draws": "bayespk.simulate.draws:fit_from_draws",
    "prior_fit": "bayespk.simulate.draws:prior_fit",
    "growth_reference": "bayespk.simulate.population:growth_reference",
    "pediatric_population": "bayespk.simulate.population:pediatric_population",
    "virtual_subjects": "bayespk.simulate.population:virtual_subjects",
    "simulate_observations": "bayespk.simulate.study:simulate_observations",
    "study_design": "bayespk.simulate.study:study_design",
})

__all__ = [
    "METRICS", "DoseTable", "Regimen", "RegimenSimulation", "Step", "Target", "dose_table", "exposure_overlap",
    "exposure_summary", "fit_from_draws", "growth_reference", "interval_metrics", "overlap_coefficient",
    "pediatric_population", "plot_dose_table", "plot_regimens", "prior_fit", "prob_greater", "read_regimen_file",
    "simulate_observations", "simulate_regimens", "steady_state_profile", "study_design", "target_attainment",
    "virtual_subjects",
]  # fmt: skip
