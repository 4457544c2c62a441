"""Header-only rules decided on the client, over the header fields the pass's opening fetches.

The pass's opening (`mailrules.imap_mailbox.ImapPass.open`) fetches, for every candidate,
`BODY.PEEK[HEADER.FIELDS (...)]` of the fields the rules search. On Dovecot, whose SEARCH the
local evaluator (`mailrules.local_search`) reproduces, a rule that reads only those fields
(`header:`, `subject:`, `from:`/`to:`/`cc:`/`bcc:`, `sent_*`) needs no SEARCH at all: its
answer is in the fetched bytes. The server then answers one SEARCH fewer per such rule.
Only where that is cheaper for the client than for the server (`cheap`: `header:` criteria,
whose few distinct values are decided once each; a subject, address or date only behind one,
since rendering them costs ~10x the server's cached SEARCH per message: bench/README.md).

The evaluator agrees with Dovecot on the differential test, but crafted broken mail still finds
header disagreements. So a field is read locally only when it is plain enough that there is
nothing to disagree about (`field_exact`): one field of that name, printable ASCII or valid
UTF-8 in common scripts, folded only by CRLF and one space, encoded words only in full, in a
few charsets, and decoding cleanly (for addresses: no comments, groups, routes or escapes). Anything else makes the criteria that read that field *unknown* for that message;
the tree is evaluated in three values (a known false child decides an `all:` alone), and the
messages a rule cannot decide go to the server's SEARCH (one pipelined round trip for every
such rule: `PendingLocal.questions`). Messages the fetch did not return (a refused batch)
are unknown to every rule.

`MAILRULES_LOCAL_HEADERS=0` turns this off (every rule searched by the server, as before): the
differential test runs the rules both ways with it.
"""

from __future__ import annotations

import binascii
import logging
import os
import re
from collections.abc import Collection, Sequence
from dataclasses import dataclass

from .criteria import TEXT_HEADERS, fetchable_header_name, reads_of
from .local_search import MessageTooComplex, header_leaf
from .model import All, AnyOf, Criterion, Header, Not, Rule, SentDate, Text
from .uidset import UidSet

log = logging.getLogger("mailrules.engine")

ENV_SWITCH = "MAILRULES_LOCAL_HEADERS"  # "0": every rule searched by the server
MAX_BLOCK = 64 * 1024  # a fetched header block larger than this is left to the server
_PENDING = object()  # a cached verdict that needs the message's own subject, address or date
CACHE_LIMIT = 20000  # cached field verdicts, per kind, before the caches start over (memory stays flat)
SAFE_CHARSETS = frozenset({"utf-8", "us-ascii", "iso-8859-1", "iso-8859-15", "windows-1252"})

_FIELD = re.compile(rb"([!-9;-~]+):[^\r\n]*(?:\r\n[ \t][^\r\n]*)*(?=\r\n)")
_BLOCK = re.compile(rb"(?:[!-9;-~]+:[^\r\n]*(?:\r\n[ \t][^\r\n]*)*\r\n)*\r\n")
_WORD = re.compile(rb"=\?([A-Za-z0-9_-]+)\?([BbQq])\?([^?\s]*)\?=")
_B64_TEXT = re.compile(rb"(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?")
_Q_TEXT = re.compile(rb"(?:[!-<>@-~]|=[0-9A-Fa-f]{2})+")
_CONTROL_BYTES = re.compile(rb"[\x00-\x1f\x7f]")
_QUOTED = re.compile(rb'"[^"\\]*"')
# Latin-1 letters to Latin Extended-B, Greek and Cyrillic, Hiragana and Katakana, CJK, Hangul
_SCRIPTS = (("\xa0", "\u024f"), ("\u0370", "\u03ff"), ("\u0400", "\u04ff"), ("\u3040", "\u30ff"),
            ("\u4e00", "\u9fff"), ("\uac00", "\ud7a3"))
_WORD_BEFORE = frozenset(b' "(')
_WORD_AFTER = frozenset(b' ")')
_ADDRESS_ODD = re.compile(rb'[\\\[\];:()]')  # outside quoted strings
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f\ufffd]")


def enabled() -> bool:
    """The off switch (`MAILRULES_LOCAL_HEADERS=0`), read per pass so a test can flip it."""
    return os.environ.get(ENV_SWITCH, "1").strip() not in ("0", "no", "off", "false")


# --------------------------------------------------------------------------- which rules


