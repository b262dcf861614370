"""Eager Python reference pipeline (docs/reference-behaviour.md §3-§7), on eager modules or on an exported bundle.

Used by the tests to reproduce the fixture outputs and, through tools/ovseg-reference, as the
timing baseline of the C++ implementation.
"""
import argparse
import json
import os
import sys
import time
import warnings
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from .tokenizer import ClipTokenizer


# --------------------------------------------------------------------------------------------
# Backends: the three networks + the settings of the manifest
# --------------------------------------------------------------------------------------------


class Backend:
    """proposals(x) -> (class_embeddings [1,Q,E], mask_logits [1,Q,Hp/4,Wp/4]);
    clip_visual(images, masks) -> [N,E] normalised; clip_text(tokens) -> [n,E];
    non_object_embedding [1,E]; manifest-shaped settings."""

    def __init__(
        self,
        proposals: Callable,
        clip_visual: Callable,
        clip_text: Callable,
        non_object_embedding: torch.Tensor,
        manifest: Dict[str, Any],
        tokenizer: ClipTokenizer,
        device: str = "cpu",
    ):
        self.device = torch.device(device)
        self.proposals = proposals
        self.clip_visual = clip_visual
        self.clip_text = clip_text
        self.non_object_embedding = non_object_embedding
        self.manifest = manifest
        self.tokenizer = tokenizer
        self._text_cache: Dict[str, torch.Tensor] = {}

    @property
    def templates(self) -> List[str]:
        return list(self.manifest["text"]["templates"])


def load_bundle(bundle_dir: str, verify: bool = True, device: str = "cpu") -> Backend:
    from .export import MODULE_FILES, sha256_file

    with open(os.path.join(bundle_dir, "manifest.json"), "r", encoding="utf-8") as f:
        manifest = json.load(f)
    if manifest.get("format") != "ovseg-bundle" or manifest.get("format_version") != 1:
        raise ValueError(f"{bundle_dir}/manifest.json: not an ovseg bundle of format version 1")
    if verify:
        for fname, info in manifest["files"].items():
            p = os.path.join(bundle_dir, fname)
            if not os.path.isfile(p):
                raise ValueError(f"{p}: missing bundle file")
            if sha256_file(p) != info["sha256"]:
                raise ValueError(f"{p}: checksum mismatch")
    mods = {
        name: torch.jit.load(os.path.join(bundle_dir, manifest["modules"][name]), map_location=device)
        for name in MODULE_FILES
    }
    for m in mods.values():
        m.eval()
    tok = ClipTokenizer(os.path.join(bundle_dir, manifest["text"]["tokenizer"]["file"]))
    return Backend(
        mods["proposals"],
        mods["clip_visual"],
        mods["clip_text"],
        mods["clip_text"].non_object_embedding,
        manifest,
        tok,
        device,
    )


def eager_backend(
    checkpoint: str,
    cfg: Dict[str, Any],
    bpe_vocab: str,
    config_label: str = "config",
    template_set: str = "vild",
    templates_file: Optional[str] = None,
    device: str = "cpu",
) -> Backend:
    """Eager modules loaded from a checkpoint; the settings are what the exporter would write."""
    from .export import build_manifest, load_eager
    from .templates import load_templates

    modules, arch, _, _ = load_eager(checkpoint, cfg, quiet=True)
    for m in modules.values():
        m.to(device)
    manifest = build_manifest(
        cfg,
        arch,
        "eager",
        {"checkpoint": checkpoint, "config": config_label},
        template_set,
        load_templates(template_set, templates_file),
        {},
    )
    return Backend(
        modules["proposals"],
        modules["clip_visual"],
        modules["clip_text"],
        modules["clip_text"].non_object_embedding,
        manifest,
        ClipTokenizer(bpe_vocab),
        device,
    )


# --------------------------------------------------------------------------------------------
# Pre-processing (docs/reference-behaviour.md §3)
# --------------------------------------------------------------------------------------------


def decode_image(path: str) -> Image.Image:
    """Pillow decode, EXIF orientation applied, converted to RGB (docs/reference-behaviour.md §3.1 step 1)."""
    with Image.open(path) as im:
        im.load()
        im = ImageOps.exif_transpose(im)
        return im.convert("RGB")


def shortest_edge_size(h0: int, w0: int, short: int, max_size: int) -> Tuple[int, int]:
    """ResizeShortestEdge (docs/reference-behaviour.md §3.1 step 2), in double precision."""
    scale = short / min(h0, w0)
    if h0 < w0:
        newh, neww = float(short), scale * w0
    else:
        newh, neww = scale * h0, float(short)
    if max(newh, neww) > max_size:
        f = max_size / max(newh, neww)
        newh *= f
        neww *= f
    return int(newh + 0.5), int(neww + 0.5)


