"""Checkpoint reading with the official loader's semantics (SPEC §2.1) and a key report."""
import collections
import os
import sys
import zipfile
from typing import Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch


class ExportError(Exception):
    """An error the CLI reports as one line; `exit_code` is the process status."""
    exit_code = 1


class UsageError(ExportError):
    exit_code = 2


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


def read_checkpoint(path: str) -> "collections.OrderedDict[str, torch.Tensor]":
    """torch.load on CPU, "model" entry if present, "module." stripped, floats cast to float32,
    version-1 pixel-decoder keys renamed."""
    if not os.path.isfile(path):
        raise CheckpointReadError(f"{path}: no such checkpoint file")
    try:
        obj = torch.load(path, map_location="cpu")
    except Exception as e:  # noqa: BLE001 - any failure means "not a readable checkpoint"
        hint = ""
        if zipfile.is_zipfile(path) is False and _looks_like_zip(path):
            hint = " (the zip archive is truncated)"
        msg = " ".join(str(e).split())[:200] or type(e).__name__
        raise CheckpointReadError(f"{path}: not a readable PyTorch checkpoint{hint}: {msg}") from None
    if not isinstance(obj, Mapping):
        raise CheckpointReadError(f"{path}: not a checkpoint (top level is a {type(obj).__name__}, "
                                  "expected a dict)")
    sd = obj["model"] if "model" in obj else obj
    if not isinstance(sd, Mapping):
        raise CheckpointReadError(f"{path}: the \"model\" entry is a {type(sd).__name__}, "
                                  "expected a state dict")
    tensors: "collections.OrderedDict[str, torch.Tensor]" = collections.OrderedDict()
    for k, v in sd.items():
        if isinstance(v, np.ndarray):
            v = torch.from_numpy(np.ascontiguousarray(v))
        if isinstance(k, str) and isinstance(v, torch.Tensor):
            tensors[k] = v
    if not tensors:
        raise CheckpointReadError(f"{path}: not a checkpoint (no tensors found)")
    if all(k.startswith("module.") for k in tensors):
        tensors = collections.OrderedDict((k[len("module."):], v) for k, v in tensors.items())
    out: "collections.OrderedDict[str, torch.Tensor]" = collections.OrderedDict()
    for k, v in tensors.items():
        if v.is_floating_point() and v.dtype != torch.float32:
            v = v.float()
        out[_rename_v1(k)] = v
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
