"""Time the synthetic generator and the file reader (prints a table; not a test).

    python benchmarks/bench_synthetic.py [--repeat 5]

Target: a 512² synthetic micrograph of any kind in well under 0.5 s on one CPU core, so
training can make data on the fly.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

import numpy as np

from napari_temdefect.io import read_image, write_tiff
from napari_temdefect.synthetic import make_micrograph


def _best(fn, repeat):
    times = []
    for i in range(repeat):
        t = time.perf_counter()
        fn(i)
        times.append(time.perf_counter() - t)
    return min(times), float(np.median(times))


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--repeat", type=int, default=5)
    args = ap.parse_args()
    print(f"{'task':<34}{'size':>10}{'best s':>9}{'median s':>10}")
    for kind in ("grains", "bubbles", "loops", "dislocations", "grains+bubbles"):
        for size in (256, 512, 1024):
            best, med = _best(lambda i: make_micrograph(kind, size=size, seed=i), args.repeat)
            print(f"{'synthetic ' + kind:<34}{f'{size}²':>10}{best:>9.3f}{med:>10.3f}")
    with tempfile.TemporaryDirectory() as tmp:
        img = make_micrograph("bubbles", size=2048, seed=0, dtype="uint16").image
        path = write_tiff(Path(tmp) / "a.tif", img, pixel_size_nm=0.25)
        best, med = _best(lambda i: read_image(path), args.repeat)
        print(f"{'read_image ImageJ TIFF uint16':<34}{'2048²':>10}{best:>9.3f}{med:>10.3f}")


if __name__ == "__main__":
    main()
