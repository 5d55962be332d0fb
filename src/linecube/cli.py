"""The ``linecube`` command line.

Heavy modules (TensorFlow, Keras, umap) are imported only inside the subcommands
that need them, so ``linecube extract`` starts in well under a second.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

from linecube.config import defaults, schema_bounds, schema_enum
from linecube.io.formats import PRODUCT_ATTR, REJECTS_HEADER, shown

#: disk per simulated galaxy (bytes), measured on the bundled sample's IFU mix:
#: 1.4 GB of LOGCUBEs for 100 galaxies; scale mode ~1.75 MB per cube in cubes.h5
BYTES_PER_LOGCUBE = 15e6
BYTES_PER_SCALE_CUBE = 1.8e6


def check_simulate_args(args: argparse.Namespace) -> Path:
    """Bounds of the schema, an --out that is not a file or an existing survey,
    and enough free disk (estimated), all before any work."""
    import shutil

    if not 1 <= args.n_galaxies <= 100_000:
        raise UsageError(f"--n-galaxies: must be between 1 and 100000, got {args.n_galaxies}")
    for opt, value, (lo, hi) in (
        ("--seed", args.seed, schema_bounds("simulate", "seed")),
        ("--anomaly-fraction", args.anomaly_fraction, schema_bounds("simulate", "anomaly_fraction")),
    ):
        if not lo <= value <= hi:
            want = f">= {lo:g}" if hi == float("inf") else f"between {lo:g} and {hi:g}"
            raise UsageError(f"{opt}: must be {want}, got {value}")
    if args.threads < 1:
        raise UsageError(f"--threads: must be at least 1, got {args.threads}")
    check_drpver(args.drpver)
    out = Path(args.out)
    if args.cubes_h5:
        if out.is_dir():
            raise UsageError(f"{out}: --out is a directory; scale mode writes one HDF5 file (e.g. {out}/cubes.h5)")
        if out.exists():
            raise UsageError(f"{out}: exists; refusing to replace it (remove it or choose another name)")
        need, where = args.n_galaxies * BYTES_PER_SCALE_CUBE, out.parent
    else:
        if out.exists() and not out.is_dir():
            raise UsageError(f"{out}: --out is a file; give the folder to write the survey under (a redux_dir)")
        if (out / args.drpver).exists() and any((out / args.drpver).iterdir()):
            raise UsageError(
                f"{out}: already holds a survey ({out / args.drpver}); a new one would leave old cubes beside a new "
                "drpall. Remove it or choose an empty folder"
            )
        need, where = args.n_galaxies * BYTES_PER_LOGCUBE, out
    probe = where
    while not probe.exists() and probe != probe.parent:
        probe = probe.parent
    if not os.access(probe, os.W_OK):
        raise UsageError(f"{probe}: not writable")
    free = shutil.disk_usage(probe).free
    if need > free:
        raise UsageError(f"{out}: the survey needs about {_size(need)} but {probe} has {_size(free)} free")
    return out


def _size(n: float) -> str:
    """Bytes for a person: 3.2 GB, 41 MB, 12 kB."""
    for unit, f in (("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= f:
            return f"{n / f:.1f} {unit}"
    return f"{int(n)} bytes"


def check_drpver(drpver: str) -> None:
    """--drpver is a DRP version (v3_1_1), a folder name under --out: never a path."""
    import re

    from linecube.config import _schema

    pattern = _schema()["properties"]["data"]["properties"]["drpver"]["pattern"]
    if not re.match(pattern, drpver or ""):
        raise UsageError(f"--drpver: {drpver!r} is not a DRP version like v3_1_1 (it names a folder under --out, never a path)")


def _cmd_simulate(args: argparse.Namespace) -> int:
    from linecube.simulate import simulate_survey

    check_simulate_args(args)
    if args.cubes_h5:
        from linecube.simulate import simulate_cubes_h5

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


class UsageError(Exception):
    """A bad argument or input file: printed as one ``error: ...`` line."""


def check_regular_input(path, flag: str) -> None:
    """An input file given on the command line is a regular file (a FIFO, a device
    or a folder would hang or fail deep inside); a missing one is reported where read."""
    import stat

    if path is None:
        return
    try:
        mode = os.stat(path).st_mode
    except OSError:
        return
    if not stat.S_ISREG(mode):
        raise UsageError(f"{flag}: {shown(path)} is not a regular file (a folder, FIFO or device); give the file itself")


def check_extract_out(out: str | os.PathLike, inputs: list[str | os.PathLike]) -> Path:
    """Refuse an ``--out`` that would overwrite an input (a LOGCUBE, the drpall), a
    directory, or an existing file that is not a cubes.h5 written by linecube;
    check its folder is writable before any work."""
    out = Path(out)
    if out.is_dir():
        raise UsageError(f"{out}: --out is a directory; give the HDF5 file to write (e.g. {out}/cubes.h5)")
    for i in inputs:
        if _same(out, i):
            raise UsageError(f"{out}: --out is one of the inputs; it would be overwritten (forgot the output name?)")
    if not out.name.endswith(".h5") or out.name == ".h5":
        # the rejects file is <stem>.rejects.csv: with the suffix required, two outputs never share one
        raise UsageError(f"{out}: --out must be an HDF5 file named *.h5 (its rejects go to <name>.rejects.csv)")
    if out.exists() and not _is_our_h5(out):
        raise UsageError(
            f"{out}: exists and is not a cubes.h5 file written by linecube (no {PRODUCT_ATTR}='cubes' attribute); "
            "refusing to replace it"
        )
    from linecube.data.extract_survey import rejects_path

    for side in (
        rejects_path(out),
        rejects_path(out).with_name(rejects_path(out).name.replace(".rejects.csv", ".rejects.failed.csv")),
    ):
        for i in inputs:
            if _same(side, i):
                raise UsageError(f"{side}: the rejects file of --out {out} would overwrite the input {i}; choose another --out")
        if side.is_dir():
            raise UsageError(f"{side}: the rejects file of --out {out} is a directory; choose another --out")
        if side.exists() and not _is_our_rejects(side):
            raise UsageError(
                f"{side}: the rejects file of --out {out} exists and was not written by linecube "
                f"(its first line is not {REJECTS_HEADER!r}); refusing to replace it"
            )
    parent = out.parent if str(out.parent) else Path(".")
    if not parent.exists():
        raise UsageError(f"{parent}: the output folder does not exist")
    try:  # a real write test: permissions, read-only mounts, /proc and the like
        import tempfile

        with tempfile.NamedTemporaryFile(dir=parent, prefix=f".{out.name}.", suffix=".probe"):
            pass
    except OSError as e:
        raise UsageError(f"{parent}: cannot write the output there ({e.strerror or e})") from None
    return out


def _same(a: Path, b) -> bool:
    """Whether two paths name one file (also through links); odd inputs (a symlink
    loop, a name that cannot be resolved) are never the same as an output."""
    try:
        b = Path(b)
        if a.exists() and b.exists():
            return os.path.samefile(a, b)
        return a.resolve() == b.resolve()
    except (OSError, RuntimeError, ValueError):
        return False


def _is_our_h5(path: Path) -> bool:
    """A cubes.h5 linecube wrote: its root attribute ``linecube_product`` is "cubes"
    (latents.h5, reconstructions.h5 and files of other tools are not)."""
    try:
        import h5py

        with h5py.File(path, "r") as h5:
            return str(h5.attrs.get(PRODUCT_ATTR, "")) == "cubes"
    except Exception:
        return False


def _is_our_rejects(path: Path) -> bool:
    """A rejects file linecube wrote: a regular file whose first line is :data:`REJECTS_HEADER`."""
    try:
        with open(path, "rb") as f:
            return path.is_file() and f.readline().rstrip(b"\r\n") == REJECTS_HEADER.encode()
    except OSError:
        return False


def _cmd_extract(args: argparse.Namespace) -> int:
    from linecube.data.extract import ExtractOptions
    from linecube.data.extract_survey import NothingExtracted, TooManyRejects, extract_to_h5
    from linecube.io.atomic import Busy
    from linecube.io.drpall import DuplicateCubes, requests_from_drpall
    from linecube.io.formats import CubeLayout, load_lines

    check_regular_input(args.drpall, "--drpall")
    check_regular_input(args.lines, "--lines")
    out = check_extract_out(args.out, [args.drpall, *args.cubes])
    check_drpver(args.drpver)
    for name, v, (lo, hi) in (
        ("--window-bins", args.window_bins, schema_bounds("extract", "window_bins")),
        ("--crop", args.crop, schema_bounds("extract", "crop")),
        ("--threads", args.threads, (1, 256)),
    ):
        if not lo <= v <= hi:
            raise UsageError(f"{name}: must be between {lo} and {hi} (the configuration schema's bounds), got {v}")
    if not 0 <= args.max_reject_fraction <= 1:
        raise UsageError(f"--max-reject-fraction: must be between 0 and 1, got {args.max_reject_fraction}")
    try:
        lines = load_lines(args.lines)
    except (OSError, ValueError, KeyError) as e:
        raise UsageError(f"{args.lines}: not a usable emission-line list ({e})") from None
    try:
        reqs, pre_rejects = requests_from_drpall(args.drpall, args.cubes)
    except DuplicateCubes as e:
        raise UsageError(str(e)) from None
    except (OSError, ValueError, KeyError, TypeError) as e:
        msg = str(e)
        raise UsageError(msg if args.drpall in msg else f"{args.drpall}: {msg}") from None
    for r in pre_rejects:
        print(shown(f"rejected {r['path']}: {r['reason']}"), file=sys.stderr)
    layout = CubeLayout(len(lines), args.window_bins, args.crop)
    try:
        opts = {k: getattr(args, k) for k in ("drpver", "compression", "threads", "max_reject_fraction")}
        xopts = ExtractOptions.from_config({"galactic_extinction": args.galactic_extinction})
        s = extract_to_h5(
            reqs, out, lines, layout, label=out.stem, pre_rejects=pre_rejects, allow_empty=False, options=xopts, **opts
        )
    except Busy as e:
        raise UsageError(str(e)) from None
    except TooManyRejects as e:
        first, _, reasons = str(e).partition("\n")
        for line in reasons.splitlines():
            print(shown(f"rejected {line.strip()}"), file=sys.stderr)
        print(f"error: {first.removesuffix(':')}", file=sys.stderr)
        return 3
    except NothingExtracted as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    for r in s.rejects[len(pre_rejects) :]:
        print(shown(f"rejected {r['plateifu']}: {r['reason']}"), file=sys.stderr)
    print(shown(f"{out}: {s.extracted} extracted, {s.rejected} rejected, {s.seconds:.1f} s"))
    return 0 if s.extracted else 2


def _cmd_neighbors(args: argparse.Namespace) -> int:
    from linecube.analysis.neighbors import BadResultsFile, UnknownGalaxy, format_table, neighbors_table

    try:
        table = neighbors_table(args.plateifu, k=args.k, model=args.model, space=args.space, results=args.results)
    except (UnknownGalaxy, FileNotFoundError, BadResultsFile) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(format_table(table))
    return 0


def _cmd_rerank(args: argparse.Namespace) -> int:
    from linecube.analysis.rerank import BadLabels, rerank_files

    check_regular_input(args.labels, "--labels")
    try:
        path, out = rerank_files(args.results, args.model, args.labels, weight=args.weight, k=args.k)
    except BadLabels as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    counts = out["label"].value_counts()
    used = ", ".join(f"{counts[lab]} {lab}" for lab in ("interesting", "not interesting", "artefact") if lab in counts)
    print(f"{path}: {len(out)} galaxies reranked with {used or 'no labels'}")
    if out.attrs.get("unknown_labels"):
        print(f"note: {out.attrs['unknown_labels']} labelled galaxies are not in {args.model}'s scores.csv", file=sys.stderr)
    moved = out[(out["label"] == "") & (out["rank"] <= args.show)]
    for _, r in moved.iterrows():
        print(f"  rank {int(r['rank']):>4} (was {int(r['rank_before']):>4})  {r['plateifu']}")
    return 0


def _cmd_score(args: argparse.Namespace) -> int:
    from linecube.analysis.newcubes import CannotScore, score_cubes, write_scores
    from linecube.run import Run, RunError

    check_regular_input(args.drpall, "--drpall")
    if not str(args.out).endswith(".csv"):
        raise UsageError(f"{args.out}: --out must be a CSV file (*.csv); the latents go beside it")
    try:
        Run(args.run)  # a finished run, or a clear error naming what is missing
        table, latents, rejects = score_cubes(args.run, args.cubes, model=args.model, drpall=args.drpall, k=args.k)
        for r in rejects:
            print(shown(f"rejected {r['path']}: {r['reason']}"), file=sys.stderr)
        if not len(table):
            print("error: no cube could be scored (reasons above)", file=sys.stderr)
            return 2
        lat = write_scores(table, latents, args.out, args.run)
    except (RunError, CannotScore) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{args.out}: {len(table)} cube(s) scored against the run's {args.model} (latents: {lat})")
    for r in table.itertuples():
        print(f"  {r.plateifu}: score {r.score:.3g}, percentile {r.percentile:.1f}, {r.explain_line}; neighbours {r.neighbors}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from linecube import __version__

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
    e.add_argument(
        "--galactic-extinction",
        default=defaults("extract")["galactic_extinction"],
        choices=schema_enum("extract", "galactic_extinction"),
        help="Milky Way extinction law applied with each cube's EBVGAL (none: the DRP's uncorrected flux)",
    )
    e.set_defaults(func=_cmd_extract)

    n = sub.add_parser("neighbors", help="nearest neighbours of a galaxy in the UMAP or PCA space")
    n.add_argument("plateifu")
    n.add_argument("-k", type=int, default=5)
    n.add_argument("--model", default="ae", choices=["ae", "vae"])
    n.add_argument("--space", default="umap", choices=["umap", "pca"])
    n.add_argument("--results", default="results", help="the workflow's results directory")
    n.set_defaults(func=_cmd_neighbors)

    sc = sub.add_parser("score", help="score new LOGCUBEs against a finished run (its model, scalers and galaxies)")
    sc.add_argument("cubes", nargs="+", help="manga-PLATE-IFU-LOGCUBE.fits.gz files")
    sc.add_argument("--run", default=".", help="the folder the workflow ran in (holding results/)")
    sc.add_argument("--model", default="ae", choices=["ae", "vae"])
    sc.add_argument("--out", required=True, help="CSV to write (never inside the run); latents to <stem>.latents.h5")
    sc.add_argument("--drpall", default=None, help="drpall with the cubes' z and position (default: the run's)")
    sc.add_argument("-k", type=int, default=5, help="neighbours among the run's galaxies")
    sc.set_defaults(func=_cmd_score)

    r = sub.add_parser("rerank", help="reorder a model's ranking with the explorer's labels -> scores_ranked.csv")
    r.add_argument("--labels", required=True, help="labels.csv exported from the explorer (plateifu,label,model,score)")
    r.add_argument("--model", default="ae", choices=["ae", "vae"])
    r.add_argument("--results", default="results", help="the workflow's results directory")
    r.add_argument("--weight", type=float, default=1.0, help="largest shift of a neighbour's score, in standard deviations")
    r.add_argument("-k", type=int, default=5, help="kernel width: the median distance to the k-th neighbour")
    r.add_argument("--show", type=int, default=10, help="print the unlabelled galaxies now in this top N")
    r.set_defaults(func=_cmd_rerank)
    return p


def _end_progress_bars() -> None:
    """Close progress bars still open (an error or Ctrl-C inside a stage), so the
    ``error:`` line is the last line on stderr, not a bar's fragment."""
    tq = sys.modules.get("tqdm")
    if tq is None:
        return
    for bar in list(getattr(tq.tqdm, "_instances", ())):
        try:
            bar.close()
        except Exception:  # noqa: BLE001 - closing is best effort
            pass


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except UsageError as e:
        _end_progress_bars()
        print(shown(f"error: {e}"), file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        _end_progress_bars()
        print("error: interrupted", file=sys.stderr)
        return 130
    except Exception as e:  # one line for the user; LINECUBE_DEBUG=1 shows the traceback
        _end_progress_bars()
        if os.environ.get("LINECUBE_DEBUG", "").strip().lower() not in ("", "0", "false", "no", "off"):
            raise
        where = getattr(e, "filename", None)
        msg = f"{where}: {e.strerror}" if isinstance(e, OSError) and where and e.strerror else str(e) or type(e).__name__
        print(shown(f"error: {msg} (set LINECUBE_DEBUG=1 for the traceback)"), file=sys.stderr)
        if argv is None and isinstance(e, OSError) and e.errno in (28, 27, 122):
            # a write HDF5 could not finish leaves objects that crash the interpreter's
            # teardown: end here, with the error line as the last word
            sys.stderr.flush()
            sys.stdout.flush()
            os._exit(1)
        return 1


if __name__ == "__main__":
    sys.exit(main())
