"""The errors a rules file can cause, and how their messages are put together.

`ConfigError` carries a `Location` (file:line:column); its str() starts with it. Every other
module of the loader raises it through `Doc.error` or `expected_error`, so that no message
is without its place.
"""

from __future__ import annotations

from collections.abc import Iterable

from ..model import Location

__all__ = ["ConfigError", "ConfigWarning", "did_you_mean", "prefixed"]


class ConfigError(Exception):
    """The rules file is invalid. str() is 'file:line:column: message'."""

    def __init__(self, message: str, location: Location | None = None) -> None:
        super().__init__(f"{location}: {message}" if location else message)
        self.message = message
        self.location = location

    def within(self, context: str) -> ConfigError:
        """The same error, its message prefixed by `context` (e.g. "rule 'dev list'")."""
        return ConfigError(f"{context}: {self.message}", self.location)


class ConfigWarning(UserWarning):
    """Something in the rules file works but is unwise (e.g. an inline password)."""


def prefixed(what: str, text: str) -> str:
    """`text` after the name of what it is about ("timeout: expected ..."), if there is one."""
    return f"{what}: {text}" if what else text


def did_you_mean(word: str, choices: Iterable[str]) -> str:
    """'; did you mean 'match'?' for the closest of `choices` to a misspelt `word`, else ''.

    The same wording as for plugin arguments (`mailrules.plugins`), after the list of what is known.
    """
    import difflib  # only for a mistake: ~2 ms of every start otherwise

    close = difflib.get_close_matches(word, list(choices), n=1)
    return f"; did you mean {close[0]!r}?" if close else ""
