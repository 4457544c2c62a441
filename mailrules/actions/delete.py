"""The delete action: STORE \\Deleted, then UID EXPUNGE of exactly those UIDs (idempotent)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..api import Action, ActionContext
from ..uidset import UidSet
from .base import ActionResult, ActionRun


@dataclass(frozen=True)
class DeleteAction(Action):
    builtin: bool = True
    effects: str = "mailbox"  # it changes the mailbox only: carried out offline, in memory
    terminal: bool = True
    once_per_rule: bool = False

    def describe(self, arg: Any) -> str:
        return ""

    def outcome(self) -> str:
        return "deleted"

    def execute(self, run: ActionRun, arg: Any, uids: UidSet, intent: Any, resuming: bool) -> ActionResult:
        run.mark_deleted_and_expunge(uids)
        return ActionResult(uids, removed=True)

    def perform(self, context: ActionContext, uids: UidSet, arg: Any) -> None:
        expunge = getattr(context, "expunge", None)
        if expunge is None:
            raise NotImplementedError("delete needs a context that can expunge")
        expunge(uids)


def actions() -> list[Action]:
    return [DeleteAction("delete", "mark \\Deleted and UID EXPUNGE")]
