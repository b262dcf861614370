"""Official ov-seg YAML configs → nested dicts, and the inference settings derived from them."""
import io
import math
import os
from typing import Any, Callable, Dict, List

import numpy as np
import yaml

from . import safe_io
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
                raise ConfigError(
                    f"{where}: cannot inherit key {prefix + str(k)!r} from _BASE_ " "(a mapping over a plain value)"
                )
            _merge_a_into_b(v, b[k], where, prefix + str(k) + ".")
        else:
            b[k] = v


# Bounds on a YAML config: the official ones are 4 KB, a few levels deep, without aliases.
MAX_YAML_DEPTH = 32  # nesting of mappings / sequences, aliases included
MAX_YAML_VALUES = 100_000  # nodes once every alias is expanded (a "billion laughs" has 10**9)


def _yaml_text(path: str) -> str:
    try:
        raw = safe_io.read_regular(path, "config", safe_io.MAX_CONFIG_BYTES)
    except safe_io.InputError as e:
        raise ConfigError(str(e)) from None
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise ConfigError(f"{path}: not valid YAML (not UTF-8 text: {e.reason})") from None


def _named_stream(text: str, path: str) -> io.StringIO:
    stream = io.StringIO(text)
    stream.name = path  # what yaml's error marks and OpaqueValue report
    return stream


def _check_node_graph(root: "yaml.Node", path: str) -> None:
    """Nesting depth (aliases followed) and expanded size of a composed YAML document, in time
    linear in its nodes (each node's figures are computed once)."""
    memo: Dict[int, tuple] = {}  # node -> (expanded size, height)
    active = set()

    def visit(node: "yaml.Node", depth: int) -> tuple:
        key = id(node)
        line = node.start_mark.line + 1
        if key in memo:
            size, height = memo[key]
        elif key in active:
            raise ConfigError(f"{path}: line {line}: a recursive alias (a value that contains " "itself)")
        else:
            if isinstance(node, yaml.SequenceNode):
                children = list(node.value)
            elif isinstance(node, yaml.MappingNode):
                children = [x for pair in node.value for x in pair]
            else:
                children = []
            active.add(key)
            size, height = 1, 0
            for child in children:
                s, h = visit(child, depth + 1)
                size += s
                height = max(height, h + 1)
                if size > MAX_YAML_VALUES:
                    raise ConfigError(
                        f"{path}: line {line}: aliases expand the config to more "
                        f"than {MAX_YAML_VALUES} values (an alias bomb?)"
                    )
            active.discard(key)
            memo[key] = (size, height)
        if depth + height > MAX_YAML_DEPTH:
            raise ConfigError(
                f"{path}: line {line}: nested more than {MAX_YAML_DEPTH} levels " "deep (aliases included)"
            )
        return size, height

    visit(root, 0)


def _load_yaml_bounded(text: str, path: str) -> Any:
    """yaml.load with _ConfigLoader, refusing deep nesting (before the recursive composer sees
    it) and alias expansion beyond MAX_YAML_VALUES (before anything walks the values)."""
    depth = 0
    for event in yaml.parse(_named_stream(text, path), Loader=_ConfigLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_YAML_DEPTH:
                raise ConfigError(
                    f"{path}: line {event.start_mark.line + 1}: nested more than " f"{MAX_YAML_DEPTH} levels deep"
                )
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
    loader = _ConfigLoader(_named_stream(text, path))
    try:
        node = loader.get_single_node()
        if node is None:
            return None
        _check_node_graph(node, path)
        try:
            return loader.construct_document(node)
        except (yaml.YAMLError, RecursionError, ConfigError):
            raise
        except Exception as e:  # noqa: BLE001 - PyYAML's constructors fail in many ways
            # (`!!timestamp 2001-13-45` is an AttributeError, a 5000-digit int a ValueError)
            msg = " ".join(str(e).split())[:200]
            raise ConfigError(
                f"{path}: not valid YAML (a value cannot be read: " f"{type(e).__name__}: {msg})"
            ) from None
    finally:
        loader.dispose()


def _read_yaml(path: str, depth: int = 0) -> Dict[str, Any]:
    """One YAML file with its _BASE_ chain resolved the way fvcore's CfgNode.load_yaml_with_base
    does it: "~" expanded, a relative path taken from the including file's directory."""
    if depth > 10:
        raise ConfigError(f"{path}: _BASE_ chain too deep (more than 10 levels, or a cycle)")
    text = _yaml_text(path)
    try:
        data = _load_yaml_bounded(text, path)
    except yaml.YAMLError as e:
        msg = " ".join(str(e).split())[:300]
        raise ConfigError(f"{path}: not valid YAML ({msg})") from None
    except RecursionError:
        raise ConfigError(f"{path}: nested too deeply") from None
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
            raise ConfigError(f"{path}: {BASE_KEY} {base!r} is a URL; download it and name the " "local file")
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
            raise ConfigError(
                f"{where}: {key} is written with the Python tag {node.tag} "
                f"({node.file}, line {node.line}); the exporter reads this key and "
                "never evaluates Python in a config: write its value as plain YAML"
            )
    elif isinstance(node, dict):
        for k, v in node.items():
            _check_opaque(v, where, f"{key}.{k}" if key else str(k))
    elif isinstance(node, (list, tuple)) and key in _USED:
        for v in node:
            if isinstance(v, OpaqueValue):
                _check_opaque(v, where, key)


def load_config(path: str) -> Dict[str, Any]:
    """The YAML (with its _BASE_ chain) merged over the defaults, every key the exporter reads
    checked (type, range) with `FILE: KEY: problem` errors."""
    raw = _read_yaml(path)
    _check_opaque(raw, path)
    _check_sections(raw, DEFAULTS, path)
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


def _describe(v: Any) -> str:
    if v is None:
        return "null"
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, str):
        return repr(v) if len(v) <= 40 else repr(v[:40]) + "..."
    if isinstance(v, dict):
        return "a mapping"
    if isinstance(v, (list, tuple)):
        return f"a list of {len(v)}"
    return f"a {type(v).__name__}"


