"""End-to-end tests of `ovseg eval` and `ovseg eval-merge` with the tiny fixture bundle.

A small A-150 layout is built from the fixture image (several crops with random labels, one
corrupt JPEG, one label without image). The metrics of `ovseg eval` are checked against numpy
computed from its --save-predictions outputs and the ground truth; shards + eval-merge and
--limit/kill + --resume must give identical numbers.

Environment: OVSEG_BIN (the built ovseg), OVSEG_TEST_BUNDLE_DIR (bundles exported by ctest's
export_fixture_bundles), OVSEG_SHARED_DIR (../shared/ovseg). Skips when any is missing.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import unittest

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE_DIR = os.environ.get("OVSEG_SOURCE_DIR", os.path.dirname(os.path.dirname(HERE)))
SHARED = os.environ.get("OVSEG_SHARED_DIR", os.path.join(SOURCE_DIR, "..", "shared", "ovseg"))

sys.path.insert(0, os.path.join(SOURCE_DIR, "tests", "eval"))
from expected_metrics import metrics_from_pairs  # noqa: E402  (the eval unit tests' numpy oracle)

BIN = os.environ.get("OVSEG_BIN", "")
BUNDLE = os.path.join(os.environ.get("OVSEG_TEST_BUNDLE_DIR", ""), "tiny_swin_vit")
FIXTURE_IMAGE = os.path.join(SHARED, "fixtures", "tiny_swin_vit", "image.png")
PRESETS = os.path.join(SHARED, "class_lists.json")

K = 150
IGNORE = 255
HEADLINE_KEYS = ("mIoU", "mIoU_gt_classes", "fwIoU", "mACC", "pACC")


def missing_inputs():
    missing = []
    if not BIN or not os.path.isfile(BIN):
        missing.append("OVSEG_BIN (the built ovseg binary)")
    if not os.path.isfile(os.path.join(BUNDLE, "manifest.json")):
        missing.append(f"the tiny bundle {BUNDLE} (exported by ctest's export_fixture_bundles)")
    for f in (FIXTURE_IMAGE, PRESETS):
        if not os.path.isfile(f):
            missing.append(f)
    return missing


def expected_metrics(pairs):
    """detectron2 0.6 SemSegEvaluator on (pred, gt) label arrays, plus the newer mIoU (the numpy
    oracle of the eval unit tests)."""
    return metrics_from_pairs(pairs, K, IGNORE)


def numbers(metrics_json):
    """What must be identical between runs: headline, per-class values and counts."""
    per_class = [(c["IoU"], c["ACC"], c["gt_pixels"], c["pred_pixels"], c["tp"]) for c in metrics_json["per_class"]]
    return (
        {k: metrics_json[k] for k in HEADLINE_KEYS},
        per_class,
        metrics_json["counts"]["images_evaluated"],
        metrics_json["counts"]["pixels_evaluated"],
    )


@unittest.skipIf(missing_inputs(), "missing: " + "; ".join(missing_inputs()))
class EvalCliTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="ovseg-eval-cli-")
        cls.env = dict(os.environ, OVSEG_PRESETS=PRESETS, OVSEG_CACHE_DIR=os.path.join(cls.tmp, "cache"))
        cls.root = os.path.join(cls.tmp, "datasets")
        cls.image_dir = os.path.join(cls.root, "ADEChallengeData2016", "images", "validation")
        cls.label_dir = os.path.join(cls.root, "ADEChallengeData2016", "annotations_detectron2", "validation")
        os.makedirs(cls.image_dir)
        os.makedirs(cls.label_dir)
        rng = np.random.default_rng(5)
        src = Image.open(FIXTURE_IMAGE).convert("RGB")
        crops = [(0, 0, 401, 402), (40, 30, 340, 250), (0, 100, 401, 402), (120, 0, 401, 300), (10, 10, 250, 390)]
        cls.valid_stems = []
        for i, box in enumerate(crops):
            stem = f"ADE_val_{i + 1:08d}"
            img = src.crop(box)
            if i % 2:
                img = img.transpose(Image.FLIP_LEFT_RIGHT)
            img.save(os.path.join(cls.image_dir, stem + ".jpg"), quality=90)
            w, h = img.size
            # A few classes in blocks, some ignore pixels; classes 140+ never appear in the GT.
            pool = rng.choice(140, size=6, replace=False)
            small = rng.choice(pool, size=((h + 15) // 16, (w + 15) // 16))
            gt = np.kron(small, np.ones((16, 16), dtype=np.int64))[:h, :w].astype(np.uint8)
            gt[rng.random((h, w)) < 0.08] = IGNORE
            Image.fromarray(gt, mode="L").save(os.path.join(cls.label_dir, stem + ".png"))
            cls.valid_stems.append(stem)
        # A corrupt image with a valid label, and a label without image.
        with open(os.path.join(cls.image_dir, "ADE_val_00000090.jpg"), "wb") as f:
            f.write(b"\xff\xd8\xff\xe0 not really a jpeg")
        Image.fromarray(np.zeros((20, 30), np.uint8), mode="L").save(
            os.path.join(cls.label_dir, "ADE_val_00000090.png")
        )
        Image.fromarray(np.zeros((20, 30), np.uint8), mode="L").save(
            os.path.join(cls.label_dir, "ADE_val_00000091.png")
        )
        cls.total_pairs = len(cls.valid_stems) + 1

        # The reference run, used by every test.
        cls.full_out = os.path.join(cls.tmp, "full")
        t0 = time.monotonic()
        cls.full = cls.run_eval(cls, "--output", cls.full_out, "--save-predictions")
        cls.full_seconds = time.monotonic() - t0

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def run_eval(self, *args, timeout=900, env=None):
        cmd = [
            BIN,
            "eval",
            "--model",
            BUNDLE,
            "--dataset",
            "ade150",
            "--root",
            self.root,
            "--threads",
            "2",
            "--checkpoint-every",
            "1",
            *args,
        ]
        return subprocess.run(cmd, capture_output=True, text=True, env=env or self.env, timeout=timeout)

    def metrics(self, out_dir):
        with open(os.path.join(out_dir, "metrics.json")) as f:
            return json.load(f)

    def test_full_run_matches_numpy_on_the_saved_predictions(self):
        r = self.full
        self.assertEqual(r.returncode, 1, r.stderr)  # one corrupt image, one unpaired label
        for name in ("metrics.json", "per_class.csv", "metrics.md", "checkpoint.json"):
            self.assertTrue(os.path.isfile(os.path.join(self.full_out, name)), name)
        m = self.metrics(self.full_out)
        self.assertEqual(m["counts"]["images_evaluated"], len(self.valid_stems))
        skipped = {os.path.basename(s["name"]) for s in m["skipped"]}
        self.assertEqual(skipped, {"ADE_val_00000090", "ADE_val_00000091.png"})
        self.assertIn("ADE_val_00000090", r.stderr)
        self.assertIn("ADE_val_00000091.png", r.stderr)

        pairs = []
        for stem in self.valid_stems:
            pred_path = os.path.join(self.full_out, "predictions", stem + ".png")
            with Image.open(pred_path) as p:
                self.assertEqual(p.mode, "L")
                pred = np.array(p)
            with Image.open(os.path.join(self.label_dir, stem + ".png")) as g:
                gt = np.array(g)
            self.assertEqual(pred.shape, gt.shape)
            self.assertTrue((pred < K).all(), "eval mode predicts a class for every pixel")
            pairs.append((pred, gt))
        e = expected_metrics(pairs)
        for key in HEADLINE_KEYS:
            self.assertEqual(m[key], e[key], key)
        for c in range(K):
            self.assertEqual(m["per_class"][c]["IoU"], e["IoU"][c], c)
            self.assertEqual(m["per_class"][c]["ACC"], e["ACC"][c], c)
        with open(PRESETS) as f:
            names = [n.strip() for n in json.load(f)["ade150"]]
        self.assertEqual([c["name"] for c in m["per_class"]], names)

        lines = r.stdout.strip().splitlines()
        self.assertGreaterEqual(len(lines), 2, r.stdout)
        self.assertEqual(
            lines[-1], "mIoU=%.2f fwIoU=%.2f mACC=%.2f pACC=%.2f" % (m["mIoU"], m["fwIoU"], m["mACC"], m["pACC"])
        )
        self.assertEqual(lines[-2], "mIoU_gt_classes=%.2f" % m["mIoU_gt_classes"])
        timing = m["timing"]
        self.assertEqual(timing["images"], len(self.valid_stems))
        self.assertGreater(timing["images_per_s"], 0)
        for stage in ("proposals", "clip", "text"):
            self.assertIn(stage, timing["mean_ms_per_image"])
        self.assertGreater(timing["mean_ms_per_image"]["proposals"], 0)
        print(
            f"\n[eval-cli] tiny bundle: {timing['images_per_s']:.2f} images/s in the loop "
            f"({len(self.valid_stems)} images, whole command {self.full_seconds:.1f} s incl. load and text)"
        )

    def test_shards_merged_equal_the_single_run(self):
        # Shard 0 as I/N, shard 1 as a Slurm array task (--array=1-2: task 2 is shard 1 of 2).
        slurm = {
            "SLURM_ARRAY_JOB_ID": "41",
            "SLURM_ARRAY_TASK_ID": "2",
            "SLURM_ARRAY_TASK_MIN": "1",
            "SLURM_ARRAY_TASK_MAX": "2",
            "SLURM_ARRAY_TASK_COUNT": "2",
            "SLURM_ARRAY_TASK_STEP": "1",
        }
        outs = [os.path.join(self.tmp, f"shard{i}") for i in range(2)]
        r = self.run_eval("--shard", "0/2", "--output", outs[0])
        self.assertIn(r.returncode, (0, 1), r.stderr)
        r = self.run_eval("--shard", "auto", "--output", outs[1], "-v", env=dict(self.env, **slurm))
        self.assertIn(r.returncode, (0, 1), r.stderr)
        self.assertIn("shard 1/2 (Slurm array task 2 of 1-2 (job 41))", r.stderr)
        with open(os.path.join(outs[1], "checkpoint.json")) as f:
            self.assertEqual(json.load(f)["shard"], {"index": 1, "count": 2})
        sizes = [self.metrics(o)["counts"]["images_selected"] for o in outs]
        self.assertEqual(sum(sizes), self.total_pairs)
        merged = os.path.join(self.tmp, "merged")
        r = subprocess.run(
            [BIN, "eval-merge", "--output", merged, *outs], capture_output=True, text=True, env=self.env, timeout=300
        )
        self.assertEqual(r.returncode, 1, r.stderr)  # the skipped files are still reported
        self.assertEqual(numbers(self.metrics(merged)), numbers(self.metrics(self.full_out)))
        self.assertEqual(r.stdout.strip().splitlines()[-1], self.full.stdout.strip().splitlines()[-1])
        # A missing shard is named and nothing is merged; --partial merges what is there.
        partial = os.path.join(self.tmp, "merged_partial")
        r = subprocess.run(
            [BIN, "eval-merge", "--output", partial, outs[0]], capture_output=True, text=True, env=self.env, timeout=300
        )
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("shard 1/2 is missing", r.stderr)
        self.assertIn("nothing merged", r.stderr)
        self.assertFalse(os.path.exists(partial))
        r = subprocess.run(
            [BIN, "eval-merge", "--partial", "--output", partial, outs[0]],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=300,
        )
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertIn("incomplete: shard 1/2 is missing", r.stderr)
        self.assertTrue(os.path.isfile(os.path.join(partial, "metrics.json")))

    def test_eval_merge_refuses_shards_that_do_not_fit_together(self):
        # Shard checkpoints made up from the single run's (no model run needed): an unfinished
        # shard, another bundle, a shard given twice and a directory without checkpoint.
        with open(os.path.join(self.full_out, "checkpoint.json")) as f:
            base = json.load(f)
        dirs = []
        for name, index, change in (("a", 0, None), ("b", 1, "unfinished"), ("c", 2, "bundle"), ("d", 2, None)):
            state = json.loads(json.dumps(base))
            state["shard"] = {"index": index, "count": 4}
            if change == "unfinished":
                state["finished"] = state["finished"][:1]
                state["failed"] = []
            if change == "bundle":
                state["settings"]["bundle_sha256"] = "f" * 64
            d = os.path.join(self.tmp, "bad-shards", name)
            os.makedirs(d)
            with open(os.path.join(d, "checkpoint.json"), "w") as f:
                json.dump(state, f)
            dirs.append(d)
        empty = os.path.join(self.tmp, "bad-shards", "never-started")
        os.makedirs(empty)
        out = os.path.join(self.tmp, "bad-merged")
        r = subprocess.run(
            [BIN, "eval-merge", "--output", out, *dirs, empty],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=300,
        )
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertFalse(os.path.exists(out), "nothing is written")
        self.assertIn("never-started: no checkpoint.json", r.stderr)
        self.assertIn(f"{dirs[1]} (shard 1/4) is unfinished: 1 of {self.total_pairs} images", r.stderr)
        self.assertIn(f"{dirs[2]} (shard 2/4) was evaluated with another model bundle", r.stderr)
        self.assertIn(f"shard 2/4 is given more than once: {dirs[2]} and {dirs[3]}", r.stderr)
        self.assertIn("shard 3/4 is missing", r.stderr)
        self.assertIn("nothing merged (5 problems)", r.stderr)

    def test_shard_auto_outside_an_array_is_a_usage_error(self):
        env = {k: v for k, v in self.env.items() if not k.startswith("SLURM_") and k != "JOB_COMPLETION_INDEX"}
        out = os.path.join(self.tmp, "auto-nowhere")
        r = self.run_eval("--shard", "auto", "--output", out, env=env)
        self.assertEqual(r.returncode, 2)
        self.assertIn("SLURM_ARRAY_TASK_ID", r.stderr)
        self.assertIn("JOB_COMPLETION_INDEX", r.stderr)
        r = self.run_eval("--shard", "auto", "--output", out, env=dict(env, JOB_COMPLETION_INDEX="1"))
        self.assertEqual(r.returncode, 2)
        self.assertIn("OVSEG_SHARD_COUNT", r.stderr)
        self.assertFalse(os.path.exists(out))

    def test_limit_then_resume_equals_the_single_run(self):
        out = os.path.join(self.tmp, "limited")
        r = self.run_eval("--limit", "2", "--output", out)
        self.assertEqual(r.returncode, 1, r.stderr)  # the first two images are fine; the unpaired label counts
        self.assertEqual(self.metrics(out)["counts"]["images_evaluated"], 2)
        self.assertEqual(len(self.metrics(out)["skipped"]), 1)
        r = self.run_eval("--output", out)
        self.assertEqual(r.returncode, 2, "an existing checkpoint needs --resume")
        self.assertIn("--resume", r.stderr)
        r = self.run_eval("--output", out, "--resume")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(numbers(self.metrics(out)), numbers(self.metrics(self.full_out)))

    def test_kill_then_resume_equals_the_single_run(self):
        out = os.path.join(self.tmp, "killed")
        cmd = [
            BIN,
            "eval",
            "--model",
            BUNDLE,
            "--dataset",
            "ade150",
            "--root",
            self.root,
            "--threads",
            "2",
            "--checkpoint-every",
            "1",
            "--output",
            out,
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, env=self.env)
        checkpoint = os.path.join(out, "checkpoint.json")
        deadline = time.monotonic() + 600
        killed_after = None
        while proc.poll() is None and time.monotonic() < deadline:
            try:
                with open(checkpoint) as f:
                    done = len(json.load(f)["finished"])
            except (OSError, ValueError):
                done = 0
            if done >= 1:
                proc.send_signal(signal.SIGKILL)  # no chance to save anything more
                killed_after = done
                break
            time.sleep(0.05)
        proc.wait(timeout=60)
        if killed_after is None:
            print("\n[eval-cli] the run finished before it could be killed; checking --resume of a finished run")
        r = self.run_eval("--output", out, "--resume")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(numbers(self.metrics(out)), numbers(self.metrics(self.full_out)))

    def test_sigterm_checkpoints_exits_130_and_resumes(self):
        out = os.path.join(self.tmp, "terminated")
        cmd = [
            BIN,
            "eval",
            "--model",
            BUNDLE,
            "--dataset",
            "ade150",
            "--root",
            self.root,
            "--threads",
            "2",
            "--checkpoint-every",
            "100",
            "--output",
            out,
        ]
        proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=self.env)
        progress_seen = False
        # The progress line of the first image is the cue (checkpoints are rare with --checkpoint-every 100).
        for line in proc.stderr:
            if line.startswith("progress: 1/"):
                progress_seen = True
                proc.send_signal(signal.SIGTERM)
                break
        stdout, stderr = proc.communicate(timeout=600)
        if progress_seen and proc.returncode == 130:
            self.assertIn("--resume", stderr)
            self.assertEqual(stdout.strip(), "", "no headline for an unfinished run")
            with open(os.path.join(out, "checkpoint.json")) as f:
                state = json.load(f)
            # The images finished before the signal were saved on the way out, not only at checkpoints.
            self.assertGreaterEqual(len(state["finished"]) + len(state["failed"]), 1)
            self.assertLess(len(state["finished"]) + len(state["failed"]), self.total_pairs)
        else:
            print(f"\n[eval-cli] the run ended (rc {proc.returncode}) before SIGTERM took effect")
        r = self.run_eval("--output", out, "--resume")
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertEqual(numbers(self.metrics(out)), numbers(self.metrics(self.full_out)))

    def test_missing_dataset_directory_is_a_data_error(self):
        r = subprocess.run(
            [
                BIN,
                "eval",
                "--model",
                BUNDLE,
                "--dataset",
                "ade847",
                "--root",
                self.root,
                "--output",
                os.path.join(self.tmp, "none"),
            ],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=300,
        )
        self.assertEqual(r.returncode, 4)
        self.assertIn("ADE20K_2021_17_01", r.stderr)
        r = subprocess.run(
            [BIN, "eval", "--model", BUNDLE, "--dataset", "pc59", "--root", self.root],
            capture_output=True,
            text=True,
            env=self.env,
            timeout=300,
        )
        self.assertEqual(r.returncode, 4)  # PC-59's directory is missing too (a data error, not usage)


if __name__ == "__main__":
    unittest.main()
