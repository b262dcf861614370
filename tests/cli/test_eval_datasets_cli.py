"""End-to-end tests of `ovseg eval` on every benchmark layout (A-150, A-847, PC-59, PC-459, PAS-20)
and on --dataset custom, with the tiny fixture bundle.

Each layout is built here from crops of the fixture image (1-2 tiny annotated images, one image
without annotation that must be left out and counted). The metrics are checked against the numpy
oracle of the eval unit tests on the saved predictions, and the ensemble weight recorded in
metrics.json against the dataset's default (ov-seg GETTING_STARTED) or -w.

Environment: OVSEG_BIN, OVSEG_TEST_BUNDLE_DIR, OVSEG_SHARED_DIR (as test_eval_cli.py). Skips when
any is missing.
"""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("OVSEG_SOURCE_DIR", os.path.dirname(os.path.dirname(HERE)))
SHARED = os.environ.get("OVSEG_SHARED_DIR", os.path.join(SOURCE_DIR, "..", "shared", "ovseg"))
sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "eval"))
from expected_metrics import metrics_from_pairs  # noqa: E402  (the eval unit tests' numpy oracle)
import coco_rle  # noqa: E402  (COCO RLE written from the published algorithm)

try:
    from pycocotools import mask as pycocotools_mask  # not in Debian bookworm; used where installed
except ImportError:
    pycocotools_mask = None

BIN = os.environ.get("OVSEG_BIN", "")
BUNDLE = os.path.join(os.environ.get("OVSEG_TEST_BUNDLE_DIR", ""), "tiny_swin_vit")
FIXTURE_IMAGE = os.path.join(SHARED, "fixtures", "tiny_swin_vit", "image.png")
PRESETS = os.path.join(SHARED, "class_lists.json")
HEADLINE_KEYS = ("mIoU", "mIoU_gt_classes", "fwIoU", "mACC", "pACC")

# name: (image dir, label dir, label ext, K, ignore, bit depth, default weight or None = bundle's)
LAYOUTS = {
    "ade150": (
        "ADEChallengeData2016/images/validation",
        "ADEChallengeData2016/annotations_detectron2/validation",
        ".png",
        150,
        255,
        8,
        None,
    ),
    "ade847": (
        "ADE20K_2021_17_01/images_detectron2/validation",
        "ADE20K_2021_17_01/annotations_detectron2/validation",
        ".tif",
        847,
        65535,
        16,
        None,
    ),
    "pc59": (
        "VOCdevkit/VOC2010/JPEGImages",
        "VOCdevkit/VOC2010/annotations_detectron2/pc59_val",
        ".png",
        59,
        255,
        8,
        0.6,
    ),
    "pc459": (
        "VOCdevkit/VOC2010/JPEGImages",
        "VOCdevkit/VOC2010/annotations_detectron2/pc459_val",
        ".tif",
        459,
        65535,
        16,
        0.6,
    ),
    "voc20": ("VOCdevkit/VOC2012/JPEGImages", "VOCdevkit/VOC2012/annotations_detectron2/val", ".png", 20, 255, 8, 0.45),
}
CUSTOM_K = 7
CUSTOM_IGNORE = 100


def missing_inputs():
    missing = []
    if not BIN or not os.path.isfile(BIN):
        missing.append("OVSEG_BIN (the built ovseg binary)")
    if not os.path.isfile(os.path.join(BUNDLE, "manifest.json")):
        missing.append(f"the tiny bundle {BUNDLE} (exported by ctest's export_fixture_bundles)")
    for f in (FIXTURE_IMAGE, PRESETS):
        if not os.path.isfile(f):
            missing.append(f)
    return missing


def save_label(path, labels, bit_depth):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    if bit_depth == 8:
        Image.fromarray(labels.astype(np.uint8), mode="L").save(path)
    else:  # 16-bit TIFF, as ov-seg's prepare scripts write them
        Image.fromarray(labels.astype(np.uint16)).save(path, "TIFF")


