"""Rephrase: an audio model's description + tag summary → several short captions per clip (tags take precedence).

Three rephrasers answer the same call, ``rephrase(descriptions, tags, num_captions, seed) -> [[caption, …], …]``
(one list per clip, at most ``num_captions`` long: a reply with fewer usable lines gives fewer captions, never
made-up ones, and the caller counts the shortfall):

- :class:`TransformersRephraser`: a local instruct LLM (default :data:`DEFAULT_REPHRASE_MODEL`), batched, sampled
  under a seed without touching the global random state.
- :class:`EndpointRephraser`: an OpenAI-compatible chat endpoint, one request per clip, seeded ``seed + clip index``.
- :class:`TemplateRephraser`: the offline fallback, sentence patterns filled from the tags, byte-identical for a seed.

:func:`make_rephraser` picks one from a model id/path, an endpoint URL, or neither (the fallback). Every rephraser's
``provenance()`` says what made the captions (model, prompt template id and fingerprint, generation settings).
"""

from __future__ import annotations

import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from ..conditioning.text import load_or_raise
from ..errors import ConfigError, DataError, is_integer, is_real
from .endpoint import ChatEndpoint
from .filters import caption_problem
from .tags import Tags
from .templates import PromptTemplate

DEFAULT_REPHRASE_MODEL = "Qwen/Qwen2.5-1.5B-Instruct"   # small, Apache-2.0, with a chat template
MODEL_FIX = "pass a local directory of an instruct model (save_pretrained) as the rephrase model"
NO_DESCRIPTION = "(none)"

REPHRASE_TEMPLATE = PromptTemplate(
    name="rephrase",
    version=1,
    system=(
        "You write captions for a dataset of music clips. For each clip you get a description written by an audio "
        "model, which may be wrong, and tags, which are reliable. Write short captions of the music: each one "
        "sentence of at most 40 words, each worded differently from the others. When the tags and the description "
        "disagree, follow the tags. Never mention an instrument, genre, key, tempo or anything else that appears in "
        "neither the tags nor the description. Answer with one caption per line and nothing else: no numbering, no "
        "quotes, no introduction."
    ),
    user="Description: {description}\nTags: {tags}\n\nWrite {num_captions} captions.",
)

REPHRASE_FIELDS = frozenset({"description", "tags", "num_captions"})
LIST_MARKER = re.compile(r"^(?:[-*\u2022\u00b7+\u2013\u2014]|\(?\d{1,2}\s*[.):\]])\s*")
QUOTES = "\"'`\u201c\u201d\u2018\u2019\u00ab\u00bb"


def check_template(template: PromptTemplate) -> PromptTemplate:
    """``template`` when its slots are exactly :data:`REPHRASE_FIELDS`; a :class:`ConfigError` otherwise."""
    if not isinstance(template, PromptTemplate) or set(template.fields) != REPHRASE_FIELDS:
        fields = list(template.fields) if isinstance(template, PromptTemplate) else type(template).__name__
        raise ConfigError(f"a rephrase template needs the slots {sorted(REPHRASE_FIELDS)}, got {fields}; "
                          "start from discodiff.captions.rephrase.REPHRASE_TEMPLATE")
    return template


def rephrase_messages(template: PromptTemplate, description: str, tags: Tags, num_captions: int) -> list[dict]:
    """The chat messages asking for ``num_captions`` captions of one clip."""
    return template.messages(description=description.strip() or NO_DESCRIPTION,
                             tags=tags.summary() or NO_DESCRIPTION, num_captions=str(num_captions))


def _clean_line(line: str) -> str:
    """One reply line without list markers, markdown emphasis or surrounding quotes."""
    while True:
        cleaned = LIST_MARKER.sub("", line.strip()).strip().strip("*_").strip().strip(QUOTES).strip()
        if cleaned == line:
            return cleaned
        line = cleaned


def _parse_reply(reply: str, num_captions: int) -> list[str]:
    """The first ``num_captions`` usable lines of a reply: non-empty once cleaned, and not a heading ending in ':'."""
    lines = (_clean_line(line) for line in reply.splitlines())
    return [line for line in lines if line and not line.endswith(":")][:num_captions]


