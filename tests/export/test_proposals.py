"""Tests of the MaskFormer proposal generator modules (tools/ovseg_export/modules).

Run: cd tests/export && /usr/bin/python3 -m unittest -v test_proposals
Reads the reference material from OVSEG_SHARED_DIR (default <repo>/../shared/ovseg) and skips
when it is absent.
"""
import json
import math
import os
import sys
import tempfile
import unittest
from pathlib import Path

_REPO = Path(os.environ.get("OVSEG_SOURCE_DIR", Path(__file__).resolve().parents[2]))
sys.path.insert(0, str(_REPO / "tools"))
_SHARED = Path(os.environ.get("OVSEG_SHARED_DIR", _REPO.parent / "shared" / "ovseg"))
_FIXTURE = _SHARED / "fixtures" / "tiny_swin_vit"

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

from ovseg_export.modules.proposals import build_proposal_generator  # noqa: E402
from ovseg_export.modules.resnet import DeepLabResNet  # noqa: E402

_PREFIXES = ("backbone.", "sem_seg_head.")
_PIXEL_MEAN = [123.675, 116.280, 103.530]
_PIXEL_STD = [58.395, 57.120, 57.375]


def setUpModule():
    if not _SHARED.is_dir():
        raise unittest.SkipTest(f"shared reference dir {_SHARED} is absent (set OVSEG_SHARED_DIR)")
    torch.set_num_threads(2)


def _report(msg: str) -> None:
    print(f"\n    [{msg}]", file=sys.stderr, flush=True)


def _test_size(h0: int, w0: int, short: int, max_size: int):
    """ResizeShortestEdge output size (SPEC §3.1 step 2)."""
    scale = short * 1.0 / min(h0, w0)
    if h0 < w0:
        newh, neww = float(short), scale * w0
    else:
        newh, neww = scale * h0, float(short)
    if max(newh, neww) > max_size:
        f = max_size * 1.0 / max(newh, neww)
        newh *= f
        neww *= f
    return int(math.floor(newh + 0.5)), int(math.floor(neww + 0.5))


def _preprocess(path: Path, short: int, max_size: int):
    """SPEC §3.1: decode, Pillow bilinear resize, normalise, zero-pad to multiples of 32."""
    img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    w0, h0 = img.size
    h, w = _test_size(h0, w0, short, max_size)
    if (h, w) != (h0, w0):
        img = img.resize((w, h), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float()
    mean = torch.tensor(_PIXEL_MEAN, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(_PIXEL_STD, dtype=torch.float32).view(3, 1, 1)
    x = (x - mean) / std
    hp = (h + 31) // 32 * 32
    wp = (w + 31) // 32 * 32
    out = torch.zeros(1, 3, hp, wp, dtype=torch.float32)
    out[0, :, :h, :w] = x
    return out, (h, w)


def _script_roundtrip(module: torch.nn.Module) -> torch.jit.ScriptModule:
    scripted = torch.jit.script(module)
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "proposals.pt")
        torch.jit.save(scripted, path)
        return torch.jit.load(path, map_location="cpu")


def _max_abs(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.double() - b.double()).abs().max())


def _mask_tolerance(ref: torch.Tensor) -> float:
    """Mask logits reach |x| ~ 500 and sum 64-256 products, so float32 rounding alone moves them
    by ~1e-3 (the reference's own values are ~1e-3 away from a float64 evaluation). A fixed 1e-4
    absolute bound is below that noise; allow 1e-5 of the largest magnitude instead (and never
    less than 1e-4)."""
    return max(1e-4, 1e-5 * float(ref.abs().max()))


def _load_schema(name: str) -> dict:
    with open(_SHARED / name) as f:
        return json.load(f)


