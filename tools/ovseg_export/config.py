"""Official ov-seg YAML configs → nested dicts, and the inference settings derived from them."""
import os
from typing import Any, Dict, List

import numpy as np
import yaml

from .presets import DEFAULTS, RELEASED_DEMO, RELEASED_EVAL, deep_merge, preset_config


class ConfigError(Exception):
    pass


class OpaqueValue:
    """A value written with a Python tag (`!!python/object/apply:eval [...]`, `!!python/tuple`,
    ...). detectron2 falls back to yaml.unsafe_load and evaluates it; the exporter never does:
    the value stays opaque, which is fine for the keys it does not read (the released configs
    use one for the training-only INPUT.MIN_SIZE_TRAIN) and an error for the keys it reads."""

    def __init__(self, tag: str, file: str, line: int):
        self.tag, self.file, self.line = tag, file, line

    def __repr__(self) -> str:
        return f"<unevaluated {self.tag} at {self.file}:{self.line}>"


class _ConfigLoader(yaml.SafeLoader):
    """yaml.safe_load plus opaque Python tags (nothing of the tagged node is constructed)."""


def _opaque_python_tag(loader, suffix, node):
    return OpaqueValue("!!python/" + suffix, node.start_mark.name, node.start_mark.line + 1)


_ConfigLoader.add_multi_constructor("tag:yaml.org,2002:python/", _opaque_python_tag)

BASE_KEY = "_BASE_"


def _merge_a_into_b(a: Dict[str, Any], b: Dict[str, Any], where: str, prefix: str = "") -> None:
    """detectron2 / fvcore's merge of a config over its _BASE_: mappings merge key by key, any
    other value replaces; a mapping over a non-mapping base value is an error there too."""
    for k, v in a.items():
        if isinstance(v, dict) and k in b:
            if not isinstance(b[k], dict):
                raise ConfigError(f"{where}: cannot inherit key {prefix + str(k)!r} from _BASE_ "
                                  "(a mapping over a plain value)")
            _merge_a_into_b(v, b[k], where, prefix + str(k) + ".")
        else:
            b[k] = v


def _read_yaml(path: str, depth: int = 0) -> Dict[str, Any]:
    """One YAML file with its _BASE_ chain resolved the way fvcore's CfgNode.load_yaml_with_base
    does it: "~" expanded, a relative path taken from the including file's directory."""
    if depth > 10:
        raise ConfigError(f"{path}: _BASE_ chain too deep (more than 10 levels, or a cycle)")
    try:
        with open(path, "r", encoding="utf-8") as f:
            data = yaml.load(f, Loader=_ConfigLoader)  # noqa: S506 - safe loader + opaque tags
    except OSError as e:
        raise ConfigError(f"{path}: cannot read config ({e.strerror or e})") from None
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not valid YAML (not UTF-8 text: {e.reason})") from None
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from None
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a YAML mapping")
    if BASE_KEY in data:
        base = data.pop(BASE_KEY)
        if not isinstance(base, str) or not base:
            raise ConfigError(f"{path}: {BASE_KEY} must be a file name")
        if base.startswith("~"):
            base = os.path.expanduser(base)
        if base.startswith(("http://", "https://")):
            raise ConfigError(f"{path}: {BASE_KEY} {base!r} is a URL; download it and name the "
                              "local file")
        if not base.startswith("/"):
            base = os.path.join(os.path.dirname(path), base)
        merged = _read_yaml(base, depth + 1)
        _merge_a_into_b(data, merged, path)
        data = merged
    return data


def _used_paths(node: Dict[str, Any], prefix: str = "") -> set:
    """Dotted paths of every key (and section) the exporter reads: those of DEFAULTS."""
    out = set()
    for k, v in node.items():
        out.add(prefix + k)
        if isinstance(v, dict):
            out |= _used_paths(v, prefix + k + ".")
    return out


_USED = _used_paths(DEFAULTS)


def _check_opaque(node: Any, where: str, key: str = "") -> None:
    """A key the exporter reads must not hold (or contain) an unevaluated Python tag."""
    if isinstance(node, OpaqueValue):
        if key in _USED:
            raise ConfigError(f"{where}: {key} is written with the Python tag {node.tag} "
                              f"({node.file}, line {node.line}); the exporter reads this key and "
                              "never evaluates Python in a config: write its value as plain YAML")
    elif isinstance(node, dict):
        for k, v in node.items():
            _check_opaque(v, where, f"{key}.{k}" if key else str(k))
    elif isinstance(node, (list, tuple)) and key in _USED:
        for v in node:
            if isinstance(v, OpaqueValue):
                _check_opaque(v, where, key)


