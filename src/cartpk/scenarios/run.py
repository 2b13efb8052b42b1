"""Dose scenarios and virtual trials: the same virtual patients at several doses.

A :class:`Population` (typical values, between-subject variability, covariate effects) is
sampled in fixed blocks of RANDOM_BLOCK patients: block k (patients k·RANDOM_BLOCK + 1, ...)
takes its random effects, then its covariates, from its own child stream
``numpy.random.default_rng(SeedSequence(seed, spawn_key=(k,)))``. Any chunk of patients (or
a dask task) can so draw its own patients, and each scenario dose is given to the same
patients (common random numbers), so that dose comparisons are paired. For every patient
and dose the result holds the individual parameters, the covariates, the model-based
exposure of one output (cmax, tmax, AUC over an interval, located on the continuous ODE
solution by the numba kernel behind :func:`cartpk.exposure`) and, for models with a
biomarker, the biomarker response (partial/complete response by a day and the time to it).

Work is split into tasks of one dose and a chunk of patients that run in the calling
process or as dask tasks on a cluster (a bounded number in flight); every patient is drawn
from its block and solved on its own, so the numbers do not depend on the chunking, the
scheduler or the number of numba threads. With ``write=`` each task's per-patient rows are
streamed to a Parquet file as they arrive and only the exposure metrics stay in memory, so
a million patients need no more memory than a thousand (beyond 28 bytes per patient-dose).

Times are in days, doses in CAR-T cells/kg (the model's ``DOSE`` covariate), exposure in
the output's unit (cmax) and unit·day (AUC).
"""

from __future__ import annotations

import copy
import math
import numbers
import threading
from collections import deque
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import islice
from os import PathLike, cpu_count
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..data import Dataset, read_dataset
from ..errors import DataError, ModelError
from ..exposure import _interval, _output_index
from ..kernels import ModelKernels
from ..model import Model, compiled_kernels
from ..scales import to_estimation, to_natural
from ..solve import METHODS, STATUS_REASONS, as_model, check_tolerances, method_code

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["CovariateEffect", "Population", "Response", "ScenarioResult", "scenarios"]

#: Serum VEGF upper limit of normal used for "normalisation" (ng/L = pg/mL); see Response.
VEGF_ULN = 1040.0
#: Patients per chunk when the caller gives no chunk size (bounds the memory of one solve).
LOCAL_CHUNK = 10_000
#: Patients per dask task when the caller gives no chunk size.
DASK_CHUNK = 1_000
#: Patients per block of random draws (each block its own seeded child stream). Part of the
#: seed -> patients mapping: changing it changes the patients of every seed.
RANDOM_BLOCK = 1_000
#: Dask tasks in flight per worker thread (results are written in task order).
DASK_WINDOW = 2
#: Patients per dose whose curves make the prediction bands (the first ones, re-drawn).
BAND_PATIENTS = 10_000
#: Default output grid (days): detection of biomarker crossings and prediction bands.
DEFAULT_TIMES = np.linspace(0.0, 90.0, 361)
#: Refinement of biomarker crossings on the ODE solution: pieces per bracket, rounds.
ZOOM_POINTS = 64
ZOOM_ROUNDS = 2

_KERNEL_LOCK = threading.Lock()


# --- the population ------------------------------------------------------------------------


@dataclass(frozen=True)
class CovariateEffect:
    """A covariate effect on a parameter, applied to its typical value (natural scale).

    ``kind="power"``: param · (COV / reference)^theta (a continuous covariate, ``reference``
    typically its median, > 0). ``kind="categorical"``: param · exp(theta · [COV !=
    reference]) (``reference`` the reference level, coded as a number: a two-level
    covariate). ``kind="level"``: param · exp(theta · [COV == reference]), ``reference``
    holding the level the effect belongs to (one effect per non-reference level of a
    categorical covariate with more levels, as population fits estimate them).
    """

    parameter: str
    covariate: str
    kind: str
    theta: float
    reference: float

    def factor(self, values: np.ndarray) -> np.ndarray:
        """Multiplicative factor on the typical value for covariate ``values``."""
        values = np.asarray(values, dtype=float)
        if self.kind == "power":
            return (values / self.reference) ** self.theta
        if self.kind == "level":
            return np.exp(self.theta * (values == self.reference))
        return np.exp(self.theta * (values != self.reference))

    def check(self, model: Model) -> None:
        """Refuse unknown parameters and kinds, non-finite theta, a power reference <= 0."""
        where = f"covariate effect of {self.covariate} on {self.parameter}"
        if self.parameter not in model.parameters:
            raise ModelError(
                f"{where}: {self.parameter!r} is not a parameter of {model.name} "
                f"(parameters: {', '.join(model.param_names)})"
            )
        if self.kind not in ("power", "categorical", "level"):
            raise ModelError(
                f"{where}: kind {self.kind!r}, expected 'power', 'categorical' or 'level'"
            )
        if not (_is_number(self.theta) and _is_number(self.reference)):
            raise ModelError(f"{where}: theta and reference must be finite numbers")
        if self.kind == "power" and self.reference <= 0:
            raise ModelError(f"{where}: a power effect needs a reference > 0, not {self.reference}")


