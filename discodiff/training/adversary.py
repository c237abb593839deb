"""An adversary trained against a task's module (a GAN's discriminator), for the family-agnostic loop.

A task that has one returns an :class:`AdversarySpec` from :attr:`~.task.TrainingTask.adversary`: the module, its
learning rate and its gradient clipping. The loop gives it its own AdamW (the run's betas, weight decay and eps) and
its own warmup + cosine schedule, prepares all three with Accelerate (so DDP synchronises its gradients and
``save_state`` checkpoints its weights, moments and schedule beside the module's) and hands the task an
:class:`Adversary` as the ``adversary`` keyword of :meth:`~.task.TrainingTask.loss`. Inside the loss the task calls,
in DAC's order (HiFi-GAN's, EnCodec's)::

    adversary.update(lambda critic: discriminator_loss(critic(fake.detach()), critic(real)))
    with adversary.frozen() as critic:            # the just-updated adversary, its parameters frozen
        loss = reconstruction + generator_loss(critic(fake), critic(real))

so each batch steps the adversary once, then the module once. Gradient accumulation is refused with an adversary
(its loss would be divided by the accumulation steps and its step would not wait for the window).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

import torch
from accelerate import Accelerator
from torch import nn


@dataclass
class AdversarySpec:
    """What a task asks of the loop: ``module`` (built seeded, with the task), trained by AdamW at ``learning_rate``
    with its gradients clipped at ``max_grad_norm``."""

    module: nn.Module
    learning_rate: float
    max_grad_norm: float


class Adversary:
    """The prepared adversary of a run: :meth:`update` steps it, :meth:`frozen` lends it to the module's loss.
    ``metrics`` holds the last update's ``train/adversary_loss`` and ``train/adversary_grad_norm`` (tensors)."""

    def __init__(self, accelerator: Accelerator, model: nn.Module, optimizer: torch.optim.Optimizer, lr_scheduler,
                 max_grad_norm: float):
        self.accelerator, self.model, self.optimizer, self.lr_scheduler = accelerator, model, optimizer, lr_scheduler
        self.max_grad_norm = max_grad_norm
        self.metrics: dict[str, torch.Tensor] = {}

    def update(self, loss_fn: Callable[[nn.Module], torch.Tensor]) -> torch.Tensor:
        """One optimiser step on the scalar ``loss_fn(model)`` (``model``: the prepared adversary, so DDP reduces its
        gradients); gradients left by the module's previous loss are cleared first. Returns the loss, detached."""
        self.optimizer.zero_grad(set_to_none=True)
        loss = loss_fn(self.model)
        self.accelerator.backward(loss)
        grad_norm = self.accelerator.clip_grad_norm_(self.model.parameters(), self.max_grad_norm)
        self.optimizer.step()
        self.lr_scheduler.step()
        self.optimizer.zero_grad(set_to_none=True)
        self.metrics = {"train/adversary_loss": loss.detach(), "train/adversary_grad_norm": grad_norm.detach()}
        return loss.detach()

    @contextmanager
    def frozen(self) -> Iterator[nn.Module]:
        """The unwrapped adversary with ``requires_grad`` off on its parameters: the module's loss backpropagates
        through it to its input without touching the adversary's gradients (or DDP's hooks on them)."""
        critic = self.accelerator.unwrap_model(self.model)
        parameters = [p for p in critic.parameters() if p.requires_grad]
        for parameter in parameters:
            parameter.requires_grad_(False)
        try:
            yield critic
        finally:
            for parameter in parameters:
                parameter.requires_grad_(True)
