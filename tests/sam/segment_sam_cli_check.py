#!/usr/bin/python3
"""`ovseg segment --proposals sam` against the online demo's classification stored with every SAM
fixture (meta.json "classify": runs of classes x granularity): class probabilities within 1e-4,
the selected regions, region boxes, and the final label map at >= 99.99 % of pixels. Also the
edge cases: no mask surviving (all unlabelled, a message), granularity 0 and 1, a single class,
and the ov-seg-way variant (--sam-classifier ovseg) measured against the demo.
Exit 77 without a SAM fixture with "classify". Cost: ≈ 25 s per run on 2 cores."""
import json
import math
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

BIN, SAM_BUNDLES, ov_bundle = sf.BIN, sf.SAM_BUNDLES, sf.ov_bundle
FIXTURES = sf.classify_fixtures()


def setUpModule():
    # However the module is started (ctest, unittest, pytest): no fixture, every test skips.
    if not FIXTURES:
        raise unittest.SkipTest(f"no SAM fixture with a classification under {sf.SHARED}")


def segment(d, meta, out, classes, granularity, extra=()):
    image = os.path.join(d, "image.png")
    cmd = (
        [
            BIN,
            "segment",
            "--proposals",
            "sam",
            "--sam-model",
            os.path.join(SAM_BUNDLES, os.path.basename(d)),
            "-m",
            ov_bundle(meta),
            "--classes",
            ",".join(classes),
            "--granularity",
            repr(granularity),
            "--json",
            "--no-text-cache",
            "-o",
            out,
        ]
        + sf.generator_flags(meta, extra)
        + [image]
    )
    p = subprocess.run(cmd, capture_output=True, text=True)
    if p.returncode != 0:
        raise AssertionError(f"{' '.join(cmd)} failed ({p.returncode}): {p.stderr}")
    with open(os.path.join(out, "image.json")) as f:
        report = json.load(f)
    label = np.asarray(Image.open(os.path.join(out, "image.png")))
    return report, label, p.stderr


