"""What one training step costs: model sizes side by side, in one run.

    python benchmarks/steps.py [--steps 8] [--rounds 2] [--batch 16]

Each candidate (the default of config/config.yaml, the previous default and the
paper's filter sizes, lines layout) is built, compiled as ``train_model`` does
(optimizer from the config, op determinism on) and timed on the same in-memory
batch, interleaved over rounds (best round kept: this machine is shared).
Ratios are to the current default. Machines of one kind differ up to ~5x in
TensorFlow speed, so read the ratios, and the absolute numbers only as this
machine's.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
sys.path.insert(0, str(Path(__file__).parent))

CANDIDATES = {
    "default (config.yaml)": {},
    "filters [32, 64], latent 128 (previous default)": {"filters": [32, 64], "latent_dim": 128},
    "filters [16, 32], latent 32": {"filters": [16, 32], "latent_dim": 32},
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=8)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--batch", type=int, default=16)
    args = ap.parse_args()

    import numpy as np
    import tensorflow as tf

    from linecube.config import load_config
    from linecube.models import ModelConfig, build_model
    from linecube.tfsetup import configure_tensorflow
    from linecube.train import _optimizer

    configure_tensorflow(0)
    root = Path(__file__).resolve().parent.parent
    cfg = load_config(root / "config" / "config.yaml")
    models = {}
    for name, over in CANDIDATES.items():
        mc = {**cfg["model"], **over}
        m = build_model(ModelConfig.from_config(mc), "ae", seed=0)
        m.compile(optimizer=_optimizer(cfg["train"]["optimizer"], cfg["train"]["learning_rate"], cfg["train"]["clipnorm"]))
        x = np.random.default_rng(0).normal(size=(args.batch, *m.encoder.input_shape[1:])).astype("float32")
        ds = tf.data.Dataset.from_tensors({"x": x}).repeat()
        m.fit(ds, steps_per_epoch=2, epochs=1, verbose=0)  # build and trace
        models[name] = (m, ds)
    best = {k: float("inf") for k in models}
    for _ in range(args.rounds):
        for name, (m, ds) in models.items():
            t = time.perf_counter()
            m.fit(ds, steps_per_epoch=args.steps, epochs=1, verbose=0)
            best[name] = min(best[name], (time.perf_counter() - t) / args.steps)
    ref = best["default (config.yaml)"]
    print(f"{'model':<50}{'parameters':>12}{'s/step':>9}{'ratio':>8}")
    for name, (m, _) in models.items():
        print(f"{name:<50}{m.count_params():>12,}{best[name]:9.3f}{best[name] / ref:8.2f}")


if __name__ == "__main__":
    main()
