"""Small historical datasets for borrowing examples (kept inline: a few rows each).

Examples
--------
>>> ankylosing_spondylitis().n.sum()
np.int64(513)
"""

from __future__ import annotations

import pandas as pd

__all__ = ["ankylosing_spondylitis"]


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
