"""Integrate a model over a subject's time course: pieces, breakpoints, doses, outputs.

Times are in days. Everything works on plain float64 arrays, one workspace per subject
(``workspace.py``); the model comes as the function tuple and ``dims`` of ``contract.py``.

Methods (``codes.METHODS``)
---------------------------
* dopri5 (``dopri5.py``): explicit Dormand–Prince 5(4).
* rodas (``rodas.py``): the stiff Rosenbrock method.
* closed: no integration. The model file's closed form (``[solution]``, the contract's
  ``solution``) gives the state at each output time from the state at the start of its
  piece, and the state at the piece's end, where doses are added as for the integrators.
  The solution sees ``t`` = the piece's start moved one unit in the last place into the
  piece (its branch time, below), so branch conditions read the piece's branch as the
  right-hand side does. Like NONMEM's ADVAN closed forms or rxode2's linCmt(), exact to
  rounding and tens of times faster than integrating; a model's [solution] is held
  against its equations by the tests (tests/kernels/test_solution.py for ck_stein).
* auto: dopri5 with its stiffness test after every accepted step (Hairer's ``dopri5.f``:
  h·λ > 3.25 fifteen times, six non-stiff steps in a row cancel the count); once a
  subject's problem is found stiff it continues with Rodas from that step to its end. The
  switch is per subject: the others in the batch go on with dopri5. A subject that fails
  all the same (its stiffness came too fast for the test) is solved again from the start
  with Rodas, so auto succeeds wherever Rodas does. Like LSODA it needs no user choice;
  unlike LSODA it does not switch back.

Pieces, breakpoints and doses
-----------------------------
A subject's time course is integrated piece by piece between consecutive event times:
the model's breakpoints (switch times such as ck_stein's ``tmax``), dose times and, for
exposure, the start of the window. Each piece restarts exactly at its start (new initial
step, FSAL reset, controller memory cleared) and its last step ends exactly at its end.
Inside a piece ``[a, b]`` the right-hand side sees the branch time (``workspace.f``):
``min(max(t, nextafter(a, +inf)), nextafter(b, -inf))``. A stage on ``b`` so sees the
pre-switch branch and a stage at ``a`` the post-switch one, whether the model writes
``t < tmax`` or ``t <= tmax``; the shift is one unit in the last place.

At a dose time the integrator stops, the model's ``dose`` adds the bolus, and integration
restarts. Outputs are right-continuous: an output time equal to a dose time sees the state
just after the dose (as the output at t = 0 sees the infused dose). Output times before 0
get the outputs of the initial state (before any dose at 0).

Resets
------
A dose flagged in ``d_reset`` (a reset and dose, NONMEM's EVID 4, at time T > 0) starts the
subject afresh: the span from T to the next reset is solved like a subject of its own whose
clock starts at T (its output times and doses shifted by -T, breakpoints such as ``tmax``
counted from T) from the model's initial state with the dose's amount as its DOSE
covariate (``p[dims[DOSE_COLUMN]]``; the model's other parameters and covariates as
before). Output times equal to T see the fresh start. The other doses of the span are
boluses, as before the first reset.

Status codes per subject (``codes.STATUS_*``): ok, step budget (``max_steps`` attempted
steps) exceeded, step size underflow, non-finite state (or a non-finite right-hand side
that step-size reduction could not avoid). A failed subject gets NaN outputs and its
``fail_time``; the others are solved regardless. Kernels use ``error_model="numpy"``: a
division by zero gives inf/NaN, caught as a status, never an exception on a worker thread.
"""

from __future__ import annotations

import functools
import math

import numba
import numpy as np
from numba import types

