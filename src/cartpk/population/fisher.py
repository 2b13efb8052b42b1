"""Standard errors of a population fit: the Fisher information of the linearised model.

The model is linearised around the conditional modes (Monolix's "linearization" method):
y_i ≈ N(f_i + J_i(m_i(θ) − φ̂_i), J_i Ω J_i' + Σ_i) on the error model's scale, quantified
observations only: censored ones (below the LLOQ or interval-censored) add no information
there, though they do enter the estimates and the −2LL.
"""

from __future__ import annotations

import numpy as np

from ..solve import solve_batch
from .state import SaemState


def fisher_covariance(
    run: SaemState, phi_mode: np.ndarray, notes: list[str]
) -> tuple[list[str], np.ndarray | None]:
    """Inverse Fisher information of the linearised model, over the estimated parameters."""
    d = run.design
    names = d.model.param_names
    random = [j for j, n in enumerate(names) if n in d.random]
    active, kept, blocks, errors = estimated_parameters(run)
    labels = [f"mu_{names[j]}" for j in active] + [c.label for c in d.columns]
    labels += [omega_label(names, a, b) for a, b in blocks]
    labels += [f"{a}_{n}" for a, n in errors]
    f, J = linearise(run, phi_mode, active)
    info = np.zeros((len(labels), len(labels)))
    quantified = d.obs.cens == 0
    blind = [a for a, _ in errors if not quantified[d.obs.analyte == a].any()]
    if not quantified.any():
        blind = list(d.errors)
    if blind:
        notes.append(
            f"no standard errors: the Fisher information (linearisation) uses quantified "
            f"observations only, and {', '.join(dict.fromkeys(blind))} has none (every point "
            "censored, e.g. titres given as intervals)"
        )
        return sd_labels(labels, names, kept), None
    for i in range(d.n):
        rows = np.arange(d.obs.off[i], d.obs.off[i + 1])
        rows = rows[quantified[rows]]
        if rows.size == 0:
            continue
        info += subject_information(run, i, rows, f[rows], J[rows], active, random, blocks, errors)
    omega_index = [labels.index(omega_label(names, a, a)) for a in kept]
    try:
        covariance = np.linalg.inv(info)
    except np.linalg.LinAlgError:
        notes.append("the Fisher information is singular: standard errors not computable")
        return sd_labels(labels, names, kept), None
    if np.any(np.diag(covariance) <= 0) or not np.all(np.isfinite(covariance)):
        notes.append("the Fisher information is not positive definite: no standard errors")
        return sd_labels(labels, names, kept), None
    for k, j in zip(omega_index, kept, strict=True):
        # the variance element's SE turned into the SD's by the delta method
        sd = np.sqrt(run.omega[j, j])
        covariance[k, :] /= 2 * sd
        covariance[:, k] /= 2 * sd
    return sd_labels(labels, names, kept), covariance


def estimated_parameters(
    run: SaemState,
) -> tuple[list[int], list[int], list[tuple[int, int]], list[tuple[str, str]]]:
    """What the information covers, in its order (after every covariate coefficient):
    the estimated typical values (model parameter positions), the random effects kept (not
    collapsed), their Omega elements (pairs of positions) and the residual error
    parameters estimated ((analyte, name))."""
    d = run.design
    names = d.model.param_names
    active = [j for j, n in enumerate(names) if n in d.estimated]
    gone = run.collapsed()
    kept = [j for j, n in enumerate(names) if n in d.random and j not in gone]
    errors = [
        (a, n) for a, (kind, fixed) in d.errors.items() for n in run.error[a] if n not in fixed
    ]
    return active, kept, omega_elements(kept, d.block), errors


def sd_labels(labels: list[str], names: tuple[str, ...], kept: list[int]) -> list[str]:
    """The labels of the estimates reported: a diagonal Omega element as its SD, omega_<p>
    (the covariance holds the SD's variance, by the delta method)."""
    variance = {omega_label(names, j, j): f"omega_{names[j]}" for j in kept}
    return [variance.get(label, label) for label in labels]


def omega_elements(random: list[int], block: bool) -> list[tuple[int, int]]:
    """The Omega elements estimated: the diagonal, or the lower triangle of a block."""
    if not block:
        return [(j, j) for j in random]
    return [(a, b) for k, a in enumerate(random) for b in random[: k + 1]]


def omega_label(names: tuple[str, ...], a: int, b: int) -> str:
    return f"omega2_{names[a]}" if a == b else f"omega_{names[a]},{names[b]}"


