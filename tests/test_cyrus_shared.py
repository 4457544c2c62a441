"""Shared mailboxes on Cyrus, whose keyword table holds 100 keywords per mailbox, never freed.

Claims use a fixed set of keywords (`mailrules.claims.keywords_needed`): instances, runs and
fresh state directories add none; a full table is detected by `check --connect`, reported by
`status`, and never stops an account that is not shared; a takeover's STORE names each keyword
once and leaves the holder's state (claim, token, step) on the message.
Skipped without Cyrus, unless MAILRULES_REQUIRE_CYRUS=1 (CI).
"""

from __future__ import annotations

import collections
import hashlib
import re

from mailrules.claims import GEN_BITS, STEP_BITS, Claims, claimed_keyword, generation, keywords_needed, step
from mailrules.criteria import SearchQuery
from mailrules.imap import internals
from mailrules.imap.session import ImapSession
from mailrules.testing.messages import make_message
from tests.helpers import run_cli, run_once

RULES = """\
  - name: file
    match: {subject: shared}
    actions:
      - copy: Archive
      - add_keyword: $Filed
"""


def _account(name: str, cyrus, user, env: str, shared: bool) -> str:
    return (f"  {name}:\n    host: {cyrus.host}\n    port: {cyrus.port}\n    tls: none\n"
            f"    username: {user.name}\n    password_env: {env}\n    watch: [INBOX]\n"
            + ("    shared: true\n    claim_timeout: 1h\n" if shared else ""))


def _config(tmp_path, monkeypatch, cyrus, team, mine=None):
    """A rules file: account `team` shared, and `mine` (not shared) when given."""
    monkeypatch.setenv("TEAM_PW", team.password)
    text = "version: 1\naccounts:\n" + _account("team", cyrus, team, "TEAM_PW", True)
    if mine is not None:
        monkeypatch.setenv("MINE_PW", mine.password)
        text += _account("mine", cyrus, mine, "MINE_PW", False)
    path = tmp_path / "rules.yaml"
    path.write_text(text + "rules:\n" + RULES)
    path.chmod(0o600)
    return path


def _defined_keywords(cyrus, user) -> set[str]:
    """The keywords the mailbox's table holds (its FLAGS: Cyrus lists every slot ever taken)."""
    client = cyrus.client(user)
    try:
        flags = client.select_folder("INBOX")[b"FLAGS"]
    finally:
        client.logout()
    return {f.decode() for f in flags if not f.startswith(b"\\")}


def _archive(cyrus, user) -> collections.Counter:
    client = cyrus.client(user, cyrus.folder("Archive"))
    try:
        raws = [d[b"BODY[]"] for d in client.fetch(client.search("ALL"), ["BODY.PEEK[]"]).values()]
    finally:
        client.logout()
    return collections.Counter(hashlib.sha256(r).hexdigest() for r in raws)


def test_fresh_instances_on_a_shared_cyrus_account_take_only_the_fixed_keyword_slots(
        cyrus, cyrus_user, tmp_path, monkeypatch):
    """Before: each instance (host and state directory) defined its own `$MRClaim-<id>`: five
    `run --once` runs with fresh state directories took five slots for good. Now the slots
    taken are always among the 18 fixed ones (random token bits take theirs as they are first
    used), whatever the number of instances."""
    config = _config(tmp_path, monkeypatch, cyrus, cyrus_user)
    validity = int(cyrus.client(cyrus_user).folder_status("INBOX", ["UIDVALIDITY"])[b"UIDVALIDITY"])
    allowed = {*keywords_needed("INBOX", validity), "$Filed"}
    sent = []
    for run in range(5):
        raw = make_message(subject=f"shared {run}")
        sent.append(raw)
        cyrus.deliver_files(cyrus_user, "INBOX", [raw])
        result = run_once(config, tmp_path / f"state{run}")  # a new instance each time
        assert result.code == 0, result.err
        assert _defined_keywords(cyrus, cyrus_user) <= allowed, (run, _defined_keywords(cyrus, cyrus_user) - allowed)
    assert _archive(cyrus, cyrus_user) == collections.Counter(hashlib.sha256(r.replace(b"\r\n", b"\n").replace(
        b"\n", b"\r\n")).hexdigest() for r in sent)  # each message acted on once


def _fill_keyword_table(cyrus, user, room: int) -> None:
    """Define keywords on a message of INBOX until `room` slots are left."""
    cyrus.deliver_files(user, "INBOX", [make_message(subject="full of keywords")])
    client = cyrus.client(user, "INBOX")
    try:
        client.add_flags(client.search("ALL"), [f"$k{n}" for n in range(100 - room)])
    finally:
        client.logout()