def load_config(path: str) -> Dict[str, Any]:
    """The YAML (with its _BASE_ chain) merged over the defaults."""
    raw = _read_yaml(path)
    _check_opaque(raw, path)
    cfg = deep_merge(DEFAULTS, raw)
    _coerce(cfg, path)
    _normalise_backbone(cfg, path)
    return cfg


def config_for(preset: str = None, config_path: str = None) -> Dict[str, Any]:
    if config_path is not None:
        return load_config(config_path)
    cfg = preset_config(preset)
    _coerce(cfg, f"preset:{preset}")
    _normalise_backbone(cfg, f"preset:{preset}")
    return cfg


def _coerce(cfg: Dict[str, Any], where: str) -> None:
    """YAML 1.1 reads "1e-6"-style numbers as strings; fix the keys that matter."""
    def fix(section: Dict[str, Any], key: str, kind) -> None:
        if key not in section or section[key] is None:
            return
        try:
            section[key] = kind(section[key])
        except (TypeError, ValueError):
            raise ConfigError(f"{where}: {key} = {section[key]!r} is not a {kind.__name__}") from None

    ca = cfg["MODEL"]["CLIP_ADAPTER"]
    for k in ("MASK_THR", "CLIP_ENSEMBLE_WEIGHT", "MASK_EXPAND_RATIO"):
        fix(ca, k, float)
    fix(ca, "MASK_PROMPT_DEPTH", int)
    for k in ("MIN_SIZE_TEST", "MAX_SIZE_TEST"):
        fix(cfg["INPUT"], k, int)
    fix(cfg["MODEL"]["MASK_FORMER"], "SIZE_DIVISIBILITY", int)
    cfg["MODEL"]["PIXEL_MEAN"] = [float(v) for v in cfg["MODEL"]["PIXEL_MEAN"]]
    cfg["MODEL"]["PIXEL_STD"] = [float(v) for v in cfg["MODEL"]["PIXEL_STD"]]


PLAIN_RESNET_BACKBONE = "build_resnet_backbone"
DEEPLAB_RESNET_BACKBONE = "build_resnet_deeplab_backbone"
# detectron2 v0.6 blocks per stage; the multi-grid of a plain ResNet needs one entry per res5 block.
_RES5_BLOCKS = {18: 2, 34: 3, 50: 3, 101: 3, 152: 3}


def _normalise_backbone(cfg: Dict[str, Any], where: str) -> None:
    """detectron2's plain `build_resnet_backbone` is the DeepLab builder with a basic stem, no
    res4 dilation and no multi-grid (its res5 first stride is 1 exactly when RES5_DILATION is 2,
    as in the DeepLab rule); rewrite it so, since only the DeepLab builder is implemented."""
    bb = cfg["MODEL"]["BACKBONE"]
    if str(bb.get("NAME")) != PLAIN_RESNET_BACKBONE:
        return
    rn = cfg["MODEL"]["RESNETS"]
    try:
        depth = int(rn["DEPTH"])
        res5_dilation = int(rn.get("RES5_DILATION", 1))
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: MODEL.RESNETS.DEPTH / RES5_DILATION must be integers") from None
    if depth not in _RES5_BLOCKS:
        raise ConfigError(f"{where}: MODEL.RESNETS.DEPTH {depth} is not supported "
                          f"({', '.join(str(d) for d in _RES5_BLOCKS)})")
    if res5_dilation not in (1, 2):
        raise ConfigError(f"{where}: MODEL.RESNETS.RES5_DILATION {res5_dilation} must be 1 or 2 "
                          f"for {PLAIN_RESNET_BACKBONE}")
    bb["NAME"] = DEEPLAB_RESNET_BACKBONE
    rn["STEM_TYPE"] = "basic"
    rn["RES4_DILATION"] = 1
    rn["RES5_MULTI_GRID"] = [1] * _RES5_BLOCKS[depth]