def _leaf_field(node: Criterion) -> str | None:
    """The one header field a locally decidable leaf reads, or None if the leaf is not one."""
    if isinstance(node, Header):
        return node.name if fetchable_header_name(node.name) else None
    if isinstance(node, Text):
        return TEXT_HEADERS.get(node.field)
    if isinstance(node, SentDate):
        return "Date"
    return None


def decidable(node: Criterion) -> bool:
    """Whether every leaf of `node` reads only header fields the opening can fetch."""
    if isinstance(node, (All, AnyOf)):
        return all(decidable(c) for c in node.children)
    if isinstance(node, Not):
        return decidable(node.child)
    return _leaf_field(node) is not None


def cheap(node: Criterion, guarded: bool = False) -> bool:
    """Whether deciding `node` locally costs the client less than the server's SEARCH costs it.

    A `header:` criterion is: its few distinct values (a list's List-Id, a spam flag) are decided
    once each and looked up after. A subject, an address or a sent date is rendered per distinct
    value (parsing, RFC 2047, normalisation: ~20 us each), nearly one per message, where Dovecot
    answers the SEARCH from its cache in ~2.5 us per message: these are read locally only behind
    a `header:` criterion earlier in the same `all:` (`guarded`), which leaves them few messages.
    """
    if isinstance(node, All):
        for child in node.children:
            if not cheap(child, guarded):
                return False
            guarded = guarded or isinstance(child, Header)
        return True
    if isinstance(node, AnyOf):
        return all(cheap(c, guarded) for c in node.children)
    if isinstance(node, Not):
        return cheap(node.child, guarded)
    return isinstance(node, Header) or guarded


def local_rules(rules: Sequence[Rule], skip: set[int]) -> list[int]:
    """Indexes of the rules decided locally: header-only criteria (`decidable`) that are `cheap`,
    no `where:`, not in `skip` (journaled before a crash)."""
    out = []
    for i, rule in enumerate(rules):
        if i in skip or rule.where:
            continue
        reads = reads_of(rule.match)
        if not reads.mutable and not reads.costly and decidable(rule.match) and cheap(rule.match):
            out.append(i)
    return out


# --------------------------------------------------------------------------- what is exact


def split_block(block: bytes) -> dict[bytes, list[bytes]] | None:
    """The fetched header block as lower-case name -> the raw lines of each field of that name
    (CRLF-joined, folding kept); None when the block itself is odd (left to the server): a line
    that is neither `Name:...` nor a continuation, a bare CR or LF, no empty line at the end."""
    if len(block) > MAX_BLOCK or not _BLOCK.fullmatch(block):
        return None
    return _split_fields(block)


def _split_fields(block: bytes) -> dict[bytes, list[bytes]]:
    """`split_block` of a block already checked."""
    out: dict[bytes, list[bytes]] = {}
    for m in _FIELD.finditer(block):
        out.setdefault(m.group(1).lower(), []).append(m.group(0))
    return out


def field_exact(raw: bytes, address: bool) -> bytes | None:
    """The unfolded value of one field (its raw lines, `Name: value`, folding kept) if it is read
    exactly as Dovecot reads it, else None: see the module's docstring. address: a From/To/Cc/Bcc
    field (no quoting escapes, comments, groups, routes or domain literals either)."""
    colon = raw.index(b":")
    value = raw[colon + 1 :]
    lines = value.split(b"\r\n")
    first = lines[0].lstrip(b" ")
    if not first or first[-1:] == b" ":
        return None
    for line in lines[1:]:
        if line[:1] != b" " or line[1:2] in (b" ", b"") or line[-1:] == b" ":
            return None  # folded otherwise than by CRLF and one space
    text = b" ".join([first, *(line[1:] for line in lines[1:])])  # unfolded as local_search unfolds
    if _CONTROL_BYTES.search(text):
        return None  # TAB, control characters
    if not text.isascii():
        try:
            if not _text_exact(text.decode("utf-8")):
                return None
        except UnicodeDecodeError:
            return None  # 8-bit bytes that are not UTF-8
    if address:
        outside = _QUOTED.sub(b"", text)
        if _ADDRESS_ODD.search(outside) or b'"' in outside:
            return None
    return text if _words_exact(text) else None


def _text_exact(text: str) -> bool:
    """No control character or U+FFFD, and non-ASCII only from scripts whose case mapping and
    decomposition have not changed in many Unicode versions (no compatibility characters)."""
    if _CONTROL.search(text):
        return False
    return all(c < "\x80" or any(lo <= c <= hi for lo, hi in _SCRIPTS) for c in text)


