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

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from imapclient.exceptions import IMAPClientAbortError, IMAPClientError

from ..uidset import UidSet
from . import internals
from .copyflags import read_reading_flags, send_reading_flags
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
            self.created = _answer(imap, "CREATE", self.creating[0])
            _answer(imap, "SUBSCRIBE", self.creating[1])  # a refused SUBSCRIBE does not matter
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
            self.session.settle()
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

    def send(self, uids: UidSet, uid_set: str, dest: str, create: bool) -> LaterTransfer:
        """Send the MOVE of `uids` (`uid_set`: in one command) to `dest`, creating it first if `create`."""
        imap = internals.imaplib_of(self.session.client)
        for stale in ("FETCH", "COPYUID"):  # answers read after this are the MOVE's, or another command's
            internals.untagged(imap).pop(stale, None)
        creating = self.session.send_create(dest) if create else None
        tags = send_reading_flags(self.session.client, uid_set, dest, "MOVE")
        later = LaterTransfer(self.session, uids, dest, tags, creating, self.refused)
        self.sent.append(later)
        internals.on_send(imap, self.settle)
        return later

    def sent_to(self, dest: str) -> bool:
        return any(later.dest == dest for later in self.sent)

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


def _answer(imap, name: str, tag: bytes) -> tuple[str, list]:
    """One command's tagged answer; BAD as a refusal, a lost connection raised."""
    try:
        return internals.complete(imap, name, tag)
    except imap.abort:
        raise
    except imap.error as exc:
        return "BAD", [str(exc).encode()]


__all__ = ["InFlight", "LaterTransfer", "Ready"]
