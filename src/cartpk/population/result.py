"""What a population fit returns: :class:`PopulationFit` (estimates, SEs, individuals), its
summary text and its JSON (with the helpers :mod:`cartpk.reports` shares with
:class:`cartpk.FitResult`). Predictions, NPDE, VPC and figures are in :mod:`.diagnostics`.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from os import PathLike
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from ..dosing import DOSE
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
from .diagnostics import plot_gof, plot_vpc, predictions, vpc

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FORMAT = "cartpk.PopulationFit"
FORMAT_VERSION = 3  # 2: the model's TOML text is stored with the fit; 3: doses have EVID
OBSERVATION_COLUMNS = ("ID", "TIME", "DV", "CENS", "LLOQ", "LIMIT", "ANALYTE")


@dataclass
class PopulationFit:
    """The outcome of :func:`cartpk.fit_population`.

    Estimation-scale quantities: ``mu`` (typical value of every model parameter, at the
    median of continuous covariates and the reference level of categorical ones),
    ``theta`` (covariate coefficients by label, e.g. ``C0~DOSE``), ``omega`` (covariance of
    the random effects, over ``random``), the individual parameters ``phi_mode`` (conditional
    modes) and ``phi_mean`` (conditional means from the chain), (n_subjects, n_par).
    ``covariance`` is the inverse Fisher information (linearisation) over ``theta_names``;
    ``ofv`` is −2 log-likelihood by importance sampling (``ofv_se`` its Monte Carlo SE),
    ``ofv_quadrature`` the same by adaptive Gauss–Hermite quadrature at the conditional
    modes (no Monte Carlo error; NaN beyond four random effects or in files saved before it).
    ``doses`` are the doses after TIME 0 (ID, TIME in days, AMT, EVID 4 for a reset and dose,
    1 for a re-infusion; see :mod:`cartpk.dosing`), None when there are none.
    Problems met while fitting (unconverged conditional modes, a singular or non positive
    definite Fisher information) are listed in ``notes`` and in :meth:`summary`.
    """

    model: Model
    ids: list[Any]
    random: list[str]
    estimated: list[str]
    covariate_model: list[dict[str, Any]]
    errors: dict[str, tuple[str, dict[str, float]]]
    omega_kind: str
    mu: dict[str, float]
    theta: dict[str, float]
    omega: np.ndarray
    sigma_values: dict[str, dict[str, float]]
    theta_names: list[str]
    covariance: np.ndarray | None
    ofv: float
    ofv_se: float
    n_obs: int
    phi_mode: np.ndarray
    phi_mean: np.ndarray
    covariates: np.ndarray
    design: np.ndarray
    observations: pd.DataFrame
    history: pd.DataFrame
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)
    doses: pd.DataFrame | None = None
    ofv_quadrature: float = float("nan")

    # --- criteria -------------------------------------------------------------------------

    @property
    def n_parameters(self) -> int:
        """Estimated population parameters (fixed effects, Omega elements, error)."""
        return len(self.theta_names)

    @property
    def aic(self) -> float:
        """OFV + 2·(estimated population parameters)."""
        return self.ofv + 2 * self.n_parameters

    @property
    def bic(self) -> float:
        """OFV + log(n subjects)·(estimated population parameters) (Monolix's BIC)."""
        return self.ofv + np.log(len(self.ids)) * self.n_parameters

    # --- tables ---------------------------------------------------------------------------

    def _sd(self, name: str) -> float:
        if self.covariance is None or name not in self.theta_names:
            return np.nan
        k = self.theta_names.index(name)
        return float(np.sqrt(self.covariance[k, k]))

    def _row(self, name: str, label: str, x: float, scale: str, lo: float, hi: float, unit: str):
        value = float(to_natural(x, scale, lo, hi))
        row = estimate_row(name, value, x, self._sd(label), scale, lo, hi, unit)
        return {**row, "fixed": label not in self.theta_names}

    @property
    def fixed_effects(self) -> pd.DataFrame:
        """Typical values (natural scale) and covariate coefficients, with SE, RSE %, 95 % CI.

        Covariate coefficients are exponents of the power model (continuous) or log-ratios
        (categorical) on the estimation scale, reported as estimated.
        """
        rows = []
        for name, p in self.model.parameters.items():
            row = self._row(name, f"mu_{name}", self.mu[name], p.scale, p.lower, p.upper, p.unit)
            rows.append(row)
        for label, value in self.theta.items():
            rows.append(self._row(label, label, value, "none", -np.inf, np.inf, "-"))
        return pd.DataFrame(rows)

    @property
    def omega_table(self) -> pd.DataFrame:
        """Between-subject SD (estimation scale) per random effect, SE, RSE %, shrinkage %."""
        shrink = self.shrinkage()
        rows = []
        for k, name in enumerate(self.random):
            row = self._row(
                name, f"omega_{name}", float(np.sqrt(self.omega[k, k])), "none", 0, np.inf, "-"
            )
            row["shrinkage_pct"] = shrink[name]
            rows.append(row)
        return pd.DataFrame(rows)

    @property
    def sigma(self) -> pd.DataFrame:
        """Residual error parameters per analyte, with SE and RSE %."""
        rows = []
        for analyte, values in self.sigma_values.items():
            for name, value in values.items():
                label = f"{analyte}_{name}"
                row = self._row(label, label, float(np.log(value)), "log", 0.0, np.inf, "-")
                row["error_model"] = self.errors[analyte][0]
                rows.append(row)
        return pd.DataFrame(rows)

    def correlation(self) -> pd.DataFrame:
        """Correlation matrix of the random effects."""
        sd = np.sqrt(np.diag(self.omega))
        return pd.DataFrame(self.omega / np.outer(sd, sd), index=self.random, columns=self.random)

    def shrinkage(self) -> dict[str, float]:
        """eta shrinkage (%) per random effect: 1 − SD(conditional-mode eta) / omega."""
        eta = self.phi_mode - self.design
        out = {}
        for k, name in enumerate(self.random):
            j = self.model.param_names.index(name)
            out[name] = float(100 * (1 - np.std(eta[:, j], ddof=1) / np.sqrt(self.omega[k, k])))
        return out

    # --- individuals ----------------------------------------------------------------------

    def natural(self, phi: np.ndarray) -> pd.DataFrame:
        """Individual parameters on the natural scale, one row per subject."""
        columns = {
            name: to_natural(phi[:, j], p.scale, p.lower, p.upper)
            for j, (name, p) in enumerate(self.model.parameters.items())
        }
        return pd.DataFrame({"ID": self.ids, **columns})

    def individual_parameters(self, which: str = "mode") -> pd.DataFrame:
        """Per-subject parameters (natural scale): conditional ``mode`` or ``mean``."""
        return self.natural(self.phi_mode if which == "mode" else self.phi_mean)

    @property
    def individual(self) -> pd.DataFrame:
        """Per-subject parameters (conditional modes) with model-based cmax, tmax, auc_0_28.

        Exposure of the model's first output over days 0-28 (re-infusions included). An
        exposure column whose name is also a model parameter (ck_stein's ``tmax``, the switch
        to contraction) gets the output as suffix: ``tmax_CART`` is the time of the peak.
        """
        from ..exposure import exposure

        table = self.individual_parameters()
        output = self.model.outputs[0]
        covariates = (
            pd.DataFrame(self.covariates, columns=list(self.model.covariate_names))
            if self.covariates.size
            else None
        )
        found = exposure(
            self.model,
            table,
            output=output,
            interval=(0, 28),
            covariates=covariates,
            doses=None if self.doses is None or self.doses.empty else self.doses,
        ).drop(columns="ID")
        found.columns = [f"{c}_{output}" if c in table else c for c in found.columns]
        return pd.concat([table, found], axis=1)

    def typical(self) -> dict[str, float]:
        """Typical parameter values on the natural scale."""
        return self._typical(self.mu)

    def _typical(self, mu: dict[str, float]) -> dict[str, float]:
        return {
            name: float(to_natural(mu[name], p.scale, p.lower, p.upper))
            for name, p in self.model.parameters.items()
        }

    def population(self):
        """The fitted population as a :class:`cartpk.scenarios.Population` (virtual patients)."""
        sd = np.sqrt(np.diag(self.omega))
        return self._population(self.mu, self.theta, sd)

    def populations(self, n: int, seed: int) -> list:
        """``n`` populations drawn from the estimates' uncertainty, for intervals that carry
        it (:func:`cartpk.dose_escalation`): the estimated typical values (``mu_*``, on the
        estimation scale), covariate coefficients and between-subject SDs (``omega_*``)
        drawn jointly from the normal approximation N(estimates, ``covariance``), seeded by
        ``numpy.random.default_rng(seed)``. Fixed parameters keep their values; an SD drawn
        below 0 is taken as 0; with ``omega="block"`` the correlations stay at their
        estimates (only the SDs are drawn).

        Raises:
            ValueError: the fit has no covariance (its Fisher information was singular).
        """
        if self.covariance is None:
            raise ValueError(
                "populations: this fit has no covariance of its estimates (see notes), so "
                "its uncertainty cannot be drawn"
            )
        labels = self.theta_names
        centre = np.array([self._estimate(label) for label in labels])
        rng = np.random.default_rng(seed)
        draws = rng.multivariate_normal(centre, self.covariance, size=n, method="eigh")
        base_sd = np.sqrt(np.diag(self.omega))
        out = []
        for row in draws:
            value = dict(zip(labels, row.tolist(), strict=True))
            mu = {name: value.get(f"mu_{name}", x) for name, x in self.mu.items()}
            theta = {label: value.get(label, x) for label, x in self.theta.items()}
            sd = np.array(
                [
                    max(value.get(f"omega_{name}", s), 0.0)
                    for name, s in zip(self.random, base_sd, strict=True)
                ]
            )
            out.append(self._population(mu, theta, sd))
        return out

    def _estimate(self, label: str) -> float:
        """The estimate behind a ``theta_names`` label, on the scale of ``covariance``."""
        if label.startswith("mu_") and label[3:] in self.mu:
            return float(self.mu[label[3:]])
        if label in self.theta:
            return float(self.theta[label])
        if label.startswith("omega_") and label[6:] in self.random:
            k = self.random.index(label[6:])
            return float(np.sqrt(self.omega[k, k]))
        if label.startswith("omega"):
            a, b = label.split("_", 1)[1].split(",")
            return float(self.omega[self.random.index(a), self.random.index(b)])
        analyte, name = label.rsplit("_", 1)
        return float(self.sigma_values[analyte][name])

    def _population(self, mu: dict[str, float], theta: dict[str, float], sd: np.ndarray):
        from ..scenarios import CovariateEffect, Population

        base = np.sqrt(np.diag(self.omega))
        correlation = self.omega / np.outer(base, base)
        effects = [
            CovariateEffect(
                c["parameter"],
                c["covariate"],
                "power" if c["kind"] == "continuous" else "level",
                theta[c["label"]],
                c["reference"] if c["kind"] == "continuous" else c["level"],
            )
            for c in self.covariate_model
        ]
        return Population(
            model=self.model,
            typical=self._typical(mu),
            omega=dict(zip(self.random, sd.tolist(), strict=True)),
            correlation=correlation,
            covariate_effects=effects,
        )

    # --- diagnostics (diagnostics.py) -------------------------------------------------

    def persistence(
        self, lloq: float, horizon: float = 1825.0, output: str | None = None
    ) -> pd.DataFrame:
        """Predicted persistence of each fitted subject (conditional modes): the day the
        output (default the first) falls below ``lloq`` for good, located on the ODE
        solution, or the ``horizon`` (days, default 5 years) with ``event`` False. For
        virtual patients use ``scenarios(fit, ...).persistence(...)``. Re-infusions are not
        supported here."""
        if self.doses is not None and not self.doses.empty:
            raise ValueError("persistence: not available for subjects with re-infusions")
        params = self.individual_parameters().drop(columns="ID").to_numpy(float)
        covariates = self.covariates if self.covariates.size else None
        p = self.model.pack(params, covariates)
        found = loss_times(self.model, p, lloq, output or self.model.outputs[0], horizon)
        return predicted_table(found, self.ids)

    def predictions(self, n_sim: int = 1000, seed: int = 1) -> pd.DataFrame:
        """Population and individual predictions, IWRES and NPDE, one row per observation.

        Columns: ID, TIME (day), ANALYTE, DV, CENS, LLOQ, PRED (typical parameters with the
        subject's covariates, eta = 0), IPRED (at the conditional modes), IWRES ((DV − IPRED)
        on the error model's scale over the residual SD at IPRED; NaN when censored) and NPDE
        (Brendel et al. 2006, from ``n_sim`` simulated replicates of each subject; censored
        observations imputed as the npde package's ``cdf`` method does).

        Args:
            n_sim: simulated replicates per subject (K); npde are resolved to 1/(2K).
            seed: seed of the simulations and imputations (same seed, same table).
        """
        return predictions(self, n_sim=n_sim, seed=seed)

    def vpc(
        self,
        n: int = 500,
        bins: Any = None,
        pi: tuple[float, ...] = (0.05, 0.5, 0.95),
        ci: float = 0.95,
        seed: int = 1,
        analyte: str | None = None,
    ) -> pd.DataFrame:
        """Visual predictive check: observed vs simulated percentiles per time bin.

        The whole design (subjects, times, covariates, doses) is simulated ``n`` times. One
        row per analyte and bin: ANALYTE, bin, time (median TIME of the bin, day), time_low,
        time_high, n (observations), lloq; for each percentile p of ``pi`` (label e.g. p5):
        ``obs_p5`` (NaN when its rank falls among censored values), ``obs_p5_blq`` (that
        flag), ``sim_p5_median``, ``sim_p5_low``, ``sim_p5_high`` (median and ``ci`` interval
        of the percentile over the replicates, simulated values below the LLOQ censored the
        same way: NaN means below the LLOQ); ``blq_obs`` and ``blq_sim_median|low|high``, the
        fraction of observations below the LLOQ.

        Args:
            n: simulated replicates of the trial.
            bins: None (one bin per unique time if at most 15, else 10 quantile bins), a
                number of quantile bins, or a sequence of bin edges (days).
            pi: percentiles (fractions) to compare.
            ci: coverage of the simulated intervals.
            seed: seed of the simulations.
            analyte: one analyte (default: every fitted analyte).
        """
        return vpc(self, n=n, bins=bins, pi=pi, ci=ci, seed=seed, analyte=analyte)

    def plot_gof(
        self, path: str | PathLike[str] | None = None, predictions: pd.DataFrame | None = None
    ) -> Figure:
        """Goodness of fit, one row per analyte: DV vs PRED, DV vs IPRED (log-log for the log
        error model; identity line; censored points as open triangles at their LLOQ), IWRES
        and NPDE vs time (0 and ±1.96 lines).

        Args:
            path: where to save the figure (Agg backend; format from the suffix), or None.
            predictions: a :meth:`predictions` table to draw (default: computed).
        """
        return plot_gof(self, path, predictions)

    def plot_vpc(
        self, path: str | PathLike[str] | None = None, vpc: pd.DataFrame | None = None
    ) -> Figure:
        """The VPC: observed percentiles over the shaded simulated intervals (log axis for
        CAR-T and log-error analytes, LLOQ line), the fraction below the LLOQ beneath.

        Args:
            path: where to save the figure (Agg backend; format from the suffix), or None.
            vpc: a :meth:`vpc` table to draw (default: ``self.vpc()``).
        """
        return plot_vpc(self, path, vpc)

    def summary(self) -> str:
        """A printable report: design, fixed effects, Omega (with shrinkage), residual error,
        OFV/AIC/BIC and every problem noted during the fit."""
        return summary_text(self)

    def __repr__(self) -> str:
        return self.summary()

    # --- JSON ---------------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """Every field as plain JSON-ready values (see :meth:`to_json`)."""
        return fit_to_dict(self)

    def to_json(self) -> str:
        """The fit as JSON text; :meth:`from_json` reads it back.

        Arrays are nested lists, tables records; the model is stored itself (its file's
        TOML text and SHA-256, with its name and, if not built in, its path): reading back
        rebuilds that model and warns (:class:`cartpk.reports.ModelChangedWarning`) if
        the file has changed or gone since. Subject IDs keep their int or str type. A
        format version and the cartpk version are included.
        """
        return json.dumps(self.to_dict(), indent=1, allow_nan=False)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> PopulationFit:
        """Rebuild a fit from :meth:`to_dict` output."""
        return fit_from_dict(cls, data)

    @classmethod
    def from_json(cls, text: str) -> PopulationFit:
        """Read a fit written by :meth:`to_json`."""
        return fit_from_dict(cls, parse_json(text, "PopulationFit"))


# --- summary text ------------------------------------------------------------------------------


def summary_text(fit: PopulationFit) -> str:
    """A printable report: design, the three tables, OFV/AIC/BIC, shrinkage, problems."""
    obs = fit.observations
    covariates = ", ".join(c["label"] for c in fit.covariate_model) or "none"
    n_iter = fit.settings.get("n_iter", ["?", "?"])
    lines = [
        f"Population fit of {fit.model.name} (SAEM): {len(fit.ids)} subjects, "
        f"{fit.n_obs} observations ({int(obs['CENS'].sum())} below LLOQ)",
        f"random effects: {', '.join(fit.random) or 'none'} ({fit.omega_kind} Omega); "
        f"covariate effects: {covariates}",
        f"iterations: {n_iter[0]} exploration + {n_iter[1]} smoothing; seed "
        f"{fit.settings.get('seed')}; importance sampling {fit.settings.get('n_is')} draws",
        "",
        "Fixed effects",
        table_text(fit.fixed_effects),
        "",
        "Between-subject SD (estimation scale), with shrinkage",
        table_text(fit.omega_table),
        "",
        "Residual error",
        table_text(fit.sigma),
        "",
        f"-2LL (OFV) {fit.ofv:.3f} (Monte Carlo SE {fit.ofv_se:.3f}); AIC {fit.aic:.3f}; "
        f"BIC {fit.bic:.3f}; {fit.n_parameters} estimated parameters",
        "-2LL by adaptive Gauss-Hermite quadrature at the conditional modes: "
        + (
            f"{fit.ofv_quadrature:.3f}"
            if np.isfinite(fit.ofv_quadrature)
            else "not computed (more than four random effects)"
        ),
        polish_line(fit.settings.get("polish")),
    ]
    if fit.covariance is None:
        lines.append("standard errors: NOT AVAILABLE (see problems)")
    problems = [f"  - {note}" for note in fit.notes] or ["  none reported"]
    return "\n".join([*lines, "", "Problems:", *problems])


def polish_line(record: dict | None) -> str:
    """How the estimates were finished (fits saved before polishing existed: SAEM)."""
    if record is None:
        return "estimates: SAEM (saved before polishing)"
    if record["reason"]:
        return f"estimates: SAEM, not polished ({record['reason']})"
    return (
        f"estimates polished to the quadrature maximum: -2LL lowered by {record['gain']:.3f} "
        f"in {record['steps']} quasi-Newton steps"
    )


def table_text(table: pd.DataFrame) -> str:
    if table.empty:
        return "  (none)"
    return table.to_string(index=False, float_format=lambda x: f"{x:.4g}", na_rep="-")


# --- JSON ------------------------------------------------------------------------------------


def fit_to_dict(fit: PopulationFit) -> dict[str, Any]:
    """Every field of a PopulationFit as plain JSON-ready values."""
    doses = fit.doses
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "cartpk_version": cartpk_version(),
        "model": model_reference(fit.model),
        "ids": plain(list(fit.ids)),
        "random": plain(fit.random),
        "estimated": plain(fit.estimated),
        "covariate_model": plain(fit.covariate_model),
        "errors": plain(fit.errors),
        "omega_kind": str(fit.omega_kind),
        "mu": plain(fit.mu),
        "theta": plain(fit.theta),
        "omega": plain(fit.omega),
        "sigma_values": plain(fit.sigma_values),
        "theta_names": plain(fit.theta_names),
        "covariance": plain(fit.covariance),
        "ofv": plain(fit.ofv),
        "ofv_se": plain(fit.ofv_se),
        "ofv_quadrature": plain(fit.ofv_quadrature),
        "n_obs": int(fit.n_obs),
        "phi_mode": plain(fit.phi_mode),
        "phi_mean": plain(fit.phi_mean),
        "covariates": plain(fit.covariates),
        "design": plain(fit.design),
        "observations": plain(fit.observations[list(OBSERVATION_COLUMNS)].to_dict("records")),
        "history": plain(fit.history.to_dict("list")),
        "settings": plain(fit.settings),
        "notes": [str(note) for note in fit.notes],
        "doses": None
        if doses is None
        else plain(
            doses.assign(EVID=doses.get("EVID", DOSE))[list(DOSE_COLUMNS)].to_dict("records")
        ),
    }


