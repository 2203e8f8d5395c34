"""A self-contained HTML report of a fit: model, data, priors, parameters, convergence, VPC, pcVPC, GOF,
NPDE, LOO.

The VPC and the pcVPC share their x axis (``x``: TIME, TAD or a dataset
column) and strata (``strat``, ``strat_labels``), as ``bayespk vpc``; the
caption under each names its x axis with its unit.

The model equations and the prior table are generated from the fit's spec
(:mod:`bayespk.model.describe`); the data section from the data summary the
fit stored and its records. Flagged diagnostics come with a sentence on what
they mean and what to do (convergence, shrinkage > 30%, Pareto k > 0.7). No
absolute local path is written: the data file is named by its file name.

Figures are embedded as base64 PNG, so the single file can be mailed or
archived. Everything is read from the Fit (its DataTree and spec).

Each section is built on its own. One that fails for a reason in the user's
data or options (a :class:`~bayespk.errors.BayesPKError`, e.g. a
prediction-corrected VPC with nothing left to correct) is replaced by a
visible box naming the section and the message, the rest of the report is
still written, and the failure is passed to ``warn`` (default: a
:class:`ReportSectionWarning`; ``bayespk report`` prints one line per failed
section on stderr and exits 0). Any other exception is a bug in bayespk and
propagates: no report is written (``bayespk report`` exits 1).
"""

from __future__ import annotations

import base64
import html
import io
import json
import os
import warnings
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import pandas as pd

from bayespk.data.nonmem import COMMENT_ROWS
from bayespk.diagnostics import BFMI_MIN, ESS_PER_CHAIN, RHAT_MAX
from bayespk.errors import BayesPKError
from bayespk.evaluate.compare import LOO_K_THRESHOLD, loo
from bayespk.evaluate.gof import eta_covariates, gof, prior_posterior
from bayespk.evaluate.npde import npde
from bayespk.evaluate.plots import plot_individual
from bayespk.evaluate.vpc import vpc
from bayespk.model.describe import equations, prior_table

__all__ = ["write_report", "render_report", "ReportSectionWarning"]


class ReportSectionWarning(UserWarning):
    """A section of the report could not be built (a user-data error); the report was written without it."""

CSS = """
body { font-family: system-ui, -apple-system, 'Segoe UI', sans-serif; margin: 2em auto; max-width: 1100px;
       color: #222; line-height: 1.45; padding: 0 1em; }
h1 { font-size: 1.6em; margin-bottom: 0.2em; } h2 { border-bottom: 1px solid #ddd; padding-bottom: 0.2em; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: right; }
th { background: #f3f3f3; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
.ok { color: #17692e; font-weight: 600; } .poor { color: #b00020; font-weight: 600; }
.meta { color: #666; font-size: 0.9em; } nav a { margin-right: 1em; }
.note { color: #7a4b00; }
.section-failed { border: 2px solid #b00020; background: #fdecee; color: #222; padding: 0.6em 1em; margin: 0.8em 0; }
.section-failed strong { color: #b00020; }
pre.equations { background: #f8f8f8; border: 1px solid #e4e4e4; padding: 0.5em 0.8em; font-size: 0.92em;
                white-space: pre-wrap; }
ul.explain li { margin-bottom: 0.3em; }
"""

SCRIPT = """
window.addEventListener('load', function () {
  var imgs = Array.prototype.slice.call(document.images);
  var ok = imgs.filter(function (i) { return i.complete && i.naturalWidth > 0; }).length;
  document.body.setAttribute('data-images', ok + '/' + imgs.length);
});
"""


def _png(fig) -> str:
    import matplotlib.pyplot as plt

    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=90, bbox_inches="tight")
    plt.close(fig)
    return '<img alt="figure" src="data:image/png;base64,' + base64.b64encode(buf.getvalue()).decode() + '">'


