"""Small historical datasets for borrowing examples (kept inline: a few rows each).

Examples
--------
>>> ankylosing_spondylitis().n.sum()
np.int64(513)
>>> crohn().n.sum()
np.int64(671)
"""

from __future__ import annotations

import pandas as pd

__all__ = ["ankylosing_spondylitis", "crohn"]


def ankylosing_spondylitis() -> pd.DataFrame:
    """Placebo arms of eight historical trials in ankylosing spondylitis (ASAS20 responders at week 6).

    The historical control data used to build the MAP prior of the placebo
    response rate for the secukinumab proof-of-concept trial (Baeten et al.
    2013, Lancet 382:1705), as distributed with RBesT (dataset ``AS``) and
    bayesmeta (``BaetenEtAl2013``).

    Returns
    -------
    DataFrame
        Columns ``study`` (labels study1..study8), ``n`` (patients), ``r`` (responders).
    """
    return pd.DataFrame({
        "study": [f"study{i}" for i in range(1, 9)],
        "n": [107, 44, 51, 39, 139, 20, 78, 35],
        "r": [23, 12, 19, 9, 39, 6, 9, 10],
    })  # fmt: skip


def crohn() -> pd.DataFrame:
    """Placebo arms of six historical trials in Crohn's disease (change from baseline in CDAI).

    The historical control data of the MAP prior for the placebo arm of the
    secukinumab proof-of-concept trial in Crohn's disease (Hueber et al. 2012,
    Gut 61:1693), as distributed with RBesT (dataset ``crohn``) and used in its
    vignette "RBesT for a normal endpoint" (``introduction_normal``): the
    primary endpoint is the change from baseline in the Crohn's Disease
    Activity Index (CDAI) after 6 weeks, negative values being improvement,
    with a sampling SD of about 88 per patient. RBesT's example fits
    ``gMAP(cbind(y, y.se) ~ 1 | study, family = gaussian, tau.dist = "HalfNormal",
    tau.prior = 44, beta.prior = cbind(0, 88))`` with ``y.se = 88 / sqrt(n)``;
    the same here is ``fit_map(crohn(), "normal", sigma=88, tau_prior=Prior("HalfNormal", sigma=44),
    beta_prior=Prior("Normal", mu=0, sigma=88))``.

    Returns
    -------
    DataFrame
        Columns ``study``, ``n`` (patients), ``y`` (mean CDAI change from
        baseline) and ``y_se`` (its standard error, ``88 / sqrt(n)`` rounded
        to 0.01; RBesT's column name, read as ``se`` by
        :func:`~bayespk.borrowing.map_prior.validate_historical`).
    """
    return pd.DataFrame({
        "study": ["Gastr06", "AIMed07", "NEJM07", "Gastr01a", "APhTh04", "Gastr01b"],
        "n": [74, 166, 328, 20, 25, 58],
        "y": [-51.0, -49.0, -36.0, -47.0, -90.0, -54.0],
        "y_se": [10.23, 6.83, 4.86, 19.68, 17.60, 11.55],
    })  # fmt: skip
