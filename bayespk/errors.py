"""Errors raised for the user's input: each says what is wrong, where, and what to do.

The CLI prints these as one paragraph and exits non-zero, without a traceback.
Anything else escaping is a bug in bayespk.
"""

from __future__ import annotations


class BayesPKError(Exception):
    """Base class of all errors caused by user input (data, spec, options)."""


class DataError(BayesPKError, ValueError):
    """A dataset breaks a rule; the message names the row, column and rule."""


class SpecError(BayesPKError, ValueError):
    """A model spec is malformed; the message names the key and rule."""


class ConvergenceWarning(UserWarning):
    """The sampler's diagnostics (divergences, R-hat, ESS, BFMI) are poor."""
