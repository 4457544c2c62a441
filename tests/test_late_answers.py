"""A terminal action's answer is read late (mailrules/imap/later.py): the MOVE goes out, the pass
sends its next command at once, and the MOVE's answer is read on the way to that command's.

Its messages leave play whether it succeeds or fails (mailrules/kernel.py), so nothing the pass
does next depends on it; what it did is journaled when its answer is read, before the pass ends.
On a real Dovecot; faults through the test kit's TcpProxy.
"""

from __future__ import annotations

import hashlib
import threading

from helpers import Lab
from test_pipelining import MOVE_THEN_SEEN, NOTHING, SUBJECTS, measure, pass_cost

from mailrules.testing.proxy import TcpProxy

# one level longer than a file name may be: Dovecot refuses to create it (and so the MOVE into it)
UNCREATABLE = "x" * 300


def contents(lab: Lab) -> list[str]:
    """The sha1 of every message in every folder, sorted: what was lost or doubled, by content."""
    out = []
    with lab.client() as client:
        for flags, _sep, name in client.list_folders():
            if b"\\Noselect" in flags:
                continue
            client.select_folder(name, readonly=True)
            uids = client.search(["ALL"])
            if uids:
                out += [hashlib.sha1(d[b"BODY[]"]).hexdigest() for d in client.fetch(uids, ["BODY.PEEK[]"]).values()]
    return sorted(out)


def test_a_move_does_not_wait_for_its_answer_before_the_next_rule_s_command(dovecot, tmp_path, monkeypatch):
    """The MOVE goes in the round trip of the next rule's first command (the seen's SEARCH)."""
    idle, _ = pass_cost(dovecot, tmp_path, monkeypatch, NOTHING, folders=("Reports",))
    cost, lab = pass_cost(dovecot, tmp_path, monkeypatch, MOVE_THEN_SEEN, folders=("Reports",))
    assert cost == idle + 2  # the seen's SEARCH (with the MOVE's answer) and its STORE
    assert lab.where() == {"report 1": ["Reports"], "report 2": ["Reports"], "invoice": ["INBOX"],
                           "chat": ["INBOX"]}
    assert lab.flags() == {"invoice": {"\\Seen"}, "chat": set()}


def test_a_move_s_answer_read_late_is_journaled_for_undo(lab):
    """Its COPYUID mapping and flags reach the journal: undo puts the messages back."""
    lab.deliver(*SUBJECTS)
    lab.write(MOVE_THEN_SEEN)
    assert lab.run().code == 0
    assert lab.subjects("Reports") == ["report 1", "report 2"]
    result = lab.cli("undo", "--last", "--yes")
    assert result.code == 0, result.err
    assert lab.where() == {s: ["INBOX"] for s in SUBJECTS}


def test_a_move_refused_while_the_next_command_is_in_flight_fails_alone_and_waits_for_its_retry(lab):
    """The refused MOVE's messages resume later at that rule; the next rules act on the others
    and never on them meanwhile."""
    lab.deliver(*SUBJECTS)
    before = contents(lab)
    lab.write(f"""
        - name: reports
          match: {{subject: report}}
          actions: [{{move: {UNCREATABLE}}}]
        - name: invoices
          match: {{subject: invoice}}
          actions: [seen]
        - name: everything
          actions: [flag]
    """)
    result = lab.run()
    assert result.code != 0
    assert "failed for 2 messages" in result.err
    assert lab.where() == {s: ["INBOX"] for s in SUBJECTS}
    assert lab.flags() == {"report 1": set(), "report 2": set(), "invoice": {"\\Seen", "\\Flagged"},
                           "chat": {"\\Flagged"}}
    assert contents(lab) == before
    lab.write("""
        - name: reports
          match: {subject: report}
          actions: [{move: Reports}]
        - name: everything
          actions: [flag]
    """)
    assert lab.run().code == 0  # the retry: at the move, then the rules after it
    assert lab.flags("Reports") == {"report 1": set(), "report 2": set()}  # moved: out of play
    assert contents(lab) == before


