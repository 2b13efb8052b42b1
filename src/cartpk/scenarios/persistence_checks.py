"""Virtual populations for the persistence checks: a BCMA CAR-T in myeloma
(equecabtagene autoleucel's published persistence) and an NMOSD-like population.

Published figures (``PUBLISHED``):

* Equecabtagene autoleucel (CT103A, BCMA CAR-T) in relapsed/refractory myeloma, FUMANBA-1
  post-hoc analysis presented at ASH 2023 (press release, shared/seeds/003): median
  persistence 307.5 days; vector copies above the limit of detection in 50 % of patients
  at 12 months and 40 % at 24 months. The 307.5-day median also appears in the CT103A
  phase 1 report (Wang et al., Blood 2021;137:2890, doi:10.1182/blood.2020008936); the
  12/24-month fractions could not be traced to a primary source (DESIGN.md).
* CT103A in AQP4-IgG+ NMOSD (Qin et al., Signal Transduct Target Ther 2023, 12 patients,
  shared/seeds/002): CAR-T cells persisted beyond 6 months in 17 % of patients.

Model: ck_stein with the ``bcma-kq2003`` parameter set (its typical values and
variability for C0, rho, tmax, alpha and their correlations) at 1e6 cells/kg, FUMANBA-1's
dose. The persistence parameters were FOUND HERE, not taken from a publication: the
typical values and between-subject SDs of Fb (logit scale) and beta (log scale) that
reproduce the three equecabtagene figures (searched by Nelder-Mead over the four numbers,
20,000 virtual patients, common random numbers): Fb 2.0e-4 with SD 4.0, beta 0.0019/day
with SD 0.94 (beta's SD is Stein 2019's, sqrt(0.86) = 0.93; the set's Fb SD 0.894 is far
too narrow to give the plateau between 12 and 24 months). The wide logit-normal Fb acts as
a long-term-persister fraction: about a quarter of patients keep a memory fraction above
1 % of the peak, so no separate mixture is needed.

LLOQ: 5 copies/ug, the PLACEHOLDER of the cilta-cel and bcma-kq2003 sets' virtual trials
(FUMANBA-1's limit of detection in copies/ug is not in the seeds).

NMOSD-like population: the same persistence variability with a shorter expansion and no
tumour antigen to drive it: tmax 8 days and a fold expansion of 60 (rho = ln 60 / 8), both
PLACEHOLDERS (no NMOSD kinetics are in the seeds); the fold expansion was CHOSEN to give
about 17 % beyond 6 months, so that check shows the persistence variability carries over
to a lower peak, not an independent prediction of it.
"""

from __future__ import annotations

import numpy as np

from ..model import load_model
from .population import Population

__all__ = ["LLOQ", "PERSISTENCE_VARIABILITY", "PUBLISHED", "bcma_population", "nmosd_population"]

#: Published persistence figures (days, fractions); sources in the module docstring.
PUBLISHED = {
    "equecabtagene": {"median": 307.5, "detectable_365": 0.50, "detectable_730": 0.40},
    "nmosd": {"detectable_182.5": 0.17},
}
#: Typical value and between-subject SD (estimation scale) of the persistence parameters,
#: found here to reproduce equecabtagene (module docstring).
PERSISTENCE_VARIABILITY = {"Fb": (2.0e-4, 4.0), "beta": (1.9e-3, 0.94)}
#: PLACEHOLDER LLOQ (copies/ug) of the checks.
LLOQ = 5.0
#: PLACEHOLDER expansion of the NMOSD-like population: tmax (day), fold expansion.
NMOSD_EXPANSION = (8.0, 60.0)


def bcma_population(variability: dict[str, tuple[float, float]] | None = None) -> Population:
    """ck_stein with the bcma-kq2003 set and persistence ``variability`` (parameter ->
    (typical value, SD on its estimation scale); default :data:`PERSISTENCE_VARIABILITY`)."""
    model = load_model("ck_stein", parameters="bcma-kq2003")
    base = Population.from_model(model)
    typical, omega = dict(base.typical), dict(base.omega)
    for name, (value, sd) in (variability or PERSISTENCE_VARIABILITY).items():
        typical[name], omega[name] = value, sd
    return Population(model, typical, omega, base.correlation)


def nmosd_population(variability: dict[str, tuple[float, float]] | None = None) -> Population:
    """:func:`bcma_population` with the NMOSD-like expansion (:data:`NMOSD_EXPANSION`)."""
    base = bcma_population(variability)
    tmax, fold = NMOSD_EXPANSION
    typical = {**base.typical, "tmax": tmax, "rho": float(np.log(fold) / tmax)}
    return Population(base.model, typical, base.omega, base.correlation)
