"""Meta-analytic-predictive (MAP) priors from historical studies.

The random-effects meta-analysis (Neuenschwander et al. 2010, Clin Trials
7:5; Schmidli et al. 2014, Biometrics 70:1023) for studies ``j = 1..J``::

    y_j ~ Binomial(n_j, theta_j)                  (binomial: logit link)
        | Normal(theta_j, se_j)                   (normal, known SE: identity link)
        | Poisson(exposure_j * theta_j)           (poisson: log link)
    g(theta_j) = beta + x_j' gamma + eta_j,   eta_j ~ Normal(0, tau^2)
    tau ~ HalfNormal(scale)  (or another positive prior),   beta ~ Normal(.)

The MAP prior is the posterior predictive distribution of ``theta_new`` for a
new study: ``g(theta_new) = beta + x_new' gamma + tau z``, ``z ~ N(0, 1)``,
drawn once per posterior draw. It is fitted here with NUTS (nutpie). For
binomial and Poisson data the random effects are non-centred (``eta_j = tau
z_j``), which samples well when tau is small or poorly identified by few
studies; for normal data they are integrated out exactly (``y_j ~ N(beta,
sqrt(se_j^2 + tau^2))``) and the study means drawn afterwards from their
conditional normals, which removes the funnel altogether. Compiled models are
cached per model shape and priors, so refits on new data (e.g. in a
simulation study) do not compile again.

Covariates (optional, numeric, study level) are centred at their historical
mean; the default prior of each coefficient is Normal(0, s / sd(x)) with s the
SD of the intercept prior, i.e. a one-SD change of the covariate is given
about the same prior room as the intercept.

Examples
--------
>>> from bayespk.borrowing.datasets import ankylosing_spondylitis
>>> fit = fit_map(ankylosing_spondylitis(), "binomial", seed=1)  # doctest: +SKIP
>>> fit.mixture()                                                # doctest: +SKIP
BetaMixture(...)
"""

from __future__ import annotations

import functools
import math
import time
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import xarray as xr

from bayespk import sampling
from bayespk.borrowing.mixtures import Mixture, fit_mixture
from bayespk.errors import ConvergenceWarning, DataError, SpecError
from bayespk.model.priors import Prior

__all__ = [
    "FAMILIES",
    "MAPFit",
    "build_map_model",
    "compiled_map_model",
    "default_priors",
    "fit_map",
    "validate_historical",
]

FAMILIES: dict[str, dict[str, Any]] = {
    "binomial": {"required": ("n", "r"), "optional": (), "link": "logit", "mixture": "beta"},
    "normal": {"required": ("y", "se"), "optional": ("n",), "link": "identity", "mixture": "normal"},
    "poisson": {"required": ("y", "exposure"), "optional": (), "link": "log", "mixture": "gamma"},
}


# ====================================================================== data
def _read_table(data: pd.DataFrame | str | Path) -> pd.DataFrame:
    if isinstance(data, pd.DataFrame):
        return data.copy()
    path = Path(data)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        return pd.read_csv(path, skipinitialspace=True)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a readable CSV file ({e})") from None


