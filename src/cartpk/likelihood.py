"""Pieces of the fitting objective: residual error models, the M3 term, priors.

All functions return contributions to −2 log-likelihood (the full Gaussian constant
included), so that objective values are comparable with NONMEM/nlmixr2 OFVs computed on
the same scale. The ``log`` error model is Gaussian on log(DV): its −2LL is that of log(DV).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy.special import log_ndtr

from .data import Dataset, rows_text
from .errors import DataError

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


def prior_penalty(estimates: np.ndarray, means: np.ndarray, sds: np.ndarray) -> float:
    """−2 log of Gaussian priors on the estimation scale, without constants: Σ((θ−μ)/sd)²."""
    return float(np.sum(((estimates - means) / sds) ** 2))


KIND_CODES = {"log": 0, "proportional": 1, "additive": 2, "combined": 3}


@dataclass
class ObservationArrays:
    """Subjects' observations and re-infusions as the flat arrays the numba kernels take.

    Subject i owns observation rows ``off[i]:off[i+1]`` (sorted by time, days) and dose rows
    ``d_off[i]:d_off[i+1]``; ``covariates`` is (n, n_cov) in the model's covariate order.
    Doses at TIME 0 are not listed: the infusion is in the model's initial condition through
    the DOSE covariate. Observations before TIME 0 are counted, not used.
    """

    ids: list[Any]
    off: np.ndarray
    time: np.ndarray
    out: np.ndarray
    dv: np.ndarray
    cens: np.ndarray
    lloq: np.ndarray
    analyte: np.ndarray
    covariates: np.ndarray
    d_time: np.ndarray
    d_amt: np.ndarray
    d_off: np.ndarray
    excluded_before_infusion: int

    def subject(self, i: int) -> dict[str, np.ndarray]:
        """Subject i's slices of the observation arrays."""
        rows = slice(self.off[i], self.off[i + 1])
        return {
            name: getattr(self, name)[rows]
            for name in ("time", "out", "dv", "cens", "lloq", "analyte")
        }


def pack_observations(ds: Dataset, model: Model, ids: Sequence[Any]) -> ObservationArrays:
    """Flat observation, dose and covariate arrays of subjects ``ids`` (in that order)."""
    ds.require_analytes(model.outputs)
    obs = ds.observations()
    obs = obs[obs["ID"].isin(ids)]
    early = int((obs["TIME"] < 0).sum())
    obs = obs[obs["TIME"] >= 0]
    order = {subject: k for k, subject in enumerate(ids)}
    obs = obs.assign(_k=obs["ID"].map(order)).sort_values(["_k", "TIME"], kind="stable")
    counts = obs["_k"].value_counts().reindex(range(len(ids)), fill_value=0).to_numpy()
    empty = [ids[k] for k in np.flatnonzero(counts == 0)]
    if empty:
        raise DataError(f"IDs {empty[:10]}: no observations at TIME >= 0 to fit")
    d_time, d_amt, d_off = reinfusions(ds, model, ids)
    return ObservationArrays(
        ids=list(ids),
        off=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        time=obs["TIME"].to_numpy(np.float64),
        out=np.array([model.outputs.index(a) for a in obs["ANALYTE"]], dtype=np.int64),
        dv=obs["DV"].to_numpy(np.float64),
        cens=obs["CENS"].to_numpy(np.int64),
        lloq=obs["LLOQ"].to_numpy(np.float64),
        analyte=obs["ANALYTE"].to_numpy(str),
        covariates=subject_covariate_matrix(ds, model, ids),
        d_time=d_time,
        d_amt=d_amt,
        d_off=d_off,
        excluded_before_infusion=early,
    )


def subject_covariate_matrix(ds: Dataset, model: Model, ids: Sequence[Any]) -> np.ndarray:
    """(n, n_cov) covariates: the data's baseline value, else (DOSE) the AMT given at TIME 0.

    A model covariate the data do not have takes the model's reference value.
    """
    table = ds.subject_covariates() if ds.covariates else pd.DataFrame(index=ds.ids)
    doses = ds.doses()
    at_zero = doses[doses["TIME"] == 0].groupby("ID")["AMT"].sum()
    columns = []
    for name, covariate in model.covariates.items():
        if name in table:
            values = table[name].reindex(ids).to_numpy(np.float64)
        elif name == "DOSE" and not at_zero.empty:
            values = at_zero.reindex(ids).to_numpy(np.float64)
        else:
            values = np.full(len(ids), covariate.reference)
        missing = [ids[k] for k in np.flatnonzero(~np.isfinite(values))]
        if missing:
            raise DataError(f"column {name}: no value for IDs {missing[:10]}")
        columns.append(values)
    return np.column_stack(columns) if columns else np.zeros((len(ids), 0))


def reinfusions(
    ds: Dataset, model: Model, ids: Sequence[Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Dose records after TIME 0 as ragged arrays (time, amount, offsets) over ``ids``."""
    doses = ds.doses()
    later = doses[(doses["TIME"] > 0) & doses["ID"].isin(ids)]
    if not later.empty and model.dose_state is None:
        raise DataError(
            f"column EVID: doses after TIME 0 ({rows_text(later['ROW'])}) but model "
            f"{model.name!r} has no [dosing] section for re-infusions"
        )
    groups = {subject: part for subject, part in later.groupby("ID", sort=False)}
    parts = [groups.get(subject, later.iloc[:0]) for subject in ids]
    counts = [len(part) for part in parts]
    return (
        np.concatenate([part["TIME"].to_numpy(np.float64) for part in parts]),
        np.concatenate([part["AMT"].to_numpy(np.float64) for part in parts]),
        np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
    )


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
