"""UID sets per command: the RFC's 8,000 characters, or up to 48,000 on Dovecot (issue 20).

On a large mailbox every command that changes it costs Dovecot a sync of its index and
uidlist, so a 100,000-message backlog's moves in RFC-sized sets were several times as many
commands as imapfilter's. Dovecot accepts 64 KB command lines unless its administrator
lowered `imap_max_line_length`; a command refused as too long did nothing and is sent again
in the RFC's size. Every message is moved exactly once, counted by content.
"""

from __future__ import annotations

import hashlib
import logging

import pytest

from mailrules.criteria import SearchQuery
from mailrules.imap import session as session_module
from mailrules.imap.session import ImapSession
from mailrules.imap.setsize import LONG_SET_CHARS, MAX_SET_CHARS
from mailrules.uidset import UidSet

MESSAGES = 6000  # every other UID of 6,000: a set of ~14,600 characters


def _message(i: int) -> bytes:
    return f"From: a@example.org\nSubject: m{i}\nMessage-ID: <m{i}@example.org>\n\nbody {i}\n".encode()


def _digest(data: bytes) -> str:
    return hashlib.sha1(data.replace(b"\r\n", b"\n")).hexdigest()


@pytest.fixture
def counted_moves(monkeypatch):
    """How many UID MOVE commands the session sent, with their UID set's length."""
    sent: list[int] = []
    real = session_module.send_reading_flags

    def counting(client, uid_set, folder, verb):
        sent.append(len(uid_set))
        return real(client, uid_set, folder, verb)

    monkeypatch.setattr(session_module, "send_reading_flags", counting)
    return sent


def _session(server, user, *, identify: bool = True) -> tuple[ImapSession, UidSet]:
    server.deliver_files(user, "INBOX", [_message(i) for i in range(MESSAGES)])
    session = ImapSession(server.client(user), "acct")
    if identify:
        assert session.server_software.startswith("dovecot")
    session.client.create_folder("Dest")
    session.select("INBOX")
    odd = UidSet(range(1, MESSAGES + 1, 2))
    assert len(str(odd)) > MAX_SET_CHARS
    return session, odd


def _contents(server, user, folder: str) -> list[str]:
    client = server.client(user)
    try:
        client.select_folder(folder, readonly=True)
        uids = client.search(["ALL"])
        found = []
        for i in range(0, len(uids), 500):  # short commands: some of these servers take only 10 KB
            found += [_digest(item[b"BODY[]"]) for item in client.fetch(uids[i:i + 500], ["BODY.PEEK[]"]).values()]
        return sorted(found)
    finally:
        client.logout()


def test_dovecot_moves_a_uid_set_longer_than_the_rfc_advice_in_one_command(dovecot, imap_user, counted_moves):
    session, odd = _session(dovecot, imap_user)
    session.move(odd, "Dest")
    assert counted_moves == [len(str(odd))]
    assert MAX_SET_CHARS < counted_moves[0] <= LONG_SET_CHARS
    assert _contents(dovecot, imap_user, "Dest") == sorted(_digest(_message(u - 1)) for u in odd)


def test_a_move_refused_as_too_long_is_sent_again_in_rfc_sized_sets_each_message_once(
        dovecot_factory, counted_moves, caplog):
    server = dovecot_factory(extra_conf="\nimap_max_line_length = 10k\n")
    user = server.add_user()
    session, odd = _session(server, user)
    with caplog.at_level(logging.WARNING, logger="mailrules.imap"):
        session.move(odd, "Dest")
    assert counted_moves[0] == len(str(odd))  # refused: the server did nothing
    assert all(n <= MAX_SET_CHARS for n in counted_moves[1:]) and len(counted_moves) >= 3
    assert session.max_set_chars == MAX_SET_CHARS  # and so on for this connection
    assert "too long" in caplog.text
    moved = _contents(server, user, "Dest")
    assert moved == sorted(_digest(_message(u - 1)) for u in odd)  # each exactly once
    left = _contents(server, user, "INBOX")
    assert len(left) == MESSAGES // 2 and not set(left) & set(moved)


def test_a_search_refused_as_too_long_is_asked_again_with_a_shorter_set(dovecot_factory):
    server = dovecot_factory(extra_conf="\nimap_max_line_length = 10k\n")
    user = server.add_user()
    session, odd = _session(server, user)
    found = session.search(SearchQuery((b"SUBJECT", b"m")), within=odd)
    assert found == odd
    assert session.max_set_chars == MAX_SET_CHARS


def test_a_server_not_yet_identified_gets_rfc_sized_sets(dovecot, imap_user, counted_moves):
    session, odd = _session(dovecot, imap_user, identify=False)
    session.move(odd, "Dest")
    assert len(counted_moves) == 2 and all(n <= MAX_SET_CHARS for n in counted_moves)
    assert len(_contents(dovecot, imap_user, "Dest")) == len(odd)
