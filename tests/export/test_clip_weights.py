"""--clip-weights (OpenAI's CLIP TorchScript archive or a plain CLIP state dict under a checkpoint
that lacks CLIP tensors) and the checkpoint forms detectron2's DetectionCheckpointer reads
({"model": ...}, a bare state dict, "module." prefixes, .pkl in the model-zoo and the Caffe2 form).

Synthetic files, written here from the primary shared fixture's checkpoint: its CLIP tensors are
split off into a TorchScript archive shaped like OpenAI's ViT-*.pt (with its non-weight entries
input_resolution / context_length / vocab_size) and into a plain state dict. Cost: four exports
of the tiny fixture (about 5 s each on the CI machine)."""
import collections
import json
import os
import pickle
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tools"))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import fixture_util  # noqa: E402
from ovseg_export import load  # noqa: E402

torch.set_num_threads(1)
PRIMARY = fixture_util.primary_fixture()
VOCAB = fixture_util.VOCAB
EXPORTER = os.path.join(REPO, "tools", "ovseg-export")
PYTHON = sys.executable or "/usr/bin/python3"
CLIP = "clip_adapter.clip_model."
OWN_CLIP_KEYS = (CLIP + "visual.mask_embedding",)  # ov-seg's additions: never in OpenAI's CLIP
SKIP_MSG = f"no shared fixture under {fixture_util.FIXTURES_DIR} (set OVSEG_SHARED_DIR)"


def run_exporter(*args):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    return subprocess.run([PYTHON, EXPORTER, *args], capture_output=True, text=True, env=env, timeout=900)


def fixture_state():
    obj = torch.load(PRIMARY.checkpoint, map_location="cpu")
    return collections.OrderedDict(obj["model"] if "model" in obj else obj)


def split_clip(sd):
    """(checkpoint without OpenAI-CLIP tensors, those tensors under OpenAI's names)."""
    rest, clip = collections.OrderedDict(), collections.OrderedDict()
    for k, v in sd.items():
        if k.startswith(CLIP) and k not in OWN_CLIP_KEYS:
            clip[k[len(CLIP) :]] = v
        else:
            rest[k] = v
    return rest, clip


def write_torchscript_clip(path, clip_sd):
    """A TorchScript archive whose state dict has OpenAI's CLIP layout (what clip.load(jit=False)
    reads off ViT-B-16.pt), including its non-weight entries."""
    root = nn.Module()
    entries = dict(clip_sd)
    entries.update(
        {"input_resolution": torch.tensor(224), "context_length": torch.tensor(77), "vocab_size": torch.tensor(49408)}
    )
    for key, t in entries.items():
        *parents, leaf = key.split(".")
        m = root
        for p in parents:
            if not isinstance(getattr(m, p, None), nn.Module):
                m.add_module(p, nn.Module())
            m = getattr(m, p)
        if t.is_floating_point():
            m.register_parameter(leaf, nn.Parameter(t.clone(), requires_grad=False))
        else:
            m.register_buffer(leaf, t.clone())
    torch.jit.script(root).save(path)
    return path


def module_states(bundle):
    return {
        f: torch.jit.load(os.path.join(bundle, f)).state_dict()
        for f in ("proposals.pt", "clip_visual.pt", "clip_text.pt")
    }


