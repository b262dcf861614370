"""Tests of the Python module `ovseg` (python/), run by ctest: `python3 test_python_module.py`.

Environment (set by ctest): PYTHONPATH = the build tree's python/ (the package), OVSEG_BIN = the
built CLI, OVSEG_TEST_BUNDLE_DIR = the bundles of the `export_fixture_bundles` fixture,
OVSEG_SHARED_DIR = the reference material. Exits 77 (ctest "skipped") when the shared fixture or
its bundle is absent.

Most tests use a fast copy of the fixture bundle (`small`: the same modules, a manifest with a
64-pixel test size, ~50 ms a call); the CLI comparison uses the bundle as exported.
"""
import gc
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import unittest

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get("OVSEG_SHARED_DIR") or os.path.join(HERE, "..", "..", "..", "shared", "ovseg")
FIXTURE = os.path.join(SHARED, "fixtures", "tiny_swin_vit")
IMAGE = os.path.join(FIXTURE, "image.png")
VOCAB = os.path.join(SHARED, "bpe_simple_vocab_16e6.txt.gz")
BUNDLE = os.path.join(os.environ.get("OVSEG_TEST_BUNDLE_DIR", ""), "tiny_swin_vit")
BIN = os.environ.get("OVSEG_BIN", "")
THREADS = 1  # as the CLI tests: the machine is shared, and equal thread counts give equal sums

import ovseg  # noqa: E402  (PYTHONPATH set by ctest)

# Made in setUpModule (never at import: a skipped run leaves nothing behind).
TMP = CACHE = SMALL = None
_models = {}


def _missing_reference():
    return [p for p in (IMAGE, VOCAB, os.path.join(BUNDLE, "manifest.json")) if not os.path.isfile(p)]


def setUpModule():
    global TMP, CACHE, SMALL
    # However the module is started (ctest, unittest, pytest): without the reference, every test skips.
    missing = _missing_reference()
    if missing:
        raise unittest.SkipTest(
            f"not found: {', '.join(missing)} (the shared fixture, or its bundle "
            "from ctest's export_fixture_bundles)"
        )
    TMP = tempfile.mkdtemp(prefix="ovseg_py_")
    CACHE = os.path.join(TMP, "cache")
    SMALL = os.path.join(TMP, "small_bundle")
    ovseg.set_log_level("warn")
    # The fast bundle: links to the exported modules, the manifest with a 64-pixel test size.
    os.makedirs(SMALL)
    for name in os.listdir(BUNDLE):
        if name != "manifest.json":
            os.symlink(os.path.join(BUNDLE, name), os.path.join(SMALL, name))
    with open(os.path.join(BUNDLE, "manifest.json"), encoding="utf-8") as f:
        manifest = json.load(f)
    manifest["preprocess"]["min_size_test"] = 64
    manifest["preprocess"]["max_size_test"] = 64
    with open(os.path.join(SMALL, "manifest.json"), "w", encoding="utf-8") as f:
        json.dump(manifest, f)


def tearDownModule():
    _models.clear()
    if TMP:
        shutil.rmtree(TMP, ignore_errors=True)


def model(which="small"):
    if which not in _models:
        _models[which] = ovseg.Model.load(SMALL if which == "small" else BUNDLE, threads=THREADS, cache_dir=CACHE)
    return _models[which]


