"""Read and validate datasets in the long, NONMEM-compatible format.

One row per observation or event. Columns (case-insensitive): ID, TIME (days since CAR-T
infusion), DV (observed value in the analyte's unit), ANALYTE (alias DVID), LLOQ, CENS
(alias BLQ; 1 = censored), LIMIT (lower bound of a censored value), EVID (0 observation,
1 dose, 2 other-type event, 3 reset, 4 reset and dose), AMT (dose, CAR-T cells/kg), MDV
(1 = ignore DV), and NONMEM's dose items ADDL (additional doses), II (their interval,
days), SS and RATE (0 or empty only); every other column is a covariate (DOSE, WT, ...).

Censored observations follow Monolix's CENSORING / LIMIT convention (the MonolixSuite data
set documentation, "Columns used to define observations"; nlmixr2 reads the same CENS and
LIMIT columns, its M3/M4 methods):

* CENS = 1 without a LIMIT (empty or "."): below the LLOQ, the value lies in
  (−inf, LLOQ] on the error model's scale ((0, LLOQ] for a log error model): Beal's M3.
  The bound is the LLOQ column, or DV when the table has no LLOQ column (a missing DV
  takes the LLOQ).
* CENS = 1 with a LIMIT: interval-censored, the value lies in [LIMIT, DV] (same unit as
  DV; DV is the upper bound, as in Monolix, and a missing DV takes the row's LLOQ). This
  is how a titre is given: positive at 1:32 and negative at the next dilution step 1:100
  is LIMIT = 32, DV = 100. LIMIT = 0 is a lower bound of 0: for a log error model that
  is no lower bound (the M3 term up to DV); for the other error models, which put mass
  below 0, it is P(0 <= Y <= DV), as in Monolix.
* CENS = 0: quantified; LIMIT must be empty.

Right-censoring (Monolix's CENS = −1) is not supported: CENS must be 0 or 1.

Every problem raises :class:`cartpk.errors.DataError` naming the column, the first
offending rows (1-based data rows of the user's table) and what is wrong. The caller's
DataFrame is never modified and no row is dropped silently.

NONMEM conventions: "." (like an empty cell) means missing in any column, so DV, AMT or a
covariate may be "." on the rows where it does not apply. TIME is days since the first CAR-T
infusion: a subject's first dose record (EVID=1 or 4), if it has one, must be at TIME 0, and
a DOSE column must agree with the AMT infused at TIME 0. A numeric DVID (1, 2, ...) is mapped
to model output names by the ``dvid`` argument of :func:`read_dataset`.

Dose records (:mod:`cartpk.dosing` reads and expands them, for the fits as for
:func:`cartpk.simulate`'s ``doses`` tables):

* EVID 1 is a dose, EVID 0 an observation (with MDV 0). EVID 2, an other-type event, is
  neither: its DV is ignored, it may carry covariate values (which, like any covariate,
  count through the subject's baseline). EVID 3 resets, EVID 4 resets and doses.
* The doses at TIME 0 make the DOSE covariate (the models hold the infusion in their
  initial state, through their dose link); a dose after TIME 0 is a re-infusion, added to
  the model's dosing state (its ``[dosing]`` section).
* ADDL and II: a dose record at TIME t with ADDL = n and II = d gives n further doses, at
  t + d, ..., t + n d, each like the record's (an EVID 4 record's further doses are plain
  doses). ADDL must be a whole number >= 0 and II > 0 days when ADDL > 0; II without ADDL,
  ADDL without a positive II, and either on a row that is not a dose record are refused.
* A reset starts the subject afresh at its next dose (an EVID 4 record's own): from that
  dose, at time T, the subject is solved as if infused at T, from the model's initial
  state with DOSE = the AMT infused at T and with the model's clock at t - T (so ck_stein's
  expansion lasts until T + tmax), its parameters and other covariates unchanged.
  Observations at T see the fresh start (as an observation at a dose's time sees the
  dose). There is no state without CAR-T cells, so an observation between an EVID 3 reset
  and the next dose is refused, as are: a reset before the subject's first dose record
  (an EVID 4 that is the first dose record is a plain dose), additional doses (ADDL) that
  reach a later reset, a dose at a reset's TIME listed before the reset (it would be
  discarded), and an AMT on an EVID 2 or 3 row.
* SS and RATE must be 0 or empty: steady state has no meaning for these non-linear
  kinetics, which never settle into a dosing steady state, and a CAR-T infusion of minutes
  is given as a bolus.
"""

