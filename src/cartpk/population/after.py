"""After the SAEM iterations: conditional modes, −2LL by importance sampling, standard errors.

* Conditional modes: each subject's maximum a posteriori parameters given the population
  estimates (an individual fit with the population distribution as prior).
* −2LL: importance sampling per subject with a defensive mixture proposal (Hesterberg,
  Technometrics 1995;37:185-194): with weight 1 − IS_DEFENSIVE a multivariate Student-t
  (5 degrees of freedom) centred on the conditional mode with the conditional covariance
  there (the inverse Hessian of the subject's posterior, correlated: C0 and rho often are),
  and with weight IS_DEFENSIVE an independent Student-t centred on the conditional mean
  with the conditional SD from the chain, as Monolix's proposal. The mixture keeps the
  weights bounded where the local (Laplace) covariance is too narrow.
* −2LL by adaptive Gauss–Hermite quadrature (up to :data:`QUADRATURE_MAX` random effects,
  reported beside importance sampling): per subject a product grid of Gauss–Hermite nodes
  (:data:`QUADRATURE_NODES` per dimension) centred on the conditional mode and scaled by
  the Cholesky factor of the conditional covariance there (Pinheiro & Bates, J Comput
  Graph Stat 1995;4:12-35), the data −2LL at the nodes from the same numba kernel
  (``m2ll_rows``). Deterministic, and exact to the grid's order: no Monte Carlo error.
* Standard errors: the Fisher information of the model linearised around the conditional
  modes (Monolix's "linearization" method): y_i ≈ N(f_i + J_i(m_i(θ) − φ̂_i),
  J_i Ω J_i' + Σ_i) on the error model's scale, quantified observations only: censored
  ones (below the LLOQ or interval-censored) add no information there, though they do
  enter the estimates and the −2LL.

Each step takes the finished run as a frozen :class:`SaemState`, never the live ``Saem``.
"""

from __future__ import annotations

import itertools
import warnings

import numpy as np
import pandas as pd
from scipy.special import gammaln, logsumexp

from ..data import Dataset
from ..dosing import DOSE, RESET_DOSE
from ..errors import FitWarning
from ..individual.fit import fit
from ..scales import to_natural
from ..solve import solve_batch
from .result import PopulationFit
from .state import SaemState

#: Smallest between-subject SD (estimation scale) SAEM lets an omega reach.
OMEGA_FLOOR = 1e-3
#: An SD below this at the end is reported as collapsed (fixed, no SE).
COLLAPSED = 1e-2
IS_DF = 5
#: Weight of the chain-based component of the importance-sampling mixture.
IS_DEFENSIVE = 0.1
IS_CHUNK = 20_000
#: Gauss–Hermite nodes per dimension by number of random effects (a grid of at most 625).
QUADRATURE_NODES = {1: 20, 2: 11, 3: 7, 4: 5}
QUADRATURE_MAX = max(QUADRATURE_NODES)
AT_BOUND = 0.02  # a typical value this close to a bound (estimation scale) is said to be at it


def finish(run: SaemState, ds: Dataset, n_is: int, seed: int) -> PopulationFit:
    """Everything a PopulationFit holds, from the finished SAEM run (frozen): the steps below
    are called in turn on that state."""
    d = run.design
    notes: list[str] = list(d.notes)
    notes += collapsed_notes(run) + bound_notes(run)
    design = d.mean(run.mu, run.theta)
    phi_mean = run.s_phi.copy()
    phi_sd = np.sqrt(np.maximum(run.s_phi_sq - run.s_phi**2, 0.0))
    phi_mode, phi_cov = conditional_modes(run, ds, design, notes)
    ofv, ofv_se = importance_sampling(run, design, phi_mode, phi_cov, phi_mean, phi_sd, n_is, seed)
    ofv_quadrature = quadrature(run, design, phi_mode, phi_cov, phi_sd)
    names, covariance = fisher_covariance(run, phi_mode, notes)
    notes += drift(run, names, covariance)
    random = [j for j, name in enumerate(d.model.param_names) if name in d.random]
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


def collapsed(run: SaemState) -> list[int]:
    """Indices (model parameter order) of random effects whose SD ended below
    ``COLLAPSED``: the data do not determine them; they are reported without an SE."""
    sd = np.sqrt(np.diag(run.omega))
    return [
        j
        for j, name in enumerate(run.design.model.param_names)
        if name in run.design.random and sd[j] < COLLAPSED
    ]


def collapsed_notes(run: SaemState) -> list[str]:
    """One note per collapsed between-subject SD (see :func:`collapsed`)."""
    notes = []
    for j in collapsed(run):
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
    """One note per estimated typical value that ended at (within ``AT_BOUND`` on the
    estimation scale of) a bound of the model file, where SAEM holds it."""
    notes = []
    for j, name in enumerate(run.design.model.param_names):
        if name not in run.design.estimated:
            continue
        low, high = run.mu_bounds[j]
        for edge, word in ((low, "lower"), (high, "upper")):
            if np.isfinite(edge) and abs(run.mu[j] - edge) <= AT_BOUND:
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