class Rephraser(ABC):
    """Descriptions + tags → captions; subclasses implement :meth:`_rephrase` and :meth:`provenance`."""

    def rephrase(self, descriptions: Sequence[str], tags: Sequence[Tags], num_captions: int,
                 seed: int) -> list[list[str]]:
        """``B`` descriptions (``""`` when there is none) and their ``B`` tags → ``B`` lists of at most
        ``num_captions`` captions; the same inputs and ``seed`` give the same captions."""
        if not is_integer(num_captions) or num_captions < 1:
            raise ConfigError(f"num_captions must be a whole number ≥ 1, got {num_captions!r}")
        if not is_integer(seed):
            raise ConfigError(f"seed must be a whole number, got {seed!r}")
        if len(descriptions) != len(tags):
            raise DataError(f"got {len(descriptions)} descriptions for {len(tags)} tag sets; pass one of each per clip")
        for index, (description, clip_tags) in enumerate(zip(descriptions, tags)):
            if not isinstance(description, str):
                raise DataError(f"description {index} is a {type(description).__name__}, not text; pass '' for none")
            if not isinstance(clip_tags, Tags):
                raise DataError(f"tags {index} is a {type(clip_tags).__name__}, not Tags; build it with Tags(...)")
        return self._rephrase(list(descriptions), list(tags), int(num_captions), int(seed)) if descriptions else []

    @abstractmethod
    def _rephrase(self, descriptions: list[str], tags: list[Tags], num_captions: int, seed: int) -> list[list[str]]:
        """:meth:`rephrase` on checked inputs (at least one clip)."""

    @abstractmethod
    def provenance(self) -> dict:
        """What a row records about how its captions were made."""


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Inside: the CPU generator and ``device``'s generator seeded with ``seed``; after: both as they were."""
    if device.type == "cpu":
        with torch.random.fork_rng(devices=[]):
            torch.random.default_generator.manual_seed(seed)
            yield
        return
    accelerator = torch.get_device_module(device.type)
    index = device.index if device.index is not None else accelerator.current_device()
    with torch.random.fork_rng(devices=[index], device_type=device.type), accelerator.device(index):
        torch.random.default_generator.manual_seed(seed)
        accelerator.manual_seed(seed)
        yield