from __future__ import annotations

import csv
import re
import warnings
from collections.abc import Mapping, Sequence
from importlib.resources import files
from os import PathLike
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from .dosing import DOSE, DOSE_ITEMS, RESET_DOSE, check_records, dose_events
from .errors import NOT_FINITE, SHOWN_ROWS, DataError, fail, rows_text, shown

#: the columns cartpk reads (NONMEM's dose items included); every other column is a covariate
STANDARD = ("ID", "TIME", "DV", "ANALYTE", "LLOQ", "CENS", "LIMIT", "EVID", "AMT", "MDV")
STANDARD += DOSE_ITEMS
ALIASES = {"DVID": "ANALYTE", "BLQ": "CENS"}
# columns the reader adds after the user's, in this order, when the table lacks them
ADDED = ("ROW", "CENS", "EVID", "MDV", "LLOQ", "AMT", "ANALYTE", "LIMIT")
MISSING_TEXT = ("", ".")  # cell contents that mean "missing" (NONMEM writes ".")


def bundled(name: str) -> Path:
    """Path of a data set shipped with cartpk (``cartpk/datasets``, ``data/`` in a checkout)."""
    return Path(str(files("cartpk.datasets") / name))


def canonical_names(frame: pd.DataFrame) -> list[str]:
    """The upper-cased column names with aliases applied; duplicates refused."""
    names = [ALIASES.get(str(c).strip().upper(), str(c).strip().upper()) for c in frame.columns]
    duplicated = sorted({n for n in names if names.count(n) > 1})
    if duplicated:
        raise DataError(
            f"columns {', '.join(duplicated)} appear more than once "
            "(names are case-insensitive; DVID is ANALYTE, BLQ is CENS)"
        )
    return names


def numeric(raw: pd.Series, column: str) -> np.ndarray:
    """A new float array of a column, naming the rows that are not numbers.

    Empty strings and "." become NaN; any other text is an error.
    """
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        if isinstance(raw.dtype, np.dtype):
            return raw.to_numpy().astype(np.float64)
        return raw.astype(float).to_numpy(copy=True)
    raw = raw.reset_index(drop=True)
    values = pd.to_numeric(raw, errors="coerce")
    suspect = values.isna() & raw.notna()
    text = ~raw[suspect].astype(str).str.strip().isin(MISSING_TEXT)
    bad = (suspect & text.reindex(raw.index, fill_value=False)).to_numpy(bool)
    if bad.any():
        found = ", ".join(shown(v) for v in raw[bad].head(3))
        fail(bad, column, f"not a number (found {found})")
    return values.astype(float).to_numpy(copy=True)


def required(raw: dict[str, pd.Series], names: list[str]) -> dict[str, np.ndarray]:
    """ID, TIME and DV must be present and well formed: TIME and DV as float arrays."""
    missing = [c for c in ("ID", "TIME", "DV") if c not in raw]
    if missing:
        found = [n for n in names if n != "ROW"]
        raise DataError(
            f"missing required column{'s' if len(missing) > 1 else ''} {', '.join(missing)} "
            f"(found: {', '.join(found)})"
        )
    ids = raw["ID"]
    absent = ids.isna().to_numpy(bool)
    if not pd.api.types.is_numeric_dtype(ids):
        absent = absent | np.array([str(v).strip() == "" for v in ids.to_numpy(object)], bool)
    fail(absent, "ID", "missing subject ID")
    time = numeric(raw["TIME"], "TIME")
    fail(np.isnan(time), "TIME", "missing or NaN time")
    fail(~np.isfinite(time), "TIME", "time is not finite")
    dv = numeric(raw["DV"], "DV")
    fail(np.isinf(dv), "DV", NOT_FINITE)
    return {"TIME": time, "DV": dv}