from .codes import (
    METHOD_AUTO,
    METHOD_CLOSED,
    METHOD_DOPRI5,
    METHOD_RODAS,
    STATUS_MAX_STEPS,
    STATUS_NO_SOLVER,
    STATUS_NOT_FINITE,
    STATUS_OK,
    STATUS_STEP_UNDERFLOW,
)
from .contract import (
    BREAKPOINTS,
    DOSE,
    DOSE_COLUMN,
    INITIAL,
    N_ADDRESSES,
    N_BREAKS,
    N_DIMS,
    N_OUTPUTS,
    N_STATES,
    OUTPUTS,
    SOLUTION,
    SOLVER_CLOSED,
    SOLVER_INTEGRATED,
    address,
    call,
    call_c,
)
from .dopri5 import ORDER as DOPRI5_ORDER
from .dopri5 import STIFF_HLAMBDA, stiffness
from .dopri5 import attempt as dopri5_attempt
from .dopri5 import dense as dopri5_dense
from .dopri5 import new_step as dopri5_new_step
from .rodas import ORDER as RODAS_ORDER
from .rodas import attempt as rodas_attempt
from .rodas import dense as rodas_dense
from .rodas import jacobian as rodas_jacobian
from .rodas import new_step as rodas_new_step
from .workspace import (
    _EPS,
    _ERRACC,
    _F0,
    _FACOLD,
    _H,
    _HACC,
    _HI,
    _HMAX,
    _HOLD,
    _K,
    _LO,
    _METHOD,
    _NACC,
    _NONSTIFF,
    _NSTEP,
    _REJECT,
    _STIFF,
    _T,
    _TEND,
    _TOLD,
    _Y,
    _YN,
    _YS,
    all_finite,
    allocate,
    dense,
    f,
    initial_step,
)

#: auto: stiff tests in a row that switch to Rodas, non-stiff ones that reset the count.
STIFF_STEPS, NONSTIFF_STEPS = 15, 6


@numba.njit(cache=True, error_model="numpy")
def start(method, s):
    """Set the method a subject starts with (auto starts explicit)."""
    s[_METHOD] = METHOD_DOPRI5 if method == METHOD_AUTO else method
    s[_STIFF] = 0.0
    s[_NONSTIFF] = 0.0


@numba.njit(cache=True, error_model="numpy")
def begin_piece(model, p, W, s, a, b, rtol, atol, k_out, obuf):
    """Start a piece [a, b] from W[_Y]: branch-time bounds, f(a, y), a fresh initial step.

    Returns STATUS_NOT_FINITE when f(a, y) is not finite, else STATUS_OK.
    """
    s[_T] = a
    s[_TEND] = b
    s[_HMAX] = b - a
    s[_LO] = np.nextafter(a, np.inf)
    s[_HI] = max(np.nextafter(b, -np.inf), s[_LO])
    s[_FACOLD] = 1e-4
    s[_HACC] = 0.0
    s[_ERRACC] = 1e-2
    s[_NACC] = 0.0
    s[_REJECT] = 0.0
    f(model, p, a, s, W[_Y], W[_F0], k_out, obuf)
    if not all_finite(W[_F0]):
        return STATUS_NOT_FINITE
    order = DOPRI5_ORDER if s[_METHOD] == METHOD_DOPRI5 else RODAS_ORDER
    s[_H] = initial_step(model, p, W, s, order, rtol, atol, k_out, obuf)
    return STATUS_OK


@numba.njit(cache=True, error_model="numpy")
def _accept(step_method, W, s, t, h, hnew, last):
    """Store the dense output of [t, t + h], move to the new state, set the next step."""
    if step_method == METHOD_DOPRI5:
        dopri5_dense(W, h)
    else:
        rodas_dense(W)
    n = W.shape[1]
    for i in range(n):
        W[_Y, i] = W[_YN, i]
    if step_method == METHOD_DOPRI5:
        for i in range(n):
            W[_F0, i] = W[_K + 5, i]
    s[_TOLD] = t
    s[_HOLD] = h
    s[_T] = s[_TEND] if last else t + h
    if s[_REJECT] != 0.0:
        hnew = min(hnew, h)
    s[_H] = min(hnew, s[_HMAX])
    s[_REJECT] = 0.0
    s[_NACC] += 1.0


@numba.njit(cache=True, error_model="numpy")
def _stiffness_test(method, W, s, h):
    """auto: count stiff dopri5 steps; switch the subject to Rodas after STIFF_STEPS."""
    if method != METHOD_AUTO or s[_METHOD] != METHOD_DOPRI5:
        return
    if stiffness(W, h) > STIFF_HLAMBDA:
        s[_NONSTIFF] = 0.0
        s[_STIFF] += 1.0
        if s[_STIFF] >= STIFF_STEPS:
            s[_METHOD] = METHOD_RODAS
            s[_NACC] = 0.0  # no Gustafsson memory from explicit steps
    else:
        s[_NONSTIFF] += 1.0
        if s[_NONSTIFF] >= NONSTIFF_STEPS:
            s[_STIFF] = 0.0


