#!/usr/bin/python3
"""Fuzz targets for the Python exporter's readers of untrusted files.

    fuzz_py_readers.py checkpoint [--seconds N] [--seed S] [--artifacts DIR]
    fuzz_py_readers.py config     [--seconds N] [--seed S] [--artifacts DIR]

checkpoint: tools/ovseg_export/load.py's read_checkpoint and read_clip_weights (safe_pickle's
pickle machine over torch.save's zip and legacy formats, TorchScript archives, numpy .pkl).
config: tools/ovseg_export/config.py's load_config (bounded YAML, _BASE_ chains, key checks).

Bounded random mutation of small seed inputs the harness makes itself (nothing from outside):
byte flips, insertions from a dictionary of pickle opcodes / YAML tokens, deletions, splices,
truncation, and for zip archives mutations of the inner data.pkl re-zipped with valid CRCs (so
that the pickle machine, not the zip checksum, sees them). A finding is any exception other
than the reader's documented error (CheckpointReadError / ConfigError), an input running past
--timeout seconds, or a crash (the input is in ARTIFACTS/current when the process dies). The
address space is limited (RLIMIT_AS, --memory-mb above what the interpreter uses after its
imports), so an allocation bomb is a MemoryError finding, not a dead machine.

Exit 0 when nothing was found, 1 on a finding (the input saved under ARTIFACTS), 77 when the
exporter's dependencies (torch, numpy, yaml) are not importable.
"""
import argparse
import collections
import io
import os
import pickle
import random
import resource
import shutil
import signal
import struct
import sys
import tempfile
import time
import traceback
import zipfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.environ.get("OVSEG_SOURCE_DIR") or os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(REPO, "tools"))

try:
    import numpy as np
    import torch
    import yaml  # noqa: F401 - the config reader's
    from torch import nn

    from ovseg_export import config as config_mod
    from ovseg_export import load
except ImportError as e:  # pragma: no cover - depends on the machine
    print(f"fuzz_py_readers: skipped: {e}")
    sys.exit(77)

torch.set_num_threads(1)


class Timeout(Exception):
    pass


def _on_alarm(signum, frame):
    raise Timeout()


# ------------------------------------------------------------------------------------------------
# Seeds


def _u(s: str) -> bytes:
    b = s.encode()
    return b"X" + struct.pack("<I", len(b)) + b


