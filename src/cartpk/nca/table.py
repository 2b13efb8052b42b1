"""nca(): the NCA table of a data set, one row per subject; nca_summary(): its statistics."""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..errors import DataError
from .inputs import _check_auc_method, _check_blq, _check_intervals, _pack
from .kernel import (
    _INTERVAL_REASONS,
    _NPOINTS,
    _REASONS,
    _REDOSED,
    INTERVAL_AUCS,
    PARAMETERS,
    run_kernel,
)


def _reasons(
    code: np.ndarray, int_code: np.ndarray, names: list[str], dropped_na: np.ndarray
) -> np.ndarray:
    """Reason strings, built once per distinct combination of codes and dropped-row counts."""
    codes = np.column_stack([dropped_na, code, int_code])
    flagged = np.flatnonzero(codes.any(axis=1))
    combos, inverse = np.unique(codes[flagged], axis=0, return_inverse=True)
    texts = []
    for combo in combos:
        parts = []
        if combo[0]:
            rows = "row" if combo[0] == 1 else "rows"
            parts.append(f"{combo[0]} {rows} with a missing DV dropped (as PKNCA)")
        parts += [text for bit, text in _REASONS if combo[1] & bit]
        for name, c in zip(names, combo[2:], strict=True):
            parts += [f"{name}: {text}" for bit, text in _INTERVAL_REASONS if c & bit]
        texts.append("; ".join(parts))
    reasons = np.full(code.size, "", dtype=object)
    reasons[flagged] = np.array(texts, dtype=object)[inverse.ravel()]
    return reasons


def _observations(
    data: Any, analyte: str | None
) -> tuple[pd.DataFrame, np.ndarray, pd.DataFrame, np.ndarray]:
    """Observation rows, subject IDs, baseline covariates and each subject's last dose time
    (day; -inf without dose records)."""
    from ..data import Dataset, read_dataset

    ds = data if isinstance(data, Dataset) else read_dataset(data, missing_dv="keep")
    if analyte is None and len(ds.analytes) > 1:
        raise DataError(
            f"ANALYTE: the data hold {len(ds.analytes)} analytes "
            f"({', '.join(map(str, ds.analytes))}); choose one with analyte=..."
        )
    obs = ds.observations(analyte)
    ids = np.asarray(ds.ids)
    doses = ds.doses()
    last = doses.groupby("ID", sort=False)["TIME"].max()
    last_dose = last.reindex(ids).to_numpy(dtype=np.float64, na_value=-np.inf)
    return obs, ids, ds.subject_covariates(), last_dose


def nca(
    data: Any,
    analyte: str | None = None,
    intervals: Iterable[Sequence[float]] = ((0, 28),),
    auc_method: str = "lin-up/log-down",
    blq: Mapping[str, Any] | None = None,
    by: str | Sequence[str] | None = None,
    interval_aucs: str | Sequence[str] = "aucint.last",
) -> pd.DataFrame:
    """Non-compartmental analysis, one row per subject.

    Args:
        data: anything :func:`cartpk.data.as_dataset` accepts (Dataset, DataFrame, CSV path).
            TIME in days (negative = before infusion; included), DV in the analyte's unit;
            ``CENS == 1`` (or ``DV == 0``) marks a BLQ row. Observation rows with a missing
            DV that are not BLQ are dropped, as PKNCA's ``conc.na = "drop"`` does, and
            ``exclude`` says how many per subject.
        analyte: the analyte to analyse; may be None only if the data hold one analyte.
        intervals: (start, end) pairs in days; ``end`` may be ``inf``. Each gives one
            column per name in ``interval_aucs``.
        auc_method: ``"lin-up/log-down"`` (PKNCA's default) or ``"linear"``.
        blq: what to do with BLQ rows before the first, between the first and last, and
            after the last quantified concentration: ``{"first": ..., "middle": ...,
            "last": ...}``, each ``"keep"`` (as 0), ``"drop"``, ``"lloq/2"`` or a number
            to substitute. Default PKNCA's ``{"first": "keep", "middle": "drop",
            "last": "keep"}``. Substituted values count as measured concentrations (for
            tlast, λz and the AUCs), as in PKNCA.
        by: the baseline covariate(s) to carry into the table (e.g. ``"DOSE"``, for
            :func:`nca_summary`); None carries all of them. An unknown name raises
            :class:`cartpk.DataError`.
        interval_aucs: which of PKNCA's interval AUCs to compute for each interval, one or
            more of :data:`INTERVAL_AUCS`: ``"aucint.last"`` (column
            ``auc_<start>_<end>``; 0 after tlast, as AUClast), ``"aucint.inf.obs"``
            (``aucint_inf_obs_<start>_<end>``; extrapolated after tlast with
            clast·exp(−λz·(t − tlast)), NaN when that is needed and λz is not available)
            and ``"aucint.all"`` (``aucint_all_<start>_<end>``; after tlast, the line from
            clast down to the next BLQ sample, as AUCall). See :mod:`cartpk.nca` for the
            rules at the interval ends and for BLQ samples after tlast.

    Returns:
        DataFrame with ``ID``, the subjects' baseline covariates, then the columns of
        :data:`PARAMETERS` (concentrations in the analyte's unit, times in days, AUCs in
        unit·day, ``lambda_z`` in 1/day, ``auc_pct_extrap_*`` in %, ``span_ratio``
        unitless), the interval AUC columns (unit·day; interval by interval, in the order
        of ``interval_aucs``), ``last_dose`` (day of the last dose when a subject was dosed
        again after its first observation, else NaN) and ``exclude``: why some values are
        NaN, restricted or rest on an assumption (rows dropped, an interval starting before
        the first or ending after the last sample), empty when everything was computed
        from the whole profile. After a re-infusion, as in PKNCA, λz is not taken
        across a dose: it is fitted only to the points after the peak that follows the last
        dose, and ``aucinf_*``, ``auc_pct_extrap_*`` and ``aucint_inf_obs_*`` use
        that λz; ``cmax``, ``tmax`` and ``auclast`` still cover the whole profile.
    """
    log_down = _check_auc_method(auc_method)
    rules, fills = _check_blq(blq)
    intervals_checked, names = _check_intervals(intervals, interval_aucs)
    obs, ids, covariates, last_dose = _observations(data, analyte)
    covariates = _select_covariates(covariates, by)
    return _nca_table(
        obs, ids, covariates, (intervals_checked, names), (rules, fills), log_down, last_dose
    )


