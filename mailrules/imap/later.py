"""A UID MOVE sent now and read later: its answer is read once the next command has gone out.

Why: on a slow link every wait for the server is a round trip (20 ms in the backlog benchmark's
scenario b). A terminal action's messages leave play whether it succeeds or fails
(`mailrules.kernel`): nothing the pass does next touches them, so it need not wait for the MOVE
before it sends its next command. The MOVE's answer (its COPYUID, its messages' flags, or a
refusal) is read as soon as the next command has gone out on the connection, before that
command's own answer is read: the server answers commands in the order it got them (RFC 3501
5.5; commands on other messages are not ambiguous), so the bytes waiting are the MOVE's first.
What the answer means (journal, log, a TRYCREATE retry, a failure) is worked out by the action
afterwards (`LaterTransfer.result`), when nothing else is being read.

`InFlight` (one per session) holds the transfers sent and not read yet, and reads them all when
any command goes out on the connection (ours, IMAPClient's, a pipeline's: `internals.on_send`)
or when asked (`settle`: at the end of the pass, or before a folder's UIDNEXT is needed). A
connection lost meanwhile leaves the action's journaled intent, resumed as after a crash.
"""

from __future__ import annotations

import contextlib
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from ..uidset import UidSet
from . import internals
from .copyflags import read_reading_flags, send_reading_flags, uid_of
from .wire import parse_copyuid


@dataclass
class LaterTransfer:
    """A UID MOVE (with its FETCH FLAGS, and CREATE + SUBSCRIBE of a missing folder) sent, not read."""

    session: Any  # the `ImapSession` it was sent on
    uids: UidSet
    dest: str
    tags: tuple[bytes, bytes]  # the FETCH (FLAGS) and the MOVE
    creating: tuple[bytes, bytes] | None = None  # CREATE and SUBSCRIBE, when the folder was missing
    refused: Callable[[str, str], Exception] = RuntimeError  # what a refusal raises (`ServerRefused`)
    answer: str | None = None  # "" once read and OK; the refusal's text otherwise
    created: tuple[str, list] | None = None  # the CREATE's answer
    found: Any = None  # the `Transfer` read (flags, COPYUID)
    error: BaseException | None = None  # the connection failed before the answer was read

    @property
    def settled(self) -> bool:
        return self.answer is not None or self.error is not None

    def read(self, transfer: Any) -> None:
        """Read this transfer's answers (the next ones on the wire) into `transfer`."""
        imap = internals.imaplib_of(self.session.client)
        if self.creating is not None:
            self.created = internals.answer(imap, "CREATE", self.creating[0])
            internals.answer(imap, "SUBSCRIBE", self.creating[1])  # a refused SUBSCRIBE does not matter
        try:
            transfer.flags.update(read_reading_flags(self.session.client, *self.tags, "MOVE", self.uids))
            self.answer = ""
        except IMAPClientAbortError:
            raise
        except IMAPClientError as exc:
            self.answer = str(exc) or "refused"
        codes = internals.untagged(imap).pop("COPYUID", [])
        others = []
        for code in codes:  # only ours: another command's COPYUID stays for it
            parsed = parse_copyuid(code)
            if parsed and set(parsed[1]) <= set(self.uids):
                transfer.uidvalidity = parsed[0]
                transfer.mapping.update(parsed[1])
            else:
                others.append(code)
        if others:
            internals.untagged(imap)["COPYUID"] = others
        self.found = transfer
        if not self.answer:
            self.session.note_transfer(self.dest, transfer)

    def result(self) -> Any:
        """The `Transfer`, as `ImapSession.move` returns it or raises `ServerRefused` (read now if
        it was not yet: one round trip)."""
        if not self.settled:
            self.session.later.settle()
        if self.error is not None:
            raise self.error
        if self.created is not None:
            self.session.note_created(self.dest, *self.created)
        if self.answer:
            if "EXPUNGEISSUED" not in self.answer.upper():
                raise self.refused("MOVE", self.answer)
            # Another client expunged some of them (RFC 5530): the server did nothing; move the rest.
            remaining = self.session.existing(self.uids)
            return self.session.move(remaining, self.dest) if remaining else self.found
        return self.found


