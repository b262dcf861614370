"""The shared fixtures as the parity tests see them (not a test module itself).

A fixture is SHARED/fixtures/<name>/ with checkpoint.pth and config_eval.yaml; everything else
is optional: config_demo.yaml, image.png, classes.txt and per mode (eval/, demo/) the
reference's *.npy outputs with meta.json. Settings are read from the fixture itself, never
assumed: thresholds and ensemble weights from config_<mode>.yaml (else the eval config with
the mode's meta.json "overrides"), class lists from meta.json "classes_used_by_model" (the demo
path appends "others" to a single class), test sizes from the mode's config.

`fixture_classes(Mixin, globals())` adds one unittest.TestCase per fixture, named
`<Mixin>_<fixture>`, whose class attribute FIXTURE is the Fixture; without any fixture it adds
one class that skips with the reason.
"""
import copy
import json
import os
import re
import sys
import unittest
from typing import Any, Dict, List, Optional

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.environ.get("OVSEG_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
TOOLS = os.path.join(REPO, "tools")
if TOOLS not in sys.path:
    sys.path.insert(0, TOOLS)

from ovseg_export import config as config_mod  # noqa: E402
from ovseg_export.presets import RELEASED_DEMO, RELEASED_EVAL, deep_merge  # noqa: E402

SHARED = os.environ.get("OVSEG_SHARED_DIR") or os.path.join(REPO, "..", "shared", "ovseg")
FIXTURES_DIR = os.path.join(SHARED, "fixtures")
VOCAB = os.path.join(SHARED, "bpe_simple_vocab_16e6.txt.gz")
MODES = ("eval", "demo")
PRIMARY_NAME = "tiny_swin_vit"  # the fixture the non-parity tests prefer when it is there


def fixture_names() -> List[str]:
    if not os.path.isdir(FIXTURES_DIR):
        return []
    return sorted(
        d
        for d in os.listdir(FIXTURES_DIR)
        if os.path.isfile(os.path.join(FIXTURES_DIR, d, "checkpoint.pth"))
        and os.path.isfile(os.path.join(FIXTURES_DIR, d, "config_eval.yaml"))
    )


def read_class_file(path: str) -> List[str]:
    with open(path, "r", encoding="utf-8") as f:
        return [line.strip() for line in f if line.strip()]


class Fixture:
    def __init__(self, name: str):
        self.name = name
        self.dir = os.path.join(FIXTURES_DIR, name)
        self.checkpoint = os.path.join(self.dir, "checkpoint.pth")
        self.config_eval = os.path.join(self.dir, "config_eval.yaml")
        self.image = os.path.join(self.dir, "image.png")
        self._cfg: Dict[str, Dict[str, Any]] = {}
        self._meta: Dict[str, Optional[Dict[str, Any]]] = {}

    def __repr__(self) -> str:
        return f"Fixture({self.name})"

    # ---- configs and meta -------------------------------------------------------------
    def meta(self, mode: str) -> Optional[Dict[str, Any]]:
        if mode not in self._meta:
            p = os.path.join(self.dir, mode, "meta.json")
            if os.path.isfile(p):
                with open(p, "r", encoding="utf-8") as f:
                    self._meta[mode] = json.load(f)
            else:
                self._meta[mode] = None
        return self._meta[mode]

    def config(self, mode: str = "eval") -> Dict[str, Any]:
        """The parsed config the reference used for `mode` (with the exporter's defaults)."""
        if mode not in self._cfg:
            own = os.path.join(self.dir, f"config_{mode}.yaml")
            if os.path.isfile(own):
                cfg = config_mod.load_config(own)
            else:
                cfg = config_mod.load_config(self.config_eval)
                meta = self.meta(mode) or {}
                cfg = deep_merge(cfg, meta.get("overrides") or {})
                if mode == "demo" and "CLIP_ADAPTER" not in ((meta.get("overrides") or {}).get("MODEL") or {}):
                    ca = cfg["MODEL"]["CLIP_ADAPTER"]
                    ca["MASK_THR"] = RELEASED_DEMO["mask_threshold"]
                    ca["CLIP_ENSEMBLE_WEIGHT"] = RELEASED_DEMO["ensemble_weight"]
            self._cfg[mode] = cfg
        return self._cfg[mode]

    def has_reference(self, mode: str) -> bool:
        return self.meta(mode) is not None and os.path.isfile(os.path.join(self.dir, mode, "sem_seg.npy"))

    def reference(self, mode: str, names) -> Dict[str, Any]:
        import numpy as np

        return {
            n: np.load(os.path.join(self.dir, mode, n + ".npy"))
            for n in names
            if os.path.isfile(os.path.join(self.dir, mode, n + ".npy"))
        }

    # ---- inputs -----------------------------------------------------------------------
    def classes(self) -> List[str]:
        p = os.path.join(self.dir, "classes.txt")
        if os.path.isfile(p):
            return read_class_file(p)
        for mode in MODES:
            meta = self.meta(mode)
            if meta and meta.get("classes"):
                return [str(c).strip() for c in meta["classes"]]
        raise unittest.SkipTest(f"{self.dir}: no classes.txt and no meta.json class list")

    def input_classes(self, mode: str) -> List[str]:
        """What the reference was called with for `mode`."""
        meta = self.meta(mode) or {}
        return [str(c) for c in meta["classes"]] if meta.get("classes") else self.classes()

    def model_classes(self, mode: str) -> List[str]:
        """The class list the model used (demo: a single class gets "others" appended)."""
        meta = self.meta(mode) or {}
        if meta.get("classes_used_by_model"):
            return [str(c) for c in meta["classes_used_by_model"]]
        classes = self.input_classes(mode)
        if mode == "demo" and len(classes) == 1:
            classes = classes + ["others"]
        return classes

    # ---- settings ---------------------------------------------------------------------
    def settings(self, mode: str) -> Dict[str, float]:
        """{"mask_threshold", "ensemble_weight"[, "clip_ensemble": False]} the reference used
        on `mode`'s path (as the manifest writes them)."""
        ca = self.config(mode)["MODEL"]["CLIP_ADAPTER"]
        out = {"mask_threshold": float(ca["MASK_THR"]), "ensemble_weight": float(ca["CLIP_ENSEMBLE_WEIGHT"])}
        if not ca.get("CLIP_ENSEMBLE", True):
            out["clip_ensemble"] = False
        return out

    def test_sizes(self, mode: str):
        inp = self.config(mode)["INPUT"]
        return int(inp["MIN_SIZE_TEST"]), int(inp["MAX_SIZE_TEST"])

    def backbone_kind(self) -> str:
        return config_mod.backbone_kind(self.config("eval"))

    def bundle(self) -> Optional[str]:
        """The bundle ctest's export_fixture_bundles wrote for this fixture, if any."""
        d = os.environ.get("OVSEG_TEST_BUNDLE_DIR")
        if d and os.path.isfile(os.path.join(d, self.name, "manifest.json")):
            return os.path.join(d, self.name)
        return None


def released_settings(kind: str, mode: str) -> Dict[str, float]:
    return dict(RELEASED_EVAL[kind]) if mode == "eval" else dict(RELEASED_DEMO)


def backend_for_mode(backend, fixture: Fixture, mode: str):
    """A view of `backend` (pipeline.Backend) whose manifest has `fixture`'s settings and test
    sizes for `mode`; the text-feature cache is shared."""
    from ovseg_export import pipeline

    manifest = copy.deepcopy(backend.manifest)
    manifest["inference"][mode] = fixture.settings(mode)
    lo, hi = fixture.test_sizes(mode)
    manifest["preprocess"]["min_size_test"] = lo
    manifest["preprocess"]["max_size_test"] = hi
    view = pipeline.Backend(
        backend.proposals,
        backend.clip_visual,
        backend.clip_text,
        backend.non_object_embedding,
        manifest,
        backend.tokenizer,
        str(backend.device),
    )
    view._text_cache = backend._text_cache
    return view


def primary_fixture() -> Optional[Fixture]:
    names = fixture_names()
    if not names:
        return None
    return Fixture(PRIMARY_NAME if PRIMARY_NAME in names else names[0])


def _ident(name: str) -> str:
    return re.sub(r"\W", "_", name)


def fixture_classes(mixin, namespace: Dict[str, Any], require=None) -> None:
    """One TestCase per fixture (`require(fixture)` -> reason to skip it, or None)."""
    names = fixture_names()
    module = namespace.get("__name__", __name__)
    if not names:
        reason = f"no shared fixture (checkpoint.pth + config_eval.yaml) under {FIXTURES_DIR} " "(set OVSEG_SHARED_DIR)"

        @classmethod
        def skip_all(cls):
            raise unittest.SkipTest(reason)

        cls = type(
            f"{mixin.__name__}_no_fixture",
            (mixin, unittest.TestCase),
            {"FIXTURE": None, "setUpClass": skip_all, "__module__": module},
        )
        namespace[cls.__name__] = cls
        return
    for name in names:
        fx = Fixture(name)
        attrs = {"FIXTURE": fx, "__module__": module}
        if require is not None:
            why = require(fx)
            if why:

                def skip_it(cls, _why=why):
                    raise unittest.SkipTest(_why)

                attrs["setUpClass"] = classmethod(skip_it)
        cls = type(f"{mixin.__name__}_{_ident(name)}", (mixin, unittest.TestCase), attrs)
        namespace[cls.__name__] = cls
