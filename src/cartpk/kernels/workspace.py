"""The per-subject workspace every method steps in, and the pieces all methods share.

A subject is integrated in one workspace: ``W`` (rows of length n, the state size) and the
scalar slots ``s``. Rows and slots are named below; methods (``dopri5.py``, ``rodas.py``)
write their stages into the ``_K`` rows and their continuous extension into the ``_D`` rows,
in the common form :func:`dense` evaluates.

The right-hand side is evaluated at the *branch time* ``min(max(t, s[_LO]), s[_HI])``: a
time strictly inside the current piece (see ``integrate.py``), so that a stage on a piece
end sees the branch of the piece it belongs to.
"""

from __future__ import annotations

import math

import numba
import numpy as np

from .contract import OUTPUTS, RHS, call

_EPS = 2.220446049250313e-16

# --- workspace layout: rows of W (n_rows, n) and slots of the scalar array s ---
_Y, _YN, _YS, _DY, _F0 = 0, 1, 2, 3, 4  # state, new state, stage state, rhs, f(t, y)
_K = 5  # six stage rows: DOPRI5 k2..k7, Rodas k1..k6
_FX = 11  # Rodas: df/dt
_D = 12  # five rows of dense-output coefficients
_N_ROWS = 17
_T, _H, _TOLD, _HOLD, _TEND, _LO, _HI = 0, 1, 2, 3, 4, 5, 6
_FACOLD, _HACC, _ERRACC, _NACC, _REJECT, _NSTEP, _HMAX = 7, 8, 9, 10, 11, 12, 13
_STIFF, _NONSTIFF, _METHOD = 14, 15, 16  # stiffness test counters, the method in use
_N_SLOTS = 17


@numba.njit(cache=True, error_model="numpy")
def f(model, p, t, s, y, dydt, k_out, obuf):
    """Right-hand side at the branch time; with ``k_out >= 0`` the last entry of ``dydt`` is
    output ``k_out`` (the derivative of its integral, for exposure)."""
    tb = min(max(t, s[_LO]), s[_HI])
    call(model[RHS], tb, 0.0, p, y, dydt)
    if k_out >= 0:
        call(model[OUTPUTS], tb, 0.0, p, y, obuf)
        dydt[dydt.size - 1] = obuf[k_out]


@numba.njit(cache=True, error_model="numpy")
def all_finite(y):
    for i in range(y.size):
        if not math.isfinite(y[i]):
            return False
    return True


@numba.njit(cache=True, error_model="numpy")
def error_norm(W, row, factor, rtol, atol):
    """Hairer's RMS norm of ``factor * W[row]`` scaled by the tolerances at both step ends:
    ``sqrt(mean((err_i / (atol + rtol * max(|y_i|, |ynew_i|)))**2))``."""
    n = W.shape[1]
    total = 0.0
    for i in range(n):
        sk = atol + rtol * max(abs(W[_Y, i]), abs(W[_YN, i]))
        q = factor * W[row, i] / sk
        total += q * q
    return math.sqrt(total / n)


@numba.njit(cache=True, error_model="numpy")
def initial_step(model, p, W, s, order, rtol, atol, k_out, obuf):
    """Hairer's starting step: an Euler probe estimates the second derivative.

    The probe is at least 100 units in the last place of t: a state starting at 0 beside a
    fast-moving one (ck_stein's memory cells at tmax after a 1e15-fold expansion) gives
    Hairer's estimate a step below the resolution of t, which cannot advance it.
    """
    n = W.shape[1]
    t, hmax = s[_T], s[_HMAX]
    dnf = 0.0
    dny = 0.0
    for i in range(n):
        sk = atol + rtol * abs(W[_Y, i])
        dnf += (W[_F0, i] / sk) ** 2
        dny += (W[_Y, i] / sk) ** 2
    if dnf <= 1e-10 or dny <= 1e-10:
        h = 1e-6
    else:
        h = 0.01 * math.sqrt(dny / dnf)
    h = min(max(h, 100.0 * _EPS * abs(t)), hmax)
    for i in range(n):
        W[_YS, i] = W[_Y, i] + h * W[_F0, i]
    f(model, p, t + h, s, W[_YS], W[_DY], k_out, obuf)
    der2 = 0.0
    for i in range(n):
        sk = atol + rtol * abs(W[_Y, i])
        der2 += ((W[_DY, i] - W[_F0, i]) / sk) ** 2
    der12 = max(math.sqrt(der2 / n) / h, math.sqrt(dnf / n))
    if der12 <= 1e-15:
        h1 = max(1e-6, h * 1e-3)
    else:
        h1 = (0.01 / der12) ** (1.0 / order)
    return min(100.0 * h, h1, hmax)


@numba.njit(cache=True, error_model="numpy")
def dense(W, theta, out):
    """The last accepted step's continuous extension at ``theta`` in [0, 1]:
    ``d0 + theta (d1 + (1 - theta) (d2 + theta (d3 + (1 - theta) d4)))``."""
    th1 = 1.0 - theta
    for i in range(W.shape[1]):
        inner = W[_D + 2, i] + theta * (W[_D + 3, i] + th1 * W[_D + 4, i])
        out[i] = W[_D, i] + theta * (W[_D + 1, i] + th1 * inner)


@numba.njit(cache=True, error_model="numpy")
def allocate(n, n_outputs):
    """A fresh workspace for a state of size n: W, J, E, piv, s, obuf."""
    W = np.zeros((_N_ROWS, n))
    J = np.zeros((n, n))
    E = np.zeros((n, n))
    piv = np.zeros(n, dtype=np.int64)
    s = np.zeros(_N_SLOTS)
    obuf = np.zeros(max(n_outputs, 1))
    return W, J, E, piv, s, obuf
