"""What a model gives the kernels, and how the kernels call it.

The kernels are compiled once per installation; a model file contributes only six small
numba functions, compiled on their own (``cartpk.model.codegen``). All six share one
signature, :data:`SIGNATURE`::

    f(t, amt, p, y, out) -> None      # t day, amt dose (cells/kg), p, y, out float64 pointers

and each is compiled as a numba ``cfunc``: the kernels take the addresses of their C
entry points as an int64 array (``model``) and call them through those pointers
(:func:`call_at`, a plain indirect call), so every model, however many states it has,
reaches the same compiled kernels, and a call from Python types and passes one small
array. Their jobs, by position in the array (:data:`INITIAL` ...):

=========== ==============================================================================
initial     ``out[:n_states]`` = the state at t = 0 from the infusion (``y`` unused)
rhs         ``out[:n_states]`` = dy/dt at (t, y)
outputs     ``out[:n_outputs]`` = the model outputs at (t, y)
breakpoints ``out[:n_breaks]`` = switch times in days (any order; ``y`` unused)
dose        ``out[dose_state] += amt`` (called with ``out`` = ``y``); no-op without dosing
solution    ``out[:n_states]`` = the state ``amt`` days after the state ``y`` at ``t``, the
            model file's closed form (``[solution]``), valid while no breakpoint or dose
            lies in between; ``t`` is the step's start moved into the piece as the
            right-hand side sees it (``integrate.py``). A no-op when the model declares none
            (the Python side refuses method ``closed`` for it)
=========== ==============================================================================

``p`` is one row of ``Model.pack``: parameters on the natural scale, then covariates. The
sizes travel beside the functions as an int64 array ``dims`` = (:data:`N_STATES`,
:data:`N_OUTPUTS`, :data:`N_BREAKS`, :data:`DOSE_COLUMN`), the last the position in ``p``
of the DOSE covariate (-1 when the model has none), which a reset and dose sets to its
amount (``integrate.solve_subject``). A model function must not keep the pointers, read past
its sizes or raise: kernels use ``error_model="numpy"`` and check finiteness.

Arrays passed to :func:`call` must be C-contiguous (rows of C-contiguous matrices are);
the kernels allocate their workspaces so, and the Python side makes inputs contiguous.
"""

from __future__ import annotations

import numba
from llvmlite import ir
from numba import types
from numba.extending import intrinsic

#: The numba signature of every model function.
SIGNATURE = "void(float64, float64, CPointer(float64), CPointer(float64), CPointer(float64))"

#: Positions of the model functions in the address array the kernels take.
INITIAL, RHS, OUTPUTS, BREAKPOINTS, DOSE, SOLUTION = 0, 1, 2, 3, 4, 5
#: After them, the kernels' own compiled solvers (``integrate.solver``): the closed form's
#: and the integrators'; 0 until prepared. Then the length of the array.
SOLVER_CLOSED, SOLVER_INTEGRATED = 6, 7
N_ADDRESSES = 8
#: Positions in ``dims``.
N_STATES, N_OUTPUTS, N_BREAKS, DOSE_COLUMN = 0, 1, 2, 3
N_DIMS = 4


@intrinsic
def address(typingctx, array):
    """The data pointer of a C-contiguous float64 array (refused at compile time otherwise)."""
    if not (isinstance(array, types.Array) and array.layout == "C"):
        raise numba.core.errors.TypingError(f"address() needs a C-contiguous array, got {array}")
    signature = types.CPointer(array.dtype)(array)

    def codegen(context, builder, sig, args):
        return context.make_array(array)(context, builder, value=args[0]).data

    return signature, codegen


@intrinsic
def call_at(typingctx, where, t, amt, p, y, out):
    """Call the C function ``void(double, double, double*, double*, double*)`` at address
    ``where`` (an int64): one indirect call.

    numba's first-class function values do the same call behind run-time checks that cost
    about 8 ns a call and, worse, keep LLVM from optimising the loop around it (a dopri5
    step took 2.5-3x as long with them on ck_vegf).
    """
    pointer = types.CPointer(types.float64)
    if not isinstance(where, types.Integer):
        raise numba.core.errors.TypingError(f"call_at() needs an integer address, got {where}")
    if any(arg != pointer for arg in (p, y, out)):
        raise numba.core.errors.TypingError("call_at() needs float64 pointers for p, y, out")
    signature = types.void(types.int64, types.float64, types.float64, pointer, pointer, pointer)

    def codegen(context, builder, sig, args):
        double = ir.DoubleType()
        c_type = ir.FunctionType(ir.VoidType(), [double, double] + [double.as_pointer()] * 3)
        builder.call(builder.inttoptr(args[0], c_type.as_pointer()), args[1:])
        return context.get_dummy_value()

    return signature, codegen


@intrinsic
def call_c(typingctx, where, args):
    """Call the C function ``void(...)`` at address ``where`` (an int64) with the values of
    the tuple ``args`` (numbers and pointers), each passed as its C type: one indirect call.

    How the kernels reach the solver compiled once as a ``cfunc`` (``integrate.solver``)
    without linking its code into each of them.
    """
    if not isinstance(where, types.Integer):
        raise numba.core.errors.TypingError(f"call_c() needs an integer address, got {where}")
    if not isinstance(args, types.BaseTuple) or not all(
        isinstance(arg, (types.Number, types.CPointer)) for arg in args
    ):
        raise numba.core.errors.TypingError(f"call_c() needs numbers and pointers, got {args}")
    signature = types.void(where, args)

    def codegen(context, builder, sig, llargs):
        values = [builder.extract_value(llargs[1], k) for k in range(len(args))]
        c_type = ir.FunctionType(ir.VoidType(), [value.type for value in values])
        builder.call(builder.inttoptr(llargs[0], c_type.as_pointer()), values)
        return context.get_dummy_value()

    return signature, codegen


@numba.njit(cache=True, error_model="numpy")
def call(function, t, amt, p, y, out):
    """Call one model function, given by the address of its C entry point, on arrays."""
    call_at(function, t, amt, address(p), address(y), address(out))


@numba.njit(cache=True, error_model="numpy")
def call_slot(functions, slot, t, amt, p, y, out):
    """Call model function ``functions[slot]`` from Python (for checks and debugging)."""
    call(functions[slot], t, amt, p, y, out)