@numba.njit(cache=True, error_model="numpy")
def advance(method, model, p, W, J, E, piv, s, rtol, atol, max_steps, k_out, obuf):
    """Take one accepted step from s[_T] towards the piece end s[_TEND]; return a status.

    On success W[_Y] is the new state at s[_T] and W[_D..] the continuous extension over
    [s[_TOLD], s[_TOLD] + s[_HOLD]].
    """
    step_method = int(s[_METHOD])
    if step_method == METHOD_RODAS:
        f(model, p, s[_T], s, W[_Y], W[_F0], k_out, obuf)
        rodas_jacobian(model, p, W, J, s, k_out, obuf)
    t, b = s[_T], s[_TEND]
    hmin = max(10.0 * _EPS * abs(t), 1e-300)  # Hairer: 0.1 |h| <= |t| * unit roundoff
    not_finite = False
    while True:
        if s[_NSTEP] >= max_steps:
            return STATUS_MAX_STEPS
        h = s[_H]
        last = t + 1.01 * h >= b or b - t <= hmin
        if last:
            h = b - t
        elif not h >= hmin:
            return STATUS_NOT_FINITE if not_finite else STATUS_STEP_UNDERFLOW
        s[_NSTEP] += 1.0
        if step_method == METHOD_DOPRI5:
            err = dopri5_attempt(model, p, W, s, h, rtol, atol, k_out, obuf)
        else:
            err = rodas_attempt(model, p, W, J, E, piv, s, h, rtol, atol, k_out, obuf)
        not_finite = not math.isfinite(err)
        if not_finite:
            s[_H] = 0.2 * h
            s[_REJECT] = 1.0
            continue
        accepted = err <= 1.0
        if accepted and not all_finite(W[_YN]):
            return STATUS_NOT_FINITE
        if step_method == METHOD_DOPRI5:
            hnew = dopri5_new_step(s, h, err, accepted)
        else:
            hnew = rodas_new_step(s, h, err, accepted)
        if accepted:
            _stiffness_test(method, W, s, h)
            _accept(step_method, W, s, t, h, hnew, last)
            return STATUS_OK
        s[_H] = hnew
        s[_REJECT] = 1.0


@numba.njit(cache=True, error_model="numpy")
def event_times(model, dims, p, d_time, t_end, t_extra):
    """Sorted distinct piece ends: breakpoints, doses and t_extra in (0, t_end), then t_end."""
    n_breaks = dims[N_BREAKS]
    tb = np.empty(n_breaks)
    call(model[BREAKPOINTS], 0.0, 0.0, p, tb, tb)
    cand = np.empty(n_breaks + d_time.size + 2)
    m = 0
    for x in tb:
        if 0.0 < x < t_end:
            cand[m] = x
            m += 1
    for x in d_time:
        if 0.0 < x < t_end:
            cand[m] = x
            m += 1
    if 0.0 < t_extra < t_end:
        cand[m] = t_extra
        m += 1
    for i in range(1, m):
        x = cand[i]
        j = i - 1
        while j >= 0 and cand[j] > x:
            cand[j + 1] = cand[j]
            j -= 1
        cand[j + 1] = x
    k = 0
    for i in range(m):
        if k == 0 or cand[i] > cand[k - 1]:
            cand[k] = cand[i]
            k += 1
    cand[k] = t_end
    return cand[: k + 1]


@numba.njit(cache=True, error_model="numpy")
def apply_doses(model, p, d_time, d_amt, lo, hi, y):
    """Add every dose with lo < time <= hi to y; return how many were given."""
    given = 0
    for k in range(d_time.size):
        if lo < d_time[k] <= hi:
            call(model[DOSE], d_time[k], d_amt[k], p, y, y)
            given += 1
    return given


@numba.njit(cache=True, error_model="numpy")
def initial_state(model, p, y):
    """y = the model's state at t = 0 (the infusion), before any dose record at 0."""
    call(model[INITIAL], 0.0, 0.0, p, y, y)


@numba.njit(cache=True, error_model="numpy")
def _emit_dense(model, p, W, s, times, out, j):
    """Outputs for times in (t_old, t_new] that lie before the piece end; next index."""
    t_new, t_old, h = s[_T], s[_TOLD], s[_HOLD]
    while j < times.size and times[j] <= t_new and times[j] < s[_TEND]:
        if times[j] == t_new:
            call(model[OUTPUTS], t_new, 0.0, p, W[_Y], out[j])
        else:
            dense(W, (times[j] - t_old) / h, W[_YS])
            call(model[OUTPUTS], times[j], 0.0, p, W[_YS], out[j])
        j += 1
    return j


