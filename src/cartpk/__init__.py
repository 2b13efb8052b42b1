"""cartpk: CAR-T cellular kinetics and pharmacodynamics.

The public API is the names listed in ``__all__``.
"""

from .data import Dataset, read_dataset
from .errors import DataError, FitError, ModelError, SolverError
from .exposure import exposure
from .fit import FitResult, fit
from .model import Model, list_models, load_model
from .nca import nca, nca_summary
from .solve import simulate

__version__ = "0.1.0"

__all__ = [
    "DataError",
    "Dataset",
    "FitError",
    "FitResult",
    "Model",
    "ModelError",
    "SolverError",
    "__version__",
    "exposure",
    "fit",
    "list_models",
    "load_model",
    "nca",
    "nca_summary",
    "read_dataset",
    "simulate",
]
