"""Checkpoints read as data: a pickle machine that runs no code, and torch's file formats on it.

pickle.load (and torch.load, torch.jit.load) call whatever a file names: a checkpoint can run
`os.system`, allocate gigabytes with a few bytes (`bytearray(3000000000)`), or make numpy read
raw bytes as object pointers. The machine here interprets the pickle opcodes itself. A GLOBAL is
looked up in a fixed table of what checkpoints use (torch's tensor-rebuild functions and storage
types, collections.OrderedDict, numpy's array and scalar reconstruction) and every other name is
refused, naming it. The table's entries are this module's own functions, which check their
arguments: tensors must fit in storage bytes that are actually in the file, numpy arrays must be
numeric without fields and exactly as long as their raw bytes, nothing is allocated before that
check. Containers are plain dicts, lists, tuples, sets and OrderedDicts.

Formats:
* torch.save's zip archive (PyTorch >= 1.6): `<name>/data.pkl` + `<name>/data/<key>` records;
* torch.save's legacy format (PyTorch < 1.6, `_use_new_zipfile_serialization=False`): magic
  number, protocol, system info, the object pickle, the storage keys, then each storage raw;
* TorchScript archives (OpenAI's released ViT-*.pt): the same zip layout with `code/` and
  `constants.pkl`. Only `data.pkl` is read, its `__torch__.*` objects as plain attribute maps,
  so that the module's tensors come out under their state_dict names; the archive's code is
  never compiled or run;
* pickles of numpy arrays (detectron2 model-zoo and Caffe2 `.pkl` files).

Every failure is a ReadError (a ValueError) with a one-line message without the file name.
"""
import codecs
import collections
import io
import math
import re
import struct
import zipfile
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch


class ReadError(ValueError):
    pass


MAX_DIMS = 64
MAX_LONG_BYTES = 1024  # LONG4 / LONG1 payload (a checkpoint's ints fit in 8 bytes)
MAX_KEY_DEPTH = 16  # nesting of tuples used as dict keys / set items
MAX_SCRIPT_DEPTH = 64  # nesting of TorchScript submodules
MAX_SCRIPT_VISITS = 1 << 20  # attribute visits when flattening a TorchScript object tree
VIEW_SLACK_BYTES = 64 << 20  # tensor views may cover at most 4x the storage bytes + this

_PROTO_MAX = 5


# ------------------------------------------------------------------------------------------------
# Values the machine creates besides plain Python ones


class _Global:
    """An allowed global as the pickle names it; REDUCE / NEWOBJ look its handler up."""

    __slots__ = ("qualname",)

    def __init__(self, qualname: str):
        self.qualname = qualname

    def __repr__(self) -> str:
        return self.qualname


class ScriptObject:
    """A TorchScript object of an archive's data.pkl: its class name and attributes."""

    __slots__ = ("qualname", "state")

    def __init__(self, qualname: str):
        self.qualname = qualname
        self.state: Any = None

    def __repr__(self) -> str:
        return f"<TorchScript {self.qualname}>"


class _DType:
    """A numpy dtype of a pickle (numpy.dtype REDUCE + BUILD), only plain numeric kinds."""

    __slots__ = ("dtype",)

    def __init__(self, dtype: np.dtype):
        self.dtype = dtype


class _PendingArray:
    """numpy's _reconstruct result before its BUILD: nothing is allocated until BUILD brings the
    raw bytes and they are checked against the shape."""

    __slots__ = ("value",)

    def __init__(self):
        self.value: Optional[np.ndarray] = None


class _Deferred:
    """A tensor of the legacy format's first pass (its storages are read after the pickle)."""

    __slots__ = ()


_DEFERRED = _Deferred()


_STORAGE_TYPES = {
    "FloatStorage": torch.float32,
    "DoubleStorage": torch.float64,
    "HalfStorage": torch.float16,
    "BFloat16Storage": torch.bfloat16,
    "LongStorage": torch.int64,
    "IntStorage": torch.int32,
    "ShortStorage": torch.int16,
    "CharStorage": torch.int8,
    "ByteStorage": torch.uint8,
    "BoolStorage": torch.bool,
    "UntypedStorage": torch.uint8,
}

_DTYPE_NAMES = (
    "float32",
    "float64",
    "float16",
    "bfloat16",
    "int64",
    "int32",
    "int16",
    "int8",
    "uint8",
    "bool",
    "float",
    "double",
    "half",
    "long",
    "int",
)


class StorageRef:
    """A storage of the file: dtype, element count and how to get its bytes (read once)."""

    __slots__ = ("key", "dtype", "numel", "_loader", "_tensor")

    def __init__(self, key: str, dtype: torch.dtype, numel: int, loader: Optional[Callable[[], torch.Tensor]]):
        self.key, self.dtype, self.numel, self._loader = key, dtype, numel, loader
        self._tensor: Optional[torch.Tensor] = None

    def tensor(self) -> torch.Tensor:
        if self._tensor is None:
            self._tensor = self._loader()
        return self._tensor


def _elem_size(dtype: torch.dtype) -> int:
    return torch.empty((), dtype=dtype).element_size()


def tensor_from_bytes(data: bytes, dtype: torch.dtype, big_endian: bool = False) -> torch.Tensor:
    """A 1-D tensor owning a copy of `data` read as `dtype` (bool bytes other than 0/1 become
    True, as numpy and torch must never see them)."""
    if not data:
        return torch.empty(0, dtype=dtype)
    size = _elem_size(dtype)
    if len(data) % size:
        raise ReadError(f"{len(data)} bytes are not a whole number of {dtype} elements")
    if big_endian and size > 1:
        data = np.frombuffer(data, dtype=f">u{size}").astype(f"<u{size}").tobytes()
    buf = bytearray(data)
    if dtype == torch.bool:
        return torch.frombuffer(buf, dtype=torch.uint8).ne(0)
    return torch.frombuffer(buf, dtype=dtype)


# ------------------------------------------------------------------------------------------------
# The pickle machine