def validate_historical(data: pd.DataFrame | str | Path, family: str,
                        covariates: list[str] | tuple[str, ...] = ()) -> pd.DataFrame:
    """Check a table of historical studies and return it with clean types.

    Columns (names are case-insensitive):

    * binomial: ``study, n, r`` (r responders of n patients)
    * normal: ``study, y, se`` and optionally ``n`` (estimate and its standard error);
      ``y_se`` or ``y.se`` (RBesT's name, as in its ``crohn`` example) is read as ``se``
    * poisson: ``study, y, exposure`` (y events over the exposure)
    * any covariate columns named in ``covariates`` (numeric)

    Raises
    ------
    DataError
        Naming the row (1-based data row), the column and the rule broken.

    Examples
    --------
    >>> validate_historical(pd.DataFrame({"study": ["a"], "n": [10], "r": [3]}), "binomial").r.tolist()
    [3]
    """
    if family not in FAMILIES:
        raise SpecError(f"family must be one of {', '.join(FAMILIES)}, got {family!r}")
    where = str(data) if not isinstance(data, pd.DataFrame) else "historical data"
    raw = _read_table(data)
    raw.columns = [str(c).strip().lower() for c in raw.columns]
    given = [c for c in ("se", "y_se", "y.se") if c in raw.columns]
    if len(given) > 1:
        raise DataError(f"{where}: columns {' and '.join(given)} both given; y_se and y.se (RBesT's names) are "
                        "read as se, so give one of them")
    if given and given[0] != "se":  # RBesT's name of the standard error (its crohn example: y.se, y_se in CSV)
        raw = raw.rename(columns={given[0]: "se"})
    spec = FAMILIES[family]
    covariates = tuple(c.strip().lower() for c in covariates)
    needed = ("study",) + spec["required"]
    missing = [c for c in needed + covariates if c not in raw.columns]
    if missing:
        raise DataError(f"{where}: missing column(s) {', '.join(missing)}; a {family} history needs columns "
                        f"{', '.join(needed)}" + (f" (optional: {', '.join(spec['optional'])})" if spec['optional']
                                                  else "")
                        + (" (se may be named y_se or y.se, as in RBesT)" if "se" in needed else "")
                        + f"; found {', '.join(raw.columns) or 'none'}")
    if len(raw) == 0:
        raise DataError(f"{where}: no studies (the table has a header but no rows)")
    dup = raw.columns[raw.columns.duplicated()].tolist()
    if dup:
        raise DataError(f"{where}: column {dup[0]!r} appears twice")
    out = pd.DataFrame({"study": raw["study"].astype(str).str.strip()})
    if raw["study"].isna().any():
        i = int(np.argmax(raw["study"].isna().to_numpy()))
        raise DataError(f"{where}: row {i + 1}, column study: missing study label")
    seen = out.study.duplicated()
    if seen.any():
        i = int(np.argmax(seen.to_numpy()))
        raise DataError(f"{where}: row {i + 1}, column study: study {out.study.iloc[i]!r} appears more than once")
    numeric_cols = spec["required"] + tuple(c for c in spec["optional"] if c in raw.columns) + covariates
    for col in numeric_cols:
        values = pd.to_numeric(raw[col], errors="coerce")
        bad = values.isna() | ~np.isfinite(values.astype(float))
        if bad.any():
            i = int(np.argmax(bad.to_numpy()))
            raise DataError(f"{where}: row {i + 1}, column {col} (study {out.study.iloc[i]}): "
                            f"{raw[col].iloc[i]!r} is not a finite number")
        out[col] = values.astype(float)

    def fail(mask, col, rule):
        i = int(np.argmax(np.asarray(mask)))
        raise DataError(f"{where}: row {i + 1}, column {col} (study {out.study.iloc[i]}): "
                        f"{out[col].iloc[i]:g} {rule}")

    def whole(col):
        frac = out[col] != np.round(out[col])
        if frac.any():
            fail(frac, col, "is not a whole number")

    if family == "binomial":
        whole("n")
        whole("r")
        if (out.n < 1).any():
            fail(out.n < 1, "n", "must be >= 1 (patients in the study)")
        if (out.r < 0).any():
            fail(out.r < 0, "r", "must be >= 0 (responders)")
        if (out.r > out.n).any():
            fail(out.r > out.n, "r", f"exceeds n ({out.n[out.r > out.n].iloc[0]:g}); r counts responders among n")
        out["n"] = out.n.astype(int)
        out["r"] = out.r.astype(int)
    elif family == "normal":
        if (out.se <= 0).any():
            fail(out.se <= 0, "se", "must be > 0 (standard error of the estimate)")
        if "n" in out and (out.n <= 0).any():
            fail(out.n <= 0, "n", "must be > 0 (patients in the study)")
    else:
        whole("y")
        if (out.y < 0).any():
            fail(out.y < 0, "y", "must be >= 0 (number of events)")
        if (out.exposure <= 0).any():
            fail(out.exposure <= 0, "exposure", "must be > 0 (e.g. patient-years)")
        out["y"] = out.y.astype(int)
    for c in covariates:
        if len(out) > 1 and out[c].std() == 0:
            raise DataError(f"{where}: column {c}: the covariate has the same value ({out[c].iloc[0]:g}) in every "
                            "study, so its effect cannot be estimated; leave it out")
    return out.reset_index(drop=True)


