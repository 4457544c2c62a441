"""Offline never touches the outside world (issue 18): an action says what it does
(`Action.effects`), and `mailrules test`, a rules file's `tests:` cases and `run --dry-run`
carry out only mailbox changes, reporting every other action as "would run".

The test plugin's `record` action appends a line to a file (its argument, relative to the
rules file's directory), declaring nothing, as a third-party plugin would.
"""

from __future__ import annotations

import json

import pytest

from mailrules import Action, PluginError, hookimpl, resolve_path
from mailrules.plugins import Registry


def record(context, uids, path):
    with path.open("a") as handle:
        for uid in uids:
            handle.write(f"{context.rule.name} {uid}\n")


def record_once(context, uids, path):
    """Idempotent: one line per message, keyed by (mailbox, UIDVALIDITY, UID)."""
    done = set(path.read_text().splitlines()) if path.exists() else set()
    with path.open("a") as handle:
        for uid in uids:
            key = f"{context.mailbox} {context.uidvalidity} {uid}"
            if key not in done:
                handle.write(key + "\n")


seen_by_mark: list[tuple[bool, int]] = []  # (context.offline, context.uidvalidity) as the `mark` action saw them


def mark(context, uids, arg):
    seen_by_mark.append((context.offline, context.uidvalidity))
    context.set_keywords(uids, ["Marked"])


class FilePlugin:
    mailrules_plugin_name = "files"

    @hookimpl
    def mailrules_actions(self):
        schema = {"type": "string"}
        return [
            Action("record", "append a line per message to a file", schema=schema, parse=resolve_path, run=record),
            Action("record_once", "the same, once per message", schema=schema, parse=resolve_path,
                   run=record_once),
            Action("mark", "set the keyword Marked", run=mark, effects="mailbox"),
        ]


RULES = "- name: log it\n  actions: [{record: out.log}, flag]\n"
CASE = """
tests:
  - name: logged and flagged
    message: {headers: {Subject: one}, body: hi}
    expect: {flags: ['\\Flagged']}
"""


def runner_for(rules_runner, rules=RULES, **options):
    return rules_runner(rules, plugins=[FilePlugin()], entry_points=False, **options)


def test_mailrules_test_on_messages_reports_an_undeclared_action_and_never_runs_it(rules_runner, make_message):
    runner = runner_for(rules_runner)
    result = runner.test_offline([make_message(subject="one")])
    assert not (runner.directory / "out.log").exists()
    assert result.code == 0, result.err
    assert f"would run: record {runner.directory / 'out.log'} (rule 'log it'" in result.out
    assert "flags: [\\Flagged]" in result.out  # the mailbox change is still carried out, in memory


def test_mailrules_test_json_lists_the_actions_that_would_run(rules_runner, make_message):
    runner = runner_for(rules_runner)
    data = runner.test_offline([make_message(subject="one")], as_json=True).json()
    assert data[0]["would_run"] == [{"rule": "log it", "action": f"record {runner.directory / 'out.log'}"}]
    assert data[0]["flags"] == ["\\Flagged"]


def test_a_tests_case_never_runs_an_undeclared_action_and_reports_it(rules_runner):
    runner = runner_for(rules_runner, config_extra=CASE)
    result = runner.test_offline()
    assert not (runner.directory / "out.log").exists()
    assert result.code == 0, result.out
    [line] = [line for line in result.out.splitlines() if line.startswith("PASS")]  # still one line per case
    assert line == f"PASS  logged and flagged  (would run, not offline: record {runner.directory / 'out.log'} (rule 'log it'))"


def test_a_dry_run_never_runs_the_action_and_names_it(rules_runner, make_message):
    runner = runner_for(rules_runner)
    runner.deliver([make_message(subject="one")])
    result = runner.run(dry_run=True)
    assert not (runner.directory / "out.log").exists()
    assert "record" in result.output and result.flags_of("one") == set()


def test_the_real_run_runs_it_with_its_path_relative_to_the_rules_file(rules_runner, make_message):
    runner = runner_for(rules_runner)
    runner.test_offline([make_message(subject="one")])
    runner.deliver([make_message(subject="one")])
    runner.run()
    assert (runner.directory / "out.log").read_text() == "log it 1\n"


def test_a_mailbox_only_action_runs_offline_and_is_told_it_is_offline(rules_runner, make_message):
    seen_by_mark.clear()
    runner = runner_for(rules_runner, "- name: m\n  actions: [mark]\n")
    result = runner.test_offline([make_message(subject="one")], as_json=True)
    assert result.json()[0]["keywords"] == ["Marked"] and result.json()[0]["would_run"] == []
    assert seen_by_mark == [(True, 1)]


