"""Building a torch module from a :class:`ModelSpec`."""

from __future__ import annotations

import dataclasses

from torch import nn

from ..errors import TemDefectError
from .spec import ModelSpec

_SMP_CLASSES = {"unet": "Unet", "unetplusplus": "UnetPlusPlus", "deeplabv3plus": "DeepLabV3Plus"}


def build_module(spec: ModelSpec, encoder_weights: str | None = None) -> nn.Module:
    """Build the network for ``spec``.

    ``encoder_weights``: None (random init), ``"imagenet"`` (smp's own download, cached), or a
    path to a local weights file for the encoder (see :mod:`.pretrained`).
    """
    try:
        return _build(spec, encoder_weights)
    except (TypeError, ValueError) as exc:  # an option the network's constructor refuses
        options = ", ".join(f"{k}={v!r}" for k, v in spec.options.items()) or "none"
        raise TemDefectError(
            f"The model options ({options}) do not fit {spec.arch}"
            f"{'' if spec.arch == 'defectsegnet' else ' / ' + str(spec.encoder)}: {exc}; "
            "fix or remove them.") from exc


def _build(spec: ModelSpec, encoder_weights: str | None) -> nn.Module:
    if spec.arch == "defectsegnet":
        from .defectsegnet import DefectSegNet

        if encoder_weights:
            raise TemDefectError("DefectSegNet has no pretrained encoder; use encoder_weights=None.")
        return DefectSegNet(in_channels=spec.in_channels, classes=spec.num_classes, **spec.options)

    from .._llvm import avoid_llvm_clash

    avoid_llvm_clash()  # before smp imports torchvision (-> triton)
    import segmentation_models_pytorch as smp

    cls = getattr(smp, _SMP_CLASSES[spec.arch])
    _check_decoder_options(spec)
    skip = _full_resolution_width(spec)
    if skip:  # ours, not smp's: built around the smp network below
        spec = dataclasses.replace(spec, options={k: v for k, v in spec.options.items()
                                                  if k != FULL_RESOLUTION})
    try:
        if encoder_weights == "imagenet":
            from .pretrained import build_with_imagenet

            module = _drop_unused_stages(build_with_imagenet(cls, spec), spec)
            return _with_full_resolution(module, spec, skip)
        module = cls(
            encoder_name=spec.encoder,
            encoder_weights=None,
            in_channels=spec.in_channels,
            classes=spec.num_classes,
            **spec.options,
        )
    except KeyError as exc:
        raise TemDefectError(
            f"Unknown encoder {spec.encoder!r} for {spec.arch}; see "
            "segmentation_models_pytorch.encoders.get_encoder_names() for valid names."
        ) from exc
    if encoder_weights:
        from .pretrained import load_encoder_weights

        load_encoder_weights(module, encoder_weights)
    return _with_full_resolution(_drop_unused_stages(module, spec), spec, skip)


#: spec option: width of the full-resolution skip (:mod:`.fullres`); 0 or absent: none
FULL_RESOLUTION = "full_resolution_skip"


def _full_resolution_width(spec: ModelSpec) -> int:
    width = spec.options.get(FULL_RESOLUTION, 0)
    if width in (0, None, False):
        return 0
    if spec.arch not in ("unet", "unetplusplus") or isinstance(width, bool) or not (
            isinstance(width, int) and 1 <= width <= 256):
        raise TemDefectError(
            f"{FULL_RESOLUTION}={width!r} is not valid for {spec.arch}; it takes a width of "
            "1-256 channels, on unet or unetplusplus only.")
    return width


def _with_full_resolution(module: nn.Module, spec: ModelSpec, width: int) -> nn.Module:
    if not width:
        return module
    from .fullres import FullResolutionSkip

    widths = spec.options.get("decoder_channels") or _UNET_DECODER
    return FullResolutionSkip(module, spec.in_channels, width, int(widths[-1]))


#: smp's U-Net decoder widths for a depth-5 encoder; a shallower encoder takes the first ones
_UNET_DECODER = (256, 128, 64, 32, 16)


def _check_decoder_options(spec: ModelSpec) -> None:
    """U-Net family: one decoder width per encoder stage. ``encoder_depth`` alone gets smp's
    default widths for that depth (smp itself insists on five); a mismatch is one sentence."""
    if spec.arch not in ("unet", "unetplusplus"):
        return
    opts = spec.options
    depth = int(opts.get("encoder_depth", 5))
    if not 3 <= depth <= 5:
        raise TemDefectError(f"encoder_depth {depth} is out of range; use 3, 4 or 5.")
    widths = opts.get("decoder_channels")
    if widths is None:
        if depth != 5:
            opts["decoder_channels"] = list(_UNET_DECODER[:depth])
    elif len(widths) != depth:
        raise TemDefectError(
            f"{len(widths)} decoder widths for an encoder of depth {depth}; give one width per "
            f"encoder stage ({depth}, e.g. {' '.join(map(str, _UNET_DECODER[:depth]))}).")


def _drop_unused_stages(module: nn.Module, spec: ModelSpec) -> nn.Module:
    """smp keeps encoder parts that its forward never runs; drop them so that they are neither
    trained nor shipped:

    * ResNet stages beyond ``encoder_depth`` (resnet18 at depth 4 would carry 8.4 M dead
      parameters);
    * timm EfficientNet(-Lite) blocks beyond ``encoder_depth`` and, at any depth, the
      classification head's ``conv_head`` / ``bn2`` (1280 channels; 0.6 M of Lite0's 3.4 M).
    """
    depth = int(spec.options.get("encoder_depth", 5))
    encoder = getattr(module, "encoder", None)
    kind = type(encoder).__name__
    if kind == "ResNetEncoder":
        for stage in range(max(depth, 1), 5):  # layer{stage} is run only when depth > stage
            if hasattr(encoder, f"layer{stage}"):
                delattr(encoder, f"layer{stage}")
    elif kind in ("EfficientNetLiteEncoder", "EfficientNetEncoder") and hasattr(encoder, "blocks"):
        # forward runs blocks[:2] at depth 2, [:3] at 3, [:5] at 4, all at 5
        keep = {1: 0, 2: 2, 3: 3, 4: 5}.get(depth, len(encoder.blocks))
        encoder.blocks = encoder.blocks[:keep]
        for name in ("conv_head", "bn2"):
            if hasattr(encoder, name):
                delattr(encoder, name)
    return module
