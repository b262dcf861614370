"""`ovseg segment --analysis-cache DIR` on the repository's demo model (needs no ../shared): a first
run fills the cache, a second run with another class list reuses every analysis and writes label
maps byte-identical to a run without the cache; keys follow the image's content, not its name;
unreadable cache files are replaced; concurrent writers never leave a torn file.

Environment (set by ctest): OVSEG_BIN = the built `ovseg`.
"""
import glob
import os
import shutil
import subprocess
import tempfile
import unittest

import numpy as np
from PIL import Image

from demo_env import BIN, DEMO, require_binary

IMAGES = os.path.join(DEMO, "examples", "images")
CLASSES = os.path.join(DEMO, "examples", "classes.txt")
OTHER = "sky, grass, red circle, brick wall, striped green square"


class AnalysisCacheCli(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        require_binary()
        cls.tmp = tempfile.mkdtemp(prefix="ovseg_anacache_")
        cls.inputs = os.path.join(cls.tmp, "in")
        os.makedirs(cls.inputs)
        for name in ("heldout_2026_00001.png", "seen_2026_00001.png"):
            shutil.copyfile(os.path.join(IMAGES, name), os.path.join(cls.inputs, name))

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def run_ovseg(self, *args):
        env = dict(os.environ, OVSEG_CACHE_DIR=os.path.join(self.tmp, "text-cache"))
        return subprocess.run([BIN, *args], capture_output=True, text=True, env=env, timeout=600)

    def segment(self, out, classes_args, cache=None, inputs=None, extra=()):
        args = ["segment", "-m", DEMO, "-j", "1", "-o", out, *classes_args, *extra]
        if cache:
            args += ["--analysis-cache", cache]
        p = self.run_ovseg(*args, inputs or self.inputs)
        self.assertEqual(p.returncode, 0, p.stderr)
        return p

    def assert_same_outputs(self, a, b):
        names = sorted(os.path.basename(f) for f in glob.glob(os.path.join(b, "*.png")))
        self.assertTrue(names)
        for n in names:
            with open(os.path.join(a, n), "rb") as fa, open(os.path.join(b, n), "rb") as fb:
                self.assertEqual(fa.read(), fb.read(), n)

    def test_second_class_list_reuses_the_analyses(self):
        cache = os.path.join(self.tmp, "cache1")
        first = self.segment(os.path.join(self.tmp, "o1"), ["-f", CLASSES], cache)
        self.assertIn("0 reused, 2 analyzed", first.stderr)
        self.assertIn("MB per image", first.stderr)
        self.assertIn("proposal network loaded on first use", first.stderr)
        self.assertEqual(len(glob.glob(os.path.join(cache, "*", "*.ovsa"))), 2)
        second = self.segment(os.path.join(self.tmp, "o2"), ["-c", OTHER], cache)
        self.assertIn("2 reused, 0 analyzed", second.stderr)
        # Only the text tower was loaded: the other modules load on first use, which never came.
        self.assertNotIn("loaded on first use", second.stderr)
        self.segment(os.path.join(self.tmp, "o3"), ["-c", OTHER])
        self.assert_same_outputs(os.path.join(self.tmp, "o2"), os.path.join(self.tmp, "o3"))
        # The first run's outputs equal a run without the cache too.
        self.segment(os.path.join(self.tmp, "o4"), ["-f", CLASSES])
        self.assert_same_outputs(os.path.join(self.tmp, "o1"), os.path.join(self.tmp, "o4"))
        # Another mask threshold is another analysis.
        third = self.segment(os.path.join(self.tmp, "o5"), ["-c", OTHER], cache, extra=["--mask-threshold", "0.3"])
        self.assertIn("0 reused, 2 analyzed", third.stderr)

    def test_keys_follow_the_content_not_the_name(self):
        cache = os.path.join(self.tmp, "cache2")
        self.segment(os.path.join(self.tmp, "k1"), ["-c", OTHER], cache)
        # The same bytes under another name: reused. Other bytes under a known name: analyzed.
        renamed = os.path.join(self.tmp, "renamed")
        os.makedirs(renamed)
        shutil.copyfile(os.path.join(self.inputs, "seen_2026_00001.png"), os.path.join(renamed, "copy.png"))
        p = self.segment(os.path.join(self.tmp, "k2"), ["-c", OTHER], cache, inputs=renamed)
        self.assertIn("1 reused, 0 analyzed", p.stderr)
        changed = os.path.join(self.tmp, "changed")
        os.makedirs(changed)
        img = np.asarray(Image.open(os.path.join(self.inputs, "seen_2026_00001.png")).convert("RGB")).copy()
        img[0, 0] = 255 - img[0, 0]
        Image.fromarray(img).save(os.path.join(changed, "seen_2026_00001.png"))
        p = self.segment(os.path.join(self.tmp, "k3"), ["-c", OTHER], cache, inputs=changed)
        self.assertIn("0 reused, 1 analyzed", p.stderr)

    def test_unreadable_cache_files_are_replaced(self):
        cache = os.path.join(self.tmp, "cache3")
        self.segment(os.path.join(self.tmp, "c1"), ["-c", OTHER], cache)
        files = sorted(glob.glob(os.path.join(cache, "*", "*.ovsa")))
        with open(files[0], "r+b") as f:
            f.seek(100)
            f.write(b"\x00garbage\x00")
        with open(files[1], "r+b") as f:
            f.truncate(50)
        p = self.segment(os.path.join(self.tmp, "c2"), ["-c", OTHER], cache)
        self.assertIn("0 reused, 2 analyzed (2 unreadable, replaced)", p.stderr)
        self.assertIn("checksum", p.stderr)
        self.assert_same_outputs(os.path.join(self.tmp, "c1"), os.path.join(self.tmp, "c2"))
        p = self.segment(os.path.join(self.tmp, "c3"), ["-c", OTHER], cache)
        self.assertIn("2 reused, 0 analyzed", p.stderr)

    def test_concurrent_writers(self):
        cache = os.path.join(self.tmp, "cache4")
        env = dict(os.environ, OVSEG_CACHE_DIR=os.path.join(self.tmp, "text-cache"))
        procs = [
            subprocess.Popen(
                [
                    BIN,
                    "segment",
                    "-q",
                    "-m",
                    DEMO,
                    "-j",
                    "1",
                    "-c",
                    OTHER,
                    "--analysis-cache",
                    cache,
                    "-o",
                    os.path.join(self.tmp, f"w{i}"),
                    self.inputs,
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
                env=env,
            )
            for i in range(2)
        ]
        for p in procs:
            _, err = p.communicate(timeout=600)
            self.assertEqual(p.returncode, 0, err)
        self.assertEqual(len(glob.glob(os.path.join(cache, "*", "*.ovsa"))), 2)
        self.assertEqual(glob.glob(os.path.join(cache, "*", "*.tmp*")), [])
        p = self.segment(os.path.join(self.tmp, "w2"), ["-c", OTHER], cache)
        self.assertIn("2 reused, 0 analyzed", p.stderr)
        self.assert_same_outputs(os.path.join(self.tmp, "w0"), os.path.join(self.tmp, "w2"))

    def test_stale_temporaries_of_a_killed_run_are_swept(self):
        cache = os.path.join(self.tmp, "cache5")
        sub = os.path.join(cache, "ab")
        os.makedirs(sub)
        stale = os.path.join(sub, "0" * 64 + ".ovsa.tmp999999999-0")  # a process that is not running
        mine = os.path.join(sub, "notes.txt")
        for path in (stale, mine):
            with open(path, "w") as f:
                f.write("x")
        p = self.segment(os.path.join(self.tmp, "t1"), ["-c", OTHER], cache)
        self.assertIn("removed 1 stale temporary", p.stderr)
        self.assertFalse(os.path.exists(stale))
        self.assertTrue(os.path.exists(mine))

    def test_refused_with_sam_proposals(self):
        p = self.run_ovseg(
            "segment",
            "-m",
            DEMO,
            "-c",
            OTHER,
            "--proposals",
            "sam",
            "--sam-model",
            DEMO,
            "--analysis-cache",
            os.path.join(self.tmp, "x"),
            "-o",
            os.path.join(self.tmp, "s"),
            self.inputs,
        )
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("--analysis-cache", p.stderr)
        self.assertNotIn("Traceback", p.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
