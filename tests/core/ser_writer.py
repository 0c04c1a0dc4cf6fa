"""A minimal FEI/Thermo TIA ``.ser`` writer (one 2D image), for tests only.

Layout from the TIA series-file description (Boothroyd) as read by rosettasciio: a little-endian
header (byte order 0x4949, series id 0x0197, version 0x0210, data type 0x4122 = 2D image, tag type
0x4152 = time only, element counts, offset-array offset, number of dimensions), one dimension
record, the data-offset and tag-offset arrays, then the element: x/y calibration (offset, delta
in metres, element), data type, size x, size y and the pixels stored bottom row first, followed
by its time tag.
"""

from __future__ import annotations

import struct

import numpy as np

_TYPES = {np.dtype(np.uint8): 1, np.dtype(np.uint16): 2, np.dtype(np.uint32): 3,
          np.dtype(np.int8): 4, np.dtype(np.int16): 5, np.dtype(np.int32): 6,
          np.dtype(np.float32): 7, np.dtype(np.float64): 8}


def write_ser(path, image: np.ndarray, pixel_size_m: float) -> None:
    image = np.asarray(image)
    ny, nx = image.shape
    dim = struct.pack("<IddII", 1, 0.0, 1.0, 0, 0) + struct.pack("<I", 0)  # size 1, no text
    header_len = 30 + len(dim)
    offset_array_offset = header_len
    data_offset = offset_array_offset + 8  # one u4 data offset + one u4 tag offset
    element = struct.pack("<ddIddIHII", 0.0, pixel_size_m, 0, 0.0, pixel_size_m, 0,
                          _TYPES[image.dtype], nx, ny)
    pixels = np.ascontiguousarray(image[::-1]).astype(image.dtype.newbyteorder("<")).tobytes()
    tag_offset = data_offset + len(element) + len(pixels)
    tag = struct.pack("<HHI", 0x4152, 0, 0)
    header = struct.pack("<HHHIIIIII", 0x4949, 0x0197, 0x0210, 0x4122, 0x4152, 1, 1,
                         offset_array_offset, 1)
    with open(path, "wb") as fh:
        fh.write(header + dim + struct.pack("<II", data_offset, tag_offset)
                 + element + pixels + tag)
