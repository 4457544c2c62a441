"""The fast text extractor (`mailrules.mime.text_parts`) against the email package, on crafted MIME.

`MessageView.body_text` takes the text parts with `text_parts` and falls back to the email
package where that returns None. Whichever path reads a message, a body predicate must see
the same text: each crafted message below is read both ways and compared, and the shapes
the fast path leaves alone must come back None (the email package decides them).
"""

from __future__ import annotations

import base64

import pytest

from mailrules import mime
from mailrules.message import MessageView


def email_package_text(raw: bytes, monkeypatch) -> str:
    with monkeypatch.context() as m:
        m.setattr("mailrules.message.text_parts", lambda raw: None)  # force the email package
        return MessageView(1, raw=raw).body_text


def msg(*lines: str, crlf: bool = True) -> bytes:
    text = "\n".join(lines) + "\n"
    return (text.replace("\n", "\r\n") if crlf else text).encode("utf-8", "surrogateescape")


B64 = base64.b64encode("caf\u00e9 build #12 failed\n".encode()).decode()
LATIN1_QP = "caf=E9 build #7 failed=\n soft break"

CRAFTED = {
    "plain ascii": msg("Subject: x", "", "build #1 failed"),
    "plain with LF line ends": msg("Subject: x", "", "build #1 failed", crlf=False),
    "no header at all": msg("", "build #1 failed"),
    "base64 utf-8": msg("Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: base64", "", B64),
    "quoted-printable latin-1": msg("Content-Type: text/plain; charset=iso-8859-1",
                                    "Content-Transfer-Encoding: quoted-printable", "", LATIN1_QP),
    "folded content-type": msg("Content-Type: text/plain;", "\tcharset=\"iso-8859-1\"",
                               "Content-Transfer-Encoding: quoted-printable", "", LATIN1_QP),
    "upper-case field names": msg("CONTENT-TYPE: TEXT/PLAIN; CHARSET=UTF-8", "CONTENT-TRANSFER-ENCODING: BASE64", "", B64),
    "unknown charset": msg("Content-Type: text/plain; charset=x-no-such-charset", "", "build #3 failed"),
    "8-bit utf-8 body without charset": msg("Subject: x", "", "caf\u00e9 build #4 failed"),
    "nested multiparts with an attachment": msg(
        "Content-Type: multipart/mixed; boundary=outer", "",
        "--outer", "Content-Type: multipart/alternative; boundary=\"inner\"", "",
        "--inner", "Content-Type: text/plain; charset=utf-8", "", "plain build #5 failed",
        "--inner", "Content-Type: text/html; charset=utf-8", "Content-Transfer-Encoding: quoted-printable", "",
        "<p>html =C3=A9</p>", "--inner--",
        "--outer", "Content-Type: application/octet-stream", "Content-Transfer-Encoding: base64",
        "Content-Disposition: attachment; filename=x.bin", "", base64.b64encode(b"\x00build #6 failed").decode(),
        "--outer", "Content-Type: text/plain", "Content-Disposition: attachment; filename=log.txt", "",
        "build #7 failed (attached text)", "--outer--", "epilogue"),
    "a forwarded message": msg(
        "Content-Type: multipart/mixed; boundary=m", "",
        "--m", "Content-Type: text/plain", "", "see below",
        "--m", "Content-Type: message/rfc822", "",
        "Subject: inner", "Content-Type: text/plain; charset=utf-8", "Content-Transfer-Encoding: base64", "", B64,
        "--m--"),
    "a digest": msg(
        "Content-Type: multipart/digest; boundary=d", "",
        "--d", "", "Subject: one", "", "digest build #8 failed",
        "--d", "", "Subject: two", "", "second", "--d--"),
    "a delimiter-like line inside a part": msg(
        "Content-Type: multipart/mixed; boundary=b", "",
        "--b", "", "--bogus is text", "--b trailing text is text too",
        "--b--"),
    "a preamble": msg("Content-Type: multipart/mixed; boundary=b", "", "preamble text", "--b", "", "body", "--b--"),
}

FALLS_BACK = {
    "rfc 2231 charset": msg("Content-Type: text/plain; charset*=utf-8''utf-8", "", "build #9 failed"),
    "multipart without boundary": msg("Content-Type: multipart/mixed", "", "build #10 failed"),
    "boundary never used": msg("Content-Type: multipart/mixed; boundary=zz", "", "build #11 failed"),
    "broken base64": msg("Content-Type: text/plain", "Content-Transfer-Encoding: base64", "", "!!!a"),
}


@pytest.mark.parametrize("name", sorted(CRAFTED))
def test_the_fast_path_reads_the_text_the_email_package_reads(name, monkeypatch):
    raw = CRAFTED[name]
    fast = mime.text_parts(raw)
    assert fast is not None, "this shape is the fast path's"
    assert "\n".join(fast) == email_package_text(raw, monkeypatch)
    assert MessageView(1, raw=raw).body_text == email_package_text(raw, monkeypatch)


@pytest.mark.parametrize("name", sorted(FALLS_BACK))
def test_a_shape_the_fast_path_cannot_read_exactly_is_left_to_the_email_package(name, monkeypatch):
    raw = FALLS_BACK[name]
    assert mime.text_parts(raw) is None
    assert MessageView(1, raw=raw).body_text == email_package_text(raw, monkeypatch)


def test_an_attachment_is_neither_copied_nor_decoded(monkeypatch):
    decoded: list[int] = []
    real = mime.binascii.a2b_base64
    monkeypatch.setattr(mime.binascii, "a2b_base64", lambda data: decoded.append(len(data)) or real(data))
    raw = CRAFTED["nested multiparts with an attachment"]
    assert "build #6" not in "\n".join(mime.text_parts(raw) or [])
    assert decoded == []
