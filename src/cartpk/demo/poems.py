"""The seed case end to end: ck_vegf fitted to the first POEMS patient's VEGF (KQ-2003).

Three VEGF values cannot identify CAR-T kinetics, so the CAR-T parameters carry priors
for a BCMA-directed CAR-T (data/bcma_cart_priors.csv, cited there) and the fit says which
parameters the data moved and which stayed at their priors.
"""

from __future__ import annotations

from os import PathLike

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from ..data import bundled  # noqa: E402
from ..individual import FitResult, fit  # noqa: E402

VEGF_ERROR_CV = 0.1  # assumed assay CV of serum VEGF (fixed: three points cannot estimate it)
BNORM_PRIOR = (200.0, 0.5)  # ng/L, log-scale SD: a normal serum VEGF, weakly held


def poems_fit(seed: int = 1) -> FitResult:
    """MAP fit of ck_vegf to the seed patient with BCMA CAR-T priors."""
    table = pd.read_csv(bundled("bcma_cart_priors.csv"))
    priors = {r.parameter: (r.value, r.sd) for r in table.itertuples()}
    priors["Bnorm"] = BNORM_PRIOR
    starts = {r.parameter: r.value for r in table.itertuples()}
    return fit(
        "ck_vegf",
        bundled("poems_kq2003_vegf.csv"),
        params=starts,
        priors=priors,
        error={"VEGF": ("proportional", {"b": VEGF_ERROR_CV})},
        n_starts=3,
        seed=seed,
    )


def determined_by(result: FitResult) -> pd.DataFrame:
    """Parameter table with a column saying whether the data or the prior determined it.

    A parameter with a prior counts as data-determined when its posterior SD on the
    estimation scale is below half its prior SD; one without a prior when its RSE < 50 %.
    """
    table = result.table()
    source = []
    for row in table.itertuples():
        if row.fixed:
            source.append("fixed")
        elif row.parameter in result.priors:
            k = result.names.index(row.parameter)
            sd = float(np.sqrt(result.covariance[k, k]))
            source.append("data" if sd < 0.5 * result.priors[row.parameter][1] else "prior")
        else:
            source.append("data" if row.rse_pct < 50 else "poorly determined")
    return table.assign(determined_by=source)


def first_day(times: np.ndarray, values: np.ndarray, below: float) -> float:
    """First time (day) at which ``values`` is at or below ``below``, else NaN."""
    hit = np.flatnonzero(values <= below)
    return float(times[hit[0]]) if hit.size else float("nan")


def exposure_intervals(result: FitResult, n: int = 500, seed: int = 1) -> pd.DataFrame:
    """CAR-T cmax, tmax, auc_0_28: estimate and 2.5/97.5 percentiles over covariance draws.

    Draws outside a parameter's bounds are not simulated; the table says how many were used.
    The draws are solved with the implicit method: some reach stiff kill rates.
    """
    table = result.exposure("CART", (0, 28), n=n, seed=seed, level=0.95, method="rodas")
    return pd.DataFrame(
        {
            "parameter": table.index,
            "estimate": table["estimate"].to_numpy(),
            "p2.5": table["low"].to_numpy(),
            "p97.5": table["high"].to_numpy(),
            "draws_used": [f"{k} of {n}" for k in table["n_draws"]],
        }
    )


def plot_poems(result: FitResult, path: str | PathLike[str]) -> None:
    """Observed VEGF with the fit, and the predicted CAR-T level (log axis)."""
    grid = np.linspace(0, 60, 601)
    pred = result.predict(grid)
    obs = result.observations
    fig, (top, bottom) = plt.subplots(2, 1, figsize=(7, 6), sharex=True)
    top.plot(grid, pred["VEGF"], label="ck_vegf fit (MAP)")
    top.plot(obs["TIME"], obs["DV"], "o", color="k", label="observed (KQ-2003, patient 1)")
    top.axhline(result.estimates["B0"] / 2, ls=":", color="grey", label="50 % of baseline")
    top.set_ylabel("serum VEGF (ng/L)")
    top.legend(fontsize=8)
    bottom.semilogy(grid[1:], pred["CART"][1:], color="tab:red")
    bottom.set_ylabel("CAR-T, predicted (copies/µg DNA)")
    bottom.set_xlabel("time since infusion (day)")
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    fig.suptitle("POEMS seed case: VEGF response to KQ-2003 (CAR-T kinetics from priors)")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def poems_report(result: FitResult) -> dict[str, pd.DataFrame | float]:
    """The numbers the demo prints: tables, predicted vs observed, response days."""
    obs = result.observations
    at_obs = result.predict(obs["TIME"])
    grid = np.arange(0, 180.0001, 0.05)
    vegf = result.predict(grid)["VEGF"].to_numpy()
    baseline, floor = result.estimates["B0"], result.estimates["Bnorm"]
    return {
        "parameters": determined_by(result),
        "vegf": pd.DataFrame(
            {"day": obs["TIME"], "observed": obs["DV"], "predicted": at_obs["VEGF"].to_numpy()}
        ),
        "day_below_half": first_day(grid, vegf, 0.5 * baseline),
        "day_near_floor": first_day(grid, vegf, 1.1 * floor),
        "exposure": exposure_intervals(result),
    }
