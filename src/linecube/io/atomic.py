"""Atomic output: every file linecube writes appears under its final name whole
or not at all (a temporary next to it, renamed on success), so a job killed
half-way never leaves a truncated output that a rerun would take as done.
"""

from __future__ import annotations

import contextlib
import errno
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
    path per file and replaces them all or none. Before the renames each existing
    file is kept as a hard link (``.{name}.XXXXXXXX.bak``); when any rename fails
    the files already replaced are put back and the error names the user's path,
    not a temporary one."""
    paths = tuple(Path(p) for p in paths)
    with contextlib.ExitStack() as stack:
        tmps = []
        for p in paths:
            tmp = _new_temporary(p)
            tmps.append(tmp)
            stack.callback(lambda t=tmp: t.unlink(missing_ok=True))
        yield tmps
        _replace_all(tmps, paths)


def _replace_all(tmps: list[Path], paths: tuple[Path, ...]) -> None:
    backups: list[Path | None] = []
    try:
        for p in paths:
            if p.is_dir():
                raise IsADirectoryError(errno.EISDIR, "is a directory, cannot be replaced by a file", str(p))
            if p.exists():
                b = Path(tempfile.mktemp(prefix=f".{p.name}.", suffix=".bak", dir=p.parent))
                os.link(p, b)
                backups.append(b)
            else:
                backups.append(None)
    except OSError as e:
        for b in backups:
            if b is not None:
                b.unlink(missing_ok=True)
        raise OSError(e.errno, e.strerror, str(getattr(e, "filename", None) or paths[len(backups)])) from None
    done = 0
    try:
        for tmp, p in zip(tmps, paths):
            try:
                os.replace(tmp, p)
            except OSError as e:
                raise OSError(e.errno, f"cannot write it ({e.strerror})", str(p)) from None
            done += 1
    except BaseException:
        for p, b in list(zip(paths, backups))[:done]:  # put back what was replaced
            if b is not None:
                os.replace(b, p)
            else:
                p.unlink(missing_ok=True)
        raise
    finally:
        for b in backups:
            if b is not None:
                b.unlink(missing_ok=True)


@contextlib.contextmanager
def exclusive(path: str | os.PathLike) -> Iterator[Path]:
    """Hold an advisory lock (``fcntl.flock`` on ``.{name}.lock`` next to ``path``)
    for the block; a second writer of the same output gets :class:`Busy` at once
    instead of deleting the first one's temporary files. The lock goes with the
    process (also when it is killed)."""
    import fcntl

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    lock = path.with_name(f".{path.name}.lock")
    try:  # never through a link planted at the lock's name (shared, world-writable folders)
        fd = os.open(lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, 0o666)
    except OSError as e:
        if e.errno == errno.ELOOP:
            raise Busy(f"{lock}: is a symbolic link; linecube does not follow links it did not make (remove it)") from None
        raise
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise Busy(
                f"{path}: another linecube process is writing it (lock {lock}); wait for it to finish or use another --out"
            ) from None
        try:
            yield lock
        finally:  # the lock file stays: unlinking it would let a third writer lock a new inode
            fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


class Busy(RuntimeError):
    """Another process holds the output's lock (:func:`exclusive`)."""


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


def write_json_atomic(obj, path: str | os.PathLike) -> None:
    """Write ``obj`` as indented JSON atomically; NaN and infinities become null
    (strict JSON), numpy numbers plain numbers."""
    import json
    import math

    def clean(v):
        if isinstance(v, dict):
            return {str(k): clean(x) for k, x in v.items()}
        if isinstance(v, list | tuple):
            return [clean(x) for x in v]
        if hasattr(v, "item") and not isinstance(v, str | bytes):
            v = v.item()
        if isinstance(v, float) and not math.isfinite(v):
            return None
        return v

    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(clean(obj), indent=1, allow_nan=False))


def save_model_atomic(model, path: str | os.PathLike) -> None:
    """A Keras model's ``save`` to a temporary ``.keras`` next to ``path``, then rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{path.stem}.*.tmp.keras"):  # left by a killed save
        stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.stem}.{os.getpid()}.tmp.keras")
    try:
        model.save(tmp)
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()
