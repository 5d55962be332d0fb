"""The model card: what a trained model is, written next to it (``model_card.json``).

A model handed to a colleague carries the sample it was trained on (count, the
plate-IFUs' SHA-256, the drpall's SHA-256 where the run recorded its path, the
selection and extraction settings), the configuration, the code version, the Keras
backend, the flux scaling and its training and test losses. ``linecube score``
refuses a model whose card does not match the run it is asked to score against
(:func:`check_card`).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
import time
from pathlib import Path

CARD_NAME = "model_card.json"


def plateifus_sha256(plateifus) -> str:
    """SHA-256 of the sorted plate-IFUs, one per line: the identity of a sample."""
    return hashlib.sha256("\n".join(sorted(str(p) for p in plateifus)).encode()).hexdigest()


def file_sha256(path) -> str | None:
    """SHA-256 of a file, or None when it cannot be read."""
    try:
        h = hashlib.sha256()
        with open(path, "rb") as fh:
            for block in iter(lambda: fh.read(1 << 20), b""):
                h.update(block)
        return h.hexdigest()
    except OSError:
        return None


def code_version() -> dict:
    """linecube's version and, in a git checkout, the commit (with ``+dirty`` for local changes)."""
    from importlib.metadata import PackageNotFoundError, version

    try:
        v = version("linecube")
    except PackageNotFoundError:
        v = None
    out = {"linecube": v, "commit": None}
    root = Path(__file__).resolve().parents[2]
    if (root / ".git").exists():
        try:
            sha = subprocess.run(
                ["git", "rev-parse", "HEAD"], cwd=root, capture_output=True, text=True, timeout=10
            ).stdout.strip()
            dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=root, capture_output=True,
                                   text=True, timeout=10).stdout.strip()  # fmt: skip
            out["commit"] = (sha + ("+dirty" if dirty else "")) or None
        except (OSError, subprocess.SubprocessError):
            pass
    return out


def build_card(cubes_h5, kind: str, model_cfg: dict, train_cfg: dict, summary: dict, split_csv) -> dict:
    """The card of a model trained on ``cubes_h5`` (``summary``: what :func:`linecube.model.train.train` returned)."""
    import h5py
    import pandas as pd

    from linecube.config import with_defaults
    from linecube.io.formats import read_layout, read_strings

    with h5py.File(cubes_h5, "r") as h5:
        ids = read_strings(h5["plateifu"])
        layout, lines = read_layout(h5)
        cfg = json.loads(h5.attrs.get("config", "{}") or "{}")
        unit = str(h5.attrs.get("flux_unit", ""))
    split = pd.read_csv(split_csv, dtype={"plateifu": str}) if split_csv and Path(split_csv).exists() else None
    data = cfg.get("data") or {}
    drpall = data.get("drpall") or (
        f"{data['redux_dir']}/{data['drpver']}/drpall-{data['drpver']}.fits"
        if data.get("redux_dir") and data.get("drpver")
        else None
    )
    model_cfg = with_defaults("model", model_cfg)
    return {
        "kind": kind,
        "code": code_version(),
        "backend": summary.get("backend"),
        "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "sample": {
            "n_galaxies": len(ids),
            "n_train": int((split["split"] == "train").sum()) if split is not None else None,
            "n_test": int((split["split"] == "test").sum()) if split is not None else None,
            "plateifu_sha256": plateifus_sha256(ids),
            "drpall": drpall,
            "drpall_sha256": file_sha256(drpall) if drpall else None,
            "selection": cfg.get("sample"),
        },
        "extraction": {
            **(cfg.get("extract") or {}),
            "window_bins": layout.window_bins,
            "crop": layout.crop,
            "line_names": list(lines.names),
            "line_rest_wavelengths": [float(r) for r in lines.rest],
            "flux_unit": unit,
        },
        "flux_scaling": model_cfg["flux_scaling"],
        "model": model_cfg,
        "train": with_defaults("train", train_cfg),
        "training": {k: summary.get(k) for k in ("epochs", "steps", "final_loss", "final_test_loss", "parameters")},
    }


def write_card(path, card: dict) -> None:
    from linecube.io.atomic import write_json_atomic

    write_json_atomic(card, path)


def read_card(path) -> dict:
    with open(path) as fh:
        return json.load(fh)


def check_card(card: dict, cubes_h5, model_cfg: dict | None = None) -> list[str]:
    """Why a model (its card) cannot be applied against the run's ``cubes_h5``:
    another sample, another line list or grid, another flux scaling. Empty: it can."""
    import h5py

    from linecube.io.formats import read_layout, read_strings

    why = []
    with h5py.File(cubes_h5, "r") as h5:
        ids = read_strings(h5["plateifu"])
        layout, lines = read_layout(h5)
    if card.get("sample", {}).get("plateifu_sha256") != plateifus_sha256(ids):
        why.append(
            f"the model was trained on another sample ({card.get('sample', {}).get('n_galaxies')} galaxies) than {cubes_h5} holds ({len(ids)})"
        )
    ex = card.get("extraction", {})
    if ex.get("line_names") != list(lines.names) or ex.get("window_bins") != layout.window_bins or ex.get("crop") != layout.crop:
        why.append("the model's line list, window or crop differ from the run's cubes.h5")
    if model_cfg is not None and card.get("flux_scaling") != model_cfg.get("flux_scaling", card.get("flux_scaling")):
        why.append(f"flux scaling {model_cfg.get('flux_scaling')!r} differs from the model's {card.get('flux_scaling')!r}")
    return why


__all__ = ["CARD_NAME", "build_card", "check_card", "read_card", "write_card"]
