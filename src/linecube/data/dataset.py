"""Training data: galaxy-level split, seeded online augmentation, HDF5 streaming.

Cubes are (wavelength, y, x) float32 in the cube's flux units throughout; the
model layout (see :mod:`linecube.model.spec`) is applied last, per batch.

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

from linecube.io.formats import VoxelFlag, clean_masked, sigma_from_ivar

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
    """Augmentation keys of the ``train:`` config (:meth:`from_config` fills them
    from the schema; no defaults here)."""

    copies: int
    noise_sigma: float  #: in units of each voxel's noise (1/sqrt(ivar)) if from_ivar, else flux units
    noise_from_ivar: bool
    max_shift: int
    noise_correlated: bool  #: spatially correlated as MaNGA cube noise is (linecube.physics.noise)

    @classmethod
    def from_config(cls, train: dict | None = None) -> AugmentConfig:
        """From a ``train:`` section, partial or whole (the schema fills the rest)."""
        from linecube.config import with_defaults

        t = with_defaults("train", train)
        return cls(int(t["augment_copies"]), float(t["noise_sigma"]), bool(t["noise_from_ivar"]), int(t["max_shift"]),
                   bool(t["noise_correlated"]))  # fmt: skip


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


class NoiseBank:
    """A few cubes of standard-normal deviates drawn once from a seed, spatially
    correlated as MaNGA cube noise is (:func:`linecube.physics.noise.correlated_normal`);
    a draw is one of them circularly shifted by a random offset (a shift of the
    flattened cube moves it along x and y, so the spatial correlation is kept).
    ~10x cheaper than fresh deviates per copy, which keeps the input pipeline off
    the training step's critical path; every draw is still N(0, 1) in every voxel."""

    def __init__(self, seed: int, shape: tuple[int, ...], n: int = 8, correlated: bool = True):
        from linecube.physics.noise import correlated_normal

        rng = np.random.default_rng([seed, 4242])
        if correlated:
            self.bank = correlated_normal(rng, (n, *shape)).reshape(n, -1)
        else:
            self.bank = rng.standard_normal((n, int(np.prod(shape))), dtype=np.float32)

    def draw(self, rng: np.random.Generator, shape: tuple[int, ...]) -> np.ndarray:
        k = int(rng.integers(len(self.bank)))
        off = int(rng.integers(self.bank.shape[1]))
        row = self.bank[k]
        return np.concatenate((row[off:], row[:off])).reshape(shape)


def apply_ops(
    flux: np.ndarray,
    ivar: np.ndarray | None,
    mask: np.ndarray | None,
    ops: dict,
    rng: np.random.Generator,
    cfg: AugmentConfig,
    noise_bank: NoiseBank | None = None,
    want_ivar: bool = True,
    contiguous: bool = True,
):
    """Apply drawn operations to one cube (wavelength, y, x); returns new arrays
    (with ``contiguous`` False, a flip or rotation alone returns a view).

    ``ivar`` or ``mask`` may be None when the caller does not need them back
    (ivar is required for noise scaled by ivar, mask for noise in flux units).
    Noise deviates come from ``noise_bank`` when given, else fresh from ``rng``.
    ``want_ivar`` False: the returned ivar is None (not lowered for the noise).
    ``contiguous`` False: for a caller that copies anyway.
    """
    f, iv, m = flux, ivar, mask

    def each(fn, *arrays):
        return tuple(None if a is None else fn(a) for a in arrays)

    if ops.get("flip"):
        f, iv, m = each(lambda a: a[..., ::-1], f, iv, m)
    if ops.get("rotate"):
        k = ops["rotate"]
        f, iv, m = each(lambda a: np.rot90(a, k, axes=(-2, -1)), f, iv, m)
    if ops.get("noise"):
        if cfg.noise_from_ivar:
            if iv is None:
                raise ValueError("noise scaled by ivar needs ivar")
            sigma = sigma_from_ivar(iv)
            sigma *= np.float32(cfg.noise_sigma)
        else:
            if m is None:
                raise ValueError("noise in flux units needs the mask")
            sigma = np.float32(cfg.noise_sigma) * (m == 0)
        if noise_bank is not None:
            z = noise_bank.draw(rng, f.shape)
        else:
            from linecube.physics.noise import correlated_normal

            z = correlated_normal(rng, f.shape) if cfg.noise_correlated else rng.standard_normal(f.shape, dtype=np.float32)
        z *= sigma
        z += f
        f = z
        if not want_ivar:
            iv = None
        elif cfg.noise_from_ivar:  # the copy now holds (1 + noise_sigma^2) times the variance
            iv = np.where(iv > 0, iv / (1.0 + np.float32(cfg.noise_sigma) ** 2), 0.0).astype(np.float32)
    if "shift" in ops:
        dy, dx = ops["shift"]
        f = shift_zero_fill(f, dy, dx, 0.0)
        iv = None if iv is None else shift_zero_fill(iv, dy, dx, 0.0)
        m = None if m is None else shift_zero_fill(m, dy, dx, np.uint8(VoxelFlag.OUTSIDE_CUBE))
    # flips and rotations are views until noise or a shift copies: one copy at most
    if contiguous:
        f, iv, m = each(np.ascontiguousarray, f, iv, m)
    return f.astype(np.float32, copy=False), (None if iv is None else iv.astype(np.float32, copy=False)), m


