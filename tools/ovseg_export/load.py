"""Checkpoint reading with the official loader's semantics (docs/reference-behaviour.md §2.1) and a key report."""
import collections
import json
import os
import sys
from typing import Any, Dict, List, Mapping, Optional, Tuple

import numpy as np
import torch

from . import safe_io, safe_pickle


class ExportError(Exception):
    """An error the CLI reports as one line; `exit_code` is the process status."""

    exit_code = 1


class UsageError(ExportError):
    exit_code = 2


def read_json_option(text: str, option: str, labelled: bool = False):
    """The value of a command-line option that takes a JSON object inline or a JSON file's path
    (a regular file, at most 16 MiB). With labelled=True: (object, label), the label naming the
    option and the file for error messages ("--arch arch.json")."""
    label = option
    if os.path.lexists(text):
        label = f"{option} {text}"
        try:
            data = safe_io.read_json_file(text, f"{option} file")
        except safe_io.InputError as e:
            raise UsageError(str(e)) from None
    else:
        try:
            data = json.loads(text)
        except ValueError as e:
            if text.lstrip()[:1] in ("{", "["):
                raise UsageError(f"{option}: not valid JSON ({e})") from None
            raise UsageError(f"{option} {text}: neither a JSON object nor an existing file") from None
        except RecursionError:
            raise UsageError(f"{option}: the JSON is nested too deeply") from None
    if not isinstance(data, dict):
        raise UsageError(f"{label}: not a JSON object")
    return (data, label) if labelled else data


def check_out(out: str, bundle_format: str, inputs=()) -> str:
    """safe_io.check_out_dir as a UsageError (exit 2): the absolute --out to write."""
    try:
        return safe_io.check_out_dir(out, bundle_format, inputs)
    except safe_io.OutDirError as e:
        raise UsageError(str(e)) from None


def report_unexpected(prog: str, e: BaseException, stream=sys.stderr) -> int:
    """The one-line report of an error no check anticipated (exit 1, "any other failure"); the
    traceback only with OVSEG_TRACEBACK=1."""
    if os.environ.get("OVSEG_TRACEBACK"):
        import traceback

        traceback.print_exception(type(e), e, e.__traceback__, file=stream)
    if isinstance(e, MemoryError):
        msg = "out of memory"
    elif isinstance(e, OSError) and e.filename:
        msg = f"{e.filename}: {e.strerror or e}"
    else:
        detail = " ".join(str(e).split())[:300]
        msg = f"{type(e).__name__}: {detail}" if detail else type(e).__name__
    print(f"{prog}: error: {msg} (set OVSEG_TRACEBACK=1 for the traceback)", file=stream)
    return 1


class CheckpointReadError(ExportError):
    exit_code = 2


class IncompatibleCheckpoint(ExportError):
    exit_code = 3


# Keys that exist in released checkpoints but are not needed at inference (training-only or
# replaced by constants); dropped silently, listed with --verbose.
IGNORED_KEYS = (
    "criterion.empty_weight",
    "clip_adapter.clip_model.logit_scale",
    "clip_adapter.pixel_mean",
    "clip_adapter.pixel_std",
    "pixel_mean",
    "pixel_std",
)
IGNORED_SUFFIXES = (".num_batches_tracked",)


def is_ignored_key(key: str) -> bool:
    return key in IGNORED_KEYS or key.endswith(IGNORED_SUFFIXES)


def _open_input(path: str, what: str):
    """(file, size) of a regular input file, or CheckpointReadError."""
    try:
        f = safe_io.open_regular(path, what)
    except safe_io.InputError as e:
        raise CheckpointReadError(str(e)) from None
    return f, os.fstat(f.fileno()).st_size


