"""Exposure-response analysis: per-subject exposure (e.g. Cmax or AUC0-28, from NCA or a
model) against an outcome (e.g. CRS grade >= 2, response, DLT, or the CRS grade itself).

Modules, by job:

* ``inputs``: the subject table checked (one row per subject, positive exposure, 0/1 or
  integer-graded outcome);
* ``fit``: :func:`exposure_response`, logistic or proportional-odds regression on
  log2(exposure) with statsmodels;
* ``result``: :class:`ExposureResponse`, the estimates, odds ratio per doubling,
  predicted probabilities with their band, parametric draws, text, JSON and the figure
  (drawn by :mod:`cartpk.plots.exposure_response`);
* ``observed``: observed rates per exposure quartile and group, with exact CIs.
"""

from .fit import exposure_response
from .result import ExposureResponse

__all__ = ["ExposureResponse", "exposure_response"]