@dataclass(frozen=True, eq=False)
class Population:
    """Typical values, between-subject variability and covariate effects of a model.

    Attributes:
        model: the model.
        typical: parameter name -> typical value on the natural scale, every parameter.
        omega: parameter name -> between-subject SD on that parameter's estimation scale
            (log, logit or none), only the parameters with variability.
        correlation: correlation matrix of the random effects, rows and columns in the
            order of ``omega`` (None: independent).
        covariate_effects: :class:`CovariateEffect` s, applied to the typical value before
            the random effect.

    Individual parameters: x_i = to_estimation(typical · covariate factors) + eta_i with
    eta ~ N(0, diag(omega) C diag(omega)), mapped back to the natural scale (log: exp;
    logit: lower + (upper - lower) / (1 + exp(-x)); none: x). Parameter bounds are those of
    estimation and are not imposed on the draws.
    """

    model: Model
    typical: Mapping[str, float]
    omega: Mapping[str, float] = field(default_factory=dict)
    correlation: np.ndarray | None = None
    covariate_effects: Sequence[CovariateEffect] = ()

    def __post_init__(self) -> None:
        object.__setattr__(self, "typical", self._checked_typical())
        object.__setattr__(self, "omega", self._checked_omega())
        object.__setattr__(self, "correlation", self._checked_correlation())
        effects = tuple(self.covariate_effects)
        for effect in effects:
            if not isinstance(effect, CovariateEffect):
                raise ModelError(
                    f"covariate_effects: expected CovariateEffect items, got {effect!r}"
                )
            effect.check(self.model)
        object.__setattr__(self, "covariate_effects", effects)

    @classmethod
    def from_model(
        cls,
        model: Model | str | PathLike[str],
        omega: Mapping[str, float] | None = None,
        correlation: np.ndarray | None = None,
    ) -> Population:
        """The model file's typical values, omegas and correlations (or ``omega`` if given).

        Without ``omega``, parameters whose omega is None or 0, and fixed parameters, get
        no variability, and the random effects are correlated as the model's
        ``[correlations]`` (or its parameter set's) say. ``correlation``: over the omega
        names in order (default: the model's when ``omega`` is None, else none). For a
        named parameter set, load it first: ``from_model(load_model("ck_stein",
        parameters="cilta-cel"))``.
        """
        model = as_model(model)
        typical = {name: par.value for name, par in model.parameters.items()}
        if omega is None:
            omega = {
                name: par.omega
                for name, par in model.parameters.items()
                if par.omega and not par.fixed
            }
            if correlation is None:
                correlation = model.correlation_matrix(list(omega))
        return cls(model, typical, dict(omega), correlation)

    @property
    def covariates_needed(self) -> tuple[str, ...]:
        """Covariates the model or a covariate effect uses, DOSE excluded (set per dose)."""
        names = [*self.model.covariate_names, *(e.covariate for e in self.covariate_effects)]
        return tuple(name for name in dict.fromkeys(names) if name != "DOSE")

    def draw_etas(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """Random effects (n, len(omega)) on the estimation scale."""
        sd = np.array(list(self.omega.values()), dtype=float)
        z = rng.standard_normal((n, sd.size))
        if self.correlation is not None:
            z = z @ np.linalg.cholesky(self.correlation).T
        return z * sd

    def individual(self, etas: np.ndarray, covariates: Mapping[str, np.ndarray]) -> np.ndarray:
        """Individual parameters (n, n_par), natural scale, in the model's parameter order.

        ``covariates`` maps a name to n values and must hold every covariate a covariate
        effect uses (DOSE included when an effect uses it).
        """
        n = etas.shape[0]
        column = {name: j for j, name in enumerate(self.omega)}
        out = np.empty((n, len(self.model.parameters)))
        for k, (name, par) in enumerate(self.model.parameters.items()):
            base = np.full(n, float(self.typical[name]))
            for effect in self.covariate_effects:
                if effect.parameter == name:
                    base = base * effect.factor(covariates[effect.covariate])
            if name in column:
                x = _estimation(base, par, name) + etas[:, column[name]]
                out[:, k] = to_natural(x, par.scale, par.lower, par.upper)
            else:
                out[:, k] = base
        return out

    def _checked_typical(self) -> dict[str, float]:
        typical = dict(self.typical)
        names = self.model.param_names
        unknown = [name for name in typical if name not in self.model.parameters]
        missing = [name for name in names if name not in typical]
        if unknown or missing:
            raise ModelError(
                f"typical values for {self.model.name}: unknown {unknown}, missing {missing} "
                f"(every parameter needs one: {', '.join(names)})"
            )
        for name in names:
            if not _is_number(typical[name]):
                raise ModelError(f"typical value of {name}: {typical[name]!r} is not a number")
            _estimation(np.array([float(typical[name])]), self.model.parameters[name], name)
        return {name: float(typical[name]) for name in names}

    def _checked_omega(self) -> dict[str, float]:
        omega = dict(self.omega)
        for name, sd in omega.items():
            if name not in self.model.parameters:
                raise ModelError(
                    f"omega: {name!r} is not a parameter of {self.model.name} "
                    f"(parameters: {', '.join(self.model.param_names)})"
                )
            if not (_is_number(sd) and sd >= 0):
                raise ModelError(
                    f"omega of {name}: {sd!r}; expected a finite SD >= 0 on its "
                    f"{self.model.parameters[name].scale} scale"
                )
        return {name: float(sd) for name, sd in omega.items()}

    def _checked_correlation(self) -> np.ndarray | None:
        if self.correlation is None:
            return None
        k = len(self.omega)
        c = np.array(self.correlation, dtype=float)
        order = ", ".join(self.omega)
        if c.shape != (k, k):
            raise ModelError(f"correlation: shape {c.shape}, expected ({k}, {k}) over {order}")
        if not (np.all(np.isfinite(c)) and np.allclose(c, c.T) and np.allclose(np.diag(c), 1)):
            raise ModelError("correlation: must be symmetric with ones on the diagonal")
        try:
            np.linalg.cholesky(c)
        except np.linalg.LinAlgError:
            raise ModelError(
                f"correlation: not positive definite (random effects {order})"
            ) from None
        return c


def _estimation(base: np.ndarray, par: Any, name: str) -> np.ndarray:
    """Natural-scale values to the estimation scale, refusing values outside its domain."""
    if par.scale == "log":
        bad = ~(base > 0)
    elif par.scale == "logit":
        bad = ~((base > par.lower) & (base < par.upper))
    else:
        bad = ~np.isfinite(base)
    if np.any(bad):
        value = base[np.flatnonzero(bad)[0]]
        raise ModelError(
            f"parameter {name}: typical value {value:g} (after covariate effects) is outside "
            f"the domain of its {par.scale} scale"
            + (f" ({par.lower:g}, {par.upper:g})" if par.scale == "logit" else "")
        )
    if np.all(base == base[0]):
        return np.full(base.shape, to_estimation(float(base[0]), par.scale, par.lower, par.upper))
    return np.array([to_estimation(float(v), par.scale, par.lower, par.upper) for v in base])


# --- biomarker response --------------------------------------------------------------------


@dataclass(frozen=True)
class Response:
    """Biomarker response criteria, relative to the value at t = 0 (the baseline).

    Partial response (PR): the first time the biomarker is <= ``partial`` · baseline.
    Complete response (CR): the first time it is <= ``normal`` (the upper limit of normal,
    in the output's unit); not evaluable (NA) for a patient whose baseline is already at or
    below it. ``by``: the day of the ``pr_<by>`` / ``cr_<by>`` flags.

    The defaults are the POEMS syndrome VEGF response criteria: a decrease of at least
    50 % is a partial VEGF response and normalisation a complete one (Dispenzieri A. How I
    treat POEMS syndrome. Blood 2012;119(24):5650-5658, doi:10.1182/blood-2012-03-378992;
    the complete/partial/no VEGF response grading of Gentile F, et al. Neurol Sci
    2024;45(2):727-733, doi:10.1007/s10072-023-07064-5). The upper limit of normal of serum
    VEGF is 1040 pg/mL (= ng/L), the normalisation cut-off of Misawa S, et al. BMJ Open
    2015;5:e009157, doi:10.1136/bmjopen-2015-009157 (ELISA, serum; Gentile et al. use
    < 1000 pg/mL). Plasma VEGF has a much lower normal range: set ``normal`` for the assay
    and matrix that was measured.
    """

    output: str = "VEGF"
    partial: float = 0.5
    normal: float = VEGF_ULN
    by: float = 28.0

    def check(self, model: Model, times: np.ndarray) -> None:
        """Refuse an unknown output, a fraction outside (0, 1), a day beyond ``times``."""
        _output_index(model, self.output)
        if not (_is_number(self.partial) and 0 < self.partial < 1):
            raise ValueError(f"response: partial = {self.partial!r}, expected a fraction in (0, 1)")
        if not (_is_number(self.normal) and self.normal > 0):
            raise ValueError(f"response: normal = {self.normal!r}, expected a level > 0")
        if not (_is_number(self.by) and 0 < self.by <= times[-1]):
            raise ValueError(
                f"response: by = {self.by!r} days must be > 0 and within the simulated "
                f"window (times end at {times[-1]:g} days)"
            )

    @property
    def suffix(self) -> str:
        return str(int(self.by)) if float(self.by).is_integer() else repr(float(self.by))


# --- the work on one chunk of patients (runs locally or as a dask task) ---------------------


@dataclass(frozen=True)
class _KernelSource:
    """What a worker needs to import a model's compiled module: picklable (a Model that
    has loaded its kernels holds a module, which is not). The module comes from the same
    content-hashed disk cache as ``Model.kernels``."""

    name: str
    code: str

    def load(self) -> ModelKernels:
        return compiled_kernels(self.name, self.code)


@dataclass(frozen=True)
class _Settings:
    """Everything a chunk needs besides the patients: output indices, window, solver."""

    k_out: int
    start: float
    end: float
    method: int
    rtol: float
    atol: float
    max_steps: int
    times: np.ndarray
    k_bio: int
    partial: float
    normal: float
    stiff_retry: bool

    @property
    def solver(self) -> tuple[int, float, float, int]:
        return self.method, self.rtol, self.atol, self.max_steps


def _run_chunk(source: _KernelSource, p: np.ndarray, s: _Settings) -> dict[str, np.ndarray]:
    """Exposure, status and response times of the patients ``p`` (rows of Model.pack).

    With ``stiff_retry``, patients that exhaust the step budget with Dormand-Prince are
    solved again with Rodas (a stiff method); ``out["method"]`` says which one was used.
    """
    with _KERNEL_LOCK:
        kernels = source.load()
        out = _solve_chunk(kernels, p, s)
        stiff = np.flatnonzero(out["status"] == 1) if s.stiff_retry else np.empty(0, int)
        if stiff.size:
            again = _solve_chunk(kernels, p[stiff], replace(s, method=METHODS["rodas"]))
            for key, values in again.items():
                out[key][stiff] = values
        return out


def _solve_chunk(kernels: ModelKernels, p: np.ndarray, s: _Settings) -> dict[str, np.ndarray]:
    m = p.shape[0]
    out = {name: np.full(m, np.nan) for name in ("cmax", "tmax", "auc")}
    out["status"] = np.zeros(m, dtype=np.int64)
    out["method"] = np.full(m, s.method, dtype=np.int64)
    no_doses = (np.empty(0), np.empty(0), np.zeros(m + 1, dtype=np.int64))
    metrics = (out["cmax"], out["tmax"], out["auc"], out["status"], np.empty(m))
    kernels.exposure_batch(p, s.k_out, s.start, s.end, *no_doses, *s.solver, *metrics)
    if s.k_bio >= 0:
        out.update(_responses(kernels, p, s, out["status"]))
    return out


def _solve_at(
    kernels: ModelKernels, p: np.ndarray, t_flat: np.ndarray, t_off: np.ndarray, s: _Settings
) -> tuple[np.ndarray, np.ndarray]:
    """All outputs at each patient's sorted times, and the status per patient."""
    m = p.shape[0]
    values = np.empty((t_flat.size, kernels.n_outputs))
    status = np.zeros(m, dtype=np.int64)
    no_doses = (np.empty(0), np.empty(0), np.zeros(m + 1, dtype=np.int64))
    kernels.solve_batch(p, t_flat, t_off, *no_doses, *s.solver, values, status, np.empty(m))
    return values, status


def _responses(
    kernels: ModelKernels, p: np.ndarray, s: _Settings, status: np.ndarray
) -> dict[str, np.ndarray]:
    """Baseline and first times at or below the PR and CR thresholds (NaN: not reached)."""
    m, n_t = p.shape[0], s.times.size
    offsets = np.arange(m + 1, dtype=np.int64) * n_t
    values, grid_status = _solve_at(kernels, p, np.tile(s.times, m), offsets, s)
    curve = values[:, s.k_bio].reshape(m, n_t)
    np.copyto(status, grid_status, where=status == 0)
    baseline = curve[:, 0]
    thresholds = np.column_stack([s.partial * baseline, np.full(m, s.normal)])
    times = _first_crossings(kernels, p, s, curve, thresholds, status)
    evaluable = baseline > s.normal
    times[~evaluable, 1] = np.nan
    return {
        "baseline": baseline,
        "time_to_pr": times[:, 0],
        "time_to_cr": times[:, 1],
        "cr_evaluable": evaluable,
    }


def _first_crossings(
    kernels: ModelKernels,
    p: np.ndarray,
    s: _Settings,
    curve: np.ndarray,
    thresholds: np.ndarray,
    status: np.ndarray,
) -> np.ndarray:
    """First time (m, n_criteria) each patient's biomarker is <= each threshold.

    The crossing is bracketed on the grid, then the bracket is cut into ZOOM_POINTS
    pieces on the ODE solution ZOOM_ROUNDS times, and the last piece is interpolated
    linearly (0.25-day grid: pieces of 6e-5 day, interpolation error ~1e-9 day). Each
    patient's times depend on its own values only, so the result does not depend on who
    else is in the batch. A dip below the threshold that recovers between two grid
    times is not seen.
    """
    out = np.full(thresholds.shape, np.nan)
    rows, which, a, b = [], [], [], []
    for k in range(thresholds.shape[1]):
        below = curve <= thresholds[:, k, None]
        reached = below.any(axis=1) & (status == 0)
        j = np.argmax(below, axis=1)
        out[reached & (j == 0), k] = 0.0
        hit = np.flatnonzero(reached & (j > 0))
        rows.append(hit)
        which.append(np.full(hit.size, k))
        a.append(s.times[j[hit] - 1])
        b.append(s.times[j[hit]])
    rows, which, a, b = (np.concatenate(x) for x in (rows, which, a, b))
    if rows.size == 0:
        return out
    level = thresholds[rows, which]
    fa = fb = None
    for _ in range(ZOOM_ROUNDS):
        a, b, fa, fb = _zoom(kernels, p, s, level, a, b, status, rows)
    width = np.where(fa > fb, fa / (fa - fb), 1.0)
    out[rows, which] = np.where(status[rows] == 0, a + width * (b - a), np.nan)
    return out


def _zoom(kernels, p, s, level, a, b, status, rows) -> tuple[np.ndarray, ...]:
    """Narrow each bracket [a, b] of a crossing of ``level`` to one of ZOOM_POINTS pieces.

    ``rows``: the patient (row of ``p``) of each bracket. A patient's brackets (PR and CR)
    are evaluated on one solve, their times merged and sorted; the values are put back in
    bracket order.
    """
    grid = a[:, None] + (b - a)[:, None] * np.linspace(0.0, 1.0, ZOOM_POINTS + 1)
    patients, inverse = np.unique(rows, return_inverse=True)
    flat = grid.ravel()
    owner = np.repeat(inverse, ZOOM_POINTS + 1)
    order = np.lexsort((flat, owner))
    offsets = np.zeros(patients.size + 1, dtype=np.int64)
    np.cumsum(np.bincount(owner, minlength=patients.size), out=offsets[1:])
    merged, solved = _solve_at(kernels, p[patients], flat[order], offsets, s)
    values = np.empty_like(merged)
    values[order] = merged
    solved = solved[inverse]
    first_failure = (solved != 0) & (status[rows] == 0)
    status[rows[first_failure]] = solved[first_failure]
    f = values[:, s.k_bio].reshape(grid.shape) - level[:, None]
    j = np.clip(np.argmax(f <= 0, axis=1), 1, ZOOM_POINTS)
    j[~(f <= 0).any(axis=1)] = ZOOM_POINTS
    i = np.arange(a.size)
    return grid[i, j - 1], grid[i, j], f[i, j - 1], f[i, j]


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
            With ``method=None`` and a Dormand-Prince model, patients that exhaust
            ``max_steps`` (stiff: very high CAR-T levels driving a fast kill) are solved
            again with Rodas; the ``solver`` column says which method each patient got.
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
    population = _as_population(source, omega)
    model = population.model
    dose_values = _checked_doses(doses)
    _check_dose_link(population)
    n = _checked_count(n)
    if not (isinstance(seed, numbers.Integral) and not isinstance(seed, bool) and seed >= 0):
        raise ValueError(f"seed {seed!r}: expected an integer >= 0")
    grid = _checked_times(times)
    criteria = _response(model, response, grid)
    check_tolerances(rtol, atol, max_steps)
    settings = _settings(model, output, interval, grid, criteria, method, rtol, atol, max_steps)
    if isinstance(covariates, Dataset | pd.DataFrame):
        covariates = _subject_values(covariates, population.covariates_needed)
    auc_column = _interval(interval)[2]
    source = _KernelSource(model.name, model.source_code)
    job = _Job(
        population, covariates, dose_values, n, int(seed), settings, source, auc_column, criteria
    )
    job.draw(0, 1)  # bad covariate specifications fail here, before any task
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
        job,
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
) -> _Settings:
    start, end, _ = _interval(interval)
    return _Settings(
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
        stiff_retry=method is None and model.solver == "dopri5",
    )


