"""`temdefect predict`: run a model on micrographs and write probability, confidence and mask.

For every IMAGE it writes, into --out::

    <stem>_probability.tif   float32, one channel (page) per class, in [0, 1]
    <stem>_confidence.tif    float32 in [0, 1] (definition: docs/inference.md)
    <stem>_mask.tif          uint8 class map: 0 background, k = class k

each carrying the input's pixel size (ImageJ calibration, nm). Nothing is overwritten without
--overwrite; every output name is checked before the first image is processed.
"""

from __future__ import annotations

import sys
from pathlib import Path
from ._options import add_inference_options

OUTPUTS = ("probability", "confidence", "mask")


def add_parser(sub):
    p = sub.add_parser(
        "predict", help="run a model on micrographs; write probability, confidence and mask TIFFs",
        description="Run a model on one or more micrographs and write <stem>_probability.tif, "
                    "<stem>_confidence.tif and <stem>_mask.tif into --out.",
    )
    p.add_argument("images", nargs="+", metavar="IMAGE", help="micrograph files (tif, dm3, mrc…)")
    p.add_argument("--model", "-m", default=None, metavar="NAME_OR_PATH",
                   help="bundled model name (see `temdefect models`) or .safetensors checkpoint "
                        "(default: the default bundled model)")
    p.add_argument("--out", "-o", required=True, metavar="DIR", help="output folder")
    add_inference_options(p)
    p.add_argument("--overwrite", action="store_true", help="replace existing output files")
    p.add_argument("--quiet", "-q", action="store_true", help="print nothing but errors")
    p.set_defaults(func=run)
    return p


def output_paths(out_dir: Path, image: Path) -> dict[str, Path]:
    return {kind: out_dir / f"{image.stem}_{kind}.tif" for kind in OUTPUTS}


def _check_plan(images: list[Path], out_dir: Path, overwrite: bool) -> None:
    from ..errors import TemDefectError

    seen: dict[str, Path] = {}
    for image in images:
        if not image.exists():
            raise TemDefectError(f"{image} does not exist; check the path and file name.")
        if image.stem in seen:
            raise TemDefectError(
                f"{seen[image.stem]} and {image} would write the same output names; "
                "process them into different --out folders."
            )
        seen[image.stem] = image
        if not overwrite:
            for path in output_paths(out_dir, image).values():
                if path.exists():
                    raise TemDefectError(
                        f"{path} already exists; pass --overwrite or choose another --out folder."
                    )
    if out_dir.exists() and not out_dir.is_dir():
        raise TemDefectError(f"--out {out_dir} is a file; give a folder.")


def _progress_printer(name: str, enabled: bool):
    if not enabled:
        return None

    def show(done, total):
        end = "\n" if done == total else ""
        print(f"\r{name}: tile batch {done}/{total}", end=end, file=sys.stderr, flush=True)

    return show


def run(args) -> int:
    from ..errors import TemDefectError
    from ..io import model_tags, read_image, threshold_tags, write_tiff
    from ..models import default_model_name, load_model
    from ..inference import predict, scale_mismatch

    images = [Path(p) for p in args.images]
    out_dir = Path(args.out)
    _check_plan(images, out_dir, args.overwrite)
    name = args.model or default_model_name()
    if name is None:
        raise TemDefectError("No bundled model is installed; pass --model PATH.safetensors.")
    model = load_model(name, device=args.device)
    out_dir.mkdir(parents=True, exist_ok=True)
    live = not args.quiet and sys.stderr.isatty()
    for image in images:
        micrograph = read_image(image)
        mismatch = scale_mismatch(model.spec.pixel_size_nm, micrograph.pixel_size_nm)
        if mismatch and not args.quiet:
            print(f"temdefect: note: {image.name}: {mismatch}", file=sys.stderr)
        result = predict(model, micrograph.data, tile=args.tile, overlap=args.overlap,
                         tta=args.tta, threshold=args.threshold, device=args.device,
                         batch_size=args.batch_size, invert=args.invert,
                         progress=_progress_printer(image.name, live))
        paths = output_paths(out_dir, image)
        probability = result.probability[0] if result.probability.shape[0] == 1 \
            else result.probability
        px = micrograph.pixel_size_nm
        write_tiff(paths["probability"], probability, pixel_size_nm=px, overwrite=args.overwrite,
                   tags=threshold_tags(result.threshold, model.name, model.spec.classes,
                                   model.split_touching))
        write_tiff(paths["confidence"], result.confidence, pixel_size_nm=px,
                   overwrite=args.overwrite)
        write_tiff(paths["mask"], result.mask, pixel_size_nm=px, overwrite=args.overwrite,
                   tags=model_tags(model.name, model.spec.classes, model.split_touching))
        if not args.quiet:
            share = 100.0 * float((result.mask > 0).mean())
            calib = f"{px:g} nm/px" if px else "uncalibrated"
            print(f"{image.name}: {result.summary()}; {share:.2f}% defect pixels ({calib}) "
                  f"-> {paths['mask'].parent}/{image.stem}_*.tif")
    return 0
