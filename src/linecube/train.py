"""Training: HDF5 -> tf.data -> ConvLSTM2D AE/VAE, resumable and deterministic.

Outputs (``out_dir``): ``model.keras``, ``history.csv`` (epoch, loss, test_loss,
... one row per epoch), ``loss.png``, ``split.csv``. A Keras ``BackupAndRestore`` directory keyed by a hash of the
configuration and the input file sits next to ``out_dir``: a killed or preempted
job, rerun with the same configuration, resumes after its last finished epoch;
a changed configuration never resumes a stale run.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from pathlib import Path

import numpy as np

from .atomic import write_csv_atomic
from .dataset import AugmentConfig, CubeSource, split_galaxies, split_table
from .fluxscale import FluxScaler
from .formats import read_layout, read_strings
from .tfsetup import configure_tensorflow

log = logging.getLogger("linecube")


def run_hash(model_cfg: dict, train_cfg: dict, kind: str, cubes_h5: str | os.PathLike) -> str:
    """Key of a training run: configuration + identity of the input file."""
    st = Path(cubes_h5).stat()
    blob = json.dumps(
        {"model": model_cfg, "train": train_cfg, "kind": kind, "input": [st.st_size, st.st_mtime_ns]}, sort_keys=True
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
    from .dataset import sigma_from_ivar

    usable = (mask == 0) & (ivar > 0)
    sigma = sigma_from_ivar(ivar)
    w = np.where(usable, 1.0 / np.sqrt(np.maximum(sigma**2 + (np.float32(sys_floor) * flux) ** 2, 1e-30)), 0.0)
    mean = float(w[usable].mean(dtype=np.float64)) if usable.any() else 1.0
    return (w / max(mean, 1e-30)).astype(np.float32)


def make_dataset(source: CubeSource, mcfg, scaler: FluxScaler, batch_size: int, with_weights: bool):
    """tf.data pipeline over a :class:`CubeSource`: a dataset of batch numbers
    mapped through ``tf.numpy_function`` that assembles each batch in numpy (model
    layout, scaling, augmentation for the source's current epoch), prefetched two
    batches ahead. One hand-over to TensorFlow per batch: much cheaper than a
    Python generator yielding cubes (3.8 -> ~1 ms of CPU per cube on 2 cores)."""
    import tensorflow as tf

    from .models import to_model_layout

    shape = mcfg.input_shape
    n = len(source)
    n_batches = -(-n // batch_size)

    def load(b):
        epoch = source.current_epoch()
        pairs = source.order(epoch)[int(b) * batch_size : (int(b) + 1) * batch_size]
        xs = np.empty((len(pairs), *shape), np.float32)
        ws = np.empty((len(pairs), *shape), np.float32) if with_weights else None
        for k, (row, copy) in enumerate(pairs):
            f, iv, m = source.sample(int(row), int(copy), epoch)
            s = scaler.galaxy_scale(f[None], m[None]) if scaler.per_galaxy else None
            xs[k] = to_model_layout(scaler.forward(f[None], s), mcfg)[0]
            if with_weights:
                w = ivar_weights(f, iv, m, mcfg.loss_sys_floor) if mcfg.loss_weighting == "ivar" else (m == 0).astype(np.float32)
                ws[k] = to_model_layout(w[None], mcfg)[0]
        return (xs, ws) if with_weights else xs

    def to_batch(b):
        if with_weights:
            x, w = tf.numpy_function(load, [b], (tf.float32, tf.float32), stateful=True)
            x.set_shape((None, *shape))
            w.set_shape((None, *shape))
            return {"x": x, "w": w}
        x = tf.numpy_function(load, [b], tf.float32, stateful=True)
        x.set_shape((None, *shape))
        return {"x": x}

    ds = tf.data.Dataset.range(n_batches).map(to_batch, num_parallel_calls=1, deterministic=True)
    ds = ds.apply(tf.data.experimental.assert_cardinality(n_batches))
    return ds.prefetch(2)


def one_cycle(lr_max: float, total_steps: int, warmup: float = 0.3, div: float = 25.0, final_div: float = 1e3):
    """One-cycle learning-rate schedule (:class:`linecube.models.OneCycle`)."""
    from .models import OneCycle

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


def _callbacks(source: CubeSource, history_path: Path, backup_dir: Path, out_dir: Path, train_cfg: dict, batch_size: int):
    import keras

    class SetEpoch(keras.callbacks.Callback):
        """Tell the data source which epoch is starting (seeds its augmentation)."""

        def on_epoch_begin(self, epoch, logs=None):
            source.epoch = epoch

    class HistoryFile(keras.callbacks.Callback):
        """history rows 1..E exactly once each, across interruptions."""

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
                row[k.replace("val_", "test_")] = float(v)
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
        SetEpoch(),
        keras.callbacks.BackupAndRestore(str(backup_dir), save_freq="epoch", double_checkpoint=True, delete_checkpoint=True),
        HistoryFile(),
        keras.callbacks.TerminateOnNaN(),
    ]
    if int(train_cfg.get("kl_warmup_epochs") or 0) > 0:
        cbs.insert(1, KLWarmup(int(train_cfg["kl_warmup_epochs"])))
    patience = train_cfg.get("early_stopping_patience")
    if patience:
        cbs.append(keras.callbacks.EarlyStopping(monitor="val_loss", patience=int(patience), restore_best_weights=True))
    return cbs


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


def train(
    cubes_h5: str | os.PathLike,
    out_dir: str | os.PathLike,
    kind: str,
    model_cfg: dict,
    train_cfg: dict,
    *,
    threads: int | None = None,
    verbose: int = 2,
    steps_per_epoch: int | None = None,
) -> dict:
    """Train an AE or VAE on cubes.h5; write the outputs listed in the module doc.

    Returns a summary dict (epochs run, final losses, samples per second).
    ``steps_per_epoch`` caps the batches per epoch (benchmarks only).
    """
    import h5py

    from .config import with_defaults

    model_cfg, train_cfg = with_defaults("model", model_cfg), with_defaults("train", train_cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    seed = int(train_cfg["seed"])
    tf = configure_tensorflow(seed, threads=threads)
    import keras

    from .models import ModelConfig, build_model

    with h5py.File(cubes_h5, "r") as h5:
        layout, lines = read_layout(h5)
        plateifus = read_strings(h5["plateifu"])
    mcfg = ModelConfig.from_config(model_cfg, layout.n_lines, layout.window_bins, layout.crop)
    train_idx, test_idx = split_galaxies(plateifus, float(train_cfg["test_fraction"]), seed)
    write_csv_atomic(split_table(plateifus, train_idx, test_idx), out_dir / "split.csv")
    log.info(
        "%s: %d galaxies, %d train / %d test (split by galaxy, before augmentation)",
        kind,
        len(plateifus),
        len(train_idx),
        len(test_idx),
    )

    gpus = tf.config.list_physical_devices("GPU")
    if train_cfg["mixed_precision"]:
        if gpus:
            keras.mixed_precision.set_global_policy("mixed_float16")
        else:
            log.warning("mixed_precision requested but no GPU is visible: training in float32")
    strategy = tf.distribute.MirroredStrategy() if len(gpus) > 1 else tf.distribute.get_strategy()
    log.info("devices: %s; replicas: %d", [d.name for d in gpus] or ["CPU"], strategy.num_replicas_in_sync)

    aug = AugmentConfig(
        copies=int(train_cfg["augment_copies"]),
        noise_sigma=float(train_cfg["noise_sigma"]),
        noise_from_ivar=bool(train_cfg["noise_from_ivar"]),
        max_shift=int(train_cfg["max_shift"]),
    )
    scaler = FluxScaler.from_config(model_cfg, lines.names, layout.window_bins)
    bs = int(train_cfg["batch_size"]) * strategy.num_replicas_in_sync
    with_w = mcfg.uses_weights
    kw = {"need_mask": with_w or scaler.per_galaxy, "need_ivar": mcfg.loss_weighting != "none"}
    train_src = CubeSource(cubes_h5, train_idx, seed, aug, shuffle=True, **kw)
    test_src = CubeSource(cubes_h5, test_idx, seed + 1, aug, shuffle=False, augment_epochs=False, **kw)
    train_ds = make_dataset(train_src, mcfg, scaler, bs, with_w)
    test_ds = make_dataset(test_src, mcfg, scaler, bs, with_w) if len(test_idx) else None
    if steps_per_epoch:  # benchmarks: a fixed number of batches whatever the sample size
        train_ds = train_ds.repeat()
        test_ds = test_ds.repeat() if test_ds is not None else None

    epochs = int(train_cfg["epochs"])
    lr = float(train_cfg["learning_rate"])
    if train_cfg["schedule"] == "onecycle":
        steps = (steps_per_epoch or -(-len(train_src) // bs)) * epochs
        lr = one_cycle(lr, steps)
    with strategy.scope():
        model = build_model(mcfg, kind, seed=seed)
        model.compile(
            optimizer=_optimizer(train_cfg["optimizer"], lr, train_cfg["clipnorm"]),
            jit_compile=bool(train_cfg["xla"]),
        )
        model.optimizer.build(model.trainable_variables)

    key = run_hash(model_cfg, train_cfg, kind, cubes_h5)
    backup_dir = out_dir.parent / f".backup-{out_dir.name}-{key}"
    history_path = out_dir.parent / f".history-{out_dir.name}-{key}.csv"
    t0 = time.perf_counter()
    model.fit(
        train_ds,
        validation_data=test_ds,
        epochs=epochs,
        callbacks=_callbacks(train_src, history_path, backup_dir, out_dir, train_cfg, bs),
        verbose=verbose,
        shuffle=False,  # the source shuffles, seeded per epoch
        steps_per_epoch=steps_per_epoch,
        validation_steps=steps_per_epoch,
    )
    wall = time.perf_counter() - t0
    save_model_atomic(model, out_dir / "model.keras")
    rows = _read_history(history_path)
    _write_history(out_dir / "history.csv", rows)
    history_path.unlink(missing_ok=True)
    shutil.rmtree(backup_dir, ignore_errors=True)
    from .figures import plot_history

    plot_history(out_dir / "history.csv", out_dir / "loss.png", f"{kind.upper()} ({mcfg.layout} layout, {mcfg.steps} steps)")
    n_epochs_run = len(rows)
    summary = {
        "kind": kind,
        "epochs": n_epochs_run,
        "final_loss": rows[-1].get("loss") if rows else None,
        "final_test_loss": rows[-1].get("test_loss") if rows else None,
        "wall_seconds": wall,
        "parameters": int(model.count_params()),
        "samples_per_second": sum(float(r.get("samples", 0)) for r in rows) / max(sum(float(r["seconds"]) for r in rows), 1e-9),
    }
    log.info("trained %s: %s", kind, summary)
    return summary
