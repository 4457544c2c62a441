"""Every action of the spec's table, carried out on a real Dovecot by `mailrules run --once`.

Each test writes a rules file for a fresh user, delivers mail, runs mailrules and reads
the result back from the server (read-only, through another connection).
"""

from __future__ import annotations

import datetime as dt
import re

import pytest
from helpers import Acct, Lab, messages, write_config

from mailrules.testing.proxy import TcpProxy

NO_MOVE = "IMAP4rev1 LITERAL+ UIDPLUS IDLE"
NO_MOVE_NO_UIDPLUS = "IMAP4rev1 LITERAL+ IDLE"


def lab_on(server, tmp_path, monkeypatch, **kwargs) -> Lab:
    return Lab(server, server.add_user(), tmp_path, monkeypatch, **kwargs)


def mark_deleted_elsewhere(lab: Lab, uid: int, folder: str = "INBOX") -> None:
    """Another mail client marks a message \\Deleted (and does not expunge)."""
    with lab.client() as other:
        other.select_folder(folder)
        other.add_flags([uid], ["\\Deleted"])


# ----------------------------------------------------------------------------- flags


def test_flag_sets_flagged_on_matching_messages_only(lab):
    lab.deliver("urgent: a", "hello")
    lab.write("""
        - name: flag urgent
          match: {subject: urgent}
          actions: [flag]
    """)
    assert lab.run().code == 0
    assert lab.flags() == {"urgent: a": {"\\Flagged"}, "hello": set()}


def test_unflag_clears_flagged(lab):
    lab.deliver("a", "b", flags=["\\Flagged"])
    lab.write("""
        - name: unflag a
          match: {subject: a}
          actions: [unflag]
    """)
    assert lab.run().code == 0
    assert lab.flags() == {"a": set(), "b": {"\\Flagged"}}


def test_seen_sets_seen(lab):
    lab.deliver("newsletter", "personal")
    lab.write("""
        - name: read newsletters
          match: {subject: newsletter}
          actions: [seen]
    """)
    assert lab.run().code == 0
    assert lab.flags() == {"newsletter": {"\\Seen"}, "personal": set()}


def test_unseen_clears_seen(lab):
    lab.deliver("important", "other", flags=["\\Seen"])
    lab.write("""
        - name: keep important unread
          match: {subject: important}
          actions: [unseen]
    """)
    assert lab.run().code == 0
    assert lab.flags() == {"important": set(), "other": {"\\Seen"}}


def test_add_flag_sets_a_system_flag(lab):
    lab.deliver("replied elsewhere")
    lab.write("""
        - name: answered
          actions: [{add_flag: \\Answered}]
    """)
    assert lab.run().code == 0
    assert lab.flags() == {"replied elsewhere": {"\\Answered"}}


def test_add_flag_with_a_list_sets_every_flag(lab):
    lab.deliver("x")
    lab.write("""
        - name: several
          actions: [{add_flag: ['\\Answered', '\\Draft']}]
    """)
    assert lab.run().code == 0
    assert lab.flags() == {"x": {"\\Answered", "\\Draft"}}


def test_remove_flag_clears_a_system_flag_and_leaves_others(lab):
    lab.deliver("x", flags=["\\Answered", "\\Seen"])
    lab.write("""
        - name: not answered
          actions: [{remove_flag: \\Answered}]
    """)
    assert lab.run().code == 0
    assert lab.flags() == {"x": {"\\Seen"}}


def test_reading_messages_for_a_rule_never_sets_seen(lab):
    """Predicates fetch with BODY.PEEK: matching on the body leaves the message unread."""
    lab.deliver({"subject": "build", "body": "build #12 failed"}, {"subject": "other", "body": "fine"})
    lab.write(r"""
        - name: failed builds
          where: [{regex: {body: 'build #\d+ failed'}}]
          actions: [flag]
    """)
    assert lab.run().code == 0
    assert lab.flags() == {"build": {"\\Flagged"}, "other": set()}


# ----------------------------------------------------------------------------- keywords


def test_add_keyword_sets_one_keyword(lab):
    lab.deliver("dev", "other")
    lab.write("""
        - name: tag dev
          match: {subject: dev}
          actions: [{add_keyword: $Dev}]
    """)
    assert lab.run().code == 0
    assert lab.flags() == {"dev": {"$Dev"}, "other": set()}


