"""ovseg-export-sam: an official segment-anything checkpoint -> an ovseg SAM bundle.

The bundle (models/SAM_BUNDLE_FORMAT.md) holds the image encoder, the prompt encoder and the mask
decoder as scripted TorchScript modules, a manifest with the architecture and the files' sha256.
"""
import argparse
import collections
import datetime
import json
import math
import os
import sys
import time
from typing import Any, Dict, List, Optional

import torch

from .export import EXPORTER_VERSION, sha256_file
from .load import (
    CheckpointReadError,
    ExportError,
    IncompatibleCheckpoint,
    UsageError,
    check_out,
    match_state,
    read_checkpoint,
    read_json_option,
    report_unexpected,
)
from .modules.sam import SIZES, Sam, arch_for_size, arch_from_state_dict

FORMAT = "ovseg-sam-bundle"
FORMAT_VERSION = 1
SAM_MODULE_FILES = collections.OrderedDict(
    [
        ("image_encoder", "sam_image_encoder.pt"),
        ("prompt_encoder", "sam_prompt_encoder.pt"),
        ("mask_decoder", "sam_mask_decoder.pt"),
    ]
)

_EPILOG = """\
exit status: 0 bundle written; 2 bad usage or an unreadable checkpoint; 3 the checkpoint lacks
tensors or has tensors of another shape (see the table on stderr; --allow-partial writes the
bundle anyway); 1 any other failure.

The dimensions are read from the checkpoint's tensors. The mask decoder's attention head count is
not visible in any tensor: it is the official 8 unless --arch gives decoder_num_heads.

examples:
  ovseg-export-sam --checkpoint sam_vit_b_01ec64.pth --out bundles/sam-vit-b
  ovseg-export-sam --random-init --size vit_l --out /tmp/sam-vit-l-random
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ovseg-export-sam",
        epilog=_EPILOG,
        description="Export an official segment-anything checkpoint as "
        "an ovseg SAM bundle (three TorchScript modules + "
        "manifest.json).",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"ovseg-export-sam {EXPORTER_VERSION}")
    p.add_argument("--checkpoint", metavar="CKPT", help="official SAM checkpoint (.pth)")
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="bundle directory to write; an existing one is replaced atomically if it "
        "is empty or an ovseg SAM bundle holding only its own files",
    )
    p.add_argument(
        "--arch",
        metavar="JSON",
        help="a JSON object or file overriding what the "
        "tensors do not show (decoder_num_heads, pixel_mean, pixel_std)",
    )
    p.add_argument(
        "--random-init", action="store_true", help="seeded random weights of an official size instead of a checkpoint"
    )
    p.add_argument(
        "--size", choices=sorted(SIZES), default="vit_b", help="with --random-init: the official size (default vit_b)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed for --random-init (default 0)")
    p.add_argument(
        "--allow-partial",
        action="store_true",
        help="write the bundle even if tensors are missing or have another shape",
    )
    p.add_argument("--name", help="bundle name in the manifest")
    verb = p.add_mutually_exclusive_group()
    verb.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    verb.add_argument("-v", "--verbose", action="store_true", help="list ignored keys too")
    return p


# What --arch may set and the range of each value (the official sizes are far inside).
_ARCH_INTS = {
    "img_size": (16, 4096),
    "patch_size": (1, 256),
    "embed_dim": (1, 8192),
    "depth": (1, 256),
    "num_heads": (1, 1024),
    "window_size": (0, 1024),
    "out_chans": (1, 8192),
    "prompt_embed_dim": (2, 8192),
    "mask_in_chans": (4, 8192),
    "decoder_depth": (1, 64),
    "decoder_mlp_dim": (1, 1 << 16),
    "decoder_num_heads": (1, 1024),
    "attention_downsample_rate": (1, 1024),
    "iou_head_depth": (1, 64),
    "iou_head_hidden_dim": (1, 1 << 16),
    "num_multimask_outputs": (1, 64),
}
ARCH_KEYS = tuple(_ARCH_INTS) + ("mlp_ratio", "global_attn_indexes", "pixel_mean", "pixel_std")
# With a checkpoint the tensors give everything else; these are the keys --arch sets then.
CHECKPOINT_OVERRIDES = ("decoder_num_heads", "pixel_mean", "pixel_std")


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _finite(v: Any) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v)


def check_overrides(overrides: Dict[str, Any], label: str = "--arch") -> None:
    """Each --arch value on its own: a known key, the right type, within range."""
    for k, v in overrides.items():
        if k not in ARCH_KEYS:
            raise UsageError(f"{label}: {k}: not an architecture key (known: {', '.join(ARCH_KEYS)})")
        if k in _ARCH_INTS:
            lo, hi = _ARCH_INTS[k]
            if not _is_int(v) or not lo <= v <= hi:
                raise UsageError(f"{label}: {k}: {json.dumps(v)} is not an integer in {lo}..{hi}")
        elif k == "mlp_ratio":
            if not _finite(v) or not 0 < v <= 64:
                raise UsageError(f"{label}: {k}: {json.dumps(v)} is not a number in (0, 64]")
        elif k == "global_attn_indexes":
            if (
                not isinstance(v, list)
                or len(v) > 256
                or not all(_is_int(i) and i >= 0 for i in v)
                or len(set(v)) != len(v)
            ):
                raise UsageError(f"{label}: {k}: not a list of distinct non-negative block indexes")
        else:  # pixel_mean / pixel_std
            lo = -1e4 if k == "pixel_mean" else 1e-6
            if not isinstance(v, list) or len(v) != 3 or not all(_finite(x) and lo <= x <= 1e4 for x in v):
                raise UsageError(f"{label}: {k}: not a list of 3 numbers in [{lo:g}, 10000]")


def check_arch(a: Dict[str, Any], label: str, error=UsageError) -> None:
    """The whole architecture (after overrides / as read from the tensors): every value in range
    and the values consistent with each other, so that the modules can be built."""
    try:
        check_overrides({k: a[k] for k in ARCH_KEYS if k in a}, label)
    except UsageError as e:
        raise error(str(e)) from None
    missing = [k for k in ARCH_KEYS if k not in a]
    if missing:
        raise error(f"{label}: no value for {', '.join(missing)}")

    def bad(msg: str) -> None:
        raise error(f"{label}: {msg}")

    if a["img_size"] % a["patch_size"]:
        bad(f"img_size {a['img_size']} is not a multiple of patch_size {a['patch_size']}")
    if a["embed_dim"] % a["num_heads"]:
        bad(f"embed_dim {a['embed_dim']} is not a multiple of num_heads {a['num_heads']}")
    if int(a["embed_dim"] * a["mlp_ratio"]) < 1:
        bad(f"mlp_ratio {a['mlp_ratio']} gives an MLP without units")
    out_of_range = [i for i in a["global_attn_indexes"] if i >= a["depth"]]
    if out_of_range:
        bad(f"global_attn_indexes {out_of_range} are not blocks of a depth-{a['depth']} encoder")
    pd = a["prompt_embed_dim"]
    if pd % 2:
        bad(f"prompt_embed_dim {pd} is odd (the positional encoding takes half of it)")
    if a["mask_in_chans"] % 4:
        bad(f"mask_in_chans {a['mask_in_chans']} is not a multiple of 4")
    if pd % a["decoder_num_heads"]:
        bad(f"prompt_embed_dim {pd} is not a multiple of decoder_num_heads {a['decoder_num_heads']}")
    rate = a["attention_downsample_rate"]
    if pd % rate or (pd // rate) % a["decoder_num_heads"]:
        bad(
            f"prompt_embed_dim {pd} / attention_downsample_rate {rate} is not a multiple of "
            f"decoder_num_heads {a['decoder_num_heads']}"
        )


def build_eager(
    sd: Optional[Dict[str, torch.Tensor]],
    overrides: Dict[str, Any],
    size: str = "vit_b",
    seed: int = 0,
    allow_partial: bool = False,
    verbose: bool = False,
    quiet: bool = False,
    stream=sys.stderr,
    label: str = "--arch",
):
    """(Sam module in eval mode, arch dict). With sd None: seeded random weights of `size`."""
    check_overrides(overrides, label)
    if sd is None:
        arch = arch_for_size(size)
        arch.update({k: v for k, v in overrides.items() if k in arch})
        check_arch(arch, label)
        torch.manual_seed(seed)
        model = Sam(arch)
        for name, p in model.named_parameters():  # non-trivial positions for benchmarks
            if "rel_pos" in name or name.endswith("pos_embed"):
                torch.nn.init.normal_(p, std=0.02)
        return model.eval(), arch
    try:
        arch = arch_from_state_dict(sd, overrides)
    except KeyError as e:
        raise IncompatibleCheckpoint(f"not a segment-anything checkpoint: no tensor {e}") from None
    except ValueError as e:
        raise IncompatibleCheckpoint(f"unsupported segment-anything checkpoint: {e}") from None
    given = [k for k in CHECKPOINT_OVERRIDES if k in overrides]
    check_arch(
        arch,
        f"{label} ({', '.join(given)})" if given else "the checkpoint's architecture",
        error=UsageError if given else IncompatibleCheckpoint,
    )
    model = Sam(arch)
    expected = model.state_dict()
    rep = match_state(expected, sd)
    rep.print(stream=stream, verbose=verbose, quiet=quiet)
    if not rep.complete and not allow_partial:
        raise IncompatibleCheckpoint(
            f"{len(rep.missing)} missing and {len(rep.mismatched)} shape-mismatched tensors "
            "(use --allow-partial to write the bundle anyway)"
        )
    model.load_state_dict({k: sd[k] for k in rep.loaded}, strict=False)
    return model.eval(), arch


def script_sam(model: Sam) -> Dict[str, torch.jit.ScriptModule]:
    out = collections.OrderedDict()
    for name in SAM_MODULE_FILES:
        m = getattr(model, name).cpu().float().eval()
        try:
            out[name] = torch.jit.script(m)
        except Exception as e:  # noqa: BLE001
            raise ExportError(f"cannot script the {name} module: {e}") from None
    return out


def build_manifest(arch: Dict[str, Any], name: str, source: Dict[str, Any], files: Dict[str, Any]) -> Dict[str, Any]:
    return collections.OrderedDict(
        [
            ("format", FORMAT),
            ("format_version", FORMAT_VERSION),
            ("name", name),
            ("created_by", f"ovseg-export-sam {EXPORTER_VERSION}"),
            ("created_at", datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")),
            ("source", source),
            ("architecture", collections.OrderedDict(sorted(arch.items()))),
            ("mask_threshold", 0.0),
            ("modules", collections.OrderedDict(SAM_MODULE_FILES)),
            ("files", files),
        ]
    )


def _write(out_dir: str, scripted, manifest_fn, inputs=()):
    import shutil
    import tempfile

    out_dir = check_out(out_dir, FORMAT, inputs)  # again: it may have changed since the start
    parent = os.path.dirname(out_dir)
    os.makedirs(parent, exist_ok=True)
    tmp = tempfile.mkdtemp(prefix=os.path.basename(out_dir) + ".tmp-", dir=parent)
    try:
        files = collections.OrderedDict()
        for name, fname in SAM_MODULE_FILES.items():
            p = os.path.join(tmp, fname)
            torch.jit.save(scripted[name], p)
            files[fname] = {"sha256": sha256_file(p), "bytes": os.path.getsize(p)}
        with open(os.path.join(tmp, "manifest.json"), "w", encoding="utf-8") as f:
            json.dump(manifest_fn(files), f, indent=2, allow_nan=False)  # NaN is not JSON
            f.write("\n")
        os.chmod(tmp, 0o755)
        old = None
        if os.path.lexists(out_dir):
            old = tempfile.mkdtemp(prefix=os.path.basename(out_dir) + ".old-", dir=parent)
            os.rmdir(old)
            os.rename(out_dir, old)
        os.rename(tmp, out_dir)
        if old:
            shutil.rmtree(old, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    total = sum(os.path.getsize(os.path.join(out_dir, f)) for f in os.listdir(out_dir))
    return out_dir, total


def export_sam(
    out_dir: str,
    checkpoint: Optional[str],
    overrides: Dict[str, Any],
    random_init: bool = False,
    size: str = "vit_b",
    seed: int = 0,
    allow_partial: bool = False,
    name: Optional[str] = None,
    verbose: bool = False,
    quiet: bool = False,
    stream=sys.stderr,
    arch_label: str = "--arch",
    inputs=(),
) -> Dict[str, Any]:
    t0 = time.perf_counter()
    inputs = [p for p in (checkpoint, *inputs) if p]
    check_out(out_dir, FORMAT, inputs)
    if random_init:
        model, arch = build_eager(None, overrides, size=size, seed=seed, label=arch_label)
        source = collections.OrderedDict(
            [("checkpoint", "random-init"), ("sha256", ""), ("size", size), ("seed", seed)]
        )
        default_name = f"sam-{size.replace('_', '-')}-random"
    else:
        if not checkpoint:
            raise UsageError("--checkpoint is required unless --random-init is given")
        sd = read_checkpoint(checkpoint)
        model, arch = build_eager(
            sd, overrides, allow_partial=allow_partial, verbose=verbose, quiet=quiet, stream=stream, label=arch_label
        )
        source = collections.OrderedDict(
            [("checkpoint", os.path.basename(checkpoint)), ("sha256", sha256_file(checkpoint))]
        )
        default_name = os.path.splitext(os.path.basename(checkpoint))[0]
    scripted = script_sam(model)
    path, total = _write(
        out_dir, scripted, lambda files: build_manifest(arch, name or default_name, source, files), inputs
    )
    return {"path": path, "bytes": total, "seconds": time.perf_counter() - t0, "arch": arch}


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    err = sys.stderr
    try:
        overrides, label = read_json_option(args.arch, "--arch", labelled=True) if args.arch else ({}, "--arch")
        if args.random_init and args.checkpoint:
            raise UsageError("--checkpoint and --random-init exclude each other")
        arch_file = [args.arch] if args.arch and os.path.lexists(args.arch) else []
        res = export_sam(
            args.out,
            args.checkpoint,
            overrides,
            random_init=args.random_init,
            size=args.size,
            seed=args.seed,
            allow_partial=args.allow_partial,
            name=args.name,
            verbose=args.verbose,
            quiet=args.quiet,
            stream=err,
            arch_label=label,
            inputs=arch_file,
        )
    except (CheckpointReadError, ExportError) as e:
        print(f"ovseg-export-sam: error: {e}", file=err)
        return e.exit_code
    except KeyboardInterrupt:
        print("ovseg-export-sam: interrupted", file=err)
        return 130
    except Exception as e:  # noqa: BLE001 - one line, never a traceback (OVSEG_TRACEBACK=1 shows it)
        return report_unexpected("ovseg-export-sam", e, err)
    if not args.quiet:
        print(f"wrote {res['path']}: {res['bytes'] / 1e6:.1f} MB in {res['seconds']:.1f} s")
    return 0
