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
# the MIME fields with their continuation lines (unfolded with _FOLD afterwards: only these
# values, never the whole header, are unfolded)
_FIELD = re.compile(rb"^(content-type|content-transfer-encoding|content-disposition)[ \t]*:(.*(?:\r?\n[ \t].*)*)",
                    re.I | re.M)
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
        _walk(raw, 0, len(raw), out, "text/plain", 0, bounds)
        return None if bounds.unusual else out
    except _Unusual:
        return None
    except RecursionError:  # cannot happen within MAX_DEPTH; never let it escape
        raise MessageTooComplex("message nested too deeply to parse") from None


def _walk(raw: bytes, start: int, end: int, out: list[str], default_type: str, depth: int, bounds: Bounds) -> None:
    """The text parts of the entity raw[start:end], appended to `out`.

    Offsets, not slices: a message is walked without copying its parts (an attachment's
    bytes are never copied or decoded); only a text part's body is taken out to decode.
    """
    bounds.step(depth)
    if raw[start : min(start + 1, end)] in (b"\r", b"\n"):  # an empty header: the body starts after the first line break
        header, body = b"", start + (2 if raw[start : min(start + 2, end)] == b"\r\n" else 1)
    else:
        stop, body = _header_end(raw, start, end)
        header = raw[start:stop]
    fields: dict[str, str] = {}
    for name, value in _FIELD.findall(header):
        if b"\n" in value:
            value = _FOLD.sub(b" ", value)
        fields.setdefault(name.lower().decode("ascii"), value.decode("latin-1").strip())
    ctype, params = _content_type(fields.get("content-type"), default_type, bounds)
    if ctype.startswith("multipart/"):
        boundary = params.get("boundary")
        if not boundary:
            raise _Unusual
        child_default = "message/rfc822" if ctype == "multipart/digest" else "text/plain"
        for s, e in _split_parts(raw, body, end, boundary.encode("latin-1")):
            _walk(raw, s, e, out, child_default, depth + 1, bounds)
        return
    encoding = fields.get("content-transfer-encoding", "")
    if ctype == "message/rfc822":
        inner = _decode_transfer(raw, body, end, encoding)
        if inner is None:
            _walk(raw, body, end, out, "text/plain", depth + 1, bounds)
        else:
            _walk(inner, 0, len(inner), out, "text/plain", depth + 1, bounds)
        return
    if not ctype.startswith("text/"):
        return
    disposition = fields.get("content-disposition", "").split(";", 1)[0].strip().lower()
    if disposition == "attachment":
        return
    data = _decode_transfer(raw, body, end, encoding)
    if data is None:
        data = raw[body:end]
    charset = params.get("charset", "us-ascii") or "us-ascii"
    try:
        out.append(data.decode(charset, errors="replace"))
    except LookupError:
        out.append(data.decode("utf-8", errors="replace"))


def _header_end(raw: bytes, start: int, end: int) -> tuple[int, int]:
    """Where the header of raw[start:end] ends and its body starts: what `_HEADER_END`
    (CR LF or LF, twice) finds, by bytes.find (a regular expression's scan cost as much as
    the rest of the walk); (end, end) without an empty line."""
    crlf = raw.find(b"\n\r\n", start, end)
    lf = raw.find(b"\n\n", start, end if crlf < 0 else crlf + 1)
    if lf >= 0:
        first, stop = lf, lf + 2
    elif crlf >= 0:
        first, stop = crlf, crlf + 3
    else:
        return end, end
    if first > start and raw[first - 1] == 13:  # the CR before the first LF belongs to the empty line
        first -= 1
    return first, stop


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


def _split_parts(raw: bytes, start: int, end: int, boundary: bytes) -> list[tuple[int, int]]:
    """The parts of the body raw[start:end] between the delimiter lines '--boundary' (up to
    '--boundary--'), as (start, end) offsets."""
    marker = b"--" + boundary
    parts: list[tuple[int, int]] = []
    first: int | None = None
    pos = start
    while (i := raw.find(marker, pos, end)) >= 0:
        pos = i + 1
        if i > start and raw[i - 1 : i] != b"\n":
            continue  # not at the start of a line
        j = i + len(marker)
        close = raw.startswith(b"--", j, end)
        if close:
            j += 2
        eol = raw.find(b"\n", j, end)
        if raw[j : eol if eol >= 0 else end].strip(b" \t\r"):
            continue  # '--boundary' followed by other text: not a delimiter
        stop = i - 1 if i > start else start  # the line break before a delimiter belongs to it
        if stop > start and raw[stop - 1 : stop] == b"\r":
            stop -= 1
        if first is not None:
            parts.append((first, stop))
        if close:
            return parts
        first = pos = eol + 1 if eol >= 0 else end
    if first is None:
        raise _Unusual  # no delimiter at all: let the email package decide
    parts.append((first, end))  # no close delimiter: the last part runs to the end
    return parts


def _decode_transfer(raw: bytes, start: int, end: int, encoding: str) -> bytes | None:
    """raw[start:end] decoded from its transfer encoding; None where it needs no decoding."""
    encoding = encoding.split(";", 1)[0].strip().lower()
    if encoding == "base64":
        try:
            return binascii.a2b_base64(raw[start:end])
        except binascii.Error:
            raise _Unusual from None
    if encoding == "quoted-printable":
        return binascii.a2b_qp(raw[start:end])
    return None
