"""Tag summaries (discodiff.captions.tags): metadata files of every supported kind read to the same rows, the
built-in mappings on handwritten fixtures in the formats of our rendered corpus, MTG-Jamendo and FMA, exact summary
strings, key spelling, Krumhansl–Schmuckler keys and beat-tracked tempi on synthetic signals and on rendered Bach,
and ``complete_tags`` filling only what the metadata lacks."""

from __future__ import annotations

import json

import numpy as np
import pytest
import soundfile as sf

from discodiff.captions.tags import (
    MAPPINGS,
    MAJOR_PROFILE,
    TagMapping,
    Tags,
    complete_tags,
    estimate_key,
    estimate_tempo,
    fma_mapping,
    key_profiles,
    normalize_key,
    parse_tempo,
    read_metadata,
    same_key,
    tags_from_metadata,
    tempo_matches,
)
from discodiff.errors import AudioError, ConfigError, DataError

SAMPLE_RATE = 22050

# the metadata.json that discodiff.corpus.render writes beside each track's stems (trimmed)
RENDERED_ROW = {
    "track_id": "bach-bwv1.6", "piece": "bach/bwv1.6", "seed": 0, "tempo_bpm": 99, "key": "F major",
    "time_signature": "4/4",
    "vocals": {"part": "Soprano", "chosen_by": "name", "program": 52, "instrument": "choir aahs"},
    "accompaniment": [{"part": "Horn 2", "program": 41, "instrument": "viola"},
                      {"part": "Alto", "program": 71, "instrument": "clarinet"},
                      {"part": "Tenor", "program": 70, "instrument": "bassoon"},
                      {"part": "Bass", "program": 70, "instrument": "bassoon"}],
}
RENDERED_SUMMARY = ("genre: baroque chorale; instruments: choir aahs, viola, clarinet, bassoon; tempo: 99 bpm; "
                    "key: F major")

# MTG-Jamendo's autotagging.tsv: tab-separated, the TAGS column continues over every remaining field
JAMENDO_TSV = (
    "TRACK_ID\tARTIST_ID\tALBUM_ID\tPATH\tDURATION\tTAGS\n"
    "track_0000214\tartist_000014\talbum_000031\t14/214.mp3\t124.6\tgenre---punkrock\n"
    "track_0000215\tartist_000014\talbum_000031\t15/215.mp3\t167.0\tgenre---metal\tinstrument---guitar\t"
    "mood/theme---energetic\n"
    "track_0001033\tartist_000154\talbum_000206\t33/1033.mp3\t231.1\tinstrument---piano\tmood/theme---happy\t"
    "genre---easylistening\tinstrument---voice\tmood/theme---christmas\n"
)

# FMA's tracks.csv (fma_metadata.zip; pandas, two column levels and a named index), a few of its 52 columns
FMA_TRACKS_CSV = (
    ",album,artist,set,track,track,track,track\n"
    ",title,name,split,genre_top,genres,genres_all,title\n"
    "track_id,,,,,,,\n"
    "2,AWOL - A Way Of Life,AWOL,training,Hip-Hop,[21],[21],Food\n"
    "140,Constant Hitmaker,Alec K. Redfearn & the Eyesores,training,Folk,[17],[17],Queen Of The Wires\n"
    '1482,"Live at WFMU, 2008",Kill The Vultures,validation,,"[76, 103]","[2, 76, 103]","Brain, Stew"\n'
)
FMA_GENRES_CSV = (
    "genre_id,#tracks,parent,title,top_level\n"
    "2,5271,0,International,2\n17,12706,0,Folk,17\n21,8389,0,Hip-Hop,21\n"
    "76,1250,2,Experimental Pop,2\n103,896,17,Singer-Songwriter,17\n"
)


def write(path, text):
    path.write_text(text, encoding="utf-8")
    return path


def harmonic_tone(frequency, seconds, sample_rate=SAMPLE_RATE, partials=6):
    """A tone with ``partials`` harmonics of amplitude 1/h, and a short fade in and out."""
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    tone = sum(np.sin(2 * np.pi * frequency * h * t) / h for h in range(1, partials + 1)
               if frequency * h < sample_rate / 2)
    fade = np.minimum(1.0, np.minimum(t, t[::-1]) / 0.02)
    return tone * fade


