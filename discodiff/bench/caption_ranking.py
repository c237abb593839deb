"""Does the likelihood filter rank planted out-of-distribution clips below real chorales? AUC of the caption ranking.

    python -m discodiff.bench.caption_ranking --data RENDERED_ROOT [--embedder crepe|codec|basic-pitch] [--limit 120]
        [--seconds 5] [--planted 10] [--seed 0] [--bootstrap 1000] [--csv ranking.csv] [--json out.json] [--quiet]

The DiscoDiff caption filter (:mod:`discodiff.captions.rank`) fits a Gaussian (mean, Ledoit–Wolf covariance) to the
audio embeddings of a reference collection and ranks candidate clips by their log-likelihood under it. This bench
checks that it ranks what does not belong at the bottom.

Reads the rendered track folders under ``--data`` at any depth and keeps the **train** split of the fixed Bach split
(a tree holding a held-out composer's track is refused whole; validation pieces are never used). The first
``--limit`` tracks by track id are shuffled with ``--seed`` and halved: the *reference* half is embedded and fitted;
the other half, the *held-aside chorales*, are candidates. Of each track the middle ``--seconds`` of the mixture
(vocals + accompaniment) is one clip, embedded as one window. The first ``--planted`` held-aside tracks each also give
one *planted* clip of every kind (:data:`PLANTED_KINDS`, :func:`planted_clip`), all as long as the chorale clips and,
but for ``noise-accompaniment``, scaled to that track's mixture RMS (so level alone does not give them away):

- ``noise`` — white Gaussian noise;
- ``sine`` — one sustained sine tone (a pitch drawn from C3–C5), held for the whole clip;
- ``organ`` — one sustained church-organ note (General MIDI program 19, a pitch drawn from C3–C5) rendered by the
  corpus synth (FluidSynth) with the soundfont of the chorales, held for the whole clip;
- ``drums`` — a drum-kit-only 4/4 groove synthesised with numpy (:func:`drum_pattern`: kick, snare, closed hi-hat);
- ``noise-accompaniment`` — the track's own vocal over white noise of its accompaniment's RMS.

Prints the AUC of "held-aside chorale above planted clip" (1: every planted clip ranks below every chorale) with a
stratified bootstrap interval, then per planted kind: its own AUC against the chorales, its percentiles in the
ranking (100 = best) and how many of it the paper's top-20% cut keeps. ``--csv`` writes the ranking table
(``id,log_likelihood,percentile``), ``--json`` the record.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path

import numpy as np

from ..cli.errors import run_script
from ..errors import ConfigError, DataError
from . import write_json_record

EMBEDDERS = ("crepe", "codec", "basic-pitch")
PLANTED_KINDS = ("noise", "sine", "organ", "drums", "noise-accompaniment")
PLANTED_PREFIX = "planted-"
ORGAN_PROGRAM = 19                 # General MIDI church organ
TONE_PITCHES = (48, 72)            # MIDI C3–C5, inclusive
DRUM_TEMPI = (80.0, 140.0)         # beats per minute
MAX_SECONDS = 60.0
CONFIDENCE = 0.95


# --- planted clips ----------------------------------------------------------------------------------------------


def scaled_to_rms(audio: np.ndarray, rms: float) -> np.ndarray:
    """``audio [T]`` scaled to root-mean-square ``rms`` (float32)."""
    current = float(np.sqrt(np.mean(np.square(audio, dtype=np.float64))))
    if current == 0:
        raise DataError("cannot scale a silent clip to a level; the planted clip came out silent")
    return (audio * (rms / current)).astype(np.float32)


def drum_pattern(num_samples: int, sample_rate: int, tempo_bpm: float, rng: np.random.Generator) -> np.ndarray:
    """A drum-kit-only clip ``[num_samples]`` (float32, peak 1) of a 4/4 groove at ``tempo_bpm``, synthesised here:
    kick on beats 1 and 3 (a sine sweeping 150 → 45 Hz, decaying in about 0.15 s), snare on 2 and 4 (white noise and a
    185 Hz sine, about 0.1 s), a closed hi-hat on every eighth note (white noise high-passed at 7 kHz, about 0.03 s);
    each hit's level varies by up to ±15 % (``rng``)."""
    from scipy.signal import butter, sosfilt

    def hit(seconds: float, decay: float) -> tuple[np.ndarray, np.ndarray]:
        t = np.arange(round(seconds * sample_rate)) / sample_rate
        return t, np.exp(-t / decay)

    t, envelope = hit(0.4, 0.05)
    kick = np.sin(2 * np.pi * (45 * t + (150 - 45) * 0.04 * (1 - np.exp(-t / 0.04)))) * envelope
    t, envelope = hit(0.3, 0.035)
    snare = (0.7 * rng.standard_normal(t.size) + 0.5 * np.sin(2 * np.pi * 185 * t)) * envelope
    t, envelope = hit(0.1, 0.01)
    high_pass = butter(4, 7000, "highpass", fs=sample_rate, output="sos")
    hat = 0.4 * sosfilt(high_pass, rng.standard_normal(t.size)) * envelope
    eighth = 30.0 / tempo_bpm
    audio = np.zeros(num_samples + round(0.4 * sample_rate))
    for index in range(math.ceil(num_samples / (eighth * sample_rate))):
        start = round(index * eighth * sample_rate)
        sounds = [hat] + ([kick if index % 4 == 0 else snare] if index % 2 == 0 else [])
        for sound in sounds:
            audio[start : start + sound.size] += rng.uniform(0.85, 1.15) * sound
    audio = audio[:num_samples]
    return (audio / np.abs(audio).max()).astype(np.float32)


