"""Pipelined FETCH batches (mailrules.imap.fetchpipe), on the private Dovecot.

The pipelined fetch must give exactly what the sequential one (`ImapSession.fetch`) gives,
leave the connection usable whatever the caller does, and a connection lost in the middle
of a batch must lose and double nothing.
"""

from __future__ import annotations

import threading

import pytest
from helpers import Lab, account_contents

from mailrules.imap.fetchpipe import pipelined_fetch
from mailrules.imap.session import ImapSession
from mailrules.testing.daemon import message_contents
from mailrules.testing.proxy import TcpProxy
from mailrules.uidset import UidSet

ITEM_SETS = (
    ["BODY.PEEK[]"],
    ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID SUBJECT)]", "RFC822.SIZE", "FLAGS", "INTERNALDATE"],
    ["BODY.PEEK[HEADER]", "FLAGS"],
    ["BODY.PEEK[]", "RFC822.SIZE"],  # the shapes the fetch takes apart itself (fetchpipe._fast_items)
    ["BODY.PEEK[HEADER.FIELDS (MESSAGE-ID SUBJECT)]", "RFC822.SIZE"],
)


def fill(lab: Lab, count: int = 23) -> None:
    """Messages of different shapes: short, long, one with a literal-like line, one flagged."""
    items = []
    for i in range(count):
        body = f"message {i}\n" + ("line {42}\n" if i % 5 == 0 else "") + "x" * (i * 997 % 20_000)
        items.append({"subject": f"m{i}", "body": body})
    lab.deliver(*items)
    lab.deliver("flagged", flags=["\\Flagged", "$Kw"])


@pytest.fixture
def session(lab):
    fill(lab)
    s = ImapSession(lab.server.client(lab.user))
    s.select("INBOX")
    yield s
    s.client.logout()


@pytest.mark.parametrize("items", ITEM_SETS)
def test_the_pipelined_fetch_returns_exactly_what_the_sequential_fetch_returns(session, items):
    # Dovecot may answer batch k+1 before batch k's tagged OK: run a few times, it was intermittent
    for _ in range(3):
        uids = UidSet(range(1, 40))  # more than exist: the missing ones are not returned
        expected = list(session.fetch(uids, items, batch=4))
        assert len(expected) == 24
        assert list(pipelined_fetch(session, uids, items, 4)) == expected


def test_expunged_messages_are_left_out_as_by_the_sequential_fetch(session, lab):
    with lab.client() as other:
        other.select_folder("INBOX")
        other.add_flags([3, 7], ["\\Deleted"])
        other.uid_expunge([3, 7])
    session.client.noop()  # the session sees the expunges (before, Dovecot still serves them)
    uids = UidSet(range(1, 25))
    got = list(pipelined_fetch(session, uids, ["FLAGS"], 5))
    assert [uid for uid, _ in got] == [u for u in range(1, 25) if u not in (3, 7)]
    assert got == list(session.fetch(uids, ["FLAGS"], batch=5))


def test_a_caller_that_stops_early_leaves_the_connection_usable(session):
    fetch = pipelined_fetch(session, UidSet(range(1, 25)), ["BODY.PEEK[]"], 3)
    first = next(fetch)
    assert first[0] == 1
    fetch.close()  # two batches were in flight: their answers are read and dropped
    assert [uid for uid, _ in session.fetch(UidSet([5, 6]), ["FLAGS"])] == [5, 6]


