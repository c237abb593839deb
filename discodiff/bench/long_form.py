"""Long takes and candidates with the shipped model: seams between windows, memory against length, ranking gain.

    python -m discodiff.bench.long_form seams   --data RENDERED_ROOT [--limit 6] [--seconds 60] [--model DIR]
    python -m discodiff.bench.long_form memory  [--durations 60 240] [--steps 2] [--model DIR]
    python -m discodiff.bench.long_form ranking --data RENDERED_ROOT [--limit 10] [--candidates 4] [--seconds 10]

Every run uses validation-split tracks of the rendered Bach corpus (:func:`~discodiff.evaluation.tracks.select_tracks`,
which refuses a tree holding a held-out composer's track), their vocals from the first sample, and the model's
defaults unless ``--steps`` is given; ``--json`` writes the record.

- **seams**: each vocal's first ``--seconds`` (tracks shorter than that are skipped) is accompanied twice with the
  same seed, *windowed* (each window inpaints its overlap, the default) and *naive* (``overlap=0``: independent
  windows, concatenated). At every join (the first frame a window adds) and at every frame inside the windows (more
  than :data:`INSIDE_MARGIN` s from any join) it measures the accompaniment's *frame flux* (``librosa`` onset
  strength: positive log-mel flux from one 23 ms frame to the next; the largest within ±:data:`JOIN_FRAMES` frames)
  and its *spectral change* (the mean absolute difference of the mean log-mel spectra of the :data:`SEGMENT_FRAMES`
  frames before and after the point: the spectral flux between half-second segments, which shows a window that does
  not continue the one before even where the decoder smooths the cut itself); and the vocal fit score
  (:func:`~discodiff.evaluation.candidates.fit_score`) of :data:`FIT_SECONDS` s excerpts centred on the joins and on
  the middles of the windows. A seam shows as ratios (joins / inside) above 1 and a lower fit at the joins.
- **memory**: one fresh subprocess per duration generates that many seconds for a synthetic vocal and reports the
  peak resident memory the call added, and its *working* memory: that peak minus the output (audio and latents),
  which alone must grow with the length.
- **ranking**: ``--candidates`` accompaniments per vocal (its first ``--seconds``) in one batch. In-sample, the
  top-ranked candidate against a random one (a seeded pick, paired per track): the gain ranking buys, ≥ 0 by
  construction. Held out, the part that is not by construction: candidates ranked by the fit of the first half of
  the excerpt, scored on the second half.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import torch

from . import write_json_record
from ..cli.errors import run_script
from ..errors import ConfigError

JOIN_FRAMES = 2         # the frame flux of a point: its largest within ±2 frames (±46 ms of 23.2 ms frames)
SEGMENT_FRAMES = 22     # the spectral change of a point: between the 0.5 s before it and the 0.5 s after it
INSIDE_MARGIN = 1.0     # seconds from any join for a frame to count as inside a window
FIT_SECONDS = 2.0       # the vocal-fit excerpts around joins and window middles


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m discodiff.bench.long_form", description=__doc__.splitlines()[0])
    parser.add_argument("what", choices=("seams", "memory", "ranking"))
    parser.add_argument("--data", help="a folder of rendered track folders (seams, ranking)")
    parser.add_argument("--model", default=None, help="model directory [default: the shipped model]")
    parser.add_argument("--limit", type=int, default=None, help="validation tracks to use (default 6 seams, 10 ranking)")
    parser.add_argument("--seconds", type=float, default=None, help="seconds of each vocal (default 60 seams, 10 ranking)")
    parser.add_argument("--candidates", type=int, default=4, help="candidates per vocal (ranking)")
    parser.add_argument("--overlap", type=float, default=None,
                        help="seconds of overlap of the windowed method (seams) [default: the pipeline's]")
    parser.add_argument("--methods", nargs="+", choices=("windowed", "naive"), default=["windowed", "naive"],
                        help="which methods the seams run measures")
    parser.add_argument("--durations", type=float, nargs="+", default=[60.0, 240.0], help="seconds (memory)")
    parser.add_argument("--steps", type=int, default=None, help="inference steps [default: the model's]")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", default=None, help="also write the record to this .json file")
    parser.add_argument("--quiet", action="store_true", help="no progress bars")
    parser.add_argument("--worker", type=float, default=None, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.what != "memory" and not args.data:
        raise ConfigError(f"{args.what} needs --data, a folder of rendered tracks (`discodiff render-corpus`)")
    if args.json:
        from ..outputs import check_output_file

        check_output_file(args.json, (".json",), what="--json")
    return args


def load_model(directory: str | None):
    from ..pipeline_utils import load_pipeline
    from ..pretrained import shipped_model_dir

    pipeline = load_pipeline(directory or shipped_model_dir())
    return pipeline


def options(args) -> dict:
    return {} if args.steps is None else {"num_inference_steps": args.steps}


def vocals(args, seconds: float, limit: int) -> list[tuple[str, torch.Tensor]]:
    """``(track id, vocal [1, T] at 44.1 kHz)`` of the first ``limit`` validation tracks at least ``seconds`` long."""
    from ..audio import load_audio
    from ..evaluation.tracks import audio_info, select_tracks

    chosen = []
    for pair in select_tracks(args.data, "validation", None):
        rate, frames = audio_info(Path(pair.vocals))
        if frames >= seconds * rate:
            chosen.append((pair.track_id, load_audio(pair.vocals, sample_rate=44100, mono=True)[..., : round(seconds * 44100)]))
        if len(chosen) == limit:
            break
    if not chosen:
        raise ConfigError(f"no validation track under {args.data} lasts {seconds:g} s; lower --seconds")
    return chosen


# --- seams ---------------------------------------------------------------------------------------------------------

def seam_measures(vocal: np.ndarray, accompaniment: np.ndarray, rate: int, joins_s: list[float],
                  middles_s: list[float]) -> dict:
    """At the joins and inside the windows: the frame flux, the spectral change and the fit score (module docstring)."""
    import librosa

    from ..evaluation.candidates import fit_score
    from ..errors import AudioError
    from ..evaluation.vocal_fit import ANALYSIS_RATE, HOP, vocal_fit

    y = librosa.resample(accompaniment, orig_sr=rate, target_sr=ANALYSIS_RATE)
    log_mel = librosa.power_to_db(librosa.feature.melspectrogram(y=y, sr=ANALYSIS_RATE, hop_length=HOP))
    flux = librosa.onset.onset_strength(S=log_mel, sr=ANALYSIS_RATE)  # positive log-mel flux per frame
    frame_s = HOP / ANALYSIS_RATE
    frames = np.arange(flux.size)
    distance = np.min(np.abs(frames[:, None] * frame_s - np.array(joins_s)[None]), axis=1)
    inside = frames[(distance > INSIDE_MARGIN) & (frames >= SEGMENT_FRAMES) & (frames <= flux.size - SEGMENT_FRAMES)]
    joins = [round(t / frame_s) for t in joins_s]

    def frame_flux(frame: int) -> float:  # the largest frame flux within ±JOIN_FRAMES
        return float(flux[max(0, frame - JOIN_FRAMES): frame + JOIN_FRAMES + 1].max())

    def change(frame: int) -> float:  # mean |Δ| of the mean log-mel spectra of the segments before and after
        before = log_mel[:, max(0, frame - SEGMENT_FRAMES): frame].mean(axis=1)
        after = log_mel[:, frame: frame + SEGMENT_FRAMES].mean(axis=1)
        return float(np.abs(after - before).mean())

    def fits_at(centres: list[float]) -> float:  # excerpts where the vocal rests (no voiced frame) are left out
        scores = []
        for centre in centres:
            half = round(FIT_SECONDS / 2 * rate)
            start = max(0, round(centre * rate) - half)
            stop = min(len(vocal), start + 2 * half)
            try:
                scores.append(fit_score(vocal_fit(vocal[start:stop], accompaniment[start:stop], rate)))
            except AudioError:
                continue
        return float(np.mean(scores)) if scores else None

    measures = {"flux_join": np.mean([frame_flux(f) for f in joins]), "flux_inside": np.mean([frame_flux(f) for f in inside]),
                "change_join": np.mean([change(f) for f in joins]), "change_inside": np.mean([change(f) for f in inside]),
                "fit_join": fits_at(joins_s), "fit_inside": fits_at(middles_s)}
    measures["flux_ratio"] = measures["flux_join"] / max(measures["flux_inside"], 1e-9)
    measures["change_ratio"] = measures["change_join"] / max(measures["change_inside"], 1e-9)
    return {key: None if value is None else float(value) for key, value in measures.items()}


def spread(values: list[float]) -> dict:
    """Mean, standard deviation (ddof 1) and count of the finite ``values``."""
    finite = np.array([v for v in values if v is not None and np.isfinite(v)])
    return {"mean": float(finite.mean()) if finite.size else None,
            "std": float(finite.std(ddof=1)) if finite.size > 1 else None, "n": int(finite.size)}


def shown(stat: dict) -> str:
    """``mean ± std`` of a :func:`spread` (``—`` for what was not measured)."""
    if stat["mean"] is None:
        return "—"
    return f"{stat['mean']:.3f}" + ("" if stat["std"] is None else f" ± {stat['std']:.3f}")


def seams(args) -> dict:
    from tqdm.auto import tqdm

    from ..long_form import overlap_frames, plan_windows

    pipeline = load_model(args.model)
    seconds, limit = args.seconds or 60.0, args.limit or 6
    takes = vocals(args, seconds, limit)
    rate, hop = pipeline.sample_rate, pipeline.codec.hop_length
    frames, window = pipeline.codec.frames_for(round(seconds * rate)), pipeline.window_frames
    rows = []
    for track_id, vocal in tqdm(takes, desc="seams", unit="take", disable=args.quiet):
        row = {"track": track_id}
        for method, overlap in (("windowed", args.overlap), ("naive", 0.0)):
            if method not in args.methods:
                continue
            windows = plan_windows(frames, window, overlap_frames(overlap, window, pipeline.codec.frame_rate))
            out = pipeline(["a Baroque chorale accompaniment for organ and strings"], vocal=vocal,
                           generator=[torch.Generator().manual_seed(args.seed)], progress=False, overlap=overlap,
                           **options(args))
            joins = [w.new.start * hop / rate for w in windows[1:]]
            middles = [(w.new.start + w.new.stop) / 2 * hop / rate for w in windows]
            measures = seam_measures(vocal[0].numpy(), np.asarray(out.audios)[0, 0], rate, joins, middles)
            row.update({f"{method}_{key}": value for key, value in measures.items()})
        rows.append(row)
    summary = {}
    for method in args.methods:
        for key in ("flux_ratio", "change_ratio", "fit_join", "fit_inside"):
            summary[f"{method}_{key}"] = spread([row[f"{method}_{key}"] for row in rows])
        summary[f"{method}_fit_join_minus_inside"] = spread([
            None if row[f"{method}_fit_join"] is None or row[f"{method}_fit_inside"] is None
            else row[f"{method}_fit_join"] - row[f"{method}_fit_inside"] for row in rows])
    print(f"seams: {len(rows)} validation takes of {seconds:g} s, window {window / pipeline.codec.frame_rate:.2f} s")
    print(f"{'method':<10}{'flux ratio join/inside':>26}{'change ratio':>22}{'fit at joins':>16}{'fit inside':>14}"
          f"{'fit join−inside':>20}")
    for method in args.methods:
        cells = [shown(summary[f"{method}_{key}"]) for key in ("flux_ratio", "change_ratio", "fit_join", "fit_inside",
                                                                  "fit_join_minus_inside")]
        print(f"{method:<10}{cells[0]:>26}{cells[1]:>22}{cells[2]:>16}{cells[3]:>14}{cells[4]:>20}")
    return {"what": "seams", "seconds": seconds, "takes": len(rows), "summary": summary, "per_take": rows}


# --- memory --------------------------------------------------------------------------------------------------------

def memory_worker(args) -> dict:
    from ..evaluation.speed import PeakMemory

    torch.set_num_threads(1)
    pipeline = load_model(args.model)
    rate = pipeline.sample_rate
    t = torch.arange(round(args.worker * rate)) / rate
    vocal = (0.3 * torch.sin(2 * torch.pi * 220.0 * t * (1 + 0.1 * torch.sin(0.5 * t))))[None]
    with PeakMemory() as peak:
        out = pipeline(["organ"], vocal=vocal, generator=[torch.Generator().manual_seed(0)], progress=False,
                       **options(args))
    results = (torch.as_tensor(out.audios).numel() * 4 + out.latents.numel() * 4) / 2**20
    return {"seconds": args.worker, "peak_added_mib": round(peak.added_mib, 1),
            "output_mib": round(results, 1), "working_mib": round(peak.added_mib - results, 1)}


def memory(args) -> dict:
    rows = []
    for seconds in args.durations:
        command = [sys.executable, "-m", "discodiff.bench.long_form", "memory", "--worker", str(seconds)]
        command += (["--model", args.model] if args.model else []) + (["--steps", str(args.steps)] if args.steps else [])
        env = {**os.environ, "MALLOC_MMAP_THRESHOLD_": "131072"}
        out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
        rows.append(json.loads(out.splitlines()[-1]))
    print(f"{'seconds':>8}{'peak added MiB':>16}{'output MiB':>12}{'working MiB':>13}")
    for row in rows:
        print(f"{row['seconds']:>8g}{row['peak_added_mib']:>16.1f}{row['output_mib']:>12.1f}{row['working_mib']:>13.1f}")
    ratio = rows[-1]["working_mib"] / max(rows[0]["working_mib"], 1e-9)
    print(f"ratio working({rows[-1]['seconds']:g} s)/working({rows[0]['seconds']:g} s): {ratio:.2f}")
    return {"what": "memory", "rows": rows, "working_ratio": ratio}


# --- ranking -------------------------------------------------------------------------------------------------------

def ranking(args) -> dict:
    from tqdm.auto import tqdm

    from ..errors import AudioError
    from ..evaluation.candidates import fit_score, generate_candidates
    from ..evaluation.vocal_fit import paired_comparison, vocal_fit

    pipeline = load_model(args.model)
    seconds, limit = args.seconds or 10.0, args.limit or 10
    rng = np.random.default_rng(args.seed)
    rows = []
    for track_id, vocal in tqdm(vocals(args, seconds, limit), desc="ranking", unit="vocal", disable=args.quiet):
        ranked = generate_candidates(pipeline, "a Baroque chorale accompaniment for organ and strings", vocal=vocal[0],
                                     num_candidates=args.candidates, seed=args.seed, progress=False, **options(args))
        pick = int(rng.integers(len(ranked.candidates)))
        half = vocal.shape[-1] // 2
        try:
            first = [fit_score(vocal_fit(vocal[0, :half], c.audio[0, :half], ranked.sample_rate)) for c in ranked.candidates]
            second = [fit_score(vocal_fit(vocal[0, half:], c.audio[0, half:], ranked.sample_rate)) for c in ranked.candidates]
        except AudioError:  # the vocal rests for a whole half: no held-out score
            first = second = None
        rows.append({"track": track_id, "scores": [c.score for c in ranked.candidates], "top": ranked.best.score,
                     "random": ranked.candidates[pick].score,
                     "held_out_top": None if first is None else second[int(np.argmax(first))],
                     "held_out_random": None if first is None else second[pick]})
    in_sample = paired_comparison([r["top"] for r in rows], [r["random"] for r in rows]).to_dict()
    halves = [r for r in rows if r["held_out_top"] is not None]
    held_out = paired_comparison([r["held_out_top"] for r in halves], [r["held_out_random"] for r in halves]).to_dict()
    print(f"ranking: {len(rows)} validation vocals, {args.candidates} candidates of {seconds:g} s each")
    for name, c in (("in-sample (top vs random)", in_sample), ("held-out half (top by 1st half, scored on 2nd)", held_out)):
        print(f"{name:<48} top {c['matched_mean']:.3f}  random {c['mismatched_mean']:.3f}  difference "
              f"{c['difference_mean']:+.3f} ± {c['difference_std']:.3f} (sem {c['difference_sem']:.3f})  "
              f"top higher {c['share_matched_higher']:.0%}")
    return {"what": "ranking", "seconds": seconds, "candidates": args.candidates, "in_sample": in_sample,
            "held_out": held_out, "per_vocal": rows}


def main(argv: list[str] | None = None) -> dict:
    args = parse_args(argv)
    if args.worker is not None:
        record = memory_worker(args)
        print(json.dumps(record))
        return record
    record = {"seams": seams, "memory": memory, "ranking": ranking}[args.what](args)
    record["settings"] = {key: value for key, value in vars(args).items() if key != "worker"}
    if args.json:
        write_json_record(args.json, record)
    return record


if __name__ == "__main__":
    run_script(lambda: main(sys.argv[1:]))
