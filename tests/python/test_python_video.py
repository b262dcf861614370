"""ovseg.segment_video / Model.segment_video from Python on the repository's demo model (needs no
../shared): a generator of (frame_index, Result) equal to Model.segment on each decoded frame.
The test videos are made with OpenCV (python3-opencv); without cv2 the module skips.
Run by ctest: `python3 test_python_video.py`.
"""
import glob
import os
import shutil
import tempfile
import unittest

import numpy as np

import ovseg  # noqa: E402  (PYTHONPATH set by ctest)

try:
    import cv2
except ImportError:  # pragma: no cover - reported as a skip
    cv2 = None

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEMO = os.path.join(ROOT, "models", "demo")
with open(os.path.join(DEMO, "examples", "classes.txt"), encoding="utf-8") as _f:
    CLASSES = [line.strip() for line in _f if line.strip()]
W, H, FPS = 160, 128, 10.0


class SegmentVideo(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        if cv2 is None:
            raise unittest.SkipTest("no OpenCV for this Python (Debian python3-opencv)")
        ovseg.set_log_level("warn")
        cls.tmp = tempfile.mkdtemp(prefix="ovseg_pyvideo_")
        names = sorted(glob.glob(os.path.join(DEMO, "examples", "images", "*.png")))
        cls.frames = [cv2.resize(cv2.imread(n), (W, H), interpolation=cv2.INTER_AREA) for n in names][:4] * 2  # 8
        cls.video = os.path.join(cls.tmp, "clip.mkv")
        vw = cv2.VideoWriter(cls.video, cv2.CAP_FFMPEG, cv2.VideoWriter_fourcc(*"FFV1"), FPS, (W, H))
        if not vw.isOpened():
            raise unittest.SkipTest("OpenCV cannot write FFV1/Matroska here")
        for f in cls.frames:
            vw.write(f)
        vw.release()
        cls.model = ovseg.Model.load(DEMO, threads=2, text_cache=False)
        cls.want = [cls.model.segment(np.ascontiguousarray(f[:, :, ::-1]), CLASSES) for f in cls.frames]

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def check(self, got, indices):
        self.assertEqual([i for i, _ in got], indices)
        for i, r in got:
            self.assertIsInstance(r, ovseg.Result)
            self.assertTrue(np.array_equal(r.labels, self.want[i].labels), f"frame {i}")
            self.assertEqual(r.classes, CLASSES)

    def test_every_frame_and_every_third(self):
        self.check(list(ovseg.segment_video(self.model, self.video, CLASSES)), list(range(8)))
        self.check(list(self.model.segment_video(self.video, CLASSES, every=3)), [0, 3, 6])

    def test_start_and_max_frames(self):
        self.check(list(self.model.segment_video(self.video, CLASSES, start=0.25, max_frames=3)), [3, 4, 5])
        with self.assertRaises(ovseg.InvalidArgumentError):
            list(self.model.segment_video(self.video, CLASSES, start=5.0))
        with self.assertRaises(ovseg.InvalidArgumentError):
            list(self.model.segment_video(self.video, CLASSES, every=0))

    def test_lazy(self):
        it = self.model.segment_video(self.video, CLASSES, mode="eval")
        self.check([next(it)], [0])
        it.close()

    def test_bad_files(self):
        truncated = os.path.join(self.tmp, "truncated.mkv")
        with open(self.video, "rb") as f:
            data = f.read()
        with open(truncated, "wb") as f:
            f.write(data[: len(data) * 6 // 10])
        got = []
        with self.assertRaises(ovseg.ImageError) as cm:
            for item in self.model.segment_video(truncated, CLASSES):
                got.append(item)
        self.assertIn("decoding stopped at frame", str(cm.exception))
        self.assertGreater(len(got), 0)
        self.check(got, list(range(len(got))))
        fake = os.path.join(self.tmp, "fake.mp4")
        with open(fake, "w") as f:
            f.write("not a video\n")
        with self.assertRaises(ovseg.FileError) as cm:
            list(self.model.segment_video(fake, CLASSES))
        self.assertEqual(cm.exception.code, ovseg.ErrorCode.IO)


if __name__ == "__main__":
    unittest.main()
