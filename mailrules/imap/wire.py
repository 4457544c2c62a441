"""The IMAP wire format, written once: command rendering, quoting, literals, responses, tags.

Used by the session (`mailrules.imap.session`), the pipelined opening
(`mailrules.imap.pipeline`) and IDLE (`mailrules.imap.idle`); none of them writes or
parses the wire format by itself.

* `render`: a command as the pieces to send; with LITERAL+ (``{n+}``) one piece, else each
  literal's data starts a new piece, sent after the server's continuation request.
* `astring` / `quote_mailbox`: the one quoting function (a quoted string, or a `Literal`
  for 8-bit text or CR/LF/NUL).
* `ResponseReader` / `response_end`: one literal-aware response reader, over a blocking
  line source (fetch batches) or a byte buffer filled by hand (IDLE); `ChunkedReader`, the
  same over a stream read in large chunks (the pipelined opening).
* `Tags`: the allocator of the tags of commands whose answers we read ourselves.
* `parse_message_id`: the Message-ID of a header block.
"""

from __future__ import annotations

import itertools
import re
import threading
from collections.abc import Callable

from imapclient import imap_utf7


class Literal(bytes):
    """A string argument that must be sent as an IMAP literal (8-bit or with CR/LF)."""


OPEN = b"("
CLOSE = b")"

# a line that announces a literal ({n} or {n+}) at its end: n bytes of data follow its CRLF
LITERAL_AT_END = re.compile(rb"\{(\d+)\+?\}$")


def render(tag: bytes, tokens: list[bytes], literal_plus: bool = True) -> list[bytes]:
    """A command as the pieces to send, with no space after '(' or before ')'.

    With LITERAL+ (`{n+}`) that is one piece. Without it, each literal's data starts a new
    piece, to be sent once the server asked for it (a continuation request).
    """
    pieces: list[bytes] = []
    out = [tag]
    prev = b""
    for tok in tokens:
        if isinstance(tok, Literal):
            out.append(b" {%d%s}\r\n" % (len(tok), b"+" if literal_plus else b""))
            if not literal_plus:
                pieces.append(b"".join(out))
                out = []
            out.append(bytes(tok))
        else:
            if tok != CLOSE and prev != OPEN:
                out.append(b" ")
            out.append(tok)
        prev = tok
    out.append(b"\r\n")
    pieces.append(b"".join(out))
    return pieces


def astring(value: str | bytes) -> bytes:
    """A quoted string, or a Literal for 8-bit text or text with CR, LF or NUL (str: as UTF-8)."""
    raw = value.encode("utf-8") if isinstance(value, str) else bytes(value)
    if not raw.isascii() or b"\r" in raw or b"\n" in raw or b"\0" in raw:
        return Literal(raw)
    return b'"' + raw.replace(b"\\", b"\\\\").replace(b'"', b'\\"') + b'"'


def quote_mailbox(name: str) -> bytes:
    """A mailbox name as an astring, in modified UTF-7 (RFC 3501 5.1.3)."""
    return astring(imap_utf7.encode(name))


# ---------------------------------------------------------------------- responses


def response_end(buf: bytes | bytearray, start: int = 0) -> int | None:
    """Where the first whole response in `buf` (literals included) ends, before its CRLF; None if incomplete."""
    pos = start
    while True:
        end = buf.find(b"\r\n", pos)
        if end < 0:
            return None
        m = LITERAL_AT_END.search(buf, pos, end)
        if m is None:
            return end
        pos = end + 2 + int(m.group(1))
        if pos > len(buf):
            return None


class ResponseReader:
    """Whole responses from a blocking source: ``[line, literal, line, ..., line]``, CRLF stripped.

    readline: one line, CRLF kept (b"" at EOF); read: exactly n bytes or fewer at EOF;
    abort: the exception class for a broken connection.
    """

    def __init__(self, readline: Callable[[], bytes], read: Callable[[int], bytes],
                 abort: Callable[[str], Exception]) -> None:
        self.readline = readline
        self.read = read
        self.abort = abort

    def response(self) -> list[bytes]:
        parts = [self.line()]
        while True:
            m = LITERAL_AT_END.search(parts[-1])
            if not m:
                return parts
            size = int(m.group(1))
            literal = self.read(size)
            if len(literal) != size:
                raise self.abort("socket error: EOF in a literal")
            parts.append(literal)
            parts.append(self.line())

    def line(self) -> bytes:
        line = self.readline()
        if not line:
            raise self.abort("socket error: EOF")
        if not line.endswith(b"\r\n"):
            raise self.abort(f"socket error: unterminated line: {line[:200]!r}")
        return line[:-2]


MAX_RESPONSE = 64 * 1024 * 1024  # bytes of one response (literals included) a ChunkedReader holds at most


