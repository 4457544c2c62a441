"""Which change sources watch an account's mailboxes, as its server allows (chosen per server).

* The worker IDLEs on the first watched mailbox (home) on its own connection.
* The others, where the server advertises NOTIFY (RFC 5465) and ``max_connections`` allows
  a second connection: one `NotifyWatch` for all of them (2 connections per account
  whatever the number of mailboxes).
* Else an `IdleWatch` each, up to ``max_connections`` connections in all; beyond that, and
  every mailbox of a server without IDLE, the STATUS poll on the worker's connection.
"""

from __future__ import annotations

import dataclasses
import logging

from ..imap.session import ImapSession
from .notify import NotifyWatch
from .sources import ChangeSource, IdleWatch, SourceHost

log = logging.getLogger("mailrules.watcher")


@dataclasses.dataclass
class SourcePlan:
    """Who watches what for one account, as the server allows."""

    home_idle: bool  # the worker IDLEs on its home mailbox
    pushing: list[ChangeSource]  # sources with threads and connections of their own (not started yet)
    polled: list[str]  # mailboxes for the STATUS poll on the worker's connection


def plan_sources(host: SourceHost, session: ImapSession) -> SourcePlan:
    """Choose the sources for the server behind `session`: IDLE per mailbox up to max_connections, the rest polled."""
    account = host.account
    watch = list(account.watch)
    if not session.has("IDLE"):
        log.info("account %s: the server does not offer IDLE: polling %s every %gs", account.name,
                 ", ".join(watch), account.poll_interval)
        return SourcePlan(False, [], watch)
    others = watch[1:]
    if others and session.has("NOTIFY") and account.max_connections >= 2:
        log.info("account %s: IDLE on %s, NOTIFY for %s (2 connections)", account.name, watch[0],
                 ", ".join(others))
        return SourcePlan(True, [NotifyWatch(host, others, home=watch[0])], [])
    slots = max(0, account.max_connections - 1)
    idle, polled = others[:slots], others[slots:]
    if polled:
        log.info("account %s: IDLE on %s (max_connections %d): polling %s every %gs", account.name,
                 ", ".join(watch[: 1 + len(idle)]), account.max_connections, ", ".join(polled),
                 account.poll_interval)
    return SourcePlan(True, [IdleWatch(host, mailbox) for mailbox in idle], polled)
