"""`python -m mailrules` is the `mailrules` command."""

from .cli import console

console()
