"""OpenVocabTransformerPredictor (docs/reference-behaviour.md §4.4): sine PE, post-norm DETR decoder, class/mask heads.

Keys: "transformer.decoder.layers.{i}.{self_attn,multihead_attn,linear1,linear2,norm1..3}",
"transformer.decoder.norm", "query_embed", "input_proj" (absent when it is the identity),
"mask_embed.layers.{0,1,2}", "class_embed.layers.{0..}".
"""
import math
from typing import Tuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn


def sine_position_embedding(x: Tensor, num_pos_feats: int, temperature: float = 10000.0) -> Tensor:
    """[B, 2*num_pos_feats, H, W] positional encoding of x's spatial grid (no padding mask).

    Coordinates are 1-based counts, divided by (size + 1e-6) and then multiplied by 2*pi;
    y channels come first, and sin/cos interleave within each axis.
    """
    b = x.shape[0]
    h = x.shape[2]
    w = x.shape[3]
    # Computed in float32 like the reference, then cast to the module's dtype.
    ones = torch.ones((b, h, w), dtype=torch.float32, device=x.device)
    y_embed = ones.cumsum(1)
    x_embed = ones.cumsum(2)
    eps = 1e-6
    scale = 2.0 * math.pi
    y_embed = y_embed / (y_embed[:, -1:, :] + eps) * scale
    x_embed = x_embed / (x_embed[:, :, -1:] + eps) * scale
    dim_t = torch.arange(num_pos_feats, dtype=torch.float32, device=x.device)
    dim_t = torch.pow(temperature, 2 * torch.div(dim_t, 2, rounding_mode="floor") / num_pos_feats)
    pos_x = x_embed[:, :, :, None] / dim_t
    pos_y = y_embed[:, :, :, None] / dim_t
    pos_x = torch.stack((pos_x[:, :, :, 0::2].sin(), pos_x[:, :, :, 1::2].cos()), dim=4).flatten(3)
    pos_y = torch.stack((pos_y[:, :, :, 0::2].sin(), pos_y[:, :, :, 1::2].cos()), dim=4).flatten(3)
    pos = torch.cat((pos_y, pos_x), dim=3).permute(0, 3, 1, 2)
    return pos.to(x.dtype)


class MLP(nn.Module):
    """Linear layers with ReLU in between (none after the last)."""

    def __init__(self, input_dim: int, hidden_dim: int, output_dim: int, num_layers: int):
        super().__init__()
        self.num_layers = num_layers
        dims_in = [input_dim] + [hidden_dim] * (num_layers - 1)
        dims_out = [hidden_dim] * (num_layers - 1) + [output_dim]
        self.layers = nn.ModuleList([nn.Linear(i, o) for i, o in zip(dims_in, dims_out)])

    def forward(self, x: Tensor) -> Tensor:
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < self.num_layers - 1:
                x = F.relu(x)
        return x


class TransformerDecoderLayer(nn.Module):
    """Post-norm DETR decoder layer; tensors are sequence-first [L, B, C]."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int):
        super().__init__()
        self.self_attn = nn.MultiheadAttention(d_model, nhead, dropout=0.0)
        self.multihead_attn = nn.MultiheadAttention(d_model, nhead, dropout=0.0)
        self.linear1 = nn.Linear(d_model, dim_feedforward)
        self.linear2 = nn.Linear(dim_feedforward, d_model)
        self.norm1 = nn.LayerNorm(d_model)
        self.norm2 = nn.LayerNorm(d_model)
        self.norm3 = nn.LayerNorm(d_model)

    def forward(self, tgt: Tensor, memory: Tensor, memory_key: Tensor, query_pos: Tensor) -> Tensor:
        q = tgt + query_pos
        tgt2 = self.self_attn(q, q, tgt, need_weights=False)[0]
        tgt = self.norm1(tgt + tgt2)
        tgt2 = self.multihead_attn(tgt + query_pos, memory_key, memory, need_weights=False)[0]
        tgt = self.norm2(tgt + tgt2)
        tgt2 = self.linear2(F.relu(self.linear1(tgt)))
        return self.norm3(tgt + tgt2)


class TransformerDecoder(nn.Module):
    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, num_layers: int):
        super().__init__()
        self.layers = nn.ModuleList(
            [TransformerDecoderLayer(d_model, nhead, dim_feedforward) for _ in range(num_layers)]
        )
        self.norm = nn.LayerNorm(d_model)

    def forward(self, tgt: Tensor, memory: Tensor, pos: Tensor, query_pos: Tensor) -> Tensor:
        """Returns norm(output of the last layer); the intermediate outputs only feed training."""
        memory_key = memory + pos
        for layer in self.layers:
            tgt = layer(tgt, memory, memory_key, query_pos)
        return self.norm(tgt)


class Transformer(nn.Module):
    """Zero encoder layers (memory = projected input), so only the decoder holds weights."""

    def __init__(self, d_model: int, nhead: int, dim_feedforward: int, num_decoder_layers: int):
        super().__init__()
        self.decoder = TransformerDecoder(d_model, nhead, dim_feedforward, num_decoder_layers)
        for p in self.parameters():
            if p.dim() > 1:
                nn.init.xavier_uniform_(p)


class OpenVocabTransformerPredictor(nn.Module):
    """forward(res5, mask_features) -> (class_embeddings [B,Q,E], mask_logits [B,Q,H/4,W/4])."""

    def __init__(
        self,
        in_channels: int,
        hidden_dim: int = 256,
        num_queries: int = 100,
        nheads: int = 8,
        dim_feedforward: int = 2048,
        dec_layers: int = 6,
        mask_dim: int = 256,
        embedding_dim: int = 768,
        embed_hidden_dim: int = 1024,
        embed_layers: int = 2,
        enforce_input_proj: bool = False,
    ):
        super().__init__()
        if hidden_dim % 2 != 0:
            raise ValueError(f"predictor: HIDDEN_DIM must be even, got {hidden_dim}")
        self.num_pos_feats = hidden_dim // 2
        self.transformer = Transformer(hidden_dim, nheads, dim_feedforward, dec_layers)
        self.query_embed = nn.Embedding(num_queries, hidden_dim)
        if in_channels != hidden_dim or enforce_input_proj:
            self.input_proj: nn.Module = nn.Conv2d(in_channels, hidden_dim, kernel_size=1)
            nn.init.kaiming_uniform_(self.input_proj.weight, a=1)
            nn.init.zeros_(self.input_proj.bias)
        else:
            self.input_proj = nn.Identity()
        self.mask_embed = MLP(hidden_dim, hidden_dim, mask_dim, 3)
        self.class_embed = MLP(hidden_dim, embed_hidden_dim, embedding_dim, embed_layers)

    def forward(self, x: Tensor, mask_features: Tensor) -> Tuple[Tensor, Tensor]:
        pos = sine_position_embedding(x, self.num_pos_feats)
        src = self.input_proj(x)
        b = src.shape[0]
        memory = src.flatten(2).permute(2, 0, 1)  # [HW, B, C]
        pos = pos.flatten(2).permute(2, 0, 1)
        query_pos = self.query_embed.weight.unsqueeze(1).repeat(1, b, 1)  # [Q, B, C]
        tgt = torch.zeros_like(query_pos)
        hs = self.transformer.decoder(tgt, memory, pos, query_pos).transpose(0, 1)  # [B, Q, C]
        class_embeddings = self.class_embed(hs)
        mask_embed = self.mask_embed(hs)
        mask_logits = torch.einsum("bqc,bchw->bqhw", mask_embed, mask_features)
        return class_embeddings, mask_logits