def checkpoint_seeds(tmp: str):
    """(name, bytes) of small files of every form the checkpoint reader takes, plus the issue's
    attack files."""
    g = torch.Generator().manual_seed(0)
    base = torch.randn(4, 3, generator=g)
    sd = collections.OrderedDict(
        [
            ("backbone.w", base),
            ("backbone.view", base[1:3, 1:]),
            ("head.t", base.t()),
            ("head.half", torch.randn(3, generator=g).half()),
            ("head.bf16", torch.randn(2).bfloat16()),
            ("head.idx", torch.arange(4)),
            ("head.flag", torch.tensor([True, False])),
            ("head.scalar", torch.tensor(1.5)),
            ("head.empty", torch.zeros(0, 2)),
            ("clip_adapter.clip_model.visual.conv1.weight", torch.randn(2, 3, 1, 1, generator=g)),
            ("clip_adapter.clip_model.token_embedding.weight", torch.randn(5, 2, generator=g)),
        ]
    )
    ckpt = {
        "model": sd,
        "iteration": 7,
        "lr": 0.25,
        "name": "seed",
        "optimizer": {
            "state": {0: {"momentum_buffer": torch.ones(2)}},
            "param_groups": [{"lr": 0.1, "betas": (0.9, 0.99), "params": [0]}],
        },
        "flags": {1, 2},
        "nothing": None,
        "scheduler": {"milestones": collections.Counter({5: 1}), "last_epoch": 3},
        "groups": collections.defaultdict(list, {0: [1]}),
        "device": torch.device("cpu"),
        "dtype": torch.float16,
        "shape": torch.Size([2, 2]),
    }
    out = []
    for name, kw in (
        ("zip.pth", {}),
        ("legacy.pth", {"_use_new_zipfile_serialization": False}),
        ("proto4.pth", {"pickle_protocol": 4}),
    ):
        buf = io.BytesIO()
        torch.save(ckpt, buf, **kw)
        out.append((name, buf.getvalue()))
    arrays = {k: v.float().numpy() if v.dtype == torch.bfloat16 else v.numpy() for k, v in sd.items()}
    for proto in (2, 4):
        out.append(
            (
                f"zoo{proto}.pkl",
                pickle.dumps({"model": arrays, "__author__": "seed", "step": np.int64(3)}, protocol=proto),
            )
        )
    out.append(
        (
            "caffe2.pkl",
            pickle.dumps(
                {"blobs": {"conv1_w": np.ones((2, 2), np.float32), "conv1_w_momentum": np.zeros(2, np.float32)}},
                protocol=2,
            ),
        )
    )
    root = nn.Module()
    root.visual = nn.Module()
    root.visual.conv1 = nn.Conv2d(3, 2, 1, bias=False)
    root.token_embedding = nn.Embedding(5, 2)
    root.register_buffer("input_resolution", torch.tensor(224))
    p = os.path.join(tmp, "seed-archive.pt")
    torch.jit.script(root.half()).save(p)
    with open(p, "rb") as f:
        out.append(("archive.pt", f.read()))
    # the issue's attack files: structured object dtype, bytearray and _reconstruct bombs
    obj_dtype = (
        b"cnumpy\ndtype\n"
        + _u("O8")
        + b"\x89\x88\x87R"
        + b"(K\x03"
        + _u("|")
        + b"NNNJ\xff\xff\xff\xffJ\xff\xff\xff\xffK\x3ftb"
    )
    dtype = (
        b"cnumpy\ndtype\n"
        + _u("V8")
        + b"\x89\x88\x87R"
        + b"(K\x03"
        + _u("|")
        + b"N"
        + _u("a")
        + b"\x85}"
        + _u("a")
        + obj_dtype
        + b"K\x00\x86s"
        + b"K\x08K\x01K\x00tb"
    )
    array = (
        b"cnumpy.core.multiarray\n_reconstruct\ncnumpy\nndarray\nK\x00\x85C\x01b\x87R"
        + b"(K\x01K\x01\x85"
        + dtype
        + b"\x89C\x08"
        + b"A" * 8
        + b"tb"
    )
    author = _u("__author__") + _u("x") + b"s"
    out.append(("structured.pkl", b"\x80\x02}" + _u("model") + b"}" + _u("x") + array + b"ss" + author + b"."))
    out.append(
        (
            "bytearray.pkl",
            b"\x80\x02}"
            + _u("model")
            + b"}"
            + _u("x")
            + b"cbuiltins\nbytearray\n\x8a\x05\x00^\xd0\xb2\x00\x85Rss"
            + author
            + b".",
        )
    )
    return out


CONFIG_BASE = """\
MODEL:
  META_ARCHITECTURE: OVSeg
  PIXEL_MEAN: [123.675, 116.28, 103.53]
  SWIN:
    EMBED_DIM: 32
    DEPTHS: [2, 2, 2, 2]
    NUM_HEADS: [1, 2, 4, 8]
"""

