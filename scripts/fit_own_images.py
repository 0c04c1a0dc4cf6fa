"""How well do the models fit the images they trained on? (overfitting or a ceiling?)

    python scripts/fit_own_images.py --only grain-boundary bubble
    python scripts/fit_own_images.py --only grain-boundary --memorise gb5 --steps 800

Without ``--memorise``, each shipped model (trained on every image of its set) scores pixel F1
at 0.5 on each of its own training images, the figure to set beside the held-out images' F1:
a large gap would be overfitting, none means that what the recipe learns from these images
carries over to new ones as well as it fits them.

``--memorise NAME`` asks whether the network could fit the labels more closely at all: the
shipped architecture, from random weights, trains on that one image alone with the recipe's
optimiser but no augmentation, no L2 penalty and no held-back tiles (the last weights are
kept), then scores pixel F1 on the same image. Results go to ``runs/bundled/fit_own_images.json``.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bundled_data import FOLDS, RUNS, SPECS, load_set, set_threads, write_json  # noqa: E402
from train_bundled import CLASSES, recipe_for  # noqa: E402


def memorise(kind: str, entry_name: str, steps: int):
    """The recipe's network trained on one image with nothing that stops it memorising."""
    from napari_temdefect.models import ModelSpec
    from napari_temdefect.training import TrainingSet, train
    from train_bundled import entries

    variant = recipe_for(kind)
    config = dataclasses.replace(variant.config(steps), augment=False, l2=0.0,
                                 val_fraction=0.0)
    spec = ModelSpec(classes=CLASSES[kind], **SPECS[variant.arch])
    result = train(spec, TrainingSet(entries(kind, [entry_name])), config,
                   name=f"memorise-{entry_name}")
    return result.model


def main(argv=None) -> int:
    from napari_temdefect import load_model, predict
    from napari_temdefect.metrics import pixel_f1

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--only", nargs="+", choices=sorted(FOLDS), default=sorted(FOLDS))
    ap.add_argument("--memorise", metavar="NAME", default=None,
                    help="train on this one image without augmentation and score it")
    ap.add_argument("--steps", type=int, default=800)
    ap.add_argument("--threads", type=int, default=None)
    args = ap.parse_args(argv)
    set_threads(args.threads)
    out = {}
    for kind in args.only:
        data = load_set(kind)
        if args.memorise is not None:
            if args.memorise not in {d["name"] for d in data}:
                raise SystemExit(f"{args.memorise!r} is not an image of the {kind} set; use "
                                 f"one of {', '.join(d['name'] for d in data)}")
            model = memorise(kind, args.memorise, args.steps)
            data = [d for d in data if d["name"] == args.memorise]
        else:
            model = load_model(kind, device="cpu")
        rows = {}
        for d in data:
            pred = predict(model, d["image"], threshold=0.5, device="cpu").mask > 0
            rows[d["name"]] = pixel_f1(pred, d["mask"]).f1
            print(f"{kind} {d['name']}: pixel F1 at 0.5 {rows[d['name']]:.3f}", flush=True)
        mean = float(np.mean(list(rows.values())))
        what = f"memorised in {args.steps} steps" if args.memorise else "shipped model"
        print(f"{kind} ({what}, {len(rows)} training images): mean pixel F1 {mean:.3f} "
              f"(min {min(rows.values()):.3f}, max {max(rows.values()):.3f})", flush=True)
        out[kind] = {"what": what, "pixel_f1": rows, "mean": mean}
    write_json(RUNS / ("fit_own_images" + (f"_{args.memorise}" if args.memorise else "")
                       + ".json"), out)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