@dataclass
class LaterSearch:
    """A UID SEARCH sent ahead of its turn (`InFlight.ahead`), read with the next command's answer.

    Only searches of flags, keywords, size and dates: which flags it reads (`reads`) is known, so
    that a STORE of ours on one of them since makes its answer stale for the messages it stored
    (`InFlight.stored`: they leave `within`)."""

    session: Any
    tokens: tuple[bytes, ...]
    within: UidSet
    reads: frozenset[str]  # flag and keyword names, upper case, without the backslash
    tag: bytes = b""
    answer: UidSet | None = None  # None: not read yet, or refused
    done: bool = False
    error: BaseException | None = None

    @property
    def settled(self) -> bool:
        return self.done or self.error is not None

    def read(self, _transfer: Any) -> None:
        imap = internals.imaplib_of(self.session.client)
        typ, _data = internals.answer(imap, "SEARCH", self.tag)
        lines = internals.untagged(imap).pop("ESEARCH", [])
        mark = b'(TAG "' + self.tag + b'")'
        mine = [line for line in lines if isinstance(line, bytes) and mark in line]
        others = [line for line in lines if not (isinstance(line, bytes) and mark in line)]
        if others:
            internals.untagged(imap)["ESEARCH"] = others  # another search's answer stays for it
        if typ == "OK" and mine:  # (an ESEARCH answer comes even when nothing matched: none, not read)
            found = UidSet()
            for line in mine:
                m = _ESEARCH_ALL.search(line)
                if m:
                    found = found | UidSet.parse(m.group(1).decode("ascii"))
            self.answer = found & self.within
        self.done = True


_ESEARCH_ALL = re.compile(rb"\bALL ([0-9:,]+)", re.I)
_FLAG_KEYS = {b"ANSWERED", b"DELETED", b"DRAFT", b"FLAGGED", b"SEEN"}
_OTHER_KEYS = {b"ALL", b"NOT", b"OR", b"(", b")", b"LARGER", b"SMALLER", b"OLDER", b"YOUNGER", b"BEFORE", b"ON",
               b"SINCE", b"SENTBEFORE", b"SENTON", b"SENTSINCE"}


def flags_read(tokens: tuple[Any, ...]) -> frozenset[str] | None:
    """The flags and keywords a search reads, or None if it has a key not known here (then it is
    never sent ahead: a STORE could change its answer unseen)."""
    if b"ALL" in tokens:
        return None  # (`ImapSession.existing`'s): every message still there, which a MOVE changes
    out: set[str] = set()
    keyword = False
    for tok in tokens:
        if type(tok) is not bytes:
            return None  # a literal (a string): not one of these searches
        word = tok.upper()
        if keyword:
            out.add(word.decode("ascii", "replace"))
            keyword = False
        elif word in (b"KEYWORD", b"UNKEYWORD"):
            keyword = True
        elif word in _FLAG_KEYS or (word.startswith(b"UN") and word[2:] in _FLAG_KEYS):
            out.add(word.removeprefix(b"UN").decode())
        elif word in (b"NEW", b"OLD", b"RECENT"):
            out |= {"SEEN", "RECENT"}
        elif word not in _OTHER_KEYS and not _VALUE.fullmatch(word):
            return None
    return frozenset(out)


_VALUE = re.compile(rb"\d+|\d{1,2}-[A-Z]{3}-\d{4}")  # a number or a date


def flag_name(flag: str) -> str:
    """A flag or keyword as `flags_read` names it."""
    return flag.removeprefix("\\").upper()


class Ready:
    """A `mailrules.mailstore.Later` that runs its command when asked (an in-memory store; a MOVE
    too long for one command)."""

    def __init__(self, command: Callable[[], Any]) -> None:
        self.command = command

    def result(self) -> Any:
        return self.command()


