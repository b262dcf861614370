"""End-to-end tests of `ovseg segment` (and the top-level flags), driving the built binary.

Environment (set by ctest): OVSEG_BIN = the built `ovseg`; OVSEG_TEST_BUNDLE_DIR = where the
`export_fixture_bundles` fixture wrote the bundles (tiny_swin_vit is used); OVSEG_SHARED_DIR =
the reference material (default <repo>/../shared/ovseg). Every test is skipped with a message
when one of them is absent.
"""
import json
import os
import shutil
import subprocess
import tempfile
import unittest

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get("OVSEG_SHARED_DIR") or os.path.join(HERE, "..", "..", "..", "shared", "ovseg")
FIXTURE = os.path.join(SHARED, "fixtures", "tiny_swin_vit")
BIN = os.environ.get("OVSEG_BIN", "")
BUNDLE = os.path.join(os.environ.get("OVSEG_TEST_BUNDLE_DIR", ""), "tiny_swin_vit")
THREADS = "1"  # the test machine is shared (and OpenMP spin-waits badly when oversubscribed)
# Text features are cached on disk between runs: keep that cache out of the user's home.
CACHE_DIR = tempfile.mkdtemp(prefix="ovseg_cli_cache_")


def tearDownModule():
    shutil.rmtree(CACHE_DIR, ignore_errors=True)


