"""Population fits: SAEM estimation of typical values, IIV and residual error, and their result.

* :mod:`.saem` — the design matrix and the SAEM iterations (:class:`Saem`).
* :mod:`.after` — post-fit steps: conditional modes, importance-sampling OFV, Fisher SEs.
* :mod:`.result` — :class:`PopulationFit`, the fitted estimates and what they are used for.
* :mod:`.diagnostics` — predictions, NPDE, VPC, plots, summary and JSON of a fit.
"""

from .after import OMEGA_FLOOR
from .result import PopulationFit
from .saem import PSEUDO_END, Saem, build_design, fit_population, floored

__all__ = [
    "OMEGA_FLOOR",
    "PSEUDO_END",
    "PopulationFit",
    "Saem",
    "build_design",
    "fit_population",
    "floored",
]
