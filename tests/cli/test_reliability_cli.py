"""Hostile-input tests of the CLI (issue 16): special files, oversized and odd inputs, stale
temporaries, decompression bombs, tampered bundles and caches. Every run is bounded by a timeout:
a hang fails the test instead of stalling the suite.

Environment as in test_segment_cli.py (OVSEG_BIN, OVSEG_TEST_BUNDLE_DIR, OVSEG_SHARED_DIR).
"""
import json
import os
import shutil
import signal
import socket
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
THREADS = "1"
TIMEOUT = 300  # seconds: far above a normal run on the fixture, far below "forever"
CACHE_DIR = tempfile.mkdtemp(prefix="ovseg_rel_cache_")


def tearDownModule():
    shutil.rmtree(CACHE_DIR, ignore_errors=True)


def run(*args, stdin=None, cwd=None, timeout=TIMEOUT, env_extra=None, binary_stdin=False):
    env = dict(os.environ, OVSEG_CACHE_DIR=CACHE_DIR)
    if env_extra:
        env.update(env_extra)
    return subprocess.run([BIN, *args], input=stdin, capture_output=True, text=not binary_stdin, cwd=cwd, env=env,
                          timeout=timeout)


def require(tc, need_bundle=True):
    if not BIN or not os.access(BIN, os.X_OK):
        tc.skipTest("OVSEG_BIN is not set to the built ovseg binary")
    if need_bundle:
        if not os.path.isfile(os.path.join(FIXTURE, "image.png")):
            tc.skipTest(f"reference fixture not found: {FIXTURE} (set OVSEG_SHARED_DIR)")
        if not os.path.isfile(os.path.join(BUNDLE, "manifest.json")):
            tc.skipTest(f"test bundle not found: {BUNDLE}")


def small_image(path, size=(48, 40)):
    Image.open(os.path.join(FIXTURE, "image.png")).convert("RGB").resize(size).save(path)


class Base(unittest.TestCase):
    need_bundle = True

    def setUp(self):
        require(self, self.need_bundle)
        self.tmp = tempfile.mkdtemp(prefix="ovseg_rel_")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def segment(self, *args, **kw):
        return run("segment", "--model", BUNDLE, "--threads", THREADS, *args, **kw)


class SpecialFilesTest(Base):
    """Case 1 and 2: FIFOs, sockets, devices and directories are refused up front; the batch goes on."""

    def test_fifo_socket_and_device_images_are_refused_and_the_batch_goes_on(self):
        good = os.path.join(self.tmp, "real.png")
        small_image(good)
        fifo = os.path.join(self.tmp, "f.png")
        os.mkfifo(fifo)
        sock_path = os.path.join(self.tmp, "s.png")
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(sock_path)
        try:
            out = os.path.join(self.tmp, "out")
            p = self.segment("-c", "car,road", "-o", out, fifo, sock_path, "/dev/zero", good)
        finally:
            sock.close()
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn(f"{fifo}: not a regular file (FIFO)", p.stderr)
        self.assertIn(f"{sock_path}: not a regular file (socket)", p.stderr)
        self.assertIn("/dev/zero: not a regular file (character device)", p.stderr)
        self.assertNotIn("empty file", p.stderr)
        self.assertIn("3 of 4 images failed", p.stderr)
        self.assertTrue(os.path.isfile(os.path.join(out, "real.png")))

    def test_only_special_files_fail_without_loading_the_model(self):
        fifo = os.path.join(self.tmp, "f.png")
        os.mkfifo(fifo)
        p = run("segment", "--model", os.path.join(self.tmp, "not-a-bundle-but-a-dir"), "-c", "car", fifo)
        # the bundle directory check still comes first (usage error) ...
        self.assertEqual(p.returncode, 2, p.stderr)
        p = self.segment("-c", "car", "-o", os.path.join(self.tmp, "out"), fifo)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("not a regular file (FIFO)", p.stderr)

    def test_fifo_as_class_file_is_refused(self):
        fifo = os.path.join(self.tmp, "classes.txt")
        os.mkfifo(fifo)
        p = self.segment("-f", fifo, os.path.join(FIXTURE, "image.png"), timeout=60)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(f"{fifo}: not a regular file (FIFO)", p.stderr)

    def test_directory_as_class_file_is_a_clear_error(self):
        p = self.segment("-f", self.tmp, os.path.join(FIXTURE, "image.png"), timeout=60)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(f"{self.tmp}: is a directory", p.stderr)
        self.assertNotIn("bad_alloc", p.stderr)

    def test_device_as_class_file_is_refused(self):
        p = self.segment("-f", "/dev/zero", os.path.join(FIXTURE, "image.png"), timeout=60)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("/dev/zero: not a regular file (character device)", p.stderr)

    def test_oversized_class_file_is_refused_before_reading(self):
        big = os.path.join(self.tmp, "big.txt")
        with open(big, "wb") as f:
            f.truncate((64 << 20) + 1)  # sparse: costs no disk
        p = self.segment("-f", big, os.path.join(FIXTURE, "image.png"), timeout=60)
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("file too large", p.stderr)

    def test_class_list_from_stdin(self):
        out = os.path.join(self.tmp, "out")
        img = os.path.join(self.tmp, "a.png")
        small_image(img)
        p = self.segment("-f", "-", "--json", "-o", out, img, stdin="# classes\ncar\nroad\n")
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(os.path.join(out, "a.json"), encoding="utf-8") as f:
            self.assertEqual(json.load(f)["classes"], ["car", "road"])
        p = self.segment("-f", "-", "-o", out, "-", stdin="car\n")
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("not both", p.stderr)


