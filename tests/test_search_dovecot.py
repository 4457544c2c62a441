"""Every `match:` key of the spec's table, compiled and searched on a real Dovecot.

A module-wide corpus of messages (one per property, named by its subject) sits in one
user's INBOX; each test writes a `match:` the way a user would, loads it through the real
config loader, compiles it and runs the UID SEARCH, and compares the subjects found.
"""

from __future__ import annotations

import datetime as dt
import re
import textwrap

import pytest
from helpers import Lab, append

from mailrules.config import load
from mailrules.criteria import compile_search
from mailrules.imap.session import ImapSession
from mailrules.testing.messages import make_message
from mailrules.uidset import UidSet

NOW = dt.datetime.now().astimezone().replace(microsecond=0)
HOUR = dt.timedelta(hours=1)
DAY = dt.timedelta(days=1)

# subject -> (make_message arguments, APPEND flags, INTERNALDATE)
CORPUS: dict[str, tuple[dict, list[str], dt.datetime]] = {
    "plain": ({"from_": "Alice <alice@example.org>", "body": "nothing special"}, [], NOW),
    "report": ({"from_": "Bob Builder <bob@corp.example>", "to": "team@corp.example",
                "cc": "carol@corp.example", "body": "quarterly numbers"}, [], NOW - 2 * HOUR),
    "bcc": ({"from_": "Alice <alice@example.org>", "headers": {"Bcc": "dave@hidden.example"}}, [], NOW),
    "list mail": ({"from_": "dev-bounces@lists.example.org",
                   "headers": {"List-Id": "Developers <dev.lists.example.org>"}}, [], NOW),
    "spam": ({"headers": {"X-Spam-Flag": "YES"}, "body": "cheap pills"}, [], NOW - 3 * DAY),
    "big": ({"size_padding": 200 * 1024}, [], NOW),
    "Grüße aus München": ({"from_": "Zoë Çelik <zoe@example.net>", "body": "Käse und Brötchen"}, [], NOW),
    "quoted \"hi\" \\o/": ({}, [], NOW),
    "old": ({"date": dt.datetime(2019, 12, 31, 12, 0)}, [], dt.datetime(2020, 1, 15, 12, 0).astimezone()),
    "ten days": ({}, [], NOW - 10 * DAY),
    "seen": ({}, ["\\Seen"], NOW),
    "answered": ({}, ["\\Answered"], NOW),
    "flagged": ({}, ["\\Flagged"], NOW),
    "deleted": ({}, ["\\Deleted"], NOW),
    "draft": ({}, ["\\Draft"], NOW),
    "keyword a": ({}, ["$A"], NOW),
    "keywords a b": ({}, ["$A", "$B"], NOW),
}
for _kwargs, _flags, _arrived in CORPUS.values():
    _kwargs.setdefault("from_", "Sender <sender@example.com>")
ALL = set(CORPUS)
SMALL = ALL - {"big"}


@pytest.fixture(scope="module")
def corpus(dovecot):
    """A user whose INBOX holds CORPUS (in that order), and a read-only session on it."""
    user = dovecot.add_user()
    for subject, (kwargs, flags, arrived) in CORPUS.items():
        append(dovecot, user, "INBOX", make_message(subject=subject, **kwargs), flags=flags, date=arrived)
    session = ImapSession(dovecot.client(user), "me")
    session.select("INBOX", readonly=True)
    yield dovecot, user, session
    session.logout()


@pytest.fixture(scope="module")
def by_uid(corpus):
    from helpers import messages

    dovecot, user, _session = corpus
    return {m.uid: m.subject for m in messages(dovecot, user)}


@pytest.fixture
def matches(corpus, by_uid, tmp_path):
    """matches("{from: alice}") -> the subjects the server finds for that `match:`."""
    _dovecot, _user, session = corpus

    def run(match: str, *, within: set[str] | None = None, session_: ImapSession | None = None) -> set[str]:
        path = tmp_path / "rules.yaml"
        path.write_text(textwrap.dedent(f"""\
            version: 1
            accounts:
              me: {{host: 127.0.0.1, tls: none, username: me, password_env: UNUSED}}
            rules:
              - name: probe
                match: {match}
                actions: [flag]
        """), encoding="utf-8")
        (rule,) = load(path).rules
        use = session_ or session
        query = compile_search(rule.match, use.capabilities)
        restrict = None if within is None else UidSet(u for u, s in by_uid.items() if s in within)
        return {by_uid[uid] for uid in use.search(query, within=restrict)}

    return run


