"""The steps of a caption run over a :class:`~discodiff.captions.work.CaptionWork` folder:
describe → tags → rephrase → rank → release (each resumable, batched, sharded; see :mod:`.work`).

- :func:`describe_step`: one raw description per clip from an audio captioner (:mod:`.describe`).
- :func:`tags_step`: tags from each clip's metadata (:mod:`.tags`), tempo and key estimated from the audio when missing.
- :func:`rephrase_step`: several captions per clip from description + tags (:mod:`.rephrase`), filtered
  (:mod:`.filters`), every drop counted by reason.
- :func:`rank_step`: the clips' audio embeddings scored under a Gaussian fitted to a reference collection (:mod:`.rank`);
  writes ``WORK/rank/ranking.csv`` (all clips, best first) and ``WORK/rank/reference.npz`` (the fitted statistics).
- :func:`release_rows`: one dataset row per kept clip for :func:`~discodiff.captions.release.write_dataset`.
"""

from __future__ import annotations

import importlib.metadata
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from ..audio import load_audio, read_audio
from ..errors import ConfigError, DataError, is_integer
from ..evaluation.protocol import settings_key
from .clips import Clip
from .filters import LEAK_SHINGLE_WORDS, MAX_CAPTION_WORDS, TEMPO_TOLERANCE, filter_captions
from .rank import PAPER_SHARE, GaussianReference, keep_count, keep_top, rank_table, read_ranking_csv, write_ranking_csv
from .tags import ANALYSIS_RATE, Tags, complete_tags, tags_from_metadata
from .work import CaptionWork, StepRecords, record_stem, run_batches

DESCRIBE, TAGS, REPHRASE, RANK = "describe", "tags", "rephrase", "rank"
RANKING_FILE, KEPT_FILE, REFERENCE_FILE = "ranking.csv", "kept.csv", "reference.npz"
FILTER_SETTINGS = {"max_words": MAX_CAPTION_WORDS, "leak_shingle_words": LEAK_SHINGLE_WORDS,
                   "tempo_tolerance": TEMPO_TOLERANCE}


def _check_count(value, name: str, low: int = 1) -> int:
    if not is_integer(value) or value < low:
        raise ConfigError(f"{name} must be a whole number ≥ {low}, got {value!r}")
    return int(value)


def clip_audio(clip: Clip, sample_rate: int | None = None) -> tuple[np.ndarray, int]:
    """The clip's audio, mono ``[T]`` float32, at ``sample_rate`` (None: the file's)."""
    if sample_rate is None:
        audio, rate = read_audio(clip.audio)
        return audio[0].numpy(), rate
    return load_audio(clip.audio, sample_rate=sample_rate)[0].numpy(), sample_rate


def describe_step(work: CaptionWork, captioner, *, seed: int = 0, batch_size: int = 4, overwrite: bool = False,
                  progress: bool = True) -> StepRecords:
    """A raw description per clip; batch ``b`` is described with seed ``seed + b·batch_size``."""
    batch_size = _check_count(batch_size, "batch_size")
    _check_count(seed, "seed", low=0)
    records = work.step(DESCRIBE, {"captioner": captioner.provenance(), "seed": seed, "batch_size": batch_size},
                        overwrite)

    def compute(batch: list[Clip], start: int) -> list[dict]:
        audios = [clip_audio(clip, captioner.sample_rate)[0] for clip in batch]
        texts = captioner.describe(audios, captioner.sample_rate, seed + start)
        return [{"description": text, "seed": seed + start} for text in texts]

    run_batches(records, work.clips, batch_size, compute, "describe", progress)
    return records


def tags_step(work: CaptionWork, mapping: str = "rendered", *, estimate: bool = True, overwrite: bool = False,
              progress: bool = True) -> StepRecords:
    """Tags per clip from its metadata by ``mapping`` (``rendered``, ``jamendo``, ``fma``; none when a clip has no
    metadata); with ``estimate`` tempo and key are filled from the audio (librosa) where the metadata lacks them."""
    records = work.step(TAGS, {"mapping": mapping, "estimate": estimate, "analysis_rate": ANALYSIS_RATE}, overwrite)

    def compute(batch: list[Clip], start: int) -> list[dict]:
        results = []
        for clip in batch:
            tags = tags_from_metadata(clip.metadata, mapping) if clip.metadata else Tags()
            if estimate and (tags.tempo_bpm is None or tags.key is None):
                tags = complete_tags(tags, *clip_audio(clip))
            results.append({"tags": tags.to_dict(), "summary": tags.summary()})
        return results

    run_batches(records, work.clips, 1, compute, "tags", progress)  # per clip: no model, so nothing to batch
    return records


