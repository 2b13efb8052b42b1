"""The dose-escalation answer: what each dose level gives, with intervals that carry a
population fit's uncertainty.

For each dose the same virtual patients (one seed, common random numbers) are simulated
under the fit's point estimates and under ``n_draws`` populations drawn from the estimates'
uncertainty (:meth:`cartpk.PopulationFit.populations`). Each run is summarised by the
median over patients of the model-based exposure of one output (cmax, tmax, AUC over an
interval) and of the peak and time to peak of other outputs (cytokines), and by the mean
over patients of outcome risks from exposure–response fits (:func:`cartpk.exposure_response`)
evaluated at each patient's exposure, with the exposure–response coefficients drawn from
their own uncertainty alongside. The table gives the point estimate and the central
``level`` interval over the draws.

Doses are CAR-T cells/kg (the model's ``DOSE`` covariate); times in days; exposure in the
output's unit (cmax) and unit·day (AUC); risks are probabilities.
"""

from __future__ import annotations

import math
import numbers
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from ..exposure import _interval, exposure
from .checks import checked_count, checked_doses
from .population import Cohort, Population


@dataclass(frozen=True)
class _Risk:
    """One outcome risk: an exposure–response fit, and for an ordinal fit the grade."""

    name: str
    fit: Any
    at_least: int | None


@dataclass(frozen=True)
class DoseEscalation:
    """The outcome of :func:`dose_escalation`.

    Attributes:
        doses: the dose levels (CAR-T cells/kg).
        table: one row per dose and quantity: ``estimate`` (at the point estimates), ``low``
            and ``high`` (the central ``level`` interval over the uncertainty draws).
        draws: the per-draw summaries, one row per draw and dose (draw 0 is the point
            estimate), one column per quantity, and ``failed``: the patients that could
            not be solved there (left out of that row's medians and risks, with a
            warning).
        level: the interval's coverage.
        risks: the names of the outcome risks (columns ``P(<name>)``).
    """

    doses: np.ndarray
    table: pd.DataFrame
    draws: pd.DataFrame
    level: float
    risks: tuple[str, ...]

    def wide(self) -> pd.DataFrame:
        """The table with one row per dose and ``estimate [low, high]`` text per quantity."""
        text = self.table.apply(
            lambda r: f"{_fmt(r.estimate)} [{_fmt(r.low)}, {_fmt(r.high)}]", axis=1
        )
        frame = self.table.assign(value=text)
        wide = frame.pivot(index="dose", columns="quantity", values="value")
        return wide[list(dict.fromkeys(self.table["quantity"]))].reset_index()

    def dose_for(self, risk: str, limit: float, bound: str = "high") -> pd.Series:
        """The highest dose whose risk ``P(<risk>)`` stays below ``limit``.

        The risk is interpolated linearly in log dose between the dose levels; ``bound``
        says which curve must stay below the limit: ``"high"`` (the upper end of the
        interval, the cautious answer) or ``"estimate"``.

        Returns:
            A Series with ``dose`` (NaN when even the lowest dose exceeds the limit, the
            highest dose when none does), ``bound``, ``limit`` and ``note``.
        """
        if risk not in self.risks:
            raise ValueError(f"dose_for: unknown risk {risk!r} (risks: {', '.join(self.risks)})")
        if bound not in ("high", "estimate"):
            raise ValueError(f"dose_for: bound {bound!r}: expected 'high' or 'estimate'")
        if not (isinstance(limit, numbers.Real) and 0 < limit < 1):
            raise ValueError(f"dose_for: limit {limit!r}: expected a probability in (0, 1)")
        rows = self.table[self.table["quantity"] == f"P({risk})"].sort_values("dose")
        dose, p = rows["dose"].to_numpy(float), rows[bound].to_numpy(float)
        below = p < limit
        if below.all():
            found, note = dose[-1], "the limit is not reached within the doses studied"
        elif not below[0]:
            found, note = math.nan, "the lowest dose already exceeds the limit"
        else:
            k = int(np.argmin(below)) - 1  # last dose below before the first above
            x0, x1 = np.log(dose[k]), np.log(dose[k + 1])
            share = (limit - p[k]) / (p[k + 1] - p[k])
            found, note = float(np.exp(x0 + share * (x1 - x0))), "interpolated in log dose"
        return pd.Series({"dose": found, "bound": bound, "limit": limit, "note": note})


