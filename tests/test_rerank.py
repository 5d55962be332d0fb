"""linecube.analysis.rerank and ``linecube rerank``: labels reorder the ranking."""

import numpy as np
import pandas as pd
import pytest

from linecube.analysis.rerank import BadLabels, read_labels, rerank
from linecube.cli import main


def survey(n=40, seed=0):
    """Two clumps in PC space; scores ranked by a random order."""
    rng = np.random.default_rng(seed)
    pifus = [f"{8000 + i // 10}-{1901 + i}" for i in range(n)]
    pcs = rng.normal(size=(n, 3))
    pcs[: n // 2, 0] += 6.0  # clump A: the first half
    emb = pd.DataFrame(pcs, columns=["pc1", "pc2", "pc3"])
    emb.insert(0, "plateifu", pifus)
    emb["umap1"] = 0.0
    score = rng.permutation(n).astype(float)
    sc = pd.DataFrame({"plateifu": pifus, "score": score})
    sc["rank"] = sc["score"].rank(ascending=False, method="first").astype(int)
    return sc, emb


def test_labelled_galaxies_move_and_pull_their_neighbours():
    sc, emb = survey()
    a = sc.plateifu[:20].tolist()  # clump A
    b = sc.plateifu[20:].tolist()  # clump B
    labels = pd.DataFrame({"plateifu": [a[0], b[0], b[1]], "label": ["not interesting", "interesting", "artefact"]})
    out = rerank(sc, emb, labels).set_index("plateifu")
    assert out.loc[b[0], "rank"] == 1
    assert set(out.sort_values("rank").index[-2:]) == {a[0], b[1]}
    # an unlabelled galaxy's move follows its clump: clump B (an interesting one is there) gains on clump A
    free_a = [p for p in a[1:]]
    free_b = [p for p in b[2:]]
    gain = out["rank_before"] - out["rank"]
    assert gain[free_b].mean() > gain[free_a].mean() + 2
    assert sorted(out["rank"]) == list(range(1, 41)) and set(out["label"]) == {"", "interesting", "not interesting", "artefact"}


def test_no_labels_keeps_the_order():
    sc, emb = survey()
    out = rerank(sc, emb, pd.DataFrame({"plateifu": [], "label": []}))
    assert list(out.sort_values("rank").plateifu) == list(sc.sort_values("rank").plateifu)


def test_bad_labels_files_are_named(tmp_path):
    f = tmp_path / "labels.csv"
    f.write_text("plateifu,flag\n8000-1901,interesting\n")
    with pytest.raises(BadLabels, match=r"labels.csv: missing column\(s\) label"):
        read_labels(f)
    f.write_text("plateifu,label\n8000-1901,boring\n8000-1902,Interesting\n")
    with pytest.raises(BadLabels, match=r"unknown label\(s\) 'boring'"):
        read_labels(f)
    f.write_text("plateifu,label\n8000-1901,interesting\n8000-1901,artefact\n")
    with pytest.raises(BadLabels, match=r"conflicting labels, e.g. 8000-1901: row 2 \(interesting\), row 3 \(artefact\)"):
        read_labels(f)
    f.write_text("plateifu,label\n 8000-1901 ,interesting\n8000-1901,interesting\n")  # padded, repeated: one label
    assert read_labels(f).plateifu.tolist() == ["8000-1901"]
    f.write_bytes(b"plateifu,label\n8000-1901,\xff\xfeinteresting\n")
    with pytest.raises(BadLabels, match=r"labels.csv: not a UTF-8 text file"):
        read_labels(f)


def write_run(results, model, sc, emb):
    """results/{model}/scores.csv and embedding.csv, as the workflow writes them."""
    d = results / model
    d.mkdir(parents=True)
    sc.to_csv(d / "scores.csv", index=False)
    emb.to_csv(d / "embedding.csv", index=False)
    return d


def test_cli_rerank_writes_scores_ranked(tmp_path, capsys):
    sc, emb = survey()
    d = write_run(tmp_path / "results", "vae", sc, emb)
    lab = tmp_path / "labels.csv"
    pd.DataFrame(
        {"plateifu": [sc.plateifu[30], "9999-1901"], "label": ["interesting", "artefact"], "model": "vae", "score": 1}
    ).to_csv(lab, index=False)
    assert main(["rerank", "--labels", str(lab), "--model", "vae", "--results", str(tmp_path / "results")]) == 0
    o = capsys.readouterr()
    assert "40 galaxies reranked with 1 interesting" in o.out and "1 labelled galaxies are not in vae" in o.err
    ranked = pd.read_csv(d / "scores_ranked.csv", dtype={"plateifu": str})
    assert ranked.plateifu[0] == sc.plateifu[30]
    # labels from another model, and a missing run, end in one error line
    assert main(["rerank", "--labels", str(lab), "--model", "ae", "--results", str(tmp_path / "results")]) == 2
    assert "not found" in capsys.readouterr().err
    write_run(tmp_path / "results", "ae", sc, emb)
    assert main(["rerank", "--labels", str(lab), "--model", "ae", "--results", str(tmp_path / "results")]) == 2
    assert "labels were made on model(s) vae, not ae" in capsys.readouterr().err


def test_rerank_validates_as_neighbors_does(tmp_path, capsys):
    """A padded plate-IFU still applies its label; bad --weight / -k, duplicated or
    incomplete scores.csv rows end in one error line naming the file or option."""
    sc, emb = survey()
    d = write_run(tmp_path / "results", "ae", sc, emb)
    lab = tmp_path / "labels.csv"
    lab.write_text(f"plateifu,label\n {sc.plateifu[30]} ,interesting\n")
    base = ["rerank", "--labels", str(lab), "--results", str(tmp_path / "results")]
    assert main(base) == 0
    assert "1 interesting" in capsys.readouterr().out
    for extra, needle in ((["--weight", "inf"], "--weight"), (["--weight", "nan"], "--weight"), (["--weight", "-1"], "--weight"),
                          (["-k", "0"], "-k"), (["-k", "-3"], "-k")):  # fmt: skip
        assert main([*base, *extra]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith(f"error: {needle}"), err
    pd.concat([sc, sc.iloc[[3]]]).to_csv(d / "scores.csv", index=False)
    assert main(base) == 2
    assert f"{d / 'scores.csv'}: duplicate plate-IFU" in capsys.readouterr().err
    sc.drop(columns="rank").to_csv(d / "scores.csv", index=False)
    assert main(base) == 2
    assert f"{d / 'scores.csv'}: missing column(s) rank" in capsys.readouterr().err
