"""Build real RFC 5322 messages for tests: ``make_message(...) -> bytes``.

Example::

    raw = make_message(subject="Grüße", from_="Zoë <zoe@example.org>", body="Hi",
                       html="<p>Hi</p>", attachments=[("a.pdf", b"%PDF-1.4 ...")],
                       headers={"List-Id": "<dev.lists.example.org>"})
    client.append("INBOX", raw)

The result uses CRLF line endings (as IMAP APPEND expects), non-ASCII headers are RFC 2047
encoded, and every message gets a fresh Message-ID unless one is given. An address that
cannot be RFC 2047 encoded (``u@bücher.example``: non-ASCII in the address itself) makes the
header raw UTF-8 (RFC 6532), as a server that speaks SMTPUTF8 delivers it; ``utf8=True``
writes every non-ASCII header that way.
"""

from __future__ import annotations

import email.policy
import mimetypes
from collections.abc import Iterable, Mapping, Sequence
from datetime import datetime
from email.message import EmailMessage
from email.utils import format_datetime, make_msgid, parseaddr

__all__ = ["Attachment", "make_message"]

Attachment = tuple[str, bytes | str] | tuple[str, bytes | str, str]
"""``(filename, content)`` or ``(filename, content, "type/subtype")``; str content is UTF-8."""

_PARAM_HEADERS = ("from", "to", "cc", "subject", "date", "message-id")
_PAD_LINE = "x" * 76


def make_message(
    *,
    subject: str = "Test",
    from_: str = "Alice <alice@example.org>",
    to: str | Sequence[str] = "bob@example.org",
    cc: str | Sequence[str] | None = None,
    body: str = "Hello",
    html: str | None = None,
    headers: Mapping[str, str | None] | Iterable[tuple[str, str | None]] | None = None,
    date: datetime | None = None,
    message_id: str | None = None,
    attachments: Iterable[Attachment] = (),
    size_padding: int = 0,
    charset: str = "utf-8",
    utf8: bool = False,
) -> bytes:
    """Return a complete RFC 5322 message as bytes (CRLF line endings).

    - ``to``/``cc``: one address string or a list of them.
    - ``body``: the text/plain part; ``html`` adds a text/html alternative
      (multipart/alternative).  ``charset`` is the charset of both text parts.
    - ``headers``: extra headers, a dict or a list of ``(name, value)`` pairs (a list may
      repeat a name, e.g. several ``Received``).  A name that is also a parameter
      (From, To, Cc, Subject, Date, Message-ID) replaces it; a value of ``None`` removes
      that header, e.g. ``headers={"Date": None}`` for a message without a Date.
    - ``date``: the Date header (naive datetimes are local time); default now.
    - ``message_id``: angle brackets are added if missing; default a fresh unique id.
    - ``attachments``: ``(filename, content)`` or ``(filename, content, mime_type)``;
      the type is guessed from the file name when omitted.  Makes multipart/mixed.
    - ``size_padding``: grow the text body by at least this many bytes (lines of ``x``),
      for size-based rules and large-message tests.
    - ``utf8``: write non-ASCII header text as raw UTF-8 (RFC 6532) instead of RFC 2047
      encoded-words. Without it, raw UTF-8 is used only where it must be: for addresses
      with non-ASCII characters (``make_message(from_="u@bücher.example")``).
    """
    msg = EmailMessage(policy=email.policy.default)
    msg["From"] = from_
    msg["To"] = to if isinstance(to, str) else ", ".join(to)
    if cc:
        msg["Cc"] = cc if isinstance(cc, str) else ", ".join(cc)
    msg["Subject"] = subject
    msg["Date"] = format_datetime((date or datetime.now()).astimezone())
    if message_id is None:
        domain = parseaddr(from_)[1].rpartition("@")[2]
        domain = domain if domain and domain.isascii() else "mailrules.test"
        message_id = make_msgid(domain=domain)
    elif not message_id.startswith("<"):
        message_id = f"<{message_id}>"
    msg["Message-ID"] = message_id
    msg["MIME-Version"] = "1.0"

    _extra_headers(msg, headers)

    text = body
    if size_padding > 0:
        lines = -(-size_padding // (len(_PAD_LINE) + 2))  # CRLF per line
        text = text.rstrip("\n") + "\n" + "\n".join([_PAD_LINE] * lines) + "\n"
    msg.set_content(text, charset=charset)
    if html is not None:
        msg.add_alternative(html, subtype="html", charset=charset)
    _add_attachments(msg, attachments)
    if utf8 or _non_ascii_address(msg):  # RFC 2047 cannot encode an address: RFC 6532 writes it as it is
        return msg.as_bytes(policy=email.policy.SMTPUTF8)
    return msg.as_bytes(policy=email.policy.SMTP)


def _extra_headers(msg: EmailMessage, headers: Mapping[str, str | None] | Iterable[tuple[str, str | None]] | None
                   ) -> None:
    """`make_message`'s ``headers``: the first of a parameter's name replaces it (None removes it)."""
    replaced: set[str] = set()
    pairs = headers.items() if isinstance(headers, Mapping) else (headers or ())
    for name, value in pairs:
        key = name.lower()
        if key in _PARAM_HEADERS and key not in replaced:
            replaced.add(key)
            if value is None:
                del msg[name]
            elif name in msg:
                msg.replace_header(name, value)  # keeps the header's position
            else:
                msg[name] = value
        elif value is not None:
            msg[name] = value


def _add_attachments(msg: EmailMessage, attachments: Iterable[Attachment]) -> None:
    """`make_message`'s ``attachments``: text as UTF-8 text, anything else as bytes of its type."""
    for attachment in attachments:
        filename, content = attachment[0], attachment[1]
        mime_type = attachment[2] if len(attachment) > 2 else None  # type: ignore[misc]
        if mime_type is None:
            mime_type = mimetypes.guess_type(filename)[0] or "application/octet-stream"
        maintype, _, subtype = mime_type.partition("/")
        if isinstance(content, str):
            if maintype == "text":
                msg.add_attachment(content, subtype=subtype, filename=filename, charset="utf-8")
                continue
            content = content.encode("utf-8")
        msg.add_attachment(content, maintype=maintype, subtype=subtype, filename=filename)


def _non_ascii_address(msg: EmailMessage) -> bool:
    """Whether an address header holds an address with non-ASCII characters (not its display name)."""
    for _name, value in msg.items():
        for address in getattr(value, "addresses", ()):
            if not address.addr_spec.isascii():
                return True
    return False
