"""A dry run's plan lists exactly what the real run then does, message by message, on Dovecot.

Issue 19: rule by rule, a real run acts before the next rule searches, so a message an earlier
rule moves meets no later rule, and the flags and keywords an earlier rule sets are seen by the
later rules' criteria. A dry run carries nothing out, yet its plan (`apply --dry-run`,
`run --once --dry-run`) must name the same messages for every rule as the real run's journal
(`history --format json`). Messages are compared by content (SHA-1 of the whole message),
through their UIDs in INBOX before the run. Every rule here acts on at most `SAMPLES` messages,
so the plan's sample lines name every message it acts on.
"""

from __future__ import annotations

import hashlib
import json
import re

from mailrules.dryrun import SAMPLES
from mailrules.imap.session import ImapSession

# rule 1 moves messages rule 2 also matches; later rules read flags and keywords the earlier
# rules set or clear: flagged, unseen, a keyword (spelt in another case), not, any (flag or header)
RULES = """
    - name: away
      match: {subject: go}
      actions: [{move: Gone}]
    - name: again
      match: {subject: one}
      actions: [flag]
    - name: unmark
      match: {subject: pre}
      actions: [unflag]
    - name: mark
      match: {subject: mark}
      actions: [flag, seen, {add_keyword: $Tagged}]
    - name: flagged
      match: {flagged: true}
      actions: [{add_keyword: $Was}]
    - name: unread
      match: {seen: false}
      actions: [{add_keyword: $Unread}]
    - name: tagged
      match: {keyword: $tagged}
      actions: [{remove_keyword: $Tagged}]
    - name: still tagged
      match: {keyword: $Tagged}
      actions: [{add_keyword: $Never}]
    - name: not flagged
      match: {not: {flagged: true}}
      actions: [{add_keyword: $Plain}]
    - name: plain or y
      match: {any: [{keyword: $Plain}, {subject: mark y}]}
      actions: [{add_flag: \\Answered}]
"""

# what the real run does to each message (subject), rule by rule: the plan must say the same
EXPECTED = {
    "away": {"go one", "go two"},
    "again": {"one stays"},
    "unmark": {"pre"},
    "mark": {"mark x", "mark y"},
    "flagged": {"one stays", "mark x", "mark y"},
    "unread": {"one stays", "plain z", "pre"},
    "tagged": {"mark x", "mark y"},
    "not flagged": {"plain z", "pre"},
    "plain or y": {"plain z", "pre", "mark y"},
}


def existing_mail(lab) -> dict[int, str]:
    """The mail, one message already flagged; returns UID -> SHA-1 of each message in INBOX."""
    lab.deliver("go one", "go two", "one stays", "mark x", "mark y", "plain z")
    lab.deliver("pre", flags=["\\Flagged"])
    with lab.client() as client:
        client.select_folder("INBOX", readonly=True)
        data = client.fetch(client.search(["ALL"]), ["BODY.PEEK[]"])
    return {uid: hashlib.sha1(item[b"BODY[]"]).hexdigest() for uid, item in data.items()}


def planned(out: str, sha: dict[int, str]) -> dict[str, set[str]]:
    """Rule -> the messages (SHA-1) the plan lists for it (every one: each rule has few)."""
    plan: dict[str, set[str]] = {}
    counts: dict[str, int] = {}
    rule = None
    for line in out.splitlines():
        row = re.match(r"^  (\S(?:.*?\S)?)\s{2,}(\d+)\s{2,}\S", line)
        sample = re.match(r"^\s+UID (\d+)\s", line)
        if sample and rule is not None:
            plan[rule].add(sha[int(sample.group(1))])
        elif row:
            rule = row.group(1)
            counts[rule] = int(row.group(2))
            plan[rule] = set()
    assert all(n <= SAMPLES for n in counts.values()), out
    assert {r: len(uids) for r, uids in plan.items()} == counts, out
    return {r: uids for r, uids in plan.items() if uids}


def journaled(lab, sha: dict[int, str], *args: str) -> dict[str, set[str]]:
    """Rule -> the messages (SHA-1) the real run's journal says each rule acted on."""
    rows = json.loads(lab.cli("history", *args, "--format", "json").out)
    done: dict[str, set[str]] = {}
    for row in rows:
        done.setdefault(row["rule"], set()).add(sha[row["uid"]])
    return done


def in_words(plan: dict[str, set[str]], names: dict[str, str]) -> dict[str, set[str]]:
    """The same, each message named by its subject (so that a failure says which one)."""
    return {rule: {names[digest] for digest in digests} for rule, digests in plan.items()}


def subjects_by_sha(lab, sha: dict[int, str]) -> dict[str, str]:
    subjects = {m.uid: m.subject for m in lab.messages()}
    return {digest: subjects[uid] for uid, digest in sha.items()}


def test_apply_dry_run_lists_for_every_rule_the_messages_apply_then_acts_on(lab):
    lab.write(RULES)
    sha = existing_mail(lab)
    names = subjects_by_sha(lab, sha)
    plan = lab.cli("apply", "--dry-run")
    assert plan.code == 0, plan.err
    assert lab.cli("apply", "--yes").code == 0
    done = journaled(lab, sha, "--run", "1")
    assert in_words(planned(plan.out, sha), names) == in_words(done, names) == EXPECTED


def test_run_once_dry_run_lists_for_every_rule_the_messages_run_once_then_acts_on(lab):
    lab.write(RULES)
    sha = existing_mail(lab)
    names = subjects_by_sha(lab, sha)
    plan = lab.run("--dry-run")
    assert plan.code == 0, plan.err
    assert lab.run().code == 0
    done = journaled(lab, sha)
    assert in_words(planned(plan.out, sha), names) == in_words(done, names) == EXPECTED


def test_a_dry_run_adds_searches_only_for_the_messages_an_earlier_rule_changed(lab, monkeypatch):
    """Rules reading no flag cost nothing more; those reading flags cost one search more per
    distinct way the earlier rules changed the messages still in play, or none when decided."""
    lab.write("""
        - name: mark
          match: {subject: mark}
          actions: [flag]
        - name: by subject
          match: {subject: one}
          actions: [seen]
        - name: flagged
          match: {flagged: true}
          actions: [seen]
    """)
    lab.deliver("mark one", "mark two", "other")
    searches: list[str] = []
    search = ImapSession.search

    def counted(self, query, within=None):
        searches.append(str(query))
        return search(self, query, within=within)

    monkeypatch.setattr(ImapSession, "search", counted)
    plan = lab.run("--dry-run")
    assert plan.code == 0, plan.err
    # 'flagged': its two marked messages are decided by the overlay (no search), 'other' is searched
    assert [q for q in searches if "FLAGGED" in q] == ["FLAGGED"]
    assert re.search(r"^  flagged\s+2\s", plan.out, re.M), plan.out
