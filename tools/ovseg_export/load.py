"""Checkpoint reading with the official loader's semantics (SPEC §2.1) and a key report."""
import collections
import json
import os
import pickle
import sys
import zipfile
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch


class ExportError(Exception):
    """An error the CLI reports as one line; `exit_code` is the process status."""
    exit_code = 1


class UsageError(ExportError):
    exit_code = 2


def read_json_option(text: str, option: str) -> Dict[str, Any]:
    """The value of a command-line option that takes a JSON object inline or a JSON file's path."""
    try:
        if os.path.isfile(text):
            with open(text, "r", encoding="utf-8") as f:
                data = json.load(f)
        else:
            data = json.loads(text)
    except (OSError, ValueError) as e:
        raise UsageError(f"{option}: not a JSON object or file ({e})") from None
    if not isinstance(data, dict):
        raise UsageError(f"{option}: not a JSON object")
    return data


class CheckpointReadError(ExportError):
    exit_code = 2


class IncompatibleCheckpoint(ExportError):
    exit_code = 3


# Keys that exist in released checkpoints but are not needed at inference (training-only or
# replaced by constants); dropped silently, listed with --verbose.
IGNORED_KEYS = ("criterion.empty_weight", "clip_adapter.clip_model.logit_scale",
                "clip_adapter.pixel_mean", "clip_adapter.pixel_std", "pixel_mean", "pixel_std")
IGNORED_SUFFIXES = (".num_batches_tracked",)


def is_ignored_key(key: str) -> bool:
    return key in IGNORED_KEYS or key.endswith(IGNORED_SUFFIXES)


class _PlainUnpickler(pickle.Unpickler):
    """pickle.load for detectron2-style .pkl checkpoints (dicts of numpy arrays) that builds
    only containers and numpy arrays: a pickle that names any other callable is refused instead
    of run."""
    _ALLOWED = {("collections", "OrderedDict"), ("numpy", "ndarray"), ("numpy", "dtype"),
                ("numpy.core.multiarray", "_reconstruct"), ("numpy._core.multiarray", "_reconstruct"),
                ("numpy.core.multiarray", "scalar"), ("numpy._core.multiarray", "scalar"),
                ("_codecs", "encode"), ("builtins", "bytearray")}

    def find_class(self, module, name):
        if (module, name) in self._ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name} (only dicts of numpy arrays "
                                     "are read from a .pkl checkpoint)")


def _load_pkl(path: str) -> Mapping:
    """DetectionCheckpointer._load_file for ".pkl": the detectron2 model-zoo form
    {"model": ..., "__author__": ...} as it is; anything else is a Caffe2 / Detectron1 file:
    its "blobs" if present, without the "*_momentum" entries."""
    try:
        with open(path, "rb") as f:
            data = _PlainUnpickler(f, encoding="latin1").load()
    except OSError as e:
        raise CheckpointReadError(f"{path}: cannot read ({e.strerror or e})") from None
    except Exception as e:  # noqa: BLE001 - any unpickling failure
        msg = " ".join(str(e).split())[:200] or type(e).__name__
        raise CheckpointReadError(f"{path}: not a readable .pkl checkpoint: {msg}") from None
    if not isinstance(data, Mapping):
        raise CheckpointReadError(f"{path}: not a checkpoint (top level is a {type(data).__name__}, "
                                  "expected a dict)")
    if "model" in data and "__author__" in data:
        return data
    if "blobs" in data:
        data = data["blobs"]
        if not isinstance(data, Mapping):
            raise CheckpointReadError(f"{path}: \"blobs\" is a {type(data).__name__}, expected a dict")
    return {"model": {k: v for k, v in data.items()
                      if not (isinstance(k, str) and k.endswith("_momentum"))}}


