"""Evaluate a criteria tree (`mailrules.model`) on one message, offline, as Dovecot's SEARCH does.

One module because it mirrors one piece of Dovecot (its search: normalisation, address
forms, the MIME walk); the rules are read side by side when comparing with the server.

The same tree compiles to IMAP SEARCH keys (`mailrules.criteria.compile_search`); this module
answers, without a server, what that SEARCH answers on Dovecot 2.3 (verified key by key on a
real Dovecot by tests/test_local_search_dovecot.py, a differential test). What Dovecot does,
and therefore what this does:

* Strings are compared as Dovecot's i;unicode-casemap comparator does: every character is
  mapped to its simple titlecase and then canonically decomposed (no compatibility
  decomposition: "fi" does not find U+FB01; U+00DF sharp s stays itself). A key matches
  when it is a substring of the normalised text.
* SUBJECT: every Subject field, unfolded, runs of spaces/tabs compressed to one space, then
  RFC 2047 encoded words decoded (the white space between two encoded words dropped).
* FROM/TO/CC/BCC: every such field, parsed as an address list and rewritten in Dovecot's
  normal form (``Name <local@domain>``, ``"Quoted, Name" <x@y>``, bare addresses as
  ``<x@y>``, a comment as the name when there is none, ``group: <a@b>, <c@d>;``, missing
  parts as MISSING_MAILBOX / MISSING_DOMAIN), then encoded words decoded.
* HEADER name value: every field of that name, unfolded, encoded words decoded, white space
  kept. An empty value tests that the field exists (also for the other header keys).
* BODY: the decoded (transfer encoding and charset) bodies of the parts whose type is
  text/* or message/* (no type: text/plain), in a MIME tree; never a header, not even a
  MIME part's, nor a multipart preamble/epilogue, nor a non-text part. Line ends are LF
  (a key with CR LF finds nothing; one with LF spans lines). RFC 2231 continued parameters
  (boundary*0, boundary*1) are joined.
* TEXT: BODY plus every header line ("Name: value") of the message and of its MIME parts.
* BEFORE/ON/SINCE: the calendar date of INTERNALDATE in its own zone (Dovecot uses its own
  time zone: pass the INTERNALDATE the server reports). SENT*: the date of the first Date
  field in the field's own zone; a missing or unparsable Date counts as 1970-01-01.
* OLDER n: INTERNALDATE < now - n; YOUNGER n: INTERNALDATE >= now - n (n at least 1).
* A bare CR or LF is a line end (Dovecot's APPEND stores it so): `LocalMessage.stored`.
* LARGER/SMALLER: RFC822.SIZE (line ends counted as CRLF); flags exactly; keywords without
  regard to case.
* Raw search keys cannot be evaluated offline: `NotEvaluableOffline`.

Parsing is bounded by the limits every MIME walk of mailrules shares (`mailrules.mime`:
depth, parts, size, time; plus `MAX_HEADER_FIELDS`); a message beyond them raises
`MessageTooComplex` rather than giving an answer that may be wrong.
"""

from __future__ import annotations

import datetime as dt
import re
import unicodedata
from dataclasses import dataclass, field
from functools import cached_property, lru_cache

from .criteria import FLAG_KEYS
from .dovecot_parse import (
    base64_prefix,
    content_type,
    decode_words,
    qp_body,
    sent_date,
    to_text,
    transfer_encoding,
)
from .mime import MAX_DEPTH as MAX_DEPTH  # the shared bound, named here for callers
from .mime import MAX_PARTS, Bounds, MessageTooComplex, check_size
from .model import (
    Age,
    All,
    AnyOf,
    ArrivalDate,
    Criterion,
    Flag,
    Header,
    Keyword,
    Location,
    Not,
    Raw,
    SentDate,
    Size,
    Text,
)

MAX_HEADER_FIELDS = 10000  # header fields in one header block
EPOCH_DATE = dt.date(1970, 1, 1)
_ANY_LINE_END = re.compile(rb"\r\n|\r|\n")


