"""Command line of tools/ovseg-export."""
import argparse
import json
import os
import sys
from typing import List, Optional

from . import config as config_mod
from .export import EXPORTER_VERSION, export_bundle
from .load import ExportError, UsageError, read_json_option, report_unexpected
from .presets import PRESETS
from .templates import TEMPLATE_SETS

EXIT_OK = 0
EXIT_USAGE = 2  # also: unreadable checkpoint / vocab / config
EXIT_INCOMPATIBLE = 3  # missing or shape-mismatched tensors without --allow-partial
EXIT_FAILURE = 1

_EPILOG = """\
exit status: 0 bundle written; 2 bad usage or an unreadable checkpoint, config or vocabulary
file; 3 the checkpoint lacks model tensors or has tensors of another shape (see the table on
stderr; --allow-partial writes the bundle anyway); 1 any other failure.

examples:
  ovseg-export --checkpoint ovseg_swinbase_vitL14_ft_mpt.pth --preset swinB_vitL14 \\
      --bpe-vocab bpe_simple_vocab_16e6.txt.gz --out models/ovseg-swinB-vitL14
  ovseg-export --random-init --preset R101c_vitB16 --bpe-vocab bpe_simple_vocab_16e6.txt.gz \\
      --out /tmp/r101c-random
"""


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="ovseg-export",
        description="Export an official ov-seg checkpoint as an ovseg model bundle "
        "(three TorchScript modules + manifest.json, models/BUNDLE_FORMAT.md).",
        epilog=_EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"ovseg-export {EXPORTER_VERSION}")
    p.add_argument("--checkpoint", metavar="CKPT", help="official checkpoint (.pth); not needed " "with --random-init")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--config", metavar="CONFIG.yaml", help="official ov-seg YAML config")
    src.add_argument("--preset", choices=sorted(PRESETS), help="released configuration")
    p.add_argument(
        "--bpe-vocab",
        required=True,
        metavar="VOCAB",
        help="CLIP BPE merges file (bpe_simple_vocab_16e6.txt.gz), copied into the bundle",
    )
    p.add_argument(
        "--out",
        required=True,
        metavar="DIR",
        help="bundle directory to write; an "
        "existing one is replaced atomically if it is empty or an ovseg bundle holding "
        "only its own files (anything else is refused)",
    )
    p.add_argument(
        "--random-init", action="store_true", help="seeded random weights instead of a checkpoint (for benchmarks)"
    )
    p.add_argument("--seed", type=int, default=0, help="seed for --random-init (default 0)")
    p.add_argument(
        "--clip-arch",
        metavar="JSON",
        help="with --random-init: CLIP dimensions as a JSON object or file "
        "(embed_dim, image_resolution, vision_layers, vision_width, "
        "vision_patch_size, context_length, vocab_size, transformer_width, "
        "transformer_layers[, prompt_depth]); default: the released CLIP of "
        "CLIP_MODEL_NAME",
    )
    p.add_argument(
        "--clip-weights",
        metavar="FILE",
        help="OpenAI's CLIP file (ViT-L-14.pt / ViT-B-16.pt, a TorchScript archive) or a "
        "plain CLIP state dict: fills every clip_adapter.clip_model.* tensor the "
        "checkpoint lacks, as the official loader starts from clip.load()",
    )
    p.add_argument(
        "--allow-partial",
        action="store_true",
        help="write the bundle even if tensors are missing or have another shape "
        "(they keep their constructor values)",
    )
    p.add_argument("--name", help="bundle name in the manifest (default from the config)")
    p.add_argument(
        "--template-set",
        choices=TEMPLATE_SETS,
        default=None,
        help="prompt templates (default: the config's TEXT_TEMPLATES, i.e. vild)",
    )
    p.add_argument(
        "--templates-file",
        metavar="JSON",
        help="templates as a JSON list, or an object holding a list per set name " "(required for imagenet)",
    )
    verb = p.add_mutually_exclusive_group()
    verb.add_argument("-q", "--quiet", action="store_true", help="print errors only")
    verb.add_argument(
        "-v", "--verbose", action="store_true", help="also list checkpoint keys that are ignored on purpose"
    )
    return p


