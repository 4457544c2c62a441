"""SELECT and the search for what is new in one round trip (mailrules.imap.reselect), on Dovecot.

An arrival pass on a mailbox the connection has not selected (the daemon's worker idles on
home; NOTIFY tells it of mail elsewhere) sends SELECT and ``UID SEARCH UID n:*`` together.
"""

from __future__ import annotations

import threading

import pytest
from helpers import Lab, append
from imapclient.exceptions import IMAPClientError

from mailrules import engine as engine_module
from mailrules.imap.internals import imaplib_of
from mailrules.imap.reselect import select_and_search_above
from mailrules.imap.session import ImapSession
from mailrules.testing.daemon import content_digest, message_contents
from mailrules.testing.messages import make_message
from mailrules.testing.proxy import TcpProxy

FILE_RULE = """
    - name: file
      match: {subject: file}
      actions: [{move: Done}]
"""


@pytest.fixture
def session(imap, dovecot, imap_user):
    imap.create_folder("Side")
    append(dovecot, imap_user, "Side", *(make_message(subject=f"m{k}") for k in range(5)))
    session = ImapSession(imap, "t")
    session.select("INBOX")  # the worker's home is selected, as between passes
    return session


def test_the_uids_above_the_checkpoint_come_with_the_selection(session):
    selected, above = select_and_search_above(session, "Side", 2)
    assert (selected.name, selected.uidnext, selected.readonly) == ("Side", 6, False)
    assert list(above) == [3, 4, 5]
    assert session.selected == selected


def test_nothing_above_the_checkpoint_is_an_empty_set_not_the_last_uid(session):
    _, above = select_and_search_above(session, "Side", 5)
    assert list(above) == []


def test_the_connection_goes_on_after_the_pipelined_pair(session):
    select_and_search_above(session, "Side", 0)
    assert session.existing(session.search(_all())) is not None
    assert session.select("INBOX").name == "INBOX"


def test_a_missing_mailbox_fails_as_select_does_and_the_connection_stays_usable(session):
    with pytest.raises(IMAPClientError):
        select_and_search_above(session, "Nowhere", 0)
    session.select("INBOX")
    selected, above = select_and_search_above(session, "Side", 4)
    assert (selected.name, list(above)) == ("Side", [5])


def test_with_no_mailbox_selected_yet_the_search_goes_with_the_first_select(imap, dovecot, imap_user):
    """A first pass (run --once, nothing selected): its search of every message is in the SELECT's round trip."""
    imap.create_folder("Side")
    append(dovecot, imap_user, "Side", make_message(subject="m"))
    selected, above = select_and_search_above(ImapSession(imap, "t"), "Side", 0)
    assert (selected.name, list(above)) == ("Side", [1])


def test_a_missing_mailbox_as_the_first_select_fails_as_select_does_and_the_connection_stays_usable(
        imap, dovecot, imap_user):
    imap.create_folder("Side")
    append(dovecot, imap_user, "Side", make_message(subject="m"))
    session = ImapSession(imap, "t")
    with pytest.raises(IMAPClientError):
        select_and_search_above(session, "Nowhere", 0)
    assert imaplib_of(imap).state == "AUTH"  # as imaplib leaves it after a failed SELECT
    selected, above = select_and_search_above(session, "Side", 0)
    assert (selected.name, list(above)) == ("Side", [1])


def test_an_arrival_pass_on_a_mailbox_not_selected_takes_each_new_message_once(lab, monkeypatch):
    pipelined: list[str] = []

    def spy(session, server, checkpoint, early=None):
        selected, above = select_and_search_above(session, server, checkpoint, early)
        if above is not None:
            pipelined.append(server)
        return selected, above

    monkeypatch.setattr(engine_module, "select_and_search_above", spy)
    lab.write("""
        - name: file
          match: {subject: file}
          actions: [{move: Done}]
    """, watch=["INBOX", "Side"])
    with lab.server.client(lab.user) as client:
        client.create_folder("Side")
        client.create_folder("Done")
    lab.deliver("file 0", folder="Side")
    assert all(o.ok for o in lab.engine())  # the checkpoint is known from here on
    sent = [make_message(subject=f"file {k}") for k in range(1, 4)]
    lab.deliver(*sent, folder="Side")
    assert all(o.ok for o in lab.engine())
    with lab.server.client(lab.user) as client:
        done = message_contents(client, "Done")
        assert message_contents(client, "Side") == {}
    assert all(done[content_digest(raw)] == 1 for raw in sent)
    assert sum(done.values()) == 4
    assert "Side" in pipelined


def test_a_connection_dropped_in_the_pipelined_select_loses_and_doubles_nothing(dovecot, imap_user, tmp_path,
                                                                                monkeypatch):
    direct = Lab(dovecot, imap_user, tmp_path, monkeypatch)
    direct.write(FILE_RULE, watch=["INBOX", "Side"])
    with direct.server.client(direct.user) as client:
        client.create_folder("Side")
        client.create_folder("Done")
    sent = [make_message(subject=f"file {k}") for k in range(4)]
    direct.deliver(sent[0], folder="Side")
    assert direct.run().code == 0  # Side's checkpoint is known: the next pass pipelines its SELECT
    direct.deliver(*sent[1:], folder="Side")
    selects = 0
    dropped = threading.Event()

    def drop_at_the_second_select(line: bytes) -> bytes:  # INBOX's, then Side's (with the search behind it)
        nonlocal selects
        if b"Select completed" in line:
            selects += 1
            if selects == 2 and not dropped.is_set():
                dropped.set()
                threading.Thread(target=proxy.drop_all, daemon=True).start()
                return b""
        return line

    with TcpProxy(dovecot.host, dovecot.port, rewrite_server=drop_at_the_second_select) as proxy:
        cut = Lab(dovecot, imap_user, tmp_path, monkeypatch, port=proxy.port)
        cut.write(FILE_RULE, watch=["INBOX", "Side"])
        assert cut.run().code != 0
    assert dropped.is_set()
    direct.write(FILE_RULE, watch=["INBOX", "Side"])
    assert direct.run().code == 0
    with direct.server.client(direct.user) as client:
        done = message_contents(client, "Done")
        assert message_contents(client, "Side") == {}
    assert done == {content_digest(raw): 1 for raw in sent}


def _all():
    from mailrules.criteria import SearchQuery

    return SearchQuery((b"ALL",))
