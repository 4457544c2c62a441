"""`mailrules import sieve FILE`: a Sieve script (RFC 5228, fileinto, copy, imap4flags, regex)
as mailrules rules with the same outcome.

Sieve runs a script once per delivered message; its tests read only the message, which the
script's actions do not change, so every action has a path condition (the conditions of the
branches around it) and a block of consecutive actions becomes one rule, in script order.
`stop` becomes `stop: true`; an `elsif` branch adds `not` of the earlier branches (left out
after a branch that always stops). Sieve's implicit keep is the subtle part: a `fileinto`
without `:copy` (or `discard`) takes the message out of INBOX at the end, unless `keep` ran.
mailrules removes a message from INBOX only by `move`/`delete`, which end its rules, so the
conversion makes a `fileinto` a `copy:` and removes the message where its script ends: at
the rule that stops it (or the last rule that can match it: then the last `copy:` becomes a
`move:`), or in a final rule for the messages that reach the end of the script. The walk
through the script, the rules and that analysis are here; tests are in `sieve_tests`.
"""

from __future__ import annotations

import itertools
from typing import Any
from unittest import mock

from .conditions import Cond, Unconvertible, all_, not_
from .emit import Rule, Skipped
from .sieve_rules import Act, Block, build_rules
from .sieve_tests import TestConverter, strings, unquote

_WHY_NOT = {
    "redirect": "mailrules never sends mail (the message stays where the other rules leave it)",
    "reject": "mailrules acts after delivery: it cannot refuse a message",
    "ereject": "mailrules acts after delivery: it cannot refuse a message",
    "vacation": "mailrules never sends mail (use your provider's auto-reply)",
    "set": "variables have no mailrules equivalent",
    "notify": "notifications are a plugin's job (see plugins/notify)",
    "include": "include the other script's conversion in the rules file instead",
}


class SieveSyntaxError(Exception):
    """The script does not parse; the message starts with its line."""


def parse(text: str) -> list[Any]:
    """sievelib's command tree, each command with `.lineno` (sievelib keeps no line numbers)."""
    from sievelib import commands as sieve_commands
    from sievelib import parser as sieve_parser

    parser = sieve_parser.Parser()
    original = sieve_parser.get_command_instance

    def numbered(name: str, parent: Any = None, checkexists: bool = True) -> Any:
        command = original(name, parent, checkexists)
        command.lineno = parser.lexer.curlineno()
        return command

    # sievelib knows only the comparators i;octet and i;ascii-casemap; RFC 4790's i;ascii-numeric
    # (spam-score tests with :value/:count) must parse so that the test is reported, not the script
    values = [*sieve_commands.comparator["extra_arg"]["values"], '"i;ascii-numeric"']
    with mock.patch.object(sieve_parser, "get_command_instance", numbered), \
            mock.patch.dict(sieve_commands.comparator["extra_arg"], {"values": values}):
        ok = parser.parse(text)
    if not ok:
        raise SieveSyntaxError(getattr(parser, "error", "cannot parse the script"))
    return list(parser.result)


def always_stops(commands: list[Any]) -> bool:
    """Whether running these commands always ends in `stop` (or every branch of a final chain does)."""
    body = [c for c in commands if c.name != "require"]
    if not body:
        return False
    last = body[-1]
    if last.name == "stop":
        return True
    if last.name != "else":
        return False
    chain = list(itertools.takewhile(lambda c: c.name in ("elsif", "else"), reversed(body)))
    start = body[len(body) - len(chain) - 1]
    return start.name == "if" and all(always_stops(c.children) for c in [start, *chain])


def folder_path(name: str, separator: str) -> str:
    """A fileinto mailbox name as mailrules writes folders: levels joined by '/', no INBOX. prefix.

    separator: the hierarchy separator the script's names use ('/' leaves names as they are;
    '.' makes 'INBOX.Lists.dev' the folder 'Lists/dev', mailrules adding the server's prefix back).
    """
    if separator == "/" or name.upper() == "INBOX":
        return name
    prefix = "INBOX" + separator
    if name.upper().startswith(prefix):
        name = name[len(prefix):]
    return "/".join(name.split(separator))