def linearise(run: SaemState, phi: np.ndarray, active: list[int]) -> tuple[np.ndarray, np.ndarray]:
    """Predictions on the error scale at phi and their Jacobian over the active parameters."""
    d = run.design
    n, step = d.n, 1e-4
    points = np.repeat(phi[:, None, :], len(active) + 1, axis=1)
    for k, j in enumerate(active):
        points[:, k + 1, j] += step
    flat = points.reshape(n * (len(active) + 1), -1)
    subject = np.repeat(np.arange(n), len(active) + 1)
    nat = run.natural_rows(flat, d.obs.covariates[subject])
    counts = np.diff(d.obs.off)
    times = np.concatenate([d.obs.time[d.obs.off[i] : d.obs.off[i + 1]] for i in subject])
    offsets = np.concatenate([[0], np.cumsum(counts[subject])])
    sol = solve_batch(
        d.model,
        nat[:, : len(d.model.param_names)],
        nat[:, len(d.model.param_names) :] if d.obs.covariates.size else None,
        times=times,
        offsets=offsets,
        rtol=1e-9,
        atol=1e-12,
        on_failure="nan",
    ).values
    f = np.empty(d.obs.time.size)
    J = np.empty((d.obs.time.size, len(active)))
    for i in range(n):
        rows = slice(d.obs.off[i], d.obs.off[i + 1])
        first = i * (len(active) + 1)
        block = [
            error_scale(run, rows, sol[offsets[first + k] : offsets[first + k + 1]])
            for k in range(len(active) + 1)
        ]
        f[rows] = block[0]
        J[rows] = np.column_stack([(b - block[0]) / step for b in block[1:]])
    return f, J


def error_scale(run: SaemState, rows: slice, values: np.ndarray) -> np.ndarray:
    """A subject's predictions of its observed outputs, on the error model's scale."""
    out = values[np.arange(values.shape[0]), run.design.obs.out[rows]]
    log = run.kind[rows] == 0
    return np.where(log, np.log(np.where(log, out, 1.0)), out)


def subject_information(
    run: SaemState,
    i: int,
    rows: np.ndarray,
    f: np.ndarray,
    J: np.ndarray,
    active: list[int],
    random: list[int],
    blocks: list[tuple[int, int]],
    errors: list[tuple[str, str]],
) -> np.ndarray:
    """One subject's Fisher information of the linearised Gaussian model."""
    d = run.design
    pos = {j: k for k, j in enumerate(active)}
    JR = J[:, [pos[j] for j in random]]
    omega = run.omega[np.ix_(random, random)]
    with np.errstate(over="ignore"):
        natural_f = np.where(run.kind[rows] == 0, np.exp(f), f)
    variance, d_error = residual_variance(run, rows, natural_f, errors)
    V = JR @ omega @ JR.T + np.diag(variance)
    Vinv = np.linalg.inv(V)
    dm = [J[:, k] for k in range(len(active))]
    dm += [J[:, pos[d.model.param_names.index(c.parameter)]] * c.values[i] for c in d.columns]
    dV = [np.zeros_like(V)] * len(dm)
    for a, b in blocks:
        ja, jb = JR[:, random.index(a)], JR[:, random.index(b)]
        outer = np.outer(ja, jb)
        dV.append(outer if a == b else outer + outer.T)
    dm += [np.zeros_like(f)] * (len(blocks) + len(errors))
    dV += [np.diag(g) for g in d_error]
    A = [Vinv @ m for m in dV]
    n = len(dm)
    info = np.empty((n, n))
    for a in range(n):
        for b in range(a, n):
            value = dm[a] @ Vinv @ dm[b] + 0.5 * np.sum(A[a] * A[b].T)
            info[a, b] = info[b, a] = value
    return info


def residual_variance(
    run: SaemState, rows: np.ndarray, f: np.ndarray, errors: list[tuple[str, str]]
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Residual variances of the rows and their derivatives w.r.t. each log error parameter."""
    analyte = run.design.obs.analyte[rows]
    variance = np.zeros(rows.size)
    for name, (kind, _) in run.design.errors.items():
        e, on = run.error[name], analyte == name
        a2 = e.get("sigma", e.get("a", 0.0)) ** 2
        b2f2 = e.get("b", 0.0) ** 2 * f**2
        variance[on] = (a2 + b2f2)[on] if kind != "proportional" else b2f2[on]
    derivatives = []
    for name, parameter in errors:
        value = run.error[name][parameter]
        on = analyte == name
        g = np.where(on, 2 * value**2 * (f**2 if parameter == "b" else 1.0), 0.0)
        derivatives.append(g)
    return variance, derivatives