def organ_tone(num_samples: int, sample_rate: int, pitch: int, renderer=None) -> np.ndarray:
    """One church-organ note of MIDI ``pitch`` held for all of ``num_samples`` (float32), by the corpus synth."""
    from ..corpus.synth import FluidSynthRenderer, InstrumentTrack, Note

    renderer = renderer or FluidSynthRenderer(sample_rate=sample_rate)
    seconds = num_samples / sample_rate + 1.0  # the note-off falls after the end: the note sounds to the last sample
    return renderer.render([InstrumentTrack(ORGAN_PROGRAM, [Note(0.0, seconds, int(pitch), 100)])], num_samples)


def planted_clip(kind: str, vocals: np.ndarray, accompaniment: np.ndarray, sample_rate: int,
                 rng: np.random.Generator, renderer=None) -> np.ndarray:
    """A planted clip ``[T]`` of ``kind`` (one of :data:`PLANTED_KINDS`, see the module docstring) as long as the
    chorale clip whose stems ``vocals``, ``accompaniment`` ``[T]`` are given, at its mixture's RMS
    (``noise-accompaniment``: its vocal plus noise of its accompaniment's RMS). ``renderer`` is a
    :class:`~discodiff.corpus.synth.FluidSynthRenderer` at ``sample_rate`` for ``organ`` (default: a new one)."""
    length = vocals.shape[0]
    mixture_rms = float(np.sqrt(np.mean(np.square(vocals + accompaniment, dtype=np.float64))))
    if kind == "noise":
        return scaled_to_rms(rng.standard_normal(length), mixture_rms)
    if kind == "sine":
        frequency = 440.0 * 2 ** ((int(rng.integers(TONE_PITCHES[0], TONE_PITCHES[1] + 1)) - 69) / 12)
        return scaled_to_rms(np.sin(2 * np.pi * frequency * np.arange(length) / sample_rate), mixture_rms)
    if kind == "organ":
        pitch = int(rng.integers(TONE_PITCHES[0], TONE_PITCHES[1] + 1))
        return scaled_to_rms(organ_tone(length, sample_rate, pitch, renderer), mixture_rms)
    if kind == "drums":
        return scaled_to_rms(drum_pattern(length, sample_rate, float(rng.uniform(*DRUM_TEMPI)), rng), mixture_rms)
    if kind == "noise-accompaniment":
        accompaniment_rms = float(np.sqrt(np.mean(np.square(accompaniment, dtype=np.float64))))
        return (vocals + scaled_to_rms(rng.standard_normal(length), accompaniment_rms)).astype(np.float32)
    raise ConfigError(f"unknown planted kind {kind!r}; choose one of {', '.join(PLANTED_KINDS)}")


def planted_id(kind: str, index: int) -> str:
    return f"{PLANTED_PREFIX}{kind}-{index:02d}"


# --- the measures -----------------------------------------------------------------------------------------------


