"""Rendering real scores (Bach chorales from the music21 corpus) to stems: pitch, additivity,
determinism, the on-disk layout contract and failure modes. CPU only, no network."""

from __future__ import annotations

import filecmp
import json

import librosa
import numpy as np
import pytest
import soundfile as sf
from music21 import corpus, harmony, meter, note, stream, tie
from typer.testing import CliRunner

from discodiff.audio import rms_dbfs
from discodiff.errors import DataError
from discodiff.cli import app
from discodiff.corpus.render import RELEASE_TAIL_SECONDS, render_corpus, render_score
from discodiff.corpus.scores import UnrenderableScoreError, part_notes, resolve_pieces, split_melody
from discodiff.corpus.synth import FluidSynthRenderer, RendererUnavailableError
from discodiff.data.captions import read_captions, write_captions
from discodiff.data.layout import StemPair, find_stem_pairs

PIECE, TRACK = "bach/bwv66.6", "bach-bwv66.6"
CROP_SECONDS = 12.0


@pytest.fixture(scope="module")
def rendered(tmp_path_factory):
    """``bach/bwv66.6`` cropped to 12 s with seed 0."""
    out = tmp_path_factory.mktemp("rendered")
    report = render_corpus([PIECE], out, seconds=CROP_SECONDS, seed=0, progress=False)
    assert [t.track_id for t in report.rendered] == [TRACK] and not report.skipped
    return out


def read_stem(path):
    audio, sample_rate = sf.read(path, dtype="float32")
    assert sample_rate == 44100 and audio.ndim == 1
    return audio


def metadata(root, track=TRACK):
    return json.loads((root / track / "metadata.json").read_text())


def two_part_score(upper_name: str, lower_name: str, ornaments: bool = False) -> stream.Score:
    """Upper part C5 (quarter tied to quarter), E5 (half); lower part C3 (whole), placed first.

    ``ornaments`` adds a grace note before the E5 and a whole-bar C chord symbol, neither of which
    should sound.
    """
    upper, lower = stream.Part(), stream.Part()
    upper.partName, lower.partName = upper_name, lower_name
    tied_start, tied_end = note.Note("C5", quarterLength=1), note.Note("C5", quarterLength=1)
    tied_start.tie, tied_end.tie = tie.Tie("start"), tie.Tie("stop")
    grace = [note.Note("D5").getGrace()] if ornaments else []
    upper.append([meter.TimeSignature("4/4"), tied_start, tied_end, *grace, note.Note("E5", quarterLength=2)])
    if ornaments:
        chord_symbol = harmony.ChordSymbol("C")
        chord_symbol.quarterLength = 4
        upper.insert(0, chord_symbol)
    lower.append([meter.TimeSignature("4/4"), note.Note("C3", quarterLength=4)])
    score = stream.Score()
    score.insert(0, lower)
    score.insert(0, upper)
    return score


def test_vocal_stem_follows_the_soprano_line(rendered):
    info = metadata(rendered)
    assert info["vocals"]["part"] == "Soprano" and info["vocals"]["chosen_by"] == "name"
    vocals = librosa.resample(read_stem(rendered / TRACK / "vocals.wav"), orig_sr=44100, target_sr=8000)
    f0, voiced, _ = librosa.pyin(vocals, fmin=150, fmax=1000, sr=8000, frame_length=512, hop_length=160)
    times = librosa.times_like(f0, sr=8000, hop_length=160)

    expected = np.full(len(times), np.nan)  # the score's soprano, timed independently of the renderer
    seconds_per_quarter = 60.0 / info["tempo_bpm"]
    for n in corpus.parse(PIECE).parts["Soprano"].stripTies().flatten().notes:
        onset, offset = n.offset * seconds_per_quarter, (n.offset + n.quarterLength) * seconds_per_quarter
        expected[(times >= onset + 0.05) & (times < offset - 0.05)] = n.pitch.midi + info["transpose_semitones"]
    scored = ~np.isnan(expected)
    sung = librosa.hz_to_midi(np.where(voiced, f0, 1.0))  # unvoiced frames count as misses
    agreement = np.mean(np.abs(sung[scored] - expected[scored]) < 0.5)
    # Measured: 0.990 of the 513 frames where the score has a note (seed 0: voice oohs, 79 BPM).
    assert scored.sum() > 400 and agreement >= 0.8, agreement


