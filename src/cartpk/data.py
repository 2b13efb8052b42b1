"""Read and validate datasets in the long, NONMEM-compatible format.

One row per observation or dose. Columns (case-insensitive): ID, TIME (days since CAR-T
infusion), DV (observed value in the analyte's unit), ANALYTE (alias DVID), LLOQ, CENS
(alias BLQ; 1 = below LLOQ), EVID (1 = dose record), AMT (dose, CAR-T cells/kg), MDV
(1 = ignore DV); every other column is a covariate (DOSE, WT, ...).

Every problem raises :class:`cartpk.errors.DataError` naming the column, the first
offending rows (1-based data rows of the user's table) and what is wrong. The caller's
DataFrame is never modified and no row is dropped silently.
"""

from __future__ import annotations

from collections.abc import Sequence
from os import PathLike
from pathlib import Path

import numpy as np
import pandas as pd

from .errors import DataError

STANDARD = ("ID", "TIME", "DV", "ANALYTE", "LLOQ", "CENS", "EVID", "AMT", "MDV")
ALIASES = {"DVID": "ANALYTE", "BLQ": "CENS"}
SHOWN_ROWS = 5


def rows_text(rows: pd.Series | np.ndarray) -> str:
    """Describe offending row numbers: the first few and how many in all."""
    rows = list(rows)
    shown = ", ".join(str(int(r)) for r in rows[:SHOWN_ROWS])
    more = f" and {len(rows) - SHOWN_ROWS} more" if len(rows) > SHOWN_ROWS else ""
    return f"row{'s' if len(rows) > 1 else ''} {shown}{more}"


def fail(frame: pd.DataFrame, mask: pd.Series, column: str, problem: str) -> None:
    """Raise a DataError for the rows selected by ``mask``, if any."""
    if mask.any():
        raise DataError(f"column {column}: {problem} ({rows_text(frame.loc[mask, 'ROW'])})")


def canonical_columns(frame: pd.DataFrame) -> pd.DataFrame:
    """Upper-case the column names, apply aliases and refuse duplicates."""
    names = [ALIASES.get(str(c).strip().upper(), str(c).strip().upper()) for c in frame.columns]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise DataError(
            f"columns {', '.join(duplicated)} appear more than once "
            "(names are case-insensitive; DVID is ANALYTE, BLQ is CENS)"
        )
    out = frame.copy(deep=True)
    out.columns = names
    return out


def numeric(frame: pd.DataFrame, column: str) -> None:
    """Convert a column to float in place on our copy, naming rows that are not numbers."""
    raw = frame[column]
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        frame[column] = raw.astype(float)
        return
    values = pd.to_numeric(raw, errors="coerce")
    suspect = values.isna() & raw.notna()
    bad = suspect & (raw[suspect].astype(str).str.strip() != "").reindex(
        raw.index, fill_value=False
    )
    if bad.any():
        found = ", ".join(repr(v) for v in raw[bad].head(3))
        fail(frame, bad, column, f"not a number (found {found})")
    frame[column] = values.astype(float)


def fill_flags(frame: pd.DataFrame) -> None:
    """Give the optional flag columns their defaults and check they are 0/1."""
    for column in ("CENS", "EVID", "MDV"):
        if column not in frame:
            frame[column] = 0.0
        numeric(frame, column)
        frame[column] = frame[column].fillna(0.0)
        fail(frame, ~frame[column].isin([0.0, 1.0]), column, "must be 0 or 1")
    for column in ("LLOQ", "AMT"):
        if column not in frame:
            frame[column] = np.nan
        numeric(frame, column)


def check_required(frame: pd.DataFrame) -> None:
    """ID, TIME and DV must be present and well formed."""
    missing = [c for c in ("ID", "TIME", "DV") if c not in frame]
    if missing:
        raise DataError(
            f"missing required column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(found: {', '.join(map(str, frame.columns.drop('ROW')))})"
        )
    ids = frame["ID"]
    fail(frame, ids.isna() | (ids.astype(str).str.strip() == ""), "ID", "missing subject ID")
    numeric(frame, "TIME")
    fail(frame, frame["TIME"].isna(), "TIME", "missing or NaN time")
    fail(frame, ~np.isfinite(frame["TIME"]), "TIME", "time is not finite")
    numeric(frame, "DV")


def check_censoring(frame: pd.DataFrame, has_lloq: bool) -> None:
    """Censored rows need an LLOQ: the LLOQ column, or DV when there is no such column."""
    cens = (frame["EVID"] == 0) & (frame["MDV"] == 0) & (frame["CENS"] == 1)
    if has_lloq:
        fail(frame, cens & frame["LLOQ"].isna(), "LLOQ", "CENS=1 without an LLOQ")
    else:
        fail(
            frame,
            cens & frame["DV"].isna(),
            "CENS",
            "CENS=1 without an LLOQ (no LLOQ column and DV, which then holds the LLOQ, is empty)",
        )
        frame.loc[cens, "LLOQ"] = frame.loc[cens, "DV"]
    fail(frame, frame["LLOQ"] < 0, "LLOQ", "negative LLOQ")


