"""Plugins: the registry, argument validation, discovery, and isolation in the engine.

Unit tests build registries with `Registry.load(extra=[...])`; the integration tests run
rules against the private Dovecot through `mailrules.testing.rules` (the `rules_runner`
fixture) and check that no mail is ever lost or processed twice.
"""

from __future__ import annotations

import importlib
import re
import subprocess
import sys
import textwrap
import threading
from email.message import EmailMessage
from pathlib import Path

import pytest

from mailrules import hookimpl
from mailrules.config import ConfigError, load
from mailrules.imap.session import ImapSession
from mailrules.plugins import Action, ArgumentError, PluginError, Predicate, Registry

# --------------------------------------------------------------------------- helpers


class Plugin:
    """A plugin object built from lists (what a plugin module's hookimpls would return)."""

    def __init__(self, name: str, predicates=(), actions=()) -> None:
        self.mailrules_plugin_name = name
        self._predicates = list(predicates)
        self._actions = list(actions)

    @hookimpl
    def mailrules_predicates(self):
        return self._predicates

    @hookimpl
    def mailrules_actions(self):
        return self._actions


def registry(*plugins) -> Registry:
    return Registry.load(entry_points=False, extra=plugins)


HEADER = """\
version: 1
accounts:
  a: {host: 127.0.0.1, tls: none, username: u, password_env: MAILRULES_TEST_PW}
rules:
"""


def rules_file(tmp_path: Path, rules: str) -> Path:
    path = tmp_path / "rules.yaml"
    path.write_text(HEADER + textwrap.indent(textwrap.dedent(rules).strip("\n") + "\n", "  "))
    path.chmod(0o600)
    return path


def load_error(path: Path, reg: Registry) -> ConfigError:
    with pytest.raises(ConfigError) as info:
        load(path, registry=reg)
    return info.value


def line_of(path: Path, text: str) -> int:
    """1-based number of the first line of `path` containing `text`."""
    return next(n for n, line in enumerate(path.read_text().splitlines(), 1) if text in line)


SCORE = Predicate(
    "score",
    test=lambda message, args: True,
    description="a test predicate with a schema\nsecond line not shown",
    schema={
        "type": "object",
        "properties": {"above": {"type": "number"}, "header": {"type": "string"}},
        "required": ["above"],
        "additionalProperties": False,
    },
    needs=["header:X-Score"],
)


# --------------------------------------------------------------------------- the registry


def test_builtins_come_through_the_same_registry_as_plugins():
    reg = registry()
    assert reg.predicates["regex"].plugin == "builtin"
    assert {"flag", "move", "copy", "trash", "delete", "add_keyword"} <= set(reg.actions)
    assert all(a.plugin == "builtin" for a in reg.actions.values())
    assert reg.plugins["builtin"].distribution == "mailrules"


def test_plugin_predicates_and_actions_are_registered_by_name():
    notify = Action("notify_me", "tell me", run=lambda ctx, uids, arg: None)
    reg = registry(Plugin("mine", [SCORE], [notify]))
    assert reg.predicates["score"].plugin == "mine"
    assert reg.actions["notify_me"].plugin == "mine"


def test_two_plugins_providing_the_same_predicate_name_is_a_clear_error():
    with pytest.raises(PluginError) as info:
        registry(Plugin("first", [SCORE]), Plugin("second", [SCORE]))
    message = str(info.value)
    assert "predicate 'score' is registered twice" in message
    assert "'first'" in message and "'second'" in message


def test_a_plugin_cannot_take_a_builtin_name():
    regex = Predicate("regex", test=lambda m, a: True)
    with pytest.raises(PluginError, match="predicate 'regex' is registered twice: by plugin 'builtin'"):
        registry(Plugin("impostor", [regex]))


def test_two_plugins_providing_the_same_action_name_is_a_clear_error():
    act = Action("notify_me", run=lambda ctx, uids, arg: None)
    with pytest.raises(PluginError, match="action 'notify_me' is registered twice.*'one'.*'two'"):
        registry(Plugin("one", actions=[act]), Plugin("two", actions=[act]))


