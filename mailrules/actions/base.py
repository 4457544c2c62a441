"""What every action runs with: the engine's side (`ActionRun`), the public context
(`StoreContext`, the `mailrules.api.ActionContext` protocol), results and failures.

The built-in actions (one module per family in this package) and plugin actions are the
same kind of object, `mailrules.api.Action`; the engine calls ``action.execute(run, arg,
uids, intent, resuming)`` for each, and a plugin's action runs its ``run(context, uids,
arg)`` with `ActionRun.context()`. `ActionFailed` and `ActionResult` live in
`mailrules.api` (re-exported here).

A built-in action (`BuiltinAction`) has one body, `execute`, written against
``run.session``, a `mailrules.mailstore.MailStore`: an `ImapSession` on the server, a
`mailrules.memory.MemoryStore` offline. Its `perform(context, ...)` (how the in-memory
mailbox and a plugin's ``context.copy(...)`` reach it) is no second body: it runs `execute`
on the run behind the context.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Callable, Collection, Iterable, Iterator
from dataclasses import dataclass, field
from typing import Any

from ..api import Action, ActionFailed, ActionResult, check_needs
from ..fetching import fetch_items, view_of
from ..imap.session import Selected, ServerRefused
from ..mailstore import MailStore
from ..message import MessageView
from ..model import FolderRef, Rule
from ..state import StateStore
from ..uidset import UidSet

log = logging.getLogger("mailrules.actions")


@dataclass
class ActionRun:
    """What an action needs to run, on the engine's side (journal, state, connections).

    `session` is the `MailStore` of the account, the mailbox selected: an `ImapSession` on
    the server, a `mailrules.memory.MemoryStore` offline (then `connect` gives the stores of
    the other accounts, and there is no journal). Plugin actions never see it: they receive
    `context()`, the narrow public protocol.
    """

    session: MailStore
    account: str
    mailbox: str  # server name of the mailbox being processed
    selected: Selected
    rule: Rule
    message_ids: dict[int, str]
    registry: Any  # the `mailrules.plugins.Registry` (its actions by name)
    connect: Callable[[str], MailStore] | None = None  # session of another account
    watched: Callable[[str, str], bool] = lambda account, server_name: False
    store: StateStore | None = None
    dry_run: bool = False
    warned: set[str] = field(default_factory=set)
    # Rewrites the journal's intent detail of the action in progress (None: no journal).
    journal: Callable[[dict], None] | None = None
    accounts: Collection[str] = ()  # the configured accounts (for 'account:Folder' in `ImapContext`)

    def context(self) -> StoreContext:
        return StoreContext(self)

    def destination(self, ref: FolderRef) -> tuple[MailStore, str]:
        """The session and the server's name of a copy/move destination."""
        session = self.session
        if ref.account and ref.account != self.account:
            if self.connect is None:
                raise ActionFailed(f"cannot reach account {ref.account}")
            try:
                session = self.connect(ref.account)
            except Exception as exc:  # noqa: BLE001 - any connection failure: retried later
                raise ActionFailed(f"destination account {ref.account} unreachable: {exc}") from exc
        return session, session.server_name(ref.path)

    def uidnext_creating(self, session: MailStore, dest: str) -> int:
        """The destination's UIDNEXT (a lower bound will do), creating the folder if it is missing."""
        floor = session.uidnext_floor(dest)
        if floor is not None:
            return floor  # from this pass's folder listing: a lower bound is all the journal needs
        if session.known_missing(dest):
            return 1  # the copy creates it
        try:
            return session.status_uidnext(dest)
        except Exception:  # noqa: BLE001 - most likely a missing folder
            session.create_folder(dest)
            return session.status_uidnext(dest)

    def with_trycreate(self, session: MailStore, dest: str, command: Callable[[bool], Any]) -> Any:
        """Run command(create); create=True when the folder is known to be missing (the command
        then creates it in the same round trip). A TRYCREATE refusal creates it and retries once."""
        try:
            return command(session.known_missing(dest))
        except ServerRefused as exc:
            return self.after_refusal(session, dest, exc, command)

    def after_refusal(self, session: MailStore, dest: str, exc: ServerRefused, command: Callable[[bool], Any]) -> Any:
        """`command` was refused (`exc`): with TRYCREATE, or if the folder is missing, create it
        and run command(False) once more; otherwise, or refused again, ActionFailed."""
        if not exc.trycreate and session.folder_exists(dest):
            raise ActionFailed(str(exc)) from None
        session.create_folder(dest)
        try:
            return command(False)
        except ServerRefused as exc2:
            raise ActionFailed(str(exc2)) from None

    def mark_deleted_and_expunge(self, uids: UidSet) -> None:
        """STORE \\Deleted, then UID EXPUNGE exactly these UIDs (never a bare EXPUNGE)."""
        session = self.session
        session.store(uids, ["\\Deleted"], add=True)
        if session.has("UIDPLUS"):
            session.uid_expunge(uids)
        elif "no-uidplus" not in self.warned:
            self.warned.add("no-uidplus")
            log.warning(
                "account %s mailbox %s: the server lacks UIDPLUS, so mailrules never expunges: "
                "moved/deleted messages stay marked \\Deleted until your mail client expunges them",
                self.account,
                self.mailbox,
            )

    def record_placed(self, account: str, dest: str, uidvalidity: int | None, dest_uids: Iterable[int]) -> None:
        """Note messages mailrules put in a watched mailbox, so that they are not processed there."""
        if self.store is None or uidvalidity is None or not self.watched(account, dest):
            return
        self.store.add_placed(account, dest, uidvalidity, list(dest_uids))


