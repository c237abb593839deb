"""Typed model configs read from YAML (``configs/*.yaml``) with ``key=value`` overrides.

A :class:`DiscoDiffConfig` describes a whole pipeline: which codec and text encoder it references
(hub id or local path, or ``tiny`` for ones built locally), the vocal encoder, both U-Nets and the
sampling defaults.
"""

from __future__ import annotations

import dataclasses
import json
import types
import typing
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import yaml

TINY = "tiny"


@dataclass
class CodecConfig:
    """``id``: hub id, local dir, ``.pth`` (``backend: descript``) or ``tiny`` (built locally, random)."""

    id: str = "descript/dac_44khz"
    backend: str = "transformers"


@dataclass
class TextEncoderConfig:
    """``kind``: ``t5`` (Flan-T5 encoder) or ``clap``; ``id``: hub id, local dir, or ``tiny``."""

    kind: str = "t5"
    id: str = "google/flan-t5-large"
    max_length: int = 128


@dataclass
class VocalEncoderConfig:
    """The trainable vocal encoder (DAC latents of the vocal → cross-attention tokens)."""

    enabled: bool = True
    hidden_channels: int = 256
    out_dim: int = 512
    num_blocks: int = 2
    downsample: int = 1
    norm_groups: int = 32


@dataclass
class UNetConfig:
    """Keyword arguments of :class:`~discodiff.models.UNet1DConditionModel` that are not derived
    from the codec (channels) or the conditioners (context and pooled widths)."""

    block_channels: list[int] = field(default_factory=lambda: [128, 256, 384, 512])
    layers_per_block: int = 2
    self_attention_levels: list[bool] = field(default_factory=lambda: [False, False, True, True])
    cross_attention_levels: list[bool] = field(default_factory=lambda: [False, True, True, True])
    attention_head_dim: int = 64
    time_embed_dim: int | None = None
    norm_groups: int = 32
    dropout: float = 0.0


@dataclass
class SamplingConfig:
    scheduler: str = "cosine-dpm"
    num_inference_steps: int = 50
    text_guidance: float = 3.0
    vocal_guidance: float = 1.5
    duration: float = 29.0


@dataclass
class DiscoDiffConfig:
    codec: CodecConfig = field(default_factory=CodecConfig)
    text_encoder: TextEncoderConfig = field(default_factory=TextEncoderConfig)
    vocal_encoder: VocalEncoderConfig = field(default_factory=VocalEncoderConfig)
    primary: UNetConfig = field(default_factory=UNetConfig)
    secondary: UNetConfig = field(default_factory=UNetConfig)
    sampling: SamplingConfig = field(default_factory=SamplingConfig)
    normalize_per: str = "codebook"

    @classmethod
    def from_yaml(cls, path: str | Path, overrides: Sequence[str] = ()) -> "DiscoDiffConfig":
        """Read ``path``, apply ``key.sub=value`` overrides and check every value against its field type."""
        path = Path(path)
        if not path.is_file():
            raise FileNotFoundError(f"config {path} not found; see configs/ for tiny.yaml, base.yaml, paper.yaml")
        data = read_yaml(path)
        apply_overrides(data, overrides)
        config = from_dict(cls, data, str(path))
        check_types(config, str(path))
        return config

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def from_dict(cls: type, data: dict, where: str):
    """Build dataclass ``cls`` from nested dicts; unknown keys are an error naming the key and file."""
    if not isinstance(data, dict):
        raise ValueError(f"{where}: expected a mapping for {cls.__name__}, got {data!r}")
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(data) - names
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {sorted(unknown)} for {cls.__name__}; valid: {sorted(names)}")
    kwargs = {}
    for name, value in data.items():
        hint = hints[name]
        kwargs[name] = from_dict(hint, value, f"{where}:{name}") if dataclasses.is_dataclass(hint) else value
    return cls(**kwargs)


def read_yaml(path: Path) -> dict:
    """A YAML mapping as plain nested dicts (YAML anchors such as ``&unet`` / ``*unet`` unshared)."""
    return json.loads(json.dumps(yaml.safe_load(path.read_text()) or {}))


def apply_overrides(data: dict, overrides: Sequence[str]) -> None:
    """Set ``key.sub=value`` overrides in the nested dict ``data``; values stay text until :func:`check_types`
    parses them for their field's type (so ``mixed_precision=no`` stays the string ``no``)."""
    for override in overrides:
        key, sep, value = override.partition("=")
        if not sep or not key:
            raise ValueError(f"override '{override}' is not key=value (e.g. optimizer.learning_rate=2e-4)")
        *parents, leaf = key.split(".")
        node = data
        for part in parents:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"override '{override}': '{part}' is not a section")
        node[leaf] = value


def check_types(config, where: str) -> None:
    """Check every field of a dataclass tree against its type, parsing override text and coercing int → float."""
    hints = typing.get_type_hints(type(config))
    for f in dataclasses.fields(config):
        value, hint, key = getattr(config, f.name), hints[f.name], f"{where}:{f.name}"
        if dataclasses.is_dataclass(hint):
            check_types(value, key)
        else:
            setattr(config, f.name, _coerce(value, hint, key))


def _coerce(value, hint, key: str):
    """``value`` as type ``hint`` (a scalar type, ``X | None``, ``list[X]`` or ``dict``), or a ValueError naming ``key``.

    Text for a field that is not a string, and text values of a ``dict``, are read as YAML (``3``, ``1e-4``,
    ``true``, ``[0.9, 0.99]``, ``null``).
    """
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    if isinstance(value, str) and (str not in options or value in ("null", "~")):
        value = yaml.safe_load(value)
    if value is None and type(None) in options:
        return None
    for option in (o for o in options if o is not type(None)):
        if option is dict and isinstance(value, dict):
            return {k: yaml.safe_load(v) if isinstance(v, str) else v for k, v in value.items()}
        if typing.get_origin(option) is list and isinstance(value, list):
            (item,) = typing.get_args(option)
            return [_coerce(v, item, f"{key}[{i}]") for i, v in enumerate(value)]
        if option is float and isinstance(value, (int, str)) and not isinstance(value, bool):
            try:
                return float(value)
            except ValueError:
                pass
        if isinstance(value, option) and not (option is int and isinstance(value, bool)):
            return value
    expected = " or ".join(getattr(o, "__name__", str(o)) for o in options)
    quote = " (quote it: YAML reads no/yes/on/off as booleans)" if isinstance(value, bool) and str in options else ""
    raise ValueError(f"{key} must be {expected}, got {value!r}{quote}")
