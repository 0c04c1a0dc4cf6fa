"""A full-resolution skip for the smp U-Net family (spec option ``full_resolution_skip``).

smp's U-Net decoder takes its skips from encoder strides 2, 4, 8, ...: the identity feature
is dropped, so the last decoder block upsamples from stride 2 with nothing at the input's own
resolution to place an edge by. Boundaries a few pixels wide are then drawn about a pixel too
wide and placed by interpolation. ``full_resolution_skip=W`` adds two 3×3 convolutions of width
``W`` on the input image and one 3×3 fusion with the decoder's last features before the
segmentation head. It is part of the decoder side: it trains whenever the decoder trains.
"""

from __future__ import annotations

import torch
from torch import nn


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout),
                         nn.ReLU(inplace=True))


class FullResolutionSkip(nn.Module):
    """``unet`` (an smp U-Net / U-Net++) with a skip at the input's resolution."""

    def __init__(self, unet: nn.Module, in_channels: int, width: int, decoder_width: int):
        super().__init__()
        self.encoder = unet.encoder
        self.decoder = unet.decoder
        self.segmentation_head = unet.segmentation_head
        self.full_resolution = nn.Sequential(_conv(in_channels, width), _conv(width, width))
        self.fuse = _conv(decoder_width + width, decoder_width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        d = self.decoder(self.encoder(x))
        d = self.fuse(torch.cat([d, self.full_resolution(x)], dim=1))
        return self.segmentation_head(d)
