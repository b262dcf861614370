"""CLIP towers of ov-seg (docs/reference-behaviour.md §5.4 text, §6.5 vision with mask prompts), TorchScript-friendly.

Parameter names are OpenAI's (relative to `clip_model.visual.` for the vision tower and to
`clip_model.` for the text tower), so a checkpoint's CLIP sub-dict loads by exact name.
"""
import math
from collections import OrderedDict
from typing import Dict, List, Optional

import torch
import torch.nn.functional as F
from torch import nn


class QuickGELU(nn.Module):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """Pre-LN block; nn.MultiheadAttention gives the reference attention arithmetic."""

    def __init__(self, width: int, heads: int):
        super().__init__()
        self.attn = nn.MultiheadAttention(width, heads)
        self.ln_1 = nn.LayerNorm(width)
        self.mlp = nn.Sequential(
            OrderedDict(
                [
                    ("c_fc", nn.Linear(width, width * 4)),
                    ("gelu", QuickGELU()),
                    ("c_proj", nn.Linear(width * 4, width)),
                ]
            )
        )
        self.ln_2 = nn.LayerNorm(width)

    def forward(self, x: torch.Tensor, attn_mask: Optional[torch.Tensor] = None) -> torch.Tensor:
        # x is [L, N, width] (sequence first, as in the reference).
        y = self.ln_1(x)
        x = x + self.attn(y, y, y, need_weights=False, attn_mask=attn_mask)[0]
        x = x + self.mlp(self.ln_2(x))
        return x


class Transformer(nn.Module):
    def __init__(self, width: int, layers: int, heads: int):
        super().__init__()
        self.width = width
        self.layers = layers
        self.resblocks = nn.ModuleList([ResidualAttentionBlock(width, heads) for _ in range(layers)])


