"""The training callbacks: the test losses after each epoch (:class:`Validate`),
the epoch handed to the data source (:class:`SetEpoch`), the divergence guard
(:class:`DivergenceGuard`), the history file that survives interruptions
(:class:`HistoryFile`), the VAE's KL warm-up (:class:`KLWarmup`), and
:func:`make_callbacks`, the list a run trains with.

Import this module after :func:`linecube.model.backend.select` (it imports Keras).
"""

from __future__ import annotations

import logging
import math
import time
from pathlib import Path

import keras
import numpy as np

from linecube.data.dataset import CubeSource
from linecube.io.atomic import write_csv_atomic

log = logging.getLogger("linecube")

#: a batch whose loss exceeds this many times the median of the recent kept ones is thrown away (a batch
#: with a bright foreground star or a blueberry legitimately reaches ~20x the median on the bundled sample)
SPIKE_FACTOR = 100.0
#: recent accepted batch losses the guard compares with
GUARD_WINDOW = 50
#: the learning rate's factor after each thrown-away batch
LR_BACKOFF = 0.5

EVENT_COLUMNS = ["epoch", "batch", "loss", "reason", "lr_factor"]


def read_history(path: Path) -> list[dict]:
    """The rows of a history or divergence CSV (none when absent or empty)."""
    import pandas as pd

    if not path.exists() or path.stat().st_size < 4:
        return []
    return pd.read_csv(path).to_dict("records")


def write_history(path: Path, rows: list[dict]) -> None:
    """``rows`` to a CSV, atomically."""
    import pandas as pd

    write_csv_atomic(pd.DataFrame(rows), path)


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

    def __init__(self, validation):
        super().__init__()
        self._validation = validation

    def on_epoch_end(self, epoch, logs=None):
        if logs is None:
            return
        m = self.model
        m.reset_metrics()  # the training logs are already taken
        out = {}
        m.reset_metrics = lambda: None  # shadows the method on this instance
        try:
            for b in range(self._validation.num_batches):
                out = m.test_on_batch(self._validation[b][0], return_dict=True)
        finally:
            del m.reset_metrics
        logs.update({f"val_{k}": float(v) for k, v in out.items()})


class SetEpoch(keras.callbacks.Callback):
    """Tell the data source which epoch is starting (seeds its augmentation),
    and an endless ``dataset`` (:func:`make_dataset`) the run's step at which
    its iterator starts (the first epoch run in this process, x ``steps_per_epoch``)."""

    def __init__(self, source: CubeSource, dataset=None, steps_per_epoch: int | None = None):
        super().__init__()
        self._source, self._dataset, self._steps_per_epoch = source, dataset, steps_per_epoch

    def on_epoch_begin(self, epoch, logs=None):
        self._source.epoch = epoch
        if self._dataset is not None and self._dataset.step0 is None:
            self._dataset.step0 = int(epoch) * int(self._steps_per_epoch)


class DivergenceGuard(keras.callbacks.Callback):
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
        events = read_history(self.events_path)
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

        rows = read_history(self.events_path) + [
            {"epoch": self._epoch + 1, "batch": batch + 1, "loss": loss, "reason": why, "lr_factor": self.schedule.factor}
        ]
        write_csv_atomic(pd.DataFrame(rows), self.events_path)


class HistoryFile(keras.callbacks.Callback):
    """history rows 1..E exactly once each, across interruptions; the training
    loss is the mean over the batches the guard kept."""

    def __init__(self, history_path: Path, backup_dir: Path, batch_size: int, guard: DivergenceGuard, schedule):
        super().__init__()
        self._path, self._backup_dir, self._batch_size = history_path, backup_dir, batch_size
        self._guard, self._schedule = guard, schedule
        self.first = True
        self.t0 = 0.0
        self.samples = 0

    def on_train_batch_end(self, batch, logs=None):
        self.samples += self._batch_size

    def on_epoch_begin(self, epoch, logs=None):
        self.t0 = time.perf_counter()
        self.samples = 0
        if self.first:
            self.first = False
            rows = read_history(self._path)
            write_history(self._path, [r for r in rows if int(r["epoch"]) <= epoch])
            if epoch > 0:
                log.info("resuming after epoch %d (from %s)", epoch, self._backup_dir)

    def on_epoch_end(self, epoch, logs=None):
        rows = [r for r in read_history(self._path) if int(r["epoch"]) <= epoch]
        row = {"epoch": epoch + 1, "seconds": round(time.perf_counter() - self.t0, 3), "samples": self.samples}
        for k, v in (logs or {}).items():
            if not k.endswith("batch_loss"):
                row[k.replace("val_", "test_")] = float(v)
        if self._guard.kept:
            row["loss"] = float(np.mean(self._guard.kept))
        row["discarded_batches"] = self._guard.discarded_this_epoch
        row["lr_factor"] = self._schedule.factor
        rows.append(row)
        write_history(self._path, rows)


class KLWarmup(keras.callbacks.Callback):
    """VAE: the KL term's weight rises linearly from 1/(W+1) to 1 over W epochs
    (Bowman et al. 2016), so the decoder learns before the prior pulls."""

    def __init__(self, epochs: int):
        super().__init__()
        self.epochs = int(epochs)

    def on_epoch_begin(self, epoch, logs=None):
        if getattr(self.model, "variational", False):
            self.model.kl_scale.assign(min(1.0, (epoch + 1) / (self.epochs + 1)))


def make_callbacks(
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
    """The callbacks of a run, in the order they act: the test losses, the KL warm-up
    (VAE, ``train.kl_warmup_epochs``), the epoch, Keras's BackupAndRestore in
    ``backup_dir``, the divergence guard, the history file, early stopping."""
    guard = DivergenceGuard(schedule, events_path)
    cbs = [
        *([Validate(validation)] if validation is not None else []),
        SetEpoch(source, dataset, steps_per_epoch),
        keras.callbacks.BackupAndRestore(str(backup_dir), save_freq="epoch", double_checkpoint=True, delete_checkpoint=True),
        guard,
        HistoryFile(history_path, backup_dir, batch_size, guard, schedule),
    ]
    if int(train_cfg.get("kl_warmup_epochs") or 0) > 0:
        cbs.insert(1, KLWarmup(int(train_cfg["kl_warmup_epochs"])))
    patience = train_cfg.get("early_stopping_patience")
    if patience:
        cbs.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=int(patience), restore_best_weights=True))
    return cbs
