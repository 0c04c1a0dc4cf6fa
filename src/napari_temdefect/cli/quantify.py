"""`temdefect quantify`: per-object and summary CSVs from masks, labels or probability maps.

Each input is read with :func:`napari_temdefect.io.read_image`; its calibration gives the pixel
size unless --pixel-size is given. A ``<stem>_confidence.tif`` written by `temdefect predict`
beside a ``<stem>_probability.tif`` or ``<stem>_mask.tif`` input fills ``mean_confidence``.
Both outputs are checked before any work, and never overwritten without --overwrite.
"""

from __future__ import annotations

import argparse

import sys
from pathlib import Path

_PREDICT_SUFFIXES = ("_probability", "_mask", "_labels")


def add_parser(sub):
    p = sub.add_parser(
        "quantify", help="measure defects in masks or probability maps; write object and "
                         "summary CSVs",
        description="Label and measure the defects in one or more masks, instance-label "
                    "images or probability maps, and write one CSV row per object (--out) and "
                    "one per image (--summary). Units are nm from the file's calibration or "
                    "--pixel-size; uncalibrated inputs are reported in pixels (_px columns).",
    )
    add_measure_arguments(p, kind_required=False)
    p.add_argument("inputs", nargs="+", metavar="MASK_OR_PROBABILITY",
                   help="mask (0/1 or 0/255), instance labels, or probability map (0..1) files")
    p.add_argument("--out", "-o", required=True, metavar="OBJECTS.csv",
                   help="per-object CSV to write")
    p.add_argument("--summary", default=None, metavar="SUMMARY.csv",
                   help="per-image summary CSV (default: <out stem>_summary.csv beside --out)")
    p.add_argument("--class", dest="class_index", type=int, default=None, metavar="K",
                   help="for a multi-class model's output: measure class K (1-based, in the "
                        "order `temdefect models` lists): page K of a probability stack, or "
                        "pixels equal to K in a class mask")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--quiet", "-q", action="store_true", help="do not print the summary table")
    p.set_defaults(func=run)
    return p


def add_measure_arguments(p, kind_required: bool = True):
    """Options shared with `temdefect evaluate`."""
    p.add_argument("--kind", "-k", required=kind_required, default=None,
                   choices=("blobs", "lines", "grains"),
                   help="blobs (bubbles, voids, loops), lines (dislocations, boundaries) or "
                        "grains (regions enclosed by a boundary mask)" + ("" if kind_required
                        else "; default: what the classes recorded by `temdefect predict` / "
                             "`analyze` in the file say (boundary → grains, bubble → blobs, "
                             "dislocation → lines)"))
    p.add_argument("--pixel-size", type=float, default=None, metavar="NM",
                   help="nm per pixel (default: from each file's calibration; none: pixels)")
    p.add_argument("--thickness", type=float, default=None, metavar="NM",
                   help="foil thickness in nm: adds the dislocation density L/(A·t) in m⁻² "
                        "(lines)")
    p.add_argument("--min-size", type=int, default=None, metavar="PX",
                   help="drop smaller objects: area in px (blobs, grains) or skeleton length "
                        "in px (lines) (default: 5, 5, 20)")
    p.add_argument("--threshold", type=float, default=None, metavar="T",
                   help="probability above which a pixel is a defect (default: the threshold "
                        "recorded in a probability map by `temdefect predict`, i.e. the "
                        "model's, else 0.5)")
    p.add_argument("--split", action=argparse.BooleanOptionalAction, default=None,
                   help="split touching blobs with a distance-transform watershed, so two "
                        "touching bubbles count as two (blobs; default: what the model that "
                        "made the file records, as `temdefect predict` / `analyze` wrote it: "
                        "the bundled bubble model splits; else no split)")
    p.add_argument("--gap", type=int, default=None, metavar="PX",
                   help="bridge boundary gaps up to about 2×PX wide (grains; default 2)")


def measure_kwargs(args, recorded: float | None = None, micrograph=None) -> dict:
    """quantify()'s keyword arguments from the measure options; the threshold is --threshold,
    else ``recorded`` (the one a probability map records), else 0.5; touching blobs are split
    when --split says so, else when the file's model asked for it (``micrograph``'s tags)."""
    from ..io import map_split_touching

    threshold = args.threshold if args.threshold is not None else \
        recorded if recorded is not None else 0.5
    split = args.split if args.split is not None else \
        micrograph is not None and map_split_touching(micrograph)
    return dict(thickness_nm=args.thickness, min_size_px=args.min_size,
                threshold=threshold, split_touching=split, gap_px=args.gap)


