"""`mailrules import sieve`: converted rules do what Dovecot's Sieve (Pigeonhole's sieve-test) does.

Each script under tests/data/sieve is converted; the output must pass `mailrules check`; then
every message of a corpus goes through `sieve-test` (the reference) and through
`mailrules test --format json` with the converted file, and the folders it ends in (and the
flags of the message left in INBOX or moved) must be the same.
"""

from __future__ import annotations

import io
import json
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mailrules.importers.emit import write_rules
from mailrules.importers.sieve import convert
from mailrules.testing.messages import make_message
from mailrules.testing.require import REQUIRE_DOVECOT, missing
from tests.helpers import run_cli

DATA = Path(__file__).parent / "data" / "sieve"
SCRIPTS = ["chain", "flags", "matching", "keep", "regex_chain", "stops"]


def _corpus() -> dict[str, bytes]:
    m = make_message
    return {
        "list": m(headers={"List-Id": "Dev <dev.lists.example.org>"}, subject="build news"),
        "work": m(from_="Carol <carol@example.com>", subject="meeting"),
        "work-urgent": m(from_="carol@sub.example.com", subject="urgent: meeting"),
        "spam": m(subject="cheap spam here"),
        "plain": m(subject="hello"),
        "urgent": m(subject="URGENT please"),
        "invoice-big": m(subject="Your invoice", size_padding=3000),
        "invoice-read": m(subject="invoice read me"),
        "boss": m(from_="The Boss <boss@corp.example>", subject="read this"),
        "priority": m(headers={"X-Priority": "1"}, subject="p"),
        "priority-2": m(headers={"X-Priority": "1 (Highest)"}, subject="p2"),
        "order": m(subject="Order #123 shipped"),
        "order-no": m(subject="Order #123 delayed"),
        "build": m(subject="[build 42] failed on main"),
        "build-ok": m(subject="[build 42] passed"),
        "newsletter": m(headers={"List-Unsubscribe": "<mailto:u@x.example>"}, subject="news"),
        "photos": m(subject="holiday photos"),
        "huge": m(subject="data", size_padding=5000),
        "caps": m(subject="ALL CAPS"),
        "caps-lower": m(subject="all caps"),
        "friend": m(from_="My Friend <friendly@pals.example>", subject="hi"),
        "friend-name": m(from_="Friend Person <x@pals.example>", subject="hi"),
        "net": m(from_="n@host.example.net", subject="net"),
        "alpha": m(subject="alpha"),
        "alpha-beta": m(subject="alpha beta"),
        "beta-gamma": m(subject="beta gamma"),
        "delta": m(subject="delta"),
        "delta-omega": m(subject="delta omega"),
        "delta-keepme": m(subject="delta keepme"),
        "omega-keepme": m(subject="omega keepme"),
        "urgent-shop": m(from_="orders@shop.example", subject="urgent: Order #1 shipped"),
        "shop-build": m(from_="ci@shop.example", subject="[build 7] failed"),
        "boss-photos": m(from_="boss@corp.example", subject="photos", headers={"X-Priority": "1"}),
        "notshop": m(from_="a@shop.example.org", subject="x"),
        "skip-mark": m(subject="skip mark"),
        "mark": m(subject="mark me", headers={"X-Mailer": "mutt"}),
        "kk-ff": m(subject="kk ff"),
        "ff": m(subject="ff"),
        "junk": m(subject="junk"),
        "junk-save": m(subject="junk save"),
        "junk-mailer": m(subject="junk", headers={"X-Mailer": "mutt"}),
    }


@pytest.fixture(scope="module")
def sieve_test() -> Iterator[Callable[[Path, bytes], dict[str, set[str]]]]:
    binary = shutil.which("sieve-test")
    if binary is None:
        missing("sieve-test is not installed (Debian: apt-get install dovecot-sieve)", REQUIRE_DOVECOT)
    with tempfile.TemporaryDirectory(prefix="mailrules-sieve-") as directory:  # reachable by nobody
        work = Path(directory)
        work.chmod(0o777)
        yield _runner(binary, work)


