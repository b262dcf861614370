"""CLIP byte-level BPE tokenizer (docs/reference-behaviour.md §5.3), pure Python without `regex`/`ftfy`.

Exact for ASCII prompts. For other text the normalisation is an approximation of ftfy's
(NFC + the few fixes that matter for class names), which is enough for the exporter's tests and
the Python reference pipeline; the C++ tokenizer is the one that must be exact everywhere.
"""
import html
import unicodedata
from typing import Dict, List, Sequence, Tuple

import torch

from .safe_io import read_gzip

SOT_TOKEN = "<|startoftext|>"
EOT_TOKEN = "<|endoftext|>"
NUM_MERGES = 48894  # lines 1..48894 of the merges file (line 0 is a version header)
CONTEXT_LENGTH = 77

_CONTRACTIONS = ("'s", "'t", "'re", "'ve", "'m", "'ll", "'d")

# Unicode White_Space property (what `\s` means for the reference's regex).
_WHITESPACE = frozenset(
    "\t\n\x0b\x0c\r \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008"
    "\u2009\u200a\u2028\u2029\u202f\u205f\u3000"
)

# ftfy folds the Latin presentation-form ligatures (fix_latin_ligatures) before lower-casing.
_LIGATURES = {
    "\ufb00": "ff",
    "\ufb01": "fi",
    "\ufb02": "fl",
    "\ufb03": "ffi",
    "\ufb04": "ffl",
    "\ufb05": "\u017ft",
    "\ufb06": "st",
}


def bytes_to_unicode() -> Dict[int, str]:
    """Byte → printable character map of docs/reference-behaviour.md §5.3 (printable bytes keep their code point)."""
    printable = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    mapping = {b: chr(b) for b in printable}
    extra = 0
    for b in range(256):
        if b not in mapping:
            mapping[b] = chr(256 + extra)
            extra += 1
    # The id order is printable bytes first, then the remapped ones (not byte order).
    ordered = printable + [b for b in range(256) if b not in set(printable)]
    return {b: mapping[b] for b in ordered}


def _is_letter(ch: str) -> bool:
    return unicodedata.category(ch).startswith("L")


def _is_number(ch: str) -> bool:
    return unicodedata.category(ch).startswith("N")


def normalise(text: str) -> str:
    """docs/reference-behaviour.md §5.3 steps 1-5 (ftfy approximated; exact for printable ASCII)."""
    if "<" not in text:
        text = html.unescape(text)  # ftfy's HTML-entity step
    text = "".join(_LIGATURES.get(ch, ch) for ch in text)
    text = "".join(ch for ch in text if ch in _WHITESPACE or unicodedata.category(ch) != "Cc")
    text = unicodedata.normalize("NFC", text)
    text = html.unescape(html.unescape(text))
    text = text.strip()
    out: List[str] = []
    prev_space = False
    for ch in text:
        if ch in _WHITESPACE:
            if not prev_space:
                out.append(" ")
            prev_space = True
        else:
            out.append(ch)
            prev_space = False
    return "".join(out).strip().lower()


def pre_tokenize(text: str) -> List[str]:
    """Left-to-right scan with the priority order of docs/reference-behaviour.md §5.3 (special tokens, contractions,
    letter runs, single numbers, other-symbol runs; whitespace skipped)."""
    tokens: List[str] = []
    i = 0
    n = len(text)
    while i < n:
        rest = text[i:]
        low = rest[: len(SOT_TOKEN)].lower()
        if low == SOT_TOKEN or rest[: len(EOT_TOKEN)].lower() == EOT_TOKEN:
            tok = rest[: len(SOT_TOKEN)] if low == SOT_TOKEN else rest[: len(EOT_TOKEN)]
            tokens.append(tok)
            i += len(tok)
            continue
        matched = False
        for c in _CONTRACTIONS:
            if rest[: len(c)].lower() == c:
                tokens.append(rest[: len(c)])
                i += len(c)
                matched = True
                break
        if matched:
            continue
        ch = text[i]
        if _is_letter(ch):
            j = i + 1
            while j < n and _is_letter(text[j]):
                j += 1
            tokens.append(text[i:j])
            i = j
        elif _is_number(ch):
            tokens.append(ch)
            i += 1
        elif ch in _WHITESPACE:
            i += 1
        else:
            j = i + 1
            while j < n and not (text[j] in _WHITESPACE or _is_letter(text[j]) or _is_number(text[j])):
                j += 1
            tokens.append(text[i:j])
            i = j
    return tokens