class SieveConverter:
    def __init__(self, separator: str = "/") -> None:
        self.separator = separator
        self.blocks: list[Block] = []
        self.skipped: list[Skipped] = []
        self.chains = itertools.count(1)
        self.tests = TestConverter(lambda c: getattr(c, "lineno", 0))

    # ------------------------------------------------------------------ the walk

    def walk(self, commands: list[Any], path: tuple, conds: tuple, *, tail: bool = False,
             ends: bool = False) -> None:
        """The blocks of `commands`. tail: nothing runs after them (the end of the script);
        ends: their last block gets `stop` (a branch of a final chain: see `chain`)."""
        pending: list[Act] = []
        i = 0
        while i < len(commands):
            cmd = commands[i]
            if cmd.name == "if":
                chain = [cmd, *itertools.takewhile(lambda c: c.name in ("elsif", "else"), commands[i + 1:])]
                self.flush(pending, path, conds, stop=False, line=cmd.lineno)
                pending = []
                self.chain(chain, path, conds, tail=tail and i + len(chain) == len(commands))
                i += len(chain)
                continue
            if cmd.name == "stop":
                self.flush(pending, path, conds, stop=True, line=cmd.lineno)
                return
            if cmd.name != "require":
                pending.extend(self.action(cmd))
            i += 1
        self.flush(pending, path, conds, stop=ends and not always_stops(commands), line=0)

    def flush(self, acts: list[Act], path: tuple, conds: tuple, *, stop: bool, line: int) -> None:
        if acts or stop:
            self.blocks.append(Block(path, conds, list(acts), stop, acts[0].line if acts else line))

    def chain(self, chain: list[Any], path: tuple, conds: tuple, *, tail: bool) -> None:
        """One if/elsif/else chain. A branch needs `not` of the tests before it, except after a
        branch that always stops, or when the chain ends the script (`tail`): then each branch
        ends with `stop` (nothing else would run for its messages anyway), which keeps its
        messages from the later branches' rules."""
        chain_id = next(self.chains)
        earlier: list[Cond] = []
        for k, branch in enumerate(chain):
            if branch.name == "else":
                test: Cond = all_(*earlier)
            else:
                try:
                    test = all_(*earlier, self.tests.convert(branch.arguments["test"]))
                except Unconvertible as exc:
                    self.skip_chain(chain[k:], exc)
                    return
            last = k == len(chain) - 1
            self.walk(branch.children, (*path, (chain_id, k)), (*conds, test), tail=tail, ends=tail and not last)
            if branch.name != "else" and not tail and not always_stops(branch.children):
                earlier.append(not_(self.tests.convert(branch.arguments["test"])))

    def skip_chain(self, rest: list[Any], exc: Unconvertible) -> None:
        self.skipped.append(Skipped(exc.line, exc.what, exc.why))
        for branch in rest:
            self.skipped.append(Skipped(branch.lineno, f"{branch.name} block",
                                        "its condition could not be converted, so neither could the block"))

    def action(self, cmd: Any) -> list[Act]:
        name, args, line = cmd.name, cmd.arguments, cmd.lineno
        if name in ("fileinto", "keep") and "flags" in args:
            self.skipped.append(Skipped(line, f"{name} :flags", "converted without :flags (the copy gets the "
                                        "flags set so far): use add_flag/add_keyword before it by hand"))
        if name == "fileinto":
            folder = folder_path(unquote(args["mailbox"]), self.separator)
            if folder.upper() == "INBOX" and "copy" not in args:
                return [Act("keep", line)]
            return [Act("fileinto", line, folder=folder, copy="copy" in args)]
        if name in ("keep", "discard"):
            return [Act(name, line)]
        if name in ("addflag", "setflag", "removeflag"):
            if "variable-name" in args:
                self.skipped.append(Skipped(line, f"{name} with a variable", "variables have no mailrules "
                                            "equivalent"))
                return []
            flags = tuple(f for item in strings(args["list-of-flags"]) for f in item.split())
            if any(f.lower() == "\\deleted" for f in flags):
                self.skipped.append(Skipped(line, f"{name} \\Deleted", "mailrules deletes with `delete`; "
                                            "write it by hand if that is what you want"))
                flags = tuple(f for f in flags if f.lower() != "\\deleted")
            return [Act(name, line, flags=flags)]
        self.skipped.append(Skipped(line, name, _WHY_NOT.get(name, "no mailrules equivalent")))
        return []


def convert(text: str, *, separator: str = "/") -> tuple[list[Rule], list[Skipped]]:
    """The rules for a Sieve script, and what was not converted. SieveSyntaxError if it does not parse."""
    converter = SieveConverter(separator)
    converter.walk(parse(text), (), (), tail=True)
    rules, skipped = build_rules(converter.blocks)
    return rules, converter.skipped + skipped