def reference_sigma(data: pd.DataFrame, sigma: float | None) -> float | None:
    """The SD of one observation for a normal history: given, or pooled from ``n`` and ``se``.

    Each study implies a per-patient variance ``n_j se_j^2``; they are pooled
    weighted by ``n_j``: ``sigma^2 = sum n_j (n_j se_j^2) / sum n_j``.
    """
    if sigma is not None:
        if not (isinstance(sigma, (int, float)) and math.isfinite(sigma) and sigma > 0):
            raise SpecError(f"sigma must be a positive number, got {sigma!r}")
        return float(sigma)
    if "n" in data:
        n, se = data["n"].to_numpy(float), data["se"].to_numpy(float)
        return float(math.sqrt(np.sum(n * n * se**2) / np.sum(n)))
    return None


def default_priors(data: pd.DataFrame, family: str, sigma: float | None = None) -> tuple[Prior, Prior]:
    """Default (tau prior, intercept prior) for a history.

    * binomial (logit scale): tau ~ HalfNormal(1), beta ~ Normal(0, 2), the
      conservative choice of the RBesT introduction for response rates of
      20-80% (HalfNormal(0, 1) on tau).
    * poisson (log scale): tau ~ HalfNormal(1), beta ~ Normal(log pooled rate, 2).
    * normal: tau ~ HalfNormal(sigma / 2) (between-study SD up to about one
      reference sigma), beta ~ Normal(mean of y, 10 sigma); needs the reference sigma.
    """
    if family == "binomial":
        return Prior("HalfNormal", sigma=1.0), Prior("Normal", mu=0.0, sigma=2.0)
    if family == "poisson":
        rate = (data.y.sum() + 0.5) / data.exposure.sum()
        return Prior("HalfNormal", sigma=1.0), Prior("Normal", mu=round(math.log(rate), 6), sigma=2.0)
    if sigma is None:
        raise SpecError("normal family: give the reference sigma (SD of one observation), or a column n with the "
                        "patients per study so it can be pooled from n and se; it sets the default priors, the "
                        "effective sample size and the unit-information robust component")
    return (Prior("HalfNormal", sigma=float(f"{sigma / 2:.6g}")),
            Prior("Normal", mu=float(f"{float(data.y.mean()):.6g}"), sigma=float(f"{10 * sigma:.6g}")))


def _check_prior(p: Prior | dict | None, what: str, positive: bool) -> Prior | None:
    if p is None:
        return None
    p = Prior.from_dict(p, what) if isinstance(p, dict) else p
    if not isinstance(p, Prior):
        raise SpecError(f"{what}: expected a Prior such as Prior('HalfNormal', sigma=1), got {p!r}")
    if positive and p.support != "positive":
        raise SpecError(f"{what}: tau is an SD and needs a positive prior (HalfNormal, HalfCauchy, HalfStudentT, "
                        f"Exponential, LogNormal, Gamma, ...), not {p.dist}")
    if not positive and p.support != "real":
        raise SpecError(f"{what}: the intercept is on the link scale and needs a prior on the real line "
                        f"(Normal or StudentT), not {p.dist}")
    return p


# ====================================================================== model
def build_map_model(family: str, n_studies: int, tau_prior: Prior, beta_prior: Prior,
                    coef_sds: tuple[float, ...] = (), centred: bool = False):
    """The PyMC random-effects model with ``pm.Data`` containers for the data.

    Data containers: binomial ``n``, ``r``; normal ``y``, ``se``; poisson ``y``,
    ``exposure``; and ``X`` (studies x covariates, centred) when there are
    covariates. Free variables: ``beta``, ``tau``, ``gamma`` (covariate
    coefficients) and, for binomial and Poisson data, the study effects:
    non-centred ``z`` (``theta_link_j = mean_j + tau z_j``) or, with
    ``centred=True``, ``theta_link`` itself (``~ N(mean_j, tau)``).

    For normal data the study effects are integrated out exactly,
    ``y_j ~ N(beta + x_j' gamma, sqrt(se_j^2 + tau^2))``, which leaves a
    funnel-free posterior in (beta, tau, gamma); the study means are drawn
    afterwards from their conditional normal distributions
    (:func:`normal_study_draws`).
    """
    import pymc as pm

    coords = {"study": np.arange(n_studies)}
    if coef_sds:
        coords["covariate"] = np.arange(len(coef_sds))
    with pm.Model(coords=coords) as model:
        beta = beta_prior.create("beta")
        tau = tau_prior.create("tau")
        mean = beta
        if coef_sds:
            x = pm.Data("X", np.zeros((n_studies, len(coef_sds))), dims=("study", "covariate"))
            gamma = pm.Normal("gamma", 0.0, np.asarray(coef_sds), dims="covariate")
            mean = mean + pm.math.dot(x, gamma)
        if family == "normal":
            se = pm.Data("se", np.ones(n_studies), dims="study")
            y = pm.Data("y", np.zeros(n_studies), dims="study")
            pm.Normal("obs", mu=mean, sigma=pm.math.sqrt(se**2 + tau**2), observed=y, dims="study")
            return model
        if centred:
            eta = pm.Normal("theta_link", mean, tau, dims="study")
        else:
            z = pm.Normal("z", 0.0, 1.0, dims="study")
            eta = pm.Deterministic("theta_link", mean + tau * z, dims="study")
        if family == "binomial":
            n = pm.Data("n", np.ones(n_studies, dtype="int64"), dims="study")
            r = pm.Data("r", np.zeros(n_studies, dtype="int64"), dims="study")
            pm.Binomial("obs", n=n, logit_p=eta, observed=r, dims="study")
        else:
            e = pm.Data("exposure", np.ones(n_studies), dims="study")
            y = pm.Data("y", np.zeros(n_studies, dtype="int64"), dims="study")
            pm.Poisson("obs", mu=e * pm.math.exp(eta), observed=y, dims="study")
    return model


