"""Release a caption dataset: caption rows → a Hugging Face dataset folder (parquet shards + a dataset card) → the hub.

- :func:`release_features` — the schema (explicit ``datasets.Features``), with :data:`COLUMN_DESCRIPTIONS` the one
  source of truth for the writer, the card's YAML header (``dataset_info.features``) and the card's column table.
- :func:`write_dataset` — rows → ``out_dir`` (layout below), validated row by row, built in a hidden sibling folder and
  moved into place with ``os.replace`` only when complete, so a crash never leaves a half-written release.
- :class:`DatasetCardInfo` + :func:`dataset_card` — the ``README.md``: the YAML header the hub and
  ``datasets.load_dataset`` read, then summary, schema, sizes, how it was made, sources, licence, limits, citation
  and usage.
- :func:`push_dataset` — the folder → a hub dataset repository; any hub failure is one :class:`OutputError` line
  with the cause and the fix.

**Layout.** ::

    out_dir/
      README.md                               the dataset card
      data/train-00000-of-00003.parquet       shard_rows rows per shard, in input order (one split: train)

**Rows.** One mapping per clip with the keys of :data:`ROW_KEYS`: ``id`` (str, unique), ``captions`` (the kept
phrasings, at least one), ``description`` (the raw description, may be empty), ``tags``
(:class:`~discodiff.captions.tags.Tags`: stored as its ``summary()`` and as the columns ``genres``, ``instruments``,
``moods``, ``tempo_bpm``, ``key``), ``source``, ``license``, ``log_likelihood`` and ``percentile`` (float or None,
from the ranking), ``provenance`` (a JSON-serialisable dict) and ``audio_path`` (needed unless ``audio="none"``).

**Provenance is a JSON string column** (keys sorted, compact), read back with ``json.loads``. A struct column would
need one fixed set of keys and types for every row of every shard; provenance differs between rows (models, seeds,
optional steps), and parquet shards whose inferred structs differ make ``load_dataset`` fail to cast them.

**Audio.** ``audio="none"``: no audio column. ``"path"``: ``audio_path``, a string path relative to ``audio_root``
(the collection's root folder; the audio itself is not copied). ``"bytes"``: ``audio``, a
``datasets.Audio(decode=False)`` column holding ``{"bytes": the clip's file as is, "path": "<id><suffix>"}``.
``datasets`` decodes audio through torchcodec, which needs FFmpeg; with ``decode=False`` ``load_dataset`` returns the
bytes untouched and works without it. Decode them with soundfile:
``samples, sample_rate = soundfile.read(io.BytesIO(row["audio"]["bytes"]))``.

**Reproducibility.** The same rows give byte-identical files: pyarrow writes no timestamps (the parquet footer holds
the schema, the ``huggingface`` features metadata and the writer's version), rows keep their order and the card holds
no date.
"""

from __future__ import annotations

import itertools
import json
import math
import re
from collections import Counter
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from tqdm.auto import tqdm

from ..errors import AudioError, ConfigError, DataError, OutputError, first_line, is_integer, is_real
from ..outputs import atomic_directory, check_output_dir
from .tags import Tags

AUDIO_MODES = ("none", "path", "bytes")
SPLIT = "train"
DATA_DIR = "data"
DATA_FILES = f"{DATA_DIR}/{SPLIT}-*.parquet"  # the card's configs.data_files pattern: every shard
CARD_FILE = "README.md"
ROW_GROUP_ROWS = 100                          # small row groups (as datasets writes media) keep readers' memory low
LANGUAGE = "en"
PERCENTILE_RANGE = (0.0, 100.0)
HUB_LICENSE = re.compile(r"^[a-z0-9][a-z0-9.+\-]*$")
SIZE_CATEGORIES = ((10 ** 3, "n<1K"), (10 ** 4, "1K<n<10K"), (10 ** 5, "10K<n<100K"), (10 ** 6, "100K<n<1M"),
                   (10 ** 7, "1M<n<10M"), (10 ** 8, "10M<n<100M"), (10 ** 9, "100M<n<1B"), (10 ** 10, "1B<n<10B"),
                   (10 ** 11, "10B<n<100B"), (10 ** 12, "100B<n<1T"))

