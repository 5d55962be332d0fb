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

:func:`train_run` is the run in named steps: split, devices, feed
(:mod:`linecube.model.batches`), priors (median cube, line weights), schedule,
build (:mod:`linecube.model.autoencoder`), fit (:mod:`linecube.model.callbacks`),
outputs, summary. The test losses come from a callback (``Validate``), not from a
new Keras iterator per epoch.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from linecube.data.dataset import AugmentConfig, CubeSource, median_cubes, split_galaxies, split_table
from linecube.data.fluxscale import FluxScaler
from linecube.io.atomic import write_csv_atomic
from linecube.io.formats import read_layout, read_strings

log = logging.getLogger("linecube")


def run_hash(model_cfg: dict, train_cfg: dict, kind: str, cubes_h5: str | os.PathLike, backend: str = "tensorflow") -> str:
    """Key of a training run: configuration, backend + identity of the input file."""
    st = Path(cubes_h5).stat()
    blob = json.dumps(
        {"model": model_cfg, "train": train_cfg, "kind": kind, "backend": backend, "input": [st.st_size, st.st_mtime_ns]},
        sort_keys=True,
    )
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


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
    """One-cycle learning-rate schedule (:class:`linecube.model.layers.OneCycle`)."""
    from linecube.model.layers import OneCycle

    return OneCycle(float(lr_max), int(total_steps), float(warmup), float(div), float(final_div))


def optimizer(name: str, lr, clipnorm: float | None = None):
    import keras

    kw = {"clipnorm": float(clipnorm)} if clipnorm else {}
    return {
        "adagrad": keras.optimizers.Adagrad,
        "adam": keras.optimizers.Adam,
        "sgd": keras.optimizers.SGD,
        "rmsprop": keras.optimizers.RMSprop,
    }[name](learning_rate=lr, **kw)


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
    from linecube.config import with_defaults
    from linecube.model import backend as kb

    kb.select(backend, bitwise=bitwise)
    model_cfg, train_cfg = with_defaults("model", model_cfg), with_defaults("train", train_cfg)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    paths = {n: Path((outputs or {}).get(n) or out_dir / f) for n, f in TRAIN_OUTPUTS.items()}
    seed = int(train_cfg["seed"])
    bname = kb.configure(seed, threads=threads)
    mcfg, lines, train_idx, test_idx = _split(cubes_h5, kind, model_cfg, train_cfg, paths["split"])
    strategy, replicas, gpus = _devices(bname, bool(train_cfg["mixed_precision"]))
    run = _feed(cubes_h5, mcfg, lines, model_cfg, train_cfg, train_idx, test_idx, replicas, threads, bool(gpus), steps_per_epoch)
    schedule = _schedule(train_cfg, run.steps)
    mean, lweights = _priors(cubes_h5, mcfg, run.scaler, train_idx, seed)

    def build():
        return _build(mcfg, kind, seed, mean, lweights, run.scaler, train_cfg, schedule, bname)

    if strategy is not None:
        with strategy.scope():
            model = build()
    else:
        model = build()
    key = run_hash(model_cfg, train_cfg, kind, cubes_h5, bname)
    wall, temp = _fit(model, run, train_cfg, schedule, out_dir, key, verbose)
    rows, events = _write_outputs(model, kind, temp, paths)
    return _summary(kind, bname, model, rows, events, wall, run.batch_size)


def _split(cubes_h5, kind: str, model_cfg: dict, train_cfg: dict, split_path: Path):
    """The model's shape from cubes.h5 and the train/test split by galaxy (written to ``split_path``)."""
    import h5py

    from linecube.model.spec import ModelConfig

    with h5py.File(cubes_h5, "r") as h5:
        layout, lines = read_layout(h5)
        plateifus = read_strings(h5["plateifu"])
    mcfg = ModelConfig.from_config(model_cfg, layout.n_lines, layout.window_bins, layout.crop)
    train_idx, test_idx = split_galaxies(plateifus, float(train_cfg["test_fraction"]), int(train_cfg["seed"]))
    write_csv_atomic(split_table(plateifus, train_idx, test_idx), split_path)
    log.info(
        "%s: %d galaxies, %d train / %d test (split by galaxy, before augmentation)",
        kind, len(plateifus), len(train_idx), len(test_idx),
    )  # fmt: skip
    return mcfg, lines, train_idx, test_idx


