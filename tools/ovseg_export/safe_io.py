"""Opening the exporter's input files and choosing its output directory safely.

Inputs: only regular files are opened (a FIFO would block the exporter forever, a device could
be read without end), with a size cap per kind of file, and gzip data is decompressed up to a cap
(the C++ tokenizer's 256 MB), never further.

Output: the exporter replaces --out as a whole, so it may replace only what it wrote itself: an
empty directory or an ovseg bundle of the same kind holding nothing but its own files. `.`,
`..`, `/`, the home directory, a directory that holds an input (the checkpoint, ...) and anything
else are refused before any export work.
"""
import errno
import fcntl
import gzip
import json
import os
import stat
import zlib
from typing import IO, Iterable, List, Optional

# Caps on what is read from each kind of input file.
MAX_CONFIG_BYTES = 1 << 20  # a YAML config (the official ones are 4 KB)
MAX_JSON_BYTES = 16 << 20  # --templates-file, --arch / --clip-arch files, manifests
MAX_GZIP_BYTES = 256 << 20  # decompressed --bpe-vocab (as src/text/clip_tokenizer.cpp)


class InputError(ValueError):
    """An input file that cannot be used; the message names the file."""


def _noun(what: str) -> str:
    return what if "file" in what.split() else what + " file"


def open_regular(path: str, what: str, mode: str = "rb") -> IO:
    """The file opened for reading if it is a regular file (or a link to one). FIFOs, sockets,
    devices and directories are refused without blocking: the open itself is non-blocking.
    `what` names the input in messages ("config", "checkpoint", "--arch file")."""
    what = _noun(what)
    flags = os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_CLOEXEC", 0)
    try:
        fd = os.open(path, flags)
    except OSError as e:
        if e.errno == errno.ENOENT:
            raise InputError(f"{path}: no such {what}") from None
        raise InputError(f"{path}: cannot open the {what} ({e.strerror or e})") from None
    try:
        st = os.fstat(fd)
        if not stat.S_ISREG(st.st_mode):
            kind = (
                "a directory"
                if stat.S_ISDIR(st.st_mode)
                else "a FIFO"
                if stat.S_ISFIFO(st.st_mode)
                else "a device"
                if stat.S_ISCHR(st.st_mode) or stat.S_ISBLK(st.st_mode)
                else "a socket"
                if stat.S_ISSOCK(st.st_mode)
                else "a special file"
            )
            raise InputError(f"{path}: the {what} is {kind}, not a regular file")
        if hasattr(os, "O_NONBLOCK"):
            fl = fcntl.fcntl(fd, fcntl.F_GETFL)
            fcntl.fcntl(fd, fcntl.F_SETFL, fl & ~os.O_NONBLOCK)
        f = os.fdopen(fd, mode) if "b" in mode else os.fdopen(fd, mode, encoding="utf-8")
    except BaseException:
        os.close(fd)
        raise
    return f


def check_regular(path: str, what: str) -> None:
    """open_regular without keeping the file open (for files other code reads later)."""
    open_regular(path, what).close()


def read_regular(path: str, what: str, max_bytes: int) -> bytes:
    """The whole file, refused if it is not a regular file or larger than max_bytes."""
    f = open_regular(path, what)
    what = _noun(what)
    with f:
        size = os.fstat(f.fileno()).st_size
        if size > max_bytes:
            raise InputError(f"{path}: the {what} is {size} bytes; more than the {_mb(max_bytes)} " "that are read")
        data = f.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise InputError(f"{path}: the {what} is larger than the {_mb(max_bytes)} that are read")
    return data


def read_gzip(path: str, what: str, max_bytes: int = MAX_GZIP_BYTES) -> bytes:
    """The decompressed content of a gzip file, refused beyond max_bytes (a small "gzip bomb"
    would otherwise decompress to gigabytes)."""
    raw = open_regular(path, what)
    what = _noun(what)
    with raw:
        try:
            with gzip.GzipFile(fileobj=raw, mode="rb") as f:
                data = f.read(max_bytes + 1)
        except (OSError, EOFError, zlib.error) as e:
            raise InputError(f"{path}: the {what} is not a readable gzip file ({e})") from None
    if len(data) > max_bytes:
        raise InputError(
            f"{path}: the {what} decompresses to more than {_mb(max_bytes)} "
            "(the limit the C++ tokenizer also applies)"
        )
    return data


def read_json_file(path: str, what: str, max_bytes: int = MAX_JSON_BYTES):
    data = read_regular(path, what, max_bytes)
    what = _noun(what)
    try:
        return json.loads(data.decode("utf-8"))
    except UnicodeDecodeError as e:
        raise InputError(f"{path}: the {what} is not UTF-8 text ({e.reason})") from None
    except ValueError as e:
        raise InputError(f"{path}: the {what} is not valid JSON ({e})") from None
    except RecursionError:
        raise InputError(f"{path}: the {what} is nested too deeply") from None


