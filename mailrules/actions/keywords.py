"""The keyword actions: add_keyword, remove_keyword.

As the flag actions (idempotent UID STORE), plus: a keyword is only stored where the
mailbox's PERMANENTFLAGS allow it (``check --connect`` checks it: `requires` "keywords").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..api import Action
from ..criteria import SearchQuery
from ..uidset import UidSet
from .base import ActionFailed, ActionResult, ActionRun, BuiltinAction
from .flags import FlagIntent, change_searches, changes_journaled, reversal
from .reverse import Reversed, UndoRun, reverse_flags

_ATOM_SPECIALS = set('(){ %*"\\]') | {chr(c) for c in range(0, 32)} | {chr(127)}


def parse_keywords(value: Any) -> tuple[str, ...]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ValueError("expected a keyword such as $Dev, or a list of them")
    out = []
    for v in values:
        if not isinstance(v, str) or not v or v.startswith("\\") or any(c in _ATOM_SPECIALS for c in v):
            raise ValueError(
                f"expected a keyword (an IMAP atom such as $Dev or Work, no spaces, no backslash), got {v!r}"
            )
        if any(ord(c) > 126 for c in v):
            raise ValueError(f"keywords must be ASCII, got {v!r}")
        out.append(v)
    return tuple(out)


@dataclass(frozen=True)
class KeywordAction(BuiltinAction):
    """Set (add=True) or clear keywords."""

    add: bool = True
    once_per_rule: bool = False

    def requires(self, arg: Any) -> frozenset[str]:
        return frozenset({"keywords"})

    def outcome(self) -> str:
        return "keywords"

    def read_intent(self, detail: Any) -> FlagIntent | None:
        return FlagIntent.from_json(detail)

    def flag_changes(self, arg: Any) -> tuple[frozenset[str], frozenset[str]]:
        changed = frozenset(arg)
        return (changed, frozenset()) if self.add else (frozenset(), changed)

    def searches(self, arg: Any) -> list[SearchQuery]:
        return change_searches(tuple(arg), self.add)

    def execute(self, run: ActionRun, arg: Any, uids: UidSet, intent: Any, resuming: bool) -> ActionResult:
        keywords = tuple(arg)
        cannot = [k for k in keywords if not run.selected.can_store_keyword(k)]
        if cannot and self.add:
            raise ActionFailed(
                f"mailbox {run.mailbox} cannot store keywords (PERMANENTFLAGS lacks \\* and {', '.join(cannot)})"
            )
        changing = changes_journaled(run, uids, keywords, self.add, intent if resuming else None)
        run.session.store(uids, keywords, add=self.add)
        return ActionResult(uids, detail=reversal(arg, self.add, changing))

    def reverse(self, undo: UndoRun, record: dict) -> Reversed:
        return reverse_flags(undo, record, keywords=True)



def actions() -> list[Action]:
    return [
        KeywordAction("add_keyword", "set keywords", parse=parse_keywords),
        KeywordAction("remove_keyword", "clear keywords", parse=parse_keywords, add=False),
    ]
