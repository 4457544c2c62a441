"""Compile a criteria tree (`mailrules.model`) to IMAP SEARCH keys.

`compile_search(criterion, capabilities)` returns a `SearchQuery`: the search keys as a
list of bytes tokens (8-bit tokens are sent by IMAPClient as literals) and the charset
to announce (None for pure ASCII, "UTF-8" otherwise).
"""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from .imap.wire import CLOSE, OPEN, Literal, astring
from .model import (
    Age,
    All,
    AnyOf,
    ArrivalDate,
    Criterion,
    Flag,
    Header,
    Keyword,
    Not,
    Raw,
    SentDate,
    Size,
    Text,
)

FLAG_KEYS = {
    "\\Seen": (b"SEEN", b"UNSEEN"),
    "\\Answered": (b"ANSWERED", b"UNANSWERED"),
    "\\Flagged": (b"FLAGGED", b"UNFLAGGED"),
    "\\Deleted": (b"DELETED", b"UNDELETED"),
    "\\Draft": (b"DRAFT", b"UNDRAFT"),
}
DATE_KEYS = {
    ("arrival", "before"): b"BEFORE",
    ("arrival", "on"): b"ON",
    ("arrival", "since"): b"SINCE",
    ("sent", "before"): b"SENTBEFORE",
    ("sent", "on"): b"SENTON",
    ("sent", "since"): b"SENTSINCE",
}
MONTHS = ("Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec")

# A server compares dates in its own (unknown) time zone: day-granular fallbacks for
# older_than/younger_than keep this margin so that they never match more than asked.
TIMEZONE_MARGIN = dt.timedelta(hours=14)


# --------------------------------------------------------------------------- what can go on the wire

MAX_NUMBER = 2**32 - 1
"""The largest IMAP4rev1 `number` (RFC 3501: 32-bit unsigned), e.g. for LARGER/SMALLER/OLDER."""

_ATOM_SPECIALS = frozenset('(){ %*"\\]')


def unsendable(text: str) -> str | None:
    """Why `text` cannot be a string the rules send to the server (None if it can).

    CR and LF end an IMAP command (a folder name holding them broke the pipelined LIST), NUL
    is not allowed in any IMAP string (a search for it matched every message), and other
    control characters are never part of a real name or search; TAB is allowed.
    """
    for ch in text:
        if ch in "\r\n":
            return "a line break (CR or LF) cannot be sent to the server"
        if ch == "\0":
            return "a NUL character cannot be sent to the server"
        if (ord(ch) < 32 and ch != "\t") or ord(ch) == 127:
            return f"a control character (U+{ord(ch):04X}) cannot be sent to the server"
    return None


def fetchable_header_name(name: str) -> bool:
    """Whether `name` can be a header field name in BODY.PEEK[HEADER.FIELDS (...)] as an atom.

    RFC 5322 allows any printable ASCII but ':'; IMAP atoms also exclude ( ) { % * " \\ ]
    (a name like 'X(' got its FETCH refused on every pass).
    """
    return bool(name) and all(33 <= ord(c) <= 126 and c != ":" and c not in _ATOM_SPECIALS for c in name)


def raw_problem(text: str) -> str | None:
    """Why `text` cannot be IMAP search keys (None if it may be: only the server knows for sure).

    Checked: characters that cannot be sent, quoted strings that are closed, parentheses that
    balance, and no literal ({N}, which needs a line break). The keys themselves are the
    server's to accept; one it refuses fails its rule alone.
    """
    problem = unsendable(text)
    if problem:
        return problem
    if not text.strip():
        return "empty search keys"
    depth = 0
    i = 0
    while i < len(text):
        ch = text[i]
        if ch == '"':
            i += 1
            while i < len(text) and text[i] != '"':
                i += 2 if text[i] == "\\" else 1
            if i >= len(text):
                return "a quoted string is not closed (a '\"' is missing)"
        elif ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth < 0:
                return "unbalanced parentheses (a ')' closes nothing)"
        elif ch == "{" and re.match(r"\{\d+\+?\}", text[i:]):
            return "a literal ({N}) needs a line break and cannot be written here; write a quoted string"
        i += 1
    if depth:
        return "unbalanced parentheses (a '(' is not closed)"
    return None


@dataclass(frozen=True)
class SearchQuery:
    tokens: tuple[bytes, ...]
    charset: str | None = None

    def encode_for(self, charset: str) -> SearchQuery:
        """The same query with its non-ASCII strings in another charset (BADCHARSET fallback).

        Raises UnicodeEncodeError if a string cannot be written in that charset.
        """
        out = []
        for tok in self.tokens:
            if isinstance(tok, Literal):
                out.append(Literal(tok.decode("utf-8").encode(charset)))
            else:
                out.append(tok)
        return SearchQuery(tuple(out), charset)

    def __str__(self) -> str:
        return join_tokens([t.decode("utf-8", "replace") for t in self.tokens])


