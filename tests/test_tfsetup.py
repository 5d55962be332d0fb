"""linecube.tfsetup: seeds, determinism and thread pools (in a fresh process: pools
can be set only before TensorFlow starts)."""

import os
import subprocess
import sys

CODE = """
from linecube.tfsetup import configure_tensorflow
tf = configure_tensorflow(5, threads=3)
import numpy as np
a = np.random.rand()
configure_tensorflow(5)
print(tf.config.threading.get_intra_op_parallelism_threads(), tf.config.threading.get_inter_op_parallelism_threads(), a == np.random.rand())
"""


def test_threads_and_seeds():
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    p = subprocess.run([sys.executable, "-c", CODE], capture_output=True, text=True, env=env, timeout=300)
    assert p.returncode == 0, p.stderr[-2000:]
    assert p.stdout.split()[-3:] == ["3", "2", "True"]
