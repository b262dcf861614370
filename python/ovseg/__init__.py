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
import math as _math
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
    "UNLABELED",
    "Analysis",
    "CancelledError",
    "Error",
    "ErrorCode",
    "FileError",
    "ImageError",
    "InvalidArgumentError",
    "Model",
    "ModelError",
    "ModelInfo",
    "Result",
    "Segment",
    "Tokenizer",
    "dataset_classes",
    "dataset_names",
    "decode_image",
    "load_image",
    "segment_video",
    "set_log_level",
    "tokenize",
    "version",
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


def _error(kind, code, message):
    e = kind(message)
    e.code = code
    return e


def segment_video(model, video, classes, *, every=1, max_frames=0, start=0.0, **options):
    """segment_video(model, video, classes, *, every=1, max_frames=0, start=0.0, **options) -> iterator

    Segments a video file frame by frame, as ``ovseg segment VIDEO`` does, and yields
    ``(frame_index, Result)`` for each segmented frame; ``frame_index`` is the frame's index in the
    video (0 = its first frame). Frames are read one at a time (memory stays flat whatever the
    length) with OpenCV's FFmpeg backend: this needs OpenCV's Python module (``cv2``, Debian
    ``python3-opencv``). Also callable as ``model.segment_video(video, classes, ...)``.

    start: the first frame at or after this time (seconds). max_frames: at most this many frames
    from there (0 = to the end). every: segment frames start, start+every, ... (the others are
    read and skipped). ``options`` go to Model.segment (mode, mask_threshold, ensemble_weight,
    keep_scores, progress); the text features are computed once, by the first frame.

    Raises FileError when the file does not open as a video, ImageError when decoding stops
    before the frame count the container announces (after yielding the frames that decoded),
    InvalidArgumentError for a bad every/max_frames/start.
    """
    try:
        import cv2
    except ImportError as e:
        raise ImportError("ovseg.segment_video needs OpenCV's Python module (cv2; Debian python3-opencv)") from e
    if isinstance(every, bool) or not isinstance(every, int) or every < 1:
        raise _error(
            InvalidArgumentError, ErrorCode.INVALID_ARGUMENT, f"segment_video: every must be an int >= 1, not {every!r}"
        )
    if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 0:
        raise _error(
            InvalidArgumentError,
            ErrorCode.INVALID_ARGUMENT,
            f"segment_video: max_frames must be an int >= 0, not {max_frames!r}",
        )
    if not isinstance(start, (int, float)) or not _math.isfinite(start) or start < 0:
        raise _error(
            InvalidArgumentError,
            ErrorCode.INVALID_ARGUMENT,
            f"segment_video: start must be seconds >= 0, not {start!r}",
        )
    classes = list(classes)
    path = _os.fspath(video)
    # An absolute path: FFmpeg would read "http:x.mp4" as a URL.
    cap = cv2.VideoCapture(_os.path.abspath(path), cv2.CAP_FFMPEG)
    try:
        if not cap.isOpened():
            raise _error(
                FileError,
                ErrorCode.IO,
                f"{path}: no video stream that OpenCV/FFmpeg decodes (not a video, "
                "an empty, damaged or audio-only file, or an unsupported codec)",
            )
        announced = cap.get(cv2.CAP_PROP_FRAME_COUNT)
        count = int(round(announced)) if _math.isfinite(announced) and 0 < announced < 1e12 else 0
        fps = cap.get(cv2.CAP_PROP_FPS)
        if not (_math.isfinite(fps) and 0 < fps <= 1000):
            fps = 25.0
        index = 0
        if start > 0:
            target = int(_math.ceil(start * fps - 1e-6))
            if count and target >= count:
                raise _error(
                    InvalidArgumentError,
                    ErrorCode.INVALID_ARGUMENT,
                    f"{path}: start {start} s is at or after the video's end ({count} frames)",
                )
            if not (cap.set(cv2.CAP_PROP_POS_FRAMES, target) and round(cap.get(cv2.CAP_PROP_POS_FRAMES)) == target):
                cap.release()
                cap = cv2.VideoCapture(_os.path.abspath(path), cv2.CAP_FFMPEG)
                for k in range(target):
                    if not cap.grab():
                        raise _error(
                            ImageError,
                            ErrorCode.BAD_IMAGE,
                            f"{path}: decoding stopped at frame {k}, before start's frame {target}",
                        )
            index = target
        pos = 0
        while max_frames == 0 or pos < max_frames:
            if pos % every == 0:
                ok, frame = cap.read()
            else:
                ok, frame = cap.grab(), None
            if not ok:
                if count and index < count:
                    raise _error(
                        ImageError,
                        ErrorCode.BAD_IMAGE,
                        f"{path}: decoding stopped at frame {index} of the {count} the container announces "
                        "(a truncated or damaged file)",
                    )
                if pos == 0:
                    raise _error(ImageError, ErrorCode.BAD_IMAGE, f"{path}: the video has no frames")
                return
            if frame is not None:
                yield index, model.segment(frame, classes, channel_order="bgr", **options)
            pos += 1
            index += 1
    finally:
        cap.release()


Model.segment_video = segment_video