class ClipVisual(nn.Module):
    """forward(images [N,3,R,R] CLIP-normalised, masks [N,1,R,R] 0/1) -> L2-normalised [N,E]."""

    mask_prompt_fwd: bool
    prompt_depth: int
    patch_size: int
    grid: int

    def __init__(
        self,
        input_resolution: int,
        patch_size: int,
        width: int,
        layers: int,
        output_dim: int,
        prompt_depth: int = 3,
        prompt_rows: Optional[int] = None,
        mask_prompt_fwd: bool = True,
    ):
        super().__init__()
        heads = width // 64
        self.input_resolution = input_resolution
        self.patch_size = patch_size
        self.grid = input_resolution // patch_size
        self.mask_prompt_fwd = mask_prompt_fwd
        self.prompt_depth = prompt_depth
        scale = width**-0.5
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch_size, stride=patch_size, bias=False)
        self.class_embedding = nn.Parameter(scale * torch.randn(width))
        self.positional_embedding = nn.Parameter(scale * torch.randn(self.grid**2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(scale * torch.randn(width, output_dim))
        rows = self.grid**2 if prompt_rows is None else prompt_rows
        self.mask_embedding = nn.Parameter(0.02 * torch.randn(prompt_depth, rows, width))

    def forward(self, images: torch.Tensor, masks: torch.Tensor) -> torch.Tensor:
        x = self.conv1(images)  # [N, W, G, G]
        n = x.shape[0]
        x = x.reshape(n, x.shape[1], -1).permute(0, 2, 1)  # [N, G*G, W], row-major patches
        use_prompts = self.mask_prompt_fwd and self.prompt_depth > 0
        keep = torch.ones(n, x.shape[1], 1, dtype=x.dtype, device=x.device)
        if use_prompts:
            pooled = F.avg_pool2d(masks, kernel_size=self.patch_size, stride=self.patch_size)
            # ceil: a patch is kept if ANY of its pixels is inside the mask; the clamp only
            # guards against an average that rounds above 1 in reduced precision.
            keep = pooled.reshape(n, -1, 1).ceil().clamp(max=1.0)
            x = x * keep + self.mask_embedding[0] * (1.0 - keep)
        cls = self.class_embedding + torch.zeros(n, 1, x.shape[-1], dtype=x.dtype, device=x.device)
        x = torch.cat([cls, x], dim=1)
        x = x + self.positional_embedding
        x = self.ln_pre(x)
        x = x.permute(1, 0, 2)  # [L, N, W]
        keep_lnd = keep.permute(1, 0, 2)  # [G*G, N, 1]
        depth = 1
        for block in self.transformer.resblocks:
            x = block(x, None)
            if use_prompts and depth < self.prompt_depth:
                prompt = self.mask_embedding[depth].unsqueeze(1)  # [G*G or 1, 1, W]
                patches = x[1:] * keep_lnd + prompt * (1.0 - keep_lnd)
                x = torch.cat([x[:1], patches], dim=0)
            depth += 1
        x = self.ln_post(x[0])  # class token
        x = x @ self.proj
        return x / x.norm(p=2.0, dim=-1, keepdim=True)


class ClipText(nn.Module):
    """forward(tokens [n,L] int64, L <= context_length) -> [n,E] (not normalised).

    `non_object_embedding` [1,E] is the raw learned no-object row (persistent buffer)."""

    context_length: int

    def __init__(self, embed_dim: int, context_length: int, vocab_size: int, width: int, layers: int):
        super().__init__()
        heads = width // 64
        self.context_length = context_length
        self.token_embedding = nn.Embedding(vocab_size, width)
        self.positional_embedding = nn.Parameter(torch.empty(context_length, width))
        self.transformer = Transformer(width, layers, heads)
        self.ln_final = nn.LayerNorm(width)
        self.text_projection = nn.Parameter(torch.empty(width, embed_dim))
        self.register_buffer("non_object_embedding", torch.empty(1, embed_dim))
        nn.init.normal_(self.token_embedding.weight, std=0.02)
        nn.init.normal_(self.positional_embedding, std=0.01)
        nn.init.normal_(self.text_projection, std=width**-0.5)
        nn.init.normal_(self.non_object_embedding, std=embed_dim**-0.5)

    def forward(self, tokens: torch.Tensor) -> torch.Tensor:
        length = tokens.shape[1]
        x = self.token_embedding(tokens) + self.positional_embedding[:length]
        x = x.permute(1, 0, 2)  # [L, n, W]
        # Causal mask built per call so that any L <= context_length works without a device
        # or dtype baked into the module.
        mask = torch.full((length, length), float("-inf"), dtype=x.dtype, device=x.device).triu(1)
        for block in self.transformer.resblocks:
            x = block(x, mask)
        x = x.permute(1, 0, 2)
        x = self.ln_final(x)
        eot = tokens.argmax(dim=-1)
        x = x[torch.arange(x.shape[0], device=x.device), eot]
        return x @ self.text_projection


# --------------------------------------------------------------------------------------------
# Architecture read off a CLIP state dict (docs/reference-behaviour.md §2.2)
# --------------------------------------------------------------------------------------------


def clip_arch_from_state_dict(sd: Dict[str, torch.Tensor], prefix: str = "") -> Dict[str, int]:
    """`sd` holds CLIP keys under `prefix` (e.g. "clip_adapter.clip_model.")."""

    def get(name: str) -> torch.Tensor:
        key = prefix + name
        if key not in sd:
            raise KeyError(key)
        return sd[key]

    conv = get("visual.conv1.weight")
    pos = get("visual.positional_embedding")
    vis_blocks = prefix + "visual.transformer.resblocks."
    vision_layers = len(
        {
            k[len(vis_blocks) :].split(".")[0]
            for k in sd
            if k.startswith(vis_blocks) and k.endswith(".attn.in_proj_weight")
        }
    )
    grid = int(round(math.sqrt(pos.shape[0] - 1)))
    text_layers = len(
        {
            k[len(prefix + "transformer.resblocks.") :].split(".")[0]
            for k in sd
            if k.startswith(prefix + "transformer.resblocks.")
        }
    )
    prompt = sd.get(prefix + "visual.mask_embedding")
    arch = {
        "embed_dim": int(get("text_projection").shape[1]),
        "image_resolution": int(conv.shape[-1]) * grid,
        "vision_layers": vision_layers,
        "vision_width": int(conv.shape[0]),
        "vision_patch_size": int(conv.shape[-1]),
        "context_length": int(get("positional_embedding").shape[0]),
        "vocab_size": int(get("token_embedding.weight").shape[0]),
        "transformer_width": int(get("ln_final.weight").shape[0]),
        "transformer_heads": int(get("ln_final.weight").shape[0]) // 64,
        "transformer_layers": text_layers,
        "prompt_depth": int(prompt.shape[0]) if prompt is not None else 0,
        "prompt_rows": int(prompt.shape[1]) if prompt is not None else grid * grid,
    }
    return arch


# Released OpenAI CLIP architectures (docs/reference-behaviour.md §2.2), for --random-init.
RELEASED_CLIP: Dict[str, Dict[str, int]] = {
    "ViT-L/14": {
        "embed_dim": 768,
        "image_resolution": 224,
        "vision_layers": 24,
        "vision_width": 1024,
        "vision_patch_size": 14,
        "context_length": 77,
        "vocab_size": 49408,
        "transformer_width": 768,
        "transformer_heads": 12,
        "transformer_layers": 12,
    },
    "ViT-B/16": {
        "embed_dim": 512,
        "image_resolution": 224,
        "vision_layers": 12,
        "vision_width": 768,
        "vision_patch_size": 16,
        "context_length": 77,
        "vocab_size": 49408,
        "transformer_width": 512,
        "transformer_heads": 8,
        "transformer_layers": 12,
    },
}


def build_clip_visual(arch: Dict[str, int], mask_prompt_fwd: bool = True) -> ClipVisual:
    grid = arch["image_resolution"] // arch["vision_patch_size"]
    return ClipVisual(
        arch["image_resolution"],
        arch["vision_patch_size"],
        arch["vision_width"],
        arch["vision_layers"],
        arch["embed_dim"],
        prompt_depth=arch.get("prompt_depth", 3),
        prompt_rows=arch.get("prompt_rows", grid * grid),
        mask_prompt_fwd=mask_prompt_fwd,
    )


def build_clip_text(arch: Dict[str, int]) -> ClipText:
    return ClipText(
        arch["embed_dim"],
        arch["context_length"],
        arch["vocab_size"],
        arch["transformer_width"],
        arch["transformer_layers"],
    )


def clip_state_keys(visual: ClipVisual, text: ClipText, prefix: str = "clip_adapter.") -> Dict[str, List[str]]:
    """Checkpoint key → (module name, local key) as a dict of two lists, for the loader."""
    out: Dict[str, List[str]] = {}
    for k in visual.state_dict().keys():
        out[prefix + "clip_model.visual." + k] = ["clip_visual", k]
    for k in text.state_dict().keys():
        if k == "non_object_embedding":
            out[prefix + "non_object_embedding"] = ["clip_text", k]
        else:
            out[prefix + "clip_model." + k] = ["clip_text", k]
    return out
