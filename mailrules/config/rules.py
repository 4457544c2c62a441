"""One rule: its keys (name, account, mailbox, match, where, actions, stop, enabled,
schedule) read into a `model.Rule`; and the checks over all rules once every file is read
(unique names, arrival rules on mailboxes no account watches)."""

from __future__ import annotations

from yaml.nodes import Node

from ..model import MATCH_EVERYTHING, Criterion, Rule
from .calls import read_actions, read_where
from .context import LoadState
from .errors import ConfigError, did_you_mean
from .match import read_criteria
from .nodes import bool_of, check_keys, is_null, pairs_of, sendable, string_of, strings_of
from .reading import Doc
from .schedule import read_schedule
from .values import normalize_mailbox

__all__ = ["RULE_KEYS", "check_unique_names", "read_rule", "warn_unwatched"]

RULE_KEYS = ("name", "account", "mailbox", "match", "where", "actions", "stop", "enabled", "schedule")


def read_rule(doc: Doc, node: Node, index: int, state: LoadState) -> Rule:
    label = f"rule #{index}"
    pairs = pairs_of(doc, node, label, "a rule: a mapping with name: and actions:")
    if "name" not in pairs:
        raise doc.error(node, f"{label}: missing key 'name' (every rule needs a unique name)")
    name_node = pairs["name"][1]
    name = string_of(doc, name_node, label + ": name", "a non-empty name")
    try:
        return _rule_body(doc, node, name.strip(), pairs, state)
    except ConfigError as exc:
        raise exc.within(f"rule {name.strip()!r}") from None


def _rule_body(doc: Doc, node: Node, name: str, pairs: dict[str, tuple[Node, Node]], state: LoadState) -> Rule:
    check_keys(doc, node, pairs, "", RULE_KEYS, required=("actions",))
    value = {key: v for key, (_, v) in pairs.items()}

    account = None
    if "account" in pairs:
        account = string_of(doc, value["account"], "account", "the name of a configured account")
        if account not in state.accounts:
            raise doc.error(
                value["account"],
                f"account: unknown account {account!r} (configured: {', '.join(state.accounts)})"
                f"{did_you_mean(account, state.accounts)}",
            )

    mailboxes = None
    if "mailbox" in pairs:
        names = strings_of(doc, value["mailbox"], "mailbox", "a mailbox name or a list of them")
        mailboxes = tuple(dict.fromkeys(normalize_mailbox(sendable(doc, n_node, "mailbox", n))
                                        for n, n_node in names))

    match: Criterion = MATCH_EVERYTHING
    if "match" in pairs and not is_null(doc, value["match"]):
        match = read_criteria(doc, value["match"], "match", allow_empty=True)

    where = read_where(doc, value["where"], state) if "where" in pairs else ()
    actions, terminal = read_actions(doc, value["actions"], state)

    stop = False
    if "stop" in pairs:
        stop = bool_of(doc, value["stop"], "stop")
        if not stop and terminal:
            raise doc.error(
                value["stop"],
                f"stop: false contradicts '{terminal}', which removes the message from the mailbox "
                "(later rules cannot see it); remove 'stop: false'",
            )
    stop = stop or terminal is not None

    enabled = bool_of(doc, value["enabled"], "enabled") if "enabled" in pairs else True
    schedule = read_schedule(doc, value["schedule"], state) if "schedule" in pairs else None
    return Rule(
        name=name,
        match=match,
        actions=actions,
        where=where,
        account=account,
        mailboxes=mailboxes,
        stop=stop,
        enabled=enabled,
        schedule=schedule,
        location=doc.loc(node),
    )


def check_unique_names(rules: list[tuple[Rule, Node]]) -> None:
    first: dict[str, Rule] = {}
    for rule, _ in rules:
        if rule.name in first:
            raise ConfigError(
                f"rule {rule.name!r}: duplicate rule name (first defined at {first[rule.name].location}); "
                "rule names must be unique",
                rule.location,
            )
        first[rule.name] = rule


def warn_unwatched(rules: list[tuple[Rule, Node]], state: LoadState) -> None:
    """An arrival rule on a mailbox no account watches would never run: say so."""
    for rule, _ in rules:
        if rule.schedule is not None or rule.mailboxes is None or not rule.enabled:
            continue
        names = [rule.account] if rule.account else list(state.accounts)
        for mailbox in rule.mailboxes:
            if not any(mailbox in state.accounts[a].watch for a in names):
                state.warn(
                    f"{rule.location}: rule {rule.name!r}: mailbox {mailbox!r} is not in any 'watch:' list, "
                    "so this arrival rule never runs there; add it to 'watch:' or give the rule a 'schedule:'"
                )

