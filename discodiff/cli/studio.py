"""The studio command: the web studio (:mod:`discodiff.ui`, the ``ui`` extra) served from this machine."""

from __future__ import annotations

from pathlib import Path

import typer

from ..errors import require_module

DEFAULT_HOST = "127.0.0.1"  # the loopback interface: only this machine reaches the studio
DEFAULT_PORT = 7860


def studio(
    model: Path = typer.Option(None, "--model", help="Model directory the studio starts with (it can be changed on the "
                               "page) [default: the shipped Bach-chorales model, discodiff/pretrained/bach-chorales]."),
    host: str = typer.Option(DEFAULT_HOST, "--host", help="Interface to serve on; 0.0.0.0 serves every network "
                             "interface (anyone who can reach this machine can then generate)."),
    port: int = typer.Option(DEFAULT_PORT, "--port", min=1, max=65535, help="Port to serve on."),
    clap: str = typer.Option(None, "--clap", help="CLAP model (hub id or directory) to rank candidates by their CLAP "
                             "score against the prompt too."),
) -> None:
    """Serve the web studio: upload or record a vocal, generate accompaniments ranked by how well they fit it, listen
    and download them (Ctrl-C stops it)."""
    require_module("gradio", "ui", "discodiff studio")
    from ..ui import launch_studio

    if model is not None:
        from ..pipeline_utils import directory_family

        directory_family(model).check_generates(f"--model {model}")
    embedder = None
    if clap is not None:
        from ..evaluation.embedders import ClapEmbedder

        embedder = ClapEmbedder.from_pretrained(clap)
    launch_studio(model_dir=model, host=host, port=port, clap=embedder)
