"""The tracks of one Bach split as an evaluation set: which rendered tracks, which excerpt of each, which caption.

Shared by ``python -m discodiff.bench.vocal_fit``, ``sample/accompany.py`` and ``discodiff eval``
(:mod:`.protocol`), so all three measure the same tracks at the same places:

- :func:`select_tracks` — the rendered track folders under a root (any depth; ``vocals.wav``,
  ``accompaniment.wav``, ``metadata.json``) whose piece is in one split of the fixed Bach split, sorted by track id,
  the first ``limit`` (at least 2: a mismatched vocal is another track's); a tree holding a held-out composer's
  track or an unfinished render is refused whole (:func:`~discodiff.training.codec_data.scan_tracks`).
- :func:`excerpt_plans` — per track the same ``seconds`` of both stems (the middle of the shorter stem, or its
  start), from the files' headers only.
- :func:`track_captions` — each track's captions from the ``captions.jsonl`` next to its folder (what
  ``discodiff render-corpus`` writes).
"""

from __future__ import annotations

from pathlib import Path

from discodiff.errors import DataError

EXCERPTS = ("middle", "start")
CAPTIONS_FILE = "captions.jsonl"


def select_tracks(root: str | Path, split: str, limit: int | None):
    """The rendered tracks of ``split`` under ``root`` (sorted by track id, the first ``limit``; at least 2); refuses a
    tree holding a held-out composer's track or an unfinished render (:func:`~discodiff.training.codec_data.scan_tracks`)."""
    from discodiff.training.codec_data import scan_tracks

    tracks = scan_tracks(root)[split]
    tracks = tracks[:limit] if limit else tracks
    if len(tracks) < 2:
        raise DataError(f"{root} holds {len(tracks)} rendered track(s) of the Bach {split} split, at least 2 are needed "
                        f"(a mismatched vocal is another track's); render them with `discodiff render-corpus --split "
                        f"{split}` or give another --data / --split")
    return tracks


def audio_info(path: Path) -> tuple[int, int]:
    """``(sample rate, frames)`` of an audio file from its header; a DataError naming it when unreadable."""
    import soundfile as sf

    try:
        info = sf.info(str(path))
    except (RuntimeError, OSError) as err:  # soundfile raises LibsndfileError (a RuntimeError)
        raise DataError(f"{path}: unreadable audio ({err}); render or generate it again, or remove it") from err
    return info.samplerate, info.frames


def excerpt_plans(pairs, seconds: float, excerpt: str):
    """Per track ``(vocals source, accompaniment source, sample rate, start, length)``: ``seconds`` of the shorter stem,
    its middle or its start. Reads only the files' headers; stems at different rates are refused."""
    from discodiff.training.codec_data import StemSource

    plans = []
    for pair in pairs:
        sources, rates = [], set()
        for stem, paths in (("vocals", (pair.vocals,)), ("accompaniment", pair.accompaniment)):
            infos = [audio_info(path) for path in paths]
            rates |= {rate for rate, _ in infos}
            sources.append(StemSource(pair.track_id, stem, tuple(paths), min(frames for _, frames in infos)))
        if len(rates) > 1:
            listed = ", ".join(map(str, sorted(rates)))
            raise DataError(f"{Path(pair.vocals).parent}: stems at different sample rates ({listed} Hz); render the "
                            "track again")
        rate = rates.pop()
        total = min(source.frames for source in sources)
        if total == 0:
            raise DataError(f"{Path(pair.vocals).parent}: a stem has no samples; render the track again or remove it")
        length = min(total, max(1, round(seconds * rate)))
        start = (total - length) // 2 if excerpt == "middle" else 0
        plans.append((sources[0], sources[1], rate, start, length))
    return plans


def captions_file(pair) -> Path:
    """The ``captions.jsonl`` that holds the captions of ``pair``'s track: next to its track folder."""
    return Path(pair.vocals).parent.parent / CAPTIONS_FILE


def track_captions(pairs) -> list[list[str]]:
    """The captions of each track (a list per track, in order), read from the ``captions.jsonl`` next to its folder and
    keyed by the folder's name; a DataError naming the file when it is missing or does not list the track."""
    from discodiff.data import read_captions

    files: dict[Path, dict[str, list[str]]] = {}
    result = []
    for pair in pairs:
        path = captions_file(pair)
        if path not in files:
            if not path.is_file():
                raise DataError(f"{path}: missing; the captions of {pair.track_id} are read from it "
                                "(`discodiff render-corpus` writes it)")
            try:
                files[path] = read_captions(path)
            except ValueError as err:
                raise DataError(f"{err}; render the tracks again or fix the file") from err
        folder = Path(pair.vocals).parent.name
        if folder not in files[path]:
            raise DataError(f"{path} has no captions for {folder} (track {pair.track_id}); render the track again")
        result.append(files[path][folder])
    return result