def auc_with_interval(positive: np.ndarray, negative: np.ndarray, resamples: int, rng: np.random.Generator) -> dict:
    """AUC of ``positive`` scores above ``negative`` ones (sklearn's ``roc_auc_score``; ties count half) and the
    percentile interval of ``resamples`` stratified bootstrap draws (each class resampled on its own; ``None`` bounds
    for no resamples)."""
    from sklearn.metrics import roc_auc_score

    def auc(pos: np.ndarray, neg: np.ndarray) -> float:
        return float(roc_auc_score(np.r_[np.ones(pos.size), np.zeros(neg.size)], np.r_[pos, neg]))

    draws = [auc(rng.choice(positive, positive.size), rng.choice(negative, negative.size)) for _ in range(resamples)]
    tail = (1 - CONFIDENCE) / 2
    low, high = (float(bound) for bound in np.quantile(draws, [tail, 1 - tail])) if draws else (None, None)
    return {"auc": auc(positive, negative), "low": low, "high": high, "confidence": CONFIDENCE,
            "resamples": resamples, "positives": int(positive.size), "negatives": int(negative.size)}


def kind_of(clip_id: str) -> str:
    """``chorale`` for a held-aside track, else the planted kind in the id."""
    if not clip_id.startswith(PLANTED_PREFIX):
        return "chorale"
    return clip_id[len(PLANTED_PREFIX) :].rsplit("-", 1)[0]


def summarise(rows: list[dict], share: float, resamples: int, seed: int) -> dict:
    """AUC (chorales above all planted clips, and per kind) and where each kind ranks in ``rows``."""
    from ..captions.rank import keep_top

    kept = {row["id"] for row in keep_top(rows, share)}
    by_kind: dict[str, list[dict]] = {}
    for row in rows:
        by_kind.setdefault(kind_of(row["id"]), []).append(row)
    scores = {kind: np.array([row["log_likelihood"] for row in kind_rows]) for kind, kind_rows in by_kind.items()}
    planted = np.concatenate([scores[kind] for kind in PLANTED_KINDS if kind in scores])
    rng = np.random.default_rng(seed)
    kinds = {}
    for kind, kind_rows in by_kind.items():
        percentiles = [row["percentile"] for row in kind_rows]
        kinds[kind] = {"clips": len(kind_rows), "kept": sum(row["id"] in kept for row in kind_rows),
                       "percentile_min": min(percentiles), "percentile_median": float(np.median(percentiles)),
                       "percentile_max": max(percentiles),
                       "log_likelihood_median": float(np.median(scores[kind]))}
        if kind != "chorale":
            kinds[kind]["auc"] = auc_with_interval(scores["chorale"], scores[kind], resamples, rng)
    return {"auc": auc_with_interval(scores["chorale"], planted, resamples, rng), "share": share, "kept": len(kept),
            "kinds": kinds}


# --- the run ----------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m discodiff.bench.caption_ranking",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, help="a folder of rendered track folders (any depth)")
    parser.add_argument("--embedder", default="crepe", choices=EMBEDDERS, help="audio embedder (default crepe)")
    parser.add_argument("--crepe-model", default="tiny", choices=("tiny", "full"), help="CREPE capacity (default tiny)")
    parser.add_argument("--codec", default=None,
                        help="codec id or directory for --embedder codec (default: the shipped model's codec)")
    parser.add_argument("--limit", type=int, default=120,
                        help="use the first N train-split tracks by track id, half as reference (N >= 6; default 120)")
    parser.add_argument("--seconds", type=float, default=5.0,
                        help=f"clip length, the middle of each track, in (0, {MAX_SECONDS:g}] seconds (default 5)")
    parser.add_argument("--planted", type=int, default=10,
                        help="planted clips of each kind, at most the number of held-aside tracks (default 10)")
    parser.add_argument("--share", type=float, default=0.2,
                        help="the share the filter keeps, in (0, 1] (default 0.2, the paper's)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the halving, the planted clips and the bootstrap")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of the AUC (default 1000)")
    parser.add_argument("--csv", default=None, help="also write the ranking table to this .csv file")
    parser.add_argument("--json", default=None, help="also write the record to this .json file")
    parser.add_argument("--quiet", action="store_true", help="no progress bar")
    return parser.parse_args(argv)