def test_add_keyword_with_a_list_sets_every_keyword(lab):
    lab.deliver("dev")
    lab.write("""
        - name: tag dev
          actions: [{add_keyword: [$Dev, Work, $Later]}]
    """)
    assert lab.run().code == 0
    assert lab.flags() == {"dev": {"$Dev", "Work", "$Later"}}


def test_remove_keyword_clears_one_keyword(lab):
    lab.deliver("dev", flags=["$Dev", "$Keep"])
    lab.write("""
        - name: untag
          actions: [{remove_keyword: $Dev}]
    """)
    assert lab.run().code == 0
    assert lab.flags() == {"dev": {"$Keep"}}


def test_remove_keyword_with_a_list_clears_every_keyword(lab):
    lab.deliver("dev", flags=["$Dev", "Work", "$Keep", "\\Seen"])
    lab.write("""
        - name: untag
          actions: [{remove_keyword: [$Dev, Work]}]
    """)
    assert lab.run().code == 0
    assert lab.flags() == {"dev": {"$Keep", "\\Seen"}}


def strip_keyword_permission(line: bytes) -> bytes:
    """Make the server say that this mailbox cannot store new keywords."""
    if b"PERMANENTFLAGS" in line:
        return line.replace(b" \\*", b"")
    return line


def test_keyword_on_a_mailbox_without_keyword_support_fails_naming_rule_and_mailbox(lab):
    lab.deliver("dev")
    with TcpProxy(lab.server.host, lab.server.port, rewrite_server=strip_keyword_permission) as proxy:
        lab.write("""
            - name: tag dev
              actions: [{add_keyword: $Dev}]
        """, port=proxy.port)
        result = lab.run()
    assert result.code == 1
    errors = [line for line in result.err.splitlines() if "ERROR" in line]
    assert any("'tag dev'" in line and "INBOX" in line and "keyword" in line for line in errors), result.err
    assert lab.flags() == {"dev": set()}


def test_keyword_failure_is_not_marked_processed_and_later_rules_wait(lab):
    lab.deliver("dev")
    with TcpProxy(lab.server.host, lab.server.port, rewrite_server=strip_keyword_permission) as proxy:
        lab.write("""
            - name: tag dev
              actions: [{add_keyword: $Dev}]
            - name: then flag
              actions: [flag]
        """, port=proxy.port)
        assert lab.run().code == 1
        assert lab.flags() == {"dev": set()}, "the later rule must wait for the failed one"
        status = lab.cli("status")
        assert "pending 1" in status.out and "'tag dev'" in status.out, status.out
        assert lab.run().code == 1, "retried (and failing again) on the next run"
    # The mailbox can store keywords now: the retry succeeds, from the rule that failed.
    lab.write("""
        - name: tag dev
          actions: [{add_keyword: $Dev}]
        - name: then flag
          actions: [flag]
    """)
    assert lab.run().code == 0
    assert lab.flags() == {"dev": {"$Dev", "\\Flagged"}}
    assert "pending 0" in lab.cli("status").out
    assert lab.run().code == 0
    assert lab.flags() == {"dev": {"$Dev", "\\Flagged"}}


def test_a_keyword_listed_in_permanentflags_is_stored_without_backslash_star(lab):
    def only_dev(line: bytes) -> bytes:
        if b"PERMANENTFLAGS" in line:
            return line.replace(b" \\*", b" $Dev")
        return line

    lab.deliver("dev")
    with TcpProxy(lab.server.host, lab.server.port, rewrite_server=only_dev) as proxy:
        lab.write("""
            - name: tag dev
              actions: [{add_keyword: $Dev}]
        """, port=proxy.port)
        assert lab.run().code == 0
    assert lab.flags() == {"dev": {"$Dev"}}


def test_check_connect_reports_a_mailbox_that_cannot_store_keywords(lab):
    with TcpProxy(lab.server.host, lab.server.port, rewrite_server=strip_keyword_permission) as proxy:
        lab.write("""
            - name: tag dev
              actions: [{add_keyword: $Dev}]
        """, port=proxy.port)
        result = lab.cli("check", "--connect")
    assert result.code == 1
    assert "keywords: NO" in result.out and "'tag dev'" in result.out, result.out


# ----------------------------------------------------------------------------- copy / move


def test_copy_creates_the_folder_and_keeps_the_original(lab):
    lab.deliver("report", "other")
    lab.write("""
        - name: archive reports
          match: {subject: report}
          actions: [{copy: Archive/Reports}]
    """)
    assert lab.run().code == 0
    assert lab.subjects("INBOX") == ["other", "report"]
    assert lab.subjects("Archive/Reports") == ["report"]