def _words_exact(text: bytes) -> bool:
    """Every `=?` starts a whole encoded word in a safe charset that decodes cleanly."""
    pos = 0
    while (start := text.find(b"=?", pos)) >= 0:
        m = _WORD.match(text, start)
        if m is None:
            return False
        if (start and text[start - 1] not in _WORD_BEFORE) or (m.end() < len(text) and text[m.end()] not in _WORD_AFTER):
            return False
        charset, kind, data = m.group(1).decode("ascii").lower(), m.group(2).upper(), m.group(3)
        if charset not in SAFE_CHARSETS or not data:
            return False
        if kind == b"B":
            if not _B64_TEXT.fullmatch(data):
                return False
            decoded = binascii.a2b_base64(data)
        else:
            if not _Q_TEXT.fullmatch(data):
                return False
            decoded = re.sub(rb"=([0-9A-Fa-f]{2})", lambda h: bytes([int(h.group(1), 16)]), data.replace(b"_", b" "))
        try:
            out = decoded.decode(charset)
        except UnicodeDecodeError:
            return False
        if not _text_exact(out) or "=?" in out:
            return False
        pos = m.end()
    return True


# --------------------------------------------------------------------------- evaluation


@dataclass(frozen=True)
class _Leaf:
    """A leaf of a local rule, compiled once per pass: the field it reads (lower-case bytes)."""

    node: Criterion
    field: bytes
    address: bool


class PendingLocal:
    """The local answers of one pass's opening, filled as the header FETCH's answers arrive.

    matched: rule index -> the UIDs its criteria match; unknown: rule index -> the UIDs left to
    the server. After the fetch, `finish(within, answered)` adds what the fetch did not return to every
    rule's unknown; `questions()` then says which searches the server still has to answer.

    Per message, `take` costs two regular expressions and a lookup: messages whose verdicts are
    all known from their `header:` fields are only appended to their group (by those fields'
    bytes), and the groups are spread over `matched` and `unknown` when those are read.
    """

    def __init__(self, rules: dict[int, Criterion]) -> None:
        self.rules = rules
        self._matched: dict[int, set[int]] = {i: set() for i in rules}
        self._unknown: dict[int, set[int]] = {i: set() for i in rules}
        self._trees = [(i, _compile(c)) for i, c in rules.items()]
        # Every rule's verdict from its `header:` leaves alone, cached by the bytes of the fields
        # those leaves read (few distinct values: a list's List-Id, a spam flag); PENDING where the
        # rule also needs a subject, address or date (then read for that message alone).
        names = sorted(set().union(*(_fields_of(c, Header) for c in rules.values())))
        self._kept = re.compile(rb"(?im)^(?:" + b"|".join(re.escape(n) for n in names) + rb"):[^\r\n]*"
                                rb"(?:\r\n[ \t][^\r\n]*)*") if names else None
        self._cache: dict[bytes, tuple[bool | None | object, ...]] = {}
        # by those bytes, where no verdict is PENDING: (the verdicts, the UIDs not yet spread)
        self._groups: dict[bytes, tuple[tuple[bool | None | object, ...], list[int]]] = {}
        self._odd: list[int] = []  # blocks left to the server for every rule, not yet spread
        self._exact: dict[tuple[bytes, bool], bytes | None] = {}  # (raw field, address) -> field_exact
        self._leaf: dict[tuple[int, tuple[bytes, ...]], bool] = {}  # (leaf, raw fields) -> verdict

    @property
    def matched(self) -> dict[int, set[int]]:
        self._spread()
        return self._matched

    @property
    def unknown(self) -> dict[int, set[int]]:
        self._spread()
        return self._unknown

    def take(self, uid: int, block: bytes) -> None:
        """One message's fetched header block: every local rule's verdict on it."""
        if len(block) > MAX_BLOCK or not _BLOCK.fullmatch(block):
            self._odd.append(uid)
            return
        key = b"\n".join(self._kept.findall(block)) if self._kept is not None else b""
        group = self._groups.get(key)
        if group is not None:
            group[1].append(uid)
            return
        verdicts = self._cache.get(key)
        fields = None
        if verdicts is None:
            fields = _split_fields(block)  # the block was checked above
            verdicts = tuple(_PENDING if (v := self._eval(tree, fields, partial=True)) is None else v
                             for _i, tree in self._trees)
            if len(self._cache) >= CACHE_LIMIT:
                self._cache.clear()
            self._cache[key] = verdicts
        if not any(v is _PENDING for v in verdicts):
            if len(self._groups) >= CACHE_LIMIT:
                self._spread()
            self._groups[key] = (verdicts, [uid])
            return
        for (i, tree), verdict in zip(self._trees, verdicts, strict=True):
            if verdict is _PENDING:
                if fields is None:
                    fields = _split_fields(block)
                verdict = self._eval(tree, fields)
            if verdict is None:
                self._unknown[i].add(uid)
            elif verdict:
                self._matched[i].add(uid)

    def _spread(self) -> None:
        """The grouped messages into `matched` and `unknown` (memory stays flat: groups start over)."""
        for verdicts, uids in self._groups.values():
            for (i, _tree), verdict in zip(self._trees, verdicts, strict=True):
                if verdict is None:
                    self._unknown[i].update(uids)
                elif verdict:
                    self._matched[i].update(uids)
        self._groups.clear()
        if self._odd:
            for uids in self._unknown.values():
                uids.update(self._odd)
            self._odd.clear()

    def finish(self, within: UidSet, answered: Collection[int]) -> None:
        """After the fetch: the messages of `within` it did not return (`answered`: those it did)
        are unknown to every rule."""
        missing = set(within).difference(answered)
        for uids in self.unknown.values():
            uids |= missing

    def questions(self) -> dict[int, UidSet]:
        """Rule index -> the UIDs the server must decide (rules with none left out)."""
        return {i: UidSet(u) for i, u in self.unknown.items() if u}

    def _eval(self, node, fields: dict[bytes, list[bytes]], partial: bool = False) -> bool | None:
        """Kleene's three values over a compiled tree: None where a field read is not exact (or,
        `partial`, where a leaf is not a `header:` one)."""
        if isinstance(node, _Leaf):
            if partial and not isinstance(node.node, Header):
                return None
            return self._leaf_value(node, fields)
        kind, children = node
        if kind == "not":
            v = self._eval(children, fields, partial)
            return None if v is None else not v
        decisive = kind == "any"  # the value that decides an any: (True) or an all: (False)
        out: bool | None = not decisive
        for child in children:
            v = self._eval(child, fields, partial)
            if v is decisive:
                return decisive
            if v is None:
                out = None
        return out

    def _leaf_value(self, leaf: _Leaf, fields: dict[bytes, list[bytes]]) -> bool | None:
        raws = tuple(fields.get(leaf.field, ()))
        key = (id(leaf), raws)
        value = self._leaf.get(key)
        if value is not None:
            return value
        if len(raws) > 1:
            return None  # duplicate fields: Dovecot reads them its own way
        values = []
        for raw in raws:
            text = self._exact.get((raw, leaf.address), False)
            if text is False:
                if len(self._exact) >= CACHE_LIMIT:
                    self._exact.clear()
                text = self._exact[(raw, leaf.address)] = field_exact(raw, leaf.address)
            if text is None:
                return None
            values.append(text)
        try:
            value = header_leaf(leaf.node, values)
        except (MessageTooComplex, ValueError):
            return None
        if len(self._leaf) >= CACHE_LIMIT:
            self._leaf.clear()
        self._leaf[key] = value
        return value


