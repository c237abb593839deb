"""Drop bad captions, counting every drop by reason.

:func:`caption_problem` gives the first problem of one caption, as a reason code of :data:`REASONS`, or ``None``:

- ``empty``: no word characters.
- ``too_long``: more than :data:`MAX_CAPTION_WORDS` words (the rephrase template asks for at most 40; the filter
  allows some slack, and text encoders such as CLAP stop at 77 tokens).
- ``prompt_leak``: the caption repeats a :data:`LEAK_SHINGLE_WORDS`-word run of the template's own text (never
  counting runs that span a ``{field}`` slot, which the caller filled with tags or a description), or talks about
  the task instead of the music (:data:`META_TALK`: "here are", "as an AI", "caption 1:", "the tags say", …).
- ``contradicts_instruments``: the caption names an instrument that the tags exclude, or one that the tags do not
  list when they list every instrument (``tags.instruments_complete``); a negated mention ("no vocals",
  "without drums") contradicts only an instrument the tags list.
- ``contradicts_key``: the caption names a key other than ``tags.key`` (enharmonic spellings are the same key).
- ``contradicts_tempo``: the caption states a BPM figure (or range) more than :data:`TEMPO_TOLERANCE` of
  ``tags.tempo_bpm`` away from it.
- ``duplicate``: the same caption as an earlier one once case, whitespace and punctuation are ignored
  (:func:`filter_captions` only).

Instrument names come from :data:`INSTRUMENTS`: the General MIDI names our rendered corpus uses
(``discodiff.corpus.synth.GM_PROGRAM_NAMES``: "choir aahs", "french horn", "string ensemble", …), other General MIDI
instruments, and common words (guitar, drums, vocals, singer, voice, strings, …). Matching is case-insensitive, on
word boundaries, accepts a plural ("violins") and a hyphen between words ("french-horn"), and reads the longest name
at each position: a word inside a longer name is no separate mention ("string ensemble" names one instrument, not
"strings"; "english horn" is not a "horn"). A name is consistent with a tag when they are the same instrument or one
is a broader term of the other ("strings" fits a tagged "cello"; "choir" fits "choir aahs"; "horn" fits "french
horn"), so captions may use a general word where the tags are specific. "bass" alone is no instrument here (a
chorale's bass is a voice part; "bass line" is a role): only "double bass", "bass guitar", … are.

Keys are read as ``<letter><accidental?> major|minor`` ("F major", "F# minor", "B-flat major", "Bb major"); "a
major"/"a minor" followed by another word is the article, not A, when the "a" is lowercase or starts a sentence
("a minor key", "A major work for organ"); "in A minor with strings" and "a minor, 86 bpm" are A minor.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache

from .tags import Tags
from .templates import PromptTemplate

REASONS = ("empty", "too_long", "prompt_leak", "contradicts_instruments", "contradicts_key", "contradicts_tempo",
           "duplicate")
MAX_CAPTION_WORDS = 60
LEAK_SHINGLE_WORDS = 6
TEMPO_TOLERANCE = 0.10   # relative: a stated 90 bpm contradicts a tagged 101 bpm, 91 does not

# canonical name: (other names for it, broader terms it belongs to); broader terms are entries too
INSTRUMENTS: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    # keyboards
    "keyboard": ((), ()),
    "piano": (("acoustic piano", "grand piano", "acoustic grand piano", "upright piano", "pianoforte"),
              ("keyboard",)),
    "electric piano": (("e-piano", "rhodes"), ("keyboard",)),
    "harpsichord": ((), ("keyboard",)),
    "clavinet": ((), ("keyboard",)),
    "celesta": ((), ("keyboard",)),
    "organ": (("pipe organ",), ("keyboard",)),
    "church organ": ((), ("organ", "keyboard")),
    "reed organ": (("harmonium",), ("organ", "keyboard")),
    "hammond organ": (("drawbar organ", "rock organ"), ("organ", "keyboard")),
    "accordion": ((), ()),
    "harmonica": ((), ()),
    "synthesizer": (("synth", "synth pad", "synth lead", "synth strings"), ("keyboard",)),
    # tuned percussion
    "glockenspiel": ((), ("percussion",)),
    "music box": ((), ()),
    "vibraphone": ((), ("percussion",)),
    "marimba": ((), ("percussion",)),
    "xylophone": ((), ("percussion",)),
    "tubular bells": (("chimes",), ("percussion",)),
    "dulcimer": ((), ()),
    "timpani": (("kettle drum", "kettledrum"), ("percussion",)),
    "steel drums": (("steel drum", "steel pan"), ("percussion",)),
    # drums and percussion
    "percussion": ((), ()),
    "drums": (("drum", "drum kit", "drumkit", "drum machine", "drum set", "drumset", "snare drum", "kick drum"),
              ("percussion",)),
    "cymbals": (("cymbal", "hi-hat", "hihat"), ("percussion", "drums")),
    "tambourine": ((), ("percussion",)),
    # guitars and basses
    "guitar": ((), ()),
    "acoustic guitar": (("nylon guitar", "classical guitar", "steel-string guitar"), ("guitar",)),
    "electric guitar": (("distortion guitar", "overdriven guitar", "jazz guitar", "clean guitar"), ("guitar",)),
    "bass guitar": (("electric bass", "fretless bass", "slap bass", "synth bass"), ()),
    "acoustic bass": (("upright bass",), ()),
    "banjo": ((), ()),
    "mandolin": ((), ()),
    "ukulele": ((), ()),
    "sitar": ((), ()),
    "koto": ((), ()),
    "shamisen": ((), ()),
    "harp": (("orchestral harp", "concert harp"), ()),
    # strings
    "strings": (("string section", "string orchestra"), ()),
    "string ensemble": ((), ("strings",)),
    "violin": (("fiddle",), ("strings",)),
    "viola": ((), ("strings",)),
    "cello": (("violoncello", "celli"), ("strings",)),
    "contrabass": (("double bass", "string bass"), ("strings",)),
    # voices
    "vocals": (("vocal", "voice", "vocalist", "singer", "singing voice", "lead vocals", "backing vocals"), ()),
    "choir": ((), ("vocals",)),
    "choir aahs": ((), ("choir", "vocals")),
    "voice oohs": ((), ("choir", "vocals")),
    "synth voice": (("synth choir",), ("vocals", "synthesizer")),
    # brass
    "brass": (("brass section",), ()),
    "horn": ((), ("brass",)),
    "french horn": ((), ("horn", "brass")),
    "trumpet": (("muted trumpet", "cornet"), ("brass",)),
    "trombone": ((), ("brass",)),
    "tuba": ((), ("brass",)),
    # woodwinds
    "woodwinds": (("woodwind", "woodwind section"), ()),
    "flute": ((), ("woodwinds",)),
    "piccolo": ((), ("woodwinds",)),
    "recorder": ((), ("woodwinds",)),
    "pan flute": (("pan pipes", "panpipes"), ("woodwinds",)),
    "oboe": ((), ("woodwinds",)),
    "english horn": (("cor anglais",), ("woodwinds",)),
    "clarinet": ((), ("woodwinds",)),
    "bassoon": ((), ("woodwinds",)),
    "saxophone": (("sax", "alto sax", "tenor sax", "soprano sax", "baritone sax", "alto saxophone",
                   "tenor saxophone", "soprano saxophone", "baritone saxophone"), ("woodwinds",)),
    "bagpipe": (("bagpipes",), ()),
}

# music-theory phrases that name no instrument, read before the names inside them ("voice leading")
NOT_INSTRUMENTS = ("voice leading", "voice part", "inner voice", "outer voice", "upper voice", "lower voice",
                   "three voice", "four voice", "five voice")

# words that talk about the task, not the music (case-insensitive)
META_TALK = tuple(re.compile(pattern, re.IGNORECASE) for pattern in (
    r"\bhere (?:are|is)\b",
    r"\bas an ai\b",
    r"\blanguage model\b",
    r"\bcaptions?\b",
    r"^(?:sure|certainly|of course|okay|ok)\b",
    r"\bi (?:can|cannot|can't|will|would|have|hope|am)\b",
    r"\bi'(?:m|ll|ve|d)\b",
    r"\b(?:the|these|given|provided|your) (?:tags|description)\b",
    r"\b(?:tags|description)\s*:",
    r"\{\w+\}",   # an unfilled template slot
))
NEGATION = re.compile(r"\b(?:no|not(?!\s+(?:only|just|merely))|nor|without|never|lacks?|lacking|free of|absent|"
                      r"devoid of)\b(?:\s+\S+){0,3}\s*$", re.IGNORECASE)   # up to 3 words before the name
CLAUSE_BREAK = re.compile(r"[,.;:!?()\u2013\u2014]")   # a negation does not reach past these


def _name_pattern(name: str) -> str:
    """``name`` as a regex: words joined by spaces or hyphens, the last one optionally plural."""
    words = [re.escape(word) for word in re.split(r"[\s-]+", name)]
    return r"[\s-]+".join(words) + r"(?:s|es)?"


def _vocabulary() -> tuple[dict[str, str | None], dict[str, frozenset[str]], re.Pattern]:
    """(surface name → canonical name, or None for :data:`NOT_INSTRUMENTS`; canonical name → itself and all its
    broader terms; the mention regex, longest names first)."""
    canonical: dict[str, str | None] = {name: name for name in INSTRUMENTS}
    canonical.update({alias: name for name, (aliases, _) in INSTRUMENTS.items() for alias in aliases})
    canonical.update({phrase: None for phrase in NOT_INSTRUMENTS})

    def lineage(name: str) -> frozenset[str]:
        return frozenset({name}).union(*(lineage(broader) for broader in INSTRUMENTS[name][1]))

    lineages = {name: lineage(name) for name in INSTRUMENTS}
    alternatives = "|".join(_name_pattern(name) for name in sorted(canonical, key=len, reverse=True))
    return canonical, lineages, re.compile(rf"\b(?:{alternatives})\b", re.IGNORECASE)


CANONICAL_NAMES, LINEAGES, INSTRUMENT_MENTION = _vocabulary()

KEY_MENTION = re.compile(
    r"\b(?P<letter>[A-G])(?P<accidental>#|\u266f|\u266d|b|-(?=\s)|[\s-]?(?:sharp|flat))?[\s-]+(?P<mode>major|minor)\b",
    re.IGNORECASE)
SENTENCE_START = re.compile(r"(?:^|[.!?]\s+)$")
WORD_FOLLOWS = re.compile(r"\s*[\w-]")   # "a minor key", "A major work": a word follows the mode
PITCH_CLASSES = {"c": 0, "d": 2, "e": 4, "f": 5, "g": 7, "a": 9, "b": 11}
SHARPS, FLATS = ("#", "\u266f", "sharp"), ("b", "\u266d", "-", "flat")
TEMPO_MENTION = re.compile(
    r"(?<![\d.])(?P<low>\d+(?:\.\d+)?)(?:\s*(?:-|\u2013|\u2014|to)\s*(?P<high>\d+(?:\.\d+)?))?"
    r"\s*-?\s*(?:bpm|beats per minute|beats a minute)\b", re.IGNORECASE)


@dataclass(frozen=True)
class InstrumentMention:
    """An instrument named in a caption: its canonical name and whether the caption negates it ("no vocals")."""

    name: str
    negated: bool


def _canonical(surface: str) -> str | None:
    """The canonical name of a matched surface form, singular or plural ("violins" → "violin")."""
    surface = re.sub(r"[\s-]+", " ", surface.casefold())
    for candidate in (surface, surface.removesuffix("es"), surface.removesuffix("s")):
        if candidate in CANONICAL_NAMES:
            return CANONICAL_NAMES[candidate]
    raise AssertionError(f"{surface!r} matched the instrument regex but is not in the vocabulary")


def instrument_mentions(text: str) -> list[InstrumentMention]:
    """The instruments ``text`` names, in order, reading the longest name at each position."""
    mentions = []
    for match in INSTRUMENT_MENTION.finditer(text):
        name = _canonical(match.group(0))
        if name is not None:
            clause = CLAUSE_BREAK.split(text[:match.start()])[-1]
            mentions.append(InstrumentMention(name, bool(NEGATION.search(clause))))
    return mentions


def _tagged(names: Sequence[str]) -> set[str]:
    """Canonical names of tagged instruments (a tag outside the vocabulary also stays as written, casefolded)."""
    known = {mention.name for name in names for mention in instrument_mentions(name)}
    return known | {name.casefold().strip() for name in names}


def _is_kind_of(name: str, broader: str) -> bool:
    """Whether ``name`` is ``broader`` or a kind of it ("choir aahs" is a kind of "vocals")."""
    return broader in LINEAGES.get(name, {name})


def contradicts_instruments(caption: str, tags: Tags) -> bool:
    """Whether ``caption`` names an excluded instrument (or a kind of one), an instrument the tags do not list when
    they list every one, or negates a tagged instrument ("no strings" with a tagged cello)."""
    present, excluded = _tagged(tags.instruments), _tagged(tags.excluded_instruments)
    for mention in instrument_mentions(caption):
        if mention.negated:
            if any(_is_kind_of(name, mention.name) for name in present):
                return True
        elif any(_is_kind_of(mention.name, name) for name in excluded):
            return True
        elif tags.instruments_complete and not any(
                _is_kind_of(mention.name, name) or _is_kind_of(name, mention.name) for name in present):
            return True
    return False


def _is_article(match: re.Match, text: str) -> bool:
    """Whether a key-like match is the article: "a minor key", "A major work" at a sentence start."""
    letter = match.group("letter")
    starts_sentence = letter == "A" and SENTENCE_START.search(text[:match.start()])
    return (letter == "a" or bool(starts_sentence)) and not match.group("accidental") \
        and bool(WORD_FOLLOWS.match(text, match.end()))


def key_mentions(text: str) -> list[tuple[int, str]]:
    """Every key ``text`` names, as (pitch class 0–11, mode): "F# minor" → (6, "minor")."""
    keys = []
    for match in KEY_MENTION.finditer(text):
        if _is_article(match, text):
            continue
        accidental = (match.group("accidental") or "").strip().casefold()
        shift = 1 if accidental.endswith(SHARPS) else -1 if accidental.endswith(FLATS) else 0
        keys.append(((PITCH_CLASSES[match.group("letter").casefold()] + shift) % 12, match.group("mode").casefold()))
    return keys


def contradicts_key(caption: str, tags: Tags) -> bool:
    """Whether ``caption`` names a key other than ``tags.key`` (False when the tags have no readable key)."""
    tagged = key_mentions(tags.key.strip()) if tags.key else []
    return bool(tagged) and any(key != tagged[0] for key in key_mentions(caption))


def contradicts_tempo(caption: str, tags: Tags, tolerance: float = TEMPO_TOLERANCE) -> bool:
    """Whether a BPM figure or range in ``caption`` lies more than ``tolerance`` (relative) from
    ``tags.tempo_bpm``."""
    if tags.tempo_bpm is None:
        return False
    for match in TEMPO_MENTION.finditer(caption):
        low, high = sorted((float(match.group("low")), float(match.group("high") or match.group("low"))))
        nearest = min(max(tags.tempo_bpm, low), high)
        if abs(nearest - tags.tempo_bpm) > tolerance * tags.tempo_bpm:
            return True
    return False


def _words(text: str) -> list[str]:
    return re.findall(r"[\w']+", unicodedata.normalize("NFKC", text).casefold())


def _shingles(words: Sequence[str], size: int = LEAK_SHINGLE_WORDS) -> Iterator[tuple[str, ...]]:
    return (tuple(words[start:start + size]) for start in range(len(words) - size + 1))


@lru_cache(maxsize=16)
def template_shingles(template: PromptTemplate) -> frozenset[tuple[str, ...]]:
    """Every run of :data:`LEAK_SHINGLE_WORDS` words of the template's system and user text that lies between its
    ``{field}`` slots."""
    pieces = [literal for text in (template.system, template.user)
              for literal, _, _, _ in string.Formatter().parse(text)]
    return frozenset(shingle for piece in pieces for shingle in _shingles(_words(piece)))


def leaks_prompt(caption: str, template: PromptTemplate | None = None) -> bool:
    """Whether ``caption`` talks about the task (:data:`META_TALK`) or repeats a run of ``template``'s words."""
    if any(pattern.search(caption.strip()) for pattern in META_TALK):
        return True
    return template is not None and not template_shingles(template).isdisjoint(_shingles(_words(caption)))


