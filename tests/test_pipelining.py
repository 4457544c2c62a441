"""Round trips: what a pass costs on a slow link (mailrules.imap.pipeline), on a real Dovecot.

A round trip is counted each time the client, having sent something, waits for the
server's answer. Not a timing: the number is a property of the protocol the engine speaks.
"""

from __future__ import annotations

import imaplib
import os
import re
import threading

import pytest
from helpers import Lab

from mailrules.imap.pipeline import _mailbox_name, parse_message_id
from mailrules.testing.proxy import TcpProxy


class RoundTrips:
    """Counts the client's waits for the server (imaplib's socket reads that follow a send)."""

    def __init__(self, monkeypatch) -> None:
        self.count = 0
        self.bytes_sent = 0  # what went out: shows that commands were sent, however few the waits
        self.writes: list[bytes] = []  # each write, as sent
        self.writers: list[str] = []  # the name of the thread that sent each
        self._sent = False
        real_send, real_readline, real_read = imaplib.IMAP4.send, imaplib.IMAP4.readline, imaplib.IMAP4.read

        def send(imap, data):
            self._sent = True
            self.bytes_sent += len(data)
            self.writes.append(bytes(data))
            self.writers.append(threading.current_thread().name)
            return real_send(imap, data)

        def readline(imap):
            self._waited()
            return real_readline(imap)

        def read(imap, size):
            self._waited()
            return real_read(imap, size)

        monkeypatch.setattr(imaplib.IMAP4, "send", send)
        monkeypatch.setattr(imaplib.IMAP4, "readline", readline)
        monkeypatch.setattr(imaplib.IMAP4, "read", read)

    def sent_with(self, word: bytes) -> list[tuple[bytes, str]]:
        """The writes holding `word`, each with the name of the thread that sent it."""
        return [(w, t) for w, t in zip(self.writes, self.writers, strict=True) if word in w]

    def _waited(self) -> None:
        if self._sent:
            self.count += 1
            self._sent = False


SUBJECTS = ("report 1", "report 2", "invoice", "chat")

MOVE_THEN_SEEN = """
    - name: reports
      match: {subject: report}
      actions: [{move: Reports}]
    - name: invoices
      match: {subject: invoice}
      actions: [seen]
"""


def pass_cost(dovecot, tmp_path, monkeypatch, rules: str, folders=()) -> tuple[int, Lab]:
    """Round trips of one `run --once` over a fresh mailbox holding SUBJECTS."""
    counter, lab = measure(dovecot, tmp_path, monkeypatch, rules, folders)
    return counter.count, lab


def measure(dovecot, tmp_path, monkeypatch, rules: str, folders=()) -> tuple[RoundTrips, Lab]:
    """The counter of one `run --once` over a fresh mailbox holding SUBJECTS."""
    user = dovecot.add_user()
    lab = Lab(dovecot, user, tmp_path / user.name, monkeypatch)
    lab.tmp.mkdir()
    with lab.client() as client:
        for folder in folders:
            client.create_folder(folder)
    lab.deliver(*SUBJECTS)
    lab.write(rules)
    counter = RoundTrips(monkeypatch)
    result = lab.run()
    monkeypatch.undo()  # the counter; the next measurement installs its own
    assert result.code == 0, result.err
    return counter, lab


NOTHING = """
    - name: nothing
      match: {subject: no such subject}
      actions: [flag]
"""


def test_a_first_pass_over_a_mailbox_searches_it_in_the_round_trip_of_its_select(dovecot, tmp_path, monkeypatch):
    """No checkpoint yet: the search for the pass's messages (all of them) goes behind the SELECT."""
    counter, lab = measure(dovecot, tmp_path, monkeypatch, NOTHING)
    [select] = [w for w in counter.writes if b" SELECT " in w]
    assert b" UID SEARCH " in select.split(b" SELECT ", 1)[1]
    assert lab.where() == {s: ["INBOX"] for s in SUBJECTS}


def test_the_first_pass_selects_its_mailbox_once_as_the_connection_opens(dovecot, tmp_path, monkeypatch):
    """`run --once` selects the first mailbox (with its search) as the connection opens, while the
    rules load; the pass takes that selection and selects nothing again."""
    counter, lab = measure(dovecot, tmp_path, monkeypatch, NOTHING)
    [(select, writer)] = counter.sent_with(b" SELECT ")
    assert writer.startswith("mailrules-connect-") and b" UID SEARCH " in select
    assert lab.where() == {s: ["INBOX"] for s in SUBJECTS}


