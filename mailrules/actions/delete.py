"""The delete action: STORE \\Deleted, then UID EXPUNGE of exactly those UIDs (idempotent)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..api import Action
from ..uidset import UidSet
from .base import ActionResult, ActionRun, BuiltinAction


@dataclass(frozen=True)
class DeleteAction(BuiltinAction):
    terminal: bool = True
    once_per_rule: bool = False

    def describe(self, arg: Any) -> str:
        return ""

    def outcome(self) -> str:
        return "deleted"

    def execute(self, run: ActionRun, arg: Any, uids: UidSet, intent: Any, resuming: bool) -> ActionResult:
        run.mark_deleted_and_expunge(uids)
        return ActionResult(uids, removed=True)



def actions() -> list[Action]:
    return [DeleteAction("delete", "mark \\Deleted and UID EXPUNGE")]
