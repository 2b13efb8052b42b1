"""Diagnostics of a population fit: predictions and NPDE, VPC, figures.

The functions here take a finished fit as a :class:`FittedPopulation` (the estimates and
the data it was fitted to: a :class:`cartpk.PopulationFit` is one, and this module does not
import it) and are reached through the fit's methods (``predictions``, ``vpc``,
``plot_gof``, ``plot_vpc``).

Simulations of the fitted model draw every subject's random effects from N(0, Omega) around
its typical parameters (its ``design`` row: covariates included) and add residual error on
the error model's scale (log for ``log``), all replicates at once through
:func:`cartpk.solve.solve_batch` (in chunks of ``SIM_CHUNK`` subject-replicates).

NPDE follow Brendel et al. (Pharm Res 2006; 23:2036) and the ``npde`` R package (Comets et
al. 2008; censored data by its default ``cdf`` method, Nguyen et al. 2012): per subject, the
observed and simulated vectors are decorrelated with the simulated mean and the Cholesky
factor of the simulated covariance; the pde is the fraction of decorrelated simulated values
below the decorrelated observation, clipped to [1/(2K), 1 − 1/(2K)] for K replicates, and
npde = Φ⁻¹(pde). A censored observation gets a pd drawn uniformly in [0, P(y_sim < LLOQ)]
and the value of the simulated distribution at that pd; simulated values below the LLOQ are
imputed the same way, before decorrelation.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from os import PathLike
from typing import TYPE_CHECKING, Any, Protocol

import numpy as np
import pandas as pd
from scipy.linalg import solve_triangular
from scipy.special import ndtri

from ..dosing import RESET_DOSE
from ..errors import FitError, FitWarning
from ..likelihood import residual_sd
from ..model import Model
from ..scales import to_natural
from ..solve import METHODS, Doses, solve_batch

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

SIM_CHUNK = 20_000
NOMINAL_BINS = 15
QUANTILE_BINS = 10


class FittedPopulation(Protocol):
    """What the diagnostics read of a finished population fit (see
    :class:`cartpk.PopulationFit` for the meaning of each attribute)."""

    model: Model
    ids: list[Any]
    random: list[str]
    errors: dict[str, tuple[str, dict[str, float]]]
    omega: np.ndarray
    sigma_values: dict[str, dict[str, float]]
    phi_mode: np.ndarray
    covariates: np.ndarray
    design: np.ndarray
    observations: pd.DataFrame
    settings: dict[str, Any]
    doses: pd.DataFrame | None


# --- the observations as flat arrays ----------------------------------------------------------


@dataclass
class Layout:
    """A fit's observation rows as flat arrays; subject i owns rows ``off[i]:off[i+1]``."""

    off: np.ndarray
    time: np.ndarray
    out: np.ndarray
    analyte: np.ndarray
    kind: np.ndarray
    dv: np.ndarray
    cens: np.ndarray
    lloq: np.ndarray

    @property
    def n_subjects(self) -> int:
        return self.off.size - 1

    def rows(self, i: int) -> slice:
        return slice(int(self.off[i]), int(self.off[i + 1]))


def layout(fit: FittedPopulation) -> Layout:
    """The flat arrays of ``fit.observations`` (rows grouped by subject in ``fit.ids`` order)."""
    obs = fit.observations
    subject = pd.Index(fit.ids).get_indexer(obs["ID"])
    if np.any(subject < 0) or np.any(np.diff(subject) < 0):
        raise FitError("PopulationFit.observations: rows must be grouped by subject as in ids")
    analyte = obs["ANALYTE"].to_numpy(str)
    counts = np.bincount(subject, minlength=len(fit.ids))
    return Layout(
        off=np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        time=obs["TIME"].to_numpy(np.float64),
        out=np.array([fit.model.outputs.index(a) for a in analyte], dtype=np.int64),
        analyte=analyte,
        kind=np.array([fit.errors[a][0] for a in analyte]),
        dv=obs["DV"].to_numpy(np.float64),
        cens=obs["CENS"].to_numpy(np.int64) == 1,
        lloq=obs["LLOQ"].to_numpy(np.float64),
    )


