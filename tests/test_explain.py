"""`mailrules explain` and `mailrules test --against` on the private Dovecot.

explain names, for each rule, the criterion or predicate that decided, checked against the
server's UID SEARCH, and changes nothing (EXAMINE). --against APPENDs to a scratch mailbox,
compares each rule's SEARCH with the local evaluation, and removes the mailbox afterwards.
"""

from __future__ import annotations

from helpers import connected

import mailrules.testcmd
from mailrules.testing.daemon import message_contents

RULES = r"""
- name: invoices
  match:
    subject: invoice
    seen: false
  actions: [flag]
- name: newsletters
  match: {from: news@example.org}
  actions: [{move: News}]
- name: builds
  match: {subject: build}
  where:
    - regex: {body: 'build #\d+ failed'}
  actions: [seen]
"""


def folders(lab) -> set[str]:
    with connected(lab.server, lab.user) as client:
        return {name for _, _, name in client.list_folders()}


def test_explain_names_the_deciding_criterion_of_a_matched_and_a_non_matched_rule(lab):
    lab.write(RULES)
    (uid,) = lab.deliver({"subject": "Your invoice 42", "from_": "shop@example.org"})
    before = lab.messages()
    result = lab.cli("explain", "me", "INBOX", str(uid))
    assert result.code == 0, result.out + result.err
    lines = {line.split("'")[1]: line for line in result.out.splitlines() if line.startswith("rule '")}
    assert "MATCHED, decided by seen: false" in lines["invoices"] and "server agrees" in lines["invoices"]
    assert "NOT matched, decided by from: 'news@example.org'" in lines["newsletters"]
    assert "server agrees" in lines["newsletters"]
    assert "NOT matched, decided by subject: 'build'" in lines["builds"]
    assert f"{lab.config}:" in lines["invoices"]  # the rule's file:line
    assert lab.messages() == before  # EXAMINE: not even \Seen was set


def test_explain_names_the_first_failing_criterion_and_a_failing_where_predicate(lab):
    lab.write(RULES)
    (seen,) = lab.deliver({"subject": "invoice 7"}, flags=[r"\Seen"])
    (build,) = lab.deliver({"subject": "build report", "body": "all green\n"})
    result = lab.cli("explain", "me", "INBOX", str(seen))
    assert "rule 'invoices'" in result.out and "NOT matched, decided by seen: false" in result.out
    result = lab.cli("explain", "me", "INBOX", str(build))
    line = next(x for x in result.out.splitlines() if x.startswith("rule 'builds'"))
    assert "NOT matched, decided by where: regex" in line and "criteria matched by subject: 'build'" in line
    assert "where: regex {body: 'build #\\d+ failed'}" in line  # as the rules file writes it


def test_explain_reports_a_disagreement_with_the_server_loudly(lab, monkeypatch):
    lab.write(RULES)
    (uid,) = lab.deliver({"subject": "Your invoice 42"})
    import mailrules.explain

    real = mailrules.explain.local_explain

    def wrong(criterion, message, **kw):  # a planted bug in the local evaluation
        verdict = real(criterion, message, **kw)
        return type(verdict)(not verdict.matched, verdict.decided_by, verdict.path)

    monkeypatch.setattr(mailrules.explain, "local_explain", wrong)
    result = lab.cli("explain", "me", "INBOX", str(uid))
    assert result.code == 1
    assert "DISAGREEMENT" in result.out and "disagree" in result.err


def test_explain_of_a_missing_uid_exits_1(lab):
    lab.write(RULES)
    result = lab.cli("explain", "me", "INBOX", "999")
    assert result.code == 1 and "no message with UID 999" in result.err


def test_against_agrees_with_dovecot_and_removes_the_scratch_mailbox(lab, tmp_path):
    config = lab.write(RULES)
    eml = tmp_path / "a.eml"
    eml.write_bytes(b"From: news@example.org\r\nSubject: build #3\r\n\r\nbuild #3 failed\r\n")
    inbox = message_contents(lab.server.client(lab.user), "INBOX")
    result = lab.cli("test", "--against", "me", str(eml))
    assert result.code == 0, result.out + result.err
    assert "0 disagreement(s)" in result.out
    assert not any(name.startswith("mailrules-test-") for name in folders(lab))
    assert message_contents(lab.server.client(lab.user), "INBOX") == inbox
    assert config.exists()


