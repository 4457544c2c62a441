"""The notify plugin (pipe, webhook) in rules against the private Dovecot and a local HTTP server."""

from __future__ import annotations

import base64
import json
import os
import re
import subprocess
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from mailrules.config import ConfigError
from mailrules.testing.require import REQUIRE_PLUGINS, import_or_skip

# skipped without the plugin, a failure when MAILRULES_REQUIRE_PLUGINS is set (CI sets it)
import_or_skip("mailrules_notify", "pip install -e plugins/notify", REQUIRE_PLUGINS)

PY = sys.executable


class Receiver:
    """A webhook receiver on 127.0.0.1: records every POST; answers `status`, or hangs while `hang` is set."""

    def __init__(self) -> None:
        self.posts: list[tuple[dict, dict]] = []
        self.status = 200
        self.hang = threading.Event()
        self.release = threading.Event()
        receiver = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self):  # noqa: N802 - http.server's naming
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                if receiver.hang.is_set():
                    receiver.release.wait(30)
                    return
                receiver.posts.append((dict(self.headers), json.loads(body)))
                self.send_response(receiver.status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.release.set()
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def receiver(monkeypatch):
    for name in ("http_proxy", "HTTP_PROXY", "https_proxy", "HTTPS_PROXY", "all_proxy", "ALL_PROXY"):
        monkeypatch.delenv(name, raising=False)
    server = Receiver()
    yield server
    server.close()


# --------------------------------------------------------------------------- webhook


def test_webhook_posts_a_json_summary_of_each_message(receiver, run_rules, make_message):
    result = run_rules(
        f"""
        - name: boss
          match: {{from: boss@example.org}}
          actions:
            - webhook: {{url: "{receiver.url}", headers: {{X-Token: secret}}}}
            - flag
        """,
        [
            make_message(subject="Quarterly numbers", from_="The Boss <boss@example.org>", to="me@example.org",
                         message_id="<q1@example.org>"),
            make_message(subject="newsletter", from_="news@example.org"),
            make_message(subject="Ünïcode", from_="boss@example.org", message_id="<q2@example.org>"),
        ],
    )
    assert result.failed == {}
    summaries = [body for _headers, body in receiver.posts]
    assert summaries[0] == {
        "rule": "boss", "account": "test", "mailbox": "INBOX", "uid": 1, "message_id": "<q1@example.org>",
        "from": "The Boss <boss@example.org>", "to": "me@example.org", "subject": "Quarterly numbers",
        "date": summaries[0]["date"],
    }
    assert summaries[0]["date"]
    assert (summaries[1]["uid"], summaries[1]["subject"]) == (3, "Ünïcode")
    assert len(summaries) == 2
    headers = receiver.posts[0][0]
    assert headers["Content-Type"] == "application/json" and headers["X-Token"] == "secret"
    assert result.flags_of("Quarterly numbers") == {"\\Flagged"}


def test_webhook_error_status_fails_the_action_and_the_message_is_retried(receiver, rules_runner, make_message):
    runner = rules_runner(f"""
    - name: hook
      actions:
        - webhook: {{url: "{receiver.url}"}}
        - {{move: Notified}}
    """)
    runner.deliver([make_message(subject="one")])
    receiver.status = 503
    first = runner.run()
    assert first.subjects("INBOX") == ["one"] and first.subjects("Notified") == []
    assert "answered 503" in first.failed[1]

    receiver.status = 200
    second = runner.run()
    assert second.subjects("Notified") == ["one"] and second.total() == 1
    assert [body["subject"] for _h, body in receiver.posts] == ["one", "one"]  # refused once, then accepted


def test_webhook_credentials_never_reach_the_log(receiver, run_rules, make_message):
    url = receiver.url.replace("http://", "http://user:pw@") + "?token=tok"
    result = run_rules(
        f"- name: hook\n  actions: [{{webhook: {{url: '{url}', headers: {{Authorization: Bearer abc}}}}}}]\n",
        [make_message(subject="one")],
    )
    assert result.failed == {} and len(receiver.posts) == 1
    assert receiver.posts[0][0]["Authorization"] == "Bearer abc"
    logged = "\n".join(result.log)
    assert f"webhook {receiver.url}" in logged
    assert not any(secret in logged for secret in ("pw", "tok", "abc"))


def test_webhook_url_credentials_become_basic_authentication(receiver, run_rules, make_message):
    url = receiver.url.replace("http://", "http://user:p%40ss@")
    result = run_rules(f"- name: hook\n  actions: [{{webhook: {{url: '{url}'}}}}]\n", [make_message(subject="one")])
    assert result.failed == {}
    assert receiver.posts[0][0]["Authorization"] == "Basic " + base64.b64encode(b"user:p@ss").decode()
    assert "p%40ss" not in "\n".join(result.log)


def test_webhook_timeout_fails_the_action_without_losing_the_message(receiver, run_rules, make_message):
    receiver.hang.set()
    result = run_rules(
        f"- name: hook\n  actions: [{{webhook: {{url: '{receiver.url}', timeout: 0.3}}}}, {{move: Notified}}]\n",
        [make_message(subject="one")],
    )
    assert result.subjects("INBOX") == ["one"] and result.subjects("Notified") == []
    assert "timed out" in result.failed[1]


def test_webhook_bad_url_is_a_load_time_error_with_the_line(rules_runner):
    with pytest.raises(ConfigError) as info:
        rules_runner("- name: hook\n  actions:\n    - webhook:\n        url: ftp://example.org/x\n")
    error = info.value
    lines = Path(error.location.file).read_text().splitlines()
    assert "url: ftp://example.org/x" in lines[error.location.line - 1]
    assert "webhook: url: 'ftp://example.org/x' does not match" in error.message


def test_dry_run_posts_nothing(receiver, run_rules, make_message):
    result = run_rules(f"- name: hook\n  actions: [{{webhook: {{url: '{receiver.url}'}}}}]\n",
                       [make_message(subject="one")], dry_run=True)
    assert receiver.posts == []
    assert re.search(r"(?m)^\s+hook\s+1\s+webhook ", result.output)


# --------------------------------------------------------------------------- pipe

RECORD = """
import os, sys, pathlib
out = pathlib.Path(sys.argv[1])
out.mkdir(exist_ok=True)
uid = os.environ["MAILRULES_UID"]
(out / (uid + ".eml")).write_bytes(sys.stdin.buffer.read())
(out / (uid + ".env")).write_text("\\n".join(
    os.environ[k] for k in ("MAILRULES_RULE", "MAILRULES_ACCOUNT", "MAILRULES_MAILBOX", "MAILRULES_MESSAGE_ID")))
"""


def test_pipe_gives_each_message_to_the_command_on_stdin(tmp_path, run_rules, make_message):
    script, out = tmp_path / "record.py", tmp_path / "out"
    script.write_text(RECORD)
    messages = [make_message(subject="a", message_id="<a@example.org>"), make_message(subject="b")]
    result = run_rules(
        f"- name: archive\n  actions: [{{pipe: {{command: ['{PY}', '{script}', '{out}']}}}}]\n", messages
    )
    assert result.failed == {}
    assert (out / "1.eml").read_bytes() == result.find("a")[1].raw == messages[0]
    assert (out / "2.eml").read_bytes() == messages[1]
    assert (out / "1.env").read_text().split("\n") == ["archive", "test", "INBOX", "<a@example.org>"]


DUMP_ENV = """
import json, os, sys
sys.stdin.buffer.read()
with open(sys.argv[1], "w") as fh:
    json.dump(dict(os.environ), fh)
"""


def test_pipe_child_gets_no_account_secret_in_its_environment(tmp_path, rules_runner, make_message, monkeypatch):
    from mailrules.secrets import protect_accounts

    script, out = tmp_path / "dump_env.py", tmp_path / "env.json"
    script.write_text(DUMP_ENV)
    runner = rules_runner(f"- name: piped\n  actions: [{{pipe: {{command: ['{PY}', '{script}', '{out}']}}}}]\n")
    monkeypatch.setenv("NOTIFY_TEST_LOGIN_PASSWORD", runner.user.password)  # this account's, by value
    monkeypatch.setenv("NOTIFY_TEST_OTHER_ACCOUNT_PW", "other-account-" + os.urandom(4).hex())
    monkeypatch.setenv("NOTIFY_TEST_ORDINARY", "kept")
    other = runner.config.accounts[next(iter(runner.config.accounts))]
    protect_accounts([type(other)(name="other", host="127.0.0.1", username="x",
                                  auth=type(other.auth)("password_env", "NOTIFY_TEST_OTHER_ACCOUNT_PW"))])
    runner.deliver([make_message(subject="a")])
    assert runner.run().failed == {}
    env = json.loads(out.read_text())
    assert env["NOTIFY_TEST_ORDINARY"] == "kept" and env["MAILRULES_RULE"] == "piped"
    assert "NOTIFY_TEST_OTHER_ACCOUNT_PW" not in env and "NOTIFY_TEST_LOGIN_PASSWORD" not in env
    assert not any(runner.user.password in value for value in env.values())


def test_pipe_non_zero_exit_fails_the_action_and_the_message_is_retried(tmp_path, rules_runner, make_message):
    flag = tmp_path / "fail"
    flag.write_text("")
    script = tmp_path / "maybe_fail.py"
    script.write_text(f"import sys, os\nsys.stdin.read()\nif os.path.exists({str(flag)!r}):\n"
                      "    sys.exit('disk full')\n")
    runner = rules_runner(f"""
    - name: piped
      actions:
        - pipe: {{command: ['{PY}', '{script}']}}
        - {{move: Piped}}
    """)
    runner.deliver([make_message(subject="one")])
    first = runner.run()
    assert first.subjects("INBOX") == ["one"]
    assert "exited with status 1: disk full" in first.failed[1]

    flag.unlink()
    second = runner.run()
    assert second.subjects("Piped") == ["one"] and second.total() == 1


def test_pipe_timeout_kills_the_command_and_its_children(tmp_path, run_rules, make_message):
    pids = tmp_path / "pids"
    script = tmp_path / "slow.sh"
    script.write_text(f"#!/bin/sh\necho $$ > {pids}\nsleep 300 &\necho $! >> {pids}\nwait\n")
    script.chmod(0o755)
    result = run_rules(f"- name: slow\n  actions: [{{pipe: {{command: ['{script}'], timeout: 1}}}}]\n",
                       [make_message(subject="one")])
    assert "did not finish within 1s (killed)" in result.failed[1]
    assert result.subjects("INBOX") == ["one"]
    deadline = time.monotonic() + 10
    remaining = [int(p) for p in pids.read_text().split()]
    while remaining and time.monotonic() < deadline:
        remaining = [p for p in remaining if _alive(p)]
        time.sleep(0.05)
    assert remaining == []


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    try:  # a zombie is dead for our purpose
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


def test_pipe_unknown_program_is_a_load_time_error(rules_runner):
    with pytest.raises(ConfigError, match="pipe: program 'no-such-program-xyz' not found"):
        rules_runner("- name: p\n  actions: [{pipe: {command: [no-such-program-xyz]}}]\n")


def test_pipe_command_must_be_an_argument_list_not_a_shell_string(rules_runner):
    with pytest.raises(ConfigError, match="pipe: command: 'cat > /tmp/x' is not of type 'array'"):
        rules_runner("- name: p\n  actions: [{pipe: {command: 'cat > /tmp/x'}}]\n")


def test_the_plugin_is_listed_by_mailrules_plugins():
    out = subprocess.run([sys.executable, "-m", "mailrules.cli", "plugins"], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert "notify (mailrules-notify " in out
    assert {tuple(line.split()[:2]) for line in out.splitlines()} >= {("action", "pipe"), ("action", "webhook")}


# --------------------------------------------------------------------------- offline (mailrules test, tests:)

OFFLINE_CASE = """
tests:
  - name: a message is flagged
    message: {headers: {Subject: one}, body: hi}
    expect: {flags: ['\\Flagged']}
"""


def test_mailrules_test_reports_a_webhook_as_would_run_and_posts_nothing(receiver, rules_runner, make_message):
    runner = rules_runner(f"- name: hook\n  actions: [{{webhook: {{url: '{receiver.url}'}}}}, flag]\n")
    result = runner.test_offline([make_message(subject="one")])
    assert receiver.posts == [] and result.code == 0, result.err
    assert f"would run: webhook {receiver.url}" in result.out
    assert runner.test_offline([make_message(subject="one")], as_json=True).json()[0]["would_run"] == [
        {"rule": "hook", "action": f"webhook {receiver.url}"}]


def test_a_tests_case_reports_a_webhook_as_would_run_and_posts_nothing(receiver, rules_runner):
    runner = rules_runner(f"- name: hook\n  actions: [{{webhook: {{url: '{receiver.url}'}}}}, flag]\n",
                          config_extra=OFFLINE_CASE)
    result = runner.test_offline()
    assert receiver.posts == [] and result.code == 0, result.out
    assert f"PASS  a message is flagged  (would run, not offline: webhook {receiver.url} (rule 'hook'))" in result.out


def test_a_webhook_posts_in_the_real_run_after_the_offline_ones_did_not(receiver, rules_runner, make_message):
    runner = rules_runner(f"- name: hook\n  actions: [{{webhook: {{url: '{receiver.url}'}}}}]\n")
    runner.test_offline([make_message(subject="one")])
    runner.deliver([make_message(subject="one")])
    runner.run(dry_run=True)
    assert receiver.posts == []
    runner.run()
    assert len(receiver.posts) == 1


def test_mailrules_test_and_tests_cases_never_run_a_pipe_command(tmp_path, rules_runner, make_message):
    out = tmp_path / "piped.eml"
    runner = rules_runner(f"- name: p\n  actions: [{{pipe: {{command: [sh, -c, 'cat > {out}']}}}}, flag]\n",
                          config_extra=OFFLINE_CASE)
    messages = runner.test_offline([make_message(subject="one")])
    cases = runner.test_offline()
    runner.deliver([make_message(subject="one")])
    dry = runner.run(dry_run=True)
    assert not out.exists()
    assert "would run: pipe sh -c" in messages.out and "would run, not offline: pipe sh -c" in cases.out
    assert re.search(r"(?m)^\s+p\s+1\s+pipe sh -c", dry.output)
    runner.run()
    assert out.exists()


def test_a_pipe_program_given_as_a_relative_path_is_relative_to_the_rules_file(tmp_path, rules_runner):
    directory = tmp_path / "rules"
    (directory / "bin").mkdir(parents=True)
    script = directory / "bin" / "store"
    script.write_text("#!/bin/sh\ncat >/dev/null\n")
    script.chmod(0o755)
    runner = rules_runner("- name: p\n  actions: [{pipe: {command: [bin/store]}}]\n", directory=directory)
    assert runner.config.rules[0].actions[0].arg.command[0] == str(script)
