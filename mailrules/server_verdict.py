"""Which criterion decided a rule's verdict, taken from the server's own answers.

`mailrules explain` names the criterion that decided whether a rule matched. The local
evaluator (`mailrules.local_search.explain`) knows one, but where the server reads a message
otherwise (broken mail, a server that is not Dovecot, raw keys) the local decider can be the
wrong one. This walks the criteria tree from the server's verdict on the whole tree down the
same path the local evaluator walks, asking the server about each criterion it has to know
(one `UID SEARCH UID n <that criterion>` each) and no other:

* a matched `all:` (and a failed `any:`) needs no question: every child has the same verdict.
  A matched `all:` is decided by its last child, as locally; a failed `any:` is decided by
  the `any:` itself, with every alternative named (none of them matched).
* a failed `all:` asks its children in order until one is false: that one decided; a matched
  `any:` asks until one is true.
* `not:` turns the verdict over and goes on into its child.
"""

from __future__ import annotations

from collections.abc import Callable

from .local_search import Verdict
from .model import All, AnyOf, Criterion, Not


class AskFailed(Exception):
    """The server could not answer a question about one criterion (said, with the local decider)."""


def server_verdict(root: Criterion, matched: bool, ask: Callable[[Criterion], bool]) -> tuple[Verdict, int]:
    """(the verdict with its decider, the number of questions asked) for `root`, which the
    server says `matched`; `ask(node)` is the server's answer for one subtree."""
    node, path, value, asked = root, (), matched, 0
    while True:
        if isinstance(node, Not):
            node, path, value = node.child, (*path, 0), not value
            continue
        if isinstance(node, All) and node.children:
            if value:
                index = len(node.children) - 1
            else:
                index = None
                for i, child in enumerate(node.children):
                    asked += 1
                    if not ask(child):
                        index = i
                        break
                if index is None:
                    raise AskFailed("the server says every part of a failing all: matches")
            node, path = node.children[index], (*path, index)
            continue
        if isinstance(node, AnyOf) and node.children and value:
            index = None
            for i, child in enumerate(node.children):
                asked += 1
                if ask(child):
                    index = i
                    break
            if index is None:
                raise AskFailed("the server says no alternative of a matching any: matches")
            node, path = node.children[index], (*path, index)
            continue
        return Verdict(matched, node, path), asked