def split_response(buf: bytes, start: int, end: int) -> list[bytes]:
    """The response in ``buf[start:end]`` (as `response_end` found it) as ``[line, literal, ..., line]``."""
    parts: list[bytes] = []
    pos = start
    while True:
        stop = buf.find(b"\r\n", pos, end + 2)
        m = LITERAL_AT_END.search(buf, pos, stop)
        parts.append(buf[pos:stop])
        if m is None:
            return parts
        size = int(m.group(1))
        parts.append(buf[stop + 2 : stop + 2 + size])
        pos = stop + 2 + size


class ChunkedReader:
    """Whole responses from a stream read in large chunks (`fill`: the next bytes, b"" at EOF).

    Where ResponseReader asks for each line and literal, this asks for whatever has arrived
    (one call per ~256 KB on a fast link), and a caller that knows the shape of the responses
    it expects may take them straight from ``buf`` at ``pos`` (advancing ``pos``), with no
    per-response list: the pipelined opening's header FETCH answers. `rest()`: what was read
    past the last response taken, to be handed back to the stream's owner. A response larger
    than `limit` (a line or literal announced by a broken or hostile server) is refused.
    """

    def __init__(self, fill: Callable[[], bytes], abort: Callable[[str], Exception],
                 limit: int = MAX_RESPONSE) -> None:
        self.fill = fill
        self.abort = abort
        self.limit = limit
        self.buf = b""
        self.pos = 0

    def more(self) -> None:
        """Append what the stream has next (waits for at least one byte)."""
        if len(self.buf) - self.pos > self.limit:
            raise self.abort(f"socket error: a response longer than {self.limit} bytes")
        data = self.fill()
        if not data:
            raise self.abort("socket error: EOF")
        self.buf = self.buf[self.pos :] + data if self.pos < len(self.buf) else data
        self.pos = 0

    def response(self) -> list[bytes]:
        """The next whole response, as ResponseReader.response gives it."""
        while (end := response_end(self.buf, self.pos)) is None:
            self.more()
        parts = split_response(self.buf, self.pos, end)
        self.pos = end + 2
        return parts

    def rest(self) -> bytes:
        return self.buf[self.pos :]


class Tags:
    """Tags for the commands whose answers mailrules reads itself (pipelined commands, IDLE, NOOP).

    Distinct from imaplib's (which start with upper-case letters), so that a tagged answer
    can never be taken for one of imaplib's; unique in the process.
    """

    def __init__(self, prefix: bytes = b"mr") -> None:
        self.prefix = prefix
        self._count = itertools.count(1)
        self._lock = threading.Lock()

    def next(self, kind: bytes = b"") -> bytes:
        with self._lock:
            n = next(self._count)
        return b"%s%s%d" % (self.prefix, kind, n)


TAGS = Tags()


# ---------------------------------------------------------------------- Message-ID

_MESSAGE_ID = re.compile(r"^message-id:\s*(.*(?:\r?\n[ \t].*)*)", re.I | re.M)
# the same over ASCII bytes (str's \s also matches \x1c-\x1f), with no decoding of the whole block
_MESSAGE_ID_ASCII = re.compile(rb"^message-id:[ \t\n\r\f\v\x1c-\x1f]*(.*(?:\r?\n[ \t].*)*)", re.I | re.M)


def parse_message_id(raw: bytes) -> str:
    """The Message-ID in a header block (unfolded, whitespace collapsed); '' if it has none."""
    if raw.isascii():
        found = _MESSAGE_ID_ASCII.search(raw)
        return " ".join(found.group(1).decode("ascii").split()) if found else ""
    m = _MESSAGE_ID.search(raw.decode("utf-8", "replace"))
    if not m:
        return ""
    return " ".join(m.group(1).split())


def parse_copyuid(data: bytes | str) -> tuple[int, dict[int, int]] | None:
    """A COPYUID response code's text (RFC 4315): the destination UIDVALIDITY and source -> destination UIDs."""
    text = data.decode("utf-8", "replace") if isinstance(data, bytes) else data
    m = re.match(r"\s*(\d+)\s+([0-9:,]+)\s+([0-9:,]+)", text)
    if not m:
        return None
    src, dst = _expand_in_order(m.group(2)), _expand_in_order(m.group(3))
    if len(src) != len(dst):
        return None
    return int(m.group(1)), dict(zip(src, dst, strict=True))


def _expand_in_order(text: str) -> list[int]:
    """Expand a UID set keeping the server's order (COPYUID pairs in order)."""
    out: list[int] = []
    for part in text.split(","):
        if ":" in part:
            lo, hi = (int(x) for x in part.split(":"))
            step = 1 if hi >= lo else -1
            out.extend(range(lo, hi + step, step))
        elif part:
            out.append(int(part))
    return out