def _table(df: pd.DataFrame, digits: int = 4) -> str:
    fmt = lambda v: f"{v:.{digits}g}" if isinstance(v, float) else html.escape(str(v))  # noqa: E731
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{fmt(v)}</td>" for v in row) + "</tr>" for row in df.itertuples(index=False))
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def render_report(fit, *, n_rep: int = 200, n_sim: int = 500, seed: int = 0, pred_corr: bool = True,
                  lower_bound: float = 0.0, x: str = "TIME", strat: str | None = None,
                  strat_labels: dict | None = None, progress=None, warn=None) -> str:
    """The report as an HTML string (see :func:`write_report`)."""
    step = progress or (lambda msg: None)
    spec = fit.spec
    sections: list[tuple[str, str, str]] = []
    failures: list[tuple[str, str]] = []
    if warn is None:
        def warn(title, message):
            warnings.warn(f"report section {title!r} failed: {message}", ReportSectionWarning, stacklevel=4)

    def section(anchor: str, title: str, build) -> None:
        """Add a section built by ``build()``; a user-data error becomes a visible failure box."""
        import matplotlib.pyplot as plt

        before = set(plt.get_fignums())
        try:
            content = build()
        except BayesPKError as e:
            for num in set(plt.get_fignums()) - before:  # figures of the failed section
                plt.close(num)
            message = _no_local_paths(str(e), spec)
            failures.append((title, message))
            warn(title, message)
            content = _failure_box(title, message)
        sections.append((anchor, title, content))

    step("model, data and priors")
    section("model", "Model", lambda: _model_section(spec))
    section("data", "Data", lambda: _data_section(fit))
    section("prior-table", "Priors", lambda: (
        "<p>The prior of every estimated quantity, as the fit used it (defaults filled in). Typical values of "
        "parameters given by <code>guess</code> have LogNormal(ln guess, 1).</p>" + _table(prior_table(spec))))

    step("parameter table")
    section("parameters", "Population parameters", lambda: (
        "<p>Typical values on their natural scale; <code>omega_*</code> are IIV SDs on the log scale; "
        "q5/q95 bound the 90% credible interval.</p>" + _table(fit.summary())))
    diag: dict = {}

    def convergence() -> str:
        diag.update(fit.diagnostics())
        status = "ok" if not diag["problems"] else "poor"
        interrupted = "" if not diag.get("interrupted") else (
            f'<p class="poor">INTERRUPTED: sampling was stopped by {html.escape(str(diag.get("signal")))} after '
            f'{diag.get("draws_kept")} of {diag.get("draws_requested")} draws per chain; every result in this report '
            "is provisional. Refit to completion.</p>")
        conv = pd.DataFrame([
            ("divergences", diag["divergences"], "0"),
            ("max R-hat", f"{diag['max_r_hat']:.4f} ({diag['max_r_hat_parameter']})", "<= 1.01"),
            ("min bulk ESS", f"{diag['min_ess_bulk']:.0f} ({diag['min_ess_bulk_parameter']})",
             f">= {100 * diag['chains']}"),
            ("min tail ESS", f"{diag['min_ess_tail']:.0f} ({diag['min_ess_tail_parameter']})",
             f">= {100 * diag['chains']}"),
            ("min E-BFMI", f"{diag['min_bfmi']:.2f}", ">= 0.3"),
        ], columns=["diagnostic", "value", "target"])  # fmt: skip
        return (interrupted + f'<p class="{status}">Convergence: {"OK" if status == "ok" else "POOR"}</p>'
                + _convergence_explained(diag)
                + _table(conv)
                + f'<p class="meta">{diag["chains"]} chains x {diag["draws"]} draws, sampler {diag.get("sampler")}, '
                  f'seed {diag.get("seed")}, {diag.get("wall_seconds", float("nan")):.1f} s including '
                  f'{diag.get("compile_seconds", float("nan")):.1f} s compilation.</p>')

    section("convergence", "Convergence diagnostics", convergence)

    step(f"VPC ({n_rep} replicates)")
    replicates: dict = {}

    def reps():
        """The replicates shared by the VPC and the pcVPC, simulated once (a failure is raised to both)."""
        if not replicates:
            from bayespk.evaluate.simulation import simulate_replicates

            try:
                replicates["value"] = simulate_replicates(fit, n_rep, seed=seed)
            except BayesPKError as e:
                replicates["error"] = e
        if "error" in replicates:
            raise replicates["error"]
        return replicates["value"]

    axes: dict[str, Any] = dict(x=x, strat=strat, strat_labels=strat_labels)  # the x axis and strata of both VPCs

    def plain_vpc() -> str:
        v = vpc(fit, replicates=reps(), **axes)
        return ("<p>Observed percentiles (lines) against the 90% interval of the same percentiles over "
                f"{n_rep} replicates of the study simulated with new subjects (bands).</p>"
                + _vpc_axes(v.settings, "vpc") + _png(v.figure))

    section("vpc", "Visual predictive check", plain_vpc)

    if pred_corr:
        step("prediction-corrected VPC")

        def pcvpc() -> str:
            pc = vpc(fit, replicates=reps(), pred_corr=True, lower_bound=lower_bound, **axes)
            note = pc.settings.get("exclusion_note")
            return ("<p>Observed and simulated values scaled to the median typical-subject prediction (PRED) of "
                    f"their bin (Bergstrand et al. 2011, lower bound {lower_bound:g}). An observation with PRED "
                    f"&lt;= {lower_bound:g} has no correction: it is left out, with its simulated values, and "
                    "counted.</p>" + _vpc_axes(pc.settings, "pcvpc")
                    + (f'<p class="note" id="pcvpc-excluded" data-excluded="{pc.settings["n_excluded"]}">'
                       f"{html.escape(note)}.</p>" if note else "")
                    + _png(pc.figure))

        section("pcvpc", "Prediction-corrected VPC", pcvpc)

    step("goodness of fit")

    def gof_section() -> str:
        g = gof(fit)
        fig_ind, _ = plot_individual(fit, ids=list(fit.model.design.subject_ids[:12]))
        return (_png(g.figure) + "<h3>Eta shrinkage</h3>" + _table(g.shrinkage) + _shrinkage_note(g.shrinkage)
                + "<h3>Individual fits (first 12 subjects)</h3>" + _png(fig_ind))

    section("gof", "Goodness of fit", gof_section)

    step(f"NPDE ({n_sim} simulations)")

    def npde_section() -> str:
        n = npde(fit, n_sim=n_sim, seed=seed)
        tests = n.tests.rename_axis("test").reset_index()
        return ("<p>Should be N(0, 1): mean and variance tests, Shapiro-Wilk normality, and the global "
                "test (3 x the smallest p-value). Trends against time or prediction show misfit that "
                "the global tests can miss.</p>" + _png(n.figure) + _table(tests))

    section("npde", "Normalised prediction distribution errors", npde_section)

    if fit.model.has_pd:
        step("PD observations: VPC, goodness of fit, NPDE")

        def pd_checks() -> str:
            from bayespk.evaluate.simulation import simulate_replicates

            pd_reps = simulate_replicates(fit, max(n_rep, n_sim), seed=seed, pd=True)  # one set for VPC and NPDE
            v = vpc(fit, replicates=pd_reps.isel(rep=slice(0, n_rep)), pd_obs=True, **axes)
            g = gof(fit, pd_obs=True)
            n = npde(fit, replicates=pd_reps.isel(rep=slice(0, n_sim)), seed=seed, pd_obs=True)
            tests = n.tests.rename_axis("test").reset_index()
            return ("<p>The PD observations (residual error <code>[pd_error]</code>), checked as the "
                    "concentrations above: the VPC of the same replicates' PD values, the goodness-of-fit "
                    "panels and the NPDE.</p><h3>Visual predictive check</h3>" + _vpc_axes(v.settings, "pd-vpc")
                    + _png(v.figure) + "<h3>Goodness of fit</h3>" + _png(g.figure) + "<h3>NPDE</h3>"
                    + _png(n.figure) + _table(tests))

        section("pd", "PD observations", pd_checks)

    step("covariates and priors")
    section("covariates", "Etas vs covariates", lambda: _png(eta_covariates(fit)[0]))

    def priors() -> str:
        fig_pp, pp = prior_posterior(fit)
        _thin_ticks(fig_pp)
        return _png(fig_pp) + _table(pp)

    section("priors", "Prior vs posterior", priors)

    step("LOO")

    def loo_section() -> str:
        with warnings.catch_warnings():  # fewer than 25 draws: a BayesPKError, a failure box
            warnings.simplefilter("ignore")
            lo = loo(fit)
        k = pd.Series(lo.pareto_k.values.ravel() if hasattr(lo.pareto_k, "values") else lo.pareto_k)
        return (_table(pd.DataFrame([{"elpd_loo": float(lo.elpd), "se": float(lo.se), "p_loo": float(lo.p),
                                      "n": int(k.size), f"Pareto k > {LOO_K_THRESHOLD}":
                                      int((k > LOO_K_THRESHOLD).sum())}]))
                + _pareto_note(fit, k.to_numpy()))

    section("loo", "PSIS-LOO", loo_section)

    summary = json.loads(fit.tree.attrs.get("bayespk_data_summary", "{}"))
    meta = (f'<p class="meta">{html.escape(spec.structure)}, {html.escape(spec.error.model)} error; data '
            f'{html.escape(_data_name(spec))}: {summary.get("n_subjects", "?")} subjects, '
            f'{summary.get("n_observations", "?")} observations; generated '
            f'{datetime.now(timezone.utc):%Y-%m-%d %H:%M UTC} by bayespk.</p>' + _provenance(diag))
    if failures:
        meta += (f'<p class="poor" id="failed-sections">{len(failures)} section{"s" if len(failures) != 1 else ""} '
                 "could not be built: " + ", ".join(html.escape(t) for t, _ in failures) + " (see below).</p>")
    nav = "<nav>" + "".join(f'<a href="#{a}">{html.escape(t)}</a>' for a, t, _ in sections) + "</nav>"
    body = "".join(f'<section id="{a}"><h2>{html.escape(t)}</h2>{c}</section>' for a, t, c in sections)
    return (f"<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>{html.escape(spec.name)} - "
            f"bayespk report</title><style>{CSS}</style><script>{SCRIPT}</script></head><body>"
            f"<h1>{html.escape(spec.name)}</h1>{meta}{nav}{body}</body></html>")