class _Source:
    """Bounded sequential reads: nothing past `end`, never more than what is there."""

    def __init__(self, f, start: int, end: int):
        self.f, self.pos, self.end = f, start, end

    def read(self, n: int) -> bytes:
        if n < 0 or n > self.end - self.pos:
            raise ReadError(
                f"the pickle data is truncated (wants {n} bytes at offset {self.pos}, "
                f"{max(self.end - self.pos, 0)} left)"
            )
        b = self.f.read(n)
        if len(b) != n:
            raise ReadError("the file is shorter than it was")
        self.pos += n
        return b

    def readline(self) -> bytes:
        line = self.f.readline(self.end - self.pos)
        self.pos += len(line)
        if not line.endswith(b"\n"):
            raise ReadError("the pickle data is truncated (a line without its end)")
        return line[:-1]


_HASH_MODULUS = (1 << 61) - 1


def _check_key(k: Any, depth: int = 0) -> None:
    """Dict keys and set items: only values whose hashing and comparison cannot run code,
    recurse deeply or be made to collide (str and bytes hashes are randomised; an int's hash is
    itself below 2**61 - 1)."""
    if k is None or type(k) in (str, bytes, bool):
        return
    if type(k) is int and -_HASH_MODULUS < k < _HASH_MODULUS:
        return
    if type(k) is tuple and depth < MAX_KEY_DEPTH:
        for x in k:
            _check_key(x, depth + 1)
        return
    raise ReadError(f"a {type(k).__name__} used as a dict key or set item")


def _typename(v: Any) -> str:
    if isinstance(v, _Global):
        return v.qualname
    if isinstance(v, ScriptObject):
        return v.qualname
    return type(v).__name__


typename = _typename
_DICTS = (dict, collections.OrderedDict, collections.Counter)