@dataclass
class InFlight:
    """The transfers of one session sent and not read yet (see the module's docstring)."""

    session: Any
    sent: list[LaterTransfer] = field(default_factory=list)
    make: Callable[[], Any] = dict  # a fresh `Transfer` for each answer read
    refused: Callable[[str, str], Exception] = RuntimeError  # `ServerRefused`
    searches: list[LaterSearch] = field(default_factory=list)  # sent `ahead` in this mailbox's pass

    def send(self, uids: UidSet, uid_set: str, dest: str, create: bool) -> LaterTransfer:
        """Send the MOVE of `uids` (`uid_set`: in one command) to `dest`, creating it first if `create`."""
        imap = internals.imaplib_of(self.session.client)
        kept = self.pending_answers(internals.untagged(imap))
        for stale in ("FETCH", "COPYUID"):  # answers read after this are the MOVE's, or another command's
            internals.untagged(imap).pop(stale, None)
        internals.untagged(imap).update(kept)
        internals.off_send(imap)  # what is in flight stays so: this goes with it
        try:
            creating = self.session.send_create(dest) if create else None
            tags = send_reading_flags(self.session.client, uid_set, dest, "MOVE")
        finally:
            if self.sent:
                internals.on_send(imap, self.settle)
        later = LaterTransfer(self.session, uids, dest, tags, creating, self.refused)
        self.sent.append(later)
        internals.on_send(imap, self.settle)
        return later

    def ahead(self, query: Any, within: UidSet) -> None:
        """Send `query`'s UID SEARCH (a `mailrules.criteria.SearchQuery`) over `within` now, for a
        search to come: its answer is read with the next command's and kept for `answered`
        (nothing for a search not of flags, size or dates, or with a CHARSET)."""
        tokens = query.tokens
        reads = flags_read(tokens) if query.charset is None else None
        if reads is None or not within or not self.session.has("ESEARCH"):
            return
        if self.answered(tokens, within, 0) is not None:  # sent already: an empty UidSet, falsy
            return
        imap = internals.imaplib_of(self.session.client)
        cover = within.cover_text(self.session.max_set_chars).encode("ascii")
        later = LaterSearch(self.session, tuple(tokens), within, reads)
        internals.off_send(imap)  # what is in flight stays so: this goes with it
        try:
            later.tag = internals.command(imap, "UID", "SEARCH", "RETURN", "(ALL)", "UID", cover, *tokens)
        finally:
            if self.sent:
                internals.on_send(imap, self.settle)
        self.searches.append(later)
        self.sent.append(later)
        internals.on_send(imap, self.settle)

    def answered(self, tokens: tuple[Any, ...], within: UidSet, read: int = 1) -> UidSet | None:
        """The answer of a search sent `ahead` with these tokens over a superset of `within`
        (read now if it was not: it was sent first), or None. read=0: only whether one was sent
        (then an empty UidSet, not None, says it was)."""
        for later in self.searches:
            if later.tokens == tuple(tokens) and not (within - later.within):
                if not read:
                    return UidSet()
                if not later.settled:
                    self.settle()
                return later.answer & within if later.answer is not None else None
        return None

    def forget(self) -> None:
        """Forget the answers of the searches sent `ahead` (another mailbox, or the pass's end)."""
        self.searches.clear()

    @property
    def busy(self) -> bool:
        """Whether a command sent by `send` or `ahead` is not read yet."""
        return bool(self.sent)

    def stored(self, flags: Any, uids: UidSet) -> None:
        """A STORE of ours changes these flags on `uids`: the answers sent ahead that read one are
        stale for those messages, and still hold for the others (the STORE changed nothing else)."""
        names = {flag_name(f) for f in flags}
        for search in self.searches:
            if search.reads & names:
                search.within = search.within - uids
        self.searches = [s for s in self.searches if s.within]

    @contextlib.contextmanager
    def burst(self) -> Iterator[None]:
        """Commands sent together (CREATE, SUBSCRIBE, FETCH, COPY): what is in flight is read once
        they are all out, so that they share its round trip."""
        imap = internals.imaplib_of(self.session.client)
        internals.off_send(imap)
        yield
        self.settle()

    def pending_answers(self, responses: dict[str, list]) -> dict[str, list]:
        """Of imaplib's collected responses, those of the commands sent and not read yet: a server
        may answer a later command while it still works on an earlier one (Dovecot runs UID
        commands side by side), so they can be read early, with another command's. Kept for them
        where the others are cleared or taken."""
        tags = [b'(TAG "' + later.tag + b'")' for later in self.sent if isinstance(later, LaterSearch)]
        uids: set[int] = set()
        for later in self.sent:
            if isinstance(later, LaterTransfer):
                uids.update(later.uids)
        kept: dict[str, list] = {}
        if tags:
            kept["ESEARCH"] = [x for x in responses.get("ESEARCH", ()) if isinstance(x, bytes) and any(t in x for t in tags)]
        if uids:
            kept["FETCH"] = [x for x in responses.get("FETCH", ()) if uid_of(x) in uids]
            kept["COPYUID"] = [x for x in responses.get("COPYUID", ())
                               if (parsed := parse_copyuid(x)) is not None and set(parsed[1]) <= uids]
        return {key: lines for key, lines in kept.items() if lines}

    def sent_to(self, dest: str) -> bool:
        """Whether a MOVE of ours to `dest` is unread (the searches sent ahead, also in flight, are no MOVE)."""
        return any(isinstance(later, LaterTransfer) and later.dest == dest for later in self.sent)

    def settle(self) -> None:
        """Read every answer not read yet, in the order sent."""
        sent, self.sent = self.sent, []
        internals.off_send(internals.imaplib_of(self.session.client))
        for k, later in enumerate(sent):
            try:
                later.read(self.make())
            except BaseException as exc:
                for rest in sent[k:]:
                    rest.error = exc  # the connection is gone: none of them will be read
                raise


__all__ = ["InFlight", "LaterSearch", "LaterTransfer", "Ready", "flags_read"]
