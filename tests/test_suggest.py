"""`mailrules suggest`: proposed rules reproduce how a generated account was filed (Dovecot).

The account: 20 folders filed by List-Id (7), by sender address (7) and by sender domain (6),
an INBOX of unfiled mail from the same shared domains, and 5% of the filed messages filed by
hand against the pattern (a stranger's message in a folder). The proposed rules, applied in
order to a copy of the original INBOX (every message, as it was before filing), must put at
least 95% of the pattern-filed messages where the user put them, with at least 98% precision.
"""

from __future__ import annotations

import random

import pytest
import yaml

from tests.helpers import run_cli, run_once, snapshot, write_config


def _account(make_message, seed: int = 7) -> dict[str, list[tuple[bytes, bool]]]:
    """folder -> [(message, filed by the pattern)], INBOX included (unfiled mail)."""
    rng = random.Random(seed)
    shared = ["mail.example", "post.example", "webmail.example"]
    folders: dict[str, list[tuple[bytes, bool]]] = {"INBOX": []}

    def stranger() -> str:
        return f"{rng.choice(['ann', 'bo', 'cy', 'di', 'ed'])}{rng.randrange(10**6)}@{rng.choice(shared)}"

    def msg(sender: str, **headers: str) -> bytes:
        return make_message(from_=f"Someone <{sender}>", subject=f"s{rng.randrange(10**9)}", headers=headers)

    for i in range(7):
        folders[f"Lists/list{i}"] = [(msg(stranger(), **{"List-Id": f"List {i} <list{i}.lists.example.org>"}), True)
                                     for _ in range(rng.randrange(25, 45))]
    for i in range(7):
        sender = f"person{i}@{shared[i % 3]}"
        folders[f"People/person{i}"] = [(msg(sender), True) for _ in range(rng.randrange(20, 40))]
    for i in range(6):
        folders[f"Vendors/vendor{i}"] = [(msg(f"{rng.choice(['billing', 'news', 'help', 'noreply'])}@"
                                              f"vendor{i}.example"), True) for _ in range(rng.randrange(20, 40))]
    filed = sum(len(v) for k, v in folders.items() if k != "INBOX")
    for _ in range(round(filed * 0.05 / 0.95)):  # 5% of the filed messages: filed by hand, no pattern
        rng.choice([v for k, v in folders.items() if k != "INBOX"]).append((msg(stranger()), False))
    folders["INBOX"] = [(msg(stranger()), False) for _ in range(150)]
    return folders


@pytest.fixture(scope="module")
def filed(dovecot):
    """One filed account for the whole module (nothing here changes it): (user, folders)."""
    from mailrules.testing.messages import make_message

    user = dovecot.add_user()
    folders = _account(make_message)
    for folder, items in folders.items():
        dovecot.deliver_files(user, folder, [raw for raw, _ in items], flags="S")
    return user, folders


@pytest.fixture
def imap_user(filed):
    return filed[0]


@pytest.fixture
def filed_account(filed):
    return filed[1]


def _suggest(tmp_path, monkeypatch, dovecot, imap_user, rules: str = "[]", *extra: str):
    config = write_config(tmp_path, monkeypatch, dovecot, imap_user, rules)
    result = run_cli("-c", config, "suggest", "me", *extra)
    assert result.code == 0, result.err
    return config, result