# ----------------------------------------------------------------------------- text fields


def test_from_matches_a_substring_of_the_address_case_insensitively(matches):
    assert matches("{from: ALICE@example}") == {"plain", "bcc"}


def test_from_matches_the_display_name(matches):
    assert matches("{from: builder}") == {"report"}


def test_to_and_cc(matches):
    assert matches("{to: team@corp}") == {"report"}
    assert matches("{cc: carol}") == {"report"}


def test_bcc_matches_the_bcc_header(matches):
    assert matches("{bcc: dave@hidden}") == {"bcc"}


def test_subject_substring(matches):
    assert matches("{subject: REPO}") == {"report"}


def test_body_matches_only_the_body(matches):
    assert matches("{body: quarterly}") == {"report"}
    assert matches("{body: report}") == set()


def test_text_matches_headers_or_body(matches):
    assert matches("{text: quarterly}") == {"report"}
    assert matches("{text: carol@corp}") == {"report"}


def test_quotes_and_backslashes_in_a_string_are_matched_literally(matches):
    assert matches(r"""{subject: '"hi" \o/'}""") == {'quoted "hi" \\o/'}


# ----------------------------------------------------------------------------- non-ASCII


def test_non_ascii_subject(matches):
    assert matches("{subject: Grüße}") == {"Grüße aus München"}
    assert matches("{subject: München}") == {"Grüße aus München"}


def test_non_ascii_display_name_in_from(matches):
    assert matches("{from: Zoë Çelik}") == {"Grüße aus München"}


def test_non_ascii_body(matches):
    assert matches("{body: Brötchen}") == {"Grüße aus München"}


def test_non_ascii_header_value(matches):
    assert matches("{header: {Subject: aus München}}") == {"Grüße aus München"}


def test_non_ascii_next_to_ascii_criteria(matches):
    assert matches("{subject: Grüße, from: zoe@example.net, seen: false}") == {"Grüße aus München"}


# ----------------------------------------------------------------------------- header


def test_header_value_substring_case_insensitive(matches):
    assert matches("{header: {List-Id: DEV.LISTS.example.org}}") == {"list mail"}


def test_header_with_empty_value_means_the_header_exists(matches):
    assert matches('{header: {X-Spam-Flag: ""}}') == {"spam"}
    assert matches('{header: {List-Id: ""}}') == {"list mail"}


def test_several_headers_must_all_match(matches):
    assert matches('{header: {List-Id: dev, From: bounces}}') == {"list mail"}
    assert matches('{header: {List-Id: dev, X-Spam-Flag: ""}}') == set()


# ----------------------------------------------------------------------------- sizes


def test_larger_and_smaller_with_units(matches):
    assert matches("{larger: 100KB}") == {"big"}
    assert matches("{smaller: 100K}") == SMALL


def test_larger_in_bytes(matches):
    assert matches(f"{{larger: {200 * 1024}}}") == {"big"}
    assert matches(f"{{larger: {300 * 1024}}}") == set()


# ----------------------------------------------------------------------------- dates


def test_arrival_date_before_on_since(matches):
    assert matches("{before: 2020-01-15}") == set()
    assert matches("{before: 2020-01-16}") == {"old"}
    assert matches("{on: 2020-01-15}") == {"old"}
    assert matches("{since: 2020-01-16}") == ALL - {"old"}


def test_sent_date_uses_the_date_header_not_the_arrival(matches):
    assert matches("{sent_before: 2020-01-01}") == {"old"}
    assert matches("{sent_on: 2019-12-31}") == {"old"}
    assert matches("{on: 2019-12-31}") == set()
    assert "old" not in matches("{sent_since: 2020-01-01}")