def _load_pkl(path: str, what: str = "checkpoint") -> Mapping:
    """DetectionCheckpointer._load_file for ".pkl": the detectron2 model-zoo form
    {"model": ..., "__author__": ...} as it is; anything else is a Caffe2 / Detectron1 file:
    its "blobs" if present, without the "*_momentum" entries. Read by safe_pickle: containers,
    numbers, strings and plain numeric numpy arrays only; nothing named in the file is run."""
    f, size = _open_input(path, what)
    try:
        with f:
            data = safe_pickle.load_pickle(path, f, size, encoding="latin1")
    except safe_pickle.ReadError as e:
        raise CheckpointReadError(f"{path}: not a readable .pkl {what}: {e}") from None
    except OSError as e:
        raise CheckpointReadError(f"{path}: cannot read ({e.strerror or e})") from None
    if not isinstance(data, Mapping):
        raise CheckpointReadError(
            f"{path}: not a {what} (top level is a " f"{safe_pickle.typename(data)}, expected a dict)"
        )
    if "model" in data and "__author__" in data:
        return data
    if "blobs" in data:
        data = data["blobs"]
        if not isinstance(data, Mapping):
            raise CheckpointReadError(f'{path}: "blobs" is a {type(data).__name__}, expected a dict')
    return {"model": {k: v for k, v in data.items() if not (isinstance(k, str) and k.endswith("_momentum"))}}


def _read_torch(path: str, what: str) -> Tuple[Any, bool]:
    f, size = _open_input(path, what)
    try:
        with f:
            return safe_pickle.load_torch_file(path, f, size)
    except safe_pickle.ReadError as e:
        raise CheckpointReadError(f"{path}: not a readable PyTorch {what}: {e}") from None
    except OSError as e:
        raise CheckpointReadError(f"{path}: cannot read ({e.strerror or e})") from None


def read_state_file(path: str, what: str = "checkpoint") -> Mapping:
    """The top-level object of a .pth/.pt (torch.save's zip or legacy format) or .pkl file, as
    DetectionCheckpointer reads it, but as data: no code named in the file is ever run (see
    safe_pickle)."""
    if path.endswith(".pkl"):
        return _load_pkl(path, what)
    obj, torchscript = _read_torch(path, what)
    if torchscript:
        raise CheckpointReadError(
            f"{path}: a TorchScript archive, not a {what} (OpenAI's CLIP " "file goes to --clip-weights)"
        )
    if not isinstance(obj, Mapping):
        raise CheckpointReadError(
            f"{path}: not a {what} (top level is a " f"{safe_pickle.typename(obj)}, expected a dict)"
        )
    return obj


# numpy dtypes torch.from_numpy takes
_TORCH_NUMPY = {np.dtype(t) for t in ("?", "u1", "i1", "i2", "i4", "i8", "f2", "f4", "f8")}


def tensors_of(sd: Mapping, path: str, what: str = "checkpoint") -> "collections.OrderedDict[str, torch.Tensor]":
    """String-keyed tensors (numpy arrays converted) with a common "module." prefix stripped,
    as fvcore's Checkpointer does. An array referenced under several keys is converted once."""
    tensors: "collections.OrderedDict[str, torch.Tensor]" = collections.OrderedDict()
    converted: Dict[int, torch.Tensor] = {}
    for k, v in sd.items():
        if isinstance(v, np.ndarray) and isinstance(k, str):
            if v.dtype not in _TORCH_NUMPY:
                raise CheckpointReadError(
                    f"{path}: {k}: a numpy array of dtype {v.dtype}, which "
                    "is not a tensor type (bool, uint8, int8-64, float16-64)"
                )
            t = converted.get(id(v))
            if t is None:
                t = converted[id(v)] = torch.from_numpy(np.array(v, order="C"))  # keeps 0-d 0-d
            v = t
        if isinstance(k, str) and isinstance(v, torch.Tensor):
            tensors[k] = v
    if not tensors:
        raise CheckpointReadError(f"{path}: not a {what} (no tensors found)")
    if all(k.startswith("module.") for k in tensors):
        tensors = collections.OrderedDict((k[len("module.") :], v) for k, v in tensors.items())
    return tensors


def _as_float32(tensors: Mapping[str, torch.Tensor]) -> Dict[int, torch.Tensor]:
    """float32 copies of the floating tensors that are not float32, one per distinct tensor."""
    out: Dict[int, torch.Tensor] = {}
    for v in tensors.values():
        if v.is_floating_point() and v.dtype != torch.float32 and id(v) not in out:
            out[id(v)] = v.float()
    return out


