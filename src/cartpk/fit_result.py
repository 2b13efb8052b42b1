"""What individual fits return: :class:`FitResult` (one subject), :class:`FitTable` (many)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import lmfit
import numpy as np
import pandas as pd

from .model import Model
from .scales import delta_se, to_natural
from .solve import solve_batch


@dataclass
class FitResult:
    """The outcome of :func:`cartpk.fit` for one subject.

    ``estimates`` are on the natural scale (model parameters, then error parameters named
    ``<ANALYTE>_sigma|a|b``); ``estimation`` holds every parameter on its estimation scale
    (log for error parameters); ``covariance`` is on the estimation scale of the estimated
    parameters ``names``; ``ofv`` is −2 log-likelihood at the optimum (prior excluded) and
    ``objective`` adds the prior penalty. ``observations`` are the fitted rows (TIME in days,
    DV, CENS, LLOQ, ANALYTE) and ``covariates`` the subject's covariates.
    """

    model: Model
    subject: Any
    estimates: dict[str, float]
    estimation: dict[str, float]
    names: list[str]
    covariance: np.ndarray | None
    ofv: float
    objective: float
    success: bool
    message: str
    n_starts: int
    n_at_best: int
    errors: dict[str, tuple[str, dict[str, float]]]
    priors: dict[str, tuple[float, float]]
    observations: pd.DataFrame
    covariates: dict[str, float]
    method: str = "dopri5"
    rtol: float = 1e-8
    atol: float = 1e-10
    notes: list[str] = field(default_factory=list)

    @property
    def n_obs(self) -> int:
        """Number of fitted observations (censored ones included)."""
        return len(self.observations)

    @property
    def aic(self) -> float:
        """Akaike information criterion: OFV + 2·(estimated parameters)."""
        return self.ofv + 2 * len(self.names)

    @property
    def bic(self) -> float:
        """Bayesian information criterion: OFV + log(n observations)·(estimated parameters)."""
        return self.ofv + np.log(self.n_obs) * len(self.names)

    @property
    def params(self) -> lmfit.Parameters:
        """The estimates as lmfit Parameters (natural scale; stderr where computable)."""
        out = lmfit.Parameters()
        for row in self.table().itertuples():
            out.add(row.parameter, value=row.estimate, vary=not row.fixed)
            out[row.parameter].stderr = None if np.isnan(row.se) else row.se
        return out

    def table(self) -> pd.DataFrame:
        """Estimate, SE, RSE %, 95 % CI (natural scale), unit, fixed, prior per parameter."""
        return pd.DataFrame([self._row(name) for name in self.estimates])

    def _row(self, name: str) -> dict[str, Any]:
        value = self.estimates[name]
        scale, lower, upper, unit = self.scale_of(name)
        se = ci_low = ci_high = np.nan
        if self.covariance is not None and name in self.names:
            k = self.names.index(name)
            sd = float(np.sqrt(self.covariance[k, k]))
            x = self.estimation[name]
            ci_low, ci_high = to_natural(
                np.array([x - 1.96 * sd, x + 1.96 * sd]), scale, lower, upper
            )
            se = delta_se(x, sd, scale, lower, upper)
        return {
            "parameter": name,
            "estimate": value,
            "se": se,
            "rse_pct": 100 * se / abs(value) if value else np.nan,
            "ci95_low": ci_low,
            "ci95_high": ci_high,
            "unit": unit,
            "fixed": name not in self.names,
            "prior": name in self.priors,
        }

    def scale_of(self, name: str) -> tuple[str, float, float, str]:
        """Estimation scale, bounds and unit of a model or error parameter."""
        if name in self.model.parameters:
            p = self.model.parameters[name]
            return p.scale, p.lower, p.upper, p.unit
        analyte = name.rsplit("_", 1)[0]
        unit = "-" if name.endswith(("_sigma", "_b")) else self.model.output_units.get(analyte, "-")
        return "log", 0.0, np.inf, unit

    def model_values(self) -> np.ndarray:
        """Model parameters at the estimates, natural scale, in the model's order."""
        return np.array([self.estimates[n] for n in self.model.param_names])

    def predict(self, times: Any) -> pd.DataFrame:
        """Model outputs at the estimates: TIME (day) and one column per output."""
        times = np.sort(np.asarray(times, dtype=float))
        values = solve_batch(
            self.model,
            self.model_values()[None, :],
            self.covariates or None,
            times=times,
            method=self.method,
            rtol=self.rtol,
            atol=self.atol,
        ).values
        return pd.DataFrame({"TIME": times, **dict(zip(self.model.outputs, values.T, strict=True))})


@dataclass
class FitTable:
    """Individual fits of several subjects: ``results`` maps each ID to its FitResult.

    Subjects whose fit raised an error are kept in ``errors`` (ID -> message), not dropped.
    """

    results: dict[Any, FitResult]
    errors: dict[Any, str] = field(default_factory=dict)

    def __getitem__(self, subject: Any) -> FitResult:
        return self.results[subject]

    def __iter__(self):
        return iter(self.results.values())

    def __len__(self) -> int:
        return len(self.results)

    def table(self) -> pd.DataFrame:
        """One row per subject: ID, each estimate, ofv, aic, bic, success, n_at_best, notes."""
        rows = [
            {
                "ID": subject,
                **result.estimates,
                "ofv": result.ofv,
                "aic": result.aic,
                "bic": result.bic,
                "success": result.success,
                "n_at_best": result.n_at_best,
                "notes": "; ".join(result.notes),
            }
            for subject, result in self.results.items()
        ]
        rows += [
            {"ID": subject, "success": False, "notes": msg} for subject, msg in self.errors.items()
        ]
        return pd.DataFrame(rows)

    def parameters(self) -> pd.DataFrame:
        """Long table: every subject's parameter table with an ID column first."""
        parts = [result.table().assign(ID=subject) for subject, result in self.results.items()]
        frame = pd.concat(parts, ignore_index=True)
        return frame[["ID", *[c for c in frame.columns if c != "ID"]]]
