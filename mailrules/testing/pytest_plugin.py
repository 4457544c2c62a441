"""pytest plugin (entry point ``pytest11: mailrules``): fixtures for tests against Dovecot.

Fixtures:

- ``dovecot``: session-scoped ``DovecotServer`` (plain IMAP on 127.0.0.1, SPECIAL-USE).
- ``imap_user``: a fresh, empty account on it (a new one for every test; ~0.3 ms).
- ``imap``: an ``imapclient.IMAPClient`` logged in as ``imap_user``, logged out afterwards.
- ``make_message``: ``mailrules.testing.messages.make_message``.
- ``dovecot_factory``: ``dovecot_factory(tls=True, capabilities="IMAP4rev1 IDLE", port=1143, ...)``
  starts an extra server (same keywords as ``DovecotServer``), stopped at test teardown.
- ``run_rules``: ``run_rules(rules_yaml, [messages], plugins=[...]) -> RunResult``: a rules
  snippet run once against a fresh account; what happened (folders, flags, actions, log).
- ``rules_runner``: ``rules_runner(rules_yaml, ...) -> RulesRunner`` for several passes.

- ``cyrus``: session-scoped ``CyrusServer`` (mailrules.testing.cyrus): Debian's namespace,
  prefix ``INBOX.`` and separator ``.``; ``cyrus.folder("Lists/dev")`` is the server's name.
- ``cyrus_user``: a fresh account on it (a new one for every test; ~0.1 s).
- ``cyrus3``: session-scoped ``CyrusServer`` with Cyrus 3's own namespace (no prefix, ``/``).

When the ``dovecot`` binary is missing, tests using these fixtures are skipped, unless the
environment sets ``MAILRULES_REQUIRE_DOVECOT`` (CI does), in which case they fail.

Without Cyrus (or without root, which it needs) the Cyrus fixtures skip, unless
``MAILRULES_REQUIRE_CYRUS`` is set (CI does).

This module imports nothing heavy at import time, so it costs other projects nothing.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    import imapclient

    from mailrules.testing.cyrus import CyrusServer
    from mailrules.testing.dovecot import DovecotServer, User

REQUIRE_ENV = "MAILRULES_REQUIRE_DOVECOT"


def _require_dovecot() -> None:
    from mailrules.testing.dovecot import dovecot_available
    from mailrules.testing.require import missing

    if dovecot_available():
        return
    missing("dovecot is not installed (Debian: apt-get install dovecot-imapd)", REQUIRE_ENV)


@pytest.fixture(scope="session")
def dovecot() -> Iterator[DovecotServer]:
    """A Dovecot shared by the whole session; use ``imap_user`` for per-test isolation."""
    _require_dovecot()
    from mailrules.testing.dovecot import temporary_dovecot

    with temporary_dovecot() as server:
        yield server


@pytest.fixture
def imap_user(dovecot: DovecotServer) -> User:
    """A brand-new account with an empty mailbox."""
    return dovecot.add_user()


@pytest.fixture
def imap(dovecot: DovecotServer, imap_user: User) -> Iterator[imapclient.IMAPClient]:
    """An IMAPClient logged in as ``imap_user`` (no folder selected)."""
    client = dovecot.client(imap_user)
    try:
        yield client
    finally:
        try:
            client.logout()
        except Exception:
            with contextlib.suppress(Exception):
                client.shutdown()


@pytest.fixture
def make_message() -> Callable[..., bytes]:
    """The ``make_message(**kwargs) -> bytes`` factory (see mailrules.testing.messages)."""
    from mailrules.testing.messages import make_message as factory

    return factory


@pytest.fixture
def dovecot_factory() -> Iterator[Callable[..., DovecotServer]]:
    """Start extra Dovecot servers: ``dovecot_factory(**DovecotServer_kwargs)``.

    Each call returns a started server in its own directory; all are stopped at teardown.
    """
    _require_dovecot()
    from mailrules.testing.dovecot import temporary_dovecot

    with contextlib.ExitStack() as servers:

        def factory(**kwargs: Any) -> DovecotServer:
            return servers.enter_context(temporary_dovecot(**kwargs))

        yield factory


@pytest.fixture
def rules_runner(dovecot: DovecotServer, tmp_path: Path) -> Callable[..., Any]:
    """``rules_runner(rules, plugins=[...], ...) -> RulesRunner``: a fresh account with these rules.

    Deliver with ``runner.deliver([...])``, run passes with ``runner.run()`` (each returns a
    ``RunResult``); the state is kept between passes. See ``mailrules.testing.rules``.
    """
    from mailrules.testing.rules import RulesRunner

    count = iter(range(1, 1_000_000))

    def factory(rules: Any, **options: Any) -> RulesRunner:
        options.setdefault("directory", tmp_path / f"rules-{next(count)}")
        return RulesRunner(dovecot, rules, **options)

    return factory


@pytest.fixture
def run_rules(rules_runner: Callable[..., Any]) -> Callable[..., Any]:
    """``run_rules(rules, messages, dry_run=False, plugins=[...]) -> RunResult``.

    Writes the rules (YAML text of the ``rules:`` list, or a list of dicts) for a fresh
    Dovecot account, delivers ``messages`` (a list for INBOX, or ``{mailbox: [...]}``), runs
    the engine once (as ``mailrules run --once``) and returns what happened: every folder
    with its messages and flags, the actions applied, failures, the log. Installed plugins
    are loaded; ``plugins=[...]`` adds others. See ``mailrules.testing.rules``.
    """

    def run(rules: Any, messages: Any = (), *, dry_run: bool = False, **options: Any) -> Any:
        runner = rules_runner(rules, **options)
        by_mailbox = messages if isinstance(messages, dict) else {"INBOX": messages}
        for mailbox, items in by_mailbox.items():
            runner.deliver(items, mailbox)
        return runner.run(dry_run=dry_run)

    return run


@pytest.fixture(scope="session")
def cyrus() -> Iterator[CyrusServer]:
    """A Cyrus IMAP shared by the whole session (INBOX. prefix, '.' separator); see ``cyrus_user``."""
    from mailrules.testing.cyrus import cyrus_unusable_reason, temporary_cyrus
    from mailrules.testing.require import REQUIRE_CYRUS, missing

    reason = cyrus_unusable_reason()
    if reason is not None:
        missing(reason, REQUIRE_CYRUS)
    with temporary_cyrus() as server:
        yield server


@pytest.fixture(scope="session")
def cyrus3(cyrus: CyrusServer) -> Iterator[CyrusServer]:
    """A second Cyrus with Cyrus 3's own namespace settings (``Lists/dev``, no prefix, ``/``),
    started the first time a test asks for it (beside ``cyrus``, whose skip it shares)."""
    from mailrules.testing.cyrus import temporary_cyrus

    with temporary_cyrus(altnamespace=True, unixhierarchysep=True) as server:
        yield server


@pytest.fixture
def cyrus_user(cyrus: CyrusServer) -> User:
    """A brand-new Cyrus account with an empty INBOX (Cyrus cannot reset one quickly)."""
    return cyrus.add_user()
