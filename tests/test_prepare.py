"""Latent-cache preparation and the training dataset, on rendered Bach chorales plus hand-made bad inputs.

The corpus: two chorales (6 s: one full 4 s window and a 2 s tail each), one chorale again as
MUSDB-style stems without captions, and tracks that must be dropped or filtered: a corrupt file, a
too-short track, a silent one, one whose vocal is far louder than its accompaniment, and one that
fades out. CPU only, tiny codec, no network.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import soundfile as sf
import torch
from datasets import Dataset, load_from_disk
from datasets.table import MemoryMappedTable
from typer.testing import CliRunner

from discodiff.audio import save_audio
from discodiff.cli import app
from discodiff.build import build_pipeline
from discodiff.codec import build_tiny_codec, load_codec
from discodiff.conditioning import build_tiny_clap_conditioner, build_tiny_t5_conditioner
from discodiff.config import DiscoDiffConfig
from discodiff.corpus.render import render_corpus
from discodiff.data.cache import CacheLayout, CodecInfo, UnverifiedCacheWarning
from discodiff.data.captions import read_caption_source, read_captions
from discodiff.data.dataset import LatentCropDataset, collate_latent_batch
from discodiff.data import prepare as prepare_module
from discodiff.data.layout import NO_ACCOMPANIMENT, NO_VOCALS, IncompleteFolder, find_stem_pairs
from discodiff.data.prepare import STEM_LENGTHS_DIFFER, prepare_latent_cache
from discodiff.data.text_cache import cache_text_embeddings, check_text_cache
from discodiff.data.windows import WindowSettings, select_windows, window_starts
from discodiff.errors import DataError, ExistingWorkError, OutputError
from discodiff.latents import LatentStats, check_latent_stats
from conftest import tone

CHORALES = {"bach/bwv66.6": "bach-bwv66.6", "bach/bwv2.6": "bach-bwv2.6"}
TINY_MODEL = Path(__file__).resolve().parents[1] / "configs" / "tiny.yaml"
STEMS_TRACK = "musdb/bwv2.6-stems"  # the bwv2.6 chorale as bass + other stems, no captions
SR = 44100
# rendered chorales sit near −27 dBFS RMS (unmastered), so the quiet threshold is lowered for them
WINDOWS = WindowSettings(window_seconds=4.0, min_seconds=2.0, quiet_dbfs=-40.0)
WINDOW_FRAMES, TAIL_FRAMES = 345, 173  # ceil(4 s · 44100 / 512), ceil(2 s · 44100 / 512)
EXPECTED = {  # track id -> (kept windows, skipped windows by reason, whole-track reason)
    "bach-bwv2.6": (2, {}, None),
    "bach-bwv66.6": (2, {}, None),
    "corrupt": (0, {}, "corrupt"),
    "fades": (1, {"filtered-quiet": 1, "too-short": 1}, None),
    STEMS_TRACK: (2, {}, None),
    "silent": (0, {}, "silent"),
    "too-short": (0, {}, "too-short"),
    "vocal-louder": (0, {"filtered-vocal-louder": 2}, None),
}
runner = CliRunner()


def write_track(root, track_id, vocals, **stems):
    """Write float32 WAV stems ``[1, T]`` (no 16-bit rounding, like the renderer)."""
    folder = root / track_id
    folder.mkdir(parents=True)
    for name, audio in {"vocals": vocals, **stems}.items():
        sf.write(folder / f"{name}.wav", np.asarray(audio, np.float32)[0], SR, subtype="FLOAT")


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    report = render_corpus(list(CHORALES), root, seconds=6.0, seed=0, progress=False)
    assert sorted(t.track_id for t in report.rendered) == sorted(CHORALES.values())
    vocals, _ = sf.read(root / "bach-bwv2.6" / "vocals.wav", dtype="float32")
    accompaniment, _ = sf.read(root / "bach-bwv2.6" / "accompaniment.wav", dtype="float32")
    write_track(root, STEMS_TRACK, vocals[None], bass=0.25 * accompaniment[None], other=0.75 * accompaniment[None])
    write_track(root, "corrupt", tone(5.0), accompaniment=tone(5.0))
    (root / "corrupt" / "vocals.wav").write_bytes(b"RIFF\x24\x00\x00\x00WAVEfmt garbage")
    write_track(root, "too-short", tone(0.5), accompaniment=tone(0.5))
    write_track(root, "silent", torch.zeros(1, 5 * SR), accompaniment=torch.zeros(1, 5 * SR))
    write_track(root, "vocal-louder", 1.8 * tone(8.0, freqs=(440.0,)), accompaniment=0.5 * tone(8.0))
    fading = tone(9.0)
    fading[:, 4 * SR :] *= 0.01  # −54 dBFS after 4 s
    write_track(root, "fades", 0.3 * tone(9.0, freqs=(440.0,)), accompaniment=fading)
    return root


@pytest.fixture(scope="module")
def prepared(corpus, tiny_codec, tmp_path_factory):
    out = tmp_path_factory.mktemp("prepared")
    report = prepare_latent_cache(corpus, out, tiny_codec, "tiny", windows=WINDOWS, progress=False)
    return out, report


def rows(out):
    return load_from_disk(str(out / "dataset")).with_format("numpy")


def window_audio(corpus, track_id, start_seconds, seconds):
    """``([1, 1, n] accompaniment, [1, 1, n] vocals)`` of a rendered track's window."""
    start, stop = round(start_seconds * SR), round((start_seconds + seconds) * SR)
    stems = [sf.read(corpus / track_id / f"{name}.wav", dtype="float32")[0][start:stop] for name in ("accompaniment", "vocals")]
    return [torch.from_numpy(x)[None, None] for x in stems]


