"""Dose records as NONMEM writes them, checked and expanded in one place for every consumer.

:func:`cartpk.read_dataset` (and through the Dataset every fit), the ``doses`` tables of
:func:`cartpk.simulate` and :func:`cartpk.exposure`, and fit results solved again all
expand their dose records here: :func:`check_records` checks the rows, :func:`dose_events`
expands them into the doses given and :func:`ragged` gives the kernels' arrays.

Dose columns (NONMEM's data items; empty or "." is 0):

* EVID: 0 observation, 1 dose, 2 other-type event (neither dose nor observation: DV is
  ignored; the row may carry covariate values), 3 reset, 4 reset and dose.
* AMT: the dose (the unit of the model's dose link, e.g. CAR-T cells/kg), > 0 on a dose
  record (EVID 1 or 4); not given on an EVID 2 or 3 row.
* ADDL and II: ADDL additional doses like the record's, every II days after it (NONMEM's
  ADDL data item): a record at TIME t with ADDL = n and II = d gives doses at t, t + d,
  ..., t + n d. ADDL is a whole number >= 0, II > 0 days; one without the other is
  refused. The additional doses of an EVID 4 record are plain doses (EVID 1), as in NONMEM.
* SS (steady state) and RATE (infusion rate or duration) must be 0 or empty: the cellular
  kinetic models are non-linear and never reach a dosing steady state (cells expand,
  contract and persist for months), and a CAR-T infusion, minutes long against kinetics
  of days, is taken as a bolus.

A reset (EVID 3 or 4) starts the subject afresh at its next dose, which is the EVID 4
record's own dose: from that dose at time T on, the subject is solved as a new subject
infused at T, in model time t - T (a breakpoint such as ck_stein's ``tmax`` counts from T)
from the model's initial state with the DOSE covariate equal to everything infused at T
(the AMT of that dose and of any dose records listed after it at the same TIME, as the
doses at TIME 0 make the DOSE covariate); its parameters and other covariates stay the
subject's. The models hold the infusion in their initial state and have no state
without CAR-T cells, so after an EVID 3 reset the model's clock restarts at the next
dose, not at the reset, and an observation between the reset and that dose is refused.
An EVID 4 record that is a subject's first dose record resets nothing: it is a dose.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import pandas as pd

from .errors import NOT_FINITE, DataError, fail, rows_text

#: NONMEM's EVID codes.
OBSERVATION, DOSE, OTHER, RESET, RESET_DOSE = 0, 1, 2, 3, 4
EVIDS = (OBSERVATION, DOSE, OTHER, RESET, RESET_DOSE)
#: NONMEM's dose items beside EVID and AMT that cartpk reads (SS and RATE: 0 only).
DOSE_ITEMS = ("ADDL", "II", "SS", "RATE")
EVID_MEANING = {
    OBSERVATION: "observation",
    DOSE: "dose",
    OTHER: "other-type event",
    RESET: "reset",
    RESET_DOSE: "reset and dose",
}


def check_records(c: Mapping[str, np.ndarray], allowed: Sequence[int] = EVIDS) -> None:
    """Refuse bad dose columns, row by row: EVID not one of ``allowed``, a dose record
    (EVID 1 or 4) without a positive AMT, an AMT on an EVID 2 or 3 row, SS or RATE not 0,
    ADDL not a whole number >= 0, II < 0, ADDL without a positive II or II without ADDL,
    and ADDL or II on a row that is not a dose record.

    ``c``: float arrays in the order of the user's table (NaN where empty), EVID (no NaN)
    and AMT, and those of ADDL, II, SS and RATE the table has.
    """
    evid, amt = c["EVID"], c["AMT"]
    codes = ", ".join(f"{k} {EVID_MEANING[k]}" for k in allowed)
    fail(~np.isin(evid, allowed), "EVID", f"must be one of {codes}")
    fail(
        (evid == DOSE) & ~(amt > 0),
        "AMT",
        "dose record (EVID=1) without a positive AMT",
    )
    fail(
        (evid == RESET_DOSE) & ~(amt > 0),
        "AMT",
        "reset and dose (EVID=4) without a positive AMT (EVID=3 resets without a dose)",
    )
    fail(
        np.isin(evid, (OTHER, RESET)) & ~np.isnan(amt) & (amt != 0),
        "AMT",
        "AMT on a row that gives no dose (EVID=2 other-type event, EVID=3 reset): a dose "
        "is EVID=1, a reset and dose EVID=4",
    )
    for column in DOSE_ITEMS:
        if column in c:
            fail(np.isinf(c[column]), column, NOT_FINITE)
    if "SS" in c:
        fail(
            ~np.isnan(c["SS"]) & (c["SS"] != 0),
            "SS",
            "steady state (SS != 0) is not supported: the cellular kinetic models are "
            "non-linear and never reach a dosing steady state (cells expand, contract and "
            "persist for months); write the doses out, with ADDL and II, and leave SS 0 "
            "or empty",
        )
    if "RATE" in c:
        fail(
            ~np.isnan(c["RATE"]) & (c["RATE"] != 0),
            "RATE",
            "infusion rate or duration (RATE != 0) is not supported: a CAR-T infusion "
            "takes minutes against kinetics of days and is given as a bolus; leave RATE 0 "
            "or empty",
        )
    dosing = np.isin(evid, (DOSE, RESET_DOSE))
    addl, ii = additional(c)
    fail(addl < 0, "ADDL", "negative ADDL (the number of additional doses)")
    fail(addl != np.round(addl), "ADDL", "ADDL is not a whole number of additional doses")
    fail(ii < 0, "II", "negative II (the interval between doses, days)")
    fail((addl > 0) & ~dosing, "ADDL", "ADDL on a row that is not a dose record (EVID=1 or 4)")
    fail((ii > 0) & ~dosing, "II", "II on a row that is not a dose record (EVID=1 or 4)")
    fail(
        (addl > 0) & ~(ii > 0),
        "ADDL",
        "ADDL without a positive II (the interval, days, between the additional doses)",
    )
    fail(
        (ii > 0) & ~(addl > 0),
        "II",
        "II without ADDL: II is the interval of the ADDL additional doses (SS, for which "
        "NONMEM also reads II, is not supported)",
    )


def additional(c: Mapping[str, np.ndarray]) -> tuple[np.ndarray, np.ndarray]:
    """ADDL and II as float arrays, 0 where empty or where the table has no such column."""
    n = c["EVID"].size
    addl = np.nan_to_num(c["ADDL"], nan=0.0) if "ADDL" in c else np.zeros(n)
    ii = np.nan_to_num(c["II"], nan=0.0) if "II" in c else np.zeros(n)
    return addl, ii


def dose_events(
    ids: np.ndarray,
    c: Mapping[str, np.ndarray],
    rows: np.ndarray,
    observed: np.ndarray | None = None,
    first_dose_starts: bool = True,
) -> pd.DataFrame:
    """The doses given, one row per dose, from records checked by :func:`check_records`.

    Args:
        ids: subject ID per record; the records sorted by ID (each subject's records
            together), then TIME, ties in the user's order (as a Dataset's frame).
        c: float arrays over the records: TIME (days), EVID, AMT and any of ADDL and II.
        rows: the user's row number (1-based) of each record, for messages.
        observed: boolean, the observation rows (EVID 0, MDV 0), checked against resets.
        first_dose_starts: True for a data set, where a subject's first dose record starts
            it (an EVID 3 before it is refused, an EVID 4 there is a dose); False for a
            ``doses`` table, whose subjects start at TIME 0 from their DOSE covariate (a
            reset must then be after TIME 0).

    Returns:
        A DataFrame with ID, TIME (days), AMT, EVID (4: the dose that starts the subject
        afresh after a reset, see the module notes; 1 otherwise) and ROW (the record the
        dose comes from), sorted as the records, a record's additional doses in time.

    Raises:
        DataError: additional doses that reach a later reset of the subject (a reset ends
            what came before it), a dose at the TIME of a reset listed before it (the reset
            would discard it), a reset before the subject's first dose record, a reset of
            a ``doses`` table at TIME 0, an observation between a reset and the next dose.
    """
    time, evid, amt = c["TIME"], c["EVID"], c["AMT"]
    addl, ii = additional(c)
    subject, _ = pd.factorize(ids, use_na_sentinel=False)
    record = np.flatnonzero(np.isin(evid, (DOSE, RESET_DOSE)))
    count = 1 + addl[record].astype(np.int64)
    source = np.repeat(record, count)
    k = np.arange(source.size) - np.repeat(np.cumsum(count) - count, count)
    when = time[source] + np.where(k > 0, k * ii[source], 0.0)
    order = np.lexsort((k, source, when, subject[source]))
    source, k, when = source[order], k[order], when[order]
    kind = np.where((k == 0) & (evid[source] == RESET_DOSE), RESET_DOSE, DOSE)
    for r in np.flatnonzero(np.isin(evid, (RESET, RESET_DOSE))):
        kind = _reset(r, subject, time, evid, rows, observed, source, k, when, kind,
                      first_dose_starts)  # fmt: skip
    return pd.DataFrame(
        {
            "ID": np.asarray(ids)[source],
            "TIME": when,
            "AMT": amt[source],
            "EVID": kind.astype(np.int64),
            "ROW": np.asarray(rows)[source],
        }
    )


def _reset(
    r: int,
    subject: np.ndarray,
    time: np.ndarray,
    evid: np.ndarray,
    rows: np.ndarray,
    observed: np.ndarray | None,
    source: np.ndarray,
    k: np.ndarray,
    when: np.ndarray,
    kind: np.ndarray,
    first_dose_starts: bool,
) -> np.ndarray:
    """Check reset record ``r`` against the doses (``source``, ``k``, ``when``: the record,
    the index among its additional doses and the time of each dose) and return ``kind``
    with the dose that starts the subject afresh after it marked EVID 4."""
    at = time[r]
    where = f"(the reset at TIME {at:g}, row {rows[r]})"
    mine = subject[source] == subject[r]
    before = mine & (source < r)
    if first_dose_starts and not before.any():
        if evid[r] == RESET:
            _refuse(
                rows[[r]],
                "EVID",
                "reset (EVID=3) before the subject's first dose record: there is nothing to reset",
            )
        kind = kind.copy()
        kind[mine & (source == r) & (k == 0)] = DOSE  # the first dose: nothing to reset
        return kind
    if not first_dose_starts and not at > 0:
        _refuse(
            rows[[r]],
            "TIME",
            "reset and dose (EVID=4) at TIME 0: a subject's infusion at TIME 0 is its DOSE "
            "covariate; give that instead",
        )
    _refuse(
        rows[source[before & (k > 0) & (when >= at)]],
        "ADDL",
        f"additional doses (ADDL, II) reach a later reset (EVID=3 or 4) of the subject "
        f"{where}: a reset ends what was given before it; end the ADDL before the reset",
    )
    _refuse(
        rows[source[before & (k == 0) & (when == at)]],
        "EVID",
        f"dose listed before a reset (EVID=3 or 4) at the same TIME {where}: the reset would "
        "discard it; list the dose after the reset, or give reset and dose as EVID=4",
    )
    after = np.flatnonzero(mine & (source >= r))
    restart = when[after[0]] if after.size else np.inf
    if observed is not None:
        position = np.arange(time.size)
        gap = (
            observed
            & (subject == subject[r])
            & ((time > at) | ((time == at) & (position > r)))
            & (time < restart)
        )
        _refuse(
            rows[gap],
            "EVID",
            f"observation after a reset (EVID=3) {where} and before the subject's next dose: "
            "the models have no state without an infusion, and the next dose starts the "
            "subject afresh; give the dose with the reset (EVID=4), or set MDV=1 on these "
            "rows",
        )
    if after.size:
        kind = kind.copy()
        kind[after[0]] = RESET_DOSE
    return kind


def _refuse(rows: np.ndarray, column: str, problem: str) -> None:
    """Raise a DataError naming ``rows`` (the user's 1-based rows, any order), if any."""
    if rows.size:
        raise DataError(f"column {column}: {problem} ({rows_text(np.unique(rows))})")


def ragged(
    events: pd.DataFrame, ids: Sequence[Any]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The kernels' dose arrays of subjects ``ids`` (in that order) from doses as
    :func:`dose_events` gives them (ID, TIME, AMT, EVID): (time, amount, reset, offsets),
    subject i's doses ``[offsets[i]:offsets[i+1]]`` in time order, ``reset`` 1 for a dose
    that starts the subject afresh. A reset's amount is everything infused at its TIME
    (the doses listed after it there are merged into it). Doses of other subjects are left
    out."""
    index = pd.Index(list(ids)).get_indexer(events["ID"])
    keep = np.flatnonzero(index >= 0)
    code = index[keep]
    time = events["TIME"].to_numpy(np.float64)[keep]
    amount = events["AMT"].to_numpy(np.float64)[keep]
    reset = events["EVID"].to_numpy()[keep] == RESET_DOSE
    order = np.lexsort((np.arange(keep.size), time, code))
    code, time, amount, reset = code[order], time[order], amount[order], reset[order]
    new = np.ones(code.size, dtype=bool)
    new[1:] = (code[1:] != code[:-1]) | (time[1:] != time[:-1])
    group = np.cumsum(new) - 1
    merged = np.zeros(code.size, dtype=bool)
    if reset.any():
        opened = np.zeros(group[-1] + 1, dtype=bool)
        opened[group[reset]] = True
        totals = np.bincount(group, weights=amount)
        amount = np.where(reset, totals[group], amount)
        merged = opened[group] & ~reset
    code, time, amount, reset = code[~merged], time[~merged], amount[~merged], reset[~merged]
    offsets = np.concatenate([[0], np.cumsum(np.bincount(code, minlength=len(ids)))])
    return time, amount, reset.astype(np.int64), offsets.astype(np.int64)
