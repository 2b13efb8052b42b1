"""cartpk: CAR-T cellular kinetics and pharmacodynamics.

The public API is the names listed in ``__all__``.
"""

from .errors import DataError, FitError, ModelError, SolverError

__version__ = "0.1.0"

__all__ = [
    "DataError",
    "FitError",
    "ModelError",
    "SolverError",
    "__version__",
]