def test_the_early_select_of_inbox_goes_with_namespace_and_id(dovecot, tmp_path, monkeypatch):
    """INBOX is named so whatever the namespace: NAMESPACE, ID, its SELECT and the search behind
    it leave in one write, one round trip after LOGIN; the namespace is known all the same."""
    counter, lab = measure(dovecot, tmp_path, monkeypatch, MOVE_THEN_SEEN, folders=("Reports",))
    [(select, writer)] = counter.sent_with(b" SELECT ")
    assert writer.startswith("mailrules-connect-")
    assert re.fullmatch(rb'\S+ NAMESPACE\r\n\S+ ID NIL\r\n\S+ SELECT "INBOX"\r\n\S+ UID SEARCH [^\r]+\r\n', select), select
    assert not counter.sent_with(b" NAMESPACE\r\n")[1:]  # asked once: the folders were named from it
    assert lab.where() == {"report 1": ["Reports"], "report 2": ["Reports"], "invoice": ["INBOX"],
                           "chat": ["INBOX"]}


def test_a_later_run_searches_above_its_checkpoint_behind_the_early_select(dovecot, tmp_path, monkeypatch):
    """The early SELECT's search starts above the checkpoint in the state; the new mail is acted on once."""
    _, lab = measure(dovecot, tmp_path, monkeypatch, MOVE_THEN_SEEN)
    lab.deliver("report 3", "invoice 2")
    lab.write(MOVE_THEN_SEEN)  # its password's variable again (measure() undid the first)
    counter = RoundTrips(monkeypatch)
    result = lab.run()
    monkeypatch.undo()
    assert result.code == 0, result.err
    [(select, writer)] = counter.sent_with(b" SELECT ")
    assert writer.startswith("mailrules-connect-")
    assert re.search(rb" SELECT \S+\r\n\S+ UID SEARCH RETURN \(ALL\) UID 5:\*\r\n", select), select
    assert lab.where() == {"report 1": ["Reports"], "report 2": ["Reports"], "report 3": ["Reports"],
                           "invoice": ["INBOX"], "invoice 2": ["INBOX"], "chat": ["INBOX"]}


@pytest.mark.parametrize("local", ["1", "0"], ids=["decided on the fetched headers", "searched by the server"])
def test_rules_on_headers_that_match_nothing_add_no_round_trip(dovecot, tmp_path, monkeypatch, local):
    """Ten more header rules cost no round trip: decided on the header fields the pass's opening
    fetches (mailrules.local_headers), or, with that off, searched in the opening's round trip."""
    saved = os.environ.get("MAILRULES_LOCAL_HEADERS")
    os.environ["MAILRULES_LOCAL_HEADERS"] = local  # not monkeypatch: measure() undoes it
    try:
        one, _ = measure(dovecot, tmp_path, monkeypatch, NOTHING)
        many_rules = NOTHING + "".join(
            f"""
    - name: nothing {i}
      match: {{header: {{List-Id: list{i}.example.org}}, from: nobody{i}@example.org}}
      actions: [{{move: Lists/{i}}}]
"""
            for i in range(10)
        )
        many, _ = measure(dovecot, tmp_path, monkeypatch, many_rules)
    finally:
        if saved is None:
            os.environ.pop("MAILRULES_LOCAL_HEADERS", None)
        else:
            os.environ["MAILRULES_LOCAL_HEADERS"] = saved
    assert one.count >= 2  # the counter counts: login, then NAMESPACE, ID, SELECT and a search at least
    searched = many.bytes_sent > one.bytes_sent + 10 * len("HEADER List-Id list0.example.org")
    assert searched == (local == "0")
    assert many.count == one.count


def test_each_action_of_a_rule_costs_one_round_trip_even_into_a_new_folder(dovecot, tmp_path, monkeypatch):
    """No FETCH per rule for the log, no failed MOVE before CREATE: the flag's UID SEARCH for the
    messages it changes (journaled so that undo touches only those), its STORE, and the MOVE."""
    idle, _ = pass_cost(dovecot, tmp_path, monkeypatch, NOTHING)
    acting, lab = pass_cost(dovecot, tmp_path, monkeypatch, """
    - name: reports
      match: {subject: report}
      actions: [flag, {move: Reports/2026}]
""")
    assert acting == idle + 3
    assert lab.where() == {"report 1": ["Reports/2026"], "report 2": ["Reports/2026"], "invoice": ["INBOX"],
                           "chat": ["INBOX"]}
    assert "Reports/2026" in lab.folders()


