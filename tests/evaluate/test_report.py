"""The evaluation CLI (vpc, report, compare) on a run directory, and the HTML report in a real browser."""

import re
import shutil
import subprocess
import tempfile
import warnings
from pathlib import Path

import matplotlib.image as mpimg
import numpy as np
import pandas as pd
import pytest
from conftest import MODELS, tiny_fit

import bayespk as bpk
from bayespk.cli import main

PHENO = MODELS / "phenobarbital_1cmt_iv.toml"
CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("eval") / "pheno"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["fit", str(PHENO), "--out", str(out), "--draws", "150", "--tune", "200", "--chains", "2",
                     "--seed", "3", "--quiet"]) == 0
    return out


@pytest.fixture(scope="module")
def report(run_dir):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["report", str(run_dir), "--n-rep", "50", "--n-sim", "100"]) == 0
    return run_dir / "report.html"


def test_cli_vpc_writes_png_and_csv(run_dir, tmp_path):
    assert main(["vpc", str(run_dir), "--out", str(tmp_path), "--pred-corr", "--strat", "APGRLOW",
                 "--n-rep", "40", "--bins", "4"]) == 0
    table = pd.read_csv(tmp_path / "vpc.csv")
    assert set(table.strat) == {0.0, 1.0}
    assert {"obs_p50", "sim_p50_lo", "sim_p50_hi", "sim_p5_median", "obs_p95"} <= set(table.columns)
    img = mpimg.imread(tmp_path / "vpc.png")
    assert img.shape[0] > 200 and img.shape[1] > 400


def test_cli_vpc_refuses_bad_options(run_dir, tmp_path, capsys):
    assert main(["vpc", str(run_dir), "--out", str(tmp_path), "--strat", "NOPE"]) == 2
    assert "strat: no column 'NOPE'" in capsys.readouterr().err
    assert main(["vpc", str(run_dir), "--out", str(tmp_path), "--n-rep", "0"]) == 2
    assert main(["vpc", str(run_dir), "--out", str(tmp_path), "--bins", "a,b"]) == 2
    assert main(["vpc", str(tmp_path / "missing"), "--out", str(tmp_path)]) == 2
    assert "not a run directory" in capsys.readouterr().err


def test_report_is_self_contained(report):
    text = report.read_text()
    for section in ("model", "data", "prior-table", "parameters", "convergence", "vpc", "gof", "npde", "priors",
                    "loo"):
        assert f'id="{section}"' in text
    order = [text.index(f'<section id="{a}">') for a in ("model", "data", "prior-table", "parameters")]
    assert order == sorted(order)  # model, data and priors come first
    images = re.findall(r'<img alt="figure" src="data:image/png;base64,', text)
    assert len(images) == 7  # VPC, pcVPC, GOF, individual fits, NPDE, etas, priors
    assert not re.search(r'(src|href)="(https?:)?//', text)  # nothing fetched from elsewhere
    assert "CL" in text and "omega_V" in text
    # the model, generated from the spec: the weight and Apgar effects with their reference values
    model = _section(text, "model")
    assert "CL_i = CL·(WT_i/1)^1·exp(η_CL,i)" in model and "exp(V_APGRLOW[APGRLOW_i])" in model
    assert "ε_ij ~ N(0, (sigma_prop·f_ij)²)" in model
    priors = _section(text, "prior-table")
    assert "<td>V_APGRLOW</td><td>Normal</td><td>mu=0, sigma=0.5</td>" in priors
    # no absolute local path (outside the base64 figures): the data file by its name only
    plain = re.sub(r'src="data:image/png;base64,[^"]*"', "", text)
    for local in (str(MODELS.parent), str(Path.home()), str(report.parent), tempfile.gettempdir()):
        assert local not in plain
    assert "phenobarbital.csv" in _section(text, "data")


