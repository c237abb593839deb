"""The parts of a model directory, as every family reads and writes them: checked JSON, diffusers models loaded
file by file into memory, the codec / text encoder a directory bundles or references, and the carry-over of files
a user added when a directory is saved again.

Every error is a :class:`~discodiff.errors.ModelDirectoryError` naming the file and ending in :data:`REPAIR`.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import os
import shutil
from collections.abc import Iterable
from pathlib import Path

import torch

from .configuration import check_types, from_dict
from .errors import ConfigError, ModelDirectoryError, first_line

REPAIR = "re-export the model (training export or `discodiff new-model`) or copy the model directory again"
MODEL_CONFIG, MODEL_WEIGHTS = "config.json", "diffusion_pytorch_model.safetensors"
# What diffusers' ModelMixin / ConfigMixin loaders raise for damaged files: OSError (EnvironmentError: a
# missing or unparsable file, weights it cannot read), ValueError (weights of the wrong shape, config values
# our constructors refuse), TypeError / KeyError (config values of the wrong type), RuntimeError (torch on
# wrong shapes; NotImplementedError for unknown schedule names). SafetensorError is added in load_errors.
LOAD_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, TypeError, KeyError, RuntimeError)


def state_dict_fingerprint(model: torch.nn.Module) -> str:
    """The sha256 hex digest of ``model.state_dict()``: every entry in sorted key order (its name, dtype, shape and
    bytes), so the same weights give the same digest on any device (codec fingerprints, feature-extractor ids)."""
    digest = hashlib.sha256()
    state = model.state_dict()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        digest.update(json.dumps([name, str(tensor.dtype), list(tensor.shape)]).encode())
        digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def load_errors() -> tuple[type[BaseException], ...]:
    """:data:`LOAD_ERRORS` and safetensors' own error."""
    from safetensors import SafetensorError

    return (*LOAD_ERRORS, SafetensorError)


def resolve_relative(id_or_path: str, directory: Path) -> str:
    """A path relative to the model directory if it exists there, else the id/path unchanged."""
    local = directory / id_or_path
    return str(local) if not Path(id_or_path).is_absolute() and local.exists() else str(id_or_path)


def read_json_object(path: Path, what: str) -> dict:
    """The JSON object in ``path``, or a :class:`ModelDirectoryError` naming ``path``."""
    if not path.is_file():
        raise ModelDirectoryError(f"{path}: missing ({what}); {REPAIR}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except json.JSONDecodeError as err:
        raise ModelDirectoryError(f"{path}: not valid JSON ({err.msg} at line {err.lineno}, column {err.colno}); "
                                  f"{REPAIR}") from err
    except (OSError, UnicodeDecodeError) as err:
        raise ModelDirectoryError(f"{path}: cannot be read ({getattr(err, 'strerror', None) or err}); {REPAIR}") from err
    if not isinstance(data, dict):
        raise ModelDirectoryError(f"{path}: expected a JSON object, got {type(data).__name__}; {REPAIR}")
    return data


def sections_problem(sections: Iterable[tuple[str, type, object]], where: str) -> str | None:
    """The first problem of manifest ``sections`` — ``(name, dataclass schema, values)`` — checked against their
    config schemas (every field present, typed and in range; an optional ``bundled`` flag), or None. A model
    directory so obeys the same types and ranges as the config it was built from."""
    for section, schema, values in sections:
        if not isinstance(values, dict):
            return f"{section} must be an object, got {values!r}"
        values = dict(values)
        if not isinstance(values.pop("bundled", False), bool):
            return f"{section}.bundled must be true or false, got {values and values.get('bundled')!r}"
        absent = [f.name for f in dataclasses.fields(schema) if f.name not in values]
        if absent:
            return f"{section}.{absent[0]} is missing"
        try:
            check_types(from_dict(schema, values, where, f"{section}."), where, f"{section}.", parse_text=False)
        except ConfigError as err:
            return str(err).removeprefix(f"{where}: ")
    return None


def component_location(directory: Path, name: str, source: dict, override: str | None) -> str:
    """Where to load the codec / text encoder from: ``override``, the bundled folder (which must exist), or the
    referenced id or path (relative to the model directory when it exists there)."""
    if override is not None:
        return resolve_relative(override, directory)
    if source.get("bundled"):
        folder = directory / source["id"]
        if not folder.is_dir():
            raise ModelDirectoryError(f"{folder}: missing (the bundled {name.replace('_', ' ')} of this model); {REPAIR}")
        return str(folder)
    return resolve_relative(source["id"], directory)


def inside(location: str | Path, directory: Path) -> bool:
    """``location`` exists and lies inside ``directory``."""
    try:
        return Path(location).exists() and Path(location).resolve().is_relative_to(directory.resolve())
    except OSError:
        return False


def in_memory(module: torch.nn.Module) -> torch.nn.Module:
    """Copy every parameter and buffer into memory of its own: loaders memory-map safetensors files, and a
    model directory that is later replaced (saving back into it) must not be read from afterwards."""
    with torch.no_grad():
        for tensor in itertools.chain(module.parameters(), module.buffers()):
            tensor.data = tensor.data.clone()
    return module


def check_safetensors(path: Path) -> None:
    """Refuse a truncated or corrupt safetensors file (reads its header only)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(path), framework="pt"):
            pass
    except (SafetensorError, OSError) as err:
        raise ModelDirectoryError(f"{path}: truncated or corrupt ({err}); {REPAIR}") from err


def load_model(model_class, folder: Path, what: str):
    """A diffusers model (``config.json`` + safetensors) from ``folder``, checked file by file, in float32 and in
    memory whatever its stored precision."""
    if not folder.is_dir():
        raise ModelDirectoryError(f"{folder}: missing (the {what}); {REPAIR}")
    config_file, weights = folder / MODEL_CONFIG, folder / MODEL_WEIGHTS
    read_json_object(config_file, f"the {what}'s config")
    if not weights.is_file():
        raise ModelDirectoryError(f"{weights}: missing (the {what}'s weights); {REPAIR}")
    check_safetensors(weights)
    try:
        model = model_class.from_pretrained(folder, use_safetensors=True, local_files_only=True, torch_dtype=torch.float32)
    except load_errors() as err:
        raise ModelDirectoryError(f"{config_file} and {weights.name} do not fit together or hold invalid values "
                                  f"({first_line(err)}); {REPAIR}") from err
    return in_memory(model)


def carry_over(directory: Path, build: Path, sources: dict, components: Iterable[str]) -> None:
    """Copy into ``build`` what an earlier ``directory`` holds besides the family's ``components`` (hard links where
    possible): files the user added, and folders that non-bundled ``sources`` reference by a relative path."""
    if not directory.is_dir():
        return
    components = set(components)
    referenced = {Path(s["id"]).parts[0] for s in sources.values()
                  if not s.get("bundled") and not Path(s["id"]).is_absolute() and (directory / s["id"]).exists()}
    for entry in directory.iterdir():
        if (build / entry.name).exists() or (entry.name in components and entry.name not in referenced):
            continue
        if entry.is_dir() and not entry.is_symlink():
            shutil.copytree(entry, build / entry.name, symlinks=True, copy_function=_link_or_copy)
        else:
            _link_or_copy(entry, build / entry.name)


def _link_or_copy(source, target) -> None:
    if os.path.islink(source):
        os.symlink(os.readlink(source), target)
        return
    try:
        os.link(source, target)
    except OSError:
        shutil.copy2(source, target)
