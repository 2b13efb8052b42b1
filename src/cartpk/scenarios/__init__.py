"""Dose scenarios and virtual trials: the same virtual patients at several doses.

A :class:`Population` (typical values, between-subject variability, covariate effects) is
sampled in seeded blocks, and each scenario dose is given to the same patients (common
random numbers), so that dose comparisons are paired. For every patient and dose the
result holds the individual parameters, the covariates, the model-based exposure of one
output (cmax, tmax, AUC over an interval, located on the continuous ODE solution by the
numba kernels) and, for models with a biomarker, the biomarker response (partial/complete
response by a day and the time to it). The same seed gives the same numbers at any chunk
size, scheduler or number of numba threads.

Modules, by job:

* ``population``: :class:`Population`, :class:`CovariateEffect`, the seeded block
  sampling of virtual patients (RANDOM_BLOCK, one SeedSequence child stream per block)
  and :class:`~.population.Cohort`, the patients of one seed at each dose;
* ``response``: :class:`Response`, the POEMS VEGF response rule (VEGF_ULN) and its
  per-patient flags and columns;
* ``chunk``: the solve of one chunk of patients on the model's kernels (exposure,
  outputs at times, the times of the response thresholds);
* ``run``: :func:`scenarios`, the chunk worker and the one way it gets the kernels, local
  and dask execution, Parquet streaming;
* ``result``: :class:`ScenarioResult` (table, summaries, bands, figures);
* ``escalation``: :func:`dose_escalation`, per dose level exposure, peaks and outcome
  risks with intervals from a population fit's uncertainty;
* ``regimens``: :class:`Regimen` and :func:`compare_regimens`, dosing regimens (how many
  infusions, how far apart, at what dose) on the same virtual patients: exposure per
  infusion and cumulative, accumulation, time above a level;
* ``target_sets``: :func:`compare_target_sets`, the CD19, BCMA and compound CAR on the
  same virtual patients (``ck_blineage``);
* ``checks``: argument checks shared by the modules above;
* ``virtual_trial``: :func:`check_parameter_set`, a parameter set against its published
  figures.
"""

from .escalation import DoseEscalation, dose_escalation
from .population import CovariateEffect, Population
from .regimens import Regimen, RegimenComparison, compare_regimens
from .response import VEGF_ULN, Response
from .result import ScenarioResult
from .run import scenarios
from .target_sets import TARGET_SETS, compare_target_sets
from .virtual_trial import CMAX_CEILING, check_parameter_set

__all__ = [
    "CMAX_CEILING",
    "VEGF_ULN",
    "CovariateEffect",
    "DoseEscalation",
    "Population",
    "Regimen",
    "RegimenComparison",
    "Response",
    "ScenarioResult",
    "TARGET_SETS",
    "check_parameter_set",
    "compare_regimens",
    "compare_target_sets",
    "dose_escalation",
    "scenarios",
]