def test_on_imap_the_context_is_not_offline_and_gives_the_mailboxs_uidvalidity(rules_runner, make_message):
    seen_by_mark.clear()
    runner = runner_for(rules_runner, "- name: m\n  actions: [mark]\n")
    runner.deliver([make_message(subject="one")])
    runner.run()
    client = runner.client()
    try:
        uidvalidity = client.folder_status("INBOX", ["UIDVALIDITY"])[b"UIDVALIDITY"]
    finally:
        client.logout()
    assert seen_by_mark == [(False, uidvalidity)]


def test_an_action_with_an_unknown_effects_value_is_refused_at_start():
    class Bad:
        @hookimpl
        def mailrules_actions(self):
            return [Action("bad", "x", run=record, effects="sideways")]

    with pytest.raises(PluginError, match="effects must be one of mailbox, outside"):
        Registry.load(entry_points=False, extra=[Bad()])


def test_the_builtin_actions_change_the_mailbox_only():
    registry = Registry.load(entry_points=False)
    assert {a.name for a in registry.actions.values() if a.effects != "mailbox"} == set()


def test_crash_during_an_action_then_resume_runs_it_again_for_the_batch(rules_runner, make_message):
    runner = runner_for(rules_runner)
    runner.deliver([make_message(subject="one")])
    runner.crash_during("record")  # record wrote its line, the process died before mailrules noted it
    assert (runner.directory / "out.log").read_text() == "log it 1\n"
    result = runner.run()  # the restart: at-least-once, so record runs again for the batch
    assert (runner.directory / "out.log").read_text() == "log it 1\nlog it 1\n"
    assert result.flags_of("one") == {"\\Flagged"}


def test_an_idempotent_action_keyed_by_uidvalidity_writes_once_across_a_crash(rules_runner, make_message):
    runner = runner_for(rules_runner, "- name: once\n  actions: [{record_once: out.log}]\n")
    runner.deliver([make_message(subject="one"), make_message(subject="two")])
    runner.crash_during("record_once")
    runner.run()
    lines = (runner.directory / "out.log").read_text().splitlines()
    assert len(lines) == 2 and len(set(lines)) == 2


def test_crash_during_a_pass_that_never_reaches_the_action_says_so(rules_runner):
    runner = runner_for(rules_runner)
    with pytest.raises(AssertionError, match="without reaching"):
        runner.crash_during("record")


def test_json_output_keeps_the_message_key(rules_runner, make_message):
    runner = runner_for(rules_runner)
    data = json.loads(runner.test_offline([make_message(subject="one")], as_json=True).out)
    assert data[0]["message"].endswith("offline-1.eml") and data[0]["subject"] == "one"


def test_a_terminal_outside_action_offline_takes_the_message_away_without_running(rules_runner, make_message):
    class Forward:
        @hookimpl
        def mailrules_actions(self):
            return [Action("forward_away", "hand the message to another system and remove it", run=record,
                           schema={"type": "string"}, parse=resolve_path, terminal=True)]

    runner = rules_runner("- name: away\n  actions: [seen, {forward_away: out.log}]\n- name: later\n"
                          "  actions: [flag]\n", plugins=[Forward()], entry_points=False)
    [outcome] = runner.test_offline([make_message(subject="one")], as_json=True).json()
    assert not (runner.directory / "out.log").exists()
    assert outcome["mailbox"] is None and [r["name"] for r in outcome["rules"]] == ["away"]
    assert outcome["would_run"][0]["action"].startswith("forward_away ")


def bad_keyword(context, uids, arg):
    context.set_keywords(uids, ["two words"])


def test_offline_a_mailbox_action_setting_a_bad_keyword_fails_as_it_would_on_imap(rules_runner, make_message):
    class Bad:
        @hookimpl
        def mailrules_actions(self):
            return [Action("bad_keyword", "x", run=bad_keyword, effects="mailbox")]

    runner = rules_runner("- name: b\n  actions: [bad_keyword]\n", plugins=[Bad()], entry_points=False)
    result = runner.test_offline([make_message(subject="one")])
    assert result.code == 1 and "not a valid keyword" not in result.out
    assert "expected a keyword" in result.err
    runner.deliver([make_message(subject="one")])
    assert runner.run().failed  # the same action fails on IMAP too
