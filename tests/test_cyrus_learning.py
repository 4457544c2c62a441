"""`mailrules suggest` and `mailrules import sieve` on Cyrus IMAP (Debian's ``INBOX.``/``.`` namespace).

What they write is a rules file: folder names with ``/`` and without the server's prefix, and
criteria that the server agrees with (`mailrules test --against`). Skipped without Cyrus,
unless MAILRULES_REQUIRE_CYRUS=1.
"""

from __future__ import annotations

import pytest
import yaml

from mailrules.testing.messages import make_message
from tests.helpers import messages, run_cli, run_once, write_config

FILED = {  # rules-file folder -> how its messages look
    "Lists/dev": {"headers": {"List-Id": "Dev <dev.lists.example.org>"}},
    "People/carol": {"from_": "Carol <carol@people.example>"},
    "Vendors/shop": {"from_": "billing@shop.example"},
}

SIEVE = """require ["fileinto", "regex", "imap4flags"];
if header :contains "List-Id" "dev.lists.example.org" {
  fileinto "INBOX.Lists.dev";
  stop;
}
if header :regex "subject" "^\\\\[build [0-9]+\\\\] failed" {
  addflag "\\\\Flagged";
  fileinto "INBOX.Builds";
  stop;
}
if address :domain :is "from" "shop.example" {
  fileinto "INBOX.Vendors.shop";
}
"""


def _corpus() -> dict[str, bytes]:
    return {
        "list": make_message(headers={"List-Id": "Dev <dev.lists.example.org>"}, subject="news"),
        "build": make_message(subject="[build 42] failed on main"),
        "build-ok": make_message(subject="[build 42] passed"),
        "shop": make_message(from_="billing@shop.example", subject="invoice"),
        "carol": make_message(from_="Carol <carol@people.example>", subject="lunch"),
        "plain": make_message(subject="hello"),
    }


def _emls(tmp_path, corpus: dict[str, bytes]) -> list:
    paths = []
    for name, raw in corpus.items():
        (tmp_path / f"{name}.eml").write_bytes(raw)
        paths.append(tmp_path / f"{name}.eml")
    return paths


@pytest.fixture(scope="module")
def filed(cyrus):
    """An account filed by hand (12 messages per folder, plus unfiled mail in INBOX): (user, corpus)."""
    user = cyrus.add_user()
    corpus: dict[str, bytes] = {}
    for folder, looks in FILED.items():
        raws = [make_message(subject=f"{folder} {n}", **looks) for n in range(12)]
        cyrus.deliver_files(user, cyrus.folder(folder), raws, flags="S")
        corpus.update({f"{folder.replace('/', '-')}-{n}": raw for n, raw in enumerate(raws)})
    cyrus.deliver_files(user, "INBOX", [make_message(subject=f"other {n}") for n in range(10)])
    return user, corpus


def test_suggest_proposes_rules_file_folder_names_without_the_inbox_prefix(cyrus, filed, tmp_path, monkeypatch):
    user, _ = filed
    config = write_config(tmp_path, monkeypatch, cyrus, user, "[]")
    result = run_cli("-c", config, "suggest", "me")
    assert result.code == 0, result.err
    moves = sorted(action["move"] for rule in yaml.safe_load(result.out)["rules"] for action in rule["actions"])
    assert moves == sorted(FILED)


def test_suggested_rules_pass_test_against_cyrus_and_file_a_copy_of_the_mail(cyrus, filed, tmp_path, monkeypatch):
    user, corpus = filed
    suggested = run_cli("-c", write_config(tmp_path, monkeypatch, cyrus, user, "[]"), "suggest", "me")
    rules = yaml.safe_dump(yaml.safe_load(suggested.out)["rules"], sort_keys=False)
    copy_user = cyrus.add_user()
    config = write_config(tmp_path, monkeypatch, cyrus, copy_user, rules, filename="suggested.yaml")
    checked = run_cli("-c", config, "test", "--against", "me", *_emls(tmp_path, corpus))
    assert checked.code == 0, checked.out + checked.err
    cyrus.deliver_files(copy_user, "INBOX", corpus.values())
    assert run_once(config, tmp_path / "state").code == 0
    assert {folder: len(messages(cyrus, copy_user, cyrus.folder(folder))) for folder in FILED} == {
        folder: 12 for folder in FILED
    }


def test_an_imported_cyrus_sieve_script_passes_test_against_and_files_into_the_inbox_namespace(
    cyrus, cyrus_user, tmp_path, monkeypatch
):
    (tmp_path / "cyrus.sieve").write_text(SIEVE)
    imported = run_cli("import", "sieve", "--rules-only", "--separator", ".", tmp_path / "cyrus.sieve")
    assert imported.code == 0, imported.err
    (tmp_path / "converted.yaml").write_text(imported.out)
    config = write_config(tmp_path, monkeypatch, cyrus, cyrus_user, "[]", top="include: [converted.yaml]")
    checked = run_cli("-c", config, "test", "--against", "me", *_emls(tmp_path, _corpus()))
    assert checked.code == 0, checked.out + checked.err
    cyrus.deliver_files(cyrus_user, "INBOX", _corpus().values())
    assert run_once(config, tmp_path / "state").code == 0
    where = {folder: sorted(m.subject for m in messages(cyrus, cyrus_user, folder))
             for folder in ("INBOX", "INBOX.Lists.dev", "INBOX.Builds", "INBOX.Vendors.shop")}
    assert where == {
        "INBOX": ["[build 42] passed", "hello", "lunch"],
        "INBOX.Lists.dev": ["news"],
        "INBOX.Builds": ["[build 42] failed on main"],
        "INBOX.Vendors.shop": ["invoice"],
    }


@pytest.mark.parametrize("script", ["matching", "regex_chain", "stops"])
def test_converted_reference_scripts_agree_with_cyrus_with_test_against(script, cyrus, cyrus_user, tmp_path,
                                                                      monkeypatch):
    from pathlib import Path

    sieve = Path(__file__).parent / "data" / "sieve" / f"{script}.sieve"
    imported = run_cli("import", "sieve", "--rules-only", sieve)
    (tmp_path / "converted.yaml").write_text(imported.out)
    config = write_config(tmp_path, monkeypatch, cyrus, cyrus_user, "[]", top="include: [converted.yaml]")
    corpus = {**_corpus(), "big": make_message(subject="data", size_padding=5000),
              "priority": make_message(headers={"X-Priority": "1"}, subject="urgent: p"),
              "order": make_message(subject="Order #123 shipped"), "caps": make_message(subject="ALL CAPS")}
    checked = run_cli("-c", config, "test", "--against", "me", *_emls(tmp_path, corpus))
    assert checked.code == 0, checked.out + checked.err
