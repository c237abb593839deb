"""Caption filters of discodiff.captions.filters: every drop reason fires on a crafted caption and not on a clean
one, instrument names (General MIDI, plurals, overlaps, broader terms, negation), keys, tempi, duplicates, and the
rendered corpus' own captions passing untouched."""

from __future__ import annotations

from collections import Counter

import pytest

from discodiff.captions.filters import (
    MAX_CAPTION_WORDS,
    REASONS,
    caption_problem,
    filter_captions,
    instrument_mentions,
    key_mentions,
)
from discodiff.captions.rephrase import REPHRASE_TEMPLATE
from discodiff.captions.tags import Tags
from discodiff.corpus.synth import GM_PROGRAM_NAMES

CHORALE = Tags(genres=("baroque chorale",), instruments=("choir aahs", "viola", "clarinet", "bassoon"),
               tempo_bpm=99, key="F major", instruments_complete=True)
INSTRUMENTAL = Tags(genres=("jazz",), instruments=("piano", "contrabass"), excluded_instruments=("vocals",),
                    tempo_bpm=120, key="Bb major")
CLEAN = "A brisk Baroque chorale in F major at 99 bpm: choir aahs over viola, clarinet and bassoon."

# rows copied from /work/data/bach/seed0/captions.jsonl, tags from each track's metadata.json
CORPUS_ROWS = [
    (Tags(genres=("baroque chorale",), instruments=("voice oohs", "viola", "string ensemble", "french horn"),
          tempo_bpm=64, key="D minor", instruments_complete=True),
     ["Baroque chorale in D minor, 64 BPM, 4/4: voice oohs tune over string ensemble, viola and french horn.",
      "A stately Baroque chorale in D minor for voice oohs with string ensemble, viola and french horn "
      "accompaniment.",
      "Stately Baroque chorale in 4/4 time in D minor at about 64 BPM; string ensemble, viola and french horn "
      "accompany a voice oohs tune.",
      "Voice oohs carry the tune of a Baroque chorale in D minor while string ensemble, viola and french horn play "
      "the lower parts at 64 BPM.",
      "baroque chorale, d minor, 64 bpm, stately, 4/4, voice oohs, viola, string ensemble, french horn"]),
    (Tags(genres=("baroque chorale",), instruments=("choir aahs", "violin", "viola", "bassoon"), tempo_bpm=73,
          key="F# minor", instruments_complete=True),
     ["Baroque chorale in F# minor, 73 BPM, 3/4: choir aahs melody over bassoon, viola and violin.",
      "A walking-pace Baroque chorale in F# minor for choir aahs with bassoon, viola and violin accompaniment.",
      "Walking-pace Baroque chorale in 3/4 time in F# minor at about 73 BPM; bassoon, viola and violin accompany a "
      "choir aahs melody.",
      "Choir aahs carry the melody of a Baroque chorale in F# minor while bassoon, viola and violin play the lower "
      "parts at 73 BPM.",
      "baroque chorale, f# minor, 73 bpm, walking-pace, 3/4, choir aahs, violin, viola, bassoon"]),
    (Tags(genres=("baroque chorale",), instruments=("choir aahs", "clarinet", "harpsichord", "church organ"),
          tempo_bpm=86, key="A minor", instruments_complete=True),
     ["A flowing Baroque chorale in A minor for choir aahs with harpsichord, church organ and clarinet "
      "accompaniment.",
      "baroque chorale, a minor, 86 bpm, flowing, 4/4, choir aahs, clarinet, harpsichord, church organ"]),
]


def test_a_clean_caption_has_no_problem():
    assert caption_problem(CLEAN, CHORALE, REPHRASE_TEMPLATE) is None


@pytest.mark.parametrize("caption, reason", [
    ("", "empty"),
    ("  ... \u2014 !", "empty"),
    (" ".join(["chorale"] * (MAX_CAPTION_WORDS + 1)), "too_long"),
    ("Here are five captions of the music.", "prompt_leak"),
    ("As an AI, I find this chorale calm.", "prompt_leak"),
    ("Caption 1: a chorale in F major.", "prompt_leak"),
    ("The tags say it is a chorale in F major.", "prompt_leak"),
    ("Sure! A chorale in F major.", "prompt_leak"),
    ("Four chorale lines, each worded differently from the others.", "prompt_leak"),   # 6 words of the template
    ("A chorale in F major for choir aahs and piano.", "contradicts_instruments"),   # not tagged, tags complete
    ("A chorale in F major with drums.", "contradicts_instruments"),
    ("Violins and a choir sing in F major.", "contradicts_instruments"),   # plural of an untagged instrument
    ("A chorale with no bassoon, in F major.", "contradicts_instruments"),   # negates a tagged one
    ("A chorale in D minor for choir aahs and viola.", "contradicts_key"),
    ("A chorale in F minor.", "contradicts_key"),   # same tonic, other mode
    ("A chorale at 120 bpm.", "contradicts_tempo"),
    ("A chorale at 80 beats per minute.", "contradicts_tempo"),
])
def test_every_reason_fires_on_a_crafted_caption(caption, reason):
    assert reason in REASONS
    assert caption_problem(caption, CHORALE, REPHRASE_TEMPLATE) == reason


