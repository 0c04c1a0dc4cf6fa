"""A minimal Gatan DigitalMicrograph 3/4 (.dm3/.dm4) writer, for tests only.

rosettasciio reads DM3 but writes none, so the reader tests make their own files. Layout (as
documented by C. Boothroyd and implemented by rosettasciio's reader): a big-endian header
(version 3, file length, byte-order flag 1 = little-endian data), then a tree of tag groups and
data tags. A data tag is ``%%%%``, the length of its type description and the type description
(all big-endian), then the value in the file's byte order. The image sits in
``ImageList/<group>/ImageData`` with ``Data``, ``DataType``, ``Dimensions`` (x first) and
``Calibrations/Dimension`` (Origin, Scale, Units per axis, x first). DM4 differs only in using
8-byte counts and lengths, and an 8-byte byte count after every tag name.
"""

from __future__ import annotations

import struct

import numpy as np

# DM image DataType codes and the tag element type with the same byte size.
_DATATYPE = {
    np.dtype(np.int16): (1, 2), np.dtype(np.float32): (2, 6), np.dtype(np.uint8): (6, 10),
    np.dtype(np.int32): (7, 3), np.dtype(np.int8): (9, 9), np.dtype(np.uint16): (10, 4),
    np.dtype(np.uint32): (11, 5), np.dtype(np.float64): (12, 7),
}


class _Group(list):
    """Ordered (name, value) pairs; a value is a _Group, str, bool, int, float or ndarray."""


def _header(name: str) -> bytes:
    raw = name.encode("latin-1")
    return struct.pack(">H", len(raw)) + raw


def _counts(version: int, *values: int) -> bytes:
    return struct.pack(">" + ("Q" if version == 4 else "I") * len(values), *values)


def _data_tag(name: str, value, version: int) -> bytes:
    if isinstance(value, str):  # strings are arrays of uint16 characters
        chars = np.array([ord(c) for c in value], dtype="<u2")
        body = _counts(version, 3, 20, 4, len(chars)) + chars.tobytes()
    elif isinstance(value, np.ndarray):
        _, eltype = _DATATYPE[value.dtype]
        flat = np.ascontiguousarray(value).ravel().astype(value.dtype.newbyteorder("<"))
        body = _counts(version, 3, 20, eltype, flat.size) + flat.tobytes()
    elif isinstance(value, bool):
        body = _counts(version, 1, 8) + struct.pack("<?", value)
    elif isinstance(value, int):
        body = _counts(version, 1, 3) + struct.pack("<i", value)
    elif isinstance(value, float):
        body = _counts(version, 1, 7) + struct.pack("<d", value)
    else:
        raise TypeError(f"cannot encode {type(value)}")
    body = b"%%%%" + body
    size = struct.pack(">Q", len(body)) if version == 4 else b""
    return b"\x15" + _header(name) + size + body


def _group_body(group: _Group, version: int) -> bytes:
    out = struct.pack(">BB", 0, 1) + _counts(version, len(group))
    for name, value in group:
        if isinstance(value, _Group):
            inner = _group_body(value, version)
            size = struct.pack(">Q", len(inner)) if version == 4 else b""
            out += b"\x14" + _header(name) + size + inner
        else:
            out += _data_tag(name, value, version)
    return out


def write_dm3(path, image: np.ndarray, scale: float = 1.0, units: str = "",
              name: str = "test image", voltage_v: float = 200_000.0, version: int = 3) -> None:
    """Write ``image`` (2D, or 3D frames-first) with the same ``scale`` and ``units`` on x and y;
    ``version=4`` writes a .dm4 layout."""
    image = np.asarray(image)
    if image.dtype not in _DATATYPE:
        raise TypeError(f"unsupported dtype {image.dtype}")
    datatype, _ = _DATATYPE[image.dtype]
    shape_xyz = image.shape[::-1]
    dims = _Group(("", int(n)) for n in shape_xyz)
    calib = _Group()
    for i in range(image.ndim):
        spatial = i < 2
        calib.append(("", _Group([("Origin", 0.0), ("Scale", float(scale) if spatial else 1.0),
                                  ("Units", units if spatial else "")])))
    image_data = _Group([
        ("Calibrations", _Group([
            ("Brightness", _Group([("Origin", 0.0), ("Scale", 1.0), ("Units", "Counts")])),
            ("Dimension", calib),
            ("DisplayCalibratedUnits", True),
        ])),
        ("Data", image),
        ("DataType", datatype),
        ("Dimensions", dims),
        ("PixelDepth", int(image.dtype.itemsize)),
    ])
    image_tags = _Group([
        ("Microscope Info", _Group([("Voltage", float(voltage_v)),
                                    ("Illumination Mode", "TEM")])),
    ])
    root = _Group([
        ("ImageList", _Group([("", _Group([("ImageData", image_data),
                                           ("ImageTags", image_tags),
                                           ("Name", name)]))])),
    ])
    body = _group_body(root, version)
    with open(path, "wb") as fh:
        fh.write(struct.pack(">I", version) + _counts(version, len(body))
                 + struct.pack(">I", 1) + body + b"\x00" * 8)
