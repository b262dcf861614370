"""Config defaults and the two released presets (docs/reference-behaviour.md §1.4, §2.3, §2.4, §4).

Configs are nested dicts with the official YAML key names (MODEL.SWIN.EMBED_DIM, ...). Only the
keys that change inference or tensor shapes are listed; everything else is irrelevant here.
"""
import copy
from typing import Any, Dict

# detectron2 / MaskFormer / ov-seg defaults for the keys the exporter and the modules read.
DEFAULTS: Dict[str, Any] = {
    "MODEL": {
        "META_ARCHITECTURE": "OVSeg",
        "BACKBONE": {"NAME": "D2SwinTransformer", "FREEZE_AT": 0},
        "PIXEL_MEAN": [123.675, 116.28, 103.53],
        "PIXEL_STD": [58.395, 57.12, 57.375],
        "SWIN": {
            "PRETRAIN_IMG_SIZE": 224,
            "PATCH_SIZE": 4,
            "EMBED_DIM": 96,
            "DEPTHS": [2, 2, 6, 2],
            "NUM_HEADS": [3, 6, 12, 24],
            "WINDOW_SIZE": 7,
            "MLP_RATIO": 4.0,
            "QKV_BIAS": True,
            "QK_SCALE": None,
            "NORM_INDICES": None,
            "PROJECTION": False,
            "PROJECT_DIM": 256,
            "DROP_RATE": 0.0,
            "ATTN_DROP_RATE": 0.0,
            "DROP_PATH_RATE": 0.3,
            "APE": False,
            "PATCH_NORM": True,
            "OUT_FEATURES": ["res2", "res3", "res4", "res5"],
        },
        "RESNETS": {
            "DEPTH": 50,
            "NORM": "FrozenBN",
            "NUM_GROUPS": 1,
            "WIDTH_PER_GROUP": 64,
            "RES2_OUT_CHANNELS": 256,
            "STRIDE_IN_1X1": True,
            "RES4_DILATION": 1,
            "RES5_DILATION": 1,
            "DEFORM_ON_PER_STAGE": [False, False, False, False],
            "DEFORM_MODULATED": False,
            "DEFORM_NUM_GROUPS": 1,
            "RES5_MULTI_GRID": [1, 2, 4],
            "STEM_TYPE": "deeplab",
            "STEM_OUT_CHANNELS": 128,
            "OUT_FEATURES": ["res4"],
        },
        "SEM_SEG_HEAD": {
            "NAME": "OpenVocabMaskFormerHead",
            "IN_FEATURES": ["res2", "res3", "res4", "res5"],
            "IGNORE_VALUE": 255,
            "NUM_CLASSES": 171,
            "COMMON_STRIDE": 4,
            "LOSS_WEIGHT": 1.0,
            "CONVS_DIM": 256,
            "MASK_DIM": 256,
            "NORM": "GN",
            "TRANSFORMER_ENC_LAYERS": 0,
            "PIXEL_DECODER_NAME": "BasePixelDecoder",
            "EMBEDDING_DIM": 512,
            "EMBED_HIDDEN_DIM": 1024,
            "EMBED_LAYERS": 2,
        },
        "MASK_FORMER": {
            "DEEP_SUPERVISION": True,
            "NO_OBJECT_WEIGHT": 0.1,
            "DICE_WEIGHT": 1.0,
            "MASK_WEIGHT": 20.0,
            "NHEADS": 8,
            "DROPOUT": 0.1,
            "DIM_FEEDFORWARD": 2048,
            "ENC_LAYERS": 0,
            "DEC_LAYERS": 6,
            "PRE_NORM": False,
            "HIDDEN_DIM": 256,
            "NUM_OBJECT_QUERIES": 100,
            "TRANSFORMER_IN_FEATURE": "res5",
            "ENFORCE_INPUT_PROJ": False,
            "SIZE_DIVISIBILITY": 32,
            "TEST": {
                "PANOPTIC_ON": False,
                "OBJECT_MASK_THRESHOLD": 0.0,
                "OVERLAP_THRESHOLD": 0.0,
                "SEM_SEG_POSTPROCESSING_BEFORE_INFERENCE": False,
            },
        },
        "CLIP_ADAPTER": {
            "TEXT_TEMPLATES": "vild",
            "PREDEFINED_PROMPT_TEMPLATES": ["a photo of a {}."],
            "PROMPT_CHECKPOINT": "",
            "CLIP_MODEL_NAME": "ViT-B/16",
            "MASK_FILL": "mean",
            "MASK_EXPAND_RATIO": 1.0,
            "MASK_THR": 0.4,
            "MASK_MATTING": False,
            "REGION_RESIZED": True,
            "CLIP_ENSEMBLE": True,
            "CLIP_ENSEMBLE_WEIGHT": 0.7,
            "MASK_PROMPT_DEPTH": 3,
            "MASK_PROMPT_FWD": True,
        },
    },
    "INPUT": {"MIN_SIZE_TEST": 800, "MAX_SIZE_TEST": 1333, "FORMAT": "RGB"},
}

