"""An action is one object: a new one registered by a plugin is validated, executed on IMAP
and in memory, described in a dry run and listed by `mailrules plugins`, with no other change."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass
from typing import Any

import pytest

from mailrules import Action, ActionContext, UidSet, hookimpl
from mailrules.config import ConfigError
from mailrules.local_search import LocalMessage
from mailrules.memory import MemoryServer, run_rules
from mailrules.model import ActionCall, Location, Rule
from mailrules.plugins import Registry


@dataclass(frozen=True)
class Label(Action):
    """Adds the keyword `Label<arg>` (a new kind of action object, as a built-in would be)."""

    def describe(self, arg: Any) -> str:
        return f"as {arg}"

    def perform(self, context: ActionContext, uids: UidSet, arg: Any) -> None:
        context.set_keywords(uids, [f"Label{arg}"])


LABEL = Label("label", "add a Label keyword", schema={"type": "string", "pattern": "^[A-Za-z]+$"},
              effects="mailbox")


class LabelPlugin:
    mailrules_plugin_name = "labels"

    @hookimpl
    def mailrules_actions(self):
        return [LABEL]


RULES = "- name: r\n  actions: [{label: Work}]\n"


def test_a_new_action_object_is_listed_by_mailrules_plugins():
    registry = Registry.load(entry_points=False, extra=[LabelPlugin()])
    assert "  action    label  add a Label keyword" in registry.describe()


def test_a_new_action_objects_argument_is_validated_at_load_time(rules_runner):
    with pytest.raises(ConfigError, match="label"):
        rules_runner("- name: r\n  actions: [{label: 'not ok'}]\n", plugins=[LabelPlugin()], entry_points=False)


def test_a_new_action_object_is_executed_on_imap(rules_runner, make_message):
    runner = rules_runner(RULES, plugins=[LabelPlugin()], entry_points=False)
    runner.deliver([make_message(subject="x")])
    assert runner.run().flags_of("x") == {"LabelWork"}


def test_a_new_action_object_is_described_in_a_dry_run(rules_runner, make_message):
    runner = rules_runner(RULES, plugins=[LabelPlugin()], entry_points=False)
    runner.deliver([make_message(subject="x")])
    result = runner.run(dry_run=True)
    assert re.search(r"(?m)^\s+r\s+1\s+label as Work$", result.output) and result.flags_of("x") == set()


def test_a_new_action_object_is_executed_in_memory():
    registry = Registry.load(entry_points=False, extra=[LabelPlugin()])
    server = MemoryServer()
    server.deliver("a", "INBOX", LocalMessage(b"Subject: x\r\n\r\nhi\r\n", internaldate=dt.datetime.now(dt.UTC)))
    rule = Rule("r", actions=(ActionCall("label", "Work", Location("<test>")),))
    run_rules(server, "a", "INBOX", [rule], registry)
    assert server.folder("a", "INBOX").messages[1].keywords == {"LabelWork"}


def test_hooks_are_called_through_pluggy_so_tryfirst_orders_them():
    order = []

    class Early:
        @hookimpl(tryfirst=True)
        def mailrules_stopping(self):
            order.append("early")

    class Late:
        @hookimpl
        def mailrules_stopping(self):
            order.append("late")

    registry = Registry.load(entry_points=False, extra=[Late(), Early()])  # Early registered last
    registry.notify("mailrules_stopping")
    assert order == ["early", "late"]