def to_error_scale(lay: Layout, values: np.ndarray) -> np.ndarray:
    """Values of the observation rows (last axis) on each row's error scale."""
    log = lay.kind == "log"
    with np.errstate(divide="ignore", invalid="ignore"):
        return np.where(log, np.log(np.where(log, values, 1.0)), values)


def from_error_scale(lay: Layout, values: np.ndarray) -> np.ndarray:
    """Inverse of :func:`to_error_scale`."""
    log = lay.kind == "log"
    return np.where(log, np.exp(np.where(log, values, 0.0)), values)


def residual_sds(fit: FittedPopulation, lay: Layout, f: np.ndarray) -> np.ndarray:
    """Residual SD (error scale) of every row (last axis of ``f``) at predictions ``f``."""
    sd = np.empty_like(f)
    for analyte, (kind, _) in fit.errors.items():
        on = lay.analyte == analyte
        sd[..., on] = residual_sd(kind, f[..., on], fit.sigma_values[analyte])
    return sd


# --- solving the model at the observations ------------------------------------------------


def natural_params(fit: FittedPopulation, phi: np.ndarray) -> np.ndarray:
    """Model parameters on the natural scale from estimation-scale rows phi (k, n_par)."""
    columns = [
        to_natural(phi[:, j], p.scale, p.lower, p.upper)
        for j, p in enumerate(fit.model.parameters.values())
    ]
    return np.column_stack(columns)


def subject_doses(fit: FittedPopulation, subject: np.ndarray) -> Doses | None:
    """Doses after TIME 0 (re-infusions, resets) of subjects ``subject`` (indices, repeats
    allowed)."""
    doses = fit.doses
    if doses is None or doses.empty:
        return None
    index = pd.Index(fit.ids).get_indexer(doses["ID"])
    parts = [np.flatnonzero(index == s) for s in range(len(fit.ids))]
    rows = np.concatenate([parts[s] for s in subject])
    counts = np.array([parts[s].size for s in subject])
    return Doses(
        doses["TIME"].to_numpy(np.float64)[rows],
        doses["AMT"].to_numpy(np.float64)[rows],
        np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
        doses["EVID"].to_numpy()[rows] == RESET_DOSE if "EVID" in doses else None,
    )


def solver_options(fit: FittedPopulation) -> dict[str, Any]:
    """The fit's ODE method and tolerances, as solve_batch keywords."""
    names = {code: name for name, code in METHODS.items()}
    settings = fit.settings
    return {
        "method": names[int(settings.get("method", METHODS[fit.model.solver]))],
        "rtol": float(settings.get("rtol", 1e-6)),
        "atol": float(settings.get("atol", 1e-9)),
    }


def observed_outputs(
    fit: FittedPopulation, lay: Layout, phi: np.ndarray, subject: np.ndarray | None = None
) -> np.ndarray:
    """Model output of every observation row of subjects ``subject[k]`` at parameters phi[k].

    ``phi`` (k, n_par) on the estimation scale; ``subject`` defaults to 0..n-1. Returns the
    flat concatenation over k of each subject's rows (natural scale), solved in chunks.
    """
    subject = np.arange(lay.n_subjects) if subject is None else subject
    chunks = [
        solve_rows(fit, lay, phi[lo : lo + SIM_CHUNK], subject[lo : lo + SIM_CHUNK])
        for lo in range(0, subject.size, SIM_CHUNK)
    ]
    return np.concatenate(chunks)


def solve_rows(
    fit: FittedPopulation, lay: Layout, phi: np.ndarray, subject: np.ndarray
) -> np.ndarray:
    """One solve_batch call: the observed outputs of subjects ``subject`` at phi."""
    counts = np.diff(lay.off)[subject]
    rows = np.concatenate([np.arange(lay.off[s], lay.off[s + 1]) for s in subject])
    covariates = fit.covariates[subject] if fit.covariates.size else None
    sol = solve_batch(
        fit.model,
        natural_params(fit, phi),
        covariates,
        times=lay.time[rows],
        offsets=np.concatenate([[0], np.cumsum(counts)]),
        doses=subject_doses(fit, subject),
        ids=[fit.ids[s] for s in subject],
        **solver_options(fit),
    )
    return sol.values[np.arange(rows.size), lay.out[rows]]


