"""Synthetic fixtures in the shared fixtures' layout, made from our own modules (not a test).

`write_fixture(out_dir, variant)` writes out_dir/{checkpoint.pth, config_eval.yaml,
config_demo.yaml, classes.txt}: an official-format checkpoint ({"model": state_dict} with
backbone.*, sem_seg_head.*, clip_adapter.clip_model.*, clip_adapter.non_object_embedding, the
training-only and ignored extras) of a tiny ResNet + tiny CLIP with seeded random weights,
and configs in the official YAML layout (the shared fixture's config_eval.yaml with the
variant's values when it is there, else the exporter's defaults). There is no reference
output: these fixtures drive the C++-vs-Python comparisons and the exporter's ResNet paths.
"""
import collections
import copy
import math
import os
from typing import Any, Dict, List, Optional

import torch
import yaml

import fixture_util  # noqa: F401 (puts tools/ on sys.path)
from ovseg_export import config as config_mod
from ovseg_export.export import build_modules, checkpoint_key_map, complete_clip_arch
from ovseg_export.presets import DEFAULTS, deep_merge

# CLIP towers need width >= 64 (heads = width / 64); the text tower keeps the full vocabulary.
TINY_CLIP = {
    "embed_dim": 32,
    "image_resolution": 224,
    "vision_layers": 2,
    "vision_width": 64,
    "vision_patch_size": 16,
    "context_length": 77,
    "vocab_size": 49408,
    "transformer_width": 64,
    "transformer_layers": 1,
}

_HEAD = {
    "SEM_SEG_HEAD": {
        "CONVS_DIM": 32,
        "MASK_DIM": 32,
        "EMBEDDING_DIM": TINY_CLIP["embed_dim"],
        "EMBED_HIDDEN_DIM": 64,
        "EMBED_LAYERS": 2,
    },
    "MASK_FORMER": {"HIDDEN_DIM": 32, "NHEADS": 2, "DIM_FEEDFORWARD": 64, "DEC_LAYERS": 2, "NUM_OBJECT_QUERIES": 12},
}

# name -> {seed: weights, config: overrides of the eval config, demo: CLIP_ADAPTER of the demo
# config}. The seeds were picked so that the label maps hold more than one class.
VARIANTS: Dict[str, Dict[str, Any]] = {
    # "R101c"-style DeepLab ResNet at DEPTH 50: 3-conv stem, stride in the 3x3 conv, multi-grid.
    "tiny_r50c": {
        "seed": 16,
        "config": {
            "MODEL": {
                "BACKBONE": {"NAME": "build_resnet_deeplab_backbone", "FREEZE_AT": 0},
                "RESNETS": {
                    "DEPTH": 50,
                    "STEM_TYPE": "deeplab",
                    "STEM_OUT_CHANNELS": 16,
                    "RES2_OUT_CHANNELS": 32,
                    "WIDTH_PER_GROUP": 8,
                    "NUM_GROUPS": 1,
                    "STRIDE_IN_1X1": False,
                    "RES4_DILATION": 1,
                    "RES5_DILATION": 1,
                    "RES5_MULTI_GRID": [1, 2, 4],
                    "NORM": "FrozenBN",
                    "OUT_FEATURES": ["res2", "res3", "res4", "res5"],
                },
                "CLIP_ADAPTER": {"CLIP_MODEL_NAME": "ViT-B/16", "MASK_THR": 0.5, "CLIP_ENSEMBLE_WEIGHT": 0.7},
            },
            # 301x517 -> 336x577, capped by 512 -> 298x512 (the max-size rule; neither side /32)
            "INPUT": {"MIN_SIZE_TEST": 336, "MAX_SIZE_TEST": 512},
        },
        "demo": {"MASK_THR": 0.3, "CLIP_ENSEMBLE_WEIGHT": 0.0},
    },
    # Plain detectron2 ResNet-18 (its builder's constraints: RES2_OUT_CHANNELS 64, no
    # dilation): basic 7x7 stem, BasicBlocks.
    "tiny_r18": {
        "seed": 5,
        "config": {
            "MODEL": {
                "BACKBONE": {"NAME": "build_resnet_backbone", "FREEZE_AT": 0},
                "RESNETS": {
                    "DEPTH": 18,
                    "STEM_OUT_CHANNELS": 64,
                    "RES2_OUT_CHANNELS": 64,
                    "WIDTH_PER_GROUP": 64,
                    "NUM_GROUPS": 1,
                    "STRIDE_IN_1X1": True,
                    "RES5_DILATION": 1,
                    "NORM": "FrozenBN",
                    "OUT_FEATURES": ["res2", "res3", "res4", "res5"],
                },
                "CLIP_ADAPTER": {"CLIP_MODEL_NAME": "ViT-B/16", "MASK_THR": 0.45, "CLIP_ENSEMBLE_WEIGHT": 0.65},
            },
            "INPUT": {"MIN_SIZE_TEST": 320, "MAX_SIZE_TEST": 1333},
        },
        "demo": {"MASK_THR": 0.35, "CLIP_ENSEMBLE_WEIGHT": 0.0},
    },
}

CLASSES = ["person", "dog", "grass", "sky", "tree", "road, route"]


