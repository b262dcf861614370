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


def cache_entries(cache_dir):
    found = []
    for root, _, files in os.walk(cache_dir):
        found += [os.path.join(root, f) for f in files if f.endswith(".bin")]
    return sorted(found)


def parse_entry(path):
    """(name, floats, checksum_ok) of a text cache entry (OVSGTF02: magic, u32 E, u32 len, name,
    E float32, sha256 of everything before)."""
    import hashlib
    import struct
    with open(path, "rb") as f:
        raw = f.read()
    assert raw[:8] == b"OVSGTF02", raw[:8]
    e, n = struct.unpack("<II", raw[8:16])
    name = raw[16:16 + n].decode("utf-8")
    floats = np.frombuffer(raw[16 + n:16 + n + 4 * e], dtype="<f4")
    return name, floats, hashlib.sha256(raw[:-32]).digest() == raw[-32:], raw


class TextCacheTest(Base):
    """Case 7: cache entries carry a checksum; corrupt or non-finite ones are ignored, recomputed
    and rewritten; concurrent writers do not corrupt the cache."""

    def run_with_cache(self, cache, out, classes="car,road,sky", extra=()):
        img = os.path.join(self.tmp, "a.png")
        if not os.path.exists(img):
            small_image(img)
        return self.segment("-c", classes, "-o", out, *extra, img, env_extra={"OVSEG_CACHE_DIR": cache})

    def label_map(self, out):
        return np.asarray(Image.open(os.path.join(out, "a.png")))

    def test_corrupt_and_non_finite_entries_are_recomputed(self):
        import hashlib
        cache = os.path.join(self.tmp, "cache")
        p = self.run_with_cache(cache, os.path.join(self.tmp, "o1"))
        self.assertEqual(p.returncode, 0, p.stderr)
        reference = self.label_map(os.path.join(self.tmp, "o1"))
        entries = cache_entries(cache)
        self.assertEqual(len(entries), 3)
        for path in entries:
            name, floats, ok, _ = parse_entry(path)
            self.assertTrue(ok, path)
            self.assertTrue(np.all(np.isfinite(floats)))
        # 1. NaN written into the payload (checksum now wrong); 2. NaN with a matching checksum.
        _, _, _, raw = parse_entry(entries[0])
        n = len(raw) - 32
        bad = bytearray(raw)
        bad[n - 4:n] = np.array([np.nan], "<f4").tobytes()
        with open(entries[0], "wb") as f:
            f.write(bad)
        body = bytearray(parse_entry(entries[1])[3][:-32])
        body[-4:] = np.array([np.inf], "<f4").tobytes()
        with open(entries[1], "wb") as f:
            f.write(bytes(body) + hashlib.sha256(bytes(body)).digest())
        p = self.run_with_cache(cache, os.path.join(self.tmp, "o2"))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("checksum mismatch", p.stderr)
        self.assertIn("non-finite values", p.stderr)
        np.testing.assert_array_equal(self.label_map(os.path.join(self.tmp, "o2")), reference)
        for path in entries:  # rewritten, valid again
            _, floats, ok, _ = parse_entry(path)
            self.assertTrue(ok and np.all(np.isfinite(floats)), path)
        # An entry renamed to another name's file (it claims another key) is ignored too.
        shutil.copyfile(entries[2], entries[0])
        p = self.run_with_cache(cache, os.path.join(self.tmp, "o3"))
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertIn("holds another name", p.stderr)
        np.testing.assert_array_equal(self.label_map(os.path.join(self.tmp, "o3")), reference)

    def test_two_processes_share_a_cache(self):
        cache = os.path.join(self.tmp, "cache")
        names = ",".join(f"thing number {i}" for i in range(24))
        img = os.path.join(self.tmp, "a.png")
        small_image(img)
        env = dict(os.environ, OVSEG_CACHE_DIR=cache)
        procs = [subprocess.Popen([BIN, "segment", "--model", BUNDLE, "--threads", THREADS, "-c", names, "-o",
                                   os.path.join(self.tmp, f"p{i}"), img], env=env, stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for i in range(2)]
        for proc in procs:
            _, err = proc.communicate(timeout=TIMEOUT)
            self.assertEqual(proc.returncode, 0, err)
            self.assertNotIn("ignoring", err)
        entries = cache_entries(cache)
        self.assertEqual(len(entries), 24)
        for path in entries:
            self.assertTrue(parse_entry(path)[2], path)
        self.assertEqual([n for n in os.listdir(os.path.dirname(entries[0])) if ".tmp" in n], [])
        p = self.segment("-c", names, "-o", os.path.join(self.tmp, "p2"), img, env_extra={"OVSEG_CACHE_DIR": cache})
        self.assertEqual(p.returncode, 0, p.stderr)
        self.assertNotIn("ignoring", p.stderr)
        a, b, c = (np.asarray(Image.open(os.path.join(self.tmp, d, "a.png"))) for d in ("p0", "p1", "p2"))
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


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