@numba.njit(cache=True, error_model="numpy")
def _emit_at(model, p, y, t, times, out, j):
    """Outputs of state y for every time equal to t (or, for t = 0, up to 0); next index."""
    while j < times.size and times[j] <= t:
        call(model[OUTPUTS], times[j], 0.0, p, y, out[j])
        j += 1
    return j


@numba.njit(cache=True, error_model="numpy")
def reset_times(d_time, d_reset):
    """Sorted times of the doses flagged in ``d_reset`` (the resets, see the module notes)."""
    m = 0
    for k in range(d_reset.size):
        if d_reset[k] != 0:
            m += 1
    starts = np.empty(m)
    m = 0
    for k in range(d_reset.size):
        if d_reset[k] != 0:
            x = d_time[k]
            j = m - 1
            while j >= 0 and starts[j] > x:
                starts[j + 1] = starts[j]
                j -= 1
            starts[j + 1] = x
            m += 1
    return starts


@numba.njit(cache=True, error_model="numpy")
def span_doses(d_time, d_amt, d_reset, origin, end, first):
    """The doses of one span between resets, times shifted by -origin, and the amount of the
    reset that opens it: the boluses with origin <= time < end (any time < end for the
    ``first`` span) and the reset dose at ``origin`` (NaN for the first span)."""
    keep = np.zeros(d_time.size, dtype=np.bool_)
    opening = np.nan
    for k in range(d_time.size):
        inside = d_time[k] < end and (first or d_time[k] >= origin)
        if d_reset[k] != 0:
            if not first and d_time[k] == origin:
                opening = d_amt[k]
        elif inside:
            keep[k] = True
    return d_time[keep] - origin, d_amt[keep], opening


@numba.njit(cache=True, error_model="numpy", inline="always")
def _solve_subject(once, model, dims, p, times, out, d_time, d_amt, d_reset, method, rtol,
                   atol, max_steps):  # fmt: skip
    """:func:`solve_subject`'s work, with ``once`` (:func:`_closed_once` or
    :func:`_integrated_once`) for each span between resets."""
    starts = reset_times(d_time, d_reset)
    j = 0
    for k in range(starts.size + 1):
        origin = 0.0 if k == 0 else starts[k - 1]
        end = starts[k] if k < starts.size else np.inf
        j_end = j
        while j_end < times.size and times[j_end] < end:
            j_end += 1
        if starts.size > 0 and j_end == j:
            continue  # a span without output times
        if starts.size == 0:
            q, t_span, dt_span, da_span = p, times, d_time, d_amt
        else:
            dt_span, da_span, opening = span_doses(d_time, d_amt, d_reset, origin, end, k == 0)
            q = p.copy()
            if k > 0 and dims[DOSE_COLUMN] >= 0:
                q[dims[DOSE_COLUMN]] = opening
            t_span = times[j:j_end] - origin
        tried = method
        while True:  # one call site: the solver is compiled (and inlined) once, not twice
            code, when = once(model, dims, q, t_span, out[j:j_end], dt_span, da_span, tried,
                              rtol, atol, max_steps)  # fmt: skip
            if code == STATUS_OK or tried != METHOD_AUTO:
                break
            tried = METHOD_RODAS
        if code != STATUS_OK:
            return code, when + origin
        j = j_end
    return STATUS_OK, np.nan


#: The C signature of the compiled solver: model addresses, dims, p and its size, times and
#: their number, out (n_times × the next value), doses (time, amount, reset) and their
#: number, method, rtol, atol, max_steps, and a float64 pair for (status, fail time).
SOLVER_SIGNATURE = types.void(
    types.CPointer(types.int64),
    types.CPointer(types.int64),
    types.CPointer(types.float64),
    types.int64,
    types.CPointer(types.float64),
    types.int64,
    types.CPointer(types.float64),
    types.int64,
    types.CPointer(types.float64),
    types.CPointer(types.float64),
    types.CPointer(types.int64),
    types.int64,
    types.int64,
    types.float64,
    types.float64,
    types.int64,
    types.CPointer(types.float64),
)


