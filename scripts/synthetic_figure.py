"""Side-by-side figure of real micrographs (../shared/data) and synthetic ones.

    python scripts/synthetic_figure.py [out.png]   (default docs/images/synthetic_vs_real.png)

Top row: full 1024² fields of view; bottom row: 256 px crops at full resolution. Real images are
uncalibrated; synthetic ones use the sample-data pixel sizes.
"""

from __future__ import annotations

import sys
from pathlib import Path

import imageio.v3 as iio
import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from napari_temdefect.synthetic import make_micrograph  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data"


def _real(rel):
    im = iio.imread(DATA / rel)
    return im[..., 0] if im.ndim == 3 else im


def main(out: Path) -> None:
    panels = [
        ("real: UO$_2$ grains (gb1)", _real("uo2_grain_boundaries/images/gb1.jpg"), (384, 384)),
        ("synthetic: grains, 0.5 nm/px", make_micrograph("grains", size=1024, seed=3).image,
         (384, 384)),
        ("real: He bubbles (bubble1)", _real("he_bubbles/images/bubble1.jpg"), (384, 384)),
        ("synthetic: bubbles, 0.25 nm/px", make_micrograph("bubbles", size=1024, seed=3).image,
         (384, 384)),
        ("synthetic: loops, 0.25 nm/px", make_micrograph("loops", size=1024, seed=3).image,
         (384, 384)),
        ("synthetic: dislocations, 0.25 nm/px",
         make_micrograph("dislocations", size=1024, seed=3).image, (300, 700)),
    ]
    fig, axes = plt.subplots(2, len(panels), figsize=(3.0 * len(panels), 6.2), dpi=60)
    for col, (title, im, (y0, x0)) in enumerate(panels):
        lo, hi = np.percentile(im, [0.5, 99.5])
        axes[0, col].imshow(im, cmap="gray", vmin=lo, vmax=hi)
        axes[0, col].set_title(title, fontsize=8)
        axes[1, col].imshow(im[y0:y0 + 256, x0:x0 + 256], cmap="gray", vmin=lo, vmax=hi,
                            interpolation="nearest")
        axes[1, col].set_xlabel("256 px crop", fontsize=7)
    for ax in axes.ravel():
        ax.set_xticks([])
        ax.set_yticks([])
    fig.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.canvas.draw()
    rgba = np.asarray(fig.canvas.buffer_rgba())
    plt.close(fig)
    from PIL import Image

    # the figure is grey: store one 8-bit channel so the PNG stays small (< 300 kB)
    Image.fromarray(rgba[..., :3].mean(-1).round().astype(np.uint8)).save(out, optimize=True)
    print(out, out.stat().st_size // 1024, "kB")


if __name__ == "__main__":
    main(Path(sys.argv[1]) if len(sys.argv) > 1 else ROOT / "docs/images/synthetic_vs_real.png")
