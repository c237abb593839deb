"""Convert original DAC (``dac`` package) weights to ``transformers.DacModel`` weights.

The two implementations hold the same tensors under different names, and ``dac`` keeps convolution
weights in weight-norm form (``weight_g``, ``weight_v``); ``transformers`` stores plain ``weight``.
"""

from __future__ import annotations

import re
from pathlib import Path

import torch


def fold_weight_norm(state_dict: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Replace every ``X.weight_g`` / ``X.weight_v`` pair by ``X.weight = g * v / ||v||`` (norm over dims 1..)."""
    out = {}
    for key, value in state_dict.items():
        if key.endswith(".weight_v"):
            base = key[: -len(".weight_v")]
            out[base + ".weight"] = torch._weight_norm(value, state_dict[base + ".weight_g"], 0)
        elif not key.endswith(".weight_g"):
            out[key] = value
    return out


def _rename(key: str, n_encoder_blocks: int, n_decoder_blocks: int) -> str:
    """Map one ``dac`` parameter name to its ``transformers`` name."""
    res_unit = {"0": "snake1", "1": "conv1", "2": "snake2", "3": "conv2"}
    if m := re.match(r"encoder\.block\.(\d+)\.(.*)", key):
        i, rest = int(m[1]), m[2]
        if i == 0:
            return f"encoder.conv1.{rest}"
        if i == n_encoder_blocks + 1:
            return f"encoder.snake1.{rest}"
        if i == n_encoder_blocks + 2:
            return f"encoder.conv2.{rest}"
        if r := re.match(r"block\.([0-2])\.block\.(\d)\.(.*)", rest):
            return f"encoder.block.{i - 1}.res_unit{int(r[1]) + 1}.{res_unit[r[2]]}.{r[3]}"
        part = {"3": "snake1", "4": "conv1"}[rest.split(".")[1]]
        return f"encoder.block.{i - 1}.{part}.{rest.split('.', 2)[2]}"
    if m := re.match(r"decoder\.model\.(\d+)\.(.*)", key):
        i, rest = int(m[1]), m[2]
        if i == 0:
            return f"decoder.conv1.{rest}"
        if i == n_decoder_blocks + 1:
            return f"decoder.snake1.{rest}"
        if i == n_decoder_blocks + 2:
            return f"decoder.conv2.{rest}"
        if r := re.match(r"block\.([2-4])\.block\.(\d)\.(.*)", rest):
            return f"decoder.block.{i - 1}.res_unit{int(r[1]) - 1}.{res_unit[r[2]]}.{r[3]}"
        part = {"0": "snake1", "1": "conv_t1"}[rest.split(".")[1]]
        return f"decoder.block.{i - 1}.{part}.{rest.split('.', 2)[2]}"
    return key  # quantizer.quantizers.N.{in_proj,out_proj,codebook}.* share names


def descript_to_transformers(model) -> "transformers.DacModel":  # noqa: F821
    """A ``transformers.DacModel`` holding the weights of the ``dac.DAC`` instance ``model``."""
    from transformers import DacConfig, DacModel

    first = model.quantizer.quantizers[0]
    config = DacConfig(
        encoder_hidden_size=model.encoder_dim,
        downsampling_ratios=list(model.encoder_rates),
        decoder_hidden_size=model.decoder_dim,
        n_codebooks=model.n_codebooks,
        codebook_size=first.codebook_size,
        codebook_dim=first.codebook_dim,
        sampling_rate=model.sample_rate,
    )
    if list(model.decoder_rates) != list(config.upsampling_ratios):
        raise ValueError(
            f"transformers.DacModel mirrors the encoder rates in the decoder; this checkpoint has encoder "
            f"{model.encoder_rates} and decoder {model.decoder_rates}, so it can only run on the descript backend"
        )
    state = fold_weight_norm(model.state_dict())
    n_enc, n_dec = len(model.encoder_rates), len(model.decoder_rates)
    converted = {_rename(k, n_enc, n_dec): v for k, v in state.items()}
    hf = DacModel(config)
    hf.load_state_dict(converted, strict=True)
    return hf.eval()


def convert_descript_checkpoint(pth: str | Path, out_dir: str | Path) -> Path:
    """Write the ``.pth`` checkpoint ``pth`` as a ``transformers`` DAC directory ``out_dir``."""
    from .backends import load_descript_dac

    model, _ = load_descript_dac(pth)
    descript_to_transformers(model).save_pretrained(str(out_dir))
    return Path(out_dir)
