"""BLRM with escalation with overdose control (bayespk.design.blrm).

The independent reference is the posterior computed here by 2-D quadrature on a fine grid of
(log alpha, log beta) (numpy only; nothing from the library but the data layout). Published numbers, typed in
with their source beside them:

* trialr README (github.com/brockk/trialr, ``stan_nbg``, "reproducing one of the analyses" of Neuenschwander,
  Branson & Gsponer 2008, Stat Med 27:2420, lower right pane of its Figure 1): doses 1, 2.5, 5, 10, 15, 20,
  25, 30, 40, 50, 75, 100, 150, 200, 250 with d* = 250, outcomes ``1NNN 2NNNN 3NNNN 4NNNN 7TT``, independent
  priors log alpha ~ N(2.15, 0.84), log beta ~ N(0.52, 0.8); printed posterior mean (``ProbTox``) and median
  (``MedianProbTox``) of the DLT probability per dose from 4 chains x 1000 Stan draws (seed 2020).
* OncoBayes2 (CRAN mirror github.com/cran/OncoBayes2, version 0.9-3) ``hist_SA`` (read with R from
  data/hist_SA.rda): the Neuenschwander et al. (2008) trial as 1 mg 0/3, 2.5 mg 0/4, 5 mg 0/5, 10 mg 0/4,
  25 mg 2/2 (18 patients; trialr's string has 4 patients at 5 mg), with the prior of its single-agent example
  BVN((logit 0.5, log 1), diag(2^2, 1^2)) and d_ref = 50 (as its example code; its help text says 250).
* OncoBayes2 vignette "map_approach" (inst/doc/map_approach.html, 0.9-3): MAP priors for drug A (hist_A,
  d_ref 80, mu ~ BVN((logit 0.2, 0), diag(1, (log 4 / 1.96)^2)), tau ~ log-normal medians (0.5, 0.25),
  log-SD log(2)/1.96) and drug B (hist_B, d_ref 1, tau medians (0.125, 0.0625), log-SD log(4)/1.96), printed
  as
  RBesT ``automixfit`` bivariate-normal mixtures (4 chains x 500 draws).
"""

import json
import math
import re

import numpy as np
import pandas as pd
import pytest
from scipy.special import expit, logsumexp

from bayespk.cli import main
from bayespk.design.blrm import (
    BVNMixture,
    blrm_map_prior,
    blrm_posterior,
    ewoc_decision,
    fit_bvn_mixture,
    read_blrm_prior,
    write_blrm_prior,
)
from bayespk.design.escalation import DesignError

NBG_DOSES = [1, 2.5, 5, 10, 15, 20, 25, 30, 40, 50, 75, 100, 150, 200, 250]
TRIALR_N = [3, 4, 4, 4, 0, 0, 2]
TRIALR_R = [0, 0, 0, 0, 0, 0, 2]
TRIALR_PRIOR = BVNMixture.single((2.15, 0.52), (0.84, 0.8), 0.0)
# trialr README, stan_nbg fit: ProbTox (posterior mean) and MedianProbTox per dose 1..15
TRIALR_MEAN = [
    0.0126,
    0.0325,
    0.0675,
    0.1385,
    0.2064,
    0.2692,
    0.3264,
    0.3780,
    0.4661,
    0.5371,
    0.6616,
    0.7390,
    0.8259,
    0.8717,
    0.8993,
]
TRIALR_MEDIAN = [
    0.00563,
    0.01967,
    0.04934,
    0.11863,
    0.18937,
    0.25641,
    0.31878,
    0.37409,
    0.46884,
    0.54698,
    0.67700,
    0.75753,
    0.84691,
    0.89297,
    0.91986,
]
SA_DOSES = [1, 2.5, 5, 10, 25]  # OncoBayes2 hist_SA
SA_N, SA_R = [3, 4, 5, 4, 2], [0, 0, 0, 0, 2]
SA_PRIOR = BVNMixture.single((0.0, 0.0), (2.0, 1.0), 0.0)  # logit(1/2) = 0, log(1) = 0


# ---------------------------------------------------------------- quadrature reference
def bvn_logpdf(la, lb, mean, sd, corr):
    z0, z1 = (la - mean[0]) / sd[0], (lb - mean[1]) / sd[1]
    q = (z0**2 - 2 * corr * z0 * z1 + z1**2) / (1 - corr**2)
    return -math.log(2 * math.pi * sd[0] * sd[1] * math.sqrt(1 - corr**2)) - 0.5 * q