def fit_from_dict(cls: type, data: dict[str, Any]) -> PopulationFit:
    """A ``cls`` (PopulationFit) from :func:`fit_to_dict` output."""
    check_format(data, FORMAT, FORMAT_VERSION)
    model = model_from(data["model"], {})
    n_par = len(model.param_names)
    covariance = data["covariance"]
    return cls(
        model=model,
        ids=list(data["ids"]),
        random=list(data["random"]),
        estimated=list(data["estimated"]),
        covariate_model=[dict(c) for c in data["covariate_model"]],
        errors={a: (str(kind), floats(fixed)) for a, (kind, fixed) in data["errors"].items()},
        omega_kind=str(data["omega_kind"]),
        mu=floats(data["mu"]),
        theta=floats(data["theta"]),
        omega=matrix(data["omega"], len(data["random"])),
        sigma_values={a: floats(v) for a, v in data["sigma_values"].items()},
        theta_names=list(data["theta_names"]),
        covariance=None if covariance is None else matrix(covariance, len(data["theta_names"])),
        ofv=number(data["ofv"]),
        ofv_se=number(data["ofv_se"]),
        ofv_quadrature=number(data.get("ofv_quadrature")),
        n_obs=int(data["n_obs"]),
        phi_mode=matrix(data["phi_mode"], n_par),
        phi_mean=matrix(data["phi_mean"], n_par),
        covariates=matrix(data["covariates"], len(model.covariate_names)),
        design=matrix(data["design"], n_par),
        observations=observations_from(data["observations"]),
        history=pd.DataFrame({k: [number(v) for v in col] for k, col in data["history"].items()}),
        settings=dict(data["settings"]),
        notes=[str(note) for note in data["notes"]],
        doses=doses_from(data.get("doses")),
    )


