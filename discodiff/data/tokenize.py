"""``discodiff tokenize``: semantic-token columns for a latent cache, from SSL features of the original stems.

For every window (row) of a cache made by :func:`~discodiff.data.prepare.prepare_latent_cache`, the window's
audio is cut from the track's stems (found under ``stems_dir`` as ``prepare`` finds them and decoded as it
decodes them: the vocal, and the sum of the accompaniment stems, padded to equal length; at the extractor's
sample rate) from ``start_seconds`` for ``num_frames · hop_length / sample_rate`` seconds (the codec's hop and
rate, from ``codec.json``). The vocal, with SingSong's optional :func:`~discodiff.conditioning.semantic.noisy`
featurisation (white noise of ``noise_std`` × its RMS, drawn from a generator seeded by ``(seed, track,
window)``), and the accompaniment (no noise) go through the frame-feature extractor (HuBERT or MERT in
practice, :class:`~discodiff.conditioning.ssl.SSLFeatures`) and a k-means
:class:`~discodiff.conditioning.semantic.SemanticTokenizer`: given, or fitted first on up to ``fit_frames``
clean feature frames of both stems of evenly spaced windows. Layout (inside the cache, see :mod:`.cache`)::

    CACHE/semantic/info.json              what the tokens are: extractor description, frame_rate, sample_rate, k,
                                          noise_std, seed, source (e.g. {"kind": "hubert", "id": ..., "layer": 9}
                                          or null), tokenizer_sha256, dataset_fingerprint (the cache dataset the
                                          tokens were computed for), tracks, windows, semantic_frames
    CACHE/semantic/tokenizer.safetensors  the SemanticTokenizer of the tokens
    CACHE/semantic/dataset/               ``datasets.save_to_disk``, one row per row of CACHE/dataset, in its order:
        track_id             string
        window               int32
        num_semantic_frames  int32         real frames; from here on padding (−1)
        semantic             int16 [Ls]    accompaniment tokens; Ls = round(F · rs / rc), F the cache's full-window
        vocal_semantic       int16 [Ls]    codec frames, rs the semantic and rc the codec frame rate
    CACHE/semantic/dataset/semantic_info.json   a copy of info.json, published with the rows
    CACHE/semantic/shards/settings.json   the settings of the work in progress (a rerun with others is refused)
    CACHE/semantic/shards/<track>.npz     one finished track, tagged with the tokenizer's sha256, the dataset
                                          fingerprint, the extractor, noise_std and seed
    CACHE/semantic/shards/tokenizer.safetensors + fit.json   a fitted tokenizer and the data it was fitted for

Resumable like ``prepare``: every file is written through a temporary file renamed into place, a track is
finished exactly when its shard exists with the tags of this run, and the dataset (with its copy of
``info.json``) is built aside and swapped in in one step, then the tokenizer and ``info.json`` are written. A
rerun skips finished tracks, so a run stopped at any point (even ``kill -9``) resumes. The dataset fingerprint
(:func:`~discodiff.data.cache.dataset_fingerprint`) changes when ``prepare`` republishes other rows, so shards and
a fitted tokenizer of an earlier cache are not reused (the tokenizer is fitted again, deterministically; pass it
as ``tokenizer`` to keep its tokens). Readers (:class:`~discodiff.data.dataset.LatentCropDataset` with
``semantic_tokens=True``) accept the tokens only when ``info.json``, its copy and the cache's dataset agree.

A cache prepared from mixes (``prepare --separate``) has no stems to read and is refused.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import os
import shutil
import warnings
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

import numpy as np
import torch
from tqdm.auto import tqdm

from ..conditioning.semantic import DEFAULT_K, FeatureExtractor, SemanticTokenizer, noisy
from ..errors import ConfigError, DataError, ExistingWorkError, is_integer
from ..outputs import atomic_directory
from .cache import CacheLayout, CodecInfo, dataset_fingerprint, write_atomic, write_text_atomic
from .layout import scan_stem_folders
from .prepare import (DATASET_BACKUP, STALE_TEMPORARY, SETTINGS_FILE, TrackReport, datasets_progress, decode_track, DecodeJob,
                      files_fingerprint)

SEMANTIC_PADDING = -1
DEFAULT_FIT_FRAMES = 200_000
FIT_FILE = "fit.json"
TOKENIZER_WORK_FILE = "tokenizer.safetensors"
SEMANTIC_COLUMNS = ("num_semantic_frames", "semantic", "vocal_semantic")
SEMANTIC_INFO_COPY = "semantic_info.json"  # info.json, published inside the dataset folder with the rows


@dataclass(frozen=True)
class _Window:
    """One cache row: its position ``row`` in the dataset and where its audio lies."""

    row: int
    window: int
    start_seconds: float
    num_frames: int


def tokenize_cache(
    cache_dir: str | Path,
    stems_dir: str | Path,
    extractor: FeatureExtractor,
    tokenizer: SemanticTokenizer | None = None,
    k: int = DEFAULT_K,
    fit_frames: int = DEFAULT_FIT_FRAMES,
    noise_std: float = 0.0,
    seed: int = 0,
    source: dict | None = None,
    progress: bool = True,
    overwrite: bool = False,
    batch_size: int = 8,
) -> Path:
    """Add semantic-token columns to the latent cache at ``cache_dir`` (layout and resumption: module docstring).

    Args:
        cache_dir: a finished cache of ``discodiff prepare`` (from stems, not ``--separate`` mixes).
        stems_dir: the stem folders the cache was prepared from (as ``prepare`` reads them); a copy will do.
        extractor: frame features, ``audio [B, 1, T]`` at ``extractor.sample_rate`` → ``[B, L, dim]`` at
            ``extractor.frame_rate`` (:class:`~discodiff.conditioning.ssl.SSLFeatures`).
        tokenizer: the k-means tokenizer to use (fitted on this extractor's features); None: fit one with ``k``
            clusters on up to ``fit_frames`` frames (vocal and accompaniment, no noise) of evenly spaced windows.
        noise_std: SingSong's noisy-vocal featurisation, relative to each window's vocal RMS (0: off).
        seed: of the k-means fit and of each window's vocal noise (one generator per (seed, track, window)).
        source: how the extractor was loaded (e.g. ``{"kind": "hubert", "id": ..., "layer": 9}``), for info.json.
        progress: show progress bars.
        overwrite: replace work in ``CACHE/semantic`` done with other settings (else refused).
        batch_size: windows per extractor call (each call holds both stems: ``2 · batch_size`` signals).

    Returns:
        ``CACHE/semantic``.

    Raises:
        DataError: no finished cache, a cache made from mixes, no stems for one of its tracks, an unusable stem.
        ConfigError: a bad setting, or a ``tokenizer`` fitted on another extractor's features.
        ExistingWorkError: ``CACHE/semantic`` holds work of other settings and ``overwrite`` is False.
    """
    from datasets import load_from_disk

    _check_settings(extractor, tokenizer, k, fit_frames, noise_std, seed, batch_size)
    layout = CacheLayout(Path(cache_dir))
    try:
        dataset_dir = layout.require_dataset()
    except FileNotFoundError as err:
        raise DataError(str(err)) from None
    _refuse_separated(layout)
    info = CodecInfo.load(layout.codec_file)
    stems_dir = Path(stems_dir)
    dataset = load_from_disk(str(dataset_dir))
    tracks = _cache_tracks(dataset)
    jobs = _stem_jobs(stems_dir, list(tracks), extractor.sample_rate, info)
    _warn_changed_stems(layout, stems_dir, jobs)
    fingerprint = dataset_fingerprint(layout)
    window_frames = int(dataset.features["latents"].shape[-1])
    semantic_frames = max(1, round(window_frames * extractor.frame_rate / info.frame_rate))

    settings = {"extractor": extractor.description, "sample_rate": int(extractor.sample_rate),
                "frame_rate": float(extractor.frame_rate), "noise_std": float(noise_std), "seed": int(seed),
                "tokenizer": ({"given": tokenizer_sha256(tokenizer), "k": tokenizer.k} if tokenizer is not None
                              else {"fit_frames": int(fit_frames), "k": int(k)})}
    _claim(layout, settings, overwrite)

    if tokenizer is None:
        tokenizer = _fitted_tokenizer(layout, tracks, jobs, extractor, info, k, fit_frames, seed, fingerprint,
                                      semantic_frames, batch_size, progress)
    tags = {"tokenizer_sha256": tokenizer_sha256(tokenizer), "dataset_fingerprint": fingerprint,
            "extractor": extractor.description, "noise_std": float(noise_std), "seed": int(seed)}
    todo = [track for track in tracks if not _finished_shard(layout, track, tracks[track], tags, semantic_frames)]
    with tqdm(total=len(tracks), initial=len(tracks) - len(todo), desc="tokenizing", unit="track",
              disable=not progress) as bar:
        for track in todo:
            stems = _decoded_stems(jobs[track])
            columns = _track_tokens(track, stems, tracks[track], extractor, tokenizer, info, semantic_frames,
                                    noise_std, seed, batch_size)
            _write_shard(_shard_file(layout, track), columns, tags)
            bar.update()

    published = {"extractor": extractor.description, "frame_rate": float(extractor.frame_rate),
                 "sample_rate": int(extractor.sample_rate), "k": tokenizer.k, "noise_std": float(noise_std),
                 "seed": int(seed), "source": source, "tokenizer_sha256": tags["tokenizer_sha256"],
                 "dataset_fingerprint": fingerprint, "tracks": len(tracks), "windows": len(dataset),
                 "semantic_frames": semantic_frames}
    _publish(layout, dataset, tracks, tokenizer, published, semantic_frames, progress)
    return layout.semantic_dir


def tokenizer_sha256(tokenizer: SemanticTokenizer) -> str:
    """A digest of a tokenizer's metadata (k, dim, extractor, frame rate) and centroids."""
    digest = hashlib.sha256(json.dumps(tokenizer.metadata, sort_keys=True).encode())
    digest.update(tokenizer.centroids.contiguous().numpy().tobytes())
    return digest.hexdigest()


def load_semantic_tokens(layout: CacheLayout, dataset=None):
    """The published semantic dataset of a cache and its ``info.json``, checked against the cache's dataset
    (``dataset``: that dataset, loaded already): a one-line :class:`DataError` naming ``discodiff tokenize`` when
    the tokens are missing, were computed for other rows, or are mid-update."""
    from datasets import load_from_disk

    command = (f"run `discodiff tokenize {layout.root} --stems <stems> --features hubert --model <id or dir>` "
               "(a rerun resumes)")
    if not (layout.semantic_dataset_dir / "dataset_info.json").is_file() or not layout.semantic_info_file.is_file():
        raise DataError(f"{layout.root} has no semantic tokens ({layout.semantic_dataset_dir}); {command}")
    info = _read_json(layout.semantic_info_file)
    copy = layout.semantic_dataset_dir / SEMANTIC_INFO_COPY
    if not copy.is_file() or _read_json(copy) != info:
        raise DataError(f"{layout.semantic_dir}: the semantic tokens are being rewritten or their last run was "
                        f"interrupted (info.json and dataset/{SEMANTIC_INFO_COPY} differ); {command}")
    if info.get("dataset_fingerprint") != dataset_fingerprint(layout):
        raise DataError(f"{layout.semantic_dir}: the semantic tokens were computed for an earlier version of "
                        f"{layout.dataset_dir} (prepare has republished it since); {command}")
    semantic = load_from_disk(str(layout.semantic_dataset_dir))
    if dataset is None:
        dataset = load_from_disk(str(layout.require_dataset()))
    if len(semantic) != len(dataset) or \
            semantic.data.column("track_id").to_pylist() != dataset.data.column("track_id").to_pylist() or \
            semantic.data.column("window").to_pylist() != dataset.data.column("window").to_pylist():
        raise DataError(f"{layout.semantic_dataset_dir}: its rows ({len(semantic)}) are not those of "
                        f"{layout.dataset_dir} ({len(dataset)}) in (track_id, window) order; {command}")
    return semantic, info


# --- checks -----------------------------------------------------------------------------------------


def _check_settings(extractor, tokenizer, k, fit_frames, noise_std, seed, batch_size) -> None:
    if not isinstance(extractor, FeatureExtractor):
        raise ConfigError(f"tokenize_cache needs a feature extractor (sample_rate, frame_rate, dim, description, "
                          f"__call__), got {type(extractor).__name__}")
    for name, value in (("k", k), ("fit_frames", fit_frames), ("batch_size", batch_size)):
        if not is_integer(value) or value < (2 if name == "k" else 1):
            raise ConfigError(f"tokenize_cache needs {name} as an integer ≥ {2 if name == 'k' else 1}, got {value!r}")
    if not is_integer(seed) or not 0 <= seed < 2**32:
        raise ConfigError(f"tokenize_cache needs seed as an integer in 0…2³²−1, got {seed!r}")
    if isinstance(noise_std, bool) or not isinstance(noise_std, (int, float)) or not np.isfinite(noise_std) \
            or noise_std < 0:
        raise ConfigError(f"noise_std must be a finite number ≥ 0 (relative to the vocal's RMS), got {noise_std!r}")
    clusters = tokenizer.k if tokenizer is not None else k
    if clusters > np.iinfo(np.int16).max:
        raise ConfigError(f"k={clusters} clusters do not fit the int16 token columns; use at most "
                          f"{np.iinfo(np.int16).max}")
    if tokenizer is not None:
        if tokenizer.description != extractor.description:
            raise ConfigError(f"the tokenizer was fitted on features of {tokenizer.description or 'an unknown extractor'!r},"
                              f" not of {extractor.description!r}; pass the extractor it was fitted with, or leave "
                              "the tokenizer out to fit one")
        if tokenizer.dim != extractor.dim:
            raise ConfigError(f"the tokenizer's centroids have dim {tokenizer.dim}, the extractor's features "
                              f"{extractor.dim}; pass the extractor it was fitted with")


def _refuse_separated(layout: CacheLayout) -> None:
    settings = layout.shards_dir / SETTINGS_FILE
    if settings.is_file() and _read_json(settings).get("separation"):
        raise DataError(f"{layout.root} was prepared from mixes separated by {_read_json(settings)['separation']} "
                        "(--separate); tokenize reads the stems, which such a cache has not kept: prepare from stem "
                        "folders to tokenize")


def _cache_tracks(dataset) -> dict[str, list[_Window]]:
    """The rows of the cache dataset by track, in dataset order."""
    table = dataset.data
    columns = [table.column(name).to_pylist() for name in ("track_id", "window", "start_seconds", "num_frames")]
    tracks: dict[str, list[_Window]] = {}
    for row, (track, window, start, frames) in enumerate(zip(*columns)):
        tracks.setdefault(track, []).append(_Window(row, int(window), float(start), int(frames)))
    return tracks


def _stem_jobs(stems_dir: Path, track_ids: Sequence[str], sample_rate: int, info: CodecInfo) -> dict[str, DecodeJob]:
    """``prepare``'s decode job of every cache track, at the extractor's rate; a :class:`DataError` naming the
    tracks whose stems ``stems_dir`` does not hold."""
    try:
        pairs, _ = scan_stem_folders(stems_dir)
    except FileNotFoundError:
        raise DataError(f"{stems_dir}: no such directory; pass the stem folders the cache was prepared from "
                        "(prepare's INPUT_DIR)") from None
    found = {pair.track_id: pair for pair in pairs}
    missing = [track for track in track_ids if track not in found]
    if missing:
        listed = ", ".join(f"'{t}'" for t in missing[:3]) + (f" and {len(missing) - 3} more" if len(missing) > 3 else "")
        raise DataError(f"{stems_dir} holds no stems (vocals.* with accompaniment.* or drums/bass/other.*) for the "
                        f"cache's track{'s' * (len(missing) > 1)} {listed}; pass the folder the cache was prepared from")
    hop = max(1, round(info.hop_length * sample_rate / info.sample_rate))
    return {track: DecodeJob(track, sample_rate, hop, vocals=found[track].vocals,
                              accompaniment=found[track].accompaniment) for track in track_ids}


def _warn_changed_stems(layout: CacheLayout, stems_dir: Path, jobs: dict[str, DecodeJob]) -> None:
    """Warn when a track's files differ in size or time from those ``prepare`` encoded (its shard report)."""
    changed = []
    for track, job in jobs.items():
        report = layout.shards_dir / f"{quote(track, safe='')}.json"
        if report.is_file():
            recorded = TrackReport.from_dict(_read_json(report)).fingerprint
            if recorded is not None and recorded != files_fingerprint(stems_dir, job.files):
                changed.append(track)
    if changed:
        warnings.warn(f"{len(changed)} tracks' stems under {stems_dir} differ in size or modification time from those "
                      f"prepare encoded (e.g. '{changed[0]}'); if they were edited, rerun prepare first, else (a copy) "
                      "ignore this", UserWarning, stacklevel=3)


# --- settings, shards and the fitted tokenizer ---------------------------------------------------------


def _claim(layout: CacheLayout, settings: dict, overwrite: bool) -> None:
    """Record ``settings`` (refusing other earlier ones unless ``overwrite``) and drop what a killed run left."""
    shards = layout.semantic_shards_dir
    shards.mkdir(parents=True, exist_ok=True)
    settings_file = shards / SETTINGS_FILE
    if settings_file.is_file() and not overwrite:
        earlier = _read_json(settings_file)
        if earlier != settings:
            changed = [f"{key}: {earlier.get(key)} -> {value}" for key, value in settings.items()
                       if earlier.get(key) != value]
            raise ExistingWorkError(f"{layout.semantic_dir} holds semantic tokens computed with other settings "
                                    f"({'; '.join(changed)}); rerun with the earlier settings to resume, or pass "
                                    "--overwrite (overwrite=True) to replace them")
    write_text_atomic(settings_file, json.dumps(settings, indent=2) + "\n")
    dataset_dir = layout.semantic_dataset_dir
    for entry in itertools.chain(shards.iterdir(), layout.semantic_dir.iterdir()):
        backup = DATASET_BACKUP.match(entry.name)
        if backup and not dataset_dir.exists() and (entry / SEMANTIC_INFO_COPY).is_file():
            os.replace(entry, dataset_dir)  # killed between moving the old dataset aside and the new one in
        elif backup or STALE_TEMPORARY.match(entry.name):
            if entry.is_dir() and not entry.is_symlink():
                shutil.rmtree(entry)
            else:
                entry.unlink()


def _shard_file(layout: CacheLayout, track: str) -> Path:
    return layout.semantic_shards_dir / f"{quote(track, safe='')}.npz"


def _write_shard(path: Path, columns: dict[str, np.ndarray], tags: dict) -> None:
    def write(temporary: Path) -> None:
        with open(temporary, "wb") as file:
            np.savez(file, tags=np.array(json.dumps(tags, sort_keys=True)), **columns)

    write_atomic(path, write)


def _read_shard(path: Path) -> tuple[dict, dict[str, np.ndarray]] | None:
    """A shard's tags and columns, None when it is missing or unreadable."""
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        return json.loads(str(arrays.pop("tags"))), arrays
    except (OSError, ValueError, KeyError):
        return None


def _finished_shard(layout: CacheLayout, track: str, windows: list[_Window], tags: dict, frames: int) -> bool:
    """The track's shard exists with this run's tags and rows for exactly the track's windows."""
    shard = _read_shard(_shard_file(layout, track))
    if shard is None or shard[0] != tags:
        return False
    columns = shard[1]
    return ("window" in columns and columns["window"].tolist() == [w.window for w in windows]
            and all(name in columns for name in SEMANTIC_COLUMNS)
            and columns["semantic"].shape == columns["vocal_semantic"].shape == (len(windows), frames))


def _fitted_tokenizer(layout: CacheLayout, tracks: dict[str, list[_Window]], jobs: dict[str, DecodeJob],
                      extractor: FeatureExtractor, info: CodecInfo, k: int, fit_frames: int, seed: int,
                      fingerprint: str, semantic_frames: int, batch_size: int, progress: bool) -> SemanticTokenizer:
    """The tokenizer an earlier run fitted for this dataset and these settings, else a new fit (saved)."""
    work, record = layout.semantic_shards_dir / TOKENIZER_WORK_FILE, layout.semantic_shards_dir / FIT_FILE
    wanted = {"dataset_fingerprint": fingerprint, "extractor": extractor.description, "k": k,
              "fit_frames": fit_frames, "seed": seed}
    if work.is_file() and record.is_file():
        earlier = _read_json(record)
        tokenizer = SemanticTokenizer.load(work)
        if {key: earlier.get(key) for key in wanted} == wanted and earlier.get("tokenizer_sha256") == tokenizer_sha256(tokenizer):
            return tokenizer
    windows = [window for track in tracks.values() for window in track]
    count = min(len(windows), -(-fit_frames // (2 * semantic_frames)))  # a full window gives 2 · Ls frames
    chosen_rows = {windows[i].row for i in np.linspace(0, len(windows) - 1, count).round().astype(int).tolist()}
    parts = []
    fit_tracks = [track for track, rows in tracks.items() if any(w.row in chosen_rows for w in rows)]
    for track in tqdm(fit_tracks, desc="fitting tokenizer", unit="track", disable=not progress):
        selected = [w for w in tracks[track] if w.row in chosen_rows]
        stems = _decoded_stems(jobs[track])
        for vocal, accompaniment, real in _window_features(stems, selected, extractor, info, semantic_frames, 0.0, 0,
                                                           track, batch_size):
            parts += [vocal[:real].cpu().numpy(), accompaniment[:real].cpu().numpy()]
    frames = np.concatenate(parts)
    if len(frames) > fit_frames:
        frames = frames[np.linspace(0, len(frames) - 1, fit_frames).round().astype(int)]
    tokenizer = SemanticTokenizer.fit([frames], k=k, seed=seed, extractor=extractor)
    tokenizer.save(work)
    write_text_atomic(record, json.dumps({**wanted, "tokenizer_sha256": tokenizer_sha256(tokenizer)}, indent=2) + "\n")
    return tokenizer


# --- audio → features → tokens --------------------------------------------------------------------------


def _decoded_stems(job: DecodeJob) -> tuple[np.ndarray, np.ndarray]:
    """``prepare``'s decoding of a track (vocal, summed accompaniment; padded to equal length) at ``job``'s rate."""
    decoded = decode_track(job)
    if isinstance(decoded, TrackReport):
        raise DataError(f"track '{job.track_id}': {decoded.detail}; repair or replace its stems "
                        f"(or rerun prepare without it)")
    return decoded.stems


def _window_generator(seed: int, track: str, window: int) -> torch.Generator:
    """The generator of one window's vocal noise: a function of ``(seed, track, window)`` alone."""
    digest = hashlib.sha256(json.dumps([seed, track, window]).encode()).digest()
    return torch.Generator().manual_seed(int.from_bytes(digest[:8], "little") & (2**63 - 1))


def _window_features(stems: tuple[np.ndarray, np.ndarray], windows: Sequence[_Window], extractor: FeatureExtractor,
                     info: CodecInfo, frames: int | None, noise_std: float, seed: int, track: str,
                     batch_size: int) -> Iterator[tuple[np.ndarray, np.ndarray, int]]:
    """Per window (in order): vocal and accompaniment features ``[L, dim]`` float32 and the real frame count
    (``L``, at most ``frames`` when given). Windows of equal length share extractor calls."""
    vocals, accompaniment = stems
    rate = extractor.sample_rate
    min_samples = int(getattr(extractor, "min_samples", 1))

    def length(window: _Window) -> int:
        return max(round(window.num_frames * info.hop_length * rate / info.sample_rate), min_samples)

    def cut(stem: np.ndarray, window: _Window) -> np.ndarray:
        """``num_frames · hop`` codec samples' worth of ``stem`` from the window's start (zeros past the end)."""
        start = round(window.start_seconds * rate)
        piece = np.zeros(length(window), np.float32)
        available = stem[start : start + len(piece)]
        piece[: len(available)] = available
        return piece

    for _, group in itertools.groupby(windows, key=length):
        group = list(group)
        for first in range(0, len(group), batch_size):
            batch = group[first : first + batch_size]
            vocal = torch.from_numpy(np.stack([cut(vocals, w) for w in batch]))[:, None]
            if noise_std > 0:
                vocal = torch.cat([noisy(vocal[i : i + 1], noise_std, _window_generator(seed, track, w.window))
                                   for i, w in enumerate(batch)])
            audio = torch.cat([vocal, torch.from_numpy(np.stack([cut(accompaniment, w) for w in batch]))[:, None]])
            features = extractor(audio).detach()
            real = features.shape[1] if frames is None else min(features.shape[1], frames)
            for i in range(len(batch)):
                yield features[i], features[len(batch) + i], real


def _track_tokens(track: str, stems: tuple[np.ndarray, np.ndarray], windows: Sequence[_Window],
                  extractor: FeatureExtractor, tokenizer: SemanticTokenizer, info: CodecInfo, frames: int,
                  noise_std: float, seed: int, batch_size: int) -> dict[str, np.ndarray]:
    """The shard columns of one track: ``window``, ``num_semantic_frames``, ``semantic``, ``vocal_semantic``."""
    semantic = np.full((len(windows), frames), SEMANTIC_PADDING, np.int16)
    vocal_semantic = semantic.copy()
    counts = np.zeros(len(windows), np.int32)
    features = _window_features(stems, windows, extractor, info, frames, noise_std, seed, track, batch_size)
    for i, (vocal, accompaniment, real) in enumerate(features):
        tokens = tokenizer.assign(torch.stack([vocal[:real], accompaniment[:real]])).cpu().numpy()
        vocal_semantic[i, :real], semantic[i, :real], counts[i] = tokens[0], tokens[1], real
    return {"window": np.array([w.window for w in windows], np.int32), "num_semantic_frames": counts,
            "semantic": semantic, "vocal_semantic": vocal_semantic}


# --- publishing -----------------------------------------------------------------------------------------


def _publish(layout: CacheLayout, dataset, tracks: dict[str, list[_Window]], tokenizer: SemanticTokenizer,
             info: dict, frames: int, progress: bool) -> None:
    """Build the semantic dataset in the main dataset's row order from the shards and swap it in; then write the
    tokenizer and ``info.json`` (skipped when what is published already is this)."""
    from datasets import Dataset, Features, List, Value, concatenate_datasets

    copy = layout.semantic_dataset_dir / SEMANTIC_INFO_COPY
    if layout.semantic_info_file.is_file() and copy.is_file() and layout.semantic_tokenizer_file.is_file() \
            and _read_json(layout.semantic_info_file) == info == _read_json(copy):
        return
    features = Features({"track_id": Value("string"), "window": Value("int32"), "num_semantic_frames": Value("int32"),
                         "semantic": List(Value("int16"), length=frames),
                         "vocal_semantic": List(Value("int16"), length=frames)})
    rows = np.empty(len(dataset), np.int64)
    parts, offset = [], 0
    for track, windows in tracks.items():
        shard = _read_shard(_shard_file(layout, track))
        if shard is None:
            raise DataError(f"{_shard_file(layout, track)} vanished during the run; rerun tokenize (it resumes)")
        columns = shard[1]
        parts.append(Dataset.from_dict({"track_id": [track] * len(windows), **columns}, features=features))
        rows[[w.row for w in windows]] = np.arange(offset, offset + len(windows))
        offset += len(windows)
    semantic = concatenate_datasets(parts)
    if not np.array_equal(rows, np.arange(len(dataset))):
        semantic = semantic.select(rows)
    text = json.dumps(info, indent=2) + "\n"
    with atomic_directory(layout.semantic_dataset_dir) as temporary:
        with datasets_progress(progress):
            semantic.save_to_disk(str(temporary))
        (temporary / SEMANTIC_INFO_COPY).write_text(text, encoding="utf-8")
    tokenizer.save(layout.semantic_tokenizer_file)
    write_text_atomic(layout.semantic_info_file, text)


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: unreadable or not valid JSON ({err}); delete it and rerun tokenize") from err
    return data if isinstance(data, dict) else {}