def _fmt(value: float) -> str:
    return f"{value:.3g}" if np.isfinite(value) else "nan"


def dose_escalation(
    fit: Any,
    doses: Sequence[float] | float = (1e6, 2e6, 3e6),
    risks: Mapping[str, Any] | None = None,
    *,
    n: int = 200,
    n_draws: int = 100,
    seed: int = 1,
    output: str = "CART",
    peaks: Sequence[str] | None = None,
    interval: tuple[float, float] = (0, 28),
    level: float = 0.9,
    covariates: Mapping[str, Any] | None = None,
    method: str | None = None,
    rtol: float = 1e-6,
    atol: float = 1e-9,
    max_steps: int = 100_000,
) -> DoseEscalation:
    """Per dose level: exposure, peaks of other outputs and outcome risks, with intervals.

    Args:
        fit: a :class:`cartpk.PopulationFit` (its uncertainty is drawn), or a
            :class:`Population` (no parameter uncertainty: only the exposure–response
            coefficients are drawn).
        doses: dose levels in CAR-T cells/kg.
        risks: name -> exposure–response fit (binary), or (fit, grade) for an ordinal fit,
            the risk being P(grade >= that grade), e.g. ``{"CRS>=2": (crs, 2),
            "response": orr}``. Each fit's ``exposure`` must be ``cmax`` or the AUC column
            of ``interval`` of ``output`` (the exposure it was fitted on).
        n: virtual patients per dose (the same patients at every dose and draw).
        n_draws: uncertainty draws (populations and exposure–response coefficients).
        seed: an integer >= 0, for the patients, the population draws and the
            exposure–response draws.
        output: the output whose cmax, tmax and AUC are reported (and risks are read on).
        peaks: outputs whose peak (cmax) and time to peak (tmax) over ``interval`` are
            reported; None: every other output of the model.
        interval: (start, end) days of the exposure window.
        level: coverage of the intervals, in (0, 1).
        covariates: how to draw covariates other than DOSE, as :func:`cartpk.scenarios`.
        method, rtol, atol, max_steps: solver settings, as in :func:`cartpk.exposure` (looser by
            default: a median over patients needs no more than six digits, and each
            draw and dose is a solve of every patient for each output).

    Returns:
        A :class:`DoseEscalation`; ``dose_for`` answers the dose-finding question.
    """
    dose_values = checked_doses(doses)
    n = checked_count(n)
    n_draws = checked_count(n_draws)
    if not (isinstance(seed, numbers.Integral) and not isinstance(seed, bool) and seed >= 0):
        raise ValueError(f"seed {seed!r}: expected an integer >= 0")
    if not (isinstance(level, numbers.Real) and 0 < level < 1):
        raise ValueError(f"level {level!r}: expected a number in (0, 1)")
    if isinstance(fit, Population):
        point, populations = fit, [fit] * n_draws
    elif hasattr(fit, "populations") and hasattr(fit, "population"):
        point = fit.population()
        populations = fit.populations(n_draws, seed)
    else:
        raise TypeError(f"dose_escalation: expected a PopulationFit or a Population, got {fit!r}")
    model = point.model
    if output not in model.outputs:
        raise ValueError(f"output {output!r}: not an output of {model.name} ({model.outputs})")
    peak_outputs = [o for o in model.outputs if o != output] if peaks is None else list(peaks)
    for name in peak_outputs:
        if name not in model.outputs:
            raise ValueError(f"peaks: {name!r} is not an output of {model.name}")
    auc_column = _interval(interval)[2]
    parsed = _risks(risks, ("cmax", auc_column))
    er_draws = {r.name: r.fit.sample_params(n_draws, seed) for r in parsed}
    solver = {"method": method, "rtol": rtol, "atol": atol, "max_steps": max_steps,
              "interval": interval}  # fmt: skip

    rows = []
    for k, population in enumerate([point, *populations]):
        cohort = Cohort(population, covariates, dose_values, n, int(seed))
        for d, dose in enumerate(dose_values):
            params, _, drawn = cohort.patients(d, 0, n)
            found = _exposures(model, params, {**drawn, "DOSE": np.full(n, dose)}, solver,
                               [output, *peak_outputs])  # fmt: skip
            solved = np.logical_and.reduce([f["status"].to_numpy() == 0 for f in found.values()])
            row = {"draw": k, "dose": float(dose), "failed": int(n - solved.sum())}
            main = found[output][solved]
            row[f"cmax_{output}"] = _median(main["cmax"])
            row[f"tmax_{output}"] = _median(main["tmax"])
            row[f"{auc_column}_{output}"] = _median(main[auc_column])
            for name in peak_outputs:
                row[f"peak_{name}"] = _median(found[name]["cmax"][solved])
                row[f"tpeak_{name}"] = _median(found[name]["tmax"][solved])
            for r in parsed:
                values = main[r.fit.exposure].to_numpy(float)
                coefficients = None if k == 0 else er_draws[r.name][k - 1]
                p = r.fit.probability(values, at_least=r.at_least, params=coefficients)
                row[f"P({r.name})"] = float(np.mean(p)) if p.size else math.nan
            rows.append(row)
    draws = pd.DataFrame(rows)
    _warn_failures(draws, n)
    quantities = [c for c in draws.columns if c not in ("draw", "dose", "failed")]
    tail = (1 - level) / 2
    table = []
    for dose in dose_values:
        here = draws[draws["dose"] == dose]
        for q in quantities:
            spread = here.loc[here["draw"] > 0, q].dropna().to_numpy(float)
            table.append(
                {
                    "dose": float(dose),
                    "quantity": q,
                    "estimate": float(here.loc[here["draw"] == 0, q].iloc[0]),
                    "low": float(np.quantile(spread, tail)) if spread.size else math.nan,
                    "high": float(np.quantile(spread, 1 - tail)) if spread.size else math.nan,
                }
            )
    if isinstance(fit, Population) and not parsed:
        warnings.warn(
            "dose_escalation: a Population carries no parameter uncertainty and no risks "
            "were given, so the intervals have zero width",
            UserWarning,
            stacklevel=2,
        )
    return DoseEscalation(
        dose_values, pd.DataFrame(table), draws, float(level), tuple(r.name for r in parsed)
    )