ROW_KEYS = ("id", "captions", "description", "tags", "source", "license", "log_likelihood", "percentile",
            "provenance", "audio_path")

# The release's columns in their order, each with the description the card prints; release_features gives their types.
COLUMN_DESCRIPTIONS = {
    "id": "clip id, unique in the release",
    "captions": "the kept phrasings of the clip's caption (rephrased by a language model, then filtered)",
    "description": "the raw description of the clip by the audio-language model (empty if none was made)",
    "tags": "tag summary (`genre: …; instruments: …`), the ground truth the captions were checked against",
    "genres": "genre tags",
    "instruments": "instrument tags",
    "moods": "mood tags",
    "tempo_bpm": "tempo in beats per minute (null if unknown)",
    "key": "musical key, e.g. `D minor` (null if unknown)",
    "source": "where the audio came from",
    "license": "licence of the clip's audio (SPDX id or text)",
    "log_likelihood": "log-likelihood of the clip's audio embedding under the ranking's reference Gaussian "
                      "(null if not ranked)",
    "percentile": "percentile of that log-likelihood among the ranked clips, 100 = most likely (null if not ranked)",
    "provenance": "JSON object (`json.loads`): model ids, template ids and sha256, seeds, discodiff version",
    "audio_path": "path of the clip's audio, relative to the audio collection's root folder",
    "audio": "the clip's audio file, not decoded by `datasets`: `{bytes, path}` with `path` = `<id><suffix>`; "
             "decode `bytes` with soundfile",
}


def release_features(audio: str = "none"):
    """The ``datasets.Features`` of a release written with ``audio`` (``"none"``, ``"path"`` or ``"bytes"``)."""
    from datasets import Audio, Features, List, Value

    _check_audio_mode(audio)
    string, number, strings = Value("string"), Value("float64"), List(Value("string"))
    types = {"id": string, "captions": strings, "description": string, "tags": string, "genres": strings,
             "instruments": strings, "moods": strings, "tempo_bpm": number, "key": string, "source": string,
             "license": string, "log_likelihood": number, "percentile": number, "provenance": string}
    if audio == "path":
        types["audio_path"] = string
    elif audio == "bytes":
        types["audio"] = Audio(decode=False)
    return Features(types)


