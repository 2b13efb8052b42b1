"""Persistence per subject from observed data: tlast, tbql, a duration and its censoring.

A sample is below the limit of quantification (BLQ) when ``CENS == 1`` or when its DV is
below the LLOQ (the row's LLOQ column, or the ``lloq`` given to :func:`persistence`, which
then applies to every row). Times are days since infusion; samples before infusion
(TIME < 0) say nothing about persistence and are left out, counted in the table's
``n_before_infusion`` column.

Rules for the persistence duration (days):

* ``"tlast"``: the time of the last quantifiable sample. The subject has an event (loss of
  detectability observed) when a BLQ sample follows it, and is censored there when the
  last sample is still quantifiable.
* ``"consecutive"``: the time of the first of ``k`` consecutive BLQ samples after the first
  quantifiable one (the definition trials use with k = 2 or 3; k = 1 gives ``tbql``). A
  subject without such a run is censored at its last quantifiable time (trailing BLQ
  samples fewer than k do not confirm the loss).

A subject never quantifiable after infusion has duration 0 and an event. Censoring
columns (e.g. DROPOUT, PROGRESSION, NEWTHERAPY: 0/1 covariates of the data, 1 from the
time of the event on) stop the follow-up at the first row where they are 1: later samples
are not used, and a subject whose loss was not seen before that time is censored at its
last quantifiable time, ``censored_by`` naming the column.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import pandas as pd

from ..data import as_dataset
from ..errors import DataError

__all__ = ["RULES", "persistence"]

#: The persistence rules of :func:`persistence`.
RULES = ("tlast", "consecutive")


def _checked(rule: str, k: int, lloq: float | None) -> None:
    if rule not in RULES:
        raise ValueError(f"rule {rule!r}: expected one of {', '.join(RULES)}")
    if isinstance(k, bool) or not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k {k!r}: expected an integer >= 1 (consecutive BLQ samples)")
    if lloq is not None and not (isinstance(lloq, int | float) and np.isfinite(lloq) and lloq > 0):
        raise ValueError(f"lloq {lloq!r}: expected a positive number (the analyte's unit)")


def persistence(
    data: Any,
    analyte: str | None = None,
    *,
    lloq: float | None = None,
    rule: str = "tlast",
    k: int = 2,
    censor: Sequence[str] = (),
    by: str | Sequence[str] | None = None,
) -> pd.DataFrame:
    """Persistence of each subject from its samples.

    Args:
        data: a Dataset, DataFrame or CSV path (long NONMEM-style table).
        analyte: the analyte (required when the data hold several), e.g. ``"CART"``.
        lloq: LLOQ in the analyte's unit for every row (default: the data's LLOQ column
            and CENS flags).
        rule: ``"tlast"`` or ``"consecutive"`` (module docstring).
        k: consecutive BLQ samples that confirm the loss (rule ``"consecutive"``).
        censor: 0/1 columns that end follow-up from the first row where they are 1.
        by: covariate column(s) copied into the table (each subject's baseline value).

    Returns:
        One row per subject: ID, the ``by`` columns, n_samples, n_before_infusion, tlast
        (day of the last quantifiable sample, NaN if none), tbql (day of the first BLQ
        sample after tlast, NaN if none), persistence (day), event (True: loss observed,
        False: censored), censored_by ("" for events; "detectable at last sample",
        "loss not confirmed" or a censoring column), rule.

    Raises:
        DataError: no LLOQ anywhere (no ``lloq``, no LLOQ values and no CENS = 1 rows),
            several analytes without ``analyte``, unknown or non-0/1 censoring or ``by``
            columns.
    """
    _checked(rule, k, lloq)
    ds = as_dataset(data)
    if analyte is None:
        if len(ds.analytes) != 1:
            raise DataError(
                f"ANALYTE: the data hold {len(ds.analytes)} analytes "
                f"({', '.join(map(str, ds.analytes))}); choose one with analyte=..."
            )
        analyte = ds.analytes[0]
    obs = ds.observations(analyte)
    censor = [censor] if isinstance(censor, str) else list(censor)
    groups = [] if by is None else ([by] if isinstance(by, str) else list(by))
    for name in [*censor, *groups]:
        if name not in ds.covariates:
            raise DataError(
                f"column {name}: not in the data (covariates: {', '.join(ds.covariates) or 'none'})"
            )
    for name in censor:
        values = pd.to_numeric(obs[name], errors="coerce").fillna(0.0).to_numpy()
        bad = ~np.isin(values, (0.0, 1.0))
        if bad.any():
            rows = ", ".join(str(r) for r in obs["ROW"].to_numpy()[bad][:5])
            raise DataError(f"column {name}: a censoring column must be 0 or 1 (rows {rows})")
    row_lloq = obs["LLOQ"].to_numpy(float)
    cens = obs["CENS"].to_numpy(float) == 1
    if lloq is None and not (np.isfinite(row_lloq).any() or cens.any()):
        raise DataError(
            f"LLOQ: no LLOQ for {analyte} (no LLOQ column values and no CENS = 1 rows); give "
            "lloq= (the assay's limit, in the analyte's unit)"
        )
    limit = np.full(len(obs), float(lloq)) if lloq is not None else row_lloq
    with np.errstate(invalid="ignore"):
        blq = cens | (obs["DV"].to_numpy(float) < limit)
    obs = obs.assign(_BLQ=blq)
    baseline = ds.subject_covariates()
    rows = []
    for subject, samples in obs.groupby("ID", sort=False):
        row = {"ID": subject, **{g: baseline.loc[subject, g] for g in groups}}
        row.update(_one(samples, rule, int(k), censor))
        rows.append(row)
    missing = [s for s in ds.ids if s not in set(obs["ID"])]
    if missing:
        raise DataError(
            f"ID {', '.join(map(str, missing[:5]))}: no {analyte} samples, so no persistence"
        )
    table = pd.DataFrame(rows)
    table["rule"] = rule if rule == "tlast" else f"first of {k} consecutive BLQ"
    return table


def _one(samples: pd.DataFrame, rule: str, k: int, censor: list[str]) -> dict[str, Any]:
    """The persistence columns of one subject (samples sorted by TIME)."""
    time = samples["TIME"].to_numpy(float)
    before = int((time < 0).sum())
    keep = time >= 0
    stop, stopped_by = np.inf, ""
    for name in censor:
        flag = pd.to_numeric(samples[name], errors="coerce").fillna(0.0).to_numpy() == 1
        if flag.any() and time[flag].min() < stop:
            stop, stopped_by = float(time[flag].min()), name
    keep &= time < stop
    t, blq = time[keep], samples["_BLQ"].to_numpy(bool)[keep]
    out = {"n_samples": int(t.size), "n_before_infusion": before}
    quantified = np.flatnonzero(~blq)
    if quantified.size == 0:
        loss = t.size > 0
        return {
            **out,
            "tlast": np.nan,
            "tbql": np.nan,
            "persistence": 0.0,
            "event": loss,
            "censored_by": "" if loss else stopped_by or "no samples",
        }
    last = quantified[-1]
    tlast = float(t[last])
    tbql = float(t[last + 1]) if last + 1 < t.size else np.nan
    out.update(tlast=tlast, tbql=tbql)
    if rule == "tlast":
        if np.isfinite(tbql):
            return {**out, "persistence": tlast, "event": True, "censored_by": ""}
        why = stopped_by or "detectable at last sample"
        return {**out, "persistence": tlast, "event": False, "censored_by": why}
    run = 0
    for j in range(quantified[0] + 1, t.size):
        run = run + 1 if blq[j] else 0
        if run == k:
            return {**out, "persistence": float(t[j - k + 1]), "event": True, "censored_by": ""}
    if stopped_by:
        why = stopped_by
    else:
        why = "detectable at last sample" if not blq[-1] else "loss not confirmed"
    return {**out, "persistence": tlast, "event": False, "censored_by": why}