class NotEvaluableOffline(Exception):
    """A criterion (raw IMAP search keys) that only the server can evaluate."""

    def __init__(self, criterion: Criterion, location: Location | None = None) -> None:
        where = f"{location}: " if location is not None else ""
        super().__init__(f"{where}raw IMAP search keys {getattr(criterion, 'text', '')!r} "
                         "cannot be evaluated offline (only the server can)")
        self.criterion = criterion
        self.location = location


# --------------------------------------------------------------------------- the message


@dataclass(frozen=True)
class LocalMessage:
    """One message as the server stores it.

    raw: the RFC 5322 bytes; flags: system flags (``\\Seen``...); keywords; internaldate:
    an aware datetime (its zone is the one dates are compared in); size: RFC822.SIZE
    (default: the raw bytes with every line end counted as CRLF).
    """

    raw: bytes
    flags: frozenset[str] = frozenset()
    keywords: frozenset[str] = frozenset()
    internaldate: dt.datetime = field(default_factory=lambda: dt.datetime.now(dt.UTC))
    size: int | None = None

    def __post_init__(self) -> None:
        if self.internaldate.tzinfo is None:
            raise ValueError("LocalMessage.internaldate must be an aware datetime")

    @property
    def rfc822_size(self) -> int:
        if self.size is not None:
            return self.size
        return len(self.stored)

    @cached_property
    def stored(self) -> bytes:
        """The message as Dovecot stores and searches it: a bare CR or LF becomes a line end."""
        return _ANY_LINE_END.sub(b"\r\n", self.raw)

    @cached_property
    def parsed(self) -> _Parsed:
        return _Parsed(self.stored)


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class Verdict:
    """The result of a criteria tree and the sub-criterion that decided it.

    decided_by: for a non-match, the first failing part (a leaf, or an empty AnyOf); for a
    match, the leaf (or empty All) that made the outermost node true. path: child indexes
    from the root to decided_by.
    """

    matched: bool
    decided_by: Criterion
    path: tuple[int, ...] = ()


def matches(criterion: Criterion, message: LocalMessage, *, now: dt.datetime | None = None,
            location: Location | None = None) -> bool:
    """Whether `message` matches `criterion` (what Dovecot's UID SEARCH would say)."""
    return explain(criterion, message, now=now, location=location).matched


def explain(criterion: Criterion, message: LocalMessage, *, now: dt.datetime | None = None,
            location: Location | None = None) -> Verdict:
    """`matches` plus the deciding sub-criterion (see `Verdict`).

    now: for older_than/younger_than (default: the current time). location: named in
    `NotEvaluableOffline` (the rule's place in its file).
    """
    return _Evaluator(message, now or dt.datetime.now(dt.UTC), location).verdict(criterion, ())


class _Evaluator:
    def __init__(self, message: LocalMessage, now: dt.datetime, location: Location | None) -> None:
        self.msg = message
        self.now = now
        self.location = location

    def verdict(self, node: Criterion, path: tuple[int, ...]) -> Verdict:
        if isinstance(node, All):
            if not node.children:
                return Verdict(True, node, path)
            last = None
            for i, child in enumerate(node.children):
                last = self.verdict(child, (*path, i))
                if not last.matched:
                    return last
            assert last is not None
            return last
        if isinstance(node, AnyOf):
            if not node.children:
                return Verdict(False, node, path)
            first = None
            for i, child in enumerate(node.children):
                v = self.verdict(child, (*path, i))
                if v.matched:
                    return v
                first = first or v
            assert first is not None
            return first
        if isinstance(node, Not):
            inner = self.verdict(node.child, (*path, 0))
            return Verdict(not inner.matched, inner.decided_by, inner.path)
        return Verdict(self.leaf(node), node, path)

    def leaf(self, node: Criterion) -> bool:
        msg = self.msg
        if isinstance(node, Text):
            return self.text(node)
        if isinstance(node, Header):
            return header_leaf(node, msg.parsed.fields(node.name))
        if isinstance(node, Size):
            return msg.rfc822_size > node.size if node.op == "larger" else msg.rfc822_size < node.size
        if isinstance(node, Age):
            cutoff = self.now - dt.timedelta(seconds=max(int(node.seconds), 1))
            return msg.internaldate < cutoff if node.op == "older" else msg.internaldate >= cutoff
        if isinstance(node, ArrivalDate):
            return _compare_day(node.op, msg.internaldate.date(), node.date)
        if isinstance(node, SentDate):
            return _compare_day(node.op, msg.parsed.sent_date, node.date)
        if isinstance(node, Flag):
            if node.flag not in FLAG_KEYS:
                raise ValueError(f"unknown system flag {node.flag!r}")
            present = node.flag.lower() in {f.lower() for f in msg.flags}
            return present == node.present
        if isinstance(node, Keyword):
            present = node.name.lower() in {k.lower() for k in msg.keywords}
            return present == node.present
        if isinstance(node, Raw):
            raise NotEvaluableOffline(node, self.location)
        raise TypeError(f"not a criterion: {node!r}")

    def text(self, node: Text) -> bool:
        parsed = self.msg.parsed
        if node.field == "subject":
            return header_leaf(node, parsed.fields("Subject"))
        if node.field in ("from", "to", "cc", "bcc"):
            return header_leaf(node, parsed.fields(node.field))
        if node.field == "body":
            return not node.value or _norm(node.value) in parsed.body_text
        if node.field == "text":
            return not node.value or _norm(node.value) in parsed.full_text
        raise ValueError(f"unknown text field {node.field!r}")


