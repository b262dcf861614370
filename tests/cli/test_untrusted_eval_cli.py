"""`ovseg eval-merge` and `--shard` with hostile input (needs no ../shared): shard checkpoints are
written here, valid ones and tampered ones. A stem that is a path never reaches the file system, -o
naming an input shard is refused, N is bounded, names with terminal escapes print escaped. A
tampered checkpoint is a data error (exit 4, naming it); a usage error exits 2.

Environment (set by ctest): OVSEG_BIN = the built `ovseg`.
"""
import json
import os
import shutil
import subprocess
import tempfile
import unittest

from demo_env import BIN, require_binary

STAGES = ("preprocess", "text", "proposals", "regions", "clip", "post")


def checkpoint(index, count, finished, failed=(), pairs_total=None, entries=None):
    timings = {"images": len(finished), "total_ms": 1.0, "step_ms": 1.0, "wall_s": 1.0, "text_prepare_ms": 0.0}
    timings.update({f"{s}_ms": 0.0 for s in STAGES})
    return {
        "format": "ovseg-eval-checkpoint",
        "version": 1,
        "dataset": "ade150",
        "split": "validation",
        "shard": {"index": index, "count": count},
        "class_names": ["a", "b"],
        "settings": {"bundle_sha256": "0123456789abcdef", "mode": "eval"},
        "pairs_total": len(finished) + len(failed) if pairs_total is None else pairs_total,
        "finished": list(finished),
        "failed": [{"name": n, "reason": r} for n, r in failed],
        "unpaired": [],
        "images_left_out": 0,
        "timings": timings,
        "merged_from": [],
        "confusion": {
            "num_classes": 2,
            "layout": "[pred, gt, count]",
            "entries": entries if entries is not None else [[0, 0, 10], [1, 1, 5]],
        },
    }


class UntrustedEvalInputs(unittest.TestCase):
    def setUp(self):
        require_binary()
        self.tmp = tempfile.mkdtemp(prefix="ovseg_untrusted_eval_")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def shard(self, name, state, parts=None):
        d = os.path.join(self.tmp, name)
        os.makedirs(d, exist_ok=True)
        with open(os.path.join(d, "checkpoint.json"), "w", encoding="utf-8") as f:
            json.dump(state, f)
        for stem, content in (parts or {}).items():
            pdir = os.path.join(d, "sem_seg_json_parts")
            os.makedirs(pdir, exist_ok=True)
            with open(os.path.join(pdir, stem + ".json"), "w") as f:
                f.write(content)
        return d

    def merge(self, *args):
        return subprocess.run([BIN, "eval-merge", *args], capture_output=True, text=True, timeout=120)

    def test_a_valid_pair_merges(self):
        a = self.shard("s0", checkpoint(0, 2, ["img_a"]), {"img_a": "[]"})
        b = self.shard("s1", checkpoint(1, 2, ["img_b"]), {"img_b": "[]"})
        r = self.merge("-o", os.path.join(self.tmp, "merged"), a, b)
        self.assertEqual(r.returncode, 0, r.stderr)

    def test_stems_that_are_paths_never_reach_the_file_system(self):
        secret_dir = os.path.join(self.tmp, "secret")
        os.makedirs(secret_dir)
        with open(os.path.join(secret_dir, "x.json"), "w") as f:
            f.write('[{"secret": "do not copy"}]')
        for stem in ("../../secret/x", os.path.join(secret_dir, "x")):
            with self.subTest(stem=stem):
                a = self.shard("p0", checkpoint(0, 2, ["img_a"]), {"img_a": "[]"})
                b = self.shard("p1", checkpoint(1, 2, [stem]), {"img_b": "[]"})
                out = os.path.join(self.tmp, "merged-p")
                r = self.merge("-o", out, a, b)
                self.assertEqual(r.returncode, 4, r.stderr)  # a data error, naming the checkpoint
                self.assertIn("not a plain file name", r.stderr)
                self.assertNotIn("Traceback", r.stderr)
                for root, _, files in os.walk(out) if os.path.isdir(out) else []:
                    for name in files:
                        with open(os.path.join(root, name), errors="replace") as f:
                            self.assertNotIn("do not copy", f.read())

    def test_output_naming_an_input_is_refused(self):
        a = self.shard("o0", checkpoint(0, 2, ["img_a"]))
        b = self.shard("o1", checkpoint(1, 2, ["img_b"]))
        with open(os.path.join(a, "checkpoint.json")) as f:
            before = f.read()
        for target in (a, a + "/", os.path.join(a, "..", "o0")):
            r = self.merge("-o", target, a, b)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn("given as input", r.stderr)
        with open(os.path.join(a, "checkpoint.json")) as f:
            self.assertEqual(f.read(), before)
        # A checkpoint file given as input protects its folder too.
        r = self.merge("-o", b, a, os.path.join(b, "checkpoint.json"))
        self.assertEqual(r.returncode, 2, r.stderr)

    def test_huge_shard_counts_are_refused_or_summarised(self):
        r = self.merge("-o", os.path.join(self.tmp, "m"), self.shard("h0", checkpoint(0, 999999999, ["img_a"])))
        self.assertEqual(r.returncode, 4, r.stderr)
        self.assertIn("out of range", r.stderr)
        # N = 100000 (the bound): one line for the 99999 missing shards, not 99999 lines.
        r = self.merge("-o", os.path.join(self.tmp, "m2"), self.shard("h1", checkpoint(0, 100000, ["img_a"])))
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("99999 of the 100000 shards are missing", r.stderr)
        self.assertLess(len(r.stderr.splitlines()), 10)
        p = subprocess.run(
            [BIN, "segment", "-m", "/nonexistent", "-c", "a", "--shard", "0/999999999", "x.png"],
            capture_output=True,
            text=True,
            timeout=60,
        )
        self.assertEqual(p.returncode, 2, p.stderr)

    def test_counts_are_checked(self):
        for state, needle in (
            (checkpoint(0, 1, ["img_a"], entries=[[0, 0, 2**63 - 1]]), "2^53"),
            (checkpoint(0, 1, ["img_a"], pairs_total=-5), "pairs_total"),
            (checkpoint(0, 0, ["img_a"]), "out of range"),
        ):
            with self.subTest(needle=needle):
                r = self.merge("-o", os.path.join(self.tmp, "mc"), self.shard("c0", state))
                self.assertEqual(r.returncode, 4, r.stderr)
                self.assertIn(needle, r.stderr)

    def test_names_with_terminal_escapes_print_escaped(self):
        evil = "img\x1b[2J\x1b]0;pwned\x07\nforged line"
        a = self.shard("e0", checkpoint(0, 1, ["img_a"], failed=[("img_b", f"cannot decode {evil}")]))
        r = self.merge("-o", os.path.join(self.tmp, "me"), a)
        self.assertEqual(r.returncode, 1, r.stderr)
        self.assertNotIn("\x1b", r.stderr)
        self.assertNotIn("\x07", r.stderr)
        self.assertIn("\\x1b[2J", r.stderr)
        self.assertNotIn("\nforged line", r.stderr)


if __name__ == "__main__":
    unittest.main(verbosity=2)
