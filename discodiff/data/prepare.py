"""``discodiff prepare``: stems (or mixes separated with Demucs) → filtered windows → DAC latents → a latent cache.

Per track: decode the stems (accompaniment files summed; a stem that ends early is padded with silence
and the track gets a ``stem-lengths-differ`` warning) or the mix, separate the mix if asked, cut and
filter windows (:mod:`.windows`), encode accompaniment and vocal with the codec, and write the track's
rows to ``OUT/shards/<track>.arrow`` and then its report to ``<track>.json``, each through a temporary
file renamed into place. The report records the track's input fingerprint (size and modification time
of each of its files): a track is finished exactly when its report exists with the fingerprint its files
have now. A rerun skips finished tracks and redoes the others (a stem repaired or replaced since,
including one that was corrupt), so a run stopped at any point (even ``kill -9``) resumes where it
stopped. At the end the shards are concatenated in track-id order, captions are attached, the
normalisation statistics are fitted on the stored latents, and the dataset with its statistics replaces
``OUT/dataset`` in one step, so the result does not depend on how the work was split across runs or
workers. Input folders that are not complete tracks are listed in the report with the reason. See
:mod:`.cache` for the layout.

Decoding and resampling run in ``workers`` processes; separation, filtering and encoding run in this
process, where the models live (one copy, on their device). One ``prepare`` per output folder at a time.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import multiprocessing
import os
import re
import shutil
import warnings
from collections import Counter, deque
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import quote

import numpy as np
import torch
from tqdm.auto import tqdm

from ..audio import AudioError, SilentAudioWarning, load_audio
from ..codec import DacCodec
from ..errors import CodecError, ConfigError, DataError
from ..latents import NORMALIZE_PER, LatentStats
from ..outputs import TEMPORARY_MARK, atomic_directory, check_output_dir
from .cache import (CODE_PADDING, DATASET_DIR, LATENT_STATS_FILE, SHARDS_DIR, CacheLayout, CodecInfo, UnverifiedCacheWarning,
                    window_features, write_atomic, write_text_atomic)
from .captions import read_caption_source
from .layout import AUDIO_SUFFIXES, CAPTIONS_FILE, IncompleteFolder, files_under, scan_stem_folders
from .separation import StemSeparator
from .windows import StemWindow, WindowSettings, select_windows

CORRUPT = "corrupt"
NO_CAPTIONS = "no-captions"
STEM_LENGTHS_DIFFER = "stem-lengths-differ"
SETTINGS_FILE = "settings.json"
# what outputs.temporary_path (".<stem>.tmp-<pid><suffix>", files and folders), outputs.atomic_directory
# (".dataset.old-<pid>") and earlier versions ("<name>.tmp-<pid>") leave behind when killed
STALE_TEMPORARY = re.compile(rf"^\..+{re.escape(TEMPORARY_MARK)}\d+(\.[^.]+)?$|^.+{re.escape(TEMPORARY_MARK)}\d+$")
DATASET_BACKUP = re.compile(rf"^\.{DATASET_DIR}\.old-\d+$")

if TYPE_CHECKING:
    from datasets import Dataset, Features


@dataclass(frozen=True)
class TrackReport:
    """What became of one input track.

    ``skip_reason`` (``corrupt``, ``too-short``, ``silent``) is set when the whole track was dropped,
    with the error in ``detail``; otherwise ``skipped_windows`` counts dropped windows per reason.
    ``captions`` is filled in when the cache is assembled. ``stem_seconds`` holds each stem file's
    length when they differ by more than one codec hop (the shorter ones were padded with silence).
    ``fingerprint`` identifies the input files the report was made from (:func:`files_fingerprint`).
    """

    track_id: str
    seconds: float = 0.0
    kept_windows: int = 0
    kept_seconds: float = 0.0
    skipped_windows: dict[str, int] = field(default_factory=dict)
    skip_reason: str | None = None
    detail: str | None = None
    captions: int = 0
    stem_seconds: dict[str, float] | None = None
    fingerprint: str | None = None

    @property
    def warnings(self) -> list[str]:
        """``stem-lengths-differ`` (see ``stem_seconds``), ``no-captions`` (windows kept, no caption)."""
        return [STEM_LENGTHS_DIFFER] * bool(self.stem_seconds) + [NO_CAPTIONS] * bool(self.kept_windows and not self.captions)

    def to_dict(self) -> dict:
        return {**asdict(self), "warnings": self.warnings}

    @classmethod
    def from_dict(cls, data: dict) -> TrackReport:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass
class PrepareReport:
    """Outcome of :func:`prepare_latent_cache`: the settings, one :class:`TrackReport` per track (by id) and
    the input folders that are not complete tracks (``skipped_folders``, with the reason).

    ``resumed`` counts tracks found finished by an earlier run; it is not written to
    ``prepare_report.json``, which is the same however the work was split.
    """

    settings: dict
    tracks: list[TrackReport]
    resumed: int = 0
    skipped_folders: list[IncompleteFolder] = field(default_factory=list)

    @property
    def kept_windows(self) -> int:
        return sum(t.kept_windows for t in self.tracks)

    @property
    def kept_seconds(self) -> float:
        return sum(t.kept_seconds for t in self.tracks)

    @property
    def kept_tracks(self) -> int:
        return sum(1 for t in self.tracks if t.kept_windows)

    @property
    def skipped_tracks(self) -> dict[str, int]:
        """Dropped tracks per reason."""
        return dict(Counter(t.skip_reason for t in self.tracks if t.skip_reason))

    @property
    def skipped_windows(self) -> dict[str, int]:
        """Dropped windows per reason, over all tracks."""
        return dict(sum((Counter(t.skipped_windows) for t in self.tracks), Counter()))

    @property
    def uncaptioned(self) -> list[str]:
        """Tracks with windows but no captions (their rows carry an empty caption list)."""
        return [t.track_id for t in self.tracks if NO_CAPTIONS in t.warnings]

    @property
    def uneven_stems(self) -> list[str]:
        """Tracks whose stems differ in length by more than one codec hop (padded with silence)."""
        return [t.track_id for t in self.tracks if STEM_LENGTHS_DIFFER in t.warnings]

    def to_dict(self) -> dict:
        totals = {"tracks": len(self.tracks), "tracks_kept": self.kept_tracks, "windows_kept": self.kept_windows,
                  "seconds_kept": self.kept_seconds, "tracks_skipped": self.skipped_tracks,
                  "windows_skipped": self.skipped_windows, "tracks_without_captions": len(self.uncaptioned),
                  "tracks_with_stem_lengths_differing": len(self.uneven_stems),
                  "folders_skipped": len(self.skipped_folders)}
        return {"settings": self.settings, "totals": totals, "tracks": [t.to_dict() for t in self.tracks],
                "skipped_folders": [asdict(folder) for folder in self.skipped_folders]}


@dataclass(frozen=True)
class DecodeJob:
    """A track's files: ``vocals`` and ``accompaniment`` stems, or a ``mix`` to separate, and their fingerprint."""

    track_id: str
    sample_rate: int
    hop_length: int
    vocals: Path | None = None
    accompaniment: tuple[Path, ...] = ()
    mix: Path | None = None
    fingerprint: str = ""

    @property
    def files(self) -> tuple[Path, ...]:
        return (self.mix,) if self.mix is not None else (self.vocals, *self.accompaniment)


