"""Load and validate a rules file (the contract is the rules-format spec) into `model` objects.

The file is read with libyaml's parser, but only its events are used: `reading` composes
them into a node tree within limits, every node carrying its position, so every error names
file:line:column, what was found and what was expected. Validation walks the nodes with a
few typed reads (`nodes`) and one module per section. Unknown keys are errors: a typo must
never disable a rule.

    reading   bounded file reading, the YAML composer, `Doc` (one file's nodes)
    syntax    YAML syntax errors restated in plain words
    nodes     typed reads of nodes (a mapping with known keys, a string, a list...)
    errors    ConfigError, ConfigWarning, did_you_mean (difflib suggestions)
    values    durations, sizes, dates, mailbox names
    top       the main file's keys, version and accounts (load_accounts(): those alone)
    loader    load(): the main file, its includes, in order
    accounts  accounts:, secret sources (the table is `mailrules.secrets.SECRET_SOURCES`)
    rules     one rule; checks over all rules
    match     match: criteria
    calls     where: predicates and actions: calls, through the plugin registry
    schedule  schedule: cron or every

Public API: `load()`, `load_accounts()`, `ConfigError`, `ConfigWarning`, `default_config_path()`,
`rules_file_path()`, and the value parsers `parse_duration()`, `parse_size()`. The key tables
(`TOP_KEYS`, `ACCOUNT_KEYS`, `RULE_KEYS`, `CRITERIA_KEYS`) are re-exported for the reference's
tests.
"""

from __future__ import annotations

import importlib
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .accounts import ACCOUNT_KEYS, is_loopback
    from .errors import ConfigError, ConfigWarning
    from .loader import load
    from .match import CRITERIA_KEYS
    from .rules import RULE_KEYS
    from .top import TOP_KEYS, load_accounts
    from .values import parse_duration, parse_size

__all__ = [
    "ACCOUNT_KEYS",
    "CRITERIA_KEYS",
    "RULE_KEYS",
    "TOP_KEYS",
    "ConfigError",
    "ConfigWarning",
    "default_config_path",
    "is_loopback",
    "load",
    "load_accounts",
    "parse_duration",
    "parse_size",
    "rules_file_path",
]

# Where each public name lives, imported on first use (PEP 562): `run --once` reads the
# accounts (`top`) and starts connecting before the modules that read rules, and the
# plugins they look actions up in, are loaded (`mailrules.runcommand.early_pool`).
_HOMES = {
    "ACCOUNT_KEYS": "accounts", "is_loopback": "accounts", "ConfigError": "errors", "ConfigWarning": "errors",
    "load": "loader", "CRITERIA_KEYS": "match", "RULE_KEYS": "rules", "TOP_KEYS": "top", "load_accounts": "top",
    "parse_duration": "values", "parse_size": "values",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{home}"), name)
    globals()[name] = value
    return value


def rules_file_path(given: str | None) -> Path:
    """The rules file: `given` (-c FILE), else `default_config_path()`."""
    return Path(given) if given else default_config_path()


def default_config_path() -> Path:
    """$MAILRULES_CONFIG, else ~/.config/mailrules/rules.yaml."""
    env = os.environ.get("MAILRULES_CONFIG")
    if env:
        try:
            return Path(env).expanduser()
        except RuntimeError:  # ~nosuchuser/...: load() says so, with the path as written
            return Path(env)
    return Path.home() / ".config" / "mailrules" / "rules.yaml"
