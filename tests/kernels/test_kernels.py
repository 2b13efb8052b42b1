"""The compiled kernels: one compile for every model, one table per code, stiff batches."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
import textwrap
from pathlib import Path

import numba
import numpy as np
import pytest
from references import vegf_radau

from cartpk import likelihood, solve
from cartpk.kernels import (
    BATCH_KERNELS,
    MODEL_KERNELS,
    SOLVING,
    ModelKernels,
    codes,
    contract,
    integrate,
    method_argument,
    threads,
)
from cartpk.kernels import exposure as exposure_kernels
from cartpk.model import SCALES, SOLVERS, Model
from cartpk.solve import solve_batch

# --------------------------------------------------------------------------- compile once


def test_one_kernel_compile_serves_every_model(stein: Model, vegf: Model, target: Model) -> None:
    for model in (stein, vegf, target):
        solve_batch(model, None, times=[0.0, 5.0, 30.0])
    # the three models (2, 4 and 4 states) share one compiled solve_batch
    assert len(integrate.solve_batch.signatures) == 1


def test_each_solving_kernel_prepares_only_its_methods_solver(stein: Model) -> None:
    """A solving kernel called with a method fills that method's solver slot and no other:
    a closed-form fit does not compile the integrators."""
    fresh = ModelKernels(stein.kernels.compiled, stein.kernels.dims)
    slots = [contract.SOLVER_CLOSED, contract.SOLVER_INTEGRATED]
    assert list(fresh.functions[slots]) == [0, 0]
    p, times = stein.pack({}), np.array([0.0, 10.0, 30.0])
    out, status = np.empty((3, 1)), np.zeros(1, dtype=np.int64)
    no_doses = (np.empty(0), np.empty(0), np.empty(0, dtype=np.int64), np.zeros(2, np.int64))
    t_off = np.array([0, 3])
    fresh.solve_batch(p, times, t_off, *no_doses, codes.METHOD_CLOSED, 1e-8, 1e-10, 1000,
                      out, status, np.empty(1))  # fmt: skip
    assert (
        fresh.functions[contract.SOLVER_CLOSED] == integrate.solver(contract.SOLVER_CLOSED).address
    )
    assert fresh.functions[contract.SOLVER_INTEGRATED] == 0
    assert status[0] == codes.STATUS_OK
    closed = out.copy()
    fresh.solve_batch(p, times, t_off, *no_doses, codes.METHOD_DOPRI5, 1e-10, 1e-12, 10_000,
                      out, status, np.empty(1))  # fmt: skip
    assert fresh.functions[contract.SOLVER_INTEGRATED] != 0
    assert status[0] == codes.STATUS_OK
    np.testing.assert_allclose(out, closed, rtol=1e-7)


def test_every_solving_kernel_names_its_method_and_exposure_solves_alone() -> None:
    kernels = {**MODEL_KERNELS, **BATCH_KERNELS}
    assert set(SOLVING) <= set(kernels)
    for name in SOLVING:
        position, in_array = method_argument(kernels[name])
        names = list(inspect.signature(kernels[name].py_func).parameters)[2:]
        assert names[position] == ("solver" if in_array else "method")
    # the one kernel left out integrates on its own, never through solve_subject
    assert set(kernels) - set(SOLVING) == {"exposure_batch"}
    assert "solve_subject" not in inspect.getsource(exposure_kernels)


def test_an_unprepared_solver_is_a_status_not_a_crash(stein: Model) -> None:
    """The raw kernel with an empty solver slot reports STATUS_NO_SOLVER for the subject."""
    functions = stein.kernels.functions.copy()
    functions[contract.SOLVER_CLOSED] = 0
    status, fail = np.zeros(1, dtype=np.int64), np.empty(1)
    out = np.empty((2, 1))
    no_doses = (np.empty(0), np.empty(0), np.empty(0, dtype=np.int64), np.zeros(2, np.int64))
    integrate.solve_batch(functions, stein.kernels.dims, stein.pack({}), np.array([1.0, 5.0]),
                          np.array([0, 2]), *no_doses, codes.METHOD_CLOSED, 1e-8, 1e-10, 100,
                          out, status, fail, 0, 1)  # fmt: skip
    assert status[0] == codes.STATUS_NO_SOLVER
    assert np.isnan(out).all()


KERNELS_DIR = Path(integrate.__file__).resolve().parent


def array_slice_copies(source: str) -> list[int]:
    """Lines assigning to a slice (``a[:] = ...``, ``a[i, :] = ...``) from anything but a
    number or a numpy constant: in numba an array-to-array slice assignment compiles a
    shape check with its error-message formatting, seconds of compile in every kernel
    that reaches it."""
    lines = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Assign):
            continue
        sliced = [
            t for t in node.targets
            if isinstance(t, ast.Subscript)
            and any(isinstance(e, ast.Slice) for e in ast.walk(t.slice))
        ]  # fmt: skip
        value = node.value.operand if isinstance(node.value, ast.UnaryOp) else node.value
        constant = isinstance(value, ast.Constant) or (
            isinstance(value, ast.Attribute)
            and isinstance(value.value, ast.Name)
            and value.value.id == "np"
        )
        if sliced and not constant:
            lines.append(node.lineno)
    return lines


def test_kernels_copy_arrays_by_loops_not_slices() -> None:
    found = {
        path.name: lines
        for path in sorted(KERNELS_DIR.glob("*.py"))
        if (lines := array_slice_copies(path.read_text(encoding="utf-8")))
    }
    assert not found, found


def test_slice_copy_check_finds_a_planted_copy() -> None:
    planted = "def f(y, ys):\n    y[:] = np.nan\n    y[1:] = -1.0\n    y[:] = ys\n"
    assert array_slice_copies(planted) == [4]


def test_model_code_holds_only_the_model_functions(vegf: Model) -> None:
    code = vegf.source_code
    assert code.count("@numba.cfunc(") == 6 and "@numba.njit(" not in code
    assert "solve_batch" not in code and "prange" not in code


@pytest.mark.parametrize("n", [0, 1, 3, 4, 17, 1000])
def test_over_items_covers_every_item_once(n: int) -> None:
    seen = np.zeros(n, dtype=int)

    def kernel(mark: int, first: int, last: int) -> None:
        seen[first:last] += mark

    threads.over_items(kernel, n, 1)
    np.testing.assert_array_equal(seen, np.ones(n, dtype=int))


@pytest.mark.skipif(numba.config.NUMBA_NUM_THREADS < 2, reason="needs 2 numba threads")
def test_batch_results_do_not_depend_on_the_thread_count(vegf: Model) -> None:
    rng = np.random.default_rng(5)
    values = {k: vegf.parameters[k].value * np.exp(0.3 * rng.standard_normal(300)) for k in VARIED}
    times = np.tile(TIMES, 300)
    offsets = np.arange(301) * TIMES.size
    before = numba.get_num_threads()
    runs = []
    try:
        for count in (1, numba.config.NUMBA_NUM_THREADS):
            numba.set_num_threads(count)
            runs.append(solve_batch(vegf, values, times=times, offsets=offsets).values)
    finally:
        numba.set_num_threads(before)
    np.testing.assert_array_equal(runs[0], runs[1])


STALE_CALLER = """
import sys
sys.path.insert(0, {where!r})
import helper, caller
from cartpk.kernels.cache import clear_stale
if {guarded}:
    clear_stale([helper, caller])
