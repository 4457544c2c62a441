"""The system-flag actions: flag, unflag, seen, unseen, add_flag, remove_flag.

One UID STORE (+FLAGS.SILENT / -FLAGS.SILENT) per UID-set chunk; idempotent, so a resumed
change is simply applied again and a sweep may repeat it (`once_per_rule=False`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..api import Action, ActionContext
from ..uidset import UidSet
from .base import ActionResult, ActionRun

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
class FlagAction(Action):
    """Set (add=True) or clear system flags; `bare`: a bare word standing for its flag."""

    add: bool = True
    bare: bool = False
    builtin: bool = True
    effects: str = "mailbox"  # it changes the mailbox only: carried out offline, in memory
    once_per_rule: bool = False

    def describe(self, arg: Any) -> str:
        return "" if self.bare else super().describe(arg)

    def execute(self, run: ActionRun, arg: Any, uids: UidSet, intent: Any, resuming: bool) -> ActionResult:
        run.session.store(uids, tuple(arg), add=self.add)
        return ActionResult(uids, detail=reversal(arg, self.add))

    def perform(self, context: ActionContext, uids: UidSet, arg: Any) -> None:
        (context.set_flags if self.add else context.clear_flags)(uids, arg)


def reversal(arg: Any, add: bool) -> dict:
    """What undoing a flag or keyword change needs, journaled with its done step: the flags and
    which way they went (the flags before the change are not fetched: that would cost a round
    trip per action; an undo restores the opposite change)."""
    return {"undo": {"flags": list(arg), "added": add}}


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
