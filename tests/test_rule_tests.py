"""`mailrules test` offline: the `tests:` section (parsing, pass/fail output, exit codes) and
MESSAGES (.eml, mbox, Maildir; text and `--format json`). See "Rules as code" in the spec."""

from __future__ import annotations

import json
import os
import shutil
import textwrap
from pathlib import Path

import pytest
from helpers import run_cli

REPO = Path(__file__).resolve().parent.parent

HEAD = """\
version: 1
accounts:
  me: {host: 127.0.0.1, tls: none, username: u, password_env: MAILRULES_UNUSED}
"""

RULES = r"""
rules:
  - name: dev list
    match: {header: {List-Id: dev.lists.example.org}}
    where:
      - regex: {body: 'build #\d+ failed'}
    actions: [{add_keyword: $Dev}, {copy: Archive}, {move: Lists/dev}]
  - name: spam
    match: {subject: viagra}
    actions: [delete]
"""

DEV_CASE = r"""
  - name: dev list goes to its folder
    message:
      headers: {From: 'CI <ci@example.org>', List-Id: '<dev.lists.example.org>', Subject: 'build #12 failed'}
      body: "build #12 failed\n"
    flags: [\Seen]
    arrived: 2026-01-31T10:00:00+01:00
    expect: {rules: [dev list], mailbox: Lists/dev, copies: [Archive], flags: [\Seen], keywords: [$Dev],
             deleted: false}
"""


def rules_file(tmp_path: Path, tests: str, *, rules: str = RULES, name: str = "rules.yaml") -> Path:
    path = tmp_path / name
    cases = "tests: []" if tests.strip() == "[]" else "tests:\n" + textwrap.dedent(tests).strip("\n")
    path.write_text(HEAD + textwrap.dedent(rules) + cases + "\n")
    return path


def mailrules_test(config: Path, *args: str):
    return run_cli("-c", config, "test", *args)


# ----------------------------------------------------------------------------- tests: cases


def test_a_passing_case_prints_pass_and_exits_0(tmp_path):
    result = mailrules_test(rules_file(tmp_path, DEV_CASE))
    assert result.code == 0, result.out + result.err
    assert "PASS  dev list goes to its folder" in result.out
    assert "1 of 1 test(s) passed" in result.out


def test_a_failing_case_shows_expected_and_actual_side_by_side_and_exits_1(tmp_path):
    config = rules_file(tmp_path, """
        - name: not spam
          message: {headers: {Subject: cheap viagra}, body: hi}
          expect: {rules: [], mailbox: INBOX, deleted: false}
    """)
    result = mailrules_test(config)
    assert result.code == 1
    assert f"FAIL  not spam  ({config}:" in result.out
    lines = result.out.splitlines()
    assert any(line.split() == ["rules", "[]", "!=", "[spam]"] for line in lines), result.out
    assert any(line.split() == ["deleted", "false", "!=", "true"] for line in lines), result.out
    assert any(line.split() == ["expected", "actual"] for line in lines)


def test_omitted_expect_keys_are_not_checked(tmp_path):
    result = mailrules_test(rules_file(tmp_path, """
        - name: only the keywords
          message: {headers: {List-Id: <dev.lists.example.org>}, body: "build #1 failed"}
          expect: {keywords: [$dev]}
    """))
    assert result.code == 0, result.out


def test_a_mailbox_and_flags_the_message_arrives_with_are_seen_by_the_rules(tmp_path):
    rules = """
    rules:
      - name: unseen in Work
        mailbox: Work
        match: {seen: false}
        actions: [flag]
    """
    config = rules_file(tmp_path, r"""
        - name: seen in Work
          message: {headers: {Subject: a}}
          mailbox: Work
          flags: [\Seen, $Mine]
          expect: {rules: [], flags: [\Seen], keywords: [$Mine]}
        - name: unseen in Work
          message: {headers: {Subject: a}}
          mailbox: Work
          expect: {rules: [unseen in Work], mailbox: Work, flags: [\Flagged]}
    """, rules=rules)
    config.write_text(config.read_text().replace("username: u,", "username: u, watch: [INBOX, Work],"))
    result = mailrules_test(config)
    assert result.code == 0, result.out + result.err


def test_size_and_arrival_time_are_used_by_the_criteria(tmp_path):
    rules = """
    rules:
      - name: big and old
        match: {larger: 1MB, before: 2020-01-01}
        actions: [flag]
    """
    result = mailrules_test(rules_file(tmp_path, """
        - name: big old message
          message: {headers: {Subject: a}}
          size: 2000000
          arrived: 2019-05-01T12:00:00Z
          expect: {rules: [big and old]}
        - name: big new message
          message: {headers: {Subject: a}}
          size: 2000000
          expect: {rules: []}
    """, rules=rules))
    assert result.code == 0, result.out


