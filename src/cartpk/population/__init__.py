"""Population fits: SAEM estimation of typical values, IIV and residual error, and their result.

* :mod:`.design` — the request checked against model and data; the covariate design matrix.
* :mod:`.saem` — the SAEM iterations (:class:`Saem`) and :func:`fit_population`.
* :mod:`.state` — the finished run, frozen (:class:`SaemState`), for the post-fit steps.
* :mod:`.after` — the post-fit steps, called in turn on that state:
  :mod:`.polish` (estimates to the maximum of the quadrature −2LL), :mod:`.modes`
  (conditional modes), :mod:`.marginal` (−2LL by importance sampling and by quadrature),
  :mod:`.fisher` (standard errors).
* :mod:`.result` — :class:`PopulationFit`: tables, individuals, summary text and JSON.
* :mod:`.diagnostics` — predictions, NPDE, VPC and goodness-of-fit figures of a fit.
* :mod:`.resampling` — case-resampling bootstrap and simulation–estimation, here or on dask.
"""

from .after import OMEGA_FLOOR
from .design import CovariateColumn, Design, build_design
from .resampling import BootstrapResult, SimestResult, bootstrap, simest
from .result import PopulationFit
from .saem import PSEUDO_END, Saem, fit_population, floored
from .state import COLLAPSED, SaemState

__all__ = [
    "BootstrapResult",
    "COLLAPSED",
    "OMEGA_FLOOR",
    "PSEUDO_END",
    "CovariateColumn",
    "Design",
    "PopulationFit",
    "Saem",
    "SaemState",
    "SimestResult",
    "bootstrap",
    "build_design",
    "fit_population",
    "floored",
    "simest",
]
