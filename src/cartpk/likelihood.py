"""Pieces of the fitting objective: residual error models, censored points, priors.

All functions return contributions to −2 log-likelihood (the full Gaussian constant
included), so that objective values are comparable with NONMEM/nlmixr2 OFVs computed on
the same scale. The ``log`` error model is Gaussian on log(DV): its −2LL is that of log(DV).

These numpy functions are the tested reference of the numba likelihood kernels
(:mod:`cartpk.kernels.likelihood`), which compute the same terms the same way.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy.special import log_ndtr

from .data import Dataset
from .dose_units import check_dataset_doses
from .dosing import RESET_DOSE, ragged
from .errors import DataError, plain, rows_text, shown
from .kernels.codes import KIND_CODES

if TYPE_CHECKING:
    from .model import Model

ERROR_MODELS = {
    "log": ("sigma",),
    "proportional": ("b",),
    "additive": ("a",),
    "combined": ("a", "b"),
}
LOG_2PI = float(np.log(2 * np.pi))


def residual_sd(kind: str, pred: np.ndarray, error: dict[str, float]) -> np.ndarray:
    """SD of the residual error at predictions ``pred``, on the error model's scale.

    ``log``: sigma (log scale); ``proportional``: b·f; ``additive``: a; ``combined``:
    sqrt(a² + b²·f²) (the "combined2" form of Monolix and nlmixr2).
    """
    if kind == "log":
        return np.full_like(pred, error["sigma"])
    if kind == "proportional":
        return error["b"] * np.abs(pred)
    if kind == "additive":
        return np.full_like(pred, error["a"])
    if kind == "combined":
        return np.sqrt(error["a"] ** 2 + (error["b"] * pred) ** 2)
    raise ValueError(f"error model {kind!r}: expected one of {', '.join(ERROR_MODELS)}")


def on_scale(kind: str, values: np.ndarray) -> np.ndarray:
    """Values on the scale where the error is Gaussian (log for ``log``, else as is)."""
    if kind == "log":
        with np.errstate(divide="ignore", invalid="ignore"):
            return np.log(values)
    return values


def m2ll_observed(kind: str, dv: np.ndarray, pred: np.ndarray, error: dict) -> np.ndarray:
    """−2 log-likelihood of each quantified observation."""
    sd = residual_sd(kind, pred, error)
    z = (on_scale(kind, dv) - on_scale(kind, pred)) / sd
    return z**2 + 2 * np.log(sd) + LOG_2PI


def m2ll_censored(kind: str, lloq: np.ndarray, pred: np.ndarray, error: dict) -> np.ndarray:
    """−2 log P(Y < LLOQ) of each censored observation (Beal's M3 method)."""
    sd = residual_sd(kind, pred, error)
    z = (on_scale(kind, lloq) - on_scale(kind, pred)) / sd
    return -2 * log_ndtr(z)


def log_ndtr_diff(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """log(Φ(b) − Φ(a)) elementwise for a < b (either may be infinite), without cancellation.

    a = −inf gives log Φ(b) (the M3 term). An interval in the upper half (a + b > 0) is
    turned round, Φ(b) − Φ(a) = Φ(−a) − Φ(−b), so that both CDFs are small where they are
    taken; then log Φ(b) + log(−expm1(log Φ(a) − log Φ(b))). −inf where b <= a.
    """
    a, b = np.broadcast_arrays(np.asarray(a, dtype=float), np.asarray(b, dtype=float))
    flip = a + b > 0
    low, high = np.where(flip, -b, a), np.where(flip, -a, b)
    log_high = log_ndtr(high)
    with np.errstate(divide="ignore", invalid="ignore"):
        out = log_high + np.log(-np.expm1(log_ndtr(low) - log_high))
    out = np.where(a == -np.inf, log_ndtr(b), out)
    out = np.where(b == np.inf, log_ndtr(-a), out)
    return np.where(b > a, out, -np.inf)


def m2ll_interval(
    kind: str, lower: np.ndarray, upper: np.ndarray, pred: np.ndarray, error: dict
) -> np.ndarray:
    """−2 log P(lower < Y <= upper) of each interval-censored observation.

    Both bounds are standardised on the error model's scale with the SD at the prediction
    (log bounds for ``log``, where a lower bound <= 0 is −inf); a lower bound of −inf is
    the M3 term :func:`m2ll_censored`.
    """
    sd = residual_sd(kind, pred, error)
    lower = np.asarray(lower, dtype=float)
    if kind == "log":
        lower = np.where(lower > 0, lower, -np.inf)
    with np.errstate(invalid="ignore"):
        z_low = (on_scale(kind, lower) - on_scale(kind, pred)) / sd
    z_low = np.where(lower == -np.inf, -np.inf, z_low)
    z_high = (on_scale(kind, upper) - on_scale(kind, pred)) / sd
    return -2 * log_ndtr_diff(z_low, z_high)


def prior_penalty(estimates: np.ndarray, means: np.ndarray, sds: np.ndarray) -> float:
    """−2 log of Gaussian priors on the estimation scale, without constants: Σ((θ−μ)/sd)²."""
    return float(np.sum(((estimates - means) / sds) ** 2))


@dataclass
class ObservationArrays:
    """Subjects' observations and re-infusions as the flat arrays the numba kernels take.

    Subject i owns observation rows ``off[i]:off[i+1]`` (sorted by time, days) and dose rows
    ``d_off[i]:d_off[i+1]`` (``d_reset`` 1 for a dose that starts the subject afresh after a
    reset, see :mod:`cartpk.dosing`); ``covariates`` is (n, n_cov) in the model's covariate
    order. Doses at TIME 0 are not listed: the infusion is in the model's initial condition
    through the DOSE covariate. Observations before TIME 0 are counted, not used. ``notes`` says
    what the fit should report: observations not used, covariates reduced to their baseline.

    A censored row (``cens`` 1) lies in (``limit``, ``lloq``]: ``lloq`` is its upper bound
    (the LLOQ below the LLOQ, DV for an interval-censored row, CENS=1 with a LIMIT) and
    ``limit`` its lower bound (the LIMIT; −inf for none, the M3 likelihood). ``limit`` is
    −inf on quantified rows.
    """

    ids: list[Any]
    off: np.ndarray
    time: np.ndarray
    out: np.ndarray
    dv: np.ndarray
    cens: np.ndarray
    lloq: np.ndarray
    limit: np.ndarray
    analyte: np.ndarray
    covariates: np.ndarray
    d_time: np.ndarray
    d_amt: np.ndarray
    d_reset: np.ndarray
    d_off: np.ndarray
    excluded_before_infusion: int
    notes: list[str] = field(default_factory=list)

    def subject(self, i: int) -> dict[str, np.ndarray]:
        """Subject i's slices of the observation arrays."""
        rows = slice(self.off[i], self.off[i + 1])
        return {
            name: getattr(self, name)[rows]
            for name in ("time", "out", "dv", "cens", "lloq", "limit", "analyte")
        }


def choose_analytes(ds: Dataset, analytes: Any) -> tuple[str, ...]:
    """The analytes to fit: every analyte of the data (None), or the ones named in
    ``analytes`` (a name or a list of names), each of which the data must have."""
    if analytes is None:
        return ds.analytes
    chosen = [analytes] if isinstance(analytes, str) else list(analytes)
    if not chosen:
        raise DataError(f"analytes: none given (the data have {', '.join(ds.analytes)})")
    unknown = [a for a in chosen if a not in ds.analytes]
    if unknown:
        raise DataError(
            f"analytes: {', '.join(shown(a) for a in unknown[:10])} not observed in the data "
            f"(the data have: {', '.join(ds.analytes)})"
        )
    return tuple(dict.fromkeys(chosen))


def pack_observations(
    ds: Dataset, model: Model, ids: Sequence[Any], analytes: Any = None
) -> ObservationArrays:
    """Flat observation, dose and covariate arrays of subjects ``ids`` (in that order), the
    observations of ``analytes`` only (None: every analyte; see :func:`choose_analytes`).
    Their doses are checked against the model's dose unit
    (:func:`cartpk.dose_units.check_dataset_doses`)."""
    chosen = choose_analytes(ds, analytes)
    ds.require_analytes(model.outputs, chosen)
    subjects = SubjectRows(ds, ids)
    time = ds.column("TIME")
    mine = ds.observed() & (subjects.code >= 0)
    if analytes is not None:
        mine &= np.isin(ds.column("ANALYTE"), chosen)
    before = mine & (time < 0)
    early = int(np.count_nonzero(before))
    rows = np.flatnonzero(mine & (time >= 0))
    position = subjects.code[rows]
    rows = rows[np.lexsort((time[rows], position))]
    counts = np.bincount(position, minlength=len(ids))
    empty = [ids[k] for k in np.flatnonzero(counts == 0)]
    if empty:
        which = "" if analytes is None else f" of {', '.join(chosen)}"
        raise DataError(f"IDs {empty[:10]}: no observations{which} at TIME >= 0 to fit")
    notes = []
    if early:
        who = pd.unique(ds.column("ID")[before]).tolist()
        notes.append(
            f"{early} observations before TIME 0 not used (IDs {shown(who[:10], False)}; "
            "TIME 0 is the infusion)"
        )
    notes += baseline_notes(ds, list(model.covariates), subjects)
    check_dataset_doses(ds, model, subjects.code >= 0)
    d_time, d_amt, d_reset, d_off = reinfusions(ds, model, subjects.ids)
    analyte = ds.column("ANALYTE")[rows].astype(str)
    names, index = np.unique(analyte, return_inverse=True)
    dv = ds.column("DV")[rows].astype(np.float64)
    cens = ds.column("CENS")[rows].astype(np.int64)
    limit = (
        ds.column("LIMIT")[rows].astype(np.float64)
        if "LIMIT" in ds.frame.columns
        else np.full(rows.size, np.nan)
    )
    interval = (cens == 1) & ~np.isnan(limit)
    return ObservationArrays(
        ids=subjects.ids,
        off=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        time=time[rows].astype(np.float64),
        out=np.array([model.outputs.index(a) for a in names], dtype=np.int64)[index],
        dv=dv,
        cens=cens,
        lloq=np.where(interval, dv, ds.column("LLOQ")[rows].astype(np.float64)),
        limit=np.where(interval, limit, -np.inf),
        analyte=analyte,
        covariates=subject_covariate_matrix(ds, model, subjects),
        d_time=d_time,
        d_amt=d_amt,
        d_reset=d_reset,
        d_off=d_off,
        excluded_before_infusion=early,
        notes=notes,
    )


class SubjectRows:
    """Where the subjects ``ids`` (in that order, each once) are in a dataset's rows.

    Attributes:
        ids: the subjects, as a list.
        code: per data row, its subject's position in ``ids`` (-1 for other subjects).
    """

    def __init__(self, ds: Dataset, ids: Sequence[Any]) -> None:
        self.ids = list(ids)
        index = pd.Index(self.ids)
        if index.has_duplicates:
            raise DataError(f"IDs {list(index[index.duplicated()].unique()[:10])} listed twice")
        self.code = index.get_indexer(ds.column("ID"))

    def first_values(self, values: np.ndarray) -> np.ndarray:
        """Per subject: the first non-missing entry of ``values`` (one per data row) among
        its rows, as float (NaN if none)."""
        rows = np.flatnonzero((self.code >= 0) & pd.notna(values))
        found, first = np.unique(self.code[rows], return_index=True)
        out = np.full(len(self.ids), np.nan)
        out[found] = values[rows[first]].astype(np.float64)
        return out


def baseline_notes(ds: Dataset, names: Sequence[str], subjects: SubjectRows) -> list[str]:
    """Notes for the covariates in ``names`` that change over time within a subject: the
    fits use each subject's baseline (its first non-missing value in time)."""
    notes = []
    code = subjects.code
    for name in dict.fromkeys(names):
        if name not in ds.covariates:
            continue
        values = ds.column(name)
        rows = np.flatnonzero((code >= 0) & pd.notna(values))
        if rows.size == 0:
            continue
        found, first = np.unique(code[rows], return_index=True)
        base = np.empty(len(subjects.ids), dtype=object)
        base[found] = values[rows[first]]
        varying = np.unique(code[rows][values[rows] != base[code[rows]]])
        if varying.size:
            who = [plain(subjects.ids[k]) for k in varying[:10]]
            more = f" and {varying.size - 10} more" if varying.size > 10 else ""
            notes.append(
                f"covariate {name} changes over time within IDs {shown(who, False)}{more}: "
                "time-varying covariates are not supported, each subject's baseline (first "
                "non-missing value) is used"
            )
    return notes


def derived_dose(ds: Dataset, subjects: SubjectRows) -> np.ndarray | None:
    """Per subject, the AMT infused at TIME 0 (the DOSE covariate a data set without a DOSE
    column implies), NaN for a subject without a dose record; None when the data have no
    dose record at TIME 0."""
    doses = ds.doses()
    doses = doses[doses["TIME"] == 0]
    if doses.empty:
        return None
    n = len(subjects.ids)
    code = pd.Index(subjects.ids).get_indexer(doses["ID"])
    mine = code >= 0
    total = np.bincount(code[mine], weights=doses["AMT"].to_numpy()[mine], minlength=n)
    return np.where(np.bincount(code[mine], minlength=n) > 0, total, np.nan)


def subject_covariate_matrix(ds: Dataset, model: Model, subjects: SubjectRows) -> np.ndarray:
    """(n, n_cov) covariates: the data's baseline value, else (DOSE) the AMT given at TIME 0.

    A model covariate the data do not have takes the model's reference value.
    """
    ids = subjects.ids
    dose = derived_dose(ds, subjects)
    columns = []
    for name, covariate in model.covariates.items():
        if name in ds.covariates:
            values = subjects.first_values(ds.column(name))
        elif name == "DOSE" and dose is not None:
            values = dose
        else:
            values = np.full(len(ids), covariate.reference)
        missing = [ids[k] for k in np.flatnonzero(~np.isfinite(values))]
        if missing:
            raise DataError(f"column {name}: no value for IDs {missing[:10]}")
        columns.append(values)
    return np.column_stack(columns) if columns else np.zeros((len(ids), 0))


def reinfusions(
    ds: Dataset, model: Model, ids: Sequence[Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The doses after TIME 0 of subjects ``ids`` (ADDL written out, resets flagged; see
    :mod:`cartpk.dosing`) as the kernels' ragged arrays (time, amount, reset, offsets)."""
    doses = ds.doses()
    doses = doses[(doses["TIME"] > 0) & doses["ID"].isin(list(ids))]
    boluses = doses["EVID"] != RESET_DOSE
    if model.dose_state is None and boluses.any():
        raise DataError(
            f"column EVID: doses after TIME 0 ({rows_text(np.unique(doses['ROW'][boluses]))}) "
            f"but model {model.name!r} has no [dosing] section for re-infusions"
        )
    return ragged(doses, ids)


def error_columns(
    analyte: np.ndarray, errors: dict[str, tuple[str, dict[str, float]]], values: dict
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-row error model code and parameters (ea, eb) for the kernels.

    ``errors``: analyte -> (kind, ...); ``values``: analyte -> {error parameter: value}.
    ``ea`` holds sigma (log) or a (additive, combined); ``eb`` holds b.
    """
    kind = np.zeros(analyte.size, dtype=np.int64)
    ea = np.zeros(analyte.size)
    eb = np.zeros(analyte.size)
    for name, (model_kind, _) in errors.items():
        rows = analyte == name
        kind[rows] = KIND_CODES[model_kind]
        ea[rows] = values[name].get("sigma", values[name].get("a", 0.0))
        eb[rows] = values[name].get("b", 0.0)
    return kind, ea, eb