@dataclass(frozen=True, eq=False)
class DecodedTrack:
    """Decoded audio at the codec rate: mono ``stems`` (vocals, accompaniment) ``[T]``, or a ``mix [C, T]``;
    ``stem_seconds`` as in :class:`TrackReport`."""

    track_id: str
    stems: tuple[np.ndarray, np.ndarray] | None = None
    mix: np.ndarray | None = None
    stem_seconds: dict[str, float] | None = None


def find_mixes(root: str | Path) -> dict[str, Path]:
    """``{track_id: file}`` for every audio file under ``root``; the id is its relative path without suffix."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such directory; pass the folder that holds the mixes")
    mixes: dict[str, Path] = {}
    for path in sorted(p for p in files_under(root) if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file()):
        track_id = path.relative_to(root).with_suffix("").as_posix()
        if track_id in mixes:
            raise DataError(f"{root}: '{mixes[track_id].name}' and '{path.name}' share the track id '{track_id}'; keep one")
        mixes[track_id] = path
    return mixes


def prepare_latent_cache(
    input_dir: str | Path,
    out_dir: str | Path,
    codec: DacCodec,
    codec_id: str | None = None,
    windows: WindowSettings = WindowSettings(),
    captions: str | Path | None = None,
    separator: StemSeparator | None = None,
    normalize_per: str = "codebook",
    workers: int = 1,
    batch_size: int = 8,
    progress: bool = True,
) -> PrepareReport:
    """Encode a stem corpus (or, with ``separator``, a folder of mixes) into a latent cache at ``out_dir``.

    Args:
        input_dir: stem folders (:func:`~discodiff.data.layout.scan_stem_folders`), or audio mixes when
            ``separator`` is given (track id = path relative to ``input_dir`` without suffix).
        out_dir: the cache (:mod:`.cache`), checked before any work: a new or empty folder, or an earlier
            cache, which is resumed (tracks whose files changed since are redone).
        codec: encodes both stems; ``codec_id`` (default ``codec.source``) is recorded in ``codec.json`` with the
            codec's geometry and weights fingerprint. A resumed cache must come from the same codec.
        windows: window length, hop and filter thresholds.
        captions: ``.jsonl``, ``.csv`` or ``datasets`` directory (default: ``input_dir/captions.jsonl``
            when present); tracks without captions get an empty list and are reported.
        separator: splits each mix into vocals and accompaniment (e.g. :class:`~.separation.DemucsSeparator`).
        normalize_per: ``codebook`` or ``channel`` statistics in ``dataset/latent_stats.json``.
        workers: processes decoding audio (1: this process). Workers are spawned, so a script calling
            this needs the ``if __name__ == "__main__":`` guard.
        batch_size: windows per encoder call (each call encodes both stems: ``2·batch_size`` signals).
        progress: show progress bars.

    Raises:
        OutputError: ``out_dir`` is a file, not writable, or a non-empty folder that is not a cache
            (:class:`~discodiff.errors.ExistingWorkError`).
        DataError: ``input_dir`` holds no track, the captions file is missing, ``out_dir`` holds work done
            with other settings (another codec included, even one of the same geometry), or no window was kept.
        ConfigError, CodecError: a bad setting, or a codec whose output the cache cannot hold.
    """
    if workers < 1 or batch_size < 1:
        raise ConfigError(f"workers={workers}, batch_size={batch_size}: both must be at least 1")
    if normalize_per not in NORMALIZE_PER:
        raise ConfigError(f"normalize_per='{normalize_per}': choose one of {NORMALIZE_PER}")
    codec_id = codec_id or codec.source
    if codec_id is None:
        raise CodecError("the codec has no source id to record in codec.json; pass codec_id")
    info = CodecInfo.of(codec, str(codec_id))
    if info.codebook_size > np.iinfo(np.int16).max:
        raise CodecError(f"codebook size {info.codebook_size} does not fit the cache's int16 codes")
    check_output_dir(out_dir, what="--out", marker=SHARDS_DIR, reuse=True)
    input_dir, layout = Path(input_dir), CacheLayout(Path(out_dir))
    jobs, skipped_folders = _decode_jobs(input_dir, codec.sample_rate, codec.spec.hop_length, separate=separator is not None)
    caption_path = Path(captions) if captions is not None else input_dir / CAPTIONS_FILE
    caption_table = _read_captions(caption_path) if captions is not None or caption_path.is_file() else {}
    encoding = {"codec": asdict(info), "windows": asdict(windows),
                "separation": separator.model_name if separator is not None else None}
    _claim_output(layout, info, encoding)

    finished = {job.track_id: report for job in jobs if (report := _finished_report(layout, job))}
    todo = [job for job in jobs if job.track_id not in finished]
    with tqdm(total=len(jobs), initial=len(finished), desc="preparing", unit="track", disable=not progress) as bar:
        for job, decoded in zip(todo, _decoded_tracks(todo, workers), strict=True):
            shard = _shard_file(layout, job.track_id, ".arrow")
            if isinstance(decoded, TrackReport):
                report = decoded
            else:
                report = _prepare_track(decoded, codec, windows, separator, batch_size, shard)
            report = replace(report, fingerprint=job.fingerprint)
            if not report.kept_windows:
                shard.unlink(missing_ok=True)  # windows of an earlier version of the track's files
            write_text_atomic(_shard_file(layout, job.track_id, ".json"), json.dumps(report.to_dict()) + "\n")
            finished[job.track_id] = report
            bar.update()

    reports = [replace(finished[job.track_id], captions=len(caption_table.get(job.track_id, []))) for job in jobs]
    settings = {"input": str(input_dir), "captions": str(caption_path) if caption_table else None, **encoding,
                "normalize_per": normalize_per}
    result = PrepareReport(settings, reports, resumed=len(jobs) - len(todo), skipped_folders=skipped_folders)
    write_text_atomic(layout.report_file, json.dumps(result.to_dict(), indent=2) + "\n")
    if not result.kept_windows:
        raise DataError(f"{input_dir}: no window of any track was kept; see {layout.report_file} for the reasons "
                        "(the window options --window-seconds, --min-seconds, --quiet-dbfs, --vocal-margin-db set them)")
    _publish_dataset(layout, reports, caption_table, codec.codebook_dim, normalize_per, progress)
    return result


def fit_cache_stats(dataset: Dataset, codebook_dim: int, per: str = "codebook", batch_size: int = 64) -> LatentStats:
    """:meth:`LatentStats.fit` over the real frames (``num_frames``) of a cache's stored accompaniment latents."""

    def real_frames() -> Iterator[torch.Tensor]:
        for batch in dataset.select_columns(["num_frames", "latents"]).with_format("numpy").iter(batch_size):
            latents, frames = batch["latents"], batch["num_frames"]
            full = frames == latents.shape[-1]
            if full.any():
                yield torch.from_numpy(latents[full])
            for item, count in zip(latents[~full], frames[~full]):
                yield torch.from_numpy(item[:, :count])

    return LatentStats.fit(real_frames(), codebook_dim, per)


