"""Header rules decided on the fetched fields (mailrules.local_headers) act on exactly the messages
Dovecot's SEARCH picks, on the benchmark's mailbox and on crafted broken headers.

The 12 benchmark rules (bench/rules.yaml) run twice over two identical mailboxes on the private
Dovecot: once deciding header rules locally, once with `MAILRULES_LOCAL_HEADERS=0` (every rule
searched by the server). Both runs must act on the same messages with the same actions (the JSON
action log, by Message-ID) and leave the same mailboxes (every folder by content and flags).

The crafted messages break the fields those rules read the ways broken mail does (duplicate and
folded fields, encoded words where they do not belong, odd charsets, 8-bit and control bytes,
odd white space): `field_exact` must send each of them to the server, and the server's answer
is what the rule acts on.
"""

from __future__ import annotations

import collections
import json
import sys
from pathlib import Path

import pytest
from test_undo_crash import contents

from mailrules.local_headers import PendingLocal, field_exact, local_rules, split_block
from mailrules.local_search import LocalMessage, matches
from mailrules.model import All, Header, Rule, Size, Text
from mailrules.testing.daemon import DaemonHarness
from mailrules.uidset import UidSet

REPO = Path(__file__).resolve().parents[1]
GENERATED = 400

# (name, the header lines that differ from a plain message, who decides), each read by one of
# the 12 rules: "server" for broken fields, "local" for odd ones that are still read exactly
CRAFTED = [
    ("duplicate List-Id", [b"List-Id: <announce.example.com>", b"List-Id: <dev.lists.example.org>"], "server"),
    ("duplicate X-Spam-Flag", [b"X-Spam-Flag: NO", b"X-Spam-Flag: YES"], "server"),
    ("List-Id folded", [b"List-Id: Dev list\r\n <dev.lists.example.org>"], "local"),
    ("List-Id folded with a TAB", [b"List-Id: Users list\r\n\t<users.lists.example.net>"], "server"),
    ("List-Id folded twice, spaces", [b"List-Id: Sec\r\n   list\r\n  <security.lists.example.org>"], "server"),
    ("List-Id split by a fold", [b"List-Id: <security.lists.\r\n example.org>"], "local"),
    ("List-Id empty first line", [b"List-Id:\r\n <ci.example.org>"], "server"),
    ("List-Id encoded word inside", [b"List-Id: <=?utf-8?q?dev=2Elists?=.example.org>"], "server"),
    ("List-Id encoded word glued", [b"List-Id: Dev=?utf-8?b?IGxpc3Q=?= <dev.lists.example.org>"], "server"),
    ("List-Id unknown charset", [b"List-Id: =?x-unknown?q?ci.example.org?="], "server"),
    ("List-Id language tag", [b"List-Id: =?utf-8*en?q?announce.example.com?="], "server"),
    ("List-Id base64 without padding", [b"List-Id: =?utf-8?b?dXNlcnMubGlzdHMuZXhhbXBsZS5uZXQ?="], "server"),
    ("List-Id broken base64", [b"List-Id: =?utf-8?b?ZGV2Lmxp$c3RzLmV4YW1wbGUub3Jn?="], "server"),
    ("List-Id bad Q", [b"List-Id: =?utf-8?q?ci=ZZ.example.org?="], "server"),
    ("List-Id invalid 8-bit", [b"List-Id: \xffci\xfe <ci.example.org>"], "server"),
    ("List-Id raw UTF-8 compatibility", ["List-Id: ﬁnal <ci.example.org>".encode()], "server"),
    ("List-Id control character", [b"List-Id: <dev.lists.example.org>\x01"], "server"),
    ("List-Id NUL", [b"List-Id: <dev.lists\x00.example.org>"], "server"),
    ("List-Id trailing spaces", [b"List-Id: <users.lists.example.net>   "], "server"),
    ("name with space before the colon", [b"List-Id : <announce.example.com>"], "server"),
    ("lower-case name", [b"list-id: <security.lists.example.org>"], "local"),
    ("X-Spam-Flag encoded", [b"X-Spam-Flag: =?us-ascii?q?YES?="], "local"),
    ("X-Spam-Flag folded", [b"X-Spam-Flag:\r\n YES"], "server"),
    ("X-Spam-Flag encoded in latin1 with a mark", [b"X-Spam-Flag: =?iso-8859-1?q?Y=C9S?="], "local"),
    ("ci subject with encoded words",
      [b"List-Id: <ci.example.org>", b"Subject: build =?utf-8?q?fai?= =?utf-8?q?led?="], "local"),
    ("ci subject glued encoded word", [b"List-Id: <ci.example.org>", b"Subject: build fa=?utf-8?q?iled?="], "server"),
    ("ci subject folded in the word", [b"List-Id: <ci.example.org>", b"Subject: build fai\r\n led"], "local"),
    ("ci subject duplicate", [b"List-Id: <ci.example.org>", b"Subject: passed", b"Subject: failed"], "server"),
    ("ci subject TAB", [b"List-Id: <ci.example.org>", b"Subject: build\tfailed"], "server"),
    ("ci subject bare CR", [b"List-Id: <ci.example.org>", b"Subject: build\rfailed"], "server"),
    ("From comment", [b"From: someone@example.net (Some One)"], "server"),
    ("From quoted escape", [b'From: "Some \\"One\\"" <someone@example.net>'], "server"),
    ("From group", [b"From: Team: someone@example.net;"], "server"),
    ("From route", [b"From: <@relay.example:someone@example.net>"], "server"),
    ("From twice", [b"From: a@example.org", b"From: someone@example.net"], "server"),
    ("From encoded name with a comma", [b"From: =?utf-8?q?Doe=2C_John?= <someone@example.net>"], "local"),
    ("From raw UTF-8 name", ['From: "S\u00f8ren" <someone@example.net>'.encode()], "local"),
    ("From without a domain", [b"From: someone"], "local"),
]
FETCHED = {b"list-id", b"x-spam-flag", b"subject", b"from"}
PLAIN_FROM = b"From: Someone <someone@example.net>"
PLAIN_SUBJECT = b"Subject: crafted"