def quadrature(doses, d_ref, n, r, components, half_width=9.0, points=801):
    """Posterior of (log alpha, log beta) on a grid: returns (grid weights, function pi_d on the grid).

    ``components``: list of (weight, mean, sd, corr). The grid spans the prior mean +- half_width prior SDs
    (the widest component), midpoint rule."""
    w = np.array([c[0] for c in components])
    centre = sum(c[0] * np.asarray(c[1], float) for c in components)
    sd = np.max([c[2] for c in components], axis=0)
    la = centre[0] + np.linspace(-half_width, half_width, points) * sd[0]
    lb = centre[1] + np.linspace(-half_width, half_width, points) * sd[1]
    LA, LB = np.meshgrid(la, lb, indexing="ij")
    logp = logsumexp([math.log(wk) + bvn_logpdf(LA, LB, *c[1:]) for wk, c in zip(w, components)], axis=0)
    x = np.log(np.asarray(doses, float) / d_ref)
    for xi, ni, ri in zip(x, n, r):
        eta = LA + np.exp(LB) * xi
        logp = logp + ri * -np.logaddexp(0, -eta) + (ni - ri) * -np.logaddexp(0, eta)
    wgt = np.exp(logp - logp.max())
    wgt /= wgt.sum()

    def pi(d):
        return expit(LA + np.exp(LB) * math.log(d / d_ref))

    return wgt, pi


def quad_summary(doses, d_ref, n, r, components):
    wgt, pi = quadrature(doses, d_ref, n, r, components)
    out = []
    flat_w = wgt.ravel()
    for d in doses:
        p = pi(d).ravel()
        order = np.argsort(p)
        cdf = np.cumsum(flat_w[order])
        q = [float(p[order][np.searchsorted(cdf, u)]) for u in (0.025, 0.5, 0.975)]
        out.append(
            {
                "under": float(flat_w[p < 0.16].sum()),
                "target": float(flat_w[(p >= 0.16) & (p < 0.33)].sum()),
                "over": float(flat_w[p >= 0.33].sum()),
                "mean": float(flat_w @ p),
                "q2.5": q[0],
                "q50": q[1],
                "q97.5": q[2],
            }
        )
    return pd.DataFrame(out)


def comps(prior: BVNMixture):
    return [(w, m, s, r) for w, m, s, r in zip(prior.weights, prior.means, prior.sds, prior.corr)]


def test_quadrature_reproduces_trialr_published_posterior():
    q = quad_summary(NBG_DOSES, 250, TRIALR_N + [0] * 8, TRIALR_R + [0] * 8, comps(TRIALR_PRIOR))
    # trialr's numbers come from 4000 Stan draws: Monte Carlo error of a mean or median of pi_d at most ~0.006
    # (posterior SD of pi_d <= 0.15, effective sample size >= ~1000); tolerance 0.01.
    assert np.abs(q["mean"] - TRIALR_MEAN).max() < 0.01
    assert np.abs(q["q50"] - TRIALR_MEDIAN).max() < 0.01


# ---------------------------------------------------------------- sampler vs quadrature
def mcse_check(post, q, k=4.5):
    """Sampler vs quadrature within k Monte Carlo standard errors (arviz mcse per quantity)."""
    import arviz as az

    pi = post.pi()  # chains, draws, doses
    worst = 0.0
    for j in range(pi.shape[-1]):
        p = pi[..., j]
        for name, ind in (("under", p < 0.16), ("target", (p >= 0.16) & (p < 0.33)), ("over", p >= 0.33)):
            est = ind.mean()
            se = float(az.mcse(ind.astype(float), method="mean")) if 0 < est < 1 else 0.0
            err = abs(est - q[name][j])
            assert err <= k * se + 2e-3, (j, name, est, q[name][j], se)
            worst = max(worst, err)
        se = float(az.mcse(p, method="mean"))
        assert abs(p.mean() - q["mean"][j]) <= k * se + 1e-4, (j, "mean", p.mean(), q["mean"][j], se)
        for prob, col in ((0.025, "q2.5"), (0.5, "q50"), (0.975, "q97.5")):
            se = float(az.mcse(p, method="quantile", prob=prob))
            est = float(np.quantile(p, prob))
            assert abs(est - q[col][j]) <= k * se + 2e-3, (j, col, est, q[col][j], se)
    return worst


