"""MaskFormer BasePixelDecoder (docs/reference-behaviour.md §4.3): FPN-like top-down path to a stride-4 mask feature.

Keys: "adapter_{1,2,3}" (1x1 lateral convs for res2..res4), "layer_{1..4}" (3x3 output convs,
layer_4 reads res5), each with ".norm" (GroupNorm(32)); "mask_features" (3x3 conv with bias).
"""
from typing import List, Optional

import torch.nn.functional as F
from torch import Tensor, nn

from .resnet import Conv2dNorm


def _make_norm(norm: str, channels: int) -> Optional[nn.Module]:
    if norm == "GN":
        return nn.GroupNorm(32, channels)
    if norm == "":
        return None
    raise ValueError(f"pixel decoder: SEM_SEG_HEAD.NORM {norm!r} is not supported (GN or empty)")


def _conv(in_ch: int, out_ch: int, k: int, norm: str) -> Conv2dNorm:
    n = _make_norm(norm, out_ch)
    conv = Conv2dNorm(in_ch, out_ch, k, padding=k // 2, bias=n is None, norm=n)
    nn.init.kaiming_uniform_(conv.weight, a=1)  # detectron2's c2_xavier_fill
    if conv.bias is not None:
        nn.init.zeros_(conv.bias)
    return conv


class BasePixelDecoder(nn.Module):
    """forward(res2, res3, res4, res5) -> mask_features [B, mask_dim, H/4, W/4]."""

    def __init__(self, in_channels: List[int], conv_dim: int = 256, mask_dim: int = 256, norm: str = "GN"):
        super().__init__()
        if len(in_channels) != 4:
            raise ValueError(f"pixel decoder: expected 4 input features, got {len(in_channels)}")
        # Registration order mirrors the checkpoint: adapter_i, layer_i for i = 1..3, then layer_4.
        self.adapter_1 = _conv(in_channels[0], conv_dim, 1, norm)
        self.layer_1 = _conv(conv_dim, conv_dim, 3, norm)
        self.adapter_2 = _conv(in_channels[1], conv_dim, 1, norm)
        self.layer_2 = _conv(conv_dim, conv_dim, 3, norm)
        self.adapter_3 = _conv(in_channels[2], conv_dim, 1, norm)
        self.layer_3 = _conv(conv_dim, conv_dim, 3, norm)
        self.layer_4 = _conv(in_channels[3], conv_dim, 3, norm)
        self.mask_features = nn.Conv2d(conv_dim, mask_dim, kernel_size=3, stride=1, padding=1)
        nn.init.kaiming_uniform_(self.mask_features.weight, a=1)
        nn.init.zeros_(self.mask_features.bias)

    def forward(self, res2: Tensor, res3: Tensor, res4: Tensor, res5: Tensor) -> Tensor:
        y = F.relu(self.layer_4(res5))
        lat = self.adapter_3(res4)
        y = F.relu(self.layer_3(lat + F.interpolate(y, size=lat.shape[-2:], mode="nearest")))
        lat = self.adapter_2(res3)
        y = F.relu(self.layer_2(lat + F.interpolate(y, size=lat.shape[-2:], mode="nearest")))
        lat = self.adapter_1(res2)
        y = F.relu(self.layer_1(lat + F.interpolate(y, size=lat.shape[-2:], mode="nearest")))
        return self.mask_features(y)
