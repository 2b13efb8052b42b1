"""Observed outcome rates of an exposure-response analysis: per exposure quantile bin and
per group, each with its exact (Clopper-Pearson) binomial confidence interval, scipy's
``binomtest(...).proportion_ci(method="exact")``.

For an ordinal outcome every rate is given per threshold: the fraction of subjects with
grade >= k, for each observed grade k above the lowest.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
from scipy import stats

__all__ = ["event_rate", "exposure_bins", "thresholds"]


def event_rate(events: np.ndarray, level: float) -> dict[str, Any]:
    """n, events, rate and its exact (Clopper-Pearson) CI at ``level`` of 0/1 ``events``."""
    n, k = int(events.size), int(events.sum())
    ci = stats.binomtest(k, n).proportion_ci(confidence_level=level, method="exact")
    return {"n": n, "events": k, "rate": k / n, "ci_low": ci.low, "ci_high": ci.high}


def exposure_bins(exposure: np.ndarray, quantiles: int) -> np.ndarray:
    """The quantile bin (0, 1, ...) of each exposure: ``quantiles`` bins of equal counts
    (pandas ``qcut``), fewer when ties make some bin edges equal."""
    return pd.qcut(exposure, quantiles, labels=False, duplicates="drop").astype(int)


def thresholds(kind: str, grades: tuple[int, ...]) -> list[tuple[str, int]]:
    """(label, grade k) of each event "outcome >= k": ``("= 1", 1)`` for a binary outcome,
    ``(">= k", k)`` for each grade above the lowest of an ordinal one."""
    if kind == "binary":
        return [("= 1", 1)]
    return [(f">= {k}", k) for k in grades[1:]]