class NonUtf8NameTest(Base):
    """Case 3: a file name that is not UTF-8 is written to JSON with U+FFFD, its bytes in hex."""

    def test_json_report_of_a_non_utf8_name(self):
        d = os.fsencode(self.tmp)
        name = d + b"/caf\xe9-\xff.png"
        small_image(os.fsdecode(name))
        out = os.path.join(self.tmp, "out")
        p = subprocess.run([os.fsencode(BIN), b"segment", b"--model", os.fsencode(BUNDLE), b"--threads", b"1",
                            b"-c", b"car,road", b"--json", b"-o", os.fsencode(out), name],
                           capture_output=True, timeout=TIMEOUT, env=dict(os.environ, OVSEG_CACHE_DIR=CACHE_DIR))
        self.assertEqual(p.returncode, 0, p.stderr)
        report = os.path.join(os.fsencode(out), b"caf\xe9-\xff.json")
        with open(report, "rb") as f:
            raw = f.read()
        rep = json.loads(raw.decode("utf-8"))  # valid UTF-8 JSON
        self.assertTrue(rep["input"].endswith("caf\ufffd-\ufffd.png"), rep["input"])
        self.assertEqual(bytes.fromhex(rep["input_bytes"]), name)


class StaleTemporariesTest(Base):
    """Case 10: temporaries of a killed run (dead PID) are swept; those of a live process stay."""

    def test_sweep_on_the_next_run(self):
        out = os.path.join(self.tmp, "out")
        os.makedirs(os.path.join(out, "sub"))
        # A PID that is certainly dead: a child that has exited and been reaped.
        child = subprocess.Popen(["true"])
        child.wait()
        dead = child.pid
        stale = [os.path.join(out, f"a.png.tmp{dead}-12345"), os.path.join(out, "sub", f"b.json.tmp{dead}-7")]
        alive = os.path.join(out, f"c.png.tmp{os.getpid()}-99")  # this test process is alive
        unrelated = [os.path.join(out, "notes.tmp"), os.path.join(out, f"x.tmp{dead}-1a")]
        for path in stale + [alive] + unrelated:
            with open(path, "wb") as f:
                f.write(b"partial")
        img_dir = os.path.join(self.tmp, "in")
        os.makedirs(os.path.join(img_dir, "sub"))
        small_image(os.path.join(img_dir, "a.png"))
        small_image(os.path.join(img_dir, "sub", "b.png"))
        p = self.segment("-c", "car,road", "-r", "-o", out, img_dir)
        self.assertEqual(p.returncode, 0, p.stderr)
        for path in stale:
            self.assertFalse(os.path.exists(path), path)
        for path in [alive] + unrelated:
            self.assertTrue(os.path.exists(path), path)


if __name__ == "__main__":
    unittest.main()
