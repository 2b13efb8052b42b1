"""What individual fits return: :class:`FitResult` (one subject), :class:`FitTable` (many).

Both serialise to JSON (:meth:`FitResult.to_json` / :meth:`FitResult.from_json`), with the
helpers :mod:`cartpk.reports` shares with :class:`cartpk.PopulationFit`. The JSON carries
the model itself (its file's TOML text and that text's SHA-256) besides its name and path:
reading it back rebuilds the model the fit was made with, and warns
(:class:`cartpk.reports.ModelChangedWarning`) when the file at that path (or the built-in
model of that name) now differs, or no longer exists. JSON written before the model text
was stored (format version 1) is read by loading the model by name or path, as then.
"""

from __future__ import annotations

import json
import warnings
from dataclasses import dataclass, field
from os import PathLike
from typing import TYPE_CHECKING, Any

import lmfit
import numpy as np
import pandas as pd

from ..dosing import DOSE, RESET_DOSE
from ..errors import FitError, FitWarning, SolverError
from ..exposure import exposure as model_exposure
from ..likelihood import ERROR_MODELS, on_scale, residual_sd
from ..model import Model
from ..persistence.predicted import loss_times, predicted_table
from ..reports import (
    cartpk_version,
    check_format,
    estimate_row,
    floats,
    matrix,
    model_from,
    model_reference,
    number,
    parse_json,
    plain,
)
from ..scales import to_natural
from ..solve import Doses, solve_batch

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

FORMAT_VERSION = 3  # 2: the model's TOML text is stored with the fit; 3: doses have EVID
OBSERVATION_COLUMNS = ("TIME", "DV", "CENS", "LLOQ", "LIMIT", "ANALYTE")


