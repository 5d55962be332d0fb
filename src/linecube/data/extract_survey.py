"""Extraction of many LOGCUBEs into one cubes.h5 (:func:`extract_to_h5`): cubes
read on worker threads (:func:`linecube.data.extract.extract_cube`), rows written
as they finish, a cube that fails becomes one line of the rejects table
(:func:`rejects_path`), the disk checked before each cube (a full disk or a file
size limit stops the run with one clear error, :class:`DiskFull`), and a run that
rejects more than its threshold refused (:class:`TooManyRejects`).
"""

from __future__ import annotations

import contextlib
import errno
import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path

from linecube.data.extract import ExtractOptions, extract_cube
from linecube.io.atomic import atomic_paths, write_csv_atomic
from linecube.io.drpall import CubeRequest
from linecube.io.formats import CubeLayout, LineList, create_cube_file, shown, write_cube_row
from linecube.io.logcube import CubeError


@dataclass
class ExtractSummary:
    extracted: int
    rejected: int
    seconds: float
    rejects: list[dict]


class TooManyRejects(RuntimeError):
    """More cubes were rejected than ``max_reject_fraction`` allows."""


class NothingExtracted(RuntimeError):
    """No cube could be extracted; an existing output was left as it was."""


def rejects_path(out: str | os.PathLike) -> Path:
    """``<out stem>.rejects.csv`` next to an extraction output."""
    out = Path(out)
    return out.with_name(out.name.removesuffix(".h5") + ".rejects.csv")


def extract_to_h5(
    requests: Sequence[CubeRequest],
    out: str | os.PathLike,
    lines: LineList,
    layout: CubeLayout = CubeLayout(),
    *,
    drpver: str,
    config: dict | None = None,
    compression: str | None = "lzf",
    threads: int = 1,
    max_reject_fraction: float = 1.0,
    label: str = "",
    progress: bool = True,
    pre_rejects: Sequence[dict] = (),
    allow_empty: bool = True,
    options: ExtractOptions | None = None,
) -> ExtractSummary:
    """Extract cubes into a cubes.h5-layout file ``out`` (rows sorted by plate-IFU)
    and write ``<out stem>.rejects.csv`` (plateifu, path, reason).

    Cubes are processed in parallel up to ``threads`` and each is written to a
    temporary file as soon as it is extracted (memory does not grow with the
    number of cubes). ``pre_rejects`` (rows found before extraction, e.g. a cube
    with no drpall row) count towards ``max_reject_fraction`` and go to the
    rejects file. The HDF5 and the rejects file are replaced together, the
    rejects' SHA-256 stored in the HDF5 (attribute ``rejects_sha256``), and only
    when something was extracted: with nothing extracted (:class:`NothingExtracted`)
    or too many rejects (:class:`TooManyRejects`) an existing output is left as it
    was, and the rejects go to ``<stem>.rejects.csv`` only when no output exists
    (else to ``<stem>.rejects.failed.csv``). ``options``: :class:`ExtractOptions`
    (default: the schema's). ``allow_empty`` (the workflow's
    per-plate files): with nothing extracted and no earlier output, write a 0-row
    file (else :class:`NothingExtracted`, and no file). A second process writing the
    same ``out`` is refused (:class:`linecube.io.atomic.Busy`).
    """
    from linecube.io.atomic import exclusive

    with exclusive(out), _disk_errors(out):
        return _extract_to_h5(requests, out, lines, layout, drpver, config, compression, threads,
                              max_reject_fraction, label, progress, pre_rejects, allow_empty, options)  # fmt: skip


class DiskFull(OSError):
    """The file system ran out of space (or a file-size limit) while writing."""


_FULL = {errno.ENOSPC, errno.EFBIG, errno.EDQUOT}


def _is_full(e: BaseException) -> bool:
    text = str(e).lower()
    return getattr(e, "errno", None) in _FULL or any(f"errno = {n}" in text for n in _FULL) or "no space left" in text


@contextlib.contextmanager
def _disk_errors(out: Path):
    """Turn a full disk during the write into one :class:`DiskFull` naming ``out``,
    and keep HDF5's follow-up errors (raised while h5py frees objects of a file
    it could not flush) off stderr."""
    seen: list = []
    hook = sys.unraisablehook
    sys.unraisablehook = lambda u: seen.append(u) if _is_full(u.exc_value) else hook(u)
    try:
        yield
    except DiskFull:
        raise
    except (OSError, RuntimeError) as e:
        if not _is_full(e):
            raise
        import gc

        gc.collect()  # free h5py's objects of the failed file while the quiet hook is in place
        raise DiskFull(errno.ENOSPC, f"{Path(out).parent} is full (or over a file-size limit) while writing it; "
                       f"nothing was replaced and the temporary file was removed", str(out)) from None  # fmt: skip
    finally:
        sys.unraisablehook = hook


#: free space kept beyond the next cube (HDF5 metadata, the rejects file)
SPARE_BYTES = 16 << 20


