"""The training feed: batches of a :class:`linecube.data.dataset.CubeSource` in the
model's layout and units (:func:`assemble_batch`, with Eq. 1's voxel weights:
:func:`ivar_weights`), served to ``model.fit`` by :class:`CubeBatches`, a
``keras.utils.PyDataset`` (the portable input pipeline of Keras 3) that assembles
each batch in numpy on background threads (one on CPU; with a GPU, the job's
threads but one: :func:`linecube.model.train.feed_workers`), a few batches ahead of
the training step, across epoch ends (one endless iterator for the run).

Import this module after :func:`linecube.model.backend.select` (it imports Keras).
"""

from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

import keras
import numpy as np

from linecube.data.dataset import CubeSource
from linecube.data.fluxscale import FluxScaler


def ivar_weights(flux: np.ndarray, ivar: np.ndarray, mask: np.ndarray, sys_floor: float) -> np.ndarray:
    """Eq. 1 voxel weights (same shape as ``flux``, float32) for ``loss_weighting:
    ivar``: 1 / sqrt(sigma^2 + (sys_floor |flux|)^2), sigma = ivar^-1/2, divided by
    their mean over the usable voxels (mask 0 and ivar > 0), 0 elsewhere. Any flux
    unit: the mean-1 normalisation keeps each galaxy's weight as in the unweighted
    loss, so the noise weighting acts within a galaxy (spender, Melchior et al. 2023,
    weights by inverse variance; the floor keeps bright voxels with tiny formal
    errors from dominating)."""
    from linecube.io.formats import sigma_from_ivar

    usable = (mask == 0) & (ivar > 0)
    sigma = sigma_from_ivar(ivar)
    w = np.where(usable, 1.0 / np.sqrt(np.maximum(sigma**2 + (np.float32(sys_floor) * flux) ** 2, 1e-30)), 0.0)
    mean = float(w[usable].mean(dtype=np.float64)) if usable.any() else 1.0
    return (w / max(mean, 1e-30)).astype(np.float32)


def assemble_batch(source: CubeSource, mcfg, scaler: FluxScaler, samples, epoch: int, with_weights: bool) -> dict:
    """One batch as the model reads it: ``{"x": cubes}`` (and ``"w"``, the voxel
    weights, when ``with_weights``) in the model layout and units, float32."""
    from linecube.model.spec import model_layout_view

    shape = mcfg.input_shape
    xs = np.empty((len(samples), *shape), np.float32)
    ws = np.empty((len(samples), *shape), np.float32) if with_weights else None
    for k, (row, copy) in enumerate(samples):
        f, iv, m = source.sample(int(row), int(copy), epoch, contiguous=False)
        s = scaler.galaxy_scale(f[None], m[None]) if scaler.per_galaxy else None
        xs[k] = model_layout_view(scaler.forward(f[None], s), mcfg)[0]  # one copy, into the batch
        if with_weights:
            w = ivar_weights(f, iv, m, mcfg.loss_sys_floor) if mcfg.loss_weighting == "ivar" else (m == 0).astype(np.float32)
            ws[k] = model_layout_view(w[None], mcfg)[0]
    return {"x": xs, "w": ws} if with_weights else {"x": xs}