def test_a_connection_dropped_before_a_move_s_answer_is_read_loses_and_repeats_nothing(lab):
    """The server moved the messages; the link dies before the client reads that (the next
    rule's command already sent). The next run finds them moved: nothing lost or done twice."""
    lab.deliver(*SUBJECTS)
    before = contents(lab)
    links: list[TcpProxy] = []

    def drop_at_the_move_s_answer(line: bytes) -> bytes:
        if b"OK" in line and b"Move completed" in line:
            threading.Timer(0.05, links[0].drop_all).start()
            return b""  # never reaches the client
        return line

    with TcpProxy(lab.server.host, lab.server.port, rewrite_server=drop_at_the_move_s_answer) as proxy:
        links.append(proxy)
        lab.write(MOVE_THEN_SEEN, port=proxy.port)
        assert lab.run().code != 0
    assert lab.subjects("Reports") == ["report 1", "report 2"]  # done by the server, unread
    lab.write(MOVE_THEN_SEEN)
    assert lab.run().code == 0
    assert lab.where() == {"report 1": ["Reports"], "report 2": ["Reports"], "invoice": ["INBOX"],
                           "chat": ["INBOX"]}
    assert lab.flags() == {"invoice": {"\\Seen"}, "chat": set()}
    assert contents(lab) == before
    assert lab.run().code == 0  # nothing left over
    assert contents(lab) == before


SEEN_THEN_FLAG = """
    - name: reports
      match: {subject: report}
      actions: [seen]
    - name: invoices
      match: {subject: invoice}
      actions: [flag]
"""


def test_the_next_rule_s_search_goes_in_the_round_trip_of_the_store_before(dovecot, tmp_path, monkeypatch):
    """The flag's search of the invoices (the messages it changes) rides with the seen's STORE."""
    idle, _ = pass_cost(dovecot, tmp_path, monkeypatch, NOTHING)
    cost, lab = pass_cost(dovecot, tmp_path, monkeypatch, SEEN_THEN_FLAG)
    assert cost == idle + 3  # seen: SEARCH, STORE (with the flag's SEARCH); flag: STORE
    assert lab.flags() == {"report 1": {"\\Seen"}, "report 2": {"\\Seen"}, "invoice": {"\\Flagged"},
                           "chat": set()}


SEEN_THEN_LARGE_FLAGGED = """
    - name: reports
      match: {subject: report}
      actions: [seen]
    - name: large
      match: {larger: 10}
      actions: [flag]
"""


def test_a_rule_s_search_and_its_first_action_s_go_ahead_together(dovecot, tmp_path, monkeypatch):
    """With the seen's STORE go the size rule's search and its flag's search (over every message
    still in play): the flag's STORE is the size rule's only round trip."""
    idle, _ = pass_cost(dovecot, tmp_path, monkeypatch, NOTHING)
    cost, lab = pass_cost(dovecot, tmp_path, monkeypatch, SEEN_THEN_LARGE_FLAGGED)
    assert cost == idle + 3  # seen: SEARCH, STORE (with the size rule's two SEARCHes); flag: STORE
    assert lab.flags() == {"report 1": {"\\Seen", "\\Flagged"}, "report 2": {"\\Seen", "\\Flagged"},
                           "invoice": {"\\Flagged"}, "chat": {"\\Flagged"}}


def test_a_search_sent_ahead_is_searched_again_once_a_store_of_ours_changed_what_it_reads(lab):
    """The flagged rule's search goes ahead with the flag's STORE, which changes its answer: the
    answer sent ahead is dropped, the rule sees the messages as the rule before left them."""
    lab.deliver(*SUBJECTS)
    lab.write("""
        - name: reports
          match: {subject: report}
          actions: [flag]
        - name: flagged
          match: {flagged: true}
          actions: [{add_keyword: $Hot}]
    """)
    assert lab.run().code == 0
    assert lab.flags() == {"report 1": {"\\Flagged", "$Hot"}, "report 2": {"\\Flagged", "$Hot"}, "invoice": set(),
                           "chat": set()}


def test_a_flag_action_s_search_sent_ahead_journals_what_it_changes_for_undo(lab):
    """The seen's search of the messages it changes, answered ahead, is what undo reverses: the
    message already seen stays seen."""
    lab.deliver("report 1", "report 2", "invoice")
    lab.deliver("chat", flags=["\\Seen"])
    lab.write("""
        - name: reports
          match: {subject: report}
          actions: [flag]
        - name: everything else
          match: {not: {subject: report}}
          actions: [seen]
    """)
    assert lab.run().code == 0
    assert lab.flags() == {"report 1": {"\\Flagged"}, "report 2": {"\\Flagged"}, "invoice": {"\\Seen"},
                           "chat": {"\\Seen"}}
    assert lab.cli("undo", "--last", "--yes").code == 0
    assert lab.flags() == {"report 1": set(), "report 2": set(), "invoice": set(), "chat": {"\\Seen"}}


SEEN_KEYWORD_THEN_LARGE = """
    - name: reports
      match: {subject: report}
      actions: [seen]
    - name: invoices
      match: {subject: invoice}
      actions: [{add_keyword: $Billing}]
    - name: large
      match: {larger: 10}
      actions: [flag]
"""


