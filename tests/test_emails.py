"""Tests for scripts/emails.py (the demo corpus's and the benchmark's e-mail parser) on small
hand-made messages."""

import base64
import email
import json
import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "scripts"))
from emails import html_to_text, parse_email, read_spamassassin  # noqa: E402


def b64(data: bytes) -> str:
    return base64.b64encode(data).decode("ascii")


def test_multipart_plain_and_html_parts_are_concatenated():
    raw = (
        "From: alice@example.com\n"
        "Subject: Lunch\n"
        "MIME-Version: 1.0\n"
        'Content-Type: multipart/mixed; boundary="OUTER"\n'
        "\n"
        "This is a multi-part message in MIME format.\n"
        "--OUTER\n"
        'Content-Type: multipart/alternative; boundary="INNER"\n'
        "\n"
        "--INNER\n"
        "Content-Type: text/plain; charset=us-ascii\n"
        "\n"
        "Meet at noon.\n"
        "--INNER\n"
        "Content-Type: text/html; charset=us-ascii\n"
        "\n"
        "<html><body><p>Meet at <b>noon</b>.</p></body></html>\n"
        "--INNER--\n"
        "--OUTER\n"
        "Content-Type: image/png\n"
        "Content-Transfer-Encoding: base64\n"
        "\n"
        f"{b64(b'PNG not text')}\n"
        "--OUTER--\n"
    )
    # The preamble, the boundaries and the image attachment are all dropped.
    assert parse_email(raw) == "Lunch\n\nMeet at noon.\n\nMeet at noon."


def test_quoted_printable_with_declared_charset():
    raw = (
        "Subject: Menu\n"
        "Content-Type: text/plain; charset=iso-8859-1\n"
        "Content-Transfer-Encoding: quoted-printable\n"
        "\n"
        "Caf=E9 au lait, soft=\n"
        "break, 1 =3D 1\n"
    )
    assert parse_email(raw) == "Menu\n\nCafé au lait, softbreak, 1 = 1"


def test_base64_body_and_encoded_subject():
    body = b64("Grüße aus Köln\n".encode("utf-8"))
    raw = (
        "Subject: =?utf-8?b?" + b64("Grüße".encode("utf-8")) + "?= again\n"
        "Content-Type: text/plain; charset=utf-8\n"
        "Content-Transfer-Encoding: base64\n"
        "\n"
        f"{body}\n"
    )
    assert parse_email(raw) == "Grüße again\n\nGrüße aus Köln"


def test_unknown_charset_falls_back_to_latin1():
    raw = (
        "Subject: =?x-bogus?q?Caf=E9?=\n"
        'Content-Type: text/plain; charset="x-no-such-charset"\n'
        "Content-Transfer-Encoding: base64\n"
        "\n"
        f"{b64(b'na' + bytes([0xEF]) + b've')}\n"
    )
    assert parse_email(raw) == "Café\n\nnaïve"


def test_us_ascii_label_on_utf8_bytes_is_not_mangled():
    # Mislabelled charsets are common in spam; utf-8 is tried before latin-1.
    raw = (
        "Subject: x\n"
        "Content-Type: text/plain; charset=us-ascii\n"
        "Content-Transfer-Encoding: base64\n"
        "\n"
        f"{b64('naïve'.encode('utf-8'))}\n"
    )
    assert parse_email(raw) == "x\n\nnaïve"


def test_html_drops_script_and_style_and_unescapes_entities():
    raw = (
        "Subject: Menu\n"
        "Content-Type: text/html\n"
        "\n"
        "<html><head><style>p { color: red }</style>"
        "<script>alert('<b>x</b>')</script></head>\n"
        "<body><p>Fish &amp; chips &lt;3 &eacute;</p>"
        "<p>Caf&#233;&nbsp;open<br>today</p><!-- hidden --></body></html>\n"
    )
    assert parse_email(raw) == "Menu\n\nFish & chips <3 é\n\nCafé open\ntoday"


def test_html_to_text_table_cells_do_not_run_together():
    assert html_to_text("<tr><td>a</td><td>b</td></tr>") == "\n a b\n"


def test_html_sent_as_text_plain_is_converted():
    raw = "Subject: Offer\n\n<HTML><BODY>Buy <B>now</B>!</BODY></HTML>\n"
    assert parse_email(raw) == "Offer\n\nBuy now!"


