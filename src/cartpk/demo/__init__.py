"""Worked examples on the bundled data sets, one module per case.

* ``poems``: the seed case, ck_vegf fitted to the first POEMS patient's VEGF (KQ-2003);
* ``rrmm``: the KQ-2003 myeloma dose escalation, from NCA to the per-dose table.

The POEMS names are re-exported here, as ``cartpk.demo`` has always offered them.
"""

from ..data import bundled
from .poems import (
    BNORM_PRIOR,
    VEGF_ERROR_CV,
    determined_by,
    exposure_intervals,
    first_day,
    plot_poems,
    poems_fit,
    poems_report,
)

__all__ = [
    "BNORM_PRIOR",
    "VEGF_ERROR_CV",
    "bundled",
    "determined_by",
    "exposure_intervals",
    "first_day",
    "plot_poems",
    "poems_fit",
    "poems_report",
]
