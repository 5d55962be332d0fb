"""The ``linecube`` command line.

Heavy modules (TensorFlow, Keras, umap) are imported only inside the subcommands
that need them, so ``linecube extract`` starts in well under a second.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def _cmd_simulate(args: argparse.Namespace) -> int:
    from .simulate import simulate_survey

    if args.cubes_h5:
        from .scale import simulate_cubes_h5

        n = simulate_cubes_h5(args.out, args.n_galaxies, args.seed, anomaly_fraction=args.anomaly_fraction, threads=args.threads)
        print(f"wrote {n} emission-line cubes to {args.out}")
        return 0
    gals = simulate_survey(
        args.out,
        args.n_galaxies,
        args.seed,
        drpver=args.drpver,
        anomaly_fraction=args.anomaly_fraction,
        threads=args.threads,
    )
    n_anom = sum(bool(g.anomaly) for g in gals)
    print(f"wrote {len(gals)} LOGCUBEs ({n_anom} with injected anomalies) under {args.out}/{args.drpver}/")
    return 0


def _cmd_extract(args: argparse.Namespace) -> int:
    from .extract import TooManyRejects, extract_to_h5, requests_from_drpall
    from .formats import CubeLayout, load_lines

    lines = load_lines(args.lines)
    reqs, pre_rejects = requests_from_drpall(args.drpall, args.cubes)
    for r in pre_rejects:
        print(f"rejected {r['path']}: {r['reason']}", file=sys.stderr)
    layout = CubeLayout(len(lines), args.window_bins, args.crop)
    try:
        s = extract_to_h5(
            reqs,
            args.out,
            lines,
            layout,
            drpver=args.drpver,
            compression=args.compression,
            threads=args.threads,
            max_reject_fraction=args.max_reject_fraction,
            label=Path(args.out).stem,
        )
    except TooManyRejects as e:
        print(f"error: {e}", file=sys.stderr)
        return 3
    if pre_rejects:
        import pandas as pd

        rej_path = Path(args.out).with_name(Path(args.out).name.removesuffix(".h5") + ".rejects.csv")
        old = pd.read_csv(rej_path, dtype=str, keep_default_na=False)
        from .formats import write_csv_atomic

        write_csv_atomic(pd.concat([pd.DataFrame(pre_rejects), old], ignore_index=True), rej_path)
    for r in s.rejects:
        print(f"rejected {r['plateifu']}: {r['reason']}", file=sys.stderr)
    print(f"{args.out}: {s.extracted} extracted, {s.rejected + len(pre_rejects)} rejected, {s.seconds:.1f} s")
    return 0 if s.extracted else 2


def _cmd_neighbors(args: argparse.Namespace) -> int:
    from .neighbors import UnknownGalaxy, format_table, neighbors_table

    try:
        table = neighbors_table(args.plateifu, k=args.k, model=args.model, space=args.space, results=args.results)
    except UnknownGalaxy as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except FileNotFoundError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(table))
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    p = argparse.ArgumentParser(prog="linecube", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"linecube {__version__}")
    sub = p.add_subparsers(dest="command", required=True)

    s = sub.add_parser("simulate", help="write a synthetic survey in the real MaNGA DR17 formats")
    s.add_argument("--out", required=True, help="output redux_dir (SAS layout below it)")
    s.add_argument("--n-galaxies", type=int, required=True)
    s.add_argument("--seed", type=int, default=42)
    s.add_argument("--drpver", default="v3_1_1")
    s.add_argument("--anomaly-fraction", type=float, default=0.06)
    s.add_argument("--threads", type=int, default=1)
    s.add_argument(
        "--cubes-h5",
        action="store_true",
        help="scale mode: write emission-line cubes straight into the cubes.h5 layout at --out (no LOGCUBEs)",
    )
    s.set_defaults(func=_cmd_simulate)

    e = sub.add_parser("extract", help="cut LOGCUBEs down to emission-line windows (cubes.h5 layout)")
    e.add_argument("--drpall", required=True, help="drpall FITS with z, objra, objdec of each cube")
    e.add_argument("--out", required=True, help="output HDF5 (rejects go to <stem>.rejects.csv)")
    e.add_argument("cubes", nargs="+", help="manga-PLATE-IFU-LOGCUBE.fits.gz files")
    e.add_argument("--lines", default=None, help="emission-line CSV (default: the packaged 19 lines)")
    e.add_argument("--window-bins", type=int, default=10)
    e.add_argument("--crop", type=int, default=32)
    e.add_argument("--drpver", default="v3_1_1")
    e.add_argument("--compression", default="lzf", choices=["none", "lzf", "gzip"])
    e.add_argument("--threads", type=int, default=1)
    e.add_argument("--max-reject-fraction", type=float, default=1.0)
    e.set_defaults(func=_cmd_extract)

    n = sub.add_parser("neighbors", help="nearest neighbours of a galaxy in the UMAP or PCA space")
    n.add_argument("plateifu")
    n.add_argument("-k", type=int, default=5)
    n.add_argument("--model", default="ae", choices=["ae", "vae"])
    n.add_argument("--space", default="umap", choices=["umap", "pca"])
    n.add_argument("--results", default="results", help="the workflow's results directory")
    n.set_defaults(func=_cmd_neighbors)
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
