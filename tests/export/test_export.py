"""tools/ovseg-export: bundle contents and settings of every shared fixture, scripted == eager,
loader errors, --random-init, and synthetic ResNet checkpoints (DeepLab R50, plain R18)."""
import hashlib
import json
import os
import shutil
import struct
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
from fixture_util import fixture_classes  # noqa: E402
from ovseg_export import config as config_mod  # noqa: E402
from ovseg_export import pipeline  # noqa: E402
from ovseg_export.export import load_eager  # noqa: E402

torch.set_num_threads(1)
SHARED = fixture_util.SHARED
PRIMARY = fixture_util.primary_fixture()  # for the tests that need one fixture, not its data
FIXTURE = PRIMARY.dir if PRIMARY else os.path.join(SHARED, "fixtures", fixture_util.PRIMARY_NAME)
CKPT = os.path.join(FIXTURE, "checkpoint.pth")
CONFIG = os.path.join(FIXTURE, "config_eval.yaml")
VOCAB = fixture_util.VOCAB
EXPORTER = os.path.join(REPO, "tools", "ovseg-export")
PYTHON = sys.executable or "/usr/bin/python3"
HAVE_SHARED = os.path.isfile(CKPT) and os.path.isfile(VOCAB)
SKIP_MSG = f"no shared fixture found under {fixture_util.FIXTURES_DIR} (set OVSEG_SHARED_DIR)"

# A CLIP small enough for a quick --random-init bundle (full vocabulary: the tokenizer needs it).
TINY_CLIP = {
    "embed_dim": 64,
    "image_resolution": 224,
    "vision_layers": 2,
    "vision_width": 64,
    "vision_patch_size": 16,
    "context_length": 77,
    "vocab_size": 49408,
    "transformer_width": 64,
    "transformer_layers": 1,
}


