"""Errors raised for the user's input: each says what is wrong, where, and what to do.

The CLI prints these as one paragraph and exits non-zero, without a traceback.
Anything else escaping is a bug in bayespk.
"""

from __future__ import annotations

from typing import NoReturn


class BayesPKError(Exception):
    """Base class of all errors caused by user input (data, spec, options)."""


class DataError(BayesPKError, ValueError):
    """A dataset breaks a rule; the message names the row, column and rule."""


class SpecError(BayesPKError, ValueError):
    """A model spec is malformed; the message names the key and rule."""


class ConvergenceWarning(UserWarning):
    """The sampler's diagnostics (divergences, R-hat, ESS, BFMI) are poor."""


class Moved:
    """A class attribute for a method that was removed: reading it raises AttributeError saying what to use.

    >>> class Fit:
    ...     vpc = Moved("bpk.vpc(fit, ...)")
    >>> Fit().vpc()
    Traceback (most recent call last):
    AttributeError: Fit.vpc is gone: use bpk.vpc(fit, ...)
    """

    def __init__(self, use: str):
        self.use = use
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: object, owner: type | None = None) -> NoReturn:
        raise AttributeError(f"{getattr(owner, '__name__', '?')}.{self.name} is gone: use {self.use}")
