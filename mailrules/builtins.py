"""The built-in `regex` predicate and the built-in actions, registered like any plugin.

The built-in actions are `mailrules.api.Action` objects defined in `mailrules.actions`
(one module per family, each owning its execution, verification and description); here
they are registered through the same hook as a plugin's, so that the rules file is
validated and `mailrules plugins` lists them through one registry.
"""

from __future__ import annotations

from .actions import all_actions
from .actions.copy import parse_folder
from .actions.flags import parse_system_flags
from .actions.keywords import parse_keywords
from .api import Predicate, hookimpl
from .predicates import parse_regex_args, regex_needs, regex_prefilter, regex_test


@hookimpl
def mailrules_predicates():
    return [
        Predicate(
            name="regex",
            description="Python regular expression on a header, subject, from_address or the body text",
            test=regex_test,
            parse=parse_regex_args,
            needs=regex_needs,
            prefilter=regex_prefilter,
        )
    ]


@hookimpl
def mailrules_actions():
    return all_actions()


__all__ = ["mailrules_actions", "mailrules_predicates", "parse_folder", "parse_keywords", "parse_system_flags"]