def check_args(args: argparse.Namespace) -> None:
    """Numbers, the data folder and the output locations, before any work."""
    from ..captions.rank import keep_count
    from ..outputs import check_output_file

    if not (math.isfinite(args.seconds) and 0 < args.seconds <= MAX_SECONDS):
        raise ConfigError(f"--seconds {args.seconds:g}: must be in (0, {MAX_SECONDS:g}] seconds")
    if args.limit < 6:
        raise ConfigError(f"--limit {args.limit}: must be at least 6 (three reference and three held-aside tracks)")
    if not 1 <= args.planted <= args.limit - args.limit // 2:
        raise ConfigError(f"--planted {args.planted}: must be from 1 to the number of held-aside tracks "
                          f"({args.limit - args.limit // 2} of --limit {args.limit})")
    if args.bootstrap < 0:
        raise ConfigError(f"--bootstrap {args.bootstrap}: must be 0 (no interval) or more resamples")
    if args.seed < 0:
        raise ConfigError(f"--seed {args.seed}: must be a whole number >= 0")
    keep_count(1, args.share)
    if not Path(args.data).is_dir():
        raise DataError(f"--data {args.data}: no such folder; give a folder of rendered tracks "
                        "(`discodiff render-corpus`)")
    for option, suffix in (("csv", ".csv"), ("json", ".json")):
        if getattr(args, option):
            check_output_file(getattr(args, option), (suffix,), what=f"--{option}")


def build_embedder(args: argparse.Namespace):
    """The ``--embedder``, one window per clip."""
    from ..evaluation.embedders import make_embedder

    if args.embedder == "crepe":
        return make_embedder("crepe", model=args.crepe_model, window_seconds=args.seconds)
    if args.embedder == "basic-pitch":  # its fixed 1.99 s windows, mean-pooled over the clip
        return make_embedder("basic-pitch")
    from ..codec.resolve import load_codec
    from ..pretrained import shipped_model_dir

    codec = load_codec(args.codec or shipped_model_dir() / "codec")
    return make_embedder("codec", codec=codec, window_seconds=args.seconds)


def halves(pairs, seed: int) -> tuple[list, list]:
    """``(reference, held-aside)``: the tracks shuffled with ``seed``, the first half and the rest."""
    order = np.random.default_rng(seed).permutation(len(pairs))
    middle = len(pairs) // 2
    return [pairs[i] for i in sorted(order[:middle])], [pairs[i] for i in sorted(order[middle:])]


def read_stems(plan) -> tuple[np.ndarray, np.ndarray]:
    """``(vocals, accompaniment)`` ``[T]`` float32 of one excerpt plan."""
    from ..training.codec_data import read_crop

    vocals, accompaniment, _, start, length = plan
    return read_crop(vocals, start, length), read_crop(accompaniment, start, length)


def reference_clips(pairs, plans):
    """``(track id, mixture)`` of each reference track."""
    for pair, plan in zip(pairs, plans):
        vocals, accompaniment = read_stems(plan)
        yield pair.track_id, vocals + accompaniment


def candidate_clips(pairs, plans, planted: int, seed: int):
    """``(id, clip)`` of each held-aside track, and after each of the first ``planted`` one planted clip per kind."""
    from ..corpus.synth import FluidSynthRenderer

    renderer = None
    for index, (pair, plan) in enumerate(zip(pairs, plans)):
        vocals, accompaniment = read_stems(plan)
        yield pair.track_id, vocals + accompaniment
        if index < planted:
            renderer = renderer or FluidSynthRenderer(sample_rate=plan[2])
            for kind_index, kind in enumerate(PLANTED_KINDS):
                rng = np.random.default_rng([seed, index, kind_index])
                yield planted_id(kind, index), planted_clip(kind, vocals, accompaniment, plan[2], rng, renderer)


def embed_clips(embedder, clips, sample_rate: int, total: int, what: str, progress: bool):
    """``(ids, embeddings [N, D])`` of ``(id, clip)`` pairs, one at a time."""
    from tqdm.auto import tqdm

    ids, vectors = [], []
    for clip_id, audio in tqdm(clips, total=total, desc=f"{embedder.name} {what}", unit="clip", disable=not progress):
        ids.append(clip_id)
        vectors.append(embedder(audio, sample_rate))
    return ids, np.stack(vectors)


