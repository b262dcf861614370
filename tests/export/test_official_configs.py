"""The official ov-seg YAML configs (SHARED/official_configs): Python tags stay unevaluated,
_BASE_ inheritance as detectron2 resolves it, every config exports with --random-init, and the
evaluation configs give the same bundle as their presets (manifest and tensors).

Cost: five --random-init exports with full-size proposal networks and a small CLIP (the CLIP
dimensions do not come from the config, so a small one keeps the test cheap; the released CLIP
dimensions are compared in-process)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tools"))
sys.path.insert(0, HERE)

import torch  # noqa: E402

import fixture_util  # noqa: E402
from ovseg_export import config as config_mod  # noqa: E402
from ovseg_export.export import released_clip_arch  # noqa: E402

torch.set_num_threads(1)
SHARED = fixture_util.SHARED
CONFIGS = os.path.join(SHARED, "official_configs")
VOCAB = fixture_util.VOCAB
EXPORTER = os.path.join(REPO, "tools", "ovseg-export")
PYTHON = sys.executable or "/usr/bin/python3"
EVAL_CONFIGS = {"ovseg_swinB_vitL_bs32_120k.yaml": "swinB_vitL14", "ovseg_R101c_vitB_bs32_120k.yaml": "R101c_vitB16"}
DEMO_CONFIG = "ovseg_swinB_vitL_demo.yaml"
HAVE_CONFIGS = all(os.path.isfile(os.path.join(CONFIGS, n)) for n in list(EVAL_CONFIGS) + [DEMO_CONFIG])
SKIP_MSG = f"official configs not found under {CONFIGS} (set OVSEG_SHARED_DIR)"


def small_clip(embed_dim):
    return {
        "embed_dim": embed_dim,
        "image_resolution": 224,
        "vision_layers": 3,
        "vision_width": 64,
        "vision_patch_size": 32,
        "context_length": 77,
        "vocab_size": 49408,
        "transformer_width": 64,
        "transformer_layers": 1,
    }


def run_exporter(*args):
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = "1"
    return subprocess.run([PYTHON, EXPORTER, *args], capture_output=True, text=True, env=env, timeout=900)


def write(path, text):
    with open(path, "w", encoding="utf-8") as f:
        f.write(text)
    return path


class YamlTest(unittest.TestCase):
    """Config reading alone (no export): Python tags, _BASE_ rules."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ovseg-test-yaml-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    @unittest.skipUnless(HAVE_CONFIGS, SKIP_MSG)
    def test_official_configs_load_without_evaluating(self):
        for name in list(EVAL_CONFIGS) + [DEMO_CONFIG]:
            with self.subTest(config=name):
                cfg = config_mod.load_config(os.path.join(CONFIGS, name))
                mst = cfg["INPUT"].get("MIN_SIZE_TRAIN")
                if name.startswith("ovseg_swinB"):
                    # the training-only key stays an unevaluated marker, not a list of ints
                    self.assertIsInstance(mst, config_mod.OpaqueValue)
                    self.assertEqual(mst.tag, "!!python/object/apply:eval")
                    self.assertEqual(mst.line, 77 if "bs32" in name else 76)

    def test_python_tags_are_never_evaluated(self):
        marker = os.path.join(self.tmp, "evaluated")
        cfg = write(
            os.path.join(self.tmp, "c.yaml"),
            "MODEL:\n  CLIP_ADAPTER:\n    MASK_THR: 0.45\n"
            'SOLVER:\n  X: !!python/object/apply:os.system ["touch ' + marker + '"]\n'
            "  Y: !!python/object/apply:eval [\"open('" + marker + "', 'w')\"]\n"
            "  Z: !!python/name:os.system\n  T: !!python/tuple [1, 2]\n",
        )
        c = config_mod.load_config(cfg)
        self.assertFalse(os.path.exists(marker))
        self.assertEqual(c["MODEL"]["CLIP_ADAPTER"]["MASK_THR"], 0.45)
        for k in "XYZT":
            self.assertIsInstance(c["SOLVER"][k], config_mod.OpaqueValue)

    def test_python_tag_on_a_used_key_is_an_error_naming_it(self):
        cases = {
            "INPUT.MIN_SIZE_TEST": 'INPUT:\n  MIN_SIZE_TEST: !!python/object/apply:eval ["640"]\n',
            "MODEL.SWIN.DEPTHS": 'MODEL:\n  SWIN:\n    DEPTHS: [2, 2, !!python/object/apply:eval ["18"], 2]\n',
            "MODEL.PIXEL_MEAN": "MODEL:\n  PIXEL_MEAN: !!python/tuple [1, 2, 3]\n",
            "MODEL.CLIP_ADAPTER": "MODEL:\n  CLIP_ADAPTER: !!python/object/apply:dict []\n",
        }
        for key, text in cases.items():
            with self.subTest(key=key):
                path = write(os.path.join(self.tmp, "bad.yaml"), text)
                with self.assertRaises(config_mod.ConfigError) as cm:
                    config_mod.load_config(path)
                msg = str(cm.exception)
                self.assertIn(key, msg)
                self.assertIn("!!python/", msg)
                self.assertIn(path, msg)

    def test_base_inheritance(self):
        os.makedirs(os.path.join(self.tmp, "base", "deeper"))
        write(
            os.path.join(self.tmp, "base", "deeper", "root.yaml"),
            "MODEL:\n  CLIP_ADAPTER:\n    MASK_THR: 0.3\n    CLIP_ENSEMBLE_WEIGHT: 0.6\n"
            "  SWIN:\n    EMBED_DIM: 48\nINPUT:\n  MIN_SIZE_TEST: 320\n",
        )
        # a relative _BASE_ is taken from the including file's directory, at every level
        write(
            os.path.join(self.tmp, "base", "mid.yaml"),
            "_BASE_: deeper/root.yaml\nMODEL:\n  CLIP_ADAPTER:\n    MASK_THR: 0.35\n",
        )
        child = write(
            os.path.join(self.tmp, "child.yaml"),
            "_BASE_: base/mid.yaml\nMODEL:\n  CLIP_ADAPTER:\n    CLIP_ENSEMBLE_WEIGHT: 0.5\n",
        )
        c = config_mod.load_config(child)
        self.assertEqual(c["MODEL"]["CLIP_ADAPTER"]["MASK_THR"], 0.35)  # mid over root
        self.assertEqual(c["MODEL"]["CLIP_ADAPTER"]["CLIP_ENSEMBLE_WEIGHT"], 0.5)  # child over all
        self.assertEqual(c["MODEL"]["SWIN"]["EMBED_DIM"], 48)  # root kept
        self.assertEqual(c["INPUT"]["MIN_SIZE_TEST"], 320)
        self.assertEqual(c["MODEL"]["SWIN"]["WINDOW_SIZE"], 7)  # default
        self.assertNotIn("_BASE_", c)
        # an absolute _BASE_
        absolute = write(os.path.join(self.tmp, "abs.yaml"), f"_BASE_: {os.path.join(self.tmp, 'base', 'mid.yaml')}\n")
        self.assertEqual(config_mod.load_config(absolute)["MODEL"]["CLIP_ADAPTER"]["MASK_THR"], 0.35)
        # "~" is the home directory
        home = os.path.join(self.tmp, "home")
        os.makedirs(home)
        write(os.path.join(home, "h.yaml"), "INPUT:\n  MAX_SIZE_TEST: 999\n")
        tilde = write(os.path.join(self.tmp, "tilde.yaml"), "_BASE_: ~/h.yaml\n")
        old = os.environ.get("HOME")
        os.environ["HOME"] = home
        try:
            self.assertEqual(config_mod.load_config(tilde)["INPUT"]["MAX_SIZE_TEST"], 999)
        finally:
            if old is None:
                del os.environ["HOME"]
            else:
                os.environ["HOME"] = old

    @unittest.skipUnless(HAVE_CONFIGS, SKIP_MSG)
    def test_base_over_an_official_config(self):
        official = os.path.join(CONFIGS, "ovseg_swinB_vitL_bs32_120k.yaml")
        child = write(
            os.path.join(self.tmp, "ablation.yaml"),
            f"_BASE_: {official}\nMODEL:\n  CLIP_ADAPTER:\n    CLIP_ENSEMBLE_WEIGHT: 0.6\n",
        )
        c = config_mod.load_config(child)
        self.assertEqual(c["MODEL"]["CLIP_ADAPTER"]["CLIP_ENSEMBLE_WEIGHT"], 0.6)
        self.assertEqual(c["MODEL"]["SWIN"]["DEPTHS"], [2, 2, 18, 2])
        self.assertIsInstance(c["INPUT"]["MIN_SIZE_TRAIN"], config_mod.OpaqueValue)

    def test_base_errors(self):
        missing = write(os.path.join(self.tmp, "m.yaml"), "_BASE_: nowhere.yaml\n")
        with self.assertRaises(config_mod.ConfigError) as cm:
            config_mod.load_config(missing)
        self.assertIn(os.path.join(self.tmp, "nowhere.yaml"), str(cm.exception))
        loop = write(os.path.join(self.tmp, "loop.yaml"), "_BASE_: loop.yaml\n")
        with self.assertRaises(config_mod.ConfigError) as cm:
            config_mod.load_config(loop)
        self.assertIn("_BASE_", str(cm.exception))
        url = write(os.path.join(self.tmp, "url.yaml"), "_BASE_: https://example.org/x.yaml\n")
        with self.assertRaises(config_mod.ConfigError) as cm:
            config_mod.load_config(url)
        self.assertIn("URL", str(cm.exception))
        write(os.path.join(self.tmp, "plain.yaml"), "MODEL:\n  SWIN: 3\n")
        over = write(os.path.join(self.tmp, "over.yaml"), "_BASE_: plain.yaml\nMODEL:\n  SWIN:\n    EMBED_DIM: 64\n")
        with self.assertRaises(config_mod.ConfigError) as cm:
            config_mod.load_config(over)
        self.assertIn("MODEL.SWIN", str(cm.exception))


