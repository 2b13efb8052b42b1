"""Time a benchmark's first call in a new interpreter, where compilation shows.

Each bench script answers ``--first-call ARGS`` by making that call and printing its wall
time (s) last; this runs it in a fresh process, with an empty compile cache if asked.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tempfile


def first_call_seconds(script: str, args: list[str], cache_variable: str, empty: bool) -> float:
    """Seconds printed by ``script --first-call *args`` in a new interpreter.

    ``cache_variable`` (CARTPK_CACHE_DIR or NUMBA_CACHE_DIR) points at a new empty directory
    when ``empty``; otherwise the usual cache is used.
    """
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, **({cache_variable: cache} if empty else {}))
        command = [sys.executable, script, "--first-call", *args]
        result = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    return float(result.stdout.strip().splitlines()[-1])
