"""Frozen text encoders: prompts → token sequence (for cross-attention) + pooled vector (for the time embedding).

Two encoders share one interface (switchable by config through :func:`build_text_conditioner`):

- ``t5``: the Flan-T5 encoder; pooled = mean of the sequence over valid tokens.
- ``clap``: the text tower of ``transformers.ClapModel``; pooled = the unit-norm projected CLAP text
  embedding (``get_text_features``), sequence = the tower's last hidden state.

The encoders are never trained and never copied into checkpoints: pipelines store their id or path.
Learned null embeddings for classifier-free guidance live in the U-Net, not here.
"""

from __future__ import annotations

import json
import warnings
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar, TypeVar

import torch
from torch import nn

from ..errors import ConditioningError, first_line

DEFAULT_T5 = "google/flan-t5-large"
DEFAULT_CLAP = "laion/larger_clap_music"

Loaded = TypeVar("Loaded")


class ConditionerNotFoundError(ConditioningError, OSError):
    """The text encoder (weights or tokenizer) is neither a local directory, nor cached, nor reachable."""


class PromptTruncatedWarning(UserWarning):
    """A prompt had more tokens than the text encoder's ``max_length``; the tokens past it were dropped."""


LOCAL_FIX = "re-save the text encoder (save_pretrained) or copy the directory again"
WEIGHT_FILES = ("model.safetensors", "model.safetensors.index.json", "pytorch_model.bin")
# what the transformers loaders raise for damaged local files: OSError (missing or unparsable files),
# ValueError / TypeError / KeyError (malformed config values), RuntimeError (weights of the wrong shape);
# local_load_errors adds SafetensorError (a truncated weights file) and huggingface_hub's
# StrictDataclassError (config values of the wrong type in transformers 5)
LOCAL_LOAD_ERRORS: tuple[type[BaseException], ...] = (OSError, ValueError, TypeError, KeyError, RuntimeError)


def local_load_errors() -> tuple[type[BaseException], ...]:
    from safetensors import SafetensorError

    try:
        from huggingface_hub.errors import StrictDataclassError
    except ImportError:  # huggingface_hub < 1.0 has no strict dataclasses
        return (*LOCAL_LOAD_ERRORS, SafetensorError)
    return (*LOCAL_LOAD_ERRORS, SafetensorError, StrictDataclassError)


def check_local_directory(directory: Path) -> dict:
    """The parsed ``config.json`` of a local text encoder directory after checking the files every loader
    reads: config and tokenizer config are JSON objects, weights exist and their safetensors headers are
    whole. Raises a :class:`ConditioningError` naming the first missing or damaged file."""
    from safetensors import SafetensorError, safe_open

    def read_json(file: Path) -> dict:
        if not file.is_file():
            raise ConditionerNotFoundError(f"{file}: missing; {LOCAL_FIX}, or pass a complete directory with "
                                           "--text-encoder path/to/dir")
        try:
            data = json.loads(file.read_text(encoding="utf-8"))
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
            raise ConditioningError(f"{file}: unreadable or not valid JSON ({err}); {LOCAL_FIX}") from err
        if not isinstance(data, dict):
            raise ConditioningError(f"{file}: expected a JSON object, got {type(data).__name__}; {LOCAL_FIX}")
        return data

    config = read_json(directory / "config.json")
    if not isinstance(config.get("model_type"), str):
        raise ConditioningError(f"{directory / 'config.json'}: has no model_type; {LOCAL_FIX}")
    if not any((directory / name).is_file() for name in WEIGHT_FILES):
        raise ConditionerNotFoundError(f"{directory / WEIGHT_FILES[0]}: missing (no weights in {directory}); {LOCAL_FIX}")
    for file in sorted(directory.glob("*.safetensors")):
        try:
            with safe_open(str(file), framework="pt"):
                pass
        except (SafetensorError, OSError) as err:
            raise ConditioningError(f"{file}: truncated or corrupt ({err}); {LOCAL_FIX}") from err
    if (directory / "tokenizer_config.json").is_file():  # its absence is reported by from_pretrained
        read_json(directory / "tokenizer_config.json")
    return config


@dataclass(frozen=True)
class TextCondition:
    """Encoded prompts: ``sequence [B, S, D]`` (zero at padding), ``mask [B, S]`` bool (True = valid token),
    ``pooled [B, P]``."""

    sequence: torch.Tensor
    mask: torch.Tensor
    pooled: torch.Tensor

    def to(self, device: torch.device | str | None) -> TextCondition:
        """The same condition on ``device`` (None: unchanged)."""
        if device is None:
            return self
        return TextCondition(self.sequence.to(device), self.mask.to(device), self.pooled.to(device))


