"""A cross-account copy into Cyrus of mail with raw 8-bit headers (RFC 6532), verified by content.

Cyrus stores each 8-bit byte of a message's header as ``X`` (``Größe`` becomes ``GrXXXXe``): the
destination never holds the bytes that were sent. An interrupted copy is proven by comparing
what arrived with the source messages by content (mailrules/actions/copy.py), so the resume
must know what Cyrus made of each message: otherwise it finds no copy, appends again (a
duplicate) and, for a move, would count nothing as proven. Issue 17, point 13's question.
Messages are counted by content, on both servers.
"""

from __future__ import annotations

import collections

import pytest

from mailrules.engine import Outcome
from mailrules.imap.session import ImapSession
from mailrules.testing.daemon import content_digest, message_contents
from tests.helpers import Acct, append, connected, run_engine, write_config


class Crash(BaseException):
    """The process dies here (not an Exception: nothing in mailrules catches it)."""


def raw_8bit(n: int) -> list[bytes]:
    """`n` messages with raw UTF-8 in their headers (and in the body of some, which Cyrus keeps)."""
    out = []
    for i in range(n):
        body = "Grüße aus Köln\r\n" if i % 2 else "plain body\r\n"
        out.append((
            f"From: Jürgen Größe <j{i}@example.org>\r\nTo: team@example.org\r\n"
            f"Subject: Größe der Dateien {i}\r\nMessage-ID: <size-{i}@example.org>\r\n"
            f"Date: Mon, 06 May 2024 10:00:00 +0000\r\n\r\n{body}"
        ).encode())
    return out


def as_cyrus_stores(cyrus, raws: list[bytes]) -> collections.Counter[str]:
    """The digests of these messages as Cyrus stores them (appended for a throwaway user)."""
    user = cyrus.add_user()
    client = cyrus.client(user)
    try:
        for raw in raws:
            client.append("INBOX", raw)
        return message_contents(client, "INBOX")
    finally:
        client.logout()


def cyrus_contents(cyrus, user, folder: str) -> collections.Counter[str]:
    client = cyrus.client(user)
    try:
        return message_contents(client, folder)
    finally:
        client.logout()


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


@pytest.fixture
def across(dovecot, imap_user, cyrus, cyrus_user, tmp_path, monkeypatch):
    """Write a rules file whose one rule sends every INBOX message of Dovecot's user to Cyrus."""

    def configure(action: str):
        return write_config(tmp_path, monkeypatch, dovecot, imap_user, f"""
            - name: away
              actions: [{{{action}: "other:Archive"}}]
        """, others={"other": Acct(cyrus_user, cyrus.port)})

    return configure


def ok(outcomes) -> bool:
    return all(isinstance(o, Outcome) and o.ok for o in outcomes)


def deliver(dovecot, user, raws: list[bytes]) -> None:
    for raw in raws:
        append(dovecot, user, "INBOX", raw)


def source(dovecot, user) -> collections.Counter[str]:
    with connected(dovecot, user) as client:
        return message_contents(client, "INBOX")


def source_digests(raws: list[bytes]) -> collections.Counter[str]:
    return collections.Counter(content_digest(r) for r in raws)


def test_cyrus_stores_raw_8bit_header_bytes_as_x_and_keeps_the_body():
    """The fact the rest of this file depends on, in the shape the copy check relies on."""
    from mailrules.imap.rewrite import cyrus_stored_form

    raw = "Subject: Größe\r\n\r\nGrüße\r\n".encode()
    assert cyrus_stored_form(raw) == "Subject: GrXXXXe\r\n\r\nGrüße\r\n".encode()


def test_the_stored_form_matches_what_cyrus_returns(cyrus):
    from mailrules.imap.rewrite import cyrus_stored_form

    raws = raw_8bit(4) + ["Subject: a\r\n\r\n\r\nX-Not-A-Header: ü\r\n".encode(), "Subject: ü only\r\n".encode()]
    assert as_cyrus_stores(cyrus, raws) == collections.Counter(content_digest(cyrus_stored_form(r)) for r in raws)


def test_an_uninterrupted_move_of_8bit_header_mail_into_cyrus_moves_each_once(
    dovecot, imap_user, cyrus, cyrus_user, across, tmp_path
):
    raws = raw_8bit(4)
    deliver(dovecot, imap_user, raws)
    assert ok(run_engine(across("move"), tmp_path / "state"))
    assert source(dovecot, imap_user) == collections.Counter()
    assert cyrus_contents(cyrus, cyrus_user, "INBOX.Archive") == as_cyrus_stores(cyrus, raws)


@pytest.mark.parametrize("verb", ["move", "copy"])
def test_an_interrupted_copy_of_8bit_header_mail_into_cyrus_resumes_without_a_duplicate(
    dovecot, imap_user, cyrus, cyrus_user, across, tmp_path, verb
):
    raws = raw_8bit(6)
    deliver(dovecot, imap_user, raws)
    config = across(verb)
    with pytest.MonkeyPatch.context() as patch, pytest.raises(Crash):
        crash_after_appends(patch, 3)
        run_engine(config, tmp_path / "state")
    assert ok(run_engine(config, tmp_path / "state"))
    expected_source = collections.Counter() if verb == "move" else source_digests(raws)
    assert source(dovecot, imap_user) == expected_source
    assert cyrus_contents(cyrus, cyrus_user, "INBOX.Archive") == as_cyrus_stores(cyrus, raws)  # each once
    assert ok(run_engine(config, tmp_path / "state"))
    assert cyrus_contents(cyrus, cyrus_user, "INBOX.Archive") == as_cyrus_stores(cyrus, raws)