def rephrase_step(work: CaptionWork, rephraser, *, num_captions: int = 3, seed: int = 0, batch_size: int = 4,
                  overwrite: bool = False, progress: bool = True) -> StepRecords:
    """``num_captions`` candidate captions per clip from its description (empty when describe was not run) and tags,
    then filtered; a record keeps the candidates, the kept captions and the drop counts by reason."""
    num_captions, batch_size = _check_count(num_captions, "num_captions"), _check_count(batch_size, "batch_size")
    _check_count(seed, "seed", low=0)
    tags = work.existing_step(TAGS)
    if tags is None:
        raise DataError(f"{work.root} has no tags yet; run `discodiff captions tags` first (rephrase needs them)")
    describe = work.existing_step(DESCRIBE)
    template = getattr(rephraser, "template", None)
    settings = {"rephraser": rephraser.provenance(), "num_captions": num_captions, "seed": seed,
                "batch_size": batch_size, "filters": FILTER_SETTINGS, "tags": tags.key,
                "describe": None if describe is None else describe.key}
    records = work.step(REPHRASE, settings, overwrite)
    tag_records = tags.require(work.clips, "rephrase")
    descriptions = describe.require(work.clips, "rephrase") if describe is not None else None
    index = {clip.id: i for i, clip in enumerate(work.clips)}

    def compute(batch: list[Clip], start: int) -> list[dict]:
        clip_tags = [Tags.from_dict(tag_records[index[clip.id]]["tags"]) for clip in batch]
        texts = [descriptions[index[clip.id]]["description"] if descriptions else "" for clip in batch]
        candidates = rephraser.rephrase(texts, clip_tags, num_captions, seed + start)
        results = []
        for clip_candidates, clip_tag in zip(candidates, clip_tags):
            kept, dropped = filter_captions(clip_candidates, clip_tag, template)
            results.append({"candidates": list(clip_candidates), "captions": kept, "dropped": dict(sorted(dropped.items())),
                            "seed": seed + start})
        return results

    run_batches(records, work.clips, batch_size, compute, "rephrase", progress)
    return records