def read_checkpoint(path: str) -> "collections.OrderedDict[str, torch.Tensor]":
    """The checkpoint forms DetectionCheckpointer loads: {"model": state dict, ...}, a bare state
    dict, a .pkl (detectron2 model zoo or Caffe2 form; numpy arrays); "module." stripped, floats
    cast to float32, version-1 pixel-decoder keys renamed."""
    obj = read_state_file(path)
    sd = obj["model"] if "model" in obj else obj
    if not isinstance(sd, Mapping):
        raise CheckpointReadError(f'{path}: the "model" entry is a {type(sd).__name__}, ' "expected a state dict")
    tensors = tensors_of(sd, path)
    floats = _as_float32(tensors)
    out: "collections.OrderedDict[str, torch.Tensor]" = collections.OrderedDict()
    for k, v in tensors.items():
        out[_rename_v1(k)] = floats.get(id(v), v)
    return out


# Entries of OpenAI's CLIP archives that are not weights (clip.build_model deletes them).
_CLIP_NON_WEIGHTS = ("input_resolution", "context_length", "vocab_size")


def read_clip_weights(path: str) -> "collections.OrderedDict[str, torch.Tensor]":
    """OpenAI's released CLIP file (a TorchScript archive: its state dict, as clip.load(jit=False)
    uses it) or a plain CLIP state dict (torch.load / .pkl, optionally under "model" or
    "state_dict", or already under "clip_adapter.clip_model."). Keys as in OpenAI's CLIP
    ("visual.conv1.weight", "token_embedding.weight", ...), floats as float32."""
    what = "CLIP weights file (--clip-weights)"
    if path.endswith(".pkl"):
        obj: Any = _load_pkl(path, what)
        torchscript = False
    else:
        obj, torchscript = _read_torch(path, what)
    if torchscript:
        if not isinstance(obj, safe_pickle.ScriptObject):
            raise CheckpointReadError(
                f"{path}: a TorchScript archive whose data is a " f"{safe_pickle.typename(obj)}, not a module"
            )
        try:
            sd: Mapping = safe_pickle.script_state_dict(obj)
        except safe_pickle.ReadError as e:
            raise CheckpointReadError(f"{path}: not a readable {what}: {e}") from None
    else:
        if not isinstance(obj, Mapping):
            raise CheckpointReadError(
                f"{path}: not a {what} (top level is a " f"{safe_pickle.typename(obj)}, expected a dict)"
            )
        for key in ("model", "state_dict"):
            if key in obj and isinstance(obj[key], Mapping):
                obj = obj[key]
                break
        sd = obj
    tensors = tensors_of(sd, path, "CLIP weights file (--clip-weights)")
    prefix = "clip_adapter.clip_model."
    if any(k.startswith(prefix) for k in tensors):
        tensors = collections.OrderedDict((k[len(prefix) :], v) for k, v in tensors.items() if k.startswith(prefix))
    floats = _as_float32(tensors)
    out: "collections.OrderedDict[str, torch.Tensor]" = collections.OrderedDict()
    for k, v in tensors.items():
        if k in _CLIP_NON_WEIGHTS:
            continue
        out[k] = floats.get(id(v), v)
    if "visual.conv1.weight" not in out or "token_embedding.weight" not in out:
        raise CheckpointReadError(
            f"{path}: not a CLIP ViT state dict (no visual.conv1.weight / " "token_embedding.weight)"
        )
    return out


def _rename_v1(key: str) -> str:
    # Version-1 heads stored the pixel decoder directly under sem_seg_head.
    head = "sem_seg_head."
    if key.startswith(head):
        rest = key[len(head) :]
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
            print(
                f"checkpoint keys: {len(self.loaded)} loaded, {len(self.missing)} missing, "
                f"{len(self.mismatched)} shape-mismatched, {len(self.unexpected)} unused, "
                f"{len(self.ignored)} ignored",
                file=stream,
            )
            if self.filled:
                by_source: Dict[str, int] = collections.Counter(self.filled.values())
                for src, n in by_source.items():
                    print(
                        f"  {len(self.loaded) - len(self.filled)} loaded from the checkpoint, {n} "
                        f"from {src} (the checkpoint lacks them{'' if verbose else '; -v lists them'})",
                        file=stream,
                    )
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
        return {
            "mean": [float(v) for v in sd["clip_adapter.pixel_mean"].flatten()],
            "std": [float(v) for v in sd["clip_adapter.pixel_std"].flatten()],
        }
    return None
