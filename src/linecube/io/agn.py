"""AGN catalogue cross-match.

A catalogue is a CSV or FITS table keyed by ``plateifu`` or ``mangaid`` with
boolean selection columns. The standard four (the DR17 MaNGA AGN catalogue and
Comerford et al. 2020 select by these) are ``wise_agn`` (mid-IR), ``bat_agn``
(hard X-ray), ``radio_agn`` and ``broad_agn`` (broad lines); any other boolean
column is kept too. Galaxies not in the catalogue are non-AGN.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pandas as pd

METHODS = ("wise_agn", "bat_agn", "radio_agn", "broad_agn")
TRUE = ["true", "1", "t", "yes", "y"]
FALSE = ["false", "0", "f", "no", "n", ""]
METHOD_LABELS = {"wise_agn": "mid-IR (WISE)", "bat_agn": "hard X-ray (BAT)", "radio_agn": "radio", "broad_agn": "broad lines"}


def read_catalog(path: str | os.PathLike) -> pd.DataFrame:
    """Read a CSV or FITS AGN catalogue; column names lower-cased, booleans parsed."""
    path = Path(path)
    if not path.exists():
        raise FileNotFoundError(f"AGN catalogue {path} does not exist")
    if path.suffix.lower() in (".fits", ".fit") or path.name.lower().endswith(".fits.gz"):
        from astropy.table import Table

        t = Table.read(path)
        names = [n for n in t.colnames if len(t[n].shape) <= 1]
        df = t[names].to_pandas()
    else:
        df = pd.read_csv(path, dtype={"plateifu": str, "mangaid": str}, keep_default_na=False)
    df.columns = [c.lower().strip() for c in df.columns]
    if "plateifu" not in df and "mangaid" not in df:
        raise ValueError(f"{path}: an AGN catalogue needs a 'plateifu' or 'mangaid' column")
    for key in ("plateifu", "mangaid"):
        if key in df:
            df[key] = df[key].astype(str).str.strip()
    for c in df.columns:
        if c in ("plateifu", "mangaid"):
            continue
        if df[c].dtype == bool:
            continue
        vals = df[c].astype(str).str.strip().str.lower()
        ok = vals.isin(TRUE + FALSE)
        if ok.all():
            df[c] = vals.isin(TRUE)
        elif c in METHODS:  # a selection flag must be a boolean: never drop it silently
            bad = np.nonzero(~ok.to_numpy())[0]
            rows = ", ".join(f"row {i + 2} ({df[c].iloc[i]!r})" for i in bad[:5]) + (" ..." if len(bad) > 5 else "")
            raise ValueError(f"{path}: column {c} must be true/false (or 1/0), but has {rows}")
    if not any(df[c].dtype == bool for c in df.columns if c not in ("plateifu", "mangaid")):
        raise ValueError(f"{path}: no boolean selection columns (expected e.g. {', '.join(METHODS)})")
    return df


def match_agn(path: str | os.PathLike, plateifus, mangaids) -> pd.DataFrame:
    """Boolean AGN columns for the given galaxies (rows in the same order):
    one per selection method in the catalogue, plus ``agn`` (any method).

    Matches on plateifu where the catalogue has it, else on mangaid.
    """
    cat = read_catalog(path)
    flags = [c for c in cat.columns if c not in ("plateifu", "mangaid") and cat[c].dtype == bool]
    key = "plateifu" if "plateifu" in cat else "mangaid"
    ids = list(plateifus) if key == "plateifu" else list(mangaids)
    table = cat.groupby(key)[flags].any()
    out = pd.DataFrame(False, index=range(len(ids)), columns=flags)
    hit = np.array([i in table.index for i in ids])
    if hit.any():
        out.loc[hit, flags] = table.loc[[i for i, h in zip(ids, hit) if h], flags].to_numpy()
    out["agn"] = out[flags].any(axis=1)
    return out