CONFIG_SEEDS = [
    (
        "plain.yaml",
        """\
MODEL:
  META_ARCHITECTURE: OVSeg
  BACKBONE:
    NAME: D2SwinTransformer
  SWIN:
    EMBED_DIM: 64
    DEPTHS: [2, 2, 6, 2]
    NUM_HEADS: [2, 4, 8, 16]
    WINDOW_SIZE: 7
    QK_SCALE: null
  CLIP_ADAPTER:
    CLIP_MODEL_NAME: ViT-B/16
    MASK_THR: 0.4
    CLIP_ENSEMBLE_WEIGHT: 0.7
    MASK_PROMPT_DEPTH: 3
    PREDEFINED_PROMPT_TEMPLATES:
    - a photo of a {}.
  MASK_FORMER:
    NUM_OBJECT_QUERIES: 20
    HIDDEN_DIM: 64
    NHEADS: 4
INPUT:
  MIN_SIZE_TEST: 336
  MAX_SIZE_TEST: 1280
  MIN_SIZE_TRAIN: !!python/object/apply:eval ['[int(x * 0.1 * 640) for x in range(5, 21)]']
""",
    ),
    (
        "resnet.yaml",
        """\
MODEL:
  BACKBONE: {NAME: build_resnet_backbone}
  RESNETS: {DEPTH: 18, RES5_DILATION: 1, NORM: FrozenBN}
  SEM_SEG_HEAD: {EMBEDDING_DIM: 512, MASK_DIM: 128}
  CLIP_ADAPTER: {MASK_THR: 1e-1, CLIP_ENSEMBLE: false}
""",
    ),
    (
        "aliases.yaml",
        """\
defaults: &d {MASK_THR: 0.5, CLIP_ENSEMBLE_WEIGHT: 0.6}
sizes: &s [2, 2, 6, 2]
MODEL:
  CLIP_ADAPTER:
    <<: *d
    MASK_PROMPT_DEPTH: 2
  SWIN: {DEPTHS: *s, NUM_HEADS: [2, 4, 8, 16]}
""",
    ),
    (
        "child.yaml",
        """\
_BASE_: base.yaml
MODEL:
  SWIN:
    WINDOW_SIZE: 12
  PIXEL_STD: [58.395, 57.12, 57.375]
""",
    ),
    (
        "bomb.yaml",
        "MODEL:\n  L0: &l0 {a: 1, b: 2, c: 3, d: 4, e: 5, f: 6, g: 7, h: 8, i: 9, j: 10}\n"
        + "".join(f"  L{i}: &l{i} {{" + ", ".join(f"k{j}: *l{i - 1}" for j in range(10)) + "}\n" for i in range(1, 8)),
    ),
]

PICKLE_TOKENS = [
    b"(",
    b")",
    b"t",
    b"\x85",
    b"\x86",
    b"\x87",
    b"]",
    b"l",
    b"a",
    b"e",
    b"}",
    b"d",
    b"s",
    b"u",
    b"R",
    b"b",
    b"\x81",
    b"Q",
    b"0",
    b"1",
    b"2",
    b".",
    b"N",
    b"\x88",
    b"\x89",
    b"\x8f",
    b"\x90",
    b"\x91",
    b"\x94",
    b"h\x00",
    b"h\x01",
    b"j\xff\xff\xff\xff",
    b"q\x00",
    b"r\xff\xff\xff\x7f",
    b"K\x00",
    b"K\xff",
    b"M\xff\xff",
    b"J\xff\xff\xff\xff",
    b"J\x00\xca\x9a;",
    b"\x8a\x08" + b"\xff" * 8,
    b"\x8b\x00\x00\x10\x00",
    b"G\x7f\xf8\x00\x00\x00\x00\x00\x00",
    b"B\xff\xff\xff\x7f",
    b"C\x08AAAAAAAA",
    b"T\xff\xff\xff\xff",
    b"X\x00\x00\x00\x80",
    b"\x8e" + b"\xff" * 8,
    b"cposix\nsystem\n",
    b"cbuiltins\neval\n",
    b"cbuiltins\nbytearray\n",
    b"cbuiltins\ngetattr\n",
    b"ccollections\nOrderedDict\n",
    b"cnumpy\ndtype\n",
    b"cnumpy\nndarray\n",
    b"cnumpy.core.multiarray\n_reconstruct\n",
    b"cnumpy.core.multiarray\nscalar\n",
    b"cnumpy.core.numeric\n_frombuffer\n",
    b"ctorch._utils\n_rebuild_tensor_v2\n",
    b"ctorch._utils\n_rebuild_parameter\n",
    b"ctorch._tensor\n_rebuild_from_type_v2\n",
    b"ctorch\nFloatStorage\n",
    b"ctorch\nBoolStorage\n",
    b"ctorch\nSize\n",
    b"ctorch.nn.parameter\nParameter\n",
    b"c__torch__.m\nM\n",
    b"c_codecs\nencode\n",
    b"ctorch.jit._pickle\nbuild_intlist\n",
    b"\x80\x05",
    b"\x95" + b"\x00" * 8,
    _u("storage"),
    _u("cpu"),
    _u("0"),
    _u("model"),
    _u("f4"),
    _u("O8"),
    _u("V8"),
    _u("<"),
    _u("|"),
    b"\x8c\x05model",
    b"\x93",
    b"i",
    b"o",
    b"\x82\x01",
    b"\x97",
    b"\x98",
    b"P0\n",
    b"g0\n",
    b"p0\n",
    b"I01\n",
    b"L99999999999999999999L\n",
    b"F1e999\n",
    b"S'abc'\n",
    b"V\\u0041\n",
]

