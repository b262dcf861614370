"""COCO run-length encoding for the tests, written from the published description of pycocotools'
maskApi (rleEncode, rleToString, rleFrString), independently of ovseg's C++ code. Debian has no
python3-pycocotools; where it is installed, the tests compare with it as well.

Masks are numpy arrays [H, W]; runs go over the pixels in column-major (Fortran) order, starting
with a (possibly empty) run of zeros.
"""
import numpy as np


def encode_counts(mask):
    flat = np.asarray(mask, dtype=np.uint8).reshape(-1, order="F") != 0
    counts, previous, run = [], False, 0
    for v in flat:
        if v != previous:
            counts.append(run)
            run, previous = 0, v
        run += 1
    counts.append(run)
    return counts


def counts_to_string(counts):
    out = []
    for i, count in enumerate(counts):
        x = count - counts[i - 2] if i > 2 else count
        while True:
            c = x & 0x1F
            x >>= 5  # Python's >> is arithmetic, as the C code's on a signed long
            more = x != -1 if c & 0x10 else x != 0
            if more:
                c |= 0x20
            out.append(chr(c + 48))
            if not more:
                break
    return "".join(out)


def string_to_counts(s):
    counts, p = [], 0
    while p < len(s):
        x, k, more = 0, 0, True
        while more:
            c = ord(s[p]) - 48
            x |= (c & 0x1F) << (5 * k)
            more = bool(c & 0x20)
            p += 1
            k += 1
            if not more and (c & 0x10):
                x |= -1 << (5 * k)
        if len(counts) > 2:
            x += counts[-2]
        counts.append(x)
    return counts


def decode(rle):
    """{"size": [h, w], "counts": str} → uint8 mask [h, w]."""
    h, w = rle["size"]
    flat = np.zeros(h * w, dtype=np.uint8)
    pos, value = 0, 0
    for count in string_to_counts(rle["counts"]):
        flat[pos : pos + count] = value
        pos += count
        value ^= 1
    assert pos == h * w, (pos, h * w)
    return flat.reshape((h, w), order="F")


def encode(mask):
    mask = np.asarray(mask)
    return {"size": [int(mask.shape[0]), int(mask.shape[1])], "counts": counts_to_string(encode_counts(mask))}
