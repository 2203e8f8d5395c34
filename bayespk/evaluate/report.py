"""A self-contained HTML report of a fit: parameters, convergence, VPC, pcVPC, GOF, NPDE, LOO.

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
from datetime import datetime, timezone
from pathlib import Path

import warnings

import pandas as pd

from bayespk.errors import BayesPKError

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
                  lower_bound: float = 0.0, progress=None, warn=None) -> str:
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
            failures.append((title, str(e)))
            warn(title, str(e))
            content = _failure_box(title, e)
        sections.append((anchor, title, content))

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
                + ("<ul>" + "".join(f"<li>{html.escape(p)}</li>" for p in diag["problems"]) + "</ul>"
                   if diag["problems"] else "")
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

    section("vpc", "Visual predictive check", lambda: (
        "<p>Observed percentiles (lines) against the 90% interval of the same percentiles over "
        f"{n_rep} replicates of the study simulated with new subjects (bands).</p>"
        + _png(fit.vpc(replicates=reps()).figure)))

    if pred_corr:
        step("prediction-corrected VPC")

        def pcvpc() -> str:
            pc = fit.vpc(replicates=reps(), pred_corr=True, lower_bound=lower_bound)
            note = pc.settings.get("exclusion_note")
            return ("<p>Observed and simulated values scaled to the median typical-subject prediction (PRED) of "
                    f"their bin (Bergstrand et al. 2011, lower bound {lower_bound:g}). An observation with PRED "
                    f"&lt;= {lower_bound:g} has no correction: it is left out, with its simulated values, and "
                    "counted.</p>"
                    + (f'<p class="note" id="pcvpc-excluded" data-excluded="{pc.settings["n_excluded"]}">'
                       f"{html.escape(note)}.</p>" if note else "")
                    + _png(pc.figure))

        section("pcvpc", "Prediction-corrected VPC", pcvpc)

    step("goodness of fit")

    def gof() -> str:
        g = fit.gof()
        fig_ind, _ = fit.plot_individual(ids=list(fit.model.design.subject_ids[:12]))
        return (_png(g.figure) + "<h3>Eta shrinkage</h3>" + _table(g.shrinkage)
                + "<h3>Individual fits (first 12 subjects)</h3>" + _png(fig_ind))

    section("gof", "Goodness of fit", gof)

    step(f"NPDE ({n_sim} simulations)")

    def npde() -> str:
        n = fit.npde(n_sim=n_sim, seed=seed)
        tests = n.tests.rename_axis("test").reset_index()
        return ("<p>Should be N(0, 1): mean and variance tests, Shapiro-Wilk normality, and the global "
                "test (3 x the smallest p-value). Trends against time or prediction show misfit that "
                "the global tests can miss.</p>" + _png(n.figure) + _table(tests))

    section("npde", "Normalised prediction distribution errors", npde)

    step("covariates and priors")
    section("covariates", "Etas vs covariates", lambda: _png(fit.plot_eta_covariates()[0]))

    def priors() -> str:
        fig_pp, pp = fit.plot_prior_posterior()
        return _png(fig_pp) + _table(pp)

    section("priors", "Prior vs posterior", priors)

    step("LOO")

    def loo() -> str:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            lo = fit.loo()
        k = pd.Series(lo.pareto_k.values.ravel() if hasattr(lo.pareto_k, "values") else lo.pareto_k)
        return _table(pd.DataFrame([{"elpd_loo": float(lo.elpd), "se": float(lo.se), "p_loo": float(lo.p),
                                     "n": int(k.size), "Pareto k > 0.7": int((k > 0.7).sum())}]))

    section("loo", "PSIS-LOO", loo)

    summary = json.loads(fit.tree.attrs.get("bayespk_data_summary", "{}"))
    meta = (f'<p class="meta">{html.escape(spec.structure)}, {html.escape(spec.error.model)} error; data '
            f'{html.escape(str(spec.data.path))}: {summary.get("n_subjects", "?")} subjects, '
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


def _failure_box(title: str, error: BaseException) -> str:
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
