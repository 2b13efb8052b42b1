"""Running dose scenarios: the tasks, here or on dask, and the per-patient table.

Work is split into tasks of one dose and a chunk of patients that run in the calling
process or as dask tasks on a cluster (a bounded number in flight); every patient is drawn
from its block (:class:`.population.Cohort`) and solved on its own (:mod:`.chunk`), so the
numbers do not depend on the chunking, the scheduler or the number of numba threads. With
``write=`` each task's per-patient rows are streamed to a Parquet file as they arrive and
only the exposure metrics stay in memory, so a million patients need no more memory than a
thousand (beyond 28 bytes per patient-dose).

A task on a dask worker gets the model's compiled kernels through :class:`_KernelSource`
only (by the model's name and code); everything else takes the kernels it is handed.

Times are in days, doses in CAR-T cells/kg (the model's ``DOSE`` covariate), exposure in
the output's unit (cmax) and unit·day (AUC).
"""

from __future__ import annotations

import copy
import numbers
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from itertools import islice
from os import PathLike, cpu_count
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from ..data import Dataset
from ..dose_units import check_dose_values
from ..exposure import _interval, _output_index
from ..kernels import ModelKernels
from ..model import Model, compiled_kernels
from ..solve import METHODS, check_tolerances, method_code
from .checks import checked_count, checked_doses, checked_times
from .chunk import LOCAL_CHUNK, ChunkSettings, solve_chunk
from .population import Cohort, Population, as_population, check_dose_link, subject_values
from .response import Response, resolve_response, response_columns, response_flags
from .result import ScenarioResult

__all__ = ["scenarios"]

#: Patients per dask task when the caller gives no chunk size.
DASK_CHUNK = 1_000
#: Dask tasks in flight per worker thread (results are written in task order).
DASK_WINDOW = 2


# --- the chunk worker (runs locally or as a dask task) --------------------------------------


@dataclass(frozen=True)
class _KernelSource:
    """How a task gets the model's compiled kernels, here or in a dask worker process: by
    the model's name and code (picklable, where a Model that has loaded its kernels holds
    a module, which is not). The kernels come from the same content-hashed disk cache as
    ``Model.kernels``. The one place a run loads kernels; the functions of :mod:`.chunk`
    take the ``ModelKernels`` it returns."""

    name: str
    code: str

    def load(self) -> ModelKernels:
        return compiled_kernels(self.name, self.code)


def _run_chunk(source: _KernelSource, p: np.ndarray, s: ChunkSettings) -> dict[str, np.ndarray]:
    """Exposure, status and response times of the patients ``p`` (rows of Model.pack).

    Stiff patients need nothing here: with the default method ``auto`` the kernels switch
    a patient to Rodas, or solve it again with Rodas, themselves.
    """
    return solve_chunk(source.load(), p, s)


@dataclass(frozen=True, eq=False)
class _Job:
    """Everything a task needs to draw and solve its patients: picklable (the model holds
    no loaded kernels when it goes to dask)."""

    cohort: Cohort
    settings: ChunkSettings
    source: _KernelSource
    auc_column: str
    criteria: Response | None


#: Per patient-dose values a result keeps in memory (the rest goes to the table or file).
_KEPT = {
    "cmax": np.float64,
    "tmax": np.float64,
    "auc": np.float64,
    "status": np.int8,
    "method": np.int8,
    "pr": np.int8,
    "cr": np.int8,
}


def _run_task(job: _Job, d: int, lo: int, hi: int) -> tuple[dict[str, np.ndarray], pd.DataFrame]:
    """Patients lo..hi-1 at dose number d: the kept values and their rows of the table."""
    params, packed, drawn = job.cohort.patients(d, lo, hi)
    results = _run_chunk(job.source, packed, job.settings)
    model = job.cohort.population.model
    ids = np.arange(lo + 1, hi + 1)
    table = _patients_table(
        model, job.cohort.doses[d], ids, params, drawn, results, job.auc_column, job.criteria
    )
    kept = {key: results[key] for key in ("cmax", "tmax", "auc", "status", "method")}
    kept["pr"] = kept["cr"] = np.full(hi - lo, -1)  # -1: not available
    if job.criteria is not None:
        kept["pr"], kept["cr"] = response_flags(results, job.criteria)
    return kept, table


# --- scenarios -----------------------------------------------------------------------------


