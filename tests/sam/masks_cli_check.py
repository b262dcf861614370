#!/usr/bin/python3
"""`ovseg masks` against every SAM fixture: the official generator's count, order, binary masks
(>= 99.99 % equal pixels per mask), boxes, areas, points, crop boxes, predicted IoU and stability
scores (within 1e-4), with the fixture's own parameters from meta.json; amg.py's file layout and
the COCO-RLE JSON; points_per_batch changing nothing. Exit 77 without a SAM fixture.
Cost: ≈ 20 s per fixture on 2 cores (three generator runs of the reduced model)."""
import csv
import json
import os
import subprocess
import sys
import tempfile
import unittest

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import sam_fixtures as sf  # noqa: E402

sys.path.insert(0, os.path.join(HERE, "..", "eval"))
import coco_rle  # noqa: E402  (the tests' COCO RLE, written from pycocotools' description)

BIN = os.environ.get("OVSEG_BIN", os.path.join(sf.REPO, "build", "ovseg"))
BUNDLES = os.environ.get("OVSEG_SAM_BUNDLE_DIR", os.path.join(sf.REPO, "build", "test-bundles-sam"))
FIXTURES = sf.sam_fixtures()


def setUpModule():
    # However the module is started (ctest, unittest, pytest): no fixture, every test skips.
    if not FIXTURES:
        raise unittest.SkipTest(f"no SAM fixture under {sf.SHARED}")


def run_masks(d, meta, out, extra=()):
    image = sf.amg_input(d, meta)
    cmd = (
        [BIN, "-q", "masks", "--sam-model", os.path.join(BUNDLES, os.path.basename(d)), "-o", out]
        + sf.generator_flags(meta, extra)
        + [image]
    )
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr}")
    return os.path.join(out, os.path.splitext(os.path.basename(image))[0])


def read_folder(folder):
    with open(os.path.join(folder, "metadata.csv"), newline="") as f:
        rows = list(csv.DictReader(f))
    masks = [np.asarray(Image.open(os.path.join(folder, f"{i}.png"))) for i in range(len(rows))]
    return rows, masks


class MasksCli(unittest.TestCase):
    def test_matches_official_generator(self):
        for d, meta in FIXTURES:
            name = os.path.basename(d)
            with self.subTest(fixture=name), tempfile.TemporaryDirectory() as tmp:
                folder = run_masks(d, meta, tmp)
                rows, masks = read_folder(folder)
                ref = sf.segmentations(d, meta)
                n = meta["num_masks"]
                self.assertEqual(len(rows), n, "mask count")
                self.assertEqual(len(ref), n)
                self.assertEqual(
                    list(rows[0].keys()) if rows else [],
                    [
                        "id",
                        "area",
                        "bbox_x0",
                        "bbox_y0",
                        "bbox_w",
                        "bbox_h",
                        "point_input_x",
                        "point_input_y",
                        "predicted_iou",
                        "stability_score",
                        "crop_box_x0",
                        "crop_box_y0",
                        "crop_box_w",
                        "crop_box_h",
                    ]
                    if n
                    else [],
                )
                area = sf.load_array(d, meta, "area")
                bbox = sf.load_array(d, meta, "bbox")
                iou = sf.load_array(d, meta, "predicted_iou")
                stab = sf.load_array(d, meta, "stability_score")
                pts = sf.load_array(d, meta, "point_coords")
                crop = sf.load_array(d, meta, "crop_box")
                for i, r in enumerate(rows):
                    m = masks[i]
                    self.assertTrue(set(np.unique(m)) <= {0, 255})
                    eq = np.mean((m > 0) == ref[i])
                    self.assertGreaterEqual(eq, 0.9999, f"mask {i}: {eq:.6f} equal")
                    self.assertEqual(int(r["area"]), int((m > 0).sum()))
                    self.assertLessEqual(abs(int(r["area"]) - int(area[i])), 1e-4 * ref[i].size)
                    got_box = [int(r[k]) for k in ("bbox_x0", "bbox_y0", "bbox_w", "bbox_h")]
                    self.assertLessEqual(max(abs(a - b) for a, b in zip(got_box, bbox[i])), 1e-4, f"bbox {i}")
                    self.assertLess(abs(float(r["predicted_iou"]) - float(iou[i])), 1e-4, f"iou {i}")
                    self.assertLess(abs(float(r["stability_score"]) - float(stab[i])), 1e-4, f"stab {i}")
                    self.assertEqual([float(r["point_input_x"]), float(r["point_input_y"])], list(pts[i]))
                    self.assertEqual(
                        [int(r[k]) for k in ("crop_box_x0", "crop_box_y0", "crop_box_w", "crop_box_h")], list(crop[i])
                    )

    def test_points_per_batch_changes_nothing_and_rle(self):
        d, meta = FIXTURES[0]
        with tempfile.TemporaryDirectory() as tmp:
            a = run_masks(d, meta, os.path.join(tmp, "a"))
            b = run_masks(d, meta, os.path.join(tmp, "b"), ["--points-per-batch", "5"])
            rows, masks = read_folder(a)
            rows_b, masks_b = read_folder(b)
            # The decoder's float rounding depends on its batch (as in the official code):
            # the same masks, scores within float noise.
            self.assertEqual(len(rows), len(rows_b))
            for ra, rb, ma, mb in zip(rows, rows_b, masks, masks_b):
                self.assertGreaterEqual(np.mean(ma == mb), 0.9999)
                for k in ("predicted_iou", "stability_score"):
                    self.assertLess(abs(float(ra[k]) - float(rb[k])), 1e-4)
            base = run_masks(d, meta, os.path.join(tmp, "c"), ["--convert-to-rle"])
            with open(base + ".json") as f:
                recs = json.load(f)
            self.assertEqual(len(recs), len(rows))
            for i, rec in enumerate(recs):
                self.assertEqual(
                    list(rec.keys()),
                    ["segmentation", "area", "bbox", "predicted_iou", "point_coords", "stability_score", "crop_box"],
                )
                np.testing.assert_array_equal(coco_rle.decode(rec["segmentation"]) > 0, masks[i] > 0)
                self.assertEqual(rec["area"], int(rows[i]["area"]))
                self.assertEqual(rec["predicted_iou"], float(rows[i]["predicted_iou"]))


if __name__ == "__main__":
    if not FIXTURES:
        print("SKIP: no SAM fixture under", sf.SHARED)
        sys.exit(77)
    if not os.path.isdir(BUNDLES):
        print("SKIP: no SAM test bundles in", BUNDLES)
        sys.exit(77)
    unittest.main()
