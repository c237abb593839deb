"""Reconstruction quality of a codec on rendered tracks of one Bach split: the measures a trained codec must pass.

    python -m discodiff.bench.codec_quality --codec DIR_OR_tiny --data RENDERED_ROOT --split validation
        [--seconds 10] [--limit N] [--json out.json] [--backend transformers] [--quiet]

Reads the rendered track folders under ``--data`` at any depth (``vocals.wav``, ``accompaniment.wav``,
``metadata.json``; :func:`discodiff.training.codec_data.scan_tracks`), keeps the tracks whose ``metadata.json``
piece is in ``--split`` of the fixed Bach split and refuses the whole tree, naming them, when any track is of a
held-out composer (or is not a finished render): data discipline. The first ``--limit`` tracks by track id are used.
Of each, the middle ``--seconds`` of the vocal and of the accompaniment (the whole stem when shorter; both stems cut
at the same place) are encoded and decoded by the codec on one CPU thread, and
:func:`discodiff.evaluation.reconstruction.evaluate_codec` measures: multi-scale mel distance (DAC's, the codec
task's settings) and SI-SDR of both stems, pYIN pitch agreement of the vocal, chroma similarity of the
accompaniment, codebook usage over every frame, and the encode / decode real-time factors of this run.

Prints a table; ``--json`` writes the report (:meth:`CodecReport.to_dict`, with the settings) as well. ``--codec tiny``
is the random seed-0 tiny codec: its numbers are a floor, not a target.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

from ..cli.errors import run_script
from . import write_json_record
from ..codec import BACKENDS
from ..errors import ConfigError, DataError

MAX_SECONDS = 600.0


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m discodiff.bench.codec_quality", description=__doc__.splitlines()[0])
    parser.add_argument("--codec", required=True, help="codec id or directory ('tiny': the random seed-0 tiny codec)")
    parser.add_argument("--backend", default="transformers", choices=BACKENDS, help="codec backend (default transformers)")
    parser.add_argument("--data", required=True, help="a folder of rendered track folders (any depth)")
    parser.add_argument("--split", default="validation", choices=("train", "validation"),
                        help="Bach split to measure on (default validation)")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help=f"excerpt per stem, the middle of the track, in (0, {MAX_SECONDS:g}] (default 10)")
    parser.add_argument("--limit", type=int, default=None, help="use the first N tracks by track id (N >= 1; default all)")
    parser.add_argument("--json", default=None, help="also write the report to this .json file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Numbers and the output location, before any work."""
    from ..outputs import check_output_file

    if not (math.isfinite(args.seconds) and 0 < args.seconds <= MAX_SECONDS):
        raise ConfigError(f"--seconds {args.seconds:g}: must be in (0, {MAX_SECONDS:g}] seconds")
    if args.limit is not None and args.limit < 1:
        raise ConfigError(f"--limit {args.limit}: must be at least 1 (or left out for every track)")
    if not Path(args.data).is_dir():
        raise DataError(f"--data {args.data}: no such folder; give a folder of rendered tracks (`discodiff render-corpus`)")
    if args.json:
        check_output_file(args.json, (".json",), what="--json")


def select_tracks(root: str | Path, split: str, limit: int | None):
    """The rendered tracks of ``split`` under ``root`` (sorted by track id, the first ``limit``); refuses a tree holding
    a held-out composer's track or an unfinished render (:func:`~discodiff.training.codec_data.scan_tracks`)."""
    from ..training.codec_data import scan_tracks

    tracks = scan_tracks(root)[split]
    if not tracks:
        raise DataError(f"{root} holds no rendered tracks of the Bach {split} split; render them with "
                        f"`discodiff render-corpus --split {split}` or give another --data / --split")
    return tracks[:limit] if limit else tracks


