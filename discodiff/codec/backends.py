"""Loaders for the two DAC implementations behind :class:`~discodiff.codec.DacCodec`.

Both return a model exposing ``encoder``, ``quantizer`` (with ``quantizers[i].decode_latents`` and
``from_codes``) and ``decoder`` with the same call conventions, plus a :class:`CodecSpec`.

- ``transformers`` (default): ``transformers.DacModel`` from a hub id or a ``save_pretrained`` dir.
- ``descript``: the original ``dac`` package and its ``.pth`` files (``pip install discodiff[dac]``).
"""

from __future__ import annotations

import json
import math
import pickle
from dataclasses import dataclass
from pathlib import Path

from torch import nn

from ..errors import CodecError, first_line

BACKENDS = ("transformers", "descript")
DEFAULT_CODEC = "descript/dac_44khz"
DESCRIPT_MODEL_TYPES = ("44khz", "24khz", "16khz")
LOCAL_DAC_FIX = "re-save the codec (DacCodec.save_pretrained) or copy the directory again"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")


class CodecNotFoundError(CodecError, OSError):
    """The codec weights are neither cached nor reachable."""


@dataclass(frozen=True)
class CodecSpec:
    """The numbers downstream code needs about a codec; read from its config, never assumed."""

    sample_rate: int
    hop_length: int
    n_codebooks: int
    codebook_dim: int
    codebook_size: int


def load_transformers_dac(id_or_path: str | Path) -> tuple[nn.Module, CodecSpec]:
    """``transformers.DacModel`` from a hub id (e.g. ``descript/dac_44khz``) or a local directory."""
    from transformers import DacModel

    if Path(id_or_path).is_dir():
        model = load_local_transformers_dac(Path(id_or_path))
        return model, spec_from_transformers_config(model.config)
    try:
        try:  # the local cache first: no network round trips when the weights are already here
            model = DacModel.from_pretrained(str(id_or_path), local_files_only=True)
        except OSError:
            model = DacModel.from_pretrained(str(id_or_path))
    except OSError as err:
        raise CodecNotFoundError(
            f"codec '{id_or_path}' could not be loaded (not a local directory, not cached, hub unreachable); "
            f"pass a local DacModel directory with --codec path/to/dir, or a .pth with --codec file.pth --codec-backend descript"
        ) from err
    return model, spec_from_transformers_config(model.config)


def load_local_transformers_dac(directory: Path) -> nn.Module:
    """``DacModel`` from a ``save_pretrained`` directory; any missing or damaged file raises one
    :class:`CodecError` naming that file."""
    from safetensors import SafetensorError, safe_open
    from transformers import DacModel

    config_file = directory / "config.json"
    if not config_file.is_file():
        raise CodecNotFoundError(f"{config_file}: missing, so {directory} is not a DacModel directory; {LOCAL_DAC_FIX}")
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise CodecError(f"{config_file}: unreadable or not valid JSON ({err}); {LOCAL_DAC_FIX}") from err
    if not isinstance(config, dict) or config.get("model_type") != "dac":
        found = config.get("model_type") if isinstance(config, dict) else type(config).__name__
        raise CodecError(f"{config_file}: not a DAC config (model_type {found!r}, expected 'dac'); {LOCAL_DAC_FIX}")
    weights = [directory / name for name in WEIGHT_FILES if (directory / name).is_file()]
    if not weights:
        raise CodecNotFoundError(f"{directory / WEIGHT_FILES[0]}: missing (no codec weights in {directory}); {LOCAL_DAC_FIX}")
    for file in sorted(directory.glob("*.safetensors")):  # a truncated copy fails here, named
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except (SafetensorError, OSError) as err:
            raise CodecError(f"{file}: truncated or corrupt ({err}); {LOCAL_DAC_FIX}") from err
    try:
        return DacModel.from_pretrained(str(directory), local_files_only=True)
    except (OSError, ValueError, TypeError, KeyError, RuntimeError, SafetensorError, *_strict_config_errors()) as err:
        # RuntimeError: weight shapes that do not fit config.json; TypeError/ValueError: malformed config values
        raise CodecError(f"{config_file} and {weights[0].name} do not fit together or are damaged "
                         f"({first_line(err)}); {LOCAL_DAC_FIX}") from err


def _strict_config_errors() -> tuple[type[Exception], ...]:
    """huggingface_hub's error for config values of the wrong type (transformers 5 configs are strict dataclasses)."""
    try:
        from huggingface_hub.errors import StrictDataclassError
    except ImportError:  # huggingface_hub < 1.0
        return ()
    return (StrictDataclassError,)


def spec_from_transformers_config(config) -> CodecSpec:
    """:class:`CodecSpec` of a ``transformers.DacConfig``."""
    return CodecSpec(
        sample_rate=int(config.sampling_rate),
        hop_length=int(math.prod(config.downsampling_ratios)),
        n_codebooks=int(config.n_codebooks),
        codebook_dim=int(config.codebook_dim),
        codebook_size=int(config.codebook_size),
    )


def load_descript_dac(path_or_type: str | Path) -> tuple[nn.Module, CodecSpec]:
    """Original DAC from a ``.pth`` file, or one of ``44khz``/``24khz``/``16khz`` (downloaded by ``dac``)."""
    try:
        import dac
    except ImportError as err:
        raise ImportError(
            f"the 'descript' codec backend needs the dac package ({err}); "
            "install it with `pip install discodiff[dac]` (CPU-only torch: `bash scripts/install.sh --descript`)"
        ) from err
    path = Path(path_or_type)
    if path.is_file():
        location = path
    elif str(path_or_type) in DESCRIPT_MODEL_TYPES:
        try:
            location = dac.utils.download(model_type=str(path_or_type))
        except Exception as err:  # dac downloads with `requests`; any failure means "not reachable"
            raise CodecNotFoundError(
                f"descript DAC '{path_or_type}' could not be downloaded; pass a local .pth with --codec file.pth"
            ) from err
    else:
        raise CodecNotFoundError(
            f"'{path_or_type}' is not a .pth file; the descript backend takes a local .pth or one of {DESCRIPT_MODEL_TYPES}"
        )
    try:
        model = dac.DAC.load(str(location))
    except (OSError, EOFError, RuntimeError, ValueError, KeyError, TypeError, pickle.UnpicklingError) as err:
        raise CodecError(f"{location}: not a loadable descript DAC checkpoint, truncated or corrupt ({first_line(err)}); "
                         "download it again or pass another .pth with --codec file.pth") from err
    return model, spec_from_descript_model(model)


def spec_from_descript_model(model) -> CodecSpec:
    """:class:`CodecSpec` of a ``dac.DAC`` instance."""
    first = model.quantizer.quantizers[0]
    return CodecSpec(
        sample_rate=int(model.sample_rate),
        hop_length=int(model.hop_length),
        n_codebooks=int(model.n_codebooks),
        codebook_dim=int(first.codebook_dim),
        codebook_size=int(first.codebook_size),
    )


def load_backend(id_or_path: str | Path, backend: str) -> tuple[nn.Module, CodecSpec]:
    """Dispatch to the loader of ``backend`` (one of :data:`BACKENDS`)."""
    if backend == "transformers":
        return load_transformers_dac(id_or_path)
    if backend == "descript":
        return load_descript_dac(id_or_path)
    raise ValueError(f"unknown codec backend '{backend}'; choose one of {BACKENDS}")
