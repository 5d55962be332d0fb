"""linecube.analysis.embed: PCA then UMAP."""

import numpy as np
import pandas as pd
import pytest


def test_pca_umap_shapes_and_determinism():
    pytest.importorskip("umap")
    from linecube.analysis.embed import embed

    z = np.random.default_rng(0).normal(size=(40, 16))
    pifus = [f"8000-{1901 + i}" for i in range(40)]
    a, var = embed(z, pifus, pca_components=10, umap_components=3, umap_neighbors=8, seed=3)
    b, _ = embed(z, pifus, pca_components=10, umap_components=3, umap_neighbors=8, seed=3)
    c, _ = embed(z, pifus, pca_components=10, umap_components=3, umap_neighbors=8, seed=4)
    assert list(a.columns) == ["plateifu"] + [f"pc{i}" for i in range(1, 11)] + ["umap1", "umap2", "umap3"]
    assert len(var) == 10 and np.all(np.diff(var["cumulative"]) >= 0) and var["cumulative"].iloc[-1] <= 1 + 1e-9
    pd.testing.assert_frame_equal(a, b)
    assert not np.allclose(a[["umap1", "umap2", "umap3"]], c[["umap1", "umap2", "umap3"]])
    small, v2 = embed(z[:8], pifus[:8], pca_components=50, umap_neighbors=15, seed=0)
    assert len(v2) == 7  # capped at N - 1


def test_umap_logs_a_disconnected_graph(caplog):
    pytest.importorskip("umap")
    import logging

    from linecube.analysis.embed import umap_reduce

    rng = np.random.default_rng(0)
    x = np.vstack([rng.normal(0, 0.01, (12, 5)), rng.normal(100, 0.01, (12, 5))])  # two far islands
    with caplog.at_level(logging.WARNING, logger="linecube"):
        umap_reduce(x, 2, 5, 0.1, 0)
    assert "not fully connected" in caplog.text


def test_umap_imports_without_tensorflow_and_leaves_it_importable():
    """import_umap hides TensorFlow from umap-learn's package (its ParametricUMAP
    import costs ~4 s); afterwards TensorFlow imports as usual. A fresh process:
    this one may have imported either already."""
    pytest.importorskip("umap")
    import subprocess
    import sys

    code = (
        "import sys\n"
        "from linecube.analysis.embed import import_umap\n"
        "u = import_umap()\n"
        "assert 'tensorflow' not in sys.modules, 'umap pulled TensorFlow in'\n"
        "assert hasattr(u, 'UMAP')\n"
        "import importlib.util\n"
        "assert importlib.util.find_spec('tensorflow') is None or __import__('tensorflow') is not None\n"
        "print('OK')\n"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0 and "OK" in p.stdout, p.stderr[-2000:]
