"""Accompany the vocals of one Bach split with a model, for the vocal-fit bench.

    python sample/accompany.py --model DIR --data RENDERED_ROOT --out DIR [--split validation] [--limit N]
        [--seconds 10] [--vocal-guidance G] [--text-guidance G] [--steps N] [--seed 0] [--overwrite]

Selects the tracks exactly as `python -m discodiff.bench.vocal_fit` does (same --data, --split, --limit), takes
the first --seconds of each track's vocal and its first caption (the captions.jsonl next to the track folder) and
writes OUT/<track id>.wav, the accompaniment generated for it (track i sampled with seed + i). Score them with

    python -m discodiff.bench.vocal_fit --data RENDERED_ROOT --limit N --seconds S --excerpt start --generated OUT
"""

import argparse
from pathlib import Path

from discodiff.cli.errors import run_script


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=None, help="Model directory [default: the shipped model].")
    parser.add_argument("--data", required=True, help="A folder of rendered track folders (any depth).")
    parser.add_argument("--out", required=True, help="Folder for <track id>.wav (new, or one this script wrote).")
    parser.add_argument("--split", default="validation", choices=("train", "validation"))
    parser.add_argument("--limit", type=int, default=None, help="The first N tracks by track id (N >= 2).")
    parser.add_argument("--seconds", type=float, default=10.0, help="Seconds of each vocal to accompany.")
    parser.add_argument("--vocal-guidance", type=float, default=None, help="[default: the model's]")
    parser.add_argument("--text-guidance", type=float, default=None, help="[default: the model's]")
    parser.add_argument("--steps", type=int, default=None, help="Inference steps [default: the model's].")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--overwrite", action="store_true", help="Replace accompaniments already in --out.")
    parser.add_argument("--quiet", action="store_true")
    args = parser.parse_args()

    import torch
    from tqdm.auto import tqdm

    from discodiff import load_pipeline
    from discodiff.audio import resample, save_audio
    from discodiff.errors import ConfigError, ExistingWorkError
    from discodiff.evaluation.tracks import excerpt_plans, select_tracks, track_captions
    from discodiff.pretrained import shipped_model_dir, verify_checksums
    from discodiff.training.codec_data import read_crop

    if not 0.5 <= args.seconds <= 600:
        raise ConfigError(f"--seconds {args.seconds:g}: must be in [0.5, 600]")
    tracks = select_tracks(args.data, args.split, args.limit)
    out = Path(args.out)
    existing = [out / f"{pair.track_id}.wav" for pair in tracks if (out / f"{pair.track_id}.wav").exists()]
    if existing and not args.overwrite:
        raise ExistingWorkError(f"--out {out} already holds {existing[0].name} (and {len(existing) - 1} more of these "
                                "tracks); pass --overwrite to replace them, or choose another folder")
    captions = track_captions(tracks)
    model = args.model
    if model is None:
        model = shipped_model_dir()
        verify_checksums(model)
    pipeline = load_pipeline(model)
    options = {name: value for name, value in (("vocal_guidance", args.vocal_guidance),
                                                ("text_guidance", args.text_guidance),
                                                ("num_inference_steps", args.steps)) if value is not None}
    plans = excerpt_plans(tracks, args.seconds, "start")
    for index in tqdm(range(len(tracks)), desc="accompany", unit="track", disable=args.quiet):
        pair, (vocal_source, _, rate, start, length) = tracks[index], plans[index]
        prompt = captions[index][0]
        vocal = resample(torch.from_numpy(read_crop(vocal_source, start, length))[None], rate, pipeline.sample_rate)
        generated = pipeline(prompt, vocal=vocal, generator=torch.Generator().manual_seed(args.seed + index),
                             progress=False, **options)
        save_audio(out / f"{pair.track_id}.wav", torch.as_tensor(generated.audios[0]), pipeline.sample_rate)
    print(f"wrote {len(tracks)} accompaniments to {out}")


if __name__ == "__main__":
    run_script(main)