def _check_room(tmp: Path, cube: dict, out: Path) -> None:
    """Stop with :class:`DiskFull` before a write that the file system has no room
    for (HDF5 recovers badly from a failed write: tracebacks at exit, a crash)."""
    import shutil

    need = sum(cube[k].nbytes for k in ("flux", "ivar", "mask")) + SPARE_BYTES
    free = shutil.disk_usage(tmp.parent).free
    if free < need:
        raise DiskFull(errno.ENOSPC, f"{tmp.parent} has {free >> 20} MB free, too little for the next cube; "
                       "nothing was replaced and the temporary file was removed", str(out))  # fmt: skip
    limit = _file_size_limit()
    if limit is not None and tmp.stat().st_size + need > limit:
        raise DiskFull(errno.EFBIG, f"the file-size limit ({limit >> 10} kB, ulimit -f) leaves no room for the next cube; "
                       "nothing was replaced and the temporary file was removed", str(out))  # fmt: skip


def _file_size_limit() -> int | None:
    """The process's file-size limit in bytes (``ulimit -f``), None when unlimited."""
    try:
        import resource

        soft = resource.getrlimit(resource.RLIMIT_FSIZE)[0]
    except (ImportError, OSError, ValueError):
        return None
    return None if soft == resource.RLIM_INFINITY else int(soft)


def _reject_row(plateifu, path, reason) -> dict:
    """One rejects row whose every field prints and writes as UTF-8 whatever bytes a
    file name held (:func:`linecube.io.formats.shown`): one bad name never loses the good cubes."""
    return {"plateifu": shown(plateifu or ""), "path": shown(path or ""), "reason": shown(reason or "")}


def _extract_to_h5(requests, out, lines, layout, drpver, config, compression, threads, max_reject_fraction, label,
                   progress, pre_rejects, allow_empty, options) -> ExtractSummary:  # fmt: skip
    import hashlib

    import h5py
    import pandas as pd
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    out = Path(out)
    reqs = sorted(requests, key=lambda r: r.plateifu)
    rejects: list[dict] = [_reject_row(r.get("plateifu", ""), r.get("path", ""), r.get("reason", "")) for r in pre_rejects]
    seen: set[str] = set()
    todo = []
    for r in reqs:
        if r.plateifu in seen:
            rejects.append(_reject_row(r.plateifu, r.path, "duplicate plate-IFU in the request list"))
            continue
        seen.add(r.plateifu)
        todo.append(r)
    n_total = len(reqs) + len(pre_rejects)
    rej_path = rejects_path(out)

    def work(r: CubeRequest):
        try:
            return r, extract_cube(r, lines, layout, options), None
        except CubeError as e:
            return r, None, str(e)

    def outcomes() -> Iterable:
        if threads > 1 and len(todo) > 1:
            from concurrent.futures import ThreadPoolExecutor

            with ThreadPoolExecutor(max_workers=threads) as pool:
                yield from pool.map(work, todo)
        else:
            for r in todo:
                yield work(r)

    def fail(exc: Exception):
        target = (
            rej_path if not out.exists() else rej_path.with_name(rej_path.name.replace(".rejects.csv", ".rejects.failed.csv"))
        )
        write_csv_atomic(pd.DataFrame(rejects, columns=["plateifu", "path", "reason"]), target)
        if target != rej_path:
            first, _, rest = exc.args[0].partition("\n")
            exc.args = (
                f"{first.rstrip(':')}; {out} was left as it was, these rejects are in {target}" + (f"\n{rest}" if rest else ""),
            )
        raise exc

    n_ok = 0
    bar = tqdm(total=len(todo), desc=f"extract {label}".strip(), unit="cube", disable=not progress, file=sys.stderr)
    with bar, atomic_paths(out, rej_path) as (tmp, tmp_rej):  # the bar ends before any error line
        with h5py.File(tmp, "w") as h5:
            create_cube_file(h5, len(todo), layout, lines, drpver=drpver, config=config, compression=compression, resizable=True)
            for r, cube, err in outcomes():
                if err is not None:
                    rejects.append(_reject_row(r.plateifu, r.path, err))
                else:
                    _check_room(tmp, cube, out)
                    write_cube_row(h5, n_ok, cube)
                    n_ok += 1
                bar.update()
            bar.close()
            for name in h5:
                h5[name].resize(n_ok, axis=0)
            csv = pd.DataFrame(rejects, columns=["plateifu", "path", "reason"]).to_csv(index=False)
            h5.attrs["rejects_sha256"] = hashlib.sha256(csv.encode()).hexdigest()
            h5.attrs["n_rejects"] = len(rejects)
        if n_total and len(rejects) / n_total > max_reject_fraction:
            reasons = "\n".join(f"  {r['plateifu'] or r['path']}: {r['reason']}" for r in rejects)
            fail(TooManyRejects(
                f"{label or out}: {len(rejects)} of {n_total} cubes rejected, above max_reject_fraction="
                f"{max_reject_fraction}:\n{reasons}"
            ))  # fmt: skip
        if n_ok == 0 and (out.exists() or not allow_empty):
            fail(
                NothingExtracted(
                    f"{out}: no cube could be extracted ({len(rejects)} rejected); "
                    + ("the file was not replaced" if out.exists() else "no file was written")
                )
            )
        tmp_rej.write_text(csv)
    dt = time.perf_counter() - t0
    return ExtractSummary(n_ok, len(rejects), dt, rejects)