def test_copy_into_an_existing_folder_keeps_the_flags(lab):
    lab.deliver("report", flags=["\\Seen", "$Work"])
    lab.deliver("old", folder="Archive")
    lab.write("""
        - name: archive
          match: {subject: report}
          actions: [{copy: Archive}]
    """)
    assert lab.run().code == 0
    assert lab.flags("Archive") == {"old": set(), "report": {"\\Seen", "$Work"}}


def test_copy_then_later_actions_still_apply_in_the_source(lab):
    lab.deliver("report")
    lab.write("""
        - name: archive and read
          actions: [{copy: Archive}, seen]
    """)
    assert lab.run().code == 0
    assert lab.flags("INBOX") == {"report": {"\\Seen"}}
    assert lab.flags("Archive") == {"report": set()}


def test_move_removes_from_the_source_and_creates_the_folder(lab):
    lab.deliver("dev 1", "dev 2", "other")
    lab.write("""
        - name: dev list
          match: {subject: dev}
          actions: [{move: Lists/dev}]
    """)
    assert lab.run().code == 0
    assert lab.subjects("INBOX") == ["other"]
    assert lab.subjects("Lists/dev") == ["dev 1", "dev 2"]


def test_move_keeps_flags_set_by_earlier_actions(lab):
    lab.deliver("dev")
    lab.write("""
        - name: dev list
          actions: [{add_keyword: $Dev}, flag, {move: Lists/dev}]
    """)
    assert lab.run().code == 0
    assert lab.flags("Lists/dev") == {"dev": {"$Dev", "\\Flagged"}}
    assert lab.subjects("INBOX") == []


def test_folder_levels_are_written_with_slash(lab):
    lab.deliver("py")
    lab.write("""
        - name: deep
          actions: [{move: Lists/dev/python.org/announce}]
    """)
    assert lab.run().code == 0
    assert "Lists/dev/python.org/announce" in lab.folders()
    assert lab.subjects("Lists/dev/python.org/announce") == ["py"]


def test_non_ascii_folder_names_are_sent_in_modified_utf7(lab):
    lab.deliver("grüße")
    lab.write("""
        - name: umlauts
          actions: [{move: Archiv/Grüße/日本}]
    """)
    assert lab.run().code == 0
    assert lab.subjects("Archiv/Grüße/日本") == ["grüße"]
    with lab.client() as client:
        client.folder_encode = False  # the names as they travel on the wire
        raw = [name for _flags, _sep, name in client.list_folders()]
    raw = [n.decode() if isinstance(n, bytes) else n for n in raw]
    assert "Archiv/Gr&APwA3w-e/&ZeVnLA-" in raw, raw


def test_move_into_the_mailbox_itself_changes_nothing(lab):
    lab.deliver("stay")
    lab.write("""
        - name: into itself
          actions: [{move: INBOX}]
    """)
    assert lab.run().code == 0
    assert lab.subjects() == ["stay"]


# ----------------------------------------------------------------------------- move without MOVE


def test_without_move_a_move_is_copy_store_deleted_and_uid_expunge(dovecot_factory, tmp_path, monkeypatch):
    lab = lab_on(dovecot_factory(capabilities=NO_MOVE), tmp_path, monkeypatch)
    uid_a, _uid_b, uid_c = lab.deliver("move me", "keep me", "deleted elsewhere")
    lab.write("""
        - name: move
          match: {subject: move me}
          actions: [{move: Archive}]
    """)
    mark_deleted_elsewhere(lab, uid_c)
    result = lab.run()
    assert result.code == 0, result.err
    assert lab.subjects("Archive") == ["move me"]
    assert lab.flags("INBOX") == {"keep me": set(), "deleted elsewhere": {"\\Deleted"}}
    assert uid_a not in {m.uid for m in lab.messages()}


def test_without_move_only_the_moved_uids_are_expunged_even_if_others_are_deleted(
    dovecot_factory, tmp_path, monkeypatch
):
    """Another client's \\Deleted message, matched by a rule that skips it, survives our expunge."""
    lab = lab_on(dovecot_factory(capabilities=NO_MOVE), tmp_path, monkeypatch)
    uids = lab.deliver("list 1", "list 2", "list 3")
    mark_deleted_elsewhere(lab, uids[1])
    lab.write("""
        - name: move undeleted
          match: {subject: list, deleted: false}
          actions: [{move: Lists}]
    """)
    assert lab.run().code == 0
    assert lab.subjects("Lists") == ["list 1", "list 3"]
    assert lab.flags("INBOX") == {"list 2": {"\\Deleted"}}


