"""The exporters on hostile inputs: checkpoints and CLIP archives are read as data
(nothing they name is run, nothing is allocated beyond the bytes present), configs are bounded
and checked, only regular files are opened, --out never replaces what ovseg did not write, and
ovseg-export-sam --arch is validated. Every refusal is one `PROG: error: ...` line naming the
file and the problem, with a non-zero exit and no traceback.

The attack files are written here, in a temporary directory. Most tests need nothing else; the
ovseg-export command-line ones need the shared vocabulary (skipped without it). Reads that would
allocate gigabytes or block on a FIFO on a vulnerable exporter run in a child process with an
address-space limit and a timeout, so a regression fails the test instead of the machine.
Cost: about 40 s (mostly exporter start-up)."""
import argparse
import collections
import json
import os
import pickle
import shutil
import struct
import subprocess
import sys
import tempfile
import textwrap
import unittest
import zlib
from typing import Tuple

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.environ.get("OVSEG_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
TOOLS = os.path.join(REPO, "tools")
sys.path.insert(0, TOOLS)

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

from ovseg_export import config as config_mod  # noqa: E402
from ovseg_export import load  # noqa: E402

torch.set_num_threads(1)
PYTHON = sys.executable or "/usr/bin/python3"
EXPORTER = os.path.join(TOOLS, "ovseg-export")
SAM_EXPORTER = os.path.join(TOOLS, "ovseg-export-sam")
SHARED = os.environ.get("OVSEG_SHARED_DIR") or os.path.join(REPO, "..", "shared", "ovseg")
VOCAB = os.path.join(SHARED, "bpe_simple_vocab_16e6.txt.gz")
SAM_FIXTURE = os.path.join(SHARED, "fixtures", "sam_tiny")
HAVE_VOCAB = os.path.isfile(VOCAB)
HAVE_SAM = os.path.isfile(os.path.join(SAM_FIXTURE, "checkpoint.pth"))
HAVE_PROC = os.path.isfile("/proc/self/statm")

# A SAM small enough for a --random-init bundle in a second.
TINY_SAM = {
    "embed_dim": 32,
    "depth": 2,
    "num_heads": 2,
    "global_attn_indexes": [1],
    "img_size": 64,
    "patch_size": 16,
    "window_size": 2,
    "out_chans": 32,
    "prompt_embed_dim": 32,
    "mask_in_chans": 16,
    "decoder_mlp_dim": 64,
    "decoder_num_heads": 2,
    "iou_head_hidden_dim": 32,
}
TINY_CLIP = {
    "embed_dim": 64,
    "image_resolution": 32,
    "vision_layers": 1,
    "vision_width": 64,
    "vision_patch_size": 16,
    "context_length": 77,
    "vocab_size": 49408,
    "transformer_width": 64,
    "transformer_layers": 1,
}


def run(prog, *args, cwd=None, timeout=300):
    env = dict(os.environ, OMP_NUM_THREADS="1")
    env.pop("OVSEG_TRACEBACK", None)
    return subprocess.run([PYTHON, prog, *args], capture_output=True, text=True, env=env, cwd=cwd, timeout=timeout)


def run_child(body, timeout=60, extra_address_space=None):
    """`body` in a fresh interpreter with the exporter importable, its address space limited to
    what it uses after the imports plus `extra_address_space` bytes. (returncode, stdout, stderr);
    returncode None when it ran past `timeout` (it is killed)."""
    prelude = textwrap.dedent(
        f"""\
        import os, resource, sys
        sys.path.insert(0, {TOOLS!r})
        import numpy, torch
        from ovseg_export import load, config, templates, tokenizer, export
        extra = {extra_address_space!r}
        if extra is not None:
            used = int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            resource.setrlimit(resource.RLIMIT_AS, (used + extra, used + extra))
        """
    )
    try:
        r = subprocess.run(
            [PYTHON, "-c", prelude + textwrap.dedent(body)],
            capture_output=True,
            text=True,
            timeout=timeout,
            env=dict(os.environ, OMP_NUM_THREADS="1"),
        )
    except subprocess.TimeoutExpired as e:
        return None, e.stdout or "", e.stderr or ""
    return r.returncode, r.stdout, r.stderr


class _Evil:
    """What a hostile checkpoint holds: unpickling it runs a shell command."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def _u(s):
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def structured_object_dtype_pkl():
    """A .pkl (under 300 bytes) whose numpy dtype state makes a structured dtype with an object
    field and flags 0, and an array whose raw bytes become that field's object pointers: numpy
    dereferences 0x4141414141414141 (a segfault with pickle.load / the old reader)."""
    obj_dtype = (
        b"cnumpy\ndtype\n"
        + _u("O8")
        + b"\x89\x88\x87R"
        + b"(K\x03"
        + _u("|")
        + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x3ftb"
    )
    dtype = (
        b"cnumpy\ndtype\n"
        + _u("V8")
        + b"\x89\x88\x87R"
        + b"(K\x03"
        + _u("|")
        + b"N"
        + _u("a")
        + b"\x85"
        + b"}"
        + _u("a")
        + obj_dtype
        + b"K\x00\x86s"
        + b"K\x08K\x01K\x00tb"
    )
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\n"
        + b"cnumpy\nndarray\n"
        + b"K\x00\x85"
        + b"C\x01b"
        + b"\x87R"
        + b"(K\x01K\x01\x85"
        + dtype
        + b"\x89"
        + b"C\x08"
        + b"A" * 8
        + b"tb"
    )
    return b"\x80\x02}" + _u("model") + b"}" + _u("x") + array + b"ss" + _u("__author__") + _u("x") + b"s."


def bytearray_bomb_pkl(n=3_000_000_000):
    """{"model": {"x": bytearray(n)}} in under 100 bytes."""
    nb = n.to_bytes((n.bit_length() + 8) // 8, "little")
    return (
        b"\x80\x02}"
        + _u("model")
        + b"}"
        + _u("x")
        + b"cbuiltins\nbytearray\n"
        + b"\x8a"
        + bytes([len(nb)])
        + nb
        + b"\x85R"
        + b"ss"
        + _u("__author__")
        + _u("x")
        + b"s."
    )


def reconstruct_bomb_pkl(n=1_700_000_000):
    """numpy's _reconstruct asked for an n-element array; the state brings 4 bytes."""
    nb = n.to_bytes((n.bit_length() + 8) // 8, "little")
    dtype = (
        b"cnumpy\ndtype\n"
        + _u("i1")
        + b"\x89\x88\x87R"
        + b"(K\x03"
        + _u("|")
        + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x00tb"
    )
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\n"
        + b"cnumpy\nndarray\n"
        + b"\x8a"
        + bytes([len(nb)])
        + nb
        + b"\x85"
        + b"C\x01b"
        + b"\x87R"
        + b"(K\x01\x8a"
        + bytes([len(nb)])
        + nb
        + b"\x85"
        + dtype
        + b"\x89"
        + b"C\x04AAAA"
        + b"tb"
    )
    return b"\x80\x02}" + _u("model") + b"}" + _u("x") + array + b"ss" + _u("__author__") + _u("x") + b"s."


class _Case(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ovseg-test-untrusted-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def path(self, name):
        return os.path.join(self.tmp, name)

    def write(self, name, data):
        p = self.path(name)
        with open(p, "wb" if isinstance(data, bytes) else "w") as f:
            f.write(data)
        return p

    def assert_one_line_error(self, r, prog, code, *needles):
        self.assertEqual(r.returncode, code, r.stderr)
        self.assertNotIn("Traceback", r.stderr)
        lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
        self.assertEqual(len(lines), 1, r.stderr)
        self.assertTrue(lines[0].startswith(f"{prog}: error: "), lines[0])
        for n in needles:
            self.assertIn(n, lines[0])
        return lines[0]

    def sam(self, *args, **kw):
        return run(SAM_EXPORTER, *args, **kw)


# ------------------------------------------------------------------------------------------------
# 1. .pth / .pt checkpoints never run code; every DetectionCheckpointer form still reads


class CheckpointCodeTest(_Case):
    def evil_files(self):
        marker = self.path("ran")
        evil = {"model": collections.OrderedDict([("w", torch.zeros(2)), ("x", _Evil(marker))])}
        zip_path = self.path("evil.pth")
        torch.save(evil, zip_path)
        legacy = self.path("evil_legacy.pth")
        torch.save(evil, legacy, _use_new_zipfile_serialization=False)
        return marker, (zip_path, legacy)

    def test_pth_pickle_never_runs_code(self):
        marker, paths = self.evil_files()
        for p in paths:
            with self.subTest(path=os.path.basename(p)):
                with self.assertRaises(load.CheckpointReadError) as cm:
                    load.read_checkpoint(p)
                self.assertFalse(os.path.exists(marker), "the checkpoint's os.system ran")
                self.assertIn(p, str(cm.exception))
                self.assertIn("posix.system", str(cm.exception))
                with self.assertRaises(load.CheckpointReadError):
                    load.read_clip_weights(p)
                self.assertFalse(os.path.exists(marker))

    def test_sam_exporter_refuses_code_checkpoints(self):
        marker, paths = self.evil_files()
        for p in paths:
            r = self.sam("--checkpoint", p, "--out", self.path("out"))
            self.assertFalse(os.path.exists(marker), "the checkpoint's os.system ran")
            self.assert_one_line_error(r, "ovseg-export-sam", 2, p, "posix.system")
            self.assertFalse(os.path.exists(self.path("out")))

    @unittest.skipUnless(HAVE_VOCAB, f"shared vocabulary not found at {VOCAB}")
    def test_ovseg_exporter_refuses_code_checkpoints(self):
        marker, paths = self.evil_files()
        for p in paths:
            r = run(
                EXPORTER, "--checkpoint", p, "--preset", "R101c_vitB16", "--bpe-vocab", VOCAB, "--out", self.path("out")
            )
            self.assertFalse(os.path.exists(marker), "the checkpoint's os.system ran")
            self.assert_one_line_error(r, "ovseg-export", 2, p, "posix.system")

    def test_refused_types_are_named(self):
        for name, value, needle in (
            ("module.pth", nn.Linear(2, 2), "torch.nn.modules.linear"),
            ("namespace.pth", {"model": {}, "args": argparse.Namespace(a=1)}, "argparse.Namespace"),
            ("call.pth", {"model": {}, "d": collections.deque([1])}, "collections.deque"),
            ("slice.pth", {"model": {"s": slice(1, 2)}}, "slice"),
        ):
            with self.subTest(name=name):
                p = self.path(name)
                torch.save(value, p)
                with self.assertRaises(load.CheckpointReadError) as cm:
                    load.read_checkpoint(p)
                self.assertIn(needle, str(cm.exception))

    def test_detectron2_checkpointer_forms(self):
        """What DetectionCheckpointer.save writes (model, optimizer, scheduler, iteration) in
        both torch formats and several pickle protocols, with every tensor type."""
        g = torch.Generator().manual_seed(0)
        base = torch.randn(6, 4, generator=g)
        sd = collections.OrderedDict(
            [
                ("backbone.w", base),
                ("backbone.view", base[1:4, 1:3]),
                ("backbone.t", base.t()),
                ("head.half", torch.randn(3, generator=g).half()),
                ("head.bf16", torch.randn(3, generator=g).bfloat16()),
                ("head.index", torch.arange(7)),
                ("head.flag", torch.tensor([True, False])),
                ("head.empty", torch.zeros(0, 3)),
                ("head.scalar", torch.tensor(2.5)),
                ("head.num_batches_tracked", torch.tensor(9)),
            ]
        )
        sd._metadata = collections.OrderedDict([("", {"version": 2})])
        ckpt = {
            "model": sd,
            "optimizer": {
                "state": {0: {"momentum_buffer": torch.ones(3), "step": 4}},
                "param_groups": [
                    {
                        "lr": 0.01,
                        "betas": (0.9, 0.999),
                        "params": [0, 1],
                        "weight_decay": 1e-4,
                        "nesterov": False,
                        "foreach": None,
                    }
                ],
            },
            "scheduler": {
                "base_lrs": [0.01],
                "last_epoch": 7,
                "_step_count": 8,
                "milestones": collections.Counter({60000: 1, 80000: 1}),
                "warmup_method": "linear",
                "_last_lr": [0.001],
            },
            "state": collections.defaultdict(dict, {0: {"step": 3}}),
            "meta": {
                "device": torch.device("cuda", 0),
                "dtype": torch.float16,
                "size": torch.Size([2, 3]),
                "set": {1, 2},
                "nan": float("nan"),
            },
            "iteration": 89999,
            "__author__": "detectron2",
        }
        for kw in ({}, {"pickle_protocol": 4}, {"_use_new_zipfile_serialization": False}):
            with self.subTest(**kw):
                p = self.path("forms.pth")
                torch.save(ckpt, p, **kw)
                got = load.read_checkpoint(p)
                self.assertEqual(list(got), list(sd))
                for k, v in sd.items():
                    want = v.float() if v.is_floating_point() else v
                    self.assertEqual(got[k].dtype, want.dtype, k)
                    self.assertTrue(torch.equal(got[k], want), k)
                top = load.read_state_file(p)
                self.assertEqual(top["iteration"], 89999)
                self.assertEqual(top["optimizer"]["param_groups"][0]["betas"], (0.9, 0.999))
                self.assertEqual(top["scheduler"]["last_epoch"], 7)
                self.assertEqual(dict(top["scheduler"]["milestones"]), {60000: 1, 80000: 1})
                self.assertEqual(top["state"], {0: {"step": 3}})
                self.assertEqual(top["meta"]["device"], "cuda:0")
                self.assertEqual(top["meta"]["size"], (2, 3))

    def test_tensor_views_must_fit_their_storage(self):
        p = self.path("ok.pth")
        torch.save({"model": {"w": torch.zeros(4)}}, p)
        import zipfile

        with zipfile.ZipFile(p) as z:
            names = z.namelist()
            records = {n: z.read(n) for n in names}
        pkl = [n for n in names if n.endswith("data.pkl")][0]
        # the pickle claims 10**9 floats for a 16-byte record, and a size past it
        for old, new in ((b"K\x04\x85", b"J\x00\xca\x9a;\x85"),):
            data = records[pkl]
            self.assertIn(old, data)
            bad = self.path("big.pth")
            with zipfile.ZipFile(bad, "w", zipfile.ZIP_STORED) as z:
                for n in names:
                    z.writestr(n, data.replace(old, new) if n == pkl else records[n])
            with self.assertRaises(load.CheckpointReadError) as cm:
                load.read_checkpoint(bad)
            self.assertIn(bad, str(cm.exception))


# ------------------------------------------------------------------------------------------------
# 2. --clip-weights TorchScript archives are read as data


class _CodeOnLoad(nn.Module):
    """A TorchScript module whose __setstate__ (run by torch.jit.load) prints a marker."""

    def __init__(self):
        super().__init__()
        self.register_buffer("x", torch.zeros(1))

    @torch.jit.export
    def __getstate__(self):
        return (self.x, self.training)

    @torch.jit.export
    def __setstate__(self, state: Tuple[torch.Tensor, bool]):
        print("ARCHIVE-CODE-RAN")
        self.x = state[0]
        self.training = state[1]

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return t + self.x


class ClipArchiveTest(_Case):
    def archive(self):
        root = nn.Module()
        root.visual = nn.Module()
        root.visual.conv1 = nn.Conv2d(3, 8, 4, bias=False)
        root.visual.ln_post = nn.LayerNorm(8)
        root.token_embedding = nn.Embedding(10, 8)
        root.register_buffer("input_resolution", torch.tensor(224))
        root.hook = _CodeOnLoad()
        p = self.path("ViT-T-16.pt")
        torch.jit.script(root.half()).save(p)
        return p, root

    def test_archive_code_never_runs(self):
        p, root = self.archive()
        code, out, err = run_child(
            f"""
            sd = load.read_clip_weights({p!r})
            print("KEYS", sorted(sd))
            """,
            timeout=120,
        )
        self.assertEqual(code, 0, err)
        self.assertNotIn("ARCHIVE-CODE-RAN", out + err)
        keys = json.loads(out.split("KEYS", 1)[1].strip().replace("'", '"'))
        self.assertIn("visual.conv1.weight", keys)
        self.assertIn("token_embedding.weight", keys)
        self.assertNotIn("input_resolution", keys)
        sd = load.read_clip_weights(p)
        ref = root.state_dict()
        for k in ("visual.conv1.weight", "visual.ln_post.bias", "token_embedding.weight"):
            self.assertEqual(sd[k].dtype, torch.float32)
            self.assertTrue(torch.equal(sd[k], ref[k].float()), k)

    def test_archive_with_refused_globals(self):
        p, _ = self.archive()
        import zipfile

        with zipfile.ZipFile(p) as z:
            names = z.namelist()
            records = {n: z.read(n) for n in names}
        pkl = [n for n in names if n.endswith("/data.pkl")][0]
        self.assertIn(b"collections\nOrderedDict\n", records[pkl])
        bad = self.path("bad.pt")
        with zipfile.ZipFile(bad, "w", zipfile.ZIP_STORED) as z:
            for n in names:
                z.writestr(
                    n, records[n].replace(b"collections\nOrderedDict\n", b"posix\nsystem\n") if n == pkl else records[n]
                )
        with self.assertRaises(load.CheckpointReadError) as cm:
            load.read_clip_weights(bad)
        self.assertIn("posix.system", str(cm.exception))


# ------------------------------------------------------------------------------------------------
# 3, 4. .pkl: plain numeric arrays only, sizes checked before anything is allocated


class PklTest(_Case):
    def test_structured_object_dtype_is_refused_not_a_segfault(self):
        p = self.write("evil.pkl", structured_object_dtype_pkl())
        self.assertLess(os.path.getsize(p), 300)
        r = self.sam("--checkpoint", p, "--out", self.path("out"), timeout=120)
        self.assertGreaterEqual(r.returncode, 0, f"killed by signal {-r.returncode}: {r.stderr}")
        self.assert_one_line_error(r, "ovseg-export-sam", 2, p, "structured")

    @unittest.skipUnless(HAVE_PROC, "needs /proc/self/statm")
    def test_allocation_bombs_are_refused_before_allocating(self):
        for name, data, needle in (
            ("bytearray.pkl", bytearray_bomb_pkl(), "bytearray(3000000000)"),
            ("reconstruct.pkl", reconstruct_bomb_pkl(), "needs 1700000000 bytes"),
        ):
            with self.subTest(name=name):
                p = self.write(name, data)
                self.assertLess(len(data), 200)
                code, out, err = run_child(
                    f"""
                    try:
                        load.read_checkpoint({p!r})
                    except load.CheckpointReadError as e:
                        print("ERROR", e)
                    """,
                    extra_address_space=512 << 20,
                )
                self.assertEqual(code, 0, err)
                self.assertIn("ERROR", out)
                self.assertIn(needle, out)
                self.assertNotIn("MemoryError", out)
                self.assertNotIn("allocate", out.replace("would allocate", ""))

    def test_unsupported_array_dtypes_are_clear_errors(self):
        for name, arr, needle in (
            ("u16.pkl", np.zeros(3, np.uint16), "uint16"),
            ("str.pkl", np.array(["ab", "c"]), "U2"),
            ("obj.pkl", np.array([1, "a"], dtype=object), "O8"),
            ("rec.pkl", np.zeros(2, dtype=[("a", "f4"), ("b", "i4")]), "V8"),
        ):
            with self.subTest(name=name):
                p = self.path(name)
                with open(p, "wb") as f:
                    pickle.dump({"model": {"x": arr, "y": np.ones(2, np.float32)}, "__author__": "t"}, f, protocol=2)
                r = self.sam("--checkpoint", p, "--out", self.path("out"), timeout=120)
                self.assert_one_line_error(r, "ovseg-export-sam", 2, p, needle)

    def test_numeric_arrays_still_read(self):
        arrays = collections.OrderedDict(
            [
                ("a", np.arange(6, dtype=np.float32).reshape(2, 3)),
                ("f", np.asfortranarray(np.arange(6, dtype=np.float64).reshape(2, 3))),
                ("be", np.arange(4, dtype=">i4")),
                ("b", np.array([True, False])),
                ("s", np.array(3.5, np.float32)),
                ("e", np.zeros((0, 2), np.int64)),
            ]
        )
        for proto in (2, 4, 5):
            with self.subTest(protocol=proto):
                p = self.path("ok.pkl")
                with open(p, "wb") as f:
                    pickle.dump({"model": arrays, "__author__": "t", "step": np.int64(3)}, f, protocol=proto)
                got = load.read_checkpoint(p)
                for k, v in arrays.items():
                    want = torch.from_numpy(np.array(v, order="C").astype(v.dtype.newbyteorder("=")))
                    if want.is_floating_point():
                        want = want.float()
                    self.assertTrue(torch.equal(got[k], want), k)


# ------------------------------------------------------------------------------------------------
# 5. --config: bounded YAML, types and values checked


class ConfigTest(_Case):
    def expect_error(self, text, *needles):
        p = self.write("c.yaml", text)
        with self.assertRaises(config_mod.ConfigError) as cm:
            config_mod.load_config(p)
        msg = str(cm.exception)
        self.assertTrue(msg.startswith(p + ": "), msg)
        for n in needles:
            self.assertIn(n, msg)
        return msg

    def test_alias_expansion_is_bounded(self):
        # mappings of mappings through aliases: 10**7 values once expanded, 1 KB of text
        lines = ["MODEL:", "  L0: &l0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8, i: 9, j: 10}"]
        for i in range(1, 8):
            refs = ", ".join(f"k{j}: *l{i - 1}" for j in range(10))
            lines.append(f"  L{i}: &l{i} {{{refs}}}")
        text = "\n".join(lines) + "\n"
        self.assertLess(len(text), 1200)
        code, out, err = run_child(
            f"""
            import time
            t = time.time()
            try:
                config.load_config({self.write("bomb.yaml", text)!r})
                print("LOADED")
            except config.ConfigError as e:
                print("ERROR", e)
            print("SECONDS", time.time() - t)
            """,
            timeout=60,
        )
        self.assertIsNotNone(code, "loading the alias bomb ran past 60 s")
        self.assertEqual(code, 0, err)
        self.assertIn("ERROR", out)
        self.assertIn("alias", out)
        self.assertLess(float(out.split("SECONDS")[1]), 5.0)

    def test_recursive_alias_and_deep_nesting(self):
        self.expect_error("A: &a [1, *a]\n", "recursive alias")
        self.expect_error("MODEL:\n  X: " + "[" * 5000 + "]" * 5000 + "\n", "nested")
        chain = "a0: &a0 [1]\n" + "".join(f"a{i}: &a{i} [*a{i - 1}]\n" for i in range(1, 100))
        self.expect_error(chain, "nested")

    def test_type_errors_name_the_key(self):
        self.expect_error("MODEL: 5\n", "MODEL:", "expected a mapping")
        self.expect_error("MODEL:\n  CLIP_ADAPTER: [1]\n", "MODEL.CLIP_ADAPTER:")
        self.expect_error("MODEL:\n  PIXEL_MEAN: 5\n", "MODEL.PIXEL_MEAN:", "not a list")
        self.expect_error("MODEL:\n  PIXEL_MEAN: [1, 2]\n", "MODEL.PIXEL_MEAN:")
        self.expect_error("MODEL:\n  PIXEL_STD: [1, x, 2]\n", "MODEL.PIXEL_STD:")
        self.expect_error("INPUT:\n  MIN_SIZE_TEST: big\n", "INPUT.MIN_SIZE_TEST:")
        self.expect_error("MODEL:\n  CLIP_ADAPTER:\n    CLIP_ENSEMBLE: 1\n", "MODEL.CLIP_ADAPTER.CLIP_ENSEMBLE:")
        self.expect_error(
            "MODEL:\n  MASK_FORMER:\n    NUM_OBJECT_QUERIES: {a: 1}\n", "MODEL.MASK_FORMER.NUM_OBJECT_QUERIES:"
        )
        self.expect_error("MODEL:\n  SWIN:\n    DEPTHS: [2, 2, x, 2]\n", "MODEL.SWIN.DEPTHS:")

    def test_non_finite_and_negative_values(self):
        for key, section, value in (
            ("MASK_THR", "CLIP_ADAPTER", ".nan"),
            ("MASK_THR", "CLIP_ADAPTER", ".inf"),
            ("CLIP_ENSEMBLE_WEIGHT", "CLIP_ADAPTER", "-0.5"),
            ("CLIP_ENSEMBLE_WEIGHT", "CLIP_ADAPTER", "1e9"),
            ("NUM_OBJECT_QUERIES", "MASK_FORMER", "-3"),
            ("SIZE_DIVISIBILITY", "MASK_FORMER", "0"),
        ):
            with self.subTest(key=key, value=value):
                self.expect_error(f"MODEL:\n  {section}:\n    {key}: {value}\n", f"MODEL.{section}.{key}:")
        self.expect_error("MODEL:\n  PIXEL_STD: [1.0, 0.0, 1.0]\n", "MODEL.PIXEL_STD:")
        self.expect_error("MODEL:\n  PIXEL_MEAN: [.nan, 1, 1]\n", "MODEL.PIXEL_MEAN:", "finite")
        self.expect_error("INPUT:\n  MIN_SIZE_TEST: -1\n", "INPUT.MIN_SIZE_TEST:")

    def test_valid_values_still_load(self):
        p = self.write(
            "ok.yaml",
            "MODEL:\n  CLIP_ADAPTER:\n    MASK_THR: 1e-1\n" "    CLIP_ENSEMBLE_WEIGHT: 0\n  PIXEL_STD: [1, 2, 3]\n",
        )
        cfg = config_mod.load_config(p)
        self.assertEqual(cfg["MODEL"]["CLIP_ADAPTER"]["MASK_THR"], 0.1)
        self.assertEqual(cfg["MODEL"]["CLIP_ADAPTER"]["CLIP_ENSEMBLE_WEIGHT"], 0.0)
        self.assertEqual(cfg["MODEL"]["PIXEL_STD"], [1.0, 2.0, 3.0])

    @unittest.skipUnless(HAVE_VOCAB, f"shared vocabulary not found at {VOCAB}")
    def test_nan_never_reaches_the_manifest(self):
        p = self.write(
            "nan.yaml",
            "MODEL:\n  BACKBONE:\n    NAME: build_resnet_deeplab_backbone\n" "  CLIP_ADAPTER:\n    MASK_THR: .nan\n",
        )
        out = self.path("out")
        r = run(
            EXPORTER,
            "--random-init",
            "--config",
            p,
            "--bpe-vocab",
            VOCAB,
            "--out",
            out,
            "--clip-arch",
            json.dumps(TINY_CLIP),
        )
        self.assert_one_line_error(r, "ovseg-export", 2, f"{p}: MODEL.CLIP_ADAPTER.MASK_THR:")
        self.assertFalse(os.path.exists(out))


# ------------------------------------------------------------------------------------------------
# 6. Only regular files are opened; decompression is capped


class InputFileTest(_Case):
    def fifo(self, name):
        p = self.path(name)
        os.mkfifo(p)
        return p

    def test_fifos_are_refused_without_blocking(self):
        base = self.fifo("base.yaml")
        child = self.write("child.yaml", "_BASE_: base.yaml\n")
        vocab = self.fifo("vocab.txt.gz")
        tmpl = self.fifo("templates.json")
        code, out, err = run_child(
            f"""
            for what, f, errors in (
                    ("base", lambda: config.load_config({child!r}), config.ConfigError),
                    ("config", lambda: config.load_config({base!r}), config.ConfigError),
                    ("vocab", lambda: export._check_vocab({vocab!r}), load.CheckpointReadError),
                    ("templates", lambda: templates.load_templates("imagenet", {tmpl!r}), ValueError),
                    ("arch", lambda: load.read_json_option({tmpl!r}, "--arch"), load.UsageError)):
                try:
                    f()
                    print(what, "ACCEPTED")
                except errors as e:
                    print(what, "REFUSED", e)
            """,
            timeout=30,
        )
        self.assertIsNotNone(code, "opening a FIFO blocked")
        self.assertEqual(code, 0, err)
        for what, p in (("base", base), ("config", base), ("vocab", vocab), ("templates", tmpl), ("arch", tmpl)):
            line = [ln for ln in out.splitlines() if ln.startswith(what + " ")]
            self.assertEqual(len(line), 1, out)
            self.assertIn("REFUSED", line[0])
            self.assertIn(p, line[0])
            self.assertIn("FIFO", line[0])

    @unittest.skipUnless(HAVE_PROC, "needs /proc/self/statm")
    def test_devices_and_directories_are_refused(self):
        paths = [p for p in ("/dev/zero", self.tmp) if os.path.exists(p)]
        code, out, err = run_child(
            f"""
            for p in {paths!r}:
                for what, f, errors in (("config", config.load_config, config.ConfigError),
                                        ("checkpoint", load.read_checkpoint, load.CheckpointReadError)):
                    try:
                        f(p)
                        print(what, p, "ACCEPTED")
                    except errors as e:
                        print(what, p, "REFUSED", e)
            """,
            timeout=30,
            extra_address_space=512 << 20,
        )
        self.assertIsNotNone(code, "reading a device did not end")
        self.assertEqual(code, 0, err)
        lines = out.splitlines()
        self.assertEqual(len(lines), 2 * len(paths), out)
        for line in lines:
            self.assertIn("REFUSED", line)
            self.assertIn("not a regular file", line)

    @unittest.skipUnless(HAVE_PROC, "needs /proc/self/statm")
    def test_gzip_bomb_vocabulary_is_capped(self):
        p = self.path("bomb.txt.gz")
        comp = zlib.compressobj(9, zlib.DEFLATED, 31)
        chunk = b"\0" * (1 << 20)
        with open(p, "wb") as f:
            for _ in range(300):
                f.write(comp.compress(chunk))
            f.write(comp.flush())
        self.assertLess(os.path.getsize(p), 400_000)
        code, out, err = run_child(
            f"""
            try:
                export._check_vocab({p!r})
                print("ACCEPTED")
            except load.CheckpointReadError as e:
                print("REFUSED", e)
            """,
            timeout=120,
            extra_address_space=1200 << 20,
        )
        self.assertEqual(code, 0, err)
        self.assertIn("REFUSED", out)
        self.assertIn(p, out)
        self.assertIn("256 MiB", out)


# ------------------------------------------------------------------------------------------------
# 7. --out never replaces what ovseg did not write


class OutDirTest(_Case):
    def sam_export(self, out, cwd=None, *extra):
        return self.sam("--random-init", "--arch", json.dumps(TINY_SAM), "--out", out, "-q", *extra, cwd=cwd)

    def test_working_directory_and_parents_are_refused(self):
        work = self.path("work")
        os.makedirs(os.path.join(work, "sub"))
        keep = self.write("work/keep.txt", "mine")
        for out, cwd in ((".", work), ("..", os.path.join(work, "sub")), (work, work), (self.tmp, work)):
            with self.subTest(out=out, cwd=cwd):
                r = self.sam_export(out, cwd)
                self.assert_one_line_error(r, "ovseg-export-sam", 2, f"--out {out}")
                self.assertTrue(os.path.isfile(keep), "--out deleted the working directory")

    def test_non_bundle_directories_are_refused(self):
        mine = self.path("mine")
        os.makedirs(os.path.join(mine, "photos"))
        self.write("mine/notes.txt", "mine")
        r = self.sam_export(mine)
        self.assert_one_line_error(r, "ovseg-export-sam", 2, mine, "not an ovseg bundle")
        self.assertEqual(sorted(os.listdir(mine)), ["notes.txt", "photos"])
        a_file = self.write("file.txt", "mine")
        r = self.sam_export(a_file)
        self.assert_one_line_error(r, "ovseg-export-sam", 2, a_file, "not a directory")
        link = self.path("link")
        os.symlink(mine, link)
        r = self.sam_export(link)
        self.assert_one_line_error(r, "ovseg-export-sam", 2, "symbolic link")
        self.assertTrue(os.path.isfile(os.path.join(mine, "notes.txt")))

    def test_bundles_are_replaced_only_when_theirs(self):
        out = self.path("bundle")
        r = self.sam_export(out)
        self.assertEqual(r.returncode, 0, r.stderr)
        r = self.sam_export(out)  # the same kind, only its own files: replaced
        self.assertEqual(r.returncode, 0, r.stderr)
        self.write("bundle/README.md", "my notes")
        r = self.sam_export(out)
        self.assert_one_line_error(r, "ovseg-export-sam", 2, "README.md")
        self.assertTrue(os.path.isfile(os.path.join(out, "README.md")))
        os.remove(os.path.join(out, "README.md"))
        with open(os.path.join(out, "manifest.json")) as f:
            manifest = json.load(f)
        manifest["format"] = "ovseg-bundle"
        with open(os.path.join(out, "manifest.json"), "w") as f:
            json.dump(manifest, f)
        r = self.sam_export(out)
        self.assert_one_line_error(r, "ovseg-export-sam", 2, "ovseg-bundle")
        self.assertTrue(os.path.isfile(os.path.join(out, "sam_image_encoder.pt")))
        empty = self.path("empty")
        os.makedirs(empty)
        r = self.sam_export(empty)
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertTrue(os.path.isfile(os.path.join(empty, "manifest.json")))

    def test_a_directory_holding_the_checkpoint_is_refused(self):
        d = self.path("models")
        os.makedirs(d)
        ckpt = os.path.join(d, "sam.pth")
        torch.save({"x": torch.zeros(1)}, ckpt)
        r = self.sam("--checkpoint", ckpt, "--out", d)
        self.assert_one_line_error(r, "ovseg-export-sam", 2, ckpt)
        self.assertTrue(os.path.isfile(ckpt))

    def test_check_out_dir(self):
        from ovseg_export import safe_io

        home = os.path.expanduser("~")
        for out in ("/", "~", "~/x", home, os.path.dirname(home) or "/", ".", ".."):
            with self.subTest(out=out):
                with self.assertRaises(safe_io.OutDirError):
                    safe_io.check_out_dir(out, "ovseg-bundle")
        self.assertEqual(safe_io.check_out_dir(self.path("new"), "ovseg-bundle"), self.path("new"))

    @unittest.skipUnless(HAVE_VOCAB, f"shared vocabulary not found at {VOCAB}")
    def test_ovseg_export_out_checks(self):
        work = self.path("work")
        os.makedirs(work)
        keep = self.write("work/keep.txt", "mine")
        base = (
            "--random-init",
            "--preset",
            "R101c_vitB16",
            "--bpe-vocab",
            VOCAB,
            "--clip-arch",
            json.dumps(TINY_CLIP),
            "-q",
        )
        r = run(EXPORTER, *base, "--out", ".", cwd=work)
        self.assert_one_line_error(r, "ovseg-export", 2, "--out .")
        self.assertTrue(os.path.isfile(keep))
        r = run(EXPORTER, *base, "--out", work)
        self.assert_one_line_error(r, "ovseg-export", 2, "keep.txt")
        self.assertTrue(os.path.isfile(keep))
        vdir = self.path("v")
        os.makedirs(vdir)
        vocab = os.path.join(vdir, "vocab.txt.gz")
        shutil.copyfile(VOCAB, vocab)
        r = run(EXPORTER, *base[:4], vocab, *base[5:], "--out", vdir)
        self.assert_one_line_error(r, "ovseg-export", 2, vocab)


# ------------------------------------------------------------------------------------------------
# 8. ovseg-export-sam --arch


class SamArchTest(_Case):
    def export(self, overrides, *extra):
        arch = dict(TINY_SAM)
        arch.update(overrides)
        return self.sam("--random-init", "--arch", json.dumps(arch), "--out", self.path("out"), "-q", *extra)

    def test_bad_values_are_usage_errors(self):
        for key, value in (
            ("num_heads", 0),
            ("embed_dim", "x"),
            ("img_size", 1e6),
            ("img_size", 10**6),
            ("decoder_num_heads", 0),
            ("depth", -1),
            ("global_attn_indexes", [99]),
            ("global_attn_indexes", [1, 1]),
            ("mlp_ratio", float("nan")),
            ("pixel_std", [1, 0, 1]),
            ("pixel_mean", 3),
            ("window_size", True),
            ("num_heads", 3),
            ("decoder_num_heads", 5),
            ("img_size", 72),
            ("no_such_key", 1),
        ):
            with self.subTest(key=key, value=value):
                r = self.export({key: value})
                self.assert_one_line_error(r, "ovseg-export-sam", 2, "--arch", key)
                self.assertFalse(os.path.exists(self.path("out")))

    def test_arch_file_errors_name_the_file(self):
        arch = dict(TINY_SAM, depth=0)
        p = self.write("arch.json", json.dumps(arch))
        r = self.sam("--random-init", "--arch", p, "--out", self.path("out"))
        self.assert_one_line_error(r, "ovseg-export-sam", 2, f"--arch {p}: depth")
        p = self.write("broken.json", "{")
        r = self.sam("--random-init", "--arch", p, "--out", self.path("out"))
        self.assert_one_line_error(r, "ovseg-export-sam", 2, p)

    def test_valid_arch_exports(self):
        r = self.export({})
        self.assertEqual(r.returncode, 0, r.stderr)
        with open(self.path("out/manifest.json")) as f:
            self.assertEqual(json.load(f)["architecture"]["depth"], 2)

    @unittest.skipUnless(HAVE_SAM, f"no SAM fixture at {SAM_FIXTURE}")
    def test_checkpoint_overrides_are_checked(self):
        ckpt = os.path.join(SAM_FIXTURE, "checkpoint.pth")
        for overrides in ({"decoder_num_heads": 0}, {"decoder_num_heads": 3}, {"pixel_std": [0, 1, 1]}):
            with self.subTest(overrides=overrides):
                r = self.sam("--checkpoint", ckpt, "--arch", json.dumps(overrides), "--out", self.path("out"))
                self.assertEqual(r.returncode, 2, r.stderr)
                self.assertNotIn("Traceback", r.stderr)
                self.assertIn("--arch", r.stderr.strip().splitlines()[-1])
                self.assertFalse(os.path.exists(self.path("out")))


if __name__ == "__main__":
    unittest.main()