def check_observations(frame: pd.DataFrame) -> None:
    """DV present and non-negative on observation rows; no duplicates."""
    obs = (frame["EVID"] == 0) & (frame["MDV"] == 0)
    censored_at_lloq = obs & (frame["CENS"] == 1) & frame["DV"].isna()
    frame.loc[censored_at_lloq, "DV"] = frame.loc[censored_at_lloq, "LLOQ"]
    fail(frame, obs & frame["DV"].isna(), "DV", "missing DV on an observation row (MDV=0)")
    fail(frame, obs & (frame["DV"] < 0), "DV", "negative value: concentrations must be >= 0")
    keys = frame.loc[obs, ["ID", "TIME", "ANALYTE"]]
    dup = keys.duplicated(keep=False).reindex(frame.index, fill_value=False)
    fail(frame, dup, "TIME", "duplicate observation of the same ID, TIME and ANALYTE")


def check_doses(frame: pd.DataFrame) -> None:
    """Dose records need a positive AMT."""
    dose = frame["EVID"] == 1
    bad = dose & ~(frame["AMT"] > 0)
    fail(frame, bad, "AMT", "dose record (EVID=1) without a positive AMT")


def read_table(source: str | PathLike[str] | pd.DataFrame) -> pd.DataFrame:
    """Load the raw table: a DataFrame is copied (with a fresh 0..n-1 index), a path is read
    as CSV."""
    if isinstance(source, pd.DataFrame):
        return source.reset_index(drop=True)
    path = Path(source)
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        return pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot be read as CSV ({err})") from None


class Dataset:
    """A validated dataset: a canonical copy of the user's table and views on it.

    Attributes:
        frame: the validated copy, columns ID, TIME (day), DV, ANALYTE, LLOQ, CENS, EVID,
            AMT, MDV, the covariates and ROW (1-based row of the user's table), sorted by
            ID then TIME.
        ids: subject IDs in order of appearance after sorting.
        analytes: the analytes observed.
        covariates: covariate column names.
    """

    def __init__(self, frame: pd.DataFrame) -> None:
        self.frame = frame
        self.ids = pd.unique(frame["ID"])
        observed = frame.loc[frame["EVID"] == 0, "ANALYTE"]
        self.analytes = tuple(str(a) for a in pd.unique(observed))
        self.covariates = tuple(c for c in frame.columns if c not in (*STANDARD, "ROW"))

    def __repr__(self) -> str:
        return (
            f"Dataset({len(self.ids)} subjects, {len(self.frame)} rows, "
            f"analytes {', '.join(self.analytes)}, covariates {', '.join(self.covariates)})"
        )

    def observations(self, analyte: str | None = None) -> pd.DataFrame:
        """Observation rows (EVID 0, MDV 0), for one analyte if given."""
        frame = self.frame
        obs = frame[(frame["EVID"] == 0) & (frame["MDV"] == 0)]
        if analyte is None:
            return obs.copy()
        if analyte not in self.analytes:
            raise DataError(
                f"column ANALYTE: no observations of {analyte!r} "
                f"(the data have: {', '.join(self.analytes)})"
            )
        return obs[obs["ANALYTE"] == analyte].copy()

    def doses(self) -> pd.DataFrame:
        """Dose records (EVID 1)."""
        return self.frame[self.frame["EVID"] == 1].copy()

    def subject_covariates(self) -> pd.DataFrame:
        """One row per ID: each covariate's first non-missing value (the baseline)."""
        grouped = self.frame.groupby("ID", sort=False)[list(self.covariates)]
        return grouped.first()

    def require_positive(self, analyte: str) -> None:
        """Refuse DV <= 0 for an analyte fitted with a log-scale error model."""
        obs = self.observations(analyte)
        bad = (obs["DV"] <= 0) & (obs["CENS"] == 0)
        if bad.any():
            raise DataError(
                f"column DV: {analyte} values must be > 0 for a log-scale error model "
                f"({rows_text(obs.loc[bad, 'ROW'])}); mark values below the LLOQ with CENS=1"
            )

    def require_analytes(self, available: Sequence[str]) -> None:
        """Refuse analytes that a model has no output for."""
        missing = [a for a in self.analytes if a not in available]
        if missing:
            raise DataError(
                f"column ANALYTE: the model has no output for {', '.join(missing)} "
                f"(its outputs: {', '.join(available)})"
            )


def read_dataset(
    source: str | PathLike[str] | pd.DataFrame, default_analyte: str = "CART"
) -> Dataset:
    """Read and validate a dataset from a CSV path or a DataFrame (never modified).

    Args:
        source: path to a CSV file, or a DataFrame.
        default_analyte: the analyte name given to every row when there is no ANALYTE
            (or DVID) column.

    Returns:
        A :class:`Dataset`.

    Raises:
        DataError: naming the column, the first offending rows and the problem.
    """
    frame = read_table(source)
    if frame.empty:
        raise DataError("the table has no rows")
    frame = canonical_columns(frame)
    frame["ROW"] = np.arange(1, len(frame) + 1)
    check_required(frame)
    has_lloq = "LLOQ" in frame
    fill_flags(frame)
    if "ANALYTE" not in frame:
        frame["ANALYTE"] = default_analyte
    frame["ANALYTE"] = frame["ANALYTE"].astype(str).str.strip()
    check_censoring(frame, has_lloq)
    check_observations(frame)
    check_doses(frame)
    frame = frame.sort_values(["ID", "TIME"], kind="stable").reset_index(drop=True)
    return Dataset(frame)


def as_dataset(obj: Dataset | pd.DataFrame | str | PathLike[str]) -> Dataset:
    """Return ``obj`` if it is a Dataset, otherwise read and validate it."""
    return obj if isinstance(obj, Dataset) else read_dataset(obj)
