"""The in-memory implementation of the pass kernel: messages with flags, keywords and folders.

`MemoryServer` holds accounts of folders of messages (`mailrules.local_search.LocalMessage`:
raw bytes, flags, keywords, arrival date) and numbers them with UIDs as a server would.
`MemoryMailbox` is the kernel's `Mailbox` over one folder: criteria are evaluated with
`mailrules.local_search.matches` (what Dovecot's UID SEARCH answers), `where:` predicates on
a `MessageView` of the message, and actions through the same `Action` objects as on IMAP,
by their `perform(context, uids, arg)` on a `MemoryContext` (the `mailrules.api.ActionContext`
protocol). So `run_rules` gives, without a server, the outcome a pass gives on Dovecot (the
property test tests/test_memory_equivalence.py compares the two); it is where offline rule
tests and `explain` build on.

Everything here is offline: an action is carried out only if it changes the mailbox alone
(`Action.effects == "mailbox"`, every built-in); any other action (a command, a web request,
anything outside) is never called, and `PassResult.would_run` lists it instead. Actions can
tell from `context.offline`.

What it does not model: the journal and crash resume (nothing to crash), raw search keys
(`NotEvaluableOffline`), plugin predicates' time limits.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .actions.base import resolve_account
from .api import Action
from .kernel import Position, run_pass
from .local_search import LocalMessage, matches
from .message import MessageView
from .model import ActionCall, Rule
from .plugins import Registry
from .uidset import UidSet

TRASH = "Trash"


@dataclass
class Folder:
    """One folder: UID -> message, and the next UID to give."""

    messages: dict[int, LocalMessage] = field(default_factory=dict)
    uidnext: int = 1
    uidvalidity: int = 1

    def add(self, message: LocalMessage) -> int:
        uid = self.uidnext
        self.messages[uid] = message
        self.uidnext += 1
        return uid


@dataclass
class MemoryServer:
    """Accounts (name -> folder path -> `Folder`); folders spring into being when first used."""

    accounts: dict[str, dict[str, Folder]] = field(default_factory=dict)
    trash: str = TRASH

    def folder(self, account: str, path: str) -> Folder:
        return self.accounts.setdefault(account, {}).setdefault(path, Folder())

    def deliver(self, account: str, path: str, message: LocalMessage) -> int:
        """Put `message` in the folder; returns its UID."""
        return self.folder(account, path).add(message)


@dataclass
class PassResult:
    """What a pass in memory did: matched counts per rule, failures, the dry-run text, and the
    actions with an outside effect that were not run (offline), per UID."""

    matched: dict[str, int] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    applied: int = 0
    described: list[str] = field(default_factory=list)
    would_run: dict[int, list[tuple[str, ActionCall]]] = field(default_factory=dict)  # uid -> [(rule, call)]


class MemoryMailbox:
    """The kernel's `Mailbox` over one folder of a `MemoryServer`."""

    def __init__(self, server: MemoryServer, account: str, path: str, registry: Registry, *,
                 dry_run: bool = False, now: dt.datetime | None = None) -> None:
        self.server = server
        self.account = account
        self.path = path
        self.registry = registry
        self.dry_run = dry_run
        self.now = now
        self.result = PassResult()

    @property
    def folder(self) -> Folder:
        return self.server.folder(self.account, self.path)

    # ------------------------------------------------------------------ the kernel's protocol

    def open(self, rules: Sequence[Rule], within: UidSet) -> None:
        pass  # nothing to read ahead: every message is at hand

    def between(self) -> None:
        pass  # nothing can interrupt a pass in memory

    def match(self, index: int, rule: Rule, searchable: UidSet) -> tuple[UidSet, set[int]]:
        found = []
        undecided: set[int] = set()
        messages = self.folder.messages
        for uid in searchable:
            message = messages.get(uid)
            if message is None or not matches(rule.match, message, now=self.now, location=rule.location):
                continue
            try:
                view = _view(uid, message)
                accepted = all(self.registry.predicates[p.name].test(view, p.args) for p in rule.where)
            except Exception as exc:  # noqa: BLE001 - as on IMAP: the message alone fails
                self.result.failed[uid] = f"predicate: {exc or type(exc).__name__}"
                undecided.add(uid)
                continue
            if accepted:
                found.append(uid)
        self.result.matched[rule.name] = len(found)
        return UidSet(found), undecided

    def present(self, index: int, rule: Rule, targets: UidSet) -> bool:
        if not self.dry_run:
            return True
        actions = ", ".join(f"{c.name} {self.registry.actions[c.name].describe(c.arg)}".strip()
                            for c in rule.actions)
        self.result.described.append(f"rule {rule.name!r}: {len(targets)} message(s) would get: {actions}")
        return False

    def apply(self, index: int, action_index: int, rule: Rule, call: ActionCall, targets: UidSet) -> set[int]:
        action: Action = self.registry.actions[call.name]
        present = UidSet(u for u in targets if u in self.folder.messages)
        if not action.runs_offline:
            return self._would_run(action, rule, call, present, targets)
        try:
            action.perform(MemoryContext(self, rule), present, call.arg)
        except Exception as exc:  # noqa: BLE001 - as on IMAP: the batch fails, retried later
            for uid in present:
                self.result.failed[uid] = str(exc) or type(exc).__name__
            return set(targets)
        self.result.applied += len(present)
        return set(targets) if action.terminal else set()


    def _would_run(self, action: Action, rule: Rule, call: ActionCall, present: UidSet, targets: UidSet) -> set[int]:
        """An action with an outside effect, offline: recorded, never called. A terminal one
        would take the messages away: they leave the in-memory mailbox as it would."""
        for uid in present:
            self.result.would_run.setdefault(uid, []).append((rule.name, call))
        if not action.terminal:
            return set()
        MemoryContext(self, rule).expunge(present)
        return set(targets)


