"""The small, JSON-serialisable description from which every model is built."""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from ..errors import TemDefectError
from ..preprocess import DEFAULT_NORMALIZATION

#: Architectures and the library that builds them.
ARCHITECTURES = {
    "unet": "segmentation-models-pytorch Unet",
    "unetplusplus": "segmentation-models-pytorch UnetPlusPlus",
    "deeplabv3plus": "segmentation-models-pytorch DeepLabV3Plus",
    "defectsegnet": "DefectSegNet (Roberts et al., Sci. Rep. 2019), written in torch",
}
_ALIASES = {"u-net": "unet", "unet++": "unetplusplus", "u-net++": "unetplusplus",
            "deeplabv3+": "deeplabv3plus", "deeplab": "deeplabv3plus"}


@dataclass
class ModelSpec:
    """Everything needed to rebuild a network and to feed it correctly.

    The network outputs one logit channel per entry of ``classes``; each is a sigmoid
    probability (classes may overlap, and "background" is never a class).
    """

    arch: str = "unet"
    encoder: str = "resnet18"
    in_channels: int = 1
    classes: list[str] = field(default_factory=lambda: ["defect"])
    normalization: dict = field(default_factory=lambda: dict(DEFAULT_NORMALIZATION))
    pixel_size_nm: float | None = None
    #: extra keyword arguments for the architecture (e.g. decoder_channels, growth_rate)
    options: dict = field(default_factory=dict)

    def __post_init__(self):
        arch = _ALIASES.get(str(self.arch).lower(), str(self.arch).lower())
        if arch not in ARCHITECTURES:
            raise TemDefectError(
                f"Unknown architecture {self.arch!r}; use one of {', '.join(ARCHITECTURES)}."
            )
        self.arch = arch
        if isinstance(self.classes, str):
            self.classes = [self.classes]
        self.classes = [str(c) for c in self.classes]
        if not self.classes:
            raise TemDefectError("A model needs at least one class name, e.g. ['defect'].")
        if len(self.classes) > 255:
            raise TemDefectError(
                f"A model can have at most 255 classes (got {len(self.classes)}); the mask "
                "stores one class number per pixel in 8 bits.")
        if int(self.in_channels) < 1:
            raise TemDefectError("in_channels must be at least 1.")
        self.in_channels = int(self.in_channels)
        # JSON-normalise so a spec equals itself after a save/load round trip (tuples→lists)
        self.options = json.loads(json.dumps(self.options or {}))
        self.normalization = json.loads(json.dumps(self.normalization or {}))
        method = self.normalization.get("method", "percentile")
        if method not in ("percentile", "zscore"):
            raise TemDefectError(
                f"Unknown normalisation method {method!r}; use 'percentile' or 'zscore'.")

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "ModelSpec":
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(data) - known
        if unknown:
            raise TemDefectError(
                f"The model metadata has unknown spec fields {sorted(unknown)}; "
                "it was written by a newer napari-temdefect, so upgrade."
            )
        return cls(**data)