def image_name(path: Path) -> str:
    stem = path.stem
    for suffix in _PREDICT_SUFFIXES:
        if stem.endswith(suffix) and len(stem) > len(suffix):
            return stem[: -len(suffix)]
    return stem


def unique_names(paths) -> list[str]:
    """The image name of each prediction (``x_mask.tif`` → ``x``), with its folder added where
    two share one (``e1/x_mask.tif``, ``e2/x_mask.tif`` → ``e1__x``, ``e2__x``: two models on
    one image), then a counter, so rows and overlay files never collide."""
    from collections import Counter

    names = [image_name(p) for p in paths]
    counts = Counter(names)
    names = [f"{p.parent.name}__{n}" if counts[n] > 1 and p.parent.name else n
             for p, n in zip(paths, names)]
    seen: dict[str, int] = {}
    out = []
    for n in names:
        seen[n] = seen.get(n, 0) + 1
        out.append(n if seen[n] == 1 else f"{n}-{seen[n]}")
    return out


def select_class(data, class_index: int | None, name: str, classes=None):
    """The 2D map of one class: page K of a (C, H, W) probability stack (zero where another
    class is more probable), or ``data == K`` of a class mask; ``data`` itself when no class
    is asked for and it is 2D. ``classes``: the model classes the file records; a class mask
    of several needs ``class_index``."""
    import numpy as np

    from ..errors import TemDefectError

    if class_index is not None and class_index < 1:
        raise TemDefectError(f"--class counts from 1 (got {class_index}).")
    if data.ndim == 3:
        if class_index is None:
            raise TemDefectError(
                f"{name} holds {data.shape[0]} pages; quantify one 2D mask or probability map "
                "per file, or pick the class page of a multi-class probability stack with "
                "--class K.")
        if class_index > data.shape[0]:
            raise TemDefectError(f"{name} has {data.shape[0]} class pages; --class "
                                 f"{class_index} is out of range (1..{data.shape[0]}).")
        page = np.asarray(data[class_index - 1])
        if data.shape[0] > 1 and np.issubdtype(page.dtype, np.floating):
            # predict's rule: a pixel belongs to the class with the highest probability, so
            # no pixel is counted in two classes and the mask is the one analyze measures
            page = np.where(np.argmax(data, axis=0) == class_index - 1, page, 0)
        return page
    if class_index is None:
        if len(classes or []) > 1 and np.issubdtype(data.dtype, np.integer):
            raise TemDefectError(
                f"{name} is a class mask of {len(classes)} classes ({', '.join(classes)}); "
                f"its values are class numbers, not objects, so pick one with --class K "
                f"(1..{len(classes)}).")
        return data
    if np.issubdtype(data.dtype, np.floating) and data.max(initial=0) <= 1.0:
        raise TemDefectError(
            f"{name} is a single-class probability map; --class applies to multi-class "
            "stacks and class masks, so leave it out.")
    return np.asarray(data) == class_index


def read_input(path: Path, pixel_size_nm: float | None, class_index: int | None = None):
    """(data, pixel size in nm or None, confidence or None, recorded threshold or None) of one
    input file; the threshold is the one `temdefect predict` cut a probability map at."""
    return read_input_with_file(path, pixel_size_nm, class_index)[:4]


def recorded_kind(micrograph, class_index: int | None, name: str) -> str:
    """The kind that the classes `temdefect predict` recorded in a file imply, or one sentence
    asking for --kind."""
    from ..constants import kind_for_class
    from ..errors import TemDefectError
    from ..io import map_classes

    classes = map_classes(micrograph) or []
    k = (class_index or 1) - 1
    cls = classes[k] if k < len(classes) else None
    kind = kind_for_class(cls)
    if kind is None:
        what = f"records the class {cls!r}, which" if cls else "records no model class, so it"
        raise TemDefectError(f"{name} {what} does not say what to measure; pass --kind blobs, "
                             "lines or grains.")
    return kind


