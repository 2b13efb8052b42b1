"""What a population fit returns: :class:`PopulationFit` (estimates, SEs, individuals)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from .model import Model
from .scales import delta_se, to_natural


@dataclass
class PopulationFit:
    """The outcome of :func:`cartpk.fit_population`.

    Estimation-scale quantities: ``mu`` (typical value of every model parameter, at the
    median of continuous covariates and the reference level of categorical ones),
    ``theta`` (covariate coefficients by label, e.g. ``C0~DOSE``), ``omega`` (covariance of
    the random effects, over ``random``), the individual parameters ``phi_mode`` (conditional
    modes) and ``phi_mean`` (conditional means from the chain), (n_subjects, n_par).
    ``covariance`` is the inverse Fisher information (linearisation) over ``theta_names``;
    ``ofv`` is −2 log-likelihood by importance sampling (``ofv_se`` its Monte Carlo SE).
    """

    model: Model
    ids: list[Any]
    random: list[str]
    estimated: list[str]
    covariate_model: list[dict[str, Any]]
    errors: dict[str, tuple[str, dict[str, float]]]
    omega_kind: str
    mu: dict[str, float]
    theta: dict[str, float]
    omega: np.ndarray
    sigma_values: dict[str, dict[str, float]]
    theta_names: list[str]
    covariance: np.ndarray | None
    ofv: float
    ofv_se: float
    n_obs: int
    phi_mode: np.ndarray
    phi_mean: np.ndarray
    covariates: np.ndarray
    design: np.ndarray
    observations: pd.DataFrame
    history: pd.DataFrame
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)

    # --- criteria -------------------------------------------------------------------------

    @property
    def n_parameters(self) -> int:
        """Estimated population parameters (fixed effects, Omega elements, error)."""
        return len(self.theta_names)

    @property
    def aic(self) -> float:
        """OFV + 2·(estimated population parameters)."""
        return self.ofv + 2 * self.n_parameters

    @property
    def bic(self) -> float:
        """OFV + log(n subjects)·(estimated population parameters) (Monolix's BIC)."""
        return self.ofv + np.log(len(self.ids)) * self.n_parameters

    # --- tables ---------------------------------------------------------------------------

    def _sd(self, name: str) -> float:
        if self.covariance is None or name not in self.theta_names:
            return np.nan
        k = self.theta_names.index(name)
        return float(np.sqrt(self.covariance[k, k]))

    def _row(self, name: str, label: str, x: float, scale: str, lo: float, hi: float, unit: str):
        sd = self._sd(label)
        value = float(to_natural(x, scale, lo, hi))
        ci = to_natural(np.array([x - 1.96 * sd, x + 1.96 * sd]), scale, lo, hi)
        se = delta_se(x, sd, scale, lo, hi)
        return {
            "parameter": name,
            "estimate": value,
            "se": se,
            "rse_pct": 100 * se / abs(value) if value else np.nan,
            "ci95_low": ci[0],
            "ci95_high": ci[1],
            "unit": unit,
            "fixed": label not in self.theta_names,
        }

    @property
    def fixed_effects(self) -> pd.DataFrame:
        """Typical values (natural scale) and covariate coefficients, with SE, RSE %, 95 % CI.

        Covariate coefficients are exponents of the power model (continuous) or log-ratios
        (categorical) on the estimation scale, reported as estimated.
        """
        rows = []
        for name, p in self.model.parameters.items():
            row = self._row(name, f"mu_{name}", self.mu[name], p.scale, p.lower, p.upper, p.unit)
            rows.append(row)
        for label, value in self.theta.items():
            rows.append(self._row(label, label, value, "none", -np.inf, np.inf, "-"))
        return pd.DataFrame(rows)

    @property
    def omega_table(self) -> pd.DataFrame:
        """Between-subject SD (estimation scale) per random effect, SE, RSE %, shrinkage %."""
        shrink = self.shrinkage()
        rows = []
        for k, name in enumerate(self.random):
            row = self._row(
                name, f"omega_{name}", float(np.sqrt(self.omega[k, k])), "none", 0, np.inf, "-"
            )
            row["shrinkage_pct"] = shrink[name]
            rows.append(row)
        return pd.DataFrame(rows)

    @property
    def sigma(self) -> pd.DataFrame:
        """Residual error parameters per analyte, with SE and RSE %."""
        rows = []
        for analyte, values in self.sigma_values.items():
            for name, value in values.items():
                label = f"{analyte}_{name}"
                row = self._row(label, label, float(np.log(value)), "log", 0.0, np.inf, "-")
                row["error_model"] = self.errors[analyte][0]
                rows.append(row)
        return pd.DataFrame(rows)

    def correlation(self) -> pd.DataFrame:
        """Correlation matrix of the random effects."""
        sd = np.sqrt(np.diag(self.omega))
        return pd.DataFrame(self.omega / np.outer(sd, sd), index=self.random, columns=self.random)

    def shrinkage(self) -> dict[str, float]:
        """eta shrinkage (%) per random effect: 1 − SD(conditional-mode eta) / omega."""
        eta = self.phi_mode - self.design
        out = {}
        for k, name in enumerate(self.random):
            j = self.model.param_names.index(name)
            out[name] = float(100 * (1 - np.std(eta[:, j], ddof=1) / np.sqrt(self.omega[k, k])))
        return out

    # --- individuals ----------------------------------------------------------------------

    def natural(self, phi: np.ndarray) -> pd.DataFrame:
        """Individual parameters on the natural scale, one row per subject."""
        columns = {
            name: to_natural(phi[:, j], p.scale, p.lower, p.upper)
            for j, (name, p) in enumerate(self.model.parameters.items())
        }
        return pd.DataFrame({"ID": self.ids, **columns})

    def individual_parameters(self, which: str = "mode") -> pd.DataFrame:
        """Per-subject parameters (natural scale): conditional ``mode`` or ``mean``."""
        return self.natural(self.phi_mode if which == "mode" else self.phi_mean)

    @property
    def individual(self) -> pd.DataFrame:
        """Per-subject parameters (conditional modes) with model-based cmax, tmax, auc_0_28."""
        from .exposure import exposure

        table = self.individual_parameters()
        values = table[list(self.model.param_names)].to_numpy()
        found = exposure(
            self.model,
            values,
            output=self.model.outputs[0],
            interval=(0, 28),
            covariates=self.covariates if self.covariates.size else None,
        )
        return pd.concat([table, found.drop(columns="ID")], axis=1)

    def typical(self) -> dict[str, float]:
        """Typical parameter values on the natural scale."""
        return {
            name: float(to_natural(self.mu[name], p.scale, p.lower, p.upper))
            for name, p in self.model.parameters.items()
        }

    def population(self):
        """The fitted population as a :class:`cartpk.scenarios.Population` (virtual patients)."""
        from .scenarios import CovariateEffect, Population

        sd = np.sqrt(np.diag(self.omega))
        correlation = self.omega / np.outer(sd, sd)
        effects = [
            CovariateEffect(
                c["parameter"],
                c["covariate"],
                "power" if c["kind"] == "continuous" else "level",
                self.theta[c["label"]],
                c["reference"] if c["kind"] == "continuous" else c["level"],
            )
            for c in self.covariate_model
        ]
        return Population(
            model=self.model,
            typical=self.typical(),
            omega=dict(zip(self.random, sd.tolist(), strict=True)),
            correlation=correlation,
            covariate_effects=effects,
        )
