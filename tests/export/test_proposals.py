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
sys.path.insert(0, str(Path(__file__).resolve().parent))
_SHARED = Path(os.environ.get("OVSEG_SHARED_DIR", _REPO.parent / "shared" / "ovseg"))

import numpy as np  # noqa: E402
import torch  # noqa: E402
import yaml  # noqa: E402
from PIL import Image, ImageOps  # noqa: E402

from fixture_util import fixture_classes  # noqa: E402
from ovseg_export import config as config_mod  # noqa: E402
from ovseg_export.load import is_ignored_key, read_checkpoint  # noqa: E402
from ovseg_export.presets import DEFAULTS  # noqa: E402
from ovseg_export.modules.proposals import build_proposal_generator  # noqa: E402
from ovseg_export.modules.resnet import DeepLabResNet  # noqa: E402

_PREFIXES = ("backbone.", "sem_seg_head.")
_PIXEL_MEAN = [123.675, 116.280, 103.530]
_PIXEL_STD = [58.395, 57.120, 57.375]


def setUpModule():
    # The fixture and schema tests skip themselves without the shared material; the ResNet
    # variant tests need none.
    torch.set_num_threads(1)


def _report(msg: str) -> None:
    print(f"\n    [{msg}]", file=sys.stderr, flush=True)


def _test_size(h0: int, w0: int, short: int, max_size: int):
    """ResizeShortestEdge output size (docs/reference-behaviour.md §3.1 step 2)."""
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


def _preprocess(path: Path, short: int, max_size: int, pixel_mean=_PIXEL_MEAN, pixel_std=_PIXEL_STD):
    """docs/reference-behaviour.md §3.1: decode, Pillow bilinear resize, normalise, zero-pad to multiples of 32."""
    img = ImageOps.exif_transpose(Image.open(path)).convert("RGB")
    w0, h0 = img.size
    h, w = _test_size(h0, w0, short, max_size)
    if (h, w) != (h0, w0):
        img = img.resize((w, h), Image.BILINEAR)
    x = torch.from_numpy(np.asarray(img, dtype=np.uint8).copy()).permute(2, 0, 1).float()
    mean = torch.tensor(pixel_mean, dtype=torch.float32).view(3, 1, 1)
    std = torch.tensor(pixel_std, dtype=torch.float32).view(3, 1, 1)
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
    if not (_SHARED / name).is_file():
        raise unittest.SkipTest(f"{_SHARED / name} is absent (set OVSEG_SHARED_DIR)")
    with open(_SHARED / name) as f:
        return json.load(f)


