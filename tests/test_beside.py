"""Searches beside the pass (mailrules/imap/beside.py): in `run --once`, the searches no action of
the pass can change (header fields, sizes, dates) go on a second, read-only connection, each over
the messages that may still be in play at its rule's turn, while the pass's own connection acts.

The outcome must be the pass's alone: the same mailbox, by content, with or without them; an
answer that does not cover every message in play, a second connection that fails or that sees
another UIDVALIDITY, leaves the search to the pass's connection. On a real Dovecot (`MIN_MESSAGES`
lowered so that a few messages are enough); the `Beside` object itself also against a fake session.
"""

from __future__ import annotations

import re
import threading

import pytest
from helpers import Lab
from test_late_answers import contents
from test_pipelining import RoundTrips

from mailrules.criteria import SearchQuery
from mailrules.imap.beside import Beside
from mailrules.imap.pool import SessionPool
from mailrules.testing.messages import make_message
from mailrules.uidset import UidSet

REPORT = {"X-Kind": "report"}
MAILBOX = ({"subject": "report 1", "headers": REPORT}, {"subject": "report 2", "headers": REPORT},
           {"subject": "big report", "headers": REPORT, "size_padding": 4000},
           {"subject": "invoice", "from_": "billing@vendor.example"}, "chat",
           {"subject": "big chat", "size_padding": 4000})

# reports: decided on the fetched header fields (mailrules.local_headers), so known as the pass
# opens; vendor and big: searched beside the pass
RULES = """
    - name: reports
      match: {header: {X-Kind: report}}
      actions: [{move: Reports}]
    - name: vendor
      match: {from: vendor.example}
      actions: [{add_keyword: $Vendor}]
    - name: big
      match: {larger: 2KB}
      actions: [flag]
    - name: everything
      actions: [seen]
"""


@pytest.fixture
def beside_always(monkeypatch):
    """Searches beside the pass over any backlog, however small."""
    monkeypatch.setattr("mailrules.imap.beside.MIN_MESSAGES", 1)


def run_counted(lab: Lab, monkeypatch, *extra: str) -> RoundTrips:
    counter = RoundTrips(monkeypatch)
    result = lab.run(*extra)
    assert result.code == 0, result.err
    return counter


def beside_writes(counter: RoundTrips) -> list[bytes]:
    return [w for w, thread in zip(counter.writes, counter.writers, strict=True) if thread.startswith("mailrules-beside")]


def new_lab(dovecot, tmp_path, monkeypatch, raws: list[bytes] | None = None) -> Lab:
    """A user holding MAILBOX (these very messages, if given), with RULES written."""
    user = dovecot.add_user()
    lab = Lab(dovecot, user, tmp_path / user.name, monkeypatch)
    lab.tmp.mkdir()
    lab.deliver(*(raws or MAILBOX))
    lab.write(RULES)
    return lab


def test_the_searches_no_action_changes_go_on_a_second_read_only_connection(dovecot, tmp_path, monkeypatch,
                                                                              beside_always):
    lab = new_lab(dovecot, tmp_path, monkeypatch)
    counter = run_counted(lab, monkeypatch)
    beside = b"".join(beside_writes(counter))
    assert b" EXAMINE " in beside and b" SELECT " not in beside
    assert b" LARGER " in beside and b' FROM "vendor.example"' in beside
    main = b"".join(w for w in counter.writes if w not in beside_writes(counter))
    assert b" LARGER " not in main and b" FROM " not in main
    assert lab.where()["big report"] == ["Reports"]
    assert lab.flags() == {"invoice": {"\\Seen", "$Vendor"}, "chat": {"\\Seen"}, "big chat": {"\\Seen", "\\Flagged"}}


def test_the_second_connection_reads_the_last_half_of_the_opening_s_header_fetch(dovecot, tmp_path, monkeypatch,
                                                                                  beside_always):
    lab = new_lab(dovecot, tmp_path, monkeypatch)
    counter = run_counted(lab, monkeypatch)
    [fetched_beside] = [w for w in beside_writes(counter) if b" UID FETCH " in w]
    [fetched] = [w for w in counter.writes if b" UID FETCH " in w and b"X-KIND" in w.upper() and w != fetched_beside]
    assert b" UID FETCH 4:6 " in fetched_beside and b" UID FETCH 1:3 " in fetched
    assert lab.where()["big report"] == ["Reports"] and lab.where()["big chat"] == ["INBOX"]


