"""`ovseg eval --dataset ade150,ade847` (and pc59,pc459): datasets that share images analyze each
image once, and each dataset's outputs equal its own run's (metrics, confusion matrix, settings).
The layouts are built here from the demo model's example images (needs no ../shared); one image
of A-847 has other bytes than its A-150 copy, so it is analyzed again (keys are contents, never
names).

Environment (set by ctest): OVSEG_BIN = the built `ovseg`.
"""
import json
import os
import shutil
import subprocess
import tempfile
import unittest

import numpy as np
from PIL import Image

from demo_env import BIN, DEMO, require_binary

STEMS = ("ADE_val_00000001", "ADE_val_00000002", "ADE_val_00000003")
SOURCES = ("heldout_2026_00001.png", "seen_2026_00001.png", "seen_2026_00002.png")


def save_label(path, labels, bit_depth):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if bit_depth == 8:
        Image.fromarray(labels.astype(np.uint8), mode="L").save(path)
    else:
        Image.fromarray(labels.astype(np.uint16)).save(path, "TIFF")


class EvalSharedImages(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        require_binary()
        cls.tmp = tempfile.mkdtemp(prefix="ovseg_eval_shared_")
        cls.root = os.path.join(cls.tmp, "datasets")
        cls.env = dict(os.environ, OVSEG_CACHE_DIR=os.path.join(cls.tmp, "text-cache"))
        rng = np.random.default_rng(5)
        layouts = {
            "ade150": (
                "ADEChallengeData2016/images/validation",
                "ADEChallengeData2016/annotations_detectron2/validation",
                ".png",
                150,
                255,
                8,
            ),
            "ade847": (
                "ADE20K_2021_17_01/images_detectron2/validation",
                "ADE20K_2021_17_01/annotations_detectron2/validation",
                ".tif",
                847,
                65535,
                16,
            ),
            "pc59": (
                "VOCdevkit/VOC2010/JPEGImages",
                "VOCdevkit/VOC2010/annotations_detectron2/pc59_val",
                ".png",
                59,
                255,
                8,
            ),
            "pc459": (
                "VOCdevkit/VOC2010/JPEGImages",
                "VOCdevkit/VOC2010/annotations_detectron2/pc459_val",
                ".tif",
                459,
                65535,
                16,
            ),
        }
        for name, (img_dir, lab_dir, ext, k, ignore, depth) in layouts.items():
            for i, (stem, src) in enumerate(zip(STEMS, SOURCES)):
                img = Image.open(os.path.join(DEMO, "examples", "images", src)).convert("RGB")
                arr = np.asarray(img).copy()
                if name == "ade847" and i == 2:
                    arr[0, 0] = 255 - arr[0, 0]  # another copy of the image: other bytes
                path = os.path.join(cls.root, img_dir, stem + ".jpg")
                os.makedirs(os.path.dirname(path), exist_ok=True)
                if not os.path.exists(path):
                    Image.fromarray(arr).save(path, quality=95)
                gt = rng.integers(0, k, size=(arr.shape[0] // 16 + 1, arr.shape[1] // 16 + 1))
                gt = np.kron(gt, np.ones((16, 16), dtype=np.int64))[: arr.shape[0], : arr.shape[1]]
                gt[rng.random(gt.shape) < 0.05] = ignore
                save_label(os.path.join(cls.root, lab_dir, stem + ext), gt, depth)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def eval(self, datasets, out, *extra):
        r = subprocess.run(
            [BIN, "eval", "-m", DEMO, "-j", "1", "--dataset", datasets, "--root", self.root, "-o", out, *extra],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=900,
        )
        self.assertEqual(r.returncode, 0, r.stderr)
        return r

    def load(self, out):
        with open(os.path.join(out, "metrics.json")) as f:
            metrics = json.load(f)
        with open(os.path.join(out, "checkpoint.json")) as f:
            state = json.load(f)
        return metrics, state

    def assert_same_run(self, together, alone):
        (m1, s1), (m2, s2) = self.load(together), self.load(alone)
        self.assertEqual(s1["confusion"], s2["confusion"])
        self.assertEqual(s1["settings"], s2["settings"])
        self.assertEqual(sorted(s1["finished"]), sorted(s2["finished"]))
        for key in ("mIoU", "fwIoU", "mACC", "pACC"):
            self.assertEqual(
                m1["metrics"][key] if "metrics" in m1 else m1[key],
                m2["metrics"][key] if "metrics" in m2 else m2[key],
                key,
            )

    def test_ade150_and_ade847_share_their_images(self):
        both = os.path.join(self.tmp, "both")
        r = self.eval("ade150,ade847", both)
        # Three images each; two have equal bytes in both datasets, the third does not.
        self.assertIn("2 analyses shared", r.stderr)
        self.assertIn("dataset=ade150", r.stdout)
        self.assertIn("dataset=ade847", r.stdout)
        self.eval("ade150", os.path.join(self.tmp, "a150"))
        self.eval("ade847", os.path.join(self.tmp, "a847"))
        self.assert_same_run(os.path.join(both, "ade150"), os.path.join(self.tmp, "a150"))
        self.assert_same_run(os.path.join(both, "ade847"), os.path.join(self.tmp, "a847"))
        # Resume keeps working: nothing left to do.
        r = self.eval("ade150,ade847", both, "--resume")
        self.assertIn("0 now", r.stderr)

    def test_pc59_and_pc459_with_their_weight(self):
        both = os.path.join(self.tmp, "pc")
        r = self.eval("pc59,pc459", both, "--shard", "0/2")
        self.assertIn("analyses shared", r.stderr)
        for name in ("pc59", "pc459"):
            _, state = self.load(os.path.join(both, name))
            self.assertEqual(state["settings"]["ensemble_weight"], "0.6")
            self.assertEqual(state["shard"], {"index": 0, "count": 2})
        self.eval("pc459", os.path.join(self.tmp, "pc459"), "--shard", "0/2")
        self.assert_same_run(os.path.join(both, "pc459"), os.path.join(self.tmp, "pc459"))

    def test_bad_lists_are_usage_errors(self):
        for datasets in ("ade150,ade150", "ade150,", "ade150,nosuch", "ade150,custom"):
            r = subprocess.run(
                [
                    BIN,
                    "eval",
                    "-m",
                    DEMO,
                    "--dataset",
                    datasets,
                    "--root",
                    self.root,
                    "-o",
                    os.path.join(self.tmp, "bad"),
                ],
                capture_output=True,
                text=True,
                env=self.env,
                timeout=120,
            )
            self.assertEqual(r.returncode, 2, (datasets, r.stderr))


if __name__ == "__main__":
    unittest.main(verbosity=2)