def header_leaf(node: Criterion, values: list[bytes]) -> bool:
    """A leaf that reads one header field (`Header`, `Text` on subject/from/to/cc/bcc, `SentDate`)
    over the unfolded values of every field of that name, in order: what `matches` answers on a
    message with exactly those fields (`mailrules.local_headers` evaluates fetched fields so)."""
    if isinstance(node, Header):
        return _search_fields(values, node.value, _plain_value)
    if isinstance(node, Text) and node.field == "subject":
        return _search_fields(values, node.value, _compressed_value)
    if isinstance(node, Text) and node.field in ("from", "to", "cc", "bcc"):
        return _search_fields(values, node.value, _address_value)
    if isinstance(node, SentDate):
        return _compare_day(node.op, (sent_date(values[0]) if values else None) or EPOCH_DATE, node.date)
    raise TypeError(f"not a criterion on one header field: {node!r}")


def _compare_day(op: str, day: dt.date, bound: dt.date) -> bool:
    if op == "before":
        return day < bound
    if op == "on":
        return day == bound
    if op == "since":
        return day >= bound
    raise ValueError(f"unknown date comparison {op!r}")


def _search_fields(values: list[bytes], key: str, render) -> bool:
    """Dovecot's header search: an empty key tests existence; else a substring of any field."""
    if not values:
        return False
    if key == "":
        return True
    needle = _norm(key)
    return any(needle in _field_text(v, render) for v in values)


@lru_cache(maxsize=32768)  # ~ a few MB at most: distinct header fields of one large account
def _field_text(value: bytes, render) -> str:
    """A field as SEARCH compares it: rendered, decoded, normalised. Cached: `mailrules suggest`
    evaluates many rules over the same headers, and address rendering dominated its time."""
    return decode_words(render(value), _norm)


def _plain_value(value: bytes) -> bytes:
    return value


def _compressed_value(value: bytes) -> bytes:
    """Runs of spaces and tabs to one space, leading ones dropped (Dovecot's compress_lwsp)."""
    return re.sub(rb"[ \t]+", b" ", value).lstrip(b" ")


def _address_value(value: bytes) -> bytes:
    return write_addresses(_simple_address(value) or parse_addresses(value)).encode("utf-8", "surrogateescape")


_DOT_ATOM = rb"[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+(?:\.[A-Za-z0-9!#$%&'*+\-/=?^_`{|}~]+)*"
_SIMPLE_ADDRESS = re.compile(
    rb' *(?:(?:"(?P<quoted>[^"\\\r\n]*)"|(?P<words>[A-Za-z0-9!#$%&\'*+\-/=?^_`{|}~.]+(?: [A-Za-z0-9!#$%&\'*+\-/=?^_`{|}~.]+)*))'
    rb" *)?<(?P<local>" + _DOT_ATOM + rb")@(?P<domain>" + _DOT_ATOM + rb")> *"
    rb"| *(?P<bare_local>" + _DOT_ATOM + rb")@(?P<bare_domain>" + _DOT_ATOM + rb") *")