def cadence(tonic_midi, minor, seconds_per_chord=1.0):
    """I–IV–V–I (i–iv–V–i in minor) in close position over the root an octave down, ``[T]`` float32."""
    third = 3 if minor else 4
    chords = [(0, third, 7), (5, 5 + third, 12), (7, 11, 14), (0, third, 7)]  # V is major in both modes
    hz = lambda midi: 440.0 * 2 ** ((midi - 69) / 12)
    audio = np.concatenate([sum(harmonic_tone(hz(tonic_midi + step), seconds_per_chord) for step in chord)
                            + harmonic_tone(hz(tonic_midi + chord[0] - 12), seconds_per_chord) for chord in chords * 2])
    return (0.2 * audio / np.abs(audio).max()).astype(np.float32)


def click_track(bpm, seconds, sample_rate=SAMPLE_RATE):
    """Decaying 1 kHz clicks every beat at ``bpm``, ``[T]`` float32."""
    audio = np.zeros(int(seconds * sample_rate), np.float32)
    click = (np.sin(2 * np.pi * 1000 * np.arange(441) / sample_rate) * np.exp(-np.arange(441) / 60)).astype(np.float32)
    for start in np.arange(0, seconds - 0.05, 60.0 / bpm):
        index = int(start * sample_rate)
        audio[index:index + click.size] += 0.5 * click
    return audio


# --- summaries ---------------------------------------------------------------------------------------------------


def test_rendered_row_summary_is_exact():
    tags = tags_from_metadata(RENDERED_ROW, "rendered")
    assert tags.summary() == RENDERED_SUMMARY
    assert tags.instruments_complete and tags.tempo_bpm == 99.0 and tags.key == "F major"
    assert tags.sources == {"genres": "metadata", "instruments": "metadata", "tempo_bpm": "metadata",
                            "key": "metadata"}


def test_summary_leaves_unknown_fields_out_lowercases_and_keeps_a_fixed_order():
    assert Tags().summary() == ""
    assert Tags(key="b- minor", moods=("Dark ", "Slow  burn"), genres=("Post-Rock",)).summary() == \
        "genre: post-rock; mood: dark, slow burn; key: Bb minor"
    assert Tags(tempo_bpm=127.6).summary() == "tempo: 128 bpm"


def test_tags_round_trip_through_dict_and_json():
    tags = tags_from_metadata(RENDERED_ROW)
    assert Tags.from_dict(json.loads(json.dumps(tags.to_dict()))) == tags


# --- reading metadata ---------------------------------------------------------------------------------------------


ROWS = [{"id": "a", "genre": "Rock", "bpm": "120", "key": "E minor", "instruments": "Guitar, drums"},
        {"id": "b", "genre": "Jazz", "bpm": "", "key": "", "instruments": "piano"}]
CUSTOM = TagMapping(genres=("genre",), instruments=("instruments",), tempo="bpm", key="key", separator=",")


def write_every_format(root):
    """The same rows as JSONL, JSON, CSV, TSV, a datasets folder and a parquet data folder."""
    import datasets

    columns = list(ROWS[0])
    write(root / "rows.jsonl", "".join(json.dumps(row) + "\n" for row in ROWS))
    write(root / "rows.json", json.dumps(ROWS))
    for name, separator in (("rows.csv", ","), ("rows.tsv", "\t")):
        quote = (lambda value: f'"{value}"') if separator == "," else str
        write(root / name, "\n".join([separator.join(columns)] +
                                     [separator.join(quote(row[c]) for c in columns) for row in ROWS]) + "\n")
    table = {c: [row[c] for row in ROWS] for c in columns}
    audio = {"bytes": datasets.Value("binary"), "path": datasets.Value("string")}  # Audio's storage; no torchcodec
    features = datasets.Features({**{c: datasets.Value("string") for c in columns}, "audio": audio})
    with_audio = datasets.Dataset.from_dict({**table, "audio": [{"bytes": b"RIFF", "path": None}] * 2}, features)
    with_audio.save_to_disk(str(root / "saved"))
    (root / "parquet" / "data").mkdir(parents=True)
    with_audio.to_parquet(str(root / "parquet" / "data" / "train-00000-of-00001.parquet"))
    return ["rows.jsonl", "rows.json", "rows.csv", "rows.tsv", "saved", "parquet"]