def read_label(path):
    with Image.open(path) as im:
        return np.array(im).astype(np.int64)


def make_gt(rng, h, w, k, ignore, block=8):
    """Blocks of a few classes, some ignored pixels."""
    pool = rng.choice(k, size=min(k, 5), replace=False)
    small = rng.choice(pool, size=((h + block - 1) // block, (w + block - 1) // block))
    gt = np.kron(small, np.ones((block, block), dtype=np.int64))[:h, :w]
    gt[rng.random((h, w)) < 0.05] = ignore
    return gt


@unittest.skipIf(missing_inputs(), "missing: " + "; ".join(missing_inputs()))
class EvalDatasetsCliTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="ovseg-eval-datasets-")
        cls.env = dict(os.environ, OVSEG_PRESETS=PRESETS, OVSEG_CACHE_DIR=os.path.join(cls.tmp, "cache"))
        cls.root = os.path.join(cls.tmp, "datasets")
        src = Image.open(FIXTURE_IMAGE).convert("RGB")
        rng = np.random.default_rng(13)
        cls.stems = {}
        boxes = [(0, 0, 64, 48), (30, 20, 86, 60)]
        for name, (img_dir, lab_dir, lab_ext, k, ignore, depth, _) in LAYOUTS.items():
            image_dir = os.path.join(cls.root, img_dir)
            os.makedirs(image_dir, exist_ok=True)
            stems = []
            n = 1 if k > 400 else 2  # the large class lists cost text time: one image is enough
            for i in range(n):
                stem = f"2008_{name}_{i:02d}"
                img = src.crop(boxes[i])
                img.save(os.path.join(image_dir, stem + ".jpg"), quality=92)
                save_label(
                    os.path.join(cls.root, lab_dir, stem + lab_ext),
                    make_gt(rng, img.height, img.width, k, ignore),
                    depth,
                )
                stems.append(stem)
            cls.stems[name] = stems
            # An image without annotation (JPEGImages holds the whole VOC release): left out, counted.
            src.crop((5, 5, 37, 29)).save(os.path.join(image_dir, f"2008_{name}_unannotated.jpg"))
        # custom: PNG images, 8-bit labels with an odd ignore value, its own class list.
        cls.custom_images = os.path.join(cls.tmp, "custom", "images")
        cls.custom_labels = os.path.join(cls.tmp, "custom", "labels")
        os.makedirs(cls.custom_images)
        cls.custom_classes = os.path.join(cls.tmp, "custom", "classes.txt")
        with open(cls.custom_classes, "w") as f:
            f.write("# my classes\nsky\nroad, route\ntree\ncar\nperson\nbuilding\ngrass\n")
        cls.stems["custom"] = []
        for i in range(2):
            stem = f"frame{i}"
            img = src.crop(boxes[i])
            img.save(os.path.join(cls.custom_images, stem + ".png"))
            save_label(
                os.path.join(cls.custom_labels, stem + ".png"),
                make_gt(rng, img.height, img.width, CUSTOM_K, CUSTOM_IGNORE),
                8,
            )
            cls.stems["custom"].append(stem)
        src.crop((0, 0, 20, 20)).save(os.path.join(cls.custom_images, "no_label.png"))
        cls.runs = {}

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def run_cli(self, *args, timeout=600):
        cmd = [BIN, "eval", "--model", BUNDLE, "--threads", "2", *args]
        return subprocess.run(cmd, capture_output=True, text=True, env=self.env, timeout=timeout)

    def custom_args(self):
        return [
            "--dataset",
            "custom",
            "--images",
            self.custom_images,
            "--labels",
            self.custom_labels,
            "--classes-file",
            self.custom_classes,
            "--ignore-label",
            str(CUSTOM_IGNORE),
            "--image-ext",
            "png",
        ]

    def dataset_args(self, name):
        return self.custom_args() if name == "custom" else ["--dataset", name, "--root", self.root]

    def layout(self, name):
        if name == "custom":
            return self.custom_labels, ".png", CUSTOM_K, CUSTOM_IGNORE, 8, None
        _, lab_dir, ext, k, ignore, depth, weight = LAYOUTS[name]
        return os.path.join(self.root, lab_dir), ext, k, ignore, depth, weight

    def metrics(self, out):
        with open(os.path.join(out, "metrics.json")) as f:
            return json.load(f)

    def check_dataset(self, name):
        label_dir, label_ext, k, ignore, depth, weight = self.layout(name)
        out = os.path.join(self.tmp, "out-" + name)
        r = self.run_cli(*self.dataset_args(name), "--output", out, "--save-predictions", "--save-json")
        self.assertEqual(r.returncode, 0, r.stderr)
        # PC-59 and PC-459 share JPEGImages: the other's images are unannotated here too.
        image_dir = self.custom_images if name == "custom" else os.path.join(self.root, LAYOUTS[name][0])
        ext = ".png" if name == "custom" else ".jpg"
        left_out = len([f for f in os.listdir(image_dir) if f.endswith(ext)]) - len(self.stems[name])
        self.assertGreaterEqual(left_out, 1)
        self.assertIn(f"{left_out} images without annotation left out", r.stderr)
        self.assertNotIn("unannotated", r.stderr)  # counted, not reported one by one
        m = self.metrics(out)
        self.assertEqual(m["dataset"], name)
        self.assertEqual(m["num_classes"], k)
        self.assertEqual(m["counts"]["images_evaluated"], len(self.stems[name]))
        self.assertEqual(m["counts"]["images_without_annotation"], left_out)
        self.assertEqual(m["skipped"], [])
        # The ensemble weight: the dataset's default, else the bundle's.
        with open(os.path.join(BUNDLE, "manifest.json")) as f:
            bundle_weight = json.load(f)["inference"]["eval"]["ensemble_weight"]
        expected_weight = weight if weight is not None else bundle_weight
        self.assertAlmostEqual(float(m["settings"]["ensemble_weight"]), expected_weight, places=6)
        pairs = []
        for stem in self.stems[name]:
            pred_path = os.path.join(out, "predictions", stem + (".tif" if depth == 16 else ".png"))
            pred = read_label(pred_path)
            gt = read_label(os.path.join(label_dir, stem + label_ext))
            self.assertEqual(pred.shape, gt.shape)
            self.assertTrue((pred < k).all())
            pairs.append((pred, gt))
        e = metrics_from_pairs(pairs, k, ignore)
        for key in HEADLINE_KEYS:
            self.assertEqual(m[key], e[key], key)
        self.assertEqual([c["gt_pixels"] for c in m["per_class"]], e["gt_pixels"])
        self.assertEqual([c["pred_pixels"] for c in m["per_class"]], e["pred_pixels"])
        self.assertEqual(m["counts"]["pixels_ignored"], e["pixels_ignored"])
        image_dir = self.custom_images if name == "custom" else os.path.join(self.root, LAYOUTS[name][0])
        self.check_json(out, image_dir, ".png" if name == "custom" else ".jpg", self.stems[name], [p for p, _ in pairs])
        return m

    def check_json(self, out, image_dir, image_ext, stems, preds):
        """sem_seg_predictions.json decodes back to the saved label maps exactly, in detectron2's form."""
        path = os.path.join(out, "sem_seg_predictions.json")
        with open(path) as f:
            text = f.read()
        records = json.loads(text)
        self.assertEqual(text, json.dumps(records))  # json.dumps' own formatting, byte for byte
        by_file = {}
        for rec in records:
            self.assertEqual(list(rec), ["file_name", "category_id", "segmentation"])
            self.assertEqual(list(rec["segmentation"]), ["size", "counts"])
            by_file.setdefault(rec["file_name"], []).append(rec)
        self.assertEqual(list(by_file), [os.path.join(image_dir, s + image_ext) for s in stems])
        for stem, pred in zip(stems, preds):
            recs = by_file[os.path.join(image_dir, stem + image_ext)]
            cats = [r["category_id"] for r in recs]
            self.assertEqual(cats, sorted(np.unique(pred).tolist()))  # one record per predicted class, ascending
            rebuilt = np.full(pred.shape, -1, dtype=np.int64)
            for r in recs:
                self.assertEqual(r["segmentation"]["size"], list(pred.shape))
                mask = coco_rle.decode(r["segmentation"]).astype(bool)
                self.assertFalse((rebuilt[mask] >= 0).any(), "records overlap")
                rebuilt[mask] = r["category_id"]
                self.assertEqual(coco_rle.encode(pred == r["category_id"])["counts"], r["segmentation"]["counts"])
                if pycocotools_mask is not None:
                    ref = pycocotools_mask.encode(np.asfortranarray((pred == r["category_id"]).astype(np.uint8)))
                    self.assertEqual(ref["counts"].decode(), r["segmentation"]["counts"])
            np.testing.assert_array_equal(rebuilt, pred)

    def test_ade150(self):
        self.check_dataset("ade150")

    def test_ade847(self):
        self.check_dataset("ade847")

    def test_pc59(self):
        m = self.check_dataset("pc59")
        self.assertEqual(m["split"], "val")
        self.assertEqual(m["settings"]["ensemble_weight"], "0.6")

    def test_pc459_16bit_tiff(self):
        self.check_dataset("pc459")

    def test_voc20(self):
        m = self.check_dataset("voc20")
        self.assertEqual(m["settings"]["ensemble_weight"], "0.45")

    def test_custom(self):
        m = self.check_dataset("custom")
        self.assertEqual([c["name"] for c in m["per_class"]][:2], ["sky", "road, route"])
        self.assertEqual(m["settings"]["ignore_label"], str(CUSTOM_IGNORE))

    def test_shards_with_save_json_merge_into_the_single_run_file(self):
        single = os.path.join(self.tmp, "json-single")
        r = self.run_cli(*self.dataset_args("voc20"), "--output", single, "--save-json")
        self.assertEqual(r.returncode, 0, r.stderr)
        shards = []
        for i in range(2):
            out = os.path.join(self.tmp, f"json-shard{i}")
            r = self.run_cli(*self.dataset_args("voc20"), "--output", out, "--save-json", "--shard", f"{i}/2")
            self.assertEqual(r.returncode, 0, r.stderr)
            shards.append(out)
        merged = os.path.join(self.tmp, "json-merged")
        r = subprocess.run(
            [BIN, "eval-merge", "--output", merged, *shards], capture_output=True, text=True, env=self.env, timeout=300
        )
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(single, "sem_seg_predictions.json")) as f:
            want = f.read()
        with open(os.path.join(merged, "sem_seg_predictions.json")) as f:
            self.assertEqual(f.read(), want)
        self.assertGreater(len(json.loads(want)), 0)

    def test_weight_flag_overrides_the_dataset_default(self):
        out = os.path.join(self.tmp, "voc20-w")
        r = self.run_cli(*self.dataset_args("voc20"), "--output", out, "-w", "0.8", "--limit", "1")
        self.assertEqual(r.returncode, 0, r.stderr)
        m = self.metrics(out)
        self.assertEqual(m["settings"]["ensemble_weight"], "0.8")
        self.assertEqual(m["settings"]["ensemble_weight_source"], "--ensemble-weight")

    def test_oracle_masks_on_voc20(self):
        label_dir, label_ext, k, ignore, _, _ = self.layout("voc20")
        out = os.path.join(self.tmp, "oracle-masks")
        r = self.run_cli(*self.dataset_args("voc20"), "--output", out, "--oracle", "masks", "--save-predictions")
        self.assertEqual(r.returncode, 0, r.stderr)
        m = self.metrics(out)
        self.assertEqual(m["settings"]["oracle"], "masks")
        self.assertEqual(m["settings"]["mask_threshold"], "unused (oracle masks)")
        self.assertEqual(m["timing"]["mean_ms_per_image"]["proposals"], 0)  # no MaskFormer pass
        pairs = []
        for stem in self.stems["voc20"]:
            pred = read_label(os.path.join(out, "predictions", stem + ".png"))
            gt = read_label(os.path.join(label_dir, stem + label_ext))
            # Each ground-truth region is one CLIP decision: one predicted class per GT class.
            for c in np.unique(gt[gt != ignore]):
                self.assertEqual(len(np.unique(pred[gt == c])), 1, c)
            self.assertTrue((pred[gt == ignore] == ignore).all())
            pairs.append((np.where(pred == ignore, 65535, pred), gt))  # saved as the ignore value: unlabeled
        e = metrics_from_pairs(pairs, k, ignore)
        for key in HEADLINE_KEYS:
            self.assertEqual(m[key], e[key], key)

    def test_oracle_masks_with_one_class_is_perfect(self):
        classes = os.path.join(self.tmp, "one-class.txt")
        labels = os.path.join(self.tmp, "one-class-labels")
        with open(classes, "w") as f:
            f.write("thing\n")
        for stem in self.stems["custom"]:
            gt = read_label(os.path.join(self.custom_labels, stem + ".png"))
            save_label(os.path.join(labels, stem + ".png"), np.where(gt == CUSTOM_IGNORE, 255, 0), 8)
        out = os.path.join(self.tmp, "oracle-one")
        r = self.run_cli(
            "--dataset",
            "custom",
            "--images",
            self.custom_images,
            "--labels",
            labels,
            "--classes-file",
            classes,
            "--image-ext",
            "png",
            "--oracle",
            "masks",
            "--output",
            out,
        )
        self.assertEqual(r.returncode, 0, r.stderr)
        m = self.metrics(out)
        self.assertEqual(m["mIoU"], 100.0)
        self.assertEqual(m["pACC"], 100.0)

    def test_oracle_labels_on_pc59(self):
        label_dir, label_ext, k, ignore, _, _ = self.layout("pc59")
        out = os.path.join(self.tmp, "oracle-labels")
        r = self.run_cli(*self.dataset_args("pc59"), "--output", out, "--oracle", "labels", "--save-predictions")
        self.assertEqual(r.returncode, 0, r.stderr)
        m = self.metrics(out)
        self.assertEqual(m["settings"]["oracle"], "labels")
        self.assertEqual(m["settings"]["ensemble_weight"], "unused (oracle labels)")
        self.assertEqual(m["settings"]["mask_threshold"], "0.4")
        pairs = []
        for stem in self.stems["pc59"]:
            pred = read_label(os.path.join(out, "predictions", stem + ".png"))
            gt = read_label(os.path.join(label_dir, stem + label_ext))
            # Every proposal is labelled from the ground truth: only its classes can be predicted.
            self.assertTrue(set(np.unique(pred).tolist()) <= set(np.unique(gt[gt != ignore]).tolist()))
            pairs.append((pred, gt))
        e = metrics_from_pairs(pairs, k, ignore)
        for key in HEADLINE_KEYS:
            self.assertEqual(m[key], e[key], key)
        r = self.run_cli(*self.dataset_args("pc59"), "--output", out + "-demo", "--oracle", "labels", "--mode", "demo")
        self.assertEqual(r.returncode, 2)
        self.assertIn("--mode demo", r.stderr)

    def test_usage_errors(self):
        out = os.path.join(self.tmp, "bad")
        for args, needle in [
            (["--dataset", "custom", "--images", self.custom_images, "--labels", self.custom_labels], "--classes-file"),
            (["--dataset", "pc59"], "--root"),
            (["--dataset", "pc59", "--root", self.root, "--ignore-label", "3"], "custom only"),
            (self.custom_args()[:-4] + ["--ignore-label", "3"], "class index"),
        ]:
            r = self.run_cli(*args, "--output", out)
            self.assertEqual(r.returncode, 2, (args, r.stderr))
            self.assertIn(needle, r.stderr)


if __name__ == "__main__":
    unittest.main()