def _runner(binary: str, work: Path) -> Callable[[Path, bytes], dict[str, set[str]]]:
    conf = work / "sieve.conf"
    conf.write_text(f"mail_location = maildir:{work}/mail\n")
    prefix = ["runuser", "-u", "nobody", "--"] if os.geteuid() == 0 else []  # Dovecot refuses root

    def run(script: Path, message: bytes) -> dict[str, set[str]]:
        for name, data in (("s.sieve", script.read_bytes()), ("m.eml", message)):
            (work / name).write_bytes(data)
            (work / name).chmod(0o644)
        done = subprocess.run([*prefix, binary, "-c", str(conf), str(work / "s.sieve"), str(work / "m.eml")],
                              capture_output=True, text=True, timeout=30, check=False)
        assert "final result: success" in done.stderr + done.stdout, done.stderr
        return _stores(done.stdout)

    return run


def _stores(report: str) -> dict[str, set[str]]:
    """sieve-test's report: each folder the message is stored in, with its flags."""
    stores: dict[str, set[str]] = {}
    folder = None
    for line in report.splitlines():
        m = re.match(r"\s*\* store message in folder: (.+)", line)
        if m:
            folder = m.group(1).strip()
            stores[folder] = set()
        elif folder and (f := re.match(r"\s*\+ add IMAP flags: (.+)", line)):
            stores[folder] = {x if x.startswith("$") or not x.startswith("\\") else x.lower() for x in f.group(1).split()}
        elif line.strip().startswith("*"):
            folder = None
    return stores


def _converted(script: str, tmp_path: Path) -> Path:
    rules, skipped = convert((DATA / f"{script}.sieve").read_text())
    assert skipped == []
    out = io.StringIO()
    write_rules(rules, f"{script}.sieve", "sieve", out)
    path = tmp_path / f"{script}.yaml"
    path.write_text(out.getvalue())
    path.chmod(0o600)
    return path


@pytest.mark.parametrize("script", SCRIPTS)
def test_converted_script_passes_check(script, tmp_path):
    result = run_cli("-c", _converted(script, tmp_path), "check")
    assert result.code == 0, result.err


@pytest.mark.parametrize("script", SCRIPTS)
def test_converted_rules_file_every_message_where_sieve_does(script, tmp_path, sieve_test):
    config = _converted(script, tmp_path)
    corpus = _corpus()
    files = []
    for name, raw in corpus.items():
        (tmp_path / f"{name}.eml").write_bytes(raw)
        files.append(tmp_path / f"{name}.eml")
    result = run_cli("-c", config, "test", "--format", "json", *files)
    assert result.code == 0, result.err
    ours = {Path(item["message"]).stem: item for item in json.loads(result.out)}
    differences = []
    for name, raw in corpus.items():
        expected = sieve_test(DATA / f"{script}.sieve", raw)
        item = ours[name]
        folders = set(item["copies"]) | ({item["mailbox"]} if not item["deleted"] else set())
        final = {f.lower() for f in item["flags"]} | set(item["keywords"])
        if folders != set(expected) or (not item["deleted"] and final != expected.get(item["mailbox"], final)):
            differences.append(f"{name}: sieve {expected}, mailrules {sorted(folders)} flags {sorted(final)} "
                               f"(rules {[r['name'] for r in item['rules']]})")
    assert not differences, "\n".join(differences)


def test_unsupported_constructs_are_listed_with_their_line_and_exit_1(tmp_path):
    result = run_cli("import", "sieve", DATA / "unsupported.sieve")
    assert result.code == 1
    lines = {int(m.group(1)): m.group(2) for m in re.finditer(r"unsupported\.sieve:(\d+): not converted: (\S+)",
                                                                   result.err)}
    assert {3, 6, 7, 8, 10} <= set(lines)
    assert "Ok" in result.out  # what could be converted is written all the same
    config = tmp_path / "out.yaml"
    config.write_text(result.out)
    config.chmod(0o600)
    assert run_cli("-c", config, "check").code == 0


