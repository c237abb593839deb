"""Versioned prompt templates for the captioning models (describe, rephrase).

A template's ``id`` (``name-vN``) and ``fingerprint`` (sha256 of its text) are recorded with every row it
produced, so a released dataset says exactly which prompt made each caption; changing the text without
raising ``version`` is caught by the fingerprint.
"""

from __future__ import annotations

import hashlib
import string
from dataclasses import dataclass

from ..errors import ConfigError


@dataclass(frozen=True)
class PromptTemplate:
    """A system and a user message with ``{field}`` slots, rendered by :meth:`render`."""

    name: str
    version: int
    system: str
    user: str

    @property
    def id(self) -> str:
        return f"{self.name}-v{self.version}"

    @property
    def fields(self) -> tuple[str, ...]:
        """The slot names of both messages, in order of first use."""
        names = [field for text in (self.system, self.user)
                 for _, field, _, _ in string.Formatter().parse(text) if field]
        return tuple(dict.fromkeys(names))

    @property
    def fingerprint(self) -> str:
        """The first 12 hex digits of the sha256 of name, version and both messages."""
        text = "\x1f".join((self.name, str(self.version), self.system, self.user))
        return hashlib.sha256(text.encode("utf-8")).hexdigest()[:12]

    def render(self, **values: str) -> tuple[str, str]:
        """(system, user) with every slot filled; a missing or unknown slot is a :class:`ConfigError`."""
        missing = [field for field in self.fields if field not in values]
        unknown = sorted(set(values) - set(self.fields))
        if missing or unknown:
            raise ConfigError(f"prompt template {self.id} needs the fields {list(self.fields)}; "
                              f"missing {missing}, unknown {unknown}")
        return self.system.format(**values), self.user.format(**values)

    def messages(self, **values: str) -> list[dict]:
        """The rendered template as chat messages (``[{"role": "system", …}, {"role": "user", …}]``)."""
        system, user = self.render(**values)
        return [{"role": "system", "content": system}, {"role": "user", "content": user}]

    def provenance(self) -> dict:
        """What a row records about the template that made it."""
        return {"template": self.id, "template_sha256": self.fingerprint}
