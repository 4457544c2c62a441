"""The spamassassin plugin against a real spamd (started on loopback) and the private Dovecot.

Needs ``spamd`` (Debian: ``apt-get install spamassassin``) and the plugin installed
(``pip install -e plugins/spamassassin``). Without them these tests are skipped, unless
MAILRULES_REQUIRE_SPAMD or (for the plugin) MAILRULES_REQUIRE_PLUGINS is set (CI sets both),
which makes them fail.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

from mailrules.config import ConfigError
from mailrules.testing.require import REQUIRE_PLUGINS, REQUIRE_SPAMD, import_or_skip, missing

mailrules_spamassassin = import_or_skip(
    "mailrules_spamassassin", "pip install -e plugins/spamassassin", REQUIRE_SPAMD, REQUIRE_PLUGINS
)
from mailrules_spamassassin.spamc import SpamdClient, SpamdError, parse_address  # noqa: E402
from mailrules_spamassassin.testing import GTUBE, SpamdServer, find_spamd  # noqa: E402


@pytest.fixture(scope="module")
def spamd():
    if find_spamd() is None:
        missing("spamd is not installed (Debian: apt-get install spamassassin)", REQUIRE_SPAMD)
    directory = Path(tempfile.mkdtemp(prefix="mailrules-spamd-"))
    server = SpamdServer(directory).start()
    try:
        yield server
    finally:
        server.stop()
        shutil.rmtree(directory, ignore_errors=True)


@pytest.fixture
def closed_port():
    """An address where nothing listens."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    return f"127.0.0.1:{port}"


def spam_message(make_message, subject="buy now"):
    return make_message(subject=subject, body=f"Cheap!\n{GTUBE}\n")


# --------------------------------------------------------------------------- the spamc client


def test_client_scores_gtube_as_spam_with_its_symbols(spamd, make_message):
    result = SpamdClient(spamd.address).symbols(spam_message(make_message))
    assert result.is_spam and result.score >= 1000
    assert "GTUBE" in result.symbols


def test_client_scores_an_ordinary_message_as_ham(spamd, make_message):
    result = SpamdClient(spamd.address).check(make_message(subject="lunch?", body="See you at noon."))
    assert not result.is_spam and result.score < result.threshold


def test_client_reports_an_unreachable_spamd(closed_port):
    with pytest.raises(SpamdError, match=f"cannot reach spamd at {closed_port}"):
        SpamdClient(closed_port, timeout=2).check(b"Subject: x\r\n\r\nx\r\n")


def test_client_times_out_on_a_silent_server():
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(1)
        address = f"127.0.0.1:{listener.getsockname()[1]}"
        with pytest.raises(SpamdError, match="did not answer CHECK within 0.3s"):
            SpamdClient(address, timeout=0.3).check(b"Subject: x\r\n\r\nx\r\n")


def test_spamd_addresses():
    assert parse_address("localhost") == ("inet", ("localhost", 783))
    assert parse_address("127.0.0.1:7830") == ("inet", ("127.0.0.1", 7830))
    assert parse_address("[::1]:7830") == ("inet", ("::1", 7830))
    assert parse_address("/run/spamd.sock") == ("unix", "/run/spamd.sock")
    with pytest.raises(ValueError, match="port"):
        parse_address("host:http")


# --------------------------------------------------------------------------- in rules, against Dovecot


def test_spam_predicate_moves_spam_to_junk(spamd, run_rules, make_message):
    result = run_rules(
        f"""
        - name: junk
          where: [{{spam: {{min_score: 5, spamd: "{spamd.address}"}}}}]
          actions: [{{move: Junk}}]
        """,
        [spam_message(make_message, "buy now"), make_message(subject="lunch?", body="See you at noon.")],
    )
    assert result.subjects("Junk") == ["buy now"]
    assert result.subjects("INBOX") == ["lunch?"]
    assert result.failed == {} and result.total() == 2


def test_min_score_is_compared_with_the_score(spamd, run_rules, make_message):
    rules = f"""
    - name: very spammy
      where: [{{spam: {{min_score: 2000, spamd: "{spamd.address}"}}}}]
      actions: [{{add_keyword: $VerySpammy}}]
    - name: spammy
      where: [{{spam: {{min_score: 1000, spamd: "{spamd.address}"}}}}]
      actions: [{{add_keyword: $Spammy}}]
    """
    result = run_rules(rules, [spam_message(make_message)])
    assert result.flags_of("buy now") == {"$Spammy"}


