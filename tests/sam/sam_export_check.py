"""The exported SAM modules against the official debugging taps of every SAM fixture
(../shared/ovseg/fixtures/*/meta.json with "sam_commit"). Exit 77 when no fixture is present.

Cost: about 3 s per fixture (export + one image-encoder pass of the reduced model)."""
import json
import os
import sys
import tempfile
import unittest

import numpy as np
import torch
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.environ.get("OVSEG_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "tools"))

from ovseg_export.sam_export import export_sam  # noqa: E402
from ovseg_export.load import IncompatibleCheckpoint  # noqa: E402

sys.path.insert(0, HERE)
from sam_fixtures import SHARED, load_array, sam_fixtures  # noqa: E402

FIXTURES = sam_fixtures()


def setUpModule():
    # However the module is started (ctest, unittest, pytest): no fixture, every test skips.
    if not FIXTURES:
        raise unittest.SkipTest(f"no SAM fixture under {SHARED}")


class SamExportTest(unittest.TestCase):
    def test_modules_match_official_taps(self):
        for d, meta in FIXTURES:
            with self.subTest(fixture=os.path.basename(d)), tempfile.TemporaryDirectory() as tmp:
                arch = os.path.join(d, "arch.json")
                overrides = {}
                if os.path.exists(arch):
                    with open(arch) as f:
                        overrides = json.load(f)
                res = export_sam(os.path.join(tmp, "b"), os.path.join(d, "checkpoint.pth"), overrides, quiet=True)
                b = res["path"]
                with open(os.path.join(b, "manifest.json")) as f:
                    man = json.load(f)
                self.assertEqual(man["format"], "ovseg-sam-bundle")
                for k in (
                    "embed_dim",
                    "depth",
                    "num_heads",
                    "global_attn_indexes",
                    "window_size",
                    "prompt_embed_dim",
                    "mask_in_chans",
                    "decoder_depth",
                    "decoder_mlp_dim",
                    "iou_head_depth",
                    "iou_head_hidden_dim",
                    "num_multimask_outputs",
                ):
                    self.assertEqual(man["architecture"][k], meta["arch"][k], k)
                enc = torch.jit.load(os.path.join(b, "sam_image_encoder.pt"))
                pe = torch.jit.load(os.path.join(b, "sam_prompt_encoder.pt"))
                dec = torch.jit.load(os.path.join(b, "sam_mask_decoder.pt"))
                img = np.asarray(Image.open(os.path.join(d, "sam_input.png")).convert("RGB"))
                x = torch.from_numpy(img.copy()).permute(2, 0, 1)[None].float()
                with torch.no_grad():
                    emb = enc(x)
                ref = torch.from_numpy(load_array(d, meta, "image_embedding"))
                self.assertEqual(tuple(emb.shape), tuple(ref.shape))
                err = (emb - ref).abs().max().item()
                self.assertLess(err, 1e-4 * max(1.0, ref.abs().max().item()), "embedding")
                pts = torch.from_numpy(load_array(d, meta, "first_batch_points_in"))
                labels = torch.ones(pts.shape[0], 1, dtype=torch.int64)
                with torch.no_grad():
                    sparse, dense = pe(pts[:, None, :], labels)
                    low, iou = dec(ref, pe.dense_pe(), sparse, dense, True)
                ref_iou = torch.from_numpy(load_array(d, meta, "first_batch_iou_preds"))
                self.assertLess((iou - ref_iou).abs().max().item(), 1e-4, "iou predictions")
                ref_low = torch.from_numpy(load_array(d, meta, "first_batch_lowres_logits"))
                n = ref_low.shape[0]
                scale = max(1.0, ref_low.abs().max().item())
                self.assertLess((low[:n] - ref_low).abs().max().item(), 1e-4 * scale, "logits")

    def test_missing_tensor_is_refused(self):
        d, meta = FIXTURES[0]
        sd = torch.load(os.path.join(d, "checkpoint.pth"), map_location="cpu")
        del sd["mask_decoder.iou_token.weight"]
        with tempfile.TemporaryDirectory() as tmp:
            ck = os.path.join(tmp, "c.pth")
            torch.save(sd, ck)
            import io

            with self.assertRaises(IncompatibleCheckpoint):
                export_sam(os.path.join(tmp, "b"), ck, {}, stream=io.StringIO())
            self.assertFalse(os.path.exists(os.path.join(tmp, "b")))


if __name__ == "__main__":
    if not FIXTURES:
        print("SKIP: no SAM fixture under", SHARED)
        sys.exit(77)
    unittest.main()
