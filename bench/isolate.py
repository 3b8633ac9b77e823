"""What every benchmark does before it measures: the processes it starts run as a user's do.

- **Compiled**: the package's bytecode is written first (an install from a wheel compiles it), so
  no timed run pays for compiling (about 30 ms), even where ``PYTHONDONTWRITEBYTECODE`` is set.
- **A cache folder of its own**: ``XDG_CACHE_HOME`` points at a temporary folder removed at exit,
  so no run reads a parse cache the benchmark did not write, and none is left in ``~/.cache``.
"""

from __future__ import annotations

import atexit
import compileall
import os
import shutil
import tempfile
from pathlib import Path

import reconciler


def isolate() -> None:
    """Compile the package and give the processes started from here a cache folder of their own."""
    compileall.compile_dir(Path(reconciler.__file__).parent, quiet=1)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)
    folder = tempfile.mkdtemp(prefix="reconciler-bench-cache-")
    atexit.register(shutil.rmtree, folder, True)
    os.environ["XDG_CACHE_HOME"] = folder
