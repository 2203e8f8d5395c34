"""Array-namespace helpers shared by the structural modules (numpy or pytensor)."""

from __future__ import annotations

from typing import Any

import numpy as np


def _ns(*args: Any):
    """Return ``pytensor.tensor`` if any argument is a pytensor variable, else numpy."""
    for a in args:
        if type(a).__module__.startswith("pytensor"):
            import pytensor.tensor as pt

            return pt
    return np


def _phi(x, xp):
    """(1 - exp(-x)) / x for x >= 0, with phi(0) = 1 (series below 1e-6)."""
    small = x < 1e-6
    x_safe = xp.where(small, 1.0, x)
    return xp.where(small, 1.0 - x / 2.0 + x * x / 6.0, -xp.expm1(-x_safe) / x_safe)


def take(values, index: np.ndarray):
    """``values[index]`` for a numpy index array, on numpy arrays and pytensor tensors alike.

    A tensor is indexed with the array as a constant: ``tensor[ndarray]``
    inspects every element in Python for booleans (about 3 us each), which
    took seconds for the observations of a prediction grid of 500 subjects x
    1000 points (and the same gather, a constant, is what the graph holds).
    """
    if type(values).__module__.startswith("pytensor"):
        import pytensor.tensor as pt

        return values[pt.as_tensor_variable(np.asarray(index))]
    return values[index]