# ----------------------------------------------------------------------------- model, data, notes
SHRINKAGE_NOTE = 0.3  # eta shrinkage above which eta-based diagnostics are unreliable (Savic & Karlsson 2009)
MAX_LISTED_RECORDS = 200


def _model_section(spec) -> str:
    """The model equations (generated from the spec), one block per part of the model."""
    blocks: dict[str, list[str]] = {}
    for block, text in equations(spec):
        blocks.setdefault(block, []).append(text)
    intro = ("<p>Generated from the spec the fit ran with. Names are those of the parameter table; <code>_i</code> "
             "is subject i, <code>_ij</code> its j-th observation.</p>")
    return intro + "".join(f'<h3>{html.escape(b)}</h3><pre class="equations">'
                           + html.escape("\n".join(lines)) + "</pre>" for b, lines in blocks.items())


def _vpc_axes(settings: dict, anchor: str) -> str:
    """The caption line of a VPC figure: what its x axis is (the axis label, with its unit) and its strata."""
    x_name = settings.get("x", "TIME")
    how = {"TIME": "TIME of the data", "TAD": "TAD: time after the most recent dose, from the dose records"}.get(
        x_name, f"dataset column {x_name}")
    text = (f"x axis: {html.escape(settings.get('x_label') or x_name)} ({html.escape(how)}); bins are placed on "
            "it.")
    if settings.get("strat"):
        titles = [t for t in (settings.get("strat_titles") or {}).values() if t]
        text += (f" Stratified by {html.escape(str(settings['strat']))}, one panel per value"
                 + (f": {html.escape('; '.join(titles))}" if titles else "") + ".")
    return f'<p class="meta" id="{anchor}-axes" data-x="{html.escape(x_name)}">{text}</p>'