def _simple_address(value: bytes) -> list[Address] | None:
    """One plain address (`a@b`, `<a@b>`, `Name <a@b>`, `"Name" <a@b>`, ASCII, no comment) parsed
    without the general parser (which dominated local evaluation of From rules); None for
    anything else. Pinned to `parse_addresses` by tests/test_local_search.py."""
    m = _SIMPLE_ADDRESS.fullmatch(value)
    if m is None:
        return None
    if m.group("bare_local") is not None:
        return [Address(None, None, m.group("bare_local").decode("ascii"), m.group("bare_domain").decode("ascii"))]
    quoted, words = m.group("quoted"), m.group("words")
    text = quoted if quoted is not None else words
    name = text.decode("utf-8", "surrogateescape") if text is not None else None
    return [Address(name, None, m.group("local").decode("ascii"), m.group("domain").decode("ascii"))]


# --------------------------------------------------------------------------- normalisation


@lru_cache(maxsize=4096)
def _norm_char(ch: str) -> str:
    title = ch.title()
    if len(title) != 1:  # a special-casing expansion: the simple mapping keeps the character
        title = ch
    return unicodedata.normalize("NFD", title)


def _norm(text: str) -> str:
    """Dovecot's i;unicode-casemap form: simple titlecase, then canonical decomposition."""
    if text.isascii():
        return text.upper()
    return "".join(_norm_char(c) for c in text)


def _utf8(data: bytes) -> str:
    return data.decode("utf-8", "replace")


def decode_header_words(value: bytes) -> str:
    """RFC 2047 encoded words decoded as Dovecot does (`mailrules.dovecot_parse.decode_words`)."""
    return decode_words(value)


# --------------------------------------------------------------------------- addresses

_ATEXT = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789!#$%&'*+-/=?^_`{|}~")


def _is_atext(c: int) -> bool:
    return c in _ATEXT or c >= 0x80


@dataclass
class Address:
    """One parsed address (or a group start: domain None and mailbox the group name; or a
    group end: everything None)."""

    name: str | None = None
    route: str | None = None
    mailbox: str | None = None
    domain: str | None = None


