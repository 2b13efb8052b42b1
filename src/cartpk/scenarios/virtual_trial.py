"""A parameter set against its published figures: a virtual trial analysed by NCA.

:func:`check_parameter_set` draws virtual patients from a parameter set at its reference
dose, samples each at the set's sampling days, adds log-normal residual error, censors
values below the LLOQ, and runs :func:`cartpk.nca` (PKNCA rules) on the result, as the
published trial was analysed. The geometric mean and geometric CV of Cmax and AUC0-28 and
the median Tmax are then set beside the published ones.

Acceptance (issue 11): geometric means within a factor 1.5, geometric CVs within 40
percentage points, median Tmax within 2 days, and the 99.9th percentile of the simulated
Cmax below 1e7 copies/ug.

Units: days, copies/ug (Cmax), copies/ug x day (AUC).
"""

from __future__ import annotations

import os

import numpy as np
import pandas as pd

from ..errors import SolverError
from ..model import load_model
from ..model.parameter_sets import load_parameter_set
from ..nca import nca
from ..solve import solve_batch
from .population import Population

__all__ = ["CMAX_CEILING", "check_parameter_set", "geometric_cv"]

#: No published CAR-T peak comes near this level (copies/ug): the 99.9th percentile cap.
CMAX_CEILING = 1e7
GMEAN_FACTOR = 1.5
GCV_POINTS = 40.0
TMAX_DAYS = 2.0


def geometric_cv(values: np.ndarray) -> float:
    """Geometric CV in %: 100 sqrt(exp(s^2) - 1), s the SD of log(values) (ddof 1)."""
    s = np.std(np.log(values), ddof=1)
    return float(100 * np.sqrt(np.expm1(s * s)))


def check_parameter_set(
    name_or_path: str | os.PathLike[str],
    model: str | os.PathLike[str] = "ck_stein",
    n: int = 10_000,
    seed: int = 1,
) -> pd.DataFrame:
    """Simulate the set's trial and compare its NCA summaries with the published ones.

    Args:
        name_or_path: a built-in parameter set name (e.g. ``"cilta-cel"``) or a set file.
        model: the model the set is applied to (its output ``CART``).
        n: virtual patients, all at the set's reference dose (CAR-T cells/kg).
        seed: seed of ``numpy.random.default_rng``: random effects first, then the
            residual errors.

    Returns:
        One row per quantity (``cmax_gmean``, ``cmax_gcv``, ``auc_0_28_gmean``,
        ``auc_0_28_gcv``, ``tmax_median``, ``cmax_p99.9``): ``published``, ``simulated``,
        ``criterion`` (text) and ``ok``. Quantities the set does not publish are left out,
        except the Cmax ceiling, which every set must meet.

    Raises:
        cartpk.SolverError: a virtual patient could not be solved (named).
    """
    pset = load_parameter_set(name_or_path)
    fitted = load_model(model).with_parameter_set(pset)
    population = Population.from_model(fitted)
    rng = np.random.default_rng(seed)
    dose = np.full(n, pset.reference_dose)
    params = population.individual(population.draw_etas(n, rng), {"DOSE": dose})
    times = np.array(pset.check["times"], dtype=float)
    solution = solve_batch(fitted, params, {"DOSE": dose}, times=times, rtol=1e-8, atol=1e-10)
    pred = solution.values[:, fitted.outputs.index("CART")]
    if not np.all(np.isfinite(pred) & (pred > 0)):
        raise SolverError(f"parameter set {pset.name}: non-positive or non-finite predictions")
    dv = pred * np.exp(pset.check["residual_sd"] * rng.standard_normal(pred.size))
    lloq = pset.check["lloq"]
    cens = dv < lloq
    frame = pd.DataFrame(
        {
            "ID": np.repeat(np.arange(1, n + 1), times.size),
            "TIME": np.tile(times, n),
            "DV": np.where(cens, lloq, dv),
            "CENS": cens.astype(int),
            "LLOQ": lloq,
        }
    )
    table = nca(frame, analyte="CART", intervals=[(0, 28)])
    return _compare(pset, table)


def _compare(pset, table: pd.DataFrame) -> pd.DataFrame:
    rows = []
    for metric in ("cmax", "auc_0_28"):
        if f"{metric}_gmean" not in pset.published and f"{metric}_mean" not in pset.published:
            continue
        values = table[metric].to_numpy(dtype=float)
        values = values[np.isfinite(values) & (values > 0)]
        gmean, gcv = pset.geometric(metric)
        simulated = float(np.exp(np.mean(np.log(values))))
        ratio = simulated / gmean
        rows.append(
            (
                f"{metric}_gmean",
                gmean,
                simulated,
                f"ratio {ratio:.2f} within 1/{GMEAN_FACTOR:g}..{GMEAN_FACTOR:g}",
                1 / GMEAN_FACTOR <= ratio <= GMEAN_FACTOR,
            )
        )
        cv = geometric_cv(values)
        rows.append(
            (
                f"{metric}_gcv",
                gcv,
                cv,
                f"difference {cv - gcv:+.0f} points within +-{GCV_POINTS:g}",
                abs(cv - gcv) <= GCV_POINTS,
            )
        )
    if "tmax_median" in pset.published:
        published = pset.published["tmax_median"]
        median = float(np.nanmedian(table["tmax"]))
        rows.append(
            (
                "tmax_median",
                published,
                median,
                f"difference {median - published:+.1f} d within +-{TMAX_DAYS:g} d",
                abs(median - published) <= TMAX_DAYS,
            )
        )
    p999 = float(np.nanpercentile(table["cmax"], 99.9))
    rows.append(("cmax_p99.9", np.nan, p999, f"below {CMAX_CEILING:g}", p999 < CMAX_CEILING))
    return pd.DataFrame(rows, columns=["quantity", "published", "simulated", "criterion", "ok"])
