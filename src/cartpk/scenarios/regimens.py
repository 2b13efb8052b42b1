"""Dosing regimens compared on the same virtual patients: how many infusions, how far
apart, at what dose, and what exposure each infusion adds.

A :class:`Regimen` is a list of infusions (day, amount), the first at day 0 (the model's
time origin: its amount is the DOSE covariate, later ones enter through the model's
``[dosing]`` link, see models/README.md). Amounts are in the model's dose unit (CAR-T
cells/kg for the CK models; see the model file). :func:`compare_regimens` draws the
patients once (the same random effects and covariates for every regimen, as
:func:`cartpk.scenarios.scenarios` does for doses) and reports per regimen:

* per infusion k, over its window [t_k, t_k + tau_k): cmax, tmax and AUC of the output,
  located on the ODE solution (:func:`cartpk.exposure`); tau_k is the time to the next
  infusion, and for the last one the regimen's last interval (``window`` days for a single
  infusion), so that the windows of a regular regimen have equal length;
* the cumulative AUC over [0, horizon], horizon the same for every regimen (by default the
  latest end of any regimen's last window);
* accumulation: the last infusion's cmax and AUC over the first's, per patient;
* with a ``level``: the days the output spends at or above it over [0, horizon] and the
  share of patients who ever reach it.

Times in days, amounts in the model's dose unit, exposure in the output's unit (cmax) and
unit·day (AUC).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from ..dose_units import check_dose_values
from ..exposure import exposure
from ..solve import simulate
from .checks import checked_count
from .population import Cohort, as_population, check_dose_link

#: Step (days) of the grid on which the time above a level is measured; crossings are
#: interpolated log-linearly between grid points (exact for an exponential piece).
LEVEL_STEP = 0.05
#: Days before an infusion at which the output is taken as the level just before it.
JUST_BEFORE = 1e-9
#: Window (days) after a single infusion when the regimen has no interval to copy.
WINDOW = 28.0


@dataclass(frozen=True)
class Regimen:
    """Infusions at ``times`` (days, the first 0, increasing) of ``amounts`` (> 0, the
    model's dose unit). ``label`` names the regimen in tables (default: built from the
    infusions, e.g. ``3 x 3.3e+07 every 7 d``)."""

    times: tuple[float, ...]
    amounts: tuple[float, ...]
    label: str = field(default="")

    def __post_init__(self) -> None:
        times = tuple(_number(t, "infusion day") for t in self.times)
        amounts = tuple(_number(a, "amount") for a in self.amounts)
        if not times or len(times) != len(amounts):
            raise ValueError(
                f"regimen: {len(times)} infusion days and {len(amounts)} amounts; expected "
                "one amount per day, at least one infusion"
            )
        if times[0] != 0:
            raise ValueError(
                f"regimen: the first infusion is on day {times[0]:g}; it must be day 0 (time "
                "is days since the first infusion)"
            )
        if any(b <= a for a, b in zip(times, times[1:], strict=False)):
            raise ValueError(f"regimen: infusion days {list(times)} must increase")
        if any(a <= 0 for a in amounts):
            raise ValueError(f"regimen: amounts {list(amounts)} must be > 0")
        object.__setattr__(self, "times", times)
        object.__setattr__(self, "amounts", amounts)
        if not self.label:
            object.__setattr__(self, "label", _describe(times, amounts))

    @classmethod
    def every(cls, interval: float, n: int, amount: float, label: str = "") -> Regimen:
        """``n`` infusions of ``amount`` every ``interval`` days from day 0."""
        interval = _number(interval, "interval")
        if not (isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 1):
            raise ValueError(f"regimen: n {n!r}: expected a whole number of infusions >= 1")
        if n > 1 and interval <= 0:
            raise ValueError(f"regimen: interval {interval:g}: expected > 0 days")
        return cls(tuple(k * interval for k in range(n)), (amount,) * n, label)

    @classmethod
    def parse(cls, text: str) -> Regimen:
        """A regimen from text, as the command line takes it:

        * ``"1e8"``: one infusion on day 0;
        * ``"3.3e7x3/7"``: 3 infusions of 3.3e7 every 7 days;
        * ``"0:5e7,14:5e7"``: (day:amount) pairs.
        """
        source = str(text).strip()
        repeated = re.fullmatch(r"([^x/]+)x(\d+)/([^x/]+)", source)
        try:
            if repeated:
                every = (float(repeated[3]), int(repeated[2]), float(repeated[1]))
            else:
                days, amounts = _read(source)
        except ValueError:
            raise ValueError(
                f"regimen {source!r}: expected an amount ('1e8'), AMOUNTxN/DAYS ('3.3e7x3/7': "
                "3 infusions every 7 days) or day:amount pairs ('0:5e7,14:5e7')"
            ) from None
        return cls.every(*every) if repeated else cls(days, amounts)

    @property
    def total(self) -> float:
        """Total amount infused (the model's dose unit)."""
        return float(sum(self.amounts))

    def windows(self, window: float = WINDOW) -> list[tuple[float, float]]:
        """Each infusion's window [t_k, t_k + tau_k) in days (see the module notes)."""
        times = list(self.times)
        last = times[-1] - times[-2] if len(times) > 1 else window
        ends = times[1:] + [times[-1] + last]
        return list(zip(times, ends, strict=True))

    def later_doses(self) -> list[tuple[float, float]]:
        """(day, amount) of the infusions after day 0, as :func:`cartpk.simulate` takes them."""
        return list(zip(self.times[1:], self.amounts[1:], strict=True))


def _read(source: str) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Infusion days and amounts of day:amount pairs or of one amount (ValueError if the
    text does not read)."""
    if ":" in source:
        pairs = [part.split(":") for part in source.split(",") if part.strip()]
        if any(len(pair) != 2 for pair in pairs):
            raise ValueError(source)
        return tuple(float(d) for d, _ in pairs), tuple(float(a) for _, a in pairs)
    return (0.0,), (float(source),)


def _number(value: Any, what: str) -> float:
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"regimen: {what} {value!r} is not a number")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"regimen: {what} {value!r} is not finite")
    return value


def _describe(times: tuple[float, ...], amounts: tuple[float, ...]) -> str:
    steps = np.diff(times)
    if len(times) == 1:
        return f"1 x {amounts[0]:.3g}"
    if len(set(amounts)) == 1 and np.allclose(steps, steps[0]):
        return f"{len(times)} x {amounts[0]:.3g} every {steps[0]:g} d"
    return ", ".join(f"d{t:g}: {a:.3g}" for t, a in zip(times, amounts, strict=True))


@dataclass(frozen=True)
class RegimenComparison:
    """The result of :func:`compare_regimens`.

    Attributes:
        infusions: one row per patient, regimen and infusion: ID, regimen, infusion
            (1-based), start and end of its window (days), cmax, tmax (days since the first
            infusion) and auc (output unit·day).
        patients: one row per patient and regimen: auc_cumulative over [0, horizon],
            accumulation_cmax and accumulation_auc (last infusion over first; 1 for a
            single infusion), with a level days_above and reached, then the patient's
            parameters (natural scale) and covariates.
        output, horizon, level: as asked.
    """

    infusions: pd.DataFrame
    patients: pd.DataFrame
    regimens: tuple[Regimen, ...]
    output: str
    horizon: float
    level: float | None

    def summary(self) -> pd.DataFrame:
        """Per regimen: infusions, total amount, medians over patients of the first and last
        infusion's cmax and AUC, the cumulative AUC and the accumulation ratios, and with
        a level the median days above it and the share of patients reaching it."""
        rows = []
        for regimen in self.regimens:
            own = self.infusions[self.infusions["regimen"] == regimen.label]
            first = own[own["infusion"] == 1]
            last = own[own["infusion"] == len(regimen.times)]
            per = self.patients[self.patients["regimen"] == regimen.label]
            row = {
                "regimen": regimen.label,
                "infusions": len(regimen.times),
                "total": regimen.total,
                "cmax_first": float(first["cmax"].median()),
                "cmax_last": float(last["cmax"].median()),
                "auc_first": float(first["auc"].median()),
                "auc_last": float(last["auc"].median()),
                f"auc_0_{self.horizon:g}": float(per["auc_cumulative"].median()),
                "accumulation_cmax": float(per["accumulation_cmax"].median()),
                "accumulation_auc": float(per["accumulation_auc"].median()),
            }
            if self.level is not None:
                row["days_above"] = float(per["days_above"].median())
                row["reached"] = float(per["reached"].mean())
            rows.append(row)
        return pd.DataFrame(rows)


def compare_regimens(
    source: Any,
    regimens: Sequence[Regimen | str],
    n: int = 500,
    seed: int = 1,
    *,
    output: str | None = None,
    level: float | None = None,
    horizon: float | None = None,
    window: float = WINDOW,
    rtol: float = 1e-8,
    atol: float = 1e-10,
) -> RegimenComparison:
    """The same ``n`` virtual patients under each regimen (see the module notes).

    Args:
        source: as :func:`cartpk.scenarios.scenarios` takes it (a Population, a population
            fit, a Model or a model name / path).
        regimens: :class:`Regimen` s or their text (:meth:`Regimen.parse`); labels distinct.
        n, seed: patients and the seed of their draw (:class:`Cohort`'s blocks: the same
            patients for every regimen and any ``n`` >= m for the first m).
        output: the model output whose exposure is reported (None: the model's first).
        level: a level of ``output`` (its unit) for the days at or above it; None: none.
        horizon: end (days) of the cumulative AUC and of the time above the level; None:
            the latest end of any regimen's last window.
        window: days after a single infusion (the window of the last infusion when the
            regimen has no interval to copy).
        rtol, atol: solver tolerances, as in :func:`cartpk.exposure`.

    Raises:
        ValueError naming the bad input; cartpk.SolverError if a patient cannot be solved.
    """
    population = as_population(source)
    model = population.model
    check_dose_link(population)
    if model.dose_state is None and any(len(_as_regimen(r).times) > 1 for r in regimens):
        raise ValueError(
            f"model {model.name} has no [dosing] section: it takes only the infusion at day 0"
        )
    chosen = tuple(_as_regimen(r) for r in regimens)
    if not chosen:
        raise ValueError("regimens: give at least one regimen")
    check_dose_values(np.array([a for r in chosen for a in r.amounts]), model)
    labels = [r.label for r in chosen]
    if len(set(labels)) != len(labels):
        raise ValueError(f"regimens: labels {labels} must be distinct")
    output = model.outputs[0] if output is None else output
    if output not in model.outputs:
        raise ValueError(f"output {output!r}: the model's outputs are {', '.join(model.outputs)}")
    n = checked_count(n)
    if not (isinstance(seed, numbers.Integral) and not isinstance(seed, bool) and seed >= 0):
        raise ValueError(f"seed {seed!r}: expected an integer >= 0")
    if level is not None and not (_number(level, "level") > 0):
        raise ValueError(f"level {level!r}: expected a positive level of {output}")
    window = _number(window, "window")
    ends = [r.windows(window)[-1][1] for r in chosen]
    horizon = max(ends) if horizon is None else _number(horizon, "horizon")
    if not horizon > 0:
        raise ValueError(f"horizon {horizon:g}: expected > 0 days")

    infusions, patients = [], []
    ids = np.arange(1, n + 1)
    for regimen in chosen:
        cohort = Cohort(population, None, np.array([regimen.amounts[0]]), n, int(seed))
        params, _, drawn = cohort.patients(0, 0, n)
        table = pd.DataFrame(params, columns=list(model.param_names)).assign(
            ID=ids, DOSE=regimen.amounts[0], **drawn
        )
        doses = regimen.later_doses() or None
        per_infusion = []
        for k, (start, end) in enumerate(regimen.windows(window), 1):
            # half-open: an output time at an infusion sees the level just after it
            stop = end - JUST_BEFORE if k < len(regimen.times) else end
            found = _exposure(model, table, doses, output, (start, stop), rtol, atol)
            per_infusion.append(found)
            infusions.append(
                pd.DataFrame(
                    {
                        "ID": ids,
                        "regimen": regimen.label,
                        "infusion": k,
                        "start": start,
                        "end": end,
                        "cmax": found["cmax"],
                        "tmax": found["tmax"],
                        "auc": found["auc"],
                    }
                )  # fmt: skip
            )
        cumulative = _exposure(model, table, doses, output, (0.0, horizon), rtol, atol)
        first, last = per_infusion[0], per_infusion[-1]
        row = pd.DataFrame(
            {
                "ID": ids,
                "regimen": regimen.label,
                "auc_cumulative": cumulative["auc"],
                "accumulation_cmax": last["cmax"] / first["cmax"],
                "accumulation_auc": last["auc"] / first["auc"],
            }
        )
        row = pd.concat([row, table.drop(columns="ID")], axis=1)
        if level is not None:
            row["days_above"], row["reached"] = _time_above(
                model, table, doses, output, float(level), horizon, rtol, atol
            )
        patients.append(row)
    return RegimenComparison(
        pd.concat(infusions, ignore_index=True),
        pd.concat(patients, ignore_index=True),
        chosen,
        output,
        float(horizon),
        None if level is None else float(level),
    )


def _as_regimen(regimen: Regimen | str) -> Regimen:
    if isinstance(regimen, Regimen):
        return regimen
    if isinstance(regimen, str):
        return Regimen.parse(regimen)
    raise ValueError(f"regimens: expected Regimen objects or their text, got {regimen!r}")


def _exposure(model, table, doses, output, interval, rtol, atol) -> dict:
    found = exposure(model, table, output=output, interval=interval, doses=doses, rtol=rtol,
                     atol=atol)  # fmt: skip
    auc = [c for c in found.columns if c.startswith("auc_")][0]
    return {"cmax": found["cmax"].to_numpy(), "tmax": found["tmax"].to_numpy(),
            "auc": found[auc].to_numpy()}  # fmt: skip


def _time_above(model, table, doses, output, level, horizon, rtol, atol):
    """Days at or above ``level`` over [0, horizon] per patient, and whether it was reached:
    on a LEVEL_STEP grid, plus each infusion day and a point JUST before it (the output
    jumps there), each crossing interpolated log-linearly between grid points."""
    grid = np.arange(0.0, horizon + LEVEL_STEP / 2, LEVEL_STEP)
    jumps = [t for t, _ in doses or [] if t < horizon]
    before = [t - JUST_BEFORE for t in jumps]
    grid = np.union1d(grid[grid <= horizon], [*jumps, *before, horizon])
    sim = simulate(model, table, grid, doses=doses, rtol=rtol, atol=atol)
    values = sim.pivot(index="ID", columns="TIME", values=output).to_numpy()
    a, b = values[:, :-1], values[:, 1:]
    dt = np.diff(grid)
    above_a, above_b = a >= level, b >= level
    with np.errstate(divide="ignore", invalid="ignore"):
        share = np.log(level / a) / np.log(b / a)  # where the log-linear piece hits level
    share = np.clip(np.nan_to_num(share, nan=0.5), 0.0, 1.0)
    piece = np.where(above_a & above_b, dt, 0.0)
    piece = piece + np.where(~above_a & above_b, (1 - share) * dt, 0.0)
    piece = piece + np.where(above_a & ~above_b, share * dt, 0.0)
    return piece.sum(axis=1), (values >= level).any(axis=1)
