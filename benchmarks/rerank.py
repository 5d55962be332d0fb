"""How much labels help: flag the top N of a finished run as an astronomer would
(truth: anomaly -> interesting, foreground star -> artefact, else not interesting),
rerank, and count the true anomalies in the top N before and after, beside the
trivial use of the same labels (only drop the ones marked not interesting).

    python benchmarks/rerank.py [--results results] [--truth results/sample/redux/truth.csv] [--top 20]
    python benchmarks/rerank.py --simulate 1000 [--epochs 3]   # a fresh survey, default model

The simulated mode renders a survey at the natural anomaly fraction (6 %), trains
the default AE on it, scores every galaxy with the default score (as the
workflow does: each ranked against the training split) and takes the PCA of the
latents as the space labels spread in (as embedding.csv's pc columns).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

from linecube.analysis.rerank import rerank  # noqa: E402


def truth_kinds(truth: pd.DataFrame) -> dict[str, str]:
    """plate-IFU -> "science" (an injected anomaly), "artefact" (the foreground star)
    or "" (normal), from truth.csv."""
    from linecube.analysis.validate import truth_flags

    anom = truth_flags(truth["is_anomaly"])
    kind = truth["anomaly_type"].astype(str) if "anomaly_type" in truth else pd.Series("", index=truth.index)
    return {
        p: ("artefact" if k == "foreground_star" else "science") if a else "" for p, a, k in zip(truth["plateifu"], anom, kind)
    }


def truth_labels(top: pd.DataFrame, kinds: dict[str, str]) -> pd.DataFrame:
    """The labels an astronomer would give the galaxies of ``top``."""
    name = {"science": "interesting", "artefact": "artefact", "": "not interesting"}
    return pd.DataFrame({"plateifu": top["plateifu"], "label": [name[kinds.get(p, "")] for p in top["plateifu"]]})


def simulated_run(n: int, seed: int, epochs: int, threads: int, work: Path):
    """(scores, embedding, truth) DataFrames of a freshly simulated and scored survey."""
    import h5py
    import numpy as np
    from sklearn.decomposition import PCA

    from linecube.analysis.score import derive_scores, reference_rows
    from linecube.analysis.stats import Reconstructor, collect_stats
    from linecube.config import load_config
    from linecube.io.formats import read_layout, read_strings
    from linecube.model.train import train
    from linecube.simulate import plan_survey, simulate_cubes_h5

    repo = Path(__file__).resolve().parents[1]
    cfg = load_config(repo / "config" / "config.yaml")
    h5path = work / "cubes.h5"
    simulate_cubes_h5(h5path, n, seed, anomaly_fraction=0.06, threads=threads, progress=False)
    gals = {g.plateifu: g for g in plan_survey(n, seed, anomaly_fraction=0.06)}
    train(h5path, work / "model", "ae", cfg["model"], {**cfg["train"], "epochs": epochs}, threads=threads, verbose=0)
    with h5py.File(h5path, "r") as h5:
        layout, lines = read_layout(h5)
        ids = read_strings(h5["plateifu"])
    rec = Reconstructor(work / "model" / "model.keras", cfg["model"], layout, list(lines.names))
    raw = collect_stats(h5path, rec, list(lines.names), layout.window_bins, batch_size=32, progress=False)
    ref = reference_rows(ids, work / "model" / "split.csv")
    sc = derive_scores(raw, ref, list(lines.names), seed)
    scores = pd.DataFrame({"plateifu": ids, "score": sc[cfg["score"]["default"]]})
    scores["rank"] = scores["score"].rank(ascending=False, method="first").astype(int)
    pcs = PCA(min(50, raw.latents.shape[1]), random_state=seed).fit_transform(raw.latents.astype(np.float64))
    emb = pd.DataFrame(pcs, columns=[f"pc{i + 1}" for i in range(pcs.shape[1])])
    emb.insert(0, "plateifu", ids)
    truth = pd.DataFrame(
        {
            "plateifu": ids,
            "is_anomaly": [bool(gals[p].anomaly) for p in ids],
            "anomaly_type": [gals[p].anomaly for p in ids],
        }
    )
    return scores, emb, truth


def measure(name: str, sc: pd.DataFrame, emb: pd.DataFrame, truth: pd.DataFrame, top: int) -> dict:
    """Science anomalies (the foreground star is an artefact, not a find) in the top N:
    before, after dropping the labelled non-finds, after reranking."""
    kinds = truth_kinds(truth)
    sci = {p: k == "science" for p, k in kinds.items()}
    sc = sc.sort_values("rank")
    head = sc.head(top)
    labels = truth_labels(head, kinds)
    count = lambda ps: int(sum(sci.get(p, False) for p in ps))  # noqa: E731
    dropped = sc[~sc["plateifu"].isin(labels.loc[labels["label"] != "interesting", "plateifu"])].head(top)
    out = rerank(sc, emb, labels).head(top)
    r = {
        "model": name,
        "N": top,
        "science anomalies": int(sum(sci.values())),
        "before": count(head["plateifu"]),
        "drop only": count(dropped["plateifu"]),
        "rerank": count(out["plateifu"]),
        "new (unlabelled)": count(out.loc[out["label"] == "", "plateifu"]),
    }
    return r


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--results", default="results")
    ap.add_argument("--truth", default="results/sample/redux/truth.csv")
    ap.add_argument("--top", type=int, nargs="+", default=[20])
    ap.add_argument("--models", nargs="+", default=["ae", "vae"])
    ap.add_argument("--simulate", type=int, default=0, help="simulate, train and score a survey of this many galaxies")
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--seed", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args(argv)
    rows = []
    if args.simulate:
        import tempfile

        with tempfile.TemporaryDirectory() as tmp:
            sc, emb, truth = simulated_run(args.simulate, args.seed, args.epochs, args.threads, Path(tmp))
        rows += [measure("ae (simulated)", sc, emb, truth, n) for n in args.top]
    else:
        truth = pd.read_csv(args.truth, dtype={"plateifu": str}, keep_default_na=False)
        for m in args.models:
            d = Path(args.results) / m
            sc = pd.read_csv(d / "scores.csv", dtype={"plateifu": str})
            emb = pd.read_csv(d / "embedding.csv", dtype={"plateifu": str})
            rows += [measure(m, sc, emb, truth, n) for n in args.top]
    print("science anomalies in the top N, labels (from the truth) on the first top N:")
    print(pd.DataFrame(rows).to_string(index=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
