"""`MessageView`: what a predicate sees of one message, parsed lazily.

The engine fetches only the parts the rule's predicates need (see `Predicate.needs`),
then hands each predicate a MessageView. Parsing happens on first access, with the
stdlib `email` package and its modern policy.

Parsing is bounded like `mailrules.mime` (depth, parts, size): beyond the bounds it raises
`MessageTooComplex`, which the engine's predicate isolation turns into a failure of that
message alone. Header lookups (`header`, `subject`, `message_id`, `from_addresses`) parse
the header block only, so they work (and error handling can name the message) however the
body is built. Raw 8-bit header text is UTF-8 (RFC 6532; invalid bytes become U+FFFD, as in
Dovecot), RFC 2047 encoded-words are decoded.
"""

from __future__ import annotations

import datetime as dt
import email
import email.policy
import re
from email.header import decode_header, make_header
from email.message import EmailMessage
from email.utils import getaddresses
from functools import cached_property

from .imap.wire import parse_message_id
from .mime import MAX_DEPTH, MAX_PARTS, MessageTooComplex, check_size, text_parts

__all__ = ["MessageTooComplex", "MessageView", "decode_header_bytes", "decode_rfc2047"]

_HEADER_END = re.compile(rb"\r?\n\r?\n")


# A run of RFC 2047 encoded-words (the blanks between adjacent ones are not part of the text).
_ENCODED_WORDS = re.compile(r"=\?[^?\s]+\?[QqBb]\?[^?\s]*\?=(?:\s+=\?[^?\s]+\?[QqBb]\?[^?\s]*\?=)*")


def decode_rfc2047(value: str) -> str:
    """Decode RFC 2047 encoded-words; undecodable input is returned as it is.

    Text that is not ASCII (raw UTF-8 in a header, RFC 6532, already decoded by
    `decode_header_bytes`) is kept as written around the encoded-words.
    """
    if not value.isascii():
        return _ENCODED_WORDS.sub(lambda m: _decode_ascii(m.group(0)), value)
    return _decode_ascii(value)


def _decode_ascii(value: str) -> str:
    try:
        return str(make_header(decode_header(value)))
    except Exception:  # noqa: BLE001 - malformed headers are common in real mail
        return value


def decode_header_bytes(data: bytes) -> str:
    """A header block as text: raw 8-bit bytes are UTF-8 (RFC 6532), as Dovecot reads them.

    Bytes that are not valid UTF-8 (an old latin-1 header) become U+FFFD, the replacement
    character, as in Dovecot's own header decoding (`uni_utf8_get_valid_data`), so that a
    client-side predicate sees what the server's SEARCH compares with.
    """
    return data.decode("utf-8", errors="replace")