def scenarios(
    source: Any,
    doses: Sequence[float] | float = (1e6, 2e6, 3e6),
    n: int = 1000,
    covariates: Mapping[str, Any] | Dataset | pd.DataFrame | None = None,
    times: Sequence[float] | np.ndarray | None = None,
    seed: int = 1,
    *,
    omega: Mapping[str, float] | None = None,
    output: str = "CART",
    interval: tuple[float, float] = (0, 28),
    response: Response | Mapping[str, float] | bool | None = None,
    method: str | None = None,
    rtol: float = 1e-8,
    atol: float = 1e-10,
    max_steps: int = 100_000,
    chunk_size: int | None = None,
    scheduler: Any = None,
    write: str | PathLike[str] | None = None,
) -> ScenarioResult:
    """Simulate the same ``n`` virtual patients at each dose.

    Args:
        source: a :class:`Population`, an object with a ``population()`` method (a
            ``PopulationFit``), a Model, or a built-in model name / model file path (typical
            values and omegas from the file, see :meth:`Population.from_model`).
        doses: CAR-T doses in cells/kg (> 0, distinct); each sets every patient's DOSE
            covariate, so the model's dose link and any DOSE covariate effect apply.
        n: number of virtual patients (the same patients at every dose).
        covariates: how to draw covariates other than DOSE: a mapping name -> a frozen
            ``scipy.stats`` distribution, a callable ``(rng, size) -> array`` or a constant;
            or a Dataset / DataFrame (a long dataset with ID and TIME, or one row per
            subject) whose subjects' covariate rows are resampled with replacement. Model
            covariates not given take their reference value; covariates used by a
            covariate effect must be given.
        times: output grid in days (sorted, from 0) on which biomarker crossings are
            bracketed and that :meth:`ScenarioResult.bands` uses by default; None:
            0-90 days every 0.25 day. Crossings are then located on the ODE solution.
        seed: an integer >= 0. Patients are drawn in blocks of RANDOM_BLOCK (1000), block k
            from ``default_rng(SeedSequence(seed, spawn_key=(k,)))``, random effects first,
            then covariates: the same seed gives the same patients at any chunk size,
            thread count or scheduler, and the first m patients of a run are the same for
            any n >= m.
        omega: between-subject SDs replacing the model file's (model sources only).
        output: the output whose cmax, tmax and AUC are reported.
        interval: (start, end) days of the exposure window; AUC column ``auc_<start>_<end>``.
        response: biomarker response criteria (:class:`Response` or a mapping of its
            fields); None: the VEGF defaults when the model has a VEGF output; False: none.
        method, rtol, atol, max_steps: solver settings, as in :func:`cartpk.exposure`.
            The default ``auto`` (the built-in models' solver) switches a stiff patient
            (very high CAR-T levels driving a fast kill) to Rodas; the ``solver`` column
            gives the method asked for.
        chunk_size: patients per chunk (results do not depend on it).
        scheduler: None (this process), ``"dask"`` (``dask.compute`` on the current dask
            scheduler, e.g. a running ``dask.distributed.Client``) or a
            ``dask.distributed.Client``: chunks run as ``dask.delayed`` tasks, with
            identical results. Needs the ``cartpk[dask]`` extra. At most DASK_WINDOW
            tasks per worker thread are in flight, and their results are taken in order.
        write: a Parquet file (``.parquet``) to stream the per-patient table to, chunk by
            chunk, instead of keeping it in memory (needs pyarrow, the ``cartpk[parquet]``
            extra). The file has the rows and columns of ``patients`` in the same order;
            it is written as ``<name>.partial`` and renamed when the run is complete. The
            result then keeps, per patient-dose, cmax, tmax and AUC (float64), status,
            solver and the two response flags (int8): 28 bytes, plus the rows of patients
            that could not be solved; ``summary``, ``failures``, ``bands`` and the figures
            work from those (``patients`` reads the file back).

    Returns:
        A :class:`ScenarioResult`.

    Raises:
        ValueError / ModelError / DataError naming the bad input (a model without a dose
        link, a negative dose, n < 1, an unknown parameter in omega, ...).
    """
    population = as_population(source, omega)
    model = population.model
    dose_values = checked_doses(doses)
    check_dose_values(dose_values, model)
    check_dose_link(population)
    n = checked_count(n)
    if not (isinstance(seed, numbers.Integral) and not isinstance(seed, bool) and seed >= 0):
        raise ValueError(f"seed {seed!r}: expected an integer >= 0")
    grid = checked_times(times)
    criteria = resolve_response(model, response, grid)
    check_tolerances(rtol, atol, max_steps)
    settings = _settings(model, output, interval, grid, criteria, method, rtol, atol, max_steps)
    if isinstance(covariates, Dataset | pd.DataFrame):
        covariates = subject_values(covariates, population.covariates_needed)
    auc_column = _interval(interval)[2]
    source = _KernelSource(model.name, model.source_code)
    cohort = Cohort(population, covariates, dose_values, n, int(seed))
    job = _Job(cohort, settings, source, auc_column, criteria)
    cohort.draw(0, 1)  # bad covariate specifications fail here, before any task
    path = _parquet_path(write)
    sink = _Sink(n, dose_values.size, path)
    try:
        _run(job, chunk_size, scheduler, sink)
    except BaseException:
        sink.close(ok=False)
        raise
    sink.close(ok=True)
    table = sink.table()
    columns = table.columns if table is not None else sink.schema.names
    return ScenarioResult(
        population,
        dose_values,
        output,
        auc_column,
        criteria,
        settings,
        cohort,
        sink.kept,
        table,
        sink.failures(pd.Index(columns)),
        path,
    )


