"""Fixtures shared by the test modules: built-in models, loaded (and compiled) once.

numba's on-disk cache checks only the source file of each compiled function, not the
files of the functions it calls, so after an edit of one kernel file the cached callers
in other files would be stale. Unless NUMBA_CACHE_DIR is set, the tests therefore use a
numba cache directory named by the hash of the kernel sources (set before numba loads).
"""

from __future__ import annotations

import hashlib
import os
import tempfile
from pathlib import Path

import pytest

_SOURCES = Path(__file__).resolve().parents[1] / "src" / "cartpk"
if "NUMBA_CACHE_DIR" not in os.environ and _SOURCES.is_dir():
    _digest = hashlib.sha256()
    for _path in [*sorted((_SOURCES / "kernels").glob("*.py")), _SOURCES / "scales.py"]:
        _digest.update(_path.read_bytes())
    os.environ["NUMBA_CACHE_DIR"] = str(
        Path(tempfile.gettempdir()) / f"cartpk-numba-{_digest.hexdigest()[:16]}"
    )

from cartpk.model import Model, load_model  # noqa: E402


@pytest.fixture(scope="session")
def stein() -> Model:
    return load_model("ck_stein")


@pytest.fixture(scope="session")
def vegf() -> Model:
    return load_model("ck_vegf")


@pytest.fixture(scope="session")
def target() -> Model:
    return load_model("ck_target")
