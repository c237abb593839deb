"""The ``discodiff`` command line: thin command groups that parse options and call the library."""

from .app import app

__all__ = ["app"]
