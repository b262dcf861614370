#!/usr/bin/python3
"""mIoU of label maps written by `ovseg segment` against rendered labels (tools/train_demo/render).

  evaluate.py --data DIR --pred PRED [--agree PRED2] [--min-miou X] [--json OUT]

DIR holds labels/NAME.png and classes.txt; PRED holds NAME.png from `ovseg segment --classes-file
DIR/classes.txt`. IoU per class over the whole set (detectron2's convention: pixels labelled
255 in the ground truth are ignored, an unlabelled prediction counts as a miss), averaged over
the classes that occur in the ground truth; reported over all of them, over the seen
compositions (and backgrounds) and over the held-out compositions. --agree reports the share
of pixels where two prediction sets carry the same label (e.g. bf16 against fp32).
"""
import argparse
import json
import os
import sys

import numpy as np
from PIL import Image

sys.path.insert(0, os.path.dirname(os.path.realpath(__file__)))
import scenes  # noqa: E402


def read_png(path: str) -> np.ndarray:
    with Image.open(path) as im:
        return np.asarray(im).astype(np.int64)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True)
    p.add_argument("--pred", required=True)
    p.add_argument("--agree", metavar="PRED2")
    p.add_argument("--min-miou", type=float, help="exit 1 when the mIoU over all classes is lower")
    p.add_argument("--json", metavar="OUT")
    a = p.parse_args(argv)
    with open(os.path.join(a.data, "classes.txt"), "r", encoding="utf-8") as f:
        classes = [line.rstrip("\n") for line in f if line.strip()]
    k = len(classes)
    names = sorted(n[:-4] for n in os.listdir(os.path.join(a.data, "labels")) if n.endswith(".png"))
    if not names:
        print(f"evaluate: {a.data}/labels: no label maps", file=sys.stderr)
        return 2
    conf = np.zeros((k, k + 1), np.int64)  # last column: unlabelled prediction
    same = total = 0
    for n in names:
        gt = read_png(os.path.join(a.data, "labels", n + ".png"))
        pp = os.path.join(a.pred, n + ".png")
        if not os.path.isfile(pp):
            print(f"evaluate: {pp}: missing prediction", file=sys.stderr)
            return 2
        pr = read_png(pp)
        if pr.shape != gt.shape:
            print(f"evaluate: {pp}: size {pr.shape} differs from the label's {gt.shape}", file=sys.stderr)
            return 2
        valid = gt != 255
        g = gt[valid]
        q = pr[valid]
        q = np.where((q >= 0) & (q < k), q, k)
        conf += np.bincount(g * (k + 1) + q, minlength=k * (k + 1)).reshape(k, k + 1)
        if a.agree:
            p2 = read_png(os.path.join(a.agree, n + ".png"))
            same += int((p2 == pr).sum())
            total += pr.size
    tp = np.diag(conf[:, :k]).astype(np.float64)
    gt_count = conf.sum(1)
    pred_count = conf[:, :k].sum(0)
    iou = tp / np.maximum(gt_count + pred_count - tp, 1)
    present = gt_count > 0
    held = np.array([scenes.is_heldout(c) for c in classes])

    def mean(sel):
        sel = sel & present
        return float(iou[sel].mean()) if sel.any() else None

    out = {
        "images": len(names),
        "classes_present": int(present.sum()),
        "miou": mean(np.ones(k, bool)),
        "miou_seen": mean(~held),
        "miou_heldout": mean(held),
        "pixel_accuracy": float(tp.sum() / max(1, gt_count.sum())),
        "per_class_iou": {c: round(float(iou[i]), 4) for i, c in enumerate(classes) if present[i]},
    }
    if a.agree:
        out["label_agreement"] = same / max(1, total)
    text = json.dumps(out, indent=1)
    if a.json:
        with open(a.json, "w", encoding="utf-8") as f:
            f.write(text + "\n")
    summary = {key: out[key] for key in out if key != "per_class_iou"}
    print(json.dumps(summary))
    if a.min_miou is not None and (out["miou"] is None or out["miou"] < a.min_miou):
        print(f"evaluate: mIoU {out['miou']} is below the required {a.min_miou}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