class Unpickler:
    """Interprets one pickle. `resolve(module, name)` gives a _Global (or raises);
    `persistent_load(pid)` gives a storage; `calls` maps qualnames to handlers."""

    def __init__(self, src: _Source, reader: "_Reader", encoding: str):
        self.src = src
        self.reader = reader
        self.encoding = encoding

    def _decode_str8(self, data: bytes):
        if self.encoding == "bytes":
            return data
        return data.decode(self.encoding, "strict")

    def load(self) -> Any:
        try:
            return self._load()
        except ReadError:
            raise
        except (
            IndexError,
            KeyError,
            TypeError,
            ValueError,
            OverflowError,
            struct.error,
            UnicodeError,
            AttributeError,
            RuntimeError,
            zipfile.BadZipFile,
            EOFError,
        ) as e:
            msg = " ".join(str(e).split())[:160] or type(e).__name__
            raise ReadError(f"malformed pickle data near offset {self.src.pos} ({msg})") from None

    def _load(self) -> Any:  # noqa: C901 - one dispatch over the opcodes
        src = self.src
        read, readline = src.read, src.readline
        stack: List[Any] = []
        metastack: List[List[Any]] = []
        memo: Dict[int, Any] = {}
        reader = self.reader

        def pop_mark() -> List[Any]:
            nonlocal stack
            items = stack
            stack = metastack.pop()
            return items

        def memo_get(i: int) -> Any:
            if i not in memo:
                raise ReadError(f"memo entry {i} is used before it is defined")
            v = memo[i]
            if isinstance(v, _PendingArray) and v.value is not None:
                return v.value
            return v

        while True:
            op = read(1)[0]
            if op == 0x80:  # PROTO
                proto = read(1)[0]
                if proto > _PROTO_MAX:
                    raise ReadError(f"unsupported pickle protocol {proto}")
            elif op == 0x95:  # FRAME (a length hint only)
                read(8)
            elif op == 0x2E:  # STOP
                if not stack or metastack:
                    raise ReadError("the pickle ends with an unbalanced stack")
                return stack.pop()
            elif op == 0x28:  # MARK
                metastack.append(stack)
                stack = []
            elif op == 0x30:  # POP
                if stack:
                    stack.pop()
                else:
                    pop_mark()
            elif op == 0x31:  # POP_MARK
                pop_mark()
            elif op == 0x32:  # DUP
                stack.append(stack[-1])
            # -- constants
            elif op == 0x4E:  # NONE
                stack.append(None)
            elif op == 0x88:
                stack.append(True)
            elif op == 0x89:
                stack.append(False)
            elif op == 0x49:  # INT
                line = readline()
                stack.append(True if line == b"01" else False if line == b"00" else int(line))
            elif op == 0x4A:  # BININT
                stack.append(struct.unpack("<i", read(4))[0])
            elif op == 0x4B:  # BININT1
                stack.append(read(1)[0])
            elif op == 0x4D:  # BININT2
                stack.append(struct.unpack("<H", read(2))[0])
            elif op == 0x4C:  # LONG
                line = readline()
                if len(line) > 2 * MAX_LONG_BYTES:
                    raise ReadError("an integer of more than 2048 digits")
                stack.append(int(line[:-1] if line.endswith(b"L") else line))
            elif op in (0x8A, 0x8B):  # LONG1, LONG4
                n = read(1)[0] if op == 0x8A else struct.unpack("<i", read(4))[0]
                if n < 0 or n > MAX_LONG_BYTES:
                    raise ReadError(f"an integer of {n} bytes")
                stack.append(int.from_bytes(read(n), "little", signed=True))
            elif op == 0x46:  # FLOAT
                stack.append(float(readline()))
            elif op == 0x47:  # BINFLOAT
                stack.append(struct.unpack(">d", read(8))[0])
            # -- strings and bytes
            elif op == 0x53:  # STRING
                line = readline()
                if len(line) < 2 or line[0] != line[-1] or line[0] not in b"\"'":
                    raise ReadError("a STRING opcode argument without quotes")
                stack.append(self._decode_str8(codecs.escape_decode(line[1:-1])[0]))
            elif op == 0x54:  # BINSTRING
                n = struct.unpack("<i", read(4))[0]
                if n < 0:
                    raise ReadError("a negative string length")
                stack.append(self._decode_str8(read(n)))
            elif op == 0x55:  # SHORT_BINSTRING
                stack.append(self._decode_str8(read(read(1)[0])))
            elif op == 0x42:  # BINBYTES
                stack.append(read(struct.unpack("<I", read(4))[0]))
            elif op == 0x43:  # SHORT_BINBYTES
                stack.append(read(read(1)[0]))
            elif op in (0x8E, 0x96):  # BINBYTES8, BYTEARRAY8 (read as bytes)
                stack.append(read(struct.unpack("<Q", read(8))[0]))
            elif op == 0x56:  # UNICODE
                stack.append(str(readline(), "raw-unicode-escape"))
            elif op == 0x58:  # BINUNICODE
                stack.append(str(read(struct.unpack("<I", read(4))[0]), "utf-8", "surrogatepass"))
            elif op == 0x8C:  # SHORT_BINUNICODE
                stack.append(str(read(read(1)[0]), "utf-8", "surrogatepass"))
            elif op == 0x8D:  # BINUNICODE8
                stack.append(str(read(struct.unpack("<Q", read(8))[0]), "utf-8", "surrogatepass"))
            # -- containers
            elif op == 0x29:  # EMPTY_TUPLE
                stack.append(())
            elif op == 0x74:  # TUPLE
                items = pop_mark()
                stack.append(tuple(items))
            elif op == 0x85:
                stack[-1] = (stack[-1],)
            elif op == 0x86:
                if len(stack) < 2:
                    raise ReadError("TUPLE2 on a short stack")
                stack[-2:] = [(stack[-2], stack[-1])]
            elif op == 0x87:
                if len(stack) < 3:
                    raise ReadError("TUPLE3 on a short stack")
                stack[-3:] = [(stack[-3], stack[-2], stack[-1])]
            elif op == 0x5D:  # EMPTY_LIST
                stack.append([])
            elif op == 0x6C:  # LIST
                items = pop_mark()
                stack.append(items)
            elif op == 0x61:  # APPEND
                item = stack.pop()
                target = stack[-1]
                if type(target) is not list:
                    raise ReadError(f"APPEND to a {_typename(target)}")
                target.append(item)
            elif op == 0x65:  # APPENDS
                items = pop_mark()
                target = stack[-1]
                if type(target) is not list:
                    raise ReadError(f"APPENDS to a {_typename(target)}")
                target.extend(items)
            elif op == 0x7D:  # EMPTY_DICT
                stack.append({})
            elif op == 0x64:  # DICT
                items = pop_mark()
                if len(items) % 2:
                    raise ReadError("DICT with an odd number of items")
                d = {}
                for i in range(0, len(items), 2):
                    _check_key(items[i])
                    d[items[i]] = items[i + 1]
                stack.append(d)
            elif op == 0x73:  # SETITEM
                v = stack.pop()
                k = stack.pop()
                target = stack[-1]
                if type(target) not in _DICTS:
                    raise ReadError(f"SETITEM on a {_typename(target)}")
                _check_key(k)
                target[k] = v
            elif op == 0x75:  # SETITEMS
                items = pop_mark()
                target = stack[-1]
                if type(target) not in _DICTS:
                    raise ReadError(f"SETITEMS on a {_typename(target)}")
                if len(items) % 2:
                    raise ReadError("SETITEMS with an odd number of items")
                for i in range(0, len(items), 2):
                    _check_key(items[i])
                    target[items[i]] = items[i + 1]
            elif op == 0x8F:  # EMPTY_SET
                stack.append(set())
            elif op == 0x90:  # ADDITEMS
                items = pop_mark()
                target = stack[-1]
                if type(target) is not set:
                    raise ReadError(f"ADDITEMS on a {_typename(target)}")
                for x in items:
                    _check_key(x)
                target.update(items)
            elif op == 0x91:  # FROZENSET
                items = pop_mark()
                for x in items:
                    _check_key(x)
                stack.append(frozenset(items))
            # -- memo
            elif op == 0x67:  # GET
                stack.append(memo_get(int(readline())))
            elif op == 0x68:  # BINGET
                stack.append(memo_get(read(1)[0]))
            elif op == 0x6A:  # LONG_BINGET
                stack.append(memo_get(struct.unpack("<I", read(4))[0]))
            elif op == 0x70:  # PUT
                i = int(readline())
                if i < 0:
                    raise ReadError("a negative memo index")
                memo[i] = stack[-1]
            elif op == 0x71:  # BINPUT
                memo[read(1)[0]] = stack[-1]
            elif op == 0x72:  # LONG_BINPUT
                memo[struct.unpack("<I", read(4))[0]] = stack[-1]
            elif op == 0x94:  # MEMOIZE
                memo[len(memo)] = stack[-1]
            # -- what could run code: only this module's handlers
            elif op == 0x63:  # GLOBAL
                module = readline().decode("utf-8")
                name = readline().decode("utf-8")
                stack.append(reader.resolve(module, name))
            elif op == 0x93:  # STACK_GLOBAL
                name = stack.pop()
                module = stack.pop()
                if type(name) is not str or type(module) is not str:
                    raise ReadError("STACK_GLOBAL with a non-string name")
                stack.append(reader.resolve(module, name))
            elif op == 0x52:  # REDUCE
                args = stack.pop()
                func = stack[-1]
                if type(args) is not tuple:
                    raise ReadError(f"REDUCE with {_typename(args)} arguments")
                stack[-1] = reader.call(func, args)
            elif op == 0x81:  # NEWOBJ
                args = stack.pop()
                cls = stack.pop()
                if type(args) is not tuple:
                    raise ReadError(f"NEWOBJ with {_typename(args)} arguments")
                stack.append(reader.new(cls, args))
            elif op == 0x92:  # NEWOBJ_EX
                kwargs = stack.pop()
                args = stack.pop()
                cls = stack.pop()
                if type(args) is not tuple or kwargs != {}:
                    raise ReadError("NEWOBJ_EX with keyword arguments")
                stack.append(reader.new(cls, args))
            elif op == 0x62:  # BUILD
                state = stack.pop()
                stack[-1] = reader.build(stack[-1], state)
            elif op == 0x51:  # BINPERSID
                stack.append(reader.persistent_load(stack.pop()))
            elif op == 0x50:  # PERSID
                stack.append(reader.persistent_load(readline().decode("ascii")))
            else:
                name = {
                    0x69: "INST",
                    0x6F: "OBJ",
                    0x82: "EXT1",
                    0x83: "EXT2",
                    0x84: "EXT4",
                    0x97: "NEXT_BUFFER",
                    0x98: "READONLY_BUFFER",
                }.get(op)
                if name:
                    raise ReadError(f"the pickle uses the {name} opcode, which checkpoints do not")
                raise ReadError(f"not pickle data (byte 0x{op:02x} at offset {src.pos - 1})")


