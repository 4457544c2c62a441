"""The built-in regex predicate and MessageView on hostile messages (unit tests, no server).

Anyone who can send mail chooses the message: parsing it is bounded (depth, parts, size)
and a regex predicate's time is bounded per message in total, not per header occurrence.
"""

from __future__ import annotations

import pytest

from mailrules import mime, predicates
from mailrules.message import MessageTooComplex, MessageView
from mailrules.predicates import REGEX_TIMEOUT, PredicateTimeout, parse_regex_args, regex_test


def nested(levels: int, text: str = "build #12 failed", *, top: str = "") -> bytes:
    """A message of `levels` message/rfc822 parts, one inside the other, `text` in the innermost."""
    inner = f"Subject: inner\r\n\r\n{text}\r\n".encode()
    for _ in range(levels):
        inner = b"Content-Type: message/rfc822\r\n\r\n" + inner
    return f"From: a@example.org\r\nSubject: deep\r\nMessage-ID: <deep@example.org>\r\n{top}".encode() + inner


# ----------------------------------------------------------------------------- parsing bounds


def test_the_body_of_a_message_nested_too_deeply_is_refused_with_a_clear_error():
    with pytest.raises(MessageTooComplex, match="nested more than"):
        _ = MessageView(1, raw=nested(1200)).body_text


def test_the_email_fallback_refuses_a_message_nested_too_deeply_too():
    # An RFC 2231 parameter sends the fast path to the email package, which recursed 1,200 levels.
    top = "MIME-Version: 1.0\r\nContent-Type: message/rfc822; name*=utf-8''x\r\n\r\n"
    view = MessageView(1, raw=nested(1200, top=top))
    with pytest.raises(MessageTooComplex):
        _ = view.body_text
    with pytest.raises(MessageTooComplex):
        _ = view.email


def test_the_headers_of_a_message_nested_too_deeply_are_still_read():
    view = MessageView(1, raw=nested(1200))
    assert view.message_id == "<deep@example.org>"
    assert view.subject == "deep"
    assert view.from_addresses == ["a@example.org"]


def test_ordinary_nesting_is_read_by_both_parsers_alike(monkeypatch):
    raw = nested(mime.MAX_DEPTH - 1, "inner text")
    assert "inner text" in MessageView(1, raw=raw).body_text
    monkeypatch.setattr("mailrules.message.text_parts", lambda raw: None)  # force the email package
    assert "inner text" in MessageView(1, raw=raw).body_text


def test_a_message_with_too_many_parts_is_refused(monkeypatch):
    monkeypatch.setattr(mime, "MAX_PARTS", 50)
    parts = "".join("--b\r\nContent-Type: text/plain\r\n\r\nx\r\n" for _ in range(60))
    raw = (f"Subject: many\r\nContent-Type: multipart/mixed; boundary=b\r\n\r\n{parts}--b--\r\n").encode()
    with pytest.raises(MessageTooComplex, match="more than 50 MIME parts"):
        _ = MessageView(1, raw=raw).body_text


def test_a_message_too_large_to_parse_is_refused(monkeypatch):
    monkeypatch.setattr(mime, "MAX_SIZE", 1000)
    view = MessageView(1, raw=b"Subject: big\r\n\r\n" + b"x" * 2000)
    with pytest.raises(MessageTooComplex, match="too large"):
        _ = view.body_text
    assert view.subject == "big", "the header alone is small enough"


def test_a_body_regex_on_a_message_nested_too_deeply_fails_instead_of_answering():
    args = parse_regex_args({"body": r"build #\d+ failed"})
    with pytest.raises(MessageTooComplex):
        regex_test(MessageView(1, raw=nested(1200)), args)


# ----------------------------------------------------------------------------- time bound


class FakeClock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


class SlowPattern:
    """A compiled pattern whose every search takes 0.4 s of a fake clock (or its whole timeout)."""

    pattern = "(a|aa)+$"

    def __init__(self, clock: FakeClock, *, matches: bool = False) -> None:
        self.clock = clock
        self.matches = matches
        self.searches = 0

    def search(self, text: str, timeout: float) -> bool:
        self.searches += 1
        spent = min(0.4, timeout)
        self.clock.now += spent
        if spent >= timeout:
            raise TimeoutError("regex timed out")
        return self.matches


def header_copies(n: int) -> bytes:
    lines = "".join(f"X-Attack: {'a' * 30}!\r\n" for _ in range(n))
    return f"Subject: attack\r\n{lines}\r\nbody\r\n".encode()


def test_a_regex_is_bounded_in_total_over_every_occurrence_of_a_header(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(predicates, "_clock", clock, raising=False)
    pattern = SlowPattern(clock)
    start = clock.now
    with pytest.raises(PredicateTimeout, match="X-Attack"):
        regex_test(MessageView(1, raw=header_copies(60)), (("X-Attack", pattern),))
    assert clock.now - start <= REGEX_TIMEOUT, f"{pattern.searches} searches took {clock.now - start:.1f}s"


def test_a_regex_is_bounded_in_total_over_several_fields(monkeypatch):
    clock = FakeClock()
    monkeypatch.setattr(predicates, "_clock", clock, raising=False)
    args = tuple((name, SlowPattern(clock, matches=True)) for name in ("X-Attack", "Subject", "body"))
    start = clock.now
    with pytest.raises(PredicateTimeout):
        regex_test(MessageView(1, raw=header_copies(2)), args)
    assert clock.now - start <= REGEX_TIMEOUT


def test_a_regex_within_its_time_answers_as_before():
    args = parse_regex_args({"X-Attack": "a!$", "subject": "^att"})
    assert regex_test(MessageView(1, raw=header_copies(60)), args) is True
    assert regex_test(MessageView(1, raw=header_copies(60)), parse_regex_args({"X-Attack": "^b"})) is False
