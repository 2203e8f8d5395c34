"""The model of a spec written out as a pharmacometric report writes it: equations and a prior table.

Everything is generated from the :class:`~bayespk.model.spec.Spec` (never
from text kept beside it), so what a report shows is what was fitted:

* the structural model: built-in compartment structures as their ODE system
  (``dA_central/dt = KA·A_depot − CL/V·A_central``, ``C = A_central/V``), PD
  and CAR-T models by their defining equations, models written as equations
  by their own ``[model]`` text;
* the individual-parameter model of each parameter: typical value (or its
  ``relation``) times its covariate effects in their form, ``exp(η)`` and
  ``exp(κ)`` (IOV), with the distribution of the etas (correlated ones too);
* the residual error model(s) and the treatment of BLQ observations.

Names are those of the parameter table (``CL``, ``omega_CL``, ``CL_WT``,
``sigma_prop``); ``_i`` marks a subject's value, ``_ij`` its j-th observation.
Plain text (Unicode Greek letters, ``^`` for powers): the report shows it as is.

Examples
--------
>>> from bayespk.model.spec import Spec
>>> spec = Spec.from_dict({"model": {"structure": "1cmt_iv"},
...                        "parameters": {"CL": {"guess": 5.0}, "V": {"guess": 50.0}}})
>>> [line for block, line in equations(spec) if block == "Structural model"][:2]
['dA_central/dt = −CL/V·A_central', 'C = A_central/V']
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from bayespk.model.priors import MixturePrior

__all__ = ["Equation", "equations", "prior_table"]

STRUCTURAL, PD, INDIVIDUAL, VARIABILITY, RESIDUAL, BLQ = (
    "Structural model", "PD model", "Individual parameters", "Inter-individual variability", "Residual error",
    "Observations below the LLOQ")  # fmt: skip


@dataclass(frozen=True)
class Equation:
    """One line of the model: the block it belongs to and its text. Unpacks as ``(block, text)``."""

    block: str
    text: str

    def __iter__(self):
        return iter((self.block, self.text))


# ----------------------------------------------------------------------------- structural models
def _compartments(structure: str) -> list[str]:
    """The ODE system of a built-in linear compartment structure (amounts A, concentration C)."""
    two, three = structure.startswith(("2", "3")), structure.startswith("3")
    v = "V1" if two else "V"
    oral = structure.endswith("_oral")
    lines = []
    if oral:
        lines.append("dA_depot/dt = −KA·A_depot")
    central = ["KA·A_depot"] if oral else []
    central.append(f"−CL/{v}·A_central" if not central else f"− CL/{v}·A_central")
    if two:
        central.append(f"− Q/{v}·A_central + Q/V2·A_periph1")
    if three:
        central.append(f"− Q3/{v}·A_central + Q3/V3·A_periph2")
    lines.append("dA_central/dt = " + " ".join(central))
    if two:
        lines.append(f"dA_periph1/dt = Q/{v}·A_central − Q/V2·A_periph1")
    if three:
        lines.append(f"dA_periph2/dt = Q3/{v}·A_central − Q3/V3·A_periph2")
    lines.append(f"C = A_central/{v}")
    return lines


def _dosing(spec) -> list[str]:
    """The optional dosing parameters (NONMEM ALAG1/F1, D1/R1) the spec estimates."""
    out = []
    if "F" in spec.parameters:
        out.append("amount absorbed from a dose into the depot = F·AMT")
    if "TLAG" in spec.parameters:
        out.append("doses into the depot start TLAG after their TIME")
    if "D1" in spec.parameters:
        out.append("RATE = −2 records: zero-order input over D1")
    if "R1" in spec.parameters:
        out.append("RATE = −1 records: zero-order input at rate R1")
    return out


_PD = {
    "linear": ["E = E0 + SLOPE·C"],
    "emax": ["E = E0 + EMAX·C/(EC50 + C)"],
    "sigmoid_emax": ["E = E0 + EMAX·C^GAMMA/(EC50^GAMMA + C^GAMMA)"],
    "imax": ["E = E0·(1 − IMAX·C^GAMMA/(IC50^GAMMA + C^GAMMA))"],
    "effect_emax": ["dCe/dt = KE0·(C − Ce),  Ce(0) = 0", "E = E0 + EMAX·Ce^GAMMA/(EC50^GAMMA + Ce^GAMMA)"],
    "idr1": ["dR/dt = KIN·(1 − IMAX·C/(IC50 + C)) − KOUT·R"],
    "idr2": ["dR/dt = KIN − KOUT·(1 − IMAX·C/(IC50 + C))·R"],
    "idr3": ["dR/dt = KIN·(1 + EMAX·C/(EC50 + C)) − KOUT·R"],
    "idr4": ["dR/dt = KIN − KOUT·(1 + EMAX·C/(EC50 + C))·R"],
}


def _pd(spec) -> list[str]:
    lines = list(_PD[spec.pd])
    if spec.pd.startswith("idr"):
        lines.append("KIN = R0·KOUT,  R(0) = R0")
    column, value = spec.pd_observations
    lines.append(f"PD observations (rows with {column} = {value:g}) measure "
                 f"{'R' if spec.pd.startswith('idr') else 'E'}; the others C")
    if spec.pk_fit:
        lines.append(f"PK parameters fixed at the individual posterior medians of the fit {Path(spec.pk_fit).name} "
                     "(sequential PK/PD)")
    return lines


def _treatment_factor(spec) -> str:
    """``ρ(t)`` with the treatment multipliers of a CAR-T model."""
    if not spec.treatments:
        return ""
    terms = "·".join(f"{t.multiplier:g}^[t ≥ s_{t.column}]" if t.fixed else f"{t.name}^[t ≥ s_{t.column}]"
                     for t in spec.treatments)
    cols = ", ".join(t.column for t in spec.treatments)
    return f"ρ(t) = ρ·{terms}   (s_X: the subject's first record with X > 0; X in {cols})"


def _cart(spec) -> list[str]:
    rho = "ρ(t)" if spec.treatments else "ρ"
    contraction = "C(t) = C({peak})·((1 − FB)·exp(−ALPHA·(t − {peak})) + FB·exp(−BETA·(t − {peak})))"
    if spec.structure == "cart_piecewise":
        lines = [f"t < TMAX:  dC/dt = {rho}·C,  C(0) = CMAX/FX,  ρ = ln(FX)/TMAX",
                 "t ≥ TMAX:  " + contraction.format(peak="TMAX")]
    else:
        lines = ["t < TLAG:  C(t) = CMAX/FX",
                 f"TLAG ≤ t < T_peak:  dC/dt = {rho}·C,  ρ = ln(FX)/TEXP,  T_peak = TLAG + TEXP",
                 "t ≥ T_peak:  " + contraction.format(peak="T_peak")]
    if spec.treatments:
        lines.append(_treatment_factor(spec))
    lines.append("t: days since the infusion; without treatments C reaches CMAX at the peak")
    return lines


def _cart_ode(spec) -> list[str]:
    from bayespk.structural.cart_ode import CELL_KINETICS_ODE

    m = CELL_KINETICS_ODE[spec.structure]
    lines = ["φ = N + (E + M)/KC,   S = B/(B + B50)",
             "dN/dt = RN·N·ln(1/φ)",
             "dE/dt = RHO·S·ln(1/φ)·E − ALPHA·E,   RHO = (GX + ALPHA)/(S_ref·ln(1/N_ref))",
             "dM/dt = FM·ALPHA·E − BETA·M",
             "dB/dt = RB·B − KILL·E·B",
             "N(0) = N0,  E(0) = C0,  M(0) = 0,  B(0) = B0;   observed level C = E + M"]
    ref_n = m.covariates.get("N0", 0.05)
    lines.append(f"reference patient: B0 = 1 (S_ref = 1/(1 + B50)), N_ref = {ref_n:g}")
    if spec.tumor is not None:
        lines.append(f"B0 = {spec.tumor[0]}/{spec.tumor[1]:g}")
    else:
        lines.append("B0 = 1 for every subject (no [model] tumor)")
    if "N0" not in spec.parameters:
        lines.append(f"N0 = {ref_n:g} (or the subject's N0 column)")
    fixed = [f"{k} = {v:g}" for k, v in m.constants.items() if k not in spec.parameters]
    if fixed:
        lines.append("fixed: " + ", ".join(fixed))
    return lines


def _user(spec) -> list[str]:
    """A model written as equations: its own text (a model given in Python: what is known of it)."""
    user = spec.user
    raw = user.raw
    if "python" in raw:
        model = user.model
        states = getattr(model, "states", ())
        return [f"written in Python ({raw['python']})"
                + (f"; states {', '.join(states)}" if states else "; algebraic prediction")
                + f"; reads {', '.join(model.parameters)}"]
    if "prediction" in raw:
        return [f"f(t) = {raw['prediction']}",
                "t: time; TAD: time after the last dose; DOSE: its amount"]
    lines = [f"d{s}/dt = {raw['ode'][s]}" for s in raw["states"]]
    lines += [f"{k} = {v}" for k, v in raw.get("derived", {}).items()]
    initial = raw.get("initial", {})
    lines += [f"{s}(0) = {v}" for s, v in initial.items()]
    rest = [s for s in raw["states"] if s not in initial]
    if rest:
        lines.append(", ".join(f"{s}(0)" for s in rest) + " = 0")
    doses = raw.get("doses")
    lines.append("doses: " + (", ".join(f"CMT {k} → {s}" for k, s in doses.items()) if doses else
                              f"CMT k enters the k-th state (CMT 1 → {raw['states'][0]})"))
    lines.append(f"output (DV) = {raw['output']}")
    if "pd_output" in raw:
        column, value = spec.pd_observations
        lines.append(f"PD output (rows with {column} = {value:g}) = {raw['pd_output']}")
    return lines


def _structural(spec) -> list[Equation]:
    from bayespk.structural import STRUCTURES
    from bayespk.structural.cart import CELL_KINETICS
    from bayespk.structural.cart_ode import CELL_KINETICS_ODE

    if spec.user is not None:
        lines = _user(spec)
    elif spec.structure in CELL_KINETICS:
        lines = _cart(spec)
    elif spec.structure in CELL_KINETICS_ODE:
        lines = _cart_ode(spec)
    else:
        lines = _compartments(spec.structure) + _dosing(spec) + [STRUCTURES[spec.structure].description]
    out = [Equation(STRUCTURAL, line) for line in lines]
    if spec.pd:
        out += [Equation(PD, line) for line in _pd(spec)]
    return out


# ----------------------------------------------------------------------------- individual parameters
def _number(x) -> str:
    return f"{x:g}" if isinstance(x, float) else str(x)


def _covariate_terms(c) -> tuple[str, str]:
    """A covariate effect as a factor (log-normal parameters) and as a term on the log/logit scale."""
    theta = _number(c.coefficient) if c.fixed else c.name
    x, ref = f"{c.column}_i", _number(c.reference) if c.reference is not None else "the lowest level"
    if c.effect == "power":
        return f"({x}/{ref})^{theta}", f"{theta}·ln({x}/{ref})"
    if c.effect == "exponential":
        return f"exp({theta}·({x} − {ref}))", f"{theta}·({x} − {ref})"
    if c.effect == "linear":
        return f"(1 + {theta}·({x} − {ref}))", f"ln(1 + {theta}·({x} − {ref}))"
    term = f"{theta}[{x}]"
    return f"exp({term})", term


def _individual(spec) -> list[Equation]:
    from bayespk.structural import STRUCTURES

    unit = getattr(STRUCTURES.get(spec.structure), "unit_parameters", ()) if spec.user is None else ()
    lines = []
    for name, p in spec.parameters.items():
        covs = [c for c in spec.covariates if c.parameter == name]
        typical = f"({p.relation.source})" if p.relation is not None else name
        eta = f"η_{name},i" if p.iiv is not None else ""
        kappa = f"κ_{name},i,k" if p.iov is not None else ""
        if name in unit:  # fractions of a CAR-T model vary on the logit scale
            terms = [f"logit({typical})"] + [_covariate_terms(c)[1] for c in covs] + [t for t in (eta, kappa) if t]
            lines.append(f"logit({name}_i) = " + " + ".join(terms))
        else:
            factors = [typical] + [_covariate_terms(c)[0] for c in covs]
            random = " + ".join(t for t in (eta, kappa) if t)
            if random:
                factors.append(f"exp({random})")
            lines.append(f"{name}_i = " + "·".join(factors))
        if p.relation is not None:
            lines.append(f"   (relation of {name}: {name} inside it is the typical value)")
        for c in covs:
            if c.effect == "categorical":
                ref = _number(c.reference) if c.reference is not None else "the lowest level"
                lines.append(f"   {c.name}[{ref}] = 0 (reference level of {c.column}); one coefficient per other level")
    if spec.treatments:
        lines.append(_treatment_factor(spec) + " (expansion rate)")
    return [Equation(INDIVIDUAL, line) for line in lines]


def _variability(spec) -> list[Equation]:
    lines = []
    iiv = [n for n, p in spec.parameters.items() if p.iiv is not None]
    independent = [n for n in iiv if n not in spec.correlated]
    for n in independent:
        lines.append(f"η_{n},i ~ N(0, omega_{n}²)")
    if spec.correlated:
        names = ", ".join(f"η_{n},i" for n in spec.correlated)
        lines.append(f"({names}) ~ MVN(0, Ω),  Ω = diag(ω)·R·diag(ω),  ω = ("
                     + ", ".join(f"omega_{n}" for n in spec.correlated) + ")")
        lines.append(f"R ~ LKJ(η = {spec.lkj_eta:g}); correlations reported as "
                     + ", ".join(f"corr_{a}_{b}" for i, a in enumerate(spec.correlated)
                                 for b in spec.correlated[i + 1:]))
    for n, p in spec.parameters.items():
        if p.iov is not None:
            lines.append(f"κ_{n},i,k ~ N(0, omega_iov_{n}²)   (k: occasion, the OCC column)")
    fixed = [n for n, p in spec.parameters.items() if p.iiv is None]
    if fixed:
        lines.append("no IIV: " + ", ".join(fixed) + " (the same for every subject, apart from covariate effects)")
    return [Equation(VARIABILITY, line) for line in lines]


# ----------------------------------------------------------------------------- residual error
def _sd(err, f: str) -> tuple[str, str]:
    """The residual variance and SD of an error model around the prediction ``f``."""
    p = err.prefix
    variance = {"additive": f"{p}sigma_add²", "proportional": f"({p}sigma_prop·{f})²",
                "combined": f"{p}sigma_add² + ({p}sigma_prop·{f})²", "lognormal": f"{p}sigma_log²"}[err.model]
    return variance, f"√({variance})" if err.model == "combined" else variance[:-1]


def _error_lines(err, f: str, output: str, what: str) -> list[str]:
    variance, sd = _sd(err, f)
    noise = f"t_{err.prefix}nu(0, {sd})" if err.student_t else f"N(0, {variance})"
    lines = [f"ln DV_ij = ln {f} + ε_ij,   ε_ij ~ {noise}" if err.model == "lognormal"
             else f"DV_ij = {f} + ε_ij,   ε_ij ~ {noise}"]
    if err.by is not None:
        ref = _number(err.reference) if err.reference is not None else "the lowest level"
        scale = _number(err.scale) if isinstance(err.scale, float) else err.scale_name
        lines.append(f"{f} = {scale}[{err.by}_ij]·{output}(t_ij), {scale}[{ref}] = 1 (reference assay); "
                     f"{err.model} error parameters per level of {err.by}")
    else:
        lines.append(f"{f} = {output}(t_ij): subject i's prediction at its j-th observation time")
    if err.student_t:
        lines.append(f"Student-t residuals with {err.prefix}nu degrees of freedom (heavier tails for outliers)")
    return [f"{what}: {line}" if what else line for line in lines]


def _blq_lines(err, f: str, what: str) -> list[str]:
    z = f"(ln LLOQ − ln {f})" if err.model == "lognormal" else f"(LLOQ − {f})"
    line = {
        "M3": f"M3: a BLQ observation contributes P(DV_ij < LLOQ) = Φ({z}/{_sd(err, f)[1]}) (censored likelihood)",
        "M4": "M4: every observation conditioned on DV > 0: BLQ rows P(0 < DV_ij < LLOQ)/P(DV_ij > 0), others "
              "p(DV_ij)/P(DV_ij > 0)",
        "drop": "drop: BLQ observations are left out of the likelihood (counted in the data summary)",
    }[err.blq]
    return [f"{what}: {line}" if what else line]


def _outputs(spec) -> tuple[str, str]:
    """What the observations and the PD observations measure."""
    if spec.user is not None:
        raw = spec.user.raw
        return raw.get("output", "f"), raw.get("pd_output", "")
    return "C", ("R" if spec.pd and spec.pd.startswith("idr") else "E")


def _residual(spec) -> list[Equation]:
    two = spec.pd_error is not None
    output, pd_output = _outputs(spec)
    output = output if output.isidentifier() else f"[{output}]"
    lines = _error_lines(spec.error, "f_ij", output, "PK observations" if two else "")
    blq = _blq_lines(spec.error, "f_ij", "PK observations" if two else "")
    if two:
        pd_output = pd_output if pd_output.isidentifier() else f"[{pd_output}]"
        lines += _error_lines(spec.pd_error, "g_ij", pd_output, "PD observations")
        blq += _blq_lines(spec.pd_error, "g_ij", "PD observations")
    return [Equation(RESIDUAL, line) for line in lines] + [Equation(BLQ, line) for line in blq]


def equations(spec) -> list[Equation]:
    """The model of ``spec`` line by line, as ``Equation(block, text)`` (unpacks as a tuple).

    Blocks, in order: structural model, PD model (PK/PD), individual
    parameters, inter-individual variability, residual error, observations
    below the LLOQ.
    """
    return _structural(spec) + _individual(spec) + _variability(spec) + _residual(spec)


# ----------------------------------------------------------------------------- priors
def _prior_row(parameter: str, prior, default=None) -> dict:
    if prior is None:
        return {"parameter": parameter, "distribution": "default (set from the data when the model is built)",
                "arguments": "", "source": "bayespk default"}
    if isinstance(prior, float):
        return {"parameter": parameter, "distribution": "fixed", "arguments": f"{prior:g}", "source": "spec"}
    if isinstance(prior, MixturePrior):
        n1, n2 = prior.names
        comps = "; ".join(f"w={w:.3g}, {n1}={a:.4g}, {n2}={b:.4g}" for w, a, b in zip(prior.weights, prior.p1,
                                                                                        prior.p2))
        src = f"prior file {Path(prior.file).name}" if prior.file else "mixture prior (inline)"
        return {"parameter": parameter, "distribution": f"{prior.family} mixture ({prior.scale} scale)",
                "arguments": comps, "source": src}
    args = ", ".join(f"{k}={v:g}" for k, v in prior.params.items())
    src = "bayespk default" if default is not None and prior == default else "spec"
    return {"parameter": parameter, "distribution": prior.dist, "arguments": args, "source": src}


def prior_table(spec) -> pd.DataFrame:
    """Every prior of the model: ``parameter, distribution, arguments, source``.

    ``source`` is ``spec`` (as the spec gives it; a ``guess`` becomes
    LogNormal(ln guess, 1)), ``bayespk default`` (the value equals bayespk's
    default), a prior file's name, or ``fixed`` values; error SDs without a
    prior in the spec get data-dependent defaults when the model is built (the
    fit's stored spec has them).
    """
    from bayespk.model.spec import DEFAULT_IIV, DEFAULT_IOV, DEFAULT_NU

    rows = [_prior_row(n, p.typical) for n, p in spec.parameters.items()]
    rows += [_prior_row(f"omega_{n}", p.iiv, DEFAULT_IIV) for n, p in spec.parameters.items() if p.iiv is not None]
    rows += [_prior_row(f"omega_iov_{n}", p.iov, DEFAULT_IOV) for n, p in spec.parameters.items()
             if p.iov is not None]
    if spec.correlated:
        rows.append({"parameter": "IIV correlation (" + ", ".join(spec.correlated) + ")", "distribution": "LKJ",
                     "arguments": f"eta={spec.lkj_eta:g}", "source": "spec"})
    shrink = spec.covariate_shrinkage
    for c in spec.covariates:
        if shrink is not None and c.name in shrink.relations:
            rows.append(_horseshoe_row(c))
            continue
        rows.append(_prior_row(c.name, c.default_prior() if c.coefficient is None else c.coefficient,
                               c.default_prior()))
    if shrink is not None:
        rows += _horseshoe_global_rows(shrink)
    for t in spec.treatments:
        from bayespk.model.spec import DEFAULT_MULTIPLIER

        rows.append(_prior_row(t.name, t.multiplier, DEFAULT_MULTIPLIER))
    for err in (spec.error, spec.pd_error):
        if err is None:
            continue
        for base, name in zip(err.base_names, err.names):
            rows.append(_prior_row(name, err.priors.get(base, DEFAULT_NU if base == "nu" else None),
                                   DEFAULT_NU if base == "nu" else None))
        if err.by is not None:
            from bayespk.model.spec import DEFAULT_ASSAY_SCALE

            rows.append(_prior_row(err.scale_name, err.scale, DEFAULT_ASSAY_SCALE))
    joint = spec.joint_prior
    if joint is not None:  # the joint prior replaces the spec's own priors of the parameters it covers
        src = joint.source.get("run") or joint.source.get("estimates") or "inline"
        src = f"joint prior from {Path(src).name if src != 'inline' else src}"
        extras = f"weight={joint.source.get('weight', 1):g}" + (f", robust={joint.robust:g}" if joint.robust else "")
        for row in rows:
            if row["parameter"] in joint.names:
                j = joint.names.index(row["parameter"])
                scale = _scale_name(joint.lower[j], joint.upper[j])
                row.update(distribution=f"joint normal on the {scale} scale",
                           arguments=f"mean={joint.mean[j]:.4g}, sd={joint.sd()[j]:.3g}, {extras}", source=src)
    return pd.DataFrame(rows, columns=["parameter", "distribution", "arguments", "source"])


_HORSESHOE_SOURCE = "spec [covariate_shrinkage] (Piironen & Vehtari 2017)"


def _horseshoe_row(c) -> dict:
    """The prior row of a coefficient under the regularized horseshoe: its standardized form."""
    ref = c.reference if isinstance(c.reference, str) else f"{c.reference:g}" if c.reference is not None else ""
    per = {"power": f"per SD of log({c.column}/{ref})", "exponential": f"per SD of {c.column}",
           "linear": f"per SD of {c.column}", "categorical": "per level, vs the reference (not scaled)"}[c.effect]
    scaled = "" if c.effect == "categorical" else " / sd"
    return {"parameter": c.name, "distribution": "regularized horseshoe",
            "arguments": f"z·hs_tau·λ̃{scaled} ({per}); hs_z_{c.name} ~ Normal(0, 1), "
                         f"hs_lambda_{c.name} ~ HalfCauchy(0, 1), λ̃² = hs_c2·λ²/(hs_c2 + hs_tau²·λ²)",
            "source": _HORSESHOE_SOURCE}


def _horseshoe_global_rows(shrink) -> list[dict]:
    """Global scale and slab of the regularized horseshoe (tau0 needs the number of subjects N)."""
    d, p0 = len(shrink.relations), shrink.expected
    tau0 = f"tau0 = {p0:g}/({d} − {p0:g})·{shrink.noise_sd:g}/√N, N subjects (set when the model is built)"
    tau = ({"distribution": "HalfCauchy", "arguments": f"beta={tau0}"} if shrink.global_df == 1 else
           {"distribution": "HalfStudentT", "arguments": f"nu={shrink.global_df:g}, sigma={tau0}"})
    return [{"parameter": "hs_tau", **tau, "source": _HORSESHOE_SOURCE},
            {"parameter": "hs_c2", "distribution": "InverseGamma",
             "arguments": f"alpha={shrink.slab_df / 2:g}, beta={shrink.slab_df * shrink.slab_scale ** 2 / 2:g} "
                          f"(slab_df={shrink.slab_df:g}, slab_scale={shrink.slab_scale:g})",
             "source": _HORSESHOE_SOURCE}]


def _scale_name(lower: float, upper: float) -> str:
    if math.isinf(lower) and math.isinf(upper):
        return "natural"
    return "log" if math.isinf(upper) else "logit"


