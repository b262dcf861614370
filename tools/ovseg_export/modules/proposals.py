"""The MaskFormer mask-proposal generator (backbone + pixel decoder + predictor), docs/reference-behaviour.md §4.

`build_proposal_generator(cfg)` takes the official YAML config parsed into nested dicts. The
module's state_dict keys equal the checkpoint keys under "backbone." and "sem_seg_head.".
Input normalisation (pixel_mean/std) is not part of it.
"""
from typing import Any, Dict, List, Optional, Tuple

from torch import Tensor, nn

from .pixel_decoder import BasePixelDecoder
from .predictor import OpenVocabTransformerPredictor
from .resnet import DeepLabResNet
from .swin import SwinBackbone

SWIN_BACKBONE = "D2SwinTransformer"
RESNET_BACKBONE = "build_resnet_deeplab_backbone"

# Released values (docs/reference-behaviour.md §2.4) used where a key is missing from the config.
_SWIN_DEFAULTS: Dict[str, Any] = {
    "EMBED_DIM": 128,
    "DEPTHS": [2, 2, 18, 2],
    "NUM_HEADS": [4, 8, 16, 32],
    "WINDOW_SIZE": 12,
    "PATCH_SIZE": 4,
    "MLP_RATIO": 4.0,
    "QKV_BIAS": True,
    "QK_SCALE": None,
    "APE": False,
    "PATCH_NORM": True,
}
_RESNET_DEFAULTS: Dict[str, Any] = {
    "DEPTH": 101,
    "STEM_TYPE": "deeplab",
    "STEM_OUT_CHANNELS": 128,
    "RES2_OUT_CHANNELS": 256,
    "NUM_GROUPS": 1,
    "WIDTH_PER_GROUP": 64,
    "STRIDE_IN_1X1": False,
    "RES4_DILATION": 1,
    "RES5_DILATION": 1,
    "RES5_MULTI_GRID": [1, 2, 4],
    "NORM": "FrozenBN",
    "DEFORM_ON_PER_STAGE": [False, False, False, False],
}
_HEAD_DEFAULTS: Dict[str, Any] = {
    "CONVS_DIM": 256,
    "MASK_DIM": 256,
    "NORM": "GN",
    "EMBED_HIDDEN_DIM": 1024,
    "EMBED_LAYERS": 2,
    "PIXEL_DECODER_NAME": "BasePixelDecoder",
    "IN_FEATURES": ["res2", "res3", "res4", "res5"],
}
# EMBEDDING_DIM must equal CLIP's E: 768 for the Swin-B/ViT-L release, 512 for R101c/ViT-B.
_EMBEDDING_DIM_DEFAULT = {SWIN_BACKBONE: 768, RESNET_BACKBONE: 512}
_MASK_FORMER_DEFAULTS: Dict[str, Any] = {
    "HIDDEN_DIM": 256,
    "NUM_OBJECT_QUERIES": 100,
    "DIM_FEEDFORWARD": 2048,
    "DEC_LAYERS": 6,
    "ENC_LAYERS": 0,
    "NHEADS": 8,
    "PRE_NORM": False,
    "ENFORCE_INPUT_PROJ": False,
    "TRANSFORMER_IN_FEATURE": "res5",
}


def _section(cfg: Dict[str, Any], name: str, defaults: Dict[str, Any]) -> Dict[str, Any]:
    model = cfg.get("MODEL") or {}
    given = model.get(name) or {}
    out = dict(defaults)
    out.update({k: v for k, v in given.items() if v is not None})
    return out


class SemSegHead(nn.Module):
    def __init__(self, pixel_decoder: BasePixelDecoder, predictor: OpenVocabTransformerPredictor):
        super().__init__()
        self.pixel_decoder = pixel_decoder
        self.predictor = predictor

    def forward(self, res2: Tensor, res3: Tensor, res4: Tensor, res5: Tensor) -> Tuple[Tensor, Tensor]:
        mask_features = self.pixel_decoder(res2, res3, res4, res5)
        return self.predictor(res5, mask_features)


class ProposalGenerator(nn.Module):
    """forward(x [B,3,Hp,Wp] normalised, padded to /32) -> (class_embeddings [B,Q,E],
    mask_logits [B,Q,Hp/4,Wp/4])."""

    def __init__(self, backbone: nn.Module, sem_seg_head: SemSegHead):
        super().__init__()
        self.backbone = backbone
        self.sem_seg_head = sem_seg_head

    def forward(self, x: Tensor) -> Tuple[Tensor, Tensor]:
        res2, res3, res4, res5 = self.backbone(x)
        return self.sem_seg_head(res2, res3, res4, res5)