def test_cli_compare_two_runs(run_dir, tmp_path, capsys):
    other = tmp_path / "pheno_no_apgar"
    spec = PHENO.read_text().split("[[covariates]]")
    # keep the two weight effects, drop the Apgar effect
    no_apgar = spec[0] + "[[covariates]]" + spec[1] + "[[covariates]]" + spec[2].split("[error]")[0] \
        + "[error]" + spec[3].split("[error]")[1]
    (tmp_path / "spec.toml").write_text(no_apgar.replace('path = "../', f'path = "{MODELS.parent}/'))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        assert main(["fit", str(tmp_path / "spec.toml"), "--out", str(other), "--draws", "150", "--tune", "200",
                     "--chains", "2", "--seed", "3", "--quiet"]) == 0
    capsys.readouterr()
    assert main(["compare", str(run_dir), str(other), "--out", str(tmp_path / "cmp.csv")]) == 0
    table = pd.read_csv(tmp_path / "cmp.csv", index_col=0)
    assert set(table.index) == {"pheno", "pheno_no_apgar"}
    assert table.elpd_diff.max() == 0 and (table.elpd_diff <= 0).all() and np.isfinite(table.elpd).all()
    assert table.elpd.iloc[0] == table.elpd.max()  # best first


@pytest.mark.skipif(CHROMIUM is None, reason="chromium not installed (CI installs it)")
def test_report_renders_in_headless_chromium(report, tmp_path):
    flags = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run(flags + ["--virtual-time-budget=5000", "--dump-dom", report.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    m = re.search(r'data-images="(\d+)/(\d+)"', dom.stdout)
    assert m, "the page's load handler did not run"
    assert m.group(1) == m.group(2) and int(m.group(2)) == 7, f"images decoded: {m.group(0)}"

    shot = tmp_path / "report.png"
    res = subprocess.run(flags + ["--window-size=1280,3000", f"--screenshot={shot}", report.as_uri()],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0 and shot.is_file(), res.stderr[-2000:]
    img = mpimg.imread(shot)[..., :3]
    # The VPC's shaded bands: matplotlib C0 (blue) and C3 (red) at alpha 0.25 over white.
    blue = np.array([0.12, 0.47, 0.71]) * 0.25 + 0.75
    red = np.array([0.84, 0.15, 0.16]) * 0.25 + 0.75
    near = lambda c: (np.abs(img - c).max(axis=-1) < 0.04).sum()  # noqa: E731
    assert near(blue) > 2000 and near(red) > 1000, (near(blue), near(red))


# ---------------------------------------------------------------- issue 16: theophylline, pcVPC rule, failing sections
THEO = MODELS / "theophylline_1cmt_oral.toml"
QUICK_REPORT = ["--n-rep", "30", "--n-sim", "30"]


@pytest.fixture(scope="module")
def theo_run(tmp_path_factory):
    """A tiny fit of the bundled theophylline model (as ``make demo``, much shorter): every subject has a
    sample at the time of its oral dose, where the typical-subject prediction PRED is 0."""
    return tiny_fit(THEO, tmp_path_factory.mktemp("theo") / "theophylline")


def _pred_zero_rows() -> pd.DataFrame:
    """Observations at or before their subject's first dose, from the CSV itself: for a 1-cmt oral model
    PRED is exactly 0 there (nothing absorbed yet) and > 0 at every later time."""
    data = pd.read_csv(bpk.datasets.path("theophylline"), na_values=".")
    first_dose = data[data.EVID == 1].groupby("ID").TIME.min()
    obs = data[(data.EVID == 0) & (data.MDV == 0)]
    return obs[obs.TIME <= obs.ID.map(first_dose)]


def _report_cli(capsys, run, *options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        rc = main(["report", str(run), *QUICK_REPORT, *options])
    out, err = capsys.readouterr()
    return rc, out, err


def _images(text: str) -> int:
    return len(re.findall(r'<img alt="figure" src="data:image/png;base64,', text))


def _section(text: str, anchor: str) -> str:
    m = re.search(rf'<section id="{anchor}">(.*?)</section>', text, re.S)
    assert m, f"no section {anchor!r}"
    return m.group(1)


def test_theophylline_pcvpc_excludes_the_pred_zero_observations(theo_run):
    expected = _pred_zero_rows()
    assert len(expected) == 12 and (expected.TIME == 0).all()  # one sample at each subject's dose time
    fit = bpk.load(theo_run)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pc = bpk.vpc(fit, n_rep=30, pred_corr=True)
    assert pc.settings["n_excluded"] == len(expected) == len(pc.excluded)
    assert sorted(zip(pc.excluded.ID, pc.excluded.TIME)) == sorted(zip(expected.ID, expected.TIME))
    assert (pc.excluded.PRED == 0).all()
    n_obs = len(fit.tree["observed_data"]["DV"])
    assert len(pc.points) == n_obs - len(expected) and pc.table.n_obs.sum() == n_obs - len(expected)
    assert np.isfinite(pc.points.DV).all()
    note = f"12 of {n_obs} observations with PRED <= 0 excluded from the prediction correction (PRED 0: no drug yet"
    assert pc.settings["exclusion_note"].startswith(note) and note in pc.figure._suptitle.get_text()


def test_cli_report_of_theophylline_includes_the_pcvpc(theo_run, capsys):
    rc, out, err = _report_cli(capsys, theo_run)
    assert rc == 0, err
    assert "warning" not in err and "failed" not in out
    text = (theo_run / "report.html").read_text()
    pcvpc = _section(text, "pcvpc")
    assert _images(pcvpc) == 1 and "Prediction-corrected VPC" in text
    assert f'data-excluded="{len(_pred_zero_rows())}"' in pcvpc and "PRED &lt;= 0 excluded" in pcvpc
    assert _images(text) == 7 and 'class="section-failed"' not in text and 'id="failed-sections"' not in text
    for anchor in ("vpc", "pcvpc"):  # the default x axis, named with its unit under each figure
        assert f'id="{anchor}-axes" data-x="TIME">x axis: time (h) (TIME of the data)' in _section(text, anchor)


def test_cli_report_no_pred_corr_omits_the_pcvpc_and_a_failing_section_is_boxed(theo_run, tmp_path, capsys,
                                                                                  monkeypatch):
    from bayespk.errors import BayesPKError
    from bayespk.evaluate import report as report_module

    def boom(*args, **kwargs):
        raise BayesPKError("boom")

    monkeypatch.setattr(report_module, "npde", boom)
    rc, out, err = _report_cli(capsys, theo_run, "--no-pred-corr", "--out", str(tmp_path / "r.html"))
    assert rc == 0, err
    assert err == "bayespk report: warning: section 'Normalised prediction distribution errors' failed: boom\n"
    assert "1 section failed: Normalised prediction distribution errors" in out
    text = (tmp_path / "r.html").read_text()
    assert 'id="pcvpc"' not in text and "Prediction-corrected" not in text  # --no-pred-corr
    box = _section(text, "npde")
    assert 'class="section-failed"' in box and "boom" in box and _images(box) == 0
    assert '<p class="poor" id="failed-sections">1 section could not be built' in text
    for anchor in ("parameters", "convergence", "vpc", "gof", "covariates", "priors", "loo"):
        assert 'class="section-failed"' not in _section(text, anchor)
    assert _images(text) == 5  # VPC, GOF, individual fits, etas, priors


def test_cli_report_lower_bound_where_nothing_is_left_boxes_the_pcvpc(theo_run, tmp_path, capsys):
    rc, out, err = _report_cli(capsys, theo_run, "--lower-bound", "1000", "--out", str(tmp_path / "r.html"))
    assert rc == 0, err
    assert err.startswith("bayespk report: warning: section 'Prediction-corrected VPC' failed: prediction "
                          "correction needs PRED > lower bound 1000") and err.count("\n") == 1
    text = (tmp_path / "r.html").read_text()
    box = _section(text, "pcvpc")
    assert 'class="section-failed"' in box and "nothing is left to plot" in box and _images(box) == 0
    assert _images(text) == 6


def test_cli_vpc_pred_corr_lower_bound_changes_the_count(theo_run, tmp_path, capsys):
    from bayespk.evaluate.simulation import simulate_replicates

    counts = {}
    for lb in ("0", "1.5"):
        out = tmp_path / lb
        assert main(["vpc", str(theo_run), "--out", str(out), "--pred-corr", "--lower-bound", lb,
                     "--n-rep", "30"]) == 0
        excluded = pd.read_csv(out / "vpc_excluded.csv")
        assert (excluded.PRED <= float(lb)).all()
        counts[lb] = len(excluded)
        err = capsys.readouterr().err
        assert f"note: {counts[lb]} of " in err and f"with PRED <= {lb} excluded" in err
    assert counts["0"] == len(_pred_zero_rows())
    # independently: the median over the replicates of each observation's PRED (same seed, same replicates)
    pred = np.median(simulate_replicates(bpk.load(theo_run), 30, seed=0)["PRED"].values, axis=0)
    assert counts["1.5"] == int((pred <= 1.5).sum()) > counts["0"]
    # the plain VPC keeps every observation and writes no list
    assert main(["vpc", str(theo_run), "--out", str(tmp_path / "plain"), "--no-pred-corr", "--n-rep", "30"]) == 0
    assert not (tmp_path / "plain" / "vpc_excluded.csv").exists()
    # every PRED <= the lower bound: refused, with the reason and what to do
    assert main(["vpc", str(theo_run), "--out", str(tmp_path), "--pred-corr", "--lower-bound", "1000",
                 "--n-rep", "30"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bayespk vpc: error: prediction correction needs PRED > lower bound 1000")
    assert "nothing is left to plot; lower the lower bound" in err and "--no-pred-corr" in err
    assert main(["vpc", str(theo_run), "--out", str(tmp_path), "--pred-corr", "--lower-bound", "nan"]) == 2
    assert "--lower-bound must be a finite number" in capsys.readouterr().err


def test_report_section_errors_warn_and_bugs_propagate(theo_run, tmp_path, monkeypatch):
    from bayespk.errors import BayesPKError
    from bayespk.evaluate import npde as _npde  # noqa: F401  imported first: it binds the real simulator
    from bayespk.evaluate import report as report_module
    from bayespk.evaluate import simulation

    fit = bpk.load(theo_run)
    calls = []

    def no_replicates(*args, **kwargs):
        calls.append(1)
        raise BayesPKError("cannot simulate")

    monkeypatch.setattr(simulation, "simulate_replicates", no_replicates)
    with pytest.warns(report_module.ReportSectionWarning) as record:
        text = report_module.render_report(fit, n_rep=10, n_sim=20)
    assert [str(w.message) for w in record if w.category is report_module.ReportSectionWarning] == [
        "report section 'Visual predictive check' failed: cannot simulate",
        "report section 'Prediction-corrected VPC' failed: cannot simulate"]
    assert len(calls) == 1  # simulated once for both VPCs; the error is shown in both sections
    for anchor in ("vpc", "pcvpc"):
        assert "cannot simulate" in _section(text, anchor) and 'class="section-failed"' in _section(text, anchor)
    assert "2 sections could not be built" in text

    def bug(*args, **kwargs):
        raise ZeroDivisionError("a bug")

    monkeypatch.setattr(type(fit), "summary", bug)
    with pytest.raises(ZeroDivisionError):
        report_module.write_report(fit, tmp_path / "r.html")
    assert not (tmp_path / "r.html").exists()
    assert main(["report", str(theo_run), "--out", str(tmp_path / "r.html")]) == 1  # internal error
    assert not (tmp_path / "r.html").exists()


def test_loo_with_points_constant_over_the_draws_is_exact_and_the_report_has_it(theo_run, monkeypatch):
    """ArviZ cannot fit a Pareto tail to a point whose log-likelihood is the same in every draw (a BLQ
    observation with P(below LLOQ) = 1 throughout, as in the CAR-T fits): its LOO density is that value, the
    others are ArviZ's PSIS, and the report's LOO section is built."""
    import arviz as az
    import xarray as xr

    from bayespk.evaluate import report as report_module
    from bayespk.fit import Fit

    fit = bpk.load(theo_run)
    ll = fit.log_likelihood().copy(deep=True)
    const = np.zeros(ll.sizes["obs"], dtype=bool)
    const[[3, 7]] = True
    ll["DV"][..., const] = -0.25  # observations 3 and 7: the same log-likelihood in every draw
    monkeypatch.setattr(Fit, "log_likelihood", lambda self: ll)
    with pytest.raises(ValueError, match="All tail values are the same"):  # what ArviZ alone does
        az.loo(xr.DataTree(children={"posterior": fit.tree["posterior"], "log_likelihood": xr.DataTree(ll)}))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        result = bpk.loo(fit)
        rest = az.loo(xr.DataTree(children={"posterior": fit.tree["posterior"],
                                            "log_likelihood": xr.DataTree(ll.isel(obs=~const))}), pointwise=True)
        table = bpk.compare({"a": fit, "b": fit})
    elpd_i = np.asarray(result.elpd_i)
    np.testing.assert_allclose(elpd_i[const], [-0.25, -0.25], rtol=1e-12)
    np.testing.assert_allclose(elpd_i[~const], np.asarray(rest.elpd_i), rtol=1e-12)
    assert result.elpd == pytest.approx(elpd_i.sum()) and result.p == pytest.approx(rest.p)
    assert (np.asarray(result.pareto_k)[const] == 0).all()
    assert table.elpd.tolist() == pytest.approx([result.elpd] * 2)
    messages = []
    text = report_module.render_report(fit, n_rep=10, n_sim=20, warn=lambda t, m: messages.append((t, m)))
    assert messages == [] and f"{result.elpd:.4g}" in _section(text, "loo")


# ---------------------------------------------------------------- issue 16 point 4: data, notes, figures, paths
def test_data_section_lists_excluded_records_and_why(tmp_path):
    """MDV=1 rows, rows dropped by [data] ignore and by a C column are counted and listed one by one with their
    reason, observations at the dose time are flagged, and the data file is named, never its folder."""
    data = pd.read_csv(bpk.datasets.path("theophylline"), na_values=".")
    obs = data.index[(data.EVID == 0) & (data.TIME > 0)]
    data.loc[obs[[0, 5]], "MDV"] = 1  # two observations kept out of the likelihood
    data.insert(0, "C", ".")
    data.loc[obs[7], "C"] = "C"  # one commented out
    folder = tmp_path / "private folder"
    folder.mkdir()
    data.to_csv(folder / "theo_flags.csv", index=False, na_rep=".")
    spec = THEO.read_text().replace('path = "../bayespk/data/datasets/theophylline.csv"',
                                    f'path = "{folder / "theo_flags.csv"}"\nignore = ["TIME.GT.24"]')
    (tmp_path / "spec.toml").write_text(spec)
    from bayespk.evaluate.report import _data_section

    fit = bpk.load(tiny_fit(tmp_path / "spec.toml", tmp_path / "run"))
    section = text = _data_section(fit)  # the section alone: the rest of the report is tested above
    n_late = int((data.TIME > 24).sum() - (data.loc[obs[7], "TIME"] > 24))
    assert f"<tr><td>[data] ignore (TIME.GT.24)</td><td>{n_late}</td></tr>" in section
    assert "commented out (C column)</td><td>1</td>" in section
    assert "<code>[data] ignore = [&#x27;TIME.GT.24&#x27;]</code>" in section
    listed = re.findall(r"<tr><td>(\d+)</td><td>(\d+)</td><td>[^<]*</td><td>[^<]*</td><td>([^<]*)</td></tr>",
                        section)
    mdv = {int(r) for r, _, why in listed if why.startswith("MDV=1")}
    assert mdv == {int(i) + 1 for i in obs[[0, 5]]}  # ROW: 1 = the first row after the header
    assert sum(why.startswith("at or before the first dose") for *_, why in listed) == 12
    dropped = {int(r): why for r, _, why in listed if why.startswith("dropped on reading")}
    assert dropped[int(obs[7]) + 1] == "dropped on reading: commented out (C column)"
    late = {int(i) + 1 for i in data.index[data.TIME > 24] if i != obs[7]}
    assert {r for r, why in dropped.items() if "TIME.GT.24" in why} == late
    assert "theo_flags.csv" in text and str(folder) not in text and str(tmp_path) not in text


def test_data_section_lists_comment_rows(tmp_path):
    """Rows starting with # or @ (NONMEM IGNORE=# / IGNORE=@) are listed with their ROW and reason, among the other
    excluded records, not only counted."""
    from bayespk.evaluate.report import _data_section

    lines = bpk.datasets.path("theophylline").read_text().splitlines()
    lines.insert(4, "# sample re-assayed, see the deviation log")  # becomes row 4 (1 = the first after the header)
    lines[8] = "@" + lines[8]  # row 8: a record commented out
    lines[0] = "#" + lines[0]  # the header itself: IGNORE=#
    (tmp_path / "theo_comments.csv").write_text("\n".join(lines) + "\n")
    spec = THEO.read_text().replace('path = "../bayespk/data/datasets/theophylline.csv"',
                                    f'path = "{tmp_path / "theo_comments.csv"}"')
    (tmp_path / "spec.toml").write_text(spec)
    fit = bpk.load(tiny_fit(tmp_path / "spec.toml", tmp_path / "run"))
    section = _data_section(fit)
    assert "commented out (row starts with # or @)</td><td>2</td>" in section  # counted
    listed = re.findall(r"<tr><td>(\d+)</td><td>([^<]*)</td><td>([^<]*)</td><td>[^<]*</td><td>([^<]*)</td></tr>",
                        section)
    comments = [(int(row), why) for row, _, _, why in listed if "row starts with" in why]
    assert comments == [(4, "dropped on reading: commented out (row starts with # or @)"),
                        (8, "dropped on reading: commented out (row starts with # or @)")]  # and listed
    assert "counted above, not listed" not in section
    rows = [int(row) for row, *_ in listed]
    assert rows == sorted(rows)  # in file order among the other records listed


@pytest.mark.slow  # a whole report (about 30 s); the notes themselves are tested fast below
def test_flagged_diagnostics_are_explained(theo_run, monkeypatch):
    """Convergence flags, shrinkage > 30% and Pareto k > 0.7 each come with a note on what they mean."""
    from types import SimpleNamespace

    from bayespk.evaluate import gof as gof_module
    from bayespk.evaluate import report as report_module

    fit = bpk.load(theo_run)
    real_shrinkage = gof_module.shrinkage

    def high_shrinkage(f):
        table = real_shrinkage(f)
        table.loc[table.parameter == "KA", "shrinkage"] = 0.47
        table.loc[table.parameter == "V", "shrinkage"] = 0.12
        return table

    n_obs = len(fit.tree["observed_data"]["DV"])
    k = np.zeros(n_obs)
    k[[4, 9, 17]] = [0.75, 1.2, 0.71]
    monkeypatch.setattr(gof_module, "shrinkage", high_shrinkage)
    monkeypatch.setattr(report_module, "loo", lambda fit, by="obs": SimpleNamespace(elpd=-150.0, se=10.0, p=20.0,
                                                                                    pareto_k=k))
    text = report_module.render_report(fit, n_rep=10, n_sim=20, warn=lambda t, m: None)
    gof = _section(text, "gof")
    note = re.search(r'<p class="note" id="shrinkage-note">(.*?)</p>', gof).group(1)
    assert "KA (47%)" in note and "V (" not in note and "Savic &amp; Karlsson 2009" in note
    loo = _section(text, "loo")
    assert "3 of %d Pareto k values are above 0.7" % n_obs in loo and "K-fold cross-validation by subject" in loo
    ids = fit.tree["constant_data"]["SUBJECT"].values
    assert f"<tr><td>{ids[9]}</td>" in loo.split("Highest Pareto k")[1]  # the worst observation first
    conv = _section(text, "convergence")  # 2 chains x 20 draws: too few effective draws
    explained = re.search(r'<ul class="explain" id="convergence-explained">(.*?)</ul>', conv).group(1)
    diag = fit.diagnostics()
    assert ("bulk ESS" in explained) == (diag["min_ess_bulk"] < 200)
    assert "Draw more samples" in explained or "Run longer chains" in explained
    # and without the flags, no notes
    monkeypatch.setattr(gof_module, "shrinkage", real_shrinkage)
    monkeypatch.setattr(report_module, "loo", lambda fit, by="obs": SimpleNamespace(elpd=-150.0, se=10.0, p=20.0,
                                                                                    pareto_k=np.zeros(n_obs)))
    assert report_module._pareto_note(fit, np.zeros(n_obs)) == ""
    assert report_module._shrinkage_note(real_shrinkage(fit).assign(shrinkage=0.1)) == ""
    assert report_module._convergence_explained({**diag, "divergences": 0, "max_r_hat": 1.0, "min_ess_bulk": 1e4,
                                                 "min_ess_tail": 1e4, "min_bfmi": 1.0}) == ""


def test_convergence_explanations_name_each_flag():
    from bayespk.evaluate.report import _convergence_explained

    diag = {"chains": 4, "divergences": 3, "max_r_hat": 1.05, "max_r_hat_parameter": "omega_V",
            "min_ess_bulk": 50, "min_ess_bulk_parameter": "z_V", "min_ess_tail": 80, "min_ess_tail_parameter": "CL",
            "min_bfmi": 0.2, "interrupted": True}
    text = _convergence_explained(diag)
    for flag in ("3 divergent transitions", "R-hat 1.050 &gt; 1.01 (omega_V)", "bulk ESS 50 &lt; 400 (z_V)",
                 "tail ESS 80 &lt; 400 (CL)", "E-BFMI 0.20 &lt; 0.3", "Interrupted"):
        assert f"<strong>{flag}</strong>" in text
    assert "target_accept" in text and "Refit to completion" in text
    assert "one: run at least 2" in _convergence_explained({**diag, "max_r_hat": float("nan")})


def _overlapping_tick_labels(fig) -> int:
    """Pairs of x tick labels that overlap, over the visible panels of ``fig``."""
    from itertools import combinations

    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    n = 0
    for ax in fig.axes:
        if not ax.get_visible():
            continue
        box = ax.get_window_extent(renderer)
        labels = [t.get_window_extent(renderer) for t in ax.xaxis.get_ticklabels(which="both")
                  if t.get_visible() and t.get_text()]
        labels = [b for b in labels if b.x1 > box.x0 - 2 and b.x0 < box.x1 + 2]  # drawn: inside the panel
        n += sum(a.overlaps(b) for a, b in combinations(labels, 2))
    return n


def test_prior_posterior_tick_labels_do_not_overlap():
    """Panels as plot_prior_posterior draws them (3.2 x 2.4 in, log axes for positive values): narrow
    log ranges label their minor ticks and large linear values crowd; the report thins them."""
    import matplotlib.pyplot as plt

    from bayespk.evaluate.report import _thin_ticks

    rng = np.random.default_rng(0)
    values = [np.exp(rng.normal(np.log(0.5), 0.1, 2000)), np.exp(rng.normal(np.log(2e4), 0.2, 2000)),
              rng.normal(2e4, 700, 2000), rng.normal(-4e-4, 1e-4, 2000), np.exp(rng.normal(1.1, 0.3, 2000)),
              rng.beta(1, 50, 2000), np.exp(rng.normal(0, 3, 2000))]
    fig, axes = plt.subplots(2, 4, figsize=(12.8, 4.8), squeeze=False)
    for ax, a in zip(axes.flat, values):
        lo, hi = np.quantile(a, [0.005, 0.995])
        ax.hist(a, bins=np.geomspace(lo, hi, 60) if (a > 0).all() else np.linspace(lo, hi, 60))
        if (a > 0).all():
            ax.set_xscale("log")
    axes.flat[-1].set_visible(False)
    fig.tight_layout()
    assert _overlapping_tick_labels(fig) > 0  # what the report showed before
    _thin_ticks(fig)
    assert _overlapping_tick_labels(fig) == 0
    for ax in list(axes.flat)[:-1]:  # every panel keeps at least two labels
        lo, hi = sorted(ax.get_xlim())
        shown = [t for t in ax.xaxis.get_majorticklocs() if lo <= t <= hi]
        assert len(shown) >= 2, ax.get_xlim()
    plt.close(fig)


def test_a_failing_section_does_not_show_the_data_folder(theo_run, monkeypatch):
    from bayespk.errors import BayesPKError
    from bayespk.evaluate import report as report_module

    fit = bpk.load(theo_run)

    def boom(*args, **kwargs):
        raise BayesPKError(f"{fit.spec.data.path}: something in row 3")

    monkeypatch.setattr(report_module, "npde", boom)
    messages = []
    text = report_module.render_report(fit, n_rep=10, n_sim=20, pred_corr=False,
                                       warn=lambda t, m: messages.append(m))
    assert messages == ["theophylline.csv: something in row 3"]
    assert "theophylline.csv: something in row 3" in _section(text, "npde")
    assert str(Path(fit.spec.data.path).parent) not in text


def test_shrinkage_and_pareto_notes():
    from types import SimpleNamespace

    from bayespk.evaluate.report import _pareto_note, _shrinkage_note

    table = pd.DataFrame({"parameter": ["CL", "V", "KA"], "shrinkage": [0.1, 0.47, 0.31]})
    note = _shrinkage_note(table)
    assert 'id="shrinkage-note"' in note and "V (47%), KA (31%)" in note and "CL" not in note
    assert _shrinkage_note(table.assign(shrinkage=0.3)) == ""  # 30% itself: no note
    no_data = SimpleNamespace(tree={})
    note = _pareto_note(no_data, np.array([0.1, 0.75, 0.2, 1.3]))
    assert "2 of 4 Pareto k values are above 0.7" in note and "K-fold cross-validation by subject" in note
    assert _pareto_note(no_data, np.array([0.1, 0.7])) == ""


# ---------------------------------------------------------------- issue 16: the report's VPC options (as bayespk vpc)
@pytest.fixture(scope="module")
def pheno_tiny(tmp_path_factory):
    """A tiny fit of the bundled phenobarbital model: multiple IV doses (TAD differs from TIME) and APGRLOW 0/1."""
    return tiny_fit(PHENO, tmp_path_factory.mktemp("pheno_tiny") / "pheno")


def _hand_tad(obs: pd.DataFrame) -> pd.Series:
    """Time after the most recent dose record at or before each observation (phenobarbital: no ADDL, every
    subject dosed at its first record)."""
    data = pd.read_csv(bpk.datasets.path("phenobarbital"), na_values=".")
    doses = data[data.EVID == 1]
    last = [doses.TIME[(doses.ID == i) & (doses.TIME <= t)].max() for i, t in zip(obs.ID, obs.TIME)]
    return obs.TIME - np.asarray(last, dtype=float)


def test_cli_report_vpc_options_x_tad_and_strata(pheno_tiny, tmp_path, capsys, monkeypatch):
    """``report --x TAD --strat APGRLOW --strat-labels ...``: the VPC and the pcVPC bin and plot time after dose
    (axis "time after dose (h)", the spec's time unit), one panel per stratum titled with the labels, and the
    caption under each says which x was used."""
    from bayespk.evaluate import report as report_module

    made = []
    real_vpc = report_module.vpc

    def recording_vpc(*args, **kwargs):
        made.append(real_vpc(*args, **kwargs))
        return made[-1]

    monkeypatch.setattr(report_module, "vpc", recording_vpc)
    rc, out, err = _report_cli(capsys, pheno_tiny, "--x", "TAD", "--strat", "APGRLOW", "--strat-labels",
                               "0=APGR >= 5;1=APGR < 5", "--out", str(tmp_path / "r.html"))
    assert rc == 0, err
    assert "warning" not in err and "failed" not in out
    assert [v.settings["pred_corr"] for v in made] == [False, True]  # the VPC, then the pcVPC
    for v in made:
        assert v.settings["x"] == "TAD" and v.settings["x_label"] == "time after dose (h)"
        assert {ax.get_xlabel() for ax in v.figure.axes} - {""} == {"time after dose (h)"}
        assert sorted(ax.get_title() for ax in v.figure.axes if ax.get_title()) == ["APGR < 5", "APGR >= 5"]
        points = v.points.sort_values(["ID", "TIME"]).reset_index(drop=True)
        np.testing.assert_allclose(points.x, _hand_tad(points), atol=1e-9)  # binned and drawn on TAD
        assert (points.x < points.TIME).any()  # not TIME: the later doses reset it
        assert (v.table.t_hi.max() <= points.x.max() + 1e-9) and v.table.t_hi.max() < points.TIME.max()
    text = (tmp_path / "r.html").read_text()
    for anchor in ("vpc", "pcvpc"):
        caption = re.search(rf'<p class="meta" id="{anchor}-axes" data-x="TAD">(.*?)</p>', _section(text, anchor))
        assert caption, f"no x-axis caption under the {anchor}"
        assert caption.group(1).startswith("x axis: time after dose (h) (TAD: time after the most recent dose")
        assert "Stratified by APGRLOW, one panel per value: APGR &gt;= 5; APGR &lt; 5." in caption.group(1)
    assert _images(text) == 7 and 'class="section-failed"' not in text


def test_cli_report_refuses_bad_strat_labels_before_loading(tmp_path, capsys):
    missing = str(tmp_path / "no_run")  # the options are refused before the run directory is read
    assert main(["report", missing, "--strat", "APGRLOW", "--strat-labels", "0"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("bayespk report: error: --strat-labels '0': expected VALUE=LABEL pairs")
    assert main(["report", missing, "--strat-labels", "0=low"]) == 2
    assert "--strat-labels needs --strat" in capsys.readouterr().err
    assert main(["report", missing, "--x", "TAD"]) == 2
    assert "not a run directory" in capsys.readouterr().err
