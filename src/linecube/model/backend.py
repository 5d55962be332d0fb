"""The Keras backend: which one, seeds, determinism, threads and devices.

Keras 3 reads its backend once, at the first ``import keras``, from the
``KERAS_BACKEND`` environment variable (``tensorflow``, ``torch`` or ``jax``).
:func:`select` sets it from a configuration value before that import and refuses
a backend other than the one an already-imported Keras uses; TensorFlow is the
default (on CPU the fastest here: docs/benchmarks.md).
"""

from __future__ import annotations

import os
import sys

BACKENDS = ("tensorflow", "torch", "jax")
DEFAULT = "tensorflow"


def select(name: str | None = None, bitwise: bool = False) -> str:
    """Make ``name`` (None: ``$KERAS_BACKEND``, else TensorFlow) Keras's backend and
    return it. Must run before Keras is imported, unless Keras already uses it.

    ``bitwise``: bit-identical results for one configuration. On TensorFlow this
    turns oneDNN's CPU kernels off (``TF_ENABLE_ONEDNN_OPTS=0``, read once at
    TensorFlow's import): on some CPUs (AMD EPYC with AVX-512 here) their
    multithreaded sums run in a varying order, so two runs differ at float
    rounding (~1e-6 relative); without them TensorFlow's CPU step is 3-4x slower
    (docs/decisions.md). PyTorch (deterministic algorithms) and JAX are bitwise
    on CPU already."""
    want = name or os.environ.get("KERAS_BACKEND") or DEFAULT
    if want not in BACKENDS:
        raise ValueError(f"Keras backend must be one of {BACKENDS}, got {want!r}")
    if bitwise and want == "tensorflow" and os.environ.get("TF_ENABLE_ONEDNN_OPTS") != "0":
        if "tensorflow" in sys.modules:
            raise RuntimeError(
                "bitwise_reproducible needs TensorFlow's oneDNN kernels off, but TensorFlow is already "
                "imported in this process with them on: set TF_ENABLE_ONEDNN_OPTS=0 before Python starts"
            )
        os.environ["TF_ENABLE_ONEDNN_OPTS"] = "0"
    if "keras" in sys.modules:
        import keras

        have = keras.backend.backend()
        if have != want:
            raise RuntimeError(
                f"Keras already runs on {have!r} in this process, so it cannot switch to {want!r}: "
                "set KERAS_BACKEND before Python starts"
            )
        return have
    os.environ["KERAS_BACKEND"] = want
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    return want


def name() -> str:
    """The backend Keras uses (importing Keras)."""
    import keras

    return keras.backend.backend()


def configure(seed: int, *, deterministic: bool = True, threads: int | None = None) -> str:
    """Seeds (Python, numpy, the backend's), deterministic kernels where the backend
    offers a switch, and CPU thread pools; returns the backend's name."""
    import keras

    keras.utils.set_random_seed(seed)
    b = keras.backend.backend()
    if b == "tensorflow":
        import tensorflow as tf

        if deterministic:
            tf.config.experimental.enable_op_determinism()
        if threads:
            try:
                tf.config.threading.set_intra_op_parallelism_threads(threads)
                tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
            except RuntimeError:
                pass  # already initialised in this process
    elif b == "torch":
        import torch

        if deterministic:
            torch.use_deterministic_algorithms(True, warn_only=True)
        if threads:
            torch.set_num_threads(int(threads))
    # JAX: deterministic on CPU; its thread pool is set by XLA_FLAGS before import
    return b


def gpus() -> list[str]:
    """Names of the GPUs the backend sees (empty on CPU)."""
    b = name()
    if b == "tensorflow":
        import tensorflow as tf

        return [d.name for d in tf.config.list_physical_devices("GPU")]
    if b == "torch":
        import torch

        return [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())] if torch.cuda.is_available() else []
    import jax

    return [str(d) for d in jax.devices() if d.platform == "gpu"]


def peak_memory_bytes() -> int | None:
    """Peak GPU memory the backend has allocated on its first GPU, where it says."""
    b = name()
    try:
        if b == "torch":
            import torch

            return int(torch.cuda.max_memory_allocated()) if torch.cuda.is_available() else None
        if b == "jax":
            import jax

            d = [d for d in jax.devices() if d.platform == "gpu"]
            st = d[0].memory_stats() if d else None
            return int(st["peak_bytes_in_use"]) if st and "peak_bytes_in_use" in st else None
        import tensorflow as tf

        if tf.config.list_physical_devices("GPU"):
            return int(tf.config.experimental.get_memory_info("GPU:0")["peak"])
    except Exception:  # noqa: BLE001 - a statistic, never a failure
        return None
    return None