def _data_name(spec) -> str:
    """The data file as the report names it: its file name (never an absolute local path)."""
    return Path(spec.data.path).name if spec.data.path else "(data given in Python)"


def _no_local_paths(text: str, spec) -> str:
    """``text`` with the folders of the data file, of a PK fit and of the home directory taken out."""
    folders = {str(Path(p).parent) for p in (spec.data.path, spec.pk_fit) if p} | {str(Path.home())}
    for folder in sorted(folders, key=len, reverse=True):
        if folder not in ("", ".", "/"):
            text = text.replace(folder + os.sep, "").replace(folder, ".")
    return text


def _excluded_records(fit) -> pd.DataFrame:
    """Records of the fitted table left out of the likelihood (or kept with a caveat), one row each, with why."""
    records = fit.tree["records"].to_dataset().to_dataframe().reset_index(drop=True)
    obs = records.EVID == 0
    reasons = pd.Series("", index=records.index, dtype=object)
    reasons[obs & (records.MDV == 1)] = "MDV=1: observation record not in the likelihood"
    spec = fit.spec
    pd_rows = pd.Series(False, index=records.index)
    if spec.pd_error is not None and spec.pd_observations[0] in records:
        pd_rows = records[spec.pd_observations[0]] == spec.pd_observations[1]
    for err, rows in ((spec.error, ~pd_rows), (spec.pd_error, pd_rows)):
        if err is not None and err.blq == "drop":
            reasons[obs & (records.MDV == 0) & (records.CENS != 0) & rows & (reasons == "")] = (
                "below the LLOQ, left out of the likelihood ([error] blq = \"drop\")")
    first_dose = records[records.EVID.isin([1, 4])].groupby("ID").TIME.min()
    before = obs & (records.MDV == 0) & ~(records.TIME > records.ID.map(first_dose).fillna(float("inf")))
    if not spec.structure.startswith("cart_"):  # CAR-T levels are observed from the infusion on
        reasons[before & ~pd_rows & (reasons == "")] = (
            "at or before the first dose: in the likelihood; the pcVPC leaves it out where PRED = 0")
    out = records.loc[reasons != "", ["ROW", "ID", "TIME", "DV"]].assign(reason=reasons[reasons != ""])
    out = out.astype({"ROW": int})
    # rows dropped while the file was read (C column, [data] ignore / accept), stored by the data summary
    summary = json.loads(fit.tree.attrs.get("bayespk_data_summary", "{}"))
    dropped = pd.DataFrame(summary.get("excluded_rows", []), columns=["ROW", "ID", "TIME", "reason"])
    if len(dropped):
        out = pd.concat([dropped.assign(DV="", reason="dropped on reading: " + dropped.reason).astype(object),
                         out.astype(object)], ignore_index=True).sort_values("ROW", kind="stable")[
            ["ROW", "ID", "TIME", "DV", "reason"]]
    return out.reset_index(drop=True)