def _as_population(source: Any, omega: Mapping[str, float] | None) -> Population:
    if isinstance(source, Model | str | PathLike):
        return Population.from_model(source, omega)
    if omega is not None:
        raise ValueError(
            "omega: only for a model source; a Population or a population fit carries its own"
        )
    if isinstance(source, Population):
        return source
    if callable(getattr(source, "population", None)):
        population = source.population()
        if not isinstance(population, Population):
            raise ValueError(
                f"{type(source).__name__}.population() returned "
                f"{type(population).__name__}, not a cartpk Population"
            )
        return population
    raise ValueError(
        "source: expected a Population, a population fit (with .population()), a Model or a "
        f"model name / path, got {type(source).__name__}"
    )


def _checked_doses(doses: Any) -> np.ndarray:
    values = np.atleast_1d(np.asarray(doses, dtype=object))
    if values.ndim != 1 or values.size == 0:
        raise ValueError("doses: expected one or more doses in CAR-T cells/kg")
    for k, dose in enumerate(values):
        if not (_is_number(dose) and dose > 0):
            raise ValueError(
                f"doses: entry {k} is {dose!r}; a dose must be a positive number of cells/kg"
            )
    out = values.astype(float)
    if np.unique(out).size != out.size:
        raise ValueError(f"doses: {out.tolist()} has repeated doses")
    return out


