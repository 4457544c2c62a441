"""SELECT and the search for what is new, in one round trip.

An arrival pass on a mailbox the connection has not selected (the daemon's worker idles
on its home mailbox; NOTIFY tells it of mail elsewhere) starts with SELECT, then a UID SEARCH
of what lies above the checkpoint (0 for a mailbox never processed: all of it). The search does not depend on the SELECT's
answer: ``UID SEARCH UID n:*`` names no UID the SELECT tells, so both go in one write and
the server answers them in order (RFC 3501 5.5: SELECT is never run beside another
command). A failed SELECT leaves no mailbox selected, so the search behind it is refused
and forgotten; the caller sees the SELECT's failure as from `ImapSession.select`.

`run --once` does both as its first connection opens, before the pass (`SelectedEarly`).

The search sees everything the SELECT saw and maybe more (mail that came between the
two): the caller may take ``max(UIDNEXT - 1, the highest UID found)`` as what the pass
covers.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from imapclient.exceptions import IMAPClientError

from ..criteria import SearchQuery
from ..uidset import UidSet
from . import internals
from .session import ImapSession, Selected, ServerRefused

_ESEARCH_ALL = re.compile(rb"\bALL\s+([0-9:,]+)")


@dataclass(frozen=True)
class SelectedEarly:
    """A SELECT made as the connection opened (`SessionPool.open_early`), and the UIDs the
    search behind it found above `checkpoint` (None: it searched nothing)."""

    selected: Selected
    above: UidSet | None
    checkpoint: int


def select_and_search_above(session: ImapSession, server_name: str, checkpoint: int,
                            early: SelectedEarly | None = None) -> tuple[Selected, UidSet | None]:
    """SELECT `server_name` (read-write) and ``UID SEARCH UID checkpoint+1:*`` pipelined behind it.

    Returns the selection and the UIDs above `checkpoint` (None if the search was refused:
    search again the ordinary way). Raises as `ImapSession.select` does. `early`: the
    connection selected it as it opened; then nothing is sent if its search covers what is
    above `checkpoint` (it searched above a checkpoint no higher), else only the search.
    """
    if early is not None:
        if early.above is not None and early.checkpoint <= checkpoint:
            return early.selected, UidSet(u for u in early.above if u > checkpoint)
        try:
            return early.selected, search_above(session, checkpoint)
        except ServerRefused:
            return early.selected, None
    if not logged_in(session):  # as `select` would fail
        return session.select(server_name), None
    imap = internals.imaplib_of(session.client)
    session.before_select()
    with internals.one_write(imap):
        tags = send_select_and_search(session, server_name, checkpoint)
    return read_select_and_search(session, server_name, checkpoint, tags)


def logged_in(session: ImapSession) -> bool:
    """Whether the connection is logged in (a SELECT may be pipelined; otherwise `select` says why not)."""
    return getattr(internals.imaplib_of(session.client), "state", "") in ("AUTH", "SELECTED")


def send_select_and_search(session: ImapSession, server_name: str, checkpoint: int) -> tuple[bytes, bytes]:
    """Send the SELECT and the search above `checkpoint` (in the write under way: the caller's
    `internals.one_write`, after `ImapSession.before_select`); their tags."""
    words = ["UID", "SEARCH", *(["RETURN", "(ALL)"] if session.has("ESEARCH") else []), "UID", f"{checkpoint + 1}:*"]
    tag = internals.send_select(session.client, server_name, readonly=False)
    return tag, internals.command(internals.imaplib_of(session.client), *words)


def read_select_and_search(session: ImapSession, server_name: str, checkpoint: int,
                           tags: tuple[bytes, bytes]) -> tuple[Selected, UidSet | None]:
    """The answers of `send_select_and_search`, as `select_and_search_above` returns them."""
    try:
        typ, resp = internals.finish_select(session.client, tags[0], readonly=False)
    finally:
        found = _finish_search(internals.imaplib_of(session.client), tags[1], session.has("ESEARCH"))
    if typ != "OK":
        raise IMAPClientError(f"select failed: {_text(resp)}")
    selected = session.adopt_selection(server_name, resp, readonly=False)
    if found is None:
        return selected, None
    return selected, UidSet(u for u in found if u > checkpoint)  # "n:*" also matches the last UID


def search_above(session: ImapSession, checkpoint: int) -> UidSet:
    """The UIDs above `checkpoint` in the selected mailbox: ``UID SEARCH UID checkpoint+1:*`` alone,
    with the view the connection has. Raises ServerRefused as `ImapSession.search` does."""
    found = session.search(SearchQuery((b"UID", f"{checkpoint + 1}:*".encode())))
    return UidSet(u for u in found if u > checkpoint)  # "n:*" also matches the last UID


def _finish_search(imap, tag: bytes, esearch: bool) -> list[int] | None:
    """Read the pipelined search's answer; its UIDs, or None if it was refused (no mailbox selected)."""
    typ, _data = internals.answer(imap, "SEARCH", tag)
    if typ == "BAD":  # the SELECT before it failed
        return None
    untagged = internals.untagged(imap)
    lines = untagged.pop("ESEARCH" if esearch else "SEARCH", None)
    if typ != "OK" or lines is None:  # refused, or answered without its (E)SEARCH response: ask again
        return None
    out: list[int] = []
    for line in lines:
        text = line if isinstance(line, bytes) else str(line).encode()
        if esearch:
            match = _ESEARCH_ALL.search(text)
            if match:
                out.extend(UidSet.parse(match.group(1).decode("ascii")))
        else:
            out.extend(int(x) for x in text.split())
    return out


def _text(data) -> str:
    item = data[0] if isinstance(data, list) and data else data
    return item.decode("utf-8", "replace") if isinstance(item, bytes) else str(item)