@numba.njit(cache=True, error_model="numpy", inline="always")
def _solver_body(once, model, dims, p, n_p, times, n_t, out, n_cols, d_time, d_amt, d_reset,
                 n_d, method, rtol, atol, max_steps, result):  # fmt: skip
    """A solver cfunc's body: :func:`_solve_subject` on arrays over the pointers."""
    code, when = _solve_subject(
        once,
        numba.carray(model, N_ADDRESSES),
        numba.carray(dims, N_DIMS),
        numba.carray(p, n_p),
        numba.carray(times, n_t),
        numba.carray(out, (n_t, n_cols)),
        numba.carray(d_time, n_d),
        numba.carray(d_amt, n_d),
        numba.carray(d_reset, n_d),
        method,
        rtol,
        atol,
        max_steps,
    )
    pair = numba.carray(result, 2)
    pair[0] = code
    pair[1] = when


def _closed_c(model, dims, p, n_p, times, n_t, out, n_cols, d_time, d_amt, d_reset, n_d,
              method, rtol, atol, max_steps, result):  # fmt: skip
    _solver_body(_closed_once, model, dims, p, n_p, times, n_t, out, n_cols, d_time, d_amt,
                 d_reset, n_d, method, rtol, atol, max_steps, result)  # fmt: skip


def _integrated_c(model, dims, p, n_p, times, n_t, out, n_cols, d_time, d_amt, d_reset, n_d,
                  method, rtol, atol, max_steps, result):  # fmt: skip
    _solver_body(_integrated_once, model, dims, p, n_p, times, n_t, out, n_cols, d_time,
                 d_amt, d_reset, n_d, method, rtol, atol, max_steps, result)  # fmt: skip


#: The two solvers compiled as C functions, by the slot of their address in ``model``.
_SOLVER_BODIES = {SOLVER_CLOSED: _closed_c, SOLVER_INTEGRATED: _integrated_c}


@functools.cache
def solver(slot: int) -> numba.core.ccallback.CFunc:
    """The solver for ``model[slot]`` (:data:`SOLVER_CLOSED` or :data:`SOLVER_INTEGRATED`)
    compiled once, as a C function cached on disk with the kernels.

    Every kernel that solves a subject calls it through its address (:func:`solve_subject`)
    instead of linking the solver's code: numba re-optimises a kernel together with all the
    code linked into it, which cost each such kernel 2–4 s of compile on a cold start. The
    closed-form solver is small, so a model fitted by its closed form does not wait for the
    integrators. Compiled on first use, not on import (:meth:`ModelKernels.prepare`).
    """
    return numba.cfunc(SOLVER_SIGNATURE, cache=True, error_model="numpy")(_SOLVER_BODIES[slot])


@numba.njit(cache=True, error_model="numpy")
def solver_slot(method: int) -> int:
    """The slot in ``model`` of the solver that runs ``method`` (a ``codes.METHOD_*``): the
    one choice, for the kernels (:func:`solve_subject`) and for ``ModelKernels.prepare``."""
    return SOLVER_CLOSED if method == METHOD_CLOSED else SOLVER_INTEGRATED


@numba.njit(cache=True, error_model="numpy", inline="always")
def solve_subject(model, dims, p, times, out, d_time, d_amt, d_reset, method, rtol, atol,
                  max_steps):  # fmt: skip
    """One subject's outputs at ``times`` (sorted, days) into ``out`` (C-contiguous rows);
    (status, fail time).

    A dose flagged in ``d_reset`` starts the subject afresh (see the module notes): each span
    between resets is solved on its own. auto: a span that fails all the same is solved
    again from its start with Rodas. Runs the compiled :func:`solver` through its address in
    ``model``; STATUS_NO_SOLVER when that was not prepared.
    """
    pair = np.empty(2)
    where = model[solver_slot(method)]
    if where == 0:
        return STATUS_NO_SOLVER, np.nan
    call_c(
        where,
        (
            address(model),
            address(dims),
            address(p),
            p.size,
            address(times),
            times.size,
            address(out),
            out.shape[1],
            address(d_time),
            address(d_amt),
            address(d_reset),
            d_time.size,
            np.int64(method),
            np.float64(rtol),
            np.float64(atol),
            np.int64(max_steps),
            address(pair),
        ),
    )
    return int(pair[0]), pair[1]


@numba.njit(cache=True, error_model="numpy")
def _day_zero(model, p, y, times, out, d_time, d_amt):
    """y = the state just after the doses at 0; outputs for times <= 0. Returns the index of
    the first later time, or -1 when that state is not finite."""
    initial_state(model, p, y)
    j = 0
    while j < times.size and times[j] < 0.0:
        call(model[OUTPUTS], times[j], 0.0, p, y, out[j])
        j += 1
    apply_doses(model, p, d_time, d_amt, -np.inf, 0.0, y)
    if not all_finite(y):
        return -1
    return _emit_at(model, p, y, 0.0, times, out, j)