def test_text_that_only_mentions_tags_is_left_alone():
    raw = "Subject: Re: filters\n\nA token like '<body' scores 0.99 here.\n"
    assert parse_email(raw) == "Re: filters\n\nA token like '<body' scores 0.99 here."


def test_multipart_body_without_multipart_header_is_recovered():
    # Some messages lost their "Content-Type: multipart/..." header.
    raw = (
        "Subject: News\n"
        "MIME-Version: 1.0\n"
        "\n"
        "--123.456\n"
        "Content-Type: text/plain; charset=iso-8859-1\n"
        "Content-Transfer-Encoding: quoted-printable\n"
        "\n"
        "R=E9sum=E9 inside\n"
        "--123.456--\n"
    )
    assert parse_email(raw) == "News\n\nRésumé inside"


def test_whitespace_is_collapsed():
    raw = "Subject:  Two\r\n   words\r\n\r\nA\t\t b  \r\n\r\n\r\n\r\n  c\u00a0\u200bd\r\n"
    # Folded subject joined; tabs/spaces -> one space; 3+ newlines -> 2;
    # the no-break space becomes a space and the zero-width space goes.
    assert parse_email(raw) == "Two words\n\nA b\n\nc d"


def test_message_without_headers_keeps_its_text():
    assert parse_email("just some text\nwith   two lines\n") == "just some text\nwith two lines"


def test_empty_message():
    assert parse_email("") == ""
    assert parse_email("Subject: \n\n   \n") == ""


