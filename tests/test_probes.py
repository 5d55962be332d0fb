"""linecube.analysis.probes: kNN and linear probes, purity and invariance on spaces whose answers are known."""

import numpy as np
import pytest

from linecube.analysis.probes import invariance_ratios, knn_probe, linear_probe, probe_space, purity


@pytest.fixture()
def spaces():
    rng = np.random.default_rng(0)
    y = rng.uniform(-1, 1, 300)
    informative = np.c_[y, rng.normal(0, 0.05, (300, 3))]
    useless = rng.normal(size=(300, 4))
    cls = np.where(y > 0.3, "seyfert", np.where(y < -0.3, "star-forming", "composite")).astype(object)
    return y, cls, informative, useless


def test_knn_and_linear_probes_tell_information_from_noise(spaces):
    y, cls, good, bad = spaces
    assert knn_probe(good, y, classify=False) > 0.9 and linear_probe(good, y, classify=False) > 0.9
    assert knn_probe(bad, y, classify=False) < 0.1 and linear_probe(bad, y, classify=False) < 0.1
    assert knn_probe(good, cls, classify=True) > 0.9
    assert abs(knn_probe(bad, cls, classify=True) - 1 / 3) < 0.12  # balanced accuracy: chance is 1/3
    # a nonlinear property: kNN finds it, a linear probe cannot
    assert knn_probe(good, y**2, classify=False) > 0.8 > 0.1 > linear_probe(good, y**2, classify=False)


def test_probes_skip_missing_values_and_tiny_samples(spaces):
    y, cls, good, _ = spaces
    y2 = y.copy()
    y2[:20] = np.nan
    assert knn_probe(good, y2, classify=False) > 0.9
    assert np.isnan(knn_probe(good[:6], y[:6], classify=False))
    assert np.isnan(knn_probe(good, np.array(["a"] * 300, dtype=object), classify=True))


def test_purity(spaces):
    y, cls, good, bad = spaces
    p = purity(good, cls)
    assert p["class"] > 0.9 and p["agn"] > 0.9 and p["agn_chance"] == pytest.approx(np.isin(cls, ["seyfert", "composite"]).mean())
    q = purity(bad, cls)
    assert q["class"] < 0.5 and abs(q["agn"] - q["agn_chance"]) < 0.1


def test_invariance_ratios():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(100, 3))
    assert np.all(invariance_ratios(x, x) == 0)
    # a copy nudged by a tenth of the typical nearest-neighbour distance
    r = invariance_ratios(x, x + 0.01 * rng.normal(size=x.shape))
    assert np.median(r) < 0.2
    # a copy that is another galaxy entirely
    assert np.median(invariance_ratios(x, rng.normal(size=x.shape))) > 1


def test_probe_space_layout(spaces):
    y, cls, good, _ = spaces
    out = probe_space(good, {"class": cls, "a": y, "b": -y}, parameters=["a", "b", "missing"])
    assert set(out["knn"]) == {"class", "a", "b"} == set(out["linear"])
    assert {"purity", "agn_purity", "agn_chance"} <= set(out)


def test_oracle_spaces_are_the_standardised_true_parameters():
    """oracle_spaces: the two BPT ratios and every named parameter, mean 0 and sd 1
    per column, a missing value at 0; without the ratios only the parameters. A
    class set by the ratios is read off the oracle almost perfectly."""
    from linecube.analysis.probes import knn_probe, oracle_spaces

    rng = np.random.default_rng(0)
    n2, o3 = rng.normal(-0.4, 0.3, 300), rng.normal(0.0, 0.4, 300)
    truth = {"log_n2ha": n2, "log_o3hb": o3, "av": np.where(np.arange(300) == 5, np.nan, rng.normal(1, 0.5, 300))}
    truth["class"] = np.where(o3 > 0.61 / (n2 - 0.05) + 1.3, "agn", "sf")
    o = oracle_spaces(truth, ["log_n2ha", "av"])
    assert set(o) == {"true_bpt_ratios", "true_parameters"} and o["true_parameters"].shape == (300, 2)
    np.testing.assert_allclose(o["true_bpt_ratios"].mean(0), 0, atol=1e-9)
    np.testing.assert_allclose(o["true_bpt_ratios"].std(0), 1, rtol=1e-9)
    assert np.isfinite(o["true_parameters"]).all() and o["true_parameters"][5, 1] == 0
    assert knn_probe(o["true_bpt_ratios"], truth["class"], classify=True) > 0.9
    assert set(oracle_spaces({"av": truth["av"]}, ["av"])) == {"true_parameters"}


def test_within_groups():
    from linecube.analysis.probes import within_groups

    y = np.array([1.0, 3.0, 10.0, 14.0, 5.0])
    np.testing.assert_allclose(within_groups(y, [19, 19, 127, 127, 37]), [-1.0, 1.0, -2.0, 2.0, 0.0])
