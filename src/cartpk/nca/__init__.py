"""Non-compartmental analysis (NCA) of observed concentration–time data.

The semantics follow PKNCA (R), the reference named in the design:

* ``cmax``/``tmax``: the maximum concentration and the time of its first occurrence.
* ``tlast``/``clast``: the last concentration above zero and its time.
* ``auclast``: AUC from the first observation to ``tlast``; ``aucall`` adds the triangle
  from ``clast`` linearly down to the first zero after ``tlast``.
* ``"lin-up/log-down"``: the log trapezoid on segments where the concentration falls and
  both ends are above zero, the linear trapezoid elsewhere; ``"linear"``: linear everywhere.
* ``lambda_z``: log-linear least squares over the last n ≥ 3 positive points after ``tmax``
  (``tmax`` itself excluded); among all n, the fits with λz > 0 whose adjusted R² is within
  1e-4 of the best adjusted R² qualify, and the one with the most points wins.
* After a re-infusion (a dose record later than the first observation) λz is not taken
  across a dose (PKNCA's intervals are per dose): it uses only the points after the peak
  that follows the last dose, and the table says so (``last_dose``, ``exclude``).
* ``aucinf_obs = auclast + clast/λz``; ``aucinf_pred = auclast + clast_pred/λz``, where
  ``clast_pred`` is the λz regression line at ``tlast``.
* ``auc_<start>_<end>``: the AUC of the interpolant between ``start`` and ``end`` (log
  interpolation inside log-down segments), extrapolated past ``tlast`` with
  ``clast·exp(−λz·(t − tlast))``; NaN when ``start`` is before the first observation or when
  ``end`` is past ``tlast`` and λz is not available.

Units: times are the dataset's TIME unit (days for CAR-T data), concentrations are the
analyte's unit, AUCs are concentration × time, ``lambda_z`` is 1/time.

Times before zero (pre-infusion samples) are data and are included like any other time.
A row is below the limit of quantification (BLQ) when ``CENS == 1`` or ``DV == 0``. Rows with
a missing DV that are not BLQ are dropped (PKNCA's ``conc.na = "drop"``).

All subjects are computed at once by one numba kernel over ragged arrays (flat times and
concentrations plus int64 offsets), parallel over subjects.
"""

from .inputs import AUC_METHODS, DEFAULT_BLQ
from .kernel import PARAMETERS
from .table import nca, nca_summary

__all__ = ["AUC_METHODS", "DEFAULT_BLQ", "PARAMETERS", "nca", "nca_summary"]
