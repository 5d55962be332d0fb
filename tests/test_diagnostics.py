"""linecube.analysis.diagnostics: the learned fraction, the PCA baseline, the probe rows and warnings."""

import numpy as np
import pandas as pd
import pytest
from fixtures import write_cubes_h5

from linecube.analysis.diagnostics import (
    fit_pixel_pca,
    learned_fraction,
    pca_loss_ratio,
    pixel_pca_scores,
    probe_rows,
    probe_warnings,
)
from linecube.data.fluxscale import FluxScaler


def test_learned_fraction():
    """0 = the median cube's loss, 1 = the noise's: one definition for the score log and the benchmarks."""
    assert learned_fraction(1.0, 0.76) == 0.0 and learned_fraction(0.76, 0.76) == pytest.approx(1.0)
    assert learned_fraction(0.88, 0.76) == pytest.approx(0.5) and learned_fraction(1.1, 0.76) < 0
    assert np.isnan(learned_fraction(0.9, 1.0)) and np.isnan(learned_fraction(float("nan"), 0.8))


def test_pca_baseline(tmp_path):
    from linecube.data.dataset import median_cubes

    cubes = tmp_path / "cubes.h5"
    write_cubes_h5(cubes, n=12)
    scaler = FluxScaler("none", 1.0, 15, 10)
    _, med = median_cubes(cubes, np.arange(12), scaler)
    full = fit_pixel_pca(cubes, np.arange(12), scaler, 11)
    assert pca_loss_ratio(full, cubes, np.arange(12), scaler, med) < 0.05  # N - 1 components: the training cubes back
    one = fit_pixel_pca(cubes, np.arange(12), scaler, 1)
    r1 = pca_loss_ratio(one, cubes, np.arange(12), scaler, med)
    assert 0.05 < r1 < 1.0 and pixel_pca_scores(one, cubes, [3, 1], scaler).shape == (2, 1)
    assert fit_pixel_pca(cubes, np.arange(12), scaler, 50).n_components_ == 11  # capped at N - 1


def test_probe_rows_keep_the_normal_galaxies_in_file_order(tmp_path):
    t = pd.DataFrame(
        {"plateifu": ["a", "b", "c", "d"], "class": ["seyfert", "liner", "x", "y"], "is_anomaly": ["False", "True", "False", "false"],
         "vsini_kms": [1.0, 2.0, 3.0, 4.0]}
    )  # fmt: skip
    t.to_csv(tmp_path / "truth.csv", index=False)
    rows, cols = probe_rows(["d", "z", "a", "b"], tmp_path / "truth.csv")
    assert list(rows) == [0, 2]  # d and a; b is an anomaly, z unknown
    assert list(cols["class"]) == ["y", "seyfert"] and list(cols["vsini_kms"]) == [4.0, 1.0]


def test_probe_warnings_name_what_the_latent_loses():
    probes = {
        "latent": {"knn": {"class": 0.5, "vsini_kms": 0.7}, "linear": {"class": 0.8}, "purity": 0.5},
        "pixels_pca": {"knn": {"class": 0.6, "vsini_kms": 0.2}, "linear": {"class": 0.7}, "purity": 0.6},
    }
    w = probe_warnings(probes)
    assert len(w) == 2 and "knn probe of class: latent 0.50 < pixels-PCA 0.60" in w[0] and "purity" in w[1]
    # within the margin (0.05), or where neither space carries the parameter (both <= 0.1): no warning
    probes["latent"]["knn"].update(incl_deg=0.02, class_=0.0)
    probes["pixels_pca"]["knn"].update(incl_deg=0.09)
    probes["latent"]["linear"]["class"], probes["pixels_pca"]["linear"]["class"] = 0.57, 0.6
    assert len(probe_warnings(probes)) == 2