def conditional_modes(
    run: SaemState, ds: Dataset, design: np.ndarray, notes: list[str]
) -> tuple[np.ndarray, np.ndarray]:
    """MAP individual parameters (estimation scale), each subject fitted with the population
    prior on its random effects and every other parameter fixed at its population value,
    and the conditional covariance of the random effects there (n, k, k; 2 H^-1 of the
    subject's −2 log posterior on the estimation scale, NaN where it is not computable)."""
    d = run.design
    model = d.model
    random = [j for j, n in enumerate(model.param_names) if n in d.random]
    sd = np.sqrt(np.diag(run.omega))
    if d.block:
        notes.append("conditional modes use the diagonal of a block Omega as prior")
    errors = {a: (kind, dict(run.error[a])) for a, (kind, _) in d.errors.items()}
    modes = design.copy()
    covariances = np.full((d.n, len(random), len(random)), np.nan)
    for i, subject in enumerate(d.obs.ids):
        natural = {
            name: float(to_natural(design[i, j], p.scale, p.lower, p.upper))
            for j, (name, p) in enumerate(model.parameters.items())
        }
        start = {
            name: {"value": inside(to_natural(run.s_phi[i, j], p.scale, p.lower, p.upper), p)}
            if j in random
            else {"value": natural[name], "vary": False}
            for j, (name, p) in enumerate(model.parameters.items())
        }
        natural = {name: inside(value, model.parameters[name]) for name, value in natural.items()}
        priors = {model.param_names[j]: (natural[model.param_names[j]], sd[j]) for j in random}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FitWarning)
            result = fit(
                model, ds, id=subject, params=start, error=errors, priors=priors,
                rtol=1e-8, atol=1e-10, analytes=d.analytes,
            )  # fmt: skip
        modes[i, random] = [result.estimation[model.param_names[j]] for j in random]
        names = [model.param_names[j] for j in random]
        if result.covariance is not None and all(n in result.names for n in names):
            k = [result.names.index(n) for n in names]
            covariances[i] = result.covariance[np.ix_(k, k)]
        if not result.success:
            notes.append(f"ID {subject}: conditional mode not converged ({result.message})")
    return modes, covariances


def inside(value: float, p) -> float:
    """A natural-scale value moved into its parameter's bounds (a start for an individual
    fit: an individual parameter on a log scale can stray beyond them)."""
    return float(np.clip(value, p.lower, p.upper))


def importance_sampling(
    run: SaemState,
    design: np.ndarray,
    mode: np.ndarray,
    mode_cov: np.ndarray,
    mean: np.ndarray,
    sd: np.ndarray,
    n_is: int,
    seed: int,
) -> tuple[float, float]:
    """−2 log-likelihood by importance sampling and its Monte Carlo SE (the proposal: see
    the module notes; a subject without a conditional covariance uses the chain's SDs in
    both components)."""
    random = random_columns(run)
    k = random.size
    chain_sd = chain_scales(run, sd, random)
    rng = np.random.default_rng([seed, 7])
    n = run.design.n
    local = local_factors(mode_cov, chain_sd)
    defensive = rng.uniform(size=(n, n_is)) < IS_DEFENSIVE
    u = rng.standard_normal((n, n_is, k)) * np.sqrt(IS_DF / rng.chisquare(IS_DF, (n, n_is, 1)))
    centre_local, centre_chain = mode[:, None, random], mean[:, None, random]
    x_local = centre_local + np.einsum("iab,imb->ima", local, u)
    x_chain = centre_chain + chain_sd[:, None, :] * u
    x = np.where(defensive[:, :, None], x_chain, x_local)
    log_q = np.logaddexp(
        np.log1p(-IS_DEFENSIVE) + multivariate_t_logpdf(x, centre_local, local),
        np.log(IS_DEFENSIVE) + multivariate_t_logpdf(x, centre_chain, chain_sd[:, :, None]
                                                      * np.eye(k)),
    )  # fmt: skip
    log_w = log_joint(run, design, x, random) - log_q
    log_l = logsumexp(log_w, axis=1) - np.log(n_is)
    w = np.exp(log_w - log_w.max(axis=1, keepdims=True))
    relative_var = w.var(axis=1) / (n_is * w.mean(axis=1) ** 2)
    return float(-2 * log_l.sum()), float(2 * np.sqrt(relative_var.sum()))


def quadrature(
    run: SaemState, design: np.ndarray, mode: np.ndarray, mode_cov: np.ndarray, sd: np.ndarray
) -> float:
    """−2 log-likelihood by adaptive Gauss–Hermite quadrature (see the module notes); NaN for
    more than :data:`QUADRATURE_MAX` random effects. A subject without a conditional
    covariance is scaled by the chain's SDs.

    With eta = mode + sqrt(2) L z (L L' the conditional covariance) each subject's likelihood
    is |det sqrt(2) L| sum_k w_k e^(z_k'z_k) p(y | eta_k) N(eta_k; 0, Omega), w_k the product
    Gauss–Hermite weights for the weight function e^(-z'z).
    """
    random = random_columns(run)
    k = random.size
    if k > QUADRATURE_MAX:
        return float("nan")
    z1, w1 = np.polynomial.hermite.hermgauss(QUADRATURE_NODES[k])
    z = np.array(list(itertools.product(z1, repeat=k)))
    log_w = np.log(np.array(list(itertools.product(w1, repeat=k)))).sum(axis=1)
    log_w += (z**2).sum(axis=1)
    factor = np.sqrt(2.0) * local_factors(mode_cov, chain_scales(run, sd, random))
    x = mode[:, None, random] + np.einsum("iab,mb->ima", factor, z)
    log_det = np.log(np.abs(np.diagonal(factor, axis1=1, axis2=2))).sum(axis=1)
    log_l = logsumexp(log_joint(run, design, x, random) + log_w, axis=1) + log_det
    return float(-2 * log_l.sum())