@pytest.mark.parametrize("folders", [(), ("Invoices",)], ids=["new folder", "existing folder"])
def test_a_copy_costs_one_round_trip(dovecot, tmp_path, monkeypatch, folders):
    idle, _ = pass_cost(dovecot, tmp_path, monkeypatch, NOTHING, folders=folders)
    copying, lab = pass_cost(dovecot, tmp_path, monkeypatch, """
    - name: keep invoices
      match: {subject: invoice}
      actions: [{copy: Invoices}]
""", folders=folders)
    assert copying == idle + 1
    assert lab.where()["invoice"] == ["INBOX", "Invoices"]


@pytest.mark.parametrize("folders", [(), ("Ärger/Rechnungen",)], ids=["new folder", "existing folder"])
def test_a_non_ascii_destination_is_listed_and_created_like_any_other(dovecot, tmp_path, monkeypatch, folders):
    idle, _ = pass_cost(dovecot, tmp_path, monkeypatch, NOTHING, folders=folders)
    moving, lab = pass_cost(dovecot, tmp_path, monkeypatch, """
    - name: invoices
      match: {subject: invoice}
      actions: [{move: Ärger/Rechnungen}]
""", folders=folders)
    assert moving == idle + 1
    assert lab.where()["invoice"] == ["Ärger/Rechnungen"]


def run_move_then_seen(lab: Lab, rewrite_server):
    """`run --once` of MOVE_THEN_SEEN over SUBJECTS, every line of the server's passed through
    `rewrite_server` on the way (`TcpProxy`)."""
    lab.deliver(*SUBJECTS)
    with TcpProxy(lab.server.host, lab.server.port, rewrite_server=rewrite_server) as proxy:
        lab.write(MOVE_THEN_SEEN, port=proxy.port)
        return lab.run()


def test_a_search_refused_in_the_pipeline_is_sent_again_on_its_own(lab, monkeypatch):
    monkeypatch.setenv("MAILRULES_LOCAL_HEADERS", "0")  # the rules searched by the server, pipelined
    searches = 0

    def refuse_the_second_search(line: bytes) -> bytes:
        # the first search finds the new messages; the second is the first rule's, pipelined
        nonlocal searches
        if b" OK " in line and b"Search completed" in line:
            searches += 1
            if searches == 2:
                tag = line.split(b" ", 1)[0]
                return tag + b" NO [SERVERBUG] Internal error occurred. Refer to server log.\r\n"
        return line

    result = run_move_then_seen(lab, rewrite_server=refuse_the_second_search)
    assert result.code == 0, result.err
    assert searches >= 3  # the refused one came back alone
    assert lab.where() == {"report 1": ["Reports"], "report 2": ["Reports"], "invoice": ["INBOX"], "chat": ["INBOX"]}
    assert lab.flags() == {"invoice": {"\\Seen"}, "chat": set()}


@pytest.mark.parametrize("tag", [rb'"mrp', rb'"[A-Z]'], ids=["pipelined", "sent alone"])
def test_a_search_answered_without_its_esearch_is_asked_again(lab, monkeypatch, tag):
    """RFC 4731 (3.1): a search with RETURN gets one ESEARCH response, even when nothing matches.
    A tagged OK without it is not "nothing matched": the search is asked again. (The pipeline's
    tags begin with mrp; imaplib's, of the searches sent alone, with a capital.)"""
    monkeypatch.setenv("MAILRULES_LOCAL_HEADERS", "0")  # the rules searched by the server, pipelined
    dropped = []

    def drop_the_first_esearch(line: bytes) -> bytes:
        if re.match(rb"\* ESEARCH \(TAG " + tag, line) and not dropped:
            dropped.append(line)
            return b""
        return line

    result = run_move_then_seen(lab, rewrite_server=drop_the_first_esearch)
    assert result.code == 0, result.err
    assert dropped, "no such ESEARCH went by"
    assert lab.where() == {"report 1": ["Reports"], "report 2": ["Reports"], "invoice": ["INBOX"], "chat": ["INBOX"]}
    assert lab.flags() == {"invoice": {"\\Seen"}, "chat": set()}


def test_a_new_connection_learns_its_namespace_and_server_in_one_round_trip(dovecot, imap_user, monkeypatch):
    from mailrules.imap.identify import ask_namespace_and_id
    from mailrules.imap.session import ImapSession

    session = ImapSession(dovecot.client(imap_user), "me")
    counter = RoundTrips(monkeypatch)
    ask_namespace_and_id(session)
    assert counter.count == 1
    assert (session.namespace(), session.server_software) == (("", "/"), "dovecot")
    assert counter.count == 1  # learnt, not asked again


