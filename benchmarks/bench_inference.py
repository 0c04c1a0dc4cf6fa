"""Inference benchmarks (run on demand; prints a Markdown table).

    .venv/bin/python benchmarks/bench_inference.py                 # everything
    .venv/bin/python benchmarks/bench_inference.py --only cpu      # 4096² CPU comparisons
    .venv/bin/python benchmarks/bench_inference.py --only memory   # peak RSS, 8192² and 16384²
    .venv/bin/python benchmarks/bench_inference.py --only gpu      # CUDA throughput (AMP)

CPU, on a 4096² image, with a model shaped like the bundled ones (U-Net, ResNet-18 encoder,
encoder_depth 4, decoder (128, 64, 32, 16), 1 input channel, random weights):

* ``predict()`` with automatic tiles;
* the raw network forward over the same pixels (4 non-overlapping 2048² crops, no tiling,
  normalisation or blending) and over exactly the tiles ``predict`` used;
* MONAI ``sliding_window_inference`` with the same tile, overlap, tile positions and blending
  window (passed as ``roi_weight_map``), with the max abs difference of the outputs.

Memory: each size runs in a fresh subprocess; its peak RSS comes from
``resource.getrusage(RUSAGE_SELF).ru_maxrss``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np

REPRESENTATIVE = {"arch": "unet", "encoder": "resnet18",
                  "options": {"encoder_depth": 4, "decoder_channels": [128, 64, 32, 16]}}
LIGHT = {"arch": "unet", "encoder": "resnet18",
         "options": {"encoder_depth": 3, "decoder_channels": [32, 16, 8]}}
#: a few thin convolutions: measures the engine's own memory at sizes where the representative
#: model would take hours on a small shared CPU
MINIMAL = {"arch": "defectsegnet",
           "options": {"depth": 2, "growth_rate": 4, "layers_per_block": 1, "stem_channels": 4}}
MODELS = {"representative": REPRESENTATIVE, "light": LIGHT, "minimal": MINIMAL}


def make_model(kind: str, device="cpu"):
    import torch

    from napari_temdefect.models import create_model

    torch.manual_seed(0)
    return create_model(device=device, name=kind, **MODELS[kind])


def make_image(size: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 256, (size, size), dtype=np.uint8)


def timed(fn):
    """(wall seconds, CPU seconds of this process, result)."""
    start, cpu = time.perf_counter(), time.process_time()
    out = fn()
    return time.perf_counter() - start, time.process_time() - cpu, out


def peak_rss_mb() -> float:
    """Peak RSS of this process: VmHWM (reset by exec, so a child does not inherit its parent's
    high-water mark as ru_maxrss does on Linux), else getrusage."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def raw_forward(module, x_tiles):
    import torch

    with torch.inference_mode():
        for x in x_tiles:
            torch.sigmoid(module(x))


def bench_cpu(size: int, threads: int | None):
    import torch
    from monai.inferers import sliding_window_inference

    from napari_temdefect.inference import predict
    from napari_temdefect.inference.tiling import window_1d
    from napari_temdefect.preprocess import apply_normalization, normalization_stats

    if threads:
        torch.set_num_threads(threads)
    model = make_model("representative")
    module = model.module
    image = make_image(size)
    raw_forward(module, [torch.zeros(1, 1, 256, 256)])  # warm-up

    t_pred, c_pred, res = timed(lambda: predict(model, image, device="cpu"))
    th, tw = res.tile
    offset, scale = normalization_stats(image)
    norm = torch.from_numpy(apply_normalization(image, offset, scale))[None, None]

    crop = 2048 if size % 2048 == 0 else size
    crops = [norm[..., y:y + crop, x:x + crop] for y in range(0, size, crop)
             for x in range(0, size, crop)]
    t_raw, c_raw, _ = timed(lambda: raw_forward(module, crops))

    from napari_temdefect.inference.tiling import plan_tiles, required_multiple

    plan = plan_tiles(image.shape, max(th, tw), res.overlap, required_multiple(model.spec))
    tiles = [norm[..., y:y + th, x:x + tw] for _, _, y, x in plan.tiles()]
    t_tiles, c_tiles, _ = timed(lambda: raw_forward(module, tiles))

    # MONAI with the same tiles: roi = our tile, overlap chosen so its scan interval equals our
    # tile step, and our window as the weight map.
    step = plan.rows.positions[1] - plan.rows.positions[0] if len(plan.rows.positions) > 1 else th
    frac = 1 - step / th
    while int(th * (1 - frac)) < step:  # guard float rounding inside MONAI
        frac -= 1e-9
    win = np.multiply.outer(window_1d(th, res.overlap), window_1d(tw, res.overlap))
    weight = torch.from_numpy(win.astype(np.float32))

    def monai():
        with torch.inference_mode():
            return sliding_window_inference(
                norm, (th, tw), 1, lambda x: torch.sigmoid(module(x)), overlap=frac,
                roi_weight_map=weight, mode="constant")

    t_monai, c_monai, out = timed(monai)
    diff = float(np.abs(out[0].numpy() - res.probability).max())
    mp = size * size / 1e6
    rows = [
        ("predict() (auto tiles)", t_pred, c_pred,
         f"{res.n_tiles} tiles {tw}×{th}, overlap ≥{res.overlap} px"),
        ("raw forward, same pixels", t_raw, c_raw, f"{len(crops)} crops {crop}², no overlap"),
        ("raw forward, same tiles", t_tiles, c_tiles, f"{len(tiles)} tiles {tw}×{th}"),
        ("MONAI sliding_window_inference", t_monai, c_monai, "same tiles, positions and window"),
    ]
    print(f"\n### CPU, {size}×{size} uint8, torch threads = {torch.get_num_threads()}\n")
    print("| method | wall (s) | CPU (s) | MP/s (wall) | notes |\n|---|---:|---:|---:|---|")
    for name, t, c, note in rows:
        print(f"| {name} | {t:.1f} | {c:.1f} | {mp / t:.3f} | {note} |")
    print("\nRatios (wall; CPU time in brackets, steadier on a shared machine):\n")
    print(f"* predict / raw forward over the same pixels: **{t_pred / t_raw:.2f}×** "
          f"({c_pred / c_raw:.2f}×) (goal ≤ 1.15×)")
    print(f"* predict / raw forward over the same tiles (engine overhead): "
          f"**{t_pred / t_tiles:.2f}×** ({c_pred / c_tiles:.2f}×)")
    print(f"* predict / MONAI: **{t_pred / t_monai:.2f}×** ({c_pred / c_monai:.2f}×) (goal ≤ 1); "
          f"max |Δ probability| = {diff:.2e}")