# --- prepare ------------------------------------------------------------------------------------------


def test_good_windows_land_and_bad_inputs_are_reported_with_reasons(prepared):
    out, report = prepared
    assert [t.track_id for t in report.tracks] == sorted(EXPECTED)
    for track in report.tracks:
        assert (track.kept_windows, track.skipped_windows, track.skip_reason) == EXPECTED[track.track_id], track
    on_disk = json.loads((out / "prepare_report.json").read_text())
    assert on_disk["totals"]["tracks_skipped"] == {"corrupt": 1, "silent": 1, "too-short": 1}
    assert on_disk["totals"]["windows_skipped"] == {"filtered-quiet": 1, "too-short": 1, "filtered-vocal-louder": 2}
    corrupt = next(t for t in on_disk["tracks"] if t["track_id"] == "corrupt")
    assert "vocals.wav" in corrupt["detail"] and "cannot decode" in corrupt["detail"]
    assert report.uncaptioned == ["fades", STEMS_TRACK]
    assert next(t for t in on_disk["tracks"] if t["track_id"] == STEMS_TRACK)["warnings"] == ["no-captions"]

    dataset = rows(out)
    kept = {track_id: kept for track_id, (kept, _, _) in EXPECTED.items() if kept}
    assert sorted(set(dataset["track_id"])) == sorted(kept) and len(dataset) == sum(kept.values())
    assert [(str(t), int(w)) for t, w in zip(dataset["track_id"], dataset["window"])] == sorted(
        (str(t), int(w)) for t, w in zip(dataset["track_id"], dataset["window"]))


def test_rows_hold_the_encoded_windows_padded_and_captioned(prepared, corpus, tiny_codec):
    out, _ = prepared
    dataset = load_from_disk(str(out / "dataset"))
    features = dataset.features
    assert (features["latents"].shape, features["latents"].dtype) == ((72, WINDOW_FRAMES), "float16")
    assert (features["vocal_latents"].shape, features["codes"].shape, features["codes"].dtype) == (
        (72, WINDOW_FRAMES), (9, WINDOW_FRAMES), "int16")
    captions = read_captions(corpus / "captions.jsonl")
    by_window = {(r["track_id"], r["window"]): r for r in rows(out)}
    track_id = "bach-bwv66.6"
    full, tail = by_window[(track_id, 0)], by_window[(track_id, 1)]
    assert (full["num_frames"], tail["num_frames"], tail["start_seconds"]) == (WINDOW_FRAMES, TAIL_FRAMES, 4.0)
    assert list(full["captions"]) == captions[track_id] and len(captions[track_id]) > 1
    assert not tail["latents"][:, TAIL_FRAMES:].any() and (tail["codes"][:, TAIL_FRAMES:] == -1).all()
    for row, seconds in ((full, 4.0), (tail, 2.0)):  # stored = the window encoded on its own, up to float16
        accompaniment, vocals = window_audio(corpus, track_id, row["start_seconds"], seconds)
        latents, codes = tiny_codec.encode_with_codes(torch.cat([accompaniment, vocals]), progress=False)
        frames = row["num_frames"]
        np.testing.assert_allclose(row["latents"][:, :frames], latents[0].numpy(), rtol=2e-3, atol=1e-3)
        np.testing.assert_allclose(row["vocal_latents"][:, :frames], latents[1].numpy(), rtol=2e-3, atol=1e-3)
        assert (row["codes"][:, :frames] == codes[0].numpy()).mean() > 0.99  # float rounding may flip a tie
    summed = [by_window[(STEMS_TRACK, w)] for w in (0, 1)]  # bass + other = the rendered accompaniment
    for stems_row, window in zip(summed, (0, 1)):
        np.testing.assert_allclose(stems_row["latents"], by_window[("bach-bwv2.6", window)]["latents"], atol=2e-3)
        assert list(stems_row["captions"]) == []