def _median(values: pd.Series) -> float:
    return float(np.median(values)) if len(values) else math.nan


def _warn_failures(draws: pd.DataFrame, n: int) -> None:
    """One warning naming how many patient-solves failed, at which doses and draws."""
    failed = draws[draws["failed"] > 0]
    if failed.empty:
        return
    where = ", ".join(f"{d:g}: {int(c)}" for d, c in failed.groupby("dose")["failed"].sum().items())
    warnings.warn(
        f"dose_escalation: {int(failed['failed'].sum())} of {n * len(draws)} patient-solves "
        f"could not be solved (by dose, {where}; in {failed['draw'].nunique()} of "
        f"{draws['draw'].nunique()} draws) and are left out of that draw's medians and "
        f"risks; DoseEscalation.draws['failed'] counts them",
        UserWarning,
        stacklevel=3,
    )


def _risks(risks: Mapping[str, Any] | None, exposures: tuple[str, ...]) -> list[_Risk]:
    out = []
    for name, spec in (risks or {}).items():
        er, at_least = spec if isinstance(spec, tuple) else (spec, None)
        if not (hasattr(er, "probability") and hasattr(er, "sample_params")):
            raise TypeError(f"risks[{name!r}]: expected an exposure_response result, got {er!r}")
        if er.exposure not in exposures:
            raise ValueError(
                f"risks[{name!r}]: fitted on exposure {er.exposure!r}; the escalation "
                f"reports {', '.join(exposures)}"
            )
        if er.kind == "ordinal" and at_least is None:
            raise ValueError(f"risks[{name!r}]: an ordinal fit needs (fit, grade)")
        if er.kind == "binary" and at_least is not None:
            raise ValueError(f"risks[{name!r}]: a binary fit takes no grade")
        out.append(_Risk(str(name), er, at_least))
    return out


def _exposures(
    model: Any,
    params: np.ndarray,
    covariates: dict[str, np.ndarray],
    solver: dict[str, Any],
    outputs: list[str],
) -> dict[str, pd.DataFrame]:
    frame = pd.DataFrame(params, columns=list(model.param_names))
    values = pd.DataFrame({name: covariates[name] for name in model.covariate_names})
    return {
        o: exposure(model, frame, output=o, covariates=values, on_failure="nan", **solver)
        for o in dict.fromkeys(outputs)
    }
