"""The local evaluator (`mailrules.local_search`): Dovecot's SEARCH semantics, offline.

Each expectation here was first observed on the private Dovecot 2.3 (the differential test,
tests/test_local_search_dovecot.py, keeps checking them against it).
"""

from __future__ import annotations

import dataclasses
import datetime as dt

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from mailrules import model
from mailrules.criteria import compile_search, reads_of
from mailrules.local_search import (
    LocalMessage,
    NotEvaluableOffline,
    _simple_address,
    explain,
    matches,
    parse_addresses,
)
from mailrules.model import (
    Age,
    All,
    AnyOf,
    ArrivalDate,
    Flag,
    Header,
    Keyword,
    Location,
    Not,
    Raw,
    SentDate,
    Size,
    Text,
)

UTC = dt.UTC
NOW = dt.datetime(2024, 6, 3, 12, 0, tzinfo=UTC)

GROUPS = (b"From: =?utf-8?q?Zo=C3=AB?= <zoe@example.org>\r\nTo: undisclosed-recipients:;\r\n"
          b"Cc: Team: a@x.org, \"B B\" <b@y.org>;\r\nSubject: hello\r\n world   spaced\r\n"
          b"X-Sp: a   b\r\nDate: Mon, 03 Jun 2024 23:30:00 -0500\r\n\r\nbody text here\r\n")
MIME = (b"From: \"Doe, John\" <john@example.org>\r\n"
        b"Subject: =?iso-8859-1?q?Gr=FC=DFe?= =?utf-8?b?w6k=?=\r\n"
        b"Content-Type: multipart/mixed; boundary=XX\r\n\r\npreamble\r\n--XX\r\n"
        b"Content-Type: text/plain; charset=utf-8\r\nContent-Transfer-Encoding: quoted-printable\r\n"
        b"X-Part: parthdr\r\n\r\nK=C3=A4se caf=\r\ne\r\n--XX\r\n"
        b"Content-Type: application/octet-stream\r\nContent-Transfer-Encoding: base64\r\n\r\n"
        b"YmluYXJ5c2VjcmV0\r\n--XX\r\nContent-Type: message/rfc822\r\n\r\n"
        b"Subject: inner subj\r\n\r\ninner body\r\n--XX--\r\nepilogue\r\n")
COMMENT = b"From: john@example.org (John Comment)\r\nTo: a@x.org, b@y.org\r\nSubject: e\xcc\x81 \xc3\x9f \xef\xac\x81\r\n\r\nx\r\n"


def msg(raw: bytes, **kw) -> LocalMessage:
    kw.setdefault("internaldate", NOW)
    return LocalMessage(raw, **kw)


def m(criterion, raw: bytes, **kw) -> bool:
    return matches(criterion, msg(raw, **kw), now=NOW)


def test_subject_is_unfolded_and_its_white_space_compressed():
    assert m(Text("subject", "hello world spaced"), GROUPS)
    assert not m(Text("subject", "world   spaced"), GROUPS)


def test_header_keeps_white_space_as_it_is():
    assert m(Header("X-Sp", "a   b"), GROUPS)
    assert not m(Header("X-Sp", "a b"), GROUPS)


def test_header_with_an_empty_value_tests_existence():
    assert m(Header("cc", ""), GROUPS)
    assert not m(Header("cc", ""), MIME)


def test_encoded_words_are_decoded_and_the_space_between_them_dropped():
    assert m(Text("subject", "grüßeé"), MIME)
    assert not m(Text("subject", "grüße é"), MIME)


def test_address_search_sees_the_normal_form_of_a_group():
    assert m(Text("cc", 'Team: <a@x.org>, "B B" <b@y.org>;'), GROUPS)
    assert not m(Text("cc", "Team: a@x"), GROUPS)
    assert m(Text("to", "undisclosed-recipients:;"), GROUPS)


def test_a_bare_address_is_searched_in_angle_brackets():
    assert m(Text("to", "<a@x.org>, <b@y.org>"), COMMENT)
    assert not m(Text("to", "a@x.org, b"), COMMENT)


def test_a_comment_becomes_the_display_name():
    assert m(Text("from", "\"John Comment\" <john@example.org>"), COMMENT)


def test_a_display_name_needing_quotes_is_searched_quoted():
    assert m(Text("from", '"Doe, John" <john'), MIME)


def test_an_encoded_display_name_is_decoded():
    assert m(Text("from", "zoë <zoe@"), GROUPS)