def test_a_search_beside_is_asked_only_over_the_messages_still_in_play_at_its_turn(dovecot, tmp_path, monkeypatch,
                                                                                   beside_always):
    """The messages an earlier rule moves are not in its UID set: the server reads none of them
    (Dovecot, asked about messages the pass moves meanwhile, also answers far slower)."""
    lab = new_lab(dovecot, tmp_path, monkeypatch)
    moved = {uid for uid, msg in enumerate(lab.messages(), start=1) if "report" in msg.subject}
    assert moved == {1, 2, 3}
    counter = run_counted(lab, monkeypatch)
    [larger] = [w for w in beside_writes(counter) if b" LARGER " in w]
    asked = UidSet.parse(re.search(rb" UID ([0-9:,]+) LARGER", larger).group(1).decode())
    assert asked == UidSet(range(1, len(MAILBOX) + 1)) - UidSet(moved)


def test_the_searches_beside_leave_the_mailbox_exactly_as_the_pass_alone_does(dovecot, tmp_path, monkeypatch):
    raws = [make_message(**({"subject": m} if isinstance(m, str) else m)) for m in MAILBOX]
    alone = new_lab(dovecot, tmp_path, monkeypatch, raws)
    assert not beside_writes(run_counted(alone, monkeypatch))  # a backlog this small: none
    monkeypatch.setattr("mailrules.imap.beside.MIN_MESSAGES", 1)
    together = new_lab(dovecot, tmp_path, monkeypatch, raws)
    assert beside_writes(run_counted(together, monkeypatch))
    assert contents(together) == contents(alone)
    assert together.where() == alone.where()
    assert together.flags() == alone.flags() and together.flags("Reports") == alone.flags("Reports")


def test_a_second_connection_that_cannot_log_in_leaves_its_searches_to_the_pass(dovecot, tmp_path, monkeypatch,
                                                                              beside_always):
    lab = new_lab(dovecot, tmp_path, monkeypatch)

    def refused(self, account):
        def connect():
            raise ConnectionRefusedError("no second connection here")
        return lambda mailbox, uidvalidity: Beside(connect, mailbox, uidvalidity, account, 5.0)

    monkeypatch.setattr(SessionPool, "beside", refused)
    counter = run_counted(lab, monkeypatch)
    main = b"".join(counter.writes)
    assert b" LARGER " in main and b' FROM "vendor.example"' in main  # searched on the pass's connection
    assert lab.where()["big report"] == ["Reports"]  # its header share: asked of the server
    assert lab.flags() == {"invoice": {"\\Seen", "$Vendor"}, "chat": {"\\Seen"}, "big chat": {"\\Seen", "\\Flagged"}}


def test_the_second_connection_logs_in_without_a_second_login_line(dovecot, tmp_path, monkeypatch, beside_always):
    lab = new_lab(dovecot, tmp_path, monkeypatch)
    result = lab.run()
    assert result.code == 0, result.err
    assert result.err.count("logged in to") == 1


def test_run_once_opens_the_second_connection_as_its_first_mailbox_is_selected(dovecot, tmp_path, monkeypatch,
                                                                               beside_always):
    """In the opening's thread, right after the SELECT: logged in by the time the pass opens. Once."""
    lab = new_lab(dovecot, tmp_path, monkeypatch)
    opened_by = []
    real_init = Beside.__init__

    def init(self, *args, **kwargs):
        opened_by.append(threading.current_thread().name)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(Beside, "__init__", init)
    counter = run_counted(lab, monkeypatch)
    assert len(opened_by) == 1 and opened_by[0].startswith("mailrules-connect-")
    assert sum(b" EXAMINE " in w for w in beside_writes(counter)) == 1
    assert lab.where()["big report"] == ["Reports"]


