"""Swin Transformer backbone as used by ov-seg's D2SwinTransformer (docs/reference-behaviour.md §4.1).

Written from that description. Parameter and buffer names follow the checkpoint layout of §2.3
("backbone.patch_embed.*", "backbone.layers.{s}.blocks.{b}.*", "backbone.norm{s}.*") so that a
strict load_state_dict works. Everything is TorchScript-scriptable and takes any
input size; masks and biases are derived from the input at run time.
"""
from typing import List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def relative_position_index(window_size: int) -> Tensor:
    """idx(i, j) = (yi - yj + ws - 1) * (2 ws - 1) + (xi - xj + ws - 1), tokens row-major."""
    ys, xs = torch.meshgrid(torch.arange(window_size), torch.arange(window_size), indexing="ij")
    ys = ys.reshape(-1)
    xs = xs.reshape(-1)
    dy = ys[:, None] - ys[None, :] + (window_size - 1)
    dx = xs[:, None] - xs[None, :] + (window_size - 1)
    return (dy * (2 * window_size - 1) + dx).to(torch.int64)


def _window_partition(x: Tensor, ws: int) -> Tensor:
    """[B, Hq, Wq, C] -> [B * nW, ws * ws, C]; windows row-major, tokens row-major inside."""
    b, hq, wq, c = x.shape
    x = x.view(b, hq // ws, ws, wq // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(-1, ws * ws, c)


def _window_reverse(windows: Tensor, ws: int, b: int, hq: int, wq: int) -> Tensor:
    c = windows.shape[-1]
    x = windows.view(b, hq // ws, wq // ws, ws, ws, c).permute(0, 1, 3, 2, 4, 5)
    return x.reshape(b, hq, wq, c)


def shift_attention_mask(hq: int, wq: int, window_size: int, shift_size: int, like: Tensor) -> Tensor:
    """[nW, ws*ws, ws*ws] mask: -100 between tokens of different shift regions, else 0."""
    # Region ids are small integers, exact in any float dtype.
    rows = torch.zeros(hq, dtype=torch.float32, device=like.device)
    cols = torch.zeros(wq, dtype=torch.float32, device=like.device)
    rows[hq - window_size : hq - shift_size] = 1.0
    rows[hq - shift_size :] = 2.0
    cols[wq - window_size : wq - shift_size] = 1.0
    cols[wq - shift_size :] = 2.0
    ids = (rows.view(hq, 1) * 3.0 + cols.view(1, wq)).view(1, hq, wq, 1)
    win = _window_partition(ids, window_size).squeeze(-1)  # [nW, N]
    diff = win.unsqueeze(1) - win.unsqueeze(2)
    mask = torch.zeros(diff.shape, dtype=like.dtype, device=like.device)
    return mask.masked_fill(diff != 0.0, -100.0)


class WindowAttention(nn.Module):
    def __init__(
        self, dim: int, window_size: int, num_heads: int, qkv_bias: bool = True, qk_scale: Optional[float] = None
    ):
        super().__init__()
        self.dim = dim
        self.window_size = window_size
        self.num_heads = num_heads
        head_dim = dim // num_heads
        # The reference multiplies q by this factor (it does not divide by sqrt(d)).
        self.scale = float(qk_scale) if qk_scale is not None else float(head_dim) ** -0.5
        self.relative_position_bias_table = nn.Parameter(
            torch.zeros((2 * window_size - 1) * (2 * window_size - 1), num_heads)
        )
        self.register_buffer("relative_position_index", relative_position_index(window_size), persistent=True)
        self.qkv = nn.Linear(dim, dim * 3, bias=qkv_bias)
        self.proj = nn.Linear(dim, dim)
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def forward(self, x: Tensor, mask: Optional[Tensor]) -> Tensor:
        b_, n, c = x.shape
        nh = self.num_heads
        qkv = self.qkv(x).reshape(b_, n, 3, nh, c // nh).permute(2, 0, 3, 1, 4)
        q = qkv[0] * self.scale
        k = qkv[1]
        v = qkv[2]
        attn = q @ k.transpose(-2, -1)
        bias = self.relative_position_bias_table[self.relative_position_index.view(-1)]
        bias = bias.view(n, n, nh).permute(2, 0, 1)
        attn = attn + bias.unsqueeze(0)
        if mask is not None:
            nw = mask.shape[0]
            attn = attn.view(b_ // nw, nw, nh, n, n) + mask.unsqueeze(1).unsqueeze(0)
            attn = attn.view(-1, nh, n, n)
        attn = attn.softmax(dim=-1)
        out = (attn @ v).transpose(1, 2).reshape(b_, n, c)
        return self.proj(out)


class Mlp(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.act = nn.GELU()  # exact erf form
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: Tensor) -> Tensor:
        return self.fc2(self.act(self.fc1(x)))


class SwinTransformerBlock(nn.Module):
    def __init__(
        self,
        dim: int,
        num_heads: int,
        window_size: int,
        shift_size: int,
        mlp_ratio: float,
        qkv_bias: bool,
        qk_scale: Optional[float],
    ):
        super().__init__()
        self.window_size = window_size
        self.shift_size = shift_size
        self.norm1 = nn.LayerNorm(dim)
        self.attn = WindowAttention(dim, window_size, num_heads, qkv_bias, qk_scale)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, int(dim * mlp_ratio))

    def forward(self, x: Tensor, h: int, w: int, shift_mask: Tensor) -> Tensor:
        b, _, c = x.shape
        ws = self.window_size
        ss = self.shift_size
        shortcut = x
        y = self.norm1(x).view(b, h, w, c)
        # Zero padding comes after the LayerNorm; padded tokens are not masked (reference quirk).
        pad_r = (ws - w % ws) % ws
        pad_b = (ws - h % ws) % ws
        if pad_r > 0 or pad_b > 0:
            y = F.pad(y, [0, 0, 0, pad_r, 0, pad_b])
        hq = h + pad_b
        wq = w + pad_r
        mask: Optional[Tensor] = None
        if ss > 0:
            y = torch.roll(y, shifts=[-ss, -ss], dims=[1, 2])
            mask = shift_mask
        windows = self.attn(_window_partition(y, ws), mask)
        y = _window_reverse(windows, ws, b, hq, wq)
        if ss > 0:
            y = torch.roll(y, shifts=[ss, ss], dims=[1, 2])
        if pad_r > 0 or pad_b > 0:
            y = y[:, :h, :w, :]
        x = shortcut + y.reshape(b, h * w, c)
        return x + self.mlp(self.norm2(x))


class PatchMerging(nn.Module):
    def __init__(self, dim: int):
        super().__init__()
        self.reduction = nn.Linear(4 * dim, 2 * dim, bias=False)
        self.norm = nn.LayerNorm(4 * dim)

    def forward(self, x: Tensor, h: int, w: int) -> Tensor:
        b, _, c = x.shape
        y = x.view(b, h, w, c)
        if h % 2 == 1 or w % 2 == 1:
            y = F.pad(y, [0, 0, 0, w % 2, 0, h % 2])
        # Order (row, col): (even, even), (odd, even), (even, odd), (odd, odd).
        y = torch.cat([y[:, 0::2, 0::2, :], y[:, 1::2, 0::2, :], y[:, 0::2, 1::2, :], y[:, 1::2, 1::2, :]], dim=-1)
        y = y.view(b, -1, 4 * c)
        return self.reduction(self.norm(y))


class BasicLayer(nn.Module):
    """One Swin stage: blocks (alternating shift 0 / ws//2) and an optional patch merging."""

    def __init__(
        self,
        dim: int,
        depth: int,
        num_heads: int,
        window_size: int,
        mlp_ratio: float,
        qkv_bias: bool,
        qk_scale: Optional[float],
        downsample: bool,
    ):
        super().__init__()
        self.window_size = window_size
        self.shift_size = window_size // 2
        self.blocks = nn.ModuleList(
            [
                SwinTransformerBlock(
                    dim, num_heads, window_size, 0 if i % 2 == 0 else window_size // 2, mlp_ratio, qkv_bias, qk_scale
                )
                for i in range(depth)
            ]
        )
        self.downsample = PatchMerging(dim) if downsample else None

    def forward(self, x: Tensor, h: int, w: int) -> Tuple[Tensor, Tensor, int, int]:
        ws = self.window_size
        hq = (h + ws - 1) // ws * ws
        wq = (w + ws - 1) // ws * ws
        mask = shift_attention_mask(hq, wq, ws, self.shift_size, x)
        for blk in self.blocks:
            x = blk(x, h, w, mask)
        if self.downsample is not None:
            return x, self.downsample(x, h, w), (h + 1) // 2, (w + 1) // 2
        return x, x, h, w


class PatchEmbed(nn.Module):
    def __init__(self, patch_size: int, in_chans: int, embed_dim: int, patch_norm: bool):
        super().__init__()
        self.patch_size = patch_size
        self.proj = nn.Conv2d(in_chans, embed_dim, kernel_size=patch_size, stride=patch_size)
        self.norm = nn.LayerNorm(embed_dim) if patch_norm else None

    def forward(self, x: Tensor) -> Tuple[Tensor, int, int]:
        p = self.patch_size
        h = x.shape[2]
        w = x.shape[3]
        pad_r = (p - w % p) % p
        pad_b = (p - h % p) % p
        if pad_r > 0 or pad_b > 0:
            x = F.pad(x, [0, pad_r, 0, pad_b])
        x = self.proj(x)
        hh = x.shape[2]
        ww = x.shape[3]
        x = x.flatten(2).transpose(1, 2)
        if self.norm is not None:
            x = self.norm(x)
        return x, hh, ww


def _to_map(x: Tensor, h: int, w: int) -> Tensor:
    b, _, c = x.shape
    return x.view(b, h, w, c).permute(0, 3, 1, 2).contiguous()


class SwinBackbone(nn.Module):
    """forward(x [B,3,H,W]) -> (res2, res3, res4, res5) at strides 4, 8, 16, 32."""

    def __init__(
        self,
        patch_size: int = 4,
        in_chans: int = 3,
        embed_dim: int = 128,
        depths: Optional[List[int]] = None,
        num_heads: Optional[List[int]] = None,
        window_size: int = 12,
        mlp_ratio: float = 4.0,
        qkv_bias: bool = True,
        qk_scale: Optional[float] = None,
        patch_norm: bool = True,
    ):
        super().__init__()
        depths = [2, 2, 18, 2] if depths is None else list(depths)
        num_heads = [4, 8, 16, 32] if num_heads is None else list(num_heads)
        if len(depths) != 4 or len(num_heads) != 4:
            raise ValueError("Swin backbone: DEPTHS and NUM_HEADS must have 4 entries " f"(got {depths}, {num_heads})")
        self.patch_embed = PatchEmbed(patch_size, in_chans, embed_dim, patch_norm)
        self.layers = nn.ModuleList(
            [
                BasicLayer(
                    embed_dim * 2**i,
                    depths[i],
                    num_heads[i],
                    window_size,
                    mlp_ratio,
                    qkv_bias,
                    qk_scale,
                    downsample=i < 3,
                )
                for i in range(4)
            ]
        )
        self.num_features = [embed_dim * 2**i for i in range(4)]
        self.norm0 = nn.LayerNorm(self.num_features[0])
        self.norm1 = nn.LayerNorm(self.num_features[1])
        self.norm2 = nn.LayerNorm(self.num_features[2])
        self.norm3 = nn.LayerNorm(self.num_features[3])
        self.apply(_init_weights)

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor, Tensor, Tensor]:
        x, h, w = self.patch_embed(x)
        out, x, h1, w1 = self.layers[0](x, h, w)
        res2 = _to_map(self.norm0(out), h, w)
        out, x, h2, w2 = self.layers[1](x, h1, w1)
        res3 = _to_map(self.norm1(out), h1, w1)
        out, x, h3, w3 = self.layers[2](x, h2, w2)
        res4 = _to_map(self.norm2(out), h2, w2)
        out, x, _, _ = self.layers[3](x, h3, w3)
        res5 = _to_map(self.norm3(out), h3, w3)
        return res2, res3, res4, res5


def _init_weights(m: nn.Module) -> None:
    # Only matters for random-init exports/benchmarks; checkpoints overwrite everything.
    if isinstance(m, nn.Linear):
        nn.init.trunc_normal_(m.weight, std=0.02)
        if m.bias is not None:
            nn.init.zeros_(m.bias)
    elif isinstance(m, nn.LayerNorm):
        nn.init.ones_(m.weight)
        nn.init.zeros_(m.bias)
