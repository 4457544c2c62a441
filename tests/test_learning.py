"""How `mailrules suggest` chooses values (mailrules.learning), offline on made-up headers."""

from __future__ import annotations

from mailrules.learning import Seen, propose


def _seen(folder: str, sender: str, list_id: str | None = None) -> Seen:
    raw = f"From: X <{sender}>\r\n" + (f"List-Id: L <{list_id}>\r\n" if list_id else "")
    return Seen.from_headers(folder, raw.encode())


def test_many_addresses_of_one_domain_become_one_domain_rule():
    messages = [_seen("Shop", f"user{i}@shop.example") for i in range(12)]
    messages += [_seen("INBOX", f"x{i}@other.example") for i in range(20)]
    [proposal] = propose(messages, ["Shop"])
    assert proposal.match() == {"from": "@shop.example"}
    assert (proposal.covered, proposal.wrong) == (12, 0)


def test_a_person_at_a_shared_provider_gets_their_address_not_the_domain():
    messages = [_seen("Ann", "ann@mail.example") for _ in range(12)]
    messages += [_seen("INBOX", f"x{i}@mail.example") for i in range(30)]
    [proposal] = propose(messages, ["Ann"])
    assert proposal.match() == {"from": "ann@mail.example"}


def test_a_list_id_wins_over_the_senders_of_the_list():
    messages = [_seen("Lists/dev", f"p{i % 3}@mail.example", "dev.lists.example.org") for i in range(15)]
    messages += [_seen("INBOX", f"p{i % 3}@mail.example") for i in range(15)]
    [proposal] = propose(messages, ["Lists/dev"])
    assert proposal.match() == {"header": {"List-Id": "dev.lists.example.org"}}


def test_several_values_merge_into_any():
    messages = [_seen("Family", "mum@a.example") for _ in range(6)] + [_seen("Family", "dad@b.example")
                                                                       for _ in range(6)]
    messages += [_seen("INBOX", f"x{i}@a.example") for i in range(10)] + [_seen("INBOX", f"y{i}@b.example")
                                                                          for i in range(10)]
    [proposal] = propose(messages, ["Family"])
    assert proposal.match() == {"any": [{"from": "dad@b.example"}, {"from": "mum@a.example"}]}


def test_a_few_messages_filed_elsewhere_by_hand_do_not_hide_the_pattern_and_count_against_precision():
    messages = [_seen("News", "news@paper.example") for _ in range(18)] + [_seen("INBOX", "news@paper.example")]
    [proposal] = propose(messages, ["News"])
    assert (proposal.covered, proposal.wrong) == (18, 1)
    assert round(proposal.precision, 3) == 0.947


def test_a_value_mostly_found_elsewhere_is_not_proposed():
    messages = [_seen("Misc", "bob@x.example") for _ in range(10)] + [_seen("INBOX", "bob@x.example")
                                                                      for _ in range(10)]
    assert propose(messages, ["Misc"]) == []


def test_folders_below_min_messages_and_messages_existing_rules_explain_are_left_out():
    messages = [_seen("Shop", f"u{i}@shop.example") for i in range(12)]
    assert propose(messages, ["Shop"], min_messages=13) == []
    assert propose(messages, ["Shop"], explained={"Shop": set(range(12))}) == []


def test_an_encoded_sender_name_does_not_hide_the_address():
    seen = Seen.from_headers("F", b"From: =?utf-8?q?J=C3=BCrgen?= <J@Example.ORG>\r\n")
    assert seen.values == {"address": "j@example.org", "domain": "example.org"}


def test_a_list_id_without_angle_brackets_is_still_a_list_id():
    seen = Seen.from_headers("F", b"From: a@b.example\r\nList-Id: dev.lists.example.org\r\n")
    assert seen.values["list"] == "dev.lists.example.org"
