"""The frozen encoders a model directory references or bundles — its codec and its text encoder — loaded and saved
the same way by every family's pipeline (``sources`` of ``pipeline.json``: ``codec`` and ``text_encoder``, each with
an id or path and a ``bundled`` flag)."""

from __future__ import annotations

from pathlib import Path

from .codec.resolve import load_codec
from .conditioning.resolve import load_text_encoder
from .model_files import component_location, in_memory, inside

ENCODERS = ("codec", "text_encoder")


def load_encoders(directory: Path, sources: dict, codec: str | None = None, text_encoder: str | None = None):
    """``(codec, codec_location, text_encoder, text_location)`` of the model directory ``directory``: ``codec`` /
    ``text_encoder`` override the referenced id or path; parts read from inside ``directory`` are copied into memory
    (a later save may replace their files)."""
    codec_location = component_location(directory, "codec", sources["codec"], codec)
    codec_module = load_codec(codec_location, backend=sources["codec"]["backend"])
    text_location = component_location(directory, "text_encoder", sources["text_encoder"], text_encoder)
    text_module = load_text_encoder(sources["text_encoder"]["kind"], text_location,
                                    max_length=sources["text_encoder"]["max_length"])
    for location, module in ((codec_location, codec_module), (text_location, text_module)):
        if inside(location, directory):
            in_memory(module)
    return codec_module, codec_location, text_module, text_location


def save_bundled_encoders(build: Path, sources: dict, codec, text_encoder) -> None:
    """Write the encoders ``sources`` marks ``bundled`` into ``build/<name>`` and point their id at that folder."""
    for name, module in (("codec", codec), ("text_encoder", text_encoder)):
        if sources[name].get("bundled"):
            module.save_pretrained(build / name)
            sources[name]["id"] = name