_SWIN_B_VIT_L14 = {
    "MODEL": {
        "META_ARCHITECTURE": "OVSeg",
        "BACKBONE": {"NAME": "D2SwinTransformer", "FREEZE_AT": 0},
        "SWIN": {
            "PRETRAIN_IMG_SIZE": 384,
            "EMBED_DIM": 128,
            "DEPTHS": [2, 2, 18, 2],
            "NUM_HEADS": [4, 8, 16, 32],
            "WINDOW_SIZE": 12,
        },
        "SEM_SEG_HEAD": {"EMBEDDING_DIM": 768},
        "CLIP_ADAPTER": {
            "CLIP_MODEL_NAME": "ViT-L/14",
            "MASK_THR": 0.4,
            "CLIP_ENSEMBLE_WEIGHT": 0.7,
            "MASK_PROMPT_DEPTH": 3,
            "MASK_PROMPT_FWD": True,
        },
    },
    "INPUT": {"MIN_SIZE_TEST": 640, "MAX_SIZE_TEST": 2560},
}

_R101C_VIT_B16 = {
    "MODEL": {
        "META_ARCHITECTURE": "OVSeg",
        "BACKBONE": {"NAME": "build_resnet_deeplab_backbone", "FREEZE_AT": 2},
        "RESNETS": {
            "DEPTH": 101,
            "STEM_TYPE": "deeplab",
            "STEM_OUT_CHANNELS": 128,
            "STRIDE_IN_1X1": False,
            "RES5_MULTI_GRID": [1, 2, 4],
            "NORM": "FrozenBN",
            "OUT_FEATURES": ["res2", "res3", "res4", "res5"],
        },
        "SEM_SEG_HEAD": {"EMBEDDING_DIM": 512},
        "CLIP_ADAPTER": {
            "CLIP_MODEL_NAME": "ViT-B/16",
            "MASK_THR": 0.5,
            "CLIP_ENSEMBLE_WEIGHT": 0.7,
            "MASK_PROMPT_DEPTH": 3,
            "MASK_PROMPT_FWD": True,
        },
    },
    "INPUT": {"MIN_SIZE_TEST": 512, "MAX_SIZE_TEST": 2048},
}

PRESETS = {"swinB_vitL14": _SWIN_B_VIT_L14, "R101c_vitB16": _R101C_VIT_B16}

# Released defaults of the path the config does not name (models/BUNDLE_FORMAT.md).
RELEASED_EVAL = {
    "swin": {"mask_threshold": 0.4, "ensemble_weight": 0.7},
    "resnet": {"mask_threshold": 0.5, "ensemble_weight": 0.7},
}
RELEASED_DEMO = {"mask_threshold": 0.35, "ensemble_weight": 0.0}


def deep_merge(base: Dict[str, Any], override: Dict[str, Any]) -> Dict[str, Any]:
    out = copy.deepcopy(base)
    for k, v in override.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = deep_merge(out[k], v)
        else:
            out[k] = copy.deepcopy(v)
    return out


def preset_config(name: str) -> Dict[str, Any]:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r} (known: {', '.join(sorted(PRESETS))})")
    return deep_merge(DEFAULTS, PRESETS[name])