def random_columns(run: SaemState) -> np.ndarray:
    """Positions (model parameter order) of the parameters with a random effect."""
    d = run.design
    return np.array([j for j, n in enumerate(d.model.param_names) if n in d.random])


def chain_scales(run: SaemState, sd: np.ndarray, random: np.ndarray) -> np.ndarray:
    """Each subject's conditional SDs from the chain (n, k), at least 5 % of Omega's SDs."""
    floor = 0.05 * np.sqrt(np.diag(run.omega)[random])
    return np.maximum(sd[:, random], floor)


def log_joint(run: SaemState, design: np.ndarray, x: np.ndarray, random: np.ndarray):
    """log p(y_i | phi) + log N(eta; 0, Omega) at m points per subject (n, m): ``x`` (n, m, k)
    the random-effect parameters on the estimation scale, the others at ``design``."""
    n, m, _ = x.shape
    omega = run.omega[np.ix_(random, random)]
    inv = np.linalg.inv(omega)
    _, logdet = np.linalg.slogdet(2 * np.pi * omega)
    phi = np.repeat(design[:, None, :], m, axis=1)
    phi[:, :, random] = x
    eta = x - design[:, None, random]
    log_prior = -0.5 * (np.einsum("ima,ab,imb->im", eta, inv, eta) + logdet)
    m2ll = data_m2ll(run, phi.reshape(n * m, -1), np.repeat(np.arange(n), m))
    return -0.5 * m2ll.reshape(n, m) + log_prior


def local_factors(cov: np.ndarray, chain_sd: np.ndarray) -> np.ndarray:
    """Lower Cholesky factors (n, k, k) of each subject's conditional covariance, or the
    diagonal of the chain's SDs where it is missing or not positive definite."""
    out = np.empty_like(cov)
    for i in range(cov.shape[0]):
        try:
            out[i] = np.linalg.cholesky(cov[i])
            if not np.all(np.isfinite(out[i])):
                raise np.linalg.LinAlgError
        except np.linalg.LinAlgError:
            out[i] = np.diag(chain_sd[i])
    return out


def multivariate_t_logpdf(x: np.ndarray, centre: np.ndarray, factor: np.ndarray) -> np.ndarray:
    """Log density of a multivariate Student-t with IS_DF degrees of freedom, location
    ``centre`` (n, 1, k) and scale L L' (``factor`` L: (n, k, k), lower triangular), at
    ``x`` (n, m, k)."""
    k = x.shape[2]
    z = np.linalg.solve(factor[:, None, :, :], (x - centre)[..., None])[..., 0]
    log_det = np.log(np.abs(np.diagonal(factor, axis1=1, axis2=2))).sum(axis=1)[:, None]
    const = gammaln((IS_DF + k) / 2) - gammaln(IS_DF / 2) - 0.5 * k * np.log(IS_DF * np.pi)
    return const - log_det - 0.5 * (IS_DF + k) * np.log1p((z**2).sum(axis=2) / IS_DF)


def data_m2ll(run: SaemState, phi: np.ndarray, subject: np.ndarray) -> np.ndarray:
    """Data −2LL of subject ``subject[r]`` at individual parameters ``phi[r]`` (chunked)."""
    out = np.empty(phi.shape[0])
    args = run.observation_args
    kernels = run.design.model.kernels
    covariates = run.design.obs.covariates
    for lo in range(0, phi.shape[0], IS_CHUNK):
        rows = slice(lo, lo + IS_CHUNK)
        nat = run.natural_rows(phi[rows], covariates[subject[rows]])
        kernels.m2ll_rows(nat, subject[rows].astype(np.int64), *args, out[rows])
    return np.where(np.isfinite(out), out, np.inf)


def fisher_covariance(
    run: SaemState, phi_mode: np.ndarray, notes: list[str]
) -> tuple[list[str], np.ndarray | None]:
    """Inverse Fisher information of the linearised model, over the estimated parameters."""
    d = run.design
    names = d.model.param_names
    active = [j for j, n in enumerate(names) if n in d.estimated]
    random = [j for j, n in enumerate(names) if n in d.random]
    gone = collapsed(run)
    kept = [j for j in random if j not in gone]
    blocks = omega_elements(kept, d.block)
    errors = [
        (a, n) for a, (kind, fixed) in d.errors.items() for n in run.error[a] if n not in fixed
    ]
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