def random_columns(fit: FittedPopulation) -> np.ndarray:
    return np.array([fit.model.param_names.index(n) for n in fit.random], dtype=np.int64)


def omega_root(fit: FittedPopulation) -> np.ndarray:
    """A square root R of Omega (R R' = Omega), by eigendecomposition (Omega may be singular)."""
    values, vectors = np.linalg.eigh(fit.omega)
    if np.any(values < -1e-10 * max(1.0, float(np.max(np.abs(values), initial=0.0)))):
        raise FitError(f"Omega is not positive semi-definite (eigenvalues {values})")
    return vectors * np.sqrt(np.clip(values, 0.0, None))


def simulate_replicates(
    fit: FittedPopulation, lay: Layout, n: int, rng: np.random.Generator
) -> np.ndarray:
    """(n, n_rows) simulated observations on the error scale: eta ~ N(0, Omega), residual error.

    The draws (all etas, then all residual errors) come from ``rng`` before any solve.
    """
    random = random_columns(fit)
    eta = rng.standard_normal((n, lay.n_subjects, random.size)) @ omega_root(fit).T
    eps = rng.standard_normal((n, lay.time.size))
    phi = np.repeat(fit.design[None, :, :], n, axis=0)
    phi[:, :, random] += eta
    subject = np.tile(np.arange(lay.n_subjects), n)
    f = observed_outputs(fit, lay, phi.reshape(n * lay.n_subjects, -1), subject)
    f = f.reshape(n, lay.time.size)
    return to_error_scale(lay, f) + residual_sds(fit, lay, f) * eps


# --- PRED, IPRED, IWRES, NPDE -------------------------------------------------------------


def predictions(fit: FittedPopulation, n_sim: int = 1000, seed: int = 1) -> pd.DataFrame:
    """One row per observation: PRED, IPRED, IWRES and NPDE (see PopulationFit.predictions)."""
    check_replicates("n_sim", n_sim, 2)
    lay = layout(fit)
    pred = observed_outputs(fit, lay, fit.design)
    ipred = observed_outputs(fit, lay, fit.phi_mode)
    sd = residual_sds(fit, lay, ipred)
    with np.errstate(divide="ignore", invalid="ignore"):
        iwres = (to_error_scale(lay, lay.dv) - to_error_scale(lay, ipred)) / sd
    rng = np.random.default_rng(seed)
    sims = simulate_replicates(fit, lay, n_sim, rng)
    frame = fit.observations[["ID", "TIME", "ANALYTE", "DV", "CENS", "LLOQ"]].copy()
    frame["PRED"] = pred
    frame["IPRED"] = ipred
    frame["IWRES"] = np.where(lay.cens, np.nan, iwres)
    frame["NPDE"] = npde_all(fit, lay, sims, rng)
    return frame.reset_index(drop=True)


