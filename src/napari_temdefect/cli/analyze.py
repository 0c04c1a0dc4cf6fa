"""`temdefect analyze`: predict and quantify micrographs in one go, from one file to a cluster.

INPUT may be files, folders (their micrographs, sorted) and glob patterns. Into --out it writes,
per image, the mask/labels/probability/confidence TIFFs (zarr for montages) and the object and
summary CSVs, and for the batch one summary.csv and one objects.csv. Finished images are skipped
on a rerun unless --overwrite; a file that fails is logged (failures.csv, batch.log) and the
others go on, and the exit status is then 1. See docs/batch.md.
"""

from __future__ import annotations

import argparse

import sys

from ._options import add_inference_options


def add_parser(sub):
    p = sub.add_parser(
        "analyze", help="predict and quantify files, folders or globs; one summary CSV per batch",
        description="Predict and quantify micrographs (files, folders, globs) in one go. Writes "
                    "per-image masks and object CSVs and, for the batch, summary.csv and "
                    "objects.csv into --out. Resumable; --scheduler runs it on Dask.",
    )
    p.add_argument("inputs", nargs="+", metavar="INPUT",
                   help="micrograph files, folders of micrographs, or glob patterns (quoted); a "
                        ".zarr folder or a very large TIFF is processed block by block")
    p.add_argument("--model", "-m", default=None, metavar="NAME_OR_PATH",
                   help="bundled model name (see `temdefect models`) or .safetensors checkpoint "
                        "(default: the default bundled model)")
    p.add_argument("--kind", default=None, choices=("blobs", "lines", "grains"),
                   help="what to measure: blobs (bubbles, voids, loops, precipitates), lines "
                        "(dislocations, boundaries) or grains (default: what the model's class "
                        "says: boundary → grains, bubble → blobs, dislocation → lines; needed "
                        "for a model whose class does not say, such as generic's 'defect')")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder")
    p.add_argument("--pixel-size", type=float, default=None, metavar="NM",
                   help="nm per pixel for every image (default: each file's own calibration; "
                        "uncalibrated images are reported in pixels)")
    p.add_argument("--thickness", type=float, default=None, metavar="NM",
                   help="foil thickness in nm (lines: adds the dislocation density in m^-2)")
    p.add_argument("--min-size", type=int, default=None, metavar="PX",
                   help="drop objects smaller than this (px of area; px of length for lines)")
    p.add_argument("--split", action=argparse.BooleanOptionalAction, default=None,
                   help="blobs: split touching blobs with a watershed, so two touching bubbles "
                        "count as two (default: what the model records; the bundled bubble "
                        "model splits)")
    p.add_argument("--class", dest="class_name", default=None, metavar="NAME",
                   help="model class to quantify (default: the model's first class)")
    add_inference_options(p)
    p.add_argument("--scheduler", default=None, metavar="local[:N]|tcp://HOST:PORT",
                   help="run one Dask task per image: local:N starts N single-threaded worker "
                        "processes on this machine; tcp://HOST:PORT uses a running Dask "
                        "scheduler (e.g. from dask-jobqueue; see docs/batch.md)")
    p.add_argument("--recursive", "-r", action="store_true",
                   help="also take micrographs from sub-folders")
    p.add_argument("--no-probability", action="store_true",
                   help="do not write the probability maps (saves disk space)")
    p.add_argument("--montage-mpx", type=float, default=64.0, metavar="MPX",
                   help="TIFFs with more megapixels than this are processed block by block, "
                        "with zarr outputs (default 64, i.e. 8192x8192)")
    p.add_argument("--block", type=int, default=4096, metavar="PX",
                   help="montages: block side in px (default 4096)")
    p.add_argument("--halo", type=int, default=128, metavar="PX",
                   help="montages: overlap read around each block; objects larger than this "
                        "may be cut (default 128)")
    p.add_argument("--overwrite", action="store_true",
                   help="redo images that are already done and replace their outputs")
    p.add_argument("--quiet", "-q", action="store_true", help="no progress bar")
    p.set_defaults(func=run)
    return p


def kind_of_model(model, class_name=None) -> str:
    """The measurement a model's class implies (``--kind`` not given), or one sentence asking
    for ``--kind``. Reads the checkpoint's header only."""
    from ..constants import kind_for_class
    from ..errors import TemDefectError
    from ..models import checkpoint_path, model_classes

    name = checkpoint_path(model)[1]
    classes = model_classes(model)
    if class_name is not None and classes and class_name not in classes:
        raise TemDefectError(f"The model {name!r} has no class {class_name!r}; use one of "
                             f"{', '.join(classes)} (--class).")
    cls = class_name if class_name is not None else (classes[0] if classes else None)
    kind = kind_for_class(cls)
    if kind is None:
        raise TemDefectError(
            f"The model {name!r} (class {cls!r}) does not say what to measure; pass --kind "
            "blobs, lines or grains.")
    print(f"temdefect analyze: measuring {kind} (model {name!r}, class {cls!r}); "
          "--kind overrides", file=sys.stderr)
    return kind


def run(args) -> int:
    from ..batch import BatchSettings, run_batch
    from ..errors import TemDefectError
    from ..models import default_model_name

    model = args.model or default_model_name()
    if model is None:
        raise TemDefectError("No bundled model is installed; pass --model with the path of a "
                             ".safetensors checkpoint.")
    for value, flag in ((args.pixel_size, "--pixel-size"), (args.thickness, "--thickness")):
        if value is not None and not value > 0:
            raise TemDefectError(f"{flag} {value} is not positive; give a value in nm above 0.")
    if args.threshold is not None and not 0 < args.threshold < 1:
        raise TemDefectError(f"--threshold {args.threshold} is outside (0, 1); use e.g. 0.5.")
    if args.scheduler is not None:
        from ..batch.dask_runner import parse_scheduler

        parse_scheduler(args.scheduler)  # a typo fails before any work
    kind = args.kind or kind_of_model(model, args.class_name)
    if kind == "blobs" and args.split is None:
        from ..models import model_split_touching

        if model_split_touching(model):
            print("temdefect analyze: touching blobs are counted apart, as the model records; "
                  "--no-split counts connected components", file=sys.stderr)
    settings = BatchSettings(
        model=model, kind=kind, pixel_size_nm=args.pixel_size,
        thickness_nm=args.thickness, tile=args.tile, overlap=args.overlap, tta=args.tta,
        invert=args.invert,
        threshold=args.threshold, device=args.device, batch_size=args.batch_size,
        min_size_px=args.min_size, split_touching=args.split, class_name=args.class_name,
        save_probability=not args.no_probability, overwrite=args.overwrite,
        montage_min_pixels=int(args.montage_mpx * 1e6), block=args.block, halo=args.halo,
    )
    result = run_batch(args.inputs, args.out, settings, scheduler=args.scheduler,
                       recursive=args.recursive, progress=not args.quiet)
    for path, reason in result.ignored:
        print(f"temdefect: ignored {path}: {reason}", file=sys.stderr)
    parts = [f"{len(result.done)} done", f"{len(result.skipped)} already done (skipped)"]
    if result.failed:
        parts.append(f"{len(result.failed)} FAILED (see {result.failures_path})")
    where = f"; summary: {result.summary_path}" if result.summary_path else ""
    print(f"temdefect analyze: {', '.join(parts)} in {result.seconds:.1f} s{where}",
          file=sys.stderr)
    return 0 if result.ok else 1