def resize_image(im: Image.Image, h: int, w: int) -> np.ndarray:
    if (h, w) != (im.height, im.width):
        im = im.resize((w, h), Image.BILINEAR)
    return np.asarray(im, dtype=np.uint8).copy()


def normalise_and_pad(img: torch.Tensor, mean: Sequence[float], std: Sequence[float], div: int) -> torch.Tensor:
    """img [3,h,w] float32 0..255 → [1,3,Hp,Wp] normalised, zero-padded right/bottom."""
    m = torch.tensor(mean, dtype=torch.float32, device=img.device).view(3, 1, 1)
    s = torch.tensor(std, dtype=torch.float32, device=img.device).view(3, 1, 1)
    x = (img - m) / s
    h, w = x.shape[-2:]
    hp = (h + div - 1) // div * div
    wp = (w + div - 1) // div * div
    out = x.new_zeros(1, 3, hp, wp)
    out[0, :, :h, :w] = x
    return out


# --------------------------------------------------------------------------------------------
# Text (docs/reference-behaviour.md §5)
# --------------------------------------------------------------------------------------------


def text_features(backend: Backend, classes: Sequence[str], trim_tokens: bool = False) -> torch.Tensor:
    """T [(K+1), E]: per class mean of per-template normalised features, re-normalised; the
    normalised non-object embedding as the last row. Cached per class name like the reference."""
    todo = [c for c in dict.fromkeys(classes) if c not in backend._text_cache]
    if todo:
        per_template = []
        for tmpl in backend.templates:
            tokens = backend.tokenizer.tokenize(
                [tmpl.format(c) for c in todo],
                backend.manifest["text"]["tokenizer"]["context_length"],
                trim=trim_tokens,
            )
            f = backend.clip_text(tokens.to(backend.device))
            per_template.append(f / f.norm(dim=-1, keepdim=True))
        feats = torch.stack(per_template).mean(dim=0)
        feats = feats / feats.norm(dim=-1, keepdim=True)
        for c, f in zip(todo, feats):
            backend._text_cache[c] = f
    rows = torch.stack([backend._text_cache[c] for c in classes])
    no = backend.non_object_embedding
    no = no / no.norm(dim=-1, keepdim=True)
    return torch.cat([rows, no.to(rows.dtype)], dim=0)


# --------------------------------------------------------------------------------------------
# Regions (docs/reference-behaviour.md §4.6, §6)
# --------------------------------------------------------------------------------------------


def upsample_masks(mask_logits: torch.Tensor, h: int, w: int, stride: int = 4) -> torch.Tensor:
    """[Q,Hp/s,Wp/s] logits → sigmoid masks [Q,h,w] (bilinear to the padded size Hp×Wp, crop,
    sigmoid). s, the mask stride, is 4 with ov-seg's backbones and 2 with a Swin of PATCH_SIZE 2
    (the demo model): the reference upsamples to the padded input's size whatever it is."""
    q, hl, wl = mask_logits.shape
    up = F.interpolate(mask_logits[None], size=(hl * stride, wl * stride), mode="bilinear", align_corners=False)
    return up[0, :, :h, :w].sigmoid()