class _FixtureParity:
    """Each shared fixture against what the reference implementation computed."""

    FIXTURE = None

    @classmethod
    def setUpClass(cls):
        fx = cls.FIXTURE
        cls.cfg = config_mod.load_config(fx.config_eval)
        cls.mode = next((m for m in ("eval", "demo") if fx.has_reference(m)), None)
        if cls.mode is None:
            raise unittest.SkipTest(f"{fx.dir}: no eval/ or demo/ reference outputs")
        cls.meta = fx.meta(cls.mode)
        sd = read_checkpoint(fx.checkpoint)
        cls.state = {k: v for k, v in sd.items() if k.startswith(_PREFIXES) and not is_ignored_key(k)}
        cls.model = build_proposal_generator(cls.cfg)
        cls.model.load_state_dict(cls.state, strict=True)
        cls.model.eval()
        lo, hi = fx.test_sizes(cls.mode)
        mcfg = fx.config(cls.mode)["MODEL"]
        cls.x, cls.hw = _preprocess(Path(fx.image), lo, hi, mcfg["PIXEL_MEAN"], mcfg["PIXEL_STD"])
        ref = fx.reference(cls.mode, ("pred_embeddings", "pred_masks_lowres"))
        if len(ref) != 2:
            raise unittest.SkipTest(f"{fx.dir}/{cls.mode}: no pred_embeddings/pred_masks_lowres .npy")
        cls.ref_emb = torch.from_numpy(ref["pred_embeddings"])
        cls.ref_masks = torch.from_numpy(ref["pred_masks_lowres"])
        with torch.no_grad():
            cls.emb, cls.masks = cls.model(cls.x)

    def test_state_dict_keys_equal_checkpoint(self):
        self.assertEqual(
            sorted(set(self.model.state_dict().keys()) - set(self.state.keys())),
            [],
            "model tensors the checkpoint lacks",
        )
        self.assertEqual(
            sorted(set(self.state.keys()) - set(self.model.state_dict().keys())),
            [],
            "checkpoint tensors the model lacks",
        )
        sd = self.model.state_dict()
        for k, v in self.state.items():
            self.assertEqual(tuple(sd[k].shape), tuple(v.shape), k)

    def test_preprocessing_size_matches_reference(self):
        self.assertEqual(list(self.hw), self.meta["resized_size_hw"])
        self.assertEqual(tuple(self.x.shape[2:]), (self.ref_masks.shape[1] * 4, self.ref_masks.shape[2] * 4))

    def test_eager_matches_reference(self):
        self.assertEqual(tuple(self.emb.shape), (1,) + tuple(self.ref_emb.shape))
        self.assertEqual(tuple(self.masks.shape), (1,) + tuple(self.ref_masks.shape))
        d_emb = _max_abs(self.emb[0], self.ref_emb)
        d_mask = _max_abs(self.masks[0], self.ref_masks)
        _report(
            f"{self.FIXTURE.name}: eager vs reference: max|d| embeddings {d_emb:.3g} "
            f"(|ref| max {float(self.ref_emb.abs().max()):.3g}), mask logits {d_mask:.3g} "
            f"(|ref| max {float(self.ref_masks.abs().max()):.3g}, "
            f"bound {_mask_tolerance(self.ref_masks):.3g})"
        )
        self.assertLessEqual(d_emb, 1e-4)
        self.assertLessEqual(d_mask, _mask_tolerance(self.ref_masks))

    def test_scripted_matches_reference_and_eager(self):
        scripted = _script_roundtrip(self.model)
        with torch.no_grad():
            emb, masks = scripted(self.x)
        d_emb = _max_abs(emb[0], self.ref_emb)
        d_mask = _max_abs(masks[0], self.ref_masks)
        d_eager = max(_max_abs(emb, self.emb), _max_abs(masks, self.masks))
        _report(
            f"{self.FIXTURE.name}: scripted vs reference: embeddings {d_emb:.3g}, mask logits "
            f"{d_mask:.3g}; scripted vs eager {d_eager:.3g}"
        )
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
            self.assertLessEqual(_max_abs(e_emb, s_emb), 1e-5 * max(1.0, float(e_emb.abs().max())))
            self.assertLessEqual(_max_abs(e_masks, s_masks), 1e-5 * max(1.0, float(e_masks.abs().max())))
        # Batch entries are independent: image 0 alone gives the same as inside the batch.
        x = torch.randn((2, 3, 96, 160), generator=gen)
        with torch.no_grad():
            b_emb, b_masks = self.model(x)
            o_emb, o_masks = self.model(x[1:])
        self.assertLessEqual(_max_abs(b_emb[1:], o_emb), 1e-4 * max(1.0, float(o_emb.abs().max())))
        self.assertLessEqual(_max_abs(b_masks[1:], o_masks), _mask_tolerance(o_masks))


fixture_classes(_FixtureParity, globals())


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
    """The full-size R101c configuration: structure per docs/reference-behaviour.md §4.2, scripted == eager."""

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
        self.assertEqual(
            [tuple(f.shape) for f in feats], [(1, 256, 16, 24), (1, 512, 8, 12), (1, 1024, 4, 6), (1, 2048, 2, 3)]
        )

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
        _report(
            f"R101c 64x64 scripted vs eager: embeddings {d_emb:.3g}, mask logits {d_mask:.3g} "
            f"(output scale {scale:.3g})"
        )
        self.assertLessEqual(max(d_emb, d_mask), 1e-5 * scale)


# ---- ResNet variants (detectron2 v0.6 builders) ---------------------------------------------