def test_every_metadata_format_reads_to_the_same_rows_and_tags(tmp_path):
    for name in write_every_format(tmp_path):
        rows = read_metadata(tmp_path / name)
        assert list(rows) == ["a", "b"], name
        assert [{c: row[c] for c in ROWS[0]} for row in rows.values()] == ROWS, name
        assert "audio" not in rows["a"], name  # binary payloads are not metadata
        tags = {clip: tags_from_metadata(row, CUSTOM) for clip, row in rows.items()}
        assert tags["a"].summary() == "genre: rock; instruments: guitar, drums; tempo: 120 bpm; key: E minor", name
        assert tags["b"].summary() == "genre: jazz; instruments: piano", name
        assert tags["b"].sources == {"genres": "metadata", "instruments": "metadata"}, name


def test_a_dataset_dict_folder_reads_every_split(tmp_path):
    import datasets

    splits = datasets.DatasetDict({"train": datasets.Dataset.from_list(ROWS[:1]),
                                   "test": datasets.Dataset.from_list(ROWS[1:])})
    splits.save_to_disk(str(tmp_path / "splits"))
    assert list(read_metadata(tmp_path / "splits")) == ["a", "b"]


def test_a_rendered_corpus_folder_reads_its_tracks(tmp_path):
    for track, key in (("bach-bwv1.6", "F major"), ("bach-bwv10.7", "G minor")):
        (tmp_path / track).mkdir()
        write(tmp_path / track / "metadata.json", json.dumps({**RENDERED_ROW, "track_id": track, "key": key}))
    rows = read_metadata(tmp_path)  # no "id" column: the track_id fallback
    assert list(rows) == ["bach-bwv1.6", "bach-bwv10.7"]
    assert tags_from_metadata(rows["bach-bwv10.7"]).key == "G minor"


def test_the_id_column_is_configurable(tmp_path):
    write(tmp_path / "rows.csv", "name,genre\nx,rock\ny,pop\n")
    assert list(read_metadata(tmp_path / "rows.csv", id_column="name")) == ["x", "y"]
    with pytest.raises(DataError, match=r"no id column 'id' \(nor 'track_id'\).*\['name', 'genre'\].*id_column="):
        read_metadata(tmp_path / "rows.csv")


def test_duplicate_and_missing_ids_are_errors_naming_the_row(tmp_path):
    write(tmp_path / "twice.jsonl", '{"id": "a"}\n{"id": "b"}\n{"id": "a"}\n')
    with pytest.raises(DataError, match=r"twice.jsonl row 3: clip id 'a' appears twice"):
        read_metadata(tmp_path / "twice.jsonl")
    write(tmp_path / "missing.csv", "id,genre\na,rock\n,pop\n")
    with pytest.raises(DataError, match=r"missing.csv row 2: no clip id in column 'id'"):
        read_metadata(tmp_path / "missing.csv")


def test_unreadable_metadata_sources_are_errors(tmp_path):
    with pytest.raises(DataError, match="no such metadata file"):
        read_metadata(tmp_path / "absent.jsonl")
    with pytest.raises(DataError, match="must be .jsonl, .json, .csv, .tsv"):
        read_metadata(write(tmp_path / "rows.xml", "<rows/>"))
    with pytest.raises(DataError, match=r"bad.jsonl:2: not valid JSON"):
        read_metadata(write(tmp_path / "bad.jsonl", '{"id": "a"}\n{"id": \n'))
    with pytest.raises(DataError, match=r"wide.csv:2: 3 fields for 2 columns"):
        read_metadata(write(tmp_path / "wide.csv", "id,genre\na,rock,pop\n"))
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataError, match="neither a datasets folder"):
        read_metadata(tmp_path / "empty")


# --- the built-in mappings ----------------------------------------------------------------------------------------


