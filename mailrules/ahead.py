"""What an IMAP pass (`mailrules.imap_mailbox.ImapPass`) sends before its turn.

On a slow link every wait for the server is a round trip. Two kinds of command need not be
waited for at their turn (`mailrules.imap.later` reads their answers with the next command's):

* a terminal action's MOVE (its messages leave play whether it succeeds or fails): the pass
  keeps its `jobs` and journals each when its answer has been read, before the pass ends;
* the UID SEARCHes the next step begins with (the next rule's search at its turn, the next
  action's search of the messages it changes), sent in the round trip of the step before: an
  action of ours changes their answer only by a STORE of a flag they read, and then the session
  forgets that answer (`InFlight.stored`), so that the next step searches as it would have.

Only the session's answers sent ahead are ever used, for a subset of the UIDs they covered:
`in_play` is a superset of the kernel's messages in play.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from .criteria import compile_search
from .model import Rule
from .uidset import UidSet


@dataclass
class Ahead:
    """The rules (to know the next step), the UIDs that may still be in play, and the actions
    whose answer is read later."""

    rules: Sequence[Rule] = ()
    in_play: set[int] = field(default_factory=set)
    jobs: list[Any] = field(default_factory=list)

    def next_step(self, box: Any, i: int, a: int, targets: UidSet, builtin: bool) -> None:
        """Before action `a` of rule `i`, which the pass waits for: send the searches the next
        step begins with (box: the `ImapPass`)."""
        rules = self.rules
        if not builtin:
            box.session.later.forget()  # a plugin's action may change flags unseen
        elif a + 1 < len(rules[i].actions):
            self.action_searches(box, i, a + 1, targets)
        elif i + 1 < len(rules) and (i + 1, -1) not in box.steps and not rules[i + 1].where:
            within = UidSet(self.in_play)
            if i + 1 in box.searched:
                self.action_searches(box, i + 1, 0, box.searched[i + 1] & within)
            elif may_send_ahead(box):
                try:
                    query = compile_search(rules[i + 1].match, box.session.capabilities)
                except ValueError:
                    return  # reported at its turn, as before: sending ahead never fails an action
                box.session.later.ahead(query, within)

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
