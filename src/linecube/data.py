"""Training data: galaxy-level split, seeded online augmentation, HDF5 streaming.

Cubes are (wavelength, y, x) float32 in the cube's flux units throughout; the
model layout (see :mod:`linecube.models`) is applied last, per batch.

Augmentation (paper: 3 copies per cube from a random combination of horizontal
flip, 90-degree rotation, Gaussian noise and translation by up to 5 spaxels):
every copy draws a non-empty random subset of the four operations from a
generator seeded by (seed, epoch, galaxy, copy), so an epoch's data are the same
whether or not training was interrupted before it. Mask and ivar move with the
flux; translation fills with zero flux, zero ivar and the OUTSIDE_CUBE flag.
Nothing is written to disk: copies are made as batches are drawn.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from .formats import VoxelFlag

# --------------------------------------------------------------------------
# Split
# --------------------------------------------------------------------------


def split_galaxies(plateifus: Sequence[str], test_fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Galaxy-level train/test split (row indices, sorted), before any augmentation.

    At least one galaxy goes to each side when there are two or more.
    """
    n = len(plateifus)
    rng = np.random.default_rng([seed, 20231])
    perm = rng.permutation(n)
    n_test = int(round(n * test_fraction))
    if n >= 2:
        n_test = min(max(n_test, 1), n - 1)
    return np.sort(perm[n_test:]), np.sort(perm[:n_test])


def split_table(plateifus: Sequence[str], train: np.ndarray, test: np.ndarray):
    """The split as a DataFrame (plateifu, split) sorted by plate-IFU."""
    import pandas as pd

    side = np.empty(len(plateifus), dtype=object)
    side[train] = "train"
    side[test] = "test"
    return pd.DataFrame({"plateifu": list(plateifus), "split": side}).sort_values("plateifu").reset_index(drop=True)


# --------------------------------------------------------------------------
# Augmentation (pure numpy)
# --------------------------------------------------------------------------

OPS = ("flip", "rotate", "noise", "shift")


@dataclass(frozen=True)
class AugmentConfig:
    copies: int = 3
    noise_sigma: float = 1.0  #: in units of each voxel's noise (1/sqrt(ivar)) if from_ivar, else flux units
    noise_from_ivar: bool = True
    max_shift: int = 5


def draw_ops(rng: np.random.Generator, max_shift: int) -> dict:
    """A non-empty random combination of the four operations with their parameters."""
    while True:
        chosen = rng.random(4) < 0.5
        if chosen.any():
            break
    out: dict = {}
    if chosen[0]:
        out["flip"] = True
    if chosen[1]:
        out["rotate"] = int(rng.integers(1, 4))
    if chosen[2]:
        out["noise"] = True
    if chosen[3] and max_shift > 0:
        while True:
            dy, dx = (int(v) for v in rng.integers(-max_shift, max_shift + 1, size=2))
            if dy or dx:
                break
        out["shift"] = (dy, dx)
    if not out:  # only "shift" was drawn with max_shift = 0
        out["flip"] = True
    return out


def shift_zero_fill(a: np.ndarray, dy: int, dx: int, fill) -> np.ndarray:
    """Translate the last two axes (y, x) by (dy, dx) spaxels; vacated pixels = fill."""
    out = np.full_like(a, fill)
    h, w = a.shape[-2:]
    ys, yd = (slice(0, h - dy), slice(dy, h)) if dy >= 0 else (slice(-dy, h), slice(0, h + dy))
    xs, xd = (slice(0, w - dx), slice(dx, w)) if dx >= 0 else (slice(-dx, w), slice(0, w + dx))
    out[..., yd, xd] = a[..., ys, xs]
    return out