def test_parser_failure_falls_back_to_raw_body(monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("boom")

    monkeypatch.setattr(email, "message_from_string", broken)
    raw = "From: x@example.com\nSubject: Hi\n\nBody   text\n"
    assert parse_email(raw) == "Body text"
    assert parse_email("no headers here") == "no headers here"


def test_read_spamassassin(tmp_path):
    def add(group, stem, raw):
        folder = tmp_path / "data" / group
        folder.mkdir(parents=True, exist_ok=True)
        record = {"id": stem[:5], "group": group, "checksum": {}, "text": raw}
        (folder / f"{stem}.json").write_text(json.dumps(record), encoding="utf-8")
        (folder / f"{stem}.txt").write_text(raw, encoding="utf-8")  # ignored

    add("spam-2", "00002.bbb", "Subject: Win\n\nCash now")
    add("spam-2", "00001.aaa", "Subject: Prize\n\nClaim it")
    add("easy-ham-1", "00007.ccc", "Subject: Re: patch\n\nLooks good")
    (tmp_path / "data" / "file_list.json").write_text("[]")
    assert list(read_spamassassin(tmp_path)) == [
        {"id": "easy-ham-1/00007.ccc", "group": "easy-ham-1", "label": "ham",
         "text": "Re: patch\n\nLooks good"},
        {"id": "spam-2/00001.aaa", "group": "spam-2", "label": "spam",
         "text": "Prize\n\nClaim it"},
        {"id": "spam-2/00002.bbb", "group": "spam-2", "label": "spam",
         "text": "Win\n\nCash now"},
    ]


# --- messages as their original bytes ---------------------------------------


def test_bytes_each_part_is_decoded_with_its_own_charset():
    # One message, three 8-bit parts in three charsets, and an 8-bit subject:
    # no single decoding of the whole file could get all of them right.
    raw = (
        b"Subject: Caf\xe9\n"
        b'Content-Type: multipart/mixed; boundary="B"\n'
        b"\n"
        b"--B\n"
        b"Content-Type: text/plain; charset=iso-8859-1\n"
        b"Content-Transfer-Encoding: 8bit\n"
        b"\n"
        b"d\xe9j\xe0 vu\n"
        b"--B\n"
        b"Content-Type: text/plain; charset=koi8-r\n"
        b"Content-Transfer-Encoding: 8bit\n"
        b"\n"
        + "привет".encode("koi8-r") + b"\n"
        b"--B\n"
        b"Content-Type: text/html; charset=utf-8\n"
        b"\n"
        b"<p>" + "Grüße".encode("utf-8") + b"</p>\n"
        b"--B--\n"
    )
    assert parse_email(raw) == "Café\n\ndéjà vu\n\nпривет\n\nGrüße"


def test_bytes_latin1_label_reads_windows_1252_quotes():
    # 0x93/0x94 are C1 controls in latin-1 but curly quotes in windows-1252,
    # which is what such mail means (browsers read the label the same way).
    raw = b"Subject: x\nContent-Type: text/plain; charset=iso-8859-1\n\nclick \x93here\x94 \x96 \xa35\n"
    assert parse_email(raw) == "x\n\nclick \u201chere\u201d \u2013 \u00a35"


def test_bytes_mislabelled_utf8_falls_back_without_replacement_characters():
    raw = b"Subject: x\nContent-Type: text/plain; charset=utf-8\n\nna\xefve \x85 caf\xe9\n"
    assert parse_email(raw) == "x\n\nnaïve ... café"  # NFKC turns the ellipsis into "..."


def test_bytes_bad_bytes_in_a_multibyte_charset_keep_the_rest():
    good = "日本語のメール".encode("shift_jis")
    raw = b"Subject: x\nContent-Type: text/plain; charset=shift_jis\n\n" + good + b" \xff\xff ok\n"
    assert parse_email(raw) == "x\n\n日本語のメール \ufffd\ufffd ok"


def test_bytes_and_str_agree_on_ascii_and_armoured_messages():
    raws = [
        "Subject: Hi\n\nSee   you\tsoon\n",
        "Subject: Menu\nContent-Type: text/plain; charset=iso-8859-1\n"
        "Content-Transfer-Encoding: quoted-printable\n\nCaf=E9 au lait\n",
        "Subject: =?utf-8?b?" + b64("Grüße".encode()) + "?=\n"
        "Content-Type: text/plain; charset=utf-8\nContent-Transfer-Encoding: base64\n\n"
        + b64("Köln".encode()) + "\n",
    ]
    for raw in raws:
        assert parse_email(raw.encode("ascii")) == parse_email(raw) != ""


def test_bytes_recovered_multipart_keeps_8bit_text():
    raw = (
        b"Subject: News\n"
        b"\n"
        b"--123.456\n"
        b"Content-Type: text/plain; charset=iso-8859-1\n"
        b"Content-Transfer-Encoding: 8bit\n"
        b"\n"
        b"R\xe9sum\xe9 inside\n"
        b"--123.456--\n"
    )
    assert parse_email(raw) == "News\n\nRésumé inside"


def test_bytes_parser_failure_falls_back_to_decoded_body(monkeypatch):
    def broken(*args, **kwargs):
        raise ValueError("boom")

    monkeypatch.setattr(email, "message_from_bytes", broken)
    assert parse_email(b"Subject: Hi\n\nCaf\xe9   ouvert\n") == "Café ouvert"


def test_lone_surrogates_never_get_out():
    # They cannot be encoded as UTF-8 (Parquet, JSON): a stray one is dropped,
    # and surrogate-escaped bytes in a str (Python's way to carry undecodable
    # bytes) are decoded in headers; a body without charset gets U+FFFD.
    assert parse_email("plain c\ud800d text") == "plain cd text"
    assert parse_email("Subject: a\udce9b\n\nc\udce9d") == "aéb\n\nc\ufffdd"


def test_read_spamassassin_txt_reads_the_original_bytes(tmp_path):
    folder = tmp_path / "data" / "spam-1"
    folder.mkdir(parents=True)
    raw = b"Subject: Gr\xfc\xdfe\nContent-Type: text/plain; charset=iso-8859-1\n\nK\xf6ln\n"
    lossy = raw.decode("utf-8", errors="replace")  # what the package's JSON holds
    (folder / "00001.aaa.txt").write_bytes(raw)
    (folder / "00001.aaa.json").write_text(json.dumps({"text": lossy}), encoding="utf-8")
    assert list(read_spamassassin(tmp_path, source="txt")) == [
        {"id": "spam-1/00001.aaa", "group": "spam-1", "label": "spam", "text": "Grüße\n\nKöln"},
    ]
    # The JSON copy lost the bytes: only replacement characters are left.
    assert next(read_spamassassin(tmp_path))["text"] == "Gr\ufffd\ufffde\n\nK\ufffdln"
    with pytest.raises(ValueError, match="source"):
        next(read_spamassassin(tmp_path, source="eml"))
