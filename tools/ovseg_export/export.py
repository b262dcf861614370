"""Building the eager modules, loading checkpoint weights, scripting and writing a bundle."""
import collections
import datetime
import hashlib
import json
import os
import shutil
import sys
import tempfile
import time
from typing import Any, Dict, List, Optional, Tuple

import torch
from torch import nn

from . import config as config_mod
from . import safe_io
from .load import (
    CheckpointReadError,
    ExportError,
    IncompatibleCheckpoint,
    MatchReport,
    UsageError,
    check_out,
    match_state,
    read_checkpoint,
    read_clip_weights,
)
from .modules.clip import RELEASED_CLIP, build_clip_text, build_clip_visual, clip_arch_from_state_dict, clip_state_keys
from .templates import load_templates
from .tokenizer import ClipTokenizer

EXPORTER_VERSION = "0.1.0"
FORMAT_VERSION = 1
MODULE_FILES = collections.OrderedDict(
    [("proposals", "proposals.pt"), ("clip_visual", "clip_visual.pt"), ("clip_text", "clip_text.pt")]
)
VOCAB_NAME = "bpe_simple_vocab_16e6.txt.gz"
CLIP_PREFIX = "clip_adapter.clip_model."


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _build_proposals(cfg: Dict[str, Any]) -> nn.Module:
    try:
        from .modules.proposals import build_proposal_generator
    except ImportError as e:
        raise ExportError(f"the proposal generator modules are not available ({e})") from None
    return build_proposal_generator(cfg)


def released_clip_arch(cfg: Dict[str, Any]) -> Dict[str, int]:
    ca = cfg["MODEL"]["CLIP_ADAPTER"]
    name = str(ca["CLIP_MODEL_NAME"])
    if name not in RELEASED_CLIP:
        raise config_mod.ConfigError(f"CLIP_MODEL_NAME {name!r} is not one of " f"{', '.join(RELEASED_CLIP)}")
    arch = dict(RELEASED_CLIP[name])
    arch["prompt_depth"] = int(ca["MASK_PROMPT_DEPTH"])
    grid = arch["image_resolution"] // arch["vision_patch_size"]
    arch["prompt_rows"] = grid * grid
    return arch