def normal_study_draws(mean: np.ndarray, tau: np.ndarray, y: np.ndarray, se: np.ndarray,
                       rng: np.random.Generator) -> np.ndarray:
    """Draws of each study's mean given (beta + x'gamma, tau) per posterior draw: the conjugate normal update.

    ``theta_j | . ~ N((y_j/se_j^2 + m/tau^2) / P, 1/sqrt(P))``, ``P = 1/se_j^2 + 1/tau^2``;
    shapes: ``mean`` (draws, studies) or (draws, 1), ``tau`` (draws, 1).
    """
    prec = 1 / se**2 + 1 / np.maximum(tau, 1e-12) ** 2
    loc = (y / se**2 + mean / np.maximum(tau, 1e-12) ** 2) / prec
    return loc + rng.standard_normal(np.broadcast(loc, prec).shape) / np.sqrt(prec)


def _prior_scale(p: Prior) -> float:
    """A rough scale of a positive prior (its SD-like parameter)."""
    d = p.params
    if p.dist in ("HalfNormal", "HalfStudentT"):
        return d["sigma"]
    if p.dist == "HalfCauchy":
        return d["beta"]
    if p.dist == "Exponential":
        return 1.0 / d["lam"]
    if p.dist == "LogNormal":
        return math.exp(d["mu"])
    if p.dist == "Gamma":
        return d["alpha"] / d["beta"]
    return 1.0


def compiled_map_model(family: str, n_studies: int, tau_prior: Prior, beta_prior: Prior,
                       coef_sds: tuple[float, ...] = (), centred: bool = False):
    """(pm.Model, nutpie compiled model), compiled once per process for each shape, priors and centring.

    The model holds the data as shared variables (see :func:`build_map_model`):
    sample it with ``data=data_updates(...)``.
    """
    args = (family, n_studies, tau_prior, beta_prior, tuple(float(s) for s in coef_sds), bool(centred))
    model = _built_map_model(*args)  # the model compiled under this key: built once, as it is compiled once
    return model, sampling.compile_model(model, key=("map", *args))


@functools.lru_cache(maxsize=None)
def _built_map_model(*args) -> Any:
    return build_map_model(*args)


