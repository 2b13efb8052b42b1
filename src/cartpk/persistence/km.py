"""Kaplan-Meier estimates of persistence across subjects, with right censoring.

The estimator is scipy's (``scipy.stats.ecdf`` on ``scipy.stats.CensoredData``, scipy >=
1.11), not a hand-written one. Confidence intervals of S(t) are scipy's ``"log-log"``
intervals (Greenwood variance on the log(-log S) scale, Kalbfleisch & Prentice 1980; the
default of SAS PROC LIFETEST and lifelines, R survival's ``conf.type = "log-log"``). The
median and its confidence limits follow R survival's ``print.survfit``: the first time the
curve, and its lower and upper confidence limits, fall to 0.5 or below (NaN: not reached).
Groups are compared by the log-rank test: scipy's ``scipy.stats.logrank`` for two groups;
for more, the k-sample statistic of R survival's ``survdiff`` (chi-square with k - 1
degrees of freedom; Mantel 1966), written out here because scipy has no k-sample form.

Times are in days.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from os import PathLike
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["KaplanMeier", "kaplan_meier", "logrank_test"]


def _checked_table(table: pd.DataFrame, time: str, event: str) -> tuple[np.ndarray, np.ndarray]:
    for column in (time, event):
        if column not in table.columns:
            raise ValueError(f"column {column!r}: not in the persistence table")
    t = pd.to_numeric(table[time], errors="coerce").to_numpy(float)
    bad = ~np.isfinite(t) | (t < 0)
    if bad.any():
        raise ValueError(
            f"column {time!r}: times must be finite and >= 0 (rows {np.flatnonzero(bad)[:5] + 1})"
        )
    e = table[event].to_numpy()
    if not np.isin(e, (0, 1, True, False)).all():
        raise ValueError(f"column {event!r}: must be True/False (1 = event, 0 = censored)")
    return t, e.astype(bool)


def _ecdf(t: np.ndarray, e: np.ndarray) -> Any:
    return stats.ecdf(stats.CensoredData(uncensored=t[e], right=t[~e])).sf


def _first_below(times: np.ndarray, values: np.ndarray, level: float = 0.5) -> float:
    hit = np.flatnonzero(values <= level + 1e-12)
    return float(times[hit[0]]) if hit.size else np.nan


def _curve(t: np.ndarray, e: np.ndarray, confidence: float) -> pd.DataFrame:
    """S(t) at each distinct event time, with CI and numbers at risk (scipy's estimator)."""
    if not e.any():
        return pd.DataFrame(
            {
                "time": [0.0],
                "survival": [1.0],
                "lower": [np.nan],
                "upper": [np.nan],
                "n_at_risk": [t.size],
                "n_events": [0],
            }
        )
    sf = _ecdf(t, e)
    with warnings.catch_warnings():
        # log-log limits are undefined where S is 0 or 1 (R survival gives NA there too)
        warnings.filterwarnings("ignore", "The confidence interval is undefined")
        ci = sf.confidence_interval(confidence, method="log-log")
    times = sf.quantiles
    frame = pd.DataFrame(
        {
            "time": times,
            "survival": sf.probabilities,
            "lower": ci.low.probabilities,
            "upper": ci.high.probabilities,
            "n_at_risk": [(t >= x).sum() for x in times],
            "n_events": [(t[e] == x).sum() for x in times],
        }
    )
    return frame[frame["n_events"] > 0].reset_index(drop=True)


def logrank_test(times: np.ndarray, events: np.ndarray, groups: np.ndarray) -> dict[str, float]:
    """Log-rank test of equal persistence across groups: chi-square, df, p-value."""
    levels = pd.unique(groups)
    k = len(levels)
    if k < 2:
        return {"chisq": np.nan, "df": 0, "p": np.nan}
    if k == 2:
        a, b = (groups == levels[0]), (groups == levels[1])
        data = [
            stats.CensoredData(uncensored=times[m & events], right=times[m & ~events])
            for m in (a, b)
        ]
        result = stats.logrank(*data)
        return {"chisq": float(result.statistic**2), "df": 1, "p": float(result.pvalue)}
    found = _survdiff(times, events, groups)
    chisq = found["chisq"]
    return {"chisq": chisq, "df": k - 1, "p": float(stats.chi2.sf(chisq, k - 1))}


def _survdiff(times: np.ndarray, events: np.ndarray, groups: np.ndarray) -> dict[str, Any]:
    """Observed and expected events per group and the k-sample log-rank chi-square (R
    survival's survdiff with rho = 0): at each event time, expected = deaths x share at
    risk, variance d (n - d) / (n - 1) (diag(share) - share share^T); the statistic over the
    first k - 1 groups."""
    levels = pd.unique(groups)
    k = len(levels)
    observed, expected = np.zeros(k), np.zeros(k)
    variance = np.zeros((k, k))
    for x in np.unique(times[events]):
        at_risk = np.array([((times >= x) & (groups == g)).sum() for g in levels], float)
        died = np.array([((times == x) & events & (groups == g)).sum() for g in levels], float)
        n, d = at_risk.sum(), died.sum()
        observed += died
        expected += d * at_risk / n
        if n > 1:
            share = at_risk / n
            variance += d * (n - d) / (n - 1) * (np.diag(share) - np.outer(share, share))
    diff = (observed - expected)[:-1]
    chisq = float(diff @ np.linalg.solve(variance[:-1, :-1], diff))
    return {"observed": observed, "expected": expected, "chisq": chisq}


@dataclass(frozen=True, eq=False)
class KaplanMeier:
    """Kaplan-Meier curves of persistence, per group.

    Attributes:
        curves: group -> DataFrame (time in days, survival, lower, upper, n_at_risk,
            n_events at each distinct event time; S is 1 before the first; the limits
            are NaN where S is 0).
        summary: per group: n, events, median and its CI (days; NaN: not reached).
        landmarks: per group and landmark day: survival (the fraction still detectable)
            with its CI and the number at risk.
        logrank: chi-square, df and p of the log-rank test across groups (NaN for one).
        by: the grouping column or None; confidence: the CI level.
        data: time, event and group of every subject (for figures).
    """

    curves: dict[Any, pd.DataFrame]
    summary: pd.DataFrame
    landmarks: pd.DataFrame
    logrank: dict[str, float]
    by: str | None
    confidence: float
    data: pd.DataFrame

    def survival_at(self, times: Sequence[float], group: Any = None) -> np.ndarray:
        """S(t) of one group (the only one when None) at ``times`` (days)."""
        curve = self.curves[next(iter(self.curves)) if group is None else group]
        idx = np.searchsorted(curve["time"].to_numpy(), np.asarray(times, float), side="right")
        values = np.concatenate([[1.0], curve["survival"].to_numpy()])
        if curve["n_events"].sum() == 0:
            values = np.ones(len(curve) + 1)
        return values[idx]

    def plot(self, path: str | PathLike[str] | None = None, title: str = "") -> Figure:
        """Step curves with CI bands and a numbers-at-risk table beneath."""
        from ..plots.persistence import plot_km

        return plot_km(self.data, self.curves, self.by, self.landmark_days, path, title)

    @property
    def landmark_days(self) -> list[float]:
        return sorted(set(self.landmarks["landmark"])) if len(self.landmarks) else []


def kaplan_meier(
    table: pd.DataFrame,
    by: str | None = None,
    landmarks: Sequence[float] = (180, 365, 730),
    confidence: float = 0.95,
    time: str = "persistence",
    event: str = "event",
) -> KaplanMeier:
    """Kaplan-Meier persistence across subjects, by group, with log-rank test.

    Args:
        table: one row per subject with ``time`` (days) and ``event`` (True: loss of
            detectability observed; False: right-censored), as :func:`persistence` gives.
        by: a column of ``table`` to group by (e.g. DOSE), or None.
        landmarks: days at which the fraction still detectable is reported (default 6, 12
            and 24 months as 180, 365 and 730 days).
        confidence: level of the confidence intervals.

    Returns:
        A :class:`KaplanMeier`.
    """
    if not 0 < confidence < 1:
        raise ValueError(f"confidence {confidence!r}: expected a number between 0 and 1")
    marks = np.asarray(landmarks, float)
    if marks.size and not (np.all(np.isfinite(marks)) and np.all(marks >= 0)):
        raise ValueError(f"landmarks {list(landmarks)}: expected days >= 0")
    if len(table) == 0:
        raise ValueError("the persistence table has no subjects")
    t, e = _checked_table(table, time, event)
    if by is not None and by not in table.columns:
        raise ValueError(f"by {by!r}: not a column of the table ({', '.join(table.columns)})")
    groups = table[by].to_numpy() if by is not None else np.full(t.size, "all", dtype=object)
    if by is not None and pd.isna(groups).any():
        raise ValueError(f"column {by!r}: missing for some subjects")
    order = sorted(pd.unique(groups), key=lambda g: (str(type(g)), g))
    curves, summary, rows = {}, [], []
    for g in order:
        m = groups == g
        curve = _curve(t[m], e[m], confidence)
        curves[g] = curve
        has = curve["n_events"].sum() > 0
        times = curve["time"].to_numpy()
        summary.append(
            {
                "group": g,
                "n": int(m.sum()),
                "events": int(e[m].sum()),
                "median": _first_below(times, curve["survival"].to_numpy()) if has else np.nan,
                "median_lower": _first_below(times, curve["lower"].to_numpy()) if has else np.nan,
                "median_upper": _first_below(times, curve["upper"].to_numpy()) if has else np.nan,
            }
        )
        for mark in marks:
            rows.append(_landmark(g, mark, t[m], e[m], curve))
    frame = pd.DataFrame(summary)
    landmark_frame = pd.DataFrame(
        rows, columns=["group", "landmark", "survival", "lower", "upper", "n_at_risk", "note"]
    )
    if by is not None:
        frame = frame.rename(columns={"group": by})
        landmark_frame = landmark_frame.rename(columns={"group": by})
    data = pd.DataFrame({"time": t, "event": e, "group": groups})
    return KaplanMeier(
        curves, frame, landmark_frame, logrank_test(t, e, groups), by, confidence, data
    )


def _landmark(
    group: Any, mark: float, t: np.ndarray, e: np.ndarray, curve: pd.DataFrame
) -> dict[str, Any]:
    """S at ``mark`` with its CI: the curve's value at the last event time <= mark (NaN
    past the last follow-up when that is censored: the curve is not defined there)."""
    times = curve["time"].to_numpy()
    j = np.searchsorted(times, mark, side="right") - 1
    beyond = mark > t.max() and not e[t == t.max()].any()
    note = "beyond the last follow-up" if beyond else ""
    if curve["n_events"].sum() == 0 or j < 0:
        s, lo, hi = 1.0, 1.0, 1.0  # before the first event, as R survival
    else:
        s, lo, hi = (float(curve[c].iloc[j]) for c in ("survival", "lower", "upper"))
    return {
        "group": group,
        "landmark": float(mark),
        "survival": np.nan if beyond else s,
        "lower": np.nan if beyond else lo,
        "upper": np.nan if beyond else hi,
        "n_at_risk": int((t >= mark).sum()),
        "note": note,
    }
