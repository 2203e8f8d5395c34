"""Prior files: a mixture prior as JSON, with its summary, ESS and provenance.

The format (``"format": "bayespk-prior"``, version 1)::

    {
      "format": "bayespk-prior", "version": 1,
      "family": "beta" | "normal" | "gamma",
      "scale": "natural" | "log",      # "log": the mixture is the prior of log(parameter)
      "parameter": "CL" | null,        # what it is a prior for (free text)
      "weights": [...],
      "a": [...], "b": [...]           # beta, gamma (shape, rate); or "m", "s" for normal
      "sigma": 0.3,                    # normal only: reference SD of one observation
      "summary": {"mean": .., "sd": .., "2.5%": .., "50%": .., "97.5%": ..},
      "ess": {"moment": .., "morita": .., "elir": ..},
      "ess_unit": "patients" | "units of exposure",
      "robust": {"weight": .., "mean": .., ...} | null,
      "source": {...}                  # how it was made (data, tau prior, seed, ...)
    }

``summary`` is on the mixture's own scale (for ``scale = "log"``: of the log
parameter; ``summary_natural`` then adds the parameter's median and 95%
interval on its natural scale). A file with normal components on the log
scale, or gamma components, can be the ``typical`` prior of a spec parameter:
``typical = { file = "PRIOR.json" }`` (see :class:`bayespk.model.priors.MixturePrior`).
"""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from bayespk.borrowing.ess import METHODS, ess
from bayespk.borrowing.mixtures import Mixture, NormalMixture, mixture_from_dict
from bayespk.errors import BayesPKError, SpecError

if TYPE_CHECKING:  # bayespk.model imports PyMC; `bayespk prior show` does not need it
    from bayespk.model.priors import MixturePrior

__all__ = ["FORMAT", "prior_document", "read_prior", "to_model_prior", "write_prior"]

FORMAT = "bayespk-prior"
VERSION = 1


def _jsonable(o: Any) -> Any:
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, (np.integer,)):
        return int(o)
    if isinstance(o, (np.floating, float)):
        v = float(o)
        return v if math.isfinite(v) else None
    if isinstance(o, np.ndarray):
        return _jsonable(o.tolist())
    return o


def ess_all(mixture: Mixture) -> tuple[dict[str, float | None], dict[str, str]]:
    """ESS by every method; a method that does not apply gives None and a note."""
    out: dict[str, float | None] = {}
    notes: dict[str, str] = {}
    for m in METHODS:
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                out[m] = float(ess(mixture, m))
        except BayesPKError as e:
            out[m] = None
            notes[m] = str(e)
    return out, notes


def prior_document(mixture: Mixture, *, scale: str = "natural", parameter: str | None = None,
                   source: dict | None = None) -> dict[str, Any]:
    """The JSON document of a prior file (see the module docstring)."""
    if not isinstance(mixture, Mixture):
        raise SpecError(f"expected a Beta/Normal/GammaMixture, got {type(mixture).__name__}")
    if scale not in ("natural", "log"):
        raise SpecError(f"scale must be 'natural' or 'log', got {scale!r}")
    if scale == "log" and not isinstance(mixture, NormalMixture):
        raise SpecError("scale 'log' is for normal mixtures (a prior on the log of a positive parameter)")
    doc: dict[str, Any] = {"format": FORMAT, "version": VERSION, "family": mixture.family, "scale": scale,
                           "parameter": parameter}
    doc.update({k: v for k, v in mixture.to_dict().items() if k != "family"})
    doc["summary"] = mixture.summary()
    if scale == "log":
        lo, med, hi = np.exp(mixture.quantile([0.025, 0.5, 0.975]))
        doc["summary_natural"] = {"2.5%": lo, "50%": med, "97.5%": hi}
    values, notes = ess_all(mixture)
    doc["ess"] = values
    if notes:
        doc["ess_notes"] = notes
    doc["ess_unit"] = "units of exposure" if mixture.family == "gamma" else "patients"
    doc["robust"] = mixture.info.get("robust")
    doc["source"] = source or {}
    return _jsonable(doc)


def write_prior(path: str | Path, mixture: Mixture, *, scale: str = "natural", parameter: str | None = None,
                source: dict | None = None) -> Path:
    """Write a prior file; returns its path.

    Examples
    --------
    >>> import tempfile, os
    >>> from bayespk.borrowing.mixtures import BetaMixture
    >>> with tempfile.TemporaryDirectory() as d:
    ...     p = write_prior(os.path.join(d, "p.json"), BetaMixture([1.0], [11], [32]))
    ...     mix, meta = read_prior(p)
    >>> mix, round(meta["ess"]["elir"], 6)
    (BetaMixture(1*Beta(11, 32)), 43.0)
    """
    path = Path(path)
    doc = prior_document(mixture, scale=scale, parameter=parameter, source=source)
    if path.parent and not path.parent.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
    return path


def read_prior(path: str | Path) -> tuple[Mixture, dict[str, Any]]:
    """Read a prior file: the mixture and the whole document.

    Raises
    ------
    SpecError
        When the file is missing, not JSON, not a bayespk prior file, or its
        components are invalid (the message names the key).
    """
    p = Path(path)
    if not p.is_file():
        raise SpecError(f"{p}: no such prior file")
    try:
        doc = json.loads(p.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise SpecError(f"{p}: not valid JSON ({e})") from None
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise SpecError(f"{p}: not a bayespk prior file (expected \"format\": \"{FORMAT}\")")
    if doc.get("scale", "natural") not in ("natural", "log"):
        raise SpecError(f"{p}: scale must be 'natural' or 'log', got {doc.get('scale')!r}")
    family = doc.get("family")
    keys = {"beta": ("weights", "a", "b"), "gamma": ("weights", "a", "b"), "normal": ("weights", "m", "s", "sigma")}
    if family not in keys:
        raise SpecError(f"{p}: family must be beta, normal or gamma, got {family!r}")
    comp = {"family": family, **{k: doc[k] for k in keys[family] if k in doc and doc[k] is not None}}
    mix = mixture_from_dict(comp, where=str(p))
    if doc.get("robust"):
        mix.info["robust"] = doc["robust"]
    return mix, doc


def to_model_prior(path: str | Path) -> MixturePrior:
    """The :class:`~bayespk.model.priors.MixturePrior` a spec builds from this file."""
    from bayespk.model.priors import MixturePrior

    return MixturePrior.from_file(path)