class TransformersRephraser(Rephraser):
    """A local instruct model (``AutoModelForCausalLM``) and its tokenizer's chat template.

    ``temperature`` 0 decodes greedily; above 0 it samples with ``temperature`` and nucleus ``top_p`` (top-k and the
    repetition penalty off, whatever the checkpoint's ``generation_config`` says, so provenance is the whole recipe).
    A batch is one left-padded ``generate`` call; the seed applies to the batch.
    """

    def __init__(self, model: torch.nn.Module, tokenizer, source: str, template: PromptTemplate = REPHRASE_TEMPLATE,
                 max_new_tokens: int = 200, temperature: float = 0.7, top_p: float = 0.9):
        if not getattr(tokenizer, "chat_template", None):
            raise ConfigError(f"the tokenizer of '{source}' has no chat template; use an instruct (chat) model, "
                              f"e.g. {DEFAULT_REPHRASE_MODEL}")
        if not is_integer(max_new_tokens) or max_new_tokens < 1:
            raise ConfigError(f"max_new_tokens must be a whole number ≥ 1, got {max_new_tokens!r}")
        if not is_real(temperature) or temperature < 0:
            raise ConfigError(f"temperature must be ≥ 0 (0: greedy), got {temperature!r}")
        if not is_real(top_p) or not 0 < top_p <= 1:
            raise ConfigError(f"top_p must be in (0, 1], got {top_p!r}")
        if tokenizer.pad_token is None:   # batched generation pads; most chat models pad with their end token
            tokenizer.pad_token = tokenizer.eos_token
        self.model, self.tokenizer, self.source = model.eval(), tokenizer, source
        self.template = check_template(template)
        self.max_new_tokens, self.temperature, self.top_p = int(max_new_tokens), float(temperature), float(top_p)

    @classmethod
    def from_pretrained(cls, id_or_path: str | Path | None = None, device: torch.device | str | None = None,
                        dtype: torch.dtype | str | None = None, template: PromptTemplate = REPHRASE_TEMPLATE,
                        max_new_tokens: int = 200, temperature: float = 0.7,
                        top_p: float = 0.9) -> TransformersRephraser:
        """Load an instruct model from a hub id or a local directory (None: :data:`DEFAULT_REPHRASE_MODEL`).

        Raises a one-line :class:`~discodiff.conditioning.text.ConditionerNotFoundError` naming the id when the model
        is neither a local directory, nor cached, nor reachable.
        """
        from transformers import AutoModelForCausalLM, AutoTokenizer

        id_or_path = str(id_or_path or DEFAULT_REPHRASE_MODEL)
        tokenizer = load_or_raise(AutoTokenizer.from_pretrained, id_or_path, "rephrase tokenizer",
                                  ["tokenizer_config.json"], fix=MODEL_FIX)
        dtype_kwargs = {} if dtype is None else {"dtype": dtype}
        model = load_or_raise(AutoModelForCausalLM.from_pretrained, id_or_path, "rephrase model", ["config.json"],
                              fix=MODEL_FIX, **dtype_kwargs)
        if device is not None:
            model = model.to(device)
        return cls(model, tokenizer, id_or_path, template, max_new_tokens, temperature, top_p)

    @property
    def device(self) -> torch.device:
        return next(self.model.parameters()).device

    @property
    def generation_settings(self) -> dict:
        """The ``generate`` arguments that decide the reply (besides the prompt and the seed)."""
        if self.temperature == 0:
            return {"do_sample": False, "max_new_tokens": self.max_new_tokens}
        return {"do_sample": True, "temperature": self.temperature, "top_p": self.top_p, "top_k": 0,
                "repetition_penalty": 1.0, "max_new_tokens": self.max_new_tokens}

    def provenance(self) -> dict:
        return {"rephraser": "transformers", "model": self.source, **self.template.provenance(),
                "generation": self.generation_settings}

    def prompts(self, descriptions: Sequence[str], tags: Sequence[Tags], num_captions: int) -> list[str]:
        """The chat-templated prompt text of every clip, ending where the assistant's reply begins."""
        return [self.tokenizer.apply_chat_template(rephrase_messages(self.template, description, clip_tags,
                                                                     num_captions),
                                                   tokenize=False, add_generation_prompt=True)
                for description, clip_tags in zip(descriptions, tags)]

    @torch.inference_mode()
    def _rephrase(self, descriptions: list[str], tags: list[Tags], num_captions: int, seed: int) -> list[list[str]]:
        batch = self.tokenizer(self.prompts(descriptions, tags, num_captions), padding=True, padding_side="left",
                               add_special_tokens=False, return_tensors="pt").to(self.device)
        with _seeded(seed, self.device):
            tokens = self.model.generate(**batch, **self.generation_settings,
                                         pad_token_id=self.tokenizer.pad_token_id)
        replies = self.tokenizer.batch_decode(tokens[:, batch["input_ids"].shape[1]:], skip_special_tokens=True)
        return [_parse_reply(reply, num_captions) for reply in replies]


class EndpointRephraser(Rephraser):
    """An OpenAI-compatible chat endpoint: one request per clip, seeded ``seed + clip index``."""

    def __init__(self, endpoint: ChatEndpoint, template: PromptTemplate = REPHRASE_TEMPLATE,
                 temperature: float = 0.7, max_tokens: int = 400):
        if not is_real(temperature) or temperature < 0:
            raise ConfigError(f"temperature must be ≥ 0, got {temperature!r}")
        if not is_integer(max_tokens) or max_tokens < 1:
            raise ConfigError(f"max_tokens must be a whole number ≥ 1, got {max_tokens!r}")
        self.endpoint, self.template = endpoint, check_template(template)
        self.temperature, self.max_tokens = float(temperature), int(max_tokens)

    def provenance(self) -> dict:
        return {"rephraser": "endpoint", **self.endpoint.provenance(), **self.template.provenance(),
                "generation": {"temperature": self.temperature, "max_tokens": self.max_tokens,
                               "seed": "seed + clip index"}}

    def _rephrase(self, descriptions: list[str], tags: list[Tags], num_captions: int, seed: int) -> list[list[str]]:
        captions = []
        for index, (description, clip_tags) in enumerate(zip(descriptions, tags)):
            messages = rephrase_messages(self.template, description, clip_tags, num_captions)
            reply, = self.endpoint.complete(messages, temperature=self.temperature, seed=seed + index,
                                            max_tokens=self.max_tokens)
            captions.append(_parse_reply(reply, num_captions))
        return captions