def _mb(n: int) -> str:
    return f"{n / (1 << 20):g} MiB"


# ------------------------------------------------------------------------------------------------
# --out


class OutDirError(ValueError):
    """--out names a place the exporter must not replace."""


def _is_within(path: str, parent: str) -> bool:
    try:
        return os.path.commonpath([path, parent]) == parent
    except ValueError:  # different drives
        return False


def check_out_dir(out: str, bundle_format: str, inputs: Iterable[Optional[str]] = (), option: str = "--out") -> str:
    """The absolute path the bundle will be written to, after checking that replacing it loses
    nothing ovseg did not write. `bundle_format` is the manifest's "format" of the bundles this
    exporter writes ("ovseg-bundle" / "ovseg-sam-bundle"); `inputs` are the files the export
    reads (a directory holding one of them is never replaced)."""
    if not out or not out.strip():
        raise OutDirError(f"{option}: an empty path")
    if out.startswith("~"):
        raise OutDirError(
            f"{option} {out}: starts with '~', which was not expanded to a home " "directory; write the path out"
        )
    if "\0" in out:
        raise OutDirError(f"{option}: the path contains a NUL byte")
    absolute = os.path.abspath(out)
    real = os.path.realpath(absolute)
    name = os.path.basename(absolute)
    if name in ("", ".", ".."):
        raise OutDirError(f"{option} {out}: names a directory by '.' or '..'; name the bundle " "directory itself")
    cwd = os.path.realpath(os.getcwd())
    home = os.path.realpath(os.path.expanduser("~"))
    if real == os.path.realpath(os.sep) or os.path.dirname(real) == real:
        raise OutDirError(f"{option} {out}: is the file-system root")
    if real == home or _is_within(home, real):
        raise OutDirError(f"{option} {out}: is the home directory or holds it")
    if _is_within(cwd, real):
        raise OutDirError(f"{option} {out}: is the working directory or holds it")
    for p in inputs:
        if p and _is_within(os.path.realpath(os.path.abspath(p)), real):
            raise OutDirError(f"{option} {out}: holds the input {p}; the bundle would replace it")
    if not os.path.lexists(absolute):
        return absolute
    if os.path.islink(absolute):
        raise OutDirError(f"{option} {out}: is a symbolic link; name the directory itself")
    st = os.lstat(absolute)
    if not stat.S_ISDIR(st.st_mode):
        raise OutDirError(f"{option} {out}: exists and is not a directory; it is not replaced")
    try:
        entries = sorted(os.listdir(absolute))
    except OSError as e:
        raise OutDirError(f"{option} {out}: cannot list the directory ({e.strerror or e})") from None
    if not entries:
        return absolute
    manifest_path = os.path.join(absolute, "manifest.json")
    if "manifest.json" not in entries:
        raise OutDirError(
            f"{option} {out}: a non-empty directory that is not an ovseg bundle "
            f"(no manifest.json; it holds {_listing(entries)}); it is not replaced: "
            "choose a new directory or an existing bundle"
        )
    try:
        manifest = read_json_file(manifest_path, "bundle manifest")
    except InputError as e:
        raise OutDirError(f"{option} {out}: not an ovseg bundle ({e}); it is not replaced") from None
    fmt = manifest.get("format") if isinstance(manifest, dict) else None
    if fmt != bundle_format:
        got = f"a bundle of format {fmt!r}" if isinstance(fmt, str) else "not an ovseg bundle"
        raise OutDirError(f"{option} {out}: {got}, not {bundle_format!r}; it is not replaced")
    own = {"manifest.json"}
    for key in ("files", "modules"):
        section = manifest.get(key)
        if isinstance(section, dict):
            own.update(k for k in section.keys() if isinstance(k, str))
            if key == "modules":
                own.update(v for v in section.values() if isinstance(v, str))
    foreign: List[str] = []
    for e in entries:
        p = os.path.join(absolute, e)
        if e not in own or os.path.islink(p) or not os.path.isfile(p):
            foreign.append(e)
    if foreign:
        raise OutDirError(
            f"{option} {out}: an ovseg bundle that also holds {_listing(foreign)}, "
            "which the exporter did not write; it is not replaced (move them away "
            "or choose another directory)"
        )
    return absolute


def _listing(names: List[str], n: int = 3) -> str:
    shown = ", ".join(names[:n])
    return shown + (f" and {len(names) - n} more" if len(names) > n else "")
