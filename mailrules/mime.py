"""A fast extractor of the decoded text of a message's text/* parts (the `body` of `regex`).

The stdlib `email` parser with the modern policy costs milliseconds a message, which
dominates a body regex over a large mailbox. This walks the MIME structure with bytes
operations and decodes only text/* parts that are not attachments, like
`MessageView.body_text` defines. Anything unusual (RFC 2231 parameters, a missing
boundary, a parsing error) returns None, and the caller falls back to `email`.

Messages come from anyone who can send mail, so parsing is bounded (the same bounds for
the `email` fallback, see `mailrules.message`): nesting depth (`MAX_DEPTH`), number of
parts (`MAX_PARTS`), size (`MAX_SIZE`) and time (`MAX_SECONDS`). A message beyond them
raises `MessageTooComplex`, which fails the predicate on that message alone (logged,
retried, given up) instead of a RecursionError or a stall that stops the whole mailbox.
"""

from __future__ import annotations

import binascii
import re
import time

from .dovecot_parse import decode_words

_HEADER_END = re.compile(rb"\r?\n\r?\n")
_FOLD = re.compile(rb"\r?\n[ \t]")
_FIELD = re.compile(rb"^(content-type|content-transfer-encoding|content-disposition)[ \t]*:(.*)$", re.I | re.M)
_PARAM = re.compile(r';\s*([A-Za-z0-9_.*-]+)\s*=\s*("(?:[^"\\]|\\.)*"|[^;\s]*)')
# The bounds of every MIME walk in mailrules (this one, `mailrules.message`'s email-package
# fallback and the offline SEARCH evaluator `mailrules.local_search`), so that offline and live
# evaluation refuse the same messages. Dovecot 2.3 parses up to 100 levels and 10,000 parts.
MAX_DEPTH = 50  # nested multipart and message/rfc822 levels; real mail rarely has more than 5
MAX_PARTS = 10_000
MAX_SIZE = 64 * 1024 * 1024  # bytes of a message that is parsed
MAX_SECONDS = 5.0  # to find the text parts of one message


class MessageTooComplex(ValueError):
    """A message nested too deeply, with too many parts, or too large or slow to parse."""


class _Unusual(Exception):
    """Something this fast path does not handle: use the email package instead."""


class Bounds:
    """The bounds of one walk: parts seen and the deadline (`step` once per part)."""

    def __init__(self) -> None:
        self.parts = 0
        self.deadline = time.monotonic() + MAX_SECONDS
        self.unusual = False  # something only the email package reads: fall back, after the bounds are checked

    def step(self, depth: int) -> None:
        if depth > MAX_DEPTH:
            raise MessageTooComplex(f"message nested more than {MAX_DEPTH} levels deep")
        self.parts += 1
        if self.parts > MAX_PARTS:
            raise MessageTooComplex(f"message with more than {MAX_PARTS} MIME parts")
        if time.monotonic() > self.deadline:
            raise MessageTooComplex(f"message took more than {MAX_SECONDS:g}s to parse")


def decode_header(value: bytes) -> str:
    """A header field's value as text, as Dovecot reads it: RFC 2047 encoded words decoded,
    raw 8-bit bytes as UTF-8 (RFC 6532), invalid bytes as U+FFFD (the one header decoder
    to use where a value must read as the server's SEARCH reads it)."""
    return decode_words(value)


def check_size(raw: bytes) -> None:
    """Raise MessageTooComplex for a message too large to parse."""
    if len(raw) > MAX_SIZE:
        raise MessageTooComplex(f"message of {len(raw)} bytes is larger than {MAX_SIZE} bytes, too large to parse")


def text_parts(raw: bytes) -> list[str] | None:
    """Decoded text of every text/* part that is not an attachment; None to fall back.

    Raises MessageTooComplex beyond the bounds (the fallback would not do better).
    """
    check_size(raw)
    try:
        out: list[str] = []
        bounds = Bounds()
        _walk(raw, out, "text/plain", 0, bounds)
        return None if bounds.unusual else out
    except _Unusual:
        return None
    except RecursionError:  # cannot happen within MAX_DEPTH; never let it escape
        raise MessageTooComplex("message nested too deeply to parse") from None


def _walk(raw: bytes, out: list[str], default_type: str, depth: int, bounds: Bounds) -> None:
    bounds.step(depth)
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
    ctype, params = _content_type(fields.get("content-type"), default_type, bounds)
    if ctype.startswith("multipart/"):
        boundary = params.get("boundary")
        if not boundary:
            raise _Unusual
        child_default = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
        for part in _split_parts(body, boundary.encode("latin-1")):
            _walk(part, out, child_default, depth + 1, bounds)
        return
    if ctype == "message/rfc822":
        _walk(_decode_transfer(body, fields.get("content-transfer-encoding", "")), out, "text/plain", depth + 1,
              bounds)
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


def _content_type(value: str | None, default_type: str, bounds: Bounds) -> tuple[str, dict[str, str]]:
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
            bounds.unusual = True  # RFC 2231 encoded or continued parameter: the email package decides
            continue
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
