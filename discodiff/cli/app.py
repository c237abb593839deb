"""The ``discodiff`` application: every command group registered on one Typer app."""

from __future__ import annotations

import importlib.metadata
import importlib.util
import platform

import typer

from . import captions, codec, data, evaluate, model, studio
from .errors import reports_errors

HELP = """Text- and vocal-conditioned music at 44.1 kHz by coarse-to-fine latent diffusion on DAC latents.

Workflow: render-corpus (or your own stems) → prepare (latent cache) → train (accelerate launch
train/train.py) → sample → eval (compare models); `captions` builds caption datasets.  Offline, in three
commands:

  discodiff render-corpus --pieces bach/bwv66.6 --seconds 12 --out rendered

  discodiff new-model tiny_model --config configs/tiny.yaml

  discodiff sample --model tiny_model --prompt "Baroque chorale" --vocal rendered/bach-bwv66.6/vocals.wav --out acc.wav --mix mix.wav

Every command checks its inputs and outputs before it starts and ends a failure with one
`error:` line that names the input and the fix (exit status 1).
"""

app = typer.Typer(add_completion=False, no_args_is_help=True, help=HELP, rich_markup_mode=None,
                  pretty_exceptions_show_locals=False)


def info() -> None:
    """Versions, available codec backends and compute device."""
    import torch

    typer.echo(f"discodiff {importlib.metadata.version('discodiff')}  python {platform.python_version()}")
    for name in ("torch", "transformers", "diffusers", "accelerate", "datasets"):
        typer.echo(f"  {name:<13}{importlib.metadata.version(name)}")
    descript = importlib.util.find_spec("dac") is not None
    typer.echo(f"codec backends: transformers (default), descript ({'installed' if descript else 'not installed: pip install discodiff[dac]'})")
    device = f"cuda ({torch.cuda.get_device_name(0)})" if torch.cuda.is_available() else "cpu"
    typer.echo(f"device: {device}, {torch.get_num_threads()} CPU threads")


COMMANDS = {
    "info": info,
    "encode": codec.encode,
    "reconstruct": codec.reconstruct,
    "convert-codec": codec.convert_codec,
    "tiny-codec": codec.tiny_codec,
    "convert-clap": evaluate.convert_clap,
    "render-corpus": data.render_corpus,
    "prepare": data.prepare,
    "tokenize": data.tokenize,
    "new-model": model.new_model,
    "sample": model.sample,
    "eval": evaluate.evaluate,
    "studio": studio.studio,
}
for name, command in COMMANDS.items():
    app.command(name)(reports_errors(command))
app.add_typer(captions.app, name="captions")


if __name__ == "__main__":
    app()
