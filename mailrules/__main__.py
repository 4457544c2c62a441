"""`python -m mailrules` is the `mailrules` command."""

from .console import console

console()
