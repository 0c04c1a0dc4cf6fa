"""Training benchmarks (run on demand; prints Markdown tables).

    .venv/bin/python benchmarks/bench_training.py                     # both parts
    .venv/bin/python benchmarks/bench_training.py --only steps        # s/step per depth
    .venv/bin/python benchmarks/bench_training.py --only improvement  # minutes to a gain

``steps``: CPU, 256² patches, batch 8, the bundled-size model (U-Net, ResNet-18 encoder,
encoder_depth 4, decoder (128, 64, 32, 16)); median seconds per optimiser step (forward,
masked BCE+Dice, L2 penalty, backward, AdamW) for ``depth`` = decoder / deep / all, measured
in interleaved rounds so that a change of machine load hits every depth alike. The first step
of each round (warm-up) is dropped. CPU seconds (``time.process_time``, all threads) are
reported beside wall time: on a loaded machine they are the fairer comparison.

``improvement``: fine-tune a model (``--model``, e.g. a bundled one or a checkpoint) on ONE real
image of ../shared/data with the default recipe and measure, after every evaluation, pixel F1
(threshold 0.5, via ``inference.predict``) on ANOTHER image of the same set. Reports the
training minutes (evaluation time excluded) until F1 first exceeds the starting F1 by
``--margin``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np

REPRESENTATIVE = {"arch": "unet", "encoder": "resnet18",
                  "options": {"encoder_depth": 4, "decoder_channels": [128, 64, 32, 16]}}
DATA = Path(os.environ.get("TEMDEFECT_DATA", Path(__file__).resolve().parents[2] / "shared" / "data"))


def _threads(n):
    import torch

    torch.set_num_threads(n)


def bench_steps(rounds: int, steps: int, device: str) -> list[dict]:
    import torch

    from napari_temdefect.models import create_model
    from napari_temdefect.synthetic import make_micrograph
    from napari_temdefect.training import TrainConfig, TrainingEntry, TrainingSet, finetune

    m = make_micrograph("bubbles", size=(512, 512), seed=0)
    tset = TrainingSet([TrainingEntry(m.image, m.class_map(), name="bubbles512")])
    torch.manual_seed(0)
    base = create_model(device=device, **REPRESENTATIVE)
    times: dict[str, list[float]] = {"decoder": [], "deep": [], "all": []}
    cpu: dict[str, list[float]] = {k: [] for k in times}
    params = {}
    for r in range(rounds):
        for depth in times:
            model = base.clone()
            stamps = []
            cfg = TrainConfig(depth=depth, steps=steps, batch_size=8, patch_size=256,
                              val_fraction=0.0, seed=r, device=device)
            res = finetune(model, tset, cfg, progress=lambda ev: ev["event"] == "step" and
                           stamps.append((time.perf_counter(), time.process_time())))
            params[depth] = res.trainable_params
            wall, proc = np.array(stamps).T
            times[depth] += list(np.diff(wall))  # drops the first (warm-up) step
            cpu[depth] += list(np.diff(proc))
    rows = []
    for depth, t in times.items():
        rows.append({"depth": depth, "trainable_params": params[depth],
                     "median_s_per_step": statistics.median(t), "min_s": min(t), "n": len(t),
                     "median_cpu_s_per_step": statistics.median(cpu[depth])})
    return rows


def _pairs(dataset: str):
    from napari_temdefect.io import read_image

    folder = DATA / dataset
    images = sorted((folder / "images").glob("*.jpg"))
    out = []
    for p in images:
        mask = read_image(folder / "masks" / (p.stem + ".png")).data > 0
        out.append((p.stem, read_image(p).data, mask))
    return out


def bench_improvement(model_name: str, dataset: str, train_name: str, test_name: str,
                      minutes: float, eval_every: int, margin: float, device: str) -> dict:
    from napari_temdefect.inference import predict
    from napari_temdefect.metrics import pixel_f1
    from napari_temdefect.models import load_model
    from napari_temdefect.training import TrainConfig, TrainingEntry, TrainingSet, finetune

    pairs = {name: (img, mask) for name, img, mask in _pairs(dataset)}
    model = load_model(model_name, device=device)
    img, mask = pairs[train_name]
    tset = TrainingSet([TrainingEntry(img, mask, name=train_name)])
    test_img, test_mask = pairs[test_name]

    def test_f1():
        res = predict(model, test_img, device=device)
        return pixel_f1(res.mask > 0, test_mask).f1

    start = test_f1()
    curve = [(0, 0.0, start)]
    eval_seconds = [0.0]

    def progress(ev):
        if ev["event"] != "eval" or ev["step"] == 0:
            return
        train_min = (ev["seconds"] - eval_seconds[0]) / 60  # our test predictions excluded
        t0 = time.perf_counter()
        was = model.module.training
        f1 = test_f1()  # the model's current weights (the best ones are restored at the end)
        model.module.train(was)
        eval_seconds[0] += time.perf_counter() - t0
        curve.append((ev["step"], train_min, f1))
        print(f"  step {ev['step']:>4}  {train_min:6.2f} min  test F1 {f1:.3f}", flush=True)

    cfg = TrainConfig(minutes=minutes, eval_every=eval_every, patience=None, device=device)
    res = finetune(model, tset, cfg, progress=progress)
    first = next(((s, m, f) for s, m, f in curve[1:] if f >= start + margin), None)
    return {"model": model_name, "dataset": dataset, "train": train_name, "test": test_name,
            "start_f1": start, "final_best_val_step": res.best_step, "curve": curve,
            "first_gain": first, "margin": margin}


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--only", choices=("steps", "improvement"))
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--steps", type=int, default=5, help="steps per round and depth")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--model", default="generic", help="model to fine-tune (improvement)")
    ap.add_argument("--dataset", default="he_bubbles")
    ap.add_argument("--train", default="bubble1")
    ap.add_argument("--test", default="bubble2")
    ap.add_argument("--minutes", type=float, default=10.0)
    ap.add_argument("--eval-every", type=int, default=10)
    ap.add_argument("--margin", type=float, default=0.02)
    args = ap.parse_args(argv)
    _threads(args.threads)
    load = os.getloadavg()[0]
    print(f"device {args.device}, {args.threads} torch threads, load average {load:.1f} "
          f"on {os.cpu_count()} cores\n")
    if args.only in (None, "steps"):
        rows = bench_steps(args.rounds, args.steps, args.device)
        print("| depth | trainable params | median s/step (wall) | min s/step | "
              "median CPU s/step | steps timed |")
        print("| --- | ---: | ---: | ---: | ---: | ---: |")
        for r in rows:
            print(f"| {r['depth']} | {r['trainable_params'] / 1e6:.2f} M | "
                  f"{r['median_s_per_step']:.2f} | {r['min_s']:.2f} | "
                  f"{r['median_cpu_s_per_step']:.2f} | {r['n']} |")
        for key, what in (("median_s_per_step", "wall"), ("median_cpu_s_per_step", "CPU")):
            by = {r["depth"]: r[key] for r in rows}
            print(f"\n{what}: deep / all = {by['deep'] / by['all']:.2f}, decoder / all = "
                  f"{by['decoder'] / by['all']:.2f}")
        print()
    if args.only in (None, "improvement"):
        if not DATA.is_dir():
            sys.exit(f"real data not found at {DATA}")
        out = bench_improvement(args.model, args.dataset, args.train, args.test, args.minutes,
                                args.eval_every, args.margin, args.device)
        first = out["first_gain"]
        print(f"\n{out['model']} fine-tuned on {out['dataset']}/{out['train']}, "
              f"F1 on {out['test']}: start {out['start_f1']:.3f}")
        if first:
            print(f"first gain ≥ {out['margin']}: step {first[0]}, {first[1]:.2f} training "
                  f"minutes, F1 {first[2]:.3f}")
        else:
            print(f"no gain ≥ {out['margin']} within {args.minutes} minutes")


if __name__ == "__main__":
    main()