def test_a_second_connection_opened_early_for_settings_since_changed_is_not_taken(dovecot, tmp_path, monkeypatch,
                                                                                   beside_always):
    """The accounts read first (`run --once` opens on them) and the whole file read later differ:
    the second connection opened on the first is logged out, and the pass opens another."""
    from dataclasses import replace

    from mailrules.config.loader import load

    lab = new_lab(dovecot, tmp_path, monkeypatch)
    config = load(lab.write(RULES))
    [account] = config.accounts.values()
    opened: list[Beside] = []
    real_init = Beside.__init__

    def init(self, *args, **kwargs):
        opened.append(self)
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(Beside, "__init__", init)
    pool = SessionPool.connecting(config, [account], checkpoint_of=lambda _account, _server: 0)
    try:
        uidvalidity = pool.get(account.name).selected.uidvalidity
        assert len(opened) == 1 and opened[0].opened_for == ("INBOX", uidvalidity)
        changed = replace(account, timeout=account.timeout + 1)
        pool.adopt(replace(config, accounts={account.name: changed}), [changed])
        taken = pool.beside(account.name)("INBOX", uidvalidity)
        assert taken is not opened[0] and len(opened) == 2
        taken.close()
    finally:
        pool.close()


def test_a_dry_run_searches_nothing_beside_the_pass(dovecot, tmp_path, monkeypatch, beside_always):
    lab = new_lab(dovecot, tmp_path, monkeypatch)
    assert not beside_writes(run_counted(lab, monkeypatch, "--dry-run"))


def test_the_daemon_s_passes_open_no_second_connection(monkeypatch):
    """Only `run --once` asks for one: a pool does not open any unless told to."""
    from mailrules.model import Config

    assert SessionPool(Config(accounts={}, rules=())).beside("any") is None


# ---------------------------------------------------------------------- the Beside object alone


class FakeSelected:
    def __init__(self, uidvalidity: int) -> None:
        self.uidvalidity = uidvalidity


class FakePending:
    def __init__(self, result: UidSet | None) -> None:
        self.result = result


class FakeHeaders:
    def __init__(self) -> None:
        self.message_ids: dict[int, str] = {}


class FakePipeline:
    def __init__(self, session: FakeSession) -> None:
        self.session = session
        self.fetches: list[tuple[UidSet, object, FakeHeaders]] = []

    def search(self, query, within: UidSet) -> FakePending:
        self.session.asked.append(within)
        return FakePending(within & self.session.matching)

    def headers(self, uids: UidSet, fields, batch: int, sink) -> FakeHeaders:
        self.fetches.append((uids, sink, FakeHeaders()))
        return self.fetches[-1][2]

    def run(self) -> None:
        """Each fetched message's block to the sink; the connection drops after `breaks_after`."""
        for uids, sink, pending in self.fetches:
            for n, uid in enumerate(uids):
                if n == self.session.breaks_after:
                    raise ConnectionResetError("dropped mid-fetch")
                if sink is not None:
                    sink(uid, b"Message-ID: <%d@x>\r\n\r\n" % uid)
                pending.message_ids[uid] = f"<{uid}@x>"


class FakeSession:
    """Answers every search with the UIDs of `matching` it was asked about."""

    max_set_chars = 8000

    def __init__(self, uidvalidity: int = 7, matching: UidSet | None = None) -> None:
        self.uidvalidity = uidvalidity
        self.matching = UidSet([2, 3]) if matching is None else matching
        self.asked: list[UidSet] = []
        self.logged_out = threading.Event()
        self.breaks_after: int | None = None

    def select(self, mailbox: str, readonly: bool = False) -> FakeSelected:
        assert readonly
        return FakeSelected(self.uidvalidity)

    def pipeline(self) -> FakePipeline:
        return FakePipeline(self)

    def logout(self, wait: bool = True) -> None:
        self.logged_out.set()


QUERY = SearchQuery(tokens=(b"LARGER", b"100"))