def run_exporter(*args, env=None):
    e = dict(os.environ)
    e["OMP_NUM_THREADS"] = "1"
    if env:
        e.update(env)
    return subprocess.run([PYTHON, EXPORTER, *args], capture_output=True, text=True, env=e, timeout=900)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def f32_bits(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


def _bundle_for(fx, tmp):
    """ctest's bundle of the fixture, else one exported here (with the demo config applied
    the same way, tests/export/make_test_bundles.py)."""
    bundle = fx.bundle()
    if bundle:
        return bundle
    bundle = os.path.join(tmp, "bundle")
    r = run_exporter("--checkpoint", fx.checkpoint, "--config", fx.config_eval, "--bpe-vocab", VOCAB, "--out", bundle)
    if r.returncode != 0:
        raise RuntimeError(f"export failed ({r.returncode}): {r.stderr}")
    demo = os.path.join(fx.dir, "config_demo.yaml")
    if os.path.isfile(demo):
        import make_test_bundles

        make_test_bundles.apply_demo_config(bundle, demo)
    return bundle


class _FixtureBundle:
    """Each shared fixture's bundle: manifest values from the fixture's configs, checksums,
    scripted modules equal to the eager ones."""

    FIXTURE = None

    @classmethod
    def setUpClass(cls):
        if not os.path.isfile(VOCAB):
            raise unittest.SkipTest(f"shared vocabulary not found at {VOCAB}")
        cls.tmp = tempfile.mkdtemp(prefix="ovseg-test-export-")
        cls.bundle = _bundle_for(cls.FIXTURE, cls.tmp)
        with open(os.path.join(cls.bundle, "manifest.json"), "r", encoding="utf-8") as f:
            cls.manifest = json.load(f)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_manifest_schema_and_checksums(self):
        m = self.manifest
        self.assertEqual(m["format"], "ovseg-bundle")
        self.assertEqual(m["format_version"], 1)
        for key in (
            "name",
            "created_by",
            "created_at",
            "source",
            "architecture",
            "preprocess",
            "inference",
            "text",
            "non_object_embedding",
            "modules",
            "files",
        ):
            self.assertIn(key, m)
        self.assertEqual(m["source"]["sha256"], sha256(self.FIXTURE.checkpoint))
        self.assertEqual(
            m["modules"], {"proposals": "proposals.pt", "clip_visual": "clip_visual.pt", "clip_text": "clip_text.pt"}
        )
        self.assertEqual(
            sorted(m["files"]),
            sorted(["proposals.pt", "clip_visual.pt", "clip_text.pt", "bpe_simple_vocab_16e6.txt.gz"]),
        )
        for fname, info in m["files"].items():
            p = os.path.join(self.bundle, fname)
            self.assertEqual(sha256(p), info["sha256"], fname)
            self.assertEqual(os.path.getsize(p), info["bytes"], fname)
        self.assertEqual(sha256(os.path.join(self.bundle, "bpe_simple_vocab_16e6.txt.gz")), sha256(VOCAB))

    def test_manifest_values(self):
        m = self.manifest
        fx = self.FIXTURE
        cfg = fx.config("eval")
        clip = m["architecture"]["clip"]
        meta = next((fx.meta(mode) for mode in fixture_util.MODES if fx.meta(mode)), None) or {}
        ca = meta.get("clip_arch")
        if ca:
            self.assertEqual(clip["embed_dim"], ca["embed_dim"])
            self.assertEqual(clip["vision_width"], ca["vision_width"])
            self.assertEqual(clip["vision_layers"], ca["vision_layers"])
            self.assertEqual(clip["patch_size"], ca["vision_patch_size"])
            self.assertEqual(clip["grid"], ca["image_resolution"] // ca["vision_patch_size"])
            self.assertEqual(clip["text_width"], ca["transformer_width"])
            self.assertEqual(clip["text_layers"], ca["transformer_layers"])
            self.assertEqual(clip["text_heads"], ca["transformer_heads"])
            self.assertEqual(clip["vision_heads"], ca["vision_width"] // 64)
        sd = torch.load(fx.checkpoint, map_location="cpu")
        sd = sd.get("model", sd)
        prompts = next((v for k, v in sd.items() if k.endswith("clip_model.visual.mask_embedding")), None)
        if prompts is not None:
            self.assertEqual(clip["prompt_depth"], prompts.shape[0])
        self.assertEqual(clip["mask_prompt_fwd"], bool(cfg["MODEL"]["CLIP_ADAPTER"].get("MASK_PROMPT_FWD", True)))
        arch = m["architecture"]
        kind = config_mod.backbone_kind(cfg)
        self.assertEqual(arch["backbone"], kind)
        self.assertEqual(arch["num_queries"], int(cfg["MODEL"]["MASK_FORMER"]["NUM_OBJECT_QUERIES"]))
        self.assertEqual(arch["embed_dim"], clip["embed_dim"])
        self.assertEqual(arch["embed_dim"], int(cfg["MODEL"]["SEM_SEG_HEAD"]["EMBEDDING_DIM"]))
        if kind == "swin":
            self.assertEqual(arch["backbone_config"]["EMBED_DIM"], cfg["MODEL"]["SWIN"]["EMBED_DIM"])
            self.assertEqual(arch["backbone_config"]["DEPTHS"], cfg["MODEL"]["SWIN"]["DEPTHS"])
        else:
            for k in ("DEPTH", "STEM_OUT_CHANNELS", "RES2_OUT_CHANNELS", "WIDTH_PER_GROUP", "NUM_GROUPS"):
                self.assertEqual(arch["backbone_config"][k], cfg["MODEL"]["RESNETS"][k], k)
        pre = m["preprocess"]
        lo, hi = fx.test_sizes("eval")
        self.assertEqual(
            (pre["min_size_test"], pre["max_size_test"], pre["size_divisibility"]),
            (lo, hi, int(cfg["MODEL"]["MASK_FORMER"]["SIZE_DIVISIBILITY"])),
        )
        self.assertEqual(pre["pixel_mean"], [float(v) for v in cfg["MODEL"]["PIXEL_MEAN"]])
        self.assertEqual(pre["pixel_std"], [float(v) for v in cfg["MODEL"]["PIXEL_STD"]])
        # docs/reference-behaviour.md §6.4: fill and normalisation mean differ by one float32 ulp in R and G.
        self.assertEqual([f32_bits(v) for v in pre["clip_fill"]], [0x42F58AB8, 0x42E97DF5, 0x42D02FFE])
        self.assertEqual([f32_bits(v) for v in pre["clip_mean255"]], [0x42F58AB9, 0x42E97DF6, 0x42D02FFE])
        for v, ref in zip(pre["clip_std255"], (68.50053406, 66.63216400, 70.32315826)):
            self.assertAlmostEqual(v, ref, places=6)
        self.assertEqual(pre["region_resolution"], clip["image_resolution"])
        inf = m["inference"]
        self.assertEqual(inf["temperature"], 100.0)
        self.assertEqual(inf["eval"], fx.settings("eval"))
        # The exporter gives the demo path the released defaults; the test bundles take the
        # demo config's values where the fixture has one.
        demo_cfg = os.path.join(fx.dir, "config_demo.yaml")
        self.assertEqual(
            inf["demo"],
            fx.settings("demo") if os.path.isfile(demo_cfg) else fixture_util.released_settings(kind, "demo"),
        )
        with open(os.path.join(SHARED, "text_templates.json"), "r", encoding="utf-8") as f:
            self.assertEqual(m["text"]["templates"], json.load(f)["vild"])
        self.assertEqual(m["text"]["tokenizer"]["context_length"], clip["context_length"])

    def test_demo_config_thresholds_go_to_demo_path(self):
        demo = os.path.join(self.FIXTURE.dir, "config_demo.yaml")
        if not os.path.isfile(demo):
            self.skipTest("fixture has no config_demo.yaml")
        cfg = config_mod.load_config(demo)
        kind = config_mod.backbone_kind(cfg)
        s = config_mod.inference_settings(cfg)["inference"]
        if cfg["MODEL"]["META_ARCHITECTURE"] == "OVSegDEMO":
            self.assertEqual(s["demo"], self.FIXTURE.settings("demo"))
            self.assertEqual(s["eval"], fixture_util.released_settings(kind, "eval"))
        else:
            self.assertEqual(s["eval"], self.FIXTURE.settings("demo"))
            self.assertEqual(s["demo"], fixture_util.released_settings(kind, "demo"))

    def test_scripted_equals_eager(self):
        fx = self.FIXTURE
        cfg = config_mod.load_config(fx.config_eval)
        eager, arch, _, _ = load_eager(fx.checkpoint, cfg, quiet=True)
        scripted = {n: torch.jit.load(os.path.join(self.bundle, f)) for n, f in self.manifest["modules"].items()}
        q = int(cfg["MODEL"]["MASK_FORMER"]["NUM_OBJECT_QUERIES"])
        r = arch["image_resolution"]
        torch.manual_seed(0)
        with torch.no_grad():
            for hw in ((64, 96), (96, 64)):
                x = torch.randn(1, 3, *hw)
                e_emb, e_masks = eager["proposals"](x)
                s_emb, s_masks = scripted["proposals"](x)
                self.assertEqual(tuple(s_emb.shape), (1, q, arch["embed_dim"]))
                self.assertEqual(tuple(s_masks.shape), (1, q, hw[0] // 4, hw[1] // 4))
                self.assertLessEqual((e_emb - s_emb).abs().max().item(), 1e-5 * max(1.0, e_emb.abs().max().item()))
                self.assertLessEqual(
                    (e_masks - s_masks).abs().max().item(), 1e-5 * max(1.0, e_masks.abs().max().item())
                )
            images = torch.randn(3, 3, r, r)
            masks = (torch.rand(3, 1, r, r) > 0.7).float()
            ev = eager["clip_visual"](images, masks)
            sv = scripted["clip_visual"](images, masks)
            self.assertEqual(tuple(sv.shape), (3, arch["embed_dim"]))
            self.assertLessEqual((ev - sv).abs().max().item(), 1e-6)
            tokens = torch.zeros(2, 9, dtype=torch.long)
            tokens[0, :5] = torch.tensor([49406, 320, 1125, 539, 49407])
            tokens[1, :] = torch.tensor([49406, 320, 1125, 539, 320, 2368, 269, 320, 49407])
            et = eager["clip_text"](tokens)
            st = scripted["clip_text"](tokens)
            self.assertLessEqual((et - st).abs().max().item(), 1e-6 * max(1.0, et.abs().max().item()))
            self.assertTrue(
                torch.equal(scripted["clip_text"].non_object_embedding, eager["clip_text"].non_object_embedding)
            )
        sd = torch.load(fx.checkpoint, map_location="cpu")
        sd = sd.get("model", sd)
        key = next(k for k in sd if k.endswith("clip_adapter.non_object_embedding"))
        self.assertTrue(torch.equal(scripted["clip_text"].non_object_embedding, sd[key].float()))
        for p in scripted["clip_visual"].parameters():
            self.assertEqual(p.dtype, torch.float32)
            self.assertEqual(p.device.type, "cpu")


fixture_classes(_FixtureBundle, globals())


class PresetSchemaTest(unittest.TestCase):
    """The modules built for each preset expect exactly the released checkpoint's tensors."""

    def test_presets_match_checkpoint_schemas(self):
        from ovseg_export.export import checkpoint_key_map, random_modules
        from ovseg_export.load import is_ignored_key

        found = 0
        for preset, schema in (
            ("R101c_vitB16", "checkpoint_schema_R101c_vitB16.json"),
            ("swinB_vitL14", "checkpoint_schema_swinB_vitL14.json"),
        ):
            path = os.path.join(SHARED, schema)
            if not os.path.isfile(path):
                continue
            found += 1
            with open(path, "r", encoding="utf-8") as f:
                sd = json.load(f)["state_dict"]
            modules, _ = random_modules(config_mod.config_for(preset=preset), 0)
            states = {n: m.state_dict() for n, m in modules.items()}
            expected = {k: states[m][local] for k, (m, local) in checkpoint_key_map(modules).items()}
            del modules, states
            self.assertEqual(sorted(k for k in expected if k not in sd), [], f"{preset}: model keys not in checkpoint")
            self.assertEqual(
                sorted(k for k in sd if k not in expected and not is_ignored_key(k)),
                [],
                f"{preset}: checkpoint keys the model does not use",
            )
            for k, t in expected.items():
                self.assertEqual(list(t.shape), sd[k]["shape"], f"{preset}: {k}")
                self.assertEqual(str(t.dtype).replace("torch.", ""), sd[k]["dtype"], f"{preset}: {k}")
            del expected
        if not found:
            self.skipTest(f"checkpoint schemas not found in {SHARED}")


@unittest.skipUnless(HAVE_SHARED, SKIP_MSG)
class LoaderErrorTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ovseg-test-export-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def _export(self, ckpt, *extra):
        out = os.path.join(self.tmp, "out")
        r = run_exporter("--checkpoint", ckpt, "--config", CONFIG, "--bpe-vocab", VOCAB, "--out", out, *extra)
        return r, out

    def test_truncated_checkpoint(self):
        bad = os.path.join(self.tmp, "truncated.pth")
        with open(CKPT, "rb") as f:
            data = f.read()
        with open(bad, "wb") as f:
            f.write(data[: len(data) // 2])
        r, out = self._export(bad)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn(bad, r.stderr)
        self.assertFalse(os.path.exists(out))

    def test_not_a_checkpoint(self):
        for name, payload in (("notes.pth", b"this is not a checkpoint\n"), ("image.pth", None)):
            bad = os.path.join(self.tmp, name)
            if payload is None:
                shutil.copyfile(os.path.join(FIXTURE, "image.png"), bad)
            else:
                with open(bad, "wb") as f:
                    f.write(payload)
            r, out = self._export(bad)
            self.assertEqual(r.returncode, 2, r.stderr)
            self.assertIn(bad, r.stderr)
            self.assertFalse(os.path.exists(out))
        lst = os.path.join(self.tmp, "list.pth")
        torch.save([torch.zeros(2)], lst)
        r, _ = self._export(lst)
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn(lst, r.stderr)

    def test_missing_file(self):
        r, _ = self._export(os.path.join(self.tmp, "nope.pth"))
        self.assertEqual(r.returncode, 2)
        self.assertIn("nope.pth", r.stderr)

    def test_missing_key_refused_unless_allow_partial(self):
        obj = torch.load(CKPT, map_location="cpu")
        key = "sem_seg_head.predictor.query_embed.weight"
        self.assertIn(key, obj["model"])
        del obj["model"][key]
        bad = os.path.join(self.tmp, "missing_key.pth")
        torch.save(obj, bad)
        r, out = self._export(bad)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn(key, r.stderr)
        self.assertIn("missing", r.stderr)
        self.assertFalse(os.path.exists(out))
        self.assertEqual([n for n in os.listdir(self.tmp) if ".tmp-" in n], [])
        r, out = self._export(bad, "--allow-partial")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn(key, r.stderr)
        self.assertTrue(os.path.isfile(os.path.join(out, "manifest.json")))

    def test_shape_mismatch_refused(self):
        obj = torch.load(CKPT, map_location="cpu")
        key = "clip_adapter.clip_model.visual.ln_post.bias"
        obj["model"][key] = torch.zeros(obj["model"][key].shape[0] + 1)
        bad = os.path.join(self.tmp, "mismatch.pth")
        torch.save(obj, bad)
        r, out = self._export(bad)
        self.assertEqual(r.returncode, 3, r.stderr)
        self.assertIn(key, r.stderr)
        self.assertFalse(os.path.exists(out))

    def test_loader_semantics(self):
        # "module." prefix, no "model" wrapper, fp16 tensors, version-1 pixel decoder names and an
        # unused extra key all load like the official checkpoint.
        from ovseg_export.load import read_checkpoint

        ref = read_checkpoint(CKPT)
        sd = torch.load(CKPT, map_location="cpu")["model"]
        odd = {}
        for k, v in sd.items():
            k2 = k.replace("sem_seg_head.pixel_decoder.", "sem_seg_head.")
            if k == "clip_adapter.clip_model.visual.proj":
                v = v.half()
            odd["module." + k2] = v
        odd["module.some_training_thing"] = torch.ones(3)
        odd["module.backbone.norm0.num_batches_tracked"] = torch.tensor(5)
        p = os.path.join(self.tmp, "odd.pth")
        torch.save(odd, p)
        got = read_checkpoint(p)
        for k, v in ref.items():
            self.assertIn(k, got)
            self.assertEqual(got[k].dtype, v.dtype if k != "clip_adapter.clip_model.visual.proj" else torch.float32)
        self.assertTrue(
            torch.equal(
                got["clip_adapter.clip_model.visual.proj"], ref["clip_adapter.clip_model.visual.proj"].half().float()
            )
        )
        r, out = self._export(p, "-v")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("some_training_thing", r.stderr)  # listed as unused
        self.assertIn("num_batches_tracked", r.stderr)  # listed as ignored with -v

    def test_out_dir_replaced_atomically(self):
        # an existing bundle is replaced as a whole; a directory holding anything the exporter
        # did not write is not (tests/export/test_untrusted_inputs.py has the other cases)
        r, out = self._export(CKPT, "-q")
        self.assertEqual(r.returncode, 0, r.stderr)
        os.utime(os.path.join(out, "proposals.pt"), (0, 0))
        r, out = self._export(CKPT, "-q")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "")
        self.assertNotEqual(os.stat(os.path.join(out, "proposals.pt")).st_mtime, 0)
        self.assertEqual(sorted(os.listdir(self.tmp)), ["out"])
        with open(os.path.join(out, "stale.txt"), "w") as f:
            f.write("old")
        r, _ = self._export(CKPT, "-q")
        self.assertEqual(r.returncode, 2, r.stderr)
        self.assertIn("stale.txt", r.stderr)
        self.assertTrue(os.path.isfile(os.path.join(out, "stale.txt")))
        self.assertEqual(sorted(os.listdir(self.tmp)), ["out"])


@unittest.skipUnless(os.path.isfile(VOCAB), f"shared vocabulary not found at {VOCAB}")
class CliTest(unittest.TestCase):
    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ovseg-test-export-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_version_and_help(self):
        r = run_exporter("--version")
        self.assertEqual(r.returncode, 0)
        self.assertRegex(r.stdout, r"^ovseg-export \d+\.\d+\.\d+")
        r = run_exporter("--help")
        self.assertEqual(r.returncode, 0)
        for opt in (
            "--checkpoint",
            "--config",
            "--preset",
            "--bpe-vocab",
            "--out",
            "--random-init",
            "--seed",
            "--allow-partial",
            "--name",
            "--template-set",
        ):
            self.assertIn(opt, r.stdout)

    def test_usage_errors(self):
        out = os.path.join(self.tmp, "o")
        r = run_exporter("--preset", "swinB_vitL14", "--bpe-vocab", VOCAB, "--out", out)
        self.assertEqual(r.returncode, 2)
        self.assertIn("--checkpoint", r.stderr)
        r = run_exporter("--preset", "nope", "--bpe-vocab", VOCAB, "--out", out, "--random-init")
        self.assertEqual(r.returncode, 2)
        r = run_exporter("--random-init", "--bpe-vocab", VOCAB, "--out", out)
        self.assertEqual(r.returncode, 2)
        bad_vocab = os.path.join(self.tmp, "vocab.txt.gz")
        with open(bad_vocab, "w") as f:
            f.write("x")
        r = run_exporter("--random-init", "--preset", "R101c_vitB16", "--bpe-vocab", bad_vocab, "--out", out)
        self.assertEqual(r.returncode, 2)
        self.assertIn(bad_vocab, r.stderr)
        r = run_exporter(
            "--random-init",
            "--preset",
            "R101c_vitB16",
            "--bpe-vocab",
            VOCAB,
            "--out",
            out,
            "--template-set",
            "imagenet",
        )
        self.assertEqual(r.returncode, 2)
        self.assertIn("--templates-file", r.stderr)
        self.assertFalse(os.path.exists(out))

    def test_presets(self):
        swin = config_mod.config_for(preset="swinB_vitL14")
        r101 = config_mod.config_for(preset="R101c_vitB16")
        s = config_mod.inference_settings(swin)
        r = config_mod.inference_settings(r101)
        self.assertEqual((s["preprocess"]["min_size_test"], s["preprocess"]["max_size_test"]), (640, 2560))
        self.assertEqual((r["preprocess"]["min_size_test"], r["preprocess"]["max_size_test"]), (512, 2048))
        self.assertEqual(s["inference"]["eval"], {"mask_threshold": 0.4, "ensemble_weight": 0.7})
        self.assertEqual(r["inference"]["eval"], {"mask_threshold": 0.5, "ensemble_weight": 0.7})
        for x in (s, r):
            self.assertEqual(x["inference"]["demo"], {"mask_threshold": 0.35, "ensemble_weight": 0.0})
        self.assertEqual(swin["MODEL"]["SWIN"]["DEPTHS"], [2, 2, 18, 2])
        self.assertEqual(swin["MODEL"]["SWIN"]["NUM_HEADS"], [4, 8, 16, 32])
        self.assertEqual(swin["MODEL"]["SWIN"]["EMBED_DIM"], 128)
        self.assertEqual(swin["MODEL"]["SWIN"]["WINDOW_SIZE"], 12)
        self.assertEqual(r101["MODEL"]["RESNETS"]["DEPTH"], 101)
        self.assertFalse(r101["MODEL"]["RESNETS"]["STRIDE_IN_1X1"])
        self.assertEqual(r101["MODEL"]["RESNETS"]["RES5_MULTI_GRID"], [1, 2, 4])
        schema_dir = SHARED
        for preset, schema in (
            ("swinB_vitL14", "checkpoint_schema_swinB_vitL14.json"),
            ("R101c_vitB16", "checkpoint_schema_R101c_vitB16.json"),
        ):
            path = os.path.join(schema_dir, schema)
            if not os.path.isfile(path):
                continue
            with open(path, "r", encoding="utf-8") as f:
                hp = json.load(f)["hyperparameters"]
            cfg = config_mod.config_for(preset=preset)
            for section in (
                "SWIN" if preset.startswith("swin") else "RESNETS",
                "SEM_SEG_HEAD",
                "MASK_FORMER",
                "CLIP_ADAPTER",
            ):
                for k, v in hp["MODEL"][section].items():
                    self.assertEqual(cfg["MODEL"][section][k], v, f"{preset} MODEL.{section}.{k}")
            for k, v in hp["INPUT"].items():
                self.assertEqual(cfg["INPUT"][k], v, f"{preset} INPUT.{k}")

    def test_random_init_small_bundle(self):
        cfg = CONFIG if os.path.isfile(CONFIG) else None
        if cfg is None:
            self.skipTest(SKIP_MSG)
        tiny = dict(TINY_CLIP)
        tiny["embed_dim"] = int(config_mod.load_config(cfg)["MODEL"]["SEM_SEG_HEAD"]["EMBEDDING_DIM"])
        arch = json.dumps(tiny)
        outs = []
        for seed in (3, 3, 4):
            out = os.path.join(self.tmp, f"rand{len(outs)}")
            r = run_exporter(
                "--random-init",
                "--seed",
                str(seed),
                "--config",
                cfg,
                "--clip-arch",
                arch,
                "--bpe-vocab",
                VOCAB,
                "--out",
                out,
                "--name",
                "tiny-random",
            )
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("MB", r.stdout)
            outs.append(out)
        backend = pipeline.load_bundle(outs[0])
        self.assertEqual(backend.manifest["source"]["checkpoint"], "random-init")
        self.assertEqual(backend.manifest["architecture"]["clip"]["vision_width"], 64)
        self.assertEqual(backend.manifest["name"], "tiny-random")
        res = pipeline.run(backend, os.path.join(FIXTURE, "image.png"), ["cat", "dog"], "eval")
        w0, h0 = pipeline.decode_image(os.path.join(FIXTURE, "image.png")).size
        self.assertEqual(tuple(res["sem_seg"].shape[1:]), (h0, w0))
        self.assertTrue(bool(torch.isfinite(res["sem_seg"]).all()))

        def weights(path):
            m = torch.jit.load(os.path.join(path, "proposals.pt"))
            return dict(m.state_dict())

        a, b, c = (weights(o) for o in outs)
        self.assertTrue(all(torch.equal(a[k], b[k]) for k in a))
        self.assertFalse(all(torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point()))


@unittest.skipUnless(os.path.isfile(VOCAB), f"shared vocabulary not found at {VOCAB}")
class SyntheticResNetExportTest(unittest.TestCase):
    """Official-format ResNet checkpoints (tests/export/synthetic_fixtures.py: DeepLab R50 with
    the 3-conv stem, plain R18 with BasicBlocks and a dilated res5) export completely, and the
    bundle runs."""

    def setUp(self):
        self.tmp = tempfile.mkdtemp(prefix="ovseg-test-export-")

    def tearDown(self):
        shutil.rmtree(self.tmp, ignore_errors=True)

    def test_variants_export_and_run(self):
        import synthetic_fixtures

        image = PRIMARY.image if PRIMARY else None
        for variant in synthetic_fixtures.VARIANTS:
            with self.subTest(variant=variant):
                paths = synthetic_fixtures.write_fixture(os.path.join(self.tmp, variant), variant)
                out = os.path.join(self.tmp, variant + "-bundle")
                r = run_exporter(
                    "--checkpoint",
                    paths["checkpoint"],
                    "--config",
                    paths["config_eval"],
                    "--bpe-vocab",
                    VOCAB,
                    "--out",
                    out,
                )
                self.assertEqual(r.returncode, 0, r.stderr)
                self.assertRegex(r.stderr, r"\d+ loaded, 0 missing, 0 shape-mismatched, 0 unused, 4 ignored")
                with open(os.path.join(out, "manifest.json"), "r", encoding="utf-8") as f:
                    m = json.load(f)
                cfg = config_mod.load_config(paths["config_eval"])
                rn = cfg["MODEL"]["RESNETS"]
                self.assertEqual(m["architecture"]["backbone"], "resnet")
                for k in (
                    "DEPTH",
                    "STEM_TYPE",
                    "STEM_OUT_CHANNELS",
                    "RES2_OUT_CHANNELS",
                    "WIDTH_PER_GROUP",
                    "STRIDE_IN_1X1",
                    "RES5_DILATION",
                    "RES5_MULTI_GRID",
                ):
                    self.assertEqual(m["architecture"]["backbone_config"][k], rn[k], k)
                depth = int(rn["DEPTH"])
                self.assertEqual(
                    m["name"], f"ovseg-R{depth}" + ("c" if rn["STEM_TYPE"] == "deeplab" else "") + "-vitB16"
                )
                self.assertEqual(
                    m["inference"]["eval"],
                    {
                        "mask_threshold": float(cfg["MODEL"]["CLIP_ADAPTER"]["MASK_THR"]),
                        "ensemble_weight": float(cfg["MODEL"]["CLIP_ADAPTER"]["CLIP_ENSEMBLE_WEIGHT"]),
                    },
                )
                eager, _, _, _ = load_eager(paths["checkpoint"], cfg, quiet=True)
                scripted = torch.jit.load(os.path.join(out, "proposals.pt"))
                x = torch.randn(1, 3, 96, 160, generator=torch.Generator().manual_seed(2))
                with torch.no_grad():
                    e_emb, e_masks = eager["proposals"](x)
                    s_emb, s_masks = scripted(x)
                self.assertEqual(tuple(s_masks.shape[-2:]), (24, 40))
                self.assertLessEqual((e_emb - s_emb).abs().max().item(), 1e-5 * max(1.0, e_emb.abs().max().item()))
                self.assertLessEqual(
                    (e_masks - s_masks).abs().max().item(), 1e-5 * max(1.0, e_masks.abs().max().item())
                )
                if image:
                    res = pipeline.run(pipeline.load_bundle(out), image, synthetic_fixtures.CLASSES, "eval")
                    self.assertTrue(bool(torch.isfinite(res["sem_seg"]).all()))
                    self.assertGreater(res["num_valid_regions"], 0)


if __name__ == "__main__":
    unittest.main()
