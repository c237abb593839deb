"""What a diffusion model must show on held-out latents: v-loss by diffusion time against an untrained model, and w/ PL.

Per stage and diffusion time, the v-loss of the model against that of the same stage untrained; and the paper's
"w/ PL" check of the secondary U-Net.

    python -m discodiff.bench.diffusion_quality --model MODEL_DIR --data PREPARED_VALIDATION_DIR [--limit N]
        [--frames 256] [--times 0.1 0.3 0.5 0.7 0.9] [--steps 25] [--seed 0] [--loss l1]
        [--text-guidance G] [--vocal-guidance G] [--device cuda|cpu] [--json] [--quiet]

Items: the first ``--limit`` windows (default all) of the latent cache ``--data`` (``discodiff prepare``; its
``codec.json`` must describe the model's codec geometry), each cropped to ``--frames`` frames (a multiple of the
U-Nets' length multiple, at most the cache's window length) by :class:`~discodiff.data.dataset.LatentCropDataset`
seeded by ``--seed``, with clean vocals (no noisy-vocal augmentation) and one of the track's captions. Latents are
normalised with the model's own latent statistics (``latent_stats.json`` of an exported model: its training
data's), or with the cache's when the model has none fitted (a model from ``discodiff new-model``).

1. **v-loss by diffusion time.** For each stage and each ``t`` of ``--times``: the mean over the items of the
   training objective (:class:`~discodiff.training.stage.StageObjective`, nothing dropped, ``--loss``) of the model
   (*trained*) and of the same stage with its U-Net and vocal encoder re-initialised from their configs under
   ``torch.manual_seed(--seed)`` (*untrained*; the U-Nets' zero-initialised output convolution makes it predict
   v = 0, so its loss is that of the trivial predictor). Both see the same noise, drawn as the training task's
   validation draws it (:func:`~discodiff.training.validation.validation_loss` with run seed ``--seed``): on the same
   crops in batches of :data:`BATCH_SIZE`, the trained numbers are the ``val/loss_t<t>`` a run would report.
   ratio = trained / untrained (below 1: the model has learned something).
2. **w/ PL.** Per item, three decodes (denormalise, snap, decode; trimmed to the item's real frames): (a) the codec's
   reconstruction of the item's true latents; (b) the secondary U-Net sampled over the item's *true* primary
   (codebook 0), conditioned on its caption and (for a model with a vocal encoder) its vocal; (c) the same over a
   *random* primary (standard normal in normalised space). (b) and (c) are sampled with the same noise (item ``i``:
   ``--seed + i``), ``--steps`` steps and the model's guidance unless given, through
   :func:`~discodiff.training.validation.generate_samples` (the family's one guided path, as in the pipeline's
   ``primary_latents=``). Both are scored against (a): multi-scale mel distance (lower is better) and chroma
   similarity (higher is better) of :mod:`discodiff.evaluation.reconstruction`; means ± std (sample) over the items,
   and of the paired difference (b) − (c). The decode of (c) holds the random primary itself: (c) is the score with the
   wrong content, the baseline of the difference; (b) near a perfect score (mel distance 0, chroma 1) says that the
   secondary restores the detail over the true content.

Prints two tables; ``--json`` prints one JSON object with every number instead (NaN, e.g. the chroma of a silent
excerpt, as null). ``--quiet`` hides the progress bars.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import sys
from collections.abc import Sequence
from pathlib import Path

from ..cli.errors import run_script
from ..errors import ConfigError, DataError, ModelDirectoryError

DEFAULT_TIMES = (0.1, 0.3, 0.5, 0.7, 0.9)
DEFAULT_FRAMES = 256
DEFAULT_STEPS = 25
BATCH_SIZE = 4  # items per forward (the validation noise depends on it: keep it fixed)
MAX_SEED = 2**32 - 1
STAGES = ("primary", "secondary")
MEASURES = ("mel_distance", "chroma_similarity")
CONDITIONS = ("true_primary", "random_primary")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from ..diffusion import LOSS_KINDS

    parser = argparse.ArgumentParser(prog="python -m discodiff.bench.diffusion_quality", description=__doc__.splitlines()[0])
    parser.add_argument("--model", required=True, help="model directory (training export or `discodiff new-model`)")
    parser.add_argument("--data", required=True, help="a prepared latent cache of validation data (`discodiff prepare`)")
    parser.add_argument("--limit", type=int, default=None, help="use the first N windows (N >= 1; default all)")
    parser.add_argument("--frames", type=int, default=DEFAULT_FRAMES,
                        help=f"crop per item in frames, a multiple of the U-Nets' length multiple (default {DEFAULT_FRAMES})")
    parser.add_argument("--times", type=float, nargs="+", default=list(DEFAULT_TIMES),
                        help="diffusion times in (0, 1) for the v-loss (default 0.1 0.3 0.5 0.7 0.9)")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help=f"inference steps of the w/ PL samples (default {DEFAULT_STEPS})")
    parser.add_argument("--seed", type=int, default=0, help=f"crops, re-initialisation and noise, in 0 … {MAX_SEED} (default 0)")
    parser.add_argument("--loss", default="l1", choices=LOSS_KINDS, help="v-loss kind (default l1, the training default)")
    parser.add_argument("--text-guidance", type=float, default=None, help="w/ PL text guidance (default: the model's)")
    parser.add_argument("--vocal-guidance", type=float, default=None, help="w/ PL vocal guidance (default: the model's)")
    parser.add_argument("--device", default=None, help="torch device (default cuda when available, else cpu)")
    parser.add_argument("--json", action="store_true", help="print one JSON object instead of the tables")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Numbers, the device and the input folders, before anything is loaded."""
    from ..config import MAX_GUIDANCE, MAX_INFERENCE_STEPS

    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit {args.limit}: must be at least 1 (or left out for every window)")
    if args.frames < 1:
        raise ConfigError(f"--frames {args.frames}: must be a positive multiple of the U-Nets' length multiple, e.g. "
                          f"{DEFAULT_FRAMES}")
    bad = [t for t in args.times if not (math.isfinite(t) and 0 < t < 1)]
    if bad:
        raise ConfigError(f"--times {' '.join(f'{t:g}' for t in bad)}: every diffusion time must be in (0, 1), e.g. "
                          f"{' '.join(f'{t:g}' for t in DEFAULT_TIMES)}")
    if not 1 <= args.steps <= MAX_INFERENCE_STEPS:
        raise ConfigError(f"--steps {args.steps}: must be in 1 … {MAX_INFERENCE_STEPS}")
    if not 0 <= args.seed <= MAX_SEED:
        raise ConfigError(f"--seed {args.seed}: must be in 0 … {MAX_SEED}")
    for flag, value in (("--text-guidance", args.text_guidance), ("--vocal-guidance", args.vocal_guidance)):
        if value is not None and not (math.isfinite(value) and 0 <= value <= MAX_GUIDANCE):
            raise ConfigError(f"{flag} {value:g}: must be in 0 … {MAX_GUIDANCE:g} (1 = unguided)")
    resolve_device(args.device)
    check_model_dir(args.model)
    check_data_dir(args.data, args.frames)


