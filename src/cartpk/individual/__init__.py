"""Individual fits: one subject's parameters by maximum likelihood (or MAP) and their result.

* :mod:`.fit` — the estimation problem, multistart optimisation, Hessian and covariance.
* :mod:`.result` — :class:`FitResult` and :class:`FitTable`, their reports, plots and JSON.
"""

from ..errors import FitWarning
from ..reports import ModelChangedWarning
from .fit import build_parameters, check_count, check_seed, error_spec, fit, hessian, prior_means
from .result import FitResult, FitTable

__all__ = [
    "FitResult",
    "FitTable",
    "FitWarning",
    "ModelChangedWarning",
    "build_parameters",
    "check_count",
    "check_seed",
    "error_spec",
    "fit",
    "hessian",
    "prior_means",
]
