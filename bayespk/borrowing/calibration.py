"""Simulation-based calibration (SBC) of the MAP random-effects model.

Talts et al. (2018, arXiv:1804.06788): draw the parameters from the prior,
simulate a meta-analysis from them, fit it, and record the rank of each true
value among ``L`` (thinned) posterior draws. If the sampler and the model code
are right, every rank is uniform on ``0..L``; a chi-square test on binned ranks
checks it. The compiled model is reused across datasets (``with_data``), so
only the first fit compiles.

Quantities ranked: ``tau``, the intercept ``beta`` and the predictive mean of
``theta_new`` (``E[g^-1(beta + tau z)]``, a function of both, computed by
Gauss-Hermite quadrature).

:func:`binomial_map_reference` computes the MAP prior of binomial data
without MCMC, by quadrature, as an independent reference.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from scipy import stats

from bayespk import sampling
from bayespk.borrowing.map_prior import compiled_map_model, data_updates, default_priors, inverse_link
from bayespk.errors import SpecError
from bayespk.model.priors import Prior

__all__ = ["binomial_map_reference", "rank_uniformity", "sbc_map"]


def binomial_map_reference(n, r, tau_scale: float = 1.0, beta_sd: float = 2.0, beta_mean: float = 0.0,
                           grid: tuple[int, int] = (401, 400), nodes: int = 50) -> dict[str, float]:
    """Exact (quadrature) moments of the binomial MAP prior with tau ~ HalfNormal(tau_scale),
    beta ~ N(beta_mean, beta_sd).

    The posterior of (beta, tau) is evaluated on a grid (beta over its prior
    +- 3 SD around the pooled logit, tau over 0..4 tau_scale), each study's
    likelihood integrated over its random effect by Gauss-Hermite quadrature;
    the predictive mean and SD of theta_new follow by the same quadrature.

    Returns
    -------
    dict
        ``mean``, ``sd`` of the MAP prior, ``tau_mean``, ``tau_sd``.

    Examples
    --------
    >>> from bayespk.borrowing.datasets import ankylosing_spondylitis
    >>> d = ankylosing_spondylitis()
    >>> ref = binomial_map_reference(d.n, d.r)
    >>> round(ref["mean"], 3), round(ref["sd"], 3)
    (0.258, 0.087)
    """
    from scipy import special

    n, r = np.asarray(n), np.asarray(r)
    z, wz = np.polynomial.hermite_e.hermegauss(nodes)
    wz = wz / wz.sum()
    centre = special.logit(np.clip((r.sum() + 0.5) / (n.sum() + 1), 1e-6, 1 - 1e-6))
    mu = np.linspace(centre - 3.0, centre + 3.0, grid[0])
    tau = np.linspace(1e-4 * tau_scale, 4.0 * tau_scale, grid[1])
    m, t = np.meshgrid(mu, tau, indexing="ij")
    logpost = stats.norm(beta_mean, beta_sd).logpdf(m) + stats.halfnorm(scale=tau_scale).logpdf(t)
    p = special.expit(m[..., None] + t[..., None] * z)
    for nj, rj in zip(n, r):
        logpost += special.logsumexp(stats.binom.logpmf(rj, nj, p), b=wz, axis=-1)
    post = np.exp(logpost - logpost.max())
    post /= post.sum()
    m1 = float((post[..., None] * p * wz).sum())
    m2 = float((post[..., None] * p**2 * wz).sum())
    t1 = float((post * t).sum())
    t2 = float((post * t**2).sum())
    return {"mean": m1, "sd": float(np.sqrt(m2 - m1**2)), "tau_mean": t1, "tau_sd": float(np.sqrt(t2 - t1**2))}


def _predictive_mean(family: str, beta: np.ndarray, tau: np.ndarray) -> np.ndarray:
    z, w = np.polynomial.hermite_e.hermegauss(40)
    w = w / w.sum()
    eta = np.asarray(beta)[..., None] + np.asarray(tau)[..., None] * z
    return (inverse_link(family, eta) * w).sum(axis=-1)


def sbc_map(
    family: str = "binomial",
    *,
    n: list[int] | None = None,
    se: list[float] | None = None,
    exposure: list[float] | None = None,
    tau_prior: Prior | None = None,
    beta_prior: Prior | None = None,
    n_sims: int = 150,
    n_ranks: int = 99,
    draws: int = 500,
    tune: int = 500,
    chains: int = 2,
    seed: int = 0,
) -> pd.DataFrame:
    """Run SBC for the MAP model on simulated meta-analyses.

    Parameters
    ----------
    family : {"binomial", "normal", "poisson"}
    n, se, exposure : list
        Study design: patients per study (binomial; default the AS trial
        sizes), standard errors (normal) or exposures (poisson).
    tau_prior, beta_prior : Prior
        The priors data are simulated from and fitted with (defaults: as for
        binomial data, HalfNormal(1) and Normal(0, 2); for normal data
        HalfNormal(0.5) and Normal(0, 2); for Poisson HalfNormal(1), Normal(0, 1)).
    n_sims : int
        Simulated meta-analyses.
    n_ranks : int
        L: posterior draws kept (evenly thinned) per fit; ranks lie in 0..L.

    Returns
    -------
    DataFrame
        One row per simulation: the ranks of ``tau``, ``beta``, ``mean``
        (predictive mean), and the number of divergences.
    """
    if family == "binomial":
        n = n or [107, 44, 51, 39, 139, 20, 78, 35]
        design = pd.DataFrame({"study": [f"s{i}" for i in range(len(n))], "n": n, "r": [0] * len(n)})
        dflt = default_priors(design, "binomial")
    elif family == "normal":
        se = se or [0.2, 0.3, 0.25, 0.4, 0.15, 0.3]
        design = pd.DataFrame({"study": [f"s{i}" for i in range(len(se))], "y": 0.0, "se": se})
        dflt = (Prior("HalfNormal", sigma=0.5), Prior("Normal", mu=0.0, sigma=2.0))
    elif family == "poisson":
        exposure = exposure or [50.0, 80.0, 30.0, 120.0, 60.0, 40.0]
        design = pd.DataFrame({"study": [f"s{i}" for i in range(len(exposure))], "y": 0, "exposure": exposure})
        dflt = (Prior("HalfNormal", sigma=1.0), Prior("Normal", mu=0.0, sigma=1.0))
    else:
        raise SpecError(f"family must be binomial, normal or poisson, got {family!r}")
    tau_p = tau_prior or dflt[0]
    beta_p = beta_prior or dflt[1]
    j = len(design)
    model, compiled = compiled_map_model(family, j, tau_p, beta_p)
    import pymc as pm

    rng = np.random.default_rng(seed)
    rows = []
    for _ in range(n_sims):
        beta, tau = pm.draw([model["beta"], model["tau"]], random_seed=rng)
        theta = inverse_link(family, beta + tau * rng.standard_normal(j))
        d = design.copy()
        if family == "binomial":
            d["r"] = rng.binomial(d.n.to_numpy(), theta)
        elif family == "normal":
            d["y"] = rng.normal(theta, d.se.to_numpy())
        else:
            d["y"] = rng.poisson(theta * d.exposure.to_numpy())
        tree = sampling.sample(compiled, data=data_updates(family, d), draws=draws, tune=tune, chains=chains,
                               seed=int(rng.integers(2**31)), target_accept=0.99)
        post = tree["posterior"]
        b = post["beta"].values.ravel()
        t = post["tau"].values.ravel()
        keep = np.linspace(0, b.size - 1, n_ranks).round().astype(int)
        b, t = b[keep], t[keep]
        rows.append({
            "tau": int(np.sum(t < tau)),
            "beta": int(np.sum(b < beta)),
            "mean": int(np.sum(_predictive_mean(family, b, t) < _predictive_mean(family, beta, tau))),
            "divergences": int(tree["sample_stats"]["diverging"].values.sum()),
        })  # fmt: skip
    return pd.DataFrame(rows)


def rank_uniformity(ranks: pd.Series | np.ndarray, n_ranks: int = 99, bins: int = 10) -> float:
    """Chi-square test p-value that ranks in ``0..n_ranks`` are uniform, over ``bins`` equal-width bins."""
    r = np.asarray(ranks)
    counts = np.histogram(r, bins=np.linspace(-0.5, n_ranks + 0.5, bins + 1))[0]
    return float(stats.chisquare(counts).pvalue)