@numba.njit(cache=True, error_model="numpy")
def _integrated_once(model, dims, p, times, out, d_time, d_amt, method, rtol, atol, max_steps):
    """One span (no resets) by dopri5, rodas or auto: outputs into ``out``; (status, time)."""
    W, J, E, piv, s, obuf = allocate(dims[N_STATES], dims[N_OUTPUTS])
    start(method, s)
    y = W[_Y]
    j = _day_zero(model, p, y, times, out, d_time, d_amt)
    if j < 0:
        return STATUS_NOT_FINITE, 0.0
    if j == times.size:
        return STATUS_OK, np.nan
    a = 0.0
    for b in event_times(model, dims, p, d_time, times[-1], -1.0):
        status = begin_piece(model, p, W, s, a, b, rtol, atol, -1, obuf)
        while status == STATUS_OK and s[_T] < b:
            status = advance(method, model, p, W, J, E, piv, s, rtol, atol, max_steps, -1, obuf)
            if status == STATUS_OK:
                j = _emit_dense(model, p, W, s, times, out, j)
        if status != STATUS_OK:
            return status, s[_T]
        apply_doses(model, p, d_time, d_amt, np.nextafter(b, -np.inf), b, y)
        j = _emit_at(model, p, y, b, times, out, j)
        a = b
    return STATUS_OK, np.nan


@numba.njit(cache=True, error_model="numpy")
def _closed_once(model, dims, p, times, out, d_time, d_amt, method, rtol, atol, max_steps):
    """:func:`_integrated_once` by the model's closed form: no steps, so ``method``, the
    tolerances and the step budget are unused."""
    n = dims[N_STATES]
    y = np.empty(n)
    ys = np.empty(n)
    j = _day_zero(model, p, y, times, out, d_time, d_amt)
    if j < 0:
        return STATUS_NOT_FINITE, 0.0
    if j == times.size:
        return STATUS_OK, np.nan
    a = 0.0
    for b in event_times(model, dims, p, d_time, times[-1], -1.0):
        branch = np.nextafter(a, np.inf)
        while j < times.size and times[j] < b:
            call(model[SOLUTION], branch, times[j] - a, p, y, ys)
            if not all_finite(ys):
                return STATUS_NOT_FINITE, times[j]
            call(model[OUTPUTS], times[j], 0.0, p, ys, out[j])
            j += 1
        call(model[SOLUTION], branch, b - a, p, y, ys)
        if not all_finite(ys):
            return STATUS_NOT_FINITE, b
        for k in range(n):
            y[k] = ys[k]
        apply_doses(model, p, d_time, d_amt, np.nextafter(b, -np.inf), b, y)
        j = _emit_at(model, p, y, b, times, out, j)
        a = b
    return STATUS_OK, np.nan


@numba.njit(cache=True, nogil=True, error_model="numpy")
def solve_batch(
    model,
    dims,
    p,
    t_flat,
    t_off,
    d_time,
    d_amt,
    d_reset,
    d_off,
    method,
    rtol,
    atol,
    max_steps,
    out,
    status,
    fail_time,
    first,
    last,
):
    """Outputs of subjects ``first <= i < last`` at their times: out (n_obs, n_outputs),
    status, fail_time (``threads.over_items`` runs it over all subjects).

    Subject i: parameters ``p[i]``, sorted times ``t_flat[t_off[i]:t_off[i+1]]`` (days),
    doses ``d_time/d_amt[d_off[i]:d_off[i+1]]`` with ``d_reset`` (int64, 1 for a reset and
    dose, 0 for a bolus) beside them. A failed subject's rows are NaN.
    """
    for i in range(first, last):
        lo, hi = t_off[i], t_off[i + 1]
        d_lo, d_hi = d_off[i], d_off[i + 1]
        block = out[lo:hi]
        code, when = solve_subject(
            model,
            dims,
            p[i],
            t_flat[lo:hi],
            block,
            d_time[d_lo:d_hi],
            d_amt[d_lo:d_hi],
            d_reset[d_lo:d_hi],
            method,
            rtol,
            atol,
            max_steps,
        )
        if code != STATUS_OK:
            block[:, :] = np.nan
        status[i] = code
        fail_time[i] = when