def augment(flux, ivar, mask, seed: int, epoch: int, index: int, copy: int, cfg: AugmentConfig):
    """Copy ``copy`` (1-based) of galaxy ``index`` in ``epoch``: deterministic in all four."""
    rng = np.random.default_rng([seed, epoch, index, copy])
    ops = draw_ops(rng, cfg.max_shift)
    return apply_ops(flux, ivar, mask, ops, rng, cfg), ops


def copy_ops(seed: int, epoch: int, index: int, copy: int, cfg: AugmentConfig) -> tuple[dict, np.random.Generator]:
    """The operations of one copy and the generator positioned for its noise
    (what :func:`augment` uses), so a reader can skip arrays it will not need."""
    rng = np.random.default_rng([seed, epoch, index, copy])
    return draw_ops(rng, cfg.max_shift), rng


# --------------------------------------------------------------------------
# Streaming from cubes.h5
# --------------------------------------------------------------------------


class CubeSource:
    """Samples (flux, ivar, mask) of chosen galaxies from cubes.h5, one HDF5 chunk
    at a time: originals plus ``copies`` augmented copies each, in an order
    shuffled per epoch. Set ``epoch`` before drawing batches (the training loop's
    callback does); ``augment_epochs=False`` freezes the copies (test set).

    ``pairs``: batches hold two views of each of their galaxies in adjacent rows
    (2i and 2i + 1; a batch split over devices keeps its pairs): a galaxy's 1 + copies samples are paired in turn (original with copy
    1, copy 2 with copy 3, ...; an odd one out pairs with the original)."""

    def __init__(
        self,
        path: str | os.PathLike,
        indices: Sequence[int],
        seed: int,
        aug: AugmentConfig,
        *,
        shuffle: bool = True,
        augment_epochs: bool = True,
        need_mask: bool = False,
        need_ivar: bool = False,
        pairs: bool = False,
    ):
        self.path = str(path)
        self.indices = np.asarray(indices, dtype=int)
        self.seed = int(seed)
        self.aug = aug
        self.shuffle = shuffle
        self.augment_epochs = augment_epochs
        self.need_mask = need_mask
        self.need_ivar = need_ivar
        self.pairs = bool(pairs)
        self.epoch = 0
        self._bank: NoiseBank | None = None
        self._order: tuple[int, np.ndarray] | None = None
        self._h5 = None
        self._dsets: dict = {}
        self._last: tuple[int, dict] | None = None  # the last row read: pairs read each row twice in a row

    def clone(self) -> CubeSource:
        """The same source with its own HDF5 handle and caches (one per feeding
        thread): every sample is a pure function of (row, copy, epoch), so a clone
        draws exactly what this one would."""
        c = CubeSource(
            self.path, self.indices, self.seed, self.aug, shuffle=self.shuffle, augment_epochs=self.augment_epochs,
            need_mask=self.need_mask, need_ivar=self.need_ivar, pairs=self.pairs,
        )  # fmt: skip
        c.epoch = self.epoch
        return c

    def _units_per_galaxy(self) -> int:
        n = 1 + self.aug.copies
        return -(-n // 2) if self.pairs else n

    def __len__(self) -> int:
        """Samples per epoch (a pair counts two)."""
        return len(self.indices) * self._units_per_galaxy() * (2 if self.pairs else 1)

    def n_batches(self, batch_size: int) -> int:
        """Batches of one epoch (``batch_size`` samples; a pair counts two)."""
        per = max(1, batch_size // 2) if self.pairs else batch_size
        return -(-len(self.indices) * self._units_per_galaxy() // per)

    def order(self, epoch: int) -> np.ndarray:
        """One epoch's units: (galaxy row, copy) pairs, or with ``pairs`` (galaxy
        row, copy a, copy b) triples; copy 0 is the original."""
        if self._order is not None and self._order[0] == epoch:
            return self._order[1]
        n = 1 + self.aug.copies
        if self.pairs:
            cp = [(c, c + 1 if c + 1 < n else 0) for c in range(0, n, 2)]
            units = np.array([(i, a, b) for i in self.indices for a, b in cp], dtype=int).reshape(-1, 3)
        else:
            units = np.array([(i, c) for i in self.indices for c in range(n)], dtype=int).reshape(-1, 2)
        if self.shuffle:
            units = units[np.random.default_rng([self.seed, epoch, 7]).permutation(len(units))]
        self._order = (epoch, units)
        return units

    def batch_samples(self, epoch: int, b: int, batch_size: int) -> list[tuple[int, int]]:
        """The (galaxy row, copy) samples of batch ``b`` of ``epoch``, in batch order."""
        units = self.order(epoch)
        if self.pairs:
            half = max(1, batch_size // 2)
            u = units[b * half : (b + 1) * half]
            return [(int(r), int(c)) for r, a, bb in u for c in (a, bb)]
        return [(int(r), int(c)) for r, c in units[b * batch_size : (b + 1) * batch_size]]

    def current_epoch(self) -> int:
        return self.epoch if self.augment_epochs else 0

    def _file(self):
        if self._h5 is None:
            import h5py

            self._h5 = h5py.File(self.path, "r")
        return self._h5

    def close(self) -> None:
        if self._h5 is not None:
            self._h5.close()
            self._h5 = None
        self._dsets = {}
        self._last = None

    def _read(self, row: int, name: str) -> np.ndarray:
        """One row of dataset ``name`` (flux, ivar or mask), kept until another
        row is read (read-only: augmentation returns new arrays)."""
        if self._last is None or self._last[0] != row:
            self._last = (row, {})
        got = self._last[1]
        if name not in got:
            if name not in self._dsets:
                self._dsets[name] = self._file()[name]  # a group lookup costs ~0.3 ms
            a = self._dsets[name][row]
            if name in ("flux", "ivar"):  # whatever a file holds there, a flagged voxel is 0
                a[self._read(row, "mask") != 0] = 0.0
            a.flags.writeable = False
            got[name] = a
        return got[name]

    def sample(
        self, row: int, copy: int, epoch: int, contiguous: bool = True
    ) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """(flux, ivar, mask) of one sample; ivar and mask are read only when
        needed (``need_ivar``, ``need_mask``, or noise scaled by ivar) and are None
        otherwise. An augmented copy's ivar is the copy's own (moved with the flux,
        lowered by the noise it was given). ``contiguous`` False: flipped or rotated
        arrays may be strided views (read-only originals stay shared)."""
        f = self._read(row, "flux")
        if not copy:
            return f, (self._read(row, "ivar") if self.need_ivar else None), (self._read(row, "mask") if self.need_mask else None)
        ops, rng = copy_ops(self.seed, epoch, row, int(copy), self.aug)
        need_ivar = self.need_ivar or ("noise" in ops and self.aug.noise_from_ivar)
        need_mask = self.need_mask or ("noise" in ops and not self.aug.noise_from_ivar)
        if self._bank is None:
            self._bank = NoiseBank(self.seed, f.shape, correlated=self.aug.noise_correlated)
        iv = self._read(row, "ivar") if need_ivar else None
        mk = self._read(row, "mask") if need_mask else None
        f, i, m = apply_ops(f, iv, mk, ops, rng, self.aug, self._bank, want_ivar=self.need_ivar, contiguous=contiguous)
        return f, i, (m if self.need_mask else None)

    def __iter__(self) -> Iterator[tuple[np.ndarray, np.ndarray | None, np.ndarray | None]]:
        """Every sample of the current epoch, in batch order (any batch size of
        pairs gives the same order as batches of 2)."""
        epoch = self.current_epoch()
        for b in range(self.n_batches(2)):
            for row, copy in self.batch_samples(epoch, b, 2):
                yield self.sample(row, copy, epoch)


def read_rows(path: str | os.PathLike, rows: Sequence[int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(flux, ivar, mask) of the given rows (sorted reads), for small sets only."""
    import h5py

    rows = np.asarray(rows, dtype=int)
    order = np.argsort(rows)
    with h5py.File(path, "r") as h5:
        out = [np.stack([h5[name][r] for r in rows[order]]) for name in ("flux", "ivar", "mask")]
    clean_masked(*out)
    inv = np.empty_like(order)
    inv[order] = np.arange(len(order))
    return tuple(a[inv] for a in out)


def median_cubes(cubes_h5: str | os.PathLike, rows, scaler, max_n: int = 200, seed: int = 0):
    """Per-voxel median cube over (at most ``max_n``, seeded) of ``rows``: in flux
    units and in the model's units (each cube scaled by ``scaler``, a
    :class:`linecube.data.fluxscale.FluxScaler`); (wavelength, y, x) float32 each."""
    rows = np.asarray(rows, dtype=int)
    if len(rows) > max_n:
        rows = np.sort(np.random.default_rng([seed, 11]).choice(rows, max_n, replace=False))
    flux, _iv, mask = read_rows(cubes_h5, rows)
    sc = scaler.galaxy_scale(flux, mask)
    return np.median(flux, axis=0).astype(np.float32), np.median(scaler.forward(flux, sc), axis=0).astype(np.float32)