def test_jamendo_tags_split_by_prefix(tmp_path):
    rows = read_metadata(write(tmp_path / "autotagging.tsv", JAMENDO_TSV))  # TRACK_ID: the track_id fallback
    assert list(rows) == ["track_0000214", "track_0000215", "track_0001033"]
    tags = {clip: tags_from_metadata(row, "jamendo") for clip, row in rows.items()}
    assert tags["track_0000214"].summary() == "genre: punkrock"
    assert tags["track_0000215"].summary() == "genre: metal; instruments: guitar; mood: energetic"
    assert tags["track_0001033"] == Tags(genres=("easylistening",), instruments=("piano", "voice"),
                                         moods=("happy", "christmas"),
                                         sources={"genres": "metadata", "instruments": "metadata",
                                                  "moods": "metadata"})


def test_fma_genres_from_the_two_level_header(tmp_path):
    rows = read_metadata(write(tmp_path / "tracks.csv", FMA_TRACKS_CSV))
    assert list(rows) == ["2", "140", "1482"]
    assert rows["1482"]["album.title"] == "Live at WFMU, 2008" and rows["1482"]["track.title"] == "Brain, Stew"
    assert [tags_from_metadata(row, "fma").summary() for row in rows.values()] == ["genre: hip-hop", "genre: folk", ""]
    with_titles = fma_mapping(write(tmp_path / "genres.csv", FMA_GENRES_CSV))
    assert [tags_from_metadata(row, with_titles).genres for row in rows.values()] == [
        ("hip-hop",), ("folk",), ("experimental pop", "singer-songwriter")]


def test_unknown_mappings_and_bad_values_are_errors():
    with pytest.raises(ConfigError, match=r"unknown tag mapping 'mtg'.*\('rendered', 'jamendo', 'fma'\)"):
        tags_from_metadata({}, "mtg")
    with pytest.raises(DataError, match="tempo 'fast' is not a positive number"):
        tags_from_metadata({**RENDERED_ROW, "tempo_bpm": "fast"})
    with pytest.raises(DataError, match="key 'H major' cannot be read"):
        tags_from_metadata({**RENDERED_ROW, "key": "H major"})
    with pytest.raises(ConfigError, match="prefixed tags fill genres, instruments or moods"):
        TagMapping(prefixes=(("tempo---", "tempo_bpm"),))
    assert set(MAPPINGS) == {"rendered", "jamendo", "fma"}


@pytest.mark.parametrize("text, key", [("F major", "F major"), ("B- major", "Bb major"), ("A#:min", "Bb minor"),
                                       ("f minor", "F minor"), ("C#m", "C# minor"), ("Gb", "F# major"),
                                       ("E♭ minor", "Eb minor"), ("c# MAJOR", "Db major"), ("g#  minor", "G# minor")])
def test_keys_get_one_spelling(text, key):
    assert normalize_key(text) == key and same_key(text, key)


def test_tempo_parsing_and_matching():
    assert parse_tempo(99) == 99.0 and parse_tempo(" 72.5 BPM") == 72.5
    with pytest.raises(DataError):
        parse_tempo(0)
    assert tempo_matches(104, 100) and not tempo_matches(109, 100)
    assert tempo_matches(197, 100) and tempo_matches(51, 100) and not tempo_matches(197, 100, octaves=False)


# --- estimating tempo and key -------------------------------------------------------------------------------------


def test_key_profiles_with_one_harmonic_are_the_rotated_krumhansl_kessler_profiles():
    profiles = key_profiles(harmonics=1)
    assert profiles.shape == (24, 12)
    np.testing.assert_allclose(profiles[7], np.roll(MAJOR_PROFILE, 7))  # G major
    assert not np.allclose(key_profiles()[0], profiles[0])


@pytest.mark.parametrize("tonic_midi, minor, key", [(62, False, "D major"), (57, True, "A minor"),
                                                    (58, False, "Bb major"), (66, True, "F# minor")])
def test_estimate_key_of_a_cadence(tonic_midi, minor, key):
    assert estimate_key(cadence(tonic_midi, minor), SAMPLE_RATE) == key


