"""A bundle is a program: `ovseg` refuses, before any of a module's code runs, a module whose
archive defines __setstate__ or whose methods use an operator outside the set the exporters emit
(file I/O such as aten::from_file, printing, ...). The attack bundles are made here from the
repository's demo model (needs no ../shared), with their manifest checksums recomputed, so only
the operator check stands between them and the machine. Every exporter preset and the demo model
pass the check (`ovseg info --operators`).

Environment (set by ctest): OVSEG_BIN = the built `ovseg`.
"""
import hashlib
import json
import os
import shutil
import subprocess
import tempfile
import unittest

from demo_env import BIN, DEMO, PY, ROOT, require_binary, require_torch

IMAGE = os.path.join(DEMO, "examples", "images", "seen_2026_00001.png")

MAKE_MODULE = r"""
import sys, torch
from typing import Tuple
kind, target, dim, out = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

class FromFile(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.target = target
        self.dim = dim
        self.register_buffer("non_object_embedding", torch.zeros(1, dim))
    def forward(self, tokens):
        x = torch.from_file(self.target, shared=True, size=4, dtype=torch.uint8)
        x.fill_(65)  # overwrites the file's first bytes (used below, so TorchScript keeps it)
        return torch.zeros(tokens.size(0), self.dim) + x[0].float() * 0.0

class Prints(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.dim = dim
        self.register_buffer("non_object_embedding", torch.zeros(1, dim))
    def forward(self, tokens):
        print("a bundle printing")
        return torch.zeros(tokens.size(0), self.dim)

class SetState(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.target = target
        self.dim = dim
        self.register_buffer("non_object_embedding", torch.zeros(1, dim))
    @torch.jit.export
    def __getstate__(self) -> Tuple[str, int, bool]:
        return (self.target, self.dim, self.training)
    @torch.jit.export
    def __setstate__(self, state: Tuple[str, int, bool]):
        self.target = state[0]
        self.dim = state[1]
        self.training = state[2]
        self.non_object_embedding = torch.zeros(1, state[1])
    def forward(self, tokens):
        return torch.zeros(tokens.size(0), self.dim)

torch.jit.script({"from_file": FromFile, "print": Prints, "setstate": SetState}[kind]()).save(out)
"""


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