@dataclass
class FitResult:
    """The outcome of :func:`cartpk.fit` for one subject.

    ``estimates`` are on the natural scale (model parameters, then error parameters named
    ``<ANALYTE>_sigma|a|b``); ``estimation`` holds every parameter on its estimation scale
    (log for error parameters); ``covariance`` is on the estimation scale of the estimated
    parameters ``names``; ``ofv`` is −2 log-likelihood at the optimum (prior excluded) and
    ``objective`` adds the prior penalty. ``observations`` are the fitted rows (TIME in days,
    DV, CENS, LLOQ, LIMIT, ANALYTE; a censored row lies in (LIMIT, LLOQ], LIMIT NaN for no
    lower bound) and ``covariates`` the subject's covariates; ``doses`` the
    doses after TIME 0 (TIME in days, AMT in the model's dosing unit, EVID 4 for a reset
    and dose, 1 for a re-infusion; see :mod:`cartpk.dosing`), or None.
    """

    model: Model
    subject: Any
    estimates: dict[str, float]
    estimation: dict[str, float]
    names: list[str]
    covariance: np.ndarray | None
    ofv: float
    objective: float
    success: bool
    message: str
    n_starts: int
    n_at_best: int
    errors: dict[str, tuple[str, dict[str, float]]]
    priors: dict[str, tuple[float, float]]
    observations: pd.DataFrame
    covariates: dict[str, float]
    method: str = "dopri5"
    rtol: float = 1e-8
    atol: float = 1e-10
    notes: list[str] = field(default_factory=list)
    doses: pd.DataFrame | None = None

    @property
    def n_obs(self) -> int:
        """Number of fitted observations (censored ones included)."""
        return len(self.observations)

    @property
    def aic(self) -> float:
        """Akaike information criterion: OFV + 2·(estimated parameters)."""
        return self.ofv + 2 * len(self.names)

    @property
    def bic(self) -> float:
        """Bayesian information criterion: OFV + log(n observations)·(estimated parameters)."""
        return self.ofv + np.log(self.n_obs) * len(self.names)

    @property
    def has_covariance(self) -> bool:
        """Whether something was estimated and its covariance could be computed."""
        return self.covariance is not None and len(self.names) > 0

    @property
    def params(self) -> lmfit.Parameters:
        """The estimates as lmfit Parameters (natural scale; stderr where computable)."""
        out = lmfit.Parameters()
        for row in self.table().itertuples():
            out.add(row.parameter, value=row.estimate, vary=not row.fixed)
            out[row.parameter].stderr = None if np.isnan(row.se) else row.se
        return out

    def table(self) -> pd.DataFrame:
        """Estimate, SE, RSE %, 95 % CI (natural scale), unit, fixed, prior per parameter."""
        return pd.DataFrame([self._row(name) for name in self.estimates])

    def _row(self, name: str) -> dict[str, Any]:
        scale, lower, upper, unit = self.scale_of(name)
        sd = None
        if self.covariance is not None and name in self.names:
            k = self.names.index(name)
            sd = float(np.sqrt(self.covariance[k, k]))
        x = self.estimation.get(name, np.nan)
        row = estimate_row(name, self.estimates[name], x, sd, scale, lower, upper, unit)
        return {**row, "fixed": name not in self.names, "prior": name in self.priors}

    def scale_of(self, name: str) -> tuple[str, float, float, str]:
        """Estimation scale, bounds and unit of a model or error parameter."""
        if name in self.model.parameters:
            p = self.model.parameters[name]
            return p.scale, p.lower, p.upper, p.unit
        analyte = name.rsplit("_", 1)[0]
        unit = "-" if name.endswith(("_sigma", "_b")) else self.model.output_units.get(analyte, "-")
        return "log", 0.0, np.inf, unit

    def model_values(self) -> np.ndarray:
        """Model parameters at the estimates, natural scale, in the model's order."""
        return np.array([self.estimates[n] for n in self.model.param_names])

    def _kernel_doses(self) -> Doses | None:
        if self.doses is None or self.doses.empty:
            return None
        evid = self.doses["EVID"] if "EVID" in self.doses else None  # absent: re-infusions
        return Doses(
            self.doses["TIME"].to_numpy(np.float64),
            self.doses["AMT"].to_numpy(np.float64),
            reset=None if evid is None else evid.to_numpy() == RESET_DOSE,
        )

    def predict(self, times: Any) -> pd.DataFrame:
        """Model outputs at the estimates: TIME (day) and one column per output."""
        times = np.sort(np.asarray(times, dtype=float))
        values = solve_batch(
            self.model,
            self.model_values()[None, :],
            self.covariates or None,
            times=times,
            doses=self._kernel_doses(),
            method=self.method,
            rtol=self.rtol,
            atol=self.atol,
        ).values
        return pd.DataFrame({"TIME": times, **dict(zip(self.model.outputs, values.T, strict=True))})

    def error_values(self, analyte: str) -> dict[str, float]:
        """The residual error parameters of ``analyte`` (estimated or fixed), natural scale."""
        kind, fixed = self.errors[analyte]
        return {
            name: float(self.estimates.get(f"{analyte}_{name}", fixed.get(name, np.nan)))
            for name in ERROR_MODELS[kind]
        }

    def residuals(self) -> pd.DataFrame:
        """Individual predictions and residuals, one row per fitted observation.

        Columns: TIME (day), ANALYTE, DV, CENS, LLOQ, IPRED (the model output at the
        estimates), RES (DV − IPRED on the scale where the analyte's error is Gaussian: the
        log scale for the ``log`` error model, else as is) and IWRES (RES divided by the
        residual SD at IPRED). Censored rows (CENS = 1) enter the fit by the probability of
        their interval (M3, P(Y < LLOQ), or P(LIMIT < Y < DV) with a LIMIT) and have no
        residual: their RES and IWRES are NaN.
        """
        obs = self.observations
        ipred = self._predictions_at_observations()
        dv = obs["DV"].to_numpy(np.float64)
        quantified = obs["CENS"].to_numpy() == 0
        res = np.full(len(obs), np.nan)
        iwres = np.full(len(obs), np.nan)
        for analyte, (kind, _) in self.errors.items():
            rows = (obs["ANALYTE"] == analyte).to_numpy() & quantified
            res[rows] = on_scale(kind, dv[rows]) - on_scale(kind, ipred[rows])
            iwres[rows] = res[rows] / residual_sd(kind, ipred[rows], self.error_values(analyte))
        frame = obs[["TIME", "ANALYTE", "DV", "CENS", "LLOQ"]].reset_index(drop=True)
        return frame.assign(IPRED=ipred, RES=res, IWRES=iwres)

    def _predictions_at_observations(self) -> np.ndarray:
        """The fitted output of each observation row at the estimates."""
        obs = self.observations
        times = obs["TIME"].to_numpy(np.float64)
        grid = np.unique(times)
        pred = self.predict(grid)
        at = np.searchsorted(grid, times)
        out = np.empty(len(obs))
        for analyte in pd.unique(obs["ANALYTE"]):
            rows = (obs["ANALYTE"] == analyte).to_numpy()
            out[rows] = pred[analyte].to_numpy()[at[rows]]
        return out

    def draws(self, n: int = 500, seed: int = 1) -> pd.DataFrame:
        """Model parameters drawn from the estimates' uncertainty, natural scale.

        ``n`` draws from N(estimation-scale estimates, covariance) of the estimated
        parameters, back-transformed to the natural scale; fixed parameters keep their
        value. Draws with any parameter outside its declared bounds are discarded, so the
        frame may have fewer than ``n`` rows. Raises FitError if there is no covariance.
        """
        if not self.has_covariance:
            raise FitError(f"ID {self.subject}: no covariance, so no parameter draws")
        if not (isinstance(n, int | np.integer) and n >= 1):
            raise ValueError(f"n {n!r}: expected a positive integer number of draws")
        rng = np.random.default_rng(seed)
        mean = [self.estimation[k] for k in self.names]
        sampled = rng.multivariate_normal(mean, self.covariance, size=int(n))
        columns = {}
        for name, p in self.model.parameters.items():
            if name in self.names:
                x = sampled[:, self.names.index(name)]
                columns[name] = to_natural(x, p.scale, p.lower, p.upper)
            else:
                columns[name] = np.full(int(n), self.estimates[name])
        frame = pd.DataFrame(columns)
        inside = np.all(
            [frame[k].between(p.lower, p.upper) for k, p in self.model.parameters.items()],
            axis=0,
        )
        return frame[inside].reset_index(drop=True)

    def persistence(
        self, lloq: float, horizon: float = 1825.0, output: str | None = None
    ) -> pd.DataFrame:
        """Predicted persistence at the estimates: the day (``persistence``) the output
        (default the first) falls below ``lloq`` (output unit) for good, located on the ODE
        solution, or the ``horizon`` (days, default 5 years) with ``event`` False when it
        is still above it then. Re-infusions are not supported here."""
        if self._kernel_doses() is not None:
            raise ValueError("persistence: not available for a subject with re-infusions")
        p = self.model.pack(self.model_values()[None, :], self.covariates or None)
        found = loss_times(self.model, p, lloq, output or self.model.outputs[0], horizon)
        return predicted_table(found, [self.subject])

    def exposure(
        self,
        output: str = "CART",
        interval: tuple[float, float] = (0, 28),
        n: int = 500,
        seed: int = 1,
        level: float = 0.95,
        method: str | None = None,
    ) -> pd.DataFrame:
        """Model-based exposure at the estimates, with intervals from the covariance.

        Args:
            output: the model output, e.g. ``"CART"``.
            interval: (start, end) in days; the AUC row is named ``auc_<start>_<end>``.
            n: number of parameter draws (see :meth:`draws`; out-of-bounds draws are
                discarded and the rest counted in ``n_draws``).
            seed: seed of the draws.
            level: coverage of the percentile interval (0.95: 2.5th to 97.5th).
            method: ODE method; None uses the fit's. Tolerances rtol 1e-8, atol 1e-10. If
                an explicit method cannot solve some draws (a stiff corner of the parameter
                space), every draw is solved again with ``"rodas"`` and a FitWarning says so.

        Returns:
            Rows cmax (output unit), tmax (day), ``auc_<start>_<end>`` (output unit·day),
            indexed by ``metric``; columns estimate (at the estimates), median, low, high
            (percentiles of the draws) and n_draws. Without a covariance the interval
            columns are NaN and a FitWarning says so.
        """
        if not 0 < level < 1:
            raise ValueError(f"level {level!r}: expected a number between 0 and 1")
        method = method or self.method
        point = self._exposure_of(
            pd.DataFrame([self.model_values()], columns=self.model.param_names),
            output,
            interval,
            method,
        )
        metrics = [c for c in point.columns if c != "ID"]
        sampled = self._sampled_exposure(output, interval, n, seed, method)
        tail = 100 * (1 - level) / 2
        rows = []
        for metric in metrics:
            values = sampled[metric].to_numpy() if sampled is not None else np.array([])
            low, median, high = (
                np.percentile(values, [tail, 50, 100 - tail]) if values.size else [np.nan] * 3
            )
            rows.append(
                {
                    "metric": metric,
                    "estimate": float(point[metric].iloc[0]),
                    "median": median,
                    "low": low,
                    "high": high,
                    "n_draws": int(values.size),
                }
            )
        return pd.DataFrame(rows).set_index("metric")

    def _sampled_exposure(
        self, output: str, interval: tuple[float, float], n: int, seed: int, method: str
    ) -> pd.DataFrame | None:
        """Exposure of every in-bounds parameter draw (None, with a warning, if none)."""

        if not self.has_covariance:
            warnings.warn(
                f"ID {self.subject}: no covariance (nothing estimated, or standard errors not "
                "computable): exposure intervals are NaN",
                FitWarning,
                stacklevel=3,
            )
            return None
        draws = self.draws(n, seed)
        if draws.empty:
            warnings.warn(
                f"ID {self.subject}: all {n} parameter draws fell outside the parameter "
                "bounds: exposure intervals are NaN",
                FitWarning,
                stacklevel=3,
            )
            return None
        try:
            return self._exposure_of(draws, output, interval, method)
        except SolverError as err:
            if method == "rodas":
                raise
            warnings.warn(
                f"ID {self.subject}: method {method!r} could not solve some parameter draws "
                f"(numbered as subjects 1..{len(draws)}: {err}); the exposure of every draw "
                "was solved again with 'rodas'",
                FitWarning,
                stacklevel=3,
            )
            return self._exposure_of(draws, output, interval, "rodas")

    def _exposure_of(
        self, params: pd.DataFrame, output: str, interval: tuple[float, float], method: str
    ) -> pd.DataFrame:
        return model_exposure(
            self.model,
            params,
            output=output,
            interval=interval,
            covariates=self.covariates or None,
            doses=self.doses if self._kernel_doses() is not None else None,
            method=method,
            rtol=1e-8,
            atol=1e-10,
        )

    def log_scale(self, analyte: str) -> bool:
        """Whether ``analyte`` is drawn on a log axis: CAR-T, or fitted with the log model."""
        return analyte == "CART" or self.errors.get(analyte, ("",))[0] == "log"

    def plot(self, path: str | PathLike[str] | None = None, ax: Axes | Any = None) -> Figure:
        """Observations and the fit, one panel per fitted analyte.

        Quantified observations are filled circles; censored ones (CENS = 1) open triangles
        drawn at their LLOQ, with the LLOQ as a dashed line; the fit is drawn on a dense
        grid from day 0 to a little beyond the last observation. CAR-T (and any analyte
        fitted with the log error model) is on a log axis.

        Args:
            path: where to save the figure (format from the suffix), or None.
            ax: an Axes (one fitted analyte) or a sequence of Axes (one per analyte) to
                draw on; None makes a new figure.
        """
        analytes = [str(a) for a in pd.unique(self.observations["ANALYTE"])]
        fig, axes = self._axes(ax, len(analytes), path is None)
        last = float(self.observations["TIME"].max())
        dense = np.linspace(0.0, 1.05 * last if last > 0 else 1.0, 600)
        grid = np.union1d(dense, self.observations["TIME"].to_numpy(np.float64))
        pred = self.predict(grid)
        for axis, analyte in zip(axes, analytes, strict=True):
            self._panel(axis, analyte, grid, pred[analyte].to_numpy())
        axes[-1].set_xlabel("time since infusion (day)")
        if ax is None:
            fig.tight_layout()
        if path is not None:
            fig.savefig(path, dpi=120)
        return fig

    def _axes(self, ax: Any, n: int, interactive: bool) -> tuple[Figure, list[Axes]]:
        """The figure and one Axes per analyte: ``ax`` if given, else a new figure.

        A new figure is a pyplot figure when it is only returned (so it shows in notebooks)
        and an Agg-backed one, outside pyplot, when it is saved.
        """
        if ax is not None:
            axes = list(ax) if isinstance(ax, list | tuple | np.ndarray) else [ax]
            if len(axes) != n:
                raise ValueError(f"ax: got {len(axes)} Axes for {n} fitted analytes")
            return axes[0].figure, axes
        size = (7, 3.2 * n)
        if interactive:
            import matplotlib.pyplot as plt

            fig, grid = plt.subplots(n, 1, figsize=size, squeeze=False)
        else:
            from matplotlib.backends.backend_agg import FigureCanvasAgg
            from matplotlib.figure import Figure

            fig = Figure(figsize=size)
            FigureCanvasAgg(fig)
            grid = fig.subplots(n, 1, squeeze=False)
        return fig, list(grid[:, 0])

    def _panel(self, axis: Axes, analyte: str, grid: np.ndarray, curve: np.ndarray) -> None:
        """One analyte: observed, censored at LLOQ, LLOQ line, fitted curve."""
        obs = self.observations[self.observations["ANALYTE"] == analyte]
        observed, censored = obs[obs["CENS"] == 0], obs[obs["CENS"] == 1]
        axis.plot(grid, curve, "-", color="tab:blue", lw=1.5, label="fit")
        axis.plot(observed["TIME"], observed["DV"], "o", color="k", ms=5, label="observed")
        if len(censored):
            axis.plot(
                censored["TIME"],
                censored["LLOQ"],
                "v",
                mfc="none",
                mec="tab:red",
                ms=7,
                label="below LLOQ (at LLOQ)",
            )
        for k, lloq in enumerate(np.unique(obs["LLOQ"].dropna())):
            axis.axhline(lloq, ls="--", color="grey", lw=1, label="LLOQ" if k == 0 else None)
        if self.log_scale(analyte):
            axis.set_yscale("log")
        unit = self.model.output_units.get(analyte)
        axis.set_ylabel(f"{analyte} ({unit})" if unit else analyte)
        axis.set_title(f"{self.model.name} fit, ID {self.subject}: {analyte}", fontsize=10)
        axis.grid(alpha=0.3, which="both")
        axis.legend(fontsize=8)

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain JSON-ready values (see :meth:`to_json`)."""
        return {
            "format": "cartpk.FitResult",
            "format_version": FORMAT_VERSION,
            "cartpk_version": cartpk_version(),
            "model": model_reference(self.model),
            "subject": plain(self.subject),
            "estimates": plain(self.estimates),
            "estimation": plain(self.estimation),
            "names": plain(self.names),
            "covariance": plain(self.covariance),
            "ofv": plain(self.ofv),
            "objective": plain(self.objective),
            "success": bool(self.success),
            "message": str(self.message),
            "n_starts": int(self.n_starts),
            "n_at_best": int(self.n_at_best),
            "errors": plain(self.errors),
            "priors": plain(self.priors),
            "observations": plain(self.observations[list(OBSERVATION_COLUMNS)].to_dict("records")),
            "covariates": plain(self.covariates),
            "method": str(self.method),
            "rtol": plain(self.rtol),
            "atol": plain(self.atol),
            "notes": [str(note) for note in self.notes],
            "doses": None if self.doses is None else plain(self.doses.to_dict("records")),
        }

    def to_json(self) -> str:
        """The result as JSON text; :meth:`from_json` reads it back.

        The model is stored by name if built in, else by the path of its file (which must
        still exist when reading back). NaN is written as null, infinities as "inf".
        """
        return json.dumps(self.to_dict(), indent=1, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any], models: dict | None = None) -> FitResult:
        """Rebuild a FitResult from :meth:`to_dict` output (``models``: a load cache)."""
        check_format(data, "cartpk.FitResult", FORMAT_VERSION)
        covariance, size = data["covariance"], len(data["names"])
        return cls(
            model=model_from(data["model"], {} if models is None else models),
            subject=data["subject"],
            estimates=floats(data["estimates"]),
            estimation=floats(data["estimation"]),
            names=list(data["names"]),
            covariance=None if covariance is None else matrix(covariance, size).reshape(size, size),
            ofv=number(data["ofv"]),
            objective=number(data["objective"]),
            success=bool(data["success"]),
            message=str(data["message"]),
            n_starts=int(data["n_starts"]),
            n_at_best=int(data["n_at_best"]),
            errors={a: (str(kind), floats(fixed)) for a, (kind, fixed) in data["errors"].items()},
            priors={k: (number(m), number(sd)) for k, (m, sd) in data["priors"].items()},
            observations=observations_from(data["observations"]),
            covariates=floats(data["covariates"]),
            method=str(data["method"]),
            rtol=number(data["rtol"]),
            atol=number(data["atol"]),
            notes=[str(note) for note in data["notes"]],
            doses=doses_from(data.get("doses")),
        )

    @classmethod
    def from_json(cls, text: str) -> FitResult:
        """Read a result written by :meth:`to_json`."""
        return cls.from_dict(parse_json(text, "FitResult"))


@dataclass
class FitTable:
    """Individual fits of several subjects: ``results`` maps each ID to its FitResult.

    Subjects whose fit raised an error are kept in ``errors`` (ID -> message), not dropped.
    """

    results: dict[Any, FitResult]
    errors: dict[Any, str] = field(default_factory=dict)

    def __getitem__(self, subject: Any) -> FitResult:
        return self.results[subject]

    def __iter__(self):
        return iter(self.results.values())

    def __len__(self) -> int:
        return len(self.results)

    def table(self) -> pd.DataFrame:
        """One row per subject: ID, each estimate, ofv, aic, bic, success, n_at_best, notes."""
        rows = [
            {
                "ID": subject,
                **result.estimates,
                "ofv": result.ofv,
                "aic": result.aic,
                "bic": result.bic,
                "success": result.success,
                "n_at_best": result.n_at_best,
                "notes": "; ".join(result.notes),
            }
            for subject, result in self.results.items()
        ]
        rows += [
            {"ID": subject, "success": False, "notes": msg} for subject, msg in self.errors.items()
        ]
        return pd.DataFrame(rows)

    def parameters(self) -> pd.DataFrame:
        """Long table: every subject's parameter table with an ID column first."""
        parts = [result.table().assign(ID=subject) for subject, result in self.results.items()]
        frame = pd.concat(parts, ignore_index=True)
        return frame[["ID", *[c for c in frame.columns if c != "ID"]]]

    def to_json(self) -> str:
        """Every subject's result (see :meth:`FitResult.to_json`) and the failed subjects."""
        data = {
            "format": "cartpk.FitTable",
            "format_version": FORMAT_VERSION,
            "cartpk_version": cartpk_version(),
            "results": [result.to_dict() for result in self.results.values()],
            "errors": [
                {"ID": plain(subject), "message": str(msg)} for subject, msg in self.errors.items()
            ],
        }
        return json.dumps(data, indent=1, allow_nan=False)

    @classmethod
    def from_json(cls, text: str) -> FitTable:
        """Read a table written by :meth:`to_json`."""
        data = parse_json(text, "FitTable")
        check_format(data, "cartpk.FitTable", FORMAT_VERSION)
        models: dict[str, Model] = {}
        results = [FitResult.from_dict(item, models) for item in data["results"]]
        return cls(
            {result.subject: result for result in results},
            {item["ID"]: str(item["message"]) for item in data["errors"]},
        )


# --- JSON of the fitted rows ---------------------------------------------------------------


def observations_from(records: list[dict[str, Any]]) -> pd.DataFrame:
    """The observation frame from JSON records, with the fit's column types."""
    frame = pd.DataFrame.from_records(records, columns=list(OBSERVATION_COLUMNS))
    for column in ("TIME", "DV", "LLOQ", "LIMIT"):  # LIMIT is absent from older files: none
        frame[column] = [number(v) for v in frame[column]]
    return frame.astype({"CENS": np.int64, "ANALYTE": str})


def doses_from(records: list[dict[str, Any]] | None) -> pd.DataFrame | None:
    """Saved doses (EVID is absent from older files: re-infusions, EVID 1)."""
    if records is None:
        return None
    frame = pd.DataFrame.from_records(records, columns=["TIME", "AMT", "EVID"])
    frame["EVID"] = frame["EVID"].fillna(DOSE)
    return frame.astype({"TIME": float, "AMT": float, "EVID": np.int64})
