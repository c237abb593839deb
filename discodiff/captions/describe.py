"""Describe: an audio-language model listens to each clip and writes one raw, factual description of it.

Two captioners share the :class:`Captioner` interface (:func:`make_captioner` picks one):

- :class:`TransformersCaptioner`: a local audio-language model through transformers' ``AutoProcessor`` and
  ``AutoModelForMultimodalLM`` (the auto class of audio/image-text-to-text chat models; for Qwen2-Audio checkpoints
  it resolves to ``Qwen2AudioForConditionalGeneration``). The default is ``Qwen/Qwen2-Audio-7B-Instruct``.
- :class:`EndpointCaptioner`: an OpenAI-compatible chat endpoint that takes ``input_audio`` message parts.

Every clip is mono ``[T]`` float32; it is resampled (soxr) to the rate the model wants and cut to its **first**
``max_seconds`` (Qwen2-Audio's feature extractor hears at most 30 s). The prompt is :data:`DESCRIBE_TEMPLATE`, whose
id and fingerprint are in :meth:`Captioner.provenance` with the model and generation settings, so every description
can say what made it. Randomness is seeded per call and never touches the global random state of the caller.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..errors import AudioError, ConditioningError, ConfigError, is_integer
from .endpoint import ChatEndpoint, audio_content
from .templates import PromptTemplate

DEFAULT_MODEL = "Qwen/Qwen2-Audio-7B-Instruct"
MODEL_FIX = "pass a local directory holding the model and its processor (save_pretrained of both) as the model"

DESCRIBE_TEMPLATE = PromptTemplate(
    name="describe",
    version=1,
    system="You are a music analyst. You describe recordings factually, from what you hear, in plain English.",
    user=("Describe this music in two to four sentences: its genre, the instruments (and voices, if any), the mood, "
          "the tempo, the key and how it is structured. Only state what you can hear; if something is unclear, "
          "leave it out. Do not guess lyrics, song titles or artists."),
)


class Captioner(ABC):
    """Audio clips → one description each.

    Subclasses set :attr:`sample_rate` (the rate the model hears; inputs are resampled to it) and
    :attr:`max_seconds` (longer clips are cut to their first ``max_seconds``), and implement :meth:`describe` and
    :meth:`provenance`.
    """

    sample_rate: int
    max_seconds: float

    @abstractmethod
    def describe(self, audios: Sequence[np.ndarray], sample_rate: int, seed: int) -> list[str]:
        """One description per clip of ``audios`` (each mono ``[T]`` float32 at ``sample_rate``), in order.

        The batch is one model call; the same batch with the same ``seed`` gives the same descriptions.
        """

    @abstractmethod
    def provenance(self) -> dict:
        """What a caption row records about its maker: model, revision when known, template id and fingerprint,
        generation settings, input rate and length (JSON-serialisable)."""

    def prepare(self, audios: Sequence[np.ndarray], sample_rate: int) -> list[np.ndarray]:
        """The clips as the model hears them: checked, cut to the first :attr:`max_seconds`, resampled to
        :attr:`sample_rate` (soxr, high quality); each ``[T']`` float32."""
        import soxr

        if not is_integer(sample_rate) or sample_rate <= 0:
            raise ConfigError(f"sample_rate must be a positive whole number of Hz, got {sample_rate!r}")
        clips = []
        for index, audio in enumerate(audios):
            clip = np.asarray(audio, dtype=np.float32)
            if clip.ndim != 1 or clip.size == 0:
                raise AudioError(f"clip {index}: expected a non-empty mono clip shaped [T], got shape {clip.shape}; "
                                 "mix it down first (discodiff.audio.to_mono)")
            if not np.isfinite(clip).all():
                raise AudioError(f"clip {index}: has NaN/inf samples; fix or drop it before describing")
            clip = clip[: int(np.ceil(self.max_seconds * sample_rate))]
            if sample_rate != self.sample_rate:
                clip = soxr.resample(clip, sample_rate, self.sample_rate, quality="HQ").astype(np.float32)
            clips.append(clip[: int(round(self.max_seconds * self.sample_rate))])
        return clips

    def _common_provenance(self, template: PromptTemplate) -> dict:
        return {**template.provenance(), "sample_rate": self.sample_rate, "max_seconds": self.max_seconds,
                "window": "first"}


def _check_seed(seed) -> int:
    if not is_integer(seed) or seed < 0:
        raise ConfigError(f"seed must be a non-negative whole number, got {seed!r}")
    return int(seed)


class TransformersCaptioner(Captioner):
    """A local audio-language model (processor + generative model) that writes a description per clip.

    The chat template of the processor builds each conversation: the template's system message, then a user turn
    holding the clip and the template's user message. Generation is greedy unless ``do_sample``; sampling is
    seeded inside ``torch.random.fork_rng``, so the caller's random state is left as it was.
    """

    def __init__(self, model, processor, template: PromptTemplate = DESCRIBE_TEMPLATE, max_new_tokens: int = 200,
                 do_sample: bool = False, source: str | None = None, revision: str | None = None):
        if not is_integer(max_new_tokens) or max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be a positive whole number, got {max_new_tokens!r}")
        check_audio_processor(processor, source)
        feature_extractor = processor.feature_extractor
        template.render()  # the describe prompt has no slots: refuse a template that has some, before any work
        self.model, self.processor, self.template = model.eval(), processor, template
        self.max_new_tokens, self.do_sample = int(max_new_tokens), bool(do_sample)
        self.source, self.revision = source, revision
        self.sample_rate = int(feature_extractor.sampling_rate)
        self.max_seconds = float(getattr(feature_extractor, "n_samples", 30 * self.sample_rate) / self.sample_rate)
        processor.tokenizer.padding_side = "left"  # decoder-only generation continues the right end of each row

    @classmethod
    def from_pretrained(cls, id_or_path: str | Path = DEFAULT_MODEL, device=None, dtype=None,
                        template: PromptTemplate = DESCRIBE_TEMPLATE, max_new_tokens: int = 200,
                        do_sample: bool = False) -> TransformersCaptioner:
        """Load processor and model from a hub id or a local ``save_pretrained`` directory.

        ``device`` None: CUDA when present, else CPU. ``dtype`` None: the dtype stored with the weights
        (``"auto"``; Qwen2-Audio ships bfloat16). A model that is neither local, nor cached, nor reachable is a
        one-line :class:`~discodiff.conditioning.text.ConditionerNotFoundError` naming the id and how to pass a
        local copy; a model that is not an audio-language model is a :class:`ConditioningError`.
        """
        import torch
        from transformers import AutoConfig, AutoModelForMultimodalLM, AutoProcessor
        from transformers.models.auto.modeling_auto import MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES

        from ..conditioning.text import WEIGHT_FILES, load_or_raise

        id_or_path = str(id_or_path)
        device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        config = load_or_raise(AutoConfig.from_pretrained, id_or_path, "captioner config", ["config.json"],
                               fix=MODEL_FIX)
        if config.model_type not in MODEL_FOR_MULTIMODAL_LM_MAPPING_NAMES:
            raise ConditioningError(f"'{id_or_path}' holds a '{config.model_type}' model, which is not an "
                                    f"audio-language chat model; pass one such as {DEFAULT_MODEL}")
        processor = load_or_raise(AutoProcessor.from_pretrained, id_or_path, "captioner processor",
                                  ["processor_config.json", "preprocessor_config.json", "tokenizer_config.json"],
                                  fix=MODEL_FIX)
        check_audio_processor(processor, id_or_path)
        weights = [name for name in WEIGHT_FILES if (Path(id_or_path) / name).is_file()][:1]
        model = load_or_raise(AutoModelForMultimodalLM.from_pretrained, id_or_path, "captioner weights",
                              ["config.json", *weights], fix=MODEL_FIX, dtype=dtype or "auto")
        return cls(model.to(device), processor, template=template, max_new_tokens=max_new_tokens,
                   do_sample=do_sample, source=id_or_path, revision=_hub_commit(id_or_path))

    @property
    def device(self):
        return self.model.device

    def conversation(self, clip: np.ndarray) -> list[dict]:
        """The chat of one clip: the template's system message, then the clip and the template's user message."""
        system, user = self.template.render()
        return [{"role": "system", "content": system},
                {"role": "user", "content": [{"type": "audio", "audio": clip}, {"type": "text", "text": user}]}]

    def describe(self, audios: Sequence[np.ndarray], sample_rate: int, seed: int) -> list[str]:
        import torch

        seed = _check_seed(seed)
        clips = self.prepare(audios, sample_rate)
        if not clips:
            return []
        prompts = [self.processor.apply_chat_template(self.conversation(clip), add_generation_prompt=True,
                                                      tokenize=False) for clip in clips]
        inputs = self.processor(text=prompts, audio=clips, sampling_rate=self.sample_rate, return_tensors="pt",
                                padding=True).to(self.device)
        # manual_seed seeds every CUDA device: fork them all, so that none keeps the seeded state
        devices = range(torch.cuda.device_count()) if self.device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices), torch.inference_mode():
            torch.manual_seed(seed)
            generated = self.model.generate(**inputs, max_new_tokens=self.max_new_tokens, do_sample=self.do_sample,
                                            pad_token_id=self.processor.tokenizer.pad_token_id)
        replies = generated[:, inputs["input_ids"].shape[1]:]
        return [text.strip() for text in self.processor.batch_decode(replies, skip_special_tokens=True)]

    def generation_settings(self) -> dict:
        """The settings generation runs with: ``max_new_tokens``, ``do_sample`` and, when sampling, the model's
        sampling parameters (``temperature``, ``top_p``, ``top_k``) from its generation config."""
        settings = {"max_new_tokens": self.max_new_tokens, "do_sample": self.do_sample}
        if self.do_sample:
            config = self.model.generation_config
            settings.update({name: getattr(config, name, None) for name in ("temperature", "top_p", "top_k")})
        return settings

    def provenance(self) -> dict:
        return {"captioner": "transformers", "model": self.source, "revision": self.revision,
                "model_class": type(self.model).__name__, "dtype": str(self.model.dtype).removeprefix("torch."),
                **self._common_provenance(self.template), "generation": self.generation_settings()}


