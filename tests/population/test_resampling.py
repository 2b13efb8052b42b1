"""Bootstrap and simulation–estimation (cartpk.population.resampling), here and on dask.

A small problem keeps it fast: 12 subjects of the bundled phase 1 trial (4 per dose), ck_stein
with random effects on C0, rho and alpha, a DOSE effect on C0, (60, 30) iterations and 100
importance-sampling draws. The dask runs use a 2-worker LocalCluster (processes, 1 thread
each) and must give the local tables exactly.
"""

from __future__ import annotations

import warnings
from dataclasses import replace

import numpy as np
import pandas as pd
import pytest

import cartpk
from cartpk.data import bundled, read_dataset
from cartpk.errors import FitError, FitWarning

#: About 50 s with a cold cache (a 2-worker cluster compiling the kernels, 20 small fits):
#: the slow suite, which keeps CI within its 15 minutes (`pytest -m slow`).
pytestmark = pytest.mark.slow

N_SUBJECTS = 12
SEED = 7


@pytest.fixture(scope="module")
def trial() -> pd.DataFrame:
    frame = pd.read_csv(bundled("phase1_trial.csv"))
    ids = pd.unique(frame["ID"])  # 10 subjects per dose level: take 4 of each
    chosen = [*ids[0:4], *ids[10:14], *ids[20:24]]
    return frame[frame["ID"].isin(chosen)].reset_index(drop=True)


@pytest.fixture(scope="module")
def fit(trial: pd.DataFrame) -> cartpk.PopulationFit:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FitWarning)
        return cartpk.fit_population(
            "ck_stein",
            trial,
            random=["C0", "rho", "alpha"],
            covariates={"C0": ["DOSE"]},
            n_iter=(60, 30),
            n_is=100,
            progress=False,
        )


@pytest.fixture(scope="module")
def client():
    distributed = pytest.importorskip("dask.distributed")
    cluster = distributed.LocalCluster(
        n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None
    )
    with distributed.Client(cluster) as c:
        yield c
    cluster.close()


@pytest.fixture(scope="module")
def boot(fit: cartpk.PopulationFit) -> cartpk.BootstrapResult:
    return cartpk.bootstrap(fit, n=4, seed=SEED)


def test_bootstrap_on_dask_equals_the_local_run(fit, boot, client) -> None:
    remote = cartpk.bootstrap(fit, n=4, seed=SEED, scheduler=client)
    pd.testing.assert_frame_equal(remote.table, boot.table, check_exact=True)
    assert boot.table["replicate"].tolist() == [0, 1, 2, 3]
    assert set(boot.parameters) <= set(boot.table.columns)
    assert {"C0", "C0~DOSE", "omega_C0", "CART_sigma"} <= set(boot.parameters)


def test_bootstrap_is_case_resampling(fit, trial, boot) -> None:
    original = read_dataset(trial)
    for r in range(len(boot.table)):
        sample = boot.sample(r)
        drawn = boot.drawn(r)
        assert list(sample.ids) == list(range(1, N_SUBJECTS + 1))
        assert len(drawn) == N_SUBJECTS and set(drawn) <= set(fit.ids)
        mine_all, theirs_all = sample.observations(), original.observations()
        for new, old in zip(sample.ids, drawn, strict=True):
            mine = mine_all[mine_all["ID"] == new]
            theirs = theirs_all[theirs_all["ID"] == old]
            for column in ("TIME", "DV", "CENS", "LLOQ", "DOSE"):
                np.testing.assert_array_equal(mine[column], theirs[column])
    assert any(len(set(boot.drawn(r))) < N_SUBJECTS for r in range(len(boot.table)))
    # replicate r draws from SeedSequence(seed).spawn(n)[r]
    rng = np.random.default_rng(np.random.SeedSequence(SEED).spawn(4)[2])
    assert boot.drawn(2) == [fit.ids[k] for k in rng.integers(0, N_SUBJECTS, N_SUBJECTS)]


