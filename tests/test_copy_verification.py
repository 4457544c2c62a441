"""A copy or move that a crash or a dropped connection interrupted is verified by content.

Resent newsletters and list copies share one Message-ID, and some mail has none: an
interrupted copy is checked by comparing what reached the destination since the attempt
began with the source messages by a digest of their whole content, counting
multiplicities. A move never removes a source whose copy is not proven; a copy is never
repeated for a message that arrived. Every test counts the messages by content
(`message_contents`) over all folders of both accounts.
"""

from __future__ import annotations

import collections
import hashlib
import re
import time

import pytest
from helpers import Acct, Lab, connected, write_config

from mailrules.engine import Outcome
from mailrules.imap.session import ImapSession
from mailrules.testing.daemon import DaemonHarness, message_contents, wait_until
from mailrules.testing.messages import make_message
from mailrules.testing.proxy import TcpProxy

SHARED = "<weekly@news.example>"


class Crash(BaseException):
    """The process dies here (not an Exception: nothing in mailrules catches it)."""


def ok(outcomes) -> bool:
    return all(isinstance(o, Outcome) and o.ok for o in outcomes)


def newsletters(n: int) -> list[bytes]:
    """`n` different messages: one in three has no Message-ID, the others share one."""
    return [
        make_message(subject=f"news {i}", body=f"issue {i}", message_id=None if i % 3 == 0 else SHARED,
                     headers={"Message-ID": None} if i % 3 == 0 else None)
        for i in range(n)
    ]


def digests(raws) -> collections.Counter[str]:
    return collections.Counter(hashlib.sha256(raw).hexdigest() for raw in raws)


def contents(server, user, folder: str | None = None) -> collections.Counter[str]:
    """The user's messages by content: of `folder`, or of every folder."""
    total: collections.Counter[str] = collections.Counter()
    with connected(server, user) as client:
        names = [folder] if folder else [n for f, _s, n in client.list_folders() if b"\\Noselect" not in f]
        for name in names:
            total += message_contents(client, name)
    return total


@pytest.fixture
def two(dovecot, tmp_path, monkeypatch):
    """A lab whose rules file also has account 'other' (another user on the same server)."""
    lab = Lab(dovecot, dovecot.add_user(), tmp_path, monkeypatch)
    lab.other = dovecot.add_user()
    return lab


def rules_to(lab: Lab, action: str, *, other_port: int | None = None, timeout: float | None = None) -> None:
    lab.config = write_config(
        lab.tmp, lab.monkeypatch, lab.server, lab.user, f"""
        - name: away
          actions: [{{{action}}}]
        """,
        others={"other": Acct(lab.other, other_port or lab.server.port, timeout=timeout)},
    )  # fmt: skip


def crash_after_appends(monkeypatch, count: int) -> None:
    """The process dies right after the destination confirmed its `count`-th APPEND."""
    real = ImapSession.append
    done = []

    def append_then_crash(self, *args, **kwargs):
        result = real(self, *args, **kwargs)
        done.append(result)
        if len(done) == count:
            raise Crash()
        return result

    monkeypatch.setattr(ImapSession, "append", append_then_crash)