def _check_sections(raw: Dict[str, Any], defaults: Dict[str, Any], where: str, prefix: str = "") -> None:
    """A section the exporter reads (MODEL, MODEL.SWIN, ...) must stay a mapping."""
    for k, dv in defaults.items():
        if isinstance(dv, dict) and k in raw:
            v = raw[k]
            if not isinstance(v, dict):
                raise ConfigError(f"{where}: {prefix}{k}: {_describe(v)}, expected a mapping")
            _check_sections(v, dv, where, prefix + k + ".")


class _Bad(Exception):
    pass


def _int(lo: int, hi: int) -> Callable[[Any], int]:
    def check(v: Any) -> int:
        if isinstance(v, float) and math.isfinite(v) and v == int(v):
            v = int(v)
        if isinstance(v, bool) or not isinstance(v, int):
            raise _Bad(f"{_describe(v)} is not an integer")
        if not lo <= v <= hi:
            raise _Bad(f"{v} is out of range (expected {lo}..{hi})")
        return v

    return check


def _float(lo: float, hi: float, lo_open: bool = False) -> Callable[[Any], float]:
    def check(v: Any) -> float:
        if isinstance(v, str):  # YAML 1.1 reads "1e-6" as a string; detectron2 takes it
            try:
                v = float(v)
            except ValueError:
                raise _Bad(f"{_describe(v)} is not a number") from None
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            raise _Bad(f"{_describe(v)} is not a number")
        v = float(v)
        if not math.isfinite(v):
            raise _Bad(f"{v} is not a finite number")
        if v < lo or v > hi or (lo_open and v == lo):
            raise _Bad(f"{v:g} is out of range (expected {'(' if lo_open else '['}{lo:g}, {hi:g}])")
        return v

    return check


def _bool(v: Any) -> bool:
    if not isinstance(v, bool):
        raise _Bad(f"{_describe(v)} is not true or false")
    return v


def _str(v: Any) -> str:
    if not isinstance(v, str):
        raise _Bad(f"{_describe(v)} is not a string")
    return v


def _optional(inner: Callable[[Any], Any]) -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        return None if v is None else inner(v)

    return check


def _list(
    inner: Callable[[Any], Any], length: int = None, min_len: int = 0, max_len: int = 4096
) -> Callable[[Any], list]:
    def check(v: Any) -> list:
        if not isinstance(v, (list, tuple)):
            raise _Bad(f"{_describe(v)} is not a list")
        if length is not None and len(v) != length:
            raise _Bad(f"a list of {len(v)}, expected {length} entries")
        if not min_len <= len(v) <= max_len:
            raise _Bad(f"a list of {len(v)}, expected {min_len}..{max_len} entries")
        out = []
        for i, x in enumerate(v):
            try:
                out.append(inner(x))
            except _Bad as e:
                raise _Bad(f"entry {i}: {e}") from None
        return out

    return check


