"""SAM fixtures as the SAM tests see them (not a test module itself).

A SAM fixture is SHARED/fixtures/<name>/ whose meta.json has "sam_commit" and "amg_params"
(the format of fixtures/sam_tiny). Everything is read from each fixture's meta.json: the
generator's parameters, the input image, the storage of each array."""
import glob
import json
import os
import re
from typing import Any, Dict, List, Tuple

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.environ.get("OVSEG_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
SHARED = os.environ.get("OVSEG_SHARED_DIR") or os.path.join(REPO, "..", "shared", "ovseg")

# meta.json amg_params key -> ovseg flag
FLAG_NAMES = (
    "points_per_side",
    "points_per_batch",
    "pred_iou_thresh",
    "stability_score_thresh",
    "stability_score_offset",
    "box_nms_thresh",
    "crop_n_layers",
    "crop_nms_thresh",
    "crop_overlap_ratio",
    "crop_n_points_downscale_factor",
    "min_mask_region_area",
)


def sam_fixtures() -> List[Tuple[str, Dict[str, Any]]]:
    out = []
    for meta in sorted(glob.glob(os.path.join(SHARED, "fixtures", "*", "meta.json"))):
        try:
            with open(meta, "r", encoding="utf-8") as f:
                m = json.load(f)
        except (OSError, ValueError):
            continue
        if isinstance(m, dict) and "sam_commit" in m and "amg_params" in m:
            out.append((os.path.dirname(meta), m))
    return out


def load_array(d: str, meta: Dict[str, Any], name: str, tensors_key: Dict[str, Any] = None) -> np.ndarray:
    t = (tensors_key or meta["tensors"])[name]
    p = os.path.join(d, t["file"])
    return np.load(p)["arr"] if p.endswith(".npz") else np.load(p)


def amg_input(d: str, meta: Dict[str, Any]) -> str:
    """The generator's input image: the first word of meta["amg_input"] (else image.png)."""
    text = str(meta.get("amg_input", "image.png")).strip()
    name = re.split(r"\s+", text)[0] if text else "image.png"
    return os.path.join(d, name)


def generator_flags(meta: Dict[str, Any], extra=()) -> List[str]:
    """The fixture's generator parameters as flags, then `extra` (whose flags replace them)."""
    p = meta["amg_params"]
    given = {f for f in extra if str(f).startswith("--")}
    flags = []
    for k in FLAG_NAMES:
        flag = "--" + k.replace("_", "-")
        if k in p and p[k] is not None and flag not in given:
            flags += [flag, repr(p[k])]
    return flags + list(extra)


def segmentations(d: str, meta: Dict[str, Any]) -> np.ndarray:
    packed = load_array(d, meta, "segmentations_packbits")
    h, w = meta["amg_input_size_hw"]
    return np.unpackbits(packed, axis=-1, count=w).astype(bool).reshape(-1, h, w)


# Where the SAM checks find the binary and the bundles the ctest fixtures export.
BIN = os.environ.get("OVSEG_BIN", os.path.join(REPO, "build", "ovseg"))
SAM_BUNDLES = os.environ.get("OVSEG_SAM_BUNDLE_DIR", os.path.join(REPO, "build", "test-bundles-sam"))
OV_BUNDLES = os.environ.get("OVSEG_TEST_BUNDLE_DIR", os.path.join(REPO, "build", "test-bundles"))


def classify_fixtures() -> List[Tuple[str, Dict[str, Any]]]:
    """The SAM fixtures that also hold the online demo's classification (meta.json "classify")."""
    return [(d, m) for d, m in sam_fixtures() if isinstance(m.get("classify"), dict)]


def ov_bundle(meta: Dict[str, Any]) -> str:
    """The ov-seg bundle exported from the fixture whose checkpoint a classification used."""
    ck = meta["classify"]["checkpoint"]  # shared/ovseg/fixtures/<name>/checkpoint.pth
    return os.path.join(OV_BUNDLES, os.path.basename(os.path.dirname(ck)))


def main_or_skip(fixtures, what: str) -> None:
    """A check's __main__: exit 77 (ctest: skipped) without fixtures or bundles, else unittest."""
    import sys
    import unittest

    if not fixtures:
        print("SKIP: no SAM fixture", what, "under", SHARED)
        sys.exit(77)
    for p in (SAM_BUNDLES, OV_BUNDLES):
        if not os.path.isdir(p):
            print("SKIP: no test bundles in", p)
            sys.exit(77)
    unittest.main(module="__main__")