@pytest.mark.parametrize("case", ["trialr", "hist_SA", "robust_mixture"])
def test_sampler_agrees_with_quadrature(case):
    if case == "trialr":
        doses, d_ref, n, r, prior = NBG_DOSES, 250, TRIALR_N, TRIALR_R, TRIALR_PRIOR
    elif case == "hist_SA":
        doses, d_ref, n, r, prior = SA_DOSES, 50, SA_N, SA_R, SA_PRIOR
    else:  # a two-component prior: an informative BVN robustified with weight 0.2 (wide: SD 2, 1)
        doses, d_ref, n, r = SA_DOSES, 50, SA_N, SA_R
        prior = BVNMixture.single((-2.0, 0.3), (0.5, 0.4), -0.3).robustify(0.2)
    post = blrm_posterior(doses, d_ref, n, r, prior, seed=11)
    assert post.settings["divergences"] == 0
    q = quad_summary(
        doses,
        d_ref,
        list(n) + [0] * (len(doses) - len(n)),
        list(r) + [0] * (len(doses) - len(r)),
        comps(prior),
    )
    worst = mcse_check(post, q)
    assert worst < 0.03


def test_compiled_once_per_shape_and_reused():
    a = blrm_posterior(SA_DOSES, 50, SA_N, SA_R, SA_PRIOR, seed=1, draws=500, tune=500)
    b = blrm_posterior(
        SA_DOSES, 50, [3, 3], [0, 1], BVNMixture.single((-1, 0), (1, 0.5), 0.2), seed=2, draws=500, tune=500
    )
    assert b.settings["compile_seconds"] < 0.05 and b.settings["wall_seconds"] < 5
    assert a.table()["treated"].tolist() == [3, 4, 5, 4, 2] and b.table()["treated"].tolist() == [
        3,
        3,
        0,
        0,
        0,
    ]


# ---------------------------------------------------------------- EWOC decision
def make_post(theta, doses=(1, 2, 4, 8, 16), n=(3, 3, 0, 0, 0)):
    from bayespk.design.blrm import BLRMPosterior

    theta = np.asarray(theta, float).reshape(1, -1, 2)
    return BLRMPosterior(
        np.asarray(doses, float), 8.0, np.asarray(n), np.zeros(len(doses), int), SA_PRIOR, theta
    )


def test_ewoc_rule_step_and_overdose_control():
    rng = np.random.default_rng(0)
    theta = np.column_stack([rng.normal(math.log(0.3 / 0.7), 0.3, 20000), rng.normal(0.0, 0.2, 20000)])
    post = make_post(theta)
    ip = post.interval_probs()
    assert np.allclose(ip.sum(1), 1)
    dec = ewoc_decision(post)  # highest given: 2, so at most 4
    assert dec.table["step_ok"].tolist() == [True, True, True, False, False]
    safe = ip[:, 2] < 0.25
    assert dec.table["ewoc_ok"].tolist() == safe.tolist()
    elig = np.flatnonzero(safe & np.array([1, 1, 1, 0, 0], bool))
    assert dec.level == int(elig[np.argmax(ip[elig, 1])]) + 1
    dec_hi = ewoc_decision(post, rule="highest", max_step=None)
    assert dec_hi.level == int(np.flatnonzero(safe)[-1]) + 1
    assert dec_hi.dose == post.doses[dec_hi.level - 1]
    # every dose overdosing: stop
    toxic = make_post(np.column_stack([np.full(1000, 4.0), np.zeros(1000)]))
    stop = ewoc_decision(toxic)
    assert stop.dose is None and "every dose" in stop.reason and str(stop).startswith("stop")


@pytest.mark.parametrize(
    "kwargs, words",
    [
        ({"ewoc": 1.2}, "ewoc = 1.2"),
        ({"max_step": 0.5}, "max_step = 0.5"),
        ({"rule": "lowest"}, "rule = 'lowest'"),
        ({"current": 3}, "current = 3: not one of the doses"),
    ],
)
def test_ewoc_bad_settings(kwargs, words):
    post = make_post(np.zeros((10, 2)))
    with pytest.raises(DesignError, match=words.replace("(", r"\(").replace(")", r"\)")):
        ewoc_decision(post, **kwargs)


