"""How well an accompaniment fits its vocal (discodiff.evaluation.vocal_fit) and its benchmark script
(discodiff.bench.vocal_fit), on synthetic melodies and chords built here and a tiny rendered-like tree."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest

pytest.importorskip("librosa")

from discodiff.errors import AudioError, ConfigError  # noqa: E402
from discodiff.evaluation import (  # noqa: E402
    PairedComparison,
    PairingError,
    VocalFit,
    accompaniment_features,
    fit_from_features,
    harmonic_agreement,
    harmonic_consonance,
    mismatched_pairs,
    paired_comparison,
    rhythmic_agreement,
    vocal_features,
    vocal_fit,
)
from discodiff.evaluation.vocal_fit import CHANCE_CONSONANCE, CHANCE_HARMONIC  # noqa: E402

SR = 22050
NOTE = 0.3  # seconds per melody note
MELODY = (60, 64, 67, 72, 69, 65, 62, 67, 64, 60)  # C4 E4 G4 C5 A4 F4 D4 G4 E4 C4: 3 s
# a chord of the key of C holding each melody note's pitch class (as root, third or fifth), in the octave below
CHORD_OF = {0: (48, 52, 55), 4: (48, 52, 55), 7: (43, 47, 50), 9: (45, 48, 52), 5: (41, 45, 48), 2: (43, 47, 50)}
REPO = Path(__file__).resolve().parents[1]


def hz(midi: float) -> float:
    return 440.0 * 2 ** ((midi - 69) / 12)


def note(midi: float, duration: float, amplitude: float, decay: float, rate: int = SR) -> np.ndarray:
    """A plucked or sung note: five harmonics (1/k), a 10 ms attack and an exponential decay."""
    t = np.arange(round(duration * rate)) / rate
    envelope = np.minimum(t / 0.01, 1.0) * np.exp(-decay * t)
    return amplitude * envelope * sum(np.sin(2 * np.pi * k * hz(midi) * t) / k for k in range(1, 6))


def vocal(melody=MELODY, shift: int = 0, duration: float = NOTE, rate: int = SR) -> np.ndarray:
    return np.concatenate([note(m + shift, duration, 0.3, 1.0, rate) for m in melody])


def accompaniment(chords, duration: float = NOTE, delay: float = 0.0, rate: int = SR) -> np.ndarray:
    """One chord per melody note, struck at the note's start (``delay`` seconds later, same length)."""
    x = np.concatenate([sum(note(m, duration, 0.15, 6.0, rate) for m in chord) for chord in chords])
    return np.concatenate([np.zeros(round(delay * rate)), x])[: x.size]


def matched_chords(melody=MELODY, shift: int = 0):
    """The chord of each note of ``melody``, transposed with it by ``shift`` semitones."""
    return [tuple(m + shift for m in CHORD_OF[pitch % 12]) for pitch in melody]


