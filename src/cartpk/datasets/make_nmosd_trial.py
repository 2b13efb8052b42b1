"""Generate data/nmosd_trial.csv and data/nmosd_truth.csv: a synthetic CT103A-like BCMA
CAR-T trial in AQP4-IgG+ NMOSD, 12 patients with CAR-T (qPCR), CD19+ B cells and AQP4-IgG
titres as dilution steps, and the 12 patients' generating parameters.

Run from the repository root: ``python data/make_nmosd_trial.py`` (cartpk importable). The
generating truth is the ``ck_blineage`` model file with the BCMA target set, at its own
typical values, with the between-subject and residual SDs of :mod:`cartpk.demo.nmosd`
(the demo fits the model that generated the data; both tabulated in data/README.md),
solved with :func:`cartpk.simulate`. Nothing in it is CT103A data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

import cartpk
from cartpk.demo.nmosd import CART_LLOQ, DOSE, MODEL, OMEGA, SIGMA_LOG, TARGET
from cartpk.scenarios import Population

SEED = 20260503
N = 12
DAYS = {
    "CART": (0, 1, 4, 7, 10, 14, 21, 28, 56, 90, 120, 180, 270, 365),
    "BCELL": (0, 7, 14, 28, 56, 90, 180, 365),
    "AAB": (0, 14, 28, 56, 90, 120, 165, 270, 365),
}
LLOQ = {"CART": CART_LLOQ, "BCELL": 1.0, "AAB": 10.0}  # copies/ug, cells/uL, titre
#: Dilution steps of the titre assay (half-log series 1:10, 1:32, 1:100, ...).
STEPS = (10.0, 32.0, 100.0, 320.0, 1000.0, 3200.0, 10000.0, 32000.0, 100000.0, 320000.0)
SIGNIFICANT = 4  # digits kept in DV of the quantified analytes
SOLVER = {"rtol": 1e-8, "atol": 1e-12}


def draw_parameters(rng: np.random.Generator) -> pd.DataFrame:
    """N patients' parameters (natural scale) from the model's typical values and OMEGA."""
    model = cartpk.load_model(MODEL)
    population = Population(model, {n: p.value for n, p in model.parameters.items()}, OMEGA)
    values = population.individual(population.draw_etas(N, rng), {})
    return pd.DataFrame(values, columns=list(model.param_names)).assign(**TARGET)


def titre(value: float) -> tuple[float, float]:
    """(LIMIT, DV) of a measured titre: positive at step k and negative at step k + 1 puts
    the value in [step k, step k + 1]; negative at the first step (1:10) is (NaN, 10)."""
    if value < STEPS[0]:
        return np.nan, STEPS[0]
    k = int(np.searchsorted(STEPS, value, side="right")) - 1
    if k + 1 >= len(STEPS):
        raise ValueError(f"titre {value:.4g} is beyond the last dilution step")
    return STEPS[k], STEPS[k + 1]


def observe(rng: np.random.Generator, truth: float, analyte: str) -> dict:
    """One observation row's DV, LIMIT and CENS: log-normal error, then the assay's
    reporting (LLOQ for qPCR and B cells; dilution steps for the titre)."""
    value = truth * np.exp(rng.normal(0.0, SIGMA_LOG[analyte]))
    if analyte == "AAB":
        limit, upper = titre(value)
        return {"DV": upper, "LIMIT": limit, "CENS": 1}
    if value < LLOQ[analyte]:
        return {"DV": LLOQ[analyte], "LIMIT": np.nan, "CENS": 1}
    return {"DV": float(f"{value:.{SIGNIFICANT}g}"), "LIMIT": np.nan, "CENS": 0}


def make_trial(seed: int = SEED) -> pd.DataFrame:
    """The long NONMEM-style table: a dose record, then observations by time."""
    pk_rng, error_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    model = cartpk.load_model(MODEL)
    params = draw_parameters(pk_rng)
    ids = np.arange(1, N + 1)
    grid = np.array(sorted({d for days in DAYS.values() for d in days}), dtype=float)
    sim = cartpk.simulate(model, params.assign(ID=ids, DOSE=DOSE), grid, method="rodas", **SOLVER)
    rows = []
    for subject in ids:
        rows.append({"ID": subject, "TIME": 0.0, "DV": np.nan, "ANALYTE": "", "LLOQ": np.nan,
                     "CENS": 0, "LIMIT": np.nan, "EVID": 1, "AMT": DOSE, "MDV": 1})  # fmt: skip
        curve = sim[sim["ID"] == subject].set_index("TIME")
        for analyte, days in DAYS.items():
            for day in days:
                obs = observe(error_rng, float(curve.loc[float(day), analyte]), analyte)
                rows.append({"ID": subject, "TIME": float(day), "ANALYTE": analyte,
                             "LLOQ": LLOQ[analyte], "EVID": 0, "AMT": np.nan, "MDV": 0,
                             **obs})  # fmt: skip
    trial = pd.DataFrame(rows).assign(DOSE=DOSE)
    rank = trial["ANALYTE"].map({a: k for k, a in enumerate(DAYS)}).fillna(-1)
    columns = ["ID", "TIME", "DV", "ANALYTE", "LLOQ", "CENS", "LIMIT", "EVID", "AMT", "MDV",
               "DOSE"]  # fmt: skip
    return (
        trial.assign(_rank=rank)
        .sort_values(["ID", "TIME", "_rank"], kind="stable")
        .reset_index(drop=True)[columns]
    )


def truth(seed: int = SEED) -> pd.DataFrame:
    """Each patient's generating parameters (the random ones), for recovery checks."""
    pk_rng, _ = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    return draw_parameters(pk_rng)[list(OMEGA)].assign(ID=np.arange(1, N + 1))


def write(directory: Path, seed: int = SEED) -> tuple[Path, Path]:
    paths = (directory / "nmosd_trial.csv", directory / "nmosd_truth.csv")
    make_trial(seed).to_csv(paths[0], index=False)
    truth(seed)[["ID", *OMEGA]].to_csv(paths[1], index=False, float_format="%.10g")
    return paths


if __name__ == "__main__":
    for path in write(Path(__file__).resolve().parent):
        print(f"wrote {path}")