def join_tokens(tokens: list) -> str | bytes:
    """Join tokens with single spaces, none after '(' or before ')'."""
    empty = tokens[0][:0] if tokens else ""
    space = " " if isinstance(empty, str) else b" "
    out = []
    for i, tok in enumerate(tokens):
        if i and tok != CLOSE.decode() and tok != CLOSE and tokens[i - 1] not in (OPEN, OPEN.decode()):
            out.append(space)
        out.append(tok)
    return empty.join(out)


def imap_date(day: dt.date) -> bytes:
    return f"{day.day}-{MONTHS[day.month - 1]}-{day.year}".encode("ascii")


def compile_search(
    criterion: Criterion,
    capabilities: frozenset[str] | set[str] = frozenset(),
    *,
    now: dt.datetime | None = None,
) -> SearchQuery:
    """Compile a criteria tree to the keys of one IMAP SEARCH.

    capabilities: the server's (upper-case) capabilities; WITHIN decides how
    older_than/younger_than compile. now: for the day-granular fallback (tests).
    """
    compiler = _Compiler({c.upper() for c in capabilities}, now or dt.datetime.now(dt.UTC))
    tokens = compiler.keys(criterion)
    charset = "UTF-8" if any(isinstance(t, Literal) for t in tokens) else None
    return SearchQuery(tuple(tokens), charset)


class _Compiler:
    def __init__(self, capabilities: set[str], now: dt.datetime) -> None:
        self.capabilities = capabilities
        self.now = now

    def keys(self, node: Criterion) -> list[bytes]:
        """Search keys that, written one after the other, mean `node` (an implicit AND)."""
        if isinstance(node, All):
            if not node.children:
                return [b"ALL"]
            out: list[bytes] = []
            for child in node.children:
                out.extend(self.keys(child))
            return out
        return self.key(node)

    def key(self, node: Criterion) -> list[bytes]:
        """Tokens forming exactly ONE search key (parenthesised if needed)."""
        if isinstance(node, All):
            inner = self.keys(node)
            return inner if len(node.children) <= 1 and _single_key(node) else _paren(inner)
        if isinstance(node, Text):
            return [node.field.upper().encode("ascii"), astring(node.value)]
        if isinstance(node, Header):
            return [b"HEADER", astring(node.name), astring(node.value)]
        if isinstance(node, Size):
            return [b"LARGER" if node.op == "larger" else b"SMALLER", str(node.size).encode()]
        if isinstance(node, Age):
            return self.age(node)
        if isinstance(node, ArrivalDate):
            return [DATE_KEYS[("arrival", node.op)], imap_date(node.date)]
        if isinstance(node, SentDate):
            return [DATE_KEYS[("sent", node.op)], imap_date(node.date)]
        if isinstance(node, Flag):
            yes, no = FLAG_KEYS[node.flag]
            return [yes if node.present else no]
        if isinstance(node, Keyword):
            return [b"KEYWORD" if node.present else b"UNKEYWORD", node.name.encode("ascii")]
        if isinstance(node, Not):
            return self.negated(node.child)
        if isinstance(node, AnyOf):
            if not node.children:
                return [b"NOT", b"ALL"]
            if len(node.children) == 1:
                return self.key(node.children[0])
            first, rest = node.children[0], node.children[1:]
            second = rest[0] if len(rest) == 1 else AnyOf(rest)
            return [b"OR", *self.key(first), *self.key(second)]
        if isinstance(node, Raw):
            return _paren([node.text.encode("utf-8")])
        raise TypeError(f"not a criterion: {node!r}")

    def negated(self, node: Criterion) -> list[bytes]:
        """ONE key meaning NOT `node`, with the negation pushed down to the leaves.

        Why not simply ``NOT <key>``: Dovecot 2.3's search simplifier
        (mail-search-args-simplify.c) gets two shapes wrong. (1) It merges sibling range
        keys of one kind (SENTBEFORE, BEFORE, SMALLER, OLDER...) that are both negated in the
        direction of the un-negated keys: ``NOT (SENTBEFORE 5-Jun SENTBEFORE 3-Jun)`` is
        answered as ``NOT SENTBEFORE 5-Jun``. (2) It factors common keys out of sibling
        groups without heeding a NOT on a group: ``OR NOT (SUBJECT a SUBJECT b) (SUBJECT a
        SUBJECT c)`` is answered as if "a" were required. So no group is ever sent negated
        (De Morgan here instead) and a negated range key is sent as its complement
        (NOT SENTBEFORE d = SENTSINCE d, NOT LARGER n = SMALLER n+1, NOT OLDER n = YOUNGER n).
        """
        if isinstance(node, Not):
            return self.key(node.child)
        if isinstance(node, All):
            if not node.children:
                return [b"NOT", b"ALL"]
            return self.key(AnyOf(tuple(Not(child) for child in node.children)))
        if isinstance(node, AnyOf):
            if not node.children:
                return [b"ALL"]
            return self.key(All(tuple(Not(child) for child in node.children)))
        if isinstance(node, Size):
            if node.op == "larger":  # no message is larger than the largest IMAP number
                return [b"SMALLER", str(node.size + 1).encode()] if node.size < MAX_NUMBER else [b"ALL"]
            return [b"LARGER", str(node.size - 1).encode()] if node.size > 0 else [b"ALL"]
        if isinstance(node, (ArrivalDate, SentDate)) and node.op != "on":
            other = "since" if node.op == "before" else "before"
            return self.key(type(node)(other, node.date))
        if isinstance(node, Age):
            name, value = self.age(node)
            return [_COMPLEMENT_KEYS[name], value]
        return [b"NOT", *self.key(node)]

    def age(self, node: Age) -> list[bytes]:
        seconds = max(int(node.seconds), 1)
        if "WITHIN" in self.capabilities:
            return [b"OLDER" if node.op == "older" else b"YOUNGER", str(seconds).encode()]
        cutoff = self.now - dt.timedelta(seconds=seconds)
        if node.op == "older":
            # BEFORE d: arrived on a day before d. d must not be later than the cutoff,
            # whatever the server's time zone.
            day = (cutoff - TIMEZONE_MARGIN).date()
            return [b"BEFORE", imap_date(day)]
        # SINCE d: arrived on day d or later; d must not be earlier than the cutoff.
        day = (cutoff + TIMEZONE_MARGIN).date() + dt.timedelta(days=1)
        return [b"SINCE", imap_date(day)]