def resolve_device(name: str | None):
    """``name`` as a torch device (None: cuda when available, else cpu); a ConfigError for one this machine lacks."""
    import torch

    if name is None:
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except (RuntimeError, ValueError) as err:
        raise ConfigError(f"--device {name}: not a torch device ({err}); pass cpu or cuda") from err
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {name}: CUDA is not available on this machine; pass --device cpu")
    return device


def check_model_dir(model: str | Path) -> None:
    """A folder holding a ``pipeline.json`` (its parts are checked as it loads)."""
    from ..pipeline import PIPELINE_FILE

    path = Path(model)
    if not path.is_dir():
        what = "a file, not a folder" if path.exists() else "no such folder"
        raise ModelDirectoryError(f"--model {model}: {what}; pass a model directory (training export or "
                                  "`discodiff new-model`)")
    if not (path / PIPELINE_FILE).is_file():
        raise ModelDirectoryError(f"--model {model}: no {PIPELINE_FILE}, not a model directory; pass one written by "
                                  "the training export or `discodiff new-model`")


def check_data_dir(data: str | Path, frames: int) -> int:
    """A finished latent cache with its ``codec.json`` whose windows hold ``frames``; returns the window length."""
    from ..data.cache import CODEC_FILE, CacheLayout
    from ..training.data import window_frames

    path = Path(data)
    fix = "pass a latent cache made with `discodiff prepare STEMS_DIR --out DIR` from validation stems"
    if not path.is_dir():
        what = "a file, not a folder" if path.exists() else "no such folder"
        raise DataError(f"--data {data}: {what}; {fix}")
    try:
        CacheLayout(path).require_dataset()
    except FileNotFoundError as err:
        raise DataError(f"--data {data}: {err}") from err
    if not (path / CODEC_FILE).is_file():
        raise DataError(f"--data {data}: no {CODEC_FILE} (the codec the latents come from); re-run `discodiff prepare` "
                        f"into it (a rerun resumes and writes it)")
    window = window_frames("--data", path)
    if frames > window:
        raise ConfigError(f"--frames {frames} is longer than the windows of --data {data} ({window} frames); pass "
                          f"--frames at most {window}, or prepare the data with a longer --window-seconds")
    return window


