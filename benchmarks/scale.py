"""Survey scale on one machine: wall time and peak RSS of each stage at N galaxies.

    python benchmarks/scale.py [--sizes 1000 3000 9000] [--workdir /tmp/linecube-scale] [--out scale.csv]

Data: `linecube simulate --cubes-h5` mode (the simulator's galaxy models on the
190 extracted wavelengths), written as one file per plate like extract_plate.
Stages, each in its own process (peak RSS from getrusage of that process):
assemble (per-plate files -> cubes.h5), train (a fixed 20 steps of batch 16),
score (every galaxy), embed (PCA 50 -> UMAP 3), neighbors (KD-tree, 5 NN of
~200 queries). Goals (issue 7): peak RSS <= 2 GB at 9,000 galaxies and flat in N
for assembly and scoring; time roughly linear in N (UMAP excepted).
Needs ~2.7 GB of disk per 1,000 galaxies.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path


def stage(name: str, **args) -> dict:
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="3", CUDA_VISIBLE_DEVICES="")
    p = subprocess.run(
        [sys.executable, str(Path(__file__).with_name("stages.py")), "stage", name, json.dumps(args)],
        capture_output=True,
        text=True,
        env=env,
    )
    if p.returncode != 0:
        raise RuntimeError(f"stage {name} failed:\n{p.stdout[-2000:]}\n{p.stderr[-4000:]}")
    line = [ln for ln in p.stdout.splitlines() if ln.startswith("STAGE ")][-1]
    return json.loads(line[6:])


def run_size(n: int, root: Path, threads: int) -> dict:
    d = root / f"n{n}"
    shutil.rmtree(d, ignore_errors=True)
    d.mkdir(parents=True)
    res = {"simulate": stage("simulate", out=str(d / "plates"), n=n, seed=1, per_plate=True, threads=threads)}
    res["assemble"] = stage("assemble", plates=str(d / "plates"), out=str(d / "cubes.h5"))
    shutil.rmtree(d / "plates")
    res["train"] = stage("train", cubes=str(d / "cubes.h5"), out=str(d / "models" / "ae"), steps=20)
    res["score"] = stage("score", cubes=str(d / "cubes.h5"), model=str(d / "models" / "ae" / "model.keras"), out=str(d / "ae"))
    res["embed"] = stage(
        "embed", latents=str(d / "ae" / "latents.h5"), out=str(d / "ae" / "embedding.csv"), variance=str(d / "ae" / "pca.csv")
    )
    res["neighbors"] = stage("neighbors", embedding=str(d / "ae" / "embedding.csv"), out=str(d / "ae" / "neighbors.csv"))
    size_gb = (d / "cubes.h5").stat().st_size / 1e9
    shutil.rmtree(d)
    res["cubes_h5_gb"] = size_gb
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", type=int, nargs="+", default=[1000, 3000, 9000])
    ap.add_argument("--workdir", default="/tmp/linecube-scale")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="also write the table as CSV")
    args = ap.parse_args()
    root = Path(args.workdir)
    rows = []
    for n in args.sizes:
        r = run_size(n, root, args.threads)
        for st in ("simulate", "assemble", "train", "score", "embed", "neighbors"):
            rows.append({"n": n, "stage": st, "seconds": r[st]["seconds"], "peak_rss_mb": r[st]["peak_rss_mb"]})
        print(
            f"n={n}: done (cubes.h5 {r['cubes_h5_gb']:.1f} GB, scoring {r['score'].get('cubes_per_second', 0):.1f} cubes/s)",
            flush=True,
        )
    ns = args.sizes
    print(f"\nStage wall time (s) and peak RSS (MB) per N, {os.cpu_count()} CPU cores")
    print(
        f"{'stage':>10} "
        + " ".join(f"{'t@' + str(n):>9} {'RSS@' + str(n):>9}" for n in ns)
        + f" {'t ratio':>8} {'N ratio':>8} {'RSS ratio':>9}"
    )
    for st in ("simulate", "assemble", "train", "score", "embed", "neighbors"):
        rr = [next(r for r in rows if r["n"] == n and r["stage"] == st) for n in ns]
        cells = " ".join(f"{r['seconds']:9.1f} {r['peak_rss_mb']:9.0f}" for r in rr)
        print(
            f"{st:>10} {cells} {rr[-1]['seconds'] / rr[0]['seconds']:8.2f} {ns[-1] / ns[0]:8.1f} {rr[-1]['peak_rss_mb'] / rr[0]['peak_rss_mb']:9.2f}"
        )
    peak = max(r["peak_rss_mb"] for r in rows if r["n"] == ns[-1])
    flat = all(
        next(r for r in rows if r["n"] == ns[-1] and r["stage"] == st)["peak_rss_mb"]
        <= 1.2 * next(r for r in rows if r["n"] == ns[0] and r["stage"] == st)["peak_rss_mb"]
        for st in ("assemble", "score")
    )
    print(
        f"\npeak RSS at N={ns[-1]}: {peak:.0f} MB (goal <= 2048); assembly and scoring flat in N (<= 1.2x): {'yes' if flat else 'NO'}"
    )
    if args.out:
        import csv

        with open(args.out, "w", newline="") as fh:
            w = csv.DictWriter(fh, fieldnames=["n", "stage", "seconds", "peak_rss_mb"])
            w.writeheader()
            w.writerows(rows)


if __name__ == "__main__":
    main()
