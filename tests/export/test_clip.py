"""CLIP towers and tokenizer of the exporter against the shared fixture (SPEC §5, §6)."""
import json
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tools"))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from ovseg_export import pipeline  # noqa: E402
from ovseg_export.export import CLIP_PREFIX  # noqa: E402
from ovseg_export.load import read_checkpoint  # noqa: E402
from ovseg_export.modules.clip import (build_clip_text, build_clip_visual,  # noqa: E402
                                       clip_arch_from_state_dict, clip_state_keys)
from ovseg_export.templates import VILD_TEMPLATES  # noqa: E402
from ovseg_export.tokenizer import ClipTokenizer  # noqa: E402

torch.set_num_threads(2)
SHARED = os.environ.get("OVSEG_SHARED_DIR", os.path.join(REPO, "..", "shared", "ovseg"))
FIXTURE = os.path.join(SHARED, "fixtures", "tiny_swin_vit")
VOCAB = os.path.join(SHARED, "bpe_simple_vocab_16e6.txt.gz")
TOL = 1e-4


def _classes():
    with open(os.path.join(FIXTURE, "classes.txt"), "r", encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


@unittest.skipUnless(os.path.isfile(os.path.join(FIXTURE, "checkpoint.pth")),
                     f"shared fixture not found at {FIXTURE} (set OVSEG_SHARED_DIR)")
class ClipFixtureTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        sd = read_checkpoint(os.path.join(FIXTURE, "checkpoint.pth"))
        cls.arch = clip_arch_from_state_dict(sd, CLIP_PREFIX)
        cls.visual = build_clip_visual(cls.arch).eval()
        cls.text = build_clip_text(cls.arch).eval()
        states = {"clip_visual": {}, "clip_text": {}}
        for ck, (mod, local) in clip_state_keys(cls.visual, cls.text).items():
            states[mod][local] = sd[ck]
        cls.visual.load_state_dict(states["clip_visual"], strict=True)
        cls.text.load_state_dict(states["clip_text"], strict=True)
        cls.tok = ClipTokenizer(VOCAB)
        with open(os.path.join(FIXTURE, "eval", "meta.json"), "r", encoding="utf-8") as f:
            cls.meta = json.load(f)

    def test_architecture_read_off_tensors(self):
        ref = self.meta["clip_arch"]
        for k, v in ref.items():
            self.assertEqual(self.arch[k], v, k)
        self.assertEqual(self.arch["prompt_depth"], 3)

    def test_vild_templates_match_shared_list(self):
        with open(os.path.join(SHARED, "text_templates.json"), "r", encoding="utf-8") as f:
            self.assertEqual(VILD_TEMPLATES, json.load(f)["vild"])

    def _text_features(self, module, trim=False):
        backend = pipeline.Backend(None, None, module, module.non_object_embedding,
                                   {"text": {"templates": VILD_TEMPLATES,
                                             "tokenizer": {"context_length": 77}}}, self.tok)
        with torch.no_grad():
            return pipeline.text_features(backend, _classes(), trim_tokens=trim)

    def test_text_features_match_fixture(self):
        ref = np.load(os.path.join(FIXTURE, "eval", "text_features.npy"))
        got = self._text_features(self.text).numpy()
        self.assertEqual(got.shape, ref.shape)
        diff = np.abs(got - ref).max(axis=1)
        print(f"\ntext_features max abs diff {diff.max():.3g} (non-object row {diff[-1]:.3g})")
        self.assertLessEqual(diff[:-1].max(), TOL)
        self.assertLessEqual(diff[-1], TOL)

    def test_scripted_text_tower_matches_fixture(self):
        scripted = torch.jit.script(self.text)
        ref = np.load(os.path.join(FIXTURE, "eval", "text_features.npy"))
        self.assertLessEqual(np.abs(self._text_features(scripted).numpy() - ref).max(), TOL)

    def test_trimmed_tokens_equal_full_context(self):
        prompts = [t.format(c) for t in VILD_TEMPLATES for c in _classes()]
        full = self.tok.tokenize(prompts)
        trimmed = self.tok.tokenize(prompts, trim=True)
        self.assertLess(trimmed.shape[1], 77)
        self.assertTrue(torch.equal(full[:, :trimmed.shape[1]], trimmed))
        with torch.no_grad():
            a = self.text(full)
            b = self.text(trimmed)
            c = torch.jit.script(self.text)(trimmed)
        d = (a - b).abs().max().item()
        print(f"\ntrimmed vs full-77 text max abs diff {d:.3g}")
        self.assertLessEqual(d, 1e-5 * max(1.0, a.abs().max().item()))
        self.assertLessEqual((b - c).abs().max().item(), 1e-6 * max(1.0, a.abs().max().item()))

    def _fixture_regions(self, mode):
        d = os.path.join(FIXTURE, mode)
        with open(os.path.join(d, "meta.json"), "r", encoding="utf-8") as f:
            meta = json.load(f)
        thr = meta["overrides"]["MODEL"].get("CLIP_ADAPTER", {}).get("MASK_THR", 0.4)
        h, w = meta["resized_size_hw"]
        im = pipeline.decode_image(os.path.join(FIXTURE, "image.png"))
        self.assertEqual([im.height, im.width], meta["original_size_hw"])
        resized = torch.from_numpy(pipeline.resize_image(im, h, w)).permute(2, 0, 1).float()
        masks = pipeline.upsample_masks(torch.from_numpy(np.load(os.path.join(d, "pred_masks_lowres.npy"))), h, w)
        pre = {"region_resolution": 224,
               "clip_fill": [float(np.float32(255.0 * m)) for m in (0.48145466, 0.4578275, 0.40821073)],
               "clip_mean255": [float(np.float32(m) * np.float32(255)) for m in (0.48145466, 0.4578275, 0.40821073)],
               "clip_std255": [float(np.float32(s) * np.float32(255)) for s in (0.26862954, 0.26130258, 0.27577711)]}
        valid, images, rmasks = pipeline.region_batch(resized, masks, thr, pre)
        return valid, images, rmasks

    def test_region_logits_match_fixture(self):
        for mode in ("eval", "demo"):
            d = os.path.join(FIXTURE, mode)
            valid, images, rmasks = self._fixture_regions(mode)
            ref_valid = np.load(os.path.join(d, "valid_flag.npy"))
            self.assertTrue(np.array_equal(valid.numpy(), ref_valid), mode)
            T = torch.from_numpy(np.load(os.path.join(d, "text_features.npy")))
            ref = np.load(os.path.join(d, "clip_logits.npy"))
            for name, module in (("eager", self.visual), ("scripted", torch.jit.script(self.visual))):
                with torch.no_grad():
                    v = module(images, rmasks)
                    logits = ((100.0 * v) @ T.t()).numpy()
                self.assertEqual(logits.shape, ref.shape)
                diff = np.abs(logits - ref).max()
                print(f"\n{mode} clip_logits ({name}) max abs diff {diff:.3g}")
                self.assertLessEqual(diff, TOL)
                self.assertTrue(torch.allclose(v.norm(dim=-1), torch.ones(v.shape[0]), atol=1e-5))

    def test_keep_mask_is_any_pixel_per_patch(self):
        # One pixel inside a patch keeps it exactly like a fully covered patch (avg-pool + ceil).
        p = self.arch["vision_patch_size"]
        torch.manual_seed(0)
        images = torch.randn(1, 3, 224, 224)
        one = torch.zeros(1, 1, 224, 224)
        full = torch.zeros(1, 1, 224, 224)
        one[0, 0, 3 * p + p - 1, 5 * p] = 1.0
        full[0, 0, 3 * p:4 * p, 5 * p:6 * p] = 1.0
        other = torch.zeros(1, 1, 224, 224)
        other[0, 0, 3 * p + p, 5 * p] = 1.0  # first row of the next patch row
        with torch.no_grad():
            a = self.visual(images, one)
            b = self.visual(images, full)
            c = self.visual(images, other)
        self.assertTrue(torch.equal(a, b))
        self.assertGreater((a - c).abs().max().item(), 1e-4)

    def test_all_kept_equals_no_prompts(self):
        torch.manual_seed(1)
        images = torch.randn(2, 3, 224, 224)
        ones = torch.ones(2, 1, 224, 224)
        zeros = torch.zeros(2, 1, 224, 224)
        plain = build_clip_visual(self.arch, mask_prompt_fwd=False).eval()
        plain.load_state_dict(self.visual.state_dict())
        with torch.no_grad():
            with_prompts_all_kept = self.visual(images, ones)
            without = plain(images, zeros)  # masks ignored when MASK_PROMPT_FWD is off
            all_background = self.visual(images, zeros)
        self.assertLessEqual((with_prompts_all_kept - without).abs().max().item(), 1e-6)
        self.assertGreater((all_background - without).abs().max().item(), 1e-3)


@unittest.skipUnless(os.path.isfile(VOCAB), f"shared vocabulary not found at {VOCAB}")
class TokenizerGoldenTest(unittest.TestCase):
    def test_golden_public(self):
        tok = ClipTokenizer(VOCAB)
        with open(os.path.join(SHARED, "tokenizer_golden_public.json"), "r", encoding="utf-8") as f:
            golden = json.load(f)
        bad = []
        for entry in golden:
            ids = [tok.sot] + tok.encode(entry["text"]) + [tok.eot]
            if ids != entry["ids"]:
                bad.append((entry["text"], ids, entry["ids"]))
        self.assertEqual(bad, [], f"{len(bad)} of {len(golden)} golden prompts differ")

    def test_padding_and_too_long(self):
        tok = ClipTokenizer(VOCAB)
        t = tok.tokenize(["a photo of a cat."])
        self.assertEqual(t.shape, (1, 77))
        self.assertEqual(t.dtype, torch.int64)
        n = int((t[0] != 0).sum())
        self.assertEqual(int(t[0, n - 1]), tok.eot)
        self.assertTrue(bool((t[0, n:] == 0).all()))
        with self.assertRaises(ValueError):
            tok.tokenize([" ".join(["cat"] * 80)])


if __name__ == "__main__":
    unittest.main()