def _devices(bname: str, mixed_precision: bool):
    """(TensorFlow's distribution strategy or None, replicas, visible GPUs); mixed
    precision set when asked for and a GPU is visible."""
    import keras

    from linecube.model import backend as kb

    gpus = kb.gpus()
    if mixed_precision:
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
    return strategy, replicas, gpus


@dataclass
class _Feed:
    """What :func:`_feed` sets up for a run."""

    scaler: FluxScaler
    train_src: CubeSource
    test_src: CubeSource
    train_ds: object  #: the endless training CubeBatches
    test_ds: object  #: the finite test CubeBatches, or None without a test split
    batch_size: int
    per_epoch: int
    epochs: int

    @property
    def steps(self) -> int:
        """The run's optimiser steps."""
        return self.per_epoch * self.epochs


def _feed(cubes_h5, mcfg, lines, model_cfg, train_cfg, train_idx, test_idx, replicas: int, threads, on_gpu: bool,
          steps_per_epoch: int | None) -> _Feed:  # fmt: skip
    """The run's data: scaler, sources, the training and test feeds, batch size,
    steps per epoch and epochs."""
    from linecube.model.batches import make_dataset

    seed = int(train_cfg["seed"])
    aug = AugmentConfig.from_config(train_cfg)
    scaler = FluxScaler.from_config(model_cfg, lines.names, mcfg.window_bins)
    bs = int(train_cfg["batch_size"]) * replicas
    if mcfg.pairs and bs < 4:
        raise ValueError(f"train.batch_size {bs}: the consistency term needs at least 4 (two views of two galaxies)")
    train_src, test_src = training_sources(cubes_h5, train_idx, test_idx, seed, aug, mcfg, scaler)
    n_feed = feed_workers(threads, on_gpu)
    if n_feed > 1:
        log.info("%d threads assemble the training batches", n_feed)
    per_epoch = steps_per_epoch or train_src.n_batches(bs)
    epochs = epochs_for(int(train_cfg["epochs"]), 0 if steps_per_epoch else int(train_cfg["min_steps"]), per_epoch)
    with_w = mcfg.uses_weights
    # batches on across epochs, steps per epoch given: Keras keeps one iterator for the run (make_dataset)
    train_ds = make_dataset(train_src, mcfg, scaler, bs, with_w, repeat=True, workers=n_feed, steps=per_epoch * epochs)
    test_ds = make_dataset(test_src, mcfg, scaler, bs, with_w) if len(test_idx) else None  # read by a callback
    if epochs > int(train_cfg["epochs"]):
        log.info(
            "%d steps per epoch: %d epochs instead of %d, for the %d optimiser steps of train.min_steps",
            per_epoch, epochs, int(train_cfg["epochs"]), int(train_cfg["min_steps"]),
        )  # fmt: skip
    return _Feed(scaler, train_src, test_src, train_ds, test_ds, bs, per_epoch, epochs)


def _schedule(train_cfg: dict, steps: int):
    """The learning-rate schedule: one-cycle over ``steps``, or constant."""
    from linecube.model.layers import ConstantRate

    lr = float(train_cfg["learning_rate"])
    return one_cycle(lr, steps) if train_cfg["schedule"] == "onecycle" else ConstantRate(lr)