# --- the card ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class DatasetCardInfo:
    """What the card says beyond the data: name, licence, how the captions were made, sources, limits, citation.

    ``license`` is the hub's licence id (``cc-by-4.0``, ``mit``, ``other``, …; explain ``other`` in
    ``license_details``). ``models`` maps a role (``describe``, ``rephrase``, ``embedder``) to a model id;
    ``templates`` a prompt-template id (``describe-v2``) to its sha256 fingerprint; ``dropped_captions`` a filter
    reason to the number of captions it dropped. ``ranking_reference`` names the reference set the ranking's Gaussian
    was fitted on and ``keep_top_share`` the share of clips kept (0.2 = the top 20%). ``repo_id`` is used in the
    usage snippet.
    """

    pretty_name: str
    license: str
    summary: str
    steps: Sequence[str] = ()
    models: Mapping[str, str] = field(default_factory=dict)
    templates: Mapping[str, str] = field(default_factory=dict)
    ranking_reference: str | None = None
    keep_top_share: float | None = None
    dropped_captions: Mapping[str, int] = field(default_factory=dict)
    sources: Sequence[str] = ()
    license_details: str = ""
    limits: Sequence[str] = ()
    citation: str = ""
    task_categories: Sequence[str] = ("text-to-audio",)
    repo_id: str | None = None

    def __post_init__(self):
        for name in ("pretty_name", "summary"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name).strip():
                raise ConfigError(f"DatasetCardInfo.{name} must be a non-empty string")
        if not isinstance(self.license, str) or not HUB_LICENSE.match(self.license):
            raise ConfigError(f"DatasetCardInfo.license must be a hub licence id such as cc-by-4.0, mit or other, "
                              f"got {self.license!r}; describe anything else in license_details")
        for name in ("steps", "sources", "limits", "task_categories"):
            value = getattr(self, name)
            if isinstance(value, str) or not all(isinstance(item, str) for item in value):
                raise ConfigError(f"DatasetCardInfo.{name} must be a list of strings, got {value!r}")
        for name in ("models", "templates"):
            if not all(isinstance(key, str) and isinstance(value, str) for key, value in getattr(self, name).items()):
                raise ConfigError(f"DatasetCardInfo.{name} must map strings to strings, got {getattr(self, name)!r}")
        if not all(isinstance(reason, str) and is_integer(count) and count >= 0
                   for reason, count in self.dropped_captions.items()):
            raise ConfigError(f"DatasetCardInfo.dropped_captions must map filter reasons to counts ≥ 0, got "
                              f"{self.dropped_captions!r}")
        share = self.keep_top_share
        if share is not None and not (is_real(share) and 0 < share <= 1):
            raise ConfigError(f"DatasetCardInfo.keep_top_share must be a share in (0, 1] (0.2 keeps the top 20%), "
                              f"got {share!r}")


@dataclass(frozen=True)
class ReleaseSizes:
    """What a written release holds: rows (clips), captions, shards, bytes, and rows per licence and per source.

    ``parquet_bytes`` is the size of the shards on disk (the hub's ``download_size``); ``arrow_bytes`` their size
    in memory once loaded (``dataset_size``).
    """

    rows: int
    captions: int
    shards: int
    parquet_bytes: int
    arrow_bytes: int
    licenses: Mapping[str, int] = field(default_factory=dict)
    sources: Mapping[str, int] = field(default_factory=dict)


def dataset_card(info: DatasetCardInfo, features, sizes: ReleaseSizes) -> str:
    """The ``README.md`` of a release: YAML header (licence, task, language, sizes, ``configs``, ``dataset_info``)
    and the sections a reader needs; every column of ``features`` is in the schema table."""
    undescribed = [name for name in features if name not in COLUMN_DESCRIPTIONS]
    if undescribed:
        raise ConfigError(f"the card cannot describe the columns {undescribed}: build features with "
                          "release_features(audio)")
    sections = [f"# {info.pretty_name}", info.summary.strip(), _schema_section(features), _sizes_section(sizes),
                _method_section(info), _sources_section(info, sizes), _license_section(info, sizes),
                _limits_section(info), _citation_section(info), _usage_section(info, features)]
    return f"---\n{_card_header(info, features, sizes)}\n---\n\n" + "\n\n".join(s for s in sections if s) + "\n"


def _card_header(info: DatasetCardInfo, features, sizes: ReleaseSizes) -> str:
    """The YAML header, written by huggingface_hub's ``DatasetCardData`` and datasets' own ``dataset_info`` form."""
    from datasets import DatasetInfo, SplitDict, SplitInfo
    from datasets.info import DatasetInfosDict
    from huggingface_hub import DatasetCardData

    data = DatasetCardData(license=info.license, language=LANGUAGE, task_categories=list(info.task_categories),
                           size_categories=size_category(sizes.rows), pretty_name=info.pretty_name,
                           configs=[{"config_name": "default",
                                     "data_files": [{"split": SPLIT, "path": DATA_FILES}]}])
    splits = SplitDict({SPLIT: SplitInfo(SPLIT, num_bytes=sizes.arrow_bytes, num_examples=sizes.rows)})
    release = DatasetInfo(features=features, splits=splits, download_size=sizes.parquet_bytes,
                          dataset_size=sizes.arrow_bytes)
    DatasetInfosDict({"default": release}).to_dataset_card_data(data)
    return data.to_yaml()


