"""What the daemon really does, for systemd's STATUS= and `mailrules status`; and which failures are permanent."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from pathlib import Path

from ..model import Config
from ..state import StateStore
from .systemd import sd_notify

log = logging.getLogger("mailrules.watcher")

HEALTH_META = "health:"  # state meta keys "health:ACCOUNT" and "health:ACCOUNT:MAILBOX" (for `status`)


def describe(exc: BaseException) -> str:
    """The failure in words, never a class name (see mailrules.wording)."""
    from ..wording import in_words

    return in_words(exc)


class MailboxMissing(Exception):
    """A watched mailbox does not exist on the server (a permanent problem, not a lost connection)."""


def permanent_problem(exc: BaseException) -> str | None:
    """A short name for a failure that retrying soon will not cure, or None for a transient one."""
    from ..connect import AuthenticationError, InsecureConnectionError, SecretUnavailableError, TLSError

    if isinstance(exc, AuthenticationError):
        return "login refused"
    if isinstance(exc, TLSError):
        return "TLS failure"
    if isinstance(exc, SecretUnavailableError):
        return "password unavailable"
    if isinstance(exc, InsecureConnectionError):
        return "refused to connect without TLS"
    if isinstance(exc, MailboxMissing):
        return str(exc)
    return None


def health_key(account: str, mailbox: str | None = None) -> str:
    return f"{HEALTH_META}{account}" + (f":{mailbox}" if mailbox is not None else "")


class Health:
    """What the daemon really does, for sd_notify's STATUS and `mailrules status`.

    An account counts as watched only once its connection is up and while no permanent
    problem is known; a watched mailbox with a problem (missing) is not counted either.
    Every change is sent to systemd at once (STATUS=) and kept in the state's meta table.
    """

    def __init__(self, state_dir: str | Path, config: Callable[[], Config], *, label: str = "") -> None:
        self.state_dir = state_dir
        self.config = config  # the rules in force (a reload replaces them), as far as this process serves them
        self.label = label  # e.g. 'shard 1/3': said first in the STATUS line
        self._lock = threading.Lock()
        self.connected: set[str] = set()
        self.problems: dict[tuple[str, str | None], str] = {}
        self._sent: str | None = None
        self._ready = False  # nothing is sent before READY=1 (systemd expects READY first)

    def ready(self, sent: str) -> None:
        """READY=1 went out with STATUS=`sent`: later changes are announced."""
        with self._lock:
            self._ready, self._sent = True, sent
        self.announce()

    def up(self, account: str) -> None:
        """The account's connection works (and its account-level problem, if any, is over)."""
        self._change(account, None, None, connected=True)

    def down(self, account: str) -> None:
        """The account's connection is lost for a transient reason: reconnecting."""
        self._change(account, None, None, connected=False)

    def problem(self, account: str, mailbox: str | None, text: str | None) -> None:
        """Set (text) or clear (None) the permanent problem of an account or one of its mailboxes."""
        self._change(account, mailbox, text, connected=False if mailbox is None and text else None)

    def _change(self, account: str, mailbox: str | None, text: str | None, *, connected: bool | None) -> None:
        with self._lock:
            before = (account in self.connected, self.problems.get((account, mailbox)))
            if connected is True:
                self.connected.add(account)
            elif connected is False:
                self.connected.discard(account)
            if text is None:
                if mailbox is not None or connected is True:
                    self.problems.pop((account, mailbox), None)
            else:
                self.problems[(account, mailbox)] = text
            after = (account in self.connected, self.problems.get((account, mailbox)))
        if before[1] != after[1]:
            self._persist(account, mailbox, after[1])
        if before != after:
            self.announce()

    def _persist(self, account: str, mailbox: str | None, text: str | None) -> None:
        value = f"{dt.datetime.now(dt.UTC).isoformat(timespec='seconds')}\t{text}" if text else ""
        try:
            store = StateStore(self.state_dir)
            try:
                store.set_meta(health_key(account, mailbox), value)
            finally:
                store.close()
        except Exception as exc:  # noqa: BLE001 - systemd still gets it
            log.debug("cannot record the health of account %s: %s", account, exc)

    def summary(self) -> str:
        config = self.config()
        with self._lock:
            problems = dict(self.problems)
            connected = set(self.connected)
        watching, mailboxes, connecting, parts = 0, 0, [], []
        for name, account in config.accounts.items():
            trouble = problems.get((name, None))
            if trouble:
                parts.append(f"account {name!r}: {trouble}")
                continue
            missing = [m for m in account.watch if problems.get((name, m))]
            parts += [f"account {name!r}: {problems[(name, m)]}" for m in missing]
            if name not in connected:
                connecting.append(repr(name))
                continue
            watching += 1
            mailboxes += len(account.watch) - len(missing)
        text = f"watching {mailboxes} mailbox(es) of {watching} account(s)"
        if self.label:
            text = f"{self.label}: {text}"
        if connecting:
            text += f"; connecting to {', '.join(connecting)}"
        return "; ".join([text, *parts])

    def readiness(self) -> tuple[bool, str]:
        """(ready, the STATUS line): started, and every served account connected without a permanent problem."""
        text = self.summary()
        names = list(self.config().accounts)
        with self._lock:
            if not self._ready:
                return False, f"starting: {text}"
            waiting = [n for n in names if n not in self.connected or self.problems.get((n, None))]
        return not waiting, text

    def counts(self) -> dict[str, int]:
        """Served accounts by state: connected (and without a permanent problem), other."""
        names = list(self.config().accounts)
        with self._lock:
            connected = sum(1 for n in names if n in self.connected and not self.problems.get((n, None)))
        return {"connected": connected, "other": len(names) - connected}

    def announce(self) -> None:
        """Send the STATUS line to systemd when it changed."""
        text = self.summary()
        with self._lock:
            if not self._ready or text == self._sent:
                return
            self._sent = text
        sd_notify(f"STATUS={text}")
