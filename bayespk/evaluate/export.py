"""Export a fit as NONMEM-style tables (``bayespk export RUN_DIR --format nonmem``), for xpose / ggplot2.

Files written into ``out_dir``:

``sdtab`` and ``sdtab.csv``
    One row per observation in the likelihood, in the order of the data's
    rows: ``ID`` (as in the data), ``TIME``, ``TAD`` (time after the
    subject's last dose, ADDL repeats included; ``TIME`` before any dose),
    ``DV``, ``MDV`` (0), ``DVID`` (1: a PK observation ``DV``; a PD
    observation ``DV_PD`` of a PK/PD fit: the value its rows have in ``[model]
    pd_observations`` where that column is ``DVID``, else 2), ``CENS`` (0; 1
    BLQ; -1 right-censored), ``BLQ`` (1 where CENS = 1), ``PRED``, ``IPRED``,
    ``RES``, ``IWRES``, ``EPRED``, ``ECWRES``, ``NPDE`` (without
    ``npde=False``). The PD rows have the residuals of ``[pd_error]`` and
    their own replicates and NPDE (as ``bayespk vpc --pd``).
``patab`` and ``patab.csv``
    One row per subject: ``ID``, ``ETA_<P>`` for every parameter with IIV,
    the individual parameters ``<P>``, then the covariates of the data.
``run.ext`` and ``ext_names.csv``
    Posterior summaries in NONMEM's ``.ext`` layout, and what each column is.

Definitions (all Bayesian counterparts, not NONMEM's estimation-step values):

* ``PRED``: posterior median of the typical-subject prediction (eta = 0, the
  subject's covariates); ``IPRED``: posterior median of the individual
  prediction (:meth:`bayespk.fit.Fit.predict`, thinned to ``draws`` draws).
* ``RES = DV - PRED``.
* ``IWRES = (DV - IPRED) / SD``, with SD the residual SD of the fitted error
  model at ``IPRED`` and the posterior medians of its parameters
  (log scale for the lognormal model), as
  :func:`bayespk.evaluate.gof.gof_table`; NaN for censored rows.
* ``EPRED`` = mean, and ``ESD`` the SD (ddof = 1), of the observation over
  ``n_sim`` replicates of the study simulated with new subjects (posterior
  predictive, one posterior draw per replicate, residual error included,
  :func:`bayespk.evaluate.simulation.simulate_replicates`).
* ``ECWRES = (DV - EPRED) / ESD``: a posterior-predictive standardized
  residual, **not** NONMEM's CWRES (FOCE linearisation) nor its ECWRES or
  EWRES (decorrelated over the subject's observations): each observation is
  standardized by its own marginal predictive SD. NaN for censored rows.
* ``NPDE``: :func:`bayespk.evaluate.npde.npde` on the same replicates
  (decorrelated, censored rows imputed).
* ``ETA_<P>``: posterior mean of the subject's eta on ``P`` (log scale).
* individual parameters: posterior median at the subject's baseline
  covariates (:meth:`bayespk.fit.Fit.individual_parameters`).

``run.ext``: line 1 ``TABLE NO.     1: ...``, line 2 the header ``ITERATION
THETA1 ... SIGMA(1,1) ... OMEGA(1,1) ... OBJ``; row ``ITERATION =
-1000000000`` holds the posterior medians, row ``-1000000001`` the posterior
SDs (where NONMEM puts the estimates and their standard errors). THETAs are
the typical values, then the estimated covariate coefficients, treatment
multipliers and error scale factors (as sampled); ``OMEGA(i,i)`` the variance
``omega_P^2`` of each IIV eta (then of each IOV kappa), ``OMEGA(i,j)``
``omega_i omega_j corr_ij`` for ``[iiv] correlated`` parameters (else 0);
``SIGMA(i,i)`` the square of each residual error parameter (``sigma_add^2``
in concentration units squared, ``sigma_prop^2``, ``sigma_log^2``); ``OBJ``
``-2 log-likelihood`` of the data. Each statistic is taken over the draws of
the transformed quantity (``OMEGA(1,1)`` = median of the draws of
``omega^2``, equal to the square of the median of ``omega`` up to the
averaging of the two middle draws when their number is even).
``ext_names.csv`` maps every column to its bayespk name.

The whitespace tables follow NONMEM's ``$TABLE`` output: a ``TABLE NO.  1``
line, a header line, then one line per row, numbers in ``E`` format with 8
decimals; integer IDs print as integers and text IDs as written (quoted when
they hold whitespace).
"""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pandas as pd

