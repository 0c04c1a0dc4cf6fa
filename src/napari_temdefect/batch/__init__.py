"""Batch processing at scale: folders and globs, Dask clusters, and huge montages.

* :func:`run_batch` — every micrograph of files/folders/globs, serially or on a Dask cluster
  (``scheduler="local:2"`` or ``"tcp://host:port"``), resumable, one summary CSV per batch.
* :mod:`.montage` — one image larger than memory (zarr, tiled/BigTIFF), block by block.

See docs/batch.md.
"""

from .inputs import expand_inputs, output_names
from .runner import BatchResult, BatchSettings, ImageOutcome, process_image, run_batch

__all__ = ["BatchResult", "BatchSettings", "ImageOutcome", "expand_inputs", "output_names",
           "process_image", "run_batch"]