def rank_step(work: CaptionWork, embedder, reference: Sequence[Clip] | str | Path, *,
              keep_top_share: float = PAPER_SHARE, overwrite: bool = False, progress: bool = True) -> list[dict]:
    """Rank every clip by the log-likelihood of its embedding under a Gaussian fitted to ``reference``: clips (their
    embeddings are cached in the work folder too) or a saved reference (``.npz`` of an earlier rank step, reused
    as is). Writes ``WORK/rank/ranking.csv`` (every clip), ``WORK/rank/kept.csv`` (the best ``keep_top_share``, which
    the release keeps) and ``WORK/rank/reference.npz``; returns the ranking rows, best first."""
    from ..evaluation.protocol import cached_embeddings, distributed_state, embedder_folder

    keep_count(1, keep_top_share)  # validates the share before any work
    settings = embedder.settings()
    if isinstance(reference, (str, Path)):
        fitted = GaussianReference.load(reference)
        if fitted.settings.get("embedder") != settings:
            raise DataError(f"{reference} was fitted on embeddings of other settings than --embedder's; rank with the "
                            "embedder it was made with, or fit a new one from reference clips")
        reference_ids = fitted.settings.get("reference_ids", [])
        reference_clips = None
    else:
        reference_clips = list(reference)
        if len(reference_clips) < 2:
            raise DataError(f"the reference collection has {len(reference_clips)} clips; fitting a Gaussian needs at "
                            "least 2 (hundreds for a useful one)")
        reference_ids = [clip.id for clip in reference_clips]
    step_settings = {"embedder": settings, "reference_ids": reference_ids, "keep_top": keep_top_share,
                     "reference_file": None if reference_clips is not None else str(Path(reference).resolve())}
    records = work.step(RANK, step_settings, overwrite)
    folder = embedder_folder(records.folder, embedder)
    state = distributed_state()
    share = None if state is None else range(state.process_index, len(work.clips), state.num_processes)
    names = [record_stem(clip.id) for clip in work.clips]

    def embeddings(clips: Sequence[Clip], names: Sequence[str], where: Path, what: str, indices=None) -> np.ndarray:
        return cached_embeddings(embedder, where, names, lambda i: clip_audio(clips[i]), progress, what, indices)

    if share is not None:
        embeddings(work.clips, names, folder / "candidates", "candidates", share)
        if reference_clips is not None:
            embeddings(reference_clips, [record_stem(c.id) for c in reference_clips], folder / "reference",
                       "reference", range(state.process_index, len(reference_clips), state.num_processes))
        state.wait_for_everyone()
        if not state.is_main_process:
            state.wait_for_everyone()
            return read_ranking_csv(records.folder / RANKING_FILE)
    candidates = embeddings(work.clips, names, folder / "candidates", "candidates")
    if reference_clips is not None:
        reference_embeddings = embeddings(reference_clips, [record_stem(c.id) for c in reference_clips],
                                          folder / "reference", "reference")
        fitted = GaussianReference({"embedder": settings, "reference_ids": reference_ids}).fit(reference_embeddings)
    fitted.save(records.folder / REFERENCE_FILE)
    rows = rank_table([clip.id for clip in work.clips], fitted.log_likelihood(candidates))
    write_ranking_csv(records.folder / RANKING_FILE, rows)
    write_ranking_csv(records.folder / KEPT_FILE, keep_top(rows, keep_top_share))
    if state is not None:
        state.wait_for_everyone()
    return rows


def release_rows(work: CaptionWork, audio: bool = False) -> tuple[list[dict], dict]:
    """The dataset rows of the clips the rank step kept (``kept.csv``; every clip when the rank step was not run) that
    have at least one caption, in clip order, and a summary
    (counts of clips, of captions dropped by reason, of clips without a caption; the steps' settings)."""
    rephrase = work.existing_step(REPHRASE)
    if rephrase is None:
        raise DataError(f"{work.root} has no captions yet; run `discodiff captions rephrase` first")
    tags, describe, rank = (work.existing_step(name) for name in (TAGS, DESCRIBE, RANK))
    ranking = {row["id"]: row for row in read_ranking_csv(rank.folder / RANKING_FILE)} if rank is not None else {}
    if rank is not None and set(ranking) != {clip.id for clip in work.clips}:
        raise DataError(f"{rank.folder / RANKING_FILE} does not rank exactly this work folder's clips; rerun "
                        "`discodiff captions rank`")
    kept_ids = {row["id"] for row in read_ranking_csv(rank.folder / KEPT_FILE)} if rank is not None \
        else {clip.id for clip in work.clips}
    caption_records = rephrase.require(work.clips, "release")
    tag_records = tags.require(work.clips, "release")
    descriptions = describe.require(work.clips, "release") if describe is not None else None
    version = importlib.metadata.version("discodiff")
    dropped, uncaptioned, rows = Counter(), 0, []
    for i, clip in enumerate(work.clips):
        if clip.id not in kept_ids:
            continue
        record = caption_records[i]
        dropped.update(record["dropped"])
        if not record["captions"]:
            uncaptioned += 1
            continue
        provenance = {"discodiff": version, "rephrase": rephrase.settings["rephraser"], "rephrase_seed": record["seed"],
                      "tags": {"mapping": tags.settings["mapping"], "sources": tag_records[i]["tags"].get("sources", {})}}
        if descriptions is not None:
            provenance.update(describe=describe.settings["captioner"], describe_seed=descriptions[i]["seed"])
        if rank is not None:
            provenance["rank"] = {"embedder": rank.settings["embedder"].get("embedder"),
                                  "embedder_settings_sha256": settings_key(rank.settings["embedder"]),
                                  "reference_clips": len(rank.settings["reference_ids"])}
        row = {"id": clip.id, "captions": record["captions"],
               "description": descriptions[i]["description"] if descriptions is not None else "",
               "tags": Tags.from_dict(tag_records[i]["tags"]), "source": clip.source, "license": clip.license,
               "log_likelihood": ranking[clip.id]["log_likelihood"] if ranking else None,
               "percentile": ranking[clip.id]["percentile"] if ranking else None,
               "provenance": provenance, "audio_path": clip.audio if audio else None}
        rows.append(row)
    summary = {"clips": len(work.clips), "kept_by_rank": len(kept_ids), "rows": len(rows),
               "without_captions": uncaptioned, "dropped_captions": dict(sorted(dropped.items())),
               "steps": [name for name in (DESCRIBE, TAGS, REPHRASE, RANK) if work.existing_step(name) is not None]}
    return rows, summary


