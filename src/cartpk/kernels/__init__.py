"""The numba kernels: model-independent, compiled once per installation and cached.

=============== ===========================================================================
``contract``    what a model gives the kernels (six functions of one signature, ``dims``)
``codes``       the integer codes (method, status, error model, scale) shared with Python
``workspace``   the per-subject workspace and what every method shares
``dopri5``      Dormand–Prince 5(4), explicit
``rodas``       Rodas 4(3), Rosenbrock, for stiff problems
``integrate``   pieces, breakpoints, doses, outputs; ``solve_batch``; stiffness switching
``exposure``    Cmax, Tmax and AUC on the continuous solution; ``exposure_batch``
``likelihood``  −2LL with error models and censoring; batches, residuals, parameter points
``mcmc``        Metropolis–Hastings moves over random effects
``threads``     the one parallel loop: a batch kernel's items spread over threads
``cache``       numba's on-disk cache of all of them kept in step with their sources
=============== ===========================================================================

:class:`ModelKernels` binds the kernels to one model's compiled functions, so that callers
write ``model.kernels.solve_batch(p, ...)``.
"""

from __future__ import annotations

import inspect
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

from . import codes, contract, dopri5, exposure, integrate, likelihood, mcmc, rodas, workspace
from .cache import clear_stale
from .contract import (
    BREAKPOINTS,
    DOSE,
    INITIAL,
    N_BREAKS,
    N_OUTPUTS,
    N_STATES,
    OUTPUTS,
    RHS,
    SOLUTION,
    call_slot,
)
from .threads import over_items

#: Every module with jitted kernel code, and the codes they read: one source hash for all,
#: with ``scales.py``, whose transform the MCMC kernel inlines.
KERNEL_MODULES = (codes, contract, workspace, dopri5, rodas, integrate, exposure, likelihood,
                  mcmc)  # fmt: skip
#: The digest of the kernel sources: what a compiled kernel cache was compiled from.
KERNEL_DIGEST = clear_stale(KERNEL_MODULES, [Path(__file__).parents[1] / "scales.py"])

#: Kernels that take the model (its function tuple and dims) as their first two arguments.
MODEL_KERNELS = {
    "m2ll_one": likelihood.m2ll_one,
    "residuals_one": likelihood.residuals_one,
}
#: Batch kernels, run over threads by ``threads.over_items``: their first argument after
#: the model's two has one row per item (subject, parameter point or draw).
BATCH_KERNELS = {
    "solve_batch": integrate.solve_batch,
    "exposure_batch": exposure.exposure_batch,
    "m2ll_batch": likelihood.m2ll_batch,
    "points_batch": likelihood.points_batch,
    "m2ll_rows": likelihood.m2ll_rows,
    "mh_batch": mcmc.mh_batch,
}

#: The kernels that solve subjects through the compiled solvers (``integrate.solver``).
#: Before each call their wrapper prepares the solver of the method they are given
#: (:meth:`ModelKernels.prepare`); exposure_batch integrates on its own.
SOLVING = ("m2ll_one", "residuals_one", "solve_batch", "m2ll_batch", "points_batch",
           "m2ll_rows", "mh_batch")  # fmt: skip


def method_argument(kernel: Any) -> tuple[int, bool]:
    """Where a solving kernel takes its method, counted after the model's two arguments:
    (position, True for a ``solver`` array whose first entry is the method code, False for
    a ``method`` code)."""
    names = list(inspect.signature(kernel.py_func).parameters)[2:]
    for position, name in enumerate(names):
        if name in ("solver", "method"):
            return position, name == "solver"
    raise TypeError(f"kernel {kernel.__name__} takes no 'solver' or 'method' argument")


def _run_batch(kernel: Any, functions: np.ndarray, dims: np.ndarray, *args: Any) -> None:
    """``kernel`` over all items (the rows of ``args[0]``), on threads."""
    over_items(kernel, len(args[0]), functions, dims, *args)


