"""mailrules on Cyrus IMAP (the private instance of mailrules.testing.cyrus), where it differs from Dovecot.

The session's ``cyrus`` has Debian's namespace (prefix ``INBOX.``, separator ``.``); ``cyrus3``
has Cyrus 3's own defaults (no prefix, separator ``/``). Rules files always say ``Lists/dev``.
Skipped without Cyrus, unless MAILRULES_REQUIRE_CYRUS=1 (CI).
"""

from __future__ import annotations

import imaplib

import pytest

from mailrules.testing.messages import make_message
from tests.helpers import messages, run_cli, run_once, write_config

RULES = """
- name: dev list
  match: {header: {List-Id: dev.lists.example.org}}
  actions:
    - add_keyword: $Dev
    - flag
    - move: Lists/dev
- name: receipts
  match: {subject: receipt}
  actions:
    - copy: Archive/receipts
    - seen
"""


@pytest.fixture(params=["debian", "cyrus3"])
def server(request, cyrus):
    """Each namespace in turn: Debian's (``INBOX.``/``.``), then Cyrus 3's (``""``/``/``)."""
    return cyrus if request.param == "debian" else request.getfixturevalue("cyrus3")


# ---------------------------------------------------------------------------- the kit itself


def test_a_fresh_user_logs_in_to_an_empty_inbox(cyrus, cyrus_user):
    client = cyrus.client(cyrus_user, "INBOX")
    try:
        assert client.search(["ALL"]) == []
        assert [name for _flags, _sep, name in client.list_folders()] == ["INBOX"]
    finally:
        client.logout()


def test_a_wrong_password_is_refused(cyrus, cyrus_user):
    from mailrules.testing.dovecot import User

    with pytest.raises(imaplib.IMAP4.error):
        cyrus.client(User(cyrus_user.name, "wrong"))


def test_debian_namespace_is_inbox_dot_and_cyrus3_namespace_is_unprefixed_slash(cyrus, cyrus_user, cyrus3):
    client = cyrus.client(cyrus_user)
    try:
        assert client.namespace().personal == (("INBOX.", "."),)
    finally:
        client.logout()
    client = cyrus3.client(cyrus3.add_user())
    try:
        assert client.namespace().personal == (("", "/"),)
    finally:
        client.logout()
    assert (cyrus.folder("Lists/dev"), cyrus3.folder("Lists/dev")) == ("INBOX.Lists.dev", "Lists/dev")


def test_append_with_crlf_then_search_and_keywords(cyrus, cyrus_user):
    client = cyrus.client(cyrus_user)
    try:
        reply = client.append("INBOX", make_message(subject="quarterly report"))
        assert b"APPENDUID" in reply
        client.select_folder("INBOX")
        (uid,) = client.search(["SUBJECT", "quarterly"])
        client.add_flags([uid], ["$Dev"])
        assert client.search(["KEYWORD", "$Dev"]) == [uid]
    finally:
        client.logout()


def test_the_101st_keyword_of_a_mailbox_is_a_store_failure(cyrus, cyrus_user):
    client = cyrus.client(cyrus_user)
    try:
        client.append("INBOX", make_message())
        client.select_folder("INBOX")
        client.add_flags([1], [f"$k{n}" for n in range(100)])
        with pytest.raises(imaplib.IMAP4.error, match="Too many user flags"):
            client.add_flags([1], ["$k100"])
    finally:
        client.logout()


def test_a_server_that_cannot_start_is_a_clear_error_within_the_start_timeout(cyrus):
    import socket
    import time

    from mailrules.testing.cyrus import CyrusError, temporary_cyrus

    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        started = time.monotonic()
        expected = f"did not accept a login on 127.0.0.1:{port} within 1 s"
        with pytest.raises(CyrusError, match=expected), temporary_cyrus(port=port, start_timeout=1):
            pass
    assert time.monotonic() - started < 5


def test_the_kit_stores_each_folder_by_its_name_not_by_its_id(cyrus, cyrus_user):
    """Debian's Cyrus 3.6 makes a folder's unique id with rand() (no libuuid): imapd processes
    seeded alike give two folders the same id. Stored by id (Cyrus 3's default), the second
    CREATE wiped the first folder's mail: an INBOX found empty by a test on a loaded machine, 12
    times in 1,150 setups of one account with mail and another with a folder (none in 455 stored
    by name)."""
    cyrus.deliver_files(cyrus_user, "INBOX.Kept", [make_message(subject="kept")])
    assert (cyrus.root / "spool" / "user" / cyrus_user.name / "Kept" / "1.").is_file()