def check_audio_processor(processor, source: str | None) -> None:
    """Refuse a processor that cannot take audio in a chat (no feature extractor or no chat template)."""
    if getattr(processor, "feature_extractor", None) is None or not getattr(processor, "chat_template", None):
        raise ConditioningError(f"{source or 'the processor'}: not an audio chat processor (it needs a feature "
                                f"extractor and a chat template); pass an audio-language model such as {DEFAULT_MODEL}")


def _hub_commit(id_or_path: str) -> str | None:
    """The commit a hub id was loaded from, as recorded in the local cache (None for local directories)."""
    if Path(id_or_path).is_dir():
        return None
    try:
        from huggingface_hub import resolve_revision

        return resolve_revision(id_or_path, local_files_only=True).resolved
    except Exception:  # an older huggingface_hub, or an id not recorded in the cache: unknown, not an error
        return None


class EndpointCaptioner(Captioner):
    """Descriptions from an OpenAI-compatible chat endpoint that hears audio (``input_audio`` message parts).

    Each clip is one request: the template's system message, then a user message with the template's text and the
    clip as a 16-bit WAV. Endpoint errors (:class:`~discodiff.errors.EndpointError`) propagate: a batch either
    returns every description or raises.
    """

    def __init__(self, endpoint: ChatEndpoint, template: PromptTemplate = DESCRIBE_TEMPLATE, sample_rate: int = 16000,
                 max_seconds: float = 30, temperature: float = 0.0, max_tokens: int = 256):
        if not is_integer(sample_rate) or sample_rate <= 0:
            raise ConfigError(f"sample_rate must be a positive whole number of Hz, got {sample_rate!r}")
        if not max_seconds > 0:
            raise ConfigError(f"max_seconds must be positive, got {max_seconds!r}")
        if not temperature >= 0:
            raise ConfigError(f"temperature must be >= 0, got {temperature!r}")
        if not is_integer(max_tokens) or max_tokens < 1:
            raise ConfigError(f"max_tokens must be a positive whole number, got {max_tokens!r}")
        template.render()  # refuse a template with slots before any request
        self.endpoint, self.template = endpoint, template
        self.sample_rate, self.max_seconds = int(sample_rate), float(max_seconds)
        self.temperature, self.max_tokens = float(temperature), int(max_tokens)

    def messages(self, clip: np.ndarray) -> list[dict]:
        """The request of one clip (``[T]`` at :attr:`sample_rate`)."""
        system, user = self.template.render()
        return [{"role": "system", "content": system},
                {"role": "user", "content": [{"type": "text", "text": user}, audio_content(clip, self.sample_rate)]}]

    def describe(self, audios: Sequence[np.ndarray], sample_rate: int, seed: int) -> list[str]:
        seed = _check_seed(seed)
        return [self.endpoint.complete(self.messages(clip), temperature=self.temperature, seed=seed,
                                       max_tokens=self.max_tokens)[0]
                for clip in self.prepare(audios, sample_rate)]

    def provenance(self) -> dict:
        return {"captioner": "endpoint", **self.endpoint.provenance(), **self._common_provenance(self.template),
                "generation": {"temperature": self.temperature, "max_tokens": self.max_tokens}}