def masked_mean(sequence: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean of ``sequence [B, S, D]`` over the valid tokens of ``mask [B, S]`` bool → ``[B, D]``."""
    weights = mask.to(sequence.dtype)[..., None]
    return (sequence * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)


TEXT_ENCODER_FIX = "pass a local directory with --text-encoder path/to/dir"


def load_or_raise(load: Callable[..., Loaded], id_or_path: str, what: str, files: Sequence[str] = (),
                  fix: str = TEXT_ENCODER_FIX, **kwargs) -> Loaded:
    """``load(id_or_path, **kwargs)`` from local files first, then the hub (every frozen model of
    :mod:`discodiff.conditioning` and the evaluation embedders load through it).

    Raises a one-line :class:`ConditionerNotFoundError` (``what`` names the missing part, ``fix`` how to pass a local
    copy) when both fail. A local directory is loaded from its files alone; a failure there raises a
    :class:`ConditioningError` naming ``files`` (the part's files in that directory).
    """
    if Path(id_or_path).is_dir():
        try:
            return load(id_or_path, local_files_only=True, **kwargs)
        except local_load_errors() as err:
            where = " and ".join(str(Path(id_or_path) / file) for file in files) or id_or_path
            raise ConditioningError(f"{where}: {what} cannot be loaded, damaged or inconsistent "
                                    f"({first_line(err)}); {LOCAL_FIX}") from err
    try:
        try:  # the local cache first: no network round trips when the files are already here
            return load(id_or_path, local_files_only=True, **kwargs)
        except OSError:
            return load(id_or_path, **kwargs)
    except OSError as err:
        raise ConditionerNotFoundError(
            f"{what} '{id_or_path}' could not be loaded (not a local directory, not cached, hub unreachable); {fix}"
        ) from err


class FrozenTextConditioner(nn.Module, ABC):
    """A frozen Hugging Face text encoder and its tokenizer; always in eval mode, never trained.

    Subclasses set :attr:`default_id`, :attr:`default_max_length`, :attr:`model_type` and implement
    :meth:`load_model`, :meth:`encode`, :attr:`sequence_dim` and :attr:`pooled_dim`.
    """

    default_id: ClassVar[str]
    default_max_length: ClassVar[int]
    model_type: ClassVar[str]  # the ``model_type`` of the transformers config this encoder loads

    def __init__(self, model: nn.Module, tokenizer, max_length: int, source: str | None = None):
        super().__init__()
        self.model = model
        self.tokenizer = tokenizer
        self.max_length = max_length
        self.source = source
        self.requires_grad_(False)
        self.train(False)

    @classmethod
    def from_pretrained(
        cls, id_or_path: str | Path | None = None, max_length: int | None = None
    ) -> FrozenTextConditioner:
        """Load from a hub id or a ``save_pretrained`` directory (None: :attr:`default_id`).

        ``max_length`` (None: :attr:`default_max_length`) truncates longer prompts, in tokens.
        Raises :class:`ConditionerNotFoundError` when config, weights or tokenizer cannot be found, and
        ``ValueError`` when ``id_or_path`` holds another kind of model.
        """
        from transformers import AutoConfig, AutoTokenizer

        id_or_path = str(id_or_path or cls.default_id)
        if Path(id_or_path).is_dir():
            check_local_directory(Path(id_or_path))
        config = load_or_raise(AutoConfig.from_pretrained, id_or_path, f"{cls.__name__} config", ["config.json"])
        if config.model_type != cls.model_type:  # transformers would build a random model from the wrong config
            raise ValueError(
                f"'{id_or_path}' holds a '{config.model_type}' model but {cls.__name__} loads "
                f"'{cls.model_type}' models; choose the matching text conditioner kind ({tuple(TEXT_CONDITIONERS)})"
            )
        weights = [file for file in WEIGHT_FILES if (Path(id_or_path) / file).is_file()][:1]
        model = load_or_raise(cls.load_model, id_or_path, f"{cls.__name__} weights", ["config.json", *weights])
        if Path(id_or_path).is_dir() and not (Path(id_or_path) / "tokenizer_config.json").is_file():
            # transformers 5 would silently build an empty tokenizer from config.json alone
            raise ConditionerNotFoundError(
                f"'{id_or_path}' holds no tokenizer (tokenizer_config.json); save the tokenizer into it "
                "(tokenizer.save_pretrained) or pass a complete directory with --text-encoder path/to/dir"
            )
        tokenizer = load_or_raise(AutoTokenizer.from_pretrained, id_or_path, f"{cls.__name__} tokenizer",
                                  ["tokenizer_config.json"])
        return cls(model, tokenizer, max_length or cls.default_max_length, source=id_or_path)

    @staticmethod
    @abstractmethod
    def load_model(id_or_path: str, **kwargs) -> nn.Module:
        """The encoder's ``from_pretrained`` (``kwargs`` pass through, e.g. ``local_files_only``)."""

    @abstractmethod
    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``input_ids [B, S]``, ``attention_mask [B, S]`` bool → ``(sequence [B, S, D], pooled [B, P])``."""

    @property
    @abstractmethod
    def sequence_dim(self) -> int:
        """``D``: width of the token sequence."""

    @property
    @abstractmethod
    def pooled_dim(self) -> int:
        """``P``: width of the pooled vector."""

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    def train(self, mode: bool = True) -> FrozenTextConditioner:
        """Always eval: the encoder is frozen (no dropout, whatever the caller's mode)."""
        return super().train(False)

    def save_pretrained(self, directory: str | Path) -> Path:
        """Write model and tokenizer to ``directory`` (for tiny or local encoders; pipelines store the id)."""
        self.model.save_pretrained(str(directory))
        self.tokenizer.save_pretrained(str(directory))
        return Path(directory)

    @torch.no_grad()  # not inference_mode: the outputs feed modules that are trained
    def forward(self, prompts: str | Sequence[str], device: torch.device | str | None = None) -> TextCondition:
        """Encode a prompt or a batch of ``B`` prompts; the result is on ``device`` (None: the encoder's)."""
        prompts = [prompts] if isinstance(prompts, str) else list(prompts)
        if not prompts:
            raise ValueError("prompts is empty; pass at least one prompt (an empty string is a valid prompt)")
        self._warn_truncation(prompts)
        tokens = self.tokenizer(
            prompts, padding="longest", truncation=True, max_length=self.max_length, return_tensors="pt"
        ).to(self.device)
        mask = tokens.attention_mask.bool()
        sequence, pooled = self.encode(tokens.input_ids, mask)
        return TextCondition(sequence * mask[..., None], mask, pooled).to(device)

    def _warn_truncation(self, prompts: Sequence[str]) -> None:
        """One :class:`PromptTruncatedWarning` for the prompts longer than :attr:`max_length` tokens."""
        lengths = [len(ids) for ids in self.tokenizer(list(prompts), truncation=False, verbose=False).input_ids]
        over = [length for length in lengths if length > self.max_length]
        if over:
            dropped = sum(length - self.max_length for length in over)
            which = "a prompt" if len(prompts) == 1 else f"{len(over)} of {len(prompts)} prompts"
            warnings.warn(
                f"{which} exceeded the text encoder's limit of {self.max_length} tokens (longest {max(over)}): "
                f"{dropped} token{'s' if dropped != 1 else ''} dropped; shorten the prompt or raise "
                "text_encoder.max_length", PromptTruncatedWarning, stacklevel=3)

    def extra_repr(self) -> str:
        return f"source={self.source!r}, max_length={self.max_length}"


class FlanT5Conditioner(FrozenTextConditioner):
    """Frozen ``T5EncoderModel`` (default ``google/flan-t5-large``): sequence ``[B, S, d_model]``, pooled
    ``[B, d_model]`` = mean over valid tokens."""

    default_id = DEFAULT_T5
    default_max_length = 128
    model_type = "t5"

    @staticmethod
    def load_model(id_or_path: str, **kwargs) -> nn.Module:
        from transformers import T5EncoderModel

        return T5EncoderModel.from_pretrained(id_or_path, **kwargs)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        sequence = self.model(input_ids=input_ids, attention_mask=attention_mask.long()).last_hidden_state
        return sequence, masked_mean(sequence, attention_mask)

    @property
    def sequence_dim(self) -> int:
        return self.model.config.d_model

    @property
    def pooled_dim(self) -> int:
        return self.model.config.d_model


class ClapTextConditioner(FrozenTextConditioner):
    """Text tower of a frozen ``ClapModel`` (default ``laion/larger_clap_music``): sequence
    ``[B, S, hidden_size]`` (last hidden state), pooled ``[B, projection_dim]`` (unit-norm CLAP text embedding).

    The whole ``ClapModel`` is loaded (its audio tower stays unused) so that any CLAP checkpoint or
    ``save_pretrained`` directory works as is.
    """

    default_id = DEFAULT_CLAP
    default_max_length = 77  # the context length CLAP's text tower was trained with
    model_type = "clap"

    @staticmethod
    def load_model(id_or_path: str, **kwargs) -> nn.Module:
        from transformers import ClapModel

        return ClapModel.from_pretrained(id_or_path, **kwargs)

    def encode(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        text = self.model.get_text_features(input_ids=input_ids, attention_mask=attention_mask.long())
        return text.last_hidden_state, text.pooler_output

    @property
    def sequence_dim(self) -> int:
        return self.model.config.text_config.hidden_size

    @property
    def pooled_dim(self) -> int:
        return self.model.config.projection_dim


TEXT_CONDITIONERS: dict[str, type[FrozenTextConditioner]] = {"t5": FlanT5Conditioner, "clap": ClapTextConditioner}


def build_text_conditioner(
    kind: str, id_or_path: str | Path | None = None, max_length: int | None = None
) -> FrozenTextConditioner:
    """The text conditioner of ``kind`` (a key of :data:`TEXT_CONDITIONERS`) loaded from ``id_or_path``
    (None: that kind's default id)."""
    if kind not in TEXT_CONDITIONERS:
        raise ValueError(f"unknown text conditioner kind '{kind}'; choose one of {tuple(TEXT_CONDITIONERS)}")
    return TEXT_CONDITIONERS[kind].from_pretrained(id_or_path, max_length=max_length)