def check_fit(pipeline, data: str | Path, frames: int) -> int:
    """Refuse data of another codec (its geometry, or the same geometry with other weights:
    :meth:`~discodiff.data.cache.CodecInfo.check_compatible`) and a crop the U-Nets cannot take; returns their length
    multiple."""
    from ..data.cache import CODEC_FILE, CodecInfo
    from ..training.stage import StageModel

    try:
        CodecInfo.load(Path(data) / CODEC_FILE).check_compatible(pipeline.codec)
    except DataError as err:
        raise DataError(f"--data {data}: {err}") from err
    except (ValueError, TypeError) as err:  # JSON or fields that are not a CodecInfo
        raise DataError(f"--data {data}: {Path(data) / CODEC_FILE} is damaged ({err}); re-run `discodiff prepare` "
                        "into a new --out") from err
    multiple = max(StageModel.from_pipeline(pipeline, stage).length_multiple for stage in STAGES)
    if frames % multiple:
        lower, upper = frames // multiple * multiple, (frames // multiple + 1) * multiple
        choices = f"{lower} or {upper}" if lower else f"{upper}"
        raise ConfigError(f"--frames {frames} is not a multiple of {multiple}, the U-Nets' length multiple "
                          f"(2^(levels − 1)); pass --frames {choices}")
    return multiple


def use_latent_stats(pipeline, data: str | Path) -> str:
    """Normalise with the model's statistics, or with the data's when the model has none fitted (set on ``pipeline``);
    returns which: ``model`` or ``data``."""
    from ..latents import LatentStats, check_latent_stats
    from ..training.data import latent_stats_path

    if pipeline.latent_stats.fitted:
        return "model"
    path = latent_stats_path(data)
    stats = LatentStats.load(path)
    check_latent_stats(stats, pipeline.latent_stats.per, pipeline.codec.codebook_dim, path)
    pipeline.latent_stats = stats
    return "data"


def load_batches(data: str | Path, limit: int | None, frames: int, frame_multiple: int, seed: int) -> list[dict]:
    """The first ``limit`` windows of the cache cropped to ``frames`` frames, clean vocals, in batches of
    :data:`BATCH_SIZE` (:func:`~discodiff.data.dataset.collate_latent_batch`)."""
    from ..data.dataset import LatentCropDataset, collate_latent_batch

    dataset = LatentCropDataset(data, crop_frames=frames, frame_multiple=frame_multiple, seed=seed, noisy_vocal_std=0.0)
    count = len(dataset) if limit is None else min(limit, len(dataset))
    if count == 0:
        raise DataError(f"--data {data}: the cache holds no window; prepare validation stems into it")
    return [collate_latent_batch([dataset[i] for i in range(start, min(start + BATCH_SIZE, count))])
            for start in range(0, count, BATCH_SIZE)]


