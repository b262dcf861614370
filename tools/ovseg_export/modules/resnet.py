"""detectron2-style ResNet with the DeepLab stem ("R101c", SPEC §4.2), TorchScript-scriptable.

Key names follow the checkpoint (SPEC §2.3): "stem.conv{1,2,3}", "res{2..5}.{i}.conv{1,2,3}",
"res{2..5}.0.shortcut", each conv carrying its norm as "<conv>.norm.*".
"""
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


class FrozenBatchNorm2d(nn.Module):
    """BatchNorm with fixed statistics; all four tensors are (persistent) buffers."""

    def __init__(self, num_features: int, eps: float = 1e-5):
        super().__init__()
        self.eps = eps
        self.register_buffer("weight", torch.ones(num_features))
        self.register_buffer("bias", torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_var", torch.ones(num_features) - eps)

    def forward(self, x: Tensor) -> Tensor:
        # detectron2 uses the fused inference batch_norm when no gradient is needed.
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            False, 0.0, self.eps)


class Conv2dNorm(nn.Conv2d):
    """Conv2d followed by an optional norm stored as the child "norm" (detectron2 layout)."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, dilation: int = 1, groups: int = 1, bias: bool = False,
                 norm: Optional[nn.Module] = None):
        super().__init__(in_channels, out_channels, kernel_size, stride=stride, padding=padding,
                         dilation=dilation, groups=groups, bias=bias)
        self.norm = norm

    def forward(self, x: Tensor) -> Tensor:
        x = self._conv_forward(x, self.weight, self.bias)
        if self.norm is not None:
            x = self.norm(x)
        return x


def _conv_bn(in_ch: int, out_ch: int, k: int, stride: int = 1, padding: int = 0,
             dilation: int = 1, groups: int = 1) -> Conv2dNorm:
    conv = Conv2dNorm(in_ch, out_ch, k, stride=stride, padding=padding, dilation=dilation,
                      groups=groups, bias=False, norm=FrozenBatchNorm2d(out_ch))
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


class BottleneckBlock(nn.Module):
    def __init__(self, in_channels: int, out_channels: int, bottleneck_channels: int,
                 stride: int, num_groups: int, stride_in_1x1: bool, dilation: int):
        super().__init__()
        if in_channels != out_channels:
            self.shortcut: Optional[nn.Module] = _conv_bn(in_channels, out_channels, 1,
                                                          stride=stride)
        else:
            self.shortcut = None
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = _conv_bn(in_channels, bottleneck_channels, 1, stride=s1)
        self.conv2 = _conv_bn(bottleneck_channels, bottleneck_channels, 3, stride=s3,
                              padding=dilation, dilation=dilation, groups=num_groups)
        self.conv3 = _conv_bn(bottleneck_channels, out_channels, 1)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu_(self.conv1(x))
        out = F.relu_(self.conv2(out))
        out = self.conv3(out)
        if self.shortcut is not None:
            out += self.shortcut(x)
        else:
            out += x
        return F.relu_(out)


class DeepLabStem(nn.Module):
    """3x3 s2 (3->C/2), 3x3 (C/2->C/2), 3x3 (C/2->C), each + BN + ReLU, then max-pool 3/2/1."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = _conv_bn(in_channels, out_channels // 2, 3, stride=2, padding=1)
        self.conv2 = _conv_bn(out_channels // 2, out_channels // 2, 3, stride=1, padding=1)
        self.conv3 = _conv_bn(out_channels // 2, out_channels, 3, stride=1, padding=1)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu_(self.conv1(x))
        x = F.relu_(self.conv2(x))
        x = F.relu_(self.conv3(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


class BasicStem(nn.Module):
    """7x7 s2 conv + BN + ReLU, then max-pool 3/2/1 (STEM_TYPE "basic")."""

    def __init__(self, in_channels: int, out_channels: int):
        super().__init__()
        self.conv1 = _conv_bn(in_channels, out_channels, 7, stride=2, padding=3)

    def forward(self, x: Tensor) -> Tensor:
        x = F.relu_(self.conv1(x))
        return F.max_pool2d(x, kernel_size=3, stride=2, padding=1)


_BLOCKS_PER_DEPTH = {50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}


class DeepLabResNet(nn.Module):
    """forward(x [B,3,H,W]) -> (res2, res3, res4, res5) at strides 4, 8, 16, 32."""

    def __init__(self, depth: int = 101, stem_type: str = "deeplab", stem_out_channels: int = 128,
                 res2_out_channels: int = 256, num_groups: int = 1, width_per_group: int = 64,
                 stride_in_1x1: bool = False, res4_dilation: int = 1, res5_dilation: int = 1,
                 res5_multi_grid: Optional[List[int]] = None, in_channels: int = 3):
        super().__init__()
        if depth not in _BLOCKS_PER_DEPTH:
            raise ValueError(f"ResNet backbone: DEPTH {depth} is not supported (50, 101, 152)")
        if res4_dilation not in (1, 2) or res5_dilation not in (1, 2):
            raise ValueError("ResNet backbone: RES4_DILATION/RES5_DILATION must be 1 or 2")
        multi_grid = [1, 2, 4] if res5_multi_grid is None else list(res5_multi_grid)
        num_blocks = _BLOCKS_PER_DEPTH[depth]
        if len(multi_grid) != num_blocks[3]:
            raise ValueError(f"ResNet backbone: RES5_MULTI_GRID {multi_grid} needs "
                             f"{num_blocks[3]} entries")
        if stem_type == "deeplab":
            self.stem: nn.Module = DeepLabStem(in_channels, stem_out_channels)
        elif stem_type == "basic":
            self.stem = BasicStem(in_channels, stem_out_channels)
        else:
            raise ValueError(f"ResNet backbone: STEM_TYPE {stem_type!r} is not supported")

        bottleneck = num_groups * width_per_group
        in_ch = stem_out_channels
        out_ch = res2_out_channels
        self.out_channels: List[int] = []
        stages: List[nn.Sequential] = []
        for idx, stage_idx in enumerate(range(2, 6)):
            dilation = res4_dilation if stage_idx == 4 else (res5_dilation if stage_idx == 5 else 1)
            first_stride = 1 if idx == 0 or dilation == 2 else 2
            if stage_idx == 5:
                dilations = [dilation * g for g in multi_grid]
            else:
                dilations = [dilation] * num_blocks[idx]
            blocks = []
            for i in range(num_blocks[idx]):
                blocks.append(BottleneckBlock(in_ch if i == 0 else out_ch, out_ch, bottleneck,
                                              first_stride if i == 0 else 1, num_groups,
                                              stride_in_1x1, dilations[i]))
            stages.append(nn.Sequential(*blocks))
            self.out_channels.append(out_ch)
            in_ch = out_ch
            out_ch *= 2
            bottleneck *= 2
        self.res2 = stages[0]
        self.res3 = stages[1]
        self.res4 = stages[2]
        self.res5 = stages[3]

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        x = self.stem(x)
        res2 = self.res2(x)
        res3 = self.res3(res2)
        res4 = self.res4(res3)
        res5 = self.res5(res4)
        return res2, res3, res4, res5
