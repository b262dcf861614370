"""tools/ovseg-export: bundle contents, scripted == eager, loader errors, --random-init."""
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

import torch  # noqa: E402

from ovseg_export import config as config_mod  # noqa: E402
from ovseg_export import pipeline  # noqa: E402
from ovseg_export.export import load_eager  # noqa: E402

torch.set_num_threads(2)
SHARED = os.environ.get("OVSEG_SHARED_DIR", os.path.join(REPO, "..", "shared", "ovseg"))
FIXTURE = os.path.join(SHARED, "fixtures", "tiny_swin_vit")
CKPT = os.path.join(FIXTURE, "checkpoint.pth")
CONFIG = os.path.join(FIXTURE, "config_eval.yaml")
VOCAB = os.path.join(SHARED, "bpe_simple_vocab_16e6.txt.gz")
EXPORTER = os.path.join(REPO, "tools", "ovseg-export")
PYTHON = sys.executable or "/usr/bin/python3"
HAVE_SHARED = os.path.isfile(CKPT) and os.path.isfile(VOCAB)
SKIP_MSG = f"shared fixture not found at {FIXTURE} (set OVSEG_SHARED_DIR)"

# A CLIP small enough for a quick --random-init bundle (full vocabulary: the tokenizer needs it).
TINY_CLIP = {"embed_dim": 64, "image_resolution": 224, "vision_layers": 2, "vision_width": 64,
             "vision_patch_size": 16, "context_length": 77, "vocab_size": 49408,
             "transformer_width": 64, "transformer_layers": 1}


def run_exporter(*args, env=None):
    e = dict(os.environ)
    e["OMP_NUM_THREADS"] = "2"
    if env:
        e.update(env)
    return subprocess.run([PYTHON, EXPORTER, *args], capture_output=True, text=True, env=e,
                          timeout=900)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        h.update(f.read())
    return h.hexdigest()


def f32_bits(x):
    return struct.unpack("<I", struct.pack("<f", x))[0]