# --- 1. v-loss by diffusion time -------------------------------------------------------------------------------


def untrained_stage(pipeline, stage: str, seed: int):
    """A :class:`~discodiff.training.stage.StageModel` of ``stage`` with its U-Net and vocal encoder built anew from
    their configs: ``torch.manual_seed(seed)``, then the U-Net, then the vocal encoder (the global generator is
    restored afterwards; ``pipeline`` is not touched)."""
    import torch

    from ..training.stage import StageModel

    trained = StageModel.from_pipeline(pipeline, stage)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = type(trained.unet).from_config(trained.unet.config)
        encoder = trained.vocal_encoder
        encoder = None if encoder is None else type(encoder).from_config(encoder.config)
    return StageModel(unet, encoder).to(pipeline.device).eval()


def stage_losses(model, objective, batches: Sequence[dict], times: Sequence[float], seed: int, progress=None) -> dict:
    """``{t: mean per-item loss}`` of ``model`` under ``objective`` at each fixed ``t``, nothing dropped: the loop of
    :func:`~discodiff.training.validation.validation_loss` (one process, run seed ``seed``), so the noise depends
    only on ``seed``, the batches and ``times``. ``progress``: a tqdm bar advanced once per batch."""
    import torch

    from ..training.state import process_seed

    device = objective.pipeline.device
    generator = torch.Generator().manual_seed(process_seed(seed, 0))
    losses: dict[float, list[torch.Tensor]] = {t: [] for t in times}
    with torch.no_grad():
        for batch in batches:
            prepared = objective.prepare(batch, device)
            for t in times:
                fixed_t = torch.full((prepared.batch_size,), t, device=device)
                loss, _ = objective(model, prepared, generator, t=fixed_t, drop_conditions=False)
                losses[t].append(loss.float().cpu())
            if progress is not None:
                progress.update(1)
    return {t: torch.cat(values).mean().item() for t, values in losses.items()}


def loss_by_time(pipeline, batches: Sequence[dict], times: Sequence[float], seed: int, loss: str = "l1",
                 progress: bool = True) -> dict:
    """Per stage, the rows ``{t, trained, untrained, ratio}`` (one per ``t``, then ``t = "mean"``)."""
    from tqdm.auto import tqdm

    from ..training.stage import StageModel, StageObjective

    result = {}
    with tqdm(total=2 * len(STAGES) * len(batches), desc="v-loss", unit="batch", disable=not progress) as bar:
        for stage in STAGES:
            objective = StageObjective(pipeline, stage, text_dropout=0.0, vocal_dropout=0.0, loss=loss)
            trained = StageModel.from_pipeline(pipeline, stage).eval()
            measured = {name: stage_losses(model, objective, batches, times, seed, bar)
                        for name, model in (("trained", trained), ("untrained", untrained_stage(pipeline, stage, seed)))}
            rows = [{"t": t, "trained": measured["trained"][t], "untrained": measured["untrained"][t]} for t in times]
            rows.append({"t": "mean", **{name: sum(values.values()) / len(values) for name, values in measured.items()}})
            for row in rows:
                row["ratio"] = row["trained"] / row["untrained"] if row["untrained"] > 0 else None
            result[stage] = rows
    return result


# --- 2. w/ PL --------------------------------------------------------------------------------------------------


