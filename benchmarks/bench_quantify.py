"""Quantification speed on a 4096² field with 20,000 objects (prints a table).

    python benchmarks/bench_quantify.py [--size 4096] [--objects 20000] [--repeat 3]

Rows: blobs from instance labels (measuring only), blobs from a binary mask (labelling and
measuring), blobs with the watershed split, grains from a boundary network with as many grains,
and lines from a network of segments. Each time is the best of --repeat runs, in seconds, on
this machine's CPU (single process); CPU seconds show how much of it was waiting on a
busy machine. "peak MB" is the largest memory the case allocated on top of its input (numpy
and scipy arrays, measured with tracemalloc in one more, untimed run).
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import numpy as np
from scipy import ndimage as ndi


def blob_labels(size: int, n: int, rng) -> np.ndarray:
    """``n`` non-overlapping disks of radius 3–9 px (instance labels 1..n)."""
    labels = np.zeros((size, size), np.int32)
    placed, tries = 0, 0
    while placed < n and tries < 50 * n:
        tries += 1
        r = int(rng.integers(3, 10))
        y, x = rng.integers(r + 1, size - r - 1, 2)
        win = labels[y - r - 1:y + r + 2, x - r - 1:x + r + 2]
        if win.any():
            continue
        yy, xx = np.ogrid[-r - 1:r + 2, -r - 1:r + 2]
        win[(yy * yy + xx * xx) <= r * r] = placed + 1
        placed += 1
    return labels


def grain_boundaries(size: int, n: int, rng) -> np.ndarray:
    """Boundaries (2 px) of a Voronoi tessellation with ``n`` seeds."""
    seeds = np.zeros((size, size), np.int32)
    ys, xs = rng.integers(0, size, (2, n))
    seeds[ys, xs] = np.arange(1, n + 1)
    idx = ndi.distance_transform_edt(seeds == 0, return_distances=False, return_indices=True)
    cells = seeds[tuple(idx)]
    edge = np.zeros_like(cells, bool)
    edge[:, 1:] |= cells[:, 1:] != cells[:, :-1]
    edge[1:, :] |= cells[1:, :] != cells[:-1, :]
    return edge | np.roll(edge, 1, axis=1)


def line_network(size: int, n: int, rng) -> np.ndarray:
    from skimage.draw import line

    mask = np.zeros((size, size), bool)
    for _ in range(n):
        y0, x0 = rng.integers(0, size, 2)
        ang = rng.uniform(0, np.pi)
        length = rng.uniform(20, 120)
        y1 = int(np.clip(y0 + length * np.sin(ang), 0, size - 1))
        x1 = int(np.clip(x0 + length * np.cos(ang), 0, size - 1))
        rr, cc = line(int(y0), int(x0), y1, x1)
        mask[rr, cc] = True
    return ndi.binary_dilation(mask)


def best_of(fn, repeat):
    """(best wall seconds, CPU seconds of that run, result)."""
    best, out = (float("inf"), 0.0), None
    for _ in range(repeat):
        t0, c0 = time.perf_counter(), time.process_time()
        out = fn()
        run = (time.perf_counter() - t0, time.process_time() - c0)
        best = min(best, run)
    return best[0], best[1], out


def main():
    from napari_temdefect.quantify import quantify

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=4096)
    ap.add_argument("--objects", type=int, default=20000)
    ap.add_argument("--repeat", type=int, default=3)
    args = ap.parse_args()
    rng = np.random.default_rng(0)
    size, n = args.size, args.objects

    labels = blob_labels(size, n, rng)
    mask = labels > 0
    boundaries = grain_boundaries(size, n, rng)
    lines = line_network(size, n // 4, rng)

    cases = [
        ("blobs, instance labels", lambda: quantify(labels, "blobs", 0.5, min_size_px=0)),
        ("blobs, binary mask", lambda: quantify(mask, "blobs", 0.5, min_size_px=0)),
        ("blobs, mask + watershed split",
         lambda: quantify(mask, "blobs", 0.5, min_size_px=0, split_touching=True)),
        ("grains, boundary mask", lambda: quantify(boundaries, "grains", 0.5)),
        ("lines, segment network", lambda: quantify(lines, "lines", 0.5)),
    ]
    print(f"quantify on a {size}x{size} field; {platform.processor() or platform.machine()}, "
          f"{os.cpu_count()} CPUs; best of {args.repeat}")
    print(f"{'case':<32} {'objects':>8} {'wall s':>8} {'CPU s':>8} {'peak MB':>8}")
    for name, fn in cases:
        seconds, cpu, result = best_of(fn, args.repeat)
        count = len(result.objects)
        del result  # not counted in the next case's peak
        print(f"{name:<32} {count:>8} {seconds:>8.2f} {cpu:>8.2f} {peak_mb(fn):>8.0f}")


def peak_mb(fn) -> float:
    """Peak of the memory that one call of ``fn`` allocates (tracemalloc; numpy reports its
    array buffers to it), in MB."""
    import gc
    import tracemalloc

    gc.collect()
    tracemalloc.start()
    try:
        fn()
        return tracemalloc.get_traced_memory()[1] / 1e6
    finally:
        tracemalloc.stop()


if __name__ == "__main__":
    main()
