"""`ovseg masks` with hostile sizes (needs no ../shared: a random-weight SAM ViT-B bundle is exported
here): memory stays bounded whatever --points-per-batch (the decoder batch is split, the upsampling
chunked by an estimate that counts the [B,3,1024,1024] upsample), absurd values are refused, and a
manifest whose img_size does not match its modules is refused before anything runs.

Environment (set by ctest): OVSEG_BIN = the built `ovseg`.
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

from demo_env import BIN, ROOT, require_binary, require_torch

# Runs a command and prints its peak resident set (KiB): a fresh interpreter per command, so
# RUSAGE_CHILDREN holds that command alone.
PEAK = (
    "import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
    "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)"
)


class SamLimits(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        require_binary()
        require_torch()
        cls.tmp = tempfile.mkdtemp(prefix="ovseg_samlimits_")
        cls.bundle = os.path.join(cls.tmp, "sam_vit_b")
        r = subprocess.run(
            [
                sys.executable,
                os.path.join(ROOT, "tools", "ovseg-export-sam"),
                "--random-init",
                "--size",
                "vit_b",
                "--out",
                cls.bundle,
                "-q",
            ],
            capture_output=True,
            text=True,
            timeout=900,
        )
        if r.returncode != 0:
            raise AssertionError(r.stderr)
        cls.image = os.path.join(cls.tmp, "small.png")
        rng = np.random.default_rng(0)
        Image.fromarray(rng.integers(0, 255, (32, 48, 3), dtype=np.uint8)).save(cls.image)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def masks(self, bundle, *flags, peak=False):
        cmd = [
            BIN,
            "-q",
            "masks",
            "--sam-model",
            bundle,
            "-j",
            "2",
            "-o",
            os.path.join(self.tmp, "out"),
            *flags,
            self.image,
        ]
        if peak:
            cmd = [sys.executable, "-c", PEAK, *cmd]
        return subprocess.run(cmd, capture_output=True, text=True, timeout=900)

    def test_memory_is_bounded_whatever_points_per_batch(self):
        # 12 x 12 = 144 points: with points-per-batch 4096 they all went through the decoder and the
        # 1024-px upsample at once before (2.2 GB on this 48x32 image; ~12.6 MB per point); now the
        # decoder takes 64 at a time and the upsample ~20.
        common = ["--points-per-side", "12", "--pred-iou-thresh", "0", "--stability-score-thresh", "0"]
        small = self.masks(self.bundle, *common, "--points-per-batch", "64", peak=True)
        self.assertEqual(small.returncode, 0, small.stderr)
        # The same output folder again: a mask folder ovseg wrote is replaced.
        large = self.masks(self.bundle, *common, "--points-per-batch", "4096", peak=True)
        self.assertEqual(large.returncode, 0, large.stderr)
        self.assertTrue(os.path.isfile(os.path.join(self.tmp, "out", "small", "metadata.csv")))
        rss_small = int(small.stdout.split()[-1]) / 1024.0
        rss_large = int(large.stdout.split()[-1]) / 1024.0
        print(
            f"[sam limits] peak RSS: points-per-batch 64 {rss_small:.0f} MiB, 4096 {rss_large:.0f} MiB", file=sys.stderr
        )
        self.assertLess(rss_large, rss_small + 600, (rss_small, rss_large))

    def test_masks_never_replaces_a_folder_it_did_not_write(self):
        out = os.path.join(self.tmp, "keep")
        mine = os.path.join(out, "small")  # the image's stem: where its masks would go
        os.makedirs(mine)
        with open(os.path.join(mine, "notes.txt"), "w") as f:
            f.write("mine\n")
        r = subprocess.run(
            [BIN, "-q", "masks", "--sam-model", self.bundle, "-o", out, self.image],
            capture_output=True,
            text=True,
            timeout=900,
        )
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("not a mask folder", r.stderr)
        with open(os.path.join(mine, "notes.txt")) as f:
            self.assertEqual(f.read(), "mine\n")

    def test_absurd_points_per_batch_is_refused(self):
        for value in ("0", "100000", "-3"):
            r = self.masks(self.bundle, "--points-per-batch", value)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn("points-per-batch", r.stderr)

    def test_img_size_must_match_the_modules(self):
        for size in (16, 2048):
            with self.subTest(img_size=size):
                d = os.path.join(self.tmp, f"img{size}")
                shutil.rmtree(d, ignore_errors=True)
                os.makedirs(d)
                for name in os.listdir(self.bundle):
                    os.symlink(os.path.join(self.bundle, name), os.path.join(d, name))
                os.remove(os.path.join(d, "manifest.json"))
                with open(os.path.join(self.bundle, "manifest.json"), encoding="utf-8") as f:
                    m = json.load(f)
                m["architecture"]["img_size"] = size
                with open(os.path.join(d, "manifest.json"), "w", encoding="utf-8") as f:
                    json.dump(m, f)
                r = self.masks(d)
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertIn("img_size", r.stderr)
                self.assertIn("does not match the modules", r.stderr)
                self.assertNotIn("Traceback", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
