"""Merge per-plate extraction files into ``results/cubes.h5``.

Rows are sorted by plate-IFU across all plates. Cubes are copied one at a time
(one HDF5 chunk each), so memory stays flat whatever the survey size.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from linecube.io.atomic import atomic_path
from linecube.io.formats import CUBE_DATASETS, META_DATASETS, META_FALLBACK, create_cube_file, read_layout, read_strings


def assemble(
    plate_files: Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    drpver: str,
    config: dict | None = None,
    compression: str | None = "lzf",
    progress: bool = True,
) -> int:
    """Stream every plate file into one cubes.h5 at ``out`` (atomically).

    All inputs must share one layout and line list; the same plate-IFU in two
    files is an error naming both. Returns the number of galaxies.
    """
    import h5py
    from tqdm.auto import tqdm

    entries: list[tuple[str, int, int]] = []  # (plateifu, file index, row)
    layout = lines = None
    for fi, p in enumerate(plate_files):
        with h5py.File(p, "r") as h5:
            lay, lin = read_layout(h5)
            if layout is None:
                layout, lines = lay, lin
            elif (lay, lin.names) != (layout, lines.names) or not np.allclose(lin.rest, lines.rest):
                raise ValueError(f"{p}: layout or line list differs from {plate_files[0]}; re-extract with one config")
            for row, pifu in enumerate(read_strings(h5["plateifu"])):
                entries.append((pifu, fi, row))
    if layout is None:
        raise ValueError("no plate files to assemble")
    seen: dict[str, int] = {}
    for pifu, fi, _ in entries:
        if pifu in seen:
            raise ValueError(f"plate-IFU {pifu} appears in both {plate_files[seen[pifu]]} and {plate_files[fi]}")
        seen[pifu] = fi
    entries.sort()
    n = len(entries)
    # rows of one plate file are contiguous in plate-IFU order: open one file at a
    # time (a survey has ~600 plate files; each open file holds an HDF5 cache)
    with atomic_path(out) as tmp:
        with h5py.File(tmp, "w") as dst:
            create_cube_file(dst, n, layout, lines, drpver=drpver, config=config, compression=compression)
            cur, src = None, None
            try:
                for i, (_, fi, row) in enumerate(
                    tqdm(entries, desc="assemble cubes", unit="cube", disable=not progress, file=sys.stderr)
                ):
                    if fi != cur:
                        if src is not None:
                            src.close()
                        src, cur = h5py.File(plate_files[fi], "r"), fi
                    for name in (*CUBE_DATASETS, "wave"):
                        dst[name][i] = src[name][row]
                    for name in META_DATASETS:  # a plate file from before a dataset existed: its fallback
                        dst[name][i] = src[name][row] if name in src else META_FALLBACK[name]
            finally:
                if src is not None:
                    src.close()
            dst.attrs["plate_files"] = json.dumps([str(Path(p)) for p in plate_files])
    return n


def check_reject_fraction(plate_files: Sequence[str | os.PathLike], reject_files: Sequence[str | os.PathLike],
                          max_fraction: float) -> tuple[int, int]:  # fmt: skip
    """Apply ``extract.max_reject_fraction`` to the whole survey (what the per-plate
    jobs extracted and everything rejected on the way), so the threshold means the
    same for one plate of two cubes and for the survey: raises
    :class:`linecube.data.extract_survey.TooManyRejects` listing the reasons. Returns (kept, rejected)."""
    import h5py
    import pandas as pd

    from linecube.data.extract_survey import TooManyRejects

    kept = 0
    for p in plate_files:
        with h5py.File(p, "r") as h5:
            kept += int(h5["flux"].shape[0])
    rows = [pd.read_csv(p, dtype=str, keep_default_na=False) for p in reject_files]
    rej = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["plateifu", "reason"])
    total = kept + len(rej)
    if total and len(rej) / total > max_fraction:
        reasons = "\n".join(f"  {r.plateifu or r.path}: {r.reason}" for r in rej.itertuples())
        raise TooManyRejects(
            f"{len(rej)} of {total} cubes of the survey rejected, above extract.max_reject_fraction={max_fraction}:\n{reasons}"
        )
    return kept, len(rej)


def merge_rejects(paths: Sequence[str | os.PathLike], out: str | os.PathLike) -> int:
    """Concatenate reject tables (plateifu, path, reason [, stage]) into one CSV."""
    import pandas as pd

    from linecube.io.atomic import write_csv_atomic

    frames = []
    for p in paths:
        df = pd.read_csv(p, dtype=str, keep_default_na=False)
        if len(df):
            stem = Path(p).name.split(".")[0]
            df["stage"] = f"extract plate {stem}" if stem.isdigit() else stem
            frames.append(df)
    cols = ["plateifu", "path", "reason", "stage"]
    merged = pd.concat(frames, ignore_index=True)[cols] if frames else pd.DataFrame(columns=cols)
    write_csv_atomic(merged.sort_values(["plateifu", "stage"], kind="stable"), out)
    return len(merged)