# --- per track ------------------------------------------------------------------------------------


def _read_captions(path: Path) -> dict[str, list[str]]:
    if not path.exists():
        raise DataError(f"captions {path}: no such file or folder; pass --captions with a .jsonl, .csv or datasets "
                        "folder, or leave it out to prepare without captions")
    try:
        return read_caption_source(path)
    except (OSError, ValueError) as err:
        raise DataError(str(err)) from err


def _decode_jobs(input_dir: Path, sample_rate: int, hop_length: int,
                 separate: bool) -> tuple[list[DecodeJob], list[IncompleteFolder]]:
    """The tracks of ``input_dir`` with their fingerprints, and the folders that are not tracks (with the reason)."""
    if not input_dir.is_dir():
        what = "mixes" if separate else "track folders"
        raise DataError(f"{input_dir}: no such directory; pass the folder that holds the {what}")
    incomplete: list[IncompleteFolder] = []
    if separate:
        jobs = [DecodeJob(track_id, sample_rate, hop_length, mix=path) for track_id, path in find_mixes(input_dir).items()]
    else:
        pairs, incomplete = scan_stem_folders(input_dir)
        jobs = [DecodeJob(pair.track_id, sample_rate, hop_length, vocals=pair.vocals, accompaniment=pair.accompaniment)
                for pair in pairs]
    if not jobs:
        what = "audio files" if separate else "track folders with vocals.* and accompaniment.* (or drums/bass/other.*)"
        hint = "" if separate else "; for a folder of mixes pass --separate"
        if incomplete:
            first = incomplete[0]
            hint += f" ({len(incomplete)} incomplete folders, e.g. '{first.path}': {first.reason})"
        raise DataError(f"{input_dir}: no {what} found{hint}")
    return [replace(job, fingerprint=files_fingerprint(input_dir, job.files)) for job in jobs], incomplete