@unittest.skipUnless(PRIMARY is not None and os.path.isfile(VOCAB), SKIP_MSG)
class ClipWeightsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="ovseg-test-clipw-")
        cls.sd = fixture_state()
        cls.rest, cls.clip = split_clip(cls.sd)
        cls.config = PRIMARY.config_eval
        ref = PRIMARY.bundle()
        if ref is None:
            ref = os.path.join(cls.tmp, "reference")
            r = run_exporter(
                "--checkpoint", PRIMARY.checkpoint, "--config", cls.config, "--bpe-vocab", VOCAB, "--out", ref, "-q"
            )
            assert r.returncode == 0, r.stderr
        cls.reference = module_states(ref)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def export(self, name, checkpoint, *extra):
        out = os.path.join(self.tmp, name)
        r = run_exporter(
            "--checkpoint", checkpoint, "--config", self.config, "--bpe-vocab", VOCAB, "--out", out, *extra
        )
        return r, out

    def assert_bundle_equals(self, out, expect):
        got = module_states(out)
        for f, states in expect.items():
            self.assertEqual(sorted(got[f]), sorted(states), f)
            for k, v in states.items():
                self.assertTrue(torch.equal(got[f][k], v), f"{f}: {k} differs")

    def test_fills_from_a_torchscript_archive_and_a_state_dict(self):
        self.assertGreater(len(self.clip), 50)
        # the checkpoint without CLIP as a bare state dict; the CLIP file as OpenAI ships it
        bare = os.path.join(self.tmp, "no_clip_bare.pth")
        torch.save(self.rest, bare)
        archive = write_torchscript_clip(os.path.join(self.tmp, "ViT-T-16.pt"), self.clip)
        # the same checkpoint as a detectron2 model-zoo .pkl; the CLIP file as a plain state dict
        pkl = os.path.join(self.tmp, "no_clip.pkl")
        with open(pkl, "wb") as f:
            pickle.dump({"model": {k: v.numpy() for k, v in self.rest.items()}, "__author__": "test"}, f)
        plain = os.path.join(self.tmp, "clip_state.pth")
        torch.save(self.clip, plain)
        expected_filled = len([k for k in self.clip if k != "logit_scale"])  # logit_scale is unused
        for label, ckpt, clip_file in (("archive", bare, archive), ("state-dict", pkl, plain)):
            with self.subTest(kind=label):
                r, out = self.export("filled-" + label, ckpt, "--clip-weights", clip_file)
                self.assertEqual(r.returncode, 0, r.stderr)
                name = os.path.basename(clip_file)
                self.assertIn(f"{expected_filled} from --clip-weights {name}", r.stderr)
                self.assertIn("0 missing, 0 shape-mismatched, 0 unused", r.stderr)
                self.assert_bundle_equals(out, self.reference)
                with open(os.path.join(out, "manifest.json"), "r", encoding="utf-8") as f:
                    src = json.load(f)["source"]
                self.assertEqual(src["clip_weights"]["file"], name)
                self.assertEqual(src["clip_weights"]["tensors_used"], expected_filled)
        # -v lists every filled tensor with its source
        r, _ = self.export("filled-verbose", bare, "--clip-weights", archive, "-v")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertRegex(
            r.stderr, r"filled\s+clip_adapter\.clip_model\.visual\.conv1\.weight\s+from " r"--clip-weights ViT-T-16\.pt"
        )

    def test_checkpoint_tensors_win_over_the_clip_file(self):
        """Only what the checkpoint lacks is filled: here the text tower."""
        ckpt_sd = collections.OrderedDict(
            (k, v)
            for k, v in self.sd.items()
            if not (k.startswith(CLIP) and not k.startswith(CLIP + "visual.") and k != CLIP + "logit_scale")
        )
        self.assertLess(len(ckpt_sd), len(self.sd))
        ckpt = os.path.join(self.tmp, "no_text.pth")
        torch.save({"model": ckpt_sd}, ckpt)
        shifted = collections.OrderedDict((k, v + 1.0 if v.is_floating_point() else v) for k, v in self.clip.items())
        clip_file = write_torchscript_clip(os.path.join(self.tmp, "shifted.pt"), shifted)
        r, out = self.export("partial", ckpt, "--clip-weights", clip_file)
        self.assertEqual(r.returncode, 0, r.stderr)
        got = module_states(out)
        for k, v in self.reference["clip_visual.pt"].items():  # from the checkpoint
            self.assertTrue(torch.equal(got["clip_visual.pt"][k], v), k)
        text = got["clip_text.pt"]
        self.assertTrue(torch.equal(text["token_embedding.weight"], self.clip["token_embedding.weight"] + 1.0))
        self.assertTrue(torch.equal(text["ln_final.weight"], self.clip["ln_final.weight"] + 1.0))
        # the non-object embedding is ov-seg's, from the checkpoint
        self.assertTrue(
            torch.equal(text["non_object_embedding"], self.reference["clip_text.pt"]["non_object_embedding"])
        )

    def test_missing_clip_without_the_flag_names_it(self):
        ckpt = os.path.join(self.tmp, "no_clip.pth")
        torch.save({"model": self.rest}, ckpt)
        r, out = self.export("refused", ckpt)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("--clip-weights", r.stderr)
        self.assertIn(ckpt, r.stderr)
        self.assertFalse(os.path.exists(out))
        # with a few CLIP tensors missing (the architecture is still readable), the missing-key
        # error names the flag too
        dropped = (CLIP + "ln_final.bias", CLIP + "visual.ln_post.bias")
        some = collections.OrderedDict((k, v) for k, v in self.sd.items() if k not in dropped)
        ckpt2 = os.path.join(self.tmp, "two_missing.pth")
        torch.save(some, ckpt2)
        r, _ = self.export("refused2", ckpt2)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn("--clip-weights", r.stderr)

    def test_bad_clip_file(self):
        ckpt = os.path.join(self.tmp, "no_clip_for_bad.pth")
        torch.save({"model": self.rest}, ckpt)
        not_clip = os.path.join(self.tmp, "not_clip.pth")
        torch.save({"weight": torch.zeros(3)}, not_clip)
        r, _ = self.export("bad1", ckpt, "--clip-weights", not_clip)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn(not_clip, r.stderr)
        r, _ = self.export("bad2", ckpt, "--clip-weights", os.path.join(self.tmp, "nowhere.pt"))
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("nowhere.pt", r.stderr)


