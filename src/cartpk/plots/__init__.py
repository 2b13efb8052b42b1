"""Matplotlib figures. Every function returns the Figure and saves it when given a path.

Modules, by job: ``simulation`` (model outputs of simulated subjects against time) and
``scenarios`` (dose scenarios: exposure distributions and prediction bands per dose) and
``persistence`` (Kaplan-Meier curves with numbers at risk, observed against predicted) and
``exposure_response`` (observed rates and the fitted probability against log exposure).
Population fit diagnostics draw their own figures (``population_diagnostics``).
"""

from .exposure_response import plot_exposure_response
from .persistence import plot_km, plot_km_vpc
from .scenarios import dose_label, plot_bands, plot_exposure
from .simulation import plot_simulation

__all__ = [
    "dose_label",
    "plot_bands",
    "plot_exposure",
    "plot_exposure_response",
    "plot_km",
    "plot_km_vpc",
    "plot_simulation",
]
