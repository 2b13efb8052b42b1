"""The marginal likelihood of a population fit: −2LL by importance sampling and by quadrature.

* Importance sampling per subject with a defensive mixture proposal (Hesterberg,
  Technometrics 1995;37:185-194): with weight 1 − IS_DEFENSIVE a multivariate Student-t
  (5 degrees of freedom) centred on the conditional mode with the conditional covariance
  there (the inverse Hessian of the subject's posterior, correlated: C0 and rho often are),
  and with weight IS_DEFENSIVE an independent Student-t centred on the conditional mean
  with the conditional SD from the chain, as Monolix's proposal. The mixture keeps the
  weights bounded where the local (Laplace) covariance is too narrow.
* Adaptive Gauss–Hermite quadrature (up to :data:`QUADRATURE_MAX` random effects): per
  subject a product grid of Gauss–Hermite nodes (:data:`QUADRATURE_NODES` per dimension)
  centred on the conditional mode and scaled by the Cholesky factor of the conditional
  covariance there (Pinheiro & Bates, J Comput Graph Stat 1995;4:12-35), the data −2LL at
  the nodes from the numba kernel ``m2ll_rows``. Deterministic, and exact to the grid's
  order: no Monte Carlo error.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np
from scipy.special import gammaln, logsumexp

from .state import SaemState

IS_DF = 5
#: Weight of the chain-based component of the importance-sampling mixture.
IS_DEFENSIVE = 0.1
#: Gauss–Hermite nodes per dimension by number of random effects (a grid of at most 625).
QUADRATURE_NODES = {1: 20, 2: 11, 3: 7, 4: 5}
QUADRATURE_MAX = max(QUADRATURE_NODES)


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
    covariance is scaled by the chain's SDs."""
    if random_columns(run).size > QUADRATURE_MAX:
        return float("nan")
    return quadrature_m2ll(run, design, Grid.at(run, mode, mode_cov, sd))


@dataclass(frozen=True)
class Grid:
    """Adaptive Gauss–Hermite nodes of every subject.

    With eta = mode + sqrt(2) L z (L L' the conditional covariance) each subject's likelihood
    is |det sqrt(2) L| sum_k w_k e^(z_k'z_k) p(y | eta_k) N(eta_k; 0, Omega), w_k the product
    Gauss–Hermite weights for the weight function e^(-z'z).

    Attributes:
        x: the nodes (n, m, k): random-effect parameters on the estimation scale.
        log_w: log w_k + z_k'z_k (m,).
        log_det: log |det sqrt(2) L| per subject (n,).
    """

    x: np.ndarray
    log_w: np.ndarray
    log_det: np.ndarray

    @classmethod
    def at(cls, run: SaemState, mode: np.ndarray, mode_cov: np.ndarray, sd: np.ndarray) -> Grid:
        """The grid centred on the conditional modes ``mode`` (n, n_par), scaled by their
        covariances ``mode_cov`` (n, k, k; the chain's SDs ``sd`` where missing)."""
        random = random_columns(run)
        k = random.size
        z1, w1 = np.polynomial.hermite.hermgauss(QUADRATURE_NODES[k])
        z = np.array(list(itertools.product(z1, repeat=k)))
        log_w = np.log(np.array(list(itertools.product(w1, repeat=k)))).sum(axis=1)
        log_w += (z**2).sum(axis=1)
        factor = np.sqrt(2.0) * local_factors(mode_cov, chain_scales(run, sd, random))
        x = mode[:, None, random] + np.einsum("iab,mb->ima", factor, z)
        log_det = np.log(np.abs(np.diagonal(factor, axis1=1, axis2=2))).sum(axis=1)
        return cls(x=x, log_w=log_w, log_det=log_det)

    def m2ll(self, log_joint: np.ndarray) -> float:
        """−2 log-likelihood from the log joint density at the nodes (n, m)."""
        log_l = logsumexp(log_joint + self.log_w, axis=1) + self.log_det
        return float(-2 * log_l.sum())


def quadrature_m2ll(run: SaemState, design: np.ndarray, grid: Grid) -> float:
    """−2 log-likelihood by quadrature on a given grid."""
    return grid.m2ll(log_joint(run, design, grid.x, random_columns(run)))


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
    return data_log(run, design, x, random) + log_prior(run, design, x, random)


def data_log(run: SaemState, design: np.ndarray, x: np.ndarray, random: np.ndarray):
    """log p(y_i | phi) at m points per subject (n, m) (see :func:`log_joint`)."""
    n, m, _ = x.shape
    phi = np.repeat(design[:, None, :], m, axis=1)
    phi[:, :, random] = x
    m2ll = run.data_m2ll(phi.reshape(n * m, -1), np.repeat(np.arange(n), m))
    return -0.5 * m2ll.reshape(n, m)


def log_prior(run: SaemState, design: np.ndarray, x: np.ndarray, random: np.ndarray):
    """log N(eta; 0, Omega) at m points per subject (n, m) (see :func:`log_joint`)."""
    omega = run.omega[np.ix_(random, random)]
    _, logdet = np.linalg.slogdet(2 * np.pi * omega)
    eta = x - design[:, None, random]
    return -0.5 * (((eta @ np.linalg.inv(omega)) * eta).sum(axis=2) + logdet)


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