class CheckpointFormsTest(unittest.TestCase):
    """read_checkpoint on the shapes DetectionCheckpointer accepts (in-process, synthetic)."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ovseg-test-ckpt-forms-")
        g = torch.Generator().manual_seed(0)
        self.sd = collections.OrderedDict(
            [
                ("backbone.a.weight", torch.randn(4, 3, generator=g)),
                ("sem_seg_head.predictor.b", torch.randn(5, generator=g)),
                ("sem_seg_head.pixel_decoder.c", torch.randn(2, 2, generator=g)),
                ("backbone.bn.num_batches_tracked", torch.tensor(7)),
            ]
        )

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def assert_same(self, got):
        self.assertEqual(list(got), list(self.sd))
        for k, v in self.sd.items():
            self.assertTrue(torch.equal(got[k], v), k)

    def save(self, name, obj):
        path = os.path.join(self.tmp, name)
        torch.save(obj, path)
        return path

    def pkl(self, name, obj):
        path = os.path.join(self.tmp, name)
        with open(path, "wb") as f:
            pickle.dump(obj, f, protocol=2)
        return path

    def test_torch_forms(self):
        self.assert_same(load.read_checkpoint(self.save("m.pth", {"model": self.sd, "iteration": 5})))
        self.assert_same(load.read_checkpoint(self.save("bare.pth", self.sd)))
        prefixed = collections.OrderedDict(("module." + k, v) for k, v in self.sd.items())
        self.assert_same(load.read_checkpoint(self.save("ddp.pth", {"model": prefixed})))

    def test_pkl_forms(self):
        arrays = collections.OrderedDict((k, v.numpy()) for k, v in self.sd.items())
        self.assert_same(load.read_checkpoint(self.pkl("zoo.pkl", {"model": arrays, "__author__": "x"})))
        caffe2 = dict(arrays)
        caffe2["backbone.a.weight_momentum"] = np.zeros((4, 3), np.float32)
        self.assert_same(load.read_checkpoint(self.pkl("c2.pkl", {"blobs": caffe2})))
        self.assert_same(load.read_checkpoint(self.pkl("c2plain.pkl", caffe2)))
        # float64 arrays are read as float32, as the other forms
        f64 = {k: (v.astype(np.float64) if v.dtype == np.float32 else v) for k, v in arrays.items()}
        got = load.read_checkpoint(self.pkl("f64.pkl", {"model": f64, "__author__": "x"}))
        self.assertEqual(got["backbone.a.weight"].dtype, torch.float32)

    def test_pkl_never_runs_code(self):
        marker = os.path.join(self.tmp, "ran")

        class Evil:
            def __reduce__(self):
                return (os.system, (f"touch {marker}",))

        path = self.pkl("evil.pkl", {"model": {"x": Evil()}, "__author__": "x"})
        with self.assertRaises(load.CheckpointReadError) as cm:
            load.read_checkpoint(path)
        self.assertIn(path, str(cm.exception))
        self.assertFalse(os.path.exists(marker))
        with open(os.path.join(self.tmp, "junk.pkl"), "wb") as f:
            f.write(b"not a pickle")
        with self.assertRaises(load.CheckpointReadError):
            load.read_checkpoint(os.path.join(self.tmp, "junk.pkl"))


if __name__ == "__main__":
    unittest.main()
