"""Model.analyze / Model.classify / ovseg.Analysis from Python, on the repository's demo model
(models/demo; needs no ../shared). Run by ctest: `python3 test_python_analysis.py`.
"""
import os
import tempfile
import threading
import unittest

import numpy as np

import ovseg  # noqa: E402  (PYTHONPATH set by ctest)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEMO = os.path.join(ROOT, "models", "demo")
IMAGE = os.path.join(DEMO, "examples", "images", "heldout_2026_00001.png")
with open(os.path.join(DEMO, "examples", "classes.txt"), encoding="utf-8") as _f:
    CLASSES = [line.strip() for line in _f if line.strip()]


def same(a, b):
    return (
        np.array_equal(a.labels, b.labels)
        and a.classes == b.classes
        and [(s.query, s.class_index, s.score, s.area, s.box) for s in a.segments]
        == [(s.query, s.class_index, s.score, s.area, s.box) for s in b.segments]
        and a.mode == b.mode
        and a.mask_threshold == b.mask_threshold
        and a.ensemble_weight == b.ensemble_weight
        and ((a.scores is None and b.scores is None) or np.array_equal(a.scores, b.scores))
    )


class AnalyzeClassify(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        ovseg.set_log_level("warn")
        cls.model = ovseg.Model.load(DEMO, threads=1, text_cache=False)
        cls.image = ovseg.load_image(IMAGE)
        cls.analysis = cls.model.analyze(cls.image)

    def test_classify_equals_segment(self):
        for kwargs in ({}, {"ensemble_weight": 0.3}, {"mode": "demo"}, {"keep_scores": True}):
            with self.subTest(**kwargs):
                a = self.analysis if kwargs.get("mode") != "demo" else self.model.analyze(IMAGE, mode="demo")
                got = self.model.classify(a, CLASSES, **kwargs)
                want = self.model.segment(self.image, CLASSES, **kwargs)
                self.assertTrue(same(got, want))
        one = self.model.classify(self.analysis, ["sky"], mode="eval")
        self.assertTrue(same(one, self.model.segment(self.image, ["sky"])))

    def test_properties_and_timings(self):
        a = self.analysis
        self.assertIsInstance(a, ovseg.Analysis)
        self.assertEqual((a.width, a.height), (self.image.shape[1], self.image.shape[0]))
        self.assertGreater(a.bytes, 0)
        self.assertGreater(a.num_regions, 0)
        self.assertTrue(a.clip_ensemble)
        self.assertEqual(a.model_fingerprint, self.model.info.fingerprint)
        self.assertGreater(a.timings["proposals"], 0)
        r = self.model.classify(a, CLASSES)
        self.assertEqual(r.timings["proposals"], 0)
        self.assertEqual(r.timings["clip"], 0)
        self.assertIn("regions", repr(a))

    def test_save_and_load(self):
        with tempfile.TemporaryDirectory() as tmp:
            path = os.path.join(tmp, "a.ovsa")
            self.analysis.save(path)
            loaded = ovseg.Analysis.load(path)
            self.assertEqual(loaded.bytes, self.analysis.bytes)
            self.assertTrue(same(self.model.classify(loaded, CLASSES), self.model.classify(self.analysis, CLASSES)))
            with open(path, "r+b") as f:
                f.seek(200)
                byte = f.read(1)
                f.seek(200)
                f.write(bytes([byte[0] ^ 1]))
            with self.assertRaises(ovseg.Error) as cm:
                ovseg.Analysis.load(path)
            self.assertIn("checksum", str(cm.exception))
            self.assertIn(path, str(cm.exception))
            with self.assertRaises(ovseg.FileError):
                ovseg.Analysis.load(os.path.join(tmp, "absent.ovsa"))

    def test_refusals(self):
        with self.assertRaises(ovseg.InvalidArgumentError) as cm:
            self.model.classify(self.analysis, CLASSES, mask_threshold=0.9)
        self.assertIn("mask_threshold", str(cm.exception))
        only = self.model.analyze(self.image, clip_ensemble=False)
        with self.assertRaises(ovseg.InvalidArgumentError) as cm:
            self.model.classify(only, CLASSES)
        self.assertIn("clip_ensemble", str(cm.exception))
        self.assertTrue(
            same(
                self.model.classify(only, CLASSES, clip_ensemble=False),
                self.model.classify(self.analysis, CLASSES, clip_ensemble=False),
            )
        )
        with self.assertRaises(ovseg.InvalidArgumentError):
            self.model.classify(self.analysis, [])
        with self.assertRaises(TypeError):
            self.model.classify("not an analysis", CLASSES)

    def test_gil_is_released(self):
        # Another Python thread runs while analyze() computes.
        ticks = []
        stop = threading.Event()

        def tick():
            while not stop.is_set():
                ticks.append(1)
                stop.wait(0.001)

        t = threading.Thread(target=tick)
        t.start()
        try:
            self.model.analyze(self.image)
        finally:
            stop.set()
            t.join()
        self.assertGreater(len(ticks), 5)

    def test_progress_and_cancel(self):
        stages = []
        self.model.analyze(self.image, progress=lambda s, f: stages.append(s))
        self.assertEqual(stages, ["preprocess", "proposals", "regions", "clip", "done"])
        with self.assertRaises(ovseg.CancelledError):
            self.model.classify(self.analysis, CLASSES, progress=lambda s, f: s != "post")


if __name__ == "__main__":
    unittest.main(verbosity=2)
