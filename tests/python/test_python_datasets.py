"""The Python module without the reference material: the datasets' class lists that ship with
ovseg, and text that has no UTF-8 form, on the demo model of the repository (models/demo).

Run by ctest (`python3 test_python_datasets.py`, PYTHONPATH = the build tree's python/); needs no
../shared. The comparison with the reference lists skips without it.
"""
import json
import os
import unittest

import ovseg  # noqa: E402  (PYTHONPATH set by ctest)

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEMO = os.path.join(ROOT, "models", "demo")
SHARED = os.environ.get("OVSEG_SHARED_DIR") or os.path.join(ROOT, "..", "shared", "ovseg")
REFERENCE = os.path.join(SHARED, "class_lists.json")
SIZES = {"ade150": 150, "ade847": 847, "pc59": 59, "pc459": 459, "voc20": 20, "coco171": 171}


class DatasetClasses(unittest.TestCase):
    def test_every_dataset_ships(self):
        self.assertEqual(ovseg.dataset_names(), list(SIZES))
        for name, size in SIZES.items():
            with self.subTest(dataset=name):
                names = ovseg.dataset_classes(name)
                self.assertEqual(len(names), size)
                self.assertTrue(all(n == n.strip() and n for n in names))
        self.assertEqual(ovseg.dataset_classes("ade150")[:3], ["wall", "building", "sky"])
        self.assertEqual(ovseg.dataset_classes("voc20")[0], "aeroplane")

    def test_found_without_environment(self):
        self.assertNotIn("OVSEG_PRESETS", os.environ)
        self.assertEqual(len(ovseg.dataset_classes("pc59")), 59)

    def test_unknown_name(self):
        with self.assertRaises(ovseg.InvalidArgumentError) as cm:
            ovseg.dataset_classes("ade151")
        self.assertIn("ade150", str(cm.exception))

    @unittest.skipUnless(os.path.isfile(REFERENCE), f"reference class lists not found: {REFERENCE}")
    def test_equal_to_the_reference_lists(self):
        with open(REFERENCE, encoding="utf-8") as f:
            ref = json.load(f)
        for name in SIZES:
            with self.subTest(dataset=name):
                self.assertEqual(ovseg.dataset_classes(name), [n.strip() for n in ref[name]])


class TextWithoutUtf8(unittest.TestCase):
    """A lone surrogate (e.g. from os.fsdecode of a non-UTF-8 name) is an InvalidArgumentError
    naming the class, never pybind11's bare RuntimeError."""

    @classmethod
    def setUpClass(cls):
        ovseg.set_log_level("warn")
        cls.model = ovseg.Model.load(DEMO, threads=1, text_cache=False)

    def test_lone_surrogate_class_name(self):
        image = ovseg.load_image(os.path.join(DEMO, "examples", "images", "heldout_2026_00001.png"))
        for classes, where in ((["sky", "bad\udc80name"], "classes[1]"), (["\ud800"], "classes[0]")):
            with self.subTest(classes=repr(classes)):
                with self.assertRaises(ovseg.InvalidArgumentError) as cm:
                    self.model.segment(image, classes)
                self.assertIsInstance(cm.exception, ValueError)
                self.assertIn(where, str(cm.exception))
                self.assertIn("surrogate", str(cm.exception))

    def test_lone_surrogate_in_tokenize(self):
        with self.assertRaises(ovseg.InvalidArgumentError) as cm:
            ovseg.tokenize(["ok", "x\udcff"], DEMO)
        self.assertIn("texts[1]", str(cm.exception))


if __name__ == "__main__":
    unittest.main(verbosity=2)
