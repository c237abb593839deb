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

import numpy as np
import pytest
import soundfile as sf
import torch
from datasets import Dataset, load_from_disk
from datasets.table import MemoryMappedTable
from typer.testing import CliRunner

from discodiff.audio import save_audio
from discodiff.cli import app
from discodiff.conditioning import build_tiny_t5_conditioner
from discodiff.data.cache import CacheLayout, CodecInfo
from discodiff.data.caption_sources import read_caption_source
from discodiff.data.dataset import LatentCropDataset, collate_latent_batch
from discodiff.data.layout import read_captions
from discodiff.data.prepare import prepare_latent_cache
from discodiff.data.render import render_corpus
from discodiff.data.text_cache import cache_text_embeddings
from discodiff.data.windows import WindowSettings, select_windows, window_starts
from discodiff.latents import LatentStats
from conftest import tone

CHORALES = {"bach/bwv66.6": "bach-bwv66.6", "bach/bwv2.6": "bach-bwv2.6"}
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
    stats = LatentStats.load(out / "latent_stats.json")
    expected = LatentStats.fit(stored, codebook_dim=8, per="codebook")
    assert stats.per == "codebook" and stats.fitted
    torch.testing.assert_close(stats.mean, expected.mean, rtol=1e-6, atol=1e-9)
    torch.testing.assert_close(stats.std, expected.std, rtol=1e-6, atol=1e-9)
    assert stats.mean.shape == stats.std.shape == (9,)


def test_codec_json_describes_the_codec_and_checks_compatibility(prepared, tiny_codec, tiny_codec_k4d4):
    out, _ = prepared
    info = CodecInfo.load(out / "codec.json")
    assert info == CodecInfo("tiny", "transformers", 44100, 512, 9, 8, 64)
    assert info.latent_channels == 72 and info.frame_rate == pytest.approx(86.13, abs=0.01)
    info.check_compatible(tiny_codec)
    with pytest.raises(ValueError, match=r"n_codebooks 9 vs 4.*codebook_dim 8 vs 4.*re-run `discodiff prepare"):
        info.check_compatible(tiny_codec_k4d4)


def test_interrupted_run_resumes_to_the_same_cache(prepared, corpus, tiny_codec, tmp_path):
    out, first = prepared
    resumed = tmp_path / "resumed"
    shutil.copytree(out, resumed)
    shutil.rmtree(resumed / "dataset")  # stopped before the assembly
    (resumed / "latent_stats.json").unlink()
    (resumed / "prepare_report.json").unlink()
    shards = resumed / "shards"
    for track_id in ("bach-bwv66.6", "silent"):  # not finished: no report, no shard
        for suffix in (".json", ".arrow"):
            (shards / f"{track_id}{suffix}").unlink(missing_ok=True)
    (shards / "bach-bwv66.6.arrow.tmp-4242").write_bytes(b"half a shard")  # killed while writing
    (shards / "musdb%2Fbwv2.6-stems.json").unlink()  # killed between its shard and its report
    (shards / "musdb%2Fbwv2.6-stems.arrow").write_bytes(b"\x00" * 10)

    report = prepare_latent_cache(corpus, resumed, tiny_codec, "tiny", windows=WINDOWS, workers=2, progress=False)
    assert report.resumed == len(EXPECTED) - 3 and report.to_dict() == first.to_dict()
    assert not list(shards.glob("*.tmp-*"))
    before, after = rows(out), rows(resumed)
    keys = [(str(t), int(w)) for t, w in zip(after["track_id"], after["window"])]
    assert len(keys) == len(set(keys)) == len(before)
    for old, new in zip(before, after):
        assert old["track_id"] == new["track_id"] and list(old["captions"]) == list(new["captions"])
        for column in ("latents", "vocal_latents", "codes"):
            assert np.array_equal(old[column], new[column])
    assert (resumed / "latent_stats.json").read_text() == (out / "latent_stats.json").read_text()

    again = prepare_latent_cache(corpus, resumed, tiny_codec, "tiny", windows=WINDOWS, progress=False)
    assert again.resumed == len(EXPECTED) and len(rows(resumed)) == len(before)


def test_other_settings_refuse_to_resume(prepared, corpus, tiny_codec, tmp_path):
    out, _ = prepared
    resumed = tmp_path / "resumed"
    shutil.copytree(out / "shards", resumed / "shards")
    with pytest.raises(ValueError, match=r"other settings \(windows: .*window_seconds': 4\.0.*-> .*window_seconds': 5\.0"):
        prepare_latent_cache(corpus, resumed, tiny_codec, "tiny", progress=False,
                             windows=WindowSettings(window_seconds=5.0, min_seconds=2.0, quiet_dbfs=-40.0))


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


def test_prepare_command_errors_are_one_line(tmp_path):
    (tmp_path / "mixes").mkdir()
    save_audio(tmp_path / "mixes" / "song.wav", tone(1.0))
    result = runner.invoke(app, ["prepare", str(tmp_path / "mixes"), "--out", str(tmp_path / "out"), "--codec", "tiny", "--separate"])
    assert result.exit_code == 1 and len(result.output.strip().splitlines()) == 1
    assert "pip install 'discodiff[separation]'" in result.output
    result = runner.invoke(app, ["prepare", str(tmp_path / "mixes"), "--out", str(tmp_path / "out"), "--codec", "tiny"])
    assert result.exit_code == 1 and "no track folders with vocals" in result.output and "--separate" in result.output