def npde_all(
    fit: FittedPopulation, lay: Layout, sims: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """NPDE of every observation row, subject by subject (NaN where not computable)."""
    y = to_error_scale(lay, lay.dv)
    lloq = to_error_scale(lay, lay.lloq)
    out = np.full(lay.time.size, np.nan)
    failed = []
    for i in range(lay.n_subjects):
        rows = lay.rows(i)
        found = subject_npde(y[rows], sims[:, rows], lay.cens[rows], lloq[rows], rng)
        if found is None:
            failed.append(fit.ids[i])
        else:
            out[rows] = found
    if failed:
        warnings.warn(
            f"NPDE not computable for IDs {failed[:10]}: the covariance of their simulated "
            "observations is not positive definite (NaN in the NPDE column)",
            FitWarning,
            stacklevel=3,
        )
    return out


def subject_npde(
    y: np.ndarray, sims: np.ndarray, cens: np.ndarray, lloq: np.ndarray, rng: np.random.Generator
) -> np.ndarray | None:
    """One subject's npde (Brendel 2006; censored values by the npde package's cdf method).

    Args:
        y: observations (m,) on the error scale (censored ones are replaced).
        sims: simulated observations (K, m) on the error scale (not modified).
        cens: (m,) True where the observation is below its LLOQ.
        lloq: (m,) LLOQ on the error scale (NaN: none).
        rng: generator of the imputation draws.

    Returns:
        npde (m,), or None when the simulated covariance has no Cholesky factor.
    """
    K = sims.shape[0]
    with np.errstate(invalid="ignore"):
        below = sims < lloq
    ploq = below.mean(axis=0)
    ordered = np.sort(sims, axis=0)
    y = y.copy()
    sims = sims.copy()
    if cens.any():
        y[cens] = impute(ordered, np.flatnonzero(cens), ploq, rng)
    if below.any():
        r, c = np.nonzero(below)
        sims[r, c] = impute(ordered, c, ploq, rng)
    mean = sims.mean(axis=0)
    cov = np.atleast_2d(np.cov(sims, rowvar=False))
    try:
        chol = np.linalg.cholesky(cov)
    except np.linalg.LinAlgError:
        return None
    dec_obs = solve_triangular(chol, y - mean, lower=True)
    dec_sim = solve_triangular(chol, (sims - mean).T, lower=True).T
    pde = (dec_sim < dec_obs).mean(axis=0)
    return ndtri(np.clip(pde, 1 / (2 * K), 1 - 1 / (2 * K)))


def impute(
    ordered: np.ndarray, column: np.ndarray, ploq: np.ndarray, rng: np.random.Generator
) -> np.ndarray:
    """Values below the LLOQ: a pd ~ U(0, P(y_sim < LLOQ)) and the simulated value at that pd."""
    pd_draw = rng.uniform(0.0, ploq[column])
    k = np.minimum((pd_draw * ordered.shape[0]).astype(np.int64), ordered.shape[0] - 1)
    return ordered[k, column]


# --- VPC ------------------------------------------------------------------------------------


def vpc(
    fit: FittedPopulation,
    n: int = 500,
    bins: Any = None,
    pi: tuple[float, ...] = (0.05, 0.5, 0.95),
    ci: float = 0.95,
    seed: int = 1,
    analyte: str | None = None,
) -> pd.DataFrame:
    """Visual predictive check table (see PopulationFit.vpc)."""
    check_replicates("n", n, 2)
    pi = check_probabilities("pi", pi)
    ci = float(check_probabilities("ci", (ci,))[0])
    lay = layout(fit)
    analytes = [str(a) for a in fit.errors]
    if analyte is not None and analyte not in analytes:
        raise ValueError(f"analyte {analyte!r}: the fit has {analytes}")
    sims = from_error_scale(lay, simulate_replicates(fit, lay, n, np.random.default_rng(seed)))
    tables = [analyte_vpc(lay, sims, a, bins, pi, ci) for a in ([analyte] if analyte else analytes)]
    return pd.concat(tables, ignore_index=True)


def analyte_vpc(
    lay: Layout,
    sims: np.ndarray,
    analyte: str,
    bins: Any,
    pi: np.ndarray,
    ci: float,
) -> pd.DataFrame:
    """VPC rows of one analyte: one per time bin."""
    on = np.flatnonzero(lay.analyte == analyte)
    which, low, high = time_bins(lay.time[on], bins)
    tails = np.array([(1 - ci) / 2, 0.5, (1 + ci) / 2])
    rows = []
    for b in np.unique(which):
        sel = on[which == b]
        row = {
            "ANALYTE": analyte,
            "bin": int(b),
            "time": float(np.median(lay.time[sel])),
            "time_low": float(low[b]),
            "time_high": float(high[b]),
            "n": int(sel.size),
            "lloq": float(np.max(lay.lloq[sel])) if np.isfinite(lay.lloq[sel]).any() else np.nan,
        }
        row.update(bin_percentiles(lay, sims, sel, pi, tails))
        rows.append(row)
    return pd.DataFrame(rows)


def bin_percentiles(
    lay: Layout, sims: np.ndarray, sel: np.ndarray, pi: np.ndarray, tails: np.ndarray
) -> dict[str, Any]:
    """Observed and simulated percentiles and fractions below LLOQ of one bin."""
    observed = np.where(lay.cens[sel], -np.inf, lay.dv[sel])
    simulated = sims[:, sel]
    with np.errstate(invalid="ignore"):
        sim_below = simulated < lay.lloq[sel]
    obs_q = censored_quantile(observed, pi)
    sim_q = censored_quantile(np.where(sim_below, -np.inf, simulated), pi, axis=1)
    spread = censored_quantile(np.where(np.isnan(sim_q), -np.inf, sim_q), tails, axis=1)
    out: dict[str, Any] = {}
    for k, p in enumerate(pi):
        label = percentile_label(p)
        out[f"obs_{label}"] = obs_q[k]
        out[f"obs_{label}_blq"] = bool(np.isnan(obs_q[k]))
        out[f"sim_{label}_median"] = spread[1, k]
        out[f"sim_{label}_low"] = spread[0, k]
        out[f"sim_{label}_high"] = spread[2, k]
    fraction = sim_below.mean(axis=1)
    low, median, high = np.quantile(fraction, tails)
    out.update(
        blq_obs=float(lay.cens[sel].mean()),
        blq_sim_median=float(median),
        blq_sim_low=float(low),
        blq_sim_high=float(high),
    )
    return out


def censored_quantile(values: np.ndarray, p: np.ndarray, axis: int = 0) -> np.ndarray:
    """Quantiles (numpy's default linear rule) of values with censored entries set to −inf.

    Censored values are below every quantified one; a quantile whose interpolation uses a
    censored value is unknown (below the LLOQ) and returned as NaN. The result has the
    quantile axis first (``len(p)``) followed by the remaining axes of ``values``.
    """
    ordered = np.moveaxis(np.sort(values, axis=axis), axis, 0)
    k = ordered.shape[0]
    h = (k - 1) * np.asarray(p, dtype=float)
    lo = np.floor(h).astype(np.int64)
    hi = np.minimum(lo + 1, k - 1)
    frac = (h - lo).reshape((-1,) + (1,) * (ordered.ndim - 1))
    below = ordered[lo]
    with np.errstate(invalid="ignore"):
        value = below + frac * (ordered[hi] - below)
    return np.where(np.isneginf(below), np.nan, value)


def time_bins(times: np.ndarray, bins: Any) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Bin index of every time, and each bin's lower and upper limits (days).

    ``None``: one bin per unique time when there are at most 15, else 10 quantile bins; an
    int: that many quantile bins; a sequence: increasing edges covering every time.
    """
    unique = np.unique(times)
    if bins is None and unique.size <= NOMINAL_BINS:
        return np.searchsorted(unique, times), unique, unique
    if bins is None or np.isscalar(bins):
        count = QUANTILE_BINS if bins is None else int(bins)
        if count < 1:
            raise ValueError(f"bins {bins!r}: expected a positive number of bins")
        edges = np.unique(np.quantile(times, np.linspace(0, 1, count + 1)))
    else:
        edges = np.asarray(bins, dtype=float)
        if edges.ndim != 1 or edges.size < 2 or np.any(np.diff(edges) <= 0):
            raise ValueError("bins: expected at least 2 strictly increasing edges (days)")
        outside = times[(times < edges[0]) | (times > edges[-1])]
        if outside.size:
            raise ValueError(
                f"bins: times {np.unique(outside)[:5].tolist()} lie outside the edges "
                f"[{edges[0]:g}, {edges[-1]:g}]"
            )
    if edges.size == 1:
        return np.zeros(times.size, dtype=np.int64), edges, edges
    which = np.clip(np.searchsorted(edges, times, side="right") - 1, 0, edges.size - 2)
    return which, edges[:-1], edges[1:]


def percentile_label(p: float) -> str:
    """Column label of a percentile: 0.05 -> "p5", 0.5 -> "p50", 0.025 -> "p2.5"."""
    return f"p{100 * float(p):g}"


def check_replicates(name: str, value: Any, minimum: int) -> None:
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{name} {value!r}: expected an integer >= {minimum}")


def check_probabilities(name: str, values: Any) -> np.ndarray:
    p = np.atleast_1d(np.asarray(values, dtype=float))
    if p.ndim != 1 or p.size == 0 or np.any(~((p > 0) & (p < 1))):
        raise ValueError(f"{name} {values!r}: expected probabilities strictly between 0 and 1")
    if np.any(np.diff(p) <= 0):
        raise ValueError(f"{name} {values!r}: expected increasing probabilities")
    return p


# --- figures -----------------------------------------------------------------------------------


def new_figure(
    nrows: int, ncols: int, size: tuple[float, float], saved: bool, **grid: Any
) -> tuple[Figure, np.ndarray]:
    """A pyplot figure when only returned (it shows in notebooks); an Agg one when saved."""
    if not saved:
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(nrows, ncols, figsize=size, squeeze=False, **grid)
        return fig, axes
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=size)
    FigureCanvasAgg(fig)
    return fig, fig.subplots(nrows, ncols, squeeze=False, **grid)


def finish_figure(fig: Figure, path: str | PathLike[str] | None) -> Figure:
    fig.tight_layout()
    if path is not None:
        fig.savefig(path, dpi=120)
    return fig


def log_axis(fit: FittedPopulation, analyte: str) -> bool:
    """Whether an analyte is drawn on log axes: CAR-T, or fitted with the log error model."""
    return analyte == "CART" or fit.errors[analyte][0] == "log"


def plot_gof(
    fit: FittedPopulation,
    path: str | PathLike[str] | None = None,
    table: pd.DataFrame | None = None,
) -> Figure:
    """Goodness-of-fit panels per analyte: DV vs PRED, DV vs IPRED, IWRES and NPDE vs time."""
    table = predictions(fit) if table is None else table
    analytes = [str(a) for a in fit.errors]
    fig, axes = new_figure(len(analytes), 4, (15, 3.6 * len(analytes)), path is not None)
    for row, analyte in zip(axes, analytes, strict=True):
        rows = table[table["ANALYTE"] == analyte]
        log = log_axis(fit, analyte)
        for ax, column in zip(row[:2], ("PRED", "IPRED"), strict=True):
            dv_versus(ax, rows, column, log, analyte)
        residual_versus_time(ax=row[2], rows=rows, column="IWRES", analyte=analyte)
        residual_versus_time(ax=row[3], rows=rows, column="NPDE", analyte=analyte)
    return finish_figure(fig, path)


def dv_versus(ax: Axes, rows: pd.DataFrame, column: str, log: bool, analyte: str) -> None:
    """DV against a prediction; censored points at their LLOQ as open red triangles."""
    quantified, censored = rows[rows["CENS"] == 0], rows[rows["CENS"] == 1]
    ax.plot(quantified[column], quantified["DV"], "o", color="k", ms=3, alpha=0.6, label="observed")
    if len(censored):
        ax.plot(
            censored[column], censored["LLOQ"], "v", mfc="none", mec="tab:red", ms=5,
            label="below LLOQ (at LLOQ)",
        )  # fmt: skip
    values = np.concatenate([rows[column], quantified["DV"], censored["LLOQ"]])
    values = values[np.isfinite(values) & ((values > 0) if log else True)]
    lo, hi = float(values.min()), float(values.max())
    ax.plot([lo, hi], [lo, hi], "-", color="tab:blue", lw=1, label="identity")
    if log:
        ax.set_xscale("log")
        ax.set_yscale("log")
    ax.set_xlabel(f"{column} ({analyte})")
    ax.set_ylabel(f"DV ({analyte})")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)


def residual_versus_time(ax: Axes, rows: pd.DataFrame, column: str, analyte: str) -> None:
    """Residuals against time with 0 and ±1.96 lines; censored rows (NPDE only) in red."""
    quantified, censored = rows[rows["CENS"] == 0], rows[rows["CENS"] == 1]
    ax.plot(quantified["TIME"], quantified[column], "o", color="k", ms=3, alpha=0.6)
    if len(censored) and censored[column].notna().any():
        ax.plot(
            censored["TIME"], censored[column], "v", mfc="none", mec="tab:red", ms=5,
            label="below LLOQ (imputed)",
        )  # fmt: skip
        ax.legend(fontsize=7)
    ax.axhline(0.0, color="tab:blue", lw=1)
    for level in (-1.96, 1.96):
        ax.axhline(level, color="tab:blue", lw=1, ls="--")
    ax.set_xlabel("time since infusion (day)")
    ax.set_ylabel(f"{column} ({analyte})")
    ax.grid(alpha=0.3)


def plot_vpc(
    fit: FittedPopulation,
    path: str | PathLike[str] | None = None,
    table: pd.DataFrame | None = None,
) -> Figure:
    """VPC per analyte (column): percentiles over simulated CIs, fraction below LLOQ beneath."""
    table = vpc(fit) if table is None else table
    analytes = [str(a) for a in pd.unique(table["ANALYTE"])]
    fig, axes = new_figure(
        2, len(analytes), (7 * len(analytes), 6.5), path is not None,
        sharex="col", gridspec_kw={"height_ratios": [3, 1]},
    )  # fmt: skip
    labels = [c[4:] for c in table.columns if c.startswith("obs_p") and not c.endswith("_blq")]
    for k, analyte in enumerate(analytes):
        rows = table[table["ANALYTE"] == analyte].sort_values("time")
        vpc_panel(axes[0, k], rows, labels, log_axis(fit, analyte), analyte)
        blq_panel(axes[1, k], rows)
    return finish_figure(fig, path)


def vpc_panel(ax: Axes, rows: pd.DataFrame, labels: list[str], log: bool, analyte: str) -> None:
    """Observed percentiles over the simulated CIs of the same percentiles."""
    t = rows["time"].to_numpy()
    lloq = rows["lloq"].to_numpy()
    colours = ["tab:blue", "tab:red", "tab:blue"] if len(labels) == 3 else [None] * len(labels)
    for label, colour in zip(labels, colours, strict=True):
        low = np.where(np.isnan(rows[f"sim_{label}_low"]), lloq, rows[f"sim_{label}_low"])
        high = np.where(np.isnan(rows[f"sim_{label}_high"]), lloq, rows[f"sim_{label}_high"])
        band = ax.fill_between(t, low, high, alpha=0.25, color=colour, lw=0)
        colour = band.get_facecolor()[0][:3]
        ax.plot(t, rows[f"sim_{label}_median"], "--", color=colour, lw=1)
        observed = rows[f"obs_{label}"]
        ax.plot(t, observed, "o-", color=colour, ms=4, lw=1.5, label=f"observed {label}")
        blq = rows[f"obs_{label}_blq"].to_numpy(bool)
        if blq.any():
            ax.plot(t[blq], lloq[blq], "v", mfc="none", mec=colour, ms=6)
    for k, value in enumerate(np.unique(lloq[np.isfinite(lloq)])):
        ax.axhline(value, ls=":", color="grey", lw=1, label="LLOQ" if k == 0 else None)
    if log:
        ax.set_yscale("log")
    ax.set_ylabel(analyte)
    ax.set_title(f"VPC: {analyte} (bands: simulated CI of each percentile)", fontsize=10)
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=7)


def blq_panel(ax: Axes, rows: pd.DataFrame) -> None:
    """Observed and simulated fraction below the LLOQ per bin."""
    t = rows["time"].to_numpy()
    ax.fill_between(t, rows["blq_sim_low"], rows["blq_sim_high"], alpha=0.25, color="grey", lw=0)
    ax.plot(t, rows["blq_sim_median"], "--", color="grey", lw=1, label="simulated")
    ax.plot(t, rows["blq_obs"], "o-", color="k", ms=4, lw=1.5, label="observed")
    ax.set_ylim(-0.02, 1.02)
    ax.set_xlabel("time since infusion (day)")
    ax.set_ylabel("fraction < LLOQ")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