def _select_covariates(covariates: pd.DataFrame, by: str | Sequence[str] | None) -> pd.DataFrame:
    if by is None:
        return covariates
    names = _as_list(by)
    missing = [name for name in names if name not in covariates.columns]
    if missing:
        raise DataError(
            f"by: no covariate {', '.join(map(repr, missing))}; "
            f"the data have {', '.join(map(repr, covariates.columns)) or 'none'}"
        )
    return covariates[names]


def _nca_table(
    obs, ids, covariates, intervals, blq_rules, log_down, last_dose=None
) -> pd.DataFrame:
    arrays, names = intervals
    packed = _pack(obs, ids, blq_rules[0])
    if last_dose is None:
        last_dose = np.full(ids.size, -np.inf)
    res, auc_int, code, int_code = run_kernel(
        packed, ids.size, blq_rules, arrays, log_down, last_dose
    )
    columns: dict[str, Any] = {"ID": ids}
    for name, values in covariates.reindex(ids).items():
        columns[str(name)] = values.to_numpy()
    for k, name in enumerate(PARAMETERS):
        columns[name] = res[:, k]
    columns["lambda_z_npoints"] = pd.array(res[:, _NPOINTS], dtype="Int64")
    for k, name in enumerate(names):
        columns[name] = auc_int[:, k]
    redosed = (code & _REDOSED) != 0
    columns["last_dose"] = np.where(redosed, last_dose, np.nan)
    columns["exclude"] = _reasons(code, int_code, names, packed["dropped_na"])
    return pd.DataFrame(columns)


def _as_list(by: str | Sequence[str] | None) -> list[str]:
    if by is None:
        return []
    return [by] if isinstance(by, str) else list(by)


def _summary_parameters(table: pd.DataFrame, parameters: Sequence[str] | None) -> list[str]:
    if parameters is None:
        prefixes = tuple(f"{prefix}_" for prefix in INTERVAL_AUCS.values())
        return [c for c in table.columns if c in PARAMETERS or c.startswith(prefixes)]
    unknown = [p for p in parameters if p not in table.columns]
    if unknown:
        raise DataError(f"parameters: no column {', '.join(map(repr, unknown))} in the table")
    return list(parameters)


def nca_summary(
    table: pd.DataFrame,
    by: str | Sequence[str] | None = None,
    parameters: Sequence[str] | None = None,
) -> pd.DataFrame:
    """Descriptive statistics of an :func:`nca` table, per group and parameter (long format).

    Columns: the ``by`` columns, ``parameter``, ``n`` (non-missing values), ``n_geo``
    (positive values: the geometric statistics use only these, so ``n - n_geo`` values
    were excluded from them), ``geomean`` (exp of the mean log), ``geocv_pct``
    (100·sqrt(exp(sd_log²) − 1), sd_log with ddof 1), ``mean``, ``sd`` (ddof 1),
    ``median``, ``min``, ``max``. Units are those of each parameter. For ``tmax`` the
    median and range are the meaningful statistics; all are reported.
    """
    keys = _as_list(by)
    missing = [k for k in keys if k not in table.columns]
    if missing:
        raise DataError(f"by: no column {', '.join(map(repr, missing))} in the NCA table")
    names = _summary_parameters(table, parameters)
    long = table[keys + names].melt(id_vars=keys, var_name="parameter", value_name="value")
    values = pd.to_numeric(long["value"]).to_numpy(dtype=np.float64, na_value=np.nan)
    long["value"] = values
    long["log"] = np.log(np.where(values > 0, values, np.nan))
    long["parameter"] = pd.Categorical(long["parameter"], categories=names, ordered=True)
    grouped = long.groupby([*keys, "parameter"], observed=True, sort=True, dropna=False)
    stats = grouped.agg(
        n=("value", "count"),
        n_geo=("log", "count"),
        mean_log=("log", "mean"),
        sd_log=("log", "std"),
        mean=("value", "mean"),
        sd=("value", "std"),
        median=("value", "median"),
        min=("value", "min"),
        max=("value", "max"),
    ).reset_index()
    stats.insert(len(keys) + 3, "geomean", np.exp(stats.pop("mean_log")))
    stats.insert(len(keys) + 4, "geocv_pct", 100 * np.sqrt(np.expm1(stats.pop("sd_log") ** 2)))
    stats["parameter"] = stats["parameter"].astype(str)
    return stats