def _data_section(fit) -> str:
    """Counts of the data summary the fit stored, every reason rows were excluded, and the records themselves."""
    spec = fit.spec
    s = json.loads(fit.tree.attrs.get("bayespk_data_summary", "{}"))
    counts = pd.DataFrame([
        ("data file", _data_name(spec)),
        ("rows in the file", s.get("n_rows", "?")),
        ("subjects", s.get("n_subjects", "?")),
        ("observations in the likelihood", s.get("n_observations", "?")),
        ("of which below the LLOQ (censored)", s.get("n_blq", "?")),
        ("dose records", s.get("n_dose_records", "?")),
        ("doses (with ADDL repeats)", s.get("n_doses", "?")),
        ("other-event records (EVID 2)", s.get("n_other_events", "?")),
        ("covariate columns", ", ".join(s.get("covariates", [])) or "none"),
    ], columns=["", "value"])  # fmt: skip
    text = _table(counts)
    filters = [f"{k} = {list(v)}" for k, v in spec.data.filters.items() if v]
    excluded = s.get("excluded", {})
    if excluded:
        text += ("<h3>Rows excluded</h3>" + _table(pd.DataFrame(list(excluded.items()), columns=["why", "rows"]))
                 + (f"<p>Filters: <code>[data] {html.escape('; '.join(filters))}</code>.</p>" if filters else ""))
    else:
        text += "<p>No rows were excluded when the data were read.</p>"
    listed = _excluded_records(fit)
    if len(listed):
        more = len(listed) - MAX_LISTED_RECORDS
        text += (f'<h3 id="excluded-records">Records left out or flagged ({len(listed)})</h3>'
                 "<p>ROW is the row of the data file (1 = the first row after the header).</p>"
                 + _table(listed.head(MAX_LISTED_RECORDS))
                 + (f"<p>... and {more} more.</p>" if more > 0 else ""))
    if excluded.get(COMMENT_ROWS) and not any(r.get("reason") == COMMENT_ROWS for r in s.get("excluded_rows", [])):
        # data read before comment rows were listed one by one (bayespk.data.nonmem): only their count is known
        text += ('<p class="note">Rows starting with # or @ (NONMEM IGNORE=# / IGNORE=@) are counted above, not '
                 "listed.</p>")
    notes = s.get("notes", [])
    if notes:
        text += "<ul>" + "".join(f"<li>{html.escape(_no_local_paths(n, spec))}</li>" for n in notes) + "</ul>"
    return text


