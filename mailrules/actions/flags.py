"""The system-flag actions: flag, unflag, seen, unseen, add_flag, remove_flag.

One UID STORE (+FLAGS.SILENT / -FLAGS.SILENT) per UID-set chunk; idempotent, so a resumed
change is simply applied again and a sweep may repeat it (`once_per_rule=False`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..api import Action
from ..criteria import SearchQuery
from ..uidset import UidSet
from .base import ActionResult, ActionRun, BuiltinAction
from .reverse import Reversed, UndoRun, reverse_flags

SYSTEM_FLAGS = {
    "\\seen": "\\Seen",
    "\\answered": "\\Answered",
    "\\flagged": "\\Flagged",
    "\\draft": "\\Draft",
    "\\deleted": "\\Deleted",
}


def parse_system_flags(value: Any, action: str = "add_flag") -> tuple[str, ...]:
    values = value if isinstance(value, list) else [value]
    if not values:
        raise ValueError("expected a system flag such as \\Answered, or a list of them")
    out = []
    for v in values:
        if not isinstance(v, str) or v.lower() not in SYSTEM_FLAGS:
            raise ValueError(
                f"expected a system flag (\\Seen, \\Answered, \\Flagged, \\Draft), got {v!r}; "
                "keywords go in add_keyword/remove_keyword"
            )
        flag = SYSTEM_FLAGS[v.lower()]
        if flag == "\\Deleted":
            raise ValueError(f"{action}: \\Deleted is refused: use the 'delete' action")
        out.append(flag)
    return tuple(out)


def fixed(flag: str):
    """The parser of a bare-word action that stands for one flag (`flag`, `seen`, ...)."""

    def parse(value: Any) -> tuple[str, ...]:
        if value is not None:
            raise ValueError("takes no argument (write it as a bare word)")
        return (flag,)

    return parse


@dataclass(frozen=True)
class FlagAction(BuiltinAction):
    """Set (add=True) or clear system flags; `bare`: a bare word standing for its flag."""

    add: bool = True
    bare: bool = False
    once_per_rule: bool = False

    def describe(self, arg: Any) -> str:
        return "" if self.bare else super().describe(arg)

    def outcome(self) -> str:
        return "flags"

    def read_intent(self, detail: Any) -> FlagIntent | None:
        return FlagIntent.from_json(detail)

    def flag_changes(self, arg: Any) -> tuple[frozenset[str], frozenset[str]]:
        changed = frozenset(arg)
        return (changed, frozenset()) if self.add else (frozenset(), changed)

    def searches(self, arg: Any) -> list[SearchQuery]:
        return change_searches(tuple(arg), self.add)

    def execute(self, run: ActionRun, arg: Any, uids: UidSet, intent: Any, resuming: bool) -> ActionResult:
        changing = changes_journaled(run, uids, tuple(arg), self.add, intent if resuming else None)
        run.session.store(uids, tuple(arg), add=self.add)
        return ActionResult(uids, detail=reversal(arg, self.add, changing))

    def reverse(self, undo: UndoRun, record: dict) -> Reversed:
        return reverse_flags(undo, record, keywords=False)



@dataclass(frozen=True)
class FlagIntent:
    """What a flag or keyword change journals before its STORE: per flag, the messages it is
    about to change. A resume after a crash (the STORE may have happened) reuses it: asked
    again, the server would say nothing needs changing, and an undo would miss them."""

    changed: dict[str, UidSet]

    @classmethod
    def from_json(cls, detail: Any) -> FlagIntent | None:
        if not isinstance(detail, dict) or not isinstance(detail.get("changing"), dict):
            return None
        return cls({flag: UidSet.parse(text) for flag, text in detail["changing"].items()})

    def to_json(self) -> dict:
        return {"changing": {flag: str(uids) for flag, uids in self.changed.items()}}

    def retry_details(self, uids: Any) -> dict:
        return {}  # a retried flag change verifies nothing first


def changes_journaled(run: ActionRun, uids: UidSet, flags: tuple[str, ...], add: bool,
                      resumed: FlagIntent | None) -> dict[str, UidSet]:
    """`changes`, journaled before the STORE (or, resuming, what was journaled then)."""
    if resumed is not None:
        return {flag: resumed.changed.get(flag, UidSet()) & uids for flag in flags}
    changing = changes(run, uids, flags, add)
    if run.journal is not None:
        run.journal(FlagIntent(changing).to_json())
    return changing


def changes(run: ActionRun, uids: UidSet, flags: tuple[str, ...], add: bool) -> dict[str, UidSet]:
    """Per flag, the messages a STORE is about to change: those that lack it (add) or have it.

    One UID SEARCH per flag just before the STORE, restricted to the batch (the answer is a
    compact UID list, cheaper than fetching every message's FLAGS), so that the journal records
    only what actually changed and an undo never touches a message that already had the flag.
    """
    return {flag: run.session.search(query, within=uids) for flag, query in zip(flags, change_searches(flags, add),
                                                                               strict=True)}


def change_searches(flags: tuple[str, ...], add: bool) -> list[SearchQuery]:
    """`changes`' searches, one per flag (what the pass may send ahead of the action's turn)."""
    return [SearchQuery(_having(flag, not add)) for flag in flags]


def _having(flag: str, present: bool) -> tuple[bytes, ...]:
    """The SEARCH keys of the messages that have (present) or lack a flag or keyword."""
    if flag.startswith("\\"):
        name = flag[1:].upper().encode()
        return (name,) if present else (b"UN" + name,)
    return (b"KEYWORD" if present else b"UNKEYWORD", flag.encode())


def reversal(arg: Any, add: bool, changed: dict[str, UidSet] | None = None) -> dict:
    """What undoing a flag or keyword change needs, journaled with its done step: the flags,
    which way they went, and per flag the messages it actually changed."""
    record: dict = {"flags": list(arg), "added": add}
    if changed is not None:
        record["changed"] = {flag: str(uids) for flag, uids in changed.items() if uids}
    return {"undo": record}


def actions() -> list[Action]:
    return [
        FlagAction("flag", "set \\Flagged", parse=fixed("\\Flagged"), bare=True),
        FlagAction("unflag", "clear \\Flagged", parse=fixed("\\Flagged"), add=False, bare=True),
        FlagAction("seen", "set \\Seen", parse=fixed("\\Seen"), bare=True),
        FlagAction("unseen", "clear \\Seen", parse=fixed("\\Seen"), add=False, bare=True),
        FlagAction("add_flag", "set system flags", parse=parse_system_flags),
        FlagAction("remove_flag", "clear system flags", parse=lambda v: parse_system_flags(v, "remove_flag"),
                   add=False),
    ]