def data_updates(family: str, data: pd.DataFrame, x_centred: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Values for the model's data containers (see :func:`build_map_model`)."""
    if family == "binomial":
        upd = {"n": data.n.to_numpy("int64"), "r": data.r.to_numpy("int64")}
    elif family == "normal":
        upd = {"y": data.y.to_numpy(float), "se": data.se.to_numpy(float)}
    else:
        upd = {"y": data.y.to_numpy("int64"), "exposure": data.exposure.to_numpy(float)}
    if x_centred is not None and x_centred.size:
        upd["X"] = np.asarray(x_centred, float)
    return upd


def inverse_link(family: str, eta):
    eta = np.asarray(eta, dtype=float)
    if family == "binomial":
        return 1.0 / (1.0 + np.exp(-eta))
    if family == "poisson":
        return np.exp(eta)
    return eta


# ====================================================================== result
@dataclass
class MAPFit:
    """A fitted meta-analytic-predictive model.

    Attributes
    ----------
    family : str
    data : DataFrame
        The validated historical studies.
    tau_prior, beta_prior : Prior
    covariates : tuple of str
    new_covariates : dict
        Covariate values of the new study the MAP prior predicts for.
    sigma : float or None
        Reference SD of one observation (normal family).
    scale : str
        ``"natural"`` or ``"log"`` (the normal outcome is the log of a positive
        quantity, e.g. log CL); recorded in prior files.
    tree : xarray.DataTree
        Posterior and sample stats.
    sample : ndarray
        MAP prior draws of ``theta_new`` (natural scale of the outcome: a
        probability, a mean, or a rate).
    seed : int
    """

    family: str
    data: pd.DataFrame
    tau_prior: Prior
    beta_prior: Prior
    covariates: tuple[str, ...]
    new_covariates: dict[str, float]
    sigma: float | None
    scale: str
    tree: xr.DataTree
    sample: np.ndarray
    seed: int
    settings: dict = field(default_factory=dict)
    _mixture: Mixture | None = field(default=None, repr=False)

    @property
    def posterior(self) -> xr.Dataset:
        return self.tree["posterior"].to_dataset()

    @property
    def tau(self) -> np.ndarray:
        return self.posterior["tau"].values.ravel()

    def mixture(self, **kwargs) -> Mixture:
        """The MAP sample approximated by a conjugate mixture (see :func:`~bayespk.borrowing.mixtures.fit_mixture`).

        Without arguments the result is cached. Normal mixtures carry the reference sigma.
        """
        family = FAMILIES[self.family]["mixture"]
        if not kwargs and self._mixture is not None:
            return self._mixture
        if family == "normal":
            kwargs.setdefault("sigma", self.sigma)
        mix = fit_mixture(self.sample, family, **kwargs)
        mix.info["source"] = "MAP"
        if not kwargs or set(kwargs) == {"sigma"}:
            self._mixture = mix
        return mix

    def summary(self, probs: tuple[float, float] = (0.025, 0.975)) -> pd.DataFrame:
        """Posterior summaries: intercept, tau, coefficients, each study's theta, and the MAP prior theta_new.

        ``theta`` rows are on the natural scale (probability, mean or rate);
        columns ``mean, sd, q<lo>, median, q<hi>, r_hat, ess_bulk``.
        """
        import arviz as az

        post = self.posterior
        names = ["beta", "tau"] + (["gamma"] if "gamma" in post else [])
        rhat = az.rhat(post[names + ["theta_link"]])
        ess = az.ess(post[names + ["theta_link"]], method="bulk")
        rows = []

        def add(label, values, r, e):
            lo, med, hi = np.quantile(values, [probs[0], 0.5, probs[1]])
            rows.append({"parameter": label, "mean": float(np.mean(values)), "sd": float(np.std(values, ddof=1)),
                         f"q{100 * probs[0]:g}": lo, "median": med, f"q{100 * probs[1]:g}": hi,
                         "r_hat": r, "ess_bulk": e})

        add("beta", post["beta"].values.ravel(), float(rhat["beta"]), float(ess["beta"]))
        add("tau", post["tau"].values.ravel(), float(rhat["tau"]), float(ess["tau"]))
        if "gamma" in post:
            for i, c in enumerate(self.covariates):
                add(f"gamma[{c}]", post["gamma"].values[..., i].ravel(), float(rhat["gamma"][i]),
                    float(ess["gamma"][i]))
        th = inverse_link(self.family, post["theta_link"].values)
        for j, s in enumerate(self.data.study):
            add(f"theta[{s}]", th[..., j].ravel(), float(rhat["theta_link"][j]), float(ess["theta_link"][j]))
        add("theta_new (MAP)", self.sample, float("nan"), float("nan"))
        return pd.DataFrame(rows).set_index("parameter")

    def study_table(self) -> pd.DataFrame:
        """Per study: the stratified (observed) estimate and the model's shrinkage estimate (posterior mean)."""
        d = self.data
        obs = d.r / d.n if self.family == "binomial" else (d.y / d.exposure if self.family == "poisson" else d.y)
        th = inverse_link(self.family, self.posterior["theta_link"].values).reshape(-1, len(d))
        lo, hi = np.quantile(th, [0.025, 0.975], axis=0)
        return pd.DataFrame({"study": d.study, "observed": obs.to_numpy(float), "shrunk_mean": th.mean(axis=0),
                             "shrunk_q2.5": lo, "shrunk_q97.5": hi})

    def diagnostics(self) -> dict[str, Any]:
        """Divergences, worst R-hat and bulk ESS over beta, tau, z (and gamma)."""
        import arviz as az

        post = self.posterior
        names = [v for v in ("beta", "tau", "z", "gamma", "theta_link") if v in post]
        rhat = az.rhat(post[names])
        ess = az.ess(post[names], method="bulk")
        stats = self.tree["sample_stats"].to_dataset()
        return {
            "divergences": int(stats["diverging"].sum()) if "diverging" in stats else 0,
            "max_r_hat": float(max(float(np.nanmax(rhat[v].values)) for v in names)),
            "min_ess_bulk": float(min(float(np.nanmin(ess[v].values)) for v in names)),
            "chains": int(post.sizes["chain"]),
            "draws": int(post.sizes["draw"]),
            "seed": self.seed,
            **self.settings,
        }

    def __repr__(self) -> str:
        s = self.summary()
        t, m = s.loc["tau"], s.loc["theta_new (MAP)"]
        return (f"MAPFit({self.family}, {len(self.data)} studies: tau mean {t['mean']:.3g}; MAP prior mean "
                f"{m['mean']:.4g}, sd {m['sd']:.3g})")


def fit_map(
    data: pd.DataFrame | str | Path,
    family: str,
    *,
    tau_prior: Prior | dict | None = None,
    beta_prior: Prior | dict | None = None,
    covariates: list[str] | tuple[str, ...] = (),
    new_covariates: dict[str, float] | None = None,
    coef_priors_sd: list[float] | None = None,
    sigma: float | None = None,
    scale: str = "natural",
    draws: int = 2000,
    tune: int = 1000,
    chains: int = 4,
    seed: int | None = None,
    target_accept: float = 0.99,
    centring: str = "noncentred",
    progress: bool = False,
) -> MAPFit:
    """Fit the meta-analytic-predictive model to historical studies and draw the MAP prior.

    Parameters
    ----------
    data : DataFrame or path to a CSV file
        Historical studies; see :func:`validate_historical` for the columns.
    family : {"binomial", "normal", "poisson"}
    tau_prior : Prior, optional
        Prior of the between-study SD tau on the link scale; see
        :func:`default_priors` for the defaults (HalfNormal(1) for binomial
        and Poisson, HalfNormal(sigma/2) for normal).
    beta_prior : Prior, optional
        Prior of the intercept on the link scale.
    covariates : list of str
        Study-level covariate columns.
    new_covariates : dict
        Covariate values of the new study (required with covariates).
    coef_priors_sd : list of float, optional
        SDs of the Normal(0, sd) priors of the coefficients (default: see module docstring).
    sigma : float, optional
        Normal family: the SD of one observation; pooled from ``n`` and ``se``
        when the table has an ``n`` column.
    scale : {"natural", "log"}
        Normal family: ``"log"`` when ``y`` is the log of a positive quantity.
    draws, tune, chains, seed, target_accept
        NUTS settings (nutpie). ``seed=None`` draws a seed and records it. The
        high default target_accept (0.99, as RBesT's default adapt_delta)
        buys small steps where tau is large and the intercept loosely
        determined, at little cost for these small models.
    centring : {"noncentred", "centred"}
        Parameterisation of the study effects (binomial, Poisson). The
        non-centred default samples well for few or small studies; with
        target_accept 0.99 it also gave no divergences on simulated large
        Poisson studies (SBC, see the README). "centred" is there for
        histories of very large studies.

    Returns
    -------
    MAPFit
        A :class:`~bayespk.errors.ConvergenceWarning` is emitted for
        divergences, R-hat above 1.01 or bulk ESS below 100 per chain.
    """
    data = validate_historical(data, family, covariates)
    covs = tuple(c.strip().lower() for c in covariates)
    if scale not in ("natural", "log"):
        raise SpecError(f"scale must be 'natural' or 'log', got {scale!r}")
    if centring not in ("centred", "noncentred"):
        raise SpecError(f"centring must be 'noncentred' or 'centred', got {centring!r}")
    if scale == "log" and family != "normal":
        raise SpecError("scale='log' applies to the normal family (y = log of a positive quantity)")
    for name, v in (("draws", draws), ("tune", tune), ("chains", chains)):
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise SpecError(f"{name} must be a whole number >= 1, got {v!r}")
    sig = reference_sigma(data, sigma) if family == "normal" else None
    tau_default, beta_default = default_priors(data, family, sig)
    tau_p = _check_prior(tau_prior, "tau prior", positive=True) or tau_default
    beta_p = _check_prior(beta_prior, "intercept (beta) prior", positive=False) or beta_default

    new_x = {}
    x_c = None
    coef_sds: tuple[float, ...] = ()
    if covs:
        new_covariates = {str(k).strip().lower(): v for k, v in (new_covariates or {}).items()}
        missing = [c for c in covs if c not in new_covariates]
        if missing:
            raise SpecError(f"new_covariates: give the new study's value of {', '.join(missing)} (the MAP prior "
                            "is a prediction for a study with given covariates)")
        extra = [c for c in new_covariates if c not in covs]
        if extra:
            raise SpecError(f"new_covariates: {', '.join(extra)} is not among the covariates ({', '.join(covs)})")
        for c in covs:
            v = new_covariates[c]
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v):
                raise SpecError(f"new_covariates: {c} must be a finite number, got {v!r}")
            new_x[c] = float(v)
        x = data[list(covs)].to_numpy(float)
        centre = x.mean(axis=0)
        x_c = x - centre
        if coef_priors_sd is None:
            base = float(beta_p.params.get("sigma", 1.0))
            sd_x = x.std(axis=0, ddof=1) if len(x) > 1 else np.ones(len(covs))
            coef_sds = tuple(float(f"{base / s:.6g}") for s in sd_x)
        else:
            if len(coef_priors_sd) != len(covs) or not all(s > 0 for s in coef_priors_sd):
                raise SpecError(f"coef_priors_sd: give one positive SD per covariate ({len(covs)})")
            coef_sds = tuple(float(s) for s in coef_priors_sd)
    elif new_covariates:
        raise SpecError("new_covariates given without covariates")

    seed = sampling.new_seed(seed)
    t0 = time.perf_counter()
    centred = centring == "centred"
    _, compiled = compiled_map_model(family, len(data), tau_p, beta_p, coef_sds, centred)
    t1 = time.perf_counter()
    tree = sampling.sample(compiled, data=data_updates(family, data, x_c), draws=draws, tune=tune, chains=chains,
                           seed=seed, target_accept=target_accept, progress=progress)
    wall = time.perf_counter() - t0
    post = tree["posterior"].to_dataset()
    rng = np.random.default_rng([seed, 1])
    beta_d = post["beta"].values.ravel()
    tau_d = post["tau"].values.ravel()
    gamma_d = post["gamma"].values.reshape(-1, len(covs)) if covs else None
    if family == "normal":  # study means were integrated out: draw them from their conditionals
        mean_j = beta_d[:, None] + (gamma_d @ x_c.T if covs else 0.0)
        th = normal_study_draws(mean_j, tau_d[:, None], data.y.to_numpy(float), data.se.to_numpy(float), rng)
        post["theta_link"] = (("chain", "draw", "study"), th.reshape(post.sizes["chain"], post.sizes["draw"], -1))
        tree["posterior"] = xr.DataTree(post)
    eta = beta_d + tau_d * rng.standard_normal(beta_d.size)
    if covs:
        xn = np.array([new_x[c] for c in covs]) - centre
        eta = eta + gamma_d @ xn
    sample = inverse_link(family, eta)
    settings = {"draws": draws, "tune": tune, "chains": chains, "target_accept": target_accept,
                "centred": centred if family != "normal" else None,
                "wall_seconds": round(wall, 3), "compile_seconds": round(t1 - t0, 3)}
    fit = MAPFit(family=family, data=data, tau_prior=tau_p, beta_prior=beta_p, covariates=covs,
                 new_covariates=new_x, sigma=sig, scale=scale, tree=tree, sample=sample, seed=int(seed),
                 settings=settings)
    d = fit.diagnostics()
    problems = []
    if d["divergences"]:
        problems.append(f"{d['divergences']} divergent transitions (raise target_accept)")
    if d["max_r_hat"] > 1.01:
        problems.append(f"max R-hat {d['max_r_hat']:.3f} > 1.01")
    if d["min_ess_bulk"] < 100 * chains:
        problems.append(f"min bulk ESS {d['min_ess_bulk']:.0f} < {100 * chains}")
    if problems:
        warnings.warn("MAP model: " + "; ".join(problems) + " (run longer chains)", ConvergenceWarning,
                      stacklevel=2)
    return fit
