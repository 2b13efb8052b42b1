"""The on-disk cache of generated model modules, and the compile notices.

A model's generated module is written under ``$CARTPK_CACHE_DIR`` (default
``~/.cache/cartpk``) in ``<name>-<hash>/``, named by the hash of its text, and imported
from there, so that numba's own cache of its six functions is reused by later processes.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import tempfile
from collections.abc import Callable
from functools import cache
from importlib.metadata import version
from pathlib import Path
from types import ModuleType

from ..errors import ModelError
from ..kernels import KERNEL_DIGEST, ModelKernels
from .codegen import _cartpk_version


def cache_dir() -> Path:
    """Root of the compiled-model cache: ``$CARTPK_CACHE_DIR`` or ``~/.cache/cartpk``."""
    root = os.environ.get("CARTPK_CACHE_DIR")
    return Path(root) if root else Path.home() / ".cache" / "cartpk"


#: Called with a one-line notice before a compile: a model's functions the first time its
#: code is seen, the kernels the first time this installation uses them (the command line
#: sets it to print the line on stderr).
COMPILE_NOTICE: Callable[[str], None] | None = None


def _import_generated(name: str, code: str) -> ModuleType:
    """Write ``code`` under the cache (once, atomically) and import it as a module."""
    digest = hashlib.sha256(code.encode("utf-8")).hexdigest()[:16]
    module_name = f"cartpk_model_{name}_{digest}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    directory = cache_dir() / f"{name}-{digest}"
    path = directory / f"{module_name}.py"
    if not path.is_file():
        if COMPILE_NOTICE is not None:
            COMPILE_NOTICE(f"compiling model {name} (first use, about a second; cached afterwards)")
        _write_atomically(path, code)
    spec = importlib.util.spec_from_file_location(module_name, path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    try:
        spec.loader.exec_module(module)
    except BaseException:
        del sys.modules[module_name]
        raise
    return module


@cache
def compiled_kernels(name: str, code: str) -> ModelKernels:
    """The kernels bound to the functions of a generated module (``Model.source_code``);
    one object per distinct code in a process."""
    _note_kernel_compile()
    module = _import_generated(name, code)
    return ModelKernels(module.FUNCTIONS, module.DIMS, module.__file__)


def _note_kernel_compile() -> None:
    """Give the notice once per installation (a marker file named by the hash of the kernel
    sources and the cartpk and numba versions marks that it was given)."""
    if COMPILE_NOTICE is None:
        return
    digest = hashlib.sha256(f"{_cartpk_version()} {version('numba')} {KERNEL_DIGEST}".encode())
    marker = cache_dir() / f"kernels-{digest.hexdigest()[:16]}.compiled"
    if not marker.is_file():
        COMPILE_NOTICE(
            "compiling cartpk's kernels (first use after installation, 10 to 30 s per entry point; "
            "cached afterwards)"
        )
        _write_atomically(marker, "")


def _write_atomically(path: Path, text: str) -> None:
    """Write via a temporary file and ``os.replace`` so readers never see a partial file."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(handle, "w", encoding="utf-8") as stream:
            stream.write(text)
        os.replace(temporary, path)
    except OSError as err:
        raise ModelError(
            f"cannot write the compiled-model cache {path}: {err.strerror}; "
            "set CARTPK_CACHE_DIR to a writable directory"
        ) from None