def test_a_connection_dropped_in_the_middle_of_a_batch_loses_and_doubles_nothing(dovecot, imap_user, tmp_path,
                                                                                monkeypatch):
    direct = Lab(dovecot, imap_user, tmp_path, monkeypatch)
    direct.deliver(*[{"subject": f"m{i}", "body": f"build #{i} {'failed' if i % 3 == 0 else 'passed'}\n" + "y" * 3000}
                     for i in range(250)])
    before = account_contents(direct)
    fetches = 0
    dropped = threading.Event()

    def drop_in_the_second_batch(line: bytes) -> bytes:
        nonlocal fetches
        if b" FETCH (" in line and b"BODY[] {" in line:
            fetches += 1
            if fetches == 130 and not dropped.is_set():  # a body batch is 100 messages: mid-batch 2
                dropped.set()
                threading.Thread(target=proxy.drop_all, daemon=True).start()
        return line

    rules = """
        - name: failed builds
          mailbox: INBOX
          where:
            - regex: {body: 'build #\\d+ failed'}
          actions: [{add_keyword: $Failed}, {move: Failed}]
    """
    with TcpProxy(dovecot.host, dovecot.port, rewrite_server=drop_in_the_second_batch) as proxy:
        lab = Lab(dovecot, imap_user, tmp_path, monkeypatch, port=proxy.port)
        lab.write(rules)
        first = lab.run()
    assert dropped.is_set()
    assert first.code != 0
    assert account_contents(direct) == before  # nothing acted on from a partial fetch
    lab = Lab(dovecot, imap_user, tmp_path, monkeypatch)
    lab.write(rules)
    assert lab.run().code == 0
    with direct.client() as client:
        moved = message_contents(client, "Failed")
        kept = message_contents(client, "INBOX")
    assert sum(moved.values()) == 84 and set(moved.values()) == {1}
    assert sum(kept.values()) == 166 and set(kept.values()) == {1}
    assert len(direct.flags("Failed")) == 84
    assert all("$Failed" in f for f in direct.flags("Failed").values())



FETCH_SHAPES = [
    (b"(UID 7 BODY[] {5}", b"hello", b")"),
    (b"(UID 7 RFC822.SIZE 5 BODY[] {5}", b"hello", b")"),
    (b"(RFC822.SIZE 5 BODY[] {5}", b"hello", b" UID 7)"),
    (b"(UID 7 BODY[HEADER.FIELDS (MESSAGE-ID SUBJECT)] {3}", b"a\r\n", b")"),
    (b"(UID 7 BODY[1] {2}", b"ab", b" BODY[2] {0}", b"", b")"),
    (b"(UID 7 body[] NIL)",),
    (b"(UID 7 XNUMBER 0123 RFC822.SIZE 0)",),
    # shapes left to IMAPClient's parser: the same answer either way
    (b"(UID 7 FLAGS (\\Seen $Kw) BODY[] {2}", b"ab", b")"),
    (b'(UID 7 INTERNALDATE "06-Dec-2026 17:00:00 +0000")',),
    (b'(UID 7 BODY[] "quoted")',),
    (b"(UID 7 BODY[]<0> {2}", b"ab", b")"),
    (b"(UID 7 BODY[] nil)",),
    (b"(BODY[] {2}", b"ab", b")"),  # no UID: keyed by sequence number
    (b"(UID 007 BODY[] {2}", b"ab", b")"),
]


@pytest.mark.parametrize("parts", FETCH_SHAPES)
def test_the_fetch_answers_taken_apart_without_imapclient_read_as_imapclient_reads_them(parts):
    from imapclient.response_parser import parse_fetch_response

    from mailrules.imap.fetchpipe import fast_fetch_items

    lines = [b"3 " + parts[0], *parts[2::2]]  # as imaplib stores it: (line, literal) pairs, then the last line
    imaplib_form = [*zip(lines[:-1], parts[1::2], strict=True), lines[-1]]
    expected = dict(parse_fetch_response(imaplib_form, True, True))
    got = fast_fetch_items(3, list(parts))
    if got is not None:  # None: left to IMAPClient's parser
        assert {got[0]: got[1]} == expected
    assert (got is not None) == (FETCH_SHAPES.index(parts) < 7)  # the first seven are the fast path's


def test_on_cyrus_the_pipelined_fetch_returns_exactly_what_the_sequential_fetch_returns(cyrus, cyrus_user):
    from mailrules.testing.messages import make_message

    cyrus.deliver_files(cyrus_user, "INBOX", [make_message(subject=f"m{i}", body="x" * i * 100) for i in range(9)])
    session = ImapSession(cyrus.client(cyrus_user))
    try:
        session.select("INBOX")
        for items in ITEM_SETS:  # Cyrus answers FETCH in its own shapes: the fast path must read them alike
            expected = list(session.fetch(UidSet(range(1, 12)), items, batch=3))
            assert len(expected) == 9
            assert list(pipelined_fetch(session, UidSet(range(1, 12)), items, 3)) == expected
    finally:
        session.client.logout()
