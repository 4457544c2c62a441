"""The in-memory implementation of the pass kernel: messages with flags, keywords and folders.

`MemoryServer` holds accounts of folders of messages (`mailrules.local_search.LocalMessage`:
raw bytes, flags, keywords, arrival date) and numbers them with UIDs as a server would.
`MemoryMailbox` is the kernel's `Mailbox` over one folder: criteria are evaluated with
`mailrules.local_search.matches` (what Dovecot's UID SEARCH answers), `where:` predicates on
a `MessageView` of the message, and actions through the same `Action` objects as on IMAP,
by their `perform(context, uids, arg)` on a `MemoryContext` (the `mailrules.api.ActionContext`
protocol). A built-in action's `perform` is its one body, `execute`, run on a `MemoryStore`
(the `mailrules.mailstore.MailStore` over one account of the server; other accounts are
reached as on IMAP, so cross-account copies and moves run their APPEND-verify-expunge body
here too); a plugin's is its `run`. So `run_rules` gives, without a server, the outcome a
pass gives on Dovecot (tests/test_memory_equivalence.py and tests/test_one_body.py compare
the two); it is where offline rule tests and `explain` build on.

A dry run (`dry_run=True`) works on a scratch copy of the server: each built-in action is
carried out there (`MemoryMailbox.simulate`), so later rules see what the real run leaves, and
the server itself is left as it was.

Everything here is offline: an action is carried out only if it changes the mailbox alone
(`Action.effects == "mailbox"`, every built-in); any other action (a command, a web request,
anything outside) is never called, and `PassResult.would_run` lists it instead. Actions can
tell from `context.offline`.

What it does not model: the journal and crash resume (nothing to crash: the actions' resume
paths never run here), raw search keys (`NotEvaluableOffline`), plugin predicates' time
limits, a mailbox's keyword spelling (Dovecot keeps the first spelling a mailbox saw; here
each message keeps its own), servers without MOVE or UIDPLUS.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from .actions.base import ActionRun, StoreContext
from .api import Action
from .criteria import FLAG_KEYS, SearchQuery
from .imap.later import Ready
from .imap.session import Selected, ServerRefused, Transfer
from .kernel import Position, run_pass
from .local_search import LocalMessage, NotEvaluableOffline, matches
from .message import MessageView
from .model import ActionCall, Flag, Keyword, Location, Raw, Rule
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


class MemoryStore:
    """One account of a `MemoryServer` as a `mailrules.mailstore.MailStore`: what the built-in
    actions run on in memory, with the semantics of Dovecot's answers (MOVE and UIDPLUS, COPYUID
    and APPENDUID, TRYCREATE for a missing folder, UID EXPUNGE of messages marked \\Deleted only).

    SEARCH evaluates the keys the actions send (ALL, UID n:*, system flags, KEYWORD) with
    `mailrules.local_search`; any other key is not evaluable offline.
    """

    capabilities = frozenset({"MOVE", "UIDPLUS", "IMAP4REV1"})

    def __init__(self, server: MemoryServer, account: str) -> None:
        self.server = server
        self.account = account
        self.selected: Selected | None = None

    def has(self, capability: str) -> bool:
        return capability.upper() in self.capabilities

    # ------------------------------------------------------------------ folders

    def _folders(self) -> dict[str, Folder]:
        return self.server.accounts.setdefault(self.account, {})

    def _folder(self, server_name: str, command: str) -> Folder:
        folder = self._folders().get(server_name)
        if folder is None:
            raise ServerRefused(command, f"[TRYCREATE] Mailbox doesn't exist: {server_name}")
        return folder

    def server_name(self, path: str) -> str:
        return "INBOX" if path.upper() == "INBOX" else path

    def folder_exists(self, server_name: str) -> bool:
        return server_name in self._folders()

    def create_folder(self, server_name: str) -> None:
        self.server.folder(self.account, server_name)

    def known_missing(self, server_name: str) -> bool:
        return not self.folder_exists(server_name)

    def uidnext_floor(self, server_name: str) -> int | None:
        folder = self._folders().get(server_name)
        return folder.uidnext if folder is not None else None

    def status_uidnext(self, server_name: str) -> int:
        return self._folder(server_name, "STATUS").uidnext

    def find_trash(self) -> str | None:
        return self.server.trash

    def select(self, server_name: str, *, readonly: bool = False) -> Selected:
        folder = self._folder(server_name, "SELECT")
        self.selected = Selected(server_name, folder.uidvalidity, folder.uidnext, len(folder.messages),
                                 (*FLAG_KEYS, "\\*"), readonly)
        return self.selected

    # ------------------------------------------------------------------ the selected mailbox

    @property
    def _box(self) -> Folder:
        if self.selected is None:
            raise ServerRefused("UID", "no mailbox selected")
        return self._folder(self.selected.name, "SELECT")

    def search(self, query: SearchQuery, within: UidSet | None = None) -> UidSet:
        keys = _search_keys(query)
        messages = self._box.messages
        uids = sorted(messages) if within is None else [u for u in within if u in messages]
        return UidSet(u for u in uids if all(key(u, messages[u]) for key in keys))

    def existing(self, uids: UidSet) -> UidSet:
        messages = self._box.messages
        return UidSet(u for u in uids if u in messages)

    def fetch(self, uids: UidSet, items: list[str], batch: int = 0) -> Iterator[tuple[int, dict]]:
        wanted = {_FETCHED.get(item.upper()) for item in items}
        if None in wanted:
            raise ServerRefused("FETCH", f"not offered in memory: {', '.join(items)}")
        messages = self._box.messages
        for uid in uids:
            message = messages.get(uid)
            if message is not None:
                yield uid, {key: _fetched(key, message) for key in wanted}

    def store(self, uids: UidSet, flags: Iterable[str], *, add: bool) -> None:
        names = list(flags)
        messages = self._box.messages
        for uid in uids:
            if uid in messages:
                messages[uid] = _with_flags(messages[uid], names, add)

    def copy(self, uids: UidSet, server_name: str, *, create: bool = False) -> Transfer:
        return self._transfer("COPY", uids, server_name, create)

    def move(self, uids: UidSet, server_name: str, *, create: bool = False) -> Transfer:
        return self._transfer("MOVE", uids, server_name, create)

    def move_later(self, uids: UidSet, server_name: str, *, create: bool = False) -> Ready:
        return Ready(lambda: self.move(uids, server_name, create=create))

    def _transfer(self, command: str, uids: UidSet, server_name: str, create: bool) -> Transfer:
        if create:
            self.create_folder(server_name)
        dest = self._folder(server_name, command)
        messages = self._box.messages
        moving = [u for u in uids if u in messages]
        mapping = {uid: dest.add(messages[uid]) for uid in moving}
        flags = {uid: messages[uid].flags | messages[uid].keywords for uid in moving}
        if command == "MOVE":
            for uid in moving:
                del messages[uid]
        return Transfer(dest.uidvalidity, mapping, flags)

    def uid_expunge(self, uids: UidSet) -> None:
        messages = self._box.messages
        for uid in uids:
            if uid in messages and "\\Deleted" in messages[uid].flags:
                del messages[uid]

    def append(self, server_name: str, message: bytes, flags: Iterable[str],
               internaldate: dt.datetime | None) -> tuple[int, int] | None:
        dest = self._folder(server_name, "APPEND")
        stored = _with_flags(LocalMessage(message, internaldate=internaldate or dt.datetime.now(dt.UTC)),
                             [f for f in flags if f.lower() != "\\recent"], True)
        return dest.uidvalidity, dest.add(stored)


def _with_flags(message: LocalMessage, names: Iterable[str], add: bool) -> LocalMessage:
    """The message with system flags and keywords added or removed (keywords, as IMAP compares
    them, without regard to case: one already there keeps its spelling)."""
    flags, keywords = set(message.flags), set(message.keywords)
    for name in names:
        if name.startswith("\\"):
            flag = next((f for f in FLAG_KEYS if f.lower() == name.lower()), name)
            (flags.add if add else flags.discard)(flag)
            continue
        same = {k for k in keywords if k.lower() == name.lower()}
        if add and not same:
            keywords.add(name)
        elif not add:
            keywords -= same
    return dataclasses.replace(message, flags=frozenset(flags), keywords=frozenset(keywords))


_FETCHED = {"BODY.PEEK[]": b"BODY[]", "BODY[]": b"BODY[]", "FLAGS": b"FLAGS", "INTERNALDATE": b"INTERNALDATE",
            "RFC822.SIZE": b"RFC822.SIZE"}


def _fetched(key: bytes, message: LocalMessage) -> Any:
    if key == b"BODY[]":
        return message.raw
    if key == b"FLAGS":
        return tuple(sorted(message.flags | message.keywords))
    if key == b"INTERNALDATE":
        return message.internaldate
    return message.rfc822_size


def _search_keys(query: SearchQuery) -> list[Callable[[int, LocalMessage], bool]]:
    """The keys of a UID SEARCH the actions send, as tests of (uid, message)."""
    tokens = list(query.tokens)
    keys: list[Callable[[int, LocalMessage], bool]] = []
    flag_keys = {key: Flag(flag, present) for flag, pair in FLAG_KEYS.items()
                 for key, present in zip(pair, (True, False), strict=True)}
    while tokens:
        token = bytes(tokens.pop(0)).upper()
        if token == b"ALL":
            continue
        if token in flag_keys or token in (b"KEYWORD", b"UNKEYWORD"):
            node = flag_keys.get(token) or Keyword(bytes(tokens.pop(0)).decode(), token == b"KEYWORD")
            keys.append(lambda _uid, message, node=node: matches(node, message))
        elif token == b"UID":
            keys.append(_uid_test(bytes(tokens.pop(0)).decode()))
        else:
            raise NotEvaluableOffline(Raw(str(query)), Location("<mail store>"))
    return keys


def _uid_test(text: str) -> Callable[[int, LocalMessage], bool]:
    """A UID set as SEARCH takes it ('5:*', '1:3,7')."""
    ranges = []
    for part in text.split(","):
        low, _, high = part.partition(":")
        ranges.append((int(low), (1 << 32) if high == "*" else int(high or low)))
    return lambda uid, _message: any(min(a, b) <= uid <= max(a, b) for a, b in ranges)


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
        # a dry run acts on a scratch copy (`simulate`): the later rules see the messages as the
        # real run would leave them, the server is left as it is
        self.server = _scratch(server) if dry_run else server
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

    def close(self, abandoned: bool = False) -> None:
        pass  # every action's outcome is known at once

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
            # a built-in action runs its one body (`execute`) on the `MemoryStore` behind the
            # context; a plugin's action, its `run(context, uids, arg)`
            action.perform(MemoryContext(self.action_run(rule), self.folder), present, call.arg)
        except Exception as exc:  # noqa: BLE001 - as on IMAP: the batch fails, retried later
            for uid in present:
                self.result.failed[uid] = str(exc) or type(exc).__name__
            return set(targets)
        self.result.applied += len(present)
        return set(targets) if action.terminal else set()

    def simulate(self, index: int, action_index: int, rule: Rule, call: ActionCall, targets: UidSet) -> set[int]:
        """A dry run: a built-in action is carried out on the scratch copy of the server (its one
        body, as `apply`); a plugin's is never called in a dry run: the flags it says it sets
        (`Action.flag_changes`) are set, and a terminal one takes the messages away."""
        action: Action = self.registry.actions[call.name]
        present = UidSet(u for u in targets if u in self.folder.messages)
        try:
            if action.builtin and action.runs_offline:
                action.perform(MemoryContext(self.action_run(rule), self.folder), present, call.arg)
            else:
                added, removed = action.flag_changes(call.arg)
                store = MemoryStore(self.server, self.account)
                store.select(self.path)
                for names, add in ((added, True), (removed, False)):
                    if names:
                        store.store(present, names, add=add)
        except Exception:  # noqa: BLE001 - as `apply`: the real run would fail the batch, retried later
            return set(targets)
        if action.terminal:
            for uid in present:
                self.folder.messages.pop(uid, None)
            return set(targets)
        return set()

    def action_run(self, rule: Rule) -> ActionRun:
        """What an action runs with, as on IMAP: the folder selected in a `MemoryStore` of the
        account, and a store of any other account of the server (cross-account copies)."""
        self.folder  # noqa: B018 - the folder springs into being, as MemoryServer's do
        stores = {self.account: MemoryStore(self.server, self.account)}
        selected = stores[self.account].select(self.path)

        def connect(account: str) -> MemoryStore:
            return stores.setdefault(account, MemoryStore(self.server, account))

        return ActionRun(stores[self.account], self.account, self.path, selected, rule, {}, self.registry,
                         connect=connect, dry_run=self.dry_run, accounts=tuple(self.server.accounts))

    def _would_run(self, action: Action, rule: Rule, call: ActionCall, present: UidSet, targets: UidSet) -> set[int]:
        """An action with an outside effect, offline: recorded, never called. A terminal one
        would take the messages away: they leave the in-memory mailbox as it would."""
        for uid in present:
            self.result.would_run.setdefault(uid, []).append((rule.name, call))
        if not action.terminal:
            return set()
        for uid in present:
            self.folder.messages.pop(uid, None)
        return set(targets)


def _scratch(server: MemoryServer) -> MemoryServer:
    """A copy of the server that a dry run may change (messages are immutable: shared)."""
    accounts = {name: {path: dataclasses.replace(folder, messages=dict(folder.messages))
                       for path, folder in folders.items()}
                for name, folders in server.accounts.items()}
    return MemoryServer(accounts, server.trash)


def run_rules(server: MemoryServer, account: str, path: str, rules: Sequence[Rule], registry: Registry, *,
              candidates: dict[int, Position] | None = None, dry_run: bool = False,
              now: dt.datetime | None = None) -> PassResult:
    """One pass of `rules` over the folder (every message in it unless `candidates` says)."""
    box = MemoryMailbox(server, account, path, registry, dry_run=dry_run, now=now)
    if candidates is None:
        candidates = dict.fromkeys(box.folder.messages, (0, 0))
    run_pass(box, rules, candidates)
    return box.result


class MemoryContext(StoreContext):
    """The `mailrules.api.ActionContext` of a `MemoryMailbox`: the same context as on IMAP
    (setting flags, copying, moving run the built-in actions' one body, on a `MemoryStore`),
    reading the messages directly from memory, and offline."""

    def __init__(self, run: ActionRun, folder: Folder) -> None:
        super().__init__(run)
        self.offline = True  # always, in memory: only effects="mailbox" actions are ever called here
        self._folder = folder

    def _messages(self, uids: Iterable[int]) -> Iterator[tuple[int, LocalMessage]]:
        messages = self._folder.messages
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


def _view(uid: int, message: LocalMessage) -> MessageView:
    return MessageView(uid, raw=message.raw, size=message.rfc822_size,
                       flags=tuple(sorted(message.flags | message.keywords)), arrived=message.internaldate)
