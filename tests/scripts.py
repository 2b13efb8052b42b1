"""Standalone scripts of the repository (data generators, benches) loaded as modules, so
that tests can call their functions. Tests import this module by name (pytest puts tests/
on sys.path)."""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import ModuleType


def load_script(path: Path) -> ModuleType:
    """The Python file at ``path``, executed as a module named after it."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
