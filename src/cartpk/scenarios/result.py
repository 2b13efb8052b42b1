"""The result of a dose scenario run: per-patient table, summaries, bands and figures."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from os import PathLike
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd

from ..crossings import solve_at
from ..exposure import _output_index
from ..persistence.km import kaplan_meier
from ..persistence.predicted import fraction_detectable, loss_times, predicted_table
from ..solve import STATUS_REASONS
from .checks import checked_band_times
from .chunk import LOCAL_CHUNK, ChunkSettings
from .population import Cohort, Population
from .response import Response

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["BAND_PATIENTS", "ScenarioResult"]

#: Patients per dose whose curves make the prediction bands (the first ones, re-drawn).
BAND_PATIENTS = 10_000


@dataclass(frozen=True, eq=False)
class ScenarioResult:
    """Virtual patients at each dose: the per-patient table, summaries, bands and plots.

    ``patients``: one row per dose and patient (the same IDs at every dose): DOSE
    (cells/kg), ID, the individual parameters (natural scale; a parameter whose name is a
    result column, ck_stein's tmax, is reported as ``<name>_param``), the covariates, cmax
    (output unit), tmax (day), ``auc_<start>_<end>`` (unit·day), the response columns
    ``pr_<by>``, ``cr_<by>`` (nullable booleans, NA if the patient could not be solved or,
    for CR, has a normal baseline) and ``time_to_pr``, ``time_to_cr`` (days; NaN if not
    reached within the simulated window), and ``status`` (0 solved; 1 step budget
    exceeded, 2 step size underflow, 3 non-finite state: that patient's results are NaN)
    and ``solver`` (the method used: without an explicit ``method``, patients that
    exhaust the step budget of Dormand-Prince are solved again with Rodas).

    ``failed``: the rows of ``patients`` that could not be solved (every column), kept in
    memory also when the table was streamed to a file. ``path``: that Parquet file, or None.
    """

    population: Population
    doses: np.ndarray
    output: str
    auc_column: str
    response: Response | None
    _settings: ChunkSettings = field(repr=False)
    _cohort: Cohort = field(repr=False)
    _kept: dict[str, np.ndarray] = field(repr=False)
    _table: pd.DataFrame | None = field(repr=False)
    failed: pd.DataFrame = field(repr=False)
    path: Path | None = None

    @property
    def n(self) -> int:
        """Virtual patients per dose."""
        return self._cohort.n

    @property
    def patients(self) -> pd.DataFrame:
        """The per-patient table (read back from :attr:`path` when it was streamed there:
        that loads every row)."""
        if self._table is not None:
            return self._table
        return pd.read_parquet(self.path)

    def _dose_rows(self, d: int) -> slice:
        return slice(d * self.n, (d + 1) * self.n)

    @property
    def times(self) -> np.ndarray:
        """The scenario's output grid (days)."""
        return self._settings.times

    @property
    def metrics(self) -> tuple[str, str, str]:
        return ("cmax", "tmax", self.auc_column)

    def summary(self) -> pd.DataFrame:
        """Per dose: n, n_failed, median/p5/p95 of cmax, tmax, AUC; P(PR), P(CR) by day.

        Quantiles are over the solved patients; response probabilities over the solved
        patients (for CR, those with an abnormal baseline), with ``n_cr_evaluable``.
        """
        rows = []
        for d, dose in enumerate(self.doses):
            kept = {key: values[self._dose_rows(d)] for key, values in self._kept.items()}
            solved = kept["status"] == 0
            row = {"DOSE": dose, "n": self.n, "n_failed": int(self.n - solved.sum())}
            for metric, key in zip(self.metrics, ("cmax", "tmax", "auc"), strict=True):
                values = kept[key][solved]
                for label, q in (("median", 50), ("p5", 5), ("p95", 95)):
                    row[f"{metric}_{label}"] = np.percentile(values, q) if values.size else np.nan
            if self.response is not None:
                row.update(self._response_summary(kept["pr"], kept["cr"]))
            rows.append(row)
        return pd.DataFrame(rows)

    def failures(self) -> pd.DataFrame:
        """Patient-doses that could not be solved, counted per dose and reason: DOSE,
        status, reason, solver (the last method tried) and n. Empty when all were solved."""
        counts = self.failed.groupby(["DOSE", "status", "solver"], sort=True).size()
        frame = counts.rename("n").reset_index()
        frame.insert(2, "reason", [STATUS_REASONS[int(code)][0] for code in frame["status"]])
        return frame

    @property
    def notes(self) -> list[str]:
        """What a reader of the summary must know: patients that could not be solved."""
        failures = self.failures()
        if failures.empty:
            return []
        total = int(failures["n"].sum())
        reasons = failures.groupby("reason")["n"].sum()
        why = "; ".join(f"{reason}: {count}" for reason, count in reasons.items())
        return [
            f"{total} of {self.n * self.doses.size} patient-doses could not be solved ({why}); "
            "their exposure is NaN in patients, they are counted in n_failed and left out "
            "of the quantiles and response probabilities"
        ]

    def _response_summary(self, pr: np.ndarray, cr: np.ndarray) -> dict[str, float]:
        suffix = self.response.suffix
        pr, cr = pr[pr >= 0], cr[cr >= 0]  # -1: not solved or (CR) not evaluable
        return {
            f"p_pr_{suffix}": float(pr.mean()) if len(pr) else np.nan,
            f"p_cr_{suffix}": float(cr.mean()) if len(cr) else np.nan,
            "n_cr_evaluable": len(cr),
        }

    def bands(
        self, output: str | None = None, times: Sequence[float] | np.ndarray | None = None
    ) -> pd.DataFrame:
        """Prediction bands of an output per dose and time: median, p5, p95 (and n solved).

        Args:
            output: a model output (default: the exposure output, e.g. CART).
            times: days (default: the scenario's ``times`` grid).

        Returns:
            A DataFrame with DOSE, TIME (days), median, p5, p95 (output unit) and n (the
            solved patients whose curves were used: all of them up to BAND_PATIENTS per
            dose, else the solved ones among the first BAND_PATIENTS, re-drawn from the
            seed).
        """
        output = output or self.output
        k = _output_index(self.population.model, output)
        grid = self.times if times is None else checked_band_times(times)
        frames = []
        for d, dose in enumerate(self.doses):
            curves = [
                self._curves(d, lo, min(lo + LOCAL_CHUNK, self.n, BAND_PATIENTS), grid, k)
                for lo in range(0, min(self.n, BAND_PATIENTS), LOCAL_CHUNK)
            ]
            frames.append(_quantiles(dose, grid, np.vstack(curves)))
        return pd.concat(frames, ignore_index=True)

    def _curves(self, d: int, lo: int, hi: int, grid: np.ndarray, k: int) -> np.ndarray:
        """Output k at ``grid`` of the solved patients lo..hi-1 at dose d, each with the
        solver it got in the run."""
        kernels = self.population.model.kernels
        rows = slice(d * self.n + lo, d * self.n + hi)
        methods, status = self._kept["method"][rows], self._kept["status"][rows]
        packed = self._cohort.patients(d, lo, hi)[1]
        curves = np.full((hi - lo, grid.size), np.nan)
        for code in np.unique(methods[status == 0]):
            chosen = np.flatnonzero((methods == code) & (status == 0))
            settings = replace(self._settings, method=int(code))
            offsets = np.arange(chosen.size + 1, dtype=np.int64) * grid.size
            flat = np.tile(grid, chosen.size)
            values, _ = solve_at(kernels, packed[chosen], flat, offsets, settings.solver)
            curves[chosen] = values[:, k].reshape(chosen.size, grid.size)
        return curves[~np.isnan(curves).any(axis=1)]

    def persistence_table(
        self, lloq: float, horizon: float = 1825.0, output: str | None = None
    ) -> pd.DataFrame:
        """Predicted persistence of every patient at every dose: DOSE, ID, persistence (day
        the output falls below ``lloq`` for good, located on the ODE solution; the horizon
        when still above it there), event (False: beyond the horizon), beyond_horizon,
        status (NaN persistence for patients that could not be solved). ``lloq`` in the
        output's unit, ``horizon`` in days (default 5 years, a choice of cartpk)."""
        output = output or self.output
        frames = []
        for d, dose in enumerate(self.doses):
            for lo in range(0, self.n, LOCAL_CHUNK):
                hi = min(lo + LOCAL_CHUNK, self.n)
                packed = self._cohort.patients(d, lo, hi)[1]
                found = loss_times(
                    self.population.model,
                    packed,
                    lloq,
                    output,
                    horizon,
                    solver=self._settings.solver,
                )
                table = predicted_table(found, np.arange(lo + 1, hi + 1))
                table.insert(0, "DOSE", dose)
                frames.append(table)
        return pd.concat(frames, ignore_index=True)

    def persistence(
        self,
        lloq: float,
        landmarks: Sequence[float] = (180, 365, 730),
        horizon: float = 1825.0,
        output: str | None = None,
    ) -> pd.DataFrame:
        """Predicted persistence per dose: n, n_failed, the median loss time (days; NaN
        when more than half are beyond the horizon), the fraction beyond the horizon and
        the fraction still detectable (at or above ``lloq``) at each landmark day
        (``detectable_<day>``). Over the solved patients; see :meth:`persistence_table`."""
        table = self.persistence_table(lloq, horizon, output)
        rows = []
        for dose, part in table.groupby("DOSE", sort=False):
            solved = part[part["status"] == 0]
            row = {"DOSE": dose, "n": len(part), "n_failed": int(len(part) - len(solved))}
            curve = kaplan_meier(solved, landmarks=()).summary if len(solved) else None
            row["median_persistence"] = (
                float(curve["median"].iloc[0]) if curve is not None else np.nan
            )
            row["beyond_horizon"] = float(solved["beyond_horizon"].mean())
            for day, value in fraction_detectable(solved, landmarks, horizon).items():
                row[f"detectable_{day:g}"] = value
            rows.append(row)
        return pd.DataFrame(rows)

    def plot_exposure(self, path: str | PathLike[str] | None = None) -> Figure:
        """Distribution of cmax, tmax and AUC per dose (box 25-75 %, whiskers 5-95 %)."""
        from ..plots.scenarios import plot_exposure

        unit = self.population.model.output_units.get(self.output, "")
        doses = np.repeat(self.doses, self.n)
        frame = pd.DataFrame({"DOSE": doses, "status": self._kept["status"]})
        for metric, key in zip(self.metrics, ("cmax", "tmax", "auc"), strict=True):
            frame[metric] = self._kept[key]
        return plot_exposure(frame, self.metrics, self.output, unit, path, self._figure_note())

    def _figure_note(self) -> str:
        """For figure titles: how many patient-doses were not solved and why."""
        if self.failed.empty:
            return ""
        reasons = self.failures().groupby("reason")["n"].sum()
        why = ", ".join(f"{reason}: {count}" for reason, count in reasons.items())
        return f"; {len(self.failed)} patient-doses not solved ({why}), left out"

    def plot_bands(
        self, path: str | PathLike[str] | None = None, times: np.ndarray | None = None
    ) -> Figure:
        """Median and 5-95 % bands per dose over time: the exposure output (log axis) and,
        with response criteria, the biomarker (with its upper limit of normal)."""
        from ..plots.scenarios import plot_bands

        model = self.population.model
        panels = [(self.output, self.bands(self.output, times), True, None)]
        if self.response is not None:
            name = self.response.output
            panels.append((name, self.bands(name, times), False, self.response.normal))
        return plot_bands(panels, model.output_units, path, self._figure_note())

    def to_csv(self, path: str | PathLike[str]) -> Path:
        """Write the per-patient table to a CSV file; returns its path (a streamed table is
        copied from its Parquet file one row group at a time)."""
        path = Path(path)
        if self._table is not None:
            self._table.to_csv(path, index=False)
            return path
        import pyarrow.parquet as pq

        source = pq.ParquetFile(self.path)
        for k in range(source.num_row_groups):
            part = source.read_row_group(k).to_pandas()
            part.to_csv(path, index=False, header=k == 0, mode="w" if k == 0 else "a")
        return path


def _quantiles(dose: float, grid: np.ndarray, curves: np.ndarray) -> pd.DataFrame:
    if curves.shape[0] == 0:
        q = np.full((3, grid.size), np.nan)
    else:
        q = np.percentile(curves, [50, 5, 95], axis=0)
    return pd.DataFrame(
        {
            "DOSE": dose,
            "TIME": grid,
            "median": q[0],
            "p5": q[1],
            "p95": q[2],
            "n": curves.shape[0],
        }
    )