# ------------------------------------------------------------------------------------------------
# What globals mean


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


MAX_EXTENT = 1 << 48  # sizes and strides (torch indexes with int64; no file holds 2**48 elements)


def _is(v: Any, *choices: Any) -> bool:
    """v is one of the plain int / str choices (no == on arbitrary objects, e.g. arrays)."""
    return type(v) in (int, str) and v in choices


def _int_tuple(v: Any, what: str) -> Tuple[int, ...]:
    if type(v) in (list, tuple) and len(v) <= MAX_DIMS and all(_is_int(x) and 0 <= x < MAX_EXTENT for x in v):
        return tuple(v)
    raise ReadError(
        f"a tensor {what} that is not a tuple of at most {MAX_DIMS} integers in " f"[0, 2**48) ({_typename(v)})"
    )


def _empty_mapping(v: Any) -> bool:
    return v is None or (type(v) in (dict, collections.OrderedDict) and len(v) == 0)


def _numpy_dtype(code: Any) -> np.dtype:
    if isinstance(code, bytes):
        code = code.decode("latin-1")
    if type(code) is not str or len(code) > 8:
        raise ReadError(f"a numpy dtype named by a {_typename(code)}")
    m = re.fullmatch(r"([<>|=]?)([biuf])([1248])", code)
    if m is None:
        raise ReadError(
            f"a numpy array of dtype {code!r}; only bool, integer and float arrays are "
            "read (no strings, objects or structured dtypes)"
        )
    kind, size = m.group(2), int(m.group(3))
    if (kind == "b" and size != 1) or (kind == "f" and size == 1):
        raise ReadError(f"a numpy array of dtype {code!r}")
    return np.dtype(f"{kind}{size}" if kind != "b" else "?")