def test_against_finds_a_planted_disagreement_exits_1_and_removes_the_scratch_mailbox(lab, tmp_path, monkeypatch):
    lab.write(RULES)
    eml = tmp_path / "a.eml"
    eml.write_bytes(b"From: news@example.org\r\nSubject: hello\r\n\r\nhi\r\n")
    real = mailrules.testcmd.matches

    def wrong(criterion, message, **kw):  # the local evaluator planted wrong for from: criteria
        answer = real(criterion, message, **kw)
        return not answer if "news@" in repr(criterion) else answer

    monkeypatch.setattr(mailrules.testcmd, "matches", wrong)
    result = lab.cli("test", "--against", "me", str(eml))
    assert result.code == 1
    assert "DISAGREEMENT rule 'newsletters'" in result.out and "server me: matches" in result.out
    assert not any(name.startswith("mailrules-test-") for name in folders(lab))


def test_against_removes_the_scratch_mailbox_even_when_a_search_fails(lab, tmp_path, monkeypatch):
    lab.write(RULES)
    eml = tmp_path / "a.eml"
    eml.write_bytes(b"Subject: x\r\n\r\nx\r\n")

    def boom(*args, **kwargs):
        raise OSError("connection lost (planted)")

    monkeypatch.setattr(mailrules.testcmd, "compile_search", boom)
    result = lab.cli("test", "--against", "me", str(eml))
    assert result.code == 1 and "planted" in result.err
    assert not any(name.startswith("mailrules-test-") for name in folders(lab))


def test_against_reports_the_servers_answer_for_a_raw_rule(lab, tmp_path):
    lab.write("""
    - name: raw flagged
      match: {raw: 'FLAGGED'}
      actions: [seen]
    """)
    md = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (md / sub).mkdir(parents=True)
    (md / "cur" / "1.x:2,F").write_bytes(b"Subject: y\r\n\r\ny\r\n")
    result = lab.cli("test", "--against", "me", str(md))
    assert "not evaluable offline" in result.err  # the offline part
    assert "rule 'raw flagged'" in result.out and "server: matches" in result.out
    assert not any(name.startswith("mailrules-test-") for name in folders(lab))


# --------------------------------------------------------------------------- the decider is the server's

DECIDER_RULES = r"""
- name: bills
  match:
    all:
      - subject: invoice
      - from: alice@example.org
  actions: [flag]
- name: either
  match:
    any:
      - from: carol@example.org
      - subject: refund
      - larger: 1MB
  actions: [flag]
- name: big
  match: {larger: 1MB}
  actions: [flag]
"""


def rule_lines(result) -> dict[str, str]:
    return {line.split("'")[1]: line for line in result.out.splitlines() if line.startswith("rule '")}


def test_explain_takes_the_decider_from_the_server_where_the_local_evaluation_names_another(lab, monkeypatch):
    lab.write(DECIDER_RULES)
    (uid,) = lab.deliver({"subject": "invoice 7", "from_": "bob@example.org"})
    import mailrules.explain
    from mailrules.local_search import Verdict
    from mailrules.model import Text

    real = mailrules.explain.local_explain

    def wrong_decider(criterion, message, **kw):  # same verdict, another decider (as on broken mail)
        verdict = real(criterion, message, **kw)
        if not verdict.matched and verdict.path == (1,):
            return Verdict(False, Text("subject", "invoice"), (0,))
        return verdict

    monkeypatch.setattr(mailrules.explain, "local_explain", wrong_decider)
    line = rule_lines(lab.cli("explain", "me", "INBOX", str(uid)))["bills"]
    assert "NOT matched, decided by from: 'alice@example.org' (the server's answer)" in line
    assert "the local evaluation names subject: 'invoice'" in line