def test_template_shingles_count_only_with_the_template_and_not_across_slots():
    leaked = "Four chorale lines, each worded differently from the others."
    assert caption_problem(leaked, CHORALE, None) is None   # no template: only meta-talk counts
    # "Description: … Tags: …" slots filled with the clip's own text are no leak
    assert caption_problem("Baroque chorale in F major, choir aahs, viola, bassoon.", CHORALE,
                           REPHRASE_TEMPLATE) is None


def test_excluded_instruments_and_their_kinds_contradict():
    assert caption_problem("Smooth jazz piano with a female singer.", INSTRUMENTAL) == "contradicts_instruments"
    assert caption_problem("Jazz piano trio with a choir.", INSTRUMENTAL) == "contradicts_instruments"
    # tags not complete: an untagged instrument is fine, a negated excluded one too
    assert caption_problem("Jazz for piano, double bass and drums, no vocals.", INSTRUMENTAL) is None
    assert caption_problem("An instrumental jazz tune without any vocals at 120 bpm in Bb major.", INSTRUMENTAL) is None


@pytest.mark.parametrize("caption", [
    "A chorale for choir and strings in F major.",          # broader terms of tagged instruments
    "Woodwinds and voices in a slow chorale.",
    "Choir aahs over violas and bassoons.",                   # plurals of tagged instruments
    "A chorale without piano or drums.",                      # negated untagged instruments
    "Careful four-voice texture and smooth voice leading.",   # music-theory words, no instruments
    "A chorale heard not only in the viola but in the bassoon.",
    "A chorale in a minor key with a major feel.",            # the article, not A minor / A major
    "A chorale at 95-105 BPM.",                               # a range around the tagged tempo
    "A chorale at 90 bpm.",                                   # within 10% of 99
])
def test_consistent_captions_pass(caption):
    assert caption_problem(caption, CHORALE, REPHRASE_TEMPLATE) is None


def test_instrument_names_read_longest_first_with_plurals_and_hyphens():
    names = [mention.name for mention in instrument_mentions(
        "String ensemble and french-horns over an English horn, a harpsichord, harps and celli.")]
    assert names == ["string ensemble", "french horn", "english horn", "harpsichord", "harp", "cello"]
    assert [mention.negated for mention in instrument_mentions("drums, no vocals or guitar; bass guitar")] == \
        [False, True, True, False]
    assert instrument_mentions("the bass line and the bass voice part") == []


def test_every_instrument_the_corpus_renders_is_in_the_vocabulary():
    for name in GM_PROGRAM_NAMES.values():
        assert [mention.name for mention in instrument_mentions(name)] == [name]
        assert [mention.name for mention in instrument_mentions(name.upper())] == [name]


def test_overlapping_names_are_distinct_instruments():
    strings = Tags(instruments=("string ensemble",), instruments_complete=True)
    assert caption_problem("A lush string ensemble.", strings) is None
    assert caption_problem("Lush strings.", strings) is None   # the broader term of the tagged ensemble
    assert caption_problem("A lush string ensemble with violin.", strings) == "contradicts_instruments"
    horn = Tags(instruments=("french horn",), instruments_complete=True)
    assert caption_problem("A mellow horn call.", horn) is None
    assert caption_problem("A mellow english horn.", horn) == "contradicts_instruments"


@pytest.mark.parametrize("text, keys", [
    ("F major", [(5, "major")]),
    ("in F# minor", [(6, "minor")]),
    ("in F sharp minor", [(6, "minor")]),
    ("B-flat major and Bb major and B\u266d major", [(10, "major")] * 3),
    ("baroque chorale, a minor, 86 bpm", [(9, "minor")]),
    ("A minor-key hymn", []),
    ("set in A minor with strings", [(9, "minor")]),
    ("of major importance", []),
])
def test_key_mentions(text, keys):
    assert key_mentions(text) == keys


def test_enharmonic_keys_agree():
    assert caption_problem("A hymn in Gb major.", Tags(key="F# major")) is None
    assert caption_problem("A hymn in A# major.", Tags(key="Bb major")) is None
    assert caption_problem("A hymn in B major.", Tags(key="Bb major")) == "contradicts_key"


def test_untagged_facts_contradict_nothing():
    bare = Tags()
    assert caption_problem("Rock at 140 bpm in E minor with drums and a singer.", bare) is None


def test_filter_captions_keeps_order_and_counts_drops_by_reason():
    captions = [CLEAN, "  a brisk BAROQUE chorale in F major at 99 bpm:  choir aahs over viola, clarinet and bassoon ",
                "", "A chorale in D minor.", "Choir aahs and bassoon at 99 bpm.", "A chorale at 150 bpm.",
                "Here are the captions:", "choir aahs and bassoon at 99 bpm"]
    kept, dropped = filter_captions(captions, CHORALE, REPHRASE_TEMPLATE)
    assert kept == [CLEAN, "Choir aahs and bassoon at 99 bpm."]
    assert dropped == Counter({"duplicate": 2, "empty": 1, "contradicts_key": 1, "contradicts_tempo": 1,
                               "prompt_leak": 1})


def test_the_corpus_captions_pass_the_filter():
    for tags, captions in CORPUS_ROWS:
        kept, dropped = filter_captions(captions, tags, REPHRASE_TEMPLATE)
        assert kept == captions and not dropped
