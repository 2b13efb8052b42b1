"""The three CAR target sets (CD19, BCMA, both) on the same virtual patients, for a model
whose kill terms are switched by ``tgt_cd19`` and ``tgt_bcma`` (``ck_blineage``).

Times in days; B cells in the model's unit (cells/uL); antibodies relative to baseline.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..solve import simulate
from .population import Cohort, Population

#: Target sets as (tgt_cd19, tgt_bcma).
TARGET_SETS = {"CD19": (1.0, 0.0), "BCMA": (0.0, 1.0), "CD19+BCMA": (1.0, 1.0)}


def compare_target_sets(
    population: Population,
    n: int = 500,
    seed: int = 1,
    dose: float = 1e6,
    negative: float = 10.0,
    b_return: float = 0.1,
    times: np.ndarray | None = None,
) -> pd.DataFrame:
    """Per target set, on the same ``n`` patients at ``dose`` (CAR-T cells/kg):

    * ``aab_negative_270``: the share whose autoantibody (output AAB) is below
      ``negative`` (a titre, e.g. 10 for "negative below 1:10") on day 270;
    * ``aab_fell_165``: the share whose AAB on day 165 (5.5 months) is below baseline;
    * ``b_return_day``: the median first day after day 14 on which B cells (BCELL) are
      back above ``b_return`` × baseline (NaN for a patient not back by the last time);
    * ``vax_180``: the median vaccine antibody (VAX) on day 180 relative to baseline;
    * ``cart_above_5_182``: the share with CAR-T above 5 copies/ug on day 182.5.
    """
    grid = np.arange(0.0, 366.0, 1.0) if times is None else np.asarray(times, dtype=float)
    grid = np.union1d(grid, [165.0, 180.0, 182.5, 270.0])
    model = population.model
    cohort = Cohort(population, None, np.array([dose]), n, seed)
    params, _, _ = cohort.patients(0, 0, n)
    base = pd.DataFrame(params, columns=list(model.param_names)).assign(
        ID=np.arange(1, n + 1), DOSE=dose
    )
    rows = []
    for name, (cd19, bcma) in TARGET_SETS.items():
        sim = simulate(model, base.assign(tgt_cd19=cd19, tgt_bcma=bcma), grid)
        wide = {o: sim.pivot(index="ID", columns="TIME", values=o) for o in model.outputs}
        b = wide["BCELL"].to_numpy()
        back = (b >= b_return * b[:, :1]) & (grid > 14)
        day = np.where(back.any(axis=1), grid[np.argmax(back, axis=1)], np.nan)
        rows.append(
            {
                "target_set": name,
                "aab_negative_270": float((wide["AAB"][270.0] < negative).mean()),
                "aab_fell_165": float((wide["AAB"][165.0] < wide["AAB"][0.0]).mean()),
                "b_return_day": float(np.nanmedian(day)) if np.isfinite(day).any() else np.nan,
                "vax_180": float((wide["VAX"][180.0] / wide["VAX"][0.0]).median()),
                "cart_above_5_182": float((wide["CART"][182.5] > 5.0).mean()),
            }
        )
    return pd.DataFrame(rows)
