"""Does an accompaniment fit its own vocal better than another's? Paired vocal-fit scores on one Bach split.

    python -m discodiff.bench.vocal_fit --data RENDERED_ROOT --split validation [--limit N] [--seconds 10]
        [--excerpt middle] [--generated DIR] [--json out.json] [--quiet]

Reads the rendered track folders under ``--data`` at any depth (``vocals.wav``, ``accompaniment.wav``,
``metadata.json``; the selection of :mod:`discodiff.evaluation.tracks`, shared with ``discodiff eval``), keeps the
tracks whose ``metadata.json`` piece is in ``--split`` of the fixed Bach split and refuses the whole tree, naming
them, when any track is of a held-out composer (or is not a finished render): data discipline. The first
``--limit`` tracks by track id are used (at least 2). Of each, ``--seconds`` of the vocal and of the accompaniment
are cut at the same place (the middle of the shorter stem, or its start with ``--excerpt start``; the whole stem
when shorter).

Each accompaniment is scored (:mod:`discodiff.evaluation.vocal_fit`) with its own vocal (*matched*) and with the
vocal of the next track in id order (*mismatched*, :func:`~discodiff.evaluation.vocal_fit.mismatched_pairs`):
harmonic agreement (the share of the accompaniment's chroma in the vocal's pitch class on voiced frames; chance
about 1/12), harmonic consonance (the share in pitch classes consonant with the vocal's; chance about 7/12) and
rhythmic agreement (correlation of onset envelopes; about 0 for unrelated rhythms). The real
accompaniments give the *reference* row. ``--generated DIR`` adds the *generated* row: ``DIR/<track id>.wav`` is
an accompaniment generated for that track's vocal, aligned with the vocal from its first sample (generated for the
whole vocal, or for its first seconds with ``--excerpt start``), at any sample rate; the same excerpt is cut from
it and scored the same way, against the same vocals.

Prints, per row and measure: the matched and mismatched means, the mean ± standard deviation of the paired
differences (matched − mismatched), the share of tracks whose matched score is higher, and n. ``--json`` writes
the record (the settings, both rows, and every track's scores) as well.
"""

from __future__ import annotations

import argparse
import math
import sys
import warnings
from pathlib import Path

from ..cli.errors import run_script
from . import write_json_record
from ..errors import ConfigError, DataError
from ..evaluation.tracks import EXCERPTS, audio_info, excerpt_plans, select_tracks