def _check_dose_link(population: Population) -> None:
    model = population.model
    if "DOSE" in model.covariates:
        return
    if any(effect.covariate == "DOSE" for effect in population.covariate_effects):
        return
    raise ValueError(
        f"model {model.name} has no DOSE covariate and the population no DOSE covariate "
        "effect: a dose could not change the answer. Give the model a dose link "
        "([covariates.DOSE] used in an initial condition) or a CovariateEffect on DOSE"
    )


def _checked_count(n: Any) -> int:
    if not (isinstance(n, numbers.Integral) and not isinstance(n, bool) and n >= 1):
        raise ValueError(f"n = {n!r}: the number of virtual patients must be an integer >= 1")
    return int(n)


def _checked_times(times: Any) -> np.ndarray:
    if times is None:
        return DEFAULT_TIMES.copy()
    try:
        t = np.array(times, dtype=float)
    except (TypeError, ValueError):
        raise ValueError("times: expected numbers (days)") from None
    if t.ndim != 1 or t.size < 2 or not np.all(np.isfinite(t)):
        raise ValueError("times: expected a 1-D array of at least 2 finite days")
    if t[0] != 0 or np.any(np.diff(t) <= 0):
        raise ValueError("times: must start at 0 (the baseline) and increase strictly")
    return t