@dataclass(frozen=True)
class BuiltinAction(Action):
    """A built-in action: one body, `execute(run, ...)`, on whichever `MailStore` the run has."""

    builtin: bool = True
    effects: str = "mailbox"  # it changes the mailbox only: carried out offline, in memory

    def has_executor(self) -> bool:
        return True

    def searches(self, arg: Any) -> list[Any]:
        """The UID SEARCHes (`mailrules.criteria.SearchQuery`) `execute` begins with, over its
        targets, whose answers no earlier action of the pass changes but by a STORE of ours: the
        pass may send them ahead, in the round trip of the step before (`mailrules.imap.later`)."""
        return []

    def start(self, run: ActionRun, arg: Any, uids: UidSet, intent: Any, resuming: bool) -> Callable[[], ActionResult]:
        """`execute`, whose outcome may be read later: returns what gives the `ActionResult` (or
        raises as `execute` does). A move sends its command and lets the pass go on before the
        answer is read (`mailrules.imap.later`); the others run now."""
        result = self.execute(run, arg, uids, intent, resuming)
        return lambda: result

    def perform(self, context: Any, uids: UidSet, arg: Any) -> None:
        """The generic adapter (not a second body): `execute` on the run behind `context`."""
        if not isinstance(context, StoreContext):
            raise ActionFailed(f"action {self.name!r} runs on a mail store's context only")
        run = context._run
        self.execute(run, arg, uids, self.intent(run, arg, uids), False)


class StoreContext:
    """The `mailrules.api.ActionContext` over an `ActionRun`: what a plugin action receives on
    IMAP (`mailrules.memory.MemoryContext` is the in-memory one). Setting flags, copying and
    moving run the built-in actions, so a plugin's `context.move(...)` does what `move` does."""

    def __init__(self, run: ActionRun) -> None:
        self._run = run
        self.account = run.account
        self.mailbox = run.mailbox
        self.rule = run.rule
        self.dry_run = run.dry_run
        self.offline = False  # the real mailbox: every action runs
        self.uidvalidity = run.selected.uidvalidity
        self.message_ids = run.message_ids

    @property
    def session(self) -> MailStore:
        """The connection, mailbox selected (not part of the documented protocol: IMAP only)."""
        return self._run.session

    def fetch(self, uids: UidSet, items: list[str]) -> Iterator[tuple[int, dict]]:
        """UID FETCH (not part of the documented protocol: IMAP only): yields (uid, data)."""
        return self._run.session.fetch(uids, items)

    def messages(self, uids: Iterable[int], needs: Iterable[str] = ("message",)) -> Iterator[MessageView]:
        items, batch = fetch_items(check_needs(needs, "messages()"))
        for uid, data in self._run.session.fetch(UidSet(uids), items, batch=batch):
            yield view_of(uid, data)

    def arrival_dates(self, uids: Iterable[int]) -> dict[int, dt.datetime]:
        return {m.uid: m.arrived for m in self._parts(uids, "INTERNALDATE") if m.arrived is not None}

    def flags(self, uids: Iterable[int]) -> dict[int, frozenset[str]]:
        return {m.uid: frozenset(f for f in m.flags if f.startswith("\\")) for m in self._parts(uids, "FLAGS")}

    def keywords(self, uids: Iterable[int]) -> dict[int, frozenset[str]]:
        return {m.uid: frozenset(m.keywords) for m in self._parts(uids, "FLAGS")}

    def _parts(self, uids: Iterable[int], item: str) -> Iterator[MessageView]:
        for uid, data in self._run.session.fetch(UidSet(uids), [item]):
            yield view_of(uid, data)

    def set_flags(self, uids: Iterable[int], flags: Iterable[str]) -> None:
        self._apply("add_flag", uids, list(flags))

    def clear_flags(self, uids: Iterable[int], flags: Iterable[str]) -> None:
        self._apply("remove_flag", uids, list(flags))

    def set_keywords(self, uids: Iterable[int], keywords: Iterable[str]) -> None:
        self._apply("add_keyword", uids, list(keywords))

    def clear_keywords(self, uids: Iterable[int], keywords: Iterable[str]) -> None:
        self._apply("remove_keyword", uids, list(keywords))

    def copy(self, uids: Iterable[int], folder: str) -> None:
        self._apply("copy", uids, folder)

    def move(self, uids: Iterable[int], folder: str) -> None:
        self._apply("move", uids, folder)

    def _apply(self, name: str, uids: Iterable[int], raw: Any) -> None:
        """Run the built-in action `name` (validating `raw` as a rules file's argument would be)."""
        action: Action = self._run.registry.actions[name]
        arg = action.validate(raw)
        if isinstance(arg, FolderRef):
            arg = resolve_account(arg, self._run.accounts)
        uids = UidSet(uids)
        action.execute(self._run, arg, uids, action.intent(self._run, arg, uids), False)


def resolve_account(ref: FolderRef, accounts: Collection[str]) -> FolderRef:
    """'account:Folder' names a folder of another configured account (as in the rules file)."""
    head, sep, rest = ref.path.partition(":")
    if sep and head in accounts and rest:
        return FolderRef(path=rest, account=head)
    return ref


ImapContext = StoreContext  # its name in earlier versions

__all__ = ["ActionFailed", "ActionResult", "ActionRun", "BuiltinAction", "ImapContext", "StoreContext",
           "resolve_account"]