def size_category(rows: int) -> str:
    """The hub's ``size_categories`` value for ``rows`` rows (``n<1K``, ``1K<n<10K``, …)."""
    return next((name for limit, name in SIZE_CATEGORIES if rows < limit), "n>1T")


def _table(header: Sequence[str], rows: Iterable[Sequence]) -> str:
    """A markdown table; ``|`` and line breaks inside cells are escaped."""

    def line(values: Sequence) -> str:
        return "| " + " | ".join(str(value).replace("|", "\\|").replace("\n", " ") for value in values) + " |"

    return "\n".join([line(header), line(["---"] * len(header)), *(line(row) for row in rows)])


def _type_name(feature) -> str:
    """``string``, ``float64``, ``list[string]``, ``audio (…)``: a feature's type as the schema table shows it."""
    from datasets import Audio, List

    if isinstance(feature, List):
        return f"list[{_type_name(feature.feature)}]"
    if isinstance(feature, Audio):
        return "audio (struct of bytes, path; decode=False)"
    return feature.dtype


def _schema_section(features) -> str:
    rows = [(f"`{name}`", _type_name(feature), COLUMN_DESCRIPTIONS[name]) for name, feature in features.items()]
    return (f"## Dataset structure\n\nOne row per clip, one split (`{SPLIT}`), parquet shards under `{DATA_DIR}/`.\n\n"
            + _table(("column", "type", "description"), rows))


def _sizes_section(sizes: ReleaseSizes) -> str:
    rows = [("rows (clips)", f"{sizes.rows:,}"), ("captions", f"{sizes.captions:,}"), ("shards", f"{sizes.shards:,}"),
            ("parquet bytes", f"{sizes.parquet_bytes:,} ({sizes.parquet_bytes / 2 ** 20:.1f} MiB)")]
    return "## Sizes\n\n" + _table(("what", "count"), rows)


def _method_section(info: DatasetCardInfo) -> str:
    parts = ["## How it was made"]
    if info.steps:
        parts.append("\n".join(f"{number}. {step}" for number, step in enumerate(info.steps, start=1)))
    if info.models:
        parts.append("Models:\n\n" + _table(("role", "model"), ((role, f"`{model}`") for role, model in
                                                                 info.models.items())))
    if info.templates:
        parts.append("Prompt templates (their text is fingerprinted; each row's `provenance` names the ones that "
                     "made it):\n\n" + _table(("template", "sha256"), ((name, f"`{sha}`") for name, sha in
                                                                      info.templates.items())))
    if info.ranking_reference or info.keep_top_share is not None:
        reference = f" fitted to {info.ranking_reference}" if info.ranking_reference else ""
        kept = f"; the top {info.keep_top_share:.0%} were kept" if info.keep_top_share is not None else ""
        parts.append(f"Ranking: clips were ranked by the log-likelihood of their audio embeddings under a Gaussian"
                     f"{reference}{kept} (columns `log_likelihood`, `percentile`).")
    if info.dropped_captions:
        parts.append("Captions dropped by the filters:\n\n" + _table(("reason", "captions"), (
            (reason, f"{count:,}") for reason, count in info.dropped_captions.items())))
    return "\n\n".join(parts) if len(parts) > 1 else ""


def _sources_section(info: DatasetCardInfo, sizes: ReleaseSizes) -> str:
    parts = ["## Sources"]
    if info.sources:
        parts.append("\n".join(f"- {source}" for source in info.sources))
    parts.append("Rows per `source`:\n\n" + _table(("source", "rows"), (
        (source, f"{count:,}") for source, count in sizes.sources.items())))
    return "\n\n".join(parts)


