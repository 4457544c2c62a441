"""`MailStore`: the few mail-store operations the built-in actions are written against.

Each built-in action (`mailrules.actions`) has one body, ``execute(run, arg, uids, intent,
resuming)``, and does everything through ``run.session``, a `MailStore`. Two implement it:

- `mailrules.imap.session.ImapSession`: the real server (UID commands, chunked UID sets,
  COPYUID/APPENDUID, TRYCREATE, the pass's folder listing);
- `mailrules.memory.MemoryStore`: one account of a `mailrules.memory.MemoryServer`, used by
  dry runs, ``mailrules test``, a rules file's ``tests:`` cases and ``explain``.

So what the offline evaluation says a rule does is what the same code does on the server:
``apply --dry-run``, ``mailrules test`` and a real run cannot disagree about an action (the
test ``tests/test_one_body.py`` compares them on Dovecot, message by message). Like
httpx's transports or IMAPClient's MockIMAP4, the boundary is small on purpose: adding an
operation here means implementing it twice, so the actions ask for little.

The operations are those of IMAP with UIDPLUS, in IMAP's terms: UIDs of the selected
mailbox, folders by the server's name (`server_name` translates a rules-file name), and
fetched data keyed as IMAPClient gives it (``b"BODY[]"``, ``b"FLAGS"``, ``b"INTERNALDATE"``,
``b"RFC822.SIZE"``).
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Iterator
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from .criteria import SearchQuery
    from .imap.session import Selected, Transfer
    from .uidset import UidSet


class MailStore(Protocol):
    """One account's mail, one mailbox selected: what a built-in action may ask of it.

    Refusals raise `mailrules.imap.session.ServerRefused` (``trycreate`` when the folder is
    missing), as a server's NO does.
    """

    account: str
    selected: Selected | None

    def has(self, capability: str) -> bool:
        """Whether the store offers an IMAP capability ("MOVE", "UIDPLUS")."""
        ...

    # ---------------------------------------------------------------- folders

    def server_name(self, path: str) -> str:
        """The store's name for a folder written 'A/B' in a rules file."""
        ...

    def folder_exists(self, server_name: str) -> bool: ...

    def create_folder(self, server_name: str) -> None:
        """CREATE (success when it exists already)."""
        ...

    def known_missing(self, server_name: str) -> bool:
        """Whether the folder is known not to exist (COPY/MOVE then create it in passing)."""
        ...

    def uidnext_floor(self, server_name: str) -> int | None:
        """A value the folder's UIDNEXT is known to be at or above, without asking (or None)."""
        ...

    def status_uidnext(self, server_name: str) -> int:
        """STATUS UIDNEXT of a folder (it must exist)."""
        ...

    def find_trash(self) -> str | None:
        """The Trash mailbox's name (\\Trash special use, else by name), None when there is none."""
        ...

    def select(self, server_name: str, *, readonly: bool = False) -> Selected:
        """SELECT (EXAMINE when readonly): UIDVALIDITY, UIDNEXT, PERMANENTFLAGS."""
        ...

    # ---------------------------------------------------------------- the selected mailbox

    def search(self, query: SearchQuery, within: UidSet | None = None) -> UidSet:
        """UID SEARCH, restricted to `within`. Actions use only ALL, UID n:*, the system-flag
        keys (SEEN, UNSEEN, ...) and KEYWORD/UNKEYWORD."""
        ...

    def existing(self, uids: UidSet) -> UidSet:
        """Which of these UIDs still exist."""
        ...

    def fetch(self, uids: UidSet, items: list[str], batch: int = ...) -> Iterator[tuple[int, dict]]:
        """UID FETCH of BODY.PEEK[], FLAGS, INTERNALDATE, RFC822.SIZE: yields (uid, data)."""
        ...

    def store(self, uids: UidSet, flags: Iterable[str], *, add: bool) -> None:
        """UID STORE +FLAGS.SILENT / -FLAGS.SILENT (system flags and keywords alike)."""
        ...

    def copy(self, uids: UidSet, server_name: str, *, create: bool = False) -> Transfer:
        """UID COPY; the `Transfer` maps source to destination UIDs (COPYUID)."""
        ...

    def move(self, uids: UidSet, server_name: str, *, create: bool = False) -> Transfer:
        """UID MOVE (where `has("MOVE")`), mapped as `copy`."""
        ...

    def move_later(self, uids: UidSet, server_name: str, *, create: bool = False) -> Later:
        """`move`, whose answer may be read later (IMAP: when the next command has gone out, so
        that a terminal action costs no round trip of its own): `.result()` gives the `Transfer`
        or raises as `move` does."""
        ...

    def uid_expunge(self, uids: UidSet) -> None:
        """UID EXPUNGE of exactly these UIDs (those marked \\Deleted go). Never a bare EXPUNGE."""
        ...

    def append(self, server_name: str, message: bytes, flags: Iterable[str],
               internaldate: dt.datetime | None) -> tuple[int, int] | None:
        """APPEND; (UIDVALIDITY, new UID) where the store says (APPENDUID)."""
        ...


class Later(Protocol):
    """A command's outcome, read when asked (`MailStore.move_later`)."""

    def result(self) -> Transfer: ...


__all__ = ["Later", "MailStore"]