def flags(raw: dict[str, pd.Series], n: int) -> dict[str, np.ndarray]:
    """CENS, EVID, MDV (0 where absent or empty; CENS and MDV must be 0 or 1, EVID is
    checked with the dose columns), LLOQ, AMT and LIMIT (NaN where absent), and the dose
    items ADDL, II, SS, RATE the table has (NaN where empty), as float arrays."""
    out = {}
    for column in ("CENS", "EVID", "MDV"):
        values = numeric(raw[column], column) if column in raw else np.zeros(n)
        values[np.isnan(values)] = 0.0
        if column != "EVID":
            fail((values != 0.0) & (values != 1.0), column, "must be 0 or 1")
        out[column] = values
    for column in ("LLOQ", "AMT", "LIMIT"):
        out[column] = numeric(raw[column], column) if column in raw else np.full(n, np.nan)
        fail(np.isinf(out[column]), column, NOT_FINITE)
    out.update({column: numeric(raw[column], column) for column in DOSE_ITEMS if column in raw})
    return out


def analyte_label(value: Any) -> str:
    """One ANALYTE / DVID entry as text: stripped, "" when missing (empty, "." or NaN), and
    a whole number without its decimal part (a numeric DVID 1 or 1.0 reads "1")."""
    if value is None or (isinstance(value, float) and np.isnan(value)):
        return ""
    if isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool):
        number = float(value)
        return str(int(number)) if number.is_integer() else str(number)
    text = str(value).strip()
    return "" if text in MISSING_TEXT else re.sub(r"^(-?\d+)\.0*$", r"\1", text)


def check_dvid(dvid: Mapping[Any, str] | None) -> dict[str, str]:
    """The ``dvid`` argument as data label -> output name (labels as :func:`analyte_label`)."""
    if dvid is None:
        return {}
    if not isinstance(dvid, Mapping):
        raise DataError(
            f"dvid: expected a mapping from DVID to model output name, e.g. "
            f"{{1: 'CART', 2: 'VEGF'}}, got {type(dvid).__name__}"
        )
    out = {}
    for key, name in dvid.items():
        if not (isinstance(name, str) and name.strip()):
            raise DataError(f"dvid: DVID {shown(key)} maps to {shown(name)}, not an output name")
        out[analyte_label(key)] = name.strip()
    return out


def analyte_column(
    raw: dict[str, pd.Series], n: int, default: str, dvid: dict[str, str]
) -> np.ndarray:
    """ANALYTE as text (object array): the column's labels (see :func:`analyte_label`)
    renamed by ``dvid``, or ``default`` on every row when there is no such column."""
    if "ANALYTE" not in raw:
        return np.full(n, str(default).strip(), dtype=object)
    codes, uniques = pd.factorize(raw["ANALYTE"], use_na_sentinel=True)
    labels = [analyte_label(u) for u in uniques]
    labels = np.array([dvid.get(label, label) for label in labels] + [""], dtype=object)
    return labels[codes]


def covariate(raw: pd.Series, column: str) -> pd.Series:
    """A covariate column, new: "" and "." are missing; text that is all numbers (once the
    missing entries are set aside) becomes float; infinite values are refused."""
    if pd.api.types.is_numeric_dtype(raw) and not pd.api.types.is_bool_dtype(raw):
        values = raw.reset_index(drop=True)
    else:
        text = raw.reset_index(drop=True).astype(object)
        blank = text.isna().to_numpy(bool) | np.array(
            [isinstance(v, str) and v.strip() in MISSING_TEXT for v in text], dtype=bool
        )
        number = pd.to_numeric(text.where(~blank), errors="coerce")
        if (number.notna() | blank).all():
            values = number.astype(float)
        else:
            values = text.where(~blank, np.nan)
    if pd.api.types.is_numeric_dtype(values):
        fail(np.isinf(values.to_numpy(np.float64)), column, NOT_FINITE)
    return values