def test_dataset_is_memory_mapped_and_stats_match_stored_latents(prepared):
    out, _ = prepared
    dataset = load_from_disk(str(out / "dataset"))
    assert isinstance(dataset.data, MemoryMappedTable) and dataset.cache_files
    stored = [torch.from_numpy(r["latents"][:, : r["num_frames"]].astype(np.float64)) for r in dataset.with_format("numpy")]
    stats = LatentStats.load(out / "dataset" / "latent_stats.json")  # published with the dataset, in one step
    assert CacheLayout(out).latent_stats_file == out / "dataset" / "latent_stats.json"
    assert not (out / "latent_stats.json").exists()
    expected = LatentStats.fit(stored, codebook_dim=8, per="codebook")
    assert stats.per == "codebook" and stats.fitted
    torch.testing.assert_close(stats.mean, expected.mean, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(stats.std, expected.std, rtol=1e-6, atol=1e-9)
    assert stats.mean.shape == stats.std.shape == (9,)


def test_codec_json_describes_the_codec_and_checks_compatibility(prepared, tiny_codec, tiny_codec_k4d4):
    out, _ = prepared
    info = CodecInfo.load(out / "codec.json")
    assert info == CodecInfo("tiny", "transformers", 44100, 512, 9, 8, 64, tiny_codec.fingerprint())
    assert info.latent_channels == 72 and info.frame_rate == pytest.approx(86.13, abs=0.01)
    info.check_compatible(tiny_codec)
    with pytest.raises(DataError, match=r"n_codebooks 9 vs 4.*codebook_dim 8 vs 4.*re-run `discodiff prepare"):
        info.check_compatible(tiny_codec_k4d4)


def test_a_cache_of_another_codec_of_the_same_geometry_is_refused(prepared):
    out, _ = prepared
    info = CodecInfo.load(out / "codec.json")
    other = build_tiny_codec(seed=1)  # the geometry of the seed-0 tiny codec the cache was made with
    assert other.spec == build_tiny_codec(seed=0).spec
    with pytest.raises(DataError, match=r"prepared with codec 'tiny' .*the model's codec 'runs/other-codec' has the same "
                                        r"geometry but other weights.*`discodiff prepare --codec runs/other-codec`"):
        info.check_compatible(other, "runs/other-codec")


def test_a_cache_without_a_codec_fingerprint_is_accepted_with_a_warning(prepared, tmp_path):
    out, _ = prepared
    earlier = json.loads((out / "codec.json").read_text())
    del earlier["fingerprint"]
    (tmp_path / "codec.json").write_text(json.dumps(earlier))
    info = CodecInfo.load(tmp_path / "codec.json")
    assert info.fingerprint is None
    with pytest.warns(UnverifiedCacheWarning, match=r"codec 'tiny'\) has no 'fingerprint' field"):
        info.check_compatible(build_tiny_codec(seed=1))


def test_interrupted_run_resumes_to_the_same_cache(prepared, corpus, tiny_codec, tmp_path):
    out, first = prepared
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    shutil.rmtree(resumed / "dataset")  # stopped before the assembly (the statistics live in dataset/)
    (resumed / "prepare_report.json").unlink()
    shards = resumed / "shards"
    for track_id in ("bach-bwv66.6", "silent"):  # not finished: no report, no shard
        for suffix in (".json", ".arrow"):
            (shards / f"{track_id}{suffix}").unlink(missing_ok=True)
    (shards / ".bach-bwv66.6.tmp-4242.arrow").write_bytes(b"half a shard")  # killed while writing (outputs.temporary_path)
    (shards / "bach-bwv66.6.arrow.tmp-4241").write_bytes(b"half a shard")  # the same, by an earlier version
    (resumed / ".dataset.tmp-4242").mkdir()  # killed while saving the dataset
    (resumed / ".dataset.tmp-4242" / "data-00000-of-00001.arrow").write_bytes(b"half a dataset")
    (shards / "musdb%2Fbwv2.6-stems.json").unlink()  # killed between its shard and its report
    (shards / "musdb%2Fbwv2.6-stems.arrow").write_bytes(b"\x00" * 10)

    report = prepare_latent_cache(corpus, resumed, tiny_codec, "tiny", windows=WINDOWS, workers=2, progress=False)
    assert report.resumed == len(EXPECTED) - 3 and report.to_dict() == first.to_dict()
    assert not list(shards.glob("*.tmp-*")) and not list(resumed.glob(".*"))
    before, after = rows(out), rows(resumed)
    keys = [(str(t), int(w)) for t, w in zip(after["track_id"], after["window"])]
    assert len(keys) == len(set(keys)) == len(before)
    for old, new in zip(before, after):
        assert old["track_id"] == new["track_id"] and list(old["captions"]) == list(new["captions"])
        for column in ("latents", "vocal_latents", "codes"):
            assert np.array_equal(old[column], new[column])
    assert (resumed / "dataset" / "latent_stats.json").read_text() == (out / "dataset" / "latent_stats.json").read_text()

    again = prepare_latent_cache(corpus, resumed, tiny_codec, "tiny", windows=WINDOWS, progress=False)
    assert again.resumed == len(EXPECTED) and len(rows(resumed)) == len(before)


def test_other_settings_refuse_to_resume(prepared, corpus, tiny_codec, tmp_path):
    out, _ = prepared
    resumed = tmp_path / "resumed"
    shutil.copytree(out / "shards", resumed / "shards")
    with pytest.raises(DataError, match=r"other settings \(windows: .*window_seconds': 4\.0.*-> .*window_seconds': 5\.0"):
        prepare_latent_cache(corpus, resumed, tiny_codec, "tiny", progress=False,
                             windows=WindowSettings(window_seconds=5.0, min_seconds=2.0, quiet_dbfs=-40.0))


def test_resuming_with_another_codec_of_the_same_geometry_is_refused(prepared, corpus, tiny_codec, tmp_path):
    out, _ = prepared
    resumed = tmp_path / "resumed"
    shutil.copytree(out / "shards", resumed / "shards")
    other = build_tiny_codec(seed=1)
    pattern = rf"other settings \(codec: .*'fingerprint': '{tiny_codec.fingerprint()}'.*-> .*'fingerprint': '{other.fingerprint()}'"
    with pytest.raises(DataError, match=pattern):
        prepare_latent_cache(corpus, resumed, other, "tiny", windows=WINDOWS, progress=False)
    assert not (resumed / "dataset").exists()


def test_a_cache_from_before_codec_fingerprints_resumes_with_a_warning(prepared, corpus, tiny_codec, tmp_path):
    out, first = prepared
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    settings_file = resumed / "shards" / "settings.json"
    earlier = json.loads(settings_file.read_text())
    del earlier["codec"]["fingerprint"]
    settings_file.write_text(json.dumps(earlier))
    with pytest.warns(UnverifiedCacheWarning, match=r"settings.json: the earlier work records no codec 'fingerprint'"):
        report = prepare_latent_cache(corpus, resumed, tiny_codec, "tiny", windows=WINDOWS, progress=False)
    assert report.resumed == len(first.tracks)
    assert json.loads(settings_file.read_text())["codec"]["fingerprint"] == tiny_codec.fingerprint()


class QuarterSplit:
    """A stand-in for Demucs (which needs its weights): vocals = ¼ of the mono mix, accompaniment = ¾."""

    model_name = "quarter-split"

    def __call__(self, mix, sample_rate):
        mono = mix.mean(dim=0, keepdim=True)
        return 0.25 * mono, 0.75 * mono


def test_mixes_are_separated_then_prepared(corpus, tiny_codec, tmp_path):
    (tmp_path / "mixes" / "songs").mkdir(parents=True)
    shutil.copy(corpus / "bach-bwv66.6" / "mixture.wav", tmp_path / "mixes" / "songs" / "bwv66.6.wav")
    report = prepare_latent_cache(tmp_path / "mixes", tmp_path / "out", tiny_codec, "tiny", windows=WINDOWS,
                                  separator=QuarterSplit(), progress=False)
    assert [(t.track_id, t.kept_windows) for t in report.tracks] == [("songs/bwv66.6", 2)]
    assert report.settings["separation"] == "quarter-split" and report.uncaptioned == ["songs/bwv66.6"]
    mix = torch.from_numpy(sf.read(corpus / "bach-bwv66.6" / "mixture.wav", dtype="float32")[0][: 4 * SR])
    latents = tiny_codec.encode(torch.stack([0.75 * mix, 0.25 * mix])[:, None], progress=False)
    first = rows(tmp_path / "out")[0]
    np.testing.assert_allclose(first["latents"], latents[0].numpy(), rtol=2e-3, atol=1e-3)
    np.testing.assert_allclose(first["vocal_latents"], latents[1].numpy(), rtol=2e-3, atol=1e-3)


# --- small corpora: changed inputs, incomplete folders, uneven stems, publishing, the output check ---------

SMALL = WindowSettings(window_seconds=1.0, min_seconds=0.5, quiet_dbfs=-40.0)  # 2 s tracks: two 1 s windows
GARBAGE = b"RIFF\x24\x00\x00\x00WAVEfmt garbage"


def small_track(root, track_id, seconds=2.0, accompaniment_seconds=None, freqs=(220.0, 277.2, 329.6)):
    """A 2 s track whose vocal sits well below its accompaniment (every window is kept)."""
    write_track(root, track_id, 0.3 * tone(seconds, freqs=(440.0,)),
                accompaniment=tone(accompaniment_seconds or seconds, freqs=freqs))


def prepare_small(stems, out, codec, **kwargs):
    return prepare_latent_cache(stems, out, codec, "tiny", windows=SMALL, progress=False, **kwargs)


def by_id(report):
    return {track.track_id: track for track in report.tracks}


def track_latents(out, track_id):
    dataset = rows(out)
    return np.stack([row["latents"] for row in dataset if row["track_id"] == track_id])


def test_a_repaired_corrupt_stem_is_retried(tiny_codec, tmp_path):
    stems, out = tmp_path / "stems", tmp_path / "out"
    small_track(stems, "broken")
    small_track(stems, "good")
    vocals = (stems / "broken" / "vocals.wav").read_bytes()
    (stems / "broken" / "vocals.wav").write_bytes(GARBAGE)
    first = prepare_small(stems, out, tiny_codec)
    assert by_id(first)["broken"].skip_reason == "corrupt" and sorted(set(rows(out)["track_id"])) == ["good"]

    (stems / "broken" / "vocals.wav").write_bytes(vocals)  # repaired
    second = prepare_small(stems, out, tiny_codec)
    broken = by_id(second)["broken"]
    assert (broken.skip_reason, broken.detail, broken.kept_windows) == (None, None, 2) and second.resumed == 1
    assert [(str(t), int(w)) for t, w in zip(rows(out)["track_id"], rows(out)["window"])] == [
        ("broken", 0), ("broken", 1), ("good", 0), ("good", 1)]
    assert json.loads((out / "prepare_report.json").read_text())["totals"]["tracks_skipped"] == {}


def test_a_replaced_stem_gets_new_latents(tiny_codec, tmp_path):
    stems, out = tmp_path / "stems", tmp_path / "out"
    small_track(stems, "a")
    small_track(stems, "b")
    prepare_small(stems, out, tiny_codec)
    before_a, before_b = track_latents(out, "a"), track_latents(out, "b")
    size = (stems / "b" / "accompaniment.wav").stat().st_size

    replacement = tone(2.0, freqs=(110.0, 164.8))
    sf.write(stems / "b" / "accompaniment.wav", replacement[0].numpy(), SR, subtype="FLOAT")  # same size, new content
    assert (stems / "b" / "accompaniment.wav").stat().st_size == size
    report = prepare_small(stems, out, tiny_codec)
    assert report.resumed == 1 and by_id(report)["b"].kept_windows == 2
    after_b = track_latents(out, "b")
    assert np.array_equal(track_latents(out, "a"), before_a) and not np.allclose(after_b, before_b, atol=1e-2)
    expected = tiny_codec.encode(replacement[:, None, :SR], progress=False)[0].numpy()  # the first 1 s window
    np.testing.assert_allclose(after_b[0].astype(np.float32), expected, rtol=2e-3, atol=1e-3)

    report_file = out / "shards" / "a.json"  # a report from before fingerprints were recorded: redone
    report_file.write_text(json.dumps({k: v for k, v in json.loads(report_file.read_text()).items() if k != "fingerprint"}))
    assert prepare_small(stems, out, tiny_codec).resumed == 1
    assert "fingerprint" in json.loads(report_file.read_text())


def test_folders_that_are_not_tracks_are_reported_with_the_reason(tiny_codec, tmp_path):
    stems, out = tmp_path / "stems", tmp_path / "out"
    small_track(stems, "good")
    write_track(stems, "vocal-only", tone(2.0))
    write_track(stems, "band/no-vocals", tone(2.0), drums=tone(2.0))
    (stems / "band" / "no-vocals" / "vocals.wav").unlink()
    write_track(stems, "unnamed", tone(2.0), lead=tone(2.0), piano=tone(2.0))
    (stems / "unnamed" / "vocals.wav").rename(stems / "unnamed" / "voice.wav")
    (stems / "good" / "._vocals.wav").write_bytes(b"macOS metadata")  # hidden files are not stems

    report = prepare_small(stems, out, tiny_codec)
    assert [t.track_id for t in report.tracks] == ["good"] and find_stem_pairs(stems)[0].track_id == "good"
    assert report.skipped_folders == [
        IncompleteFolder("band/no-vocals", NO_VOCALS),
        IncompleteFolder("unnamed", "no recognised stems (vocals.* with accompaniment.* or drums/bass/other.*) "
                                    "among lead.wav, piano.wav, voice.wav"),
        IncompleteFolder("vocal-only", NO_ACCOMPANIMENT)]
    assert NO_ACCOMPANIMENT == "no accompaniment stem (accompaniment.* or drums/bass/other.*)"
    on_disk = json.loads((out / "prepare_report.json").read_text())
    assert on_disk["totals"]["folders_skipped"] == 3
    assert on_disk["skipped_folders"][2] == {"path": "vocal-only", "reason": NO_ACCOMPANIMENT}

    shutil.rmtree(stems / "good")  # only incomplete folders: the error names them
    with pytest.raises(DataError, match=r"no track folders .* found; .*--separate \(3 incomplete folders, e\.g\. "
                                        r"'band/no-vocals': no vocal stem"):
        prepare_small(stems, tmp_path / "other", tiny_codec)


def test_track_folders_reached_through_symlinks_are_found_and_a_link_cycle_ends(tmp_path):
    rendered, selection = tmp_path / "rendered", tmp_path / "selection"
    write_track(rendered, "seed0/chorale-a", tone(2.0), accompaniment=tone(2.0))
    write_track(rendered, "seed1/chorale-b", tone(2.0), accompaniment=tone(2.0))
    selection.mkdir()
    (selection / "chorale-a").symlink_to(rendered / "seed0" / "chorale-a")
    (selection / "more").symlink_to(rendered / "seed1")
    (rendered / "seed1" / "loop").symlink_to(selection)  # selection/more/loop/... leads back to selection
    assert [pair.track_id for pair in find_stem_pairs(selection)] == ["chorale-a", "more/chorale-b"]


def test_stems_of_different_lengths_are_padded_with_a_warning(tiny_codec, tmp_path):
    stems, out = tmp_path / "stems", tmp_path / "out"
    small_track(stems, "uneven", seconds=2.0, accompaniment_seconds=1.5)
    small_track(stems, "within-a-hop", seconds=2.0, accompaniment_seconds=2.0 - 300 / SR)  # 300 samples < hop 512
    report = prepare_small(stems, out, tiny_codec)
    uneven, even = by_id(report)["uneven"], by_id(report)["within-a-hop"]
    assert uneven.warnings == [STEM_LENGTHS_DIFFER, "no-captions"] and uneven.seconds == pytest.approx(2.0)
    assert uneven.stem_seconds == {"vocals.wav": 2.0, "accompaniment.wav": 1.5} and uneven.kept_windows == 2
    assert even.warnings == ["no-captions"] and even.stem_seconds is None
    on_disk = json.loads((out / "prepare_report.json").read_text())
    assert on_disk["totals"]["tracks_with_stem_lengths_differing"] == 1 and report.uneven_stems == ["uneven"]
    assert next(t for t in on_disk["tracks"] if t["track_id"] == "uneven")["stem_seconds"] == uneven.stem_seconds
    tail = rows(out)[1]  # the second window of "uneven": its last 0.5 s of accompaniment is the padding
    assert tail["track_id"] == "uneven" and int(tail["num_frames"]) == 87


class Killed(BaseException):
    """Stands in for a kill: nothing after it runs (``except Exception`` does not catch it)."""


def test_a_kill_while_publishing_leaves_a_complete_dataset_and_its_stats(tiny_codec, tmp_path, monkeypatch):
    stems, out = tmp_path / "stems", tmp_path / "out"
    small_track(stems, "a")
    small_track(stems, "b")
    prepare_small(stems, out, tiny_codec)

    def published(cache):
        """The rows' latents and the statistics a reader sees, or None when it sees no finished cache."""
        layout = CacheLayout(cache)
        try:
            dataset = load_from_disk(str(layout.require_dataset())).with_format("numpy")
        except FileNotFoundError:
            return None
        return np.stack(dataset["latents"]), layout.latent_stats_file.read_text()

    old = published(out)
    sf.write(stems / "b" / "accompaniment.wav", tone(2.0, freqs=(110.0, 164.8))[0].numpy(), SR, subtype="FLOAT")
    prepare_small(stems, tmp_path / "reference", tiny_codec)
    new = published(tmp_path / "reference")
    assert not np.array_equal(old[0], new[0]) and old[1] != new[1]

    real_replace = os.replace
    for kill_at in range(10):  # a kill at each rename that publishes the dataset and its statistics, in turn
        trial = tmp_path / f"killed-at-{kill_at}"
        shutil.copytree(out, trial)
        renames = []

        def replace(source, target, trial=trial, renames=renames, kill_at=kill_at):
            parts = Path(target).relative_to(trial).parts if Path(target).is_relative_to(trial) else ()
            if parts[:1] == ("dataset",) or (len(parts) == 1 and parts[0] not in ("codec.json", "prepare_report.json")):
                renames.append(target)  # a rename onto the published dataset, into it, or next to it
                if len(renames) == kill_at + 1:
                    raise Killed(target)
            real_replace(source, target)

        monkeypatch.setattr(os, "replace", replace)
        try:
            prepare_small(stems, trial, tiny_codec)
            finished = True
        except Killed:
            finished = False
        finally:
            monkeypatch.setattr(os, "replace", real_replace)
        seen = published(trial)
        if seen is not None:  # the old pair or the new one, never rows of one run with the statistics of the other
            assert any(np.array_equal(seen[0], pair[0]) and seen[1] == pair[1] for pair in (old, new)), kill_at
        if finished:
            assert kill_at >= 1 and seen is not None and np.array_equal(seen[0], new[0])
            break
        prepare_small(stems, trial, tiny_codec)  # the rerun finishes the cache and leaves nothing behind
        rerun = published(trial)
        assert np.array_equal(rerun[0], new[0]) and rerun[1] == new[1]
        assert not [p.name for p in trial.iterdir() if p.name.startswith(".")]
    else:
        raise AssertionError("prepare never finished")


def test_an_unrelated_out_folder_is_refused_before_any_work(tiny_codec, tmp_path, monkeypatch):
    def no_work(*args, **kwargs):
        raise AssertionError("work started before --out was checked")

    monkeypatch.setattr(prepare_module, "_decode_jobs", no_work)
    monkeypatch.setattr(prepare_module, "decode_track", no_work)
    notes = tmp_path / "notes"
    notes.mkdir()
    (notes / "todo.txt").write_text("mine")
    with pytest.raises(ExistingWorkError, match=r"--out .*notes is a non-empty folder .*\(no shards\); choose a new or empty folder"):
        prepare_small(tmp_path / "stems", notes, tiny_codec)
    assert [p.name for p in notes.iterdir()] == ["todo.txt"]
    (tmp_path / "cache.txt").write_text("a file")
    with pytest.raises(OutputError, match=r"cache\.txt is a file, not a folder"):
        prepare_small(tmp_path / "stems", tmp_path / "cache.txt", tiny_codec)
    with pytest.raises(OutputError, match=r"cache\.txt is a file, not a folder"):
        prepare_small(tmp_path / "stems", tmp_path / "cache.txt" / "out", tiny_codec)


def test_data_problems_are_data_errors_naming_the_input(tiny_codec, tmp_path):
    with pytest.raises(DataError, match=r"missing: no such directory; pass the folder that holds the track folders"):
        prepare_small(tmp_path / "missing", tmp_path / "out", tiny_codec)
    small_track(tmp_path / "stems", "good")
    with pytest.raises(DataError, match=r"captions .*nope\.csv: no such file or folder; pass --captions"):
        prepare_small(tmp_path / "stems", tmp_path / "out", tiny_codec, captions=tmp_path / "nope.csv")
    with pytest.raises(DataError, match=r"stems: no window of any track was kept; see .*prepare_report\.json"):
        prepare_latent_cache(tmp_path / "stems", tmp_path / "out", tiny_codec, "tiny", progress=False,
                             windows=WindowSettings(window_seconds=4.0, min_seconds=3.0))


@pytest.mark.slow
def test_kill_9_mid_run_then_rerun_gives_the_uninterrupted_cache(prepared, corpus, tmp_path):
    out, _ = prepared
    command = [sys.executable, "-m", "discodiff.cli", "prepare", str(corpus), "--out", str(tmp_path / "killed"),
               "--codec", "tiny", "--window-seconds", "4", "--min-seconds", "2", "--quiet-dbfs", "-40", "--quiet"]
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    while not list((tmp_path / "killed" / "shards").glob("*.json"))[1:]:  # settings.json + one finished track
        assert process.poll() is None, "prepare ended before it could be killed"
        time.sleep(0.005)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    assert not (tmp_path / "killed" / "dataset").exists()
    assert subprocess.run(command, capture_output=True).returncode == 0
    for old, new in zip(rows(out), rows(tmp_path / "killed"), strict=True):
        assert old["track_id"] == new["track_id"] and np.array_equal(old["latents"], new["latents"])


# --- dataset ------------------------------------------------------------------------------------------


def test_crops_have_the_contract_shapes_multiples_and_masks(prepared):
    out, _ = prepared
    dataset = LatentCropDataset(out, crop_frames=300, frame_multiple=16, seed=0)
    stored = rows(out)
    assert dataset.crop_frames == 288 and len(dataset) == len(stored)
    for index in range(len(dataset)):
        item, row = dataset[index], stored[index]
        assert item["latents"].shape == item["vocal_latents"].shape == (72, 288) and item["latents"].dtype == torch.float32
        real = min(int(row["num_frames"]), 288)
        assert item["frame_mask"].dtype == torch.bool and item["frame_mask"].sum() == real and item["frame_mask"][:real].all()
        assert not item["latents"][:, real:].any() and not item["vocal_latents"][:, real:].any()
        assert item["track_id"] == row["track_id"]
        assert item["caption"] in list(row["captions"]) or (item["caption"] == "" and not len(row["captions"]))
        latents = torch.from_numpy(row["latents"])
        starts = [s for s in range(int(row["num_frames"]) - real + 1) if torch.equal(latents[:, s : s + real], item["latents"][:, :real])]
        assert starts, "the crop is not a slice of the stored window"

    loader = torch.utils.data.DataLoader(dataset, batch_size=3, collate_fn=collate_latent_batch)
    batch = next(iter(loader))
    assert set(batch) == {"latents", "vocal_latents", "frame_mask", "captions", "track_ids"}
    assert batch["latents"].shape == batch["vocal_latents"].shape == (3, 72, 288) and batch["frame_mask"].shape == (3, 288)
    assert len(batch["captions"]) == len(batch["track_ids"]) == 3


def test_items_depend_only_on_seed_epoch_and_index(prepared):
    out, _ = prepared
    first, second = (LatentCropDataset(out, crop_frames=128, seed=3) for _ in range(2))
    second.set_epoch(1)
    moved = 0
    for index in reversed(range(len(first))):  # another access order must not matter
        a, b = first[index], second[index]
        second.set_epoch(0)
        again = second[index]
        second.set_epoch(1)
        assert all(torch.equal(a[k], again[k]) for k in ("latents", "vocal_latents", "frame_mask"))
        assert a["caption"] == again["caption"]
        moved += not torch.equal(a["latents"], b["latents"])
    assert moved >= len(first) // 2  # a new epoch draws new crops
    other_seed = LatentCropDataset(out, crop_frames=128, seed=4)
    assert not torch.equal(other_seed[0]["vocal_latents"], first[0]["vocal_latents"])


def test_captions_are_drawn_among_the_tracks_captions(prepared, corpus):
    out, _ = prepared
    dataset = LatentCropDataset(out, crop_frames=64)
    captions = read_captions(corpus / "captions.jsonl")
    index = [str(t) for t in rows(out)["track_id"]].index("bach-bwv66.6")
    drawn = set()
    for epoch in range(30):
        dataset.set_epoch(epoch)
        drawn.add(dataset[index]["caption"])
    assert drawn <= set(captions["bach-bwv66.6"]) and len(drawn) > 1


def test_noisy_vocals_have_the_set_level_in_normalised_units(prepared):
    out, _ = prepared
    clean = LatentCropDataset(out, crop_frames=WINDOW_FRAMES, noisy_vocal_std=0.0)
    noisy = LatentCropDataset(out, crop_frames=WINDOW_FRAMES, noisy_vocal_std=0.5)
    stats = clean.latent_stats
    noise = torch.cat([(noisy[i]["vocal_latents"] - clean[i]["vocal_latents"])[:, clean[i]["frame_mask"]]
                       for i in range(len(clean))], dim=1)
    normalised = noise / stats.std.repeat_interleave(8).float()[:, None]
    assert normalised.std().item() == pytest.approx(0.5, rel=0.03) and abs(normalised.mean().item()) < 0.02
    assert torch.equal(noisy[0]["latents"], clean[0]["latents"])
    tail = next(i for i in range(len(noisy)) if not noisy[i]["frame_mask"].all())
    assert not noisy[tail]["vocal_latents"][:, ~noisy[tail]["frame_mask"]].any()  # padding stays zero


def test_bad_crop_settings_and_missing_cache_are_explained(prepared, tmp_path):
    out, _ = prepared
    with pytest.raises(ValueError, match="crop_frames=8 must be at least frame_multiple=16"):
        LatentCropDataset(out, crop_frames=8, frame_multiple=16)
    with pytest.raises(FileNotFoundError, match="discodiff prepare"):
        LatentCropDataset(tmp_path, crop_frames=64)


def test_text_cache_gives_the_encoder_outputs_and_collate_pads_them(prepared, tmp_path):
    out, _ = prepared
    cached = tmp_path / "cached"
    shutil.copytree(out, cached)
    conditioner = build_tiny_t5_conditioner(seed=0)
    with pytest.raises(FileNotFoundError, match="cache_text_embeddings"):
        LatentCropDataset(cached, crop_frames=64, text_cache=True)
    cache_text_embeddings(cached, conditioner, batch_size=4, progress=False)
    dataset = LatentCropDataset(cached, crop_frames=64, text_cache=True)
    items = [dataset[i] for i in range(len(dataset))]
    for item in items:
        expected = conditioner([item["caption"]])
        assert torch.allclose(item["text_sequence"], expected.sequence[0], atol=1e-5)
        assert torch.allclose(item["text_pooled"], expected.pooled[0], atol=1e-5) and item["text_mask"].all()
    batch = collate_latent_batch(items)
    lengths = [len(item["text_sequence"]) for item in items]
    assert batch["text_sequence"].shape == (len(items), max(lengths), 32) and batch["text_pooled"].shape == (len(items), 32)
    assert batch["text_mask"].sum(dim=1).tolist() == lengths and not batch["text_sequence"][~batch["text_mask"]].any()
    assert len(set(lengths)) > 1 and "" in {item["caption"] for item in items}  # uncaptioned tracks use ""


def test_text_cache_of_another_encoder_is_refused(prepared, tmp_path):
    out, _ = prepared
    cached = tmp_path / "cached"
    shutil.copytree(out, cached)
    with pytest.raises(DataError, match=r"encoder.json: missing.*cache_text_embeddings"):
        check_text_cache(cached, build_tiny_t5_conditioner(seed=0))
    cache_text_embeddings(cached, build_tiny_t5_conditioner(seed=0, max_length=256), batch_size=8, progress=False)
    check_text_cache(cached, build_tiny_t5_conditioner(seed=0, max_length=256))
    check_text_cache(cached / "text_cache", build_tiny_t5_conditioner(seed=0, max_length=256))
    with pytest.raises(DataError, match=r"another text encoder than the model's \(max_length 256 vs 160: cache vs model\)"):
        check_text_cache(cached, build_tiny_t5_conditioner(seed=0, max_length=160))
    with pytest.raises(DataError, match=r"class 'FlanT5Conditioner' vs 'ClapTextConditioner'.*pooled_dim 32 vs 16"):
        check_text_cache(cached, build_tiny_clap_conditioner(seed=0))


def test_latent_stats_fitted_per_something_else_are_refused(prepared):
    out, _ = prepared
    path = out / "dataset" / "latent_stats.json"
    stats = LatentStats.load(path)
    check_latent_stats(stats, "codebook", 8, source=path)
    with pytest.raises(DataError, match=r"latent_stats.json: fitted per codebook, but the model config has "
                                        r"normalize_per=channel; re-run `discodiff prepare --normalize-per channel`"):
        check_latent_stats(stats, "channel", 8, source=path)
    with pytest.raises(DataError, match=r"the latent statistics: fitted on codebooks of 8 channels, but the model's codec has 4"):
        check_latent_stats(stats, "codebook", 4)


# --- inputs -------------------------------------------------------------------------------------------


def test_windows_reach_the_end_and_overlap_with_a_hop():
    assert window_starts(10, 4, 4) == [0, 4, 8] and window_starts(8, 4, 4) == [0, 4] and window_starts(3, 4, 4) == [0]
    assert window_starts(9, 4, 2) == [0, 2, 4, 6]
    audio = np.ones(9 * 1000, np.float32) * 0.1
    selection = select_windows(audio * 0.5, audio, 1000, WindowSettings(4.0, hop_seconds=2.0, min_seconds=2.0))
    assert [(w.index, w.start, len(w)) for w in selection.kept] == [(0, 0, 4000), (1, 2000, 4000), (2, 4000, 4000), (3, 6000, 3000)]
    with pytest.raises(ValueError, match="hop_seconds=5.0"):
        WindowSettings(4.0, hop_seconds=5.0)


def test_caption_sources_csv_dataset_and_jsonl(corpus, tmp_path):
    csv_file = tmp_path / "captions.csv"
    csv_file.write_text('track_id,caption\nfades,"soft, then silent"\nfades,a fade-out\nsilent,nothing\n', encoding="utf-8")
    assert read_caption_source(csv_file) == {"fades": ["soft, then silent", "a fade-out"], "silent": ["nothing"]}
    Dataset.from_dict({"track_id": ["fades", "silent"], "caption": ["a fade-out", "nothing"]}).save_to_disk(str(tmp_path / "ds"))
    assert read_caption_source(tmp_path / "ds") == {"fades": ["a fade-out"], "silent": ["nothing"]}
    assert read_caption_source(corpus / "captions.jsonl") == read_captions(corpus / "captions.jsonl")
    (tmp_path / "bad.csv").write_text("id,text\nx,y\n")
    with pytest.raises(ValueError, match="bad.csv: the CSV needs a header with 'track_id' and 'caption'"):
        read_caption_source(tmp_path / "bad.csv")


# --- command line --------------------------------------------------------------------------------------


def test_prepare_command_on_the_tiny_codec(corpus, tmp_path):
    stems = tmp_path / "stems"
    shutil.copytree(corpus / "bach-bwv66.6", stems / "bach-bwv66.6")
    csv_file = tmp_path / "captions.csv"
    csv_file.write_text("track_id,caption\nbach-bwv66.6,a chorale\n", encoding="utf-8")
    result = runner.invoke(app, ["prepare", str(stems), "--out", str(tmp_path / "out"), "--codec", "tiny", "--captions",
                                 str(csv_file), "--window-seconds", "4", "--min-seconds", "2", "--quiet-dbfs", "-40", "--quiet"])
    assert result.exit_code == 0, result.output
    assert "2 windows" in result.output and "from 1 of 1 tracks" in result.output
    dataset = LatentCropDataset(tmp_path / "out", crop_frames=100)
    assert len(dataset) == 2 and dataset[0]["caption"] == "a chorale"
    assert CacheLayout(tmp_path / "out").report_file.is_file()


def test_tiny_codec_of_prepare_is_the_tiny_codec_of_every_model(corpus, tmp_path):
    stems = tmp_path / "stems"
    shutil.copytree(corpus / "bach-bwv66.6", stems / "bach-bwv66.6")
    result = runner.invoke(app, ["prepare", str(stems), "--out", str(tmp_path / "out"), "--codec", "tiny",
                                 "--window-seconds", "4", "--min-seconds", "2", "--quiet-dbfs", "-40", "--quiet"])
    assert result.exit_code == 0, result.output
    info = CodecInfo.load(tmp_path / "out" / "codec.json")
    model_codec = build_pipeline(DiscoDiffConfig.from_yaml(TINY_MODEL), seed=3).codec  # 'tiny' does not follow the seed
    assert info.fingerprint == model_codec.fingerprint() == load_codec("tiny").fingerprint()
    assert all(torch.equal(a, b) for a, b in zip(model_codec.state_dict().values(), load_codec("tiny").state_dict().values()))
    info.check_compatible(model_codec, "tiny")


def test_prepare_command_errors_are_one_line(tmp_path):
    (tmp_path / "mixes").mkdir()
    save_audio(tmp_path / "mixes" / "song.wav", tone(1.0))
    result = runner.invoke(app, ["prepare", str(tmp_path / "mixes"), "--out", str(tmp_path / "out"), "--codec", "tiny", "--separate"])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "pip install 'discodiff[separation]'" in result.output
    result = runner.invoke(app, ["prepare", str(tmp_path / "mixes"), "--out", str(tmp_path / "out"), "--codec", "tiny"])
    assert result.exit_code == 1 and "no track folders with vocals" in result.output and "--separate" in result.output