# ---------------------------------------------------------------- prior objects
@pytest.mark.parametrize(
    "args, words",
    [
        (([1.0], [[0, 0]], [[0.0, 1]], [0]), r"prior.sds\[1\]\[1\] = 0: the SD of log alpha must be > 0"),
        (([1.0], [[0, 0]], [[1, -2]], [0]), r"prior.sds\[1\]\[2\] = -2: the SD of log beta"),
        (([1.0], [[0, 0]], [[1, 1]], [1.0]), r"prior.corr\[1\] = 1: the correlation must lie in \(-1, 1\)"),
        (([0.5, 0.6], [[0, 0], [0, 0]], [[1, 1], [1, 1]], [0, 0]), "prior.weights: they sum to 1.1"),
        (([1.0], [[0, 0]], [[1, 1], [1, 1]], [0]), "prior.sds: expected K pairs"),
    ],
)
def test_bvn_mixture_refuses_bad_parameters(args, words):
    with pytest.raises(DesignError, match=words):
        BVNMixture(*args)


def test_mixture_fit_file_round_trip_and_robustify(tmp_path):
    true = BVNMixture([0.6, 0.4], [[-2, 0.5], [-1, -0.3]], [[0.4, 0.3], [0.5, 0.4]], [-0.5, 0.3])
    draws = true.sample(8000, seed=3)
    fit = fit_bvn_mixture(draws, n_components=2)
    order = np.argsort(fit.means[:, 0])
    assert np.allclose(fit.weights[order], [0.6, 0.4], atol=0.05)
    assert np.allclose(fit.means[order], true.means, atol=0.08)
    assert np.allclose(fit.corr[order], true.corr, atol=0.08)
    # the ML mixture keeps the sample's first two moments
    assert np.allclose(fit.mean(), draws.mean(0), atol=1e-3) and np.allclose(
        fit.cov(), np.cov(draws.T), atol=5e-3
    )
    auto = fit_bvn_mixture(draws)
    assert auto.n_components >= 2
    rob = fit.robustify(0.2)
    assert rob.n_components == 3 and rob.weights[-1] == pytest.approx(0.2)
    assert np.allclose(rob.means[-1], fit.mean()) and np.allclose(rob.sds[-1], [2, 1])
    path = write_blrm_prior(tmp_path / "p.json", rob)
    back = read_blrm_prior(path)
    assert np.allclose(back.weights, rob.weights) and np.allclose(back.means, rob.means)
    short = tmp_path / "s.json"
    short.write_text(json.dumps({"mean": [0, 0], "sd": [2, 1], "corr": 0.1}))
    assert read_blrm_prior(short).corr.tolist() == [0.1]
    bad = tmp_path / "b.json"
    bad.write_text(json.dumps({"mean": [0, 0], "sd": [2, 0]}))
    with pytest.raises(DesignError, match=r"prior.sds\[1\]\[2\] = 0"):
        read_blrm_prior(bad)
    with pytest.raises(DesignError, match="weight = 1"):
        fit.robustify(1.0)


# ---------------------------------------------------------------- MAP prior
HIST_A = pd.DataFrame(
    {
        "study": "trial_A",
        "dose": [12.5, 25, 50, 80, 100, 150],
        "n": [1, 1, 3, 9, 23, 3],
        "r": [0, 0, 0, 1, 4, 2],
    }
)
HIST_B = pd.DataFrame(
    {
        "study": "trial_B",
        "dose": [0.125, 0.25, 0.5, 1, 2, 2.5, 3, 4],
        "n": [2, 1, 2, 2, 3, 7, 12, 3],
        "r": [0, 0, 0, 0, 1, 0, 0, 1],
    }
)
# OncoBayes2 map_approach vignette, printed automixfit results (w, m[intercept], m[log_slope], s[...], rho)
PUB_A = BVNMixture(
    [0.56206771, 0.43793229],
    [[-1.88227571, 0.59136954], [-1.52601780, 0.01259954]],
    [[0.68030368, 0.59829373], [0.92524450, 0.73241598]],
    [-0.29870546, 0.12832698],
)
PUB_B = BVNMixture(
    [0.37748737, 0.37130812, 0.25120451],
    [[-2.62052660, -0.36785969], [-2.62077157, -0.78173676], [-3.09269497, -0.08761646]],
    [[0.42385373, 0.40861667], [0.66468212, 0.51156577], [0.66682656, 0.40148441]],
    [-0.39229212, -0.05739021, -0.50121005],
)


