"""Training: cubes.h5 -> batches -> ConvLSTM2D AE/VAE on any Keras backend,
resumable, deterministic, guarded against divergence.

Outputs (``out_dir``): ``model.keras``, ``history.csv`` (epoch, loss, test_loss,
... one row per epoch, with ``discarded_batches`` and ``lr_factor``),
``split.csv``, ``divergence.csv`` (every batch the guard threw away: epoch,
batch, its loss, why, the learning-rate factor; header only when none) and
``model_card.json`` (:mod:`linecube.model.card`); the workflow's rule draws ``loss.png``
from the history. A Keras
``BackupAndRestore`` directory keyed by a hash of the configuration and the
input file sits next to ``out_dir``: a killed or preempted job, rerun with the
same configuration, resumes after its last finished epoch; a changed
configuration never resumes a stale run.

Batches come from :class:`CubeBatches`, a ``keras.utils.PyDataset`` (the
portable input pipeline of Keras 3) that assembles each batch in numpy (model
layout, flux scaling, seeded augmentation) on background threads (one on CPU;
with a GPU, the job's threads but one: :func:`feed_workers`), a few batches ahead
of the training step, across epoch ends (one endless iterator for the run). The
test losses come from a callback (``Validate``), not from a new Keras iterator
per epoch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from linecube.data.dataset import AugmentConfig, CubeSource, median_cubes, split_galaxies, split_table
from linecube.data.fluxscale import FluxScaler
from linecube.io.atomic import write_csv_atomic
from linecube.io.formats import read_layout, read_strings

log = logging.getLogger("linecube")

#: a batch whose loss exceeds this many times the median of the recent kept ones is thrown away (a batch
#: with a bright foreground star or a blueberry legitimately reaches ~20x the median on the bundled sample)
SPIKE_FACTOR = 100.0
#: recent accepted batch losses the guard compares with
GUARD_WINDOW = 50
#: the learning rate's factor after each thrown-away batch
LR_BACKOFF = 0.5


def run_hash(model_cfg: dict, train_cfg: dict, kind: str, cubes_h5: str | os.PathLike, backend: str = "tensorflow") -> str:
    """Key of a training run: configuration, backend + identity of the input file."""
    st = Path(cubes_h5).stat()
    blob = json.dumps(
        {"model": model_cfg, "train": train_cfg, "kind": kind, "backend": backend, "input": [st.st_size, st.st_mtime_ns]},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


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
    from linecube.model.models import model_layout_view

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


def make_dataset(
    source: CubeSource,
    mcfg,
    scaler: FluxScaler,
    batch_size: int,
    with_weights: bool,
    repeat: bool = False,
    workers: int = 1,
    steps: int | None = None,
):
    """A :class:`CubeBatches` over ``source`` (``repeat``: on across epochs; with
    ``steps``, the run's optimiser steps, it ends one batch after the last),
    assembled by ``workers`` threads."""
    import keras

    n_workers = max(1, int(workers))

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

        def __init__(self, ahead: int = 3):
            super().__init__(workers=1, use_multiprocessing=False)
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
            if not repeat:
                return self.n
            if steps is None:
                return None
            return max(1, int(steps) - int(self.step0 or 0) + 1)  # one spare batch: Keras never starts a new iterator

        def _assemble(self, samples, epoch: int) -> dict:
            src = getattr(self._local, "source", None)
            if src is None:
                with self._lock:
                    src = source if not self._sources else source.clone()
                    self._sources.append(src)
                self._local.source = src
            return assemble_batch(src, mcfg, scaler, samples, epoch, with_weights)

        def _submit(self, g: int):
            """The future of the run's ``g``-th batch (epoch ``g // n``, batch ``g % n``)."""
            if g not in self._pending:
                epoch, b = divmod(g, self.n)
                epoch = epoch if source.augment_epochs else 0
                samples = source.batch_samples(epoch, b, batch_size)
                self._pending[g] = self._pool.submit(self._assemble, samples, epoch)
            return self._pending[g]

        def position(self, index: int) -> int:
            """The run's batch number ``g`` of the ``index``-th batch asked for."""
            if repeat:
                base = self.step0 if self.step0 is not None else source.current_epoch() * self.n
                return int(base) + int(index)
            return source.current_epoch() * self.n + int(index) % self.n

        def __getitem__(self, index):
            g = self.position(index)
            last = g + self.ahead if repeat else (g // self.n + 1) * self.n - 1
            if repeat and steps is not None:
                last = min(last, int(steps))
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

    return CubeBatches()


def training_sources(cubes_h5, train_idx, test_idx, seed: int, aug: AugmentConfig, mcfg, scaler: FluxScaler):
    """The (training, test) :class:`CubeSource` of a run: the training set shuffled
    and augmented anew each epoch (seed ``seed``), the test set in file order with
    the same augmented copies every epoch (seed ``seed + 1``)."""
    kw = {"need_mask": mcfg.uses_weights or scaler.per_galaxy, "need_ivar": mcfg.loss_weighting != "none", "pairs": mcfg.pairs}
    train_src = CubeSource(cubes_h5, train_idx, seed, aug, shuffle=True, **kw)
    test_src = CubeSource(cubes_h5, test_idx, seed + 1, aug, shuffle=False, augment_epochs=False, **kw)
    return train_src, test_src


def feed_workers(threads: int | None, on_gpu: bool) -> int:
    """Threads that assemble training batches. On CPU 1: the step's own threads
    already fill every core, so more feeders only compete with it
    (docs/benchmarks.md). When a GPU takes the step, every CPU thread of the job
    but one (``threads``, the rule's; None: the cores this process may use), at
    most 8. The batches do not depend on the count."""
    if not on_gpu:
        return 1
    if threads is None:
        threads = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return int(min(8, max(1, int(threads) - 1)))


def epochs_for(epochs: int, min_steps: int, steps_per_epoch: int) -> int:
    """``epochs``, raised so that training takes at least ``min_steps`` optimiser steps."""
    return max(int(epochs), -(-int(min_steps) // max(int(steps_per_epoch), 1)))


def one_cycle(lr_max: float, total_steps: int, warmup: float = 0.3, div: float = 25.0, final_div: float = 1e3):
    """One-cycle learning-rate schedule (:class:`linecube.model.models.OneCycle`)."""
    from linecube.model.models import OneCycle

    return OneCycle(float(lr_max), int(total_steps), float(warmup), float(div), float(final_div))


def _optimizer(name: str, lr, clipnorm: float | None = None):
    import keras

    kw = {"clipnorm": float(clipnorm)} if clipnorm else {}
    return {
        "adagrad": keras.optimizers.Adagrad,
        "adam": keras.optimizers.Adam,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }[name](learning_rate=lr, **kw)


def _callbacks(
    source: CubeSource,
    history_path: Path,
    events_path: Path,
    backup_dir: Path,
    train_cfg: dict,
    batch_size: int,
    schedule,
    dataset=None,
    steps_per_epoch: int | None = None,
    validation=None,
):
    import keras

    class Validate(keras.callbacks.Callback):
        """The test set's losses after each epoch, as ``val_*`` logs (what
        ``fit(validation_data=...)`` reports, the same means over the same
        batches), from ``validation`` (a finite :func:`make_dataset`) batch by
        batch through ``test_on_batch``: Keras's own validation makes a new
        TensorFlow iterator per epoch, and dropping the last one stalled a third
        of the epochs by 2-3.5 s (docs/benchmarks.md). ``test_on_batch`` resets
        the metrics before each batch; a no-op ``reset_metrics`` on the model
        for the loop lets them run over the whole test set, as ``evaluate`` does
        (tests/test_train.py checks the two agree)."""

        def on_epoch_end(self, epoch, logs=None):
            if logs is None:
                return
            m = self.model
            m.reset_metrics()  # the training logs are already taken
            out = {}
            m.reset_metrics = lambda: None  # shadows the method on this instance
            try:
                for b in range(validation.num_batches):
                    out = m.test_on_batch(validation[b][0], return_dict=True)
            finally:
                del m.reset_metrics
            logs.update({f"val_{k}": float(v) for k, v in out.items()})

    class SetEpoch(keras.callbacks.Callback):
        """Tell the data source which epoch is starting (seeds its augmentation),
        and an endless ``dataset`` (:func:`make_dataset`) the run's step at which
        its iterator starts (the first epoch run in this process, x ``steps_per_epoch``)."""

        def on_epoch_begin(self, epoch, logs=None):
            source.epoch = epoch
            if dataset is not None and dataset.step0 is None:
                dataset.step0 = int(epoch) * int(steps_per_epoch)

    guard = DivergenceGuard(schedule, events_path)

    class HistoryFile(keras.callbacks.Callback):
        """history rows 1..E exactly once each, across interruptions; the training
        loss is the mean over the batches the guard kept."""

        def __init__(self):
            super().__init__()
            self.first = True
            self.t0 = 0.0
            self.samples = 0

        def on_train_batch_end(self, batch, logs=None):
            self.samples += batch_size

        def on_epoch_begin(self, epoch, logs=None):
            self.t0 = time.perf_counter()
            self.samples = 0
            if self.first:
                self.first = False
                rows = _read_history(history_path)
                _write_history(history_path, [r for r in rows if int(r["epoch"]) <= epoch])
                if epoch > 0:
                    log.info("resuming after epoch %d (from %s)", epoch, backup_dir)

        def on_epoch_end(self, epoch, logs=None):
            rows = [r for r in _read_history(history_path) if int(r["epoch"]) <= epoch]
            row = {"epoch": epoch + 1, "seconds": round(time.perf_counter() - self.t0, 3), "samples": self.samples}
            for k, v in (logs or {}).items():
                if not k.endswith("batch_loss"):
                    row[k.replace("val_", "test_")] = float(v)
            if guard.kept:
                row["loss"] = float(np.mean(guard.kept))
            row["discarded_batches"] = guard.discarded_this_epoch
            row["lr_factor"] = schedule.factor
            rows.append(row)
            _write_history(history_path, rows)

    class KLWarmup(keras.callbacks.Callback):
        """VAE: the KL term's weight rises linearly from 1/(W+1) to 1 over W epochs
        (Bowman et al. 2016), so the decoder learns before the prior pulls."""

        def __init__(self, epochs: int):
            super().__init__()
            self.epochs = int(epochs)

        def on_epoch_begin(self, epoch, logs=None):
            if getattr(self.model, "variational", False):
                self.model.kl_scale.assign(min(1.0, (epoch + 1) / (self.epochs + 1)))

    cbs = [
        *([Validate()] if validation is not None else []),
        SetEpoch(),
        keras.callbacks.BackupAndRestore(str(backup_dir), save_freq="epoch", double_checkpoint=True, delete_checkpoint=True),
        guard,
        HistoryFile(),
    ]
    if int(train_cfg.get("kl_warmup_epochs") or 0) > 0:
        cbs.insert(1, KLWarmup(int(train_cfg["kl_warmup_epochs"])))
    patience = train_cfg.get("early_stopping_patience")
    if patience:
        cbs.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=int(patience), restore_best_weights=True))
    return cbs


def _make_guard_class():
    import keras

    class Guard(keras.callbacks.Callback):
        """Throws away a batch whose loss is not finite or exceeds ``SPIKE_FACTOR``
        times the median of the last ``GUARD_WINDOW`` kept batches: restores the
        weights and optimiser state of the last snapshot (taken every
        ``snapshot_every`` kept batches and at each epoch's start; copying the
        state every batch would cost a device sync per step), multiplies the learning rate
        by ``LR_BACKOFF`` (the schedule's ``factor``), and writes the event to
        ``divergence.csv`` and the log. Stops training (as TerminateOnNaN would)
        after 10 events in one epoch. A batch's loss is the model's ``batch_loss``
        metric (the last value, not the epoch's running mean)."""

        def __init__(self, schedule, events_path: Path, snapshot_every: int = 10):
            super().__init__()
            self.snapshot_every = int(snapshot_every)
            self.schedule = schedule
            self.events_path = events_path
            self.recent: list[float] = []
            self.kept: list[float] = []
            self.discarded_this_epoch = 0
            self._snapshot = None
            self._epoch = 0

        def _take_snapshot(self):
            m = self.model
            self._snapshot = (
                [keras.ops.convert_to_numpy(v) for v in m.weights],
                [keras.ops.convert_to_numpy(v) for v in m.optimizer.variables],
            )

        def _restore(self):
            m = self.model
            w, o = self._snapshot
            for v, a in zip(m.weights, w):
                v.assign(a)
            for v, a in zip(m.optimizer.variables, o):
                v.assign(a)

        def on_train_begin(self, logs=None):
            events = _read_history(self.events_path)
            if events:  # resumed: the learning rate stays as lowered before
                self.schedule.factor = float(LR_BACKOFF ** len(events))
                self._retrace()

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch
            self.kept, self.discarded_this_epoch = [], 0
            self._take_snapshot()

        def on_train_batch_end(self, batch, logs=None):
            loss = float((logs or {}).get("batch_loss", float("nan")))  # this batch's own loss
            ref = float(np.median(self.recent)) if len(self.recent) >= 10 else None
            bad = not math.isfinite(loss) or (ref is not None and ref > 0 and loss > SPIKE_FACTOR * ref)
            if not bad:
                self.kept.append(loss)
                self.recent = (self.recent + [loss])[-GUARD_WINDOW:]
                if len(self.kept) % self.snapshot_every == 0:
                    self._take_snapshot()
                return
            self.discarded_this_epoch += 1
            why = "not finite" if not math.isfinite(loss) else f"{loss / ref:.0f}x the median of the last {len(self.recent)}"
            self._restore()
            self.schedule.factor *= LR_BACKOFF
            self._retrace()
            self._record(batch, loss, why)
            log.warning(
                "epoch %d batch %d: loss %.4g (%s): weights restored to before it, learning rate x%.3g from now on",
                self._epoch + 1, batch + 1, loss, why, self.schedule.factor,
            )  # fmt: skip
            if self.discarded_this_epoch >= 10:
                log.error("10 batches thrown away in epoch %d: stopping training", self._epoch + 1)
                self.model.stop_training = True

        def _retrace(self):
            """Rebuild the compiled train step so that it reads the lowered rate."""
            m = self.model
            if getattr(m, "train_function", None) is not None:
                m.train_function = None
                m.make_train_function(force=True)

        def _record(self, batch, loss, why):
            import pandas as pd

            rows = _read_history(self.events_path) + [
                {"epoch": self._epoch + 1, "batch": batch + 1, "loss": loss, "reason": why, "lr_factor": self.schedule.factor}
            ]
            write_csv_atomic(pd.DataFrame(rows), self.events_path)

    return Guard


def DivergenceGuard(schedule, events_path: Path, snapshot_every: int = 10):  # noqa: N802 (a class, made once Keras is imported)
    """The divergence guard callback (the class made by :func:`_make_guard_class`)."""
    global _GUARD
    if _GUARD is None:
        _GUARD = _make_guard_class()
    return _GUARD(schedule, events_path, snapshot_every)


_GUARD = None

EVENT_COLUMNS = ["epoch", "batch", "loss", "reason", "lr_factor"]


def _read_history(path: Path) -> list[dict]:
    import pandas as pd

    if not path.exists() or path.stat().st_size < 4:
        return []
    return pd.read_csv(path).to_dict("records")


def _write_history(path: Path, rows: list[dict]) -> None:
    import pandas as pd

    write_csv_atomic(pd.DataFrame(rows), path)


def save_model_atomic(model, path: str | os.PathLike) -> None:
    """model.save to a temporary ``.keras`` next to ``path``, then rename."""
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


#: output name -> its file in ``out_dir`` (unless :func:`train` is given other paths)
TRAIN_OUTPUTS = {"model": "model.keras", "history": "history.csv", "split": "split.csv", "divergence": "divergence.csv"}


def train(cubes_h5: str | os.PathLike, out_dir: str | os.PathLike, kind: str, model_cfg: dict, train_cfg: dict,
          **kw) -> dict:  # fmt: skip
    """:func:`train_run` holding the run's lock (``.model.keras.lock`` in ``out_dir``,
    or beside the ``model`` output), then the model card (``model_card.json`` beside
    the model, or the ``card`` output: :mod:`linecube.model.card`): a second process training the same run (a
    rerun beside an orphan left by a killed Snakemake) stops at once with
    :class:`linecube.io.atomic.Busy` instead of sharing its history and backups. The
    lock goes with the process that holds it, also when it is killed."""
    from linecube.io.atomic import exclusive
    from linecube.io.formats import check_cubes_file

    outputs = dict(kw.get("outputs") or {})
    model_path = Path(outputs.get("model") or Path(out_dir) / "model.keras")
    with exclusive(model_path):
        check_cubes_file(cubes_h5)
        kw["outputs"] = {k: v for k, v in outputs.items() if k != "card"}
        summary = train_run(cubes_h5, out_dir, kind, model_cfg, train_cfg, **kw)
        from linecube.model.card import CARD_NAME, build_card, write_card

        split = outputs.get("split") or Path(out_dir) / "split.csv"
        write_card(
            outputs.get("card") or model_path.parent / CARD_NAME, build_card(cubes_h5, kind, model_cfg, train_cfg, summary, split)
        )
        return summary


def train_run(
    cubes_h5: str | os.PathLike,
    out_dir: str | os.PathLike,
    kind: str,
    model_cfg: dict,
    train_cfg: dict,
    *,
    threads: int | None = None,
    verbose: int = 2,
    steps_per_epoch: int | None = None,
    backend: str | None = None,
    outputs: dict | None = None,
    bitwise: bool = False,
) -> dict:
    """Train an AE or VAE on cubes.h5; write the outputs listed in the module doc.

    ``outputs``: the path of each output by name (``model``, ``history``,
    ``split``, ``divergence``; the workflow passes its declared outputs), each
    defaulting to its file name in ``out_dir``.

    Returns a summary dict (epochs run, final losses, samples per second, the
    backend). ``steps_per_epoch`` fixes the batches per epoch (benchmarks only:
    training then takes exactly ``epochs`` x ``steps_per_epoch`` steps, whatever
    ``min_steps`` says).
    ``backend``: the Keras backend (None: ``$KERAS_BACKEND``, else TensorFlow);
    ``bitwise``: bit-identical weights for one configuration
    (:func:`linecube.model.backend.select`).
    """
    import h5py

    from linecube.config import with_defaults
    from linecube.model import backend as kb

    kb.select(backend, bitwise=bitwise)
    model_cfg, train_cfg = with_defaults("model", model_cfg), with_defaults("train", train_cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {n: Path((outputs or {}).get(n) or out_dir / f) for n, f in TRAIN_OUTPUTS.items()}
    seed = int(train_cfg["seed"])
    bname = kb.configure(seed, threads=threads)
    import keras

    from linecube.model.models import ModelConfig, build_model, line_weights, to_model_layout

    with h5py.File(cubes_h5, "r") as h5:
        layout, lines = read_layout(h5)
        plateifus = read_strings(h5["plateifu"])
    mcfg = ModelConfig.from_config(model_cfg, layout.n_lines, layout.window_bins, layout.crop)
    train_idx, test_idx = split_galaxies(plateifus, float(train_cfg["test_fraction"]), seed)
    write_csv_atomic(split_table(plateifus, train_idx, test_idx), paths["split"])
    log.info(
        "%s: %d galaxies, %d train / %d test (split by galaxy, before augmentation)",
        kind,
        len(plateifus),
        len(train_idx),
        len(test_idx),
    )

    gpus = kb.gpus()
    if train_cfg["mixed_precision"]:
        if gpus:
            keras.mixed_precision.set_global_policy("mixed_float16")
        else:
            log.warning("mixed_precision requested but no GPU is visible: training in float32")
    strategy = None
    if bname == "tensorflow":
        import tensorflow as tf

        strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
        replicas = strategy.num_replicas_in_sync
    else:
        replicas = 1
        if len(gpus) > 1:
            log.warning("%d GPUs visible: the %s backend trains on the first (multi-GPU is TensorFlow's here)", len(gpus), bname)
    log.info("backend %s; devices: %s; replicas: %d", bname, gpus or ["CPU"], replicas)

    aug = AugmentConfig.from_config(train_cfg)
    scaler = FluxScaler.from_config(model_cfg, lines.names, layout.window_bins)
    bs = int(train_cfg["batch_size"]) * replicas
    if mcfg.pairs and bs < 4:
        raise ValueError(f"train.batch_size {bs}: the consistency term needs at least 4 (two views of two galaxies)")
    with_w = mcfg.uses_weights
    train_src, test_src = training_sources(cubes_h5, train_idx, test_idx, seed, aug, mcfg, scaler)
    n_feed = feed_workers(threads, bool(gpus))
    if n_feed > 1:
        log.info("%d threads assemble the training batches", n_feed)
    per_epoch = steps_per_epoch or train_src.n_batches(bs)
    epochs = epochs_for(int(train_cfg["epochs"]), 0 if steps_per_epoch else int(train_cfg["min_steps"]), per_epoch)
    # batches on across epochs, steps per epoch given: Keras keeps one iterator for the run (make_dataset)
    train_ds = make_dataset(train_src, mcfg, scaler, bs, with_w, repeat=True, workers=n_feed, steps=per_epoch * epochs)
    test_ds = make_dataset(test_src, mcfg, scaler, bs, with_w) if len(test_idx) else None  # read by a callback
    if epochs > int(train_cfg["epochs"]):
        log.info(
            "%d steps per epoch: %d epochs instead of %d, for the %d optimiser steps of train.min_steps",
            per_epoch, epochs, int(train_cfg["epochs"]), int(train_cfg["min_steps"]),
        )  # fmt: skip
    lr = float(train_cfg["learning_rate"])
    steps = per_epoch * epochs
    from linecube.model.models import ConstantRate

    schedule = one_cycle(lr, steps) if train_cfg["schedule"] == "onecycle" else ConstantRate(lr)
    mean, lweights = None, None
    if mcfg.mean_cube or mcfg.line_balance > 0:
        med = median_cubes(cubes_h5, train_idx, scaler, seed=seed)[1]
        mean = to_model_layout(med[None], mcfg)[0] if mcfg.mean_cube else None
        if mcfg.line_balance > 0:
            lweights = line_weights(med, mcfg.n_lines, mcfg.line_balance)
            log.info("Eq. 1 line weights (line_balance %g): %s", mcfg.line_balance, " ".join(f"{w:.2f}" for w in lweights))

    def build():
        model = build_model(mcfg, kind, seed=seed, mean_cube=mean, line_weights=lweights, ref_line=scaler.ref_line)
        model.compile(
            optimizer=_optimizer(train_cfg["optimizer"], schedule, train_cfg["clipnorm"]),
            jit_compile=bool(train_cfg["xla"]) if bname == "tensorflow" else "auto",
        )
        model.optimizer.build(model.trainable_variables)
        return model

    if strategy is not None:
        with strategy.scope():
            model = build()
    else:
        model = build()

    key = run_hash(model_cfg, train_cfg, kind, cubes_h5, bname)
    backup_dir = out_dir.parent / f".backup-{out_dir.name}-{key}"
    history_path = out_dir.parent / f".history-{out_dir.name}-{key}.csv"
    events_path = out_dir.parent / f".divergence-{out_dir.name}-{key}.csv"
    t0 = time.perf_counter()
    try:
        model.fit(
            train_ds,
            epochs=epochs,
            callbacks=_callbacks(
                train_src, history_path, events_path, backup_dir, train_cfg, bs, schedule, train_ds, per_epoch, test_ds
            ),
            verbose=verbose,
            shuffle=False,  # the source shuffles, seeded per epoch (Keras would reorder a PyDataset's batches)
            steps_per_epoch=per_epoch,
        )
    finally:
        for ds in (train_ds, test_ds):
            if ds is not None:
                ds.close()
        train_src.close()
        test_src.close()
    wall = time.perf_counter() - t0
    rows = _read_history(history_path)
    if rows and not all(math.isfinite(float(r.get("loss", float("nan")))) for r in rows):
        raise RuntimeError(f"{kind}: training ended with a non-finite loss; see {paths['history']}")
    save_model_atomic(model, paths["model"])
    _write_history(paths["history"], rows)
    import pandas as pd

    events = _read_history(events_path)
    write_csv_atomic(pd.DataFrame(events, columns=EVENT_COLUMNS), paths["divergence"])
    history_path.unlink(missing_ok=True)
    events_path.unlink(missing_ok=True)
    shutil.rmtree(backup_dir, ignore_errors=True)
    n_epochs_run = len(rows)
    summary = {
        "kind": kind,
        "backend": bname,
        "epochs": n_epochs_run,
        "steps": int(sum(float(r.get("samples", 0)) for r in rows) // max(bs, 1)),
        "final_loss": rows[-1].get("loss") if rows else None,
        "final_test_loss": rows[-1].get("test_loss") if rows else None,
        "divergence_events": len(events),
        "wall_seconds": wall,
        "parameters": int(model.count_params()),
        "samples_per_second": sum(float(r.get("samples", 0)) for r in rows) / max(sum(float(r["seconds"]) for r in rows), 1e-9),
    }
    log.info("trained %s: %s", kind, summary)
    return summary