class CubeBatches(keras.utils.PyDataset):
    """Batches of a :class:`CubeSource` for ``model.fit`` on any backend. Each
    batch is a pure function of (epoch, batch number), assembled by one of
    ``workers`` background threads up to ``ahead`` batches before it is asked
    for (the first thread reads ``source``, each other thread a clone with its
    own HDF5 handle: the batches do not depend on the thread count).

    ``repeat`` False: ``num_batches`` batches of the source's current epoch.
    ``repeat`` True: on across epochs; the ``index``-th batch asked for is the
    ``step0 + index``-th of the run (epoch ``(step0 + index) // n``, batch
    ``(step0 + index) % n`` of that epoch; ``step0``: the run's first step in
    this process, set by the training loop, else the source's epoch x n).
    Keras then keeps one iterator over all epochs, so the next epoch's first
    batches are assembled while this epoch's last ones train, and no epoch
    waits for a new iterator (TensorFlow's took 0.8-2.9 s at a third of
    the epoch starts: docs/benchmarks.md). Endless without ``steps``; with
    it, ``num_batches`` ends the run's batches one after its last step, so
    that TensorFlow's prefetching stops there: dropping an iterator whose
    prefetch still ran an endless generator took up to 34 s at the end of a
    run."""

    def __init__(self, source: CubeSource, mcfg, scaler: FluxScaler, batch_size: int, with_weights: bool,
                 repeat: bool = False, workers: int = 1, steps: int | None = None, ahead: int = 3):  # fmt: skip
        super().__init__(workers=1, use_multiprocessing=False)
        n_workers = max(1, int(workers))
        self._source, self._mcfg, self._scaler = source, mcfg, scaler
        self._batch_size, self._with_weights, self._repeat, self._steps = batch_size, with_weights, repeat, steps
        self.n = source.n_batches(batch_size)
        self.ahead = max(int(ahead), n_workers + 1)  # every thread busy, one batch in hand
        self._pool = ThreadPoolExecutor(max_workers=n_workers, thread_name_prefix="linecube-batches")
        self._pending: dict[tuple[int, int], object] = {}
        self._local = threading.local()
        self._sources: list[CubeSource] = []
        self._lock = threading.Lock()
        self.step0: int | None = None

    @property
    def num_batches(self):
        if not self._repeat:
            return self.n
        if self._steps is None:
            return None
        return max(1, int(self._steps) - int(self.step0 or 0) + 1)  # one spare batch: Keras never starts a new iterator

    def _assemble(self, samples, epoch: int) -> dict:
        src = getattr(self._local, "source", None)
        if src is None:
            with self._lock:
                src = self._source if not self._sources else self._source.clone()
                self._sources.append(src)
            self._local.source = src
        return assemble_batch(src, self._mcfg, self._scaler, samples, epoch, self._with_weights)

    def _submit(self, g: int):
        """The future of the run's ``g``-th batch (epoch ``g // n``, batch ``g % n``)."""
        if g not in self._pending:
            epoch, b = divmod(g, self.n)
            epoch = epoch if self._source.augment_epochs else 0
            samples = self._source.batch_samples(epoch, b, self._batch_size)
            self._pending[g] = self._pool.submit(self._assemble, samples, epoch)
        return self._pending[g]

    def position(self, index: int) -> int:
        """The run's batch number ``g`` of the ``index``-th batch asked for."""
        if self._repeat:
            base = self.step0 if self.step0 is not None else self._source.current_epoch() * self.n
            return int(base) + int(index)
        return self._source.current_epoch() * self.n + int(index) % self.n

    def __getitem__(self, index):
        g = self.position(index)
        last = g + self.ahead if self._repeat else (g // self.n + 1) * self.n - 1
        if self._repeat and self._steps is not None:
            last = min(last, int(self._steps))
        for k in list(self._pending):  # drop what an earlier batch or another iterator left
            if k < g or k > last:
                self._pending.pop(k).cancel()
        fut = self._submit(g)
        for k in range(g + 1, min(g + self.ahead, last) + 1):
            self._submit(k)
        out = fut.result()
        self._pending.pop(g, None)
        return (out,)

    def close(self):
        self._pool.shutdown(wait=True, cancel_futures=True)
        for src in self._sources[1:]:
            src.close()


def make_dataset(
    source: CubeSource,
    mcfg,
    scaler: FluxScaler,
    batch_size: int,
    with_weights: bool,
    repeat: bool = False,
    workers: int = 1,
    steps: int | None = None,
) -> CubeBatches:
    """A :class:`CubeBatches` over ``source`` (``repeat``: on across epochs; with
    ``steps``, the run's optimiser steps, it ends one batch after the last),
    assembled by ``workers`` threads."""
    return CubeBatches(source, mcfg, scaler, batch_size, with_weights, repeat=repeat, workers=workers, steps=steps)
