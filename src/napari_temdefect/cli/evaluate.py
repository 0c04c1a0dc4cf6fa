"""`temdefect evaluate`: compare predicted masks with reference annotations.

Prints, per image pair and on average, pixel F1, boundary F1, object F1 and the paper's
annotation-independent measures (object/grain counts and the distance between the size
distributions). Optionally writes the metrics CSV and confusion overlays (TP green, FP blue,
FN red) as PNG files.
"""

from __future__ import annotations

from pathlib import Path

from .quantify import (
    add_measure_arguments, check_consistent_calibration, measure_kwargs, read_input,
    read_input_with_file, recorded_kind, unique_names,
)


def add_parser(sub):
    p = sub.add_parser(
        "evaluate", help="compare predicted masks with reference masks: F1 scores, counts, "
                         "size distributions",
        description="Compare predictions with reference annotations, pairing the files in "
                    "the order given. Pixel F1, boundary F1 (tolerance --tolerance px), object "
                    "F1 (IoU ≥ --iou), object counts (grains: inside the field), and the "
                    "Kolmogorov–Smirnov and Wasserstein distances between the equivalent-"
                    "diameter distributions.",
    )
    p.add_argument("--pred", nargs="+", required=True, metavar="FILE",
                   help="predicted masks, labels or probability maps")
    p.add_argument("--truth", nargs="+", required=True, metavar="FILE",
                   help="reference masks or labels, in the same order")
    add_measure_arguments(p, kind_required=False)
    p.add_argument("--iou", type=float, default=0.5, help="IoU for an object match (default 0.5)")
    p.add_argument("--tolerance", type=float, default=3.0, metavar="PX",
                   help="distance tolerance of the boundary F1 in px (default 3; on the masks, "
                        "so line width is forgiven too)")
    p.add_argument("--out", "-o", default=None, metavar="METRICS.csv",
                   help="also write the metrics table as CSV")
    p.add_argument("--overlay-dir", default=None, metavar="DIR",
                   help="write <image>_confusion.png overlays (TP green, FP blue, FN red)")
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.set_defaults(func=run)
    return p


SHOWN = ["pixel_f1", "boundary_f1", "object_f1", "count_pred", "count_truth", "count_missed",
         "count_extra", "count_merged", "count_split", "size_ks"]


def run(args) -> int:
    import pandas as pd

    from ..errors import TemDefectError
    from ..files import atomic_write, check_writable
    from ..quantify import write_csv
    from ..quantify.compare import compare

    preds, truths = [Path(p) for p in args.pred], [Path(p) for p in args.truth]
    if len(preds) != len(truths):
        raise TemDefectError(f"{len(preds)} --pred files but {len(truths)} --truth files; give "
                             "one reference per prediction, in the same order.")
    if not 0 < args.iou <= 1:
        raise TemDefectError(f"--iou {args.iou} is not in (0, 1]; give e.g. 0.5.")
    for path in preds + truths:
        if not path.exists():
            raise TemDefectError(f"{path} does not exist; check the path and file name.")
    if args.out:
        check_writable(args.out, args.overwrite)
    overlay_dir = Path(args.overlay_dir) if args.overlay_dir else None
    names = unique_names(preds)
    if overlay_dir is not None:
        for name in names:
            check_writable(overlay_dir / f"{name}_confusion.png", args.overwrite)

    rows, seen = [], []
    for pred_path, truth_path, name in zip(preds, truths, names):
        pred, px, _, recorded, micrograph = read_input_with_file(pred_path, args.pixel_size)
        kind = args.kind or recorded_kind(micrograph, None, pred_path.name)
        truth, px_truth, _, _ = read_input(truth_path, args.pixel_size)
        px = px if px is not None else px_truth
        seen.append((pred_path.name, px))
        check_consistent_calibration(seen)
        kwargs = measure_kwargs(args, recorded, micrograph)
        kwargs.pop("thickness_nm")
        result = compare(pred, truth, kind, px, iou=args.iou, tolerance_px=args.tolerance,
                         image_name=name, **kwargs)
        rows.append(result.metrics)
        if overlay_dir is not None:
            import imageio.v3 as iio

            overlay_dir.mkdir(parents=True, exist_ok=True)
            with atomic_write(overlay_dir / f"{name}_confusion.png", args.overwrite) as tmp:
                iio.imwrite(tmp, result.overlay, extension=".png")
    table = pd.concat(rows, ignore_index=True)
    shown = table.set_index("image")[SHOWN + [c for c in table.columns
                                              if c.startswith("size_wasserstein")]]
    if len(table) > 1:
        shown.loc["mean"] = shown.mean(numeric_only=True)
    print(shown.to_string(float_format=lambda v: f"{v:.4g}"))
    if args.out:
        write_csv(table, args.out, overwrite=args.overwrite)
        print(f"wrote {args.out}")
    return 0
