"""What an epoch costs beyond its training steps: Keras's own loop (a finite
PyDataset, a new iterator per epoch, ``validation_data``) against linecube's (one
endless iterator for the run, the test losses from the ``Validate`` callback), the
same model, batches and epochs, alternating in one process.

    python benchmarks/epochs.py [--galaxies 40] [--epochs 12] [--rounds 2] [--out FILE.json]

Per loop it prints the wall time of an epoch, the time in its training steps
(``train_function`` calls, from ``on_train_batch_begin`` to ``on_train_batch_end``)
and the rest: validation, callbacks and what Keras does between epochs (its new
TensorFlow iterator). Target: linecube's rest per epoch < Keras's (ratio < 1).
TensorFlow, CPU, the default model and batch size.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).parent))


def run(args) -> dict:
    from common import simulated_cubes

    from linecube.model import backend as kb

    kb.select("tensorflow")
    kb.configure(0, deterministic=False, threads=args.threads)
    import keras

    from linecube.config import validate_config
    from linecube.data.dataset import AugmentConfig, split_galaxies
    from linecube.data.fluxscale import FluxScaler
    from linecube.io.formats import load_lines
    from linecube.model.autoencoder import build_model
    from linecube.model.batches import make_dataset
    from linecube.model.callbacks import make_callbacks
    from linecube.model.spec import ModelConfig
    from linecube.model.train import one_cycle, optimizer, training_sources

    cfg = validate_config({"data": {}})
    bs = int(cfg["train"]["batch_size"])

    class Clock(keras.callbacks.Callback):
        """Epoch wall time and the time inside its training steps."""

        def __init__(self):
            super().__init__()
            self.epochs: list[tuple[float, float]] = []

        def on_epoch_begin(self, epoch, logs=None):
            self.t0, self.steps = time.perf_counter(), 0.0

        def on_train_batch_begin(self, batch, logs=None):
            self.tb = time.perf_counter()

        def on_train_batch_end(self, batch, logs=None):
            self.steps += time.perf_counter() - self.tb

        def on_epoch_end(self, epoch, logs=None):
            self.epochs.append((time.perf_counter() - self.t0, self.steps))

    out: dict = {"epochs": args.epochs, "galaxies": args.galaxies, "batch_size": bs, "loops": {}}
    with tempfile.TemporaryDirectory() as td:
        td = Path(td)
        cubes = simulated_cubes(td, args.galaxies)
        names = list(load_lines().names)
        mcfg = ModelConfig.from_config(cfg["model"])
        scaler = FluxScaler.from_config(cfg["model"], names, mcfg.window_bins)
        aug = AugmentConfig.from_config(cfg["train"])
        ids = [str(i) for i in range(args.galaxies)]
        tr, te = split_galaxies(ids, float(cfg["train"]["test_fraction"]), 0)
        res: dict[str, list] = {"keras": [], "linecube": []}
        for r in range(args.rounds):
            for loop in ("keras", "linecube"):
                train_src, test_src = training_sources(cubes, tr, te, 0, aug, mcfg, scaler)
                n = train_src.n_batches(bs)
                model = build_model(mcfg, "ae", seed=0)
                model.compile(optimizer=optimizer("adam", one_cycle(1e-3, n * args.epochs), 1.0))
                clock = Clock()
                if loop == "keras":
                    train_ds = make_dataset(train_src, mcfg, scaler, bs, False)
                    test_ds = make_dataset(test_src, mcfg, scaler, bs, False)

                    class SetEpoch(keras.callbacks.Callback):
                        def on_epoch_begin(self, epoch, logs=None, src=train_src):
                            src.epoch = epoch

                    model.fit(train_ds, validation_data=test_ds, epochs=args.epochs, verbose=0, shuffle=False,
                              callbacks=[SetEpoch(), clock])  # fmt: skip
                else:
                    train_ds = make_dataset(train_src, mcfg, scaler, bs, False, repeat=True, steps=n * args.epochs)
                    test_ds = make_dataset(test_src, mcfg, scaler, bs, False)
                    work = td / f"run-{r}"
                    work.mkdir(exist_ok=True)
                    cbs = make_callbacks(
                        train_src, work / "h.csv", work / "d.csv", work / "backup", cfg["train"], bs,
                        one_cycle(1e-3, n * args.epochs), train_ds, n, test_ds,
                    )  # fmt: skip
                    # linecube's loop as train() runs it: endless batches, Validate first;
                    # its backup, guard and history callbacks are left out of both loops
                    keep = [c for c in cbs if type(c).__name__ in ("Validate", "SetEpoch")]
                    model.fit(train_ds, epochs=args.epochs, steps_per_epoch=n, verbose=0, shuffle=False, callbacks=[*keep, clock])
                for ds in (train_ds, test_ds):
                    ds.close()
                train_src.close()
                test_src.close()
                res[loop] += clock.epochs[1:]  # the first epoch traces the step: left out
                print(f"round {r + 1} {loop}: done", file=sys.stderr, flush=True)
    for loop, eps in res.items():
        wall = [w for w, _ in eps]
        rest = [w - s for w, s in eps]
        out["loops"][loop] = {
            "epoch_s_median": statistics.median(wall),
            "steps_s_median": statistics.median([s for _, s in eps]),
            "rest_s_mean": statistics.mean(rest),
            "rest_s_median": statistics.median(rest),
            "rest_s_max": max(rest),
            "epochs_with_rest_over_1s": sum(x > 1.0 for x in rest),
            "epochs_measured": len(eps),
        }
    k, c = out["loops"]["keras"], out["loops"]["linecube"]
    out["rest_ratio"] = c["rest_s_mean"] / k["rest_s_mean"]
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--galaxies", type=int, default=40)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None)
    args = ap.parse_args()
    out = run(args)
    print(f"{'loop':10s} {'epoch (median)':>15s} {'steps':>8s} {'rest mean':>10s} {'rest max':>9s} {'rest > 1 s':>11s}")
    for loop, v in out["loops"].items():
        print(
            f"{loop:10s} {v['epoch_s_median']:14.2f}s {v['steps_s_median']:7.2f}s {v['rest_s_mean']:9.2f}s "
            f"{v['rest_s_max']:8.2f}s {v['epochs_with_rest_over_1s']:5d} of {v['epochs_measured']}"
        )
    print(f"rest per epoch, linecube / Keras: {out['rest_ratio']:.2f} (target < 1)")
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=1))


if __name__ == "__main__":
    main()