MAX_SECONDS = 600.0
MEASURES = ("harmonic", "consonance", "rhythmic")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    from ..evaluation.vocal_fit import MIN_SECONDS

    parser = argparse.ArgumentParser(prog="python -m discodiff.bench.vocal_fit", description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a folder of rendered track folders (any depth)")
    parser.add_argument("--split", default="validation", choices=("train", "validation"),
                        help="Bach split to measure on (default validation)")
    parser.add_argument("--limit", type=int, default=None, help="use the first N tracks by track id (N >= 2; default all)")
    parser.add_argument("--seconds", type=float, default=10.0,
                        help=f"excerpt per stem in [{MIN_SECONDS:g}, {MAX_SECONDS:g}] seconds (default 10)")
    parser.add_argument("--excerpt", default="middle", choices=EXCERPTS,
                        help="where the excerpt is cut: the middle of the track (default) or its start")
    parser.add_argument("--generated", default=None,
                        help="a folder of generated accompaniments, <track id>.wav each, aligned with the track's vocal")
    parser.add_argument("--json", default=None, help="also write the record to this .json file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Numbers, folders and the output location, before any work."""
    from ..evaluation.vocal_fit import MIN_SECONDS
    from ..outputs import check_output_file

    if not (math.isfinite(args.seconds) and MIN_SECONDS <= args.seconds <= MAX_SECONDS):
        raise ConfigError(f"--seconds {args.seconds:g}: must be in [{MIN_SECONDS:g}, {MAX_SECONDS:g}] seconds")
    if args.limit is not None and args.limit < 2:
        raise ConfigError(f"--limit {args.limit}: must be at least 2 (a mismatched vocal is another track's), or left "
                          "out for every track")
    if not Path(args.data).is_dir():
        raise DataError(f"--data {args.data}: no such folder; give a folder of rendered tracks (`discodiff render-corpus`)")
    if args.generated is not None and not Path(args.generated).is_dir():
        raise DataError(f"--generated {args.generated}: no such folder; give the folder of <track id>.wav accompaniments")
    if args.json:
        check_output_file(args.json, (".json",), what="--json")


def generated_plans(folder: str | Path, pairs, plans):
    """Per track ``(path, sample rate, start, length)`` of its generated accompaniment: the track's excerpt, in the
    file's own samples. Reads only headers; refuses missing files and files that end before the excerpt does."""
    folder = Path(folder)
    paths = [folder / f"{pair.track_id}.wav" for pair in pairs]
    missing = [str(path) for path in paths if not path.is_file()]
    if missing:
        more = f" (and {len(missing) - 3} more)" if len(missing) > 3 else ""
        raise DataError(f"--generated {folder}: {len(missing)} of {len(paths)} tracks have no generated accompaniment: "
                        f"{', '.join(missing[:3])}{more}; generate them, or lower --limit")
    result = []
    for path, (_, _, rate, start, length) in zip(paths, plans):
        file_rate, frames = audio_info(path)
        file_start, file_length = round(start * file_rate / rate), round(length * file_rate / rate)
        if frames < file_start + file_length:
            raise DataError(f"{path}: {frames / file_rate:.2f} s long, but the excerpt of its vocal ends at "
                            f"{(start + length) / rate:.2f} s; generate it for the whole vocal, or pass --excerpt start "
                            "(and a --seconds it covers)")
        result.append((path, file_rate, file_start, file_length))
    return result


def read_generated(path: Path, start: int, length: int):
    """The mono excerpt ``[T]`` of a generated accompaniment (the whole file decoded and checked by ``read_audio``)."""
    from ..audio import read_audio

    audio, _ = read_audio(path)
    return audio[0, start:start + length].numpy()


def analyse(pairs, plans, generated, progress: bool):
    """The vocal, accompaniment and (when ``generated``) generated-accompaniment features of every track."""
    from tqdm.auto import tqdm

    from ..evaluation.vocal_fit import accompaniment_features, vocal_features
    from ..training.codec_data import read_crop

    vocals, accompaniments, generations = [], [], []
    for index in tqdm(range(len(pairs)), desc="vocal fit", unit="track", disable=not progress):
        track_id = pairs[index].track_id
        vocal_source, accompaniment_source, rate, start, length = plans[index]
        vocals.append(vocal_features(read_crop(vocal_source, start, length), rate, f"{track_id} vocals"))
        accompaniments.append(accompaniment_features(read_crop(accompaniment_source, start, length), rate,
                                                     f"{track_id} accompaniment"))
        if generated:
            path, file_rate, file_start, file_length = generated[index]
            generations.append(accompaniment_features(read_generated(path, file_start, file_length), file_rate,
                                                      f"{path} (generated)"))
    return vocals, accompaniments, generations


def score(vocals, accompaniments, pairing) -> tuple[dict, list[dict]]:
    """Every measure of each accompaniment with its own vocal and with ``vocals[pairing[i]]``: ``({measure:
    PairedComparison record}, per-track scores)``."""
    from ..evaluation.vocal_fit import fit_from_features, paired_comparison

    per_track = []
    for index, accompaniment in enumerate(accompaniments):
        matched = fit_from_features(vocals[index], accompaniment)
        mismatched = fit_from_features(vocals[pairing[index]], accompaniment)
        per_track.append({f"{measure}_{condition}": getattr(fit, measure) for measure in MEASURES
                          for condition, fit in (("matched", matched), ("mismatched", mismatched))})
    summary = {measure: paired_comparison([row[f"{measure}_matched"] for row in per_track],
                                          [row[f"{measure}_mismatched"] for row in per_track]).to_dict()
               for measure in MEASURES}
    return summary, per_track


def same_piece_pairs(pairs, pairing) -> list[str]:
    """Track ids whose mismatched vocal is of the same piece (another render of it): not a real mismatch."""
    from ..training.codec_data import track_piece

    pieces = [track_piece(pair)[0] for pair in pairs]
    return [pairs[i].track_id for i, j in enumerate(pairing) if pieces[i] == pieces[j]]


def print_report(record: dict) -> None:
    settings = record["settings"]
    print(f"vocal fit: data={settings['data']}, split={settings['split']}, tracks={record['tracks']}, "
          f"excerpt={settings['seconds']:g} s ({settings['excerpt']}), mismatched vocal = the next track's")
    print(f"harmonic: chroma share in the vocal's pitch class (chance ~{record['chance_harmonic']:.3f}); consonance: "
          f"in pitch classes consonant with it (chance ~{record['chance_consonance']:.3f}); rhythmic: onset-envelope "
          "correlation (~0 unrelated)")
    print(f"{'row':<11}{'measure':<12}{'matched':>9}{'mismatched':>12}{'difference (mean ± std)':>26}"
          f"{'matched>mism.':>15}{'n':>5}")
    for row in ("reference", "generated"):
        if row not in record:
            continue
        for measure in MEASURES:
            c = record[row][measure]
            difference = f"{c['difference_mean']:+.3f} ± {c['difference_std']:.3f}"
            print(f"{row:<11}{measure:<12}{c['matched_mean']:>9.3f}{c['mismatched_mean']:>12.3f}{difference:>26}"
                  f"{c['share_matched_higher']:>15.1%}{c['n']:>5d}")


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark (see the module docstring); returns the JSON record."""
    args = parse_args(argv)
    check_args(args)
    from ..evaluation.vocal_fit import CHANCE_CONSONANCE, CHANCE_HARMONIC, mismatched_pairs

    pairs = select_tracks(args.data, args.split, args.limit)
    plans = excerpt_plans(pairs, args.seconds, args.excerpt)
    generated = generated_plans(args.generated, pairs, plans) if args.generated is not None else None
    pairing = mismatched_pairs(len(pairs))
    same = same_piece_pairs(pairs, pairing)
    if same:
        warnings.warn(f"{len(same)} track(s) are paired with a vocal of the same piece in the mismatched condition "
                      f"(e.g. {same[0]}); their mismatched scores are not a real mismatch", stacklevel=2)
    vocals, accompaniments, generations = analyse(pairs, plans, generated, progress=not args.quiet)
    track_ids = [pair.track_id for pair in pairs]
    record: dict = {"settings": {"data": str(args.data), "split": args.split, "limit": args.limit,
                                 "seconds": args.seconds, "excerpt": args.excerpt, "generated": args.generated},
                    "tracks": len(pairs), "chance_harmonic": CHANCE_HARMONIC, "chance_consonance": CHANCE_CONSONANCE,
                    "same_piece_pairs": len(same)}
    rows = {"reference": score(vocals, accompaniments, pairing)}
    if generated is not None:
        rows["generated"] = score(vocals, generations, pairing)
    per_track = [{"track": track_id, "mismatched_vocal": track_ids[pairing[i]],
                  "seconds": plans[i][4] / plans[i][2]} for i, track_id in enumerate(track_ids)]
    for row, (summary, scores) in rows.items():
        record[row] = summary
        for entry, values in zip(per_track, scores):
            entry.update({f"{row}_{key}": value for key, value in values.items()})
    record["per_track"] = per_track
    print_report(record)
    if args.json:
        write_json_record(args.json, record)
    return record


def cli(argv: list[str] | None = None) -> None:
    """``main`` with one-line errors (``error: …``, exit status 1)."""
    run_script(lambda: main(argv))


if __name__ == "__main__":
    cli(sys.argv[1:])