def test_a_script_that_does_not_parse_is_a_usage_error_with_its_line(tmp_path):
    bad = tmp_path / "bad.sieve"
    bad.write_text('require ["fileinto"];\nif header :contains "a" {\n')
    result = run_cli("import", "sieve", bad)
    assert result.code == 2
    assert "bad.sieve" in result.err and "line" in result.err


def _rules_of(script: str) -> list[dict]:
    rules, skipped = convert(script)
    assert skipped == []
    return [r.mapping() for r in rules]


def test_fileinto_then_stop_is_one_move_rule():
    assert _rules_of('require "fileinto";\nif header :contains "List-Id" "dev" { fileinto "Lists/dev"; stop; }') == [
        {"name": "line 2: move Lists/dev", "match": {"header": {"List-Id": "dev"}},
         "actions": [{"move": "Lists/dev"}]}]


def test_header_is_becomes_a_where_regex_after_a_server_side_substring_search():
    [rule] = _rules_of('require "fileinto";\nif header :is "X-Priority" "1 (high)" { fileinto "P"; }')
    assert rule["match"] == {"header": {"X-Priority": "1 (high)"}}
    assert rule["where"] == [{"regex": {"X-Priority": r"(?i)^1\ \(high\)$"}}]


def test_a_regex_test_under_not_is_reported_not_guessed():
    rules, skipped = convert('require ["fileinto", "regex"];\nif not header :regex "subject" "^a" { fileinto "X"; }')
    assert rules == [] and [s.line for s in skipped] == [2]


def test_rules_only_output_is_an_include_file_that_check_accepts(tmp_path):
    result = run_cli("import", "sieve", "--rules-only", DATA / "chain.sieve")
    assert result.code == 0 and "accounts:" not in result.out and "version:" not in result.out
    (tmp_path / "sieve.yaml").write_text(result.out)
    main = tmp_path / "rules.yaml"
    main.write_text("version: 1\naccounts:\n  me: {host: imap.example.com, username: me, password_env: X}\n"
                    "include: [sieve.yaml]\n")
    main.chmod(0o600)
    assert run_cli("-c", main, "check").code == 0


def test_a_file_that_cannot_be_read_is_a_usage_error(tmp_path):
    result = run_cli("import", "sieve", tmp_path / "missing.sieve")
    assert result.code == 2 and "missing.sieve" in result.err


@pytest.mark.parametrize("script", ["matching", "regex_chain", "stops"])
def test_converted_rules_agree_with_the_server_with_test_against(script, tmp_path, monkeypatch, dovecot, imap_user):
    from tests.helpers import write_config

    result = run_cli("import", "sieve", "--rules-only", DATA / f"{script}.sieve")
    (tmp_path / "converted.yaml").write_text(result.out)
    config = write_config(tmp_path, monkeypatch, dovecot, imap_user, "[]", top="include: [converted.yaml]")
    files = []
    for name, raw in _corpus().items():
        (tmp_path / f"{name}.eml").write_bytes(raw)
        files.append(tmp_path / f"{name}.eml")
    checked = run_cli("-c", config, "test", "--against", "me", *files)
    assert checked.code == 0, checked.out + checked.err


def test_separator_turns_dotted_folder_names_into_levels_without_the_inbox_prefix():
    rules, _ = convert('require "fileinto";\nif true { fileinto "INBOX.Lists.dev"; }', separator=".")
    assert rules[0].actions == [{"move": "Lists/dev"}]


def test_a_spam_score_comparison_is_reported_and_the_rest_converted():
    script = ('require ["fileinto", "relational", "comparator-i;ascii-numeric"];\n'
              'if header :value "ge" :comparator "i;ascii-numeric" "X-Spam-Score" "5" { fileinto "Junk"; stop; }\n'
              'if header :contains "List-Id" "dev" { fileinto "Lists/dev"; }\n')
    rules, skipped = convert(script)
    assert [(s.line, s.what) for s in skipped][0] == (2, "header :value")
    assert [r.actions for r in rules] == [[{"move": "Lists/dev"}]]