def observations_from(records: list[dict[str, Any]]) -> pd.DataFrame:
    """The observation frame with the column types a fit gives it."""
    # LIMIT (the lower bound of an interval-censored row) is absent from older files: none
    column = {name: [r.get(name) for r in records] for name in OBSERVATION_COLUMNS}
    return pd.DataFrame(
        {
            "ID": np.array(column["ID"], dtype=object),
            "TIME": np.array([number(v) for v in column["TIME"]]),
            "DV": np.array([number(v) for v in column["DV"]]),
            "CENS": np.array(column["CENS"], dtype=np.int64),
            "LLOQ": np.array([number(v) for v in column["LLOQ"]]),
            "LIMIT": np.array([number(v) for v in column["LIMIT"]]),
            "ANALYTE": np.array(column["ANALYTE"], dtype=str),
        }
    )


#: The columns of a fit's doses (EVID 1 re-infusion, 4 reset and dose; 1 where absent).
DOSE_COLUMNS = ("ID", "TIME", "AMT", "EVID")


def doses_from(records: list[dict[str, Any]] | None) -> pd.DataFrame | None:
    """Saved doses (EVID is absent from older files: re-infusions, EVID 1)."""
    if records is None:
        return None
    return pd.DataFrame(
        {
            "ID": np.array([r["ID"] for r in records], dtype=object),
            "TIME": np.array([number(r["TIME"]) for r in records]),
            "AMT": np.array([number(r["AMT"]) for r in records]),
            "EVID": np.array([r.get("EVID", DOSE) for r in records], dtype=np.int64),
        }
    )
