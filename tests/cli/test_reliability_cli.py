"""Hostile-input tests of the CLI: special files, oversized and odd inputs, stale
temporaries, decompression bombs, tampered bundles and caches. Every run is bounded by a timeout:
a hang fails the test instead of stalling the suite.

Environment as in test_segment_cli.py (OVSEG_BIN, OVSEG_TEST_BUNDLE_DIR, OVSEG_SHARED_DIR).
"""
import json
import os
import shutil
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
    return subprocess.run(
        [BIN, *args], input=stdin, capture_output=True, text=not binary_stdin, cwd=cwd, env=env, timeout=timeout
    )


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
        # the bundle directory check still comes first (exit 2: the model cannot be loaded) ...
        self.assertEqual(p.returncode, 2, p.stderr)
        p = self.segment("-c", "car", "-o", os.path.join(self.tmp, "out"), fifo)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("not a regular file (FIFO)", p.stderr)

    # A class file that cannot be read: exit 4 (a file the whole run needs is unreadable).
    def test_fifo_as_class_file_is_refused(self):
        fifo = os.path.join(self.tmp, "classes.txt")
        os.mkfifo(fifo)
        p = self.segment("-f", fifo, os.path.join(FIXTURE, "image.png"), timeout=60)
        self.assertEqual(p.returncode, 4, p.stderr)
        self.assertIn(f"{fifo}: not a regular file (FIFO)", p.stderr)

    def test_directory_as_class_file_is_a_clear_error(self):
        p = self.segment("-f", self.tmp, os.path.join(FIXTURE, "image.png"), timeout=60)
        self.assertEqual(p.returncode, 4, p.stderr)
        self.assertIn(f"{self.tmp}: is a directory", p.stderr)
        self.assertNotIn("bad_alloc", p.stderr)

    def test_device_as_class_file_is_refused(self):
        p = self.segment("-f", "/dev/zero", os.path.join(FIXTURE, "image.png"), timeout=60)
        self.assertEqual(p.returncode, 4, p.stderr)
        self.assertIn("/dev/zero: not a regular file (character device)", p.stderr)

    def test_oversized_class_file_is_refused_before_reading(self):
        big = os.path.join(self.tmp, "big.txt")
        with open(big, "wb") as f:
            f.truncate((64 << 20) + 1)  # sparse: costs no disk
        p = self.segment("-f", big, os.path.join(FIXTURE, "image.png"), timeout=60)
        self.assertEqual(p.returncode, 4, p.stderr)
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
        p = subprocess.run(
            [
                os.fsencode(BIN),
                b"segment",
                b"--model",
                os.fsencode(BUNDLE),
                b"--threads",
                b"1",
                b"-c",
                b"car,road",
                b"--json",
                b"-o",
                os.fsencode(out),
                name,
            ],
            capture_output=True,
            timeout=TIMEOUT,
            env=dict(os.environ, OVSEG_CACHE_DIR=CACHE_DIR),
        )
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
    name = raw[16 : 16 + n].decode("utf-8")
    floats = np.frombuffer(raw[16 + n : 16 + n + 4 * e], dtype="<f4")
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
        bad[n - 4 : n] = np.array([np.nan], "<f4").tobytes()
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
        procs = [
            subprocess.Popen(
                [
                    BIN,
                    "segment",
                    "--model",
                    BUNDLE,
                    "--threads",
                    THREADS,
                    "-c",
                    names,
                    "-o",
                    os.path.join(self.tmp, f"p{i}"),
                    img,
                ],
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            for i in range(2)
        ]
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


def bomb_png(path, width, height):
    """A valid greyscale PNG of width x height zeros: a few MB on disk, width*height bytes decoded."""
    import struct
    import zlib

    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data) & 0xFFFFFFFF)

    comp = zlib.compressobj(9)
    row = b"\0" * (width + 1)
    parts = [comp.compress(row) for _ in range(height)]
    parts.append(comp.flush())
    with open(path, "wb") as f:
        f.write(
            b"\x89PNG\r\n\x1a\n"
            + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0))
            + chunk(b"IDAT", b"".join(parts))
            + chunk(b"IEND", b"")
        )