def read_state_file(path: str, what: str = "checkpoint") -> Mapping:
    """The top-level object of a .pth/.pt (torch.load) or .pkl file, as DetectionCheckpointer
    reads it."""
    if not os.path.isfile(path):
        raise CheckpointReadError(f"{path}: no such {what} file")
    if path.endswith(".pkl"):
        return _load_pkl(path)
    try:
        obj = torch.load(path, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - any failure means "not a readable checkpoint"
        hint = ""
        if zipfile.is_zipfile(path) is False and _looks_like_zip(path):
            hint = " (the zip archive is truncated)"
        msg = " ".join(str(e).split())[:200] or type(e).__name__
        raise CheckpointReadError(f"{path}: not a readable PyTorch {what}{hint}: {msg}") from None
    if not isinstance(obj, Mapping):
        raise CheckpointReadError(f"{path}: not a {what} (top level is a {type(obj).__name__}, "
                                  "expected a dict)")
    return obj


def tensors_of(sd: Mapping, path: str, what: str = "checkpoint") -> "collections.OrderedDict[str, torch.Tensor]":
    """String-keyed tensors (numpy arrays converted) with a common "module." prefix stripped,
    as fvcore's Checkpointer does."""
    tensors: "collections.OrderedDict[str, torch.Tensor]" = collections.OrderedDict()
    for k, v in sd.items():
        if isinstance(v, np.ndarray):
            v = torch.from_numpy(np.array(v, order="C"))  # a copy; keeps 0-d arrays 0-d
        if isinstance(k, str) and isinstance(v, torch.Tensor):
            tensors[k] = v
    if not tensors:
        raise CheckpointReadError(f"{path}: not a {what} (no tensors found)")
    if all(k.startswith("module.") for k in tensors):
        tensors = collections.OrderedDict((k[len("module."):], v) for k, v in tensors.items())
    return tensors


def read_checkpoint(path: str) -> "collections.OrderedDict[str, torch.Tensor]":
    """The checkpoint forms DetectionCheckpointer loads: {"model": state dict, ...}, a bare state
    dict, a .pkl (detectron2 model zoo or Caffe2 form; numpy arrays); "module." stripped, floats
    cast to float32, version-1 pixel-decoder keys renamed."""
    obj = read_state_file(path)
    sd = obj["model"] if "model" in obj else obj
    if not isinstance(sd, Mapping):
        raise CheckpointReadError(f"{path}: the \"model\" entry is a {type(sd).__name__}, "
                                  "expected a state dict")
    tensors = tensors_of(sd, path)
    out: "collections.OrderedDict[str, torch.Tensor]" = collections.OrderedDict()
    for k, v in tensors.items():
        if v.is_floating_point() and v.dtype != torch.float32:
            v = v.float()
        out[_rename_v1(k)] = v
    return out


# Entries of OpenAI's CLIP archives that are not weights (clip.build_model deletes them).
_CLIP_NON_WEIGHTS = ("input_resolution", "context_length", "vocab_size")


def read_clip_weights(path: str) -> "collections.OrderedDict[str, torch.Tensor]":
    """OpenAI's released CLIP file (a TorchScript archive: its state dict, as clip.load(jit=False)
    uses it) or a plain CLIP state dict (torch.load / .pkl, optionally under "model" or
    "state_dict", or already under "clip_adapter.clip_model."). Keys as in OpenAI's CLIP
    ("visual.conv1.weight", "token_embedding.weight", ...), floats as float32."""
    if not os.path.isfile(path):
        raise CheckpointReadError(f"{path}: no such CLIP weights file (--clip-weights)")
    sd = None
    if not path.endswith(".pkl") and zipfile.is_zipfile(path):
        try:
            sd = torch.jit.load(path, map_location="cpu").state_dict()
        except Exception:  # noqa: BLE001 - not TorchScript: a zip-format torch.save file
            sd = None
    if sd is None:
        obj = read_state_file(path, "CLIP weights file (--clip-weights)")
        for key in ("model", "state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
        sd = obj
    tensors = tensors_of(sd, path, "CLIP weights file (--clip-weights)")
    prefix = "clip_adapter.clip_model."
    if any(k.startswith(prefix) for k in tensors):
        tensors = collections.OrderedDict((k[len(prefix):], v) for k, v in tensors.items()
                                          if k.startswith(prefix))
    out: "collections.OrderedDict[str, torch.Tensor]" = collections.OrderedDict()
    for k, v in tensors.items():
        if k in _CLIP_NON_WEIGHTS:
            continue
        out[k] = v.float() if v.is_floating_point() and v.dtype != torch.float32 else v
    if "visual.conv1.weight" not in out or "token_embedding.weight" not in out:
        raise CheckpointReadError(f"{path}: not a CLIP ViT state dict (no visual.conv1.weight / "
                                  "token_embedding.weight)")
    return out


def _looks_like_zip(path: str) -> bool:
    with open(path, "rb") as f:
        return f.read(4) == b"PK\x03\x04"


def _rename_v1(key: str) -> str:
    # Version-1 heads stored the pixel decoder directly under sem_seg_head.
    head = "sem_seg_head."
    if key.startswith(head):
        rest = key[len(head):]
        if not rest.startswith(("predictor.", "pixel_decoder.")):
            return head + "pixel_decoder." + rest
    return key


class MatchReport:
    def __init__(self):
        self.loaded: List[str] = []
        self.missing: List[Tuple[str, tuple]] = []
        self.unexpected: List[Tuple[str, tuple]] = []
        self.mismatched: List[Tuple[str, tuple, tuple]] = []
        self.ignored: List[Tuple[str, tuple]] = []
        # loaded keys that did not come from the checkpoint: key → source (the --clip-weights file)
        self.filled: "collections.OrderedDict[str, str]" = collections.OrderedDict()

    @property
    def complete(self) -> bool:
        return not self.missing and not self.mismatched

    def print(self, stream=sys.stderr, verbose: bool = False, quiet: bool = False) -> None:
        def shape(s) -> str:
            return "[" + ",".join(str(d) for d in s) + "]"

        rows: List[Tuple[str, str, str]] = []
        for k, s in self.missing:
            rows.append(("missing", k, f"model {shape(s)}"))
        for k, s_model, s_ckpt in self.mismatched:
            rows.append(("shape", k, f"model {shape(s_model)} vs checkpoint {shape(s_ckpt)}"))
        for k, s in self.unexpected:
            rows.append(("unused", k, f"checkpoint {shape(s)}"))
        if verbose:
            for k, s in self.ignored:
                rows.append(("ignored", k, f"checkpoint {shape(s)} (not needed at inference)"))
        if not quiet or not self.complete:
            print(f"checkpoint keys: {len(self.loaded)} loaded, {len(self.missing)} missing, "
                  f"{len(self.mismatched)} shape-mismatched, {len(self.unexpected)} unused, "
                  f"{len(self.ignored)} ignored", file=stream)
            if self.filled:
                by_source: Dict[str, int] = collections.Counter(self.filled.values())
                for src, n in by_source.items():
                    print(f"  {len(self.loaded) - len(self.filled)} loaded from the checkpoint, {n} "
                          f"from {src} (the checkpoint lacks them{'' if verbose else '; -v lists them'})",
                          file=stream)
                if verbose:
                    for k, src in self.filled.items():
                        rows.insert(0, ("filled", k, f"from {src}"))
        if rows:
            width = max(len(r[1]) for r in rows)
            for kind, k, detail in rows:
                print(f"  {kind:<8} {k:<{width}}  {detail}", file=stream)


def match_state(expected: Mapping[str, torch.Tensor], sd: Mapping[str, torch.Tensor]) -> MatchReport:
    """Exact-name matching; a shape mismatch does not load (the model keeps its value)."""
    rep = MatchReport()
    for k, t in expected.items():
        if k not in sd:
            rep.missing.append((k, tuple(t.shape)))
        elif tuple(sd[k].shape) != tuple(t.shape):
            rep.mismatched.append((k, tuple(t.shape), tuple(sd[k].shape)))
        else:
            rep.loaded.append(k)
    for k, v in sd.items():
        if k in expected:
            continue
        if is_ignored_key(k):
            rep.ignored.append((k, tuple(v.shape)))
        else:
            rep.unexpected.append((k, tuple(v.shape)))
    return rep


def checkpoint_clip_constants(sd: Mapping[str, torch.Tensor]) -> Optional[Dict[str, List[float]]]:
    """clip_adapter.pixel_mean/std if the checkpoint has them (only used for a consistency check)."""
    if "clip_adapter.pixel_mean" in sd and "clip_adapter.pixel_std" in sd:
        return {"mean": [float(v) for v in sd["clip_adapter.pixel_mean"].flatten()],
                "std": [float(v) for v in sd["clip_adapter.pixel_std"].flatten()]}
    return None