@pytest.mark.parametrize("bpm", [90, 128])
def test_estimate_tempo_of_a_click_track(bpm):
    tempo = estimate_tempo(click_track(bpm, 12.0), SAMPLE_RATE)
    assert tempo_matches(tempo, bpm, tolerance=0.03, octaves=False), tempo


def test_estimates_refuse_unusable_audio():
    with pytest.raises(AudioError, match="mono clip"):
        estimate_key(np.zeros((2, SAMPLE_RATE), np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match="silent"):
        estimate_tempo(np.zeros(SAMPLE_RATE, np.float32), SAMPLE_RATE)
    with pytest.raises(AudioError, match="NaN"):
        estimate_key(np.full(SAMPLE_RATE, np.nan, np.float32), SAMPLE_RATE)
    with pytest.raises(ConfigError, match="sample_rate"):
        estimate_key(cadence(60, False), 0)


def test_complete_tags_fills_only_what_is_missing():
    audio = cadence(62, False)
    known = tags_from_metadata({**RENDERED_ROW, "key": "E minor"})
    assert complete_tags(known, np.zeros(100, np.float32), SAMPLE_RATE) is known  # nothing analysed
    filled = complete_tags(Tags(genres=("chorale",), tempo_bpm=80.0, sources={"genres": "metadata",
                                                                             "tempo_bpm": "metadata"}),
                           audio, SAMPLE_RATE)
    assert filled.key == "D major" and filled.tempo_bpm == 80.0
    assert filled.sources == {"genres": "metadata", "tempo_bpm": "metadata", "key": "librosa"}
    both = complete_tags(Tags(), audio, SAMPLE_RATE)
    assert both.tempo_bpm > 0 and both.sources == {"tempo_bpm": "librosa", "key": "librosa"}


# --- rendered Bach ------------------------------------------------------------------------------------------------

# the first six training pieces in name order (not chosen by how well they are estimated)
BACH_PIECES = ["bach/bwv1.6", "bach/bwv10.7", "bach/bwv101.7", "bach/bwv102.7", "bach/bwv103.6", "bach/bwv104.6"]
BACH_SECONDS = 15.0


@pytest.fixture(scope="module")
def rendered_bach(tmp_path_factory):
    render = pytest.importorskip("discodiff.corpus.render", reason="rendering needs the render extra")
    root = tmp_path_factory.mktemp("bach")
    render.render_corpus(BACH_PIECES, root, seconds=BACH_SECONDS, seed=0, progress=False)
    return root


def test_rendered_pieces_are_training_pieces():
    from discodiff.corpus.splits import split_of

    assert {split_of(piece) for piece in BACH_PIECES} == {"train"}


def test_rendered_corpus_metadata_gives_complete_instrument_tags(rendered_bach):
    rows = read_metadata(rendered_bach)
    assert sorted(rows) == sorted(piece.replace("/", "-") for piece in BACH_PIECES)
    for clip, row in rows.items():
        tags = tags_from_metadata(row)
        instruments = dict.fromkeys([row["vocals"]["instrument"]] + [p["instrument"] for p in row["accompaniment"]])
        assert tags.instruments == tuple(instruments) and tags.instruments_complete
        assert tags.summary() == (f"genre: baroque chorale; instruments: {', '.join(instruments)}; "
                                  f"tempo: {row['tempo_bpm']} bpm; key: {row['key']}")


def test_key_and_tempo_of_rendered_bach_mostly_match_the_metadata(rendered_bach):
    """Keys must match exactly; tempi within ±8%, or ±8% of double or half the tempo (beat trackers' usual octave
    errors). At least 4 of the 6 pieces each (measured: 5 of 6 for both)."""
    keys = tempi = 0
    for clip, row in read_metadata(rendered_bach).items():
        audio, sample_rate = sf.read(rendered_bach / clip / "mixture.wav", dtype="float32")
        estimated = complete_tags(Tags(), audio, sample_rate)
        keys += same_key(estimated.key, row["key"])
        tempi += tempo_matches(estimated.tempo_bpm, row["tempo_bpm"])
    assert keys >= 4 and tempi >= 4, (keys, tempi)
