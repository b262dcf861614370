"""segment-anything's three networks, written for TorchScript export (ovseg's own code).

The arithmetic follows the official implementation (facebookresearch/segment-anything,
modeling/*.py) operation by operation, so that the exported modules reproduce its float32 outputs;
the parameter and buffer names equal the official state-dict keys, so an official checkpoint loads
with exact-name matching.

Differences in the module boundaries (documented in models/SAM_BUNDLE_FORMAT.md):
- `SamImageEncoder.forward` takes the ResizeLongestSide image (0-255, float, unpadded) and does
  Sam.preprocess (normalise, zero-pad to img_size) itself.
- `SamPromptEncoder.forward` embeds foreground/background points only (the automatic mask
  generator's prompts): it always appends the padding point, as the official encoder does when no
  box is given. Point coordinates stay float64 up to the division by the input size, as in the
  official code when SamAutomaticMaskGenerator hands it numpy float64 points.
- `SamMaskDecoder.forward` returns all mask tokens' outputs sliced like the official
  multimask_output flag.
"""
import math
from typing import Dict, List, Tuple

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class LayerNorm2d(nn.Module):
    def __init__(self, channels: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        mean = x.mean(1, keepdim=True)
        var = (x - mean).pow(2).mean(1, keepdim=True)
        y = (x - mean) / torch.sqrt(var + self.eps)
        return self.weight[:, None, None] * y + self.bias[:, None, None]


class MLPBlock(nn.Module):
    def __init__(self, dim: int, hidden: int, relu: bool) -> None:
        super().__init__()
        self.lin1 = nn.Linear(dim, hidden)
        self.lin2 = nn.Linear(hidden, dim)
        self.relu = relu

    def forward(self, x: Tensor) -> Tensor:
        h = self.lin1(x)
        h = F.relu(h) if self.relu else F.gelu(h)
        return self.lin2(h)


# ---------------------------------------------------------------------------------------------
# Image encoder (ViT with windowed / global attention and decomposed relative positions)
# ---------------------------------------------------------------------------------------------
class PatchEmbed(nn.Module):
    def __init__(self, patch: int, in_chans: int, dim: int) -> None:
        super().__init__()
        self.proj = nn.Conv2d(in_chans, dim, kernel_size=patch, stride=patch)

    def forward(self, x: Tensor) -> Tensor:
        return self.proj(x).permute(0, 2, 3, 1)


def _rel_pos_table(size: int, rel_pos: Tensor) -> Tensor:
    """[size, size, head_dim]: the relative-position rows for query i, key j (q_size == k_size)."""
    length = 2 * size - 1
    table = rel_pos
    if rel_pos.shape[0] != length:
        table = F.interpolate(rel_pos.reshape(1, rel_pos.shape[0], -1).permute(0, 2, 1), size=length, mode="linear")
        table = table.reshape(-1, length).permute(1, 0)
    q = torch.arange(size, device=rel_pos.device)[:, None]
    k = torch.arange(size, device=rel_pos.device)[None, :]
    return table[(q - k + (size - 1)).long()]


class Attention(nn.Module):
    def __init__(self, dim: int, heads: int, size: int) -> None:
        super().__init__()
        self.heads = heads
        head_dim = dim // heads
        self.scale = head_dim**-0.5
        self.qkv = nn.Linear(dim, dim * 3, bias=True)
        self.proj = nn.Linear(dim, dim)
        self.rel_pos_h = nn.Parameter(torch.zeros(2 * size - 1, head_dim))
        self.rel_pos_w = nn.Parameter(torch.zeros(2 * size - 1, head_dim))

    def forward(self, x: Tensor) -> Tensor:
        b, h, w, _ = x.shape
        qkv = self.qkv(x).reshape(b, h * w, 3, self.heads, -1).permute(2, 0, 3, 1, 4)
        qkv = qkv.reshape(3, b * self.heads, h * w, -1)
        q, k, v = qkv[0], qkv[1], qkv[2]
        attn = (q * self.scale) @ k.transpose(-2, -1)
        rh = _rel_pos_table(h, self.rel_pos_h)
        rw = _rel_pos_table(w, self.rel_pos_w)
        bh, _, c = q.shape
        rq = q.reshape(bh, h, w, c)
        rel_h = torch.einsum("bhwc,hkc->bhwk", rq, rh)
        rel_w = torch.einsum("bhwc,wkc->bhwk", rq, rw)
        attn = (attn.view(bh, h, w, h, w) + rel_h[:, :, :, :, None] + rel_w[:, :, :, None, :]).view(bh, h * w, h * w)
        attn = attn.softmax(dim=-1)
        out = (attn @ v).view(b, self.heads, h, w, -1).permute(0, 2, 3, 1, 4).reshape(b, h, w, -1)
        return self.proj(out)


class Block(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int, window: int, grid: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim, eps=1e-6)
        self.attn = Attention(dim, heads, window if window > 0 else grid)
        self.norm2 = nn.LayerNorm(dim, eps=1e-6)
        self.mlp = MLPBlock(dim, mlp_dim, relu=False)
        self.window = window

    def forward(self, x: Tensor) -> Tensor:
        shortcut = x
        x = self.norm1(x)
        if self.window > 0:
            b, h, w, c = x.shape
            ws = self.window
            ph = (ws - h % ws) % ws
            pw = (ws - w % ws) % ws
            if ph > 0 or pw > 0:
                x = F.pad(x, (0, 0, 0, pw, 0, ph))
            hp, wp = h + ph, w + pw
            x = x.view(b, hp // ws, ws, wp // ws, ws, c).permute(0, 1, 3, 2, 4, 5)
            x = x.contiguous().view(-1, ws, ws, c)
            x = self.attn(x)
            x = x.view(b, hp // ws, wp // ws, ws, ws, -1).permute(0, 1, 3, 2, 4, 5)
            x = x.contiguous().view(b, hp, wp, -1)
            if hp > h or wp > w:
                x = x[:, :h, :w, :].contiguous()
        else:
            x = self.attn(x)
        x = shortcut + x
        return x + self.mlp(self.norm2(x))


class SamImageEncoder(nn.Module):
    """forward(image [1,3,h,w] float 0-255, max(h,w) == img_size) -> embedding [1,C,g,g]."""

    def __init__(self, a: Dict) -> None:
        super().__init__()
        self.img_size = int(a["img_size"])
        grid = self.img_size // a["patch_size"]
        dim = a["embed_dim"]
        self.patch_embed = PatchEmbed(a["patch_size"], 3, dim)
        self.pos_embed = nn.Parameter(torch.zeros(1, grid, grid, dim))
        glob = set(a["global_attn_indexes"])
        self.blocks = nn.ModuleList(
            [
                Block(dim, a["num_heads"], int(dim * a["mlp_ratio"]), 0 if i in glob else a["window_size"], grid)
                for i in range(a["depth"])
            ]
        )
        out = a["out_chans"]
        self.neck = nn.Sequential(
            nn.Conv2d(dim, out, 1, bias=False),
            LayerNorm2d(out),
            nn.Conv2d(out, out, 3, padding=1, bias=False),
            LayerNorm2d(out),
        )
        self.register_buffer("pixel_mean", torch.tensor(a["pixel_mean"]).view(-1, 1, 1), False)
        self.register_buffer("pixel_std", torch.tensor(a["pixel_std"]).view(-1, 1, 1), False)

    def forward(self, image: Tensor) -> Tensor:
        x = (image - self.pixel_mean) / self.pixel_std
        h, w = x.shape[-2], x.shape[-1]
        x = F.pad(x, (0, self.img_size - w, 0, self.img_size - h))
        x = self.patch_embed(x)
        x = x + self.pos_embed
        for blk in self.blocks:
            x = blk(x)
        return self.neck(x.permute(0, 3, 1, 2))


# ---------------------------------------------------------------------------------------------
# Prompt encoder (points only)
# ---------------------------------------------------------------------------------------------
class PositionEmbeddingRandom(nn.Module):
    def __init__(self, feats: int) -> None:
        super().__init__()
        self.register_buffer("positional_encoding_gaussian_matrix", torch.randn((2, feats)))

    def encode(self, coords: Tensor) -> Tensor:
        coords = 2 * coords - 1
        coords = coords @ self.positional_encoding_gaussian_matrix
        coords = 2 * math.pi * coords
        return torch.cat([torch.sin(coords), torch.cos(coords)], dim=-1)

    def grid(self, h: int, w: int) -> Tensor:
        ones = torch.ones((h, w), device=self.positional_encoding_gaussian_matrix.device, dtype=torch.float32)
        y = (ones.cumsum(dim=0) - 0.5) / h
        x = (ones.cumsum(dim=1) - 0.5) / w
        return self.encode(torch.stack([x, y], dim=-1)).permute(2, 0, 1)


class SamPromptEncoder(nn.Module):
    """forward(coords [B,N,2] float64 in the resized-input frame (before the +0.5), labels [B,N]
    int64 (1 foreground, 0 background)) -> (sparse [B,N+1,C], dense [B,C,g,g]);
    dense_pe() -> [1,C,g,g]."""

    def __init__(self, a: Dict) -> None:
        super().__init__()
        dim = a["prompt_embed_dim"]
        self.grid_size = a["img_size"] // a["patch_size"]
        self.input_size = a["img_size"]
        self.pe_layer = PositionEmbeddingRandom(dim // 2)
        self.point_embeddings = nn.ModuleList([nn.Embedding(1, dim) for _ in range(4)])
        self.not_a_point_embed = nn.Embedding(1, dim)
        mc = a["mask_in_chans"]
        # Mask prompts are not used by the automatic generator; the weights are kept so that the
        # key report is exact and the bundle holds the whole network.
        self.mask_downscaling = nn.Sequential(
            nn.Conv2d(1, mc // 4, 2, stride=2),
            LayerNorm2d(mc // 4),
            nn.GELU(),
            nn.Conv2d(mc // 4, mc, 2, stride=2),
            LayerNorm2d(mc),
            nn.GELU(),
            nn.Conv2d(mc, dim, 1),
        )
        self.no_mask_embed = nn.Embedding(1, dim)

    @torch.jit.export
    def dense_pe(self) -> Tensor:
        return self.pe_layer.grid(self.grid_size, self.grid_size).unsqueeze(0)

    def forward(self, coords: Tensor, labels: Tensor) -> Tuple[Tensor, Tensor]:
        b = coords.shape[0]
        pts = coords + 0.5
        pts = torch.cat([pts, torch.zeros((b, 1, 2), dtype=pts.dtype, device=pts.device)], dim=1)
        labels = torch.cat([labels, -torch.ones((b, 1), dtype=labels.dtype, device=labels.device)], dim=1)
        pts = pts.clone()
        pts[:, :, 0] = pts[:, :, 0] / self.input_size
        pts[:, :, 1] = pts[:, :, 1] / self.input_size
        emb = self.pe_layer.encode(pts.to(torch.float))
        emb[labels == -1] = 0.0
        emb[labels == -1] += self.not_a_point_embed.weight
        emb[labels == 0] += self.point_embeddings[0].weight
        emb[labels == 1] += self.point_embeddings[1].weight
        dense = self.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(b, -1, self.grid_size, self.grid_size)
        return emb, dense


# ---------------------------------------------------------------------------------------------
# Mask decoder (two-way transformer + hypernetwork heads)
# ---------------------------------------------------------------------------------------------
class TokenAttention(nn.Module):
    def __init__(self, dim: int, heads: int, downsample: int = 1) -> None:
        super().__init__()
        inner = dim // downsample
        self.heads = heads
        self.q_proj = nn.Linear(dim, inner)
        self.k_proj = nn.Linear(dim, inner)
        self.v_proj = nn.Linear(dim, inner)
        self.out_proj = nn.Linear(inner, dim)

    def _split(self, x: Tensor) -> Tensor:
        b, n, c = x.shape
        return x.reshape(b, n, self.heads, c // self.heads).transpose(1, 2)

    def forward(self, q: Tensor, k: Tensor, v: Tensor) -> Tensor:
        q = self._split(self.q_proj(q))
        k = self._split(self.k_proj(k))
        v = self._split(self.v_proj(v))
        c = q.shape[3]
        attn = q @ k.permute(0, 1, 3, 2)
        attn = attn / math.sqrt(c)
        attn = torch.softmax(attn, dim=-1)
        out = attn @ v
        b, nh, n, ch = out.shape
        return self.out_proj(out.transpose(1, 2).reshape(b, n, nh * ch))


class TwoWayBlock(nn.Module):
    def __init__(self, dim: int, heads: int, mlp_dim: int, downsample: int, skip_pe: bool) -> None:
        super().__init__()
        self.self_attn = TokenAttention(dim, heads)
        self.norm1 = nn.LayerNorm(dim)
        self.cross_attn_token_to_image = TokenAttention(dim, heads, downsample)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = MLPBlock(dim, mlp_dim, relu=True)
        self.norm3 = nn.LayerNorm(dim)
        self.norm4 = nn.LayerNorm(dim)
        self.cross_attn_image_to_token = TokenAttention(dim, heads, downsample)
        self.skip_pe = skip_pe

    def forward(self, queries: Tensor, keys: Tensor, query_pe: Tensor, key_pe: Tensor) -> Tuple[Tensor, Tensor]:
        if self.skip_pe:
            queries = self.self_attn(queries, queries, queries)
        else:
            q = queries + query_pe
            queries = queries + self.self_attn(q, q, queries)
        queries = self.norm1(queries)
        q = queries + query_pe
        k = keys + key_pe
        queries = queries + self.cross_attn_token_to_image(q, k, keys)
        queries = self.norm2(queries)
        queries = queries + self.mlp(queries)
        queries = self.norm3(queries)
        q = queries + query_pe
        k = keys + key_pe
        keys = keys + self.cross_attn_image_to_token(k, q, queries)
        keys = self.norm4(keys)
        return queries, keys


class TwoWayTransformer(nn.Module):
    def __init__(self, depth: int, dim: int, heads: int, mlp_dim: int, downsample: int) -> None:
        super().__init__()
        self.layers = nn.ModuleList([TwoWayBlock(dim, heads, mlp_dim, downsample, i == 0) for i in range(depth)])
        self.final_attn_token_to_image = TokenAttention(dim, heads, downsample)
        self.norm_final_attn = nn.LayerNorm(dim)

    def forward(self, image: Tensor, image_pe: Tensor, points: Tensor) -> Tuple[Tensor, Tensor]:
        keys = image.flatten(2).permute(0, 2, 1)
        key_pe = image_pe.flatten(2).permute(0, 2, 1)
        queries = points
        for layer in self.layers:
            queries, keys = layer(queries, keys, points, key_pe)
        q = queries + points
        k = keys + key_pe
        queries = queries + self.final_attn_token_to_image(q, k, keys)
        return self.norm_final_attn(queries), keys


class MLP(nn.Module):
    def __init__(self, din: int, hidden: int, dout: int, layers: int) -> None:
        super().__init__()
        dims = [din] + [hidden] * (layers - 1)
        outs = [hidden] * (layers - 1) + [dout]
        self.layers = nn.ModuleList([nn.Linear(i, o) for i, o in zip(dims, outs)])
        self.n = layers

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < self.n - 1:
                x = F.relu(x)
        return x


class SamMaskDecoder(nn.Module):
    """forward(image_embedding [1,C,g,g], image_pe [1,C,g,g], sparse [B,N,C], dense [B,C,g,g],
    multimask) -> (low-res mask logits [B,M,4g,4g], iou predictions [B,M]); M = the multimask
    outputs (3) or the single-mask output (1)."""

    def __init__(self, a: Dict) -> None:
        super().__init__()
        dim = a["prompt_embed_dim"]
        self.transformer = TwoWayTransformer(
            a["decoder_depth"], dim, a["decoder_num_heads"], a["decoder_mlp_dim"], a["attention_downsample_rate"]
        )
        self.num_mask_tokens = a["num_multimask_outputs"] + 1
        self.iou_token = nn.Embedding(1, dim)
        self.mask_tokens = nn.Embedding(self.num_mask_tokens, dim)
        self.output_upscaling = nn.Sequential(
            nn.ConvTranspose2d(dim, dim // 4, 2, stride=2),
            LayerNorm2d(dim // 4),
            nn.GELU(),
            nn.ConvTranspose2d(dim // 4, dim // 8, 2, stride=2),
            nn.GELU(),
        )
        self.output_hypernetworks_mlps = nn.ModuleList(
            [MLP(dim, dim, dim // 8, 3) for _ in range(self.num_mask_tokens)]
        )
        self.iou_prediction_head = MLP(dim, a["iou_head_hidden_dim"], self.num_mask_tokens, a["iou_head_depth"])

    def forward(
        self, image_embedding: Tensor, image_pe: Tensor, sparse: Tensor, dense: Tensor, multimask: bool
    ) -> Tuple[Tensor, Tensor]:
        out_tokens = torch.cat([self.iou_token.weight, self.mask_tokens.weight], dim=0)
        out_tokens = out_tokens.unsqueeze(0).expand(sparse.size(0), -1, -1)
        tokens = torch.cat((out_tokens, sparse), dim=1)
        src = torch.repeat_interleave(image_embedding, tokens.shape[0], dim=0)
        src = src + dense
        pos = torch.repeat_interleave(image_pe, tokens.shape[0], dim=0)
        b, c, h, w = src.shape
        hs, src = self.transformer(src, pos, tokens)
        iou_out = hs[:, 0, :]
        mask_out = hs[:, 1 : (1 + self.num_mask_tokens), :]
        up = self.output_upscaling(src.transpose(1, 2).view(b, c, h, w))
        hyper: List[Tensor] = []
        for i, mlp in enumerate(self.output_hypernetworks_mlps):
            hyper.append(mlp(mask_out[:, i, :]))
        hyper_in = torch.stack(hyper, dim=1)
        b, c, h, w = up.shape
        masks = (hyper_in @ up.view(b, c, h * w)).view(b, -1, h, w)
        iou = self.iou_prediction_head(iou_out)
        if multimask:
            return masks[:, 1:, :, :], iou[:, 1:]
        return masks[:, 0:1, :, :], iou[:, 0:1]


class Sam(nn.Module):
    """Container with the official key prefixes (image_encoder., prompt_encoder., mask_decoder.)."""

    def __init__(self, a: Dict) -> None:
        super().__init__()
        self.image_encoder = SamImageEncoder(a)
        self.prompt_encoder = SamPromptEncoder(a)
        self.mask_decoder = SamMaskDecoder(a)


# Official sizes (segment_anything/build_sam.py); the decoder is the same for all three.
SIZES = {
    "vit_b": {"embed_dim": 768, "depth": 12, "num_heads": 12, "global_attn_indexes": [2, 5, 8, 11]},
    "vit_l": {"embed_dim": 1024, "depth": 24, "num_heads": 16, "global_attn_indexes": [5, 11, 17, 23]},
    "vit_h": {"embed_dim": 1280, "depth": 32, "num_heads": 16, "global_attn_indexes": [7, 15, 23, 31]},
}
DEFAULT_ARCH = {
    "img_size": 1024,
    "patch_size": 16,
    "mlp_ratio": 4.0,
    "window_size": 14,
    "out_chans": 256,
    "prompt_embed_dim": 256,
    "mask_in_chans": 16,
    "decoder_depth": 2,
    "decoder_mlp_dim": 2048,
    "decoder_num_heads": 8,
    "attention_downsample_rate": 2,
    "iou_head_depth": 3,
    "iou_head_hidden_dim": 256,
    "num_multimask_outputs": 3,
    "pixel_mean": [123.675, 116.28, 103.53],
    "pixel_std": [58.395, 57.12, 57.375],
}


def arch_for_size(size: str) -> Dict:
    a = dict(DEFAULT_ARCH)
    a.update(SIZES[size])
    return a


def _count(sd: Dict[str, Tensor], prefix: str) -> int:
    n = 0
    while any(k.startswith(f"{prefix}{n}.") for k in sd):
        n += 1
    return n


def arch_from_state_dict(sd: Dict[str, Tensor], overrides: Dict) -> Dict:
    """Every dimension the tensors determine; the decoder's head count (no tensor shows it) comes
    from `overrides` or the official value 8."""
    a = dict(DEFAULT_ARCH)

    def need(key: str) -> Tensor:
        if key not in sd:
            raise KeyError(key)
        return sd[key]

    pw = need("image_encoder.patch_embed.proj.weight")
    a["embed_dim"] = int(pw.shape[0])
    a["patch_size"] = int(pw.shape[2])
    grid = int(need("image_encoder.pos_embed").shape[1])
    a["img_size"] = grid * a["patch_size"]
    a["depth"] = _count(sd, "image_encoder.blocks.")
    head_dim = int(need("image_encoder.blocks.0.attn.rel_pos_h").shape[1])
    a["num_heads"] = a["embed_dim"] // head_dim
    glob, windows = [], set()
    for i in range(a["depth"]):
        rows = int(need(f"image_encoder.blocks.{i}.attn.rel_pos_h").shape[0])
        if rows == 2 * grid - 1:
            glob.append(i)
        else:
            windows.add((rows + 1) // 2)
    a["global_attn_indexes"] = glob
    if len(windows) > 1:
        raise ValueError(f"blocks use several window sizes {sorted(windows)}")
    a["window_size"] = windows.pop() if windows else 0
    a["mlp_ratio"] = int(need("image_encoder.blocks.0.mlp.lin1.weight").shape[0]) / a["embed_dim"]
    a["out_chans"] = int(need("image_encoder.neck.0.weight").shape[0])
    a["prompt_embed_dim"] = int(need("prompt_encoder.no_mask_embed.weight").shape[1])
    a["mask_in_chans"] = int(need("prompt_encoder.mask_downscaling.3.weight").shape[0])
    a["decoder_depth"] = _count(sd, "mask_decoder.transformer.layers.")
    a["decoder_mlp_dim"] = int(need("mask_decoder.transformer.layers.0.mlp.lin1.weight").shape[0])
    inner = int(need("mask_decoder.transformer.final_attn_token_to_image.q_proj.weight").shape[0])
    a["attention_downsample_rate"] = a["prompt_embed_dim"] // inner
    a["num_multimask_outputs"] = int(need("mask_decoder.mask_tokens.weight").shape[0]) - 1
    a["iou_head_depth"] = _count(sd, "mask_decoder.iou_prediction_head.layers.")
    a["iou_head_hidden_dim"] = int(need("mask_decoder.iou_prediction_head.layers.0.weight").shape[0])
    for k in ("decoder_num_heads", "pixel_mean", "pixel_std"):
        if k in overrides:
            a[k] = overrides[k]
    return a
