"""Shared mailboxes: takeovers are resumes, holders re-check, the keyword set stays fixed.

Against the real Dovecot. The protocol (`mailrules.claims`) is driven directly with two
`Claims` objects on two connections (two instances), with a fake clock so that expiry needs
no waiting; the end-to-end cases run `mailrules run` and count by content.
"""

from __future__ import annotations

import collections
import hashlib

from mailrules.claims import GEN_BITS, STEP_BITS, Claims, claimed_keyword, done_keyword, generation, step
from mailrules.imap.session import ImapSession
from mailrules.testing.daemon import DaemonHarness, keywords, message_contents, wait_until
from mailrules.uidset import UidSet


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _session(dovecot, user) -> ImapSession:
    session = ImapSession(dovecot.client(user), "t")
    session.client.enable("CONDSTORE")
    session.select("INBOX")
    return session


def _flags(session: ImapSession, uid: int) -> set[str]:
    return Claims._flags(session, [uid])[uid][0]


def _expire(claims: Claims, session: ImapSession, uids, clock: Clock) -> object:
    """Let `claims` see the claims on `uids`, then take them over (claim_timeout 10s passed)."""
    assert not claims.claim(session, "t", "INBOX", uids, 10.0).ours
    clock.now += 11
    return claims.claim(session, "t", "INBOX", uids, 10.0)


