"""mailrules: declarative IMAP mail filtering."""

from .plugins import hookimpl

__version__ = "0.1.0"
__all__ = ["hookimpl", "__version__"]