def _parquet_path(write: Any) -> Path | None:
    if write is None:
        return None
    if not isinstance(write, str | PathLike):
        raise ValueError(f"write: expected a file path (.parquet), got {type(write).__name__}")
    path = Path(write)
    if path.suffix.lower() != ".parquet":
        raise ValueError(f"write: {str(path)!r}; the per-patient file is Parquet (.parquet)")
    if not path.parent.is_dir():
        raise ValueError(f"write: folder {str(path.parent)!r} does not exist")
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise ImportError(
            "write: pyarrow is not installed; install the extra with "
            "`pip install 'cartpk[parquet]'`"
        ) from None
    return path


def _settings(
    model: Model,
    output: str,
    interval: Any,
    grid: np.ndarray,
    criteria: Response | None,
    method: str | None,
    rtol: float,
    atol: float,
    max_steps: int,
) -> ChunkSettings:
    start, end, _ = _interval(interval)
    return ChunkSettings(
        k_out=_output_index(model, output),
        start=start,
        end=end,
        method=method_code(model, method),
        rtol=float(rtol),
        atol=float(atol),
        max_steps=int(max_steps),
        times=grid,
        k_bio=_output_index(model, criteria.output) if criteria else -1,
        partial=criteria.partial if criteria else 0.0,
        normal=criteria.normal if criteria else 0.0,
    )


# --- local and dask execution, the sink ------------------------------------------------------


def _task_bounds(n: int, n_doses: int, chunk_size: Any, scheduler: Any) -> list[tuple]:
    """(dose number, first patient, end) of every task, dose-major: the table's order."""
    if chunk_size is not None and not (
        isinstance(chunk_size, numbers.Integral) and not isinstance(chunk_size, bool)
    ):
        raise ValueError(f"chunk_size {chunk_size!r}: expected a positive integer")
    if chunk_size is not None and chunk_size < 1:
        raise ValueError(f"chunk_size {chunk_size!r}: expected a positive integer")
    size = int(chunk_size or (LOCAL_CHUNK if scheduler is None else DASK_CHUNK))
    return [(d, lo, min(lo + size, n)) for d in range(n_doses) for lo in range(0, n, size)]


def _run(job: _Job, chunk_size: Any, scheduler: Any, sink: _Sink) -> None:
    """Run every task, here or on dask, and hand the results to ``sink`` in task order."""
    tasks = _task_bounds(job.cohort.n, job.cohort.doses.size, chunk_size, scheduler)
    job.source.load()  # compile (or load from the disk cache) once, before any task
    if scheduler is None:
        for task in tasks:
            sink.add(task, *_run_task(job, *task))
        return
    for task, result in zip(tasks, _run_dask(job, tasks, scheduler), strict=True):
        sink.add(task, *result)


