"""Independent computation of the evaluation metrics for the eval tests (docs/reference-behaviour.md §8.3, §8.4).

Follows detectron2 0.6 SemSegEvaluator step by step with numpy (bincount confusion matrix, float64
formulas in the evaluator's order), plus the newer mIoU over GT classes. Label files are read with
Pillow (as the reference does); raw files (*.u16, little-endian uint16) hold synthetic predictions.

usage: expected_metrics.py INPUT.json  →  JSON on stdout
INPUT: {"num_classes": K, "ignore_label": 255, "images": [{"gt": PATH, "pred": PATH,
        "width": W, "height": H}, ...]}
"""
import json
import math
import sys

import numpy as np
from PIL import Image

UNLABELED = 65535


def read_map(path, width, height):
    if path.endswith(".u16"):
        return np.fromfile(path, dtype="<u2").reshape(height, width).astype(np.int64)
    with Image.open(path) as im:
        return np.array(im).astype(np.int64)


def nan_to_none(values):
    return [None if (isinstance(v, float) and math.isnan(v)) else v for v in values]


def metrics_from_pairs(pairs, k, ignore):
    """The metrics of (pred, gt) label arrays: detectron2 0.6's SemSegEvaluator + mIoU over GT classes."""
    conf = np.zeros((k + 1, k + 1), dtype=np.int64)
    for pred, gt in pairs:
        pred = pred.astype(np.int64).copy()
        gt = gt.astype(np.int64).copy()
        assert gt.shape == pred.shape, (gt.shape, pred.shape)
        pred[pred == UNLABELED] = k
        gt[gt == ignore] = k
        conf += np.bincount((k + 1) * pred.reshape(-1) + gt.reshape(-1), minlength=conf.size).reshape(conf.shape)

    acc = np.full(k, np.nan, dtype=np.float64)
    iou = np.full(k, np.nan, dtype=np.float64)
    tp = conf.diagonal()[:-1].astype(np.float64)
    pos_gt = np.sum(conf[:-1, :-1], axis=0).astype(np.float64)
    class_weights = pos_gt / np.sum(pos_gt)
    pos_pred = np.sum(conf[:-1, :-1], axis=1).astype(np.float64)
    acc_valid = pos_gt > 0
    acc[acc_valid] = tp[acc_valid] / pos_gt[acc_valid]
    iou_valid = (pos_gt + pos_pred) > 0
    union = pos_gt + pos_pred - tp
    iou[acc_valid] = tp[acc_valid] / union[acc_valid]
    macc = np.sum(acc[acc_valid]) / np.sum(acc_valid)
    miou = np.sum(iou[acc_valid]) / np.sum(iou_valid)
    miou_gt = np.sum(iou[acc_valid]) / np.sum(acc_valid)
    fiou = np.sum(iou[acc_valid] * class_weights[acc_valid])
    pacc = np.sum(tp) / np.sum(pos_gt)

    return {
        "mIoU": float(100 * miou),
        "mIoU_gt_classes": float(100 * miou_gt),
        "fwIoU": float(100 * fiou),
        "mACC": float(100 * macc),
        "pACC": float(100 * pacc),
        "IoU": nan_to_none([float(100 * v) for v in iou]),
        "ACC": nan_to_none([float(100 * v) for v in acc]),
        "tp": [int(v) for v in conf.diagonal()[:-1]],
        "gt_pixels": [int(v) for v in np.sum(conf[:-1, :-1], axis=0)],
        "pred_pixels": [int(v) for v in np.sum(conf[:-1, :-1], axis=1)],
        "pixels_ignored": int(conf[:, k].sum()),
        "classes_with_gt": int(np.sum(acc_valid)),
        "classes_with_gt_or_pred": int(np.sum(iou_valid)),
        "confusion_nonzero": [[int(p), int(g), int(conf[p, g])] for p, g in zip(*np.nonzero(conf))],
    }


def main():
    with open(sys.argv[1]) as f:
        spec = json.load(f)
    pairs = (
        (read_map(item["pred"], item["width"], item["height"]), read_map(item["gt"], item["width"], item["height"]))
        for item in spec["images"]
    )
    json.dump(metrics_from_pairs(pairs, spec["num_classes"], spec["ignore_label"]), sys.stdout)


if __name__ == "__main__":
    main()
