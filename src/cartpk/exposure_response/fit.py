"""Exposure-response regression: a binary outcome by logistic regression, an ordinal one
(e.g. CRS grade 0-4) by the proportional-odds (cumulative logit) model, on the log of a
per-subject exposure.

The models, with z = log_base(exposure) (log2 by default, so that exp(slope) is the odds
ratio per doubling of exposure):

* binary: logit P(Y = 1 | z) = intercept + slope · z (statsmodels ``Logit``, Newton);
* ordinal: logit P(Y <= g_j | z) = cutpoint_j - slope · z for the observed grades
  g_1 < ... < g_K and j = 1 .. K - 1 (statsmodels ``OrderedModel``, ``distr="logit"``, the
  parameterisation of R's ``MASS::polr``), so P(Y >= g_{j+1} | z) = expit(slope · z -
  cutpoint_j) and exp(slope) is the common odds ratio of a higher grade per unit of z.

Both are fitted by maximum likelihood with Wald (normal) standard errors from the inverse
of the Hessian. A data set whose likelihood has no maximum, because exposure separates the
outcomes (every subject with the event above, or below, every subject without it; for
grades: each grade's exposures above those of every lower grade), is refused: its
maximum-likelihood slope is infinite.
"""

from __future__ import annotations

import itertools
import math
import warnings
from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

from ..errors import DataError, FitError
from .inputs import ExposureOutcomes, checked_subjects
from .result import ExposureResponse, cutpoints

__all__ = ["exposure_response"]


def _log_label(base: float) -> str:
    if base == 2:
        return "log2"
    if base == 10:
        return "log10"
    if math.isclose(base, math.e):
        return "ln"
    return f"log{base:g}"


def _separated(z: np.ndarray, y: np.ndarray, grades: tuple[int, ...]) -> bool:
    """Whether exposure orders the grades without overlap (ties at the edges allowed):
    then the likelihood increases without bound along the slope (complete or
    quasi-complete separation) and the maximum-likelihood estimate does not exist."""
    low = np.array([z[y == g].min() for g in grades])
    high = np.array([z[y == g].max() for g in grades])
    return bool(np.all(high[:-1] <= low[1:]) or np.all(low[:-1] >= high[1:]))


def _fit_statsmodels(model: Any, what: str, **options: Any) -> tuple[np.ndarray, np.ndarray]:
    """Fit by Newton's method, turning statsmodels' convergence and separation warnings
    into one error; the estimates and their covariance (inverse Hessian)."""
    from statsmodels.tools.sm_exceptions import (
        ConvergenceWarning,
        HessianInversionWarning,
        PerfectSeparationWarning,
    )

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        result = model.fit(method="newton", disp=False, **options)
    # other warnings (overflow in exp at a trial step) say nothing once the fit converged
    failures = (ConvergenceWarning, HessianInversionWarning, PerfectSeparationWarning)
    for warning in caught:
        if issubclass(warning.category, failures):
            raise FitError(f"{what}: {warning.message}")
    if not result.mle_retvals.get("converged", False):
        raise FitError(f"{what}: the maximum-likelihood fit did not converge")
    params = np.asarray(result.params, dtype=float)
    covariance = np.asarray(result.cov_params(), dtype=float)
    if not (np.all(np.isfinite(covariance)) and np.all(np.diag(covariance) > 0)):
        raise FitError(f"{what}: the Hessian is singular; the slope is not identifiable")
    return params, covariance