_TINY_HEAD = {
    "SEM_SEG_HEAD": {"CONVS_DIM": 32, "MASK_DIM": 32, "EMBEDDING_DIM": 16, "EMBED_HIDDEN_DIM": 32},
    "MASK_FORMER": {"HIDDEN_DIM": 32, "NHEADS": 2, "DIM_FEEDFORWARD": 32, "DEC_LAYERS": 1, "NUM_OBJECT_QUERIES": 5},
}
_R = "build_resnet_deeplab_backbone"
_P = "build_resnet_backbone"
# name -> (backbone NAME, RESNETS overrides)
_RESNET_VARIANTS = {
    "deeplab_r50": (
        _R,
        {
            "DEPTH": 50,
            "STEM_TYPE": "deeplab",
            "STEM_OUT_CHANNELS": 16,
            "RES2_OUT_CHANNELS": 32,
            "WIDTH_PER_GROUP": 8,
            "STRIDE_IN_1X1": False,
            "RES5_MULTI_GRID": [1, 2, 4],
        },
    ),
    "deeplab_r50_grouped_os8": (
        _R,
        {
            "DEPTH": 50,
            "STEM_TYPE": "deeplab",
            "STEM_OUT_CHANNELS": 16,
            "RES2_OUT_CHANNELS": 32,
            "NUM_GROUPS": 2,
            "WIDTH_PER_GROUP": 4,
            "STRIDE_IN_1X1": True,
            "RES4_DILATION": 2,
            "RES5_DILATION": 4,
            "RES5_MULTI_GRID": [1, 2, 1],
        },
    ),
    "deeplab_r34_basic_stem": (
        _R,
        {
            "DEPTH": 34,
            "STEM_TYPE": "basic",
            "STEM_OUT_CHANNELS": 16,
            "RES2_OUT_CHANNELS": 16,
            "RES5_DILATION": 2,
            "RES5_MULTI_GRID": [1, 2, 4],
        },
    ),
    "plain_r18": (
        _P,
        {"DEPTH": 18, "STEM_TYPE": "deeplab", "STEM_OUT_CHANNELS": 16, "RES2_OUT_CHANNELS": 16, "RES5_DILATION": 1},
    ),
    "plain_r50_dilated": (
        _P,
        {
            "DEPTH": 50,
            "STEM_OUT_CHANNELS": 16,
            "RES2_OUT_CHANNELS": 32,
            "WIDTH_PER_GROUP": 8,
            "STRIDE_IN_1X1": True,
            "RES5_DILATION": 2,
            "RES4_DILATION": 2,
            "RES5_MULTI_GRID": [1, 2, 4],
        },
    ),
}


def _variant_config(name: str) -> dict:
    builder, resnets = _RESNET_VARIANTS[name]
    raw = {
        "MODEL": dict(
            _TINY_HEAD, BACKBONE={"NAME": builder}, RESNETS=dict(resnets, OUT_FEATURES=["res2", "res3", "res4", "res5"])
        )
    }
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "config.yaml")
        with open(path, "w") as f:
            yaml.safe_dump(raw, f)
        return config_mod.load_config(path)


def _randomise_norms(model: torch.nn.Module, seed: int) -> None:
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, t in model.state_dict(keep_vars=True).items():
            if ".norm." not in name or not t.is_floating_point():
                continue
            if name.endswith("running_var"):
                t.copy_(0.5 + torch.rand(t.shape, generator=gen))
            else:
                t.copy_(0.2 * torch.randn(t.shape, generator=gen) + (1.0 if name.endswith(".weight") else 0.0))