def fixture_classes():
    with open(os.path.join(FIXTURE, "classes.txt"), encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def run(*args, stdin=None, cwd=None, env=None):
    env = dict(os.environ, OVSEG_CACHE_DIR=CACHE_DIR, **(env or {}))
    return subprocess.run([BIN, *args], input=stdin, capture_output=True, text=True, cwd=cwd, env=env, timeout=900)


def require(test_case, need_bundle=True):
    if not BIN or not os.access(BIN, os.X_OK):
        test_case.skipTest("OVSEG_BIN is not set to the built ovseg binary")
    if need_bundle:
        if not os.path.isfile(os.path.join(FIXTURE, "image.png")):
            test_case.skipTest(f"reference fixture not found: {FIXTURE} (set OVSEG_SHARED_DIR)")
        if not os.path.isfile(os.path.join(BUNDLE, "manifest.json")):
            test_case.skipTest(
                f"test bundle not found: {BUNDLE} (ctest's export_fixture_bundles writes it; "
                "set OVSEG_TEST_BUNDLE_DIR)"
            )


def make_inputs(directory):
    """The batch of the issue: a good photo, a corrupt file, greyscale, EXIF-rotated JPEG, RGBA PNG.
    Returns {stem: expected (width, height) after decoding}."""
    os.makedirs(directory, exist_ok=True)
    shutil.copyfile(os.path.join(FIXTURE, "image.png"), os.path.join(directory, "image.png"))
    photo = Image.open(os.path.join(FIXTURE, "image.png")).convert("RGB")
    with open(os.path.join(directory, "corrupt.jpg"), "wb") as f:
        f.write(b"\xff\xd8\xff\xe0 this is not really a JPEG" + bytes(range(256)))
    photo.convert("L").resize((150, 100)).save(os.path.join(directory, "grey.png"))
    # Stored 120 wide x 80 tall; orientation 6 = rotate 90° clockwise to display → 80 x 120.
    exif = Image.Exif()
    exif[0x0112] = 6
    photo.resize((120, 80)).save(os.path.join(directory, "rotated.jpg"), quality=92, exif=exif)
    rgba = photo.resize((90, 70)).convert("RGBA")
    alpha = np.full((70, 90), 255, np.uint8)
    alpha[:, :45] = 0  # transparent half: must be ignored, not composited
    rgba.putalpha(Image.fromarray(alpha))
    rgba.save(os.path.join(directory, "alpha.png"))
    return {"image": photo.size, "grey": (150, 100), "rotated": (80, 120), "alpha": (90, 70)}


class SegmentBatchTest(unittest.TestCase):
    """One run over the mixed batch, checked from every side."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="ovseg_cli_")
        cls.inputs = os.path.join(cls.tmp, "in")
        cls.out = os.path.join(cls.tmp, "out")
        cls.proc = None
        if not BIN or not os.path.isfile(os.path.join(BUNDLE, "manifest.json")) or not os.path.isdir(FIXTURE):
            return
        cls.expected = make_inputs(cls.inputs)
        cls.class_file = os.path.join(cls.tmp, "classes.txt")
        with open(cls.class_file, "w", encoding="utf-8") as f:
            f.write("# the fixture's classes, one per line\n\n")
            for name in fixture_classes():
                f.write(f"  {name}\n")
            f.write("\n# end\n")
        cls.proc = run(
            "segment",
            "--model",
            BUNDLE,
            "--classes-file",
            cls.class_file,
            "--overlay",
            "--json",
            "--save-scores",
            "--threads",
            THREADS,
            "--output",
            cls.out,
            cls.inputs,
        )

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        require(self)
        self.assertIsNotNone(self.proc)

    def test_exit_code_and_summary_name_the_corrupt_file(self):
        self.assertEqual(self.proc.returncode, 1, self.proc.stderr)
        err = self.proc.stderr
        self.assertIn("5 images, 1 failed", err)
        self.assertIn("images/s", err)
        # The failure list: one indented line per failed input, naming it and the reason.
        start = err.index("1 of 5 images failed")
        failed_lines = [ln for ln in err[start:].splitlines()[1:] if ln.startswith("  ")]
        self.assertEqual(len(failed_lines), 1, err)
        self.assertIn(os.path.join(self.inputs, "corrupt.jpg"), failed_lines[0])
        self.assertGreater(len(failed_lines[0].split("corrupt.jpg", 1)[1].strip(": ")), 5, "no reason given")
        self.assertFalse(os.path.exists(os.path.join(self.out, "corrupt.png")))

    def test_no_temporary_files_left(self):
        leftovers = [n for n in os.listdir(self.out) if ".tmp" in n]
        self.assertEqual(leftovers, [])

    def test_label_maps_have_the_decoded_size_and_8_bits(self):
        for stem, size in self.expected.items():
            with Image.open(os.path.join(self.out, stem + ".png")) as im:
                self.assertEqual(im.size, size, stem)
                self.assertEqual(im.mode, "L", stem)  # 8 classes → 8-bit
                values = np.unique(np.asarray(im))
            self.assertTrue(np.all(values < len(fixture_classes())), (stem, values))

    def test_scores_match_label_map(self):
        k = len(fixture_classes())
        for stem, (w, h) in self.expected.items():
            scores = np.load(os.path.join(self.out, stem + ".scores.npy"))
            self.assertEqual(scores.dtype, np.float32)
            self.assertEqual(scores.shape, (k, h, w), stem)
            labels = np.asarray(Image.open(os.path.join(self.out, stem + ".png")))
            np.testing.assert_array_equal(labels, scores.argmax(axis=0), err_msg=stem)

    def test_scores_equal_the_reference_for_the_fixture_image(self):
        ref = np.load(os.path.join(FIXTURE, "eval", "sem_seg.npy"))
        ours = np.load(os.path.join(self.out, "image.scores.npy"))
        self.assertEqual(ours.shape, ref.shape)
        np.testing.assert_allclose(ours, ref, rtol=0, atol=1e-4)
        # The label map is the reference's argmax except where its two best scores nearly tie.
        labels = np.asarray(Image.open(os.path.join(self.out, "image.png"))).astype(np.int64)
        top2 = np.sort(ref, axis=0)[-2:]
        decided = (top2[1] - top2[0]) > 2e-4
        np.testing.assert_array_equal(labels[decided], ref.argmax(axis=0)[decided])

    def test_json_reports(self):
        classes = fixture_classes()
        for stem, (w, h) in self.expected.items():
            with open(os.path.join(self.out, stem + ".json"), encoding="utf-8") as f:
                rep = json.load(f)
            self.assertEqual(rep["width"], w)
            self.assertEqual(rep["height"], h)
            self.assertEqual(os.path.dirname(os.path.abspath(rep["input"])), os.path.abspath(self.inputs))
            self.assertEqual(os.path.splitext(os.path.basename(rep["input"]))[0], stem)
            self.assertEqual(rep["classes"], classes)
            self.assertEqual(rep["mode"], "eval")
            self.assertEqual(rep["device"], "cpu")
            self.assertEqual(rep["precision"], "fp32")
            with open(os.path.join(BUNDLE, "manifest.json"), encoding="utf-8") as f:
                self.assertEqual(rep["model"]["name"], json.load(f)["name"])
            self.assertEqual(rep["label_map"]["bit_depth"], 8)
            self.assertEqual(rep["label_map"]["unlabeled_value"], 255)
            # Pixel shares agree with the label map on disk.
            labels = np.asarray(Image.open(os.path.join(self.out, stem + ".png")))
            counts = np.bincount(labels.ravel(), minlength=256)
            listed = {e["index"]: e for e in rep["pixel_share"]}
            for c in range(len(classes)):
                if counts[c]:
                    self.assertEqual(listed[c]["pixels"], counts[c])
                    self.assertEqual(listed[c]["class"], classes[c])
                    self.assertAlmostEqual(listed[c]["share"], counts[c] / (w * h), places=6)
                else:
                    self.assertNotIn(c, listed)
            self.assertEqual(rep["unlabeled"]["pixels"], counts[255])
            self.assertTrue(rep["segments"], stem)
            for s in rep["segments"]:
                self.assertEqual(s["class"], classes[s["class_index"]])
                self.assertTrue(0.0 <= s["score"] <= 1.0)
                x0, y0, x1, y1 = s["box"]
                self.assertTrue(0 <= x0 < x1 <= w and 0 <= y0 < y1 <= h, s)
                # A region can be valid at the resized size yet cover no pixel at the original one.
                self.assertTrue(0 <= s["area"] <= (x1 - x0) * (y1 - y0), s)
            for key in ("proposals", "clip", "segment_total"):
                self.assertGreaterEqual(rep["timings_ms"][key], 0.0)
            self.assertGreater(rep["timings_ms"]["segment_total"], 0.0)

    def test_json_segments_of_fixture_image_match_reference_region_count(self):
        with open(os.path.join(FIXTURE, "eval", "meta.json"), encoding="utf-8") as f:
            meta = json.load(f)
        with open(os.path.join(self.out, "image.json"), encoding="utf-8") as f:
            rep = json.load(f)
        self.assertEqual(len(rep["segments"]), meta["num_valid_regions"])
        self.assertEqual([rep["resized"]["height"], rep["resized"]["width"]], meta["resized_size_hw"])

    def test_overlays(self):
        for stem, (w, h) in self.expected.items():
            with Image.open(os.path.join(self.out, stem + ".overlay.png")) as im:
                self.assertEqual(im.mode, "RGB")
                ow, oh = im.size
                im.load()  # the whole overlay decodes
            self.assertGreater(ow, w)  # the legend panel
            self.assertGreaterEqual(oh, h)
            if h >= 300:
                self.assertEqual(oh, h)
        # Away from boundaries and text, the image part is the blend of the photo (60 %) and a colour
        # (40 %, the tint) that is the same wherever the class is the same.
        photo = np.asarray(Image.open(os.path.join(self.inputs, "image.png")).convert("RGB")).astype(np.int32)
        labels = np.asarray(Image.open(os.path.join(self.out, "image.png")))
        h, w = labels.shape
        part = np.asarray(Image.open(os.path.join(self.out, "image.overlay.png")).convert("RGB")).astype(np.int32)
        part = part[:h, :w]
        colour2 = (100 * part - 60 * photo) / 40.0  # = class colour (±1.25) where the pixel is a plain blend
        for c in np.unique(labels):
            ys, xs = np.nonzero(labels == c)
            if len(ys) < 500:
                continue
            med = np.median(colour2[ys, xs], axis=0)
            close = np.all(np.abs(colour2[ys, xs] - med) <= 3, axis=1)
            self.assertGreater(close.mean(), 0.6, f"class {c}: overlay is not a blend with one colour")


class SegmentOptionsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="ovseg_cli_opts_")
        cls.image = os.path.join(cls.tmp, "photo.png")
        if os.path.isfile(os.path.join(FIXTURE, "image.png")):
            Image.open(os.path.join(FIXTURE, "image.png")).convert("RGB").resize((120, 100)).save(cls.image)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        require(self)

    def out_dir(self, name):
        return os.path.join(self.tmp, name)

    def test_many_classes_give_a_16_bit_label_map(self):
        class_file = os.path.join(self.tmp, "many.txt")
        names = [f"thing number {i}" for i in range(300)]
        with open(class_file, "w", encoding="utf-8") as f:
            f.write("\n".join(names) + "\n")
        out = self.out_dir("many")
        p = run("segment", "-m", BUNDLE, "-f", class_file, "-j", THREADS, "-o", out, "--json", self.image)
        self.assertEqual(p.returncode, 0, p.stderr)
        with Image.open(os.path.join(out, "photo.png")) as im:
            self.assertIn(im.mode, ("I;16", "I;16B", "I"))
            self.assertEqual(im.size, (120, 100))
            values = np.asarray(im).astype(np.int64)
        self.assertTrue(np.all(values < 300))
        with open(os.path.join(out, "photo.json"), encoding="utf-8") as f:
            rep = json.load(f)
        self.assertEqual(rep["label_map"]["bit_depth"], 16)
        self.assertEqual(rep["label_map"]["unlabeled_value"], 65535)
        self.assertEqual(len(rep["classes"]), 300)

    def test_demo_mode_with_one_class_marks_unlabeled_255(self):
        out = self.out_dir("demo")
        p = run(
            "segment",
            "-m",
            BUNDLE,
            "-c",
            " sky ",
            "--mode",
            "demo",
            "-s",
            "--json",
            "-j",
            THREADS,
            "-o",
            out,
            self.image,
        )
        self.assertEqual(p.returncode, 0, p.stderr)
        labels = np.asarray(Image.open(os.path.join(out, "photo.png")))
        self.assertTrue(set(np.unique(labels).tolist()) <= {0, 255}, np.unique(labels))
        scores = np.load(os.path.join(out, "photo.scores.npy"))
        self.assertEqual(scores.shape, (2, 100, 120))  # the reference appends "others"
        with open(os.path.join(out, "photo.json"), encoding="utf-8") as f:
            rep = json.load(f)
        self.assertEqual(rep["classes"], ["sky"])
        self.assertEqual(rep["score_classes"], ["sky", "others"])
        self.assertEqual(rep["mode"], "demo")
        self.assertEqual(rep["unlabeled"]["pixels"], int((labels == 255).sum()))

    def test_preset_and_threshold(self):
        with open(os.path.join(SHARED, "class_lists.json"), encoding="utf-8") as f:
            voc = json.load(f)["voc20"]
        out = self.out_dir("preset")
        p = run(
            "segment",
            "-m",
            BUNDLE,
            "--dataset-classes",
            "voc20",
            "--mask-threshold",
            "0.3",
            "--ensemble-weight",
            "0.5",
            "--json",
            "-j",
            THREADS,
            "-o",
            out,
            self.image,
        )
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNotIn("deprecated", p.stderr)
        with open(os.path.join(out, "photo.json"), encoding="utf-8") as f:
            rep = json.load(f)
        self.assertEqual(rep["classes"], [c.strip() for c in voc])
        self.assertAlmostEqual(rep["mask_threshold"], 0.3, places=6)
        self.assertAlmostEqual(rep["ensemble_weight"], 0.5, places=6)

    def test_unicode_names_and_stdin_list_and_recursion(self):
        tree = os.path.join(self.tmp, "tree")
        os.makedirs(os.path.join(tree, "sub", "deeper"), exist_ok=True)
        shutil.copyfile(self.image, os.path.join(tree, "top.png"))
        shutil.copyfile(self.image, os.path.join(tree, "sub", "deeper", "low.png"))
        with open(os.path.join(tree, "notes.txt"), "w") as f:
            f.write("not an image, not an input")
        names = "ciel, árbol ,красный автомобиль,草"
        out = self.out_dir("unicode")
        p = run("segment", "-m", BUNDLE, "-c", names, "--json", "-r", "-j", THREADS, "-o", out, tree)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertTrue(os.path.isfile(os.path.join(out, "top.png")))
        self.assertTrue(os.path.isfile(os.path.join(out, "sub", "deeper", "low.png")))
        self.assertFalse(os.path.exists(os.path.join(out, "notes.png")))
        with open(os.path.join(out, "sub", "deeper", "low.json"), encoding="utf-8") as f:
            self.assertEqual(json.load(f)["classes"], ["ciel", "árbol", "красный автомобиль", "草"])
        # Without --recursive only the top level; "-" reads paths from stdin.
        out2 = self.out_dir("flat")
        p = run("segment", "-m", BUNDLE, "-c", "sky,tree", "-j", THREADS, "-o", out2, tree)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(sorted(os.listdir(out2)), ["top.png"])
        out3 = self.out_dir("stdin")
        listing = f"{os.path.join(tree, 'sub', 'deeper', 'low.png')}\n\n{self.image}\n"
        p = run("segment", "-m", BUNDLE, "-c", "sky,tree", "-j", THREADS, "-o", out3, "-", stdin=listing)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertEqual(sorted(os.listdir(out3)), ["low.png", "photo.png"])

    def test_skip_existing(self):
        out = self.out_dir("skip")
        p = run("segment", "-m", BUNDLE, "-c", "sky,tree", "-j", THREADS, "-o", out, self.image)
        self.assertEqual(p.returncode, 0, p.stderr)
        label = os.path.join(out, "photo.png")
        before = os.stat(label).st_mtime_ns
        p = run("segment", "-m", BUNDLE, "-c", "sky,tree", "-j", THREADS, "-o", out, "--skip-existing", self.image)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("1 skipped", p.stderr)
        self.assertEqual(os.stat(label).st_mtime_ns, before)
        # A new image beside a finished one: only the new one is segmented.
        other = os.path.join(self.tmp, "second.png")
        shutil.copyfile(self.image, other)
        p = run(
            "segment", "-m", BUNDLE, "-c", "sky,tree", "-j", THREADS, "-o", out, "--skip-existing", self.image, other
        )
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("1 images, 0 failed, 1 skipped", p.stderr)
        self.assertEqual(os.stat(label).st_mtime_ns, before)
        self.assertTrue(os.path.isfile(os.path.join(out, "second.png")))

    def test_shards_split_a_folder_over_sorted_relative_paths(self):
        src = os.path.join(self.tmp, "shard_inputs")
        rels = ["b/x.png", "a/x.png", "c.png"]  # sorted output names: a/x, b/x, c
        for r in rels:
            os.makedirs(os.path.dirname(os.path.join(src, r)), exist_ok=True)
            shutil.copyfile(self.image, os.path.join(src, r))
        out = self.out_dir("shards")
        p = run("segment", "-m", BUNDLE, "-c", "sky,tree", "-j", THREADS, "-o", out, "-r", "--shard", "0/2", src)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("2 images, 0 failed, 0 skipped", p.stderr)
        self.assertEqual(sorted(os.listdir(out)), ["a", "c.png"])  # positions 0 and 2
        # Shard 1 of 2 as a Kubernetes Indexed Job's pod would run it.
        env = {"JOB_COMPLETION_INDEX": "1", "OVSEG_SHARD_COUNT": "2"}
        p = run(
            "segment",
            "-m",
            BUNDLE,
            "-c",
            "sky,tree",
            "-j",
            THREADS,
            "-o",
            out,
            "-r",
            "--skip-existing",
            "--shard",
            "auto",
            src,
            env=env,
        )
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("1 images, 0 failed, 0 skipped", p.stderr)
        self.assertEqual(sorted(os.listdir(os.path.join(out, "b"))), ["x.png"])
        # A rerun of a finished shard skips everything (and loads no model).
        p = run("segment", "-m", BUNDLE, "-c", "sky,tree", "-o", out, "-r", "--skip-existing", "--shard", "0/2", src)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("0 images, 0 failed, 2 skipped", p.stderr)
        p = run(
            "segment",
            "-m",
            BUNDLE,
            "-c",
            "sky,tree",
            "-o",
            out,
            "-r",
            "--shard",
            "auto",
            src,
            env={"JOB_COMPLETION_INDEX": "1"},
        )
        self.assertEqual(p.returncode, 2)
        self.assertIn("--shards N", p.stderr)

    def test_missing_input_fails_only_that_input(self):
        out = self.out_dir("missing")
        missing = os.path.join(self.tmp, "no_such_image.jpg")
        p = run("segment", "-m", BUNDLE, "-c", "sky,tree", "-j", THREADS, "-o", out, missing, self.image)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("no_such_image.jpg", p.stderr)
        self.assertTrue(os.path.isfile(os.path.join(out, "photo.png")))


class UsageErrorTest(unittest.TestCase):
    """Usage and model errors exit 2 with a message, before any output is written."""

    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="ovseg_cli_usage_")
        cls.image = os.path.join(cls.tmp, "a.png")
        Image.new("RGB", (32, 24), (10, 200, 30)).save(cls.image)
        cls.out = os.path.join(cls.tmp, "out")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        require(self)

    def assert_usage(self, args, *needles, stdin=None, code=2):
        p = run("segment", *args, stdin=stdin)
        self.assertEqual(p.returncode, code, f"args={args}\nstdout={p.stdout}\nstderr={p.stderr}")
        for n in needles:
            self.assertIn(n, p.stderr)
        self.assertFalse(os.path.exists(os.path.join(self.out, "a.png")))
        return p

    def test_no_classes(self):
        self.assert_usage(["-m", BUNDLE, "-o", self.out, self.image], "--classes")

    def test_duplicate_class(self):
        self.assert_usage(["-m", BUNDLE, "-c", "sky,tree,sky", "-o", self.out, self.image], "duplicate", "sky")

    def test_duplicate_class_in_file_names_the_line(self):
        f = os.path.join(self.tmp, "dup.txt")
        with open(f, "w", encoding="utf-8") as fh:
            fh.write("# c\nsky\ntree\n\nSky\n")
        self.assert_usage(["-m", BUNDLE, "-f", f, "-o", self.out, self.image], "dup.txt:5", "duplicate")

    def test_empty_class_entry(self):
        self.assert_usage(["-m", BUNDLE, "-c", "sky,,tree", "-o", self.out, self.image], "empty")

    def test_unknown_preset(self):
        self.assert_usage(["-m", BUNDLE, "--preset", "nosuchset", "-o", self.out, self.image], "nosuchset", "ade150")

    def test_two_class_sources(self):
        self.assert_usage(["-m", BUNDLE, "-c", "sky", "--preset", "voc20", "-o", self.out, self.image])
        self.assert_usage(["-m", BUNDLE, "-p", "voc20", "--preset", "voc20", "-o", self.out, self.image])

    def test_missing_model(self):
        missing = os.path.join(self.tmp, "no_bundle_here")
        # Exit 3: the model could not be loaded (not a usage error).
        self.assert_usage(["-m", missing, "-c", "sky", "-o", self.out, self.image], "no_bundle_here")

    def test_bad_option_values(self):
        self.assert_usage(["-m", BUNDLE, "-c", "sky", "--mode", "fast", "-o", self.out, self.image], "mode")
        self.assert_usage(["-m", BUNDLE, "-c", "sky", "--mask-threshold", "1.5", "-o", self.out, self.image])
        self.assert_usage(["-m", BUNDLE, "-c", "sky", "--device", "tpu", "-o", self.out, self.image], "tpu")

    def test_outputs_that_collide(self):
        d = os.path.join(self.tmp, "collide")
        os.makedirs(d, exist_ok=True)
        Image.new("RGB", (16, 16)).save(os.path.join(d, "same.png"))
        Image.new("RGB", (16, 16)).save(os.path.join(d, "same.jpg"))
        self.assert_usage(["-m", BUNDLE, "-c", "sky", "-o", self.out, d], "same.png", "same.jpg")

    def test_output_that_would_overwrite_an_input(self):
        d = os.path.join(self.tmp, "inplace")
        os.makedirs(d, exist_ok=True)
        Image.new("RGB", (16, 16)).save(os.path.join(d, "pic.png"))
        p = run("segment", "-m", BUNDLE, "-c", "sky", "-o", d, d)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("overwrite", p.stderr)
        with Image.open(os.path.join(d, "pic.png")) as im:
            self.assertEqual(im.mode, "RGB")

    def test_no_images_found(self):
        d = os.path.join(self.tmp, "empty_dir")
        os.makedirs(d, exist_ok=True)
        self.assert_usage(["-m", BUNDLE, "-c", "sky", "-o", self.out, d], "no images")


class TopLevelTest(unittest.TestCase):
    def setUp(self):
        require(self, need_bundle=False)

    def test_version(self):
        p = run("--version")
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertRegex(p.stdout + p.stderr, r"ovseg \d+\.\d+\.\d+")

    def test_help_lists_subcommands(self):
        p = run("--help")
        self.assertEqual(p.returncode, 0, p.stderr)
        for sub in ("segment", "info", "eval", "tokenize"):
            self.assertIn(sub, p.stdout)

    def test_segment_help_shows_examples_and_defaults(self):
        p = run("segment", "--help")
        self.assertEqual(p.returncode, 0, p.stderr)
        for needle in (
            "Examples",
            "--classes-file",
            "--dataset-classes",
            "--overlay",
            "--skip-existing",
            "Exit codes",
            "65535",
        ):
            self.assertIn(needle, p.stdout)

    def test_no_subcommand_is_a_usage_error(self):
        self.assertEqual(run().returncode, 2)


if __name__ == "__main__":
    unittest.main()
