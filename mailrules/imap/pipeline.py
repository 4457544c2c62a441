"""Pipelined read-only commands: several IMAP commands sent at once, one round trip.

RFC 3501 (5.5) lets a client send commands without waiting for the previous ones, as
long as none of them can change what another returns. The engine opens each pass with
commands that only read, so it sends them together (`Pipeline`):

* a FETCH of every candidate's Message-ID (for the action log) together with the header
  fields the rules search (a server that caches header fields, such as Dovecot, then
  reads each message file once, not once per searched field);
* the UID SEARCH of every rule whose criteria do not depend on flags or keywords (what
  an earlier rule does to a message cannot change their result; the engine intersects
  each result with the messages still in play when the rule's turn comes);
* a LIST-STATUS of the folders the rules copy or move to (which exist, and their
  UIDNEXT for the journal), when the server has LIST-STATUS.

Searches are pipelined only on servers with ESEARCH, whose `(TAG "...")` ties every
result to its command, and only with LITERAL+ when they carry literals. A command the
server refuses is reported as not done (None), and the engine does it the ordinary way.

The answers are read here rather than by imaplib: the FETCH answer for a large backlog is tens
of thousands of responses, which imaplib's general reader parses slowly. They are read in large
chunks (`mailrules.imap.wire.ChunkedReader`, one socket read per ~256 KB), and the usual header
answer (`* n FETCH (UID u BODY[HEADER.FIELDS (...)] {n}` CRLF, the block, `)`) is taken straight
from the chunk, its block a slice handed to the sink: Dovecot sends the fetch no faster than
the client reads it, so a client slower than the server sets the opening's time. Any other
shape goes through the general response reader.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from imapclient import imap_utf7

from ..criteria import SearchQuery
from ..uidset import UidSet
from . import internals
from .wire import CLOSE, OPEN, TAGS, ChunkedReader, Literal, parse_message_id, quote_mailbox, render

log = logging.getLogger("mailrules.imap")

SEND_LIMIT = 32 * 1024  # bytes of commands sent before their answers are read (no deadlock on full buffers)

_UID = re.compile(rb"\bUID (\d+)", re.I)
_SIZE = re.compile(rb"\bRFC822\.SIZE (\d+)")
_ESEARCH = re.compile(rb'^\* ESEARCH \(TAG "([^"]*)"\)(.*)$', re.I)
_ESEARCH_ALL = re.compile(rb"\bALL ([0-9:,]+)", re.I)
_FETCH = re.compile(rb"^\* \d+ FETCH ", re.I)
_STATUS_UIDNEXT = re.compile(rb"\bUIDNEXT (\d+)", re.I)
# the usual answer to the header fetch, up to its literal (Dovecot's, and most servers')
_HEADER_ANSWER = re.compile(rb"\* \d+ FETCH \(UID (\d+) BODY\[HEADER\.FIELDS \([^\]\r\n]*\)\] \{(\d+)\}\r\n")


@dataclass
class PendingSearch:
    """A pipelined UID SEARCH; `result` is None until answered, and if the server refused it."""

    within: UidSet
    result: UidSet | None = None


@dataclass
class PendingHeaders:
    """A pipelined FETCH of header fields: the Message-ID of each message that exists."""

    message_ids: dict[int, str] = field(default_factory=dict)  # a refused part: missing here
    # given every message's fetched header block as it arrives (mailrules.local_headers)
    sink: Callable[[int, bytes], None] | None = None


@dataclass
class PendingFolders:
    """A pipelined LIST-STATUS: UIDNEXT of the folders that exist, and the names that do not."""

    names: tuple[str, ...]
    uidnext: dict[str, int] = field(default_factory=dict)
    missing: set[str] = field(default_factory=set)
    listed: set[str] = field(default_factory=set)


@dataclass
class _Command:
    tag: bytes
    line: bytes
    target: PendingSearch | PendingHeaders | PendingFolders
    status: str = ""


class Pipeline:
    """Collect read-only commands, then `run()` them in one round trip (or a few)."""

    def __init__(self, session) -> None:
        self.session = session
        self.imap = internals.imaplib_of(session.client)
        # read in chunks, not through imaplib's reader (its _get_line logs every line when debugging)
        self._reader = ChunkedReader(lambda: internals.read_some(self.imap), self.imap.abort)
        self._commands: list[_Command] = []
        self._headers: PendingHeaders | None = None  # at most one of each per pipeline
        self._folders: PendingFolders | None = None

    # ------------------------------------------------------------------ queueing

    def search(self, query: SearchQuery, within: UidSet) -> PendingSearch | None:
        """Queue `UID SEARCH query` restricted to `within`; None if it cannot be pipelined here."""
        session = self.session
        literals = any(isinstance(t, Literal) for t in query.tokens)
        if not within or not session.has("ESEARCH") or (literals and not session.has("LITERAL+")):
            return None
        words = [b"UID", b"SEARCH", b"RETURN", b"(ALL)"]
        if query.charset:
            words += [b"CHARSET", query.charset.encode("ascii")]
        words += [b"UID", within.cover_text(session.max_set_chars).encode("ascii")]
        pending = PendingSearch(within)
        self._add(words + list(query.tokens), pending)
        return pending

    def headers(self, uids: UidSet, fields: Iterable[str], batch: int,
                sink: Callable[[int, bytes], None] | None = None) -> PendingHeaders:
        """Queue UID FETCHes of the Message-ID (and `fields`, to warm the server's cache) of `uids`;
        `sink(uid, header block)` is called for every message as its answer is read."""
        names = sorted({f.upper() for f in fields} | {"MESSAGE-ID"})
        item = f"(BODY.PEEK[HEADER.FIELDS ({' '.join(names)})])".encode("ascii")
        pending = self._headers = self._headers or PendingHeaders()
        pending.sink = sink or pending.sink
        for chunk in uids.chunks(self.session.max_set_chars, batch):
            self._add([b"UID", b"FETCH", str(chunk).encode("ascii"), item], pending)
        return pending

    def folders(self, names: Iterable[str]) -> PendingFolders | None:
        """Queue a LIST-STATUS of these folders (server names); None without LIST-STATUS."""
        wanted = tuple(dict.fromkeys(n for n in names if n.upper() != "INBOX"))
        if not wanted or not self.session.has("LIST-STATUS"):
            return None
        patterns = [quote_mailbox(n) for n in wanted]
        if any(isinstance(p, Literal) for p in patterns):
            return None  # names that need literals: not worth a special case
        if self._folders is not None:
            raise ValueError("one folder listing per pipeline")
        pending = self._folders = PendingFolders(wanted)
        words = [b"LIST", b'""', OPEN, *patterns, CLOSE, b"RETURN", b"(STATUS", b"(UIDNEXT))"]
        self._add(words, pending)
        return pending

    def _add(self, tokens: list[bytes], target) -> None:
        tag = TAGS.next(b"p")  # answered here, not by imaplib
        self._commands.append(_Command(tag, render(tag, tokens)[0], target))

    # ------------------------------------------------------------------ running

    def run(self) -> None:
        """Send the queued commands and read every answer."""
        commands, self._commands = self._commands, []
        start = 0
        while start < len(commands):
            end, size = start, 0
            while end < len(commands) and (end == start or size + len(commands[end].line) <= SEND_LIMIT):
                size += len(commands[end].line)
                end += 1
            group = commands[start:end]
            data = b"".join(c.line for c in group)
            log.debug("> %d pipelined commands: %s", len(group), data[:512])
            self.imap.send(data)
            self._read(group)
            start = end

    def _read(self, group: list[_Command]) -> None:
        by_tag = {c.tag: c for c in group}
        open_tags = set(by_tag)
        try:
            while open_tags:
                if self._headers is not None and self._header_answers():
                    continue
                parts = self._response()
                head = parts[0]
                if head.startswith(b"* "):
                    self._untagged(parts, by_tag)
                    continue
                if head.startswith(b"+"):
                    raise self.imap.abort(f"unexpected continuation request: {head[:200]!r}")
                tag, _, rest = head.partition(b" ")
                command = by_tag.get(tag)
                if command is None:
                    raise self.imap.abort(f"unexpected tagged response: {head[:200]!r}")
                command.status = rest.split(b" ", 1)[0].upper().decode("ascii", "replace")
                open_tags.discard(tag)
                self._complete(command, rest)
        finally:
            internals.hand_back(self.imap, self._reader.rest())  # read past our last answer: imaplib's
            self._reader.buf, self._reader.pos = b"", 0

    def _header_answers(self) -> bool:
        """Take every whole header answer of the usual shape at the reader's position (see the
        module's docstring); False if the next response is not one (or not whole yet)."""
        reader, headers = self._reader, self._headers
        assert headers is not None
        ids, sink, match = headers.message_ids, headers.sink, _HEADER_ANSWER.match
        buf, pos = reader.buf, reader.pos
        taken = False
        while (m := match(buf, pos)) is not None:
            start = m.end()
            stop = start + int(m.group(2))
            if buf[stop : stop + 3] != b")\r\n":
                if stop + 3 > len(buf) and stop - pos <= reader.limit:
                    reader.pos = pos
                    reader.more()  # the answer is not whole yet
                    buf, pos = reader.buf, reader.pos
                    continue
                break  # another shape: the general reader's
            uid, block = int(m.group(1)), buf[start:stop]
            ids[uid] = parse_message_id(block)
            if sink is not None:
                sink(uid, block)
            pos = stop + 3
            taken = True
        reader.pos = pos
        return taken

    def _response(self) -> list[bytes]:
        """One whole response: [line, literal, line, ..., line], CRLF stripped from the lines."""
        return self._reader.response()

    def _untagged(self, parts: list[bytes], by_tag: dict[bytes, _Command]) -> None:
        head = parts[0]
        m = _ESEARCH.match(head)
        if m:
            command = by_tag.get(m.group(1))
            if command is not None and isinstance(command.target, PendingSearch):
                found = _ESEARCH_ALL.search(m.group(2))
                uids = UidSet.parse(found.group(1).decode("ascii")) if found else UidSet()
                command.target.result = uids & command.target.within
            return
        if _FETCH.match(head):
            # ours carry the header literal; others are unsolicited (flags changed elsewhere)
            if self._headers is None or b"BODY[HEADER.FIELDS" not in head.upper():
                return
            found = next((m for m in map(_UID.search, parts[0::2]) if m), None)
            if found is not None:
                header = parts[1] if len(parts) > 1 else b""
                uid = int(found.group(1))
                self._headers.message_ids[uid] = parse_message_id(header)
                if self._headers.sink is not None:
                    self._headers.sink(uid, header)
            return
        upper = head[:9].upper()
        if self._folders is not None and upper.startswith((b"* LIST ", b"* STATUS ")):
            listing = upper.startswith(b"* LIST ")
            name = _mailbox_name(head[7:] if listing else head[9:], parts)
            if name is None:
                return
            if listing:
                self._folders.listed.add(name)
            else:
                found_uidnext = _STATUS_UIDNEXT.findall(parts[-1])
                if found_uidnext:
                    self._folders.uidnext[name] = int(found_uidnext[-1])
        # anything else (EXISTS, EXPUNGE, FLAGS, OK [...]) does not concern these commands

    def _complete(self, command: _Command, rest: bytes) -> None:
        target = command.target
        ok = command.status == "OK"
        if isinstance(target, PendingSearch):
            if not ok:
                target.result = None
                log.debug("pipelined search refused (%s); it will be sent again on its own", rest[:200])
            elif target.result is None:  # no ESEARCH at all (one with no ALL: nothing matched, read above)
                log.warning("pipelined search answered without its ESEARCH response (RFC 4731 says it always "
                            "comes); it will be sent again on its own")
        elif isinstance(target, PendingHeaders):
            if not ok:
                log.debug("pipelined header fetch refused (%s); Message-IDs are fetched per rule", rest[:200])
        elif isinstance(target, PendingFolders):
            if ok:
                # listed but without STATUS (\Noselect, say): neither known to exist nor missing
                target.missing = {n for n in target.names if n not in target.listed and n not in target.uidnext}
            else:
                target.uidnext, target.missing = {}, set()


# ---------------------------------------------------------------------- helpers


_QUOTED = re.compile(rb'"((?:[^"\\]|\\.)*)"')


def _mailbox_name(after: bytes, parts: list[bytes]) -> str | None:
    """The mailbox name of a LIST or STATUS answer (`after`: the text after the keyword)."""
    if after.startswith(b"("):  # LIST: (attributes) delimiter name
        close = after.find(b")")
        rest = after[close + 1 :].lstrip()
        if rest.startswith(b'"'):
            m = _QUOTED.match(rest)
            rest = rest[m.end() :].lstrip() if m else rest
        elif rest.upper().startswith(b"NIL"):
            rest = rest[3:].lstrip()
        raw = _astring(rest, parts)
    else:  # STATUS: name (items)
        raw = _astring(after, parts)
    if raw is None:
        return None
    try:
        return imap_utf7.decode(raw)
    except Exception:  # noqa: BLE001 - not valid modified UTF-7: not one of ours
        return None


def _astring(text: bytes, parts: list[bytes]) -> bytes | None:
    if text.startswith(b'"'):
        m = _QUOTED.match(text)
        return re.sub(rb"\\(.)", rb"\1", m.group(1)) if m else None
    if text.startswith(b"{"):
        return parts[1] if len(parts) > 1 else None
    atom = text.split(b" ", 1)[0]
    return atom or None