def crafted_message(index: int, lines: list[bytes]) -> bytes:
    names = {line.split(b":", 1)[0].strip().lower() for line in lines}
    head = [f"Message-ID: <crafted{index}@local-headers.test>".encode(), b"Date: Mon, 03 Jun 2024 10:00:00 +0000"]
    if b"from" not in names:
        head.append(PLAIN_FROM)
    if b"subject" not in names:
        head.append(PLAIN_SUBJECT)
    return b"\r\n".join(head + lines) + b"\r\n\r\nbody\r\n"


def fetched_block(raw: bytes, names: set[bytes]) -> bytes:
    """The fields `names` of a message's header as Dovecot's BODY[HEADER.FIELDS] returns them."""
    header = raw.split(b"\r\n\r\n", 1)[0]
    out: list[bytes] = []
    keep = False
    for line in header.split(b"\r\n"):
        if line[:1] in (b" ", b"\t"):
            if keep:
                out.append(line)
            continue
        keep = line.split(b":", 1)[0].strip().lower() in names
        if keep:
            out.append(line)
    return b"".join(line + b"\r\n" for line in out) + b"\r\n"


BROKEN = [(name, lines) for name, lines, who in CRAFTED if who == "server"]
ODD_BUT_EXACT = [(name, lines) for name, lines, who in CRAFTED if who == "local"]


@pytest.mark.parametrize(("name", "lines"), BROKEN, ids=[c[0] for c in BROKEN])
def test_a_crafted_broken_field_is_left_to_the_server(name, lines):
    block = fetched_block(crafted_message(0, lines), FETCHED)
    fields = split_block(block)
    if fields is None:
        return  # the whole message goes to the server
    crafted = {line.split(b":", 1)[0].strip().lower() for line in lines}
    odd = [raws for field, raws in fields.items() if field in crafted
           and (len(raws) > 1 or any(field_exact(r, field == b"from") is None for r in raws))]
    assert odd, f"{name}: {fields}"