class DecompressionBombTest(Base):
    """Case 4: the pixel limit is checked from the header, before decoding."""

    def test_bomb_is_refused_by_how_much_and_the_batch_goes_on(self):
        bomb = os.path.join(self.tmp, "bomb.png")
        bomb_png(bomb, 30000, 30000)
        self.assertLess(os.path.getsize(bomb), 4 << 20)
        good = os.path.join(self.tmp, "good.png")
        small_image(good)
        p = self.segment("-c", "car,road", "-o", os.path.join(self.tmp, "out"), bomb, good)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn(
            f"{bomb}: image too large: 30000x30000 = 900000000 pixels, 5.03x the limit of 178956970", p.stderr
        )
        self.assertIn("1 of 2 images failed", p.stderr)

    def test_max_pixels_option(self):
        img = os.path.join(self.tmp, "a.png")
        small_image(img, (48, 40))  # 1920 pixels
        out = os.path.join(self.tmp, "out")
        p = self.segment("-c", "car,road", "--max-pixels", "1919", "-o", out, img)
        self.assertEqual(p.returncode, 1, p.stderr)
        self.assertIn("48x40 = 1920 pixels, 1.00x the limit of 1919 (1 pixels over", p.stderr)
        p = self.segment("-c", "car,road", "--max-pixels", "1920", "-o", out, img)
        self.assertEqual(p.returncode, 0, p.stderr)


class LargeImageTest(Base):
    """Case 5: at the original size the resize + argmax run in pieces of classes (no K x H x W float
    map unless scores are asked for); the labels are the argmax of the scores, bit for bit."""

    def test_labels_are_the_argmax_of_the_scores_in_pieces(self):
        img = os.path.join(self.tmp, "big.png")
        small_image(img, (1600, 1200))  # 20 classes x 1.92 Mpx x 4 B = 154 MB > the 128 MB piece budget
        names = ",".join(f"class {i}" for i in range(20))
        out_a, out_b = os.path.join(self.tmp, "a"), os.path.join(self.tmp, "b")
        p = self.segment("-c", names, "--save-scores", "-o", out_a, img)
        self.assertEqual(p.returncode, 0, p.stderr)
        p = self.segment("-c", names, "-o", out_b, img)
        self.assertEqual(p.returncode, 0, p.stderr)
        labels = np.asarray(Image.open(os.path.join(out_a, "big.png")))
        scores = np.load(os.path.join(out_a, "big.scores.npy"), mmap_mode="r")
        self.assertEqual(scores.shape, (20, 1200, 1600))
        np.testing.assert_array_equal(labels, np.argmax(scores, axis=0))
        with open(os.path.join(out_a, "big.png"), "rb") as fa, open(os.path.join(out_b, "big.png"), "rb") as fb:
            self.assertEqual(fa.read(), fb.read())