def child(size: int, kind: str, tile: int | None):
    """Run one prediction in this (fresh) process and print peak RSS as JSON."""
    import torch

    from napari_temdefect.inference import predict

    torch.set_num_threads(max(1, min(4, os.cpu_count() or 1)))
    model = make_model(kind)
    image = make_image(size)
    base = peak_rss_mb()
    t, _, res = timed(lambda: predict(model, image, device="cpu", tile=tile))
    peak = peak_rss_mb()
    outputs = (res.probability.nbytes + res.confidence.nbytes + res.mask.nbytes) / 2**20
    print(json.dumps({"size": size, "model": kind, "seconds": t, "peak_mb": peak,
                      "before_mb": base, "input_mb": image.nbytes / 2**20, "outputs_mb": outputs,
                      "tiles": res.n_tiles, "tile": res.tile}))


def bench_memory(sizes, kind: str, tile: int | None):
    print(f"\n### Peak memory (CPU, fresh process per size, model: {kind})\n")
    print("| image | tiles | time (s) | input (MB) | outputs (MB) | RSS before predict (MB) "
          "| peak RSS (MB) | peak − before − outputs (MB) |\n|---|---:|---:|---:|---:|---:|---:|---:|")
    for size in sizes:
        cmd = [sys.executable, __file__, "--child", str(size), "--model", kind]
        if tile:
            cmd += ["--tile", str(tile)]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True).stdout
        r = json.loads(out.strip().splitlines()[-1])
        work = r["peak_mb"] - r["before_mb"] - r["outputs_mb"]
        print(f"| {size}² uint8 | {r['tiles']} of {r['tile'][1]}×{r['tile'][0]} | {r['seconds']:.0f} "
              f"| {r['input_mb']:.0f} | {r['outputs_mb']:.0f} | {r['before_mb']:.0f} "
              f"| {r['peak_mb']:.0f} | {work:.0f} |")


def bench_gpu(size: int):
    import torch

    print("\n### GPU\n")
    if not torch.cuda.is_available():
        print("No CUDA GPU on this machine: GPU benchmark skipped.")
        return
    from napari_temdefect.inference import predict

    model = make_model("representative", device="cuda")
    image = make_image(size)
    predict(model, image[:1024, :1024], device="cuda")  # warm-up (cudnn autotune, AMP casts)
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    print(f"{torch.cuda.get_device_name()}\n")
    print("| setting | time (s) | MP/s | AMP | tiles | batch | peak GPU memory (GB) |\n"
          "|---|---:|---:|---|---:|---:|---:|")
    for tta in (False, True):
        t, _, res = timed(lambda: predict(model, image, device="cuda", tta=tta))
        print(f"| {size}² {'TTA ×8' if tta else 'no TTA'} | {t:.2f} | {size * size / 1e6 / t:.1f} "
              f"| {res.amp} | {res.n_tiles} | {res.batch_size} "
              f"| {torch.cuda.max_memory_allocated() / 1e9:.1f} |")


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--only", choices=("cpu", "memory", "gpu"))
    p.add_argument("--size", type=int, default=4096, help="CPU/GPU image side (default 4096)")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads")
    p.add_argument("--memory-sizes", default="8192,16384")
    p.add_argument("--model", default="minimal", choices=tuple(MODELS),
                   help="model for the memory runs (default: minimal, see docs/benchmarks.md)")
    p.add_argument("--tile", type=int, default=None)
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        return child(args.child, args.model, args.tile)
    import torch

    print(f"torch {torch.__version__}, {os.cpu_count()} CPU cores visible, "
          f"load average {os.getloadavg()[0]:.1f}")
    if args.only in (None, "cpu"):
        bench_cpu(args.size, args.threads)
    if args.only in (None, "memory"):
        bench_memory([int(s) for s in args.memory_sizes.split(",")], args.model, args.tile)
    if args.only in (None, "gpu"):
        bench_gpu(args.size)


if __name__ == "__main__":
    main()
