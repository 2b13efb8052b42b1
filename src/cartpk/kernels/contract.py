"""What a model gives the kernels, and how the kernels call it.

The kernels are compiled once per installation; a model file contributes only five small
numba functions, compiled on their own (``cartpk.model.codegen``). All five share one
signature, :data:`SIGNATURE`::

    f(t, amt, p, y, out) -> None      # t day, amt dose (cells/kg), p, y, out float64 pointers

and each is compiled as a numba ``cfunc``: the kernels take the addresses of their C
entry points as an int64 array (``model``) and call them through function pointers of one
first-class function type, so every model, however many states it has, reaches the same
compiled kernels, and a call from Python types and passes one small array. Their jobs,
by position in the array (:data:`INITIAL` ...):

========== ==============================================================================
initial    ``out[:n_states]`` = the state at t = 0 from the infusion (``y`` unused)
rhs        ``out[:n_states]`` = dy/dt at (t, y)
outputs    ``out[:n_outputs]`` = the model outputs at (t, y)
breakpoints ``out[:n_breaks]`` = switch times in days (any order; ``y`` unused)
dose       ``out[dose_state] += amt`` (called with ``out`` = ``y``); no-op without dosing
========== ==============================================================================

``p`` is one row of ``Model.pack``: parameters on the natural scale, then covariates. The
sizes travel beside the functions as an int64 array ``dims`` = (:data:`N_STATES`,
:data:`N_OUTPUTS`, :data:`N_BREAKS`). A model function must not keep the pointers, read
past its sizes or raise: kernels use ``error_model="numpy"`` and check finiteness.

Arrays passed to :func:`call` must be C-contiguous (rows of C-contiguous matrices are);
the kernels allocate their workspaces so, and the Python side makes inputs contiguous.
"""

from __future__ import annotations

import warnings

import numba
from numba import types
from numba.core import cgutils
from numba.core.errors import NumbaExperimentalFeatureWarning
from numba.extending import intrinsic

#: The numba signature of every model function.
SIGNATURE = "void(float64, float64, CPointer(float64), CPointer(float64), CPointer(float64))"

#: Positions of the model functions in the address array the kernels take.
INITIAL, RHS, OUTPUTS, BREAKPOINTS, DOSE = 0, 1, 2, 3, 4
#: Positions in ``dims``.
N_STATES, N_OUTPUTS, N_BREAKS = 0, 1, 2

# Calling functions as values is a numba feature still labelled experimental; it is the
# mechanism that keeps the kernels model-independent, so the notice is not for users.
warnings.filterwarnings("ignore", category=NumbaExperimentalFeatureWarning)


@intrinsic
def address(typingctx, array):
    """The data pointer of a C-contiguous float64 array (refused at compile time otherwise)."""
    if not (isinstance(array, types.Array) and array.layout == "C"):
        raise numba.core.errors.TypingError(f"address() needs a C-contiguous array, got {array}")
    signature = types.CPointer(array.dtype)(array)

    def codegen(context, builder, sig, args):
        return context.make_array(array)(context, builder, value=args[0]).data

    return signature, codegen


#: The numba type of a model function.
FUNCTION = types.FunctionType(
    types.void(
        types.float64,
        types.float64,
        types.CPointer(types.float64),
        types.CPointer(types.float64),
        types.CPointer(types.float64),
    )
)


@intrinsic
def function_at(typingctx, where):
    """The model function whose C entry point is at address ``where`` (an int64)."""
    if not isinstance(where, types.Integer):
        raise numba.core.errors.TypingError(f"function_at() needs an integer, got {where}")

    def codegen(context, builder, sig, args):
        fn = cgutils.create_struct_proxy(FUNCTION)(context, builder)
        fn.c_addr = builder.inttoptr(args[0], cgutils.voidptr_t)
        fn.py_addr = cgutils.get_null_value(cgutils.voidptr_t)
        fn.jit_addr = cgutils.get_null_value(cgutils.voidptr_t)
        return fn._getvalue()

    return FUNCTION(types.int64), codegen


@numba.njit(cache=True, error_model="numpy")
def call(function, t, amt, p, y, out):
    """Call one model function, given by the address of its C entry point, on arrays."""
    function_at(function)(t, amt, address(p), address(y), address(out))


@numba.njit(cache=True, error_model="numpy")
def call_slot(functions, slot, t, amt, p, y, out):
    """Call model function ``functions[slot]`` from Python (for checks and debugging)."""
    call(functions[slot], t, amt, p, y, out)
