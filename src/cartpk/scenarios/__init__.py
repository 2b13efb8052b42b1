"""Dose scenarios and virtual trials: the same virtual patients at several doses.

Modules, by job: ``run`` (the chunk worker, local or dask execution, Parquet streaming,
:func:`scenarios`) and ``virtual_trial`` (:func:`check_parameter_set`, a parameter set
against its published figures).
"""

from .run import CovariateEffect, Population, Response, ScenarioResult, scenarios
from .virtual_trial import CMAX_CEILING, check_parameter_set

__all__ = [
    "CMAX_CEILING",
    "CovariateEffect",
    "Population",
    "Response",
    "ScenarioResult",
    "check_parameter_set",
    "scenarios",
]