def _convergence_explained(diag: dict) -> str:
    """A sentence per flagged diagnostic: what it means and what to do."""
    items = []
    ess_min = ESS_PER_CHAIN * diag["chains"]
    if diag.get("interrupted"):
        items.append(("Interrupted", "sampling stopped before the requested draws; the chains may not have reached "
                      "or explored the posterior. Refit to completion."))
    if diag["divergences"] > 0:
        items.append((f"{diag['divergences']} divergent transitions",
                      "the sampler met curvature it could not follow (often the funnel between an omega and its "
                      "etas), so part of the posterior may be missed and the estimates biased. Raise [sampler] "
                      "target_accept (0.95-0.99), change the parameterisation of the etas (the run's spec gives "
                      "each parameter's centring weight, [parameters.P] centered: towards 1 for parameters the "
                      "data determine well, towards 0 otherwise) or give weakly identified parameters more "
                      "informative priors."))
    r_hat = diag["max_r_hat"]
    if not r_hat <= RHAT_MAX:
        if r_hat != r_hat:  # NaN: R-hat needs two chains or more
            items.append(("R-hat not available", "it compares chains, and this fit has one: run at least 2 "
                          "(4 recommended) chains before trusting the results."))
        else:
            items.append((f"R-hat {r_hat:.3f} > {RHAT_MAX} ({diag['max_r_hat_parameter']})",
                          "the chains disagree, so they have not converged to the posterior (or found different "
                          "modes). Run longer chains (more tune and draws); if it persists, look for "
                          "multimodality or a weakly identified parameter in the trace of the worst one."))
    if not diag["min_ess_bulk"] >= ess_min:
        items.append((f"bulk ESS {diag['min_ess_bulk']:.0f} < {ess_min} ({diag['min_ess_bulk_parameter']})",
                      "too few effectively independent draws for reliable means, medians and R-hat. Draw more "
                      "samples or improve mixing (parameterisation, adaptation = \"low_rank\")."))
    if not diag["min_ess_tail"] >= ess_min:
        items.append((f"tail ESS {diag['min_ess_tail']:.0f} < {ess_min} ({diag['min_ess_tail_parameter']})",
                      "too few effective draws in the tails for reliable 5% and 95% quantiles (the credible "
                      "intervals). Draw more samples."))
    if diag["min_bfmi"] < BFMI_MIN:
        items.append((f"E-BFMI {diag['min_bfmi']:.2f} < {BFMI_MIN}",
                      "the sampler explores the energy of the posterior poorly: heavy tails or a funnel, typical of "
                      "omegas with little information. Reparameterise the etas ([parameters.P] centered), give "
                      "the omegas more informative priors, or simplify the IIV."))
    if not items:
        return ""
    return ('<ul class="explain" id="convergence-explained">'
            + "".join(f"<li><strong>{html.escape(w)}</strong>: {html.escape(t)}</li>" for w, t in items) + "</ul>")


def _shrinkage_note(table: pd.DataFrame) -> str:
    """A note naming the parameters whose eta shrinkage exceeds 30%."""
    high = table[table.shrinkage > SHRINKAGE_NOTE] if "shrinkage" in table else table.iloc[:0]
    if high.empty:
        return ""
    names = ", ".join(f"{p} ({100 * v:.0f}%)" for p, v in zip(high.parameter, high.shrinkage))
    return (f'<p class="note" id="shrinkage-note">Shrinkage above {100 * SHRINKAGE_NOTE:.0f}%: {html.escape(names)}. '
            "The data say little about these subjects' own values, so their individual estimates shrink towards "
            "the typical value: diagnostics built on the etas or individual predictions (etas against covariates, "
            "eta distributions, IPRED-based plots) are unreliable for these parameters and can hide or invent "
            "relationships (Savic &amp; Karlsson 2009, AAPS J 11:558). Judge them by the VPC, pcVPC and NPDE, which "
            "do not use the etas.</p>")