def test_bootstrap_percentile_intervals(boot) -> None:
    ci = boot.ci()
    ok = boot.table[boot.table["converged"]]
    assert boot.converged_share == pytest.approx(len(ok) / len(boot.table))
    for row in ci.itertuples():
        values = ok[row.parameter].to_numpy(float)
        low, high = np.percentile(values, [2.5, 97.5])
        assert (row.low, row.high, row.n) == (low, high, values.size)
    narrow = boot.ci(level=0.5)
    assert np.all(narrow["low"] >= ci["low"]) and np.all(narrow["high"] <= ci["high"])


def test_bootstrap_with_the_data_matches_the_rebuilt_data(fit, trial, boot) -> None:
    given = cartpk.bootstrap(fit, n=2, seed=SEED, data=trial)
    # the same refits (the notes may differ: the trial has a WT column the model does not use)
    kept = boot.table.iloc[:2].drop(columns="notes")
    pd.testing.assert_frame_equal(given.table.drop(columns="notes"), kept, check_exact=True)


def test_bootstrap_refuses_data_the_fit_does_not_keep(fit) -> None:
    other = replace(
        fit, covariate_model=[{**fit.covariate_model[0], "covariate": "WT", "label": "C0~WT"}]
    )
    with pytest.raises(FitError, match="WT.*data="):
        cartpk.bootstrap(other, n=1)


def test_simest_on_dask_equals_the_local_run(fit, trial, client) -> None:
    local = cartpk.simest(fit, trial, n=3, seed=SEED)
    remote = cartpk.simest(fit, trial, n=3, seed=SEED, scheduler=client)
    pd.testing.assert_frame_equal(remote.table, local.table, check_exact=True)
    summary = local.summary().set_index("parameter")
    ok = local.table[local.table["converged"]]
    for name in local.parameters:
        truth = local.truth[name]
        values = ok[name].to_numpy(float)
        assert summary.loc[name, "bias"] == pytest.approx(values.mean() - truth)
        assert summary.loc[name, "rmse"] == pytest.approx(np.sqrt(np.mean((values - truth) ** 2)))
        low, high = ok[f"{name}_low"], ok[f"{name}_high"]
        inside = ((low <= truth) & (truth <= high))[low.notna() & high.notna()]
        assert summary.loc[name, "coverage_pct"] == pytest.approx(100 * inside.mean(), nan_ok=True)
    assert local.truth["C0"] == pytest.approx(fit.typical()["C0"], rel=1e-12)
    assert {"C0", "rho", "omega_C0", "CART_sigma"} <= set(local.parameters)


def test_failed_replicates_are_counted(fit) -> None:
    broken = replace(fit, settings={**fit.settings, "n_iter": [0, 30]})  # refits raise
    result = cartpk.bootstrap(broken, n=2, seed=SEED)
    assert len(result.table) == 2 and result.converged_share == 0.0
    assert result.table["error"].str.startswith("FitError: n_iter").all()
    assert result.table["C0"].isna().all()
    assert (result.ci()["n"] == 0).all()


def test_simest_from_a_population(fit, trial) -> None:
    population = cartpk.Population(
        fit.model, fit.typical(), omega={"C0": 0.5, "rho": 0.1, "alpha": 0.2}
    )
    result = cartpk.simest(
        population,
        trial,
        n=1,
        seed=SEED,
        sigma={"CART": {"sigma": 0.2}},
        n_iter=(30, 15),
        n_is=50,
    )
    assert len(result.table) == 1 and result.table["converged"].all()
    assert result.truth["omega_rho"] == 0.1 and result.truth["CART_sigma"] == 0.2
    assert result.truth["rho"] == pytest.approx(fit.typical()["rho"], rel=1e-12)
    assert {"C0", "omega_alpha", "CART_sigma"} <= set(result.parameters)
    with pytest.raises(ValueError, match="sigma"):
        cartpk.simest(population, trial, n=1)