def test_cyrus_is_identified_by_its_id_answer_of_many_fields(cyrus, cyrus_user):
    """Cyrus's ID answer has seven fields; reading it as pairs once left Cyrus unidentified ("")."""
    from mailrules.imap.session import ImapSession

    session = ImapSession(cyrus.client(cyrus_user), "me")
    try:
        assert session.server_software == "cyrus imapd"
        assert not session.substring_search_reliable  # see the body prefilter test below
    finally:
        session.logout()


def test_deliver_files_turns_bare_lf_into_crlf_and_sets_flags(cyrus, cyrus_user):
    count = cyrus.deliver_files(cyrus_user, cyrus.folder("Lists/dev"), [b"Subject: lf\n\nbody\n"], flags="S")
    assert count == 1
    (stored,) = messages(cyrus, cyrus_user, "INBOX.Lists.dev")
    assert stored.subject == "lf" and stored.flags == {"\\Seen"}


# ---------------------------------------------------------------------------- mailrules run


def test_run_once_files_by_rules_file_names_in_the_servers_namespace(server, tmp_path, monkeypatch):
    user = server.add_user()
    server.deliver_files(user, "INBOX", [
        make_message(subject="build", headers={"List-Id": "Dev <dev.lists.example.org>"}),
        make_message(subject="your receipt"),
        make_message(subject="hello"),
    ])  # fmt: skip
    config = write_config(tmp_path, monkeypatch, server, user, RULES)
    assert run_once(config, tmp_path / "state").code == 0
    dev, receipts = server.folder("Lists/dev"), server.folder("Archive/receipts")
    state = {folder: {m.subject: m.flags for m in messages(server, user, folder)}
             for folder in ("INBOX", dev, receipts)}
    assert state == {
        "INBOX": {"your receipt": {"\\Seen"}, "hello": set()},
        dev: {"build": {"$Dev", "\\Flagged"}},
        receipts: {"your receipt": set()},
    }


def test_a_second_run_changes_nothing(cyrus, cyrus_user, tmp_path, monkeypatch):
    cyrus.deliver_files(cyrus_user, "INBOX", [make_message(subject="your receipt")])
    config = write_config(tmp_path, monkeypatch, cyrus, cyrus_user, RULES)
    assert run_once(config, tmp_path / "state").code == 0
    before = {f: messages(cyrus, cyrus_user, f) for f in ("INBOX", "INBOX.Archive.receipts")}
    assert run_once(config, tmp_path / "state").code == 0
    assert {f: messages(cyrus, cyrus_user, f) for f in before} == before


def test_a_keyword_past_the_mailbox_cap_fails_that_action_and_loses_no_mail(cyrus, cyrus_user, tmp_path,
                                                                           monkeypatch):
    full = make_message(subject="already has 100 keywords")
    cyrus.deliver_files(cyrus_user, "INBOX", [full, make_message(subject="tag me")])
    client = cyrus.client(cyrus_user, "INBOX")
    client.add_flags([1], [f"$k{n}" for n in range(100)])
    client.logout()
    config = write_config(tmp_path, monkeypatch, cyrus, cyrus_user, """
        - name: tag
          match: {subject: tag me}
          actions: [{add_keyword: $Tagged}, {move: Tagged}]
    """)
    result = run_once(config, tmp_path / "state")
    assert result.code == 1 and "Traceback" not in result.err
    assert "add_keyword $Tagged failed" in result.err and "Too many user flags" in result.err
    assert sorted(m.subject for m in messages(cyrus, cyrus_user, "INBOX")) == ["already has 100 keywords", "tag me"]


# ---------------------------------------------------------------------------- mailrules test --against


def _emls(tmp_path, corpus: dict[str, bytes]) -> list:
    paths = []
    for name, raw in corpus.items():
        path = tmp_path / f"{name}.eml"
        path.write_bytes(raw.replace(b"\r\n", b"\n"))  # as saved by a mail client: bare LF
        paths.append(path)
    return paths


def test_test_against_agrees_with_cyrus_on_common_criteria(server, tmp_path, monkeypatch):
    rules = """
        - name: dev
          match: {header: {List-Id: dev.lists.example.org}}
          actions: [{move: Lists/dev}]
        - name: carol urgent
          match: {from: carol@, any: [{subject: urgent}, {body: asap}]}
          actions: [flag]
        - name: not read big
          match: {seen: false, larger: 2000, not: {subject: photos}}
          actions: [{add_keyword: $Big}]
    """
    config = write_config(tmp_path, monkeypatch, server, server.add_user(), rules)
    corpus = {
        "list": make_message(headers={"List-Id": "Dev <dev.lists.example.org>"}),
        "carol": make_message(from_="carol@example.com", subject="URGENT: meeting"),
        "carol-body": make_message(from_="Carol <carol@example.com>", body="reply asap please"),
        "big": make_message(subject="data", size_padding=3000),
        "photos": make_message(subject="holiday photos", size_padding=3000),
        "plain": make_message(subject="hello"),
    }
    result = run_cli("-c", config, "test", "--against", "me", *_emls(tmp_path, corpus))
    assert result.code == 0, result.out + result.err
    assert "0 disagreement(s)" in result.out


