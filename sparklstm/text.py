"""The one tokenize function, and the vocabulary that maps tokens to ids.

Prep (inside Spark's Python workers), training and scoring all call :func:`tokenize` from here,
so a text is split the same way everywhere. (Spark's RegexTokenizer runs Java regex, whose
Unicode classes differ from Python's, so it would drift.)
"""

from __future__ import annotations

import itertools
import json
import re
import unicodedata
from pathlib import Path
from typing import Iterable

import numpy as np

from .errors import SparklstmError

PAD, UNK = 0, 1
PAD_TOKEN, UNK_TOKEN = "<pad>", "<unk>"



def _marks() -> str:
    """Regex class body of the combining marks (Unicode category M*), as code point ranges.

    Marks live in planes 0, 1 and 14 only; scanning just those keeps the import cheap (~30 ms).
    """
    parts = []
    for plane in (0, 1, 14):
        start, end = None, (plane + 1) << 16
        for c in range(plane << 16, end + 1):
            is_mark = c < end and unicodedata.category(chr(c))[0] == "M"
            if is_mark and start is None:
                start = c
            elif not is_mark and start is not None:
                last = chr(c - 1)
                parts.append(re.escape(chr(start)) + (f"-{re.escape(last)}" if c - 1 > start else ""))
                start = None
    return "".join(parts)


# A word (letters, with an inner apostrophe: "don't"), a run of digits, or one symbol.
# Symbols are kept on purpose: "$", "!" and "%" carry signal in spam, reviews and tickets.
# Combining marks (Devanagari vowel signs, Arabic harakat, the dot of a lowercased "İ") are not
# \w in Python's re but belong to the word they follow; without them "नमस्ते" splits in pieces.
_WORD = rf"[^\W\d_]+(?:[{_marks()}]+[^\W\d_]*)*"
_TOKEN = re.compile(rf"{_WORD}(?:['’]{_WORD})*|\d+|[^\w\s]")
# The same pattern for ASCII text (most English corpora): without the Unicode letter and mark
# classes it runs ~2.3x faster, and on ASCII input it matches exactly what _TOKEN matches
# (tests/test_text.py checks every ASCII character). NFKC leaves ASCII unchanged.
_ASCII_TOKEN = re.compile(r"[A-Za-z]+(?:'[A-Za-z]+)*|[0-9]+|[^\w\s]")
# Past this many characters per wanted token a text is surely longer than the limit: stop
# matching at the limit instead of listing every token of, say, a 1 MB text.
_CHARS_PER_TOKEN_BOUND = 32


def tokenize(text: str, *, lowercase: bool = True, limit: int | None = None) -> list[str]:
    """Split ``text`` into word, number and symbol tokens (the first ``limit`` of them, if given).

    Example
    -------
    >>> tokenize("Don't pay $100 now!!")
    ["don't", 'pay', '$', '100', 'now', '!', '!']
    """
    if text.isascii():
        pattern = _ASCII_TOKEN
    else:
        pattern = _TOKEN
        text = unicodedata.normalize("NFKC", text)
    if lowercase:
        text = text.lower()
    if limit is not None and len(text) > _CHARS_PER_TOKEN_BOUND * limit:
        return [m.group() for m in itertools.islice(pattern.finditer(text), limit)]
    return pattern.findall(text)


class Vocab:
    """Token <-> id mapping; id 0 is padding, id 1 is unknown.

    Example
    -------
    >>> v = Vocab(["free", "money"])
    >>> v.encode("Free MONEY, free time", max_len=10).tolist()
    [2, 3, 1, 2, 1]
    """

    def __init__(self, tokens: Iterable[str], *, lowercase: bool = True):
        self.tokens = [PAD_TOKEN, UNK_TOKEN] + [t for t in tokens if t not in (PAD_TOKEN, UNK_TOKEN)]
        self.lowercase = lowercase
        self.index = {t: i for i, t in enumerate(self.tokens)}
        if len(self.index) != len(self.tokens):
            raise SparklstmError("vocabulary has duplicate tokens")

    def __len__(self) -> int:
        return len(self.tokens)

    def encode(self, text: str, *, max_len: int) -> np.ndarray:
        """Token ids of the first ``max_len`` tokens of ``text``, as int32 (may be empty)."""
        tokens = tokenize(text, lowercase=self.lowercase, limit=max_len)
        return self.encode_tokens(tokens, max_len=max_len)

    def encode_tokens(self, tokens: list[str], *, max_len: int) -> np.ndarray:
        """Ids of already-tokenized text (prep tokenizes once and reuses the tokens)."""
        get = self.index.get
        return np.asarray([get(t, UNK) for t in tokens[:max_len]], dtype=np.int32)

    def to_json(self) -> str:
        return json.dumps({"lowercase": self.lowercase, "tokens": self.tokens}, ensure_ascii=False)

    @classmethod
    def from_json(cls, data: str) -> "Vocab":
        try:
            obj = json.loads(data)
            tokens, lowercase = obj["tokens"], obj["lowercase"]
        except (ValueError, KeyError, TypeError):
            raise SparklstmError("vocab.json is not a sparklstm vocabulary") from None
        if (not isinstance(tokens, list) or not all(isinstance(t, str) for t in tokens)
                or not isinstance(lowercase, bool)):
            raise SparklstmError("vocab.json is not a sparklstm vocabulary")
        if tokens[:2] != [PAD_TOKEN, UNK_TOKEN]:
            raise SparklstmError("vocab.json must start with <pad>, <unk>")
        if len(set(tokens)) != len(tokens):  # id = position; __init__ would drop a repeated <pad>
            raise SparklstmError("vocab.json has duplicate tokens")
        return cls(tokens[2:], lowercase=lowercase)

    def save(self, path: str | Path) -> None:
        Path(path).write_text(self.to_json(), encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> "Vocab":
        try:
            return cls.from_json(Path(path).read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise SparklstmError(f"vocabulary not found: {path}") from None