def fmt_auc(auc: dict) -> str:
    interval = f"[{auc['low']:.3f}, {auc['high']:.3f}]" if auc["resamples"] else "(no interval)"
    return f"{auc['auc']:.3f} {interval}"


def print_report(record: dict) -> None:
    settings, summary = record["settings"], record["summary"]
    print(f"caption ranking: data={settings['data']} (train split), embedder={settings['embedder']} "
          f"(D={record['dim']}), reference={record['reference_clips']} chorales, "
          f"candidates={record['candidate_clips']} "
          f"({summary['kinds']['chorale']['clips']} held-aside chorales + planted), {settings['seconds']:g} s clips; "
          f"Ledoit-Wolf shrinkage {record['shrinkage']:.3f}")
    auc = summary["auc"]
    print(f"AUC held-aside chorale above planted clip: {fmt_auc(auc)} ({auc['confidence']:.0%} bootstrap, "
          f"{auc['resamples']} resamples; {auc['positives']} chorales vs {auc['negatives']} planted)")
    print(f"{'kind':<21}{'clips':>6}{'AUC vs chorales':>24}{'percentile min/median/max':>28}"
          f"{'median log-lik.':>17}{'kept top ' + format(summary['share'], '.0%'):>13}")
    for kind in ("chorale", *PLANTED_KINDS):
        row = summary["kinds"].get(kind)
        if row is None:
            continue
        kind_auc = fmt_auc(row["auc"]) if "auc" in row else ""
        spread = f"{row['percentile_min']:.1f} / {row['percentile_median']:.1f} / {row['percentile_max']:.1f}"
        print(f"{kind:<21}{row['clips']:>6}{kind_auc:>24}{spread:>28}{row['log_likelihood_median']:>17.1f}"
              f"{row['kept']:>7d} of {row['clips']:<3d}")


def main(argv: list[str] | None = None) -> dict:
    """Run the benchmark (see the module docstring); returns the JSON record."""
    args = parse_args(argv)
    check_args(args)
    from ..captions.rank import GaussianReference, rank_table, write_ranking_csv
    from ..cli.common import library_progress
    from ..evaluation.tracks import excerpt_plans, select_tracks

    pairs = select_tracks(args.data, "train", args.limit)
    if len(pairs) < 6 or args.planted > len(pairs) - len(pairs) // 2:
        raise DataError(f"{args.data} holds {len(pairs)} train-split tracks: too few for --limit {args.limit} and "
                        f"--planted {args.planted}; lower them or render more tracks")
    reference_pairs, held_pairs = halves(pairs, args.seed)
    reference_plans = excerpt_plans(reference_pairs, args.seconds, "middle")
    held_plans = excerpt_plans(held_pairs, args.seconds, "middle")
    with library_progress(not args.quiet):
        embedder = build_embedder(args)
    rate = reference_plans[0][2]
    progress = not args.quiet
    _, reference = embed_clips(embedder, reference_clips(reference_pairs, reference_plans), rate,
                               len(reference_pairs), "reference", progress)
    ids, candidates = embed_clips(embedder, candidate_clips(held_pairs, held_plans, args.planted, args.seed), rate,
                                  len(held_pairs) + args.planted * len(PLANTED_KINDS), "candidates", progress)
    gaussian = GaussianReference(embedder.settings()).fit(reference)
    rows = rank_table(ids, gaussian.log_likelihood(candidates))
    record = {"settings": {"data": str(args.data), "embedder": args.embedder, "crepe_model": args.crepe_model,
                           "codec": args.codec, "limit": args.limit, "seconds": args.seconds, "planted": args.planted,
                           "share": args.share, "seed": args.seed, "bootstrap": args.bootstrap},
              "embedder_settings": embedder.settings(), "dim": gaussian.dim, "shrinkage": gaussian.shrinkage,
              "reference_clips": gaussian.count, "candidate_clips": len(rows),
              "summary": summarise(rows, args.share, args.bootstrap, args.seed), "ranking": rows}
    print_report(record)
    if args.csv:
        write_ranking_csv(args.csv, rows)
        print(f"wrote {args.csv}")
    if args.json:
        write_json_record(args.json, record)
    return record


def cli(argv: list[str] | None = None) -> None:
    """``main`` with one-line errors (``error: …``, exit status 1)."""
    run_script(lambda: main(argv))


if __name__ == "__main__":
    cli(sys.argv[1:])
