"""linecube.analysis.validate: ROC AUC, recall and the brightness baseline."""

import numpy as np
import pandas as pd
import pytest

from linecube.analysis.validate import auc_fast, recall_at, validate


def test_validation_metrics_on_a_hand_made_case():
    # scores: anomalies at ranks 1 and 3 of 10 -> AUC = 1 - (1 negative above one positive) / (2*8) = 15/16
    scores = np.array([10, 9, 8, 7, 6, 5, 4, 3, 2, 1], float)
    labels = np.array([1, 0, 1, 0, 0, 0, 0, 0, 0, 0], bool)
    assert auc_fast(labels, scores) == pytest.approx(15 / 16)
    assert recall_at(labels, scores, 0.10) == pytest.approx(0.5)
    assert recall_at(labels, scores, 0.30) == pytest.approx(1.0)
    pifus = [f"8000-{1901 + i}" for i in range(10)]
    sc = pd.DataFrame(
        {"plateifu": pifus, "score": scores, "rank": np.arange(1, 11), "agn": [False, True] * 5, "mean_abs_flux": scores[::-1]}
    )
    truth = pd.DataFrame(
        {
            "plateifu": pifus,
            "class": ["seyfert"] * 10,
            "is_anomaly": labels,
            "anomaly_type": ["blueberry", "", "shock"] + [""] * 7,
        }
    )
    v = validate(sc, truth)
    assert v["overall"]["roc_auc"] == pytest.approx(15 / 16)
    assert v["per_type"]["blueberry"]["roc_auc"] == pytest.approx(1.0)
    assert v["per_type"]["shock"]["roc_auc"] == pytest.approx(7 / 8)
    assert v["overall"]["recall_top_10pct"] == pytest.approx(0.5)
    assert v["overall_mean_abs_flux"]["roc_auc"] == pytest.approx(1 - 15 / 16)  # brightness baseline, reversed
    assert v["agn"]["n_agn"] == 5 and v["agn"]["median_score_agn"] == pytest.approx(5.0)