YAML_TOKENS = [
    "&a ",
    "*a",
    "&b ",
    "*b",
    "<<: *a",
    "<<: [*a, *b]",
    "!!python/object/apply:os.system ['x']",
    "!!python/tuple [1, 2]",
    "!!binary aGVsbG8=",
    "!!set {a, b}",
    "!!omap [a: 1]",
    "!!timestamp 2001-13-45",
    "!!float .nan",
    "!!int 99999999999999999999999999",
    "[",
    "]",
    "{",
    "}",
    ".nan",
    ".inf",
    "-.inf",
    "-1",
    "0",
    "1e400",
    "1e-6",
    "~",
    "null",
    "true",
    "'x'",
    '"\\x00"',
    "- ",
    ": ",
    "? ",
    ", ",
    "\t",
    "%YAML 1.1\n",
    "--- ",
    "...\n",
    "#",
    "|\n  text",
    ">\n  text",
    "_BASE_: base.yaml",
    "_BASE_: /dev/zero",
    "_BASE_: missing.yaml",
    "_BASE_: [x]",
    "_BASE_: ~/x",
    "MODEL: 5",
    "MODEL:",
    "PIXEL_MEAN: 5",
    "PIXEL_STD: [0, 0, 0]",
    "MASK_THR: -3",
    "NUM_OBJECT_QUERIES: 0",
    "DEPTHS: [1, 2]",
    "NAME: build_resnet_backbone",
    "DEPTH: 7",
    "CLIP_ENSEMBLE: 1",
    "MIN_SIZE_TEST: 99999",
    "1" * 5000,
    "[" * 40,
    "{a: " * 40,
    "\ufeff",
    "\x85",
    "\u2028",
    "\ud800",
]


# ------------------------------------------------------------------------------------------------
# Mutation


def mutate_bytes(rng: random.Random, data: bytes, tokens, max_len: int) -> bytes:
    b = bytearray(data)
    for _ in range(rng.randint(1, 8)):
        op = rng.randrange(8)
        pos = rng.randint(0, len(b))
        if op == 0 and b:  # flip bits
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        elif op == 1 and b:  # random byte
            b[rng.randrange(len(b))] = rng.randrange(256)
        elif op == 2:  # insert a token
            b[pos:pos] = rng.choice(tokens)
        elif op == 3 and b:  # delete a run
            n = rng.randint(1, min(16, len(b)))
            del b[pos : pos + n]
        elif op == 4 and b:  # duplicate a run
            i = rng.randrange(len(b))
            n = rng.randint(1, min(64, len(b) - i))
            b[pos:pos] = b[i : i + n]
        elif op == 5 and b:  # truncate
            del b[rng.randint(0, len(b)) :]
        elif op == 6 and b:  # interesting integer
            i = rng.randrange(len(b))
            val = rng.choice((0, 1, 0x7F, 0x80, 0xFF, 0xFFFF, 0x7FFFFFFF, 0xFFFFFFFF))
            b[i : i + 4] = struct.pack("<I", val)
        elif op == 7:  # replace a run with a token
            n = rng.randint(0, 8)
            b[pos : pos + n] = rng.choice(tokens)
    return bytes(b[:max_len])