class _Reader:
    """The globals and storages one file may use."""

    def __init__(
        self, torchscript: bool = False, storages: Optional[Callable[..., StorageRef]] = None, deferred: bool = False
    ):
        self.torchscript = torchscript
        self._storages = storages
        self.deferred = deferred
        self.storage_bytes = 0
        self.view_bytes = 0
        self._calls: Dict[str, Callable[[tuple], Any]] = {
            "collections.OrderedDict": self._ordered_dict,
            "builtins.set": self._set,
            "__builtin__.set": self._set,
            "builtins.frozenset": self._frozenset,
            "__builtin__.frozenset": self._frozenset,
            "builtins.bytearray": self._bytearray,
            "__builtin__.bytearray": self._bytearray,
            "_codecs.encode": self._codecs_encode,
            "builtins.bytes": self._bytes,
            "__builtin__.bytes": self._bytes,
            "torch._utils._rebuild_tensor_v2": self._rebuild_tensor_v2,
            "torch._utils._rebuild_tensor": self._rebuild_tensor,
            "torch._utils._rebuild_parameter": self._rebuild_parameter,
            "torch._utils._rebuild_parameter_with_state": self._rebuild_parameter,
            "torch._tensor._rebuild_from_type_v2": self._rebuild_from_type_v2,
            "torch.Size": self._size,
            "numpy.dtype": self._np_dtype,
            # an unstripped training checkpoint's optimizer / scheduler state: MultiStepLR keeps
            # its milestones in a Counter; a defaultdict's factory is a plain type
            "collections.Counter": self._counter,
            "collections.defaultdict": self._defaultdict,
            "torch.device": self._device,
        }
        self._inert = {
            f"{m}.{t}" for m in ("builtins", "__builtin__") for t in ("dict", "list", "int", "float", "set", "tuple")
        }
        self._inert |= {f"torch.{t}" for t in _DTYPE_NAMES}
        for mod in ("numpy.core.multiarray", "numpy._core.multiarray"):
            self._calls[mod + "._reconstruct"] = self._np_reconstruct
            self._calls[mod + ".scalar"] = self._np_scalar
        for mod in ("numpy.core.numeric", "numpy._core.numeric"):
            self._calls[mod + "._frombuffer"] = self._np_frombuffer
        if torchscript:
            for f in ("build_intlist", "build_doublelist", "build_boollist", "build_tensorlist", "build_genericlist"):
                self._calls["torch.jit._pickle." + f] = self._build_list
            self._calls["torch.jit._pickle.restore_type_tag"] = self._restore_type_tag
        self._types = {"torch.Tensor", "torch.nn.parameter.Parameter", "numpy.ndarray"}
        self._types.update("torch." + n for n in _STORAGE_TYPES)

    # -- globals

    def resolve(self, module: str, name: str) -> Any:
        qualname = f"{module}.{name}"
        if qualname in self._calls or qualname in self._types:
            return _Global(qualname)
        if qualname in self._inert:  # a dtype or a defaultdict factory: a name, never called
            return _Global(qualname)
        if self.torchscript and (module == "__torch__" or module.startswith("__torch__.")):
            return _Global(qualname)
        raise ReadError(
            f"the pickle calls {qualname}, which is refused: only tensors, numeric "
            "arrays, containers, numbers and strings are read (nothing is run)"
        )

    def call(self, func: Any, args: tuple) -> Any:
        if not isinstance(func, _Global):
            raise ReadError(f"REDUCE on a {_typename(func)}")
        handler = self._calls.get(func.qualname)
        if handler is None:
            raise ReadError(f"the pickle calls {func.qualname}, which is refused")
        return handler(args)

    def new(self, cls: Any, args: tuple) -> Any:
        if isinstance(cls, _Global):
            if cls.qualname.startswith("__torch__") and self.torchscript:
                if args:
                    raise ReadError(f"{cls.qualname} created with arguments")
                return ScriptObject(cls.qualname)
            if cls.qualname == "torch.nn.parameter.Parameter":
                if args and isinstance(args[0], (torch.Tensor, _Deferred)):
                    return args[0]
                if not args:
                    raise ReadError("a Parameter without data")
        raise ReadError(f"the pickle creates a {_typename(cls)} object, which is refused")

    def build(self, inst: Any, state: Any) -> Any:
        if isinstance(inst, ScriptObject):
            inst.state = state
            return inst
        if isinstance(inst, _PendingArray):
            if type(state) is not tuple or len(state) not in (4, 5):
                raise ReadError("a numpy array state that is not (version, shape, dtype, " "fortran, data)")
            if len(state) == 5:
                if not _is(state[0], 1):
                    raise ReadError(f"numpy array state version {state[0]!r}")
                state = state[1:]
            shape, dtype, fortran, raw = state
            inst.value = self._make_array(raw, dtype, shape, bool(fortran))
            return inst.value
        if isinstance(inst, _DType):
            self._np_dtype_state(inst, state)
            return inst
        if type(inst) is collections.OrderedDict:
            # torch.save'd state dicts carry their `_metadata` attribute this way; not needed
            if type(state) is not dict:
                raise ReadError(f"an OrderedDict built with a {_typename(state)}")
            return inst
        raise ReadError(f"the pickle sets the state of a {_typename(inst)}, which is refused")

    def persistent_load(self, pid: Any) -> Any:
        if self._storages is None:
            raise ReadError(
                "the pickle references external data (a persistent id), which this " "kind of file does not have"
            )
        if type(pid) is not tuple or not pid:
            raise ReadError(f"a persistent id that is a {_typename(pid)}")
        tag = pid[0].decode("ascii") if isinstance(pid[0], bytes) else pid[0]
        if tag == "module":
            raise ReadError("the file holds a pickled nn.Module (its code), not a state dict")
        if tag != "storage":
            raise ReadError(f"a persistent id of kind {tag!r}")
        return self._storages(pid)

    # -- containers and plain values

    def _ordered_dict(self, args: tuple) -> collections.OrderedDict:
        if not args:
            return collections.OrderedDict()
        if len(args) == 1 and type(args[0]) in (list, tuple):
            od = collections.OrderedDict()
            for pair in args[0]:
                if type(pair) not in (list, tuple) or len(pair) != 2:
                    raise ReadError("an OrderedDict item that is not a (key, value) pair")
                _check_key(pair[0])
                od[pair[0]] = pair[1]
            return od
        raise ReadError("collections.OrderedDict called with unexpected arguments")

    def _set(self, args: tuple) -> set:
        if not args:
            return set()
        if len(args) == 1 and type(args[0]) in (list, tuple):
            for x in args[0]:
                _check_key(x)
            return set(args[0])
        raise ReadError("set called with unexpected arguments")

    def _frozenset(self, args: tuple) -> frozenset:
        return frozenset(self._set(args))

    def _bytearray(self, args: tuple) -> bytes:
        if not args:
            return b""
        if len(args) == 1 and isinstance(args[0], bytes):
            return args[0]
        if len(args) == 2 and isinstance(args[0], str) and _is(args[1], "latin-1", "latin1"):
            return args[0].encode("latin-1")
        if args and _is_int(args[0]):
            raise ReadError(
                f"the pickle calls bytearray({args[0]}), which would allocate "
                f"{args[0]} bytes that are not in the file; refused"
            )
        raise ReadError("bytearray called with unexpected arguments")

    def _bytes(self, args: tuple) -> bytes:
        # protocol 2 writes b"" as bytes() and other bytes through _codecs.encode
        if not args:
            return b""
        if len(args) == 1 and isinstance(args[0], bytes):
            return args[0]
        return self._codecs_encode(args)

    def _codecs_encode(self, args: tuple) -> bytes:
        if len(args) == 2 and isinstance(args[0], str) and _is(args[1], "latin-1", "latin1"):
            return args[0].encode("latin-1")
        raise ReadError("_codecs.encode called with unexpected arguments")

    def _size(self, args: tuple) -> tuple:
        if len(args) == 1:
            return _int_tuple(args[0], "size")
        raise ReadError("torch.Size called with unexpected arguments")

    def _device(self, args: tuple) -> str:
        if len(args) == 1 and type(args[0]) is str:
            return args[0]
        if len(args) == 2 and type(args[0]) is str and _is_int(args[1]):
            return f"{args[0]}:{args[1]}"
        raise ReadError("torch.device called with unexpected arguments")

    def _counter(self, args: tuple) -> collections.Counter:
        if not args:
            return collections.Counter()
        if len(args) == 1 and type(args[0]) is dict:
            c: collections.Counter = collections.Counter()
            dict.update(c, args[0])
            return c
        raise ReadError("collections.Counter called with unexpected arguments")

    def _defaultdict(self, args: tuple) -> dict:
        if len(args) <= 1 and (
            not args or args[0] is None or (isinstance(args[0], _Global) and args[0].qualname in self._inert)
        ):
            return {}  # read as a plain dict: its items follow as SETITEMS
        raise ReadError("collections.defaultdict called with unexpected arguments")

    def _build_list(self, args: tuple) -> list:
        if len(args) == 1 and type(args[0]) is list:
            return args[0]
        raise ReadError("a TorchScript list builder called with unexpected arguments")

    def _restore_type_tag(self, args: tuple) -> Any:
        if len(args) == 2 and isinstance(args[1], str):
            return args[0]
        raise ReadError("restore_type_tag called with unexpected arguments")

    # -- tensors

    def _view(self, storage: Any, offset: Any, size: Any, stride: Any) -> Any:
        if not isinstance(storage, StorageRef):
            raise ReadError(f"a tensor whose storage is a {_typename(storage)}")
        size = _int_tuple(size, "size")
        stride = _int_tuple(stride, "stride")
        if len(size) != len(stride):
            raise ReadError("a tensor whose size and stride have different lengths")
        if not _is_int(offset) or not 0 <= offset < MAX_EXTENT:
            raise ReadError("a tensor with a negative or non-integer storage offset")
        numel = math.prod(size)
        extent = 0 if numel == 0 else offset + 1 + sum((s - 1) * st for s, st in zip(size, stride))
        if extent > storage.numel or offset > storage.numel:
            raise ReadError(
                f"a tensor of size {list(size)} (stride {list(stride)}, offset {offset}) "
                f"reaches past its storage of {storage.numel} elements"
            )
        esize = _elem_size(storage.dtype)
        self.view_bytes += numel * esize
        if self.view_bytes > 4 * self.storage_bytes + VIEW_SLACK_BYTES:
            raise ReadError(
                "the tensors are views covering far more than the storage bytes in the "
                "file (refused: it would allocate more than the file holds)"
            )
        if self.deferred:
            return _DEFERRED
        if numel == 0:
            return torch.empty(size, dtype=storage.dtype)
        return storage.tensor().as_strided(size, stride, offset)

    def _rebuild_tensor_v2(self, args: tuple) -> Any:
        if len(args) not in (6, 7):
            raise ReadError("torch._utils._rebuild_tensor_v2 called with unexpected arguments")
        storage, offset, size, stride, requires_grad, hooks = args[:6]
        if not _empty_mapping(hooks) or (len(args) == 7 and not _empty_mapping(args[6])):
            raise ReadError("a tensor with backward hooks or metadata, which is refused")
        return self._view(storage, offset, size, stride)

    def _rebuild_tensor(self, args: tuple) -> Any:
        if len(args) != 4:
            raise ReadError("torch._utils._rebuild_tensor called with unexpected arguments")
        return self._view(*args)

    def _rebuild_parameter(self, args: tuple) -> Any:
        if len(args) not in (3, 4) or not isinstance(args[0], (torch.Tensor, _Deferred)):
            raise ReadError("torch._utils._rebuild_parameter called with unexpected arguments")
        if not _empty_mapping(args[2]):
            raise ReadError("a parameter with backward hooks, which is refused")
        return args[0]

    def _rebuild_from_type_v2(self, args: tuple) -> Any:
        if (
            len(args) != 4
            or not isinstance(args[0], _Global)
            or not isinstance(args[1], _Global)
            or type(args[2]) is not tuple
        ):
            raise ReadError("torch._tensor._rebuild_from_type_v2 called with unexpected arguments")
        func, cls, fargs, _state = args
        if cls.qualname not in ("torch.Tensor", "torch.nn.parameter.Parameter"):
            raise ReadError(f"a tensor of the subclass {cls.qualname}, which is refused")
        if func.qualname not in (
            "torch._utils._rebuild_tensor_v2",
            "torch._utils._rebuild_tensor",
            "torch._utils._rebuild_parameter",
        ):
            raise ReadError(f"a tensor rebuilt by {func.qualname}, which is refused")
        return self.call(func, fargs)

    # -- numpy

    def _np_dtype(self, args: tuple) -> _DType:
        if not 1 <= len(args) <= 3:
            raise ReadError("numpy.dtype called with unexpected arguments")
        return _DType(_numpy_dtype(args[0]))

    def _np_dtype_state(self, inst: _DType, state: Any) -> None:
        if type(state) is not tuple or len(state) not in (8, 9) or not _is(state[0], 3, 4):
            raise ReadError("a numpy dtype state of an unknown form")
        endian, subarray, names, fields = state[1:5]
        if subarray is not None or names is not None or fields is not None:
            raise ReadError(
                "a structured or sub-array numpy dtype, which is refused (only plain " "numeric arrays are read)"
            )
        if len(state) == 9 and not _empty_mapping(state[8]):
            raise ReadError("a numpy dtype with metadata, which is refused")
        if _is(endian, "<", ">"):
            inst.dtype = inst.dtype.newbyteorder(endian)
        elif not _is(endian, "|", "="):
            raise ReadError(f"a numpy dtype with byte order {endian!r}")

    def _np_reconstruct(self, args: tuple) -> _PendingArray:
        if len(args) != 3 or not isinstance(args[0], _Global) or args[0].qualname != "numpy.ndarray":
            raise ReadError("numpy's _reconstruct called with unexpected arguments (only " "numpy.ndarray is rebuilt)")
        return _PendingArray()

    def _make_array(self, raw: Any, dtype: Any, shape: Any, fortran: bool) -> np.ndarray:
        if not isinstance(dtype, _DType):
            raise ReadError(f"a numpy array whose dtype is a {_typename(dtype)}")
        if type(shape) not in (tuple, list) or len(shape) > MAX_DIMS or not all(_is_int(d) and d >= 0 for d in shape):
            raise ReadError("a numpy array whose shape is not a tuple of non-negative integers")
        if isinstance(raw, str):
            try:
                raw = raw.encode("latin-1")
            except UnicodeEncodeError:
                raise ReadError("a numpy array whose data string is not latin-1") from None
        if not isinstance(raw, bytes):
            raise ReadError(f"a numpy array whose data is a {_typename(raw)} (object arrays are " "refused)")
        need = math.prod(shape) * dtype.dtype.itemsize
        if need != len(raw):
            raise ReadError(
                f"a numpy array of shape {list(shape)} and dtype {dtype.dtype} needs "
                f"{need} bytes; the file has {len(raw)} for it"
            )
        flat = np.frombuffer(raw, dtype=dtype.dtype)
        if dtype.dtype.kind == "b":
            flat = np.frombuffer(raw, dtype=np.uint8) != 0
        arr = flat.reshape(tuple(shape), order="F" if fortran else "C")
        return arr.astype(arr.dtype.newbyteorder("="), order="C", copy=True)

    def _np_scalar(self, args: tuple) -> Any:
        if len(args) != 2 or not isinstance(args[0], _DType):
            raise ReadError("numpy's scalar called with unexpected arguments")
        return self._make_array(args[1], args[0], (), False)[()].item()

    def _np_frombuffer(self, args: tuple) -> np.ndarray:
        if len(args) != 4 or not _is(args[3], "C", "F"):
            raise ReadError("numpy's _frombuffer called with unexpected arguments")
        return self._make_array(args[0], args[1], args[2], args[3] == "F")


