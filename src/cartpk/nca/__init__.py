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
* Interval AUCs follow PKNCA's ``pk.calc.aucint`` (``interval_aucs`` of :func:`nca`):
  ``auc_<start>_<end>`` is ``aucint.last``, ``aucint_inf_obs_<start>_<end>`` is
  ``aucint.inf.obs`` and ``aucint_all_<start>_<end>`` is ``aucint.all``. The samples inside
  [start, end] are integrated segment by segment with the AUC method, including those
  after tlast: the area runs down to a BLQ zero observed inside the interval (8, 4, 2, 1,
  BLQ at days 0–4 give 7/ln 2 + 1/2 over [0, 4] with lin-up/log-down). A start or end
  that is not a sample time gets a concentration: 0 before the first observation
  (PKNCA's ``conc.origin``); interpolated (log inside log-down segments) up to tlast;
  after tlast 0 for ``aucint.last``, the line from clast down to the next (BLQ) sample
  for ``aucint.all`` (0 past it), clast·exp(−λz·(t − tlast)) for ``aucint.inf.obs``. The
  segment that ends at such an end after tlast is integrated with the log trapezoid
  whatever the AUC method (PKNCA; 0 when an end is 0). An infinite end adds, for
  ``aucint.inf.obs`` only, the λz tail clast/λz (from the start when it is after tlast,
  where PKNCA adds the whole tail from tlast). ``aucint.inf.obs`` is NaN only when it
  needs a concentration after tlast and λz is not available. A subject whose samples end
  before the interval end still gets the AUC, and ``exclude`` says that the interval ends
  after the last sample; likewise for a start before the first observation.

Units: times are the dataset's TIME unit (days for CAR-T data), concentrations are the
analyte's unit, AUCs are concentration × time, ``lambda_z`` is 1/time.

Times before zero (pre-infusion samples) are data and are included like any other time.
A row is below the limit of quantification (BLQ) when ``CENS == 1`` or ``DV == 0``. Rows with
a missing DV that are not BLQ are dropped before the BLQ rules (PKNCA's ``conc.na = "drop"``)
and the ``exclude`` column counts them; the data reader accepts them for NCA only (a model
fit refuses them: they need MDV=1).

All subjects are computed at once by one numba kernel over ragged arrays (flat times and
concentrations plus int64 offsets), parallel over subjects.
"""

from .inputs import AUC_METHODS, DEFAULT_BLQ
from .kernel import INTERVAL_AUCS, PARAMETERS
from .table import nca, nca_summary

__all__ = ["AUC_METHODS", "DEFAULT_BLQ", "INTERVAL_AUCS", "PARAMETERS", "nca", "nca_summary"]