def read_input_with_file(path: Path, pixel_size_nm: float | None,
                         class_index: int | None = None):
    """:func:`read_input` and the Micrograph it was read from (for its recorded tags)."""
    from ..errors import TemDefectError
    from ..io import map_classes, map_threshold, read_image
    from ..preprocess import COLOUR_NOTE

    micrograph = read_image(path)
    if any(str(n).startswith(COLOUR_NOTE) for n in micrograph.metadata.get("notes", []) or []):
        raise TemDefectError(
            f"{path.name} is a colour image, not a mask; save the annotation as a greyscale "
            "0/255 mask or a label image (one grey value per object), or give the "
            "probability map that `temdefect predict` wrote.")
    if micrograph.data.ndim > 3:
        raise TemDefectError(f"{path.name} has shape {micrograph.data.shape}; quantify one 2D "
                             "mask or probability map per file.")
    data = select_class(micrograph.data, class_index, path.name, map_classes(micrograph))
    px = pixel_size_nm if pixel_size_nm is not None else micrograph.pixel_size_nm
    confidence = None
    if path.stem.endswith(_PREDICT_SUFFIXES[:2]):
        sibling = path.with_name(f"{image_name(path)}_confidence{path.suffix}")
        if sibling.exists():
            confidence = read_image(sibling).data
    return data, px, confidence, map_threshold(micrograph), micrograph



def check_consistent_calibration(names_and_px):
    from ..errors import TemDefectError

    calibrated = [n for n, px in names_and_px if px is not None]
    uncalibrated = [n for n, px in names_and_px if px is None]
    if calibrated and uncalibrated:
        raise TemDefectError(
            f"{uncalibrated[0]} has no pixel size but {calibrated[0]} has one, so their tables "
            "would mix pixels and nm; pass --pixel-size or quantify them separately.")


def run(args) -> int:
    import pandas as pd

    from ..errors import TemDefectError
    from ..files import check_writable
    from ..io import non_square_note
    from ..quantify import quantify, write_csv

    out = Path(args.out)
    summary_path = Path(args.summary) if args.summary else out.with_name(
        f"{out.stem}_summary{out.suffix or '.csv'}")
    if out.resolve() == summary_path.resolve():
        raise TemDefectError("--out and --summary are the same file; give two names.")
    check_writable(out, args.overwrite)
    check_writable(summary_path, args.overwrite)
    inputs = [Path(p) for p in args.inputs]
    for path in inputs:
        if not path.exists():
            raise TemDefectError(f"{path} does not exist; check the path and file name.")

    results, seen, kinds = [], [], set()
    for path, name in zip(inputs, unique_names(inputs)):
        data, px, confidence, recorded, micrograph = read_input_with_file(path, args.pixel_size,
                                                                 args.class_index)
        shape_note = non_square_note(micrograph)
        if shape_note:
            print(f"temdefect: note: {path.name}: {shape_note}.", file=sys.stderr)
        seen.append((path.name, px))
        check_consistent_calibration(seen)
        kind = args.kind or recorded_kind(micrograph, args.class_index, path.name)
        kinds.add(kind)
        if len(kinds) > 1:
            raise TemDefectError(f"{path.name} records a {kind} model but an earlier input "
                                 "another kind; pass --kind, or quantify them separately.")
        results.append(quantify(data, kind, px, confidence=confidence,
                                image_name=name,
                                **measure_kwargs(args, recorded, micrograph)))
    objects = pd.concat([r.objects for r in results], ignore_index=True)
    summary = pd.concat([r.summary for r in results], ignore_index=True)
    write_csv(objects, out, overwrite=args.overwrite)
    write_csv(summary, summary_path, overwrite=args.overwrite)
    for r in results:
        for note in r.notes:
            print(f"temdefect: note: {r.summary['image'].iloc[0]}: {note}", file=sys.stderr)
    if not args.quiet:
        if args.kind is None:
            print(f"Measured {kinds.pop()}, from the model class recorded in the input "
                  "(--kind overrides).", file=sys.stderr)
        if seen[0][1] is None:
            print("No pixel size (file calibration or --pixel-size): results are in pixels.",
                  file=sys.stderr)
        print(format_summary(summary))
        print(f"wrote {len(objects)} objects to {out} and {len(summary)} summary rows to "
              f"{summary_path}")
    return 0


def format_summary(summary) -> str:
    keep = [c for c in summary.columns if not summary[c].isna().all()]
    return summary[keep].set_index("image").T.to_string(float_format=lambda v: f"{v:.6g}")
