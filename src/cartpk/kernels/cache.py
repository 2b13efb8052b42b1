"""Keep numba's on-disk cache of the kernels in step with their sources.

numba stamps a cached function with its own source file only: a cached ``solve_batch``
(``integrate.py``) that inlined ``contract.call`` stays valid after ``contract.py`` changes,
and silently runs the old code. That happens after editing a kernel file in a checkout,
and after upgrading cartpk where numba keeps its cache next to the installed files.

:func:`clear_stale` therefore hashes the source files of every kernel module together and
keeps the hash as a marker file in each directory that holds their cache. When the marker
is missing (first use, or any kernel file changed), the kernels' cache files there are
deleted before numba reads them, and the kernels compile afresh.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from pathlib import Path
from types import ModuleType

import numba

MARKER_PREFIX = "cartpk-kernels-"


def source_digest(sources: Iterable[Path]) -> str:
    """The first 16 hex digits of the SHA-256 of the source files, in path order."""
    digest = hashlib.sha256()
    for path in sorted(Path(source).resolve() for source in sources):
        digest.update(path.name.encode())
        digest.update(path.read_bytes())
    return digest.hexdigest()[:16]


def _cache_directories(modules: Iterable[ModuleType]) -> dict[Path, set[str]]:
    """Each directory numba caches the modules' jitted functions in, with the file stems of
    the modules cached there."""
    found: dict[Path, set[str]] = {}
    for module in modules:
        for value in vars(module).values():
            if isinstance(value, numba.core.registry.CPUDispatcher) and (
                value.__module__ == module.__name__
            ):
                cache = getattr(value, "_cache", None)
                where = getattr(cache, "_cache_path", None)
                if where is not None:
                    found.setdefault(Path(where), set()).add(Path(module.__file__).stem)
    return found


def clear_stale(modules: Iterable[ModuleType], also: Iterable[Path] = ()) -> str:
    """Delete the modules' numba cache files wherever they predate the current sources: the
    modules' own files and ``also`` (files of jitted code they inline, e.g. ``scales.py``).

    A directory that cannot be written is left to numba (which then does not cache there).
    Returns the sources' digest (:func:`source_digest`).
    """
    modules = list(modules)
    digest = source_digest([*(Path(m.__file__) for m in modules), *also])
    marker = MARKER_PREFIX + digest
    for directory, stems in _cache_directories(modules).items():
        if (directory / marker).exists():
            continue
        try:
            for stem in stems:
                for stale in [*directory.glob(f"{stem}.*.nbi"), *directory.glob(f"{stem}.*.nbc")]:
                    stale.unlink(missing_ok=True)
            for old in directory.glob(MARKER_PREFIX + "*"):
                old.unlink(missing_ok=True)
            directory.mkdir(parents=True, exist_ok=True)
            (directory / marker).touch()
        except OSError:
            continue
    return digest
