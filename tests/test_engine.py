"""The rule engine's semantics on a real Dovecot (spec: Semantics).

Rules in file order, each seeing what earlier rules left; stop; progress across runs;
failures, retries and giving up; other clients changing the mailbox mid-pass; UIDVALIDITY
changes; crashes mid-pass. Every failure test checks that no mail was lost or processed twice.
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from helpers import Acct, Lab, write_config

from mailrules.engine import Outcome
from mailrules.imap.session import ImapSession
from mailrules.plugins import Action, Predicate, hookimpl
from mailrules.state import StateStore
from mailrules.testing.proxy import TcpProxy


def ok(outcomes) -> bool:
    return all(isinstance(o, Outcome) and o.ok for o in outcomes)


# ----------------------------------------------------------------------------- order and stop


def test_a_rule_sees_the_flags_an_earlier_rule_set(lab):
    lab.deliver("report", "chat")
    lab.write("""
        - name: flag reports
          match: {subject: report}
          actions: [flag]
        - name: file flagged
          match: {flagged: true}
          actions: [{move: Flagged}]
    """)
    assert lab.run().code == 0
    assert lab.where() == {"report": ["Flagged"], "chat": ["INBOX"]}


def test_a_rule_does_not_see_a_flag_an_earlier_rule_cleared(lab):
    lab.deliver("report", flags=["\\Flagged"])
    lab.write("""
        - name: unflag everything
          actions: [unflag]
        - name: file flagged
          match: {flagged: true}
          actions: [{move: Flagged}]
    """)
    assert lab.run().code == 0
    assert lab.where() == {"report": ["INBOX"]}


def test_rules_apply_in_file_order_including_included_files_first(lab):
    (lab.tmp / "first.yaml").write_text(
        "rules:\n  - name: included\n    actions: [{add_keyword: $First}]\n"
    )
    lab.deliver("x")
    lab.write("""
        - name: own
          match: {keyword: $First}
          actions: [{add_keyword: $Second}]
    """, top="include: [first.yaml]")
    assert lab.run().code == 0
    assert lab.flags() == {"x": {"$First", "$Second"}}


def test_stop_keeps_later_rules_away_from_matched_messages(lab):
    lab.deliver("vip", "other")
    lab.write("""
        - name: vip
          match: {subject: vip}
          actions: [seen]
          stop: true
        - name: everything else
          actions: [flag]
    """)
    assert lab.run().code == 0
    assert lab.flags() == {"vip": {"\\Seen"}, "other": {"\\Flagged"}}


def test_without_stop_later_rules_see_the_message_too(lab):
    lab.deliver("vip")
    lab.write("""
        - name: vip
          match: {subject: vip}
          actions: [seen]
        - name: everything
          actions: [flag]
    """)
    assert lab.run().code == 0
    assert lab.flags() == {"vip": {"\\Seen", "\\Flagged"}}


@pytest.mark.parametrize("terminal", ["{move: Lists}", "trash", "delete"])
def test_move_trash_and_delete_imply_stop(lab, terminal):
    lab.deliver("gone", "stays")
    lab.write(f"""
        - name: remove
          match: {{subject: gone}}
          actions: [{terminal}]
        - name: copy the rest
          actions: [{{copy: Seen-by-later}}]
    """)
    assert lab.run().code == 0
    assert lab.subjects("Seen-by-later") == ["stays"]


def test_deleted_messages_are_seen_unless_deleted_false(lab):
    a, b = lab.deliver("a", "b")
    with lab.client() as other:
        other.select_folder("INBOX")
        other.add_flags([a, b], ["\\Deleted"])
    lab.write("""
        - name: skip deleted
          match: {subject: a, deleted: false}
          actions: [flag]
        - name: sees deleted
          match: {subject: b}
          actions: [{add_keyword: $Seen}]
    """)
    assert lab.run().code == 0
    assert lab.flags() == {"a": {"\\Deleted"}, "b": {"\\Deleted", "$Seen"}}


def test_a_disabled_rule_does_nothing(lab):
    lab.deliver("x")
    lab.write("""
        - name: switched off
          enabled: false
          actions: [{move: Elsewhere}]
        - name: switched on
          actions: [flag]
    """)
    assert lab.run().code == 0
    assert lab.flags() == {"x": {"\\Flagged"}}


def test_a_rule_with_account_applies_only_to_that_account(dovecot, tmp_path, monkeypatch):
    lab = Lab(dovecot, dovecot.add_user(), tmp_path, monkeypatch)
    other = dovecot.add_user()
    lab.deliver("mine")
    lab.deliver("theirs", user=other)
    lab.config = write_config(tmp_path, monkeypatch, dovecot, lab.user, """
        - name: only other
          account: other
          actions: [flag]
        - name: everyone
          actions: [seen]
    """, others={"other": Acct(other, dovecot.port)})
    assert lab.run().code == 0
    assert lab.flags() == {"mine": {"\\Seen"}}
    assert lab.flags(user=other) == {"theirs": {"\\Seen", "\\Flagged"}}


def test_a_rule_with_mailbox_applies_only_there(lab):
    lab.deliver("in inbox")
    lab.deliver("in lists", folder="Lists/dev")
    lab.deliver("in news", folder="News")
    lab.write("""
        - name: lists only
          mailbox: Lists/dev
          actions: [flag]
        - name: lists and news
          mailbox: [Lists/dev, News]
          actions: [{add_keyword: $Bulk}]
        - name: every watched mailbox
          actions: [seen]
    """, watch=["INBOX", "Lists/dev", "News"])
    assert lab.run().code == 0
    assert lab.flags() == {"in inbox": {"\\Seen"}}
    assert lab.flags("Lists/dev") == {"in lists": {"\\Seen", "\\Flagged", "$Bulk"}}
    assert lab.flags("News") == {"in news": {"\\Seen", "$Bulk"}}


def test_unwatched_mailboxes_are_left_alone(lab):
    lab.deliver("elsewhere", folder="Other")
    lab.write("""
        - name: all
          actions: [flag]
    """)
    assert lab.run().code == 0
    assert lab.flags("Other") == {"elsewhere": set()}


# ----------------------------------------------------------------------------- progress


def test_a_second_run_processes_only_new_mail(lab):
    lab.deliver("one", "two")
    lab.write("""
        - name: archive a copy
          actions: [{copy: Archive}]
    """)
    assert lab.run().code == 0
    lab.deliver("three")
    assert lab.run().code == 0
    assert sorted(lab.subjects("Archive")) == ["one", "three", "two"]
    assert lab.run().code == 0
    assert sorted(lab.subjects("Archive")) == ["one", "three", "two"]


def test_a_processed_message_changed_by_the_user_is_not_processed_again(lab):
    (uid,) = lab.deliver("x")
    lab.write("""
        - name: flag
          actions: [flag]
    """)
    assert lab.run().code == 0
    with lab.client() as other:
        other.select_folder("INBOX")
        other.remove_flags([uid], ["\\Flagged"])
    assert lab.run().code == 0
    assert lab.flags() == {"x": set()}


def test_since_now_skips_the_mail_already_there(lab):
    lab.deliver("old")
    lab.write("""
        - name: flag
          actions: [flag]
    """)
    assert lab.run("--since-now").code == 0
    assert lab.flags() == {"old": set()}
    lab.deliver("new")
    assert lab.run().code == 0
    assert lab.flags() == {"old": set(), "new": {"\\Flagged"}}


def test_a_first_run_processes_the_mail_already_there(lab):
    lab.deliver("old")
    lab.write("""
        - name: flag
          actions: [flag]
    """)
    assert lab.run().code == 0
    assert lab.flags() == {"old": {"\\Flagged"}}


def test_rule_option_runs_only_the_named_rules_and_does_not_use_up_the_mail(lab):
    lab.deliver("x")
    lab.write("""
        - name: flag
          actions: [flag]
        - name: keyword
          actions: [{add_keyword: $K}]
    """)
    assert lab.run("--rule", "keyword").code == 0
    assert lab.flags() == {"x": {"$K"}}
    assert lab.run().code == 0
    assert lab.flags() == {"x": {"$K", "\\Flagged"}}


# ----------------------------------------------------------------------------- failures and retries

# Dovecot refuses to create a mailbox whose name begins with '~'.
REFUSED = "~Refused"


def test_a_refused_action_fails_its_rule_and_the_other_rules_go_on(lab):
    lab.deliver("bad", "good")
    lab.write(f"""
        - name: refused move
          match: {{subject: bad}}
          actions: [{{move: "{REFUSED}"}}]
        - name: flag all
          actions: [flag]
    """)
    result = lab.run()
    assert result.code == 1
    assert "'refused move'" in result.err and "failed" in result.err
    assert lab.flags() == {"bad": set(), "good": {"\\Flagged"}}, "the failed message waits; others go on"


def refuse_store(line: bytes) -> bytes:
    """Every STORE is answered NO (the server did it, but says it did not: retrying is harmless)."""
    m = re.match(rb"(\S+) OK Store completed", line)
    return m.group(1) + b" NO [SERVERBUG] Internal error\r\n" if m else line


def test_a_store_refused_by_the_server_fails_that_rule_and_is_retried(lab):
    lab.deliver("flag me", "other")
    rules = """
        - name: flag it
          match: {subject: flag me}
          actions: [flag]
        - name: archive all
          actions: [{copy: Archive}]
    """
    with TcpProxy(lab.server.host, lab.server.port, rewrite_server=refuse_store) as proxy:
        lab.write(rules, port=proxy.port)
        result = lab.run()
    assert result.code == 1
    assert "'flag it'" in result.err and "SERVERBUG" in result.err
    assert lab.where() == {"flag me": ["INBOX"], "other": ["Archive", "INBOX"]}, "the later rule waits"
    lab.write(rules)
    assert lab.run().code == 0
    assert lab.where() == {"flag me": ["Archive", "INBOX"], "other": ["Archive", "INBOX"]}
    assert lab.flags() == {"flag me": {"\\Flagged"}, "other": set()}


def test_a_failed_message_is_retried_from_the_failed_rule_without_repeating_earlier_ones(lab):
    lab.deliver("bad")
    rules = """
        - name: copy first
          actions: [{{copy: Archive}}]
        - name: then move
          actions: [{{move: "{dest}"}}]
    """
    lab.write(rules.format(dest=REFUSED))
    assert lab.run().code == 1
    assert lab.where() == {"bad": ["Archive", "INBOX"]}
    lab.write(rules.format(dest="Done"))
    assert lab.run().code == 0
    assert lab.where() == {"bad": ["Archive", "Done"]}, "copied once, moved once"
    assert lab.run().code == 0
    assert lab.where() == {"bad": ["Archive", "Done"]}


def test_a_message_failing_five_times_is_given_up_and_listed_by_status(lab):
    lab.deliver("bad", "good")
    lab.write(f"""
        - name: refused move
          match: {{subject: bad}}
          actions: [{{move: "{REFUSED}"}}]
        - name: flag all
          actions: [flag]
    """)
    for attempt in range(1, 6):
        assert lab.run().code == 1, attempt
        status = lab.cli("status").out
        if attempt < 5:
            assert "pending 1, given up 0" in status, status
    assert "pending 0, given up 1" in status, status
    assert "given up: UID 1" in status and "'refused move'" in status and "after 5 attempts" in status
    sixth = lab.run()
    assert sixth.code == 0 and "refused move" not in sixth.err, "given up: not tried again"
    assert lab.where() == {"bad": ["INBOX"], "good": ["INBOX"]}
    assert lab.flags() == {"bad": set(), "good": {"\\Flagged"}}


def test_a_failed_message_moved_away_by_the_user_is_forgotten(lab):
    (uid,) = lab.deliver("bad")
    lab.write(f"""
        - name: refused move
          actions: [{{move: "{REFUSED}"}}]
    """)
    assert lab.run().code == 1
    with lab.client() as other:
        other.select_folder("INBOX")
        other.move([uid], "Trash")
    assert lab.run().code == 0
    assert "pending 0, given up 0" in lab.cli("status").out


REFUSED_SEARCH_RULES = """
    - name: bad raw
      match: {raw: "NOSUCHKEY 1"}
      actions: [{copy: Never}]
    - name: good
      actions: [flag]