_DIM = _int(1, 65536)
_LAYERS = _int(1, 1024)
# Every key of DEFAULTS the exporter or the modules read, with what it must be. The ranges are
# the C++ manifest reader's where it has one (src/pipeline/manifest.cpp).
_SCHEMA_COMMON: Dict[str, Callable[[Any], Any]] = {
    "MODEL.META_ARCHITECTURE": _str,
    "MODEL.BACKBONE.NAME": _str,
    "MODEL.PIXEL_MEAN": _list(_float(-1e4, 1e4), length=3),
    "MODEL.PIXEL_STD": _list(_float(1e-6, 1e4), length=3),
    "MODEL.SEM_SEG_HEAD.IN_FEATURES": _list(_str),
    "MODEL.SEM_SEG_HEAD.CONVS_DIM": _DIM,
    "MODEL.SEM_SEG_HEAD.MASK_DIM": _DIM,
    "MODEL.SEM_SEG_HEAD.NORM": _str,
    "MODEL.SEM_SEG_HEAD.TRANSFORMER_ENC_LAYERS": _optional(_int(0, 1024)),
    "MODEL.SEM_SEG_HEAD.PIXEL_DECODER_NAME": _str,
    "MODEL.SEM_SEG_HEAD.EMBEDDING_DIM": _DIM,
    "MODEL.SEM_SEG_HEAD.EMBED_HIDDEN_DIM": _DIM,
    "MODEL.SEM_SEG_HEAD.EMBED_LAYERS": _LAYERS,
    "MODEL.MASK_FORMER.NHEADS": _int(1, 1024),
    "MODEL.MASK_FORMER.DIM_FEEDFORWARD": _int(1, 1 << 20),
    "MODEL.MASK_FORMER.ENC_LAYERS": _int(0, 1024),
    "MODEL.MASK_FORMER.DEC_LAYERS": _LAYERS,
    "MODEL.MASK_FORMER.PRE_NORM": _bool,
    "MODEL.MASK_FORMER.HIDDEN_DIM": _DIM,
    "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES": _int(1, 10000),
    "MODEL.MASK_FORMER.TRANSFORMER_IN_FEATURE": _str,
    "MODEL.MASK_FORMER.ENFORCE_INPUT_PROJ": _bool,
    "MODEL.MASK_FORMER.SIZE_DIVISIBILITY": _int(1, 1024),
    "MODEL.CLIP_ADAPTER.TEXT_TEMPLATES": _str,
    "MODEL.CLIP_ADAPTER.PREDEFINED_PROMPT_TEMPLATES": _list(_str, min_len=1),
    "MODEL.CLIP_ADAPTER.CLIP_MODEL_NAME": _str,
    "MODEL.CLIP_ADAPTER.MASK_FILL": _str,
    "MODEL.CLIP_ADAPTER.MASK_EXPAND_RATIO": _float(0.0, 100.0),
    "MODEL.CLIP_ADAPTER.MASK_THR": _float(0.0, 1.0),
    "MODEL.CLIP_ADAPTER.CLIP_ENSEMBLE": _bool,
    "MODEL.CLIP_ADAPTER.CLIP_ENSEMBLE_WEIGHT": _float(0.0, 1.0),
    "MODEL.CLIP_ADAPTER.MASK_PROMPT_DEPTH": _int(0, 1024),
    "MODEL.CLIP_ADAPTER.MASK_PROMPT_FWD": _bool,
    "INPUT.MIN_SIZE_TEST": _int(1, 8192),
    "INPUT.MAX_SIZE_TEST": _int(1, 8192),
    "INPUT.FORMAT": _str,
}
_SCHEMA_SWIN: Dict[str, Callable[[Any], Any]] = {
    "MODEL.SWIN.PRETRAIN_IMG_SIZE": _int(1, 65536),
    "MODEL.SWIN.PATCH_SIZE": _int(1, 1024),
    "MODEL.SWIN.EMBED_DIM": _DIM,
    "MODEL.SWIN.DEPTHS": _list(_LAYERS, length=4),
    "MODEL.SWIN.NUM_HEADS": _list(_int(1, 1024), length=4),
    "MODEL.SWIN.WINDOW_SIZE": _int(1, 1024),
    "MODEL.SWIN.MLP_RATIO": _float(0.0, 1024.0, lo_open=True),
    "MODEL.SWIN.QKV_BIAS": _bool,
    "MODEL.SWIN.QK_SCALE": _optional(_float(0.0, 1e6, lo_open=True)),
    "MODEL.SWIN.APE": _bool,
    "MODEL.SWIN.PATCH_NORM": _bool,
    "MODEL.SWIN.OUT_FEATURES": _list(_str),
}
_SCHEMA_RESNET: Dict[str, Callable[[Any], Any]] = {
    "MODEL.RESNETS.DEPTH": _int(1, 1024),
    "MODEL.RESNETS.NORM": _str,
    "MODEL.RESNETS.NUM_GROUPS": _int(1, 65536),
    "MODEL.RESNETS.WIDTH_PER_GROUP": _DIM,
    "MODEL.RESNETS.RES2_OUT_CHANNELS": _DIM,
    "MODEL.RESNETS.STRIDE_IN_1X1": _bool,
    "MODEL.RESNETS.RES4_DILATION": _int(1, 64),
    "MODEL.RESNETS.RES5_DILATION": _int(1, 64),
    "MODEL.RESNETS.DEFORM_ON_PER_STAGE": _list(_bool, max_len=16),
    "MODEL.RESNETS.RES5_MULTI_GRID": _list(_int(1, 1024), max_len=1024),
    "MODEL.RESNETS.STEM_TYPE": _str,
    "MODEL.RESNETS.STEM_OUT_CHANNELS": _DIM,
    "MODEL.RESNETS.OUT_FEATURES": _list(_str),
}