def test_older_than_uses_the_arrival_time_with_within(matches):
    assert matches("{older_than: 1d}") == {"spam", "old", "ten days"}
    assert matches("{older_than: 5d}") == {"old", "ten days"}


def test_younger_than_uses_the_arrival_time_with_within(matches):
    assert matches("{younger_than: 1h}") == ALL - {"spam", "old", "ten days", "report"}
    assert matches("{younger_than: 1d}") == ALL - {"spam", "old", "ten days"}


@pytest.fixture(scope="module")
def without_within(dovecot_factory_module, by_uid):
    """The same corpus on a server that does not advertise WITHIN."""
    server = dovecot_factory_module
    user = server.add_user()
    for subject, (kwargs, flags, arrived) in CORPUS.items():
        append(server, user, "INBOX", make_message(subject=subject, **kwargs), flags=flags, date=arrived)
    session = ImapSession(server.client(user), "me")
    assert "WITHIN" not in session.capabilities
    session.select("INBOX", readonly=True)
    yield session
    session.logout()


@pytest.fixture(scope="module")
def dovecot_factory_module(dovecot):
    from mailrules.testing.dovecot import temporary_dovecot

    with temporary_dovecot(capabilities="IMAP4rev1 LITERAL+ UIDPLUS MOVE IDLE ESEARCH NAMESPACE") as server:
        yield server


def test_without_within_ages_never_match_more_than_asked(matches, without_within):
    older = matches("{older_than: 1d}", session_=without_within)
    assert older <= {"spam", "old", "ten days"}
    assert {"old", "ten days"} <= older, "rounding to days costs at most a day or so"
    younger = matches("{younger_than: 5d}", session_=without_within)
    assert younger <= ALL - {"old", "ten days"}
    assert matches("{younger_than: 1h}", session_=without_within) == set(), "less than a day: nothing is sure"


# ----------------------------------------------------------------------------- flags and keywords


@pytest.mark.parametrize("flag", ["seen", "answered", "flagged", "deleted", "draft"])
def test_flag_true_and_false(matches, flag):
    assert matches(f"{{{flag}: true}}") == {flag}
    assert matches(f"{{{flag}: false}}") == ALL - {flag}


def test_keyword(matches):
    assert matches("{keyword: $A}") == {"keyword a", "keywords a b"}


def test_a_list_of_keywords_means_all_of_them(matches):
    assert matches("{keyword: [$A, $B]}") == {"keywords a b"}


def test_an_absent_keyword_matches_nothing(matches):
    assert matches("{keyword: $Nobody}") == set()


# ----------------------------------------------------------------------------- all / any / not / raw


def test_several_keys_mean_all_of_them(matches):
    assert matches("{from: alice, header: {Bcc: dave}}") == {"bcc"}


def test_any(matches):
    assert matches("{any: [{from: builder}, {subject: spam}, {flagged: true}]}") == {"report", "spam", "flagged"}


def test_all(matches):
    assert matches("{all: [{from: alice}, {subject: plain}]}") == {"plain"}


def test_not(matches):
    assert matches("{not: {from: alice}}") == ALL - {"plain", "bcc"}


def test_not_of_several_keys_negates_their_conjunction(matches):
    assert matches("{not: {from: alice, subject: bcc}}") == ALL - {"bcc"}


def test_nested_any_all_not(matches):
    crit = "{any: [{all: [{from: alice}, {not: {subject: plain}}]}, {not: {any: [{seen: false}, {larger: 1}]}}]}"
    assert matches(crit) == {"bcc"}
    crit = "{all: [{any: [{keyword: $A}, {flagged: true}]}, {not: {keyword: $B}}]}"
    assert matches(crit) == {"keyword a", "flagged"}


def test_any_inside_not_inside_any(matches):
    assert matches("{any: [{subject: spam}, {not: {any: [{seen: false}, {answered: false}]}}]}") == {"spam"}


def test_raw_keys_are_sent_verbatim(matches):
    assert matches('{raw: "OR FLAGGED DRAFT"}') == {"flagged", "draft"}


def test_raw_combined_with_other_keys_stays_one_key(matches):
    assert matches('{raw: "OR FLAGGED DRAFT", not: {subject: draft}}') == {"flagged"}


