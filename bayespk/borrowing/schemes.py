"""Other borrowing schemes, as PyMC models, for comparison with the (robust) MAP prior.

All work on the link scale of the data (logit for binomial, log for Poisson,
identity for normal data with known SE) and are sampled with NUTS (nutpie).

* **Power prior with fixed a0** (Ibrahim & Chen 2000, Stat Sci 15:46): the
  historical likelihood raised to ``a0`` in [0, 1] times an initial prior,
  ``p(theta | D0, a0) ~ L(theta | D0)^a0 p0(theta)``; a0 = 0 ignores the
  history, a0 = 1 pools it. Historical studies share the new study's
  parameter. For conjugate initial priors the result is closed form:
  :func:`power_prior_conjugate`.
* **Commensurate prior** (Hobbs et al. 2011, Biometrics 67:1047):
  ``theta_new ~ Normal(theta_hist, 1 / sqrt(tau))`` given the historical
  parameter; the commensurability ``tau`` (a precision) gets its own prior, so
  the data decide how much to borrow. Here the prior is put on the equivalent
  SD ``kappa = 1 / sqrt(tau)`` of the difference (default HalfNormal, as for
  the MAP heterogeneity), which reads on the same scale as tau in a MAP model.
  The historical studies share ``theta_hist``.
* **EXNEX** (Neuenschwander et al. 2016, Pharm Stat 15:123): each stratum
  (subgroup, study) is exchangeable with the others with prior probability
  ``p_exch`` (``theta_j ~ N(mu, tau)``) or non-exchangeable (``theta_j ~
  N(m_nex, s_nex)``, a weakly informative stratum-specific prior); the
  posterior probability of exchangeability of each stratum is reported.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from bayespk import sampling
from bayespk.borrowing.map_prior import default_priors, inverse_link, reference_sigma, validate_historical
from bayespk.borrowing.mixtures import BetaMixture, GammaMixture, Mixture, NormalMixture
from bayespk.errors import DataError, SpecError
from bayespk.model.priors import Prior

__all__ = ["SchemeFit", "commensurate_prior", "exnex", "power_prior", "power_prior_conjugate"]


@dataclass
class SchemeFit:
    """Posterior of a borrowing scheme.

    Attributes
    ----------
    scheme : str
    family : str
    tree : xarray.DataTree
    theta : ndarray
        Posterior draws of the new study's parameter on the natural scale
        (EXNEX: draws x strata).
    labels : list of str
        EXNEX: stratum labels.
    p_exchangeable : ndarray or None
        EXNEX: posterior probability that each stratum is exchangeable.
    """

    scheme: str
    family: str
    tree: xr.DataTree
    theta: np.ndarray
    labels: list[str] = field(default_factory=list)
    p_exchangeable: np.ndarray | None = None
    info: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> pd.DataFrame:
        """Mean, sd, 2.5%, 50%, 97.5% of theta (per stratum for EXNEX; plus P(exchangeable))."""
        th = self.theta if self.theta.ndim == 2 else self.theta[:, None]
        labels = self.labels or ["new"]
        q = np.quantile(th, [0.025, 0.5, 0.975], axis=0)
        out = pd.DataFrame({"mean": th.mean(axis=0), "sd": th.std(axis=0, ddof=1), "2.5%": q[0], "50%": q[1],
                            "97.5%": q[2]}, index=pd.Index(labels, name="stratum" if self.labels else "theta"))
        if self.p_exchangeable is not None:
            out["p_exchangeable"] = self.p_exchangeable
        return out

    def diagnostics(self) -> dict[str, Any]:
        import arviz as az

        post = self.tree["posterior"].to_dataset()
        free = [v for v in post.data_vars if v in self.info.get("free", [])]
        rhat = az.rhat(post[free])
        stats = self.tree["sample_stats"].to_dataset()
        return {"divergences": int(stats["diverging"].sum()),
                "max_r_hat": float(max(float(np.nanmax(rhat[v].values)) for v in free))}


# ---------------------------------------------------------------------- helpers
def _new_data(new: dict, family: str) -> dict[str, float]:
    req = {"binomial": ("r", "n"), "normal": ("y", "se"), "poisson": ("y", "exposure")}[family]
    if not isinstance(new, dict):
        raise DataError(f"new data: expected a dict with keys {', '.join(req)}, got {new!r}")
    missing = [k for k in req if k not in new]
    if missing:
        raise DataError(f"new data: missing {', '.join(missing)} (a {family} study needs {', '.join(req)})")
    frame = pd.DataFrame({"study": ["new"], **{k: [new[k]] for k in req}})
    row = validate_historical(frame, family).iloc[0]
    return {k: row[k] for k in req}


def _loglik(family: str, eta, d: dict):
    """Summed log-likelihood of data ``d`` (arrays) at link-scale ``eta`` (PyMC expression)."""
    import pymc as pm

    if family == "binomial":
        return pm.logp(pm.Binomial.dist(n=d["n"], logit_p=eta), d["r"]).sum()
    if family == "normal":
        return pm.logp(pm.Normal.dist(mu=eta, sigma=d["se"]), d["y"]).sum()
    return pm.logp(pm.Poisson.dist(mu=d["exposure"] * pm.math.exp(eta)), d["y"]).sum()


def _arrays(df: pd.DataFrame, family: str) -> dict[str, np.ndarray]:
    cols = {"binomial": ("n", "r"), "normal": ("y", "se"), "poisson": ("y", "exposure")}[family]
    return {c: df[c].to_numpy() for c in cols}


def _sample(model, draws, tune, chains, seed, target_accept, progress):
    """The posterior of ``model`` (a DataTree) and the seconds it took, compilation included."""
    t0 = time.perf_counter()
    tree = sampling.sample(sampling.compile_model(model), draws=draws, tune=tune, chains=chains, seed=seed,
                           target_accept=target_accept, progress=progress)
    return tree, time.perf_counter() - t0


def _initial(hist: pd.DataFrame, family: str, sigma: float | None, prior: Prior | None) -> Prior:
    if prior is not None:
        if not isinstance(prior, Prior) or prior.support != "real":
            raise SpecError("the initial prior of theta (link scale) must be a Prior on the real line, e.g. "
                            "Prior('Normal', mu=0, sigma=2)")
        return prior
    return default_priors(hist, family, sigma)[1]


# ---------------------------------------------------------------------- power prior
def power_prior_conjugate(hist: pd.DataFrame | str, family: str, a0: float, initial: Mixture | None = None,
                          sigma: float | None = None) -> Mixture:
    """The power prior ``L(theta | D0)^a0 p0(theta)`` in closed form, for a conjugate initial prior.

    Historical studies are pooled (they share theta). Binomial: Beta(a + a0 sum r, b + a0 sum(n - r));
    Poisson: Gamma(a + a0 sum y, b + a0 sum exposure); normal: precision ``1/s^2 + a0 sum 1/se_j^2``.
    Its ESS is the initial prior's plus ``a0`` times the historical sample size.

    Parameters
    ----------
    initial : Mixture with one component, optional
        Default: Beta(1, 1); Gamma(1e-3, 1e-3); N(0, 1e3 sigma).

    Examples
    --------
    >>> from bayespk.borrowing.datasets import ankylosing_spondylitis
    >>> power_prior_conjugate(ankylosing_spondylitis(), "binomial", 0.1)
    BetaMixture(1*Beta(13.7, 39.6))
    """
    if isinstance(a0, bool) or not isinstance(a0, (int, float)) or not 0 <= a0 <= 1:
        raise SpecError(f"power prior: a0 must be a number in [0, 1], got {a0!r}")
    hist = validate_historical(hist, family)
    if family == "binomial":
        init = initial if initial is not None else BetaMixture([1.0], [1.0], [1.0])
        if not isinstance(init, BetaMixture) or init.n_components != 1:
            raise SpecError("power prior: the initial prior for binomial data must be a one-component BetaMixture")
        return BetaMixture([1.0], init.a + a0 * hist.r.sum(), init.b + a0 * (hist.n - hist.r).sum())
    if family == "poisson":
        init = initial if initial is not None else GammaMixture([1.0], [1e-3], [1e-3])
        if not isinstance(init, GammaMixture) or init.n_components != 1:
            raise SpecError("power prior: the initial prior for Poisson data must be a one-component GammaMixture")
        return GammaMixture([1.0], init.a + a0 * hist.y.sum(), init.b + a0 * hist.exposure.sum())
    sig = reference_sigma(hist, sigma)
    init = initial if initial is not None else NormalMixture([1.0], [0.0], [1e3 * (sig or 1.0)], sigma=sig)
    if not isinstance(init, NormalMixture) or init.n_components != 1:
        raise SpecError("power prior: the initial prior for normal data must be a one-component NormalMixture")
    prec = 1 / init.s[0] ** 2 + a0 * np.sum(1 / hist.se.to_numpy() ** 2)
    mean = (init.m[0] / init.s[0] ** 2 + a0 * np.sum(hist.y.to_numpy() / hist.se.to_numpy() ** 2)) / prec
    return NormalMixture([1.0], [mean], [1 / math.sqrt(prec)], sigma=sig if sig is not None else init.sigma)


def power_prior(hist: pd.DataFrame | str, new: dict, family: str, a0: float, *, initial_prior: Prior | None = None,
                sigma: float | None = None, draws: int = 1000, tune: int = 1000, chains: int = 4,
                seed: int | None = None, target_accept: float = 0.9, progress: bool = False) -> SchemeFit:
    """Posterior of the new study's parameter under a power prior with fixed ``a0``, by NUTS.

    Parameters
    ----------
    hist : DataFrame or CSV path
        Historical studies (columns as for :func:`~bayespk.borrowing.map_prior.validate_historical`).
    new : dict
        The new study's data: ``{"r", "n"}``, ``{"y", "se"}`` or ``{"y", "exposure"}``.
    a0 : float in [0, 1]
    initial_prior : Prior, optional
        Initial prior of theta on the link scale (default: the MAP intercept default).
    """
    import pymc as pm

    if isinstance(a0, bool) or not isinstance(a0, (int, float)) or not 0 <= a0 <= 1:
        raise SpecError(f"power prior: a0 must be a number in [0, 1], got {a0!r}")
    hist = validate_historical(hist, family)
    d_new = _new_data(new, family)
    sig = reference_sigma(hist, sigma) if family == "normal" else None
    init = _initial(hist, family, sig, initial_prior)
    with pm.Model() as model:
        theta = init.create("theta_link")
        pm.Potential("historical", a0 * _loglik(family, theta, _arrays(hist, family)))
        pm.Potential("new", _loglik(family, theta, {k: np.atleast_1d(v) for k, v in d_new.items()}))
    seed = sampling.new_seed(seed)
    tree, wall = _sample(model, draws, tune, chains, seed, target_accept, progress)
    th = inverse_link(family, tree["posterior"]["theta_link"].values.ravel())
    return SchemeFit("power prior", family, tree, th,
                     info={"a0": a0, "initial_prior": init.to_dict(), "seed": seed, "wall_seconds": wall,
                           "free": ["theta_link"]})


# ---------------------------------------------------------------------- commensurate prior
def commensurate_prior(hist: pd.DataFrame | str, new: dict, family: str, *, kappa_prior: Prior | None = None,
                       initial_prior: Prior | None = None, sigma: float | None = None, draws: int = 1000,
                       tune: int = 1000, chains: int = 4, seed: int | None = None, target_accept: float = 0.95,
                       progress: bool = False) -> SchemeFit:
    """Posterior of the new study's parameter under a commensurate prior (Hobbs et al. 2011), by NUTS.

    ``theta_hist ~ initial_prior``; historical data ``| theta_hist``;
    ``theta_new = theta_hist + kappa * z``, ``z ~ N(0, 1)`` (non-centred);
    ``kappa ~ kappa_prior`` (default: the MAP tau default, e.g. HalfNormal(1)
    on the logit scale); new data ``| theta_new``. ``kappa = 1/sqrt(tau)``
    with Hobbs' commensurability precision tau.
    """
    import pymc as pm

    hist = validate_historical(hist, family)
    d_new = _new_data(new, family)
    sig = reference_sigma(hist, sigma) if family == "normal" else None
    tau_default, _ = default_priors(hist, family, sig)
    kp = kappa_prior if kappa_prior is not None else tau_default
    if not isinstance(kp, Prior) or kp.support != "positive":
        raise SpecError("commensurate prior: kappa (SD of theta_new - theta_hist) needs a positive Prior, e.g. "
                        "Prior('HalfNormal', sigma=1)")
    init = _initial(hist, family, sig, initial_prior)
    with pm.Model() as model:
        th_hist = init.create("theta_hist_link")
        kappa = kp.create("kappa")
        z = pm.Normal("z", 0.0, 1.0)
        th_new = pm.Deterministic("theta_link", th_hist + kappa * z)
        pm.Potential("historical", _loglik(family, th_hist, _arrays(hist, family)))
        pm.Potential("new", _loglik(family, th_new, {k: np.atleast_1d(v) for k, v in d_new.items()}))
    seed = sampling.new_seed(seed)
    tree, wall = _sample(model, draws, tune, chains, seed, target_accept, progress)
    th = inverse_link(family, tree["posterior"]["theta_link"].values.ravel())
    return SchemeFit("commensurate prior", family, tree, th,
                     info={"kappa_prior": kp.to_dict(), "initial_prior": init.to_dict(), "seed": seed,
                           "wall_seconds": wall, "free": ["theta_hist_link", "kappa", "z"]})


# ---------------------------------------------------------------------- EXNEX
def exnex(strata: pd.DataFrame | str, family: str, *, p_exch: float | list[float] = 0.5,
          mu_prior: Prior | None = None, tau_prior: Prior | None = None, nex_mean: float | list[float] | None = None,
          nex_sd: float | list[float] | None = None, sigma: float | None = None, draws: int = 1000,
          tune: int = 1000, chains: int = 4, seed: int | None = None, target_accept: float = 0.95,
          progress: bool = False) -> SchemeFit:
    """EXNEX posterior of every stratum (Neuenschwander et al. 2016), by NUTS.

    Parameters
    ----------
    strata : DataFrame or CSV path
        One row per stratum (subgroup or study), columns as for a history
        (``study`` labels the stratum).
    p_exch : float or list
        Prior probability that each stratum is exchangeable (default 0.5).
    mu_prior, tau_prior : Prior, optional
        Priors of the EX mean and between-stratum SD (defaults as for the MAP model).
    nex_mean, nex_sd : float or list, optional
        NEX prior of each stratum on the link scale. Default: centred like the
        EX mean prior, with SD 2 (binomial, Poisson; about one observation's
        worth at a rate of 1/2 on the logit scale) or the reference sigma (normal).

    Returns
    -------
    SchemeFit
        ``theta`` (draws x strata), ``p_exchangeable`` per stratum:
        ``E[ p N(theta_j | mu, tau) / (p N(theta_j | mu, tau) + (1 - p) N(theta_j | m_j, s_j)) | data ]``.
    """
    import pymc as pm
    import pytensor.tensor as pt
    from scipy import stats

    data = validate_historical(strata, family)
    j = len(data)
    sig = reference_sigma(data, sigma) if family == "normal" else None
    tau_d, mu_d = default_priors(data, family, sig)
    mu_p = mu_prior if mu_prior is not None else mu_d
    tau_p = tau_prior if tau_prior is not None else tau_d
    if not isinstance(tau_p, Prior) or tau_p.support != "positive":
        raise SpecError("EXNEX: tau needs a positive Prior, e.g. Prior('HalfNormal', sigma=1)")
    if not isinstance(mu_p, Prior) or mu_p.support != "real":
        raise SpecError("EXNEX: mu needs a Prior on the real line, e.g. Prior('Normal', mu=0, sigma=2)")

    def per_stratum(v, default, what):
        arr = np.asarray(default if v is None else v, dtype=float)
        if arr.ndim == 0:
            arr = np.full(j, float(arr))
        if arr.shape != (j,) or not np.all(np.isfinite(arr)):
            raise SpecError(f"EXNEX: {what} needs one finite value or one per stratum ({j})")
        return arr

    p = per_stratum(p_exch, 0.5, "p_exch")
    if np.any((p <= 0) | (p >= 1)):
        raise SpecError(f"EXNEX: p_exch must lie strictly between 0 and 1, got {p.tolist()}")
    m_nex = per_stratum(nex_mean, mu_p.params.get("mu", 0.0), "nex_mean")
    s_nex = per_stratum(nex_sd, sig if family == "normal" else 2.0, "nex_sd")
    if np.any(s_nex <= 0):
        raise SpecError("EXNEX: nex_sd must be > 0")
    with pm.Model(coords={"stratum": data.study.tolist()}) as model:
        mu = mu_p.create("mu")
        tau = tau_p.create("tau")
        w = np.stack([p, 1 - p], axis=1)
        mus = pt.stack([pt.ones(j) * mu, pt.as_tensor(m_nex)], axis=1)
        sds = pt.stack([pt.ones(j) * tau, pt.as_tensor(s_nex)], axis=1)
        theta = pm.NormalMixture("theta_link", w=w, mu=mus, sigma=sds, dims="stratum")
        pm.Potential("data", _loglik(family, theta, _arrays(data, family)))
    seed = sampling.new_seed(seed)
    tree, wall = _sample(model, draws, tune, chains, seed, target_accept, progress)
    post = tree["posterior"].to_dataset()
    th_link = post["theta_link"].values.reshape(-1, j)
    mu_d_ = post["mu"].values.reshape(-1, 1)
    tau_d_ = post["tau"].values.reshape(-1, 1)
    ex = p * stats.norm.pdf(th_link, mu_d_, tau_d_)
    nex = (1 - p) * stats.norm.pdf(th_link, m_nex, s_nex)
    p_ex = (ex / (ex + nex)).mean(axis=0)
    return SchemeFit("EXNEX", family, tree, inverse_link(family, th_link), labels=data.study.tolist(),
                     p_exchangeable=p_ex,
                     info={"p_exch": p.tolist(), "nex_mean": m_nex.tolist(), "nex_sd": s_nex.tolist(),
                           "mu_prior": mu_p.to_dict(), "tau_prior": tau_p.to_dict(), "seed": seed,
                           "wall_seconds": wall, "free": ["mu", "tau", "theta_link"]})
