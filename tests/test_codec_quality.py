"""The codec's reconstruction measures (discodiff.evaluation.reconstruction) and their benchmark script
(discodiff.bench.codec_quality), on synthetic signals, the tiny random codec and a tiny rendered tree."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

pytest.importorskip("librosa")

from discodiff.errors import AudioError  # noqa: E402
from discodiff.evaluation import (  # noqa: E402
    CodecReport,
    PitchAgreement,
    chroma_similarity,
    evaluate_codec,
    mel_distance,
    pitch_agreement,
    si_sdr_db,
)

SR = 44100
SEMITONE = 2 ** (1 / 12)


def seconds(duration: float) -> np.ndarray:
    return np.arange(int(duration * SR)) / SR


def voice(f0: float, duration: float = 1.5, vibrato_cents: float = 20.0) -> np.ndarray:
    """A sung-like note: harmonics of ``f0`` with a 5 Hz, ±``vibrato_cents`` vibrato."""
    t = seconds(duration)
    instantaneous = f0 * 2 ** (vibrato_cents / 1200 * np.sin(2 * np.pi * 5 * t))
    phase = 2 * np.pi * np.cumsum(instantaneous) / SR
    return sum(0.3 / k * np.sin(k * phase) for k in range(1, 6)).astype(np.float32)


def chord(freqs, duration: float = 1.5) -> np.ndarray:
    t = seconds(duration)
    return sum(0.2 * np.sin(2 * np.pi * f * t) for f in freqs).astype(np.float32)


C_MAJOR = (261.63, 329.63, 392.00)
F_SHARP_MAJOR = (369.99, 466.16, 554.37)


def noise(duration: float = 1.5, seed: int = 0) -> np.ndarray:
    return (0.2 * np.random.default_rng(seed).standard_normal(int(duration * SR))).astype(np.float32)


# --- the measures --------------------------------------------------------------------------------------------


def test_pitch_agreement_is_one_with_itself_and_near_zero_a_semitone_off():
    x = voice(220.0)
    same = pitch_agreement(x, x.copy(), SR)
    assert isinstance(same, PitchAgreement)
    assert same.voiced_frames > 100
    assert same.within_half_semitone == 1.0 and same.voicing_missed == 0.0
    shifted = pitch_agreement(x, voice(220.0 * SEMITONE), SR)
    assert shifted.voiced_frames == same.voiced_frames
    assert shifted.within_half_semitone < 0.05
    assert shifted.voicing_missed < 0.05  # voiced, just at the wrong pitch
    silent = pitch_agreement(x, np.zeros_like(x), SR)
    assert silent.within_half_semitone == 0.0 and silent.voicing_missed == 1.0
    nothing = pitch_agreement(np.zeros_like(x), x, SR)
    assert nothing.voiced_frames == 0 and math.isnan(nothing.within_half_semitone)
    pooled = PitchAgreement.pooled([same, silent, nothing])
    assert pooled.voiced_frames == 2 * same.voiced_frames and pooled.within_half_semitone == pytest.approx(0.5)


def test_pitch_grid_distance_shows_a_pitch_locked_to_the_codecs_half_frame_rate():
    """A reconstruction whose f0 sits on a multiple of the grid (12 × 43.07 Hz) is 0 steps from it; the original's
    500 Hz is 11.61 steps, 0.39 from the nearest; without a grid nothing is measured; pooling weights by frames."""
    grid = 44100 / 512 / 2
    x, locked = voice(500.0, vibrato_cents=0), voice(12 * grid, vibrato_cents=0)
    agreement = pitch_agreement(x, locked, SR, grid_hz=grid)
    assert agreement.grid_frames > 100 and agreement.grid_distance < 0.02
    assert agreement.grid_distance_original == pytest.approx(0.39, abs=0.02)
    plain = pitch_agreement(x, locked, SR)
    assert plain.grid_frames == 0 and math.isnan(plain.grid_distance)
    free = pitch_agreement(x, x.copy(), SR, grid_hz=grid)
    pooled = PitchAgreement.pooled([agreement, free, plain])
    assert pooled.grid_frames == agreement.grid_frames + free.grid_frames
    assert pooled.grid_distance == pytest.approx((agreement.grid_distance * agreement.grid_frames + free.grid_distance
                                                  * free.grid_frames) / pooled.grid_frames)
    with pytest.raises(ValueError, match="grid_hz must be a positive frequency"):
        pitch_agreement(x, x, SR, grid_hz=0.0)


def test_chroma_similarity_is_one_with_itself_and_low_for_another_key():
    c_major = chord(C_MAJOR)
    assert chroma_similarity(c_major, c_major.copy(), SR) == pytest.approx(1.0, abs=1e-6)
    other = chroma_similarity(c_major, chord(F_SHARP_MAJOR), SR)
    assert other < 0.5
    assert chroma_similarity(c_major, np.zeros_like(c_major), SR) == 0.0  # a silent reconstruction scores 0
    assert math.isnan(chroma_similarity(np.zeros_like(c_major), c_major, SR))  # nothing to compare


def test_si_sdr_is_very_high_for_identical_and_low_for_noise():
    x = chord(C_MAJOR)
    assert si_sdr_db(x, x.copy()) > 100
    assert si_sdr_db(x, 3 * x) > 100  # scale-invariant
    assert si_sdr_db(x, noise()) < -20
    batch = si_sdr_db(np.stack([x, x]), np.stack([x + 0.1 * noise(), noise()])[:, None])
    assert batch.shape == (2,) and batch[0] > batch[1]
    with pytest.raises(AudioError, match="same shape"):
        si_sdr_db(x, x[:-1])


def test_si_sdr_matches_the_codec_tasks_validation_metric():
    pytest.importorskip("dac")
    import torch

    from discodiff.training.codec_task import CodecLosses, CodecTaskConfig

    x = np.stack([chord(C_MAJOR), chord(F_SHARP_MAJOR)])
    y = x + np.stack([0.1 * noise(seed=1), 0.3 * noise(seed=2)])
    task = CodecLosses(CodecTaskConfig(), SR).sisdr_db(torch.from_numpy(y)[:, None], torch.from_numpy(x)[:, None])
    np.testing.assert_allclose(si_sdr_db(x, y), task.numpy(), rtol=1e-4)


@pytest.mark.filterwarnings("ignore:stft_data changed shape")
def test_mel_distance_is_zero_for_identical_clips_and_the_task_loss_otherwise():
    pytest.importorskip("dac")
    import torch
    from audiotools import AudioSignal

    from discodiff.training.codec_task import CodecTaskConfig, mel_loss

    x = chord(C_MAJOR, 1.0)
    assert mel_distance(x, x.copy(), SR) == 0.0
    far = mel_distance(x, noise(1.0), SR)
    near = mel_distance(x, x + 0.01 * noise(1.0), SR)
    assert far > near > 0
    batch = mel_distance(np.stack([x, x]), np.stack([x, noise(1.0)]), SR)
    assert batch.shape == (2,) and batch[0] == 0.0 and batch[1] == pytest.approx(far, rel=1e-6)
    stock = mel_loss(CodecTaskConfig().mel)(AudioSignal(torch.from_numpy(noise(1.0))[None, None], SR),
                                           AudioSignal(torch.from_numpy(x)[None, None], SR))
    assert far == pytest.approx(float(stock), rel=1e-5)


# --- a codec over a set of clips -----------------------------------------------------------------------------


@pytest.mark.filterwarnings("ignore:stft_data changed shape")
def test_evaluate_codec_on_the_tiny_codec_reports_finite_numbers(tiny_codec):
    pytest.importorskip("dac")
    import torch

    tracks = [(voice(220.0, 1.0), chord(C_MAJOR, 1.0)), (torch.from_numpy(voice(330.0, 0.8)), chord(F_SHARP_MAJOR, 1.2))]
    threads = torch.get_num_threads()
    report = evaluate_codec(tiny_codec, tracks, names=["a", "b"], progress=False)
    assert torch.get_num_threads() == threads  # restored
    assert isinstance(report, CodecReport)
    record = report.to_dict()
    expected = {"codec", "sample_rate", "tracks", "clips", "audio_seconds", "mel_distance", "mel_distance_vocals",
                "mel_distance_accompaniment", "si_sdr_db", "si_sdr_db_vocals", "si_sdr_db_accompaniment",
                "pitch_within_half_semitone", "pitch_voicing_missed", "pitch_voiced_frames", "chroma_similarity",
                "pitch_grid_distance", "pitch_grid_distance_original", "codebook_size", "codebook_perplexity", "codebook_used", "codebook_perplexity_min", "codebook_used_min",
                "encode_rtf", "decode_rtf", "threads", "device", "per_track"}
    assert expected <= set(record)
    json.dumps(record, allow_nan=False)
    assert record["tracks"] == 2 and record["clips"] == 4 and record["threads"] == 1
    assert record["audio_seconds"] == pytest.approx(1.0 + 1.0 + 0.8 + 1.2, abs=1e-3)
    for key in ("mel_distance", "si_sdr_db", "pitch_within_half_semitone", "pitch_voicing_missed", "chroma_similarity",
                "encode_rtf", "decode_rtf", "codebook_perplexity_min", "codebook_used_min"):
        assert math.isfinite(record[key]), key
    assert record["mel_distance"] > 0 and record["encode_rtf"] > 0 and record["decode_rtf"] > 0
    assert record["pitch_voiced_frames"] > 100
    assert 0.05 < record["pitch_grid_distance_original"] < 0.5  # the test voices are not on the 43.07 Hz grid
    assert record["pitch_grid_distance"] is None or 0 <= record["pitch_grid_distance"] <= 0.5
    assert len(record["codebook_perplexity"]) == len(record["codebook_used"]) == tiny_codec.n_codebooks
    assert all(1 <= p <= record["codebook_size"] for p in record["codebook_perplexity"])
    assert [row["track"] for row in record["per_track"]] == ["a", "b"]
    assert record["mel_distance"] == pytest.approx(np.mean([row[f"mel_distance_{stem}"] for row in record["per_track"]
                                                            for stem in ("vocals", "accompaniment")]))


# --- the benchmark script ------------------------------------------------------------------------------------


def rendered_tree(root):
    """``write_rendered_tree`` of the codec training tests: 5 train-split and 3 validation-split tracks of 0.5 s."""
    pytest.importorskip("dac")
    from test_codec_training import write_rendered_tree

    return write_rendered_tree(root)


def run_bench(capsys, *args: str):
    from discodiff.bench.codec_quality import cli

    with pytest.raises(SystemExit) as exit_info:
        cli(list(args))
        raise SystemExit(0)
    return exit_info.value.code, capsys.readouterr()


@pytest.mark.filterwarnings("ignore:stft_data changed shape")
def test_bench_measures_the_requested_split_of_a_rendered_tree(tmp_path, capsys):
    from test_codec_training import split_of_track

    root = rendered_tree(tmp_path / "rendered")
    out = tmp_path / "report.json"
    code, captured = run_bench(capsys, "--codec", "tiny", "--data", str(root), "--split", "validation", "--seconds",
                               "0.4", "--limit", "2", "--json", str(out), "--quiet")
    assert code == 0, captured.err
    assert "mel distance" in captured.out and "chroma cosine similarity" in captured.out and "perplexity" in captured.out
    record = json.loads(out.read_text())
    assert record["tracks"] == 2 and record["settings"]["split"] == "validation"
    track_ids = [row["track"] for row in record["per_track"]]
    assert track_ids == sorted(track_ids) and all(split_of_track(root, track) == "validation" for track in track_ids)
    assert record["audio_seconds"] == pytest.approx(4 * 0.4, abs=1e-3)
    assert math.isfinite(record["mel_distance"]) and math.isfinite(record["encode_rtf"])


def test_bench_refuses_held_out_composers_and_bad_options(tmp_path, capsys):
    from test_codec_training import write_track

    root = rendered_tree(tmp_path / "rendered")
    write_track(root / "seed0" / "mozart-k331", "mozart/k331", seed=30)
    code, captured = run_bench(capsys, "--codec", "tiny", "--data", str(root), "--split", "validation")
    assert code == 1
    assert captured.err.startswith("error: ") and len(captured.err.strip().splitlines()) == 1
    assert "mozart/k331: not a Bach piece; other composers are held out" in captured.err
    code, captured = run_bench(capsys, "--codec", "tiny", "--data", str(root), "--seconds", "0")
    assert code == 1 and "--seconds 0: must be in (0, 600]" in captured.err
    code, captured = run_bench(capsys, "--codec", "tiny", "--data", str(root), "--json", str(tmp_path / "x.txt"))
    assert code == 1 and "give a file name ending in .json" in captured.err
