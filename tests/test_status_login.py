"""`mailrules status` about sweeps, and `mailrules login`: what they say must be true and stable.

- status names the rules of a schedule, not its internal key (``every:3600``);
- the next sweep is computed from the last recorded one, so that it does not move forward on
  every call while no daemon runs;
- a daemon start records no "last sweep" when nothing was swept;
- `login` checks the keyring backend before asking for a password.
"""

from __future__ import annotations

import datetime as dt
import textwrap
import time

import keyring
import keyring.backends.fail
import pytest
from helpers import run_cli

from mailrules.model import Account, Auth

CONFIG = """\
version: 1
accounts:
  me:
    host: 127.0.0.1
    port: 1
    tls: none
    username: me
    password_env: MAILRULES_TEST_UNUSED
rules:
"""

HOURLY = """\
- name: old mail
  schedule: {every: 1h}
  match: {older_than: 30d}
  actions: [flag]
- name: old lists
  schedule: {every: 1h}
  match: {from: lists@example.org}
  actions: [seen]
"""


def _config(tmp_path, rules: str = HOURLY):
    path = tmp_path / "rules.yaml"
    path.write_text(CONFIG + textwrap.indent(rules, "  "))
    return path


def _status(path, state) -> str:
    result = run_cli("-c", path, "--state", state, "status")
    assert result.code == 0, result.out + result.err
    return result.out


def test_status_names_the_rules_of_a_schedule_not_its_key(tmp_path):
    out = _status(_config(tmp_path), tmp_path / "state")
    assert "every:3600" not in out, out
    assert "'old mail', 'old lists'" in out and "every 1h" in out, out


def test_status_without_a_daemon_shows_the_same_next_sweep_on_every_call(tmp_path):
    from mailrules.scheduler import record_sweep
    from mailrules.state import StateStore

    path, state = _config(tmp_path), tmp_path / "state"
    store = StateStore(state)
    last = dt.datetime.now(dt.UTC).replace(microsecond=0) - dt.timedelta(minutes=10)
    record_sweep(store, "me", "every:3600", last)
    store.close()
    first = _status(path, state)
    time.sleep(1.1)  # the old code showed "now + 1 h", one second later each call
    assert _status(path, state) == first
    expected = (last + dt.timedelta(hours=1)).astimezone().isoformat(timespec="seconds")
    assert expected in first, first


def test_status_before_any_daemon_run_does_not_invent_a_next_sweep_time(tmp_path):
    path = _config(tmp_path)
    first = _status(path, tmp_path / "state")
    time.sleep(1.1)
    assert _status(path, tmp_path / "state") == first
    assert "first sweep one interval after the daemon starts" in first, first


def test_a_daemon_start_records_no_last_sweep_when_nothing_was_swept(dovecot, imap_user, tmp_path):
    from mailrules.testing.daemon import DaemonHarness

    daemon = DaemonHarness(dovecot, imap_user, tmp_path / "d", rules=textwrap.indent(HOURLY, "  "))
    try:
        daemon.start()
        daemon.wait_for_log("watching with IDLE")
        assert daemon.stop() == 0
        out = daemon.run("status").stdout
    finally:
        daemon.close()
    assert "last sweep of account t: never" in out, out


@pytest.fixture
def no_keyring_backend():
    previous = keyring.get_keyring()
    keyring.set_keyring(keyring.backends.fail.Keyring())
    try:
        yield
    finally:
        keyring.set_keyring(previous)


class _Out:
    def __init__(self) -> None:
        self.text = ""

    def write(self, text: str) -> int:
        self.text += text
        return len(text)

    def flush(self) -> None:
        pass


def test_login_says_there_is_no_keyring_backend_before_asking_for_the_password(no_keyring_backend):
    from mailrules.secrets import login_command

    asked: list[str] = []
    account = Account(name="work", host="imap.example.org", username="me", auth=Auth("keyring", True))
    out = _Out()
    code = login_command(account, prompt=lambda text: asked.append(text) or "pw", out=out)
    assert code == 1
    assert asked == []
    assert "keyring" in out.text and "nothing was asked" in out.text, out.text
