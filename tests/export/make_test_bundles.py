#!/usr/bin/python3
"""Export a bundle from every shared fixture (ctest setup fixture `test_bundles`).

For each SHARED/fixtures/<name>/ with checkpoint.pth and config_eval.yaml this writes
OUT/<name>/ with tools/ovseg-export. The exporter gives the demo path the released defaults
(0.35 / 0.0); where the fixture has a config_demo.yaml, its MASK_THR / CLIP_ENSEMBLE_WEIGHT
replace them in manifest.json (the manifest is not checksummed), so a test bundle runs both
paths with the fixture's own settings. A bundle is re-exported only when the checkpoint, the
configs, the vocabulary or the exporter's sources changed (stamp OUT/.<name>.stamp.json).
Exit 77 (ctest "skipped") when SHARED is absent.
"""
import argparse
import collections
import hashlib
import json
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(REPO, "tools")


def _sha256(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def exporter_sources_hash() -> str:
    h = hashlib.sha256()
    files = [os.path.join(TOOLS, "ovseg-export")]
    for root, dirs, names in os.walk(os.path.join(TOOLS, "ovseg_export")):
        dirs[:] = sorted(d for d in dirs if d != "__pycache__")
        files.extend(os.path.join(root, n) for n in sorted(names) if n.endswith(".py"))
    for p in files:
        h.update(os.path.relpath(p, TOOLS).encode())
        h.update(b"\0")
        with open(p, "rb") as f:
            h.update(f.read())
        h.update(b"\0")
    return h.hexdigest()


def demo_settings(config_demo: str) -> dict:
    """{"mask_threshold", "ensemble_weight"} of the demo config (the path it configures)."""
    if TOOLS not in sys.path:
        sys.path.insert(0, TOOLS)
    from ovseg_export import config as config_mod

    cfg = config_mod.load_config(config_demo)
    ca = cfg["MODEL"]["CLIP_ADAPTER"]
    out = {"mask_threshold": float(ca["MASK_THR"]), "ensemble_weight": float(ca["CLIP_ENSEMBLE_WEIGHT"])}
    if not ca.get("CLIP_ENSEMBLE", True):
        out["clip_ensemble"] = False
    return out


def apply_demo_config(bundle: str, config_demo: str) -> dict:
    """Rewrites manifest.json's inference.demo with the demo config's settings."""
    settings = demo_settings(config_demo)
    path = os.path.join(bundle, "manifest.json")
    with open(path, "r", encoding="utf-8") as f:
        manifest = json.load(f, object_pairs_hook=collections.OrderedDict)
    if manifest["inference"]["demo"] != settings:
        manifest["inference"]["demo"] = settings
        tmp = path + ".tmp"
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    return settings


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shared", required=True, help="reference material directory (../shared/ovseg)")
    p.add_argument("--out", required=True, help="where the bundles go")
    p.add_argument("--force", action="store_true", help="re-export even if up to date")
    args = p.parse_args()
    fixtures_dir = os.path.join(args.shared, "fixtures")
    vocab = os.path.join(args.shared, "bpe_simple_vocab_16e6.txt.gz")
    if not os.path.isdir(fixtures_dir) or not os.path.isfile(vocab):
        print(f"make_test_bundles: skipped: shared reference material not found at {args.shared}")
        return 77
    fixtures = sorted(
        d
        for d in os.listdir(fixtures_dir)
        if os.path.isfile(os.path.join(fixtures_dir, d, "checkpoint.pth"))
        and os.path.isfile(os.path.join(fixtures_dir, d, "config_eval.yaml"))
    )
    if not fixtures:
        print(f"make_test_bundles: skipped: no fixture with checkpoint.pth + config_eval.yaml in {fixtures_dir}")
        return 77
    sys.path.insert(0, TOOLS)
    import torch  # noqa: E402 (only needed once we know there is work)

    torch.set_num_threads(1)
    from ovseg_export.cli import main as export_main  # noqa: E402

    os.makedirs(args.out, exist_ok=True)
    src_hash = exporter_sources_hash()
    status = 0
    for name in fixtures:
        fdir = os.path.join(fixtures_dir, name)
        ckpt = os.path.join(fdir, "checkpoint.pth")
        cfg = os.path.join(fdir, "config_eval.yaml")
        cfg_demo = os.path.join(fdir, "config_demo.yaml")
        stamp = {
            "checkpoint_sha256": _sha256(ckpt),
            "config_sha256": _sha256(cfg),
            "config_demo_sha256": _sha256(cfg_demo) if os.path.isfile(cfg_demo) else "",
            "vocab_sha256": _sha256(vocab),
            "exporter_sources_sha256": src_hash,
            "test_bundle_script_sha256": _sha256(os.path.abspath(__file__)),
        }
        out = os.path.join(args.out, name)
        stamp_path = os.path.join(args.out, f".{name}.stamp.json")
        if not args.force and os.path.isfile(os.path.join(out, "manifest.json")) and os.path.isfile(stamp_path):
            try:
                with open(stamp_path, "r", encoding="utf-8") as f:
                    if json.load(f) == stamp:
                        print(f"make_test_bundles: {out} is up to date")
                        continue
            except (OSError, ValueError):
                pass
        if os.path.exists(stamp_path):
            os.remove(stamp_path)
        rc = export_main(
            ["--checkpoint", ckpt, "--config", cfg, "--bpe-vocab", vocab, "--out", out, "--name", f"fixture-{name}"]
        )
        if rc != 0:
            print(f"make_test_bundles: exporting {name} failed (exit {rc})", file=sys.stderr)
            status = 1
            continue
        if os.path.isfile(cfg_demo):
            try:
                s = apply_demo_config(out, cfg_demo)
                print(f"make_test_bundles: {name}: demo path {s} from config_demo.yaml")
            except Exception as e:  # noqa: BLE001 - report, keep the other fixtures going
                print(f"make_test_bundles: {name}: cannot apply {cfg_demo}: {e}", file=sys.stderr)
                status = 1
                continue
        with open(stamp_path, "w", encoding="utf-8") as f:
            json.dump(stamp, f, indent=1)
    return status


if __name__ == "__main__":
    sys.exit(main())
