"""Batch benchmarks: serial vs Dask throughput, and peak memory of a huge montage.

    python benchmarks/bench_batch.py throughput [--n 16] [--size 1024] [--workers 2]
    python benchmarks/bench_batch.py montage [--size 32768] [--block 4096]
    python benchmarks/bench_batch.py count [--size 32768] [--block 4096]

``throughput`` writes N synthetic size² micrographs, runs ``run_batch`` serially and on a Dask
LocalCluster of ``--workers`` single-threaded processes (the code path of
``temdefect analyze --scheduler local:N``), checks that both give the same CSVs, and prints
images/s. ``montage`` builds a size² synthetic montage in a zarr store block by block (never
whole in memory), then in a *child process* predicts it block-wise to zarr and counts its blobs
block-wise, logging progress and the child's peak RSS (``resource.getrusage``). ``count``
skips the network: it builds a size² *mask* with a known number of non-overlapping disks on a
jittered grid (many straddling block borders) and counts them block-wise in a child process,
checking the count and the total area exactly.

The model is a deliberately small DefectSegNet (random weights: speed and memory do not depend
on the weights), so that the runs finish on a laptop CPU; ``--model`` takes a real checkpoint.
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

SMALL = dict(depth=2, growth_rate=4, layers_per_block=1, stem_channels=4)


def small_checkpoint(folder: Path) -> Path:
    import torch

    from napari_temdefect.models import create_model

    torch.manual_seed(0)
    model = create_model(arch="defectsegnet", device="cpu", name="bench-small", options=SMALL)
    return model.save(folder / "bench_small.safetensors", overwrite=True)


def synthetic(seed: int, shape, n_disks: int = 40) -> np.ndarray:
    rng = np.random.default_rng(seed)
    img = rng.normal(1000, 60, shape).astype(np.float32)
    for _ in range(n_disks):  # each disk drawn in its own small window
        cy, cx, r = rng.integers(0, shape[0]), rng.integers(0, shape[1]), int(rng.integers(3, 12))
        y0, x0 = max(0, cy - r), max(0, cx - r)
        yy, xx = np.ogrid[y0:min(shape[0], cy + r + 1), x0:min(shape[1], cx + r + 1)]
        img[y0:y0 + yy.shape[0], x0:x0 + xx.shape[1]] += 400 * (
            (yy - cy) ** 2 + (xx - cx) ** 2 < r * r)
    return img.astype(np.uint16)


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: kB


# ----------------------------------------------------------------------------- throughput

def throughput(args) -> None:
    import pandas as pd
    import tifffile

    from napari_temdefect.batch import BatchSettings, run_batch

    work = Path(tempfile.mkdtemp(prefix="bench_batch_"))
    try:
        data = work / "data"
        data.mkdir()
        for i in range(args.n):
            tifffile.imwrite(data / f"img{i:03d}.tif", synthetic(i, (args.size, args.size)),
                             imagej=True, resolution=(2.0, 2.0), metadata={"unit": "nm"})
        model = args.model or str(small_checkpoint(work))
        settings = BatchSettings(model=model, kind="blobs", device="cpu", threshold=0.52)
        rows = []
        for label, scheduler in (("serial", None), (f"local:{args.workers}",
                                                    f"local:{args.workers}")):
            start = time.perf_counter()
            result = run_batch([data], work / label.replace(":", "_"), settings,
                               scheduler=scheduler, progress=False)
            seconds = time.perf_counter() - start
            assert result.ok, result.failed
            rows.append((label, len(result.done), seconds, len(result.done) / seconds))
        same = all(
            pd.read_csv(work / "serial" / f).equals(
                pd.read_csv(work / f"local_{args.workers}" / f))
            for f in ("summary.csv", "objects.csv"))
        print(f"\n{args.n} images of {args.size}x{args.size} px, model {Path(model).name}, "
              f"{os.cpu_count()} CPU cores")
        print(f"{'run':<10} {'images':>6} {'seconds':>8} {'images/s':>9}")
        for label, n, seconds, rate in rows:
            print(f"{label:<10} {n:>6} {seconds:>8.1f} {rate:>9.3f}")
        print(f"speed-up {rows[1][3] / rows[0][3]:.2f}x (cluster start-up included); "
              f"identical CSVs: {same}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


# ----------------------------------------------------------------------------- montage

def build_montage(path: Path, size: int, block: int) -> None:
    """A size² uint16 zarr montage written block by block (noise with disks)."""
    import zarr

    z = zarr.open_array(str(path), mode="w", shape=(size, size), chunks=(1024, 1024),
                        dtype="uint16")
    z.attrs["pixel_size_nm"] = 0.5
    step = min(block, size)
    for i, y in enumerate(range(0, size, step)):
        for j, x in enumerate(range(0, size, step)):
            h, w = min(step, size - y), min(step, size - x)
            z[y:y + h, x:x + w] = synthetic(i * 1000 + j, (h, w), n_disks=h * w // 20000)


def montage_child(args) -> None:
    """Runs in its own process so that its peak RSS is the montage's alone."""
    import zarr

    from napari_temdefect.batch.montage import predict_montage, quantify_montage_blobs
    from napari_temdefect.models import load_model

    from napari_temdefect.inference import predict

    model = load_model(args.model, device="cpu")
    out = Path(args.out)
    # a threshold that leaves a few % foreground, so that there are blobs to count
    window = np.asarray(zarr.open_array(args.montage, mode="r")[:512, :512])
    threshold = round(float(np.percentile(predict(model, window).probability, 97)), 4)
    start = time.perf_counter()
    rss0 = peak_rss_mb()

    def progress(done, total):
        el = time.perf_counter() - start
        print(f"  predict block {done}/{total}  {el:7.0f} s  peak RSS {peak_rss_mb():7.0f} MB",
              flush=True)

    predict_montage(model, args.montage, out, block=args.block, halo=args.halo,
                    device="cpu", threshold=threshold, progress=progress, prefix="m_")
    t_pred = time.perf_counter() - start
    mask = zarr.open_array(str(out / "m_mask.zarr"), mode="r")
    prob = zarr.open_array(str(out / "m_probability.zarr"), mode="r")
    conf = zarr.open_array(str(out / "m_confidence.zarr"), mode="r")

    class First:  # class 0 of the (C, H, W) probability, sliced lazily
        shape = prob.shape[1:]

        def __getitem__(self, key):
            return prob[(0, *key)]

    objects, summary, report = quantify_montage_blobs(
        mask, pixel_size_nm=0.5, probability=First(), confidence=conf, block=args.block,
        halo=args.halo, threshold=threshold, image_name="montage")
    total = time.perf_counter() - start
    print(f"RESULT size={mask.shape[0]} blocks={report.blocks} predict_s={t_pred:.0f} "
          f"total_s={total:.0f} objects={len(objects)} truncated={report.truncated} "
          f"rss_after_imports_mb={rss0:.0f} peak_rss_mb={peak_rss_mb():.0f}", flush=True)


