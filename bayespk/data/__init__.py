"""Datasets: reading, validating, dosing events, bundled real data."""

from bayespk.data import bundled
from bayespk.data.design import Design
from bayespk.data.nonmem import Dataset, DataSummary, read_nonmem

__all__ = ["Dataset", "DataSummary", "Design", "bundled", "read_nonmem"]