class BundleIsAProgram(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        require_binary()
        require_torch()
        cls.tmp = tempfile.mkdtemp(prefix="ovseg_bundlecode_")
        cls.target = os.path.join(cls.tmp, "precious.txt")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def setUp(self):
        with open(self.target, "w") as f:
            f.write("keep me\n")

    def attack_bundle(self, kind, module="clip_text.pt"):
        """The demo bundle with `module` replaced by a hostile one, checksums recomputed."""
        d = os.path.join(self.tmp, f"{kind}-{module}")
        shutil.rmtree(d, ignore_errors=True)
        shutil.copytree(DEMO, d, ignore=shutil.ignore_patterns("examples", "README.md"))
        with open(os.path.join(d, "manifest.json"), encoding="utf-8") as f:
            manifest = json.load(f)
        dim = manifest["architecture"]["embed_dim"]
        script = os.path.join(self.tmp, "make_module.py")  # TorchScript reads the classes' source
        with open(script, "w", encoding="utf-8") as f:
            f.write(MAKE_MODULE)
        r = subprocess.run(
            [PY, script, kind, self.target, str(dim), os.path.join(d, module)],
            capture_output=True,
            text=True,
            timeout=300,
        )
        self.assertEqual(r.returncode, 0, r.stderr)
        path = os.path.join(d, module)
        manifest["files"][module] = {"sha256": sha256(path), "bytes": os.path.getsize(path)}
        with open(os.path.join(d, "manifest.json"), "w", encoding="utf-8") as f:
            json.dump(manifest, f, indent=1)
        return d

    def segment(self, bundle):
        return subprocess.run(
            [
                BIN,
                "segment",
                "-m",
                bundle,
                "-c",
                "sky, grass",
                "--no-text-cache",
                "-o",
                os.path.join(self.tmp, "out"),
                IMAGE,
            ],
            capture_output=True,
            text=True,
            timeout=300,
        )

    def assert_target_intact(self):
        with open(self.target) as f:
            self.assertEqual(f.read(), "keep me\n")

    def test_file_io_operator_is_refused_before_it_runs(self):
        bundle = self.attack_bundle("from_file")
        r = self.segment(bundle)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("clip_text.pt", r.stderr)
        self.assertIn("method forward", r.stderr)
        self.assertIn("aten::from_file", r.stderr)
        self.assertIn("a bundle is a program", r.stderr)
        self.assertNotIn("Traceback", r.stderr)
        self.assert_target_intact()
        # info --operators names it without running it.
        r = subprocess.run([BIN, "info", "--operators", "-m", bundle], capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 2)
        self.assertIn("aten::from_file  (not allowed", r.stdout)
        self.assert_target_intact()
        # The attack is real: the same module, run by torch, overwrites the file.
        run = "import sys, torch; torch.jit.load(sys.argv[1])(torch.zeros(1, 77, dtype=torch.long))"
        r = subprocess.run(
            [PY, "-c", run, os.path.join(bundle, "clip_text.pt")], capture_output=True, text=True, timeout=300
        )
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(self.target) as f:
            self.assertEqual(f.read(), "AAAA me\n")

    def test_printing_is_refused(self):
        bundle = self.attack_bundle("print", module="proposals.pt")
        r = self.segment(bundle)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("proposals.pt", r.stderr)
        self.assertIn("prim::Print", r.stderr)
        self.assertNotIn("a bundle printing", r.stdout + r.stderr)

    def test_setstate_is_refused_before_loading(self):
        bundle = self.attack_bundle("setstate")
        r = self.segment(bundle)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("__setstate__", r.stderr)
        self.assertIn("clip_text.pt", r.stderr)
        r = subprocess.run([BIN, "info", "--operators", "-m", bundle], capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 2)
        self.assertIn("__setstate__", r.stderr)

    def test_the_demo_model_and_every_exporter_preset_pass(self):
        r = subprocess.run([BIN, "info", "--operators", "-m", DEMO], capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("aten::conv2d", r.stdout)
        self.assertNotIn("not allowed", r.stdout)
        # Each preset with random weights; a small CLIP (the CLIP code is the same at any size).
        vocab = os.path.join(DEMO, "bpe_simple_vocab_16e6.txt.gz")
        for preset, embed in (("R101c_vitB16", 512), ("swinB_vitL14", 768)):
            clip = json.dumps(
                {
                    "embed_dim": embed,
                    "image_resolution": 224,
                    "vision_layers": 2,
                    "vision_width": 64,
                    "vision_patch_size": 16,
                    "context_length": 77,
                    "vocab_size": 49408,
                    "transformer_width": 64,
                    "transformer_layers": 2,
                }
            )
            with self.subTest(preset=preset):
                out = os.path.join(self.tmp, preset)
                e = subprocess.run(
                    [
                        PY,
                        os.path.join(ROOT, "tools", "ovseg-export"),
                        "--random-init",
                        "--preset",
                        preset,
                        "--clip-arch",
                        clip,
                        "--bpe-vocab",
                        vocab,
                        "--out",
                        out,
                        "-q",
                    ],
                    capture_output=True,
                    text=True,
                    timeout=900,
                )
                self.assertEqual(e.returncode, 0, e.stderr)
                r = subprocess.run([BIN, "info", "--operators", "-m", out], capture_output=True, text=True, timeout=300)
                self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
                shutil.rmtree(out, ignore_errors=True)
        out = os.path.join(self.tmp, "sam_vit_b")
        e = subprocess.run(
            [
                PY,
                os.path.join(ROOT, "tools", "ovseg-export-sam"),
                "--random-init",
                "--size",
                "vit_b",
                "--out",
                out,
                "-q",
            ],
            capture_output=True,
            text=True,
            timeout=900,
        )
        self.assertEqual(e.returncode, 0, e.stderr)
        r = subprocess.run([BIN, "info", "--operators", "-m", out], capture_output=True, text=True, timeout=300)
        self.assertEqual(r.returncode, 0, r.stdout + r.stderr)
        self.assertIn("aten::conv_transpose2d", r.stdout)


if __name__ == "__main__":
    unittest.main(verbosity=2)
