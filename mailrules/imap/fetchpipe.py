"""Pipelined UID FETCH batches: the next batch is requested while the current one is matched.

`ImapSession.fetch` sends one batch, waits for all of it, hands it over, and only then asks
for the next: while the predicates match a batch the server is idle, and while the server
reads the next one the client is. Here (`pipelined_fetch`) `depth` batches are in flight:
the server answers batch k+1 while the caller matches batch k. Fetching is read-only
(RFC 3501 5.5: commands whose answers cannot depend on each other may be pipelined).

The server may answer batch k+1's messages before batch k's tagged OK (Dovecot does):
each message is handed over with the batch whose UIDs hold it, whenever it comes.

The answers are read by the wire layer (`mailrules.imap.wire.ResponseReader`: a message's
literal read in one piece), not by imaplib's per-line untagged bookkeeping. The usual answer
to a body fetch (`(UID n RFC822.SIZE n BODY[...] {n}...)`: numbers, NIL and literals) is
taken apart here (`fast_fetch_items`, a regular expression over its few short lines: IMAPClient's
parser cost about as much per message as matching it); any other shape goes to IMAPClient's
FETCH parser. What is yielded is exactly what `ImapSession.fetch` yields.

A refused batch raises `ServerRefused`, once the batches still in flight are answered (the
connection stays usable); a broken connection raises imaplib's abort as the sequential
fetch does, and the caller's pass starts over: nothing was acted on from a partial fetch.
A caller that stops early (closes the generator) has the answers still in flight read and
dropped, so the next command's answer is its own.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator

from ..uidset import UidSet
from . import internals
from .session import ServerRefused
from .wire import TAGS, ResponseReader

DEPTH = 2  # batches in flight: one being answered while the caller matches the one before

_FETCH = re.compile(rb"^\* (\d+) FETCH (.*)$", re.I | re.S)
# One FETCH item the fast path takes: a name (an atom, or a section without quotes or
# literals, e.g. BODY[HEADER.FIELDS (FROM)]) and a number, NIL or a literal. Anything else
# (flag lists, quoted strings, dates, partial ranges) goes to IMAPClient's parser.
_ITEM = re.compile(rb"([A-Za-z0-9.]+(?:\[[A-Za-z0-9. ()-]*\])?) (\d+|NIL|\{\d+\})")


def pipelined_fetch(session, uids: UidSet, items: list[str], batch: int,
                    depth: int = DEPTH) -> Iterator[tuple[int, dict]]:
    """(uid, data) for the messages of `uids` that still exist, in UID order per batch, as `session.fetch`."""
    imap = internals.imaplib_of(session.client)
    reader = ResponseReader(imap.readline, imap.read, imap.abort)
    wanted = "(" + " ".join(i.upper() for i in items) + ")"
    chunks = iter(uids.chunks(session.max_set_chars, batch))
    inflight: deque[tuple[bytes, UidSet]] = deque()
    # Answers that came before the tagged OK of an earlier batch: Dovecot works on pipelined
    # FETCHes together, so batch k+1's messages can come before batch k's OK (seen in tests).
    early: dict[int, dict] = {}

    def send_next() -> None:
        chunk = next(chunks, None)
        if chunk is not None:
            tag = TAGS.next(b"f")
            imap.send(b"%s UID FETCH %s %s\r\n" % (tag, str(chunk).encode("ascii"), wanted.encode("ascii")))
            inflight.append((tag, chunk))

    broken = False  # the connection cannot be read any more: nothing to drain
    try:
        for _ in range(max(1, depth)):
            send_next()
        while inflight:
            tag, chunk = inflight[0]
            status, text, fast, data = _read_batch(reader, tag, imap)
            inflight.popleft()
            send_next()  # asked for now: answered while this batch is matched
            if status != "OK":
                raise ServerRefused("FETCH", text)
            for uid, item in fast:
                early.setdefault(uid, {}).update(item)
            for uid, item in internals.parse_fetch_response(data, session.client.normalise_times).items():
                early.setdefault(uid, {}).update(item)
            for uid in sorted(u for u in early if u in chunk):
                yield uid, early.pop(uid)
            for uid in [u for u in early if not any(u in c for _, c in inflight)]:
                del early[uid]  # not one of ours (an unsolicited FETCH): dropped, as `session.fetch` does
    except (ServerRefused, GeneratorExit):
        raise
    except BaseException:
        broken = True
        raise
    finally:
        if not broken:
            _drain(reader, inflight, imap)


def _read_batch(reader: ResponseReader, tag: bytes, imap) -> tuple[str, str, list, list]:
    """Responses up to `tag`'s: (status, text, the FETCH answers taken apart here as (uid, data),
    the other FETCH answers in imaplib's form for IMAPClient's parser)."""
    fast: list[tuple[int, dict]] = []
    data: list = []
    while True:
        parts = reader.response()
        head = parts[0]
        if head.startswith(b"* "):
            m = _FETCH.match(head)
            if m is not None:
                got = fast_fetch_items(int(m.group(1)), [m.group(2), *parts[1:]])
                if got is not None:
                    fast.append(got)
                else:
                    data.extend(_as_imaplib(m.group(1) + b" " + m.group(2), parts))
            continue  # EXISTS, EXPUNGE, OK [...]: not this command's
        if head.startswith(b"+"):
            raise imap.abort(f"unexpected continuation request: {head[:200]!r}")
        got, _, rest = head.partition(b" ")
        if got != tag:
            raise imap.abort(f"unexpected tagged response: {head[:200]!r}")
        status, _, text = rest.partition(b" ")
        return status.upper().decode("ascii", "replace"), text.decode("utf-8", "replace"), fast, data


def fast_fetch_items(seq: int, parts: list[bytes]) -> tuple[int, dict] | None:
    """(uid, data) of one FETCH answer as IMAPClient's parser gives it, or None for a shape
    only that parser reads. `parts`: the text after "FETCH ", then literal, line, literal, ..."""
    lines = parts[0::2]
    literals = parts[1::2]
    text = b"\0".join(lines)  # a literal's place: after its {n}
    if not (text.startswith(b"(") and text.endswith(b")")):
        return None
    out: dict = {b"SEQ": seq}
    pos, end, n = 1, len(text) - 1, 0
    while pos < end:
        m = _ITEM.match(text, pos)
        if m is None:
            return None
        name, value = m.group(1).upper(), m.group(2)
        pos = m.end()
        if value[:1] == b"{":
            if text[pos : pos + 1] != b"\0" or n >= len(literals) or len(literals[n]) != int(value[1:-1]):
                return None
            out[name] = literals[n]
            n += 1
            pos += 1
        elif value == b"NIL":
            out[name] = None
        else:
            out[name] = int(value) if value[:1] != b"0" or len(value) == 1 else value
        if pos < end:
            if text[pos : pos + 1] != b" ":
                return None
            pos += 1
    uid = out.pop(b"UID", None)
    if n != len(literals) or not isinstance(uid, int):
        return None
    return uid, out


def _as_imaplib(first: bytes, parts: list[bytes]) -> list:
    """One FETCH response as imaplib stores it: (line, literal) pairs, then the closing line."""
    lines = [first, *parts[2::2]]
    literals = parts[1::2]
    out: list = [(lines[i], lit) for i, lit in enumerate(literals)]
    out.append(lines[-1])
    return out


def _drain(reader: ResponseReader, inflight: deque[tuple[bytes, UidSet]], imap) -> None:
    """Read and drop the answers of the batches still in flight (the caller stopped early)."""
    while inflight:
        tag, _ = inflight.popleft()
        _read_batch(reader, tag, imap)
