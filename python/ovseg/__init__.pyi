# Type stub of the ovseg package (its native part is ovseg._ovseg), for editors and type checkers.
import os
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np
import numpy.typing as npt

__version__: str
UNLABELED: int  # 65535: the label of pixels that no region covers (demo mode)

_Path = Union[str, bytes, os.PathLike]
# A file path, or a uint8 array H×W×3 (RGB unless channel_order="bgr"), H×W×4 or H×W.
_ImageLike = Union[_Path, npt.NDArray[np.uint8]]

class ErrorCode:
    """What went wrong (a pybind11 enumeration)."""
    INVALID_ARGUMENT: "ErrorCode"
    IO: "ErrorCode"
    BAD_IMAGE: "ErrorCode"
    BAD_MODEL: "ErrorCode"
    BAD_DATA: "ErrorCode"
    RUNTIME: "ErrorCode"
    CANCELLED: "ErrorCode"
    @property
    def name(self) -> str: ...
    @property
    def value(self) -> int: ...
    def __int__(self) -> int: ...

class Error(Exception):
    """Every error of the ovseg library; .code says what went wrong."""
    code: ErrorCode

class InvalidArgumentError(Error, ValueError): ...
class FileError(Error, OSError): ...
class ImageError(Error, ValueError): ...
class ModelError(Error): ...
class CancelledError(Error): ...

def version() -> str: ...
def dataset_names() -> List[str]: ...
def dataset_classes(name: str) -> List[str]:
    """The class names of a dataset (ade150, ade847, pc59, pc459, voc20, coco171), in label order."""
def set_log_level(level: str) -> None:
    """"trace", "debug", "info" (default), "warn", "error" or "off"."""
def load_image(path: _Path) -> npt.NDArray[np.uint8]:
    """Decodes an image file like ov-seg (Pillow semantics, EXIF orientation): H×W×3 uint8 RGB."""
def decode_image(data: bytes, name: str = "<bytes>") -> npt.NDArray[np.uint8]:
    """Decodes an encoded image held in memory: H×W×3 uint8 RGB."""
def tokenize(texts: Union[str, Sequence[str]], vocab: _Path, context_length: Optional[int] = None,
             truncate: bool = False, kind: Optional[str] = None) -> npt.NDArray[np.int32]:
    """int32 [N, context_length] token ids with start/end tokens, zero-padded (like clip.tokenize)."""

class Segment:
    """One valid region of a result."""
    @property
    def query(self) -> int: ...
    @property
    def class_index(self) -> int: ...
    @property
    def class_name(self) -> str: ...
    @property
    def score(self) -> float: ...
    @property
    def area(self) -> int: ...
    @property
    def box(self) -> Tuple[int, int, int, int]:
        """(x0, y0, x1, y1), x1/y1 exclusive."""
    @property
    def selected(self) -> bool: ...

class Result:
    """What Model.segment() returns; the arrays are views of its buffers (no copy)."""
    @property
    def labels(self) -> npt.NDArray[np.uint16]:
        """H×W class indices into `classes`, or UNLABELED."""
    @property
    def scores(self) -> Optional[npt.NDArray[np.float32]]:
        """C×H×W score maps (channels = score_classes) with keep_scores=True, else None."""
    @property
    def class_pixels(self) -> npt.NDArray[np.int64]: ...
    @property
    def unlabeled_pixels(self) -> int: ...
    @property
    def classes(self) -> List[str]: ...
    @property
    def score_classes(self) -> List[str]: ...
    @property
    def segments(self) -> List[Segment]: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def resized_size(self) -> Tuple[int, int]: ...
    @property
    def timings(self) -> Dict[str, float]:
        """Milliseconds per stage: preprocess, proposals, text, regions, clip, post, total."""
    @property
    def mode(self) -> str: ...
    @property
    def mask_threshold(self) -> float: ...
    @property
    def ensemble_weight(self) -> float: ...

class ModelInfo:
    """What a bundle's manifest says."""
    @property
    def name(self) -> str: ...
    @property
    def bundle_dir(self) -> str: ...
    @property
    def format_version(self) -> int: ...
    @property
    def backbone(self) -> str: ...
    @property
    def clip_model(self) -> str: ...
    @property
    def num_queries(self) -> int: ...
    @property
    def embed_dim(self) -> int: ...
    @property
    def min_size_test(self) -> int: ...
    @property
    def max_size_test(self) -> int: ...
    @property
    def eval_mask_threshold(self) -> float: ...
    @property
    def eval_ensemble_weight(self) -> float: ...
    @property
    def demo_mask_threshold(self) -> float: ...
    @property
    def demo_ensemble_weight(self) -> float: ...
    @property
    def template_set(self) -> str: ...
    @property
    def num_templates(self) -> int: ...
    @property
    def source_sha256(self) -> str: ...
    @property
    def device(self) -> str: ...
    @property
    def precision(self) -> str: ...
    @property
    def fingerprint(self) -> str: ...
    @property
    def manifest(self) -> dict: ...