def test_stems_add_up_to_the_mixture_at_the_cropped_length(rendered):
    vocals, accompaniment, mixture = (read_stem(rendered / TRACK / f"{s}.wav") for s in ("vocals", "accompaniment", "mixture"))
    assert len(vocals) == len(accompaniment) == len(mixture) == round(CROP_SECONDS * 44100)
    assert np.array_equal(mixture, vocals + accompaniment)
    assert rms_dbfs(vocals) > -40 and rms_dbfs(accompaniment) > -40
    assert np.abs(mixture).max() <= 0.9 + 1e-6


def test_whole_piece_renders_to_its_length_plus_a_tail_that_falls_silent(tmp_path):
    render_corpus([PIECE], tmp_path, seconds=None, seed=0, progress=False)
    mixture, info = read_stem(tmp_path / TRACK / "mixture.wav"), metadata(tmp_path)
    quarters = corpus.parse(PIECE).highestTime
    assert len(mixture) == round((quarters * 60 / info["tempo_bpm"] + RELEASE_TAIL_SECONDS) * 44100)
    assert rms_dbfs(mixture[-22050:]) < -80  # measured -109 dBFS: nothing is left sounding


def test_a_score_with_ornaments_renders_to_a_fixed_length():
    score = two_part_score("Soprano", "Bass", ornaments=True)
    piece = render_score(score, FluidSynthRenderer(), np.random.default_rng(0))
    assert len(piece.vocals) == round((4 * 60 / piece.arrangement.tempo_bpm + RELEASE_TAIL_SECONDS) * 44100)
    assert rms_dbfs(piece.mixture[-22050:]) < -80


def test_notes_merge_ties_and_drop_grace_notes_and_chord_symbols():
    upper = part_notes(two_part_score("Soprano", "Bass", ornaments=True).parts[1])
    assert [(n.onset, n.duration, n.pitch) for n in upper] == [(0.0, 2.0, 72), (2.0, 2.0, 76)]


def test_melody_is_chosen_by_name_then_by_pitch_never_by_position():
    by_name = split_melody(two_part_score("Cantus", "Organ"))
    assert by_name.melody.name == "Cantus" and by_name.melody_found_by_name
    fallback = split_melody(two_part_score("Upper", "Lower"))  # the lower part comes first in the score
    assert fallback.melody.name == "Upper" and not fallback.melody_found_by_name
    assert [part.name for part in fallback.accompaniment] == ["Lower"]


def test_captions_name_the_analysed_key_tempo_and_instruments(rendered):
    assert str(corpus.parse(PIECE).analyze("key")) == "f# minor"
    info = metadata(rendered)
    captions = read_captions(rendered / "captions.jsonl")[TRACK]
    assert len(captions) == len(set(captions)) >= 4
    assert all("f# minor" in caption.lower() for caption in captions)
    assert all(str(info["tempo_bpm"]) in caption for caption in captions if "BPM" in caption.upper())
    assert all(info["vocals"]["instrument"] in caption.lower() for caption in captions)
    assert any("Baroque chorale" in caption for caption in captions)
    for part in info["accompaniment"]:
        assert all(part["instrument"] in caption for caption in captions)


def test_one_seed_is_byte_identical_and_another_seed_changes_the_arrangement(rendered, tmp_path):
    render_corpus([PIECE], tmp_path / "again", seconds=CROP_SECONDS, seed=0, progress=False)
    files = ["captions.jsonl", "render_report.json"] + [f"{TRACK}/{name}" for name in ("vocals.wav", "accompaniment.wav", "mixture.wav", "metadata.json")]
    _, mismatched, errors = filecmp.cmpfiles(rendered, tmp_path / "again", files, shallow=False)
    assert not mismatched and not errors

    render_corpus([PIECE], tmp_path / "other", seconds=2.0, seed=1, progress=False)
    first, other = metadata(rendered), metadata(tmp_path / "other")
    assert first["tempo_bpm"] != other["tempo_bpm"]
    assert [p["program"] for p in first["accompaniment"]] != [p["program"] for p in other["accompaniment"]]


def test_transposition_is_drawn_in_range_and_moves_the_key(tmp_path):
    report = render_corpus([PIECE], tmp_path, seconds=1.0, seed=3, transpose=5, progress=False)
    info = metadata(tmp_path)
    assert report.rendered and 0 < abs(info["transpose_semitones"]) <= 5
    expected_key = corpus.parse(PIECE).analyze("key").transpose(info["transpose_semitones"])
    assert info["key"] == f"{expected_key.tonic.name.replace('-', 'b')} {expected_key.mode}"