def _build_swin(c: Dict[str, Any]) -> Tuple[nn.Module, List[int]]:
    if c["APE"]:
        raise ValueError("config: MODEL.SWIN.APE = True (absolute position embedding) " "is not supported")
    qk_scale: Optional[float] = None if c["QK_SCALE"] is None else float(c["QK_SCALE"])
    backbone = SwinBackbone(
        patch_size=int(c["PATCH_SIZE"]),
        embed_dim=int(c["EMBED_DIM"]),
        depths=[int(d) for d in c["DEPTHS"]],
        num_heads=[int(h) for h in c["NUM_HEADS"]],
        window_size=int(c["WINDOW_SIZE"]),
        mlp_ratio=float(c["MLP_RATIO"]),
        qkv_bias=bool(c["QKV_BIAS"]),
        qk_scale=qk_scale,
        patch_norm=bool(c["PATCH_NORM"]),
    )
    return backbone, list(backbone.num_features)


def _build_resnet(c: Dict[str, Any]) -> Tuple[nn.Module, List[int]]:
    if any(bool(d) for d in c["DEFORM_ON_PER_STAGE"]):
        raise ValueError("config: MODEL.RESNETS.DEFORM_ON_PER_STAGE (deformable convs) " "is not supported")
    if c["NORM"] not in ("FrozenBN", "BN", "SyncBN"):
        raise ValueError(f"config: MODEL.RESNETS.NORM {c['NORM']!r} is not supported")
    backbone = DeepLabResNet(
        depth=int(c["DEPTH"]),
        stem_type=str(c["STEM_TYPE"]),
        stem_out_channels=int(c["STEM_OUT_CHANNELS"]),
        res2_out_channels=int(c["RES2_OUT_CHANNELS"]),
        num_groups=int(c["NUM_GROUPS"]),
        width_per_group=int(c["WIDTH_PER_GROUP"]),
        stride_in_1x1=bool(c["STRIDE_IN_1X1"]),
        res4_dilation=int(c["RES4_DILATION"]),
        res5_dilation=int(c["RES5_DILATION"]),
        res5_multi_grid=[int(g) for g in c["RES5_MULTI_GRID"]],
    )
    return backbone, list(backbone.out_channels)


def build_proposal_generator(cfg: Dict[str, Any]) -> nn.Module:
    """Builds the proposal generator described by a parsed ov-seg config (nested dicts)."""
    model = cfg.get("MODEL") or {}
    name = (model.get("BACKBONE") or {}).get("NAME")
    if name == SWIN_BACKBONE:
        backbone, channels = _build_swin(_section(cfg, "SWIN", _SWIN_DEFAULTS))
    elif name == RESNET_BACKBONE:
        backbone, channels = _build_resnet(_section(cfg, "RESNETS", _RESNET_DEFAULTS))
    else:
        raise ValueError(
            f"config: MODEL.BACKBONE.NAME {name!r} is not supported " f"({SWIN_BACKBONE!r} or {RESNET_BACKBONE!r})"
        )

    head = _section(cfg, "SEM_SEG_HEAD", dict(_HEAD_DEFAULTS, EMBEDDING_DIM=_EMBEDDING_DIM_DEFAULT[name]))
    mf = _section(cfg, "MASK_FORMER", _MASK_FORMER_DEFAULTS)
    if head["PIXEL_DECODER_NAME"] != "BasePixelDecoder":
        raise ValueError(
            f"config: MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME "
            f"{head['PIXEL_DECODER_NAME']!r} is not supported (BasePixelDecoder)"
        )
    if list(head["IN_FEATURES"]) != ["res2", "res3", "res4", "res5"]:
        raise ValueError(
            f"config: MODEL.SEM_SEG_HEAD.IN_FEATURES {head['IN_FEATURES']} is not " "supported (res2..res5)"
        )
    if int(mf["ENC_LAYERS"]) != 0 or int(head.get("TRANSFORMER_ENC_LAYERS", 0) or 0) != 0:
        raise ValueError("config: transformer encoder layers (MASK_FORMER.ENC_LAYERS) " "are not supported")
    if bool(mf["PRE_NORM"]):
        raise ValueError("config: MODEL.MASK_FORMER.PRE_NORM = True is not supported")
    if mf["TRANSFORMER_IN_FEATURE"] != "res5":
        raise ValueError(
            f"config: MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE "
            f"{mf['TRANSFORMER_IN_FEATURE']!r} is not supported (res5)"
        )

    pixel_decoder = BasePixelDecoder(
        channels, conv_dim=int(head["CONVS_DIM"]), mask_dim=int(head["MASK_DIM"]), norm=str(head["NORM"])
    )
    predictor = OpenVocabTransformerPredictor(
        in_channels=channels[3],
        hidden_dim=int(mf["HIDDEN_DIM"]),
        num_queries=int(mf["NUM_OBJECT_QUERIES"]),
        nheads=int(mf["NHEADS"]),
        dim_feedforward=int(mf["DIM_FEEDFORWARD"]),
        dec_layers=int(mf["DEC_LAYERS"]),
        mask_dim=int(head["MASK_DIM"]),
        embedding_dim=int(head["EMBEDDING_DIM"]),
        embed_hidden_dim=int(head["EMBED_HIDDEN_DIM"]),
        embed_layers=int(head["EMBED_LAYERS"]),
        enforce_input_proj=bool(mf["ENFORCE_INPUT_PROJ"]),
    )
    model_ = ProposalGenerator(backbone, SemSegHead(pixel_decoder, predictor))
    return model_.eval()