def _response(model: Model, response: Any, grid: np.ndarray) -> Response | None:
    if response is False:
        return None
    if response is None or response is True:
        if "VEGF" not in model.outputs:
            if response is True:
                raise ValueError(
                    f"response=True: model {model.name} has no VEGF output; give "
                    "Response(output=..., normal=...) for its biomarker"
                )
            return None
        criteria = Response()
    elif isinstance(response, Response):
        criteria = response
    elif isinstance(response, Mapping):
        criteria = Response(**response)
    else:
        raise ValueError(f"response: expected a Response, a mapping, False or None: {response!r}")
    criteria.check(model, grid)
    return criteria


def _draw_covariates(
    population: Population, covariates: Any, n: int, rng: np.random.Generator
) -> dict[str, np.ndarray]:
    """Covariate values (n each) for every covariate the population needs, DOSE excluded."""
    needed = population.covariates_needed
    if covariates is None:
        drawn = {}
    elif isinstance(covariates, Dataset | pd.DataFrame):
        drawn = _resample(_subject_values(covariates, needed), n, rng)
    elif isinstance(covariates, _Resampled):
        drawn = _resample(covariates, n, rng)
    elif isinstance(covariates, Mapping):
        drawn = {name: _draw_one(name, spec, n, rng, needed) for name, spec in covariates.items()}
    else:
        raise ValueError(
            "covariates: expected a mapping name -> distribution, a Dataset or a DataFrame, "
            f"got {type(covariates).__name__}"
        )
    model = population.model
    for name in needed:
        if name in drawn:
            continue
        if name not in model.covariates:
            raise ValueError(
                f"covariates: {name} is used by a covariate effect but not given; give a "
                "distribution, a constant or a dataset to resample"
            )
        drawn[name] = np.full(n, model.covariates[name].reference)
    return drawn