def test_two_plugins_with_the_same_plugin_name_is_a_clear_error():
    with pytest.raises(PluginError, match="two plugins are named 'same'"):
        registry(Plugin("same"), Plugin("same"))


def test_a_plugin_returning_something_else_than_predicates_is_an_error():
    with pytest.raises(PluginError, match="mailrules_predicates\\(\\) must return Predicate objects"):
        registry(Plugin("sloppy", [{"name": "x"}]))


def test_an_invalid_json_schema_is_a_plugin_error_when_first_used():
    bad = Predicate("bad", test=lambda m, a: True, schema={"type": "no-such-type"})
    reg = registry(Plugin("p", [bad]))  # compiled lazily: jsonschema is not imported at start-up
    with pytest.raises(PluginError, match="predicate 'bad' of plugin 'p': invalid JSON Schema"):
        reg.predicates["bad"].validate({})


def test_an_unknown_need_is_a_plugin_error():
    bad = Predicate("bad", test=lambda m, a: True, needs=["bodyy"])
    with pytest.raises(PluginError, match="unknown need 'bodyy'"):
        registry(Plugin("p", [bad]))


def test_needs_are_normalised_and_body_fetches_the_whole_message():
    pred = Predicate("p", test=lambda m, a: True, needs=lambda args: ["body", "header:List-Id", "flags"])
    assert pred.needs_for(None) == {"message", "header:List-Id", "flags"}


def test_a_hookimpl_with_a_misspelt_hook_name_is_an_error():
    class Typo:
        mailrules_plugin_name = "typo"

        @hookimpl
        def mailrules_predicate(self):  # missing 's'
            return []

    with pytest.raises(PluginError, match="mailrules_predicate"):
        registry(Typo())


def test_validate_checks_the_schema_then_runs_parse():
    pred = Predicate("p", test=lambda m, a: True, schema={"type": "object"}, parse=lambda raw: sorted(raw))
    assert pred.validate({"b": 1, "a": 2}) == ["a", "b"]
    with pytest.raises(ArgumentError, match="is not of type 'object'"):
        pred.validate([1])


def test_an_action_without_schema_or_parse_takes_no_argument():
    act = Action("bare", run=lambda ctx, uids, arg: None)
    assert act.validate(None) is None
    with pytest.raises(ValueError, match="takes no argument"):
        act.validate("something")


# --------------------------------------------------------------------------- bad arguments: load-time errors


def test_a_bad_predicate_argument_is_a_load_time_error_with_file_and_line(tmp_path):
    path = rules_file(tmp_path, """
        - name: r
          where:
            - score:
                above: high
          actions: [flag]
        """)
    error = load_error(path, registry(Plugin("p", [SCORE])))
    assert error.location.file == str(path)
    assert error.location.line == line_of(path, "above: high")
    assert "score" in error.message and "above" in error.message and "'high' is not of type 'number'" in error.message
    assert str(error).startswith(f"{path}:{error.location.line}:")


def test_an_unknown_key_in_a_predicate_argument_names_the_key_and_the_expected_ones(tmp_path):
    path = rules_file(tmp_path, """
        - name: r
          where:
            - score:
                above: 5
                abvoe: 6
          actions: [flag]
        """)
    error = load_error(path, registry(Plugin("p", [SCORE])))
    assert error.location.line == line_of(path, "abvoe")
    assert "unknown key 'abvoe' (expected: above, header)" in error.message


def test_a_missing_predicate_argument_is_a_load_time_error(tmp_path):
    path = rules_file(tmp_path, """
        - name: r
          where: [score]
          actions: [flag]
        """)
    error = load_error(path, registry(Plugin("p", [SCORE])))
    assert error.location.line == line_of(path, "where: [score]")
    assert "score" in error.message and "argument is required" in error.message