class FixtureParityTest(unittest.TestCase):
    """The tiny Swin fixture against what the reference implementation computed."""

    @classmethod
    def setUpClass(cls):
        if not (_FIXTURE / "checkpoint.pth").is_file():
            raise unittest.SkipTest(f"fixture {_FIXTURE} is absent")
        with open(_FIXTURE / "config_eval.yaml") as f:
            cls.cfg = yaml.safe_load(f)
        with open(_FIXTURE / "eval" / "meta.json") as f:
            cls.meta = json.load(f)
        ckpt = torch.load(_FIXTURE / "checkpoint.pth", map_location="cpu")
        cls.state = {k: v for k, v in ckpt["model"].items() if k.startswith(_PREFIXES)}
        cls.model = build_proposal_generator(cls.cfg)
        cls.model.load_state_dict(cls.state, strict=True)
        cls.model.eval()
        inp = cls.cfg["INPUT"]
        cls.x, cls.hw = _preprocess(_FIXTURE / "image.png", int(inp["MIN_SIZE_TEST"]),
                                    int(inp["MAX_SIZE_TEST"]))
        cls.ref_emb = torch.from_numpy(np.load(_FIXTURE / "eval" / "pred_embeddings.npy"))
        cls.ref_masks = torch.from_numpy(np.load(_FIXTURE / "eval" / "pred_masks_lowres.npy"))
        with torch.no_grad():
            cls.emb, cls.masks = cls.model(cls.x)

    def test_state_dict_keys_equal_checkpoint(self):
        self.assertEqual(set(self.model.state_dict().keys()), set(self.state.keys()))

    def test_preprocessing_size_matches_reference(self):
        self.assertEqual(list(self.hw), self.meta["resized_size_hw"])
        self.assertEqual(tuple(self.x.shape[2:]),
                         (self.ref_masks.shape[1] * 4, self.ref_masks.shape[2] * 4))

    def test_eager_matches_reference(self):
        self.assertEqual(tuple(self.emb.shape), (1,) + tuple(self.ref_emb.shape))
        self.assertEqual(tuple(self.masks.shape), (1,) + tuple(self.ref_masks.shape))
        d_emb = _max_abs(self.emb[0], self.ref_emb)
        d_mask = _max_abs(self.masks[0], self.ref_masks)
        _report(f"eager vs reference: max|d| embeddings {d_emb:.3g} "
                f"(|ref| max {float(self.ref_emb.abs().max()):.3g}), mask logits {d_mask:.3g} "
                f"(|ref| max {float(self.ref_masks.abs().max()):.3g}, "
                f"bound {_mask_tolerance(self.ref_masks):.3g})")
        self.assertLessEqual(d_emb, 1e-4)
        self.assertLessEqual(d_mask, _mask_tolerance(self.ref_masks))

    def test_scripted_matches_reference_and_eager(self):
        scripted = _script_roundtrip(self.model)
        with torch.no_grad():
            emb, masks = scripted(self.x)
        d_emb = _max_abs(emb[0], self.ref_emb)
        d_mask = _max_abs(masks[0], self.ref_masks)
        d_eager = max(_max_abs(emb, self.emb), _max_abs(masks, self.masks))
        _report(f"scripted vs reference: embeddings {d_emb:.3g}, mask logits {d_mask:.3g}; "
                f"scripted vs eager {d_eager:.3g}")
        self.assertLessEqual(d_emb, 1e-4)
        self.assertLessEqual(d_mask, _mask_tolerance(self.ref_masks))
        self.assertLessEqual(d_eager, 1e-5 * max(1.0, float(self.masks.abs().max())))

    def test_scripted_dynamic_sizes_and_batch(self):
        """One scripted module serves other padded sizes (windows padded, odd grids) and B=2."""
        scripted = _script_roundtrip(self.model)
        gen = torch.Generator().manual_seed(0)
        for shape in [(1, 3, 320, 416), (2, 3, 96, 160), (1, 3, 64, 64)]:
            x = torch.randn(shape, generator=gen)
            with torch.no_grad():
                e_emb, e_masks = self.model(x)
                s_emb, s_masks = scripted(x)
            q = self.ref_emb.shape[0]
            self.assertEqual(tuple(e_masks.shape), (shape[0], q, shape[2] // 4, shape[3] // 4))
            self.assertEqual(tuple(e_emb.shape), (shape[0], q, self.ref_emb.shape[1]))
            self.assertLessEqual(_max_abs(e_emb, s_emb), 1e-5)
            self.assertLessEqual(_max_abs(e_masks, s_masks),
                                 1e-5 * max(1.0, float(e_masks.abs().max())))
        # Batch entries are independent: image 0 alone gives the same as inside the batch.
        x = torch.randn((2, 3, 96, 160), generator=gen)
        with torch.no_grad():
            b_emb, b_masks = self.model(x)
            o_emb, o_masks = self.model(x[1:])
        self.assertLessEqual(_max_abs(b_emb[1:], o_emb), 1e-4)
        self.assertLessEqual(_max_abs(b_masks[1:], o_masks), _mask_tolerance(o_masks))


class FullSizeSchemaTest(unittest.TestCase):
    """Keys, shapes, dtypes and parameter/buffer kinds equal the released checkpoints' schema."""

    def _check(self, schema_name: str):
        schema = _load_schema(schema_name)
        model = build_proposal_generator(schema["hyperparameters"])
        expected = {k: v for k, v in schema["state_dict"].items() if k.startswith(_PREFIXES)}
        params = dict(model.named_parameters())
        buffers = dict(model.named_buffers())
        sd = model.state_dict()
        self.assertEqual(sorted(set(sd) - set(expected)), [], "keys the checkpoint lacks")
        self.assertEqual(sorted(set(expected) - set(sd)), [], "checkpoint keys the model lacks")
        for key, info in expected.items():
            self.assertEqual(list(sd[key].shape), info["shape"], key)
            self.assertEqual(str(sd[key].dtype).replace("torch.", ""), info["dtype"], key)
            kind = "parameter" if key in params else ("buffer" if key in buffers else "?")
            self.assertEqual(kind, info["kind"], key)
        _report(f"{schema_name}: {len(expected)} backbone/sem_seg_head tensors match")
        return model

    def test_swin_b_schema(self):
        model = self._check("checkpoint_schema_swinB_vitL14.json")
        # The relative position index buffer is deterministic: idx = (dy+11)*23 + (dx+11).
        idx = model.state_dict()["backbone.layers.2.blocks.5.attn.relative_position_index"]
        i, j = 13, 2  # token (1,1) vs token (0,2)
        self.assertEqual(int(idx[i, j]), (1 - 0 + 11) * 23 + (1 - 2 + 11))
        self.assertEqual(int(idx[0, 143]), 0)
        self.assertEqual(int(idx[143, 0]), 528)

    def test_r101c_schema(self):
        self._check("checkpoint_schema_R101c_vitB16.json")


class R101cArchitectureTest(unittest.TestCase):
    """The full-size R101c configuration: structure per SPEC §4.2, scripted == eager."""

    @classmethod
    def setUpClass(cls):
        schema = _load_schema("checkpoint_schema_R101c_vitB16.json")
        cls.cfg = schema["hyperparameters"]
        torch.manual_seed(0)
        cls.model = build_proposal_generator(cls.cfg).eval()

    def test_structure(self):
        bb = self.model.backbone
        self.assertIsInstance(bb, DeepLabResNet)
        self.assertEqual(bb.stem.conv1.stride, (2, 2))
        # Stride sits in the 3x3 conv (STRIDE_IN_1X1 False); res5 keeps stride 2, dilations 1/2/4.
        for stage in (bb.res3, bb.res4, bb.res5):
            self.assertEqual(stage[0].conv1.stride, (1, 1))
            self.assertEqual(stage[0].conv2.stride, (2, 2))
            self.assertEqual(stage[0].shortcut.stride, (2, 2))
        self.assertEqual(bb.res2[0].conv2.stride, (1, 1))
        self.assertEqual([b.conv2.dilation for b in bb.res5], [(1, 1), (2, 2), (4, 4)])
        self.assertEqual([b.conv2.padding for b in bb.res5], [(1, 1), (2, 2), (4, 4)])
        self.assertEqual([len(s) for s in (bb.res2, bb.res3, bb.res4, bb.res5)], [3, 4, 23, 3])
        x = torch.zeros(1, 3, 64, 96)
        with torch.no_grad():
            feats = bb(x)
        self.assertEqual([tuple(f.shape) for f in feats],
                         [(1, 256, 16, 24), (1, 512, 8, 12), (1, 1024, 4, 6), (1, 2048, 2, 3)])

    def test_scripted_matches_eager(self):
        x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1))
        scripted = _script_roundtrip(self.model)
        with torch.no_grad():
            e_emb, e_masks = self.model(x)
            s_emb, s_masks = scripted(x)
        self.assertEqual(tuple(e_emb.shape), (1, 100, 512))
        self.assertEqual(tuple(e_masks.shape), (1, 100, 16, 16))
        self.assertTrue(bool(torch.isfinite(e_emb).all()) and bool(torch.isfinite(e_masks).all()))
        d_emb = _max_abs(e_emb, s_emb)
        d_mask = _max_abs(e_masks, s_masks)
        scale = max(float(e_emb.abs().max()), float(e_masks.abs().max()), 1.0)
        _report(f"R101c 64x64 scripted vs eager: embeddings {d_emb:.3g}, mask logits {d_mask:.3g} "
                f"(output scale {scale:.3g})")
        self.assertLessEqual(max(d_emb, d_mask), 1e-5 * scale)


if __name__ == "__main__":
    unittest.main()
