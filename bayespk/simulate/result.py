"""The result of a regimen simulation: exposures per regimen, subject and draw, their summaries, target
attainment, exposure overlap and plots (:class:`RegimenSimulation`)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import xarray as xr

from bayespk.errors import SpecError
from bayespk.simulate.exposure import (
    METRICS,
    exposure_overlap,
    exposure_summary,
    metric_name,
    target_attainment,
)

__all__ = ["RegimenSimulation"]


# ---------------------------------------------------------------------- result
@dataclass
class RegimenSimulation:
    """Exposure metrics of simulated regimens: per regimen, subject and posterior draw.

    Attributes
    ----------
    metrics : xarray.Dataset
        One variable per metric (:data:`~bayespk.simulate.exposure.METRICS`),
        dims ``(regimen, subject, draw)``.
    subjects : DataFrame
        One row per simulated subject (``subject`` 0..n-1): ``source_id`` (the
        fitted subject it is, or was resampled from; NaN when drawn) and the
        covariate columns.
    regimens : list of Regimen
    profiles : DataFrame
        Concentration bands per regimen: ``regimen, time, median, lower, upper``
        (over subjects and draws pooled; ``info["band"]`` interval).
    concentrations : dict or None
        With ``keep_concentrations``: per regimen label an xarray DataArray
        (subject, draw, time) of every simulated curve.
    info : dict
        Settings and measurements: population, etas, n_subjects, n_draws,
        ``posterior_draws`` (the draws used, as positions in the posterior
        stacked over chain and draw), seed, intervals and grid steps per
        regimen, threshold, wall seconds, throughput (subject-regimens per second).
    """

    metrics: xr.Dataset
    subjects: pd.DataFrame
    regimens: list = field(default_factory=list)
    profiles: pd.DataFrame | None = None
    concentrations: dict | None = None
    info: dict = field(default_factory=dict)

    @classmethod
    def from_arrays(cls, values: Mapping[str, Mapping[str, np.ndarray]], subjects: pd.DataFrame | None = None,
                    regimens=None) -> RegimenSimulation:
        """Build from ``{regimen label: {metric: array (subjects, draws)}}`` (for tests and own analyses)."""
        labels = list(values)
        names = list(dict.fromkeys(m for v in values.values() for m in v))
        shape = np.shape(next(iter(values[labels[0]].values())))
        data = {}
        for m in names:
            canon = metric_name(m)
            data[canon] = (("regimen", "subject", "draw"),
                           np.stack([np.asarray(values[r].get(m, np.full(shape, np.nan)), float) for r in labels]))
        ds = xr.Dataset(data, coords={"regimen": labels, "subject": np.arange(shape[0]), "draw": np.arange(shape[1])})
        if subjects is None:
            subjects = pd.DataFrame({"source_id": np.full(shape[0], np.nan)})
        return cls(ds, subjects.reset_index(drop=True), list(regimens or []))

    # -------------------------------------------------------------- access
    @property
    def labels(self) -> list[str]:
        return [str(x) for x in self.metrics.regimen.values]

    @property
    def n_subjects(self) -> int:
        return self.metrics.sizes["subject"]

    @property
    def n_draws(self) -> int:
        return self.metrics.sizes["draw"]

    @property
    def metric_names(self) -> list[str]:
        """Metrics with at least one value (T_above needs a threshold, *_ss a steady state)."""
        return [m for m in METRICS if m in self.metrics and np.isfinite(self.metrics[m].values).any()]

    def check_metric(self, name: str) -> str:
        m = metric_name(name)
        if m not in self.metric_names:
            why = " (give a threshold)" if m.startswith(("T_above", "f_above")) else ""
            raise SpecError(f"metric {m} was not computed in this simulation{why}; available: "
                            f"{', '.join(self.metric_names)}")
        return m

    def values(self, regimen: str, metric: str) -> np.ndarray:
        """(subjects, draws) array of one metric under one regimen."""
        if regimen not in self.labels:
            raise SpecError(f"regimen {regimen!r}: not simulated; regimens are {', '.join(self.labels)}")
        return self.metrics[self.check_metric(metric)].sel(regimen=regimen).values

    def grid_step(self, regimen: str, metric: str) -> float:
        steps = self.info.get("grid_step", {}).get(regimen)
        if not steps:
            return np.nan
        return steps["ss" if metric.endswith("_ss") else "interval"]

    def ordered_labels(self, order=None) -> list[str]:
        """Regimen labels by maintenance dose rate (dose / II, then dose), or in the given order."""
        if order is not None:
            order = list(order)
            unknown = [o for o in order if o not in self.labels]
            if unknown:
                raise SpecError(f"order: regimen {unknown[0]!r} was not simulated; regimens are "
                                f"{', '.join(self.labels)}")
            return order
        if len(self.regimens) == len(self.labels):
            by_label = {r.label: r for r in self.regimens}
            return sorted(self.labels, key=lambda lb: (by_label[lb].dose_rate, by_label[lb].dose))
        return self.labels

    def to_frame(self) -> pd.DataFrame:
        """Long table: one row per regimen, subject and draw, a column per metric, and the covariates."""
        df = self.metrics[self.metric_names].to_dataframe().reset_index()
        return df.merge(self.subjects.rename_axis("subject").reset_index(), on="subject", how="left")

    # -------------------------------------------------------------- tables and plots
    def summary(self, metrics=None, *, by=None, bins=4, ci=0.9) -> pd.DataFrame:
        """Exposure per regimen and stratum; see :func:`~bayespk.simulate.exposure.exposure_summary`."""
        return exposure_summary(self, metrics, by=by, bins=bins, ci=ci)

    def attainment(self, targets, *, by=None, bins=4, ci=0.9) -> pd.DataFrame:
        """Target attainment; see :func:`~bayespk.simulate.exposure.target_attainment`."""
        return target_attainment(self, targets, by=by, bins=bins, ci=ci)

    def overlap(self, metrics=("AUC", "Cmax", "Cmin"), *, order=None, ci=0.9) -> pd.DataFrame:
        """Overlap of neighbouring regimens; see :func:`~bayespk.simulate.exposure.exposure_overlap`."""
        metrics = [m for m in ([metrics] if isinstance(metrics, str) else metrics)]
        return exposure_overlap(self, metrics, order=order, ci=ci)

    def plot(self, targets=None, **kwargs):
        """Concentration bands and target attainment; see :func:`bayespk.simulate.plots.plot_regimens`."""
        from bayespk.simulate.plots import plot_regimens

        return plot_regimens(self, targets, **kwargs)

    def __repr__(self) -> str:
        return (f"RegimenSimulation({len(self.labels)} regimens x {self.n_subjects} subjects x {self.n_draws} draws: "
                f"{', '.join(self.labels)})")