class ManifestValidationTest(Base):
    """Case 6: every manifest value is checked at load; a bad bundle is exit 2 before any image."""

    def tampered(self, edit):
        bundle = os.path.join(self.tmp, "bundle")
        shutil.copytree(BUNDLE, bundle)
        path = os.path.join(bundle, "manifest.json")
        with open(path, encoding="utf-8") as f:
            m = json.load(f)
        edit(m)
        with open(path, "w", encoding="utf-8") as f:
            json.dump(m, f)
        img = os.path.join(self.tmp, "a.png")
        small_image(img)
        p = run(
            "segment",
            "--model",
            bundle,
            "--threads",
            THREADS,
            "-c",
            "car,road",
            "-o",
            os.path.join(self.tmp, "out"),
            img,
        )
        shutil.rmtree(bundle)
        return p

    def check(self, edit, *needles):
        p = self.tampered(edit)
        self.assertEqual(p.returncode, 2, p.stderr)
        for n in needles:
            self.assertIn(n, p.stderr)
        self.assertNotIn("images failed", p.stderr)  # refused at load, not image by image

    def test_pixel_std_zero(self):
        self.check(lambda m: m["preprocess"].__setitem__("pixel_std", [0.0, 1.0, 1.0]), "preprocess.pixel_std (R)")

    def test_template_without_placeholder(self):
        self.check(lambda m: m["text"]["templates"].__setitem__(0, "a photo of a thing."), 'exactly one "{}"')

    def test_template_with_a_stray_brace(self):
        self.check(lambda m: m["text"]["templates"].__setitem__(0, "a {} of {0}."), "brace")

    def test_context_length_the_text_tower_lacks(self):
        self.check(lambda m: m["text"]["tokenizer"].__setitem__("context_length", 1000), "does not accept 1000 tokens")

    def test_num_queries_unlike_the_module(self):
        self.check(
            lambda m: m["architecture"].__setitem__("num_queries", m["architecture"]["num_queries"] + 1),
            "architecture.num_queries",
        )

    def test_test_sizes_that_run_away(self):
        self.check(lambda m: m["preprocess"].__setitem__("min_size_test", 100000), "preprocess.min_size_test")
        self.check(lambda m: m["preprocess"].__setitem__("max_size_test", 100000), "preprocess.max_size_test")

    def test_mask_threshold_out_of_range(self):
        self.check(lambda m: m["inference"]["eval"].__setitem__("mask_threshold", 2.0), "inference.eval.mask_threshold")

    def test_modules_swapped(self):
        def swap(a, b):
            def edit(m):
                mods = m["modules"]
                mods[a], mods[b] = mods[b], mods[a]

            return edit

        # The text tower's attribute check names the module that is not a text tower ...
        self.check(swap("proposals", "clip_text"), "proposals.pt: no tensor attribute")
        # ... and the load-time probe the proposal network that is not one.
        self.check(swap("proposals", "clip_visual"), "clip_visual.pt: the proposal network", "module swapped")


class ClassNamesTest(Base):
    """Case 8: names CLIP cannot tell apart are duplicates; control characters are refused; a lone
    CR ends a line."""

    def test_names_with_equal_token_ids(self):
        img = os.path.join(FIXTURE, "image.png")
        for names, shown in (("café,CAFÉ", '"café" and "CAFÉ"'), ("red car,red  car", '"red car" and "red  car"')):
            p = self.segment("-c", names, "-o", os.path.join(self.tmp, "out"), img)
            self.assertEqual(p.returncode, 2, p.stderr)
            self.assertIn(shown, p.stderr)
            self.assertIn("same token ids", p.stderr)

    def test_control_characters_are_refused(self):
        f = os.path.join(self.tmp, "classes.txt")
        with open(f, "wb") as fh:
            fh.write(b"car\nro\x00ad\n")
        p = self.segment("-f", f, os.path.join(FIXTURE, "image.png"))
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn(f"{f}:2: the name contains the control character U+0000", p.stderr)
        p = self.segment("-c", "car,ro\x1bad", os.path.join(FIXTURE, "image.png"))
        self.assertEqual(p.returncode, 2, p.stderr)
        self.assertIn("U+001B", p.stderr)

    def test_lone_cr_ends_a_line(self):
        f = os.path.join(self.tmp, "classes.txt")
        with open(f, "wb") as fh:
            fh.write(b"# mac\rcar\rroad\r\nsky\r")
        out = os.path.join(self.tmp, "out")
        img = os.path.join(self.tmp, "a.png")
        small_image(img)
        p = self.segment("-f", f, "--json", "-o", out, img)
        self.assertEqual(p.returncode, 0, p.stderr)
        with open(os.path.join(out, "a.json"), encoding="utf-8") as fh:
            self.assertEqual(json.load(fh)["classes"], ["car", "road", "sky"])


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