@pytest.mark.parametrize("drug", ["A", "B"])
def test_map_prior_reproduces_oncobayes2_vignette(drug):
    from bayespk.model.priors import Prior

    mu_prior = BVNMixture.single((math.log(0.2 / 0.8), 0.0), (1.0, math.log(4) / 1.96), 0.0)
    if drug == "A":
        hist, d_ref, pub, med, lsd = HIST_A, 80, PUB_A, (0.5, 0.25), math.log(2) / 1.96
    else:
        hist, d_ref, pub, med, lsd = HIST_B, 1, PUB_B, (0.125, 0.0625), math.log(4) / 1.96
    fit = blrm_map_prior(
        hist,
        d_ref,
        mu_prior=mu_prior,
        tau_alpha=Prior("LogNormal", mu=math.log(med[0]), sigma=lsd),
        tau_beta=Prior("LogNormal", mu=math.log(med[1]), sigma=lsd),
        seed=5,
    )
    assert fit.settings["divergences"] == 0
    mix = fit.mixture()
    # The published mixture came from 2000 Stan draws: Monte Carlo SE of a mean ~0.02, of an SD ~0.015; ours
    # from 8000. Tolerances about 4 combined SEs: means 0.08, SDs 0.07, correlation 0.1.
    assert np.allclose(mix.mean(), pub.mean(), atol=0.08), (mix.mean(), pub.mean())
    assert np.allclose(mix.sd(), pub.sd(), atol=0.07), (mix.sd(), pub.sd())
    r_ours = mix.cov()[0, 1] / np.prod(mix.sd())
    r_pub = pub.cov()[0, 1] / np.prod(pub.sd())
    assert abs(r_ours - r_pub) < 0.1, (r_ours, r_pub)


def test_map_prior_without_heterogeneity_recovers_truth():
    from bayespk.model.priors import Prior

    rng = np.random.default_rng(17)
    truth = np.array([math.log(0.25 / 0.75), math.log(1.2)])
    doses, d_ref = np.array([5, 10, 20, 40, 80]), 40.0
    rows = []
    for j in range(5):  # five studies, the same true curve (no between-study heterogeneity)
        for d in doses:
            p = expit(truth[0] + math.exp(truth[1]) * math.log(d / d_ref))
            rows.append({"study": f"s{j}", "dose": d, "n": 12, "r": int(rng.binomial(12, p))})
    fit = blrm_map_prior(
        pd.DataFrame(rows),
        d_ref,
        tau_alpha=Prior("HalfNormal", sigma=0.25),
        tau_beta=Prior("HalfNormal", sigma=0.125),
        seed=3,
    )
    mix = fit.mixture()
    assert np.all(np.abs(mix.mean() - truth) < mix.sd()), (mix.mean(), mix.sd(), truth)
    assert np.all(mix.sd() < [0.6, 0.5])  # informative: far narrower than the BVN(0, diag(4, 1)) mu prior


@pytest.mark.parametrize(
    "rows, words",
    [
        ({"study": ["a"], "dose": [0], "n": [3], "r": [0]}, "row 1, column dose: 0 must be positive"),
        ({"study": ["a"], "dose": [1], "n": [3], "r": [4]}, "row 1, column r: 4 DLTs > n = 3"),
        ({"study": ["a"], "dose": [1], "n": [3]}, "missing column"),
    ],
)
def test_map_prior_refuses_bad_history(rows, words):
    with pytest.raises(DesignError, match=words):
        blrm_map_prior(pd.DataFrame(rows), 10)