def _license_section(info: DatasetCardInfo, sizes: ReleaseSizes) -> str:
    parts = [f"## Licence\n\nThe dataset is released under `{info.license}`."]
    if info.license_details:
        parts.append(info.license_details.strip())
    parts.append("Each row's `license` column gives the licence of its audio:\n\n" + _table(("licence", "rows"), (
        (license, f"{count:,}") for license, count in sizes.licenses.items())))
    return "\n\n".join(parts)


def _limits_section(info: DatasetCardInfo) -> str:
    return "## Limits\n\n" + "\n".join(f"- {limit}" for limit in info.limits) if info.limits else ""


def _citation_section(info: DatasetCardInfo) -> str:
    return f"## Citation\n\n```bibtex\n{info.citation.strip()}\n```" if info.citation.strip() else ""


def _usage_section(info: DatasetCardInfo, features) -> str:
    imports, decode = ["import json"], []
    if "audio" in features:
        imports = ["import io", *imports, "", "import soundfile as sf"]
        decode = ['samples, sample_rate = sf.read(io.BytesIO(row["audio"]["bytes"]))  # not decoded by datasets']
    elif "audio_path" in features:
        imports = [*imports, "from pathlib import Path", "", "import soundfile as sf"]
        decode = ['samples, sample_rate = sf.read(Path("path/to/audio/collection") / row["audio_path"])']
    lines = [*imports, "from datasets import load_dataset", "",
             f'dataset = load_dataset("{info.repo_id or "path/to/this/folder"}", split="{SPLIT}")', "row = dataset[0]",
             'print(row["captions"], row["tags"], json.loads(row["provenance"]))', *decode]
    return "## Usage\n\n```python\n" + "\n".join(lines) + "\n```"


# --- writing ----------------------------------------------------------------------------------------------------


def write_dataset(out_dir: str | Path, rows: Iterable[Mapping], *, audio: str = "none", shard_rows: int = 1000,
                  card: DatasetCardInfo, overwrite: bool = False, audio_root: str | Path | None = None,
                  progress: bool = True) -> ReleaseSizes:
    """Write ``rows`` (one mapping per clip, see the module docstring) as a dataset folder at ``out_dir``.

    ``audio`` chooses the audio column (``"none"``, ``"path"``, ``"bytes"``); ``audio_root`` is the folder relative
    ``audio_path`` values are read from and, for ``"path"``, the root the stored paths are relative to. A folder that
    holds an earlier release (``README.md``) is replaced only with ``overwrite``; any other non-empty folder is refused.
    Rows are checked as they are read; on any error nothing is left behind and an earlier release stays as it was.
    """
    _check_audio_mode(audio)
    if not is_integer(shard_rows) or shard_rows < 1:
        raise ConfigError(f"shard_rows must be a positive integer (rows per parquet shard), got {shard_rows!r}")
    if not isinstance(card, DatasetCardInfo):
        raise ConfigError(f"card must be a DatasetCardInfo, got {type(card).__name__}")
    root = _check_audio_root(audio_root, audio)
    out_dir = Path(out_dir)
    check_output_dir(out_dir, what="dataset folder", marker=CARD_FILE, overwrite=overwrite)
    features = release_features(audio)
    with atomic_directory(out_dir) as folder:
        sizes = _write_shards(folder / DATA_DIR, rows, features, audio, root, shard_rows, progress)
        (folder / CARD_FILE).write_text(dataset_card(card, features, sizes), encoding="utf-8")
    return sizes


def shard_name(index: int, count: int) -> str:
    """``train-00001-of-00003.parquet``: the file name of shard ``index`` of ``count``."""
    return f"{SPLIT}-{index:05d}-of-{count:05d}.parquet"