def test_suggested_rules_reproduce_the_filing_on_a_copy_of_the_original_inbox(tmp_path, monkeypatch, dovecot,
                                                                              imap_user, filed_account, capsys):
    from mailrules.testing.daemon import content_digest

    _, result = _suggest(tmp_path, monkeypatch, dovecot, imap_user)
    proposed = yaml.safe_load(result.out)["rules"]
    assert len(proposed) == 20
    copy_user = dovecot.add_user()  # the original INBOX: every message as it arrived, before filing
    dovecot.deliver_files(copy_user, "INBOX", [raw for items in filed_account.values() for raw, _ in items])
    config = write_config(tmp_path, monkeypatch, dovecot, copy_user, yaml.safe_dump(proposed, sort_keys=False),
                          filename="copy.yaml")
    assert run_once(config, tmp_path / "state").code == 0
    now = {digest: folder for folder, rows in snapshot(dovecot, copy_user).items() for digest, _, _ in rows}
    reproduced = pattern = filed = filed_right = right = moves = 0
    for folder, items in filed_account.items():
        for raw, by_pattern in items:
            target = now[content_digest(raw)]
            pattern += by_pattern
            reproduced += by_pattern and target == folder
            filed += folder != "INBOX"
            filed_right += folder != "INBOX" and target == folder
            moves += target != "INBOX"
            right += target != "INBOX" and target == folder
    with capsys.disabled():
        print(f"\nsuggest: of {pattern} messages filed by List-Id/sender/domain, {reproduced} "
              f"({reproduced / pattern:.1%}) reproduced; of all {filed} filed messages (hand-filed included) "
              f"{filed_right} ({filed_right / filed:.1%}); precision {right}/{moves} ({right / moves:.1%})")
    assert reproduced / pattern >= 0.95
    assert right / moves >= 0.98


def test_each_proposal_says_its_coverage_and_precision(tmp_path, monkeypatch, dovecot, imap_user, filed_account):
    _, result = _suggest(tmp_path, monkeypatch, dovecot, imap_user)
    comments = [line for line in result.out.splitlines() if line.strip().startswith("# covers")]
    assert len(comments) == 20
    assert all("precision" in c and "from elsewhere" in c for c in comments)


def test_a_sender_domain_is_merged_rather_than_listing_each_address(tmp_path, monkeypatch, dovecot, imap_user,
                                                                   filed_account):
    _, result = _suggest(tmp_path, monkeypatch, dovecot, imap_user)
    rule = next(r for r in yaml.safe_load(result.out)["rules"] if r["actions"] == [{"move": "Vendors/vendor0"}])
    assert rule["match"] == {"from": "@vendor0.example"}


def test_suggest_changes_nothing_on_the_server(tmp_path, monkeypatch, dovecot, imap_user, filed_account):
    before = snapshot(dovecot, imap_user)
    _suggest(tmp_path, monkeypatch, dovecot, imap_user)
    assert snapshot(dovecot, imap_user) == before


def test_a_folder_an_existing_rule_already_files_gets_no_proposal(tmp_path, monkeypatch, dovecot, imap_user,
                                                                  filed_account):
    existing = """
    - name: list 3
      match: {header: {List-Id: list3.lists.example.org}}
      actions: [{move: Lists/list3}]
    """
    _, result = _suggest(tmp_path, monkeypatch, dovecot, imap_user, existing)
    targets = [r["actions"][0]["move"] for r in yaml.safe_load(result.out)["rules"]]
    assert "Lists/list3" not in targets and len(targets) == 19


def test_folders_below_min_messages_are_skipped(tmp_path, monkeypatch, dovecot, imap_user, filed_account):
    _, result = _suggest(tmp_path, monkeypatch, dovecot, imap_user, "[]", "--min-messages", "1000")
    assert yaml.safe_load(result.out) is None  # only comments
    assert "No folder" in result.out


def test_a_large_account_shows_progress(tmp_path, monkeypatch, dovecot, imap_user, filed_account):
    monkeypatch.setattr("mailrules.suggest.PROGRESS_FROM", 100)
    _, result = _suggest(tmp_path, monkeypatch, dovecot, imap_user)
    assert "catching up on" in result.err and "caught up on" in result.err


def test_an_unknown_account_is_a_usage_error(tmp_path, monkeypatch, dovecot, imap_user):
    config = write_config(tmp_path, monkeypatch, dovecot, imap_user, "[]")
    result = run_cli("-c", config, "suggest", "nobody")
    assert result.code == 2 and "no account named 'nobody'" in result.err


def test_folders_limits_the_proposals_to_those_folders(tmp_path, monkeypatch, dovecot, imap_user, filed_account):
    _, result = _suggest(tmp_path, monkeypatch, dovecot, imap_user, "[]", "--folders", "Lists/list0",
                         "People/person0")
    targets = sorted(r["actions"][0]["move"] for r in yaml.safe_load(result.out)["rules"])
    assert targets == ["Lists/list0", "People/person0"]