def mutate_zip(rng: random.Random, data: bytes, max_len: int) -> bytes:
    """A zip seed with one record mutated (usually data.pkl, sometimes a storage) and re-zipped,
    or the archive's bytes mutated as they are."""
    if rng.random() < 0.2:
        return mutate_bytes(rng, data, PICKLE_TOKENS, max_len)
    try:
        with zipfile.ZipFile(io.BytesIO(data)) as z:
            records = [(i.filename, z.read(i.filename)) for i in z.infolist()]
    except Exception:  # noqa: BLE001 - an earlier mutation broke it; mutate the bytes
        return mutate_bytes(rng, data, PICKLE_TOKENS, max_len)
    pkl = [i for i, (n, _) in enumerate(records) if n.endswith("data.pkl")]
    r = rng.random()
    if pkl and r < 0.7:
        i = pkl[0]
        records[i] = (records[i][0], mutate_bytes(rng, records[i][1], PICKLE_TOKENS, max_len))
    elif r < 0.85 and records:
        i = rng.randrange(len(records))
        body = records[i][1]
        records[i] = (
            records[i][0],
            body[: rng.randint(0, len(body))] if rng.random() < 0.5 else body + bytes(rng.randint(1, 64)),
        )
    elif records:
        i = rng.randrange(len(records))
        del records[i]
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_STORED) as z:
        for name, body in records:
            z.writestr(name, body)
    return buf.getvalue()[:max_len]


def mutate_text(rng: random.Random, text: str, max_len: int) -> str:
    lines = text.split("\n")
    for _ in range(rng.randint(1, 6)):
        op = rng.randrange(6)
        i = rng.randrange(len(lines)) if lines else 0
        if op == 0 and lines:
            del lines[i]
        elif op == 1 and lines:
            lines.insert(rng.randrange(len(lines) + 1), lines[i])
        elif op == 2 and lines:
            j = rng.randrange(len(lines))
            lines[i], lines[j] = lines[j], lines[i]
        elif op == 3 and lines:
            line = lines[i]
            pos = rng.randint(0, len(line))
            lines[i] = line[:pos] + rng.choice(YAML_TOKENS) + line[pos:]
        elif op == 4:
            lines.insert(i, " " * rng.choice((0, 2, 4, 6)) + rng.choice(YAML_TOKENS))
        elif op == 5 and lines:
            line = lines[i]
            lines[i] = " " * rng.choice((0, 1, 2, 3, 4, 8)) + line.lstrip()
    text = "\n".join(lines)
    if rng.random() < 0.15:
        raw = mutate_bytes(
            rng,
            text.encode("utf-8", "surrogatepass"),
            [t.encode("utf-8", "surrogatepass") for t in YAML_TOKENS],
            max_len,
        )
        return raw.decode("utf-8", "surrogateescape")
    return text[:max_len]


# ------------------------------------------------------------------------------------------------
# Targets


def run_checkpoint(path: str) -> None:
    for reader in (load.read_checkpoint, load.read_clip_weights):
        try:
            out = reader(path)
            for v in out.values():  # touch every tensor (views, conversions)
                v.sum()
        except load.CheckpointReadError:
            pass


def run_config(path: str) -> None:
    try:
        config_mod.load_config(path)
    except config_mod.ConfigError:
        pass