def test_a_parse_function_that_trips_over_a_bad_argument_is_a_load_time_error(tmp_path):
    pred = Predicate("older", test=lambda m, a: True, parse=lambda raw: int(raw["days"]))
    path = rules_file(tmp_path, """
        - name: r
          where:
            - older: 30
          actions: [flag]
        """)
    error = load_error(path, registry(Plugin("p", [pred])))
    assert error.location.line == line_of(path, "older: 30")
    assert "older" in error.message and "invalid argument 30" in error.message


def test_a_bad_plugin_action_argument_is_a_load_time_error_with_file_and_line(tmp_path):
    act = Action(
        "notify_me",
        run=lambda ctx, uids, arg: None,
        schema={"type": "object", "properties": {"channel": {"type": "string", "pattern": "^#"}},
                "required": ["channel"], "additionalProperties": False},
    )
    path = rules_file(tmp_path, """
        - name: r
          actions:
            - flag
            - notify_me: {channel: general}
        """)
    error = load_error(path, registry(Plugin("p", actions=[act])))
    assert error.location.line == line_of(path, "channel: general")
    assert "notify_me" in error.message and "channel" in error.message and "does not match" in error.message


def test_a_good_argument_reaches_the_rule_validated(tmp_path):
    path = rules_file(tmp_path, """
        - name: r
          where:
            - score: {above: 5}
          actions: [flag]
        """)
    config = load(path, registry=registry(Plugin("p", [SCORE])))
    assert config.rules[0].where[0].args == {"above": 5}


# --------------------------------------------------------------------------- discovery: entry points