def test_explain_names_every_alternative_of_a_failed_any_and_sizes_as_written(lab):
    lab.write(DECIDER_RULES)
    (uid,) = lab.deliver({"subject": "hello", "from_": "bob@example.org"})
    lines = rule_lines(lab.cli("explain", "me", "INBOX", str(uid)))
    assert ("decided by any: [{from: 'carol@example.org'}, {subject: 'refund'}, {larger: 1MB}] "
            "(no alternative matched)") in lines["either"]
    assert "decided by larger: 1MB" in lines["big"] and "1048576" not in lines["big"]


def test_explain_says_when_the_server_cannot_name_the_decider(lab, monkeypatch):
    lab.write(DECIDER_RULES)
    (uid,) = lab.deliver({"subject": "invoice 7", "from_": "bob@example.org"})
    import mailrules.explain

    def refused(root, matched, ask):
        raise RuntimeError("SEARCH refused")

    monkeypatch.setattr(mailrules.explain, "server_verdict", refused)
    result = lab.cli("explain", "me", "INBOX", str(uid))
    line = rule_lines(result)["bills"]
    assert "decided by from: 'alice@example.org' (from the local evaluation: the server could not name one" in line
    assert "SEARCH refused" in line and result.code == 0


class Listed:
    """A plugin predicate's argument with a str() for people and a repr() for debugging."""

    def __str__(self) -> str:
        return "senders in vip.txt"

    def __repr__(self) -> str:
        return "Listed(path=PosixPath('/etc/vip.txt'))"


def test_explain_names_a_plugin_predicate_by_its_arguments_str_and_says_it_ran_now(lab, monkeypatch):
    from mailrules import hookimpl
    from mailrules.plugins import Predicate, Registry

    class Plugin:
        mailrules_plugin_name = "vip"

        def __init__(self, predicates) -> None:
            self.predicates = predicates

        @hookimpl
        def mailrules_predicates(self):
            return self.predicates

    plugin = Plugin([Predicate("vip", lambda message, args: True, "test", parse=lambda raw: Listed(),
                                      needs=["header:From"])])
    real_load = Registry.load.__func__
    monkeypatch.setattr(Registry, "load", classmethod(lambda cls, **kw: real_load(cls, extra=[plugin], **kw)))
    lab.write("""
- name: vips
  match: {subject: hello}
  where: [{vip: vip.txt}]
  actions: [flag]
""")
    (uid,) = lab.deliver({"subject": "hello"})
    line = rule_lines(lab.cli("explain", "me", "INBOX", str(uid)))["vips"]
    assert "MATCHED, decided by where: vip senders in vip.txt" in line and "PosixPath" not in line
    assert "subject: 'hello'" in line and "at run time they may have said otherwise" in line


def test_against_reports_a_message_the_server_refuses_and_checks_the_others(lab, tmp_path, monkeypatch):
    from mailrules.imap.session import ImapSession, ServerRefused

    lab.write(RULES)
    emls = []
    for name, subject in (("a.eml", "build #1"), ("nul.eml", "refused"), ("c.eml", "Your invoice 9")):
        emls.append(tmp_path / name)
        emls[-1].write_bytes(f"From: news@example.org\r\nSubject: {subject}\r\n\r\nbody\r\n".encode())
    real = ImapSession.append

    def refusing(self, server_name, message, flags, internaldate):  # as Cyrus refuses a NUL byte
        if b"refused" in message:
            raise ServerRefused("APPEND", "Message contains NUL characters")
        return real(self, server_name, message, flags, internaldate)

    monkeypatch.setattr(ImapSession, "append", refusing)
    result = lab.cli("test", "--against", "me", *map(str, emls))
    assert "Traceback" not in result.out + result.err
    assert "REFUSED" in result.out and "nul.eml" in result.out and "NUL characters" in result.out
    assert "on 2 message(s): 0 disagreement(s); 1 message(s) refused by the server, not checked" in result.out
    assert result.code == 0, result.out + result.err
    assert not any(name.startswith("mailrules-test-") for name in folders(lab))
