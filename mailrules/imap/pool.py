"""`SessionPool`: one IMAP connection per account, opened on first use."""

from __future__ import annotations

import contextlib
from collections.abc import Callable

from ..model import Config
from .session import ImapSession


class SessionPool:
    """One connection per account, opened on first use.

    The engine takes connections with `get`; the daemon, which knows when a connection
    died, forgets it with `drop` (no LOGOUT: a dead link would not answer it) and learns
    whether one is open with `current`.
    """

    def __init__(self, config: Config, connect: Callable[[str], ImapSession] | None = None) -> None:
        self.config = config
        self._connect = connect or self._default_connect
        self.sessions: dict[str, ImapSession] = {}

    def _default_connect(self, account: str) -> ImapSession:
        from ..connect import connect

        return ImapSession(connect(self.config.accounts[account]), account)

    def get(self, account: str) -> ImapSession:
        if account not in self.sessions:
            self.sessions[account] = self._connect(account)
        return self.sessions[account]

    def current(self, account: str) -> ImapSession | None:
        """The account's open connection, or None (never connects)."""
        return self.sessions.get(account)

    def discard(self, account: str) -> None:
        """Log out of the account's connection (if open) and forget it."""
        session = self.sessions.pop(account, None)
        if session is not None:
            session.logout()

    def drop(self, account: str) -> None:
        """Forget a dead connection without waiting for a LOGOUT it would never answer."""
        session = self.sessions.pop(account, None)
        if session is not None:
            with contextlib.suppress(Exception):
                session.client.shutdown()

    def close(self) -> None:
        for account in list(self.sessions):
            self.discard(account)
