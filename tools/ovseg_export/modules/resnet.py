"""detectron2-style ResNets (docs/reference-behaviour.md §4.2): the DeepLab ResNet of "R101c" and the plain one,
any DEPTH of 18/34 (BasicBlock) or 50/101/152 (BottleneckBlock); TorchScript-scriptable.

Key names follow the checkpoint (docs/reference-behaviour.md §2.3): "stem.conv{1,2,3}" (DeepLab stem) or "stem.conv1"
(basic 7x7 stem), "res{2..5}.{i}.conv{1,2,3}" (bottleneck) or ".conv{1,2}" (basic), and
"res{2..5}.{i}.shortcut" where a block changes the channel count; each conv carries its norm
as "<conv>.norm.*".
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
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps)


class Conv2dNorm(nn.Conv2d):
    """Conv2d followed by an optional norm stored as the child "norm" (detectron2 layout)."""

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int,
        stride: int = 1,
        padding: int = 0,
        dilation: int = 1,
        groups: int = 1,
        bias: bool = False,
        norm: Optional[nn.Module] = None,
    ):
        super().__init__(
            in_channels,
            out_channels,
            kernel_size,
            stride=stride,
            padding=padding,
            dilation=dilation,
            groups=groups,
            bias=bias,
        )
        self.norm = norm

    def forward(self, x: Tensor) -> Tensor:
        x = self._conv_forward(x, self.weight, self.bias)
        if self.norm is not None:
            x = self.norm(x)
        return x


def _conv_bn(
    in_ch: int, out_ch: int, k: int, stride: int = 1, padding: int = 0, dilation: int = 1, groups: int = 1
) -> Conv2dNorm:
    conv = Conv2dNorm(
        in_ch,
        out_ch,
        k,
        stride=stride,
        padding=padding,
        dilation=dilation,
        groups=groups,
        bias=False,
        norm=FrozenBatchNorm2d(out_ch),
    )
    nn.init.kaiming_normal_(conv.weight, mode="fan_out", nonlinearity="relu")
    return conv


class BottleneckBlock(nn.Module):
    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        bottleneck_channels: int,
        stride: int,
        num_groups: int,
        stride_in_1x1: bool,
        dilation: int,
    ):
        super().__init__()
        if in_channels != out_channels:
            self.shortcut: Optional[nn.Module] = _conv_bn(in_channels, out_channels, 1, stride=stride)
        else:
            self.shortcut = None
        s1, s3 = (stride, 1) if stride_in_1x1 else (1, stride)
        self.conv1 = _conv_bn(in_channels, bottleneck_channels, 1, stride=s1)
        self.conv2 = _conv_bn(
            bottleneck_channels,
            bottleneck_channels,
            3,
            stride=s3,
            padding=dilation,
            dilation=dilation,
            groups=num_groups,
        )
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


class BasicBlock(nn.Module):
    """Two 3x3 convs (ResNet-18/34). detectron2's BasicBlock has no dilation; a dilated one
    (only reachable through the DeepLab builder, which detectron2 itself does not allow for
    18/34) dilates both convs."""

    def __init__(self, in_channels: int, out_channels: int, stride: int, dilation: int = 1):
        super().__init__()
        # Registration order = checkpoint order: shortcut, conv1, conv2.
        if in_channels != out_channels:
            self.shortcut: Optional[nn.Module] = _conv_bn(in_channels, out_channels, 1, stride=stride)
        else:
            self.shortcut = None
        self.conv1 = _conv_bn(in_channels, out_channels, 3, stride=stride, padding=dilation, dilation=dilation)
        self.conv2 = _conv_bn(out_channels, out_channels, 3, stride=1, padding=dilation, dilation=dilation)

    def forward(self, x: Tensor) -> Tensor:
        out = F.relu_(self.conv1(x))
        out = self.conv2(out)
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


_BLOCKS_PER_DEPTH = {18: [2, 2, 2, 2], 34: [3, 4, 6, 3], 50: [3, 4, 6, 3], 101: [3, 4, 23, 3], 152: [3, 8, 36, 3]}
BASIC_BLOCK_DEPTHS = (18, 34)


def blocks_per_stage(depth: int) -> List[int]:
    if depth not in _BLOCKS_PER_DEPTH:
        raise ValueError(
            f"ResNet backbone: DEPTH {depth} is not supported " f"({', '.join(str(d) for d in _BLOCKS_PER_DEPTH)})"
        )
    return list(_BLOCKS_PER_DEPTH[depth])


class DeepLabResNet(nn.Module):
    """forward(x [B,3,H,W]) -> (res2, res3, res4, res5), strides 4, 8, 16, 32 unless dilated.

    Follows detectron2 v0.6 `build_resnet_deeplab_backbone`: stage s uses dilation d_s
    (RES4_DILATION for res4, RES5_DILATION for res5, else 1); its first block has stride 1 for
    res2 or when d_s > 1, else 2; res5 block i dilates by d_5 * RES5_MULTI_GRID[i]. The plain
    `build_resnet_backbone` is the special case stem "basic", RES4_DILATION 1 and a multi-grid of
    ones (config.py rewrites it so). DEPTH 18/34 use BasicBlock, 50/101/152 BottleneckBlock with
    NUM_GROUPS * WIDTH_PER_GROUP channels in res2 (doubling per stage)."""

    def __init__(
        self,
        depth: int = 101,
        stem_type: str = "deeplab",
        stem_out_channels: int = 128,
        res2_out_channels: int = 256,
        num_groups: int = 1,
        width_per_group: int = 64,
        stride_in_1x1: bool = False,
        res4_dilation: int = 1,
        res5_dilation: int = 1,
        res5_multi_grid: Optional[List[int]] = None,
        in_channels: int = 3,
    ):
        super().__init__()
        num_blocks = blocks_per_stage(depth)
        if res4_dilation not in (1, 2):
            raise ValueError(f"ResNet backbone: RES4_DILATION {res4_dilation} must be 1 or 2")
        if res5_dilation not in (1, 2, 4):
            raise ValueError(f"ResNet backbone: RES5_DILATION {res5_dilation} must be 1, 2 or 4")
        multi_grid = [1, 2, 4] if res5_multi_grid is None else [int(g) for g in res5_multi_grid]
        if len(multi_grid) != num_blocks[3]:
            raise ValueError(
                f"ResNet backbone: RES5_MULTI_GRID {multi_grid} needs " f"{num_blocks[3]} entries for DEPTH {depth}"
            )
        if any(g < 1 for g in multi_grid):
            raise ValueError(f"ResNet backbone: RES5_MULTI_GRID {multi_grid} must be positive")
        basic = depth in BASIC_BLOCK_DEPTHS
        if basic and num_groups != 1:
            raise ValueError(
                f"ResNet backbone: NUM_GROUPS {num_groups} needs a bottleneck "
                f"ResNet (DEPTH 50/101/152), not DEPTH {depth}"
            )
        if stem_type == "deeplab":
            if stem_out_channels % 2:
                raise ValueError(
                    f"ResNet backbone: STEM_OUT_CHANNELS {stem_out_channels} must be " "even for the DeepLab stem"
                )
            self.stem: nn.Module = DeepLabStem(in_channels, stem_out_channels)
        elif stem_type == "basic":
            self.stem = BasicStem(in_channels, stem_out_channels)
        else:
            raise ValueError(f"ResNet backbone: STEM_TYPE {stem_type!r} is not supported " "(basic or deeplab)")
        bottleneck = num_groups * width_per_group

        in_ch = stem_out_channels
        out_ch = res2_out_channels
        out_channels: List[int] = []
        strides: List[int] = []
        stride = 4
        stages: List[nn.Sequential] = []
        for idx, stage_idx in enumerate(range(2, 6)):
            dilation = res4_dilation if stage_idx == 4 else (res5_dilation if stage_idx == 5 else 1)
            first_stride = 1 if idx == 0 or dilation > 1 else 2
            if stage_idx == 5:
                dilations = [dilation * g for g in multi_grid]
            else:
                dilations = [dilation] * num_blocks[idx]
            blocks: List[nn.Module] = []
            for i in range(num_blocks[idx]):
                s = first_stride if i == 0 else 1
                cin = in_ch if i == 0 else out_ch
                if basic:
                    blocks.append(BasicBlock(cin, out_ch, s, dilations[i]))
                else:
                    blocks.append(BottleneckBlock(cin, out_ch, bottleneck, s, num_groups, stride_in_1x1, dilations[i]))
            stages.append(nn.Sequential(*blocks))
            stride *= first_stride
            out_channels.append(out_ch)
            strides.append(stride)
            in_ch = out_ch
            out_ch *= 2
            bottleneck *= 2
        self.out_channels = out_channels
        self.strides = strides
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