def make_captioner(model: str | None = None, endpoint: str | None = None, endpoint_model: str | None = None, *,
                   api_key: str | None = None, device=None, dtype=None, template: PromptTemplate = DESCRIBE_TEMPLATE,
                   max_tokens: int | None = None, do_sample: bool = False, temperature: float = 0.0) -> Captioner:
    """The captioner of exactly one of ``model`` (hub id or local directory) and ``endpoint`` (URL, with
    ``endpoint_model`` naming the model it serves).

    ``max_tokens`` (None: 200 for a model, 256 for an endpoint) bounds each description; ``device``, ``dtype`` and
    ``do_sample`` apply to a model, ``api_key`` and ``temperature`` to an endpoint.
    """
    if bool(model) == bool(endpoint):
        given = "both" if model else "neither"
        raise ConfigError(f"describe needs exactly one of a model (id or path) and an endpoint URL, got {given}; "
                          f"e.g. --model {DEFAULT_MODEL} or --endpoint http://127.0.0.1:8000/v1 --endpoint-model NAME")
    if not endpoint:
        if endpoint_model:
            raise ConfigError(f"endpoint_model {endpoint_model!r} only applies with an endpoint URL; drop it, or "
                              "pass the endpoint instead of the model")
        return TransformersCaptioner.from_pretrained(model, device=device, dtype=dtype, template=template,
                                                     max_new_tokens=200 if max_tokens is None else max_tokens,
                                                     do_sample=do_sample)
    if not endpoint_model:
        raise ConfigError(f"endpoint {endpoint} needs the name of the model it serves (--endpoint-model), "
                          "e.g. gpt-4o-audio-preview")
    return EndpointCaptioner(ChatEndpoint(endpoint, endpoint_model, api_key=api_key), template=template,
                             temperature=temperature, max_tokens=256 if max_tokens is None else max_tokens)