def test_a_case_from_an_eml_file_relative_to_the_rules_file(tmp_path):
    (tmp_path / "samples").mkdir()
    (tmp_path / "samples" / "spam.eml").write_bytes(b"Subject: viagra now\r\n\r\nbuy\r\n")
    result = mailrules_test(rules_file(tmp_path, """
        - name: spam from a file
          file: samples/spam.eml
          expect: {rules: [spam], deleted: true}
    """))
    assert result.code == 0, result.out + result.err


def test_cases_of_included_files_combine_with_the_main_files_and_run_over_the_whole_rule_set(tmp_path):
    (tmp_path / "team").mkdir()
    (tmp_path / "team" / "samples").mkdir()
    (tmp_path / "team" / "samples" / "urgent.eml").write_bytes(b"To: team@example.com\r\nSubject: URGENT\r\n\r\n.\r\n")
    (tmp_path / "team" / "triage.yaml").write_text(textwrap.dedent("""\
        rules:
          - name: team urgent
            match: {subject: urgent}
            actions: [flag]
        tests:
          - name: urgent is flagged, then the member's rule files it
            file: samples/urgent.eml
            expect: {rules: [team urgent, file team mail], flags: [\\Flagged], mailbox: Team}
    """))
    config = rules_file(tmp_path, """
        - name: member case
          message: {headers: {To: team@example.com, Subject: hello}}
          expect: {rules: [file team mail], mailbox: Team}
    """, rules="""
    include: [team/triage.yaml]
    rules:
      - name: file team mail
        match: {to: team@example.com}
        actions: [{move: Team}]
    """)
    result = mailrules_test(config)
    assert result.code == 0, result.out + result.err
    assert result.out.index("urgent is flagged") < result.out.index("member case")


def test_a_raw_criterion_is_reported_as_not_evaluable_offline_not_a_crash(tmp_path):
    rules = """
    rules:
      - name: gmail search
        match: {raw: 'X-GM-RAW "has:attachment"'}
        actions: [flag]
    """
    result = mailrules_test(rules_file(tmp_path, """
        - name: any message
          message: {headers: {Subject: a}}
          expect: {rules: []}
    """, rules=rules))
    assert result.code == 1
    assert "FAIL  any message" in result.out and "not evaluable offline" in result.out
    assert "Traceback" not in result.out + result.err


def test_body_criteria_are_warned_about_as_server_dependent(tmp_path):
    rules = """
    rules:
      - name: body rule
        match: {body: invoice}
        actions: [flag]
    """
    result = mailrules_test(rules_file(tmp_path, """
        - name: a
          message: {headers: {Subject: a}, body: "your invoice"}
          expect: {rules: [body rule]}
    """, rules=rules))
    assert result.code == 0
    assert "warning: rule 'body rule'" in result.err and "body: 'invoice'" in result.err
    assert "Cyrus" in result.err and "whole words" in result.err


def test_rule_restricts_the_cases_to_the_named_rules(tmp_path):
    result = mailrules_test(rules_file(tmp_path, """
        - name: spam not deleted when only dev list runs
          message: {headers: {Subject: viagra}}
          expect: {rules: [], deleted: false}
    """), "--rule", "dev list")
    assert result.code == 0, result.out


@pytest.mark.parametrize(("case", "line", "column", "words"), [
    ("- name: x\n  message: {headers: {Subject: a}}\n  expect: {rulez: []}\n", 3, 12, "unknown key 'rulez'"),
    ("- name: x\n  expect: {}\n", 1, 3, "exactly one of 'message:'"),
    ("- name: x\n  file: missing.eml\n", 2, 9, "cannot read 'missing.eml'"),
    ("- name: x\n  message: {headers: {Subject: a}}\n  flags: [\\Seenn]\n", 3, 11, "unknown system flag"),
    ("- name: x\n  message: {headers: {Subject: a}}\n  arrived: yesterday\n", 3, 12, "expected a date and time"),
    ("- name: x\n  message: {headers: {Subject: a}}\n  expect: {keywords: [\\Seen]}\n", 3, 23, "go in 'flags:'"),
    ("- name: x\n  message: {headers: {Subject: a}}\n- name: x\n  message: {headers: {Subject: b}}\n", 3, 3,
     "already used by the test at"),
    ("- message: {headers: {Subject: a}}\n", 1, 3, "missing key 'name'"),
    ("- name: x\n  message: {headers: {Subject: a}}\n  size: big\n", 3, 9, "size: expected a number"),
])
def test_a_bad_test_case_is_a_configuration_error_with_file_line_and_column(tmp_path, case, line, column, words):
    config = rules_file(tmp_path, case)
    result = mailrules_test(config)
    assert result.code == 2
    tests_line = HEAD.count("\n") + textwrap.dedent(RULES).count("\n") + 1
    assert f"{config}:{tests_line + line}:{column}" in result.err, result.err
    assert words in result.err
    assert "Traceback" not in result.err