def _priors(cubes_h5, mcfg, scaler: FluxScaler, train_idx, seed: int):
    """What the model starts from: the training galaxies' median cube (the
    decoder's mean cube) and Eq. 1's line weights (``line_balance``); None when off."""
    from linecube.model.losses import line_weights
    from linecube.model.spec import to_model_layout

    mean, lweights = None, None
    if mcfg.mean_cube or mcfg.line_balance > 0:
        med = median_cubes(cubes_h5, train_idx, scaler, seed=seed)[1]
        mean = to_model_layout(med[None], mcfg)[0] if mcfg.mean_cube else None
        if mcfg.line_balance > 0:
            lweights = line_weights(med, mcfg.n_lines, mcfg.line_balance)
            log.info("Eq. 1 line weights (line_balance %g): %s", mcfg.line_balance, " ".join(f"{w:.2f}" for w in lweights))
    return mean, lweights


def _build(mcfg, kind: str, seed: int, mean, lweights, scaler: FluxScaler, train_cfg: dict, schedule, bname: str):
    """The compiled model, its optimiser built."""
    from linecube.model.autoencoder import build_model

    model = build_model(mcfg, kind, seed=seed, mean_cube=mean, line_weights=lweights, ref_line=scaler.ref_line)
    model.compile(
        optimizer=optimizer(train_cfg["optimizer"], schedule, train_cfg["clipnorm"]),
        jit_compile=bool(train_cfg["xla"]) if bname == "tensorflow" else "auto",
    )
    model.optimizer.build(model.trainable_variables)
    return model


def _fit(model, run: _Feed, train_cfg: dict, schedule, out_dir: Path, key: str, verbose: int):
    """``model.fit`` with the run's callbacks, resumable from the backups keyed by
    ``key`` next to ``out_dir``; the feeds closed. (seconds, the temporary history,
    events and backup paths)."""
    from linecube.model.callbacks import make_callbacks

    backup_dir = out_dir.parent / f".backup-{out_dir.name}-{key}"
    history_path = out_dir.parent / f".history-{out_dir.name}-{key}.csv"
    events_path = out_dir.parent / f".divergence-{out_dir.name}-{key}.csv"
    train_ds, test_ds = run.train_ds, run.test_ds
    t0 = time.perf_counter()
    try:
        model.fit(
            train_ds,
            epochs=run.epochs,
            callbacks=make_callbacks(
                run.train_src,
                history_path,
                events_path,
                backup_dir,
                train_cfg,
                run.batch_size,
                schedule,
                train_ds,
                run.per_epoch,
                test_ds,
            ),  # fmt: skip
            verbose=verbose,
            shuffle=False,  # the source shuffles, seeded per epoch (Keras would reorder a PyDataset's batches)
            steps_per_epoch=run.per_epoch,
        )
    finally:
        for ds in (train_ds, test_ds):
            if ds is not None:
                ds.close()
        run.train_src.close()
        run.test_src.close()
    return time.perf_counter() - t0, (history_path, events_path, backup_dir)


def _write_outputs(model, kind: str, temp: tuple[Path, Path, Path], paths: dict[str, Path]):
    """The model, history and divergence files from the run's temporary history,
    events and backups (then removed); refuses a run that ended non-finite.
    (history rows, divergence events)."""
    import pandas as pd

    from linecube.io.atomic import save_model_atomic
    from linecube.model.callbacks import EVENT_COLUMNS, read_history, write_history

    history_path, events_path, backup_dir = temp
    rows = read_history(history_path)
    if rows and not all(math.isfinite(float(r.get("loss", float("nan")))) for r in rows):
        raise RuntimeError(f"{kind}: training ended with a non-finite loss; see {paths['history']}")
    save_model_atomic(model, paths["model"])
    write_history(paths["history"], rows)
    events = read_history(events_path)
    write_csv_atomic(pd.DataFrame(events, columns=EVENT_COLUMNS), paths["divergence"])
    history_path.unlink(missing_ok=True)
    events_path.unlink(missing_ok=True)
    shutil.rmtree(backup_dir, ignore_errors=True)
    return rows, events


def _summary(kind: str, bname: str, model, rows: list[dict], events: list[dict], wall: float, bs: int) -> dict:
    """What the run did: epochs, steps, final losses, divergence events, time, parameters, throughput."""
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