def test_without_uidplus_nothing_is_expunged_and_a_warning_is_given(dovecot_factory, tmp_path, monkeypatch):
    lab = lab_on(dovecot_factory(capabilities=NO_MOVE_NO_UIDPLUS), tmp_path, monkeypatch)
    _a, _b, uid_c = lab.deliver("move me", "keep me", "deleted elsewhere")
    mark_deleted_elsewhere(lab, uid_c)
    lab.write("""
        - name: move
          match: {subject: move me}
          actions: [{move: Archive}]
    """)
    result = lab.run()
    assert result.code == 0, result.err
    assert "UIDPLUS" in result.err
    assert lab.subjects("Archive") == ["move me"]
    assert lab.flags("INBOX") == {
        "move me": {"\\Deleted"},
        "keep me": set(),
        "deleted elsewhere": {"\\Deleted"},
    }
    # The copy left behind is not moved again on the next run.
    assert lab.run().code == 0
    assert lab.subjects("Archive") == ["move me"]


def test_without_uidplus_delete_only_marks_deleted(dovecot_factory, tmp_path, monkeypatch):
    lab = lab_on(dovecot_factory(capabilities=NO_MOVE_NO_UIDPLUS), tmp_path, monkeypatch)
    lab.deliver("spam", "ham")
    lab.write("""
        - name: drop spam
          match: {subject: spam}
          actions: [delete]
    """)
    assert lab.run().code == 0
    assert lab.flags() == {"spam": {"\\Deleted"}, "ham": set()}


# ----------------------------------------------------------------------------- trash


def test_trash_moves_to_the_special_use_trash(lab):
    lab.deliver("junk", "keep")
    lab.write("""
        - name: bin it
          match: {subject: junk}
          actions: [trash]
    """)
    assert lab.run().code == 0
    assert lab.subjects("Trash") == ["junk"]
    assert lab.subjects("INBOX") == ["keep"]


PAPIERKORB = """
namespace inbox {
  mailbox Papierkorb {
    special_use = \\Trash
    auto = create
  }
}
"""


def test_trash_prefers_the_special_use_mailbox_over_a_folder_named_trash(dovecot_factory, tmp_path, monkeypatch):
    lab = lab_on(dovecot_factory(special_use=False, extra_conf=PAPIERKORB), tmp_path, monkeypatch)
    lab.deliver("decoy", folder="Trash")
    lab.deliver("junk")
    lab.write("""
        - name: bin it
          actions: [trash]
    """)
    assert lab.run().code == 0
    assert lab.subjects("Papierkorb") == ["junk"]
    assert lab.subjects("Trash") == ["decoy"]


@pytest.mark.parametrize(
    ("existing", "expected"),
    [
        (["Deleted Messages", "Deleted Items", "Trash"], "Trash"),
        (["Deleted Messages", "Deleted Items"], "Deleted Items"),
        (["Deleted Messages"], "Deleted Messages"),
    ],
)
def test_trash_without_special_use_falls_back_to_trash_then_deleted_items_then_deleted_messages(
    dovecot_factory, tmp_path, monkeypatch, existing, expected
):
    lab = lab_on(dovecot_factory(special_use=False), tmp_path, monkeypatch)
    with lab.client() as client:
        for name in existing:
            client.create_folder(name)
    lab.deliver("junk")
    lab.write("""
        - name: bin it
          actions: [trash]
    """)
    assert lab.run().code == 0
    assert lab.where() == {"junk": [expected]}


@pytest.mark.parametrize("existing", [[], ["Deleted", "Bin"]])
def test_trash_without_any_trash_mailbox_fails_and_keeps_the_message(
    dovecot_factory, tmp_path, monkeypatch, existing
):
    lab = lab_on(dovecot_factory(special_use=False), tmp_path, monkeypatch)
    with lab.client() as client:
        for name in existing:
            client.create_folder(name)
    lab.deliver("junk")
    lab.write("""
        - name: bin it
          actions: [trash]
    """)
    result = lab.run()
    assert result.code == 1
    assert "Trash" in result.err and "'bin it'" in result.err
    assert lab.where() == {"junk": ["INBOX"]}
    assert lab.flags() == {"junk": set()}
    assert "pending 1" in lab.cli("status").out


# ----------------------------------------------------------------------------- delete


