"""``python -m discodiff.cli`` runs the ``discodiff`` command."""

from .app import app

app()
