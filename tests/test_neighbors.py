"""linecube.analysis.neighbors: nearest neighbours in the UMAP or PCA space."""

import numpy as np
import pandas as pd
from fixtures import write_results

from linecube.analysis.neighbors import knn, neighbors_frame


def test_knn_matches_brute_force():
    rng = np.random.default_rng(1)
    x = rng.normal(size=(200, 3))
    q = np.array([0, 17, 199])
    d, i = knn(x, q, 5)
    for row, qq in enumerate(q):
        dist = np.linalg.norm(x - x[qq], axis=1)
        dist[qq] = np.inf
        ref = np.argsort(dist)[:5]
        np.testing.assert_array_equal(i[row], ref)
        np.testing.assert_allclose(d[row], dist[ref])
    emb = pd.DataFrame({"plateifu": [f"p{j}" for j in range(200)], "umap1": x[:, 0], "umap2": x[:, 1], "umap3": x[:, 2]})
    nb = neighbors_frame(emb, ["p17"], 3, "umap")
    assert list(nb["rank"]) == [1, 2, 3] and nb["distance"].is_monotonic_increasing and "p17" not in set(nb["neighbor"])


def test_cli_neighbors_known_and_unknown(tmp_path, capsys):
    from linecube.cli import main

    pifus = [f"8000-{1901 + i}" for i in range(20)]
    write_results(tmp_path, "ae", pifus)
    assert main(["neighbors", "8000-1905", "-k", "4", "--results", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "8000-1905" in out and "query" in out and "score" in out and "agn_flags" in out
    assert len([ln for ln in out.splitlines() if ln.strip()]) == 1 + 1 + 4  # header, query, 4 neighbours
    assert main(["neighbors", "8000-1995", "--results", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert "8000-1995 is not in" in err and "close matches" in err and "8000-19" in err
    assert main(["neighbors", "../etc", "--results", str(tmp_path)]) == 2
    assert "malformed plate-IFU" in capsys.readouterr().err
    assert main(["neighbors", "8000-1905", "--space", "pca", "--results", str(tmp_path)]) == 0
    assert main(["neighbors", " 8000-1905 ", "--results", str(tmp_path)]) == 0  # padded, as pasted from a table
    assert "8000-1905" in capsys.readouterr().out
    assert main(["neighbors", "8000-1905", "--model", "vae", "--results", str(tmp_path)]) == 2
    assert "run the workflow" in capsys.readouterr().err


def test_cli_neighbors_validates_the_results_files(tmp_path, capsys):
    from linecube.cli import main

    pifus = [f"8000-{1901 + i}" for i in range(20)]
    write_results(tmp_path, "ae", pifus)
    emb_path, sc_path = tmp_path / "ae" / "embedding.csv", tmp_path / "ae" / "scores.csv"
    emb, sc = pd.read_csv(emb_path, dtype={"plateifu": str}), pd.read_csv(sc_path, dtype={"plateifu": str})

    def expect(fragment):
        assert main(["neighbors", "8000-1905", "--results", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error: ") and fragment in err[0], err

    pd.concat([emb, emb.iloc[[4]]]).to_csv(emb_path, index=False)  # the query twice: never its own neighbour
    expect(f"{emb_path}: duplicate plate-IFU: 8000-1905 (rows 6, 22)")
    emb.to_csv(emb_path, index=False)
    pd.concat([sc.iloc[:3], sc.iloc[[2]], sc.iloc[3:]]).to_csv(sc_path, index=False)  # would shift the table
    expect(f"{sc_path}: duplicate plate-IFU")
    bad = sc.copy()
    bad.loc[7, "score"] = np.nan
    bad.to_csv(sc_path, index=False)
    expect("column score is not a finite number in row(s) 9")
    sc.iloc[:0].to_csv(sc_path, index=False)
    expect("no galaxies")
    sc_path.write_text("")
    expect("empty")
    sc.iloc[:10].to_csv(sc_path, index=False)
    expect("have no row")