def random_chords(count: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return [tuple(int(root) + np.array([0, 4, 7])) for root in 48 + rng.integers(0, 12, count)]


# --- harmony ---------------------------------------------------------------------------------------------------


def test_harmonic_agreement_is_high_only_for_chords_holding_the_vocals_pitch_class():
    chords = accompaniment(matched_chords())
    matched = harmonic_agreement(vocal(), chords, SR)
    # a triad splits the chroma between three pitch classes (and their harmonics' neighbours), so ~0.2 is high:
    # more than twice the chance level of 1/12
    assert matched > 2 * CHANCE_HARMONIC
    tritone = harmonic_agreement(vocal(shift=6), chords, SR)  # the same chords under a vocal a tritone away
    assert tritone < 0.5 * matched and tritone < CHANCE_HARMONIC
    random = harmonic_agreement(vocal(), accompaniment(random_chords(len(MELODY))), SR)
    assert random < matched - 0.05
    # consonance: every chord is consonant with its note (the rest is the chroma's leakage into neighbouring pitch
    # classes); the tritone-shifted vocal clashes with them, random chords are near chance (7/12)
    consonant = harmonic_consonance(vocal(), chords, SR)
    assert consonant > 0.7 and consonant > matched
    assert harmonic_consonance(vocal(shift=6), chords, SR) < CHANCE_CONSONANCE - 0.15
    assert harmonic_consonance(vocal(), accompaniment(random_chords(len(MELODY))), SR) < consonant - 0.15
    # transposing both together changes nothing that matters
    assert harmonic_agreement(vocal(shift=3), accompaniment(matched_chords(shift=3)), SR) > 2 * CHANCE_HARMONIC


def test_inputs_may_be_torch_1xT_at_another_rate_and_of_different_lengths():
    import torch

    rate = 44100
    v, a = vocal(rate=rate), accompaniment(matched_chords(), rate=rate)
    here = vocal_fit(torch.from_numpy(v)[None], torch.from_numpy(a.astype(np.float32)), rate)
    reference = vocal_fit(vocal(), accompaniment(matched_chords()), SR)
    assert here.harmonic == pytest.approx(reference.harmonic, abs=0.02)
    assert here.rhythmic == pytest.approx(reference.rhythmic, abs=0.05)
    assert here.consonance == pytest.approx(reference.consonance, abs=0.02)
    # a longer accompaniment is trimmed to the vocal (both are taken to start together)
    longer = vocal_fit(vocal(), np.concatenate([accompaniment(matched_chords()), np.zeros(SR)]), SR)
    assert longer.harmonic == pytest.approx(reference.harmonic, abs=1e-6)


# --- rhythm ----------------------------------------------------------------------------------------------------


def test_rhythmic_agreement_is_high_for_onsets_at_the_vocals_notes_and_low_half_a_note_off():
    chords = matched_chords()
    aligned = rhythmic_agreement(vocal(), accompaniment(chords), SR)
    shifted = rhythmic_agreement(vocal(), accompaniment(chords, delay=NOTE / 2), SR)
    assert -1.0 <= shifted <= aligned <= 1.0
    assert aligned > 0.6 and shifted < 0.2 and aligned - shifted > 0.5
    assert rhythmic_agreement(vocal(), vocal(), SR) == pytest.approx(1.0)


def test_vocal_fit_and_the_feature_path_equal_the_single_measures():
    v, a = vocal(), accompaniment(matched_chords())
    fit = vocal_fit(v, a, SR)
    assert isinstance(fit, VocalFit)
    assert fit.harmonic == harmonic_agreement(v, a, SR) and fit.rhythmic == rhythmic_agreement(v, a, SR)
    assert fit.consonance == harmonic_consonance(v, a, SR)
    assert fit_from_features(vocal_features(v, SR), accompaniment_features(a, SR)) == fit


# --- paired comparison -----------------------------------------------------------------------------------------


def test_paired_comparison_on_a_hand_computed_example():
    # differences 0, 2, 4: mean 2, sample variance (4 + 0 + 4) / 2 = 4, std 2; one tie, so 2 of 3 higher
    result = paired_comparison([0.5, 3.0, 4.0], [0.5, 1.0, 0.0])
    assert isinstance(result, PairedComparison)
    assert result.matched_mean == 2.5 and result.mismatched_mean == 0.5
    assert result.difference_mean == 2.0 and result.difference_std == 2.0
    assert result.n == 3 and result.share_matched_higher == 2 / 3
    assert result.difference_sem == pytest.approx(2 / math.sqrt(3))
    record = result.to_dict()
    assert set(record) == {"matched_mean", "mismatched_mean", "difference_mean", "difference_std", "n",
                           "share_matched_higher", "difference_sem"}
    json.dumps(record, allow_nan=False)
    low = paired_comparison(np.array([0.1, 0.2]), (0.3, 0.5))
    assert low.difference_mean == pytest.approx(-0.25) and low.share_matched_higher == 0.0


def test_paired_comparison_refuses_unpaired_short_or_non_finite_scores():
    with pytest.raises(PairingError, match="matched has 3 scores but mismatched has 2"):
        paired_comparison([1, 2, 3], [1, 2])
    with pytest.raises(PairingError, match="at least 2 pairs"):
        paired_comparison([1.0], [0.0])
    with pytest.raises(PairingError, match="finite"):
        paired_comparison([1.0, math.nan], [0.0, 0.0])
    assert issubclass(PairingError, ConfigError) and issubclass(PairingError, ValueError)


@pytest.mark.parametrize("n", range(2, 7))
def test_mismatched_pairs_is_a_fixed_derangement(n):
    pairing = mismatched_pairs(n)
    assert sorted(pairing) == list(range(n))  # a permutation: every vocal is used once
    assert all(j != i for i, j in enumerate(pairing))  # nobody keeps their own vocal
    assert pairing == mismatched_pairs(n) == [(i + 1) % n for i in range(n)]


def test_mismatched_pairs_needs_two_items():
    for bad in (1, 0, -3, True, 2.0):
        with pytest.raises(PairingError, match="at least 2 items"):
            mismatched_pairs(bad)


# --- refused inputs --------------------------------------------------------------------------------------------


def test_silence_short_non_finite_and_malformed_inputs_are_named():
    v, a = vocal(), accompaniment(matched_chords())
    silent = np.zeros_like(v)
    with pytest.raises(AudioError, match=r"the vocal has no voiced frames \(pYIN"):
        harmonic_agreement(silent, a, SR)
    with pytest.raises(AudioError, match="the vocal has no voiced frames"):
        harmonic_consonance(silent, a, SR)
    with pytest.raises(AudioError, match="the vocal is silent"):
        rhythmic_agreement(silent, a, SR)
    with pytest.raises(AudioError, match="the accompaniment is silent"):
        rhythmic_agreement(v, silent, SR)
    with pytest.raises(AudioError, match="the accompaniment is silent"):
        vocal_fit(v, silent, SR)
    assert harmonic_agreement(v, silent, SR) == 0.0  # a silent accompaniment holds none of the vocal's pitch class
    with pytest.raises(AudioError, match=r"vocal and accompaniment are 0\.300 s .*at least 0\.5 s"):
        vocal_fit(v[: round(0.3 * SR)], a[: round(0.3 * SR)], SR)
    with pytest.raises(AudioError, match=r"overlap for only 0\.400 s .*at least 0\.5 s"):
        harmonic_agreement(v, a[: round(0.4 * SR)], SR)
    with pytest.raises(AudioError, match=r"seed0/x vocals is 0\.200 s"):
        vocal_features(v[: round(0.2 * SR)], SR, "seed0/x vocals")
    bad = v.copy()
    bad[100] = np.nan
    with pytest.raises(AudioError, match="vocal holds 1 NaN or infinite samples"):
        harmonic_agreement(bad, a, SR)
    with pytest.raises(AudioError, match="accompaniment holds 1 NaN"):
        rhythmic_agreement(v, np.where(np.arange(a.size) == 5, np.inf, a), SR)
    with pytest.raises(AudioError, match=r"one mono clip \[T\] or \[1, T\], got shape \(2,"):
        vocal_fit(np.stack([v, v]), a, SR)
    with pytest.raises(AudioError, match="zero samples"):
        vocal_fit(np.zeros(0), a, SR)
    for rate in (0, -1, 22050.5, math.nan, True):
        with pytest.raises(AudioError, match="sample_rate must be a positive whole number"):
            vocal_fit(v, a, rate)


# --- the benchmark script --------------------------------------------------------------------------------------

TRACK_RATE = 44100
# (transposition, note length) per validation track: different keys and tempi, so another track's vocal is a mismatch
TRACKS = ((0, 0.30), (6, 0.25), (3, 0.40))


def pieces(split: str, count: int) -> list[str]:
    """The first ``count`` Bach pieces of ``split`` in the recorded split (as tests/test_codec_training.py picks them)."""
    recorded = json.loads((REPO / "discodiff" / "corpus" / "bach_split.json").read_text())["split"]
    return sorted(piece for piece, value in recorded.items() if value == split)[:count]


def write_track(folder: Path, piece: str, shift: int, duration: float) -> Path:
    """A rendered-like track: float32 mono vocals/accompaniment/mixture at 44.1 kHz (2 to 4 s) and metadata.json."""
    import soundfile as sf

    melody = MELODY[:8]
    v = vocal(melody, shift, duration, TRACK_RATE)
    a = accompaniment(matched_chords(melody, shift), duration, rate=TRACK_RATE)
    folder.mkdir(parents=True, exist_ok=True)
    for name, audio in (("vocals", v), ("accompaniment", a), ("mixture", v + a)):
        sf.write(str(folder / f"{name}.wav"), audio.astype(np.float32), TRACK_RATE, subtype="FLOAT")
    (folder / "metadata.json").write_text(json.dumps({"track_id": folder.name, "piece": piece, "seed": 0,
                                                      "sample_rate": TRACK_RATE}))
    return folder


def rendered_tree(root: Path) -> Path:
    """``seed0/`` with three validation-split tracks (TRACKS) and one train-split track (never measured)."""
    for piece, (shift, duration) in zip(pieces("validation", len(TRACKS)), TRACKS):
        write_track(root / "seed0" / piece.replace("/", "-"), piece, shift, duration)
    train = pieces("train", 1)[0]
    write_track(root / "seed0" / train.replace("/", "-"), train, 2, 0.3)
    return root


def run_bench(capsys, *args: str):
    from discodiff.bench.vocal_fit import cli

    with pytest.raises(SystemExit) as exit_info:
        cli(list(args))
        raise SystemExit(0)
    return exit_info.value.code, capsys.readouterr()


def test_bench_scores_reference_and_generated_accompaniments_of_the_requested_split(tmp_path, capsys):
    import soundfile as sf
    import soxr

    root = rendered_tree(tmp_path / "rendered")
    validation = [piece.replace("/", "-") for piece in pieces("validation", len(TRACKS))]
    generated = tmp_path / "generated"
    for track in validation:  # "generated" = the real accompaniments, at another rate: the rows must agree
        audio, rate = sf.read(str(root / "seed0" / track / "accompaniment.wav"), dtype="float64")
        (generated / "seed0").mkdir(parents=True, exist_ok=True)
        sf.write(str(generated / "seed0" / f"{track}.wav"), soxr.resample(audio, rate, SR).astype(np.float32), SR,
                 subtype="FLOAT")
    out = tmp_path / "fit.json"
    code, captured = run_bench(capsys, "--data", str(root), "--split", "validation", "--seconds", "4", "--excerpt",
                               "start", "--generated", str(generated), "--json", str(out), "--quiet")
    assert code == 0, captured.err
    assert "reference  harmonic" in captured.out and "generated  consonance" in captured.out
    record = json.loads(out.read_text())
    assert record["tracks"] == 3 and record["settings"]["split"] == "validation" and record["same_piece_pairs"] == 0
    ids = [f"seed0/{track}" for track in validation]
    assert [row["track"] for row in record["per_track"]] == ids  # the train-split track is not measured
    assert [row["mismatched_vocal"] for row in record["per_track"]] == ids[1:] + ids[:1]
    for row in ("reference", "generated"):
        for measure in ("harmonic", "consonance", "rhythmic"):
            summary = record[row][measure]
            assert summary["n"] == 3
            assert summary["matched_mean"] > summary["mismatched_mean"], (row, measure)
            assert summary["share_matched_higher"] == 1.0, (row, measure)
            assert summary["difference_mean"] == pytest.approx(summary["matched_mean"] - summary["mismatched_mean"])
            assert summary["matched_mean"] == pytest.approx(record["reference"][measure]["matched_mean"], abs=0.02)
    assert record["reference"]["harmonic"]["matched_mean"] > 2 * CHANCE_HARMONIC
    direct = vocal_fit(vocal(MELODY[:8], 0, 0.30, TRACK_RATE), accompaniment(matched_chords(MELODY[:8]), 0.30,
                                                                             rate=TRACK_RATE), TRACK_RATE)
    assert record["per_track"][0]["reference_harmonic_matched"] == pytest.approx(direct.harmonic, abs=1e-3)


def test_bench_refuses_held_out_composers_missing_generations_and_bad_options(tmp_path, capsys):
    root = rendered_tree(tmp_path / "rendered")
    code, captured = run_bench(capsys, "--data", str(root), "--limit", "1")
    assert code == 1 and "--limit 1: must be at least 2" in captured.err
    code, captured = run_bench(capsys, "--data", str(root), "--seconds", "0.2")
    assert code == 1 and "--seconds 0.2: must be in [0.5, 600]" in captured.err
    (tmp_path / "empty").mkdir()
    code, captured = run_bench(capsys, "--data", str(root), "--generated", str(tmp_path / "empty"))
    assert code == 1 and "3 of 3 tracks have no generated accompaniment" in captured.err
    code, captured = run_bench(capsys, "--data", str(root), "--json", str(tmp_path / "x.txt"))
    assert code == 1 and "give a file name ending in .json" in captured.err
    write_track(root / "seed0" / "mozart-k331", "mozart/k331", 0, 0.3)
    code, captured = run_bench(capsys, "--data", str(root), "--split", "validation")
    assert code == 1
    assert captured.err.startswith("error: ") and len(captured.err.strip().splitlines()) == 1
    assert "mozart/k331: not a Bach piece; other composers are held out" in captured.err
