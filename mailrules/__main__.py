"""`python -m mailrules` is the `mailrules` command."""

import sys

from .cli import main

sys.exit(main())