def test_body_skips_part_headers_preamble_epilogue_and_non_text_parts():
    for word in ("parthdr", "preamble", "epilogue", "binarysecret", "inner subj"):
        assert not m(Text("body", word), MIME), word
    assert m(Text("body", "KÄSE CAFE"), MIME)
    assert m(Text("body", "inner body"), MIME)


def test_text_adds_the_header_lines_of_the_message_and_its_parts():
    assert m(Text("text", "x-part: parthdr"), MIME)
    assert m(Text("text", "Subject: inner"), MIME)
    assert not m(Text("text", "binarysecret"), MIME)
    assert not m(Text("text", "preamble"), MIME)


def test_unicode_comparison_is_titlecase_and_canonical_decomposition_only():
    assert m(Text("subject", "é"), COMMENT)  # precomposed key, decomposed text
    assert m(Text("subject", "ß"), COMMENT)
    assert not m(Text("subject", "SS"), COMMENT)  # no full case folding
    assert not m(Text("subject", "fi"), COMMENT)  # no compatibility decomposition


def test_sent_dates_use_the_date_fields_own_zone():
    assert m(SentDate("on", dt.date(2024, 6, 3)), GROUPS)
    assert not m(SentDate("on", dt.date(2024, 6, 4)), GROUPS)


def test_a_missing_or_broken_date_counts_as_1970():
    assert m(SentDate("on", dt.date(1970, 1, 1)), MIME)
    assert m(SentDate("on", dt.date(1970, 1, 1)), b"Date: garbage\r\n\r\nx\r\n")


def test_arrival_dates_use_the_internaldate_zone():
    plus2 = dt.timezone(dt.timedelta(hours=2))
    arrived = dt.datetime(2024, 1, 1, 0, 30, tzinfo=plus2)
    assert m(ArrivalDate("on", dt.date(2024, 1, 1)), GROUPS, internaldate=arrived)
    assert m(ArrivalDate("on", dt.date(2023, 12, 31)), GROUPS, internaldate=arrived.astimezone(UTC))


def test_age_is_relative_to_now():
    hour_ago = NOW - dt.timedelta(hours=1)
    assert m(Age("older", 1800), GROUPS, internaldate=hour_ago)
    assert not m(Age("younger", 1800), GROUPS, internaldate=hour_ago)


def test_size_counts_line_ends_as_crlf():
    raw = b"Subject: x\n\nbody\n"
    assert msg(raw).rfc822_size == len(raw) + 3
    assert m(Size("larger", len(raw) + 2), raw)
    assert not m(Size("larger", len(raw) + 3), raw)
    assert m(Size("smaller", len(raw) + 4), raw)


def test_flags_and_keywords_keywords_without_regard_to_case():
    seen = msg(GROUPS, flags=frozenset({"\\Seen"}), keywords=frozenset({"$A"}))
    assert matches(Flag("\\Seen"), seen)
    assert not matches(Flag("\\Seen", present=False), seen)
    assert matches(Keyword("$a"), seen)
    assert matches(Keyword("$B", present=False), seen)


def test_explain_names_the_first_failing_part():
    tree = All((Text("subject", "hello"), AnyOf((Text("from", "nobody"), Flag("\\Seen")))))
    verdict = explain(tree, msg(GROUPS), now=NOW)
    assert not verdict.matched
    assert verdict.decided_by == Text("from", "nobody")
    assert verdict.path == (1, 0)


def test_explain_names_what_made_a_match():
    tree = AnyOf((Text("from", "nobody"), Not(Flag("\\Seen"))))
    verdict = explain(tree, msg(GROUPS), now=NOW)
    assert verdict.matched and verdict.decided_by == Flag("\\Seen") and verdict.path == (1, 0)


def test_raw_keys_are_not_evaluable_offline_and_say_where():
    with pytest.raises(NotEvaluableOffline, match="rules.yaml:3:5"):
        matches(Raw("UNSEEN"), msg(GROUPS), location=Location("rules.yaml", 3, 5))


def test_a_mime_tree_nested_too_deep_is_refused():
    from mailrules.local_search import MAX_DEPTH, MessageTooComplex

    raw = b"Content-Type: message/rfc822\r\n\r\n" * (MAX_DEPTH + 5) + b"x"
    with pytest.raises(MessageTooComplex):
        m(Text("body", "x"), raw)


class Unknown:
    """A node no component knows."""


