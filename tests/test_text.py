"""sparklstm.text: the one tokenize function and the Vocab (ids, truncation, JSON round-trip)."""

from __future__ import annotations

import numpy as np
import pytest

from sparklstm.errors import SparklstmError
from sparklstm.text import PAD, UNK, Vocab, tokenize

# ----------------------------------------------------------------------------- tokenize


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Don't pay $100 now!!", ["don't", "pay", "$", "100", "now", "!", "!"]),
        ("rock’n’roll, isn't it?", ["rock’n’roll", ",", "isn't", "it", "?"]),
        ("'quoted' words'", ["'", "quoted", "'", "words", "'"]),
        ("abc123def 4.5%", ["abc", "123", "def", "4", ".", "5", "%"]),
        ("a+b=c <pad> e-mail", ["a", "+", "b", "=", "c", "<", "pad", ">", "e", "-", "mail"]),
        ("snake_case", ["snake", "case"]),
        ("hi 😀 there", ["hi", "😀", "there"]),
    ],
)
def test_tokenize_words_apostrophes_digits_symbols(text, expected):
    """Words keep inner apostrophes; digit runs and single symbols are their own tokens."""
    assert tokenize(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("Straße Ünïcödé naïve", ["straße", "ünïcödé", "naïve"]),
        ("Москва ΑΘΗΝΑ", ["москва", "αθηνα"]),
        ("日本語テキスト", ["日本語テキスト"]),
        ("cafe\u0301", ["café"]),  # NFD input is composed by NFKC first
    ],
)
def test_tokenize_unicode_letters(text, expected):
    """Letters of any script are word characters and are lowercased."""
    assert tokenize(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("नमस्ते दुनिया", ["नमस्ते", "दुनिया"]),  # Devanagari vowel signs / virama (Mn, Mc)
        ("مَرْحَبًا", ["مَرْحَبًا"]),  # Arabic harakat (Mn)
        ("İstanbul", ["i\u0307stanbul"]),  # "İ".lower() is "i" + U+0307 COMBINING DOT ABOVE
    ],
)
def test_tokenize_keeps_combining_marks_inside_words(text, expected):
    """A combining mark (category M) inside a word does not split it into pieces."""
    assert tokenize(text) == expected


@pytest.mark.parametrize(
    "text, expected",
    [
        ("ＨＥＬＬＯ\u3000ｗｏｒｌｄ１２３！", ["hello", "world", "123", "!"]),  # full-width
        ("ﬁne ﬂow", ["fine", "flow"]),  # ligatures
        ("x² ①", ["x", "2", "1"]),  # superscript / circled digits
    ],
)
def test_tokenize_applies_nfkc(text, expected):
    """NFKC folds full-width forms, ligatures and compatibility digits before splitting."""
    assert tokenize(text) == expected


def test_tokenize_lowercase_off_keeps_case_but_still_normalizes():
    """lowercase=False keeps case; NFKC still applies."""
    assert tokenize("Don't PAY Ｎow", lowercase=False) == ["Don't", "PAY", "Now"]
    assert tokenize("Don't PAY Ｎow") == ["don't", "pay", "now"]


@pytest.mark.parametrize("text", ["", " ", "  \t\n\u3000 "])
def test_tokenize_empty_or_blank_gives_no_tokens(text):
    """Empty or whitespace-only text has no tokens."""
    assert tokenize(text) == []


# ----------------------------------------------------------------------------- Vocab


def test_vocab_reserved_ids_and_encode():
    """pad = 0, unk = 1, known tokens follow in order; unknown tokens encode as 1."""
    v = Vocab(["free", "money"])
    assert (PAD, UNK) == (0, 1)
    assert v.tokens[:2] == ["<pad>", "<unk>"]
    assert len(v) == 4
    assert v.index["free"] == 2 and v.index["money"] == 3
    ids = v.encode("Free MONEY, free time", max_len=10)
    assert ids.dtype == np.int32
    assert ids.tolist() == [2, 3, 1, 2, 1]


def test_vocab_encode_truncates_to_max_len():
    """encode keeps the first max_len tokens (the head of the text)."""
    v = Vocab(["a", "b", "c"])
    assert v.encode("a b c a b c", max_len=4).tolist() == [2, 3, 4, 2]
    assert v.encode("a b", max_len=4).tolist() == [2, 3]
    assert v.encode("a b c", max_len=0).tolist() == []
    assert v.encode("", max_len=5).tolist() == []


def test_vocab_lowercase_setting_applies_to_encode():
    """A case-sensitive vocab does not fold 'Free' into 'free'."""
    cased = Vocab(["free", "Free"], lowercase=False)
    assert cased.encode("Free free FREE", max_len=5).tolist() == [3, 2, UNK]
    folded = Vocab(["free"])
    assert folded.encode("Free free FREE", max_len=5).tolist() == [2, 2, 2]


def test_vocab_reserved_tokens_are_not_duplicated():
    """Passing <pad>/<unk> among the tokens does not add them twice; a real duplicate is refused."""
    v = Vocab(["<pad>", "x", "<unk>", "y"])
    assert v.tokens == ["<pad>", "<unk>", "x", "y"]
    with pytest.raises(SparklstmError, match="duplicate"):
        Vocab(["x", "y", "x"])


