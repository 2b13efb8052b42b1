"""CAR-T persistence: how long the cells stay detectable, from data and from models.

Modules, by job:

* ``observed``: :func:`persistence`, per subject from its samples (tlast, tbql, a duration
  under a stated rule, event or censored);
* ``km``: :func:`kaplan_meier` across subjects (scipy's estimator), median and landmark
  fractions with CIs, groups with the log-rank test;
* ``predicted``: :func:`loss_times`, when a model's predicted level falls below the LLOQ
  for good, located on the ODE solution (used by ``ScenarioResult.persistence``).
"""

from .km import KaplanMeier, kaplan_meier, logrank_test
from .observed import RULES, persistence
from .predicted import fraction_detectable, km_band, levels_at, loss_times, predicted_table

__all__ = [
    "RULES",
    "KaplanMeier",
    "fraction_detectable",
    "kaplan_meier",
    "km_band",
    "levels_at",
    "logrank_test",
    "loss_times",
    "persistence",
    "predicted_table",
]