@pytest.mark.parametrize(("name", "lines"), ODD_BUT_EXACT, ids=[c[0] for c in ODD_BUT_EXACT])
def test_an_odd_field_that_is_read_exactly_is_decided_locally(name, lines):
    """Single-space folds, lower-case names, whole encoded words: the differential test below
    checks that Dovecot reads them so too."""
    fields = split_block(fetched_block(crafted_message(0, lines), FETCHED))
    assert fields is not None
    for line in lines:
        field = line.split(b":", 1)[0].strip().lower()
        raws = fields[field]
        assert len(raws) == 1 and field_exact(raws[0], field == b"from") is not None, name


def test_plain_fields_are_read_locally():
    for line in (b"List-Id: Dev list <dev.lists.example.org>", b"X-Spam-Flag: YES",
                 b"Subject: =?utf-8?b?R3LDvMOfZQ==?= build failed", "Subject: Grüße, build #12 failed".encode(),
                 b"Subject: a long subject\r\n folded once"):
        assert field_exact(line, False) is not None, line
    for line in (b'From: "Doe, John" <john@example.com>', b"From: =?utf-8?q?Zo=C3=AB?= <zoe@example.de>",
                 'From: "Søren (Vendor Inc.)" <s@vendor.example.com>'.encode()):
        assert field_exact(line, True) is not None, line
    for line in (b"From: a@b (comment)", b'From: "a\\"b" <a@b>', b"From: Team: a@b;", b"From: <@route:a@b>"):
        assert field_exact(line, True) is None, line


def test_messages_the_fetch_did_not_return_are_asked_of_the_server():
    local = PendingLocal({0: Header("List-Id", "dev.lists")})
    local.take(1, b"List-Id: <dev.lists.example.org>\r\n\r\n")
    local.take(2, b"List-Id: <users.lists.example.net>\r\n\r\n")
    local.finish(UidSet([1, 2, 3]), [1, 2])  # a refused batch held 3
    assert local.matched[0] == {1}
    assert local.questions() == {0: UidSet([3])}


def test_only_rules_cheaper_on_the_client_are_decided_there():
    """header: criteria (and a subject behind one) locally; a from: rule costs the client ~10x
    what the server's cached SEARCH costs, so it stays with the server (bench/README.md)."""
    def rule(match):
        return Rule(name="r", mailboxes=("INBOX",), match=match, actions=())

    rules = [rule(Header("List-Id", "ci")), rule(All((Header("List-Id", "ci"), Text("subject", "failed")))),
             rule(Text("from", "github.com")), rule(All((Text("subject", "x"), Header("List-Id", "ci")))),
             rule(All((Header("List-Id", "ci"), Size("larger", 10))))]
    assert local_rules(rules, skip=set()) == [0, 1]
    assert local_rules(rules, skip={0}) == [1]


# ----------------------------------------------------------------------------- on the server


def bench_rules() -> str:
    text = (REPO / "bench" / "rules.yaml").read_text()
    return text[text.index("rules:\n") + len("rules:\n"):]


def fill(dovecot, user, generated, crafted: list[bytes]) -> None:
    groups: dict[tuple[float, str], list[bytes]] = {}
    for m in generated:
        groups.setdefault((m.internaldate, "S" if m.seen else ""), []).append(m.data)
    for (mtime, flags), datas in sorted(groups.items()):
        dovecot.deliver_files(user, "INBOX", datas, mtime=mtime, flags=flags)
    dovecot.deliver_files(user, "INBOX", crafted)