TEXTS = [
    "Free money now!!! $$$",
    "The quick brown fox; it's naïve — Straße 42",
    "ＦＵＬＬ width and unknown zzzz tokens",
    "",
    "free free free free free free free free free free free free",
]


@pytest.mark.parametrize("text", TEXTS)
def test_encode_tokens_equals_encode(text):
    """encode_tokens(tokenize(text)) gives exactly encode(text)."""
    v = Vocab(["free", "money", "the", "fox", "it's", "straße", "$", "!", "42", "full"])
    for max_len in (0, 3, 100):
        np.testing.assert_array_equal(
            v.encode_tokens(tokenize(text), max_len=max_len), v.encode(text, max_len=max_len)
        )


def _sample_vocab(lowercase: bool = True) -> Vocab:
    return Vocab(["free", "Money", "straße", "日本", "don't", "$", "!", "42", "ñandú"],
                 lowercase=lowercase)


@pytest.mark.parametrize("lowercase", [True, False])
def test_vocab_json_round_trip_gives_identical_ids(lowercase):
    """from_json(to_json()) restores the tokens, the case setting and every id."""
    v = _sample_vocab(lowercase)
    w = Vocab.from_json(v.to_json())
    assert w.tokens == v.tokens
    assert w.lowercase == v.lowercase
    for text in TEXTS + ["Money money MONEY ñandú 日本 don't"]:
        np.testing.assert_array_equal(w.encode(text, max_len=50), v.encode(text, max_len=50))


def test_vocab_save_load_round_trip(tmp_path):
    """save then load (UTF-8 on disk) gives the same tokens and ids."""
    v = _sample_vocab()
    path = tmp_path / "vocab.json"
    v.save(path)
    assert "ñandú" in path.read_text(encoding="utf-8")  # stored as text, not \u escapes
    w = Vocab.load(path)
    assert w.tokens == v.tokens and w.lowercase == v.lowercase
    text = "free MONEY straße 日本 don't $ ! 42 ñandú other"
    np.testing.assert_array_equal(w.encode(text, max_len=20), v.encode(text, max_len=20))


def test_vocab_load_missing_file(tmp_path):
    """A missing vocabulary file is a SparklstmError naming it."""
    with pytest.raises(SparklstmError, match="vocabulary not found"):
        Vocab.load(tmp_path / "nope.json")


@pytest.mark.parametrize(
    "junk",
    [
        "",
        "not json",
        "[1, 2, 3]",
        "null",
        "{}",
        '{"tokens": ["<pad>", "<unk>", "a"]}',  # no lowercase
        '{"lowercase": true}',  # no tokens
        '{"tokens": ["a", "b"], "lowercase": true}',  # no reserved ids
        '{"tokens": ["<unk>", "<pad>", "a"], "lowercase": true}',  # reserved ids swapped
        '{"tokens": ["<pad>", "<unk>", "a", "a"], "lowercase": true}',  # duplicate
        '{"tokens": 5, "lowercase": true}',  # tokens not a list
        '{"tokens": null, "lowercase": true}',
        '{"tokens": ["<pad>", "<unk>", ["a"]], "lowercase": true}',  # a token that is a list
        '{"tokens": ["<pad>", "<unk>", 7], "lowercase": true}',  # a token that is a number
        '{"tokens": ["<pad>", "<unk>", "a"], "lowercase": "no"}',  # lowercase not a bool
        # a reserved token repeated later would be dropped and shift every id after it
        '{"tokens": ["<pad>", "<unk>", "a", "<pad>", "b"], "lowercase": true}',
    ],
)
def test_vocab_from_json_junk_raises(junk):
    """Anything that is not a well-formed vocabulary is a SparklstmError, never another error."""
    with pytest.raises(SparklstmError):
        Vocab.from_json(junk)


def _unicode_path(text: str, lowercase: bool) -> list[str]:
    """What tokenize returns without its ASCII fast path."""
    import unicodedata

    from sparklstm.text import _TOKEN

    text = unicodedata.normalize("NFKC", text)
    return _TOKEN.findall(text.lower() if lowercase else text)


@pytest.mark.parametrize("lowercase", [True, False])
def test_ascii_fast_path_tokenizes_like_the_unicode_pattern(lowercase):
    # Every ASCII character alone, and next to a letter, a digit, an apostrophe and a space.
    chars = [chr(i) for i in range(128)]
    texts = ["".join(chars)] + [a + b + c for a in chars for b in "aZ0' " for c in ("", "b", "'x")]
    texts += ["Don't pay $100 now!!", "it's  o'clock -- e-mail\tx\x1cy\x1fz", "a''b '' 'q' _x_"]
    for text in texts:
        assert tokenize(text, lowercase=lowercase) == _unicode_path(text, lowercase), repr(text)


def test_limit_stops_early_on_a_huge_text_and_agrees_with_truncation():
    huge = "word " * 200_000 + "tail"  # ~1 MB
    assert tokenize(huge, limit=5) == ["word"] * 5
    text = "Ünïcode wörds and ascii " * 100
    assert tokenize(text, limit=3) == tokenize(text)[:3]
    v = Vocab(["word"])
    assert v.encode(huge, max_len=256).tolist() == [2] * 256