def complete_clip_arch(arch: Dict[str, int], cfg: Dict[str, Any]) -> Dict[str, int]:
    """Fill the derived entries of a user-given (partial) CLIP architecture."""
    arch = dict(arch)
    arch.setdefault("transformer_heads", arch["transformer_width"] // 64)
    arch.setdefault("prompt_depth", int(cfg["MODEL"]["CLIP_ADAPTER"]["MASK_PROMPT_DEPTH"]))
    grid = arch["image_resolution"] // arch["vision_patch_size"]
    arch.setdefault("prompt_rows", grid * grid)
    return arch


def build_modules(cfg: Dict[str, Any], clip_arch: Dict[str, int]) -> Dict[str, nn.Module]:
    mask_prompt_fwd = bool(cfg["MODEL"]["CLIP_ADAPTER"].get("MASK_PROMPT_FWD", True))
    modules = collections.OrderedDict()
    modules["proposals"] = _build_proposals(cfg)
    modules["clip_visual"] = build_clip_visual(clip_arch, mask_prompt_fwd=mask_prompt_fwd)
    modules["clip_text"] = build_clip_text(clip_arch)
    for m in modules.values():
        m.eval()
        for p in m.parameters():
            p.requires_grad_(False)
    return modules


def checkpoint_key_map(modules: Dict[str, nn.Module]) -> "collections.OrderedDict[str, Tuple[str, str]]":
    """Checkpoint key → (module, key inside the module)."""
    out: "collections.OrderedDict[str, Tuple[str, str]]" = collections.OrderedDict()
    for k in modules["proposals"].state_dict().keys():
        out[k] = ("proposals", k)
    for k, (m, local) in clip_state_keys(modules["clip_visual"], modules["clip_text"]).items():
        out[k] = (m, local)
    return out


def load_weights(
    modules: Dict[str, nn.Module],
    sd: Dict[str, torch.Tensor],
    fill: Optional[Dict[str, torch.Tensor]] = None,
    fill_source: str = "",
) -> MatchReport:
    """Copy every matching tensor; missing or mismatched ones keep their constructor values.
    `fill` (checkpoint-named CLIP tensors of --clip-weights) supplies the expected keys that `sd`
    lacks, as the official model starts from clip.load() before the checkpoint is laid over it."""
    key_map = checkpoint_key_map(modules)
    states = {name: m.state_dict() for name, m in modules.items()}
    expected = collections.OrderedDict((ck, states[m][local]) for ck, (m, local) in key_map.items())
    filled = []
    if fill:
        sd = collections.OrderedDict(sd)
        for ck in expected:
            if ck not in sd and ck in fill:
                sd[ck] = fill[ck]
                filled.append(ck)
    report = match_state(expected, sd)
    loaded = set(report.loaded)
    for ck in filled:
        if ck in loaded:
            report.filled[ck] = fill_source
    new_states = {name: collections.OrderedDict(s) for name, s in states.items()}
    for ck in report.loaded:
        m, local = key_map[ck]
        src = sd[ck]
        dst = new_states[m][local]
        new_states[m][local] = src.to(dst.dtype) if src.dtype != dst.dtype else src
    for name, m in modules.items():
        m.load_state_dict(new_states[name], strict=True)
    return report


def load_eager(
    checkpoint: str,
    cfg: Dict[str, Any],
    allow_partial: bool = False,
    verbose: bool = False,
    quiet: bool = False,
    stream=sys.stderr,
    clip_weights: Optional[str] = None,
) -> Tuple[Dict[str, nn.Module], Dict[str, int], MatchReport, Dict[str, torch.Tensor]]:
    """Read a checkpoint, build the modules with its CLIP dimensions and load the weights.
    With `clip_weights` (OpenAI's CLIP file or a CLIP state dict) the CLIP tensors the checkpoint
    lacks come from there (the official loader's clip.load() base under the checkpoint)."""
    sd = read_checkpoint(checkpoint)
    fill: Dict[str, torch.Tensor] = {}
    fill_source = ""
    if clip_weights is not None:
        fill = collections.OrderedDict((CLIP_PREFIX + k, v) for k, v in read_clip_weights(clip_weights).items())
        fill_source = f"--clip-weights {os.path.basename(clip_weights)}"
    try:
        # the checkpoint's CLIP tensors win over the base ones, as they do when loaded over them
        arch = clip_arch_from_state_dict({**fill, **sd}, CLIP_PREFIX)
    except KeyError as e:
        if not allow_partial:
            raise IncompatibleCheckpoint(
                f"{checkpoint}: CLIP tensor {e.args[0]} is missing; cannot read the CLIP "
                "architecture. The official model starts from OpenAI's CLIP and lays the checkpoint "
                "over it: pass that CLIP file with --clip-weights (e.g. ViT-L-14.pt / ViT-B-16.pt), "
                "or --allow-partial to keep random CLIP weights"
            ) from None
        arch = released_clip_arch(cfg)
    cfg_depth = int(cfg["MODEL"]["CLIP_ADAPTER"]["MASK_PROMPT_DEPTH"])
    if arch["prompt_depth"] != cfg_depth and not quiet:
        print(
            f"warning: {checkpoint}: mask_embedding depth {arch['prompt_depth']} differs from "
            f"MASK_PROMPT_DEPTH {cfg_depth}; using the checkpoint's",
            file=stream,
        )
    modules = build_modules(cfg, arch)
    report = load_weights(modules, sd, fill, fill_source)
    report.print(stream=stream, verbose=verbose, quiet=quiet)
    if not report.complete and not allow_partial:
        clip_missing = [k for k, _ in report.missing if k.startswith(CLIP_PREFIX)]
        hint = ""
        if clip_missing and clip_weights is None:
            hint = (
                f"; {len(clip_missing)} of the missing are CLIP tensors: pass OpenAI's CLIP file "
                "with --clip-weights to start from it as the official loader does"
            )
        raise IncompatibleCheckpoint(
            f"{checkpoint}: {len(report.missing)} model tensor(s) missing and "
            f"{len(report.mismatched)} with a different shape; refusing to write a bundle "
            f"(--allow-partial keeps the constructor values){hint}"
        )
    return modules, arch, report, sd


def random_modules(
    cfg: Dict[str, Any], seed: int, clip_arch: Optional[Dict[str, int]] = None
) -> Tuple[Dict[str, nn.Module], Dict[str, int]]:
    arch = complete_clip_arch(clip_arch, cfg) if clip_arch else released_clip_arch(cfg)
    torch.manual_seed(seed)
    return build_modules(cfg, arch), arch


def _backbone_config(cfg: Dict[str, Any]) -> Dict[str, Any]:
    kind = config_mod.backbone_kind(cfg)
    if kind == "swin":
        keys = (
            "PRETRAIN_IMG_SIZE",
            "PATCH_SIZE",
            "EMBED_DIM",
            "DEPTHS",
            "NUM_HEADS",
            "WINDOW_SIZE",
            "MLP_RATIO",
            "QKV_BIAS",
            "QK_SCALE",
            "APE",
            "PATCH_NORM",
            "OUT_FEATURES",
        )
        section = cfg["MODEL"]["SWIN"]
    else:
        keys = (
            "DEPTH",
            "NORM",
            "NUM_GROUPS",
            "WIDTH_PER_GROUP",
            "RES2_OUT_CHANNELS",
            "STRIDE_IN_1X1",
            "RES4_DILATION",
            "RES5_DILATION",
            "RES5_MULTI_GRID",
            "STEM_TYPE",
            "STEM_OUT_CHANNELS",
            "OUT_FEATURES",
        )
        section = cfg["MODEL"]["RESNETS"]
    return {k: section[k] for k in keys if k in section}


def torchscript_file_format_version(path: str) -> int:
    """The "version" record of a TorchScript archive: the file-format version a libtorch must
    support to read it (caffe2::serialize::kMaxSupportedFileFormatVersion on the reading side)."""
    import zipfile

    with zipfile.ZipFile(path) as z:
        for n in z.namelist():
            # "<archive>/.data/version" since torch 1.11 (kProducedFileFormatVersion 10), else
            # "<archive>/version"
            if n.split("/")[1:] in (["version"], [".data", "version"]):
                return int(z.read(n).decode("ascii").strip())
    raise ExportError(f"{path}: no version record in the TorchScript archive")


def build_manifest(
    cfg: Dict[str, Any],
    arch: Dict[str, int],
    name: str,
    source: Dict[str, Any],
    template_set: str,
    templates: List[str],
    files: Dict[str, Dict[str, Any]],
    file_format_version: Optional[int] = None,
) -> Dict[str, Any]:
    settings = config_mod.inference_settings(cfg)
    settings["preprocess"]["region_resolution"] = int(arch["image_resolution"])
    ca = cfg["MODEL"]["CLIP_ADAPTER"]
    mf = cfg["MODEL"]["MASK_FORMER"]
    head = cfg["MODEL"]["SEM_SEG_HEAD"]
    grid = arch["image_resolution"] // arch["vision_patch_size"]
    return collections.OrderedDict(
        [
            ("format", BUNDLE_FORMAT),
            ("format_version", FORMAT_VERSION),
            ("name", name),
            ("created_by", f"ovseg-export {EXPORTER_VERSION}"),
            ("created_at", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")),
            # What wrote the TorchScript modules: a runtime whose libtorch reads a lower file-format
            # version refuses the bundle up front, naming both (src/pipeline/bundle.cpp).
            (
                "torch",
                collections.OrderedDict(
                    [
                        ("version", str(torch.__version__)),
                        ("torchscript_file_format_version", file_format_version),
                    ]
                ),
            ),
            ("source", source),
            (
                "architecture",
                collections.OrderedDict(
                    [
                        ("meta_architecture", "OVSeg"),
                        ("backbone", config_mod.backbone_kind(cfg)),
                        ("backbone_config", _backbone_config(cfg)),
                        ("num_queries", int(mf["NUM_OBJECT_QUERIES"])),
                        ("hidden_dim", int(mf["HIDDEN_DIM"])),
                        ("mask_dim", int(head["MASK_DIM"])),
                        ("embed_dim", int(head["EMBEDDING_DIM"])),
                        (
                            "clip",
                            collections.OrderedDict(
                                [
                                    ("model_name", str(ca["CLIP_MODEL_NAME"])),
                                    ("embed_dim", arch["embed_dim"]),
                                    ("image_resolution", arch["image_resolution"]),
                                    ("vision_width", arch["vision_width"]),
                                    ("vision_layers", arch["vision_layers"]),
                                    ("vision_heads", arch["vision_width"] // 64),
                                    ("patch_size", arch["vision_patch_size"]),
                                    ("grid", grid),
                                    ("context_length", arch["context_length"]),
                                    ("vocab_size", arch["vocab_size"]),
                                    ("text_width", arch["transformer_width"]),
                                    ("text_layers", arch["transformer_layers"]),
                                    ("text_heads", arch["transformer_width"] // 64),
                                    ("prompt_depth", arch["prompt_depth"]),
                                    ("mask_prompt_fwd", bool(ca.get("MASK_PROMPT_FWD", True))),
                                ]
                            ),
                        ),
                    ]
                ),
            ),
            ("preprocess", settings["preprocess"]),
            ("inference", settings["inference"]),
            (
                "text",
                collections.OrderedDict(
                    [
                        ("template_set", template_set),
                        ("templates", templates),
                        (
                            "tokenizer",
                            {"kind": "clip_bpe", "file": VOCAB_NAME, "context_length": arch["context_length"]},
                        ),
                    ]
                ),
            ),
            ("non_object_embedding", {"module": "clip_text.pt", "buffer": "non_object_embedding"}),
            ("modules", collections.OrderedDict(MODULE_FILES)),
            ("files", files),
        ]
    )


def script_modules(modules: Dict[str, nn.Module]) -> Dict[str, torch.jit.ScriptModule]:
    out = collections.OrderedDict()
    for name, m in modules.items():
        m = m.cpu().float().eval()
        try:
            out[name] = torch.jit.script(m)
        except Exception as e:  # noqa: BLE001
            raise ExportError(f"cannot script the {name} module: {e}") from None
    return out


def _check_vocab(path: str) -> None:
    try:
        ClipTokenizer(path)
    except safe_io.InputError as e:
        raise CheckpointReadError(str(e)) from None
    except UnicodeDecodeError as e:
        raise CheckpointReadError(f"{path}: not a CLIP BPE vocabulary (not UTF-8 text: " f"{e.reason})") from None
    except (OSError, EOFError, ValueError) as e:
        raise CheckpointReadError(f"{path}: not a CLIP BPE vocabulary ({e})") from None


BUNDLE_FORMAT = "ovseg-bundle"


def write_bundle(
    out_dir: str, scripted: Dict[str, torch.jit.ScriptModule], vocab: str, manifest_fn, inputs=()
) -> Tuple[str, int]:
    """Write into a temporary sibling directory and rename it into place. An existing out_dir
    is replaced only if it is empty or an ovseg bundle with nothing else in it (safe_io)."""
    out_dir = check_out(out_dir, BUNDLE_FORMAT, [vocab, *inputs])
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(out_dir) + ".tmp-", dir=parent)
    try:
        files = collections.OrderedDict()
        for name, fname in MODULE_FILES.items():
            p = os.path.join(tmp, fname)
            torch.jit.save(scripted[name], p)
        shutil.copyfile(vocab, os.path.join(tmp, VOCAB_NAME))
        for fname in list(MODULE_FILES.values()) + [VOCAB_NAME]:
            p = os.path.join(tmp, fname)
            files[fname] = {"sha256": sha256_file(p), "bytes": os.path.getsize(p)}
        fmt = max(torchscript_file_format_version(os.path.join(tmp, f)) for f in MODULE_FILES.values())
        manifest = manifest_fn(files, fmt)
        with open(os.path.join(tmp, "manifest.json"), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2, allow_nan=False)  # NaN / Infinity are not JSON
            f.write("\n")
        os.chmod(tmp, 0o755)
        old = None
        if os.path.lexists(out_dir):
            old = tempfile.mkdtemp(prefix=os.path.basename(out_dir) + ".old-", dir=parent)
            os.rmdir(old)
            os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        if old:
            if os.path.isdir(old) and not os.path.islink(old):
                shutil.rmtree(old, ignore_errors=True)
            else:
                os.remove(old)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    total = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir))
    return out_dir, total


def export_bundle(
    out_dir: str,
    bpe_vocab: str,
    cfg: Dict[str, Any],
    config_label: str,
    checkpoint: Optional[str] = None,
    random_init: bool = False,
    seed: int = 0,
    clip_arch: Optional[Dict[str, int]] = None,
    allow_partial: bool = False,
    name: Optional[str] = None,
    template_set: str = "vild",
    templates_file: Optional[str] = None,
    verbose: bool = False,
    quiet: bool = False,
    stream=sys.stderr,
    clip_weights: Optional[str] = None,
    inputs=(),
) -> Dict[str, Any]:
    """`inputs`: other files the export reads (the config); --out may not hold any of them."""
    t0 = time.perf_counter()
    inputs = [p for p in (checkpoint, clip_weights, templates_file, *inputs) if p]
    check_out(out_dir, BUNDLE_FORMAT, [bpe_vocab, *inputs])
    if template_set == "predefined" and templates_file is None:
        templates = [str(t) for t in cfg["MODEL"]["CLIP_ADAPTER"]["PREDEFINED_PROMPT_TEMPLATES"]]
    else:
        templates = load_templates(template_set, templates_file)
    _check_vocab(bpe_vocab)
    config_mod.inference_settings(cfg)  # validate the config before the slow part
    if random_init:
        modules, arch = random_modules(cfg, seed, clip_arch)
        source = collections.OrderedDict(
            [("checkpoint", "random-init"), ("sha256", ""), ("config", config_label), ("seed", seed)]
        )
    else:
        if checkpoint is None:
            raise UsageError("--checkpoint is required unless --random-init is given")
        modules, arch, report, _ = load_eager(
            checkpoint,
            cfg,
            allow_partial=allow_partial,
            verbose=verbose,
            quiet=quiet,
            stream=stream,
            clip_weights=clip_weights,
        )
        source = collections.OrderedDict(
            [
                ("checkpoint", os.path.basename(checkpoint)),
                ("sha256", sha256_file(checkpoint)),
                ("config", config_label),
            ]
        )
        if clip_weights is not None:
            source["clip_weights"] = collections.OrderedDict(
                [
                    ("file", os.path.basename(clip_weights)),
                    ("sha256", sha256_file(clip_weights)),
                    ("tensors_used", len(report.filled)),
                ]
            )
    embed = int(cfg["MODEL"]["SEM_SEG_HEAD"]["EMBEDDING_DIM"])
    if embed != arch["embed_dim"]:
        raise IncompatibleCheckpoint(
            f"SEM_SEG_HEAD.EMBEDDING_DIM {embed} differs from the CLIP " f"embedding size {arch['embed_dim']}"
        )
    scripted = script_modules(modules)
    bundle_name = name or config_mod.short_model_name(cfg)

    def manifest_fn(files, file_format_version):
        return build_manifest(cfg, arch, bundle_name, source, template_set, templates, files, file_format_version)

    path, size = write_bundle(out_dir, scripted, bpe_vocab, manifest_fn, inputs)
    return {"path": path, "bytes": size, "seconds": time.perf_counter() - t0, "arch": arch}
