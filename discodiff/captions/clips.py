"""The clips a caption run works on: ids, audio files, source, licence and raw metadata.

Two layouts are read: a rendered corpus (``discodiff render-corpus``: one folder per track with ``mixture.wav`` and
``metadata.json``) and any folder of audio files (ids are the files' paths below it, without suffix, joined with
``/``), optionally joined with a metadata file by id (:func:`~discodiff.captions.tags.read_metadata`).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

from ..errors import DataError
from ..outputs import atomic_file

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg", ".mp3")
RENDERED_AUDIO = "mixture.wav"
RENDERED_METADATA = "metadata.json"
SPLITS = ("train", "validation", "all")


@dataclass(frozen=True)
class Clip:
    """One clip: ``audio`` is the path of its file; ``metadata`` the raw row its tags come from."""

    id: str
    audio: str
    source: str
    license: str
    metadata: Mapping = field(default_factory=dict)

    def to_dict(self) -> dict:
        return {**asdict(self), "metadata": dict(self.metadata)}


def rendered_clips(root: str | Path, split: str = "all", source: str | None = None, license: str = "mit") -> list[Clip]:
    """The tracks of a rendered corpus, sorted by id; ``split`` keeps one side of the fixed Bach split."""
    from ..corpus.splits import split_of

    root = Path(root)
    if split not in SPLITS:
        raise DataError(f"split must be one of {', '.join(SPLITS)}, got {split!r}")
    clips = []
    for folder in sorted(p for p in root.iterdir() if (p / RENDERED_METADATA).is_file()):
        metadata = json.loads((folder / RENDERED_METADATA).read_text(encoding="utf-8"))
        if split != "all" and split_of(metadata["piece"]) != split:
            continue
        clips.append(Clip(metadata.get("track_id", folder.name), str((folder / RENDERED_AUDIO).resolve()),
                          source or f"music21 corpus score rendered by discodiff render-corpus (seed {metadata.get('seed')})",
                          license, metadata))
    return _checked(clips, root)


def audio_clips(root: str | Path, metadata: Mapping[str, Mapping] | None = None, source: str | None = None,
                license: str = "unknown") -> list[Clip]:
    """Every audio file below ``root`` (sorted); ``metadata`` rows are joined by id, and a row without a clip or a
    clip without a row (when metadata is given) is an error naming the first few."""
    root = Path(root)
    files = sorted(p for p in root.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES and p.is_file())
    clips = [Clip(path.relative_to(root).with_suffix("").as_posix(), str(path.resolve()), source or str(root), license,
                  dict((metadata or {}).get(path.relative_to(root).with_suffix("").as_posix(), {})))
             for path in files]
    if metadata is not None:
        ids = {clip.id for clip in clips}
        unmatched = sorted(set(metadata) - ids)[:3]
        untagged = sorted(ids - set(metadata))[:3]
        if unmatched or untagged:
            raise DataError(f"metadata and audio files under {root} do not match by id: rows without audio "
                            f"{unmatched}, audio without rows {untagged}; ids are paths below {root} without suffix")
    return _checked(clips, root)


def collect_clips(root: str | Path, *, split: str = "all", metadata: Mapping[str, Mapping] | None = None,
                  source: str | None = None, license: str | None = None) -> list[Clip]:
    """A rendered corpus when ``root`` holds track folders with ``metadata.json``, else its audio files."""
    root = Path(root)
    if not root.is_dir():
        raise DataError(f"{root}: no such folder; pass a rendered corpus (discodiff render-corpus) or a folder of audio")
    if any((p / RENDERED_METADATA).is_file() for p in root.iterdir()):
        if metadata is not None:
            raise DataError(f"{root} is a rendered corpus with its own metadata.json per track; drop --metadata")
        return rendered_clips(root, split, source, license or "mit")
    if split != "all":
        raise DataError(f"--split {split} applies to a rendered corpus only; {root} is a plain folder of audio")
    return audio_clips(root, metadata, source, license or "unknown")


def _checked(clips: list[Clip], root: Path) -> list[Clip]:
    if not clips:
        raise DataError(f"{root}: no clips found (audio files {', '.join(AUDIO_SUFFIXES)}, or rendered track folders)")
    seen = set()
    for clip in clips:
        if clip.id in seen:
            raise DataError(f"{root}: two clips have the id {clip.id!r}; ids must be unique")
        seen.add(clip.id)
    return clips


def write_clips(path: str | Path, clips: Sequence[Clip]) -> Path:
    """``clips`` as JSON lines, written atomically."""
    text = "".join(json.dumps(clip.to_dict(), sort_keys=True, ensure_ascii=False) + "\n" for clip in clips)
    with atomic_file(path) as temporary:
        Path(temporary).write_text(text, encoding="utf-8")
    return Path(path)


def read_clips(path: str | Path) -> list[Clip]:
    """Inverse of :func:`write_clips`."""
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
        return [Clip(**json.loads(line)) for line in lines if line.strip()]
    except (OSError, json.JSONDecodeError, TypeError) as err:
        raise DataError(f"{path}: not a clip list written by discodiff captions ({err}); start a new work folder") from err