def test_delete_expunges_exactly_the_matched_messages(lab):
    _spam, _ham, other_deleted = lab.deliver("spam", "ham", "deleted elsewhere")
    mark_deleted_elsewhere(lab, other_deleted)
    lab.write("""
        - name: drop spam
          match: {subject: spam}
          actions: [delete]
    """)
    assert lab.run().code == 0
    assert lab.flags() == {"ham": set(), "deleted elsewhere": {"\\Deleted"}}
    assert lab.subjects("Trash") == []


# ----------------------------------------------------------------------------- across accounts


@pytest.fixture
def two_accounts(dovecot, tmp_path, monkeypatch):
    """A lab whose rules file also has account 'other' (another user on the same server)."""
    lab = Lab(dovecot, dovecot.add_user(), tmp_path, monkeypatch)
    lab.other = dovecot.add_user()
    return lab


def write_two(lab, rules: str, *, other_port=None) -> None:
    lab.config = write_config(
        lab.tmp, lab.monkeypatch, lab.server, lab.user, rules,
        others={"other": Acct(lab.other, other_port or lab.server.port)},
    )  # fmt: skip


ARRIVED = dt.datetime(2021, 3, 4, 5, 6, 7)


def test_cross_account_copy_keeps_flags_and_arrival_date(two_accounts):
    lab = two_accounts
    lab.deliver("invoice", flags=["\\Seen", "\\Answered", "$Work"], date=ARRIVED)
    write_two(lab, """
        - name: to other
          actions: [{copy: other:Archive/Invoices}]
    """)
    assert lab.run().code == 0
    (source,) = lab.messages()
    (copied,) = lab.messages("Archive/Invoices", user=lab.other)
    assert copied.message_id == source.message_id
    assert copied.flags == {"\\Seen", "\\Answered", "$Work"}
    assert copied.internaldate == source.internaldate == ARRIVED
    assert lab.where() == {"invoice": ["INBOX"]}


def test_cross_account_move_removes_the_source_after_the_append(two_accounts):
    lab = two_accounts
    lab.deliver("invoice", flags=["\\Flagged"], date=ARRIVED)
    lab.deliver("stays")
    write_two(lab, """
        - name: to other
          match: {subject: invoice}
          actions: [{move: other:Invoices}]
    """)
    assert lab.run().code == 0
    assert lab.subjects() == ["stays"]
    (moved,) = lab.messages("Invoices", user=lab.other)
    assert moved.flags == {"\\Flagged"} and moved.internaldate == ARRIVED


def test_cross_account_move_does_not_copy_the_deleted_flag(two_accounts):
    lab = two_accounts
    (uid,) = lab.deliver("old")
    mark_deleted_elsewhere(lab, uid)
    write_two(lab, """
        - name: to other
          actions: [{move: other:Old}]
    """)
    assert lab.run().code == 0
    assert lab.flags("Old", user=lab.other) == {"old": set()}


def test_a_folder_name_with_a_colon_that_is_not_an_account_stays_local(two_accounts):
    lab = two_accounts
    lab.deliver("x")
    write_two(lab, """
        - name: colon
          actions: [{copy: "nobody:Stuff"}]
    """)
    assert lab.run().code == 0
    assert lab.subjects("nobody:Stuff") == ["x"]
    assert lab.where(user=lab.other) == {}


def test_cross_account_destination_unreachable_fails_keeps_the_source_and_is_retried(two_accounts):
    lab = two_accounts
    lab.deliver("invoice", flags=["\\Seen"])
    proxy = TcpProxy(lab.server.host, lab.server.port).start()
    port = proxy.port
    proxy.stop()  # nothing listens there now: connection refused
    write_two(lab, """
        - name: to other
          actions: [{move: other:Invoices}]
    """, other_port=port)
    result = lab.run()
    assert result.code == 1
    assert "'to other'" in result.err
    assert lab.where() == {"invoice": ["INBOX"]}
    assert lab.flags() == {"invoice": {"\\Seen"}}
    assert lab.where(user=lab.other) == {}
    # The destination is back: the retry moves it, exactly once.
    write_two(lab, """
        - name: to other
          actions: [{move: other:Invoices}]
    """)
    assert lab.run().code == 0
    assert lab.where() == {}
    assert lab.where(user=lab.other) == {"invoice": ["Invoices"]}
    assert lab.run().code == 0
    assert lab.where(user=lab.other) == {"invoice": ["Invoices"]}