def with_primary(pipeline, batches: Sequence[dict], steps: int, seed: int, text_guidance: float | None = None,
                 vocal_guidance: float | None = None, progress: bool = True) -> dict:
    """The w/ PL check (see the module docstring): per item the mel distance and chroma similarity of the secondary
    sampled over the true primary and over a random one, both against the codec's reconstruction of the true
    latents, and their summaries. Guidance ``None``: the model's default."""
    import torch
    from tqdm.auto import tqdm

    from ..evaluation.reconstruction import chroma_similarity, mel_distance
    from ..guidance import draw_normal
    from ..latents import merge_latents
    from ..training.stage import StageModel, StageObjective
    from ..training.state import process_seed
    from ..training.validation import decode, generate_samples

    text_guidance = pipeline.defaults["text_guidance"] if text_guidance is None else text_guidance
    vocal_guidance = pipeline.defaults["vocal_guidance"] if vocal_guidance is None else vocal_guidance
    model = StageModel.from_pipeline(pipeline, "secondary").eval()
    objective = StageObjective(pipeline, "secondary", text_dropout=0.0, vocal_dropout=0.0)
    device, rate, hop = pipeline.device, pipeline.codec.sample_rate, pipeline.codec.hop_length
    primary_noise = torch.Generator().manual_seed(process_seed(seed, 1))  # not the validation noise (process 0)
    items, index = [], 0
    with tqdm(total=sum(len(batch["captions"]) for batch in batches), desc="w/ PL", unit="item",
              disable=not progress) as bar:
        for batch in batches:
            prepared = objective.prepare(batch, device)
            size, p = prepared.batch_size, pipeline.primary_channels
            random_primary = draw_normal((size, p, prepared.latents.shape[-1]), primary_noise, device)
            shuffled = dataclasses.replace(prepared, latents=merge_latents(random_primary, prepared.target))
            audio = {"reference": decode(pipeline, prepared.latents)}
            for condition, stage_batch in (("true_primary", prepared), ("random_primary", shuffled)):
                audio[condition] = generate_samples(model, pipeline, stage_batch, steps, text_guidance, vocal_guidance,
                                                    seed + index)
            for i in range(size):
                length = int(prepared.frame_mask[i].sum()) * hop
                clips = {name: values[i, 0, :length].float().cpu().numpy() for name, values in audio.items()}
                item = {"track_id": batch["track_ids"][i], "caption": batch["captions"][i], "seconds": length / rate}
                for condition in CONDITIONS:
                    item[f"mel_distance_{condition}"] = float(mel_distance(clips["reference"], clips[condition], rate))
                    item[f"chroma_similarity_{condition}"] = chroma_similarity(clips["reference"], clips[condition], rate)
                items.append(item)
                bar.update(1)
            index += size
    summary = {measure: paired_summary([item[f"{measure}_true_primary"] for item in items],
                                       [item[f"{measure}_random_primary"] for item in items]) for measure in MEASURES}
    return {"steps": steps, "text_guidance": text_guidance, "vocal_guidance": vocal_guidance,
            "vocal": pipeline.has_vocal_encoder, **summary, "items": [_no_nan(item) for item in items]}


def mean_std(values: Sequence[float]) -> dict:
    """``{mean, std, n}`` over the finite values (std: sample, ddof=1; None below 2 values; mean None for none)."""
    import numpy as np

    finite = np.asarray([v for v in values if v is not None and math.isfinite(v)], dtype=np.float64)
    return {"mean": float(finite.mean()) if finite.size else None,
            "std": float(finite.std(ddof=1)) if finite.size > 1 else None, "n": int(finite.size)}


def paired_summary(true_primary: Sequence[float], random_primary: Sequence[float]) -> dict:
    """Both conditions' :func:`mean_std` and that of the paired differences true − random (items where both are finite)."""
    pairs = [(a, b) for a, b in zip(true_primary, random_primary) if math.isfinite(a) and math.isfinite(b)]
    return {"true_primary": mean_std(true_primary), "random_primary": mean_std(random_primary),
            "difference": mean_std([a - b for a, b in pairs])}


def _no_nan(item: dict) -> dict:
    return {key: None if isinstance(value, float) and not math.isfinite(value) else value for key, value in item.items()}


# --- the report ------------------------------------------------------------------------------------------------


