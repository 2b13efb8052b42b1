"""The result of :func:`cartpk.exposure_response`: estimates, predicted probabilities
with their confidence band, parametric draws, observed rates, text, JSON and the figure.

Parameters (:attr:`ExposureResponse.params`, the rows of the coefficient table):

* binary: (intercept, slope), logit P(Y = 1) = intercept + slope · z;
* ordinal: (slope, cutpoint_1, ..., cutpoint_{K-1}) on the natural cumulative scale,
  logit P(Y <= g_j) = cutpoint_j - slope · z, so P(Y >= g_{j+1}) = expit(slope · z -
  cutpoint_j),

with z = log_base(exposure). :attr:`ExposureResponse.covariance` is their covariance
(ordinal: by the delta method from statsmodels' parameterisation, below).

Draws (:meth:`ExposureResponse.sample_params`) are made from the multivariate normal
approximation on the parameterisation statsmodels estimates and inverts the Hessian on:
binary, (intercept, slope) itself; ordinal, (slope, first cutpoint, log of each increment
between consecutive cutpoints), with z centred at its mean. Each ordinal draw is then
mapped to (slope, cutpoints), so its cutpoints are always increasing. Every draw has the
layout of :attr:`ExposureResponse.params`: :meth:`ExposureResponse.probability` takes one
draw, or the whole (n, k) array, as ``params``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from os import PathLike
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
from scipy import stats
from scipy.special import expit

from ..reports import cartpk_version, plain
from .observed import event_rate, exposure_bins, thresholds

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

__all__ = ["ExposureResponse", "cutpoints"]

#: Points of the fitted curve in the figure (log-spaced over the observed exposures).
CURVE_POINTS = 200


def cutpoints(internal: np.ndarray, centre: float) -> np.ndarray:
    """statsmodels' ordinal parameters -> (slope, cutpoints), along the last axis.

    ``internal``: (..., K) with slope, the first cutpoint and the log increments of the
    others, z centred at ``centre``: cutpoint_j = first + sum of the first j - 1
    increments + slope · centre.
    """
    internal = np.asarray(internal, dtype=float)
    slope = internal[..., :1]
    steps = np.concatenate(
        [internal[..., 1:2], np.exp(internal[..., 2:])], axis=-1
    )  # first cutpoint, then the increments
    return np.concatenate([slope, np.cumsum(steps, axis=-1) + slope * centre], axis=-1)


@dataclass(frozen=True, eq=False)
class ExposureResponse:
    """An exposure-response fit (see the module docstring for the parameters).

    Attributes:
        kind: "binary" (logistic regression) or "ordinal" (proportional odds).
        exposure, outcome, by: the column names (by: None, or the grouping column, which
            is not in the model).
        n: the number of subjects.
        log_base: the base of the exposure's log; level: the level of the CIs.
        grades: the observed outcome levels ((0, 1) for binary).
        coefficients: term, estimate, se, ci_low, ci_high, p_value (Wald) of each
            parameter; the slope is per unit of log_base(exposure).
        odds_ratio_per_doubling: estimate, ci_low, ci_high of the odds ratio of the
            outcome (ordinal: of a higher grade, common to every threshold) per doubling
            of exposure, exp(slope · ln 2 / ln log_base) and its CI limits transformed.
        params: the estimates as an array (the coefficient table's order).
        covariance: their covariance matrix.
        data: per subject: ID (when the table has one), exposure, outcome, group (with by).
        draw_mean, draw_covariance, draw_centre: the multivariate normal
            :meth:`sample_params` draws from (statsmodels' parameterisation) and the mean
            of z it is centred at (0 for binary).
    """

    kind: str
    exposure: str
    outcome: str
    by: str | None
    n: int
    log_base: float
    level: float
    grades: tuple[int, ...]
    coefficients: pd.DataFrame
    odds_ratio_per_doubling: dict[str, float]
    params: np.ndarray
    covariance: np.ndarray
    data: pd.DataFrame = field(repr=False)
    draw_mean: np.ndarray = field(repr=False)
    draw_covariance: np.ndarray = field(repr=False)
    draw_centre: float = field(repr=False)

    # --- predictions -----------------------------------------------------------------

    def _threshold(self, at_least: Any) -> int:
        """The parameter index of the cutpoint of P(Y >= at_least) (ordinal), or -1."""
        if self.kind == "binary":
            if at_least is not None and at_least != 1:
                raise ValueError(
                    f"at_least {at_least!r}: a binary outcome has P({self.outcome} = 1) only; "
                    "leave at_least out"
                )
            return -1
        low, high = self.grades[0], self.grades[-1]
        if (
            isinstance(at_least, bool)
            or not isinstance(at_least, int | np.integer)
            or not low < at_least <= high
        ):
            raise ValueError(
                f"at_least {at_least!r}: an ordinal outcome needs the grade k of "
                f"P({self.outcome} >= k), an integer from {low + 1} to {high} (observed "
                f"grades {', '.join(str(g) for g in self.grades)})"
            )
        # the first observed grade >= at_least, g_j (j >= 1), has cutpoint j - 1, which is
        # parameter j (after the slope)
        return next(j for j, g in enumerate(self.grades) if g >= at_least)

    def _exposures(self, exposure_values: Any) -> tuple[np.ndarray, np.ndarray]:
        """The exposures checked (1-D, > 0) and their log_base, z."""
        x = np.atleast_1d(np.asarray(exposure_values, dtype=float))
        if x.ndim != 1 or x.size == 0 or not np.all(np.isfinite(x) & (x > 0)):
            raise ValueError(
                f"exposure values: expected one or more positive finite {self.exposure} values"
            )
        return x, np.log(x) / np.log(self.log_base)

    def _gradient(self, z: np.ndarray, index: int) -> np.ndarray:
        """d(linear predictor)/d(params) at each z: (m, k)."""
        gradient = np.zeros((z.size, self.params.size))
        if self.kind == "binary":
            gradient[:, 0] = 1.0
            gradient[:, 1] = z
        else:
            gradient[:, 0] = z
            gradient[:, index] = -1.0
        return gradient

    def probability(
        self, exposure_values: Any, at_least: int | None = None, params: Any = None
    ) -> np.ndarray:
        """P(outcome = 1) (binary), or P(grade >= at_least) (ordinal), at exposures.

        Args:
            exposure_values: exposures (the exposure column's unit), > 0.
            at_least: ordinal only, and required there: the grade k of P(grade >= k), an
                integer above the lowest observed grade and up to the highest (a grade
                not observed between them has no probability in the model: P(>= k) is
                then P(>= the next observed grade)).
            params: None (the estimates), one parameter vector in the layout of
                :attr:`params`, or an (n, k) array of them as :meth:`sample_params` gives.

        Returns:
            (m,) probabilities for the m exposures; (n, m) for n parameter vectors.
        """
        _, z = self._exposures(exposure_values)
        index = self._threshold(at_least)
        p = self.params if params is None else np.asarray(params, dtype=float)
        if p.ndim not in (1, 2) or p.shape[-1] != self.params.size:
            raise ValueError(
                f"params: expected {self.params.size} values (or an (n, {self.params.size}) "
                f"array of draws), got shape {p.shape}"
            )
        # the linear predictor is linear in the parameters: its gradient times them
        return expit((self._gradient(z, index) @ p.T).T)

    def band(
        self, exposure_values: Any, level: float | None = None, at_least: int | None = None
    ) -> pd.DataFrame:
        """The fitted probability with its pointwise confidence band at exposures.

        The band is the Wald interval of the linear predictor (delta method: its variance
        g' Σ g, g its gradient in the parameters, Σ :attr:`covariance`) transformed by the
        logistic function, so it lies within [0, 1] and contains the fitted curve.

        Args:
            exposure_values: exposures (the exposure column's unit), > 0.
            level: the band's level (default the fit's).
            at_least: ordinal only, and required: the grade k of P(grade >= k).

        Returns:
            A DataFrame: exposure, probability, low, high.
        """
        level = self.level if level is None else level
        if not (isinstance(level, int | float | np.number) and 0 < level < 1):
            raise ValueError(f"level {level!r}: expected a number between 0 and 1, e.g. 0.95")
        x, z = self._exposures(exposure_values)
        gradient = self._gradient(z, self._threshold(at_least))
        linear = gradient @ self.params
        se = np.sqrt(np.einsum("mk,kl,ml->m", gradient, self.covariance, gradient))
        q = stats.norm.ppf(0.5 + level / 2)
        return pd.DataFrame(
            {
                "exposure": x,
                "probability": expit(linear),
                "low": expit(linear - q * se),
                "high": expit(linear + q * se),
            }
        )

    def sample_params(self, n: int, seed: int | None = None) -> np.ndarray:
        """``n`` parametric draws of the parameters, (n, k) in the layout of :attr:`params`.

        Drawn with ``numpy.random.default_rng(seed)`` from the multivariate normal of the
        estimates on statsmodels' parameterisation (binary: intercept and slope; ordinal:
        slope, first cutpoint and log increments, so each draw's cutpoints increase), then
        mapped to (slope, cutpoints) for an ordinal fit. Pass them (or one row) to
        :meth:`probability` as ``params`` to propagate the estimates' uncertainty.
        """
        if isinstance(n, bool) or not isinstance(n, int | np.integer) or n < 1:
            raise ValueError(f"n {n!r}: expected a number of draws >= 1")
        rng = np.random.default_rng(seed)
        draws = rng.multivariate_normal(self.draw_mean, self.draw_covariance, size=int(n))
        return draws if self.kind == "binary" else cutpoints(draws, self.draw_centre)

    # --- observed rates --------------------------------------------------------------

    def observed(self, quantiles: int = 4) -> pd.DataFrame:
        """Observed rates per exposure quantile bin (quartiles by default), each with its
        exact (Clopper-Pearson) CI at the fit's level; for an ordinal outcome, per
        threshold ">= k".

        Returns:
            A DataFrame: threshold ("= 1", or ">= k"), bin (1 = lowest exposures),
            exposure_low, exposure_high, exposure_median (the exposure column's unit), n,
            events, rate, ci_low, ci_high. Ties can make fewer bins than ``quantiles``.
        """
        if (
            isinstance(quantiles, bool)
            or not isinstance(quantiles, int | np.integer)
            or not 1 <= quantiles <= self.n
        ):
            raise ValueError(
                f"quantiles {quantiles!r}: expected a number of exposure bins from 1 to "
                f"the {self.n} subjects"
            )
        x = self.data["exposure"].to_numpy()
        y = self.data["outcome"].to_numpy()
        bins = exposure_bins(x, int(quantiles))
        rows = []
        for label, k in thresholds(self.kind, self.grades):
            for b in np.unique(bins):
                inside = bins == b
                rows.append(
                    {
                        "threshold": label,
                        "bin": int(b) + 1,
                        "exposure_low": x[inside].min(),
                        "exposure_high": x[inside].max(),
                        "exposure_median": float(np.median(x[inside])),
                        **event_rate(y[inside] >= k, self.level),
                    }
                )
        return pd.DataFrame(rows)

    def by_group(self) -> pd.DataFrame:
        """Observed rates per ``by`` group (e.g. per dose level), with exact CIs and the
        group's median and range of exposure; for an ordinal outcome, per threshold."""
        if self.by is None:
            raise ValueError("by_group: the fit was made without by (a grouping column)")
        x = self.data["exposure"].to_numpy()
        y = self.data["outcome"].to_numpy()
        groups = self.data["group"].to_numpy()
        rows = []
        for label, k in thresholds(self.kind, self.grades):
            for g in _ordered(groups):
                inside = groups == g
                rows.append(
                    {
                        self.by: g,
                        "threshold": label,
                        "exposure_low": x[inside].min(),
                        "exposure_high": x[inside].max(),
                        "exposure_median": float(np.median(x[inside])),
                        **event_rate(y[inside] >= k, self.level),
                    }
                )
        return pd.DataFrame(rows)

    # --- text, JSON, figure ----------------------------------------------------------

    @property
    def model_name(self) -> str:
        """The regression, in words."""
        if self.kind == "binary":
            return "logistic regression"
        return "proportional-odds (cumulative logit) regression"

    def __repr__(self) -> str:
        odds = self.odds_ratio_per_doubling
        slope = self.coefficients["term"].iloc[1 if self.kind == "binary" else 0]
        return (
            f"ExposureResponse({self.kind}: {self.outcome} on {slope}, "
            f"n={self.n}, OR per doubling {odds['estimate']:.3g} "
            f"[{odds['ci_low']:.3g}, {odds['ci_high']:.3g}])"
        )

    def summary(self) -> str:
        """The fit as text: model, coefficients, odds ratio per doubling, observed rates."""
        odds = self.odds_ratio_per_doubling
        percent = f"{100 * self.level:g} %"
        table = self.coefficients.to_string(index=False, float_format=lambda v: f"{v:.4g}")
        observed = self.observed().to_string(index=False, float_format=lambda v: f"{v:.4g}")
        return "\n".join(
            [
                f"Exposure-response: {self.outcome} on {self.exposure}, {self.model_name}, "
                f"{self.n} subjects",
                "",
                table,
                "",
                f"odds ratio per doubling of {self.exposure}: {odds['estimate']:.4g} "
                f"({percent} CI {odds['ci_low']:.4g} to {odds['ci_high']:.4g})",
                "",
                f"observed per exposure quartile (exact {percent} CI):",
                observed,
            ]
        )

    def to_dict(self) -> dict[str, Any]:
        """Every result as plain JSON-ready values (see :meth:`to_json`)."""
        return plain(
            {
                "format": "cartpk.ExposureResponse",
                "cartpk_version": cartpk_version(),
                "kind": self.kind,
                "model": self.model_name,
                "exposure": self.exposure,
                "outcome": self.outcome,
                "by": self.by,
                "n": self.n,
                "log_base": self.log_base,
                "level": self.level,
                "grades": list(self.grades),
                "coefficients": self.coefficients.to_dict("records"),
                "odds_ratio_per_doubling": self.odds_ratio_per_doubling,
                "params": self.params,
                "covariance": self.covariance,
                "observed": self.observed().to_dict("records"),
            }
        )

    def to_json(self, path: str | PathLike[str] | None = None) -> str:
        """The result as JSON text (and written to ``path`` when given)."""
        text = json.dumps(self.to_dict(), indent=2)
        if path is not None:
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(text)
        return text

    def plot(
        self,
        ax: Axes | None = None,
        at_least: int | None = None,
        path: str | PathLike[str] | None = None,
    ) -> Figure:
        """The exposure-response figure: exposure on a log axis; the observed rate with
        its exact CI per exposure quartile (at the quartile's median exposure); the fitted
        probability with its confidence band; each subject at 0 or 1 (jittered), coloured
        and marked by ``by`` group.

        Args:
            ax: axes to draw on (default a new figure).
            at_least: ordinal only: draw P(grade >= at_least); None draws every
                threshold, with the subjects as a rug beneath.
            path: where to save the figure (it is then closed), or None.
        """
        from ..plots.exposure_response import plot_exposure_response

        x = self.data["exposure"].to_numpy()
        grid = np.geomspace(x.min(), x.max(), CURVE_POINTS)
        observed = self.observed()
        subjects = pd.DataFrame(
            {
                "exposure": x,
                "group": self.data["group"] if self.by is not None else "subjects",
            }
        )
        if self.kind == "binary" or at_least is not None:
            # the threshold drawn: the binary event, or the cutpoint P(grade >= k) uses
            label, k = thresholds(self.kind, self.grades)[max(self._threshold(at_least), 1) - 1]
            subjects["event"] = (self.data["outcome"].to_numpy() >= k).astype(float)
            band = self.band(grid, at_least=at_least)
            panels = [(label, band, observed[observed["threshold"] == label])]
            ylabel = f"P({self.outcome} {label})"
        else:
            panels = [
                (label, self.band(grid, at_least=k), observed[observed["threshold"] == label])
                for label, k in thresholds(self.kind, self.grades)
            ]
            ylabel = f"P({self.outcome} >= k)"
        return plot_exposure_response(
            panels,
            subjects,
            exposure_label=self.exposure,
            ylabel=ylabel,
            by=self.by,
            level=self.level,
            ax=ax,
            path=path,
            title=f"{self.outcome} against {self.exposure} ({self.model_name})",
        )


def _ordered(groups: np.ndarray) -> list[Any]:
    """Group values in sorted order (numbers numerically, text alphabetically)."""
    return sorted(pd.unique(groups), key=lambda g: (str(type(g)), g))