# A range key and the key that matches exactly the other messages (same date kind, same time).
_COMPLEMENT_KEYS = {b"OLDER": b"YOUNGER", b"YOUNGER": b"OLDER", b"BEFORE": b"SINCE", b"SINCE": b"BEFORE"}


def _single_key(node: All) -> bool:
    return len(node.children) == 1 and not isinstance(node.children[0], All)


def _paren(tokens: list[bytes]) -> list[bytes]:
    """Wrap tokens in parentheses (separate tokens: the sender joins them without spaces)."""
    return [OPEN, *tokens, CLOSE]


# --------------------------------------------------------------------------- what criteria read

TEXT_HEADERS = {"from": "From", "to": "To", "cc": "Cc", "bcc": "Bcc", "subject": "Subject"}


@dataclass(frozen=True)
class Reads:
    """What a criterion looks at in a message.

    headers: the header fields it searches. mutable: it depends on flags or keywords (or
    on raw search keys, which may), so an earlier rule's action can change its result.
    costly: the server reads whole messages for it (size, body, text): better searched
    over the fewest messages, i.e. only those still in play when the rule's turn comes.
    """

    headers: frozenset[str] = frozenset()
    mutable: bool = False
    costly: bool = False


def reads_of(node: Criterion) -> Reads:
    """What `node` reads (see `Reads`)."""
    if isinstance(node, (All, AnyOf)):
        parts = [reads_of(child) for child in node.children]
        return Reads(
            frozenset().union(*(p.headers for p in parts)),
            any(p.mutable for p in parts),
            any(p.costly for p in parts),
        )
    if isinstance(node, Not):
        return reads_of(node.child)
    if isinstance(node, Header):
        return Reads(frozenset({node.name}))
    if isinstance(node, Text):
        if node.field in TEXT_HEADERS:
            return Reads(frozenset({TEXT_HEADERS[node.field]}))
        return Reads(costly=True)  # body, text
    if isinstance(node, SentDate):
        return Reads(frozenset({"Date"}))
    if isinstance(node, Size):
        return Reads(costly=True)
    if isinstance(node, (Flag, Keyword, Raw)):
        return Reads(mutable=True)
    if isinstance(node, (ArrivalDate, Age)):
        return Reads()  # in the server's index
    # An unknown node might read flags: taken for one that reads nothing, it would be searched
    # in the pass's opening, before the earlier rules act (wrong results, no error).
    raise TypeError(f"reads_of: unknown criteria node {type(node).__name__}")