# ---------------------------------------------------------------- CLI
def run_cli(capsys, *argv):
    code = main(["design", *argv])
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_next_blrm_prints_table_and_decision(capsys, tmp_path):
    prior = write_blrm_prior(tmp_path / "prior.json", TRIALR_PRIOR)
    code, out, err = run_cli(
        capsys,
        "next",
        "--design",
        "blrm",
        "--doses",
        ",".join(map(str, NBG_DOSES)),
        "--dref",
        "250",
        "--treated",
        "3,4,4,4,0,0,2",
        "--dlt",
        "0,0,0,0,0,0,2",
        "--prior",
        str(prior),
    )
    assert code == 0, err
    lines = out.splitlines()
    assert any("P(0.16-0.33)" in ln and "P(>=0.33)" in ln for ln in lines)
    table = [ln.split() for ln in lines if ln.strip() and ln.split()[0] in {f"{d:g}" for d in NBG_DOSES}]
    assert len(table) == 15
    q = quad_summary(NBG_DOSES, 250, TRIALR_N + [0] * 8, TRIALR_R + [0] * 8, comps(TRIALR_PRIOR))
    assert np.allclose([float(t[5]) for t in table], q["over"], atol=0.03)
    # the decision, from the quadrature: eligible = P(over) < 0.25 and dose <= 2 x 25; best P(target)
    elig = (q["over"] < 0.25) & (np.array(NBG_DOSES) <= 50)
    best = NBG_DOSES[int(np.flatnonzero(elig)[np.argmax(q["target"][elig])])]
    assert lines[-1].startswith(f"next dose {best:g} ")
    code, out, _ = run_cli(
        capsys,
        "next",
        "--design",
        "blrm",
        "--doses",
        "1,2.5,5,10,25",
        "--dref",
        "50",
        "--treated",
        "3,4,5,4,2",
        "--dlt",
        "0,0,0,0,2",
        "--json",
    )
    assert code == 0
    d = json.loads(out)
    assert len(d["table"]) == 5 and d["prior"]["means"] == [[0.0, 0.0]]


@pytest.mark.parametrize(
    "argv, words",
    [
        (["--prior-mean", "0,0", "--prior-sd", "2,0"], "--prior-sd: value 2 (0) must be > 0"),
        (
            ["--prior-mean", "0,0", "--prior-sd", "2,1", "--prior-corr", "1"],
            "--prior-corr 1: the correlation",
        ),
        (["--prior-mean", "0,0,1", "--prior-sd", "2,1"], "--prior-mean: expected 2 values"),
        (["--doses", "1,5,2"], "doses[3] = 2: doses must be strictly increasing"),
        (["--doses", "0,1,2"], "doses[1] = 0: doses must be positive"),
        (["--dref", "-1"], "d_ref = -1: the reference dose must be positive"),
        (["--dlt", "4"], "dose 1: 4 DLTs in 3 patients treated"),
        (["--ewoc", "0"], "ewoc = 0"),
        (["--target", "0.3"], "--target: not used by --design blrm"),
    ],
)
def test_cli_blrm_bad_input_exit_2(capsys, argv, words):
    base = {"--doses": "1,2,4", "--dref": "4", "--treated": "3", "--dlt": "0"}
    extra = []
    i = 0
    while i < len(argv):
        if argv[i] in base:
            base[argv[i]] = argv[i + 1]
        else:
            extra += argv[i : i + 2]
        i += 2
    args = ["next", "--design", "blrm"] + [x for kv in base.items() for x in kv] + extra
    code, _, err = run_cli(capsys, *args)
    assert code == 2, err
    assert words in err and "Traceback" not in err


def test_cli_blrm_bad_prior_file_names_the_key(capsys, tmp_path):
    bad = tmp_path / "p.json"
    bad.write_text(json.dumps({"weights": [1], "means": [[0, 0]], "sds": [[2, 1]], "corr": [-1.5]}))
    code, _, err = run_cli(
        capsys,
        "next",
        "--design",
        "blrm",
        "--doses",
        "1,2",
        "--dref",
        "2",
        "--treated",
        "3",
        "--dlt",
        "0",
        "--prior",
        str(bad),
    )
    assert code == 2 and "prior.corr[1] = -1.5: the correlation must lie in (-1, 1)" in err


def test_cli_blrm_only_for_next_and_rule_based_next_unchanged(capsys):
    code, _, err = run_cli(capsys, "boundaries", "--design", "blrm")
    assert code == 2 and "--design blrm" in err
    code, _, err = run_cli(
        capsys, "next", "--design", "boin", "--target", "0.3", "--doses", "3", "--treated", "3", "--dlt", "0"
    )
    assert code == 2 and "--current: required for --design boin" in err
    code, _, err = run_cli(
        capsys,
        "next",
        "--design",
        "boin",
        "--target",
        "0.3",
        "--doses",
        "1,2",
        "--treated",
        "3",
        "--dlt",
        "0",
        "--current",
        "1",
    )
    assert code == 2 and "--doses '1,2': expected the number of dose levels" in err