def crash_mid_expunge(monkeypatch) -> None:
    """The process dies after the server expunged half of the moved sources."""
    real = ImapSession.uid_expunge

    def half_then_crash(self, uids):
        real(self, type(uids)(list(uids)[: len(uids) // 2]))
        raise Crash()

    monkeypatch.setattr(ImapSession, "uid_expunge", half_then_crash)


# ----------------------------------------------------------------------------- crashes, across accounts


@pytest.mark.parametrize("moment", ["after 1 append", "after 8 appends", "after the last append",
                                    "mid expunge"])
def test_a_cross_account_move_interrupted_by_a_crash_neither_loses_nor_doubles_a_message(
    two, monkeypatch, moment
):
    lab = two
    raws = newsletters(20)
    lab.deliver(*raws)
    rules_to(lab, "move: other:Archive")
    with pytest.MonkeyPatch.context() as patch, pytest.raises(Crash):
        if moment == "mid expunge":
            crash_mid_expunge(patch)
        else:
            crash_after_appends(patch, {"after 1 append": 1, "after 8 appends": 8}.get(moment, 20))
        lab.engine()
    assert ok(lab.engine())
    assert contents(lab.server, lab.user) == collections.Counter()
    assert contents(lab.server, lab.other) == digests(raws)  # each exactly once, none lost
    assert ok(lab.engine())
    assert contents(lab.server, lab.other) == digests(raws)


def test_a_cross_account_copy_interrupted_by_a_crash_copies_each_message_exactly_once(two, monkeypatch):
    lab = two
    raws = newsletters(8)
    lab.deliver(*raws)
    rules_to(lab, "copy: other:Archive")
    with pytest.MonkeyPatch.context() as patch, pytest.raises(Crash):
        crash_after_appends(patch, 3)
        lab.engine()
    assert ok(lab.engine())
    assert contents(lab.server, lab.other, "Archive") == digests(raws)
    assert contents(lab.server, lab.user, "INBOX") == digests(raws)


def test_a_crashed_cross_account_move_of_identical_messages_keeps_both(two, monkeypatch):
    """Two byte-identical messages (delivered twice): one arrival proves one copy, not two."""
    lab = two
    raw, *others = newsletters(4)
    raws = [raw, raw, *others]
    lab.deliver(*raws)
    rules_to(lab, "move: other:Archive")
    with pytest.MonkeyPatch.context() as patch, pytest.raises(Crash):
        crash_after_appends(patch, 1)
        lab.engine()
    assert ok(lab.engine())
    assert contents(lab.server, lab.user) == collections.Counter()
    assert contents(lab.server, lab.other) == digests(raws)


# ----------------------------------------------------------------------------- dropped destination


def kick_before_append(monkeypatch, server, user, count: int) -> None:
    """The destination server drops the account's connections before our `count`-th APPEND."""
    real = ImapSession.append
    calls = []

    def kick_then_append(self, *args, **kwargs):
        calls.append(1)
        if len(calls) == count:
            assert server.kick(user)
            time.sleep(0.2)  # the BYE and the close arrive a moment later
        return real(self, *args, **kwargs)

    monkeypatch.setattr(ImapSession, "append", kick_then_append)


def test_a_cross_account_move_whose_destination_is_dropped_mid_run_neither_loses_nor_doubles(
    two, monkeypatch
):
    lab = two
    raws = newsletters(20)
    lab.deliver(*raws)
    rules_to(lab, "move: other:Archive")
    with pytest.MonkeyPatch.context() as patch:
        kick_before_append(patch, lab.server, lab.other, 8)
        assert not ok(lab.engine())
    total = contents(lab.server, lab.user) + contents(lab.server, lab.other)
    assert total == digests(raws)  # nothing lost or doubled by the failed run
    assert ok(lab.engine())
    assert contents(lab.server, lab.user) == collections.Counter()
    assert contents(lab.server, lab.other) == digests(raws)


def lose_append_confirmation(line: bytes) -> bytes:
    """The destination stores the message, but its OK never reaches us (the link died)."""
    if re.match(rb"\S+ OK (\[APPENDUID [^\]]*\] )?Append completed", line):
        return b""
    return line


@pytest.mark.parametrize("verb", ["copy", "move"])
def test_an_append_whose_confirmation_was_lost_is_verified_by_content(two, verb):
    """Only the one message that was stored unconfirmed counts as copied: the others sharing
    its Message-ID (or having none) are copied on the retry, each once."""
    lab = two
    raws = newsletters(5)
    lab.deliver(*raws)
    with TcpProxy(lab.server.host, lab.server.port, rewrite_server=lose_append_confirmation) as proxy:
        rules_to(lab, f"{verb}: other:Invoices", other_port=proxy.port, timeout=1.0)
        assert not ok(lab.engine())
    assert sum(contents(lab.server, lab.other).values()) == 1  # stored, never confirmed
    assert contents(lab.server, lab.user) == digests(raws)  # so every source stays
    rules_to(lab, f"{verb}: other:Invoices")
    assert ok(lab.engine())
    assert contents(lab.server, lab.other) == digests(raws)
    assert contents(lab.server, lab.user) == (digests(raws) if verb == "copy" else collections.Counter())
    assert ok(lab.engine())
    assert contents(lab.server, lab.other) == digests(raws)


# ----------------------------------------------------------------------------- within one account


def copy_half_then_crash(monkeypatch) -> None:
    """The process dies between two COPY commands of one batch (the first half was copied)."""
    real = ImapSession.copy

    def half(self, uids, dest, **kwargs):
        real(self, type(uids)(list(uids)[: len(uids) // 2]), dest, **kwargs)
        raise Crash()

    monkeypatch.setattr(ImapSession, "copy", half)


def test_a_copy_interrupted_between_two_copy_commands_copies_each_message_once(lab, monkeypatch):
    raws = newsletters(10)
    lab.deliver(*raws)
    lab.write("""
        - name: keep
          actions: [{copy: Archive}]
    """)
    with pytest.MonkeyPatch.context() as patch, pytest.raises(Crash):
        copy_half_then_crash(patch)
        lab.engine()
    assert ok(lab.engine())
    assert contents(lab.server, lab.user, "Archive") == digests(raws)
    assert contents(lab.server, lab.user, "INBOX") == digests(raws)


def test_a_move_without_move_capability_interrupted_between_two_copy_commands_loses_nothing(
    dovecot_factory, tmp_path, monkeypatch
):
    server = dovecot_factory(capabilities="IMAP4rev1 LITERAL+ UIDPLUS IDLE")
    lab = Lab(server, server.add_user(), tmp_path, monkeypatch)
    raws = newsletters(10)
    lab.deliver(*raws)
    lab.write("""
        - name: file
          actions: [{move: Done}]
    """)
    with pytest.MonkeyPatch.context() as patch, pytest.raises(Crash):
        copy_half_then_crash(patch)
        lab.engine()
    assert ok(lab.engine())
    assert contents(lab.server, lab.user) == digests(raws)
    assert contents(lab.server, lab.user, "Done") == digests(raws)


# ----------------------------------------------------------------------------- SIGKILL


N_KILLED = 150


def two_account_config(server, me, other) -> str:
    return (
        "version: 1\naccounts:\n"
        f"  me:\n    host: {server.host}\n    port: {server.port}\n    tls: none\n"
        f"    username: {me.name}\n    password_env: MAILRULES_TEST_PASSWORD\n    watch: [INBOX]\n"
        f"    timeout: 5\n"
        f"  other:\n    host: {server.host}\n    port: {server.port}\n    tls: none\n"
        f"    username: {other.name}\n    password_env: MAILRULES_TEST_OTHER_PASSWORD\n    timeout: 5\n"
        "rules:\n  - name: away\n    actions: [{move: 'other:Archive'}]\n"
    )


def test_sigkill_at_several_moments_of_a_cross_account_move_keeps_every_message(dovecot, tmp_path):
    """150 messages, two in three sharing one Message-ID, the others without one, moved to another
    account by `run --once`, killed with SIGKILL three times while appending, then run to
    the end: the multiset of message contents over both accounts is unchanged."""
    me, other = dovecot.add_user(), dovecot.add_user()
    raws = newsletters(N_KILLED)
    dovecot.deliver_files(me, "INBOX", raws)
    expected = digests(raws)
    daemon = DaemonHarness(dovecot, me, tmp_path / "daemon", rules="")
    daemon.write_rules("", raw=two_account_config(dovecot, me, other))
    env = {"MAILRULES_TEST_OTHER_PASSWORD": other.password}
    try:
        for arrived in (5, 40, 100):  # kill points: messages at the destination
            daemon.start("--once", env=env)
            wait_until(lambda n=arrived: _count(dovecot, other) >= n or daemon.proc.poll() is not None,
                       60, interval=0.01, message=f"{arrived} messages at the destination")
            daemon.kill()
            total = contents(dovecot, me) + contents(dovecot, other)
            assert expected - total == collections.Counter(), "a message was lost"
        daemon.start("--once", env=env)
        assert daemon.proc.wait(120) == 0, daemon.log()[-3000:]
    finally:
        daemon.close()
    assert contents(dovecot, me) == collections.Counter()
    assert contents(dovecot, other) == expected


def _count(server, user) -> int:
    with connected(server, user) as client:
        if not client.folder_exists("Archive"):
            return 0
        return int(client.folder_status("Archive", ["MESSAGES"])[b"MESSAGES"])


def test_an_interrupted_copy_journaled_by_an_older_version_is_still_verified():
    """Older state files hold one "uncertain" dict (and no "claimed") in a copy's intent detail."""
    from mailrules.actions import uncertain_groups

    old = {"account": "other", "dest": "Archive", "uidnext": 9, "uncertain": {"uids": "3:4", "uidnext": 5}}
    assert uncertain_groups(old) == [{"uids": "3:4", "uidnext": 5}]
    assert uncertain_groups({"account": "other", "dest": "Archive", "uidnext": 9}) == []