def _fit_binary(z: np.ndarray, y: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """statsmodels' estimates (intercept, slope) and their covariance."""
    from statsmodels.discrete.discrete_model import Logit

    design = np.column_stack([np.ones_like(z), z])
    return _fit_statsmodels(Logit(y, design), what, maxiter=100, tol=1e-10)


def _fit_ordinal(z: np.ndarray, y: np.ndarray, what: str) -> tuple[np.ndarray, np.ndarray]:
    """statsmodels' estimates (slope, first cutpoint, log increments of the others, with
    z centred at its mean for conditioning: :func:`cutpoints` undoes both) and their
    covariance."""
    from statsmodels.miscmodels.ordinal_model import OrderedModel

    model = OrderedModel(y, (z - z.mean())[:, None], distr="logit")
    return _fit_statsmodels(model, what, maxiter=200, tol=1e-8)


def _cutpoint_jacobian(internal: np.ndarray, centre: float) -> np.ndarray:
    """d(slope, cutpoints) / d(statsmodels' parameters), at ``internal``."""
    k = internal.size
    jacobian = np.zeros((k, k))
    jacobian[0, 0] = 1.0
    jacobian[1:, 0] = centre
    jacobian[1:, 1] = 1.0
    for i in range(2, k):
        jacobian[i:, i] = np.exp(internal[i])
    return jacobian


def _coefficients(
    terms: list[str], estimates: np.ndarray, covariance: np.ndarray, level: float
) -> pd.DataFrame:
    se = np.sqrt(np.diag(covariance))
    q = stats.norm.ppf(0.5 + level / 2)
    return pd.DataFrame(
        {
            "term": terms,
            "estimate": estimates,
            "se": se,
            "ci_low": estimates - q * se,
            "ci_high": estimates + q * se,
            "p_value": 2 * stats.norm.sf(np.abs(estimates / se)),
        }
    )


def exposure_response(
    table: pd.DataFrame,
    exposure: str = "cmax",
    outcome: str = "CRS_GE2",
    by: str | None = None,
    *,
    kind: str | None = None,
    log_base: float = 2,
    level: float = 0.95,
) -> ExposureResponse:
    """Exposure-response regression of a per-subject outcome on log exposure.

    Args:
        table: one row per subject (an ``ID`` column is optional; its values must then be
            unique) with the exposure and outcome columns. It is not modified.
        exposure: the exposure column, e.g. ``"cmax"`` (copies/µg DNA) or ``"auc_0_28"``
            (copies/µg DNA·day), from :func:`cartpk.nca` or a model; positive and finite,
            as it is log-transformed. Missing values are refused (naming the rows).
        outcome: the outcome column: 0/1 (or True/False) for a binary outcome (e.g. CRS
            grade >= 2, response, DLT), integer grades (e.g. CRS grade 0-4) for an ordinal
            one. Missing values and non-integer grades are refused.
        by: a grouping column (e.g. ``"DOSE"``) for the figure (colour and marker per
            group) and :meth:`ExposureResponse.by_group`. It does NOT enter the regression:
            the model is outcome on exposure alone.
        kind: ``"binary"`` (logistic regression) or ``"ordinal"`` (proportional odds);
            None: binary for 0/1 values, ordinal for more than two integer levels.
        log_base: base of the exposure's log (> 1). The slope is per unit of
            log_base(exposure); :attr:`ExposureResponse.odds_ratio_per_doubling` is the
            same whatever the base.
        level: the level of every confidence interval (Wald, on the linear predictor).

    Returns:
        An :class:`ExposureResponse`.

    Raises:
        DataError: a column is missing, an exposure is not positive and finite, a value
            is missing, a grade is not an integer, an ID is repeated, the outcome is
            constant, or exposure separates the outcomes (the slope would be infinite).
        FitError: the fit did not converge, or its Hessian is singular.
    """
    if isinstance(log_base, bool) or not isinstance(log_base, int | float | np.number):
        raise ValueError(f"log_base {log_base!r}: expected a number > 1, e.g. 2, 10 or math.e")
    if not (math.isfinite(log_base) and log_base > 1):
        raise ValueError(f"log_base {log_base!r}: expected a number > 1, e.g. 2, 10 or math.e")
    if not (isinstance(level, int | float | np.number) and 0 < level < 1):
        raise ValueError(f"level {level!r}: expected a number between 0 and 1, e.g. 0.95")
    subjects: ExposureOutcomes = checked_subjects(table, exposure, outcome, by, kind)
    z = np.log(subjects.exposure) / math.log(log_base)
    y = subjects.outcome
    what = f"{outcome} on {_log_label(log_base)}({exposure})"
    if _separated(z, y, subjects.grades):
        if subjects.kind == "binary":
            detail = (
                f"every subject with {outcome} = 1 has {exposure} on one side of every "
                "subject with 0"
            )
        else:
            detail = f"each grade of {outcome} has {exposure} on one side of every lower grade"
        raise DataError(
            f"{what}: the outcome is perfectly separated by exposure ({detail}), so the "
            "maximum-likelihood slope is infinite; more subjects are needed, or a "
            "penalised (e.g. Firth) fit"
        )
    slope_term = f"{_log_label(log_base)}({exposure})"
    if subjects.kind == "binary":
        internal, internal_covariance = _fit_binary(z, y, what)
        centre = 0.0
        params, covariance = internal, internal_covariance
        terms = ["intercept", slope_term]
        slope_index = 1
    else:
        internal, internal_covariance = _fit_ordinal(z, y, what)
        centre = float(z.mean())
        params = cutpoints(internal, centre)
        jacobian = _cutpoint_jacobian(internal, centre)
        covariance = jacobian @ internal_covariance @ jacobian.T
        grades = subjects.grades
        terms = [slope_term] + [f"cutpoint {a}|{b}" for a, b in itertools.pairwise(grades)]
        slope_index = 0
    coefficients = _coefficients(terms, params, covariance, level)
    factor = math.log(2) / math.log(log_base)
    slope = coefficients.iloc[slope_index]
    odds_ratio = {
        "estimate": float(np.exp(slope["estimate"] * factor)),
        "ci_low": float(np.exp(slope["ci_low"] * factor)),
        "ci_high": float(np.exp(slope["ci_high"] * factor)),
    }
    data = pd.DataFrame({"exposure": subjects.exposure, "outcome": y})
    if subjects.ids is not None:
        data.insert(0, "ID", subjects.ids)
    if subjects.groups is not None:
        data["group"] = subjects.groups
    return ExposureResponse(
        kind=subjects.kind,
        exposure=exposure,
        outcome=outcome,
        by=by,
        n=int(y.size),
        log_base=float(log_base),
        level=float(level),
        grades=subjects.grades,
        coefficients=coefficients,
        odds_ratio_per_doubling=odds_ratio,
        params=params,
        covariance=covariance,
        data=data,
        draw_mean=internal,
        draw_covariance=internal_covariance,
        draw_centre=centre,
    )