def test_an_answer_beside_is_the_server_s_over_the_messages_asked_about() -> None:
    session = FakeSession()
    beside = Beside(lambda: session, "INBOX", 7, "work", 5.0)
    beside.search({0: (QUERY, UidSet([1, 2, 3]))})
    assert beside.answer(0, UidSet([1, 2])) == UidSet([2])
    assert session.logged_out.wait(5)


def test_an_answer_beside_over_fewer_messages_than_are_in_play_is_not_used() -> None:
    beside = Beside(lambda: FakeSession(), "INBOX", 7, "work", 5.0)
    beside.search({0: (QUERY, UidSet([1, 2]))})
    assert beside.answer(0, UidSet([1, 2, 3])) is None
    assert beside.answer(1, UidSet([1])) is None  # a rule not handed over


def test_a_second_connection_that_sees_another_uidvalidity_answers_nothing() -> None:
    session = FakeSession(uidvalidity=8)
    beside = Beside(lambda: session, "INBOX", 7, "work", 5.0)
    beside.search({0: (QUERY, UidSet([1, 2, 3]))})
    assert beside.answer(0, UidSet([1, 2, 3])) is None
    assert session.asked == []
    assert session.logged_out.wait(5)


def test_a_long_uid_set_is_asked_exactly_in_pieces_never_bridged_over_the_gaps() -> None:
    session = FakeSession(matching=UidSet(range(1, 40001, 2)))
    session.max_set_chars = 200
    beside = Beside(lambda: session, "INBOX", 7, "work", 5.0)
    odd = UidSet(range(1, 40001, 2))
    beside.search({0: (QUERY, odd)})
    assert beside.answer(0, odd) == odd
    assert len(session.asked) > 1 and all(len(str(piece)) <= 200 for piece in session.asked)
    assert UidSet(uid for piece in session.asked for uid in piece) == odd


def test_a_pass_that_ends_before_handing_its_searches_over_logs_the_second_connection_out() -> None:
    session = FakeSession()
    beside = Beside(lambda: session, "INBOX", 7, "work", 5.0)
    beside.close()
    assert session.logged_out.wait(5)
    assert session.asked == []


def test_a_header_fetch_beside_gives_each_block_to_the_sink_and_its_message_ids_to_the_pass() -> None:
    taken = []
    beside = Beside(lambda: FakeSession(), "INBOX", 7, "work", 5.0)
    beside.fetch_headers(UidSet([4, 5, 6]), ["X-Kind"], 100, lambda uid, block: taken.append(uid))
    beside.search({0: (QUERY, UidSet([1, 2, 3]))})
    assert beside.message_ids() == {4: "<4@x>", 5: "<5@x>", 6: "<6@x>"}
    assert taken == [4, 5, 6]
    assert beside.answer(0, UidSet([1, 2, 3])) == UidSet([2, 3])  # searched after the fetch


def test_a_header_fetch_beside_that_breaks_returns_only_the_messages_it_read() -> None:
    """The pass asks the server about the others, as about messages its own fetch did not return."""
    session = FakeSession()
    session.breaks_after = 2
    taken = []
    beside = Beside(lambda: session, "INBOX", 7, "work", 5.0)
    beside.fetch_headers(UidSet([4, 5, 6]), ["X-Kind"], 100, lambda uid, block: taken.append(uid))
    assert beside.message_ids() == {4: "<4@x>", 5: "<5@x>"} and taken == [4, 5]
    assert session.logged_out.wait(5)


def test_a_header_fetch_beside_on_another_uidvalidity_returns_no_message() -> None:
    beside = Beside(lambda: FakeSession(uidvalidity=8), "INBOX", 7, "work", 5.0)
    beside.fetch_headers(UidSet([4, 5, 6]), [], 100, None)
    assert beside.message_ids() == {}


def test_an_error_of_the_pass_s_sink_beside_is_raised_to_the_pass() -> None:
    def sink(uid: int, block: bytes) -> None:
        raise MemoryError("the pass's own failure")

    beside = Beside(lambda: FakeSession(), "INBOX", 7, "work", 5.0)
    beside.fetch_headers(UidSet([4]), [], 100, sink)
    with pytest.raises(MemoryError, match="the pass's own failure"):
        beside.message_ids()