def test_layout_finds_exactly_the_rendered_tracks(rendered):
    assert find_stem_pairs(rendered) == [StemPair.rendered(rendered, TRACK)]
    pair = find_stem_pairs(rendered)[0]
    assert all(path.is_file() for path in (pair.vocals, *pair.accompaniment, pair.mixture, pair.metadata))
    assert set(read_captions(rendered / "captions.jsonl")) == {TRACK}


def test_captions_round_trip_and_reject_duplicates(tmp_path):
    captions = {"a": ["one", "two"], "b/c": ["three"]}
    write_captions(tmp_path / "captions.jsonl", ({"track_id": k, "captions": v} for k, v in captions.items()))
    assert read_captions(tmp_path / "captions.jsonl") == captions
    (tmp_path / "dup.jsonl").write_text('{"track_id": "a", "captions": []}\n' * 2)
    with pytest.raises(ValueError, match="dup.jsonl:2: track 'a' appears twice"):
        read_captions(tmp_path / "dup.jsonl")


def test_layout_accepts_musdb_style_folders(tmp_path):
    folder_a, folder_b, vocals_only = tmp_path / "train" / "Song A", tmp_path / "test" / "Song B", tmp_path / "test" / "Solo"
    layout = {
        folder_a: ["mixture.wav", "vocals.wav", "drums.wav", "bass.wav", "other.wav"],
        folder_b: ["vocals.flac", "accompaniment.flac"],
        vocals_only: ["vocals.ogg"],  # no accompaniment: not a pair
    }
    for folder, names in layout.items():
        folder.mkdir(parents=True)
        for name in names:
            sf.write(folder / name, np.zeros(441, dtype=np.float32), 44100)

    assert find_stem_pairs(tmp_path) == [
        StemPair("test/Song B", folder_b / "vocals.flac", (folder_b / "accompaniment.flac",), None),
        StemPair("train/Song A", folder_a / "vocals.wav", tuple(folder_a / f"{s}.wav" for s in ("drums", "bass", "other")), folder_a / "mixture.wav"),
    ]


def test_unknown_pieces_are_refused_before_work_and_unrenderable_ones_skipped_with_reasons(tmp_path):
    with pytest.raises(DataError, match=r"no piece in the music21 corpus matches 'bach/no-such-piece'.*--list"):
        render_corpus(["bach/no-such-piece", "bach/bwv66.6"], tmp_path / "refused", seconds=1.0, progress=False)
    assert not (tmp_path / "refused").exists()
    report = render_corpus(["bach/choraleAnalyses/riemenschneider001"], tmp_path, seconds=1.0, progress=False)
    assert not report.rendered
    reasons = {s.piece: s.reason for s in report.skipped}
    assert "no part has pitched notes" in reasons["bach/choraleAnalyses/riemenschneider001"]
    assert json.loads((tmp_path / "render_report.json").read_text())["skipped"][0]["piece"] == "bach/choraleAnalyses/riemenschneider001"
    with pytest.raises(UnrenderableScoreError, match="nothing to accompany"):
        split_melody(stream.Score([two_part_score("Soprano", "Bass").parts[1]]))


def test_piece_globs_match_within_one_folder():
    pieces, unmatched = resolve_pieces(["bach/bwv66.*", "bach/bwv2.6, bach/zzz*"])
    assert pieces == ["bach/bwv66.6", "bach/bwv2.6"] and unmatched == ["bach/zzz*"]
    everything, _ = resolve_pieces(["bach/*"])
    assert "bach/bwv66.6" in everything and not any(p.startswith("bach/choraleAnalyses/") for p in everything)


def test_missing_soundfont_is_a_one_line_error_naming_the_package(tmp_path):
    with pytest.raises(RendererUnavailableError) as error:
        render_corpus([PIECE], tmp_path, soundfont=tmp_path / "missing.sf2", progress=False)
    assert "fluid-soundfont-gm" in str(error.value) and "\n" not in str(error.value)