def region_batch(
    image: torch.Tensor, masks: torch.Tensor, thr: float, pre: Dict[str, Any]
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """valid [Q] bool, images [Nv,3,R,R], region masks [Nv,1,R,R] (docs/reference-behaviour.md §6.1-§6.4)."""
    binary = masks > thr
    valid = binary.flatten(1).any(dim=1)
    res = int(pre["region_resolution"])
    dev = image.device
    fill = torch.tensor(pre["clip_fill"], dtype=torch.float32, device=dev).view(3, 1, 1)
    mean = torch.tensor(pre["clip_mean255"], dtype=torch.float32, device=dev).view(3, 1, 1)
    std = torch.tensor(pre["clip_std255"], dtype=torch.float32, device=dev).view(3, 1, 1)
    images, rmasks = [], []
    rows_any = binary.any(dim=2).cpu()
    cols_any = binary.any(dim=1).cpu()
    for q in torch.nonzero(valid).flatten().tolist():
        b = binary[q]
        rows = torch.nonzero(rows_any[q]).flatten()
        cols = torch.nonzero(cols_any[q]).flatten()
        t, bt = int(rows[0]), int(rows[-1]) + 1
        l, r = int(cols[0]), int(cols[-1]) + 1
        m = b[t:bt, l:r].to(torch.float32)[None]
        region = image[:, t:bt, l:r] * m + (1 - m) * fill
        region = (region - mean) / std
        images.append(F.interpolate(region[None], size=(res, res), mode="bicubic", align_corners=False))
        rmasks.append(F.interpolate(m[None], size=(res, res), mode="nearest"))
    if images:
        return valid, torch.cat(images), torch.cat(rmasks)
    return valid, image.new_zeros(0, 3, res, res), image.new_zeros(0, 1, res, res)


# --------------------------------------------------------------------------------------------
# The whole pipeline
# --------------------------------------------------------------------------------------------


class Timer:
    def __init__(self, device: Optional[torch.device] = None):
        self.stages: Dict[str, float] = {}
        self.cuda = device is not None and torch.device(device).type == "cuda"

    def add(self, name: str, t0: float) -> float:
        if self.cuda:
            torch.cuda.synchronize()
        now = time.perf_counter()
        self.stages[name] = self.stages.get(name, 0.0) + (now - t0)
        return now


@torch.no_grad()
def run(
    backend: Backend,
    image_path: str,
    classes: Sequence[str],
    mode: str = "eval",
    proposals_override: Optional[Tuple[torch.Tensor, torch.Tensor]] = None,
    timer: Optional[Timer] = None,
    trim_tokens: bool = False,
) -> Dict[str, Any]:
    """Returns sem_seg [K,H0,W0], label (argmax) and the intermediates the fixture stores.

    `proposals_override` = (class embeddings [Q,E], mask logits [Q,Hp/4,Wp/4]) replaces the
    proposal network (to test the rest of the pipeline on its own)."""
    if mode not in ("eval", "demo"):
        raise ValueError(f"mode must be eval or demo, not {mode!r}")
    timer = timer or Timer(backend.device)
    dev = backend.device
    classes = list(classes)
    if mode == "demo" and len(classes) == 1:
        classes.append("others")  # docs/reference-behaviour.md §7.3
    k = len(classes)
    man = backend.manifest
    pre = man["preprocess"]
    settings = man["inference"][mode]
    thr = float(settings["mask_threshold"])
    w_ens = float(settings["ensemble_weight"])
    clip_branch = bool(settings.get("clip_ensemble", True))
    if not clip_branch and mode != "eval":
        raise ValueError("the demo path needs the CLIP branch (the official demo_inference uses " "its valid regions)")
    temperature = float(man["inference"]["temperature"])

    t0 = time.perf_counter()
    im = decode_image(image_path)
    h0, w0 = im.height, im.width
    h, w = shortest_edge_size(h0, w0, int(pre["min_size_test"]), int(pre["max_size_test"]))
    resized = torch.from_numpy(resize_image(im, h, w)).permute(2, 0, 1).to(torch.float32)
    resized = resized.to(dev)
    x = normalise_and_pad(resized, pre["pixel_mean"], pre["pixel_std"], int(pre["size_divisibility"]))
    t0 = timer.add("decode_resize", t0)

    if proposals_override is None:
        emb, mask_logits = backend.proposals(x)
        emb, mask_logits = emb[0], mask_logits[0]
    else:
        emb, mask_logits = (t.to(dev) for t in proposals_override)
    t0 = timer.add("proposals", t0)

    T = text_features(backend, classes, trim_tokens=trim_tokens)
    t0 = timer.add("text", t0)

    masks = upsample_masks(mask_logits, h, w, stride=x.shape[-2] // mask_logits.shape[-2])
    if clip_branch:
        valid, images, rmasks = region_batch(resized, masks, thr, pre)
    else:  # CLIP_ENSEMBLE False: no regions, no CLIP (OVSeg.semantic_inference)
        valid = torch.zeros(masks.shape[0], dtype=torch.bool, device=dev)
    t0 = timer.add("regions", t0)

    nv = int(valid.sum())
    if nv > 0:
        v = backend.clip_visual(images, rmasks)
        clip_logits = (temperature * v) @ T.t()
    else:
        clip_logits = T.new_zeros(0, k + 1)
    t0 = timer.add("clip", t0)

    e = emb / emb.norm(dim=-1, keepdim=True)
    mf_logits = (temperature * e) @ T.t()
    p_mf = F.softmax(mf_logits, dim=-1)[:, :-1]
    p_clip = F.softmax(clip_logits[:, :-1], dim=-1)
    if mode == "eval" and not clip_branch:
        scores = torch.einsum("qc,qhw->chw", p_mf, masks)
    elif mode == "eval":
        if w_ens > 0:
            c = torch.ones_like(p_mf)
            c[valid] = p_clip
            p = torch.pow(p_mf, 1 - w_ens) * torch.pow(c, w_ens)
            seg_masks = masks
        else:
            p = p_clip
            seg_masks = masks[valid]
        if p.shape[0] == 0:
            warnings.warn("no valid region and ensemble weight 0: all-zero scores")
            scores = masks.new_zeros(k, h, w)
        else:
            scores = torch.einsum("qc,qhw->chw", p, seg_masks)
    else:
        if w_ens > 0:
            if nv != masks.shape[0]:
                raise ValueError(
                    "demo path with ensemble weight > 0 needs every query to be a "
                    "valid region (reference quirk, docs/reference-behaviour.md §7.3)"
                )
            c = p_clip
            p = torch.pow(p_mf, 1 - w_ens) * torch.pow(c, w_ens)
        else:
            p = p_clip
        if nv == 0:
            warnings.warn("no valid region: all-zero scores")
            scores = masks.new_zeros(k, h, w)
        else:
            binary = (masks[valid] > thr).to(torch.float32)
            sel = p.argmax(dim=0).tolist()
            if k == 2 and classes[-1] == "others":
                sel = sel[:-1]
            z = torch.zeros_like(p)
            for r in sel:
                z[r] = p[r]
            scores = torch.einsum("qc,qhw->chw", z, binary)
    sem_seg = F.interpolate(scores[None], size=(h0, w0), mode="bilinear", align_corners=False)[0]
    label = sem_seg.argmax(dim=0).to(torch.int32)
    timer.add("post", t0)

    out = {
        "sem_seg": sem_seg,
        "label": label,
        "classes": classes,
        "pred_embeddings": emb,
        "pred_masks_lowres": mask_logits,
        "text_features": T,
        "valid_flag": valid,
        "clip_logits": clip_logits,
        "original_size_hw": [h0, w0],
        "resized_size_hw": [h, w],
        "num_valid_regions": nv,
    }
    if mode == "demo":
        vis = label.clone()
        vis[sem_seg[0] == 0] = 255  # docs/reference-behaviour.md §7.2 step 6: "unlabelled" where channel 0 is exactly 0
        out["label_vis"] = vis
    return out


# --------------------------------------------------------------------------------------------
# tools/ovseg-reference
# --------------------------------------------------------------------------------------------


def _parse_classes(text: str) -> List[str]:
    if os.path.isfile(text):
        with open(text, "r", encoding="utf-8") as f:
            return [line.strip() for line in f if line.strip()]
    return [c.strip() for c in text.split(",") if c.strip()]


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(
        prog="ovseg-reference",
        description="Eager Python reference of the ov-seg pipeline on an exported bundle; prints "
        "per-stage times as JSON (the baseline for the C++ benchmarks).",
    )
    p.add_argument("--model", required=True, metavar="BUNDLE", help="bundle directory")
    p.add_argument("--image", required=True, metavar="IMG")
    p.add_argument(
        "--classes",
        required=True,
        help="comma-separated class names, or a file with one name per line "
        "(names containing commas need the file form)",
    )
    p.add_argument("--mode", choices=("eval", "demo"), default="eval")
    p.add_argument("--save-npy", metavar="DIR", help="write the intermediates as .npy files")
    p.add_argument("--threads", type=int, default=2, help="torch intra-op threads (default 2)")
    p.add_argument("--device", default="cpu", help="torch device, e.g. cpu or cuda (default cpu)")
    p.add_argument("--timings", action="store_true", help="print per-stage seconds as JSON")
    p.add_argument(
        "--repeat",
        type=int,
        default=1,
        help="run N times; timings of the last run (text is cached after the first, "
        "so 'text' is the cold time only in run 1)",
    )
    args = p.parse_args(argv)
    torch.set_num_threads(max(1, args.threads))
    try:
        backend = load_bundle(args.model, device=args.device)
    except (OSError, ValueError, RuntimeError) as e:
        print(f"ovseg-reference: error: {e}", file=sys.stderr)
        return 2
    classes = _parse_classes(args.classes)
    if not classes:
        print("ovseg-reference: error: no class names", file=sys.stderr)
        return 2
    timings = []
    out = None
    for _ in range(max(1, args.repeat)):
        timer = Timer(backend.device)
        t0 = time.perf_counter()
        out = run(backend, args.image, classes, args.mode, timer=timer)
        timer.stages["total"] = time.perf_counter() - t0
        timings.append(timer.stages)
    if args.save_npy:
        os.makedirs(args.save_npy, exist_ok=True)
        for key in (
            "sem_seg",
            "label",
            "pred_embeddings",
            "pred_masks_lowres",
            "text_features",
            "valid_flag",
            "clip_logits",
        ):
            np.save(os.path.join(args.save_npy, key + ".npy"), out[key].cpu().numpy())
        with open(os.path.join(args.save_npy, "meta.json"), "w", encoding="utf-8") as f:
            json.dump(
                {k: out[k] for k in ("classes", "original_size_hw", "resized_size_hw", "num_valid_regions")},
                f,
                indent=1,
            )
    if args.timings:
        print(
            json.dumps(
                {
                    "stages_s": timings[0] if len(timings) == 1 else timings,
                    "num_valid_regions": out["num_valid_regions"],
                    "resized_size_hw": out["resized_size_hw"],
                    "threads": args.threads,
                    "device": str(backend.device),
                }
            )
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
