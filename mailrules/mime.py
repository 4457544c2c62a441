"""A fast extractor of the decoded text of a message's text/* parts (the `body` of `regex`).

The stdlib `email` parser with the modern policy costs milliseconds a message, which
dominates a body regex over a large mailbox. This walks the MIME structure with bytes
operations and decodes only text/* parts that are not attachments, like
`MessageView.body_text` defines. Anything unusual (RFC 2231 parameters, a missing
boundary, a parsing error) returns None, and the caller falls back to `email`.
"""

from __future__ import annotations

import binascii
import re

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_FOLD = re.compile(rb"\r?\n[ \t]")
_FIELD = re.compile(rb"^(content-type|content-transfer-encoding|content-disposition)[ \t]*:(.*)$", re.I | re.M)
_PARAM = re.compile(r';\s*([A-Za-z0-9_.*-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]*)')
MAX_DEPTH = 20


class _Unusual(Exception):
    """Something this fast path does not handle: use the email package instead."""


def text_parts(raw: bytes) -> list[str] | None:
    """Decoded text of every text/* part that is not an attachment; None to fall back."""
    try:
        out: list[str] = []
        _walk(raw, out, "text/plain", 0)
        return out
    except (_Unusual, RecursionError):
        return None


def _walk(raw: bytes, out: list[str], default_type: str, depth: int) -> None:
    if depth > MAX_DEPTH:
        raise _Unusual
    m = _HEADER_END.search(raw)
    if m is None:
        header, body = raw, b""
    else:
        header, body = raw[: m.start()], raw[m.end() :]
    if raw[:1] in (b"\r", b"\n"):  # an empty header: the body starts after the first line break
        header, body = b"", raw[2:] if raw[:2] == b"\r\n" else raw[1:]
    fields: dict[str, str] = {}
    for name, value in _FIELD.findall(_FOLD.sub(b" ", header)):
        fields.setdefault(name.lower().decode("ascii"), value.decode("latin-1").strip())
    ctype, params = _content_type(fields.get("content-type"), default_type)
    if ctype.startswith("multipart/"):
        boundary = params.get("boundary")
        if not boundary:
            raise _Unusual
        child_default = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
        for part in _split_parts(body, boundary.encode("latin-1")):
            _walk(part, out, child_default, depth + 1)
        return
    if ctype == "message/rfc822":
        _walk(_decode_transfer(body, fields.get("content-transfer-encoding", "")), out, "text/plain", depth + 1)
        return
    if not ctype.startswith("text/"):
        return
    disposition = fields.get("content-disposition", "").split(";", 1)[0].strip().lower()
    if disposition == "attachment":
        return
    data = _decode_transfer(body, fields.get("content-transfer-encoding", ""))
    charset = params.get("charset", "us-ascii") or "us-ascii"
    try:
        out.append(data.decode(charset, errors="replace"))
    except LookupError:
        out.append(data.decode("utf-8", errors="replace"))


def _content_type(value: str | None, default_type: str) -> tuple[str, dict[str, str]]:
    if not value:
        return default_type, {}
    main, _, rest = value.partition(";")
    ctype = main.strip().lower()
    if "/" not in ctype or " " in ctype:
        ctype = "text/plain"  # what the email package does with a broken Content-Type
    params: dict[str, str] = {}
    for key, val in _PARAM.findall(";" + rest):
        key = key.lower()
        if "*" in key:
            raise _Unusual  # RFC 2231 encoded or continued parameter
        if val.startswith('"'):
            val = re.sub(r"\\(.)", r"\1", val[1:-1])
        params.setdefault(key, val)
    return ctype, params


def _split_parts(body: bytes, boundary: bytes) -> list[bytes]:
    """The parts between the delimiter lines '--boundary' (up to '--boundary--')."""
    marker = b"--" + boundary
    parts: list[bytes] = []
    start: int | None = None
    pos = 0
    while (i := body.find(marker, pos)) >= 0:
        pos = i + 1
        if i and body[i - 1 : i] != b"\n":
            continue  # not at the start of a line
        j = i + len(marker)
        close = body[j : j + 2] == b"--"
        if close:
            j += 2
        eol = body.find(b"\n", j)
        if body[j : eol if eol >= 0 else len(body)].strip(b" \t\r"):
            continue  # '--boundary' followed by other text: not a delimiter
        end = i - 1 if i else 0  # the line break before a delimiter belongs to it
        if end and body[end - 1 : end] == b"\r":
            end -= 1
        if start is not None:
            parts.append(body[start:end])
        if close:
            return parts
        start = pos = eol + 1 if eol >= 0 else len(body)
    if start is None:
        raise _Unusual  # no delimiter at all: let the email package decide
    parts.append(body[start:])  # no close delimiter: the last part runs to the end
    return parts


def _decode_transfer(body: bytes, encoding: str) -> bytes:
    encoding = encoding.split(";", 1)[0].strip().lower()
    if encoding == "base64":
        try:
            return binascii.a2b_base64(body)
        except binascii.Error:
            raise _Unusual from None
    if encoding == "quoted-printable":
        return binascii.a2b_qp(body)
    return body