def _coerce(cfg: Dict[str, Any], where: str) -> None:
    """Every key the exporter reads, checked and converted (YAML 1.1 reads "1e-6"-style
    numbers as strings): a wrong type, a non-finite or out-of-range value is a ConfigError
    `WHERE: KEY: problem`, before any export work."""
    name = cfg["MODEL"]["BACKBONE"].get("NAME")
    schema = dict(_SCHEMA_COMMON)
    swin = isinstance(name, str) and "swin" in name.lower()
    if swin:
        schema.update(_SCHEMA_SWIN)
    elif isinstance(name, str) and "resnet" in name.lower():
        schema.update(_SCHEMA_RESNET)
    for dotted, check in schema.items():
        *sections, key = dotted.split(".")
        node = cfg
        for sec in sections:
            node = node[sec]
        if key not in node:
            continue
        try:
            node[key] = check(node[key])
        except _Bad as e:
            raise ConfigError(f"{where}: {dotted}: {e}") from None
    mf = cfg["MODEL"]["MASK_FORMER"]
    if mf["HIDDEN_DIM"] % mf["NHEADS"]:
        raise ConfigError(
            f"{where}: MODEL.MASK_FORMER.HIDDEN_DIM: {mf['HIDDEN_DIM']} is not a " f"multiple of NHEADS {mf['NHEADS']}"
        )
    if cfg["INPUT"]["MAX_SIZE_TEST"] < cfg["INPUT"]["MIN_SIZE_TEST"]:
        raise ConfigError(
            f"{where}: INPUT.MAX_SIZE_TEST: {cfg['INPUT']['MAX_SIZE_TEST']} is "
            f"below MIN_SIZE_TEST {cfg['INPUT']['MIN_SIZE_TEST']}"
        )
    if swin:
        sw = cfg["MODEL"]["SWIN"]
        for i, heads in enumerate(sw["NUM_HEADS"]):
            if (sw["EMBED_DIM"] << i) % heads:
                raise ConfigError(
                    f"{where}: MODEL.SWIN.NUM_HEADS: stage {i} has "
                    f"{sw['EMBED_DIM'] << i} channels, not a multiple of {heads} heads"
                )


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
        raise ConfigError(
            f"{where}: MODEL.RESNETS.DEPTH {depth} is not supported " f"({', '.join(str(d) for d in _RES5_BLOCKS)})"
        )
    if res5_dilation not in (1, 2):
        raise ConfigError(
            f"{where}: MODEL.RESNETS.RES5_DILATION {res5_dilation} must be 1 or 2 " f"for {PLAIN_RESNET_BACKBONE}"
        )
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


# CLIP normalisation constants (docs/reference-behaviour.md §6.3, §6.4). The float32 values are what the reference
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
            raise ConfigError(
                "MODEL.CLIP_ADAPTER.CLIP_ENSEMBLE False is not supported with "
                "OVSegDEMO: the official demo_inference needs the CLIP branch's "
                "valid regions (it fails with a NameError without them)"
            )
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