def test_an_empty_match_matches_everything(matches):
    assert matches("{}") == ALL


# ----------------------------------------------------------------------------- restricted to candidates


def test_the_search_is_restricted_to_the_candidate_uids(matches):
    assert matches("{from: alice}", within={"plain", "report"}) == {"plain"}
    assert matches("{}", within={"seen", "draft"}) == {"seen", "draft"}


# ----------------------------------------------------------------------------- through mailrules run


def test_criteria_drive_a_real_run(dovecot, tmp_path, monkeypatch):
    lab = Lab(dovecot, dovecot.add_user(), tmp_path, monkeypatch)
    lab.deliver(
        {"subject": "Grüße", "from_": "Zoë <zoe@example.net>"},
        {"subject": "list", "headers": {"List-Id": "<dev.lists.example.org>"}},
        {"subject": "other"},
    )
    lab.write("""
        - name: umlauts
          match: {subject: Grüße, from: Zoë}
          actions: [{add_keyword: $Umlaut}]
        - name: lists
          match: {any: [{header: {List-Id: dev.lists}}, {keyword: $Umlaut}]}
          actions: [flag]
    """)
    assert lab.run().code == 0
    assert lab.flags() == {"Grüße": {"$Umlaut", "\\Flagged"}, "list": {"\\Flagged"}, "other": set()}


# ----------------------------------------------------------------------------- BADCHARSET


class RefuseNextSearchCharset:
    """A proxy rewrite: the next SEARCH is answered NO [BADCHARSET (...)] (its results dropped)."""

    def __init__(self, listed: bytes) -> None:
        self.listed = listed
        self.armed = False

    def __call__(self, line: bytes) -> bytes:
        if not self.armed:
            return line
        if line.startswith((b"* ESEARCH", b"* SEARCH")):
            return b""
        m = re.match(rb"(\S+) OK Search completed", line)
        if m:
            self.armed = False
            return m.group(1) + b" NO [BADCHARSET (" + self.listed + b")] Unsupported charset\r\n"
        return line


@pytest.fixture
def badcharset_session(corpus):
    from mailrules.testing.proxy import TcpProxy

    dovecot, user, _session = corpus
    rewrite = RefuseNextSearchCharset(b"US-ASCII ISO-8859-1")
    with TcpProxy(dovecot.host, dovecot.port, rewrite_server=rewrite) as proxy:
        session = ImapSession(dovecot.client(user, port=proxy.port), "me")
        session.select("INBOX", readonly=True)
        yield session, rewrite
        session.logout()


def test_badcharset_retries_in_a_charset_the_server_lists(matches, badcharset_session):
    session, rewrite = badcharset_session
    rewrite.armed = True
    assert matches("{subject: Grüße}", session_=session) == {"Grüße aus München"}
    assert not rewrite.armed, "the first, UTF-8 search was refused"


def test_badcharset_with_text_no_listed_charset_can_write_is_a_clear_refusal(matches, badcharset_session):
    from mailrules.imap.session import ServerRefused

    session, rewrite = badcharset_session
    rewrite.listed = b"US-ASCII"
    rewrite.armed = True
    with pytest.raises(ServerRefused, match="cannot search this text"):
        matches("{subject: 日本}", session_=session)


def test_a_server_without_literal_plus_gets_non_ascii_searches_after_its_continuation_request(
    dovecot_factory, tmp_path, monkeypatch
):
    """Such searches are not pipelined: each literal waits for the server's '+'."""
    server = dovecot_factory(capabilities="IMAP4rev1 UIDPLUS MOVE ESEARCH IDLE")
    lab = Lab(server, server.add_user(), tmp_path, monkeypatch)
    lab.deliver("Grüße aus München", "plain")
    lab.write("""
        - name: umlauts
          match: {subject: München}
          actions: [{move: Umlaute}]
        - name: ascii
          match: {subject: plain}
          actions: [flag]
    """)
    assert lab.run().code == 0
    assert lab.where() == {"Grüße aus München": ["Umlaute"], "plain": ["INBOX"]}
    assert lab.flags() == {"plain": {"\\Flagged"}}