# --clip-arch keys and their ranges (the released CLIPs are far inside)
_CLIP_ARCH = {
    "embed_dim": (1, 8192),
    "image_resolution": (16, 4096),
    "vision_layers": (1, 256),
    "vision_width": (64, 8192),
    "vision_patch_size": (1, 256),
    "context_length": (2, 4096),
    "vocab_size": (1, 1 << 20),
    "transformer_width": (64, 8192),
    "transformer_layers": (1, 256),
    "prompt_depth": (0, 256),
}
_CLIP_ARCH_OPTIONAL = ("prompt_depth",)


def _read_clip_arch(text: str) -> dict:
    data, label = read_json_option(text, "--clip-arch", labelled=True)
    required = [k for k in _CLIP_ARCH if k not in _CLIP_ARCH_OPTIONAL]
    if any(k not in data for k in required):
        raise UsageError(f"{label}: needs the keys {', '.join(required)}")
    out = {}
    for k, v in data.items():
        if k not in _CLIP_ARCH:
            raise UsageError(f"{label}: {k}: not a CLIP architecture key (known: " f"{', '.join(_CLIP_ARCH)})")
        lo, hi = _CLIP_ARCH[k]
        if isinstance(v, bool) or not isinstance(v, int) or not lo <= v <= hi:
            raise UsageError(f"{label}: {k}: {json.dumps(v)} is not an integer in {lo}..{hi}")
        out[k] = v
    if out["image_resolution"] % out["vision_patch_size"]:
        raise UsageError(
            f"{label}: image_resolution {out['image_resolution']} is not a multiple "
            f"of vision_patch_size {out['vision_patch_size']}"
        )
    for k in ("vision_width", "transformer_width"):
        if out[k] % 64:
            raise UsageError(f"{label}: {k} {out[k]} is not a multiple of 64 (the head width)")
    return out


def main(argv: Optional[List[str]] = None) -> int:
    args = _parser().parse_args(argv)
    err = sys.stderr
    try:
        if not args.random_init and not args.checkpoint:
            raise UsageError("--checkpoint is required unless --random-init is given")
        if args.clip_weights and args.random_init:
            raise UsageError(
                "--clip-weights needs --checkpoint (it fills the CLIP tensors a "
                "checkpoint lacks); --random-init has no checkpoint"
            )
        if args.clip_arch and not args.random_init:
            raise UsageError(
                "--clip-arch only applies to --random-init (a checkpoint defines " "its own CLIP dimensions)"
            )
        if args.config:
            cfg = config_mod.config_for(config_path=args.config)
            label = os.path.basename(args.config)
        else:
            cfg = config_mod.config_for(preset=args.preset)
            label = f"preset:{args.preset}"
        template_set = args.template_set or str(cfg["MODEL"]["CLIP_ADAPTER"].get("TEXT_TEMPLATES", "vild"))
        clip_arch = _read_clip_arch(args.clip_arch) if args.clip_arch else None
        result = export_bundle(
            args.out,
            args.bpe_vocab,
            cfg,
            label,
            checkpoint=args.checkpoint,
            random_init=args.random_init,
            seed=args.seed,
            clip_arch=clip_arch,
            allow_partial=args.allow_partial,
            name=args.name,
            template_set=template_set,
            templates_file=args.templates_file,
            verbose=args.verbose,
            quiet=args.quiet,
            stream=err,
            clip_weights=args.clip_weights,
            inputs=[args.config] if args.config else [],
        )
    except config_mod.ConfigError as e:
        print(f"ovseg-export: error: {e}", file=err)
        return EXIT_USAGE
    except ExportError as e:
        print(f"ovseg-export: error: {e}", file=err)
        return e.exit_code
    except ValueError as e:  # templates file, preset name
        print(f"ovseg-export: error: {e}", file=err)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("ovseg-export: interrupted", file=err)
        return 130
    except Exception as e:  # noqa: BLE001 - one line, never a traceback (OVSEG_TRACEBACK=1 shows it)
        return report_unexpected("ovseg-export", e, err)
    if not args.quiet:
        print(f"wrote {result['path']}: {result['bytes'] / 1e6:.1f} MB in {result['seconds']:.1f} s", file=sys.stdout)
    return EXIT_OK


if __name__ == "__main__":
    sys.exit(main())