@unittest.skipUnless(HAVE_SHARED, SKIP_MSG)
class FixtureBundleTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.tmp = tempfile.mkdtemp(prefix="ovseg-test-export-")
        prebuilt = os.environ.get("OVSEG_TEST_BUNDLE_DIR")
        if prebuilt and os.path.isfile(os.path.join(prebuilt, "tiny_swin_vit", "manifest.json")):
            cls.bundle = os.path.join(prebuilt, "tiny_swin_vit")
        else:
            cls.bundle = os.path.join(cls.tmp, "bundle")
            r = run_exporter("--checkpoint", CKPT, "--config", CONFIG, "--bpe-vocab", VOCAB,
                             "--out", cls.bundle)
            if r.returncode != 0:
                raise RuntimeError(f"export failed ({r.returncode}): {r.stderr}")
        with open(os.path.join(cls.bundle, "manifest.json"), "r", encoding="utf-8") as f:
            cls.manifest = json.load(f)

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.tmp, ignore_errors=True)

    def test_manifest_schema_and_checksums(self):
        m = self.manifest
        self.assertEqual(m["format"], "ovseg-bundle")
        self.assertEqual(m["format_version"], 1)
        for key in ("name", "created_by", "created_at", "source", "architecture", "preprocess",
                    "inference", "text", "non_object_embedding", "modules", "files"):
            self.assertIn(key, m)
        self.assertEqual(m["source"]["sha256"], sha256(CKPT))
        self.assertEqual(m["modules"], {"proposals": "proposals.pt", "clip_visual": "clip_visual.pt",
                                        "clip_text": "clip_text.pt"})
        self.assertEqual(sorted(m["files"]), sorted(["proposals.pt", "clip_visual.pt", "clip_text.pt",
                                                     "bpe_simple_vocab_16e6.txt.gz"]))
        for fname, info in m["files"].items():
            p = os.path.join(self.bundle, fname)
            self.assertEqual(sha256(p), info["sha256"], fname)
            self.assertEqual(os.path.getsize(p), info["bytes"], fname)
        self.assertEqual(sha256(os.path.join(self.bundle, "bpe_simple_vocab_16e6.txt.gz")), sha256(VOCAB))

    def test_manifest_values(self):
        m = self.manifest
        with open(os.path.join(FIXTURE, "eval", "meta.json"), "r", encoding="utf-8") as f:
            meta = json.load(f)
        ca = meta["clip_arch"]
        clip = m["architecture"]["clip"]
        self.assertEqual(clip["embed_dim"], ca["embed_dim"])
        self.assertEqual(clip["vision_width"], ca["vision_width"])
        self.assertEqual(clip["vision_layers"], ca["vision_layers"])
        self.assertEqual(clip["patch_size"], ca["vision_patch_size"])
        self.assertEqual(clip["grid"], ca["image_resolution"] // ca["vision_patch_size"])
        self.assertEqual(clip["text_width"], ca["transformer_width"])
        self.assertEqual(clip["text_layers"], ca["transformer_layers"])
        self.assertEqual(clip["text_heads"], ca["transformer_heads"])
        self.assertEqual(clip["vision_heads"], ca["vision_width"] // 64)
        self.assertEqual(clip["prompt_depth"], 3)
        self.assertTrue(clip["mask_prompt_fwd"])
        arch = m["architecture"]
        self.assertEqual(arch["backbone"], "swin")
        self.assertEqual(arch["num_queries"], 20)
        self.assertEqual(arch["embed_dim"], ca["embed_dim"])
        self.assertEqual(arch["backbone_config"]["EMBED_DIM"], 32)
        pre = m["preprocess"]
        self.assertEqual((pre["min_size_test"], pre["max_size_test"], pre["size_divisibility"]),
                         (336, 1280, 32))
        self.assertEqual(pre["pixel_mean"], [123.675, 116.28, 103.53])
        self.assertEqual(pre["pixel_std"], [58.395, 57.12, 57.375])
        # SPEC §6.4: fill and normalisation mean differ by one float32 ulp in R and G.
        self.assertEqual([f32_bits(v) for v in pre["clip_fill"]], [0x42F58AB8, 0x42E97DF5, 0x42D02FFE])
        self.assertEqual([f32_bits(v) for v in pre["clip_mean255"]], [0x42F58AB9, 0x42E97DF6, 0x42D02FFE])
        for v, ref in zip(pre["clip_std255"], (68.50053406, 66.63216400, 70.32315826)):
            self.assertAlmostEqual(v, ref, places=6)
        self.assertEqual(pre["region_resolution"], 224)
        inf = m["inference"]
        self.assertEqual(inf["temperature"], 100.0)
        self.assertEqual(inf["eval"], {"mask_threshold": 0.4, "ensemble_weight": 0.7})
        self.assertEqual(inf["demo"], {"mask_threshold": 0.35, "ensemble_weight": 0.0})
        with open(os.path.join(SHARED, "text_templates.json"), "r", encoding="utf-8") as f:
            self.assertEqual(m["text"]["templates"], json.load(f)["vild"])
        self.assertEqual(m["text"]["tokenizer"]["context_length"], 77)

    def test_demo_config_thresholds_go_to_demo_path(self):
        cfg = config_mod.load_config(os.path.join(FIXTURE, "config_demo.yaml"))
        s = config_mod.inference_settings(cfg)["inference"]
        self.assertEqual(s["demo"], {"mask_threshold": 0.35, "ensemble_weight": 0.0})
        self.assertEqual(s["eval"], {"mask_threshold": 0.4, "ensemble_weight": 0.7})

    def test_scripted_equals_eager(self):
        cfg = config_mod.load_config(CONFIG)
        eager, arch, _, _ = load_eager(CKPT, cfg, quiet=True)
        scripted = {n: torch.jit.load(os.path.join(self.bundle, f)) for n, f in self.manifest["modules"].items()}
        torch.manual_seed(0)
        with torch.no_grad():
            for hw in ((64, 96), (96, 64)):
                x = torch.randn(1, 3, *hw)
                e_emb, e_masks = eager["proposals"](x)
                s_emb, s_masks = scripted["proposals"](x)
                self.assertEqual(tuple(s_emb.shape), (1, 20, arch["embed_dim"]))
                self.assertEqual(tuple(s_masks.shape), (1, 20, hw[0] // 4, hw[1] // 4))
                self.assertLessEqual((e_emb - s_emb).abs().max().item(), 1e-5)
                self.assertLessEqual((e_masks - s_masks).abs().max().item(),
                                     1e-5 * max(1.0, e_masks.abs().max().item()))
            images = torch.randn(3, 3, 224, 224)
            masks = (torch.rand(3, 1, 224, 224) > 0.7).float()
            ev = eager["clip_visual"](images, masks)
            sv = scripted["clip_visual"](images, masks)
            self.assertEqual(tuple(sv.shape), (3, arch["embed_dim"]))
            self.assertLessEqual((ev - sv).abs().max().item(), 1e-6)
            tokens = torch.zeros(2, 9, dtype=torch.long)
            tokens[0, :5] = torch.tensor([49406, 320, 1125, 539, 49407])
            tokens[1, :] = torch.tensor([49406, 320, 1125, 539, 320, 2368, 269, 320, 49407])
            et = eager["clip_text"](tokens)
            st = scripted["clip_text"](tokens)
            self.assertLessEqual((et - st).abs().max().item(), 1e-6)
            self.assertTrue(torch.equal(scripted["clip_text"].non_object_embedding,
                                        eager["clip_text"].non_object_embedding))
        sd = torch.load(CKPT, map_location="cpu")["model"]
        self.assertTrue(torch.equal(scripted["clip_text"].non_object_embedding,
                                    sd["clip_adapter.non_object_embedding"]))
        for p in scripted["clip_visual"].parameters():
            self.assertEqual(p.dtype, torch.float32)
            self.assertEqual(p.device.type, "cpu")


class PresetSchemaTest(unittest.TestCase):
    """The modules built for each preset expect exactly the released checkpoint's tensors."""

    def test_presets_match_checkpoint_schemas(self):
        from ovseg_export.export import checkpoint_key_map, random_modules
        from ovseg_export.load import is_ignored_key
        found = 0
        for preset, schema in (("R101c_vitB16", "checkpoint_schema_R101c_vitB16.json"),
                               ("swinB_vitL14", "checkpoint_schema_swinB_vitL14.json")):
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
            self.assertEqual(sorted(k for k in sd if k not in expected and not is_ignored_key(k)), [],
                             f"{preset}: checkpoint keys the model does not use")
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
        for name, payload in (("notes.pth", b"this is not a checkpoint\n"),
                              ("image.pth", None)):
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
        self.assertTrue(torch.equal(got["clip_adapter.clip_model.visual.proj"], ref["clip_adapter.clip_model.visual.proj"].half().float()))
        r, out = self._export(p, "-v")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertIn("some_training_thing", r.stderr)  # listed as unused
        self.assertIn("num_batches_tracked", r.stderr)  # listed as ignored with -v

    def test_out_dir_replaced_atomically(self):
        out = os.path.join(self.tmp, "out")
        os.makedirs(out)
        with open(os.path.join(out, "stale.txt"), "w") as f:
            f.write("old")
        r, out = self._export(CKPT, "-q")
        self.assertEqual(r.returncode, 0, r.stderr)
        self.assertEqual(r.stdout, "")
        self.assertFalse(os.path.exists(os.path.join(out, "stale.txt")))
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
        for opt in ("--checkpoint", "--config", "--preset", "--bpe-vocab", "--out", "--random-init",
                    "--seed", "--allow-partial", "--name", "--template-set"):
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
        r = run_exporter("--random-init", "--preset", "R101c_vitB16", "--bpe-vocab", VOCAB, "--out", out,
                         "--template-set", "imagenet")
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
        for preset, schema in (("swinB_vitL14", "checkpoint_schema_swinB_vitL14.json"),
                               ("R101c_vitB16", "checkpoint_schema_R101c_vitB16.json")):
            path = os.path.join(schema_dir, schema)
            if not os.path.isfile(path):
                continue
            with open(path, "r", encoding="utf-8") as f:
                hp = json.load(f)["hyperparameters"]
            cfg = config_mod.config_for(preset=preset)
            for section in ("SWIN" if preset.startswith("swin") else "RESNETS", "SEM_SEG_HEAD",
                            "MASK_FORMER", "CLIP_ADAPTER"):
                for k, v in hp["MODEL"][section].items():
                    self.assertEqual(cfg["MODEL"][section][k], v, f"{preset} MODEL.{section}.{k}")
            for k, v in hp["INPUT"].items():
                self.assertEqual(cfg["INPUT"][k], v, f"{preset} INPUT.{k}")

    def test_random_init_small_bundle(self):
        arch = json.dumps(TINY_CLIP)
        cfg = CONFIG if os.path.isfile(CONFIG) else None
        if cfg is None:
            self.skipTest(SKIP_MSG)
        outs = []
        for seed in (3, 3, 4):
            out = os.path.join(self.tmp, f"rand{len(outs)}")
            r = run_exporter("--random-init", "--seed", str(seed), "--config", cfg, "--clip-arch", arch,
                             "--bpe-vocab", VOCAB, "--out", out, "--name", "tiny-random")
            self.assertEqual(r.returncode, 0, r.stderr)
            self.assertIn("MB", r.stdout)
            outs.append(out)
        backend = pipeline.load_bundle(outs[0])
        self.assertEqual(backend.manifest["source"]["checkpoint"], "random-init")
        self.assertEqual(backend.manifest["architecture"]["clip"]["vision_width"], 64)
        self.assertEqual(backend.manifest["name"], "tiny-random")
        res = pipeline.run(backend, os.path.join(FIXTURE, "image.png"), ["cat", "dog"], "eval")
        self.assertEqual(tuple(res["sem_seg"].shape[1:]), (402, 401))
        self.assertTrue(bool(torch.isfinite(res["sem_seg"]).all()))

        def weights(path):
            m = torch.jit.load(os.path.join(path, "proposals.pt"))
            return dict(m.state_dict())
        a, b, c = (weights(o) for o in outs)
        self.assertTrue(all(torch.equal(a[k], b[k]) for k in a))
        self.assertFalse(all(torch.equal(a[k], c[k]) for k in a if a[k].is_floating_point()))


if __name__ == "__main__":
    unittest.main()