def fixture_classes():
    with open(os.path.join(FIXTURE, "classes.txt"), encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


def rss_mib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024.0
    raise RuntimeError("no VmRSS")


class CliParityTest(unittest.TestCase):
    """labels and scores from Python equal the CLI's files byte for byte (eval and demo)."""

    @classmethod
    def setUpClass(cls):
        cls.out = os.path.join(TMP, "cli")
        cls.classes_file = os.path.join(TMP, "classes.txt")
        with open(cls.classes_file, "w", encoding="utf-8") as f:
            f.write("\n".join(fixture_classes()) + "\n")

    def run_cli(self, mode, out):
        env = dict(os.environ, OVSEG_CACHE_DIR=CACHE)
        p = subprocess.run(
            [
                BIN,
                "segment",
                "--model",
                BUNDLE,
                "--classes-file",
                self.classes_file,
                "--mode",
                mode,
                "--save-scores",
                "--json",
                "--threads",
                str(THREADS),
                "-q",
                "--output",
                out,
                IMAGE,
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=900,
        )
        self.assertEqual(p.returncode, 0, p.stderr)
        labels = np.asarray(Image.open(os.path.join(out, "image.png")))
        scores = np.load(os.path.join(out, "image.scores.npy"))
        with open(os.path.join(out, "image.json"), encoding="utf-8") as f:
            report = json.load(f)
        return labels, scores, report

    def check(self, mode):
        if not BIN or not os.access(BIN, os.X_OK):
            self.skipTest("OVSEG_BIN is not set to the built ovseg binary")
        labels, scores, report = self.run_cli(mode, os.path.join(self.out, mode))
        r = model("full").segment(IMAGE, fixture_classes(), mode=mode, keep_scores=True)
        self.assertEqual(r.labels.dtype, np.uint16)
        self.assertEqual(r.labels.shape, (r.height, r.width))
        self.assertEqual(labels.shape, r.labels.shape)
        # The CLI's 8-bit map writes UNLABELED as 255.
        ours = np.where(r.labels == ovseg.UNLABELED, 255, r.labels).astype(np.uint8)
        self.assertEqual(ours.tobytes(), labels.tobytes())
        self.assertEqual(r.scores.dtype, np.float32)
        self.assertEqual(r.scores.shape, scores.shape)
        self.assertEqual(r.scores.tobytes(), scores.tobytes())
        # The rest of the result agrees with the CLI's report.
        self.assertEqual(r.classes, report["classes"])
        self.assertEqual(r.mode, report["mode"])
        self.assertAlmostEqual(r.mask_threshold, report["mask_threshold"], places=6)
        self.assertAlmostEqual(r.ensemble_weight, report["ensemble_weight"], places=6)
        self.assertEqual(len(r.segments), len(report["segments"]))
        for s, js in zip(r.segments, report["segments"]):
            self.assertEqual(
                (s.query, s.class_index, s.class_name, s.area, list(s.box)),
                (js["query"], js["class_index"], js["class"], js["area"], js["box"]),
            )
            self.assertAlmostEqual(s.score, js["score"], places=5)
        self.assertEqual(r.unlabeled_pixels, report["unlabeled"]["pixels"])
        self.assertEqual(r.resized_size, (report["resized"]["width"], report["resized"]["height"]))
        # A decoded array gives the same bytes as the path.
        r2 = model("full").segment(ovseg.load_image(IMAGE), fixture_classes(), mode=mode)
        self.assertEqual(r2.labels.tobytes(), r.labels.tobytes())

    def test_eval(self):
        self.check("eval")

    def test_demo(self):
        self.check("demo")


class ResultTest(unittest.TestCase):
    def test_fields_and_views(self):
        m = model()
        classes = ["sky", "tree", "road"]
        r = m.segment(IMAGE, classes, keep_scores=True)
        with Image.open(IMAGE) as im:
            self.assertEqual((r.width, r.height), im.size)
        self.assertEqual(r.classes, classes)
        self.assertEqual(r.score_classes, classes)
        self.assertEqual(r.scores.shape, (3, r.height, r.width))
        # Views of the result's buffer (no copy): two accesses share memory, the result is the base.
        self.assertTrue(np.shares_memory(r.labels, r.labels))
        self.assertFalse(r.labels.flags["OWNDATA"])
        labels = r.labels
        counts = np.bincount(labels.ravel().astype(np.int64), minlength=3)[:3]
        self.assertEqual(list(r.class_pixels), list(counts))
        self.assertEqual(r.class_pixels.sum() + r.unlabeled_pixels, r.width * r.height)
        # The arrays keep the result alive after the Result object is dropped.
        scores = r.scores
        expected = labels.copy()
        del r
        gc.collect()
        junk = [np.full(10000, 7, np.uint16) for _ in range(100)]  # reuse freed memory, if any
        self.assertTrue(np.array_equal(labels, expected))
        self.assertEqual(scores.shape[0], 3)
        del junk
        self.assertEqual(
            set(m.segment(IMAGE, classes).timings),
            {"preprocess", "proposals", "text", "regions", "clip", "post", "total"},
        )

    def test_effective_settings(self):
        m = model()
        info = m.info
        r = m.segment(IMAGE, ["sky", "tree"])
        self.assertIsNone(r.scores)
        self.assertEqual(
            (r.mode, r.mask_threshold, r.ensemble_weight), ("eval", info.eval_mask_threshold, info.eval_ensemble_weight)
        )
        r = m.segment(IMAGE, ["sky", "tree"], mode="demo", mask_threshold=0.25, ensemble_weight=0.5)
        self.assertEqual((r.mode, r.mask_threshold, r.ensemble_weight), ("demo", 0.25, 0.5))
        r = m.segment(IMAGE, ["sky"], mode="demo", keep_scores=True)
        self.assertEqual(r.score_classes, ["sky", "others"])
        self.assertEqual(r.scores.shape[0], 2)

    def test_info_text_features_tokenize(self):
        m = model("full")
        info = m.info
        self.assertEqual(info.manifest["name"], info.name)
        self.assertEqual(info.bundle_dir.rstrip("/"), BUNDLE.rstrip("/"))
        classes = fixture_classes()
        tf = m.text_features(classes)
        self.assertEqual(tf.dtype, np.float32)
        self.assertEqual(tf.shape, (len(classes) + 1, info.embed_dim))
        ref = np.load(os.path.join(FIXTURE, "eval", "text_features.npy"))
        self.assertLess(float(np.abs(tf - ref.reshape(tf.shape)).max()), 1e-5)
        # tokenize: as `ovseg tokenize --model` (CLIP ids, start/end tokens), padded like clip.tokenize
        texts = ["a photo of a dog.", "Red car"]
        ids = ovseg.tokenize(texts, BUNDLE)
        self.assertEqual(ids.shape, (2, 77))
        self.assertEqual(ids.dtype, np.int32)
        if BIN:
            p = subprocess.run(
                [BIN, "tokenize", "--model", BUNDLE],
                input="\n".join(texts) + "\n",
                capture_output=True,
                text=True,
                timeout=120,
            )
            self.assertEqual(p.returncode, 0, p.stderr)
            for row, line in zip(ids, p.stdout.splitlines()):
                cli = json.loads(line)
                self.assertEqual(list(row[: len(cli)]), cli)
                self.assertTrue((row[len(cli) :] == 0).all())
        tok = ovseg.Tokenizer(VOCAB)
        self.assertEqual(tok.kind, "clip_bpe")
        self.assertEqual(tok.decode(tok.encode("a photo of a dog.")).strip(), "a photo of a dog .")
        self.assertEqual(list(tok.tokenize("dog")[0, :3]), [tok.sot, tok.encode("dog")[0], tok.eot])
        with self.assertRaises(ovseg.InvalidArgumentError):
            tok.tokenize("word " * 100)
        self.assertEqual(tok.tokenize("word " * 100, truncate=True)[0, -1], tok.eot)

    def test_load_image_matches_pillow(self):
        ours = ovseg.load_image(IMAGE)
        ref = np.asarray(Image.open(IMAGE).convert("RGB"))
        self.assertEqual(ours.dtype, np.uint8)
        self.assertTrue(np.array_equal(ours, ref))
        with open(IMAGE, "rb") as f:
            self.assertTrue(np.array_equal(ovseg.decode_image(f.read()), ref))


class ImageArgumentTest(unittest.TestCase):
    """numpy arrays of other dtypes, shapes and strides: converted, or a clear error."""

    CLASSES = ["sky", "tree", "road"]

    @classmethod
    def setUpClass(cls):
        # 40×30: the array variants below all see the same pixels.
        cls.rgb = np.ascontiguousarray(ovseg.load_image(IMAGE)[100:130, 150:190])
        cls.expected = model().segment(cls.rgb, cls.CLASSES, keep_scores=True)

    def same(self, image, **kw):
        r = model().segment(image, self.CLASSES, keep_scores=True, **kw)
        self.assertEqual(r.labels.tobytes(), self.expected.labels.tobytes())
        self.assertEqual(r.scores.tobytes(), self.expected.scores.tobytes())

    def test_layouts_that_are_read_or_converted(self):
        rgb = self.rgb
        self.same(rgb[:, :, ::-1].copy(), channel_order="bgr")
        self.same(rgb[:, :, ::-1], channel_order="BGR")  # negative channel stride: copied
        self.same(np.asfortranarray(rgb))  # column-major: copied
        padded = np.zeros((rgb.shape[0], rgb.shape[1] + 7, 3), np.uint8)
        padded[:, : rgb.shape[1]] = rgb
        view = padded[:, : rgb.shape[1]]  # rows with padding: read in place
        self.assertFalse(view.flags["C_CONTIGUOUS"])
        self.same(view)
        big = np.repeat(np.repeat(rgb, 2, axis=0), 2, axis=1)
        self.same(big[::2, ::2])  # strided view: copied
        rgba = np.concatenate([rgb, np.full(rgb.shape[:2] + (1,), 17, np.uint8)], axis=2)
        self.same(rgba)  # alpha ignored
        self.same(Image.fromarray(rgb))  # anything numpy.asarray takes
        self.same(rgb.tolist() and np.array(rgb.tolist(), dtype=np.uint8))
        grey = rgb[:, :, 1].copy()
        rg = model().segment(grey, self.CLASSES)
        rg3 = model().segment(np.repeat(grey[:, :, None], 3, axis=2), self.CLASSES)
        self.assertEqual(rg.labels.tobytes(), rg3.labels.tobytes())
        self.assertEqual(model().segment(grey[:, :, None], self.CLASSES).labels.tobytes(), rg.labels.tobytes())

    def test_the_caller_array_is_not_modified(self):
        rgb = self.rgb.copy()
        model().segment(rgb, self.CLASSES)
        self.assertTrue(np.array_equal(rgb, self.rgb))

    def test_errors(self):
        m = model()
        for bad in (
            self.rgb.astype(np.float32),
            self.rgb.astype(np.int64),
            self.rgb.astype(np.uint16),
            self.rgb > 0,
            np.array([[["a"]]]),
            3.5,
            None,
            object(),
        ):
            with self.assertRaises(TypeError, msg=repr(type(bad))) as cm:
                m.segment(bad, self.CLASSES)
            self.assertIn(
                "uint8" if isinstance(bad, np.ndarray) and bad.dtype.kind != "U" else "image", str(cm.exception)
            )
        for bad in (
            self.rgb[:, :, :2],
            np.zeros((4, 5, 3, 1), np.uint8),
            np.zeros((0, 5, 3), np.uint8),
            np.zeros((5,), np.uint8),
            np.zeros((3, 4, 5), np.uint8),
        ):
            with self.assertRaises(ValueError, msg=str(bad.shape)) as cm:
                m.segment(bad, self.CLASSES)
            self.assertIsInstance(cm.exception, ovseg.InvalidArgumentError)
            self.assertEqual(cm.exception.code, ovseg.ErrorCode.INVALID_ARGUMENT)
        with self.assertRaisesRegex(ValueError, "channel_order"):
            m.segment(self.rgb, self.CLASSES, channel_order="rbg")

    def test_argument_errors(self):
        m = model()
        with self.assertRaisesRegex(TypeError, "list of names"):
            m.segment(self.rgb, "sky")
        with self.assertRaisesRegex(TypeError, r"classes\[1\] must be a str"):
            m.segment(self.rgb, ["sky", 3])
        with self.assertRaises(ovseg.InvalidArgumentError):
            m.segment(self.rgb, [])
        with self.assertRaises(ValueError):
            m.segment(self.rgb, ["sky"], mode="fast")
        with self.assertRaises(ValueError):
            m.segment(self.rgb, ["sky"], mask_threshold=1.5)
        with self.assertRaises(TypeError):
            m.segment(self.rgb, ["sky"], mask_threshold="high")
        with self.assertRaises(TypeError):
            m.segment(self.rgb, ["sky"], progress=42)
        with self.assertRaises(TypeError):
            m.segment(self.rgb, ["sky"], "demo")  # options are keyword-only

    def test_library_errors_carry_codes(self):
        m = model()
        missing = os.path.join(TMP, "missing.png")
        with self.assertRaises(ovseg.FileError) as cm:
            m.segment(missing, ["sky"])
        self.assertIsInstance(cm.exception, OSError)
        self.assertEqual(cm.exception.code, ovseg.ErrorCode.IO)
        self.assertIn(missing, str(cm.exception))
        corrupt = os.path.join(TMP, "corrupt.jpg")
        with open(corrupt, "wb") as f:
            f.write(b"\xff\xd8\xff\xe0 not a jpeg" + bytes(range(256)))
        for call in (lambda: m.segment(corrupt, ["sky"]), lambda: ovseg.load_image(corrupt)):
            with self.assertRaises(ovseg.ImageError) as cm:
                call()
            self.assertEqual(cm.exception.code, ovseg.ErrorCode.BAD_IMAGE)
            self.assertIn("corrupt.jpg", str(cm.exception))
        with self.assertRaises(ovseg.ModelError) as cm:
            ovseg.Model.load(os.path.join(TMP, "no_bundle"))
        self.assertEqual(cm.exception.code, ovseg.ErrorCode.BAD_MODEL)
        self.assertIsInstance(cm.exception, ovseg.Error)
        with self.assertRaises(ovseg.InvalidArgumentError):
            ovseg.Model.load(SMALL, precision="fp8")


class ProgressTest(unittest.TestCase):
    def test_stages_cancel_and_exceptions(self):
        m = model()
        seen = []
        r = m.segment(IMAGE, ["sky"], progress=lambda stage, f: seen.append((stage, f)))
        self.assertIsNotNone(r)
        stages = [s for s, _ in seen]
        self.assertEqual(stages[-1], "done")
        self.assertIn("proposals", stages)
        fractions = [f for _, f in seen]
        self.assertEqual(fractions, sorted(fractions))
        self.assertEqual(fractions[-1], 1.0)

        with self.assertRaises(ovseg.CancelledError) as cm:
            m.segment(IMAGE, ["sky"], progress=lambda stage, f: stage != "clip")
        self.assertEqual(cm.exception.code, ovseg.ErrorCode.CANCELLED)

        class Boom(Exception):
            pass

        boom = Boom("from the callback")

        def raising(stage, f):
            if stage == "regions":
                raise boom

        with self.assertRaises(Boom) as cm:
            m.segment(IMAGE, ["sky"], progress=raising)
        self.assertIs(cm.exception, boom)

        def raising_at_done(stage, f):
            if stage == "done":
                raise boom

        with self.assertRaises(Boom):
            m.segment(IMAGE, ["sky"], progress=raising_at_done)
        # The model is fine afterwards.
        self.assertEqual(m.segment(IMAGE, ["sky"]).labels.shape, r.labels.shape)


class ThreadTest(unittest.TestCase):
    def test_gil_is_released_during_segment(self):
        """Another Python thread runs while segment() computes: its timestamps fall well inside a
        stage (between two progress callbacks, when no Python code of the calling thread runs)."""
        m = model("full")
        m.prepare_classes(["sky", "tree"])
        stop = threading.Event()
        ticks = []

        def other():
            while not stop.is_set():
                ticks.append(time.perf_counter())
                sum(range(200))

        marks = {}

        def progress(stage, f):
            marks.setdefault(stage + ".enter", time.perf_counter())
            # Let the other thread start before the first stage: it must be running.
            if stage == "preprocess":
                while not ticks:
                    time.sleep(0.001)
            marks[stage + ".leave"] = time.perf_counter()

        t = threading.Thread(target=other)
        t.start()
        try:
            m.segment(IMAGE, ["sky", "tree"], progress=progress)
        finally:
            stop.set()
            t.join()
        # proposals: from leaving the "proposals" callback to entering the next one.
        start, end = marks["proposals.leave"], marks["regions.enter"]
        length = end - start
        self.assertGreater(length, 0.02)
        inside = [x for x in ticks if start + 0.25 * length < x < end - 0.25 * length]
        self.assertGreater(len(inside), 10, f"the other thread made no progress during a {length * 1000:.0f} ms stage")

    def test_two_threads_one_model(self):
        m = model()
        classes = ["sky", "tree", "road", "person"]
        base = ovseg.load_image(IMAGE)
        images = [np.ascontiguousarray(base[:200, :200]), np.ascontiguousarray(base[150:, 100:])]
        expected = [m.segment(im, classes, keep_scores=True) for im in images]
        results = [None, None]
        errors = []

        def work(i):
            try:
                for _ in range(3):
                    results[i] = m.segment(images[i], classes, keep_scores=True)
            except BaseException as e:  # noqa: BLE001 (reported below)
                errors.append(e)

        threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.assertEqual(errors, [])
        for r, e in zip(results, expected):
            self.assertEqual(r.labels.tobytes(), e.labels.tobytes())
            self.assertEqual(r.scores.tobytes(), e.scores.tobytes())


class LeakTest(unittest.TestCase):
    def test_no_leak_over_200_calls(self):
        """200 segment calls (every result field read), 200 calls that fail on an argument and 200
        whose progress callback raises: RSS stays flat and the caller's objects keep their reference
        counts. A leaked call would hold ≥ 0.7 MB (its score map and a fresh input array)."""
        m = model()
        classes = ["sky", "tree", "road", "person"]
        base = np.ascontiguousarray(ovseg.load_image(IMAGE)[:200, :200])

        def cb(stage, f):
            return True

        def raising(stage, f):
            raise KeyError(stage)  # at the first stage: the exception path, without the compute

        def one_round():
            image = base.copy()
            r = m.segment(image, classes, keep_scores=True, progress=cb)
            _ = (
                r.labels.sum(),
                r.scores.sum(),
                r.class_pixels.sum(),
                r.segments,
                r.timings,
                r.classes,
                r.score_classes,
                repr(r),
            )
            with self.assertRaises(ovseg.InvalidArgumentError):
                m.segment(image, classes, mask_threshold=2.0)
            with self.assertRaises(KeyError):
                m.segment(base, classes, progress=raising)

        refs = (sys.getrefcount(classes), sys.getrefcount(base), sys.getrefcount(cb), sys.getrefcount(m))
        for _ in range(10):  # warm-up: allocator pools, caches
            one_round()
        gc.collect()
        before = rss_mib()
        for _ in range(200):
            one_round()
        gc.collect()
        grown = rss_mib() - before
        self.assertEqual(
            refs, (sys.getrefcount(classes), sys.getrefcount(base), sys.getrefcount(cb), sys.getrefcount(m))
        )
        self.assertLess(grown, 16.0, f"RSS grew by {grown:.1f} MiB over 200 calls")


class ImportOrderTest(unittest.TestCase):
    """torch (Debian's python3-torch) and ovseg in one process, in either order."""

    def run_order(self, first, second):
        code = (
            f"import {first}\nimport {second}\nimport numpy as np\n"
            "ovseg.set_log_level('warn')\n"
            f"m = ovseg.Model.load({SMALL!r}, threads=1, text_cache=False)\n"
            f"r = m.segment({IMAGE!r}, ['sky', 'tree'])\n"
            "t = torch.from_numpy(r.labels.astype(np.int64))\n"
            "assert int(torch.bincount(t.flatten()).sum()) == r.width * r.height\n"
            "print('ok', torch.__version__)\n"
        )
        p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("ok", p.stdout)

    def test_torch_first(self):
        self.run_order("torch", "ovseg")

    def test_ovseg_first(self):
        self.run_order("ovseg", "torch")


class DocumentationTest(unittest.TestCase):
    def test_docstrings_and_stub(self):
        doc = ovseg.Model.segment.__doc__
        for word in ("RGB", "channel_order", "H×W×3", "uint8", "GIL", "progress", "UNLABELED"):
            self.assertIn(word, doc)
        self.assertIn("ovseg.Error", ovseg.__doc__)
        # The stub declares every public name, and parses.
        import ast

        stub = os.path.join(os.path.dirname(ovseg.__file__), "__init__.pyi")
        with open(stub, encoding="utf-8") as f:
            tree = ast.parse(f.read())
        declared = set()
        for node in tree.body:
            if isinstance(node, (ast.ClassDef, ast.FunctionDef)):
                declared.add(node.name)
            elif isinstance(node, ast.AnnAssign):
                declared.add(node.target.id)
            elif isinstance(node, ast.Assign):
                declared.update(t.id for t in node.targets)
        self.assertEqual(set(ovseg.__all__) - declared, set())
        classes = {n.name: n for n in tree.body if isinstance(n, ast.ClassDef)}
        for cls in ("Model", "Result", "Segment", "ModelInfo", "Tokenizer"):
            members = {n.name for n in classes[cls].body if isinstance(n, ast.FunctionDef)}
            public = {a for a in dir(getattr(ovseg, cls)) if not a.startswith("_")}
            self.assertEqual(public - members, set(), cls)


if __name__ == "__main__":
    missing = _missing_reference()
    if missing:
        print(
            f"test_python_module: skipped: not found: {', '.join(missing)} "
            "(the shared fixture, or its bundle from ctest's export_fixture_bundles)"
        )
        sys.exit(77)
    unittest.main(verbosity=2)
