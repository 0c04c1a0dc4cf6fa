"""Command-line options shared by several subcommands (defined once so they never drift)."""

from __future__ import annotations

from ..device import DEVICE_CHOICES


def add_inference_options(p) -> None:
    """Device, tiling, TTA, threshold and contrast inversion: the options of every command
    that runs `predict`."""
    p.add_argument("--device", default="auto", choices=DEVICE_CHOICES,
                   help="compute device (default: auto = cuda, then mps, then cpu)")
    p.add_argument("--tile", type=int, default=None, metavar="N",
                   help="largest tile side in px (default: automatic for the device)")
    p.add_argument("--overlap", type=float, default=None, metavar="F",
                   help="tile overlap: fraction of the tile if < 1, else pixels (default: auto)")
    p.add_argument("--batch-size", type=int, default=None, metavar="B",
                   help="tiles per forward pass (default: automatic)")
    p.add_argument("--tta", action="store_true",
                   help="average the 8 flips/rotations (about 8× slower, better confidence)")
    p.add_argument("--threshold", type=float, default=None, metavar="T",
                   help="probability above which a pixel is a defect (default: the model's "
                        "operating threshold, listed by `temdefect models`)")
    p.add_argument("--invert", action="store_true",
                   help="invert the contrast before the model (e.g. over-focus bubbles, dark "
                        "with a bright fringe, with the bundled bubble model, trained on "
                        "under-focus ones)")
