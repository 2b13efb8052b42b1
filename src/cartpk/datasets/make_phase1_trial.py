"""Generate data/phase1_trial.csv: a synthetic phase 1 CAR-T dose-escalation trial.

Run from the repository root: ``python data/make_phase1_trial.py``. The generating truth
(ck_stein closed form, Stein et al. 2019 typical values) is tabulated in data/README.md.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

SEED = 20261122
DOSES = (1.0e6, 2.0e6, 3.0e6)  # CAR-T cells/kg
PER_DOSE = 10
DAYS = np.array([0, 1, 4, 7, 10, 14, 21, 28, 60, 90, 180, 270, 365], dtype=float)
LLOQ = 10.0  # copies/ug DNA
SIGMA_LOG = 0.2  # additive residual SD on the log scale
TYPICAL = {
    "C0": 24000 / 3900,  # copies/ug at the reference dose 1e6 cells/kg
    "rho": np.log(3900) / 9.3,  # 1/day
    "tmax": 9.3,  # day
    "Fb": 0.0079,
    "alpha": 0.16,  # 1/day
    "beta": 0.0032,  # 1/day
}
# Between-subject SDs: on C0, rho and alpha only, the random effects of the population model
# that the README's `cartpk popfit` example fits (tmax, Fb and beta are common to all).
OMEGA = {"C0": 0.5, "rho": 0.15, "tmax": 0.0, "Fb": 0.0, "alpha": 0.3, "beta": 0.0}
DOSE_EXP = 1.0


def stein_closed_form(t: np.ndarray, c0, rho, tmax, fb, alpha, beta) -> np.ndarray:
    """ck_stein transgene level (copies/ug) at times t (days)."""
    after = np.maximum(t - tmax, 0.0)
    peak = c0 * np.exp(rho * np.minimum(t, tmax))
    return peak * ((1 - fb) * np.exp(-alpha * after) + fb * np.exp(-beta * after))


def individual_parameters(rng: np.random.Generator, dose: float) -> dict[str, float]:
    """Draw one subject: log-normal IIV, logit-normal Fb, dose effect on C0."""
    values = {}
    for name, typical in TYPICAL.items():
        eta = rng.normal(0.0, OMEGA[name])
        if name == "Fb":
            values[name] = 1 / (1 + np.exp(-(np.log(typical / (1 - typical)) + eta)))
        else:
            values[name] = typical * np.exp(eta)
    values["C0"] *= (dose / 1e6) ** DOSE_EXP
    return values


def subject_rows(rng: np.random.Generator, subject: int, dose: float) -> list[dict]:
    """The dose record and the 13 qPCR observations of one subject."""
    weight = round(float(70 * np.exp(rng.normal(0, 0.2))), 1)
    p = individual_parameters(rng, dose)
    truth = stein_closed_form(DAYS, p["C0"], p["rho"], p["tmax"], p["Fb"], p["alpha"], p["beta"])
    observed = truth * np.exp(rng.normal(0.0, SIGMA_LOG, DAYS.size))
    common = {"ID": subject, "DOSE": dose, "WT": weight, "LLOQ": LLOQ, "ANALYTE": "CART"}
    rows = [{**common, "TIME": 0.0, "DV": np.nan, "CENS": 0, "EVID": 1, "AMT": dose, "MDV": 1}]
    for day, value in zip(DAYS, observed, strict=True):
        censored = value < LLOQ
        dv = LLOQ if censored else float(f"{value:.4g}")
        rows.append(
            {
                **common,
                "TIME": day,
                "DV": dv,
                "CENS": int(censored),
                "EVID": 0,
                "AMT": np.nan,
                "MDV": 0,
            }
        )
    return rows


def make_trial(seed: int = SEED) -> pd.DataFrame:
    """The whole trial, 30 subjects in three dose groups of 10."""
    rng = np.random.default_rng(seed)
    rows = []
    for group, dose in enumerate(DOSES):
        for k in range(PER_DOSE):
            rows += subject_rows(rng, group * PER_DOSE + k + 1, dose)
    columns = ["ID", "TIME", "DV", "ANALYTE", "LLOQ", "CENS", "EVID", "AMT", "MDV", "DOSE", "WT"]
    return pd.DataFrame(rows)[columns]


if __name__ == "__main__":
    out = Path(__file__).resolve().with_name("phase1_trial.csv")
    make_trial().to_csv(out, index=False)
    print(f"wrote {out}")
