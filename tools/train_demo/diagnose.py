#!/usr/bin/python3
"""Per-stage diagnosis of demo checkpoints (the "what decided the recipe" numbers of
models/demo/README.md), on rendered scenes the training never saw:

  diagnose.py proposals CKPT...  best query mask IoU per ground-truth object (MaskFormer alone)
  diagnose.py crops CKPT...      CLIP on ground-truth region crops against all 80 names

Scenes: --count (60) of `render --seed 2000 --split heldout` (the tuning scenes), resized as
the pipeline does. One JSON line per checkpoint. A checkpoint's config is DIR/config.yaml.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
import scenes  # noqa: E402
import train  # noqa: E402
from ovseg_export import config as config_mod  # noqa: E402
from ovseg_export.tokenizer import ClipTokenizer  # noqa: E402


def load(ckpt: str):
    cfg = config_mod.load_config(os.path.join(os.path.dirname(ckpt), "config.yaml"))
    sd = torch.load(ckpt, map_location="cpu")["model"]
    pos = sd["clip_adapter.clip_model.visual.positional_embedding"].shape[0] - 1
    res = int(round(pos**0.5)) * train.CLIP_ARCH["vision_patch_size"]
    prop, visual, text, _ = train.build_models(cfg, res)
    prop.load_state_dict({k: v for k, v in sd.items() if not k.startswith("clip_adapter.")})
    train.load_clip_state(sd, visual, text)
    return cfg, prop.eval(), visual.eval(), text.eval(), res


def proposals(ckpt: str, a) -> dict:
    """Mean over ground-truth objects (backgrounds apart) of the best query's IoU (sigmoid > 0.5,
    at the resized image's resolution), and the share of objects some query covers at IoU >= 0.5
    and >= 0.75."""
    cfg, prop, _, _, _ = load(ckpt)
    mean = torch.tensor(cfg["MODEL"]["PIXEL_MEAN"]).view(1, 3, 1, 1)
    std = torch.tensor(cfg["MODEL"]["PIXEL_STD"]).view(1, 3, 1, 1)
    div = int(cfg["MODEL"]["MASK_FORMER"]["SIZE_DIVISIBILITY"])
    pool = train.render_pool(
        a.count, a.seed, int(cfg["INPUT"]["MIN_SIZE_TEST"]), int(cfg["INPUT"]["MAX_SIZE_TEST"]), "heldout"
    )
    best_obj, best_bg = [], []
    for img, lab in pool:
        x = torch.from_numpy(img).permute(2, 0, 1).float()[None]
        h, w = x.shape[-2:]
        hp, wp = -(-h // div) * div, -(-w // div) * div
        x = F.pad((x - mean) / std, (0, wp - w, 0, hp - h))
        with torch.no_grad():
            _, logits = prop(x)
            m = F.interpolate(logits, size=(hp, wp), mode="bilinear", align_corners=False)[0, :, :h, :w].sigmoid() > 0.5
        gt = torch.from_numpy(lab.astype(np.int64))
        for c in torch.unique(gt).tolist():
            g = gt == c
            iou = (m & g).flatten(1).sum(1).float() / (m | g).flatten(1).sum(1).clamp(min=1).float()
            (best_bg if c < len(scenes.BACKGROUNDS) else best_obj).append(float(iou.max()))
    o = np.array(best_obj)
    return {
        "objects": len(o),
        "best_iou": round(float(o.mean()), 4),
        "share_ge_0.5": round(float((o >= 0.5).mean()), 4),
        "share_ge_0.75": round(float((o >= 0.75).mean()), 4),
        "backgrounds_best_iou": round(float(np.mean(best_bg)), 4),
    }


def crops(ckpt: str, a) -> dict:
    """Share of ground-truth region crops (made as in training, region_crop) whose best name among
    all 80 is right, for trained names and for held-out compositions, with prompts off and on."""
    cfg, _, visual, text, res = load(ckpt)
    template = str(cfg["MODEL"]["CLIP_ADAPTER"]["PREDEFINED_PROMPT_TEMPLATES"][0])
    tokens = ClipTokenizer(a.bpe_vocab).tokenize(
        [template.format(n) for n in scenes.CLASSES], train.CLIP_ARCH["context_length"], trim=True
    )
    pool = train.render_pool(
        a.count, a.seed, int(cfg["INPUT"]["MIN_SIZE_TEST"]), int(cfg["INPUT"]["MAX_SIZE_TEST"]), "heldout"
    )
    ims, mks, tg = train.build_crops(pool, {i: i for i in range(len(scenes.CLASSES))}, a.seed, res=res)
    held = torch.tensor([scenes.is_heldout(scenes.CLASSES[t]) for t in tg.tolist()])
    out = {"crops_trained_names": int((~held).sum()), "crops_heldout": int(held.sum())}
    with torch.no_grad():
        t = train.text_features(text, tokens)
        for prompts in (False, True):
            visual.mask_prompt_fwd = prompts
            ok = (visual(ims, mks) @ t.t()).argmax(1) == tg
            key = "prompts_on" if prompts else "prompts_off"
            out[key] = {
                "trained_names": round(float(ok[~held].float().mean()), 4),
                "heldout": round(float(ok[held].float().mean()), 4),
            }
    return out


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("what", choices=["proposals", "crops"])
    p.add_argument("checkpoints", nargs="+", metavar="CKPT")
    p.add_argument("--count", type=int, default=60, help="scenes (default 60)")
    p.add_argument("--seed", type=int, default=2000, help="render seed (default 2000)")
    p.add_argument(
        "--bpe-vocab", default=os.path.join(train.HERE, "..", "..", "models", "demo", "bpe_simple_vocab_16e6.txt.gz")
    )
    a = p.parse_args(argv)
    torch.set_num_threads(1)
    for ckpt in a.checkpoints:
        if not os.path.isfile(ckpt):
            print(f"diagnose: {ckpt}: no such checkpoint", file=sys.stderr)
            return 2
        res = proposals(ckpt, a) if a.what == "proposals" else crops(ckpt, a)
        print(json.dumps(dict(checkpoint=ckpt, **res)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
