"""Model families: what a model config or model directory says it is, and the one loader that dispatches on it.

Every model config (YAML) and every model directory (``pipeline.json``) names its ``family``. A family is
described by a :class:`Family`: where its config schema, its builder, its pipeline class and its training
task live, as ``module:attribute`` import paths, so nothing is imported until it is used and no family
imports another. Built-in families are named in :data:`BUILTIN_FAMILIES`; a family defined elsewhere (a
plug-in, or a test) is named by the import path of its :class:`Family` object itself, e.g.
``family: my_package.toy:FAMILY`` — no registration step, no global state.

Every family's pipeline answers the same call::

    pipe(prompt, vocal=None, duration=None, generator=None, progress=True, **family_options)
        → output with .audios [B, 1, T] and .sample_rate

and offers ``from_pretrained(directory, device=None, **load_options)``, ``save_pretrained(directory)``,
``sample_rate`` and ``default_duration``. Directories saved before families existed have no ``family`` key
and load as :data:`DEFAULT_FAMILY`.
"""

from __future__ import annotations

import importlib
import json
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from .configuration import read_yaml
from .errors import ConfigError, ModelDirectoryError

PIPELINE_FILE = "pipeline.json"
FAMILY_KEY = "family"
DEFAULT_FAMILY = "discodiff"
BUILTIN_FAMILIES = {"discodiff": "discodiff.build:FAMILY", "codec": "discodiff.codec.family:FAMILY",
                    "ar": "discodiff.ar.build:FAMILY"}


@dataclass(frozen=True)
class Family:
    """A model family: ``config`` (a dataclass with ``from_yaml(path, overrides)``), ``build`` (``(config, seed) →
    pipeline``), ``pipeline`` (the class with ``from_pretrained``), ``task`` (its training task class, or None), as
    ``module:attribute`` paths. ``sample_options`` / ``load_options`` name the keyword arguments its pipeline's
    call and ``from_pretrained`` accept beyond the shared ones, so front ends can refuse the others.
    ``generates`` is False for a family whose models do not make music from prompts (a codec): front ends
    refuse to sample from it."""

    name: str
    config: str
    build: str
    pipeline: str
    task: str | None = None
    sample_options: tuple[str, ...] = ()
    load_options: tuple[str, ...] = ()
    generates: bool = True

    def config_class(self) -> type:
        return import_path(self.config, f"the config of family '{self.name}'")

    def builder(self):
        return import_path(self.build, f"the builder of family '{self.name}'")

    def pipeline_class(self) -> type:
        return import_path(self.pipeline, f"the pipeline of family '{self.name}'")

    def task_class(self) -> type:
        if self.task is None:
            raise ConfigError(f"family '{self.name}' has no training task")
        return import_path(self.task, f"the training task of family '{self.name}'")

    def check_generates(self, what: str) -> None:
        """Refuse, naming ``what``, to sample from a family that does not generate music."""
        if not self.generates:
            raise ConfigError(f"{what} is a '{self.name}' model, which does not generate music from prompts; "
                              "sample from a generative model (e.g. one from `discodiff new-model` or training export)")

    def check_options(self, options: dict[str, Any], kind: str = "sample", labels: dict[str, str] | None = None,
                      flags_only: Sequence[str] | None = None) -> None:
        """Refuse options (given, i.e. not None) that this family's pipeline does not take, naming them as the user
        spelt them (``labels``: option name → flag; default ``--option-name``); the accepted ones listed are those
        in ``flags_only`` when given (the options a front end has flags for)."""
        allowed = self.sample_options if kind == "sample" else self.load_options
        listed = [name for name in allowed if flags_only is None or name in flags_only]
        unknown = [name for name, value in options.items() if value is not None and name not in allowed]
        if unknown:
            def flag(name: str) -> str:
                return (labels or {}).get(name, f"--{name.replace('_', '-')}")
            accepted = ", ".join(flag(name) for name in listed) or "none"
            raise ConfigError(f"{', '.join(flag(name) for name in unknown)}: not an option of the '{self.name}' family "
                              f"(its {kind} options: {accepted})")


def import_path(path: str, what: str):
    """The attribute named by ``module:attribute``; a ConfigError naming ``what`` when it cannot be imported."""
    module_name, sep, attribute = path.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"{what}: '{path}' is not a module:attribute import path")
    try:
        return getattr(importlib.import_module(module_name), attribute)
    except (ImportError, AttributeError) as err:
        raise ConfigError(f"{what}: cannot import '{path}' ({err})") from err


def resolve_family(name: str) -> Family:
    """The :class:`Family` named ``name``: a built-in name or the ``module:attribute`` path of a Family object."""
    if not isinstance(name, str) or not name:
        raise ConfigError(f"family must be a name ({', '.join(BUILTIN_FAMILIES)}) or a module:attribute path, got {name!r}")
    path = BUILTIN_FAMILIES.get(name, name)
    if ":" not in path:
        raise ConfigError(f"unknown model family '{name}'; built-in families: {', '.join(BUILTIN_FAMILIES)} "
                          "(or give the module:attribute path of a discodiff.pipeline_utils.Family)")
    family = import_path(path, f"family '{name}'")
    if not isinstance(family, Family):
        raise ConfigError(f"family '{name}': {path} is a {type(family).__name__}, not a discodiff.pipeline_utils.Family")
    return family


def config_family(path: str | Path) -> Family:
    """The family a model config file declares (``family:``; default :data:`DEFAULT_FAMILY`)."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"config {path} not found; see configs/ for tiny.yaml, base.yaml, paper.yaml")
    return resolve_family(read_yaml(path).get(FAMILY_KEY, DEFAULT_FAMILY))


def directory_family(directory: str | Path) -> Family:
    """The family a model directory's ``pipeline.json`` names (default :data:`DEFAULT_FAMILY` for older directories)."""
    directory = Path(directory)
    manifest = directory / PIPELINE_FILE
    if not manifest.is_file():
        raise ModelDirectoryError(f"{directory} is not a discodiff model directory (no {PIPELINE_FILE}); "
                                  "create one with `discodiff new-model` or training export")
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise ModelDirectoryError(f"{manifest}: not valid JSON ({err}); re-export the model or copy it again") from err
    if not isinstance(data, dict):
        raise ModelDirectoryError(f"{manifest}: expected a JSON object; re-export the model or copy it again")
    try:
        return resolve_family(data.get(FAMILY_KEY, DEFAULT_FAMILY))
    except ConfigError as err:
        raise ModelDirectoryError(f"{manifest}: {err}") from err


def load_pipeline(directory: str | Path, device=None, **load_options):
    """Load the model directory ``directory`` with its family's pipeline class.

    ``load_options`` (e.g. ``codec=…``, ``text_encoder=…`` for the diffusion family) are refused when the
    family does not take them.
    """
    family = directory_family(directory)
    family.check_options(load_options, kind="load")
    given = {name: value for name, value in load_options.items() if value is not None}
    return family.pipeline_class().from_pretrained(directory, device=device, **given)


def build_from_config(config: str | Path, overrides: Sequence[str] = (), seed: int = 0):
    """A new, randomly initialised pipeline of the family the model config ``config`` declares."""
    family = config_family(config)
    model_config = family.config_class().from_yaml(config, overrides)
    return family.builder()(model_config, seed=seed)
