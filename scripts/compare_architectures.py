"""Architecture × encoder comparison for the bundled models: size, CPU speed, short-budget accuracy.

    python scripts/compare_architectures.py [--seconds 150] [--threads 2] [--speed-only] [--only …]

For each candidate it prints parameters, fp16 checkpoint size, the CPU forward time of one
512² and one 1024² image (batch 1, ``torch.inference_mode``, median of 3 after a warm-up), and
— unless ``--speed-only`` — the held-out pixel F1 and boundary-tolerant F1 (3 px) on UO2 grain
boundaries after the same wall-clock training budget (train on grain-boundary CV folds 2+3,
evaluate whole images of fold 1). The short loop here is deliberately minimal and identical for
every candidate (Adam 1e-3, BCE + Dice, D4 flips, 256² patches, batch 4) so that it compares
architectures, not recipes. Results go to runs/bundled/compare_architectures.json.
"""

from __future__ import annotations

import argparse
import sys
import time

import numpy as np

sys.path.insert(0, str(__import__("pathlib").Path(__file__).resolve().parent))
from bundled_data import FOLDS, RUNS, load_set, set_threads, write_json  # noqa: E402

CANDIDATES = {
    "unet/resnet18 d4 (128-16)": dict(arch="unet", encoder="resnet18", options={
        "encoder_depth": 4, "decoder_channels": [128, 64, 32, 16]}),
    "unet/resnet18 d5 (smp default)": dict(arch="unet", encoder="resnet18", options={}),
    "unet/mobilenet_v2 d5 (128-8)": dict(arch="unet", encoder="mobilenet_v2", options={
        "decoder_channels": [128, 64, 32, 16, 8]}),
    "unet/efficientnet-b0 d5 (128-8)": dict(arch="unet", encoder="efficientnet-b0", options={
        "decoder_channels": [128, 64, 32, 16, 8]}),
    "unet/efficientnet-lite0 d4 (128-16)": dict(arch="unet", encoder="timm-tf_efficientnet_lite0",
                                                options={"encoder_depth": 4,
                                                         "decoder_channels": [128, 64, 32, 16]}),
    "unetplusplus/resnet18 d4 (128-16)": dict(arch="unetplusplus", encoder="resnet18", options={
        "encoder_depth": 4, "decoder_channels": [128, 64, 32, 16]}),
    "deeplabv3plus/resnet18": dict(arch="deeplabv3plus", encoder="resnet18", options={}),
    "defectsegnet (depth 3, growth 16)": dict(arch="defectsegnet", encoder="none", options={}),
}
ACCURACY = ["unet/resnet18 d4 (128-16)", "unet/mobilenet_v2 d5 (128-8)",
            "unet/efficientnet-b0 d5 (128-8)", "defectsegnet (depth 3, growth 16)"]


def fp16_mb(module) -> float:
    return sum(p.numel() * (2 if p.is_floating_point() else p.element_size())
               for p in module.state_dict().values()) / 1e6


def forward_ms(module, size: int) -> float:
    import torch

    x = torch.randn(1, 1, size, size)
    module.eval()
    with torch.inference_mode():
        module(x)
        times = []
        for _ in range(3):
            t = time.perf_counter()
            module(x)
            times.append(time.perf_counter() - t)
    return 1000 * float(np.median(times))


def _batch(data, rng, patch=256, batch=4):
    xs, ys = [], []
    for _ in range(batch):
        d = data[rng.integers(len(data))]
        h, w = d["x"].shape
        i, j = rng.integers(0, h - patch + 1), rng.integers(0, w - patch + 1)
        x, y = d["x"][i:i + patch, j:j + patch], d["y"][i:i + patch, j:j + patch]
        k = rng.integers(4)
        x, y = np.rot90(x, k), np.rot90(y, k)
        if rng.random() < 0.5:
            x, y = x[:, ::-1], y[:, ::-1]
        xs.append(x.copy()), ys.append(y.copy())
    return np.stack(xs)[:, None], np.stack(ys)[:, None].astype(np.float32)


def short_train_eval(spec: dict, seconds: float, seed: int = 0) -> dict:
    import torch

    from napari_temdefect.metrics import boundary_f1, pixel_f1
    from napari_temdefect.models import create_model
    from napari_temdefect.preprocess import normalize_image

    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    gb = load_set("grain-boundary")
    held = set(FOLDS["grain-boundary"][0])
    train = [{"x": normalize_image(d["image"]), "y": d["mask"]} for d in gb if d["name"] not in held]
    test = [d for d in gb if d["name"] in held]
    model = create_model(classes=["boundary"], device="cpu", **spec)
    net = model.module.train()
    opt = torch.optim.Adam(net.parameters(), 1e-3)
    t0, steps = time.perf_counter(), 0
    while time.perf_counter() - t0 < seconds:
        x, y = _batch(train, rng)
        x, y = torch.from_numpy(x), torch.from_numpy(y)
        logits = net(x)
        p = torch.sigmoid(logits)
        dice = 1 - (2 * (p * y).sum() + 1) / (p.sum() + y.sum() + 1)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y) + dice
        opt.zero_grad()
        loss.backward()
        opt.step()
        steps += 1
    net.eval()
    f1s, bf1s = [], []
    with torch.inference_mode():
        for d in test:
            x = torch.from_numpy(normalize_image(d["image"]))[None, None]
            pred = torch.sigmoid(net(x))[0, 0].numpy() > 0.5
            f1s.append(pixel_f1(pred, d["mask"]).f1)
            bf1s.append(boundary_f1(pred, d["mask"], 3).f1)
    return {"steps": steps, "pixel_f1": float(np.mean(f1s)), "boundary_f1_3px": float(np.mean(bf1s))}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--seconds", type=float, default=150)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--speed-only", action="store_true")
    ap.add_argument("--only", nargs="+", default=None, metavar="TEXT",
                    help="only the candidates whose name contains one of these, "
                         "e.g. resnet18 lite0")
    args = ap.parse_args(argv)
    set_threads(args.threads)
    from napari_temdefect.models import create_model

    rows = []
    for name, spec in CANDIDATES.items():
        if args.only and not any(t in name for t in args.only):
            continue
        model = create_model(classes=["boundary"], device="cpu", **spec)
        n = sum(p.numel() for p in model.module.parameters())
        row = {"model": name, "params_M": n / 1e6, "fp16_MB": fp16_mb(model.module),
               "cpu_ms_512": forward_ms(model.module, 512), "cpu_ms_1024": forward_ms(model.module, 1024)}
        if not args.speed_only and name in ACCURACY:
            row.update(short_train_eval(spec, args.seconds))
        rows.append(row)
        print(" | ".join(f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items()),
              flush=True)
        # a partial run never overwrites the full comparison
        out = "compare_architectures" + ("_" + "_".join(args.only) if args.only else "")
        write_json(RUNS / f"{out}.json",
                   {"threads": args.threads, "seconds": args.seconds, "rows": rows})
    print("\n| model | params (M) | fp16 MB | CPU ms 512² | CPU ms 1024² | GB pixel F1 | GB F1 (3 px) | steps |")
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    for r in rows:
        acc = (f"{r['pixel_f1']:.3f} | {r['boundary_f1_3px']:.3f} | {r['steps']}" if "steps" in r
               else "– | – | –")
        print(f"| {r['model']} | {r['params_M']:.2f} | {r['fp16_MB']:.1f} | {r['cpu_ms_512']:.0f} | "
              f"{r['cpu_ms_1024']:.0f} | {acc} |")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