class Analysis:
    """The class-agnostic part of one image (Model.analyze); classify it with any class list."""
    @property
    def bytes(self) -> int: ...
    @property
    def width(self) -> int: ...
    @property
    def height(self) -> int: ...
    @property
    def num_regions(self) -> int: ...
    @property
    def mask_threshold(self) -> float: ...
    @property
    def clip_ensemble(self) -> bool: ...
    @property
    def model_fingerprint(self) -> str: ...
    @property
    def timings(self) -> Dict[str, float]: ...
    def save(self, path: _Path) -> None:
        """Writes it to a file (versioned, checksummed, exact float32), atomically."""
    @staticmethod
    def load(path: _Path) -> "Analysis":
        """Reads a saved analysis; ovseg.Error for a corrupt, truncated or foreign file."""

class Model:
    """A loaded model bundle; thread-safe, segment() releases the GIL."""
    @staticmethod
    def load(bundle: _Path, device: str = "cpu", precision: str = "fp32", threads: int = 0,
             text_cache: bool = True, cache_dir: Optional[_Path] = None, region_batch: int = 0) -> "Model":
        """Loads and validates a bundle directory written by ovseg-export."""
    def segment(self, image: _ImageLike, classes: Iterable[str], *, mode: str = "eval",
                mask_threshold: Optional[float] = None, ensemble_weight: Optional[float] = None,
                keep_scores: bool = False, channel_order: str = "rgb",
                progress: Optional[Callable[[str, float], Optional[bool]]] = None) -> Result:
        """Labels every pixel of `image` (a path, or H×W×3 uint8 RGB unless channel_order="bgr")
        with one of `classes`."""
    def analyze(self, image: _ImageLike, *, mode: str = "eval", mask_threshold: Optional[float] = None,
                clip_ensemble: Optional[bool] = None, channel_order: str = "rgb",
                progress: Optional[Callable[[str, float], Optional[bool]]] = None) -> Analysis:
        """The class-agnostic stages once (proposals, regions, CLIP embeddings); GIL released."""
    def classify(self, analysis: Analysis, classes: Iterable[str], *, mode: str = "eval",
                 mask_threshold: Optional[float] = None, ensemble_weight: Optional[float] = None,
                 clip_ensemble: Optional[bool] = None, keep_scores: bool = False,
                 progress: Optional[Callable[[str, float], Optional[bool]]] = None) -> Result:
        """segment()'s Result for these classes from an analysis, byte for byte, in milliseconds."""
    def text_features(self, classes: Iterable[str]) -> npt.NDArray[np.float32]:
        """float32 [K+1, E]: the classes' text features and the non-object embedding."""
    def prepare_classes(self, classes: Iterable[str]) -> float:
        """Computes and caches the text features now; returns the milliseconds spent."""
    def segment_video(self, video: _Path, classes: Iterable[str], *, every: int = 1, max_frames: int = 0,
                      start: float = 0.0, **options: Any) -> Iterator[Tuple[int, Result]]:
        """ovseg.segment_video(self, ...): (frame index in the video, Result) per segmented frame."""
    @property
    def info(self) -> ModelInfo: ...

class Tokenizer:
    """CLIP's byte-level BPE (exact) or a SentencePiece model."""
    def __init__(self, path: _Path, kind: Optional[str] = None) -> None: ...
    def encode(self, text: str) -> List[int]: ...
    def decode(self, ids: Sequence[int]) -> str: ...
    def tokenize(self, texts: Union[str, Sequence[str]], context_length: Optional[int] = None,
                 truncate: bool = False) -> npt.NDArray[np.int32]: ...
    @property
    def sot(self) -> int: ...
    @property
    def eot(self) -> int: ...
    @property
    def vocab_size(self) -> int: ...
    @property
    def kind(self) -> str: ...
    @property
    def context_length(self) -> int: ...

__all__: List[str]

def segment_video(model: Model, video: _Path, classes: Iterable[str], *, every: int = 1, max_frames: int = 0,
                  start: float = 0.0, **options: Any) -> Iterator[Tuple[int, Result]]:
    """Segments a video file frame by frame (needs cv2, Debian python3-opencv): a generator of
    (frame index in the video, Result) for frames start, start+every, ... (at most max_frames frames
    from the first frame at or after `start` seconds), one frame in memory at a time; `options` go to
    Model.segment. FileError: not a video; ImageError: decoding stopped early (after the frames that
    decoded)."""
