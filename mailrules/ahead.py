"""What an IMAP pass (`mailrules.imap_mailbox.ImapPass`) sends before its turn.

On a slow link every wait for the server is a round trip. Two kinds of command need not be
waited for at their turn (`mailrules.imap.later` reads their answers with the next command's):

* a terminal action's MOVE (its messages leave play whether it succeeds or fails): the pass
  keeps its `jobs` and journals each when its answer has been read, before the pass ends;
* the UID SEARCHes the steps up to the next one the pass waits for begin with (the actions'
  searches of the messages they change, the rules' searches, past the MOVEs not waited for,
  and the search of the rule after), sent in the round trip of the step before: an action of
  ours changes their answer only by a STORE of a flag they read, and only for the messages
  it stores, so the session keeps that answer for the others alone (`InFlight.stored`): a
  step asking about one it stored searches at its turn as it would have.

Only the session's answers sent ahead are ever used, for a subset of the UIDs they covered:
`in_play` is a superset of the kernel's messages in play.

In `run --once`, over a large backlog, the searches no action can change the answer of (header
fields, sizes, dates) go further: on a second connection (`beside`, `mailrules.imap.beside`),
handed over as the pass opens, each over the messages that may still be in play at its turn.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Collection, Sequence
from dataclasses import dataclass, field
from typing import Any

from .criteria import compile_search, reads_of
from .imap.beside import Beside, worth_it
from .model import Rule
from .uidset import UidSet

DEPTH = 4  # rules looked ahead past the actions the pass does not wait for
BESIDE_SHARE = 0.5  # of the opening's header fetch, what the second connection reads


@dataclass
class Ahead:
    """The rules (to know the next step), the UIDs that may still be in play, and the actions
    whose answer is read later."""

    rules: Sequence[Rule] = ()
    in_play: set[int] = field(default_factory=set)
    jobs: list[Any] = field(default_factory=list)
    beside: Beside | None = None  # the searches sent on a connection of their own (`mailrules.imap.beside`)

    def next_step(self, box: Any, i: int, a: int, targets: UidSet, builtin: bool) -> None:
        """Before action `a` of rule `i`, which the pass waits for: send the searches of the steps
        up to the next one it will wait for (box: the `ImapPass`). Those are the rest of this rule's
        actions, then the next rules' searches and their actions', past the actions not waited
        for (a terminal MOVE, read with the next command's answer), at most `DEPTH` rules on; and
        the search of the rule after the one that waits. Those of a later rule cover every
        message that may still be in play, a superset of what its turn asks about."""
        if not builtin:
            box.session.later.forget()  # a plugin's action may change flags unseen
            return
        if self._actions_ahead(box, i, a + 1, targets):
            return
        for j in range(i + 1, min(i + 1 + DEPTH, len(self.rules))):
            if not self.match_ahead(box, j):
                return
            within = UidSet(self.in_play)
            matched = box.searched.get(j)
            if self._actions_ahead(box, j, 0, matched & within if matched is not None else within):
                self.match_ahead(box, j + 1)
                return

    def open_beside(self, box: Any, within: UidSet, skip: Collection[int], local: Collection[int],
                    fetching: bool) -> list[int]:
        """Start opening a second connection (`mailrules.imap.beside`) if the pass has work for
        it (a share of the header fetch, if `fetching`, or searches), and return the rules whose
        search goes there: those no action can change the answer of (not `mutable`), without
        `where:`, not decided on the fetched header fields (`local`). Only in `run --once`
        (`PassSettings.beside`), over a backlog `worth_it` in a fresh pass (none
        resumed, not shared, not a dry run) on a server with ESEARCH."""
        if skip or box.steps or not worth_it(len(within)) or not may_send_ahead(box) \
                or not box.session.has("ESEARCH"):
            return []
        indices = [i for i, rule in enumerate(self.rules)
                   if not rule.where and not reads_of(rule.match).mutable and i not in local]
        opener = box.s.beside(box.account) if indices or fetching else None
        if opener is None:
            return []
        self.beside = opener(box.server, box.sel.uidvalidity)
        return indices

    def share_fetch(self, within: UidSet, fields: Collection[str], batch: int,
                    sink: Callable[[int, bytes], None] | None) -> tuple[UidSet, Callable[[int, bytes], None] | None]:
        """Hand the last `BESIDE_SHARE` of the opening's header fetch to the second connection, if
        there is one: the server reads those messages in another process while the pass's
        connection reads the rest. Returns what the pass's connection fetches, and the sink to
        give it (the same for both: locked, since the second connection's thread calls it too)."""
        if self.beside is None:
            return within, sink
        mine, theirs = within.split(len(within) - int(len(within) * BESIDE_SHARE))
        if sink is not None:
            lock = threading.Lock()
            unlocked = sink

            def sink(uid: int, block: bytes) -> None:
                with lock:
                    unlocked(uid, block)

        self.beside.fetch_headers(theirs, fields, batch, sink)
        return mine, sink

    def search_beside(self, box: Any, within: UidSet, indices: Collection[int]) -> None:
        """Hand the searches of `indices` over to the second connection, each over the messages
        that may still be in play at its turn: `within` less those an earlier rule answered in
        the opening (`box.searched`) takes out of play (a terminal action, `stop`). A rule whose
        turn finds more in play searches on the pass's connection (`Beside.answer`)."""
        assert self.beside is not None
        actions = box.s.registry.actions
        gone = UidSet()
        searches = {}
        for i, rule in enumerate(self.rules):
            if i in indices:
                searches[i] = (compile_search(rule.match, box.session.capabilities), within - gone)
            leaves = rule.stop or any(getattr(actions.get(call.name), "terminal", False) for call in rule.actions)
            if leaves and not rule.where and i in box.searched:
                gone = gone | box.searched[i]
        self.beside.search(searches)

    def _actions_ahead(self, box: Any, i: int, first: int, within: UidSet) -> bool:
        """Send the searches of rule `i`'s actions from `first` on, up to the first one the pass
        will wait for; whether one was found (a plugin's action ends the look ahead as well)."""
        registry = box.s.registry.actions
        for a in range(first, len(self.rules[i].actions)):
            action = registry[self.rules[i].actions[a].name]
            if getattr(action, "start", None) is None:
                return True  # a plugin's: it may change flags unseen, nothing is sent past it
            self.action_searches(box, i, a, within)
            if not action.terminal:
                return True
        return False

    def match_ahead(self, box: Any, i: int) -> bool:
        """Send rule `i`'s search ahead unless the pass has its answer already; whether rule `i`
        takes its turn as planned (it exists, is not resumed, has no client-side predicates)."""
        rules = self.rules
        if i >= len(rules) or (i, -1) in box.steps or rules[i].where:
            return False
        if i not in box.searched and not (self.beside is not None and self.beside.has(i)) and may_send_ahead(box):
            try:
                query = compile_search(rules[i].match, box.session.capabilities)
            except ValueError:
                return False  # reported at its turn, as before: sending ahead never fails an action
            box.session.later.ahead(query, UidSet(self.in_play))
        return True

    def action_searches(self, box: Any, i: int, a: int, within: UidSet) -> None:
        """Send ahead the searches action `a` of rule `i` begins with (`BuiltinAction.searches`)."""
        if not may_send_ahead(box) or a >= len(self.rules[i].actions):
            return
        call = self.rules[i].actions[a]
        for query in getattr(box.s.registry.actions[call.name], "searches", lambda arg: [])(call.arg):
            box.session.later.ahead(query, within)


def may_send_ahead(box: Any) -> bool:
    """Not in a dry run (its searches see an overlay), nor shared (claims STORE between steps)."""
    return not box.s.dry_run and box.hooks.guard is None and box.hooks.sweep_claim is None


__all__ = ["Ahead", "may_send_ahead"]