# --- the offline fallback: sentence patterns ------------------------------------------------------------------

TEMPLATE_REPHRASER_VERSION = 1   # raise when a pattern changes: released rows record it
FORM_NOUNS = frozenset({"anthem", "aria", "ballad", "cantata", "chorale", "fugue", "hymn", "lullaby", "march",
                        "mass", "minuet", "motet", "music", "piece", "prelude", "sonata", "song", "suite", "symphony",
                        "track", "tune", "waltz"})
FIRST_SENTENCE = re.compile(r"^(.+?[.!?])(?:\s|$)", re.DOTALL)


def _join(words: Sequence[str]) -> str:
    """``["a", "b", "c"]`` → ``"a, b and c"``."""
    return words[0] if len(words) == 1 else ", ".join(words[:-1]) + " and " + words[-1]


def _with_article(phrase: str) -> str:
    return f"{'an' if phrase[:1].casefold() in 'aeiou' else 'a'} {phrase}"


def _sentence(text: str) -> str:
    return text[:1].upper() + text[1:] + ("" if text.endswith((".", "!", "?")) else ".")


@dataclass(frozen=True)
class _Facts:
    """The phrases the patterns fill in from one clip's tags (None where the tags say nothing)."""

    genres: tuple[str, ...]
    subject: str                  # "baroque chorale"; "rock piece" when the genre names no musical form
    mood: str | None              # "calm and solemn"
    key: str | None
    tempo: str | None             # "99 bpm"
    instruments: tuple[str, ...]
    moods: tuple[str, ...]

    @classmethod
    def from_tags(cls, tags: Tags) -> _Facts:
        genre = _join(tags.genres) if tags.genres else ""
        names_form = genre.split()[-1:] and genre.split()[-1].casefold() in FORM_NOUNS
        return cls(genres=tags.genres, subject=genre if names_form else f"{genre} piece".strip(),
                   mood=_join(tags.moods) if tags.moods else None, key=tags.key or None,
                   tempo=f"{round(tags.tempo_bpm)} bpm" if tags.tempo_bpm is not None else None,
                   instruments=tags.instruments, moods=tags.moods)

    @property
    def known(self) -> bool:
        return bool(self.genres or self.moods or self.key or self.tempo or self.instruments)

    @property
    def players(self) -> str | None:
        """"choir aahs, viola and bassoon"."""
        return _join(self.instruments) if self.instruments else None

    def described(self, mood: bool = True) -> str:
        """"solemn baroque chorale" (or without the mood)."""
        return f"{self.mood} {self.subject}" if mood and self.mood else self.subject


def _optional(template: str, value: str | None) -> str:
    return template.format(value) if value else ""


def _plain(facts: _Facts) -> str:
    """A baroque chorale in F major at 99 bpm for choir aahs, viola and bassoon."""
    return _sentence(_with_article(facts.subject) + _optional(" in {}", facts.key) + _optional(" at {}", facts.tempo)
                     + _optional(" for {}", facts.players))


def _players_first(facts: _Facts) -> str | None:
    """Choir aahs, viola and bassoon play a solemn baroque chorale in F major at 99 bpm."""
    if not facts.instruments:
        return None
    verb = "plays" if len(facts.instruments) == 1 else "play"
    return _sentence(f"{facts.players} {verb} {_with_article(facts.described())}"
                     + _optional(" in {}", facts.key) + _optional(" at {}", facts.tempo))


def _clauses(facts: _Facts) -> str:
    """Solemn baroque chorale in F major, 99 bpm, featuring choir aahs, viola and bassoon."""
    clauses = [facts.described() + _optional(" in {}", facts.key), facts.tempo,
               _optional("featuring {}", facts.players)]
    return _sentence(", ".join(clause for clause in clauses if clause))