# ------------------------------------------------------------------------------------------------
# Files


def _unpickle(f, start: int, end: int, reader: _Reader, encoding: str) -> Tuple[Any, int]:
    src = _Source(f, start, end)
    obj = Unpickler(src, reader, encoding).load()
    return obj, src.pos


def load_pickle(path: str, f, size: int, encoding: str = "latin1") -> Any:
    """A plain pickle file (numpy arrays, containers, numbers, strings)."""
    obj, _ = _unpickle(f, 0, size, _Reader(), encoding)
    return obj


_ZIP_MAGIC = b"PK\x03\x04"
_LEGACY_MAGIC = 0x1950A86A20F9469CFC6C
_LEGACY_PROTOCOL = 1001
_KEY_RE = re.compile(r"[A-Za-z0-9_.-]{1,64}")


def _storage_type(v: Any) -> torch.dtype:
    if isinstance(v, _Global) and v.qualname.startswith("torch.") and v.qualname[6:] in _STORAGE_TYPES:
        return _STORAGE_TYPES[v.qualname[6:]]
    raise ReadError(f"a storage of type {_typename(v)}")


class ZipArchive:
    """torch.save's / TorchScript's zip layout, records read with their sizes checked."""

    def __init__(self, f, size: int):
        self.f, self.size = f, size
        try:
            self.zf = zipfile.ZipFile(f)
            infos = self.zf.infolist()
        except (
            zipfile.BadZipFile,
            zipfile.LargeZipFile,
            OSError,
            ValueError,
            EOFError,
            struct.error,
            NotImplementedError,
            UnicodeDecodeError,
            RuntimeError,
        ) as e:
            raise ReadError(f"a damaged or truncated zip archive ({e})") from None
        self.infos = {i.filename: i for i in infos}
        pkls = [n for n in self.infos if re.fullmatch(r"[^/]+/data\.pkl", n)]
        if len(pkls) != 1:
            if any(n.endswith("/model.json") for n in self.infos):
                raise ReadError(
                    "a TorchScript archive of the format before PyTorch 1.4 "
                    "(model.json), which is not read; save it again with a newer torch"
                )
            raise ReadError(
                "a zip archive that is not a PyTorch file (no single <name>/data.pkl)"
                if not pkls
                else "a zip archive with several data.pkl records"
            )
        self.prefix = pkls[0][: -len("data.pkl")]
        self.torchscript = (
            any(n.startswith(self.prefix + "code/") for n in self.infos)
            or (self.prefix + "constants.pkl") in self.infos
        )
        order = self.infos.get(self.prefix + "byteorder")
        self.big_endian = order is not None and self.read(order.filename, 16).strip() == b"big"

    def read(self, name: str, max_bytes: Optional[int] = None) -> bytes:
        info = self.infos.get(name)
        if info is None:
            raise ReadError(f"the archive has no record {name}")
        if info.compress_type != zipfile.ZIP_STORED:
            raise ReadError(f"record {name} is compressed, which torch never writes")
        if info.file_size != info.compress_size or info.header_offset + info.file_size > self.size:
            raise ReadError(f"record {name} claims {info.file_size} bytes past the end of the " "archive (truncated?)")
        n = info.file_size if max_bytes is None else min(max_bytes, info.file_size)
        try:
            with self.zf.open(info) as fh:
                data = fh.read(n)
        except (
            zipfile.BadZipFile,
            OSError,
            ValueError,
            EOFError,
            struct.error,
            NotImplementedError,
            RuntimeError,
        ) as e:  # RuntimeError: an encrypted record
            raise ReadError(f"record {name} cannot be read ({e})") from None
        if len(data) != n:
            raise ReadError(f"record {name} is truncated")
        return data

    def storage(self, pid: tuple, reader: _Reader, cache: Dict[str, StorageRef]) -> StorageRef:
        if len(pid) != 5:
            raise ReadError("a storage persistent id of an unknown form")
        _, stype, key, _location, numel = pid
        dtype = _storage_type(stype)
        if type(key) is not str or not _KEY_RE.fullmatch(key) or not _is_int(numel) or numel < 0:
            raise ReadError("a storage persistent id with a bad key or size")
        ref = cache.get(key)
        if ref is not None:
            if ref.dtype != dtype or ref.numel != numel:
                raise ReadError(f"storage {key} is used with two types or sizes")
            return ref
        name = f"{self.prefix}data/{key}"
        info = self.infos.get(name)
        if info is None:
            raise ReadError(f"the archive has no record {name} for a tensor's storage")
        nbytes = numel * _elem_size(dtype)
        if nbytes > info.file_size:
            raise ReadError(
                f"storage {key} claims {numel} {dtype} elements ({nbytes} bytes); its " f"record has {info.file_size}"
            )
        reader.storage_bytes += nbytes
        big = self.big_endian
        ref = StorageRef(key, dtype, numel, lambda: tensor_from_bytes(self.read(name, nbytes), dtype, big))
        cache[key] = ref
        return ref

    def load_data_pkl(self) -> Any:
        data = self.read(self.prefix + "data.pkl")
        cache: Dict[str, StorageRef] = {}
        reader = _Reader(torchscript=self.torchscript)
        reader._storages = lambda pid: self.storage(pid, reader, cache)
        obj, _ = _unpickle(io.BytesIO(data), 0, len(data), reader, "utf-8")
        return obj