def _template_config() -> Dict[str, Any]:
    fx = fixture_util.primary_fixture()
    if fx is not None:
        with open(fx.config_eval, "r", encoding="utf-8") as f:
            return yaml.safe_load(f)
    return copy.deepcopy(DEFAULTS)


def _config_dicts(variant: str):
    spec = VARIANTS[variant]
    cfg = deep_merge(_template_config(), {"MODEL": _HEAD})
    cfg = deep_merge(cfg, spec["config"])
    cfg["MODEL"]["META_ARCHITECTURE"] = "OVSeg"
    demo = deep_merge(cfg, {"MODEL": {"META_ARCHITECTURE": "OVSegDEMO", "CLIP_ADAPTER": spec["demo"]}})
    return cfg, demo


def _randomise(modules: Dict[str, torch.nn.Module], gen: torch.Generator) -> None:
    """Non-trivial norms: frozen BN statistics and affine terms, GroupNorm/LayerNorm affines."""
    with torch.no_grad():
        for m in modules.values():
            for name, t in m.state_dict(keep_vars=True).items():
                parent, _, leaf = name.rpartition(".")
                owner = parent.rpartition(".")[2]
                if not t.is_floating_point() or not ("norm" in owner or owner.startswith("ln_")):
                    continue
                if leaf == "running_var":
                    t.copy_(0.5 + torch.rand(t.shape, generator=gen))
                elif leaf == "running_mean":
                    t.copy_(0.1 * torch.randn(t.shape, generator=gen))
                elif leaf == "weight":
                    t.copy_(0.8 + 0.4 * torch.rand(t.shape, generator=gen))
                elif leaf == "bias":
                    t.copy_(0.05 * torch.randn(t.shape, generator=gen))


def _sharpen(modules: Dict[str, torch.nn.Module]) -> None:
    """Default inits give mask logits of |x| < 3 (every sigmoid near 0.5, so many pixels sit
    on the threshold), near-identical text features for all classes and CLIP image
    embeddings that ignore the crop. Larger mask and token embeddings, and a visual tower whose
    patch content and mask prompts outweigh the class/position embeddings, make the branches
    disagree between regions and classes, so the label maps hold more than one class."""
    with torch.no_grad():
        modules["proposals"].sem_seg_head.predictor.mask_embed.layers[-1].weight.mul_(100.0)
        modules["clip_text"].token_embedding.weight.mul_(50.0)
        v = modules["clip_visual"]
        v.conv1.weight.mul_(10.0)
        v.mask_embedding.mul_(10.0)
        v.class_embedding.mul_(0.1)
        v.positional_embedding.mul_(0.1)
        for block in v.transformer.resblocks:
            block.attn.out_proj.weight.mul_(5.0)
            block.mlp.c_proj.weight.mul_(5.0)


def make_state_dict(cfg: Dict[str, Any], seed: int) -> "collections.OrderedDict[str, torch.Tensor]":
    arch = complete_clip_arch(TINY_CLIP, cfg)
    torch.manual_seed(seed)
    modules = build_modules(cfg, arch)
    _randomise(modules, torch.Generator().manual_seed(seed + 1000))
    _sharpen(modules)
    states = {n: m.state_dict() for n, m in modules.items()}
    sd: "collections.OrderedDict[str, torch.Tensor]" = collections.OrderedDict()
    for ck, (m, local) in checkpoint_key_map(modules).items():
        sd[ck] = states[m][local].detach().clone()
    # What an official checkpoint also carries (ignored by the exporter).
    num_classes = int(cfg["MODEL"]["SEM_SEG_HEAD"].get("NUM_CLASSES", 171))
    empty = torch.ones(num_classes + 1)
    empty[-1] = 0.1
    sd["criterion.empty_weight"] = empty
    sd["clip_adapter.clip_model.logit_scale"] = torch.tensor(math.log(1 / 0.07))
    sd["clip_adapter.pixel_mean"] = (torch.tensor(config_mod.CLIP_MEAN) * 255).view(1, 3, 1, 1)
    sd["clip_adapter.pixel_std"] = (torch.tensor(config_mod.CLIP_STD) * 255).view(1, 3, 1, 1)
    return sd


def write_fixture(out_dir: str, variant: str, classes: Optional[List[str]] = None) -> Dict[str, str]:
    """Writes the fixture; returns its paths (checkpoint, config_eval, config_demo, classes)."""
    os.makedirs(out_dir, exist_ok=True)
    cfg, demo = _config_dicts(variant)
    paths = {
        "checkpoint": os.path.join(out_dir, "checkpoint.pth"),
        "config_eval": os.path.join(out_dir, "config_eval.yaml"),
        "config_demo": os.path.join(out_dir, "config_demo.yaml"),
        "classes": os.path.join(out_dir, "classes.txt"),
    }
    for key, data in (("config_eval", cfg), ("config_demo", demo)):
        with open(paths[key], "w", encoding="utf-8") as f:
            yaml.safe_dump(data, f, sort_keys=True)
    parsed = config_mod.load_config(paths["config_eval"])
    torch.save({"model": make_state_dict(parsed, VARIANTS[variant]["seed"]), "iteration": 0}, paths["checkpoint"])
    with open(paths["classes"], "w", encoding="utf-8") as f:
        f.write("\n".join(classes or CLASSES) + "\n")
    return paths
