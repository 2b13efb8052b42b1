"""After the SAEM iterations: the post-fit steps, called in turn on the frozen run.

1. Polishing (:mod:`.polish`): the estimates moved to the maximum of the −2LL by quadrature.
2. Conditional modes and covariances (:mod:`.modes`).
3. −2LL by importance sampling and by adaptive Gauss–Hermite quadrature (:mod:`.marginal`).
4. Standard errors from the Fisher information of the linearised model (:mod:`.fisher`).
5. Notes: collapsed random effects, typical values at a bound, parameters still drifting.

Each step takes the finished run as a frozen :class:`SaemState`, never the live ``Saem``.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from ..dosing import DOSE, RESET_DOSE
from ..errors import FitWarning
from .fisher import fisher_covariance
from .marginal import importance_sampling, quadrature, random_columns
from .modes import conditional_modes
from .polish import not_polished, polish
from .result import PopulationFit
from .state import COLLAPSED, SaemState

#: Smallest between-subject SD (estimation scale) SAEM lets an omega reach.
OMEGA_FLOOR = 1e-3


def finish(run: SaemState, n_is: int, seed: int, polishing: bool = True) -> PopulationFit:
    """Everything a PopulationFit holds, from the finished SAEM run (frozen): the steps below
    are called in turn on that state (``polishing``: step 1, or the SAEM estimates as they
    are)."""
    polished = polish(run) if polishing else not_polished(run, "not asked for")
    run = polished.run
    d = run.design
    notes: list[str] = list(d.notes) + polished.notes()
    notes += collapsed_notes(run) + bound_notes(run)
    design = d.mean(run.mu, run.theta)
    phi_mean = run.s_phi.copy()
    phi_sd = run.chain_sd
    if polished.point is None:
        phi_mode, phi_cov = conditional_modes(run, design, notes)
        ofv_quadrature = quadrature(run, design, phi_mode, phi_cov, phi_sd)
    else:  # polishing ended with them at these estimates
        point = polished.point
        phi_mode, phi_cov, ofv_quadrature = point.modes, point.covariances, point.m2ll
        notes += point.notes
    ofv, ofv_se = importance_sampling(run, design, phi_mode, phi_cov, phi_mean, phi_sd, n_is, seed)
    names, covariance = fisher_covariance(run, phi_mode, notes)
    notes += drift(run, names, covariance)
    random = list(random_columns(run))
    obs = d.obs
    observations = pd.DataFrame(
        {
            "ID": np.repeat(np.array(obs.ids, dtype=object), np.diff(obs.off)),
            "TIME": obs.time,
            "DV": obs.dv,
            "CENS": obs.cens,
            "LLOQ": obs.lloq,
            "LIMIT": np.where(np.isfinite(obs.limit), obs.limit, np.nan),
            "ANALYTE": obs.analyte,
        }
    )
    for note in notes:
        warnings.warn(note, FitWarning, stacklevel=4)
    return PopulationFit(
        model=d.model,
        ids=list(obs.ids),
        random=list(d.random),
        estimated=list(d.estimated),
        covariate_model=[c.record() for c in d.columns],
        errors=d.errors,
        omega_kind="block" if d.block else "diagonal",
        mu=dict(zip(d.model.param_names, run.mu.tolist(), strict=True)),
        theta={c.label: float(v) for c, v in zip(d.columns, run.theta, strict=True)},
        omega=run.omega[np.ix_(random, random)],
        sigma_values={a: dict(v) for a, v in run.error.items()},
        theta_names=names,
        covariance=covariance,
        ofv=ofv,
        ofv_se=ofv_se,
        ofv_quadrature=ofv_quadrature,
        n_obs=int(obs.time.size),
        phi_mode=phi_mode,
        phi_mean=phi_mean,
        covariates=obs.covariates,
        design=design,
        observations=observations,
        history=pd.DataFrame(run.history),
        settings={
            "n_iter": [run.n_explore, len(run.history) - run.n_explore],
            "seed": seed,
            "n_is": n_is,
            "method": int(run.solver[0]),
            "rtol": float(run.solver[1]),
            "atol": float(run.solver[2]),
            "polish": polished.record(),
        },
        notes=notes,
        doses=pd.DataFrame(
            {
                "ID": np.repeat(np.array(obs.ids, dtype=object), np.diff(obs.d_off)),
                "TIME": obs.d_time,
                "AMT": obs.d_amt,
                "EVID": np.where(obs.d_reset != 0, RESET_DOSE, DOSE),
            }
        ),
    )


def collapsed_notes(run: SaemState) -> list[str]:
    """One note per collapsed between-subject SD (see :func:`collapsed`)."""
    notes = []
    for j in run.collapsed():
        name = run.design.model.param_names[j]
        sd = float(np.sqrt(run.omega[j, j]))
        floor = " (the floor)" if sd <= OMEGA_FLOOR * (1 + 1e-9) else ""
        notes.append(
            f"SAEM: the between-subject SD of {name} collapsed to {sd:.2g}{floor}, below "
            f"{COLLAPSED:g}: the data do not determine a random effect on {name}; it is "
            f"reported as fixed, without an SE. Refit without {name} in random"
        )
    return notes


def bound_notes(run: SaemState) -> list[str]:
    """One note per estimated typical value that ended at a bound of the model file (see
    :meth:`SaemState.at_bound`), where SAEM holds it."""
    notes = []
    for j, name in enumerate(run.design.model.param_names):
        word = run.at_bound(j)
        if name not in run.design.estimated or word is None:
            continue
        p = run.design.model.parameters[name]
        value = p.lower if word == "lower" else p.upper
        notes.append(
            f"SAEM: the typical value of {name} is at its {word} bound {value:g} "
            f"(model {run.design.model.name}): the data do not determine it; fix it "
            f"(params={{{name!r}: {{'value': ..., 'vary': False}}}}) or widen the bounds"
        )
    return notes


def drift(run: SaemState, names: list[str], covariance: np.ndarray | None) -> list[str]:
    """Parameters whose mean over the last quarter of the exploration phase is more than
    2 SE from the final estimate: the chain had not settled when smoothing began. Typical
    values without a random effect are left out: the smoothing phase optimises them."""
    if covariance is None:
        return []
    history = pd.DataFrame(run.history)
    tail = history.iloc[3 * run.n_explore // 4 : run.n_explore]
    final = history.iloc[-1]
    notes = []
    smoothed = [f"mu_{n}" for n in run.design.model.param_names if n not in run.design.random]
    for k, name in enumerate(names):
        if name not in history or name in smoothed:
            continue
        on_log = not name.startswith(("mu_", "omega")) and "~" not in name
        transform = np.log if on_log else (lambda v: v)
        gap = abs(transform(tail[name]).mean() - transform(final[name]))
        if gap > 2 * np.sqrt(covariance[k, k]):
            notes.append(
                f"SAEM: {name} was still moving at the end of the exploration phase "
                f"(2 SE from its final value); run more iterations (n_iter)"
            )
    return notes