class MessageView:
    """One message as predicates see it.

    raw_header: the header block (bytes) or None if not fetched; raw: the whole message
    (bytes) or None; size and flags as the server reported them; arrived: the arrival date
    (INTERNALDATE, an aware datetime) or None if not fetched.
    """

    def __init__(
        self,
        uid: int,
        *,
        raw: bytes | None = None,
        raw_header: bytes | None = None,
        size: int | None = None,
        flags: tuple[str, ...] = (),
        arrived: dt.datetime | None = None,
    ) -> None:
        self.uid = uid
        self.raw = raw
        self._raw_header = raw_header
        self.size = size if size is not None else (len(raw) if raw is not None else None)
        self.flags = flags  # system flags and keywords, as the server reported them ("flags" need)
        self.arrived = arrived  # when it arrived in the mailbox (INTERNALDATE), time-zone aware ("arrival" need)

    @property
    def keywords(self) -> tuple[str, ...]:
        """The keywords among `flags` (those not starting with a backslash)."""
        return tuple(f for f in self.flags if not f.startswith("\\"))

    @cached_property
    def email(self) -> EmailMessage:
        """The parsed message (only the header if the body was not fetched).

        Raises MessageTooComplex for a message too large or nested too deeply to parse.
        """
        data = self.raw if self.raw is not None else (self._raw_header or b"")
        check_size(data)
        try:
            msg = email.message_from_bytes(data, policy=email.policy.default)
            _check_structure(msg)
        except RecursionError:
            raise MessageTooComplex("message nested too deeply to parse") from None
        return msg  # type: ignore[return-value]

    @cached_property
    def _compat_headers(self) -> email.message.Message:
        data = _header_block(self.raw) if self.raw is not None else (self._raw_header or b"")
        check_size(data)
        return email.message_from_string(decode_header_bytes(data), policy=email.policy.compat32)

    def header(self, name: str) -> list[str]:
        """Every occurrence of header `name`, RFC 2047-decoded (raw UTF-8 read as UTF-8), unfolded."""
        values = self._compat_headers.get_all(name) or []
        out = []
        for v in values:
            text = str(v) if not isinstance(v, str) else v
            text = decode_rfc2047(text)
            out.append(" ".join(text.split()))
        return out

    @property
    def subject(self) -> str:
        values = self.header("Subject")
        return values[0] if values else ""

    @property
    def message_id(self) -> str:
        """The Message-ID, read as the pipelined opening reads it (`mailrules.imap.wire.parse_message_id`)."""
        data = _header_block(self.raw) if self.raw is not None else (self._raw_header or b"")
        check_size(data)
        return parse_message_id(data)

    @cached_property
    def from_addresses(self) -> list[str]:
        """The bare addresses of the From: header(s), as written (raw UTF-8 ones too: RFC 6532).

        Parsed before RFC 2047 decoding, where an encoded display name is one word: decoded
        first, ``=?utf-8?q?Doe=2C_John?= <j@example.org>`` would split at its comma. An
        address itself is never encoded-words.
        """
        values = self._compat_headers.get_all("From") or []
        return [addr for _name, addr in getaddresses([" ".join(str(v).split()) for v in values]) if addr]

    @cached_property
    def body_text(self) -> str:
        """The decoded text of every text/* part that is not an attachment, joined by newlines."""
        if self.raw is not None:
            fast = text_parts(self.raw)  # the same text, without the email package's cost
            if fast is not None:
                return "\n".join(fast)
        msg = self.email
        parts = []
        for part in _parts(msg):
            if part.is_multipart():
                continue
            if part.get_content_maintype() != "text":
                continue
            if part.get_content_disposition() == "attachment":
                continue
            try:
                parts.append(part.get_content())
            except Exception:  # noqa: BLE001 - bad charsets/encodings: fall back to bytes
                payload = part.get_payload(decode=True) or b""
                parts.append(payload.decode("utf-8", errors="replace"))
        return "\n".join(p if isinstance(p, str) else str(p) for p in parts)


def _header_block(raw: bytes) -> bytes:
    """The header of a whole message: up to its first empty line (the body is never parsed for headers)."""
    if raw[:1] in (b"\r", b"\n"):
        return b""
    m = _HEADER_END.search(raw)
    return raw if m is None else raw[: m.end()]


def _parts(msg: email.message.Message) -> list[email.message.Message]:
    """Every part of `msg`, depth first, like Message.walk() but without recursion."""
    out: list[email.message.Message] = []
    stack = [(msg, 0)]
    while stack:
        part, depth = stack.pop()
        out.append(part)
        if len(out) > MAX_PARTS:
            raise MessageTooComplex(f"message with more than {MAX_PARTS} MIME parts")
        if part.is_multipart():
            children = part.get_payload()
            if depth + 1 > MAX_DEPTH and children:
                raise MessageTooComplex(f"message nested more than {MAX_DEPTH} levels deep")
            stack.extend((child, depth + 1) for child in reversed(children))
    return out


def _check_structure(msg: email.message.Message) -> None:
    """Raise MessageTooComplex if the parsed message is beyond the bounds of `mailrules.mime`."""
    _parts(msg)