class _AddrParser:
    """A port of the essentials of Dovecot's message_address_parse (FILL_MISSING)."""

    def __init__(self, data: bytes) -> None:
        self.s = data
        self.i = 0
        self.last_comment: str | None = None

    def skip_lwsp(self) -> bool:
        s = self.s
        while self.i < len(s):
            c = s[self.i]
            if c in b" \t\r\n":
                self.i += 1
            elif c == 0x28:  # (
                self.last_comment = self.comment()
            else:
                return True
        return False

    def comment(self) -> str:
        s, depth, out = self.s, 0, bytearray()
        while self.i < len(s):
            c = s[self.i]
            self.i += 1
            if c == 0x5C and self.i < len(s):  # backslash
                out.append(s[self.i])
                self.i += 1
                continue
            if c == 0x28:
                depth += 1
                if depth == 1:
                    continue
            elif c == 0x29:
                depth -= 1
                if depth == 0:
                    break
            if c not in b"\r\n":
                out.append(c)
        return out.decode("utf-8", "surrogateescape")

    def peek(self) -> int | None:
        return self.s[self.i] if self.i < len(self.s) else None

    def atom(self, dots: bool) -> str:
        start = self.i
        while self.i < len(self.s) and (_is_atext(self.s[self.i]) or (dots and self.s[self.i] == 0x2E)):
            self.i += 1
        word = self.s[start : self.i].decode("utf-8", "surrogateescape")
        self.skip_lwsp()
        return word

    def quoted(self) -> str:
        s, out = self.s, bytearray()
        self.i += 1
        while self.i < len(s):
            c = s[self.i]
            self.i += 1
            if c == 0x22:
                break
            if c == 0x5C and self.i < len(s):
                out.append(s[self.i])
                self.i += 1
            elif c not in b"\r\n":
                out.append(c)
        self.skip_lwsp()
        return out.decode("utf-8", "surrogateescape")

    def phrase(self) -> str | None:
        words = []
        while (c := self.peek()) is not None and (c == 0x22 or _is_atext(c) or c == 0x2E):
            words.append(self.quoted() if c == 0x22 else self.atom(dots=True))
        return " ".join(words) if words else None

    def local_or_domain(self) -> str:
        parts = []
        while (c := self.peek()) is not None and (c == 0x22 or _is_atext(c) or c == 0x2E or c == 0x5B):
            if c == 0x22:
                parts.append(self.quoted())
            elif c == 0x5B:  # domain literal
                end = self.s.find(b"]", self.i)
                end = len(self.s) if end < 0 else end + 1
                parts.append(self.s[self.i : end].decode("utf-8", "surrogateescape"))
                self.i = end
                self.skip_lwsp()
            else:
                parts.append(self.atom(dots=True))
        return "".join(parts)

    def addr_spec(self, addr: Address) -> None:
        self.last_comment = None
        local = self.local_or_domain()
        addr.mailbox = local or "MISSING_MAILBOX"
        if self.peek() == 0x40:  # @
            self.i += 1
            self.skip_lwsp()
            addr.domain = self.local_or_domain() or "MISSING_DOMAIN"
        else:
            addr.domain = "MISSING_DOMAIN"
        if addr.name is None and self.last_comment is not None:
            addr.name = self.last_comment

    def angle_addr(self, addr: Address) -> None:
        self.i += 1  # <
        self.skip_lwsp()
        if self.peek() == 0x40:  # a route: @a,@b:
            end = self.s.find(b":", self.i)
            if end >= 0:
                addr.route = self.s[self.i : end].decode("utf-8", "surrogateescape").strip()
                self.i = end + 1
                self.skip_lwsp()
        if self.peek() == 0x3E:  # <>
            addr.mailbox, addr.domain = "MISSING_MAILBOX", "MISSING_DOMAIN"
        else:
            saved_name = addr.name
            self.addr_spec(addr)
            addr.name = saved_name
        if self.peek() == 0x3E:
            self.i += 1
        self.skip_lwsp()

    def mailbox(self) -> Address:
        addr = Address()
        start = self.i
        name = self.phrase()
        if self.peek() == 0x3C:  # <
            addr.name = name
            self.angle_addr(addr)
        else:
            self.i = start
            self.addr_spec(addr)
        return addr

    def parse(self) -> list[Address]:
        out: list[Address] = []
        if not self.skip_lwsp():
            return out
        while self.i < len(self.s) and len(out) < MAX_HEADER_FIELDS:
            before = self.i
            start = self.i
            name = self.phrase()
            if self.peek() == 0x3A and name is not None:  # group
                self.i += 1
                self.skip_lwsp()
                out.append(Address(mailbox=name))
                while self.i < len(self.s) and self.peek() != 0x3B:
                    b = self.i
                    out.append(self.mailbox())
                    if self.peek() == 0x2C:
                        self.i += 1
                        self.skip_lwsp()
                    elif self.i == b:
                        self.i += 1
                if self.peek() == 0x3B:
                    self.i += 1
                self.skip_lwsp()
                out.append(Address())
            else:
                self.i = start
                out.append(self.mailbox())
            if self.peek() == 0x2C:
                self.i += 1
                self.skip_lwsp()
            elif self.i == before or self.i < len(self.s):
                self.i = max(self.i, before + 1)
                self.skip_lwsp()
        return out


def parse_addresses(value: bytes) -> list[Address]:
    """An address list as Dovecot's message_address_parse reads it (with FILL_MISSING)."""
    return _AddrParser(value).parse()