def files_fingerprint(root: Path, files: Sequence[Path]) -> str:
    """A digest of each file's name (relative to ``root``), size and modification time, in the given order:
    it changes when a file is replaced, repaired, added or removed."""
    entries = []
    for path in files:
        stat = path.stat()
        entries.append([path.relative_to(root).as_posix(), stat.st_size, stat.st_mtime_ns])
    return hashlib.sha256(json.dumps(entries).encode()).hexdigest()[:32]


def decode_track(job: DecodeJob) -> DecodedTrack | TrackReport:
    """Decode a track at the codec rate (in a worker); a :class:`TrackReport` when a file is unusable."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", SilentAudioWarning)  # silence is judged on the stems, per window
            if job.mix is not None:
                return DecodedTrack(job.track_id, mix=load_audio(job.mix, job.sample_rate, mono=False).numpy())
            vocals = load_audio(job.vocals, job.sample_rate)[0].numpy()
            parts = [load_audio(path, job.sample_rate)[0].numpy() for path in job.accompaniment]
    except AudioError as err:
        return TrackReport(job.track_id, skip_reason=CORRUPT, detail=str(err))
    lengths = [len(x) for x in (vocals, *parts)]
    stem_seconds = None
    if max(lengths) - min(lengths) > job.hop_length:  # more than a frame's worth: worth telling
        stem_seconds = {path.name: round(n / job.sample_rate, 3) for path, n in zip(job.files, lengths)}
    length = max(lengths)  # a stem that ends early is silent afterwards
    vocals, *parts = (np.pad(x, (0, length - len(x))) for x in (vocals, *parts))
    return DecodedTrack(job.track_id, stems=(vocals, np.sum(parts, axis=0, dtype=np.float32)), stem_seconds=stem_seconds)


def _decoded_tracks(jobs: Sequence[DecodeJob], workers: int) -> Iterator[DecodedTrack | TrackReport]:
    """:func:`decode_track` of ``jobs`` in order, at most ``2·workers`` tracks ahead of the consumer."""
    if workers == 1 or len(jobs) <= 1:
        yield from map(decode_track, jobs)
        return
    context = multiprocessing.get_context("spawn")  # fork is unsafe once torch threads exist
    remaining = iter(jobs)
    with ProcessPoolExecutor(min(workers, len(jobs)), mp_context=context) as pool:
        pending = deque(pool.submit(decode_track, job) for job in itertools.islice(remaining, 2 * workers))
        while pending:
            result = pending.popleft().result()
            if (job := next(remaining, None)) is not None:
                pending.append(pool.submit(decode_track, job))
            yield result


def _prepare_track(
    decoded: DecodedTrack,
    codec: DacCodec,
    settings: WindowSettings,
    separator: StemSeparator | None,
    batch_size: int,
    shard: Path,
) -> TrackReport:
    """Separate (mixes), cut, filter and encode one track; write its kept windows to ``shard``."""
    rate = codec.sample_rate
    window_frames = codec.frames_for(settings.window_samples(rate))
    if decoded.mix is not None:
        vocals, accompaniment = (stem[0].numpy() for stem in separator(torch.from_numpy(decoded.mix), rate))
    else:
        vocals, accompaniment = decoded.stems
    seconds = len(vocals) / rate
    selection = select_windows(vocals, accompaniment, rate, settings)
    if selection.track_skip_reason is not None:
        return TrackReport(decoded.track_id, seconds, skip_reason=selection.track_skip_reason,
                           stem_seconds=decoded.stem_seconds)
    if selection.kept:
        columns = encode_windows(codec, selection.kept, window_frames, batch_size)
        features = window_features(codec.latent_channels, codec.n_codebooks, window_frames)
        _write_shard(shard, {"track_id": [decoded.track_id] * len(selection.kept), **columns}, features)
    kept_seconds = sum(len(w) for w in selection.kept) / rate
    return TrackReport(decoded.track_id, seconds, len(selection.kept), kept_seconds, selection.skipped,
                       stem_seconds=decoded.stem_seconds)


def encode_windows(codec: DacCodec, windows: Sequence[StemWindow], window_frames: int, batch_size: int = 8) -> dict[str, list]:
    """Encode both stems of ``windows`` into cache columns (``window`` … ``codes``, see :mod:`.cache`),
    padded to ``window_frames``. Windows of equal length share encoder calls of up to ``batch_size``."""
    columns: dict[str, list] = {name: [] for name in ("window", "start_seconds", "num_frames", "latents", "vocal_latents", "codes")}
    for _, group in itertools.groupby(windows, key=len):
        group = list(group)
        for first in range(0, len(group), batch_size):
            batch = group[first : first + batch_size]
            audio = torch.from_numpy(np.stack([w.accompaniment for w in batch] + [w.vocals for w in batch]))[:, None]
            latents, codes = codec.encode_with_codes(audio, progress=False)
            for i, window in enumerate(batch):
                columns["window"].append(window.index)
                columns["start_seconds"].append(window.start / codec.sample_rate)
                columns["num_frames"].append(latents.shape[-1])
                columns["latents"].append(_padded(latents[i], window_frames, np.float16, 0))
                columns["vocal_latents"].append(_padded(latents[len(batch) + i], window_frames, np.float16, 0))
                columns["codes"].append(_padded(codes[i], window_frames, np.int16, CODE_PADDING))
    return columns


def _padded(x: torch.Tensor, frames: int, dtype, fill: float) -> np.ndarray:
    """``x [C, n]`` cast to ``dtype`` in a ``[C, frames]`` array filled with ``fill`` after frame ``n``."""
    out = np.full((x.shape[0], frames), fill, dtype=dtype)
    out[:, : x.shape[1]] = x.numpy()
    if not np.isfinite(out).all():
        raise CodecError(f"latents exceed the {np.dtype(dtype).name} range (max |x| = {float(x.abs().max()):.3g}); "
                         "this codec's latents cannot be cached in half precision")
    return out


# --- shards and assembly ----------------------------------------------------------------------------


def _shard_file(layout: CacheLayout, track_id: str, suffix: str) -> Path:
    return layout.shards_dir / f"{quote(track_id, safe='')}{suffix}"


def _write_shard(path: Path, columns: dict, features: Features) -> None:
    import pyarrow as pa
    from datasets import Dataset

    table = Dataset.from_dict(columns, features=features).data.table

    def write(temporary: Path) -> None:
        with pa.OSFile(str(temporary), "wb") as sink, pa.ipc.new_stream(sink, table.schema) as writer:
            writer.write_table(table)

    write_atomic(path, write)


def _finished_report(layout: CacheLayout, job: DecodeJob) -> TrackReport | None:
    """The report of a track an earlier run finished from the files the track has now (same fingerprint;
    its shard present when it kept windows), else None: the track is to be (re)done."""
    path = _shard_file(layout, job.track_id, ".json")
    if not path.is_file():
        return None
    report = TrackReport.from_dict(json.loads(path.read_text(encoding="utf-8")))
    if report.fingerprint != job.fingerprint:
        return None
    return report if not report.kept_windows or _shard_file(layout, job.track_id, ".arrow").is_file() else None


def _claim_output(layout: CacheLayout, info: CodecInfo, settings: dict) -> None:
    """Record ``settings`` for a new output folder, or check that a resumed one used the same; drop what a
    killed run left behind (temporary files and folders; a dataset moved aside is put back if it is missing)."""
    layout.shards_dir.mkdir(parents=True, exist_ok=True)
    settings_file = layout.shards_dir / SETTINGS_FILE
    if settings_file.is_file():
        earlier = json.loads(settings_file.read_text(encoding="utf-8"))
        unverified = isinstance(earlier.get("codec"), dict) and "fingerprint" not in earlier["codec"]
        if unverified:  # written before codec fingerprints: compare the rest, then record this codec's
            earlier = {**earlier, "codec": {**earlier["codec"], "fingerprint": info.fingerprint}}
        if earlier != settings:
            changed = [f"{key}: {earlier.get(key)} -> {value}" for key, value in settings.items() if earlier.get(key) != value]
            raise DataError(f"{layout.root} holds work prepared with other settings ({'; '.join(changed)}); "
                            "rerun with the earlier settings to resume, or choose another --out")
        if unverified:
            warnings.warn(f"{settings_file}: the earlier work records no codec 'fingerprint' (it predates weight "
                          f"fingerprints), so its finished tracks are resumed without checking that codec '{info.id}' "
                          "of the same geometry made them; this run records the codec's fingerprint",
                          UnverifiedCacheWarning, stacklevel=3)
            write_text_atomic(settings_file, json.dumps(settings, indent=2) + "\n")
    else:
        write_text_atomic(settings_file, json.dumps(settings, indent=2) + "\n")
    info.save(layout.codec_file)
    for entry in itertools.chain(layout.shards_dir.iterdir(), layout.root.iterdir()):
        backup = DATASET_BACKUP.match(entry.name)
        if backup and not layout.dataset_dir.exists() and _is_published(entry):
            os.replace(entry, layout.dataset_dir)  # killed between moving the old dataset aside and the new one in
        elif backup or STALE_TEMPORARY.match(entry.name):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def _is_published(directory: Path) -> bool:
    """``directory`` holds a saved dataset and its statistics."""
    return (directory / "dataset_info.json").is_file() and (directory / LATENT_STATS_FILE).is_file()


def _publish_dataset(layout: CacheLayout, reports: Sequence[TrackReport], captions: dict[str, list[str]],
                     codebook_dim: int, normalize_per: str, progress: bool) -> None:
    """Concatenate the kept tracks' shards in id order, attach captions, fit the statistics, and replace
    ``OUT/dataset`` by the saved dataset with its ``latent_stats.json`` inside, in one step."""
    from datasets import Dataset, List, Value, concatenate_datasets

    parts = [Dataset.from_file(str(_shard_file(layout, r.track_id, ".arrow"))) for r in reports if r.kept_windows]
    dataset = concatenate_datasets(parts)
    dataset = dataset.add_column("captions", [captions.get(track_id, []) for track_id in dataset["track_id"]],
                                 feature=List(Value("string")))
    stats = fit_cache_stats(dataset, codebook_dim, normalize_per)
    with atomic_directory(layout.dataset_dir) as temporary:
        with datasets_progress(progress):
            dataset.save_to_disk(str(temporary))
        stats.save(temporary / LATENT_STATS_FILE)
    (layout.root / LATENT_STATS_FILE).unlink(missing_ok=True)  # where caches of an earlier layout kept it


@contextmanager
def datasets_progress(enabled: bool):
    """Hide ``datasets``' own progress bars inside the block when ``enabled`` is False (restored after)."""
    import datasets

    hide = not enabled and datasets.is_progress_bar_enabled()
    if hide:
        datasets.disable_progress_bars()
    try:
        yield
    finally:
        if hide:
            datasets.enable_progress_bars()
