"""A compiled Snake activation, for training the codec on the CPU.

DAC's Snake (``transformers``' ``Snake1d``: ``x + sin²(αx) / (α + 1e-9)``, one α per channel) is five full-size
tensor operations forward in eager PyTorch, and more backward: about 45% of a training step of the small codec on
one CPU thread (``torch.profiler``; the convolutions take most of the rest). :func:`compile_snakes` swaps every
``Snake1d`` of a model for a :class:`CompiledSnake`: the same formula through ``torch.compile`` (one fused loop each
way; the length is dynamic, the channels static as ``alpha``'s: one compilation per layer width, about 30 s in all for
the small codec's five widths, and specialised kernels are faster: 1.23 s a step against 1.65 s with the channels
dynamic too, ``bench.codec_step``). Without gradients (validation, sampling) it runs the eager formula, so that no
second set of graphs is compiled and the widths stay within torch._dynamo's recompile limit (8). It holds the same
``alpha`` parameter under the same name, so the state dict, the optimiser and the EMA see the same parameters. Outputs
and gradients agree with the eager module to float32 rounding (about 1e-6 relative), not bit for bit.
"""

from __future__ import annotations

import torch
from torch import nn


def snake(x: torch.Tensor, alpha: torch.Tensor) -> torch.Tensor:
    """``x [B, C, T]`` → ``x + sin²(αx) / (α + 1e-9)`` with ``alpha [1, C, 1]`` (``transformers``' ``Snake1d``)."""
    return x + (alpha + 1e-9).reciprocal() * torch.sin(alpha * x).pow(2)


COMPILED_SNAKE = torch.compile(snake, dynamic=True)  # compiled on its first call, not at import


class CompiledSnake(nn.Module):
    """``Snake1d`` through ``torch.compile``; built from a ``Snake1d``, sharing its ``alpha``."""

    def __init__(self, alpha: nn.Parameter):
        super().__init__()
        self.alpha = alpha

    def forward(self, hidden_states: torch.Tensor) -> torch.Tensor:
        if not torch.is_grad_enabled():  # validation and sampling: eager, so that training's graphs (one per layer
            return snake(hidden_states, self.alpha)  # width) are all it compiles, within dynamo's recompile limit of 8
        shape = hidden_states.shape
        return COMPILED_SNAKE(hidden_states.reshape(shape[0], shape[1], -1), self.alpha).reshape(shape)


def compile_snakes(model: nn.Module) -> int:
    """Replace every ``Snake1d`` module of ``model`` by a :class:`CompiledSnake` with the same ``alpha``; returns how
    many were replaced (0 when the model has none)."""
    from transformers.models.dac.modeling_dac import Snake1d

    swaps = [(name, module) for name, module in model.named_modules() if isinstance(module, Snake1d)]
    for name, module in swaps:
        parent_name, _, attribute = name.rpartition(".")
        parent = model.get_submodule(parent_name) if parent_name else model
        setattr(parent, attribute, CompiledSnake(module.alpha))
    return len(swaps)
