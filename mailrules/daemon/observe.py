"""What the daemon reports as it works, for metrics: passes, announcements, errors.

The workers and change sources call an `Observer`; the default one does nothing, so that
a daemon without ``--metrics`` pays nothing and imports nothing. `mailrules.daemon.metrics`
implements it with Prometheus collectors. Kept apart from the metrics module so that
the worker never imports ``prometheus_client``.
"""

from __future__ import annotations

from typing import Protocol

from ..connect import AuthenticationError, InsecureConnectionError, SecretUnavailableError, TLSError
from .health import MailboxMissing


class Observer(Protocol):
    """Receives the daemon's events; every method must return quickly and never raise."""

    def pass_done(self, kind: str, seconds: float) -> None:
        """A pass ended: `kind` is "arrival" or "sweep"."""

    def acted_after(self, seconds: float, messages: int) -> None:
        """`messages` new messages were acted on `seconds` after their mailbox's change was announced."""

    def error(self, kind: str) -> None:
        """Something failed: `kind` is one of ERROR_KINDS."""


class NoObserver:
    """The daemon without --metrics: nothing is recorded."""

    def pass_done(self, kind: str, seconds: float) -> None:
        pass

    def acted_after(self, seconds: float, messages: int) -> None:
        pass

    def error(self, kind: str) -> None:
        pass


ERROR_KINDS = (
    "login_refused", "tls_failure", "password_unavailable", "insecure_connection", "connect",
    "connection_lost", "watch_lost", "mailbox_missing", "mailbox", "action_failed",
)


def connect_error_kind(exc: BaseException) -> str:
    """The error kind of a failure to connect (or to open a watched mailbox)."""
    for cls, kind in ((AuthenticationError, "login_refused"), (TLSError, "tls_failure"),
                      (SecretUnavailableError, "password_unavailable"),
                      (InsecureConnectionError, "insecure_connection"), (MailboxMissing, "mailbox_missing")):
        if isinstance(exc, cls):
            return kind
    return "connect"