def refuse_append(line: bytes) -> bytes:
    """The destination answers NO to every APPEND (as a full quota would)."""
    m = re.match(rb"(\S+) OK (\[APPENDUID [^\]]*\] )?Append completed", line)
    if m:
        return m.group(1) + b" NO [OVERQUOTA] Quota exceeded (mailbox for user is full)\r\n"
    return line


def test_cross_account_move_keeps_the_source_when_the_append_is_refused(two_accounts):
    lab = two_accounts
    lab.deliver("invoice")
    with TcpProxy(lab.server.host, lab.server.port, rewrite_server=refuse_append) as proxy:
        write_two(lab, """
            - name: to other
              actions: [{move: other:Invoices}]
        """, other_port=proxy.port)
        result = lab.run()
    assert result.code == 1
    assert "'to other'" in result.err
    assert lab.where() == {"invoice": ["INBOX"]}
    assert lab.flags() == {"invoice": set()}


QUOTA_100K = """
mail_plugins = $mail_plugins quota
plugin {
  quota = maildir:User quota
  quota_rule = *:storage=100K
}
"""


@pytest.mark.parametrize("verb", ["copy", "move"])
def test_cross_account_a_message_the_destination_refuses_does_not_hold_up_or_duplicate_the_others(
    dovecot, dovecot_factory, tmp_path, monkeypatch, verb
):
    """The other account is on a server with a 100 KB quota: the big message is refused there."""
    lab = Lab(dovecot, dovecot.add_user(), tmp_path, monkeypatch)
    quota_server = dovecot_factory(extra_conf=QUOTA_100K)
    lab.other = quota_server.add_user()
    lab.deliver("small 1", {"subject": "big", "size_padding": 200 * 1024}, "small 2")
    lab.config = write_config(
        lab.tmp, lab.monkeypatch, lab.server, lab.user, f"""
        - name: away
          account: me
          actions: [{{{verb}: other:Archive}}]
        """,
        others={"other": Acct(lab.other, quota_server.port)},
    )  # fmt: skip
    first = lab.run()
    assert first.code == 1
    assert "OVERQUOTA" in first.err or "Quota" in first.err, first.err
    archived = sorted(m.subject for m in messages(quota_server, lab.other, "Archive"))
    assert archived == ["small 1", "small 2"]
    expected_here = ["big", "small 1", "small 2"] if verb == "copy" else ["big"]
    assert lab.subjects() == expected_here
    assert lab.run().code == 1, "the refused message is retried (and refused again)"
    assert sorted(m.subject for m in messages(quota_server, lab.other, "Archive")) == ["small 1", "small 2"]
    assert lab.subjects() == expected_here
    assert "pending 1" in lab.cli("status").out


def lose_append_confirmation(line: bytes) -> bytes:
    """The destination stores the message, but its OK never reaches us (the link died)."""
    if re.match(rb"\S+ OK (\[APPENDUID [^\]]*\] )?Append completed", line):
        return b""
    return line


@pytest.mark.parametrize("verb", ["copy", "move"])
def test_cross_account_append_whose_confirmation_was_lost_is_not_repeated(two_accounts, verb):
    """The retry finds the message at the destination (by Message-ID) instead of appending it again."""
    lab = two_accounts
    lab.deliver("invoice", "chat")
    rules = f"""
        - name: to other
          match: {{subject: invoice}}
          actions: [{{{verb}: other:Invoices}}]
    """
    with TcpProxy(lab.server.host, lab.server.port, rewrite_server=lose_append_confirmation) as proxy:
        lab.config = write_config(
            lab.tmp, lab.monkeypatch, lab.server, lab.user, rules,
            others={"other": Acct(lab.other, proxy.port, timeout=1.0)},
        )  # fmt: skip
        first = lab.run()
    assert first.code == 1
    assert lab.subjects("Invoices", user=lab.other) == ["invoice"]  # stored, never confirmed
    assert lab.where() == {"invoice": ["INBOX"], "chat": ["INBOX"]}  # so the source stays
    write_two(lab, rules)
    retry = lab.run()
    assert retry.code == 0
    assert "1 of 1 messages were already there" in retry.err
    assert lab.subjects("Invoices", user=lab.other) == ["invoice"]  # not twice
    assert lab.where() == ({"chat": ["INBOX"]} if verb == "move" else {"invoice": ["INBOX"], "chat": ["INBOX"]})
    assert lab.run().code == 0  # and nothing is left to retry
    assert lab.subjects("Invoices", user=lab.other) == ["invoice"]