"""


def test_a_refused_search_fails_only_that_rule(lab):
    lab.write(REFUSED_SEARCH_RULES)
    for attempt in (1, 2):
        lab.deliver(f"x{attempt}")
        result = lab.run()
        assert result.code == 1, attempt
        assert "'bad raw'" in result.err and "refused its search" in result.err, attempt
        assert "Never" not in lab.folders(), attempt
        assert lab.flags() == {f"x{n}": {"\\Flagged"} for n in range(1, attempt + 1)}, (
            f"run {attempt}: the other rule still runs on the messages")


def test_a_rule_whose_search_is_refused_gives_up_no_message_and_is_reported_every_pass(lab):
    lab.write(REFUSED_SEARCH_RULES)
    for attempt in range(1, 7):
        lab.deliver(f"m{attempt}")
        result = lab.run()
        assert result.code == 1, attempt
        assert "rule 'bad raw'" in result.err and "refused its search" in result.err, attempt
        status = lab.cli("status").out
        assert "pending 0, given up 0" in status, status
        assert "rule 'bad raw'" in status and "refused its search" in status, status
    assert lab.flags() == {f"m{n}": {"\\Flagged"} for n in range(1, 7)}
    assert "Never" not in lab.folders()


def test_a_refused_search_is_no_longer_reported_once_the_rule_is_fixed(lab):
    lab.deliver("x")
    lab.write(REFUSED_SEARCH_RULES)
    assert lab.run().code == 1
    lab.write(REFUSED_SEARCH_RULES.replace("NOSUCHKEY 1", "UNSEEN"))
    lab.deliver("y")
    assert lab.run().code == 0
    assert "refused its search" not in lab.cli("status").out
    assert lab.where() == {"x": ["INBOX", "Never"], "y": ["INBOX", "Never"]}  # x was kept for the rule


def nested_message(levels: int, text: str, subject: str = "deep") -> bytes:
    """A message holding `levels` message/rfc822 parts, one inside the other, `text` in the innermost."""
    inner = f"Subject: inner\r\n\r\n{text}\r\n".encode()
    for _ in range(levels):
        inner = b"Content-Type: message/rfc822\r\n\r\n" + inner
    return f"From: a@example.org\r\nSubject: {subject}\r\nMessage-ID: <{subject}@example.org>\r\n".encode() + inner


def test_a_message_nested_too_deep_to_parse_fails_alone_and_the_mailbox_goes_on(lab):
    from mailrules.testing.messages import make_message

    lab.deliver(nested_message(1200, "build #12 failed"),
                make_message(subject="plain", body="build #13 failed"), "other")
    lab.write(r"""
        - name: failed builds
          where: [{regex: {body: 'build #\d+ failed'}}]
          actions: [{move: Builds}]
        - name: flag all
          actions: [flag]
    """)
    for attempt in range(1, 6):
        result = lab.run()
        assert result.code == 1, (attempt, result.err)
        assert "Traceback" not in result.err and "RecursionError" not in result.err.split("failed on UID")[0]
        assert "rule 'failed builds'" in result.err and "UID 1" in result.err, result.err
        assert lab.where() == {"deep": ["INBOX"], "plain": ["Builds"], "other": ["INBOX"]}, attempt
        assert lab.flags("INBOX") == {"deep": set(), "other": {"\\Flagged"}}, attempt
    status = lab.cli("status").out
    assert "given up: UID 1 Message-ID <deep@example.org>" in status, status
    lab.deliver("later", make_message(subject="later build", body="build #14 failed"))
    assert lab.run().code == 0
    assert lab.where() == {"deep": ["INBOX"], "plain": ["Builds"], "other": ["INBOX"], "later": ["INBOX"],
                           "later build": ["Builds"]}


# ----------------------------------------------------------------------------- other clients mid-pass


class ExpungeOthers:
    """A where: predicate that, on its first call, has another client expunge some messages.

    That happens after our SEARCH and FETCH and before our actions: the worst moment.
    """

    def __init__(self, lab: Lab, doomed: set[str], *, how: str = "expunge") -> None:
        self.lab = lab
        self.doomed = doomed
        self.how = how
        self.fired = False

    @hookimpl
    def mailrules_predicates(self):
        return [Predicate(name="meanwhile", test=self.test, parse=lambda args: args,
                          needs=lambda args: ["header:Subject"])]

    @hookimpl
    def mailrules_actions(self):
        return [Action(name="meanwhile", run=lambda ctx, uids, arg: self.test(None, None))]

    def test(self, message, args) -> bool:
        if not self.fired:
            self.fired = True
            with self.lab.client() as other:
                other.select_folder("INBOX")
                data = other.fetch(other.search(["ALL"]), ["BODY.PEEK[HEADER.FIELDS (SUBJECT)]"])
                uids = [uid for uid, d in data.items()
                        if any(s.encode() in d[b"BODY[HEADER.FIELDS (SUBJECT)]"] for s in self.doomed)]
                if self.how == "move":
                    other.move(uids, "Trash")
                else:
                    other.add_flags(uids, ["\\Deleted"])
                    other.uid_expunge(uids)
        return True


ACTION_ORDERS = {
    "flag first": "[flag, {add_keyword: $Done}, {copy: Archive}, {move: Filed}]",
    "copy first": "[{copy: Archive}, flag, {add_keyword: $Done}, {move: Filed}]",
}


@pytest.mark.parametrize("order", list(ACTION_ORDERS))
@pytest.mark.parametrize("how", ["expunge", "move"])
def test_messages_removed_by_another_client_mid_batch_are_skipped_without_error(lab, how, order):
    lab.deliver("a", "b (doomed)", "c", "d (doomed)", "e")
    lab.write(f"""
        - name: everything
          where: [{{meanwhile: {{}}}}]
          actions: {ACTION_ORDERS[order]}
    """)
    outcomes = lab.engine(plugins=[ExpungeOthers(lab, {"doomed"}, how=how)])
    assert ok(outcomes), outcomes
    assert lab.subjects("INBOX") == []
    assert lab.flags("Filed") == {s: {"\\Flagged", "$Done"} for s in ("a", "c", "e")}
    assert lab.subjects("Archive") == ["a", "c", "e"]
    expected_trash = ["b (doomed)", "d (doomed)"] if how == "move" else []
    assert lab.subjects("Trash") == expected_trash
    assert lab.messages("Trash") == [] or all(not m.flags for m in lab.messages("Trash")), "untouched by us"


@pytest.mark.parametrize("action", ["{copy: Archive}", "{move: Archive}", "flag", "delete"])
def test_messages_expunged_by_another_client_right_before_an_action_are_skipped_without_error(lab, action):
    """Our next command after the expunge is the action itself: the server has not told us yet."""
    lab.deliver("a", "b (doomed)", "c")
    lab.write(f"""
        - name: everything
          actions: [meanwhile, {action}]
    """)
    outcomes = lab.engine(plugins=[ExpungeOthers(lab, {"doomed"})])
    assert ok(outcomes), outcomes
    places = {"{copy: Archive}": ["Archive", "INBOX"], "{move: Archive}": ["Archive"], "flag": ["INBOX"]}
    if action == "delete":
        assert lab.where() == {}
    else:
        assert lab.where() == {"a": places[action], "c": places[action]}
    store = StateStore(lab.state)
    try:
        assert store.all_pending() == []
    finally:
        store.close()


@pytest.mark.parametrize("verb", ["copy", "move"])
def test_messages_expunged_right_before_a_cross_account_transfer_are_skipped(dovecot, tmp_path, monkeypatch, verb):
    """The server may still answer a FETCH for a message it expunged meanwhile (with no body):
    nothing empty or wrong may reach the other account."""
    lab = Lab(dovecot, dovecot.add_user(), tmp_path, monkeypatch)
    other = dovecot.add_user()
    lab.deliver("a", "b (doomed)", "c")
    lab.config = write_config(tmp_path, monkeypatch, dovecot, lab.user, f"""
        - name: away
          account: me
          actions: [meanwhile, {{{verb}: other:Elsewhere}}]
    """, others={"other": Acct(other, dovecot.port)})
    outcomes = lab.engine(plugins=[ExpungeOthers(lab, {"doomed"})])
    assert ok(outcomes), outcomes
    copied = lab.messages("Elsewhere", user=other)
    assert sorted(m.subject for m in copied) == ["a", "c"]
    assert all(m.message_id for m in copied)
    assert lab.subjects() == (["a", "c"] if verb == "copy" else [])


def test_messages_expunged_mid_batch_are_not_retried_later(lab):
    lab.deliver("a", "b (doomed)")
    lab.write("""
        - name: everything
          where: [{meanwhile: {}}]
          actions: [{copy: Archive}]
    """)
    assert ok(lab.engine(plugins=[ExpungeOthers(lab, {"doomed"})]))
    store = StateStore(lab.state)
    try:
        assert store.all_pending() == []
    finally:
        store.close()
    assert lab.where() == {"a": ["Archive", "INBOX"]}


# ----------------------------------------------------------------------------- no loops


@pytest.mark.parametrize("watch", [["INBOX", "Lists"], ["Lists", "INBOX"]])
@pytest.mark.parametrize("action", ["copy", "move"])
def test_mail_that_mailrules_put_in_a_watched_mailbox_is_not_processed_there(lab, watch, action):
    lab.deliver("from inbox")
    lab.write(f"""
        - name: file
          mailbox: INBOX
          actions: [{{{action}: Lists}}]
        - name: flag whatever arrives in Lists
          mailbox: Lists
          actions: [flag]
    """, watch=watch)
    lab.deliver("delivered to lists", folder="Lists")
    assert lab.run().code == 0
    assert lab.run().code == 0  # whatever order the mailboxes are visited in
    assert lab.flags("Lists") == {"from inbox": set(), "delivered to lists": {"\\Flagged"}}


def test_mail_moved_into_another_accounts_watched_mailbox_is_not_processed_there(dovecot, tmp_path, monkeypatch):
    lab = Lab(dovecot, dovecot.add_user(), tmp_path, monkeypatch)
    other = dovecot.add_user()
    lab.deliver("forwarded")
    lab.deliver("their own", user=other)
    lab.config = write_config(tmp_path, monkeypatch, dovecot, lab.user, """
        - name: hand over
          account: me
          actions: [{move: other:INBOX}]
        - name: theirs
          account: other
          actions: [flag]
    """, others={"other": Acct(other, dovecot.port)})
    assert lab.run().code == 0
    assert lab.run().code == 0
    assert lab.flags(user=other) == {"forwarded": set(), "their own": {"\\Flagged"}}


def test_mail_put_back_into_a_watched_mailbox_by_a_rule_does_not_loop(lab):
    lab.deliver("ping")
    lab.write("""
        - name: there
          mailbox: INBOX
          actions: [{add_keyword: $Hop}, {move: Other}]
        - name: back
          mailbox: Other
          actions: [{move: INBOX}]
    """, watch=["INBOX", "Other"])
    for _ in range(3):
        assert lab.run().code == 0
    assert lab.where() == {"ping": ["Other"]}


# ----------------------------------------------------------------------------- UIDVALIDITY


def test_a_recreated_mailbox_reprocesses_only_mail_that_arrived_since_the_last_pass(lab):
    """The policy (engine._after_uidvalidity_change): old UIDs mean nothing; messages whose
    arrival time is before the last completed pass were processed then and are left alone."""
    old = dt.datetime(2020, 1, 1, 12, 0, 0)
    lab.deliver("processed 1", "processed 2", folder="Lists", date=old)
    lab.write("""
        - name: archive
          actions: [{copy: Archive}]
    """, watch=["Lists"])
    assert lab.run().code == 0
    with lab.client() as other:
        before = other.folder_status("Lists", ["UIDVALIDITY"])[b"UIDVALIDITY"]
        other.delete_folder("Lists")
        other.create_folder("Lists")
        after = other.folder_status("Lists", ["UIDVALIDITY"])[b"UIDVALIDITY"]
    assert after != before
    lab.deliver("processed 1", "processed 2", folder="Lists", date=old)  # restored with their dates
    lab.deliver("new", folder="Lists")
    result = lab.run()
    assert result.code == 0
    assert "UIDVALIDITY" in result.err
    assert sorted(lab.subjects("Archive")) == ["new", "processed 1", "processed 2"]
    assert lab.run().code == 0
    assert sorted(lab.subjects("Archive")) == ["new", "processed 1", "processed 2"]


# ----------------------------------------------------------------------------- crashes


class Crash(BaseException):
    """The process dies here (not an Exception: nothing in mailrules catches it)."""


class CrashOnce:
    """A plugin action `crash` that kills the run the first time it is called."""

    def __init__(self, kick=None) -> None:
        self.calls = 0
        self.kick = kick

    @hookimpl
    def mailrules_actions(self):
        return [Action(name="crash", run=self.run, delivery="at-least-once")]

    def run(self, ctx, uids, arg) -> None:
        self.calls += 1
        if self.calls == 1:
            if self.kick:
                self.kick()  # the server drops our connection: the next command fails
                return
            raise Crash()


def test_a_crash_between_actions_resumes_without_repeating_the_copy(lab):
    lab.deliver("a", "b")
    lab.write("""
        - name: file
          actions: [{copy: Archive}, crash, {move: Done}]
    """)
    plugin = CrashOnce()
    with pytest.raises(Crash):
        lab.engine(plugins=[plugin])
    assert sorted(lab.subjects("Archive")) == ["a", "b"]
    assert lab.subjects("Done") == []
    assert ok(lab.engine(plugins=[plugin]))
    assert plugin.calls == 2, "an at-least-once plugin action is run again"
    assert lab.where() == {"a": ["Archive", "Done"], "b": ["Archive", "Done"]}


def test_a_connection_kicked_between_actions_resumes_on_the_next_run(lab):
    lab.deliver("a", "b")
    lab.write("""
        - name: file
          actions: [{copy: Archive}, crash, {move: Done}]
    """)
    plugin = CrashOnce(kick=lambda: lab.server.kick(lab.user))
    first = lab.engine(plugins=[plugin])
    assert not ok(first)
    assert ok(lab.engine(plugins=[plugin]))
    assert lab.where() == {"a": ["Archive", "Done"], "b": ["Archive", "Done"]}


@pytest.mark.parametrize("verb", ["copy", "move"])
def test_a_crash_right_after_the_server_did_a_copy_or_move_does_not_repeat_or_lose_it(
    lab, monkeypatch, verb
):
    """The server carried out the command but we died before recording it as done."""
    lab.deliver("a", "b")
    actions = "[{copy: Dest}, flag]" if verb == "copy" else "[flag, {move: Dest}]"
    lab.write(f"""
        - name: file
          actions: {actions}
    """)
    method = "copy" if verb == "copy" else "move_later"  # a move reads its answer late (imap/later.py)
    real = getattr(ImapSession, method)

    def then_crash(self, uids, dest, **kwargs):
        sent = real(self, uids, dest, **kwargs)
        if verb == "move":
            sent.result()  # the server's answer read, not journaled
        raise Crash()

    monkeypatch.setattr(ImapSession, method, then_crash)
    with pytest.raises(Crash):
        lab.engine()
    monkeypatch.setattr(ImapSession, method, real)
    assert ok(lab.engine())
    expected = ["Dest", "INBOX"] if verb == "copy" else ["Dest"]
    assert lab.where() == {"a": expected, "b": expected}
    assert lab.flags("INBOX" if verb == "copy" else "Dest") == {"a": {"\\Flagged"}, "b": {"\\Flagged"}}


def test_a_crash_mid_move_without_move_capability_neither_duplicates_nor_loses(
    dovecot_factory, tmp_path, monkeypatch
):
    server = dovecot_factory(capabilities="IMAP4rev1 LITERAL+ UIDPLUS IDLE")
    lab = Lab(server, server.add_user(), tmp_path, monkeypatch)
    lab.deliver("a", "b")
    lab.write("""
        - name: file
          actions: [{move: Dest}]
    """)
    real = ImapSession.copy

    def copy_then_crash(self, uids, dest, **kwargs):
        real(self, uids, dest, **kwargs)
        raise Crash()

    monkeypatch.setattr(ImapSession, "copy", copy_then_crash)
    with pytest.raises(Crash):
        lab.engine()
    assert lab.where() == {"a": ["Dest", "INBOX"], "b": ["Dest", "INBOX"]}
    monkeypatch.setattr(ImapSession, "copy", real)
    assert ok(lab.engine())
    assert lab.where() == {"a": ["Dest"], "b": ["Dest"]}


def test_a_crash_after_a_cross_account_append_does_not_append_twice(dovecot, tmp_path, monkeypatch):
    lab = Lab(dovecot, dovecot.add_user(), tmp_path, monkeypatch)
    other = dovecot.add_user()
    lab.deliver("a", "b")
    lab.config = write_config(tmp_path, monkeypatch, dovecot, lab.user, """
        - name: away
          account: me
          actions: [{move: other:Inbox2}]
    """, others={"other": Acct(other, dovecot.port)})
    real = ImapSession.append
    appended = []

    def append_then_crash(self, *args, **kwargs):
        result = real(self, *args, **kwargs)
        appended.append(result)
        if len(appended) == 2:
            raise Crash()
        return result

    monkeypatch.setattr(ImapSession, "append", append_then_crash)
    with pytest.raises(Crash):
        lab.engine()
    monkeypatch.setattr(ImapSession, "append", real)
    assert ok(lab.engine())
    assert lab.where() == {}
    assert lab.where(user=other) == {"a": ["Inbox2"], "b": ["Inbox2"]}


def test_mail_that_arrived_after_a_crash_is_processed_by_the_next_run(lab):
    lab.deliver("before")
    lab.write("""
        - name: file
          actions: [crash, {move: Done}]
    """)
    plugin = CrashOnce()
    with pytest.raises(Crash):
        lab.engine(plugins=[plugin])
    lab.deliver("after")
    assert ok(lab.engine(plugins=[plugin]))
    assert lab.where() == {"before": ["Done"], "after": ["Done"]}


def test_the_journal_is_empty_after_a_completed_run(lab):
    lab.deliver("a")
    lab.write("""
        - name: file
          actions: [{copy: Archive}]
    """)
    assert lab.run().code == 0
    store = StateStore(lab.state)
    try:
        assert store.open_run("me", "INBOX") is None
        (state,) = store.mailboxes()
        assert state.checkpoint == 1
    finally:
        store.close()
