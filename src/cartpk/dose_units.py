"""The dose unit a model declares, checked where a dataset's doses meet the model.

A model file's ``[dosing] unit`` says what a dose record's AMT (and the DOSE covariate, the
AMT infused at TIME 0) means: ``"cells/kg"`` (cells per kg of body weight, as the built-in
CAR-T models take it) or ``"cells"`` (a flat dose, as ``ck_nk`` takes it). NONMEM's format
carries no unit, so without a check a flat dose of 1e9 cells read by a cells/kg model would
give levels 1,000 times too high without a word. Where a dataset meets a model
(:func:`cartpk.likelihood.pack_observations`, behind :func:`cartpk.fit` and
:func:`cartpk.fit_population`), each dose record is checked:

* where the data have an ``AMTU`` column (the dose unit, on dose rows, e.g. ``cells`` or
  ``cells/kg``; case and spaces do not matter), its value must be the model's unit;
* where they do not (no column, or the row's AMTU is empty), AMT must be plausible in the
  model's unit (:data:`PLAUSIBLE`); so must a DOSE column of a subject without a dose
  record at TIME 0 (with one, DOSE equals that AMT: :func:`cartpk.read_dataset` checks it).

:func:`cartpk.simulate` checks the AMTU column of its ``doses`` table, when it has one (the
amounts of a programmatic call are the caller's, in the model's unit). A model without a
declared unit is not checked. Every problem is a :class:`cartpk.DataError` naming the
column, the rows of the user's table and what to do. :func:`cartpk.scenarios` checks its
``doses`` (a ValueError naming the entries) the same way.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Protocol

import numpy as np
import pandas as pd

from .data import Dataset
from .dosing import DOSE, RESET_DOSE
from .errors import DataError, rows_text

#: Plausible dose amounts per unit, [low, high). Generous bounds around the doses given:
#: per kg, the CAR-T labels' 0.2-5.0e6 cells/kg (tisagenlecleucel, patients <= 50 kg;
#: KYMRIAH US prescribing information) and the cord-blood CAR-NK doses of 1e5-1e7 cells/kg
#: (Liu E et al. N Engl J Med 2020;382:545-553, doi:10.1056/NEJMoa1910607); flat, the labels'
#: 50-110e6 CAR+ cells (lisocabtagene maraleucel, BREYANZI), 300-460e6 (idecabtagene
#: vicleucel, ABECMA) and 0.6-6.0e8 (tisagenlecleucel, adult lymphoma). The ranges overlap on
#: [1e7, 1e8): a dose there is accepted in either unit, and only an AMTU column can tell.
PLAUSIBLE: dict[str, tuple[float, float]] = {
    "cells/kg": (1e3, 1e8),
    "cells": (1e7, 1e12),
}
UNITS = tuple(PLAUSIBLE)
UNIT_COLUMN = "AMTU"


class DosedModel(Protocol):
    """What the check reads of a model (a :class:`cartpk.Model` has it)."""

    name: str
    dose_unit: str | None
    covariates: Mapping[str, Any]


def normalise(unit: object) -> str:
    """A unit as compared: lower case without spaces; "" for a missing one (NaN, "", ".")."""
    if unit is None or (isinstance(unit, float) and np.isnan(unit)):
        return ""
    text = "".join(str(unit).split()).lower()
    return "" if text == "." else text


def check_dataset_doses(ds: Dataset, model: DosedModel, rows: np.ndarray | None = None) -> None:
    """Check the dose records (and DOSE values) among ``rows`` (boolean over the dataset's
    rows; None: all) against the model's declared unit; see the module docstring."""
    unit = model.dose_unit
    if unit is None:
        return
    mine = np.ones(len(ds.frame), dtype=bool) if rows is None else np.asarray(rows, dtype=bool)
    dosing = mine & np.isin(ds.column("EVID"), (DOSE, RESET_DOSE))
    stated = np.full(len(ds.frame), "", dtype=object)
    if UNIT_COLUMN in ds.covariates:
        stated[dosing] = [normalise(u) for u in ds.column(UNIT_COLUMN)[dosing]]
    check_stated(stated, ds.column("ROW"), model.name, unit)
    unstated = dosing & (stated == "")
    check_amounts(ds.column("AMT"), unstated, ds.column("ROW"), model.name, unit, "AMT")
    if "DOSE" in model.covariates and "DOSE" in ds.covariates:
        dose = pd.to_numeric(pd.Series(ds.column("DOSE")), errors="coerce").to_numpy(float)
        at_zero = dosing & (ds.column("TIME") == 0)
        recorded = np.isin(ds.column("ID"), ds.column("ID")[at_zero])
        free = mine & ~recorded & np.isfinite(dose)
        check_amounts(dose, free, ds.column("ROW"), model.name, unit, "DOSE")