def apply_ops(flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray, ops: dict, rng: np.random.Generator, cfg: AugmentConfig):
    """Apply drawn operations to one cube (wavelength, y, x); returns new arrays."""
    f, iv, m = flux, ivar, mask
    if ops.get("flip"):
        f, iv, m = f[..., ::-1], iv[..., ::-1], m[..., ::-1]
    if ops.get("rotate"):
        k = ops["rotate"]
        f, iv, m = (np.rot90(a, k, axes=(-2, -1)) for a in (f, iv, m))
    f, iv, m = (np.ascontiguousarray(a) for a in (f, iv, m))
    if ops.get("noise"):
        if cfg.noise_from_ivar:
            sigma = np.where(iv > 0, 1.0 / np.sqrt(np.maximum(iv, 1e-30)), 0.0).astype(np.float32) * np.float32(cfg.noise_sigma)
        else:
            sigma = np.float32(cfg.noise_sigma) * (m == 0)
        f = f + rng.standard_normal(f.shape, dtype=np.float32) * sigma
        # the copy now holds twice the variance where noise was added
        iv = (
            np.where(iv > 0, iv / (1.0 + np.float32(cfg.noise_sigma) ** 2), 0.0).astype(np.float32) if cfg.noise_from_ivar else iv
        )
    if "shift" in ops:
        dy, dx = ops["shift"]
        f = shift_zero_fill(f, dy, dx, 0.0)
        iv = shift_zero_fill(iv, dy, dx, 0.0)
        m = shift_zero_fill(m, dy, dx, np.uint8(VoxelFlag.OUTSIDE_CUBE))
    return f.astype(np.float32, copy=False), iv.astype(np.float32, copy=False), m


def augment(flux, ivar, mask, seed: int, epoch: int, index: int, copy: int, cfg: AugmentConfig):
    """Copy ``copy`` (1-based) of galaxy ``index`` in ``epoch``: deterministic in all four."""
    rng = np.random.default_rng([seed, epoch, index, copy])
    ops = draw_ops(rng, cfg.max_shift)
    return apply_ops(flux, ivar, mask, ops, rng, cfg), ops


# --------------------------------------------------------------------------
# Streaming from cubes.h5
# --------------------------------------------------------------------------


class CubeSource:
    """Yields (flux, ivar, mask) samples of chosen galaxies from cubes.h5, one
    HDF5 chunk at a time: originals plus ``copies`` augmented copies each, in an
    order shuffled per epoch. Set ``epoch`` before iterating (the training loop's
    callback does); ``augment_epochs=False`` freezes the copies (test set)."""

    def __init__(
        self,
        path: str | os.PathLike,
        indices: Sequence[int],
        seed: int,
        aug: AugmentConfig,
        *,
        shuffle: bool = True,
        augment_epochs: bool = True,
    ):
        self.path = str(path)
        self.indices = np.asarray(indices, dtype=int)
        self.seed = int(seed)
        self.aug = aug
        self.shuffle = shuffle
        self.augment_epochs = augment_epochs
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.indices) * (1 + self.aug.copies)

    def order(self, epoch: int) -> np.ndarray:
        """(galaxy row, copy) pairs of one epoch; copy 0 is the original."""
        pairs = np.array([(i, c) for i in self.indices for c in range(1 + self.aug.copies)], dtype=int).reshape(-1, 2)
        if self.shuffle:
            pairs = pairs[np.random.default_rng([self.seed, epoch, 7]).permutation(len(pairs))]
        return pairs

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray, np.ndarray]]:
        import h5py

        epoch = self.epoch if self.augment_epochs else 0
        with h5py.File(self.path, "r") as h5:
            fl, iv, mk = h5["flux"], h5["ivar"], h5["mask"]
            for row, copy in self.order(epoch):
                f, i, m = fl[row], iv[row], mk[row]
                if copy:
                    (f, i, m), _ = augment(f, i, m, self.seed, epoch, int(row), int(copy), self.aug)
                yield f, i, m


def read_rows(path: str | os.PathLike, rows: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flux, ivar, mask) of the given rows (sorted reads), for small sets only."""
    import h5py

    rows = np.asarray(rows, dtype=int)
    order = np.argsort(rows)
    with h5py.File(path, "r") as h5:
        out = [np.stack([h5[name][r] for r in rows[order]]) for name in ("flux", "ivar", "mask")]
    inv = np.empty_like(order)
    inv[order] = np.arange(len(order))
    return tuple(a[inv] for a in out)