def write_dist(site: Path, dist: str, version: str, plugins: dict[str, str]) -> None:
    """A real (if tiny) installed distribution: a .dist-info directory with entry points."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    (info / "entry_points.txt").write_text(
        "[mailrules]\n" + "".join(f"{name} = {module}\n" for name, module in plugins.items())
    )


PLUGIN_MODULE = '''
from mailrules import hookimpl
from mailrules.plugins import Predicate

@hookimpl
def mailrules_predicates():
    return [Predicate("has_list_id", lambda m, a: bool(m.header("List-Id")),
                      description="the message came from a mailing list", needs=["header:List-Id"])]
'''


@pytest.fixture
def site(tmp_path, monkeypatch):
    directory = tmp_path / "site"
    directory.mkdir()
    monkeypatch.syspath_prepend(str(directory))
    yield directory
    for name in [m for m in sys.modules if m.startswith("mr_test_")]:
        del sys.modules[name]
    importlib.invalidate_caches()


def test_installed_plugins_are_found_through_the_mailrules_entry_point_group(site):
    (site / "mr_test_lists.py").write_text(PLUGIN_MODULE)
    write_dist(site, "mailrules-lists", "1.2", {"lists": "mr_test_lists"})
    reg = Registry.load()
    assert reg.predicates["has_list_id"].plugin == "lists"
    assert (reg.plugins["lists"].distribution, reg.plugins["lists"].version) == ("mailrules-lists", "1.2")


def test_mailrules_plugins_lists_plugins_with_one_line_descriptions(site):
    (site / "mr_test_lists.py").write_text(PLUGIN_MODULE)
    write_dist(site, "mailrules-lists", "1.2", {"lists": "mr_test_lists"})
    env_path = str(site)
    result = subprocess.run(
        [sys.executable, "-m", "mailrules.cli", "plugins"], capture_output=True, text=True, timeout=60,
        env={**__import__("os").environ, "PYTHONPATH": env_path},
    )
    assert result.returncode == 0, result.stderr
    out = result.stdout.splitlines()
    assert out[0].startswith("builtin (mailrules ")
    assert any(line.startswith("  predicate regex ") for line in out)
    at = out.index("lists (mailrules-lists 1.2)")
    assert out[at + 1].split() == ["predicate", "has_list_id", "the", "message", "came", "from", "a", "mailing",
                                   "list"]


def test_a_plugin_that_fails_to_import_is_named_in_the_error(site):
    (site / "mr_test_broken.py").write_text("raise ImportError('needs libfoo')\n")
    write_dist(site, "mailrules-broken", "0.1", {"broken": "mr_test_broken"})
    with pytest.raises(PluginError, match="plugin 'broken' .*mailrules-broken 0.1.* failed to load: ImportError: needs libfoo"):
        Registry.load()


def test_two_distributions_with_the_same_plugin_name_is_a_clear_error(site):
    (site / "mr_test_a.py").write_text("")
    (site / "mr_test_b.py").write_text("")
    write_dist(site, "mailrules-a", "1.0", {"dup": "mr_test_a"})
    write_dist(site, "mailrules-b", "1.0", {"dup": "mr_test_b"})
    with pytest.raises(PluginError, match="two plugins are named 'dup'.*mailrules-(a|b).*mailrules-(a|b)"):
        Registry.load()


def test_mailrules_plugins_exits_2_on_a_plugin_error(site):
    (site / "mr_test_a.py").write_text(PLUGIN_MODULE)
    (site / "mr_test_b.py").write_text(PLUGIN_MODULE)
    write_dist(site, "mailrules-a", "1.0", {"a": "mr_test_a"})
    write_dist(site, "mailrules-b", "1.0", {"b": "mr_test_b"})
    result = subprocess.run(
        [sys.executable, "-m", "mailrules.cli", "plugins"], capture_output=True, text=True, timeout=60,
        env={**__import__("os").environ, "PYTHONPATH": str(site)},
    )
    assert result.returncode == 2
    assert "predicate 'has_list_id' is registered twice" in result.stderr


# --------------------------------------------------------------------------- notification hooks


def test_notification_hooks_get_the_arguments_they_ask_for_and_a_failing_one_is_contained(caplog):
    seen = []

    class Listener:
        mailrules_plugin_name = "listener"

        @hookimpl
        def mailrules_started(self, config):
            seen.append(("started", config))

        @hookimpl
        def mailrules_stopping(self):
            seen.append(("stopping",))

    class Broken:
        mailrules_plugin_name = "broken"

        @hookimpl
        def mailrules_started(self):
            raise RuntimeError("oops")

    reg = registry(Listener(), Broken())
    reg.notify("mailrules_started", config="CONFIG")
    reg.notify("mailrules_stopping")
    assert seen == [("started", "CONFIG"), ("stopping",)]
    assert "plugin broken: hook mailrules_started failed" in caplog.text


# --------------------------------------------------------------------------- against Dovecot


def msg(make_message, subject: str, **kwargs) -> bytes:
    return make_message(subject=subject, **kwargs)


class Switch(Plugin):
    """A predicate and an action whose behaviour the test switches between passes."""

    def __init__(self, mode: str = "ok", needs=("header:Subject",), timeout: float = 10.0) -> None:
        self.mode = mode
        self.release = threading.Event()
        self.tested: list[int] = []
        self.ran: list[tuple[int, ...]] = []
        super().__init__(
            "switch",
            [Predicate("check", self.check, "test predicate", needs=list(needs), timeout=timeout)],
            [Action("poke", "test action", run=self.poke)],
        )

    def check(self, message, args):
        self.tested.append(message.uid)
        if self.mode == "raise":
            raise RuntimeError("the service is down")
        if self.mode == "hang":
            self.release.wait(60)
        return "wanted" in message.subject

    def poke(self, context, uids, arg):
        if self.mode == "raise":
            raise RuntimeError("the webhook is down")
        self.ran.append(tuple(uids))


CHECKED_RULES = """
- name: checked
  where: [check]
  actions: [flag]
- name: later
  actions: [{add_keyword: $Later}]