def _add_template(templates: dict, made_by: dict) -> None:
    """``templates[template id] = its sha256`` (``versioned code`` for the template fallback, which has no prompt)."""
    templates[str(made_by.get("template"))] = made_by.get("template_sha256") or "versioned code (no prompt text)"


def card_info(work: CaptionWork, summary: dict, name: str, license: str | None, license_details: str = ""):
    """The dataset card's facts (:class:`~discodiff.captions.release.DatasetCardInfo`) from the work folder's steps."""
    from .release import DatasetCardInfo

    licenses = sorted({clip.license for clip in work.clips})
    if license is None:
        if len(licenses) != 1:
            raise ConfigError(f"the clips carry several licences ({', '.join(licenses)}); give the dataset's with --license")
        license = licenses[0]
    steps, models, templates = [], {}, {}
    describe, tags, rephrase, rank = (work.existing_step(step) for step in (DESCRIBE, TAGS, REPHRASE, RANK))
    if describe is not None:
        made_by = describe.settings["captioner"]
        models["describe"] = str(made_by.get("model", made_by.get("endpoint", "?")))
        _add_template(templates, made_by)
        steps.append(f"describe: one raw description per clip by {models['describe']}, seed {describe.settings['seed']} "
                     f"+ clip index, batches of {describe.settings['batch_size']}")
    steps.append(f"tags: from the clips' metadata (mapping {tags.settings['mapping']})"
                 + ("; tempo and key estimated with librosa where missing" if tags.settings["estimate"] else ""))
    made_by = rephrase.settings["rephraser"]
    models["rephrase"] = str(made_by.get("model", made_by.get("endpoint", made_by.get("rephraser", "?"))))
    _add_template(templates, made_by)
    steps.append(f"rephrase: {rephrase.settings['num_captions']} captions per clip from the description and the tags "
                 f"(tags take precedence) by {models['rephrase']}, seed {rephrase.settings['seed']} + clip index; "
                 f"filtered for contradictions with the tags, prompt leaks, length and duplicates")
    reference, keep_top_share = None, None
    if rank is not None:
        keep_top_share = rank.settings["keep_top"]
        embedder = rank.settings["embedder"]
        reference = (f"{len(rank.settings['reference_ids'])} reference clips embedded by {embedder.get('embedder')} (settings in the rank step); "
                     "Gaussian with Ledoit-Wolf covariance; each clip ranked by its log-likelihood")
        steps.append(f"rank: {reference}; the top {keep_top_share:g} kept")
    return DatasetCardInfo(
        pretty_name=name, license=license, license_details=license_details,
        summary=(f"{summary['rows']} music clips with captions made by the discodiff caption pipeline, the "
                 f"{summary['kept_by_rank']} best-ranked of {summary['clips']} candidate clips."),
        steps=tuple(steps), models=models, templates=templates, ranking_reference=reference,
        keep_top_share=keep_top_share, dropped_captions=summary["dropped_captions"],
        sources=tuple(sorted({clip.source for clip in work.clips})),
        limits=("Captions made by the offline template fallback only restate the tags; they describe no sound "
                "beyond them." if made_by.get("rephraser") == "template" else
                "Captions are model output: check a sample before training on them.",
                f"{summary['without_captions']} kept clips lost every caption to the filters and are not in the data."))