def check_censoring(c: dict[str, np.ndarray], has_lloq: bool) -> None:
    """Censored rows need their bounds. Below the LLOQ (CENS=1, no LIMIT): an LLOQ, from the
    LLOQ column, or DV when there is no such column (copied into LLOQ). Interval-censored
    (CENS=1 with a LIMIT): the upper bound DV (or, where DV is empty, the LLOQ) above
    LIMIT >= 0. A LIMIT on a row that is not censored is refused."""
    obs = (c["EVID"] == 0) & (c["MDV"] == 0)
    cens = obs & (c["CENS"] == 1)
    limited = ~np.isnan(c["LIMIT"])
    fail(
        limited & (c["CENS"] == 0),
        "LIMIT",
        "LIMIT on a row with CENS=0 (LIMIT is the lower bound of a censored value, CENS=1; "
        "leave it empty on other rows)",
    )
    fail(
        limited & (c["LIMIT"] < 0),
        "LIMIT",
        "negative LIMIT (the lower bound of a concentration; 0 or empty means no lower bound "
        "for a log error model)",
    )
    interval = cens & limited
    below = cens & ~limited
    if has_lloq:
        fail(below & np.isnan(c["LLOQ"]), "LLOQ", "CENS=1 without an LLOQ")
        upper = np.where(np.isnan(c["DV"]), c["LLOQ"], c["DV"])
    else:
        fail(
            below & np.isnan(c["DV"]),
            "CENS",
            "CENS=1 without an LLOQ (no LLOQ column and DV, which then holds the LLOQ, is empty)",
        )
        c["LLOQ"][cens] = c["DV"][cens]
        upper = c["DV"]
    fail(
        interval & np.isnan(upper),
        "DV",
        "interval-censored row (CENS=1 with a LIMIT) without an upper bound: DV holds it "
        "(the value lies in [LIMIT, DV])",
    )
    fail(
        interval & ~(c["LIMIT"] < upper),
        "LIMIT",
        "LIMIT is not below the upper bound DV (the value lies in [LIMIT, DV])",
    )
    fail(c["LLOQ"] < 0, "LLOQ", "negative LLOQ")


def check_observations(
    c: dict[str, np.ndarray], ids: pd.Series, analyte: np.ndarray, missing_dv: str = "error"
) -> None:
    """DV present (censored rows without DV take the LLOQ; with ``missing_dv="keep"`` a
    missing DV stays NaN) and non-negative on observation rows; no two observations of the
    same ID, TIME and ANALYTE."""
    obs = (c["EVID"] == 0) & (c["MDV"] == 0)
    censored_at_lloq = obs & (c["CENS"] == 1) & np.isnan(c["DV"])
    c["DV"][censored_at_lloq] = c["LLOQ"][censored_at_lloq]
    if missing_dv != "keep":
        fail(obs & np.isnan(c["DV"]), "DV", "missing DV on an observation row (MDV=0)")
    fail(obs & (c["DV"] < 0), "DV", "negative value: concentrations must be >= 0")
    fail(obs & (analyte == ""), "ANALYTE", "missing analyte on an observation row (MDV=0)")
    dup = np.zeros(obs.size, dtype=bool)
    dup[obs] = duplicated(ids.to_numpy()[obs], c["TIME"][obs], analyte[obs])
    fail(dup, "TIME", "duplicate observation of the same ID, TIME and ANALYTE")


def duplicated(*keys: Any) -> np.ndarray:
    """Rows whose combination of ``keys`` (equal-length arrays) occurs more than once."""
    code = np.zeros(len(keys[0]), dtype=np.int64)
    for key in keys:
        part, levels = pd.factorize(key, use_na_sentinel=False)
        code, _ = pd.factorize(code * len(levels) + part)
    return np.bincount(code)[code] > 1 if code.size else np.zeros(0, dtype=bool)