def _load_legacy(f, size: int) -> Any:
    """torch.serialization._legacy_load's layout, storages checked against the file's bytes."""
    plain = _Reader()
    pos = 0
    try:
        magic, pos = _unpickle(f, pos, size, plain, "utf-8")
    except ReadError:
        raise ReadError("neither a zip archive nor torch's legacy format (not a PyTorch file)") from None
    if magic != _LEGACY_MAGIC:
        raise ReadError("neither a zip archive nor torch's legacy format (not a PyTorch file)")
    proto, pos = _unpickle(f, pos, size, plain, "utf-8")
    if proto != _LEGACY_PROTOCOL:
        raise ReadError(f"torch legacy format protocol {proto!r} (expected {_LEGACY_PROTOCOL})")
    sys_info, pos = _unpickle(f, pos, size, plain, "utf-8")
    if type(sys_info) is not dict:
        raise ReadError("torch legacy format without its system information")
    big = sys_info.get("little_endian", True) is False
    main_start = pos

    specs: Dict[str, Tuple[torch.dtype, int]] = {}

    def record(pid: tuple) -> Tuple[str, torch.dtype, int, Any]:
        if len(pid) != 6:
            raise ReadError("a storage persistent id of an unknown form")
        _, stype, key, _location, numel, view = pid
        dtype = _storage_type(stype)
        if type(key) is not str or not _KEY_RE.fullmatch(key) or not _is_int(numel) or numel < 0:
            raise ReadError("a storage persistent id with a bad key or size")
        old = specs.get(key)
        if old is not None and old != (dtype, numel):
            raise ReadError(f"storage {key} is used with two types or sizes")
        specs[key] = (dtype, numel)
        return key, dtype, numel, view

    def view_of(ref: StorageRef, view: Any, reader: _Reader) -> StorageRef:
        if view is None:
            return ref
        if type(view) is not tuple or len(view) != 3:
            raise ReadError("a storage view of an unknown form")
        vkey, voff, vsize = view
        if (
            not (_is_int(voff) and _is_int(vsize) and voff >= 0 and vsize >= 0 and voff + vsize <= ref.numel)
            or type(vkey) is not str
        ):
            raise ReadError("a storage view outside its storage")
        if reader.deferred:
            return StorageRef(vkey, ref.dtype, vsize, None)
        return StorageRef(vkey, ref.dtype, vsize, lambda: ref.tensor()[voff : voff + vsize])

    # pass 1: the object's storages (types and sizes), nothing allocated
    first = _Reader(deferred=True)

    def storage1(pid: tuple) -> StorageRef:
        new = len(pid) == 6 and pid[2] not in specs
        key, dtype, numel, view = record(pid)
        if new:
            first.storage_bytes += numel * _elem_size(dtype)
        return view_of(StorageRef(key, dtype, numel, None), view, first)

    first._storages = storage1
    _, main_end = _unpickle(f, main_start, size, first, "utf-8")
    keys, pos = _unpickle(f, main_end, size, plain, "utf-8")
    if type(keys) is not list or not all(type(k) is str for k in keys):
        raise ReadError("torch legacy format without its list of storage keys")
    offsets: Dict[str, int] = {}
    for key in keys:
        if key not in specs:
            raise ReadError(f"storage {key} has data but no tensor uses it")
        dtype, numel = specs[key]
        if pos + 8 > size:
            raise ReadError(f"storage {key} is truncated")
        f.seek(pos)
        count = struct.unpack("<q", f.read(8))[0]
        if count != numel:
            raise ReadError(f"storage {key} holds {count} elements; its tensors expect {numel}")
        nbytes = numel * _elem_size(dtype)
        if pos + 8 + nbytes > size:
            raise ReadError(f"storage {key} claims {nbytes} bytes past the end of the file " "(truncated?)")
        offsets[key] = pos + 8
        pos += 8 + nbytes
    missing = sorted(set(specs) - set(offsets))
    if missing:
        raise ReadError(f"storage {missing[0]} is used but its data is not in the file")

    # pass 2: the object with its tensors
    cache: Dict[str, StorageRef] = {}

    def load_storage(key: str, dtype: torch.dtype, numel: int) -> torch.Tensor:
        here = f.tell()
        try:
            f.seek(offsets[key])
            data = f.read(numel * _elem_size(dtype))
        finally:
            f.seek(here)
        return tensor_from_bytes(data, dtype, big)

    second = _Reader()

    def storage2(pid: tuple) -> StorageRef:
        key, dtype, numel, view = record(pid)
        ref = cache.get(key)
        if ref is None:
            ref = StorageRef(key, dtype, numel, lambda: load_storage(key, dtype, numel))
            second.storage_bytes += numel * _elem_size(dtype)
            cache[key] = ref
        return view_of(ref, view, second)

    second._storages = storage2
    f.seek(main_start)
    obj, _ = _unpickle(f, main_start, main_end, second, "utf-8")
    return obj