def _fields_of(node: Criterion, kind: type = object) -> set[bytes]:
    """The fields (lower-case bytes) the leaves of `node` of type `kind` read."""
    if isinstance(node, (All, AnyOf)):
        return set().union(*(_fields_of(c, kind) for c in node.children))
    if isinstance(node, Not):
        return _fields_of(node.child, kind)
    name = _leaf_field(node)
    assert name is not None
    return {name.lower().encode("ascii")} if isinstance(node, kind) else set()


def _compile(node: Criterion):
    """A criteria tree as nested ("all"|"any", children) / ("not", child) tuples over `_Leaf`s."""
    if isinstance(node, All):
        return ("all", tuple(_compile(c) for c in node.children))
    if isinstance(node, AnyOf):
        return ("any", tuple(_compile(c) for c in node.children))
    if isinstance(node, Not):
        return ("not", _compile(node.child))
    name = _leaf_field(node)
    assert name is not None
    address = isinstance(node, Text) and node.field in ("from", "to", "cc", "bcc")
    return _Leaf(node, name.lower().encode("ascii"), address)


def plan(rules: Sequence[Rule], skip: set[int]) -> PendingLocal | None:
    """The local evaluation of a pass over `rules`, or None when no rule can be decided locally."""
    chosen = local_rules(rules, skip)
    if not chosen:
        return None
    return PendingLocal({i: rules[i].match for i in chosen})


def fields_needed(pending: PendingLocal) -> set[str]:
    """The header fields the local rules read (the opening fetches them)."""
    out: set[str] = set()
    for criterion in pending.rules.values():
        out |= reads_of(criterion).headers
    return out
