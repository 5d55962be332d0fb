"""TensorFlow set-up shared by training and scoring (seeds, determinism, threads)."""

from __future__ import annotations


def configure_tensorflow(seed: int, *, deterministic: bool = True, threads: int | None = None):
    """Seeds (Python, numpy, TF), op determinism and CPU thread pools."""
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(seed)
    if deterministic:
        tf.config.experimental.enable_op_determinism()
    if threads:
        try:
            tf.config.threading.set_intra_op_parallelism_threads(threads)
            tf.config.threading.set_inter_op_parallelism_threads(min(2, threads))
        except RuntimeError:
            pass  # already initialised in this process
    return tf
