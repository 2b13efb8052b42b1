"""Fixtures shared by the test modules: built-in models, loaded (and compiled) once."""

from __future__ import annotations

import pytest

from cartpk.model import Model, load_model


@pytest.fixture(scope="session")
def stein() -> Model:
    return load_model("ck_stein")


@pytest.fixture(scope="session")
def vegf() -> Model:
    return load_model("ck_vegf")


@pytest.fixture(scope="session")
def target() -> Model:
    return load_model("ck_target")