def backbone_kind(cfg: Dict[str, Any]) -> str:
    name = str(cfg["MODEL"]["BACKBONE"]["NAME"])
    if "swin" in name.lower():
        return "swin"
    if "resnet" in name.lower():
        return "resnet"
    raise ConfigError(f"unsupported MODEL.BACKBONE.NAME {name!r}")


def short_model_name(cfg: Dict[str, Any]) -> str:
    if backbone_kind(cfg) == "swin":
        bb = "swinB"
    else:
        rn = cfg["MODEL"]["RESNETS"]
        bb = f"R{rn.get('DEPTH', 101)}" + ("c" if rn.get("STEM_TYPE", "deeplab") == "deeplab" else "")
    clip = str(cfg["MODEL"]["CLIP_ADAPTER"]["CLIP_MODEL_NAME"]).replace("ViT-", "vit").replace("/", "")
    return f"ovseg-{bb}-{clip}"


# CLIP normalisation constants (SPEC §6.3, §6.4). The float32 values are what the reference
# uses; computing them here (not storing literals) keeps the one-ulp fill/mean quirk explicit.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_mean255() -> List[float]:
    return [float(np.float32(m) * np.float32(255.0)) for m in CLIP_MEAN]


def clip_std255() -> List[float]:
    return [float(np.float32(s) * np.float32(255.0)) for s in CLIP_STD]


def clip_fill() -> List[float]:
    return [float(np.float32(255.0 * m)) for m in CLIP_MEAN]


def inference_settings(cfg: Dict[str, Any]) -> Dict[str, Any]:
    """The manifest's "preprocess" and "inference" sections (models/BUNDLE_FORMAT.md)."""
    ca = cfg["MODEL"]["CLIP_ADAPTER"]
    kind = backbone_kind(cfg)
    meta = str(cfg["MODEL"].get("META_ARCHITECTURE", "OVSeg"))
    own = {"mask_threshold": float(ca["MASK_THR"]), "ensemble_weight": float(ca["CLIP_ENSEMBLE_WEIGHT"])}
    clip_ensemble = ca.get("CLIP_ENSEMBLE", True)
    if not isinstance(clip_ensemble, bool):
        raise ConfigError(f"MODEL.CLIP_ADAPTER.CLIP_ENSEMBLE {clip_ensemble!r} must be true or false")
    if not clip_ensemble:
        # OVSeg.semantic_inference without the CLIP branch: MaskFormer's own classification of
        # all queries (the Table 6 ablation), not the CLIP-only ensemble weight 0.
        if meta == "OVSegDEMO":
            raise ConfigError("MODEL.CLIP_ADAPTER.CLIP_ENSEMBLE False is not supported with "
                              "OVSegDEMO: the official demo_inference needs the CLIP branch's "
                              "valid regions (it fails with a NameError without them)")
        own["clip_ensemble"] = False
    if meta == "OVSegDEMO":
        eval_s, demo_s = dict(RELEASED_EVAL[kind]), own
    elif meta == "OVSeg":
        eval_s, demo_s = own, dict(RELEASED_DEMO)
    else:
        raise ConfigError(f"unsupported MODEL.META_ARCHITECTURE {meta!r}")
    if ca.get("MASK_FILL", "mean") != "mean":
        raise ConfigError(f"MASK_FILL {ca.get('MASK_FILL')!r} is not supported (only 'mean')")
    preprocess = {
        "format": str(cfg["INPUT"].get("FORMAT", "RGB")),
        "min_size_test": int(cfg["INPUT"]["MIN_SIZE_TEST"]),
        "max_size_test": int(cfg["INPUT"]["MAX_SIZE_TEST"]),
        "size_divisibility": int(cfg["MODEL"]["MASK_FORMER"]["SIZE_DIVISIBILITY"]),
        "pixel_mean": list(cfg["MODEL"]["PIXEL_MEAN"]),
        "pixel_std": list(cfg["MODEL"]["PIXEL_STD"]),
        "clip_mean255": clip_mean255(),
        "clip_std255": clip_std255(),
        "clip_fill": clip_fill(),
        "mask_fill": "mean",
        "region_resolution": None,  # filled from the CLIP architecture
    }
    if preprocess["format"] != "RGB":
        raise ConfigError(f"INPUT.FORMAT {preprocess['format']!r} is not supported (only RGB)")
    inference = {"temperature": 100.0, "eval": eval_s, "demo": demo_s}
    return {"preprocess": preprocess, "inference": inference}
