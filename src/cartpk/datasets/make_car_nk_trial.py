"""Generate data/car_nk_trial.csv and data/car_nk_truth.csv: a synthetic repeated-infusion
trial of an allogeneic CAR-NK product (NKG2D CAR-NK-like, relapsed myeloma), 18 patients
with three flat infusions each, weekly or fortnightly, CAR-NK levels in blood (flow
cytometry) and serum IL-6, and the 18 patients' generating parameters.

Run from the repository root: ``python data/make_car_nk_trial.py`` (cartpk importable). The
generating truth is the ``ck_nk`` model file at its own typical values, with its omegas on
the three parameters of :data:`RANDOM` (the others common to all), solved with
:func:`cartpk.simulate`; every number is tabulated in data/README.md. The dose rows are
written one by one (EVID = 1, AMT in cells, AMTU = "cells"). Nothing in it is trial data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

import cartpk
from cartpk.scenarios import Population

SEED = 20260611
MODEL = "ck_nk"
#: Arms: (patients, infusion days); every infusion is DOSE cells.
ARMS = {"weekly": (9, (0.0, 7.0, 14.0)), "fortnightly": (9, (0.0, 14.0, 28.0))}
DOSE = 1e9  # cells per infusion, flat: the model's reference dose (a PLACEHOLDER)
#: Parameters with between-subject variability, at the model file's omegas.
RANDOM = ("f_blood", "kel", "t_rej")
#: CAR-NK samples relative to each infusion (days after it, the first at the end of the
#: infusion), the day before the next one, and after the last infusion.
AFTER_EACH = (0.0, 1.0, 3.0)
AFTER_LAST = (7.0, 10.0, 14.0, 21.0, 28.0)
IL6_DAYS = (0.0, 1.0, 3.0, 7.0, 14.0, 21.0, 28.0)
LLOQ = {"CARNK": 0.05, "IL6": 1.5}  # cells/uL (flow cytometry), pg/mL: PLACEHOLDERS
SIGMA_LOG = {"CARNK": 0.25, "IL6": 0.2}  # log-scale residual SDs: PLACEHOLDERS
SIGNIFICANT = 4  # digits kept in DV
SOLVER = {"rtol": 1e-10, "atol": 1e-14}


def schedule() -> tuple[np.ndarray, list[str], list[tuple[float, ...]]]:
    """IDs, each patient's arm and infusion days (arms in ARMS order)."""
    arms = [arm for arm, (n, _) in ARMS.items() for _ in range(n)]
    return np.arange(1, len(arms) + 1), arms, [ARMS[arm][1] for arm in arms]


def carnk_days(infusions: tuple[float, ...]) -> list[float]:
    """Sampling days of CAR-NK for one patient's infusion days."""
    days = {day + after for day in infusions for after in AFTER_EACH}
    days |= {later - 1.0 for later in infusions[1:]}
    days |= {infusions[-1] + after for after in AFTER_LAST}
    return sorted(days)


def draw_parameters(rng: np.random.Generator, n: int) -> pd.DataFrame:
    """n patients' parameters (natural scale): typical values, omegas on RANDOM."""
    model = cartpk.load_model(MODEL)
    omega = {name: model.parameters[name].omega for name in RANDOM}
    population = Population(model, {n: p.value for n, p in model.parameters.items()}, omega)
    values = population.individual(population.draw_etas(n, rng), {})
    return pd.DataFrame(values, columns=list(model.param_names))


def observe(rng: np.random.Generator, truth: float, analyte: str) -> dict:
    """One observation's DV and CENS: log-normal error, 4 digits; below the LLOQ, DV =
    LLOQ with CENS = 1."""
    value = truth * np.exp(rng.normal(0.0, SIGMA_LOG[analyte]))
    if value < LLOQ[analyte]:
        return {"DV": LLOQ[analyte], "CENS": 1}
    return {"DV": float(f"{value:.{SIGNIFICANT}g}"), "CENS": 0}


def make_trial(seed: int = SEED) -> pd.DataFrame:
    """The long NONMEM-style table: each patient's dose records and observations by time."""
    pk_rng, error_rng = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    model = cartpk.load_model(MODEL)
    ids, _, infusions = schedule()
    params = draw_parameters(pk_rng, ids.size).assign(ID=ids, DOSE=DOSE)
    plan = list(zip(ids, infusions, strict=True))
    grid = {i: sorted(set(carnk_days(days)) | set(IL6_DAYS)) for i, days in plan}
    doses = pd.DataFrame(
        [(i, day, DOSE) for i, days in plan for day in days[1:]], columns=["ID", "TIME", "AMT"]
    )
    sim = cartpk.simulate(model, params, grid, doses=doses, method="rodas", **SOLVER)
    rows = []
    for subject, days in plan:
        for day in days:
            rows.append({"ID": subject, "TIME": day, "DV": np.nan, "ANALYTE": "", "LLOQ": np.nan,
                         "CENS": 0, "EVID": 1, "AMT": DOSE, "AMTU": "cells", "MDV": 1})  # fmt: skip
        curve = sim[sim["ID"] == subject].set_index("TIME")
        for analyte, sampled in (("CARNK", carnk_days(days)), ("IL6", IL6_DAYS)):
            for day in sampled:
                obs = observe(error_rng, float(curve.loc[day, analyte]), analyte)
                rows.append({"ID": subject, "TIME": day, "ANALYTE": analyte,
                             "LLOQ": LLOQ[analyte], "EVID": 0, "AMT": np.nan, "AMTU": "",
                             "MDV": 0, **obs})  # fmt: skip
    trial = pd.DataFrame(rows).assign(DOSE=DOSE)
    # Each time: the dose record first (the observation at a dose time sees the dose).
    rank = trial["ANALYTE"].map({"CARNK": 0, "IL6": 1}).fillna(-1)
    columns = ["ID", "TIME", "DV", "ANALYTE", "LLOQ", "CENS", "EVID", "AMT", "AMTU", "MDV",
               "DOSE"]  # fmt: skip
    return (
        trial.assign(_rank=rank)
        .sort_values(["ID", "TIME", "_rank"], kind="stable")
        .reset_index(drop=True)[columns]
    )


def truth(seed: int = SEED) -> pd.DataFrame:
    """Each patient's arm and generating parameters (the random ones), for recovery checks."""
    pk_rng, _ = (np.random.default_rng(s) for s in np.random.SeedSequence(seed).spawn(2))
    ids, arms, _ = schedule()
    drawn = draw_parameters(pk_rng, ids.size)[list(RANDOM)]
    return drawn.assign(ID=ids, ARM=arms)[["ID", "ARM", *RANDOM]]


def write(directory: Path, seed: int = SEED) -> tuple[Path, Path]:
    paths = (directory / "car_nk_trial.csv", directory / "car_nk_truth.csv")
    make_trial(seed).to_csv(paths[0], index=False)
    truth(seed).to_csv(paths[1], index=False, float_format="%.10g")
    return paths


if __name__ == "__main__":
    for path in write(Path(__file__).resolve().parent):
        print(f"wrote {path}")
