"""Workloads of many independent fits or simulations, run on Dask (see :mod:`bayespk.parallel.runner`)."""

from bayespk.parallel.runner import Workload, run_tasks

__all__ = ["Workload", "run_tasks"]
