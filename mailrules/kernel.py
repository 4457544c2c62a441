"""The rule-pass semantics, written once, over a small `Mailbox` protocol.

A pass runs a rule list over candidate messages of one mailbox:

* rules in file order; each rule sees the messages as the earlier rules left them (their
  actions already happened), so flags set by rule 1 are seen by rule 2's criteria;
* a message whose rule has `stop`, or whose action ends its journey (move, trash, delete,
  a terminal plugin action), leaves play: no later rule meets it;
* a message that could not be decided (a predicate failed) or whose action failed leaves
  play too: it resumes on a later pass at that rule and action (`Position`), and later
  rules wait for it;
* a candidate resuming at (rule i, action a > 0) is not matched again by rule i: it takes
  rule i's actions from action a on, then goes on with the rules after;
* a dry run carries no action out but keeps these semantics (`Mailbox.simulate`): a message
  an earlier rule would move leaves play, flags it would set are seen by later criteria.

The outcome equals evaluating the rules one message at a time, in order; a mailbox is
free to do each step for many messages at once. Two implementations:
`mailrules.imap_mailbox.ImapPass` (the batched, pipelined, journaled IMAP pass) and
`mailrules.memory.MemoryMailbox` (messages in memory, criteria evaluated locally).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Protocol

from .model import ActionCall, Rule
from .uidset import UidSet

Position = tuple[int, int]  # (rule index, action index) where a message resumes
START: Position = (0, 0)


class Mailbox(Protocol):
    """What the kernel asks of a mailbox during one pass."""

    def open(self, rules: Sequence[Rule], within: UidSet) -> None:
        """Before the first rule: read-only work for the whole pass (IMAP: one pipelined round trip)."""

    def between(self) -> None:
        """Called between two steps: may raise to abandon the pass (resumed later)."""

    def match(self, index: int, rule: Rule, searchable: UidSet) -> tuple[UidSet, set[int]]:
        """The messages of `searchable` the rule matches (criteria, then `where:`), and those it
        could not decide (they leave play, to be retried from this rule)."""

    def present(self, index: int, rule: Rule, targets: UidSet) -> bool:
        """The rule is about to act on `targets`: True to carry its actions out, False (a dry
        run) when they were only described."""

    def apply(self, index: int, action_index: int, rule: Rule, call: ActionCall, targets: UidSet) -> set[int]:
        """Carry one action out on `targets`; returns the UIDs that leave play (their journey
        ended, or the action failed for them)."""

    def close(self, abandoned: bool = False) -> None:
        """After the last rule (abandoned: the pass raised, and goes on raising): the outcome of
        every action whose answer is read late (IMAP: a terminal action does not wait for its
        answer, its messages having left play either way) is read and journaled now."""

    def simulate(self, index: int, action_index: int, rule: Rule, call: ActionCall, targets: UidSet) -> set[int]:
        """A dry run (`present` said False): what `apply` would do to `targets`, without doing
        it, as far as the later rules can tell: the UIDs that leave play (a terminal action's:
        move, trash, delete, a terminal plugin action), and the flags and keywords it sets or
        clears (`mailrules.api.Action.flag_changes`), which the mailbox then lets the later
        rules' criteria see. So a dry run matches, rule by rule, what the real run acts on."""


def run_pass(box: Mailbox, rules: Sequence[Rule], candidates: Mapping[int, Position],
             entered: Collection[int] = ()) -> set[int]:
    """Run `rules` over `candidates` (uid -> where it starts); returns the UIDs still in play.

    entered: UIDs whose start rule already matched (a shared claim taken over at its first
    action): not matched again, they take the rule's actions from their start.
    """
    active = set(candidates)
    try:
        _walk(box, rules, candidates, entered, active)
    except Exception:  # not a BaseException such as KeyboardInterrupt: a process ending leaves the journal as it is
        box.close(abandoned=True)
        raise
    box.close()
    return active


def _walk(box: Mailbox, rules: Sequence[Rule], candidates: Mapping[int, Position], entered: Collection[int],
          active: set[int]) -> None:
    """`run_pass`'s rules over the candidates, `active` (the UIDs in play) updated as they go."""
    if active:
        box.open(rules, UidSet(active))
    # The usual pass (new mail, nothing resumed): every message starts at the first rule, so each
    # rule searches all those still in play and resumes none; not worked out per message per rule.
    fresh = not entered and all(start == START for start in candidates.values())
    for i, rule in enumerate(rules):
        if not active:
            break
        box.between()
        if fresh:
            searchable, resumed = UidSet(active), {}
        else:
            searchable = UidSet(u for u in active
                                if candidates[u][0] < i or (candidates[u] == (i, 0) and u not in entered))
            resumed = {u: candidates[u][1] for u in active
                       if candidates[u][0] == i and (candidates[u][1] > 0 or u in entered)}
        matched, undecided = box.match(i, rule, searchable)
        active -= undecided
        everyone = set(matched) | resumed.keys()
        if not everyone:
            continue
        carried_out = box.present(i, rule, UidSet(everyone))
        for a, call in enumerate(rule.actions):
            targets = UidSet(u for u in everyone if u in active and (u in matched or resumed.get(u, 99) <= a))
            if not targets:
                continue
            if carried_out:
                box.between()
                active -= box.apply(i, a, rule, call, targets)
            else:  # a dry run: later rules see the messages as the real run would leave them
                active -= box.simulate(i, a, rule, call, targets)
        if rule.stop:
            active -= everyone