# ---------------------------------------------------------------- grid posterior, simulated operating characteristics
def test_grid_posterior_agrees_with_nuts_and_fine_quadrature():
    """The simulation's grid posterior (241 x 241 points, +-6 prior SDs) against (a) the NUTS posterior of
    blrm_posterior within 4.5 Monte Carlo SEs plus the stated 0.01 discretisation bound, and (b) the fine
    reference quadrature above (801 x 801 points, +-9 SDs) within 0.01."""
    import arviz as az

    from bayespk.design.blrm_simulation import blrm_grid_posterior

    g = blrm_grid_posterior(SA_DOSES, 50, SA_N, SA_R, SA_PRIOR)
    ip, mean = g.interval_probs(), g.mean_pi()
    q = quad_summary(SA_DOSES, 50, SA_N, SA_R, comps(SA_PRIOR))
    assert np.abs(ip - q[["under", "target", "over"]].to_numpy()).max() < 0.01
    assert np.abs(mean - q["mean"].to_numpy()).max() < 0.005
    post = blrm_posterior(SA_DOSES, 50, SA_N, SA_R, SA_PRIOR, draws=1000, chains=2, seed=5)
    pi = post.pi()
    for j in range(len(SA_DOSES)):
        p = pi[..., j]
        for k, ind in enumerate((p < 0.16, (p >= 0.16) & (p < 0.33), p >= 0.33)):
            est = ind.mean()
            se = float(az.mcse(ind.astype(float), method="mean")) if 0 < est < 1 else 0.0
            assert abs(est - ip[j, k]) <= 4.5 * se + 0.01, (j, k, est, ip[j, k], se)
        se = float(az.mcse(p, method="mean"))
        assert abs(p.mean() - mean[j]) <= 4.5 * se + 0.005, (j, p.mean(), mean[j], se)
    theta = post.draws.mean(0)
    assert np.abs(theta - g.mean_theta()).max() < 0.1


def test_blrm_operating_characteristics_select_the_mtd_most_often():
    """Doses 1, 2, 4, 8, 16, 32 (d_ref 16), true DLT probabilities 0.01, 0.03, 0.06, 0.20, 0.50, 0.70: dose 8
    is the only one in the target interval [0.16, 0.33). 150 trials of 10 cohorts of 3 through the Dask runner
    (1 worker, ~5 s): dose 8 is selected most often, in more than half of the trials (its selection SE is ~4
    points at 60%), and doses at or above 0.33 in less than 10%."""
    from bayespk.design.blrm_simulation import blrm_operating_characteristics

    oc = blrm_operating_characteristics([1, 2, 4, 8, 16, 32], 16, [0.01, 0.03, 0.06, 0.2, 0.5, 0.7], trials=150,
                                        seed=1, tasks=2, workers=1, progress=False)
    assert oc.trials == 150 and int(np.argmax(oc.select_pct)) == 3
    assert oc.select_pct[3] > 50 and oc.target_select_pct == oc.select_pct[3]
    assert oc.overdose_select_pct < 10
    assert sum(oc.select_pct) + oc.stopped_pct == pytest.approx(100)
    assert oc.patients[5] < 1  # the 0.70 dose is rarely given


@pytest.mark.parametrize("kwargs, words", [
    (dict(scenario=[0.1, 0.2]), "scenario has 2 values for 6 doses"),
    (dict(scenario=[0.1] * 5 + [1.2]), "dose 6 has DLT probability 1.2"),
    (dict(ewoc=1.5), "ewoc = 1.5"),
    (dict(rule="lowest"), "rule = 'lowest'"),
    (dict(points=5), "points = 5"),
])
def test_blrm_operating_characteristics_refuse_bad_settings(kwargs, words):
    from bayespk.design.blrm_simulation import blrm_operating_characteristics

    args = dict(doses=[1, 2, 4, 8, 16, 32], d_ref=16, scenario=[0.01, 0.03, 0.06, 0.2, 0.5, 0.7], trials=10)
    args.update(kwargs)
    with pytest.raises(DesignError, match=re.escape(words)):
        blrm_operating_characteristics(**args)