def _write_shards(data_dir: Path, rows: Iterable[Mapping], features, audio: str, root: Path | None, shard_rows: int,
                  progress: bool) -> ReleaseSizes:
    """Write ``rows`` in shards of ``shard_rows`` to ``data_dir``, named ``-of-N`` once N is known; their sizes."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data_dir.mkdir()
    schema = features.arrow_schema   # carries the features as "huggingface" metadata, read back by load_dataset
    paths, counts, arrow_bytes = [], [], 0   # counts: (captions, licence, source) per row
    with tqdm(rows, desc="writing dataset", unit="clip", disable=not progress) as bar:
        checked = _release_records(bar, audio, root)
        while batch := list(itertools.islice(checked, shard_rows)):
            table = pa.Table.from_pylist(batch, schema=schema)
            paths.append(data_dir / f".shard-{len(paths):05d}.parquet")
            pq.write_table(table, paths[-1], row_group_size=ROW_GROUP_ROWS)
            arrow_bytes += table.nbytes
            counts += [(len(record["captions"]), record["license"], record["source"]) for record in batch]
    if not paths:
        raise DataError("no rows to release: the caption rows are empty; caption and rank some clips first")
    for index, path in enumerate(paths):
        path.rename(data_dir / shard_name(index, len(paths)))
    licenses = Counter(license for _, license, _ in counts)
    sources = Counter(source for _, _, source in counts)
    return ReleaseSizes(rows=len(counts), captions=sum(captions for captions, _, _ in counts),
                        shards=len(paths), parquet_bytes=sum(path.stat().st_size for path in data_dir.iterdir()),
                        arrow_bytes=arrow_bytes, licenses=dict(licenses.most_common()),
                        sources=dict(sources.most_common()))


# --- rows -------------------------------------------------------------------------------------------------------


def _check_audio_mode(audio: str) -> None:
    if audio not in AUDIO_MODES:
        raise ConfigError(f"audio must be one of {', '.join(AUDIO_MODES)} (no audio column, relative paths, or the "
                          f"files' bytes), got {audio!r}")


def _check_audio_root(audio_root: str | Path | None, audio: str) -> Path | None:
    if audio_root is None or audio == "none":
        return None
    root = Path(audio_root)
    if not root.is_dir():
        raise DataError(f"audio_root {root} is not a folder; give the folder the clips' audio_path values are under")
    return root


def _release_records(rows: Iterable[Mapping], audio: str, root: Path | None) -> Iterator[dict]:
    """The checked records of ``rows``, in order; a clip id seen before is a :class:`DataError`."""
    first_rows: dict[str, int] = {}
    for index, row in enumerate(rows):
        record = _release_record(row, index, audio, root)
        if record["id"] in first_rows:
            raise DataError(f"row {index}: clip id {record['id']!r} appears in more than one row (first in row "
                            f"{first_rows[record['id']]}); give every clip its own id")
        first_rows[record["id"]] = index
        yield record


def _release_record(row: Mapping, index: int, audio: str, root: Path | None) -> dict:
    """One input row → the values of the release's columns, checked; errors name the row and the field."""
    if not isinstance(row, Mapping):
        raise DataError(f"row {index} must be a mapping of {', '.join(ROW_KEYS)}, got {type(row).__name__}")
    clip = row.get("id")
    if not isinstance(clip, str) or not clip.strip():
        raise DataError(f"row {index}: id must be a non-empty string, got {clip!r}")
    where = f"row {index} (id {clip!r})"
    needed = [key for key in ROW_KEYS if key != "audio_path" or audio != "none"]
    missing, unknown = [key for key in needed if key not in row], sorted(set(row) - set(ROW_KEYS))
    if missing or unknown:
        problems = [f"lacks {missing}"] * bool(missing) + [f"has unknown keys {unknown}"] * bool(unknown)
        raise DataError(f"{where} {' and '.join(problems)}; a row has the keys "
                        f"{', '.join(ROW_KEYS)} (audio_path only with audio files)")
    record = {"id": clip, "captions": _captions(row["captions"], where),
              "description": _text(row["description"], "description", where, allow_empty=True),
              **_tag_columns(row["tags"], where), "source": _text(row["source"], "source", where),
              "license": _text(row["license"], "license", where),
              "log_likelihood": _optional_number(row["log_likelihood"], "log_likelihood", where),
              "percentile": _optional_number(row["percentile"], "percentile", where, PERCENTILE_RANGE),
              "provenance": _provenance_json(row["provenance"], where)}
    if audio == "path":
        record["audio_path"] = _relative_audio_path(row["audio_path"], root, where)
    elif audio == "bytes":
        path = _audio_file(row["audio_path"], root, where)
        record["audio"] = {"bytes": path.read_bytes(), "path": f"{clip}{path.suffix.lower()}"}
    return record