from bayespk.errors import BayesPKError

__all__ = ["export_nonmem", "EXPORT_FORMATS", "write_nonmem_table"]

EXPORT_FORMATS = ("nonmem",)
ESTIMATE, SE = -1000000000, -1000000001  # NONMEM's .ext ITERATION codes for the estimate and its SE
EXT_TITLE = ("TABLE NO.     1: bayespk posterior summary: ITERATION -1000000000 = posterior median, "
             "-1000000001 = posterior SD: Goal Function=-2 LOG-LIKELIHOOD")
SDTAB_COLUMNS = ["ID", "TIME", "TAD", "DV", "MDV", "DVID", "CENS", "BLQ", "PRED", "IPRED", "RES", "IWRES",
                 "EPRED", "ECWRES", "NPDE"]


def export_nonmem(fit, out_dir: str | Path, *, draws: int | None = 400, n_sim: int = 500, npde: bool = True,
                  seed: int = 0) -> dict[str, Path]:
    """Write ``sdtab``, ``patab``, ``run.ext`` (and CSV copies, ``ext_names.csv``) into ``out_dir``.

    See the module docstring for the columns and their definitions.

    Parameters
    ----------
    fit : Fit
    out_dir : path
        Created if needed; files of the same names are replaced.
    draws : int or None
        Posterior draws (thinned to about this many; None: all) for PRED,
        IPRED and the individual parameters.
    n_sim : int
        Replicates of the study simulated for EPRED, ECWRES and NPDE.
    npde : bool
        Compute the NPDE column (else it is left out).
    seed : int

    Returns
    -------
    dict
        File name -> path written.
    """
    if not isinstance(n_sim, (int, np.integer)) or n_sim < 2:
        raise BayesPKError(f"n_sim must be an integer >= 2, got {n_sim!r}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sdtab = sdtab_table(fit, draws=draws, n_sim=n_sim, npde=npde, seed=seed)
    patab = patab_table(fit, draws=draws, seed=seed)
    ext, names = ext_table(fit)
    written = {}
    for name, table in (("sdtab", sdtab), ("patab", patab)):
        written[name] = write_nonmem_table(table, out / name)
        table.to_csv(out / f"{name}.csv", index=False)
        written[f"{name}.csv"] = out / f"{name}.csv"
    written["run.ext"] = write_nonmem_table(ext, out / "run.ext", title=EXT_TITLE, integer=("ITERATION",))
    names.to_csv(out / "ext_names.csv", index=False)
    written["ext_names.csv"] = out / "ext_names.csv"
    return written


# ------------------------------------------------------------------ tables
def sdtab_table(fit, *, draws: int | None = 400, n_sim: int = 500, npde: bool = True,
                seed: int = 0) -> pd.DataFrame:
    """The sdtab as a DataFrame (one row per observation, columns :data:`SDTAB_COLUMNS`): the PK
    observations, and the PD observations of a PK/PD fit, in the order of the data's rows."""
    model = fit.model
    in_likelihood = model.design.n_obs and model.pk_fit is None  # a sequential PK/PD fit: the PD observations
    parts = [_observation_rows(fit, False, draws, n_sim, npde, seed)] if in_likelihood else []
    if model.has_pd:
        parts.append(_observation_rows(fit, True, draws, n_sim, npde, seed))
    table = pd.concat(parts, ignore_index=True)
    return table.sort_values("_row", kind="stable").drop(columns="_row").reset_index(drop=True)


def _observation_rows(fit, pd_obs: bool, draws, n_sim, npde, seed) -> pd.DataFrame:
    """The sdtab rows of the PK (``pd_obs`` False) or PD observations, with their data row (``_row``)."""
    import matplotlib.pyplot as plt

    from bayespk.evaluate.gof import gof_table
    from bayespk.evaluate.npde import npde as compute_npde
    from bayespk.evaluate.simulation import simulate_replicates

    model = fit.model
    design = model.pd_design if pd_obs else model.design
    g = gof_table(fit, draws=draws, pd_obs=pd_obs)  # ID, TIME, DV, CENS, PRED, IPRED, IWRES (posterior medians)
    cens = g.CENS.to_numpy(int)
    dv = g.DV.to_numpy(float)
    reps = simulate_replicates(fit, n_sim, seed=seed, pd=pd_obs)
    sim = np.asarray(reps["DV_sim"].values, dtype=float)
    epred = sim.mean(axis=0)
    esd = sim.std(axis=0, ddof=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        ecwres = np.where((cens == 0) & (esd > 0), (dv - epred) / esd, np.nan)
    column, value = fit.spec.pd_observations if pd_obs else ("DVID", 1)
    dvid = (int(value) if float(value).is_integer() else value) if column == "DVID" else 2
    table = pd.DataFrame({
        "ID": g.ID.to_numpy(), "TIME": g.TIME.to_numpy(float), "TAD": design.last_dose()[0],
        "DV": dv, "MDV": 0, "DVID": dvid, "CENS": cens,
        "BLQ": (cens == 1).astype(int), "PRED": g.PRED.to_numpy(float), "IPRED": g.IPRED.to_numpy(float),
        "RES": dv - g.PRED.to_numpy(float), "IWRES": g.IWRES.to_numpy(float), "EPRED": epred, "ECWRES": ecwres,
    })  # fmt: skip
    if npde:
        result = compute_npde(fit, replicates=reps, seed=seed, pd_obs=pd_obs)
        plt.close(result.figure)
        table["NPDE"] = result.table.npde.to_numpy(float)
    table["_row"] = design.obs_row
    return table


def patab_table(fit, *, draws: int | None = 400, seed: int = 0) -> pd.DataFrame:
    """The patab as a DataFrame: ID, ETA_<P> (posterior means), individual parameters (medians),
    covariates (the subject's first value)."""
    post = fit.posterior
    ids = np.asarray(fit.tree["constant_data"]["ID"].values)
    table = pd.DataFrame({"ID": ids})
    for p, ps in fit.spec.parameters.items():
        if ps.iiv is not None:
            eta = post[f"eta_{p}"].mean(("chain", "draw"))
            table[f"ETA_{p}"] = pd.Series(eta.values, index=eta["ID"].values).reindex(ids).to_numpy()
    ind = fit.individual_parameters(draws=draws, seed=seed)
    for p in fit.spec.parameters:
        med = ind[p].median(("chain", "draw"))
        table[p] = (pd.Series(med.values, index=med["ID"].values).reindex(ids).to_numpy()
                    if "ID" in med.dims else np.broadcast_to(med.values, len(ids)))
    records = fit.tree["records"].to_dataset().to_dataframe()
    covs = [c for c in fit.model.data.covariates if not c.startswith("ETA_") and c not in table.columns]
    if covs:
        first = records.groupby("ID", sort=False)[covs].first().reindex(ids)
        for c in covs:
            table[c] = first[c].to_numpy()
    return table


def ext_table(fit) -> tuple[pd.DataFrame, pd.DataFrame]:
    """The .ext rows (posterior median, posterior SD) and the name map (column, parameter, quantity)."""
    spec = fit.spec
    post = fit.posterior.stack(sample=("chain", "draw")).transpose("sample", ...)
    columns: list[tuple[str, str, str, np.ndarray]] = []  # (ext column, bayespk name, quantity, draws)

    def flat(name: str):
        v = np.asarray(post[name].values, dtype=float).reshape(post.sizes["sample"], -1)
        scalar = v.shape[1] == 1 and post[name].ndim == 1
        labels = [name] if scalar else [f"{name}[{k}]" for k in range(v.shape[1])]
        return list(zip(labels, v.T))

    err_names = set()
    for err in (spec.error, spec.pd_error):
        if err is not None:
            err_names |= set(err.names)
    theta = [n for n in spec.population_parameters
             if not n.startswith(("omega_", "corr_")) and n not in err_names]
    k = 0
    for n in theta:
        for label, v in flat(n):
            k += 1
            what = "typical value" if n in spec.parameters else "as sampled (coefficient / factor)"
            columns.append((f"THETA{k}", label, what, v))
    k = 0
    for err in (spec.error, spec.pd_error):
        if err is None:
            continue
        for n in err.names:
            for label, v in flat(n):
                k += 1
                columns += [(f"SIGMA({k},{j})", "", "0 (independent residual errors)", np.zeros_like(v))
                            for j in range(1, k)]
                columns.append((f"SIGMA({k},{k})", label, f"variance: {label}^2", v ** 2))
    iiv = [p for p, ps in spec.parameters.items() if ps.iiv is not None]
    iov = [p for p, ps in spec.parameters.items() if ps.iov is not None]
    omegas = [(f"omega_{p}", p) for p in iiv] + [(f"omega_iov_{p}", p) for p in iov]
    sd = {name: np.asarray(post[name].values, float) for name, _ in omegas}
    for i, (name_i, p_i) in enumerate(omegas, start=1):
        for j, (name_j, p_j) in enumerate(omegas[:i], start=1):
            if i == j:
                columns.append((f"OMEGA({i},{j})", name_i, f"variance: {name_i}^2", sd[name_i] ** 2))
                continue
            corr = f"corr_{p_j}_{p_i}" if f"corr_{p_j}_{p_i}" in post else f"corr_{p_i}_{p_j}"
            both_iiv = name_i == f"omega_{p_i}" and name_j == f"omega_{p_j}"
            if both_iiv and corr in post:
                columns.append((f"OMEGA({i},{j})", corr, f"covariance: {name_i} * {name_j} * {corr}",
                                sd[name_i] * sd[name_j] * np.asarray(post[corr].values, float)))
            else:
                columns.append((f"OMEGA({i},{j})", "", "0 (not estimated)", np.zeros(post.sizes["sample"])))
    columns.append(("OBJ", "-2 log-likelihood", "-2 x the log-likelihood of the data", _minus2ll(fit)))
    names = pd.DataFrame([(c, n, q) for c, n, q, _ in columns], columns=["column", "parameter", "quantity"])
    ext = pd.DataFrame({"ITERATION": [ESTIMATE, SE]})
    for c, _, _, v in columns:
        ext[c] = [float(np.median(v)), float(np.std(v, ddof=1)) if len(v) > 1 else 0.0]
    return ext, names


def _minus2ll(fit) -> np.ndarray:
    """-2 x the total log-likelihood of the data per posterior draw (NaN when it cannot be computed)."""
    try:
        ll = fit.log_likelihood()
    except Exception:  # noqa: BLE001 - the OBJ column is informative only
        return np.full(fit.posterior.sizes["chain"] * fit.posterior.sizes["draw"], np.nan)
    total = 0
    for v in ll.data_vars:
        total = total + ll[v].sum([d for d in ll[v].dims if d not in ("chain", "draw")])
    return -2 * np.asarray(total.stack(sample=("chain", "draw")).values, float)


# ------------------------------------------------------------------ NONMEM table format
def write_nonmem_table(table: pd.DataFrame, path: str | Path, *, title: str = "TABLE NO.  1",
                       integer=("ID", "MDV", "DVID", "CENS", "BLQ")) -> Path:
    """Write ``table`` as a NONMEM ``$TABLE`` file: ``title``, a header line, whitespace-separated rows.

    Numbers in ``E`` format with 8 decimals (``NaN`` for missing), columns
    named in ``integer`` as integers when whole; text as written, in double
    quotes where it holds whitespace or is empty. Read it back in R with
    ``read.table(path, skip = 1, header = TRUE)`` or ``xpose::read_nm_tables``,
    in Python with ``pandas.read_csv(path, sep=r"\\s+", skiprows=1)``.
    """
    path = Path(path)
    cells = [[_cell(v, c in integer) for v in table[c]] for c in table.columns]
    widths = [max([len(str(c)), *(len(x) for x in col)]) + 2 for c, col in zip(table.columns, cells)]
    lines = [title, "".join(f"{c:>{w}}" for c, w in zip(table.columns, widths))]
    for r in range(len(table)):
        lines.append("".join(f"{col[r]:>{w}}" for col, w in zip(cells, widths)))
    path.write_text("\n".join(lines) + "\n")
    return path


def _cell(v, integer: bool) -> str:
    if isinstance(v, (bool, np.bool_)):
        return str(int(v))
    if isinstance(v, (int, np.integer)):
        return str(int(v)) if integer else f"{float(v): .8E}".strip()
    if isinstance(v, (float, np.floating)):
        x = float(v)
        if math.isnan(x):
            return "NaN"
        if integer and x.is_integer() and abs(x) < 2**63:
            return str(int(x))
        return f"{x:.8E}"
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "NaN"
    s = str(v)
    if s == "" or any(ch.isspace() for ch in s) or '"' in s:
        return '"' + s.replace('"', "'") + '"'
    return s