def load_torch_file(path: str, f, size: int) -> Tuple[Any, bool]:
    """(the top-level object, whether the file is a TorchScript archive) of a torch.save file or
    a TorchScript archive, read as data."""
    head = f.read(4)
    f.seek(0)
    if head == _ZIP_MAGIC:
        archive = ZipArchive(f, size)
        return archive.load_data_pkl(), archive.torchscript
    if head[:1] != b"\x80":
        raise ReadError("neither a zip archive nor torch's legacy format (not a PyTorch file)")
    return _load_legacy(f, size), False


def script_state_dict(obj: ScriptObject) -> "collections.OrderedDict[str, torch.Tensor]":
    """The tensors of a TorchScript object tree under their dotted attribute names (what
    ScriptModule.state_dict() gives for parameters and buffers)."""
    out: "collections.OrderedDict[str, torch.Tensor]" = collections.OrderedDict()
    visits = 0

    def walk(o: ScriptObject, prefix: str, depth: int) -> None:
        nonlocal visits
        if depth > MAX_SCRIPT_DEPTH:
            raise ReadError(f"TorchScript modules nested more than {MAX_SCRIPT_DEPTH} deep")
        if type(o.state) not in (dict, collections.OrderedDict):
            return  # a custom __getstate__: nothing readable as attributes
        for k, v in o.state.items():
            visits += 1
            if visits > MAX_SCRIPT_VISITS:
                raise ReadError("the TorchScript object tree is too large (shared submodules?)")
            if type(k) is not str:
                continue
            if isinstance(v, torch.Tensor):
                out[prefix + k] = v
            elif isinstance(v, ScriptObject):
                walk(v, prefix + k + ".", depth + 1)

    walk(obj, "", 0)
    return out