# atext and every non-ASCII character (_DOTS: and '.'), written as the ASCII characters they
# exclude: the same sets, but a class spelled up to U+10FFFF took ~8 ms of every start to compile.
_UNQUOTED = re.compile(r'[^\x00-\x20"(),.:;<>@\[\\\]\x7f]*')
_UNQUOTED_DOTS = re.compile(r'[^\x00-\x20"(),:;<>@\[\\\]\x7f]*')


def _maybe_quote(text: str, escape_dot: bool) -> str:
    if (_UNQUOTED if escape_dot else _UNQUOTED_DOTS).fullmatch(text):
        return text
    return '"' + re.sub(r"([\"\\'])", r"\\\1", text) + '"'


def write_addresses(addrs: list[Address]) -> str:
    """Dovecot's message_address_write: the normal form that FROM/TO/CC/BCC search."""
    out: list[str] = []
    first, in_group = True, False
    for a in addrs:
        if not first:
            out.append(", ")
        first = False
        if a.domain is None:
            if not in_group:
                if a.mailbox:
                    out.append(a.mailbox if "=?" in a.mailbox else _maybe_quote(a.mailbox, True))
                else:
                    out.append('""')
                out.append(": ")
                first = True
            else:
                text = "".join(out)
                text = text[:-2] if text.endswith(", ") else text[:-1] if text.endswith(": ") else text
                out = [text, ";"]
            in_group = not in_group
            continue
        mailbox = a.mailbox or ""
        if a.name is not None:
            out.append(a.name if "=?" in a.name else _maybe_quote(a.name, True))
        if a.route is not None or mailbox or a.domain:
            if a.name:
                out.append(" ")
            out.append("<")
            if a.route is not None:
                out.append(a.route + ":")
            out.append('""' if not mailbox else _maybe_quote(mailbox, False))
            if a.domain:
                out.append("@" + a.domain)
            out.append(">")
    return "".join(out)


# --------------------------------------------------------------------------- MIME


_LINE_END = re.compile(rb"\r?\n")


def _split_header(raw: bytes) -> tuple[bytes, bytes]:
    """(header block, body): the header ends at the first empty line."""
    if raw.startswith(b"\r\n"):
        return b"", raw[2:]
    if raw.startswith(b"\n"):
        return b"", raw[1:]
    m = re.search(rb"\r?\n\r?\n", raw)
    if m is None:
        return raw, b""
    return raw[: m.start()], raw[m.end() :]


def _fields(header: bytes) -> list[tuple[bytes, bytes, bytes]]:
    """(name, middle, unfolded value) of each field; continuation lines join their field."""
    out: list[tuple[bytes, bytes, bytes]] = []
    for line in _LINE_END.split(header):
        if line[:1] in (b" ", b"\t") and out:
            name, middle, value = out[-1]  # unfolded; a TAB that starts the line becomes a space
            out[-1] = (name, middle, value + b" " + line[1:])
            continue
        colon = line.find(b":")
        if colon <= 0:
            continue
        name = line[:colon].rstrip(b" \t")
        rest = line[colon + 1 :]
        value = rest.lstrip(b" \t")
        out.append((name, line[colon : colon + 1 + len(rest) - len(value)], value))
        if len(out) > MAX_HEADER_FIELDS:
            raise MessageTooComplex(f"more than {MAX_HEADER_FIELDS} header fields")
    return out


def _values(fields: list[tuple[bytes, bytes, bytes]], name: bytes) -> list[bytes]:
    return [value for n, _m, value in fields if n.lower() == name]


@dataclass(frozen=True)
class _PartType:
    """How Dovecot reads one part's Content-* fields (see `_part_type`)."""

    structure: str  # "multipart", "rfc822" or "leaf"
    boundary: str | None
    child_default: str
    searchable: bool
    charset: str | None
    cte: str | None


