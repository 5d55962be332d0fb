"""Atomic output: every file linecube writes appears under its final name whole
or not at all (a temporary next to it, renamed on success), so a job killed
half-way never leaves a truncated output that a rerun would take as done.
"""

from __future__ import annotations

import contextlib
import os
import re
import tempfile
from collections.abc import Iterator
from pathlib import Path


def _new_temporary(path: Path) -> Path:
    """A fresh ``.{name}.XXXXXXXX.tmp`` next to ``path`` (its folder made, the
    temporaries of an earlier killed write removed), with ordinary file permissions."""
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; outputs are ordinary files
    return Path(tmp)


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path next to ``path``; rename it onto ``path`` on success.

    A job killed half-way leaves only a ``.tmp`` file that no rule takes as
    input, never a truncated file under the final name; the next write of the
    same file removes it.
    """
    path = Path(path)
    tmp_path = _new_temporary(path)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    finally:
        if tmp_path.exists():
            tmp_path.unlink()


@contextlib.contextmanager
def atomic_paths(*paths: str | os.PathLike) -> Iterator[list[Path]]:
    """:func:`atomic_path` for files that belong together: yields one temporary
    path per file and renames them all, in order and back to back, only when the
    block succeeds (on an error none is replaced and the temporaries go)."""
    with contextlib.ExitStack() as stack:
        tmps = []
        for p in paths:
            tmp = _new_temporary(Path(p))
            tmps.append(tmp)
            stack.callback(lambda t=tmp: t.unlink(missing_ok=True))
        yield tmps
        for tmp, p in zip(tmps, paths):
            os.replace(tmp, p)


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporary files an earlier, killed write of ``path`` left behind
    (``.{name}.XXXXXXXX.tmp`` from :func:`atomic_path`); returns what was removed.
    Safe under Snakemake, which never runs two jobs writing the same output."""
    path = Path(path)
    pattern = re.compile(rf"^\.{re.escape(path.name)}\.[A-Za-z0-9_]{{8}}\.tmp$")
    removed = []
    if path.parent.is_dir():
        for f in path.parent.iterdir():
            if pattern.match(f.name):
                f.unlink(missing_ok=True)
                removed.append(f)
    return removed


def write_csv_atomic(df, path: str | os.PathLike, **kwargs) -> None:
    """Write a pandas DataFrame to CSV atomically."""
    with atomic_path(path) as tmp:
        df.to_csv(tmp, index=False, **kwargs)