def _played_by(facts: _Facts) -> str | None:
    """A solemn baroque chorale at 99 bpm in F major, played by choir aahs, viola and bassoon."""
    if not facts.instruments:
        return None
    return _sentence(_with_article(facts.described()) + _optional(" at {}", facts.tempo)
                     + _optional(" in {}", facts.key) + f", played by {facts.players}")


def _with_instruments(facts: _Facts) -> str | None:
    """A baroque chorale with choir aahs, viola and bassoon, in F major, at 99 bpm."""
    if not facts.instruments:
        return None
    return _sentence(_with_article(facts.described(mood=False)) + f" with {facts.players}"
                     + _optional(", in {}", facts.key) + _optional(", at {}", facts.tempo))


def _tag_list(facts: _Facts) -> str:
    """baroque chorale, f major, 99 bpm, solemn, choir aahs, viola, bassoon"""
    words = [*facts.genres, *(part for part in (facts.key, facts.tempo) if part), *facts.moods, *facts.instruments]
    return ", ".join(words).casefold()


PATTERNS = (_plain, _players_first, _clauses, _played_by, _with_instruments, _tag_list)


def first_sentence(text: str) -> str:
    """The first sentence of ``text`` (all of it when it has no sentence end), whitespace collapsed."""
    text = " ".join(text.split())
    match = FIRST_SENTENCE.match(text)
    return match.group(1) if match else text


class TemplateRephraser(Rephraser):
    """The offline fallback: up to ``num_captions`` captions from :data:`PATTERNS` filled with the tags.

    When a clip's description is non-empty, its first sentence comes first, unless it has a problem against the
    tags (:func:`~discodiff.captions.filters.caption_problem`: it contradicts them, runs too long, …). The patterns
    and their order are drawn by ``numpy.random.default_rng(seed + clip index)``; a clip gives at most
    ``len(PATTERNS) + 1`` distinct captions, and none when neither tags nor description say anything.
    """

    def provenance(self) -> dict:
        return {"rephraser": "template", "template": f"caption-patterns-v{TEMPLATE_REPHRASER_VERSION}",
                "note": "no rephrase model or endpoint given: the tags filled into fixed sentence patterns"}

    def _rephrase(self, descriptions: list[str], tags: list[Tags], num_captions: int, seed: int) -> list[list[str]]:
        return [self.captions(description, clip_tags, num_captions, np.random.default_rng(seed + index))
                for index, (description, clip_tags) in enumerate(zip(descriptions, tags))]

    @staticmethod
    def captions(description: str, tags: Tags, num_captions: int, rng: np.random.Generator) -> list[str]:
        """One clip's captions, the patterns drawn by ``rng``."""
        candidates = []
        sentence = first_sentence(description)
        if sentence and caption_problem(sentence, tags) is None:
            candidates.append(sentence)
        facts = _Facts.from_tags(tags)
        if facts.known:
            candidates += [PATTERNS[index](facts) for index in rng.permutation(len(PATTERNS))]
        distinct = list(dict.fromkeys(caption for caption in candidates if caption))
        return distinct[:num_captions]


def make_rephraser(model: str | Path | None = None, endpoint: str | None = None, endpoint_model: str | None = None,
                   *, api_key: str | None = None, device: torch.device | str | None = None,
                   dtype: torch.dtype | str | None = None, template: PromptTemplate = REPHRASE_TEMPLATE,
                   temperature: float = 0.7) -> Rephraser:
    """A local model (id or path), an endpoint (URL + ``endpoint_model``), or :class:`TemplateRephraser` when
    neither is given."""
    if model is not None and endpoint is not None:
        raise ConfigError(f"got both a rephrase model ({model}) and an endpoint ({endpoint}); pass one of them")
    if endpoint is not None:
        return EndpointRephraser(ChatEndpoint(endpoint, endpoint_model, api_key=api_key), template, temperature)
    if endpoint_model is not None:
        raise ConfigError(f"endpoint_model {endpoint_model!r} needs an endpoint URL (e.g. http://127.0.0.1:8000/v1)")
    if model is not None:
        return TransformersRephraser.from_pretrained(model, device, dtype, template, temperature=temperature)
    return TemplateRephraser()