@unittest.skipUnless(HAVE_CONFIGS and os.path.isfile(VOCAB), SKIP_MSG)
class OfficialExportTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="ovseg-test-official-")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def export(self, out, source_args, embed_dim):
        r = run_exporter(
            "--random-init",
            "--seed",
            "5",
            *source_args,
            "--bpe-vocab",
            VOCAB,
            "--out",
            out,
            "--clip-arch",
            json.dumps(small_clip(embed_dim)),
            "-q",
        )
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(os.path.join(out, "manifest.json"), "r", encoding="utf-8") as f:
            return json.load(f)

    @staticmethod
    def comparable(manifest):
        m = json.loads(json.dumps(manifest))
        del m["created_at"]
        del m["source"]["config"]
        # TorchScript archives are not byte-reproducible (they embed their own file names);
        # the tensors are compared separately
        m["files"] = sorted(m["files"])
        return m

    def assert_same_tensors(self, a, b):
        for fname in ("proposals.pt", "clip_visual.pt", "clip_text.pt"):
            sa = torch.jit.load(os.path.join(a, fname)).state_dict()
            sb = torch.jit.load(os.path.join(b, fname)).state_dict()
            self.assertEqual(list(sa), list(sb), fname)
            for k in sa:
                self.assertTrue(torch.equal(sa[k], sb[k]), f"{fname}: {k}")

    def test_eval_configs_equal_presets(self):
        for name, preset in EVAL_CONFIGS.items():
            with self.subTest(config=name):
                path = os.path.join(CONFIGS, name)
                cfg = config_mod.load_config(path)
                pcfg = config_mod.config_for(preset=preset)
                self.assertEqual(released_clip_arch(cfg), released_clip_arch(pcfg))
                embed = int(cfg["MODEL"]["SEM_SEG_HEAD"]["EMBEDDING_DIM"])
                a = os.path.join(self.tmp, "cfg-" + preset)
                b = os.path.join(self.tmp, "preset-" + preset)
                ma = self.export(a, ("--config", path), embed)
                mb = self.export(b, ("--preset", preset), embed)
                self.assertEqual(ma["source"]["config"], name)
                self.assertEqual(self.comparable(ma), self.comparable(mb))
                self.assert_same_tensors(a, b)
                shutil.rmtree(a)
                shutil.rmtree(b)

    def test_demo_config_exports(self):
        path = os.path.join(CONFIGS, DEMO_CONFIG)
        out = os.path.join(self.tmp, "demo")
        m = self.export(out, ("--config", path), 768)
        self.assertEqual(m["architecture"]["backbone"], "swin")
        self.assertEqual(m["architecture"]["backbone_config"]["DEPTHS"], [2, 2, 18, 2])
        # OVSegDEMO configures the demo path; the evaluation path keeps the released values
        self.assertEqual(m["inference"]["demo"], {"mask_threshold": 0.35, "ensemble_weight": 0.0})
        self.assertEqual(m["inference"]["eval"], {"mask_threshold": 0.4, "ensemble_weight": 0.7})
        self.assertEqual((m["preprocess"]["min_size_test"], m["preprocess"]["max_size_test"]), (640, 2560))
        # what wrote the modules (the C++ side refuses a file format its libtorch cannot read)
        from ovseg_export.export import torchscript_file_format_version

        self.assertEqual(m["torch"]["version"], str(torch.__version__))
        fmt = [
            torchscript_file_format_version(os.path.join(out, f))
            for f in ("proposals.pt", "clip_visual.pt", "clip_text.pt")
        ]
        self.assertGreater(min(fmt), 0)
        self.assertEqual(m["torch"]["torchscript_file_format_version"], max(fmt))


if __name__ == "__main__":
    unittest.main()
