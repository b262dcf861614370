"""`ovseg segment` on video files, with the repository's demo model (needs no ../shared).

The test makes its videos itself with OpenCV's VideoWriter (python3-opencv: the same OpenCV and
FFmpeg as the binary) from the demo model's example images, resized to one small size and some
repeated. The main video is FFV1 in Matroska, which OpenCV writes and reads losslessly, so each
frame can be segmented as a PNG image too and the label maps compared byte for byte.

Environment (set by ctest): OVSEG_BIN = the built `ovseg`.
"""
import glob
import json
import os
import shutil
import signal
import subprocess
import tempfile
import time
import unittest

from demo_env import BIN, DEMO, require_binary

try:
    import cv2
    import numpy as np
except ImportError:  # pragma: no cover - reported as a skip
    cv2 = None

IMAGES = os.path.join(DEMO, "examples", "images")
CLASSES = os.path.join(DEMO, "examples", "classes.txt")
W, H, FPS = 160, 128, 10.0
ORDER = [0, 1, 2, 3, 4, 5, 0, 3, 1]  # 9 frames: every example image, some repeated


def example_frames(order=ORDER):
    names = sorted(glob.glob(os.path.join(IMAGES, "*.png")))
    base = [cv2.resize(cv2.imread(n, cv2.IMREAD_COLOR), (W, H), interpolation=cv2.INTER_AREA) for n in names]
    return [base[i % len(base)] for i in order]


def write_video(path, frames, fourcc="FFV1", fps=FPS):
    vw = cv2.VideoWriter(path, cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*fourcc), fps, (W, H))
    if not vw.isOpened():
        raise unittest.SkipTest(f"OpenCV's VideoWriter cannot write {fourcc} to {os.path.basename(path)}")
    for f in frames:
        vw.write(f)
    vw.release()


def read_video(path):
    """(frames, fps, width, height) as OpenCV decodes the file."""
    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    if not cap.isOpened():
        return None, 0.0, 0, 0
    fps, w, h = (
        cap.get(cv2.CAP_PROP_FPS),
        int(cap.get(cv2.CAP_PROP_FRAME_WIDTH)),
        int(cap.get(cv2.CAP_PROP_FRAME_HEIGHT)),
    )
    frames = []
    while True:
        ok, f = cap.read()
        if not ok:
            break
        frames.append(f)
    return frames, fps, w, h


def read_bytes(path):
    with open(path, "rb") as f:
        return f.read()