def test_every_criteria_node_class_is_handled_by_compiler_reads_and_evaluator():
    samples = {
        Text: Text("subject", "x"), Header: Header("X", "y"), Size: Size("larger", 1),
        Age: Age("older", 60), ArrivalDate: ArrivalDate("on", dt.date(2024, 1, 1)),
        SentDate: SentDate("on", dt.date(2024, 1, 1)), Flag: Flag("\\Seen"), Keyword: Keyword("$A"),
        All: All(()), AnyOf: AnyOf(()), Not: Not(Flag("\\Seen")), Raw: Raw("ALL"),
    }
    classes = {c for c in vars(model).values()
               if isinstance(c, type) and c in model.Criterion.__args__}  # type: ignore[attr-defined]
    assert classes == set(samples), "a new criteria node needs a sample here (and support everywhere)"
    for node in samples.values():
        assert compile_search(node, {"WITHIN"}).tokens
        reads_of(node)
        if not isinstance(node, Raw):
            matches(node, msg(GROUPS))
    for fn in (lambda n: compile_search(n), lambda n: matches(n, msg(GROUPS))):
        with pytest.raises(TypeError):
            fn(Unknown())
    assert dataclasses.is_dataclass(Text)


def test_negated_group_of_two_sent_before_keys_is_evaluated_as_written():
    """NOT (SENTBEFORE 5-Jun SUBJECT hello SENTBEFORE 3-Jun): the RFC meaning, which the
    compiler makes Dovecot answer too (it would merge the negated keys to 5-Jun)."""
    crit = Not(All((SentDate("before", dt.date(2024, 6, 5)), Text("subject", "hello"),
                    SentDate("before", dt.date(2024, 6, 3)))))
    jun4 = b"Date: Tue, 04 Jun 2024 00:00:00 -1200\r\n"
    assert m(crit, b"Subject: hello\r\n" + jun4 + b"\r\nx\r\n")
    assert not m(crit, b"Subject: hello\r\n\r\nx\r\n")  # no Date: 1970, before both
    assert m(crit, b"Subject: nope\r\n\r\nx\r\n")


def _nested_rfc822(levels: int) -> bytes:
    return b"Content-Type: message/rfc822\r\n\r\n" * levels + b"Subject: deep\r\n\r\ninner text\r\n"


@pytest.mark.parametrize("levels", [10, 49, 50, 51, 60])
def test_offline_search_and_body_predicates_refuse_the_same_deep_messages(levels):
    from mailrules import mime
    from mailrules.local_search import MessageTooComplex
    from mailrules.message import MessageView

    raw = _nested_rfc822(levels)
    outcomes = []
    for read in (lambda: m(Text("body", "inner"), raw), lambda: "inner text" in MessageView(1, raw=raw).body_text):
        try:
            outcomes.append(read())
        except MessageTooComplex:
            outcomes.append("refused")
    assert outcomes == (["refused"] * 2 if levels > mime.MAX_DEPTH else [True, True])


def test_the_shared_header_decoder_reads_raw_utf8_and_encoded_words_as_dovecot():
    from mailrules.mime import decode_header

    assert decode_header(b"J\xc3\xbcrgen =?utf-8?q?caf=C3=A9?= =?utf-8?b?eA==?= caf\xe9") == "Jürgen caféx caf\ufffd"


# --------------------------------------------------------------------------- the plain-address fast path

_ADDRESS_PIECES = ["a", "b.c", "x+y", "Alice", "J.", "R.", "Smith", "=?utf-8?q?Zo=C3=AB?=", '"Doe, John"', '""',
                   '"S\u00f8ren"', "<", ">", "@", " ", "  ", ",", "(c)", ".", ":", ";", "\\", "[1.2.3.4]", "\u00e9"]


@given(st.lists(st.sampled_from(_ADDRESS_PIECES), max_size=8))
@settings(max_examples=3000, derandomize=True, deadline=None)
def test_the_plain_address_fast_path_parses_as_the_full_parser(pieces):
    """`_simple_address` (one plain address, no general parser) gives what `parse_addresses` gives,
    whenever it takes a value at all."""
    value = "".join(pieces).encode("utf-8")
    fast = _simple_address(value)
    if fast is not None:
        assert fast == parse_addresses(value)


@pytest.mark.parametrize("value", [b"a@b", b"<a@b>", b"Alice Example <alice@example.com>", b'"Doe, John" <j@d.e>',
                                   b"=?utf-8?q?Zo=C3=AB?= <zoe@example.de>", b"  Name   <a.b@c>  "])
def test_plain_addresses_take_the_fast_path(value):
    assert _simple_address(value) == parse_addresses(value)
