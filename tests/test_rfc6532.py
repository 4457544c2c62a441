"""Raw UTF-8 in headers (RFC 6532) is read as UTF-8 by every client-side reader (issue 18):
`MessageView` (`header`, `subject`, `from_addresses`), so the built-in `regex` predicate and a
plugin predicate match such a message offline and live on Dovecot; `make_message` writes an
address with non-ASCII characters. Bytes that are not UTF-8 become U+FFFD, as in Dovecot."""

from __future__ import annotations

from mailrules import Predicate, hookimpl
from mailrules.message import MessageView
from mailrules.testing.messages import make_message

RAW = "From: Jürgen <jürgen@bücher.example>\r\nSubject: Grüße aus Köln\r\nTo: a@example.org\r\n\r\nhi\r\n".encode()


def test_a_raw_utf8_from_gives_its_address_as_written():
    assert MessageView(1, raw=RAW).from_addresses == ["jürgen@bücher.example"]


def test_a_raw_utf8_header_and_subject_are_read_as_utf8():
    view = MessageView(1, raw=RAW)
    assert view.header("From") == ["Jürgen <jürgen@bücher.example>"]
    assert view.subject == "Grüße aus Köln"


def test_raw_utf8_around_encoded_words_keeps_both():
    view = MessageView(1, raw="Subject: Käse =?utf-8?q?und_Br=C3=B6t?= =?utf-8?q?chen?=\r\n\r\n".encode())
    assert view.subject == "Käse und Brötchen"


def test_bytes_that_are_not_utf8_become_the_replacement_character():
    view = MessageView(1, raw=b"From: J\xfcrgen <j@example.org>\r\nSubject: caf\xe9\r\n\r\n")
    assert view.subject == "caf\ufffd" and view.from_addresses == ["j@example.org"]


def test_make_message_writes_a_non_ascii_address_as_raw_utf8():
    raw = make_message(from_="u@bücher.example")
    assert "From: u@bücher.example\r\n".encode() in raw
    assert MessageView(1, raw=raw).from_addresses == ["u@bücher.example"]


def test_make_message_utf8_writes_every_non_ascii_header_raw():
    raw = make_message(subject="Grüße", utf8=True)
    assert "Subject: Grüße\r\n".encode() in raw


def from_domain(message, domain):
    return any(address.endswith("@" + domain) for address in message.from_addresses)


class DomainPlugin:
    mailrules_plugin_name = "domains"

    @hookimpl
    def mailrules_predicates(self):
        return [Predicate("from_domain", from_domain, "the sender's domain", schema={"type": "string"},
                          needs=["header:From"])]


RULES = """
- name: regex
  where: [{regex: {from_address: 'bücher'}}]
  actions: [{add_keyword: ByRegex}]
- name: plugin
  where: [{from_domain: bücher.example}]
  actions: [{add_keyword: ByPlugin}]
"""


def test_raw_utf8_from_is_matched_offline_by_regex_and_by_a_plugin_predicate(rules_runner):
    runner = rules_runner(RULES, plugins=[DomainPlugin()], entry_points=False)
    data = runner.test_offline([RAW], as_json=True).json()
    assert [r["name"] for r in data[0]["rules"]] == ["regex", "plugin"]
    assert data[0]["keywords"] == ["ByPlugin", "ByRegex"]
    assert data[0]["from"] == "Jürgen <jürgen@bücher.example>"


def test_raw_utf8_from_is_matched_on_dovecot_by_regex_and_by_a_plugin_predicate(rules_runner):
    runner = rules_runner(RULES, plugins=[DomainPlugin()], entry_points=False)
    runner.deliver([RAW, make_message(subject="made", from_="Jürgen <u@bücher.example>")])
    result = runner.run()
    assert result.failed == {}
    assert result.flags_of("Grüße aus Köln") == {"ByRegex", "ByPlugin"}
    assert result.flags_of("made") == {"ByRegex", "ByPlugin"}


def test_a_dry_runs_samples_show_a_raw_utf8_from_and_subject_decoded(rules_runner):
    runner = rules_runner(RULES, plugins=[DomainPlugin()], entry_points=False)
    runner.deliver([RAW])
    output = runner.run(dry_run=True).output
    assert "jürgen@bücher.example" in output and "Grüße aus Köln" in output and "\ufffd" not in output


def test_an_encoded_display_name_with_a_comma_gives_no_extra_address():
    view = MessageView(1, raw=b"From: =?utf-8?q?Doe=2C_John?= <j@example.org>\r\n\r\n")
    assert view.from_addresses == ["j@example.org"]