def test_test_against_reports_cyrus_body_search_seeing_mime_part_headers(cyrus, cyrus_user, tmp_path, monkeypatch):
    """Cyrus's BODY also matches the headers of MIME parts; Dovecot's and the local evaluation do not."""
    config = write_config(tmp_path, monkeypatch, cyrus, cyrus_user, """
        - name: binaries
          match: {body: octet-stream}
          actions: [flag]
    """)
    attached = make_message(body="see attached", attachments=[("data.bin", b"\x00\x01", "application/octet-stream")])
    result = run_cli("-c", config, "test", "--against", "me", *_emls(tmp_path, {"attached": attached}))
    assert result.code == 1
    assert "DISAGREEMENT rule 'binaries'" in result.out and "server me: matches" in result.out


def test_the_imap_socket_sends_small_writes_at_once(cyrus, cyrus_user, tmp_path, monkeypatch):
    """TCP_NODELAY: without it each APPEND to Cyrus waited ~40 ms (imaplib writes the literal and
    its closing CRLF apart; Nagle held the CRLF for the server's delayed ACK). Measured in the
    closing note of the Cyrus kit: 40 APPENDs of `test --against` 2.28 s before, ~0.5 s after."""
    import socket

    from mailrules.config import load
    from mailrules.connect import connect

    config = load(write_config(tmp_path, monkeypatch, cyrus, cyrus_user, """
        - name: any
          match: {subject: m}
          actions: [flag]
    """))
    client = connect(config.accounts["me"])
    try:
        assert client.socket().getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY) != 0
    finally:
        client.logout()


@pytest.mark.parametrize("direction", ["dovecot to cyrus", "cyrus to dovecot"])
def test_a_move_between_dovecot_and_cyrus_keeps_content_flags_keywords_and_arrival(
    direction, dovecot, imap_user, cyrus, cyrus_user, tmp_path, monkeypatch
):
    from datetime import UTC, datetime

    from mailrules.testing.daemon import content_digest
    from tests.helpers import Acct, append

    (source, source_user), (target, target_user) = [(dovecot, imap_user), (cyrus, cyrus_user)][
        :: 1 if direction == "dovecot to cyrus" else -1
    ]
    raw = make_message(subject="archive me", body="line one\nline two\n")
    arrived = datetime(2024, 5, 17, 8, 30, tzinfo=UTC)
    append(source, source_user, "INBOX", raw, flags=["\\Seen", "$Dev"], date=arrived)
    config = write_config(tmp_path, monkeypatch, source, source_user, """
        - name: across
          match: {subject: archive}
          actions: [{move: "other:Archive/2024"}]
    """, others={"other": Acct(target_user, target.port)})
    assert run_once(config, tmp_path / "state").code == 0
    assert messages(source, source_user, "INBOX") == []
    folder = target.folder("Archive/2024") if target is cyrus else "Archive/2024"
    client = target.client(target_user, folder)
    try:
        (uid,) = client.search(["ALL"])
        item = client.fetch([uid], ["BODY.PEEK[]", "FLAGS", "INTERNALDATE"])[uid]
    finally:
        client.logout()
    assert content_digest(item[b"BODY[]"]) == content_digest(raw)
    assert set(item[b"FLAGS"]) - {b"\\Recent"} == {b"\\Seen", b"$Dev"}
    assert item[b"INTERNALDATE"].timestamp() == arrived.timestamp()


# ---------------------------------------------------------------------------- names in the namespace


def test_trash_finds_a_trash_folder_inside_the_inbox_prefix(cyrus, cyrus_user, tmp_path, monkeypatch):
    client = cyrus.client(cyrus_user)
    client.create_folder("INBOX.Trash")
    client.logout()
    cyrus.deliver_files(cyrus_user, "INBOX", [make_message(subject="spam offer")])
    config = write_config(tmp_path, monkeypatch, cyrus, cyrus_user, """
        - name: bin it
          match: {subject: spam}
          actions: [trash]
    """)
    assert run_once(config, tmp_path / "state").code == 0
    assert [m.subject for m in messages(cyrus, cyrus_user, "INBOX.Trash")] == ["spam offer"]
    assert messages(cyrus, cyrus_user, "INBOX") == []


