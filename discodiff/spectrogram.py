"""Spectrogram pictures of audio: one log-magnitude image per signal, and labelled panels stacked into one PNG
(the demo's vocal / accompaniment / mix figure, ``discodiff sample --spectrogram``).

Images are uint8 ``[F, frames]`` with low frequencies at the bottom; PNGs are written atomically with pillow.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch

from .outputs import atomic_file

LABEL_HEIGHT = 14  # pixels of the strip above each panel that holds its name


def spectrogram_image(audio: torch.Tensor, n_fft: int = 1024, hop_length: int = 256, floor_db: float = 80.0) -> np.ndarray:
    """``audio [T]`` or ``[1, T]`` → uint8 ``[F, frames]`` log-magnitude spectrogram, low frequencies at the bottom."""
    audio = torch.as_tensor(audio).detach().float().cpu().reshape(-1)
    audio = torch.nn.functional.pad(audio, (0, max(0, n_fft - audio.numel())))
    magnitude = torch.stft(audio, n_fft, hop_length, window=torch.hann_window(n_fft), return_complex=True).abs()
    db = 20 * magnitude.clamp_min(1e-10).log10()
    db = db.clamp_min(db.max() - floor_db)
    scaled = (db - db.min()) / (db.max() - db.min()).clamp_min(1e-6)
    return (scaled.flip(0) * 255).round().to(torch.uint8).numpy()


def write_spectrogram_png(audio: torch.Tensor, path: str | Path) -> Path:
    """Save :func:`spectrogram_image` of ``audio`` as a grayscale PNG."""
    from PIL import Image

    path = Path(path)
    with atomic_file(path) as temporary:
        Image.fromarray(spectrogram_image(audio), mode="L").save(temporary, format="PNG")
    return path


def write_spectrogram_panels(panels: Sequence[tuple[str, torch.Tensor]], path: str | Path, sample_rate: int) -> Path:
    """``panels`` of ``(name, audio [T])`` → one PNG, a labelled spectrogram per panel, top to bottom, on one time
    axis (shorter signals are padded with silence). ``sample_rate`` only labels the panels with their length."""
    from PIL import Image, ImageDraw

    if not panels:
        raise ValueError("write_spectrogram_panels needs at least one (name, audio) panel")
    length = max(torch.as_tensor(audio).numel() for _, audio in panels)
    images = [spectrogram_image(torch.nn.functional.pad(torch.as_tensor(audio).reshape(-1).float(),
                                                        (0, length - torch.as_tensor(audio).numel())))
              for _, audio in panels]
    height, width = images[0].shape
    sheet = Image.new("L", (width, len(images) * (height + LABEL_HEIGHT)), color=0)
    draw = ImageDraw.Draw(sheet)
    for index, ((name, audio), image) in enumerate(zip(panels, images)):
        top = index * (height + LABEL_HEIGHT)
        seconds = torch.as_tensor(audio).numel() / sample_rate
        draw.text((4, top + 1), f"{name} ({seconds:.1f} s)", fill=255)
        sheet.paste(Image.fromarray(image, mode="L"), (0, top + LABEL_HEIGHT))
    path = Path(path)
    with atomic_file(path) as temporary:
        sheet.save(temporary, format="PNG")
    return path
