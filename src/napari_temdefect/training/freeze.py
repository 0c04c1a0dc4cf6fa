"""Which layers train: the freezing policy (``depth``) and frozen BatchNorm.

* ``decoder``: the decoder and the segmentation head only; the whole encoder is frozen.
* ``deep`` (default): the decoder plus the deepest half of the encoder stages (at least one);
  the shallow stages (generic edge/texture filters) stay frozen, as in the seed paper.
* ``all``: every layer the forward pass uses.

Encoder stages are found by resolution: a dummy forward pass records the output size of every
encoder layer, and layers that downsample by 2**k form stage k. That works for any smp encoder
(ResNet, EfficientNet, ... and encoder_depth < 5) without relying on its attribute names.
DefectSegNet lists its stages itself (``module.encoder_stages``, shallow → deep).

BatchNorm running statistics in frozen parts never change (those BN layers stay in eval mode);
with ``freeze_bn=True`` (the default for fine-tuning) every BN layer keeps its statistics and
its affine parameters train only where the rest of its stage trains.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from ..errors import TemDefectError

DEPTHS = ("decoder", "deep", "all")
_BN = (nn.BatchNorm1d, nn.BatchNorm2d, nn.BatchNorm3d, nn.SyncBatchNorm)


def _own_params(m: nn.Module) -> bool:
    return any(True for _ in m.parameters(recurse=False)) or any(
        True for _ in m.buffers(recurse=False))


def _first_4d(out):
    if isinstance(out, torch.Tensor):
        return out if out.ndim == 4 else None
    if isinstance(out, (list, tuple)):
        for o in out:
            t = _first_4d(o)
            if t is not None:
                return t
    return None


def encoder_stages(module: nn.Module) -> tuple[list[list[nn.Module]], list[nn.Module]]:
    """Return (stages shallow → deep, each a list of modules; encoder modules never used).

    Raises :class:`TemDefectError` for a network without a recognisable encoder.
    """
    stages = getattr(module, "encoder_stages", None)
    if stages is not None:
        return [[s] for s in stages], []
    encoder = getattr(module, "encoder", None)
    if not isinstance(encoder, nn.Module):
        raise TemDefectError(
            f"{type(module).__name__} has no encoder the freezing policy understands; "
            "use depth='all'."
        )
    leaves = [m for m in encoder.modules() if _own_params(m)]
    factor: dict[int, int] = {}
    size = 64
    in_ch = next((m.in_channels for m in encoder.modules() if isinstance(m, nn.Conv2d)), 1)

    order: list[int] = []

    def hook(mod, _inp, out):
        if id(mod) in factor:
            return
        t = _first_4d(out)
        if t is not None:
            factor[id(mod)] = max(1, round(size / t.shape[-2]))
        else:  # e.g. a token/embedding layer: it belongs with the layer that ran before it
            factor[id(mod)] = factor[order[-1]] if order else 1
        order.append(id(mod))

    handles = [m.register_forward_hook(hook) for m in leaves]
    was_training = encoder.training
    try:
        device = next(encoder.parameters()).device
        encoder.eval()
        with torch.no_grad():
            encoder(torch.zeros(1, in_ch, size, size, device=device))
    except Exception as exc:  # pragma: no cover - exotic encoders
        raise TemDefectError(
            f"Could not find the stages of encoder {type(encoder).__name__} ({exc}); "
            "use depth='all'."
        ) from exc
    finally:
        for h in handles:
            h.remove()
        encoder.train(was_training)
    by_level: dict[int, list[nn.Module]] = {}
    unused = []
    for m in leaves:
        if id(m) in factor:
            by_level.setdefault(int(round(math.log2(factor[id(m)]))), []).append(m)
        else:
            unused.append(m)
    return [by_level[k] for k in sorted(by_level)], unused


@dataclass
class FreezeState:
    depth: str
    #: BatchNorm modules that must stay in eval mode while training
    frozen_bn: list = field(default_factory=list)
    trainable: int = 0
    total: int = 0
    trained_stages: int = 0
    stages: int = 0


def apply_freeze(module: nn.Module, depth: str = "deep", freeze_bn: bool = True) -> FreezeState:
    """Set ``requires_grad`` according to ``depth`` and return the BN layers to keep in eval."""
    depth = str(depth).lower()
    if depth not in DEPTHS:
        raise TemDefectError(f"Unknown depth {depth!r}; use one of {', '.join(DEPTHS)}.")
    for p in module.parameters():
        p.requires_grad_(True)
    frozen_modules: list[nn.Module] = []
    n_stages = n_train = 0
    try:
        stages, unused = encoder_stages(module)
    except TemDefectError:
        if depth != "all":
            raise
        stages, unused = [], []
    n_stages = len(stages)
    frozen_modules += unused  # never used by the forward pass: nothing to train
    if depth == "decoder":
        n_train = 0
    elif depth == "deep":
        n_train = max(1, n_stages // 2)
    else:
        n_train = n_stages
    for stage in stages[: n_stages - n_train]:
        frozen_modules += stage
    frozen_ids = set()
    for m in frozen_modules:
        for sub in m.modules():
            frozen_ids.add(id(sub))
            for p in sub.parameters(recurse=False):
                p.requires_grad_(False)
    frozen_bn = [m for m in module.modules()
                 if isinstance(m, _BN) and (freeze_bn or id(m) in frozen_ids)]
    return FreezeState(depth=depth, frozen_bn=frozen_bn,
                       trainable=trainable_parameter_count(module),
                       total=sum(p.numel() for p in module.parameters()),
                       trained_stages=n_train, stages=n_stages)


def set_train_mode(module: nn.Module, state: FreezeState) -> None:
    """``module.train()`` but with the frozen BatchNorm layers in eval mode."""
    module.train()
    for bn in state.frozen_bn:
        bn.eval()


def unfreeze(module: nn.Module) -> None:
    for p in module.parameters():
        p.requires_grad_(True)


def trainable_parameter_count(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters() if p.requires_grad)
