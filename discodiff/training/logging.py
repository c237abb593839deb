"""What a run records besides its trackers: the metrics JSONL, loss by diffusion-time bucket, audio samples
(WAV + spectrogram PNG) and their tracker entries.

Spectrogram images come from :mod:`discodiff.spectrogram`.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import torch
from accelerate import Accelerator

from discodiff.audio import save_audio
from discodiff.outputs import atomic_file
from discodiff.spectrogram import spectrogram_image, write_spectrogram_png


class MetricsLog:
    """``metrics.jsonl``: one ``{"step": …, name: value, …}`` object per line, written by the main process."""

    def __init__(self, path: str | Path):
        self.path = Path(path)

    def write(self, step: int, metrics: dict[str, float]) -> None:
        with self.path.open("a") as f:
            f.write(json.dumps({"step": step, **metrics}) + "\n")

    def read(self) -> list[dict]:
        """Every complete record (a line cut short by a crash is skipped)."""
        if not self.path.is_file():
            return []
        records = []
        for line in self.path.read_text().splitlines():
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
        return records

    def truncate_after(self, step: int) -> None:
        """Drop records after ``step`` (written by a crashed run past its last checkpoint) before resuming; atomically,
        so a crash meanwhile keeps the earlier file."""
        kept = [record for record in self.read() if record["step"] <= step]
        with atomic_file(self.path) as temporary:
            temporary.write_text("".join(json.dumps(record) + "\n" for record in kept))


def loss_by_time_bucket(losses: torch.Tensor, t: torch.Tensor, buckets: int) -> dict[str, float]:
    """Mean of ``losses [N]`` in each of ``buckets`` equal-width bins of ``t [N]`` (empty bins are left out)."""
    index = (t * buckets).long().clamp(0, buckets - 1)
    means = {}
    for bucket in range(buckets):
        selected = losses[index == bucket]
        if selected.numel():
            means[f"train/loss_t{bucket / buckets:.2f}-{(bucket + 1) / buckets:.2f}"] = selected.mean().item()
    return means


def write_samples(directory: str | Path, audios: torch.Tensor, sample_rate: int, captions: Sequence[str]) -> list[Path]:
    """``audios [B, 1, T]`` → ``directory/{i}.wav``, ``{i}.png`` and ``captions.json``; returns the WAV paths."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    paths = []
    for index, audio in enumerate(audios):
        paths.append(save_audio(directory / f"{index}.wav", audio, sample_rate))
        write_spectrogram_png(audio, directory / f"{index}.png")
    (directory / "captions.json").write_text(json.dumps(list(captions), indent=1))
    return paths


def log_samples(accelerator: Accelerator, tag: str, audios: torch.Tensor, sample_rate: int, captions: Sequence[str],
                step: int) -> None:
    """Add ``audios [B, 1, T]`` and their spectrograms to the TensorBoard / W&B trackers (others are skipped)."""
    for tracker in accelerator.trackers:
        if tracker.name == "tensorboard":
            for index, (audio, caption) in enumerate(zip(audios, captions)):
                tracker.writer.add_audio(f"{tag}/{index}", audio.float().cpu().clamp(-1, 1), step, sample_rate=sample_rate)
                tracker.writer.add_image(f"{tag}/{index}_spectrogram", spectrogram_image(audio), step, dataformats="HW")
                tracker.writer.add_text(f"{tag}/{index}_caption", caption, step)
        elif tracker.name == "wandb":
            import wandb

            tracker.log({
                tag: [wandb.Audio(a.float().cpu().reshape(-1).numpy(), sample_rate=sample_rate, caption=c) for a, c in zip(audios, captions)],
                f"{tag}_spectrograms": [wandb.Image(spectrogram_image(a), caption=c) for a, c in zip(audios, captions)],
            }, step=step)
