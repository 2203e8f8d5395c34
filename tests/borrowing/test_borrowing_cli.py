"""`bayespk prior map | robustify | show`: a round trip on the AS data, and user errors exiting 2."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from bayespk.borrowing import ankylosing_spondylitis, read_prior
from bayespk.borrowing.cli import parse_prior
from bayespk.cli import EXIT_USER_ERROR, main
from bayespk.errors import SpecError

REPO = Path(__file__).resolve().parents[2]


def run_main(capsys, *argv):
    rc = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    return rc, out, err


@pytest.fixture(scope="module")
def as_prior(tmp_path_factory):
    folder = tmp_path_factory.mktemp("prior")
    csv = folder / "as.csv"
    ankylosing_spondylitis().to_csv(csv, index=False)
    out = folder / "map.json"
    rc = main(["prior", "map", "--family", "binomial", "--data", str(csv), "--tau-prior", "HalfNormal(sigma=1)",
               "--draws", "500", "--tune", "500", "--chains", "2", "--seed", "3", "--out", str(out)])
    assert rc == 0
    return out


def test_map_writes_a_prior_file_with_summary_and_ess(as_prior):
    doc = json.loads(as_prior.read_text())
    assert doc["format"] == "bayespk-prior" and doc["family"] == "beta" and doc["scale"] == "natural"
    assert abs(sum(doc["weights"]) - 1) < 1e-9 and len(doc["a"]) == len(doc["b"]) == len(doc["weights"])
    assert 0.2 < doc["summary"]["mean"] < 0.32
    assert set(doc["ess"]) == {"moment", "morita", "elir"} and all(v > 0 for v in doc["ess"].values())
    assert doc["ess_unit"] == "patients"
    src = doc["source"]
    assert src["tau_prior"] == {"dist": "HalfNormal", "sigma": 1.0} and src["diagnostics"]["seed"] == 3
    assert src["n_studies"] == 8 and src["mixture_fit"]["chosen_K"] == len(doc["weights"])


def test_robustify_and_show(as_prior, tmp_path, capsys):
    out = tmp_path / "robust.json"
    rc, stdout, _ = run_main(capsys, "prior", "robustify", as_prior, "--weight", "0.2", "--mean", "0.5", "--out", out)
    assert rc == 0 and "wrote" in stdout
    mix, doc = read_prior(out)
    base, _ = read_prior(as_prior)
    assert mix.weights[-1] == pytest.approx(0.2) and (mix.a[-1], mix.b[-1]) == (1.0, 1.0)
    assert doc["robust"] == {"weight": 0.2, "mean": 0.5, "n": 1.0}
    assert doc["ess"]["elir"] < json.loads(as_prior.read_text())["ess"]["elir"]
    assert mix.n_components == base.n_components + 1
    rc, stdout, _ = run_main(capsys, "prior", "show", out)
    assert rc == 0 and "ESS (patients)" in stdout and "elir" in stdout


@pytest.mark.parametrize("args, match", [
    (["map", "--family", "binomial", "--data", "{missing}", "--out", "x.json"], "no such file"),
    (["map", "--family", "binomial", "--data", "{bad}", "--out", "x.json"], r"row 2, column r .*exceeds n"),
    (["map", "--family", "binomial", "--data", "{good}", "--tau-prior", "HalfNormal(sigma=-1)", "--out", "x.json"],
     "sigma of HalfNormal must be > 0"),
    (["map", "--family", "binomial", "--data", "{good}", "--tau-prior", "Normal(0, 1)", "--out", "x.json"],
     "positive prior"),
    (["map", "--family", "binomial", "--data", "{good}", "--log", "--out", "x.json"], "--log applies"),
    (["map", "--family", "normal", "--data", "{good}", "--out", "x.json"], "missing column"),
    (["robustify", "{good}", "--weight", "0.2", "--out", "x.json"], "not valid JSON|not a bayespk prior"),
])  # fmt: skip
def test_user_errors_exit_2_with_one_paragraph(tmp_path, capsys, args, match):
    good = tmp_path / "good.csv"
    good.write_text("study,n,r\na,10,3\nb,20,5\n")
    bad = tmp_path / "bad.csv"
    bad.write_text("study,n,r\na,10,3\nb,20,25\n")
    argv = [a.format(missing=tmp_path / "nope.csv", good=good, bad=bad) for a in args]
    rc, _, err = run_main(capsys, "prior", *argv)
    assert rc == EXIT_USER_ERROR
    assert err.startswith("bayespk prior: error:") and "Traceback" not in err
    assert len(err.strip().splitlines()) == 1
    import re

    assert re.search(match, err), err


def test_robustify_weight_out_of_range(as_prior, capsys):
    rc, _, err = run_main(capsys, "prior", "robustify", as_prior, "--weight", "1.5", "--out", "x.json")
    assert rc == EXIT_USER_ERROR and "between 0 and 1" in err


def test_parse_prior():
    assert parse_prior("HalfNormal(1)").params == {"sigma": 1.0}
    assert parse_prior("Normal(mu=-1, sigma=2)").params == {"mu": -1.0, "sigma": 2.0}
    with pytest.raises(SpecError, match="unknown distribution"):
        parse_prior("Halfnormal(1)")
    with pytest.raises(SpecError, match="expected a distribution"):
        parse_prior("1.0")


def test_cli_entry_point_lists_prior():
    out = subprocess.run([sys.executable, "-m", "bayespk.cli", "prior", "--help"], capture_output=True, text=True,
                         cwd=REPO, check=False)
    assert out.returncode == 0 and "map" in out.stdout and "robustify" in out.stdout


def test_map_of_pk_estimates_on_the_log_scale_feeds_a_spec(tmp_path, capsys):
    """Published typical CL values (estimate, SE) -> a log-scale prior file -> a spec's typical prior."""
    csv = tmp_path / "cl.csv"
    csv.write_text("study,y,se\nA,5.0,0.4\nB,5.6,0.6\nC,4.6,0.5\n")
    out = tmp_path / "cl.json"
    rc, stdout, _ = run_main(capsys, "prior", "map", "--family", "normal", "--data", csv, "--log", "--sigma", "0.3",
                             "--parameter", "CL", "--draws", "500", "--tune", "500", "--chains", "2", "--seed", "1",
                             "--out", out)
    assert rc == 0 and "natural scale" in stdout
    doc = json.loads(out.read_text())
    assert doc["scale"] == "log" and doc["family"] == "normal" and doc["sigma"] == 0.3
    assert 4.0 < doc["summary_natural"]["50%"] < 6.5
    from bayespk.model.priors import MixturePrior

    prior = MixturePrior.from_file(out)
    assert prior.support == "positive" and prior.scale == "log"
