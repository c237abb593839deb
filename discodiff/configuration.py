"""The generic YAML → typed dataclass loader shared by every config (model, training, later families).

A config is a tree of dataclasses. :func:`load_config` reads a YAML file, applies ``key.sub=value``
overrides, builds the tree (unknown keys are errors) and checks every value against its field's type and,
where the field was declared with :func:`bounded`, its range or choices. Every problem is a
:class:`~discodiff.errors.ConfigError` naming the file, the key, the value and what is allowed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import types
import typing
from collections.abc import Sequence
from dataclasses import MISSING, dataclass
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import ConfigError

Config = TypeVar("Config")


@dataclass(frozen=True)
class Bound:
    """The values a numeric field (or each item of a list field) may take, or the ``choices`` of a text field."""

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] | None = None

    def describe(self) -> str:
        if self.choices is not None:
            return "one of " + ", ".join(map(str, self.choices))
        low, high = _number(self.low), _number(self.high)
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{low}, {high}{')' if self.high_open else ']'}"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {low}"
        return f"{'<' if self.high_open else '<='} {high}"

    def admits(self, value: Any) -> bool:
        if self.choices is not None:
            return value in self.choices
        if isinstance(value, float) and not math.isfinite(value):
            return False
        above = self.low is None or (value > self.low if self.low_open else value >= self.low)
        below = self.high is None or (value < self.high if self.high_open else value <= self.high)
        return above and below


def _number(x: float | None) -> str:
    """``3`` for whole numbers (however large), ``0.001`` / ``1e-08`` otherwise."""
    if x is None:
        return ""
    return str(int(x)) if float(x).is_integer() else f"{x:g}"


def bounded(default: Any = MISSING, *, default_factory: Any = MISSING, low: float | None = None, high: float | None = None,
            low_open: bool = False, high_open: bool = False, choices: Sequence[str] | None = None):
    """A dataclass field whose value (or every item, for lists) must lie in a range or among ``choices``."""
    bound = Bound(low, high, low_open, high_open, tuple(choices) if choices is not None else None)
    return dataclasses.field(default=default, default_factory=default_factory, metadata={"bound": bound})


def load_config(cls: type[Config], path: str | Path, overrides: Sequence[str] = (), hint: str = "") -> Config:
    """Read ``path`` into ``cls``, apply ``key.sub=value`` overrides and check every value (type and range)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config {path} not found{'; ' + hint if hint else ''}")
    data = read_yaml(path)
    apply_overrides(data, overrides)
    config = from_dict(cls, data, str(path))
    check_types(config, str(path))
    return config


def from_dict(cls: type, data: dict, where: str, prefix: str = ""):
    """Build dataclass ``cls`` from nested dicts; unknown keys are an error naming the key and file."""
    if not isinstance(data, dict):
        section = prefix.rstrip(".") or "the config"
        raise ConfigError(f"{where}: {section} must be a mapping for {cls.__name__}, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        keys = [f"{prefix}{k}" for k in sorted(unknown)]
        raise ConfigError(f"{where}: unknown key(s) {keys} for {cls.__name__}; valid: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        kwargs[name] = from_dict(hint, value, where, f"{prefix}{name}.") if dataclasses.is_dataclass(hint) else value
    return cls(**kwargs)


def read_yaml(path: Path) -> dict:
    """A YAML mapping as plain nested dicts (YAML anchors such as ``&unet`` / ``*unet`` unshared)."""
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8"))
    except (yaml.YAMLError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]}); fix the file or start from configs/") from err
    if data is not None and not isinstance(data, dict):
        raise ConfigError(f"{path}: a config must be a mapping of keys to values, got {type(data).__name__}")
    return json.loads(json.dumps(data or {}))


def apply_overrides(data: dict, overrides: Sequence[str]) -> None:
    """Set ``key.sub=value`` overrides in the nested dict ``data``; values stay text until :func:`check_types`
    parses them for their field's type (so ``mixed_precision=no`` stays the string ``no``)."""
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or not key:
            raise ConfigError(f"override '{override}' is not key=value (e.g. optimizer.learning_rate=2e-4)")
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ConfigError(f"override '{override}': '{part}' is not a section")
        node[leaf] = value


def check_types(config, where: str, prefix: str = "", parse_text: bool = True) -> None:
    """Check every field of a dataclass tree against its type and bound, parsing override text and coercing int → float.

    Errors read ``<where>: <section.key> must be …``, the key spelt as an override would spell it. With
    ``parse_text`` False (JSON written by a program, not typed by a user) text is never read as a number.
    """
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value, hint, key = getattr(config, f.name), hints[f.name], f"{prefix}{f.name}"
        if dataclasses.is_dataclass(hint):
            check_types(value, where, f"{key}.", parse_text)
            continue
        value = _coerce(value, hint, f"{where}: {key}", parse_text)
        bound = f.metadata.get("bound")
        if bound is not None:
            for item in value if isinstance(value, list) else [value]:
                if item is not None and not bound.admits(item):
                    raise ConfigError(f"{where}: {key} must be {bound.describe()}, got {item!r}")
        setattr(config, f.name, value)


def _coerce(value, hint, key: str, parse_text: bool = True):
    """``value`` as type ``hint`` (a scalar type, ``X | None``, ``list[X]`` or ``dict``), or a ConfigError naming ``key``.

    Text for a field that is not a string, and text values of a ``dict``, are read as YAML (``3``, ``1e-4``,
    ``true``, ``[0.9, 0.99]``, ``null``).
    """
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if parse_text and isinstance(value, str) and (str not in options or value in ("null", "~")):
        try:
            value = yaml.safe_load(value)
        except yaml.YAMLError as err:
            raise ConfigError(f"{key}: cannot read {value!r} ({str(err).splitlines()[0]})") from err
    if value is None and type(None) in options:
        return None
    for option in (o for o in options if o is not type(None)):
        if option is dict and isinstance(value, dict):
            return {k: yaml.safe_load(v) if isinstance(v, str) else v for k, v in value.items()}
        if typing.get_origin(option) is list and isinstance(value, list):
            (item,) = typing.get_args(option)
            return [_coerce(v, item, f"{key}[{i}]", parse_text) for i, v in enumerate(value)]
        if option is float and isinstance(value, (int, str) if parse_text else int) and not isinstance(value, bool):
            try:
                return float(value)
            except ValueError:
                pass
        if typing.get_origin(option) is None and isinstance(value, option) and not (option is int and isinstance(value, bool)):
            return value
    expected = " or ".join(_type_name(o) for o in options)
    quote = " (quote it: YAML reads no/yes/on/off as booleans)" if isinstance(value, bool) and str in options else ""
    raise ConfigError(f"{key} must be {expected}, got {value!r}{quote}")


def _type_name(hint) -> str:
    if typing.get_origin(hint) is list:
        return f"a list of {_type_name(typing.get_args(hint)[0])} (e.g. [1, 2])"
    return getattr(hint, "__name__", str(hint))
