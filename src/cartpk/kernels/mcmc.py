"""Metropolis–Hastings moves over every subject's random effects (the SAEM E-step).

Individual parameters live on the estimation scale: phi = mu + eta, mapped to the natural
scale per parameter by :func:`cartpk.scales.natural_into`. All random numbers are drawn by
the caller (seeded numpy) and passed in, and each subject's moves are independent, so the
results do not depend on the number of threads.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from ..scales import natural_into
from .likelihood import _subject_m2ll


@numba.njit(cache=True, error_model="numpy")
def _eta_m2lp(eta, omega_inv):
    """eta' Ω⁻¹ eta (−2 log prior density of eta without constants)."""
    total = 0.0
    n = eta.size
    for a in range(n):
        for b in range(n):
            total += eta[a] * omega_inv[a, b] * eta[b]
    return total


@numba.njit(cache=True, nogil=True, error_model="numpy")
def mh_batch(
    model,
    dims,
    mu,
    eta,
    m2ll,
    mode,
    step,
    omega_chol,
    omega_inv,
    z,
    u,
    scale,
    lower,
    upper,
    cov,
    o_off,
    o_time,
    o_out,
    o_dv,
    o_cens,
    o_lloq,
    o_lower,
    o_kind,
    o_ea,
    o_eb,
    d_time,
    d_amt,
    d_reset,
    d_off,
    solver,
    pred,
    kept,
    accepted,
    first,
    last,
):
    """Metropolis–Hastings sweeps over the random effects of subjects ``first <= i < last``,
    in place.

    ``mu`` (n, n_par): each subject's mean on the estimation scale (typical value plus
    covariate effects); ``eta`` (n, n_par) the current random effects (0 where a parameter has
    none) and ``m2ll`` (n,) the data −2LL at the current state, both updated in place.
    ``z`` (n, n_moves, n_par) standard normal draws and ``u`` (n, n_moves) uniform draws.
    ``mode`` 0: independent proposals from the prior, eta* = L z (``omega_chol`` = L, zero
    rows for parameters without random effects), accepted on the likelihood ratio;
    mode 1: a joint random walk eta* = eta + step ∘ z; mode 2: a random walk on one
    component per move, cycling through those with ``step > 0``. Random walks are accepted
    on likelihood times prior. ``pred`` is a workspace; ``kept`` (n_obs, N_OUTPUTS) holds the
    predictions at the current state (updated on acceptance); ``accepted`` (n,) counts
    accepted moves.
    """
    n_par = mu.shape[1]
    for i in range(first, last):
        lo, hi = o_off[i], o_off[i + 1]
        # element loops, not slice assignments: numba compiles a shape check with its
        # error-message formatting for each array-to-array assignment, seconds apiece
        p = np.empty(n_par + cov.shape[1])
        for c in range(cov.shape[1]):
            p[n_par + c] = cov[i, c]
        phi = np.empty(n_par)
        proposal = np.empty(n_par)
        current = eta[i].copy()
        m2lp = _eta_m2lp(current, omega_inv)
        n_accepted = 0
        k_component = 0
        for move in range(u.shape[1]):
            if mode == 0:
                for a in range(n_par):
                    proposal[a] = 0.0
                    for b in range(n_par):
                        proposal[a] += omega_chol[a, b] * z[i, move, b]
            elif mode == 1:
                for a in range(n_par):
                    proposal[a] = current[a] + step[a] * z[i, move, a]
            else:
                for a in range(n_par):
                    proposal[a] = current[a]
                for _ in range(n_par):
                    k_component = (k_component + 1) % n_par
                    if step[k_component] > 0.0:
                        break
                proposal[k_component] += step[k_component] * z[i, move, k_component]
            for a in range(n_par):
                phi[a] = mu[i, a] + proposal[a]
            natural_into(phi, scale, lower, upper, p)
            new = _subject_m2ll(
                model,
                dims,
                p,
                o_time[lo:hi],
                o_out[lo:hi],
                o_dv[lo:hi],
                o_cens[lo:hi],
                o_lloq[lo:hi],
                o_lower[lo:hi],
                o_kind[lo:hi],
                o_ea[lo:hi],
                o_eb[lo:hi],
                d_time[d_off[i] : d_off[i + 1]],
                d_amt[d_off[i] : d_off[i + 1]],
                d_reset[d_off[i] : d_off[i + 1]],
                solver,
                pred[lo:hi],
            )
            new_m2lp = m2lp if mode == 0 else _eta_m2lp(proposal, omega_inv)
            delta = (new - m2ll[i]) + (0.0 if mode == 0 else new_m2lp - m2lp)
            if math.isfinite(new) and math.log(u[i, move]) < -0.5 * delta:
                for a in range(n_par):
                    current[a] = proposal[a]
                for r in range(lo, hi):
                    for c in range(kept.shape[1]):
                        kept[r, c] = pred[r, c]
                m2ll[i] = new
                m2lp = new_m2lp
                n_accepted += 1
        for a in range(n_par):
            eta[i, a] = current[a]
        accepted[i] = n_accepted
