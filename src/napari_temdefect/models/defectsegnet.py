"""DefectSegNet (Roberts et al., "Deep learning for semantic segmentation of defects in advanced
STEM images of steels", Sci. Rep. 9, 12744, 2019), written in plain torch.

An encoder–decoder in which

* the encoder is a series of dense blocks (each layer sees the concatenation of every earlier
  layer of the block) separated by 2×2 max-pooling;
* the decoder upsamples with transposed convolutions;
* every encoder feature map at a resolution is fed to every decoder layer at that resolution
  (dense skip connections across the U, not only the block output as in U-Net).
"""

from __future__ import annotations

import torch
from torch import nn


def _conv(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)
    )


class DenseBlock(nn.Module):
    """``n_layers`` 3×3 conv layers; each sees its input plus all previous layers' outputs.

    ``forward`` returns the list of feature maps [input, layer1, ..., layerN] so that callers
    can pass every one of them on.
    """

    def __init__(self, cin: int, growth: int, n_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(_conv(cin + i * growth, growth) for i in range(n_layers))
        self.out_channels = cin + n_layers * growth

    def forward(self, x: torch.Tensor) -> list[torch.Tensor]:
        maps = [x]
        for layer in self.layers:
            maps.append(layer(torch.cat(maps, 1)))
        return maps


class DefectSegNet(nn.Module):
    def __init__(
        self,
        in_channels: int = 1,
        classes: int = 1,
        depth: int = 3,
        growth_rate: int = 16,
        layers_per_block: int = 3,
        stem_channels: int = 16,
    ):
        super().__init__()
        self.depth = depth
        self.stem = _conv(in_channels, stem_channels)
        self.down = nn.ModuleList()
        ch = stem_channels
        skip_channels = []
        for _ in range(depth):
            block = DenseBlock(ch, growth_rate, layers_per_block)
            self.down.append(block)
            ch = block.out_channels
            skip_channels.append(ch)  # all maps of the block, concatenated
        self.pool = nn.MaxPool2d(2)
        self.bottleneck = DenseBlock(ch, growth_rate, layers_per_block)
        ch = self.bottleneck.out_channels
        self.up = nn.ModuleList()
        self.up_blocks = nn.ModuleList()
        for level in reversed(range(depth)):
            up_ch = max(growth_rate * 2, ch // 2)
            self.up.append(nn.ConvTranspose2d(ch, up_ch, 2, stride=2))
            block = DenseBlock(up_ch + skip_channels[level], growth_rate, layers_per_block)
            self.up_blocks.append(block)
            ch = block.out_channels
        self.head = nn.Conv2d(ch, classes, 1)
        # Attributes used by the freezing policy: shallow → deep encoder stages.
        self.encoder_stages = [self.stem, *self.down, self.bottleneck]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        mult = 2**self.depth
        ph, pw = (-h) % mult, (-w) % mult
        if ph or pw:
            x = nn.functional.pad(x, (0, pw, 0, ph), mode="reflect" if min(h, w) > max(ph, pw) else "replicate")
        x = self.stem(x)
        skips = []
        for block in self.down:
            maps = block(x)
            skips.append(torch.cat(maps, 1))  # every encoder map at this resolution
            x = self.pool(skips[-1])
        x = torch.cat(self.bottleneck(x), 1)
        for up, block, skip in zip(self.up, self.up_blocks, reversed(skips)):
            x = up(x)
            x = torch.cat(block(torch.cat([x, skip], 1)), 1)
        out = self.head(x)
        return out[..., :h, :w]
