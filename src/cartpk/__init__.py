"""cartpk: CAR-T cellular kinetics and pharmacodynamics.

The public API is the names listed in ``__all__``.
"""

from importlib.metadata import version

from .data import Dataset, read_dataset
from .errors import DataError, FitError, ModelError, SolverError
from .exposure import exposure
from .exposure_response import ExposureResponse, exposure_response
from .individual import FitResult, FitTable, fit
from .model import Model, list_models, load_model
from .model.parameter_sets import list_parameter_sets
from .nca import nca, nca_summary
from .persistence import kaplan_meier, persistence
from .population import (
    BootstrapResult,
    PopulationFit,
    SimestResult,
    bootstrap,
    fit_population,
    simest,
)
from .scenarios import (
    DoseEscalation,
    Population,
    Regimen,
    check_parameter_set,
    compare_regimens,
    dose_escalation,
    scenarios,
)
from .solve import simulate

__version__ = version("cartpk")

__all__ = [
    "BootstrapResult",
    "DataError",
    "Dataset",
    "DoseEscalation",
    "ExposureResponse",
    "FitError",
    "FitResult",
    "FitTable",
    "Model",
    "ModelError",
    "Population",
    "PopulationFit",
    "Regimen",
    "SimestResult",
    "SolverError",
    "__version__",
    "bootstrap",
    "check_parameter_set",
    "compare_regimens",
    "dose_escalation",
    "exposure",
    "exposure_response",
    "fit",
    "fit_population",
    "kaplan_meier",
    "list_models",
    "list_parameter_sets",
    "load_model",
    "nca",
    "nca_summary",
    "persistence",
    "read_dataset",
    "scenarios",
    "simest",
    "simulate",
]