def _part_type(fields: list[tuple[bytes, bytes, bytes]], default: str) -> _PartType:
    """The MIME structure from the first Content-Type (message-parser.c), whether the body is
    searched from the last one (message-search.c: text/* or message/*, or none at all), the
    charset from the first (message-decoder.c) and the transfer encoding from the last."""
    types = _values(fields, b"content-type")
    encodings = _values(fields, b"content-transfer-encoding")
    cte = transfer_encoding(encodings[-1]) if encodings else "7bit"
    if not types:
        structure = "rfc822" if default == "message/rfc822" else "leaf"
        return _PartType(structure, None, "text/plain", True, None, cte)
    first, valid, params = content_type(types[0])
    last = content_type(types[-1])[0] if len(types) > 1 else first
    searchable = last.startswith(("text/", "message/"))
    boundary = params.get("boundary") if valid and first.startswith("multipart/") else None
    structure = "multipart" if boundary else "rfc822" if first == "message/rfc822" else "leaf"
    child_default = "message/rfc822" if first == "multipart/digest" else "text/plain"
    return _PartType(structure, boundary, child_default, searchable, params.get("charset"), cte)


def _split_multipart(body: bytes, boundary: bytes) -> list[bytes]:
    marker = b"--" + boundary
    parts: list[bytes] = []
    start: int | None = None
    pos = 0
    while (i := body.find(marker, pos)) >= 0:
        pos = i + 1
        if i and body[i - 1 : i] != b"\n":
            continue
        j = i + len(marker)
        close = body[j : j + 2] == b"--"
        eol = body.find(b"\n", j)
        end = i - 1 if i else 0
        if end and body[end - 1 : end] == b"\r":
            end -= 1
        if start is not None:
            parts.append(body[start:end])
            if len(parts) > MAX_PARTS:
                raise MessageTooComplex(f"more than {MAX_PARTS} MIME parts")
        if close:
            return parts
        start = pos = eol + 1 if eol >= 0 else len(body)
    if start is not None:
        parts.append(body[start:])
    return parts


class _Parsed:
    """The pieces of one message that searches read, computed once."""

    def __init__(self, raw: bytes) -> None:
        header, _body = _split_header(raw)
        self.top_fields = _fields(header)
        self.raw = raw
        self._bounds = Bounds()  # renewed when the walk starts (its deadline runs from then)

    def fields(self, name: str) -> list[bytes]:
        key = name.lower().encode("utf-8", "replace")
        return [value for n, _m, value in self.top_fields if n.lower() == key]

    @cached_property
    def sent_date(self) -> dt.date:
        values = self.fields("Date")
        return (sent_date(values[0]) if values else None) or EPOCH_DATE

    @cached_property
    def _texts(self) -> tuple[str, str]:
        body: list[str] = []
        headers: list[str] = []
        check_size(self.raw)
        self._bounds = Bounds()
        self._walk(self.raw, "text/plain", 0, body, headers, top=True)
        return "\n".join(body), "\n".join(headers)

    @cached_property
    def body_text(self) -> str:
        return _norm(self._texts[0])

    @cached_property
    def full_text(self) -> str:
        return self._texts[1] + "\n" + self.body_text

    def _walk(self, raw: bytes, default: str, depth: int, body: list[str], headers: list[str],
              *, top: bool = False) -> None:
        self._bounds.step(depth)
        header, part_body = _split_header(raw)
        fields = self.top_fields if top else _fields(header)
        for name, middle, value in fields:
            headers.append(_norm(_utf8(name) + _utf8(middle)) + decode_words(value, _norm))
        kind = _part_type(fields, default)
        if kind.structure == "multipart":
            assert kind.boundary is not None
            for part in _split_multipart(part_body, kind.boundary.encode("latin-1")):
                self._walk(part, kind.child_default, depth + 1, body, headers)
            return
        if kind.structure == "rfc822":
            self._walk(part_body, "text/plain", depth + 1, body, headers)
            return
        if not kind.searchable or kind.cte is None:
            return  # not text/* or message/*, or an unknown transfer encoding: Dovecot skips the body
        # Dovecot stores line ends as LF and searches the decoded body: a raw body's lines end
        # in LF, the quoted-printable decoder's in CR LF, a base64 body's as encoded.
        if kind.cte == "quoted-printable":
            data = qp_body(part_body.replace(b"\r\n", b"\n"))
        elif kind.cte == "base64":
            data = base64_prefix(part_body)
        else:
            data = part_body.replace(b"\r\n", b"\n")
        body.append(to_text(data, kind.charset))