def montage(args) -> None:
    work = Path(args.workdir or tempfile.mkdtemp(prefix="bench_montage_"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        src = work / f"montage_{args.size}.zarr"
        t = time.perf_counter()
        if not src.exists():
            build_montage(src, args.size, args.block)
        print(f"built {src} in {time.perf_counter() - t:.0f} s (builder peak RSS "
              f"{peak_rss_mb():.0f} MB)", flush=True)
        model = args.model or str(small_checkpoint(work))
        out = work / "out"
        shutil.rmtree(out, ignore_errors=True)
        cmd = [sys.executable, __file__, "_montage_child", "--montage", str(src), "--out",
               str(out), "--model", model, "--block", str(args.block), "--halo", str(args.halo)]
        subprocess.run(cmd, check=True)
        child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        raw = args.size * args.size
        print(f"\nmontage {args.size}x{args.size} px ({raw / 1e9:.2f} Gpx; uint16 input "
              f"{raw * 2 / 2**30:.1f} GiB, float32 probability {raw * 4 / 2**30:.1f} GiB)")
        print(f"child peak RSS (getrusage RUSAGE_CHILDREN): {child:.0f} MB")
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)


def build_disk_mask(path: Path, size: int, block: int, spacing: int = 64):
    """A size² uint8 mask of non-overlapping disks, one per ``spacing`` cell; returns (n, area)."""
    import zarr

    z = zarr.open_array(str(path), mode="w", shape=(size, size), chunks=(block, block),
                        dtype="uint8")
    cells = size // spacing
    rng = np.random.default_rng(0)
    r = rng.integers(3, 13, (cells, cells))
    slack = spacing // 2 - r - 2  # centres jittered within their cell: disks >= 4 px apart
    jitter = lambda: rng.integers(0, 1 << 20, (cells, cells)) % (2 * slack + 1) - slack  # noqa
    cy = np.arange(cells)[:, None] * spacing + spacing // 2 + jitter()
    cx = np.arange(cells)[None, :] * spacing + spacing // 2 + jitter()
    # shift the grid by half a cell so that disks sit on block borders too
    cy, cx = (cy + spacing // 2) % size, (cx + spacing // 2) % size
    area = 0
    for by in range(0, size, block):
        for bx in range(0, size, block):
            tile = np.zeros((block, block), np.uint8)
            pad = 16
            sel = ((cy >= by - pad) & (cy < by + block + pad)
                   & (cx >= bx - pad) & (cx < bx + block + pad))
            for y, x, rr in zip(cy[sel], cx[sel], r[sel]):
                y0, y1 = max(by, y - rr), min(by + block, y + rr + 1)
                x0, x1 = max(bx, x - rr), min(bx + block, x + rr + 1)
                if y0 >= y1 or x0 >= x1:
                    continue
                yy, xx = np.ogrid[y0:y1, x0:x1]
                tile[y0 - by:y1 - by, x0 - bx:x1 - bx] |= (
                    (yy - y) ** 2 + (xx - x) ** 2 <= rr * rr).astype(np.uint8)
            z[by:by + block, bx:bx + block] = tile
            area += int(tile.sum())
    return cells * cells, area


def count_child(args) -> None:
    import zarr

    from napari_temdefect.batch.montage import quantify_montage_blobs

    mask = zarr.open_array(args.montage, mode="r")
    start = time.perf_counter()
    objects, summary, report = quantify_montage_blobs(
        mask, pixel_size_nm=0.5, block=args.block, halo=args.halo, min_size_px=0,
        image_name="mask")
    print(f"RESULT size={mask.shape[0]} blocks={report.blocks} seconds="
          f"{time.perf_counter() - start:.0f} objects={len(objects)} "
          f"area_px={int(round(objects['area_nm2'].sum() / 0.25))} truncated={report.truncated} "
          f"on_block_borders={int(_on_borders(objects, args.block))} "
          f"peak_rss_mb={peak_rss_mb():.0f}", flush=True)


def _on_borders(objects, block: int) -> int:
    """Objects whose extent crosses a block border (centroid within the radius of one)."""
    cx, cy = objects["centroid_x_nm"] / 0.5, objects["centroid_y_nm"] / 0.5
    rad = objects["equivalent_diameter_nm"] / 0.5 / 2
    near = lambda c: (np.abs(c - np.round(c / block) * block) < rad) & (c > block / 2)  # noqa: E731
    return int((near(cx) | near(cy)).sum())


def count(args) -> None:
    work = Path(tempfile.mkdtemp(prefix="bench_count_"))
    try:
        src = work / f"mask_{args.size}.zarr"
        t = time.perf_counter()
        n, area = build_disk_mask(src, args.size, args.block)
        print(f"built {src}: {n} disks, {area} px, in {time.perf_counter() - t:.0f} s",
              flush=True)
        cmd = [sys.executable, __file__, "_count_child", "--montage", str(src), "--out", "-",
               "--model", "-", "--block", str(args.block), "--halo", str(args.halo)]
        subprocess.run(cmd, check=True)
        child = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
        print(f"expected objects={n} area_px={area}; child peak RSS {child:.0f} MB")
    finally:
        shutil.rmtree(work, ignore_errors=True)


def main(argv=None) -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="what", required=True)
    t = sub.add_parser("throughput")
    t.add_argument("--n", type=int, default=16)
    t.add_argument("--size", type=int, default=1024)
    t.add_argument("--workers", type=int, default=2)
    t.add_argument("--model", default=None)
    m = sub.add_parser("montage")
    m.add_argument("--size", type=int, default=32768)
    m.add_argument("--block", type=int, default=4096)
    m.add_argument("--halo", type=int, default=128)
    m.add_argument("--model", default=None)
    m.add_argument("--workdir", default=None)
    m.add_argument("--keep", action="store_true")
    q = sub.add_parser("count")
    q.add_argument("--size", type=int, default=32768)
    q.add_argument("--block", type=int, default=4096)
    q.add_argument("--halo", type=int, default=128)
    for child in ("_montage_child", "_count_child"):
        c = sub.add_parser(child)
        for name in ("--montage", "--out", "--model"):
            c.add_argument(name, required=True)
        c.add_argument("--block", type=int, default=4096)
        c.add_argument("--halo", type=int, default=128)
    args = p.parse_args(argv)
    {"throughput": throughput, "montage": montage, "count": count,
     "_montage_child": montage_child, "_count_child": count_child}[args.what](args)


if __name__ == "__main__":
    main()