@pytest.mark.parametrize(("answer", "expected"), [
    (b'(("" "/")) NIL NIL', ("", "/")),
    (b'(("INBOX." ".")) (("user." ".")) (("" "."))', ("INBOX.", ".")),
    (b"NIL NIL NIL", ("", "/")),
    (b"((", None),
    (None, None),
])
def test_the_personal_namespace_is_read_from_a_namespace_answer(answer, expected):
    from mailrules.imap.identify import personal_namespace

    assert personal_namespace(answer) == expected


@pytest.mark.parametrize(("answer", "expected"), [
    (b'("name" "Dovecot" "version" "2.3")', "dovecot"),
    (b'("name" "Cyrus IMAPD")', "cyrus imapd"),
    (b"NIL", ""),
    (b'("vendor" "x")', ""),
    (None, None),
])
def test_the_server_s_name_is_read_from_an_id_answer(answer, expected):
    from mailrules.imap.identify import server_name

    assert server_name(answer) == expected


def test_closing_after_a_run_sends_logout_and_waits_for_nothing(dovecot, imap_user, monkeypatch):
    """Every answer of the run has been read: the BYE would cost a round trip and tell nothing."""
    from mailrules.imap.pool import SessionPool
    from mailrules.imap.session import ImapSession

    pool = SessionPool(None, connect=lambda name: ImapSession(dovecot.client(imap_user), name))  # type: ignore[arg-type]
    pool.get("me").namespace()
    counter = RoundTrips(monkeypatch)
    pool.close()
    assert counter.bytes_sent > 0  # the LOGOUT
    assert counter.count == 0


def test_the_action_log_names_the_message_ids_fetched_at_the_start_of_the_pass(lab):
    lab.deliver({"subject": "report", "message_id": "<r1@example.org>"}, "chat")
    lab.write("""
        - name: reports
          match: {subject: report}
          actions: [flag, {move: Reports}]
    """)
    result = lab.run()
    assert result.code == 0
    lines = [line for line in result.err.splitlines() if "'reports'" in line]
    assert len(lines) == 2 and all("<r1@example.org>" in line for line in lines), result.err


# ----------------------------------------------------------------------------- parsing


@pytest.mark.parametrize(
    ("after", "parts", "name"),
    [
        (b'(\\HasNoChildren) "/" "Lists/dev"', None, "Lists/dev"),
        (b"() \"/\" Junk", None, "Junk"),
        (b'(\\Noselect) NIL "a \\"b\\""', None, 'a "b"'),
        (b'() "/" {5}', [b"* LIST () \"/\" {5}", b"Caf&AOk-", b""], "Café"),
        (b'"Lists/dev" (UIDNEXT 12)', None, "Lists/dev"),
        (b"Archive (UIDNEXT 3)", None, "Archive"),
    ],
)
def test_mailbox_names_are_read_from_list_and_status_answers(after, parts, name):
    assert _mailbox_name(after, parts or [after]) == name


def test_a_folded_message_id_is_unfolded():
    raw = b"Message-ID:\r\n <long.id@example.org>\r\nList-Id: x\r\n\r\n"
    assert parse_message_id(raw) == "<long.id@example.org>"
    assert parse_message_id(b"List-Id: x\r\n\r\n") == ""


def test_a_connection_lost_during_the_opening_round_trip_loses_and_repeats_nothing(lab, monkeypatch):
    from mailrules.imap import internals

    lab.deliver(*SUBJECTS)
    lab.write("""
        - name: reports
          match: {subject: report}
          actions: [{copy: Saved}, {move: Reports}]
    """)
    real = internals.read_some
    reads = 0

    def die_after_the_first_answers(imap, size=1 << 18):
        nonlocal reads
        reads += 1
        if reads > 1:
            raise ConnectionResetError("the link died")
        return real(imap, 200)  # the first answers, the rest lost with the link

    monkeypatch.setattr(internals, "read_some", die_after_the_first_answers)
    assert lab.run().code == 1
    assert reads > 1
    assert lab.where() == {s: ["INBOX"] for s in SUBJECTS}
    monkeypatch.setattr(internals, "read_some", real)
    assert lab.run().code == 0
    assert lab.where() == {"report 1": ["Reports", "Saved"], "report 2": ["Reports", "Saved"], "invoice": ["INBOX"],
                           "chat": ["INBOX"]}
    assert lab.run().code == 0  # nothing left over
    assert len(lab.messages("Saved")) == 2