def _functional_resnet(sd: dict, builder: str, rn: dict, x: torch.Tensor):
    """detectron2 v0.6 ResNet arithmetic written from the builders' rules, reading only the
    state dict (block type and counts from its keys): an independent check of the module."""
    import torch.nn.functional as F

    def conv_bn(t, p, stride=1, dilation=1):
        w = sd[p + ".weight"]
        k = w.shape[-1]
        groups = t.shape[1] // w.shape[1]
        t = F.conv2d(t, w, None, stride, dilation * (k // 2), dilation, groups)
        return F.batch_norm(
            t,
            sd[p + ".norm.running_mean"],
            sd[p + ".norm.running_var"],
            sd[p + ".norm.weight"],
            sd[p + ".norm.bias"],
            False,
            0.0,
            1e-5,
        )

    t = F.relu(conv_bn(x, "stem.conv1", stride=2))
    if "stem.conv3.weight" in sd:  # DeepLab stem
        t = F.relu(conv_bn(t, "stem.conv2"))
        t = F.relu(conv_bn(t, "stem.conv3"))
    t = F.max_pool2d(t, 3, 2, 1)
    outs = []
    for s in (2, 3, 4, 5):
        n = len({k.split(".")[1] for k in sd if k.startswith(f"res{s}.")})
        if builder == _R:
            d = {4: int(rn["RES4_DILATION"]), 5: int(rn["RES5_DILATION"])}.get(s, 1)
            first = 1 if s == 2 or d > 1 else 2
            dil = [d * g for g in rn["RES5_MULTI_GRID"]] if s == 5 else [d] * n
        else:
            d = int(rn["RES5_DILATION"]) if s == 5 else 1
            first = 1 if s == 2 or (s == 5 and d == 2) else 2
            dil = [d] * n
        for i in range(n):
            p = f"res{s}.{i}"
            stride = first if i == 0 else 1
            short = conv_bn(t, p + ".shortcut", stride) if p + ".shortcut.weight" in sd else t
            if p + ".conv3.weight" in sd:
                s1, s3 = (stride, 1) if rn["STRIDE_IN_1X1"] else (1, stride)
                y = F.relu(conv_bn(t, p + ".conv1", s1))
                y = F.relu(conv_bn(y, p + ".conv2", s3, dil[i]))
                y = conv_bn(y, p + ".conv3")
            else:
                y = F.relu(conv_bn(t, p + ".conv1", stride, dil[i]))
                y = conv_bn(y, p + ".conv2", 1, dil[i])
            t = F.relu(y + short)
        outs.append(t)
    return outs


class ResNetVariantsTest(unittest.TestCase):
    """DEPTH 18/34/50, bottleneck width, groups, both stems, STRIDE_IN_1X1, RES4/RES5 dilation,
    multi-grid, and the plain builder, against the detectron2 rules."""

    def test_deeplab_stem_and_stage_shapes(self):
        cfg = _variant_config("deeplab_r50")
        sd = build_proposal_generator(cfg).backbone.state_dict()
        self.assertEqual(list(sd["stem.conv1.weight"].shape), [8, 3, 3, 3])
        self.assertEqual(list(sd["stem.conv2.weight"].shape), [8, 8, 3, 3])
        self.assertEqual(list(sd["stem.conv3.weight"].shape), [16, 8, 3, 3])
        # (bottleneck, out) = (8, 32), (16, 64), (32, 128), (64, 256); stage inputs 16, 32, 64, 128.
        for s, (b, out, cin, n) in zip(
            (2, 3, 4, 5), ((8, 32, 16, 3), (16, 64, 32, 4), (32, 128, 64, 6), (64, 256, 128, 3))
        ):
            self.assertEqual(list(sd[f"res{s}.0.shortcut.weight"].shape), [out, cin, 1, 1])
            self.assertEqual(list(sd[f"res{s}.0.conv1.weight"].shape), [b, cin, 1, 1])
            self.assertEqual(list(sd[f"res{s}.0.conv2.weight"].shape), [b, b, 3, 3])
            self.assertEqual(list(sd[f"res{s}.0.conv3.weight"].shape), [out, b, 1, 1])
            self.assertNotIn(f"res{s}.1.shortcut.weight", sd)
            self.assertIn(f"res{s}.{n - 1}.conv3.weight", sd)
            self.assertNotIn(f"res{s}.{n}.conv1.weight", sd)
        self.assertEqual(
            sorted({k.rsplit(".", 1)[1] for k in sd if k.startswith("res2.0.conv1.norm")}),
            ["bias", "running_mean", "running_var", "weight"],
        )

    def test_grouped_bottleneck(self):
        sd = build_proposal_generator(_variant_config("deeplab_r50_grouped_os8")).backbone.state_dict()
        self.assertEqual(list(sd["res2.0.conv2.weight"].shape), [8, 4, 3, 3])  # groups 2 x width 4
        self.assertEqual(list(sd["res5.0.conv2.weight"].shape), [64, 32, 3, 3])

    def test_basic_blocks_and_plain_builder(self):
        cfg = _variant_config("plain_r18")
        self.assertEqual(cfg["MODEL"]["RESNETS"]["STEM_TYPE"], "basic")  # the plain builder ignores it
        sd = build_proposal_generator(cfg).backbone.state_dict()
        self.assertEqual(list(sd["stem.conv1.weight"].shape), [16, 3, 7, 7])
        self.assertNotIn("stem.conv2.weight", sd)
        self.assertEqual(list(sd["res2.0.conv1.weight"].shape), [16, 16, 3, 3])
        self.assertEqual(list(sd["res2.0.conv2.weight"].shape), [16, 16, 3, 3])
        self.assertNotIn("res2.0.shortcut.weight", sd)  # 16 -> 16 needs none
        self.assertEqual(list(sd["res3.0.shortcut.weight"].shape), [32, 16, 1, 1])
        self.assertEqual(list(sd["res5.1.conv2.weight"].shape), [128, 128, 3, 3])
        self.assertFalse(any(".conv3." in k for k in sd))
        self.assertEqual(len({k.split(".")[1] for k in sd if k.startswith("res4.")}), 2)
        sd34 = build_proposal_generator(_variant_config("deeplab_r34_basic_stem")).backbone.state_dict()
        self.assertEqual(
            [len({k.split(".")[1] for k in sd34 if k.startswith(f"res{s}.")}) for s in (2, 3, 4, 5)], [3, 4, 6, 3]
        )
        self.assertIn(
            "res2.0.shortcut.weight", build_proposal_generator(_variant_config("deeplab_r50")).backbone.state_dict()
        )

    def test_output_strides(self):
        x = torch.zeros(1, 3, 64, 96)
        expect = {
            "deeplab_r50": [(16, 24), (8, 12), (4, 6), (2, 3)],
            "deeplab_r50_grouped_os8": [(16, 24), (8, 12), (8, 12), (8, 12)],
            "deeplab_r34_basic_stem": [(16, 24), (8, 12), (4, 6), (4, 6)],
            "plain_r18": [(16, 24), (8, 12), (4, 6), (2, 3)],
            "plain_r50_dilated": [(16, 24), (8, 12), (4, 6), (4, 6)],
        }
        for name, sizes in expect.items():
            with self.subTest(variant=name):
                model = build_proposal_generator(_variant_config(name))
                with torch.no_grad():
                    feats = model.backbone(x)
                    emb, masks = model(x)
                self.assertEqual([tuple(f.shape[-2:]) for f in feats], sizes)
                self.assertEqual([f.shape[1] for f in feats], list(model.backbone.out_channels))
                self.assertEqual(tuple(masks.shape), (1, 5, 16, 24))
                self.assertEqual(tuple(emb.shape), (1, 5, 16))

    def test_plain_builder_ignores_res4_dilation_and_multi_grid(self):
        model = build_proposal_generator(_variant_config("plain_r50_dilated"))
        bb = model.backbone
        self.assertEqual([b.conv2.dilation for b in bb.res4], [(1, 1)] * 6)
        self.assertEqual([b.conv2.dilation for b in bb.res5], [(2, 2)] * 3)
        self.assertEqual(bb.res3[0].conv1.stride, (2, 2))  # STRIDE_IN_1X1 True
        self.assertEqual(bb.res3[0].conv2.stride, (1, 1))
        self.assertEqual(bb.res5[0].conv1.stride, (1, 1))  # res5 keeps stride 16 when dilated

    def test_matches_functional_detectron2_rules(self):
        x = torch.randn(1, 3, 64, 96, generator=torch.Generator().manual_seed(3))
        for i, name in enumerate(_RESNET_VARIANTS):
            with self.subTest(variant=name):
                builder, resnets = _RESNET_VARIANTS[name]
                rn = dict(DEFAULTS["MODEL"]["RESNETS"], **resnets)  # what the YAML does not set
                model = build_proposal_generator(_variant_config(name)).eval()
                torch.manual_seed(i)
                _randomise_norms(model.backbone, i)
                with torch.no_grad():
                    got = model.backbone(x)
                    ref = _functional_resnet(model.backbone.state_dict(), builder, rn, x)
                    scripted = _script_roundtrip(model.backbone)(x)
                for s, (a, b, c) in enumerate(zip(got, ref, scripted)):
                    self.assertEqual(tuple(a.shape), tuple(b.shape), f"res{s + 2}")
                    scale = max(1.0, float(b.abs().max()))
                    self.assertLessEqual(_max_abs(a, b), 1e-5 * scale, f"res{s + 2}")
                    self.assertLessEqual(_max_abs(a, c), 1e-5 * scale, f"res{s + 2} scripted")

    def test_invalid_configs_are_refused(self):
        bad = {"DEPTH": 26}, {"RES5_MULTI_GRID": [1, 2]}, {"STEM_TYPE": "fancy"}, {"RES5_DILATION": 3}
        for override in bad:
            with self.subTest(override=override):
                builder, resnets = _RESNET_VARIANTS["deeplab_r50"]
                _RESNET_VARIANTS["_bad"] = (builder, dict(resnets, **override))
                try:
                    with self.assertRaises((ValueError, config_mod.ConfigError)):
                        build_proposal_generator(_variant_config("_bad"))
                finally:
                    del _RESNET_VARIANTS["_bad"]
        _RESNET_VARIANTS["_bad"] = (_P, {"DEPTH": 50, "RES5_DILATION": 4})
        try:
            with self.assertRaises(config_mod.ConfigError):
                _variant_config("_bad")
        finally:
            del _RESNET_VARIANTS["_bad"]


if __name__ == "__main__":
    unittest.main()