def test_a_search_sent_ahead_is_not_sent_again_while_its_answer_stands(dovecot, tmp_path, monkeypatch):
    """The size rule's search goes ahead two rules early, with the seen's STORE; the keyword's
    turn, one rule early, finds it sent (nothing of ours changed what it reads) and sends none."""
    counter, lab = measure(dovecot, tmp_path, monkeypatch, SEEN_KEYWORD_THEN_LARGE)
    assert len(counter.sent_with(b"LARGER 10")) == 1
    assert lab.flags() == {"report 1": {"\\Seen", "\\Flagged"}, "report 2": {"\\Seen", "\\Flagged"},
                           "invoice": {"$Billing", "\\Flagged"}, "chat": {"\\Flagged"}}


FLAG_THEN_FLAG = """
    - name: reports
      match: {subject: report}
      actions: [flag]
    - name: everything else
      match: {not: {subject: report}}
      actions: [flag]
"""


def test_a_search_sent_ahead_still_holds_for_the_messages_a_store_of_ours_left_alone(dovecot, tmp_path, monkeypatch):
    """The second flag's search (of the messages it changes) goes ahead with the first flag's
    STORE, which flags other messages: its answer still holds for its own, none is sent again."""
    idle, _ = pass_cost(dovecot, tmp_path, monkeypatch, NOTHING)
    cost, lab = pass_cost(dovecot, tmp_path, monkeypatch, FLAG_THEN_FLAG)
    assert cost == idle + 3  # reports: SEARCH, STORE (with the next rule's SEARCH); the rest: STORE
    assert lab.flags() == {s: {"\\Flagged"} for s in SUBJECTS}


def test_a_search_sent_ahead_over_other_messages_journals_what_it_changes_for_undo(lab):
    """The message flagged before the run stays flagged after the undo: the answer sent ahead,
    kept across the other rule's STORE of the same flag, said it had the flag already."""
    lab.deliver("report 1", "report 2", "invoice")
    lab.deliver("chat", flags=["\\Flagged"])
    lab.write(FLAG_THEN_FLAG)
    assert lab.run().code == 0
    assert lab.flags() == {s: {"\\Flagged"} for s in SUBJECTS}
    assert lab.cli("undo", "--last", "--yes").code == 0
    assert lab.flags() == {"report 1": set(), "report 2": set(), "invoice": set(), "chat": {"\\Flagged"}}


SEEN_AND_MOVE_THEN_FLAG = """
    - name: reports
      match: {subject: report}
      actions: [seen, {move: Reports}]
    - name: invoices
      match: {subject: invoice}
      actions: [flag]
"""


def test_the_next_rule_s_search_goes_ahead_past_a_move_not_waited_for(dovecot, tmp_path, monkeypatch):
    """The reports' MOVE is read with the next command's answer, so the invoices' flag is the
    next step waited for: its search goes with the seen's STORE."""
    idle, _ = pass_cost(dovecot, tmp_path, monkeypatch, NOTHING, folders=("Reports",))
    cost, lab = pass_cost(dovecot, tmp_path, monkeypatch, SEEN_AND_MOVE_THEN_FLAG, folders=("Reports",))
    assert cost == idle + 3  # seen: SEARCH, STORE (with the flag's SEARCH); MOVE; flag: STORE (with its answer)
    assert lab.where() == {"report 1": ["Reports"], "report 2": ["Reports"], "invoice": ["INBOX"],
                           "chat": ["INBOX"]}
    assert lab.flags() == {"invoice": {"\\Flagged"}, "chat": set()}
    assert lab.flags("Reports") == {"report 1": {"\\Seen"}, "report 2": {"\\Seen"}}


FLAG_FLAG_THEN_COPY = """
    - name: everything
      actions: [flag]
    - name: huge
      match: {larger: 10MB}
      actions: [flag]
    - name: copies
      actions: [{copy: Copies}]
"""


def test_a_copy_while_searches_sent_ahead_are_in_flight(lab):
    """The huge rule matches nothing, so its flag's search, sent ahead with the first STORE, is
    still unread when the copy asks whether a MOVE of ours to its folder is in flight: a search
    is no MOVE (a random run of the in-memory equivalence found this raising AttributeError)."""
    lab.deliver(*SUBJECTS)
    before = contents(lab)
    lab.write(FLAG_FLAG_THEN_COPY)
    result = lab.run()
    assert result.code == 0, result.err
    assert lab.flags() == {s: {"\\Flagged"} for s in SUBJECTS}
    assert lab.flags("Copies") == {s: {"\\Flagged"} for s in SUBJECTS}
    assert sorted(contents(lab)) == sorted(before * 2)