def check_doses(c: dict[str, np.ndarray], ids: pd.Series, dose: pd.Series | None) -> None:
    """Each subject's first dose record (EVID 1 or 4) is at TIME 0 (the time origin is the
    first infusion), and a DOSE column agrees with the AMT at TIME 0."""
    dosing = np.isin(c["EVID"], (DOSE, RESET_DOSE))
    if not dosing.any():
        return
    code, levels = pd.factorize(ids.to_numpy(), use_na_sentinel=False)
    first = np.full(len(levels), np.inf)
    np.minimum.at(first, code[dosing], c["TIME"][dosing])
    late = np.isfinite(first) & (first != 0)
    if late.any():
        bad = np.flatnonzero(late)
        rows = dosing & late[code] & (c["TIME"] == first[code])
        who = ", ".join(f"ID {shown(levels[k])} at TIME {first[k]:g}" for k in bad[:SHOWN_ROWS])
        more = f" and {bad.size - SHOWN_ROWS} more" if bad.size > SHOWN_ROWS else ""
        fail(
            rows,
            "TIME",
            f"the first dose record (EVID=1 or 4) is not at TIME 0 ({who}{more}); TIME is days "
            "since the first CAR-T infusion: subtract each subject's infusion time from its "
            "TIME",
        )
    if dose is None or not pd.api.types.is_numeric_dtype(dose):
        return
    at_zero = dosing & (c["TIME"] == 0)
    infused = np.bincount(code[at_zero], weights=c["AMT"][at_zero], minlength=len(levels))
    given = dose.to_numpy(np.float64)
    has = np.bincount(code[at_zero], minlength=len(levels))[code] > 0
    expected = infused[code]
    conflict = has & ~np.isnan(given) & ~np.isclose(given, expected, rtol=1e-9, atol=0.0)
    if conflict.any():
        k = int(np.flatnonzero(conflict)[0])
        fail(
            conflict,
            "DOSE",
            f"contradicts the AMT infused at TIME 0 (ID {shown(ids.iloc[k])}: DOSE "
            f"{given[k]:g}, AMT {expected[k]:g}); DOSE is the dose infused at TIME 0: correct "
            "one of them, or drop the DOSE column (it is then taken from AMT)",
        )


def sort_order(ids: pd.Series, time: np.ndarray) -> np.ndarray:
    """Row order by ID then TIME, ties kept in input order (as pandas' stable sort_values)."""
    key = ids.to_numpy() if isinstance(ids.dtype, np.dtype) else ids.array
    if not (isinstance(key, np.ndarray) and key.dtype.kind in "fiub"):
        key = pd.Categorical(key, ordered=True).codes
    return np.lexsort((time, key))


def taken(column: pd.Series | np.ndarray, order: np.ndarray) -> np.ndarray | pd.Series:
    """A column in ``order``, a Series (ID, a covariate, ANALYTE) keeping its dtype."""
    if isinstance(column, np.ndarray):
        return column[order]
    if isinstance(column.dtype, np.dtype) and column.dtype.kind != "O":
        return column.to_numpy()[order]
    return pd.Series(column.array.take(order), dtype=column.dtype)