def test_two_workers_write_the_same_files_as_one(tmp_path):
    pieces = [PIECE, "bach/bwv2.6"]
    serial = render_corpus(pieces, tmp_path / "serial", seconds=3.0, seed=7, workers=1, progress=False)
    parallel = render_corpus(pieces, tmp_path / "parallel", seconds=3.0, seed=7, workers=2, progress=False)
    assert serial == parallel and len(serial.rendered) == 2
    files = ["captions.jsonl"] + [str(p.relative_to(tmp_path / "serial")) for pair in find_stem_pairs(tmp_path / "serial")
                                  for p in (pair.vocals, pair.mixture, pair.metadata, *pair.accompaniment)]
    matched, mismatched, errors = filecmp.cmpfiles(tmp_path / "serial", tmp_path / "parallel", files, shallow=False)
    assert len(matched) == 9 and not mismatched and not errors


def test_cli_renders_and_reports_a_missing_soundfont_in_one_line(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["render-corpus", "--pieces", f"{PIECE},bach/nope", "--out", str(tmp_path), "--seconds", "1", "--quiet"])
    assert result.exit_code == 1 and "'bach/nope'" in result.output and not find_stem_pairs(tmp_path)
    result = runner.invoke(app, ["render-corpus", "--pieces", PIECE, "--out", str(tmp_path), "--seconds", "1", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "1 tracks, 1.0 s of audio; 0 skipped" in result.output and find_stem_pairs(tmp_path)
    vocals = (tmp_path / "bach-bwv66.6" / "vocals.wav").read_bytes()
    result = runner.invoke(app, ["render-corpus", "--pieces", PIECE, "--out", str(tmp_path), "--seconds", "1", "--seed", "5", "--quiet"])
    assert result.exit_code == 1 and "seed 0 → 5" in result.output and "--overwrite" in result.output
    assert (tmp_path / "bach-bwv66.6" / "vocals.wav").read_bytes() == vocals
    result = runner.invoke(app, ["render-corpus", "--out", str(tmp_path), "--soundfont", str(tmp_path / "none.sf2")])
    assert result.exit_code == 1 and "fluid-soundfont-gm" in result.output and len(result.output.strip().splitlines()) == 1


def test_the_bach_split_is_fixed_tune_disjoint_and_a_tenth():
    from discodiff.corpus.splits import assign_split, is_held_out, load_split, select

    split = load_split()
    validation = [piece for piece, name in split.items() if name == "validation"]
    assert all(piece.startswith("bach/") for piece in split) and 0.10 <= len(validation) / len(split) <= 0.15
    assert split["bach/bwv66.6"] == "train" and select(["bach/bwv66.6", validation[0]], "validation") == [validation[0]]
    # the rule keeps every tune on one side: three harmonisations of one tune move together
    signatures = {f"bach/p{i}": (i % 7,) for i in range(40)} | {f"bach/same{i}": (99,) for i in range(3)}
    assigned = assign_split(signatures)
    assert len({assigned[f"bach/same{i}"] for i in range(3)}) == 1
    assert sum(v == "validation" for v in assigned.values()) >= 0.1 * len(signatures)
    assert assign_split(signatures) == assigned and is_held_out("mozart/k155") and not is_held_out("bach/bwv66.6")
    with pytest.raises(DataError, match="not Bach pieces: a split applies to Bach only"):
        select(["bach/bwv66.6", "beethoven/opus18no1"], "train")


def test_the_recorded_tunes_of_a_few_pieces_match_their_scores():
    """The committed split was computed from these signatures; spot-check that the scores still give them."""
    from discodiff.corpus.splits import load_split, tune_signature

    split = load_split()
    pieces = sorted(split)[::97]
    assert all(len(tune_signature(piece)) > 0 for piece in pieces)


def test_cli_renders_one_split_only(tmp_path):
    runner = CliRunner()
    result = runner.invoke(app, ["render-corpus", "--pieces", "bach/bwv66.6", "--split", "validation", "--out", str(tmp_path)])
    assert result.exit_code == 1 and "none of the pieces matching bach/bwv66.6 is in the validation split" in result.output
    result = runner.invoke(app, ["render-corpus", "--pieces", "bach/bwv1*", "--split", "validation", "--list"])
    assert result.exit_code == 0 and result.output.split() == ["bach/bwv110.7", "bach/bwv111.6", "bach/bwv124.6", "bach/bwv128.5",
                                                               "bach/bwv144.6", "bach/bwv154.8", "bach/bwv157.5", "bach/bwv174.5",
                                                               "bach/bwv184.5", "bach/bwv197.7-a"]