# ---------------------------------------------------------------- EXNEX MAP prior
def exnex_history():
    """Four similar studies (about logit 0.2 at d_ref 4, slope 1: 0-1 of 6 at doses 1, 2, 0-1 at 4, 2 at 8) and
    one, X, far more toxic (3, 4, 5, 6 of 6): not exchangeable with the others."""
    rows = []
    for s, rs in {"A": [0, 1, 1, 2], "B": [0, 0, 1, 2], "C": [0, 1, 1, 2], "D": [1, 0, 1, 2],
                  "X": [3, 4, 5, 6]}.items():
        rows += [(s, d, 6, r) for d, r in zip([1, 2, 4, 8], rs)]
    return pd.DataFrame(rows, columns=["study", "dose", "n", "r"])


@pytest.mark.slow
def test_exnex_map_prior_down_weights_a_non_exchangeable_study():
    """EXNEX (Neuenschwander et al. 2016) with p_exch = 0.8: study X's posterior probability of exchangeability
    is small and the others' large; the MAP prior then agrees with the MAP prior from the four similar studies
    alone (within 0.15 on the means: Monte Carlo SE ~0.02 from 1000 draws of SD ~0.45), while the fully
    exchangeable MAP prior is pulled towards X by more than 0.5 on log alpha."""
    hist = exnex_history()
    settings = dict(draws=500, tune=500, chains=2, seed=1)
    exnex = blrm_map_prior(hist, 4, p_exch=0.8, **settings)
    assert exnex.settings["divergences"] == 0
    w = exnex.summary()["p_exch_posterior"]
    assert w["X"] < 0.05 and min(w[s] for s in "ABCD") > 0.8
    clean = blrm_map_prior(hist[hist.study != "X"], 4, **settings)
    ex = blrm_map_prior(hist, 4, **settings)
    assert np.abs(exnex.sample.mean(0) - clean.sample.mean(0)).max() < 0.15
    assert abs(exnex.sample.std(0)[0] - clean.sample.std(0)[0]) < 0.1
    assert ex.sample.mean(0)[0] - clean.sample.mean(0)[0] > 0.5


@pytest.mark.parametrize("kwargs, words", [
    (dict(p_exch=[0.5, 0.5]), "p_exch: 2 values for 5 studies"),
    (dict(p_exch=0.0), "p_exch[A] = 0: a probability in (0, 1]"),
    (dict(p_exch=0.5, nex_prior={"mean": [0, 0], "sd": [0, 1]}), "sds[1][1] = 0"),
])
def test_exnex_refuses_bad_settings(kwargs, words):
    with pytest.raises(DesignError, match=re.escape(words)):
        blrm_map_prior(exnex_history(), 4, **kwargs)


def test_cli_simulate_blrm(capsys, tmp_path):
    out_dir = tmp_path / "oc"
    argv = ["simulate", "--design", "blrm", "--doses", "1,2,4,8,16,32", "--dref", "16", "--scenario",
            "0.01,0.03,0.06,0.2,0.5,0.7", "--prior-mean", "0,0", "--prior-sd", "2,1", "--trials", "20",
            "--tasks", "1", "--out", str(out_dir), "--workers", "1", "--quiet"]
    code, out, _ = run_cli(capsys, *argv)
    assert code == 0, out
    rows = (out_dir / "oc.csv").read_text().splitlines()
    assert rows[0] == "dose,p_true,select_pct,patients,dlts" and len(rows) == 1 + 6 + 1
    summary = json.loads((out_dir / "summary.json").read_text())
    assert summary["design"] == "blrm" and summary["trials"] == 20 and summary["rule"] == "highest"
    assert "MTD in the target interval" in out


@pytest.mark.parametrize("argv, words", [
    (["simulate", "--design", "blrm", "--dref", "16", "--scenario", "0.1,0.2", "--out", "unused"],
     "--doses: required for --design blrm"),
    (["simulate", "--design", "blrm", "--doses", "1,2", "--dref", "16", "--scenario", "0.1,0.2", "--target", "0.3",
      "--out", "unused"], "--target: not used by --design blrm"),
    (["simulate", "--design", "boin", "--target", "0.3", "--scenario", "0.1,0.2", "--dref", "16", "--out",
      "unused"], "--dref: only for --design blrm"),
])
def test_cli_simulate_blrm_bad_input(capsys, argv, words):
    code, _, err = run_cli(capsys, *argv)
    assert code == 2 and words in err
