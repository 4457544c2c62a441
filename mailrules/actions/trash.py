"""The trash action: move to the account's Trash mailbox (\\Trash special use, else by name)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..api import Action
from ..uidset import UidSet
from .base import ActionFailed, ActionResult, ActionRun, BuiltinAction
from .copy import start_move
from .reverse import Reversed, UndoRun, reverse_move

NO_TRASH = ("no Trash mailbox: the server has no \\Trash special-use mailbox and no folder named "
            "Trash, Deleted Items or Deleted Messages")


@dataclass(frozen=True)
class TrashAction(BuiltinAction):
    terminal: bool = True
    once_per_rule: bool = False

    def describe(self, arg: Any) -> str:
        return ""

    def requires(self, arg: Any) -> frozenset[str]:
        return frozenset({"trash"})

    def outcome(self) -> str:
        return "moved"

    def execute(self, run: ActionRun, arg: Any, uids: UidSet, intent: Any, resuming: bool) -> ActionResult:
        return self.start(run, arg, uids, intent, resuming)()

    def start(self, run: ActionRun, arg: Any, uids: UidSet, intent: Any, resuming: bool) -> Callable[[], ActionResult]:
        trash = run.session.find_trash()
        if trash is None:
            raise ActionFailed(NO_TRASH)
        return start_move(run, trash, uids, None, resuming)  # already in the Trash: nothing to do

    def reverse(self, undo: UndoRun, record: dict) -> Reversed:
        return reverse_move(undo, record)



def actions() -> list[Action]:
    return [TrashAction("trash", "move to the Trash mailbox")]
