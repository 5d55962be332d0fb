"""Sample selection from the MaNGA drpall catalogue.

Rules (DR17 practice): galaxy targets only (mngtarg1 > 0 or mngtarg3 > 0), no
CRITICAL bit (30) in drp3qual, z > 0, and one plate-IFU per mangaid (largest
ifudesignsize, then most exposures, then the plate-IFU itself for a stable
tie-break). Optionally an explicit plate-IFU list and a maximum count.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pandas as pd

from linecube.io.drpall import read_drpall
from linecube.io.manga import DRP3QUAL_CRITICAL, logcube_path, parse_plateifu

SAMPLE_COLUMNS = ("plateifu", "plate", "ifudsgn", "mangaid", "z", "objra", "objdec", "ifudesignsize", "path")


def apply_cuts(
    drpall: pd.DataFrame,
    *,
    plateifus: Sequence[str] | None = None,
    max_galaxies: int | None = None,
) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Apply the selection; return (selected, dropped) with a ``reason`` column on
    the dropped rows. Selected rows are sorted by plate-IFU."""
    df = drpall.copy()
    df["plateifu"] = df["plateifu"].astype(str).str.strip()
    reasons = pd.Series("", index=df.index, dtype=object)

    def drop(mask: pd.Series, why: str) -> None:
        m = mask & (reasons == "")
        reasons[m] = why

    valid = df["plateifu"].map(_valid_plateifu)
    drop(~valid, "malformed plate-IFU (expected PLATE-IFUDESIGN)")
    dup = df["plateifu"].duplicated(keep="first")
    drop(dup, "duplicate plate-IFU row in the drpall")
    if plateifus:
        wanted = {str(p).strip() for p in plateifus}
        bad = sorted(p for p in wanted if not _valid_plateifu(p))
        if bad:
            raise ValueError(f"malformed plate-IFU(s) in the configured list: {', '.join(bad)}")
        missing = sorted(wanted - set(df["plateifu"]))
        if missing:
            raise ValueError(f"configured plate-IFU(s) not in the drpall: {', '.join(missing)}")
        drop(~df["plateifu"].isin(wanted), "not in the configured plate-IFU list")
    drop(~((df["mngtarg1"] > 0) | (df["mngtarg3"] > 0)), "not a galaxy target (mngtarg1 = mngtarg3 = 0)")
    drop((df["drp3qual"].astype(np.int64) & DRP3QUAL_CRITICAL) != 0, "drp3qual has the CRITICAL bit (30) set")
    z = pd.to_numeric(df["z"], errors="coerce")
    drop(~(z > 0), "no redshift (z <= 0 or missing in the drpall)")
    # one plate-IFU per mangaid: biggest bundle, then most exposures
    keep = df[reasons == ""].sort_values(["mangaid", "ifudesignsize", "nexp", "plateifu"], ascending=[True, False, False, True])
    repeat = keep["mangaid"].duplicated(keep="first")
    reasons[keep.index[repeat.to_numpy()]] = "repeat observation of a mangaid (a larger or deeper IFU is kept)"
    sel = df[reasons == ""].sort_values("plateifu")
    if max_galaxies is not None and len(sel) > max_galaxies:
        over = sel.index[max_galaxies:]
        reasons[over] = f"beyond max_galaxies={max_galaxies}"
        sel = sel.iloc[:max_galaxies]
    dropped = df[reasons != ""].assign(reason=reasons[reasons != ""])
    return sel.reset_index(drop=True), dropped.reset_index(drop=True)


def _valid_plateifu(p: str) -> bool:
    try:
        parse_plateifu(p)
        return True
    except ValueError:
        return False


def attach_paths(sel: pd.DataFrame, redux_dir: str | os.PathLike, drpver: str) -> pd.DataFrame:
    """Add the SAS path of every selected LOGCUBE."""
    paths = [str(logcube_path(redux_dir, drpver, *parse_plateifu(p))) for p in sel["plateifu"]]
    out = sel.copy()
    out["path"] = paths
    out["plate"] = [parse_plateifu(p)[0] for p in sel["plateifu"]]
    out["ifudsgn"] = [parse_plateifu(p)[1] for p in sel["plateifu"]]
    return out


def build_sample(
    drpall_path: str | os.PathLike,
    redux_dir: str | os.PathLike,
    drpver: str,
    *,
    plateifus: Sequence[str] | None = None,
    max_galaxies: int | None = None,
    require_files: bool = True,
) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """drpall -> (sample with SAS paths, rejects with plateifu/path/reason, rows
    the selection dropped with their reason).

    With ``require_files``, a selected plate-IFU whose LOGCUBE is missing moves
    to the rejects ("no LOGCUBE file"); without, missing files are kept (for a
    download step to fetch).
    """
    table = read_drpall(drpall_path)
    sel, dropped = apply_cuts(table, plateifus=plateifus, max_galaxies=max_galaxies)
    sel = attach_paths(sel, redux_dir, drpver)
    rejects = []
    if require_files:
        exists = np.array([Path(p).exists() for p in sel["path"]], dtype=bool)
        for _, row in sel[~exists].iterrows():
            rejects.append(
                {
                    "plateifu": row["plateifu"],
                    "path": row["path"],
                    "reason": "selected in the drpall but no LOGCUBE file at this path",
                }
            )
        sel = sel[exists].reset_index(drop=True)
    sample = sel[list(SAMPLE_COLUMNS)].copy()
    sample["ebvgal"] = sel["ebvgal"].to_numpy(dtype=float) if "ebvgal" in sel else np.nan
    rej = pd.DataFrame(rejects, columns=["plateifu", "path", "reason"])
    return sample, rej, dropped
