"""Real-data proof of the fine-tuning loop: F1 on unseen images before vs after fine-tuning.

    python scripts/finetune_gain_real.py --model grain-boundary --dataset he_bubbles \\
        --train bubble1 bubble2 --steps 60

A model trained on one kind of image (``--model``: a bundled name or a checkpoint) is
fine-tuned with the default recipe (``TrainConfig()``: depth "deep", frozen BatchNorm, L2 1e-4,
D4 + jitter) on the labelled images ``--train`` of ``../shared/data/<dataset>`` (or
``$TEMDEFECT_DATA``), and scored with ``inference.predict`` (pixel F1 at 0.5; boundary F1 with a
3 px tolerance for grain boundaries) on EVERY OTHER image of the set, before and after.
Prints a Markdown table; ``--json PATH`` also writes the numbers.

``--selection`` also scores, from the same round, the weights that each rule for choosing the
kept checkpoint would have kept: the best validation loss (the product's default), the best
validation F1, and the last step. It measures whether the held-back tiles of one or two images
pick good weights.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

DATA = Path(os.environ.get("TEMDEFECT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def load_pairs(dataset: str):
    from napari_temdefect.io import read_image

    folder = DATA / dataset
    if not folder.is_dir():
        sys.exit(f"real data not found at {folder}; set TEMDEFECT_DATA")
    out = {}
    for p in sorted((folder / "images").glob("*.jpg")):
        out[p.stem] = (read_image(p).data, read_image(folder / "masks" / (p.stem + ".png")).data > 0)
    return out


def score(model, pairs, names, lines: bool, device, threshold=None):
    from napari_temdefect.inference import predict
    from napari_temdefect.metrics import boundary_f1, pixel_f1

    out = {}
    for name in names:
        img, mask = pairs[name]
        pred = predict(model, img, device=device, threshold=threshold).mask > 0
        out[name] = {"pixel_f1": pixel_f1(pred, mask).f1}
        if lines:
            out[name]["boundary_f1"] = boundary_f1(pred, mask, tolerance_px=3).f1
    return out


def kept_steps(history: list[dict]) -> dict[str, int]:
    """The step each rule would keep, from a round's evaluations: the first best validation
    loss (as ``finetune`` keeps it), the first best validation F1, and the last evaluation."""
    evals = [h for h in history if h["val_loss"] is not None]
    if not evals:
        raise ValueError("the round held no tile back for validation; nothing to choose from")
    return {"val_loss": min(evals, key=lambda h: h["val_loss"])["step"],
            "val_f1": max(evals, key=lambda h: h["val_f1"])["step"],
            "last": evals[-1]["step"]}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="grain-boundary")
    ap.add_argument("--dataset", default="he_bubbles",
                    choices=("he_bubbles", "uo2_grain_boundaries"))
    ap.add_argument("--train", nargs="+", default=["bubble1"])
    ap.add_argument("--test", nargs="+", default=None,
                    help="images to score (default: every image not in --train)")
    ap.add_argument("--steps", type=int, default=60)
    ap.add_argument("--minutes", type=float, default=None)
    ap.add_argument("--depth", default="deep")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--threshold", type=float, default=0.5,
                    help="cut the maps here (default 0.5, the paper's metric); 0 or less: the "
                         "model's own operating threshold, as the product uses it")
    ap.add_argument("--selection", action="store_true",
                    help="also score the weights that best validation loss, best validation F1 "
                         "and the last step would keep (same round)")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import torch

    from napari_temdefect.models import load_model
    from napari_temdefect.training import TrainConfig, TrainingEntry, TrainingSet, finetune

    torch.set_num_threads(args.threads)
    pairs = load_pairs(args.dataset)
    unknown = [n for n in args.train if n not in pairs]
    if unknown:
        sys.exit(f"unknown image(s) {unknown}; choose from {sorted(pairs)}")
    test = args.test or [n for n in pairs if n not in args.train]
    if set(test) & set(args.train) or any(n not in pairs for n in test):
        sys.exit("--test must name images of the set that are not in --train")
    lines = args.dataset == "uo2_grain_boundaries"
    model = load_model(args.model, device=args.device)
    threshold = args.threshold if args.threshold > 0 else None
    before = score(model, pairs, test, lines, args.device, threshold)
    tset = TrainingSet([TrainingEntry(*pairs[n], name=n) for n in args.train])
    cfg = TrainConfig(depth=args.depth, steps=None if args.minutes else args.steps,
                      minutes=args.minutes, seed=args.seed, device=args.device)
    evals, snapshots = [], {}  # --selection: the evaluations so far; weights of the candidates

    def progress(ev):
        if ev["event"] != "eval":
            return
        print(f"  step {ev['step']:>4}  val loss {ev['val_loss']:.4f}  val F1 {ev['val_f1']:.3f}  "
              f"{ev['seconds']:.0f} s", flush=True)
        if args.selection:  # keep only the weights some rule would still keep (≤ 3 copies)
            evals.append(ev)
            snapshots[ev["step"]] = {k: v.detach().clone()
                                     for k, v in model.module.state_dict().items()}
            candidates = set(kept_steps(evals).values())
            for step in [s for s in snapshots if s not in candidates]:
                del snapshots[step]

    t0 = time.perf_counter()
    res = finetune(model, tset, cfg, progress=progress)
    minutes = (time.perf_counter() - t0) / 60
    after = score(model, pairs, test, lines, args.device, threshold)
    selection = {}
    if args.selection:
        try:
            kept = kept_steps(res.history)
        except ValueError as exc:
            sys.exit(f"--selection: {exc}; label a larger image or more images")
        by_step = {res.best_step: after}  # the weights finetune kept are scored already
        for rule, step in kept.items():
            if step not in by_step:
                model.module.load_state_dict(snapshots[step])
                by_step[step] = score(model, pairs, test, lines, args.device, threshold)
            selection[rule] = {"step": step, "scores": by_step[step]}

    keys = ["pixel_f1"] + (["boundary_f1"] if lines else [])
    print(f"\n{args.model} fine-tuned on {args.dataset} {', '.join(args.train)} "
          f"({res.steps} steps, kept step {res.best_step}, {minutes:.1f} min, depth {args.depth}, "
          f"maps cut at {threshold or model.threshold})\n")
    print("| test image | " + " | ".join(f"{k} before | {k} after" for k in keys) + " |")
    print("| --- |" + " ---: | ---: |" * len(keys))
    for n in test:
        print(f"| {n} | " + " | ".join(f"{before[n][k]:.3f} | {after[n][k]:.3f}" for k in keys)
              + " |")
    print("| **mean** | " + " | ".join(
        f"**{np.mean([before[n][k] for n in test]):.3f}** | "
        f"**{np.mean([after[n][k] for n in test]):.3f}**" for k in keys) + " |")
    if selection:
        print("\n| kept by | step | " + " | ".join(f"mean {k}" for k in keys) + " |")
        print("| --- | ---: |" + " ---: |" * len(keys))
        for rule, sel in selection.items():
            print(f"| {rule} | {sel['step']} | " + " | ".join(
                f"{np.mean([sel['scores'][n][k] for n in test]):.3f}" for k in keys) + " |")
    if args.json:
        Path(args.json).write_text(json.dumps({
            "args": vars(args), "before": before, "after": after, "steps": res.steps,
            "best_step": res.best_step, "minutes": minutes, "history": res.history,
            "selection": selection}, indent=1))


if __name__ == "__main__":
    main()