def _digest(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()


def _marks(client, folder: str = "INBOX") -> tuple[str, str]:
    validity = int(client.folder_status(folder, ["UIDVALIDITY"])[b"UIDVALIDITY"])
    return claimed_keyword(folder, validity), done_keyword(folder, validity)


def test_a_takeover_stores_the_claim_once_with_the_next_generation(dovecot, make_message):
    user = dovecot.add_user()
    dovecot.client(user).append("INBOX", make_message(subject="one"))
    a, b = _session(dovecot, user), _session(dovecot, user)
    clock = Clock()
    holder, taker = Claims("a"), Claims("b", clock=clock)
    (uid,) = holder.claim(a, "t", "INBOX", _all(a), 10.0).ours
    before = _flags(b, uid)
    got = _expire(taker, b, _all(b), clock)
    after = _flags(b, uid)
    assert list(got.ours) == [uid]
    claimed = claimed_keyword("INBOX", b.selected.uidvalidity)
    assert claimed in after
    assert generation(after) == (generation(before) + 1) % 8
    assert sorted(k for k in after if k.startswith("$MR")) == sorted({claimed} | {g for g in GEN_BITS if g in after})


def _all(session: ImapSession):
    from mailrules.criteria import SearchQuery

    return session.search(SearchQuery((b"ALL",)))


def test_a_holder_whose_claim_was_taken_over_drops_it_before_its_next_action(dovecot, make_message):
    user = dovecot.add_user()
    for i in range(3):
        dovecot.client(user).append("INBOX", make_message(subject=f"m{i}"))
    a, b = _session(dovecot, user), _session(dovecot, user)
    clock = Clock()
    holder, taker = Claims("a"), Claims("b", clock=clock)
    mine = holder.claim(a, "t", "INBOX", _all(a), 10.0).ours
    assert len(mine) == 3
    assert holder.guard(a, "t", "INBOX", mine, 1) == mine  # step 1 in flight: still ours
    first = next(iter(mine))
    got = _expire(taker, b, type(mine)([first]), clock)  # the holder was paused past claim_timeout
    assert list(got.ours) == [first] and got.resume == {first: 1}  # the taker resumes at step 1
    kept = holder.guard(a, "t", "INBOX", mine, 2)
    assert first not in kept and len(kept) == 2
    holder.done(a, "t", "INBOX", mine)  # the holder never marks done what it lost
    assert done_keyword("INBOX", a.selected.uidvalidity) not in _flags(a, first)
    assert step(_flags(a, first)) == 1


def test_two_takeovers_at_the_same_moment_have_one_winner(dovecot, make_message):
    user = dovecot.add_user()
    dovecot.client(user).append("INBOX", make_message(subject="race"))
    a, b, c = _session(dovecot, user), _session(dovecot, user), _session(dovecot, user)
    Claims("dead").claim(a, "t", "INBOX", _all(a), 10.0)
    clock = Clock()
    first, second = Claims("b", clock=clock), Claims("c", clock=clock)
    uids = _all(b)
    assert not first.claim(b, "t", "INBOX", uids, 10.0).ours
    assert not second.claim(c, "t", "INBOX", uids, 10.0).ours
    clock.now += 11
    fetch = Claims._flags

    def racing(session, wanted):  # `second` fetched, then `first` took over before its STORE
        out = fetch(session, wanted)
        if session is c and not racing.done:
            racing.done = True
            assert first.claim(b, "t", "INBOX", uids, 10.0).ours == uids
        return out

    racing.done = False
    second._flags = racing  # type: ignore[method-assign]
    assert not second.claim(c, "t", "INBOX", uids, 10.0).ours


def test_a_takeover_resumes_at_the_copy_in_flight_and_verifies_it_by_content(dovecot, tmp_path, make_message):
    """The old holder copied to Archive and died before its second copy: one copy in each, not two."""
    user = dovecot.add_user()
    client = dovecot.client(user)
    for folder in ("Archive", "Archive2"):
        client.create_folder(folder)
    raws = [make_message(subject=f"shared {i}") for i in range(5)]
    claimed, done = _marks(client)
    for raw in raws:  # claimed (generation 3), step 1 (copy: Archive) in flight, and done there
        client.append("INBOX", raw, flags=[claimed, GEN_BITS[0], GEN_BITS[1], STEP_BITS[0]])
        client.append("Archive", raw)
    rules = ("  - name: file\n    match: {subject: shared}\n    actions:\n"
             "      - copy: Archive\n      - copy: Archive2\n")
    daemon = DaemonHarness(dovecot, user, tmp_path / "d", rules=rules, shared="true", claim_timeout="1s")
    try:
        daemon.start()
        daemon.wait_for_log("took over a claim", count=1, timeout=30)
        wait_until(lambda: all(done in k for k in keywords(client, "INBOX").values()), 30, message="done")
        assert daemon.stop() == 0
    finally:
        daemon.close()
    everything = collections.Counter(_digest(r) for r in raws)
    assert message_contents(client, "Archive") == everything
    assert message_contents(client, "Archive2") == everything
    client.logout()


def test_a_message_arriving_with_another_mailboxs_claim_and_done_marks_is_processed(dovecot, tmp_path,
                                                                                     make_message):
    user = dovecot.add_user()
    client = dovecot.client(user)
    client.create_folder("Archive")
    raws = [make_message(subject=f"shared moved in {i}") for i in range(4)]
    for raw in raws:  # marks from elsewhere: another mailbox's scope, and an older version's
        client.append("INBOX", raw, flags=["$MRClaimed.0badc0de", "$MRDone.0badc0de", "$MRDone", "$MRClaimed",
                                           GEN_BITS[2], STEP_BITS[3]])
    rules = "  - name: file\n    match: {subject: shared}\n    actions:\n      - copy: Archive\n"
    daemon = DaemonHarness(dovecot, user, tmp_path / "d", rules=rules, shared="true")
    try:
        result = daemon.run("run", "--once")
        assert result.returncode == 0, result.stderr
    finally:
        daemon.close()
    assert message_contents(client, "Archive") == collections.Counter(_digest(r) for r in raws)
    client.logout()


def test_copies_mailrules_places_are_left_alone_in_their_new_mailbox_by_every_instance(dovecot, tmp_path,
                                                                                        make_message):
    """Placed messages are never processed (no loops): not by the instance that placed them, nor by another."""
    user = dovecot.add_user()
    client = dovecot.client(user)
    for folder in ("Lists", "ListArchive"):
        client.create_folder(folder)
    raws = [make_message(subject=f"list {i}") for i in range(6)]
    for raw in raws:
        client.append("INBOX", raw)
    rules = ("  - name: to-lists\n    match: {subject: list}\n    actions:\n      - copy: Lists\n"
             "  - name: archive-lists\n    mailbox: Lists\n    match: {subject: list}\n    actions:\n"
             "      - copy: ListArchive\n")
    first, second = (DaemonHarness(dovecot, user, tmp_path / name, rules=rules, watch=("INBOX", "Lists"),
                                   shared="true") for name in ("a", "b"))
    try:
        for daemon in (first, second, first):
            result = daemon.run("run", "--once")
            assert result.returncode == 0, result.stderr
    finally:
        first.close()
        second.close()
    assert message_contents(client, "Lists") == collections.Counter(_digest(r) for r in raws)
    assert not message_contents(client, "ListArchive")
    claimed, done = _marks(client)
    for marks in keywords(client, "INBOX").values():  # the source keeps no mark of the copy's new home
        assert {k for k in marks if k.startswith("$MR")} == {claimed, done}, marks
    client.logout()


def test_run_once_rule_on_a_shared_account_is_refused_and_leaves_the_messages(dovecot, tmp_path, make_message):
    user = dovecot.add_user()
    client = dovecot.client(user)
    client.create_folder("Archive")
    client.append("INBOX", make_message(subject="shared one"))
    rules = ("  - name: tag\n    match: {subject: shared}\n    actions:\n      - add_keyword: $Tagged\n"
             "  - name: file\n    match: {subject: shared}\n    actions:\n      - copy: Archive\n")
    daemon = DaemonHarness(dovecot, user, tmp_path / "d", rules=rules, shared="true")
    try:
        result = daemon.run("run", "--once", "--rule", "tag")
        assert result.returncode != 0
        assert "--rule cannot run on a shared account" in result.stderr, result.stderr
        result = daemon.run("run", "--once")
        assert result.returncode == 0, result.stderr
    finally:
        daemon.close()
    assert sum(message_contents(client, "Archive").values()) == 1
    (marks,) = keywords(client, "INBOX").values()
    assert "$Tagged" in marks
    client.logout()


def test_dry_run_on_a_shared_account_previews_only_what_a_real_run_would_do(dovecot, tmp_path, make_message):
    user = dovecot.add_user()
    client = dovecot.client(user)
    client.create_folder("Archive")
    claimed, done = _marks(client)
    for i in range(3):  # done here by another instance
        client.append("INBOX", make_message(subject=f"shared done {i}"), flags=[claimed, done])
    client.append("INBOX", make_message(subject="shared new"))
    rules = "  - name: file\n    match: {subject: shared}\n    actions:\n      - copy: Archive\n"
    daemon = DaemonHarness(dovecot, user, tmp_path / "d", rules=rules, shared="true")
    try:
        preview = daemon.run("run", "--once", "--dry-run")
        assert preview.returncode == 0, preview.stderr
        real = daemon.run("run", "--once")
        assert real.returncode == 0, real.stderr
    finally:
        daemon.close()
    assert sum(message_contents(client, "Archive").values()) == 1
    assert "1 new" in preview.stdout and "4 new" not in preview.stdout, preview.stdout
    client.logout()


def _no_new_keywords(line: bytes) -> bytes:
    """A mailbox whose keyword table is full: the server allows no new keyword (Cyrus at 100)."""
    return line.replace(b" \\*", b"") if b"PERMANENTFLAGS" in line else line


def _too_many_flags(line: bytes) -> bytes:
    """Cyrus's answer to a STORE that would define a 101st keyword."""
    if b" OK Store completed" in line:
        return line.split(b" ", 1)[0] + b" NO Too many user flags in mailbox\r\n"
    return line


def _two_accounts(dovecot, shared_user, plain_user, port: int, daemon: DaemonHarness) -> None:
    account = ("    host: {host}\n    port: {port}\n    tls: none\n    username: {user}\n"
               "    password_env: {env}\n    watch: [INBOX]\n")
    daemon.write_rules("", raw=(
        "version: 1\naccounts:\n"
        "  team:\n" + account.format(host=dovecot.host, port=port, user=shared_user.name,
                                     env="MAILRULES_TEST_PASSWORD") + "    shared: true\n"
        "  mine:\n" + account.format(host=dovecot.host, port=dovecot.port, user=plain_user.name,
                                     env="PLAIN_PASSWORD") +
        "rules:\n  - name: file\n    match: {subject: shared}\n    actions:\n      - copy: Archive\n"))


def _keyword_table_case(dovecot, tmp_path, make_message, rewrite):
    from mailrules.testing.proxy import TcpProxy

    team, mine = dovecot.add_user(), dovecot.add_user()
    clients = {}
    for user in (team, mine):
        client = clients[user.name] = dovecot.client(user)
        client.create_folder("Archive")
        client.append("INBOX", make_message(subject=f"shared for {user.name}"))
    daemon = DaemonHarness(dovecot, team, tmp_path / "d", rules="")
    with TcpProxy(dovecot.host, dovecot.port, rewrite_server=rewrite) as proxy:
        _two_accounts(dovecot, team, mine, proxy.port, daemon)
        env = {**daemon.env(), "PLAIN_PASSWORD": mine.password}
        import subprocess

        def cli(*args):
            return subprocess.run(daemon.command(*args), capture_output=True, text=True, env=env, timeout=120)

        check = cli("check", "--connect")
        run = cli("run", "--once")
        status = cli("status")
    daemon.close()
    return clients[team.name], clients[mine.name], check, run, status


def test_a_full_keyword_table_is_reported_and_never_stops_the_other_accounts(dovecot, tmp_path, make_message):
    team, mine, check, run, status = _keyword_table_case(dovecot, tmp_path, make_message, _no_new_keywords)
    assert check.returncode != 0 and "keyword table full" in check.stdout, check.stdout
    assert run.returncode != 0 and "keyword" in run.stderr, run.stderr
    assert sum(message_contents(mine, "Archive").values()) == 1  # the account that is not shared: processed
    assert not message_contents(team, "Archive")
    assert "keyword table is full" in status.stdout or "allow no new ones" in status.stdout, status.stdout


def test_a_store_refused_for_too_many_keywords_is_reported_in_status(dovecot, tmp_path, make_message):
    team, mine, _check, run, status = _keyword_table_case(dovecot, tmp_path, make_message, _too_many_flags)
    assert run.returncode != 0
    assert sum(message_contents(mine, "Archive").values()) == 1
    assert not message_contents(team, "Archive")
    assert "keyword table is full" in status.stdout, status.stdout


SWEEP_RULES = """\
  - name: sweep
    schedule: {every: 1h}
    match: {not: {keyword: $Swept}}
    actions:
      - copy: Archive
      - add_keyword: $Swept
  - name: keep
    schedule: {every: 1h}
    match: {subject: swept}
    actions:
      - copy: Kept
"""


def test_sweeps_on_a_shared_account_copy_each_message_once_across_instances(dovecot, tmp_path, make_message):
    import subprocess

    user = dovecot.add_user()
    client = dovecot.client(user)
    for folder in ("Archive", "Kept"):
        client.create_folder(folder)
    raws = [make_message(subject=f"swept {i}") for i in range(30)]
    for raw in raws:
        client.append("INBOX", raw)
    daemons = [DaemonHarness(dovecot, user, tmp_path / f"d{i}", rules=SWEEP_RULES, shared="true") for i in range(3)]
    try:
        procs = [subprocess.Popen(d.command("run", "--once", "--sweep"), env=d.env(), stdout=subprocess.PIPE,
                                  stderr=subprocess.PIPE, text=True) for d in daemons]  # three overlapping sweeps
        for proc in procs:
            _out, err = proc.communicate(timeout=120)
            assert proc.returncode == 0, err
        again = daemons[0].run("run", "--once", "--sweep")  # and one more later: 'keep' has nothing left
        assert again.returncode == 0, again.stderr
    finally:
        for d in daemons:
            d.close()
    everything = collections.Counter(_digest(r) for r in raws)
    assert message_contents(client, "Archive") == everything
    assert message_contents(client, "Kept") == everything
    client.logout()


def test_a_paused_holder_never_acts_on_a_message_the_taker_finished(dovecot, make_message, monkeypatch):
    """Seen in bench/shared.py: the done mark dropped the generation, which the paused holder's was (0)."""
    import mailrules.claims

    monkeypatch.setattr(mailrules.claims.random, "randrange", lambda n: 0)  # the holder's claim: generation 0
    user = dovecot.add_user()
    dovecot.client(user).append("INBOX", make_message(subject="paused"))
    a, b = _session(dovecot, user), _session(dovecot, user)
    clock = Clock()
    holder, taker = Claims("a"), Claims("b", clock=clock)
    mine = holder.claim(a, "t", "INBOX", _all(a), 10.0).ours
    got = _expire(taker, b, _all(b), clock)
    taker.done(b, "t", "INBOX", got.ours)  # the taker finished it while the holder was paused
    assert not holder.guard(a, "t", "INBOX", mine, 1)


def test_a_holder_paused_during_every_re_check_leaves_the_batch_undone_for_a_takeover(dovecot, make_message):
    """Seen in bench/shared.py under load: the batch was dropped but then marked done, its actions never run."""
    user = dovecot.add_user()
    for i in range(3):
        dovecot.client(user).append("INBOX", make_message(subject=f"slow {i}"))
    session = _session(dovecot, user)
    clock = Clock()
    holder = Claims("a", clock=clock)
    mine = holder.claim(session, "t", "INBOX", _all(session), 10.0).ours

    def paused() -> float:  # every look at the clock finds 6 s more: each re-check took over half of 10 s
        clock.now += 6
        return clock.now

    holder.clock = paused
    assert not holder.guard(session, "t", "INBOX", mine, 1)
    holder.done(session, "t", "INBOX", mine)
    done = done_keyword("INBOX", session.selected.uidvalidity)
    for uid in mine:
        flags = _flags(session, uid)
        assert done not in flags and step(flags) == 1, flags  # claimed, step 1 in flight: a takeover resumes it


def _race(sessions: list[ImapSession], act) -> list[set[int]]:
    """Each session runs act(k, session, uids) on every message at once, 25 at a time; their winners."""
    import threading

    won: list[set[int]] = [set() for _ in sessions]
    start = threading.Barrier(len(sessions))

    def work(k: int) -> None:
        uids = list(_all(sessions[k]))
        start.wait()
        for i in range(0, len(uids), 25):
            won[k] |= set(act(k, sessions[k], UidSet(uids[i:i + 25])))

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(sessions))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won