class SegmentSamCli(unittest.TestCase):
    def test_matches_online_demo(self):
        for d, meta in FIXTURES:
            for name, run in meta["classify"]["runs"].items():
                with self.subTest(fixture=os.path.basename(d), run=name), tempfile.TemporaryDirectory() as tmp:
                    rep, label, _ = segment(d, meta, tmp, run["classes"], run["granularity"])
                    t = run["tensors"]
                    rd = os.path.join(d, "classify", name)
                    preds = sf.load_array(rd, meta, "class_preds", t)
                    regs = rep["sam_regions"]
                    self.assertEqual(len(regs), preds.shape[0])
                    got = np.array([r["probs"] for r in regs], dtype=np.float64)
                    self.assertEqual(got.shape, preds.shape)
                    # [measured] sam_tiny: 7.0e-5 (k5), the largest in the 5 regions whose masks
                    # differ from the official ones by 1-2 pixels; on the fixture's own masks the
                    # demo arithmetic (CLIP weights rounded to fp16) reproduces it within 1.3e-6.
                    err = np.abs(got - preds).max()
                    print(f"\n[measure] {os.path.basename(d)} {name}: max |dprob| {err:.3g}", file=sys.stderr)
                    self.assertLess(err, 1e-4, "class probabilities")
                    sel = set(int(i) for i in sf.load_array(rd, meta, "selected_masks", t))
                    self.assertEqual({r["index"] for r in regs if r["selected"]}, sel)
                    boxes = sf.load_array(rd, meta, "region_boxes", t)
                    np.testing.assert_array_equal(np.array([r["box"] for r in regs]), boxes)
                    self.check_segments(d, meta, rep, preds, sel, boxes, len(run["classes"]))
                    ref = sf.load_array(rd, meta, "label", t)
                    self.assertEqual(label.shape, ref.shape)
                    eq = np.mean(label == ref)
                    self.assertGreaterEqual(eq, 0.9999, f"labels {eq:.6f} equal")

    def check_segments(self, d, meta, rep, preds, selected, boxes, k):
        """The report's segments: every SAM mask in the generator's order, box and area scaled to
        the original size (floor/ceil, as MaskFormer regions), the best caller class (no "others"),
        the generator's predicted IoU and stability score; all against the fixture."""
        segs = rep["segments"]
        self.assertEqual([s["query"] for s in segs], list(range(preds.shape[0])))
        h, w = meta["amg_input_size_hw"]
        h0, w0 = meta["original_size_hw"]
        sx, sy = w0 / w, h0 / h
        area = np.load(os.path.join(d, meta["tensors"]["area"]["file"]))
        iou = np.load(os.path.join(d, meta["tensors"]["predicted_iou"]["file"]))
        stab = np.load(os.path.join(d, meta["tensors"]["stability_score"]["file"]))
        for i, s in enumerate(segs):
            x0, y0, x1, y1 = (float(v) for v in boxes[i])
            want = [math.floor(x0 * sx), math.floor(y0 * sy), min(w0, math.ceil(x1 * sx)), min(h0, math.ceil(y1 * sy))]
            self.assertEqual(s["box"], want, f"segment {i} box")
            # The official area (at the SAM input size) scaled; ovseg's masks may differ by 1-2 pixels.
            self.assertLessEqual(abs(s["area"] - area[i] * sx * sy), 1 + 2 * sx * sy, f"segment {i} area")
            self.assertLess(abs(s["predicted_iou"] - float(iou[i])), 1e-4)
            self.assertLess(abs(s["stability_score"] - float(stab[i])), 1e-4)
            self.assertEqual(s["class_index"], int(np.argmax(preds[i, :k])))
            self.assertLess(abs(s["score"] - float(preds[i, :k].max())), 1e-4)
            self.assertEqual(s["selected"], i in selected)

    def test_edge_cases_and_variant(self):
        d, meta = FIXTURES[0]
        classes = list(meta["classify"]["runs"].values())[0]["classes"]
        with tempfile.TemporaryDirectory() as tmp:
            # Nothing survives a predicted-IoU threshold of 1: all unlabelled, said on stderr.
            rep, label, err = segment(d, meta, os.path.join(tmp, "none"), classes, 1.0, ["--pred-iou-thresh", "1.0"])
            self.assertTrue((label == 255).all())
            self.assertEqual(rep["sam_regions"], [])
            self.assertEqual(rep["segments"], [])
            self.assertIn("no SAM mask survived", err + json.dumps(rep))
            # Granularity 0: every region with a positive score is selected for every class.
            rep0, label0, _ = segment(d, meta, os.path.join(tmp, "g0"), classes, 0.0)
            self.assertTrue(all(r["selected"] for r in rep0["sam_regions"]))
            rep1, label1, _ = segment(d, meta, os.path.join(tmp, "g1"), classes, 1.0)
            self.assertLessEqual(sum(r["selected"] for r in rep1["sam_regions"]), len(classes))
            # Single class: "others" is appended and never labelled.
            rep_s, label_s, _ = segment(d, meta, os.path.join(tmp, "one"), classes[:1], 1.0)
            self.assertEqual(rep_s["score_classes"], [classes[0], "others"])
            self.assertTrue(set(np.unique(label_s)) <= {0, 255})
            # The ov-seg way: same masks, other probabilities; report how much the maps differ.
            rep_o, label_o, _ = segment(d, meta, os.path.join(tmp, "ov"), classes, 1.0, ["--sam-classifier", "ovseg"])
            self.assertEqual(len(rep_o["sam_regions"]), len(rep1["sam_regions"]))
            a = np.array([r["probs"] for r in rep1["sam_regions"]])
            b = np.array([r["probs"] for r in rep_o["sam_regions"]])
            self.assertGreater(np.abs(a - b).max(), 1e-4)
            print(
                f"\n[measure] demo vs ovseg classifier on {os.path.basename(d)}: max |dprob| "
                f"{np.abs(a - b).max():.4f}, region argmax agree {np.mean(a.argmax(1) == b.argmax(1)):.3f}, "
                f"labels agree {np.mean(label1 == label_o):.4f}",
                file=sys.stderr,
            )


if __name__ == "__main__":
    sf.main_or_skip(FIXTURES, "with a classification")