class VideoCli(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        require_binary()
        if cv2 is None:
            raise unittest.SkipTest("no OpenCV for this Python (Debian python3-opencv) to make the test videos")
        cls.tmp = tempfile.mkdtemp(prefix="ovseg_video_")
        cls.frames = example_frames()
        cls.video = os.path.join(cls.tmp, "clip.mkv")
        write_video(cls.video, cls.frames)
        decoded, _, _, _ = read_video(cls.video)
        if (
            decoded is None
            or len(decoded) != len(cls.frames)
            or any((a != b).any() for a, b in zip(decoded, cls.frames))
        ):
            raise unittest.SkipTest("this OpenCV does not read back FFV1/Matroska losslessly")
        # The reference: each frame as a PNG image, segmented by `ovseg segment` as an image.
        cls.frame_dir = os.path.join(cls.tmp, "frames")
        os.makedirs(cls.frame_dir)
        for k, f in enumerate(decoded):
            cv2.imwrite(os.path.join(cls.frame_dir, "%06d.png" % k), f)
        cls.ref = os.path.join(cls.tmp, "ref")
        p = cls.run_ovseg("segment", "-m", DEMO, "-f", CLASSES, "-j", "2", "--json", "-o", cls.ref, cls.frame_dir)
        if p.returncode != 0:
            raise AssertionError(p.stderr)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    @classmethod
    def run_ovseg(cls, *args, timeout=300):
        env = dict(os.environ, OVSEG_CACHE_DIR=os.path.join(cls.tmp, "text-cache"))
        return subprocess.run([BIN, *args], capture_output=True, text=True, env=env, timeout=timeout)

    def segment(self, out, *inputs, extra=(), rc=0):
        p = self.run_ovseg("segment", "-m", DEMO, "-f", CLASSES, "-j", "2", "-o", out, *extra, *inputs)
        self.assertEqual(p.returncode, rc, p.stderr)
        return p

    def assert_labels_match_reference(self, label_dir, indices):
        names = sorted(os.path.basename(f) for f in glob.glob(os.path.join(label_dir, "*.png")))
        self.assertEqual(names, ["%06d.png" % k for k in indices])
        for n in names:
            self.assertEqual(read_bytes(os.path.join(label_dir, n)), read_bytes(os.path.join(self.ref, n)), n)

    def assert_no_temporaries(self, out):
        left = [f for f in glob.glob(os.path.join(out, "**", "*"), recursive=True) if ".tmp" in os.path.basename(f)]
        self.assertEqual(left, [])

    def test_every_frame_equals_the_frame_segmented_as_an_image(self):
        out = os.path.join(self.tmp, "all")
        p = self.segment(out, self.video, extra=["--overlay", "--json"])
        self.assertIn("1 images, 0 failed", p.stderr)
        self.assert_labels_match_reference(os.path.join(out, "clip"), range(len(self.frames)))
        frames, fps, w, h = read_video(os.path.join(out, "clip.overlay.mp4"))
        self.assertIsNotNone(frames, "the overlay video does not open")
        self.assertEqual((len(frames), w, h), (len(self.frames), W, H))
        self.assertAlmostEqual(fps, FPS, places=3)
        with open(os.path.join(out, "clip.json")) as f:
            report = json.load(f)
        self.assertTrue(report["complete"])
        self.assertEqual((report["frames_read"], report["frames_segmented"]), (9, 9))
        self.assertEqual(report["video"], {"width": W, "height": H, "fps": FPS, "frames": 9})
        self.assertEqual([fr["index"] for fr in report["frames"]], list(range(9)))
        for fr in report["frames"]:
            with open(os.path.join(self.ref, "%06d.json" % fr["index"])) as f:
                image_report = json.load(f)
            self.assertEqual(fr["pixel_share"], image_report["pixel_share"])
            self.assertAlmostEqual(fr["time_s"], fr["index"] / FPS, places=3)
            self.assertIn("segment_total", fr["timings_ms"])
        self.assert_no_temporaries(out)

    def test_every_third_frame(self):
        out = os.path.join(self.tmp, "every3")
        self.segment(out, self.video, extra=["--every", "3", "--overlay", "--json"])
        self.assert_labels_match_reference(os.path.join(out, "clip"), [0, 3, 6])
        frames, fps, w, h = read_video(os.path.join(out, "clip.overlay.mp4"))
        self.assertEqual((len(frames), w, h), (9, W, H))  # the source's timing: every frame is in the overlay
        with open(os.path.join(out, "clip.json")) as f:
            report = json.load(f)
        self.assertEqual((report["frames_read"], report["frames_segmented"]), (9, 3))

    def test_start_and_max_frames(self):
        out = os.path.join(self.tmp, "window")
        # 10 fps: --start 0.25 s is frame 3; 4 frames from there, every second one segmented.
        self.segment(out, self.video, extra=["--start", "0.25", "--max-frames", "4", "--every", "2", "--overlay"])
        self.assert_labels_match_reference(os.path.join(out, "clip"), [3, 5])
        frames, _, _, _ = read_video(os.path.join(out, "clip.overlay.mp4"))
        self.assertEqual(len(frames), 4)
        p = self.segment(os.path.join(self.tmp, "late"), self.video, extra=["--start", "5"], rc=1)
        self.assertIn("at or after the video's end", p.stderr)

    def test_save_scores_needs_max_frames(self):
        out = os.path.join(self.tmp, "scores")
        p = self.segment(out, self.video, extra=["--save-scores"], rc=2)
        self.assertIn("--max-frames", p.stderr)
        self.assertIn("too large", p.stderr)
        self.assertFalse(os.path.exists(os.path.join(out, "clip")))
        self.segment(out, self.video, extra=["--save-scores", "--max-frames", "2"])
        scores = np.load(os.path.join(out, "clip", "000001.scores.npy"))
        self.assertEqual(scores.shape[1:], (H, W))
        self.assertEqual(
            sorted(os.listdir(os.path.join(out, "clip"))),
            ["000000.png", "000000.scores.npy", "000001.png", "000001.scores.npy"],
        )

    def test_detected_by_content_not_by_name(self):
        inputs = os.path.join(self.tmp, "named")
        os.makedirs(inputs, exist_ok=True)
        shutil.copyfile(self.video, os.path.join(inputs, "movie.png"))  # a video named like an image
        shutil.copyfile(
            os.path.join(self.frame_dir, "000002.png"), os.path.join(inputs, "still.mp4")
        )  # and the reverse
        out = os.path.join(self.tmp, "named_out")
        self.segment(
            out, os.path.join(inputs, "movie.png"), os.path.join(inputs, "still.mp4"), extra=["--max-frames", "2"]
        )
        self.assert_labels_match_reference(os.path.join(out, "movie"), [0, 1])
        self.assertEqual(read_bytes(os.path.join(out, "still.png")), read_bytes(os.path.join(self.ref, "000002.png")))

    def test_bad_videos_fail_and_the_batch_goes_on(self):
        bad = os.path.join(self.tmp, "bad")
        os.makedirs(bad, exist_ok=True)
        truncated = os.path.join(bad, "truncated.mkv")
        data = read_bytes(self.video)
        with open(truncated, "wb") as f:
            f.write(data[: len(data) * 6 // 10])
        zero_avi = os.path.join(bad, "zero.avi")
        write_video(zero_avi, [], fourcc="MJPG")
        zero_mp4 = os.path.join(bad, "empty.mp4")
        write_video(zero_mp4, [], fourcc="mp4v")
        fake = os.path.join(bad, "notes.mp4")
        with open(fake, "w") as f:
            f.write("this is not a video, whatever its name says\n")
        image = os.path.join(self.frame_dir, "000004.png")
        out = os.path.join(self.tmp, "bad_out")
        p = self.segment(out, truncated, zero_avi, zero_mp4, fake, image, extra=["--overlay", "--json"], rc=1)
        self.assertIn("4 of 5 images failed", p.stderr)
        lines = {
            os.path.basename(line.strip().split(":")[0]): line
            for line in p.stderr.splitlines()
            if line.startswith("  ") and ":" in line
        }
        self.assertRegex(lines["truncated.mkv"], r"decoding stopped at frame \d+ of the 9")
        self.assertIn("has no frames", lines["zero.avi"])
        self.assertIn("no video stream", lines["empty.mp4"])
        self.assertIn("neither a video", lines["notes.mp4"])
        # The batch went on: the image after them was segmented.
        self.assertEqual(read_bytes(os.path.join(out, "000004.png")), read_bytes(os.path.join(self.ref, "000004.png")))
        # The truncated video: the frames that decoded were segmented, the outputs are finalised.
        done = int(lines["truncated.mkv"].split("decoding stopped at frame ")[1].split()[0])
        self.assertGreater(done, 0)
        self.assertLess(done, 9)
        self.assert_labels_match_reference(os.path.join(out, "truncated"), range(done))
        frames, _, _, _ = read_video(os.path.join(out, "truncated.overlay.mp4"))
        self.assertEqual(len(frames), done)
        with open(os.path.join(out, "truncated.json")) as f:
            report = json.load(f)
        self.assertFalse(report["complete"])
        self.assertIn("decoding stopped", report["error"])
        for name in ("zero", "empty", "notes"):
            self.assertEqual(glob.glob(os.path.join(out, name + "*")), [])
        self.assert_no_temporaries(out)

    def test_interrupted_run_leaves_a_playable_video_or_none(self):
        long_video = os.path.join(self.tmp, "long.avi")
        write_video(long_video, example_frames(list(range(6)) * 10), fourcc="MJPG")  # 60 frames
        out = os.path.join(self.tmp, "interrupted")
        env = dict(os.environ, OVSEG_CACHE_DIR=os.path.join(self.tmp, "text-cache"))
        proc = subprocess.Popen(
            [BIN, "segment", "-m", DEMO, "-f", CLASSES, "-j", "1", "--overlay", "--json", "-o", out, long_video],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        deadline = time.time() + 120
        while time.time() < deadline and len(glob.glob(os.path.join(out, "long", "*.png"))) < 3:
            time.sleep(0.05)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)
        self.assertEqual(proc.returncode, 130, err)
        labels = glob.glob(os.path.join(out, "long", "*.png"))
        self.assertGreaterEqual(len(labels), 3)
        self.assertLess(len(labels), 60, "the run was not interrupted")
        final = os.path.join(out, "long.overlay.mp4")
        if os.path.exists(final):
            frames, _, w, h = read_video(final)
            self.assertIsNotNone(frames, "the interrupted run left an unplayable overlay")
            self.assertEqual((len(frames), w, h), (len(labels), W, H))
            with open(os.path.join(out, "long.json")) as f:
                report = json.load(f)
            self.assertTrue(report["interrupted"])
            self.assertEqual(report["frames_segmented"], len(labels))
        self.assert_no_temporaries(out)


if __name__ == "__main__":
    unittest.main()