def run_rules(server: MemoryServer, account: str, path: str, rules: Sequence[Rule], registry: Registry, *,
              candidates: dict[int, Position] | None = None, dry_run: bool = False,
              now: dt.datetime | None = None) -> PassResult:
    """One pass of `rules` over the folder (every message in it unless `candidates` says)."""
    box = MemoryMailbox(server, account, path, registry, dry_run=dry_run, now=now)
    if candidates is None:
        candidates = dict.fromkeys(box.folder.messages, (0, 0))
    run_pass(box, rules, candidates)
    return box.result


class MemoryContext:
    """The `mailrules.api.ActionContext` of a `MemoryMailbox` (plus `trash` and `expunge`, which
    the built-in trash and delete actions use)."""

    def __init__(self, box: MemoryMailbox, rule: Rule) -> None:
        self._box = box
        self.account = box.account
        self.mailbox = box.path
        self.rule = rule
        self.dry_run = box.dry_run
        self.offline = True  # always, in memory: only effects="mailbox" actions are ever called here
        self.uidvalidity = box.folder.uidvalidity
        self.trash = box.server.trash
        self.message_ids: dict[int, str] = {}

    def _messages(self, uids: Iterable[int]) -> Iterator[tuple[int, LocalMessage]]:
        messages = self._box.folder.messages
        for uid in sorted(set(uids)):
            if uid in messages:
                yield uid, messages[uid]

    def messages(self, uids: Iterable[int], needs: Iterable[str] = ("message",)) -> Iterator[MessageView]:
        """Every part is at hand: `needs` is not needed in memory."""
        for uid, message in self._messages(uids):
            yield _view(uid, message)

    def arrival_dates(self, uids: Iterable[int]) -> dict[int, dt.datetime]:
        return {uid: m.internaldate for uid, m in self._messages(uids)}

    def flags(self, uids: Iterable[int]) -> dict[int, frozenset[str]]:
        return {uid: m.flags for uid, m in self._messages(uids)}

    def keywords(self, uids: Iterable[int]) -> dict[int, frozenset[str]]:
        return {uid: m.keywords for uid, m in self._messages(uids)}

    def _change(self, uids: Iterable[int], **how: Any) -> None:
        folder = self._box.folder
        for uid, message in list(self._messages(uids)):
            folder.messages[uid] = dataclasses.replace(message, **{k: f(getattr(message, k)) for k, f in how.items()})

    def _checked(self, action: str, names: Iterable[str]) -> frozenset[str]:
        """The flags or keywords checked as a rules file's (as on IMAP): a bad one raises ValueError."""
        return frozenset(self._box.registry.actions[action].validate(list(names)))

    def set_flags(self, uids: Iterable[int], flags: Iterable[str]) -> None:
        add = self._checked("add_flag", flags)
        self._change(uids, flags=lambda old: old | add)

    def clear_flags(self, uids: Iterable[int], flags: Iterable[str]) -> None:
        drop = self._checked("remove_flag", flags)
        self._change(uids, flags=lambda old: old - drop)

    def set_keywords(self, uids: Iterable[int], keywords: Iterable[str]) -> None:
        add = self._checked("add_keyword", keywords)
        # keywords are compared without regard to case: one already there keeps its spelling
        self._change(uids, keywords=lambda old: old | {k for k in add if k.lower() not in {o.lower() for o in old}})

    def clear_keywords(self, uids: Iterable[int], keywords: Iterable[str]) -> None:
        drop = {k.lower() for k in self._checked("remove_keyword", keywords)}
        self._change(uids, keywords=lambda old: frozenset(k for k in old if k.lower() not in drop))

    def copy(self, uids: Iterable[int], folder: str) -> None:
        account, path = self._where(folder)
        for _uid, message in list(self._messages(uids)):
            if account != self.account:  # APPEND to another account: \Deleted is not carried over
                message = dataclasses.replace(message, flags=message.flags - {"\\Deleted"})
            self._box.server.deliver(account, path, message)

    def move(self, uids: Iterable[int], folder: str) -> None:
        account, path = self._where(folder)
        if (account, path) == (self.account, self.mailbox):
            return  # moving into itself: nothing to do
        self.copy(uids, folder)
        self.expunge(uids)

    def expunge(self, uids: Iterable[int]) -> None:
        for uid in list(uids):
            self._box.folder.messages.pop(uid, None)

    def _where(self, folder: str) -> tuple[str, str]:
        ref = resolve_account(self._box.registry.actions["copy"].validate(folder),
                              self._box.server.accounts.keys())
        return ref.account or self.account, ref.path


def _view(uid: int, message: LocalMessage) -> MessageView:
    return MessageView(uid, raw=message.raw, size=message.rfc822_size,
                       flags=tuple(sorted(message.flags | message.keywords)), arrived=message.internaldate)