def excerpt_sources(pairs, sample_rate: int, seconds: float):
    """Per track ``(vocals source, accompaniment source, start, length)``: the middle ``seconds`` of the shorter stem.
    Reads only the files' headers; a stem at another rate than the codec's is refused."""
    from ..training.codec_data import stem_source

    plans = []
    for pair in pairs:
        sources = []
        for stem, paths in (("vocals", (pair.vocals,)), ("accompaniment", pair.accompaniment)):
            sources.append(stem_source(pair.track_id, stem, paths, sample_rate))
        total = min(source.frames for source in sources)
        if total == 0:
            raise DataError(f"{Path(pair.vocals).parent}: a stem has no samples; render the track again or remove it")
        length = min(total, max(1, round(seconds * sample_rate)))
        plans.append((sources[0], sources[1], (total - length) // 2, length))
    return plans


def read_excerpts(plans):
    """``(vocals, accompaniment)`` float32 ``[T]`` per track, read lazily (only the excerpt's frames)."""
    from ..training.codec_data import read_crop

    for vocals, accompaniment, start, length in plans:
        yield read_crop(vocals, start, length), read_crop(accompaniment, start, length)


def fmt(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def print_report(record: dict, args: argparse.Namespace) -> None:
    print(f"codec quality: codec={args.codec}, data={args.data}, split={args.split}, tracks={record['tracks']}, "
          f"excerpt={args.seconds:g} s per stem ({record['audio_seconds']:.1f} s of audio)")
    rows = [
        ("mel distance (DAC multi-scale, lower is better)", record["mel_distance"], record["mel_distance_vocals"],
         record["mel_distance_accompaniment"], 3),
        ("SI-SDR dB (higher is better)", record["si_sdr_db"], record["si_sdr_db_vocals"], record["si_sdr_db_accompaniment"], 2),
    ]
    print(f"{'measure':<50}{'all':>10}{'vocals':>10}{'accomp.':>10}")
    for name, every, vocals, accompaniment, digits in rows:
        print(f"{name:<50}{fmt(every, digits):>10}{fmt(vocals, digits):>10}{fmt(accompaniment, digits):>10}")
    print(f"{'pitch within 50 cents (of original-voiced frames)':<50}{'':>10}{fmt(record['pitch_within_half_semitone']):>10}")
    print(f"{'pitch voicing missed (of original-voiced frames)':<50}{'':>10}{fmt(record['pitch_voicing_missed']):>10}")
    print(f"{'voiced frames (pYIN, 11.6 ms)':<50}{'':>10}{record['pitch_voiced_frames']:>10d}")
    print(f"{'pitch grid distance (0.25 free, 0 locked to hop/2)':<50}{'':>10}{fmt(record['pitch_grid_distance']):>10}")
    print(f"{'  the originals (reference)':<50}{'':>10}{fmt(record['pitch_grid_distance_original']):>10}")
    print(f"{'chroma cosine similarity':<50}{'':>10}{'':>10}{fmt(record['chroma_similarity']):>10}")
    print(f"{'encode real-time factor (CPU, {} thread)'.format(record['threads']):<50}{record['encode_rtf']:>10.1f}")
    print(f"{'decode real-time factor (CPU, {} thread)'.format(record['threads']):<50}{record['decode_rtf']:>10.1f}")
    print(f"codebook usage over all frames ({record['codebook_size']} entries each):")
    print(f"{'codebook':<10}{'perplexity':>12}{'used':>8}")
    for k, (perplexity, used) in enumerate(zip(record["codebook_perplexity"], record["codebook_used"])):
        print(f"{k:<10}{perplexity:>12.1f}{used:>8.1%}")
    print(f"{'min':<10}{record['codebook_perplexity_min']:>12.1f}{record['codebook_used_min']:>8.1%}")


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark (see the module docstring); returns the JSON record."""
    args = parse_args(argv)
    check_args(args)
    pairs = select_tracks(args.data, args.split, args.limit)

    from ..cli.common import library_progress
    from ..codec.resolve import load_codec
    from ..evaluation.reconstruction import evaluate_codec

    with library_progress(not args.quiet):
        codec = load_codec(args.codec, args.backend)
    plans = excerpt_sources(pairs, codec.sample_rate, args.seconds)
    report = evaluate_codec(codec, read_excerpts(plans), names=[pair.track_id for pair in pairs], progress=not args.quiet)
    record = {"settings": {"codec": args.codec, "backend": args.backend, "data": str(args.data), "split": args.split,
                           "seconds": args.seconds, "limit": args.limit}, **report.to_dict()}
    print_report(record, args)
    if args.json:
        write_json_record(args.json, record)
    return record


def cli(argv: list[str] | None = None) -> None:
    """``main`` with one-line errors (``error: …``, exit status 1)."""
    run_script(lambda: main(argv))


if __name__ == "__main__":
    cli(sys.argv[1:])