def _pareto_note(fit, k) -> str:
    """A note on the Pareto k values above 0.7: how many, what it means, what to do instead."""
    bad = k > LOO_K_THRESHOLD
    if not bad.any():
        return ""
    where = ""
    const = fit.tree["constant_data"] if "constant_data" in fit.tree else None
    if const is not None and "SUBJECT" in const and const["SUBJECT"].size == k.size:
        worst = pd.DataFrame({"ID": const["SUBJECT"].values, "TIME": const["TIME"].values, "Pareto k": k})
        worst = worst[bad].sort_values("Pareto k", ascending=False).head(10)
        where = "<p>Highest Pareto k:</p>" + _table(worst)
    return (f'<p class="note" id="pareto-note">{int(bad.sum())} of {k.size} Pareto k values are above '
            f"{LOO_K_THRESHOLD}: for these observations the posterior changes so much when they are left out that "
            "PSIS cannot estimate their leave-one-out density reliably (influential points: outliers, misfit, or "
            "a subject whose own parameters rest on few samples), so elpd_loo and its SE, and any comparison of "
            "models by LOO, are unreliable. K-fold cross-validation by subject (refitting with groups of subjects "
            "left out: <code>bayespk kfold SPEC --out DIR</code>) is the reliable alternative; look at these "
            "observations in the GOF plots.</p>" + where)


def _thin_ticks(fig, max_ticks: int = 4) -> None:
    """Tick labels of the small panels that cannot overlap: at most ``max_ticks`` major labels per x axis, none
    on minor ticks (a log axis spanning less than a decade labels its minor ticks, which collide)."""
    from matplotlib.ticker import LogLocator, MaxNLocator, NullFormatter, StrMethodFormatter

    for ax in fig.axes:
        if not ax.get_visible():
            continue
        lo, hi = sorted(ax.get_xlim())
        if ax.get_xscale() == "log" and lo > 0 and hi / lo >= 10:
            ax.xaxis.set_major_locator(LogLocator(base=10, numticks=max_ticks))
        else:
            ax.xaxis.set_major_locator(MaxNLocator(nbins=max_ticks - 1, min_n_ticks=2))
            ax.xaxis.set_major_formatter(StrMethodFormatter("{x:.3g}"))
        ax.xaxis.set_minor_formatter(NullFormatter())
        ax.tick_params(axis="x", labelsize=7)
    fig.tight_layout()


def _failure_box(title: str, error: BaseException | str) -> str:
    """The visible box that stands in for a section that failed."""
    return (f'<div class="section-failed" role="alert"><strong>This section failed</strong> ({html.escape(title)}): '
            f"{html.escape(str(error))}<br><span class=\"meta\">The rest of the report was built without it.</span>"
            "</div>")


def _provenance(diag: dict) -> str:
    """The hashes that identify what the run used (absent in runs written before they were recorded)."""
    items = [(k, diag.get(k)) for k in ("data_sha256", "data_sha256_recorded", "spec_sha256")]
    items = [(k, v) for k, v in items if v]
    if not items:
        return ""
    labels = {"data_sha256": "data file SHA-256", "data_sha256_recorded": "data file SHA-256 recorded by the spec "
              "(the data changed; fitted with --allow-changed-data)", "spec_sha256": "resolved spec SHA-256"}
    return ('<p class="meta">' + "; ".join(f"{labels[k]} <code>{html.escape(str(v))}</code>" for k, v in items)
            + "</p>")


def write_report(fit, path: str | Path, **kwargs) -> Path:
    """Write the self-contained HTML report to ``path``.

    Parameters
    ----------
    fit : Fit
    path : path
    n_rep : int
        VPC replicates (default 200).
    n_sim : int
        NPDE simulations (default 500).
    seed : int
    pred_corr : bool
        Include the prediction-corrected VPC (default True).
    lower_bound : float
        Its lower bound (default 0); observations with ``PRED <= lower_bound``
        are left out of it and counted (see :mod:`bayespk.evaluate.vpc`).
    x : str
        x axis of the VPC and the pcVPC, and what they bin: ``"TIME"``
        (default), ``"TAD"`` (time after dose) or a numeric dataset column
        (as :func:`bayespk.evaluate.vpc.vpc`). The caption names it, with its unit.
    strat : str, optional
        Stratify both VPCs by a dataset column or ``"DOSE"``.
    strat_labels : dict, optional
        Panel titles by stratum value, e.g. ``{0: "APGR >= 5", 1: "APGR < 5"}``.
    progress : callable, optional
        Called with the name of each step.
    warn : callable, optional
        Called as ``warn(section_title, message)`` for each section that
        failed with a user-data error (default: a :class:`ReportSectionWarning`).

    Returns
    -------
    Path
        The report written, also when some sections failed (see the module docstring).
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = render_report(fit, **kwargs)
    partial = path.with_name(f".{path.name}.tmp-{os.getpid()}")  # never a half-written report at ``path``
    try:
        partial.write_text(text, encoding="utf-8")
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)
    return path