def acted_on(stderr: str) -> collections.Counter:
    """(rule, action, Message-ID) of every message an action was carried out on (the JSON log)."""
    out: collections.Counter = collections.Counter()
    for line in stderr.splitlines():
        try:
            record = json.loads(line)
        except ValueError:
            continue
        if record.get("event") == "action":
            for mid in record.get("message_id") or ():
                out[(record["rule"], record["action"], mid)] += 1
    return out


def run_rules(dovecot, tmp_path, generated, crafted, local: str):
    user = dovecot.add_user()
    fill(dovecot, user, generated, crafted)
    harness = DaemonHarness(dovecot, user, tmp_path / f"local{local}", rules=bench_rules())
    env = harness.env()
    env["MAILRULES_LOCAL_HEADERS"] = local
    harness.env = lambda: env  # type: ignore[method-assign]
    result = harness.run("--log-format", "json", "run", "--once", timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return acted_on(result.stderr), contents(dovecot.client(user)), user


def test_the_bench_rules_act_on_the_same_messages_decided_locally_or_by_the_server(dovecot, tmp_path):
    sys.path.insert(0, str(REPO / "bench"))
    import generate

    generated = generate.generate(GENERATED)
    crafted = [crafted_message(i, lines) for i, (_name, lines, _who) in enumerate(CRAFTED)]
    local_acts, local_boxes, _ = run_rules(dovecot, tmp_path, generated, crafted, "1")
    server_acts, server_boxes, user = run_rules(dovecot, tmp_path, generated, crafted, "0")
    assert sum(local_acts.values()) > GENERATED // 2  # the rules did act
    assert any(mid.startswith("<crafted") for _r, _a, mid in server_acts)  # and on crafted mail
    assert local_acts == server_acts
    assert local_boxes == server_boxes


CRITERIA = [Header("X-Spam-Flag", "YES"), Header("List-Id", "announce.example.com"),
            Header("List-Id", "dev.lists.example.org"), Header("List-Id", "users.lists.example.net"),
            Header("List-Id", "security.lists.example.org"), Header("List-Id", "ci.example.org"),
            Header("List-Id", "lists.example"), Header("List-Id", ""), Text("subject", "failed"),
            Text("subject", "build failed"), Text("from", "example.net"), Text("from", "someone <some")]


def test_every_field_read_locally_answers_as_dovecots_search_on_the_fetched_bytes(dovecot):
    """The check itself, on the bytes Dovecot's FETCH returns: where the local answer is known it
    is the server's; the crafted mail on which the evaluator alone would answer otherwise is
    printed (-s), and must all be among the messages left to the server."""
    user = dovecot.add_user()
    crafted = [crafted_message(i, lines) for i, (_name, lines, _who) in enumerate(CRAFTED)]
    dovecot.deliver_files(user, "INBOX", crafted)
    client = dovecot.client(user)
    client.select_folder("INBOX", readonly=True)
    uids = sorted(client.search(["ALL"]))
    local = PendingLocal(dict(enumerate(CRITERIA)))
    item = "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID FROM SUBJECT LIST-ID X-SPAM-FLAG)]"
    answered = client.fetch(uids, [item])
    for uid, data in answered.items():
        local.take(uid, next(v for k, v in data.items() if k.startswith(b"BODY[")))
    local.finish(UidSet(uids), answered.keys())
    alone = []
    for i, criterion in enumerate(CRITERIA):
        key = ["SUBJECT" if criterion.field == "subject" else "FROM", criterion.value] if isinstance(criterion, Text) \
            else ["HEADER", criterion.name, criterion.value]
        server = set(client.search(key))
        assert local.matched[i] == server - local.unknown[i], criterion
        for uid, raw in zip(uids, crafted, strict=True):
            if matches(criterion, LocalMessage(raw)) != (uid in server):
                alone.append(f"{CRAFTED[uids.index(uid)][0]}: {criterion}")
                assert uid in local.unknown[i]
    print("\nthe evaluator alone disagrees with Dovecot on:", *alone, sep="\n  ")
