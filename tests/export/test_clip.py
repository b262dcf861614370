"""CLIP towers and tokenizer of the exporter against every shared fixture (docs/reference-behaviour.md §5, §6)."""
import json
import os
import sys
import unittest

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tools"))
sys.path.insert(0, HERE)

import numpy as np  # noqa: E402
import torch  # noqa: E402

import fixture_util  # noqa: E402
from fixture_util import fixture_classes  # noqa: E402
from ovseg_export import pipeline  # noqa: E402
from ovseg_export.export import CLIP_PREFIX  # noqa: E402
from ovseg_export.load import read_checkpoint  # noqa: E402
from ovseg_export.modules.clip import (  # noqa: E402
    build_clip_text,
    build_clip_visual,
    clip_arch_from_state_dict,
    clip_state_keys,
)
from ovseg_export.templates import VILD_TEMPLATES  # noqa: E402
from ovseg_export.tokenizer import ClipTokenizer  # noqa: E402

torch.set_num_threads(1)
SHARED = fixture_util.SHARED
VOCAB = fixture_util.VOCAB
TOL = 1e-4


class _ClipFixture:
    """The CLIP towers of each shared fixture against the reference's text features and region
    logits (both modes, each with its own class list and threshold)."""

    FIXTURE = None

    @classmethod
    def setUpClass(cls):
        fx = cls.FIXTURE
        if not os.path.isfile(VOCAB):
            raise unittest.SkipTest(f"shared vocabulary not found at {VOCAB}")
        cls.modes = [m for m in ("eval", "demo") if fx.has_reference(m)]
        if not cls.modes:
            raise unittest.SkipTest(f"{fx.dir}: no eval/ or demo/ reference outputs")
        sd = read_checkpoint(fx.checkpoint)
        cls.arch = clip_arch_from_state_dict(sd, CLIP_PREFIX)
        mask_prompt_fwd = bool(fx.config("eval")["MODEL"]["CLIP_ADAPTER"].get("MASK_PROMPT_FWD", True))
        cls.visual = build_clip_visual(cls.arch, mask_prompt_fwd=mask_prompt_fwd).eval()
        cls.text = build_clip_text(cls.arch).eval()
        states = {"clip_visual": {}, "clip_text": {}}
        for ck, (mod, local) in clip_state_keys(cls.visual, cls.text).items():
            states[mod][local] = sd[ck]
        cls.visual.load_state_dict(states["clip_visual"], strict=True)
        cls.text.load_state_dict(states["clip_text"], strict=True)
        cls.tok = ClipTokenizer(VOCAB)
        cls.meta = fx.meta(cls.modes[0])

    def test_architecture_read_off_tensors(self):
        ref = self.meta.get("clip_arch") or {}
        if not ref:
            self.skipTest("meta.json has no clip_arch")
        for k, v in ref.items():
            if k in self.arch:
                self.assertEqual(self.arch[k], v, k)
        depth = int(self.FIXTURE.config("eval")["MODEL"]["CLIP_ADAPTER"]["MASK_PROMPT_DEPTH"])
        self.assertEqual(self.arch["prompt_depth"], depth)

    def test_vild_templates_match_shared_list(self):
        with open(os.path.join(SHARED, "text_templates.json"), "r", encoding="utf-8") as f:
            self.assertEqual(VILD_TEMPLATES, json.load(f)["vild"])

    def _text_features(self, module, classes, trim=False):
        backend = pipeline.Backend(
            None,
            None,
            module,
            module.non_object_embedding,
            {"text": {"templates": VILD_TEMPLATES, "tokenizer": {"context_length": self.arch["context_length"]}}},
            self.tok,
        )
        with torch.no_grad():
            return pipeline.text_features(backend, classes, trim_tokens=trim)

    def test_text_features_match_fixture(self):
        for mode in self.modes:
            ref = self.FIXTURE.reference(mode, ("text_features",)).get("text_features")
            if ref is None:
                continue
            with self.subTest(mode=mode):
                got = self._text_features(self.text, self.FIXTURE.model_classes(mode)).numpy()
                self.assertEqual(got.shape, ref.shape)
                diff = np.abs(got - ref).max(axis=1)
                print(
                    f"\n{self.FIXTURE.name} {mode} text_features max abs diff {diff.max():.3g} "
                    f"(non-object row {diff[-1]:.3g})"
                )
                self.assertLessEqual(diff[:-1].max(), TOL)
                self.assertLessEqual(diff[-1], TOL)

    def test_scripted_text_tower_matches_fixture(self):
        scripted = torch.jit.script(self.text)
        mode = self.modes[0]
        ref = self.FIXTURE.reference(mode, ("text_features",)).get("text_features")
        if ref is None:
            self.skipTest("no text_features.npy")
        got = self._text_features(scripted, self.FIXTURE.model_classes(mode)).numpy()
        self.assertLessEqual(np.abs(got - ref).max(), TOL)

    def test_trimmed_tokens_equal_full_context(self):
        prompts = [t.format(c) for t in VILD_TEMPLATES for c in self.FIXTURE.classes()]
        full = self.tok.tokenize(prompts, self.arch["context_length"])
        trimmed = self.tok.tokenize(prompts, self.arch["context_length"], trim=True)
        self.assertLess(trimmed.shape[1], self.arch["context_length"])
        self.assertTrue(torch.equal(full[:, : trimmed.shape[1]], trimmed))
        with torch.no_grad():
            a = self.text(full)
            b = self.text(trimmed)
            c = torch.jit.script(self.text)(trimmed)
        d = (a - b).abs().max().item()
        print(f"\n{self.FIXTURE.name}: trimmed vs full-context text max abs diff {d:.3g}")
        self.assertLessEqual(d, 1e-5 * max(1.0, a.abs().max().item()))
        self.assertLessEqual((b - c).abs().max().item(), 1e-6 * max(1.0, a.abs().max().item()))

    def _fixture_regions(self, mode):
        fx = self.FIXTURE
        meta = fx.meta(mode)
        thr = fx.settings(mode)["mask_threshold"]
        h, w = meta["resized_size_hw"]
        im = pipeline.decode_image(fx.image)
        self.assertEqual([im.height, im.width], meta["original_size_hw"])
        resized = torch.from_numpy(pipeline.resize_image(im, h, w)).permute(2, 0, 1).float()
        lowres = fx.reference(mode, ("pred_masks_lowres",))["pred_masks_lowres"]
        masks = pipeline.upsample_masks(torch.from_numpy(lowres), h, w)
        pre = {
            "region_resolution": self.arch["image_resolution"],
            "clip_fill": [float(np.float32(255.0 * m)) for m in (0.48145466, 0.4578275, 0.40821073)],
            "clip_mean255": [float(np.float32(m) * np.float32(255)) for m in (0.48145466, 0.4578275, 0.40821073)],
            "clip_std255": [float(np.float32(s) * np.float32(255)) for s in (0.26862954, 0.26130258, 0.27577711)],
        }
        valid, images, rmasks = pipeline.region_batch(resized, masks, thr, pre)
        return valid, images, rmasks

    def test_region_logits_match_fixture(self):
        for mode in self.modes:
            ref = self.FIXTURE.reference(mode, ("valid_flag", "text_features", "clip_logits", "pred_masks_lowres"))
            if len(ref) != 4:
                continue
            valid, images, rmasks = self._fixture_regions(mode)
            self.assertTrue(np.array_equal(valid.numpy(), ref["valid_flag"]), mode)
            if not bool(valid.any()):
                continue
            T = torch.from_numpy(ref["text_features"])
            for name, module in (("eager", self.visual), ("scripted", torch.jit.script(self.visual))):
                with self.subTest(mode=mode, module=name):
                    with torch.no_grad():
                        v = module(images, rmasks)
                        logits = ((100.0 * v) @ T.t()).numpy()
                    self.assertEqual(logits.shape, ref["clip_logits"].shape)
                    diff = np.abs(logits - ref["clip_logits"]).max()
                    print(f"\n{self.FIXTURE.name} {mode} clip_logits ({name}) max abs diff {diff:.3g}")
                    self.assertLessEqual(diff, TOL)
                    self.assertTrue(torch.allclose(v.norm(dim=-1), torch.ones(v.shape[0]), atol=1e-5))

    def test_keep_mask_is_any_pixel_per_patch(self):
        # One pixel inside a patch keeps it exactly like a fully covered patch (avg-pool + ceil).
        if not self.visual.mask_prompt_fwd:
            self.skipTest("MASK_PROMPT_FWD is off")
        p = self.arch["vision_patch_size"]
        r = self.arch["image_resolution"]
        torch.manual_seed(0)
        images = torch.randn(1, 3, r, r)
        one = torch.zeros(1, 1, r, r)
        full = torch.zeros(1, 1, r, r)
        one[0, 0, 3 * p + p - 1, 5 * p] = 1.0
        full[0, 0, 3 * p : 4 * p, 5 * p : 6 * p] = 1.0
        other = torch.zeros(1, 1, r, r)
        other[0, 0, 3 * p + p, 5 * p] = 1.0  # first row of the next patch row
        with torch.no_grad():
            a = self.visual(images, one)
            b = self.visual(images, full)
            c = self.visual(images, other)
        self.assertTrue(torch.equal(a, b))
        self.assertGreater((a - c).abs().max().item(), 1e-4)

    def test_all_kept_equals_no_prompts(self):
        r = self.arch["image_resolution"]
        torch.manual_seed(1)
        images = torch.randn(2, 3, r, r)
        ones = torch.ones(2, 1, r, r)
        zeros = torch.zeros(2, 1, r, r)
        prompted = build_clip_visual(self.arch, mask_prompt_fwd=True).eval()
        prompted.load_state_dict(self.visual.state_dict())
        plain = build_clip_visual(self.arch, mask_prompt_fwd=False).eval()
        plain.load_state_dict(self.visual.state_dict())
        with torch.no_grad():
            with_prompts_all_kept = prompted(images, ones)
            without = plain(images, zeros)  # masks ignored when MASK_PROMPT_FWD is off
            all_background = prompted(images, zeros)
        self.assertLessEqual((with_prompts_all_kept - without).abs().max().item(), 1e-6)
        self.assertGreater((all_background - without).abs().max().item(), 1e-3)


fixture_classes(_ClipFixture, globals())


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