def test_a_duplicate_test_name_across_an_include_names_both_places(tmp_path):
    (tmp_path / "team.yaml").write_text("tests:\n  - name: same\n    message: {headers: {Subject: a}}\n")
    config = rules_file(tmp_path, "- name: same\n  message: {headers: {Subject: a}}\n",
                        rules="include: [team.yaml]\n" + RULES)
    result = mailrules_test(config)
    assert result.code == 2
    assert f"{tmp_path / 'team.yaml'}:2:5" in result.err and "already used" in result.err


def test_an_expected_rule_that_does_not_exist_is_a_bad_file(tmp_path):
    result = mailrules_test(rules_file(tmp_path, """
        - name: x
          message: {headers: {Subject: a}}
          expect: {rules: [no such rule]}
    """))
    assert result.code == 2 and "no rule named 'no such rule'" in result.err


# ----------------------------------------------------------------------------- the example a team copies


def test_the_team_example_passes_as_the_readme_ci_recipe_runs_it(tmp_path):
    """README "Sharing rules in a team": `mailrules test -c team.yaml` in a copy of the layout."""
    shutil.copy(REPO / "examples" / "team.yaml", tmp_path / "team.yaml")
    shutil.copy(REPO / "examples" / "team-triage.yaml", tmp_path / "team-triage.yaml")
    result = run_cli("test", "-c", tmp_path / "team.yaml")
    assert result.code == 0, result.out + result.err
    assert "FAIL" not in result.out and result.out.count("PASS") >= 3


def test_a_broken_rule_in_the_team_example_fails_with_exit_1_and_a_readable_diff(tmp_path):
    shutil.copy(REPO / "examples" / "team.yaml", tmp_path / "team.yaml")
    triage = (REPO / "examples" / "team-triage.yaml").read_text()
    assert "- move: Team/Standups" in triage
    (tmp_path / "team-triage.yaml").write_text(triage.replace("- move: Team/Standups", "- move: Team/Standup"))
    result = run_cli("test", "-c", tmp_path / "team.yaml")
    assert result.code == 1
    assert any(line.split() == ["mailbox", "Team/Standups", "!=", "Team/Standup"] for line in result.out.splitlines()), \
        result.out


def test_the_example_rules_file_with_its_include_passes(tmp_path):
    result = run_cli("test", "-c", REPO / "rules.example.yaml")
    assert result.code == 0, result.out + result.err


# ----------------------------------------------------------------------------- MESSAGES


@pytest.fixture
def inputs(tmp_path):
    eml = tmp_path / "dev.eml"
    eml.write_bytes(b"From: ci@example.org\r\nList-Id: <dev.lists.example.org>\r\nSubject: ci\r\n\r\n"
                    b"build #7 failed\r\n")
    os.utime(eml, (1_700_000_000, 1_700_000_000))
    mbox = tmp_path / "inbox.mbox"
    mbox.write_bytes(b"From x@example.org Sat Jan  3 10:00:00 2026\nSubject: hello\n\nfirst\n\n"
                     b"From y@example.org Sun Jan  4 11:00:00 2026\nSubject: viagra\n\nsecond\n")
    maildir = tmp_path / "Maildir"
    for sub in ("cur", "new", "tmp"):
        (maildir / sub).mkdir(parents=True)
    (maildir / "cur" / "1700000000.1.host:2,FS").write_bytes(b"Subject: plain\r\n\r\nhi\r\n")
    return eml, mbox, maildir


def test_messages_print_the_rules_that_act_and_the_final_state(tmp_path, inputs):
    eml, _, _ = inputs
    result = mailrules_test(rules_file(tmp_path, "[]"), str(eml))
    assert result.code == 0, result.err
    assert "rule 'dev list': add_keyword $Dev, copy Archive, move Lists/dev" in result.out
    assert "mailbox: Lists/dev" in result.out and "copies: [Archive]" in result.out


def test_json_format_is_the_specified_list_for_eml_mbox_and_maildir(tmp_path, inputs):
    eml, mbox, maildir = inputs
    result = mailrules_test(rules_file(tmp_path, "[]"), "--format", "json", str(eml), str(mbox), str(maildir))
    assert result.code == 0, result.err
    data = json.loads(result.out)
    assert [d["message"] for d in data] == [str(eml), f"{mbox}#1", f"{mbox}#2",
                                            str(maildir / "cur" / "1700000000.1.host:2,FS")]
    assert all(set(d) == {"message", "subject", "from", "rules", "mailbox", "copies", "flags", "keywords",
                          "deleted", "would_run"} for d in data)
    assert data[0]["rules"] == [{"name": "dev list", "actions": ["add_keyword $Dev", "copy Archive",
                                                                 "move Lists/dev"]}]
    assert (data[0]["mailbox"], data[0]["copies"], data[0]["keywords"]) == ("Lists/dev", ["Archive"], ["$Dev"])
    assert data[1]["rules"] == [] and data[1]["mailbox"] == "INBOX" and data[1]["deleted"] is False
    assert data[2]["rules"][0]["name"] == "spam" and data[2]["deleted"] is True and data[2]["mailbox"] is None
    assert data[3]["flags"] == ["\\Flagged", "\\Seen"]


