"""Logging for rule scripts: everything a job prints goes to its ``log:`` file."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import traceback
from collections.abc import Iterator
from pathlib import Path

log = logging.getLogger("linecube")


@contextlib.contextmanager
def rule_log(path: str | os.PathLike | None) -> Iterator[logging.Logger]:
    """Redirect file descriptors 1 and 2 (Python, TensorFlow's C++ logs, progress
    bars) to ``path`` and configure the ``linecube`` logger; tracebacks of a failure
    are written there too before the exception propagates (non-zero exit)."""
    if path is None:
        logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
        yield log
        return
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    sys.stdout.flush()
    sys.stderr.flush()
    fh = open(path, "a", buffering=1)
    saved = os.dup(1), os.dup(2)
    os.dup2(fh.fileno(), 1)
    os.dup2(fh.fileno(), 2)
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    log.setLevel(logging.INFO)
    try:
        yield log
    except BaseException:
        traceback.print_exc()
        raise
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        log.removeHandler(handler)
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        os.close(saved[0])
        os.close(saved[1])
        fh.close()
