"""How many characters of UID set one command carries, per connection (issue 20).

RFC 7162 advises command lines of at most 8,192 octets, and most servers need no more. On
a large mailbox every command that changes it costs Dovecot a sync of its index and uidlist:
a 100,000-message backlog's moves in 8,000-character sets were 46 UID MOVEs at 0.3-0.9 s
each, where imapfilter sends 7 EXPUNGEs. Dovecot accepts 64 KB lines unless its
administrator lowered `imap_max_line_length`; so on Dovecot (identified by ID) sets go up to
`LONG_SET_CHARS`, until a command is refused as too long: such a command did nothing
(Dovecot answers BAD before executing it), so it is sent again in the RFC's size, and so is
everything after it on that connection.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from ..uidset import UidSet
from .answers import ServerRefused

log = logging.getLogger("mailrules.imap")

MAX_SET_CHARS = 8000  # characters of UID set per command (RFC 7162 advises lines <= 8192)
LONG_SET_CHARS = 48000  # on Dovecot, whose lines may be 64 KB long by default


class SetSize:
    """One connection's UID set length: long on Dovecot until refused, the RFC's elsewhere."""

    def __init__(self, account: str) -> None:
        self.account = account
        self.long: bool | None = None  # None: the server not identified yet

    def chars(self, software: str | None) -> int:
        """The set length for a server whose ID name is `software` (None: not asked yet, and
        not asked just for this)."""
        if self.long is None:
            if software is None:
                return MAX_SET_CHARS
            self.long = software.startswith("dovecot")
        return LONG_SET_CHARS if self.long else MAX_SET_CHARS

    def refused_long(self, exc: ServerRefused, length: int) -> bool:
        """Whether `exc` refused a command with `length` characters of set as too long; if so,
        this connection keeps to the RFC's size from now on."""
        if not (self.long and length > MAX_SET_CHARS and "TOO LONG" in exc.message.upper()):
            return False
        log.warning("account %s: the server refused a %s command as too long; sending UID sets of at most "
                    "%d characters from now on", self.account, exc.command, MAX_SET_CHARS)
        self.long = False
        return True

    def send_chunked(self, uids: UidSet, send: Callable[[UidSet], None], batch: int | None,
                     software: str | None) -> None:
        """`send(chunk)` for each chunk of `uids` (of at most `batch` UIDs); a chunk refused as too
        long is sent again in the RFC's size."""
        for chunk in uids.chunks(self.chars(software), batch):
            try:
                send(chunk)
            except ServerRefused as exc:
                if not self.refused_long(exc, len(str(chunk))):
                    raise
                for piece in chunk.chunks(MAX_SET_CHARS, batch):
                    send(piece)