def read_table(source: str | PathLike[str] | pd.DataFrame) -> pd.DataFrame:
    """Load the raw table: a DataFrame is used as given (only read, never modified), a path
    is read as CSV."""
    if isinstance(source, pd.DataFrame):
        return source
    path = Path(source)
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a CSV file")
    if not path.is_file():
        raise DataError(f"{path}: no such file")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("error", pd.errors.ParserWarning)
            table = pd.read_csv(path, index_col=False)
    except pd.errors.ParserWarning:
        raise DataError(field_count_problem(path)) from None
    except pd.errors.ParserError as err:
        found = re.search(r"Expected (\d+) fields in line (\d+), saw (\d+)", str(err))
        if found:
            expected, line, saw = found.groups()
            raise DataError(
                f"{path}: line {line} has {saw} fields but the header has {expected} "
                "(an extra field: a stray comma or delimiter?)"
            ) from None
        raise DataError(f"{path}: cannot be read as CSV ({shown(str(err))})") from None
    except (pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DataError(f"{path}: cannot be read as CSV ({shown(str(err))})") from None
    header = [name for name in csv_header(path) if name.strip()]
    if len(set(header)) < len(header) == len(table.columns):
        table.columns = header  # as written: pandas renames a repeated TIME to TIME.1
    return table


def csv_header(path: Path) -> list[str]:
    """The first line of a CSV file, split into column names as written."""
    with path.open(newline="", encoding="utf-8-sig", errors="replace") as handle:
        return next(csv.reader(handle), [])


def field_count_problem(path: Path) -> str:
    """Name the first line whose number of fields differs from the header's."""
    with path.open(newline="", encoding="utf-8", errors="replace") as handle:
        reader = csv.reader(handle)
        header = next(reader, [])
        for line, fields in enumerate(reader, start=2):
            if len(fields) > len(header):
                return (
                    f"{path}: line {line} has {len(fields)} fields but the header has "
                    f"{len(header)} (an extra field: a stray comma or delimiter?)"
                )
    return f"{path}: the rows have more fields than the header"


class Dataset:
    """A validated dataset: a canonical copy of the user's table and views on it.

    Attributes:
        frame: the validated copy, columns ID, TIME (day), DV, ANALYTE, LLOQ, CENS, LIMIT,
            EVID, AMT, MDV, the covariates and ROW (1-based row of the user's table), sorted by
            ID then TIME.
        ids: subject IDs in order of appearance after sorting.
        analytes: the analytes observed.
        covariates: covariate column names.

    ``arrays`` (optional) holds numpy copies of some of the frame's columns, as
    ``frame[name].to_numpy()`` would give them: :meth:`column` serves them from its cache.
    """

    def __init__(self, frame: pd.DataFrame, arrays: dict[str, np.ndarray] | None = None) -> None:
        self.frame = frame
        self._columns: dict[str, np.ndarray] = {}
        self._doses: pd.DataFrame | None = None
        for name, values in (arrays or {}).items():
            self._cache(name, values)
        self.ids = pd.unique(frame["ID"])
        rows = (self.column("EVID") == 0) & (self.column("MDV") == 0)
        observed = self.column("ANALYTE")[rows]
        self.analytes = tuple(str(a) for a in pd.unique(observed))
        self.covariates = tuple(c for c in frame.columns if c not in (*STANDARD, "ROW"))

    def __repr__(self) -> str:
        return (
            f"Dataset({len(self.ids)} subjects, {len(self.frame)} rows, "
            f"analytes {', '.join(self.analytes)}, covariates {', '.join(self.covariates)})"
        )

    def column(self, name: str) -> np.ndarray:
        """Column ``name`` of :attr:`frame` as a read-only numpy array, cached (a Dataset is
        never changed after reading; ``arrays`` given to the constructor fill the cache)."""
        if name not in self._columns:
            self._cache(name, self.frame[name].to_numpy())
        return self._columns[name]

    def _cache(self, name: str, values: np.ndarray) -> None:
        """Keep a read-only view of ``values`` as column ``name``."""
        view = values.view()
        view.flags.writeable = False
        self._columns[name] = view

    def observed(self, analyte: str | None = None) -> np.ndarray:
        """Boolean array over :attr:`frame` rows: observations (EVID 0, MDV 0), of one
        analyte if given."""
        rows = (self.column("EVID") == 0) & (self.column("MDV") == 0)
        if analyte is None:
            return rows
        if analyte not in self.analytes:
            raise DataError(
                f"column ANALYTE: no observations of {analyte!r} "
                f"(the data have: {', '.join(self.analytes)})"
            )
        return rows & (self.column("ANALYTE") == analyte)

    def observations(self, analyte: str | None = None) -> pd.DataFrame:
        """Observation rows (EVID 0, MDV 0), for one analyte if given."""
        return self.frame[self.observed(analyte)].copy()

    def doses(self) -> pd.DataFrame:
        """The doses given, one row per dose, additional doses (ADDL, II) written out: ID,
        TIME (day), AMT, EVID (4 for the dose that starts a subject afresh after a reset, 1
        otherwise) and ROW (the user's row of the dose record); see :mod:`cartpk.dosing`."""
        if self._doses is None:
            items = [c for c in ("TIME", "EVID", "AMT", *DOSE_ITEMS) if c in self.frame]
            columns = {c: self.column(c).astype(np.float64) for c in items}
            rows = self.column("ROW")
            self._doses = dose_events(self.column("ID"), columns, rows, self.observed())
        return self._doses.copy()

    def subject_covariates(self) -> pd.DataFrame:
        """One row per ID: each covariate's first non-missing value (the baseline)."""
        grouped = self.frame.groupby("ID", sort=False)[list(self.covariates)]
        return grouped.first()

    def require_positive(self, analyte: str) -> None:
        """Refuse DV <= 0 for an analyte fitted with a log-scale error model."""
        bad = self.observed(analyte) & (self.column("DV") <= 0) & (self.column("CENS") == 0)
        if bad.any():
            raise DataError(
                f"column DV: {analyte} values must be > 0 for a log-scale error model "
                f"({rows_text(self.column('ROW')[bad])}); mark values below the LLOQ with CENS=1"
            )

    def require_analytes(
        self, available: Sequence[str], analytes: Sequence[str] | None = None
    ) -> None:
        """Refuse analytes (default: every analyte of the data) that a model has no output
        for."""
        missing = [
            a for a in (self.analytes if analytes is None else analytes) if a not in available
        ]
        if missing:
            hint = (
                "; name each analyte's output with dvid=, e.g. "
                f"dvid={{{shown(missing[0])}: {available[0]!r}}}, or fit a subset with "
                "analytes="
            )
            raise DataError(
                f"column ANALYTE: the model has no output for "
                f"{', '.join(shown(a, quoted=False) for a in missing[:10])} "
                f"(its outputs: {', '.join(available)}){hint}"
            )


def read_dataset(
    source: str | PathLike[str] | pd.DataFrame,
    default_analyte: str = "CART",
    dvid: Mapping[Any, str] | None = None,
    missing_dv: str = "error",
) -> Dataset:
    """Read and validate a dataset from a CSV path or a DataFrame (never modified).

    Args:
        source: path to a CSV file, or a DataFrame.
        default_analyte: the analyte name given to every row when there is no ANALYTE
            (or DVID) column.
        dvid: ANALYTE / DVID value -> model output name, e.g. ``{1: "CART", 2: "VEGF"}``
            for NONMEM's numeric DVID (1, 1.0 and "1" are the same key); values not
            listed keep their label.
        missing_dv: ``"error"`` (default) refuses an observation row (MDV=0) with a missing
            DV; ``"keep"`` keeps it with DV NaN, for :func:`cartpk.nca`, which drops such
            rows as PKNCA does and says so (a model fit needs MDV=1 on them).

    Returns:
        A :class:`Dataset`.

    Raises:
        DataError: naming the column, the first offending rows and the problem.
    """
    table = read_table(source)
    if table.empty:
        raise DataError("the table has no rows")
    names = canonical_names(table)
    raw = {name: table[label] for label, name in zip(table.columns, names, strict=True)}
    n = len(table)
    checked = required(raw, names)
    has_lloq = "LLOQ" in raw
    checked.update(flags(raw, n))
    check_records(checked)
    analyte = analyte_column(raw, n, default_analyte, check_dvid(dvid))
    check_censoring(checked, has_lloq)
    if missing_dv not in ("error", "keep"):
        raise ValueError(f"missing_dv {missing_dv!r}: expected 'error' or 'keep'")
    check_observations(checked, raw["ID"], analyte, missing_dv)
    for name in names:
        if name not in (*STANDARD, "ROW"):
            raw[name] = covariate(raw[name], name)
    check_doses(checked, raw["ID"], raw.get("DOSE"))
    checked["ROW"] = np.arange(1, n + 1)
    order = sort_order(raw["ID"], checked["TIME"])
    columns = {c: checked[c][order] for c in checked}
    columns["ANALYTE"] = taken(analyte, order)
    columns["ID"] = taken(raw["ID"], order)
    arrays = {c: np.asarray(v) for c, v in columns.items()}
    columns.update({c: taken(raw[c], order) for c in names if c not in columns})
    ordered = [*names, *(c for c in ADDED if c not in names)]
    dataset = Dataset(pd.DataFrame({c: columns[c] for c in ordered}), arrays)
    dataset.doses()  # the dose records in sequence: resets, ADDL (see cartpk.dosing)
    return dataset


def as_dataset(
    obj: Dataset | pd.DataFrame | str | PathLike[str], dvid: Mapping[Any, str] | None = None
) -> Dataset:
    """Return ``obj`` if it is a Dataset, otherwise read and validate it; ``dvid`` (see
    :func:`read_dataset`) renames analytes, of a Dataset too (in a new Dataset)."""
    if not isinstance(obj, Dataset):
        return read_dataset(obj, dvid=dvid)
    mapping = check_dvid(dvid)
    if not mapping:
        return obj
    frame = obj.frame.copy()
    frame["ANALYTE"] = [mapping.get(a, a) for a in frame["ANALYTE"].astype(str)]
    return Dataset(frame)