def test_messages_are_named_by_subject_and_from_in_text_output(tmp_path, inputs):
    _, mbox, _ = inputs
    result = mailrules_test(rules_file(tmp_path, "[]"), str(mbox))
    assert result.code == 0, result.err
    assert f"{mbox}#2: 'viagra' from (no From)" in result.out.splitlines()


def test_messages_are_named_by_decoded_subject_and_from_in_json(tmp_path):
    eml = tmp_path / "m.eml"
    eml.write_bytes("From: Jürgen <j@bücher.example>\r\nSubject: =?utf-8?q?Gr=C3=BC=C3=9Fe?=\r\n\r\nhi\r\n".encode())
    result = mailrules_test(rules_file(tmp_path, "[]"), "--format", "json", str(eml))
    data = json.loads(result.out)
    assert (data[0]["message"], data[0]["subject"], data[0]["from"]) == (str(eml), "Grüße", "Jürgen <j@bücher.example>")


def test_arrival_time_is_the_eml_mtime_and_the_mbox_from_line_date(tmp_path, inputs):
    eml, mbox, _ = inputs
    rules = """
    rules:
      - name: arrived on 2026-01-04
        match: {on: 2026-01-04}
        actions: [flag]
      - name: arrived before 2024
        match: {before: 2024-01-01}
        actions: [seen]
    """
    result = mailrules_test(rules_file(tmp_path, "[]", rules=rules), "--format", "json", str(eml), str(mbox))
    data = json.loads(result.out)
    assert [[r["name"] for r in d["rules"]] for d in data] == [["arrived before 2024"], [], ["arrived on 2026-01-04"]]


def test_rule_restricts_messages_to_the_named_rules(tmp_path, inputs):
    eml, _, _ = inputs
    data = json.loads(mailrules_test(rules_file(tmp_path, "[]"), "--format", "json", "--rule", "spam", str(eml)).out)
    assert data[0]["rules"] == [] and data[0]["mailbox"] == "INBOX"


def test_an_unreadable_message_path_exits_2(tmp_path):
    result = mailrules_test(rules_file(tmp_path, "[]"), str(tmp_path / "nope.eml"))
    assert result.code == 2 and "nope.eml" in result.err


def test_an_unknown_rule_name_exits_2(tmp_path, inputs):
    result = mailrules_test(rules_file(tmp_path, "[]"), "--rule", "nope", str(inputs[0]))
    assert result.code == 2 and "no rule named 'nope'" in result.err


def test_a_from_with_control_characters_is_shown_without_them(tmp_path):
    eml = tmp_path / "m.eml"
    eml.write_bytes(b"From: \x1b[31mred <r@example.org>\r\nSubject: s\r\n\r\nhi\r\n")
    result = mailrules_test(rules_file(tmp_path, "[]"), str(eml))
    assert "\x1b" not in result.out and "from ?[31mred <r@example.org>" in result.out


UNICODE_RULES = r"""
rules:
  - name: umlaut
    match: {subject: größe, from: jürgen}
    actions: [flag]
"""


def test_inline_non_ascii_header_values_are_written_as_encoded_words_and_still_match(tmp_path):
    from mailrules.config import load

    case = """
      - name: umlaut subject
        message:
          headers: {From: 'Jürgen Müller <j@example.org>', Subject: 'Größe 42'}
          body: "x\\n"
        expect: {rules: [umlaut]}
    """
    config = rules_file(tmp_path, case, rules=UNICODE_RULES)
    raw = load(config).tests[0].raw
    header = raw.split(b"\r\n\r\n", 1)[0]
    assert header.isascii(), header  # no raw 8-bit bytes for a server to rewrite
    assert b"=?utf-8?" in header and b"<j@example.org>" in header
    result = mailrules_test(config)
    assert result.code == 0, result.out + result.err


def test_a_non_ascii_header_criterion_is_warned_about_as_server_dependent(tmp_path):
    case = """
      - name: umlaut subject
        message: {headers: {Subject: 'Größe 42'}, body: "x\\n"}
        expect: {rules: []}
    """
    result = mailrules_test(rules_file(tmp_path, case, rules=UNICODE_RULES))
    assert "subject: 'größe'" in result.err and "Cyrus stores raw 8-bit header bytes" in result.err