print(caller.twice())
"""


def run_caller(where: Path, guarded: bool) -> str:
    """What caller.twice() returns in a new interpreter (after clear_stale if guarded)."""
    code = STALE_CALLER.format(where=str(where), guarded=guarded)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


def test_an_edited_callee_clears_its_callers_cache(tmp_path: Path) -> None:
    """numba would load the cached caller with the old helper inlined (it stamps the
    caller's file only); clear_stale hashes both files and clears the cache."""
    helper = "import numba\n@numba.njit(cache=True)\ndef value():\n    return {}\n"
    (tmp_path / "helper.py").write_text(helper.format(1))
    (tmp_path / "caller.py").write_text(
        textwrap.dedent("""
        import numba
        from helper import value
        @numba.njit(cache=True)
        def twice():
            return 2 * value()
    """)
    )
    assert run_caller(tmp_path, guarded=True) == "2"
    (tmp_path / "helper.py").write_text(helper.format(5))
    assert run_caller(tmp_path, guarded=True) == "10"
    assert len(list((tmp_path / "__pycache__").glob("cartpk-kernels-*"))) == 1


# --------------------------------------------------------------------------- code tables


def test_method_codes_are_one_table() -> None:
    assert codes.METHODS == {
        "dopri5": codes.METHOD_DOPRI5,
        "rodas": codes.METHOD_RODAS,
        "auto": codes.METHOD_AUTO,
        "closed": codes.METHOD_CLOSED,
    }
    assert len(set(codes.METHODS.values())) == len(codes.METHODS)
    assert solve.METHODS is codes.METHODS and SOLVERS == tuple(codes.METHODS)


def test_status_reasons_cover_every_failure_code() -> None:
    failures = {
        codes.STATUS_MAX_STEPS,
        codes.STATUS_STEP_UNDERFLOW,
        codes.STATUS_NOT_FINITE,
        codes.STATUS_NO_SOLVER,
    }
    assert set(solve.STATUS_REASONS) == failures
    assert codes.STATUS_OK not in failures


def test_error_model_and_scale_codes_match_their_python_tables() -> None:
    assert set(codes.KIND_CODES) == set(likelihood.ERROR_MODELS)
    assert likelihood.KIND_CODES is codes.KIND_CODES
    assert set(SCALES) == set(codes.SCALE_CODES)
    assert len(set(codes.KIND_CODES.values())) == len(codes.KIND_CODES)


# --------------------------------------------------------------------------- stiffness

VARIED = ("C0", "rho", "alpha", "kkill", "kout")
TIMES = np.array([0.0, 1, 4, 7, 9.3, 10, 14, 21, 28, 60, 90])


@pytest.fixture(scope="module")
def stiff_batch(vegf: Model) -> dict[str, np.ndarray]:
    """ck_vegf around its typical values with log-normal SD 0.3 on C0, rho, alpha, kkill and
    kout (seed 1), 4,000 subjects at 2e6 cells/kg."""
    rng = np.random.default_rng(1)
    n = 4000
    values = {k: vegf.parameters[k].value * np.exp(0.3 * rng.standard_normal(n)) for k in VARIED}
    return values | {"DOSE": np.full(n, 2e6)}


def solve_all(vegf: Model, batch: dict, method: str):
    n = batch["DOSE"].size
    return solve_batch(
        vegf,
        batch,
        times=np.tile(TIMES, n),
        offsets=np.arange(n + 1) * TIMES.size,
        method=method,
        on_failure="nan",
    )


def test_auto_solves_a_batch_where_dopri5_fails(vegf: Model, stiff_batch: dict) -> None:
    explicit = solve_all(vegf, stiff_batch, "dopri5")
    failed = np.flatnonzero(explicit.status)
    assert failed.size > 0, "the batch is meant to hold subjects too stiff for dopri5"
    assert set(explicit.status[failed]) == {codes.STATUS_MAX_STEPS}
    auto = solve_all(vegf, stiff_batch, "auto")
    assert not auto.status.any()
    chosen = np.concatenate([failed, np.arange(20)])
    for i in chosen:
        par = {k: p.value for k, p in vegf.parameters.items()}
        par |= {k: stiff_batch[k][i] for k in VARIED}
        expected = vegf_radau(par, TIMES, stiff_batch["DOSE"][i])
        got = auto.values[i * TIMES.size : (i + 1) * TIMES.size]
        rel = np.abs(got - expected) / np.maximum(np.abs(expected), 1e-12)
        assert rel.max() < 1e-4, (i, rel.max())


def test_auto_equals_dopri5_where_nothing_is_stiff(stein: Model) -> None:
    """ck_stein has no stiff component: auto takes exactly dopri5's steps."""
    rng = np.random.default_rng(2)
    values = {
        k: stein.parameters[k].value * np.exp(0.3 * rng.standard_normal(200))
        for k in ("C0", "rho", "alpha")
    }
    times = np.tile(TIMES, 200)
    offsets = np.arange(201) * TIMES.size
    a = solve_batch(stein, values, times=times, offsets=offsets, method="auto")
    b = solve_batch(stein, values, times=times, offsets=offsets, method="dopri5")
    np.testing.assert_array_equal(a.values, b.values)
