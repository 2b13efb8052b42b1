"""The integer codes shared by the Python side and the numba kernels: one table each.

Kernels read these module constants as compile-time globals; the Python side maps names
to codes with the dictionaries below. Nothing else in cartpk spells a code out.
"""

from __future__ import annotations

#: Integration methods (``method=`` of simulate, fits and scenarios).
METHOD_DOPRI5 = 0
METHOD_RODAS = 1
METHOD_AUTO = 2
METHOD_CLOSED = 3  # the model file's [solution], no integration (``integrate.py``)
METHODS = {
    "dopri5": METHOD_DOPRI5,
    "rodas": METHOD_RODAS,
    "auto": METHOD_AUTO,
    "closed": METHOD_CLOSED,
}

#: Per-subject solver outcome.
STATUS_OK = 0
STATUS_MAX_STEPS = 1
STATUS_STEP_UNDERFLOW = 2
STATUS_NOT_FINITE = 3
STATUS_NO_SOLVER = 4  # the method's compiled solver was not prepared (a cartpk bug)

#: Residual error models of an observation row.
KIND_LOG = 0
KIND_PROPORTIONAL = 1
KIND_ADDITIVE = 2
KIND_COMBINED = 3
KIND_CODES = {
    "log": KIND_LOG,
    "proportional": KIND_PROPORTIONAL,
    "additive": KIND_ADDITIVE,
    "combined": KIND_COMBINED,
}

#: Estimation scales of a parameter (see :mod:`cartpk.scales`).
SCALE_NONE = 0
SCALE_LOG = 1
SCALE_LOGIT = 2
SCALE_CODES = {"none": SCALE_NONE, "log": SCALE_LOG, "logit": SCALE_LOGIT}