"""


def test_a_raising_predicate_skips_the_message_and_it_is_retried_later(rules_runner, make_message):
    plugin = Switch("raise")
    runner = rules_runner(CHECKED_RULES, plugins=[plugin], entry_points=False)
    runner.deliver([msg(make_message, "wanted 1"), msg(make_message, "other")])

    first = runner.run()
    assert first.subjects("INBOX") == ["wanted 1", "other"]  # nothing lost
    assert all(m.flags == () for m in first.messages("INBOX"))  # no rule acted, later rules waited
    assert set(first.failed) == {1, 2}
    assert any("rule 'checked'" in line and "predicate check (plugin switch) failed on UID 1" in line
               and "the service is down" in line for line in first.errors)

    plugin.mode = "ok"
    second = runner.run()
    assert second.failed == {}
    assert second.flags_of("wanted 1") == {"\\Flagged", "$Later"}
    assert second.flags_of("other") == {"$Later"}
    assert second.total() == 2
    assert [(e.rule, e.uids) for e in second.actions] == [("checked", (1,)), ("later", (1, 2))]

    third = runner.run()  # nothing is processed twice
    assert third.actions == [] and third.total() == 2


def test_a_hanging_predicate_is_stopped_by_its_time_limit_and_the_message_retried(rules_runner, make_message):
    plugin = Switch("hang", timeout=0.3)
    runner = rules_runner(CHECKED_RULES, plugins=[plugin], entry_points=False)
    runner.deliver([msg(make_message, "wanted 1"), msg(make_message, "wanted 2")])
    try:
        first = runner.run()
    finally:
        plugin.release.set()
    assert first.subjects("INBOX") == ["wanted 1", "wanted 2"]
    assert all(m.flags == () for m in first.messages("INBOX"))
    assert set(first.failed) == {1, 2}
    assert all("time limit of 0.3s" in error for error in first.failed.values())

    plugin.mode = "ok"
    second = runner.run()
    assert [m.flags for m in second.messages("INBOX")] == [("\\Flagged", "$Later")] * 2
    assert second.total() == 2


def test_a_predicate_that_always_fails_is_given_up_after_five_attempts(rules_runner, make_message):
    plugin = Switch("raise")
    runner = rules_runner(CHECKED_RULES, plugins=[plugin], entry_points=False)
    runner.deliver([msg(make_message, "wanted")])
    results = [runner.run() for _ in range(5)]
    assert [r.given_up for r in results] == [[], [], [], [], [1]]
    assert any("gave up on UID 1" in line for line in results[-1].errors)
    assert results[-1].subjects("INBOX") == ["wanted"]  # given up, never lost
    assert runner.run().failed == {}  # and not tried again
    assert len(plugin.tested) == 5


def test_a_predicate_whose_prefilter_raises_is_still_tested_and_the_mailbox_goes_on(rules_runner, make_message):
    def prefilter(args):
        raise RuntimeError("prefilter bug")

    plugin = Plugin("pre", [Predicate("wanted", lambda m, a: "wanted" in m.subject, needs=["header:Subject"],
                                      prefilter=prefilter)])
    runner = rules_runner("""
- name: checked
  where: [wanted]
  actions: [flag]
""", plugins=[plugin], entry_points=False)
    runner.deliver([msg(make_message, "wanted 1"), msg(make_message, "other")])
    result = runner.run()
    assert result.failed == {}
    assert result.flags_of("wanted 1") == {"\\Flagged"} and result.flags_of("other") == set()
    assert any("prefilter" in line and "prefilter bug" in line for line in result.errors)


def record_fetches(monkeypatch) -> list[list[str]]:
    """The items of every FETCH the pass sends: one-off fetches (ImapSession.fetch) and the
    predicates' pipelined batches (mailrules.imap.fetchpipe, one entry per call)."""
    import mailrules.imap_mailbox

    fetches: list[list[str]] = []
    original, pipelined = ImapSession.fetch, mailrules.imap_mailbox.pipelined_fetch

    def one_off(self, uids, items, *args, **kwargs):
        fetches.append(list(items))
        return original(self, uids, items, *args, **kwargs)

    def batches(session, uids, items, *args, **kwargs):
        fetches.append(list(items))
        return pipelined(session, uids, items, *args, **kwargs)

    monkeypatch.setattr(ImapSession, "fetch", one_off)
    monkeypatch.setattr(mailrules.imap_mailbox, "pipelined_fetch", batches)
    return fetches