def test_a_full_keyword_table_on_cyrus_is_detected_reported_and_spares_the_account_not_shared(
        cyrus, tmp_path, monkeypatch):
    """Before: `check --connect` said "keywords: yes", `status` printed nothing, and every pass
    failed on the claim."""
    team, mine = cyrus.add_user(), cyrus.add_user()
    _fill_keyword_table(cyrus, team, room=0)
    for user in (team, mine):
        cyrus.deliver_files(user, "INBOX", [make_message(subject=f"shared for {user.name}")])
    config = _config(tmp_path, monkeypatch, cyrus, team, mine)
    state = tmp_path / "state"
    check = run_cli("-c", config, "--state", state, "check", "--connect")
    assert check.code != 0 and "keyword table full" in check.out, check.out
    run = run_once(config, state)
    assert run.code != 0 and "Traceback" not in run.err, run.err
    assert sum(_archive(cyrus, mine).values()) == 1  # the account that is not shared: processed
    client = cyrus.client(team)
    assert not client.folder_exists(cyrus.folder("Archive")) or not _archive(cyrus, team)
    client.logout()
    status = run_cli("-c", config, "--state", state, "status")
    assert "keyword table is full" in status.out, status.out


def test_a_keyword_table_with_room_for_fewer_than_the_claim_keywords_leaves_nothing_claimed(
        cyrus, cyrus_user, tmp_path, monkeypatch):
    """Before, at 98 of 100: the claim, copy and move succeeded, `$Tagged` and the done mark were
    refused, and the messages stayed claimed and not done for good."""
    _fill_keyword_table(cyrus, cyrus_user, room=2)  # 98 of 100 taken
    cyrus.deliver_files(cyrus_user, "INBOX", [make_message(subject=f"shared {i}") for i in range(4)])
    config = _config(tmp_path, monkeypatch, cyrus, cyrus_user)
    run = run_once(config, tmp_path / "state")
    assert run.code != 0 and "keyword table is full (98 defined" in run.err, run.err
    client = cyrus.client(cyrus_user, "INBOX")
    try:
        flags = client.get_flags(client.search("ALL"))
    finally:
        client.logout()
    assert not any(f.decode().startswith("$MR") for fs in flags.values() for f in fs), flags  # never half-claimed


def _session(cyrus, user) -> ImapSession:
    session = ImapSession(cyrus.client(user), "t")
    session.client.enable("CONDSTORE")
    session.select("INBOX")
    return session


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_a_takeover_on_cyrus_names_each_keyword_once_and_stores_the_holders_state(cyrus, cyrus_user, monkeypatch):
    """Before: the takeover sent `$MRClaimed` twice; the new holder's keyword was dropped."""
    cyrus.deliver_files(cyrus_user, "INBOX", [make_message(subject="shared orphan")])
    a, b = _session(cyrus, cyrus_user), _session(cyrus, cyrus_user)
    everything = a.search(SearchQuery((b"ALL",)))
    holder, clock = Claims("dead"), Clock()
    taker = Claims("taker", clock=clock)
    (uid,) = holder.claim(a, "t", "INBOX", everything, 10.0).ours
    assert holder.guard(a, "t", "INBOX", everything, 1) == everything  # step 1 in flight, then it died
    stores: list[list[str]] = []
    command = internals.command

    def recording(imap, name, *args):
        if name == "UID" and args[0] == "STORE":
            stores.append(re.findall(r"[^\s()]+", args[-1]))
        return command(imap, name, *args)

    monkeypatch.setattr(internals, "command", recording)
    assert not taker.claim(b, "t", "INBOX", everything, 10.0).ours  # seen: the timer starts
    clock.now += 11
    got = taker.claim(b, "t", "INBOX", everything, 10.0)
    assert list(got.ours) == [uid] and got.resume == {uid: 1}
    assert stores and all(len(s) == len(set(s)) for s in stores), stores  # each keyword once
    flags = {f.decode() for f in b.client.get_flags([uid])[uid]}
    claimed = claimed_keyword("INBOX", b.selected.uidvalidity)
    assert claimed in flags and step(flags) == 1
    assert generation(flags) == taker.held("t", "INBOX", b.selected.uidvalidity)[uid]
    assert {f for f in flags if f.startswith("$MR")} <= {claimed, *GEN_BITS, *STEP_BITS}
    for session in (a, b):
        session.logout()


def test_instances_racing_on_cyrus_for_the_same_messages_never_both_hold_one(cyrus, make_message):
    """Measured with identical writes forced and no confirming round: 0 of 2,000 message-rounds
    held twice (Cyrus checks UNCHANGEDSINCE under the mailbox lock; Dovecot 2.3 does not)."""
    from tests.test_shared_race import race_rounds

    doubles, total = race_rounds(cyrus, make_message, rounds=3)
    assert doubles == 0, f"{doubles} of {total} message-rounds held twice"