def _text(value, name: str, where: str, allow_empty: bool = False) -> str:
    if not isinstance(value, str) or not (allow_empty or value.strip()):
        raise DataError(f"{where}: {name} must be a {'' if allow_empty else 'non-empty '}string, got {value!r}")
    return value


def _tag_columns(tags, where: str) -> dict:
    """The ``tags`` summary and the tag columns of a :class:`Tags`, checked."""
    if not isinstance(tags, Tags):
        raise DataError(f"{where}: tags must be a discodiff.captions.Tags, got {type(tags).__name__}; build it with "
                        "Tags(...) or Tags.from_dict(...)")
    lists = {name: getattr(tags, name) for name in ("genres", "instruments", "moods")}
    for name, values in lists.items():
        if isinstance(values, str) or not all(isinstance(value, str) for value in values):
            raise DataError(f"{where}: tags.{name} must be a tuple of strings, got {values!r}")
    if tags.tempo_bpm is not None and not (is_real(tags.tempo_bpm) and math.isfinite(tags.tempo_bpm)):
        raise DataError(f"{where}: tags.tempo_bpm must be None or a finite number, got {tags.tempo_bpm!r}")
    if tags.key is not None and not isinstance(tags.key, str):
        raise DataError(f"{where}: tags.key must be None or a string such as 'D minor', got {tags.key!r}")
    return {"tags": tags.summary(), **{name: list(values) for name, values in lists.items()},
            "tempo_bpm": None if tags.tempo_bpm is None else float(tags.tempo_bpm), "key": tags.key}


def _captions(value, where: str) -> list[str]:
    if isinstance(value, str) or not isinstance(value, Sequence):
        raise DataError(f"{where}: captions must be a list of strings, got {type(value).__name__}")
    if not value or not all(isinstance(caption, str) and caption.strip() for caption in value):
        raise DataError(f"{where}: captions must hold at least one non-empty string, got {list(value)!r}; "
                        "drop clips whose captions were all filtered out")
    return list(value)


def _optional_number(value, name: str, where: str, bounds: tuple[float, float] | None = None) -> float | None:
    if value is None:
        return None
    if not is_real(value) or not math.isfinite(value) or (bounds and not bounds[0] <= value <= bounds[1]):
        allowed = f"in [{bounds[0]:g}, {bounds[1]:g}]" if bounds else "finite"
        raise DataError(f"{where}: {name} must be None or a number {allowed}, got {value!r}; take it from the "
                        "ranking table (rank_table)")
    return float(value)


def _provenance_json(value, where: str) -> str:
    if not isinstance(value, Mapping):
        raise DataError(f"{where}: provenance must be a dict (model ids, template ids, seeds, version), "
                        f"got {type(value).__name__}")
    try:
        return json.dumps(dict(value), sort_keys=True, ensure_ascii=False, separators=(",", ":"), allow_nan=False)
    except (TypeError, ValueError) as err:
        raise DataError(f"{where}: provenance must hold only JSON values (strings, finite numbers, lists, dicts) "
                        f"({first_line(err)})") from err