def test_predicates_needing_the_body_share_one_fetch_per_batch(rules_runner, make_message, monkeypatch):
    bodies: dict[str, list[str]] = {"a": [], "b": []}

    def body_pred(name):
        def test(message, args):
            bodies[name].append(message.body_text.strip())
            assert isinstance(message.email, EmailMessage)  # parsed with the modern policy
            return True

        return Predicate(name, test, needs=["body"])

    subject = Predicate("subj", lambda m, a: m.subject.startswith("s"), needs=["header:Subject"])
    rules = """
    - name: r
      where: [a, b, subj]
      actions: [flag]
    """
    runner = rules_runner(rules, plugins=[Plugin("bodies", [body_pred("a"), body_pred("b"), subject])],
                          entry_points=False)
    runner.deliver([msg(make_message, f"s{i}", body=f"body {i}") for i in range(3)])

    fetches = record_fetches(monkeypatch)
    result = runner.run()
    assert [m.flags for m in result.messages("INBOX")] == [("\\Flagged",)] * 3
    assert bodies == {"a": ["body 0", "body 1", "body 2"], "b": ["body 0", "body 1", "body 2"]}
    assert [items for items in fetches if "BODY.PEEK[]" in items] == [["BODY.PEEK[]"]]


def test_predicates_needing_header_fields_never_fetch_the_body(rules_runner, make_message, monkeypatch):
    spam = Predicate("flagged_spam", lambda m, a: m.header("X-Spam") == ["yes"], needs=["header:X-Spam"])
    runner = rules_runner("- name: r\n  where: [flagged_spam]\n  actions: [{move: Junk}]\n",
                          plugins=[Plugin("hdr", [spam])], entry_points=False)
    runner.deliver([msg(make_message, "s", headers={"X-Spam": "yes"}), msg(make_message, "h")])
    fetches = record_fetches(monkeypatch)
    result = runner.run()
    assert result.subjects("Junk") == ["s"] and result.subjects("INBOX") == ["h"]
    assert not any("BODY.PEEK[]" in items for items in fetches)
    assert ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID X-SPAM)]"] in fetches


POKE_RULES = """
- name: poked
  match: {subject: wanted}
  actions:
    - add_keyword: $Before
    - poke
    - move: Done
"""


def test_a_raising_plugin_action_keeps_the_message_and_retries_from_that_action(rules_runner, make_message):
    plugin = Switch("raise")
    runner = rules_runner(POKE_RULES, plugins=[plugin], entry_points=False)
    runner.deliver([msg(make_message, "wanted 1"), msg(make_message, "other")])

    first = runner.run()
    assert first.subjects("INBOX") == ["wanted 1", "other"]
    assert first.flags_of("wanted 1") == {"$Before"}  # the action before it happened, the move did not
    assert first.messages("Done") == []
    assert set(first.failed) == {1}
    assert any("poke" in line and "failed" in line for line in first.errors)

    plugin.mode = "ok"
    second = runner.run()
    assert second.subjects("Done") == ["wanted 1"] and second.subjects("INBOX") == ["other"]
    assert plugin.ran == [(1,)]
    assert [e.action for e in second.actions] == ["poke", "move"]  # $Before is not applied again
    assert second.total() == 2


def test_plugin_actions_are_logged_like_builtin_ones(rules_runner, make_message):
    plugin = Switch("ok")
    runner = rules_runner(POKE_RULES, plugins=[plugin], entry_points=False)
    runner.deliver([msg(make_message, "wanted", message_id="<w1@example.org>")])
    result = runner.run()
    assert plugin.ran == [(1,)]
    lines = [line for line in result.log if "rule 'poked' account test mailbox INBOX UID 1" in line]
    assert [line.rsplit(": ", 1)[1].strip() for line in lines] == ["add_keyword $Before", "poke", "move Done"]
    assert all("Message-ID <w1@example.org>" in line for line in lines)