def test_a_non_ascii_folder_is_created_in_modified_utf7_under_the_prefix(server, tmp_path, monkeypatch):
    user = server.add_user()
    server.deliver_files(user, "INBOX", [make_message(subject="Rechnung 7")])
    config = write_config(tmp_path, monkeypatch, server, user, """
        - name: invoices
          match: {subject: rechnung}
          actions: [{move: Büro/Rechnungen}]
    """)
    assert run_once(config, tmp_path / "state").code == 0
    assert [m.subject for m in messages(server, user, server.folder("Büro/Rechnungen"))] == ["Rechnung 7"]


def test_a_level_containing_the_dot_separator_fails_the_action_and_check_connect_names_the_rule(
    cyrus, cyrus_user, tmp_path, monkeypatch
):
    cyrus.deliver_files(cyrus_user, "INBOX", [make_message(subject="release notes")])
    config = write_config(tmp_path, monkeypatch, cyrus, cyrus_user, """
        - name: releases
          match: {subject: release}
          actions: [{move: Archive/v1.2}]
    """)
    result = run_once(config, tmp_path / "state")
    assert result.code == 1 and "Traceback" not in result.err
    assert [m.subject for m in messages(cyrus, cyrus_user, "INBOX")] == ["release notes"]
    checked = run_cli("-c", config, "check", "--connect")
    assert "folders: separator '.', namespace prefix 'INBOX.'" in checked.out
    assert "releases" in checked.out + checked.err and "rules.yaml:" in checked.out + checked.err


# ---------------------------------------------------------------------------- the daemon


def test_the_daemon_files_a_new_message_as_cyrus_announces_it_in_idle(cyrus, cyrus_user, tmp_path):
    """Cyrus reports EXISTS during IDLE (checking every second here): filed long before the 60 s renewal."""
    from mailrules.testing.daemon import DaemonHarness, wait_until

    daemon = DaemonHarness(cyrus, cyrus_user, tmp_path / "d", idle_interval=60,
                           rules="  - name: dev\n    match: {subject: dev}\n    actions: [{move: Lists/dev}]\n")
    daemon.start()
    try:
        daemon.wait_for_log("watching with IDLE")
        cyrus.deliver_files(cyrus_user, "INBOX", [make_message(subject="dev news")])
        wait_until(lambda: messages(cyrus, cyrus_user, "INBOX.Lists.dev"), timeout=10,
                   message="the message in INBOX.Lists.dev")
    finally:
        assert daemon.stop() == 0


# ---------------------------------------------------------------------------- the regex prefilter


PREFILTERED = {  # pattern -> the subjects whose decoded text/* parts it matches
    r"build #\d+ failed": ["ci"],
    "Grüße": ["greeting"],
    "(?i)KÖLN": ["greeting"],
    "café": ["latin1"],
    "total:   3 items": ["spaces"],
    'class="alert"': ["html"],
}


def test_the_body_prefilter_on_cyrus_loses_no_message_the_regex_matches(cyrus, cyrus_user, tmp_path, monkeypatch):
    """Cyrus (ID "Cyrus IMAPD") normalises what SEARCH BODY compares (diacritics, runs of spaces,
    case), and missed the Latin-1 "café" with the prefilter on (once its ID was read right: before,
    a long ID answer left Cyrus unidentified): the prefilter stays off there, and every message
    the regex matches is found."""
    cyrus.deliver_files(cyrus_user, "INBOX", [
        make_message(subject="ci", body="build #42 failed on main"),
        make_message(subject="greeting", body="Viele Grüße aus Köln"),
        make_message(subject="latin1", body="un café au lait", charset="iso-8859-1"),
        make_message(subject="spaces", body="total:   3 items"),
        make_message(subject="html", body="see html", html='<p><span class="alert">Disk</span> full</p>'),
        make_message(subject="none", body="build 42 ok; gruesse; cafe; total: 3 items"),
    ])  # fmt: skip
    rules = "".join(
        f"- name: p{n}\n  where: [{{regex: {{body: '{pattern}'}}}}]\n  actions: [{{add_keyword: $P{n}}}]\n"
        for n, pattern in enumerate(PREFILTERED)
    )
    config = write_config(tmp_path, monkeypatch, cyrus, cyrus_user, rules)
    assert run_once(config, tmp_path / "state").code == 0
    tagged = {m.subject: m.flags for m in messages(cyrus, cyrus_user, "INBOX")}
    assert {pattern: sorted(s for s, flags in tagged.items() if f"$P{n}" in flags)
            for n, pattern in enumerate(PREFILTERED)} == PREFILTERED