def _audio_file(value, root: Path | None, where: str) -> Path:
    """The clip's existing, readable audio file (relative paths are under ``root`` when given)."""
    import soundfile as sf

    if not isinstance(value, (str, Path)) or not str(value):
        raise DataError(f"{where}: audio_path must be a file path, got {value!r}")
    path = Path(value) if root is None else root / value
    if not path.is_file():
        raise AudioError(f"{where}: audio file {path} does not exist; fix audio_path or audio_root")
    try:
        sf.info(str(path))
    except (RuntimeError, sf.LibsndfileError) as err:
        raise AudioError(f"{where}: audio file {path} is not readable audio ({first_line(err)}); re-export it as "
                         "WAV or FLAC") from err
    return path


def _relative_audio_path(value, root: Path | None, where: str) -> str:
    """``audio_path`` as a POSIX path relative to ``root``, checked to exist (never absolute, never above root)."""
    path = _audio_file(value, root, where)
    given = Path(value)
    if given.is_absolute():
        if root is None:
            raise DataError(f"{where}: audio_path {given} is absolute; pass audio_root (the collection's root folder) "
                            "so the release stores paths relative to it")
        try:
            given = path.resolve().relative_to(root.resolve())
        except ValueError as err:
            raise DataError(f"{where}: audio_path {given} is not inside audio_root {root}; choose the folder that "
                            "holds every clip") from err
    relative = PurePosixPath(given.as_posix())
    if ".." in relative.parts:
        raise DataError(f"{where}: audio_path {value} leaves its root folder ('..'); give it relative to audio_root")
    return str(relative)


# --- pushing ----------------------------------------------------------------------------------------------------


def push_dataset(out_dir: str | Path, repo_id: str, private: bool = False, token: str | None = None) -> str:
    """Upload the release at ``out_dir`` to the hub dataset ``repo_id`` (created if missing); its URL.

    The endpoint is huggingface_hub's (``HF_ENDPOINT``); the token ``token`` or the logged-in one. Offline mode, a
    refused token, a network failure or any other hub error is one :class:`OutputError` line with the cause and the
    fix; the folder stays as it is, so it can be pushed again or uploaded by hand.
    """
    from huggingface_hub import HfApi
    from huggingface_hub.utils import validate_repo_id

    out_dir = Path(out_dir)
    if not (out_dir / CARD_FILE).is_file() or not any((out_dir / DATA_DIR).glob(f"{SPLIT}-*.parquet")):
        raise OutputError(f"{out_dir} is not a written dataset folder (no {CARD_FILE} and {DATA_FILES}); "
                          "write it first with write_dataset")
    try:
        validate_repo_id(repo_id)
    except ValueError as err:
        raise ConfigError(f"hub dataset id {repo_id!r} is malformed ({first_line(err)}); use owner/name") from err
    api = HfApi(token=token)
    try:
        url = api.create_repo(repo_id, repo_type="dataset", private=private, exist_ok=True)
        api.upload_folder(repo_id=repo_id, repo_type="dataset", folder_path=out_dir,
                          commit_message="Upload caption dataset written by discodiff")
    except Exception as err:  # the hub client raises its HTTP library's errors, OSErrors and ValueErrors alike
        raise OutputError(_push_failure(out_dir, repo_id, api.endpoint, err)) from err
    return str(url)


def _push_failure(out_dir: Path, repo_id: str, endpoint: str, err: Exception) -> str:
    """One line: what failed, why, and how to fix it."""
    from huggingface_hub.errors import HfHubHTTPError, OfflineModeIsEnabled

    status = getattr(getattr(err, "response", None), "status_code", None)
    if isinstance(err, OfflineModeIsEnabled):
        fix = "offline mode is on: unset HF_HUB_OFFLINE and push again"
    elif isinstance(err, HfHubHTTPError) and status in (401, 403):
        fix = "log in with `hf auth login` using a token with write access to it (or pass token=...)"
    else:
        fix = f"check the network and HF_ENDPOINT ({endpoint}) and log in with `hf auth login`"
    return (f"pushing {out_dir} to the hub dataset {repo_id} failed ({first_line(err)}); {fix}, or upload the folder "
            f"later: hf upload {repo_id} {out_dir} --repo-type dataset")
