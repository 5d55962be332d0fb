"""One pipeline stage per process, for wall time and peak RSS (benchmarks/scale.py
and tests/test_scale.py):

    python benchmarks/stages.py stage NAME JSON-ARGS

prints ``STAGE {json}`` with the stage's own numbers, ``seconds`` and
``peak_rss_mb``. Stages: simulate, assemble, train, score, embed, neighbors.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import time
from pathlib import Path

from linecube.io.atomic import write_csv_atomic
from linecube.io.manga import DR17_DRPVER
from linecube.simulate import simulate_cubes_h5


def _stage(name: str, a: dict) -> dict:
    if name == "simulate":
        n = simulate_cubes_h5(
            a["out"], a["n"], a.get("seed", 1), per_plate=a.get("per_plate", False), threads=a.get("threads", 1), progress=False
        )
        return {"n": n}
    if name == "assemble":
        from linecube.data.assemble import assemble

        files = sorted(Path(a["plates"]).glob("*.h5"))
        return {"n": assemble(files, a["out"], drpver=DR17_DRPVER, compression=a.get("compression", "none"), progress=False)}
    if name == "train":
        from linecube.model.train import train

        s = train(
            a["cubes"],
            a["out"],
            "ae",
            a.get("model", {}),
            {"epochs": 1, **a.get("train", {})},  # steps_per_epoch: exactly that many steps
            verbose=0,
            steps_per_epoch=a["steps"],
        )
        return {"samples_per_second": s["samples_per_second"]}
    if name == "score":
        from linecube.analysis.score import score_galaxies

        return score_galaxies(
            a["cubes"],
            a["model"],
            a.get("model_cfg", {}),
            a["out"],
            batch_size=a.get("batch", 32),
            top_k=a.get("top_k", 20),
            progress=False,
        )
    if name == "embed":
        from linecube.analysis.embed import embed_file

        return embed_file(
            a["latents"],
            a["out"],
            a["variance"],
            pca_components=50,
            umap_components=3,
            umap_neighbors=15,
            umap_min_dist=0.1,
            seed=1,
        )
    if name == "neighbors":
        import pandas as pd

        from linecube.analysis.neighbors import neighbors_frame

        emb = pd.read_csv(a["embedding"], dtype={"plateifu": str})
        q = list(emb["plateifu"].iloc[:: max(1, len(emb) // 200)])
        nb = neighbors_frame(emb, q, 5, "umap")
        write_csv_atomic(nb, a["out"])
        return {"queries": len(q)}
    raise ValueError(f"unknown stage {name!r}")


def run_stage(name: str, args: dict) -> dict:
    t0 = time.perf_counter()
    info = _stage(name, args)
    info = {k: v for k, v in (info or {}).items() if isinstance(v, int | float | str)}
    info["seconds"] = time.perf_counter() - t0
    info["peak_rss_mb"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0  # Linux: KiB
    return info


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if len(argv) != 3 or argv[0] != "stage":
        print("usage: python benchmarks/stages.py stage NAME JSON-ARGS", file=sys.stderr)
        return 2
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    print("STAGE " + json.dumps(run_stage(argv[1], json.loads(argv[2]))), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