def measure(pipeline, batches: Sequence[dict], times: Sequence[float], steps: int, seed: int, loss: str = "l1",
            text_guidance: float | None = None, vocal_guidance: float | None = None, progress: bool = True) -> dict:
    """Both measurements on ``batches`` (:func:`load_batches`) with a pipeline whose latent statistics are set."""
    return {"loss": loss_by_time(pipeline, batches, times, seed, loss, progress),
            "with_primary": with_primary(pipeline, batches, steps, seed, text_guidance, vocal_guidance, progress)}


def fmt(value, digits: int = 3, sign: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.{digits}f}" if sign else f"{value:.{digits}f}"


def print_report(record: dict) -> None:
    settings = record["settings"]
    print(f"diffusion quality: model={settings['model']}, data={settings['data']}, items={settings['items']}, "
          f"frames={settings['frames']} ({settings['seconds']:.2f} s), seed={settings['seed']}, "
          f"latent statistics: the {settings['latent_stats']}'s")
    print(f"validation v-loss ({settings['loss']}, nothing dropped, the same noise for trained and untrained; "
          "untrained = re-initialised from the configs):")
    print(f"{'stage':<11}{'t':>6}{'trained':>11}{'untrained':>11}{'ratio':>8}")
    for stage in STAGES:
        for row in record["loss"][stage]:
            t = row["t"] if isinstance(row["t"], str) else f"{row['t']:g}"
            print(f"{stage:<11}{t:>6}{row['trained']:>11.4f}{row['untrained']:>11.4f}{fmt(row['ratio']):>8}")
    pl = record["with_primary"]
    guidance = f"text guidance {pl['text_guidance']:g}" + (f", vocal guidance {pl['vocal_guidance']:g}" if pl["vocal"] else "")
    print(f"w/ PL: the secondary sampled over the true / a random primary ({pl['steps']} steps, {guidance}), "
          "scored against the codec's reconstruction of the true latents (mean ± std over items):")
    print(f"{'measure':<38}{'true primary':>18}{'random primary':>18}{'true − random':>18}{'n':>4}")
    names = {"mel_distance": "mel distance (lower is better)", "chroma_similarity": "chroma similarity (higher is better)"}
    for name in MEASURES:
        cells = [f"{fmt(pl[name][c]['mean'])} ± {fmt(pl[name][c]['std'])}" for c in CONDITIONS]
        difference = pl[name]["difference"]
        cells.append(f"{fmt(difference['mean'], sign=True)} ± {fmt(difference['std'])}")
        print(f"{names[name]:<38}{cells[0]:>18}{cells[1]:>18}{cells[2]:>18}{difference['n']:>4d}")


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark (see the module docstring); returns the record it prints."""
    args = parse_args(argv)
    check_args(args)

    from ..cli.common import library_progress
    from ..pipeline import DiscoDiffPipeline

    device = resolve_device(args.device)
    with library_progress(not args.quiet):
        pipeline = DiscoDiffPipeline.from_pretrained(args.model)
    multiple = check_fit(pipeline, args.data, args.frames)
    stats = use_latent_stats(pipeline, args.data)
    if pipeline.device != device:
        pipeline.to(device)
    batches = load_batches(args.data, args.limit, args.frames, multiple, args.seed)
    times = list(dict.fromkeys(args.times))
    measured = measure(pipeline, batches, times, args.steps, args.seed, args.loss, args.text_guidance,
                       args.vocal_guidance, progress=not args.quiet)
    record = {"settings": {"model": str(args.model), "data": str(args.data), "limit": args.limit,
                           "items": sum(len(batch["captions"]) for batch in batches), "frames": args.frames,
                           "seconds": args.frames / pipeline.codec.frame_rate, "length_multiple": multiple,
                           "times": times, "steps": args.steps, "seed": args.seed, "loss": args.loss,
                           "latent_stats": stats, "device": str(device)},
              **measured}
    if args.json:
        print(json.dumps(record, indent=1, allow_nan=False))
    else:
        print_report(record)
    return record


def cli(argv: list[str] | None = None) -> None:
    """``main`` with one-line errors (``error: …``, exit status 1)."""
    run_script(lambda: main(argv))


if __name__ == "__main__":
    cli(sys.argv[1:])