def _run_dask(job: _Job, tasks: list[tuple], scheduler: Any):
    """Task results in order, at most DASK_WINDOW per worker thread in flight."""
    try:
        import dask
    except ImportError:
        raise ImportError(
            "scheduler: dask is not installed; install the extra with `pip install 'cartpk[dask]'`"
        ) from None
    population = _without_kernels(job.cohort.population)
    remote = replace(job, cohort=replace(job.cohort, population=population))
    if isinstance(scheduler, str):
        if scheduler != "dask":
            raise ValueError(f"scheduler {scheduler!r}: expected None, 'dask' or a dask Client")
        window = DASK_WINDOW * (cpu_count() or 1)
        for lo in range(0, len(tasks), window):
            batch = [dask.delayed(_run_task)(remote, *task) for task in tasks[lo : lo + window]]
            yield from dask.compute(*batch)
        return
    if not (hasattr(scheduler, "submit") and hasattr(scheduler, "scatter")):
        raise ValueError(
            f"scheduler: expected None, 'dask' or a dask.distributed Client, got "
            f"{type(scheduler).__name__}"
        )
    window = DASK_WINDOW * max(sum(scheduler.nthreads().values()), 1)
    shared = scheduler.scatter(remote, broadcast=True, hash=False)
    pending: deque = deque()
    waiting = iter(tasks)
    for task in islice(waiting, window):
        pending.append(scheduler.submit(_run_task, shared, *task, pure=False))
    while pending:
        future = pending.popleft()
        result = future.result()
        future.release()
        for task in islice(waiting, 1):
            pending.append(scheduler.submit(_run_task, shared, *task, pure=False))
        yield result


def _without_kernels(population: Population) -> Population:
    """The population with a copy of its model that holds no loaded module (picklable)."""
    model = copy.copy(population.model)
    vars(model).pop("kernels", None)
    return replace(population, model=model)


class _Sink:
    """Collects task results: the kept values in place, the failed rows, and the table in
    memory or streamed to a Parquet file (written in task order, renamed when complete)."""

    def __init__(self, n: int, n_doses: int, path: Path | None) -> None:
        self.n = n
        self.kept = {key: np.empty(n * n_doses, dtype=kind) for key, kind in _KEPT.items()}
        self.failed: list[pd.DataFrame] = []
        self.tables: list[pd.DataFrame] = []
        self.path = path
        self.partial = None if path is None else path.with_name(path.name + ".partial")
        self.writer = None
        self.schema = None

    def add(self, task: tuple, kept: dict[str, np.ndarray], table: pd.DataFrame) -> None:
        d, lo, hi = task
        for key, values in kept.items():
            self.kept[key][d * self.n + lo : d * self.n + hi] = values
        bad = table["status"].to_numpy() != 0
        if bad.any():
            self.failed.append(table[bad])
        if self.path is None:
            self.tables.append(table)
            return
        import pyarrow as pa
        import pyarrow.parquet as pq

        if self.writer is None:
            self.schema = pa.Schema.from_pandas(table, preserve_index=False)
            self.writer = pq.ParquetWriter(self.partial, self.schema)
        self.writer.write_table(pa.Table.from_pandas(table, self.schema, preserve_index=False))

    def close(self, ok: bool) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
        if self.partial is not None and self.partial.exists():
            if ok:
                self.partial.replace(self.path)
            else:
                self.partial.unlink()

    def table(self) -> pd.DataFrame | None:
        if self.path is not None:
            return None
        return pd.concat(self.tables, ignore_index=True)

    def failures(self, columns: pd.Index) -> pd.DataFrame:
        if not self.failed:
            return pd.DataFrame({name: pd.Series(dtype=object) for name in columns})
        return pd.concat(self.failed, ignore_index=True)


def _patients_table(model, dose, ids, params, drawn, results, auc_column, criteria) -> pd.DataFrame:
    metrics = ("cmax", "tmax", auc_column)
    frame = pd.DataFrame({"DOSE": np.full(ids.size, dose), "ID": ids})
    taken = {"DOSE", "ID", *metrics, "status", "solver"}
    for k, name in enumerate(model.param_names):
        frame[f"{name}_param" if name in taken else name] = params[:, k]
    for name, values in drawn.items():
        frame[name] = values
    frame["cmax"] = results["cmax"]
    frame["tmax"] = results["tmax"]
    frame[auc_column] = results["auc"]
    if criteria is not None:
        frame = response_columns(frame, results, criteria)
    frame["status"] = results["status"]
    names = {code: name for name, code in METHODS.items()}
    frame["solver"] = [names[int(code)] for code in results["method"]]
    return frame
