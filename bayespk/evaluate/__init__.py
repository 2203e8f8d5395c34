"""Model evaluation: parameter tables, convergence diagnostics, plots."""