def test_dry_run_prints_plugin_actions_and_runs_none(rules_runner, make_message):
    plugin = Switch("ok")
    runner = rules_runner(POKE_RULES, plugins=[plugin], entry_points=False)
    runner.deliver([msg(make_message, "wanted")])
    result = runner.run(dry_run=True)
    assert plugin.ran == [] and result.actions == []
    assert re.search(r"(?m)^\s+poked\s+1\s+add_keyword \$Before, poke, move Done$", result.output)
    assert result.flags_of("wanted") == set() and result.subjects("INBOX") == ["wanted"]


def test_plugin_actions_get_the_context_and_parsed_messages(rules_runner, make_message):
    seen = []

    def run(context, uids, arg):
        for message in context.messages(uids, ["header:From", "size"]):
            seen.append((context.rule.name, context.account, context.mailbox, message.uid,
                         message.from_addresses, message.size > 0, arg))

    act = Action("note", run=run, schema={"type": "string"})
    runner = rules_runner("- name: r\n  actions: [{note: hello}]\n", plugins=[Plugin("n", actions=[act])],
                          entry_points=False)
    runner.deliver([msg(make_message, "x", from_="Zoë <zoe@example.org>")])
    runner.run()
    assert seen == [("r", "test", "INBOX", 1, ["zoe@example.org"], True, "hello")]


def test_lifecycle_hooks_are_called_and_a_failing_hook_changes_nothing(rules_runner, make_message):
    calls = []

    class Watcher:
        mailrules_plugin_name = "watcher"

        @hookimpl
        def mailrules_started(self, config):
            calls.append(("started", [r.name for r in config.rules]))

        @hookimpl
        def mailrules_action_applied(self, event):
            calls.append(("applied", event.rule, event.action, event.uids, event.message_ids, event.dry_run))

        @hookimpl
        def mailrules_stopping(self):
            calls.append(("stopping",))

    class Grumpy:
        mailrules_plugin_name = "grumpy"

        @hookimpl
        def mailrules_action_applied(self, event):
            raise RuntimeError("grumpy")

    plugin = Switch("ok")
    runner = rules_runner(POKE_RULES, plugins=[plugin, Grumpy(), Watcher()], entry_points=False)
    runner.deliver([msg(make_message, "wanted", message_id="<w@example.org>")])
    result = runner.run()
    assert calls == [
        ("started", ["poked"]),
        ("applied", "poked", "add_keyword", (1,), ("<w@example.org>",), False),
        ("applied", "poked", "poke", (1,), ("<w@example.org>",), False),
        ("applied", "poked", "move", (1,), ("<w@example.org>",), False),
        ("stopping",),
    ]
    assert result.subjects("Done") == ["wanted"]
    assert sum("plugin grumpy: hook mailrules_action_applied failed" in line for line in result.errors) == 3


def test_run_rules_reports_folders_flags_and_actions(run_rules, make_message):
    result = run_rules(
        """
        - name: dev
          match: {subject: dev}
          actions: [flag, {move: Lists/dev}]
        """,
        [msg(make_message, "dev 1"), msg(make_message, "hello")],
    )
    assert result.subjects("Lists/dev") == ["dev 1"] and result.subjects("INBOX") == ["hello"]
    assert result.folder_of("dev 1") == "Lists/dev" and result.flags_of("dev 1") == {"\\Flagged"}
    assert [(e.action, e.uids) for e in result.applied()] == [("flag", (1,)), ("move", (1,))]
    assert result.total() == 2 and result.failed == {}


@pytest.mark.parametrize("timeout", [float("inf"), float("nan"), 1e300, True])
def test_a_predicate_timeout_no_timer_can_wait_is_a_plugin_error(timeout):
    with pytest.raises(PluginError, match="timeout must be a positive, finite number of seconds"):
        registry(Plugin("p", [Predicate("p", test=lambda m, a: True, timeout=timeout)]))


@pytest.mark.parametrize("name", ["X(", "X)", 'X"', "X]"])
def test_a_predicate_needing_a_header_imap_cannot_fetch_by_name_is_a_plugin_error(name):
    with pytest.raises(PluginError, match="not a header field name"):
        registry(Plugin("p", [Predicate("p", test=lambda m, a: True, needs=[f"header:{name}"])]))
