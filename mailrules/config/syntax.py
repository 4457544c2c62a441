"""YAML syntax errors restated in plain words, with the fix when there is a usual one.

The parser's own messages ("expected <block end>, but found '?'", "found character that
cannot start any token") name token kinds, which readers of a rules file do not know. Both
parsers (libyaml, and PyYAML's pure-Python one when libyaml is missing) are recognised and
give the same wording. Nothing of the file's text is repeated: at most one of YAML's own
indicator characters ('@', '`', '%'), which a message needs to name.
"""

from __future__ import annotations

from typing import Any

__all__ = ["plain_syntax_error"]

_QUOTE_IT = "if it is part of a value, write the value in quotes"


def plain_syntax_error(
    problem: str, context: str, context_mark: Any, char: str, max_depth: int
) -> str | None:
    """The parser's (problem, context) in plain words, or None if not one of the known cases.

    context_mark: where the construct the parser was reading starts (or None); char: the
    character at the problem's position ('' if unknown); max_depth: mailrules' own nesting limit.
    """
    if "maximum nesting depth" in problem:
        # PyYAML 6.0.4 and later stop at 1,000 levels before our composer (which stops at
        # max_depth) sees the events: the same error, in the same words as ours.
        return f"nested more than {max_depth} levels deep (mappings and lists)"
    opened = f"line {context_mark.line + 1}, column {context_mark.column + 1}" if context_mark else ""
    column = context_mark.column + 1 if context_mark else 0
    if "tab character" in problem or ("cannot start any token" in problem and char == "\t"):
        return "a tab character: YAML indents with spaces only (replace the tab with spaces)"
    if "cannot start any token" in problem:
        if char in ("@", "`"):
            return f"a value cannot start with {char!r} (reserved in YAML): write the value in quotes"
        if char == "%":
            return "a value cannot start with '%' here (it starts a YAML directive): write the value in quotes"
        return f"a character that cannot start a value here; {_QUOTE_IT}"
    if "unknown escape" in problem:
        return (
            "a backslash in a double-quoted string starts an escape (\\n, \\t, \\\\...), and this one is not "
            "one of them: write the value in single quotes, where a backslash is an ordinary character "
            "(e.g. '\\d+')"
        )
    if "quoted scalar" in context and "end of stream" in problem:
        return f"the quoted string that starts at {opened} is never closed: its closing quote is missing"
    if "quoted scalar" in context and "document separator" in problem:
        return f"the quoted string that starts at {opened} is not closed before a line '---' or '...'"
    for kind, close in (("flow sequence", "]"), ("flow mapping", "}")):
        if kind in context:
            what = "list in brackets" if close == "]" else "mapping in braces"
            return (
                f"the {what} that starts at {opened} is not closed with {close!r}, or a ',' is missing "
                "between its items"
            )
    if "block collection" in context and ("<block end>" in problem or "'-' indicator" in problem):
        return (
            f"this line does not line up with the list that starts at {opened}: its items start with '- ' "
            f"at column {column}, and the lines of one item are indented alike, further than the '-'"
        )
    if "block mapping" in context and ("<block end>" in problem or "expected key" in problem):
        return (
            f"this line does not line up with the mapping that starts at {opened}: its keys start at "
            f"column {column}; check the indentation, and that each key is followed by ':'"
        )
    if "mapping values are not allowed" in problem:
        return (
            "a ':' followed by a space where no key can start: if a value contains ': ', write it in quotes "
            "(e.g. subject: 'Re: hello'); otherwise check the indentation of this line"
        )
    if "simple key" in context and "':'" in problem:
        return (
            f"line {context_mark.line + 1} is neither 'key: value' nor a list item '- ...': a ':' is missing, "
            "or its indentation is wrong"
            if context_mark
            else "a line is neither 'key: value' nor a list item '- ...': a ':' is missing"
        )
    if "sequence entries are not allowed" in problem:
        return (
            "a list item '- ' cannot start here: write the list on the lines after its key, indented, "
            "or in brackets ([a, b])"
        )
    if "anchor" in context or "alias" in context:
        return (
            "'&' starts an anchor and '*' an alias, and a name must follow; if '&' or '*' is part of a "
            "value, write the value in quotes"
        )
    if "tag" in context:
        return f"'!' starts a YAML tag here; {_QUOTE_IT}"
    return None