def caption_problem(caption: str, tags: Tags, template: PromptTemplate | None = None) -> str | None:
    """The first problem of ``caption`` against ``tags`` as a reason code of :data:`REASONS`, or None.

    ``template`` is the prompt template that produced the caption (None: only meta-talk counts as a prompt leak).
    """
    words = _words(caption)
    if not words:
        return "empty"
    if len(words) > MAX_CAPTION_WORDS:
        return "too_long"
    if leaks_prompt(caption, template):
        return "prompt_leak"
    if contradicts_instruments(caption, tags):
        return "contradicts_instruments"
    if contradicts_key(caption, tags):
        return "contradicts_key"
    if contradicts_tempo(caption, tags):
        return "contradicts_tempo"
    return None


def duplicate_key(caption: str) -> str:
    """What two captions share when one is a near duplicate of the other: casefolded words, punctuation dropped."""
    return " ".join(_words(caption))


def filter_captions(captions: Sequence[str], tags: Tags,
                    template: PromptTemplate | None = None) -> tuple[list[str], Counter]:
    """``(kept, dropped)``: the captions without a problem in their order, and the drop count per reason."""
    kept, dropped, seen = [], Counter(), set()
    for caption in captions:
        problem = caption_problem(caption, tags, template)
        if problem is None and duplicate_key(caption) in seen:
            problem = "duplicate"
        if problem is None:
            kept.append(caption)
            seen.add(duplicate_key(caption))
        else:
            dropped[problem] += 1
    return kept, dropped
