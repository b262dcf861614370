"""ovseg: open-vocabulary semantic segmentation (ov-seg, Liang et al., CVPR 2023) from Python.

The exact ov-seg outputs from a C++/LibTorch library: no detectron2, no CUDA build, no training
framework. Images and results are numpy arrays.

    import ovseg
    model = ovseg.Model.load("bundles/ovseg-swinB-vitL14")
    r = model.segment("photo.jpg", ["sky", "tree", "road", "red car"])
    r.labels            # H×W uint16: index into r.classes, or ovseg.UNLABELED
    r.segments          # the valid regions (query, class, score, area, box)

Errors are ovseg.Error (with .code, an ovseg.ErrorCode); InvalidArgumentError and ImageError are
also ValueErrors, FileError is also an OSError.
"""
from functools import lru_cache as _lru_cache
import os as _os

from ._ovseg import (  # noqa: F401
    UNLABELED,
    Analysis,
    CancelledError,
    Error,
    ErrorCode,
    FileError,
    ImageError,
    InvalidArgumentError,
    Model,
    ModelError,
    ModelInfo,
    Result,
    Segment,
    Tokenizer,
    dataset_classes,
    dataset_names,
    decode_image,
    load_image,
    set_log_level,
    version,
)

__version__ = version()

__all__ = [
    "UNLABELED", "Analysis", "CancelledError", "Error", "ErrorCode", "FileError", "ImageError", "InvalidArgumentError",
    "Model", "ModelError", "ModelInfo", "Result", "Segment", "Tokenizer", "dataset_classes", "dataset_names",
    "decode_image", "load_image",
    "set_log_level", "tokenize", "version",
]


@_lru_cache(maxsize=8)
def _tokenizer(path, kind):
    return Tokenizer(path, kind)


def tokenize(texts, vocab, context_length=None, truncate=False, kind=None):
    """tokenize(texts, vocab, context_length=None, truncate=False, kind=None) -> numpy.ndarray

    Token ids as CLIP's text tower sees them, like ``clip.tokenize``: int32 [N, context_length] with
    the start and end tokens, zero-padded (a single str gives N = 1).

    vocab: a model bundle directory (the tokenizer its manifest names, and its context length),
    CLIP's ``bpe_simple_vocab_16e6.txt.gz``, a Hugging Face directory (vocab.json + merges.txt) or a
    SentencePiece ``.model``. The loaded tokenizer is kept for the next call (use ovseg.Tokenizer
    for encode/decode). A text longer than the context raises InvalidArgumentError unless truncate.
    """
    path = _os.path.realpath(_os.fspath(vocab))
    return _tokenizer(path, kind).tokenize(texts, context_length, truncate)