def write_file(path: str, data) -> None:
    with open(path, "wb") as f:
        f.write(data if isinstance(data, bytes) else data.encode("utf-8", "surrogatepass"))


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("target", choices=("checkpoint", "config"))
    ap.add_argument("--seconds", type=float, default=10.0, help="how long to fuzz (default 10)")
    ap.add_argument("--seed", type=int, default=None, help="random seed (default: time-based, printed)")
    ap.add_argument("--max-len", type=int, default=1 << 16, help="largest input in bytes")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds one input may take")
    ap.add_argument(
        "--memory-mb", type=int, default=1024, help="address space allowed above the interpreter's after its imports"
    )
    ap.add_argument(
        "--artifacts", help="where findings (and the current input) go " "(default: a temporary directory, printed)"
    )
    args = ap.parse_args(argv)
    seed = args.seed if args.seed is not None else int(time.time() * 1000) % (1 << 31)
    rng = random.Random(seed)
    work = tempfile.mkdtemp(prefix="ovseg-fuzz-py-")
    artifacts = args.artifacts or os.path.join(work, "artifacts")
    os.makedirs(artifacts, exist_ok=True)
    try:
        if args.target == "checkpoint":
            seeds = checkpoint_seeds(work)
            run_one = run_checkpoint
        else:
            seeds = [(n, t) for n, t in CONFIG_SEEDS]
            write_file(os.path.join(work, "base.yaml"), CONFIG_BASE)
            run_one = run_config
        # every seed must be handled as documented before any mutation
        used = (
            int(open("/proc/self/statm").read().split()[0]) * os.sysconf("SC_PAGE_SIZE")
            if os.path.isfile("/proc/self/statm")
            else None
        )
        if used is not None:
            limit = used + (args.memory_mb << 20)
            resource.setrlimit(resource.RLIMIT_AS, (limit, limit))
        signal.signal(signal.SIGALRM, _on_alarm)
        current = os.path.join(artifacts, "current")
        deadline = time.monotonic() + args.seconds
        n = 0
        findings = 0
        print(
            f"fuzz_py_readers {args.target}: seed {seed}, {len(seeds)} seeds, {args.seconds:g} s, "
            f"artifacts in {artifacts}",
            flush=True,
        )
        while True:
            if n < len(seeds):
                name, data = seeds[n]
            else:
                if time.monotonic() >= deadline:
                    break
                name, data = rng.choice(seeds)
                if isinstance(data, str):
                    data = mutate_text(rng, data, args.max_len)
                elif data[:4] == b"PK\x03\x04":
                    data = mutate_zip(rng, data, args.max_len)
                else:
                    data = mutate_bytes(rng, data, PICKLE_TOKENS, args.max_len)
            path = os.path.join(work, name)
            write_file(path, data)
            write_file(current, data)  # what killed the process, if something does
            signal.setitimer(signal.ITIMER_REAL, args.timeout)
            try:
                run_one(path)
            except BaseException as e:  # noqa: BLE001 - everything else is a finding
                signal.setitimer(signal.ITIMER_REAL, 0)
                if isinstance(e, KeyboardInterrupt):
                    raise
                findings += 1
                kind = "timeout" if isinstance(e, Timeout) else type(e).__name__
                keep = os.path.join(artifacts, f"finding-{findings}-{kind}-{name}")
                write_file(keep, data)
                print(f"FINDING {findings}: {kind} on input {n} (from seed {name}); saved as {keep}", flush=True)
                traceback.print_exception(type(e), e, e.__traceback__, file=sys.stdout)
                if findings >= 5:
                    break
            finally:
                signal.setitimer(signal.ITIMER_REAL, 0)
            n += 1
        os.remove(current)
        print(f"fuzz_py_readers {args.target}: {n} inputs, {findings} findings", flush=True)
        return 1 if findings else 0
    finally:
        if args.artifacts is None and not os.listdir(artifacts):
            shutil.rmtree(work, ignore_errors=True)
        elif args.artifacts is None:
            # keep the findings, drop the rest
            for entry in os.listdir(work):
                if entry != "artifacts":
                    p = os.path.join(work, entry)
                    shutil.rmtree(p, ignore_errors=True) if os.path.isdir(p) else os.remove(p)


if __name__ == "__main__":
    sys.exit(main())