def check_stated(stated: np.ndarray, row: np.ndarray, model: str, unit: str) -> None:
    """Each stated unit (normalised; "" where none) must be a known unit and the model's."""
    unknown = (stated != "") & ~np.isin(stated, UNITS)
    if unknown.any():
        found = ", ".join(repr(u) for u in pd.unique(stated[unknown])[:3])
        raise DataError(
            f"column {UNIT_COLUMN}: unknown dose unit {found} ({rows_text(row[unknown])}); "
            f"known units: {', '.join(UNITS)}"
        )
    other = (stated != "") & (stated != unit)
    if other.any():
        found = ", ".join(repr(u) for u in pd.unique(stated[other]))
        raise DataError(
            f"column {UNIT_COLUMN}: doses in {found} ({rows_text(row[other])}), but model "
            f"{model!r} takes AMT in {unit!r} (its [dosing] unit): convert the doses, or use "
            f"a model that declares unit = {str(pd.unique(stated[other])[0])!r}"
        )


def check_amounts(
    values: np.ndarray, rows: np.ndarray, row: np.ndarray, model: str, unit: str, column: str
) -> None:
    """``values[rows]`` must lie within the plausible range of ``unit`` (``row``: the rows'
    numbers in the user's table)."""
    bad = rows & implausible(values, unit)
    if bad.any():
        raise DataError(
            f"column {column}: {implausible_text(float(values[bad][0]), model, unit)} "
            f"({rows_text(row[bad])}){way_out(float(values[bad][0]), unit)}"
        )


def check_dose_values(doses: np.ndarray, model: DosedModel) -> None:
    """Scenario doses (the DOSE of each virtual trial arm, in the model's unit) must be
    plausible in the model's declared unit, if it has one."""
    unit = model.dose_unit
    if unit is None:
        return
    bad = implausible(doses, unit)
    if bad.any():
        where = np.flatnonzero(bad)
        entries = f"entr{'ies' if where.size > 1 else 'y'} {', '.join(map(str, where[:5]))}"
        raise ValueError(
            f"doses: {implausible_text(float(doses[bad][0]), model.name, unit)} ({entries})"
            f"{way_out(float(doses[bad][0]), unit, stated=False)}"
        )


def implausible(values: np.ndarray, unit: str) -> np.ndarray:
    """Boolean: which ``values`` lie outside the plausible range of ``unit``."""
    low, high = PLAUSIBLE[unit]
    return ~((values >= low) & (values < high))


def implausible_text(value: float, model: str, unit: str) -> str:
    low, high = PLAUSIBLE[unit]
    return (
        f"{value:g} is not a plausible dose in {unit!r}, the unit model {model!r} declares "
        f"([dosing] unit; plausible: {low:g} to {high:g} {unit})"
    )


def way_out(value: float, unit: str, stated: bool = True) -> str:
    """What the dose looks like instead, and what to do."""
    fits = [u for u, (lo, hi) in PLAUSIBLE.items() if u != unit and lo <= value < hi]
    looks = f"; {value:g} looks like a dose in {fits[0]}" if fits else ""
    column = f", or state the unit in an {UNIT_COLUMN} column on the dose rows" if stated else ""
    return f"{looks}. Convert the doses to {unit}, use a model of the doses' unit{column}"


def check_dose_table(doses: pd.DataFrame, model: DosedModel) -> None:
    """The AMTU column of a ``doses`` table (as :func:`cartpk.simulate` takes it), if any,
    against the model's unit (rows numbered from 1)."""
    column = next((c for c in doses.columns if str(c).upper() == UNIT_COLUMN), None)
    if column is None or model.dose_unit is None:
        return
    stated = np.array([normalise(u) for u in doses[column]], dtype=object)
    check_stated(stated, np.arange(1, len(doses) + 1), model.name, model.dose_unit)