def _draw_one(
    name: str, spec: Any, n: int, rng: np.random.Generator, needed: tuple[str, ...]
) -> np.ndarray:
    if name == "DOSE":
        raise ValueError("covariates: DOSE is set by doses=, not drawn")
    if name not in needed:
        raise ValueError(
            f"covariates: {name!r} is neither a covariate of the model nor used by a "
            f"covariate effect (used: {', '.join(needed) or 'none'})"
        )
    if hasattr(spec, "rvs"):
        values = spec.rvs(size=n, random_state=rng)
    elif callable(spec):
        values = spec(rng, size=n)
    elif _is_number(spec):
        values = np.full(n, float(spec))
    else:
        raise ValueError(
            f"covariates: {name} = {spec!r}; expected a scipy.stats distribution, a callable "
            "(rng, size) -> array or a number"
        )
    values = np.asarray(values, dtype=float)
    if values.shape != (n,) or not np.all(np.isfinite(values)):
        raise ValueError(
            f"covariates: {name} must give {n} finite values, got shape {values.shape}"
        )
    return values


def _resample(source: _Resampled, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Resample subjects (with replacement) and take their values of the needed covariates."""
    rows = rng.integers(0, source.size, size=n)
    return {name: values[rows] for name, values in source.values.items()}


def _subject_values(source: Dataset | pd.DataFrame, needed: tuple[str, ...]) -> _Resampled:
    """The subjects' values of the needed covariates (checked numeric), to resample from."""
    table = _subject_table(source)
    upper = {str(c).upper(): c for c in table.columns}
    columns = {name: upper[name.upper()] for name in needed if name.upper() in upper}
    drawn = {}
    for name, column in columns.items():
        values = pd.to_numeric(table[column], errors="coerce").to_numpy(dtype=float)
        bad = np.flatnonzero(~np.isfinite(values))
        if bad.size:
            who = ", ".join(str(i) for i in table.index[bad[:5]])
            raise DataError(
                f"covariates: column {column!r} is missing or not numeric for subject(s) {who}"
            )
        drawn[name] = values
    return _Resampled(drawn, len(table))


def _subject_table(source: Dataset | pd.DataFrame) -> pd.DataFrame:
    """One row per subject (covariates), from a Dataset, a long table or a subject table."""
    if isinstance(source, pd.DataFrame):
        upper = {str(c).upper() for c in source.columns}
        if {"ID", "TIME"} <= upper:
            source = read_dataset(source)
        elif "ID" in upper:
            column = next(c for c in source.columns if str(c).upper() == "ID")
            return source.groupby(column, sort=False).first()
        else:
            table = source.copy()
            table.index = pd.RangeIndex(1, len(table) + 1, name="row")
            return table
    if len(source.ids) == 0:
        raise DataError("covariates: the dataset has no subjects")
    return source.subject_covariates()


@dataclass(frozen=True, eq=False)
class _Resampled:
    """Covariate values of the subjects of a dataset, resampled with replacement."""

    values: dict[str, np.ndarray]
    size: int


@dataclass(frozen=True, eq=False)
class _Job:
    """Everything a task needs to draw and solve its patients: picklable (the model holds
    no loaded kernels when it goes to dask)."""

    population: Population
    covariates: Any
    doses: np.ndarray
    n: int
    seed: int
    settings: _Settings
    source: _KernelSource
    auc_column: str
    criteria: Response | None

    def draw(self, lo: int, hi: int) -> tuple[np.ndarray, dict[str, np.ndarray]]:
        """Random effects and covariates of patients lo..hi-1 (0-based), from their blocks."""
        etas, drawn = [], []
        for block in range(lo // RANDOM_BLOCK, (hi - 1) // RANDOM_BLOCK + 1):
            first = block * RANDOM_BLOCK
            rng = np.random.default_rng(np.random.SeedSequence(self.seed, spawn_key=(block,)))
            e = self.population.draw_etas(RANDOM_BLOCK, rng)
            c = _draw_covariates(self.population, self.covariates, RANDOM_BLOCK, rng)
            part = slice(max(lo, first) - first, min(hi, first + RANDOM_BLOCK) - first)
            etas.append(e[part])
            drawn.append({name: values[part] for name, values in c.items()})
        names = drawn[0].keys()
        return np.vstack(etas), {k: np.concatenate([d[k] for d in drawn]) for k in names}

    def patients(self, d: int, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray, dict]:
        """Individual parameters, packed ``p`` rows and covariates of patients lo..hi-1 at
        dose number d."""
        model = self.population.model
        etas, drawn = self.draw(lo, hi)
        values = {**drawn, "DOSE": np.full(hi - lo, self.doses[d])}
        params = self.population.individual(etas, values)
        packed = model.pack(params, {name: values[name] for name in model.covariate_names})
        return params, packed, drawn


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
    params, packed, drawn = job.patients(d, lo, hi)
    results = _run_chunk(job.source, packed, job.settings)
    model = job.population.model
    ids = np.arange(lo + 1, hi + 1)
    table = _patients_table(
        model, job.doses[d], ids, params, drawn, results, job.auc_column, job.criteria
    )
    kept = {key: results[key] for key in ("cmax", "tmax", "auc", "status", "method")}
    kept["pr"] = kept["cr"] = np.full(hi - lo, -1)  # -1: not available
    if job.criteria is not None:
        ok, by = results["status"] == 0, job.criteria.by
        kept["pr"] = np.where(ok, results["time_to_pr"] <= by, -1)
        kept["cr"] = np.where(ok & results["cr_evaluable"], results["time_to_cr"] <= by, -1)
    return kept, table


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
    tasks = _task_bounds(job.n, job.doses.size, chunk_size, scheduler)
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
    remote = replace(job, population=_without_kernels(job.population))
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
        frame = _response_columns(frame, results, criteria)
    frame["status"] = results["status"]
    names = {code: name for name, code in METHODS.items()}
    frame["solver"] = [names[int(code)] for code in results["method"]]
    return frame


def _response_columns(frame: pd.DataFrame, results: dict, criteria: Response) -> pd.DataFrame:
    ok = results["status"] == 0
    by = criteria.by
    pr, cr = results["time_to_pr"], results["time_to_cr"]
    pr_flag = pd.array(np.where(ok, pr <= by, False), dtype="boolean")
    pr_flag[~ok] = pd.NA
    cr_flag = pd.array(np.where(ok, cr <= by, False), dtype="boolean")
    cr_flag[~(ok & results["cr_evaluable"])] = pd.NA
    frame[f"pr_{criteria.suffix}"] = pr_flag
    frame[f"cr_{criteria.suffix}"] = cr_flag
    frame["time_to_pr"] = pr
    frame["time_to_cr"] = cr
    return frame


# --- the result ----------------------------------------------------------------------------


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
    _settings: _Settings = field(repr=False)
    _job: _Job = field(repr=False)
    _kept: dict[str, np.ndarray] = field(repr=False)
    _table: pd.DataFrame | None = field(repr=False)
    failed: pd.DataFrame = field(repr=False)
    path: Path | None = None

    @property
    def n(self) -> int:
        """Virtual patients per dose."""
        return self._job.n

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
        grid = self.times if times is None else _checked_band_times(times)
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
        packed = self._job.patients(d, lo, hi)[1]
        curves = np.full((hi - lo, grid.size), np.nan)
        for code in np.unique(methods[status == 0]):
            chosen = np.flatnonzero((methods == code) & (status == 0))
            settings = replace(self._settings, method=int(code))
            offsets = np.arange(chosen.size + 1, dtype=np.int64) * grid.size
            flat = np.tile(grid, chosen.size)
            with _KERNEL_LOCK:
                values, _ = _solve_at(kernels, packed[chosen], flat, offsets, settings)
            curves[chosen] = values[:, k].reshape(chosen.size, grid.size)
        return curves[~np.isnan(curves).any(axis=1)]

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


def _checked_band_times(times: Any) -> np.ndarray:
    try:
        t = np.array(times, dtype=float)
    except (TypeError, ValueError):
        raise ValueError("times: expected numbers (days)") from None
    if t.ndim != 1 or t.size == 0 or not np.all(np.isfinite(t)) or np.any(np.diff(t) < 0):
        raise ValueError("times: expected a sorted 1-D array of finite days")
    return t


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


def _is_number(value: Any) -> bool:
    return (
        isinstance(value, numbers.Real)
        and not isinstance(value, bool | np.bool_)
        and math.isfinite(value)
    )