def test_three_instances_claiming_the_same_messages_at_once_have_one_winner_each(dovecot, make_message,
                                                                                  monkeypatch):
    """Per-message conditional STOREs whose writes differ (each instance's generation differs,
    forced here; random in use) leave exactly one holder, also after the first re-check."""
    import threading

    import mailrules.claims

    monkeypatch.setattr(mailrules.claims.random, "randrange",
                        lambda n: int(threading.current_thread().name.rsplit("-", 1)[-1].split(" ")[0]) % n)
    user = dovecot.add_user()
    client = dovecot.client(user)
    for i in range(200):
        client.append("INBOX", make_message(subject=f"race {i}"))
    claimed, _done = _marks(client)
    for _round in range(6):
        client.select_folder("INBOX")
        client.remove_flags(client.search("ALL"), [claimed, *GEN_BITS, *STEP_BITS])  # every message unclaimed again
        sessions = [_session(dovecot, user) for _ in range(3)]
        instances = [Claims(str(k)) for k in range(3)]

        def claim_then_recheck(k: int, session: ImapSession, uids: UidSet, instances=instances) -> UidSet:
            ours = instances[k].claim(session, "t", "INBOX", uids, 600.0).ours
            return instances[k].guard(session, "t", "INBOX", ours, 1) if ours else ours

        won = _race(sessions, claim_then_recheck)
        assert not (won[0] & won[1] or won[0] & won[2] or won[1] & won[2])
        for session in sessions:
            session.logout()
