"""linecube.model.backend: choosing the Keras backend, seeds and thread pools (in fresh
processes: the backend and TensorFlow's pools are fixed when they start)."""

import os
import subprocess
import sys

import pytest

CODE = """
from linecube.model import backend
print(backend.select("tensorflow"))
tf_name = backend.configure(5, threads=3)
import numpy as np, tensorflow as tf
a = np.random.rand()
backend.configure(5)
print(tf_name, tf.config.threading.get_intra_op_parallelism_threads(), tf.config.threading.get_inter_op_parallelism_threads(), a == np.random.rand())
try:
    backend.select("jax")
except RuntimeError as e:
    print("refused:", "already runs on 'tensorflow'" in str(e))
"""


def _env(**kw):
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    env.pop("KERAS_BACKEND", None)
    return {**env, **kw}


def test_threads_seeds_and_no_switch_after_import():
    p = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=_env(), timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split()[-6:] == ["tensorflow", "3", "2", "True", "refused:", "True"]


def test_environment_chooses_when_the_config_does_not():
    pytest.importorskip("torch")
    code = "from linecube.model import backend; print(backend.select(None)); import keras; print(keras.backend.backend())"
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=_env(KERAS_BACKEND="torch"), timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split() == ["torch", "torch"]


def test_unknown_backend_is_refused():
    from linecube.model import backend

    with pytest.raises(ValueError, match="one of"):
        backend.select("theano")