class ClipTokenizer:
    def __init__(self, vocab_path: str):
        self.byte_encoder = bytes_to_unicode()
        # a regular file, decompressed to at most 256 MB (as the C++ tokenizer)
        lines = read_gzip(vocab_path, "BPE vocabulary").decode("utf-8").split("\n")
        merges = [tuple(line.split()) for line in lines[1 : NUM_MERGES + 1]]
        if len(merges) != NUM_MERGES or any(len(m) != 2 for m in merges):
            raise ValueError(f"{vocab_path}: not a CLIP BPE merges file ({len(merges)} merges)")
        vocab = list(self.byte_encoder.values())
        vocab = vocab + [v + "</w>" for v in vocab]
        vocab.extend("".join(m) for m in merges)
        vocab.extend([SOT_TOKEN, EOT_TOKEN])
        self.encoder = {tok: i for i, tok in enumerate(vocab)}
        self.bpe_ranks = {m: i for i, m in enumerate(merges)}
        self.sot = self.encoder[SOT_TOKEN]
        self.eot = self.encoder[EOT_TOKEN]
        self._cache: Dict[str, List[str]] = {SOT_TOKEN: [SOT_TOKEN], EOT_TOKEN: [EOT_TOKEN]}

    def _bpe(self, token: str) -> List[str]:
        cached = self._cache.get(token)
        if cached is not None:
            return cached
        word: List[str] = list(token[:-1]) + [token[-1] + "</w>"]
        while len(word) > 1:
            pairs = {(word[k], word[k + 1]) for k in range(len(word) - 1)}
            best = min(pairs, key=lambda p: self.bpe_ranks.get(p, float("inf")))
            if best not in self.bpe_ranks:
                break
            merged: List[str] = []
            k = 0
            while k < len(word):
                if k < len(word) - 1 and word[k] == best[0] and word[k + 1] == best[1]:
                    merged.append(best[0] + best[1])
                    k += 2
                else:
                    merged.append(word[k])
                    k += 1
            word = merged
        self._cache[token] = word
        return word

    def encode(self, text: str) -> List[int]:
        """Token ids without SOT/EOT."""
        ids: List[int] = []
        for tok in pre_tokenize(normalise(text)):
            if tok.lower() in (SOT_TOKEN, EOT_TOKEN):
                ids.append(self.encoder[tok.lower()])
                continue
            mapped = "".join(self.byte_encoder[b] for b in tok.encode("utf-8"))
            ids.extend(self.encoder[s] for s in self._bpe(mapped))
        return ids

    def tokenize(self, texts: Sequence[str], context_length: int = CONTEXT_LENGTH, trim: bool = False) -> torch.Tensor:
        """[n, context_length] int64, SOT + ids + EOT, zero padded. Raises when a prompt is too
        long (the reference behaviour). With trim=True the width is cut to the longest row."""
        rows = [[self.sot] + self.encode(t) + [self.eot] for t in texts]
        for t, r in zip(texts, rows):
            if len(r) > context_length:
                raise ValueError(f"prompt too long for context length {context_length}: {t!r}")
        width = max((len(r) for r in rows), default=1) if trim else context_length
        out = torch.zeros(len(rows), width, dtype=torch.long)
        for i, r in enumerate(rows):
            out[i, : len(r)] = torch.tensor(r, dtype=torch.long)
        return out


def golden_mismatches(tokenizer: ClipTokenizer, golden: List[dict]) -> List[Tuple[str, list, list]]:
    bad = []
    for entry in golden:
        ids = [tokenizer.sot] + tokenizer.encode(entry["text"]) + [tokenizer.eot]
        if ids != entry["ids"]:
            bad.append((entry["text"], ids, entry["ids"]))
    return bad