class ModelKernels:
    """The kernels bound to one model: each :data:`MODEL_KERNELS` and :data:`BATCH_KERNELS`
    entry as an attribute, called without its first two arguments (and a batch kernel
    without its last two, the item range: it runs over all items, on threads);
    ``m2ll_predicted`` needs no model.

    ``functions`` is the model's tuple of compiled functions (numba cfuncs; the kernels take
    the int64 array of their addresses, kept as ``functions``), ``dims`` its sizes (see
    :mod:`cartpk.kernels.contract`; the array also holds the kernels' solvers, see
    :meth:`prepare`) and ``path`` the file they were compiled from;
    ``n_states``, ``n_outputs`` and ``n_breaks`` repeat them as ints. The model's own
    functions can be called from Python on float64 arrays with ``initial(p, y0)``,
    ``rhs(t, y, p, dydt)``, ``outputs(t, y, p, out)``, ``breakpoints(p, tb)``,
    ``dose_into(p, amt, y)`` and, for a model with a closed form, ``solution(t, dt, y, p,
    out)``.
    """

    m2ll_predicted = staticmethod(likelihood.m2ll_predicted)

    def __init__(self, functions: tuple, dims: np.ndarray, path: str | None = None) -> None:
        self.compiled = functions  # the cfuncs: they must live as long as their addresses
        self.functions = np.zeros(contract.N_ADDRESSES, dtype=np.int64)
        for slot, function in enumerate(functions):
            self.functions[slot] = function.address
        self.path = path
        self.dims = np.ascontiguousarray(dims, dtype=np.int64)
        self.n_states = int(self.dims[N_STATES])
        self.n_outputs = int(self.dims[N_OUTPUTS])
        self.n_breaks = int(self.dims[N_BREAKS])
        for name, kernel in MODEL_KERNELS.items():
            self._bind(name, kernel, partial(kernel, self.functions, self.dims))
        for name, kernel in BATCH_KERNELS.items():
            self._bind(name, kernel, partial(_run_batch, kernel, self.functions, self.dims))

    def _bind(self, name: str, kernel: Any, call: Any) -> None:
        if name not in SOLVING:
            setattr(self, name, call)
            return
        position, in_array = method_argument(kernel)

        def solving(*args: Any) -> Any:
            method = args[position]
            self.prepare(int(method[0] if in_array else method))
            return call(*args)

        solving.__doc__ = kernel.__doc__
        setattr(self, name, solving)

    def prepare(self, method: int) -> None:
        """Make the compiled solver for ``method`` (a ``codes.METHOD_*``) reachable from the
        kernels: compiled (or loaded from the cache) on first use in the process."""
        slot = integrate.solver_slot(method)
        if self.functions[slot] == 0:
            self.functions[slot] = integrate.solver(slot).address

    def _call(self, slot: int, t: float, amt: float, p, y, out) -> None:
        arrays = [np.ascontiguousarray(a, dtype=np.float64) for a in (p, y)]
        if not (out.flags.c_contiguous and out.dtype == np.float64):
            raise ValueError("the output array must be C-contiguous float64")
        call_slot(self.functions, slot, float(t), float(amt), *arrays, out)

    def initial(self, p: np.ndarray, y0: np.ndarray) -> None:
        """y0[:n_states] = the state at t = 0 (the infusion)."""
        self._call(INITIAL, 0.0, 0.0, p, y0, y0)

    def rhs(self, t: float, y: np.ndarray, p: np.ndarray, dydt: np.ndarray) -> None:
        """dydt[:n_states] = dy/dt at (t, y), t in days."""
        self._call(RHS, t, 0.0, p, y, dydt)

    def outputs(self, t: float, y: np.ndarray, p: np.ndarray, out: np.ndarray) -> None:
        """out[:n_outputs] = the outputs at (t, y)."""
        self._call(OUTPUTS, t, 0.0, p, y, out)

    def breakpoints(self, p: np.ndarray, tb: np.ndarray) -> None:
        """tb[:n_breaks] = the switch times (days)."""
        self._call(BREAKPOINTS, 0.0, 0.0, p, tb, tb)

    def dose_into(self, p: np.ndarray, amt: float, y: np.ndarray) -> None:
        """Add a bolus of ``amt`` to the dosing state of y, in place."""
        self._call(DOSE, 0.0, amt, p, y, y)

    def solution(self, t: float, dt: float, y: np.ndarray, p: np.ndarray, out: np.ndarray) -> None:
        """out[:n_states] = the closed-form state ``dt`` days after state y at branch time t
        (no breakpoint or dose in between); leaves ``out`` as it is for a model without one."""
        self._call(SOLUTION, t, dt, p, y, out)