def test_bare_spam_uses_spamds_own_verdict(spamd, run_rules, make_message, monkeypatch):
    monkeypatch.setenv("MAILRULES_SPAMD", spamd.address)
    result = run_rules(
        "- name: junk\n  where: [spam]\n  actions: [{add_keyword: $Junk}]\n",
        [spam_message(make_message), make_message(subject="hello")],
    )
    assert result.flags_of("buy now") == {"$Junk"} and result.flags_of("hello") == set()


def test_when_spamd_is_down_the_message_stays_and_is_retried(spamd, rules_runner, make_message, monkeypatch,
                                                             closed_port):
    runner = rules_runner("- name: junk\n  where: [{spam: {min_score: 5, timeout: 2}}]\n  actions: [{move: Junk}]\n")
    runner.deliver([spam_message(make_message)])
    monkeypatch.setenv("MAILRULES_SPAMD", closed_port)
    first = runner.run()
    assert first.subjects("INBOX") == ["buy now"] and first.subjects("Junk") == []
    assert list(first.failed) == [1]
    assert any("predicate spam (plugin spamassassin) failed on UID 1" in line and "cannot reach spamd" in line
               for line in first.errors)

    monkeypatch.setenv("MAILRULES_SPAMD", spamd.address)
    second = runner.run()
    assert second.subjects("Junk") == ["buy now"] and second.subjects("INBOX") == []
    assert second.failed == {} and second.total() == 1


def test_learn_spam_and_learn_ham_teach_spamds_bayes_database(spamd, run_rules, make_message):
    before = spamd.learned()
    rules = f"""
    - name: reported spam
      match: {{subject: report}}
      actions: [{{learn_spam: {{spamd: "{spamd.address}"}}}}]
    - name: reported ham
      match: {{subject: fine}}
      actions: [{{learn_ham: {{spamd: "{spamd.address}"}}}}]
    """
    result = run_rules(rules, [
        make_message(subject="report 1", body="cheap pills one"),
        make_message(subject="report 2", body="cheap pills two"),
        make_message(subject="fine", body="the minutes of the meeting"),
    ])
    assert result.failed == {}
    assert [(e.action, e.uids) for e in result.actions] == [("learn_spam", (1, 2)), ("learn_ham", (3,))]
    spam, ham = spamd.learned()
    assert (spam - before[0], ham - before[1]) == (2, 1)


def test_learning_is_never_done_offline_nor_in_a_dry_run_and_is_reported(spamd, rules_runner, make_message):
    before = spamd.learned()
    runner = rules_runner(f"- name: reported\n  actions: [{{learn_spam: {{spamd: '{spamd.address}'}}}}, seen]\n")
    offline = runner.test_offline([make_message(subject="report", body="cheap pills")], as_json=True).json()
    runner.deliver([make_message(subject="report", body="cheap pills")])
    dry = runner.run(dry_run=True)
    assert spamd.learned() == before
    assert offline[0]["would_run"][0]["action"].startswith("learn_spam") and offline[0]["flags"] == ["\\Seen"]
    assert "learn_spam" in dry.output


def test_bad_arguments_are_load_time_errors_with_the_line(rules_runner):
    with pytest.raises(ConfigError) as info:
        rules_runner("- name: junk\n  where:\n    - spam:\n        min_score: high\n  actions: [flag]\n")
    error = info.value
    assert error.location.file.endswith("rules.yaml")
    lines = Path(error.location.file).read_text().splitlines()
    assert "min_score: high" in lines[error.location.line - 1]
    assert "'high' is not of type 'number'" in error.message

    with pytest.raises(ConfigError, match="learn_spam: spamd address 'localhost:x': the port must be a number"):
        rules_runner("- name: junk\n  actions: [{learn_spam: {spamd: 'localhost:x'}}]\n")
    with pytest.raises(ConfigError, match="unknown key 'min_scor'"):
        rules_runner("- name: junk\n  where: [{spam: {min_scor: 5}}]\n  actions: [flag]\n")


def test_the_plugin_is_listed_by_mailrules_plugins():
    out = subprocess.run([sys.executable, "-m", "mailrules.cli", "plugins"], capture_output=True, text=True,
                         timeout=60, check=True).stdout
    assert "spamassassin (mailrules-spamassassin " in out
    assert any(line.split()[:2] == ["predicate", "spam"] for line in out.splitlines())
    assert any(line.split()[:2] == ["action", "learn_ham"] for line in out.splitlines())
